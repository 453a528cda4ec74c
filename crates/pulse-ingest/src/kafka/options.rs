//! [`KafkaOptions`]: what every Kafka client of pulse is built from.
//!
//! The binary validates the configuration and fills this in; the consumer, the dead-letter
//! and rollup producers and the admin client all start from [`KafkaOptions::client_config`],
//! so TLS and SASL settings apply to each of them alike.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;

use super::summaries::SummaryOptions;

#[derive(Clone)]
pub struct KafkaOptions {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    pub auto_offset_reset: String,
    /// Dead-letter topic name template (`{topic}` is replaced), or `None` to disable.
    pub dead_letter_topic: Option<String>,
    /// Passed to librdkafka as they are (TLS, SASL, tuning); they win over pulse's defaults.
    pub properties: BTreeMap<String, String>,
    pub refresh: Duration,
    /// The global view's topic and interval (`[summaries]`), or `None` when off.
    pub summaries: Option<SummaryOptions>,
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Properties may hold SASL passwords: only their names are shown.
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .field("summaries", &self.summaries)
            .finish()
    }
}

impl KafkaOptions {
    pub(crate) fn dead_letter_topic_for(&self, topic: &str) -> Option<String> {
        self.dead_letter_topic
            .as_ref()
            .map(|t| t.replace("{topic}", topic))
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}
