//! Periodic checkpoints: a copy of the state taken at a barrier, written off the ingest path.
//!
//! Taking the copy is the only pause ingestion sees (the workers clone their partitions' state at the
//! barrier); encoding and writing (fsyncing, or uploading to object storage) run on another
//! task while consumption goes on. One checkpoint is in flight at a time. The offsets a checkpoint holds are handed back
//! only once it is durable: those, and only those, may be committed to Kafka, so the group's
//! committed offsets never run ahead of a state that could be restored.

use std::time::{Duration, Instant};

use pulse_core::EngineState;
use pulse_core::status::CheckpointStatus;
use tokio::task::JoinError;

use crate::clock::wall_ms;
use crate::partition_numbers::PartitionNumbers;
use crate::periodic::Periodic;
use crate::state_store::{Offsets, StateStore, StateStoreError, TopicSizes};
use crate::topic_partition::TopicPartition;

type Written = (Offsets, Result<u64, StateStoreError>, Duration, i64);

#[derive(Debug)]
pub struct Checkpointer {
    store: StateStore,
    job: Periodic<Written>,
    status: CheckpointStatus,
    /// Each topic's partition count, once the broker has said: saved with every partition,
    /// so that its state is never mixed across a partition-count change.
    sizes: TopicSizes,
    /// Set when a save was refused because another instance owns a partition now.
    lost: Option<StateStoreError>,
}

impl Checkpointer {
    pub fn new(store: StateStore, interval: Duration) -> Checkpointer {
        Checkpointer {
            store,
            job: Periodic::new(interval),
            status: CheckpointStatus::default(),
            sizes: TopicSizes::new(),
            lost: None,
        }
    }

    /// The refusal of a save because another instance took a partition over, once. An
    /// instance alone on its state stops; a member of a group drops the partitions
    /// [`StateStore::take_refused`] names (their state can never be saved again here;
    /// consuming them would only delay the new owner) and goes on with the rest.
    pub fn take_lost(&mut self) -> Option<StateStoreError> {
        self.lost.take()
    }

    /// Where checkpoints go (shared with whoever claims and releases partitions).
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Records the topics' partition counts for the checkpoints to come.
    pub fn set_topic_sizes(&mut self, sizes: TopicSizes) {
        self.sizes = sizes;
    }

    pub fn status(&self) -> &CheckpointStatus {
        &self.status
    }

    /// See [`StateStore::epoch`].
    pub fn epoch(&self, partition: &TopicPartition) -> Option<u64> {
        self.store.epoch(partition)
    }

    /// Whether it is time for the next checkpoint (and none is being written).
    pub fn due(&self) -> bool {
        self.job.due()
    }

    /// Starts writing `state`, which holds exactly the records before `offsets`, its
    /// partitions named by `numbers`; `pause` is how long taking the copy stalled ingestion.
    pub fn start(
        &mut self,
        state: EngineState,
        numbers: PartitionNumbers,
        offsets: Offsets,
        pause: Duration,
    ) {
        self.status.last_pause_seconds = pause.as_secs_f64();
        let store = self.store.clone();
        let sizes = self.sizes.clone();
        let taken_at = wall_ms();
        self.job.start(async move {
            let started = Instant::now();
            let result = store
                .save(state, &numbers, &offsets, &sizes, taken_at)
                .await;
            (offsets, result, started.elapsed(), taken_at)
        });
    }

    /// The offsets of a checkpoint that has become durable since the last call, if any.
    pub async fn poll(&mut self) -> Option<Offsets> {
        let finished = self.job.poll().await?;
        self.collect(finished)
    }

    /// Waits for the checkpoint in flight; its offsets if it became durable.
    pub async fn finish(&mut self) -> Option<Offsets> {
        let finished = self.job.wait().await?;
        self.collect(finished)
    }

    fn collect(&mut self, finished: Result<Written, JoinError>) -> Option<Offsets> {
        match finished {
            Ok((offsets, result, took, taken_at)) => self.record(offsets, result, took, taken_at),
            Err(error) => {
                self.status.failed_total += 1;
                tracing::error!(%error, "The checkpoint writer crashed.");
                None
            }
        }
    }

    /// Writes a checkpoint now and waits for it (a clean stop).
    pub async fn save_now(
        &mut self,
        state: EngineState,
        numbers: PartitionNumbers,
        offsets: Offsets,
    ) -> Option<Offsets> {
        self.finish().await;
        self.start(state, numbers, offsets, Duration::ZERO);
        self.finish().await
    }

    fn record(
        &mut self,
        offsets: Offsets,
        result: Result<u64, StateStoreError>,
        took: Duration,
        taken_at: i64,
    ) -> Option<Offsets> {
        match result {
            Ok(bytes) => {
                self.status.written_total += 1;
                self.status.last_success_unix_ms = Some(taken_at);
                self.status.last_write_seconds = took.as_secs_f64();
                self.status.last_bytes = bytes;
                tracing::debug!(
                    location = self.store.location(),
                    bytes,
                    "Checkpoint written."
                );
                Some(offsets)
            }
            Err(error) => {
                self.status.failed_total += 1;
                tracing::error!(%error, "Checkpoint failed; the previous one stays in place and offsets are not committed past it.");
                if matches!(
                    error,
                    StateStoreError::Fenced { .. } | StateStoreError::NotLoaded { .. }
                ) {
                    self.lost = Some(error);
                }
                None
            }
        }
    }
}
