//! The retention family's snapshot when users are merged across partitions: what every
//! partition pays once a day (a recount; keyed input, users disjoint), and what every
//! snapshot pays while users are shared (input not keyed by user, each user on two of the
//! four partitions); beside it the snapshot that only copies kept counts (keyed input,
//! the rest of the day).
//!
//! Run with `cargo bench -p pulse-benches --bench retention_merge`; results are recorded in
//! BENCHMARKS.md ("Input not keyed by user").

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pulse_core::EngineSettings;
use pulse_core::event::{EventKind, PartitionEvent};
use pulse_core::families::{Sections, Summary};
use pulse_core::family::{Rules, SectionContext};
use pulse_core::ingest::Ingestor;
use pulse_core::partition::Partition;
use pulse_core::sketch::UserHash;
use pulse_core::time::Day;
use pulse_core::windows::SummaryPoint;

const TODAY: Day = 20_500;
const PARTITIONS: u32 = 4;

/// `users` users active over 30 days, each on one partition (`spread` false) or two.
fn partitions(users: u32, spread: bool) -> Vec<Partition> {
    let settings = EngineSettings::default();
    let mut parts: Vec<Partition> = (0..PARTITIONS).map(|_| Partition::new(&settings)).collect();
    for user in 0..users {
        let hash = UserHash::of(&format!("user-{user}"));
        let homes = if spread { 2 } else { 1 };
        for home in 0..homes {
            let partition = (user + home) % PARTITIONS;
            let day = TODAY - 1 - ((user + home * 7) % 30) as Day;
            parts[partition as usize].apply(&PartitionEvent {
                partition,
                user: hash,
                session_key: hash.key,
                ts_ms: i64::from(day) * 86_400_000,
                day,
                kind: if user % 10 == 0 {
                    EventKind::Signup
                } else {
                    EventKind::Login
                },
                feature: None,
                sessionize: false,
                in_retention: true,
                in_horizon: true,
                outcome: None,
                dims: Default::default(),
                tags: Default::default(),
            });
        }
    }
    parts
}

fn snapshot(parts: &mut [Partition], at: SummaryPoint, cx: &SectionContext<'_>) -> Sections {
    let rules = Rules::of(&EngineSettings::default());
    let mut merged = Summary::default();
    for part in parts {
        merged.merge(part.summarize(at), &rules);
    }
    Sections::build(&[merged], cx)
}

fn merge(c: &mut Criterion) {
    let settings = EngineSettings::default();
    let router = Ingestor::new(&settings, 0);
    let cx = SectionContext {
        router: router.state(),
        shape: Rules::of(&settings).shape,
    };
    let mut group = c.benchmark_group("retention_snapshot");
    group.sample_size(10);
    for users in [100_000u32, 1_000_000] {
        for (name, spread, merge_users) in [
            ("keyed_kept_counts", false, false),
            ("keyed_merged", false, true),
            ("spread_merged", true, true),
        ] {
            let mut parts = partitions(users, spread);
            let at = SummaryPoint {
                today: TODAY,
                now_minute: i64::from(TODAY) * 1440,
                merge_users,
            };
            // The first snapshot recounts; the measured ones are what each later one costs.
            let first = snapshot(&mut parts, at, &cx);
            eprintln!(
                "{name} {users}: users on several partitions {}",
                first.retention.retention.users_on_several_partitions
            );
            group.bench_function(BenchmarkId::new(name, users), |b| {
                b.iter(|| black_box(snapshot(&mut parts, at, &cx)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);
