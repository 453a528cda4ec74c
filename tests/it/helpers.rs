//! Helpers shared by the integration tests: workloads, engine runs, tolerant comparison.

use std::path::PathBuf;

use pulse_core::{Engine, EngineSettings, KpiSnapshot};
use pulse_tests::{GeneratedEvent, OracleSettings, WorkloadConfig, exact_snapshot};
use serde_json::Value;

/// A fixed wall clock after every generated event, so nothing is "future" and runs repeat.
pub const WALL_MS: i64 = 1_900_000_000_000;

pub fn generate(config: &WorkloadConfig) -> (Vec<GeneratedEvent>, Vec<String>) {
    let events = pulse_workload::generate(config);
    let lines = events.iter().map(GeneratedEvent::to_json).collect();
    (events, lines)
}

/// Runs the whole input through an engine and closes every session, as replay does.
pub fn run_engine(lines: &[String], settings: EngineSettings) -> KpiSnapshot {
    let mut engine = feed_engine(lines, settings);
    engine.close_all_sessions();
    engine.snapshot()
}

/// Runs the whole input through an engine and leaves open sessions open, as a live service
/// on the event-time clock does at the end of a topic.
pub fn run_engine_open(lines: &[String], settings: EngineSettings) -> KpiSnapshot {
    feed_engine(lines, settings).snapshot()
}

fn feed_engine(lines: &[String], settings: EngineSettings) -> Engine {
    let mut engine = Engine::new(settings, WALL_MS);
    for line in lines {
        engine.ingest(line.as_bytes(), None);
    }
    engine
}

pub fn oracle(events: &[GeneratedEvent], settings: &EngineSettings) -> Value {
    let oracle_settings = OracleSettings {
        timezone: settings.timezone.clone(),
        session_timeout_ms: settings.session_timeout_ms,
        session_max_length_ms: settings.session_max_length_ms,
        ..OracleSettings::default()
    };
    exact_snapshot(events, &oracle_settings)
}

/// Exact distinct users over the recent windows: the current minute of the latest event
/// and the 4 (5m) or 59 (1h) minutes before it.
pub fn exact_recent(events: &[GeneratedEvent]) -> (u64, u64) {
    let now_minute = events
        .iter()
        .map(|e| e.ts_ms)
        .max()
        .unwrap_or(0)
        .div_euclid(60_000);
    let users = |minutes: i64| {
        let set: std::collections::HashSet<String> = events
            .iter()
            .filter(|e| e.ts_ms.div_euclid(60_000) > now_minute - minutes)
            .map(|e| e.user.to_string())
            .collect();
        set.len() as u64
    };
    (users(5), users(60))
}

/// The snapshot without the fields that describe the run rather than the data.
pub fn kpis_only(snapshot: &KpiSnapshot) -> Value {
    without_state(serde_json::to_value(snapshot).unwrap())
}

/// A JSON snapshot (from `/v1/metrics` or `replay`) without its `state` (shards, bytes).
pub fn without_state(mut value: Value) -> Value {
    value.as_object_mut().unwrap().remove("state");
    value
}

fn num(value: &Value, path: &str) -> f64 {
    value
        .pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing or not a number in {value}"))
}

/// Asserts every KPI of the engine against the exact model: distinct counts and ratios
/// built on them within `count_tolerance`, session figures exact, quantiles within 1 %.
pub fn assert_matches_exact(engine: &Value, exact: &Value, count_tolerance: f64) {
    let mut failures = Vec::new();
    let mut check = |path: String, tolerance: f64| {
        let (got, want) = (num(engine, &path), num(exact, &path));
        // Half a user of slack: the engine reports rounded estimates.
        let slack = want.abs() * tolerance + if tolerance > 0.0 { 0.5 } else { 1e-9 };
        if (got - want).abs() > slack {
            failures.push(format!("{path}: engine {got}, exact {want}"));
        }
    };
    check("/events/accepted".into(), 0.0);
    for window in ["1d", "7d", "30d"] {
        for family in ["active_users", "active_users_previous", "new_users"] {
            check(format!("/{family}/{window}"), count_tolerance);
        }
        for exact_field in [
            "count",
            "avg_duration_seconds",
            "bounce_rate",
            "events_per_session",
        ] {
            check(format!("/sessions/{window}/{exact_field}"), 0.0);
        }
        for quantile in ["p50_duration_seconds", "p90_duration_seconds"] {
            check(format!("/sessions/{window}/{quantile}"), 0.01);
        }
        check(
            format!("/sessions/{window}/sessions_per_user"),
            count_tolerance,
        );
    }
    for ratio in ["dau_mau", "dau_wau", "wau_mau"] {
        check(format!("/stickiness/{ratio}"), count_tolerance);
    }
    let names =
        |v: &Value| -> Vec<String> { v["features"].as_object().unwrap().keys().cloned().collect() };
    assert_eq!(names(engine), names(exact), "tracked features");
    for name in names(exact) {
        let escaped = name.replace('~', "~0").replace('/', "~1");
        for window in ["1d", "7d", "30d"] {
            check(
                format!("/features/{escaped}/active_users/{window}"),
                count_tolerance,
            );
            check(
                format!("/features/{escaped}/adoption/{window}"),
                count_tolerance,
            );
        }
    }
    assert_eq!(engine["as_of"], exact["as_of"]);
    assert!(
        failures.is_empty(),
        "engine differs from the exact model:\n{}",
        failures.join("\n")
    );
}

/// The `pulse` binary built next to this test binary.
pub fn pulse_bin() -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("pulse{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build -p pulse` first",
        bin.display()
    );
    bin
}

/// The folder of checked-in golden files.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// The paths where two JSON values differ, for readable failures.
pub fn json_diff(left: &Value, right: &Value) -> Vec<String> {
    fn walk(path: String, l: &Value, r: &Value, out: &mut Vec<String>) {
        match (l, r) {
            (Value::Object(a), Value::Object(b)) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    let (x, y) = (
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                    );
                    walk(format!("{path}/{key}"), x, y, out);
                }
            }
            _ if l != r => out.push(format!("{path}: {l} != {r}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(String::new(), left, right, &mut out);
    out
}

/// `pulse loadgen` of the seeded workload (35 days ending 2026-03-01T12:00Z) into `topic`;
/// returns how many events it produced.
pub fn loadgen(brokers: &str, topic: &str, users: u32, seed: u64) -> u64 {
    loadgen_configured(brokers, topic, users, seed, None)
}

/// [`loadgen`] with a configuration file, for its `[kafka.properties]` (TLS, say).
pub fn loadgen_configured(
    brokers: &str,
    topic: &str,
    users: u32,
    seed: u64,
    config: Option<&str>,
) -> u64 {
    let output = std::process::Command::new(pulse_bin())
        .args(["loadgen", "--brokers", brokers, "--topic", topic])
        .args(config.map(|path| ["--config", path]).into_iter().flatten())
        .args([
            "--users",
            &users.to_string(),
            "--days",
            "35",
            "--seed",
            &seed.to_string(),
        ])
        .args(["--end", "2026-03-01T12:00:00Z"])
        .env_remove("PULSE_CONFIG")
        .output()
        .unwrap();
    assert_success(&output, "pulse loadgen");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// Fails the test, with everything the command printed, unless it exited with success.
pub fn assert_success(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
