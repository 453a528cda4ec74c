//! Offset commits: progress reports for lag tools, never the source of truth.
//!
//! The offsets committed are those of a durable checkpoint (or, without one, of what has
//! been applied), so the group's committed offsets never run ahead of restorable state.

use foldhash::HashSet;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::context::{PulseContext, partition_names};
use crate::state_store::Offsets;
use crate::topic_partition::TopicPartition;

/// rest, and this instance's older position would rewind the group's offset for it.
pub(super) fn commit(consumer: &StreamConsumer<PulseContext>, offsets: &Offsets, mode: CommitMode) {
    let owned: Option<HashSet<TopicPartition>> = consumer
        .assignment()
        .ok()
        .map(|list| partition_names(&list).into_iter().collect());
    let mut list = TopicPartitionList::new();
    for (at, offset) in offsets {
        if owned.as_ref().is_some_and(|owned| !owned.contains(at)) {
            continue;
        }
        if let Err(error) =
            list.add_partition_offset(&at.topic, at.partition, Offset::Offset(*offset))
        {
            tracing::warn!(%error, partition = %at, "Cannot build the commit list.");
        }
    }
    if list.count() == 0 {
        return;
    }
    if let Err(error) = consumer.commit(&list, mode) {
        tracing::warn!(%error, "Offset commit failed; it will be retried at the next refresh.");
    }
}
