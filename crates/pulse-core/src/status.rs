//! How the input is doing: plain data that the sources fill and the exporter reads.
//!
//! It lives in the core, beside the snapshot, so the source crate and the exporter share one
//! definition without depending on each other. Nothing here is computed by the core.

/// What a source reports beside each snapshot. The default is "not connected, not ready".
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IngestStatus {
    /// Connected to Kafka (always true for the file and demo sources).
    pub broker_up: bool,
    /// Serving meaningful numbers: `/readyz` answers 200 only while this is true.
    pub ready: bool,
    /// Why not ready, shown by `/readyz` (e.g. "starting", "broker down").
    pub not_ready_reason: Option<String>,
    /// Currently assigned partitions; a revoked partition disappears from the metrics.
    pub partitions: Vec<PartitionStatus>,
    /// Records written to the dead-letter topic since start.
    pub dead_letters_total: u64,
    /// Dead letters that could not be written (they were counted and dropped).
    pub dead_letter_errors_total: u64,
    /// Copies of records the repartition stage produced again (after a crash or a
    /// rebalance of its group), recognised and dropped since start.
    pub repeats_dropped_total: u64,
    /// Unix time (ms) of the latest accepted event; when `None` the snapshot's
    /// `last_event_at` is used.
    pub last_event_unix_ms: Option<i64>,
    /// Checkpoints of the state, when a state directory is configured.
    pub checkpoint: Option<CheckpointStatus>,
    /// How long the latest snapshot took: the workers' summaries (they apply no events
    /// meanwhile) and merging them.
    pub snapshot_seconds: Option<f64>,
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

/// The checkpoint writer's record since start.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CheckpointStatus {
    pub written_total: u64,
    pub failed_total: u64,
    /// Unix time (ms) the latest durable checkpoint was taken.
    pub last_success_unix_ms: Option<i64>,
    pub last_bytes: u64,
    /// How long ingestion stood still while the state was copied, in seconds.
    pub last_pause_seconds: f64,
    /// How long encoding, writing and syncing the latest checkpoint took, in seconds.
    pub last_write_seconds: f64,
}
