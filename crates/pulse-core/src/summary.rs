//! A shard's contribution to a snapshot, computed by the shard itself.
//!
//! Each shard folds its own day buckets into window unions (1, 7, 30 days, current and
//! previous), per-day sketches for stickiness, session statistics per window and the recent
//! minute windows. The snapshot then only unions a handful of sketches per shard. Two
//! reasons: the heavy union work runs on the shard threads in parallel, and a live service
//! sends the merger a few sketches per family instead of copying whole shard states every
//! refresh. Unions are associative, so the result is the same as unioning everything in
//! one place — to the last digit.

use crate::features::FeatureId;
use crate::shard::{DayBucket, LifetimeSessions, SessionStats, ShardState};
use crate::sketch::{DistinctSketch, DistinctUnion, SketchShape};
use crate::time::Day;

/// Lengths of the KPI windows, in days.
pub const WINDOWS: [usize; 3] = [1, 7, 30];
/// Days a summary looks at: the current 30-day window and the previous one (ending
/// yesterday).
pub const SPAN: usize = 31;
/// Lengths of the recent windows, in minutes.
pub const RECENT_MINUTES: [usize; 2] = [5, 60];

/// The instant a summary is taken at: today's day number and the current minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SummaryPoint {
    pub today: Day,
    /// Minutes since the epoch.
    pub now_minute: i64,
}

/// Window unions of one sketch family (active users, signups or one feature).
#[derive(Debug, Clone, Default)]
pub struct FamilyParts {
    /// Unions over the windows ending today, by [`WINDOWS`] position.
    pub current: [Option<DistinctSketch>; 3],
    /// Unions over the windows ending yesterday.
    pub previous: [Option<DistinctSketch>; 3],
}

#[derive(Debug, Clone, Default)]
pub struct ShardSummary {
    pub active: FamilyParts,
    /// Active users of each day, by offset from today (`0..SPAN`).
    pub active_daily: Vec<Option<DistinctSketch>>,
    pub signups: FamilyParts,
    /// Indexed by [`FeatureId`].
    pub features: Vec<FamilyParts>,
    /// Session statistics over the windows ending today, by [`WINDOWS`] position.
    pub sessions: [SessionStats; 3],
    /// Unions over the recent minute windows, by [`RECENT_MINUTES`] position.
    pub recent: [Option<DistinctSketch>; 2],
    pub lifetime_sessions: LifetimeSessions,
    pub estimated_bytes: u64,
    pub open_session_keys: u64,
}

impl ShardState {
    /// Folds this shard's state as of `at`.
    pub fn summarize(&self, at: SummaryPoint, shape: SketchShape) -> ShardSummary {
        let SummaryPoint { today, now_minute } = at;
        let days: Vec<Option<&DayBucket>> = (0..SPAN)
            .map(|offset| self.bucket(today - offset as Day))
            .collect();
        let feature_count = days
            .iter()
            .flatten()
            .map(|b| b.features.len())
            .max()
            .unwrap_or(0);
        let mut sessions: [SessionStats; 3] = Default::default();
        let mut running = SessionStats::default();
        for (offset, bucket) in days.iter().take(30).enumerate() {
            if let Some(bucket) = bucket {
                running.merge(&bucket.sessions);
            }
            if let Some(w) = WINDOWS.iter().position(|w| *w == offset + 1) {
                sessions[w] = running.clone();
            }
        }
        let mut recent: [Option<DistinctSketch>; 2] = Default::default();
        let mut union = DistinctUnion::new(shape);
        let mut any = false;
        for age in 0..RECENT_MINUTES[1] {
            if let Some(sketch) = self.minute(now_minute - age as i64) {
                union.add(sketch);
                any = true;
            }
            if let Some(w) = RECENT_MINUTES.iter().position(|m| *m == age + 1) {
                recent[w] = any.then(|| union.to_sketch());
            }
        }
        ShardSummary {
            active: family(&days, shape, |b| Some(&b.active)),
            active_daily: days.iter().map(|b| b.map(|b| b.active.clone())).collect(),
            signups: family(&days, shape, |b| b.signups.as_ref()),
            features: (0..feature_count)
                .map(|id| family(&days, shape, |b| b.feature(id as FeatureId)))
                .collect(),
            sessions,
            recent,
            lifetime_sessions: self.lifetime_sessions().clone(),
            estimated_bytes: self.estimated_bytes() as u64,
            open_session_keys: self.open_session_keys() as u64,
        }
    }
}

/// Chains unions from today backwards (and from yesterday backwards), keeping the sketch
/// at each window length.
fn family(
    days: &[Option<&DayBucket>],
    shape: SketchShape,
    pick: impl Fn(&DayBucket) -> Option<&DistinctSketch>,
) -> FamilyParts {
    let chain = |first_offset: usize| {
        let mut union = DistinctUnion::new(shape);
        let mut any = false;
        let mut out: [Option<DistinctSketch>; 3] = Default::default();
        for (length, day) in days[first_offset..].iter().take(30).enumerate() {
            if let Some(sketch) = day.and_then(&pick) {
                union.add(sketch);
                any = true;
            }
            if let Some(w) = WINDOWS.iter().position(|w| *w == length + 1) {
                out[w] = any.then(|| union.to_sketch());
            }
        }
        out
    };
    FamilyParts {
        current: chain(0),
        previous: chain(1),
    }
}
