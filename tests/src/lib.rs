//! Test support shared by pulse's integration tests and benchmarks.
//!
//! The centre piece is [`oracle`]: an exact, deliberately naive model of every KPI in
//! the README's Definitions, computed with hash sets and sorting. The engine answers with sketches and
//! streaming state; tests compare the two on generated workloads. The oracle must stay an
//! *independent* implementation of the definitions, so this crate does not depend on
//! `pulse-core`: sharing code with the engine would let one bug hide in both.

pub mod admission;
pub mod breakdowns;
pub mod funnel_model;
pub mod kafka;
pub mod oracle;
pub mod outcomes;
pub mod proxy;
pub mod retention;
pub mod s3;
pub mod skip;
pub mod tls;
pub mod tools;

pub use admission::{FieldRules, Record};
pub use oracle::{Kind, KindNames, OracleSettings, exact_snapshot, exact_snapshot_of_records};
pub use pulse_workload::{GeneratedEvent, WorkloadConfig};

/// The default realistic workload (about 150k events: 2 000 users over 35 days) with the
/// given seed.
pub fn default_workload(seed: u64) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        ..WorkloadConfig::default()
    }
}

/// A small workload (about 25k events: 300 users over 35 days) for tests that run the
/// engine many times, e.g. under proptest.
pub fn small_workload(seed: u64) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        users: 300,
        ..WorkloadConfig::default()
    }
}
