//! The router: decoded records in, shard-ready events out.
//!
//! Everything that must be decided once for the whole stream lives here, so the answer does
//! not depend on the number of shards: the clock (`now` and the session watermark), the
//! late / future classification, the feature registry, the counters, and the choice of
//! shard. Decoding and hashing the user, which need none of this, are the separate
//! [`prepare`](crate::prepare) step, so that callers may run them on other threads; shards
//! never see a user id.

use serde::{Deserialize, Serialize};

use crate::decode::Decoder;
use crate::event::{EventKind, Rejection};
use crate::features::FeatureRegistry;
use crate::prepare::Prepared;
use crate::settings::{ClockMode, EngineSettings};
use crate::shard::ShardEvent;
use crate::summary::SummaryPoint;
use crate::time::{Calendar, Day};

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted {
        shard: usize,
        event: ShardEvent,
    },
    Rejected(Rejection),
    /// Older than the retention: counted, not applied.
    Late,
    /// Further in the future than the allowed skew: counted, not applied.
    Future,
}

/// Stream-wide counters, exact.
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
}

/// The serialisable part of the router.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterState {
    pub counters: Counters,
    pub features: FeatureRegistry,
    /// The largest accepted event time: the event-time clock.
    pub max_event_ms: Option<i64>,
    /// The session watermark: no event older than this minus the allowed lateness is
    /// expected any more. It only moves forward.
    pub watermark_ms: Option<i64>,
}

/// Decodes, classifies and routes events. One per input stream.
#[derive(Debug, Clone)]
pub struct Ingestor {
    decoder: Decoder,
    calendar: Calendar,
    state: RouterState,
    clock: ClockMode,
    /// The wall clock as last told by the caller: the reference for `future`, and `now` in
    /// [`ClockMode::Wall`].
    wall_ms: i64,
    shards: usize,
    retention_days: Day,
    lateness_ms: i64,
    max_future_skew_ms: i64,
    /// Whether the caller drives the watermark (a Kafka source: the minimum over its
    /// partitions) instead of the largest event time seen.
    source_watermark: bool,
}

impl Ingestor {
    /// `settings` must be validated; `wall_ms` is the wall clock now.
    pub fn new(settings: &EngineSettings, wall_ms: i64) -> Ingestor {
        let state = RouterState {
            counters: Counters::default(),
            features: FeatureRegistry::new(settings.max_features),
            max_event_ms: None,
            watermark_ms: None,
        };
        Ingestor::with_state(settings, wall_ms, state)
    }

    pub fn with_state(settings: &EngineSettings, wall_ms: i64, mut state: RouterState) -> Ingestor {
        state.features.restore_index();
        Ingestor {
            decoder: Decoder::new(settings),
            calendar: Calendar::new(settings.timezone.clone()),
            state,
            clock: settings.clock,
            wall_ms,
            shards: settings.shards,
            retention_days: settings.retention_days as Day,
            lateness_ms: settings.allowed_lateness_ms,
            max_future_skew_ms: settings.max_future_skew_ms,
            source_watermark: false,
        }
    }

    pub fn set_wall_clock(&mut self, wall_ms: i64) {
        self.wall_ms = wall_ms;
    }

    /// Decodes and routes one record. `fallback_ts_ms` is used when the record has no time
    /// (a Kafka message timestamp); without one, such a record is rejected.
    pub fn ingest(&mut self, bytes: &[u8], fallback_ts_ms: Option<i64>) -> Outcome {
        let prepared = self.decoder.prepare(bytes);
        self.route(prepared, fallback_ts_ms)
    }

    /// Routes a record prepared by [`Decoder::prepare`] (on this thread or another, with a
    /// decoder built from the same settings). Records must come in input order.
    pub fn route(
        &mut self,
        prepared: Result<Prepared<'_>, Rejection>,
        fallback_ts_ms: Option<i64>,
    ) -> Outcome {
        let event = match prepared {
            Ok(event) => event,
            Err(reason) => return self.reject(reason),
        };
        let Some(ts_ms) = event.ts_ms.or(fallback_ts_ms) else {
            return self.reject(Rejection::MissingTimestamp);
        };
        if ts_ms > self.wall_ms.saturating_add(self.max_future_skew_ms) {
            self.state.counters.future += 1;
            return Outcome::Future;
        }
        let now_ms = match self.clock {
            ClockMode::EventTime => self.state.max_event_ms.map_or(ts_ms, |m| m.max(ts_ms)),
            ClockMode::Wall => self.wall_ms,
        };
        let day = self.calendar.day_of(ts_ms);
        if day < self.calendar.day_of(now_ms) - self.retention_days {
            self.state.counters.late += 1;
            return Outcome::Late;
        }
        let sessionize = self
            .state
            .watermark_ms
            .is_none_or(|w| ts_ms >= w.saturating_sub(self.lateness_ms));
        self.state.max_event_ms = Some(self.state.max_event_ms.map_or(ts_ms, |m| m.max(ts_ms)));
        if !self.source_watermark {
            self.advance_watermark(ts_ms);
        }

        let counters = &mut self.state.counters;
        counters.accepted += 1;
        counters.by_kind[event.kind as usize] += 1;
        counters.late_for_sessions += u64::from(!sessionize);
        let feature = match &event.feature {
            Some(name) => Some(self.state.features.intern(name)),
            None => {
                counters.feature_missing += u64::from(event.kind == EventKind::FeatureUsed);
                None
            }
        };
        let shard = shard_of(event.user.key, self.shards);
        let event = ShardEvent {
            user: event.user,
            session_key: event.session_key,
            ts_ms,
            day,
            kind: event.kind,
            feature,
            sessionize,
        };
        Outcome::Accepted { shard, event }
    }

    fn reject(&mut self, reason: Rejection) -> Outcome {
        self.count_rejection(reason);
        Outcome::Rejected(reason)
    }

    /// Counts a rejection found outside the decoder (an unreadable line, say).
    pub fn count_rejection(&mut self, reason: Rejection) {
        self.state.counters.reject(reason);
    }

    /// `now` for the windows, if the clock has started.
    pub fn now_ms(&self) -> Option<i64> {
        match self.clock {
            ClockMode::EventTime => self.state.max_event_ms,
            ClockMode::Wall => Some(self.wall_ms),
        }
    }

    /// Where summaries are taken: the day and minute of `now` (the epoch before any event).
    pub fn summary_point(&mut self) -> SummaryPoint {
        let now_ms = self.now_ms().unwrap_or(0);
        SummaryPoint {
            today: self.calendar.day_of(now_ms),
            now_minute: now_ms.div_euclid(60_000),
        }
    }

    /// The instant up to which sessions may be closed.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.state.watermark_ms
    }

    /// Hands the watermark to the caller: a source of several partitions knows that its
    /// stream is only as far as its slowest partition, and says so with
    /// [`Ingestor::advance_watermark`]. Otherwise the watermark is the largest event time.
    pub fn use_source_watermark(&mut self) {
        self.source_watermark = true;
    }

    /// Moves the watermark forward (never back). Also used while the input is idle and
    /// caught up, so that sessions still close as time passes.
    pub fn advance_watermark(&mut self, watermark_ms: i64) {
        let current = &mut self.state.watermark_ms;
        *current = Some(current.map_or(watermark_ms, |w| w.max(watermark_ms)));
    }

    pub fn state(&self) -> &RouterState {
        &self.state
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }
}

/// The shard that owns a user: a multiply-shift of the key, uniform for any shard count.
pub fn shard_of(user_key: u64, shards: usize) -> usize {
    ((u128::from(user_key) * shards as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::UserHash;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z

    fn ingestor() -> Ingestor {
        Ingestor::new(&EngineSettings::default(), T0 + 100 * DAY)
    }

    fn line(ts: i64) -> String {
        format!(r#"{{"user_id":"u","event":"login","ts":{ts}}}"#)
    }

    #[test]
    fn missing_time_uses_the_fallback_or_is_rejected() {
        let mut ing = ingestor();
        let json = br#"{"user_id":"u","event":"login"}"#;
        assert_eq!(
            ing.ingest(json, None),
            Outcome::Rejected(Rejection::MissingTimestamp)
        );
        assert!(matches!(
            ing.ingest(json, Some(T0)),
            Outcome::Accepted { .. }
        ));
        assert_eq!(
            ing.state().counters.rejected[Rejection::MissingTimestamp as usize],
            1
        );
    }

    #[test]
    fn retention_and_future_skew() {
        let mut ing = ingestor();
        assert!(matches!(
            ing.ingest(line(T0).as_bytes(), None),
            Outcome::Accepted { .. }
        ));
        // Day -35 is kept, day -36 is late.
        assert!(matches!(
            ing.ingest(line(T0 - 35 * DAY).as_bytes(), None),
            Outcome::Accepted { .. }
        ));
        assert_eq!(
            ing.ingest(line(T0 - 35 * DAY - 1).as_bytes(), None),
            Outcome::Late
        );
        let far = T0 + 100 * DAY + 3_600_001;
        assert_eq!(ing.ingest(line(far).as_bytes(), None), Outcome::Future);
        assert_eq!(ing.state().counters.late, 1);
        assert_eq!(ing.state().counters.future, 1);
        assert_eq!(
            ing.now_ms(),
            Some(T0),
            "a future event must not move the clock"
        );
    }

    #[test]
    fn events_past_the_lateness_are_not_sessionized() {
        let mut ing = ingestor();
        ing.ingest(line(T0).as_bytes(), None);
        let within = ing.ingest(line(T0 - 300_000).as_bytes(), None);
        let beyond = ing.ingest(line(T0 - 300_001).as_bytes(), None);
        assert!(matches!(within, Outcome::Accepted { event, .. } if event.sessionize));
        assert!(matches!(beyond, Outcome::Accepted { event, .. } if !event.sessionize));
        assert_eq!(ing.state().counters.late_for_sessions, 1);
    }

    #[test]
    fn an_idle_floor_closes_sessions_and_bounds_lateness() {
        let mut ing = ingestor();
        ing.ingest(line(T0).as_bytes(), None);
        ing.advance_watermark(T0 + 3_600_000);
        assert_eq!(ing.watermark_ms(), Some(T0 + 3_600_000));
        assert_eq!(ing.now_ms(), Some(T0), "the floor is not an event time");
        let stale = ing.ingest(line(T0 + 60_000).as_bytes(), None);
        assert!(matches!(stale, Outcome::Accepted { event, .. } if !event.sessionize));
        ing.advance_watermark(T0);
        assert_eq!(
            ing.watermark_ms(),
            Some(T0 + 3_600_000),
            "the floor never goes back"
        );
    }

    #[test]
    fn a_source_watermark_holds_back_for_the_slowest_partition() {
        let mut ing = ingestor();
        ing.use_source_watermark();
        ing.ingest(line(T0).as_bytes(), None);
        assert_eq!(
            ing.watermark_ms(),
            None,
            "the source has not vouched for anything yet"
        );
        let behind = ing.ingest(line(T0 - 3_600_000).as_bytes(), None);
        assert!(matches!(behind, Outcome::Accepted { event, .. } if event.sessionize));
        ing.advance_watermark(T0 - 3_600_000);
        let late = ing.ingest(line(T0 - 3_600_000 - 300_001).as_bytes(), None);
        assert!(matches!(late, Outcome::Accepted { event, .. } if !event.sessionize));
        assert_eq!(ing.now_ms(), Some(T0), "now is still the latest event");
    }

    #[test]
    fn routing_is_uniform_and_stable() {
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            counts[shard_of(UserHash::of(&format!("user-{i}")).key, 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(shard_of(u64::MAX, 7), 6);
        assert_eq!(shard_of(0, 7), 0);
    }

    #[test]
    fn session_ids_give_separate_keys_per_user() {
        let mut ing = ingestor();
        let a = ing.ingest(
            br#"{"user_id":"u","event":"x","ts":1,"session_id":"s"}"#,
            None,
        );
        let b = ing.ingest(
            br#"{"user_id":"v","event":"x","ts":1,"session_id":"s"}"#,
            None,
        );
        let (Outcome::Accepted { event: a, .. }, Outcome::Accepted { event: b, .. }) = (a, b)
        else {
            panic!("both accepted");
        };
        assert_ne!(a.session_key, b.session_key);
        assert_ne!(a.session_key, a.user.key);
    }
}
