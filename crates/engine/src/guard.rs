//! What stands between a claimed delivery and its provider: per-account rate limits, daily
//! caps with warm-up ramps, and circuit breakers.
//!
//! Invariants: a denied send is put back in the ledger with the instant it may go (never
//! retried in a loop in memory, never burned); while an account's circuit is open only its
//! half-open probe goes out; limits run on the injected time, so a simulation on a virtual
//! clock is as deterministic as the rest.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use engager_domain::circuit::{Admission, CircuitBreaker, CircuitPolicy, CircuitState, Transition};
use engager_domain::Channel;
use engager_store::{Permit, PermitRequest, RateQuota, Store};
use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tracing::warn;

/// The limits of one channel's sending account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountLimits {
    /// Sends per second.
    pub per_second: Option<u32>,
    /// Sends per minute.
    pub per_minute: Option<u32>,
    /// Sends per UTC day once warmed up.
    pub daily_cap: Option<u32>,
    /// Caps for the first days of sending (day 1, day 2, …), then `daily_cap`.
    pub warmup: Vec<u32>,
    /// The first day of the warm-up ramp.
    pub warmup_start: Option<NaiveDate>,
}

impl AccountLimits {
    /// The cap in force on `day`, if any.
    pub fn cap_on(&self, day: NaiveDate) -> Option<u32> {
        if let Some(start) = self.warmup_start {
            let index = (day - start).num_days();
            if index >= 0 {
                if let Some(cap) = self.warmup.get(index as usize) {
                    return Some(self.daily_cap.map_or(*cap, |d| d.min(*cap)));
                }
            }
        }
        self.daily_cap
    }
}

/// A rate limiter for sends: in-process ([`GovernorLimiter`], the default) or backed by the
/// database and shared by every process on it ([`StoreLimiter`]). The account and the time
/// are explicit, so both run on the injected clock.
#[async_trait]
pub trait SendLimiter: Send + Sync {
    /// Takes one permit for `account` at `now`, or says when the next one may be available
    /// and why.
    async fn try_acquire(&self, account: &str, now: DateTime<Utc>) -> Result<(), Denied>;
    /// Holds every send of `account` until `until` (the provider said it is rate-limited).
    async fn pause(&self, account: &str, until: DateTime<Utc>);
}

/// A refused permit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// When to try again.
    pub until: DateTime<Utc>,
    /// Why (for the ledger row's note and the logs).
    pub reason: String,
}

/// governor's clock, reading the instant the guard was last given (virtual or real).
#[derive(Debug, Clone, Default)]
struct InjectedClock(Arc<AtomicU64>);

impl GovernorClock for InjectedClock {
    type Instant = std::time::Duration;

    fn now(&self) -> Self::Instant {
        std::time::Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

type Direct =
    RateLimiter<NotKeyed, InMemoryState, InjectedClock, NoOpMiddleware<std::time::Duration>>;

/// The in-process limiter: one GCRA (governor) per account and rate, with the quotas of the
/// account's channel (accounts are named `channel:provider`).
pub struct GovernorLimiter {
    clock: InjectedClock,
    quotas: HashMap<Channel, Vec<Quota>>,
    account_quotas: HashMap<String, Vec<Quota>>,
    limiters: Mutex<HashMap<String, (Vec<Direct>, Option<DateTime<Utc>>)>>,
}

impl GovernorLimiter {
    /// A limiter with the given quotas per channel.
    pub fn new(quotas: HashMap<Channel, Vec<Quota>>) -> Self {
        Self {
            clock: InjectedClock::default(),
            quotas,
            account_quotas: HashMap::new(),
            limiters: Mutex::new(HashMap::new()),
        }
    }

    /// Quotas of single accounts (by full account name), replacing their channel's.
    pub fn with_account_quotas(mut self, quotas: HashMap<String, Vec<Quota>>) -> Self {
        self.account_quotas = quotas;
        self
    }
}

/// governor's quotas for one account's limits.
fn governor_quotas(l: &AccountLimits) -> Vec<Quota> {
    let mut q = Vec::new();
    // GCRA: up to the limit at once, then evenly at the rate (governor's quotas).
    if let Some(n) = l.per_second.and_then(NonZeroU32::new) {
        q.push(Quota::per_second(n));
    }
    if let Some(n) = l.per_minute.and_then(NonZeroU32::new) {
        q.push(Quota::per_minute(n));
    }
    q
}

/// The database limiter's rates for one account's limits.
fn store_rates(l: &AccountLimits) -> Vec<RateQuota> {
    let mut q = Vec::new();
    if let Some(n) = l.per_second.filter(|n| *n > 0) {
        q.push(RateQuota {
            per: Duration::seconds(1),
            count: n,
        });
    }
    if let Some(n) = l.per_minute.filter(|n| *n > 0) {
        q.push(RateQuota {
            per: Duration::minutes(1),
            count: n,
        });
    }
    q
}

fn to_nanos(t: DateTime<Utc>) -> u64 {
    t.timestamp_nanos_opt().unwrap_or(0).max(0) as u64
}

#[async_trait]
impl SendLimiter for GovernorLimiter {
    async fn try_acquire(&self, account: &str, now: DateTime<Utc>) -> Result<(), Denied> {
        self.acquire_now(account, now).map_err(|until| Denied {
            until,
            reason: format!("rate limit of {account}"),
        })
    }

    async fn pause(&self, account: &str, until: DateTime<Utc>) {
        let mut all = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let entry = all
            .entry(account.to_owned())
            .or_insert_with(|| (Vec::new(), None));
        entry.1 = Some(entry.1.map_or(until, |u| u.max(until)));
    }
}

impl GovernorLimiter {
    fn acquire_now(&self, account: &str, now: DateTime<Utc>) -> Result<(), DateTime<Utc>> {
        self.clock.0.fetch_max(to_nanos(now), Ordering::SeqCst);
        let mut all = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let entry = all.entry(account.to_owned()).or_insert_with(|| {
            let channel = account
                .split(':')
                .next()
                .and_then(|c| c.parse::<Channel>().ok());
            let quotas = self
                .account_quotas
                .get(account)
                .or_else(|| channel.and_then(|c| self.quotas.get(&c)))
                .cloned()
                .unwrap_or_default();
            (
                quotas
                    .into_iter()
                    .map(|q| RateLimiter::direct_with_clock(q, self.clock.clone()))
                    .collect(),
                None,
            )
        });
        if let Some(until) = entry.1 {
            if now < until {
                return Err(until);
            }
            entry.1 = None;
        }
        for limiter in &entry.0 {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(self.clock.now());
                return Err(now
                    + Duration::from_std(wait)
                        .unwrap_or(Duration::seconds(1))
                        .max(Duration::milliseconds(1)));
            }
        }
        Ok(())
    }
}

/// The database-backed limiter: every process on one database (PostgreSQL, or one SQLite
/// file) takes its permits from the same rows (`rate_buckets`, through
/// [`Store::take_send_permit`]), so several dispatchers share one rate per account, one
/// daily cap (counting permits, seeded with the day's sends from the ledger) and one
/// provider pause. The same GCRA as governor: a burst up to the limit, then evenly spaced.
/// When the database cannot be asked, no permit is given (sends wait a few seconds).
pub struct StoreLimiter {
    store: Arc<dyn Store>,
    rates: HashMap<Channel, Vec<RateQuota>>,
    limits: HashMap<Channel, AccountLimits>,
    accounts: HashMap<String, AccountLimits>,
}

impl StoreLimiter {
    /// A limiter on `store` with each channel's rates and daily caps.
    pub fn new(store: Arc<dyn Store>, limits: HashMap<Channel, AccountLimits>) -> Self {
        let rates = limits.iter().map(|(c, l)| (*c, store_rates(l))).collect();
        Self {
            store,
            rates,
            limits,
            accounts: HashMap::new(),
        }
    }

    /// Limits of single accounts (by full account name), replacing their channel's.
    pub fn with_account_limits(mut self, accounts: HashMap<String, AccountLimits>) -> Self {
        self.accounts = accounts;
        self
    }
}

#[async_trait]
impl SendLimiter for StoreLimiter {
    async fn try_acquire(&self, account: &str, now: DateTime<Utc>) -> Result<(), Denied> {
        let Some(channel) = account
            .split(':')
            .next()
            .and_then(|c| c.parse::<Channel>().ok())
        else {
            return Ok(());
        };
        let own = self.accounts.get(account);
        let request = PermitRequest {
            account: account.to_owned(),
            channel,
            rates: match own {
                Some(l) => store_rates(l),
                None => self.rates.get(&channel).cloned().unwrap_or_default(),
            },
            daily_cap: own
                .or_else(|| self.limits.get(&channel))
                .and_then(|l| l.cap_on(now.date_naive())),
            now,
        };
        match self.store.take_send_permit(&request).await {
            Ok(Permit::Granted) => Ok(()),
            Ok(Permit::Wait { until, reason }) => Err(Denied { until, reason }),
            Err(e) => {
                warn!(account, error = %e, "The shared rate limiter could not be asked; holding the send.");
                Err(Denied {
                    until: now + Duration::seconds(5),
                    reason: format!("the shared rate limiter is unavailable: {e}"),
                })
            }
        }
    }

    async fn pause(&self, account: &str, until: DateTime<Utc>) {
        if let Err(e) = self.store.pause_account(account, until).await {
            warn!(account, error = %e, "Could not record the provider's pause in the database.");
        }
    }
}

/// How long a delivery held by an account's halt waits before it is looked at again.
const ACCOUNT_HALT_RECHECK: Duration = Duration::minutes(15);

/// What the guard says about one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send now.
    Go,
    /// Send now, as the circuit's half-open probe.
    Probe,
    /// Not before `until`, because of `reason`.
    Wait {
        /// When to try again.
        until: DateTime<Utc>,
        /// Why (rate limit, daily cap, open circuit).
        reason: String,
        /// Whether the account's circuit is open (a fallback channel may be tried).
        circuit_open: bool,
    },
}

/// How a send went, as far as the account's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The provider worked (including a permanent rejection of one recipient).
    Ok,
    /// The provider failed (5xx, timeout, ambiguous, rate-limited).
    Failed,
}

/// One account's state, for `engager status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountHealth {
    /// `channel:provider`.
    pub account: String,
    /// Circuit state name.
    pub circuit: String,
    /// Sends counted today.
    pub sent_today: u64,
    /// Today's cap, if any.
    pub cap_today: Option<u32>,
}

/// Limits and circuit breakers of every account, shared by dispatcher passes.
pub struct SendGuard {
    limiter: Box<dyn SendLimiter>,
    limits: HashMap<Channel, AccountLimits>,
    /// Limits of single accounts (several accounts on one channel), replacing the channel's.
    account_limits: HashMap<String, AccountLimits>,
    policy: CircuitPolicy,
    breakers: Mutex<HashMap<String, CircuitBreaker>>,
    daily: Mutex<HashMap<String, (NaiveDate, u64)>>,
    /// Channels the deliverability monitor slowed (a warning): the share of the configured
    /// rate and daily cap they keep, and why.
    slowdowns: Mutex<HashMap<Channel, (f64, String)>>,
    /// Single accounts the deliverability monitor slowed (a warning on the account or on its
    /// sending domain), by account name.
    account_slowdowns: Mutex<HashMap<String, (f64, String)>>,
    /// Accounts the deliverability monitor halted (the account or its domain), with why:
    /// they are held like an account whose circuit is open, until a person resumes them.
    halted_accounts: Mutex<HashMap<String, String>>,
    /// When each account last started a send, for the slowed spacing.
    last_go: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl SendGuard {
    /// Slows channels the deliverability monitor warned about: each keeps `factor` (0–1) of
    /// its configured rate and daily cap until the next call lifts or changes it.
    pub fn set_slowdowns(&self, slowdowns: HashMap<Channel, (f64, String)>) {
        *self.slowdowns.lock().unwrap_or_else(|p| p.into_inner()) = slowdowns
            .into_iter()
            .filter(|(_, (f, _))| f.is_finite() && *f > 0.0 && *f < 1.0)
            .collect();
    }

    /// The slow-down of a channel, if any.
    pub fn slowdown(&self, channel: Channel) -> Option<(f64, String)> {
        self.slowdowns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&channel)
            .cloned()
    }

    /// Slows single accounts (by account name, `channel:provider[:identity]`) the
    /// deliverability monitor warned about, alongside the channels' slow-downs: each keeps
    /// `factor` (0–1) of its configured rate and daily cap until the next call lifts or
    /// changes it.
    pub fn set_account_slowdowns(&self, slowdowns: HashMap<String, (f64, String)>) {
        *self
            .account_slowdowns
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = slowdowns
            .into_iter()
            .filter(|(_, (f, _))| f.is_finite() && *f > 0.0 && *f < 1.0)
            .collect();
    }

    /// Holds the accounts the deliverability monitor halted (by account name, with why)
    /// until the next call: [`SendGuard::admit`] answers them as if their circuit were open,
    /// so the rotation hands new sends and sequences to another account of the channel and,
    /// when none is left, deliveries wait.
    pub fn set_account_halts(&self, halted: HashMap<String, String>) {
        *self
            .halted_accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = halted;
    }

    /// Why an account is halted by the deliverability monitor, if it is.
    pub fn account_halt(&self, account: &str) -> Option<String> {
        self.halted_accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .cloned()
    }

    /// The slow-down in force for an account: the stronger of its channel's and its own.
    pub fn slowdown_of(&self, account: &str, channel: Channel) -> Option<(f64, String)> {
        let own = self
            .account_slowdowns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .cloned();
        match (self.slowdown(channel), own) {
            (Some(c), Some(a)) => Some(if a.0 < c.0 { a } else { c }),
            (c, a) => c.or(a),
        }
    }

    /// The spacing a slowed account keeps between sends: its configured interval ÷ factor.
    fn slowed_gap(&self, account: &str, channel: Channel, factor: f64) -> Option<Duration> {
        let limits = self
            .account_limits
            .get(account)
            .or_else(|| self.limits.get(&channel))?;
        let per_second = limits
            .per_second
            .map(f64::from)
            .or_else(|| limits.per_minute.map(|m| f64::from(m) / 60.0))?;
        if per_second <= 0.0 {
            return None;
        }
        let gap_ms = 1000.0 / (per_second * factor);
        Some(Duration::milliseconds(gap_ms.ceil() as i64))
    }
    /// A guard with per-channel limits and one circuit policy.
    pub fn new(limits: HashMap<Channel, AccountLimits>, policy: CircuitPolicy) -> Self {
        let quotas = Channel::ALL
            .iter()
            .filter_map(|c| limits.get(c).map(|l| (*c, governor_quotas(l))))
            .collect();
        Self {
            limiter: Box::new(GovernorLimiter::new(quotas)),
            limits,
            account_limits: HashMap::new(),
            policy,
            breakers: Mutex::new(HashMap::new()),
            daily: Mutex::new(HashMap::new()),
            slowdowns: Mutex::new(HashMap::new()),
            account_slowdowns: Mutex::new(HashMap::new()),
            halted_accounts: Mutex::new(HashMap::new()),
            last_go: Mutex::new(HashMap::new()),
        }
    }

    /// No limits and a default circuit policy.
    pub fn unlimited() -> Self {
        Self::new(HashMap::new(), CircuitPolicy::default())
    }

    /// Gives single accounts their own limits (mailbox rotation: several accounts on one
    /// channel, each with its rates, daily cap and warm-up), replacing their channel's. Call
    /// before [`SendGuard::with_limiter`]: it rebuilds the in-process limiter.
    pub fn with_account_limits(mut self, accounts: HashMap<String, AccountLimits>) -> Self {
        let quotas = Channel::ALL
            .iter()
            .filter_map(|c| self.limits.get(c).map(|l| (*c, governor_quotas(l))))
            .collect();
        let own = accounts
            .iter()
            .map(|(a, l)| (a.clone(), governor_quotas(l)))
            .collect();
        self.limiter = Box::new(GovernorLimiter::new(quotas).with_account_quotas(own));
        self.account_limits = accounts;
        self
    }

    /// The limits of single accounts.
    pub fn account_limits(&self) -> &HashMap<String, AccountLimits> {
        &self.account_limits
    }

    /// The limits in force for an account: its own, else its channel's.
    fn limits_of(&self, account: &str, channel: Channel) -> Option<&AccountLimits> {
        self.account_limits
            .get(account)
            .or_else(|| self.limits.get(&channel))
    }

    /// An account's cap on `day`, if any (its own limits, else its channel's).
    pub fn account_cap_on(&self, account: &str, channel: Channel, day: NaiveDate) -> Option<u32> {
        self.limits_of(account, channel).and_then(|l| l.cap_on(day))
    }

    /// Sends counted for an account today.
    pub fn sent_today(&self, account: &str, now: DateTime<Utc>) -> u64 {
        let daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
        daily
            .get(account)
            .filter(|(d, _)| *d == now.date_naive())
            .map_or(0, |(_, n)| *n)
    }

    /// How many more sends an account's daily cap allows today (`None`: no cap).
    pub fn remaining_today(
        &self,
        account: &str,
        channel: Channel,
        now: DateTime<Utc>,
    ) -> Option<u64> {
        let cap = self.account_cap_on(account, channel, now.date_naive())?;
        Some(u64::from(cap).saturating_sub(self.sent_today(account, now)))
    }

    /// Replaces the limiter (e.g. with a database-backed one).
    pub fn with_limiter(mut self, limiter: Box<dyn SendLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The account name of a channel's sender.
    pub fn account(channel: Channel, provider: &str) -> String {
        format!("{channel}:{provider}")
    }

    /// Seeds today's count of an account (from the ledger, at the start of a pass).
    pub fn seed_sent_today(&self, account: &str, day: NaiveDate, sent: u64) {
        let mut daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
        let entry = daily.entry(account.to_owned()).or_insert((day, 0));
        if entry.0 != day || entry.1 < sent {
            *entry = (day, sent);
        }
    }

    /// Asks whether a send on `account` may start at `now`.
    pub async fn admit(&self, account: &str, channel: Channel, now: DateTime<Utc>) -> Verdict {
        if let Some(until) = self.open_until(account).filter(|u| now < *u) {
            return Verdict::Wait {
                until,
                reason: format!("circuit of {account} is open"),
                circuit_open: true,
            };
        }
        if let Some(why) = self.account_halt(account) {
            return Verdict::Wait {
                until: now + ACCOUNT_HALT_RECHECK,
                reason: format!(
                    "{account} is halted by the deliverability monitor ({why}); `engager deliverability resume` lifts it"
                ),
                circuit_open: true,
            };
        }
        let day = now.date_naive();
        let slowed = self.slowdown_of(account, channel);
        if let Some((factor, why)) = &slowed {
            if let Some(gap) = self.slowed_gap(account, channel, *factor) {
                let last = self
                    .last_go
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(account)
                    .copied();
                if let Some(next) = last.map(|l| l + gap).filter(|n| *n > now) {
                    return Verdict::Wait {
                        until: next,
                        reason: format!(
                            "{account} slowed to {:.0}% of its rate by the deliverability monitor ({why})",
                            factor * 100.0
                        ),
                        circuit_open: false,
                    };
                }
            }
        }
        if let Some(cap) = self
            .account_cap_on(account, channel, day)
            .map(|cap| match &slowed {
                Some((factor, _)) => ((f64::from(cap) * factor).floor() as u32).max(1),
                None => cap,
            })
        {
            let daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
            let sent = daily
                .get(account)
                .filter(|(d, _)| *d == day)
                .map_or(0, |(_, n)| *n);
            if sent >= u64::from(cap) {
                let tomorrow = (day + Duration::days(1))
                    .and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc())
                    .unwrap_or(now + Duration::days(1));
                return Verdict::Wait {
                    until: tomorrow,
                    reason: format!("daily cap of {cap} reached for {account}"),
                    circuit_open: false,
                };
            }
        }
        if let Err(Denied { until, reason }) = self.limiter.try_acquire(account, now).await {
            return Verdict::Wait {
                until,
                reason,
                circuit_open: false,
            };
        }
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let breaker = breakers
            .entry(account.to_owned())
            .or_insert_with(|| CircuitBreaker::new(self.policy));
        let verdict = breaker.admit(now);
        if slowed.is_some() && !matches!(verdict, Admission::Denied { .. }) {
            self.last_go
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(account.to_owned(), now);
        }
        match verdict {
            Admission::Allowed => Verdict::Go,
            Admission::Probe => Verdict::Probe,
            Admission::Denied { until } => Verdict::Wait {
                until,
                reason: format!("circuit of {account} is probing"),
                circuit_open: true,
            },
        }
    }

    /// Records how a send went; returns a circuit transition to log and alert on.
    pub fn record(
        &self,
        account: &str,
        health: Health,
        sent: bool,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        if sent {
            let mut daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
            let day = now.date_naive();
            let entry = daily.entry(account.to_owned()).or_insert((day, 0));
            if entry.0 != day {
                *entry = (day, 0);
            }
            entry.1 += 1;
        }
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let breaker = breakers
            .entry(account.to_owned())
            .or_insert_with(|| CircuitBreaker::new(self.policy));
        breaker.record(health == Health::Ok, now)
    }

    /// The provider asked us to slow down until `until`.
    pub async fn pause(&self, account: &str, until: DateTime<Utc>) {
        self.limiter.pause(account, until).await;
    }

    /// The per-channel limits this guard was built with.
    pub fn limits(&self) -> &HashMap<Channel, AccountLimits> {
        &self.limits
    }

    /// Opens an account's circuit until `until` (credentials refused, configuration broken).
    pub fn trip(&self, account: &str, until: DateTime<Utc>) -> Option<Transition> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        breakers
            .entry(account.to_owned())
            .or_insert_with(|| CircuitBreaker::new(self.policy))
            .trip(until)
    }

    /// Until when an account's circuit is open, if it is.
    pub fn open_until(&self, account: &str) -> Option<DateTime<Utc>> {
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        match breakers.get(account).map(CircuitBreaker::state) {
            Some(CircuitState::Open { until }) => Some(until),
            _ => None,
        }
    }

    /// The configured cap for a channel today.
    pub fn cap_on(&self, channel: Channel, day: NaiveDate) -> Option<u32> {
        self.limits.get(&channel).and_then(|l| l.cap_on(day))
    }

    /// Every known account's state.
    pub fn health(&self, now: DateTime<Utc>) -> Vec<AccountHealth> {
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
        let mut accounts: Vec<&String> = breakers.keys().chain(daily.keys()).collect();
        accounts.sort();
        accounts.dedup();
        accounts
            .into_iter()
            .map(|a| {
                let channel = a.split(':').next().and_then(|c| c.parse::<Channel>().ok());
                AccountHealth {
                    account: a.clone(),
                    circuit: breakers
                        .get(a)
                        .map_or("closed", |b| b.state().name())
                        .to_owned(),
                    sent_today: daily
                        .get(a)
                        .filter(|(d, _)| *d == now.date_naive())
                        .map_or(0, |(_, n)| *n),
                    cap_today: channel.and_then(|c| self.account_cap_on(a, c, now.date_naive())),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_770_000_000 + s, 0).unwrap()
    }

    #[tokio::test]
    async fn a_deliverability_warning_slows_the_rate_and_the_daily_cap() {
        let mut limits: HashMap<Channel, AccountLimits> = HashMap::new();
        limits.insert(
            Channel::Email,
            AccountLimits {
                per_minute: Some(30),
                daily_cap: Some(40),
                ..Default::default()
            },
        );
        let guard = SendGuard::new(limits, CircuitPolicy::default());
        guard.set_slowdowns(HashMap::from([(
            Channel::Email,
            (
                0.5,
                "hard bounces 2.4% above the warn level of 2%".to_owned(),
            ),
        )]));
        // Half of 30/min: one send every four seconds, no burst.
        let mut went = Vec::new();
        for at in 0..60 {
            match guard.admit("email:graph", Channel::Email, t(at)).await {
                Verdict::Go => {
                    guard.record("email:graph", Health::Ok, true, t(at));
                    went.push(at);
                }
                Verdict::Wait { reason, .. } => {
                    assert!(reason.contains("slowed to 50%"), "{reason}");
                }
                Verdict::Probe => unreachable!(),
            }
        }
        assert_eq!(went, (0..60).step_by(4).collect::<Vec<_>>());
        // Half of the daily cap of 40: 20 today.
        let mut today = went.len();
        for at in (60..3600).step_by(4) {
            if guard.admit("email:graph", Channel::Email, t(at)).await == Verdict::Go {
                guard.record("email:graph", Health::Ok, true, t(at));
                today += 1;
            }
        }
        assert_eq!(today, 20);
        // Lifted: the configured rate again (another account, so the day's count is fresh).
        guard.set_slowdowns(HashMap::new());
        let burst = {
            let mut n = 0;
            for _ in 0..40 {
                if guard.admit("email:other", Channel::Email, t(4000)).await == Verdict::Go {
                    n += 1;
                }
            }
            n
        };
        assert_eq!(burst, 30);
    }

    #[tokio::test]
    async fn an_account_slowdown_or_halt_touches_only_that_account() {
        let mut limits: HashMap<Channel, AccountLimits> = HashMap::new();
        limits.insert(
            Channel::Email,
            AccountLimits {
                per_minute: Some(30),
                ..Default::default()
            },
        );
        let guard = SendGuard::new(limits, CircuitPolicy::default());
        let (maya, sam) = (
            "email:graph:maya@acme.example",
            "email:graph:sam@acme.example",
        );
        guard.set_account_slowdowns(HashMap::from([(
            maya.to_owned(),
            (
                0.5,
                "hard bounces 2.4% above the warn level of 2%".to_owned(),
            ),
        )]));
        let mut went = (0, 0);
        for at in 0..20 {
            for (account, n) in [(maya, &mut went.0), (sam, &mut went.1)] {
                if guard.admit(account, Channel::Email, t(at)).await == Verdict::Go {
                    *n += 1;
                }
            }
        }
        // Maya: one send every four seconds; Sam: the configured burst of 30 per minute.
        assert_eq!(went, (5, 20));
        assert!(
            guard.slowdown(Channel::Email).is_none(),
            "the channel is not slowed"
        );

        guard.set_account_halts(HashMap::from([(
            sam.to_owned(),
            "domain acme.example: complaints 0.5%".to_owned(),
        )]));
        let Verdict::Wait {
            until,
            reason,
            circuit_open,
        } = guard.admit(sam, Channel::Email, t(100)).await
        else {
            panic!("a halted account must not send")
        };
        assert!(
            circuit_open,
            "held like an open circuit, so rotation moves on"
        );
        assert_eq!(until, t(100) + Duration::minutes(15));
        assert!(
            reason.contains("halted by the deliverability monitor"),
            "{reason}"
        );
        assert_eq!(
            guard.admit(maya, Channel::Email, t(100)).await,
            Verdict::Go,
            "the other account is not halted"
        );
        guard.set_account_halts(HashMap::new());
        assert_eq!(guard.admit(sam, Channel::Email, t(101)).await, Verdict::Go);
    }

    #[tokio::test]
    async fn per_minute_quota_spreads_sends_on_the_injected_clock() {
        let mut limits: HashMap<Channel, AccountLimits> = HashMap::new();
        limits.insert(
            Channel::Email,
            AccountLimits {
                per_minute: Some(30),
                ..Default::default()
            },
        );
        let guard = SendGuard::new(limits, CircuitPolicy::default());
        let mut went = 0;
        let mut waits = Vec::new();
        for _ in 0..40 {
            match guard.admit("email:graph", Channel::Email, t(0)).await {
                Verdict::Go => went += 1,
                Verdict::Wait { until, .. } => waits.push(until),
                Verdict::Probe => unreachable!(),
            }
        }
        assert_eq!(went, 30, "a burst up to the quota, then waits");
        assert!(waits.iter().all(|w| *w > t(0) && *w <= t(2)), "{waits:?}");
        // Then one every two seconds: 30 in the next minute, 60 in the first 60 s at most.
        let mut sent = 0;
        for at in 1..=60 {
            if guard.admit("email:graph", Channel::Email, t(at)).await == Verdict::Go {
                sent += 1;
            }
        }
        assert_eq!(sent, 30, "30 per minute once the burst is spent");
    }

    #[tokio::test]
    async fn daily_cap_with_warm_up_ramp() {
        let day1 = t(0).date_naive();
        let limits = AccountLimits {
            daily_cap: Some(1000),
            warmup: vec![2, 5],
            warmup_start: Some(day1),
            ..Default::default()
        };
        assert_eq!(limits.cap_on(day1), Some(2));
        assert_eq!(limits.cap_on(day1 + Duration::days(1)), Some(5));
        assert_eq!(limits.cap_on(day1 + Duration::days(2)), Some(1000));
        let mut map = HashMap::new();
        map.insert(Channel::Email, limits);
        let guard = SendGuard::new(map, CircuitPolicy::default());
        for _ in 0..2 {
            assert_eq!(
                guard.admit("email:smtp", Channel::Email, t(0)).await,
                Verdict::Go
            );
            guard.record("email:smtp", Health::Ok, true, t(0));
        }
        let Verdict::Wait { until, reason, .. } =
            guard.admit("email:smtp", Channel::Email, t(10)).await
        else {
            panic!()
        };
        assert!(reason.contains("daily cap of 2"));
        assert_eq!(until.date_naive(), day1 + Duration::days(1));
    }

    #[tokio::test]
    async fn an_open_circuit_holds_sends_and_a_provider_pause_holds_the_account() {
        let policy = CircuitPolicy {
            min_calls: 2,
            ..CircuitPolicy::default()
        };
        let guard = SendGuard::new(HashMap::new(), policy);
        assert_eq!(
            guard.record("sms:twilio", Health::Failed, false, t(0)),
            None
        );
        assert_eq!(
            guard.record("sms:twilio", Health::Failed, false, t(1)),
            Some(Transition::Opened)
        );
        let Verdict::Wait { circuit_open, .. } =
            guard.admit("sms:twilio", Channel::Sms, t(2)).await
        else {
            panic!()
        };
        assert!(circuit_open);
        assert_eq!(
            guard.admit("sms:twilio", Channel::Sms, t(40)).await,
            Verdict::Probe
        );
        guard.pause("email:graph", t(100)).await;
        assert!(
            matches!(guard.admit("email:graph", Channel::Email, t(50)).await, Verdict::Wait { until, .. } if until == t(100))
        );
        assert_eq!(
            guard.admit("email:graph", Channel::Email, t(100)).await,
            Verdict::Go
        );
    }
}
