//! `pulse state show`: the KPIs held at a state location, merged over every partition.
//!
//! Reads each partition's newest valid checkpoint without claiming it (a running group is
//! not fenced by looking), moves every partition's ids into one router's registries (the
//! members of a group number features and dimension values differently, see
//! [`pulse_core::remap`]) and prints the snapshot `pulse replay` would print for the
//! events those checkpoints hold: "now" is the latest event time and every session still
//! open is closed, as at the end of a replay's input. Until the summaries topic gives every
//! instance the global view, this is how an operator (or a test) sees the whole group's.

use anyhow::{Context, Result, bail};
use pulse_core::EngineSettings;
use pulse_core::settings::ClockMode;
use pulse_core::snapshot::KpiSnapshot;
use pulse_ingest::Pipeline;
use pulse_ingest::state_store::StateStore;

/// The merged snapshot of the state at `store`; `wall_ms` is the reference for "future".
pub fn show(store: &StateStore, mut settings: EngineSettings, wall_ms: i64) -> Result<KpiSnapshot> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let saved = runtime
        .block_on(store.inspect())
        .with_context(|| format!("reading the state at {}", store.location()))?;
    let Some(saved) = saved else {
        bail!("{} holds no state", store.location());
    };
    settings.clock = ClockMode::EventTime;
    let state = saved.gathered(&settings);
    // The runner replay uses, so that the snapshot is the same to the last field.
    let mut pipeline = Pipeline::start(settings, wall_ms, Some(state))?;
    let snapshot = runtime.block_on(async {
        pipeline.close_all_sessions().await?;
        pipeline.snapshot().await
    });
    pipeline.stop();
    Ok(snapshot?)
}
