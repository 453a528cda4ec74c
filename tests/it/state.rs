//! Engine state is plain data: encoded, decoded and restored mid-stream, the run goes on to
//! the same answer as one that never stopped.

use pulse_core::{Engine, EngineSettings, EngineState, StateError};
use pulse_tests::small_workload;

use crate::helpers::{WALL_MS, generate, kpis_only, run_engine};

#[test]
fn restore_mid_stream_gives_the_uninterrupted_answer() {
    let (_, lines) = generate(&small_workload(21));
    let settings = EngineSettings {
        shards: 3,
        ..EngineSettings::default()
    };
    let uninterrupted = run_engine(&lines, settings.clone());

    let (first, second) = lines.split_at(lines.len() / 2);
    let mut engine = Engine::new(settings.clone(), WALL_MS);
    for line in first {
        engine.ingest(line.as_bytes(), None);
    }
    let open_before = engine.snapshot().state.open_session_keys;
    assert!(open_before > 0, "the cut must fall while sessions are open");
    let bytes = engine.state().to_bytes();
    drop(engine);

    let state = EngineState::from_bytes(&bytes).unwrap();
    let mut restored = Engine::restore(settings, WALL_MS, state);
    assert_eq!(restored.snapshot().state.open_session_keys, open_before);
    for line in second {
        restored.ingest(line.as_bytes(), None);
    }
    restored.close_all_sessions();
    assert_eq!(kpis_only(&restored.snapshot()), kpis_only(&uninterrupted));
}

#[test]
fn bad_images_are_errors() {
    let (_, lines) = generate(&small_workload(22));
    let mut engine = Engine::new(EngineSettings::default(), WALL_MS);
    for line in lines.iter().take(2_000) {
        engine.ingest(line.as_bytes(), None);
    }
    let bytes = engine.state().to_bytes();
    assert!(matches!(
        EngineState::from_bytes(b"nope"),
        Err(StateError::BadMagic)
    ));
    assert!(matches!(
        EngineState::from_bytes(&bytes[..bytes.len() / 2]),
        Err(StateError::Corrupt(_))
    ));
}

/// State is kept per partition, not per worker: a state restores under any worker count
/// and gives the answer of the engine that saved it.
#[test]
fn a_state_restores_under_another_worker_count() {
    let (_, lines) = generate(&small_workload(23));
    let settings = EngineSettings {
        partitions: 4,
        ..EngineSettings::default()
    };
    let mut engine = Engine::new(settings.clone(), WALL_MS);
    for line in &lines {
        engine.ingest(line.as_bytes(), None);
    }
    let state = EngineState::from_bytes(&engine.state().to_bytes()).unwrap();
    assert_eq!(state.partitions.len(), 4);
    let three_workers = EngineSettings {
        shards: 3,
        ..settings
    };
    let mut restored = Engine::restore(three_workers, WALL_MS, state);
    assert_eq!(
        kpis_only(&restored.snapshot()),
        kpis_only(&engine.snapshot())
    );
}
