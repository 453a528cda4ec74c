//! Rollup sinks: warehouse records (see [`pulse_core::rollup`]) to NDJSON files and Kafka.
//!
//! A [`RollupWriter`] belongs to one source loop (Kafka or the demo). Every
//! `rollups.interval` the loop hands it a copy of the state ([`Pipeline::state`], the same
//! barrier copy a checkpoint takes); computing the records, writing the file and awaiting
//! Kafka deliveries all run in a spawned task (the computation on a blocking thread), so
//! ingestion only pauses while the workers copy their state. One emission is in flight at a
//! time; a clean stop waits for it and emits once more from the final state.
//!
//! Files: `rollups-YYYY-MM-DD.ndjson` in `rollups.dir`, named by the emission's date in the
//! configured zone, appended to and synced after each emission. A line torn by a crash is cut
//! off before the next append, so every line of a file is a whole record.
//!
//! The decision to know: an emission carries only the records that changed since the
//! previous successful one (value, finality or sketch), and the first emission of a process
//! carries them all. A day's records stop changing once it is final, so full dumps would
//! write the same 36 days of records every few minutes (hundreds of megabytes a day) for
//! the warehouse to discard; loads upsert on `key`, so skipping an unchanged record loses
//! nothing. A failed emission keeps the previous state of what was sent, so its records go
//! out again with the next one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pulse_core::rollup::{self, Rollup, RollupClock};
use pulse_core::time::{Calendar, date_of};
use pulse_core::{EngineSettings, EngineState};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::task::JoinError;

use crate::clock::wall_ms;
use crate::periodic::Periodic;
use crate::pipeline::Pipeline;
use crate::workers::WorkerStopped;

/// Where and how often rollups go, already validated by the binary.
#[derive(Debug, Clone)]
pub struct RollupOptions {
    pub interval: Duration,
    /// Directory of the daily NDJSON files; `None` writes no files.
    pub dir: Option<PathBuf>,
    /// Kafka topic (records keyed by `key`); `None` sends none. Needs a broker: used by
    /// `pulse run` only.
    pub topic: Option<String>,
    /// Attach the day's HLL sketch to `1d` distinct-user records.
    pub include_sketches: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("cannot write rollups to {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{failed} of {sent} rollups were not delivered to topic {topic}; first error: {first}")]
    Delivery {
        topic: String,
        failed: usize,
        sent: usize,
        first: String,
    },
    #[error("the rollup task failed: {0}")]
    Task(String),
}

/// Counters of a writer, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupStatus {
    pub emissions_total: u64,
    pub failures_total: u64,
    /// Records written (to the file or the topic) by the last successful emission.
    pub last_records: usize,
}

/// What one emission did; the fingerprints to keep depend on whether it succeeded.
#[derive(Debug)]
struct Emission {
    records: usize,
    path: Option<PathBuf>,
    /// Fingerprints of every current record, to compare the next emission with.
    fingerprints: HashMap<String, u64>,
    /// Fingerprints as they were before this emission (kept on failure).
    previous: HashMap<String, u64>,
    result: Result<(), RollupError>,
}

/// Emits rollups of a pipeline's state on a schedule. Created by the binary, driven by the
/// source loop (`tick` every refresh, `finish` at a clean stop); dropping it abandons an
/// emission in flight (its records go out again with the next process's first emission).
pub struct RollupWriter {
    settings: EngineSettings,
    options: RollupOptions,
    /// Present once [`RollupWriter::send_to`] has given one (a topic is configured).
    producer: Option<FutureProducer>,
    job: Periodic<Emission>,
    fingerprints: HashMap<String, u64>,
    status: RollupStatus,
}

impl std::fmt::Debug for RollupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollupWriter")
            .field("options", &self.options)
            .field("kafka", &self.producer.is_some())
            .field("in_flight", &self.job.is_running())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl RollupWriter {
    /// `settings` are the engine's (zone, sketch shape, session rules).
    pub fn new(settings: EngineSettings, options: RollupOptions) -> RollupWriter {
        let interval = options.interval;
        RollupWriter {
            settings,
            options,
            producer: None,
            job: Periodic::new(interval),
            fingerprints: HashMap::new(),
            status: RollupStatus::default(),
        }
    }

    pub fn status(&self) -> &RollupStatus {
        &self.status
    }

    /// The rollup topic configured, if any: the Kafka source creates it and a producer for
    /// it (`kafka::admin::rollup_producer`) and hands that over.
    pub fn topic(&self) -> Option<&str> {
        self.options.topic.as_deref()
    }

    /// Sends every emission to the rollup topic through `producer` too.
    pub fn send_to(&mut self, producer: FutureProducer) {
        self.producer = Some(producer);
    }

    /// Call every refresh: collects a finished emission and starts the next one when due.
    pub async fn tick(&mut self, pipeline: &mut Pipeline) -> Result<(), WorkerStopped> {
        if let Some(finished) = self.job.poll().await {
            self.record(finished);
        }
        if self.job.due() {
            let state = pipeline.state().await?;
            self.start(state, pipeline.ingestor().now_ms());
        }
        Ok(())
    }

    /// A last emission from the final state, waited for: a clean stop.
    pub async fn finish(&mut self, pipeline: &mut Pipeline) -> Result<(), WorkerStopped> {
        self.wait().await;
        let state = pipeline.state().await?;
        self.start(state, pipeline.ingestor().now_ms());
        self.wait().await;
        Ok(())
    }

    /// Starts an emission of `state`, whose clock reads `now_ms`.
    pub fn start(&mut self, state: EngineState, now_ms: Option<i64>) {
        let settings = self.settings.clone();
        let options = self.options.clone();
        let producer = self.producer.clone();
        let previous = std::mem::take(&mut self.fingerprints);
        self.job.start(async move {
            let computed_at_ms = wall_ms();
            let prepared = tokio::task::spawn_blocking(move || {
                let clock = RollupClock {
                    now_ms,
                    computed_at_ms,
                };
                let records = rollup::rollups(&state, &settings, clock, options.include_sketches);
                let (changed, fingerprints) = changed_since(&records, &previous);
                let lines: Vec<(String, String)> = changed
                    .into_iter()
                    .map(|r| (r.key.clone(), to_line(r)))
                    .collect();
                let mut path = None;
                let mut result = Ok(());
                if let Some(dir) = &options.dir
                    && !lines.is_empty()
                {
                    let file = dir.join(file_name(&settings, computed_at_ms));
                    result = append_lines(&file, lines.iter().map(|(_, line)| line.as_str()));
                    path = Some(file);
                }
                (lines, fingerprints, previous, path, result)
            })
            .await;
            let (lines, fingerprints, previous, path, mut result) = match prepared {
                Ok(prepared) => prepared,
                Err(error) => {
                    return Emission {
                        records: 0,
                        path: None,
                        fingerprints: HashMap::new(),
                        previous: HashMap::new(),
                        result: Err(RollupError::Task(error.to_string())),
                    };
                }
            };
            if let (Some(producer), Some(topic)) = (&producer, &options.topic)
                && result.is_ok()
            {
                result = send(producer, topic, &lines).await;
            }
            Emission {
                records: lines.len(),
                path,
                fingerprints,
                previous,
                result,
            }
        });
    }

    /// Waits for the emission in flight, if any, and records its outcome.
    pub async fn wait(&mut self) {
        if let Some(finished) = self.job.wait().await {
            self.record(finished);
        }
    }

    fn record(&mut self, finished: Result<Emission, JoinError>) {
        let emission = match finished {
            Ok(emission) => emission,
            Err(error) => {
                self.status.failures_total += 1;
                tracing::error!(%error, "The rollup task crashed.");
                return;
            }
        };
        match emission.result {
            Ok(()) => {
                self.fingerprints = emission.fingerprints;
                self.status.emissions_total += 1;
                self.status.last_records = emission.records;
                let path = emission.path.as_ref().map(|p| p.display().to_string());
                if self.status.emissions_total == 1 {
                    tracing::info!(records = emission.records, file = ?path, "Rollups written.");
                } else {
                    tracing::debug!(records = emission.records, file = ?path, "Rollups written.");
                }
            }
            Err(error) => {
                self.fingerprints = emission.previous;
                self.status.failures_total += 1;
                tracing::error!(%error, "Rollups not written; they are retried with the next emission.");
            }
        }
    }
}

/// The records that differ from what was last sent, and the fingerprints of all current
/// records (the state to compare the next emission with; keys that left the ring drop out).
fn changed_since<'a>(
    records: &'a [Rollup],
    previous: &HashMap<String, u64>,
) -> (Vec<&'a Rollup>, HashMap<String, u64>) {
    let mut changed = Vec::new();
    let mut fingerprints = HashMap::with_capacity(records.len());
    for record in records {
        let print = fingerprint(record);
        if previous.get(&record.key) != Some(&print) {
            changed.push(record);
        }
        fingerprints.insert(record.key.clone(), print);
    }
    (changed, fingerprints)
}

/// What makes a record worth sending again: its value, finality and sketch (not its
/// `computed_at`, which changes every time).
fn fingerprint(record: &Rollup) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&record.value.to_bits().to_le_bytes());
    hasher.update(&[u8::from(record.is_final)]);
    hasher.update(record.sketch.as_deref().unwrap_or("").as_bytes());
    hasher.digest()
}

fn to_line(record: &Rollup) -> String {
    serde_json::to_string(record).expect("a rollup always serialises")
}

/// `rollups-YYYY-MM-DD.ndjson`, by the date of `at_ms` in the engine's zone.
pub fn file_name(settings: &EngineSettings, at_ms: i64) -> String {
    let day = Calendar::new(settings.timezone.clone()).day_of(at_ms);
    format!("rollups-{}.ndjson", date_of(day))
}

/// Writes records as NDJSON, one per line.
pub fn write_ndjson(out: &mut impl Write, records: &[Rollup]) -> std::io::Result<()> {
    for record in records {
        serde_json::to_writer(&mut *out, record)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Writes records to a new file (replacing one of that name): `pulse replay --rollups`.
pub fn write_file(path: &Path, records: &[Rollup]) -> Result<(), RollupError> {
    let error = |source| RollupError::File {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(error)?;
    let mut out = std::io::BufWriter::new(file);
    write_ndjson(&mut out, records).map_err(error)?;
    out.into_inner()
        .map_err(|e| error(e.into_error()))?
        .sync_all()
        .map_err(error)
}

/// Appends whole lines to `path` (creating it and its directory) and syncs them.
fn append_lines<'a>(path: &Path, lines: impl Iterator<Item = &'a str>) -> Result<(), RollupError> {
    let error = |source| RollupError::File {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(error)?;
    cut_torn_line(&mut file).map_err(error)?;
    let mut buffer = String::new();
    for line in lines {
        buffer.push_str(line);
        buffer.push('\n');
    }
    // One write per emission: concurrent readers see whole emissions more often than not,
    // and a crash leaves at most one torn line, which the next append cuts off.
    file.write_all(buffer.as_bytes()).map_err(error)?;
    file.sync_data().map_err(error)
}

/// Truncates a file that does not end with a newline back to its last newline.
fn cut_torn_line(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|b| *b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    tracing::warn!(
        bytes = len - keep,
        "Cut a torn last line off the rollup file (an earlier write was interrupted)."
    );
    file.set_len(keep)
}

/// Sends lines keyed by their record key and waits for every delivery.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    lines: &[(String, String)],
) -> Result<(), RollupError> {
    let mut in_flight = FuturesUnordered::new();
    let (mut failed, mut first) = (0usize, None::<String>);
    let mut note = |error: String, failed: &mut usize| {
        *failed += 1;
        first.get_or_insert(error);
    };
    for (key, line) in lines {
        loop {
            let record = FutureRecord::to(topic).key(key).payload(line);
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    break;
                }
                // librdkafka's queue is full: let some deliveries finish, then retry.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if !in_flight.is_empty() =>
                {
                    if let Some(Ok(Err((error, _)))) = in_flight.next().await {
                        note(error.to_string(), &mut failed);
                    }
                }
                Err((error, _)) => {
                    note(error.to_string(), &mut failed);
                    break;
                }
            }
        }
    }
    while let Some(result) = in_flight.next().await {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => note(error.to_string(), &mut failed),
            Err(_) => note("delivery cancelled".to_owned(), &mut failed),
        }
    }
    match first {
        None => Ok(()),
        Some(first) => Err(RollupError::Delivery {
            topic: topic.to_owned(),
            failed,
            sent: lines.len(),
            first,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_workload::{WorkloadConfig, generate};

    /// Every record in the directory's files, oldest file first (a run may cross midnight).
    fn lines_of(dir: &Path) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.iter().all(|f| {
            let name = f.file_name().unwrap().to_str().unwrap();
            name.starts_with("rollups-") && name.ends_with(".ndjson")
        }));
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn emissions_append_only_what_changed_to_the_days_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = EngineSettings {
            shards: 2,
            ..EngineSettings::default()
        };
        let config = WorkloadConfig {
            seed: 3,
            users: 150,
            ..WorkloadConfig::default()
        };
        let wall = 1_900_000_000_000;
        let mut pipeline = Pipeline::start(settings.clone(), wall, None).unwrap();
        let events = generate(&config);
        let (early, late) = events.split_at(events.len() - 50);
        for event in early {
            pipeline
                .ingest(event.to_json().as_bytes(), None)
                .await
                .unwrap();
        }
        let options = RollupOptions {
            interval: Duration::from_secs(3600),
            dir: Some(dir.path().join("rollups")),
            topic: None,
            include_sketches: false,
        };
        let mut writer = RollupWriter::new(settings.clone(), options);
        writer.tick(&mut pipeline).await.unwrap();
        assert_eq!(writer.status().emissions_total, 0, "not due yet");
        writer.finish(&mut pipeline).await.unwrap();
        let path = dir.path().join("rollups");
        let first = lines_of(&path);
        assert_eq!(writer.status().last_records, first.len());
        assert!(first.len() > 500, "the first emission carries every record");

        // Nothing new: nothing written.
        writer.finish(&mut pipeline).await.unwrap();
        assert_eq!(writer.status().last_records, 0);
        assert_eq!(lines_of(&path).len(), first.len());

        // A few more events change today's records only.
        for event in late {
            pipeline
                .ingest(event.to_json().as_bytes(), None)
                .await
                .unwrap();
        }
        writer.finish(&mut pipeline).await.unwrap();
        let all = lines_of(&path);
        let added = &all[first.len()..];
        assert!(!added.is_empty() && added.len() < 100, "{}", added.len());
        let today = first
            .iter()
            .map(|r| r["period_start"].as_str().unwrap())
            .max()
            .unwrap();
        assert!(added.iter().all(|r| r["period_start"] == today));
        assert_eq!(writer.status().emissions_total, 3);
        pipeline.stop();
    }

    #[test]
    fn a_torn_last_line_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollups-2026-03-01.ndjson");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        append_lines(&path, ["{\"d\":4}"].into_iter()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n"
        );
        std::fs::write(&path, "no newline at all").unwrap();
        append_lines(&path, ["{\"e\":5}"].into_iter()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"e\":5}\n");
    }

    #[test]
    fn files_are_named_by_the_local_date() {
        let settings = EngineSettings {
            timezone: pulse_core::settings::time_zone("America/New_York").unwrap(),
            ..EngineSettings::default()
        };
        // 2026-03-01T03:00:00Z is still February 28 in New York.
        assert_eq!(
            file_name(&settings, 1_772_334_000_000),
            "rollups-2026-02-28.ndjson"
        );
        assert_eq!(
            file_name(&EngineSettings::default(), 1_772_334_000_000),
            "rollups-2026-03-01.ndjson"
        );
    }
}
