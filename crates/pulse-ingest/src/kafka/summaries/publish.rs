//! Sending a publish's records to the summaries topic, off the consume loop.

use std::time::Duration;

use futures::future::join_all;
use pulse_core::global_view::Record;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::kafka::KafkaOptions;

/// The producer of the summaries topic, allowed records up to `max_bytes`.
pub(super) fn producer(
    options: &KafkaOptions,
    max_bytes: &str,
) -> Result<FutureProducer, KafkaError> {
    let mut config = options.client_config();
    for (key, value) in [
        // A stop waits for the last publish: a broker that is down must not hold it past
        // the shutdown deadline.
        ("message.timeout.ms", "15000"),
        ("message.max.bytes", max_bytes),
        // Sketch images of nearby days and windows share most registers.
        ("compression.type", "lz4"),
    ] {
        if !options.properties.contains_key(key) {
            config.set(key, value);
        }
    }
    config.create()
}

/// Sends every record and waits for their delivery; returns the keys that were not
/// delivered, so that their pieces are sent again next time.
pub(super) async fn send(
    producer: FutureProducer,
    topic: String,
    records: Vec<Record>,
) -> Vec<String> {
    let bytes: usize = records.iter().map(|(_, value)| value.len()).sum();
    let count = records.len();
    let deliveries = records.iter().map(|(key, value)| {
        let producer = &producer;
        let topic = &topic;
        async move {
            let record = FutureRecord::to(topic).key(key).payload(value);
            match producer.send(record, Duration::from_secs(15)).await {
                Ok(_) => None,
                Err((error, _)) => {
                    tracing::warn!(%error, key, "Cannot publish a summary; it is sent again next time.");
                    Some(key.clone())
                }
            }
        }
    });
    let undelivered: Vec<String> = join_all(deliveries).await.into_iter().flatten().collect();
    tracing::debug!(
        records = count,
        bytes,
        undelivered = undelivered.len(),
        "Published summaries."
    );
    undelivered
}
