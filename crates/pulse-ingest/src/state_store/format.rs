//! The checkpoint file format: bytes in, [`Checkpoint`] out, and back; no I/O.
//!
//! # File format (version 5)
//!
//! All integers little-endian. The 26-byte header keeps this layout in every version, so
//! any reader can tell an intact file of another version from a damaged one:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `PULSECKP` (ASCII) |
//! | 8..10 | format version, `u16` (this module writes `5` and reads `5`, `4`, `3` and `2`) |
//! | 10..18 | body length in bytes, `u64`; the file ends exactly after the body |
//! | 18..26 | checksum, `u64`: XXH3-64 (seed 0, default secret) of bytes 0..18 followed by the body, i.e. of every byte of the file except the checksum itself |
//! | 26.. | body |
//!
//! Covering the version in the checksum means a flipped bit there reads as damage, not as a
//! file from another pulse. The version 5 body is a manifest followed by one entry per
//! partition, all in one [postcard] (1.x wire format) encoding of this struct, fields in
//! this order:
//!
//! ```text
//! struct Manifest {
//!     sequence: u64,          // varint; equals the number in the file name
//!     saved_at_ms: i64,       // zigzag varint; wall clock at save, Unix ms
//!     router: bytes,          // varint length + postcard RouterState (clock, features)
//!     families: Vec<String>,  // the KPI families the states hold (families::NAMES)
//!     partitions: Vec<Entry>, // the engine's partitions, by number (0, 1, 2, ...)
//! }
//! struct Entry {
//!     topic: String,             // the Kafka partition this is (a replay's virtual
//!     partition: i32,            //   partition p is partition p of the first topic)
//!     next_offset: Option<i64>,  // next offset to read; None if none was read yet
//!     state: Option<bytes>,      // postcard PartitionState; None if it saw no record
//! }
//! ```
//!
//! A `PartitionState` holds its KPI state as one image per family, by name
//! (`Vec<(String, bytes)>`, see `pulse_core::families`): a family added later is absent from
//! older checkpoints and starts empty; a manifest naming a family this build does not know
//! is refused ([`Unusable::UnknownFamilies`]) rather than taken for damage.
//!
//! Version 4 is version 5 with sessions by value kept apart: the sessions family's open
//! events without their dimension values, and the breakdowns family with a session table
//! of its own (format 5 keeps one table, its events tagged with their values, see
//! `pulse_core::partition_v4`); it is still read, the one table taking the values of the
//! other. Version 3 is version 4 without, at the end of a partition's inputs, the positions of the
//! upstream records whose copies it applied (format 4 added them for `kafka.repartition`,
//! see `pulse_core::partition_v3` and `pulse_core::upstream`); it is still read, with none.
//! Version 2 is version 3 with eleven rejection reasons in a partition's counters instead
//! of seventeen (format 3 added the outcome reasons, see `pulse_core::partition_v2`); it is
//! still read, with the new reasons at 0.
//!
//! Version 1 (pulse 0.1) kept state by user-hash shard, not by partition: its sketches
//! cannot be split by partition, so a version 1 directory is refused with what to do
//! (`StateStoreError::ShardedFormat`) rather than converted into partitions that would not
//! match the topic's.
//!

use pulse_core::EngineState;
use pulse_core::partition::PartitionState;
use pulse_core::partition_v2::PartitionStateV2;
use pulse_core::partition_v3::PartitionStateV3;
use pulse_core::partition_v4::PartitionStateV4;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

use super::Offsets;
use crate::partition_numbers::PartitionNumbers;
use crate::topic_partition::TopicPartition;

/// The format version this build writes.
pub const FORMAT_VERSION: u16 = 5;
/// The version before sessions by value moved into the sessions family: still read.
const SESSIONS_V4_FORMAT_VERSION: u16 = 4;
/// The version before the positions of applied copies: still read.
const UPSTREAM_V3_FORMAT_VERSION: u16 = 3;
/// The version before the outcome rejection reasons: still read.
const COUNTERS_V2_FORMAT_VERSION: u16 = 2;
/// pulse 0.1's format: one engine image, state by user-hash shard.
pub(super) const SHARDED_FORMAT_VERSION: u16 = 1;

const MAGIC: &[u8; 8] = b"PULSECKP";
pub(super) const HEADER_LEN: usize = 26;
/// The bytes the checksum covers before the body: magic, version and body length.
const CHECKSUMMED_HEADER: usize = 18;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest<'a> {
    sequence: u64,
    saved_at_ms: i64,
    /// Borrowed from the file's bytes when loading; written as one byte string (the same
    /// postcard wire format as a sequence of `u8`, without a call per byte).
    #[serde(borrow, serialize_with = "as_byte_string")]
    router: &'a [u8],
    /// The KPI families whose state the entries hold: a checkpoint naming one this build
    /// does not know was written by a newer pulse and is refused, not taken for damage.
    families: Vec<String>,
    #[serde(borrow)]
    partitions: Vec<Entry<'a>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry<'a> {
    topic: String,
    partition: i32,
    next_offset: Option<i64>,
    #[serde(borrow, serialize_with = "as_optional_byte_string")]
    state: Option<&'a [u8]>,
}

fn as_optional_byte_string<S: serde::Serializer>(
    bytes: &Option<&[u8]>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(bytes) => serializer.serialize_some(&ByteString(bytes)),
        None => serializer.serialize_none(),
    }
}

/// A byte slice that serialises as one byte string.
struct ByteString<'a>(&'a [u8]);

impl Serialize for ByteString<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

fn as_byte_string<S: serde::Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

pub(super) fn checksum(header: &[u8], body: &[u8]) -> u64 {
    let mut hasher = Xxh3Default::new();
    hasher.update(&header[..CHECKSUMMED_HEADER]);
    hasher.update(body);
    hasher.digest()
}

pub(super) fn encode(
    sequence: u64,
    saved_at_ms: i64,
    engine: &EngineState,
    numbers: &PartitionNumbers,
    offsets: &Offsets,
) -> Vec<u8> {
    let router = postcard::to_allocvec(&engine.router).expect("writing to a Vec cannot fail");
    let count = engine
        .partitions
        .iter()
        .map(|p| p.partition as usize + 1)
        .max()
        .unwrap_or(0)
        .max(numbers.len());
    let mut states: Vec<Option<Vec<u8>>> = vec![None; count];
    for partition in &engine.partitions {
        states[partition.partition as usize] =
            Some(postcard::to_allocvec(partition).expect("writing to a Vec cannot fail"));
    }
    let key = |number: usize| {
        // Every routed partition was numbered; a gap would be a bug, kept rather than lost.
        numbers
            .key_of(number)
            .cloned()
            .unwrap_or_else(|| TopicPartition::new("", number as i32))
    };
    let mut keys: Vec<TopicPartition> = (0..count).map(key).collect();
    // Partitions with a position but no record yet still resume where they were.
    let numbered: std::collections::HashSet<&TopicPartition> = keys.iter().collect();
    let unnumbered: Vec<TopicPartition> = offsets
        .keys()
        .filter(|k| !numbered.contains(k))
        .cloned()
        .collect();
    keys.extend(unnumbered);
    let partitions = keys
        .iter()
        .enumerate()
        .map(|(number, at)| Entry {
            topic: at.topic.clone(),
            partition: at.partition,
            next_offset: offsets.get(at).copied(),
            state: states.get(number).and_then(|s| s.as_deref()),
        })
        .collect();
    let manifest = Manifest {
        sequence,
        saved_at_ms,
        router: &router,
        families: pulse_core::families::NAMES
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
        partitions,
    };
    let size: usize = states.iter().flatten().map(Vec::len).sum();
    // One buffer: header placeholder, then the body, then the header filled in.
    let mut out = Vec::with_capacity(HEADER_LEN + router.len() + size + 64 * (keys.len() + 1));
    out.extend_from_slice(&[0; HEADER_LEN]);
    postcard::to_io(&manifest, &mut out).expect("writing to a Vec cannot fail");
    let body_len = (out.len() - HEADER_LEN) as u64;
    out[0..8].copy_from_slice(MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[10..18].copy_from_slice(&body_len.to_le_bytes());
    let sum = checksum(&out[..HEADER_LEN], &out[HEADER_LEN..]);
    out[18..26].copy_from_slice(&sum.to_le_bytes());
    out
}

/// One checkpoint file's contents.
#[derive(Debug)]
pub struct Checkpoint {
    pub sequence: u64,
    pub saved_at_ms: i64,
    pub numbers: PartitionNumbers,
    pub offsets: Offsets,
    pub engine: EngineState,
}

/// Why a checkpoint file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Truncated, corrupt or undecodable: try the previous checkpoint.
    Damaged(String),
    /// Intact, but another format version: refuse.
    Version(u16),
    /// Intact, but holding KPI families this build does not know (a newer pulse wrote it):
    /// refuse.
    UnknownFamilies(Vec<String>),
}

/// Reads one checkpoint file's bytes with every check [`super::StateStore::load`] makes, and no
/// I/O; public so that the fuzz targets (`fuzz/`) reach the exact parser `load` uses.
pub fn read_checkpoint(bytes: &[u8]) -> Result<Checkpoint, Unusable> {
    let damaged = Unusable::Damaged;
    if !bytes.starts_with(MAGIC) {
        return Err(damaged(if MAGIC.starts_with(bytes) {
            format!("truncated to {} bytes", bytes.len())
        } else {
            "bad magic: not a pulse checkpoint".to_owned()
        }));
    }
    if bytes.len() < HEADER_LEN {
        return Err(damaged(format!(
            "truncated to {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let (header, body) = bytes.split_at(HEADER_LEN);
    let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
    let version = u16::from_le_bytes([header[8], header[9]]);
    let body_len = u64_at(10);
    let stored = u64_at(18);
    let actual = body.len() as u64;
    if actual < body_len {
        return Err(damaged(format!(
            "truncated: the header announces {body_len} body bytes, the file holds {actual}"
        )));
    }
    if actual > body_len {
        return Err(damaged(format!(
            "{} unexpected bytes after the {body_len}-byte body",
            actual - body_len
        )));
    }
    let computed = checksum(header, body);
    if computed != stored {
        return Err(damaged(format!(
            "checksum mismatch: stored {stored:016x}, computed {computed:016x}"
        )));
    }
    if ![
        FORMAT_VERSION,
        SESSIONS_V4_FORMAT_VERSION,
        UPSTREAM_V3_FORMAT_VERSION,
        COUNTERS_V2_FORMAT_VERSION,
    ]
    .contains(&version)
    {
        return Err(Unusable::Version(version));
    }
    let manifest: Manifest<'_> = postcard::from_bytes(body)
        .map_err(|e| damaged(format!("cannot decode the checkpoint manifest: {e}")))?;
    let unknown: Vec<String> = manifest
        .families
        .iter()
        .filter(|name| !pulse_core::families::NAMES.contains(&name.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(Unusable::UnknownFamilies(unknown));
    }
    let router = pulse_core::ingest::read_router_image(manifest.router)
        .map_err(|e| damaged(format!("cannot decode the router state: {e}")))?;
    let mut partitions = Vec::new();
    let mut offsets = Offsets::new();
    let mut keys = Vec::with_capacity(manifest.partitions.len());
    for (number, entry) in manifest.partitions.into_iter().enumerate() {
        let at = TopicPartition::new(entry.topic, entry.partition);
        if let Some(offset) = entry.next_offset {
            offsets.insert(at.clone(), offset);
        }
        if let Some(state) = entry.state {
            let state = match version {
                COUNTERS_V2_FORMAT_VERSION => {
                    postcard::from_bytes::<PartitionStateV2>(state).map(|v2| {
                        PartitionState::from(PartitionStateV4::from(PartitionStateV3::from(v2)))
                    })
                }
                UPSTREAM_V3_FORMAT_VERSION => postcard::from_bytes::<PartitionStateV3>(state)
                    .map(|v3| PartitionState::from(PartitionStateV4::from(v3))),
                SESSIONS_V4_FORMAT_VERSION => {
                    postcard::from_bytes::<PartitionStateV4>(state).map(PartitionState::from)
                }
                _ => postcard::from_bytes::<PartitionState>(state),
            }
            .map_err(|e| damaged(format!("cannot decode the state of {at}: {e}")))?;
            if state.partition as usize != number {
                return Err(damaged(format!(
                    "the state of {at} says partition {}, its entry is {number}",
                    state.partition
                )));
            }
            partitions.push(state);
        }
        keys.push(at);
    }
    let listed = keys.len();
    let numbers = PartitionNumbers::from_keys(keys);
    if numbers.len() != listed {
        return Err(damaged("a partition is listed twice".to_owned()));
    }
    let engine = EngineState { router, partitions };
    engine
        .validate()
        .map_err(|e| damaged(format!("implausible engine state: {e}")))?;
    Ok(Checkpoint {
        sequence: manifest.sequence,
        saved_at_ms: manifest.saved_at_ms,
        numbers,
        offsets,
        engine,
    })
}
