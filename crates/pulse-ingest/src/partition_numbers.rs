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

    /// What is wrong with restoring a state numbered like this onto the topics' actual
    /// partitions `topic_partitions`, if anything: a saved partition the topics do not have
    /// (another topic, or a replay with more `--partitions`), or, for a replayed history (no
    /// offsets saved), fewer partitions than a saved topic has. Either way a user's history
    /// and its live events sit in different partitions: the KPIs stay right (sketches
    /// union), but a session open at the hand-over may split in two.
    pub fn layout_problem(
        &self,
        topic_partitions: &[TopicPartition],
        offsets_saved: bool,
    ) -> Option<String> {
        let unknown: Vec<String> = self
            .keys
            .iter()
            .filter(|key| !topic_partitions.contains(key))
            .map(ToString::to_string)
            .collect();
        if !unknown.is_empty() {
            return Some(format!(
                "the saved state has partitions the subscribed topics do not: {}",
                unknown.join(", ")
            ));
        }
        if offsets_saved {
            return None;
        }
        let saved_topics: std::collections::BTreeSet<&str> =
            self.keys.iter().map(|k| k.topic.as_str()).collect();
        saved_topics.into_iter().find_map(|topic| {
            let saved = self.keys.iter().filter(|k| k.topic == topic).count();
            let actual = topic_partitions.iter().filter(|k| k.topic == topic).count();
            (saved != actual).then(|| {
                format!(
                    "the state was replayed with {saved} partitions but {topic} has {actual}: \
                     replay with --partitions {actual} for an exact hand-over"
                )
            })
        })
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
    fn a_replayed_layout_must_match_the_topic() {
        let topic = |n: i32| {
            (0..n)
                .map(|p| TopicPartition::new("events", p))
                .collect::<Vec<_>>()
        };
        let replayed = PartitionNumbers::virtual_partitions("events", 3);
        assert_eq!(replayed.layout_problem(&topic(3), false), None);
        let fewer = replayed.layout_problem(&topic(4), false).unwrap();
        assert!(fewer.contains("--partitions 4"), "{fewer}");
        let more = replayed.layout_problem(&topic(2), false).unwrap();
        assert!(more.contains("events/2"), "{more}");
        // A live run's checkpoint: partitions it never saw are simply new.
        let live = PartitionNumbers::from_keys(topic(2));
        assert_eq!(live.layout_problem(&topic(4), true), None);
    }

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
