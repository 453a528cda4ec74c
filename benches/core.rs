//! Core throughput: JSON parse alone (skipping every value: the ceiling; and into a
//! `serde_json::Value`), decode, decode + apply, and snapshot.
//!
//! Run with `make bench-core` (or `cargo bench -p pulse-benches --bench core`); results are
//! recorded in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pulse_benches::{WALL_MS, event_lines};
use pulse_core::decode::Decoder;
use pulse_core::dimensions::DimensionSettings;
use pulse_core::{Engine, EngineSettings};
use serde::de::IgnoredAny;

fn throughput(c: &mut Criterion) {
    let lines = event_lines(20_000, 7, 1);
    let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let settings = EngineSettings::default();
    let mut group = c.benchmark_group("per_event");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(lines.len() as u64));
    eprintln!(
        "{} events, {:.0} bytes per event",
        lines.len(),
        bytes as f64 / lines.len() as f64
    );

    group.bench_function("parse_only", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_slice::<IgnoredAny>(line).ok());
            }
        })
    });
    // What parsing a record usually means: a serde_json::Value tree.
    group.bench_function("parse_value", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_slice::<serde_json::Value>(line).ok());
            }
        })
    });
    let decoder = Decoder::new(&settings);
    group.bench_function("decode", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(decoder.decode(line).ok());
            }
        })
    });
    group.bench_function("decode_apply", |b| {
        b.iter_batched(
            || Engine::new(settings.clone(), WALL_MS),
            |mut engine| {
                for line in &lines {
                    engine.ingest(line, None);
                }
                engine
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    for users in [2_000u32, 50_000] {
        let mut engine = Engine::new(EngineSettings::default(), WALL_MS);
        for line in event_lines(users, 31, 2) {
            engine.ingest(&line, None);
        }
        group.bench_with_input(BenchmarkId::from_parameter(users), &users, |b, _| {
            b.iter(|| black_box(engine.snapshot()))
        });
    }
    group.finish();
}

/// The snapshot of `snapshot` with 50 000 users in 500 tenants and 25 platforms, broken
/// down by both (the issue #16 budget: snapshot time with 500 tenants).
fn snapshot_breakdowns(c: &mut Criterion) {
    let dimension = |name: &str, path: &str, max_values| DimensionSettings {
        name: name.into(),
        paths: vec![path.into()],
        max_values,
    };
    let settings = EngineSettings {
        dimensions: vec![
            dimension("platform", "/platform", 25),
            dimension("tenant", "/tenant_id", 500),
        ],
        ..EngineSettings::default()
    };
    let config = pulse_workload::WorkloadConfig {
        seed: 2,
        users: 50_000,
        days: 31,
        platforms: (0..25).map(|p| format!("p{p}")).collect(),
        tenants: 500,
        ..pulse_workload::WorkloadConfig::default()
    };
    let mut group = c.benchmark_group("snapshot_breakdowns");
    group.sample_size(10);
    for (label, settings) in [
        ("none", EngineSettings::default()),
        ("platform_tenant", settings),
    ] {
        let mut engine = Engine::new(settings, WALL_MS);
        for event in pulse_workload::generate(&config) {
            engine.ingest(event.to_json().as_bytes(), None);
        }
        group.bench_with_input(BenchmarkId::from_parameter(label), &label, |b, _| {
            b.iter(|| black_box(engine.snapshot()))
        });
    }
    group.finish();
}

fn timestamps(c: &mut Criterion) {
    let times: Vec<String> = (0..10_000i64)
        .map(|i| {
            let ms = 1_772_323_200_000 + i * 7_919_311;
            let ts = jiff::Timestamp::from_millisecond(ms).unwrap();
            if i % 2 == 0 {
                format!("{ts:.3}")
            } else {
                ts.to_zoned_datetime(jiff::tz::TimeZone::fixed(jiff::tz::offset(5)))
                    .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
                    .to_string()
            }
        })
        .collect();
    let mut group = c.benchmark_group("rfc3339");
    group.throughput(Throughput::Elements(times.len() as u64));
    group.bench_function("jiff", |b| {
        b.iter(|| {
            for t in &times {
                black_box(
                    t.parse::<jiff::Timestamp>()
                        .ok()
                        .map(|t| t.as_millisecond()),
                );
            }
        })
    });
    group.bench_function("pulse", |b| {
        b.iter(|| {
            for t in &times {
                black_box(pulse_core::decode::parse_rfc3339_ms(t));
            }
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    throughput,
    snapshot,
    snapshot_breakdowns,
    timestamps
);
criterion_main!(benches);
