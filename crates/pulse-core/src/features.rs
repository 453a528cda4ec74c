//! Feature names → small ids, under a cap.
//!
//! Feature names come from other teams' events, so their number is unbounded. The first
//! `max_features` distinct names get their own id; later names share the `__other__` pool,
//! and every event pooled that way is counted so the overflow is visible. The registry lives
//! in the router, not in the partitions, so every partition agrees on ids and on which names made
//! the cut, whatever the number of partitions or workers.

use foldhash::HashMap;
use serde::{Deserialize, Serialize};

/// Index of a feature in the registry. The overflow pool's id is `max_features`.
pub type FeatureId = u16;

/// Name of the pool that features past the cap share.
pub const OTHER_FEATURE: &str = "__other__";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureRegistry {
    max_features: usize,
    names: Vec<String>,
    #[serde(skip)]
    ids: HashMap<String, FeatureId>,
    /// Events whose feature was pooled into `__other__`.
    pub overflow_events: u64,
}

impl FeatureRegistry {
    pub fn new(max_features: usize) -> FeatureRegistry {
        FeatureRegistry {
            max_features,
            names: Vec::new(),
            ids: HashMap::default(),
            overflow_events: 0,
        }
    }

    /// The id for `name`, registering it while there is room.
    pub fn intern(&mut self, name: &str) -> FeatureId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        if self.names.len() < self.max_features {
            let id = self.names.len() as FeatureId;
            self.names.push(name.to_owned());
            self.ids.insert(name.to_owned(), id);
            return id;
        }
        self.overflow_events += 1;
        self.other_id()
    }

    /// The id of a name another registry tracks ([`crate::remap`]): registered while there
    /// is room, else pooled, and not counted as an overflow event (no event came).
    pub fn adopt(&mut self, name: &str) -> FeatureId {
        let overflow = self.overflow_events;
        let id = self.intern(name);
        self.overflow_events = overflow;
        id
    }

    pub fn other_id(&self) -> FeatureId {
        self.max_features as FeatureId
    }

    /// Number of ids a partition must be able to hold (tracked names plus the pool).
    pub fn capacity(&self) -> usize {
        self.max_features + 1
    }

    /// The name of an id (`__other__` for the pool).
    pub fn name(&self, id: FeatureId) -> &str {
        self.names
            .get(usize::from(id))
            .map_or(OTHER_FEATURE, String::as_str)
    }

    pub fn tracked(&self) -> usize {
        self.names.len()
    }

    /// Rebuilds the lookup table after deserialisation.
    pub fn restore_index(&mut self) {
        self.ids = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as FeatureId))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_pools_the_rest_and_counts_them() {
        let mut registry = FeatureRegistry::new(2);
        assert_eq!(registry.intern("a"), 0);
        assert_eq!(registry.intern("b"), 1);
        assert_eq!(registry.intern("a"), 0);
        assert_eq!(registry.intern("c"), 2);
        assert_eq!(registry.intern("d"), 2);
        assert_eq!(registry.name(2), OTHER_FEATURE);
        assert_eq!(registry.overflow_events, 2);
        assert_eq!(registry.tracked(), 2);
    }

    #[test]
    fn survives_a_round_trip() {
        let mut registry = FeatureRegistry::new(3);
        registry.intern("x");
        registry.intern("y");
        let bytes = postcard::to_stdvec(&registry).unwrap();
        let mut back: FeatureRegistry = postcard::from_bytes(&bytes).unwrap();
        back.restore_index();
        assert_eq!(back.intern("y"), 1);
        assert_eq!(back.intern("z"), 2);
    }
}
