//! Checkpoints in a directory or an object store: the state of every partition and the
//! Kafka offset it covers, so a restart (clean or not), or another instance taking a
//! partition over, resumes where the last checkpoint left off.
//!
//! # Layout
//!
//! Under the location (`state.url`: a directory, `file://`, `s3://`, `gs://`, `az://`; see
//! [`location`]) each partition has a folder `partitions/<topic>/<partition>/` holding
//! immutable checkpoint objects `state-<sequence>-<epoch>.bin` (a checkpoint file of
//! [`format`] with that one partition, numbered 0, and the router state) and numbered
//! manifests `manifest-<sequence>.json` naming the current one (see [`manifest`]). A save
//! writes the object, then *creates* the next manifest; only a created manifest makes the
//! checkpoint count, so a crash mid-save leaves the previous one current, and a stale owner
//! whose create is refused learns that it lost the partition ([`StateStoreError::Fenced`]).
//! Why per partition: the partition is the unit Kafka hands from one group member to
//! another, so it is the unit a new owner must load and an old one must stop writing.
//!
//! The offset of each partition in a checkpoint is exactly the one whose events its state
//! contains, so Kafka offsets may be committed once `save` has returned: Kafka's committed
//! offsets are progress for lag tools, the checkpoint is the truth.
//!
//! Why keep several and not one: a checkpoint can still be damaged after the fact (a torn
//! sector, a bad copy, a bug); [`StateStore::load`] then falls back to the previous one of
//! that partition instead of losing the month. Falling back is safe because each object
//! pairs its state with its own offset: pulse re-reads from the older offset.
//!
//! # Loading
//!
//! Per partition, manifests are tried newest first. One that does not decode, names a
//! missing object, or whose object is truncated, has a bad magic or a checksum mismatch or
//! does not decode, is skipped with a warning and reported in [`Saved::skipped`]. If a
//! partition has manifests but none is usable, `load` fails
//! ([`StateStoreError::NoValidCheckpoint`]) rather than start it empty: that would silently
//! throw the month away; `--reset-state` ([`StateStore::reset`]) is the explicit way to do
//! that, and it moves the objects aside instead of deleting them. Loading claims every
//! partition it read (the next manifest, epoch one up), so that an older owner still
//! running is fenced.
//!
//! An intact object with another format version, or with KPI families this build does not
//! know, is not damage: a different pulse wrote it (usually a newer one, before a
//! rollback). `load` refuses to start instead of falling back past it, because the older
//! checkpoint would rewind the state without saying so.
//!
//! # Upgrading
//!
//! pulse before object storage wrote whole-engine files `checkpoint-<sequence>.bin` (format
//! 2) straight into the directory. `load` reads those, with the same fallback and refusals,
//! for every partition the per-partition layout lacks (all of them, at the first start after
//! an upgrade); the first complete save then moves them to `upgraded-<unix-ms>/`, kept, not
//! deleted. A first save cut short (a crash) therefore never leaves a partition empty.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use pulse_core::ingest::RouterState;
use pulse_core::partition::PartitionState;
use pulse_core::{EngineSettings, EngineState};

use crate::clock::wall_ms;
use crate::partition_numbers::PartitionNumbers;
use crate::topic_partition::TopicPartition;

mod deadline;
pub(crate) mod decorated;
mod format;
mod location;
mod manifest;
#[cfg(test)]
pub(crate) mod watched;

pub use format::{Checkpoint, FORMAT_VERSION, Unusable, read_checkpoint};
use format::{SHARDED_FORMAT_VERSION, encode};
pub use location::BadLocation;
use manifest::{Manifest, manifest_name, parse_manifest_name, parse_state_name, state_name};

/// Next offset to read, by (topic, partition).
pub type Offsets = BTreeMap<TopicPartition, i64>;

/// Partition count by topic, as the writer knew it.
pub type TopicSizes = BTreeMap<String, u32>;

/// Checkpoints kept per partition by [`StateStore::new`].
pub const DEFAULT_KEEP: usize = 3;
const PARTITIONS: &str = "partitions";
const LEGACY_PREFIX: &str = "checkpoint-";
const LEGACY_SUFFIX: &str = ".bin";
/// How many partitions are saved, or loaded, at once. Object stores reward concurrency
/// (each request is a round trip of tens of milliseconds); a local disk does not mind it;
/// a few keep one instance from flooding a store (or its request rate limit) when the
/// group hands it many partitions at once.
pub const CONCURRENCY: usize = 8;
/// How often `load` retries claiming a partition another instance keeps claiming first.
const CLAIM_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    #[error(transparent)]
    Location(#[from] BadLocation),
    /// Writing a checkpoint failed; every older checkpoint is intact.
    #[error("cannot write checkpoint {location}: {source}")]
    Write {
        location: String,
        source: object_store::Error,
    },
    /// The location or an object in it could not be read (not a question of content).
    #[error("cannot read {location}: {source}")]
    Read {
        location: String,
        source: object_store::Error,
    },
    /// Another owner saved the partition since this one loaded it: it is not ours any more.
    #[error(
        "lost partition {partition}: {location} was written by owner epoch {newer_epoch} \
         while this instance holds epoch {epoch}; its state here is stale and is not saved"
    )]
    Fenced {
        partition: TopicPartition,
        location: String,
        epoch: u64,
        newer_epoch: u64,
    },
    /// A partition this instance did not load already has checkpoints: saving would
    /// overwrite another owner's (or an older) history.
    #[error(
        "{location} already holds checkpoints of partition {partition} that this process did \
         not load: another pulse owns it, or it is an older history; save to an empty \
         location, or move the old state aside with `pulse run --reset-state`"
    )]
    NotLoaded {
        partition: TopicPartition,
        location: String,
    },
    /// Checkpoints exist but none is usable.
    #[error(
        "no usable checkpoint in {location}: {}; pass --reset-state to move them aside and start empty",
        list(.skipped)
    )]
    NoValidCheckpoint {
        location: String,
        skipped: Vec<Skipped>,
    },
    /// The newest intact checkpoint is pulse 0.1's, kept by user-hash shard.
    #[error(
        "checkpoint {location} has format version 1 (pulse 0.1), which kept state by user-hash shard; \
         this pulse keeps it by Kafka partition and cannot split the old sketches by partition. \
         Either rebuild the history from a copy of the events with `pulse replay --input FILE \
         --partitions N --save-state DIR` (N = the topic's partition count), or run pulse 0.1 \
         until you are ready, or pass --reset-state to move the old checkpoints aside and \
         start empty (the 30-day windows then fill again over 30 days)"
    )]
    ShardedFormat { location: String },
    /// The newest intact checkpoint holds KPI families this build does not know.
    #[error(
        "checkpoint {location} holds KPI families this pulse does not know ({}): a newer pulse \
         wrote it; run that one, or pass --reset-state to move the checkpoints aside and \
         start empty",
        .families.join(", ")
    )]
    UnknownFamilies {
        location: String,
        families: Vec<String>,
    },
    /// The newest intact checkpoint was written in a format this build does not read.
    #[error(
        "checkpoint {location} has format version {found} but this pulse reads only versions 2 to {supported}: \
         run the pulse that wrote it, or pass --reset-state to move the checkpoints aside and start empty"
    )]
    UnsupportedVersion {
        location: String,
        found: u16,
        supported: u16,
    },
    /// The partitions of one topic were saved under different partition counts.
    #[error(
        "the saved partitions of topic {topic} were written when it had different partition \
         counts ({counts}): state kept by partition cannot be mixed across a partition-count \
         change; rebuild it with `pulse replay --save-state URL --partitions N` (N = the \
         topic's count now), or pass --reset-state to start empty"
    )]
    MixedPartitionCounts { topic: String, counts: String },
    /// `reset` could not move an object aside.
    #[error("cannot move checkpoint {location} aside: {source}")]
    Discard {
        location: String,
        source: object_store::Error,
    },
}

fn list(skipped: &[Skipped]) -> String {
    let items: Vec<String> = skipped.iter().map(Skipped::to_string).collect();
    items.join(", ")
}

/// A checkpoint `load` passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub location: String,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.location, self.reason)
    }
}

/// What was saved: the engine, which partition each of its partition numbers is, the
/// offsets it covers, and where it came from.
#[derive(Debug)]
pub struct Saved {
    /// The partitions, under the newest checkpoint's router; see [`Saved::gathered`].
    pub engine: EngineState,
    /// The router each of `engine.partitions` was saved with (the same one throughout
    /// for a state one instance saved; another per instance for a group's).
    pub routers: Vec<RouterState>,
    pub numbers: PartitionNumbers,
    pub offsets: Offsets,
    /// The newest save among the partitions.
    pub saved_at_ms: i64,
    /// The partition count of each topic when it was saved (absent for the files of pulse
    /// before object storage, which did not record it).
    pub topic_sizes: TopicSizes,
    /// What was read: the legacy checkpoint file, or the location.
    pub location: String,
    /// Newer checkpoints that were damaged, newest first per partition.
    pub skipped: Vec<Skipped>,
}

/// One partition's newest usable checkpoint, claimed ([`StateStore::claim`]).
#[derive(Debug)]
pub struct Taken {
    /// The router of the instance that saved it: the registries its ids refer to.
    pub router: RouterState,
    /// Its state (`None`: saved before it held any, e.g. a replay's empty partition).
    pub state: Option<PartitionState>,
    /// The next offset to read (`None` for a replayed history: the group's offset applies).
    pub offset: Option<i64>,
    /// Its topic's partition count when it was saved.
    pub topic_partitions: Option<u32>,
    /// The owner epoch this instance holds it under now.
    pub epoch: u64,
    /// Newer checkpoints that were damaged and passed over.
    pub skipped: Vec<Skipped>,
}

impl Saved {
    /// The engine state with every partition's feature and dimension-value ids moved into
    /// the newest router's registries ([`pulse_core::remap`]): partitions saved by
    /// different members of a group number them differently.
    pub fn gathered(self, settings: &EngineSettings) -> EngineState {
        let parts = self
            .routers
            .into_iter()
            .zip(self.engine.partitions)
            .collect();
        pulse_core::remap::gather(settings, self.engine.router, parts)
    }
}

/// The epoch this store owns a partition under, and the newest manifest it created.
#[derive(Debug, Clone, Copy)]
struct Claim {
    epoch: u64,
    sequence: u64,
}

/// A location of checkpoints. Cheap to clone (clones share the claims, i.e. the partitions
/// this instance owns); holds no open file or connection of its own.
#[derive(Debug, Clone)]
pub struct StateStore {
    objects: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    display: String,
    dir: Option<PathBuf>,
    keep: usize,
    claims: Arc<Mutex<HashMap<TopicPartition, Claim>>>,
    /// Partitions whose save was refused since [`Self::take_refused`] was last called.
    refused: Arc<Mutex<Vec<TopicPartition>>>,
    /// Set when what was loaded came (partly) from the files of pulse before object
    /// storage: once a save has written every partition in the new layout, they are moved
    /// aside, so that files still present mean an upgrade not yet completed.
    upgrading: Arc<AtomicBool>,
}

impl StateStore {
    /// A store in the directory `dir` (created at the first save) keeping
    /// [`DEFAULT_KEEP`] checkpoints per partition.
    pub fn new(dir: impl AsRef<Path>) -> StateStore {
        StateStore::with_keep(dir, DEFAULT_KEEP)
    }

    /// A store in a directory keeping the newest `keep` checkpoints (at least 1).
    pub fn with_keep(dir: impl AsRef<Path>, keep: usize) -> StateStore {
        StateStore::from_opened(location::local(dir.as_ref()), keep)
    }

    /// A store at `location`: a directory or a URL (`file://`, `s3://`, `gs://`, `az://`)
    /// whose credentials, region and endpoint come from `env` (`AWS_…`, `GOOGLE_…`,
    /// `AZURE_…`; the binary passes its environment).
    pub fn open(
        location: &str,
        keep: usize,
        env: &[(String, String)],
    ) -> Result<StateStore, StateStoreError> {
        Ok(StateStore::from_opened(
            location::open(location, env)?,
            keep,
        ))
    }

    /// A store over `objects` (keeping [`DEFAULT_KEEP`]), for tests that put something
    /// between the store and its objects.
    #[cfg(test)]
    pub(crate) fn over(objects: Arc<dyn ObjectStore>) -> StateStore {
        let opened = location::Opened {
            objects,
            prefix: ObjectPath::from("pulse"),
            display: "test://pulse".to_owned(),
            dir: None,
        };
        StateStore::from_opened(opened, DEFAULT_KEEP)
    }

    fn from_opened(opened: location::Opened, keep: usize) -> StateStore {
        StateStore {
            objects: opened.objects,
            prefix: opened.prefix,
            display: opened.display,
            dir: opened.dir,
            keep: keep.max(1),
            claims: Arc::default(),
            refused: Arc::default(),
            upgrading: Arc::default(),
        }
    }

    /// The same store with every request to it bounded by `limit` (`state.timeout`): one
    /// that has not answered by then, retries included, fails (see [`deadline`]).
    pub fn with_timeout(mut self, limit: Duration) -> StateStore {
        let deadline = deadline::Deadline(limit);
        self.objects = Arc::new(decorated::Decorated::new(self.objects, deadline));
        self
    }

    /// Whether what was read last came (partly) from the single-file checkpoints of pulse
    /// before object storage, which the next complete save moves aside.
    pub fn upgrading(&self) -> bool {
        self.upgrading.load(Ordering::Acquire)
    }

    /// The location, for messages: a directory or a URL.
    pub fn location(&self) -> &str {
        &self.display
    }

    /// The owner epoch this store holds `partition` under (loaded or first saved), if any:
    /// what the summaries it publishes carry, so that a stale owner's are ignored.
    pub fn epoch(&self, partition: &TopicPartition) -> Option<u64> {
        let claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        claims.get(partition).map(|claim| claim.epoch)
    }

    /// The directory, for a local store.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Writes a checkpoint of every partition in `engine` (and of every partition in
    /// `offsets` that has no state yet) and prunes each beyond `keep`; returns the bytes
    /// written. `sizes` is each topic's partition count as the caller knows it. On error
    /// no partition's previous checkpoint has changed, though some partitions may have
    /// advanced: that is safe, because each partition's checkpoint pairs its state with its
    /// own offset, and the offsets handed to Kafka only follow a save that returned `Ok`.
    pub async fn save(
        &self,
        engine: EngineState,
        numbers: &PartitionNumbers,
        offsets: &Offsets,
        sizes: &TopicSizes,
        saved_at_ms: i64,
    ) -> Result<u64, StateStoreError> {
        let EngineState { router, partitions } = engine;
        let mut states: BTreeMap<TopicPartition, PartitionState> = BTreeMap::new();
        for mut state in partitions {
            let key = numbers
                .key_of(state.partition as usize)
                .cloned()
                // Every routed partition was numbered; a gap would be a bug, kept rather
                // than lost.
                .unwrap_or_else(|| TopicPartition::new("", state.partition as i32));
            state.partition = 0;
            states.insert(key, state);
        }
        let mut keys: Vec<TopicPartition> = states.keys().cloned().collect();
        keys.extend(offsets.keys().filter(|k| !states.contains_key(*k)).cloned());
        let saves = keys.into_iter().map(|key| {
            let one = EngineState {
                router: router.clone(),
                partitions: states.remove(&key).into_iter().collect(),
            };
            let offset = offsets.get(&key).copied();
            let size = sizes.get(&key.topic).copied();
            async move {
                self.save_partition(&key, one, offset, size, saved_at_ms)
                    .await
            }
        });
        // A few at a time (see CONCURRENCY). Every partition's save runs to its end, even
        // after another failed: none is cut off between its object and its manifest.
        let results: Vec<Result<u64, StateStoreError>> = futures::stream::iter(saves)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let written = results.into_iter().collect::<Result<Vec<u64>, _>>()?;
        if self.upgrading.swap(false, Ordering::AcqRel) {
            self.finish_upgrade().await;
        }
        Ok(written.iter().sum())
    }

    async fn save_partition(
        &self,
        key: &TopicPartition,
        engine: EngineState,
        offset: Option<i64>,
        size: Option<u32>,
        saved_at_ms: i64,
    ) -> Result<u64, StateStoreError> {
        let folder = self.folder(key);
        let held = self.claim_of(key);
        let claim = match held {
            Some(claim) => claim,
            None => {
                if !self.manifests(&folder).await?.is_empty() {
                    self.refuse(key);
                    return Err(StateStoreError::NotLoaded {
                        partition: key.clone(),
                        location: self.show(&folder),
                    });
                }
                Claim {
                    epoch: 1,
                    sequence: 0,
                }
            }
        };
        let sequence = claim.sequence + 1;
        let numbers = PartitionNumbers::from_keys([key.clone()]);
        let offsets: Offsets = offset.map(|o| (key.clone(), o)).into_iter().collect();
        let bytes = encode(sequence, saved_at_ms, &engine, &numbers, &offsets);
        let length = bytes.len() as u64;
        let name = state_name(sequence, claim.epoch);
        let object = folder.clone().join(name.as_str());
        self.objects
            .put(&object, PutPayload::from(bytes))
            .await
            .map_err(|source| StateStoreError::Write {
                location: self.show(&object),
                source,
            })?;
        let manifest = Manifest::new(sequence, claim.epoch, name.clone(), saved_at_ms, size);
        match self.create_manifest(&folder, &manifest).await {
            Ok(()) => {}
            Err(StateStoreError::Write {
                source: source @ object_store::Error::AlreadyExists { .. },
                location,
            }) => match self.read_manifest(&folder, sequence).await {
                // Our own: an earlier save's create landed but its answer was lost (cut off
                // by `state.timeout`, or the connection dropped after the store applied
                // it). It names the object just written again with this save's bytes, so
                // this save is current. No other owner can hold this epoch: a claim takes
                // the epoch above every one it saw, with a create-if-absent write.
                Ok(landed) if landed.epoch == claim.epoch && landed.checkpoint == name => {
                    tracing::info!(partition = %key, sequence, "An earlier save's manifest had landed unanswered; it names this save.");
                }
                Ok(_) => {
                    // Never made current: ours alone to remove.
                    let _ = self.objects.delete(&object).await;
                    return Err(self.fenced(key, &folder, claim.epoch).await);
                }
                // Whose it is stays unknown: nothing is removed, and the next save asks again.
                Err(_) => return Err(StateStoreError::Write { location, source }),
            },
            Err(error) => return Err(error),
        }
        {
            let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            match claims.get(key) {
                // Claimed again while this save ran (the partition lost, then given back
                // here): the newer claim stands, and this save is the past it starts from.
                Some(current) if current.epoch != claim.epoch => {}
                // Released while this save ran: no longer this instance's to write.
                None if held.is_some() => {}
                _ => {
                    claims.insert(
                        key.clone(),
                        Claim {
                            epoch: claim.epoch,
                            sequence,
                        },
                    );
                }
            }
        }
        self.prune(&folder).await;
        Ok(length)
    }

    /// The error for a refused manifest: the partition is someone else's now. The claim the
    /// save was made under is dropped, so that this store never writes the partition again
    /// without loading it; a newer claim (the partition given back here while the save ran)
    /// is kept: the refusal was about an ownership already over.
    async fn fenced(
        &self,
        key: &TopicPartition,
        folder: &ObjectPath,
        epoch: u64,
    ) -> StateStoreError {
        {
            let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            if claims.get(key).is_some_and(|c| c.epoch == epoch) {
                claims.remove(key);
            }
        }
        self.refuse(key);
        let newer_epoch = match self.manifests(folder).await {
            Ok(manifests) => match manifests.last() {
                Some(&newest) => self
                    .read_manifest(folder, newest)
                    .await
                    .map_or(epoch, |m| m.epoch),
                None => epoch,
            },
            Err(_) => epoch,
        };
        tracing::warn!(partition = %key, epoch, newer_epoch, "Lost the partition to another owner; not saving it.");
        StateStoreError::Fenced {
            partition: key.clone(),
            location: self.show(folder),
            epoch,
            newer_epoch,
        }
    }

    /// The newest usable checkpoint of every partition, claimed for this instance; `None`
    /// when the location holds no checkpoint. See the module documentation for what is
    /// skipped and what refused.
    pub async fn load(&self) -> Result<Option<Saved>, StateStoreError> {
        self.read(true).await
    }

    /// One partition's newest usable checkpoint, claimed for this instance (the next
    /// manifest, one owner epoch up, so that its previous owner is fenced); `None` if no
    /// member ever saved it. For a partition the consumer group has just assigned here.
    pub async fn claim(&self, key: &TopicPartition) -> Result<Option<Taken>, StateStoreError> {
        let folder = self.folder(key);
        let mut skipped = Vec::new();
        let Some((checkpoint, topic_partitions)) = self
            .load_partition(key, &folder, true, &mut skipped)
            .await?
        else {
            return Ok(None);
        };
        let epoch = self.claim_of(key).map_or(0, |c| c.epoch);
        let EngineState { router, partitions } = checkpoint.engine;
        Ok(Some(Taken {
            offset: checkpoint.offsets.get(key).copied(),
            state: partitions.into_iter().next(),
            router,
            topic_partitions,
            epoch,
            skipped,
        }))
    }

    fn refuse(&self, key: &TopicPartition) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.clone());
    }

    /// The partitions whose saves were refused since the last call (each once), for the
    /// caller to drop those it still holds no claim on: another instance owns them.
    pub fn take_refused(&self) -> Vec<TopicPartition> {
        let mut refused =
            std::mem::take(&mut *self.refused.lock().unwrap_or_else(|e| e.into_inner()));
        refused.sort();
        refused.dedup();
        refused
    }

    /// Forgets this instance's claim on a partition it gave up: a save of it is refused
    /// from now on, until it is claimed again.
    pub fn release(&self, key: &TopicPartition) {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// What [`Self::load`] would start from, without claiming anything: for tools and
    /// tests that look at the state of a running pulse, which loading would fence.
    pub async fn inspect(&self) -> Result<Option<Saved>, StateStoreError> {
        self.read(false).await
    }

    async fn read(&self, claim: bool) -> Result<Option<Saved>, StateStoreError> {
        let folders = self.partition_folders().await?;
        let mut loaded = Vec::with_capacity(folders.len());
        let mut skipped = Vec::new();
        for (key, folder) in folders {
            let partition = self.load_partition(&key, &folder, claim, &mut skipped);
            if let Some(partition) = partition.await? {
                loaded.push((key, partition));
            }
        }
        // Files of pulse before object storage still present: an upgrade whose first save
        // did not complete (a crash, a failed write). Their partitions that the new layout
        // lacks come from them, never start empty.
        let legacy = self.legacy_files().await?;
        if !legacy.is_empty() {
            let old = self.load_legacy(legacy).await?;
            self.upgrading.store(true, Ordering::Release);
            if loaded.is_empty() {
                return Ok(Some(old));
            }
            skipped.extend(old.skipped.iter().cloned());
            for (key, partition) in split(old) {
                if !loaded.iter().any(|(k, _)| *k == key) {
                    loaded.push((key, partition));
                }
            }
            loaded.sort_by(|a, b| a.0.cmp(&b.0));
        }
        if loaded.is_empty() {
            return Ok(None);
        }
        combine(loaded, skipped, self.display.clone()).map(Some)
    }

    /// After the first complete save in the per-partition layout: the single-file
    /// checkpoints move to `upgraded-<unix-ms>/` (kept, not deleted). A failure costs
    /// nothing but a merge on the next load, so it is logged, not returned.
    async fn finish_upgrade(&self) {
        let moved = match self.legacy_files().await {
            Ok(files) => {
                let files: Vec<ObjectPath> = files.into_iter().map(|(_, p)| p).collect();
                self.move_aside(&files, "upgraded").await
            }
            Err(error) => Err(error),
        };
        match moved {
            Ok(aside) => {
                tracing::info!(to = %self.show(&aside), "Upgrade complete: the single-file checkpoints were moved aside.")
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot move the single-file checkpoints aside; they stay in use for partitions the new layout lacks.")
            }
        }
    }

    /// One partition's newest usable checkpoint, claimed if `claim`; `None` if it has no
    /// manifest.
    async fn load_partition(
        &self,
        key: &TopicPartition,
        folder: &ObjectPath,
        claim: bool,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Option<(Checkpoint, Option<u32>)>, StateStoreError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let manifests = self.manifests(folder).await?;
            let Some(&newest) = manifests.last() else {
                return Ok(None);
            };
            let mut passed = Vec::new();
            let mut usable = None;
            let mut newest_epoch = 0;
            for &sequence in manifests.iter().rev() {
                let location = self.show(&folder.clone().join(manifest_name(sequence)));
                let manifest = match self.read_manifest(folder, sequence).await {
                    Ok(manifest) => manifest,
                    Err(reason) => {
                        passed.push(Skipped { location, reason });
                        continue;
                    }
                };
                newest_epoch = newest_epoch.max(manifest.epoch);
                let object = folder.clone().join(manifest.checkpoint.as_str());
                let location = self.show(&object);
                let bytes = match self.objects.get(&object).await {
                    Ok(got) => got.bytes().await,
                    Err(e) => Err(e),
                };
                let bytes = match bytes {
                    Ok(bytes) => bytes,
                    Err(object_store::Error::NotFound { .. }) => {
                        passed.push(Skipped {
                            location,
                            reason: "missing".to_owned(),
                        });
                        continue;
                    }
                    Err(source) => return Err(StateStoreError::Read { location, source }),
                };
                match readable(&bytes, location.clone())? {
                    Ok(checkpoint) => {
                        usable = Some((manifest, checkpoint));
                        break;
                    }
                    Err(reason) => {
                        tracing::warn!(%location, %reason, "Skipping a damaged checkpoint; trying the previous one.");
                        passed.push(Skipped { location, reason });
                    }
                }
            }
            let Some((manifest, checkpoint)) = usable else {
                return Err(StateStoreError::NoValidCheckpoint {
                    location: self.show(folder),
                    skipped: passed,
                });
            };
            if !claim {
                skipped.extend(passed);
                return Ok(Some((checkpoint, manifest.topic_partitions)));
            }
            // The claim: the next manifest, one epoch above any seen, on the same object.
            let claim = Claim {
                epoch: newest_epoch.max(manifest.epoch) + 1,
                sequence: newest + 1,
            };
            let claimed = Manifest::new(
                claim.sequence,
                claim.epoch,
                manifest.checkpoint.clone(),
                manifest.saved_at_ms,
                manifest.topic_partitions,
            );
            match self.create_manifest(folder, &claimed).await {
                Ok(()) => {
                    self.claims
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.clone(), claim);
                    skipped.extend(passed);
                    return Ok(Some((checkpoint, manifest.topic_partitions)));
                }
                // Someone saved or claimed it meanwhile: read again from its newest.
                Err(StateStoreError::Write {
                    source: object_store::Error::AlreadyExists { .. },
                    ..
                }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StateStoreError::Fenced {
            partition: key.clone(),
            location: self.show(folder),
            epoch: 0,
            newer_epoch: 0,
        })
    }

    /// The whole-engine files of pulse before object storage (see "Upgrading").
    /// The newest usable of `files` (at least one); a legacy `state.bin` of the format
    /// before checkpoints (never released) is not among them, and so ignored.
    async fn load_legacy(
        &self,
        mut files: Vec<(u64, ObjectPath)>,
    ) -> Result<Saved, StateStoreError> {
        files.sort_unstable();
        let mut skipped = Vec::new();
        for (sequence, path) in files.into_iter().rev() {
            let location = self.show(&path);
            let bytes = self
                .objects
                .get(&path)
                .await
                .map_err(|source| StateStoreError::Read {
                    location: location.clone(),
                    source,
                })?
                .bytes()
                .await
                .map_err(|source| StateStoreError::Read {
                    location: location.clone(),
                    source,
                })?;
            match readable(&bytes, location.clone())? {
                Ok(checkpoint) => {
                    if checkpoint.sequence != sequence {
                        tracing::warn!(%location, stored = checkpoint.sequence, "Checkpoint was renamed; using it anyway.");
                    }
                    // One engine, one router for every partition.
                    let routers =
                        vec![checkpoint.engine.router.clone(); checkpoint.engine.partitions.len()];
                    return Ok(Saved {
                        engine: checkpoint.engine,
                        routers,
                        numbers: checkpoint.numbers,
                        offsets: checkpoint.offsets,
                        saved_at_ms: checkpoint.saved_at_ms,
                        topic_sizes: TopicSizes::new(),
                        location,
                        skipped,
                    });
                }
                Err(reason) => {
                    tracing::warn!(%location, %reason, "Skipping a damaged checkpoint; trying the previous one.");
                    skipped.push(Skipped { location, reason });
                }
            }
        }
        Err(StateStoreError::NoValidCheckpoint {
            location: self.display.clone(),
            skipped,
        })
    }

    /// For `--reset-state`: moves every checkpoint and manifest (and the files of pulse
    /// before object storage) under a new `discarded-<unix-ms>/` prefix (nothing is
    /// deleted) and returns how many objects were moved. Claims are dropped: the next save
    /// starts each partition again at sequence 1.
    pub async fn reset(&self) -> Result<usize, StateStoreError> {
        let mut doomed: Vec<ObjectPath> = self
            .list_all(&self.prefix.clone().join(PARTITIONS))
            .await?
            .into_iter()
            .collect();
        doomed.extend(self.legacy_files().await?.into_iter().map(|(_, p)| p));
        if doomed.is_empty() {
            return Ok(0);
        }
        let aside = self.move_aside(&doomed, "discarded").await?;
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        tracing::info!(count = doomed.len(), to = %self.show(&aside), "Moved checkpoints aside.");
        Ok(doomed.len())
    }

    /// Moves `paths` under a new `<name>-<unix-ms>/` prefix, keeping their relative paths;
    /// returns that prefix.
    async fn move_aside(
        &self,
        paths: &[ObjectPath],
        name: &str,
    ) -> Result<ObjectPath, StateStoreError> {
        let aside = self.unused_prefix(&format!("{name}-{}", wall_ms())).await?;
        for path in paths {
            let relative: Vec<_> = path
                .prefix_match(&self.prefix)
                .expect("listed under the prefix")
                .collect();
            let target = relative
                .iter()
                .fold(aside.clone(), |p, part| p.join(part.clone()));
            self.objects.rename(path, &target).await.map_err(|source| {
                StateStoreError::Discard {
                    location: self.show(path),
                    source,
                }
            })?;
        }
        Ok(aside)
    }

    /// `name`, or `name-2`, `-3`… if something is stored under it, so two resets in the
    /// same millisecond never mix their objects.
    async fn unused_prefix(&self, name: &str) -> Result<ObjectPath, StateStoreError> {
        let mut candidate = self.prefix.clone().join(name);
        for attempt in 2.. {
            if self.list_all(&candidate).await?.is_empty() || attempt > 1000 {
                break;
            }
            candidate = self.prefix.clone().join(format!("{name}-{attempt}"));
        }
        Ok(candidate)
    }

    /// The whole-engine files of pulse before object storage, by sequence (unsorted).
    async fn legacy_files(&self) -> Result<Vec<(u64, ObjectPath)>, StateStoreError> {
        let listed = match self.objects.list_with_delimiter(Some(&self.prefix)).await {
            Ok(listed) => listed.objects,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(source) => {
                return Err(StateStoreError::Read {
                    location: self.display.clone(),
                    source,
                });
            }
        };
        Ok(listed
            .into_iter()
            .filter_map(|o| Some((o.location.filename().and_then(parse_legacy)?, o.location)))
            .collect())
    }

    fn claim_of(&self, key: &TopicPartition) -> Option<Claim> {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    fn folder(&self, key: &TopicPartition) -> ObjectPath {
        self.prefix
            .clone()
            .join(PARTITIONS)
            .join(key.topic.as_str())
            .join(key.partition.to_string())
    }

    fn show(&self, path: &ObjectPath) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => {
                let parts: Vec<String> = parts.map(|p| p.as_ref().to_owned()).collect();
                format!("{}/{}", self.display, parts.join("/"))
            }
            None => path.to_string(),
        }
    }

    async fn list_all(&self, under: &ObjectPath) -> Result<Vec<ObjectPath>, StateStoreError> {
        self.objects
            .list(Some(under))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(e),
            })
            .map_err(|source| StateStoreError::Read {
                location: self.show(under),
                source,
            })
    }

    /// Every `partitions/<topic>/<partition>/` folder.
    async fn partition_folders(
        &self,
    ) -> Result<Vec<(TopicPartition, ObjectPath)>, StateStoreError> {
        let mut folders: Vec<(TopicPartition, ObjectPath)> = Vec::new();
        for path in self.list_all(&self.prefix.clone().join(PARTITIONS)).await? {
            let parts: Vec<String> = path
                .prefix_match(&self.prefix.clone().join(PARTITIONS))
                .expect("listed under the prefix")
                .map(|p| p.as_ref().to_owned())
                .collect();
            if let [topic, partition, _name] = parts.as_slice()
                && let Ok(partition) = partition.parse::<i32>()
            {
                let key = TopicPartition::new(topic.as_str(), partition);
                if !folders.iter().any(|(k, _)| *k == key) {
                    let folder = self.folder(&key);
                    folders.push((key, folder));
                }
            }
        }
        folders.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(folders)
    }

    /// Manifest sequences in `folder`, ascending.
    async fn manifests(&self, folder: &ObjectPath) -> Result<Vec<u64>, StateStoreError> {
        let mut sequences: Vec<u64> = self
            .list_all(folder)
            .await?
            .iter()
            .filter_map(|p| p.filename().and_then(parse_manifest_name))
            .collect();
        sequences.sort_unstable();
        Ok(sequences)
    }

    async fn read_manifest(&self, folder: &ObjectPath, sequence: u64) -> Result<Manifest, String> {
        let got = self
            .objects
            .get(&folder.clone().join(manifest_name(sequence)))
            .await
            .map_err(|e| e.to_string())?;
        let bytes = got.bytes().await.map_err(|e| e.to_string())?;
        Manifest::read(&bytes, sequence)
    }

    async fn create_manifest(
        &self,
        folder: &ObjectPath,
        manifest: &Manifest,
    ) -> Result<(), StateStoreError> {
        let path = folder.clone().join(manifest_name(manifest.sequence));
        self.objects
            .put_opts(
                &path,
                PutPayload::from(manifest.to_bytes()),
                PutMode::Create.into(),
            )
            .await
            .map(drop)
            .map_err(|source| StateStoreError::Write {
                location: self.show(&path),
                source,
            })
    }

    /// Removes manifests beyond `keep` and the checkpoint objects no kept manifest names.
    /// A failure here costs space, not data, so it is logged and not returned.
    async fn prune(&self, folder: &ObjectPath) {
        let listed = match self.list_all(folder).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "Cannot list checkpoints to prune.");
                return;
            }
        };
        let mut manifests: Vec<u64> = listed
            .iter()
            .filter_map(|p| p.filename().and_then(parse_manifest_name))
            .collect();
        manifests.sort_unstable();
        let excess = manifests.len().saturating_sub(self.keep);
        // The oldest object a kept manifest names. Not simply the oldest kept manifest's: a
        // claim made after falling back past a damaged checkpoint names an object older
        // than the manifest before it.
        let mut referenced = None;
        for &sequence in &manifests[excess..] {
            if let Ok(manifest) = self.read_manifest(folder, sequence).await
                && let Some((at, _)) = parse_state_name(&manifest.checkpoint)
            {
                referenced = Some(referenced.map_or(at, |r: u64| r.min(at)));
            }
        }
        let Some(referenced) = referenced else {
            return; // No kept manifest is readable: keep everything for `load` to sort out.
        };
        let doomed = listed.into_iter().filter(|p| match p.filename() {
            Some(name) => {
                parse_manifest_name(name).is_some_and(|s| s < manifests[excess])
                    || parse_state_name(name).is_some_and(|(s, _)| s < referenced)
            }
            None => false,
        });
        for path in doomed {
            if let Err(error) = self.objects.delete(&path).await {
                tracing::warn!(location = %self.show(&path), %error, "Cannot remove an old checkpoint.");
            }
        }
    }
}

/// A checkpoint's bytes: `Ok(Ok(..))` usable, `Ok(Err(reason))` damaged (fall back),
/// `Err(..)` intact but refused.
fn readable(bytes: &[u8], location: String) -> Result<Result<Checkpoint, String>, StateStoreError> {
    match read_checkpoint(bytes) {
        Ok(checkpoint) => Ok(Ok(checkpoint)),
        Err(Unusable::Damaged(reason)) => Ok(Err(reason)),
        Err(Unusable::UnknownFamilies(families)) => {
            Err(StateStoreError::UnknownFamilies { location, families })
        }
        Err(Unusable::Version(SHARDED_FORMAT_VERSION)) => {
            Err(StateStoreError::ShardedFormat { location })
        }
        Err(Unusable::Version(found)) => Err(StateStoreError::UnsupportedVersion {
            location,
            found,
            supported: FORMAT_VERSION,
        }),
    }
}

/// One engine from per-partition checkpoints: partitions numbered in (topic, partition)
/// order. The router (feature registry, event-time clock, watermark) is the newest
/// checkpoint's: registries only grow, so the newest names every feature the older ones do.
fn combine(
    loaded: Vec<(TopicPartition, (Checkpoint, Option<u32>))>,
    skipped: Vec<Skipped>,
    location: String,
) -> Result<Saved, StateStoreError> {
    let mut topic_sizes = TopicSizes::new();
    let mut counts: BTreeMap<String, std::collections::BTreeSet<u32>> = BTreeMap::new();
    for (key, (_, size)) in &loaded {
        if let Some(size) = size {
            counts.entry(key.topic.clone()).or_default().insert(*size);
            topic_sizes.insert(key.topic.clone(), *size);
        }
    }
    if let Some((topic, sizes)) = counts.into_iter().find(|(_, sizes)| sizes.len() > 1) {
        let counts: Vec<String> = sizes.iter().map(u32::to_string).collect();
        return Err(StateStoreError::MixedPartitionCounts {
            topic,
            counts: counts.join(", "),
        });
    }
    let newest = loaded
        .iter()
        .max_by_key(|(_, (c, _))| c.saved_at_ms)
        .map(|(_, (c, _))| c.saved_at_ms)
        .unwrap_or_default();
    let mut router = None;
    let mut partitions = Vec::new();
    let mut routers = Vec::new();
    let mut offsets = Offsets::new();
    let mut keys = Vec::new();
    for (number, (key, (checkpoint, _))) in loaded.into_iter().enumerate() {
        offsets.extend(checkpoint.offsets);
        for mut state in checkpoint.engine.partitions {
            state.partition = number as u32;
            partitions.push(state);
            routers.push(checkpoint.engine.router.clone());
        }
        if router.is_none() && checkpoint.saved_at_ms == newest {
            router = Some(checkpoint.engine.router);
        }
        keys.push(key);
    }
    Ok(Saved {
        engine: EngineState {
            router: router.expect("one checkpoint is the newest"),
            partitions,
        },
        routers,
        numbers: PartitionNumbers::from_keys(keys),
        offsets,
        saved_at_ms: newest,
        topic_sizes,
        location,
        skipped,
    })
}

/// A whole-engine checkpoint cut into one per partition, as [`combine`] takes them.
fn split(saved: Saved) -> Vec<(TopicPartition, (Checkpoint, Option<u32>))> {
    let Saved {
        engine,
        numbers,
        offsets,
        saved_at_ms,
        ..
    } = saved;
    let mut states: HashMap<u32, PartitionState> = engine
        .partitions
        .into_iter()
        .map(|state| (state.partition, state))
        .collect();
    numbers
        .keys()
        .iter()
        .enumerate()
        .map(|(number, key)| {
            let state = states.remove(&(number as u32)).map(|mut state| {
                state.partition = 0;
                state
            });
            let checkpoint = Checkpoint {
                sequence: 0,
                saved_at_ms,
                numbers: PartitionNumbers::from_keys([key.clone()]),
                offsets: offsets
                    .get(key)
                    .map(|&o| (key.clone(), o))
                    .into_iter()
                    .collect(),
                engine: EngineState {
                    router: engine.router.clone(),
                    partitions: state.into_iter().collect(),
                },
            };
            (key.clone(), (checkpoint, None))
        })
        .collect()
}

fn parse_legacy(name: &str) -> Option<u64> {
    manifest::parse_digits(
        name.strip_prefix(LEGACY_PREFIX)?
            .strip_suffix(LEGACY_SUFFIX)?,
    )
}

#[cfg(test)]
mod tests;
