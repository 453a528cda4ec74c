//! Command-line interface: the commands, their flags, and their wiring.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use pulse_core::settings::ClockMode;
use pulse_ingest::demo::DemoOptions;
use pulse_ingest::rollups::RollupOptions;
use pulse_ingest::state_store::StateStore;
use pulse_workload::WorkloadConfig;
use pulse_workload::producer::ProducerOptions;

use crate::config;
use crate::logging::LogFormat;
use crate::{replay, service, state_show};

#[derive(Debug, Parser)]
#[command(
    name = "pulse",
    version,
    about = "Streaming engagement analytics: DAU/WAU/MAU, stickiness, sessions and feature adoption from product events."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level (overridden by RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute every KPI from an NDJSON file of events and print one JSON snapshot.
    ///
    /// "Now" is the latest accepted event time, and the end of the input closes every
    /// open session, so the same file always gives the same snapshot.
    Replay(ReplayArgs),
    /// The service: consume events from Kafka and serve the KPIs as Prometheus metrics.
    Run(RunArgs),
    /// The whole pipeline on a built-in generator of realistic product usage, no broker
    /// needed: 35 days of history at start, then live events.
    Demo(DemoArgs),
    /// Produce the synthetic workload to a Kafka topic (trials, tests, benchmarks).
    Loadgen(LoadgenArgs),
    /// Validate a configuration and print the effective settings (secrets masked).
    CheckConfig(ConfigArgs),
    /// Look at a state location (`state.url`) shared by a group of `pulse run`.
    #[command(subcommand)]
    State(StateCommand),
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the KPIs of every partition's newest checkpoint, merged, as one JSON snapshot:
    /// the one `pulse replay` prints for the same events (sessions still open are closed,
    /// "now" is the latest event time). Claims nothing: safe while the group runs.
    Show(StateShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct StateShowArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The state location, a directory or a URL; defaults to state.url (or state.dir).
    #[arg(long, value_name = "DIR|URL")]
    pub state_url: Option<String>,
    /// Print the snapshot on one line instead of indented.
    #[arg(long)]
    pub compact: bool,
    /// Reference instant for "future" events (RFC 3339); defaults to the wall clock.
    #[arg(long, hide = true)]
    pub wall_clock: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clock {
    /// "Now" is the wall clock: the service.
    Wall,
    /// "Now" is the latest event time: replaying history from a topic, deterministic tests.
    EventTime,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(long, value_enum, default_value = "wall")]
    pub clock: Clock,
    /// HTTP address; overrides http.listen ("127.0.0.1:0" picks a free port).
    #[arg(long)]
    pub listen: Option<String>,
    /// State location, a directory or a URL (`s3://bucket/prefix`, …); overrides state.url
    /// and state.dir.
    #[arg(long, value_name = "DIR|URL")]
    pub state: Option<String>,
    /// Start with empty state even though the state directory holds checkpoints (they are
    /// moved into a `discarded-…` folder, not deleted).
    #[arg(long)]
    pub reset_state: bool,
    /// Worker threads; overrides `shards`.
    #[arg(long)]
    pub shards: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// HTTP address; overrides http.listen.
    #[arg(long)]
    pub listen: Option<String>,
    /// Simulated users; overrides demo.users.
    #[arg(long)]
    pub users: Option<u32>,
    /// Also write warehouse rollups (daily NDJSON files) into DIR, every rollups.interval
    /// and at the stop.
    #[arg(long, value_name = "DIR")]
    pub rollups: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Bootstrap servers; overrides kafka.brokers (and KAFKA_BROKERS).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Topic to produce to (created with --partitions if missing).
    #[arg(long, default_value = "events")]
    pub topic: String,
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Events per second (default: as fast as the broker takes them).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Stop after this many events (default: the history, then stop). More than the
    /// history keeps generating live events.
    #[arg(long)]
    pub events: Option<u64>,
    /// Distinct users in the simulated population.
    #[arg(long, default_value_t = 2_000)]
    pub users: u32,
    /// Days of history to produce, ending now (or at --end).
    #[arg(long, default_value_t = 35)]
    pub days: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// End of the history (RFC 3339) instead of now: makes a workload reproducible.
    #[arg(long)]
    pub end: Option<jiff::Timestamp>,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML); keys not in it keep their defaults.
    #[arg(long, short, env = "PULSE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// NDJSON input, one event per line; "-" reads stdin.
    #[arg(long, short)]
    pub input: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Worker threads; overrides `shards` in the configuration.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Virtual partitions, as in a topic keyed by user id; overrides `partitions`. Use the
    /// partition count of the topic `pulse run` will continue on (with --save-state).
    #[arg(long, value_name = "N")]
    pub partitions: Option<usize>,
    /// Threads that decode the input (the answer does not depend on it); defaults to the
    /// number of CPUs.
    #[arg(long, value_name = "N")]
    pub decode_threads: Option<usize>,
    /// Print the snapshot on one line instead of indented.
    #[arg(long)]
    pub compact: bool,
    /// Also write the state of every partition to DIR or URL (`s3://bucket/prefix`, …), with
    /// sessions still open at the end of the input, so a `pulse run --state` group
    /// continues from it partition by partition (seed 30 days of history from a warehouse
    /// export, then go live). Virtual partition p is saved as partition p of the first of
    /// `kafka.topics`: give --partitions the topic's count. The location must hold no
    /// state of those partitions yet.
    #[arg(long, value_name = "DIR|URL")]
    pub save_state: Option<String>,
    /// Also write the warehouse rollups of the final state (every day held, every metric and
    /// window) to FILE as NDJSON, ready for the loads in deploy/warehouse/.
    #[arg(long, value_name = "FILE")]
    pub rollups: Option<PathBuf>,
    /// Reference instant for "future" events (RFC 3339); defaults to the wall clock.
    /// Tests pin it to make runs reproducible.
    #[arg(long, hide = true)]
    pub wall_clock: Option<jiff::Timestamp>,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay(args) => {
            let mut raw = load_config(&args.config)?;
            if let Some(shards) = args.shards {
                raw.shards = shards;
            }
            if let Some(partitions) = args.partitions {
                raw.partitions = partitions;
            }
            let settings = raw.engine_settings()?;
            let wall_ms = args
                .wall_clock
                .unwrap_or_else(jiff::Timestamp::now)
                .as_millisecond();
            let store = args
                .save_state
                .map(|location| StateStore::open(&location, raw.state.keep, &config::environment()))
                .transpose()
                .context("--save-state")?;
            let outputs = replay::Outputs {
                save_state: store.as_ref(),
                rollups: args.rollups.as_deref(),
                include_sketches: raw.rollups.include_sketches,
                topic: raw.kafka.topics.first().map_or("events", String::as_str),
            };
            let decode_threads = args.decode_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            });
            let snapshot =
                replay::replay_path(&args.input, settings, decode_threads, wall_ms, &outputs)?;
            print_snapshot(&snapshot, args.compact)
        }
        Command::State(StateCommand::Show(args)) => {
            let raw = load_config(&args.config)?;
            let settings = raw.engine_settings()?;
            let Some(location) = args.state_url.or_else(|| raw.state_location()) else {
                anyhow::bail!("no state location: pass --state-url or set state.url");
            };
            let store = StateStore::open(&location, raw.state.keep, &config::environment())
                .context("--state-url")?;
            let wall_ms = args
                .wall_clock
                .unwrap_or_else(jiff::Timestamp::now)
                .as_millisecond();
            let snapshot = state_show::show(&store, settings, wall_ms)?;
            print_snapshot(&snapshot, args.compact)
        }
        Command::Run(args) => {
            let mut raw = load_config(&args.config)?;
            if let Some(shards) = args.shards {
                raw.shards = shards;
            }
            if let Some(listen) = args.listen {
                raw.http.listen = listen;
            }
            let listen = raw.validate_service()?;
            let mut settings = raw.engine_settings()?;
            settings.clock = match args.clock {
                Clock::Wall => ClockMode::Wall,
                Clock::EventTime => ClockMode::EventTime,
            };
            // Every record comes with its Kafka partition: none is virtual.
            settings.partitions = 1;
            let state = args.state.or_else(|| raw.state_location());
            service::run(service::RunOptions {
                settings,
                raw,
                listen,
                state,
                reset_state: args.reset_state,
            })
        }
        Command::Demo(args) => {
            let mut raw = load_config(&args.config)?;
            raw.use_demo_funnels();
            if let Some(listen) = args.listen {
                raw.http.listen = listen;
            }
            if let Some(users) = args.users {
                raw.demo.users = users;
            }
            raw.use_demo_outcomes();
            if raw.dimensions.is_empty() {
                raw.dimensions
                    .extend([config::RawDimension::demo_platform()]);
            }
            let listen = raw.validate_service()?;
            let mut settings = raw.engine_settings()?;
            settings.clock = ClockMode::Wall;
            let options = DemoOptions {
                users: raw.demo.users,
                seed: raw.demo.seed,
                backfill_days: settings.retention_days,
                refresh: raw.http.refresh_interval,
                outcomes: true,
            };
            // No broker in the demo: files only, wherever --rollups says.
            let rollups = args.rollups.map(|dir| RollupOptions {
                interval: raw.rollups.interval,
                dir: Some(dir),
                topic: None,
                include_sketches: raw.rollups.include_sketches,
            });
            service::demo(
                settings,
                listen,
                options,
                rollups,
                raw.state.shutdown_timeout,
            )
        }
        Command::Loadgen(args) => {
            let mut raw = load_config(&args.config)?;
            if let Some(brokers) = args.brokers {
                raw.kafka.brokers = brokers;
            }
            let end_ms = args
                .end
                .unwrap_or_else(jiff::Timestamp::now)
                .as_millisecond();
            let workload = WorkloadConfig {
                seed: args.seed,
                users: args.users,
                days: args.days,
                end_ms,
                ..WorkloadConfig::default()
            };
            workload.validate().context("invalid loadgen options")?;
            let kafka = service::kafka_options(&raw);
            let mut client = kafka.client_config();
            // Keyed by user id, partitioned as `partitioner` says: the partitions a replay
            // with the same setting reproduces (unless the operator chose otherwise).
            if !kafka.properties.contains_key("partitioner") {
                client.set("partitioner", raw.partitioner.librdkafka_name());
            }
            let producer = ProducerOptions {
                client,
                topic: args.topic,
                rate: args.rate,
                events: args.events,
                workload,
            };
            service::loadgen(&kafka, args.partitions, producer)
        }
        Command::CheckConfig(args) => {
            let mut raw = load_config(&args)?;
            let settings = raw.engine_settings()?;
            raw.validate_service()?;
            tracing::info!(shards = settings.shards, timezone = %raw.timezone, "Configuration is valid.");
            raw.kafka.properties = raw.kafka.masked_properties();
            let text =
                toml::to_string_pretty(&raw).context("rendering the effective configuration")?;
            println!("{text}");
            Ok(())
        }
    }
}

fn print_snapshot(snapshot: &pulse_core::KpiSnapshot, compact: bool) -> Result<()> {
    let text = if compact {
        serde_json::to_string(snapshot)
    } else {
        serde_json::to_string_pretty(snapshot)
    }?;
    println!("{text}");
    Ok(())
}

fn load_config(args: &ConfigArgs) -> Result<config::RawConfig> {
    config::load(args.config.as_deref(), &config::environment())
}
