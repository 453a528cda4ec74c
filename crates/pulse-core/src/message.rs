//! Messages → records: one Kafka message may hold one event, a JSON array of events, or a
//! Segment-style `{"batch": [...]}`.
//!
//! Splitting borrows each record's bytes from the message (`RawValue`), so the decoder then
//! reads every record exactly as it would a line of NDJSON. A message that is neither is
//! passed through whole and the decoder rejects it with the precise reason.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::Rejection;

/// The records of one message.
#[derive(Debug)]
pub enum Records<'a> {
    One(&'a [u8]),
    Many(Vec<&'a RawValue>),
}

impl<'a> Records<'a> {
    /// The records' bytes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let (one, many) = match self {
            Records::One(bytes) => (Some(*bytes), None),
            Records::Many(list) => (None, Some(list.iter().map(|r| r.get().as_bytes()))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
}

/// Splits a message. An array that is not valid JSON is one `not_json` rejection.
pub fn split_records(message: &[u8]) -> Result<Records<'_>, Rejection> {
    let body = message.trim_ascii_start();
    match body.first() {
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(message)
            .map(Records::Many)
            .map_err(|_| Rejection::NotJson),
        // Only objects that mention "batch" pay for a second parse.
        Some(b'{') if contains(body, br#""batch""#) => {
            match serde_json::from_slice::<Envelope<'_>>(message) {
                Ok(Envelope { batch: Some(list) }) => Ok(Records::Many(list)),
                _ => Ok(Records::One(message)),
            }
        }
        _ => Ok(Records::One(message)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    // Every record of a live consumer passes here: a substring search, not a comparison
    // at each position (that was 3 % of `pulse run`'s consume loop).
    memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(message: &str) -> Result<Vec<String>, Rejection> {
        split_records(message.as_bytes()).map(|r| {
            r.iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn one_array_or_batch() {
        assert_eq!(
            split(r#"{"user_id":"u"}"#).unwrap(),
            vec![r#"{"user_id":"u"}"#]
        );
        assert_eq!(
            split(r#" [{"a":1}, {"b":2}] "#).unwrap(),
            vec![r#"{"a":1}"#, r#"{"b":2}"#]
        );
        let batch = r#"{"batch":[{"a":1},{"b":[2]}],"context":{"batch":"x"},"sentAt":"2026"}"#;
        assert_eq!(split(batch).unwrap(), vec![r#"{"a":1}"#, r#"{"b":[2]}"#]);
        assert_eq!(split("[]").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn an_event_that_mentions_batch_stays_one_record() {
        let event = r#"{"user_id":"u","event":"x","properties":{"batch":"b"}}"#;
        assert_eq!(split(event).unwrap(), vec![event]);
        assert_eq!(split(r#"{"batch":"not a list"}"#).unwrap().len(), 1);
    }

    #[test]
    fn broken_arrays_are_rejected_and_others_pass_to_the_decoder() {
        assert_eq!(split("[{\"a\":1}"), Err(Rejection::NotJson));
        assert_eq!(split("not json").unwrap(), vec!["not json"]);
        assert_eq!(split("").unwrap(), vec![""]);
    }
}
