//! The router: decoded records in, partition events out.
//!
//! Everything that must be decided once for the whole stream lives here, so the answer does
//! not depend on the number of workers or partitions: the clock (`now` and the session
//! watermark), the late / future classification, the feature registry and the registry of
//! dimension values ([`RouterState`]).
//! What is counted per input partition — its counters and its newest event time,
//! [`PartitionInputs`] — is kept here too, by partition, because this is where records are
//! classified; a checkpoint puts it beside the partition's KPI state. The router also picks
//! the partition of a record (the source's, or the virtual one of its user) and the worker
//! that owns it. Decoding and hashing the user, which need none of this, are the separate
//! [`prepare`](crate::prepare) step, so that callers may run them on other threads; workers
//! never see a user id.

use serde::{Deserialize, Serialize};

use crate::decode::Decoder;
use crate::dimensions::{DimIds, DimensionRegistry, ValueBuffer};
use crate::event::PartitionEvent;
use crate::event::{EventKind, Rejection};
use crate::families::KpiState;
use crate::families::retention::HORIZON_DAYS;
use crate::features::FeatureRegistry;
use crate::partition::{Counters, PartitionInputs, PartitionState, total_counters};
use crate::prepare::Prepared;
use crate::settings::{ClockMode, EngineSettings};
use crate::snapshot::KpiSnapshot;
use crate::time::{Calendar, Day};
use crate::upstream::UpstreamPosition;
use crate::windows::SummaryPoint;
use crate::worker::owner_of;

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted {
        /// The worker that owns the event's partition.
        worker: usize,
        event: PartitionEvent,
    },
    Rejected(Rejection),
    /// Older than the retention: counted as `late` and not applied to the windows; handed
    /// to its worker only for the families that keep a longer history (retention's 64
    /// days, see [`PartitionEvent::in_retention`]).
    Late {
        worker: usize,
        event: PartitionEvent,
    },
    /// Further in the future than the allowed skew: counted, not applied.
    Future,
}

/// The stream-wide, serialisable part of the router.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterState {
    pub features: FeatureRegistry,
    /// The largest accepted event time: the event-time clock.
    pub max_event_ms: Option<i64>,
    /// The session watermark: no event older than this minus the allowed lateness is
    /// expected any more. It only moves forward.
    pub watermark_ms: Option<i64>,
    /// The values of every breakdown dimension (see [`crate::dimensions`]). Last, so that
    /// an image written before dimensions existed still reads ([`read_router_image`]).
    pub dimensions: DimensionRegistry,
}

/// Decodes, classifies and routes events. One per input stream.
#[derive(Debug, Clone)]
pub struct Ingestor {
    decoder: Decoder,
    calendar: Calendar,
    state: RouterState,
    /// By partition number; grown as partitions appear.
    inputs: Vec<PartitionInputs>,
    /// The worker of each partition in `inputs`, worked out once (a division per record
    /// would cost more than the rest of routing's arithmetic).
    owners: Vec<usize>,
    clock: ClockMode,
    /// The wall clock as last told by the caller: the reference for `future`, and `now` in
    /// [`ClockMode::Wall`].
    wall_ms: i64,
    workers: usize,
    /// Virtual partitions, for records whose source names none.
    partitions: u32,
    retention_days: Day,
    lateness_ms: i64,
    max_future_skew_ms: i64,
    /// Whether the caller drives the watermark (a Kafka source: the minimum over its
    /// partitions) instead of the largest event time seen.
    source_watermark: bool,
    /// The dimension values of the record [`Ingestor::ingest`] decodes, reused.
    values: ValueBuffer,
    /// Whether the last snapshot found users on several partitions: summaries then merge
    /// users rather than add counts ([`SummaryPoint::merge_users`]). Learnt again by the
    /// first snapshot after a restart, so not saved.
    merge_users: bool,
}

impl Ingestor {
    /// `settings` must be validated; `wall_ms` is the wall clock now.
    pub fn new(settings: &EngineSettings, wall_ms: i64) -> Ingestor {
        let state = RouterState {
            features: FeatureRegistry::new(settings.max_features),
            max_event_ms: None,
            watermark_ms: None,
            dimensions: DimensionRegistry::new(&settings.dimensions),
        };
        Ingestor::with_state(settings, wall_ms, state, Vec::new())
    }

    /// Resumes from saved state: the stream-wide part and each partition's inputs, by
    /// partition number.
    pub fn with_state(
        settings: &EngineSettings,
        wall_ms: i64,
        mut state: RouterState,
        inputs: Vec<PartitionInputs>,
    ) -> Ingestor {
        state.features.restore_index();
        state.dimensions.fit(&settings.dimensions);
        Ingestor {
            decoder: Decoder::new(settings),
            calendar: Calendar::new(settings.timezone.clone()),
            state,
            owners: owners(inputs.len(), settings.shards),
            inputs,
            clock: settings.clock,
            wall_ms,
            workers: settings.shards,
            partitions: settings.partitions as u32,
            retention_days: settings.retention_days as Day,
            lateness_ms: settings.allowed_lateness_ms,
            max_future_skew_ms: settings.max_future_skew_ms,
            source_watermark: false,
            values: ValueBuffer::default(),
            merge_users: false,
        }
    }

    pub fn set_wall_clock(&mut self, wall_ms: i64) {
        self.wall_ms = wall_ms;
    }

    /// Decodes and routes one record of `partition` (`None`: its user's virtual partition).
    /// `fallback_ts_ms` is used when the record has no time (a Kafka message timestamp);
    /// without one, such a record is rejected.
    pub fn ingest(
        &mut self,
        bytes: &[u8],
        fallback_ts_ms: Option<i64>,
        partition: Option<usize>,
    ) -> Outcome {
        // Taken out for the call: the prepared record borrows it while routing changes self.
        let mut values = std::mem::take(&mut self.values);
        values.clear();
        let prepared = self.decoder.prepare(bytes, &mut values);
        let outcome = self.route(prepared, fallback_ts_ms, partition);
        self.values = values;
        outcome
    }

    /// Routes a record prepared by [`Decoder::prepare`] (on this thread or another, with a
    /// decoder built from the same settings) from `partition`, or, for `None`, from the
    /// virtual partition of its user. Records must come in input order.
    pub fn route(
        &mut self,
        prepared: Result<Prepared<'_>, Rejection>,
        fallback_ts_ms: Option<i64>,
        partition: Option<usize>,
    ) -> Outcome {
        let event = match prepared {
            Ok(event) => event,
            Err(reason) => return self.reject(reason, partition),
        };
        let partition =
            partition.unwrap_or_else(|| (event.partition_hash % self.partitions) as usize);
        let Some(ts_ms) = event.ts_ms.or(fallback_ts_ms) else {
            return self.reject(Rejection::MissingTimestamp, Some(partition));
        };
        if ts_ms > self.wall_ms.saturating_add(self.max_future_skew_ms) {
            self.inputs_of(partition).counters.future += 1;
            return Outcome::Future;
        }
        let now_ms = match self.clock {
            ClockMode::EventTime => self.state.max_event_ms.map_or(ts_ms, |m| m.max(ts_ms)),
            ClockMode::Wall => self.wall_ms,
        };
        let day = self.calendar.day_of(ts_ms);
        let today = self.calendar.day_of(now_ms);
        let in_horizon = day > today - HORIZON_DAYS;
        // What a partition learns of an event older than the retention: no feature, session
        // or clock, so nothing but retention's day bits may change. An accepted event adds
        // the rest below.
        let late = PartitionEvent {
            partition: partition as u32,
            user: event.user,
            session_key: event.session_key,
            ts_ms,
            day,
            kind: event.kind,
            feature: None,
            sessionize: false,
            in_retention: false,
            in_horizon,
            outcome: None,
            dims: Default::default(),
            tags: Default::default(),
        };
        if day < today - self.retention_days {
            self.inputs_of(partition).counters.late += 1;
            return Outcome::Late {
                worker: self.owners[partition],
                event: late,
            };
        }
        let sessionize = self
            .state
            .watermark_ms
            .is_none_or(|w| ts_ms >= w.saturating_sub(self.lateness_ms));
        self.state.max_event_ms = Some(self.state.max_event_ms.map_or(ts_ms, |m| m.max(ts_ms)));
        if !self.source_watermark {
            self.advance_watermark(ts_ms);
        }

        let inputs = self.inputs_of(partition);
        inputs.max_event_ms = Some(inputs.max_event_ms.map_or(ts_ms, |m| m.max(ts_ms)));
        let counters = &mut inputs.counters;
        counters.accepted += 1;
        counters.by_kind[event.kind as usize] += 1;
        counters.late_for_sessions += u64::from(!sessionize);
        counters.feature_missing +=
            u64::from(event.feature.is_none() && event.kind == EventKind::FeatureUsed);
        let feature = event
            .feature
            .as_ref()
            .map(|name| self.state.features.intern(name));
        let dims = if event.dimensions.is_empty() {
            DimIds::default()
        } else {
            self.state.dimensions.intern(event.dimensions)
        };
        let event = PartitionEvent {
            feature,
            sessionize,
            in_retention: true,
            outcome: event.outcome,
            dims,
            tags: event.tags,
            ..late
        };
        Outcome::Accepted {
            worker: self.owners[partition],
            event,
        }
    }

    fn reject(&mut self, reason: Rejection, partition: Option<usize>) -> Outcome {
        self.count_rejection(reason, partition);
        Outcome::Rejected(reason)
    }

    /// Counts a rejection found outside the decoder (an unreadable line, say) against
    /// `partition`; a record without a partition or a readable user counts in partition 0.
    pub fn count_rejection(&mut self, reason: Rejection, partition: Option<usize>) {
        self.inputs_of(partition.unwrap_or(0))
            .counters
            .reject(reason);
    }

    /// Whether a record of `partition` copied from `upstream` (topic, partition and
    /// position) is the first copy of it applied there; it is noted as applied if so. A
    /// repeat is to be dropped before [`Ingestor::route`], uncounted.
    pub fn first_copy(
        &mut self,
        partition: usize,
        upstream: (&str, i32, UpstreamPosition),
    ) -> bool {
        let (topic, from, at) = upstream;
        self.inputs_of(partition)
            .upstream
            .first_copy(topic, from, at)
    }

    fn inputs_of(&mut self, partition: usize) -> &mut PartitionInputs {
        if self.inputs.len() <= partition {
            self.inputs
                .resize_with(partition + 1, PartitionInputs::default);
            self.owners = owners(self.inputs.len(), self.workers);
        }
        &mut self.inputs[partition]
    }

    /// Takes over a partition another router (`from`: another instance, or this one
    /// earlier) saved: its ids moved into this router's registries ([`crate::remap`]), its
    /// inputs in place of whatever was counted of `partition` here, and the event-time clock
    /// at least its newest event. Returns its KPI state for the owning worker.
    pub fn take_over(
        &mut self,
        partition: usize,
        from: &RouterState,
        state: PartitionState,
        settings: &EngineSettings,
    ) -> KpiState {
        let rules = crate::family::Rules::of(settings);
        let mut from = from.clone();
        from.dimensions.fit(&settings.dimensions);
        let PartitionState {
            inputs, mut kpis, ..
        } = state;
        kpis.restore(&rules);
        crate::remap::remap(&mut kpis, &from, &mut self.state, &rules);
        // The stream is only as far as its slowest partition, and the one taken over is as
        // far as its checkpoint: the session watermark goes back to the one that checkpoint
        // was saved with (none if it had none), as a restart from it would, so that the
        // partition's records after it are not too late for sessions. Sessions other
        // partitions closed stay closed.
        self.state.watermark_ms = match (self.state.watermark_ms, from.watermark_ms) {
            (Some(here), Some(there)) => Some(here.min(there)),
            _ => None,
        };
        if let Some(newest) = inputs.max_event_ms {
            self.state.max_event_ms =
                Some(self.state.max_event_ms.map_or(newest, |m| m.max(newest)));
        }
        *self.inputs_of(partition) = inputs;
        kpis
    }

    /// Gives up what was counted of `partition` (another instance owns it now).
    pub fn release(&mut self, partition: usize) -> PartitionInputs {
        self.inputs
            .get_mut(partition)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The stream has events up to `newest_ms` in partitions this router does not read
    /// (another instance's, told by the summaries topic): on the event-time clock "now" is
    /// the newest event of the whole stream, as it is for one instance reading everything.
    pub fn observe_newest_event(&mut self, newest_ms: i64) {
        self.state.max_event_ms = Some(
            self.state
                .max_event_ms
                .map_or(newest_ms, |m| m.max(newest_ms)),
        );
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
            merge_users: self.merge_users,
        }
    }

    /// What a snapshot found: users held by several partitions (input not keyed by user)
    /// or none. The snapshots to come merge users only while there are any.
    pub fn found_shared_users(&mut self, snapshot: &KpiSnapshot) {
        self.merge_users = snapshot
            .kpis
            .retention
            .retention
            .users_on_several_partitions
            > 0;
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

    /// What the router knows of each partition, by partition number.
    pub fn inputs(&self) -> &[PartitionInputs] {
        &self.inputs
    }

    /// The stream's counters: every partition's, added up.
    pub fn counters(&self) -> Counters {
        total_counters(&self.inputs)
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}

/// Reads a saved [`RouterState`] image (a checkpoint keeps it as a byte string of its
/// own), including one written before the dimension registry was added to its end: postcard
/// images carry no field names, so such an image is exactly the three older fields, and that
/// state had no dimensions. Anything else that does not read is the error of this version.
pub fn read_router_image(bytes: &[u8]) -> Result<RouterState, postcard::Error> {
    #[derive(Deserialize)]
    struct BeforeDimensions {
        features: FeatureRegistry,
        max_event_ms: Option<i64>,
        watermark_ms: Option<i64>,
    }
    postcard::from_bytes(bytes).or_else(|error| {
        match postcard::take_from_bytes::<BeforeDimensions>(bytes) {
            Ok((old, [])) => Ok(RouterState {
                features: old.features,
                max_event_ms: old.max_event_ms,
                watermark_ms: old.watermark_ms,
                dimensions: DimensionRegistry::default(),
            }),
            _ => Err(error),
        }
    })
}

/// The worker of each of `partitions` partitions.
fn owners(partitions: usize, workers: usize) -> Vec<usize> {
    (0..partitions).map(|p| owner_of(p, workers)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioner::Partitioner;

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
            ing.ingest(json, None, None),
            Outcome::Rejected(Rejection::MissingTimestamp)
        );
        assert!(matches!(
            ing.ingest(json, Some(T0), None),
            Outcome::Accepted { .. }
        ));
        assert_eq!(
            ing.counters().rejected[Rejection::MissingTimestamp as usize],
            1
        );
    }

    #[test]
    fn retention_and_future_skew() {
        let mut ing = ingestor();
        assert!(matches!(
            ing.ingest(line(T0).as_bytes(), None, None),
            Outcome::Accepted { .. }
        ));
        // Day -35 is kept, day -36 is late.
        assert!(matches!(
            ing.ingest(line(T0 - 35 * DAY).as_bytes(), None, None),
            Outcome::Accepted { .. }
        ));
        assert!(matches!(
            ing.ingest(line(T0 - 35 * DAY - 1).as_bytes(), None, None),
            Outcome::Late { event, .. } if !event.in_retention && event.in_horizon
        ));
        let far = T0 + 100 * DAY + 3_600_001;
        assert_eq!(
            ing.ingest(line(far).as_bytes(), None, None),
            Outcome::Future
        );
        assert_eq!(ing.counters().late, 1);
        assert_eq!(ing.counters().future, 1);
        assert_eq!(
            ing.now_ms(),
            Some(T0),
            "a future event must not move the clock"
        );
    }

    #[test]
    fn late_events_within_the_horizon_go_to_retention_only_and_older_ones_to_be_counted() {
        let mut ing = ingestor();
        ing.ingest(line(T0).as_bytes(), None, None);
        let late = |ing: &mut Ingestor, days: i64| match ing.ingest(
            line(T0 - days * DAY).as_bytes(),
            None,
            None,
        ) {
            Outcome::Late { event, .. } => (event.in_retention, event.in_horizon, event.feature),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            late(&mut ing, 63),
            (false, true, None),
            "day -63 is in the horizon"
        );
        assert_eq!(late(&mut ing, 64), (false, false, None));
        assert_eq!(ing.counters().late, 2, "both are late for the windows");
        assert_eq!(ing.counters().accepted, 1);
        assert_eq!(ing.now_ms(), Some(T0), "late events do not move the clock");
    }

    #[test]
    fn events_past_the_lateness_are_not_sessionized() {
        let mut ing = ingestor();
        ing.ingest(line(T0).as_bytes(), None, None);
        let within = ing.ingest(line(T0 - 300_000).as_bytes(), None, None);
        let beyond = ing.ingest(line(T0 - 300_001).as_bytes(), None, None);
        assert!(matches!(within, Outcome::Accepted { event, .. } if event.sessionize));
        assert!(matches!(beyond, Outcome::Accepted { event, .. } if !event.sessionize));
        assert_eq!(ing.counters().late_for_sessions, 1);
    }

    #[test]
    fn an_idle_floor_closes_sessions_and_bounds_lateness() {
        let mut ing = ingestor();
        ing.ingest(line(T0).as_bytes(), None, None);
        ing.advance_watermark(T0 + 3_600_000);
        assert_eq!(ing.watermark_ms(), Some(T0 + 3_600_000));
        assert_eq!(ing.now_ms(), Some(T0), "the floor is not an event time");
        let stale = ing.ingest(line(T0 + 60_000).as_bytes(), None, None);
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
        ing.ingest(line(T0).as_bytes(), None, None);
        assert_eq!(
            ing.watermark_ms(),
            None,
            "the source has not vouched for anything yet"
        );
        let behind = ing.ingest(line(T0 - 3_600_000).as_bytes(), None, None);
        assert!(matches!(behind, Outcome::Accepted { event, .. } if event.sessionize));
        ing.advance_watermark(T0 - 3_600_000);
        let late = ing.ingest(line(T0 - 3_600_000 - 300_001).as_bytes(), None, None);
        assert!(matches!(late, Outcome::Accepted { event, .. } if !event.sessionize));
        assert_eq!(ing.now_ms(), Some(T0), "now is still the latest event");
    }

    #[test]
    fn records_go_to_their_users_virtual_partition_or_the_sources_and_count_there() {
        let settings = EngineSettings {
            shards: 2,
            partitions: 6,
            ..EngineSettings::default()
        };
        let mut ing = Ingestor::new(&settings, T0 + 100 * DAY);
        for i in 0..600 {
            let user = format!("user-{i}");
            let line = format!(r#"{{"user_id":"{user}","event":"login","ts":{T0}}}"#);
            let want = Partitioner::Murmur2.partition_of(user.as_bytes(), 6);
            let Outcome::Accepted { worker, event } = ing.ingest(line.as_bytes(), None, None)
            else {
                panic!("accepted");
            };
            assert_eq!(event.partition, want);
            assert_eq!(
                worker,
                want as usize % 2,
                "worker w owns partitions p = w mod 2"
            );
        }
        let from_source = ing.ingest(line(T0).as_bytes(), None, Some(9));
        assert!(
            matches!(from_source, Outcome::Accepted { worker: 1, event } if event.partition == 9)
        );
        ing.ingest(b"not json", None, Some(4));
        ing.ingest(b"not json", None, None);
        let inputs = ing.inputs();
        assert_eq!(inputs.len(), 10);
        assert_eq!(inputs[9].counters.accepted, 1);
        assert_eq!(inputs[9].max_event_ms, Some(T0));
        assert_eq!(inputs[4].counters.rejected_total(), 1);
        assert_eq!(
            inputs[0].counters.rejected_total(),
            1,
            "no user: partition 0"
        );
        let total = ing.counters();
        assert_eq!((total.accepted, total.rejected_total()), (601, 2));
        assert_eq!(
            inputs.iter().map(|i| i.counters.accepted).sum::<u64>(),
            total.accepted
        );
    }

    /// A partition taken over from another router: its counters replace what was counted
    /// of it here, its feature ids follow this router's registry, and the session watermark
    /// goes back to its checkpoint's.
    #[test]
    fn a_partition_taken_over_brings_its_inputs_ids_and_watermark() {
        let settings = EngineSettings::default();
        let feature = |name: &str, ts: i64| {
            format!(r#"{{"user_id":"u","event":"feature_used","feature":"{name}","ts":{ts}}}"#)
        };
        let mut saver = ingestor();
        saver.ingest(feature("export", T0).as_bytes(), None, Some(0));
        let mut taker = ingestor();
        taker.ingest(feature("search", T0 + DAY).as_bytes(), None, Some(1));
        taker.ingest(b"not json", None, Some(0));
        let state = PartitionState {
            partition: 0,
            inputs: saver.inputs()[0].clone(),
            kpis: KpiState::empty(&settings),
        };
        taker.take_over(0, saver.state(), state, &settings);
        assert_eq!(
            taker.inputs()[0],
            saver.inputs()[0],
            "the saver's counters, only"
        );
        assert_eq!(taker.state().watermark_ms, Some(T0));
        assert_eq!(taker.state().features.name(1), "export");
        assert_eq!(taker.release(0), saver.inputs()[0]);
        assert_eq!(taker.inputs()[0], PartitionInputs::default());
    }

    #[test]
    fn a_router_image_from_before_dimensions_reads_with_none() {
        #[derive(Serialize)]
        struct Before {
            features: FeatureRegistry,
            max_event_ms: Option<i64>,
            watermark_ms: Option<i64>,
        }
        let before = Before {
            features: FeatureRegistry::new(3),
            max_event_ms: Some(T0),
            watermark_ms: Some(T0 - 1),
        };
        let bytes = postcard::to_stdvec(&before).unwrap();
        let state = read_router_image(&bytes).unwrap();
        assert_eq!(
            (state.max_event_ms, state.watermark_ms),
            (Some(T0), Some(T0 - 1))
        );
        assert!(state.dimensions.dimensions.is_empty());
        assert!(read_router_image(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.extend([1, 2, 3]);
        assert!(read_router_image(&longer).is_err(), "neither layout");
        let now = postcard::to_stdvec(ingestor().state()).unwrap();
        assert!(read_router_image(&now).is_ok());
    }

    #[test]
    fn session_ids_give_separate_keys_per_user() {
        let mut ing = ingestor();
        let a = ing.ingest(
            br#"{"user_id":"u","event":"x","ts":1,"session_id":"s"}"#,
            None,
            None,
        );
        let b = ing.ingest(
            br#"{"user_id":"v","event":"x","ts":1,"session_id":"s"}"#,
            None,
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
