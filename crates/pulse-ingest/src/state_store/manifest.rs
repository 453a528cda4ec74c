//! The per-partition manifest: which checkpoint object is a partition's current state, and
//! which owner epoch wrote it.
//!
//! Manifests are numbered (`manifest-<sequence>.json`) and only ever *created*, never
//! overwritten: each save of a partition creates the next number with a create-if-absent
//! write (`If-None-Match: *` on S3 and GCS and Azure, a hard link on a local disk). Whoever
//! creates number `n + 1` first owns the partition from `n` on; a writer whose create is
//! refused has lost it. This is the one conditional write every store pulse supports offers
//! (the local file system has no compare-and-swap on an existing object), and it makes the
//! manifests a log: the newest is the truth, the older ones the fallbacks.
//!
//! The epoch says who: a new owner claims a partition on load by creating the next manifest
//! with the epoch one above the newest, pointing at the checkpoint it loaded. A stale owner
//! (paused past its session timeout, then resumed) next tries a number that is taken, reads
//! a higher epoch there, and learns it lost the partition.

use serde::{Deserialize, Serialize};

/// The manifest layout this build writes and reads.
const MANIFEST_VERSION: u32 = 1;
const MANIFEST_PREFIX: &str = "manifest-";
const MANIFEST_SUFFIX: &str = ".json";
const STATE_PREFIX: &str = "state-";
const STATE_SUFFIX: &str = ".bin";
pub const SEQUENCE_DIGITS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Equals the number in the manifest's name.
    pub sequence: u64,
    /// The owner epoch that wrote it: one above the previous owner's.
    pub epoch: u64,
    /// The checkpoint object (a name in the same folder).
    pub checkpoint: String,
    pub saved_at_ms: i64,
    /// The partition count of the partition's topic when this was written (a live group's
    /// topic, or a replay's `--partitions`): state kept by partition is only valid for the
    /// count it was written under.
    pub topic_partitions: Option<u32>,
}

impl Manifest {
    pub fn new(
        sequence: u64,
        epoch: u64,
        checkpoint: String,
        saved_at_ms: i64,
        topic_partitions: Option<u32>,
    ) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            sequence,
            epoch,
            checkpoint,
            saved_at_ms,
            topic_partitions,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }

    /// The manifest in `bytes`, or why it is damaged.
    pub fn read(bytes: &[u8], sequence: u64) -> Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("cannot decode: {e}"))?;
        if manifest.version != MANIFEST_VERSION {
            return Err(format!("manifest version {}", manifest.version));
        }
        if manifest.sequence != sequence {
            return Err(format!("says sequence {}", manifest.sequence));
        }
        if parse_state_name(&manifest.checkpoint).is_none_or(|(at, _)| at > sequence) {
            return Err(format!("names checkpoint {:?}", manifest.checkpoint));
        }
        Ok(manifest)
    }
}

pub fn manifest_name(sequence: u64) -> String {
    format!("{MANIFEST_PREFIX}{sequence:0SEQUENCE_DIGITS$}{MANIFEST_SUFFIX}")
}

pub fn parse_manifest_name(name: &str) -> Option<u64> {
    parse_digits(
        name.strip_prefix(MANIFEST_PREFIX)?
            .strip_suffix(MANIFEST_SUFFIX)?,
    )
}

/// Checkpoint objects carry the epoch too: a fenced writer's object never collides with
/// the new owner's of the same sequence.
pub fn state_name(sequence: u64, epoch: u64) -> String {
    format!("{STATE_PREFIX}{sequence:0SEQUENCE_DIGITS$}-{epoch}{STATE_SUFFIX}")
}

/// (sequence, epoch) of a checkpoint object's name.
pub fn parse_state_name(name: &str) -> Option<(u64, u64)> {
    let middle = name
        .strip_prefix(STATE_PREFIX)?
        .strip_suffix(STATE_SUFFIX)?;
    let (sequence, epoch) = middle.split_once('-')?;
    Some((parse_digits(sequence)?, epoch.parse().ok()?))
}

/// A zero-padded sequence number (also the legacy checkpoint files' names).
pub fn parse_digits(digits: &str) -> Option<u64> {
    if digits.len() != SEQUENCE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_manifests_check_themselves() {
        assert_eq!(parse_manifest_name(&manifest_name(42)), Some(42));
        assert_eq!(parse_state_name(&state_name(7, 3)), Some((7, 3)));
        assert_eq!(parse_manifest_name("manifest-7.json"), None);
        let manifest = Manifest::new(5, 2, state_name(4, 1), 9, Some(12));
        assert_eq!(
            Manifest::read(&manifest.to_bytes(), 5),
            Ok(manifest.clone())
        );
        assert!(Manifest::read(&manifest.to_bytes(), 6).is_err(), "renamed");
        let ahead = Manifest::new(5, 2, state_name(6, 1), 9, None);
        assert!(
            Manifest::read(&ahead.to_bytes(), 5).is_err(),
            "names a later object"
        );
        assert!(Manifest::read(b"{", 5).is_err());
    }
}
