//! The global view across instances: partitions' summaries as records of the summaries
//! topic, and their merge with this instance's own partitions.
//!
//! Each instance publishes, for every partition it owns, its [`Summary`] cut into pieces:
//! one per KPI family (sketch images and exact statistics, [`Summary::pieces`]) and a
//! [`PartitionHead`] (what the router counted of the partition, the publisher's router
//! state). A record's key is `<topic>/<partition>/<piece>`, so a compacted topic keeps the
//! latest of each; its value carries the owner epoch of the partition (the state store's),
//! so that a record of a stale owner is ignored ([`RemoteView::take`]). A [`Publisher`]
//! remembers a hash of what it sent per key and sends only pieces that changed.
//!
//! Why summaries and not the partition's state image: a summary is what the snapshot needs
//! and nothing more (no per-user data leaves the process, which the retention and session
//! tables hold), and it is smaller. What it costs: a summary is folded "as of" the
//! publisher's clock, so a remote partition's windows move with its publisher's publishes,
//! not with the reader's clock — the view lags by at most one publish interval. (On the
//! event-time clock a publisher's clock is the newest event of the stream that the topic
//! tells, [`RemoteView::newest_event_ms`], not only of its own partitions.)
//!
//! Pure: the runtime (pulse-ingest) produces and consumes the records; this module only
//! encodes, decodes and merges them, so a round trip is testable without a broker.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::families::Summary;
use crate::ingest::RouterState;
use crate::partition::{Counters, PartitionInputs};
use crate::sketch::SketchShape;

/// Leading bytes of a record's value: a magic number and the format version (2: the head
/// carries the partition's [`SessionHold`]; a reader ignores records of another version).
const MAGIC: &[u8; 4] = b"PLG\x02";

/// The piece that is not a family's.
pub const HEAD: &str = "head";

/// What a partition's summary needs besides the families' pieces.
///
/// Its first two fields are the part of [`PartitionInputs`] a reader needs; they are laid out
/// as the whole of it was when this format was defined (postcard writes fields one after
/// the other), so the record format did not change when the inputs grew the positions of
/// applied copies, which only the partition's owner needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionHead {
    /// What the router counted of the partition.
    pub counters: Counters,
    /// The newest accepted event time of the partition.
    pub max_event_ms: Option<i64>,
    /// The publisher's router: names of features and breakdown values (summaries hold
    /// their ids), the event-time clock and the watermark.
    pub router: RouterState,
    /// Memory the publisher holds for the partition.
    pub estimated_bytes: u64,
    /// How far the partition lets other instances' session watermarks go.
    pub hold: SessionHold,
}

/// How far a partition lets the session watermark of an instance that does not own it go,
/// as of the point its successor would resume from (its owner's latest durable checkpoint;
/// the latest commit without a state store). Sessions live in one partition, so a remote
/// partition's events never meet this instance's sessions; but the partition may be handed
/// to this instance, which then reads its records again from that point, and a watermark
/// that had run past them would count them too late for sessions. Without holds from the
/// other members, no member of a group could let its watermark move at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionHold {
    /// Nothing known yet (no event read, or no durable checkpoint yet): holds the watermark.
    #[default]
    Unknown,
    /// Still being read; the newest event read up to that point.
    At(i64),
    /// Read to its end: holds nothing.
    Done,
}

impl PartitionHead {
    pub fn new(
        inputs: &PartitionInputs,
        router: RouterState,
        estimated_bytes: u64,
        hold: SessionHold,
    ) -> Self {
        PartitionHead {
            counters: inputs.counters.clone(),
            max_event_ms: inputs.max_event_ms,
            router,
            estimated_bytes,
            hold,
        }
    }
}

/// A record that is not one of the summaries topic's.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    #[error("key {0:?} is not <topic>/<partition>/<piece>")]
    Key(String),
    #[error("record {key:?}: bad magic or unsupported format version")]
    Magic { key: String },
    #[error("record {key:?}: {error}")]
    Corrupt { key: String, error: postcard::Error },
}

/// The key of one piece of a partition's summary.
pub fn record_key(topic: &str, partition: i32, piece: &str) -> String {
    format!("{topic}/{partition}/{piece}")
}

/// `(topic, partition, piece)` of a key. Kafka topic names hold no `/`, piece names neither.
fn parse_key(key: &str) -> Option<(&str, i32, &str)> {
    let (rest, piece) = key.rsplit_once('/')?;
    let (topic, partition) = rest.rsplit_once('/')?;
    Some((topic, partition.parse().ok()?, piece))
}

fn encode_record(epoch: u64, image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 10 + image.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(image);
    out
}

fn decode_record<'a>(key: &str, value: &'a [u8]) -> Result<(u64, &'a [u8]), PieceError> {
    let magic = || PieceError::Magic { key: key.into() };
    let body = value.strip_prefix(MAGIC.as_slice()).ok_or_else(magic)?;
    let (epoch, image) = body.split_first_chunk::<8>().ok_or_else(magic)?;
    Ok((u64::from_le_bytes(*epoch), image))
}

fn hash_of(image: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    image.hash(&mut hasher);
    hasher.finish()
}

/// What an instance has published: per key, the epoch and a hash of the image sent.
#[derive(Debug, Default)]
pub struct Publisher {
    sent: HashMap<String, (u64, u64)>,
}

/// One record to send: its key and value.
pub type Record = (String, Vec<u8>);

impl Publisher {
    /// The records of one owned partition whose piece changed since it was last sent (all
    /// of them at the first publish, or under a new epoch). They count as sent; call
    /// [`Publisher::forget`] for one that could not be delivered.
    pub fn changed(
        &mut self,
        topic: &str,
        partition: i32,
        epoch: u64,
        head: &PartitionHead,
        summary: &Summary,
    ) -> Vec<Record> {
        let head = postcard::to_allocvec(head).expect("writing to a Vec cannot fail");
        std::iter::once((HEAD, head))
            .chain(summary.pieces())
            .filter_map(|(piece, image)| {
                let key = record_key(topic, partition, piece);
                let sent = (epoch, hash_of(&image));
                if self.sent.get(&key) == Some(&sent) {
                    return None;
                }
                self.sent.insert(key.clone(), sent);
                Some((key, encode_record(epoch, &image)))
            })
            .collect()
    }

    /// The record under `key` was not delivered: send its piece again next time.
    pub fn forget(&mut self, key: &str) {
        self.sent.remove(key);
    }
}

/// What a reader made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Applied,
    /// Of an owner epoch older than one already read for the partition: ignored.
    Stale {
        epoch: u64,
        newest: u64,
    },
    /// A family this build does not know (a newer pulse published it): ignored.
    UnknownPiece,
}

/// One partition as the summaries topic tells it.
#[derive(Debug, Clone, Default)]
struct Remote {
    epoch: u64,
    head: Option<PartitionHead>,
    summary: Summary,
}

/// Every partition's latest summary read from the topic, by `(topic, partition)`.
#[derive(Debug, Clone, Default)]
pub struct RemoteView {
    partitions: BTreeMap<(String, i32), Remote>,
}

/// One partition this instance holds: its identity, what its router counted, its summary.
#[derive(Debug, Clone)]
pub struct LocalPartition {
    pub topic: String,
    pub partition: i32,
    pub inputs: PartitionInputs,
    pub summary: Summary,
}

/// The global view's inputs to a snapshot: every partition's summary once, their counters
/// added up, and the router whose names and clock to use.
#[derive(Debug, Clone)]
pub struct Combined {
    pub summaries: Vec<Summary>,
    pub counters: Counters,
    pub router: RouterState,
    /// Partitions whose summary came from the topic.
    pub remote_partitions: usize,
}

impl RemoteView {
    /// Takes one record of the topic in, in the topic's order. A piece replaces the same
    /// piece of the partition; a higher epoch supersedes the partition's older pieces only
    /// as its own arrive, so a dead owner's last summary keeps counting until its successor
    /// publishes (which sends every piece at its first publish).
    pub fn take(&mut self, key: &str, value: &[u8]) -> Result<Taken, PieceError> {
        let (topic, partition, piece) =
            parse_key(key).ok_or_else(|| PieceError::Key(key.into()))?;
        let (epoch, image) = decode_record(key, value)?;
        let corrupt = |error| PieceError::Corrupt {
            key: key.into(),
            error,
        };
        let remote = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_default();
        if epoch < remote.epoch {
            return Ok(Taken::Stale {
                epoch,
                newest: remote.epoch,
            });
        }
        if piece == HEAD {
            remote.head = Some(postcard::from_bytes(image).map_err(corrupt)?);
        } else if !remote.summary.set_piece(piece, image).map_err(corrupt)? {
            return Ok(Taken::UnknownPiece);
        }
        remote.epoch = epoch;
        Ok(Taken::Applied)
    }

    /// The session hold of every partition whose head the topic has told.
    pub fn holds(&self) -> impl Iterator<Item = (&str, i32, SessionHold)> {
        self.partitions
            .iter()
            .filter_map(|((topic, partition), remote)| {
                Some((topic.as_str(), *partition, remote.head.as_ref()?.hold))
            })
    }

    /// The newest event time any publisher has told: its router's clock.
    pub fn newest_event_ms(&self) -> Option<i64> {
        self.partitions
            .values()
            .filter_map(|r| r.head.as_ref()?.router.max_event_ms)
            .max()
    }

    /// Partitions read so far.
    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// The global view: `local` partitions that `owned` says this instance owns, then
    /// every other partition from the topic, or from `local` if the topic has not told it
    /// yet. Counters add (partitions are disjoint). Each instance numbers features and
    /// breakdown values in the order it met them, so another instance's summary is first
    /// remapped by name into a copy of this instance's registries
    /// ([`crate::remap::remap_summary`]); the clock is the newest of all.
    pub fn combine(
        &self,
        local: Vec<LocalPartition>,
        local_router: &RouterState,
        shape: SketchShape,
        owned: impl Fn(&str, i32) -> bool,
    ) -> Combined {
        let mut counters = Counters::default();
        let mut summaries = Vec::new();
        let mut router = local_router.clone();
        let mut taken_locally = std::collections::BTreeSet::new();
        for part in local {
            let remote = self.partitions.get(&(part.topic.clone(), part.partition));
            let remote_has_it = remote.is_some_and(|r| r.head.is_some());
            if owned(&part.topic, part.partition) || !remote_has_it {
                counters.add(&part.inputs.counters);
                summaries.push(part.summary);
                taken_locally.insert((part.topic, part.partition));
            }
        }
        let mut remote_partitions = 0;
        for (key, remote) in &self.partitions {
            let Some(head) = &remote.head else { continue };
            if owned(&key.0, key.1) || taken_locally.contains(key) {
                continue;
            }
            counters.add(&head.counters);
            let mut summary = remote.summary.clone();
            summary.estimated_bytes = head.estimated_bytes;
            crate::remap::remap_summary(&mut summary, &head.router, &mut router, shape);
            summaries.push(summary);
            remote_partitions += 1;
            router.max_event_ms = router.max_event_ms.max(head.router.max_event_ms);
        }
        Combined {
            summaries,
            counters,
            router,
            remote_partitions,
        }
    }
}

#[cfg(test)]
mod tests;
