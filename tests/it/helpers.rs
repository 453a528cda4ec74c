//! Helpers shared by the integration tests: workloads, engine runs, tolerant comparison.

use std::path::PathBuf;

use pulse_core::{Engine, EngineSettings, KpiSnapshot};
use pulse_tests::{
    FieldRules, GeneratedEvent, OracleSettings, Record, WorkloadConfig, exact_snapshot,
    exact_snapshot_of_records,
};
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
    exact_snapshot(events, &oracle_settings(settings, WALL_MS))
}

/// The exact model of `records` in arrival order, as a replay at [`WALL_MS`] sees them.
pub fn oracle_of_records(records: &[Record], settings: &EngineSettings) -> Value {
    exact_snapshot_of_records(records, &oracle_settings(settings, WALL_MS))
}

/// The exact model of what a live `pulse run --clock event-time` shows once it has applied
/// `records`: sessions not yet final stay open and uncounted, and the wall clock is now.
pub fn live_oracle(records: &[Record], settings: &EngineSettings) -> Value {
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let live = OracleSettings {
        open_sessions_uncounted: true,
        ..oracle_settings(settings, wall_ms)
    };
    exact_snapshot_of_records(records, &live)
}

/// The model's settings for an engine's: the values that decide KPIs and admission. (The
/// model keeps its own default event names and field pointers, which the tests leave at
/// theirs.)
pub fn oracle_settings(settings: &EngineSettings, wall_ms: i64) -> OracleSettings {
    OracleSettings {
        timezone: settings.timezone.clone(),
        session_timeout_ms: settings.session_timeout_ms,
        session_max_length_ms: settings.session_max_length_ms,
        allowed_lateness_ms: settings.allowed_lateness_ms,
        retention_days: i64::from(settings.retention_days),
        max_future_skew_ms: settings.max_future_skew_ms,
        wall_ms: Some(wall_ms),
        fields: FieldRules {
            max_record_bytes: settings.max_record_bytes,
            max_user_id_bytes: settings.max_user_id_bytes,
            ..FieldRules::default()
        },
        ..OracleSettings::default()
    }
}

/// Records pulse must count and not apply, made from `events`, each with the index of the
/// event it must follow: a late and a future copy of every 500th event of the second half
/// (36 days earlier, 100 years later), and a malformed record of each kind every 700 events.
///
/// The copies follow their original, so whatever else arrives in between, "today" is at
/// least the original's day when a late copy comes, which makes it late by any arrival
/// order within its partition (it is keyed by the same user). `missing_timestamp` is left
/// out where a Kafka message timestamp would stand in for the time.
pub fn defects(events: &[GeneratedEvent], message_timestamps: bool) -> Vec<(usize, Record)> {
    const DAY_MS: i64 = 86_400_000;
    let mut malformed = vec![
        "not json".to_owned(),
        "42".to_owned(),
        r#"{"event":"page_view","ts":1772366400000}"#.to_owned(),
        r#"{"user_id":"","event":"page_view","ts":1772366400000}"#.to_owned(),
        r#"{"user_id":{"id":1},"event":"page_view","ts":1772366400000}"#.to_owned(),
        r#"{"user_id":"u-nameless","ts":1772366400000}"#.to_owned(),
        r#"{"user_id":"u-nameless","event":7,"ts":1772366400000}"#.to_owned(),
        r#"{"user_id":"u-badtime","event":"login","ts":"yesterday"}"#.to_owned(),
        format!(
            r#"{{"user_id":"{}","event":"login","ts":1772366400000}}"#,
            "x".repeat(300)
        ),
    ];
    if !message_timestamps {
        malformed.push(r#"{"user_id":"u-timeless","event":"login"}"#.to_owned());
    }
    let half = events.len() / 2;
    let mut out = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if index >= half && (index - half).is_multiple_of(500) {
            for shift in [-36 * DAY_MS, 36_500 * DAY_MS] {
                let mut copy = event.clone();
                copy.ts_ms += shift;
                out.push((index, Record::Event(copy)));
            }
        }
        if index % 700 == 350 {
            let text = malformed[(index / 700) % malformed.len()].clone();
            out.push((index, Record::Malformed(text)));
        }
    }
    out
}

/// `events` with their [`defects`] right after the events they follow.
pub fn with_defects(events: &[GeneratedEvent], message_timestamps: bool) -> Vec<Record> {
    let mut defects = defects(events, message_timestamps).into_iter().peekable();
    let mut out = Vec::new();
    for (index, event) in events.iter().enumerate() {
        out.push(Record::Event(event.clone()));
        while let Some((_, defect)) = defects.next_if(|(after, _)| *after == index) {
            out.push(defect);
        }
    }
    out
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

/// How a figure of the snapshot may differ from the exact model's.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// Event and session counts, session durations and bounce rates: exact (to float
    /// rounding of the averages).
    Exact,
    /// One distinct-count estimate, reported rounded to a whole user: the caller's relative
    /// tolerance, plus half a user for the rounding.
    Count,
    /// A ratio built on `estimates` distinct-count estimates (stickiness and adoption: two,
    /// sessions per user: one, its numerator is an exact count). The relative error of a
    /// quotient is at most about the sum of its parts' relative errors, so the bound is
    /// `estimates` times the caller's tolerance, relative to the value. The absolute floor
    /// (1e-9) only absorbs float rounding: a slack of a whole unit, as counts have, would
    /// accept any ratio between 0 and 1.
    Ratio { estimates: u32 },
    /// Nearest-rank quantiles from the duration histogram: the README promises 0.5 %;
    /// allow twice that, plus a millisecond.
    Quantile,
}

/// Every figure of the engine's snapshot that differs from the exact model by more than
/// its [`Bound`]: distinct counts (and ratios built on them) within `count_tolerance`
/// relative error each, the `events` counters and session figures exact, quantiles within
/// 1 %. Empty when they agree; a test of the comparison itself feeds it wrong snapshots.
pub fn exact_differences(engine: &Value, exact: &Value, count_tolerance: f64) -> Vec<String> {
    let mut failures = Vec::new();
    // Each reason either side names; a reason the other leaves out counts as 0.
    let reasons = |v: &Value| -> Vec<String> {
        v["events"]["rejected_by_reason"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut all_reasons = reasons(engine);
    all_reasons.extend(reasons(exact));
    all_reasons.sort();
    all_reasons.dedup();
    for reason in all_reasons {
        let count = |v: &Value| {
            v["events"]["rejected_by_reason"][&reason]
                .as_u64()
                .unwrap_or(0)
        };
        if count(engine) != count(exact) {
            failures.push(format!(
                "/events/rejected_by_reason/{reason}: engine {}, exact {}",
                count(engine),
                count(exact)
            ));
        }
    }
    let mut check = |path: String, bound: Bound| {
        let (got, want) = (num(engine, &path), num(exact, &path));
        let slack = match bound {
            Bound::Exact => 1e-9 * want.abs().max(1.0),
            Bound::Count => want.abs() * count_tolerance + 0.5,
            Bound::Ratio { estimates } => {
                want.abs() * count_tolerance * f64::from(estimates) + 1e-9
            }
            Bound::Quantile => want.abs() * 0.01 + 1e-3,
        };
        if (got - want).abs() > slack {
            failures.push(format!(
                "{path}: engine {got}, exact {want} (allowed ±{slack:.6})"
            ));
        }
    };
    for counter in ["accepted", "rejected", "late", "future"] {
        check(format!("/events/{counter}"), Bound::Exact);
    }
    for window in ["1d", "7d", "30d"] {
        for family in ["active_users", "active_users_previous", "new_users"] {
            check(format!("/{family}/{window}"), Bound::Count);
        }
        for exact_field in [
            "count",
            "avg_duration_seconds",
            "bounce_rate",
            "events_per_session",
        ] {
            check(format!("/sessions/{window}/{exact_field}"), Bound::Exact);
        }
        for quantile in ["p50_duration_seconds", "p90_duration_seconds"] {
            check(format!("/sessions/{window}/{quantile}"), Bound::Quantile);
        }
        check(
            format!("/sessions/{window}/sessions_per_user"),
            Bound::Ratio { estimates: 1 },
        );
    }
    for ratio in ["dau_mau", "dau_wau", "wau_mau"] {
        check(
            format!("/stickiness/{ratio}"),
            Bound::Ratio { estimates: 2 },
        );
    }
    let names = |v: &Value| -> Vec<String> {
        v["features"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    if names(engine) != names(exact) {
        failures.push(format!(
            "tracked features: engine {:?}, exact {:?}",
            names(engine),
            names(exact)
        ));
    } else {
        for name in names(exact) {
            let escaped = name.replace('~', "~0").replace('/', "~1");
            for window in ["1d", "7d", "30d"] {
                check(
                    format!("/features/{escaped}/active_users/{window}"),
                    Bound::Count,
                );
                check(
                    format!("/features/{escaped}/adoption/{window}"),
                    Bound::Ratio { estimates: 2 },
                );
            }
        }
    }
    if engine["as_of"] != exact["as_of"] {
        failures.push(format!(
            "as_of: engine {}, exact {}",
            engine["as_of"], exact["as_of"]
        ));
    }
    failures
}

/// Asserts every KPI of the engine against the exact model ([`exact_differences`]).
pub fn assert_matches_exact(engine: &Value, exact: &Value, count_tolerance: f64) {
    let failures = exact_differences(engine, exact, count_tolerance);
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
