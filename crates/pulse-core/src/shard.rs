//! One shard: the state of the users routed to it, owned by one thread, no locks.
//!
//! The state is a ring of day buckets (HLL sketches of active users, signups and each
//! feature, plus statistics of the sessions that started that day) and the open-session
//! table. A bucket is reused when its slot comes round again, so memory is bounded by the
//! retention, not by history. The router has already dropped events older than the
//! retention, so an event never meets a slot holding a newer day.

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::features::FeatureId;
use crate::histogram::DurationHistogram;
use crate::sessions::{ClosedSession, SessionEvent, SessionRules, SessionTable};
use crate::settings::EngineSettings;
use crate::sketch::{DistinctSketch, SketchShape, UserHash};
use crate::summary::{PastUnions, ShardSummary, SummaryPoint};
use crate::time::Day;

/// An accepted event, reduced to what a shard needs: no user id, only its hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardEvent {
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
    fn record(&mut self, session: &ClosedSession) {
        self.count += 1;
        self.events += u64::from(session.events);
        self.bounces += u64::from(session.events == 1);
        self.duration_ms_sum += session.duration_ms.max(0) as u64;
        self.durations.record(session.duration_ms);
    }

    fn counts(&self) -> impl Iterator<Item = u64> + '_ {
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
    fn record(&mut self, duration_ms: i64) {
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
const MINUTE_SLOTS: usize = 61;

/// Everything one shard knows about one day.
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
    fn new(day: Day, shape: SketchShape) -> DayBucket {
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

    fn estimated_bytes(&self) -> usize {
        let sketches = std::iter::once(&self.active)
            .chain(self.signups.as_ref())
            .chain(self.features.iter().flatten());
        sketches.map(DistinctSketch::estimated_bytes).sum::<usize>()
            + self.features.len() * std::mem::size_of::<Option<DistinctSketch>>()
            + self.sessions.durations.estimated_bytes()
    }
}

/// The serialisable part of a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardState {
    /// Slot `day mod len` holds that day's bucket.
    days: Vec<Option<DayBucket>>,
    sessions: SessionTable,
    /// Slot `minute mod len` holds that minute's bucket.
    minutes: Vec<Option<MinuteBucket>>,
    lifetime_sessions: LifetimeSessions,
    /// Events or sessions that met a slot already holding a newer day (should stay 0).
    pub dropped: u64,
}

/// A shard: its state plus the settings it runs with.
#[derive(Debug, Clone)]
pub struct Shard {
    state: ShardState,
    shape: SketchShape,
    rules: SessionRules,
    /// Kept between snapshots; not part of the state.
    past: PastUnions,
}

impl Shard {
    pub fn new(settings: &EngineSettings) -> Shard {
        // Today plus `retention_days` before it.
        let slots = settings.retention_days as usize + 1;
        Shard::with_state(
            settings,
            ShardState {
                days: vec![None; slots],
                sessions: SessionTable::default(),
                minutes: vec![None; MINUTE_SLOTS],
                lifetime_sessions: LifetimeSessions::default(),
                dropped: 0,
            },
        )
    }

    /// Resumes a shard from saved state (its indexes are rebuilt here).
    pub fn with_state(settings: &EngineSettings, mut state: ShardState) -> Shard {
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
        Shard {
            state,
            shape: sketch_shape(settings),
            rules: session_rules(settings),
            past: PastUnions::default(),
        }
    }

    pub fn apply(&mut self, event: &ShardEvent) {
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

    fn record_minute(&mut self, event: &ShardEvent) {
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
        let ShardState {
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
        let ShardState {
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

    pub fn state(&self) -> &ShardState {
        &self.state
    }

    /// This shard's contribution to a snapshot as of `at`.
    pub fn summarize(&mut self, at: SummaryPoint) -> ShardSummary {
        self.state.summarize_with(at, self.shape, &mut self.past)
    }

    pub fn into_state(self) -> ShardState {
        self.state
    }
}

impl ShardState {
    /// The bucket of `day`, if this shard has one.
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
        let mut state = Engine::new(EngineSettings::default(), 1_900_000_000_000).state();
        assert!(EngineState::from_bytes(&state.to_bytes()).is_ok());
        state.shards[0].lifetime_sessions.counts[0] = u64::MAX - 1;
        state.shards[0].lifetime_sessions.count = 2;
        assert!(matches!(
            EngineState::from_bytes(&state.to_bytes()),
            Err(StateError::Corrupt(_))
        ));
    }
}
