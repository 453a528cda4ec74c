//! Warehouse rollups: the KPIs of every day still held, as one record per metric, window,
//! dimensions and day, so data engineers can load pulse's numbers into a warehouse.
//!
//! Pure like the rest of the core: an [`EngineState`] (however it was obtained — a barrier
//! copy in the service, the end of a replay), the settings and two instants in, records
//! out. Writing them (NDJSON files, a Kafka topic) is pulse-ingest's job.
//!
//! The one decision to know: a day's values are computed by *the same code as the live
//! snapshot* — each partition summarises its state with "today" set to that day
//! ([`crate::families::KpiState::summarize_afresh`]), [`snapshot::build`] merges the
//! summaries, and each KPI family turns its section into records
//! ([`crate::families::Family::rollups`]).
//! The rollup of the current day therefore equals `/v1/metrics` to the last digit, and a
//! past day's is what `/v1/metrics` would show with that day as today, given everything
//! that has arrived since. It costs a summary per day held (36 by default), which is why the service
//! computes rollups off the ingest path and only every few minutes.
//!
//! Two rules keep a warehouse correct when it upserts by [`Rollup::key`]:
//! - A window is emitted only while pulse holds every day of it: from the earliest day any
//!   partition holds (and at most `retention_days` back) to today. As the retention ring rolls,
//!   or after a start from empty state, a 30-day window that pulse only partly knows is not
//!   emitted, so it can never overwrite the complete value a warehouse already has.
//! - [`Rollup::is_final`] says the value can no longer change within the stream's contract:
//!   the session watermark has reached the day's end plus `sessions.max_length`,
//!   `sessions.timeout` and `allowed_lateness`, so every session that started that day is
//!   closed and no event of that day can still join one. (An event later than the allowed lateness still counts
//!   as activity — `events.late_for_sessions` — and may move a final distinct count; the
//!   record is then emitted again with a newer `computed_at`.)

use std::collections::BTreeMap;

use base64::Engine as _;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize, Serializer};

use crate::engine::EngineState;
use crate::families::Summary;
use crate::family::{RollupOut, RollupValue, Rules, SectionContext};
use crate::partition::total_counters;
use crate::settings::EngineSettings;
use crate::sketch::DistinctSketch;
use crate::snapshot;
use crate::time::{Calendar, Day, rfc3339};
use crate::windows::{SummaryPoint, WINDOWS};

/// One value of one metric over one window ending on one calendar day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// `metric|window|dimensions as JSON|period_start`: unique per value, stable across
    /// emissions, so loads upsert on it (the newest `computed_at` wins).
    pub key: String,
    /// What the record measures, as its family names it: `active_users`, `new_users`,
    /// `sessions`, `feature_adoption`, ...
    pub metric: String,
    /// `1d`, `7d` or `30d`, ending on the period's day.
    pub window: String,
    /// E.g. `{"feature": "export"}`; empty for the whole product.
    pub dimensions: BTreeMap<String, String>,
    /// Start of the calendar day in `timezone` (RFC 3339 with the zone's offset).
    pub period_start: String,
    /// Start of the next calendar day (exclusive).
    pub period_end: String,
    pub timezone: String,
    #[serde(serialize_with = "number")]
    pub value: f64,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// When this value was computed (RFC 3339, UTC): the version of the record.
    pub computed_at: String,
    /// Base64 of the DataSketches HLL image of the day's distinct users (`1d` windows of
    /// `active_users` and `feature_active_users`, when asked for; absent for a day without
    /// users). Users are hashed as their UTF-8 bytes with DataSketches' default seed, 9001
    /// (see [`crate::sketch`]), so the images union with sketches built elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch: Option<String>,
}

/// Counts are written as JSON integers, ratios and durations as numbers.
fn number<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        s.serialize_i64(*value as i64)
    } else {
        s.serialize_f64(*value)
    }
}

/// The instants a rollup is taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupClock {
    /// "Now" of the windows (the engine's clock: wall or latest event time); `None` before
    /// the first event, when there is nothing to roll up.
    pub now_ms: Option<i64>,
    /// The wall clock: the records' `computed_at`.
    pub computed_at_ms: i64,
}

/// Every rollup of `state`: each metric, window and feature of every day held, final and
/// provisional, ordered by day. `settings` must be the ones the state was built with.
pub fn rollups(
    state: &EngineState,
    settings: &EngineSettings,
    clock: RollupClock,
    include_sketches: bool,
) -> Vec<Rollup> {
    let Some(now_ms) = clock.now_ms else {
        return Vec::new();
    };
    let shape = Rules::of(settings).shape;
    let mut calendar = Calendar::new(settings.timezone.clone());
    let today = calendar.day_of(now_ms);
    let oldest = today - settings.retention_days as Day;
    let Some(first) =
        (oldest..=today).find(|day| state.partitions.iter().any(|p| p.kpis.holds_day(*day)))
    else {
        return Vec::new();
    };
    let context = Context {
        zone: settings.timezone.clone(),
        timezone: settings.timezone.iana_name().unwrap_or("UTC").to_owned(),
        computed_at: rfc3339(clock.computed_at_ms),
        final_after_ms: settings
            .session_max_length_ms
            .saturating_add(settings.session_timeout_ms)
            .saturating_add(settings.allowed_lateness_ms),
        watermark_ms: state.router.watermark_ms,
        include_sketches,
    };
    let now_minute = now_ms.div_euclid(60_000);
    let counters = total_counters(state.partitions.iter().map(|p| &p.inputs));
    let cx = SectionContext {
        router: &state.router,
        shape,
    };
    let mut out = Vec::new();
    for day in first..=today {
        let at = SummaryPoint {
            today: day,
            now_minute,
            // Afresh: every partition recounts, so users merge anyway.
            merge_users: false,
        };
        let summaries: Vec<Summary> = state
            .partitions
            .iter()
            .map(|p| p.kpis.summarize_afresh(at, settings))
            .collect();
        let snapshot = snapshot::build(
            &state.router,
            &counters,
            &summaries,
            &mut calendar,
            shape,
            Some(now_ms),
        );
        // Windows pulse holds every day of, by position in `WINDOWS`.
        let complete: Vec<usize> = (0..WINDOWS.len())
            .filter(|w| day - (WINDOWS[*w] as Day - 1) >= first)
            .collect();
        let period = Period::of(&calendar, day, &context);
        let mut push = |value: RollupValue<'_>| out.push(record(value, &period, &context));
        let mut values = RollupOut {
            complete: &complete,
            sketches: include_sketches,
            shape,
            cx: &cx,
            push: &mut push,
        };
        snapshot.kpis.rollups(&summaries, &mut values);
    }
    out
}

/// What every record of one rollup shares.
struct Context {
    zone: TimeZone,
    timezone: String,
    computed_at: String,
    /// A day is final once the watermark reaches its end plus this.
    final_after_ms: i64,
    watermark_ms: Option<i64>,
    include_sketches: bool,
}

/// One calendar day's bounds, as written in records.
struct Period {
    start: String,
    end: String,
    is_final: bool,
}

impl Period {
    fn of(calendar: &Calendar, day: Day, context: &Context) -> Period {
        let start_ms = calendar.day_start_ms(day);
        let end_ms = calendar.day_start_ms(day + 1);
        Period {
            start: local_rfc3339(start_ms, &context.zone),
            end: local_rfc3339(end_ms, &context.zone),
            is_final: is_final(end_ms, context.final_after_ms, context.watermark_ms),
        }
    }
}

/// Whether a day ending (exclusively) at `end_ms` can no longer change: every session that
/// started on it has closed (its last event is before `end + max_length`, and it closes
/// once the watermark passes that event + timeout + lateness), and no event of the day can
/// join a session any more (the router sessionizes only events at or after the watermark
/// less the lateness).
pub fn is_final(end_ms: i64, final_after_ms: i64, watermark_ms: Option<i64>) -> bool {
    watermark_ms.is_some_and(|w| w >= end_ms.saturating_add(final_after_ms))
}

/// RFC 3339 of an instant in the zone, with its offset: the calendar day stays readable.
fn local_rfc3339(ms: i64, zone: &TimeZone) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => ts
            .to_zoned_datetime(zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => rfc3339(ms),
    }
}

fn encode(sketch: &DistinctSketch) -> String {
    base64::engine::general_purpose::STANDARD.encode(sketch.to_bytes())
}

/// A family's value as a record of the day `period`.
fn record(value: RollupValue<'_>, period: &Period, context: &Context) -> Rollup {
    let window = format!("{}d", WINDOWS[value.window]);
    let dimensions: BTreeMap<String, String> = value
        .dimensions
        .iter()
        .map(|(name, v)| ((*name).to_owned(), (*v).to_owned()))
        .collect();
    let dims = serde_json::to_string(&dimensions).expect("a map of strings serialises");
    Rollup {
        key: format!("{}|{window}|{dims}|{}", value.metric, period.start),
        metric: value.metric.to_owned(),
        window,
        dimensions,
        period_start: period.start.clone(),
        period_end: period.end.clone(),
        timezone: context.timezone.clone(),
        value: value.value,
        is_final: period.is_final,
        computed_at: context.computed_at.clone(),
        sketch: (value.window == 0 && context.include_sketches)
            .then_some(value.sketch)
            .flatten()
            .map(encode),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::Value;

    use super::*;
    use crate::Engine;
    use crate::KpiSnapshot;
    use crate::funnel_rules::{FunnelDef, StepMatch, TimeToValueDef};
    use crate::settings::time_zone;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    /// 2026-03-01T00:00:00Z.
    const T0: i64 = 1_772_323_200_000;
    const WALL: i64 = 1_900_000_000_000;

    fn workload_engine(settings: EngineSettings) -> Engine {
        let config = pulse_workload::WorkloadConfig {
            seed: 5,
            users: 250,
            // Only engines with [outcomes.*] take them for more than activity.
            outcomes: true,
            platforms: ["web", "ios", "android"].map(str::to_owned).to_vec(),
            ..pulse_workload::WorkloadConfig::default()
        };
        let mut engine = Engine::new(settings, WALL);
        for event in pulse_workload::generate(&config) {
            engine.ingest(event.to_json().as_bytes(), None);
        }
        engine
    }

    /// A platform breakdown, for the dimension records.
    fn platform() -> Vec<crate::dimensions::DimensionSettings> {
        vec![crate::dimensions::DimensionSettings {
            name: "platform".into(),
            paths: vec!["/platform".into()],
            max_values: 2,
        }]
    }

    /// A funnel and a time to value the workload walks (its signups and feature use).
    fn activation() -> (Vec<FunnelDef>, Option<TimeToValueDef>) {
        let kind = |kind: &str| StepMatch {
            kind: Some(kind.into()),
            ..StepMatch::default()
        };
        let funnel = FunnelDef {
            name: "activation".into(),
            window_ms: 7 * 86_400_000,
            steps: vec![kind("signup"), kind("feature_used")],
        };
        let value = TimeToValueDef {
            event: kind("feature_used"),
            window_ms: 14 * 86_400_000,
        };
        (vec![funnel], Some(value))
    }

    /// The snapshot and the rollups of one engine, at the same instant.
    fn both(engine: &mut Engine, sketches: bool) -> (KpiSnapshot, Vec<Rollup>) {
        let snapshot = engine.snapshot();
        let clock = RollupClock {
            now_ms: engine.ingestor().now_ms(),
            computed_at_ms: WALL,
        };
        let records = rollups(&engine.state(), engine.settings(), clock, sketches);
        (snapshot, records)
    }

    fn find<'a>(
        records: &'a [Rollup],
        period_start: &str,
        metric: &str,
        window: &str,
        feature: Option<&str>,
    ) -> Option<&'a Rollup> {
        records.iter().find(|r| {
            r.period_start == period_start
                && r.metric == metric
                && r.window == window
                && r.dimensions.get("feature").map(String::as_str) == feature
        })
    }

    #[test]
    fn todays_rollup_equals_the_snapshot() {
        for zone in ["UTC", "America/New_York"] {
            let settings = EngineSettings {
                shards: 3,
                timezone: time_zone(zone).unwrap(),
                dimensions: platform(),
                feature_dimensions: vec!["platform".into()],
                ..EngineSettings::default()
            };
            let mut engine = workload_engine(settings);
            let (snapshot, records) = both(&mut engine, false);
            let today = records.last().unwrap().period_start.clone();
            assert!(records.iter().all(|r| r.period_start <= today));
            let value = |metric, window: &str, feature| {
                find(&records, &today, metric, window, feature)
                    .unwrap_or_else(|| panic!("{zone}: no {metric:?} {window} {feature:?}"))
                    .value
            };
            for (window, active) in snapshot.kpis.activity.active_users.labelled() {
                assert_eq!(value("active_users", window, None), *active as f64);
            }
            for (window, new) in snapshot.kpis.activity.new_users.labelled() {
                assert_eq!(value("new_users", window, None), *new as f64);
            }
            for (window, s) in snapshot.kpis.sessions.sessions.labelled() {
                assert!(s.count > 0, "{zone} {window}: the workload has sessions");
                assert_eq!(value("sessions", window, None), s.count as f64);
                for (metric, expected) in [
                    ("session_duration_avg_seconds", s.avg_duration_seconds),
                    ("session_duration_p50_seconds", s.p50_duration_seconds),
                    ("session_duration_p90_seconds", s.p90_duration_seconds),
                    ("bounce_rate", s.bounce_rate),
                    ("events_per_session", s.events_per_session),
                ] {
                    assert_eq!(value(metric, window, None), expected, "{metric:?}");
                }
            }
            assert!(!snapshot.kpis.features.features.is_empty());
            for (name, kpis) in &snapshot.kpis.features.features {
                for ((window, users), (_, adoption)) in kpis
                    .active_users
                    .labelled()
                    .into_iter()
                    .zip(kpis.adoption.labelled())
                {
                    let users_record =
                        find(&records, &today, "feature_active_users", window, Some(name));
                    match users_record {
                        Some(r) => assert_eq!(r.value, *users as f64),
                        None => assert_eq!(*users, 0, "{name} {window}"),
                    }
                    if *users > 0 {
                        assert_eq!(value("feature_adoption", window, Some(name)), *adoption);
                    }
                }
            }
            let platforms = &snapshot.kpis.breakdowns.dimensions["platform"];
            assert!(platforms.contains_key("__other__") && platforms.contains_key("__invalid__"));
            let of_value = |metric: &str, window: &str, value: &str, feature: Option<&str>| {
                records.iter().find(|r| {
                    let get = |key: &str| r.dimensions.get(key).map(String::as_str);
                    r.period_start == today
                        && r.metric == metric
                        && r.window == window
                        && get("dimension") == Some("platform")
                        && get("value") == Some(value)
                        && get("feature") == feature
                })
            };
            let mut sessions_seen = 0;
            for (value, kpis) in platforms {
                for (w, (window, active)) in kpis.active_users.labelled().into_iter().enumerate() {
                    let s = kpis.sessions.get(w);
                    sessions_seen += s.count;
                    for (metric, expected) in [
                        ("dimension_active_users", *active as f64),
                        ("dimension_new_users", *kpis.new_users.get(w) as f64),
                        ("dimension_sessions", s.count as f64),
                        (
                            "dimension_session_duration_avg_seconds",
                            s.avg_duration_seconds,
                        ),
                        (
                            "dimension_session_duration_p50_seconds",
                            s.p50_duration_seconds,
                        ),
                        ("dimension_bounce_rate", s.bounce_rate),
                        ("dimension_events_per_session", s.events_per_session),
                    ] {
                        match of_value(metric, window, value, None) {
                            Some(r) => assert_eq!(r.value, expected, "{metric} {value}"),
                            // Only a window nobody carried the value in has no record.
                            None => assert_eq!(*active, 0, "{metric} {value} {window}"),
                        }
                    }
                }
                for (feature, k) in &kpis.features {
                    for (w, (window, users)) in k.active_users.labelled().into_iter().enumerate() {
                        let users_record = of_value(
                            "dimension_feature_active_users",
                            window,
                            value,
                            Some(feature),
                        );
                        let adoption =
                            of_value("dimension_feature_adoption", window, value, Some(feature));
                        match (users_record, adoption) {
                            (Some(u), Some(a)) => {
                                assert_eq!(u.value, *users as f64);
                                assert_eq!(a.value, *k.adoption.get(w));
                            }
                            (None, None) => assert_eq!(*users, 0, "{value} {feature} {window}"),
                            _ => panic!("{value} {feature} {window}: one record of two"),
                        }
                    }
                }
            }
            assert!(sessions_seen > 0, "{zone}: sessions per value");
            assert!(platforms.values().any(|v| !v.features.is_empty()));
            let records_today = records.iter().filter(|r| r.period_start == today);
            assert!(
                records_today
                    .clone()
                    .all(|r| !r.is_final && r.timezone == zone)
            );
        }
    }

    #[test]
    fn every_held_day_is_rolled_up_with_unique_keys() {
        let mut engine = workload_engine(EngineSettings::default());
        let (_, records) = both(&mut engine, false);
        let keys: HashSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys.len(), records.len(), "keys are unique");
        // The workload covers 36 calendar days (35 × 24 h ending at noon): the ring's.
        let days: Vec<&str> = records.iter().map(|r| r.period_start.as_str()).collect();
        let distinct: std::collections::BTreeSet<&str> = days.iter().copied().collect();
        assert_eq!(distinct.len(), 36);
        assert_eq!(distinct.first(), Some(&"2026-01-25T00:00:00+00:00"));
        assert_eq!(distinct.last(), Some(&"2026-03-01T00:00:00+00:00"));
        assert!(days.is_sorted(), "ordered by day");
        // A window is emitted only when every day of it is held.
        let windows = |day: &str| -> HashSet<String> {
            records
                .iter()
                .filter(|r| r.period_start == day && r.metric == "active_users")
                .map(|r| r.window.clone())
                .collect()
        };
        assert_eq!(windows("2026-01-25T00:00:00+00:00").len(), 1);
        assert_eq!(windows("2026-01-31T00:00:00+00:00").len(), 2);
        assert_eq!(windows("2026-02-22T00:00:00+00:00").len(), 2);
        assert_eq!(windows("2026-02-23T00:00:00+00:00").len(), 3);
        // The day before yesterday is long closed (the workload ends at noon).
        let r = find(
            &records,
            "2026-02-27T00:00:00+00:00",
            "sessions",
            "1d",
            None,
        );
        assert!(r.unwrap().is_final);
        let r = find(
            &records,
            "2026-02-28T00:00:00+00:00",
            "sessions",
            "1d",
            None,
        );
        assert!(
            !r.unwrap().is_final,
            "yesterday's long sessions may still be open"
        );
        assert_eq!(records[0].period_end, "2026-01-26T00:00:00+00:00");
        assert_eq!(records[0].computed_at, "2030-03-17T17:46:40.000Z");
    }

    fn login(engine: &mut Engine, user: &str, ts: i64) {
        let line = format!(r#"{{"user_id":"{user}","event":"login","ts":{ts}}}"#);
        assert!(matches!(
            engine.ingest(line.as_bytes(), None),
            crate::ingest::Outcome::Accepted { .. }
        ));
    }

    #[test]
    fn a_day_becomes_final_once_its_longest_session_must_have_closed() {
        let settings = EngineSettings::default();
        let final_at = T0
            + DAY
            + settings.session_max_length_ms
            + settings.session_timeout_ms
            + settings.allowed_lateness_ms;
        let mut engine = Engine::new(settings, WALL);
        login(&mut engine, "day-user", T0 + 10 * HOUR);
        // The longest session a day can have: it starts in the day's last millisecond and
        // runs the maximum length, so its last event is at period_end + max_length - 1 and
        // it closes only once the watermark passes that + timeout + lateness.
        let start = T0 + DAY - 1;
        for step in 0..=72 {
            login(&mut engine, "night-owl", start + step * 20 * 60_000);
        }
        let day = "2026-03-01T00:00:00+00:00";
        let sessions_of_day = |engine: &mut Engine| {
            let (_, records) = both(engine, false);
            let r = find(&records, day, "sessions", "1d", None).unwrap().clone();
            (r.value, r.is_final)
        };
        // The watermark follows the latest event: move it with another user's events.
        login(&mut engine, "clock", final_at - 1);
        let (before, is_final) = sessions_of_day(&mut engine);
        assert!(!is_final, "one millisecond before, the day is provisional");
        assert_eq!(
            before, 1.0,
            "and rightly so: the long session is still open"
        );
        login(&mut engine, "clock", final_at);
        let (at, is_final) = sessions_of_day(&mut engine);
        assert!(is_final, "at the watermark the day is final");
        assert_eq!(at, 2.0, "both sessions of the day are closed by then");
        login(&mut engine, "clock", final_at + 30 * DAY / 10);
        assert_eq!(
            sessions_of_day(&mut engine),
            (2.0, true),
            "final does not change"
        );
        assert!(is_final_boundary_is_exact());
    }

    fn is_final_boundary_is_exact() -> bool {
        !is_final(1_000, 500, Some(1_499))
            && is_final(1_000, 500, Some(1_500))
            && !is_final(1_000, 500, None)
    }

    #[test]
    fn sketches_are_datasketches_images_of_the_days_users() {
        let mut engine = workload_engine(EngineSettings {
            shards: 2,
            ..EngineSettings::default()
        });
        let (_, records) = both(&mut engine, true);
        let with_sketch: Vec<&Rollup> = records.iter().filter(|r| r.sketch.is_some()).collect();
        assert!(
            with_sketch
                .iter()
                .any(|r| r.metric == "feature_active_users")
        );
        for r in &with_sketch {
            assert_eq!(r.window, "1d");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(r.sketch.as_ref().unwrap())
                .unwrap();
            let sketch = DistinctSketch::from_bytes(&bytes).unwrap();
            assert_eq!(sketch.estimate().round(), r.value, "{}", r.key);
        }
        let daily_active = records
            .iter()
            .filter(|r| r.metric == "active_users" && r.window == "1d")
            .count();
        assert_eq!(
            with_sketch
                .iter()
                .filter(|r| r.metric == "active_users")
                .count(),
            daily_active
        );
        // Unioning a week of daily sketches gives the 7-day figure.
        let last_week: Vec<&&Rollup> = with_sketch
            .iter()
            .filter(|r| r.metric == "active_users")
            .rev()
            .take(7)
            .collect();
        let mut union = crate::sketch::DistinctUnion::new(Rules::of(engine.settings()).shape);
        for r in &last_week {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(r.sketch.as_ref().unwrap())
                .unwrap();
            union.add(&DistinctSketch::from_bytes(&bytes).unwrap());
        }
        let today = &last_week[0].period_start;
        let week = find(&records, today, "active_users", "7d", None).unwrap();
        assert_eq!(union.estimate().round(), week.value);
        let (_, plain) = both(&mut engine, false);
        assert!(plain.iter().all(|r| r.sketch.is_none()));
    }

    #[test]
    fn nothing_to_roll_up_before_the_first_event() {
        let engine = Engine::new(EngineSettings::default(), WALL);
        let clock = RollupClock {
            now_ms: None,
            computed_at_ms: WALL,
        };
        assert!(rollups(&engine.state(), engine.settings(), clock, true).is_empty());
    }

    #[test]
    fn records_follow_the_shipped_json_schema() {
        let schema: Value =
            serde_json::from_str(include_str!("../../../deploy/warehouse/rollup.schema.json"))
                .unwrap();
        let (funnels, time_to_value) = activation();
        let settings = EngineSettings {
            timezone: time_zone("Europe/Berlin").unwrap(),
            outcomes: crate::outcome_settings::generator_tables(),
            dimensions: platform(),
            feature_dimensions: vec!["platform".into()],
            funnels,
            time_to_value,
            ..EngineSettings::default()
        };
        let mut engine = workload_engine(settings);
        let (_, records) = both(&mut engine, true);
        // Every metric the schema names is written (and the validator below refuses any
        // other): the families' rollups and the warehouse schema agree.
        let metrics = schema["properties"]["metric"]["enum"].as_array().unwrap();
        assert_eq!(metrics.len(), 42);
        for metric in metrics {
            let metric = metric.as_str().unwrap();
            assert!(records.iter().any(|r| r.metric == metric), "{metric}");
        }
        for record in &records {
            let value = serde_json::to_value(record).unwrap();
            let errors = validate(&schema, &value, "");
            assert!(errors.is_empty(), "{value}: {errors:?}");
            let back: Rollup = serde_json::from_value(value).unwrap();
            assert_eq!(&back, record);
        }
        let text = serde_json::to_string(&records[0]).unwrap();
        assert!(
            text.starts_with(r#"{"key":"active_users|1d|{}|2026-01-25T00:00:00+01:00","metric":"active_users","window":"1d","dimensions":{},"period_start":"2026-01-25T00:00:00+01:00","period_end":"2026-01-26T00:00:00+01:00","timezone":"Europe/Berlin","value":"#),
            "{text}"
        );
        // Records the schema must reject: the hand validator is not a yes-man.
        let good = serde_json::to_value(&records[0]).unwrap();
        let mut bad = Vec::new();
        for (field, replacement) in [
            ("metric", Value::from("dau")),
            ("window", Value::from("2d")),
            ("value", Value::from(-1)),
            ("final", Value::from("yes")),
            ("period_start", Value::from("yesterday")),
            ("dimensions", serde_json::json!({ "feature": "x" })),
            (
                "dimensions",
                serde_json::json!({ "dimension": "platform", "value": "ios" }),
            ),
            ("extra", Value::from(1)),
        ] {
            let mut v = good.clone();
            v[field] = replacement;
            bad.push(v);
        }
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("computed_at");
        bad.push(missing);
        let by_feature = records
            .iter()
            .find(|r| r.metric == "dimension_feature_adoption")
            .unwrap();
        let mut featureless = serde_json::to_value(by_feature).unwrap();
        featureless["dimensions"]
            .as_object_mut()
            .unwrap()
            .remove("feature");
        bad.push(featureless);
        let funnel = records.iter().find(|r| r.metric == "funnel_users").unwrap();
        let mut unnamed = serde_json::to_value(funnel).unwrap();
        unnamed["dimensions"] = serde_json::json!({});
        bad.push(unnamed);
        for v in bad {
            assert!(!validate(&schema, &v, "").is_empty(), "accepted {v}");
        }
    }

    /// A JSON Schema (2020-12) check of the keywords `rollup.schema.json` uses; any other
    /// keyword fails the test, so the schema cannot outgrow what is checked here.
    fn validate(schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let schema = schema.as_object().expect("a schema is an object");
        for (keyword, rule) in schema {
            let fail = |errors: &mut Vec<String>, what: &str| {
                errors.push(format!("{at}: {keyword} {rule}: {what}"));
            };
            match keyword.as_str() {
                "$schema" | "$id" | "title" | "description" => {}
                "type" => {
                    let ok = match rule.as_str().unwrap() {
                        "object" => value.is_object(),
                        "string" => value.is_string(),
                        "number" => value.is_number(),
                        "boolean" => value.is_boolean(),
                        other => panic!("type {other} is not checked here"),
                    };
                    if !ok {
                        fail(&mut errors, "wrong type");
                    }
                }
                "enum" => {
                    if !rule.as_array().unwrap().contains(value) {
                        fail(&mut errors, "not listed");
                    }
                }
                "const" if rule != value => fail(&mut errors, "differs"),
                "const" => {}
                "required" => {
                    for name in rule.as_array().unwrap() {
                        if value.is_object() && value.get(name.as_str().unwrap()).is_none() {
                            fail(&mut errors, "missing");
                        }
                    }
                }
                "properties" => {
                    for (name, sub) in rule.as_object().unwrap() {
                        if let Some(v) = value.get(name) {
                            errors.extend(validate(sub, v, &format!("{at}/{name}")));
                        }
                    }
                }
                "additionalProperties" => {
                    let known = schema.get("properties").and_then(Value::as_object);
                    for (name, v) in value.as_object().into_iter().flatten() {
                        if known.is_some_and(|k| k.contains_key(name)) {
                            continue;
                        }
                        match rule {
                            Value::Bool(false) => fail(&mut errors, name),
                            sub => errors.extend(validate(sub, v, &format!("{at}/{name}"))),
                        }
                    }
                }
                "minimum" => {
                    if value.as_f64().is_some_and(|v| v < rule.as_f64().unwrap()) {
                        fail(&mut errors, "too small");
                    }
                }
                "minLength" => {
                    let min = rule.as_u64().unwrap() as usize;
                    if value.as_str().is_some_and(|s| s.chars().count() < min) {
                        fail(&mut errors, "too short");
                    }
                }
                "maxProperties" => {
                    let max = rule.as_u64().unwrap() as usize;
                    if value.as_object().is_some_and(|o| o.len() > max) {
                        fail(&mut errors, "too many");
                    }
                }
                "format" => {
                    assert_eq!(rule, "date-time", "only date-time is checked here");
                    if let Some(text) = value.as_str()
                        && text.parse::<Timestamp>().is_err()
                    {
                        fail(&mut errors, "not RFC 3339");
                    }
                }
                "contentEncoding" => {
                    assert_eq!(rule, "base64");
                    if let Some(text) = value.as_str()
                        && base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .is_err()
                    {
                        fail(&mut errors, "not base64");
                    }
                }
                "allOf" => {
                    for sub in rule.as_array().unwrap() {
                        errors.extend(validate(sub, value, at));
                    }
                }
                "if" => {
                    let branch = if validate(rule, value, at).is_empty() {
                        schema.get("then")
                    } else {
                        schema.get("else")
                    };
                    if let Some(branch) = branch {
                        errors.extend(validate(branch, value, at));
                    }
                }
                "then" | "else" => {}
                other => panic!("keyword {other} is not checked here"),
            }
        }
        errors
    }
}
