//! A rebalance while events flow: a second pulse joins the consumer group while the first
//! is reading a backlog, takes some of the partitions (reading what is left of them), and
//! leaves. Each member has a state location of its own here, so state does not follow the
//! group between them (`failover.rs` has them share one). The first pulse must end with
//! exactly the KPIs of a single consumer that read everything: each partition it gets back
//! resumes where *its* final checkpoint on revocation left it, not at the offset the other
//! member committed (which would lose what that member read) nor at an older commit
//! (which would count records twice).
//!
//! The group rebalances cooperatively (pulse's default `partition.assignment.strategy`).
//!
//! The whole workload (147 000 events) is produced first, so that the first member is still
//! reading it when the second joins and leaves, however fast either of them is.

use std::time::Duration;

use pulse_core::EngineSettings;
use pulse_tests::{Record, WorkloadConfig, kafka};

use crate::helpers::{
    assert_matches_exact, generate, json_diff, kpis_only, live_oracle, loadgen, run_engine_open,
    without_state,
};
use crate::kafka_tests::{SERIAL, accepted, write_config_in_group};
use crate::process::Pulse;

const END_MS: i64 = 1_772_366_400_000;
const USERS: u32 = 2_000;
const SEED: u64 = 73;

#[tokio::test(flavor = "multi_thread")]
async fn a_member_joining_and_leaving_changes_nothing_for_the_one_that_stays() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "rebalance", 4).await;
    let produced = loadgen(&brokers, &topic, USERS, SEED);
    let (events, lines) = generate(&WorkloadConfig {
        seed: SEED,
        users: USERS,
        days: 35,
        end_ms: END_MS,
        ..WorkloadConfig::default()
    });
    assert_eq!(produced, events.len() as u64);

    // No periodic checkpoint: only revocations and stops write (and commit), so a member
    // that got a partition back and started at the group's offset would be caught.
    let group = kafka::unique_name("pulse-rebalance");
    let state = "checkpoint_interval = \"1h\"\n";
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config_a = write_config_in_group(dir_a.path(), &brokers, &topic, &group, state);
    let config_b = write_config_in_group(dir_b.path(), &brokers, &topic, &group, state);
    let start = |config: &str| Pulse::start(&["run", "--config", config, "--clock", "event-time"]);

    let first = start(&config_a);
    first.wait_for("the first member to read", kafka::GROUP_JOIN_TIMEOUT, |s| {
        accepted(s) > 0
    });
    let second = start(&config_b);
    // Its partitions start where the first member's final checkpoint on revocation left
    // them: if the first had read them to the end meanwhile, there is nothing left to read,
    // so what is awaited is the hand-over, not a record.
    let taken = second.wait_for(
        "the second member to take partitions over",
        kafka::GROUP_JOIN_TIMEOUT,
        |_| second.log().contains("Partition has no saved state"),
    );
    let first_meanwhile = first.snapshot().map_or(0, |s| accepted(&s));
    std::thread::sleep(Duration::from_secs(1));
    let (status, second_log) = second.stop_and_log(Duration::from_secs(30));
    assert!(status.success(), "{second_log}");

    let settings = EngineSettings {
        shards: 2,
        ..EngineSettings::default()
    };
    let expected = kpis_only(&run_engine_open(&lines, settings.clone()));
    let snapshot = first.wait_for(
        "the single consumer's KPIs",
        Duration::from_secs(180),
        |s| accepted(s) == produced && json_diff(&without_state(s.clone()), &expected).is_empty(),
    );
    assert_eq!(snapshot["events"]["late_for_sessions"], 0);
    // A single consumer's answer is pulse's own; the independent model must agree too.
    let records: Vec<Record> = events.into_iter().map(Record::Event).collect();
    let exact = live_oracle(&records, &settings);
    assert_matches_exact(&without_state(snapshot), &exact, 0.03);
    let (status, first_log) = first.stop_and_log(Duration::from_secs(30));
    assert!(status.success(), "{first_log}");
    // Cooperative-sticky by default: the first member gave away only what moved, and went
    // on reading the rest through the rebalance.
    assert!(
        first_log
            .lines()
            .any(|l| l.contains("Partitions revoked.") && l.contains("cooperative=true")),
        "the first member gave partitions away, cooperatively:\n{first_log}"
    );
    eprintln!(
        "rebalance: {produced} events; the second member had applied {} when the first had \
         applied {first_meanwhile}",
        accepted(&taken)
    );
}
