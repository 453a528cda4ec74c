//! Splitting changes nothing: state is split by partition and partitions are spread over
//! worker threads, and merging it back (HLL union, added session statistics) gives exactly
//! the snapshot of one partition on one thread, for any number of either.

use proptest::prelude::*;
use pulse_core::EngineSettings;
use pulse_core::partitioner::Partitioner;
use pulse_ingest::Pipeline;
use pulse_tests::WorkloadConfig;

use crate::helpers::{WALL_MS, generate, kpis_only, run_engine};

/// The whole input through the runtime's pipeline and worker threads, every session closed
/// at the end, as `pulse replay` does.
fn run_pipeline(lines: &[String], settings: EngineSettings) -> pulse_core::KpiSnapshot {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut pipeline = Pipeline::start(settings, WALL_MS, None).unwrap();
        for line in lines {
            pipeline.ingest(line.as_bytes(), None).await.unwrap();
        }
        pipeline.close_all_sessions().await.unwrap();
        let snapshot = pipeline.snapshot().await.unwrap();
        pipeline.stop();
        snapshot
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn any_partitions_on_any_workers_equal_one_partition(
        seed in 0u64..1_000,
        workers in 1usize..5,
        partitions in 1usize..13,
        crc32 in any::<bool>(),
    ) {
        let config = WorkloadConfig { seed, users: 150, days: 33, ..WorkloadConfig::default() };
        let (_, lines) = generate(&config);
        let single = run_engine(&lines, EngineSettings::default());
        let settings = EngineSettings {
            shards: workers,
            partitions,
            partitioner: if crc32 { Partitioner::Crc32 } else { Partitioner::Murmur2 },
            ..EngineSettings::default()
        };
        let on_one_thread = run_engine(&lines, settings.clone());
        prop_assert_eq!(kpis_only(&on_one_thread), kpis_only(&single));
        let split = run_pipeline(&lines, settings);
        prop_assert_eq!(kpis_only(&split), kpis_only(&single));
        prop_assert_eq!(split.state.shards, workers, "one summary per worker");
    }
}
