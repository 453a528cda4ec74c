//! The router side of the runtime: records in, batches to workers, snapshots out.
//!
//! One [`Pipeline`] is driven by one source loop (Kafka, the demo generator, or a replayed
//! file). It owns the [`Ingestor`] (clock, classification, feature registry, what it counted
//! of each partition), buffers accepted events per worker,
//! and sends a batch when it is full — awaiting a full queue, which is the back pressure
//! that slows the source. [`Pipeline::snapshot`] flushes every buffer and puts a barrier
//! through all workers, so the snapshot covers exactly the records routed before the call:
//! the source may commit their offsets once it returns.

use std::time::{Duration, Instant};

use pulse_core::decode::Decoder;
use pulse_core::dimensions::ValueBuffer;
use pulse_core::event::PartitionEvent;
use pulse_core::families::{KpiState, Summary};
use pulse_core::ingest::{Ingestor, Outcome, RouterState};
use pulse_core::partition::{Counters, PartitionInputs, PartitionState};
use pulse_core::prepare::Prepared;
use pulse_core::settings::ClockMode;
use pulse_core::snapshot::{self, KpiSnapshot};
use pulse_core::status::IngestStatus;
use pulse_core::{EngineSettings, EngineState, Rejection};

use crate::workers::{WorkerPool, WorkerStopped};
use pulse_core::family::Rules;

/// Events per batch: amortises the channel without delaying workers for long.
const BATCH: usize = 1024;

/// Where snapshots and status go (the HTTP exporter in the service, a test collector in
/// tests).
pub trait Sink: Send + Sync {
    fn publish(&self, snapshot: KpiSnapshot, status: IngestStatus);
}

#[derive(Debug)]
pub struct Pipeline {
    settings: EngineSettings,
    ingestor: Ingestor,
    pool: WorkerPool,
    pending: Vec<Vec<PartitionEvent>>,
    last_snapshot: Option<Duration>,
    /// The dimension values of the record [`Pipeline::route`] decodes, reused.
    values: ValueBuffer,
}

impl Pipeline {
    /// Starts the worker threads, from saved state when given.
    pub fn start(
        settings: EngineSettings,
        wall_ms: i64,
        saved: Option<EngineState>,
    ) -> std::io::Result<Pipeline> {
        let (ingestor, states) = match saved {
            Some(state) => {
                let inputs = state.inputs();
                let kpis = state
                    .partitions
                    .into_iter()
                    .map(|p| (p.partition as usize, p.kpis))
                    .collect();
                (
                    Ingestor::with_state(&settings, wall_ms, state.router, inputs),
                    kpis,
                )
            }
            None => (Ingestor::new(&settings, wall_ms), Vec::new()),
        };
        let pool = WorkerPool::start(&settings, states)?;
        let pending = (0..settings.shards)
            .map(|_| Vec::with_capacity(BATCH))
            .collect();
        Ok(Pipeline {
            settings,
            ingestor,
            pool,
            pending,
            last_snapshot: None,
            values: ValueBuffer::default(),
        })
    }

    /// Routes one record (of its user's virtual partition) and sends its worker's batch
    /// when full.
    pub async fn ingest(
        &mut self,
        record: &[u8],
        fallback_ts_ms: Option<i64>,
    ) -> Result<Outcome, WorkerStopped> {
        let outcome = self.route(record, fallback_ts_ms, None);
        self.send_full_batches().await?;
        Ok(outcome)
    }

    /// Routes one record of `partition` (`None`: its user's virtual partition) into its
    /// worker's buffer without waiting; call [`Pipeline::send_full_batches`] afterwards. (A
    /// Kafka message borrows the consumer and is not `Send`, so its records are routed first
    /// and the waiting happens after.)
    pub fn route(
        &mut self,
        record: &[u8],
        fallback_ts_ms: Option<i64>,
        partition: Option<usize>,
    ) -> Outcome {
        // The scratch buffer is a field apart from the router's, so the prepared record can
        // borrow it while the router changes.
        self.values.clear();
        let prepared = self.ingestor.decoder().prepare(record, &mut self.values);
        let outcome = self.ingestor.route(prepared, fallback_ts_ms, partition);
        self.hold(outcome)
    }

    /// [`Pipeline::route`] for a record decoded beforehand (on another thread, say).
    pub fn route_prepared(
        &mut self,
        prepared: Result<Prepared<'_>, Rejection>,
        fallback_ts_ms: Option<i64>,
        partition: Option<usize>,
    ) -> Outcome {
        let outcome = self.ingestor.route(prepared, fallback_ts_ms, partition);
        self.hold(outcome)
    }

    /// Puts a routed event in its worker's buffer.
    fn hold(&mut self, outcome: Outcome) -> Outcome {
        if let Outcome::Accepted { worker, event } | Outcome::Late { worker, event } = outcome {
            self.pending[worker].push(event);
        }
        outcome
    }

    /// Sends every buffer that has reached a batch; waits while a worker's queue is full.
    pub async fn send_full_batches(&mut self) -> Result<(), WorkerStopped> {
        let watermark = self.ingestor.watermark_ms();
        for worker in 0..self.pending.len() {
            if self.pending[worker].len() >= BATCH {
                let events =
                    std::mem::replace(&mut self.pending[worker], Vec::with_capacity(BATCH));
                self.pool.apply(worker, events, watermark).await?;
            }
        }
        Ok(())
    }

    /// Counts a record of `partition` that was rejected before decoding (e.g. a broken
    /// batch envelope, an over-long line).
    pub fn count_rejection(&mut self, reason: Rejection, partition: Option<usize>) {
        self.ingestor.count_rejection(reason, partition);
    }

    /// See [`pulse_core::ingest::Ingestor::first_copy`].
    pub fn first_copy(
        &mut self,
        partition: usize,
        upstream: (&str, i32, pulse_core::upstream::UpstreamPosition),
    ) -> bool {
        self.ingestor.first_copy(partition, upstream)
    }

    /// Moves the wall clock. When the source is caught up (nothing left to read), the
    /// session watermark moves too, so sessions close while no event arrives: to the wall
    /// clock less the allowed lateness, or, on the event-time clock, to the latest event
    /// time (as a single ordered stream would have it; the end of a topic is not the end
    /// of the input, so open sessions stay open). With a backlog it must not move, or the
    /// backlog's events would all count as too late for sessions.
    pub fn advance_clock(&mut self, wall_ms: i64, caught_up: bool) {
        self.ingestor.set_wall_clock(wall_ms);
        if !caught_up {
            return;
        }
        let watermark = match self.settings.clock {
            ClockMode::Wall => Some(wall_ms.saturating_sub(self.settings.allowed_lateness_ms)),
            ClockMode::EventTime => self.ingestor.state().max_event_ms,
        };
        if let Some(watermark) = watermark {
            self.ingestor.advance_watermark(watermark);
        }
    }

    /// See [`Ingestor::use_source_watermark`].
    pub fn use_source_watermark(&mut self) {
        self.ingestor.use_source_watermark();
    }

    /// See [`Ingestor::observe_newest_event`].
    pub fn observe_newest_event(&mut self, newest_ms: i64) {
        self.ingestor.observe_newest_event(newest_ms);
    }

    /// See [`Ingestor::advance_watermark`].
    pub fn advance_watermark(&mut self, watermark_ms: i64) {
        self.ingestor.advance_watermark(watermark_ms);
    }

    /// The sketches' shape (how summaries of other instances merge in).
    pub fn sketch_shape(&self) -> pulse_core::sketch::SketchShape {
        Rules::of(&self.settings).shape
    }

    pub fn ingestor(&self) -> &pulse_core::ingest::Ingestor {
        &self.ingestor
    }

    /// Sends every buffered event, and the current watermark to every worker.
    async fn flush(&mut self) -> Result<(), WorkerStopped> {
        let watermark = self.ingestor.watermark_ms();
        for worker in 0..self.pending.len() {
            let events = std::mem::replace(&mut self.pending[worker], Vec::with_capacity(BATCH));
            self.pool.apply(worker, events, watermark).await?;
        }
        Ok(())
    }

    /// A consistent snapshot of everything routed so far.
    pub async fn snapshot(&mut self) -> Result<KpiSnapshot, WorkerStopped> {
        self.flush().await?;
        let started = Instant::now();
        let at = self.ingestor.summary_point();
        let summaries = self.pool.summarize(at).await?;
        let snapshot = self.build(self.ingestor.state(), &self.ingestor.counters(), &summaries);
        self.ingestor.found_shared_users(&snapshot);
        self.last_snapshot = Some(started.elapsed());
        Ok(snapshot)
    }

    /// Every partition's summary of everything routed so far, by partition number, with
    /// what the router counted of it: the parts of a global view
    /// ([`pulse_core::global_view`]), which [`Pipeline::build_snapshot`] then turns into
    /// the snapshot.
    pub async fn partition_summaries(
        &mut self,
    ) -> Result<Vec<(usize, PartitionInputs, Summary)>, WorkerStopped> {
        self.flush().await?;
        let at = self.ingestor.summary_point();
        let summaries = self.pool.summarize_each(at).await?;
        let inputs = self.ingestor.inputs();
        Ok(summaries
            .into_iter()
            .map(|(number, summary)| {
                let counted = inputs.get(number).cloned().unwrap_or_default();
                (number, counted, summary)
            })
            .collect())
    }

    /// The snapshot of `summaries` (of partitions or workers), with the stream's `counters`
    /// and the `router` whose names and clock to use; timed as the latest snapshot.
    pub fn build_snapshot(
        &mut self,
        router: &RouterState,
        counters: &Counters,
        summaries: &[Summary],
    ) -> KpiSnapshot {
        let started = Instant::now();
        let snapshot = self.build(router, counters, summaries);
        self.ingestor.found_shared_users(&snapshot);
        self.last_snapshot = Some(started.elapsed());
        snapshot
    }

    fn build(
        &self,
        router: &RouterState,
        counters: &Counters,
        summaries: &[Summary],
    ) -> KpiSnapshot {
        let mut calendar = self.ingestor.calendar().clone();
        let mut snapshot = snapshot::build(
            router,
            counters,
            summaries,
            &mut calendar,
            Rules::of(&self.settings).shape,
            // On the event-time clock, `router`'s: a global view's is the newest of all.
            match self.settings.clock {
                ClockMode::EventTime => router.max_event_ms,
                ClockMode::Wall => self.ingestor.now_ms(),
            },
        );
        // The worker threads, however many summaries (partitions) were merged.
        snapshot.state.shards = self.pool.len();
        snapshot
    }

    /// How long the latest [`Pipeline::snapshot`] took, once there was one.
    pub fn last_snapshot_seconds(&self) -> Option<f64> {
        self.last_snapshot.map(|d| d.as_secs_f64())
    }

    /// Closes every open session: the end of a finite input.
    pub async fn close_all_sessions(&mut self) -> Result<(), WorkerStopped> {
        self.flush().await?;
        self.pool.close_all().await
    }

    /// The whole engine state, consistent with everything routed so far.
    pub async fn state(&mut self) -> Result<EngineState, WorkerStopped> {
        self.flush().await?;
        let kpis = self.pool.export().await?;
        Ok(EngineState::assemble(
            &self.settings,
            self.ingestor.state().clone(),
            self.ingestor.inputs(),
            kpis,
        ))
    }

    /// Takes over partition `number` from a saved state (`router`: the router that saved
    /// it, whose ids are moved into this one's).
    pub async fn install(
        &mut self,
        number: usize,
        router: &RouterState,
        state: PartitionState,
    ) -> Result<(), WorkerStopped> {
        self.flush().await?;
        let kpis = self
            .ingestor
            .take_over(number, router, state, &self.settings);
        self.pool.install(number, kpis).await
    }

    /// Gives partition `number` up: its whole state (for a final checkpoint), and nothing
    /// of it left here. Every record routed before is in it.
    pub async fn release(&mut self, number: usize) -> Result<EngineState, WorkerStopped> {
        self.flush().await?;
        let kpis = self.pool.take(number).await?;
        let inputs = self.ingestor.release(number);
        let partitions = match kpis {
            Some(kpis) => vec![PartitionState {
                partition: number as u32,
                inputs,
                kpis,
            }],
            None if inputs != PartitionInputs::default() => vec![PartitionState {
                partition: number as u32,
                inputs,
                kpis: KpiState::empty(&self.settings),
            }],
            None => Vec::new(),
        };
        Ok(EngineState {
            router: self.ingestor.state().clone(),
            partitions,
        })
    }

    /// The decoder records are prepared with (any thread may use a clone of it).
    pub fn decoder(&self) -> &Decoder {
        self.ingestor.decoder()
    }

    /// Stops the worker threads.
    pub fn stop(self) {
        self.pool.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_core::Engine;
    use pulse_workload::{WorkloadConfig, generate};

    /// Partitions read in uneven chunks, as a Kafka consumer does, with the watermark held
    /// back for the slowest partition, give exactly the single ordered stream's answer,
    /// breakdowns included (caps above the values used: which values make a cut depends on
    /// the order the router sees them in).
    #[tokio::test(flavor = "multi_thread")]
    async fn partitioned_reading_equals_the_ordered_stream() {
        let config = WorkloadConfig {
            seed: 41,
            users: 300,
            platforms: vec!["web".into(), "ios".into()],
            tenants: 12,
            ..WorkloadConfig::default()
        };
        let lines: Vec<(String, String)> = generate(&config)
            .iter()
            .map(|e| (e.user.to_string(), e.to_json()))
            .collect();
        let dimension = |name: &str, path: &str| pulse_core::dimensions::DimensionSettings {
            name: name.into(),
            paths: vec![path.into()],
            max_values: 25,
        };
        let settings = EngineSettings {
            shards: 2,
            dimensions: vec![
                dimension("platform", "/platform"),
                dimension("tenant", "/tenant_id"),
            ],
            ..EngineSettings::default()
        };
        let wall = 1_900_000_000_000;
        let mut engine = Engine::new(settings.clone(), wall);
        for (_, line) in &lines {
            engine.ingest(line.as_bytes(), None);
        }
        let expected = engine.snapshot();

        let mut partitions: Vec<Vec<&str>> = vec![Vec::new(); 3];
        for (user, line) in &lines {
            partitions[(xxhash_rust::xxh3::xxh3_64(user.as_bytes()) % 3) as usize].push(line);
        }
        let mut pipeline = Pipeline::start(settings, wall, None).unwrap();
        pipeline.use_source_watermark();
        let mut cursor = [0usize; 3];
        let mut newest = [None::<i64>; 3];
        let chunks = [700, 250, 1300];
        while (0..3).any(|p| cursor[p] < partitions[p].len()) {
            for p in 0..3 {
                let end = (cursor[p] + chunks[p]).min(partitions[p].len());
                for line in &partitions[p][cursor[p]..end] {
                    if let Outcome::Accepted { event, .. } =
                        pipeline.route(line.as_bytes(), None, Some(p))
                    {
                        newest[p] =
                            Some(newest[p].map_or(event.ts_ms, |n: i64| n.max(event.ts_ms)));
                    }
                }
                cursor[p] = end;
                let reading: Vec<usize> = (0..3)
                    .filter(|q| cursor[*q] < partitions[*q].len())
                    .collect();
                let min = reading
                    .iter()
                    .map(|q| newest[*q])
                    .collect::<Option<Vec<i64>>>();
                if let Some(min) = min.and_then(|m| m.into_iter().min()) {
                    pipeline.advance_watermark(min);
                }
                pipeline.send_full_batches().await.unwrap();
            }
        }
        pipeline.advance_clock(wall, true);
        let got = pipeline.snapshot().await.unwrap();
        pipeline.stop();
        assert_eq!(got.events.late_for_sessions, 0);
        assert_eq!(
            serde_json::to_value(got.kpis.sessions.sessions).unwrap(),
            serde_json::to_value(expected.kpis.sessions.sessions).unwrap()
        );
        assert_eq!(
            got.kpis.sessions.session_durations,
            expected.kpis.sessions.session_durations
        );
        assert_eq!(
            got.kpis.activity.active_users,
            expected.kpis.activity.active_users
        );
        assert_eq!(expected.kpis.breakdowns.dimensions["tenant"].len(), 12);
        assert_eq!(got.kpis.breakdowns, expected.kpis.breakdowns);
    }
}
