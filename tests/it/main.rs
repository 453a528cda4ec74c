//! pulse's integration tests: one binary, one module per concern, shared helpers.
//!
//! - `kpis`: the engine against the exact model on generated workloads.
//! - `sharding`: any number of shards gives the single-shard answer, to the last digit.
//! - `state`: engine state survives a serialise / restore round trip mid-stream.
//! - `golden`: decoder shapes and a small replay snapshot against checked-in files.
//! - `cli`: the `pulse` binary itself (`replay`, `check-config`).

mod cli;
mod golden;
mod helpers;
mod kpis;
mod sharding;
mod state;
