//! The whole engine on one thread: a router and its shards, driven by the caller.
//!
//! Replay and the tests use it directly; the multi-threaded runners in the binary use the
//! same [`Ingestor`] and [`Shard`] types with the shards on their own threads, and must give
//! the very same snapshot (a test holds them to it).

use serde::{Deserialize, Serialize};

use crate::event::Rejection;
use crate::ingest::{Ingestor, Outcome, RouterState};
use crate::settings::EngineSettings;
use crate::shard::{Shard, ShardState, sketch_shape};
use crate::snapshot::{self, KpiSnapshot};
use crate::summary::ShardSummary;

/// Everything an engine knows, as plain data: what a checkpoint stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineState {
    pub router: RouterState,
    pub shards: Vec<ShardState>,
}

/// Leading bytes of an encoded [`EngineState`]: a magic number and the format version.
const STATE_MAGIC: &[u8; 4] = b"PLS\x01";

/// Every count of a real state (the router's counters, the shards' session statistics and
/// duration sums in ms), all added up, stays below this: 2^63 events is three centuries at
/// a billion a second. The snapshot adds these counts across shards and days.
const MAX_TOTAL_COUNT: u64 = 1 << 63;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not a pulse state image (bad magic or unsupported format version)")]
    BadMagic,
    #[error("corrupt pulse state image: {0}")]
    Corrupt(String),
    #[error("the state has {found} shards but the configuration asks for {expected}")]
    ShardCount { found: usize, expected: usize },
}

impl EngineState {
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
        state.check_plausible().map_err(StateError::Corrupt)?;
        Ok(state)
    }

    /// Values no stream could have produced. An image holding them is damaged (or forged
    /// past its checksum), and the arithmetic of a restored engine, which trusts the
    /// decoder's ranges, would overflow on them (found by fuzzing: a rejection counter and
    /// a session-duration histogram near 2^64, an open event at an i64 extreme).
    fn check_plausible(&self) -> Result<(), String> {
        if self.total_count().is_none_or(|n| n >= MAX_TOTAL_COUNT) {
            return Err("counts beyond what any stream could have produced".to_owned());
        }
        let accepted_time = |ms: i64| jiff::Timestamp::from_millisecond(ms).is_ok();
        if !self
            .shards
            .iter()
            .flat_map(ShardState::open_event_times)
            .all(accepted_time)
        {
            return Err("an open session holds an event time pulse never accepts".to_owned());
        }
        Ok(())
    }

    /// The sum of every count in the state, `None` if it overflows.
    fn total_count(&self) -> Option<u64> {
        let c = &self.router.counters;
        [
            c.accepted,
            c.late,
            c.future,
            c.late_for_sessions,
            c.feature_missing,
            self.router.features.overflow_events,
        ]
        .into_iter()
        .chain(c.rejected)
        .chain(c.by_kind)
        .chain(self.shards.iter().flat_map(ShardState::session_counts))
        .try_fold(0u64, u64::checked_add)
    }
}

#[derive(Debug, Clone)]
pub struct Engine {
    settings: EngineSettings,
    ingestor: Ingestor,
    shards: Vec<Shard>,
}

impl Engine {
    /// `settings` must be validated; `wall_ms` is the wall clock now.
    pub fn new(settings: EngineSettings, wall_ms: i64) -> Engine {
        let ingestor = Ingestor::new(&settings, wall_ms);
        let shards = (0..settings.shards)
            .map(|_| Shard::new(&settings))
            .collect();
        Engine {
            settings,
            ingestor,
            shards,
        }
    }

    /// Resumes from saved state; the shard count must match the settings.
    pub fn restore(
        settings: EngineSettings,
        wall_ms: i64,
        state: EngineState,
    ) -> Result<Engine, StateError> {
        if state.shards.len() != settings.shards {
            return Err(StateError::ShardCount {
                found: state.shards.len(),
                expected: settings.shards,
            });
        }
        let ingestor = Ingestor::with_state(&settings, wall_ms, state.router);
        let shards = state
            .shards
            .into_iter()
            .map(|s| Shard::with_state(&settings, s))
            .collect();
        Ok(Engine {
            settings,
            ingestor,
            shards,
        })
    }

    /// A copy of the whole state.
    pub fn state(&self) -> EngineState {
        EngineState {
            router: self.ingestor.state().clone(),
            shards: self.shards.iter().map(|s| s.state().clone()).collect(),
        }
    }

    /// Decodes and applies one record; returns what became of it.
    pub fn ingest(&mut self, bytes: &[u8], fallback_ts_ms: Option<i64>) -> Outcome {
        let outcome = self.ingestor.ingest(bytes, fallback_ts_ms);
        if let Outcome::Accepted { shard, event } = &outcome {
            let shard = &mut self.shards[*shard];
            shard.apply(event);
            if let Some(watermark) = self.ingestor.watermark_ms() {
                shard.advance(watermark);
            }
        }
        outcome
    }

    /// Counts a record that could not even be read as a record (e.g. an over-long line).
    pub fn reject(&mut self, reason: Rejection) {
        self.ingestor.count_rejection(reason);
    }

    pub fn set_wall_clock(&mut self, wall_ms: i64) {
        self.ingestor.set_wall_clock(wall_ms);
    }

    /// Closes every open session: the end of a replay's input.
    pub fn close_all_sessions(&mut self) {
        self.shards.iter_mut().for_each(Shard::close_all);
    }

    pub fn snapshot(&mut self) -> KpiSnapshot {
        if let Some(watermark) = self.ingestor.watermark_ms() {
            self.shards.iter_mut().for_each(|s| s.advance(watermark));
        }
        let at = self.ingestor.summary_point();
        let shape = sketch_shape(&self.settings);
        let summaries: Vec<ShardSummary> =
            self.shards.iter_mut().map(|s| s.summarize(at)).collect();
        let mut calendar = self.ingestor.calendar().clone();
        snapshot::build(
            self.ingestor.state(),
            &summaries,
            &mut calendar,
            shape,
            self.ingestor.now_ms(),
        )
    }

    pub fn ingestor(&self) -> &Ingestor {
        &self.ingestor
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample_image() -> Vec<u8> {
        let mut engine = Engine::new(
            EngineSettings {
                shards: 2,
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
        state.router.counters.rejected[0] = u64::MAX - 1;
        assert!(matches!(
            EngineState::from_bytes(&state.to_bytes()),
            Err(StateError::Corrupt(_))
        ));
        state.router.counters.rejected[0] = 1 << 40;
        assert!(EngineState::from_bytes(&state.to_bytes()).is_ok());
    }

    #[test]
    fn open_session_times_outside_the_accepted_range_are_corrupt() {
        // The fuzzer's find: an open event at an absurd time overflowed the session split.
        let mut engine = Engine::new(EngineSettings::default(), 1_900_000_000_000);
        engine.ingest(
            br#"{"user_id":"u","event":"login","ts":1772323200000}"#,
            None,
        );
        let image = engine.state().to_bytes();
        assert!(EngineState::from_bytes(&image).is_ok());
        // The open session's event is the last place its time appears in the image.
        let varint = |ms: i64| postcard::to_allocvec(&ms).expect("to a Vec");
        let (time, absurd) = (varint(1_772_323_200_000), varint(i64::MIN));
        let at = image
            .windows(time.len())
            .rposition(|w| w == time)
            .expect("the event time is in the image");
        let damaged = [&image[..at], &absurd, &image[at + time.len()..]].concat();
        assert!(matches!(
            EngineState::from_bytes(&damaged),
            Err(StateError::Corrupt(_))
        ));
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
                let settings = EngineSettings { shards: state.shards.len(), ..EngineSettings::default() };
                if settings.validate().is_ok()
                    && let Ok(mut engine) = Engine::restore(settings, 1_900_000_000_000, state)
                {
                    engine.ingest(br#"{"user_id":"u","event":"login","ts":1772323200000}"#, None);
                    let _ = engine.snapshot();
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            bytes.splice(0..0, STATE_MAGIC.iter().copied());
            let _ = EngineState::from_bytes(&bytes);
        }
    }
}
