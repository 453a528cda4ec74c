//! The broker probe: the broker-up signal behind `/readyz`, the topics' partitions, and
//! confirmation of the partition ends the consume loop doubts. It runs on its own task
//! (the lookups on a blocking thread), so it never blocks the consume loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};

use super::context::{PulseContext, Shared};
use crate::topic_partition::TopicPartition;

/// How long the probe waits for each answer from the broker.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the brokers for metadata every second; the answer (or its absence within the
/// timeout) is the broker-up signal behind `/readyz`, and it says which partitions the
/// subscribed topics have. It also checks the partition ends the consume loop doubts.
pub(super) async fn probe_broker(
    consumer: Arc<StreamConsumer<PulseContext>>,
    up: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    topics: Vec<String>,
) {
    loop {
        let client = consumer.clone();
        let wanted = topics.clone();
        let checks = shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ends_to_check
            .clone();
        let answer = tokio::task::spawn_blocking(move || {
            let metadata = client.fetch_metadata(None, PROBE_TIMEOUT).ok()?;
            let all: Vec<TopicPartition> = metadata
                .topics()
                .iter()
                .filter(|t| wanted.iter().any(|w| w == t.name()))
                .flat_map(|t| {
                    t.partitions()
                        .iter()
                        .map(|p| TopicPartition::new(t.name(), p.id()))
                })
                .collect();
            let confirmed: Vec<(TopicPartition, Instant)> = checks
                .into_iter()
                .filter(|check| {
                    let at = &check.partition;
                    client
                        .fetch_watermarks(&at.topic, at.partition, PROBE_TIMEOUT)
                        .is_ok_and(|(_, high)| high <= check.position)
                })
                .map(|check| (check.partition, check.doubted_since))
                .collect();
            Some((all, confirmed))
        })
        .await
        .ok()
        .flatten();
        let reachable = answer.is_some();
        if let Some((all, confirmed)) = answer {
            let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
            if !all.is_empty() {
                shared.topic_partitions = all;
            }
            shared.confirmed_ends.extend(confirmed);
        }
        let was = up.swap(reachable, Ordering::Relaxed);
        if was != reachable {
            if reachable {
                tracing::info!("Kafka brokers reachable.");
            } else {
                tracing::warn!("Kafka brokers unreachable; not ready until they return.");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
