//! `pulse run` against a real Kafka-protocol broker (tansu, or `KAFKA_BROKERS`): a seeded
//! workload end to end, malformed messages and the dead-letter topic, a clean stop and
//! restart, and a broker outage.

use std::path::Path;
use std::time::Duration;

use pulse_core::EngineSettings;
use pulse_core::partitioner::Partitioner;
use pulse_tests::kafka;
use pulse_tests::{Record, WorkloadConfig};
use serde_json::{Value, json};

use crate::helpers::{
    assert_matches_exact, defects, generate, json_diff, kpis_only, live_oracle, loadgen,
    loadgen_configured, run_engine_open, without_state,
};
use crate::process::{Pulse, metric, signal};

/// One Kafka test at a time: they share one broker, which the outage test pauses.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 2026-03-01T12:00:00Z: workloads end in the past, on the event-time clock.
pub const END_MS: i64 = 1_772_366_400_000;
const SHARDS: usize = 2;

pub fn workload(seed: u64, users: u32) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        users,
        days: 35,
        end_ms: END_MS,
        ..WorkloadConfig::default()
    }
}

/// A configuration for one test: its own topic, group and state directory.
fn write_config(dir: &Path, brokers: &str, topic: &str) -> String {
    write_config_with(dir, brokers, topic, "")
}

/// The same, with extra lines for the `[state]` table.
pub fn write_config_with(dir: &Path, brokers: &str, topic: &str, state_extra: &str) -> String {
    let group = kafka::unique_name("pulse-group");
    write_config_in_group(dir, brokers, topic, &group, state_extra)
}

/// The same, for a member of the consumer group `group`.
pub fn write_config_in_group(
    dir: &Path,
    brokers: &str,
    topic: &str,
    group: &str,
    state_extra: &str,
) -> String {
    let mut properties = String::new();
    for (key, value) in kafka::test_consumer_properties() {
        properties.push_str(&format!("\"{key}\" = \"{value}\"\n"));
    }
    let text = format!(
        "shards = {SHARDS}\n\
         [kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
         [kafka.properties]\n{properties}\
         [http]\nrefresh_interval = \"300ms\"\n\
         [rollups]\ndir = \"{}\"\ntopic = \"\"\n\
         [state]\ndir = \"{}\"\n{state_extra}",
        dir.join("rollups").display(),
        dir.join("state").display()
    );
    let path = dir.join("pulse.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

pub fn run_args(config: &str) -> Vec<&str> {
    vec!["run", "--config", config, "--clock", "event-time"]
}

pub fn accepted(snapshot: &Value) -> u64 {
    snapshot["events"]["accepted"].as_u64().unwrap_or(0)
}

pub fn engine_settings() -> EngineSettings {
    EngineSettings {
        shards: SHARDS,
        ..EngineSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_then_run_gives_the_replay_kpis() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "e2e", 3).await;
    let config = workload(41, 300);
    let produced = loadgen(&brokers, &topic, 300, 41);
    let (events, lines) = generate(&config);
    assert_eq!(
        produced,
        events.len() as u64,
        "loadgen produces exactly the seeded workload"
    );

    // Then records pulse must count and not apply: malformed, late and future ones (the
    // late ones keyed by their user, as loadgen keys, so each follows its original).
    let defects: Vec<Record> = defects(&events, true)
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    kafka::produce(
        &brokers,
        &topic,
        defects.iter().map(|r| (r.key(), r.line().into_bytes())),
    )
    .await;
    let mut records: Vec<Record> = events.iter().cloned().map(Record::Event).collect();
    records.extend(defects.iter().cloned());
    let mut lines = lines;
    lines.extend(defects.iter().map(Record::line));

    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &brokers, &topic);
    let pulse = Pulse::start(&run_args(&config_path));
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(30));
    let expected = kpis_only(&run_engine_open(&lines, engine_settings()));
    let exact = live_oracle(&records, &engine_settings());
    let counted =
        |s: &Value| ["accepted", "rejected", "late", "future"].map(|key| s["events"][key].as_u64());
    pulse.wait_for("every record counted", Duration::from_secs(90), |s| {
        counted(s) == counted(&exact)
    });
    let snapshot = pulse.wait_for("the replay's KPIs", Duration::from_secs(10), |s| {
        let diff = json_diff(&without_state(s.clone()), &expected);
        if !diff.is_empty() {
            eprintln!("differs from the replay: {diff:?}");
        }
        diff.is_empty()
    });
    assert_eq!(snapshot["events"]["late_for_sessions"], json!(0));
    // The replay is pulse's own answer; the independent model must agree too, and the
    // workload must really hold each kind of record pulse does not apply.
    assert!(counted(&exact).iter().all(|n| n.is_some_and(|n| n > 0)));
    assert_matches_exact(&without_state(snapshot.clone()), &exact, 0.03);

    let (status, metrics) = pulse.get("/metrics");
    assert_eq!(status, 200);
    let mau = expected["active_users"]["30d"].as_f64().unwrap();
    assert_eq!(
        metric(&metrics, "pulse_active_users{window=\"30d\"}"),
        Some(mau)
    );
    assert_eq!(
        metric(&metrics, "pulse_events_total{kind=\"page_view\"}"),
        expected["events"]["by_kind"]["page_view"].as_f64()
    );
    assert_eq!(metric(&metrics, "pulse_broker_up"), Some(1.0));
    for partition in 0..3 {
        let lag = metric(
            &metrics,
            &format!("pulse_consumer_lag_messages{{partition=\"{partition}\",topic=\"{topic}\"}}"),
        );
        assert!(
            lag.is_none_or(|lag| lag == 0.0),
            "partition {partition} lag {lag:?}"
        );
    }
    let (status, pulse_log) = pulse.stop_and_log(Duration::from_secs(30));
    assert!(status.success(), "{pulse_log}");
    assert!(
        pulse_log.contains("State saved and offsets committed."),
        "{pulse_log}"
    );
    kafka::delete_topic(&brokers, &format!("{topic}.dlq")).await;

    // Privacy: no user id in the metrics, the snapshot, the rollups (written at the clean
    // stop) or the logs (at the default level). Ids shorter than 10 characters (small
    // integers) would match unrelated numbers.
    let mut rollups = String::new();
    for file in std::fs::read_dir(dir.path().join("rollups")).expect("rollup files") {
        rollups.push_str(&std::fs::read_to_string(file.unwrap().path()).unwrap());
    }
    assert!(
        rollups.contains("active_users"),
        "the clean stop wrote rollups"
    );
    let outputs = [
        metrics,
        serde_json::to_string(&snapshot).unwrap(),
        rollups,
        pulse_log,
    ];
    for user in events
        .iter()
        .map(|e| e.user.to_string())
        .filter(|u| u.len() >= 10)
    {
        for output in &outputs {
            assert!(!output.contains(&user), "user id {user} leaked");
        }
    }
}

/// A burst spanning weeks produced into every partition at once while pulse is caught up:
/// the partitions deliver their parts one fetch after another, and the first must not carry
/// the session watermark past the others' (their ends are doubted for a moment).
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_into_every_partition_while_caught_up_is_sessionized_exactly() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "burst", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &brokers, &topic);
    let pulse = Pulse::start(&run_args(&config_path));
    pulse.wait_for(
        "every partition read to its end",
        Duration::from_secs(60),
        |_| {
            pulse
                .log()
                .contains("Caught up with every assigned partition.")
        },
    );

    let (events, lines) = generate(&workload(47, 150));
    let keyed = events
        .iter()
        .zip(&lines)
        .map(|(e, l)| (Some(e.user.to_string()), l.clone().into_bytes()));
    kafka::produce(&brokers, &topic, keyed).await;
    let expected = kpis_only(&run_engine_open(&lines, engine_settings()));
    let snapshot = pulse.wait_for("every event applied", Duration::from_secs(90), |s| {
        accepted(s) == events.len() as u64
    });
    assert_eq!(snapshot["events"]["late_for_sessions"], json!(0));
    let snapshot = pulse.wait_for("the replay's KPIs", Duration::from_secs(10), |s| {
        json_diff(&without_state(s.clone()), &expected).is_empty()
    });
    let records: Vec<Record> = events.into_iter().map(Record::Event).collect();
    let exact = live_oracle(&records, &engine_settings());
    assert_matches_exact(&without_state(snapshot), &exact, 0.03);
    assert!(pulse.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_messages_are_counted_and_dead_lettered() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "bad", 1).await;
    let good = |user: &str, minute: i64| {
        format!(
            r#"{{"user_id":"{user}","event":"page_view","ts":{}}}"#,
            END_MS + minute * 60_000
        )
    };
    let messages: Vec<String> = vec![
        good("a", 0),
        "not json at all".to_owned(),
        format!(
            r#"[{},{{"event":"page_view","ts":{END_MS}}}]"#,
            good("b", 1)
        ),
        format!(
            r#"{{"batch":[{},{}],"sentAt":"2026-03-01T12:00:00Z"}}"#,
            good("c", 2),
            good("d", 3)
        ),
        r#"{"user_id":"e","event":"login"}"#.to_owned(), // no time: the message timestamp counts
        r#"[{"user_id":"f","event":"login""#.to_owned(),
    ];
    kafka::produce(
        &brokers,
        &topic,
        messages.into_iter().map(|m| (None, m.into_bytes())),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &brokers, &topic);
    let pulse = Pulse::start(&run_args(&config_path));
    let snapshot = pulse.wait_for("all six messages", Duration::from_secs(60), |s| {
        accepted(s) == 5 && s["events"]["rejected"] == json!(3)
    });
    let reasons = &snapshot["events"]["rejected_by_reason"];
    assert_eq!(
        (reasons["not_json"].clone(), reasons["missing_user"].clone()),
        (json!(2), json!(1))
    );

    let dead_letter_topic = format!("{topic}.dlq");
    let letters =
        kafka::consume_all(&brokers, &dead_letter_topic, 3, Duration::from_secs(30)).await;
    kafka::delete_topic(&brokers, &dead_letter_topic).await;
    assert_eq!(letters.len(), 3);
    let header = |record: &kafka::Record, name: &str| {
        record
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let summary: Vec<[Option<String>; 4]> = letters
        .iter()
        .map(|r| {
            [
                "pulse.reason",
                "pulse.source.offset",
                "pulse.record.index",
                "pulse.source.topic",
            ]
            .map(|name| header(r, name))
        })
        .collect();
    let t = Some(topic.clone());
    assert_eq!(
        summary,
        vec![
            [Some("not_json".into()), Some("1".into()), None, t.clone()],
            [
                Some("missing_user".into()),
                Some("2".into()),
                Some("1".into()),
                t.clone()
            ],
            [Some("not_json".into()), Some("5".into()), None, t],
        ]
    );
    assert_eq!(letters[0].payload.as_deref(), Some(&b"not json at all"[..]));
    assert_eq!(
        letters[1].payload.as_deref(),
        Some(format!(r#"{{"event":"page_view","ts":{END_MS}}}"#).as_bytes())
    );

    let (_, metrics) = pulse.get("/metrics");
    assert_eq!(
        metric(&metrics, "pulse_events_rejected_total{reason=\"not_json\"}"),
        Some(2.0)
    );
    pulse.wait_for("dead letters settled", Duration::from_secs(10), |_| {
        metric(&pulse.get("/metrics").1, "pulse_dead_letters_total") == Some(3.0)
    });
    assert!(pulse.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_stop_and_restart_neither_loses_nor_double_counts() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "restart", 3).await;
    let (events, lines) = generate(&workload(51, 200));
    let keyed: Vec<(Option<String>, Vec<u8>)> = events
        .iter()
        .zip(&lines)
        .map(|(e, l)| (Some(e.user.to_string()), l.clone().into_bytes()))
        .collect();
    let half = keyed.len() / 2;
    kafka::produce(&brokers, &topic, keyed[..half].to_vec()).await;

    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &brokers, &topic);
    let first = Pulse::start(&run_args(&config_path));
    first.wait_for("the first half", Duration::from_secs(60), |s| {
        accepted(s) == half as u64
    });
    let status = first.stop(Duration::from_secs(30));
    assert!(status.success(), "a clean stop exits 0, got {status}");
    let checkpoints = std::fs::read_dir(dir.path().join("state")).unwrap().count();
    assert!(checkpoints >= 1, "the state was saved as a checkpoint");

    kafka::produce(&brokers, &topic, keyed[half..].to_vec()).await;
    let second = Pulse::start(&run_args(&config_path));
    let expected = kpis_only(&run_engine_open(&lines, engine_settings()));
    let snapshot = second.wait_for("every event exactly once", Duration::from_secs(60), |s| {
        accepted(s) >= events.len() as u64 && without_state(s.clone()) == expected
    });
    assert_eq!(
        accepted(&snapshot),
        events.len() as u64,
        "no event counted twice"
    );
    let records: Vec<Record> = events.into_iter().map(Record::Event).collect();
    let exact = live_oracle(&records, &engine_settings());
    assert_matches_exact(&without_state(snapshot), &exact, 0.03);
    assert!(second.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_makes_pulse_not_ready_until_it_returns() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let Some(broker) = kafka::broker_pid() else {
        pulse_tests::skip::not_applicable(
            "the outage test pauses the broker it started, and KAFKA_BROKERS is set",
        );
        return;
    };
    let (topic, _guard) = kafka::temp_topic(&brokers, "outage", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &brokers, &topic);
    let pulse = Pulse::start(&run_args(&config_path));
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(30));

    signal(broker, "STOP");
    let paused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pulse.wait_for_status("/readyz", 503, Duration::from_secs(30));
        assert_eq!(pulse.get("/healthz").0, 200, "alive while not ready");
    }));
    signal(broker, "CONT");
    paused.unwrap();

    pulse.wait_for_status("/readyz", 200, Duration::from_secs(60));
    let line = format!(r#"{{"user_id":"after","event":"login","ts":{END_MS}}}"#);
    kafka::produce(&brokers, &topic, [(None, line.into_bytes())]).await;
    pulse.wait_for(
        "the event sent after the outage",
        Duration::from_secs(60),
        |s| accepted(s) == 1,
    );
    assert!(pulse.stop(Duration::from_secs(30)).success());
}

#[test]
fn with_no_broker_at_start_consuming_does_not_wait_for_the_dead_letter_topic() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &format!("127.0.0.1:{port}"), "events");
    let pulse = Pulse::start(&run_args(&config_path));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pulse.log().contains("Consuming.") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pulse.get("/readyz").0, 503, "no broker, so not ready");
    let (status, log) = pulse.stop_and_log(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    let consuming = log.find("Consuming.").expect("pulse starts consuming");
    // Creating the dead-letter topic gives up only after the admin timeout; consuming (and
    // the broker probe behind /readyz) must not wait for that.
    if let Some(gave_up) = log.find("Cannot create topics") {
        assert!(consuming < gave_up, "{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_megabyte_message_is_rejected_dead_lettered_and_passed() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let large = [("max.message.bytes", kafka::LARGEST_RECORD)];
    let (topic, _guard) = kafka::temp_topic_with(&brokers, "huge", 1, &large).await;
    let (events, mut lines) = generate(&workload(83, 40));
    let huge = format!(
        r#"{{"user_id":"huge","event":"page_view","ts":{END_MS},"blob":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    let huge_at = lines.len() / 2;
    lines.insert(huge_at, huge.clone());
    kafka::produce(
        &brokers,
        &topic,
        lines.iter().map(|line| (None, line.clone().into_bytes())),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &brokers, &topic);
    let pulse = Pulse::start(&run_args(&config_path));
    // The replay of the same lines rejects the huge one by the same default limit (1 MiB).
    let expected = kpis_only(&run_engine_open(&lines, engine_settings()));
    assert_eq!(
        expected["events"]["rejected_by_reason"]["record_too_large"],
        json!(1)
    );
    let snapshot = pulse.wait_for(
        "every event, and the huge one rejected",
        Duration::from_secs(90),
        |s| {
            accepted(s) == events.len() as u64
                && json_diff(&without_state(s.clone()), &expected).is_empty()
        },
    );
    assert_eq!(snapshot["events"]["rejected"], json!(1));

    let dead_letter_topic = format!("{topic}.dlq");
    let letters =
        kafka::consume_all(&brokers, &dead_letter_topic, 2, Duration::from_secs(10)).await;
    kafka::delete_topic(&brokers, &dead_letter_topic).await;
    assert_eq!(letters.len(), 1, "one dead letter: the huge message");
    let letter = &letters[0];
    let header = |name: &str| {
        letter
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    };
    assert_eq!(header("pulse.reason").as_deref(), Some("record_too_large"));
    assert_eq!(header("pulse.source.offset"), Some(huge_at.to_string()));
    assert_eq!(header("pulse.truncated"), Some(huge.len().to_string()));
    let payload = letter.payload.as_deref().unwrap_or_default();
    assert!(
        !payload.is_empty() && payload.len() < 1_000_000 && huge.as_bytes().starts_with(payload),
        "the dead letter holds the start of the message ({} bytes)",
        payload.len()
    );
    pulse.wait_for("the dead letter counted", Duration::from_secs(10), |_| {
        metric(&pulse.get("/metrics").1, "pulse_dead_letters_total") == Some(1.0)
    });
    assert!(pulse.stop(Duration::from_secs(30)).success());
}

/// `pulse loadgen` sends each user to the partition `partitioner` names, and that is the
/// partition `pulse replay --partitions` puts the user's events in: checked against what
/// the broker stored, for both partitioners.
#[tokio::test(flavor = "multi_thread")]
async fn loadgen_partitions_users_as_replay_does() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    for partitioner in Partitioner::ALL {
        let (topic, _guard) = kafka::temp_topic(&brokers, "partitioner", 5).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pulse.toml");
        let setting = format!("partitioner = \"{}\"\n", partitioner.as_str());
        std::fs::write(&config, &setting).unwrap();
        let produced = loadgen_configured(&brokers, &topic, 60, 7, Some(config.to_str().unwrap()));
        let records =
            kafka::consume_all(&brokers, &topic, produced as usize, Duration::from_secs(60)).await;
        assert_eq!(records.len() as u64, produced);
        let mut used = std::collections::BTreeSet::new();
        for record in &records {
            let key = record.key.as_deref().expect("loadgen keys by user");
            let expected = partitioner.partition_of(key, 5) as i32;
            assert_eq!(record.partition, expected, "{partitioner:?}: key {key:?}");
            used.insert(record.partition);
        }
        assert_eq!(
            used.len(),
            5,
            "{partitioner:?}: 60 users reach every partition"
        );
    }
}
