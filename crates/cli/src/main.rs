//! `engager`: the command-line interface and daemon.

mod bench;
mod bench_dispatch;
mod bench_smtp;
mod commands;
mod deliveries;
mod doctor;
mod output;
mod quickstart;
mod schedule;
mod settings;
mod summary;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Engager: self-hosted, multi-channel sales outreach that never double-sends.
#[derive(Debug, Parser)]
#[command(name = "engager", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./engager.toml when present).
    #[arg(long, global = true, env = "ENGAGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate 14 days of a 3-step campaign over 230 example leads, offline, on a virtual clock.
    Quickstart(quickstart::QuickstartArgs),
    /// Create engager.toml (with a fresh link secret) and the database.
    Init(commands::InitArgs),
    /// Import leads from a CSV or JSONL file.
    Import(commands::ImportArgs),
    /// Manage campaigns.
    #[command(subcommand)]
    Campaign(commands::CampaignCommand),
    /// Enroll leads in a campaign.
    Enroll(commands::EnrollArgs),
    /// Plan due steps and dispatch due deliveries once, or keep doing it with --daemon.
    Run(commands::RunArgs),
    /// Counts of leads, enrollments and deliveries, and the per-step summary.
    Status,
    /// Why a lead did or did not get each step: every gate, pass or fail, with its reason.
    Explain(commands::ExplainArgs),
    /// A lead's next slots and why: zone, window, holidays, best-hour scores, budget.
    Schedule(schedule::ScheduleArgs),
    /// Inspect the delivery ledger and the outbox.
    #[command(subcommand)]
    Outbox(commands::OutboxCommand),
    /// Deliveries whose outcome is unknown after a crash or timeout, and their resolution.
    #[command(subcommand)]
    Deliveries(deliveries::DeliveriesCommand),
    /// Record an engagement event by hand (a reply, an unsubscribe, a meeting).
    Event(commands::EventArgs),
    /// Sync leads from Airtable and write back their status.
    #[command(subcommand)]
    Airtable(commands::AirtableCommand),
    /// Measure throughput (planner, ledger, quickstart, channels).
    Bench(BenchArgs),
    /// Check every configured channel (credentials, permissions, mailbox/account) and print
    /// a table of what works.
    Doctor,
}

/// `engager bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: bench::BenchCommand,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
