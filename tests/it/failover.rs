//! Failover with partition state that follows the consumer group (issue 13, point 1): several
//! `pulse run` on one 12-partition topic share one state location; each loads a partition's
//! state when the group assigns it, writes a final checkpoint when the group takes it away,
//! and writes nothing for a partition it lost.
//!
//! The workload streams in (rate-limited `pulse loadgen`) while members crash, join and
//! leave. The group's result is read back with `pulse state show` once every member has
//! stopped, and must be `pulse replay`'s of the events the topic holds to the last field:
//! identical HLL registers (the estimates), exact session statistics, exact counters.
//!
//! One timing bound is asserted, the issue's: a crashed member's partitions are owned again
//! within the session timeout (6 s in these tests) plus 10 s. The group's scaffolding is
//! `group`'s, shared with the global view's tests.

use std::time::Duration;

use crate::group::{
    Group, PARTITIONS, PATIENCE, TAKE_OVER_LIMIT, applying, finish, own_all, owned, spread, taken,
    wait_until,
};
use crate::kafka_tests::SERIAL;
use crate::process::{Pulse, signal};

#[tokio::test(flavor = "multi_thread")]
async fn a_member_killed_mid_stream_is_replaced_and_nothing_is_lost_or_doubled() {
    let _serial = SERIAL.lock().await;
    let (mut group, _guard) = Group::new("failover-kill", "").await;
    let members = [group.start(), group.start(), group.start()];
    let all: Vec<&Pulse> = members.iter().collect();
    wait_until("the group to spread the partitions", PATIENCE, &all, || {
        spread(&all)
    });
    let producer = group.produce();
    let [a, b, victim] = members;
    applying(&victim, "the victim");
    let orphans = owned(&victim.log());
    victim.kill();

    // The survivors own every partition again, the orphans included.
    let taken_over = wait_until(
        "taking the killed member's partitions over",
        TAKE_OVER_LIMIT,
        &[&a, &b],
        || own_all(&[&a, &b], &orphans),
    );
    eprintln!("partitions {orphans:?} owned again after {taken_over:?}");
    finish(&group, producer, vec![a, b], &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_one_to_three_to_one_under_load_has_no_gap_and_no_duplicate() {
    let _serial = SERIAL.lock().await;
    let (mut group, _guard) = Group::new("failover-scale", "").await;
    let first = group.start();
    wait_until(
        "the first member to own every partition",
        PATIENCE,
        &[&first],
        || owned(&first.log()).len() == PARTITIONS as usize,
    );
    let producer = group.produce();
    applying(&first, "the first member");
    let (second, third) = (group.start(), group.start());
    wait_until(
        "the three to share the partitions",
        PATIENCE,
        &[&first, &second, &third],
        || {
            [&first, &second, &third]
                .iter()
                .all(|m| !owned(&m.log()).is_empty())
        },
    );
    applying(&second, "the second member");
    let mut left = Vec::new();
    for member in [second, third] {
        let (status, log) = member.stop_and_log(Duration::from_secs(60));
        assert!(status.success(), "{log}");
        left.push(log);
    }
    wait_until(
        "the first member to own every partition again",
        PATIENCE,
        &[&first],
        || owned(&first.log()).len() == PARTITIONS as usize,
    );
    // The first member took partitions over twice: at start, from nobody; after the others
    // left, from their final checkpoints.
    let log_first = first.log();
    assert!(taken(&log_first).len() > PARTITIONS as usize, "{log_first}");
    finish(&group, producer, vec![first], &left).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_paused_past_its_session_timeout_drops_its_partitions_and_writes_nothing() {
    let _serial = SERIAL.lock().await;
    let (mut group, _guard) = Group::new("failover-stale", "").await;
    let (a, stale) = (group.start(), group.start());
    wait_until(
        "the two to share the partitions",
        PATIENCE,
        &[&a, &stale],
        || !owned(&a.log()).is_empty() && !owned(&stale.log()).is_empty(),
    );
    let producer = group.produce();
    applying(&stale, "the member to be paused");
    signal(stale.pid(), "STOP");
    wait_until(
        "the other member to take every partition",
        TAKE_OVER_LIMIT + PATIENCE,
        &[&a],
        || owned(&a.log()).len() == PARTITIONS as usize,
    );
    signal(stale.pid(), "CONT");
    // It notices (a lost assignment, or a refused save) and drops the partitions, and
    // goes on running: the group may give it partitions again.
    wait_until(
        "the resumed member to drop its partitions",
        PATIENCE,
        &[&stale],
        || {
            let log = stale.log();
            log.contains("Partition lost") || log.contains("dropping it here")
        },
    );
    for line in stale.log().lines().filter(|l| {
        l.contains("Partition lost")
            || l.contains("dropping it here")
            || l.contains("Lost the partition")
    }) {
        eprintln!("{line}");
    }
    finish(&group, producer, vec![stale, a], &[]).await;
}
