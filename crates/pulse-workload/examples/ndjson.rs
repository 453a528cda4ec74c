//! Prints a synthetic workload as NDJSON on stdout, for `pulse replay` and for trials.
//!
//! `cargo run -p pulse-workload --example ndjson -- [users] [days] [seed] [platforms] [tenants]`
//! (defaults: 80 users, 35 days, seed 1, no `platform` or `tenant_id` fields; `platforms`
//! is a count, named `p0`, `p1`, ...). The repository's `examples/events.ndjson` was made
//! with the defaults.

use std::io::{BufWriter, Write};

use pulse_workload::{WorkloadConfig, generate};

fn main() -> std::io::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let config = WorkloadConfig {
        users: args.first().map_or(80, |u| *u as u32),
        days: args.get(1).map_or(35, |d| *d as u32),
        seed: args.get(2).copied().unwrap_or(1),
        platforms: (0..args.get(3).copied().unwrap_or(0))
            .map(|p| format!("p{p}"))
            .collect(),
        tenants: args.get(4).map_or(0, |t| *t as u32),
        ..WorkloadConfig::default()
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut line = String::new();
    for event in generate(&config) {
        line.clear();
        event.write_json(&mut line);
        writeln!(out, "{line}")?;
    }
    out.flush()
}
