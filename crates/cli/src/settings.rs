//! Settings: defaults in code → `engager.toml` → `ENGAGER_SECTION__KEY` environment variables
//! → command-line flags. Unknown keys and invalid values fail at start, naming the key.
//! Secrets are `secrecy` strings: never printed, not in `Debug`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use chrono::Duration;
use engager_channels::Sender;
use engager_domain::frequency::FrequencyPolicy;
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
    /// Logging.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// The long-running mode.
    #[serde(default)]
    pub daemon: DaemonSettings,
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
}

impl std::fmt::Debug for LinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("public_base_url", &self.public_base_url)
            .field("unsubscribe_mailto", &self.unsubscribe_mailto)
            .field("secret", &"[redacted]")
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
}

impl Default for TimingSettings {
    fn default() -> Self {
        Self {
            default_time_zone: "America/New_York".into(),
            max_jitter_minutes: 90,
            sms_start_hour: 8,
            sms_end_hour: 21,
            max_sms_segments: 3,
        }
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
}

impl Default for FrequencySettings {
    fn default() -> Self {
        Self {
            min_gap_hours: 48,
            max_per_week: 3,
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
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            enabled: vec!["email".into(), "sms".into(), "linkedin".into()],
            outbox_dir: "outbox".into(),
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
            max_jitter: Duration::minutes(i64::from(self.timing.max_jitter_minutes)),
            sms_quiet_start_hour: self.timing.sms_start_hour,
            sms_quiet_end_hour: self.timing.sms_end_hour,
            max_sms_segments: self.timing.max_sms_segments,
            batch_size: self.dispatch.batch_size,
            lease: Duration::seconds(i64::from(self.dispatch.lease_seconds.max(1))),
            max_attempts: self.dispatch.max_attempts,
            retry_base_delay: Duration::seconds(i64::from(self.dispatch.retry_base_seconds.max(1))),
            retry_max_delay: Duration::seconds(i64::from(self.dispatch.retry_max_seconds.max(1))),
            enabled_channels: enabled,
            worker_id,
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
}
