//! The commands that work on a configured Engager (everything but quickstart and bench).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use clap::{Args, Subcommand};
use engager_channels::{ChannelSender, OutboxChannel, OutboxConfig};
use engager_domain::{DeliveryState, EventKind, Lead, LeadId};
use engager_engine::dispatcher::{ChannelSet, Dispatcher};
use engager_engine::planner::Planner;
use engager_engine::{Catalog, Clock, EngineConfig, SystemClock};
use engager_sources::{ColumnMapping, ImportOptions};
use engager_store::{DeliveryFilter, LeadFilter, NewEvent, Store, UpsertOutcome};
use serde_json::json;
use tracing::{info, warn, Instrument};

use crate::output::{print_json, table, when};
use crate::settings::{self, Settings};
use crate::{summary, telemetry, Cli, Command};

/// A configured Engager: settings, engine view, store.
pub struct App {
    pub settings: Settings,
    pub engine: EngineConfig,
    pub store: Arc<dyn Store>,
    pub config_dir: PathBuf,
    /// The senders, built once at start so that a bad provider configuration fails early.
    channel_set: ChannelSet,
}

impl App {
    /// Loads the configuration and opens the store.
    pub async fn open(config: Option<&Path>) -> Result<Self> {
        let (settings, engine) = settings::load_engine(config)?;
        telemetry::init(&settings.telemetry.format, &settings.telemetry.level);
        let config_dir = config_dir(config);
        let channel_set = configured_channels(&settings, &engine, &config_dir)?;
        let url = settings.store_url(&config_dir);
        let store = engager_store::open(&url)
            .await
            .with_context(|| format!("opening the store at {}", redact(&url)))?;
        Ok(Self {
            settings,
            engine,
            store,
            config_dir,
            channel_set,
        })
    }

    /// The senders of every enabled channel: a configured provider, else the outbox.
    pub fn channels(&self) -> ChannelSet {
        self.channel_set.clone()
    }
}

/// The senders of every enabled channel: Microsoft Graph or SMTP for email when
/// `[channels.graph]` or `[channels.smtp]` is set (not both), Twilio for SMS when
/// `[channels.twilio]` is set, the outbox otherwise. A provider
/// configured for a channel that is not enabled is not used.
pub fn configured_channels(
    settings: &Settings,
    engine: &EngineConfig,
    config_dir: &Path,
) -> Result<ChannelSet> {
    let mut set = channel_set(engine, &settings.outbox_dir(config_dir));
    let enabled = |c: engager_domain::Channel| engine.enabled_channels.contains(&c);
    if let Some(graph) = settings.channels.graph.as_ref().filter(|g| g.rotated) {
        if enabled(engager_domain::Channel::Email) {
            set = set.with_accounts(crate::accounts::graph_senders(graph)?);
        }
    } else if let Some(graph) = settings.channels.graph.as_ref().map(|g| g.first()) {
        if enabled(engager_domain::Channel::Email) {
            if !graph
                .mailbox
                .eq_ignore_ascii_case(engine.sender.email.as_str())
            {
                warn!(
                    mailbox = %graph.mailbox,
                    "Graph sends from its mailbox, which differs from `sender.email`; recipients will see the mailbox's address."
                );
            }
            let channel = engager_channels::GraphChannel::new(graph.clone())
                .map_err(|e| anyhow!("configuring Microsoft Graph: {e}"))?;
            set = set.with(Arc::new(channel) as Arc<dyn ChannelSender>);
        }
    }
    if let Some(twilio) = settings.channels.twilio.as_ref().filter(|t| t.rotated) {
        if enabled(engager_domain::Channel::Sms) {
            set = set.with_accounts(crate::accounts::twilio_senders(twilio)?);
        }
    } else if let Some(twilio) = settings.channels.twilio.as_ref().map(|t| t.first()) {
        if enabled(engager_domain::Channel::Sms) {
            let channel = engager_channels::TwilioChannel::new(twilio.clone())
                .map_err(|e| anyhow!("configuring Twilio: {e}"))?;
            set = set.with(Arc::new(channel) as Arc<dyn ChannelSender>);
        }
    }
    let smtp_accounts = settings.smtp_accounts(config_dir)?;
    if let Some(smtp) = smtp_accounts.as_ref().filter(|s| s.rotated) {
        if enabled(engager_domain::Channel::Email) {
            set = set.with_accounts(crate::accounts::smtp_senders(smtp)?);
        }
    } else if let Some(smtp) = smtp_accounts.map(|s| s.first().clone()) {
        if enabled(engager_domain::Channel::Email) {
            let from_domain = engine
                .sender
                .email
                .as_str()
                .rsplit('@')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            match &smtp.dkim {
                None => warn!("SMTP mail is not DKIM-signed: set [channels.smtp.dkim]; Gmail and Yahoo expect it and one-click unsubscribe needs it."),
                Some(dkim) if !dkim_aligns(&from_domain, &dkim.domain.to_ascii_lowercase()) => warn!(
                    dkim_domain = %dkim.domain,
                    "The DKIM domain does not align with the domain of `sender.email`; DMARC will not pass on DKIM."
                ),
                Some(_) => {}
            }
            let channel = engager_channels::SmtpChannel::new(&smtp)
                .map_err(|e| anyhow!("configuring SMTP: {e}"))?;
            set = set.with(Arc::new(channel) as Arc<dyn ChannelSender>);
        }
    }
    Ok(set)
}

/// Whether a DKIM domain can align with the From domain under DMARC's relaxed rule (one is
/// the other or a subdomain of it; the organizational-domain check needs the public suffix
/// list, so this only catches plain mistakes).
fn dkim_aligns(from_domain: &str, dkim_domain: &str) -> bool {
    from_domain == dkim_domain
        || from_domain.ends_with(&format!(".{dkim_domain}"))
        || dkim_domain.ends_with(&format!(".{from_domain}"))
}

/// Outbox senders for every enabled channel (quickstart uses only these: it never sends
/// through a provider).
pub fn channel_set(engine: &EngineConfig, outbox: &Path) -> ChannelSet {
    let config = OutboxConfig {
        dir: outbox.to_path_buf(),
    };
    engine
        .enabled_channels
        .iter()
        .fold(ChannelSet::new(), |set, channel| {
            set.with(Arc::new(OutboxChannel::new(*channel, &config)) as Arc<dyn ChannelSender>)
        })
}

pub(crate) fn config_dir(config: Option<&Path>) -> PathBuf {
    config
        .and_then(|p| p.parent())
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Hides a password in a database URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Runs a parsed command line.
pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let config = cli.config.as_deref();
    let json = cli.json;
    let span = tracing::info_span!("run", run_id = %telemetry::run_id());
    async move {
        match cli.command {
            Command::Quickstart(args) => crate::quickstart::run(args, json).await,
            Command::Init(args) => init(args, config).await,
            Command::Import(args) => import(&App::open(config).await?, args, json).await,
            Command::Campaign(c) => campaign(&App::open(config).await?, c, json).await,
            Command::Enroll(args) => enroll(&App::open(config).await?, args, json).await,
            Command::Run(args) => run(App::open(config).await?, config, args, json).await,
            Command::Status => status(&App::open(config).await?, json).await,
            Command::Explain(args) => explain(&App::open(config).await?, args, json).await,
            Command::Preview(args) => {
                crate::preview::run(&App::open(config).await?, args, json).await
            }
            Command::Schedule(args) => {
                crate::schedule::run(&App::open(config).await?, args, json).await
            }
            Command::Outbox(c) => outbox(&App::open(config).await?, c, json).await,
            Command::Deliveries(c) => {
                crate::deliveries::run(&App::open(config).await?, c, json).await
            }
            Command::Event(args) => event(&App::open(config).await?, args, json).await,
            Command::Airtable(c) => airtable(&App::open(config).await?, c, json).await,
            Command::Report(args) => {
                crate::report::report(&App::open(config).await?, args, json).await
            }
            Command::Anomalies(args) => {
                crate::report::anomalies(&App::open(config).await?, args, json).await
            }
            Command::Recommend(args) => {
                crate::report::recommend(&App::open(config).await?, args, json).await
            }
            Command::Suppression(c) => {
                crate::suppression::run(&App::open(config).await?, c, json).await
            }
            Command::Review(c) => crate::review::run(&App::open(config).await?, c, json).await,
            Command::Ab(c) => crate::ab::run(&App::open(config).await?, c, json).await,
            Command::Reply(c) => crate::reply::run(&App::open(config).await?, c, json).await,
            Command::Gdpr(c) => crate::gdpr::run(&App::open(config).await?, c, json).await,
            Command::Deliverability(c) => {
                crate::deliverability::run(&App::open(config).await?, c, json).await
            }
            Command::Consent(c) => {
                crate::compliance::consent(&App::open(config).await?, c, json).await
            }
            Command::Compliance(c) => {
                crate::compliance::compliance(&App::open(config).await?, c, json).await
            }
            Command::Convert(args) => {
                crate::report::convert(&App::open(config).await?, args, json).await
            }
            Command::Bench(args) => crate::bench::run(args.what, json).await,
            Command::Doctor => crate::doctor::run(config, json).await,
            Command::Serve(args) => crate::serve::run(&App::open(config).await?, args, json).await,
            Command::Inbox(c) => crate::inbox::run(&App::open(config).await?, c, json).await,
            Command::Tasks(c) => crate::tasks::run(&App::open(config).await?, c, json).await,
        }
    }
    .instrument(span)
    .await
}

// --- init ------------------------------------------------------------------------------

/// `engager init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder to create engager.toml in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

async fn init(args: InitArgs, config: Option<&Path>) -> Result<ExitCode> {
    let path = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| args.dir.join("engager.toml"));
    if path.exists() {
        bail!("{} already exists; not overwriting it", path.display());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let secret = random_secret()?;
    let text = include_str!("../../../config/engager.example.toml")
        .replace("change-me-to-a-long-random-string", &secret);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let app = App::open(Some(&path)).await?;
    println!(
        "Created {} (edit [sender] and [links] before sending for real).",
        path.display()
    );
    println!(
        "Store ready: {} ({}).",
        redact(&app.settings.store_url(&app.config_dir)),
        app.store.backend()
    );
    println!("Next: engager --config {} import leads.csv", path.display());
    Ok(ExitCode::SUCCESS)
}

fn random_secret() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the link secret")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

// --- import ----------------------------------------------------------------------------

/// `engager import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A .csv, .jsonl or .ndjson file.
    pub file: PathBuf,
    /// Map a lead field to a column, e.g. --map email="E-Mail Address" (repeatable).
    #[arg(long = "map", value_name = "FIELD=COLUMN")]
    pub map: Vec<String>,
    /// Abort without writing anything when any row is rejected.
    #[arg(long)]
    pub strict: bool,
}

async fn import(app: &App, args: ImportArgs, json: bool) -> Result<ExitCode> {
    let outcome = import_file(app.store.as_ref(), &args.file, &args.map, args.strict).await?;
    let rejected = &outcome.parsed.rejected;
    if json {
        print_json(&json!({
            "file": outcome.parsed.file,
            "rows": outcome.parsed.rows,
            "inserted": outcome.inserted,
            "updated": outcome.updated,
            "duplicates_in_file": outcome.parsed.duplicates,
            "written": !outcome.aborted,
            "rejected": rejected.iter().map(|r| json!({"file": r.file, "line": r.line, "field": r.field, "value": r.value, "reason": r.reason})).collect::<Vec<_>>(),
        }));
    } else {
        if !rejected.is_empty() {
            let mut t = table(&["Line", "Field", "Value", "Reason"]);
            for r in rejected {
                t.add_row(vec![
                    r.line.to_string(),
                    r.field.clone().unwrap_or_else(|| "-".into()),
                    r.value.clone().unwrap_or_default(),
                    r.reason.clone(),
                ]);
            }
            println!("Rejected rows of {}:\n{t}", outcome.parsed.file);
        }
        if outcome.aborted {
            println!(
                "--strict: {} row(s) rejected, nothing written.",
                rejected.len()
            );
        } else {
            println!(
                "{}: {} rows → {} new lead(s), {} updated, {} duplicate row(s) collapsed, {} rejected.",
                outcome.parsed.file,
                outcome.parsed.rows,
                outcome.inserted,
                outcome.updated,
                outcome.parsed.duplicates,
                rejected.len()
            );
        }
    }
    Ok(if outcome.aborted {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What importing a file did.
pub struct ImportOutcome {
    pub parsed: engager_sources::ParsedFile,
    pub inserted: usize,
    pub updated: usize,
    pub aborted: bool,
}

/// Reads a lead file and upserts its valid rows in batches (each batch one transaction).
pub async fn import_file(
    store: &dyn Store,
    file: &Path,
    map: &[String],
    strict: bool,
) -> Result<ImportOutcome> {
    let mapping = ColumnMapping::from_entries(map.iter().map(String::as_str))
        .map_err(|e| anyhow!("--map: {e}"))?;
    let options = ImportOptions {
        format: None,
        mapping,
    };
    let parsed = engager_sources::read_leads(file, &options)?;
    if strict && !parsed.rejected.is_empty() {
        return Ok(ImportOutcome {
            parsed,
            inserted: 0,
            updated: 0,
            aborted: true,
        });
    }
    let (mut inserted, mut updated) = (0, 0);
    let now = SystemClock.now();
    for chunk in parsed.leads.chunks(1000) {
        let leads: Vec<_> = chunk.iter().map(|p| p.lead.clone()).collect();
        for outcome in store.upsert_leads(&leads, now).await? {
            match outcome {
                UpsertOutcome::Inserted(_) => inserted += 1,
                UpsertOutcome::Updated(_) => updated += 1,
            }
        }
    }
    info!(
        inserted,
        updated,
        rejected = parsed.rejected.len(),
        "Import finished."
    );
    Ok(ImportOutcome {
        parsed,
        inserted,
        updated,
        aborted: false,
    })
}

// --- campaigns -------------------------------------------------------------------------

/// `engager campaign …`
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Load (or replace) a campaign from a TOML file.
    Add {
        /// The campaign file.
        file: PathBuf,
    },
    /// List campaigns.
    List,
}

async fn campaign(app: &App, command: CampaignCommand, json: bool) -> Result<ExitCode> {
    match command {
        CampaignCommand::Add { file } => {
            let campaign = add_campaign(app.store.as_ref(), &file).await?;
            if json {
                print_json(
                    &json!({"slug": campaign.slug, "name": campaign.name, "steps": campaign.steps.len()}),
                );
            } else {
                println!(
                    "Campaign {} ({}) loaded with {} step(s).",
                    campaign.slug,
                    campaign.name,
                    campaign.steps.len()
                );
            }
        }
        CampaignCommand::List => {
            let catalog = Catalog::load(app.store.as_ref()).await?;
            let counts = app.store.enrollment_counts().await?;
            let rows: Vec<_> = catalog
                .all()
                .into_iter()
                .map(|c| {
                    let enrolled: u64 = counts
                        .iter()
                        .filter(|(id, _, _)| *id == c.id)
                        .map(|(_, _, n)| n)
                        .sum();
                    let steps: Vec<String> = c
                        .steps
                        .iter()
                        .map(|s| {
                            format!(
                                "{} {} ({})",
                                s.index + 1,
                                s.name,
                                s.channels
                                    .iter()
                                    .map(|ch| ch.as_str())
                                    .collect::<Vec<_>>()
                                    .join("/")
                            )
                        })
                        .collect();
                    (c, enrolled, steps)
                })
                .collect();
            if json {
                print_json(&json!(rows.iter().map(|(c, n, steps)| json!({"slug": c.slug, "name": c.name, "window": c.window.describe(), "steps": steps, "enrolled": n})).collect::<Vec<_>>()));
            } else {
                let mut t = table(&["Slug", "Name", "Window", "Steps", "Enrolled"]);
                for (c, n, steps) in rows {
                    t.add_row(vec![
                        c.slug.clone(),
                        c.name.clone(),
                        c.window.describe(),
                        steps.join("\n"),
                        n.to_string(),
                    ]);
                }
                println!("{t}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Validates (parse and template compile) and stores a campaign file.
pub async fn add_campaign(store: &dyn Store, file: &Path) -> Result<engager_domain::Campaign> {
    let source =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let origin = file.display().to_string();
    let parsed = engager_engine::campaign_file::parse_campaign(
        &source,
        &origin,
        engager_domain::CampaignId(0),
    )?;
    engager_engine::catalog::compile(&mut engager_ai::Templates::new(), &parsed)?;
    let id = store
        .save_campaign(&parsed.slug, &parsed.name, &source, SystemClock.now())
        .await?;
    Ok(engager_domain::Campaign { id, ..parsed })
}

// --- enroll ----------------------------------------------------------------------------

/// `engager enroll`
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// Campaign slug.
    #[arg(long)]
    pub campaign: String,
    /// Every active lead.
    #[arg(long, conflicts_with = "filter")]
    pub all: bool,
    /// Only leads matching, e.g. country=DE, industry=SaaS, source=airtable: (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// At most this many leads.
    #[arg(long)]
    pub limit: Option<usize>,
}

async fn enroll(app: &App, args: EnrollArgs, json: bool) -> Result<ExitCode> {
    if !args.all && args.filter.is_empty() {
        bail!("say which leads: --all, or --filter KEY=VALUE (country, industry, source)");
    }
    let catalog = Catalog::load(app.store.as_ref()).await?;
    let campaign = catalog.by_slug(&args.campaign).ok_or_else(|| {
        anyhow!(
            "no campaign {:?} (see `engager campaign list`)",
            args.campaign
        )
    })?;
    let mut filter = LeadFilter {
        active_only: true,
        limit: args.limit,
        ..Default::default()
    };
    for f in &args.filter {
        let (key, value) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--filter {f:?}: expected KEY=VALUE"))?;
        match key.trim() {
            "country" => filter.country = Some(value.trim().to_owned()),
            "industry" => filter.industry = Some(value.trim().to_owned()),
            "source" => filter.source_prefix = Some(value.trim().to_owned()),
            other => bail!("--filter {other:?}: unknown key; expected country, industry or source"),
        }
    }
    let ids = app.store.lead_ids(&filter).await?;
    let added = app
        .store
        .enroll(campaign.id, &ids, SystemClock.now())
        .await?;
    if json {
        print_json(&json!({"campaign": campaign.slug, "matched": ids.len(), "enrolled": added}));
    } else {
        println!(
            "{} lead(s) matched; {} newly enrolled in {} ({} already were).",
            ids.len(),
            added,
            campaign.slug,
            ids.len() as u64 - added
        );
    }
    Ok(ExitCode::SUCCESS)
}

// --- run -------------------------------------------------------------------------------

/// `engager run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Process at most this many leads (planner) and deliveries (dispatcher) per pass.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Show what would be planned and sent, writing nothing.
    #[arg(long, conflicts_with = "daemon")]
    pub dry_run: bool,
    /// Keep planning and dispatching on the system clock; SIGHUP reloads the configuration.
    #[arg(long)]
    pub daemon: bool,
    /// Act as if it were this instant (RFC 3339), for tests and replays (not with --daemon).
    #[arg(long, hide = true, conflicts_with = "daemon", value_parser = crate::inbox::parse_instant)]
    pub now: Option<chrono::DateTime<Utc>>,
}

async fn run(app: App, config: Option<&Path>, args: RunArgs, json: bool) -> Result<ExitCode> {
    if args.daemon {
        return daemon(app, config, args.limit).await;
    }
    let catalog = Catalog::load(app.store.as_ref()).await?;
    let now = args.now.unwrap_or_else(|| SystemClock.now());
    // Replies and bounces first, so a lead who answered is not planned or sent to; then the
    // deadlines of LinkedIn tasks.
    let (inbound, deadlines) = if args.dry_run {
        (None, engager_engine::tasks::DeadlineReport::default())
    } else {
        before_planning(&app, &catalog, now).await?
    };
    let ai = app
        .settings
        .ai
        .personalization(&app.config_dir, &app.engine)?;
    let alerter = app.settings.alerter(
        &app.engine,
        app.channels().get(engager_domain::Channel::Email).cloned(),
    )?;
    let holds = channel_holds(&app, now).await?;
    let planner = Planner::new(app.store.as_ref(), &catalog, &app.engine)
        .with_open_circuits(holds.circuits)
        .with_unavailable_channels(holds.unavailable)
        .with_ai(ai.as_ref())
        .with_alerts(&alerter);
    let plan = planner.plan_due(now, args.limit, args.dry_run).await?;
    for (id, reason) in planner.halted_campaigns() {
        let slug = catalog
            .get(id)
            .map_or_else(|| id.to_string(), |c| c.slug.clone());
        eprintln!("Campaign {slug} is HALTED for compliance: {reason}. Fix it, then run `engager compliance resume {slug}`.");
    }
    let ai_counts = ai.as_ref().map(|a| a.counts());
    if args.dry_run {
        let due = app
            .store
            .deliveries(&DeliveryFilter {
                state: Some(DeliveryState::Planned),
                ..Default::default()
            })
            .await?;
        let due: Vec<_> = due.into_iter().filter(|d| d.send_at <= now).collect();
        if json {
            print_json(&json!({
                "dry_run": true,
                "would_plan": plan.plans.iter().map(|p| json!({"lead_id": p.lead_id.0, "campaign": p.campaign, "step": p.step, "channel": p.channel.as_str(), "send_at": p.send_at.to_rfc3339(), "to": p.to, "summary": p.summary})).collect::<Vec<_>>(),
                "outcomes": plan.by_code,
                "ai": ai_counts.map(ai_json),
                "would_send_now": due.iter().map(|d| json!({"delivery_id": d.id.0, "lead_id": d.lead_id.0, "channel": d.channel.as_str(), "to": d.to_address})).collect::<Vec<_>>(),
            }));
        } else {
            let mut t = table(&[
                "Lead",
                "Campaign",
                "Step",
                "Channel",
                "Send at",
                "To",
                "Subject / first line",
            ]);
            for p in &plan.plans {
                t.add_row(vec![
                    p.lead_id.to_string(),
                    p.campaign.clone(),
                    p.step.to_string(),
                    p.channel.to_string(),
                    when(p.send_at),
                    p.to.clone(),
                    p.summary.clone(),
                ]);
            }
            println!(
                "Dry run: nothing was written{}.\nWould plan {} deliveries:\n{t}",
                if ai_counts.is_some() {
                    " to the ledger (AI drafts are cached, so the real run reuses them)"
                } else {
                    ""
                },
                plan.plans.len()
            );
            println!("Outcomes: {}", outcomes_line(&plan.by_code));
            if let Some(c) = ai_counts {
                println!("AI personalization: {}", ai_line(c));
            }
            println!(
                "Would send now: {} already planned deliveries are due.",
                due.len()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let channels = app.channels();
    let guard = app.settings.guard_on(&app.store)?;
    let alerter = app.settings.alerter(
        &app.engine,
        channels.get(engager_domain::Channel::Email).cloned(),
    )?;
    let halted = crate::deliverability::enforce(&app, Some(&alerter), Some(&guard), now).await?;
    let dispatcher = Dispatcher::new(app.store.as_ref(), &catalog, &app.engine, &channels)
        .real_time()
        .with_guard(&guard)
        .with_alerts(&alerter)
        .with_halted_channels(halted);
    let sent = dispatcher.dispatch_due(now, args.limit).await?;
    // Sends and opt-outs (which may come from the inbox, the server or a person) go back to
    // Airtable after every pass; nothing pending costs no request.
    let written_back = write_back_after_send(&app).await;
    if json {
        print_json(&json!({
            "planned": plan.planned, "deferred": plan.deferred, "skipped": plan.skipped, "stopped": plan.stopped,
            "outcomes": plan.by_code,
            "ai": ai_counts.map(ai_json),
            "sent": sent.sent.len(),
            "written_back_to_airtable": written_back, "retried": sent.retried, "failed": sent.failed, "unknown": sent.unknown,
            "cancelled": sent.cancelled, "held": sent.held, "lost": sent.lost,
            "recovered": {"requeued": sent.recovered.requeued, "unknown": sent.recovered.unknown},
            "inbound": inbound.as_ref().map(crate::inbox::report_json),
            "tasks": {"opened": sent.tasks, "skipped_at_deadline": deadlines.skipped.len(), "fell_back": deadlines.fell_back.len()},
        }));
    } else {
        let mut t = table(&["Stage", "Result"]);
        if let Some(r) = &inbound {
            use engager_engine::inbound::FoundKind;
            t.add_row(vec![
                "inbound".to_string(),
                format!(
                    "{} read: {} repl(ies), {} auto-repl(ies), {} hard / {} soft bounce(s), {} unmatched{}",
                    r.found.len(),
                    r.count(FoundKind::Reply),
                    r.count(FoundKind::AutoReply),
                    r.count(FoundKind::HardBounce),
                    r.count(FoundKind::SoftBounce),
                    r.count(FoundKind::Unmatched),
                    if r.errors.is_empty() { String::new() } else { format!("; {} mailbox(es) failed", r.errors.len()) }
                ),
            ]);
        }
        if sent.tasks + deadlines.skipped.len() + deadlines.fell_back.len() > 0 {
            t.add_row(vec![
                "tasks".to_string(),
                format!(
                    "{} LinkedIn task(s) opened (`engager tasks list`), {} skipped at their deadline, {} fell back to another channel",
                    sent.tasks,
                    deadlines.skipped.len(),
                    deadlines.fell_back.len()
                ),
            ]);
        }
        t.add_row(vec![
            "planner".to_string(),
            format!(
                "{} evaluated: {}",
                plan.evaluated,
                outcomes_line(&plan.by_code)
            ),
        ]);
        if let Some(c) = ai_counts {
            t.add_row(vec!["personalization".to_string(), ai_line(c)]);
        }
        t.add_row(vec!["dispatcher".to_string(), format!(
            "{} claimed: {} sent, {} retry, {} failed, {} unknown, {} cancelled, {} held (quiet hours)",
            sent.claimed, sent.sent.len(), sent.retried, sent.failed, sent.unknown, sent.cancelled, sent.held
        )]);
        if sent.recovered.requeued + sent.recovered.unknown > 0 {
            t.add_row(vec![
                "recovery".to_string(),
                format!(
                    "{} expired claims requeued, {} interrupted sends marked unknown",
                    sent.recovered.requeued, sent.recovered.unknown
                ),
            ]);
        }
        println!("{t}");
        if let Some(next) = app.store.next_due_at().await? {
            println!("Next work is due at {}.", when(next));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Before a planner pass: reads the mailboxes (a mailbox that fails is reported, not fatal)
/// and handles LinkedIn tasks past their deadline.
async fn before_planning(
    app: &App,
    catalog: &Catalog,
    now: chrono::DateTime<Utc>,
) -> Result<(
    Option<engager_engine::inbound::PollReport>,
    engager_engine::tasks::DeadlineReport,
)> {
    let poller = app.settings.inbound_poller(&app.config_dir)?;
    let inbound = if poller.is_empty() {
        None
    } else {
        Some(poller.poll_once(app.store.as_ref(), now).await?)
    };
    let deadlines =
        engager_engine::tasks::handle_deadlines(app.store.as_ref(), catalog, &app.engine, now)
            .await?;
    Ok((inbound, deadlines))
}

fn outcomes_line(by_code: &std::collections::BTreeMap<String, usize>) -> String {
    if by_code.is_empty() {
        return "nothing due".into();
    }
    by_code
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ai_json(c: engager_engine::personalization::AiCounts) -> serde_json::Value {
    json!({"cache_hits": c.cache_hits, "generated": c.generated, "accepted": c.accepted, "fallbacks": c.fallbacks, "tokens": c.tokens})
}

fn ai_line(c: engager_engine::personalization::AiCounts) -> String {
    format!(
        "{} AI draft(s) used, {} template fallback(s); {} from cache, {} generated, {} tokens",
        c.accepted, c.fallbacks, c.cache_hits, c.generated, c.tokens
    )
}

/// The long-running loop: plan, dispatch, sleep until the next due work (at most a tick);
/// SIGHUP reloads the configuration (keeping the old one when the new one is invalid);
/// SIGINT/SIGTERM stop after the current pass.
async fn daemon(app: App, config: Option<&Path>, limit: Option<usize>) -> Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut engine = app.engine.clone();
    let mut tick =
        std::time::Duration::from_secs(u64::from(app.settings.daemon.tick_seconds.max(1)));
    let mut channels = app.channels();
    let mut guard = app.settings.guard_on(&app.store)?;
    let mut alerter = app.settings.alerter(
        &engine,
        channels.get(engager_domain::Channel::Email).cloned(),
    )?;
    let mut catalog = Catalog::load(app.store.as_ref()).await?;
    // One AI stage for the daemon's life: its token budget spans every pass.
    let ai = app.settings.ai.personalization(&app.config_dir, &engine)?;
    let mut poller = app.settings.inbound_poller(&app.config_dir)?;
    let mut poll_every = std::time::Duration::from_secs(u64::from(
        app.settings.inbound.poll_interval_seconds.max(1),
    ));
    let mut next_poll = std::time::Instant::now();
    // Trends are judged hourly (a day's sends against the two weeks before).
    let mut next_anomaly_check = std::time::Instant::now();
    let mut anomalies_alerted = std::collections::HashMap::new();
    // The deliverability monitor's halted channels, checked once a minute.
    let mut next_monitor = std::time::Instant::now();
    let mut halted = std::collections::HashMap::new();
    // The retention policy, daily.
    let mut next_retention = std::time::Instant::now();
    eprintln!(
        "engager daemon started (worker {}); SIGHUP reloads the configuration, Ctrl-C stops.",
        engine.worker_id
    );
    loop {
        let now = SystemClock.now();
        // Replies and bounces every poll interval, before planning, so a lead who answered
        // is not planned or sent to; then LinkedIn tasks past their deadline.
        if !poller.is_empty() && std::time::Instant::now() >= next_poll {
            if let Err(e) = poller.poll_once(app.store.as_ref(), now).await {
                warn!(error = %e, "Reading replies and bounces failed; will try again.");
            }
            next_poll = std::time::Instant::now() + poll_every;
        }
        if let Err(e) =
            engager_engine::tasks::handle_deadlines(app.store.as_ref(), &catalog, &engine, now)
                .await
        {
            warn!(error = %e, "Handling task deadlines failed; will try again.");
        }
        let holds = channel_holds(&app, now).await.unwrap_or_else(|e| {
            warn!(error = %e, "Reading circuits and halts failed; planning without them.");
            ChannelHolds::default()
        });
        let plan = Planner::new(app.store.as_ref(), &catalog, &engine)
            .with_open_circuits(holds.circuits)
            .with_unavailable_channels(holds.unavailable)
            .with_alerts(&alerter)
            .with_ai(ai.as_ref())
            .plan_due(now, limit, false)
            .await;
        match plan {
            Ok(p) if p.evaluated > 0 => info!(
                planned = p.planned,
                deferred = p.deferred,
                skipped = p.skipped,
                stopped = p.stopped,
                "Planner pass."
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "Planner pass failed; will try again."),
        }
        // The deliverability check reads a week of sends: once a minute, not every pass.
        if std::time::Instant::now() >= next_monitor {
            halted = crate::deliverability::enforce(&app, Some(&alerter), Some(&guard), now)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %e, "The deliverability check failed; sending waits for the next check.");
                    engine.enabled_channels.iter().map(|c| (*c, "the deliverability check failed".to_owned())).collect()
                });
            next_monitor = std::time::Instant::now() + std::time::Duration::from_secs(60);
        }
        match Dispatcher::new(app.store.as_ref(), &catalog, &engine, &channels)
            .real_time()
            .with_guard(&guard)
            .with_alerts(&alerter)
            .with_halted_channels(halted.clone())
            .dispatch_due(now, limit)
            .await
        {
            Ok(r) if r.claimed > 0 => info!(
                sent = r.sent.len(),
                retried = r.retried,
                failed = r.failed,
                unknown = r.unknown,
                "Dispatcher pass."
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "Dispatcher pass failed; will try again."),
        }
        write_back_after_send(&app).await;
        if app.settings.retention.enabled && std::time::Instant::now() >= next_retention {
            match crate::gdpr::apply_retention(&app, now, false).await {
                Ok(r) => info!(
                    rows = r.rows.iter().map(|(_, n)| n).sum::<u64>(),
                    "Retention policy applied."
                ),
                Err(e) => {
                    warn!(error = %e, "Applying the retention policy failed; will try again.")
                }
            }
            next_retention = std::time::Instant::now() + std::time::Duration::from_secs(24 * 3600);
        }
        if std::time::Instant::now() >= next_anomaly_check {
            let rules = engager_engine::analytics::AnomalyRules::default();
            match crate::report::find_anomalies(&app, &rules, now).await {
                Ok(found) => {
                    crate::report::alert_anomalies(&alerter, &found, &mut anomalies_alerted, now)
                        .await
                }
                Err(e) => warn!(error = %e, "Looking for anomalies failed; will try again."),
            }
            next_anomaly_check = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        }
        let sleep = match app.store.next_due_at().await {
            Ok(Some(next)) => (next - SystemClock.now())
                .to_std()
                .unwrap_or_default()
                .min(tick),
            _ => tick,
        }
        .min(if poller.is_empty() {
            tick
        } else {
            next_poll.saturating_duration_since(std::time::Instant::now())
        })
        .max(std::time::Duration::from_millis(200));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = hup.recv() => {
                match settings::load_engine(config) {
                    Ok((new_settings, new_engine)) => {
                        // Channels, limits and alert sinks are rebuilt together: all or nothing.
                        let rebuilt = new_settings.guard_on(&app.store).and_then(|g| {
                            let set = configured_channels(&new_settings, &new_engine, &app.config_dir)?;
                            let a = new_settings.alerter(&new_engine, set.get(engager_domain::Channel::Email).cloned())?;
                            Ok((g, a, set))
                        });
                        let (new_guard, new_alerter, new_channels) = match rebuilt {
                            Ok(pair) => pair,
                            Err(e) => {
                                eprintln!("SIGHUP: the new configuration is invalid, keeping the old one: {e:#}");
                                continue;
                            }
                        };
                        guard = new_guard;
                        alerter = new_alerter;
                        channels = new_channels;
                        match Catalog::load(app.store.as_ref()).await {
                            Ok(c) => catalog = c,
                            Err(e) => warn!(error = %e, "Campaigns could not be reloaded; keeping the loaded ones."),
                        }
                        tick = std::time::Duration::from_secs(u64::from(new_settings.daemon.tick_seconds.max(1)));
                        match new_settings.inbound_poller(&app.config_dir) {
                            Ok(p) => {
                                poller = p;
                                poll_every = std::time::Duration::from_secs(u64::from(
                                    new_settings.inbound.poll_interval_seconds.max(1),
                                ));
                            }
                            Err(e) => eprintln!("SIGHUP: the new [inbound] settings are invalid, keeping the old ones: {e:#}"),
                        }
                        engine = new_engine;
                        eprintln!("SIGHUP: configuration reloaded.");
                    }
                    Err(e) => eprintln!("SIGHUP: the new configuration is invalid, keeping the old one: {e:#}"),
                }
            }
            _ = tokio::signal::ctrl_c() => { eprintln!("Stopping."); break; }
            _ = term.recv() => { eprintln!("Stopping."); break; }
        }
    }
    Ok(ExitCode::SUCCESS)
}

// --- status ----------------------------------------------------------------------------

async fn status(app: &App, json: bool) -> Result<ExitCode> {
    let catalog = Catalog::load(app.store.as_ref()).await?;
    let leads = app.store.lead_counts().await?;
    let enrollments = app.store.enrollment_counts().await?;
    let steps = summary::Summary::load(app.store.as_ref(), &catalog).await?;
    let next = app.store.next_due_at().await?;
    let accounts = account_health(app).await?;
    if json {
        print_json(&json!({
            "backend": app.store.backend(),
            "leads": leads.iter().map(|(s, n)| (s.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "enrollments": enrollments.iter().map(|(c, s, n)| json!({"campaign": catalog.get(*c).map(|c| c.slug.clone()), "state": s, "count": n})).collect::<Vec<_>>(),
            "steps": steps.to_json(),
            "next_due_at": next.map(|t| t.to_rfc3339()),
            "accounts": accounts.iter().map(|a| json!({
                "account": a.account, "circuit": a.circuit, "open_until": a.open_until.map(|t| t.to_rfc3339()),
                "sent_today": a.sent_today, "cap_today": a.cap_today, "left_today": a.cap_today.map(|c| u64::from(c).saturating_sub(a.sent_today)),
                "queued": a.queued, "oldest_due": a.oldest_due.map(|t| t.to_rfc3339()), "by_state": a.by_state,
            })).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let lead_line = leads
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "Store: {} · Leads: {}",
        app.store.backend(),
        if lead_line.is_empty() {
            "none".into()
        } else {
            lead_line
        }
    );
    let mut t = table(&["Campaign", "Enrollment state", "Count"]);
    for (c, s, n) in &enrollments {
        t.add_row(vec![
            catalog
                .get(*c)
                .map_or_else(|| c.to_string(), |c| c.slug.clone()),
            s.clone(),
            n.to_string(),
        ]);
    }
    println!("{t}");
    println!("{}", steps.render());
    if !accounts.is_empty() {
        let mut t = table(&[
            "Account",
            "Circuit",
            "Sent today",
            "Cap today",
            "Left today",
            "Queued",
            "Oldest due",
            "Rows by state",
        ]);
        for a in &accounts {
            t.add_row(vec![
                a.account.clone(),
                match a.open_until {
                    Some(until) => format!("{} until {}", a.circuit, when(until)),
                    None => a.circuit.clone(),
                },
                a.sent_today.to_string(),
                a.cap_today
                    .map_or_else(|| "no cap".into(), |c| c.to_string()),
                a.cap_today.map_or_else(
                    || "no cap".into(),
                    |c| u64::from(c).saturating_sub(a.sent_today).to_string(),
                ),
                a.queued.to_string(),
                a.oldest_due.map(when).unwrap_or_default(),
                a.by_state
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]);
        }
        println!("{t}");
    }
    if let Some(next) = next {
        println!("Next work is due at {}.", when(next));
    }
    Ok(ExitCode::SUCCESS)
}

/// What keeps the planner off a channel for now, read once per pass.
#[derive(Default)]
struct ChannelHolds {
    /// Channels whose account's circuit is open (saved by any process), and until when.
    circuits: std::collections::HashMap<engager_domain::Channel, chrono::DateTime<Utc>>,
    /// Channels the deliverability monitor halted, or all of whose sending accounts it
    /// halted, until when the planner plans around them and why.
    unavailable:
        std::collections::HashMap<engager_domain::Channel, (chrono::DateTime<Utc>, String)>,
}

/// How long the planner plans around a halted channel before it looks again.
const HALT_RECHECK: chrono::Duration = chrono::Duration::minutes(15);

/// Reads the circuits and halts the planner's channel gate needs. A halted channel, or one
/// whose every account is halted (itself or through its sending domain; an account whose
/// circuit is open counts as unable to send too), is planned around like an open circuit
/// (the step's next channel, or a later pass) and looked at again after [`HALT_RECHECK`].
async fn channel_holds(app: &App, now: chrono::DateTime<Utc>) -> Result<ChannelHolds> {
    use crate::accounts::circuit_open_until;
    use engager_engine::guard::SendGuard;
    use engager_engine::monitor::{account_key, domain_key, domain_of};
    let store = app.store.as_ref();
    let channels = app.channels();
    let states = store.account_states().await?;
    let mut circuits: std::collections::HashMap<_, _> = states
        .iter()
        .filter_map(|s| {
            let until = s.open_until.filter(|u| *u > now)?;
            let channel = s.account.split(':').next()?.parse().ok()?;
            Some((channel, until))
        })
        .collect();
    // With several accounts, a channel is closed only when every account's circuit is.
    crate::accounts::rotated_open_circuits(&states, &channels, now, &mut circuits);

    let mut unavailable = std::collections::HashMap::new();
    for halt in store.sending_halts().await? {
        if halt.halted {
            unavailable.insert(
                halt.channel,
                (
                    now + HALT_RECHECK,
                    format!(
                        "sending halted by the deliverability monitor: {}",
                        halt.reason
                    ),
                ),
            );
        }
    }
    let halts: std::collections::HashMap<String, String> = store
        .account_halts()
        .await?
        .into_iter()
        .filter(|h| h.halted)
        .map(|h| (h.key, h.reason))
        .collect();
    if halts.is_empty() {
        return Ok(ChannelHolds {
            circuits,
            unavailable,
        });
    }
    let sender_domain = app.engine.sender.email.domain().to_owned();
    for channel in engager_domain::Channel::ALL {
        let pool = channels.accounts(channel);
        if pool.is_empty() || unavailable.contains_key(&channel) {
            continue;
        }
        let mut halted = Vec::new();
        let mut until = now + HALT_RECHECK;
        let every_one_blocked = pool.iter().all(|sender| {
            let account = SendGuard::account(channel, sender.name());
            let own = halts.get(&account_key(&account));
            let domain = domain_of(channel, &account, Some(&sender_domain))
                .and_then(|d| halts.get(&domain_key(&d)).map(|why| (d, why)));
            match (own, domain) {
                (Some(why), _) => halted.push(format!("{account} ({why})")),
                (None, Some((d, why))) => halted.push(format!("{account} (domain {d}: {why})")),
                (None, None) => {
                    let Some(open_until) = circuit_open_until(&states, &account, now) else {
                        return false;
                    };
                    until = until.min(open_until);
                }
            }
            true
        });
        if every_one_blocked && !halted.is_empty() {
            unavailable.insert(
                channel,
                (
                    until,
                    format!(
                        "every sending account halted or unavailable; halted by the deliverability monitor: {}",
                        halted.join("; ")
                    ),
                ),
            );
        }
    }
    Ok(ChannelHolds {
        circuits,
        unavailable,
    })
}

/// One sending account's health, as `engager status` shows it.
pub(crate) struct AccountView {
    pub(crate) account: String,
    pub(crate) circuit: String,
    pub(crate) open_until: Option<chrono::DateTime<Utc>>,
    pub(crate) sent_today: u64,
    pub(crate) cap_today: Option<u32>,
    queued: u64,
    oldest_due: Option<chrono::DateTime<Utc>>,
    by_state: std::collections::BTreeMap<String, u64>,
}

pub(crate) async fn account_health(app: &App) -> Result<Vec<AccountView>> {
    let now = SystemClock.now();
    let channels = app.channels();
    let guard = app.settings.guard()?;
    let ledger = app.store.ledger_overview().await?;
    let states = app.store.account_states().await?;
    let day_start = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |t| t.and_utc());
    let sent = app.store.sent_counts_since(day_start).await?;
    let by_account =
        crate::accounts::sent_by_account(app.store.as_ref(), &channels, day_start).await?;
    let mut out = Vec::new();
    for sender in channels.every() {
        let channel = sender.channel();
        let account = engager_engine::guard::SendGuard::account(channel, sender.name());
        let saved = states.iter().find(|s| s.account == account);
        let open_until = saved.and_then(|s| s.open_until).filter(|u| *u > now);
        // The queue is the channel's (a delivery gets its account when it is sent): shown
        // on the channel's first account.
        let first = channels
            .get(channel)
            .is_some_and(|f| Arc::ptr_eq(f, sender));
        let rows: Vec<_> = ledger
            .iter()
            .filter(|r| r.channel == channel && first)
            .collect();
        let queued_states = [
            DeliveryState::Planned,
            DeliveryState::RetryWait,
            DeliveryState::Claimed,
        ];
        let sent_today = match by_account.get(&account) {
            Some(n) => *n,
            None => sent
                .iter()
                .find(|(c, _)| *c == channel)
                .map_or(0, |(_, n)| *n),
        };
        let cap_today = guard.account_cap_on(&account, channel, now.date_naive());
        out.push(AccountView {
            circuit: match (saved, open_until) {
                (_, Some(_)) => "open".to_owned(),
                (Some(s), None) if s.circuit == "open" => "half-open (cool-down over)".to_owned(),
                _ => "closed".to_owned(),
            },
            account,
            open_until,
            sent_today,
            cap_today,
            queued: rows
                .iter()
                .filter(|r| queued_states.contains(&r.state))
                .map(|r| r.count)
                .sum(),
            oldest_due: rows
                .iter()
                .filter(|r| queued_states.contains(&r.state))
                .filter_map(|r| r.oldest_due)
                .min(),
            by_state: rows
                .iter()
                .map(|r| (r.state.to_string(), r.count))
                .collect(),
        });
    }
    Ok(out)
}

// --- explain ---------------------------------------------------------------------------

/// `engager explain`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Lead id or email address.
    pub lead: String,
}

/// Finds a lead by id or email.
pub async fn find_lead(store: &dyn Store, key: &str) -> Result<Lead> {
    let found = match key.parse::<i64>() {
        Ok(id) => store.lead(LeadId(id)).await?,
        Err(_) => store.lead_by_email(key).await?,
    };
    found.ok_or_else(|| anyhow!("no lead {key:?} (give a lead id or an email address)"))
}

async fn explain(app: &App, args: ExplainArgs, json: bool) -> Result<ExitCode> {
    let catalog = Catalog::load(app.store.as_ref()).await?;
    let lead = find_lead(app.store.as_ref(), &args.lead).await?;
    let (zone, zone_source) = lead.time_zone(app.engine.default_time_zone);
    let enrollments = app.store.enrollments_for_lead(lead.id).await?;
    let traces = app.store.traces_for_lead(lead.id).await?;
    let deliveries = app
        .store
        .deliveries(&DeliveryFilter {
            lead: Some(lead.id),
            ..Default::default()
        })
        .await?;
    let events = app.store.events_for_lead(lead.id).await?;
    let insights = engager_engine::personalization::lead_insights(
        app.store.as_ref(),
        &lead,
        zone,
        app.engine.timing.history,
        SystemClock.now(),
    )
    .await?;
    let slug = |id: engager_domain::CampaignId| {
        catalog
            .get(id)
            .map_or_else(|| id.to_string(), |c| c.slug.clone())
    };
    if json {
        print_json(&json!({
            "lead": {"id": lead.id.0, "name": lead.display_name(), "status": lead.status.as_str(), "time_zone": zone.name(), "time_zone_source": zone_source.as_str(),
                     "email": lead.profile.email.as_ref().map(|e| e.to_string()), "phone": lead.profile.phone.as_ref().map(|p| p.to_string()),
                     "linkedin": lead.profile.linkedin.as_ref().map(|l| l.to_string()), "company": lead.profile.company, "source": lead.profile.source},
            "enrollments": enrollments.iter().map(|e| json!({"campaign": slug(e.campaign_id), "state": e.state.as_str(), "current_step": e.current_step + 1, "next_due_at": e.next_due_at.map(|t| t.to_rfc3339()), "stop_reason": e.stop_reason})).collect::<Vec<_>>(),
            "evaluations": traces.iter().map(|t| json!({"campaign": slug(t.campaign_id), "step": t.step_index + 1, "at": t.evaluated_at.to_rfc3339(), "outcome": t.outcome, "code": t.code, "channel": t.channel.map(|c| c.as_str()), "due": t.at.map(|a| a.to_rfc3339()),
                "gates": t.gates.iter().map(|g| json!({"gate": g.gate, "passed": g.passed, "reason": g.reason})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "deliveries": deliveries.iter().map(|d| json!({"id": d.id.0, "campaign": slug(d.campaign_id), "step": d.step_index + 1, "channel": d.channel.as_str(), "state": d.state.as_str(), "send_at": d.send_at.to_rfc3339(), "sent_at": d.sent_at.map(|t| t.to_rfc3339()), "attempts": d.attempts, "last_error": d.last_error})).collect::<Vec<_>>(),
            "insights": insights,
            "events": events.iter().map(|e| json!({"kind": e.event.kind.as_str(), "at": e.event.occurred_at.to_rfc3339(), "delivery_id": e.event.delivery_id.map(|d| d.0), "source": e.event.source})).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Lead {} · {} · status {} · zone {} ({})",
        lead.id,
        lead.display_name(),
        lead.status,
        zone.name(),
        zone_source.as_str()
    );
    let reach: Vec<String> = [
        lead.profile.email.as_ref().map(|e| format!("email {e}")),
        lead.profile.phone.as_ref().map(|p| format!("phone {p}")),
        lead.profile
            .linkedin
            .as_ref()
            .map(|l| format!("linkedin {l}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    println!("Contact points: {}", reach.join(", "));
    println!("Insights: {}", insights.lines().join("; "));
    for e in &enrollments {
        println!(
            "Campaign {}: {} at step {}{}{}",
            slug(e.campaign_id),
            e.state.as_str(),
            e.current_step + 1,
            e.next_due_at
                .map(|t| format!(", next due {}", when(t)))
                .unwrap_or_default(),
            e.stop_reason
                .as_ref()
                .map(|r| format!(", stopped: {r}"))
                .unwrap_or_default()
        );
    }
    for t in &traces {
        let head = match (&t.code, t.at) {
            (Some(code), _) => format!("{} ({code})", t.outcome),
            (None, Some(at)) => format!(
                "{} for {}{}",
                t.outcome,
                when(at),
                t.channel.map(|c| format!(" by {c}")).unwrap_or_default()
            ),
            (None, None) => t.outcome.clone(),
        };
        println!(
            "\n{} step {} evaluated {} → {}",
            slug(t.campaign_id),
            t.step_index + 1,
            when(t.evaluated_at),
            head
        );
        for g in &t.gates {
            println!(
                "  {} {:<15} {}",
                if g.passed { "✓" } else { "✗" },
                g.gate,
                g.reason
            );
        }
    }
    if !deliveries.is_empty() {
        let mut tbl = table(&[
            "Delivery", "Campaign", "Step", "Channel", "State", "Send at", "Attempts", "Note",
        ]);
        for d in deliveries.iter().rev() {
            tbl.add_row(vec![
                d.id.to_string(),
                slug(d.campaign_id),
                (d.step_index + 1).to_string(),
                d.channel.to_string(),
                d.state.to_string(),
                when(d.sent_at.unwrap_or(d.send_at)),
                d.attempts.to_string(),
                d.last_error.clone().unwrap_or_default(),
            ]);
        }
        println!("\n{tbl}");
    }
    if !events.is_empty() {
        println!(
            "\nEvents: {}",
            events
                .iter()
                .map(|e| format!("{} {}", when(e.event.occurred_at), e.event.kind))
                .collect::<Vec<_>>()
                .join(" · ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

// --- outbox ----------------------------------------------------------------------------

/// `engager outbox …`
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List ledger rows (newest first) with where their message went.
    List {
        /// Only this state (planned, claimed, sending, sent, retry_wait, failed, unknown, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

async fn outbox(app: &App, command: OutboxCommand, json: bool) -> Result<ExitCode> {
    let OutboxCommand::List {
        state,
        channel,
        limit,
    } = command;
    let filter = DeliveryFilter {
        state: state
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow!("--state: {e}"))?,
        channel: channel
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow!("--channel: {e}"))?,
        limit: Some(limit),
        ..Default::default()
    };
    let rows = app.store.deliveries(&filter).await?;
    let catalog = Catalog::load(app.store.as_ref()).await?;
    let slug = |id: engager_domain::CampaignId| {
        catalog
            .get(id)
            .map_or_else(|| id.to_string(), |c| c.slug.clone())
    };
    if json {
        print_json(&json!(rows.iter().map(|d| json!({"id": d.id.0, "lead_id": d.lead_id.0, "campaign": slug(d.campaign_id), "step": d.step_index + 1, "channel": d.channel.as_str(), "state": d.state.as_str(), "send_at": d.send_at.to_rfc3339(), "sent_at": d.sent_at.map(|t| t.to_rfc3339()), "to": d.to_address, "subject": d.subject, "provider_ref": d.provider_ref, "last_error": d.last_error, "attempts": d.attempts})).collect::<Vec<_>>()));
    } else {
        let mut t = table(&[
            "Id",
            "Lead",
            "Campaign",
            "Step",
            "Channel",
            "State",
            "When",
            "To",
            "Subject / file / error",
        ]);
        for d in &rows {
            let note = d
                .provider_ref
                .clone()
                .or_else(|| d.last_error.clone())
                .or_else(|| d.subject.clone())
                .unwrap_or_default();
            t.add_row(vec![
                d.id.to_string(),
                d.lead_id.to_string(),
                slug(d.campaign_id),
                (d.step_index + 1).to_string(),
                d.channel.to_string(),
                d.state.to_string(),
                when(d.sent_at.unwrap_or(d.send_at)),
                d.to_address.clone(),
                note,
            ]);
        }
        println!("{t}");
        println!(
            "Outbox folder: {}",
            app.settings.outbox_dir(&app.config_dir).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

// --- manual events ---------------------------------------------------------------------

/// `engager event`
#[derive(Debug, Args)]
pub struct EventArgs {
    /// Lead id or email.
    pub lead: String,
    /// replied, negative_reply, not_interested, unsubscribed, hard_bounce, complained,
    /// converted, opened, clicked.
    pub kind: String,
}

async fn event(app: &App, args: EventArgs, json: bool) -> Result<ExitCode> {
    let lead = find_lead(app.store.as_ref(), &args.lead).await?;
    let kind: EventKind = args.kind.parse().map_err(|e| anyhow!("{e}: expected one of replied, negative_reply, not_interested, unsubscribed, hard_bounce, complained, converted, opened, clicked"))?;
    // A reply, an open or a click answers the lead's latest message: the event is tied to it,
    // so reports and experiments count it for that step and variant. Opt-outs, bounces and
    // complaints stay with the lead (they suppress its email address, whatever the last
    // channel was); a conversion or a "not interested" is about the lead, not one message.
    let answers_a_message = matches!(
        kind,
        EventKind::Replied | EventKind::NegativeReply | EventKind::Opened | EventKind::Clicked
    );
    let delivery_id = if !answers_a_message {
        None
    } else {
        app.store
            .deliveries(&DeliveryFilter {
                lead: Some(lead.id),
                state: Some(DeliveryState::Sent),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter_map(|d| d.sent_at.map(|at| (at, d.id)))
            .max()
            .map(|(_, id)| id)
    };
    let effects = app
        .store
        .record_event(&NewEvent {
            lead_id: lead.id,
            delivery_id,
            kind,
            occurred_at: Utc::now(),
            detail: "{}".into(),
            source: "manual".into(),
        })
        .await?;
    if json {
        print_json(
            &json!({"lead_id": lead.id.0, "kind": kind.as_str(), "enrollments_stopped": effects.enrollments_stopped, "deliveries_cancelled": effects.deliveries_cancelled, "suppressed": effects.suppressed}),
        );
    } else {
        println!(
            "Recorded {kind} for lead {}: {} sequence(s) stopped, {} pending deliver(ies) cancelled{}.",
            lead.id,
            effects.enrollments_stopped,
            effects.deliveries_cancelled,
            if effects.suppressed { ", address suppressed" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

// --- airtable --------------------------------------------------------------------------

/// Writes `Engagement_Status` and `Date Messaged` back to Airtable for every lead from Airtable
/// sent to since the last push (PATCH, at most 10 records a request); returns how many.
pub async fn push_to_airtable(
    store: &dyn Store,
    client: &engager_sources::airtable::AirtableClient,
) -> Result<usize> {
    let mut total = 0;
    loop {
        let pending = store.pending_writebacks("airtable:", 100).await?;
        if pending.is_empty() {
            break;
        }
        let updates: Vec<_> = pending
            .iter()
            .map(|p| client.sent_writeback(p.source_ref.clone(), p.sent_at.date_naive()))
            .collect();
        total += client.write_back(&updates).await?;
        let ids: Vec<_> = pending.iter().map(|p| p.delivery_id).collect();
        store.mark_written_back(&ids, SystemClock.now()).await?;
    }
    // Opt-outs on any channel (and objections) reach the base too.
    loop {
        let pending = store.pending_opt_out_writebacks("airtable:", 100).await?;
        if pending.is_empty() {
            break;
        }
        let updates: Vec<_> = pending
            .iter()
            .map(|(_, record)| client.opt_out_writeback(record.clone()))
            .collect();
        total += client.write_back(&updates).await?;
        let ids: Vec<_> = pending.iter().map(|(lead, _)| *lead).collect();
        store
            .mark_opt_outs_written_back(&ids, SystemClock.now())
            .await?;
    }
    Ok(total)
}

/// After a dispatcher pass: the Airtable write-back, when `[airtable]` is configured. A failure
/// is logged and retried on the next pass (the ledger remembers what was written back).
async fn write_back_after_send(app: &App) -> usize {
    let Some(config) = app.settings.airtable.clone() else {
        return 0;
    };
    let result = match engager_sources::airtable::AirtableClient::new(config) {
        Ok(client) => push_to_airtable(app.store.as_ref(), &client).await,
        Err(e) => Err(e.into()),
    };
    result.unwrap_or_else(|e| {
        warn!(error = %format!("{e:#}"), "Airtable write-back failed; will try again after the next pass.");
        0
    })
}

/// `engager airtable …`
#[derive(Debug, Subcommand)]
pub enum AirtableCommand {
    /// Fetch leads from the configured table and upsert them.
    Sync {
        /// Show what would be imported, writing nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write Engagement_Status and Date Messaged back for leads sent to since the last push.
    Push,
}

async fn airtable(app: &App, command: AirtableCommand, json: bool) -> Result<ExitCode> {
    let config = app
        .settings
        .airtable
        .clone()
        .ok_or_else(|| anyhow!("no [airtable] section in the configuration"))?;
    let client = engager_sources::airtable::AirtableClient::new(config)?;
    match command {
        AirtableCommand::Sync { dry_run } => {
            let report = client.fetch_leads().await?;
            let outcomes = if dry_run || report.leads.is_empty() {
                Vec::new()
            } else {
                app.store
                    .upsert_leads(&report.leads, SystemClock.now())
                    .await?
            };
            let inserted = outcomes
                .iter()
                .filter(|o| matches!(o, UpsertOutcome::Inserted(_)))
                .count();
            let converted = crate::airtable_conversions::apply(
                app.store.as_ref(),
                &client.config().source_name(),
                &report.conversions,
                SystemClock.now(),
                dry_run,
            )
            .await?;
            if json {
                print_json(&json!({
                    "fetched": report.leads.len(), "inserted": inserted, "updated": outcomes.len() - inserted, "dry_run": dry_run,
                    "conversions": {"recorded": converted.recorded, "already_recorded": converted.already, "no_lead": converted.unknown},
                    "rejected": report.rejected.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                    "ineligible": report.ineligible.iter().map(|r| format!("{}: {}", r.record_id, r.reason)).collect::<Vec<_>>(),
                }));
            } else {
                for r in &report.rejected {
                    println!("rejected: {r}");
                }
                for r in &report.ineligible {
                    println!("not eligible: {}: {}", r.record_id, r.reason);
                }
                if !report.conversions.is_empty() {
                    println!(
                        "Conversions from Airtable statuses: {} {}, {} already recorded{}.",
                        converted.recorded,
                        if dry_run {
                            "would be recorded"
                        } else {
                            "recorded"
                        },
                        converted.already,
                        if converted.unknown.is_empty() {
                            String::new()
                        } else {
                            format!(
                                ", {} record(s) never imported ({})",
                                converted.unknown.len(),
                                converted.unknown.join(", ")
                            )
                        }
                    );
                }
                println!(
                    "{} lead(s) fetched{}; {} rejected, {} not eligible.",
                    report.leads.len(),
                    if dry_run {
                        " (dry run: nothing written)".to_string()
                    } else {
                        format!(": {} new, {} updated", inserted, outcomes.len() - inserted)
                    },
                    report.rejected.len(),
                    report.ineligible.len()
                );
            }
        }
        AirtableCommand::Push => {
            let total = push_to_airtable(app.store.as_ref(), &client).await?;
            if json {
                print_json(&json!({"written_back": total}));
            } else {
                println!("{total} Airtable record(s) updated.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
