//! Settings: defaults in code → `engager.toml` → `ENGAGER_SECTION__KEY` environment variables
//! → command-line flags. Unknown keys and invalid values fail at start, naming the key.
//! Secrets are `secrecy` strings: never printed, not in `Debug`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use chrono::Duration;
use engager_channels::Sender;
use engager_domain::best_time::{BestTimeModel, HourWeights, ScoreTable};
use engager_domain::frequency::{BudgetRules, Fatigue, FrequencyPolicy};
use engager_domain::holidays::HolidayCalendar;
use engager_domain::schedule::QuietHours;
use engager_domain::CountryCode;
use engager_domain::{Channel, EmailAddress, TimeZone};
use engager_engine::EngineConfig;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Every setting. Each section documents its keys in `config/engager.example.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where data lives.
    #[serde(default)]
    pub store: StoreSettings,
    /// Who sends.
    pub sender: SenderSettings,
    /// Links in messages.
    pub links: LinkSettings,
    /// Time zones and windows.
    #[serde(default)]
    pub timing: TimingSettings,
    /// The contact budget.
    #[serde(default)]
    pub frequency: FrequencySettings,
    /// The dispatcher.
    #[serde(default)]
    pub dispatch: DispatchSettings,
    /// Channels.
    #[serde(default)]
    pub channels: ChannelSettings,
    /// The Airtable source, when used.
    #[serde(default)]
    pub airtable: Option<engager_sources::airtable::AirtableConfig>,
    /// Rate limits and daily caps per channel's sending account.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Circuit breakers.
    #[serde(default)]
    pub circuit: CircuitSettings,
    /// The deliverability monitor.
    #[serde(default)]
    pub deliverability: DeliverabilitySettings,
    /// How long message texts and event details are kept.
    #[serde(default)]
    pub retention: RetentionSettings,
    /// Where alerts go.
    #[serde(default)]
    pub alerts: AlertSettings,
    /// Logging.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// The long-running mode.
    #[serde(default)]
    pub daemon: DaemonSettings,
    /// The HTTP server (`engager serve`).
    #[serde(default)]
    pub server: ServerSettings,
    /// Open and click tracking's endpoints (which campaigns track is set per campaign).
    #[serde(default)]
    pub tracking: TrackingSettings,
    /// Reading replies and bounces from `[channels.imap]` / `[channels.graph]`.
    #[serde(default)]
    pub inbound: InboundSettings,
    /// Holiday calendars.
    #[serde(default)]
    pub holidays: HolidaySettings,
    /// The best-time model.
    #[serde(default)]
    pub best_time: BestTimeSettings,
    /// AI personalization.
    #[serde(default)]
    pub ai: AiSettings,
    /// The compliance validators and company-wide legal bases.
    #[serde(default)]
    pub compliance: ComplianceSettings,
}

/// `[compliance]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplianceSettings {
    /// The regimes checked before every send: `gdpr`, `can_spam`, `tcpa`, `casl`.
    pub validators: Vec<String>,
    /// A documented legitimate-interest assessment covering B2B outreach to EU/EEA/UK leads.
    pub legitimate_interest_reference: Option<String>,
    /// The channels that assessment covers.
    pub legitimate_interest_channels: Vec<String>,
    /// How long CASL implied consent lasts when a record gives no expiry, in days.
    pub implied_consent_days: u32,
}

impl Default for ComplianceSettings {
    fn default() -> Self {
        Self {
            validators: ["gdpr", "can_spam", "tcpa", "casl"]
                .map(str::to_owned)
                .to_vec(),
            legitimate_interest_reference: None,
            legitimate_interest_channels: vec!["email".into(), "linkedin".into()],
            implied_consent_days: 730,
        }
    }
}

impl ComplianceSettings {
    /// The rules; errors name the key.
    pub fn rules(&self) -> Result<engager_domain::compliance::ComplianceRules> {
        let mut validators = Vec::new();
        for v in &self.validators {
            let r = v
                .parse::<engager_domain::compliance::Regime>()
                .map_err(|e| {
                    anyhow!("invalid configuration at key `compliance.validators`: {e}")
                })?;
            if !validators.contains(&r) {
                validators.push(r);
            }
        }
        let channels = self
            .legitimate_interest_channels
            .iter()
            .map(|c| {
                c.parse::<Channel>().map_err(|e| {
                    anyhow!("invalid configuration at key `compliance.legitimate_interest_channels`: {e}")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let reference = match &self.legitimate_interest_reference {
            Some(r) if r.trim().is_empty() => {
                return Err(anyhow!("invalid configuration at key `compliance.legitimate_interest_reference`: give the reference of the documented assessment, or leave the key out"));
            }
            other => other.clone(),
        };
        if self.implied_consent_days == 0 || self.implied_consent_days > 730 {
            return Err(anyhow!("invalid configuration at key `compliance.implied_consent_days`: expected 1 to 730 (CASL implied consent lasts at most two years), got {}", self.implied_consent_days));
        }
        Ok(engager_domain::compliance::ComplianceRules {
            validators,
            legitimate_interest: reference,
            legitimate_interest_channels: channels,
            implied_consent_days: i64::from(self.implied_consent_days),
            sender: Default::default(),
        })
    }
}

/// `[ai]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiSettings {
    /// Whether the planner personalizes with the model.
    pub enabled: bool,
    /// API root ending in `/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Bearer key (local servers need none).
    pub api_key: Option<SecretString>,
    /// Header carrying the key instead of `Authorization: Bearer` (`api-key` for Azure OpenAI).
    pub api_key_header: Option<String>,
    /// Whole-request timeout, seconds.
    pub timeout_seconds: u64,
    /// Sampling temperature (0 to 2).
    pub temperature: f32,
    /// Most completion tokens per request.
    pub max_completion_tokens: u32,
    /// Retries of 429 `rate_limit_exceeded` and 5xx.
    pub max_retries: u32,
    /// Longest wait before a retry, seconds.
    pub max_retry_wait_seconds: u64,
    /// Tokens one run may use.
    pub budget_tokens: Option<u64>,
    /// Model calls at once.
    pub concurrency: usize,
    /// Brand voice file.
    pub voice_file: Option<PathBuf>,
    /// Company knowledge file.
    pub knowledge_file: Option<PathBuf>,
    /// Domains links in AI text may point to.
    pub allowed_link_domains: Vec<String>,
    /// Forbidden phrases, on top of the built-in spam triggers.
    pub forbidden_phrases: Vec<String>,
    /// Word-trigram overlap with the previous message above which a draft is a near-duplicate.
    pub max_similarity: f64,
}

impl Default for AiSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key: None,
            api_key_header: None,
            timeout_seconds: 30,
            temperature: 0.4,
            max_completion_tokens: 800,
            max_retries: 3,
            max_retry_wait_seconds: 20,
            budget_tokens: None,
            concurrency: 4,
            voice_file: None,
            knowledge_file: None,
            allowed_link_domains: Vec::new(),
            forbidden_phrases: Vec::new(),
            max_similarity: 0.6,
        }
    }
}

impl std::fmt::Debug for AiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiSettings")
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("budget_tokens", &self.budget_tokens)
            .finish_non_exhaustive()
    }
}

impl AiSettings {
    /// The AI stage when enabled, parsed and with the brand files read; errors name the key.
    pub fn personalization(
        &self,
        config_dir: &Path,
        engine: &EngineConfig,
    ) -> Result<Option<engager_engine::personalization::AiPersonalization>> {
        if !self.enabled {
            return Ok(None);
        }
        self.stage(config_dir, engine).map(Some)
    }

    /// The AI stage whether or not it is enabled (`engager preview` shows the prompt either way).
    pub fn stage(
        &self,
        config_dir: &Path,
        engine: &EngineConfig,
    ) -> Result<engager_engine::personalization::AiPersonalization> {
        use engager_ai::gate::GateConfig;
        use engager_ai::llm::{LlmClient, LlmConfig};
        let bad =
            |key: &str, why: String| anyhow!("invalid configuration at key `ai.{key}`: {why}");
        let base_url: engager_ai::llm::Url = self.base_url.parse().map_err(|e| {
            bad(
                "base_url",
                format!("{e} (expected e.g. https://api.openai.com/v1)"),
            )
        })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(bad(
                "base_url",
                "expected an http:// or https:// URL".into(),
            ));
        }
        if self.model.trim().is_empty() {
            return Err(bad("model", "a model name is required".into()));
        }
        if self.timeout_seconds == 0 {
            return Err(bad("timeout_seconds", "must be at least 1".into()));
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(bad("temperature", "must be between 0 and 2".into()));
        }
        if !(0.0..=1.0).contains(&self.max_similarity) {
            return Err(bad("max_similarity", "must be between 0 and 1".into()));
        }
        if self.max_completion_tokens == 0 {
            return Err(bad("max_completion_tokens", "must be at least 1".into()));
        }
        let read = |key: &str, path: &Option<PathBuf>| -> Result<String> {
            let Some(path) = path else {
                return Ok(String::new());
            };
            let path = if path.is_absolute() {
                path.clone()
            } else {
                config_dir.join(path)
            };
            std::fs::read_to_string(&path)
                .map_err(|e| bad(key, format!("cannot read {}: {e}", path.display())))
        };
        let brand = engager_ai::prompt::Brand {
            voice: read("voice_file", &self.voice_file)?,
            knowledge: read("knowledge_file", &self.knowledge_file)?,
        };
        let mut llm = LlmConfig::new(base_url, self.model.trim());
        llm.api_key = self.api_key.clone();
        if let Some(header) = &self.api_key_header {
            let valid = !header.is_empty()
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(bad(
                    "api_key_header",
                    format!("{header:?} is not an HTTP header name (e.g. api-key)"),
                ));
            }
            llm.api_key_header = Some(header.clone());
        }
        llm.timeout = std::time::Duration::from_secs(self.timeout_seconds);
        llm.temperature = self.temperature;
        llm.max_completion_tokens = self.max_completion_tokens;
        llm.max_retries = self.max_retries;
        llm.max_retry_wait = std::time::Duration::from_secs(self.max_retry_wait_seconds);
        llm.budget_tokens = self.budget_tokens;
        let client = LlmClient::new(llm).map_err(|e| bad("base_url", e.to_string()))?;
        let gate = GateConfig {
            allowed_link_domains: self
                .allowed_link_domains
                .iter()
                .map(|d| d.trim().to_lowercase())
                .collect(),
            forbidden_phrases: self.forbidden_phrases.clone(),
            max_similarity: self.max_similarity,
            max_sms_segments: engine.max_sms_segments,
            sender_company: engine.sender_company.clone(),
        };
        Ok(engager_engine::personalization::AiPersonalization::new(
            engager_ai::personalize::AiPersonalizer::new(client, brand, gate),
            self.concurrency,
        ))
    }
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite:path.db` or `postgres://user@host/db`.
    #[serde(default = "default_store_url")]
    pub url: String,
}

fn default_store_url() -> String {
    "sqlite:engager.db".into()
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: default_store_url(),
        }
    }
}

/// `[sender]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderSettings {
    /// Display name.
    pub name: String,
    /// From address.
    pub email: String,
    /// Company name.
    pub company: String,
    /// Postal address printed in every email footer (CAN-SPAM).
    pub postal_address: String,
    /// SMS sender number.
    #[serde(default)]
    pub sms_from: Option<String>,
}

/// `[links]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// Public HTTPS base URL of the Engager server.
    pub public_base_url: String,
    /// Mailbox for mailto: unsubscribes.
    #[serde(default)]
    pub unsubscribe_mailto: Option<String>,
    /// Secret for signing link tokens (at least 16 characters).
    pub secret: SecretString,
    /// Earlier secrets, still accepted for unsubscribe links after a rotation (keep each for
    /// at least 30 days: CAN-SPAM wants links to work that long).
    #[serde(default)]
    pub previous_secrets: Vec<SecretString>,
}

impl std::fmt::Debug for LinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("public_base_url", &self.public_base_url)
            .field("unsubscribe_mailto", &self.unsubscribe_mailto)
            .field("secret", &"[redacted]")
            .field(
                "previous_secrets",
                &format!("[{} redacted]", self.previous_secrets.len()),
            )
            .finish()
    }
}

/// `[timing]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingSettings {
    /// Zone for leads whose zone cannot be told from their data.
    pub default_time_zone: String,
    /// Largest random delay added to a slot, in minutes.
    pub max_jitter_minutes: u32,
    /// First hour SMS may be sent, recipient local time.
    pub sms_start_hour: u32,
    /// Hour from which SMS may no longer be sent.
    pub sms_end_hour: u32,
    /// Most SMS segments per message.
    pub max_sms_segments: usize,
    /// Stricter SMS hours per subdivision (ISO 3166-2 code → `HH:MM-HH:MM`).
    pub sms_state_hours: BTreeMap<String, String>,
    /// Minutes SMS are planned before the end of the SMS hours, for a late dispatcher.
    pub sms_margin_minutes: u32,
    /// Days of each lead's touches and events the planner reads.
    pub history_days: u32,
}

impl Default for TimingSettings {
    fn default() -> Self {
        Self {
            default_time_zone: "America/New_York".into(),
            max_jitter_minutes: 90,
            sms_start_hour: 8,
            sms_end_hour: 21,
            max_sms_segments: 3,
            sms_state_hours: [("US-FL", "08:00-20:00"), ("US-MD", "08:00-20:00")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            sms_margin_minutes: 30,
            history_days: 90,
        }
    }
}

/// `[holidays]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HolidaySettings {
    /// Whether the built-in national holidays of the example countries apply.
    pub builtin: bool,
    /// More holidays per country (ISO 3166-1 alpha-2 → `YYYY-MM-DD` dates).
    pub dates: BTreeMap<String, Vec<String>>,
}

impl Default for HolidaySettings {
    fn default() -> Self {
        Self {
            builtin: true,
            dates: BTreeMap::new(),
        }
    }
}

/// `[best_time]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BestTimeSettings {
    /// Whether the planner picks the learned best hour (campaigns may override).
    pub enabled: bool,
    /// Open window days searched for the best hour.
    pub horizon_days: u32,
    /// Share of its score a slot loses per day of waiting.
    pub day_penalty: f64,
    /// Weighted events at which a lead's own pattern counts as much as the prior.
    pub pseudo_count: f64,
    /// Weight of an open.
    pub open_weight: f64,
    /// Weight of a click.
    pub click_weight: f64,
    /// Weight of a reply.
    pub reply_weight: f64,
    /// Hours over which one event spreads (kernel standard deviation).
    pub bandwidth_hours: f64,
    /// The prior weekday × hour table; rows left out keep the built-in ones.
    pub prior: WeekTable,
    /// Priors per industry (matched case-insensitively); rows left out keep `prior`'s.
    pub industries: BTreeMap<String, WeekTable>,
}

impl Default for BestTimeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            horizon_days: 5,
            day_penalty: 0.1,
            pseudo_count: 4.0,
            open_weight: 1.0,
            click_weight: 1.5,
            reply_weight: 2.0,
            bandwidth_hours: 1.0,
            prior: WeekTable::default(),
            industries: BTreeMap::new(),
        }
    }
}

/// Seven optional rows of 24 hourly weights (local time, 00 to 23).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeekTable {
    /// Monday.
    pub mon: Option<Vec<f64>>,
    /// Tuesday.
    pub tue: Option<Vec<f64>>,
    /// Wednesday.
    pub wed: Option<Vec<f64>>,
    /// Thursday.
    pub thu: Option<Vec<f64>>,
    /// Friday.
    pub fri: Option<Vec<f64>>,
    /// Saturday.
    pub sat: Option<Vec<f64>>,
    /// Sunday.
    pub sun: Option<Vec<f64>>,
}

impl WeekTable {
    fn weights(&self, base: &HourWeights, key: &str) -> Result<HourWeights> {
        let rows = [
            &self.mon, &self.tue, &self.wed, &self.thu, &self.fri, &self.sat, &self.sun,
        ]
        .map(|r| r.as_deref());
        HourWeights::from_rows(base, rows)
            .map_err(|e| anyhow!("invalid configuration at key `{key}`: {e}"))
    }
}

/// `[frequency]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrequencySettings {
    /// Minimum hours between two touches of one lead, across campaigns and channels.
    pub min_gap_hours: u32,
    /// Maximum touches of one lead in any 7 days.
    pub max_per_week: u32,
    /// Days without any touch after a reply (or a conversion).
    pub reply_cooldown_days: u32,
    /// Unanswered touches in a row before the gap lengthens.
    pub fatigue_after: u32,
    /// Gap multiplier per further unanswered touch (1.0 turns fatigue off).
    pub fatigue_factor: f64,
    /// Longest gap fatigue produces, hours.
    pub fatigue_max_gap_hours: u32,
    /// Days a lead is paused after "not interested" or a negative reply.
    pub negative_pause_days: u32,
    /// Limits per channel, counting only that channel's touches.
    pub channels: BTreeMap<String, engager_engine::campaign_file::ChannelLimitSpec>,
}

impl Default for FrequencySettings {
    fn default() -> Self {
        Self {
            min_gap_hours: 48,
            max_per_week: 3,
            reply_cooldown_days: 30,
            fatigue_after: 2,
            fatigue_factor: 1.5,
            fatigue_max_gap_hours: 336,
            negative_pause_days: 180,
            channels: BTreeMap::new(),
        }
    }
}

/// `[dispatch]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSettings {
    /// Rows per planner/dispatcher batch.
    pub batch_size: usize,
    /// Lease of a claim, in seconds.
    pub lease_seconds: u32,
    /// Attempts before a transient failure is final.
    pub max_attempts: u32,
    /// Hours after planning when a transient failure is final.
    pub max_age_hours: u32,
    /// First retry delay, seconds.
    pub retry_base_seconds: u32,
    /// Longest retry delay, seconds.
    pub retry_max_seconds: u32,
    /// Name of this worker in claims (default: host name and process id).
    pub worker_id: Option<String>,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            lease_seconds: 300,
            max_attempts: 5,
            max_age_hours: 72,
            retry_base_seconds: 60,
            retry_max_seconds: 3600,
            worker_id: None,
        }
    }
}

/// `[channels]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelSettings {
    /// Enabled channels.
    pub enabled: Vec<String>,
    /// Outbox directory (the embedded default channel for every enabled channel).
    pub outbox_dir: PathBuf,
    /// Email through Microsoft Graph, replacing the email outbox when set (one mailbox, or
    /// several in `[[channels.graph.accounts]]`).
    pub graph: Option<crate::accounts::Accounts<engager_channels::GraphConfig>>,
    /// SMS through Twilio, replacing the SMS outbox when set (one sender, or several in
    /// `[[channels.twilio.accounts]]`).
    pub twilio: Option<crate::accounts::Accounts<engager_channels::TwilioConfig>>,
    /// Email through an SMTP relay, replacing the email outbox when set (one From address,
    /// or several in `[[channels.smtp.accounts]]`).
    pub smtp: Option<crate::accounts::Accounts<engager_channels::SmtpConfig>>,
    /// The mailbox polled over IMAP for replies and bounces.
    pub imap: Option<engager_channels::ImapConfig>,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            enabled: vec!["email".into(), "sms".into(), "linkedin".into()],
            outbox_dir: "outbox".into(),
            graph: None,
            twilio: None,
            smtp: None,
            imap: None,
        }
    }
}

/// `[limits]`: one table per channel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Whether the rate limits, daily caps and provider pauses are kept in the database and
    /// shared by every process on it (several `engager run` on one PostgreSQL database or
    /// SQLite file), instead of in this process (the default).
    pub shared: bool,
    /// Email account limits.
    pub email: ChannelLimits,
    /// SMS account limits.
    pub sms: ChannelLimits,
    /// LinkedIn task limits.
    pub linkedin: ChannelLimits,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            shared: false,
            email: ChannelLimits {
                per_minute: Some(30),
                daily_cap: Some(10_000),
                ..Default::default()
            },
            sms: ChannelLimits {
                per_second: Some(1),
                daily_cap: Some(2_000),
                ..Default::default()
            },
            linkedin: ChannelLimits {
                daily_cap: Some(40),
                ..Default::default()
            },
        }
    }
}

/// `[limits.<channel>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelLimits {
    /// Sends per second.
    pub per_second: Option<u32>,
    /// Sends per minute.
    pub per_minute: Option<u32>,
    /// Sends per UTC day once warmed up.
    pub daily_cap: Option<u32>,
    /// Caps of the first days (warm-up ramp).
    pub warmup: Vec<u32>,
    /// First day of the ramp (YYYY-MM-DD).
    pub warmup_start: Option<String>,
}

/// `[circuit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitSettings {
    /// Failure ratio that opens the circuit.
    pub failure_ratio: f64,
    /// Fewest calls in the window before the ratio counts.
    pub min_calls: usize,
    /// Window of outcomes, seconds.
    pub window_seconds: u32,
    /// Time open before a probe, seconds.
    pub cool_down_seconds: u32,
    /// Consecutive successful probes that close it.
    pub close_after: u32,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_calls: 10,
            window_seconds: 60,
            cool_down_seconds: 30,
            close_after: 3,
        }
    }
}

/// `[alerts]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// URL receiving each alert as a JSON POST.
    pub webhook_url: Option<String>,
    /// Administrator address receiving each alert by email (through the email channel).
    pub email: Option<String>,
    /// Repeats of one alert within this many minutes are dropped.
    pub dedup_minutes: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            webhook_url: None,
            email: None,
            dedup_minutes: 60,
        }
    }
}

/// `[telemetry]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// `text` or `json`.
    pub format: String,
    /// Log filter, e.g. `info` or `engager_engine=debug`.
    pub level: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "warn".into(),
        }
    }
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address `engager serve` listens on (`--listen` overrides it).
    pub listen: String,
    /// The answer to HELP texts; default: company, sender, contact address and STOP wording.
    pub sms_help_reply: Option<String>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Seconds a request may take before it is answered 408.
    pub request_timeout_secs: u32,
    /// The dashboard's admin token (at least 32 characters; `ENGAGER_SERVER__ADMIN_TOKEN`).
    /// Without it `/dashboard` is disabled. Never printed.
    pub admin_token: Option<SecretString>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            sms_help_reply: None,
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 10,
            admin_token: None,
        }
    }
}

/// `[tracking]`: the open pixel and click redirect of `engager serve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingSettings {
    /// Opens and clicks this many seconds after the send (or sooner) are a machine's.
    pub machine_window_secs: u32,
    /// Most events written per transaction.
    pub batch_size: usize,
    /// Longest wait, milliseconds, before queued events are written.
    pub flush_ms: u64,
    /// Events queued for the writer before requests wait for room.
    pub queue: usize,
    /// Take the client address from `X-Forwarded-For` (set when behind a reverse proxy).
    pub trust_forwarded_for: bool,
}

impl Default for TrackingSettings {
    fn default() -> Self {
        Self {
            machine_window_secs: 10,
            batch_size: 500,
            flush_ms: 50,
            queue: 10_000,
            trust_forwarded_for: false,
        }
    }
}

/// `[daemon]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// Longest sleep between passes, seconds.
    pub tick_seconds: u32,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self { tick_seconds: 60 }
    }
}

/// `[inbound]`: polling the mailboxes for replies and bounces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundSettings {
    /// Whether `engager run` and the daemon read the mailboxes (when `[channels.imap]` or
    /// `[channels.graph]` is set).
    pub enabled: bool,
    /// Seconds between polls in the daemon (`engager run` polls once per run).
    pub poll_interval_seconds: u32,
    /// A reply stops the sequences of every lead at the replier's company domain too.
    pub stop_company_on_reply: bool,
    /// How many days back the first poll of a Graph mailbox reads.
    pub graph_first_lookback_days: u32,
}

impl Default for InboundSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval_seconds: 300,
            stop_company_on_reply: false,
            graph_first_lookback_days: 7,
        }
    }
}

impl Settings {
    /// The mailboxes to read replies and bounces from (none when `[inbound] enabled = false`),
    /// checked now so a bad setting fails at start, naming its key.
    pub fn inbound_poller(
        &self,
        config_dir: &Path,
    ) -> Result<engager_engine::inbound::InboundPoller> {
        use engager_engine::inbound::{InboundOptions, InboundPoller, MailSource};
        let mut sources = Vec::new();
        if self.inbound.enabled {
            if let Some(imap) = self.imap_config(config_dir) {
                let mailbox = engager_channels::ImapMailbox::new(&imap)
                    .map_err(|e| anyhow!("configuring IMAP: {e}"))?;
                sources.push(MailSource::imap(
                    mailbox,
                    &imap.username,
                    &imap.host,
                    &imap.folder,
                ));
            }
            // Every mailbox of the rotation receives replies: each is polled.
            for graph in self.channels.graph.iter().flat_map(|g| &g.list) {
                let mailbox = engager_channels::GraphMailbox::new(graph.config.clone())
                    .map_err(|e| anyhow!("configuring Microsoft Graph ({}): {e}", graph.key))?;
                sources.push(MailSource::graph(std::sync::Arc::new(mailbox)));
            }
        }
        if self.inbound.poll_interval_seconds == 0 {
            return Err(anyhow!(
                "invalid configuration at key `inbound.poll_interval_seconds`: must be at least 1"
            ));
        }
        Ok(InboundPoller::new(
            sources,
            InboundOptions {
                stop_company_on_reply: self.inbound.stop_company_on_reply,
                graph_first_lookback: chrono::Duration::days(i64::from(
                    self.inbound.graph_first_lookback_days,
                )),
                ..InboundOptions::default()
            },
        )
        .with_classifier(crate::reply::reply_classifier(self, config_dir)?))
    }
}

/// Loads settings from an optional file and the environment.
pub fn load(path: Option<&Path>) -> Result<Settings> {
    let mut figment = Figment::new();
    match path {
        Some(p) => {
            if !p.exists() {
                return Err(anyhow!(
                    "configuration file {} does not exist (run `engager init` to create one)",
                    p.display()
                ));
            }
            figment = figment.merge(Toml::file_exact(p));
        }
        None => {
            if Path::new("engager.toml").exists() {
                figment = figment.merge(Toml::file_exact("engager.toml"));
            }
        }
    }
    // Only ENGAGER_SECTION__KEY variables are settings; others (ENGAGER_CONFIG, test
    // variables) are not and must not be read as unknown keys.
    figment = figment.merge(
        Env::prefixed("ENGAGER_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    let origin = path.map_or_else(|| "engager.toml".to_owned(), |p| p.display().to_string());
    let settings: Settings = figment
        .extract()
        .map_err(|e| anyhow!(describe_figment(e, &origin)))?;
    Ok(settings)
}

fn describe_figment(error: figment::Error, origin: &str) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!(" at key `{}`", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map_or_else(|| origin.to_owned(), |s| s.to_string());
            format!("invalid configuration{key} ({source}): {}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Settings {
    /// The engine's view of the settings, parsed into domain types; errors name the key.
    pub fn engine_config(&self) -> Result<EngineConfig> {
        let email = EmailAddress::parse(&self.sender.email)
            .map_err(|e| anyhow!("invalid configuration at key `sender.email`: {e}"))?;
        if self.sender.postal_address.trim().is_empty() {
            return Err(anyhow!("invalid configuration at key `sender.postal_address`: a postal address is required in every commercial email (CAN-SPAM)"));
        }
        if !self.links.public_base_url.starts_with("https://")
            && !self.links.public_base_url.starts_with("http://localhost")
        {
            return Err(anyhow!("invalid configuration at key `links.public_base_url`: expected an https:// URL, got {:?}", self.links.public_base_url));
        }
        let secret = self.links.secret.expose_secret();
        if secret.len() < 16 {
            return Err(anyhow!("invalid configuration at key `links.secret`: use at least 16 characters (engager init generates one)"));
        }
        let zone = TimeZone::parse(&self.timing.default_time_zone)
            .map_err(|e| anyhow!("invalid configuration at key `timing.default_time_zone`: {e}"))?;
        if self.timing.sms_start_hour >= self.timing.sms_end_hour || self.timing.sms_end_hour > 24 {
            return Err(anyhow!("invalid configuration at keys `timing.sms_start_hour`/`timing.sms_end_hour`: need start < end <= 24"));
        }
        if self.timing.sms_start_hour < 8 || self.timing.sms_end_hour > 21 {
            return Err(anyhow!("invalid configuration at keys `timing.sms_start_hour`/`timing.sms_end_hour`: SMS may not be sent before 08:00 or after 21:00 recipient time (TCPA); a stricter window is allowed"));
        }
        let enabled = self
            .channels
            .enabled
            .iter()
            .map(|c| {
                c.parse::<Channel>()
                    .map_err(|e| anyhow!("invalid configuration at key `channels.enabled`: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        if self.dispatch.batch_size == 0 {
            return Err(anyhow!(
                "invalid configuration at key `dispatch.batch_size`: must be at least 1"
            ));
        }
        if self.dispatch.max_attempts == 0 {
            return Err(anyhow!(
                "invalid configuration at key `dispatch.max_attempts`: must be at least 1"
            ));
        }
        if !matches!(self.telemetry.format.as_str(), "text" | "json") {
            return Err(anyhow!("invalid configuration at key `telemetry.format`: expected \"text\" or \"json\", got {:?}", self.telemetry.format));
        }
        let worker_id = self.dispatch.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "host".into());
            format!("{host}-{}", std::process::id())
        });
        Ok(EngineConfig {
            sender: Sender {
                name: self.sender.name.clone(),
                email,
                postal_address: self.sender.postal_address.clone(),
                sms_from: self.sender.sms_from.clone(),
            },
            sender_company: self.sender.company.clone(),
            public_base_url: self.links.public_base_url.clone(),
            unsubscribe_mailto: self.links.unsubscribe_mailto.clone(),
            link_secret: secret.as_bytes().to_vec(),
            default_time_zone: zone,
            frequency: FrequencyPolicy {
                min_gap: Duration::hours(i64::from(self.frequency.min_gap_hours)),
                max_per_week: self.frequency.max_per_week,
            },
            budget: self.budget_rules()?,
            timing: self.timing_rules()?,
            max_jitter: Duration::minutes(i64::from(self.timing.max_jitter_minutes)),
            sms_quiet_start_hour: self.timing.sms_start_hour,
            sms_quiet_end_hour: self.timing.sms_end_hour,
            max_sms_segments: self.timing.max_sms_segments,
            batch_size: self.dispatch.batch_size,
            lease: Duration::seconds(i64::from(self.dispatch.lease_seconds.max(1))),
            max_attempts: self.dispatch.max_attempts,
            max_age: Duration::hours(i64::from(self.dispatch.max_age_hours.max(1))),
            retry_base_delay: Duration::seconds(i64::from(self.dispatch.retry_base_seconds.max(1))),
            retry_max_delay: Duration::seconds(i64::from(self.dispatch.retry_max_seconds.max(1))),
            enabled_channels: enabled,
            worker_id,
            compliance: self.compliance.rules()?,
        })
    }

    /// `[frequency]`'s rules beyond the gap and weekly cap; errors name the key.
    fn budget_rules(&self) -> Result<BudgetRules> {
        let f = &self.frequency;
        if f.max_per_week == 0 {
            return Err(anyhow!(
                "invalid configuration at key `frequency.max_per_week`: must be at least 1"
            ));
        }
        if !f.fatigue_factor.is_finite() || f.fatigue_factor < 1.0 {
            return Err(anyhow!("invalid configuration at key `frequency.fatigue_factor`: expected a number ≥ 1.0 (1.0 turns fatigue off), got {}", f.fatigue_factor));
        }
        let channels =
            engager_engine::campaign_file::channel_limits(&f.channels, "frequency.channels")
                .map_err(|(key, reason)| {
                    anyhow!("invalid configuration at key `{key}`: {reason}")
                })?;
        Ok(BudgetRules {
            channels,
            reply_cooldown: Duration::days(i64::from(f.reply_cooldown_days)),
            fatigue: Fatigue {
                after: f.fatigue_after,
                factor: f.fatigue_factor,
                max_gap: Duration::hours(i64::from(f.fatigue_max_gap_hours)),
            },
            negative_pause: Duration::days(i64::from(f.negative_pause_days)),
        })
    }

    /// `[timing]`, `[holidays]` and `[best_time]` as the engine's timing rules; errors name
    /// the key.
    fn timing_rules(&self) -> Result<engager_engine::timing::TimingRules> {
        let mut holidays = if self.holidays.builtin {
            HolidayCalendar::builtin()
        } else {
            HolidayCalendar::empty()
        };
        for (country, dates) in &self.holidays.dates {
            let key = format!("holidays.dates.{country}");
            let code = CountryCode::parse(country)
                .map_err(|e| anyhow!("invalid configuration at key `{key}`: {e}"))?;
            let parsed = dates
                .iter()
                .map(|d| {
                    chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").map_err(|_| {
                        anyhow!("invalid configuration at key `{key}`: {d:?} is not a date (expected \"YYYY-MM-DD\")")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            holidays = holidays.with_dates(&code, parsed);
        }
        let mut sms_subdivisions = Vec::new();
        for (code, hours) in &self.timing.sms_state_hours {
            let key = format!("timing.sms_state_hours.{code}");
            let valid_code = code.split_once('-').is_some_and(|(c, s)| {
                CountryCode::parse(c).is_ok() && !s.is_empty() && s.len() <= 3
            });
            if !valid_code {
                return Err(anyhow!("invalid configuration at key `{key}`: expected an ISO 3166-2 subdivision code such as US-FL"));
            }
            let parsed = QuietHours::parse(hours)
                .map_err(|e| anyhow!("invalid configuration at key `{key}`: {e}"))?;
            let base_start = chrono::NaiveTime::from_hms_opt(self.timing.sms_start_hour, 0, 0)
                .unwrap_or(chrono::NaiveTime::MIN);
            let base_end_hour = self.timing.sms_end_hour.min(24);
            let inside_base = parsed.start() >= base_start
                && (base_end_hour == 24
                    || parsed.end()
                        <= chrono::NaiveTime::from_hms_opt(base_end_hour, 0, 0)
                            .unwrap_or(chrono::NaiveTime::MIN));
            if !inside_base {
                return Err(anyhow!("invalid configuration at key `{key}`: {hours} must lie within the SMS hours {:02}:00-{:02}:00 (a state may only be stricter)", self.timing.sms_start_hour, self.timing.sms_end_hour));
            }
            sms_subdivisions.push((code.to_ascii_uppercase(), parsed));
        }
        let b = &self.best_time;
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(v as f32)
            } else {
                Err(anyhow!("invalid configuration at key `best_time.{key}`: expected a number ≥ 0, got {v}"))
            }
        };
        if !(0.0..1.0).contains(&b.day_penalty) {
            return Err(anyhow!("invalid configuration at key `best_time.day_penalty`: expected a share from 0.0 up to (not including) 1.0, got {}", b.day_penalty));
        }
        if b.horizon_days == 0 || b.horizon_days > 30 {
            return Err(anyhow!(
                "invalid configuration at key `best_time.horizon_days`: expected 1 to 30, got {}",
                b.horizon_days
            ));
        }
        let prior_weights = b
            .prior
            .weights(&HourWeights::industry_default(), "best_time.prior")?;
        let mut industries = Vec::new();
        for (name, table) in &b.industries {
            let w = table.weights(&prior_weights, &format!("best_time.industries.{name}"))?;
            industries.push((name.clone(), ScoreTable::prior(&w)));
        }
        Ok(engager_engine::timing::TimingRules {
            holidays,
            sms_subdivisions,
            sms_margin: Duration::minutes(i64::from(self.timing.sms_margin_minutes)),
            best_time: engager_engine::timing::BestTimeSettings {
                enabled: b.enabled,
                model: BestTimeModel {
                    pseudo_count: positive("pseudo_count", b.pseudo_count)?,
                    open_weight: positive("open_weight", b.open_weight)?,
                    click_weight: positive("click_weight", b.click_weight)?,
                    reply_weight: positive("reply_weight", b.reply_weight)?,
                    bandwidth_hours: positive("bandwidth_hours", b.bandwidth_hours)?.max(0.1),
                },
                horizon_days: b.horizon_days,
                day_penalty: b.day_penalty as f32,
                prior: ScoreTable::prior(&prior_weights),
                industries,
            },
            history: Duration::days(i64::from(self.timing.history_days.max(7))),
        })
    }

    /// The outbox directory, relative paths resolved against the configuration file's folder.
    pub fn outbox_dir(&self, config_dir: &Path) -> PathBuf {
        if self.channels.outbox_dir.is_absolute() {
            self.channels.outbox_dir.clone()
        } else {
            config_dir.join(&self.channels.outbox_dir)
        }
    }

    /// `[channels.smtp]` (its first account) with its key and CA paths resolved against the
    /// configuration file's folder; an error naming both keys when `[channels.graph]` is set
    /// too.
    pub fn smtp_config(&self, config_dir: &Path) -> Result<Option<engager_channels::SmtpConfig>> {
        Ok(self
            .smtp_accounts(config_dir)?
            .and_then(|a| a.list.into_iter().next())
            .map(|a| a.config))
    }

    /// Every account of `[channels.smtp]`, paths resolved as in [`Settings::smtp_config`].
    pub fn smtp_accounts(
        &self,
        config_dir: &Path,
    ) -> Result<Option<crate::accounts::Accounts<engager_channels::SmtpConfig>>> {
        let Some(smtp) = &self.channels.smtp else {
            return Ok(None);
        };
        if self.channels.graph.is_some() {
            return Err(anyhow!("invalid configuration at keys `channels.graph` and `channels.smtp`: both send email; configure one of them"));
        }
        let mut smtp = smtp.clone();
        for account in &mut smtp.list {
            Self::resolve_smtp_paths(&mut account.config, config_dir);
        }
        Ok(Some(smtp))
    }

    fn resolve_smtp_paths(smtp: &mut engager_channels::SmtpConfig, config_dir: &Path) {
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                config_dir.join(p)
            }
        };
        if let Some(dkim) = &mut smtp.dkim {
            dkim.private_key_path = resolve(&dkim.private_key_path);
        }
        smtp.ca_certificate_path = smtp.ca_certificate_path.as_deref().map(resolve);
    }

    /// `[channels.imap]` with its CA path resolved against the configuration file's folder.
    pub fn imap_config(&self, config_dir: &Path) -> Option<engager_channels::ImapConfig> {
        let mut imap = self.channels.imap.clone()?;
        imap.ca_certificate_path = imap.ca_certificate_path.as_deref().map(|p| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                config_dir.join(p)
            }
        });
        Some(imap)
    }

    /// The store URL, a relative SQLite path resolved against the configuration file's folder.
    pub fn store_url(&self, config_dir: &Path) -> String {
        match self.store.url.strip_prefix("sqlite:") {
            Some(path) if path != ":memory:" && !Path::new(path).is_absolute() => {
                format!("sqlite:{}", config_dir.join(path).display())
            }
            _ => self.store.url.clone(),
        }
    }
}

impl Settings {
    /// The per-channel limits and circuit policy, parsed; errors name the key.
    pub fn guard(&self) -> Result<engager_engine::guard::SendGuard> {
        use engager_engine::guard::{AccountLimits, SendGuard};
        let mut limits = std::collections::HashMap::new();
        for (channel, l, key) in [
            (Channel::Email, &self.limits.email, "limits.email"),
            (Channel::Sms, &self.limits.sms, "limits.sms"),
            (Channel::Linkedin, &self.limits.linkedin, "limits.linkedin"),
        ] {
            let warmup_start = l
                .warmup_start
                .as_deref()
                .map(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d"))
                .transpose()
                .map_err(|_| anyhow!("invalid configuration at key `{key}.warmup_start`: expected a date like 2026-03-02"))?;
            if !l.warmup.is_empty() && warmup_start.is_none() {
                return Err(anyhow!("invalid configuration at key `{key}.warmup_start`: a warm-up ramp needs its first day"));
            }
            limits.insert(
                channel,
                AccountLimits {
                    per_second: l.per_second,
                    per_minute: l.per_minute,
                    daily_cap: l.daily_cap,
                    warmup: l.warmup.clone(),
                    warmup_start,
                },
            );
        }
        let c = &self.circuit;
        if !(0.0..=1.0).contains(&c.failure_ratio) || c.failure_ratio == 0.0 {
            return Err(anyhow!(
                "invalid configuration at key `circuit.failure_ratio`: expected a number in (0, 1]"
            ));
        }
        let policy = engager_domain::circuit::CircuitPolicy {
            failure_ratio: c.failure_ratio,
            min_calls: c.min_calls.max(1),
            window: Duration::seconds(i64::from(c.window_seconds.max(1))),
            cool_down: Duration::seconds(i64::from(c.cool_down_seconds.max(1))),
            close_after: c.close_after.max(1),
        };
        // Mailbox rotation: each listed account's own limits over its channel's.
        let mut accounts = std::collections::HashMap::new();
        crate::accounts::account_limits(self.channels.graph.as_ref(), &limits, &mut accounts)?;
        crate::accounts::account_limits(self.channels.smtp.as_ref(), &limits, &mut accounts)?;
        crate::accounts::account_limits(self.channels.twilio.as_ref(), &limits, &mut accounts)?;
        let guard = SendGuard::new(limits, policy);
        Ok(if accounts.is_empty() {
            guard
        } else {
            guard.with_account_limits(accounts)
        })
    }

    /// The guard for sending through `store`: with `[limits] shared = true` its limiter is
    /// the database-backed one, shared by every process on that database.
    pub fn guard_on(
        &self,
        store: &std::sync::Arc<dyn engager_store::Store>,
    ) -> Result<engager_engine::guard::SendGuard> {
        let guard = self.guard()?;
        if !self.limits.shared {
            return Ok(guard);
        }
        let limiter =
            engager_engine::guard::StoreLimiter::new(store.clone(), guard.limits().clone())
                .with_account_limits(guard.account_limits().clone());
        Ok(guard.with_limiter(Box::new(limiter)))
    }

    /// The alert sinks; email alerts go through `email_channel`.
    pub fn alerter(
        &self,
        engine: &EngineConfig,
        email_channel: Option<std::sync::Arc<dyn engager_channels::ChannelSender>>,
    ) -> Result<engager_engine::alerts::Alerter> {
        use engager_engine::alerts::{AlertSink, Alerter, EmailSink, WebhookSink};
        let mut sinks: Vec<std::sync::Arc<dyn AlertSink>> = Vec::new();
        if let Some(url) = self.alerts.webhook_url.as_deref().filter(|u| !u.is_empty()) {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(anyhow!(
                    "invalid configuration at key `alerts.webhook_url`: expected an http(s) URL"
                ));
            }
            sinks.push(std::sync::Arc::new(
                WebhookSink::new(url).map_err(|e| anyhow!("alerts.webhook_url: {e}"))?,
            ));
        }
        if let Some(to) = self.alerts.email.as_deref().filter(|u| !u.is_empty()) {
            let to = EmailAddress::parse(to)
                .map_err(|e| anyhow!("invalid configuration at key `alerts.email`: {e}"))?;
            if let Some(channel) = email_channel {
                sinks.push(std::sync::Arc::new(EmailSink::new(
                    channel,
                    engine.sender.clone(),
                    to.as_str(),
                )));
            }
        }
        Ok(Alerter::new(
            sinks,
            Duration::minutes(i64::from(self.alerts.dedup_minutes.max(1))),
        ))
    }
}

/// Loads and validates, for commands that need the engine.
pub fn load_engine(path: Option<&Path>) -> Result<(Settings, EngineConfig)> {
    let settings = load(path)?;
    let engine = settings
        .engine_config()
        .context("checking the configuration")?;
    Ok((settings, engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml");
        let settings = load(Some(&path)).unwrap();
        settings.engine_config().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml"),
        )
        .unwrap();
        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, example.replace("max_per_week", "max_per_wek")).unwrap();
        let err = load(Some(&typo)).unwrap_err().to_string();
        assert!(
            err.contains("max_per_wek") && err.contains("frequency"),
            "{err}"
        );
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            example.replace("email = \"maya@", "email = \"maya at "),
        )
        .unwrap();
        let err = load(Some(&bad))
            .unwrap()
            .engine_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("sender.email"), "{err}");
        let err = load(Some(&dir.path().join("missing.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[tokio::test]
    async fn a_shared_limiter_is_configured_under_limits() {
        let dir = tempfile::tempdir().unwrap();
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml"),
        )
        .unwrap();
        assert!(example.contains("shared = false"));
        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, example.replace("shared = false", "sharde = true")).unwrap();
        let err = load(Some(&typo)).unwrap_err().to_string();
        assert!(err.contains("sharde") && err.contains("limits"), "{err}");
        let shared = dir.path().join("shared.toml");
        std::fs::write(&shared, example.replace("shared = false", "shared = true")).unwrap();
        let settings = load(Some(&shared)).unwrap();
        assert!(settings.limits.shared);
        let url = format!("sqlite:{}", dir.path().join("e.db").display());
        let store = engager_store::open(&url).await.unwrap();
        let guard = settings.guard_on(&store).unwrap();
        // The first SMS of the day goes; the second waits for the shared 1/s rate.
        let now = chrono::Utc::now();
        assert_eq!(
            guard.admit("sms:twilio", Channel::Sms, now).await,
            engager_engine::guard::Verdict::Go
        );
        let engager_engine::guard::Verdict::Wait { reason, .. } =
            guard.admit("sms:twilio", Channel::Sms, now).await
        else {
            panic!("the second send in the same second must wait");
        };
        assert!(reason.contains("(shared)"), "{reason}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml");
        let settings = load(Some(&path)).unwrap();
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains(settings.links.secret.expose_secret()),
            "{shown}"
        );
    }

    /// The example with the commented-out `[channels.<name>…]` blocks switched on: section
    /// lines and `key = value` lines lose their `# `, prose stays a comment.
    fn example_with(sections: &[&str]) -> String {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml"),
        )
        .unwrap();
        let mut active = false;
        let mut out = String::new();
        for line in example.lines() {
            if let Some(header) = line.strip_prefix("# [") {
                let name = header.trim_end_matches(']');
                active = sections
                    .iter()
                    .any(|s| name == *s || name.starts_with(&format!("{s}.")));
            } else if line.trim().is_empty() {
                active = false;
            }
            let body = line.strip_prefix("# ").unwrap_or(line);
            let is_setting = body.starts_with('[')
                || body
                    .split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            out.push_str(if active && is_setting { body } else { line });
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_documented_graph_and_twilio_sections_parse_and_replace_the_outboxes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engager.toml");
        std::fs::write(&path, example_with(&["channels.graph", "channels.twilio"])).unwrap();
        let settings = load(Some(&path)).unwrap();
        let engine = settings.engine_config().unwrap();
        let graph = settings
            .channels
            .graph
            .as_ref()
            .expect("[channels.graph] is set");
        assert_eq!(graph.first().mailbox, "maya@acme-analytics.example");
        assert!(settings.channels.twilio.is_some());
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("change-me"),
            "a secret leaked into Debug: {shown}"
        );
        let channels =
            crate::commands::configured_channels(&settings, &engine, dir.path()).unwrap();
        let names: Vec<(Channel, &str)> = channels
            .all()
            .iter()
            .map(|s| (s.channel(), s.name()))
            .collect();
        assert!(names.contains(&(Channel::Email, "graph")), "{names:?}");
        assert!(names.contains(&(Channel::Sms, "twilio")), "{names:?}");
        assert!(names.contains(&(Channel::Linkedin, "outbox")), "{names:?}");
        // Without the sections, every channel is an outbox.
        let plain = load(Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../config/engager.example.toml")
                .as_path(),
        ))
        .unwrap();
        let channels = crate::commands::configured_channels(
            &plain,
            &plain.engine_config().unwrap(),
            dir.path(),
        )
        .unwrap();
        assert!(channels.all().iter().all(|s| s.name() == "outbox"));
    }

    #[test]
    fn the_ai_section_is_off_by_default_and_its_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml"),
        )
        .unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let settings = load(Some(&write("plain.toml", example.clone()))).unwrap();
        let engine = settings.engine_config().unwrap();
        assert!(!settings.ai.enabled);
        assert!(settings
            .ai
            .personalization(dir.path(), &engine)
            .unwrap()
            .is_none());

        let typo = example.replace("max_similarity = 0.6", "max_similarty = 0.6");
        let err = load(Some(&write("typo.toml", typo)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_similarty") && err.contains("ai"), "{err}");

        let enabled = example.replace(
            "enabled = false\nbase_url = \"https://api.openai.com/v1\"",
            "enabled = true\nbase_url = \"ftp://models.example/v1\"\napi_key = \"sk-secret-value\"",
        );
        let settings = load(Some(&write("bad_url.toml", enabled.clone()))).unwrap();
        assert!(!format!("{settings:?}").contains("sk-secret-value"));
        let err = settings
            .ai
            .personalization(dir.path(), &engine)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ai.base_url"), "{err}");

        let missing_voice = enabled
            .replace("ftp://models.example/v1", "http://127.0.0.1:9/v1")
            .replace(
                "# voice_file = \"examples/brand/voice.md\"",
                "voice_file = \"no/such/voice.md\"",
            );
        let settings = load(Some(&write("voice.toml", missing_voice.clone()))).unwrap();
        let err = settings
            .ai
            .personalization(dir.path(), &engine)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ai.voice_file") && err.contains("no/such/voice.md"),
            "{err}"
        );

        let fine = missing_voice.replace("voice_file = \"no/such/voice.md\"", "# no voice file");
        let settings = load(Some(&write("fine.toml", fine))).unwrap();
        let stage = settings
            .ai
            .personalization(dir.path(), &engine)
            .unwrap()
            .unwrap();
        assert_eq!(stage.personalizer().client().model(), "gpt-4o-mini");
    }

    #[test]
    fn the_documented_smtp_and_imap_sections_parse_and_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engager.toml");
        std::fs::write(&path, example_with(&["channels.smtp", "channels.imap"])).unwrap();
        let settings = load(Some(&path)).unwrap();
        settings.engine_config().unwrap();
        let smtp = settings
            .smtp_config(dir.path())
            .unwrap()
            .expect("[channels.smtp] is set");
        assert_eq!(smtp.host, "smtp.acme-analytics.example");
        assert_eq!(
            smtp.dkim.as_ref().unwrap().private_key_path,
            dir.path().join("dkim.pem"),
            "relative key paths resolve against the configuration file's folder"
        );
        // Missing files: building says which key to fix.
        let err = engager_channels::SmtpChannel::new(&smtp)
            .unwrap_err()
            .to_string();
        assert!(err.contains("channels.smtp.ca_certificate_path"), "{err}");
        let cert = engager_testkit::local_server::SelfSigned::generate(dir.path());
        std::fs::copy(&cert.cert_path, dir.path().join("relay-ca.pem")).unwrap();
        let err = engager_channels::SmtpChannel::new(&smtp)
            .unwrap_err()
            .to_string();
        assert!(err.contains("channels.smtp.dkim.private_key_path"), "{err}");
        let key = engager_channels::dkim::generate_private_key_pem(
            engager_channels::dkim::DkimAlgorithm::Ed25519,
        )
        .unwrap();
        std::fs::write(dir.path().join("dkim.pem"), key).unwrap();
        let channel = engager_channels::SmtpChannel::new(&smtp).unwrap();
        assert_eq!(
            channel.dkim_dns_record().unwrap().0,
            "engager2026._domainkey.acme-analytics.example"
        );
        let imap = settings
            .imap_config(dir.path())
            .expect("[channels.imap] is set");
        assert_eq!(imap.folder, "INBOX");

        std::fs::write(&path, example_with(&["channels.smtp", "channels.graph"])).unwrap();
        let err = load(Some(&path))
            .unwrap()
            .smtp_config(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("channels.graph") && err.contains("channels.smtp"),
            "{err}"
        );
    }
}

/// `[deliverability]`: the monitor's window, minimum sample and warn/halt levels (percent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverabilitySettings {
    /// Whether the monitor halts and alerts (`engager deliverability` shows figures either way).
    pub enabled: bool,
    /// The rolling window, days.
    pub window_days: u32,
    /// Sends in the window before any rate is judged.
    pub min_sample: u64,
    /// Hard-bounce warn level, percent.
    pub bounce_warn_percent: f64,
    /// Hard-bounce halt level, percent.
    pub bounce_halt_percent: f64,
    /// Complaint warn level, percent.
    pub complaint_warn_percent: f64,
    /// Complaint halt level, percent.
    pub complaint_halt_percent: f64,
    /// Unsubscribe warn level, percent.
    pub unsubscribe_warn_percent: f64,
    /// Unsubscribe halt level, percent.
    pub unsubscribe_halt_percent: f64,
}

impl Default for DeliverabilitySettings {
    fn default() -> Self {
        let t = engager_domain::deliverability::Thresholds::default();
        Self {
            enabled: true,
            window_days: 7,
            min_sample: t.min_sample,
            bounce_warn_percent: t.hard_bounces.warn * 100.0,
            bounce_halt_percent: t.hard_bounces.halt * 100.0,
            complaint_warn_percent: t.complaints.warn * 100.0,
            complaint_halt_percent: t.complaints.halt * 100.0,
            unsubscribe_warn_percent: t.unsubscribes.warn * 100.0,
            unsubscribe_halt_percent: t.unsubscribes.halt * 100.0,
        }
    }
}

impl DeliverabilitySettings {
    /// The monitor's settings, checked; errors name the key.
    pub fn monitor(&self) -> Result<engager_engine::monitor::MonitorSettings> {
        use engager_domain::deliverability::{Levels, Thresholds};
        if self.window_days == 0 {
            return Err(anyhow!(
                "invalid configuration at key `deliverability.window_days`: must be at least 1"
            ));
        }
        let levels = |name: &str, warn: f64, halt: f64| -> Result<Levels> {
            for (key, v) in [("warn", warn), ("halt", halt)] {
                if !(0.0..=100.0).contains(&v) {
                    return Err(anyhow!("invalid configuration at key `deliverability.{name}_{key}_percent`: expected a percentage between 0 and 100"));
                }
            }
            if warn > halt {
                return Err(anyhow!("invalid configuration at key `deliverability.{name}_warn_percent`: the warn level ({warn}%) is above the halt level ({halt}%)"));
            }
            Ok(Levels {
                warn: warn / 100.0,
                halt: halt / 100.0,
            })
        };
        Ok(engager_engine::monitor::MonitorSettings {
            enabled: self.enabled,
            window: Duration::days(i64::from(self.window_days)),
            thresholds: Thresholds {
                min_sample: self.min_sample.max(1),
                hard_bounces: levels("bounce", self.bounce_warn_percent, self.bounce_halt_percent)?,
                complaints: levels(
                    "complaint",
                    self.complaint_warn_percent,
                    self.complaint_halt_percent,
                )?,
                unsubscribes: levels(
                    "unsubscribe",
                    self.unsubscribe_warn_percent,
                    self.unsubscribe_halt_percent,
                )?,
                ..Thresholds::default()
            },
        })
    }
}

/// `[retention]`: how long message texts and event details are kept (GDPR storage
/// limitation); the daemon applies it daily, `engager gdpr retention` on demand.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Whether the daemon applies the policy.
    pub enabled: bool,
    /// Days a finished message's subject and body are kept.
    pub message_days: u32,
    /// Days event details, decision-trace gates, SMS received, AI drafts and closed tasks'
    /// texts are kept.
    pub detail_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            message_days: 180,
            detail_days: 365,
        }
    }
}

impl RetentionSettings {
    /// The cutoffs at `now`; errors name the key.
    pub fn cutoffs(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<engager_store::gdpr::RetentionCutoffs> {
        for (key, days) in [
            ("message_days", self.message_days),
            ("detail_days", self.detail_days),
        ] {
            if days == 0 {
                return Err(anyhow!(
                    "invalid configuration at key `retention.{key}`: must be at least 1 (set `enabled = false` to keep everything)"
                ));
            }
        }
        Ok(engager_store::gdpr::RetentionCutoffs {
            bodies_before: now - Duration::days(i64::from(self.message_days)),
            details_before: now - Duration::days(i64::from(self.detail_days)),
        })
    }
}
