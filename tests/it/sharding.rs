//! Sharding changes nothing: the state is split by user, and merging it back (HLL union,
//! added session statistics) gives exactly the single-shard snapshot.

use proptest::prelude::*;
use pulse_core::EngineSettings;
use pulse_tests::WorkloadConfig;

use crate::helpers::{generate, kpis_only, run_engine};

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn sharded_equals_single_shard(seed in 0u64..1_000, shards in 2usize..9) {
        let config = WorkloadConfig { seed, users: 150, days: 33, ..WorkloadConfig::default() };
        let (_, lines) = generate(&config);
        let single = run_engine(&lines, EngineSettings { shards: 1, ..EngineSettings::default() });
        let sharded = run_engine(&lines, EngineSettings { shards, ..EngineSettings::default() });
        prop_assert_eq!(kpis_only(&sharded), kpis_only(&single));
        prop_assert_eq!(sharded.state.shards, shards);
    }
}
