//! Every KPI against the exact model, on realistic generated workloads: several seeds,
//! out-of-order arrivals, the three JSON shapes, integer and text user ids, two time zones.

use pulse_core::EngineSettings;
use pulse_tests::small_workload;

use crate::helpers::{assert_matches_exact, exact_recent, generate, kpis_only, oracle, run_engine};

fn check_seed(seed: u64, settings: EngineSettings) {
    let (events, lines) = generate(&small_workload(seed));
    let snapshot = run_engine(&lines, settings.clone());
    assert_eq!(
        snapshot.events.late_for_sessions, 0,
        "the workload stays within the lateness"
    );
    assert_eq!(snapshot.events.rejected, 0);
    assert_matches_exact(&kpis_only(&snapshot), &oracle(&events, &settings), 0.03);
    let (m5, h1) = exact_recent(&events);
    assert!(h1 > 0, "the workload is active in its last hour");
    assert_eq!(
        (
            snapshot.recent_active_users.m5,
            snapshot.recent_active_users.h1
        ),
        (m5, h1)
    );
    let sessions = snapshot.session_durations;
    assert_eq!(sessions.counts.iter().sum::<u64>(), sessions.count);
    assert!(
        sessions.count >= snapshot.sessions.d30.count,
        "lifetime covers the 30 days"
    );
}

#[test]
fn utc_over_several_seeds() {
    for seed in [1, 2, 3] {
        check_seed(
            seed,
            EngineSettings {
                shards: 2,
                ..EngineSettings::default()
            },
        );
    }
}

#[test]
fn days_follow_the_configured_zone() {
    for zone in ["America/New_York", "Asia/Kolkata"] {
        let timezone = pulse_core::settings::time_zone(zone).unwrap();
        check_seed(
            7,
            EngineSettings {
                timezone,
                shards: 3,
                ..EngineSettings::default()
            },
        );
    }
}

#[test]
fn other_session_rules_and_a_coarser_sketch() {
    let settings = EngineSettings {
        session_timeout_ms: 10 * 60 * 1000,
        session_max_length_ms: 2 * 3600 * 1000,
        hll_lg_k: 12,
        shards: 2,
        ..EngineSettings::default()
    };
    // lg_k 12 has about 1.6 % standard error: allow three of them.
    let (events, lines) = generate(&small_workload(11));
    let snapshot = run_engine(&lines, settings.clone());
    assert_matches_exact(&kpis_only(&snapshot), &oracle(&events, &settings), 0.05);
}

#[test]
fn a_larger_population_in_the_sketches_dense_mode() {
    // 2 000 users over 35 days: daily and monthly sketches leave the exact small-set mode.
    let config = pulse_tests::default_workload(5);
    let (events, lines) = generate(&config);
    let settings = EngineSettings {
        shards: 4,
        ..EngineSettings::default()
    };
    let snapshot = run_engine(&lines, settings.clone());
    let exact = oracle(&events, &settings);
    assert!(exact["active_users"]["30d"].as_u64().unwrap() > 1_000);
    assert_matches_exact(&kpis_only(&snapshot), &exact, 0.03);
}

#[test]
fn a_flood_of_feature_names_stays_within_the_cap() {
    let settings = EngineSettings {
        shards: 2,
        ..EngineSettings::default()
    };
    let lines: Vec<String> = (0..100_000)
        .map(|i| {
            format!(
                r#"{{"user_id":"u{}","event":"feature_used","feature":"feature-{i}","ts":{}}}"#,
                i % 5_000,
                1_772_323_200_000i64 + i
            )
        })
        .collect();
    let snapshot = run_engine(&lines, settings);
    assert_eq!(snapshot.state.tracked_features, 200);
    assert_eq!(snapshot.features.len(), 201, "200 names and __other__");
    assert_eq!(snapshot.events.feature_overflow, 100_000 - 200);
    let other = &snapshot.features["__other__"];
    assert_eq!(
        other.active_users.d1, snapshot.active_users.d1,
        "every user used a pooled feature"
    );
}

#[test]
fn a_million_new_users_in_one_second() {
    // One signup each, all within the same second: the sketches leave their exact mode at
    // once and the counts hold. What the million open sessions cost in memory at the peak
    // is measured on a real pulse process in `memory`.
    let second_start = 1_772_323_200_000i64;
    let lines: Vec<String> = (0..1_000_000)
        .map(|i| {
            format!(
                r#"{{"user_id":"new-{i}","event":"signup","ts":{}}}"#,
                second_start + i % 1000
            )
        })
        .collect();
    let snapshot = run_engine(
        &lines,
        EngineSettings {
            shards: 2,
            ..EngineSettings::default()
        },
    );
    for (name, value) in [
        ("active 1d", snapshot.active_users.d1),
        ("new 1d", snapshot.new_users.d1),
        ("recent 5m", snapshot.recent_active_users.m5),
    ] {
        let error = (value as f64 - 1e6).abs() / 1e6;
        assert!(
            error < 0.03,
            "{name}: {value} is {:.2} % off",
            error * 100.0
        );
    }
    assert_eq!(
        snapshot.sessions.d1.count, 1_000_000,
        "one bounce each, counted exactly"
    );
    assert_eq!(snapshot.sessions.d1.bounce_rate, 1.0);
}
