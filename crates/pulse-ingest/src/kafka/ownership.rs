//! Partition ownership that follows the consumer group, when state is kept in a store
//! shared by the group's members.
//!
//! The rebalance callback (inside `recv()`) only records what the group decided; this
//! module carries it out from the consume loop, where the pipeline is:
//!
//! - **Assigned**: the partition is not handed to librdkafka yet (that is its pause). Its
//!   newest valid state is claimed and loaded on a task of its own ([`super::loads`]; the
//!   partitions of one assignment load side by side), so the partitions already owned keep
//!   being read; once loaded, the state is installed (its ids remapped
//!   into this instance's registries) and the partition is assigned at the offset the state
//!   records — or, if no member ever saved it, at the group's committed offset or where
//!   `auto.offset.reset` says. librdkafka waits for that assign call to complete the
//!   rebalance, which is what lets the load happen off the callback.
//! - **Revoked** while still loading: the load is ended (a claim under way is let land,
//!   then released) and nothing of it is installed (see [`super::loads`]).
//! - **Revoked**: everything routed of it is applied, its final checkpoint is written within
//!   [`REVOKE_BUDGET`] (so the next owner resumes exactly there), its state is dropped, and
//!   only then is it unassigned.
//! - **Lost** (the session expired: another member may own it already): the state is
//!   dropped and nothing is written.
//! - **Fenced** (a save was refused because a newer owner claimed it, e.g. after this
//!   process was paused past its session timeout): the same as lost, for that partition
//!   alone; the rest of the process goes on. The group then takes it away, as it gave it
//!   to the newer owner. If a session timeout later the group still assigns it here, the
//!   claim that fenced this member was a stale one's (a member that was paused while
//!   claiming, and has since learnt that it is out): the partition is claimed again and
//!   loaded from its newest checkpoint, whoever wrote it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashSet};
use rdkafka::consumer::{CommitMode, Consumer, RebalanceProtocol, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaSourceError;
use super::commits::commit;
use super::consume::Durability;
use super::context::{PulseContext, Shared};
use super::loads::{Fallback, Loaded, Loads};
use super::resume::Resume;
use super::watermarks::PartitionWatermarks;
use crate::partition_numbers::PartitionNumbers;
use crate::pipeline::Pipeline;
use crate::state_store::{Offsets, StateStore};
use crate::topic_partition::TopicPartition;

/// How long a revoked partition's final checkpoint may take. The rebalance waits for it
/// (the next owner must find it), and the group gives a member `max.poll.interval.ms`
/// (5 min by default) before it counts as gone; past the budget the partition is given up
/// with its previous checkpoint, which is safe (the next owner re-reads from there), only
/// slower.
pub(super) const REVOKE_BUDGET: Duration = Duration::from_secs(30);

/// The partitions this instance owns (their state installed) and those it is loading.
pub(super) struct Ownership {
    owned: HashSet<TopicPartition>,
    loads: Loads,
    /// Assigned, but a load failed: tried again on the next call.
    retry: Vec<TopicPartition>,
    /// Paused here after a refused save. librdkafka keeps a partition's pause across its
    /// unassignment (librdkafka issue 1849), so one the group gives back is resumed when
    /// assigned again, or it would never be read.
    paused: HashSet<TopicPartition>,
    /// Dropped after a refused save, and when: claimed again if the group still assigns
    /// them here [`Self::reclaim_after`] later.
    fenced: HashMap<TopicPartition, Instant>,
    /// The consumer's session timeout: by then a member that claimed while it was out of
    /// the group (paused) has been told so, and a claim here is no longer contested.
    reclaim_after: Duration,
}

impl Ownership {
    pub(super) fn new(reclaim_after: Duration) -> Ownership {
        Ownership {
            owned: HashSet::default(),
            loads: Loads::default(),
            retry: Vec::new(),
            paused: HashSet::default(),
            fenced: HashMap::default(),
            reclaim_after,
        }
    }

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
        start.extend(self.still_assigned_after_fencing(consumer));
        if !start.is_empty() {
            let store = durable.checkpointer.store().clone();
            let looked_up = consumer.clone();
            let fallback: Fallback = Arc::new(move |key| {
                let context = looked_up.context();
                let starts = context.group_positions(looked_up.as_ref(), std::slice::from_ref(key));
                starts.get(key).copied()
            });
            for key in start {
                self.loads.start(&store, key, fallback.clone());
            }
        }
        let mut loaded = Vec::new();
        for (key, done) in self.loads.finished().await {
            match done {
                Some(done) => loaded.push(done),
                None => self.retry.push(key),
            }
        }
        if !loaded.is_empty() {
            self.take_over(
                consumer, pipeline, numbers, durable, resume, watermarks, loaded,
            )
            .await?;
        }
        Ok(())
    }

    /// Fenced partitions the group has not taken away a session timeout later: this member
    /// still owns them as far as the group knows, and the claim above its own was a stale
    /// member's. They are unassigned here (and paused still) to be claimed, loaded and
    /// assigned again as any assigned partition is.
    fn still_assigned_after_fencing(
        &mut self,
        consumer: &StreamConsumer<PulseContext>,
    ) -> Vec<TopicPartition> {
        let due: Vec<TopicPartition> = self
            .fenced
            .iter()
            .filter(|(_, since)| since.elapsed() >= self.reclaim_after)
            .map(|(key, _)| key.clone())
            .collect();
        if due.is_empty() {
            return due;
        }
        let assigned = consumer
            .assignment()
            .map(|list| super::context::partition_names(&list))
            .unwrap_or_default();
        let mut again = Vec::new();
        let mut list = TopicPartitionList::new();
        for key in due {
            self.fenced.remove(&key);
            if assigned.contains(&key) {
                tracing::warn!(partition = %key, after = ?self.reclaim_after, "The group still assigns the partition here after another instance's claim refused a save of it; claiming it again. (If this repeats, another consumer group uses the same state location.)");
                list.add_partition(&key.topic, key.partition);
                again.push(key);
            }
        }
        // Eager: the assign call after the load replaces the whole assignment anyway.
        if !again.is_empty()
            && matches!(
                consumer.rebalance_protocol(),
                RebalanceProtocol::Cooperative
            )
            && let Err(error) = consumer.incremental_unassign(&list)
        {
            tracing::warn!(%error, "Cannot unassign the partitions to claim again.");
        }
        again
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
            if self.paused.remove(&key) {
                let mut list = TopicPartitionList::new();
                list.add_partition(&key.topic, key.partition);
                // Before the assignment: a pause or resume right after one can make
                // librdkafka drop the assignment's offset (librdkafka issue 2190).
                if let Err(error) = consumer.resume(&list) {
                    tracing::warn!(%error, partition = %key, "Cannot resume the partition.");
                }
            }
            let start = offset.map_or(Offset::Invalid, Offset::Offset);
            if let Err(error) = list.add_partition_offset(&key.topic, key.partition, start) {
                tracing::warn!(%error, partition = %key, "Cannot start the partition at its saved offset.");
            }
            self.owned.insert(key);
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(&list),
            _ => {
                // Eager: an assign call replaces the whole assignment, so the partitions
                // read here already stay in it, at their positions.
                let positions = consumer.context().positions();
                let current = consumer
                    .assignment()
                    .map(|l| super::context::partition_names(&l))
                    .unwrap_or_default();
                for key in current {
                    if list.find_partition(&key.topic, key.partition).is_some() {
                        // Claimed again after a refused save: at the offset just loaded.
                        continue;
                    }
                    let at = positions
                        .get(&key)
                        .map_or(Offset::Invalid, |&o| Offset::Offset(o));
                    if let Err(error) = list.add_partition_offset(&key.topic, key.partition, at) {
                        tracing::warn!(%error, partition = %key, "Cannot keep the partition assigned.");
                    }
                }
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
            self.fenced.remove(&key);
            if assigned.contains(&key) {
                list.add_partition(&key.topic, key.partition);
            }
            if !self.owned.contains(&key) {
                // Still loading (stopped, nothing of it installed), waiting to be loaded
                // again, or dropped already.
                if !self.loads.cancel(durable.checkpointer.store(), &key).await {
                    self.retry.retain(|k| *k != key);
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
            durable.checkpointer.store().release(&key);
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
    /// records are no longer applied; the group's next rebalance takes it away. Unless `store`
    /// holds a claim on it again: the refused save was one made before the partition was
    /// lost and given back here (a process paused past its session timeout), and the
    /// state here is the new claim's.
    pub(super) async fn drop_fenced(
        &mut self,
        consumer: &StreamConsumer<PulseContext>,
        pipeline: &mut Pipeline,
        numbers: &mut PartitionNumbers,
        store: &StateStore,
        watermarks: &mut PartitionWatermarks,
        key: &TopicPartition,
    ) -> Result<(), KafkaSourceError> {
        if !self.owned.contains(key) {
            return Ok(());
        }
        if let Some(epoch) = store.epoch(key) {
            tracing::info!(partition = %key, epoch, "A save refused under an earlier claim; the partition is claimed here again, keeping it.");
            return Ok(());
        }
        tracing::warn!(partition = %key, "Another member owns the partition now; dropping it here.");
        pipeline.release(numbers.number_of(key)).await?;
        let mut list = TopicPartitionList::new();
        list.add_partition(&key.topic, key.partition);
        if let Err(error) = consumer.pause(&list) {
            tracing::warn!(%error, partition = %key, "Cannot pause the partition.");
        }
        self.paused.insert(key.clone());
        self.fenced.insert(key.clone(), Instant::now());
        // Read to its end no more: what arrives in it now waits unread (for the new owner,
        // or for this member if the group gives it back), and sessions must wait for it.
        watermarks.forget_end(key);
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
