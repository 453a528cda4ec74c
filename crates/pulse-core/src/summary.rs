//! A partition's contribution to a snapshot, computed by the partition's worker.
//!
//! Each partition folds its own day buckets into window unions (1, 7, 30 days, current and
//! previous), per-day sketches for stickiness, session statistics per window and the recent
//! minute windows. The snapshot then only unions a handful of sketches per shard. Two
//! reasons: the heavy union work runs on the shard threads in parallel, and a live service
//! sends the merger a few sketches per family instead of copying whole shard states every
//! refresh. Unions are associative, so the result is the same as unioning everything in
//! one place — to the last digit.

use crate::buckets::{DayBucket, LifetimeSessions, SessionStats};
use crate::features::FeatureId;
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
    /// Unions over the windows ending yesterday: for active users only, the one family
    /// whose previous windows a snapshot shows (always `None` for the others, which would
    /// cost as much again to fold for nothing).
    pub previous: [Option<DistinctSketch>; 3],
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
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

/// Unions of the days before today, per family and window: `before[w]` covers the
/// `WINDOWS[w] - 1` days before today. Every window is then a union of two sketches, itself
/// with today (current) or with the day just past its start (previous), instead of a chain
/// of up to thirty. A live shard keeps these between snapshots, because in the usual case
/// only today's bucket changes; any write to an earlier day, or a new day, drops them.
/// (At 10⁷ users and 200 features, chaining every window at every refresh took longer than
/// the default refresh interval.)
#[derive(Debug, Clone, Default)]
pub struct PastUnions {
    /// The day these were computed for; `None` when there are none.
    today: Option<Day>,
    active: PastFamily,
    signups: PastFamily,
    /// Indexed by [`FeatureId`]; a feature beyond the end has no past.
    features: Vec<PastFamily>,
}

/// By [`WINDOWS`] position; the one-day window has no days before today.
#[derive(Debug, Clone, Default)]
struct PastFamily([Option<DistinctSketch>; 3]);

impl PastUnions {
    /// Takes a write to `day` into account: a day before today changes the past.
    pub fn note_write(&mut self, day: Day) {
        if self.today.is_some_and(|today| day < today) {
            *self = PastUnions::default();
        }
    }

    fn compute(
        days: &[Option<&DayBucket>],
        shape: SketchShape,
        features: usize,
        today: Day,
    ) -> Self {
        PastUnions {
            today: Some(today),
            active: past_family(days, shape, |b| Some(&b.active)),
            signups: past_family(days, shape, |b| b.signups.as_ref()),
            features: (0..features)
                .map(|id| past_family(days, shape, |b| b.feature(id as FeatureId)))
                .collect(),
        }
    }

    pub fn estimated_bytes(&self) -> usize {
        std::iter::once(&self.active)
            .chain([&self.signups])
            .chain(&self.features)
            .flat_map(|family| family.0.iter().flatten())
            .map(DistinctSketch::estimated_bytes)
            .sum()
    }
}

/// What a summary reads of a partition's state.
pub trait Held {
    /// The bucket of `day`, if held.
    fn bucket(&self, day: Day) -> Option<&DayBucket>;
    /// The active-user sketch of a minute (minutes since the epoch), if held.
    fn minute(&self, minute: i64) -> Option<&DistinctSketch>;
    fn lifetime_sessions(&self) -> &LifetimeSessions;
    fn estimated_bytes(&self) -> usize;
    fn open_session_keys(&self) -> usize;
}

/// Folds `held` as of `at`, reusing `past` if it is still valid (and renewing it if not).
pub fn summarize(
    held: &impl Held,
    at: SummaryPoint,
    shape: SketchShape,
    past: &mut PastUnions,
) -> Summary {
    let SummaryPoint { today, now_minute } = at;
    let days: Vec<Option<&DayBucket>> = (0..SPAN)
        .map(|offset| held.bucket(today - offset as Day))
        .collect();
    let feature_count = days
        .iter()
        .flatten()
        .map(|b| b.features.len())
        .max()
        .unwrap_or(0);
    if past.today != Some(today) {
        *past = PastUnions::compute(&days, shape, feature_count, today);
    }
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
        if let Some(sketch) = held.minute(now_minute - age as i64) {
            union.add(sketch);
            any = true;
        }
        if let Some(w) = RECENT_MINUTES.iter().position(|m| *m == age + 1) {
            recent[w] = any.then(|| union.to_sketch());
        }
    }
    let no_past = PastFamily::default();
    Summary {
        active: family(&days, shape, &past.active, Previous::Fold, |b| {
            Some(&b.active)
        }),
        active_daily: days.iter().map(|b| b.map(|b| b.active.clone())).collect(),
        signups: family(&days, shape, &past.signups, Previous::Skip, |b| {
            b.signups.as_ref()
        }),
        features: (0..feature_count)
            .map(|id| {
                let before = past.features.get(id).unwrap_or(&no_past);
                family(&days, shape, before, Previous::Skip, |b| {
                    b.feature(id as FeatureId)
                })
            })
            .collect(),
        sessions,
        recent,
        lifetime_sessions: held.lifetime_sessions().clone(),
        estimated_bytes: (held.estimated_bytes() + past.estimated_bytes()) as u64,
        open_session_keys: held.open_session_keys() as u64,
    }
}

impl Summary {
    /// Takes `other` in: the summary of both partitions (or sets of partitions) together.
    /// Sketches union (lossless), statistics add.
    pub fn merge(&mut self, other: Summary, shape: SketchShape) {
        self.active.merge(other.active, shape);
        self.signups.merge(other.signups, shape);
        if self.active_daily.len() < other.active_daily.len() {
            self.active_daily.resize(other.active_daily.len(), None);
        }
        for (mine, theirs) in self.active_daily.iter_mut().zip(other.active_daily) {
            merge_sketch(mine, theirs, shape);
        }
        if self.features.len() < other.features.len() {
            self.features
                .resize_with(other.features.len(), FamilyParts::default);
        }
        for (mine, theirs) in self.features.iter_mut().zip(other.features) {
            mine.merge(theirs, shape);
        }
        for (mine, theirs) in self.sessions.iter_mut().zip(&other.sessions) {
            mine.merge(theirs);
        }
        for (mine, theirs) in self.recent.iter_mut().zip(other.recent) {
            merge_sketch(mine, theirs, shape);
        }
        self.lifetime_sessions.merge(&other.lifetime_sessions);
        self.estimated_bytes += other.estimated_bytes;
        self.open_session_keys += other.open_session_keys;
    }
}

impl FamilyParts {
    fn merge(&mut self, other: FamilyParts, shape: SketchShape) {
        let theirs = other.current.into_iter().chain(other.previous);
        for (mine, theirs) in self
            .current
            .iter_mut()
            .chain(&mut self.previous)
            .zip(theirs)
        {
            merge_sketch(mine, theirs, shape);
        }
    }
}

fn merge_sketch(
    mine: &mut Option<DistinctSketch>,
    theirs: Option<DistinctSketch>,
    shape: SketchShape,
) {
    let Some(theirs) = theirs else { return };
    *mine = Some(match mine.take() {
        None => theirs,
        Some(held) => {
            let mut union = DistinctUnion::new(shape);
            union.add(&held);
            union.add(&theirs);
            union.to_sketch()
        }
    });
}

/// Chains unions from yesterday backwards, keeping the sketch before each window's today.
fn past_family(
    days: &[Option<&DayBucket>],
    shape: SketchShape,
    pick: impl Fn(&DayBucket) -> Option<&DistinctSketch>,
) -> PastFamily {
    let mut union = DistinctUnion::new(shape);
    let mut any = false;
    let mut before: [Option<DistinctSketch>; 3] = Default::default();
    let longest = WINDOWS[WINDOWS.len() - 1];
    for (offset, day) in days.iter().enumerate().take(longest).skip(1) {
        if let Some(sketch) = day.and_then(&pick) {
            union.add(sketch);
            any = true;
        }
        // Days 1..=offset are in: that is what precedes today in a window of offset + 1.
        if let Some(w) = WINDOWS.iter().position(|w| *w == offset + 1) {
            before[w] = any.then(|| union.to_sketch());
        }
    }
    PastFamily(before)
}

/// Whether a family's windows ending yesterday are folded too (see [`FamilyParts`]).
#[derive(Clone, Copy, PartialEq)]
enum Previous {
    Fold,
    Skip,
}

/// The windows of one family: each the past before it, with today (current) or with the
/// day just before its start (previous, the window ending yesterday).
fn family(
    days: &[Option<&DayBucket>],
    shape: SketchShape,
    past: &PastFamily,
    previous: Previous,
    pick: impl Fn(&DayBucket) -> Option<&DistinctSketch>,
) -> FamilyParts {
    let today = days[0].and_then(&pick);
    let mut parts = FamilyParts::default();
    for (w, length) in WINDOWS.iter().enumerate() {
        let before = past.0[w].as_ref();
        parts.current[w] = union_of(shape, [before, today]);
        if previous == Previous::Fold {
            parts.previous[w] = union_of(shape, [before, days[*length].and_then(&pick)]);
        }
    }
    parts
}

fn union_of(shape: SketchShape, sketches: [Option<&DistinctSketch>; 2]) -> Option<DistinctSketch> {
    let mut present = sketches.into_iter().flatten().peekable();
    present.peek()?;
    let mut union = DistinctUnion::new(shape);
    present.for_each(|sketch| union.add(sketch));
    Some(union.to_sketch())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::event::EventKind;
    use crate::partition::{KpiState, Partition, PartitionEvent, sketch_shape};
    use crate::settings::EngineSettings;
    use crate::sketch::UserHash;

    #[derive(Debug, Clone)]
    enum Step {
        /// `users` users (from `first`) active `days_ago` days before today.
        Activity {
            first: u32,
            users: u32,
            days_ago: Day,
            signup: bool,
            feature: Option<u16>,
        },
        /// A snapshot, after the clock moved on by some days.
        Snapshot { days_later: Day },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u32..20_000, 1u32..3_000, 0..(SPAN as Day + 3), any::<bool>(), proptest::option::of(0u16..3))
                .prop_map(|(first, users, days_ago, signup, feature)| Step::Activity { first, users, days_ago, signup, feature }),
            2 => (0..3 as Day).prop_map(|days_later| Step::Snapshot { days_later }),
        ]
    }

    fn estimates(parts: &FamilyParts) -> Vec<Option<f64>> {
        parts
            .current
            .iter()
            .chain(&parts.previous)
            .map(|s| s.as_ref().map(DistinctSketch::estimate))
            .collect()
    }

    fn families(summary: &Summary) -> Vec<Vec<Option<f64>>> {
        [&summary.active, &summary.signups]
            .into_iter()
            .chain(&summary.features)
            .map(estimates)
            .collect()
    }

    /// Every window unioned day by day: what the summary must equal.
    fn folded_day_by_day(
        state: &KpiState,
        today: Day,
        shape: SketchShape,
        features: usize,
    ) -> Vec<Vec<Option<f64>>> {
        let window =
            |pick: &dyn Fn(&DayBucket) -> Option<&DistinctSketch>, first: usize, length: usize| {
                let mut union = DistinctUnion::new(shape);
                let mut any = false;
                for offset in first..first + length {
                    if let Some(sketch) = state.bucket(today - offset as Day).and_then(pick) {
                        union.add(sketch);
                        any = true;
                    }
                }
                any.then(|| union.to_sketch().estimate())
            };
        // Previous windows for active users only (see `FamilyParts`).
        let family = |pick: &dyn Fn(&DayBucket) -> Option<&DistinctSketch>, previous: bool| {
            let current = WINDOWS.iter().map(|&length| window(pick, 0, length));
            let previous = WINDOWS
                .iter()
                .map(|&length| previous.then(|| window(pick, 1, length)).flatten());
            current.chain(previous).collect::<Vec<_>>()
        };
        [
            family(&|b| Some(&b.active), true),
            family(&|b| b.signups.as_ref(), false),
        ]
        .into_iter()
        .chain((0..features).map(|id| family(&|b| b.feature(id as FeatureId), false)))
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Past unions kept between snapshots give exactly the figures of unioning every
        /// window day by day, through late writes, new features and day changes, in list, set
        /// and HLL modes alike.
        #[test]
        fn kept_past_unions_give_the_summary_folded_afresh(steps in proptest::collection::vec(step(), 1..40)) {
            let settings = EngineSettings::default();
            let shape = sketch_shape(&settings);
            let mut shard = Partition::new(&settings);
            let mut today: Day = 20_000;
            for step in steps {
                match step {
                    Step::Activity { first, users, days_ago, signup, feature } => {
                        let day = today - days_ago;
                        for user in first..first + users {
                            shard.apply(&PartitionEvent {
                                partition: 0,
                                user: UserHash::of(&format!("u{user}")),
                                session_key: u64::from(user),
                                ts_ms: i64::from(day) * 86_400_000,
                                day,
                                kind: if signup { EventKind::Signup } else { EventKind::Login },
                                feature,
                                sessionize: false,
                            });
                        }
                    }
                    Step::Snapshot { days_later } => {
                        today += days_later;
                        let at = SummaryPoint { today, now_minute: i64::from(today) * 1440 };
                        let kept = shard.summarize(at);
                        let afresh = shard.state().summarize(at, shape);
                        prop_assert_eq!(families(&kept), families(&afresh));
                        let expected = folded_day_by_day(shard.state(), today, shape, kept.features.len());
                        prop_assert_eq!(families(&kept), expected);
                    }
                }
            }
        }
    }
}
