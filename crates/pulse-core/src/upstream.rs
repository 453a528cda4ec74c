//! Records copied from upstream partitions: which of them a partition has applied, so that
//! a second copy of one is recognised and not counted again.
//!
//! A topic filled by a copying stage (pulse's `kafka.repartition`) receives the records of
//! many upstream partitions, each stamped with where it came from (its [`UpstreamPosition`]).
//! The stage copies one upstream partition in its order, and after a crash or a hand-over
//! copies again from a committed position at or before what it had copied, so within one
//! partition of the copy the positions of one upstream partition only ever go up, except
//! for such repeats. The highest position applied per upstream partition is therefore all
//! it takes to tell a repeat from a new record (why that holds with two copiers at once is
//! the stage's to argue: `pulse_ingest::kafka::repartition`). It is part of the partition's
//! state ([`crate::partition::PartitionInputs`]), saved, restored and handed over with it,
//! so that the copy resumed from a checkpoint knows exactly what that state holds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a copied record sits upstream: its message's offset, and its index among the
/// records of that message (a message may carry several, see [`crate::message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UpstreamPosition {
    pub offset: i64,
    pub index: u32,
}

/// The highest position applied, per upstream topic and partition. Bounded by the number of
/// upstream partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedUpstream(BTreeMap<String, BTreeMap<i32, UpstreamPosition>>);

impl AppliedUpstream {
    /// Notes the copy of `topic`/`partition` at `at` as applied, unless a copy at or past `at`
    /// was applied before: then it is a repeat, and `false` says to drop it.
    pub fn first_copy(&mut self, topic: &str, partition: i32, at: UpstreamPosition) -> bool {
        // The topic's name is copied only the first time it is seen.
        if let Some(partitions) = self.0.get_mut(topic) {
            return match partitions.get_mut(&partition) {
                Some(highest) if *highest >= at => false,
                Some(highest) => {
                    *highest = at;
                    true
                }
                None => {
                    partitions.insert(partition, at);
                    true
                }
            };
        }
        self.0
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, at);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64, index: u32) -> UpstreamPosition {
        UpstreamPosition { offset, index }
    }

    #[test]
    fn a_position_at_or_below_the_highest_applied_is_a_repeat() {
        let mut applied = AppliedUpstream::default();
        assert!(applied.first_copy("input", 0, at(10, 0)));
        assert!(applied.first_copy("input", 0, at(10, 1)));
        assert!(applied.first_copy("input", 0, at(12, 0)));
        // The stage started again from offset 10: all three are repeats.
        assert!(!applied.first_copy("input", 0, at(10, 0)));
        assert!(!applied.first_copy("input", 0, at(10, 1)));
        assert!(!applied.first_copy("input", 0, at(12, 0)));
        assert!(applied.first_copy("input", 0, at(12, 1)));
        // Other partitions and topics keep their own positions.
        assert!(applied.first_copy("input", 1, at(3, 0)));
        assert!(applied.first_copy("other", 0, at(3, 0)));
        assert!(!applied.first_copy("other", 0, at(3, 0)));
    }
}
