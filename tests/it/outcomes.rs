//! The outcome KPIs (NPS, CSAT, revenue, ARPU, MRR and its movements) against the exact
//! model of `tests/src/outcomes.rs`, on generated workloads with surveys, orders and
//! subscription changes, some of them bad: scores off their scale, another currency, more
//! decimals than cents; with late and future copies, changes that arrive after a later
//! one, a restart from saved state mid-stream, and any split into partitions.
//!
//! Exact figures must be equal; paying users are HyperLogLog estimates (3 %, as for the
//! other distinct counts in `kpis`), and ARPU and ARPPU divide by an estimate.

use pulse_core::outcome_settings::OutcomeSettings;
use pulse_core::{Engine, EngineSettings, EngineState};
use pulse_tests::outcomes::MODEL_TOML;
use pulse_tests::{
    GeneratedEvent, OracleSettings, Record, WorkloadConfig, exact_snapshot_of_records,
};
use pulse_workload::Outcome;
use serde_json::Value;

use crate::helpers::{
    WALL_MS, assert_matches_exact, generate, kpis_only, oracle_settings, run_engine, with_defects,
};

const TOLERANCE: f64 = 0.03;

fn settings() -> EngineSettings {
    EngineSettings {
        outcomes: toml::from_str::<OutcomeSettings>(MODEL_TOML).unwrap(),
        ..EngineSettings::default()
    }
}

fn workload(seed: u64) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        users: 600,
        outcomes: true,
        ..WorkloadConfig::default()
    }
}

fn model(records: &[Record], settings: &EngineSettings) -> Value {
    let oracle = OracleSettings {
        outcomes: true,
        ..oracle_settings(settings, WALL_MS)
    };
    exact_snapshot_of_records(records, &oracle)
}

fn engine_of(records: &[Record], settings: EngineSettings) -> Value {
    let lines: Vec<String> = records.iter().map(Record::line).collect();
    kpis_only(&run_engine(&lines, settings))
}

/// Every figure under `outcomes` that differs beyond its bound, and any key either side
/// has alone.
fn outcome_differences(engine: &Value, exact: &Value) -> Vec<String> {
    fn walk(path: String, engine: &Value, exact: &Value, out: &mut Vec<String>) {
        match (engine, exact) {
            (Value::Object(e), Value::Object(x)) => {
                let mut keys: Vec<&String> = e.keys().chain(x.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let (Some(ev), Some(xv)) = (e.get(key), x.get(key)) else {
                        out.push(format!("{path}/{key}: only on one side"));
                        continue;
                    };
                    walk(format!("{path}/{key}"), ev, xv, out);
                }
            }
            (Value::Number(e), Value::Number(x)) => {
                let (got, want) = (e.as_f64().unwrap(), x.as_f64().unwrap());
                let slack = if path.ends_with("/paying_users") {
                    want.abs() * TOLERANCE + 0.5
                } else if path.ends_with("/arpu_minor") || path.ends_with("/arppu_minor") {
                    want.abs() * TOLERANCE
                } else {
                    1e-9 * want.abs().max(1.0)
                };
                if (got - want).abs() > slack {
                    out.push(format!("{path}: engine {got}, exact {want}"));
                }
            }
            (e, x) if e != x => out.push(format!("{path}: engine {e}, exact {x}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        "/outcomes".into(),
        &engine["outcomes"],
        &exact["outcomes"],
        &mut out,
    );
    out
}

/// The outcomes and the event counts (accepted, refused by reason, late, future) equal the
/// model's.
fn assert_outcomes_match(engine: &Value, exact: &Value) {
    assert!(exact["outcomes"].is_object(), "the model has outcomes");
    let failures = outcome_differences(engine, exact);
    assert!(
        failures.is_empty(),
        "engine differs from the exact model:\n{}",
        failures.join("\n")
    );
    let (engine, exact) = (&engine["events"], &exact["events"]);
    for counter in ["accepted", "rejected", "late", "future"] {
        assert_eq!(engine[counter], exact[counter], "{counter}");
    }
    // The model names only the reasons it saw; the engine names every reason.
    let reasons = engine["rejected_by_reason"].as_object().unwrap();
    for (reason, count) in reasons {
        let expected = exact["rejected_by_reason"][reason].as_u64().unwrap_or(0);
        assert_eq!(count.as_u64(), Some(expected), "{reason}");
    }
}

#[test]
fn generated_outcomes_equal_the_exact_model() {
    for seed in [1, 2] {
        let (events, _) = generate(&workload(seed));
        let records = with_defects(&events, false);
        let settings = settings();
        let engine = engine_of(&records, settings.clone());
        let exact = model(&records, &settings);
        assert_outcomes_match(&engine, &exact);
        assert_matches_exact(&engine, &exact, TOLERANCE);
        // The workload reaches every part, good and bad, so the comparison is not vacuous.
        let reasons = &engine["events"]["rejected_by_reason"];
        for reason in [
            "score_out_of_range",
            "unexpected_currency",
            "amount_too_precise",
        ] {
            assert!(
                reasons[reason].as_u64() > Some(0),
                "seed {seed}: no {reason}"
            );
        }
        let o = &engine["outcomes"];
        for figure in [
            &o["nps"]["30d"]["responses"],
            &o["csat"]["30d"]["responses"],
            &o["revenue"]["30d"]["orders"],
            &o["mrr"]["movements"]["30d"]["new"],
            &o["mrr"]["movements"]["30d"]["churned"],
        ] {
            assert!(figure.as_u64() > Some(0), "seed {seed}: {o}");
        }
        assert!(o["revenue"]["30d"]["arpu_minor"].as_f64() > Some(0.0));
    }
}

/// A hand-made outcome event of user `user` at day offset `day` (from the newest event).
fn outcome_event(user: &str, ts_ms: i64, outcome: Outcome) -> Record {
    let name = match outcome {
        Outcome::Nps(_) => "survey_nps",
        Outcome::Csat(_) => "survey_csat",
        Outcome::Order { .. } => "order_completed",
        Outcome::Mrr { .. } => "subscription_changed",
    };
    Record::Event(GeneratedEvent {
        outcome: Some(outcome),
        ..GeneratedEvent::plain(user, name, ts_ms)
    })
}

#[test]
fn late_arrivals_and_superseded_changes() {
    const DAY: i64 = 86_400_000;
    let now = 1_772_366_400_000;
    let mrr = |units| Outcome::Mrr { units, decimals: 2 };
    let usd = |units| Outcome::Order {
        units,
        decimals: 2,
        currency: "USD",
    };
    let records = vec![
        outcome_event("a", now - 40 * DAY, mrr(1_900)),
        outcome_event("a", now - 3 * DAY, mrr(4_900)),
        outcome_event("b", now - 2 * DAY, mrr(9_900)),
        outcome_event("a", now, mrr(9_900)),
        // Older than a's latest change, which arrived first: superseded, not applied.
        outcome_event("a", now - DAY, mrr(0)),
        // Within the retention, though weeks old: counted on its own day.
        outcome_event("c", now - 20 * DAY, usd(2_500)),
        // Past the retention: late, not counted.
        outcome_event("c", now - 36 * DAY, usd(7_000)),
        outcome_event("b", now - DAY, mrr(0)),
        outcome_event("d", now - DAY, Outcome::Nps(10)),
        outcome_event("e", now - DAY, Outcome::Nps(2)),
    ];
    let settings = settings();
    let engine = engine_of(&records, settings.clone());
    let exact = model(&records, &settings);
    // Outcomes only: events days out of order are past the lateness that sessions allow,
    // which the model of sessions does not describe.
    assert_outcomes_match(&engine, &exact);
    let o = &engine["outcomes"];
    assert_eq!(engine["events"]["late"], 1);
    assert_eq!(o["mrr"]["total_minor"], 9_900);
    assert_eq!(o["mrr"]["movements"]["30d"]["churned"], 9_900);
    assert_eq!(o["mrr"]["movements"]["7d"]["expansion"], 8_000);
    // The 30 complete days began with a's 1 900; b's 9 900 churned within them.
    assert_eq!(o["mrr"]["churn_rate_30d"], 9_900.0 / 1_900.0);
    assert_eq!(o["revenue"]["30d"]["amount_minor"], 2_500);
    assert_eq!(o["nps"]["7d"]["score"], 0.0);
    assert_eq!(o["ltv_estimate_minor"], 0.0);
}

#[test]
fn a_restart_from_saved_state_changes_nothing() {
    let (events, _) = generate(&workload(3));
    let lines: Vec<String> = with_defects(&events, false)
        .iter()
        .map(Record::line)
        .collect();
    let uninterrupted = kpis_only(&run_engine(&lines, settings()));
    let (first, rest) = lines.split_at(lines.len() / 2);
    let mut engine = Engine::new(settings(), WALL_MS);
    for line in first {
        engine.ingest(line.as_bytes(), None);
    }
    let saved = EngineState::from_bytes(&engine.state().to_bytes()).unwrap();
    let mut restored = Engine::restore(settings(), WALL_MS, saved);
    for line in rest {
        restored.ingest(line.as_bytes(), None);
    }
    restored.close_all_sessions();
    let after_restart = kpis_only(&restored.snapshot());
    assert!(after_restart["outcomes"]["mrr"]["total_minor"].as_i64() > Some(0));
    assert_eq!(after_restart, uninterrupted);
}

#[test]
fn any_split_into_partitions_equals_one_partition() {
    let (_, lines) = generate(&workload(4));
    let single = kpis_only(&run_engine(&lines, settings()));
    for (shards, partitions) in [(2, 5), (3, 12)] {
        let split = EngineSettings {
            shards,
            partitions,
            ..settings()
        };
        assert_eq!(kpis_only(&run_engine(&lines, split)), single);
    }
}

#[test]
fn without_outcome_tables_outcome_events_are_plain_activity() {
    let (events, lines) = generate(&workload(5));
    let engine = kpis_only(&run_engine(&lines, EngineSettings::default()));
    assert!(engine.get("outcomes").is_none());
    assert_eq!(engine["events"]["rejected"], 0, "nothing is judged");
    let records: Vec<Record> = events.into_iter().map(Record::Event).collect();
    let exact = exact_snapshot_of_records(
        &records,
        &oracle_settings(&EngineSettings::default(), WALL_MS),
    );
    assert_matches_exact(&engine, &exact, TOLERANCE);
}
