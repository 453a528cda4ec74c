//! The long-running commands: `run` (Kafka), `demo` (built-in generator) and `loadgen`.
//!
//! Wiring only: a tokio runtime, the HTTP exporter, the pipeline and its source, and the
//! shutdown sequence. A SIGTERM or Ctrl-C cancels one token; the source loop then drains,
//! saves and commits, the HTTP server stops, and the whole stop must finish within
//! `state.shutdown_timeout` or pulse exits with an error rather than hang.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use pulse_core::EngineSettings;
use pulse_core::partition::total_counters;
use pulse_core::snapshot::KpiSnapshot;
use pulse_export::{BuildInfo, Exporter, IngestStatus};
use pulse_ingest::checkpointer::Checkpointer;
use pulse_ingest::clock::wall_ms;
use pulse_ingest::demo::{self, DemoOptions};
use pulse_ingest::kafka::summaries::SummaryOptions;
use pulse_ingest::kafka::{self, Durability, KafkaOptions};
use pulse_ingest::rollups::{RollupOptions, RollupWriter};
use pulse_ingest::state_store::StateStore;
use pulse_ingest::{Pipeline, Sink};
use pulse_workload::producer::{self, ProducerOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, RawConfig};

/// Publishes each snapshot and status to the HTTP exporter.
struct ExporterSink(Arc<Exporter>);

impl Sink for ExporterSink {
    fn publish(&self, snapshot: KpiSnapshot, mut status: IngestStatus) {
        status.last_event_unix_ms = snapshot
            .last_event_at
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond());
        self.0.set_status(status);
        self.0.publish(snapshot);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pulse-io")
        .build()
        .context("starting the async runtime")
}

/// Completes on SIGTERM or Ctrl-C, and cancels `token`.
async fn wait_for_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received; stopping."),
        _ = term.recv() => tracing::info!("SIGTERM received; stopping."),
        () = token.cancelled() => {}
    }
    token.cancel();
}

/// Binds the HTTP listener and starts serving; returns the server task.
async fn start_http(
    address: SocketAddr,
    exporter: Arc<Exporter>,
    token: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on http.listen = {address}"))?;
    let bound = listener.local_addr()?;
    let shutdown = async move { token.cancelled().await };
    let server = tokio::spawn(pulse_export::serve(listener, exporter, shutdown));
    tracing::info!(address = %bound, "Serving http://{bound}/metrics, /v1/metrics, /healthz and /readyz.");
    Ok((bound, server))
}

fn exporter() -> Result<Arc<Exporter>> {
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: option_env!("PULSE_GIT_COMMIT")
            .unwrap_or("unknown")
            .to_owned(),
    };
    let exporter =
        Exporter::new(build).map_err(|e| anyhow!("creating the metrics registry: {e}"))?;
    exporter.set_status(IngestStatus {
        not_ready_reason: Some("starting".to_owned()),
        ..IngestStatus::default()
    });
    Ok(Arc::new(exporter))
}

/// Runs a source loop with HTTP, signals and a bounded stop.
fn serve<F, Fut>(listen: SocketAddr, shutdown_timeout: Duration, source: F) -> Result<()>
where
    F: FnOnce(Arc<Exporter>, CancellationToken) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    runtime()?.block_on(async move {
        let token = CancellationToken::new();
        let exporter = exporter()?;
        let (_, server) = start_http(listen, exporter.clone(), token.clone()).await?;
        tokio::spawn(wait_for_signal(token.clone()));
        let stop_deadline = {
            let token = token.clone();
            async move {
                token.cancelled().await;
                tokio::time::sleep(shutdown_timeout).await;
            }
        };
        let outcome = tokio::select! {
            result = source(exporter, token.clone()) => result,
            () = stop_deadline => Err(anyhow!("the clean stop took longer than state.shutdown_timeout ({shutdown_timeout:?})")),
        };
        token.cancel();
        if let Ok(Err(error)) = server.await {
            tracing::warn!(%error, "The HTTP server stopped with an error.");
        }
        outcome
    })
}

pub struct RunOptions {
    pub settings: EngineSettings,
    pub raw: RawConfig,
    pub listen: SocketAddr,
    /// Where checkpoints live: a directory or a URL (`state.url`, `state.dir`, `--state`).
    pub state: Option<String>,
    /// Start empty even if the state location holds checkpoints (they are moved aside).
    pub reset_state: bool,
}

/// Checks the state location before consuming: `--reset-state` moves it aside; otherwise
/// every partition's newest checkpoint must be usable (refusing to start names what is
/// wrong, rather than failing later at an assignment). Partitions are loaded as the
/// consumer group assigns them, not here. The single-file checkpoints of pulse before
/// object storage are rewritten per partition first (and moved aside), so that each can
/// be loaded on its own.
async fn check_state(store: &StateStore, reset_state: bool) -> Result<()> {
    if reset_state {
        let moved = store
            .reset()
            .await
            .context("--reset-state: cannot move the old checkpoints aside")?;
        tracing::warn!(
            checkpoints = moved,
            location = store.location(),
            "Starting with empty state (--reset-state); old checkpoints moved aside."
        );
        return Ok(());
    }
    let refusal = "refusing to start: the saved state cannot be used";
    let Some(saved) = store.inspect().await.context(refusal)? else {
        return Ok(());
    };
    let counters = total_counters(saved.engine.partitions.iter().map(|p| &p.inputs));
    tracing::info!(
        accepted = counters.accepted,
        partitions = saved.numbers.len(),
        location = saved.location,
        "Saved state found; each partition is loaded when the group assigns it here."
    );
    if store.upgrading() {
        let saved = store.load().await.context(refusal)?;
        if let Some(saved) = saved {
            store
                .save(
                    saved.engine,
                    &saved.numbers,
                    &saved.offsets,
                    &saved.topic_sizes,
                    saved.saved_at_ms,
                )
                .await
                .context("rewriting the single-file checkpoints per partition")?;
            saved
                .numbers
                .keys()
                .iter()
                .for_each(|key| store.release(key));
        }
    }
    Ok(())
}

/// `pulse run`: consume Kafka, serve the KPIs.
pub fn run(options: RunOptions) -> Result<()> {
    let RunOptions {
        settings,
        raw,
        listen,
        state,
        reset_state,
    } = options;
    let kafka = kafka_options(&raw);
    let repartition = raw.kafka.repartition;
    let store = state
        .map(|location| StateStore::open(&location, raw.state.keep, &config::environment()))
        .transpose()
        .context("state.url")?
        .map(|store| store.with_timeout(raw.state.timeout));
    let shutdown_timeout = raw.state.shutdown_timeout;
    let interval = raw.state.checkpoint_interval;
    let rollups = rollup_options(&raw).map(|options| RollupWriter::new(settings.clone(), options));
    serve(
        listen,
        shutdown_timeout,
        move |exporter, token| async move {
            // Loaded on the runtime that then writes: an object store's connections belong
            // to the runtime that opened them.
            if let Some(store) = &store {
                check_state(store, reset_state).await?;
            }
            let durability = store.map(|store| Durability {
                checkpointer: Checkpointer::new(store, interval),
                sizes: Default::default(),
            });
            let partitioner = settings.partitioner;
            let mut pipeline = Pipeline::start(settings, wall_ms(), None)?;
            let (kafka, stage) = match repartition {
                true => {
                    let (internal, partitions) = kafka::repartition::prepare(&kafka).await?;
                    let (input, decoder, token) =
                        (kafka.clone(), pipeline.decoder().clone(), token.clone());
                    // A failed stage stops the service: the KPIs would silently stop moving.
                    let stage = tokio::spawn(async move {
                        let stopped = token.clone().cancelled_owned();
                        let result = kafka::repartition::run(
                            input,
                            decoder,
                            partitioner,
                            partitions,
                            stopped,
                        )
                        .await;
                        if result.is_err() {
                            token.cancel();
                        }
                        result
                    });
                    (internal, Some(stage))
                }
                false => (kafka, None),
            };
            let sink = ExporterSink(exporter);
            let result = kafka::run(
                &mut pipeline,
                &kafka,
                durability,
                rollups,
                &sink,
                token.cancelled(),
            )
            .await;
            pipeline.stop();
            if let Some(stage) = stage {
                stage.await.context("the repartition stage")??;
            }
            result.map_err(Into::into)
        },
    )
}

/// `pulse demo`: the generator instead of Kafka; rollups (files only) when given.
pub fn demo(
    settings: EngineSettings,
    listen: SocketAddr,
    options: DemoOptions,
    rollups: Option<RollupOptions>,
    shutdown_timeout: Duration,
) -> Result<()> {
    println!(
        "pulse demo: generating {} users of synthetic product usage.",
        options.users
    );
    println!("  metrics:   http://{listen}/metrics");
    println!("  snapshot:  http://{listen}/v1/metrics");
    println!("  health:    http://{listen}/healthz  http://{listen}/readyz");
    serve(
        listen,
        shutdown_timeout,
        move |exporter, token| async move {
            let rollups = rollups.map(|r| RollupWriter::new(settings.clone(), r));
            let mut pipeline = Pipeline::start(settings, wall_ms(), None)?;
            let sink = ExporterSink(exporter);
            let result =
                demo::run(&mut pipeline, &options, rollups, &sink, token.cancelled()).await;
            pipeline.stop();
            result.map_err(Into::into)
        },
    )
}

/// `pulse loadgen`: produce the synthetic workload to Kafka.
/// The topic is created first, with `partitions`, if it does not exist.
pub fn loadgen(kafka: &KafkaOptions, partitions: i32, options: ProducerOptions) -> Result<()> {
    runtime()?.block_on(async move {
        let token = CancellationToken::new();
        tokio::spawn(wait_for_signal(token.clone()));
        kafka::ensure_topics(kafka, std::slice::from_ref(&options.topic), partitions).await;
        let sent = producer::produce(&options, wall_ms, token.cancelled()).await?;
        println!("{sent}");
        Ok(())
    })
}

/// Where `pulse run` sends rollups: `None` when disabled or with neither a directory nor a
/// topic.
pub fn rollup_options(raw: &RawConfig) -> Option<RollupOptions> {
    let r = &raw.rollups;
    let options = RollupOptions {
        interval: r.interval,
        dir: (!r.dir.is_empty()).then(|| PathBuf::from(&r.dir)),
        topic: (!r.topic.is_empty()).then(|| r.topic.clone()),
        include_sketches: r.include_sketches,
    };
    (r.enabled && (options.dir.is_some() || options.topic.is_some())).then_some(options)
}

pub fn summary_options(raw: &RawConfig) -> Option<SummaryOptions> {
    let s = &raw.summaries;
    s.enabled.then(|| SummaryOptions {
        topic: s.topic.clone(),
        publish_interval: s.publish_interval,
    })
}

pub fn kafka_options(raw: &RawConfig) -> KafkaOptions {
    KafkaOptions {
        brokers: raw.kafka.brokers.clone(),
        topics: raw.kafka.topics.clone(),
        group_id: raw.kafka.group_id.clone(),
        auto_offset_reset: raw.kafka.auto_offset_reset.clone(),
        dead_letter_topic: raw
            .kafka
            .dead_letters
            .then(|| raw.kafka.dead_letter_topic.clone()),
        properties: raw.kafka.properties.clone(),
        refresh: raw.http.refresh_interval,
        summaries: summary_options(raw),
    }
}
