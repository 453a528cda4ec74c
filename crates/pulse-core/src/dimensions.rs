//! Breakdown dimensions (platform, app version, country, plan, tenant): what a dimension is
//! configured as, what value an event carries, and the registry that turns values into
//! small ids under a cap.
//!
//! A value is text: a string trimmed, a number or boolean as its JSON text. Longer than
//! [`MAX_VALUE_BYTES`], empty or a pool's name, it is `__invalid__`; absent (or `null`), `__none__`. Values
//! get an id of their own in order of first appearance, up to the dimension's
//! `max_values`; later ones share `__other__`, and each event pooled so is counted per
//! dimension, so series stay bounded and the overflow is visible.
//!
//! The one decision to know: the registry is stream-wide and lives in the router
//! ([`crate::ingest::RouterState`]), as the feature registry does, not in the partitions.
//! "First appearance" then means first in the input order the router sees, which is the
//! same whether the state is one partition or many, so which values make the cut — and
//! every figure after it — is identical to the last digit; partitions hold sketches by id,
//! and an id names the same value in every partition, so merging by id is merging by name.
//! Per-partition registries merged by name could not promise that: a partition that pooled
//! a value into `__other__` cannot take its users back out of the pooled sketch.

use std::borrow::Cow;

use foldhash::HashMap;
use serde::{Deserialize, Serialize};

/// At most this many dimensions are configured.
pub const MAX_DIMENSIONS: usize = 8;
/// Longest value kept, in bytes after trimming.
pub const MAX_VALUE_BYTES: usize = 64;
/// At most this many dimensions break feature adoption down (`features = true`): each costs
/// a sketch per (day, value, feature used).
pub const MAX_FEATURE_DIMENSIONS: usize = 2;
/// Most values one dimension may track (ids are `u16`; the cap keeps series bounded).
pub const MAX_VALUES_CAP: usize = 10_000;

/// The pooled value of events without one.
pub const NONE_VALUE: &str = "__none__";
/// The pooled value of empty or over-long values.
pub const INVALID_VALUE: &str = "__invalid__";
/// The pooled value of values past the cap.
pub const OTHER_VALUE: &str = "__other__";

/// Id of a dimension's value; the first three are the pools.
pub type ValueId = u16;
pub const NONE_ID: ValueId = 0;
pub const INVALID_ID: ValueId = 1;
pub const OTHER_ID: ValueId = 2;
/// The first id of a tracked value.
pub(crate) const FIRST_TRACKED: ValueId = 3;

/// One configured dimension (`[dimensions.<name>]` of `pulse.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionSettings {
    pub name: String,
    /// JSON pointers, first present wins.
    pub paths: Vec<String>,
    /// Values with a series of their own; the rest pool in `__other__`.
    pub max_values: usize,
}

/// The configured dimensions as a partition's state knows them: each position's name,
/// hashed (a `Copy` value, so that [`crate::family::Rules`] stays one). A restored state
/// finds its dimensions by these keys, whatever their positions now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DimensionKeys {
    keys: [u64; MAX_DIMENSIONS],
    len: usize,
}

impl DimensionKeys {
    pub fn of(settings: &[DimensionSettings]) -> DimensionKeys {
        let mut keys = [0; MAX_DIMENSIONS];
        for (key, dimension) in keys.iter_mut().zip(settings) {
            *key = xxhash_rust::xxh3::xxh3_64(dimension.name.as_bytes());
        }
        DimensionKeys {
            keys,
            len: settings.len().min(MAX_DIMENSIONS),
        }
    }

    pub fn as_slice(&self) -> &[u64] {
        &self.keys[..self.len]
    }
}

/// The positions of the dimensions named in `names` (those with `features = true`): bit `p`
/// for the dimension at position `p`.
pub fn feature_positions(settings: &[DimensionSettings], names: &[String]) -> u8 {
    settings
        .iter()
        .take(MAX_DIMENSIONS)
        .enumerate()
        .filter(|(_, d)| names.contains(&d.name))
        .fold(0, |mask, (position, _)| mask | 1 << position)
}

/// The value an event carries for one dimension, before the registry gives it an id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DimValue<'a> {
    #[default]
    None,
    Invalid,
    Text(Cow<'a, str>),
}

/// An event's value for every configured dimension, by position: empty, so free to make,
/// move and drop, when none is configured (a fixed array of eight moved through decoding
/// and batching cost 7 % more instructions per event with no dimension at all).
pub type DimValues<'a> = Vec<DimValue<'a>>;

/// An event's value id for every configured dimension, by position.
pub type DimIds = [ValueId; MAX_DIMENSIONS];

impl<'a> DimValue<'a> {
    /// A captured string: trimmed, and `__invalid__` if empty, too long or a pool's name
    /// (which would otherwise stand for two things).
    pub fn of_text(text: Cow<'a, str>) -> DimValue<'a> {
        let trimmed = text.trim();
        let pool_name = [NONE_VALUE, INVALID_VALUE, OTHER_VALUE].contains(&trimmed);
        if trimmed.is_empty() || trimmed.len() > MAX_VALUE_BYTES || pool_name {
            return DimValue::Invalid;
        }
        if trimmed.len() == text.len() {
            return DimValue::Text(text);
        }
        DimValue::Text(match text {
            Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
            Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
        })
    }
}

/// The values of one dimension and their ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValueRegistry {
    pub name: String,
    max_values: usize,
    /// Tracked values, in order of first appearance: id `FIRST_TRACKED + index`.
    values: Vec<String>,
    #[serde(skip)]
    ids: HashMap<String, ValueId>,
    /// Events whose value was pooled into `__other__`.
    pub overflow_events: u64,
}

impl ValueRegistry {
    fn new(settings: &DimensionSettings) -> ValueRegistry {
        ValueRegistry {
            name: settings.name.clone(),
            max_values: settings.max_values,
            values: Vec::new(),
            ids: HashMap::default(),
            overflow_events: 0,
        }
    }

    /// The id of `value`, registering it while there is room.
    pub fn intern(&mut self, value: &DimValue<'_>) -> ValueId {
        let text = match value {
            DimValue::None => return NONE_ID,
            DimValue::Invalid => return INVALID_ID,
            DimValue::Text(text) => text,
        };
        if let Some(id) = self.ids.get(text.as_ref()) {
            return *id;
        }
        if self.values.len() < self.max_values {
            let id = FIRST_TRACKED + self.values.len() as ValueId;
            self.values.push(text.to_string());
            self.ids.insert(text.to_string(), id);
            return id;
        }
        self.overflow_events += 1;
        OTHER_ID
    }

    /// The id of a tracked value of another registry ([`crate::remap`]): registered while
    /// there is room, else pooled, and not counted as an overflow event (no event came).
    pub fn adopt(&mut self, value: &str) -> ValueId {
        let overflow = self.overflow_events;
        let id = self.intern(&DimValue::Text(value.into()));
        self.overflow_events = overflow;
        id
    }

    /// The name of an id (a pool's name for the pools).
    pub fn value(&self, id: ValueId) -> &str {
        match id {
            NONE_ID => NONE_VALUE,
            INVALID_ID => INVALID_VALUE,
            OTHER_ID => OTHER_VALUE,
            _ => self
                .values
                .get(usize::from(id - FIRST_TRACKED))
                .map_or(OTHER_VALUE, String::as_str),
        }
    }

    /// Ids a partition may hold: the pools and every tracked value so far.
    pub fn ids(&self) -> std::ops::Range<ValueId> {
        0..FIRST_TRACKED + self.values.len() as ValueId
    }
}

/// Every configured dimension's registry, in configured order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DimensionRegistry {
    pub dimensions: Vec<ValueRegistry>,
}

impl DimensionRegistry {
    pub fn new(settings: &[DimensionSettings]) -> DimensionRegistry {
        DimensionRegistry {
            dimensions: settings.iter().map(ValueRegistry::new).collect(),
        }
    }

    /// Makes a restored registry fit the configuration: a dimension keeps its values by
    /// name (whatever its position now), takes the configured cap (values already tracked
    /// stay), and one newly configured starts empty. Rebuilds the lookup tables.
    pub fn fit(&mut self, settings: &[DimensionSettings]) {
        let mut saved = std::mem::take(&mut self.dimensions);
        self.dimensions = settings
            .iter()
            .map(|dimension| {
                let mut registry = saved
                    .iter()
                    .position(|r| r.name == dimension.name)
                    .map(|at| saved.swap_remove(at))
                    .unwrap_or_else(|| ValueRegistry::new(dimension));
                registry.max_values = dimension.max_values;
                registry.ids = registry
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.clone(), FIRST_TRACKED + i as ValueId))
                    .collect();
                registry
            })
            .collect();
    }

    /// The ids of an event's values; an unconfigured position is `__none__`.
    pub fn intern(&mut self, values: &[DimValue<'_>]) -> DimIds {
        let mut ids = [NONE_ID; MAX_DIMENSIONS];
        for ((id, registry), value) in ids.iter_mut().zip(&mut self.dimensions).zip(values) {
            *id = registry.intern(value);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(name: &str, max_values: usize) -> DimensionSettings {
        DimensionSettings {
            name: name.into(),
            paths: vec![format!("/{name}")],
            max_values,
        }
    }

    fn text(s: &str) -> DimValue<'_> {
        DimValue::of_text(Cow::Borrowed(s))
    }

    #[test]
    fn values_are_trimmed_and_bounded() {
        assert_eq!(text("  ios "), DimValue::Text(Cow::Borrowed("ios")));
        assert_eq!(text("   "), DimValue::Invalid);
        assert_eq!(text(" __other__"), DimValue::Invalid);
        assert_eq!(
            text(&"x".repeat(MAX_VALUE_BYTES)),
            DimValue::Text("x".repeat(64).into())
        );
        assert_eq!(text(&"x".repeat(MAX_VALUE_BYTES + 1)), DimValue::Invalid);
    }

    #[test]
    fn the_cap_pools_later_values_and_counts_them() {
        let mut registry = DimensionRegistry::new(&[settings("platform", 2), settings("plan", 1)]);
        let mut values = vec![DimValue::None; 2];
        let mut id_of = |platform: DimValue<'static>| {
            values[0] = platform;
            registry.intern(&values)[0]
        };
        let (web, ios) = (id_of(text("web")), id_of(text("ios")));
        assert_eq!((web, ios), (3, 4));
        assert_eq!(id_of(text("android")), OTHER_ID);
        assert_eq!(id_of(text("web")), web);
        assert_eq!(id_of(DimValue::None), NONE_ID);
        assert_eq!(id_of(DimValue::Invalid), INVALID_ID);
        let platform = &registry.dimensions[0];
        assert_eq!(platform.overflow_events, 1);
        assert_eq!(platform.value(ios), "ios");
        assert_eq!(platform.value(OTHER_ID), OTHER_VALUE);
        assert_eq!(platform.ids(), 0..5);
        assert_eq!(
            registry.dimensions[1].overflow_events, 0,
            "counted per dimension"
        );
    }

    #[test]
    fn a_restored_registry_keeps_its_values_by_name() {
        let mut registry = DimensionRegistry::new(&[settings("platform", 3)]);
        let mut values = vec![text("web"), DimValue::None];
        registry.intern(&values);
        let bytes = postcard::to_stdvec(&registry).unwrap();
        let mut back: DimensionRegistry = postcard::from_bytes(&bytes).unwrap();
        back.fit(&[settings("tenant", 5), settings("platform", 3)]);
        values[1] = text("web");
        values[0] = text("acme");
        assert_eq!(back.intern(&values)[..2], [3, 3]);
        assert_eq!(back.dimensions[1].value(3), "web");
        assert_eq!(back.dimensions[0].value(3), "acme");
    }
}
