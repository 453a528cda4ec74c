//! Funnels and time to value against their exact model ([`pulse_tests::funnel_model`]) on
//! generated workloads: several funnels (one whose steps all match the same event, one
//! whose deadline is an hour), repeated entries, steps out of order, events past the
//! deadline, late events, a restart from a checkpoint mid-funnel, and any partitioning.
//!
//! Distinct users are compared exactly: the sets stay far below the size at which a
//! sketch leaves its exact mode. Counts are exact; durations are nearest-rank quantiles
//! from the 0.5 % log histogram, so within 0.5 % of the exact rank's value.

use proptest::prelude::*;
use pulse_core::funnel_rules::{FunnelDef, StepMatch, TimeToValueDef};
use pulse_core::rollup::{RollupClock, rollups};
use pulse_core::{Engine, EngineSettings, EngineState};
use pulse_tests::Kind;
use pulse_tests::funnel_model::{Funnel, FunnelEvent, FunnelModel, Step};
use serde_json::Value;

use crate::helpers::{WALL_MS, kpis_only};

const T0: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z
const MINUTE: i64 = 60_000;
const LATENESS_MS: i64 = 5 * MINUTE;

/// A step written once for both sides: (kind, raw event name, feature).
type StepSpec = (
    Option<(&'static str, Kind)>,
    Option<&'static str>,
    Option<&'static str>,
);

/// (name, window, steps) of the funnels under test.
fn funnel_specs() -> Vec<(&'static str, i64, Vec<StepSpec>)> {
    let kind = |name, kind| (Some((name, kind)), None, None);
    vec![
        (
            "activation",
            2 * 86_400_000,
            vec![
                kind("signup", Kind::Signup),
                (
                    Some(("feature_used", Kind::FeatureUsed)),
                    None,
                    Some("export_csv"),
                ),
                (None, Some("Plan Upgraded"), None),
            ],
        ),
        (
            "quick",
            60 * MINUTE,
            vec![
                kind("login", Kind::Login),
                kind("page_view", Kind::PageView),
            ],
        ),
        // Every step matches the same events: one event must move an attempt one step.
        (
            "browse",
            3 * 60 * MINUTE,
            vec![
                kind("page_view", Kind::PageView),
                kind("page_view", Kind::PageView),
                kind("page_view", Kind::PageView),
            ],
        ),
    ]
}

const VALUE_WINDOW_MS: i64 = 3 * 86_400_000;

fn settings(shards: usize, partitions: usize) -> EngineSettings {
    let step = |(kind, event, feature): &StepSpec| StepMatch {
        kind: kind.map(|(name, _)| name.to_owned()),
        event: event.map(str::to_owned),
        feature: feature.map(str::to_owned),
    };
    let settings = EngineSettings {
        shards,
        partitions,
        allowed_lateness_ms: LATENESS_MS,
        funnels: funnel_specs()
            .iter()
            .map(|(name, window_ms, steps)| FunnelDef {
                name: (*name).to_owned(),
                window_ms: *window_ms,
                steps: steps.iter().map(step).collect(),
            })
            .collect(),
        time_to_value: Some(TimeToValueDef {
            event: step(&(Some(("feature_used", Kind::FeatureUsed)), None, None)),
            window_ms: VALUE_WINDOW_MS,
        }),
        ..EngineSettings::default()
    };
    settings.validate().unwrap();
    settings
}

fn model() -> FunnelModel {
    let step = |(kind, event, feature): &StepSpec| Step {
        kind: kind.map(|(_, kind)| kind),
        event: event.map(str::to_owned),
        feature: feature.map(str::to_owned),
    };
    FunnelModel {
        funnels: funnel_specs()
            .iter()
            .map(|(name, window_ms, steps)| Funnel {
                name: (*name).to_owned(),
                window_ms: *window_ms,
                steps: steps.iter().map(step).collect(),
            })
            .collect(),
        time_to_value: Some((
            step(&(Some(("feature_used", Kind::FeatureUsed)), None, None)),
            VALUE_WINDOW_MS,
        )),
        lateness_ms: LATENESS_MS,
        kinds: Default::default(),
    }
}

/// One user's visit: (user, start minute, events as (name position in [`NAMES`], gap in
/// minutes, arrival delay in minutes)).
type Visit = (u8, i64, Vec<(u8, i64, i64)>);

/// A visit: a start and a run of events a few minutes to hours apart.
fn visit() -> impl Strategy<Value = Visit> {
    (
        0u8..40,
        0i64..10 * 24 * 60,
        proptest::collection::vec((0u8..7, 0i64..240, 0i64..8), 1..12),
    )
}

const NAMES: [(&str, Option<&str>); 7] = [
    ("signup", None),
    ("feature_used", Some("export_csv")),
    ("feature_used", Some("share")),
    ("Plan Upgraded", None),
    ("login", None),
    ("page_view", None),
    ("page_view", None),
];

/// The events of some visits, in arrival order: each is delayed by up to `delay` minutes
/// (shuffling events within and beyond the allowed lateness).
fn arrivals(visits: &[Visit]) -> Vec<FunnelEvent> {
    let mut timed = Vec::new();
    for (user, start, steps) in visits {
        let mut minute = *start;
        for (name, gap, delay) in steps {
            // Some gaps are 0: events at equal times.
            minute += gap / 2 * (gap % 2);
            let (name, feature) = NAMES[usize::from(*name)];
            let ts_ms = T0 + minute * MINUTE;
            // Delays of 0 to 7 minutes: beyond the 5-minute lateness now and then.
            timed.push((
                ts_ms + delay * MINUTE,
                FunnelEvent {
                    user: format!("u{user}"),
                    name: name.to_owned(),
                    feature: feature.map(str::to_owned),
                    ts_ms,
                },
            ));
        }
    }
    timed.sort_by_key(|(arrival, _)| *arrival);
    timed.into_iter().map(|(_, event)| event).collect()
}

/// The engine's funnel figures: the section's keys of the JSON snapshot.
fn funnel_part(snapshot: &Value) -> Value {
    let keys = ["funnels", "time_to_value", "funnel_late_events"];
    keys.iter()
        .filter_map(|k| Some(((*k).to_owned(), snapshot.get(*k)?.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn run(lines: &[String], settings: EngineSettings) -> Value {
    let mut engine = Engine::new(settings, WALL_MS);
    for line in lines {
        engine.ingest(line.as_bytes(), None);
    }
    engine.close_all_sessions();
    funnel_part(&kpis_only(&engine.snapshot()))
}

/// Where `engine` differs from `exact`: durations (keys ending in `seconds` or
/// `seconds_p50`) may be 0.5 % off, everything else must be equal.
fn differences(engine: &Value, exact: &Value, path: &str, out: &mut Vec<String>) {
    match (engine, exact) {
        (Value::Object(e), Value::Object(x)) => {
            let keys: std::collections::BTreeSet<&String> = e.keys().chain(x.keys()).collect();
            for key in keys {
                let (Some(ev), Some(xv)) = (e.get(key), x.get(key)) else {
                    out.push(format!("{path}/{key}: only on one side"));
                    continue;
                };
                differences(ev, xv, &format!("{path}/{key}"), out);
            }
        }
        (Value::Array(e), Value::Array(x)) if e.len() == x.len() => {
            for (i, (ev, xv)) in e.iter().zip(x).enumerate() {
                differences(ev, xv, &format!("{path}/{i}"), out);
            }
        }
        (Value::Number(e), Value::Number(x)) => {
            let (e, x) = (e.as_f64().unwrap(), x.as_f64().unwrap());
            let duration = path.contains("seconds");
            let bound = if duration {
                0.005 * x.abs() + 1e-9
            } else {
                1e-12
            };
            if (e - x).abs() > bound {
                out.push(format!("{path}: engine {e}, exact {x}"));
            }
        }
        _ => out.push(format!("{path}: engine {engine}, exact {exact}")),
    }
}

fn assert_matches_model(engine: &Value, events: &[FunnelEvent]) {
    let exact = model().snapshot(events);
    let mut out = Vec::new();
    differences(engine, &exact, "", &mut out);
    assert!(
        out.is_empty(),
        "engine differs from the model:\n{}",
        out.join("\n")
    );
}

/// What the workload exercises, so that a generator gone flat fails here.
fn assert_exercises(events: &[FunnelEvent]) {
    let exact = model().snapshot(events);
    let number = |pointer: &str| exact.pointer(pointer).and_then(Value::as_u64).unwrap();
    assert!(
        number("/funnel_late_events") > 0,
        "some matching events are late"
    );
    let activation = number("/funnels/activation/30d/completions");
    assert!(activation > 0, "some users convert");
    let browse_users = number("/funnels/browse/30d/users/2");
    assert!(
        number("/funnels/browse/30d/completions") > browse_users,
        "users converting more than once"
    );
    assert!(number("/time_to_value/30d/activated") > 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_equals_the_model_on_any_partitioning_and_across_a_restart(
        visits in proptest::collection::vec(visit(), 60..160),
        split in 0.2f64..0.8,
    ) {
        let events = arrivals(&visits);
        let lines: Vec<String> = events.iter().map(FunnelEvent::line).collect();
        let single = run(&lines, settings(1, 1));
        assert_matches_model(&single, &events);

        let sharded = run(&lines, settings(3, 7));
        prop_assert_eq!(&sharded, &single);

        // A checkpoint mid-stream: pending events and attempts half-way through funnels.
        let cut = (lines.len() as f64 * split) as usize;
        let mut first = Engine::new(settings(2, 4), WALL_MS);
        for line in &lines[..cut] {
            first.ingest(line.as_bytes(), None);
        }
        let bytes = first.state().to_bytes();
        let state = EngineState::from_bytes(&bytes).unwrap();
        let mut resumed = Engine::restore(settings(2, 4), WALL_MS, state);
        for line in &lines[cut..] {
            resumed.ingest(line.as_bytes(), None);
        }
        resumed.close_all_sessions();
        prop_assert_eq!(funnel_part(&kpis_only(&resumed.snapshot())), single);
    }
}

/// A deterministic spread of visits, so the assertions on what is exercised hold.
fn fixed_visits() -> Vec<Visit> {
    (0..400u32)
        .map(|i| {
            let user = (i * 7 % 40) as u8;
            let start = i64::from(i * 37 % (10 * 24 * 60));
            let steps = (0..(i % 11 + 2))
                .map(|j| {
                    let name = ((i + j * 3) % 7) as u8;
                    (
                        name,
                        i64::from((i * 13 + j * 29) % 240),
                        i64::from((i + j) % 8),
                    )
                })
                .collect();
            (user, start, steps)
        })
        .collect()
}

#[test]
fn a_fixed_workload_exercises_every_rule() {
    let events = arrivals(&fixed_visits());
    assert_exercises(&events);
    let lines: Vec<String> = events.iter().map(FunnelEvent::line).collect();
    assert_matches_model(&run(&lines, settings(1, 1)), &events);
}

#[test]
fn without_funnels_the_snapshot_has_no_funnel_keys() {
    let events = arrivals(&[(1, 0, vec![(0, 0, 0), (1, 10, 0), (3, 20, 0)])]);
    let lines: Vec<String> = events.iter().map(FunnelEvent::line).collect();
    let figures = run(&lines, EngineSettings::default());
    assert_eq!(figures, Value::Object(Default::default()));
    assert_ne!(run(&lines, settings(1, 1)), figures);
}

#[test]
fn todays_rollups_equal_the_snapshot_per_funnel_step_and_window() {
    let events = arrivals(&fixed_visits());
    let lines: Vec<String> = events.iter().map(FunnelEvent::line).collect();
    let settings = settings(2, 3);
    let mut engine = Engine::new(settings.clone(), WALL_MS);
    for line in &lines {
        engine.ingest(line.as_bytes(), None);
    }
    engine.close_all_sessions();
    let snapshot = engine.snapshot();
    let clock = RollupClock {
        now_ms: engine.ingestor().now_ms(),
        computed_at_ms: WALL_MS,
    };
    let records = rollups(&engine.state(), &settings, clock, false);
    let today = records.iter().map(|r| &r.period_start).max().unwrap();
    let value = |metric: &str, window: &str, dimensions: &[(&str, &str)]| {
        let found: Vec<f64> = records
            .iter()
            .filter(|r| r.period_start == *today && r.metric == metric && r.window == window)
            .filter(|r| {
                r.dimensions.len() == dimensions.len()
                    && dimensions
                        .iter()
                        .all(|(k, v)| r.dimensions.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|r| r.value)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{metric} {window} {dimensions:?}: {found:?}"
        );
        found[0]
    };
    // Rollups take only windows pulse holds every day of: the workload spans 10 days.
    let complete = |window: &str| window != "30d";
    for (name, windows) in &snapshot.kpis.funnels.funnels {
        for (window, kpis) in windows.labelled().into_iter().filter(|(w, _)| complete(w)) {
            for (step, users) in kpis.users.iter().enumerate() {
                let step = (step + 1).to_string();
                let dimensions = [("funnel", name.as_str()), ("step", step.as_str())];
                assert_eq!(value("funnel_users", window, &dimensions), *users as f64);
            }
            let funnel = [("funnel", name.as_str())];
            assert_eq!(
                value("funnel_completions", window, &funnel),
                kpis.completions as f64
            );
            assert_eq!(value("funnel_conversion", window, &funnel), kpis.conversion);
        }
    }
    let ttv = snapshot.kpis.funnels.time_to_value.unwrap();
    for (window, kpis) in ttv.labelled().into_iter().filter(|(w, _)| complete(w)) {
        assert_eq!(
            value("time_to_value_signups", window, &[]),
            kpis.signups as f64
        );
        assert_eq!(
            value("time_to_value_activated", window, &[]),
            kpis.activated as f64
        );
    }
}
