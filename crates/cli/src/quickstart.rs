//! `engager quickstart`: a whole campaign over the example leads, simulated offline on a
//! virtual clock, with the real import, planner, dispatcher and outbox.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use engager_engine::simulation::{simulate_with_guard, EngagementModel, SimulationOptions};
use engager_engine::Catalog;
use engager_store::LeadFilter;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::commands::{add_campaign, channel_set, import_file};
use crate::output::{print_json, table};
use crate::settings;
use crate::summary::Summary;

const MARKER: &str = ".engager-quickstart";
const LEADS: &str = include_str!("../../../examples/leads.csv");
const CAMPAIGNS: &[(&str, &str)] = &[(
    "spring-outreach.toml",
    include_str!("../../../examples/campaigns/spring-outreach.toml"),
)];

/// `engager quickstart`
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Folder to create (replaced if it holds an earlier quickstart).
    #[arg(long, default_value = "engager-quickstart")]
    pub dir: PathBuf,
    /// Seed of the synthetic engagement (opens, replies, bounces, opt-outs).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Virtual days to simulate.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// Virtual start (RFC 3339).
    #[arg(long, default_value = "2026-03-02T00:00:00Z")]
    pub start: String,
}

fn config_text() -> String {
    include_str!("../../../config/engager.example.toml")
        .replace(
            "change-me-to-a-long-random-string",
            "quickstart-demo-secret-not-for-production",
        )
        .replace("level = \"warn\"", "level = \"error\"")
        // The demo company has documented its legitimate interest for B2B email to EU/UK leads.
        .replace(
            "# legitimate_interest_reference = ",
            "legitimate_interest_reference = ",
        )
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by `engager quickstart`; choose another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the earlier quickstart in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("campaigns"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "made by engager quickstart; safe to delete\n",
    )?;
    std::fs::write(dir.join("leads.csv"), LEADS)?;
    for (name, text) in CAMPAIGNS {
        std::fs::write(dir.join("campaigns").join(name), text)?;
    }
    std::fs::write(dir.join("engager.toml"), config_text())?;
    Ok(())
}

/// What a quickstart produced.
pub struct Outcome {
    imported: crate::commands::ImportOutcome,
    report: engager_engine::simulation::SimulationReport,
    summary: Summary,
    outbox: PathBuf,
    config_path: PathBuf,
    start: DateTime<Utc>,
}

/// Prepares the folder, imports, enrolls and simulates; `show_progress` draws a progress bar.
pub async fn execute(args: &QuickstartArgs, show_progress: bool) -> Result<Outcome> {
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339(&args.start)
        .with_context(|| format!("--start {:?}: expected RFC 3339", args.start))?
        .with_timezone(&Utc);
    prepare_dir(&args.dir)?;
    let config_path = args.dir.join("engager.toml");
    let (settings, mut engine) = settings::load_engine(Some(&config_path))?;
    crate::telemetry::init(&settings.telemetry.format, &settings.telemetry.level);
    engine.worker_id = "quickstart".into();
    let store = engager_store::open(&settings.store_url(&args.dir)).await?;

    let imported = import_file(store.as_ref(), &args.dir.join("leads.csv"), &[], false).await?;
    for (name, _) in CAMPAIGNS {
        add_campaign(store.as_ref(), &args.dir.join("campaigns").join(name)).await?;
    }
    let catalog = Catalog::load(store.as_ref()).await?;
    let leads = store
        .lead_ids(&LeadFilter {
            active_only: true,
            ..Default::default()
        })
        .await?;
    for campaign in catalog.all() {
        store.enroll(campaign.id, &leads, start).await?;
    }
    let outbox = settings.outbox_dir(&args.dir);
    let channels = channel_set(&engine, &outbox);
    let options = SimulationOptions {
        start,
        duration: Duration::days(i64::from(args.days)),
        tick: Duration::minutes(15),
        seed: args.seed,
        model: EngagementModel::default(),
    };

    let bar = if show_progress {
        ProgressBar::new(1)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} ticks ({msg})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("Simulating {} days", args.days));
    let guard = settings.guard()?;
    let report = simulate_with_guard(
        store.as_ref(),
        &catalog,
        &engine,
        &channels,
        &options,
        &guard,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
            if done % 96 == 0 {
                bar.set_message(format!("day {}", done / 96));
            }
        },
    )
    .await?;
    bar.finish_and_clear();
    let summary = Summary::load(store.as_ref(), &catalog).await?;
    Ok(Outcome {
        imported,
        report,
        summary,
        outbox,
        config_path,
        start,
    })
}

/// Runs the quickstart and prints its summary.
pub async fn run(args: QuickstartArgs, json: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let Outcome {
        imported,
        report,
        summary,
        outbox,
        config_path,
        start,
    } = execute(&args, !json).await?;
    if json {
        print_json(&json!({
            "dir": args.dir.display().to_string(),
            "seed": args.seed,
            "start": start.to_rfc3339(),
            "end": report.end.map(|e| e.to_rfc3339()),
            "import": {"rows": imported.parsed.rows, "inserted": imported.inserted, "updated": imported.updated, "duplicates": imported.parsed.duplicates,
                       "rejected": imported.parsed.rejected.iter().map(|r| r.to_string()).collect::<Vec<_>>()},
            "planned": report.planned,
            "sent": report.sent,
            "events": report.events,
            "steps": summary.to_json(),
            "outbox": outbox.display().to_string(),
        }));
    } else {
        println!(
            "Imported {} leads from {} rows ({} duplicate rows merged); {} rows rejected:",
            imported.inserted,
            imported.parsed.rows,
            imported.parsed.duplicates,
            imported.parsed.rejected.len()
        );
        let mut rejected = table(&["Line", "Field", "Reason"]);
        for r in &imported.parsed.rejected {
            rejected.add_row(vec![
                r.line.to_string(),
                r.field.clone().unwrap_or_else(|| "-".into()),
                r.reason.clone(),
            ]);
        }
        println!("{rejected}");
        println!(
            "Simulated {} to {} ({} ticks of 15 min, seed {}): {} deliveries planned, {} sent.",
            start.format("%a %Y-%m-%d"),
            report
                .end
                .map(|e| e.format("%a %Y-%m-%d").to_string())
                .unwrap_or_default(),
            report.ticks,
            args.seed,
            report.planned,
            report.sent
        );
        println!("{}", summary.render());
        println!(
            "Outbox: {} (email/*.eml, sms/*.json, linkedin/*.json)",
            outbox.display()
        );
        println!(
            "Explore: engager --config {} explain <lead id or email>",
            config_path.display()
        );
        println!("         engager --config {} status", config_path.display());
    }
    eprintln!(
        "Quickstart finished in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
