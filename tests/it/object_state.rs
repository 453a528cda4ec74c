//! Partition state in object storage (issue 13): against moto's S3 server, a stale owner is
//! fenced and the new owner's state wins; `pulse replay --save-state s3://… --partitions N`
//! writes one state per partition; and against the real broker, a topic whose partition
//! count changed since the state was saved is refused with the way forward.

use std::time::Duration;

use pulse_core::partition::total_counters;
use pulse_core::{Engine, EngineSettings};
use pulse_ingest::partition_numbers::PartitionNumbers;
use pulse_ingest::state_store::{Offsets, StateStore, StateStoreError, TopicSizes};
use pulse_ingest::topic_partition::TopicPartition;
use pulse_tests::s3::S3Server;
use pulse_tests::{kafka, small_workload};
use serde_json::Value;

use crate::durability::replay_into;
use crate::helpers::{WALL_MS, assert_success, generate, kpis_only};
use crate::kafka_tests::{SERIAL, write_config_with};
use crate::process::Pulse;

const BUCKET: &str = "pulse-state";
const WALL: &str = "2030-01-01T00:00:00Z";

fn offsets(next: i64) -> Offsets {
    (0..3)
        .map(|p| (TopicPartition::new("events", p), next + i64::from(p)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_owner_cannot_overwrite_state_in_s3() {
    let s3 = S3Server::start(BUCKET);
    let url = format!("s3://{BUCKET}/fencing");
    let open = || StateStore::open(&url, 3, &s3.client_env()).unwrap();
    let (_, lines) = generate(&small_workload(131));
    let settings = EngineSettings {
        partitions: 3,
        ..EngineSettings::default()
    };
    let mut engine = Engine::new(settings.clone(), WALL_MS);
    for line in &lines {
        engine.ingest(line.as_bytes(), None);
    }
    let numbers = PartitionNumbers::virtual_partitions("events", 3);
    let sizes: TopicSizes = [("events".to_owned(), 3)].into();

    let old = open();
    assert_eq!(old.load().await.unwrap().map(|s| s.offsets), None, "empty");
    old.save(engine.state(), &numbers, &offsets(10), &sizes, 1)
        .await
        .unwrap();
    // A second instance takes the partitions over, as after a rebalance.
    let new = open();
    let saved = new.load().await.unwrap().expect("the old owner's state");
    assert_eq!(saved.offsets, offsets(10));
    assert_eq!(saved.topic_sizes, sizes);
    let mut restored = Engine::restore(settings, WALL_MS, saved.engine);
    assert_eq!(
        kpis_only(&restored.snapshot()),
        kpis_only(&engine.snapshot())
    );
    // The old owner resumes from a pause and saves: refused, with the reason.
    let error = old
        .save(engine.state(), &numbers, &offsets(99), &sizes, 2)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StateStoreError::Fenced {
                epoch: 1,
                newer_epoch: 2,
                ..
            }
        ),
        "{error:?}"
    );
    new.save(restored.state(), &numbers, &offsets(20), &sizes, 3)
        .await
        .unwrap();
    let newest = open().inspect().await.unwrap().unwrap();
    assert_eq!(
        newest.offsets,
        offsets(20),
        "the new owner's state, not the stale one's"
    );
}

fn replay_to(url: &str, input: &std::path::Path, s3: &S3Server) -> std::process::Output {
    let input = input.to_str().unwrap();
    let args = [
        "replay",
        "--compact",
        "--wall-clock",
        WALL,
        "--partitions",
        "4",
    ];
    let args = [&args[..], &["--input", input, "--save-state", url]].concat();
    Pulse::run_to_end_with_env(&args, &s3.client_env())
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_writes_the_state_of_each_partition_to_s3() {
    let s3 = S3Server::start(BUCKET);
    let url = format!("s3://{BUCKET}/history");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    let (_, lines) = generate(&small_workload(132));
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = replay_to(&url, &input, &s3);
    assert_success(&output, "pulse replay --save-state s3://…");
    let snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();

    let saved = StateStore::open(&url, 3, &s3.client_env())
        .unwrap()
        .inspect()
        .await
        .unwrap()
        .expect("state saved");
    let partitions: Vec<TopicPartition> =
        (0..4).map(|p| TopicPartition::new("events", p)).collect();
    assert_eq!(saved.numbers.keys(), partitions);
    assert_eq!(saved.topic_sizes, [("events".to_owned(), 4)].into());
    assert!(saved.offsets.is_empty(), "a replay has no Kafka offsets");
    let accepted = total_counters(saved.engine.partitions.iter().map(|p| &p.inputs)).accepted;
    assert_eq!(Some(accepted), snapshot["events"]["accepted"].as_u64());

    // What an operator sees of that location: the replay's snapshot, to the last field.
    let args = ["state", "show", "--compact", "--wall-clock", WALL];
    let shown = Pulse::run_to_end_with_env(
        &[&args[..], &["--state-url", &url]].concat(),
        &s3.client_env(),
    );
    assert_success(&shown, "pulse state show --state-url s3://…");
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown, snapshot);

    // A second replay into the same location would overwrite a history: refused.
    let again = replay_to(&url, &input, &s3);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already holds checkpoints"), "{stderr}");
}

/// A topic grown from 2 to 3 partitions: users now hash to other partitions, so the state
/// saved for 2 must not be continued; pulse says how to rebuild it.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_count_change_is_refused_with_the_way_forward() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "grown", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config_with(dir.path(), &brokers, &topic, "");
    let input = dir.path().join("events.ndjson");
    let (_, lines) = generate(&small_workload(133));
    std::fs::write(&input, lines[..2_000].join("\n")).unwrap();
    let state = dir.path().join("state");
    let extra = ["--wall-clock", WALL, "--partitions", "2"];
    replay_into(&config_path, &input, state.to_str().unwrap(), &extra, &[]);
    let pulse = Pulse::start(&["run", "--config", &config_path]);
    let (status, log) = pulse.exited(Duration::from_secs(60));
    assert!(!status.success(), "{log}");
    for expected in [
        "had 2 partitions",
        "has 3 now",
        "--partitions 3",
        "--reset-state",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from: {log}");
    }
}
