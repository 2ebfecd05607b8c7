//! The deliverability monitor: before each dispatch pass, judges every enabled channel's
//! rolling bounce, complaint and unsubscribe rates (the judgement is
//! `engager_domain::deliverability::assess`), halts a channel whose rates breach a halt level
//! and alerts once, warns on a warn level. A halt is stored, so every process sees it, and
//! only a person lifts it (`engager deliverability resume`); after a resumption the window
//! starts again at the resumption, with a fresh minimum sample.

use chrono::{DateTime, Duration, Utc};
use engager_domain::deliverability::{assess, Assessment, SendingCounts, Standing, Thresholds};
use engager_domain::Channel;
use engager_store::{AuditEntry, SendingHalt, Store, StoreError};
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
                        store
                            .append_audit(&AuditEntry {
                                at: now,
                                action: "halt".into(),
                                subject: format!("channel:{channel}"),
                                detail: new.reason.clone(),
                                actor: "monitor".into(),
                            })
                            .await?;
                        if let Some(alerter) = alerter {
                            alerter
                                .raise(Alert {
                                    kind: AlertKind::SendingHalted,
                                    account: account.clone(),
                                    summary: format!(
                                        "Sending on {channel} is halted: {}. Nothing is sent on it until a person runs `engager deliverability resume {channel}`.",
                                        new.reason
                                    ),
                                    details: vec![
                                        ("sent".into(), counts.sent.to_string()),
                                        ("since".into(), since.to_rfc3339()),
                                    ],
                                    at: now,
                                })
                                .await;
                        }
                    }
                    halt = Some(new);
                }
                Standing::Warning if halt.is_none() => {
                    if let Some(alerter) = alerter {
                        alerter
                            .raise(Alert {
                                kind: AlertKind::DeliverabilityWarning,
                                account,
                                summary: format!(
                                    "Deliverability warning on {channel}: {}. Sending continues at {:.0}% of its rate.",
                                    findings.join("; "),
                                    assessment.rate_factor * 100.0
                                ),
                                details: vec![
                                    ("sent".into(), counts.sent.to_string()),
                                    ("since".into(), since.to_rfc3339()),
                                ],
                                at: now,
                            })
                            .await;
                    }
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
