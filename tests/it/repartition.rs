//! `kafka.repartition = true` against the real broker: a topic whose records are keyed by
//! sequence number (so every user's events spread over its partitions) is re-keyed by user
//! into `<group_id>.by-user`, and `pulse run` then gives the KPIs of `pulse replay` of the
//! same events — sessions included, which no merge across partitions could repair — with
//! no user found on two partitions. And an internal topic of the wrong size is refused.
//! (Without repartitioning, the same kind of topic is `retention::users_spread_…`.)

use std::time::Duration;

use pulse_tests::{GeneratedEvent, kafka};
use serde_json::json;

use crate::helpers::{generate, json_diff, kpis_only, run_engine_open, without_state};
use crate::kafka_tests::{SERIAL, engine_settings, run_args, workload, write_config_in_group};
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
