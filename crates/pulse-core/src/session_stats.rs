//! Statistics of closed sessions: per day and window ([`SessionStats`]) and over the life
//! of the state ([`LifetimeSessions`]). Exact, and they merge by addition.

use serde::{Deserialize, Serialize};

use crate::histogram::DurationHistogram;
use crate::sessions::ClosedSession;

/// Statistics of closed sessions; they merge by addition, so they are exact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionStats {
    pub count: u64,
    pub events: u64,
    pub bounces: u64,
    pub duration_ms_sum: u64,
    pub durations: DurationHistogram,
}

impl SessionStats {
    pub(crate) fn record<T>(&mut self, session: &ClosedSession<T>) {
        self.count += 1;
        self.events += u64::from(session.events);
        self.bounces += u64::from(session.events == 1);
        self.duration_ms_sum += session.duration_ms.max(0) as u64;
        self.durations.record(session.duration_ms);
    }

    pub(crate) fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        [self.count, self.events, self.bounces, self.duration_ms_sum]
            .into_iter()
            .chain(self.durations.counts())
    }

    pub fn merge(&mut self, other: &SessionStats) {
        self.count += other.count;
        self.events += other.events;
        self.bounces += other.bounces;
        self.duration_ms_sum += other.duration_ms_sum;
        self.durations.merge(&other.durations);
    }
}

/// Upper bounds (seconds) of the buckets of the closed-session histogram, a fixed set so
/// that it can be exported as a Prometheus histogram.
pub const SESSION_BUCKETS_SECONDS: [f64; 14] = [
    1.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    86400.0,
];

/// Every session closed since the state began, by duration: monotonic, so it can be
/// exported as a Prometheus histogram and survive restarts with the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifetimeSessions {
    /// Per bucket of [`SESSION_BUCKETS_SECONDS`], not cumulative; the last is `+Inf`.
    pub counts: Vec<u64>,
    pub sum_ms: u64,
    pub count: u64,
}

impl Default for LifetimeSessions {
    fn default() -> Self {
        LifetimeSessions {
            counts: vec![0; SESSION_BUCKETS_SECONDS.len() + 1],
            sum_ms: 0,
            count: 0,
        }
    }
}

impl LifetimeSessions {
    pub(crate) fn record(&mut self, duration_ms: i64) {
        let seconds = duration_ms.max(0) as f64 / 1000.0;
        let bucket = SESSION_BUCKETS_SECONDS.partition_point(|bound| *bound < seconds);
        self.counts[bucket] += 1;
        self.sum_ms += duration_ms.max(0) as u64;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &LifetimeSessions) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum_ms += other.sum_ms;
        self.count += other.count;
    }
}
