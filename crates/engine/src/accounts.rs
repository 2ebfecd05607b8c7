//! Mailbox rotation: several sending accounts on one channel, each with its own identity,
//! limits and circuit breaker.
//!
//! Invariants: a lead's sequence stays on the account that first contacted it (follow-ups
//! thread, replies reach the same mailbox) unless that account left the configuration or its
//! circuit is open; a new lead goes to the account with the most daily capacity left (ties
//! broken by a stable hash of the lead, so a pass is deterministic); when no account may send,
//! the delivery waits in the ledger until the earliest instant one may — nothing is dropped.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_channels::{Accepted, ChannelSender, DeliveryError, OutgoingMessage, Reconciled};
use engager_domain::{stable_hash, Channel, DeliveryId, EmailAddress, LeadId};
use engager_store::{DeliveryRecord, Store, StoreError};

use crate::dispatcher::ChannelSet;
use crate::guard::{SendGuard, Verdict};
use crate::{Clock, SystemClock};

/// One of several sending accounts of a channel: a provider sender under its own name
/// (`graph:maya@acme.example`) that sends as its own identity.
pub struct AccountSender {
    inner: Arc<dyn ChannelSender>,
    name: String,
    email_from: Option<EmailAddress>,
    sms_from: Option<String>,
}

impl AccountSender {
    /// Wraps a provider sender as the account `identity` (its mailbox, From address or
    /// number); the name becomes `<provider>:<identity>`.
    pub fn new(inner: Arc<dyn ChannelSender>, identity: &str) -> Self {
        let name = format!("{}:{identity}", inner.name());
        Self {
            inner,
            name,
            email_from: None,
            sms_from: None,
        }
    }

    /// The From address of every email this account sends (`[sender].name` stays).
    pub fn with_email_from(mut self, from: EmailAddress) -> Self {
        self.email_from = Some(from);
        self
    }

    /// The SMS sender of this account (used when the provider itself sets none).
    pub fn with_sms_from(mut self, from: impl Into<String>) -> Self {
        self.sms_from = Some(from.into());
        self
    }
}

#[async_trait]
impl ChannelSender for AccountSender {
    fn channel(&self) -> Channel {
        self.inner.channel()
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn health_check(&self) -> Result<(), DeliveryError> {
        self.inner.health_check().await
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        if self.email_from.is_none() && self.sms_from.is_none() {
            return self.inner.send(message).await;
        }
        let mut message = message.clone();
        if let Some(from) = &self.email_from {
            message.sender.email = from.clone();
        }
        if let Some(from) = &self.sms_from {
            message.sender.sms_from = Some(from.clone());
        }
        self.inner.send(&message).await
    }

    async fn reconcile(
        &self,
        delivery: DeliveryId,
        since: DateTime<Utc>,
    ) -> Result<Reconciled, DeliveryError> {
        self.inner.reconcile(delivery, since).await
    }
}

/// The order in which a delivery tries a channel's accounts: the account its sequence is on
/// (`sticky`, when still configured) first, then the others by most remaining daily capacity
/// (`None` = no cap, the most), ties by a stable hash of the lead and the account. Returns
/// indices into `accounts` (`(account name, remaining today)`).
pub fn rotation_order(
    accounts: &[(String, Option<u64>)],
    sticky: Option<&str>,
    lead: LeadId,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..accounts.len()).collect();
    let key = |i: usize| {
        let (name, remaining) = &accounts[i];
        (
            sticky != Some(name.as_str()),
            std::cmp::Reverse(remaining.unwrap_or(u64::MAX)),
            stable_hash(&[&lead.0.to_le_bytes(), name.as_bytes()]),
            i,
        )
    };
    order.sort_by_key(|i| key(*i));
    order
}

/// What the rotation decided for one delivery.
pub enum Choice {
    /// Send through this account now (its permit is taken).
    Send {
        /// The account's sender.
        sender: Arc<dyn ChannelSender>,
        /// The account's name (`channel:provider:identity`).
        account: String,
        /// The instant of sending (later than the pass's when a short pause was waited out).
        now: DateTime<Utc>,
    },
    /// No account may send before `until`.
    Wait {
        /// When to look again.
        until: DateTime<Utc>,
        /// Why, naming the accounts.
        reason: String,
    },
}

/// Picks the account of a channel with several that sends `d` at `now`, asking the guard of
/// each candidate in [`rotation_order`]. A sequence on an account waits for that account
/// (rate limit, daily cap) unless its circuit is open; a new lead moves on to the next
/// account. In `real_time`, a pause of up to two seconds (and under half of `lease`) is
/// waited out instead of re-queued.
pub async fn choose(
    store: &dyn Store,
    guard: Option<&SendGuard>,
    pool: &[Arc<dyn ChannelSender>],
    d: &DeliveryRecord,
    mut now: DateTime<Utc>,
    real_time: bool,
    lease: Duration,
) -> Result<Choice, StoreError> {
    let names: Vec<String> = pool
        .iter()
        .map(|s| SendGuard::account(s.channel(), s.name()))
        .collect();
    let sticky = store
        .enrollment_account(d.enrollment_id, d.channel)
        .await?
        .filter(|a| names.contains(a));
    loop {
        let accounts: Vec<(String, Option<u64>)> = names
            .iter()
            .map(|a| {
                let remaining = guard.and_then(|g| g.remaining_today(a, d.channel, now));
                (a.clone(), remaining)
            })
            .collect();
        let order = rotation_order(&accounts, sticky.as_deref(), d.lead_id);
        let Some(guard) = guard else {
            let i = order[0];
            return Ok(Choice::Send {
                sender: pool[i].clone(),
                account: names[i].clone(),
                now,
            });
        };
        let mut earliest: Option<(DateTime<Utc>, bool)> = None;
        let mut reasons = Vec::new();
        for i in order {
            let account = &names[i];
            match guard.admit(account, d.channel, now).await {
                Verdict::Go | Verdict::Probe => {
                    return Ok(Choice::Send {
                        sender: pool[i].clone(),
                        account: account.clone(),
                        now,
                    })
                }
                Verdict::Wait {
                    until,
                    reason,
                    circuit_open,
                } => {
                    // A sequence stays on its account: it waits for it unless it is broken.
                    if sticky.as_deref() == Some(account.as_str()) && !circuit_open {
                        earliest = Some((until, false));
                        reasons = vec![format!("{reason} (the account of this sequence)")];
                        break;
                    }
                    if earliest.is_none_or(|(e, _)| until < e) {
                        earliest = Some((until, circuit_open));
                    }
                    reasons.push(reason);
                }
            }
        }
        let (until, circuit_open) = earliest.unwrap_or((now + Duration::minutes(1), false));
        let wait = until - now;
        if real_time && !circuit_open && wait <= Duration::seconds(2) && wait < lease / 2 {
            tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
            now = SystemClock.now().max(until);
            continue;
        }
        return Ok(Choice::Wait {
            until,
            reason: reasons.join("; "),
        });
    }
}

/// Seeds today's count of every account of the channels with several (daily caps), from the
/// ledger's sends since `day_start`. Sends recorded without an account (before migration
/// 0010) count against the channel's first account.
pub async fn seed_rotated(
    store: &dyn Store,
    channels: &ChannelSet,
    guard: &SendGuard,
    day_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let rotated: Vec<Channel> = Channel::ALL
        .into_iter()
        .filter(|c| channels.accounts(*c).len() > 1)
        .collect();
    if rotated.is_empty() {
        return Ok(());
    }
    let mut counts: HashMap<String, u64> = HashMap::new();
    for row in store.sent_counts_by_account_since(day_start).await? {
        if !rotated.contains(&row.channel) {
            continue;
        }
        let account = match row.account {
            Some(a) => a,
            None => match channels.get(row.channel) {
                Some(first) => SendGuard::account(row.channel, first.name()),
                None => continue,
            },
        };
        *counts.entry(account).or_default() += row.sent;
    }
    for (account, sent) in counts {
        guard.seed_sent_today(&account, now.date_naive(), sent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_account_comes_first_then_the_most_capacity() {
        let accounts = vec![
            ("email:graph:a@x.example".to_owned(), Some(10)),
            ("email:graph:b@x.example".to_owned(), Some(50)),
            ("email:graph:c@x.example".to_owned(), None),
        ];
        assert_eq!(rotation_order(&accounts, None, LeadId(1)), vec![2, 1, 0]);
        assert_eq!(
            rotation_order(&accounts, Some("email:graph:a@x.example"), LeadId(1)),
            vec![0, 2, 1]
        );
        // A sticky account that is no longer configured changes nothing.
        assert_eq!(
            rotation_order(&accounts, Some("email:graph:gone@x.example"), LeadId(1)),
            vec![2, 1, 0]
        );
    }

    struct Recorder(std::sync::Mutex<Vec<OutgoingMessage>>);

    #[async_trait]
    impl ChannelSender for Recorder {
        fn channel(&self) -> Channel {
            Channel::Email
        }
        fn name(&self) -> &str {
            "smtp"
        }
        async fn health_check(&self) -> Result<(), DeliveryError> {
            Ok(())
        }
        async fn send(&self, m: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
            self.0.lock().unwrap().push(m.clone());
            Ok(Accepted {
                provider_ref: "r".into(),
            })
        }
    }

    #[tokio::test]
    async fn an_account_sends_as_its_own_identity_under_its_own_name() {
        let inner = Arc::new(Recorder(std::sync::Mutex::new(Vec::new())));
        let account = AccountSender::new(inner.clone(), "sam@acme.example")
            .with_email_from(EmailAddress::parse("sam@acme.example").unwrap());
        assert_eq!(account.name(), "smtp:sam@acme.example");
        assert_eq!(
            SendGuard::account(account.channel(), account.name()),
            "email:smtp:sam@acme.example"
        );
        let message = OutgoingMessage {
            delivery_id: DeliveryId(1),
            lead_id: LeadId(1),
            campaign: "c".into(),
            step_index: 0,
            channel: Channel::Email,
            to: "lead@example.com".into(),
            to_name: None,
            subject: Some("Hi".into()),
            body_text: "Hi".into(),
            body_html: None,
            date: DateTime::from_timestamp(1_770_000_000, 0).unwrap(),
            message_id: "<1@acme.example>".into(),
            sender: engager_channels::Sender {
                name: "Maya".into(),
                email: EmailAddress::parse("maya@acme.example").unwrap(),
                postal_address: "1 Main St".into(),
                sms_from: None,
            },
            unsubscribe: None,
            due_by: None,
        };
        account.send(&message).await.unwrap();
        let seen = inner.0.lock().unwrap().clone();
        assert_eq!(seen[0].sender.email.as_str(), "sam@acme.example");
        assert_eq!(seen[0].sender.name, "Maya", "the display name stays");
        assert_eq!(seen[0].sender.postal_address, "1 Main St");
    }

    #[test]
    fn ties_are_broken_by_the_lead_and_spread_leads() {
        let accounts = vec![
            ("sms:twilio:+14155550100".to_owned(), Some(5)),
            ("sms:twilio:+14155550101".to_owned(), Some(5)),
        ];
        let firsts: Vec<usize> = (0..40)
            .map(|l| rotation_order(&accounts, None, LeadId(l))[0])
            .collect();
        // Deterministic per lead…
        assert_eq!(
            firsts,
            (0..40)
                .map(|l| rotation_order(&accounts, None, LeadId(l))[0])
                .collect::<Vec<_>>()
        );
        // …and both accounts get some of the leads.
        assert!(firsts.contains(&0) && firsts.contains(&1), "{firsts:?}");
    }
}
