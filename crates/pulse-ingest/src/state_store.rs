//! Engine state and consumed offsets on disk, so a clean stop and restart keeps the month.
//!
//! One file, `state.bin`, replaced atomically: written to a temporary file, fsynced, renamed
//! over the old one, and the directory fsynced, so a crash at any point leaves either the
//! old or the new state, never a torn one. The offsets stored beside the state are exactly
//! those whose events it contains.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use pulse_core::EngineState;
use serde::{Deserialize, Serialize};

const FILE: &str = "state.bin";
const MAGIC: &[u8; 8] = b"PULSEST1";

/// Next offset to read, by (topic, partition).
pub type Offsets = BTreeMap<(String, i32), i64>;

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    offsets: Vec<(String, i32, i64)>,
    saved_at_ms: i64,
    engine: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    #[error("cannot write state to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read state from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a pulse state file or is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// What was saved: the engine and the offsets it covers.
#[derive(Debug)]
pub struct Saved {
    pub engine: EngineState,
    pub offsets: Offsets,
    pub saved_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> StateStore {
        StateStore { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Atomically replaces the saved state.
    pub fn save(
        &self,
        engine: &EngineState,
        offsets: &Offsets,
        saved_at_ms: i64,
    ) -> Result<(), StateStoreError> {
        let path = self.path();
        let write_error = |source| StateStoreError::Write {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(write_error)?;
        let envelope = Envelope {
            offsets: offsets
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, *o))
                .collect(),
            saved_at_ms,
            engine: engine.to_bytes(),
        };
        let mut bytes = MAGIC.to_vec();
        bytes.extend(postcard::to_stdvec(&envelope).expect("serialising to memory cannot fail"));
        let temporary = self.dir.join(format!("{FILE}.tmp"));
        let mut file = File::create(&temporary).map_err(write_error)?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(write_error)?;
        fs::rename(&temporary, &path).map_err(write_error)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(write_error)?;
        Ok(())
    }

    /// The saved state, or `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Saved>, StateStoreError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateStoreError::Read { path, source }),
        };
        let corrupt = |reason: String| StateStoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| corrupt("bad magic".into()))?;
        let envelope: Envelope = postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
        let engine =
            EngineState::from_bytes(&envelope.engine).map_err(|e| corrupt(e.to_string()))?;
        let offsets = envelope
            .offsets
            .into_iter()
            .map(|(t, p, o)| ((t, p), o))
            .collect();
        Ok(Some(Saved {
            engine,
            offsets,
            saved_at_ms: envelope.saved_at_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_core::{Engine, EngineSettings};

    #[test]
    fn save_then_load_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state"));
        assert!(
            store.load().unwrap().is_none(),
            "no state yet is not an error"
        );
        let mut engine = Engine::new(EngineSettings::default(), 1_900_000_000_000);
        engine.ingest(
            br#"{"user_id":"u","event":"login","ts":1772323200000}"#,
            None,
        );
        let offsets: Offsets = [(("events".to_owned(), 2), 42)].into_iter().collect();
        store.save(&engine.state(), &offsets, 7).unwrap();
        store.save(&engine.state(), &offsets, 8).unwrap();
        let saved = store.load().unwrap().unwrap();
        assert_eq!(saved.offsets, offsets);
        assert_eq!(saved.saved_at_ms, 8);
        assert_eq!(saved.engine.router.counters.accepted, 1);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .collect();
        assert_eq!(leftovers.len(), 1, "the temporary file was renamed away");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        std::fs::write(store.path(), b"PULSEST1 garbage").unwrap();
        let error = store.load().unwrap_err().to_string();
        assert!(error.contains("state.bin"), "{error}");
        std::fs::write(store.path(), b"nonsense").unwrap();
        assert!(matches!(store.load(), Err(StateStoreError::Corrupt { .. })));
    }
}
