//! [`TimeMerge`]: records of several input partitions released in event-time order.
//!
//! Re-keying by user ([`super::repartition`]) writes records of every input partition into
//! each internal partition. Read as fast as each input partition delivers, a backlog would
//! land in the internal partition one input partition after another — days of history
//! apart — and the consume loop would find most events later than `allowed_lateness` for
//! sessions. So the stage merges: one lane per assigned input partition, each in its own
//! order, and the oldest head is released only once every lane either holds a record or
//! has been read to its end (a lane that has not spoken may still hold an older one). This
//! is the rule of the consume loop's session watermark, applied before re-keying.

use std::collections::{BTreeMap, VecDeque};

use crate::topic_partition::TopicPartition;

#[derive(Debug)]
struct Lane<T> {
    queue: VecDeque<(i64, T)>,
    /// Read to its end, with nothing arrived since: it holds nothing back.
    at_end: bool,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Lane {
            queue: VecDeque::new(),
            at_end: false,
        }
    }
}

#[derive(Debug)]
pub(super) struct TimeMerge<T> {
    lanes: BTreeMap<TopicPartition, Lane<T>>,
}

impl<T> Default for TimeMerge<T> {
    fn default() -> Self {
        TimeMerge {
            lanes: BTreeMap::new(),
        }
    }
}

impl<T> TimeMerge<T> {
    /// The partitions assigned now: new ones get a lane (holding the others back until they
    /// speak), revoked ones lose theirs and what it held (their next owner reads it again).
    pub(super) fn assign(&mut self, assigned: &[TopicPartition]) {
        self.lanes.retain(|key, _| assigned.contains(key));
        for key in assigned {
            self.lanes.entry(key.clone()).or_default();
        }
    }

    pub(super) fn push(&mut self, from: &TopicPartition, ts_ms: i64, item: T) {
        let lane = match self.lanes.get_mut(from) {
            Some(lane) => lane,
            None => self.lanes.entry(from.clone()).or_default(),
        };
        lane.at_end = false;
        lane.queue.push_back((ts_ms, item));
    }

    pub(super) fn reached_end(&mut self, from: &TopicPartition) {
        if let Some(lane) = self.lanes.get_mut(from) {
            lane.at_end = true;
        }
    }

    /// Records waiting from `from`.
    pub(super) fn waiting(&self, from: &TopicPartition) -> usize {
        self.lanes.get(from).map_or(0, |lane| lane.queue.len())
    }

    /// The oldest head, once no lane could still deliver an older one.
    pub(super) fn pop(&mut self) -> Option<(TopicPartition, T)> {
        let mut oldest: Option<(&TopicPartition, i64)> = None;
        for (key, lane) in &self.lanes {
            match lane.queue.front() {
                Some(&(ts, _)) => {
                    if oldest.is_none_or(|(_, o)| ts < o) {
                        oldest = Some((key, ts));
                    }
                }
                None if lane.at_end => {}
                None => return None,
            }
        }
        let key = oldest?.0.clone();
        let lane = self.lanes.get_mut(&key)?;
        let (_, item) = lane.queue.pop_front()?;
        Some((key, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> TopicPartition {
        TopicPartition::new("in", n)
    }

    #[test]
    fn a_lane_that_has_not_spoken_holds_the_others_back() {
        let mut merge = TimeMerge::default();
        merge.assign(&[p(0), p(1)]);
        merge.push(&p(0), 10, "a10");
        merge.push(&p(0), 20, "a20");
        assert_eq!(
            merge.pop(),
            None,
            "partition 1 may still hold older records"
        );
        merge.push(&p(1), 15, "b15");
        assert_eq!(merge.pop(), Some((p(0), "a10")));
        assert_eq!(merge.pop(), Some((p(1), "b15")));
        assert_eq!(
            merge.pop(),
            None,
            "partition 1 is empty again, not at its end"
        );
        merge.reached_end(&p(1));
        assert_eq!(merge.pop(), Some((p(0), "a20")));
        assert_eq!(merge.waiting(&p(0)), 0);
    }

    #[test]
    fn a_backlog_read_one_partition_after_another_comes_out_in_time_order() {
        let mut merge = TimeMerge::default();
        let partitions = [p(0), p(1), p(2)];
        merge.assign(&partitions);
        for (i, key) in partitions.iter().enumerate() {
            for t in 0..50 {
                merge.push(key, t * 3 + i as i64, t * 3 + i as i64);
            }
        }
        for key in &partitions {
            merge.reached_end(key);
        }
        let out: Vec<i64> = std::iter::from_fn(|| merge.pop().map(|(_, t)| t)).collect();
        assert_eq!(out, (0..150).collect::<Vec<_>>());
    }

    #[test]
    fn a_revoked_partition_stops_holding_back_and_its_records_are_dropped() {
        let mut merge = TimeMerge::default();
        merge.assign(&[p(0), p(1)]);
        merge.push(&p(0), 5, "a");
        merge.push(&p(1), 1, "b");
        merge.assign(&[p(0), p(2)]);
        assert_eq!(
            merge.pop(),
            None,
            "partition 2 is new: it may hold older ones"
        );
        merge.reached_end(&p(2));
        assert_eq!(merge.pop(), Some((p(0), "a")));
        assert_eq!(merge.pop(), None);
    }
}
