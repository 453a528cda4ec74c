//! Input not keyed by user: the warning that says so.
//!
//! Sessions need all of a user's events in one partition. The retention family finds users
//! held by several partitions whenever it merges users across partitions (at each day turn
//! and start, and at every snapshot while any are found; see
//! `pulse_core::families::retention`), and the snapshot carries their count (also the gauge
//! `pulse_users_on_several_partitions`) and the partitions. This turns that into a log line
//! naming the Kafka partitions, never a user, at most every [`EVERY`], so a topic that stays
//! mis-keyed reminds the operator without flooding the log.

use std::time::{Duration, Instant};

use pulse_core::snapshot::KpiSnapshot;

use crate::partition_numbers::PartitionNumbers;

/// How often the warning may repeat while users stay shared.
const EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub(super) struct SharedUsersWarning {
    last: Option<Instant>,
}

impl SharedUsersWarning {
    /// Warns if `snapshot` found users on several partitions and the last warning is old.
    pub(super) fn observe(&mut self, snapshot: &KpiSnapshot, numbers: &PartitionNumbers) {
        let found = &snapshot.kpis.retention.retention;
        if found.users_on_several_partitions == 0
            || self.last.is_some_and(|at| at.elapsed() < EVERY)
        {
            return;
        }
        self.last = Some(Instant::now());
        let partitions: Vec<String> = found
            .partitions_sharing_users
            .iter()
            .map(|&number| match numbers.keys().get(number as usize) {
                Some(key) => key.to_string(),
                None => format!("#{number}"),
            })
            .collect();
        tracing::warn!(
            users = found.users_on_several_partitions,
            ?partitions,
            "Users appear on several partitions: the input is not keyed by user, so sessions \
             are split (retention stays exact). Key the records by user id, or set \
             kafka.repartition = true."
        );
    }
}
