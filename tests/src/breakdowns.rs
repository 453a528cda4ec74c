//! The exact model of breakdowns: the `dimensions` and `dimension_overflow_events` parts of
//! the snapshot, from the complete list of admitted events, with hash sets.
//!
//! It follows issue #16's definitions literally: an event's value of a dimension is the
//! first of its configured fields present (not `null`): text trimmed, a number as its
//! decimal text; empty, longer than 64 bytes after trimming or a pool's name is
//! `__invalid__`, absent is `__none__`. Values get their own entry in order of first appearance in arrival order, up
//! to `max_values`; later ones are `__other__`, and every event so pooled is counted. Then
//! each (dimension, value) gets the overall KPIs' definitions applied to the events
//! carrying it; a session (as the overall model cuts them, every one closed as at the end
//! of a replay) counts under the value of its first event. A value is shown when some
//! event carrying it lies in the 31 days the windows read (today and the 30 before).
//!
//! For a dimension with `features = true`, each value also gets the features used by its
//! users, as the overall model counts them (a `feature_used` event with a feature) under the
//! feature cap (names in order of first appearance up to `max_features`, later ones
//! `__other__`): per feature, the distinct users of it carrying the value in each window and
//! their share of the value's active users; a feature is listed when some such use lies in
//! the 30-day window.
//!
//! Fields are top-level keys of the event (`"/platform"` is the key `platform`), which is
//! how the workload writes them; nested pointers are the decoder's business and tested there.

use std::collections::{BTreeMap, HashMap};

use jiff::civil::Date;
use pulse_workload::{GeneratedEvent, Property};
use serde_json::{Value, json};

use crate::oracle::{
    Days, OracleSettings, Session, UsersByDay, WINDOWS, day_of, distinct, ratio, session_stats,
    sessions_of_events, sum_of_daily,
};

/// One configured dimension, as the model needs it.
#[derive(Debug, Clone)]
pub struct Dimension {
    pub name: String,
    /// Top-level keys, first present wins.
    pub keys: Vec<String>,
    pub max_values: usize,
    /// Whether feature adoption is broken down by its values (`features = true`).
    pub features: bool,
}

/// The value of `event` for `dimension`, before the cap.
pub fn raw_value(event: &GeneratedEvent, dimension: &Dimension) -> String {
    let found = dimension
        .keys
        .iter()
        .find_map(|key| event.properties.iter().find(|(k, _)| k == key));
    let text = match found {
        None => return "__none__".to_owned(),
        Some((_, Property::Int(n))) => n.to_string(),
        Some((_, Property::Text(s))) => s.trim().to_owned(),
    };
    let pool_name = ["__none__", "__invalid__", "__other__"].contains(&text.as_str());
    if text.is_empty() || text.len() > 64 || pool_name {
        "__invalid__".to_owned()
    } else {
        text
    }
}

/// The feature of each event, as the engine's capped registry names it: `None` for an event
/// that is no use of a feature.
fn capped_features(
    events: &[GeneratedEvent],
    max_features: usize,
    settings: &OracleSettings,
) -> Vec<Option<String>> {
    let mut tracked: Vec<&str> = Vec::new();
    events
        .iter()
        .map(|event| {
            let name = event.feature.as_deref()?;
            if settings.kinds.kind_of(&event.name) != crate::Kind::FeatureUsed {
                return None;
            }
            if tracked.contains(&name) {
                return Some(name.to_owned());
            }
            if tracked.len() < max_features {
                tracked.push(name);
                return Some(name.to_owned());
            }
            Some("__other__".to_owned())
        })
        .collect()
}

/// The breakdown part of the snapshot for `events`, all admitted, in arrival order, with
/// `max_features` features tracked.
pub fn exact_breakdowns(
    events: &[GeneratedEvent],
    dimensions: &[Dimension],
    max_features: usize,
    settings: &OracleSettings,
) -> Value {
    let tz = &settings.timezone;
    let mut users: HashMap<String, usize> = HashMap::new();
    let user_of: Vec<usize> = events
        .iter()
        .map(|e| {
            let next = users.len();
            *users.entry(e.user.to_string()).or_insert(next)
        })
        .collect();
    let Some(now) = events.iter().map(|e| e.ts_ms).max() else {
        return json!({});
    };
    let today = day_of(now, tz);
    let shown = Days::ending(today, 0, 31);
    assert!(
        !settings.open_sessions_uncounted,
        "the model closes every session, as a replay's end does"
    );
    let sessions = sessions_of_events(events, settings);
    let features = capped_features(events, max_features, settings);

    let mut by_dimension = serde_json::Map::new();
    let mut overflow = serde_json::Map::new();
    for dimension in dimensions {
        // Labels by first appearance, under the cap.
        let mut tracked: Vec<String> = Vec::new();
        let mut pooled = 0u64;
        let mut active: BTreeMap<String, UsersByDay> = BTreeMap::new();
        let mut signups: BTreeMap<String, UsersByDay> = BTreeMap::new();
        // Value → feature → users by day.
        let mut used: BTreeMap<String, BTreeMap<String, UsersByDay>> = BTreeMap::new();
        let mut labels: Vec<String> = Vec::with_capacity(events.len());
        for ((event, &user), feature) in events.iter().zip(&user_of).zip(&features) {
            let value = raw_value(event, dimension);
            let pool = value == "__none__" || value == "__invalid__";
            let label = if pool || tracked.contains(&value) {
                value
            } else if tracked.len() < dimension.max_values {
                tracked.push(value.clone());
                value
            } else {
                pooled += 1;
                "__other__".to_owned()
            };
            labels.push(label.clone());
            let day = day_of(event.ts_ms, tz);
            if let Some(feature) = feature.as_ref().filter(|_| dimension.features) {
                let by_day = used.entry(label.clone()).or_default();
                let users = by_day.entry(feature.clone()).or_default();
                users.entry(day).or_default().insert(user);
            }
            active
                .entry(label.clone())
                .or_default()
                .entry(day)
                .or_default()
                .insert(user);
            if settings.kinds.kind_of(&event.name) == crate::Kind::Signup {
                signups
                    .entry(label)
                    .or_default()
                    .entry(day)
                    .or_default()
                    .insert(user);
            }
        }
        let mut values = serde_json::Map::new();
        for (label, by_day) in &active {
            if !by_day.keys().any(|day| shown.contains(*day)) {
                continue;
            }
            let empty = UsersByDay::new();
            let signed_up = signups.get(label).unwrap_or(&empty);
            let started: Vec<(Session, Date)> = sessions
                .iter()
                .filter(|(s, _)| labels[s.first] == *label)
                .copied()
                .collect();
            let mut kpis = value_kpis(by_day, signed_up, &started, today);
            let adoption = features_of_value(used.get(label), by_day, today);
            if !adoption.is_empty() {
                kpis["features"] = adoption.into();
            }
            values.insert(label.clone(), kpis);
        }
        by_dimension.insert(dimension.name.clone(), values.into());
        overflow.insert(dimension.name.clone(), pooled.into());
    }
    json!({ "dimensions": by_dimension, "dimension_overflow_events": overflow })
}

/// Each feature some user carrying the value used in the 30-day window: its users and
/// their share of the value's `active` users, per window.
fn features_of_value(
    used: Option<&BTreeMap<String, UsersByDay>>,
    active: &UsersByDay,
    today: Date,
) -> serde_json::Map<String, Value> {
    let mut features = serde_json::Map::new();
    for (feature, by_day) in used.into_iter().flatten() {
        if distinct(by_day, Days::ending(today, 0, 30)) == 0 {
            continue;
        }
        let (mut users, mut adoption) = (serde_json::Map::new(), serde_json::Map::new());
        for (key, len) in WINDOWS {
            let w = Days::ending(today, 0, len);
            let n = distinct(by_day, w);
            users.insert(key.to_owned(), json!(n));
            let share = ratio(n as f64, distinct(active, w) as f64);
            adoption.insert(key.to_owned(), json!(share));
        }
        features.insert(
            feature.clone(),
            json!({ "active_users": users, "adoption": adoption }),
        );
    }
    features
}

fn value_kpis(
    active: &UsersByDay,
    signups: &UsersByDay,
    sessions: &[(Session, Date)],
    today: Date,
) -> Value {
    let per_window = |by_day: &UsersByDay, ends_before: i64| -> Value {
        WINDOWS
            .iter()
            .map(|&(key, len)| {
                let n = distinct(by_day, Days::ending(today, ends_before, len));
                (key.to_owned(), json!(n))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let (last30, last7) = (Days::ending(today, 1, 30), Days::ending(today, 1, 7));
    let (mau, wau) = (
        distinct(active, last30) as f64,
        distinct(active, last7) as f64,
    );
    let session_json: serde_json::Map<String, Value> = WINDOWS
        .iter()
        .map(|&(key, len)| {
            let w = Days::ending(today, 0, len);
            let started: Vec<(Session, Date)> = sessions
                .iter()
                .filter(|(_, day)| w.contains(*day))
                .copied()
                .collect();
            (key.to_owned(), session_stats(&started, distinct(active, w)))
        })
        .collect();
    json!({
        "sessions": session_json,
        "active_users": per_window(active, 0),
        "active_users_previous": per_window(active, 1),
        "new_users": per_window(signups, 0),
        "stickiness": {
            "dau_mau": ratio(sum_of_daily(active, last30) as f64 / 30.0, mau),
            "dau_wau": ratio(sum_of_daily(active, last7) as f64 / 7.0, wau),
            "wau_mau": ratio(wau, mau),
        },
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    const T0: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z
    const DAY: i64 = 86_400_000;

    fn ev(user: &str, name: &str, ts_ms: i64, props: &[(&str, Property)]) -> GeneratedEvent {
        GeneratedEvent {
            properties: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            ..GeneratedEvent::plain(user, name, ts_ms)
        }
    }

    fn text(s: &str) -> Property {
        Property::Text(s.into())
    }

    fn platform(max_values: usize) -> Dimension {
        Dimension {
            name: "platform".into(),
            keys: vec!["platform".into(), "os".into()],
            max_values,
            features: false,
        }
    }

    #[test]
    fn values_follow_the_definitions() {
        let events = [
            ev("a", "login", T0, &[("platform", text(" web "))]),
            ev(
                "b",
                "signup",
                T0,
                &[("os", text("ios")), ("platform", text("web"))],
            ),
            ev("c", "login", T0, &[("os", Property::Int(7))]),
            ev("d", "login", T0, &[("platform", text(""))]),
            ev("e", "login", T0, &[("platform", text(&"x".repeat(65)))]),
            ev("f", "login", T0, &[]),
            ev("g", "login", T0, &[("platform", text("__other__"))]),
            ev("a", "login", T0 + 1, &[("platform", text("ios"))]),
        ];
        let got = exact_breakdowns(&events, &[platform(2)], 200, &OracleSettings::default());
        let values = &got["dimensions"]["platform"];
        let names: Vec<&String> = values.as_object().unwrap().keys().collect();
        assert_eq!(names, ["7", "__invalid__", "__none__", "__other__", "web"]);
        assert_eq!(values["web"]["active_users"]["1d"], 2, "a and b, trimmed");
        assert_eq!(values["web"]["new_users"]["1d"], 1);
        assert_eq!(values["__invalid__"]["active_users"]["1d"], 3, "d, e and g");
        assert_eq!(values["7"]["active_users"]["1d"], 1);
        // "7" was the second value; "ios" came third and was pooled.
        assert_eq!(values["__other__"]["active_users"]["1d"], 1);
        assert_eq!(got["dimension_overflow_events"]["platform"], 1);
    }

    #[test]
    fn stickiness_and_previous_windows_per_value() {
        // "u" on web on each of the 30 days before today, "v" on web once, 3 days ago.
        let mut events: Vec<GeneratedEvent> = (1..=30)
            .map(|d| ev("u", "login", T0 - d * DAY, &[("platform", text("web"))]))
            .collect();
        events.push(ev("v", "login", T0 - 3 * DAY, &[("platform", text("web"))]));
        events.push(ev("w", "login", T0, &[("platform", text("ios"))]));
        let got = exact_breakdowns(&events, &[platform(5)], 200, &OracleSettings::default());
        let web = &got["dimensions"]["platform"]["web"];
        assert_eq!(web["active_users"]["1d"], 0);
        assert_eq!(web["active_users_previous"]["1d"], 1);
        assert_eq!(web["active_users_previous"]["7d"], 2);
        let dau_mau = web["stickiness"]["dau_mau"].as_f64().unwrap();
        assert!((dau_mau - (31.0 / 30.0) / 2.0).abs() < 1e-12, "{dau_mau}");
        assert_eq!(
            got["dimensions"]["platform"]["ios"]["stickiness"]["dau_mau"],
            0.0
        );
    }

    #[test]
    fn a_session_counts_under_its_first_events_value_whatever_the_arrival_order() {
        let events = [
            ev("a", "page_view", T0 + 60_000, &[("platform", text("web"))]),
            ev("a", "login", T0, &[("platform", text("ios"))]),
            ev("b", "login", T0, &[("platform", text("web"))]),
        ];
        let got = exact_breakdowns(&events, &[platform(5)], 200, &OracleSettings::default());
        let values = &got["dimensions"]["platform"];
        assert_eq!(values["ios"]["sessions"]["1d"]["count"], 1);
        assert_eq!(
            values["ios"]["sessions"]["1d"]["avg_duration_seconds"],
            60.0
        );
        assert_eq!(values["web"]["sessions"]["1d"]["count"], 1, "b's only");
        assert_eq!(values["web"]["sessions"]["1d"]["bounce_rate"], 1.0);
    }

    #[test]
    fn feature_adoption_per_value_under_the_feature_cap() {
        let used = |user: &str, feature: &str, ts_ms: i64, platform: &str| GeneratedEvent {
            feature: Some(feature.to_owned()),
            ..ev(user, "feature_used", ts_ms, &[("platform", text(platform))])
        };
        let events = [
            used("a", "export", T0, "web"),
            used("b", "search", T0 - 3 * DAY, "web"),
            // Past the cap of two features: pooled.
            used("c", "alerts", T0, "web"),
            used("a", "search", T0, "ios"),
            ev("d", "login", T0, &[("platform", text("ios"))]),
            // A feature on another kind is no use of it; one used 30 days ago is not listed.
            GeneratedEvent {
                feature: Some("export".to_owned()),
                ..ev("d", "page_view", T0, &[("platform", text("ios"))])
            },
            used("e", "export", T0 - 30 * DAY, "android"),
        ];
        let on = Dimension {
            features: true,
            ..platform(5)
        };
        let got = exact_breakdowns(&events, &[on], 2, &OracleSettings::default());
        let values = &got["dimensions"]["platform"];
        let web = &values["web"]["features"];
        let names: Vec<&String> = web.as_object().unwrap().keys().collect();
        assert_eq!(names, ["__other__", "export", "search"]);
        assert_eq!(
            web["search"]["active_users"],
            json!({"1d": 0, "7d": 1, "30d": 1})
        );
        assert_eq!(web["export"]["adoption"]["1d"], 0.5, "a of a and c");
        assert_eq!(web["__other__"]["active_users"]["1d"], 1);
        let ios = &values["ios"]["features"];
        assert_eq!(ios.as_object().unwrap().len(), 1);
        assert_eq!(ios["search"]["adoption"]["30d"], 0.5, "a of a and d");
        assert!(values["android"].get("features").is_none());
        let off = exact_breakdowns(&events, &[platform(5)], 2, &OracleSettings::default());
        assert!(
            off["dimensions"]["platform"]["web"]
                .get("features")
                .is_none()
        );
    }

    #[test]
    fn values_idle_for_31_days_are_not_shown() {
        let events = [
            ev("a", "login", T0 - 31 * DAY, &[("platform", text("old"))]),
            ev("a", "login", T0, &[("platform", text("new"))]),
        ];
        let got = exact_breakdowns(&events, &[platform(5)], 200, &OracleSettings::default());
        let names: Vec<&String> = got["dimensions"]["platform"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(names, ["new"]);
    }
}
