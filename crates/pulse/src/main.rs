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

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
