//! [`Exporter`]: the latest snapshot and ingest status, and the registry that renders them.
//!
//! The binary creates one `Exporter`, shares it as `Arc<Exporter>` between the engine loop
//! (which calls [`Exporter::publish`] and [`Exporter::set_status`]) and the HTTP server
//! (which reads). Dropping the last `Arc` drops the registry; nothing runs in the background.
//!
//! # Why a lock around `Arc`s rather than a lock-free cell
//! Writers replace whole values and readers clone two `Arc`s, so the mutex is held for a
//! few nanoseconds and never across an `.await` or an encoding. That is cheap enough at a
//! publish per second and a scrape every few seconds, and needs no extra dependency.
//!
//! # Why its own registry
//! Metrics go into a registry owned by the exporter, not prometheus' global default one, so
//! two exporters (tests, or a future multi-tenant binary) never collide, and `/metrics`
//! shows exactly pulse's metrics plus `process_*`.

use std::sync::Arc;

use prometheus::{Registry, TextEncoder};
use pulse_core::KpiSnapshot;

use crate::metrics::KpiCollector;
use crate::published::Published;
use crate::{BuildInfo, ExportError, IngestStatus};

/// Content type of [`Exporter::render_prometheus`]'s output (text exposition 0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Turns published snapshots into Prometheus metrics and JSON. `Send + Sync`; share it as
/// `Arc<Exporter>`.
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
    published: Arc<Published>,
}

impl Exporter {
    /// An exporter with no snapshot yet (KPI metrics absent, `/v1/metrics` 503) and the
    /// default status (not ready, broker down).
    pub fn new(build: BuildInfo) -> Result<Exporter, ExportError> {
        let published = Arc::new(Published::new(build));
        let registry = Registry::new();
        registry
            .register(Box::new(KpiCollector::new(Arc::clone(&published))?))
            .map_err(|source| ExportError::Register {
                collector: "pulse",
                source,
            })?;
        register_process_collector(&registry)?;
        Ok(Exporter {
            registry,
            published,
        })
    }

    /// Makes `snapshot` the one every later scrape and `/v1/metrics` request sees.
    pub fn publish(&self, snapshot: KpiSnapshot) {
        self.published.set_snapshot(snapshot);
    }

    /// Replaces the ingest status (readiness, broker, partitions, dead letters).
    pub fn set_status(&self, status: IngestStatus) {
        self.published.set_status(status);
    }

    /// Every metric in the Prometheus text exposition format
    /// ([`PROMETHEUS_CONTENT_TYPE`]).
    pub fn render_prometheus(&self) -> String {
        let families = self.registry.gather();
        let mut out = String::with_capacity(16 * 1024);
        if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut out) {
            // Unreachable with the families gather() returns (it drops empty ones), but a
            // scrape should still say what went wrong: a `#` line is a comment to parsers.
            out.push_str(&format!("# pulse-export: encoding failed: {error}\n"));
        }
        out
    }

    /// The latest snapshot as JSON (the README's shape), `None` before the first publish.
    pub fn snapshot_json(&self) -> Option<serde_json::Value> {
        let snapshot = self.latest_snapshot()?;
        // A snapshot is plain data with string map keys, so this cannot fail.
        serde_json::to_value(&*snapshot).ok()
    }

    pub(crate) fn latest_snapshot(&self) -> Option<Arc<KpiSnapshot>> {
        self.published.latest().0
    }

    pub(crate) fn status(&self) -> Arc<IngestStatus> {
        self.published.latest().1
    }
}

#[cfg(target_os = "linux")]
fn register_process_collector(registry: &Registry) -> Result<(), ExportError> {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry
        .register(Box::new(collector))
        .map_err(|source| ExportError::Register {
            collector: "process",
            source,
        })
}

/// prometheus' process collector reads `/proc`; elsewhere there are no `process_*` metrics.
#[cfg(not(target_os = "linux"))]
fn register_process_collector(_: &Registry) -> Result<(), ExportError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Exporter>();
        assert_send_sync::<Arc<Exporter>>();
    }

    #[test]
    fn a_scrape_keeps_the_snapshot_it_started_with() {
        let exporter = Exporter::new(BuildInfo {
            version: "v".into(),
            git_commit: "c".into(),
        })
        .expect("exporter");
        exporter.publish(KpiSnapshot {
            timezone: "UTC".into(),
            ..KpiSnapshot::default()
        });
        let held = exporter.latest_snapshot().expect("published");
        exporter.publish(KpiSnapshot {
            timezone: "Europe/Berlin".into(),
            ..KpiSnapshot::default()
        });
        assert_eq!(held.timezone, "UTC");
        assert_eq!(
            exporter.snapshot_json().expect("json")["timezone"],
            "Europe/Berlin"
        );
    }
}
