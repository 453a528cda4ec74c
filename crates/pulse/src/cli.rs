//! Command-line interface: the commands, their flags, and their wiring.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config;
use crate::logging::LogFormat;
use crate::replay;

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
    /// Validate a configuration and print the effective settings.
    CheckConfig(ConfigArgs),
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
    /// Number of shards (threads); overrides `shards` in the configuration.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Print the snapshot on one line instead of indented.
    #[arg(long)]
    pub compact: bool,
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
            let settings = raw.engine_settings()?;
            let wall_ms = args
                .wall_clock
                .unwrap_or_else(jiff::Timestamp::now)
                .as_millisecond();
            let snapshot = replay::replay_path(&args.input, settings, wall_ms)?;
            let text = if args.compact {
                serde_json::to_string(&snapshot)
            } else {
                serde_json::to_string_pretty(&snapshot)
            }?;
            println!("{text}");
            Ok(())
        }
        Command::CheckConfig(args) => {
            let raw = load_config(&args)?;
            let settings = raw.engine_settings()?;
            tracing::info!(shards = settings.shards, timezone = %raw.timezone, "Configuration is valid.");
            let text =
                toml::to_string_pretty(&raw).context("rendering the effective configuration")?;
            println!("{text}");
            Ok(())
        }
    }
}

fn load_config(args: &ConfigArgs) -> Result<config::RawConfig> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    config::load(args.config.as_deref(), &env)
}
