//! `engager`: the command-line interface and daemon.

mod ab;
mod accounts;
mod airtable_conversions;
mod bench;
mod bench_ab;
mod bench_dispatch;
mod bench_personalize;
mod bench_report;
mod bench_smtp;
mod bench_tracking;
mod commands;
mod compliance;
mod deliverability;
mod deliveries;
mod doctor;
mod gdpr;
mod inbox;
mod output;
mod preview;
mod quickstart;
mod reply;
mod report;
mod review;
mod schedule;
mod serve;
mod settings;
mod summary;
mod suppression;
mod tasks;
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
    /// One message as the personalizer writes it, without sending: insights, prompt, output
    /// and the quality gate's checks.
    Preview(preview::PreviewArgs),
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
    /// What worked: sends, opens, clicks, replies, bounces, unsubscribes and conversions by
    /// step, A/B variant, channel, country, industry or day, with intervals and the funnel.
    Report(report::ReportArgs),
    /// The deliverability monitor: each channel's bounce, complaint and unsubscribe rates,
    /// its standing, and lifting a halt.
    #[command(subcommand)]
    Deliverability(deliverability::DeliverabilityCommand),
    /// Consent evidence per lead: consent, legitimate interest, CASL implied consent,
    /// withdrawals and objections (GDPR Art. 21); add, list, import.
    #[command(subcommand)]
    Consent(compliance::ConsentCommand),
    /// The compliance gate: the report of sends, the rules checked and their evidence,
    /// refusals by rule and gaps; campaign checks and lifting a compliance halt.
    #[command(subcommand)]
    Compliance(compliance::ComplianceCommand),
    /// Data-subject requests: export everything held about a person, erase it, and the
    /// compliance audit log.
    #[command(subcommand)]
    Gdpr(gdpr::GdprCommand),
    /// Rates that moved significantly for the worse lately (replies dropped, bounces jumped),
    /// per campaign and channel; exits 2 when there are any.
    Anomalies(report::AnomaliesArgs),
    /// Evidence-backed suggestions: the best channel per segment, a segment to stop
    /// contacting, the step that loses leads.
    Recommend(report::RecommendArgs),
    /// The suppression list: email addresses, phone numbers and domains never contacted;
    /// list, add, import and export it as CSV.
    #[command(subcommand)]
    Suppression(suppression::SuppressionCommand),
    /// AI-written messages of campaigns in review mode: list, show, approve, edit, reject.
    #[command(subcommand)]
    Review(review::ReviewCommand),
    /// A/B experiments of campaign steps: list them, and their results with the verdict.
    #[command(subcommand)]
    Ab(ab::AbCommand),
    /// Replies and their classification (positive, neutral, negative, out_of_office,
    /// unsubscribe): list them, or set a reply's class by hand.
    #[command(subcommand)]
    Reply(reply::ReplyCommand),
    /// Mark a lead as converted (an opportunity or a booked meeting), with an optional value.
    Convert(report::ConvertArgs),
    /// Sync leads from Airtable and write back their status.
    #[command(subcommand)]
    Airtable(commands::AirtableCommand),
    /// Measure throughput (planner, timing, ledger, dispatch, personalize, report, channels,
    /// smtp, quickstart), each against a baseline measured in the same run.
    Bench(BenchArgs),
    /// Check every configured channel (credentials, permissions, mailbox/account) and print
    /// a table of what works.
    Doctor,
    /// Serve Twilio's webhooks (delivery statuses, inbound SMS: STOP/START/HELP/replies),
    /// one-click unsubscribe links, /healthz, /readyz and /metrics, until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Read replies and bounces from the configured mailboxes ([channels.imap], [channels.graph]).
    #[command(subcommand)]
    Inbox(inbox::InboxCommand),
    /// LinkedIn steps to send by hand: list them, mark them done (--replied) or skip them.
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
}

/// `engager bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: bench::BenchCommand,
}

/// A planning pass allocates a great deal of short-lived text (rendered messages, decision
/// traces, rows): mimalloc serves that faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
