//! KPI snapshots: shard summaries merged into plain numbers.
//!
//! Distinct counts always come from a union, even with one shard: the union's estimator
//! depends only on the registers, so any split of users across shards (or machines) gives
//! the very same figure. The per-window unions are folded by each shard
//! ([`crate::summary`]); here they are only unioned across shards and estimated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::buckets::{LifetimeSessions, SESSION_BUCKETS_SECONDS, SessionStats};
use crate::event::{EventKind, Rejection};
use crate::features::FeatureId;
use crate::ingest::RouterState;
use crate::partition::Counters;
use crate::sketch::{DistinctSketch, DistinctUnion, SketchShape};
use crate::summary::{SPAN, Summary};
use crate::time::{Calendar, rfc3339};

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

/// Distinct active users over the trailing minutes, for fast alerting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Recent<T> {
    #[serde(rename = "5m")]
    pub m5: T,
    #[serde(rename = "1h")]
    pub h1: T,
}

impl<T> Recent<T> {
    /// (window label, value) pairs, for exporters.
    pub fn labelled(&self) -> [(&'static str, &T); 2] {
        [("5m", &self.m5), ("1h", &self.h1)]
    }
}

/// Every session closed since the state began, by duration (a Prometheus histogram).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionDurations {
    /// Upper bounds of the buckets; `counts` has one more entry, for `+Inf`.
    pub bounds_seconds: Vec<f64>,
    /// Sessions per bucket, not cumulative.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
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
    /// RFC 3339 of the latest accepted event time.
    pub last_event_at: Option<String>,
    pub events: EventCounts,
    pub active_users: Windowed<u64>,
    pub active_users_previous: Windowed<u64>,
    pub new_users: Windowed<u64>,
    pub stickiness: Stickiness,
    pub sessions: Windowed<SessionKpis>,
    pub features: BTreeMap<String, FeatureKpis>,
    pub recent_active_users: Recent<u64>,
    pub session_durations: SessionDurations,
    pub state: StateInfo,
}

/// Builds the snapshot at `now_ms` (`None` before the first event) from the summaries of
/// every partition (one per worker, each the merge of its partitions; see
/// [`crate::summary`]) and the stream's counters.
pub fn build(
    router: &RouterState,
    counters: &Counters,
    summaries: &[Summary],
    calendar: &mut Calendar,
    shape: SketchShape,
    now_ms: Option<i64>,
) -> KpiSnapshot {
    let mut lifetime = LifetimeSessions::default();
    summaries
        .iter()
        .for_each(|s| lifetime.merge(&s.lifetime_sessions));
    let mut snapshot = KpiSnapshot {
        as_of: now_ms.map(rfc3339),
        timezone: calendar.zone().iana_name().unwrap_or("UTC").to_owned(),
        last_event_at: router.max_event_ms.map(rfc3339),
        events: event_counts(router, counters),
        session_durations: SessionDurations {
            bounds_seconds: SESSION_BUCKETS_SECONDS.to_vec(),
            counts: lifetime.counts,
            sum_seconds: lifetime.sum_ms as f64 / 1000.0,
            count: lifetime.count,
        },
        state: StateInfo {
            shards: summaries.len(),
            estimated_bytes: summaries.iter().map(|s| s.estimated_bytes).sum(),
            open_session_keys: summaries.iter().map(|s| s.open_session_keys).sum(),
            tracked_features: router.features.tracked() as u64,
        },
        ..KpiSnapshot::default()
    };
    if now_ms.is_none() {
        return snapshot;
    }
    snapshot.active_users = window_estimates(summaries, shape, |s| Some(&s.active.current));
    snapshot.active_users_previous =
        window_estimates(summaries, shape, |s| Some(&s.active.previous));
    snapshot.stickiness = stickiness(summaries, shape, &snapshot.active_users_previous);
    snapshot.new_users = window_estimates(summaries, shape, |s| Some(&s.signups.current));
    let recent =
        |w: usize| union_estimate(shape, summaries.iter().filter_map(|s| s.recent[w].as_ref()));
    snapshot.recent_active_users = Recent {
        m5: recent(0),
        h1: recent(1),
    };

    let mut windows: [SessionStats; 3] = Default::default();
    for summary in summaries {
        for (total, part) in windows.iter_mut().zip(&summary.sessions) {
            total.merge(part);
        }
    }
    let [d1, d7, d30] = windows;
    snapshot.sessions = Windowed {
        d1: session_kpis(&d1, snapshot.active_users.d1),
        d7: session_kpis(&d7, snapshot.active_users.d7),
        d30: session_kpis(&d30, snapshot.active_users.d30),
    };

    let mut ids: Vec<FeatureId> = (0..router.features.tracked() as FeatureId).collect();
    let other = router.features.other_id();
    if summaries
        .iter()
        .any(|s| s.features.len() > usize::from(other))
    {
        ids.push(other);
    }
    for id in ids {
        let users = window_estimates(summaries, shape, |s| {
            s.features.get(usize::from(id)).map(|f| &f.current)
        });
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

/// The union estimate of some sketches, rounded to whole users so that ratios agree with
/// the counts shown beside them.
fn union_estimate<'a>(
    shape: SketchShape,
    sketches: impl Iterator<Item = &'a DistinctSketch>,
) -> u64 {
    let mut union = DistinctUnion::new(shape);
    sketches.for_each(|s| union.add(s));
    union.estimate().round() as u64
}

/// The estimates of one family's windows (current or previous) across shards.
fn window_estimates(
    summaries: &[Summary],
    shape: SketchShape,
    pick: impl Fn(&Summary) -> Option<&[Option<DistinctSketch>; 3]>,
) -> Windowed<u64> {
    let window = |w: usize| {
        union_estimate(
            shape,
            summaries
                .iter()
                .filter_map(&pick)
                .filter_map(|windows| windows[w].as_ref()),
        )
    };
    Windowed {
        d1: window(0),
        d7: window(1),
        d30: window(2),
    }
}

/// `active_previous`: active users over the windows ending yesterday (complete days).
fn stickiness(
    summaries: &[Summary],
    shape: SketchShape,
    active_previous: &Windowed<u64>,
) -> Stickiness {
    // Complete days only: offsets 1..=7 and 1..=30 (yesterday and back).
    let daily: Vec<f64> = (0..SPAN)
        .map(|offset| {
            let days = summaries
                .iter()
                .filter_map(|s| s.active_daily.get(offset)?.as_ref());
            union_estimate(shape, days) as f64
        })
        .collect();
    let mean = |days: usize| daily[1..=days].iter().sum::<f64>() / days as f64;
    let (week, month) = (active_previous.d7 as f64, active_previous.d30 as f64);
    Stickiness {
        dau_mau: ratio(mean(30), month),
        dau_wau: ratio(mean(7), week),
        wau_mau: ratio(week, month),
    }
}

fn session_kpis(stats: &SessionStats, active_users: u64) -> SessionKpis {
    let count = stats.count as f64;
    SessionKpis {
        count: stats.count,
        avg_duration_seconds: ratio(stats.duration_ms_sum as f64, count) / 1000.0,
        p50_duration_seconds: stats.durations.quantile_ms(0.5) / 1000.0,
        p90_duration_seconds: stats.durations.quantile_ms(0.9) / 1000.0,
        bounce_rate: ratio(stats.bounces as f64, count),
        events_per_session: ratio(stats.events as f64, count),
        sessions_per_user: ratio(count, active_users as f64),
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
