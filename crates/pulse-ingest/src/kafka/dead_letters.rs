//! Dead letters: a rejected record, with headers saying why and where it came from, to the
//! dead-letter topic.
//!
//! Deliveries are awaited ([`DeadLetters::settle`]) before the offsets behind them are
//! committed, so a dead letter is never lost either.

use std::collections::BTreeMap;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pulse_core::Rejection;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// Dead letters in flight and their outcome.
pub(super) struct DeadLetters {
    pub(super) producer: FutureProducer,
    pub(super) in_flight: FuturesUnordered<DeliveryFuture>,
    pub(super) delivered: u64,
    pub(super) failed: u64,
    /// The longest record a dead letter carries whole; see [`DeadLetters::payload_limit`].
    pub(super) payload_limit: usize,
}

impl DeadLetters {
    /// A dead letter must fit the producer's `message.max.bytes` (librdkafka's default,
    /// 1 000 000, is also below a Kafka broker's default limit), less room for the key,
    /// headers and framing. A longer record (a 10 MB message rejected as too large) is cut
    /// to its start, with a `pulse.truncated` header giving its full length: refused
    /// whole, it would be no dead letter at all.
    pub(super) fn payload_limit(properties: &BTreeMap<String, String>) -> usize {
        const LIBRDKAFKA_DEFAULT: usize = 1_000_000;
        const ROOM_FOR_HEADERS: usize = 16 * 1024;
        properties
            .get("message.max.bytes")
            .and_then(|value| value.parse().ok())
            .unwrap_or(LIBRDKAFKA_DEFAULT)
            .saturating_sub(ROOM_FOR_HEADERS)
    }

    pub(super) fn send(
        &mut self,
        topic: &str,
        record: &[u8],
        key: Option<&[u8]>,
        reason: Rejection,
        origin: &Origin<'_>,
        index: Option<usize>,
    ) {
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let index = index.map(|i| i.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "pulse.reason",
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: "pulse.source.topic",
                value: Some(origin.topic),
            })
            .insert(Header {
                key: "pulse.source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "pulse.source.offset",
                value: Some(offset.as_str()),
            });
        if let Some(index) = &index {
            headers = headers.insert(Header {
                key: "pulse.record.index",
                value: Some(index.as_str()),
            });
        }
        let kept = record.len().min(
            self.payload_limit
                .saturating_sub(key.map_or(0, <[u8]>::len)),
        );
        if kept < record.len() {
            headers = headers.insert(Header {
                key: "pulse.truncated",
                value: Some(record.len().to_string().as_str()),
            });
        }
        let mut message = FutureRecord::to(topic)
            .payload(&record[..kept])
            .headers(headers);
        if let Some(key) = key {
            message = message.key(key);
        }
        match self.producer.send_result(message) {
            Ok(delivery) => self.in_flight.push(delivery),
            Err((error, _)) => {
                self.failed += 1;
                tracing::warn!(%error, topic, "Could not queue a dead letter.");
            }
        }
    }

    /// Waits for every dead letter sent so far, so the offsets behind them can be committed.
    pub(super) async fn settle(&mut self) {
        while let Some(result) = self.in_flight.next().await {
            match result {
                Ok(Ok(_)) => self.delivered += 1,
                Ok(Err((error, _))) => {
                    self.failed += 1;
                    tracing::warn!(%error, "A dead letter was not delivered.");
                }
                Err(_) => self.failed += 1,
            }
        }
    }
}

pub(super) struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}
