//! Shared fixtures for the criterion benchmarks: realistic NDJSON from `pulse-workload`.

use pulse_workload::{WorkloadConfig, generate};

/// A fixed instant far from "now" so that no generated event is ever "future".
pub const WALL_MS: i64 = 1_900_000_000_000;

/// Realistic events in all three JSON shapes, as raw lines, in arrival order.
pub fn event_lines(users: u32, days: u32, seed: u64) -> Vec<Vec<u8>> {
    let config = WorkloadConfig {
        seed,
        users,
        days,
        ..WorkloadConfig::default()
    };
    generate(&config)
        .iter()
        .map(|e| e.to_json().into_bytes())
        .collect()
}
