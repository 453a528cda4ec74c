//! The serde_json walk the scanner replaced, kept as the test oracle: the differential
//! property tests in `decode::tests` require the scanner to accept, reject and capture
//! exactly what this did.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Captures, DecodedEvent, Decoder, Level, Node, Rejection, Scalar};

/// [`Decoder::decode`] with the serde_json walk in place of the scanner.
pub(super) fn decode<'a>(
    decoder: &Decoder,
    bytes: &'a [u8],
) -> Result<DecodedEvent<'a>, Rejection> {
    if bytes.len() > decoder.max_record_bytes {
        return Err(Rejection::RecordTooLarge);
    }
    let mut captures = Captures::default();
    let is_object = match std::str::from_utf8(bytes) {
        Ok(text) => walk(
            serde_json::Deserializer::from_str(text),
            &decoder.root,
            &mut captures,
        ),
        Err(_) => walk(
            serde_json::Deserializer::from_slice(bytes),
            &decoder.root,
            &mut captures,
        ),
    }
    .map_err(|_| Rejection::NotJson)?;
    if !is_object {
        return Err(Rejection::NotObject);
    }
    decoder.resolve(captures)
}

fn walk<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    root: &Level,
    captures: &mut Captures<'de>,
) -> serde_json::Result<bool> {
    let is_object = de.deserialize_any(RootVisitor {
        level: root,
        captures,
    })?;
    de.end()?;
    Ok(is_object)
}

/// Walks the entries of an object, descending along the trie.
fn walk_object<'de, A: MapAccess<'de>>(
    mut map: A,
    level: &Level,
    captures: &mut Captures<'de>,
) -> Result<(), A::Error> {
    while let Some(found) = map.next_key_seed(KeySeed { level })? {
        match found {
            Some(node) => map.next_value_seed(ValueSeed { node, captures })?,
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

struct RootVisitor<'p, 'c, 'de> {
    level: &'p Level,
    captures: &'c mut Captures<'de>,
}

impl<'de> Visitor<'de> for RootVisitor<'_, '_, 'de> {
    /// Whether the record is an object.
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        walk_object(map, self.level, self.captures)?;
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Matches an object key against the trie level; `None` means "skip this value".
struct KeySeed<'p> {
    level: &'p Level,
}

impl<'de, 'p> DeserializeSeed<'de> for KeySeed<'p> {
    type Value = Option<&'p Node>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'p> Visitor<'de> for KeySeed<'p> {
    type Value = Option<&'p Node>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.level.find(key))
    }
}

struct ValueSeed<'p, 'c, 'de> {
    node: &'p Node,
    captures: &'c mut Captures<'de>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.captures
            .record(&self.node.targets, Scalar::Str(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.captures
            .record(&self.node.targets, Scalar::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.captures.record(&self.node.targets, Scalar::Int(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.captures.record(&self.node.targets, Scalar::UInt(v));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.captures.record(&self.node.targets, Scalar::Float(v));
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.captures.record(&self.node.targets, Scalar::Unusable);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.captures.record(&self.node.targets, Scalar::Unusable);
        walk_object(map, &self.node.children, self.captures)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.captures.record(&self.node.targets, Scalar::Unusable);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}
