//! pulse: streaming engagement analytics.
//!
//! The binary is the edge: it reads configuration, files and (later) Kafka, owns threads
//! and the wall clock, and prints. Everything that computes a KPI lives in `pulse-core`.

mod cli;
mod config;
mod logging;
mod parallel_decode;
mod replay;
mod service;
mod state_show;

use std::process::ExitCode;

use clap::Parser;

use crate::logging::LogFormat;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let format = cli.log_format;
    logging::init(format, &cli.log_level);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Once: a JSON log line where logs are collected as JSON, else plain text.
            match format {
                LogFormat::Json => tracing::error!(error = format!("{error:#}"), "pulse stopped."),
                LogFormat::Text => eprintln!("error: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
