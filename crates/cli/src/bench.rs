//! `engager bench`: throughput figures measured in-process.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Planner throughput through all gates on SQLite.
    Planner {
        /// Leads to plan.
        #[arg(long, default_value_t = 100_000)]
        leads: usize,
    },
}

/// Runs a benchmark.
pub async fn run(command: BenchCommand, json: bool) -> Result<ExitCode> {
    let _ = (command, json);
    anyhow::bail!("benchmarks are being written")
}
