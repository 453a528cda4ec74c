//! `pulse replay`: an NDJSON file through the engine, with one thread per shard.
//!
//! Decoding threads prepare the lines (decode, hash the user; see [`parallel_decode`]), the
//! calling thread reads and routes them in input order (clock, classification, features),
//! and each shard thread applies its users' events. Batches travel through bounded
//! channels, so a slow shard slows the reader instead of growing memory. Each batch carries
//! the router's watermark at the time it was sent, which is all a shard needs to close
//! sessions exactly.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use pulse_core::decode::Decoder;
use pulse_core::ingest::{Ingestor, Outcome};
use pulse_core::rollup::{self, RollupClock};
use pulse_core::shard::{Shard, ShardEvent, sketch_shape};
use pulse_core::snapshot::{self, KpiSnapshot};
use pulse_core::summary::ShardSummary;
use pulse_core::{EngineSettings, EngineState};
use pulse_ingest::state_store::StateStore;

use crate::parallel_decode;

/// Events per batch sent to a shard: large enough to amortise the channel, small enough
/// to keep shards busy together.
const BATCH: usize = 2048;
/// Batches that may wait per shard before the reader blocks.
const QUEUE: usize = 4;
/// Bytes of input per block handed to a decoding thread (about 2 000 events): the hand-over
/// costs a few microseconds, the block some milliseconds of decoding.
const BLOCK_BYTES: usize = 256 << 10;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

struct Batch {
    events: Vec<ShardEvent>,
    watermark_ms: Option<i64>,
}

/// What a replay writes besides its snapshot.
#[derive(Debug, Default)]
pub struct Outputs<'a> {
    /// A checkpoint of the state at the end of the input, sessions still open.
    pub save_state: Option<&'a StateStore>,
    /// Warehouse rollups of the final state, as NDJSON.
    pub rollups: Option<&'a Path>,
    pub include_sketches: bool,
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
        decode_threads,
        "Replay started."
    );
    let mut router = Ingestor::new(&settings, wall_ms);
    let workers: Vec<(SyncSender<Batch>, JoinHandle<Shard>)> = (0..settings.shards)
        .map(|index| spawn_shard(index, &settings))
        .collect::<Result<_>>()?;
    let mut pending: Vec<Vec<ShardEvent>> = vec![Vec::with_capacity(BATCH); settings.shards];

    let decoder = Decoder::new(&settings);
    let mut lines: u64 = 0;
    let mut last_progress = Instant::now();
    parallel_decode::prepare_lines(input, &decoder, decode_threads, BLOCK_BYTES, |block| {
        lines += block.lines;
        for record in block.records.iter() {
            if let Outcome::Accepted { shard, event } = router.route(record, None) {
                let batch = &mut pending[shard];
                batch.push(event);
                if batch.len() == BATCH {
                    let events = std::mem::replace(batch, Vec::with_capacity(BATCH));
                    send(
                        &workers[shard].0,
                        Batch {
                            events,
                            watermark_ms: router.watermark_ms(),
                        },
                    )?;
                }
            }
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let rate = lines as f64 / started.elapsed().as_secs_f64();
            let accepted = router.state().counters.accepted;
            tracing::info!(
                lines,
                accepted,
                lines_per_second = rate.round(),
                "Replaying."
            );
        }
        Ok(())
    })
    .with_context(|| format!("reading {source}"))?;
    let mut shards = Vec::with_capacity(workers.len());
    for ((sender, handle), events) in workers.into_iter().zip(pending) {
        send(
            &sender,
            Batch {
                events,
                watermark_ms: router.watermark_ms(),
            },
        )?;
        drop(sender); // Closing the channel tells the shard the input has ended.
        shards.push(
            handle
                .join()
                .map_err(|_| anyhow!("a shard thread panicked"))?,
        );
    }
    let counters = &router.state().counters;
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
    if let Some(store) = outputs.save_state {
        // Saved before the end of input closes the sessions: a live run that continues
        // from here must see the sessions still open at the hand-over.
        let state = EngineState {
            router: router.state().clone(),
            shards: shards.iter().map(|s| s.state().clone()).collect(),
        };
        let path = store
            .save(&state, &Default::default(), router.now_ms().unwrap_or(0))
            .context("--save-state")?;
        tracing::info!(path = %path.display(), "State saved; `pulse run --state` can start from it.");
    }
    shards.iter_mut().for_each(Shard::close_all);
    if let Some(file) = outputs.rollups {
        let state = EngineState {
            router: router.state().clone(),
            shards: shards.iter().map(|s| s.state().clone()).collect(),
        };
        let clock = RollupClock {
            now_ms: router.now_ms(),
            computed_at_ms: wall_ms,
        };
        let records = rollup::rollups(&state, &settings, clock, outputs.include_sketches);
        pulse_ingest::rollups::write_file(file, &records).context("--rollups")?;
        tracing::info!(records = records.len(), file = %file.display(), "Rollups written.");
    }
    let at = router.summary_point();
    let shape = sketch_shape(&settings);
    let summaries: Vec<ShardSummary> = shards
        .iter()
        .map(|s| s.state().summarize(at, shape))
        .collect();
    let mut calendar = router.calendar().clone();
    Ok(snapshot::build(
        router.state(),
        &summaries,
        &mut calendar,
        shape,
        router.now_ms(),
    ))
}

fn spawn_shard(
    index: usize,
    settings: &EngineSettings,
) -> Result<(SyncSender<Batch>, JoinHandle<Shard>)> {
    let (sender, receiver) = sync_channel::<Batch>(QUEUE);
    let mut shard = Shard::new(settings);
    let handle = std::thread::Builder::new()
        .name(format!("shard-{index}"))
        .spawn(move || {
            for batch in receiver {
                for event in &batch.events {
                    shard.apply(event);
                }
                if let Some(watermark) = batch.watermark_ms {
                    shard.advance(watermark);
                }
            }
            shard
        })
        .context("starting a shard thread")?;
    Ok((sender, handle))
}

fn send(sender: &SyncSender<Batch>, batch: Batch) -> Result<()> {
    sender
        .send(batch)
        .map_err(|_| anyhow!("a shard thread stopped unexpectedly"))
}
