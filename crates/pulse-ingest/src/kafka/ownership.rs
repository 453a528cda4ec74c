//! Partition ownership that follows the consumer group, when state is kept in a store
//! shared by the group's members.
//!
//! The rebalance callback (inside `recv()`) only records what the group decided; this
//! module carries it out from the consume loop, where the pipeline is:
//!
//! - **Assigned**: the partition is not handed to librdkafka yet (that is its pause). Its
//!   newest valid state is claimed and loaded on a task of its own, so the partitions
//!   already owned keep being read; once loaded, the state is installed (its ids remapped
//!   into this instance's registries) and the partition is assigned at the offset the state
//!   records — or, if no member ever saved it, at the group's committed offset or where
//!   `auto.offset.reset` says. librdkafka waits for that assign call to complete the
//!   rebalance, which is what lets the load happen off the callback.
//! - **Revoked**: everything routed of it is applied, its final checkpoint is written within
//!   [`REVOKE_BUDGET`] (so the next owner resumes exactly there), its state is dropped, and
//!   only then is it unassigned.
//! - **Lost** (the session expired: another member may own it already): the state is
//!   dropped and nothing is written.
//! - **Fenced** (a save was refused because a newer owner claimed it, e.g. after this
//!   process was paused past its session timeout): the same as lost, for that partition
//!   alone; the rest of the process goes on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldhash::HashSet;
use rdkafka::consumer::{CommitMode, Consumer, RebalanceProtocol, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use super::KafkaSourceError;
use super::commits::commit;
use super::consume::Durability;
use super::context::{PulseContext, Shared};
use super::resume::Resume;
use super::watermarks::PartitionWatermarks;
use crate::partition_numbers::PartitionNumbers;
use crate::pipeline::Pipeline;
use crate::state_store::{Offsets, StateStoreError, Taken};
use crate::topic_partition::TopicPartition;

/// How long a revoked partition's final checkpoint may take. The rebalance waits for it
/// (the next owner must find it), and the group gives a member `max.poll.interval.ms`
/// (5 min by default) before it counts as gone; past the budget the partition is given up
/// with its previous checkpoint, which is safe (the next owner re-reads from there), only
/// slower.
pub(super) const REVOKE_BUDGET: Duration = Duration::from_secs(30);

/// A partition claimed and loaded, and where it starts.
struct Loaded {
    key: TopicPartition,
    taken: Option<Taken>,
    /// The group's committed offset, or the end `auto.offset.reset` names, for a partition
    /// whose state records none.
    fallback: Option<i64>,
}

type Loading = JoinHandle<(Vec<TopicPartition>, Result<Vec<Loaded>, StateStoreError>)>;

/// The partitions this instance owns (their state installed) and those it is loading.
#[derive(Default)]
pub(super) struct Ownership {
    owned: HashSet<TopicPartition>,
    loading: Vec<Loading>,
    /// Assigned, but a load failed: tried again on the next call.
    retry: Vec<TopicPartition>,
    /// Revoked while loading: the load's result is given back, not installed.
    cancelled: HashSet<TopicPartition>,
}

impl Ownership {
    /// The positions of the partitions whose state is here: what a checkpoint may save.
    pub(super) fn owned_offsets(&self, positions: &Offsets) -> Offsets {
        positions
            .iter()
            .filter(|(key, _)| self.owned.contains(*key))
            .map(|(key, offset)| (key.clone(), *offset))
            .collect()
    }

    pub(super) fn owns(&self, key: &TopicPartition) -> bool {
        self.owned.contains(key)
    }

    /// Carries out what rebalances decided since the last call: revocations first (their
    /// final checkpoints), then assignments (loads started, finished ones installed).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn follow(
        &mut self,
        consumer: &Arc<StreamConsumer<PulseContext>>,
        shared: &Mutex<Shared>,
        pipeline: &mut Pipeline,
        numbers: &mut PartitionNumbers,
        durable: &mut Durability,
        resume: &mut Resume,
        watermarks: &mut PartitionWatermarks,
    ) -> Result<(), KafkaSourceError> {
        let (revoked, assigned) = {
            let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
            (
                std::mem::take(&mut shared.revoked),
                std::mem::take(&mut shared.assigned),
            )
        };
        if !revoked.is_empty() {
            self.give_up(consumer, pipeline, numbers, durable, revoked)
                .await?;
        }
        let mut start: Vec<TopicPartition> = std::mem::take(&mut self.retry);
        start.extend(assigned);
        if !start.is_empty() {
            let store = durable.checkpointer.store().clone();
            let consumer = consumer.clone();
            self.loading.push(tokio::spawn(async move {
                let loaded = load(&store, &consumer, &start).await;
                (start, loaded)
            }));
        }
        while let Some(at) = self.loading.iter().position(JoinHandle::is_finished) {
            let (keys, loaded) = match self.loading.swap_remove(at).await {
                Ok(done) => done,
                Err(error) => {
                    tracing::error!(%error, "A partition load crashed.");
                    continue;
                }
            };
            match loaded {
                Ok(loaded) => {
                    self.take_over(
                        consumer, pipeline, numbers, durable, resume, watermarks, loaded,
                    )
                    .await?
                }
                Err(error) => {
                    tracing::warn!(%error, partitions = ?keys, "Cannot load the assigned partitions' state; trying again.");
                    self.retry.extend(keys);
                }
            }
        }
        Ok(())
    }

    /// Installs loaded partitions and assigns them at their offsets.
    #[allow(clippy::too_many_arguments)]
    async fn take_over(
        &mut self,
        consumer: &StreamConsumer<PulseContext>,
        pipeline: &mut Pipeline,
        numbers: &mut PartitionNumbers,
        durable: &mut Durability,
        resume: &mut Resume,
        watermarks: &mut PartitionWatermarks,
        loaded: Vec<Loaded>,
    ) -> Result<(), KafkaSourceError> {
        let mut list = TopicPartitionList::new();
        for Loaded {
            key,
            taken,
            fallback,
        } in loaded
        {
            if self.cancelled.remove(&key) {
                durable.checkpointer.store().release(&key);
                continue;
            }
            let number = numbers.number_of(&key);
            let mut offset = fallback;
            if let Some(taken) = taken {
                durable.check_saved_size(&key, taken.topic_partitions)?;
                offset = taken.offset.or(fallback);
                if let Some(state) = taken.state {
                    pipeline.install(number, &taken.router, state).await?;
                }
                tracing::info!(partition = %key, offset, epoch = taken.epoch, "Partition state loaded.");
            } else {
                tracing::info!(partition = %key, offset, "Partition has no saved state; starting it empty.");
            }
            let context = consumer.context();
            let mut positions = context.positions.lock().unwrap_or_else(|e| e.into_inner());
            match offset {
                Some(offset) => {
                    positions.insert(key.clone(), offset);
                    resume.rearm(key.clone(), offset);
                }
                None => {
                    positions.remove(&key);
                }
            }
            drop(positions);
            watermarks.forget_end(&key);
            let start = offset.map_or(Offset::Invalid, Offset::Offset);
            if let Err(error) = list.add_partition_offset(&key.topic, key.partition, start) {
                tracing::warn!(%error, partition = %key, "Cannot start the partition at its saved offset.");
            }
            self.owned.insert(key);
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(&list),
            _ => {
                // Eager: the assignment is the whole set, given in one call.
                consumer.assign(&list)
            }
        };
        if let Err(error) = assigned {
            tracing::warn!(%error, "Cannot apply the partition assignment.");
        }
        Ok(())
    }

    /// Revoked or lost partitions: final checkpoints of those revoked (not of those lost),
    /// their state dropped, then unassigned.
    async fn give_up(
        &mut self,
        consumer: &StreamConsumer<PulseContext>,
        pipeline: &mut Pipeline,
        numbers: &mut PartitionNumbers,
        durable: &mut Durability,
        revoked: Vec<(TopicPartition, bool)>,
    ) -> Result<(), KafkaSourceError> {
        // Only what librdkafka was given: a partition still loading never was.
        let assigned = consumer
            .assignment()
            .map(|list| super::context::partition_names(&list))
            .unwrap_or_default();
        let mut list = TopicPartitionList::new();
        for (key, lost) in revoked {
            if assigned.contains(&key) {
                list.add_partition(&key.topic, key.partition);
            }
            if !self.owned.contains(&key) {
                // Still loading (its load is given back when done), or dropped already.
                if let Some(at) = self.retry.iter().position(|k| *k == key) {
                    self.retry.swap_remove(at);
                } else if !assigned.contains(&key) {
                    self.cancelled.insert(key);
                }
                continue;
            }
            let state = pipeline.release(numbers.number_of(&key)).await?;
            let position = consumer.context().positions().get(&key).copied();
            if lost {
                tracing::warn!(partition = %key, "Partition lost (the session expired); dropping its state unsaved.");
            } else if let Some(position) = position {
                let offsets: Offsets = [(key.clone(), position)].into();
                let save = durable
                    .checkpointer
                    .save_now(state, numbers.clone(), offsets);
                match tokio::time::timeout(REVOKE_BUDGET, save).await {
                    Ok(Some(written)) => {
                        commit(consumer, &written, CommitMode::Async);
                        tracing::info!(partition = %key, offset = position, "Partition revoked; final checkpoint written.");
                    }
                    Ok(None) => {
                        tracing::warn!(partition = %key, "Partition revoked; its final checkpoint failed, the previous one stands.");
                    }
                    Err(_) => {
                        tracing::warn!(partition = %key, budget = ?REVOKE_BUDGET, "Partition revoked; its final checkpoint ran out of time, the previous one stands.");
                    }
                }
            }
            self.forget(consumer, &key);
        }
        let unassigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(&list),
            _ => consumer.unassign(),
        };
        if let Err(error) = unassigned {
            tracing::warn!(%error, "Cannot give the partitions up.");
        }
        Ok(())
    }

    /// A save of `key` was refused: another member owns it now. Its state is dropped and its
    /// records are no longer applied; the group's next rebalance takes it away.
    pub(super) async fn drop_fenced(
        &mut self,
        consumer: &StreamConsumer<PulseContext>,
        pipeline: &mut Pipeline,
        numbers: &mut PartitionNumbers,
        key: &TopicPartition,
    ) -> Result<(), KafkaSourceError> {
        if !self.owned.contains(key) {
            return Ok(());
        }
        tracing::warn!(partition = %key, "Another member owns the partition now; dropping it here.");
        pipeline.release(numbers.number_of(key)).await?;
        let mut list = TopicPartitionList::new();
        list.add_partition(&key.topic, key.partition);
        if let Err(error) = consumer.pause(&list) {
            tracing::warn!(%error, partition = %key, "Cannot pause the partition.");
        }
        self.forget(consumer, key);
        Ok(())
    }

    fn forget(&mut self, consumer: &StreamConsumer<PulseContext>, key: &TopicPartition) {
        self.owned.remove(key);
        consumer
            .context()
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Claims and loads `keys` (off the consume loop), and for those without a saved offset
/// finds where the group says they start.
async fn load(
    store: &crate::state_store::StateStore,
    consumer: &Arc<StreamConsumer<PulseContext>>,
    keys: &[TopicPartition],
) -> Result<Vec<Loaded>, StateStoreError> {
    let mut loaded = Vec::with_capacity(keys.len());
    for key in keys {
        let taken = store.claim(key).await?;
        loaded.push((key.clone(), taken));
    }
    let unknown: Vec<TopicPartition> = loaded
        .iter()
        .filter(|(_, taken)| taken.as_ref().and_then(|t| t.offset).is_none())
        .map(|(key, _)| key.clone())
        .collect();
    let consumer = consumer.clone();
    let starts = tokio::task::spawn_blocking(move || {
        consumer
            .context()
            .group_positions(consumer.as_ref(), &unknown)
    })
    .await
    .unwrap_or_default();
    Ok(loaded
        .into_iter()
        .map(|(key, taken)| Loaded {
            fallback: starts.get(&key).copied(),
            key,
            taken,
        })
        .collect())
}
