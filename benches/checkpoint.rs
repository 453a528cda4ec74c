//! Checkpoint cost at production scale: a month of 1 million users and 200 features.
//!
//! Measures `EngineState::to_bytes` (encode), `StateStore::save` (a copy of the state, then
//! per partition encode + checksum + write + fsync + rename and a manifest, into
//! `target/tmp`, i.e. the disk the build runs on) and `StateStore::inspect` (list + read +
//! checksum + decode), and prints the checkpoint size. The events are synthetic and
//! written straight into an `Engine`, not made by `pulse-workload`, so the setup of 10 M
//! events takes seconds rather than minutes.
//!
//! `restore` is what a group member does when a partition is assigned to it (issue 13):
//! `StateStore::claim` of one partition (list, read manifest and object, checksum, decode,
//! create the claim manifest) and `Ingestor::take_over` (its ids remapped into this
//! instance's registries), for partition states of growing size. Each iteration claims a
//! fresh copy of the saved folder, so claims do not pile up; the copy is not timed.
//!
//! Run with `cargo bench -p pulse-benches --bench checkpoint`; results are recorded in
//! BENCHMARKS.md.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use pulse_benches::WALL_MS;
use pulse_core::ingest::Ingestor;
use pulse_core::partition::total_counters;
use pulse_core::{Engine, EngineSettings, EngineState};
use pulse_ingest::partition_numbers::PartitionNumbers;
use pulse_ingest::state_store::{Offsets, StateStore};
use pulse_ingest::topic_partition::TopicPartition;

const USERS: u64 = 1_000_000;
const FEATURES: u64 = 200;
const DAYS: i64 = 30;
/// Each user is active on one day in `ACTIVE_EVERY`: 3 days of 30, about 100 000 a day.
const ACTIVE_EVERY: u64 = 10;
const DAY_MS: i64 = 86_400_000;

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: a cheap, well-spread hash for synthetic choices.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A month of activity: every user active on 3 of the 30 days, each active day a login, a
/// page view and one feature use (feature popularity skewed: low numbers are popular), and
/// a signup on the user's first day. Events arrive in time order. Returns the state and the
/// number of events.
fn month(partitions: usize, users: u64) -> (EngineState, u64) {
    let settings = EngineSettings {
        partitions,
        ..EngineSettings::default()
    };
    let mut engine = Engine::new(settings, WALL_MS);
    let start = WALL_MS - DAYS * DAY_MS;
    let per_day = users / ACTIVE_EVERY;
    let spacing = DAY_MS / (per_day as i64 + 1);
    let mut line = String::with_capacity(128);
    let mut events = 0;
    let mut send = |line: &str| {
        engine.ingest(line.as_bytes(), None);
        events += 1;
    };
    for day in 0..DAYS {
        let day_start = start + day * DAY_MS;
        let first = (ACTIVE_EVERY - day as u64 % ACTIVE_EVERY) % ACTIVE_EVERY;
        for (i, user) in (first..users).step_by(ACTIVE_EVERY as usize).enumerate() {
            let ts = day_start + i as i64 * spacing;
            let x = (mix(user << 8 | day as u64) >> 11) as f64 / (1u64 << 53) as f64;
            let feature = ((x * x) * FEATURES as f64) as u64;
            if day < ACTIVE_EVERY as i64 {
                line.clear();
                write!(
                    line,
                    r#"{{"user_id":"u{user}","event":"signup","ts":{ts}}}"#
                )
                .unwrap();
                send(&line);
            }
            for (offset, event) in [(0, "login"), (100, "page_view")] {
                line.clear();
                let ts = ts + offset;
                write!(
                    line,
                    r#"{{"user_id":"u{user}","event":"{event}","ts":{ts}}}"#
                )
                .unwrap();
                send(&line);
            }
            line.clear();
            let ts = ts + 200;
            write!(
                line,
                r#"{{"user_id":"u{user}","event":"feature_used","feature":"feature-{feature}","ts":{ts}}}"#
            )
            .unwrap();
            send(&line);
        }
    }
    let state = engine.state();
    let counters = total_counters(state.partitions.iter().map(|p| &p.inputs));
    assert_eq!(counters.accepted, events, "every event counts");
    assert!(state.router.features.tracked() <= FEATURES as usize);
    (state, events)
}

fn checkpoint(c: &mut Criterion) {
    let offsets: Offsets = (0..12)
        .map(|p| (TopicPartition::new("events", p), 1_000_000 + i64::from(p)))
        .collect();
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for partitions in [1usize, 4] {
        let started = Instant::now();
        let (state, events) = month(partitions, USERS);
        let numbers = PartitionNumbers::virtual_partitions("events", partitions);
        let setup = started.elapsed();
        let image = state.to_bytes().len() as u64;
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let store = StateStore::new(dir.path());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let sizes = Default::default();
        let size = runtime
            .block_on(store.save(state.clone(), &numbers, &offsets, &sizes, 0))
            .unwrap();
        eprintln!(
            "{partitions} partition(s): {events} events, {USERS} users over {DAYS} days, {FEATURES} features; \
             setup {setup:.1?}; engine image {image} bytes; checkpoint objects {size} bytes ({:.1} MiB)",
            size as f64 / 1024.0 / 1024.0
        );
        group.throughput(Throughput::Bytes(size));
        // The ingest pause: the workers copy their partitions' state at the barrier (the
        // live service does it on every worker thread at once, so the pause is about this
        // ÷ workers);
        // encoding and writing then run off the ingest path.
        group.bench_with_input(BenchmarkId::new("copy", partitions), &state, |b, state| {
            b.iter(|| black_box(state.clone()))
        });
        group.bench_with_input(
            BenchmarkId::new("encode", partitions),
            &state,
            |b, state| b.iter(|| black_box(state.to_bytes())),
        );
        group.bench_with_input(BenchmarkId::new("save", partitions), &state, |b, state| {
            // The copy is the caller's (the checkpointer owns the barrier's copy already).
            b.iter(|| {
                let saved = store.save(state.clone(), &numbers, &offsets, &sizes, 0);
                black_box(runtime.block_on(saved).unwrap())
            })
        });
        // Inspected: `load` also claims each partition (one small create per partition),
        // and its claims would pile up over the iterations.
        group.bench_with_input(BenchmarkId::new("load", partitions), &store, |b, store| {
            b.iter(|| {
                black_box(
                    runtime
                        .block_on(store.inspect())
                        .unwrap()
                        .expect("a checkpoint"),
                )
            })
        });
    }
    group.finish();
}

/// Copies every file under `from` to the same place under `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn restore(c: &mut Criterion) {
    let key = TopicPartition::new("events", 0);
    let numbers = PartitionNumbers::from_keys([key.clone()]);
    let offsets: Offsets = [(key.clone(), 1_000_000)].into();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("restore");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for users in [10_000u64, 100_000, 1_000_000] {
        let (state, _) = month(1, users);
        let saved = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let sizes = Default::default();
        let size = runtime
            .block_on(StateStore::new(saved.path()).save(state, &numbers, &offsets, &sizes, 0))
            .unwrap();
        eprintln!("restore: {users} users in one partition, object of {size} bytes");
        group.throughput(Throughput::Bytes(size));
        group.bench_function(BenchmarkId::new("claim_and_install", users), |b| {
            b.iter_custom(|iterations| {
                let mut took = Duration::ZERO;
                for _ in 0..iterations {
                    let copy = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
                    copy_tree(saved.path(), copy.path());
                    let settings = EngineSettings::default();
                    let mut ingestor = Ingestor::new(&settings, WALL_MS);
                    let started = Instant::now();
                    let taken = runtime
                        .block_on(StateStore::new(copy.path()).claim(&key))
                        .unwrap()
                        .expect("saved");
                    let state = taken.state.expect("a state");
                    black_box(ingestor.take_over(0, &taken.router, state, &settings));
                    took += started.elapsed();
                }
                took
            })
        });
    }
    group.finish();
}

criterion_group!(benches, checkpoint, restore);
criterion_main!(benches);
