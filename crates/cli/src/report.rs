//! `engager report` (what worked, grouped by a dimension, with intervals and the funnel) and
//! `engager convert` (a lead became an opportunity or booked a meeting).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::Args;
use engager_domain::EventKind;
use engager_engine::report::{build, Dimension, Report, ReportRow};
use engager_store::{NewEvent, ReportQuery};
use serde_json::json;

use crate::commands::{find_lead, App};
use crate::output::{print_json, table};

/// `engager report`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only this campaign (its slug).
    #[arg(long)]
    pub campaign: Option<String>,
    /// Start of the period: a date (2026-11-01), an RFC 3339 instant, or an age such as
    /// `30d`, `12h` or `2w`.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// End of the period (exclusive), in the same forms; default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Group rows by campaign, step, variant, channel, country, industry or day.
    #[arg(long, default_value = "step")]
    pub by: String,
    /// Confidence of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Print CSV (one row per group, then the total) instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

/// Parses `30d`/`12h`/`2w`/`90m` (an age before `now`), a date, or an RFC 3339 instant.
pub fn parse_instant(value: &str, now: DateTime<Utc>, what: &str) -> Result<DateTime<Utc>> {
    let v = value.trim();
    if let Some((number, unit)) = v
        .char_indices()
        .last()
        .map(|(i, c)| (&v[..i], c))
        .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        let n: i64 = number
            .parse()
            .with_context(|| format!("{what} {value:?}: the number is too large"))?;
        let age = match unit {
            'm' => Duration::try_minutes(n),
            'h' => Duration::try_hours(n),
            'd' => Duration::try_days(n),
            'w' => Duration::try_weeks(n),
            _ => None,
        }
        .ok_or_else(|| anyhow!("{what} {value:?}: expected a unit of m, h, d or w"))?;
        return Ok(now - age);
    }
    if let Ok(date) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            anyhow!(
                "{what} {value:?}: expected an age (30d, 12h, 2w), a date (2026-11-01) or an RFC 3339 instant"
            )
        })
}

pub async fn report(app: &App, args: ReportArgs, json: bool) -> Result<ExitCode> {
    let now = Utc::now();
    let by: Dimension = args.by.parse().map_err(|e: String| anyhow!("--by: {e}"))?;
    if !(0.5..1.0).contains(&args.confidence) {
        bail!(
            "--confidence {}: expected a value in [0.5, 1)",
            args.confidence
        );
    }
    let since = parse_instant(&args.since, now, "--since")?;
    let until = match &args.until {
        Some(u) => parse_instant(u, now, "--until")?,
        None => now,
    };
    if since >= until {
        bail!("--since ({since}) must be before --until ({until})");
    }
    if let Some(slug) = &args.campaign {
        let known = app.store.campaigns().await?;
        if !known.iter().any(|c| &c.slug == slug) {
            let names: Vec<&str> = known.iter().map(|c| c.slug.as_str()).collect();
            bail!(
                "--campaign {slug:?} is not a known campaign (known: {})",
                names.join(", ")
            );
        }
    }
    let facts = app
        .store
        .report_facts(&ReportQuery {
            campaign: args.campaign.clone(),
            since,
            until,
        })
        .await?;
    let report = build(&facts, by, args.confidence);
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["since"] = json!(since.to_rfc3339());
        value["until"] = json!(until.to_rfc3339());
        value["campaign"] = json!(args.campaign);
        print_json(&value);
    } else if args.csv {
        write_csv(&report)?;
    } else {
        print_table(&report, since, until, args.campaign.as_deref());
    }
    Ok(ExitCode::SUCCESS)
}

const RATES: [&str; 8] = [
    "open",
    "click",
    "reply",
    "positive_reply",
    "bounce",
    "complaint",
    "unsubscribe",
    "conversion",
];

fn write_csv(report: &Report) -> Result<()> {
    let stdout = std::io::stdout();
    let mut w = csv::Writer::from_writer(stdout.lock());
    let mut header: Vec<String> = [
        report.by.as_str(),
        "leads",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "replied",
        "positive_replies",
        "bounced",
        "complaints",
        "unsubscribed",
        "conversions",
        "conversion_value",
        "median_hours_to_reply",
    ]
    .map(String::from)
    .to_vec();
    for r in RATES {
        header.extend([format!("{r}_rate"), format!("{r}_low"), format!("{r}_high")]);
    }
    w.write_record(&header)?;
    for row in report.rows.iter().chain(std::iter::once(&report.total)) {
        let mut record = vec![
            row.key.clone(),
            row.leads.to_string(),
            row.sent.to_string(),
            row.delivered.to_string(),
            row.opened.to_string(),
            row.clicked.to_string(),
            row.replied.to_string(),
            row.positive_replies.to_string(),
            row.bounced.to_string(),
            row.complaints.to_string(),
            row.unsubscribed.to_string(),
            row.conversions.to_string(),
            format!("{:.2}", row.conversion_value),
            row.median_hours_to_reply
                .map(|h| format!("{h:.1}"))
                .unwrap_or_default(),
        ];
        for r in RATES {
            match row.rates.get(r) {
                Some(rate) => {
                    record.extend([rate.rate, rate.low, rate.high].map(|v| format!("{v:.5}")))
                }
                None => record.extend([String::new(), String::new(), String::new()]),
            }
        }
        w.write_record(&record)?;
    }
    w.flush()?;
    std::io::stdout().flush()?;
    Ok(())
}

fn pct(row: &ReportRow, name: &str) -> String {
    match row.rates.get(name) {
        Some(r) => format!(
            "{:.1}% [{:.1}–{:.1}]",
            r.rate * 100.0,
            r.low * 100.0,
            r.high * 100.0
        ),
        None => "–".into(),
    }
}

fn print_table(
    report: &Report,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    campaign: Option<&str>,
) {
    println!(
        "Report by {} for {}, {} to {} (rates per message sent, {:.0}% Wilson intervals)",
        report.by,
        campaign.map_or("all campaigns".to_owned(), |c| format!("campaign {c}")),
        since.format("%Y-%m-%d %H:%M"),
        until.format("%Y-%m-%d %H:%M UTC"),
        report.confidence * 100.0
    );
    if report.total.sent == 0 {
        println!("Nothing was sent in this period.");
        return;
    }
    let mut t = table(&[
        report.by.as_str(),
        "leads",
        "sent",
        "opened",
        "clicked",
        "replied (positive)",
        "reply rate",
        "bounced",
        "unsub.",
        "compl.",
        "conv.",
        "h to reply",
    ]);
    for row in report.rows.iter().chain(std::iter::once(&report.total)) {
        t.add_row(vec![
            row.key.clone(),
            row.leads.to_string(),
            row.sent.to_string(),
            format!("{} · {}", row.opened, pct(row, "open")),
            row.clicked.to_string(),
            format!("{} ({})", row.replied, row.positive_replies),
            pct(row, "reply"),
            format!("{} · {}", row.bounced, pct(row, "bounce")),
            row.unsubscribed.to_string(),
            row.complaints.to_string(),
            if row.conversion_value > 0.0 {
                format!("{} ({:.0})", row.conversions, row.conversion_value)
            } else {
                row.conversions.to_string()
            },
            row.median_hours_to_reply
                .map(|h| format!("{h:.0}"))
                .unwrap_or_else(|| "–".into()),
        ]);
    }
    println!("{t}");
    println!("Funnel (distinct leads):");
    for stage in &report.funnel {
        let width = (stage.share * 40.0).round() as usize;
        println!(
            "  {:<15} {:>7}  {:>5.1}%  {}",
            stage.stage,
            stage.leads,
            stage.share * 100.0,
            "█".repeat(width)
        );
    }
}

/// `engager convert`
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The lead: its id or email address.
    pub lead: String,
    /// The opportunity's value (any currency; summed in reports).
    #[arg(long, allow_negative_numbers = true)]
    pub value: Option<f64>,
    /// A note kept with the event (e.g. "meeting booked").
    #[arg(long)]
    pub note: Option<String>,
}

pub async fn convert(app: &App, args: ConvertArgs, json: bool) -> Result<ExitCode> {
    if let Some(v) = args.value {
        if !v.is_finite() || v < 0.0 {
            bail!("--value {v}: expected a finite amount of 0 or more");
        }
    }
    let lead = find_lead(app.store.as_ref(), &args.lead).await?;
    let detail = json!({"value": args.value, "note": args.note});
    let effects = app
        .store
        .record_event(&NewEvent {
            lead_id: lead.id,
            delivery_id: None,
            kind: EventKind::Converted,
            occurred_at: Utc::now(),
            detail: detail.to_string(),
            source: "manual".into(),
        })
        .await?;
    if json {
        print_json(&json!({
            "lead_id": lead.id.0,
            "kind": "converted",
            "value": args.value,
            "enrollments_stopped": effects.enrollments_stopped,
            "deliveries_cancelled": effects.deliveries_cancelled,
        }));
    } else {
        println!(
            "Lead {} converted{}: {} sequence(s) stopped, {} pending deliver(ies) cancelled.",
            lead.id,
            args.value
                .map(|v| format!(" (value {v})"))
                .unwrap_or_default(),
            effects.enrollments_stopped,
            effects.deliveries_cancelled
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn instants_parse_from_ages_dates_and_rfc3339() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        assert_eq!(
            parse_instant("30d", now, "--since").unwrap(),
            now - Duration::days(30)
        );
        assert_eq!(
            parse_instant("2w", now, "--since").unwrap(),
            now - Duration::weeks(2)
        );
        assert_eq!(
            parse_instant("12h", now, "--since").unwrap(),
            now - Duration::hours(12)
        );
        assert_eq!(
            parse_instant("2026-11-01", now, "--since").unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_instant("2026-11-01T08:30:00+01:00", now, "--since").unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 7, 30, 0).unwrap()
        );
        let err = parse_instant("30x", now, "--since")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--since \"30x\""), "{err}");
        let err = parse_instant("yesterday", now, "--until")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--until \"yesterday\": expected an age"),
            "{err}"
        );
    }
}

/// `engager anomalies`
#[derive(Debug, Args)]
pub struct AnomaliesArgs {
    /// The recent period judged, as an age (e.g. 24h, 3d).
    #[arg(long, default_value = "24h")]
    pub recent: String,
    /// The baseline before it (e.g. 14d).
    #[arg(long, default_value = "14d")]
    pub baseline: String,
    /// How long a send's replies are waited for before it is judged (e.g. 48h).
    #[arg(long, default_value = "48h")]
    pub maturity: String,
    /// Raise each anomaly through the configured alert sinks too.
    #[arg(long)]
    pub alert: bool,
}

fn age(value: &str, what: &str) -> Result<Duration> {
    let anchor = DateTime::<Utc>::UNIX_EPOCH + Duration::days(365 * 100);
    let age = anchor - parse_instant(value, anchor, what)?;
    if age <= Duration::zero() || !value.trim().ends_with(['m', 'h', 'd', 'w']) {
        bail!("{what} {value:?}: expected a length of time such as 24h, 3d or 2w");
    }
    Ok(age)
}

/// Finds the anomalies of `now` (the same figures `engager anomalies` prints).
pub async fn find_anomalies(
    app: &App,
    rules: &engager_engine::analytics::AnomalyRules,
    now: DateTime<Utc>,
) -> Result<Vec<engager_engine::analytics::Anomaly>> {
    let (since, _, until) = rules.periods(now);
    let facts = app
        .store
        .report_facts(&ReportQuery {
            campaign: None,
            since,
            until,
        })
        .await?;
    Ok(engager_engine::analytics::anomalies(&facts, rules, now))
}

/// Raises each anomaly as an alert, once a day at most per scope and rate (`seen` remembers
/// when each was last raised).
pub async fn alert_anomalies(
    alerter: &engager_engine::alerts::Alerter,
    found: &[engager_engine::analytics::Anomaly],
    seen: &mut std::collections::HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) {
    for a in found {
        let key = format!("{} {}", a.scope, a.metric.as_str());
        if seen
            .get(&key)
            .is_some_and(|at| now - *at < Duration::days(1))
        {
            continue;
        }
        seen.insert(key, now);
        alerter
            .raise(engager_engine::alerts::Alert {
                kind: engager_engine::alerts::AlertKind::Anomaly,
                account: format!("{} {}", a.scope, a.metric.as_str()),
                summary: a.summary(),
                details: vec![
                    ("baseline_rate".into(), format!("{:.5}", a.baseline_rate)),
                    ("recent_rate".into(), format!("{:.5}", a.recent_rate)),
                    ("p_value".into(), format!("{:.6}", a.p_value)),
                ],
                at: now,
            })
            .await;
    }
}

pub async fn anomalies(app: &App, args: AnomaliesArgs, json: bool) -> Result<ExitCode> {
    let now = Utc::now();
    let rules = engager_engine::analytics::AnomalyRules {
        recent: age(&args.recent, "--recent")?,
        baseline: age(&args.baseline, "--baseline")?,
        maturity: age(&args.maturity, "--maturity")?,
        ..Default::default()
    };
    let found = find_anomalies(app, &rules, now).await?;
    if args.alert {
        let channels = app.channels();
        let alerter = app.settings.alerter(
            &app.engine,
            channels.get(engager_domain::Channel::Email).cloned(),
        )?;
        alert_anomalies(&alerter, &found, &mut Default::default(), now).await;
    }
    let (base_start, recent_start, end) = rules.periods(now);
    if json {
        print_json(&json!({
            "baseline": {"from": base_start.to_rfc3339(), "to": recent_start.to_rfc3339()},
            "recent": {"from": recent_start.to_rfc3339(), "to": end.to_rfc3339()},
            "anomalies": found,
        }));
    } else {
        println!(
            "Sends of {} to {} against the baseline of {} to {} (each send given {} h to show replies).",
            recent_start.format("%Y-%m-%d %H:%M"),
            end.format("%Y-%m-%d %H:%M UTC"),
            base_start.format("%Y-%m-%d %H:%M"),
            recent_start.format("%Y-%m-%d %H:%M UTC"),
            rules.maturity.num_hours()
        );
        if found.is_empty() {
            println!("No significant change for the worse (p < {}).", rules.alpha);
        } else {
            let mut t = table(&["Scope", "Rate", "Baseline", "Recent", "p"]);
            for a in &found {
                t.add_row(vec![
                    a.scope.clone(),
                    a.metric.as_str().to_owned(),
                    format!("{:.2}% of {}", a.baseline_rate * 100.0, a.baseline_sent),
                    format!("{:.2}% of {}", a.recent_rate * 100.0, a.recent_sent),
                    format!("{:.4}", a.p_value),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `engager recommend`
#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Only this campaign (its slug).
    #[arg(long)]
    pub campaign: Option<String>,
    /// Start of the period (an age, a date, or RFC 3339).
    #[arg(long, default_value = "90d")]
    pub since: String,
    /// Sends a group needs before it is compared.
    #[arg(long, default_value_t = 100)]
    pub min_sample: u64,
    /// Also rewrite the recommendations as a short narrative with the configured model
    /// (`[ai]`); kept only when every number in it appears in the evidence, else the plain
    /// list stands and the reason is given.
    #[arg(long)]
    pub narrative: bool,
}

pub async fn recommend(app: &App, args: RecommendArgs, json: bool) -> Result<ExitCode> {
    let now = Utc::now();
    let since = parse_instant(&args.since, now, "--since")?;
    let facts = app
        .store
        .report_facts(&ReportQuery {
            campaign: args.campaign.clone(),
            since,
            until: now,
        })
        .await?;
    let recs = engager_engine::analytics::recommendations(
        &facts,
        &engager_engine::analytics::RecommendationRules {
            min_sample: args.min_sample.max(1),
            ..Default::default()
        },
    );
    let narrative = if args.narrative && !recs.is_empty() {
        let engine = app.settings.engine_config()?;
        let stage = app.settings.ai.stage(&app.config_dir, &engine)?;
        Some(engager_engine::narrative::narrate(stage.client(), &recs).await)
    } else {
        None
    };
    use engager_engine::narrative::Narrative;
    if json {
        print_json(&json!({
            "since": since.to_rfc3339(),
            "sends": facts.deliveries.len(),
            "recommendations": recs,
            "narrative": narrative.as_ref().map(|n| match n {
                Narrative::Accepted(text) => json!({"status": "accepted", "text": text}),
                Narrative::Rejected { reason, text } => json!({"status": "rejected", "reason": reason, "model_text": text}),
                Narrative::Failed(e) => json!({"status": "failed", "reason": e}),
            }),
        }));
    } else if recs.is_empty() {
        println!(
            "No recommendation with enough evidence from {} sends since {} (groups need {} sends and a significant difference).",
            facts.deliveries.len(),
            since.format("%Y-%m-%d"),
            args.min_sample
        );
    } else {
        match &narrative {
            Some(Narrative::Accepted(text)) => println!("{text}\n\nThe evidence:"),
            Some(Narrative::Rejected { reason, .. }) => {
                println!("The model's narrative was rejected ({reason}); the plain list follows.")
            }
            Some(Narrative::Failed(e)) => {
                println!("No narrative: {e}; the plain list follows.")
            }
            None => {}
        }
        for (i, r) in recs.iter().enumerate() {
            println!("{}. {}\n   {}", i + 1, r.action, r.evidence);
        }
    }
    Ok(ExitCode::SUCCESS)
}
