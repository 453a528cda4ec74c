//! The store against a local directory: round trips, pruning, fencing of a stale owner,
//! fallback past damage, refusals, the files of pulse before object storage, and full or
//! read-only disks. The same code against an S3 server is in `tests/it/state.rs`.

use std::fs;
use std::process::Command;

use pulse_core::dimensions::DimensionSettings;
use pulse_core::{Engine, EngineSettings};

use super::format::{HEADER_LEN, checksum};
use super::*;

const WALL_MS: i64 = 1_900_000_000_000;
const DAY_MS: i64 = 86_400_000;

/// An engine that has seen `users` users over two days, in one partition.
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

fn sizes() -> TopicSizes {
    [("events".to_owned(), 4)].into()
}

/// Partition 0 has state and reads on at `next`; partition 3 has only a position.
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

fn folder(root: &Path, partition: i32) -> PathBuf {
    root.join("partitions/events").join(partition.to_string())
}

/// Saves `count` checkpoints with offsets 1..=count.
async fn save_n(store: &StateStore, count: i64) {
    let state = engine(3).state();
    for i in 1..=count {
        store
            .save(state.clone(), &numbers(), &offsets(i), &sizes(), i)
            .await
            .unwrap();
    }
}

/// The checkpoint object the newest manifest of partition 0 names.
fn newest_object(root: &Path) -> PathBuf {
    let dir = folder(root, 0);
    let newest = names(&dir)
        .into_iter()
        .rfind(|n| n.starts_with("manifest-"))
        .unwrap();
    let manifest: Manifest = serde_json::from_slice(&fs::read(dir.join(newest)).unwrap()).unwrap();
    dir.join(manifest.checkpoint)
}

/// Recomputes the checksum after a deliberate edit of the header.
fn reseal(bytes: &mut [u8]) {
    let (header, body) = bytes.split_at(HEADER_LEN);
    let sum = checksum(header, body);
    bytes[18..26].copy_from_slice(&sum.to_le_bytes());
}

#[tokio::test]
async fn save_then_load_round_trips_and_claims_each_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let mut engine = engine(50);
    let written = StateStore::new(&root)
        .save(engine.state(), &numbers(), &offsets(42), &sizes(), 7)
        .await
        .unwrap();
    assert_eq!(
        names(&folder(&root, 0)),
        [
            "manifest-00000000000000000001.json",
            "state-00000000000000000001-1.bin"
        ]
    );
    assert_eq!(
        written,
        ["state-00000000000000000001-1.bin"]
            .iter()
            .map(|n| fs::metadata(folder(&root, 0).join(n)).unwrap().len())
            .sum::<u64>()
            + fs::metadata(folder(&root, 3).join("state-00000000000000000001-1.bin"))
                .unwrap()
                .len()
    );
    let saved = StateStore::new(&root).load().await.unwrap().unwrap();
    assert_eq!(saved.offsets, offsets(42));
    assert_eq!(saved.saved_at_ms, 7);
    assert_eq!(saved.topic_sizes, sizes());
    assert_eq!(
        saved.numbers.keys(),
        [
            TopicPartition::new("events", 0),
            TopicPartition::new("events", 3)
        ]
    );
    assert!(saved.skipped.is_empty());
    // Not the bytes: the session table is a hash map, its order differs per instance.
    let mut restored = Engine::restore(EngineSettings::default(), WALL_MS, saved.engine);
    assert_eq!(restored.snapshot(), engine.snapshot());
    // Loading claimed the partition: the next manifest, one epoch up, on the same object.
    let claim: Manifest = serde_json::from_slice(
        &fs::read(folder(&root, 0).join("manifest-00000000000000000002.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (claim.epoch, claim.checkpoint.as_str()),
        (2, "state-00000000000000000001-1.bin")
    );
}

#[tokio::test]
async fn keeps_only_the_newest_checkpoints_and_what_they_name() {
    let dir = tempfile::tempdir().unwrap();
    save_n(&StateStore::new(dir.path()), 5).await;
    assert_eq!(
        names(&folder(dir.path(), 0)),
        [
            "manifest-00000000000000000003.json",
            "manifest-00000000000000000004.json",
            "manifest-00000000000000000005.json",
            "state-00000000000000000003-1.bin",
            "state-00000000000000000004-1.bin",
            "state-00000000000000000005-1.bin",
        ]
    );
    // A second instance claims (manifest 6 names object 5), then saves once with keep 1.
    let again = StateStore::with_keep(dir.path(), 1);
    assert_eq!(again.load().await.unwrap().unwrap().offsets, offsets(5));
    save_n(&again, 1).await;
    assert_eq!(
        names(&folder(dir.path(), 0)),
        [
            "manifest-00000000000000000007.json",
            "state-00000000000000000007-2.bin"
        ]
    );
    assert_eq!(again.load().await.unwrap().unwrap().offsets, offsets(1));
}

/// The stale owner of the issue: paused past its session timeout while another instance
/// took the partition over, then resumed. Its next save is refused and it learns why.
#[tokio::test]
async fn a_stale_owner_cannot_overwrite_the_new_owners_state() {
    let dir = tempfile::tempdir().unwrap();
    let old = StateStore::new(dir.path());
    save_n(&old, 2).await;
    let new = StateStore::new(dir.path());
    new.load().await.unwrap().unwrap();
    let stale = engine(9).state();
    let error = old
        .save(stale.clone(), &numbers(), &offsets(100), &sizes(), 100)
        .await
        .unwrap_err();
    let StateStoreError::Fenced {
        partition,
        epoch,
        newer_epoch,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    // Both partitions were claimed; whichever save finished first is reported.
    assert!([0, 3].contains(&partition.partition), "{error}");
    assert_eq!((*epoch, *newer_epoch), (1, 2), "{error}");
    assert!(error.to_string().contains("lost partition"), "{error}");
    // Fenced once, fenced for good: it dropped its claim and does not write blindly.
    let again = old
        .save(stale, &numbers(), &offsets(101), &sizes(), 101)
        .await
        .unwrap_err();
    assert!(
        matches!(again, StateStoreError::NotLoaded { .. }),
        "{again:?}"
    );
    // The stale owner's objects never became current: the newest manifests are the claims.
    for partition in [0, 3] {
        let newest = names(&folder(dir.path(), partition))
            .into_iter()
            .rfind(|n| n.starts_with("manifest-"))
            .unwrap();
        let manifest: Manifest =
            serde_json::from_slice(&fs::read(folder(dir.path(), partition).join(newest)).unwrap())
                .unwrap();
        assert_eq!(manifest.epoch, 2);
    }
    save_n(&new, 1).await;
    let saved = StateStore::new(dir.path()).load().await.unwrap().unwrap();
    assert_eq!(
        saved.offsets,
        offsets(1),
        "the new owner's, not the stale one's"
    );
}

#[tokio::test]
async fn a_replay_into_a_location_with_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    save_n(&StateStore::new(dir.path()), 1).await;
    let error = StateStore::new(dir.path())
        .save(engine(1).state(), &numbers(), &offsets(1), &sizes(), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StateStoreError::NotLoaded { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("--reset-state"), "{error}");
}

#[tokio::test]
async fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    save_n(&StateStore::new(dir.path()), 2).await;
    let newest = newest_object(dir.path());
    let bytes = fs::read(&newest).unwrap();
    let mut flipped = bytes.clone();
    let middle = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
    flipped[middle] ^= 0x01;
    let mut undecodable = bytes[..HEADER_LEN].to_vec();
    undecodable.extend_from_slice(&[0xff; 16]);
    undecodable[10..18].copy_from_slice(&16u64.to_le_bytes());
    reseal(&mut undecodable);
    for (damage, reason) in [
        (bytes[..bytes.len() - 1].to_vec(), "truncated"),
        (bytes[..20].to_vec(), "truncated"),
        (flipped, "checksum mismatch"),
        ([b"X".as_slice(), &bytes[1..]].concat(), "bad magic"),
        ([bytes.as_slice(), b"junk"].concat(), "4 unexpected bytes"),
        (undecodable, "cannot decode"),
    ] {
        // A fresh history each time: a load claims, and the claim would name the fallback.
        let dir = tempfile::tempdir().unwrap();
        save_n(&StateStore::new(dir.path()), 2).await;
        fs::write(newest_object(dir.path()), &damage).unwrap();
        let saved = StateStore::new(dir.path()).load().await.unwrap().unwrap();
        assert_eq!(
            saved.offsets[&TopicPartition::new("events", 0)],
            1,
            "{reason}"
        );
        assert!(
            saved.skipped.iter().any(|s| s.reason.contains(reason)),
            "{reason}: {:?}",
            saved.skipped
        );
    }
    // A manifest that names a missing object is passed over too.
    fs::remove_file(&newest).unwrap();
    let saved = StateStore::new(dir.path()).load().await.unwrap().unwrap();
    assert!(
        saved.skipped.iter().any(|s| s.reason == "missing"),
        "{:?}",
        saved.skipped
    );
}

/// A checkpoint holding a KPI family this build does not know was written by a newer
/// pulse: refused by name, not taken for damage (falling back past it would rewind).
#[tokio::test]
async fn unknown_families_and_other_versions_are_refused_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    save_n(&StateStore::new(dir.path()), 2).await;
    let newest = newest_object(dir.path());
    let original = fs::read(&newest).unwrap();
    let mut bytes = original.clone();
    let (known, newer) = (b"stickiness".as_slice(), b"retentions".as_slice());
    let at = bytes
        .windows(known.len())
        .position(|w| w == known)
        .expect("the checkpoint names its families");
    bytes[at..at + newer.len()].copy_from_slice(newer);
    reseal(&mut bytes);
    fs::write(&newest, &bytes).unwrap();
    let error = StateStore::new(dir.path()).load().await.unwrap_err();
    let StateStoreError::UnknownFamilies { families, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(families, &["retentions"]);
    assert!(error.to_string().contains("--reset-state"), "{error}");

    let mut bytes = original;
    bytes[8..10].copy_from_slice(&7u16.to_le_bytes());
    reseal(&mut bytes);
    fs::write(&newest, &bytes).unwrap();
    let error = StateStore::new(dir.path()).load().await.unwrap_err();
    assert!(
        matches!(
            error,
            StateStoreError::UnsupportedVersion {
                found: 7,
                supported: FORMAT_VERSION,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&newest.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn refuses_to_start_when_every_checkpoint_of_a_partition_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    save_n(&StateStore::new(dir.path()), 2).await;
    for name in names(&folder(dir.path(), 0)) {
        if name.starts_with("state-") {
            fs::write(folder(dir.path(), 0).join(name), b"garbage").unwrap();
        }
    }
    let error = StateStore::new(dir.path()).load().await.unwrap_err();
    let StateStoreError::NoValidCheckpoint { skipped, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(skipped.len(), 2);
    assert!(error.to_string().contains("--reset-state"), "{error}");
}

#[tokio::test]
async fn partitions_saved_under_different_partition_counts_are_not_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let state = engine(3).state();
    store
        .save(state.clone(), &numbers(), &offsets(1), &sizes(), 1)
        .await
        .unwrap();
    let other = PartitionNumbers::from_keys([TopicPartition::new("events", 5)]);
    let grown: TopicSizes = [("events".to_owned(), 8)].into();
    store
        .save(state, &other, &Offsets::new(), &grown, 2)
        .await
        .unwrap();
    let error = StateStore::new(dir.path()).load().await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, StateStoreError::MixedPartitionCounts { .. }),
        "{error:?}"
    );
    assert!(
        message.contains("(4, 8)") && message.contains("--partitions"),
        "{message}"
    );
}

/// A directory of pulse before object storage: whole-engine files, read with the same
/// fallback; the first save then writes the per-partition layout, which wins from then on.
#[tokio::test]
async fn the_files_of_pulse_before_object_storage_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let state = engine(20).state();
    for sequence in 1..=2u64 {
        let bytes = encode(sequence, 5, &state, &numbers(), &offsets(sequence as i64));
        fs::write(
            dir.path().join(format!("checkpoint-{sequence:020}.bin")),
            bytes,
        )
        .unwrap();
    }
    fs::write(
        dir.path().join("checkpoint-00000000000000000002.bin"),
        b"PULSECKP",
    )
    .unwrap();
    let store = StateStore::new(dir.path());
    let saved = store.load().await.unwrap().unwrap();
    assert_eq!(
        saved.offsets,
        offsets(1),
        "fell back past the damaged newest"
    );
    assert!(
        saved.skipped[0].reason.contains("truncated"),
        "{:?}",
        saved.skipped
    );
    assert!(saved.topic_sizes.is_empty());
    store
        .save(saved.engine, &saved.numbers, &offsets(9), &sizes(), 9)
        .await
        .unwrap();
    assert_eq!(
        StateStore::new(dir.path())
            .load()
            .await
            .unwrap()
            .unwrap()
            .offsets,
        offsets(9)
    );
    // The upgrade is complete: the old files are kept aside, out of the way.
    assert!(
        !dir.path()
            .join("checkpoint-00000000000000000001.bin")
            .exists()
    );
    let upgraded = names(dir.path())
        .into_iter()
        .find(|n| n.starts_with("upgraded-"))
        .expect("an upgraded-… folder");
    assert_eq!(
        names(&dir.path().join(upgraded)),
        [
            "checkpoint-00000000000000000001.bin",
            "checkpoint-00000000000000000002.bin"
        ]
    );
}

/// A crash during the first save after an upgrade: some partitions are in the new layout,
/// the others only in the old files. None of them starts empty.
#[tokio::test]
async fn an_unfinished_upgrade_takes_the_missing_partitions_from_the_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = encode(1, 5, &engine(20).state(), &numbers(), &offsets(1));
    fs::write(
        dir.path().join("checkpoint-00000000000000000001.bin"),
        legacy,
    )
    .unwrap();
    let only_0: Offsets = [(TopicPartition::new("events", 0), 50)].into();
    StateStore::new(dir.path())
        .save(engine(20).state(), &numbers(), &only_0, &sizes(), 6)
        .await
        .unwrap();
    let saved = StateStore::new(dir.path()).load().await.unwrap().unwrap();
    let mut expected = offsets(1);
    expected.insert(TopicPartition::new("events", 0), 50);
    assert_eq!(saved.offsets, expected, "partition 3 from the old file");
    assert_eq!(saved.saved_at_ms, 6);
}

#[tokio::test]
async fn a_legacy_checkpoint_of_pulse_0_1_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = encode(1, 5, &engine(1).state(), &numbers(), &offsets(1));
    bytes[8..10].copy_from_slice(&SHARDED_FORMAT_VERSION.to_le_bytes());
    reseal(&mut bytes);
    fs::write(
        dir.path().join("checkpoint-00000000000000000001.bin"),
        bytes,
    )
    .unwrap();
    let error = StateStore::new(dir.path()).load().await.unwrap_err();
    assert!(
        matches!(error, StateStoreError::ShardedFormat { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn no_directory_or_no_checkpoint_is_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let missing = StateStore::new(dir.path().join("missing"));
    assert!(missing.load().await.unwrap().is_none());
    assert_eq!(missing.reset().await.unwrap(), 0);
    fs::write(dir.path().join("state.bin"), b"PULSEST1 old").unwrap();
    fs::write(dir.path().join("notes.txt"), b"").unwrap();
    assert!(StateStore::new(dir.path()).load().await.unwrap().is_none());
}

#[tokio::test]
async fn reset_moves_every_checkpoint_aside_without_losing_them() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = encode(1, 5, &engine(2).state(), &numbers(), &offsets(1));
    fs::write(
        dir.path().join("checkpoint-00000000000000000001.bin"),
        &legacy,
    )
    .unwrap();
    let store = StateStore::new(dir.path());
    save_n(&store, 2).await;
    // Two partitions × (2 manifests + 2 objects), and the legacy file.
    assert_eq!(store.reset().await.unwrap(), 9);
    assert!(store.load().await.unwrap().is_none());
    let folders: Vec<String> = names(dir.path())
        .into_iter()
        .filter(|n| n.starts_with("discarded-"))
        .collect();
    assert_eq!(folders.len(), 1, "{:?}", names(dir.path()));
    let aside = StateStore::new(dir.path().join(&folders[0]));
    assert_eq!(aside.load().await.unwrap().unwrap().offsets, offsets(2));
    // A new history starts at 1, and a second reset never mixes with the first.
    save_n(&store, 1).await;
    assert_eq!(store.reset().await.unwrap(), 4);
    assert_eq!(
        names(dir.path())
            .iter()
            .filter(|n| n.starts_with("discarded-"))
            .count(),
        2
    );
    assert_eq!(store.reset().await.unwrap(), 0);
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

/// Files a failed write may have left: the object store stages as `<name>#<n>`.
fn temporaries(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| n.contains('#')).collect()
}

#[tokio::test]
async fn a_full_disk_fails_the_save_and_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(dir.path(), "256k");
    // No pruning, and checkpoints of several pages, so the disk fills mid-file.
    let store = StateStore::with_keep(&mount.0, usize::MAX);
    let state = engine(2_000).state();
    let only_0 = |i: i64| -> Offsets { [(TopicPartition::new("events", 0), i)].into() };
    let mut last_good = None;
    let mut error = None;
    for i in 1..=1_000 {
        match store
            .save(state.clone(), &numbers(), &only_0(i), &sizes(), i)
            .await
        {
            Ok(_) => last_good = Some(i),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let error = error.expect("a 256 KiB tmpfs fills up");
    let last = last_good.expect("at least one checkpoint fits");
    assert!(matches!(error, StateStoreError::Write { .. }), "{error:?}");
    assert!(format!("{error:?}").contains("StorageFull"), "{error:?}");
    assert!(
        error.to_string().contains(&mount.0.display().to_string()),
        "{error}"
    );
    assert_eq!(temporaries(&folder(&mount.0, 0)), Vec::<String>::new());
    let saved = StateStore::new(&mount.0).load().await;
    // Loading claims with a small manifest, which may not fit either: read without it.
    match saved {
        Ok(saved) => assert_eq!(saved.unwrap().offsets, only_0(last)),
        Err(StateStoreError::Write { .. }) => {}
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_read_only_file_system_fails_the_save_and_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(dir.path(), "1m");
    let store = StateStore::new(&mount.0);
    store
        .save(engine(10).state(), &numbers(), &offsets(1), &sizes(), 1)
        .await
        .unwrap();
    mount.remount_read_only();
    let error = store
        .save(engine(20).state(), &numbers(), &offsets(2), &sizes(), 2)
        .await
        .unwrap_err();
    assert!(matches!(error, StateStoreError::Write { .. }), "{error:?}");
    assert!(
        format!("{error:?}").contains("ReadOnlyFilesystem"),
        "{error:?}"
    );
    assert_eq!(temporaries(&folder(&mount.0, 0)), Vec::<String>::new());
    assert!(matches!(
        store.reset().await,
        Err(StateStoreError::Discard { .. })
    ));
}

/// Pruning keeps what every kept manifest names, including a claim that fell back past a
/// damaged checkpoint to an older object: a second damage still finds that object.
#[tokio::test]
async fn pruning_keeps_the_object_a_fallback_claim_names() {
    let dir = tempfile::tempdir().unwrap();
    save_n(&StateStore::new(dir.path()), 3).await;
    fs::write(newest_object(dir.path()), b"torn").unwrap();
    let owner = StateStore::new(dir.path());
    let saved = owner.load().await.unwrap().unwrap();
    assert_eq!(
        saved.offsets,
        offsets(2),
        "fell back to the second checkpoint"
    );
    // Manifest 4 (the claim) names object 2; manifest 5 names its own object.
    owner
        .save(saved.engine, &saved.numbers, &offsets(5), &sizes(), 5)
        .await
        .unwrap();
    fs::write(newest_object(dir.path()), b"torn again").unwrap();
    let saved = StateStore::new(dir.path()).load().await.unwrap().unwrap();
    assert_eq!(saved.offsets, offsets(2), "the claim's object was kept");
}

/// Checkpoints of the formats before (the fuzz seed of each format, a replay on 2 shards)
/// load, and save as today's format with the same state: format 2 with the outcome
/// rejection reasons at 0, format 3 with no applied copies of upstream records, format 4
/// with its open sessions in the sessions family's table.
#[test]
fn checkpoints_of_older_formats_still_load() {
    let fixtures: [(u16, &[u8]); 3] = [
        (2, include_bytes!("testdata/format-2.bin")),
        (3, include_bytes!("testdata/format-3.bin")),
        (4, include_bytes!("testdata/format-4.bin")),
    ];
    for (version, bytes) in fixtures {
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), version);
        let old = format::read_checkpoint(bytes).unwrap();
        let inputs = old.engine.inputs();
        let counters = pulse_core::partition::total_counters(inputs.iter());
        assert!(counters.accepted > 0 && counters.rejected_total() > 0);
        if version == 2 {
            assert_eq!(
                counters.rejected[pulse_core::Rejection::InvalidScore as usize],
                0
            );
        }
        assert!(inputs.iter().all(|i| i.upstream == Default::default()));
        let again = format::encode(
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
}

/// A format 4 checkpoint with dimensions kept its open sessions twice, the breakdowns
/// family's tagged with their values: loaded, they are one table, and once closed every
/// session counts under its first event's values as the pulse that saved it counted them.
/// The fixture is `pulse replay --shards 2 --partitions 1 --save-state` by a format 4 pulse
/// of the workload generator's `ndjson 40 3 7 4 6` (a platform and a tenant per event, both
/// dimensions capped below their values); the JSON is the sessions and dimensions of the
/// snapshot that replay printed, every session closed.
#[test]
fn a_format_4_checkpoint_keeps_its_open_sessions_by_value() {
    let bytes = include_bytes!("testdata/format-4-dimensions.bin");
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 4);
    // The fixture's configuration: both capped below the values the workload uses.
    let dimensions = [("platform", "/platform", 3), ("tenant", "/tenant_id", 4)];
    let settings = EngineSettings {
        dimensions: dimensions
            .map(|(name, path, max_values)| DimensionSettings {
                name: name.to_owned(),
                paths: vec![path.to_owned()],
                max_values,
            })
            .to_vec(),
        ..EngineSettings::default()
    };
    let old = format::read_checkpoint(bytes).unwrap();
    // The replay's --wall-clock.
    let wall_ms = 1_772_409_600_000;
    let mut engine = Engine::restore(settings, wall_ms, old.engine);
    let open = engine.state().partitions[0]
        .kpis
        .sessions
        .open_session_keys();
    assert!(open > 0, "the fixture saved no open session");
    engine.close_all_sessions();
    let snapshot = serde_json::to_value(engine.snapshot()).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(include_bytes!("testdata/format-4-dimensions.json")).unwrap();
    for section in ["sessions", "dimensions"] {
        assert_eq!(snapshot[section], expected[section], "{section}");
    }
}

/// A save whose manifest landed but whose answer was lost (cut off by `state.timeout`, or
/// the connection dropped after the store applied it): the next save finds its own
/// manifest in the way and goes on, rather than take itself for a stale owner and drop the
/// partition.
#[tokio::test]
async fn a_landed_save_whose_answer_was_lost_is_not_taken_for_another_owner() {
    let objects = watched::store();
    let store = StateStore::over(objects.clone());
    save_n(&store, 1).await;
    let state = engine(3).state();
    objects.around().lose_next_create_answer();
    let lost = store
        .save(state.clone(), &numbers(), &offsets(2), &sizes(), 2)
        .await
        .unwrap_err();
    assert!(matches!(lost, StateStoreError::Write { .. }), "{lost:?}");
    store
        .save(state, &numbers(), &offsets(3), &sizes(), 3)
        .await
        .unwrap();
    let saved = StateStore::over(objects).inspect().await.unwrap().unwrap();
    assert_eq!(saved.offsets, offsets(3));
}

/// A process paused past its session timeout with a save under way: while it is stopped,
/// another member claims its partitions; once it runs again the group gives them back and
/// it claims them anew, and only then does the save it started before the pause reach the
/// store. That save is refused, but the refusal is about the ownership before the pause:
/// the new claim stands, and so do the saves made under it.
#[tokio::test]
async fn a_save_refused_after_the_partition_was_claimed_again_keeps_the_new_claim() {
    let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let held = Arc::new(decorated::Decorated::new(
        memory.clone(),
        watched::Watched::default(),
    ));
    let here = StateStore::over(held.clone());
    // The same instance (its claims), past the requests held for the save before the pause.
    let unheld = StateStore {
        objects: memory.clone(),
        ..here.clone()
    };
    save_n(&here, 1).await;
    StateStore::over(memory.clone()).load().await.unwrap();

    held.around().answer(false);
    let before_the_pause = tokio::spawn({
        let here = here.clone();
        async move {
            here.save(engine(3).state(), &numbers(), &offsets(5), &sizes(), 5)
                .await
        }
    });
    // Both partitions' saves have read their claims and wait on the store.
    while held.around().holding() < 2 {
        tokio::task::yield_now().await;
    }
    let keys = [
        TopicPartition::new("events", 0),
        TopicPartition::new("events", 3),
    ];
    for key in &keys {
        let taken = unheld.claim(key).await.unwrap().expect("saved");
        assert_eq!(taken.epoch, 3, "above the other member's claim");
    }
    held.around().answer(true);
    let refused = before_the_pause.await.unwrap().unwrap_err();
    assert!(
        matches!(refused, StateStoreError::Fenced { epoch: 1, .. }),
        "{refused:?}"
    );
    assert_eq!(here.take_refused(), keys.to_vec());
    assert!(here.take_refused().is_empty(), "named once");
    for key in &keys {
        assert_eq!(here.epoch(key), Some(3), "the new claim stands");
    }
    here.save(engine(4).state(), &numbers(), &offsets(9), &sizes(), 9)
        .await
        .expect("saves under the new claim are not refused");
    let saved = StateStore::over(memory).inspect().await.unwrap().unwrap();
    assert_eq!(saved.offsets, offsets(9));
}
