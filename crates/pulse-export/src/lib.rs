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
//! - [`http`]: [`serve`], the axum routes `/metrics`, `/v1/metrics`, `/healthz`, `/readyz`.
//!
//! # Why the snapshot is pushed, not pulled
//! The binary calls [`Exporter::publish`] on every tick; a scrape only reads the last
//! published snapshot. A scrape therefore never waits for, or slows down, the shards, and a
//! burst of scrapes costs the engine nothing.

pub mod exporter;
pub mod http;
pub mod metrics;

pub use exporter::Exporter;
pub use http::serve;

/// What build is running; exported as `pulse_build_info{version, git_commit} 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    pub git_commit: String,
}

/// The state of ingestion as the binary sees it, replaced wholesale by
/// [`Exporter::set_status`]. The default is "not connected, not ready".
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IngestStatus {
    /// Connected to Kafka (always true for the file and demo sources).
    pub broker_up: bool,
    /// Serving meaningful numbers: `/readyz` answers 200 only while this is true.
    pub ready: bool,
    /// Why not ready, shown by `/readyz` (e.g. "restoring checkpoint", "broker down").
    pub not_ready_reason: Option<String>,
    /// Currently assigned partitions; a revoked partition disappears from the metrics.
    pub partitions: Vec<PartitionStatus>,
    /// Records written to the dead-letter topic since start.
    pub dead_letters_total: u64,
    /// Dead letters that could not be written (they were counted and dropped).
    pub dead_letter_errors_total: u64,
    /// Unix time (ms) of the latest accepted event; when `None` the snapshot's
    /// `last_event_at` is used.
    pub last_event_unix_ms: Option<i64>,
}

/// One assigned partition. `None` means "not known yet" and is left out of the metrics
/// rather than shown as 0, which would look like a caught-up consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// High watermark minus the next offset to consume, in messages.
    pub lag: Option<i64>,
    pub committed_offset: Option<i64>,
}

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
