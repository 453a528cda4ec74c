//! Retention, lifecycle and churn against the exact model (`pulse_tests::retention`), to the
//! last digit: several seeds, out-of-order arrivals, events later than the retention but
//! within the 64-day horizon and older ones, two time zones with a DST change inside the
//! horizon, users who signed up before the state began, a restart from a checkpoint
//! midway, `first_seen` cohorts, and live Kafka against the replay.

use std::time::Duration;

use pulse_core::rollup::{RollupClock, rollups};
use pulse_core::settings::{CohortMode, time_zone};
use pulse_core::{Engine, EngineSettings, EngineState};
use pulse_tests::retention::{RetentionModelSettings, exact_retention};
use pulse_tests::{GeneratedEvent, KindNames, Record, WorkloadConfig, kafka};
use serde_json::Value;

use crate::helpers::{
    WALL_MS, assert_matches_exact, defects, generate, json_diff, kpis_only, loadgen,
    oracle_of_records, run_engine, run_engine_open,
};
use crate::kafka_tests::{SERIAL, engine_settings, run_args, workload, write_config_with};
use crate::process::Pulse;

const DAY_MS: i64 = 86_400_000;
/// 2026-04-15T12:00:00Z: 63 days back reaches into February, so the horizon holds the
/// spring DST changes of both hemispheres' zones used below.
const END_MS: i64 = 1_776_254_400_000;

/// 63 days of 300 users: every figure's days are held (churn over 30 days needs 60), and no
/// user can be idle for a whole horizon inside the history.
fn history(seed: u64) -> WorkloadConfig {
    history_of(seed, 63)
}

fn history_of(seed: u64, days: u32) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        users: 300,
        days,
        end_ms: END_MS,
        ..WorkloadConfig::default()
    }
}

/// The events, with copies arriving late right after their originals: every 97th event of
/// the last 20 days again 40 days earlier (later than the retention, within the horizon)
/// and every 89th 70 days earlier (beyond the horizon).
fn with_late_copies(events: &[GeneratedEvent]) -> Vec<GeneratedEvent> {
    let recent = END_MS - 20 * DAY_MS;
    let mut out = Vec::with_capacity(events.len() + events.len() / 40);
    for (i, event) in events.iter().enumerate() {
        out.push(event.clone());
        for (every, days) in [(97, 40), (89, 70)] {
            if event.ts_ms > recent && i % every == 0 {
                out.push(GeneratedEvent {
                    ts_ms: event.ts_ms - days * DAY_MS,
                    seq: event.seq + 1_000_000_000,
                    ..event.clone()
                });
            }
        }
    }
    out
}

fn settings(zone: &str, cohort: CohortMode) -> EngineSettings {
    EngineSettings {
        timezone: time_zone(zone).unwrap(),
        shards: 2,
        partitions: 5,
        retention_cohort: cohort,
        ..EngineSettings::default()
    }
}

fn model(events: &[GeneratedEvent], settings: &EngineSettings) -> Value {
    exact_retention(
        events,
        &RetentionModelSettings {
            timezone: settings.timezone.clone(),
            retention_days: i64::from(settings.retention_days),
            first_seen: settings.retention_cohort == CohortMode::FirstSeen,
            kinds: KindNames::default(),
        },
    )
}

/// The snapshot's retention keys, as the model states them (`retention.users`, the size of
/// the state, and the users found on several partitions are facts of how the input was
/// partitioned, not figures of the data).
fn retention_keys(snapshot: &Value) -> Value {
    let mut keys = serde_json::Map::new();
    for key in ["retention", "lifecycle", "churn", "retention_rate"] {
        keys.insert(key.into(), snapshot[key].clone());
    }
    let retention = keys["retention"].as_object_mut().unwrap();
    for key in [
        "users",
        "users_on_several_partitions",
        "partitions_sharing_users",
    ] {
        retention.remove(key);
    }
    keys.into()
}

fn lines(events: &[GeneratedEvent]) -> Vec<String> {
    events.iter().map(GeneratedEvent::to_json).collect()
}

fn engine_over(lines: &[String], settings: &EngineSettings) -> Engine {
    let mut engine = Engine::new(settings.clone(), WALL_MS);
    for line in lines {
        engine.ingest(line.as_bytes(), None);
    }
    engine
}

fn snapshot_of(engine: &mut Engine) -> Value {
    serde_json::to_value(engine.snapshot()).unwrap()
}

fn assert_equal(engine: &Value, exact: &Value, what: &str) {
    let diff = json_diff(&retention_keys(engine), exact);
    assert!(
        diff.is_empty(),
        "{what}: engine differs from the model: {diff:#?}"
    );
}

/// The figures must say something: cohorts of every size class, people coming back, people
/// leaving, late events applied and beyond-horizon ones counted.
fn assert_not_trivial(exact: &Value) {
    let r = &exact["retention"];
    for n in ["1", "7", "28"] {
        let v = r["day_n"][n].as_f64().unwrap();
        assert!(v > 0.0 && v < 1.0, "day-{n} retention {v}");
    }
    assert!(r["events_beyond_horizon"].as_u64().unwrap() > 0);
    let week = &exact["lifecycle"]["week"];
    for status in ["new", "returning", "resurrecting", "dormant"] {
        assert!(week[status].as_u64().unwrap() > 0, "no {status} users");
    }
    assert!(exact["churn"]["30d"].as_f64().unwrap() > 0.0);
}

#[test]
fn engine_equals_the_model_over_several_seeds_with_late_events() {
    let settings = settings("UTC", CohortMode::Signup);
    for seed in [1, 2, 3] {
        let (events, _) = generate(&history(seed));
        let events = with_late_copies(&events);
        let exact = model(&events, &settings);
        assert_not_trivial(&exact);
        for family in ["retention", "lifecycle", "churn", "retention_rate"] {
            assert_eq!(exact[family]["complete"], true, "{family} of 63 days");
        }
        let lines = lines(&events);
        // Snapshots along the way keep counts, which the late copies then patch.
        let mut engine = Engine::new(settings.clone(), WALL_MS);
        for (i, line) in lines.iter().enumerate() {
            engine.ingest(line.as_bytes(), None);
            if i % 4_000 == 0 {
                engine.snapshot();
            }
        }
        assert_equal(&snapshot_of(&mut engine), &exact, &format!("seed {seed}"));
        // The late copies reach retention only: every other family is as before.
        let records: Vec<Record> = events.iter().cloned().map(Record::Event).collect();
        let others = kpis_only(&run_engine(&lines, settings.clone()));
        assert!(others["events"]["late"].as_u64().unwrap() > 0);
        assert_matches_exact(&others, &oracle_of_records(&records, &settings), 0.03);
    }
}

#[test]
fn a_retention_longer_than_the_horizon_still_holds_64_days() {
    // With `retention_days = 90` the 70-day-old copies are applied to the windows, and are
    // still beyond retention's horizon.
    let settings = EngineSettings {
        retention_days: 90,
        ..settings("UTC", CohortMode::Signup)
    };
    let (events, _) = generate(&history(23));
    let events = with_late_copies(&events);
    let exact = model(&events, &settings);
    assert!(
        exact["retention"]["events_beyond_horizon"]
            .as_u64()
            .unwrap()
            > 0
    );
    let snapshot = snapshot_of(&mut engine_over(&lines(&events), &settings));
    assert_eq!(snapshot["events"]["late"], 0);
    assert_equal(&snapshot, &exact, "retention_days 90");
}

#[test]
fn days_follow_two_zones_across_a_dst_change() {
    let (events, _) = generate(&history(5));
    let events = with_late_copies(&events);
    let lines = lines(&events);
    for zone in ["America/New_York", "Australia/Sydney"] {
        let tz = time_zone(zone).unwrap();
        let offset = |ms: i64| {
            tz.to_offset(jiff::Timestamp::from_millisecond(ms).unwrap())
                .seconds()
        };
        assert_ne!(
            offset(END_MS),
            offset(END_MS - 60 * DAY_MS),
            "{zone} changes its offset inside the horizon"
        );
        let settings = settings(zone, CohortMode::Signup);
        let exact = model(&events, &settings);
        assert_not_trivial(&exact);
        assert_equal(
            &snapshot_of(&mut engine_over(&lines, &settings)),
            &exact,
            zone,
        );
    }
}

#[test]
fn a_state_begun_midway_holds_users_signed_up_before_it_and_says_it_is_incomplete() {
    let settings = settings("UTC", CohortMode::Signup);
    let (events, _) = generate(&history(7));
    // The state begins 20 days into the history: many users signed up before it.
    let begun = END_MS - 43 * DAY_MS;
    let events: Vec<GeneratedEvent> = events.into_iter().filter(|e| e.ts_ms >= begun).collect();
    let exact = model(&events, &settings);
    assert_eq!(exact["retention"]["complete"], true, "35 days are held");
    assert_eq!(exact["churn"]["complete"], false, "60 days are not");
    assert_eq!(exact["retention_rate"]["complete"], false);
    assert!(exact["churn"]["30d"].as_f64().unwrap() > 0.0);
    let snapshot = snapshot_of(&mut engine_over(&lines(&events), &settings));
    assert_equal(&snapshot, &exact, "begun midway");
}

#[test]
fn a_restart_from_a_checkpoint_midway_gives_the_figures_of_one_run() {
    let settings = settings("Europe/Berlin", CohortMode::Signup);
    let (events, _) = generate(&history(11));
    let events = with_late_copies(&events);
    let lines = lines(&events);
    let (first, second) = lines.split_at(lines.len() / 2);
    let saved = engine_over(first, &settings).state().to_bytes();
    let restored = EngineState::from_bytes(&saved).unwrap();
    let mut engine = Engine::restore(settings.clone(), WALL_MS, restored);
    for line in second {
        engine.ingest(line.as_bytes(), None);
    }
    let exact = model(&events, &settings);
    assert_not_trivial(&exact);
    assert_equal(&snapshot_of(&mut engine), &exact, "restarted");
}

#[test]
fn first_seen_cohorts_equal_the_model_and_wait_for_the_whole_horizon() {
    let settings = settings("Asia/Kolkata", CohortMode::FirstSeen);
    // 64 days: the whole horizon is held.
    let (events, _) = generate(&history_of(13, 64));
    let events = with_late_copies(&events);
    let exact = model(&events, &settings);
    assert_eq!(exact["retention"]["cohort"], "first_seen");
    assert_eq!(exact["lifecycle"]["complete"], true);
    assert!(exact["lifecycle"]["week"]["new"].as_u64().unwrap() > 0);
    assert_equal(
        &snapshot_of(&mut engine_over(&lines(&events), &settings)),
        &exact,
        "first_seen, 64 days",
    );
    // 50 days: first activity is not yet trustworthy, and both sides say so.
    let (events, _) = generate(&history_of(13, 50));
    let exact = model(&events, &settings);
    assert_eq!(exact["lifecycle"]["complete"], false);
    assert_eq!(exact["retention"]["complete"], false);
    assert_equal(
        &snapshot_of(&mut engine_over(&lines(&events), &settings)),
        &exact,
        "first_seen, 50 days",
    );
}

#[test]
fn the_model_tells_cohorts_apart() {
    // The comparison can fail: the same events with one signup moved a day give other
    // figures, in the model and in the engine alike.
    let settings = settings("UTC", CohortMode::Signup);
    let (events, _) = generate(&history(17));
    let exact = model(&events, &settings);
    let signup = events
        .iter()
        .position(|e| e.name == "signup" && e.ts_ms > END_MS - 10 * DAY_MS)
        .expect("a recent signup");
    let mut moved = events.clone();
    moved.remove(signup);
    let other = model(&moved, &settings);
    assert_ne!(other, exact);
    assert_equal(
        &snapshot_of(&mut engine_over(&lines(&moved), &settings)),
        &other,
        "one signup fewer",
    );
}

#[test]
fn the_rollups_carry_the_whole_cohort_triangle() {
    let settings = settings("America/New_York", CohortMode::Signup);
    let (events, _) = generate(&history(19));
    let mut engine = engine_over(&lines(&events), &settings);
    let clock = RollupClock {
        now_ms: engine.ingestor().now_ms(),
        computed_at_ms: WALL_MS,
    };
    let records = rollups(&engine.state(), engine.settings(), clock, false);
    let cell = |metric: &str, day: &str, offset: Option<usize>| -> Vec<f64> {
        records
            .iter()
            .filter(|r| {
                r.metric == metric
                    && r.dimensions["cohort_day"] == day
                    && r.dimensions.get("day_offset").map(String::as_str)
                        == offset.map(|k| k.to_string()).as_deref()
            })
            .map(|r| r.value)
            .collect()
    };
    let exact = model(&events, &settings);
    let rows = exact["retention"]["cohorts"].as_array().unwrap();
    let mut cells = 0;
    for row in rows {
        let day = row["day"].as_str().unwrap();
        let size = row["size"].as_u64().unwrap();
        if size == 0 {
            assert!(cell("retention_cohort_size", day, None).is_empty());
            continue;
        }
        assert_eq!(
            cell("retention_cohort_size", day, None),
            [size as f64],
            "{day}"
        );
        for (k, active) in row["active"].as_array().unwrap().iter().enumerate() {
            let want = active.as_u64().unwrap() as f64;
            assert_eq!(
                cell("retention_cohort_active", day, Some(k)),
                [want],
                "{day} + {k}"
            );
            cells += 1;
        }
    }
    assert!(cells > 100, "{cells} cells");
    // The snapshot's table is the model's too.
    assert_equal(&snapshot_of(&mut engine), &exact, "rollups' engine");
}

/// `pulse run` on Kafka shows the replay's figures, and the model's: the workload with the
/// late copies pulse counts and (for retention) applies.
#[tokio::test(flavor = "multi_thread")]
async fn live_kafka_equals_the_replay_and_the_model() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "retention", 3).await;
    let produced = loadgen(&brokers, &topic, 300, 43);
    let (events, lines) = generate(&workload(43, 300));
    assert_eq!(produced, events.len() as u64);
    let late: Vec<Record> = defects(&events, true)
        .into_iter()
        .map(|(_, record)| record)
        .filter(|record| matches!(record, Record::Event(e) if e.ts_ms < crate::kafka_tests::END_MS - 35 * DAY_MS))
        .collect();
    assert!(!late.is_empty());
    kafka::produce(
        &brokers,
        &topic,
        late.iter().map(|r| (r.key(), r.line().into_bytes())),
    )
    .await;
    let mut all = events.clone();
    all.extend(late.iter().filter_map(|r| match r {
        Record::Event(e) => Some(e.clone()),
        Record::Malformed(_) => None,
    }));
    let mut lines = lines;
    lines.extend(late.iter().map(Record::line));

    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), &brokers, &topic, "");
    let pulse = Pulse::start(&run_args(&config));
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(30));
    let replay = retention_keys(&kpis_only(&run_engine_open(&lines, engine_settings())));
    let accepted = (events.len() as u64, late.len() as u64);
    let snapshot = pulse.wait_for("every record", Duration::from_secs(90), |s| {
        (
            s["events"]["accepted"].as_u64(),
            s["events"]["late"].as_u64(),
        ) == (Some(accepted.0), Some(accepted.1))
    });
    let live = retention_keys(&snapshot);
    assert_eq!(json_diff(&live, &replay), Vec::<String>::new());
    let exact = model(&all, &engine_settings());
    assert_eq!(json_diff(&live, &exact), Vec::<String>::new());
    let (status, _) = pulse.stop_and_log(Duration::from_secs(30));
    assert!(status.success());
}

/// A topic whose records are keyed by their sequence number, not by user: every user's
/// events spread over the three partitions. Retention still equals the model (users merge
/// across partitions), and pulse says the input is not keyed by user: the gauge counts the
/// users it found on several partitions and the log names the partitions.
#[tokio::test(flavor = "multi_thread")]
async fn users_spread_over_partitions_give_the_model_and_are_reported() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard, events, _) =
        crate::repartition::unkeyed_topic(&brokers, "retention-unkeyed", 47).await;

    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), &brokers, &topic, "");
    let pulse = Pulse::start(&run_args(&config));
    let snapshot = pulse.wait_for("every record", Duration::from_secs(90), |s| {
        s["events"]["accepted"].as_u64() == Some(events.len() as u64)
    });
    let exact = model(&events, &engine_settings());
    assert_not_trivial_live(&exact);
    assert_eq!(
        json_diff(&retention_keys(&snapshot), &exact),
        Vec::<String>::new()
    );
    let shared = snapshot["retention"]["users_on_several_partitions"]
        .as_u64()
        .unwrap();
    assert!(shared > 100, "{shared} of 300 users on several partitions");
    let (_, metrics) = pulse.get("/metrics");
    assert_eq!(
        crate::process::metric(&metrics, "pulse_users_on_several_partitions"),
        Some(shared as f64)
    );
    let (status, log) = pulse.stop_and_log(Duration::from_secs(30));
    assert!(status.success());
    let warning = log
        .lines()
        .find(|l| l.contains("Users appear on several partitions"))
        .expect("a warning");
    // The partitions read when it was first found: two of them at least.
    let named = (0..3)
        .filter(|p| warning.contains(&format!("{topic}/{p}\"")))
        .count();
    assert!(named >= 2, "{warning}");
    // Never a user id (searched for the long ones: a short one may occur by chance).
    let ids = events.iter().map(|e| e.user.to_string());
    assert!(
        !ids.filter(|id| id.len() >= 10)
            .any(|id| warning.contains(&id))
    );
}

/// The live workload's figures say something: cohorts came back, users left.
fn assert_not_trivial_live(exact: &Value) {
    let r = &exact["retention"];
    assert!(r["day_n"]["1"].as_f64().unwrap() > 0.0);
    assert!(exact["lifecycle"]["week"]["returning"].as_u64().unwrap() > 0);
}
