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
//!   feature names and dimension values under caps, counts per partition, and picks each
//!   record's partition (the source's, or the virtual one its user id gives, see
//!   [`partitioner`]) and the worker that owns it.
//! - [`partition`]: one input partition's state — what the router counted of it and its
//!   KPI state: day-bucketed HyperLogLog rings (active users, signups, features), the
//!   minute ring, the open-session table and per-day session statistics, each KPI family's part ([`families`]).
//!   [`partition_v4`], [`partition_v3`] and [`partition_v2`] read a partition as checkpoint
//!   formats 4, 3 and 2 saved it.
//! - [`upstream`]: which copies of upstream records a partition has applied (a topic filled
//!   by pulse's repartition stage), so that a repeated copy is dropped.
//! - [`worker`]: the partitions one thread owns; it applies their events, closes their
//!   sessions and answers a snapshot with the merge of their summaries.
//! - [`snapshot`]: merges summaries (HLL union is lossless) into a [`snapshot::KpiSnapshot`].
//! - [`engine`]: router plus one worker owning every partition, on one thread, for tests and
//!   fuzzing; the runtime runs the same parts with several workers on their own threads.
//! - [`rollup`]: the KPIs of every day held, as warehouse records.
//! - [`families`]: the KPI families (activity, sessions, features, stickiness, retention,
//!   outcomes, breakdowns, funnels), one module each, and the one list that registers them;
//!   [`family`]: what a family is given and gives back; [`windows`]: the 1/7/30-day windows
//!   and how sketches fold into them.
//! - [`outcome_settings`], `outcome_fields`, [`money`]: the `[outcomes.*]` tables, the
//!   survey / order / subscription fields they make the decoder capture, and exact money in
//!   minor units, for the outcomes family.
//! - [`remap`]: a partition's feature and dimension-value ids moved by name into another
//!   router's registries (a partition taken over from another instance).
//! - [`dimensions`]: breakdown dimensions, their values and the stream-wide value registry;
//!   [`pointer_fields`]: extra fields (dimension values) captured in the decoder's pass.
//! - [`sketch`], [`histogram`], [`sessions`], [`session_stats`], [`ring`], [`time`],
//!   [`features`], [`funnel_rules`]: the building blocks.
//!
//! # Why the state is plain data
//! Every partition's state serialises and restores on its own, and partitions merge into
//! the global view. The partition is the unit of state, checkpoint and hand-over, so that
//! scale-out across machines moves partitions, as Kafka's consumer group does.

pub mod decode;
pub mod dimensions;
pub mod engine;
pub mod event;
pub mod families;
pub mod family;
pub mod features;
pub mod funnel_rules;
pub mod global_view;
pub mod histogram;
pub mod ingest;
pub mod message;
pub mod money;
mod outcome_fields;
pub mod outcome_settings;
pub mod partition;
pub mod partition_v2;
pub mod partition_v3;
pub mod partition_v4;
pub mod partitioner;
pub mod pointer_fields;
pub mod prepare;
pub mod remap;
pub mod ring;
pub mod rollup;
pub mod session_stats;
pub mod sessions;
pub mod settings;
pub mod sketch;
pub mod snapshot;
pub mod status;

pub mod time;
pub mod upstream;
pub mod windows;
pub mod worker;

pub use engine::{Engine, EngineState, StateError};
pub use event::{EventKind, Rejection};
pub use settings::{EngineSettings, SettingsError};
pub use snapshot::KpiSnapshot;
