//! One input partition: the unit of state, checkpoint and hand-over.
//!
//! A [`PartitionState`] holds everything derived from one partition of the input: what the
//! router counted of it ([`PartitionInputs`]) and its KPI state ([`KpiState`]) — a ring of
//! day buckets (HLL sketches of active users, signups and each feature, plus statistics of
//! the sessions that started that day), a ring of minute buckets and the open-session
//! table. It saves and restores on its own, and partitions combine: their summaries merge
//! ([`crate::summary::Summary::merge`]), because HLL union is lossless and session
//! statistics add, so the global view is the merge of every partition, however they are
//! spread over threads or machines.
//!
//! A [`Partition`] is the live form, owned by one worker thread, no locks. A bucket is
//! reused when its slot comes round again, so memory is bounded by the retention, not by
//! history. The router has already dropped events older than the retention, so an event
//! never meets a slot holding a newer day.

use serde::{Deserialize, Serialize};

use crate::buckets::{
    DayBucket, LifetimeSessions, MINUTE_SLOTS, MinuteBucket, SESSION_BUCKETS_SECONDS,
};
use crate::event::EventKind;
use crate::event::Rejection;
use crate::features::FeatureId;
use crate::sessions::{ClosedSession, SessionEvent, SessionRules, SessionTable};
use crate::settings::EngineSettings;
use crate::sketch::{DistinctSketch, SketchShape, UserHash};
use crate::summary::{self, Held, PastUnions, Summary, SummaryPoint};
use crate::time::Day;

/// An accepted event, reduced to what a partition needs: no user id, only its hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionEvent {
    /// The partition number it belongs to.
    pub partition: u32,
    pub user: UserHash,
    pub session_key: u64,
    pub ts_ms: i64,
    pub day: Day,
    pub kind: EventKind,
    pub feature: Option<FeatureId>,
    /// False when the event arrived later than the allowed lateness: it still counts as
    /// activity, but can no longer join a session exactly.
    pub sessionize: bool,
}

/// Counters of one partition, exact; the stream's are their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub accepted: u64,
    /// Indexed like [`Rejection::ALL`].
    pub rejected: [u64; Rejection::ALL.len()],
    pub late: u64,
    pub future: u64,
    /// Applied to the windows, but too late (past the allowed lateness) to join a session.
    pub late_for_sessions: u64,
    /// Indexed like [`EventKind::ALL`].
    pub by_kind: [u64; EventKind::ALL.len()],
    /// `feature_used` events that named no feature.
    pub feature_missing: u64,
}

impl Counters {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    pub fn reject(&mut self, reason: Rejection) {
        self.rejected[reason as usize] += 1;
    }

    pub fn add(&mut self, other: &Counters) {
        self.accepted += other.accepted;
        for (mine, theirs) in self.rejected.iter_mut().zip(&other.rejected) {
            *mine += theirs;
        }
        self.late += other.late;
        self.future += other.future;
        self.late_for_sessions += other.late_for_sessions;
        for (mine, theirs) in self.by_kind.iter_mut().zip(&other.by_kind) {
            *mine += theirs;
        }
        self.feature_missing += other.feature_missing;
    }

    /// Every count, for checking a restored state.
    pub(crate) fn all(&self) -> impl Iterator<Item = u64> + '_ {
        [
            self.accepted,
            self.late,
            self.future,
            self.late_for_sessions,
            self.feature_missing,
        ]
        .into_iter()
        .chain(self.rejected)
        .chain(self.by_kind)
    }
}

/// What the router knows of one input partition: part of that partition's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInputs {
    pub counters: Counters,
    /// The newest accepted event time of the partition.
    pub max_event_ms: Option<i64>,
}

/// The counters of some partitions, added up.
pub fn total_counters<'a>(inputs: impl IntoIterator<Item = &'a PartitionInputs>) -> Counters {
    let mut total = Counters::default();
    inputs.into_iter().for_each(|i| total.add(&i.counters));
    total
}

/// Everything one partition knows: what a checkpoint stores per partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionState {
    /// Its number: the Kafka partition, or the virtual one of a replay.
    pub partition: u32,
    pub inputs: PartitionInputs,
    pub kpis: KpiState,
}

/// The KPI part of a partition's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KpiState {
    /// Slot `day mod len` holds that day's bucket.
    days: Vec<Option<DayBucket>>,
    sessions: SessionTable,
    /// Slot `minute mod len` holds that minute's bucket.
    minutes: Vec<Option<MinuteBucket>>,
    lifetime_sessions: LifetimeSessions,
    /// Events or sessions that met a slot already holding a newer day (should stay 0).
    pub dropped: u64,
}

/// A partition's KPI state plus the settings it runs with.
#[derive(Debug, Clone)]
pub struct Partition {
    state: KpiState,
    shape: SketchShape,
    rules: SessionRules,
    /// Kept between snapshots; not part of the state.
    past: PastUnions,
}

impl Partition {
    pub fn new(settings: &EngineSettings) -> Partition {
        Partition::with_state(settings, KpiState::empty(settings))
    }

    /// Resumes a partition from saved state (its indexes are rebuilt here).
    pub fn with_state(settings: &EngineSettings, mut state: KpiState) -> Partition {
        state.sessions.restore_index();
        // An image that passed its checksum is trusted, but a shape it cannot have been
        // written with is repaired rather than allowed to panic later.
        if state.minutes.len() != MINUTE_SLOTS {
            state.minutes = vec![None; MINUTE_SLOTS];
        }
        state
            .lifetime_sessions
            .counts
            .resize(SESSION_BUCKETS_SECONDS.len() + 1, 0);
        let slots = settings.retention_days as usize + 1;
        if state.days.len() != slots {
            // Retention changed between runs: re-slot what fits, drop what no longer does.
            let mut days: Vec<Option<DayBucket>> = vec![None; slots];
            let mut kept: Vec<DayBucket> = state.days.into_iter().flatten().collect();
            kept.sort_by_key(|b| b.day);
            for bucket in kept {
                let slot = bucket.day.rem_euclid(slots as Day) as usize;
                days[slot] = Some(bucket);
            }
            state.days = days;
        }
        Partition {
            state,
            shape: sketch_shape(settings),
            rules: session_rules(settings),
            past: PastUnions::default(),
        }
    }

    pub fn apply(&mut self, event: &PartitionEvent) {
        self.record_minute(event);
        self.past.note_write(event.day);
        let Some(bucket) = bucket_mut(&mut self.state.days, event.day, self.shape) else {
            self.state.dropped += 1;
            return;
        };
        bucket.active.insert(&event.user);
        if event.kind == EventKind::Signup {
            bucket
                .signups
                .get_or_insert_with(|| DistinctSketch::new(self.shape))
                .insert(&event.user);
        }
        if let Some(id) = event.feature {
            let index = usize::from(id);
            if bucket.features.len() <= index {
                bucket.features.resize(index + 1, None);
            }
            bucket.features[index]
                .get_or_insert_with(|| DistinctSketch::new(self.shape))
                .insert(&event.user);
        }
        if event.sessionize {
            let session_event = SessionEvent::new(event.ts_ms, event.day, event.kind);
            self.state
                .sessions
                .insert(event.session_key, session_event, &self.rules);
        }
    }

    fn record_minute(&mut self, event: &PartitionEvent) {
        let minute = event.ts_ms.div_euclid(60_000);
        let slot = &mut self.state.minutes[minute.rem_euclid(MINUTE_SLOTS as i64) as usize];
        match slot {
            // Older than the hour the ring holds: only the day buckets need it.
            Some(bucket) if bucket.minute > minute => {}
            Some(bucket) if bucket.minute == minute => bucket.active.insert(&event.user),
            _ => {
                let mut active = DistinctSketch::new(self.shape);
                active.insert(&event.user);
                *slot = Some(MinuteBucket { minute, active });
            }
        }
    }

    /// Closes the sessions that are final once the watermark has reached `watermark_ms`.
    pub fn advance(&mut self, watermark_ms: i64) {
        let KpiState {
            days,
            sessions,
            lifetime_sessions,
            dropped,
            ..
        } = &mut self.state;
        sessions.advance(watermark_ms, &self.rules, |s| {
            record_session(days, lifetime_sessions, dropped, &s)
        });
    }

    /// Closes every open session: the end of a replay.
    pub fn close_all(&mut self) {
        let KpiState {
            days,
            sessions,
            lifetime_sessions,
            dropped,
            ..
        } = &mut self.state;
        sessions.close_all(&self.rules, |s| {
            record_session(days, lifetime_sessions, dropped, &s)
        });
    }

    pub fn state(&self) -> &KpiState {
        &self.state
    }

    /// This partition's contribution to a snapshot as of `at`.
    pub fn summarize(&mut self, at: SummaryPoint) -> Summary {
        summary::summarize(&self.state, at, self.shape, &mut self.past)
    }

    pub fn into_state(self) -> KpiState {
        self.state
    }
}

impl KpiState {
    /// The bucket of `day`, if this partition has one.
    pub fn bucket(&self, day: Day) -> Option<&DayBucket> {
        let slot = day.rem_euclid(self.days.len() as Day) as usize;
        self.days[slot].as_ref().filter(|b| b.day == day)
    }

    /// The active-user sketch of a minute (minutes since the epoch), if held.
    pub fn minute(&self, minute: i64) -> Option<&DistinctSketch> {
        let slot = minute.rem_euclid(self.minutes.len() as i64) as usize;
        self.minutes[slot]
            .as_ref()
            .filter(|b| b.minute == minute)
            .map(|b| &b.active)
    }

    pub fn lifetime_sessions(&self) -> &LifetimeSessions {
        &self.lifetime_sessions
    }

    pub fn open_session_keys(&self) -> usize {
        self.sessions.open_keys()
    }

    pub(crate) fn open_event_times(&self) -> impl Iterator<Item = i64> + '_ {
        self.sessions.event_times()
    }

    /// Every session count and duration sum held, for checking a restored state.
    pub(crate) fn session_counts(&self) -> impl Iterator<Item = u64> + '_ {
        let lifetime = &self.lifetime_sessions;
        self.days
            .iter()
            .flatten()
            .flat_map(|bucket| bucket.sessions.counts())
            .chain(lifetime.counts.iter().copied())
            .chain([lifetime.sum_ms, lifetime.count])
    }

    pub fn estimated_bytes(&self) -> usize {
        let minutes = self
            .minutes
            .iter()
            .flatten()
            .map(|m| m.active.estimated_bytes())
            .sum::<usize>();
        self.days
            .iter()
            .flatten()
            .map(DayBucket::estimated_bytes)
            .sum::<usize>()
            + minutes
            + self.sessions.estimated_bytes()
    }
}

impl KpiState {
    /// The state of a partition that has seen nothing.
    pub fn empty(settings: &EngineSettings) -> KpiState {
        // Today plus `retention_days` before it.
        let slots = settings.retention_days as usize + 1;
        KpiState {
            days: vec![None; slots],
            sessions: SessionTable::default(),
            minutes: vec![None; MINUTE_SLOTS],
            lifetime_sessions: LifetimeSessions::default(),
            dropped: 0,
        }
    }

    /// Folds this state as of `at` afresh (a rollup's past day, a test's reference).
    pub fn summarize(&self, at: SummaryPoint, shape: SketchShape) -> Summary {
        summary::summarize(self, at, shape, &mut PastUnions::default())
    }
}

impl Held for KpiState {
    fn bucket(&self, day: Day) -> Option<&DayBucket> {
        KpiState::bucket(self, day)
    }

    fn minute(&self, minute: i64) -> Option<&DistinctSketch> {
        KpiState::minute(self, minute)
    }

    fn lifetime_sessions(&self) -> &LifetimeSessions {
        &self.lifetime_sessions
    }

    fn estimated_bytes(&self) -> usize {
        KpiState::estimated_bytes(self)
    }

    fn open_session_keys(&self) -> usize {
        KpiState::open_session_keys(self)
    }
}

fn record_session(
    days: &mut [Option<DayBucket>],
    lifetime: &mut LifetimeSessions,
    dropped: &mut u64,
    session: &ClosedSession,
) {
    lifetime.record(session.duration_ms);
    let slot = session.start_day.rem_euclid(days.len() as Day) as usize;
    match days[slot].as_mut() {
        Some(bucket) if bucket.day == session.start_day => bucket.sessions.record(session),
        _ => *dropped += 1,
    }
}

fn bucket_mut(
    days: &mut [Option<DayBucket>],
    day: Day,
    shape: SketchShape,
) -> Option<&mut DayBucket> {
    let slot = day.rem_euclid(days.len() as Day) as usize;
    let entry = &mut days[slot];
    match entry.as_ref().map(|b| b.day) {
        Some(held) if held > day => None,
        Some(held) if held == day => entry.as_mut(),
        _ => Some(entry.insert(DayBucket::new(day, shape))),
    }
}

pub fn sketch_shape(settings: &EngineSettings) -> SketchShape {
    SketchShape {
        lg_k: settings.hll_lg_k,
        width: settings.hll_width,
    }
}

pub fn session_rules(settings: &EngineSettings) -> SessionRules {
    SessionRules {
        timeout_ms: settings.session_timeout_ms,
        max_length_ms: settings.session_max_length_ms,
        lateness_ms: settings.allowed_lateness_ms,
    }
}

#[cfg(test)]
mod tests {
    use crate::{Engine, EngineSettings, EngineState, StateError};

    #[test]
    fn session_counts_no_stream_could_reach_make_an_image_corrupt() {
        // The fuzzer's find: a duration histogram near 2^64 overflowed the snapshot's count.
        let mut engine = Engine::new(EngineSettings::default(), 1_900_000_000_000);
        engine.ingest(
            br#"{"user_id":"u","event":"login","ts":1772323200000}"#,
            None,
        );
        let mut state = engine.state();
        assert!(EngineState::from_bytes(&state.to_bytes()).is_ok());
        state.partitions[0].kpis.lifetime_sessions.counts[0] = u64::MAX - 1;
        state.partitions[0].kpis.lifetime_sessions.count = 2;
        assert!(matches!(
            EngineState::from_bytes(&state.to_bytes()),
            Err(StateError::Corrupt(_))
        ));
    }
}
