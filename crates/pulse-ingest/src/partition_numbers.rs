//! [`PartitionNumbers`]: which Kafka partition each of the engine's partition numbers is.
//!
//! The engine knows partitions by number (dense, so workers own them by `number mod
//! workers` and keep them in vectors); Kafka by topic and partition. Numbers are handed out
//! in order of first sight and kept in every checkpoint, so a restored partition keeps its
//! number. A replay's virtual partition `p` is partition `p` of the first configured topic,
//! which is what lets a replayed history hand over to a live consumer group.

use foldhash::HashMap;

use crate::topic_partition::TopicPartition;

#[derive(Debug, Clone, Default)]
pub struct PartitionNumbers {
    keys: Vec<TopicPartition>,
    numbers: HashMap<TopicPartition, usize>,
}

impl PartitionNumbers {
    /// Numbers `keys` in order: the first is 0.
    pub fn from_keys(keys: impl IntoIterator<Item = TopicPartition>) -> PartitionNumbers {
        let mut numbers = PartitionNumbers::default();
        for key in keys {
            numbers.number_of(&key);
        }
        numbers
    }

    /// The virtual partitions `0..count` of a source without Kafka, as partitions of `topic`.
    pub fn virtual_partitions(topic: &str, count: usize) -> PartitionNumbers {
        PartitionNumbers::from_keys((0..count).map(|p| TopicPartition::new(topic, p as i32)))
    }

    /// The number of `key`, handing out the next one on first sight.
    pub fn number_of(&mut self, key: &TopicPartition) -> usize {
        if let Some(number) = self.numbers.get(key) {
            return *number;
        }
        let number = self.keys.len();
        self.keys.push(key.clone());
        self.numbers.insert(key.clone(), number);
        number
    }

    /// Every partition numbered, in number order.
    pub fn keys(&self) -> &[TopicPartition] {
        &self.keys
    }

    pub fn key_of(&self, number: usize) -> Option<&TopicPartition> {
        self.keys.get(number)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_handed_out_once_in_order_of_first_sight() {
        let mut numbers = PartitionNumbers::virtual_partitions("events", 2);
        assert_eq!(numbers.number_of(&TopicPartition::new("events", 1)), 1);
        assert_eq!(numbers.number_of(&TopicPartition::new("other", 0)), 2);
        assert_eq!(numbers.number_of(&TopicPartition::new("events", 0)), 0);
        assert_eq!(numbers.key_of(2), Some(&TopicPartition::new("other", 0)));
        assert_eq!(numbers.len(), 3);
    }
}
