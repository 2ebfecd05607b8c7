//! Alerts to administrators: a webhook receiving JSON and email to an admin address.
//!
//! Invariants: one outage is one alert (repeats of the same kind for the same account are
//! dropped for a configurable window); alerts carry diagnostics but never secrets or a
//! lead's contact details; a failing sink is logged and never stops sending.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use engager_channels::{ChannelSender, OutgoingMessage, Sender};
use engager_domain::{Channel, DeliveryId, LeadId};
use serde_json::json;
use tracing::{error, warn};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// An account's circuit opened.
    CircuitOpened,
    /// A provider refused the account's credentials or configuration.
    AuthFailure,
    /// Deliveries whose outcome is unknown wait for reconciliation.
    UnknownDeliveries,
    /// A delivery used up its attempts or age and failed.
    RetryBudgetExhausted,
    /// A sending account's bounce, complaint or unsubscribe rate crossed its warn level.
    DeliverabilityWarning,
    /// A sending account's rates crossed a halt level: sending on it stopped.
    SendingHalted,
    /// A campaign's or channel's rate moved significantly for the worse.
    Anomaly,
    /// A campaign was halted for a compliance problem.
    ComplianceHalt,
}

impl AlertKind {
    /// The name used in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::CircuitOpened => "circuit_opened",
            AlertKind::AuthFailure => "account_auth_failure",
            AlertKind::UnknownDeliveries => "deliveries_unknown",
            AlertKind::RetryBudgetExhausted => "retry_budget_exhausted",
            AlertKind::DeliverabilityWarning => "deliverability_warning",
            AlertKind::SendingHalted => "sending_halted",
            AlertKind::Anomaly => "anomaly",
            AlertKind::ComplianceHalt => "compliance_halt",
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Its kind.
    pub kind: AlertKind,
    /// The sending account (`channel:provider`) concerned.
    pub account: String,
    /// One sentence for a person.
    pub summary: String,
    /// Diagnostic details (no secrets, no contact details).
    pub details: Vec<(String, String)>,
    /// When it was raised.
    pub at: DateTime<Utc>,
}

impl Alert {
    /// The JSON a webhook receives.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "source": "engager",
            "kind": self.kind.as_str(),
            "account": self.account,
            "summary": self.summary,
            "details": self.details.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "at": self.at.to_rfc3339(),
        })
    }
}

/// Somewhere alerts go.
#[async_trait]
pub trait AlertSink: Send + Sync {
    /// A name for logs.
    fn name(&self) -> &str;
    /// Delivers one alert.
    async fn deliver(&self, alert: &Alert) -> Result<(), String>;
}

/// POSTs each alert as JSON to a URL.
pub struct WebhookSink {
    url: String,
    client: reqwest::Client,
}

impl WebhookSink {
    /// A sink for `url` with a short timeout.
    pub fn new(url: &str) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            url: url.to_owned(),
            client,
        })
    }
}

#[async_trait]
impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .json(&alert.to_json())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {}", response.status()))
        }
    }
}

/// Emails each alert to an administrator through an email channel.
pub struct EmailSink {
    channel: Arc<dyn ChannelSender>,
    sender: Sender,
    to: String,
}

impl EmailSink {
    /// A sink that sends to `to` through `channel`.
    pub fn new(channel: Arc<dyn ChannelSender>, sender: Sender, to: &str) -> Self {
        Self {
            channel,
            sender,
            to: to.to_owned(),
        }
    }
}

#[async_trait]
impl AlertSink for EmailSink {
    fn name(&self) -> &str {
        "email"
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), String> {
        let mut body = format!("{}\n\n", alert.summary);
        for (k, v) in &alert.details {
            body.push_str(&format!("{k}: {v}\n"));
        }
        body.push_str(&format!(
            "\nRaised at {} by Engager.\n",
            alert.at.to_rfc3339()
        ));
        let stamp = alert.at.timestamp_millis();
        let message = OutgoingMessage {
            delivery_id: DeliveryId(0),
            lead_id: LeadId(0),
            campaign: format!("alert-{}-{stamp}", alert.kind.as_str()),
            step_index: 0,
            channel: Channel::Email,
            to: self.to.clone(),
            to_name: None,
            subject: Some(format!("[Engager alert] {}", alert.summary)),
            body_text: body,
            body_html: None,
            date: alert.at,
            message_id: format!(
                "<alert.{}.{stamp}@{}>",
                alert.kind.as_str(),
                self.sender.email.domain()
            ),
            sender: self.sender.clone(),
            unsubscribe: None,
            due_by: None,
        };
        self.channel
            .send(&message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Raises alerts to every sink, one per outage.
pub struct Alerter {
    sinks: Vec<Arc<dyn AlertSink>>,
    window: Duration,
    last: Mutex<HashMap<(AlertKind, String), DateTime<Utc>>>,
    raised: Mutex<Vec<Alert>>,
}

impl Alerter {
    /// An alerter; repeats of an alert within `window` are dropped.
    pub fn new(sinks: Vec<Arc<dyn AlertSink>>, window: Duration) -> Self {
        Self {
            sinks,
            window,
            last: Mutex::new(HashMap::new()),
            raised: Mutex::new(Vec::new()),
        }
    }

    /// An alerter that only logs.
    pub fn log_only() -> Self {
        Self::new(Vec::new(), Duration::hours(1))
    }

    /// Raises an alert unless the same kind for the same account was raised within the
    /// window; returns whether it went out.
    pub async fn raise(&self, alert: Alert) -> bool {
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let key = (alert.kind, alert.account.clone());
            if let Some(prev) = last.get(&key) {
                if alert.at - *prev < self.window {
                    return false;
                }
            }
            last.insert(key, alert.at);
        }
        warn!(kind = alert.kind.as_str(), account = %alert.account, summary = %alert.summary, "Alert raised.");
        for sink in &self.sinks {
            if let Err(e) = sink.deliver(&alert).await {
                error!(sink = sink.name(), error = %e, "Could not deliver an alert.");
            }
        }
        self.raised
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(alert);
        true
    }

    /// Every alert raised so far by this process.
    pub fn raised(&self) -> Vec<Alert> {
        self.raised
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Mutex<Vec<Alert>>);

    #[async_trait]
    impl AlertSink for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        async fn deliver(&self, alert: &Alert) -> Result<(), String> {
            self.0.lock().unwrap().push(alert.clone());
            Ok(())
        }
    }

    fn alert(kind: AlertKind, account: &str, minute: i64) -> Alert {
        Alert {
            kind,
            account: account.into(),
            summary: "x".into(),
            details: vec![("failures".into(), "7".into())],
            at: DateTime::from_timestamp(1_770_000_000 + minute * 60, 0).unwrap(),
        }
    }

    #[tokio::test]
    async fn one_outage_is_one_alert() {
        let sink = Arc::new(Recorder(Mutex::new(Vec::new())));
        let alerter = Alerter::new(vec![sink.clone()], Duration::minutes(60));
        assert!(
            alerter
                .raise(alert(AlertKind::CircuitOpened, "sms:twilio", 0))
                .await
        );
        assert!(
            !alerter
                .raise(alert(AlertKind::CircuitOpened, "sms:twilio", 5))
                .await
        );
        assert!(
            alerter
                .raise(alert(AlertKind::CircuitOpened, "email:graph", 5))
                .await
        );
        assert!(
            alerter
                .raise(alert(AlertKind::AuthFailure, "sms:twilio", 5))
                .await
        );
        assert!(
            alerter
                .raise(alert(AlertKind::CircuitOpened, "sms:twilio", 61))
                .await
        );
        assert_eq!(sink.0.lock().unwrap().len(), 4);
        let payload = alert(AlertKind::CircuitOpened, "sms:twilio", 0).to_json();
        assert_eq!(payload["kind"], "circuit_opened");
        assert_eq!(payload["details"]["failures"], "7");
    }
}
