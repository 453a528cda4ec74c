//! Partition watermarks: how far the session watermark of a consumer may go.

use std::time::{Duration, Instant};

use foldhash::HashMap;
use pulse_core::global_view::SessionHold;

use crate::state_store::Offsets;
use crate::topic_partition::TopicPartition;

/// A partition's end that is in doubt since records arrived elsewhere: confirmed if the
/// broker's high watermark, asked after `doubted_since`, is not beyond `position`.
#[derive(Debug, Clone)]
pub(super) struct EndCheck {
    pub partition: TopicPartition,
    pub position: i64,
    pub doubted_since: Instant,
}

/// The session watermark of a consumer: each assigned partition is as far as its newest
/// event, and the stream only as far as its slowest partition that still has data to read.
/// Partitions are consumed in batches, so one may run hours ahead of another during a
/// backfill; the largest event time would then mark the other's events too late.
///
/// A partition read to its end stops holding the watermark back, or an idle partition would
/// stop sessions from closing. But its end is only news until records arrive elsewhere: a
/// burst produced to every partition at once reaches them one fetch after another (later
/// still after a broker restart, or from a slower broker), and the first to deliver would
/// otherwise carry the watermark past the others' part of the burst. So an end counts only
/// if nothing arrived elsewhere since it was reached, or once the broker confirms it: its
/// high watermark, asked after the doubt began, is not beyond this consumer's position.
/// Offsets that never reach the consumer as records (transaction markers) keep the high
/// watermark ahead; such an end counts after [`END_FALLBACK`] with the broker reachable.
///
/// A partition another member of the group reads counts as far as that member's published
/// [`SessionHold`] says (the global view's summaries carry it); without one it holds.
#[derive(Default)]
pub(super) struct PartitionWatermarks {
    /// Every partition of the subscribed topics (empty until the first metadata answer).
    all: Vec<TopicPartition>,
    pub(super) assigned: Vec<TopicPartition>,
    newest: HashMap<TopicPartition, i64>,
    /// Partitions at their end: `None` while it is certain, else since when it is doubted.
    at_end: HashMap<TopicPartition, Option<Instant>>,
    /// Partitions at their end that nothing has arrived after yet (usually empty).
    quiet_ends: Vec<TopicPartition>,
    /// What the other members say of the partitions they read.
    remote: HashMap<TopicPartition, SessionHold>,
}

/// How long a doubted end waits for the broker's confirmation before it counts anyway,
/// counted while the broker is reachable. Only partitions whose high watermark stays ahead
/// of every record need it; sessions there close that much later after a burst.
const END_FALLBACK: Duration = Duration::from_secs(30);

impl PartitionWatermarks {
    /// The partitions assigned here now (if known) and every partition of the topics (if
    /// the broker has told).
    pub(super) fn set_assignment(
        &mut self,
        assigned: Option<Vec<TopicPartition>>,
        all: Vec<TopicPartition>,
    ) {
        if let Some(assigned) = assigned {
            self.assigned = assigned;
        }
        if !all.is_empty() {
            self.all = all;
        }
    }

    /// Records arrived from `partition`, the newest accepted event among them at `newest`.
    pub(super) fn observe(&mut self, partition: &TopicPartition, newest: Option<i64>) {
        self.at_end.remove(partition);
        if !self.quiet_ends.is_empty() {
            let now = Instant::now();
            for other in self.quiet_ends.drain(..) {
                if let Some(doubted) = self.at_end.get_mut(&other) {
                    doubted.get_or_insert(now);
                }
            }
        }
        if let Some(ts) = newest {
            match self.newest.get_mut(partition) {
                Some(held) => *held = (*held).max(ts),
                None => {
                    self.newest.insert(partition.clone(), ts);
                }
            }
        }
    }

    pub(super) fn reached_end(&mut self, partition: TopicPartition) {
        self.at_end.insert(partition.clone(), None);
        self.quiet_ends.push(partition);
    }

    /// An end reached under an earlier assignment says nothing about this one.
    pub(super) fn forget_end(&mut self, partition: &TopicPartition) {
        self.at_end.remove(partition);
    }

    /// The doubted ends for the broker to check, at the positions this consumer has reached.
    pub(super) fn ends_to_check(&self, positions: &Offsets) -> Vec<EndCheck> {
        self.at_end
            .iter()
            .filter_map(|(partition, doubted)| {
                Some(EndCheck {
                    partition: partition.clone(),
                    position: *positions.get(partition)?,
                    doubted_since: (*doubted)?,
                })
            })
            .collect()
    }

    /// The broker confirmed `partition`'s end, asked about the doubt that began at `since`
    /// (an answer about an older doubt says nothing about a newer one).
    pub(super) fn confirm_end(&mut self, partition: &TopicPartition, since: Instant) {
        if let Some(doubted) = self.at_end.get_mut(partition)
            && *doubted == Some(since)
        {
            *doubted = None;
        }
    }

    /// While the broker is away nothing can arrive, which says nothing about what it holds:
    /// the fallback for doubted ends starts again.
    pub(super) fn broker_unreachable(&mut self, now: Instant) {
        for doubted in self.at_end.values_mut().flatten() {
            *doubted = now;
        }
    }

    fn partitions(&self) -> &[TopicPartition] {
        if self.all.is_empty() {
            &self.assigned
        } else {
            &self.all
        }
    }

    /// Runs for each partition on every record (through [`Self::combined`]): the partition
    /// number, which tells most partitions apart, is compared before the topic's name.
    pub(super) fn is_assigned(&self, partition: &TopicPartition) -> bool {
        self.assigned
            .iter()
            .any(|p| p.is(&partition.topic, partition.partition))
    }

    /// The other members' holds of the partitions they read (replacing the last ones).
    pub(super) fn set_remote_holds(
        &mut self,
        holds: impl IntoIterator<Item = (TopicPartition, SessionHold)>,
    ) {
        self.remote = holds.into_iter().collect();
    }

    fn done(&self, partition: &TopicPartition) -> bool {
        if self.is_assigned(partition) {
            self.at_end
                .get(partition)
                .is_some_and(|doubted| doubted.is_none_or(|since| since.elapsed() >= END_FALLBACK))
        } else {
            self.remote.get(partition) == Some(&SessionHold::Done)
        }
    }

    /// How far `partition`, assigned here, lets the other members' watermarks go now.
    pub(super) fn hold_of(&self, partition: &TopicPartition) -> SessionHold {
        if self.done(partition) {
            SessionHold::Done
        } else {
            self.newest
                .get(partition)
                .map_or(SessionHold::Unknown, |&newest| SessionHold::At(newest))
        }
    }

    /// The minimum over the partitions still being read. `None` (hold) while one of them
    /// has not delivered an event yet, or is not assigned to this consumer and no member
    /// that reads it has said how far it is: after a crash or during a rebalance a
    /// partition may arrive later with older events, which a watermark that had run ahead
    /// would count as too late for sessions.
    pub(super) fn combined(&self) -> Option<i64> {
        let mut reading = self
            .partitions()
            .iter()
            .filter(|p| !self.done(p))
            .peekable();
        reading.peek()?;
        reading
            .map(|p| {
                if self.is_assigned(p) {
                    self.newest.get(p).copied()
                } else {
                    match self.remote.get(p) {
                        Some(SessionHold::At(newest)) => Some(*newest),
                        _ => None,
                    }
                }
            })
            .try_fold(i64::MAX, |min, ts| ts.map(|t| min.min(t)))
    }

    /// Every partition of the topics is assigned here and read to its end.
    pub(super) fn caught_up(&self) -> bool {
        let partitions = self.partitions();
        !partitions.is_empty() && partitions.iter().all(|p| self.done(p))
    }
}

/// The holds this member publishes for its partitions: as of its latest durable
/// checkpoint, where a successor would resume (see [`SessionHold`]); without a state store,
/// as of now, since positions are committed as they move.
#[derive(Debug, Default)]
pub(super) struct PublishedHolds {
    /// The holds of the checkpoint being written, by partition.
    in_flight: Vec<(TopicPartition, SessionHold)>,
    durable: HashMap<TopicPartition, SessionHold>,
}

impl PublishedHolds {
    /// A checkpoint of `partitions` was taken now.
    pub(super) fn checkpoint_taken<'a>(
        &mut self,
        watermarks: &PartitionWatermarks,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) {
        self.in_flight = partitions
            .into_iter()
            .map(|p| (p.clone(), watermarks.hold_of(p)))
            .collect();
    }

    /// The checkpoint taken last is durable.
    pub(super) fn checkpoint_durable(&mut self) {
        self.durable.extend(self.in_flight.drain(..));
    }

    /// `partition`'s hold to publish; `durable`: whether checkpoints are what a successor
    /// resumes from.
    pub(super) fn of(
        &self,
        watermarks: &PartitionWatermarks,
        partition: &TopicPartition,
        durable: bool,
    ) -> SessionHold {
        if durable {
            self.durable.get(partition).copied().unwrap_or_default()
        } else {
            watermarks.hold_of(partition)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(n: i32) -> TopicPartition {
        TopicPartition::new("events", n)
    }

    /// Three assigned partitions, each with events up to `newest[n]` and read to its end.
    fn caught_up_at(newest: [i64; 3]) -> PartitionWatermarks {
        let mut watermarks = PartitionWatermarks {
            assigned: (0..3).map(partition).collect(),
            ..PartitionWatermarks::default()
        };
        for (n, ts) in newest.into_iter().enumerate() {
            watermarks.observe(&partition(n as i32), Some(ts));
        }
        for n in 0..3 {
            watermarks.reached_end(partition(n));
        }
        watermarks
    }

    fn positions(at: i64) -> Offsets {
        (0..3).map(|n| (partition(n), at)).collect()
    }

    #[test]
    fn ends_reached_with_nothing_arriving_since_let_the_watermark_follow_the_reading_partition() {
        let mut watermarks = caught_up_at([10, 20, 30]);
        assert!(watermarks.caught_up());
        assert_eq!(watermarks.combined(), None, "nothing left to read");
        assert!(watermarks.ends_to_check(&positions(5)).is_empty());
        // Records after the others' ends: they are doubted, not passed.
        watermarks.observe(&partition(0), Some(100));
        assert!(!watermarks.caught_up());
        assert_eq!(
            watermarks.combined(),
            Some(20),
            "held at the slowest doubted end"
        );
    }

    #[test]
    fn a_doubted_end_counts_once_the_broker_confirms_that_very_doubt() {
        let mut watermarks = caught_up_at([10, 20, 30]);
        watermarks.observe(&partition(0), Some(100));
        let checks = watermarks.ends_to_check(&positions(7));
        let mut asked: Vec<(i32, i64)> = checks
            .iter()
            .map(|c| (c.partition.partition, c.position))
            .collect();
        asked.sort();
        assert_eq!(asked, [(1, 7), (2, 7)]);
        let since = checks[0].doubted_since;

        // An answer about an older doubt changes nothing.
        watermarks.confirm_end(&partition(1), since - Duration::from_millis(1));
        assert_eq!(watermarks.combined(), Some(20));

        watermarks.confirm_end(&partition(1), since);
        assert_eq!(watermarks.combined(), Some(30));
        watermarks.confirm_end(&partition(2), since);
        assert_eq!(
            watermarks.combined(),
            Some(100),
            "only partition 0 is being read"
        );
        watermarks.reached_end(partition(0));
        assert!(watermarks.caught_up());
    }

    #[test]
    fn a_partition_delivering_again_is_read_not_doubted() {
        let mut watermarks = caught_up_at([10, 20, 30]);
        watermarks.observe(&partition(0), Some(100));
        watermarks.observe(&partition(1), Some(90));
        let doubted: Vec<i32> = watermarks
            .ends_to_check(&positions(7))
            .iter()
            .map(|c| c.partition.partition)
            .collect();
        assert_eq!(doubted, [2]);
        assert_eq!(watermarks.combined(), Some(30));
    }

    #[test]
    fn while_the_broker_is_away_a_doubt_starts_again_and_old_answers_do_not_apply() {
        let mut watermarks = caught_up_at([10, 20, 30]);
        watermarks.observe(&partition(0), Some(100));
        let before = watermarks.ends_to_check(&positions(7))[0].clone();
        let later = before.doubted_since + Duration::from_secs(5);
        watermarks.broker_unreachable(later);
        let after = watermarks.ends_to_check(&positions(7));
        assert!(after.iter().all(|c| c.doubted_since == later));
        watermarks.confirm_end(&before.partition, before.doubted_since);
        assert_eq!(watermarks.combined(), Some(20), "still doubted");
    }

    #[test]
    fn an_unassigned_or_silent_partition_holds_the_watermark() {
        let mut watermarks = PartitionWatermarks {
            all: (0..3).map(partition).collect(),
            assigned: vec![partition(0), partition(1)],
            ..PartitionWatermarks::default()
        };
        watermarks.observe(&partition(0), Some(100));
        assert_eq!(watermarks.combined(), None, "partition 1 has not delivered");
        watermarks.observe(&partition(1), Some(50));
        assert_eq!(watermarks.combined(), None, "partition 2 is not ours");
        watermarks.assigned.push(partition(2));
        watermarks.reached_end(partition(2));
        assert_eq!(watermarks.combined(), Some(50));
    }

    #[test]
    fn a_partition_another_member_reads_counts_as_far_as_its_hold() {
        let mut watermarks = PartitionWatermarks {
            all: (0..4).map(partition).collect(),
            assigned: vec![partition(0), partition(1)],
            ..PartitionWatermarks::default()
        };
        watermarks.observe(&partition(0), Some(100));
        watermarks.observe(&partition(1), Some(80));
        let holds = |h2, h3| [(partition(2), h2), (partition(3), h3)];
        watermarks.set_remote_holds(holds(SessionHold::At(60), SessionHold::Unknown));
        assert_eq!(
            watermarks.combined(),
            None,
            "partition 3's reader has said nothing"
        );
        watermarks.set_remote_holds(holds(SessionHold::At(60), SessionHold::At(90)));
        assert_eq!(
            watermarks.combined(),
            Some(60),
            "the slowest, wherever it is read"
        );
        watermarks.set_remote_holds(holds(SessionHold::Done, SessionHold::At(90)));
        assert_eq!(watermarks.combined(), Some(80));
        assert!(!watermarks.caught_up());
        assert_eq!(watermarks.hold_of(&partition(1)), SessionHold::At(80));

        // Read to their ends here and there: caught up, and so says this member's hold.
        watermarks.set_remote_holds(holds(SessionHold::Done, SessionHold::Done));
        watermarks.reached_end(partition(0));
        watermarks.reached_end(partition(1));
        assert!(watermarks.caught_up());
        assert_eq!(watermarks.hold_of(&partition(1)), SessionHold::Done);
        // A member's hold never speaks for a partition read here.
        watermarks.set_remote_holds([(partition(0), SessionHold::At(1))]);
        assert_eq!(watermarks.hold_of(&partition(0)), SessionHold::Done);
    }
}
