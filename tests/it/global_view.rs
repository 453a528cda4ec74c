//! The global view across instances, over a real broker: one instance consumes the
//! workload and publishes its partitions' summaries; another, owning none of them (it
//! consumes an empty topic of its own), serves the same KPIs from the summaries topic,
//! ignores a stale owner's records and keeps serving after the publisher stops.

use std::path::Path;
use std::time::Duration;

use pulse_core::families::Summary;
use pulse_core::global_view::{PartitionHead, Publisher, SessionHold};
use pulse_core::ingest::Ingestor;
use pulse_tests::kafka;
use serde_json::Value;

use crate::helpers::{generate, json_diff, kpis_only, loadgen, run_engine_open, without_state};
use crate::kafka_tests::{
    SERIAL, engine_settings, run_args, workload, write_config_in_group, write_config_with,
};
use crate::process::{Pulse, metric};

/// Extra lines for a configuration: checkpoints often (the owner epoch a summary carries
/// is the checkpoint's claim), and the global view through `topic`.
fn global_view_lines(topic: &str) -> String {
    format!(
        "checkpoint_interval = \"300ms\"\n\
         [summaries]\nenabled = true\ntopic = \"{topic}\"\npublish_interval = \"300ms\"\n"
    )
}

fn diff_from(snapshot: &Value, expected: &Value) -> Vec<String> {
    json_diff(&without_state(snapshot.clone()), expected)
}

fn has_manifest(state: &Path, topic: &str, partition: i32) -> bool {
    let folder = state.join(format!("partitions/{topic}/{partition}"));
    std::fs::read_dir(folder).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("manifest-")))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_owning_no_partition_serves_the_global_kpis_from_the_topic() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "global", 3).await;
    let (own_topic, _own_guard) = kafka::temp_topic(&brokers, "global-empty", 1).await;
    let summaries = kafka::unique_name("summaries");
    loadgen(&brokers, &topic, 300, 47);
    let (_, lines) = generate(&workload(47, 300));
    let expected = kpis_only(&run_engine_open(&lines, engine_settings()));

    let publisher_dir = tempfile::tempdir().unwrap();
    let reader_dir = tempfile::tempdir().unwrap();
    let extra = global_view_lines(&summaries);
    let publisher_config = write_config_with(publisher_dir.path(), &brokers, &topic, &extra);
    let reader_config = write_config_with(reader_dir.path(), &brokers, &own_topic, &extra);
    let publisher = Pulse::start(&run_args(&publisher_config));
    let reader = Pulse::start(&run_args(&reader_config));
    reader.wait_for_status("/readyz", 200, Duration::from_secs(30));

    publisher.wait_for("the replay's KPIs", Duration::from_secs(90), |s| {
        diff_from(s, &expected).is_empty()
    });
    let served = reader.wait_for(
        "the same KPIs from the topic",
        Duration::from_secs(60),
        |s| {
            let diff = diff_from(s, &expected);
            if !diff.is_empty() {
                eprintln!("the reader differs: {diff:?}");
            }
            diff.is_empty()
        },
    );
    assert_eq!(
        served["events"]["accepted"], expected["events"]["accepted"],
        "counters come from the topic too"
    );
    let (status, metrics) = reader.get("/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "pulse_active_users{window=\"30d\"}"),
        expected["active_users"]["30d"].as_f64()
    );
    // Operational series stay the instance's own: it reads no partition of the workload.
    assert!(
        !metrics.contains(&format!("topic=\"{topic}\"")),
        "{metrics}"
    );

    // Once every partition has a checkpoint (an owner epoch of at least 1), a clean stop
    // publishes the last summaries under it.
    publisher.wait_for(
        "a checkpoint of every partition",
        Duration::from_secs(30),
        |_| (0..3).all(|p| has_manifest(&publisher_dir.path().join("state"), &topic, p)),
    );
    let (status, log) = publisher.stop_and_log(Duration::from_secs(30));
    assert!(status.success(), "{log}");

    // A stale owner (epoch 0) says partition 0 is empty; then a marker record, harmless to
    // the KPIs, shows in the reader's state bytes once it has read past both.
    let before = reader.snapshot().expect("a snapshot");
    let empty_head = |bytes| {
        let router = Ingestor::new(&engine_settings(), 0).state().clone();
        PartitionHead::new(&Default::default(), router, bytes, SessionHold::Done)
    };
    let mut records =
        Publisher::default().changed(&topic, 0, 0, &empty_head(0), &Summary::default());
    const MARKER_BYTES: u64 = 12_345;
    records.extend(Publisher::default().changed(
        "marker",
        0,
        0,
        &empty_head(MARKER_BYTES),
        &Summary::default(),
    ));
    kafka::produce(
        &brokers,
        &summaries,
        records.into_iter().map(|(key, value)| (Some(key), value)),
    )
    .await;
    let bytes = |s: &Value| s["state"]["estimated_bytes"].as_u64().unwrap();
    let after = reader.wait_for("the marker read", Duration::from_secs(30), |s| {
        bytes(s) == bytes(&before) + MARKER_BYTES
    });
    assert_eq!(
        diff_from(&after, &expected),
        Vec::<String>::new(),
        "the stale record is ignored, and the stopped publisher's summaries still count"
    );
    let (_, log) = reader.stop_and_log(Duration::from_secs(30));
    assert!(log.contains("Ignored a summary of a stale owner."), "{log}");
    kafka::delete_topic(&brokers, &summaries).await;
}

/// Two members of one group, each reading half the partitions, close sessions while they
/// run: each lets its session watermark go as far as the other's published holds say (a
/// member without them could never let it move, since it reads only some partitions), and
/// both serve the same session figures.
#[tokio::test(flavor = "multi_thread")]
async fn members_of_a_group_close_sessions_while_they_run() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "global-sessions", 4).await;
    let summaries = kafka::unique_name("summaries");
    let group = kafka::unique_name("pulse-sessions");
    let produced = loadgen(&brokers, &topic, 300, 53);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let extra = global_view_lines(&summaries);
    let start = |member: &str| {
        let own = dir.path().join(member);
        std::fs::create_dir_all(&own).unwrap();
        let config = write_config_in_group(&own, &brokers, &topic, &group, &extra);
        let mut args = run_args(&config);
        args.extend(["--state", state.to_str().unwrap()]);
        Pulse::start(&args)
    };
    let first = start("first");
    let second = start("second");
    let closed = |s: &Value| s["sessions"]["30d"]["count"].as_u64().unwrap_or(0);
    for member in [&first, &second] {
        member.wait_for(
            "every event and closed sessions, while running",
            Duration::from_secs(90),
            |s| s["events"]["accepted"].as_u64() == Some(produced) && closed(s) > 0,
        );
    }
    let settled = second.wait_for(
        "the first member's session figures",
        Duration::from_secs(30),
        |s| {
            first
                .snapshot()
                .is_some_and(|f| f["sessions"] == s["sessions"])
        },
    );
    assert!(closed(&settled) > 0);
    for member in [first, second] {
        let (status, log) = member.stop_and_log(Duration::from_secs(30));
        assert!(status.success(), "{log}");
    }
    kafka::delete_topic(&brokers, &summaries).await;
}
