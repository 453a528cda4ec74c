//! KPI snapshots: the summaries of every partition merged into plain numbers.
//!
//! A snapshot is the stream's counters, every KPI family's section (see
//! [`crate::families`]: each family unions its summaries across workers and estimates) and
//! a few facts about the state. Distinct counts always come from a union, even of one
//! summary: the union's estimator depends only on the registers, so any split of users
//! across partitions, workers or machines gives the very same figure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, Rejection};
use crate::families::{Sections, Summary};
use crate::family::SectionContext;
use crate::ingest::RouterState;
use crate::partition::Counters;
use crate::sketch::SketchShape;
use crate::time::{Calendar, rfc3339};

pub use crate::families::activity::ActivitySection;
pub use crate::families::features::FeatureKpis;
pub use crate::families::sessions::{SessionDurations, SessionKpis};
pub use crate::families::stickiness::StickinessRatios;
pub use crate::windows::{Recent, Windowed};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventCounts {
    pub accepted: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub late: u64,
    pub future: u64,
    pub late_for_sessions: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// Feature events pooled into `__other__` because the feature cap was reached.
    pub feature_overflow: u64,
    /// `feature_used` events without a feature name.
    pub feature_missing: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateInfo {
    /// Worker threads (one summary each).
    pub shards: usize,
    pub estimated_bytes: u64,
    pub open_session_keys: u64,
    pub tracked_features: u64,
}

/// Every KPI at one instant: plain data, serialised as pulse's JSON snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KpiSnapshot {
    /// RFC 3339 of `now`; absent numbers mean no event has been seen yet.
    pub as_of: Option<String>,
    pub timezone: String,
    /// RFC 3339 of the latest accepted event time.
    pub last_event_at: Option<String>,
    pub events: EventCounts,
    /// Every family's KPIs, each under its own keys at the top level.
    #[serde(flatten)]
    pub kpis: Sections,
    pub state: StateInfo,
}

/// Builds the snapshot at `now_ms` (`None` before the first event) from the summaries of every worker (each the merge of its partitions) and
/// the stream's counters.
pub fn build(
    router: &RouterState,
    counters: &Counters,
    summaries: &[Summary],
    calendar: &mut Calendar,
    shape: SketchShape,
    now_ms: Option<i64>,
) -> KpiSnapshot {
    let cx = SectionContext { router, shape };
    KpiSnapshot {
        as_of: now_ms.map(rfc3339),
        timezone: calendar.zone().iana_name().unwrap_or("UTC").to_owned(),
        last_event_at: router.max_event_ms.map(rfc3339),
        events: event_counts(router, counters),
        // Before the first event every summary is empty, so every KPI is zero.
        kpis: Sections::build(summaries, &cx),
        state: StateInfo {
            shards: summaries.len(),
            estimated_bytes: summaries.iter().map(|s| s.estimated_bytes).sum(),
            open_session_keys: summaries.iter().map(|s| s.sessions.open_session_keys).sum(),
            tracked_features: router.features.tracked() as u64,
        },
    }
}

fn event_counts(router: &RouterState, c: &Counters) -> EventCounts {
    EventCounts {
        accepted: c.accepted,
        rejected: c.rejected_total(),
        rejected_by_reason: Rejection::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), c.rejected[*r as usize]))
            .collect(),
        late: c.late,
        future: c.future,
        late_for_sessions: c.late_for_sessions,
        by_kind: EventKind::ALL
            .iter()
            .map(|k| (k.as_str().to_owned(), c.by_kind[*k as usize]))
            .collect(),
        feature_overflow: router.features.overflow_events,
        feature_missing: c.feature_missing,
    }
}
