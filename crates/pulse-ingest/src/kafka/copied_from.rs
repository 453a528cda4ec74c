//! The header a record re-keyed by the repartition stage carries: where the stage copied it
//! from, so that the consume loop can drop a second copy (why the position is enough:
//! [`super::repartition`]).
//!
//! One header, [`NAME`], whose value is `<topic>/<partition>/<offset>/<index>` in ASCII
//! digits: readable with any Kafka tool, and unambiguous because a topic name holds no `/`.
//! A record without it, or with a value that does not parse (not written by pulse), is
//! applied as it comes.

use pulse_core::upstream::UpstreamPosition;
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

use crate::topic_partition::TopicPartition;

pub const NAME: &str = "pulse-copied-from";

/// The header of a copy of the record at `at` in `from`.
pub(super) fn header(from: &TopicPartition, at: UpstreamPosition) -> OwnedHeaders {
    let value = format!(
        "{}/{}/{}/{}",
        from.topic, from.partition, at.offset, at.index
    );
    OwnedHeaders::new_with_capacity(1).insert(Header {
        key: NAME,
        value: Some(value.as_bytes()),
    })
}

/// Where a record was copied from (topic, partition, position), if it says.
pub(super) fn read(headers: Option<&BorrowedHeaders>) -> Option<(&str, i32, UpstreamPosition)> {
    let value = headers?.iter().find(|h| h.key == NAME)?.value?;
    parse(std::str::from_utf8(value).ok()?)
}

fn parse(value: &str) -> Option<(&str, i32, UpstreamPosition)> {
    let mut fields = value.rsplitn(4, '/');
    let index = fields.next()?.parse().ok()?;
    let offset = fields.next()?.parse().ok()?;
    let partition = fields.next()?.parse().ok()?;
    let topic = fields.next().filter(|t| !t.is_empty())?;
    Some((topic, partition, UpstreamPosition { offset, index }))
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn a_position_round_trips_and_foreign_values_are_none() {
        let at = UpstreamPosition {
            offset: 1_234_567,
            index: 3,
        };
        let headers = header(&TopicPartition::new("orders.v2-eu", 11), at);
        let value = headers.get(0).value.unwrap();
        let value = std::str::from_utf8(value).unwrap();
        assert_eq!(value, "orders.v2-eu/11/1234567/3");
        assert_eq!(parse(value), Some(("orders.v2-eu", 11, at)));
        for foreign in ["", "a/b/c/d", "t/1/2", "/1/2/3", "t/1/2/-3", "t/x/2/3"] {
            assert_eq!(parse(foreign), None, "{foreign}");
        }
    }
}
