//! `pulse demo`: the whole pipeline on the built-in generator, no broker needed.
//!
//! It backfills history first (35 days, so that every window and its previous window is
//! populated at once), then keeps generating "live" events up to the wall clock at every
//! refresh. The generator is the same one the tests and `pulse loadgen` use.

use std::future::Future;
use std::time::Duration;

use pulse_workload::{DAY_MS, Generator, WorkloadConfig};

use pulse_core::status::IngestStatus;

use crate::clock::wall_ms;
use crate::pipeline::{Pipeline, Sink};
use crate::rollups::RollupWriter;
use crate::workers::WorkerStopped;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub users: u32,
    pub seed: u64,
    pub backfill_days: u32,
    pub refresh: Duration,
    /// Whether the generator also sends surveys, orders and subscription changes.
    pub outcomes: bool,
}

fn ready(pipeline: &Pipeline) -> IngestStatus {
    IngestStatus {
        broker_up: true,
        ready: true,
        snapshot_seconds: pipeline.last_snapshot_seconds(),
        ..IngestStatus::default()
    }
}

/// Runs until `shutdown` completes; with `rollups`, writes warehouse rollups on their
/// schedule and once more at the stop.
pub async fn run(
    pipeline: &mut Pipeline,
    options: &DemoOptions,
    mut rollups: Option<RollupWriter>,
    sink: &dyn Sink,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerStopped> {
    let now = wall_ms();
    let config = WorkloadConfig {
        seed: options.seed,
        users: options.users,
        days: options.backfill_days,
        end_ms: now,
        outcomes: options.outcomes,
        // For the platform breakdown `pulse demo` configures, and any tenant one.
        platforms: ["web", "ios", "android"].map(str::to_owned).to_vec(),
        tenants: 40,
        ..WorkloadConfig::default()
    };
    let mut generator = Generator::new(&config).expect("demo options are validated by the CLI");
    tracing::info!(
        users = options.users,
        days = options.backfill_days,
        "Backfilling demo history."
    );
    let mut line = String::new();
    let mut backfilled = 0u64;
    // Day by day, so a large backfill shows progress and never holds it all in memory.
    let mut until = generator.cursor_ms();
    while until < now {
        until = (until + DAY_MS).min(now);
        for event in generator.events_until(until) {
            line.clear();
            event.write_json(&mut line);
            pipeline.ingest(line.as_bytes(), None).await?;
            backfilled += 1;
        }
    }
    pipeline.advance_clock(wall_ms(), true);
    sink.publish(pipeline.snapshot().await?, ready(pipeline));
    tracing::info!(
        events = backfilled,
        "Demo history loaded; generating live events."
    );

    let mut tick = tokio::time::interval(options.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                let now = wall_ms();
                for event in generator.events_until(now) {
                    line.clear();
                    event.write_json(&mut line);
                    pipeline.ingest(line.as_bytes(), None).await?;
                }
                pipeline.advance_clock(now, true);
                sink.publish(pipeline.snapshot().await?, ready(pipeline));
                if let Some(rollups) = rollups.as_mut() {
                    rollups.tick(pipeline).await?;
                }
            }
        }
    }
    if let Some(rollups) = rollups.as_mut() {
        rollups.finish(pipeline).await?;
    }
    Ok(())
}
