//! Kafka: the consumer-group source of `pulse run`, by role.
//!
//! - [`options`]: [`KafkaOptions`], what every client is built from.
//! - [`consume`]: the consume loop — records to the pipeline, snapshots, checkpoints,
//!   commits, a clean stop.
//! - `context`: librdkafka's callbacks — rebalances, this instance's positions,
//!   statistics and errors.
//! - `ownership`: with a state store shared by the group, partition state follows the
//!   assignment: loaded on assignment, checkpointed and dropped on revocation; `loads`:
//!   the loads of assigned partitions, side by side and cancellable.
//! - `resume`: where a (re)assigned partition continues, checked on its first record.
//! - `watermarks`: how far the session watermark may go with several partitions.
//! - `keying`: the warning that the input is not keyed by user; [`repartition`]: the stage
//!   that re-keys it by user into an internal topic (`kafka.repartition`), `time_merge`
//!   the event-time order it releases records in, `copied_from` the header that lets the
//!   consume loop drop the records it repeats.
//! - `dead_letters`, `commits`, [`admin`], `probe`: rejected records to the
//!   dead-letter topic, offset commits, topic creation, the broker-health probe.
//!
//! Broker health comes from the probe and lag from librdkafka's statistics; neither ever
//! blocks the consume loop. `pulse loadgen`'s producer is not here: it belongs with the
//! workload it produces (`pulse_workload::producer`).

pub mod admin;
mod commits;
pub mod consume;
mod context;
mod copied_from;
mod dead_letters;
mod keying;
mod loads;
pub mod options;
mod ownership;
mod probe;
pub mod repartition;
mod resume;
pub mod summaries;
mod time_merge;
mod watermarks;

pub use admin::ensure_topics;
pub use consume::{Durability, KafkaSourceError, run};
pub use options::KafkaOptions;
