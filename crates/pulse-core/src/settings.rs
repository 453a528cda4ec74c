//! Validated engine settings.
//!
//! The binary parses `pulse.toml` and the environment into raw values; this module is where
//! they become a checked [`EngineSettings`]. Every cross-field rule lives in
//! [`EngineSettings::validate`] and fails with a [`SettingsError`] naming the key, so a bad
//! config stops pulse at start-up rather than skewing numbers later.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::dimensions::{
    DimensionSettings, MAX_DIMENSIONS, MAX_FEATURE_DIMENSIONS, MAX_VALUES_CAP,
};
use crate::funnel_rules::{FunnelDef, TimeToValueDef};
use crate::outcome_settings::OutcomeSettings;
use crate::partitioner::Partitioner;

/// Which instant is "now" for the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// The largest accepted event time: replays of history and deterministic tests.
    #[default]
    EventTime,
    /// The wall clock given by the caller: the live service, whose days roll at midnight.
    Wall,
}

/// What makes a user part of a retention cohort (`retention.cohort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CohortMode {
    /// The day of the user's first `signup` event held.
    #[default]
    Signup,
    /// The first day of the user's activity, for products without a signup event: only
    /// trustworthy once the whole horizon (64 days) is held.
    FirstSeen,
}

impl CohortMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CohortMode::Signup => "signup",
            CohortMode::FirstSeen => "first_seen",
        }
    }
}

/// Register width of the HyperLogLog sketches: a memory / update-speed trade-off with the
/// same estimates (DataSketches `HllType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HllWidth {
    Hll4,
    Hll6,
    #[default]
    Hll8,
}

/// JSON pointers tried in order for each field; the first one present (and not null) wins.
/// (Also the `[fields]` table of `pulse.toml`, hence serde.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldPaths {
    pub user: Vec<String>,
    pub event: Vec<String>,
    pub time: Vec<String>,
    pub feature: Vec<String>,
    pub session_id: Vec<String>,
}

impl Default for FieldPaths {
    fn default() -> Self {
        fn owned(paths: &[&str]) -> Vec<String> {
            paths.iter().map(|p| (*p).to_owned()).collect()
        }
        FieldPaths {
            user: owned(&["/user_id", "/userId", "/distinct_id"]),
            event: owned(&["/event", "/type"]),
            time: owned(&["/timestamp", "/ts", "/time"]),
            feature: owned(&["/feature", "/properties/feature"]),
            session_id: owned(&["/session_id", "/properties/$session_id"]),
        }
    }
}

/// Event names that give an event its [`crate::EventKind`]; any other name is `Other`.
/// (Also the `[events]` table of `pulse.toml`, hence serde.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindNames {
    pub login: Vec<String>,
    pub page_view: Vec<String>,
    pub feature_used: Vec<String>,
    pub session_start: Vec<String>,
    pub session_end: Vec<String>,
    pub signup: Vec<String>,
}

impl Default for KindNames {
    fn default() -> Self {
        fn owned(names: &[&str]) -> Vec<String> {
            names.iter().map(|n| (*n).to_owned()).collect()
        }
        KindNames {
            login: owned(&["login"]),
            page_view: owned(&["page_view", "$pageview", "Page Viewed", "page", "screen"]),
            feature_used: owned(&["feature_used", "Feature Used"]),
            session_start: owned(&["session_start", "Session Started"]),
            session_end: owned(&["session_end", "Session Ended"]),
            signup: owned(&["signup", "Signed Up"]),
        }
    }
}

/// Everything the engine needs, already checked.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub timezone: TimeZone,
    pub clock: ClockMode,
    /// Worker threads; each owns a share of the partitions.
    pub shards: usize,
    /// Virtual partitions of a source without Kafka's (replay, demo): a record goes to the
    /// one [`Self::partitioner`] picks for its user id.
    pub partitions: usize,
    /// How a producer maps a user id to a partition (see [`crate::partitioner`]).
    pub partitioner: Partitioner,
    /// log2 of the HLL register count: 14 gives about 0.8 % standard error.
    pub hll_lg_k: u8,
    pub hll_width: HllWidth,
    pub session_timeout_ms: i64,
    pub session_max_length_ms: i64,
    /// How far out of order an event may arrive and still join its session exactly.
    pub allowed_lateness_ms: i64,
    /// Days before today that are kept; older events count as `late`.
    pub retention_days: u32,
    /// Retention cohorts by signup or by first activity.
    pub retention_cohort: CohortMode,
    /// Events further than this past the wall clock count as `future`.
    pub max_future_skew_ms: i64,
    /// Distinct features tracked; the rest are pooled as `__other__`.
    pub max_features: usize,
    pub fields: FieldPaths,
    pub kinds: KindNames,
    /// Event names that count as use of a feature (event name → feature name).
    pub feature_events: BTreeMap<String, String>,
    /// Records longer than this are rejected unread.
    pub max_record_bytes: usize,
    /// User ids longer than this (in UTF-8 bytes) are rejected.
    pub max_user_id_bytes: usize,
    /// Surveys, orders and subscription changes (`[outcomes.*]`); all off by default.
    pub outcomes: OutcomeSettings,
    /// Breakdown dimensions, in the order their values are kept.
    pub dimensions: Vec<DimensionSettings>,
    /// The dimensions (by name) whose values break feature adoption down
    /// (`[dimensions.<name>] features = true`), at most
    /// [`MAX_FEATURE_DIMENSIONS`](crate::dimensions::MAX_FEATURE_DIMENSIONS).
    pub feature_dimensions: Vec<String>,
    /// The `[[funnels]]` (see [`crate::funnel_rules`]).
    pub funnels: Vec<FunnelDef>,
    pub time_to_value: Option<TimeToValueDef>,
}

/// The longest window is 30 days, and the previous 30-day window ends yesterday: 31 days.
pub const MIN_RETENTION_DAYS: u32 = 30;
const MAX_SHARDS: usize = 1024;
/// Kafka's own practical limit per topic is in the thousands; virtual partitions beyond
/// that would only multiply per-partition sketches.
pub const MAX_PARTITIONS: usize = 4096;

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            timezone: TimeZone::UTC,
            clock: ClockMode::EventTime,
            shards: 1,
            partitions: 1,
            partitioner: Partitioner::Murmur2,
            hll_lg_k: 14,
            hll_width: HllWidth::Hll8,
            session_timeout_ms: 30 * 60 * 1000,
            session_max_length_ms: 24 * 3600 * 1000,
            allowed_lateness_ms: 5 * 60 * 1000,
            retention_days: 35,
            retention_cohort: CohortMode::Signup,
            max_future_skew_ms: 3600 * 1000,
            max_features: 200,
            fields: FieldPaths::default(),
            kinds: KindNames::default(),
            feature_events: BTreeMap::new(),
            max_record_bytes: 1 << 20,
            max_user_id_bytes: 256,
            outcomes: OutcomeSettings::default(),
            dimensions: Vec::new(),
            feature_dimensions: Vec::new(),
            funnels: Vec::new(),
            time_to_value: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{key} = {value} is out of range: {expected}")]
    OutOfRange {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{key}: {pointer:?} is not a JSON pointer (it must be empty or start with '/')")]
    BadPointer { key: &'static str, pointer: String },
    #[error("{key} must list at least one JSON pointer")]
    NoPointers { key: &'static str },
    #[error("event name {name:?} is listed under both {first} and {second}")]
    AmbiguousKind {
        name: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("dimensions.{name}: {problem}")]
    BadDimension { name: String, problem: String },
    /// A rule of a table whose keys are numbered (`funnels[2].steps[0].kind`).
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("unknown time zone {name:?}: {reason}")]
    UnknownTimeZone { name: String, reason: String },
    #[error("{key} must list at least one non-empty event name")]
    NoEvents { key: &'static str },
    #[error("{key} = {code:?} is not an ISO 4217 currency code with a minor unit (e.g. \"USD\")")]
    UnknownCurrency { key: &'static str, code: String },
    #[error("{key} is required when outcomes.revenue.expected_currency is not set")]
    NoCurrency { key: &'static str },
    #[error("{key}: {pointer:?} is read as one number, but {other:?} points into it")]
    PointerOverlap {
        key: &'static str,
        pointer: String,
        other: String,
    },
}

impl EngineSettings {
    /// Checks every rule a running engine relies on.
    pub fn validate(&self) -> Result<(), SettingsError> {
        fn range<T: std::fmt::Display + PartialOrd>(
            key: &'static str,
            value: T,
            ok: bool,
            expected: &'static str,
        ) -> Result<(), SettingsError> {
            if ok {
                Ok(())
            } else {
                Err(SettingsError::OutOfRange {
                    key,
                    value: value.to_string(),
                    expected,
                })
            }
        }
        range(
            "shards",
            self.shards,
            (1..=MAX_SHARDS).contains(&self.shards),
            "1 to 1024",
        )?;
        range(
            "partitions",
            self.partitions,
            (1..=MAX_PARTITIONS).contains(&self.partitions),
            "1 to 4096",
        )?;
        range(
            "hll.lg_k",
            self.hll_lg_k,
            (4..=21).contains(&self.hll_lg_k),
            "4 to 21",
        )?;
        range(
            "sessions.timeout",
            self.session_timeout_ms,
            self.session_timeout_ms > 0,
            "greater than zero",
        )?;
        range(
            "sessions.max_length",
            self.session_max_length_ms,
            self.session_max_length_ms >= self.session_timeout_ms,
            "at least sessions.timeout",
        )?;
        range(
            "allowed_lateness",
            self.allowed_lateness_ms,
            self.allowed_lateness_ms >= 0,
            "zero or more",
        )?;
        range(
            "retention_days",
            self.retention_days,
            (MIN_RETENTION_DAYS..=366).contains(&self.retention_days),
            "30 to 366 (the previous 30-day window needs 30 days before today)",
        )?;
        range(
            "max_future_skew",
            self.max_future_skew_ms,
            self.max_future_skew_ms >= 0,
            "zero or more",
        )?;
        range(
            "features.max_tracked",
            self.max_features,
            (1..usize::from(u16::MAX)).contains(&self.max_features),
            "1 to 65534",
        )?;
        range(
            "limits.max_record_size",
            self.max_record_bytes,
            self.max_record_bytes >= 64,
            "at least 64 bytes",
        )?;
        range(
            "limits.max_user_id_bytes",
            self.max_user_id_bytes,
            self.max_user_id_bytes >= 1,
            "at least 1",
        )?;
        for (key, paths) in [
            ("fields.user", &self.fields.user),
            ("fields.event", &self.fields.event),
            ("fields.time", &self.fields.time),
            ("fields.feature", &self.fields.feature),
            ("fields.session_id", &self.fields.session_id),
        ] {
            if paths.is_empty() && (key == "fields.user" || key == "fields.event") {
                return Err(SettingsError::NoPointers { key });
            }
            if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
                return Err(SettingsError::BadPointer {
                    key,
                    pointer: bad.clone(),
                });
            }
        }
        self.validate_dimensions()?;
        each_name_once(self.kind_lists())?;
        self.outcomes.validate()?;
        let f = &self.fields;
        let fields = [&f.user, &f.event, &f.time, &f.feature, &f.session_id];
        let dimensions = self.dimensions.iter().flat_map(|d| &d.paths);
        self.outcomes
            .check_money_pointers(fields.into_iter().flatten().chain(dimensions))
    }

    fn validate_dimensions(&self) -> Result<(), SettingsError> {
        let bad = |name: &str, problem: String| SettingsError::BadDimension {
            name: name.to_owned(),
            problem,
        };
        if self.dimensions.len() > MAX_DIMENSIONS {
            let names: Vec<&str> = self.dimensions.iter().map(|d| d.name.as_str()).collect();
            return Err(bad(
                &names.join(","),
                format!("{} dimensions, at most {MAX_DIMENSIONS}", names.len()),
            ));
        }
        for (at, d) in self.dimensions.iter().enumerate() {
            let label_safe = d
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if d.name.is_empty() || !label_safe {
                return Err(bad(&d.name, "a name is letters, digits and '_'".into()));
            }
            if self.dimensions[..at].iter().any(|e| e.name == d.name) {
                return Err(bad(&d.name, "configured twice".into()));
            }
            if d.paths.is_empty() {
                return Err(bad(
                    &d.name,
                    "paths must list at least one JSON pointer".into(),
                ));
            }
            if let Some(pointer) = d.paths.iter().find(|p| !p.starts_with('/')) {
                return Err(bad(&d.name, format!("{pointer:?} is not a JSON pointer")));
            }
            if !(1..=MAX_VALUES_CAP).contains(&d.max_values) {
                return Err(bad(
                    &d.name,
                    format!("max_values = {}: 1 to {MAX_VALUES_CAP}", d.max_values),
                ));
            }
        }
        self.validate_feature_dimensions()?;
        crate::funnel_rules::validate(&self.funnels, self.time_to_value.as_ref())
    }

    fn validate_feature_dimensions(&self) -> Result<(), SettingsError> {
        let names = &self.feature_dimensions;
        if names.len() > MAX_FEATURE_DIMENSIONS {
            return Err(SettingsError::BadDimension {
                name: names.join(","),
                problem: format!(
                    "features = true on {} dimensions, at most {MAX_FEATURE_DIMENSIONS} (each \
                     keeps a sketch per day, value and feature)",
                    names.len()
                ),
            });
        }
        for (at, name) in names.iter().enumerate() {
            let problem = if names[..at].contains(name) {
                "features = true listed twice"
            } else if !self.dimensions.iter().any(|d| &d.name == name) {
                "features = true for a dimension that is not configured"
            } else {
                continue;
            };
            return Err(SettingsError::BadDimension {
                name: name.clone(),
                problem: problem.into(),
            });
        }
        Ok(())
    }

    pub(crate) fn kind_lists(&self) -> [(&'static str, &Vec<String>); 6] {
        let k = &self.kinds;
        [
            ("events.login", &k.login),
            ("events.page_view", &k.page_view),
            ("events.feature_used", &k.feature_used),
            ("events.session_start", &k.session_start),
            ("events.session_end", &k.session_end),
            ("events.signup", &k.signup),
        ]
    }
}

/// Refuses an event name listed under two keys of `lists` (key, names).
pub(crate) fn each_name_once<'a>(
    lists: impl IntoIterator<Item = (&'static str, &'a Vec<String>)>,
) -> Result<(), SettingsError> {
    let mut seen: BTreeMap<&str, &'static str> = BTreeMap::new();
    for (key, names) in lists {
        for name in names {
            if let Some(first) = seen.insert(name, key) {
                return Err(SettingsError::AmbiguousKind {
                    name: name.clone(),
                    first,
                    second: key,
                });
            }
        }
    }
    Ok(())
}

/// Looks up an IANA time zone name ("UTC", "Europe/Berlin") in the bundled database.
pub fn time_zone(name: &str) -> Result<TimeZone, SettingsError> {
    TimeZone::get(name).map_err(|error| SettingsError::UnknownTimeZone {
        name: name.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dimension_cannot_read_a_money_pointer() {
        let outcomes = crate::outcome_settings::generator_tables();
        let amount = outcomes.revenue.as_ref().unwrap().amount[0].clone();
        let settings = EngineSettings {
            outcomes,
            dimensions: vec![DimensionSettings {
                name: "plan".into(),
                paths: vec![format!("{amount}/currency")],
                max_values: 25,
            }],
            ..EngineSettings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("outcomes.revenue.amount"), "{error}");
    }

    #[test]
    fn defaults_are_valid() {
        EngineSettings::default().validate().unwrap();
    }

    #[test]
    fn each_rule_names_its_key() {
        type Mutation = Box<dyn Fn(&mut EngineSettings)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.shards = 0), "shards"),
            (Box::new(|s| s.hll_lg_k = 3), "hll.lg_k"),
            (Box::new(|s| s.session_timeout_ms = 0), "sessions.timeout"),
            (
                Box::new(|s| s.session_max_length_ms = 1000),
                "sessions.max_length",
            ),
            (Box::new(|s| s.allowed_lateness_ms = -1), "allowed_lateness"),
            (Box::new(|s| s.retention_days = 29), "retention_days"),
            (Box::new(|s| s.max_future_skew_ms = -1), "max_future_skew"),
            (Box::new(|s| s.max_features = 0), "features.max_tracked"),
            (Box::new(|s| s.fields.user.clear()), "fields.user"),
            (
                Box::new(|s| s.fields.time = vec!["timestamp".into()]),
                "fields.time",
            ),
            (
                Box::new(|s| s.kinds.signup.push("login".into())),
                "events.signup",
            ),
            (
                Box::new(|s| s.dimensions = vec![dimension("plat-form", "/p", 25)]),
                "dimensions.plat-form",
            ),
            (
                Box::new(|s| s.dimensions = vec![dimension("platform", "p", 25)]),
                "dimensions.platform",
            ),
            (
                Box::new(|s| s.dimensions = vec![dimension("tenant", "/t", 0)]),
                "dimensions.tenant",
            ),
            (
                Box::new(|s| s.dimensions = vec![dimension("a", "/a", 1); 2]),
                "dimensions.a",
            ),
            (
                Box::new(|s| {
                    s.dimensions = (0..9)
                        .map(|i| dimension(&format!("d{i}"), "/d", 1))
                        .collect()
                }),
                "dimensions.d0",
            ),
        ];
        for (mutate, key) in cases {
            let mut settings = EngineSettings::default();
            mutate(&mut settings);
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error:?} should name {key}");
        }
    }

    #[test]
    fn feature_adoption_is_broken_down_by_at_most_two_configured_dimensions() {
        let with = |features: &[&str]| EngineSettings {
            dimensions: ["platform", "tenant", "plan"]
                .map(|name| dimension(name, "/x", 5))
                .to_vec(),
            feature_dimensions: features.iter().map(|n| (*n).to_owned()).collect(),
            ..EngineSettings::default()
        };
        with(&["platform", "tenant"]).validate().unwrap();
        for (features, expected) in [
            (
                &["platform", "tenant", "plan"][..],
                "dimensions.platform,tenant,plan: features = true on 3 dimensions, at most 2",
            ),
            (
                &["country"][..],
                "dimensions.country: features = true for a dimension",
            ),
            (
                &["plan", "plan"][..],
                "dimensions.plan: features = true listed twice",
            ),
        ] {
            let error = with(features).validate().unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    fn dimension(name: &str, path: &str, max_values: usize) -> DimensionSettings {
        DimensionSettings {
            name: name.into(),
            paths: vec![path.into()],
            max_values,
        }
    }

    #[test]
    fn time_zones_come_from_the_bundled_database() {
        assert!(time_zone("Europe/Berlin").is_ok());
        let error = time_zone("Mars/Olympus").unwrap_err().to_string();
        assert!(error.contains("Mars/Olympus"));
    }
}
