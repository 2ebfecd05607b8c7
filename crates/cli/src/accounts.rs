//! Several sending accounts per provider (mailbox rotation) in the configuration.
//!
//! `[channels.graph]`, `[channels.smtp]` and `[channels.twilio]` are either one account (the
//! table itself, as before) or hold shared settings (credentials, URLs, timeouts) plus an
//! array of accounts, `[[channels.<provider>.accounts]]`, each stating its identity and
//! optionally its own limits, which replace those of `[limits.<channel>]` key by key:
//!
//! - Graph: `mailbox` (required); the tenant, app and secret are shared.
//! - SMTP: `from` (required, the From address), and optionally its own `username`,
//!   `password` and `envelope_from`; the relay is shared.
//! - Twilio: `from` or `messaging_service_sid` (one of them); the account SID and auth
//!   token are shared.
//!
//! Every account is parsed into the provider's full configuration (the shared table with the
//! account's identity keys on top), so a bad value fails at start naming its key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use engager_channels::ChannelSender;
use engager_domain::Channel;
use engager_engine::dispatcher::ChannelSet;
use engager_engine::guard::{AccountLimits, SendGuard};
use figment::value::{Dict, Value};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

/// A provider whose table may list several accounts.
pub trait Provider: DeserializeOwned {
    /// The configuration table (`channels.graph`).
    const SECTION: &'static str;
    /// The provider's sender name (`ChannelSender::name`).
    const NAME: &'static str;
    /// The channel it sends on.
    const CHANNEL: Channel;
    /// Keys of an account table that go into the provider's configuration.
    const MERGED: &'static [&'static str];
    /// Keys of an account table that are the account's own (not provider settings).
    const OWN: &'static [&'static str];
    /// Keys of the shared table that must be in each account instead when accounts are listed.
    const PER_ACCOUNT_ONLY: &'static [&'static str];
    /// The account's identity from its identity keys, or what is missing.
    fn identity(keys: &Dict) -> Result<String, String>;
}

fn text(keys: &Dict, key: &str) -> Option<String> {
    match keys.get(key) {
        Some(Value::String(_, s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Num(_, n)) => n.to_u128().map(|n| n.to_string()),
        _ => None,
    }
}

impl Provider for engager_channels::GraphConfig {
    const SECTION: &'static str = "channels.graph";
    const NAME: &'static str = "graph";
    const CHANNEL: Channel = Channel::Email;
    const MERGED: &'static [&'static str] = &["mailbox"];
    const OWN: &'static [&'static str] = &[];
    const PER_ACCOUNT_ONLY: &'static [&'static str] = &["mailbox"];
    fn identity(keys: &Dict) -> Result<String, String> {
        text(keys, "mailbox").ok_or_else(|| "`mailbox` is missing or empty".into())
    }
}

impl Provider for engager_channels::SmtpConfig {
    const SECTION: &'static str = "channels.smtp";
    const NAME: &'static str = "smtp";
    const CHANNEL: Channel = Channel::Email;
    const MERGED: &'static [&'static str] = &["username", "password", "envelope_from"];
    const OWN: &'static [&'static str] = &["from"];
    const PER_ACCOUNT_ONLY: &'static [&'static str] = &[];
    fn identity(keys: &Dict) -> Result<String, String> {
        let from =
            text(keys, "from").ok_or("`from` (the account's From address) is missing or empty")?;
        engager_domain::EmailAddress::parse(&from)
            .map(|a| a.as_str().to_owned())
            .map_err(|e| format!("`from` = {from:?} is not an email address: {e}"))
    }
}

impl Provider for engager_channels::TwilioConfig {
    const SECTION: &'static str = "channels.twilio";
    const NAME: &'static str = "twilio";
    const CHANNEL: Channel = Channel::Sms;
    const MERGED: &'static [&'static str] = &["from", "messaging_service_sid"];
    const OWN: &'static [&'static str] = &[];
    const PER_ACCOUNT_ONLY: &'static [&'static str] = &["from", "messaging_service_sid"];
    fn identity(keys: &Dict) -> Result<String, String> {
        text(keys, "from")
            .or_else(|| text(keys, "messaging_service_sid"))
            .ok_or_else(|| "neither `from` nor `messaging_service_sid` is set".into())
    }
}

/// The limit keys an account may set (they replace `[limits.<channel>]`'s, key by key).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccountLimitSettings {
    /// Sends per second.
    pub per_second: Option<u32>,
    /// Sends per minute.
    pub per_minute: Option<u32>,
    /// Sends per UTC day once warmed up.
    pub daily_cap: Option<u32>,
    /// Caps of the first days (warm-up ramp).
    pub warmup: Option<Vec<u32>>,
    /// First day of the ramp (YYYY-MM-DD).
    pub warmup_start: Option<String>,
}

const LIMIT_KEYS: &[&str] = &[
    "per_second",
    "per_minute",
    "daily_cap",
    "warmup",
    "warmup_start",
];

/// One sending account of a provider.
#[derive(Debug, Clone)]
pub struct Account<T> {
    /// The provider's full configuration for this account.
    pub config: T,
    /// The account's identity (mailbox, From address, number or Messaging Service);
    /// `None` for the single-table form, whose sender keeps the provider's plain name.
    pub identity: Option<String>,
    /// Its own limits.
    pub limits: AccountLimitSettings,
    /// Where it is configured (`channels.graph.accounts[1]`), for error messages.
    pub key: String,
}

impl<T: Provider> Account<T> {
    /// The sender name (`graph` or `graph:maya@acme.example`).
    pub fn sender_name(&self) -> String {
        match &self.identity {
            Some(id) => format!("{}:{id}", T::NAME),
            None => T::NAME.to_owned(),
        }
    }

    /// The account's name for limits, circuits and the ledger (`email:graph:maya@…`).
    pub fn account_name(&self) -> String {
        SendGuard::account(T::CHANNEL, &self.sender_name())
    }
}

/// A provider's accounts: one (the table itself) or several (`accounts = [...]`).
#[derive(Debug, Clone)]
pub struct Accounts<T> {
    /// The accounts, in configuration order (the first is the channel's default sender).
    pub list: Vec<Account<T>>,
    /// Whether the accounts were listed (`[[….accounts]]`): rotation, distinct names.
    pub rotated: bool,
}

impl<T> Accounts<T> {
    /// The first account's configuration (the only one without rotation): shared settings
    /// such as Twilio's auth token are the same in every account.
    pub fn first(&self) -> &T {
        &self.list[0].config
    }
}

impl<'de, T: Provider> Deserialize<'de> for Accounts<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut base = Dict::deserialize(deserializer)?;
        let section = T::SECTION;
        let parse = |dict: Dict, key: &str| -> Result<T, D::Error> {
            T::deserialize(&Value::from(dict)).map_err(|e| {
                let at = if e.path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{key}.{}", e.path.join("."))
                };
                D::Error::custom(format!("invalid configuration at key `{at}`: {}", e.kind))
            })
        };
        let Some(accounts) = base.remove("accounts") else {
            let config = parse(base, section)?;
            return Ok(Accounts {
                list: vec![Account {
                    config,
                    identity: None,
                    limits: AccountLimitSettings::default(),
                    key: section.to_owned(),
                }],
                rotated: false,
            });
        };
        let Value::Array(_, accounts) = accounts else {
            return Err(D::Error::custom(format!(
                "invalid configuration at key `{section}.accounts`: expected an array of tables ([[{section}.accounts]])"
            )));
        };
        if accounts.is_empty() {
            return Err(D::Error::custom(format!(
                "invalid configuration at key `{section}.accounts`: the list is empty; list at least one account or remove the key"
            )));
        }
        for key in T::PER_ACCOUNT_ONLY {
            if base.contains_key(*key) {
                return Err(D::Error::custom(format!(
                    "invalid configuration at key `{section}.{key}`: with [[{section}.accounts]], set `{key}` in each account instead"
                )));
            }
        }
        let mut list: Vec<Account<T>> = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (i, account) in accounts.into_iter().enumerate() {
            let key = format!("{section}.accounts[{i}]");
            let Value::Dict(_, account) = account else {
                return Err(D::Error::custom(format!(
                    "invalid configuration at key `{key}`: expected a table"
                )));
            };
            let (mut merged, mut identity_keys, mut limits) =
                (base.clone(), Dict::new(), Dict::new());
            for (k, v) in account {
                if T::MERGED.contains(&k.as_str()) {
                    identity_keys.insert(k.clone(), v.clone());
                    merged.insert(k, v);
                } else if T::OWN.contains(&k.as_str()) {
                    identity_keys.insert(k, v);
                } else if LIMIT_KEYS.contains(&k.as_str()) {
                    limits.insert(k, v);
                } else {
                    let allowed: Vec<&str> = T::MERGED
                        .iter()
                        .chain(T::OWN)
                        .chain(LIMIT_KEYS)
                        .copied()
                        .collect();
                    return Err(D::Error::custom(format!(
                        "invalid configuration at key `{key}.{k}`: unknown account key (an account takes {}; shared settings go in [{section}])",
                        allowed.join(", ")
                    )));
                }
            }
            let identity = T::identity(&identity_keys).map_err(|why| {
                D::Error::custom(format!(
                    "invalid configuration at key `{key}`: no identity for the account: {why}"
                ))
            })?;
            if let Some(first) = seen.insert(identity.to_ascii_lowercase(), key.clone()) {
                return Err(D::Error::custom(format!(
                    "invalid configuration at key `{key}`: duplicate account {identity:?} (already `{first}`)"
                )));
            }
            let limits = AccountLimitSettings::deserialize(&Value::from(limits)).map_err(|e| {
                D::Error::custom(format!("invalid configuration at key `{key}`: {e}"))
            })?;
            let config = parse(merged, &key)?;
            list.push(Account {
                config,
                identity: Some(identity),
                limits,
                key,
            });
        }
        Ok(Accounts {
            list,
            rotated: true,
        })
    }
}

/// The limits of each listed account: `[limits.<channel>]` with the account's own keys on
/// top. Errors name the account's key.
pub fn account_limits<T: Provider>(
    accounts: Option<&Accounts<T>>,
    channel_limits: &HashMap<Channel, AccountLimits>,
    out: &mut HashMap<String, AccountLimits>,
) -> Result<()> {
    let Some(accounts) = accounts.filter(|a| a.rotated) else {
        return Ok(());
    };
    let base = channel_limits.get(&T::CHANNEL).cloned().unwrap_or_default();
    for account in &accounts.list {
        let own = &account.limits;
        let warmup_start = match &own.warmup_start {
            Some(d) => Some(chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                anyhow!(
                    "invalid configuration at key `{}.warmup_start`: expected a date like 2026-03-02",
                    account.key
                )
            })?),
            None => base.warmup_start,
        };
        let limits = AccountLimits {
            per_second: own.per_second.or(base.per_second),
            per_minute: own.per_minute.or(base.per_minute),
            daily_cap: own.daily_cap.or(base.daily_cap),
            warmup: own.warmup.clone().unwrap_or_else(|| base.warmup.clone()),
            warmup_start,
        };
        if !limits.warmup.is_empty() && limits.warmup_start.is_none() {
            return Err(anyhow!(
                "invalid configuration at key `{}.warmup_start`: a warm-up ramp needs its first day",
                account.key
            ));
        }
        out.insert(account.account_name(), limits);
    }
    Ok(())
}

fn wrap(sender: Arc<dyn ChannelSender>, identity: &str) -> engager_engine::accounts::AccountSender {
    engager_engine::accounts::AccountSender::new(sender, identity)
}

/// The senders of listed Graph accounts; each sends from its mailbox.
pub fn graph_senders(
    accounts: &Accounts<engager_channels::GraphConfig>,
) -> Result<Vec<Arc<dyn ChannelSender>>> {
    let mut out: Vec<Arc<dyn ChannelSender>> = Vec::new();
    for account in &accounts.list {
        let identity = account.identity.as_deref().unwrap_or_default();
        let channel = engager_channels::GraphChannel::new(account.config.clone())
            .map_err(|e| anyhow!("configuring Microsoft Graph ({}): {e}", account.key))?;
        let mut sender = wrap(Arc::new(channel), identity);
        // Graph sends as the mailbox; the From shown in our records says so too (a mailbox
        // given by object id keeps `sender.email`).
        if let Ok(address) = engager_domain::EmailAddress::parse(identity) {
            sender = sender.with_email_from(address);
        }
        out.push(Arc::new(sender));
    }
    Ok(out)
}

/// The senders of listed SMTP accounts; each sends with its own From address.
pub fn smtp_senders(
    accounts: &Accounts<engager_channels::SmtpConfig>,
) -> Result<Vec<Arc<dyn ChannelSender>>> {
    let mut out: Vec<Arc<dyn ChannelSender>> = Vec::new();
    for account in &accounts.list {
        let identity = account.identity.as_deref().unwrap_or_default();
        match &account.config.dkim {
            None => tracing::warn!(
                account = %account.key,
                "SMTP mail is not DKIM-signed: set [channels.smtp.dkim]; Gmail and Yahoo expect it and one-click unsubscribe needs it."
            ),
            Some(dkim) => {
                let from_domain = identity
                    .rsplit('@')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let signs = dkim.domain.to_ascii_lowercase();
                if from_domain != signs
                    && !from_domain.ends_with(&format!(".{signs}"))
                    && !signs.ends_with(&format!(".{from_domain}"))
                {
                    tracing::warn!(
                        account = %account.key,
                        dkim_domain = %dkim.domain,
                        "The DKIM domain does not align with this account's From domain; DMARC will not pass on DKIM."
                    );
                }
            }
        }
        let from = engager_domain::EmailAddress::parse(identity)
            .map_err(|e| anyhow!("invalid configuration at key `{}.from`: {e}", account.key))?;
        let channel = engager_channels::SmtpChannel::new(&account.config)
            .map_err(|e| anyhow!("configuring SMTP ({}): {e}", account.key))?;
        out.push(Arc::new(
            wrap(Arc::new(channel), identity).with_email_from(from),
        ));
    }
    Ok(out)
}

/// The senders of listed Twilio accounts; each sends from its number or Messaging Service.
pub fn twilio_senders(
    accounts: &Accounts<engager_channels::TwilioConfig>,
) -> Result<Vec<Arc<dyn ChannelSender>>> {
    let mut out: Vec<Arc<dyn ChannelSender>> = Vec::new();
    for account in &accounts.list {
        let identity = account.identity.as_deref().unwrap_or_default();
        let channel = engager_channels::TwilioChannel::new(account.config.clone())
            .map_err(|e| anyhow!("configuring Twilio ({}): {e}", account.key))?;
        let mut sender = wrap(Arc::new(channel), identity);
        if let Some(from) = &account.config.from {
            sender = sender.with_sms_from(from.clone());
        }
        out.push(Arc::new(sender));
    }
    Ok(out)
}

/// Until when an account's circuit is open (saved by any process), if it is now.
pub fn circuit_open_until(
    states: &[engager_store::AccountState],
    account: &str,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    states
        .iter()
        .find(|st| st.account == account)
        .and_then(|st| st.open_until)
        .filter(|u| *u > now)
}

/// Marks a channel with several accounts as open (planned around) only when every account's
/// circuit is open, until the first reopens; a channel with one account is left as it is.
pub fn rotated_open_circuits(
    states: &[engager_store::AccountState],
    channels: &ChannelSet,
    now: DateTime<Utc>,
    open: &mut HashMap<Channel, DateTime<Utc>>,
) {
    for channel in Channel::ALL {
        let pool = channels.accounts(channel);
        if pool.len() < 2 {
            continue;
        }
        open.remove(&channel);
        let untils: Option<Vec<DateTime<Utc>>> = pool
            .iter()
            .map(|s| circuit_open_until(states, &SendGuard::account(channel, s.name()), now))
            .collect();
        if let Some(until) = untils.and_then(|u| u.into_iter().min()) {
            open.insert(channel, until);
        }
    }
}

/// Today's sends of each account of the channels with several accounts (sends recorded
/// without an account count for the channel's first account).
pub async fn sent_by_account(
    store: &dyn engager_store::Store,
    channels: &ChannelSet,
    since: DateTime<Utc>,
) -> Result<HashMap<String, u64>> {
    let mut out: HashMap<String, u64> = HashMap::new();
    if Channel::ALL.iter().all(|c| channels.accounts(*c).len() < 2) {
        return Ok(out);
    }
    for row in store.sent_counts_by_account_since(since).await? {
        if channels.accounts(row.channel).len() < 2 {
            continue;
        }
        let account = match row.account {
            Some(a) => a,
            None => match channels.get(row.channel) {
                Some(first) => SendGuard::account(row.channel, first.name()),
                None => continue,
            },
        };
        *out.entry(account).or_default() += row.sent;
    }
    // Configured accounts without sends today show 0.
    for channel in Channel::ALL {
        if channels.accounts(channel).len() > 1 {
            for s in channels.accounts(channel) {
                out.entry(SendGuard::account(channel, s.name()))
                    .or_default();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::settings::{load, Settings};

    const SHARED: &str = "tenant_id = \"contoso.onmicrosoft.com\"\n\
        client_id = \"11111111-2222-3333-4444-555555555555\"\n\
        client_secret = \"s3cr3t\"\n";

    /// The example configuration with `extra` appended, loaded.
    fn load_with(extra: &str) -> Result<Settings> {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engager.toml");
        std::fs::write(&path, format!("{example}\n{extra}")).unwrap();
        load(Some(&path))
    }

    fn error(extra: &str) -> String {
        match load_with(extra) {
            Ok(_) => panic!("accepted: {extra}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn listed_accounts_share_credentials_and_take_their_own_limits() {
        // The example's [limits.email]: per_minute = 30, daily_cap = 10000.
        let settings = load_with(&format!(
            "[channels.graph]\n{SHARED}\n\
             [[channels.graph.accounts]]\nmailbox = \"maya@acme.example\"\ndaily_cap = 200\n\
             warmup = [20, 50]\nwarmup_start = \"2026-03-02\"\n\n\
             [[channels.graph.accounts]]\nmailbox = \"sam@acme.example\"\nper_minute = 10\n\n\
             [channels.twilio]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token = \"t\"\n\n\
             [[channels.twilio.accounts]]\nfrom = \"+14155550100\"\n\n\
             [[channels.twilio.accounts]]\nmessaging_service_sid = \"MG0123456789abcdef0123456789abcdef\"\n"
        ))
        .unwrap();
        let graph = settings.channels.graph.as_ref().unwrap();
        assert!(graph.rotated);
        let mailboxes: Vec<_> = graph
            .list
            .iter()
            .map(|a| a.config.mailbox.as_str())
            .collect();
        assert_eq!(mailboxes, ["maya@acme.example", "sam@acme.example"]);
        assert!(graph
            .list
            .iter()
            .all(|a| a.config.tenant_id == "contoso.onmicrosoft.com"));
        assert_eq!(graph.list[1].key, "channels.graph.accounts[1]");

        let engine = settings.engine_config().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let channels =
            crate::commands::configured_channels(&settings, &engine, dir.path()).unwrap();
        let names: Vec<String> = channels
            .every()
            .iter()
            .map(|s| SendGuard::account(s.channel(), s.name()))
            .collect();
        assert!(
            names.contains(&"email:graph:maya@acme.example".to_owned())
                && names.contains(&"email:graph:sam@acme.example".to_owned())
                && names.contains(&"sms:twilio:+14155550100".to_owned())
                && names.contains(&"sms:twilio:MG0123456789abcdef0123456789abcdef".to_owned()),
            "{names:?}"
        );
        assert_eq!(channels.accounts(Channel::Email).len(), 2);

        let guard = settings.guard().unwrap();
        let day1 = chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        let maya = "email:graph:maya@acme.example";
        let sam = "email:graph:sam@acme.example";
        assert_eq!(guard.account_cap_on(maya, Channel::Email, day1), Some(20));
        assert_eq!(
            guard.account_cap_on(maya, Channel::Email, day1 + chrono::Duration::days(5)),
            Some(200)
        );
        assert_eq!(
            guard.account_cap_on(sam, Channel::Email, day1),
            Some(10_000)
        );
        let limits = guard.account_limits();
        assert_eq!(limits[sam].per_minute, Some(10));
        assert_eq!(
            limits[maya].per_minute,
            Some(30),
            "inherited from [limits.email]"
        );
    }

    #[test]
    fn the_single_table_form_stays_one_account_under_the_provider_name() {
        let settings = load_with(&format!(
            "[channels.graph]\n{SHARED}mailbox = \"maya@acme.example\"\n"
        ))
        .unwrap();
        let graph = settings.channels.graph.as_ref().unwrap();
        assert!(!graph.rotated);
        assert_eq!(graph.list.len(), 1);
        assert_eq!(graph.list[0].account_name(), "email:graph");
        let engine = settings.engine_config().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let channels =
            crate::commands::configured_channels(&settings, &engine, dir.path()).unwrap();
        assert_eq!(channels.accounts(Channel::Email).len(), 1);
        assert_eq!(channels.get(Channel::Email).unwrap().name(), "graph");
        assert!(settings.guard().unwrap().account_limits().is_empty());
    }

    #[test]
    fn bad_account_lists_fail_at_start_naming_the_key() {
        let graph = |accounts: &str| format!("[channels.graph]\n{SHARED}\n{accounts}");
        let cases = [
            (
                graph("[[channels.graph.accounts]]\nmailbox = \"maya@acme.example\"\n\n[[channels.graph.accounts]]\nmailbox = \"Maya@Acme.example\"\n"),
                vec!["channels.graph.accounts[1]", "duplicate"],
            ),
            (
                graph("[[channels.graph.accounts]]\ndaily_cap = 10\n"),
                vec!["channels.graph.accounts[0]", "no identity", "mailbox"],
            ),
            (
                graph("[[channels.graph.accounts]]\nmailbx = \"maya@acme.example\"\n"),
                vec!["channels.graph.accounts[0].mailbx", "unknown account key"],
            ),
            (
                graph("[[channels.graph.accounts]]\nmailbox = \"maya@acme.example\"\ndaily_cap = \"many\"\n"),
                vec!["channels.graph.accounts[0]"],
            ),
            (
                format!("[channels.graph]\n{SHARED}mailbox = \"x@acme.example\"\n\n[[channels.graph.accounts]]\nmailbox = \"maya@acme.example\"\n"),
                vec!["channels.graph.mailbox", "each account"],
            ),
            (
                format!("[channels.graph]\n{SHARED}accounts = []\n"),
                vec!["channels.graph.accounts", "empty"],
            ),
            (
                "[channels.smtp]\nhost = \"smtp.acme.example\"\n\n[[channels.smtp.accounts]]\nfrom = \"not an address\"\n".to_owned(),
                vec!["channels.smtp.accounts[0]", "from"],
            ),
            (
                "[channels.twilio]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token = \"t\"\n\n\
                 [[channels.twilio.accounts]]\nfrom = \"+14155550100\"\n\n[[channels.twilio.accounts]]\nfrom = \"+14155550100\"\n".to_owned(),
                vec!["channels.twilio.accounts[1]", "duplicate"],
            ),
        ];
        for (extra, needles) in cases {
            let err = error(&extra);
            for needle in needles {
                assert!(err.contains(needle), "{needle:?} not in: {err}");
            }
        }
        // A bad warm-up start of one account is found when the limits are built.
        let settings = load_with(&graph(
            "[[channels.graph.accounts]]\nmailbox = \"maya@acme.example\"\nwarmup = [5]\nwarmup_start = \"next monday\"\n",
        ))
        .unwrap();
        let err = settings.guard().err().unwrap().to_string();
        assert!(
            err.contains("channels.graph.accounts[0].warmup_start"),
            "{err}"
        );
    }
}
