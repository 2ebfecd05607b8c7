//! `engager consent` (consent, legitimate-interest, implied-consent, withdrawal and objection
//! records) and `engager compliance` (the report of sends, refusals and gaps; campaign checks
//! and lifting a compliance halt).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use engager_domain::compliance::{campaign_problems, Basis, ConsentRecord};
use engager_domain::{Channel, Lead};
use engager_engine::catalog::Catalog;
use engager_engine::{Clock, SystemClock};
use engager_store::{AuditEntry, SuppressionKey};
use serde_json::json;

use crate::commands::{find_lead, App};
use crate::output::{print_json, table, when};
use crate::report::parse_instant;

/// `engager consent`
#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Record consent, a legitimate-interest assessment or CASL implied consent for a lead.
    Add(AddArgs),
    /// A lead withdrew consent for a channel (a later consent re-grants it).
    Withdraw(WithdrawArgs),
    /// A lead objects to direct marketing (GDPR Art. 21): absolute and permanent; every
    /// contact point is suppressed and every sequence stops.
    Object(ObjectArgs),
    /// The records held about a lead (or the latest ones).
    List(ListArgs),
    /// Import records from CSV: email or lead_id, channel, basis, source,
    /// obtained_at, reference, expires_at. Every bad row is reported with its line.
    Import(ImportArgs),
}

/// `engager consent add`
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The lead: id or email address.
    #[arg(long)]
    pub lead: String,
    /// The channel it covers: email, sms, linkedin, or all.
    #[arg(long, default_value = "all")]
    pub channel: String,
    /// consent, legitimate_interest or implied.
    #[arg(long, default_value = "consent")]
    pub basis: String,
    /// Where it comes from: the form, the event, the document (kept as evidence).
    #[arg(long)]
    pub source: String,
    /// When it was given (a date or RFC 3339); default now.
    #[arg(long)]
    pub obtained_at: Option<String>,
    /// The legitimate-interest assessment or another document's reference.
    #[arg(long)]
    pub reference: Option<String>,
    /// When it lapses (a date or RFC 3339).
    #[arg(long)]
    pub expires_at: Option<String>,
}

/// `engager consent withdraw`
#[derive(Debug, Args)]
pub struct WithdrawArgs {
    /// The lead: id or email address.
    #[arg(long)]
    pub lead: String,
    /// The channel: email, sms, linkedin, or all.
    #[arg(long, default_value = "all")]
    pub channel: String,
    /// How the withdrawal came in.
    #[arg(long)]
    pub source: String,
}

/// `engager consent object`
#[derive(Debug, Args)]
pub struct ObjectArgs {
    /// The lead: id or email address.
    #[arg(long)]
    pub lead: String,
    /// How the objection came in.
    #[arg(long)]
    pub source: String,
}

/// `engager consent list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The lead: id or email address.
    #[arg(long)]
    pub lead: String,
}

/// `engager consent import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// Write nothing when any row is bad.
    #[arg(long)]
    pub strict: bool,
}

/// `engager compliance`
#[derive(Debug, Subcommand)]
pub enum ComplianceCommand {
    /// Sends and the rules checked for them, refusals by rule, gaps (e.g. Graph sends
    /// without a one-click header) and halted campaigns; exits 2 when there are gaps or halts.
    Report {
        /// Start of the period: an age (30d), a date or an RFC 3339 instant.
        #[arg(long, default_value = "30d")]
        since: String,
    },
    /// Checks every campaign against the configuration now (what would halt it).
    Check,
    /// Lift a campaign's compliance halt once its problem is fixed (refused while it
    /// persists); recorded in the audit log.
    Resume {
        /// The campaign's slug.
        campaign: String,
        /// Why it is safe to resume.
        #[arg(long, default_value = "resumed by a person after fixing the problem")]
        note: String,
    },
}

fn parse_channel(raw: &str) -> Result<Option<Channel>> {
    if raw.trim().eq_ignore_ascii_case("all") || raw.trim().is_empty() {
        return Ok(None);
    }
    raw.parse::<Channel>()
        .map(Some)
        .map_err(|e| anyhow!("{e}: expected email, sms, linkedin or all"))
}

fn contact_for(lead: &Lead, channel: Option<Channel>) -> Option<String> {
    match channel {
        Some(Channel::Email) => lead.profile.email.as_ref().map(|e| e.as_str().to_owned()),
        Some(Channel::Sms) => lead.profile.phone.as_ref().map(|p| p.as_str().to_owned()),
        _ => None,
    }
}

async fn record(app: &App, r: &ConsentRecord, actor: &str, now: DateTime<Utc>) -> Result<i64> {
    let id = app.store.record_consent(r).await?;
    app.store
        .append_audit(&AuditEntry {
            at: now,
            action: "consent".into(),
            subject: format!("lead:{}", r.lead_id.0),
            detail: format!(
                "{} for {} (record #{id})",
                r.basis,
                r.channel.map_or("every channel", |c| c.as_str())
            ),
            actor: actor.into(),
        })
        .await?;
    Ok(id)
}

fn record_json(r: &ConsentRecord) -> serde_json::Value {
    json!({
        "id": r.id, "lead_id": r.lead_id.0, "channel": r.channel.map(|c| c.as_str()),
        "basis": r.basis.as_str(), "source": r.source, "reference": r.reference,
        "contact": r.contact, "obtained_at": r.obtained_at.to_rfc3339(),
        "expires_at": r.expires_at.map(|t| t.to_rfc3339()),
    })
}

pub async fn consent(app: &App, command: ConsentCommand, json: bool) -> Result<ExitCode> {
    let now = SystemClock.now();
    match command {
        ConsentCommand::Add(a) => {
            let lead = find_lead(app.store.as_ref(), &a.lead).await?;
            let channel = parse_channel(&a.channel)?;
            let basis: Basis = a
                .basis
                .parse()
                .map_err(|e: String| anyhow!("--basis: {e}"))?;
            if matches!(basis, Basis::Withdrawn | Basis::Objection) {
                return Err(anyhow!(
                    "--basis {basis}: use `engager consent withdraw` or `engager consent object`"
                ));
            }
            if basis == Basis::LegitimateInterest && a.reference.is_none() {
                return Err(anyhow!(
                    "--basis legitimate_interest needs --reference: the documented assessment (GDPR Art. 6(1)(f))"
                ));
            }
            if a.source.trim().is_empty() {
                return Err(anyhow!(
                    "--source is empty: say where the consent comes from"
                ));
            }
            let r = ConsentRecord {
                id: 0,
                lead_id: lead.id,
                channel,
                basis,
                source: a.source,
                reference: a.reference,
                contact: contact_for(&lead, channel),
                obtained_at: match &a.obtained_at {
                    Some(v) => parse_instant(v, now, "--obtained-at")?,
                    None => now,
                },
                expires_at: a
                    .expires_at
                    .as_deref()
                    .map(|v| parse_instant(v, now, "--expires-at"))
                    .transpose()?,
            };
            if r.obtained_at > now {
                return Err(anyhow!("--obtained-at is in the future"));
            }
            let id = record(app, &r, "cli", now).await?;
            if json {
                print_json(
                    &json!({"recorded": id, "record": record_json(&ConsentRecord { id, ..r })}),
                );
            } else {
                println!(
                    "Recorded {} for lead {} on {} (record #{id}).",
                    r.basis,
                    lead.id,
                    r.channel.map_or("every channel", |c| c.as_str())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ConsentCommand::Withdraw(a) => {
            let lead = find_lead(app.store.as_ref(), &a.lead).await?;
            let channel = parse_channel(&a.channel)?;
            let r = ConsentRecord {
                id: 0,
                lead_id: lead.id,
                channel,
                basis: Basis::Withdrawn,
                source: a.source,
                reference: None,
                contact: contact_for(&lead, channel),
                obtained_at: now,
                expires_at: None,
            };
            let id = record(app, &r, "cli", now).await?;
            if json {
                print_json(&json!({"recorded": id}));
            } else {
                println!(
                    "Consent withdrawn for lead {} on {} (record #{id}); queued sends that need it are cancelled at send time.",
                    lead.id,
                    channel.map_or("every channel", |c| c.as_str())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ConsentCommand::Object(a) => {
            let lead = find_lead(app.store.as_ref(), &a.lead).await?;
            let r = ConsentRecord {
                id: 0,
                lead_id: lead.id,
                channel: None,
                basis: Basis::Objection,
                source: a.source,
                reference: None,
                contact: None,
                obtained_at: now,
                expires_at: None,
            };
            let id = record(app, &r, "cli", now).await?;
            // Suppressed too: the hashed entry outlives an erasure, so the objection does.
            let mut suppressed = 0;
            for key in engager_engine::planner::suppression_keys(&lead)
                .into_iter()
                .filter(|k| !matches!(k, SuppressionKey::Domain(_)))
            {
                suppressed += u32::from(
                    app.store
                        .add_suppression(&key, "objection (GDPR Art. 21)", "consent object", now)
                        .await?,
                );
            }
            if json {
                print_json(&json!({"recorded": id, "suppressed": suppressed}));
            } else {
                println!(
                    "Objection recorded for lead {} (record #{id}); {suppressed} contact point(s) suppressed. Every sequence of the lead stops, and queued sends are cancelled.",
                    lead.id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ConsentCommand::List(a) => {
            let lead = find_lead(app.store.as_ref(), &a.lead).await?;
            let records =
                engager_engine::compliance::lead_consents(app.store.as_ref(), &lead).await?;
            if json {
                print_json(
                    &json!({"lead_id": lead.id.0, "records": records.iter().map(record_json).collect::<Vec<_>>()}),
                );
            } else if records.is_empty() {
                println!("No consent records for lead {}.", lead.id);
            } else {
                let mut t = table(&[
                    "#",
                    "Basis",
                    "Channel",
                    "Given",
                    "Until",
                    "Source",
                    "Reference",
                ]);
                for r in &records {
                    t.add_row(vec![
                        if r.id > 0 {
                            r.id.to_string()
                        } else {
                            "field".into()
                        },
                        r.basis.to_string(),
                        r.channel.map_or("all".into(), |c| c.to_string()),
                        if r.obtained_at == DateTime::<Utc>::UNIX_EPOCH {
                            "not recorded".into()
                        } else {
                            when(r.obtained_at)
                        },
                        r.expires_at.map(when).unwrap_or_default(),
                        r.source.clone(),
                        r.reference.clone().unwrap_or_default(),
                    ]);
                }
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ConsentCommand::Import(a) => import(app, a, json, now).await,
    }
}

async fn import(app: &App, a: ImportArgs, json: bool, now: DateTime<Utc>) -> Result<ExitCode> {
    let file = a.file.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(&a.file)
        .with_context(|| format!("cannot read {file}"))?;
    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("{file}: cannot read the header row"))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let known = [
        "email",
        "lead_id",
        "channel",
        "basis",
        "source",
        "obtained_at",
        "reference",
        "expires_at",
    ];
    if let Some(h) = headers.iter().find(|h| !known.contains(&h.as_str())) {
        return Err(anyhow!(
            "{file}: unknown column {h:?}; expected some of {}",
            known.join(", ")
        ));
    }
    if !headers.iter().any(|h| h == "source") {
        return Err(anyhow!(
            "{file}: the column `source` is required (where each consent comes from)"
        ));
    }
    let col = |row: &csv::StringRecord, name: &str| -> Option<String> {
        headers
            .iter()
            .position(|h| h == name)
            .and_then(|i| row.get(i))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut good = Vec::new();
    let mut rejected = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                rejected.push(json!({"line": line, "reason": e.to_string()}));
                continue;
            }
        };
        let parsed: Result<ConsentRecord> = async {
            let lead = if let Some(id) = col(&row, "lead_id") {
                find_lead(app.store.as_ref(), &id).await?
            } else if let Some(email) = col(&row, "email") {
                find_lead(app.store.as_ref(), &email).await?
            } else {
                return Err(anyhow!("give email or lead_id"));
            };
            let channel = parse_channel(col(&row, "channel").as_deref().unwrap_or("all"))
                .map_err(|e| anyhow!("field channel: {e}"))?;
            let basis: Basis = col(&row, "basis")
                .unwrap_or_else(|| "consent".into())
                .parse()
                .map_err(|e: String| anyhow!("field basis: {e}"))?;
            let reference = col(&row, "reference");
            if basis == Basis::LegitimateInterest && reference.is_none() {
                return Err(anyhow!(
                    "field reference: a legitimate interest needs the assessment's reference"
                ));
            }
            let source = col(&row, "source").ok_or_else(|| anyhow!("field source: empty"))?;
            let obtained_at = match col(&row, "obtained_at") {
                Some(v) => parse_instant(&v, now, "field obtained_at")?,
                None => now,
            };
            if obtained_at > now {
                return Err(anyhow!("field obtained_at: in the future"));
            }
            let expires_at = col(&row, "expires_at")
                .map(|v| parse_instant(&v, now, "field expires_at"))
                .transpose()?;
            Ok(ConsentRecord {
                id: 0,
                lead_id: lead.id,
                channel,
                basis,
                source: format!("{source} (imported from {file} line {line})"),
                reference,
                contact: contact_for(&lead, channel),
                obtained_at,
                expires_at,
            })
        }
        .await;
        match parsed {
            Ok(r) => good.push(r),
            Err(e) => rejected.push(json!({"file": file, "line": line, "reason": e.to_string()})),
        }
    }
    let write = !(a.strict && !rejected.is_empty());
    let mut written = 0;
    if write {
        for r in &good {
            record(app, r, &format!("import:{file}"), now).await?;
            written += 1;
        }
    }
    if json {
        print_json(&json!({"written": written, "rejected": rejected, "strict": a.strict}));
    } else {
        println!("{written} consent record(s) written from {file}.");
        for r in &rejected {
            println!(
                "  line {}: {}",
                r["line"],
                r["reason"].as_str().unwrap_or_default()
            );
        }
        if !write {
            println!(
                "Nothing written: --strict and {} bad row(s).",
                rejected.len()
            );
        }
    }
    Ok(if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub async fn compliance(app: &App, command: ComplianceCommand, json: bool) -> Result<ExitCode> {
    let now = SystemClock.now();
    let catalog = Catalog::load(app.store.as_ref()).await?;
    let rules = engager_engine::compliance::rules(&app.engine);
    match command {
        ComplianceCommand::Report { since } => {
            let since = parse_instant(&since, now, "--since")?;
            let r = engager_engine::compliance::report(app.store.as_ref(), &catalog, since, now)
                .await?;
            if json {
                print_json(&serde_json::to_value(&r)?);
            } else {
                println!("Compliance since {}\n", when(since));
                let mut t = table(&[
                    "Channel",
                    "Provider",
                    "Sends",
                    "Rules checked",
                    "On a consent record",
                    "Footer",
                    "One-click header",
                    "STOP wording",
                ]);
                for s in &r.sends {
                    let email = s.channel == "email";
                    let sms = s.channel == "sms";
                    t.add_row(vec![
                        s.channel.clone(),
                        s.provider.clone(),
                        s.sends.to_string(),
                        s.regimes
                            .iter()
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        s.with_consent_record.to_string(),
                        if email {
                            format!("{}/{}", s.with_footer, s.sends)
                        } else {
                            "–".into()
                        },
                        if email {
                            format!("{}/{}", s.with_one_click_header, s.sends)
                        } else {
                            "–".into()
                        },
                        if sms {
                            format!("{}/{}", s.with_stop_wording, s.sends)
                        } else {
                            "–".into()
                        },
                    ]);
                }
                println!("Sends\n{t}\n");
                if r.blocks.is_empty() {
                    println!("Refused: none.\n");
                } else {
                    let mut t = table(&["Rule", "Decisions", "Leads", "Example"]);
                    for b in &r.blocks {
                        t.add_row(vec![
                            b.rule.clone(),
                            b.decisions.to_string(),
                            b.leads.to_string(),
                            b.example.clone(),
                        ]);
                    }
                    println!("Refused by rule\n{t}\n");
                }
                if r.gaps.is_empty() {
                    println!("Gaps: none.");
                } else {
                    let mut by_kind: std::collections::BTreeMap<(String, String, String), u64> =
                        Default::default();
                    for g in &r.gaps {
                        *by_kind
                            .entry((g.channel.clone(), g.provider.clone(), g.missing.clone()))
                            .or_default() += 1;
                    }
                    let mut t = table(&["Channel", "Provider", "Sends", "Missing"]);
                    for ((c, p, m), n) in by_kind {
                        t.add_row(vec![c, p, n.to_string(), m]);
                    }
                    println!("Gaps ({} sends)\n{t}", r.gaps.len());
                }
                for (slug, reason) in &r.halted_campaigns {
                    println!("HALTED campaign {slug}: {reason}");
                }
            }
            Ok(if r.gaps.is_empty() && r.halted_campaigns.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        ComplianceCommand::Check => {
            let mut rows = Vec::new();
            for c in catalog.all() {
                let problems = campaign_problems(&rules, c);
                rows.push((c.slug.clone(), problems));
            }
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let any = rows.iter().any(|(_, p)| !p.is_empty());
            if json {
                print_json(&json!({
                    "validators": rules.validators.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "legitimate_interest": rules.legitimate_interest,
                    "campaigns": rows.iter().map(|(s, p)| json!({"campaign": s, "problems": p.iter().map(ToString::to_string).collect::<Vec<_>>()})).collect::<Vec<_>>(),
                }));
            } else {
                println!(
                    "Validators: {}; company legitimate-interest assessment: {}",
                    rules
                        .validators
                        .iter()
                        .map(|r| r.label())
                        .collect::<Vec<_>>()
                        .join(", "),
                    rules.legitimate_interest.as_deref().unwrap_or("none")
                );
                let mut t = table(&["Campaign", "Problems"]);
                for (s, p) in &rows {
                    t.add_row(vec![
                        s.clone(),
                        if p.is_empty() {
                            "none".into()
                        } else {
                            p.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join("\n")
                        },
                    ]);
                }
                println!("{t}");
            }
            Ok(if any {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        ComplianceCommand::Resume { campaign, note } => {
            let c = catalog
                .by_slug(&campaign)
                .ok_or_else(|| anyhow!("no campaign {campaign:?}"))?;
            let resumed = engager_engine::compliance::resume(
                app.store.as_ref(),
                &rules,
                c,
                "cli",
                &note,
                now,
            )
            .await?;
            if json {
                print_json(&json!({"campaign": campaign, "resumed": resumed}));
            } else if resumed {
                println!(
                    "Campaign {campaign} resumed; its leads are planned again within 15 minutes."
                );
            } else {
                println!("Campaign {campaign} was not halted; nothing changed.");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
