//! The global view across instances, over a real broker.
//!
//! - One instance consumes the workload and publishes its partitions' summaries; another,
//!   owning none of them (it consumes an empty topic of its own), serves the same KPIs from
//!   the summaries topic, ignores a stale owner's records and keeps serving after the
//!   publisher stops.
//! - Three instances of one consumer group on a 12-partition topic (`group`'s scaffolding)
//!   with the workload streaming in: every instance's `/v1/metrics` converges to the same
//!   KPIs, those of one instance alone and of `pulse replay`.
//! - One of the three killed with `kill -9`: the survivors keep counting its last summaries
//!   and count what arrives after the kill once its successors own and publish.
//!
//! - Two members of one group close sessions while they run.
//!
//! Sessions in a group: each instance's session watermark counts a partition it does not
//! read as far as the member that reads it published (`SessionHold`, as of that member's
//! latest durable checkpoint: `pulse-ingest` `kafka::watermarks`), so sessions close while
//! the members run, a checkpoint and a publish later than with one instance. Once the
//! stream is read to its end everywhere, the three members and one instance alone agree on
//! everything, the session statistics included. The replay closes every session at its
//! end, so the live comparisons with it leave them out ([`watermark_free`]); they are
//! checked exact where they are final: `pulse state show` of the group's checkpoints, which
//! closes them, against the replay, after the members stop ([`crate::group::finish`]).

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use pulse_core::families::Summary;
use pulse_core::global_view::{PartitionHead, Publisher, SessionHold};
use pulse_core::ingest::Ingestor;
use pulse_core::partitioner::Partitioner;
use pulse_tests::kafka;
use serde_json::Value;

use crate::group::{
    END_MS, Group, PARTITIONS, PATIENCE, SEED, TAKE_OVER_LIMIT, USERS, finish, own_all, owned,
    spread, wait_until,
};
use crate::helpers::{generate, json_diff, kpis_only, loadgen, run_engine_open, without_state};
use crate::kafka_tests::{
    SERIAL, accepted, engine_settings, run_args, workload, write_config_in_group, write_config_with,
};
use crate::process::{Pulse, metric};

/// The `[summaries]` table: the global view through `topic`, published every `interval`.
fn summaries_table(topic: &str, interval: &str) -> String {
    format!("[summaries]\nenabled = true\ntopic = \"{topic}\"\npublish_interval = \"{interval}\"\n")
}

/// Extra lines for a configuration: checkpoints often (the owner epoch a summary carries
/// is the checkpoint's claim), and the global view through `topic`.
fn global_view_lines(topic: &str) -> String {
    format!(
        "checkpoint_interval = \"300ms\"\n{}",
        summaries_table(topic, "300ms")
    )
}

/// A snapshot without what a session watermark decides (the session statistics) and
/// without `state` (which describes the process): see the module comment.
fn watermark_free(snapshot: &Value) -> Value {
    let mut value = without_state(snapshot.clone());
    let sections = value.as_object_mut().unwrap();
    sections.remove("sessions");
    sections.remove("session_durations");
    value
}

/// The figures of a view that [`wait_agreed`] compares.
type Figures = fn(&Value) -> Value;

/// A view's every figure, without `state` (which describes the process).
fn every_figure(snapshot: &Value) -> Value {
    without_state(snapshot.clone())
}

/// Waits until every member's view counts at least `events` accepted events and all agree
/// on `figures`, the same at two reads in a row; after [`PATIENCE`], panics with their
/// differences from the first one's, and their logs.
fn wait_agreed(members: &[&Pulse], events: u64, figures: Figures) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    let mut previous = Vec::new();
    loop {
        let views: Vec<Value> = members.iter().filter_map(|m| m.snapshot()).collect();
        let settled: Vec<Value> = views.iter().map(figures).collect();
        let differences: Vec<Vec<String>> = settled
            .iter()
            .map(|view| json_diff(view, &settled[0]))
            .collect();
        if views.len() == members.len()
            && views.iter().all(|v| accepted(v) >= events)
            && differences.iter().all(Vec::is_empty)
            && settled == previous
        {
            return views;
        }
        previous = settled;
        if Instant::now() > deadline {
            let logs: Vec<String> = members.iter().map(|m| m.log()).collect();
            panic!(
                "the views did not agree within {PATIENCE:?} ({} read):\n{differences:#?}\n\
                 accepted: {:?}\nlogs:\n{}",
                views.len(),
                views.iter().map(accepted).collect::<Vec<_>>(),
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn mau(snapshot: &Value) -> f64 {
    snapshot["active_users"]["30d"].as_f64().unwrap()
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

/// Issue 13's first test. The stream is `group`'s: the seeded workload at 3 000 events a
/// second into 12 partitions, which three members of one group share.
#[tokio::test(flavor = "multi_thread")]
async fn three_instances_converge_on_the_kpis_of_one_instance_and_of_the_replay() {
    let _serial = SERIAL.lock().await;
    let summaries = kafka::unique_name("summaries");
    let (mut group, _guard) =
        Group::new("global-converge", &summaries_table(&summaries, "300ms")).await;
    let members = vec![group.start(), group.start(), group.start()];
    let all: Vec<&Pulse> = members.iter().collect();
    wait_until("the group to spread the partitions", PATIENCE, &all, || {
        spread(&all)
    });
    drop(all);
    // One instance alone: a consumer group, a state and no summaries of its own.
    let alone_dir = tempfile::tempdir().unwrap();
    let alone_config = write_config_with(alone_dir.path(), &group.brokers, &group.topic, "");
    let alone = Pulse::start(&run_args(&alone_config));
    let mut producer = group.produce();
    assert!(producer.wait().unwrap().success());

    // One instance alone and the group's three agree on every figure, once they have
    // counted every event and their session watermarks have reached the end of the stream;
    // so does the replay of what the topic holds, but for the sessions it closes at its end.
    let views = wait_agreed(
        &[&alone, &members[0], &members[1], &members[2]],
        accepted(&group.replayed()),
        every_figure,
    );
    group
        .match_input_to_topic(accepted(&views[0]) as usize)
        .await;
    let replayed = group.replayed();
    for view in &views {
        assert_eq!(
            json_diff(&watermark_free(view), &watermark_free(&replayed)),
            Vec::<String>::new(),
            "the live views and the replay"
        );
    }
    eprintln!(
        "sessions in the group's view and one instance's: {}; replay: {}",
        views[1]["sessions"]["30d"], replayed["sessions"]["30d"]
    );
    finish(&group, producer, members, &[]).await;
    kafka::delete_topic(&group.brokers, &summaries).await;
}

/// How often the members of the owner-death test publish.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(2);

/// Issue 13: "after an owner dies, the global view lags by at most one publish interval".
/// The workload is produced and counted by all three first, so every figure is final and
/// none may fall; then one member is killed and new users' events arrive in every
/// partition, its orphans included, where only a successor can count them.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_owners_summaries_keep_counting_until_its_successors_publish() {
    let _serial = SERIAL.lock().await;
    let summaries = kafka::unique_name("summaries");
    let interval = format!("{}s", PUBLISH_INTERVAL.as_secs());
    let (mut group, _guard) =
        Group::new("global-death", &summaries_table(&summaries, &interval)).await;
    let members = [group.start(), group.start(), group.start()];
    let all: Vec<&Pulse> = members.iter().collect();
    wait_until("the group to spread the partitions", PATIENCE, &all, || {
        spread(&all)
    });
    let produced = loadgen(&group.brokers, &group.topic, USERS, SEED);
    let views = wait_agreed(&all, produced, watermark_free);
    group
        .match_input_to_topic(accepted(&views[0]) as usize)
        .await;
    let replayed = group.replayed();
    assert_eq!(
        json_diff(&watermark_free(&views[0]), &watermark_free(&replayed)),
        Vec::<String>::new(),
        "the views before the kill and the replay"
    );
    // The dead owner's successors then start from the figures its last summaries show.
    group.wait_for_checkpoints(accepted(&replayed), &all);

    let [a, b, victim] = members;
    let orphans = owned(&victim.log());
    let floor = (mau(&replayed), accepted(&replayed));
    victim.kill();
    // One new user per partition, a minute after the workload's end (the same day: no
    // window loses a user, so no figure may fall), keyed as loadgen keys.
    let arrivals: Vec<(String, String)> = (0..PARTITIONS as u32)
        .map(|partition| {
            let user = (0..)
                .map(|n| format!("u-after-{n}"))
                .find(|user| Partitioner::Murmur2.partition_of(user.as_bytes(), 12) == partition)
                .unwrap();
            let line = format!(
                r#"{{"user_id":"{user}","event":"page_view","ts":{}}}"#,
                END_MS + 60_000
            );
            (user, line)
        })
        .collect();
    kafka::produce(
        &group.brokers,
        &group.topic,
        arrivals
            .iter()
            .map(|(user, line)| (Some(user.clone()), line.clone().into_bytes())),
    )
    .await;
    let mut input = std::fs::read_to_string(&group.input).unwrap();
    for (_, line) in &arrivals {
        input.push('\n');
        input.push_str(line);
    }
    std::fs::write(&group.input, input).unwrap();
    let expected = watermark_free(&group.replayed());
    assert!(mau(&expected) > floor.0, "the new users count");

    // Every view the survivors serve during the hand-over, checked as it is read: the dead
    // owner's partitions never leave it (they hold a third of the users and events).
    let survivors = [&a, &b];
    let views_read = Cell::new(0);
    let current = || -> Vec<Value> {
        let views: Vec<Value> = survivors.iter().filter_map(|s| s.snapshot()).collect();
        for view in &views {
            assert!(
                mau(view) >= floor.0 && accepted(view) >= floor.1,
                "a survivor's view lost the dead owner's partitions: 30d active users {} \
                 (before the kill {}), accepted {} (before {})",
                mau(view),
                floor.0,
                accepted(view),
                floor.1
            );
        }
        views_read.set(views_read.get() + views.len());
        views
    };
    let taken_over = wait_until(
        "the successors to own the dead owner's partitions",
        TAKE_OVER_LIMIT,
        &survivors,
        || {
            current();
            own_all(&survivors, &orphans)
        },
    );
    // Once the successors own the partitions, each reads the new event of each orphan it
    // took (under a second: a fetch from the loaded offset), publishes at its next publish
    // (at most one interval), and the other survivor has it after the broker's delivery,
    // its summaries reader's next fetch and its next snapshot (a refresh interval, 300 ms):
    // about a second all told on an idle machine; the margin allows five, for a machine
    // shared with other builds and tests.
    const MARGIN: Duration = Duration::from_secs(5);
    let lag = wait_until(
        "every survivor's view to count the events after the kill",
        PUBLISH_INTERVAL + MARGIN,
        &survivors,
        || {
            let views = current();
            views.len() == survivors.len() && views.iter().all(|v| watermark_free(v) == expected)
        },
    );
    eprintln!(
        "partitions {orphans:?} owned again after {taken_over:?}; the survivors' views \
         complete {lag:?} later; {} views read, none short of the dead owner's figures",
        views_read.get()
    );
    for survivor in [a, b] {
        let (status, log) = survivor.stop_and_log(Duration::from_secs(60));
        assert!(status.success(), "{log}");
    }
    kafka::delete_topic(&group.brokers, &summaries).await;
}
