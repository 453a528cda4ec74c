//! Where a (re)assigned partition resumes, checked on its first record.

use foldhash::HashSet;

use crate::state_store::Offsets;
use crate::topic_partition::TopicPartition;

/// Where each partition must resume, and whether its first record has been checked.
///
/// A partition resumes where *this instance* stopped applying it: after a restore, the
/// checkpoint's offset; after a rebalance gave it back, the position it had when it was
/// taken away. The assignment asks librdkafka to start there (the consumer context's
/// `rebalance`); the first record of each assignment is checked all the same: a record past
/// the position seeks back once (and, if the records between are gone from Kafka, is
/// applied with a warning). Records before it are skipped by the context's `claim`.
#[derive(Default)]
pub(super) struct Resume {
    resume_at: Offsets,
    checked: HashSet<TopicPartition>,
    pub(super) sought: HashSet<TopicPartition>,
}

pub(super) enum Placement {
    Apply,
    /// Past the position (the group committed more than this instance applied): seek back
    /// and skip it.
    SeekBack(i64),
}

impl Resume {
    /// A (re)assigned partition must continue at `position`.
    pub(super) fn rearm(&mut self, partition: TopicPartition, position: i64) {
        self.checked.remove(&partition);
        self.sought.remove(&partition);
        self.resume_at.insert(partition, position);
    }

    pub(super) fn place(&mut self, key: &TopicPartition, offset: i64) -> Placement {
        if self.checked.contains(key) {
            return Placement::Apply;
        }
        let Some(&resume_at) = self.resume_at.get(key) else {
            self.checked.insert(key.clone());
            return Placement::Apply;
        };
        // Records before the position are [`PulseContext::claim`]'s to skip.
        if offset <= resume_at || self.sought.contains(key) {
            // The no-gap, no-duplicate check of a hand-over: this equals `resume_at`.
            tracing::info!(partition = %key, offset, resume_at, "First record since the assignment.");
            if offset > resume_at {
                tracing::warn!(
                    partition = %key,
                    resume_at,
                    offset,
                    "Records between the checkpoint and this offset are no longer in Kafka."
                );
            }
            self.checked.insert(key.clone());
            Placement::Apply
        } else {
            self.sought.insert(key.clone());
            Placement::SeekBack(resume_at)
        }
    }
}
