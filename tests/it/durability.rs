//! Durable state: checkpoints aligned with Kafka offsets. SIGKILL at random points must not
//! lose or double-count an event; a history replayed from a file hands over to the live
//! service (from a directory and from S3); an unreadable state directory stops pulse unless
//! told to start over; a pulse whose partitions another instance claimed stops.

use std::path::Path;
use std::time::Duration;

use pulse_core::EngineSettings;
use pulse_core::partition::total_counters;
use pulse_ingest::state_store::StateStore;
use pulse_tests::s3::S3Server;
use pulse_tests::{Record, WorkloadConfig, kafka};

use crate::helpers::{
    assert_matches_exact, assert_success, generate, golden_dir, json_diff, kpis_only, live_oracle,
    run_engine_open, with_defects, without_state,
};
use crate::kafka_tests::{SERIAL, accepted, write_config_with};
use crate::process::Pulse;

const END_MS: i64 = 1_772_366_400_000;

/// A small deterministic generator for the crash points (no dependency needed).
fn pauses(seed: u64, count: usize) -> Vec<Duration> {
    let mut x = seed;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(200 + x % 1_300)
        })
        .collect()
}

/// Records applied in the newest durable checkpoint of `state`, read as `pulse run` reads
/// it at start; `None` until there is one (or while one is being replaced).
async fn durable_accepted(state: &Path) -> Option<u64> {
    // Inspected, not loaded: loading would claim the partitions and fence the running pulse.
    StateStore::new(state)
        .inspect()
        .await
        .ok()
        .flatten()
        .map(|saved| total_counters(saved.engine.partitions.iter().map(|p| &p.inputs)).accepted)
}

/// Waits until the newest durable checkpoint holds more than `before` applied records.
pub async fn durable_beyond(state: &Path, before: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match durable_accepted(state).await {
            Some(now) if now > before => return now,
            _ if tokio::time::Instant::now() > deadline => {
                panic!("no checkpoint beyond {before} applied records within a minute")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_points_loses_and_doubles_nothing() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "crash", 3).await;
    let config = WorkloadConfig {
        seed: 61,
        users: 300,
        days: 35,
        end_ms: END_MS,
        ..WorkloadConfig::default()
    };
    let (events, _) = generate(&config);
    // Malformed, late and future records among the events: their counters must survive
    // the crashes exactly once too.
    let records = with_defects(&events, true);
    let lines: Vec<String> = records.iter().map(Record::line).collect();
    let keyed: Vec<(Option<String>, Vec<u8>)> = records
        .iter()
        .map(|r| (r.key(), r.line().into_bytes()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config_path = write_config_with(
        dir.path(),
        &brokers,
        &topic,
        "checkpoint_interval = \"200ms\"\n",
    );
    let args = [
        "run",
        "--config",
        config_path.as_str(),
        "--clock",
        "event-time",
    ];

    let chunks: Vec<&[(Option<String>, Vec<u8>)]> = keyed.chunks(keyed.len() / 8 + 1).collect();
    let pauses = pauses(0x5eed, chunks.len());
    let mut pulse = Pulse::start(&args);
    // Applied records in the newest durable checkpoint at each kill.
    let mut durable_at_kills: Vec<u64> = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        kafka::produce(&brokers, &topic, chunk.to_vec()).await;
        tokio::time::sleep(pauses[index]).await;
        if index < 6 {
            // Each kill comes after this run made records durable that the previous one had
            // not: the crash then strikes a process that has restored, applied more and
            // checkpointed, not one still starting up.
            let before = durable_at_kills.last().copied().unwrap_or(0);
            durable_beyond(&state, before).await;
            pulse.kill();
            durable_at_kills.push(
                durable_accepted(&state)
                    .await
                    .expect("a checkpoint survives"),
            );
            pulse = Pulse::start(&args);
        }
    }
    // Six kills, each after a checkpoint beyond the previous one's, all before the last
    // chunks were even produced: mid-stream, with records applied before and after.
    assert_eq!(durable_at_kills.len(), 6);
    assert!(
        durable_at_kills.windows(2).all(|w| w[0] < w[1]),
        "{durable_at_kills:?}"
    );
    let applied_at_last_kill = *durable_at_kills.last().unwrap();
    assert!(
        applied_at_last_kill < events.len() as u64,
        "the last kill left records to apply: {durable_at_kills:?}"
    );
    let settings = EngineSettings {
        shards: 2,
        ..EngineSettings::default()
    };
    let expected = kpis_only(&run_engine_open(&lines, settings.clone()));
    let exact = live_oracle(&records, &settings);
    let snapshot = pulse.wait_for(
        "the uninterrupted run's KPIs",
        Duration::from_secs(120),
        |s| {
            accepted(s) == events.len() as u64
                && json_diff(&without_state(s.clone()), &expected).is_empty()
        },
    );
    assert_eq!(snapshot["events"]["late_for_sessions"], 0);
    // An uninterrupted replay is pulse's own answer; the independent model must agree.
    assert_matches_exact(&without_state(snapshot.clone()), &exact, 0.03);
    let (_, metrics) = pulse.get("/metrics");
    let written = crate::process::metric(&metrics, "pulse_checkpoints_total").unwrap_or(0.0);
    assert!(written >= 1.0, "checkpoints are reported: {written}");
    assert!(pulse.stop(Duration::from_secs(30)).success());
    kafka::delete_topic(&brokers, &format!("{topic}.dlq")).await;
    eprintln!("kills after durable checkpoints of {durable_at_kills:?} applied records");
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_history_hands_over_to_the_live_service() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    hand_over(state.to_str().unwrap(), &[]).await;
}

/// The same through object storage: the history replayed to moto's S3 server, `pulse run`
/// loading it from there and checkpointing back.
#[tokio::test(flavor = "multi_thread")]
async fn a_history_replayed_to_s3_hands_over_to_the_live_service() {
    let s3 = S3Server::start("pulse-handover");
    hand_over("s3://pulse-handover/history", &s3.client_env()).await;
}

/// A history replayed into `state` (a directory or URL, reached with `env`), then `pulse
/// run` from it on the rest of the events: the KPIs of one uninterrupted run.
async fn hand_over(state: &str, env: &[(String, String)]) {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "handover", 2).await;
    let config = WorkloadConfig {
        seed: 71,
        users: 200,
        days: 35,
        end_ms: END_MS,
        ..WorkloadConfig::default()
    };
    let (events, lines) = generate(&config);
    let cut = lines.len() * 6 / 10;
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.ndjson");
    std::fs::write(&history, lines[..cut].join("\n")).unwrap();
    let config_path = write_config_with(dir.path(), &brokers, &topic, "");
    replay_into(&config_path, &history, state, &[], env);

    let live: Vec<(Option<String>, Vec<u8>)> = events[cut..]
        .iter()
        .zip(&lines[cut..])
        .map(|(e, l)| (Some(e.user.to_string()), l.clone().into_bytes()))
        .collect();
    kafka::produce(&brokers, &topic, live).await;
    let args = ["run", "--config", &config_path, "--clock", "event-time"];
    let pulse = Pulse::start_with_env(&[&args[..], &["--state", state]].concat(), env);
    let settings = EngineSettings {
        shards: 2,
        ..EngineSettings::default()
    };
    let expected = kpis_only(&run_engine_open(&lines, settings.clone()));
    let snapshot = pulse.wait_for("history plus live events", Duration::from_secs(60), |s| {
        accepted(s) == events.len() as u64
            && json_diff(&without_state(s.clone()), &expected).is_empty()
    });
    let events_len = events.len() as u64;
    let records: Vec<Record> = events.into_iter().map(Record::Event).collect();
    assert_matches_exact(
        &without_state(snapshot),
        &live_oracle(&records, &settings),
        0.03,
    );
    assert!(pulse.stop(Duration::from_secs(30)).success());
    let saved = StateStore::open(state, 3, env)
        .unwrap()
        .inspect()
        .await
        .unwrap();
    let applied = saved.map(|s| total_counters(s.engine.partitions.iter().map(|p| &p.inputs)));
    assert_eq!(
        applied.map(|c| c.accepted),
        Some(events_len),
        "the clean stop checkpointed every event back to {state}"
    );
}

/// The stale owner of issue 13: while a pulse runs, another instance loads its state (and so
/// claims every partition). The running one's next checkpoints are refused; it says that it
/// lost each partition, drops it (its records are the new owner's to apply) and runs on,
/// and never overwrites the new owner's state.
#[tokio::test(flavor = "multi_thread")]
async fn a_pulse_whose_partitions_were_taken_over_drops_them_and_runs_on() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "stale", 2).await;
    let (events, lines) = generate(&WorkloadConfig {
        seed: 81,
        users: 50,
        days: 3,
        end_ms: END_MS,
        ..WorkloadConfig::default()
    });
    let keyed: Vec<(Option<String>, Vec<u8>)> = events
        .iter()
        .zip(&lines)
        .map(|(e, l)| (Some(e.user.to_string()), l.clone().into_bytes()))
        .collect();
    kafka::produce(&brokers, &topic, keyed).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let interval = "checkpoint_interval = \"200ms\"\n";
    let config_path = write_config_with(dir.path(), &brokers, &topic, interval);
    let pulse = Pulse::start(&["run", "--config", &config_path, "--clock", "event-time"]);
    durable_beyond(&state, 0).await;
    let taken = StateStore::new(&state).load().await.unwrap();
    let taken = taken.expect("the new owner loaded the state").offsets;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pulse.log().matches("dropping it here").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", pulse.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    pulse.wait_for_status("/healthz", 200, Duration::from_secs(10));
    let (status, log) = pulse.stop_and_log(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    assert!(log.contains("lost partition"), "{log}");
    let now = StateStore::new(&state).inspect().await.unwrap().unwrap();
    assert_eq!(now.offsets, taken, "the new owner's checkpoints stand");
}

/// `pulse replay --save-state STATE` of `input` (with `extra` arguments and `env`), which
/// must succeed.
pub fn replay_into(
    config_path: &str,
    input: &Path,
    state: &str,
    extra: &[&str],
    env: &[(String, String)],
) {
    let mut args = vec!["replay", "--config", config_path, "--compact"];
    args.extend(extra);
    args.extend(["--input", input.to_str().unwrap(), "--save-state", state]);
    let output = Pulse::run_to_end_with_env(&args, env);
    assert_success(&output, "pulse replay --save-state");
}

/// A state directory whose only checkpoint is `checkpoint`: pulse must refuse to start,
/// naming everything in `expected` and leaving the file as it was; with `--reset-state` it
/// serves (not ready: no broker is needed to test this) and keeps the old file in a
/// `discarded-…` folder, never deleted.
fn refused_until_reset(checkpoint: &[u8], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config_with(dir.path(), "127.0.0.1:9", "nowhere", "");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let name = "checkpoint-00000000000000000001.bin";
    std::fs::write(state.join(name), checkpoint).unwrap();

    let output = Pulse::run_to_end(&["run", "--config", &config_path, "--listen", "127.0.0.1:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [name].iter().chain(expected) {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read(state.join(name)).unwrap(),
        checkpoint,
        "left as it was"
    );

    let pulse = Pulse::start(&["run", "--config", &config_path, "--reset-state"]);
    pulse.wait_for_status("/healthz", 200, Duration::from_secs(10));
    assert_eq!(pulse.get("/readyz").0, 503, "no broker, so not ready");
    assert!(pulse.stop(Duration::from_secs(30)).success());
    // The old checkpoint waits in discarded-…, not where pulse would load it again.
    assert!(!state.join(name).exists());
    let discarded = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("discarded-"))
        .expect("the old checkpoint is kept in a discarded-… folder");
    assert_eq!(
        std::fs::read(discarded.path().join(name)).unwrap(),
        checkpoint
    );
}

#[test]
fn an_unreadable_state_directory_stops_pulse_unless_reset() {
    refused_until_reset(b"definitely not a checkpoint", &["--reset-state"]);
}

/// A state directory of pulse 0.1 (checkpoint format 1, by user-hash shard) cannot be split
/// by partition: pulse refuses it, saying what to do — never a silent start from empty.
#[test]
fn a_state_of_the_previous_format_is_refused_with_what_to_do() {
    let name = "checkpoint-00000000000000000001.bin";
    let v1 = std::fs::read(golden_dir().join("state-v1").join(name)).unwrap();
    assert_eq!(&v1[8..10], &1u16.to_le_bytes(), "a format 1 checkpoint");
    refused_until_reset(
        &v1,
        &[
            "format version 1",
            "pulse replay",
            "--partitions",
            "--reset-state",
        ],
    );
}
