//! pulse-core: the pure heart of pulse.
//!
//! It turns raw event bytes into engagement KPIs and owns nothing else: no threads, no
//! network, no disk, no reading of the wall clock. Time always comes in as a value, so every
//! window and session rule is tested without sleeping, and a replay of history gives the
//! same answer as the live run that saw the same events.
//!
//! # Layout
//! - [`message`]: a Kafka message → its records (one event, an array, a Segment batch).
//! - [`decode`]: bytes → [`event::DecodedEvent`] along configurable JSON-pointer paths, in
//!   one borrowed pass; bad records become counted [`event::Rejection`]s.
//! - [`prepare`]: decode + hash the user, the stateless part of ingesting a record, which
//!   may run on any thread; [`prepare::PreparedBatch`] carries a block of them.
//! - [`ingest`]: the router. It owns the clock, classifies events as late / future, interns
//!   feature names under a cap, hashes the user once, and picks the owning shard.
//! - [`shard`]: one shard's state — day-bucketed HyperLogLog rings (active users, signups,
//!   features), the open-session table and per-day session statistics. One owner, no locks.
//! - [`snapshot`]: merges shard states (HLL union is lossless) into a [`snapshot::KpiSnapshot`].
//! - [`engine`]: router plus shards on one thread, for replay and tests; the binary runs the
//!   same parts on several threads.
//! - [`sketch`], [`histogram`], [`sessions`], [`time`], [`features`]: the building blocks.
//!
//! # Why the state is plain data
//! Every shard's state serialises, restores and merges with another's. That is what makes
//! checkpoints, restarts and, later, scale-out across machines possible.

pub mod buckets;
pub mod decode;
pub mod engine;
pub mod event;
pub mod features;
pub mod histogram;
pub mod ingest;
pub mod message;
pub mod partition;
pub mod partitioner;
pub mod prepare;
pub mod rollup;
pub mod sessions;
pub mod settings;
pub mod sketch;
pub mod snapshot;
pub mod status;
pub mod summary;
pub mod time;
pub mod worker;

pub use engine::{Engine, EngineState, StateError};
pub use event::{EventKind, Rejection};
pub use settings::{EngineSettings, SettingsError};
pub use snapshot::KpiSnapshot;
