//! The deliverability monitor: before each dispatch pass, judges every enabled channel's
//! rolling bounce, complaint and unsubscribe rates (the judgement is
//! `engager_domain::deliverability::assess`), halts a channel whose rates breach a halt level
//! and alerts once, warns on a warn level. A halt is stored, so every process sees it, and
//! only a person lifts it (`engager deliverability resume`); after a resumption the window
//! starts again at the resumption, with a fresh minimum sample.
//!
//! With several sending accounts on a channel, [`check_senders`] judges each account and each
//! sending domain the same way; their halts live in `account_halts`, the dispatcher's guard
//! skips a halted account like one whose circuit is open, and [`resume_sender`] lifts them.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use engager_domain::deliverability::{assess, Assessment, SendingCounts, Standing, Thresholds};
use engager_domain::Channel;
use engager_store::{
    AccountHalt, AccountSendingCounts, AuditEntry, SendingHalt, Store, StoreError,
};
use tracing::warn;

use crate::alerts::{Alert, AlertKind, Alerter};

/// How the monitor judges.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSettings {
    /// Whether the monitor halts and alerts (the figures are shown either way).
    pub enabled: bool,
    /// The rolling window of sends judged.
    pub window: Duration,
    /// The warn and halt levels.
    pub thresholds: Thresholds,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::days(7),
            thresholds: Thresholds::default(),
        }
    }
}

/// One channel's standing.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelHealth {
    /// The channel.
    pub channel: Channel,
    /// Start of the window judged (the window, or the last resumption when later).
    pub since: DateTime<Utc>,
    /// What was sent in it and what came back.
    pub counts: SendingCounts,
    /// The verdict on those counts.
    pub assessment: Assessment,
    /// The stored halt, when the channel is halted.
    pub halt: Option<SendingHalt>,
}

impl ChannelHealth {
    /// Whether nothing may be sent on the channel.
    pub fn is_halted(&self) -> bool {
        self.halt.as_ref().is_some_and(|h| h.halted)
    }
}

/// Judges each channel and acts on the verdicts (unless `settings.enabled` is false or
/// `act` is false, for a read-only look): stores a new halt and alerts once; alerts on a
/// warning (the alerter drops repeats within its window).
pub async fn check(
    store: &dyn Store,
    channels: &[Channel],
    settings: &MonitorSettings,
    alerter: Option<&Alerter>,
    now: DateTime<Utc>,
    act: bool,
) -> Result<Vec<ChannelHealth>, StoreError> {
    let halts = store.sending_halts().await?;
    let mut out = Vec::with_capacity(channels.len());
    for &channel in channels {
        let stored = halts.iter().find(|h| h.channel == channel).cloned();
        let window_start = now - settings.window;
        let since = match &stored {
            Some(h) if !h.halted && h.changed_at > window_start => h.changed_at,
            _ => window_start,
        };
        let counts = store.sending_counts(channel, since).await?;
        let assessment = assess(&counts, &settings.thresholds);
        let mut halt = stored.filter(|h| h.halted);
        if act && settings.enabled {
            let account = format!("{channel}");
            let findings: Vec<String> = assessment
                .findings
                .iter()
                .map(ToString::to_string)
                .collect();
            match assessment.standing {
                Standing::Halted if halt.is_none() => {
                    let new = SendingHalt {
                        channel,
                        halted: true,
                        reason: findings.join("; "),
                        changed_by: "monitor".into(),
                        changed_at: now,
                    };
                    if store.set_sending_halt(&new).await? {
                        warn!(%channel, reason = %new.reason, "Sending halted by the deliverability monitor.");
                        let summary = format!(
                            "Sending on {channel} is halted: {}. Nothing is sent on it until a person runs `engager deliverability resume {channel}`.",
                            new.reason
                        );
                        let notice = Notice {
                            alerter,
                            account: account.clone(),
                            counts: &counts,
                            since,
                            now,
                        };
                        notice
                            .halted(store, format!("channel:{channel}"), &new.reason, summary)
                            .await?;
                    }
                    halt = Some(new);
                }
                Standing::Warning if halt.is_none() => {
                    let summary = format!(
                        "Deliverability warning on {channel}: {}. Sending continues at {:.0}% of its rate.",
                        findings.join("; "),
                        assessment.rate_factor * 100.0
                    );
                    let notice = Notice {
                        alerter,
                        account,
                        counts: &counts,
                        since,
                        now,
                    };
                    notice
                        .raise(AlertKind::DeliverabilityWarning, summary)
                        .await;
                }
                _ => {}
            }
        }
        out.push(ChannelHealth {
            channel,
            since,
            counts,
            assessment,
            halt,
        });
    }
    Ok(out)
}

/// A person lifts a channel's halt; false when it was not halted.
pub async fn resume(
    store: &dyn Store,
    channel: Channel,
    note: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let halted = store
        .sending_halts()
        .await?
        .iter()
        .any(|h| h.channel == channel && h.halted);
    if !halted {
        return Ok(false);
    }
    let changed = store
        .set_sending_halt(&SendingHalt {
            channel,
            halted: false,
            reason: note.to_owned(),
            changed_by: "person".into(),
            changed_at: now,
        })
        .await?;
    if changed {
        store
            .append_audit(&AuditEntry {
                at: now,
                action: "resume".into(),
                subject: format!("channel:{channel}"),
                detail: note.to_owned(),
                actor: "person".into(),
            })
            .await?;
    }
    Ok(changed)
}

// --- per sending account and per sending domain ----------------------------------------------

/// What a [`SenderHealth`] judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SenderKind {
    /// One sending account (`email:graph:maya@acme.example`, `sms:twilio`).
    Account,
    /// Every account sending from one domain (`acme.example`).
    Domain,
}

impl SenderKind {
    /// `account` or `domain`.
    pub fn as_str(self) -> &'static str {
        match self {
            SenderKind::Account => "account",
            SenderKind::Domain => "domain",
        }
    }
}

/// The stored key of an account's halt: `account:<account name>`.
pub fn account_key(account: &str) -> String {
    format!("account:{account}")
}

/// The stored key of a domain's halt: `domain:<domain>`.
pub fn domain_key(domain: &str) -> String {
    format!("domain:{}", domain.to_ascii_lowercase())
}

/// The sending domain of an account: the part after `@` in its name when it has one, else
/// `sender_domain` (the configured `sender.email`'s) for email. SMS and LinkedIn accounts
/// have none: they are judged per account only.
pub fn domain_of(channel: Channel, account: &str, sender_domain: Option<&str>) -> Option<String> {
    if channel != Channel::Email {
        return None;
    }
    match account.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => Some(domain.to_ascii_lowercase()),
        _ => sender_domain
            .filter(|d| !d.is_empty())
            .map(str::to_ascii_lowercase),
    }
}

/// One sending account's or domain's standing.
#[derive(Debug, Clone, PartialEq)]
pub struct SenderHealth {
    /// Account or domain.
    pub kind: SenderKind,
    /// The account's name or the domain.
    pub name: String,
    /// The channel of an account (a domain's is email).
    pub channel: Channel,
    /// The configured accounts this covers: the account itself, or a domain's accounts.
    pub accounts: Vec<String>,
    /// Start of the window judged (the window, or the last resumption when later).
    pub since: DateTime<Utc>,
    /// What was sent in it and what came back.
    pub counts: SendingCounts,
    /// The verdict on those counts.
    pub assessment: Assessment,
    /// The stored halt, while halted.
    pub halt: Option<AccountHalt>,
}

impl SenderHealth {
    /// The key of its halt (`account:…` or `domain:…`).
    pub fn key(&self) -> String {
        match self.kind {
            SenderKind::Account => account_key(&self.name),
            SenderKind::Domain => domain_key(&self.name),
        }
    }

    /// Whether it is halted.
    pub fn is_halted(&self) -> bool {
        self.halt.as_ref().is_some_and(|h| h.halted)
    }
}

/// Judges each configured sending account (`accounts`: channel and account name, as
/// [`crate::guard::SendGuard::account`] names them) and each sending domain of email
/// accounts, with the same thresholds and minimum sample as the channels, and acts on the
/// verdicts as [`check`] does (unless disabled or `act` is false): a new halt is stored
/// (`account_halts`), audited and alerted once; a warning is alerted.
///
/// Only what the channel's own row does not already judge: the accounts of a channel with
/// several, and the domains of two or more accounts that are not every account of their
/// channel. Sends recorded without an account (before migration 0010) count for their
/// channel only. A domain's figures add up every account seen sending from it in the
/// window, configured or not.
pub async fn check_senders(
    store: &dyn Store,
    accounts: &[(Channel, String)],
    sender_domain: Option<&str>,
    settings: &MonitorSettings,
    alerter: Option<&Alerter>,
    now: DateTime<Utc>,
    act: bool,
) -> Result<Vec<SenderHealth>, StoreError> {
    let halts = store.account_halts().await?;
    let window_start = now - settings.window;
    let since_of = |key: &str| -> (DateTime<Utc>, Option<AccountHalt>) {
        let stored = halts.iter().find(|h| h.key == key).cloned();
        let since = match &stored {
            Some(h) if !h.halted && h.changed_at > window_start => h.changed_at,
            _ => window_start,
        };
        (since, stored.filter(|h| h.halted))
    };
    // One query per distinct start of window (most share the window's).
    let mut by_since: Vec<(DateTime<Utc>, Vec<AccountSendingCounts>)> = Vec::new();
    let mut counts_since =
        async |since: DateTime<Utc>| -> Result<Vec<AccountSendingCounts>, StoreError> {
            if let Some((_, rows)) = by_since.iter().find(|(s, _)| *s == since) {
                return Ok(rows.clone());
            }
            let rows = store.sending_counts_by_account(since).await?;
            by_since.push((since, rows.clone()));
            Ok(rows)
        };

    let mut configured: Vec<(Channel, String)> = Vec::new();
    for (channel, account) in accounts {
        if !configured.iter().any(|(c, a)| c == channel && a == account) {
            configured.push((*channel, account.clone()));
        }
    }
    let of_channel = |channel: Channel| configured.iter().filter(|(c, _)| *c == channel).count();
    let mut judged: Vec<(SenderKind, String, Channel, Vec<String>)> = Vec::new();
    // The only account of a channel is judged by the channel's own row (the same sends).
    for (channel, account) in &configured {
        if of_channel(*channel) > 1 {
            judged.push((
                SenderKind::Account,
                account.clone(),
                *channel,
                vec![account.clone()],
            ));
        }
    }
    let mut domains: Vec<(String, Channel, Vec<String>)> = Vec::new();
    for (channel, account) in &configured {
        let Some(domain) = domain_of(*channel, account, sender_domain) else {
            continue;
        };
        match domains.iter_mut().find(|d| d.0 == domain) {
            Some(d) => d.2.push(account.clone()),
            None => domains.push((domain, *channel, vec![account.clone()])),
        }
    }
    // A domain of a single account is judged by that account's row, and a domain of every
    // account of its channel by the channel's row: judging them again would halt and alert
    // twice for the same sends.
    for (domain, channel, covered) in domains {
        if covered.len() > 1 && covered.len() < of_channel(channel) {
            judged.push((SenderKind::Domain, domain, channel, covered));
        }
    }

    let mut out = Vec::with_capacity(judged.len());
    for (kind, name, channel, covered) in judged {
        let key = match kind {
            SenderKind::Account => account_key(&name),
            SenderKind::Domain => domain_key(&name),
        };
        let (since, mut halt) = since_of(&key);
        let rows = counts_since(since).await?;
        let mut counts = SendingCounts::default();
        for row in &rows {
            let Some(account) = row.account.as_deref() else {
                continue;
            };
            let mine = match kind {
                SenderKind::Account => row.channel == channel && account == name,
                SenderKind::Domain => {
                    domain_of(row.channel, account, sender_domain).as_deref() == Some(name.as_str())
                }
            };
            if mine {
                counts.sent += row.counts.sent;
                counts.hard_bounces += row.counts.hard_bounces;
                counts.complaints += row.counts.complaints;
                counts.unsubscribes += row.counts.unsubscribes;
                counts.replies += row.counts.replies;
            }
        }
        let assessment = assess(&counts, &settings.thresholds);
        if act && settings.enabled {
            let findings: Vec<String> = assessment
                .findings
                .iter()
                .map(ToString::to_string)
                .collect();
            let what = match kind {
                SenderKind::Account => format!("account {name}"),
                SenderKind::Domain => format!("domain {name} ({})", covered.join(", ")),
            };
            let flag = match kind {
                SenderKind::Account => format!("--account {name}"),
                SenderKind::Domain => format!("--domain {name}"),
            };
            match assessment.standing {
                Standing::Halted if halt.is_none() => {
                    let new = AccountHalt {
                        key: key.clone(),
                        halted: true,
                        reason: findings.join("; "),
                        changed_by: "monitor".into(),
                        changed_at: now,
                    };
                    if store.set_account_halt(&new).await? {
                        warn!(sender = %key, reason = %new.reason, "Sending halted by the deliverability monitor.");
                        let summary = format!(
                            "Sending from {what} is halted: {}. Nothing is sent from it until a person runs `engager deliverability resume {flag}`; its sequences move to the channel's other accounts.",
                            new.reason
                        );
                        let notice = Notice {
                            alerter,
                            account: key.clone(),
                            counts: &counts,
                            since,
                            now,
                        };
                        notice
                            .halted(store, key.clone(), &new.reason, summary)
                            .await?;
                    }
                    halt = Some(new);
                }
                Standing::Warning if halt.is_none() => {
                    let summary = format!(
                        "Deliverability warning on {what}: {}. It keeps sending at {:.0}% of its rate.",
                        findings.join("; "),
                        assessment.rate_factor * 100.0
                    );
                    let notice = Notice {
                        alerter,
                        account: key.clone(),
                        counts: &counts,
                        since,
                        now,
                    };
                    notice
                        .raise(AlertKind::DeliverabilityWarning, summary)
                        .await;
                }
                _ => {}
            }
        }
        out.push(SenderHealth {
            kind,
            name,
            channel,
            accounts: covered,
            since,
            counts,
            assessment,
            halt,
        });
    }
    Ok(out)
}

/// The accounts that may not send, with why: those halted themselves and those of a halted
/// domain.
pub fn halted_accounts(health: &[SenderHealth]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for h in health.iter().filter(|h| h.is_halted()) {
        let reason = h.halt.as_ref().map_or("", |x| x.reason.as_str());
        for account in &h.accounts {
            let why = match h.kind {
                SenderKind::Account => reason.to_owned(),
                SenderKind::Domain => format!("domain {}: {reason}", h.name),
            };
            out.entry(account.clone())
                .and_modify(|w: &mut String| {
                    w.push_str("; ");
                    w.push_str(&why);
                })
                .or_insert(why);
        }
    }
    out
}

/// The accounts a warning slows (an account's own, or its domain's): the share of their rate
/// they keep (the stronger when both) and why. Halted ones are left out.
pub fn account_slowdowns(health: &[SenderHealth]) -> HashMap<String, (f64, String)> {
    let halted = halted_accounts(health);
    let mut out: HashMap<String, (f64, String)> = HashMap::new();
    for h in health
        .iter()
        .filter(|h| !h.is_halted() && h.assessment.standing == Standing::Warning)
    {
        let finding = h
            .assessment
            .findings
            .first()
            .map_or_else(|| "a warning".to_owned(), ToString::to_string);
        let why = match h.kind {
            SenderKind::Account => finding,
            SenderKind::Domain => format!("domain {}: {finding}", h.name),
        };
        for account in h.accounts.iter().filter(|a| !halted.contains_key(*a)) {
            let factor = h.assessment.rate_factor;
            match out.get(account) {
                Some((f, _)) if *f <= factor => {}
                _ => {
                    out.insert(account.clone(), (factor, why.clone()));
                }
            }
        }
    }
    out
}

/// What the monitor tells about one verdict: the alert's subject and the figures behind it.
struct Notice<'a> {
    alerter: Option<&'a Alerter>,
    account: String,
    counts: &'a SendingCounts,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
}

impl Notice<'_> {
    /// Raises an alert (when alerts are configured) with the sends and window behind it.
    async fn raise(&self, kind: AlertKind, summary: String) {
        if let Some(alerter) = self.alerter {
            alerter
                .raise(Alert {
                    kind,
                    account: self.account.clone(),
                    summary,
                    details: vec![
                        ("sent".into(), self.counts.sent.to_string()),
                        ("since".into(), self.since.to_rfc3339()),
                    ],
                    at: self.now,
                })
                .await;
        }
    }

    /// After a new halt was stored: audits it (`subject`, why) and alerts once.
    async fn halted(
        &self,
        store: &dyn Store,
        subject: String,
        reason: &str,
        summary: String,
    ) -> Result<(), StoreError> {
        store
            .append_audit(&AuditEntry {
                at: self.now,
                action: "halt".into(),
                subject,
                detail: reason.to_owned(),
                actor: "monitor".into(),
            })
            .await?;
        self.raise(AlertKind::SendingHalted, summary).await;
        Ok(())
    }
}

/// A person lifts the halt of an account or domain (`key`, see [`account_key`] and
/// [`domain_key`]); false when it was not halted. Its window then starts again from now.
pub async fn resume_sender(
    store: &dyn Store,
    key: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let halted = store
        .account_halts()
        .await?
        .iter()
        .any(|h| h.key == key && h.halted);
    if !halted {
        return Ok(false);
    }
    let changed = store
        .set_account_halt(&AccountHalt {
            key: key.to_owned(),
            halted: false,
            reason: note.to_owned(),
            changed_by: "person".into(),
            changed_at: now,
        })
        .await?;
    if changed {
        store
            .append_audit(&AuditEntry {
                at: now,
                action: "resume".into(),
                subject: key.to_owned(),
                detail: note.to_owned(),
                actor: "person".into(),
            })
            .await?;
    }
    Ok(changed)
}

#[cfg(test)]
mod sender_tests {
    use super::*;

    #[test]
    fn the_domain_of_an_account() {
        let d = |c, a| domain_of(c, a, Some("Acme.example"));
        assert_eq!(
            d(Channel::Email, "email:graph:maya@Mail.Acme.example").as_deref(),
            Some("mail.acme.example")
        );
        assert_eq!(
            d(Channel::Email, "email:smtp").as_deref(),
            Some("acme.example")
        );
        assert_eq!(d(Channel::Sms, "sms:twilio:+14155550100"), None);
        assert_eq!(domain_of(Channel::Email, "email:outbox", None), None);
        assert_eq!(domain_key("Acme.example"), "domain:acme.example");
        assert_eq!(account_key("email:graph"), "account:email:graph");
    }
}
