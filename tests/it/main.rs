//! pulse's integration tests: one binary, one module per concern, shared helpers.
//!
//! - `kpis`: the engine against the exact model on generated workloads.
//! - `breakdowns`: the KPIs per dimension value against their exact model.
//! - `funnels`: funnels and time to value against their brute-force model.
//! - `sharding`: any number of partitions on any number of workers gives the answer of one
//!   partition on one thread, to the last digit.
//! - `state`: engine state survives a serialise / restore round trip mid-stream.
//! - `golden`: decoder shapes and a small replay snapshot against checked-in files.
//! - `cli`: the `pulse` binary itself (`replay`, `check-config`).
//! - `kafka_tests`: `pulse run` and `pulse loadgen` against a real broker.
//! - `broker_faults`: TLS in front of the broker, and the broker restarted mid-stream.
//! - `overload`: a large backlog absorbed with bounded memory, ready throughout.
//! - `durability`: checkpoints, SIGKILL crashes, history hand-over (directory and S3),
//!   unreadable state, a stale owner stopping.
//! - `object_state`: partition state in S3 (moto): fencing, replay per partition, and a
//!   partition-count change refused.
//! - `memory`: a real pulse's peak resident memory with a million open sessions.
//! - `fuzz_corpus`: the checked-in fuzz inputs through the fuzz targets, on stable Rust.
//! - `deploy`: the image, compose, Kubernetes and systemd files agree with pulse's config.
//! - `service`: `pulse demo` serving metrics, and its clean stop.
//! - `observability`: alert rules and dashboard, through promtool and a real Prometheus.
//! - `repartition`: `kafka.repartition`: a topic not keyed by user re-keyed into an internal
//!   topic gives the replay's KPIs.
//! - `failover`: partition state following the consumer group: a member killed, scaling
//!   1 → 3 → 1, a member paused past its session timeout.
//! - `global_view`: the summaries topic: an instance owning no partition serves the global
//!   KPIs; three instances converge on one instance's and the replay's; a dead owner's
//!   summaries keep counting until its successors publish.
//! - `group`: a consumer group of `pulse run` on a 12-partition topic sharing a state
//!   location, for `failover` and `global_view`.
//! - `rebalance`: a second pulse joins the consumer group and leaves while events flow.
//! - `process`: a running `pulse` for the service tests.
//! - `retention`: retention, lifecycle and churn against their exact model, and live.
//! - `rollups`: `pulse replay --rollups` loaded into a real PostgreSQL, idempotently.
//! - `outcomes`: NPS, CSAT, revenue and MRR against their exact model; bad outcome events.

mod breakdowns;
mod broker_faults;
mod cli;
mod deploy;
mod durability;
mod failover;
mod funnels;
mod fuzz_corpus;
mod global_view;
mod golden;
mod group;
mod helpers;
#[path = "kafka.rs"]
mod kafka_tests;
mod kpis;
mod memory;
mod object_state;
mod observability;
mod outcomes;
mod overload;
mod process;
mod rebalance;
mod repartition;
mod retention;
mod rollups;
mod service;
mod sharding;
mod state;
