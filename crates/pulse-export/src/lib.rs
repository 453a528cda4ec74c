//! pulse-export: the edge where KPI snapshots leave the process.
//!
//! It owns the Prometheus exposition of a [`pulse_core::KpiSnapshot`] plus the ingest
//! status, and the HTTP server that serves it. It must not compute KPIs (pulse-core does)
//! nor talk to Kafka (the binary feeds it an [`IngestStatus`]); it only translates plain
//! data into metrics and responses, so every number on `/metrics` can be traced to one field
//! of the snapshot or the status.
//!
//! # Layout
//! - [`exporter`]: [`Exporter`], the shared latest snapshot + status, and the registry that
//!   renders them (with the `process_*` metrics).
//! - [`metrics`]: every metric pulse exports (name, type, labels, help) and the collector
//!   that builds them from the latest snapshot at scrape time.
//! - `published`: the latest snapshot and status, written by the exporter, read by the
//!   collector and the handlers.
//! - [`http`]: [`serve`], the axum routes `/metrics`, `/v1/metrics`, `/healthz`, `/readyz`.
//!
//! # Why the snapshot is pushed, not pulled
//! The binary calls [`Exporter::publish`] on every tick; a scrape only reads the last
//! published snapshot. A scrape therefore never waits for, or slows down, the workers, and a
//! burst of scrapes costs the engine nothing.

pub mod exporter;
pub mod http;
pub mod metrics;
mod published;

pub use exporter::Exporter;
pub use http::serve;

/// What build is running; exported as `pulse_build_info{version, git_commit} 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    pub git_commit: String,
}

pub use pulse_core::status::{CheckpointStatus, IngestStatus, PartitionStatus};

/// Why an [`Exporter`] could not be built. Both cases are programming errors caught on the
/// first start (a bad metric definition), never a consequence of the data.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid metric definition {name}")]
    InvalidMetric {
        name: &'static str,
        #[source]
        source: prometheus::Error,
    },
    #[error("cannot register the {collector} collector")]
    Register {
        collector: &'static str,
        #[source]
        source: prometheus::Error,
    },
}
