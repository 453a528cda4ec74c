//! What the global view's summaries topic costs (BENCHMARKS.md, "Global view"): bytes a
//! publisher sends, and the CPU of publishing and of merging, for a month of the seeded
//! workload, with no broker (it only carries the bytes).
//!
//!     cargo run --release -p pulse-core --example summaries_cost -- USERS [PARTITIONS] [INTERVAL_S]
//!
//! Apply the month up to one minute before its end and publish: the first publish sends
//! every piece. Then, six times, apply the next INTERVAL_S seconds of events and publish
//! what changed: the steady state. A reader takes every record in and builds the snapshot,
//! as an instance owning no partition does.

use std::time::{Duration, Instant};

use pulse_core::global_view::{PartitionHead, Publisher, Record, RemoteView, SessionHold};
use pulse_core::snapshot;
use pulse_core::time::Calendar;
use pulse_core::{Engine, EngineSettings};
use pulse_workload::{WorkloadConfig, generate};

const END_MS: i64 = 1_772_366_400_000;

fn main() {
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let users = arg(1, 100_000) as u32;
    let partitions = arg(2, 12) as usize;
    let interval_ms = arg(3, 10) as i64 * 1000;
    let events = generate(&WorkloadConfig {
        seed: 13,
        users,
        days: 30,
        end_ms: END_MS,
        ..WorkloadConfig::default()
    });
    let settings = EngineSettings {
        partitions,
        ..EngineSettings::default()
    };
    let shape = pulse_core::family::Rules::of(&settings).shape;
    let mut calendar = Calendar::new(settings.timezone.clone());
    let mut engine = Engine::new(settings, END_MS);
    let mut publisher = Publisher::default();
    let mut reader = RemoteView::default();
    let mut fed = 0;
    println!(
        "users {users}, partitions {partitions}, events {}",
        events.len()
    );
    for step in 0..7 {
        let until = END_MS - 60_000 + step * interval_ms;
        let start = fed;
        while fed < events.len() && events[fed].ts_ms <= until {
            engine.ingest(events[fed].to_json().as_bytes(), None);
            fed += 1;
        }
        let started = Instant::now();
        let local = engine.partition_summaries();
        let summarize = started.elapsed();
        let started = Instant::now();
        let router = engine.ingestor().state().clone();
        let inputs = engine.ingestor().inputs();
        let records: Vec<Record> = local
            .iter()
            .flat_map(|(number, summary)| {
                let head = PartitionHead::new(
                    &inputs[*number],
                    router.clone(),
                    summary.estimated_bytes,
                    SessionHold::Done,
                );
                publisher.changed("events", *number as i32, 1, &head, summary)
            })
            .collect();
        let publish = started.elapsed();
        let bytes: usize = records.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut by_piece = std::collections::BTreeMap::<&str, usize>::new();
        for (key, value) in &records {
            let piece = key.rsplit('/').next().unwrap_or_default();
            *by_piece.entry(piece).or_default() += key.len() + value.len();
        }
        let started = Instant::now();
        for (key, value) in &records {
            reader.take(key, value).expect("a record it wrote");
        }
        let read = started.elapsed();
        let started = Instant::now();
        let combined = reader.combine(Vec::new(), &router, shape, |_, _| false);
        let snapshot = snapshot::build(
            &combined.router,
            &combined.counters,
            &combined.summaries,
            &mut calendar,
            shape,
            router.max_event_ms,
        );
        let merge = started.elapsed();
        println!(
            "{} events {:>8}: records {:>4}, bytes {:>10} ({:>9.0} B/s), summarize {:>7.1} ms, \
             encode+diff {:>7.1} ms, read {:>7.1} ms, merge+snapshot {:>7.1} ms, MAU {}\n    \
             by piece (bytes): {by_piece:?}",
            if step == 0 { "first" } else { "next " },
            fed - start,
            records.len(),
            bytes,
            bytes as f64 / (interval_ms as f64 / 1000.0),
            ms(summarize),
            ms(publish),
            ms(read),
            ms(merge),
            snapshot.kpis.activity.active_users.d30,
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
