//! Which input records the exact model lets through to the KPIs, by the README's "Events"
//! section read literally: a record the field rules refuse is counted by reason, an event
//! whose day is more than the retention before today is `late`, one past the allowed clock
//! skew is `future`, and none of them is applied.
//!
//! Like the rest of the model it shares no code with pulse-core: records are read with
//! `serde_json`, times with jiff. It judges only *refused* records from their bytes; a
//! well-formed event comes as a [`GeneratedEvent`], whose meaning the generator knows,
//! because a second decoder of the three JSON shapes would be a second engine rather than a
//! model. Late and future follow arrival order, as the event-time clock does: "today" is
//! the latest event time admitted so far, so a record's fate depends on what came before it.

use jiff::Timestamp;
use pulse_workload::GeneratedEvent;
use serde_json::Value;

/// One input record as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A well-formed event: accepted, late or future, as the model's clock decides.
    Event(GeneratedEvent),
    /// A record that the field rules refuse, as its bytes; the model finds the reason
    /// itself (and fails the test if the record is in fact valid).
    Malformed(String),
}

impl Record {
    /// The record as one line of NDJSON or one Kafka message.
    pub fn line(&self) -> String {
        match self {
            Record::Event(event) => event.to_json(),
            Record::Malformed(text) => text.clone(),
        }
    }

    /// The Kafka key a producer would give it: the user, so one user's events stay in one
    /// partition and in order; a malformed record has no user to key by.
    pub fn key(&self) -> Option<String> {
        match self {
            Record::Event(event) => Some(event.user.to_string()),
            Record::Malformed(_) => None,
        }
    }
}

/// The limits and pointers of the README's field table that decide a refusal.
#[derive(Debug, Clone)]
pub struct FieldRules {
    pub max_record_bytes: usize,
    pub max_user_id_bytes: usize,
    pub user: Vec<&'static str>,
    pub event: Vec<&'static str>,
    pub time: Vec<&'static str>,
}

impl Default for FieldRules {
    fn default() -> Self {
        FieldRules {
            max_record_bytes: 1 << 20,
            max_user_id_bytes: 256,
            user: vec!["/user_id", "/userId", "/distinct_id"],
            event: vec!["/event", "/type"],
            time: vec!["/timestamp", "/ts", "/time"],
        }
    }
}

/// Why the README's field rules refuse `record`, or `None` if they accept it. A record
/// without a time is refused: the model has no Kafka message timestamp to fall back on,
/// exactly as a replay has none.
pub fn refusal(record: &str, rules: &FieldRules) -> Option<&'static str> {
    if record.len() > rules.max_record_bytes {
        return Some("record_too_large");
    }
    let Ok(value) = serde_json::from_str::<Value>(record) else {
        return Some("not_json");
    };
    if !value.is_object() {
        return Some("not_object");
    }
    // The first pointer that is present and not null wins.
    let field = |pointers: &[&str]| {
        pointers
            .iter()
            .find_map(|p| value.pointer(p).filter(|v| !v.is_null()))
    };
    match field(&rules.user) {
        None => return Some("missing_user"),
        Some(Value::String(s)) if s.is_empty() => return Some("empty_user"),
        Some(Value::String(s)) if s.len() > rules.max_user_id_bytes => {
            return Some("user_id_too_long");
        }
        Some(Value::String(_)) => {}
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        Some(_) => return Some("invalid_user"),
    }
    // A Segment call `"type": "track"` names its event in `/event`; without one it has none.
    let segment_track = || value.pointer("/type").is_some_and(|t| t == "track");
    match field(&rules.event) {
        None => return Some("missing_event_name"),
        Some(Value::String(s))
            if s == "track"
                && segment_track()
                && value.pointer("/event").is_none_or(Value::is_null) =>
        {
            return Some("missing_event_name");
        }
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Some("invalid_event_name"),
    }
    let valid_time = match field(&rules.time) {
        None => return Some("missing_timestamp"),
        Some(Value::String(s)) => s.parse::<Timestamp>().is_ok(),
        Some(Value::Number(n)) => n
            .as_i64()
            .is_some_and(|ms| Timestamp::from_millisecond(ms).is_ok()),
        Some(_) => false,
    };
    (!valid_time).then_some("invalid_timestamp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_its_reason() {
        let rules = FieldRules::default();
        let long_user = "u".repeat(257);
        for (record, reason) in [
            ("not json", Some("not_json")),
            ("[1, 2]", Some("not_object")),
            (r#"{"event":"login","ts":1}"#, Some("missing_user")),
            (
                r#"{"user_id":null,"event":"login","ts":1}"#,
                Some("missing_user"),
            ),
            (
                r#"{"user_id":"","event":"login","ts":1}"#,
                Some("empty_user"),
            ),
            (
                r#"{"user_id":1.5,"event":"login","ts":1}"#,
                Some("invalid_user"),
            ),
            (
                r#"{"user_id":{},"event":"login","ts":1}"#,
                Some("invalid_user"),
            ),
            (r#"{"user_id":"a","ts":1}"#, Some("missing_event_name")),
            (
                r#"{"userId":"a","type":"track","ts":1}"#,
                Some("missing_event_name"),
            ),
            (r#"{"userId":"a","type":"identify","ts":1}"#, None),
            (
                r#"{"user_id":"a","event":"","ts":1}"#,
                Some("invalid_event_name"),
            ),
            (
                r#"{"user_id":"a","event":"login"}"#,
                Some("missing_timestamp"),
            ),
            (
                r#"{"user_id":"a","event":"login","ts":"noon"}"#,
                Some("invalid_timestamp"),
            ),
            (
                r#"{"user_id":"a","event":"login","ts":true}"#,
                Some("invalid_timestamp"),
            ),
            (r#"{"distinct_id":7,"type":"login","time":1}"#, None),
            (
                r#"{"userId":"a","event":"x","timestamp":"2026-03-01T12:00:00+05:30"}"#,
                None,
            ),
        ] {
            assert_eq!(refusal(record, &rules), reason, "{record}");
        }
        let record = format!(r#"{{"user_id":"{long_user}","event":"login","ts":1}}"#);
        assert_eq!(refusal(&record, &rules), Some("user_id_too_long"));
        let small = FieldRules {
            max_record_bytes: 10,
            ..FieldRules::default()
        };
        assert_eq!(refusal(&record, &small), Some("record_too_large"));
    }
}
