//! Topic administration: creating the topics pulse writes to (best effort), and the
//! producer of the rollup topic.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use super::KafkaOptions;

/// Creates the topics if they do not exist (best effort: a broker may forbid it).
pub async fn ensure_topics(options: &KafkaOptions, topics: &[String], partitions: i32) {
    ensure_topics_with(options, topics, partitions, &[]).await;
}

/// [`ensure_topics`] with topic configuration, e.g. `cleanup.policy = compact`. An existing
/// topic is left as it is.
pub async fn ensure_topics_with(
    options: &KafkaOptions,
    topics: &[String],
    partitions: i32,
    config: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = match options.client_config().create() {
        Ok(admin) => admin,
        Err(error) => return tracing::warn!(%error, "Cannot create a Kafka admin client."),
    };
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            config.iter().fold(
                NewTopic::new(t, partitions, TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let admin_options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    match admin.create_topics(&new, &admin_options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(topic) => tracing::info!(topic, "Created topic."),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => tracing::warn!(topic, %code, "Cannot create topic."),
                }
            }
        }
        Err(error) => tracing::warn!(%error, "Cannot create topics."),
    }
}

/// Creates the rollup topic if it is missing (best effort, like the dead-letter topic) and
/// a producer for it.
pub async fn rollup_producer(
    options: &KafkaOptions,
    topic: &str,
) -> Result<FutureProducer, KafkaError> {
    ensure_topics(options, &[topic.to_owned()], 1).await;
    let mut config = options.client_config();
    // A stop waits for the last deliveries: a broker that is down must not hold it past the
    // shutdown deadline.
    if !options.properties.contains_key("message.timeout.ms") {
        config.set("message.timeout.ms", "15000");
    }
    let producer = config.create()?;
    tracing::info!(topic, "Sending rollups to Kafka.");
    Ok(producer)
}
