//! The reader task: the whole summaries topic, from its beginning, into the remote view.
//!
//! It reads with `assign`, not as a member of a consumer group: every instance must read
//! every partition of the topic, and committing offsets would serve nothing (a restarted
//! instance reads the compacted topic from its beginning, which is its current state).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulse_core::global_view::{RemoteView, Taken};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use crate::kafka::KafkaOptions;

/// Starts reading `topic` into `view` until the task is aborted.
pub(super) fn spawn(
    options: &KafkaOptions,
    topic: &str,
    view: Arc<Mutex<RemoteView>>,
) -> Result<JoinHandle<()>, KafkaError> {
    let mut config = options.client_config();
    // librdkafka wants a group id; with `assign` no group is joined and nothing committed.
    config.set("group.id", format!("{}.summaries", options.group_id));
    config.set("enable.auto.commit", "false");
    config.set("fetch.message.max.bytes", super::MAX_RECORD_BYTES);
    let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
    let topic = topic.to_owned();
    Ok(tokio::spawn(async move {
        let partitions = partitions_of(&consumer, &topic).await;
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            if let Err(error) =
                assignment.add_partition_offset(&topic, partition, Offset::Beginning)
            {
                tracing::warn!(%error, "Cannot read a summaries partition.");
            }
        }
        if let Err(error) = consumer.assign(&assignment) {
            return tracing::error!(%error, topic, "Cannot read the summaries topic; only this instance's partitions are served.");
        }
        tracing::info!(topic, "Reading the summaries of every partition.");
        loop {
            match consumer.recv().await {
                Ok(message) => {
                    let (Some(key), Some(value)) = (message.key(), message.payload()) else {
                        continue; // a tombstone: compaction's deletion marker
                    };
                    let key = String::from_utf8_lossy(key);
                    let taken = view
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take(&key, value);
                    match taken {
                        Ok(Taken::Applied) => {}
                        Ok(Taken::Stale { epoch, newest }) => {
                            tracing::info!(%key, epoch, newest, "Ignored a summary of a stale owner.");
                        }
                        Ok(Taken::UnknownPiece) => {
                            tracing::debug!(%key, "Ignored a summary piece of a newer pulse.");
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Ignored a record of the summaries topic.")
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Cannot read the summaries topic; retrying.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }))
}

/// The partitions of `topic`, once the broker lists them (it may have just been created,
/// or the broker may be away).
async fn partitions_of(consumer: &Arc<StreamConsumer>, topic: &str) -> Vec<i32> {
    loop {
        let asking = consumer.clone();
        let name = topic.to_owned();
        let listed = tokio::task::spawn_blocking(move || {
            asking
                .fetch_metadata(Some(&name), Duration::from_secs(5))
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .filter(|t| t.name() == name && t.error().is_none())
                        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                        .collect::<Vec<i32>>()
                })
        })
        .await;
        match listed {
            Ok(Ok(partitions)) if !partitions.is_empty() => return partitions,
            Ok(Err(error)) => {
                tracing::debug!(%error, topic, "The summaries topic is not listed yet.")
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
