//! `kafka.repartition = true` against the real broker: a topic whose records are keyed by
//! sequence number (so every user's events spread over its partitions) is re-keyed by user
//! into `<group_id>.by-user`, and `pulse run` then gives the KPIs of `pulse replay` of the
//! same events — sessions included, which no merge across partitions could repair — with
//! no user found on two partitions; so it does when killed with SIGKILL mid-stream, the
//! records the stage then re-keys a second time being dropped. And an internal topic of the
//! wrong size is refused. (Without repartitioning, the same kind of topic is
//! `retention::users_spread_…`.)

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pulse_core::EngineSettings;
use pulse_tests::{GeneratedEvent, kafka};
use serde_json::json;

use crate::durability::durable_beyond;
use crate::helpers::{generate, json_diff, kpis_only, pulse_bin, run_engine_open, without_state};
use crate::kafka_tests::{
    SERIAL, accepted, engine_settings, run_args, workload, write_config_in_group,
};
use crate::process::{Pulse, metric};

/// The environment that turns the stage on (the test configurations have no `[kafka]` key
/// to spare).
fn repartition_on() -> Vec<(String, String)> {
    vec![("PULSE_KAFKA__REPARTITION".into(), "true".into())]
}

/// Guards that delete the topics pulse creates for `group` when the test ends, however it
/// ends.
fn internal_topics(brokers: &str, group: &str) -> Vec<kafka::TopicGuard> {
    let by_user = format!("{group}.by-user");
    [by_user.clone(), format!("{by_user}.dlq")]
        .into_iter()
        .map(|topic| kafka::guard(brokers, &topic))
        .collect()
}

/// A three-partition topic holding the workload of `seed` (300 users), each record keyed
/// by its sequence number rather than its user: every user's events spread over the
/// partitions. Returns the topic, its guard, the events and their lines.
pub async fn unkeyed_topic(
    brokers: &str,
    prefix: &str,
    seed: u64,
) -> (String, kafka::TopicGuard, Vec<GeneratedEvent>, Vec<String>) {
    let (topic, guard) = kafka::temp_topic(brokers, prefix, 3).await;
    let (events, lines) = generate(&workload(seed, 300));
    kafka::produce(
        brokers,
        &topic,
        events
            .iter()
            .zip(&lines)
            .map(|(e, line)| (Some(format!("record-{}", e.seq)), line.clone().into_bytes())),
    )
    .await;
    (topic, guard, events, lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_not_keyed_by_user_repartitioned_gives_the_replay_kpis() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard, events, lines) = unkeyed_topic(&brokers, "unkeyed", 53).await;

    let dir = tempfile::tempdir().unwrap();
    let group = kafka::unique_name("pulse-group");
    let _internal = internal_topics(&brokers, &group);
    let config = write_config_in_group(dir.path(), &brokers, &topic, &group, "");
    let pulse = Pulse::start_with_env(&run_args(&config), &repartition_on());
    let expected = kpis_only(&run_engine_open(&lines, engine_settings()));
    pulse.wait_for("every record", Duration::from_secs(120), |s| {
        s["events"]["accepted"].as_u64() == Some(events.len() as u64)
    });
    let snapshot = pulse.wait_for("the replay's KPIs", Duration::from_secs(20), |s| {
        json_diff(&without_state(s.clone()), &expected).is_empty()
    });
    assert_eq!(snapshot["events"]["late_for_sessions"], json!(0));
    assert_eq!(
        snapshot["retention"]["users_on_several_partitions"],
        json!(0)
    );
    let (_, metrics) = pulse.get("/metrics");
    assert_eq!(
        metric(&metrics, "pulse_users_on_several_partitions"),
        Some(0.0)
    );
    let (status, log) = pulse.stop_and_log(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(log.contains("Re-keying the input by user."), "{log}");
    assert!(!log.contains("Users appear on several partitions"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_internal_topic_of_another_partition_count_is_refused() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "unkeyed", 3).await;
    let group = kafka::unique_name("pulse-group");
    let _internal = internal_topics(&brokers, &group);
    kafka::create_topic(&brokers, &format!("{group}.by-user"), 2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_in_group(dir.path(), &brokers, &topic, &group, "");
    let pulse = Pulse::start_with_env(&run_args(&config), &repartition_on());
    let (status, log) = pulse.exited(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        log.contains(&format!(
            "the internal topic {group}.by-user has 2 partitions and the input has 3"
        )),
        "{log}"
    );
}

/// `pulse loadgen` streaming the workload of `seed` (300 users, as [`workload`] makes it)
/// into `topic` at `rate` events per second, each record sent to a random partition: every
/// user's events spread over the partitions, as in a topic keyed by anything but the user.
fn stream_unkeyed(brokers: &str, topic: &str, seed: u64, rate: u32) -> Child {
    Command::new(pulse_bin())
        .args(["loadgen", "--brokers", brokers, "--topic", topic])
        .args([
            "--users",
            "300",
            "--days",
            "35",
            "--seed",
            &seed.to_string(),
        ])
        .args(["--end", "2026-03-01T12:00:00Z", "--rate", &rate.to_string()])
        .env_remove("PULSE_CONFIG")
        .env("PULSE_KAFKA__PROPERTIES__PARTITIONER", "random")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// SIGKILL while the workload streams in, after a checkpoint: the stage had re-keyed
/// records past its last input commit (it commits every refresh, 2 s here, and the stream
/// never pauses), so after the restart it re-keys them again; the consume loop recognises
/// those copies by their input position and drops them. The final KPIs equal the replay's
/// to the last digit, and the dropped copies are counted, so the crash did hit between a
/// commit and the next (the test cannot pass without repeats to drop).
///
/// `allowed_lateness` is 10 days here (and in the replay): the stream packs 35 days into
/// about 22 s, so one wall second is over a day and a half of event time, and at the live edge the
/// stage releases records of the input partitions in the order they arrive, which is out of
/// event-time order by up to a few hundred milliseconds — an instant for a real stream,
/// days here. With the default 5 minutes, 673 of 21 900 events were late for sessions in
/// this test with the crash left out.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_stream_repartitioned_loses_and_doubles_nothing() {
    const SEED: u64 = 59;
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "unkeyed-crash", 3).await;
    let (events, lines) = generate(&workload(SEED, 300));
    assert_eq!(
        workload(SEED, 300).end_ms,
        1_772_366_400_000,
        "loadgen's --end"
    );
    let dir = tempfile::tempdir().unwrap();
    let group = kafka::unique_name("pulse-group");
    let _internal = internal_topics(&brokers, &group);
    let checkpoints = "checkpoint_interval = \"500ms\"\n";
    let config = write_config_in_group(dir.path(), &brokers, &topic, &group, checkpoints);
    let mut env = repartition_on();
    env.push(("PULSE_HTTP__REFRESH_INTERVAL".into(), "2s".into()));
    env.push(("PULSE_ALLOWED_LATENESS".into(), "10days".into()));
    let settings = EngineSettings {
        allowed_lateness_ms: 10 * 86_400_000,
        ..engine_settings()
    };
    let expected = kpis_only(&run_engine_open(&lines, settings));

    let pulse = Pulse::start_with_env(&run_args(&config), &env);
    // The stream starts once pulse reads, so that the crash comes while it flows.
    pulse.wait_for("the partitions assigned", Duration::from_secs(60), |_| {
        pulse.log().matches("has no saved state").count() == 3
    });
    let mut loadgen = stream_unkeyed(&brokers, &topic, SEED, 1_000);
    durable_beyond(&dir.path().join("state"), 0).await;
    // The stage commits at the same phase of the refresh as the consume loop checkpoints:
    // half a refresh later it has re-keyed about a second of the stream since its commit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    pulse.kill();
    assert!(
        loadgen.try_wait().unwrap().is_none(),
        "the crash came before the end of the stream"
    );

    let pulse = Pulse::start_with_env(&run_args(&config), &env);
    assert!(loadgen.wait().unwrap().success());
    let snapshot = pulse.wait_for("the replay's KPIs", Duration::from_secs(60), |s| {
        accepted(s) == events.len() as u64
            && json_diff(&without_state(s.clone()), &expected).is_empty()
    });
    assert_eq!(snapshot["events"]["late_for_sessions"], json!(0));
    let (_, metrics) = pulse.get("/metrics");
    let dropped = metric(&metrics, "pulse_repartition_repeats_dropped_total").unwrap_or(0.0);
    assert!(dropped > 0.0, "no record was re-keyed twice: {dropped}");
    let (status, log) = pulse.stop_and_log(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    eprintln!(
        "{dropped} repeated records of {} dropped after the crash",
        events.len()
    );
}
