//! Durable state: checkpoints aligned with Kafka offsets. SIGKILL at random points must not
//! lose or double-count an event; a history replayed from a file hands over to the live
//! service; an unreadable state directory stops pulse unless told to start over.

use std::time::Duration;

use pulse_core::EngineSettings;
use pulse_tests::{WorkloadConfig, kafka};

use crate::helpers::{
    assert_success, generate, json_diff, kpis_only, run_engine_open, without_state,
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
    let (events, lines) = generate(&config);
    let keyed: Vec<(Option<String>, Vec<u8>)> = events
        .iter()
        .zip(&lines)
        .map(|(e, l)| (Some(e.user.to_string()), l.clone().into_bytes()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
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
    let mut kills = 0;
    for (index, chunk) in chunks.iter().enumerate() {
        kafka::produce(&brokers, &topic, chunk.to_vec()).await;
        tokio::time::sleep(pauses[index]).await;
        if index < 6 {
            pulse.kill();
            kills += 1;
            pulse = Pulse::start(&args);
        }
    }
    assert!(kills >= 5);
    let expected = kpis_only(&run_engine_open(
        &lines,
        EngineSettings {
            shards: 2,
            ..EngineSettings::default()
        },
    ));
    let snapshot = pulse.wait_for(
        "the uninterrupted run's KPIs",
        Duration::from_secs(120),
        |s| {
            accepted(s) == events.len() as u64
                && json_diff(&without_state(s.clone()), &expected).is_empty()
        },
    );
    assert_eq!(snapshot["events"]["late_for_sessions"], 0);
    let (_, metrics) = pulse.get("/metrics");
    let written = crate::process::metric(&metrics, "pulse_checkpoints_total").unwrap_or(0.0);
    assert!(written >= 1.0, "checkpoints are reported: {written}");
    assert!(pulse.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_history_hands_over_to_the_live_service() {
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
    let state = dir.path().join("state");
    let output = Pulse::run_to_end(&[
        "replay",
        "--config",
        &config_path,
        "--compact",
        "--input",
        history.to_str().unwrap(),
        "--save-state",
        state.to_str().unwrap(),
    ]);
    assert_success(&output, "pulse replay --save-state");

    let live: Vec<(Option<String>, Vec<u8>)> = events[cut..]
        .iter()
        .zip(&lines[cut..])
        .map(|(e, l)| (Some(e.user.to_string()), l.clone().into_bytes()))
        .collect();
    kafka::produce(&brokers, &topic, live).await;
    let pulse = Pulse::start(&["run", "--config", &config_path, "--clock", "event-time"]);
    let expected = kpis_only(&run_engine_open(
        &lines,
        EngineSettings {
            shards: 2,
            ..EngineSettings::default()
        },
    ));
    pulse.wait_for("history plus live events", Duration::from_secs(60), |s| {
        accepted(s) == events.len() as u64
            && json_diff(&without_state(s.clone()), &expected).is_empty()
    });
    assert!(pulse.stop(Duration::from_secs(30)).success());
}

#[test]
fn an_unreadable_state_directory_stops_pulse_unless_reset() {
    let dir = tempfile::tempdir().unwrap();
    // No broker is needed: pulse must refuse before it connects, and with --reset-state it
    // serves (not ready) while the unreachable broker is retried.
    let config_path = write_config_with(dir.path(), "127.0.0.1:9", "nowhere", "");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let bad = state.join("checkpoint-00000000000000000001.bin");
    std::fs::write(&bad, b"definitely not a checkpoint").unwrap();

    let output = Pulse::run_to_end(&["run", "--config", &config_path, "--listen", "127.0.0.1:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("checkpoint-00000000000000000001.bin"),
        "{stderr}"
    );
    assert!(stderr.contains("--reset-state"), "{stderr}");

    let pulse = Pulse::start(&["run", "--config", &config_path, "--reset-state"]);
    pulse.wait_for_status("/healthz", 200, Duration::from_secs(10));
    assert_eq!(pulse.get("/readyz").0, 503, "no broker, so not ready");
    assert!(pulse.stop(Duration::from_secs(30)).success());
    // The clean stop wrote a fresh checkpoint; the unreadable one waits in discarded-….
    assert_ne!(std::fs::read(&bad).unwrap(), b"definitely not a checkpoint");
    let discarded = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("discarded-"))
        .expect("the old checkpoint is kept in a discarded-… folder");
    let moved = discarded.path().join("checkpoint-00000000000000000001.bin");
    assert_eq!(
        std::fs::read(moved).unwrap(),
        b"definitely not a checkpoint"
    );
}
