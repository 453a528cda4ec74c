//! [`Published`]: the latest snapshot and ingest status, as one consistent pair.
//!
//! The [`Exporter`](crate::Exporter) writes it; the collector and the HTTP handlers read it.
//! It has a module of its own so that both sides depend on it and not on each other.

use std::sync::{Arc, Mutex, PoisonError};

use pulse_core::KpiSnapshot;

use crate::{BuildInfo, IngestStatus};

/// What the collector and the HTTP handlers read; written only through [`Exporter`].
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) build: BuildInfo,
    latest: Mutex<Latest>,
}

#[derive(Debug, Default)]
struct Latest {
    snapshot: Option<Arc<KpiSnapshot>>,
    status: Arc<IngestStatus>,
}

impl Published {
    pub(crate) fn new(build: BuildInfo) -> Published {
        Published {
            build,
            latest: Mutex::new(Latest::default()),
        }
    }

    pub(crate) fn set_snapshot(&self, snapshot: KpiSnapshot) {
        let snapshot = Arc::new(snapshot);
        // The old snapshot is dropped after the lock is released, not under it.
        let _previous = self.lock().snapshot.replace(snapshot);
    }

    pub(crate) fn set_status(&self, status: IngestStatus) {
        let status = Arc::new(status);
        let _previous = std::mem::replace(&mut self.lock().status, status);
    }

    /// The latest snapshot (if any) and status, as one consistent pair.
    pub(crate) fn latest(&self) -> (Option<Arc<KpiSnapshot>>, Arc<IngestStatus>) {
        let latest = self.lock();
        (latest.snapshot.clone(), Arc::clone(&latest.status))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Latest> {
        // Values are only ever replaced whole, so a writer that panicked cannot have left a
        // half-updated one behind: a poisoned lock still holds consistent data.
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
