//! [`TopicPartition`]: the name of one partition of one Kafka topic.
//!
//! Offsets, positions, watermarks and assignments are all kept per partition; one type for
//! the key keeps them apart from other `(String, i32)` pairs and gives it one way to print.
//! The order is the topic's name, then the partition number, so maps of offsets list a
//! topic's partitions together and in order.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    /// Whether this names `partition` of `topic`. The partition number, which tells most
    /// partitions apart, is compared first: this runs for each partition on every record.
    pub fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && self.topic == topic
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_topic_then_partition_and_prints_both() {
        let mut names = [
            TopicPartition::new("b", 0),
            TopicPartition::new("a", 10),
            TopicPartition::new("a", 2),
        ];
        names.sort();
        let printed: Vec<String> = names.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["a/2", "a/10", "b/0"]);
        assert!(names[0].is("a", 2));
        assert!(!names[0].is("b", 2));
    }
}
