//! The bodies of the fuzz targets: untrusted bytes into pulse's decoders, asserting only
//! that nothing panics, aborts or allocates without bound, plus the invariants written here.
//!
//! They live in one plain module, not inside the `fuzz_target!` macros, so that the stable
//! test suite runs every checked-in corpus file through the very same functions
//! (`tests/it/fuzz_corpus.rs` includes this file by path): a fuzz finding stays fixed
//! without a nightly toolchain or libFuzzer.
//!
//! - [`decode_message`]: a Kafka message → records (one event, an array, a Segment batch)
//!   → the JSON-pointer decoder, under the default pointers and under nested, escaped ones,
//!   and on into an engine that takes the events and then snapshots and saves its state.
//! - [`engine_state`]: an engine state image (`EngineState::from_bytes`); whatever decodes
//!   must restore, take an event, snapshot and encode again.
//! - [`checkpoint_file`]: a checkpoint file as `StateStore::load` reads it. Random bytes
//!   would never pass the XXH3 checksum, so the input is also read once more with its
//!   length and checksum fields recomputed: the fuzzer then reaches the postcard envelope
//!   and the engine image inside it.
//!
//! The decoder's pointer configuration comes from the operator's validated `pulse.toml`,
//! not from the stream, so it is fixed here rather than fuzzed.

use std::sync::LazyLock;

use pulse_core::engine::MAX_LOADED_COUNT;
use pulse_core::message::split_records;
use pulse_core::settings::{ClockMode, FieldPaths};
use pulse_core::{Engine, EngineSettings, EngineState, StateError};
use pulse_ingest::state_store::read_checkpoint;
use xxhash_rust::xxh3::Xxh3Default;

/// 2026-03-01T00:00:00Z: a wall clock near the seed events, so that late and future
/// events are both reachable.
const WALL_MS: i64 = 1_772_323_200_000;

/// An event every restored engine must take.
const PROBE_EVENT: &[u8] = br#"{"user_id":"probe","event":"login","ts":1772323200000}"#;

/// Two engine configurations: the defaults on event time, and a second one on the wall
/// clock in an odd time zone whose pointers nest, share prefixes and use `~0`/`~1` escapes.
/// Small sketches keep a run at thousands of executions per second.
static SETTINGS: LazyLock<[EngineSettings; 2]> = LazyLock::new(|| {
    let small = EngineSettings {
        shards: 2,
        hll_lg_k: 4,
        max_record_bytes: 64 << 10,
        ..EngineSettings::default()
    };
    let nested = EngineSettings {
        clock: ClockMode::Wall,
        timezone: pulse_core::settings::time_zone("Asia/Kathmandu").expect("a known zone"),
        fields: FieldPaths {
            user: vec!["/context/traits/user~1id".into(), "/userId".into()],
            event: vec!["/properties/event".into(), "/type".into()],
            time: vec!["/context/time~0ms".into(), "/properties/ts".into()],
            feature: vec!["/properties/feature/name".into()],
            session_id: vec!["/context/session".into(), "/properties/$session_id".into()],
        },
        ..small.clone()
    };
    for settings in [&small, &nested] {
        settings.validate().expect("fuzz settings are valid");
    }
    [small, nested]
});

/// A Kafka message through splitting, decoding and ingestion.
pub fn decode_message(data: &[u8]) {
    let Ok(records) = split_records(data) else {
        return;
    };
    for settings in SETTINGS.iter() {
        // The engine decodes each record with `Decoder::decode`, then routes and applies it.
        let mut engine = Engine::new(settings.clone(), WALL_MS);
        for record in records.iter() {
            engine.ingest(record, Some(WALL_MS));
        }
        engine.close_all_sessions();
        engine.snapshot();
        let image = engine.state().to_bytes();
        EngineState::from_bytes(&image).expect("an engine's own state decodes");
    }
}

/// An engine state image, as a checkpoint holds it.
pub fn engine_state(data: &[u8]) {
    if let Ok(state) = EngineState::from_bytes(data) {
        run_restored(state);
    }
}

/// A checkpoint file, as found on disk and with its header made consistent.
pub fn checkpoint_file(data: &[u8]) {
    let _ = read_checkpoint(data);
    if let Some(sealed) = reseal(data)
        && let Ok(checkpoint) = read_checkpoint(&sealed)
    {
        run_restored(checkpoint.engine);
    }
}

/// What pulse does with a decoded state at start-up, and a little more.
fn run_restored(state: EngineState) {
    let mut engine = Engine::restore(EngineSettings::default(), WALL_MS, state);
    engine.ingest(PROBE_EVENT, None);
    engine.snapshot();
    let state = engine.state();
    match EngineState::from_bytes(&state.to_bytes()) {
        Ok(_) => {}
        // Loaded just under the bound, it may count past it: refused on the next load, but
        // its sums must still be far from overflowing (`MAX_LOADED_COUNT` leaves 2^62).
        Err(StateError::Corrupt(why)) if why.starts_with("counts beyond") => {
            let total = state
                .total_count()
                .expect("counts add up without overflowing");
            assert!(
                total < 2 * MAX_LOADED_COUNT,
                "counts near u64's limit: {total}"
            );
        }
        Err(error) => panic!("a restored engine's state does not decode again: {error}"),
    }
}

/// Rewrites the body length (bytes 10..18) and the XXH3 checksum (18..26) of a checkpoint
/// file to match its body, as documented in `pulse_ingest::state_store`. Public for the
/// corpus test, which reseals the checked-in inputs the same way.
pub fn reseal(file: &[u8]) -> Option<Vec<u8>> {
    const HEADER_LEN: usize = 26;
    let mut out = file.get(..HEADER_LEN).map(|_| file.to_vec())?;
    let body_len = (out.len() - HEADER_LEN) as u64;
    out[10..18].copy_from_slice(&body_len.to_le_bytes());
    let mut hasher = Xxh3Default::new();
    hasher.update(&out[..18]);
    hasher.update(&out[HEADER_LEN..]);
    out[18..HEADER_LEN].copy_from_slice(&hasher.digest().to_le_bytes());
    Some(out)
}
