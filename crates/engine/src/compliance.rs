//! The compliance gate's engine side: consent records merged with what leads carry in their
//! own fields, campaigns halted (and alerted on) when their configuration or templates would
//! make every message non-compliant, the evidence stored with each send, and the report.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use engager_domain::compliance::{
    self, campaign_problems, consents_from_fields, ComplianceRules, ConsentRecord, SenderIdentity,
    Verdict,
};
use engager_domain::sms::has_stop_wording;
use engager_domain::{CampaignId, Channel, DeliveryState, Lead, LeadId};
use engager_store::{
    AuditEntry, CampaignHalt, DeliveryRecord, ReportQuery, SendEvidence, Store, StoreError,
};
use tracing::warn;

use crate::alerts::{Alert, AlertKind, Alerter};
use crate::catalog::Catalog;
use crate::EngineConfig;

/// Who halts campaigns in the audit log and the halt records.
pub const CHECKER: &str = "compliance";

/// The configured rules with the sender's identity filled in from the configuration.
pub fn rules(config: &EngineConfig) -> ComplianceRules {
    let mut rules = config.compliance.clone();
    rules.sender = SenderIdentity {
        name: config.sender.name.clone(),
        company: config.sender_company.clone(),
        postal_address: config.sender.postal_address.clone(),
        unsubscribe_endpoint: config.public_base_url.starts_with("https://")
            || config.public_base_url.starts_with("http://localhost")
            || config.public_base_url.starts_with("http://127.0.0.1"),
    };
    rules
}

/// The consent evidence a lead carries in its own imported fields (`sms_consent`, …).
pub fn field_consents(lead: &Lead) -> Vec<ConsentRecord> {
    if lead.profile.custom.is_empty() {
        return Vec::new();
    }
    consents_from_fields(lead, DateTime::<Utc>::UNIX_EPOCH)
}

/// A lead's consent evidence: the stored records and what its imported fields say, oldest
/// first.
pub fn merge_consents(lead: &Lead, stored: Vec<ConsentRecord>) -> Vec<ConsentRecord> {
    let mut all = field_consents(lead);
    all.extend(stored);
    all.sort_by_key(|r| (r.obtained_at, r.id));
    all
}

/// Reads and merges one lead's consent evidence (the dispatcher's re-check).
pub async fn lead_consents(
    store: &dyn Store,
    lead: &Lead,
) -> Result<Vec<ConsentRecord>, StoreError> {
    let stored = store
        .consents(&[lead.id])
        .await?
        .remove(&lead.id)
        .unwrap_or_default();
    Ok(merge_consents(lead, stored))
}

/// Checks every campaign against the configuration: a campaign with a problem is halted
/// (stored, so every process holds it), the halt goes to the audit log and administrators
/// are alerted once. Returns every halted campaign with its reason, including halts whose
/// problem is gone but which no person has resumed yet. `dry_run` only reads.
pub async fn enforce_campaigns(
    store: &dyn Store,
    catalog: &Catalog,
    rules: &ComplianceRules,
    alerter: Option<&Alerter>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<HashMap<CampaignId, String>, StoreError> {
    let stored: HashMap<CampaignId, CampaignHalt> = store
        .campaign_halts()
        .await?
        .into_iter()
        .map(|h| (h.campaign_id, h))
        .collect();
    let mut halted = HashMap::new();
    for campaign in catalog.all() {
        let problems = campaign_problems(rules, campaign);
        if let Some(h) = stored.get(&campaign.id).filter(|h| h.halted) {
            halted.insert(campaign.id, h.reason.clone());
            continue;
        }
        if problems.is_empty() {
            continue;
        }
        let reason = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        halted.insert(campaign.id, reason.clone());
        if dry_run {
            continue;
        }
        let halt = CampaignHalt {
            campaign_id: campaign.id,
            halted: true,
            reason: reason.clone(),
            changed_by: CHECKER.into(),
            changed_at: now,
        };
        if store.set_campaign_halt(&halt).await? {
            warn!(campaign = %campaign.slug, %reason, "Campaign halted for a compliance problem.");
            let audit = AuditEntry {
                at: now,
                action: "halt".into(),
                subject: format!("campaign:{}", campaign.slug),
                detail: format!("compliance halt: {reason}"),
                actor: CHECKER.into(),
            };
            if let Err(e) = store.append_audit(&audit).await {
                warn!(error = %e, "Could not append the halt to the audit log.");
            }
            if let Some(alerter) = alerter {
                alerter
                    .raise(Alert {
                        kind: AlertKind::ComplianceHalt,
                        account: format!("campaign:{}", campaign.slug),
                        summary: format!(
                            "Campaign {} is halted: {reason}. Nothing of it is planned or sent until the problem is fixed and a person runs `engager compliance resume {}`.",
                            campaign.slug, campaign.slug
                        ),
                        details: problems
                            .iter()
                            .map(|p| (p.regime.label().to_owned(), p.to_string()))
                            .collect(),
                        at: now,
                    })
                    .await;
            }
        }
    }
    Ok(halted)
}

/// Why a campaign cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The problems are still there.
    #[error("campaign {campaign} still has compliance problems: {problems}")]
    StillBroken {
        /// The campaign.
        campaign: String,
        /// What is wrong.
        problems: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A person resumes a halted campaign, once its problems are fixed; false when it was not
/// halted. The resumption goes to the audit log as an override.
pub async fn resume(
    store: &dyn Store,
    rules: &ComplianceRules,
    campaign: &engager_domain::Campaign,
    actor: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<bool, ResumeError> {
    let problems = campaign_problems(rules, campaign);
    if !problems.is_empty() {
        return Err(ResumeError::StillBroken {
            campaign: campaign.slug.clone(),
            problems: problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let resumed = store
        .set_campaign_halt(&CampaignHalt {
            campaign_id: campaign.id,
            halted: false,
            reason: format!("resumed by {actor}: {note}"),
            changed_by: actor.to_owned(),
            changed_at: now,
        })
        .await?;
    if resumed {
        store
            .append_audit(&AuditEntry {
                at: now,
                action: "override".into(),
                subject: format!("campaign:{}", campaign.slug),
                detail: format!("compliance halt lifted: {note}"),
                actor: actor.to_owned(),
            })
            .await?;
    }
    Ok(resumed)
}

/// Whether a sender can set RFC 8058 one-click headers (Microsoft Graph cannot).
pub fn sets_one_click_header(provider: &str) -> bool {
    !provider.starts_with("graph")
}

/// What the evidence of a send looks at in the message.
#[derive(Debug, Clone, Copy)]
pub struct MessageFacts<'a> {
    /// The delivery.
    pub delivery_id: engager_domain::DeliveryId,
    /// Its lead.
    pub lead_id: LeadId,
    /// Its channel.
    pub channel: Channel,
    /// The text as sent.
    pub body_text: &'a str,
    /// The HTML part, if any.
    pub body_html: Option<&'a str>,
}

impl<'a> From<&'a DeliveryRecord> for MessageFacts<'a> {
    fn from(d: &'a DeliveryRecord) -> Self {
        Self {
            delivery_id: d.id,
            lead_id: d.lead_id,
            channel: d.channel,
            body_text: &d.body_text,
            body_html: d.body_html.as_deref(),
        }
    }
}

/// The evidence record of one send: what was checked and what the message carries.
pub fn evidence(
    d: MessageFacts<'_>,
    provider: &str,
    verdict: &Verdict,
    config: &EngineConfig,
    unsubscribe_url: &str,
    now: DateTime<Utc>,
) -> SendEvidence {
    let body = d.body_text;
    let html_ok = d.body_html.is_none_or(|h| h.contains(unsubscribe_url));
    let email = d.channel == Channel::Email;
    SendEvidence {
        delivery_id: d.delivery_id,
        lead_id: d.lead_id,
        checked_at: now,
        provider: provider.to_owned(),
        regimes: verdict.regimes().iter().map(|r| (*r).to_owned()).collect(),
        checks: verdict.checks.iter().map(|c| c.describe()).collect(),
        // 0: a consent read from the lead's own imported fields.
        consent_id: verdict.checks.iter().find_map(|c| c.record),
        footer_postal: email
            && !config.sender.postal_address.trim().is_empty()
            && body.contains(config.sender.postal_address.as_str()),
        footer_unsubscribe: email && body.contains(unsubscribe_url) && html_ok,
        one_click_header: email && sets_one_click_header(provider),
        stop_wording: d.channel == Channel::Sms && has_stop_wording(body),
    }
}

/// The compliance report of a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ComplianceReport {
    /// Start of the period (RFC 3339).
    pub since: String,
    /// Sends checked, by channel and provider: (channel, provider) → counts.
    pub sends: Vec<SendLine>,
    /// Refusals by regime: how many decisions, how many distinct leads, an example reason.
    pub blocks: Vec<BlockLine>,
    /// Sends missing something, each with what is missing.
    pub gaps: Vec<Gap>,
    /// Campaigns halted now.
    pub halted_campaigns: Vec<(String, String)>,
    /// Consent records written in the period by basis (from the audit log).
    pub consents_recorded: BTreeMap<String, u64>,
}

/// Sends on one channel through one provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SendLine {
    /// Channel.
    pub channel: String,
    /// Provider.
    pub provider: String,
    /// Sends checked and carried out (sent, or waiting on the provider's answer).
    pub sends: u64,
    /// Regimes checked over them, with counts.
    pub regimes: BTreeMap<String, u64>,
    /// Sends that relied on a consent record.
    pub with_consent_record: u64,
    /// Emails with the postal address and unsubscribe link in the footer.
    pub with_footer: u64,
    /// Emails with RFC 8058 one-click headers.
    pub with_one_click_header: u64,
    /// Texts with STOP wording.
    pub with_stop_wording: u64,
}

/// Refusals of one regime.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlockLine {
    /// The regime (`GDPR`, …) or `objection`, `campaign halt`.
    pub rule: String,
    /// Decisions refused.
    pub decisions: u64,
    /// Distinct leads.
    pub leads: u64,
    /// One reason as recorded.
    pub example: String,
}

/// One send missing something.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// The delivery.
    pub delivery_id: i64,
    /// The lead.
    pub lead_id: i64,
    /// Channel.
    pub channel: String,
    /// Provider.
    pub provider: String,
    /// What is missing.
    pub missing: String,
}

/// Builds the compliance report of sends and decisions at or after `since`.
pub async fn report(
    store: &dyn Store,
    catalog: &Catalog,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<ComplianceReport, StoreError> {
    let evidence = store.evidence_since(since).await?;
    let mut lines: BTreeMap<(String, String), SendLine> = BTreeMap::new();
    let mut gaps = Vec::new();
    let mut with_evidence = std::collections::HashSet::new();
    for row in &evidence {
        let e = &row.evidence;
        with_evidence.insert(e.delivery_id);
        let state: DeliveryState = match row.state.parse() {
            Ok(s) => s,
            Err(_) => continue,
        };
        // Checked but never carried out (cancelled at send time, or a failure): not a send.
        if matches!(
            state,
            DeliveryState::Cancelled | DeliveryState::Failed | DeliveryState::Planned
        ) {
            continue;
        }
        let line = lines
            .entry((row.channel.as_str().to_owned(), e.provider.clone()))
            .or_insert_with(|| SendLine {
                channel: row.channel.as_str().to_owned(),
                provider: e.provider.clone(),
                ..SendLine::default()
            });
        line.sends += 1;
        for r in &e.regimes {
            *line.regimes.entry(r.clone()).or_default() += 1;
        }
        line.with_consent_record += u64::from(e.consent_id.is_some());
        let mut missing = Vec::new();
        match row.channel {
            Channel::Email => {
                if e.footer_postal && e.footer_unsubscribe {
                    line.with_footer += 1;
                } else {
                    if !e.footer_postal {
                        missing.push("postal address in the footer");
                    }
                    if !e.footer_unsubscribe {
                        missing.push("unsubscribe link in the footer");
                    }
                }
                if e.one_click_header {
                    line.with_one_click_header += 1;
                } else {
                    missing.push("no one-click header (the provider cannot set List-Unsubscribe; the link is in the body)");
                }
            }
            Channel::Sms => {
                if e.stop_wording {
                    line.with_stop_wording += 1;
                } else {
                    missing.push("STOP wording");
                }
            }
            Channel::Linkedin => {}
        }
        if !missing.is_empty() {
            gaps.push(Gap {
                delivery_id: e.delivery_id.0,
                lead_id: e.lead_id.0,
                channel: row.channel.as_str().to_owned(),
                provider: e.provider.clone(),
                missing: missing.join("; "),
            });
        }
    }
    // Sends without any evidence record (sent by an older version, or outside the dispatcher).
    let facts = store
        .report_facts(&ReportQuery {
            campaign: None,
            since,
            until: now + chrono::Duration::seconds(1),
        })
        .await?;
    for f in facts
        .deliveries
        .iter()
        .filter(|f| f.channel != Channel::Linkedin && !with_evidence.contains(&f.delivery_id))
    {
        gaps.push(Gap {
            delivery_id: f.delivery_id.0,
            lead_id: f.lead_id.0,
            channel: f.channel.as_str().to_owned(),
            provider: String::new(),
            missing: "no compliance evidence recorded for this send".into(),
        });
    }
    // Refusals, from the decision traces.
    let mut blocks: BTreeMap<String, (u64, std::collections::HashSet<LeadId>, String)> =
        BTreeMap::new();
    for t in store.compliance_traces(since).await? {
        let Ok(gates) = serde_json::from_str::<Vec<serde_json::Value>>(&t.gates_json) else {
            continue;
        };
        for g in gates
            .iter()
            .filter(|g| g["gate"] == "compliance" && g["passed"] == serde_json::Value::Bool(false))
        {
            let reason = g["reason"].as_str().unwrap_or_default();
            let rule = rule_of(reason);
            let entry = blocks.entry(rule).or_default();
            entry.0 += 1;
            entry.1.insert(t.lead_id);
            if entry.2.is_empty() {
                entry.2 = reason.to_owned();
            }
        }
    }
    let halts = store.campaign_halts().await?;
    let mut consents_recorded = BTreeMap::new();
    for a in store.audit_log(since).await? {
        if a.action == "consent" {
            let basis = a
                .detail
                .split_whitespace()
                .next()
                .unwrap_or("consent")
                .to_owned();
            *consents_recorded.entry(basis).or_default() += 1;
        }
    }
    Ok(ComplianceReport {
        since: since.to_rfc3339(),
        sends: lines.into_values().collect(),
        blocks: blocks
            .into_iter()
            .map(|(rule, (decisions, leads, example))| BlockLine {
                rule,
                decisions,
                leads: leads.len() as u64,
                example,
            })
            .collect(),
        gaps,
        halted_campaigns: halts
            .into_iter()
            .filter(|h| h.halted)
            .map(|h| {
                (
                    catalog
                        .get(h.campaign_id)
                        .map_or_else(|| format!("#{}", h.campaign_id.0), |c| c.slug.clone()),
                    h.reason,
                )
            })
            .collect(),
        consents_recorded,
    })
}

/// The rule a refusal's reason names.
fn rule_of(reason: &str) -> String {
    for regime in compliance::Regime::ALL {
        if reason.contains(&format!("{} refused", regime.label())) {
            return regime.label().to_owned();
        }
    }
    if reason.contains("objection") {
        return "objection (GDPR Art. 21)".into();
    }
    if reason.contains("campaign halted") {
        return "campaign halt".into();
    }
    "other".into()
}
