//! What a workload looks like: population size, history length, feature catalogue and the
//! mix of wire shapes and timestamp styles.
//!
//! The config is plain serde data so that `pulse demo` / `pulse loadgen` can take it from a
//! file or flags. Validation is separate from parsing ([`WorkloadConfig::validate`]) so a
//! caller gets one typed error naming the offending key instead of a panic deep inside the
//! generator.

use serde::{Deserialize, Serialize};

/// One day in milliseconds. Day *slots* of the generator are this long; they are counted
/// from the start of the history, not from midnight, because the generator has no notion of
/// a time zone (the engine's zone is its own business).
pub const DAY_MS: i64 = 86_400_000;

/// Exclusive upper bound for [`WorkloadConfig::max_disorder_ms`]. The engine promises exact
/// results for events that arrive less than 5 minutes out of order, so a workload that is
/// used to check exactness must never exceed it.
pub const MAX_DISORDER_LIMIT_MS: i64 = 300_000;

/// Latest `end_ms` we accept: 9999-12-31T23:59:59.999Z minus a year of head-room for live
/// generation past the end. RFC 3339 cannot express later years.
const LATEST_END_MS: i64 = 253_370_764_800_000;

/// Parameters of a synthetic workload. `Default` gives a realistic mixed workload of about
/// 150k events (2 000 users over 35 days).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Everything random derives from this; the same config yields the same events.
    pub seed: u64,
    /// Distinct users in the population during the history (some may never show up).
    pub users: u32,
    /// History length in days, ending at `end_ms`.
    pub days: u32,
    /// Epoch milliseconds of the last instant that [`crate::generate`] may produce.
    pub end_ms: i64,
    /// Mean number of sessions a user of average activity starts on a weekday. Individual
    /// users scale this by a power-law activity factor.
    pub mean_daily_sessions: f64,
    /// Features that `feature_used` events name; each user adopts each feature with the
    /// feature's `adoption` probability.
    pub features: Vec<FeatureSpec>,
    /// Fraction of the population that signs up during the history (and sends `signup`
    /// on its first day); the others are pre-existing users.
    pub signup_fraction: f64,
    /// Arrival disorder bound: an event never arrives after another one whose time is more
    /// than this much later. Must be in `0..MAX_DISORDER_LIMIT_MS`.
    pub max_disorder_ms: i64,
    /// Wire shapes, picked uniformly per event (repeat one to weight it).
    pub shapes: Vec<Shape>,
    /// Timestamp renderings, picked uniformly per event (repeat one to weight it).
    pub timestamp_styles: Vec<TimestampStyle>,
    /// Render about a third of the users with numeric ids, sent sometimes as a JSON integer
    /// and sometimes as the decimal string, which the engine must treat as one user.
    pub integer_user_ids: bool,
    /// Give about half of the sessions an explicit session id.
    pub session_ids: bool,
    /// Also send surveys (NPS, CSAT), orders and subscription changes, a few of them bad,
    /// drawn from a random stream of their own: the other events mean the same either way
    /// (only Segment's `messageId`s and the order of events arriving at the same instant may
    /// differ).
    pub outcomes: bool,
    /// Platforms a session may be on, written as `platform` (none: no such field). Some
    /// sessions leave it out or send it empty, for breakdowns' `__none__` / `__invalid__`.
    pub platforms: Vec<String>,
    /// Tenants users belong to, written as `tenant_id` (0: no such field); a third of the
    /// tenant ids are JSON numbers.
    pub tenants: u32,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 0,
            users: 2_000,
            days: 35,
            // 2026-03-01T12:00:00Z, a Sunday: a fixed instant keeps default outputs stable.
            end_ms: 1_772_366_400_000,
            mean_daily_sessions: 0.65,
            features: default_features(),
            signup_fraction: 0.2,
            max_disorder_ms: 240_000,
            shapes: vec![Shape::Plain, Shape::Segment, Shape::PostHog],
            timestamp_styles: vec![
                TimestampStyle::Rfc3339Utc,
                TimestampStyle::Rfc3339Offset {
                    offset_minutes: 330,
                },
                TimestampStyle::Rfc3339Offset {
                    offset_minutes: -480,
                },
                TimestampStyle::EpochMillis,
            ],
            integer_user_ids: true,
            session_ids: true,
            outcomes: false,
            platforms: Vec::new(),
            tenants: 0,
        }
    }
}

fn default_features() -> Vec<FeatureSpec> {
    [
        ("search", 0.6),
        ("dashboard", 0.45),
        ("filters", 0.35),
        ("share", 0.2),
        ("comments", 0.15),
        ("alerts", 0.1),
        ("integrations", 0.08),
        ("export", 0.05),
    ]
    .into_iter()
    .map(|(name, adoption)| FeatureSpec {
        name: name.to_owned(),
        adoption,
    })
    .collect()
}

/// A feature and the probability that a user adopts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    pub adoption: f64,
}

/// The JSON shape an event is rendered in; each exercises different engine field paths
/// and event-name aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// `{"user_id", "event", "timestamp", "feature", "session_id"}` with canonical names.
    Plain,
    /// Segment `track` call: `userId`, `properties.feature`, names like `Page Viewed`.
    Segment,
    /// PostHog capture: `distinct_id`, `properties.$session_id`, `$pageview`.
    PostHog,
}

/// How the `timestamp` field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case")]
pub enum TimestampStyle {
    /// `2026-03-01T12:00:00.123Z`
    Rfc3339Utc,
    /// `2026-03-01T17:30:00.123+05:30`: the same instant written in another offset.
    Rfc3339Offset { offset_minutes: i16 },
    /// `1772366400123` as a JSON number.
    EpochMillis,
}

/// A config value the generator cannot honour.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid workload config `{key}`: {reason}")]
pub struct ConfigError {
    /// The offending key, as spelled in the serialised config.
    pub key: &'static str,
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        reason: reason.into(),
    }
}

impl WorkloadConfig {
    /// First instant of the history: `end_ms - days * DAY_MS`.
    pub fn start_ms(&self) -> i64 {
        self.end_ms - i64::from(self.days) * DAY_MS
    }

    /// Checks every cross-field rule; the generator relies on all of them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0..MAX_DISORDER_LIMIT_MS).contains(&self.max_disorder_ms) {
            return Err(invalid(
                "max_disorder_ms",
                format!(
                    "must be in 0..{MAX_DISORDER_LIMIT_MS} (strictly below 5 minutes), got {}",
                    self.max_disorder_ms
                ),
            ));
        }
        if self.end_ms > LATEST_END_MS || self.start_ms() < 0 {
            return Err(invalid(
                "end_ms",
                format!(
                    "the history [end_ms - days*{DAY_MS}, end_ms] must lie between 1970 and 9998, \
                     got end_ms {} with {} days",
                    self.end_ms, self.days
                ),
            ));
        }
        if !(0.0..=100.0).contains(&self.mean_daily_sessions) {
            return Err(invalid(
                "mean_daily_sessions",
                format!("must be within 0..=100, got {}", self.mean_daily_sessions),
            ));
        }
        if !(0.0..=1.0).contains(&self.signup_fraction) {
            return Err(invalid(
                "signup_fraction",
                format!("must be within 0..=1, got {}", self.signup_fraction),
            ));
        }
        // Adoption is kept as a bit mask per user.
        if self.features.len() > 64 {
            return Err(invalid(
                "features",
                format!(
                    "at most 64 features are supported, got {}",
                    self.features.len()
                ),
            ));
        }
        for (i, f) in self.features.iter().enumerate() {
            if f.name.is_empty() || self.features[..i].iter().any(|g| g.name == f.name) {
                return Err(invalid(
                    "features",
                    format!(
                        "feature names must be non-empty and unique, got {:?}",
                        f.name
                    ),
                ));
            }
            if !(0.0..=1.0).contains(&f.adoption) {
                return Err(invalid(
                    "features",
                    format!(
                        "adoption of {:?} must be within 0..=1, got {}",
                        f.name, f.adoption
                    ),
                ));
            }
        }
        if self.shapes.is_empty() {
            return Err(invalid("shapes", "must name at least one shape"));
        }
        if self.timestamp_styles.is_empty() {
            return Err(invalid("timestamp_styles", "must name at least one style"));
        }
        for style in &self.timestamp_styles {
            if let TimestampStyle::Rfc3339Offset { offset_minutes } = *style
                && !(-1439..=1439).contains(&offset_minutes)
            {
                return Err(invalid(
                    "timestamp_styles",
                    format!("offset must be within -23:59..=+23:59, got {offset_minutes} minutes"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips_through_serde() {
        let cfg = WorkloadConfig::default();
        cfg.validate().unwrap();
        let text = serde_json::to_string(&cfg).unwrap();
        let back: WorkloadConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        // Missing keys take their defaults.
        let partial: WorkloadConfig = serde_json::from_str(r#"{"seed": 7, "users": 10}"#).unwrap();
        assert_eq!(partial.seed, 7);
        assert_eq!(partial.days, 35);
    }

    #[test]
    fn rejects_disorder_of_five_minutes_or_more() {
        let cfg = WorkloadConfig {
            max_disorder_ms: MAX_DISORDER_LIMIT_MS,
            ..WorkloadConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().key, "max_disorder_ms");
        let ok = WorkloadConfig {
            max_disorder_ms: MAX_DISORDER_LIMIT_MS - 1,
            ..WorkloadConfig::default()
        };
        ok.validate().unwrap();
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let base = WorkloadConfig::default();
        let cases = [
            (
                WorkloadConfig {
                    signup_fraction: 1.5,
                    ..base.clone()
                },
                "signup_fraction",
            ),
            (
                WorkloadConfig {
                    shapes: vec![],
                    ..base.clone()
                },
                "shapes",
            ),
            (
                WorkloadConfig {
                    features: vec![FeatureSpec {
                        name: "x".into(),
                        adoption: f64::NAN,
                    }],
                    ..base.clone()
                },
                "features",
            ),
            (
                WorkloadConfig {
                    end_ms: 1_000,
                    ..base.clone()
                },
                "end_ms",
            ),
            (
                WorkloadConfig {
                    timestamp_styles: vec![TimestampStyle::Rfc3339Offset {
                        offset_minutes: 1440,
                    }],
                    ..base.clone()
                },
                "timestamp_styles",
            ),
        ];
        for (cfg, key) in cases {
            assert_eq!(cfg.validate().unwrap_err().key, key);
        }
    }
}
