//! The `pulse` binary: replay from a file and from stdin with any shard count, and clear
//! failures for bad input paths and bad configuration.

use std::io::Write;
use std::process::{Command, Stdio};

use pulse_core::EngineSettings;
use pulse_tests::small_workload;
use serde_json::Value;

use crate::helpers::{assert_success, generate, kpis_only, pulse_bin, run_engine, without_state};

const WALL: &str = "2030-01-01T00:00:00Z";

fn replay(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(pulse_bin())
        .args(["replay", "--compact", "--wall-clock", WALL])
        .args(args)
        .env_remove("PULSE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

#[test]
fn replay_equals_the_engine_for_any_workers_and_partitions_and_stdin() {
    let (_, lines) = generate(&small_workload(31));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let path = path.to_str().unwrap();

    let expected = kpis_only(&run_engine(&lines, EngineSettings::default()));
    for (shards, partitions) in [("1", "1"), ("3", "3"), ("2", "5")] {
        let args = [
            "--input",
            path,
            "--shards",
            shards,
            "--partitions",
            partitions,
        ];
        let output = replay(&args, None);
        assert_success(&output, "pulse replay");
        let snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            without_state(snapshot),
            expected,
            "shards = {shards}, partitions = {partitions}"
        );
    }
    let output = replay(&["--input", "-"], Some(&lines.join("\n")));
    assert!(output.status.success());
    let snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(without_state(snapshot), expected, "stdin");
}

#[test]
fn missing_input_and_bad_config_fail_clearly() {
    let output = replay(&["--input", "/nonexistent/events.ndjson"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/events.ndjson"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pulse.toml");
    std::fs::write(&config, "[sessions]\ntimeout = \"-5m\"\n").unwrap();
    let output = replay(
        &["--input", "-", "--config", config.to_str().unwrap()],
        Some(""),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timeout"), "{stderr}");
}

#[test]
fn check_config_prints_the_effective_settings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pulse.toml");
    std::fs::write(&config, "timezone = \"Europe/Berlin\"\n").unwrap();
    let output = Command::new(pulse_bin())
        .args(["check-config", "--config", config.to_str().unwrap()])
        .env("PULSE_SESSIONS__TIMEOUT", "45m")
        .output()
        .unwrap();
    assert_success(&output, "pulse check-config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("timezone = \"Europe/Berlin\""), "{stdout}");
    assert!(stdout.contains("timeout = \"45m\""), "{stdout}");
    assert!(stdout.contains("lg_k = 14"), "{stdout}");
}

/// `pulse check-config` with `args`, and of the environment's `PULSE_…` variables only
/// `env`: a variable the caller (or the test runner) set would be read as a setting.
fn check_config(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(pulse_bin());
    command.arg("check-config").args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("PULSE_") || name == "KAFKA_BROKERS" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied()).output().unwrap()
}

/// A failed command says what went wrong once, naming the key as the user wrote it (not
/// figment's `default.kafka.brokrs`) and where it was set: the file or the variable.
#[test]
fn a_configuration_error_is_printed_once_in_the_users_words() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pulse.toml");
    std::fs::write(&config, "[kafka]\nbrokrs = \"localhost:9092\"\n").unwrap();
    let output = check_config(&["--config", config.to_str().unwrap()], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("brokrs").count(),
        2,
        "once, key and found: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("kafka.brokrs: unknown field"), "{stderr}");
    assert!(!stderr.contains("default."), "{stderr}");
    assert!(stderr.contains(config.to_str().unwrap()), "{stderr}");

    let output = check_config(&[], &[("PULSE_SESSIONS__TIMEOUT", "soon")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("sessions.timeout:"), "{stderr}");
    assert!(
        stderr.contains("set by PULSE_SESSIONS__TIMEOUT"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("config.rs"),
        "no source location: {stderr}"
    );
}
