//! Distinct counting: pulse's own [`DistinctSketch`] over Apache DataSketches' HLL.
//!
//! Why DataSketches and not `hyperloglog-rs` (the crate first asked for): its latest release
//! does not compile on stable Rust, has no exact mode for small sets, hashes with SipHash
//! (not stable or seedable, so saved sketches may not merge across builds) and panics on
//! some garbage input to its deserializer. DataSketches' HLL is exact for small sets,
//! byte-compatible with the Java, C++ and Python libraries (and so with Druid and Spark),
//! and rejects bad bytes with an error.
//!
//! The library stays behind this type so the rest of pulse never names it. A user is hashed
//! once per event into a [`UserHash`]; every sketch the event touches reuses its coupon.
//! Users are hashed as their UTF-8 bytes with the DataSketches default seed, exactly as
//! `HllSketch.update(String)` does in Java, so exported sketches merge with a warehouse's.

use datasketches::hash::value::raw_bytes;
use datasketches::hll::{Coupon, HllSketch, HllType, HllUnion};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::settings::HllWidth;

/// The two hashes of a user id, computed once per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserHash {
    /// DataSketches' HLL coupon (MurmurHash3 of the UTF-8 bytes, seed 9001).
    pub coupon: Coupon,
    /// A stable 64-bit key (XXH3) for routing and the session table; never the raw id.
    pub key: u64,
}

impl UserHash {
    pub fn of(user: &str) -> UserHash {
        UserHash {
            coupon: Coupon::from_value(raw_bytes::from_str(user)),
            key: xxhash_rust::xxh3::xxh3_64(user.as_bytes()),
        }
    }
}

/// Sketch parameters shared by every sketch of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SketchShape {
    pub lg_k: u8,
    pub width: HllWidth,
}

impl SketchShape {
    fn hll_type(self) -> HllType {
        match self.width {
            HllWidth::Hll4 => HllType::Hll4,
            HllWidth::Hll6 => HllType::Hll6,
            HllWidth::Hll8 => HllType::Hll8,
        }
    }
}

/// A HyperLogLog sketch of user ids. Serialises as DataSketches' compact binary image.
#[derive(Clone, PartialEq)]
pub struct DistinctSketch {
    inner: HllSketch,
}

impl std::fmt::Debug for DistinctSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DistinctSketch(~{:.0})", self.inner.estimate())
    }
}

/// Raised when bytes are not a valid sketch image.
#[derive(Debug, thiserror::Error)]
#[error("invalid HLL sketch image: {0}")]
pub struct SketchDecodeError(String);

impl DistinctSketch {
    pub fn new(shape: SketchShape) -> DistinctSketch {
        let inner = HllSketch::new(shape.lg_k, shape.hll_type())
            .expect("lg_k is validated to lie in 4..=21");
        DistinctSketch { inner }
    }

    #[inline]
    pub fn insert(&mut self, user: &UserHash) {
        self.inner.update_with_coupon(user.coupon);
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The order-independent (composite) estimate: a function of the registers alone, so
    /// it is the same however users were split across partitions or in what order they came.
    /// (The HIP estimator is slightly sharper but depends on insertion order, which would
    /// make a restored or re-partitioned run differ in the last digits.)
    pub fn estimate(&self) -> f64 {
        self.inner.composite_estimate()
    }

    pub fn estimated_bytes(&self) -> usize {
        self.inner.estimated_size()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.inner.serialize()
    }

    /// Reads a sketch image. DataSketches 0.6 accepts some damaged images that it then
    /// cannot write back readably (a list-mode image whose coupon count exceeds its
    /// non-empty coupons; found by fuzzing): restoring one would make every later
    /// checkpoint unreadable, so an image is valid only if what it reads as reads back too.
    pub fn from_bytes(bytes: &[u8]) -> Result<DistinctSketch, SketchDecodeError> {
        let decode = |bytes: &[u8]| {
            HllSketch::deserialize(bytes).map_err(|e| SketchDecodeError(e.to_string()))
        };
        let inner = decode(bytes)?;
        decode(&inner.serialize())?;
        Ok(DistinctSketch { inner })
    }
}

impl Serialize for DistinctSketch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for DistinctSketch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde_bytes_compat::deserialize(d)?;
        DistinctSketch::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// Accepts bytes however the format encodes them (postcard: a byte string; JSON: an array);
/// sketches and the families' state images both read theirs through it.
pub(crate) mod serde_bytes_compat {
    use serde::Deserializer;
    use serde::de::{SeqAccess, Visitor};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}

/// A union of sketches: register-wise maximum, so it loses nothing.
#[derive(Debug, Clone)]
pub struct DistinctUnion {
    inner: HllUnion,
    shape: SketchShape,
}

impl DistinctUnion {
    pub fn new(shape: SketchShape) -> DistinctUnion {
        let inner = HllUnion::new(shape.lg_k).expect("lg_k is validated to lie in 4..=21");
        DistinctUnion { inner, shape }
    }

    pub fn add(&mut self, sketch: &DistinctSketch) {
        self.inner.update(&sketch.inner);
    }

    pub fn add_union(&mut self, other: &DistinctUnion) {
        self.add(&other.to_sketch());
    }

    /// The composite estimate, as [`DistinctSketch::estimate`].
    pub fn estimate(&self) -> f64 {
        if self.inner.is_empty() {
            0.0
        } else {
            self.inner.composite_estimate()
        }
    }

    pub fn to_sketch(&self) -> DistinctSketch {
        DistinctSketch {
            inner: self.inner.to_sketch(self.shape.hll_type()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHAPE: SketchShape = SketchShape {
        lg_k: 12,
        width: HllWidth::Hll8,
    };

    fn sketch_of(users: &[u32]) -> DistinctSketch {
        let mut sketch = DistinctSketch::new(SHAPE);
        for u in users {
            sketch.insert(&UserHash::of(&u.to_string()));
        }
        sketch
    }

    fn union_of(sketches: &[&DistinctSketch]) -> DistinctSketch {
        let mut union = DistinctUnion::new(SHAPE);
        for s in sketches {
            union.add(s);
        }
        union.to_sketch()
    }

    fn users() -> impl Strategy<Value = Vec<u32>> {
        // Sizes across the list, set and dense-array modes of the sketch.
        prop_oneof![
            proptest::collection::vec(0u32..50, 0..20),
            proptest::collection::vec(0u32..5_000, 0..2_000),
        ]
    }

    #[test]
    fn exact_for_small_sets() {
        let users: Vec<u32> = (0..11).collect();
        let sketch = sketch_of(&users);
        assert_eq!(sketch.estimate().round(), 11.0);
        let mut union = DistinctUnion::new(SHAPE);
        union.add(&sketch);
        assert_eq!(union.estimate().round(), 11.0);
        assert_eq!(DistinctUnion::new(SHAPE).estimate(), 0.0);
    }

    #[test]
    fn integer_and_text_ids_hash_alike_and_keys_are_stable() {
        // A fixed key: state saved by one build must route the same in the next.
        assert_eq!(UserHash::of("user-1").key, 8_968_379_626_967_066_057);
        assert_ne!(UserHash::of("user-1").key, UserHash::of("user-2").key);
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x00",
            b"garbage bytes here",
            &[2, 1, 7, 12, 3, 8, 0, 0],
        ] {
            assert!(DistinctSketch::from_bytes(bytes).is_err());
        }
    }

    #[test]
    fn an_image_that_would_not_write_back_is_an_error() {
        // The fuzzer's find: a list-mode image with one coupon zeroed still claims three.
        let mut image = sketch_of(&[1, 2, 3]).to_bytes();
        let coupons = image.len() - 3 * 4;
        assert!(DistinctSketch::from_bytes(&image).is_ok());
        image[coupons..coupons + 4].fill(0);
        assert!(DistinctSketch::from_bytes(&image).is_err());
    }

    proptest! {
        #[test]
        fn union_is_commutative(a in users(), b in users()) {
            let (sa, sb) = (sketch_of(&a), sketch_of(&b));
            prop_assert_eq!(union_of(&[&sa, &sb]).estimate(), union_of(&[&sb, &sa]).estimate());
        }

        #[test]
        fn union_is_associative(a in users(), b in users(), c in users()) {
            let (sa, sb, sc) = (sketch_of(&a), sketch_of(&b), sketch_of(&c));
            let left = union_of(&[&union_of(&[&sa, &sb]), &sc]);
            let right = union_of(&[&sa, &union_of(&[&sb, &sc])]);
            prop_assert_eq!(left.estimate(), right.estimate());
        }

        #[test]
        fn union_is_idempotent(a in users()) {
            let sa = sketch_of(&a);
            let once = union_of(&[&sa]);
            prop_assert_eq!(union_of(&[&sa, &sa]).estimate(), once.estimate());
            prop_assert_eq!(union_of(&[&once, &sa]).estimate(), once.estimate());
        }

        #[test]
        fn union_of_parts_is_the_sketch_of_the_whole(a in users(), split in 0usize..4) {
            // Users split across partitions by key, as the router does.
            let parts: Vec<Vec<u32>> = (0..=split)
                .map(|s| a.iter().copied().filter(|u| (*u as usize) % (split + 1) == s).collect())
                .collect();
            let sketches: Vec<DistinctSketch> = parts.iter().map(|p| sketch_of(p)).collect();
            let refs: Vec<&DistinctSketch> = sketches.iter().collect();
            prop_assert_eq!(union_of(&refs).estimate(), union_of(&[&sketch_of(&a)]).estimate());
        }

        #[test]
        fn serialisation_round_trips(a in users()) {
            let sketch = sketch_of(&a);
            let bytes = postcard::to_stdvec(&sketch).unwrap();
            let back: DistinctSketch = postcard::from_bytes(&bytes).unwrap();
            // The image may list coupons in another order; what it counts must not change.
            prop_assert_eq!(back.estimate(), sketch.estimate());
            prop_assert_eq!(back.estimated_bytes(), sketch.estimated_bytes());
            let mut merged = back.clone();
            merged.inner = union_of(&[&back, &sketch]).inner;
            prop_assert_eq!(merged.estimate(), sketch.estimate(), "a sketch unions with its copy");
        }
    }
}
