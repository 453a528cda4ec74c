//! What a partition's rings hold: a day's and a minute's buckets, and session statistics.
//!
//! Plain data shared by the partition that fills them ([`crate::partition`]) and the
//! summary that folds them ([`crate::summary`]); neither needs the other to read them.

use serde::{Deserialize, Serialize};

use crate::features::FeatureId;
use crate::histogram::DurationHistogram;
use crate::sessions::ClosedSession;
use crate::sketch::{DistinctSketch, SketchShape};
use crate::time::Day;

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
    pub(crate) fn record(&mut self, session: &ClosedSession) {
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

/// Active users of one minute, for the recent (5-minute, 1-hour) windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteBucket {
    /// Minutes since the epoch.
    pub minute: i64,
    pub active: DistinctSketch,
}

/// Minute slots kept: the longest recent window (an hour) plus the minute in progress.
pub(crate) const MINUTE_SLOTS: usize = 61;

/// Everything one partition knows about one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayBucket {
    pub day: Day,
    pub active: DistinctSketch,
    pub signups: Option<DistinctSketch>,
    /// Indexed by [`FeatureId`]; grown on first use.
    pub features: Vec<Option<DistinctSketch>>,
    pub sessions: SessionStats,
}

impl DayBucket {
    pub(crate) fn new(day: Day, shape: SketchShape) -> DayBucket {
        DayBucket {
            day,
            active: DistinctSketch::new(shape),
            signups: None,
            features: Vec::new(),
            sessions: SessionStats::default(),
        }
    }

    pub fn feature(&self, id: FeatureId) -> Option<&DistinctSketch> {
        self.features.get(usize::from(id)).and_then(Option::as_ref)
    }

    pub(crate) fn estimated_bytes(&self) -> usize {
        let sketches = std::iter::once(&self.active)
            .chain(self.signups.as_ref())
            .chain(self.features.iter().flatten());
        sketches.map(DistinctSketch::estimated_bytes).sum::<usize>()
            + self.features.len() * std::mem::size_of::<Option<DistinctSketch>>()
            + self.sessions.durations.estimated_bytes()
    }
}
