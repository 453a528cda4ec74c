//! The whole engine on one thread: a router and one worker owning every partition.
//!
//! Replay's tests and the fuzzers use it directly; the runtime in pulse-ingest runs the
//! same [`Ingestor`] and [`Worker`] types with several workers on their own threads, and
//! must give the very same snapshot (a test holds them to it). [`EngineState`] is the
//! engine as plain data: the stream-wide router state and one [`PartitionState`] per
//! partition, which is what a checkpoint stores.

use serde::{Deserialize, Serialize};

use crate::event::Rejection;
use crate::families::{KpiState, Summary};
use crate::family::Rules;
use crate::ingest::{Ingestor, Outcome, RouterState};
use crate::partition::{PartitionInputs, PartitionState};
use crate::settings::EngineSettings;
use crate::snapshot::{self, KpiSnapshot};
use crate::windows::SummaryPoint;
use crate::worker::Worker;

/// Everything an engine knows, as plain data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineState {
    pub router: RouterState,
    /// By partition number.
    pub partitions: Vec<PartitionState>,
}

/// Leading bytes of an encoded [`EngineState`]: a magic number and the format version.
/// Version 2 keeps state per partition; version 1 kept it per user-hash shard.
const STATE_MAGIC: &[u8; 4] = b"PLS\x02";

/// Every count of a real state (the partitions' counters, session statistics and duration
/// sums in ms), all added up, stays below this when it is loaded: 2^62 events is 146 years
/// at a billion a second. The snapshot adds these counts across partitions and days, so a
/// loaded state must leave room to count on before any sum could overflow u64: a restored
/// engine has 2^62 more before its total reaches 2^63 (the fuzzer's find: a state loaded
/// just under a bound of 2^63 counted one event past it and saved what it then refused).
pub const MAX_LOADED_COUNT: u64 = 1 << 62;

/// Partition numbers are dense (handed out in order of first sight), so a real state's stay
/// far below this; workers and the router keep vectors indexed by them, which a forged
/// number near 2^31 would make allocate gigabytes.
const MAX_PARTITION_NUMBER: u32 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not a pulse state image (bad magic or unsupported format version)")]
    BadMagic,
    #[error("corrupt pulse state image: {0}")]
    Corrupt(String),
}

impl EngineState {
    /// Assembles a state from the router and the partitions' KPI states (by number), as
    /// the workers export them.
    pub fn assemble(
        settings: &EngineSettings,
        router: RouterState,
        inputs: &[PartitionInputs],
        kpis: impl IntoIterator<Item = (usize, KpiState)>,
    ) -> EngineState {
        let mut kpis: Vec<Option<KpiState>> = {
            let mut by_number = Vec::new();
            for (partition, state) in kpis {
                if by_number.len() <= partition {
                    by_number.resize_with(partition + 1, || None);
                }
                by_number[partition] = Some(state);
            }
            by_number
        };
        let count = kpis.len().max(inputs.len());
        let partitions = (0..count)
            .filter_map(|number| {
                // The router's inputs are dense by number; a number with neither a record
                // counted nor any state is no partition of this state.
                let inputs = inputs
                    .get(number)
                    .filter(|i| **i != PartitionInputs::default());
                let inputs = inputs.cloned();
                let kpis = kpis.get_mut(number).and_then(Option::take);
                if inputs.is_none() && kpis.is_none() {
                    return None;
                }
                Some(PartitionState {
                    partition: number as u32,
                    inputs: inputs.unwrap_or_default(),
                    kpis: kpis.unwrap_or_else(|| KpiState::empty(settings)),
                })
            })
            .collect();
        EngineState { router, partitions }
    }

    /// Each partition's inputs, by number (a gap gets empty inputs).
    pub fn inputs(&self) -> Vec<PartitionInputs> {
        let count = self
            .partitions
            .iter()
            .map(|p| p.partition as usize + 1)
            .max()
            .unwrap_or(0);
        let mut inputs = vec![PartitionInputs::default(); count];
        for p in &self.partitions {
            inputs[p.partition as usize] = p.inputs.clone();
        }
        inputs
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = STATE_MAGIC.to_vec();
        postcard::to_io(self, &mut out).expect("writing to a Vec cannot fail");
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<EngineState, StateError> {
        let body = bytes
            .strip_prefix(STATE_MAGIC.as_slice())
            .ok_or(StateError::BadMagic)?;
        let state: EngineState =
            postcard::from_bytes(body).map_err(|e| StateError::Corrupt(e.to_string()))?;
        state.validate()?;
        Ok(state)
    }

    /// Every count in the state added up; `None` if that overflows u64.
    pub fn total_count(&self) -> Option<u64> {
        self.checked_total().ok().flatten()
    }

    /// Every count added up (`None` on overflow), once each family has refused what no
    /// stream could have produced: one pass over the state for both.
    fn checked_total(&self) -> Result<Option<u64>, String> {
        let mut counts = vec![self.router.features.overflow_events];
        for partition in &self.partitions {
            counts.extend(partition.inputs.counters.all());
            partition.kpis.check(&mut counts)?;
        }
        Ok(counts.into_iter().try_fold(0u64, u64::checked_add))
    }

    /// Refuses values no stream could have produced. An image holding them is damaged (or
    /// forged past its checksum), and the arithmetic of a restored engine, which trusts the
    /// decoder's ranges, would overflow on them (found by fuzzing: a rejection counter and a
    /// session-duration histogram near 2^64, an open event at an i64 extreme). Partition
    /// numbers must be distinct and below `MAX_PARTITION_NUMBER` (2^16).
    pub fn validate(&self) -> Result<(), StateError> {
        self.check_plausible().map_err(StateError::Corrupt)
    }

    fn check_plausible(&self) -> Result<(), String> {
        if self.checked_total()?.is_none_or(|n| n >= MAX_LOADED_COUNT) {
            return Err("counts beyond what any stream could have produced".to_owned());
        }
        let mut numbers: Vec<u32> = self.partitions.iter().map(|p| p.partition).collect();
        numbers.sort_unstable();
        if numbers.windows(2).any(|w| w[0] == w[1])
            || numbers.last().is_some_and(|n| *n >= MAX_PARTITION_NUMBER)
        {
            return Err("partition numbers repeat or exceed what one pulse holds".to_owned());
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Engine {
    settings: EngineSettings,
    ingestor: Ingestor,
    worker: Worker,
}

impl Engine {
    /// `settings` must be validated; `wall_ms` is the wall clock now. The engine is one
    /// worker, whatever `settings.shards` says.
    pub fn new(mut settings: EngineSettings, wall_ms: i64) -> Engine {
        settings.shards = 1;
        Engine {
            ingestor: Ingestor::new(&settings, wall_ms),
            worker: Worker::new(&settings, 0),
            settings,
        }
    }

    /// Resumes from saved state.
    pub fn restore(settings: EngineSettings, wall_ms: i64, state: EngineState) -> Engine {
        let mut engine = Engine::new(settings, wall_ms);
        let inputs = state.inputs();
        engine.ingestor = Ingestor::with_state(&engine.settings, wall_ms, state.router, inputs);
        for partition in state.partitions {
            engine
                .worker
                .restore(partition.partition as usize, partition.kpis);
        }
        engine
    }

    /// A copy of the whole state.
    pub fn state(&self) -> EngineState {
        EngineState::assemble(
            &self.settings,
            self.ingestor.state().clone(),
            self.ingestor.inputs(),
            self.worker.export(),
        )
    }

    /// Decodes and applies one record of its user's virtual partition; returns what became
    /// of it.
    pub fn ingest(&mut self, bytes: &[u8], fallback_ts_ms: Option<i64>) -> Outcome {
        let outcome = self.ingestor.ingest(bytes, fallback_ts_ms, None);
        if let Outcome::Accepted { event, .. } | Outcome::Late { event, .. } = &outcome {
            self.worker
                .apply(std::slice::from_ref(event), self.ingestor.watermark_ms());
        }
        outcome
    }

    /// Counts a record that could not even be read as a record (e.g. an over-long line).
    pub fn reject(&mut self, reason: Rejection) {
        self.ingestor.count_rejection(reason, None);
    }

    pub fn set_wall_clock(&mut self, wall_ms: i64) {
        self.ingestor.set_wall_clock(wall_ms);
    }

    /// Closes every open session: the end of a replay's input.
    pub fn close_all_sessions(&mut self) {
        self.worker.close_all();
    }

    pub fn snapshot(&mut self) -> KpiSnapshot {
        let at = self.summary_point();
        let summaries = [self.worker.summarize(at)];
        let mut calendar = self.ingestor.calendar().clone();
        let snapshot = snapshot::build(
            self.ingestor.state(),
            &self.ingestor.counters(),
            &summaries,
            &mut calendar,
            Rules::of(&self.settings).shape,
            self.ingestor.now_ms(),
        );
        self.ingestor.found_shared_users(&snapshot);
        snapshot
    }

    /// Every partition's summary now, by partition number (what a global view publishes).
    pub fn partition_summaries(&mut self) -> Vec<(usize, Summary)> {
        let at = self.summary_point();
        self.worker.summarize_each(at)
    }

    /// Closes the sessions the watermark made final; the point to summarise at.
    fn summary_point(&mut self) -> SummaryPoint {
        if let Some(watermark) = self.ingestor.watermark_ms() {
            self.worker.advance(watermark);
        }
        self.ingestor.summary_point()
    }

    pub fn ingestor(&self) -> &Ingestor {
        &self.ingestor
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }
}
/// An engine that has seen one login (2026-03-01T00:00Z): its session is still open.
#[cfg(test)]
pub(crate) fn one_login() -> Engine {
    let mut engine = Engine::new(EngineSettings::default(), 1_900_000_000_000);
    engine.ingest(
        br#"{"user_id":"u","event":"login","ts":1772323200000}"#,
        None,
    );
    engine
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample_image() -> Vec<u8> {
        let mut engine = Engine::new(
            EngineSettings {
                partitions: 3,
                ..EngineSettings::default()
            },
            1_900_000_000_000,
        );
        for i in 0..300i64 {
            let line = format!(
                r#"{{"user_id":"user-{}","event":"feature_used","feature":"f{}","ts":{}}}"#,
                i % 97,
                i % 5,
                1_772_323_200_000 + i * 60_000
            );
            engine.ingest(line.as_bytes(), None);
        }
        engine.state().to_bytes()
    }

    #[test]
    fn counters_no_stream_could_reach_are_corrupt() {
        // The fuzzer's find: a rejection count near 2^64 overflowed the snapshot's total.
        let mut state = EngineState::from_bytes(&sample_image()).expect("a real image");
        state.partitions[0].inputs.counters.rejected[0] = u64::MAX - 1;
        assert!(matches!(
            EngineState::from_bytes(&state.to_bytes()),
            Err(StateError::Corrupt(_))
        ));
        state.partitions[0].inputs.counters.rejected[0] = 1 << 40;
        assert!(EngineState::from_bytes(&state.to_bytes()).is_ok());
    }

    #[test]
    fn partition_numbers_no_pulse_hands_out_are_corrupt() {
        let mut state = EngineState::from_bytes(&sample_image()).expect("a real image");
        state.partitions[0].partition = i32::MAX as u32;
        assert!(matches!(
            EngineState::from_bytes(&state.to_bytes()),
            Err(StateError::Corrupt(_))
        ));
        state.partitions[0].partition = state.partitions[1].partition;
        assert!(matches!(
            EngineState::from_bytes(&state.to_bytes()),
            Err(StateError::Corrupt(_))
        ));
    }

    /// Numbers are dense by design but a state may leave some out: the gap costs a slot, not
    /// a partition (found by fuzzing: a number near the bound made every save write tens
    /// of thousands of empty partitions).
    #[test]
    fn a_high_partition_number_saves_as_one_partition() {
        let mut state = EngineState::from_bytes(&sample_image()).expect("a real image");
        state.partitions.truncate(1);
        state.partitions[0].partition = 60_000;
        let image = state.to_bytes();
        let mut engine = Engine::restore(EngineSettings::default(), 1_900_000_000_000, state);
        engine.ingest(
            br#"{"user_id":"u","event":"login","ts":1772323200000}"#,
            None,
        );
        let numbers: Vec<u32> = engine
            .state()
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect();
        assert_eq!(
            numbers.len(),
            2,
            "the restored one and the new one's: {:?}",
            &numbers[..2.min(numbers.len())]
        );
        assert!(numbers.contains(&60_000));
        assert!(engine.state().to_bytes().len() < image.len() * 2);
    }

    /// Each family's state is saved under its name: an image without a family (written
    /// before it existed) loads with that family empty, and one naming a family this pulse
    /// does not know is refused by name.
    #[test]
    fn family_images_are_saved_by_name() {
        #[derive(serde::Serialize)]
        struct Image<'a> {
            family: &'a str,
            #[serde(with = "serde_bytes_out")]
            image: &'a [u8],
        }
        mod serde_bytes_out {
            pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(b)
            }
        }
        let mut state = EngineState::from_bytes(&sample_image()).expect("a real image");
        state.partitions.truncate(1);
        let activity = postcard::to_allocvec(&state.partitions[0].kpis.activity).unwrap();
        let written_before = vec![Image {
            family: "activity",
            image: &activity,
        }];
        let mut older = state.clone();
        older.partitions[0].kpis =
            postcard::from_bytes(&postcard::to_allocvec(&written_before).unwrap())
                .expect("a state without the other families loads");
        let snapshot = |state: EngineState| {
            Engine::restore(EngineSettings::default(), 1_900_000_000_000, state).snapshot()
        };
        let (now, then) = (snapshot(state), snapshot(older));
        assert_eq!(
            then.kpis.activity, now.kpis.activity,
            "the family present is read"
        );
        assert!(
            now.kpis
                .features
                .features
                .values()
                .any(|f| f.active_users.d30 > 0)
        );
        assert!(
            then.kpis
                .features
                .features
                .values()
                .all(|f| f.active_users.d30 == 0),
            "the absent ones start empty"
        );
        let newer = vec![
            Image {
                family: "activity",
                image: &activity,
            },
            Image {
                family: "retention",
                image: &[],
            },
        ];
        let refused = postcard::from_bytes::<crate::families::KpiState>(
            &postcard::to_allocvec(&newer).unwrap(),
        );
        assert!(
            refused.is_err(),
            "a family this pulse does not know is refused"
        );
    }

    /// The fuzzer's find: a state loaded just under the bound counted past it. It is refused
    /// on the next load, but there is room to count on: its sums stay far from overflowing.
    #[test]
    fn a_state_loaded_at_the_bound_counts_on_without_overflowing() {
        let mut state = EngineState::from_bytes(&sample_image()).expect("a real image");
        let held = state.total_count().unwrap() - state.router.features.overflow_events;
        state.router.features.overflow_events = MAX_LOADED_COUNT - 1 - held;
        let loaded = EngineState::from_bytes(&state.to_bytes()).expect("just under the bound");
        let mut engine = Engine::restore(EngineSettings::default(), 1_900_000_000_000, loaded);
        engine.ingest(
            br#"{"user_id":"u","event":"login","ts":1772323200000}"#,
            None,
        );
        engine.snapshot();
        let saved = engine.state();
        assert!(matches!(
            EngineState::from_bytes(&saved.to_bytes()),
            Err(StateError::Corrupt(_))
        ));
        assert!(saved.total_count().unwrap() < 2 * MAX_LOADED_COUNT);
    }

    #[test]
    fn open_session_times_outside_the_accepted_range_are_corrupt() {
        // The fuzzer's find: an open event at an absurd time overflowed the session split.
        let mut state = one_login().state();
        assert!(EngineState::from_bytes(&state.to_bytes()).is_ok());
        // The open session's event is the last place its time appears in the sessions
        // family's own image.
        let sessions = &mut state.partitions[0].kpis.sessions;
        let image = postcard::to_allocvec(&*sessions).expect("to a Vec");
        let varint = |ms: i64| postcard::to_allocvec(&ms).expect("to a Vec");
        let (time, absurd) = (varint(1_772_323_200_000), varint(i64::MIN));
        let at = image
            .windows(time.len())
            .rposition(|w| w == time)
            .expect("the event time is in the image");
        let damaged = [&image[..at], &absurd, &image[at + time.len()..]].concat();
        *sessions = postcard::from_bytes(&damaged).expect("still a sessions state");
        let Err(StateError::Corrupt(why)) = EngineState::from_bytes(&state.to_bytes()) else {
            panic!("an absurd open event time must be refused");
        };
        assert!(why.contains("open session"), "{why}");
    }

    proptest! {
        /// A damaged state image is an error, never a panic or a runaway allocation.
        #[test]
        fn damaged_images_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            let mut image = sample_image();
            for (at, byte) in flips {
                let at = at % image.len();
                image[at] ^= byte | 1;
            }
            let _ = EngineState::from_bytes(&image[..cut % image.len()]);
            // Whatever decodes must also restore and run.
            if let Ok(state) = EngineState::from_bytes(&image) {
                let mut engine = Engine::restore(EngineSettings::default(), 1_900_000_000_000, state);
                engine.ingest(br#"{"user_id":"u","event":"login","ts":1772323200000}"#, None);
                let _ = engine.snapshot();
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            bytes.splice(0..0, STATE_MAGIC.iter().copied());
            let _ = EngineState::from_bytes(&bytes);
        }
    }
}
