//! Checkpoints on disk: the state of every partition and the Kafka offset it covers, so a
//! restart (clean or not) resumes where the last checkpoint left off.
//!
//! The store owns one directory and nothing else. Each [`StateStore::save`] writes a new
//! file `checkpoint-<sequence>.bin` (sequence zero-padded to 20 digits, one more than the
//! newest file present) and then prunes all but the newest `keep` (default 3). A file appears
//! under its final name only once complete: it is written to `checkpoint-<sequence>.bin.tmp`
//! in the same directory, `fsync`ed, renamed, and the directory `fsync`ed. A crash or a failed
//! write (full disk, read-only file system, permissions) therefore never touches an older
//! checkpoint, and a failed write removes its temporary file. The offset of each partition in
//! a checkpoint is exactly the one whose events its state contains, so Kafka offsets may be
//! committed once `save` has returned.
//!
//! Why keep several and not one: a checkpoint can still be damaged after the fact (a torn
//! sector, a bad copy, a bug); [`StateStore::load`] then falls back to the previous one
//! instead of losing the month. Falling back is safe because each file pairs its state with
//! its own offsets: pulse re-reads from the older offsets.
//!
//! # Loading
//!
//! Files are tried newest first. One that is truncated, too long, has a bad magic or a
//! checksum mismatch, or whose body or engine image does not decode, is skipped with a
//! warning and reported in [`Saved::skipped`]. If checkpoint files exist but none is usable,
//! `load` fails ([`StateStoreError::NoValidCheckpoint`]) rather than start empty: starting
//! empty would silently throw the month away; `--reset-state` ([`StateStore::reset`]) is the
//! explicit way to do that, and it moves the files aside instead of deleting them.
//!
//! An intact file with another format version is not damage: a different pulse wrote it
//! (usually a newer one, before a rollback). `load` refuses to start
//! ([`StateStoreError::UnsupportedVersion`]) instead of falling back past it, because the
//! older checkpoint would rewind the state without saying so, and the next `keep` saves would
//! prune the newer files for good. A legacy `state.bin` of the pre-checkpoint format (never
//! released) is ignored.
//!
//! This is synchronous std I/O; async callers run it on a blocking thread.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use pulse_core::EngineState;

use crate::clock::wall_ms;
use crate::partition_numbers::PartitionNumbers;
use crate::topic_partition::TopicPartition;

mod format;

pub use format::{Checkpoint, FORMAT_VERSION, Unusable, read_checkpoint};
use format::{SHARDED_FORMAT_VERSION, encode};

/// Next offset to read, by (topic, partition).
pub type Offsets = BTreeMap<TopicPartition, i64>;

/// Checkpoints kept by [`StateStore::new`].
pub const DEFAULT_KEEP: usize = 3;
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".bin";
const TEMPORARY_SUFFIX: &str = ".bin.tmp";
const SEQUENCE_DIGITS: usize = 20;
const LEGACY_FILE: &str = "state.bin";

#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    /// Writing a checkpoint failed; every older checkpoint is intact.
    #[error("cannot write checkpoint {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// The directory or a file in it could not be read (not a question of content).
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// Checkpoint files exist but none is usable.
    #[error(
        "no usable checkpoint in {dir}: {}; pass --reset-state to move them aside and start empty",
        list(.skipped)
    )]
    NoValidCheckpoint { dir: PathBuf, skipped: Vec<Skipped> },
    /// The newest intact checkpoint is pulse 0.1's, kept by user-hash shard.
    #[error(
        "checkpoint {path} has format version 1 (pulse 0.1), which kept state by user-hash shard; \
         this pulse keeps it by Kafka partition and cannot split the old sketches by partition. \
         Either rebuild the history from a copy of the events with `pulse replay --input FILE \
         --partitions N --save-state DIR` (N = the topic's partition count), or run pulse 0.1 \
         until you are ready, or pass --reset-state to move the old checkpoints aside and \
         start empty (the 30-day windows then fill again over 30 days)"
    )]
    ShardedFormat { path: PathBuf },
    /// The newest intact checkpoint holds KPI families this build does not know.
    #[error(
        "checkpoint {path} holds KPI families this pulse does not know ({}): a newer pulse \
         wrote it; run that one, or pass --reset-state to move the checkpoints aside and \
         start empty",
        .families.join(", ")
    )]
    UnknownFamilies {
        path: PathBuf,
        families: Vec<String>,
    },
    /// The newest intact checkpoint was written in a format this build does not read.
    #[error(
        "checkpoint {path} has format version {found} but this pulse reads only versions 2 to {supported}: \
         run the pulse that wrote it, or pass --reset-state to move the checkpoints aside and start empty"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u16,
        supported: u16,
    },
    /// `reset` could not move a file aside.
    #[error("cannot move checkpoint {path} aside: {source}")]
    Discard { path: PathBuf, source: io::Error },
}

fn list(skipped: &[Skipped]) -> String {
    let items: Vec<String> = skipped.iter().map(Skipped::to_string).collect();
    items.join(", ")
}

/// A checkpoint `load` passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.reason)
    }
}

/// What was saved: the engine, which partition each of its partition numbers is, the
/// offsets it covers, and where it came from.
#[derive(Debug)]
pub struct Saved {
    pub engine: EngineState,
    pub numbers: PartitionNumbers,
    pub offsets: Offsets,
    pub saved_at_ms: i64,
    /// The checkpoint file this was read from.
    pub path: PathBuf,
    pub sequence: u64,
    /// Newer checkpoints that were damaged, newest first.
    pub skipped: Vec<Skipped>,
}

/// A directory of checkpoints. Cheap to clone; holds no open file.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    keep: usize,
}

impl StateStore {
    /// A store in `dir` (created at the first save) keeping [`DEFAULT_KEEP`] checkpoints.
    pub fn new(dir: impl Into<PathBuf>) -> StateStore {
        StateStore::with_keep(dir, DEFAULT_KEEP)
    }

    /// A store keeping the newest `keep` checkpoints (at least 1).
    pub fn with_keep(dir: impl Into<PathBuf>, keep: usize) -> StateStore {
        StateStore {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    /// The checkpoint directory.
    pub fn path(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Writes a new checkpoint atomically, prunes the oldest beyond `keep`, and returns the
    /// new file's path. On error nothing older has changed and no temporary file remains.
    pub fn save(
        &self,
        engine: &EngineState,
        numbers: &PartitionNumbers,
        offsets: &Offsets,
        saved_at_ms: i64,
    ) -> Result<PathBuf, StateStoreError> {
        fs::create_dir_all(&self.dir).map_err(|source| StateStoreError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let existing = self.checkpoints().map_err(|source| StateStoreError::Read {
            path: self.dir.clone(),
            source,
        })?;
        let sequence = existing.last().map_or(1, |(newest, _)| newest + 1);
        let path = self.dir.join(file_name(sequence));
        let bytes = encode(sequence, saved_at_ms, engine, numbers, offsets);
        write_durably(&self.dir, &path, &bytes).map_err(|source| StateStoreError::Write {
            path: path.clone(),
            source,
        })?;
        self.prune();
        Ok(path)
    }

    /// The newest usable checkpoint; `None` when the directory is missing or holds no
    /// checkpoint file. See the module documentation for what is skipped and what refused.
    pub fn load(&self) -> Result<Option<Saved>, StateStoreError> {
        let files = self.checkpoints().map_err(|source| StateStoreError::Read {
            path: self.dir.clone(),
            source,
        })?;
        if files.is_empty() {
            let legacy = self.dir.join(LEGACY_FILE);
            if legacy.exists() {
                tracing::info!(path = %legacy.display(), "Ignoring a state file of the old, unreleased format.");
            }
            return Ok(None);
        }
        let mut skipped = Vec::new();
        for (sequence, path) in files.into_iter().rev() {
            let bytes = fs::read(&path).map_err(|source| StateStoreError::Read {
                path: path.clone(),
                source,
            })?;
            match read_checkpoint(&bytes) {
                Ok(checkpoint) => {
                    if checkpoint.sequence != sequence {
                        tracing::warn!(path = %path.display(), stored = checkpoint.sequence, "Checkpoint was renamed; using it anyway.");
                    }
                    return Ok(Some(Saved {
                        engine: checkpoint.engine,
                        numbers: checkpoint.numbers,
                        offsets: checkpoint.offsets,
                        saved_at_ms: checkpoint.saved_at_ms,
                        path,
                        sequence: checkpoint.sequence,
                        skipped,
                    }));
                }
                Err(Unusable::UnknownFamilies(families)) => {
                    return Err(StateStoreError::UnknownFamilies { path, families });
                }
                Err(Unusable::Version(SHARDED_FORMAT_VERSION)) => {
                    return Err(StateStoreError::ShardedFormat { path });
                }
                Err(Unusable::Version(found)) => {
                    return Err(StateStoreError::UnsupportedVersion {
                        path,
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                Err(Unusable::Damaged(reason)) => {
                    tracing::warn!(path = %path.display(), %reason, "Skipping a damaged checkpoint; trying the previous one.");
                    skipped.push(Skipped { path, reason });
                }
            }
        }
        Err(StateStoreError::NoValidCheckpoint {
            dir: self.dir.clone(),
            skipped,
        })
    }

    /// For `--reset-state`: moves every checkpoint into a new `discarded-<unix-ms>/`
    /// subfolder (nothing is deleted) and returns how many were moved. The next save starts
    /// again at sequence 1.
    pub fn reset(&self) -> Result<usize, StateStoreError> {
        let files = self.checkpoints().map_err(|source| StateStoreError::Read {
            path: self.dir.clone(),
            source,
        })?;
        if files.is_empty() {
            return Ok(0);
        }
        let now_ms = wall_ms();
        let aside = create_unique_dir(&self.dir, &format!("discarded-{now_ms}"))
            .map_err(|(path, source)| StateStoreError::Discard { path, source })?;
        for (_, path) in &files {
            let target = aside.join(path.file_name().expect("listed files have names"));
            fs::rename(path, &target).map_err(|source| StateStoreError::Discard {
                path: path.clone(),
                source,
            })?;
        }
        for dir in [&aside, &self.dir] {
            sync_dir(dir).map_err(|source| StateStoreError::Discard {
                path: dir.clone(),
                source,
            })?;
        }
        tracing::info!(count = files.len(), to = %aside.display(), "Moved checkpoints aside.");
        Ok(files.len())
    }

    /// Checkpoint files by ascending sequence; none when the directory does not exist.
    fn checkpoints(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry?;
            if let Some(sequence) = entry.file_name().to_str().and_then(parse_sequence)
                && entry.file_type()?.is_file()
            {
                files.push((sequence, entry.path()));
            }
        }
        files.sort_unstable();
        Ok(files)
    }

    /// Removes checkpoints beyond `keep` and temporary files a crash left behind. A failure
    /// here costs disk space, not data, so it is logged and not returned.
    fn prune(&self) {
        let mut doomed: Vec<PathBuf> = match self.checkpoints() {
            Ok(files) => {
                let excess = files.len().saturating_sub(self.keep);
                files.into_iter().take(excess).map(|(_, p)| p).collect()
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "Cannot list checkpoints to prune.");
                return;
            }
        };
        if let Ok(entries) = fs::read_dir(&self.dir) {
            doomed.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(TEMPORARY_SUFFIX))
            }));
        }
        for path in doomed {
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "Cannot remove an old checkpoint.");
            }
        }
    }
}

fn file_name(sequence: u64) -> String {
    format!("{PREFIX}{sequence:0SEQUENCE_DIGITS$}{SUFFIX}")
}

fn parse_sequence(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != SEQUENCE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Temporary file, write, fsync, rename, fsync the directory. On error before the rename
/// the temporary file is removed (best effort: on a read-only file system it was never made).
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(error) = written {
        if let Err(remove) = fs::remove_file(&temporary)
            && remove.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %temporary.display(), error = %remove, "Cannot remove a temporary checkpoint file.");
        }
        return Err(error);
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir/name`, or `dir/name-2`, `-3`… if it exists, so two resets in the same
/// millisecond never mix their files.
fn create_unique_dir(dir: &Path, name: &str) -> Result<PathBuf, (PathBuf, io::Error)> {
    let mut candidate = dir.join(name);
    for attempt in 2.. {
        match fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => {
                candidate = dir.join(format!("{name}-{attempt}"));
            }
            Err(e) => return Err((candidate, e)),
        }
    }
    unreachable!("the loop returns by attempt 1000")
}

#[cfg(test)]
mod tests {
    use super::format::{HEADER_LEN, checksum};
    use super::*;
    use pulse_core::{Engine, EngineSettings};
    use std::process::Command;

    const WALL_MS: i64 = 1_900_000_000_000;
    const DAY_MS: i64 = 86_400_000;

    /// An engine that has seen `users` users over two days.
    fn engine(users: u32) -> Engine {
        let mut engine = Engine::new(EngineSettings::default(), WALL_MS);
        for user in 0..users {
            for (day, event) in [(2, "login"), (1, "feature_used")] {
                let ts = WALL_MS - day * DAY_MS + i64::from(user);
                let line = format!(
                    r#"{{"user_id":"u{user}","event":"{event}","feature":"f{}","ts":{ts}}}"#,
                    user % 7
                );
                engine.ingest(line.as_bytes(), None);
            }
        }
        engine
    }

    fn numbers() -> PartitionNumbers {
        PartitionNumbers::virtual_partitions("events", 1)
    }

    fn offsets(next: i64) -> Offsets {
        [
            (TopicPartition::new("events", 0), next),
            (TopicPartition::new("events", 3), 7),
        ]
        .into_iter()
        .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Saves `count` checkpoints with offsets 1..=count and returns their paths.
    fn save_n(store: &StateStore, count: i64) -> Vec<PathBuf> {
        let state = engine(3).state();
        (1..=count)
            .map(|i| store.save(&state, &numbers(), &offsets(i), i).unwrap())
            .collect()
    }

    /// Recomputes the checksum after a deliberate edit of the header.
    fn reseal(bytes: &mut [u8]) {
        let (header, body) = bytes.split_at(HEADER_LEN);
        let sum = checksum(header, body);
        bytes[18..26].copy_from_slice(&sum.to_le_bytes());
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state"));
        let mut engine = engine(50);
        let path = store
            .save(&engine.state(), &numbers(), &offsets(42), 7)
            .unwrap();
        assert_eq!(
            path,
            dir.path()
                .join("state")
                .join("checkpoint-00000000000000000001.bin")
        );
        let saved = store.load().unwrap().unwrap();
        assert_eq!(saved.offsets, offsets(42));
        assert_eq!(saved.saved_at_ms, 7);
        assert_eq!((saved.sequence, saved.path), (1, path));
        assert!(saved.skipped.is_empty());
        // Not the bytes: the session table is a hash map, its order differs per instance.
        let mut restored = Engine::restore(EngineSettings::default(), WALL_MS, saved.engine);
        assert_eq!(restored.snapshot(), engine.snapshot());
        assert_eq!(
            names(&store.path()),
            ["checkpoint-00000000000000000001.bin"],
            "the temporary file was renamed away"
        );
    }

    #[test]
    fn keeps_only_the_newest_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        save_n(&StateStore::new(dir.path()), 5);
        assert_eq!(
            names(dir.path()),
            [
                "checkpoint-00000000000000000003.bin",
                "checkpoint-00000000000000000004.bin",
                "checkpoint-00000000000000000005.bin"
            ]
        );
        let store = StateStore::with_keep(dir.path(), 1);
        save_n(&store, 2);
        assert_eq!(names(dir.path()), ["checkpoint-00000000000000000007.bin"]);
        assert_eq!(store.load().unwrap().unwrap().offsets, offsets(2));
    }

    #[test]
    fn numbering_continues_across_store_instances() {
        let dir = tempfile::tempdir().unwrap();
        save_n(&StateStore::new(dir.path()), 4);
        let again = StateStore::new(dir.path());
        let path = again
            .save(&engine(1).state(), &numbers(), &offsets(9), 9)
            .unwrap();
        assert!(path.ends_with("checkpoint-00000000000000000005.bin"));
        assert_eq!(again.load().unwrap().unwrap().sequence, 5);
    }

    #[test]
    fn a_truncated_newest_checkpoint_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let paths = save_n(&store, 2);
        let bytes = fs::read(&paths[1]).unwrap();
        for cut in [bytes.len() - 1, HEADER_LEN + 1, 20, 4, 0] {
            fs::write(&paths[1], &bytes[..cut]).unwrap();
            let saved = store.load().unwrap().unwrap();
            assert_eq!(saved.offsets, offsets(1), "cut at {cut}");
            assert_eq!(saved.skipped.len(), 1);
            assert_eq!(saved.skipped[0].path, paths[1]);
            assert!(
                saved.skipped[0].reason.contains("truncated"),
                "{}",
                saved.skipped[0]
            );
        }
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum_and_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let paths = save_n(&store, 2);
        let mut bytes = fs::read(&paths[1]).unwrap();
        let middle = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
        bytes[middle] ^= 0x01;
        fs::write(&paths[1], &bytes).unwrap();
        let saved = store.load().unwrap().unwrap();
        assert_eq!((saved.sequence, saved.offsets), (1, offsets(1)));
        assert!(
            saved.skipped[0].reason.contains("checksum mismatch"),
            "{}",
            saved.skipped[0]
        );
    }

    #[test]
    fn a_bad_magic_or_extra_bytes_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let paths = save_n(&store, 3);
        let mut bytes = fs::read(&paths[2]).unwrap();
        bytes[0] = b'X';
        fs::write(&paths[2], &bytes).unwrap();
        let mut longer = fs::read(&paths[1]).unwrap();
        longer.extend_from_slice(b"junk");
        fs::write(&paths[1], &longer).unwrap();
        let saved = store.load().unwrap().unwrap();
        assert_eq!(saved.sequence, 1);
        let reasons: Vec<&str> = saved.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons[0].contains("bad magic"), "{reasons:?}");
        assert!(reasons[1].contains("4 unexpected bytes"), "{reasons:?}");
    }

    #[test]
    fn an_intact_body_that_does_not_decode_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let paths = save_n(&store, 2);
        let mut bytes = fs::read(&paths[1]).unwrap();
        bytes.truncate(HEADER_LEN);
        bytes.extend_from_slice(&[0xff; 16]);
        bytes[10..18].copy_from_slice(&16u64.to_le_bytes());
        reseal(&mut bytes);
        fs::write(&paths[1], &bytes).unwrap();
        let saved = store.load().unwrap().unwrap();
        assert_eq!(saved.sequence, 1);
        assert!(
            saved.skipped[0].reason.contains("cannot decode"),
            "{}",
            saved.skipped[0]
        );
    }

    /// A checkpoint holding a KPI family this build does not know was written by a newer
    /// pulse: refused by name, not taken for damage (falling back past it would rewind).
    #[test]
    fn a_checkpoint_with_an_unknown_family_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let paths = save_n(&store, 2);
        let mut bytes = fs::read(&paths[1]).unwrap();
        let (known, newer) = (b"stickiness".as_slice(), b"retentions".as_slice());
        let at = bytes
            .windows(known.len())
            .position(|w| w == known)
            .expect("the manifest names its families");
        bytes[at..at + newer.len()].copy_from_slice(newer);
        reseal(&mut bytes);
        fs::write(&paths[1], &bytes).unwrap();
        let error = store.load().unwrap_err();
        let StateStoreError::UnknownFamilies { families, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(families, &["retentions"]);
        assert!(error.to_string().contains("--reset-state"), "{error}");
    }

    /// A checkpoint of format 2 (before the outcome rejection reasons; the fuzz seed of that
    /// format, a replay on 2 shards) loads, with the new reasons at 0, and saves as format 3
    /// with the same state.
    #[test]
    fn a_format_2_checkpoint_still_loads() {
        let bytes = include_bytes!("testdata/format-2.bin");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2);
        let old = format::read_checkpoint(bytes).unwrap();
        let counters = pulse_core::partition::total_counters(old.engine.inputs().iter());
        assert!(counters.accepted > 0 && counters.rejected_total() > 0);
        assert_eq!(
            counters.rejected[pulse_core::Rejection::InvalidScore as usize],
            0
        );
        let again = encode(
            old.sequence,
            old.saved_at_ms,
            &old.engine,
            &old.numbers,
            &old.offsets,
        );
        assert_eq!(u16::from_le_bytes([again[8], again[9]]), FORMAT_VERSION);
        let new = format::read_checkpoint(&again).unwrap();
        assert_eq!(format!("{:?}", new.engine), format!("{:?}", old.engine));
    }

    #[test]
    fn an_intact_checkpoint_of_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let paths = save_n(&store, 2);
        let mut bytes = fs::read(&paths[1]).unwrap();
        bytes[8..10].copy_from_slice(&4u16.to_le_bytes());
        // Without a new checksum the changed version is damage: fall back.
        fs::write(&paths[1], &bytes).unwrap();
        assert_eq!(store.load().unwrap().unwrap().sequence, 1);
        // With it, another pulse wrote the file: refuse, do not fall back past it.
        reseal(&mut bytes);
        fs::write(&paths[1], &bytes).unwrap();
        let error = store.load().unwrap_err();
        assert!(
            matches!(
                error,
                StateStoreError::UnsupportedVersion {
                    found: 4,
                    supported: 3,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&paths[1].display().to_string()),
            "{message}"
        );
        assert!(message.contains("--reset-state"), "{message}");
    }

    #[test]
    fn refuses_to_start_when_every_checkpoint_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let paths = save_n(&store, 2);
        fs::write(&paths[0], b"PULSECKP").unwrap();
        fs::write(&paths[1], b"garbage").unwrap();
        let error = store.load().unwrap_err();
        let StateStoreError::NoValidCheckpoint { skipped, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(skipped.len(), 2);
        let message = error.to_string();
        for path in &paths {
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        assert!(message.contains("--reset-state"), "{message}");
    }

    #[test]
    fn no_directory_or_no_checkpoint_is_no_state() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            StateStore::new(dir.path().join("missing"))
                .load()
                .unwrap()
                .is_none()
        );
        fs::write(dir.path().join(LEGACY_FILE), b"PULSEST1 old").unwrap();
        fs::write(dir.path().join("notes.txt"), b"").unwrap();
        assert!(StateStore::new(dir.path()).load().unwrap().is_none());
        assert_eq!(
            StateStore::new(dir.path().join("missing")).reset().unwrap(),
            0
        );
    }

    #[test]
    fn reset_moves_checkpoints_aside_without_losing_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        save_n(&store, 2);
        assert_eq!(store.reset().unwrap(), 2);
        assert!(store.load().unwrap().is_none());
        let folders = names(dir.path());
        assert_eq!(folders.len(), 1);
        assert!(folders[0].starts_with("discarded-"), "{folders:?}");
        let aside = StateStore::new(dir.path().join(&folders[0]));
        assert_eq!(aside.load().unwrap().unwrap().offsets, offsets(2));
        // A new history starts at 1, and a second reset never mixes with the first.
        save_n(&store, 1);
        assert_eq!(store.reset().unwrap(), 1);
        assert_eq!(names(dir.path()).len(), 2);
        assert_eq!(store.reset().unwrap(), 0);
    }

    /// A tmpfs mounted on a directory for one test, unmounted on drop (also on panic).
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(dir: &Path, size: &str) -> Tmpfs {
            require_root();
            run(Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir));
            Tmpfs(dir.to_owned())
        }

        fn remount_read_only(&self) {
            run(Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&self.0));
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let unmounted = Command::new("umount").arg(&self.0).status();
            if !unmounted.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
    }

    fn run(command: &mut Command) {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        assert!(
            output.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// These tests mount file systems: they need root, as in CI. Not root is a failure, so
    /// they can never pass without having run.
    fn require_root() {
        let status = fs::read_to_string("/proc/self/status").expect("Linux /proc");
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .expect("an effective uid");
        assert_eq!(
            uid, "0",
            "this test mounts a tmpfs and must run as root (CI runs the suite as root)"
        );
    }

    fn temporaries(dir: &Path) -> Vec<String> {
        names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_full_disk_fails_the_save_and_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mount = Tmpfs::mount(dir.path(), "256k");
        // No pruning, and checkpoints of several pages, so the disk fills mid-file.
        let store = StateStore::with_keep(&mount.0, usize::MAX);
        let state = engine(2_000).state();
        let mut last_good = None;
        let error = (1..=1_000)
            .find_map(|i| match store.save(&state, &numbers(), &offsets(i), i) {
                Ok(path) => {
                    last_good = Some((i, path));
                    None
                }
                Err(e) => Some(e),
            })
            .expect("a 256 KiB tmpfs fills up");
        let (last, last_path) = last_good.expect("at least one checkpoint fits");
        let StateStoreError::Write { path, source } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::StorageFull, "{error}");
        assert_eq!(path, &mount.0.join(file_name(last as u64 + 1)));
        assert!(error.to_string().contains(&path.display().to_string()));
        assert_eq!(temporaries(&mount.0), Vec::<String>::new());
        let saved = store.load().unwrap().unwrap();
        assert_eq!((saved.path, saved.offsets), (last_path, offsets(last)));
        assert!(saved.skipped.is_empty());
    }

    #[test]
    fn a_read_only_file_system_fails_the_save_and_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mount = Tmpfs::mount(dir.path(), "1m");
        let store = StateStore::new(&mount.0);
        let previous = store
            .save(&engine(10).state(), &numbers(), &offsets(1), 1)
            .unwrap();
        mount.remount_read_only();
        let error = store
            .save(&engine(20).state(), &numbers(), &offsets(2), 2)
            .unwrap_err();
        let StateStoreError::Write { path, source } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::ReadOnlyFilesystem, "{error}");
        assert_eq!(path, &mount.0.join(file_name(2)));
        assert!(error.to_string().contains(&path.display().to_string()));
        assert_eq!(temporaries(&mount.0), Vec::<String>::new());
        let saved = store.load().unwrap().unwrap();
        assert_eq!((saved.path, saved.offsets), (previous, offsets(1)));
        assert!(matches!(
            store.reset(),
            Err(StateStoreError::Discard { .. })
        ));
    }
}
