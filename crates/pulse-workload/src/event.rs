//! The generated event and its JSON rendering.
//!
//! JSON is written by hand rather than through `serde_json::Value`: loadgen renders millions
//! of events per second and a tree per event would dominate its cost. Every string that can
//! come from configuration is escaped, so the output is always valid JSON.

use std::fmt::{self, Write as _};

use crate::config::{Shape, TimestampStyle};

/// A user id as it appears on the wire. The engine treats `Int(n)` and `Text(n.to_string())`
/// as the same user; `Display` gives that canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserId {
    Text(String),
    Int(i64),
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserId::Text(s) => f.write_str(s),
            UserId::Int(n) => write!(f, "{n}"),
        }
    }
}

/// One synthetic event, carrying both its meaning (user, name, time, feature, session id)
/// and how it is to be rendered (shape, timestamp style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedEvent {
    pub user: UserId,
    /// The wire name, already aliased for the shape (`$pageview`, `Page Viewed`, ...).
    pub name: String,
    /// Event time in epoch milliseconds; every timestamp style round-trips to exactly this.
    pub ts_ms: i64,
    /// Set on `feature_used` events only.
    pub feature: Option<String>,
    pub session_id: Option<String>,
    pub shape: Shape,
    pub timestamp_style: TimestampStyle,
    /// Unique per generator and seed; rendered as Segment's `messageId`.
    pub seq: u64,
    /// What a survey, order or subscription event carries (only with
    /// [`crate::WorkloadConfig::outcomes`]).
    pub outcome: Option<Outcome>,
    /// Top-level fields for breakdown dimensions (`platform`, `tenant_id`), in every shape.
    pub properties: Vec<(String, Property)>,
}

/// The value of a breakdown property as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    Text(String),
    Int(i64),
}

/// The measurement of an outcome event, as sent. Some are deliberately bad (a score off its
/// scale, another currency, more decimals than the currency has), as real producers' are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An NPS answer; 0–10 is on the scale.
    Nps(i8),
    /// A CSAT answer; 1–5 is on the scale.
    Csat(i8),
    /// An order of `units` × 10^−`decimals` in `currency`.
    Order {
        units: i64,
        decimals: u8,
        currency: &'static str,
    },
    /// The user's MRR after a change, `units` × 10^−`decimals`.
    Mrr { units: i64, decimals: u8 },
}

impl Outcome {
    /// Its fields as JSON object members (no braces), with the keys of `shape`: plain events
    /// carry them at the top level, Segment and PostHog in `properties` under their names.
    fn write_members(&self, shape: Shape, out: &mut String) {
        match (*self, shape) {
            (Outcome::Nps(score), _) => {
                let _ = write!(out, "\"score\":{score}");
            }
            (Outcome::Csat(score), Shape::Plain) => {
                let _ = write!(out, "\"score\":{score}");
            }
            (Outcome::Csat(score), _) => {
                let _ = write!(out, "\"rating\":{score}");
            }
            (
                Outcome::Order {
                    units,
                    decimals,
                    currency,
                },
                shape,
            ) => {
                let key = match shape {
                    Shape::PostHog => "total",
                    _ => "revenue",
                };
                let _ = write!(out, "\"{key}\":");
                write_decimal(out, units, decimals);
                out.push_str(",\"currency\":");
                write_str(out, currency);
            }
            (Outcome::Mrr { units, decimals }, _) => {
                out.push_str("\"mrr\":");
                write_decimal(out, units, decimals);
            }
        }
    }
}

/// `units` × 10^−`decimals` as a plain JSON number: `1999, 2` → `19.99`.
fn write_decimal(out: &mut String, units: i64, decimals: u8) {
    let scale = 10i64.pow(u32::from(decimals));
    let _ = write!(out, "{}", units / scale);
    if decimals > 0 {
        let _ = write!(
            out,
            ".{:0width$}",
            units % scale,
            width = usize::from(decimals)
        );
    }
}

impl GeneratedEvent {
    /// A plain-JSON event of `user` named `name` at `ts_ms` (epoch milliseconds) and nothing
    /// else, for tests that write their own events; set the other fields with `..`.
    pub fn plain(user: &str, name: &str, ts_ms: i64) -> GeneratedEvent {
        GeneratedEvent {
            user: UserId::Text(user.to_owned()),
            name: name.to_owned(),
            ts_ms,
            feature: None,
            session_id: None,
            shape: Shape::Plain,
            timestamp_style: TimestampStyle::EpochMillis,
            seq: 0,
            outcome: None,
            properties: Vec::new(),
        }
    }

    /// One JSON object, without a trailing newline.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(192);
        self.write_json(&mut out);
        out
    }

    /// Appends the JSON object to `out`, so NDJSON writers can reuse one buffer.
    pub fn write_json(&self, out: &mut String) {
        match self.shape {
            Shape::Plain => {
                out.push_str("{\"user_id\":");
                self.write_user(out);
                out.push_str(",\"event\":");
                write_str(out, &self.name);
                out.push_str(",\"timestamp\":");
                self.write_timestamp(out);
                self.write_properties(out);
                if let Some(feature) = &self.feature {
                    out.push_str(",\"feature\":");
                    write_str(out, feature);
                }
                if let Some(sid) = &self.session_id {
                    out.push_str(",\"session_id\":");
                    write_str(out, sid);
                }
                if let Some(outcome) = &self.outcome {
                    out.push(',');
                    outcome.write_members(self.shape, out);
                }
                out.push('}');
            }
            Shape::Segment => {
                out.push_str("{\"type\":\"track\",\"userId\":");
                self.write_user(out);
                out.push_str(",\"event\":");
                write_str(out, &self.name);
                out.push_str(",\"timestamp\":");
                self.write_timestamp(out);
                self.write_properties(out);
                out.push_str(",\"properties\":{");
                if let Some(feature) = &self.feature {
                    out.push_str("\"feature\":");
                    write_str(out, feature);
                }
                if let Some(outcome) = &self.outcome {
                    // Outcome events name no feature: no comma needed.
                    outcome.write_members(self.shape, out);
                }
                out.push('}');
                if let Some(sid) = &self.session_id {
                    out.push_str(",\"session_id\":");
                    write_str(out, sid);
                }
                let _ = write!(out, ",\"messageId\":\"msg-{:016x}\"}}", self.seq);
            }
            Shape::PostHog => {
                out.push_str("{\"event\":");
                write_str(out, &self.name);
                out.push_str(",\"distinct_id\":");
                self.write_user(out);
                out.push_str(",\"timestamp\":");
                self.write_timestamp(out);
                self.write_properties(out);
                out.push_str(",\"properties\":{");
                let mut first = true;
                if let Some(sid) = &self.session_id {
                    out.push_str("\"$session_id\":");
                    write_str(out, sid);
                    first = false;
                }
                if let Some(feature) = &self.feature {
                    if !first {
                        out.push(',');
                    }
                    out.push_str("\"feature\":");
                    write_str(out, feature);
                }
                if let Some(outcome) = &self.outcome {
                    if !first {
                        out.push(',');
                    }
                    outcome.write_members(self.shape, out);
                }
                out.push_str("}}");
            }
        }
    }

    fn write_properties(&self, out: &mut String) {
        for (name, value) in &self.properties {
            out.push(',');
            write_str(out, name);
            out.push(':');
            match value {
                Property::Text(s) => write_str(out, s),
                Property::Int(n) => {
                    let _ = write!(out, "{n}");
                }
            }
        }
    }

    fn write_user(&self, out: &mut String) {
        match &self.user {
            UserId::Text(s) => write_str(out, s),
            UserId::Int(n) => {
                let _ = write!(out, "{n}");
            }
        }
    }

    fn write_timestamp(&self, out: &mut String) {
        match self.timestamp_style {
            TimestampStyle::EpochMillis => {
                let _ = write!(out, "{}", self.ts_ms);
            }
            TimestampStyle::Rfc3339Utc => {
                out.push('"');
                write_rfc3339(out, self.ts_ms, None);
                out.push('"');
            }
            TimestampStyle::Rfc3339Offset { offset_minutes } => {
                out.push('"');
                write_rfc3339(out, self.ts_ms, Some(offset_minutes));
                out.push('"');
            }
        }
    }
}

/// Writes a JSON string literal.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes `ts_ms` as RFC 3339 with exactly millisecond precision, in UTC (`Z`) or in the given
/// offset. A hand-written civil-date conversion (checked against jiff in the tests) keeps
/// this crate free of a time-zone library and fast.
pub(crate) fn write_rfc3339(out: &mut String, ts_ms: i64, offset_minutes: Option<i16>) {
    let offset_ms = i64::from(offset_minutes.unwrap_or(0)) * 60_000;
    let local = ts_ms + offset_ms;
    let days = local.div_euclid(86_400_000);
    let ms_of_day = local.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000,
    );
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}"
    );
    match offset_minutes {
        None => out.push('Z'),
        Some(off) => {
            let sign = if off < 0 { '-' } else { '+' };
            let abs = off.unsigned_abs();
            let _ = write!(out, "{sign}{:02}:{:02}", abs / 60, abs % 60);
        }
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc(ts: i64, off: Option<i16>) -> String {
        let mut s = String::new();
        write_rfc3339(&mut s, ts, off);
        s
    }

    #[test]
    fn rfc3339_matches_jiff_and_round_trips() {
        let samples = [
            0,
            1,
            951_782_400_000,       // 2000-02-29
            1_772_366_400_123,     // 2026-03-01T12:00:00.123Z
            4_107_542_399_999,     // 2100-02-28T23:59:59.999Z
            253_402_207_199_999,   // 9999-12-30T21:59:59.999Z, jiff's limit
            1_709_251_199_999 + 7, // around a leap day
        ];
        for ts in samples {
            let expected = format!("{:.3}", jiff::Timestamp::from_millisecond(ts).unwrap());
            assert_eq!(rfc(ts, None), expected);
            for off in [330i16, -480, 0, -30, 1439] {
                let text = rfc(ts, Some(off));
                let parsed: jiff::Timestamp = text.parse().unwrap();
                assert_eq!(parsed.as_millisecond(), ts, "{text}");
            }
        }
        assert_eq!(rfc(1_772_366_400_123, None), "2026-03-01T12:00:00.123Z");
        assert_eq!(
            rfc(1_772_366_400_000, Some(330)),
            "2026-03-01T17:30:00.000+05:30"
        );
        assert_eq!(
            rfc(1_772_366_400_000, Some(-480)),
            "2026-03-01T04:00:00.000-08:00"
        );
        assert_eq!(rfc(0, Some(-30)), "1969-12-31T23:30:00.000-00:30");
    }

    #[test]
    fn escapes_configured_strings() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\n\u{1}é");
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\n\u{1}é");
    }

    #[test]
    fn user_id_display_is_canonical() {
        assert_eq!(UserId::Int(42).to_string(), "42");
        assert_eq!(UserId::Int(-7).to_string(), "-7");
        assert_eq!(UserId::Text("42".into()).to_string(), "42");
    }
}
