//! `pulse replay`: an NDJSON file through the same runner as `pulse run` and `pulse demo`.
//!
//! Decoding threads prepare the lines (decode, hash the user; see [`parallel_decode`]), the
//! calling thread routes them in input order through a [`Pipeline`] (clock, classification,
//! features, the virtual partition of each user), and the pipeline's worker threads apply
//! each partition's events. The pipeline is async (it is shared with the Kafka and demo
//! sources); the calling thread drives it from a current-thread runtime, so a full worker
//! queue slows the reader instead of growing memory, exactly as it slows a consumer.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pulse_core::EngineSettings;
use pulse_core::rollup::{self, RollupClock};
use pulse_core::snapshot::KpiSnapshot;
use pulse_ingest::Pipeline;
use pulse_ingest::partition_numbers::PartitionNumbers;
use pulse_ingest::state_store::StateStore;

use crate::parallel_decode;

/// Bytes of input per block handed to a decoding thread (about 2 000 events): the hand-over
/// costs a few microseconds, the block some milliseconds of decoding.
const BLOCK_BYTES: usize = 256 << 10;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What a replay writes besides its snapshot.
#[derive(Debug, Default)]
pub struct Outputs<'a> {
    /// A checkpoint of the state at the end of the input, sessions still open.
    pub save_state: Option<&'a StateStore>,
    /// Warehouse rollups of the final state, as NDJSON.
    pub rollups: Option<&'a Path>,
    pub include_sketches: bool,
    /// The Kafka topic whose partitions the virtual ones stand for in a saved state.
    pub topic: &'a str,
}

/// Replays a file ("-" for stdin) and returns the final snapshot.
pub fn replay_path(
    path: &Path,
    settings: EngineSettings,
    decode_threads: usize,
    wall_ms: i64,
    outputs: &Outputs<'_>,
) -> Result<KpiSnapshot> {
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(path).with_context(|| format!("cannot open input {}", path.display()))?)
    };
    let source = path.display().to_string();
    replay(reader, &source, settings, decode_threads, wall_ms, outputs)
}

/// Replays `input`; `topic` names the Kafka topic its virtual partitions stand for in a
/// saved state (partition `p` is that topic's partition `p`).
pub fn replay(
    input: impl Read,
    source: &str,
    settings: EngineSettings,
    decode_threads: usize,
    wall_ms: i64,
    outputs: &Outputs<'_>,
) -> Result<KpiSnapshot> {
    let started = Instant::now();
    tracing::info!(
        input = source,
        shards = settings.shards,
        partitions = settings.partitions,
        decode_threads,
        "Replay started."
    );
    // Timers and sockets: `--save-state` may talk to an object store.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the replay's runtime")?;
    let mut pipeline =
        Pipeline::start(settings.clone(), wall_ms, None).context("starting the worker threads")?;
    let decoder = pipeline.decoder().clone();
    let mut lines: u64 = 0;
    let mut last_progress = Instant::now();
    let read =
        parallel_decode::prepare_lines(input, &decoder, decode_threads, BLOCK_BYTES, |block| {
            lines += block.lines;
            for record in block.records.iter() {
                pipeline.route_prepared(record, None, None);
            }
            runtime.block_on(pipeline.send_full_batches())?;
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                let rate = lines as f64 / started.elapsed().as_secs_f64();
                let accepted = pipeline.ingestor().counters().accepted;
                tracing::info!(
                    lines,
                    accepted,
                    lines_per_second = rate.round(),
                    "Replaying."
                );
            }
            Ok(())
        });
    let result = read
        .with_context(|| format!("reading {source}"))
        .and_then(|()| runtime.block_on(finish(&mut pipeline, &settings, wall_ms, outputs)));
    let counters = pipeline.ingestor().counters();
    pipeline.stop();
    let snapshot = result?;
    tracing::info!(
        lines,
        accepted = counters.accepted,
        rejected = counters.rejected_total(),
        late = counters.late,
        future = counters.future,
        seconds = started.elapsed().as_secs_f64(),
        "Replay finished."
    );
    if counters.late_for_sessions > 0 {
        tracing::warn!(
            events = counters.late_for_sessions,
            "Some events came more than `allowed_lateness` after later ones: they count as \
             activity but not in sessions. Sort the input by time or raise allowed_lateness."
        );
    }
    Ok(snapshot)
}

/// The end of the input: the state saved (sessions still open), every session closed, the
/// rollups written, and the final snapshot.
async fn finish(
    pipeline: &mut Pipeline,
    settings: &EngineSettings,
    wall_ms: i64,
    outputs: &Outputs<'_>,
) -> Result<KpiSnapshot> {
    let now_ms = pipeline.ingestor().now_ms();
    if let Some(store) = outputs.save_state {
        // Saved before the end of input closes the sessions: a live run that continues
        // from here must see the sessions still open at the hand-over.
        let state = pipeline.state().await?;
        let numbers = PartitionNumbers::virtual_partitions(outputs.topic, settings.partitions);
        // The count is saved with each partition: a group whose topic has another count
        // refuses this state instead of mixing users across partitions.
        let sizes = [(outputs.topic.to_owned(), settings.partitions as u32)].into();
        let bytes = store
            .save(
                state,
                &numbers,
                &Default::default(),
                &sizes,
                now_ms.unwrap_or(0),
            )
            .await
            .with_context(|| format!("--save-state {}", store.location()))?;
        tracing::info!(
            location = store.location(),
            bytes,
            partitions = settings.partitions,
            topic = outputs.topic,
            "State saved; `pulse run --state` can start from it."
        );
    }
    pipeline.close_all_sessions().await?;
    if let Some(file) = outputs.rollups {
        let state = pipeline.state().await?;
        let clock = RollupClock {
            now_ms,
            computed_at_ms: wall_ms,
        };
        let records = rollup::rollups(&state, settings, clock, outputs.include_sketches);
        pulse_ingest::rollups::write_file(file, &records).context("--rollups")?;
        tracing::info!(records = records.len(), file = %file.display(), "Rollups written.");
    }
    Ok(pipeline.snapshot().await?)
}
