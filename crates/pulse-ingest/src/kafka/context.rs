//! The consumer's context: librdkafka's callbacks (rebalance, statistics, errors) and this
//! instance's position in every partition it has read.
//!
//! The callbacks run inside `recv()` or on librdkafka's threads; what they learn reaches the
//! consume loop through [`Shared`] and the `assignment_changed` flag, never by blocking it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::watermarks::EndCheck;
use crate::state_store::Offsets;
use crate::topic_partition::TopicPartition;

/// Lag and errors reported by librdkafka's callbacks, and what the broker probe learned.
#[derive(Default)]
pub(super) struct Shared {
    /// (topic, partition) → high watermark, from the statistics callback.
    pub high_watermarks: HashMap<TopicPartition, i64>,
    pub last_error: Option<String>,
    /// Every partition of the subscribed topics, from the broker probe's metadata.
    pub topic_partitions: Vec<TopicPartition>,
    /// Partitions assigned by a rebalance since the consume loop last looked.
    pub newly_assigned: Vec<TopicPartition>,
    /// Ends of partitions the consume loop doubts, for the broker probe to check.
    pub ends_to_check: Vec<EndCheck>,
    /// Ends the broker confirmed: the partition and the doubt the check answered.
    pub confirmed_ends: Vec<(TopicPartition, Instant)>,
    /// When partitions follow the group: assigned, for the consume loop to load and assign.
    pub assigned: Vec<TopicPartition>,
    /// When partitions follow the group: revoked (`true`: lost), for the consume loop to
    /// checkpoint (unless lost), drop and unassign.
    pub revoked: Vec<(TopicPartition, bool)>,
}

/// What librdkafka calls back with, and this instance's positions.
pub(super) struct PulseContext {
    pub shared: Arc<Mutex<Shared>>,
    /// Set by every assignment and revocation, so that the loop need not lock per record.
    pub assignment_changed: AtomicBool,
    /// Per partition, the next offset after the records this instance has routed: where a
    /// partition assigned (again) starts. librdkafka would start it at the group's
    /// committed offset, which is behind (offsets are committed with checkpoints only) or
    /// ahead (another group member read on meanwhile).
    pub positions: Mutex<Offsets>,
    /// `auto.offset.reset = latest`: a partition without a committed offset starts at its end.
    pub from_end: bool,
    /// Partition state follows the group (a shared state store): assignments and
    /// revocations are carried out by the consume loop (`ownership`), not here.
    pub follows_group: bool,
    /// Set once the loop is stopping: the revocation at close is librdkafka's to finish.
    pub stopping: AtomicBool,
}

/// For the broker lookups inside a rebalance.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

impl PulseContext {
    pub(super) fn positions(&self) -> Offsets {
        self.positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where each of `assigned` starts: this instance's position if it has one, else the
    /// group's committed offset, else the end `auto.offset.reset` names. The last two are
    /// resolved to numbers now and kept as positions: a partition taken away before its
    /// first record must come back here, not where another member left it.
    fn starting_positions(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &[TopicPartition],
    ) -> Offsets {
        let unknown: Vec<TopicPartition> = {
            let positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
            assigned
                .iter()
                .filter(|p| !positions.contains_key(*p))
                .cloned()
                .collect()
        };
        let found = self.group_positions(consumer, &unknown);
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        positions.extend(found);
        positions.clone()
    }

    /// Where the group says each of `partitions` starts: its committed offset, else the
    /// end `auto.offset.reset` names (a partition neither answers for is left out, for
    /// librdkafka to place).
    pub(super) fn group_positions(
        &self,
        consumer: &impl Consumer<Self>,
        partitions: &[TopicPartition],
    ) -> Offsets {
        let mut positions = Offsets::new();
        if partitions.is_empty() {
            return positions;
        }
        let mut list = TopicPartitionList::new();
        for at in partitions {
            list.add_partition(&at.topic, at.partition);
        }
        let committed = consumer.committed_offsets(list, LOOKUP_TIMEOUT);
        if let Err(error) = &committed {
            tracing::warn!(%error, "Cannot read the group's committed offsets.");
        }
        for at in partitions {
            let (topic, partition) = (at.topic.as_str(), at.partition);
            let committed = committed
                .as_ref()
                .ok()
                .and_then(|list| list.find_partition(topic, partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            let start = committed.or_else(|| {
                consumer
                    .fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
                    .map(|(low, high)| if self.from_end { high } else { low })
                    .inspect_err(|error| tracing::warn!(%error, topic, partition, "Cannot read the partition's offsets; librdkafka picks the start."))
                    .ok()
            });
            if let Some(start) = start {
                positions.insert(at.clone(), start);
            }
        }
        positions
    }

    /// Moves the position past the record at `offset`; `false` if this instance has applied
    /// that record already. Whatever makes librdkafka deliver a partition again from an
    /// older offset (an offset reset after the broker lost data, say), no record is applied
    /// twice.
    pub(super) fn claim(&self, partition: &TopicPartition, offset: i64) -> bool {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by reference: the key is cloned only for a partition's first record.
        match positions.get_mut(partition) {
            Some(next) if offset < *next => false,
            Some(next) => {
                *next = offset + 1;
                true
            }
            None => {
                positions.insert(partition.clone(), offset + 1);
                true
            }
        }
    }

    /// `None` if the assignment is unchanged since the last call, else the partitions
    /// assigned since then (none if partitions were only revoked).
    pub(super) fn take_assignment_change(&self) -> Option<Vec<TopicPartition>> {
        if !self.assignment_changed.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        Some(std::mem::take(&mut shared.newly_assigned))
    }
}

impl ClientContext for PulseContext {
    fn stats(&self, statistics: Statistics) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.hi_offset >= 0 {
                    shared
                        .high_watermarks
                        .insert(TopicPartition::new(topic.as_str(), partition), p.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return; // Reaching the end of a partition is news for the consume loop, not an error.
        }
        tracing::warn!(%error, reason, "Kafka client error.");
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        // "All brokers are down" follows the error that took each one down (a refused
        // connection, a failed TLS handshake or SASL login): that one stays the reason.
        let summary = matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown));
        if summary && shared.last_error.is_some() {
            return;
        }
        shared.last_error = Some(format!("{error}: {reason}"));
    }
}

pub(super) fn partition_names(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ConsumerContext for PulseContext {
    /// When partition state follows the group, only records the change for the consume
    /// loop to carry out (`ownership`): loading a state or writing a final checkpoint cannot
    /// happen here, and librdkafka completes the rebalance when the loop's (un)assign call
    /// comes. Otherwise librdkafka's default handling (eager or cooperative), except that
    /// partitions this instance has read before start at its own positions. Runs inside `recv()`; the
    /// consume loop learns of the change before it handles the next record. A revocation
    /// must reach the session watermark at once: a partition still counted as ours and read
    /// to its end would let the watermark pass records it has not read yet.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let names = partition_names(partitions);
        // An empty change has nothing to load or save: completed here (librdkafka waits
        // for the (un)assign call, empty or not, before the group moves on).
        if self.follows_group && !names.is_empty() && !self.stopping.load(Ordering::Acquire) {
            let lost = consumer.assignment_lost();
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            match error {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                    tracing::info!(partitions = ?names, cooperative, "Partitions assigned; loading their state.");
                    shared.assigned.extend(names);
                    drop(shared);
                    self.assignment_changed.store(true, Ordering::Release);
                    return;
                }
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                    tracing::info!(partitions = ?names, cooperative, lost, "Partitions revoked.");
                    shared.revoked.extend(names.into_iter().map(|n| (n, lost)));
                    drop(shared);
                    self.assignment_changed.store(true, Ordering::Release);
                    return;
                }
                _ => {}
            }
        }
        let applied = match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self.starting_positions(consumer, &names);
                for at in &names {
                    if let Some(&next) = positions.get(at)
                        && let Err(error) = partitions.set_partition_offset(
                            &at.topic,
                            at.partition,
                            Offset::Offset(next),
                        )
                    {
                        tracing::warn!(%error, partition = %at, "Cannot start the partition at this instance's position.");
                    }
                }
                tracing::info!(partitions = ?names, cooperative, "Partitions assigned.");
                let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                shared.newly_assigned.extend(names);
                drop(shared);
                if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = ?names, cooperative, "Partitions revoked.");
                if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                let code = RDKafkaErrorCode::from(other);
                tracing::warn!(error = %code, "Rebalance failed; giving up the assignment.");
                consumer.unassign()
            }
        };
        if let Err(error) = applied {
            tracing::warn!(%error, "Cannot apply the partition assignment.");
        }
        self.assignment_changed.store(true, Ordering::Release);
    }
}
