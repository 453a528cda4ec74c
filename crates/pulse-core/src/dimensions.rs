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

/// An event's value id for every configured dimension, by position.
pub type DimIds = [ValueId; MAX_DIMENSIONS];

/// The dimension values of many events, back to back: their text in one buffer, reused from
/// record to record. The decoder writes an event's values here and the event refers to
/// them by range ([`DimValues`]), so a value costs no allocation on its way from decoding
/// to the registry (a `Vec` of values per event, made in the decoder and again for the
/// router, cost ~400 instructions per event with two dimensions). Numbers and booleans are
/// written here as their JSON text.
#[derive(Debug, Clone, Default)]
pub struct ValueBuffer {
    values: Vec<StoredValue>,
    text: String,
}

/// A value in a [`ValueBuffer`]: a pool, or where its text lies.
#[derive(Debug, Clone, Copy)]
enum StoredValue {
    None,
    Invalid,
    Text { start: u32, end: u32 },
}

impl ValueBuffer {
    /// Empties the buffer, keeping its memory.
    pub fn clear(&mut self) {
        self.values.clear();
        self.text.clear();
    }

    /// How many values it holds: where the next event's values start.
    pub(crate) fn len(&self) -> u32 {
        self.values.len() as u32
    }

    pub(crate) fn push_none(&mut self) {
        self.values.push(StoredValue::None);
    }

    pub(crate) fn push_invalid(&mut self) {
        self.values.push(StoredValue::Invalid);
    }

    /// A value as text: trimmed, and `__invalid__` if empty, too long or a pool's name
    /// (which would otherwise stand for two things).
    pub(crate) fn push_text(&mut self, text: &str) {
        // Whitespace is ASCII at most 0x20 or not ASCII at all: a value that starts and ends
        // with printable ASCII (nearly every one) has none to trim, and `trim`'s Unicode
        // walk from both ends was a third of the cost of a value.
        let printable = |byte: Option<&u8>| byte.is_some_and(|b| (0x21..0x7f).contains(b));
        let bytes = text.as_bytes();
        let text = if printable(bytes.first()) && printable(bytes.last()) {
            text
        } else {
            text.trim()
        };
        self.push_written(|buffer| buffer.push_str(text));
    }

    /// A value written by `write` at the end of the buffer (a number as its text), checked
    /// as [`ValueBuffer::push_text`] checks text.
    pub(crate) fn push_written(&mut self, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        let written = &self.text[start..];
        let pool_name = [NONE_VALUE, INVALID_VALUE, OTHER_VALUE].contains(&written);
        if written.is_empty() || written.len() > MAX_VALUE_BYTES || pool_name {
            self.text.truncate(start);
            return self.push_invalid();
        }
        self.values.push(StoredValue::Text {
            start: start as u32,
            end: self.text.len() as u32,
        });
    }

    /// The values from `start` on, as one event's.
    pub(crate) fn since(&self, start: u32) -> DimValues<'_> {
        DimValues {
            buffer: Some(self),
            start,
            end: self.len(),
        }
    }

    fn get(&self, index: u32) -> DimValue<'_> {
        match self.values[index as usize] {
            StoredValue::None => DimValue::None,
            StoredValue::Invalid => DimValue::Invalid,
            StoredValue::Text { start, end } => {
                DimValue::Text(Cow::Borrowed(&self.text[start as usize..end as usize]))
            }
        }
    }
}

/// An event's value for every configured dimension, by position: a range of a
/// [`ValueBuffer`]. Small and `Copy`, and nothing at all without dimensions (a fixed array
/// of eight values moved through decoding and batching cost 7 % more instructions per event
/// with no dimension configured; two inline, 1.5 %).
#[derive(Clone, Copy, Default)]
pub struct DimValues<'a> {
    buffer: Option<&'a ValueBuffer>,
    start: u32,
    end: u32,
}

impl<'a> DimValues<'a> {
    /// Moves the range to `buffer` (where a batch keeps the values it was given).
    pub(crate) fn at(buffer: &'a ValueBuffer, start: u32, end: u32) -> DimValues<'a> {
        DimValues {
            buffer: Some(buffer),
            start,
            end,
        }
    }

    /// Where they lie in their buffer.
    pub(crate) fn range(&self) -> (u32, u32) {
        (self.start, self.end)
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn iter(&self) -> impl Iterator<Item = DimValue<'a>> + 'a {
        let buffer = self.buffer;
        (self.start..self.end).filter_map(move |index| Some(buffer?.get(index)))
    }
}

/// The values, wherever they are kept.
impl std::fmt::Debug for DimValues<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Equal when the values are, wherever they are kept.
impl PartialEq for DimValues<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for DimValues<'_> {}

/// The values of one dimension and their ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValueRegistry {
    pub name: String,
    max_values: usize,
    /// Tracked values, in order of first appearance: id `FIRST_TRACKED + index`.
    values: Vec<String>,
    /// By the value's bytes: the router looks values up in the decoder's buffer as bytes,
    /// which spares the char-boundary checks of cutting a `str` out of it.
    #[serde(skip)]
    ids: HashMap<Box<[u8]>, ValueId>,
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

    /// The id of a value's text (UTF-8 bytes), registering it while there is room. Inline:
    /// the look-up is the router's cost per value with dimensions; registering is rare.
    #[inline]
    fn intern_text(&mut self, text: &[u8]) -> ValueId {
        match self.ids.get(text) {
            Some(id) => *id,
            None => self.register(text),
        }
    }

    /// A value not registered yet: its own id while there is room, else the pool.
    fn register(&mut self, text: &[u8]) -> ValueId {
        if self.values.len() < self.max_values {
            let id = FIRST_TRACKED + self.values.len() as ValueId;
            // Text cut from a `str` at char boundaries: nothing is replaced.
            self.values.push(String::from_utf8_lossy(text).into_owned());
            self.ids.insert(text.into(), id);
            return id;
        }
        self.overflow_events += 1;
        OTHER_ID
    }

    /// The id of a tracked value of another registry ([`crate::remap`]): registered while
    /// there is room, else pooled, and not counted as an overflow event (no event came).
    pub fn adopt(&mut self, value: &str) -> ValueId {
        let overflow = self.overflow_events;
        let id = self.intern_text(value.as_bytes());
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
                    .map(|(i, v)| (v.as_bytes().into(), FIRST_TRACKED + i as ValueId))
                    .collect();
                registry
            })
            .collect();
    }

    /// The ids of an event's values; an unconfigured position is `__none__`. Not inlined:
    /// the router's code for events without dimensions stays as small as it was.
    #[inline(never)]
    pub fn intern(&mut self, values: DimValues<'_>) -> DimIds {
        let mut ids = [NONE_ID; MAX_DIMENSIONS];
        let Some(buffer) = values.buffer else {
            return ids;
        };
        let stored = &buffer.values[values.start as usize..values.end as usize];
        for ((id, registry), value) in ids.iter_mut().zip(&mut self.dimensions).zip(stored) {
            *id = match *value {
                StoredValue::None => NONE_ID,
                StoredValue::Invalid => INVALID_ID,
                StoredValue::Text { start, end } => {
                    registry.intern_text(&buffer.text.as_bytes()[start as usize..end as usize])
                }
            };
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

    /// One event's values: `Some` text, `None` for a missing value.
    fn event(values: &[Option<&str>]) -> ValueBuffer {
        let mut buffer = ValueBuffer::default();
        for value in values {
            match value {
                Some(text) => buffer.push_text(text),
                None => buffer.push_none(),
            }
        }
        buffer
    }

    fn text(s: &str) -> DimValue<'_> {
        DimValue::Text(Cow::Borrowed(s))
    }

    #[test]
    fn values_are_trimmed_and_bounded() {
        let long = "x".repeat(MAX_VALUE_BYTES);
        let longer = "x".repeat(MAX_VALUE_BYTES + 1);
        let mut buffer = event(&[
            Some("  ios "),
            Some("   "),
            Some(" __other__"),
            Some(&long),
            Some(&longer),
            None,
            Some("\u{a0}ios\t"),
            Some("é"),
        ]);
        buffer.push_written(|text| text.push_str("42"));
        buffer.push_written(|text| text.push_str(&longer));
        let values: Vec<_> = buffer.since(0).iter().collect();
        assert_eq!(
            values,
            [
                text("ios"),
                DimValue::Invalid,
                DimValue::Invalid,
                text(&long),
                DimValue::Invalid,
                DimValue::None,
                text("ios"),
                text("é"),
                text("42"),
                DimValue::Invalid,
            ]
        );
        assert_eq!(buffer.since(3).len(), 7);
        let elsewhere = event(&[Some(&long)]);
        assert_eq!(
            DimValues::at(&buffer, 3, 4),
            elsewhere.since(0),
            "equal by value"
        );
        assert_ne!(DimValues::at(&buffer, 2, 3), elsewhere.since(0));
    }

    #[test]
    fn the_cap_pools_later_values_and_counts_them() {
        let mut registry = DimensionRegistry::new(&[settings("platform", 2), settings("plan", 1)]);
        let mut id_of = |platform: &dyn Fn(&mut ValueBuffer)| {
            let mut values = ValueBuffer::default();
            platform(&mut values);
            values.push_none();
            registry.intern(values.since(0))[0]
        };
        let (web, ios) = (
            id_of(&|v| v.push_text("web")),
            id_of(&|v| v.push_text("ios")),
        );
        assert_eq!((web, ios), (3, 4));
        assert_eq!(id_of(&|v| v.push_text("android")), OTHER_ID);
        assert_eq!(id_of(&|v| v.push_text("web")), web);
        assert_eq!(id_of(&|v| v.push_none()), NONE_ID);
        assert_eq!(id_of(&|v| v.push_invalid()), INVALID_ID);
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
        registry.intern(event(&[Some("web"), None]).since(0));
        let bytes = postcard::to_stdvec(&registry).unwrap();
        let mut back: DimensionRegistry = postcard::from_bytes(&bytes).unwrap();
        back.fit(&[settings("tenant", 5), settings("platform", 3)]);
        let values = event(&[Some("acme"), Some("web")]);
        assert_eq!(back.intern(values.since(0))[..2], [3, 3]);
        assert_eq!(back.dimensions[1].value(3), "web");
        assert_eq!(back.dimensions[0].value(3), "acme");
    }
}
