//! KPI snapshots: shard states merged into plain numbers.
//!
//! Distinct counts always come from a union, even with one shard: the union's estimator
//! depends only on the registers, so any split of users across shards (or machines) gives
//! the very same figure. Per-day unions are built once and then chained (today, then
//! yesterday, …), so the 1-, 7- and 30-day windows and their previous windows cost 31
//! per-day unions and two chains per family, not one union per window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, Rejection};
use crate::features::FeatureId;
use crate::ingest::RouterState;
use crate::shard::{DayBucket, SessionStats, ShardState};
use crate::sketch::{DistinctSketch, DistinctUnion, SketchShape};
use crate::time::{Calendar, Day, rfc3339};

/// Lengths of the KPI windows, in days.
pub const WINDOWS: [usize; 3] = [1, 7, 30];
/// Days looked at: the current 30-day window and the previous one, which ends yesterday.
const SPAN: usize = 31;

/// One value per window, serialised under the keys `1d`, `7d`, `30d`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Windowed<T> {
    #[serde(rename = "1d")]
    pub d1: T,
    #[serde(rename = "7d")]
    pub d7: T,
    #[serde(rename = "30d")]
    pub d30: T,
}

impl<T> Windowed<T> {
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Windowed<U> {
        Windowed {
            d1: f(&self.d1),
            d7: f(&self.d7),
            d30: f(&self.d30),
        }
    }

    /// (window label, value) pairs, for exporters.
    pub fn labelled(&self) -> [(&'static str, &T); 3] {
        [("1d", &self.d1), ("7d", &self.d7), ("30d", &self.d30)]
    }
}

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stickiness {
    pub dau_mau: f64,
    pub dau_wau: f64,
    pub wau_mau: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionKpis {
    pub count: u64,
    pub avg_duration_seconds: f64,
    pub p50_duration_seconds: f64,
    pub p90_duration_seconds: f64,
    pub bounce_rate: f64,
    pub events_per_session: f64,
    pub sessions_per_user: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureKpis {
    pub active_users: Windowed<u64>,
    pub adoption: Windowed<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateInfo {
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
    pub events: EventCounts,
    pub active_users: Windowed<u64>,
    pub active_users_previous: Windowed<u64>,
    pub new_users: Windowed<u64>,
    pub stickiness: Stickiness,
    pub sessions: Windowed<SessionKpis>,
    pub features: BTreeMap<String, FeatureKpis>,
    pub state: StateInfo,
}

/// Builds the snapshot at `now_ms` (`None` before the first event).
pub fn build(
    router: &RouterState,
    shards: &[&ShardState],
    calendar: &mut Calendar,
    shape: SketchShape,
    now_ms: Option<i64>,
) -> KpiSnapshot {
    let mut snapshot = KpiSnapshot {
        as_of: now_ms.map(rfc3339),
        timezone: calendar.zone().iana_name().unwrap_or("UTC").to_owned(),
        events: event_counts(router),
        state: StateInfo {
            shards: shards.len(),
            estimated_bytes: shards.iter().map(|s| s.estimated_bytes() as u64).sum(),
            open_session_keys: shards.iter().map(|s| s.open_session_keys() as u64).sum(),
            tracked_features: router.features.tracked() as u64,
        },
        ..KpiSnapshot::default()
    };
    let Some(now_ms) = now_ms else {
        return snapshot;
    };
    let today = calendar.day_of(now_ms);
    // buckets[offset] = every shard's bucket of day `today - offset`.
    let buckets: Vec<Vec<&DayBucket>> = (0..SPAN)
        .map(|offset| {
            shards
                .iter()
                .filter_map(|s| s.bucket(today - offset as Day))
                .collect()
        })
        .collect();

    let active = Family::build(&buckets, shape, |b| Some(&b.active));
    snapshot.active_users = active.current.map(|e| *e as u64);
    snapshot.active_users_previous = active.previous.map(|e| *e as u64);
    snapshot.stickiness = stickiness(&active);
    snapshot.new_users = Family::build(&buckets, shape, |b| b.signups.as_ref())
        .current
        .map(|e| *e as u64);

    let sessions = session_windows(&buckets);
    snapshot.sessions = Windowed {
        d1: session_kpis(&sessions.d1, active.current.d1),
        d7: session_kpis(&sessions.d7, active.current.d7),
        d30: session_kpis(&sessions.d30, active.current.d30),
    };

    let mut ids: Vec<FeatureId> = (0..router.features.tracked() as FeatureId).collect();
    let other = router.features.other_id();
    if buckets.iter().flatten().any(|b| b.feature(other).is_some()) {
        ids.push(other);
    }
    for id in ids {
        let family = Family::build(&buckets, shape, |b| b.feature(id));
        let users = family.current.map(|e| *e as u64);
        let adoption = Windowed {
            d1: ratio(users.d1 as f64, snapshot.active_users.d1 as f64),
            d7: ratio(users.d7 as f64, snapshot.active_users.d7 as f64),
            d30: ratio(users.d30 as f64, snapshot.active_users.d30 as f64),
        };
        let name = router.features.name(id).to_owned();
        snapshot.features.insert(
            name,
            FeatureKpis {
                active_users: users,
                adoption,
            },
        );
    }
    snapshot
}

/// Estimates of one sketch family (active users, signups, one feature) over the windows,
/// rounded to whole users so that ratios agree with the counts shown beside them.
struct Family {
    current: Windowed<f64>,
    previous: Windowed<f64>,
    /// Distinct users of each day, by offset from today.
    daily: Vec<f64>,
}

impl Family {
    fn build(
        buckets: &[Vec<&DayBucket>],
        shape: SketchShape,
        pick: impl Fn(&DayBucket) -> Option<&DistinctSketch>,
    ) -> Family {
        let mut daily = Vec::with_capacity(SPAN);
        let per_day: Vec<Option<DistinctSketch>> = buckets
            .iter()
            .map(|shards| {
                let mut union = DistinctUnion::new(shape);
                let mut any = false;
                for sketch in shards.iter().filter_map(|b| pick(b)) {
                    union.add(sketch);
                    any = true;
                }
                daily.push(union.estimate().round());
                any.then(|| union.to_sketch())
            })
            .collect();
        let chain = |first_offset: usize| {
            let mut union = DistinctUnion::new(shape);
            let mut out = [0.0; 3];
            for (length, day) in per_day[first_offset..].iter().take(30).enumerate() {
                if let Some(sketch) = day {
                    union.add(sketch);
                }
                if let Some(w) = WINDOWS.iter().position(|w| *w == length + 1) {
                    out[w] = union.estimate().round();
                }
            }
            Windowed {
                d1: out[0],
                d7: out[1],
                d30: out[2],
            }
        };
        Family {
            current: chain(0),
            previous: chain(1),
            daily,
        }
    }
}

fn stickiness(active: &Family) -> Stickiness {
    // Complete days only: offsets 1..=7 and 1..=30 (the day before today and back).
    let mean = |days: usize| active.daily[1..=days].iter().sum::<f64>() / days as f64;
    Stickiness {
        dau_mau: ratio(mean(30), active.previous.d30),
        dau_wau: ratio(mean(7), active.previous.d7),
        wau_mau: ratio(active.previous.d7, active.previous.d30),
    }
}

fn session_windows(buckets: &[Vec<&DayBucket>]) -> Windowed<SessionStats> {
    let mut out: Windowed<SessionStats> = Windowed::default();
    let mut running = SessionStats::default();
    for (offset, shards) in buckets.iter().enumerate().take(30) {
        for bucket in shards {
            running.merge(&bucket.sessions);
        }
        match offset + 1 {
            1 => out.d1 = running.clone(),
            7 => out.d7 = running.clone(),
            30 => out.d30 = running.clone(),
            _ => {}
        }
    }
    out
}

fn session_kpis(stats: &SessionStats, active_users: f64) -> SessionKpis {
    let count = stats.count as f64;
    SessionKpis {
        count: stats.count,
        avg_duration_seconds: ratio(stats.duration_ms_sum as f64, count) / 1000.0,
        p50_duration_seconds: stats.durations.quantile_ms(0.5) / 1000.0,
        p90_duration_seconds: stats.durations.quantile_ms(0.9) / 1000.0,
        bounce_rate: ratio(stats.bounces as f64, count),
        events_per_session: ratio(stats.events as f64, count),
        sessions_per_user: ratio(count, active_users),
    }
}

/// A ratio that is 0, not NaN, when nothing was measured.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

fn event_counts(router: &RouterState) -> EventCounts {
    let c = &router.counters;
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
