//! `engager schedule --lead X`: the computed next slots of a lead's enrollments and why — the
//! zone and where it came from, the window, holidays skipped, the best-hour scores, the
//! contact budget — by running the planner's pure evaluation without recording anything.

use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Datelike, Duration, Utc};
use clap::Args;
use engager_domain::frequency::{BudgetVerdict, ContactBudget};
use engager_domain::schedule::weekday_name;
use engager_domain::{Channel, Lead, LeadHistory, Touch};
use engager_engine::planner::{suppression_keys, Planner};
use engager_engine::timing::{lead_place, lead_scores, next_step_due, slot_rules};
use engager_engine::{Catalog, Clock, SystemClock};
use engager_store::{
    DeliveryFilter, DueEnrollment, EnrollmentRecord, EnrollmentState, Evaluation, PlanDecision,
};
use serde_json::{json, Value};

use crate::commands::{find_lead, App};
use crate::output::{print_json, when};

/// `engager schedule`
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Lead id or email address.
    #[arg(long)]
    pub lead: String,
    /// Only this campaign (slug).
    #[arg(long)]
    pub campaign: Option<String>,
    /// Compute as of this instant (RFC 3339) instead of now, e.g. inside a simulation.
    #[arg(long)]
    pub at: Option<String>,
}

/// One enrollment's computed next step.
struct Row {
    campaign: String,
    step: usize,
    step_name: String,
    state: &'static str,
    evaluated_at: DateTime<Utc>,
    projected: bool,
    evaluation: Option<Evaluation>,
    note: Option<String>,
}

/// Runs `engager schedule`.
pub async fn run(app: &App, args: ScheduleArgs, json: bool) -> Result<ExitCode> {
    let now = match &args.at {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .with_context(|| {
                format!("--at {text:?}: expected RFC 3339, e.g. 2026-03-03T09:00:00Z")
            })?
            .with_timezone(&Utc),
        None => SystemClock.now(),
    };
    let store = app.store.as_ref();
    let config = &app.engine;
    let catalog = Catalog::load(store).await?;
    let lead = find_lead(store, &args.lead).await?;
    let only = match &args.campaign {
        Some(slug) => Some(
            catalog
                .by_slug(slug)
                .ok_or_else(|| anyhow!("no campaign {slug:?} (see `engager campaign list`)"))?
                .id,
        ),
        None => None,
    };
    let enrollments: Vec<EnrollmentRecord> = store
        .enrollments_for_lead(lead.id)
        .await?
        .into_iter()
        .filter(|e| only.is_none_or(|id| e.campaign_id == id))
        .collect();
    let history = store
        .contact_history(&[lead.id], now - config.timing.history)
        .await?
        .remove(&lead.id)
        .unwrap_or_default();
    let suppressed = store.suppressed(&suppression_keys(&lead)).await?;
    let planner = Planner::new(store, &catalog, config);

    let mut rows = Vec::new();
    for e in &enrollments {
        let Some(campaign) = catalog.get(e.campaign_id) else {
            continue;
        };
        let step_name = |i: usize| {
            campaign
                .step(i)
                .map_or_else(String::new, |s| s.name.clone())
        };
        match e.state {
            EnrollmentState::Active => {
                let at = e.next_due_at.map_or(now, |d| d.max(now));
                let due = DueEnrollment {
                    enrollment: e.clone(),
                    lead: lead.clone(),
                };
                rows.push(Row {
                    campaign: campaign.slug.clone(),
                    step: e.current_step,
                    step_name: step_name(e.current_step),
                    state: "active",
                    evaluated_at: at,
                    projected: false,
                    evaluation: Some(planner.evaluate(&due, campaign, &history, &suppressed, at)),
                    note: None,
                });
            }
            EnrollmentState::Waiting => {
                let pending = store
                    .deliveries(&DeliveryFilter {
                        lead: Some(lead.id),
                        campaign: Some(campaign.id),
                        ..Default::default()
                    })
                    .await?
                    .into_iter()
                    .find(|d| d.step_index == e.current_step && d.sent_at.is_none());
                let note = pending.as_ref().map(|d| {
                    format!(
                        "step {} is in the ledger: {} by {} at {}",
                        e.current_step + 1,
                        d.state,
                        d.channel,
                        when(d.send_at)
                    )
                });
                rows.push(Row {
                    campaign: campaign.slug.clone(),
                    step: e.current_step,
                    step_name: step_name(e.current_step),
                    state: "waiting",
                    evaluated_at: now,
                    projected: false,
                    evaluation: None,
                    note,
                });
                // The step after it, assuming the planned one goes out on time and gets no
                // reaction.
                if let (Some(d), Some(next)) = (pending, campaign.step(e.current_step + 1)) {
                    let sent_at = d.send_at.max(now);
                    let due_at = next_step_due(config, &lead, next, sent_at);
                    let mut projected = history.clone();
                    projected.touches.push(Touch {
                        at: sent_at,
                        channel: d.channel,
                        sent: true,
                        delivery: Some(d.id),
                        step: Some((e.id, e.current_step)),
                    });
                    let due = DueEnrollment {
                        enrollment: EnrollmentRecord {
                            current_step: e.current_step + 1,
                            next_due_at: Some(due_at),
                            state: EnrollmentState::Active,
                            ..e.clone()
                        },
                        lead: lead.clone(),
                    };
                    rows.push(Row {
                        campaign: campaign.slug.clone(),
                        step: e.current_step + 1,
                        step_name: next.name.clone(),
                        state: "projected",
                        evaluated_at: due_at,
                        projected: true,
                        evaluation: Some(planner.evaluate(
                            &due,
                            campaign,
                            &projected,
                            &suppressed,
                            due_at,
                        )),
                        note: Some(format!(
                            "if step {} goes out at {} and gets no reaction",
                            e.current_step + 1,
                            when(sent_at)
                        )),
                    });
                }
            }
            EnrollmentState::Completed | EnrollmentState::Stopped => rows.push(Row {
                campaign: campaign.slug.clone(),
                step: e.current_step,
                step_name: step_name(e.current_step),
                state: e.state.as_str(),
                evaluated_at: now,
                projected: false,
                evaluation: None,
                note: e.stop_reason.clone(),
            }),
        }
    }

    let facts = LeadFacts::new(app, &lead, &history, &catalog, now);
    if json {
        print_json(&json!({
            "lead": {"id": lead.id.0, "name": lead.display_name()},
            "at": now.to_rfc3339(),
            "zone": facts.zone_json(),
            "holidays_next_60_days": facts.holidays,
            "sms_hours": facts.sms,
            "budget": facts.budget,
            "best_hours": facts.best_hours,
            "enrollments": rows.iter().map(|r| row_json(r, &lead, &facts)).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Lead {} · {} · as of {}",
        lead.id,
        lead.display_name(),
        when(now)
    );
    println!("Zone: {}", facts.zone_text);
    println!(
        "Holidays in the next 60 days: {}",
        if facts.holidays.is_empty() {
            "none".to_owned()
        } else {
            facts.holidays.join(", ")
        }
    );
    if let Some(sms) = facts.sms.as_str() {
        println!("SMS hours: {sms}");
    }
    println!("Budget now: {}", facts.budget_text);
    println!("Best hours: {}", facts.best_text);
    if rows.is_empty() {
        println!(
            "\nThe lead has no enrollments{}.",
            if only.is_some() {
                " in that campaign"
            } else {
                ""
            }
        );
    }
    for r in &rows {
        let step = if r.step_name.is_empty() {
            "all steps handled".to_owned()
        } else {
            format!("step {} ({})", r.step + 1, r.step_name)
        };
        println!(
            "\n{} {step} · {}{}",
            r.campaign,
            r.state,
            r.note
                .as_ref()
                .map(|n| format!(" · {n}"))
                .unwrap_or_default()
        );
        let Some(e) = &r.evaluation else { continue };
        println!("  → {}", outcome_text(e, &lead, &facts, r.evaluated_at));
        for g in &e.trace.gates {
            if matches!(g.gate.as_str(), "personalization" | "content") && g.passed {
                continue;
            }
            println!(
                "  {} {:<11} {}",
                if g.passed { "✓" } else { "✗" },
                g.gate,
                g.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Facts about the lead that hold across its enrollments.
struct LeadFacts {
    zone_text: String,
    zone: engager_domain::zone::ZoneResolution,
    holidays: Vec<String>,
    sms: Value,
    budget: Value,
    budget_text: String,
    best_hours: Value,
    best_text: String,
}

impl LeadFacts {
    fn new(
        app: &App,
        lead: &Lead,
        history: &LeadHistory,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Self {
        let config = &app.engine;
        let place = lead_place(config, lead);
        let zone = place.zone;
        let local_today = now.with_timezone(&zone.zone.tz()).date_naive();
        let holidays: Vec<String> = place
            .holidays
            .dates()
            .iter()
            .filter(|d| **d >= local_today && **d < local_today + Duration::days(60))
            .map(|d| format!("{} {}", weekday_name(d.weekday()), d.format("%Y-%m-%d")))
            .collect();
        let sms = if lead.reachable_on(Channel::Sms) {
            let any = catalog
                .all()
                .first()
                .map_or_else(engager_domain::timing::SendWindow::business_hours, |c| {
                    c.window
                });
            let (_, hours) = slot_rules(config, &place, any, Channel::Sms, false);
            hours.map_or(Value::Null, |h| {
                let spread = if zone.spread.is_empty() {
                    String::new()
                } else {
                    format!(" in all {} zones the lead may be in", zone.spread.len())
                };
                Value::from(format!(
                    "{}{}{spread}",
                    h.hours.describe(),
                    h.rule.map(|r| format!(" ({r})")).unwrap_or_default()
                ))
            })
        } else {
            Value::Null
        };
        let budget = ContactBudget::new(
            config.frequency,
            config.budget,
            &engager_domain::frequency::BudgetOverrides::default(),
        );
        let (budget_json, mut budget_text) = match budget.check(history, now) {
            BudgetVerdict::Clear(state) => (
                json!({"verdict": "clear", "recent_7_days": state.recent, "cap": state.cap, "min_gap_hours": state.gap.num_hours(), "unanswered_in_a_row": state.streak}),
                format!("a touch fits now: {}", state.describe()),
            ),
            BudgetVerdict::Hold {
                until,
                code,
                reason,
            } => (
                json!({"verdict": "hold", "code": code, "until": until.to_rfc3339(), "reason": reason}),
                format!("held until {} ({code}): {reason}", when(until)),
            ),
            BudgetVerdict::End { code, reason } => (
                json!({"verdict": "end", "code": code, "reason": reason}),
                format!("ended ({code}): {reason}"),
            ),
        };
        let mut channel_json = Vec::new();
        for channel in Channel::ALL {
            if let Some(limit) = budget.rules.channels.get(channel) {
                let used = history
                    .touches
                    .iter()
                    .filter(|t| {
                        t.channel == channel && t.at > now - Duration::days(7) && t.at <= now
                    })
                    .count();
                let verdict = budget.channel_check(channel, history, now);
                budget_text.push_str(&format!(
                    "; {channel}: {used} of {} this week{}",
                    limit.max_per_week,
                    verdict
                        .as_ref()
                        .err()
                        .map(|h| format!(", next at {}", when(h.until)))
                        .unwrap_or_default()
                ));
                channel_json.push(json!({"channel": channel.as_str(), "used_7_days": used, "max_per_week": limit.max_per_week,
                    "min_gap_hours": limit.min_gap.num_hours(), "next": verdict.err().map(|h| h.until.to_rfc3339())}));
            }
        }
        let mut budget_json = budget_json;
        budget_json["channels"] = Value::from(channel_json);
        let scores = lead_scores(config, lead, history, &place);
        let table = scores.table();
        let top = table.top(5);
        let best_text = format!(
            "{} ({})",
            top.iter()
                .map(|(d, h, s)| format!("{} {:02}:00 {:.2}", weekday_name(*d), h, s))
                .collect::<Vec<_>>()
                .join(", "),
            if table.evidence() > 0.0 {
                format!(
                    "{:.0}% own history from {:.1} weighted event(s)",
                    table.lead_weight() * 100.0,
                    table.evidence()
                )
            } else {
                "prior only: no opens, clicks or replies yet".to_owned()
            }
        );
        let best_hours = json!({
            "enabled": config.timing.best_time.enabled,
            "evidence": table.evidence(),
            "own_history_share": table.lead_weight(),
            "top": top.iter().map(|(d, h, s)| json!({"weekday": weekday_name(*d), "hour": h, "score": s})).collect::<Vec<_>>(),
        });
        Self {
            zone_text: zone.describe(),
            zone,
            holidays,
            sms,
            budget: budget_json,
            budget_text,
            best_hours,
            best_text,
        }
    }

    fn zone_json(&self) -> Value {
        json!({
            "name": self.zone.zone.name(),
            "source": self.zone.source.as_str(),
            "subdivision": self.zone.subdivision,
            "spread": self.zone.spread.zones().map(|z| z.name()).collect::<Vec<_>>(),
        })
    }
}

fn local(at: DateTime<Utc>, facts: &LeadFacts) -> String {
    at.with_timezone(&facts.zone.zone.tz())
        .format("%a %Y-%m-%d %H:%M")
        .to_string()
}

fn outcome_text(e: &Evaluation, _lead: &Lead, facts: &LeadFacts, at: DateTime<Utc>) -> String {
    let code = e.trace.code.as_deref().unwrap_or("");
    match &e.decision {
        PlanDecision::Plan(d) | PlanDecision::Review(d) => format!(
            "would be planned{} by {} for {} local ({}), evaluated at {}",
            if matches!(e.decision, PlanDecision::Review(_)) {
                " (held for review)"
            } else {
                ""
            },
            d.channel,
            local(d.send_at, facts),
            when(d.send_at),
            when(at)
        ),
        PlanDecision::Defer { until } => format!(
            "deferred ({code}) until {} local ({})",
            local(*until, facts),
            when(*until)
        ),
        PlanDecision::Skip { next_due } => format!(
            "skipped ({code}){}",
            next_due
                .map(|t| format!("; the next step is due {}", when(t)))
                .unwrap_or_default()
        ),
        PlanDecision::Stop { reason } => format!("stopped ({reason})"),
    }
}

fn row_json(r: &Row, lead: &Lead, facts: &LeadFacts) -> Value {
    let evaluation = r.evaluation.as_ref().map(|e| {
        let (outcome, at, channel) = match &e.decision {
            PlanDecision::Plan(d) => ("planned", Some(d.send_at), Some(d.channel.as_str())),
            PlanDecision::Review(d) => (
                "pending_review",
                Some(d.send_at),
                Some(d.channel.as_str()),
            ),
            PlanDecision::Defer { until } => ("deferred", Some(*until), None),
            PlanDecision::Skip { next_due } => ("skipped", *next_due, None),
            PlanDecision::Stop { .. } => ("stopped", None, None),
        };
        json!({
            "outcome": outcome,
            "code": e.trace.code,
            "channel": channel,
            "at": at.map(|t| t.to_rfc3339()),
            "at_local": at.map(|t| local(t, facts)),
            "summary": outcome_text(e, lead, facts, r.evaluated_at),
            "gates": e.trace.gates.iter().map(|g| json!({"gate": g.gate, "passed": g.passed, "reason": g.reason})).collect::<Vec<_>>(),
        })
    });
    json!({
        "campaign": r.campaign,
        "step": r.step + 1,
        "step_name": r.step_name,
        "state": r.state,
        "evaluated_at": r.evaluated_at.to_rfc3339(),
        "projected": r.projected,
        "note": r.note,
        "next": evaluation,
    })
}
