//! pulse-ingest: where events come from, and the runtime that feeds them to the engine.
//!
//! # Layout
//! - [`workers`]: the worker threads — one OS thread per worker, each the single owner of
//!   its partitions' state, fed through a bounded channel. A full channel makes the router
//!   wait: back pressure instead of memory growth.
//! - [`pipeline`]: the router side — decode, classify, batch per worker, and every refresh
//!   interval a barrier that yields a consistent snapshot and the offsets it covers. The
//!   one runner: `pulse run`, `pulse demo` and `pulse replay` all drive a pipeline.
//! - [`partition_numbers`]: which Kafka partition each of the engine's partition numbers is.
//! - [`kafka`]: the Kafka source (consumer group, manual commits after apply, dead-letter
//!   topic, lag and broker health), one module per role.
//! - [`topic_partition`]: the key of everything kept per Kafka partition.
//! - [`clock`]: the one place the wall clock is read.
//! - [`demo`]: the built-in generator source, no broker needed.
//! - [`state_store`]: checkpoint files — versioned, checksummed, written atomically.
//! - [`checkpointer`]: periodic checkpoints off the ingest path; offsets are committed to
//!   Kafka only once the checkpoint holding them is durable.
//! - [`periodic`]: the one schedule of checkpoints and rollups: every interval, one run at
//!   a time, off the ingest path.
//! - [`rollups`]: warehouse rollup records to daily NDJSON files and a Kafka topic, off the
//!   ingest path.
//!
//! The engine itself (pulse-core) never sees a thread, a socket or a file.

pub mod checkpointer;
pub mod clock;
pub mod demo;
pub mod kafka;
pub mod partition_numbers;
pub mod periodic;
pub mod pipeline;
pub mod rollups;
pub mod state_store;
pub mod topic_partition;
pub mod workers;

pub use pipeline::{Pipeline, Sink};
