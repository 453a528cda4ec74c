//! Every checked-in fuzz input (`fuzz/corpus/<target>/`: the seeds and each crash the
//! fuzzer once found) through the fuzz targets' own functions, on stable Rust: a fixed
//! finding stays fixed in `make test`, without libFuzzer. `make fuzz` searches for new ones.
//!
//! The fuzz targets swallow decode errors (that is their job), so a state or checkpoint
//! seed that a format change made unreadable would still "pass" while exercising only the
//! error path. Hence the seeds — every file not named `regression-*` — must also decode and
//! restore here, and a stale one fails asking for `make fuzz-seeds`, which writes fresh
//! ones from a real `pulse replay --save-state` of `tests/golden/small.ndjson`. The
//! `regression-*` inputs are damaged on purpose and must stay rejected, but by the check
//! they were kept for ([`REGRESSIONS`]), not by the format-version check in front of it.

use std::fs;
use std::path::{Path, PathBuf};

use pulse_core::engine::MAX_LOADED_COUNT;
use pulse_core::{Engine, EngineSettings, EngineState, StateError};
use pulse_ingest::partition_numbers::PartitionNumbers;
use pulse_ingest::state_store::{FORMAT_VERSION, StateStore, Unusable, read_checkpoint};
use pulse_tests::skip;

use crate::helpers::{assert_success, golden_dir, pulse_bin};

#[path = "../../fuzz/src/lib.rs"]
mod targets;

/// The seeds `make fuzz-seeds` writes, each in its target's corpus.
const STATE_SEED: &str = "engine_state/replay-2-shards.bin";
const CHECKPOINT_SEED: &str = "checkpoint_file/replay-2-shards.bin";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a readable corpus directory").path();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    inputs
}

fn run_corpus(target: &str, run: fn(&[u8])) {
    for (name, bytes) in inputs(target) {
        // A panic names the input, so it can be replayed with the fuzz target.
        eprintln!("{target}: {name}");
        run(&bytes);
    }
}

fn is_regression(name: &str) -> bool {
    name.starts_with("regression-")
}

const REGENERATE: &str = "regenerate the seeds with `make fuzz-seeds`, review and commit them";

/// Why a state seed is not a usable state, if it is not.
fn state_seed_problem(bytes: &[u8]) -> Option<String> {
    let state = match EngineState::from_bytes(bytes) {
        Ok(state) => state,
        Err(error) => return Some(format!("it no longer decodes ({error})")),
    };
    if state.partitions.is_empty() {
        return Some("it holds no partition, so it exercises nothing".to_owned());
    }
    let mut engine = Engine::restore(EngineSettings::default(), 0, state);
    let open = engine.snapshot().state.open_session_keys;
    (open == 0).then(|| "it restores without an open session".to_owned())
}

/// Why a checkpoint seed is not a usable checkpoint, if it is not.
fn checkpoint_seed_problem(bytes: &[u8]) -> Option<String> {
    match read_checkpoint(bytes) {
        // An older format still reads, but through its own reader: the fuzzer would miss
        // the layout pulse writes today.
        Ok(_) if bytes[8..10] != FORMAT_VERSION.to_le_bytes() => Some(format!(
            "it has format version {}, an older one than pulse writes ({FORMAT_VERSION})",
            u16::from_le_bytes([bytes[8], bytes[9]])
        )),
        Ok(checkpoint) => state_seed_problem(&checkpoint.engine.to_bytes()),
        Err(Unusable::Version(version)) => Some(format!(
            "it has format version {version}, which pulse no longer reads"
        )),
        Err(Unusable::UnknownFamilies(families)) => Some(format!(
            "it names KPI families pulse no longer has: {}",
            families.join(", ")
        )),
        Err(Unusable::Damaged(why)) => Some(format!("it no longer decodes ({why})")),
    }
}

/// Every seed of a target must decode: `problem` says why one does not.
fn assert_seeds_decode(target: &str, problem: fn(&[u8]) -> Option<String>) {
    let stale: Vec<String> = inputs(target)
        .into_iter()
        .filter(|(name, _)| !is_regression(name))
        .filter_map(|(name, bytes)| {
            problem(&bytes).map(|why| format!("fuzz/corpus/{target}/{name}: {why}"))
        })
        .collect();
    assert!(
        stale.is_empty(),
        "fuzz seeds that would exercise only the error path:\n  {}\n\
         The format changed: {REGENERATE}.",
        stale.join("\n  ")
    );
}

#[test]
fn decode_message_corpus() {
    run_corpus("decode_message", targets::decode_message);
}

#[test]
fn engine_state_corpus() {
    assert_seeds_decode("engine_state", state_seed_problem);
    run_corpus("engine_state", targets::engine_state);
}

#[test]
fn checkpoint_file_corpus() {
    assert_seeds_decode("checkpoint_file", checkpoint_seed_problem);
    run_corpus("checkpoint_file", targets::checkpoint_file);
}

/// Each `regression-*` input and the rejection it is kept for (a fixed fuzz finding). One
/// rejected for another reason, the format-version check in front, say, after a format
/// change, no longer reaches the code it guards. A new regression input is added here too.
const REGRESSIONS: &[(&str, &str)] = &[
    (
        "engine_state/regression-counter-overflow.bin",
        "counts beyond what any stream could have produced",
    ),
    (
        "engine_state/regression-session-time-overflow.bin",
        "an open session holds an event time pulse never accepts",
    ),
    // DataSketches' own check of the list image, surfacing through serde as a custom error.
    (
        "engine_state/regression-sketch-list-count.bin",
        "Serde Deserialization Error",
    ),
    (
        "engine_state/regression-count-at-the-load-bound.bin",
        "counts beyond what any stream could have produced",
    ),
    (
        "checkpoint_file/regression-histogram-count-overflow.bin",
        "implausible engine state: corrupt pulse state image: counts beyond what any stream \
         could have produced",
    ),
];

fn varint_u64(value: u64) -> Vec<u8> {
    postcard::to_allocvec(&value).expect("to a Vec")
}

/// Each regression input re-made for the current format with the defect it was found
/// with: the fuzzer found them in format 1; a format change re-encodes them here
/// (`make fuzz-seeds`), and [`regression_inputs_are_rejected_by_the_check_they_were_kept_for`]
/// proves each still reaches the check it guards.
fn regression_inputs() -> Vec<(&'static str, Vec<u8>)> {
    const T0: i64 = 1_772_323_200_000;
    let one_event = || {
        let mut engine = Engine::new(EngineSettings::default(), T0 + 86_400_000);
        let line = format!(r#"{{"user_id":"u","event":"login","ts":{T0}}}"#);
        engine.ingest(line.as_bytes(), None);
        engine.state()
    };
    // A rejection counter near 2^64.
    let mut counters = one_event();
    counters.partitions[0].inputs.counters.rejected[0] = u64::MAX - 1;
    // Counts adding up to the load bound exactly: a state just under it once loaded and
    // counted one event past it (see `engine::tests`), so the bound itself is refused.
    let mut at_bound = one_event();
    let held = at_bound.total_count().unwrap();
    at_bound.router.features.overflow_events = MAX_LOADED_COUNT - held;
    // Byte surgery on the sessions family's own image (each family's state is saved as an
    // image of its own, so a change of length there would only break the image's frame).
    let with_sessions = |damage: &dyn Fn(&[u8]) -> Vec<u8>| {
        let mut state = one_event();
        let sessions = &mut state.partitions[0].kpis.sessions;
        let image = postcard::to_allocvec(&*sessions).expect("to a Vec");
        *sessions = postcard::from_bytes(&damage(&image)).expect("still a sessions state");
        state
    };
    // The open session's event time (its last appearance in the image) at i64::MIN.
    let varint = |ms: i64| postcard::to_allocvec(&ms).expect("to a Vec");
    let session_time = with_sessions(&|image| {
        let (time, absurd) = (varint(T0), varint(i64::MIN));
        let at = image
            .windows(time.len())
            .rposition(|w| w == time)
            .expect("the event time is in the image");
        [&image[..at], &absurd, &image[at + time.len()..]].concat()
    })
    .to_bytes();
    // A list-mode HLL image (preamble: 2 ints, serial version 1, family 7, lg_k 14) whose
    // coupon count claims more coupons than follow.
    let mut sketch = one_event().to_bytes();
    let list = sketch
        .windows(4)
        .position(|w| w == [2, 1, 7, 14])
        .expect("a list-mode sketch in the image");
    sketch[list + 6] = 0x7f;
    // A checkpoint whose duration histogram counts near 2^64. The sessions family's image
    // holds its lifetime histogram (15 counts) and the sum and count of sessions: all zero
    // here, one byte each after the counts' length, and the last such run in the image.
    let histogram = with_sessions(&|image| {
        let empty = [[15u8].as_slice(), &[0; 15], &[0, 0]].concat();
        let at = image
            .windows(empty.len())
            .rposition(|w| w == empty)
            .expect("the image holds an empty histogram");
        [
            &image[..at],
            &[15],
            &varint_u64(u64::MAX - 1),
            &[0; 14],
            &[0],
            &varint_u64(2),
            &image[at + empty.len()..],
        ]
        .concat()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let numbers = PartitionNumbers::virtual_partitions("events", 1);
    let (offsets, sizes) = Default::default();
    let saved = store.save(histogram, &numbers, &offsets, &sizes, 0);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(saved)
        .unwrap();
    // The checkpoint file of partition events/0, the one partition saved.
    let path = dir
        .path()
        .join("partitions/events/0/state-00000000000000000001-1.bin");
    vec![
        (
            "engine_state/regression-counter-overflow.bin",
            counters.to_bytes(),
        ),
        (
            "engine_state/regression-count-at-the-load-bound.bin",
            at_bound.to_bytes(),
        ),
        (
            "engine_state/regression-session-time-overflow.bin",
            session_time,
        ),
        ("engine_state/regression-sketch-list-count.bin", sketch),
        (
            "checkpoint_file/regression-histogram-count-overflow.bin",
            fs::read(path).unwrap(),
        ),
    ]
}

/// Why `bytes` (of `target`'s corpus) are rejected, as the fuzz target reads them.
fn rejection(target: &str, bytes: &[u8]) -> String {
    match target {
        "engine_state" => match EngineState::from_bytes(bytes) {
            Ok(_) => "accepted".to_owned(),
            Err(StateError::Corrupt(why)) => why,
            Err(other) => format!("{other:?}"),
        },
        // As the fuzz target reads it: header made consistent with the body.
        "checkpoint_file" => match targets::reseal(bytes).map(|b| read_checkpoint(&b)) {
            Some(Err(Unusable::Damaged(why))) => why,
            Some(other) => format!("{:?}", other.map(|_| ())),
            None => "shorter than a header".to_owned(),
        },
        other => panic!("no regression inputs expected for {other}"),
    }
}

#[test]
fn regression_inputs_are_rejected_by_the_check_they_were_kept_for() {
    let mut listed = 0;
    for target in ["engine_state", "checkpoint_file"] {
        for (name, bytes) in inputs(target) {
            if !is_regression(&name) {
                continue;
            }
            let input = format!("{target}/{name}");
            let (_, expected) = REGRESSIONS
                .iter()
                .find(|(listed, _)| *listed == input)
                .unwrap_or_else(|| {
                    panic!("fuzz/corpus/{input}: add it to REGRESSIONS with its rejection")
                });
            let actual = rejection(target, &bytes);
            assert_eq!(
                actual, *expected,
                "fuzz/corpus/{input} is rejected for another reason than the one it was \
                 kept for: it no longer tests its fix ({REGENERATE})"
            );
            // A generic reason (a serde error) could match by chance after a format change:
            // the input must also be the one the current format gives.
            let current = regression_inputs()
                .into_iter()
                .find(|(listed, _)| *listed == input)
                .map(|(_, bytes)| bytes);
            assert!(
                current.as_deref() == Some(bytes.as_slice()),
                "fuzz/corpus/{input} is not the current format's encoding of its defect \
                 ({REGENERATE})"
            );
            listed += 1;
        }
    }
    assert_eq!(listed, REGRESSIONS.len(), "REGRESSIONS names missing files");
}

/// The seed check above catches the weakness it is for: a seed of an older format version
/// or with a damaged body is reported, with the command that regenerates it.
#[test]
fn a_stale_seed_is_reported_not_run_quietly() {
    let good = fs::read(corpus_dir().join(CHECKPOINT_SEED)).unwrap();
    assert_eq!(checkpoint_seed_problem(&good), None);
    // The format version sits at bytes 8..10 of the header; resealed, so that the checksum
    // holds and only the version check can catch it.
    let mut other_version = good.clone();
    other_version[8] ^= 0x7f;
    let other_version = targets::reseal(&other_version).unwrap();
    let why = checkpoint_seed_problem(&other_version).expect("an unknown version is stale");
    assert!(why.contains("format version"), "{why}");

    // A regression input moved to another format version is refused at the door, for a
    // reason other than the one it is kept for.
    let regression = "checkpoint_file/regression-histogram-count-overflow.bin";
    let mut moved = fs::read(corpus_dir().join(regression)).unwrap();
    moved[8] ^= 0x7f;
    let why = rejection("checkpoint_file", &moved);
    assert!(why.starts_with("Err(Version("), "{why}");
    assert!(REGRESSIONS.iter().all(|(_, expected)| *expected != why));

    let state = fs::read(corpus_dir().join(STATE_SEED)).unwrap();
    assert_eq!(state_seed_problem(&state), None);
    let mut other_magic = state.clone();
    other_magic[0] ^= 0xff;
    assert!(state_seed_problem(&other_magic).is_some());
    assert!(state_seed_problem(&state[..state.len() / 2]).is_some());
}

/// The state objects under a store's directory.
fn state_objects(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(state_objects(&path));
        } else if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("state-"))
        {
            found.push(path);
        }
    }
    found
}

/// Not a check but the regeneration `make fuzz-seeds` runs (hence ignored): rewrites each
/// seed that no longer decodes from a real `pulse replay --shards 2 --partitions 1 --save-state` of
/// `tests/golden/small.ndjson`, then fails so that the new files are reviewed; does nothing
/// when every seed decodes.
#[test]
#[ignore = "rewrites fuzz/corpus: run by `make fuzz-seeds`"]
fn regenerate_stale_seeds() {
    assert!(
        !skip::in_ci(),
        "regenerating fuzz seeds is refused under CI=true"
    );
    let state_dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(pulse_bin())
        .args(["replay", "--compact", "--shards", "2", "--partitions", "1"])
        .args(["--wall-clock", "2026-03-11T00:00:00Z"])
        .arg("--input")
        .arg(golden_dir().join("small.ndjson"))
        .arg("--save-state")
        .arg(state_dir.path())
        .env_remove("PULSE_CONFIG")
        .output()
        .unwrap();
    assert_success(&output, "pulse replay --save-state");
    // One partition, so one state object (`partitions/<topic>/0/state-….bin`).
    let files = state_objects(state_dir.path());
    assert_eq!(files.len(), 1, "one checkpoint: {files:?}");
    let checkpoint = fs::read(&files[0]).unwrap();
    let engine = read_checkpoint(&checkpoint)
        .expect("pulse reads the checkpoint it wrote")
        .engine
        .to_bytes();
    let mut rewritten = Vec::new();
    for (seed, bytes, problem) in [
        (
            CHECKPOINT_SEED,
            &checkpoint,
            checkpoint_seed_problem as fn(&[u8]) -> Option<String>,
        ),
        (STATE_SEED, &engine, state_seed_problem),
    ] {
        let path = corpus_dir().join(seed);
        if fs::read(&path).map_or(true, |old| problem(&old).is_some()) {
            fs::write(&path, bytes).unwrap();
            rewritten.push(seed);
        }
    }
    for (input, bytes) in regression_inputs() {
        let (target, _) = input.split_once('/').expect("target/name");
        let path = corpus_dir().join(input);
        let expected = REGRESSIONS.iter().find(|(listed, _)| *listed == input);
        let stale = fs::read(&path).map_or(true, |old| {
            old != bytes || expected.is_none_or(|(_, why)| rejection(target, &old) != *why)
        });
        if stale {
            fs::write(&path, bytes).unwrap();
            rewritten.push(input);
        }
    }
    assert!(
        rewritten.is_empty(),
        "rewrote {}: review and commit them (and run `make fuzz` once on the new format)",
        rewritten
            .iter()
            .map(|seed| format!("fuzz/corpus/{seed}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
