//! Outbox channels: the embedded default until a provider is configured. Each message
//! becomes a real file — an RFC 5322 `.eml` for email, a JSON document for SMS (with its
//! segment count) and a task for a person for LinkedIn — named by delivery id, written
//! atomically (temp file + rename) so a crash never leaves half a message, and rewritten
//! identically if a send is repeated.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use engager_domain::sms::{has_stop_wording, sms_segments, SmsEncoding};
use engager_domain::Channel;
use serde_json::json;

use crate::{email, Accepted, ChannelSender, DeliveryError, OutgoingMessage};

/// LinkedIn's limit for a connection request note.
pub const LINKEDIN_NOTE_LIMIT: usize = 300;

/// Where an outbox channel writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// The outbox root; each channel writes to a sub-directory named after it.
    pub dir: PathBuf,
}

/// An outbox for one channel.
#[derive(Debug, Clone)]
pub struct OutboxChannel {
    channel: Channel,
    dir: PathBuf,
}

impl OutboxChannel {
    /// An outbox for `channel` under `config.dir/<channel>/`.
    pub fn new(channel: Channel, config: &OutboxConfig) -> Self {
        Self {
            channel,
            dir: config.dir.join(channel.as_str()),
        }
    }

    /// The directory files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_name(&self, message: &OutgoingMessage) -> String {
        let ext = match self.channel {
            Channel::Email => "eml",
            Channel::Sms | Channel::Linkedin => "json",
        };
        format!(
            "{:08}-{}-s{}.{ext}",
            message.delivery_id.0,
            message.campaign,
            message.step_index + 1
        )
    }

    fn render(&self, m: &OutgoingMessage) -> Result<Vec<u8>, DeliveryError> {
        match self.channel {
            Channel::Email => Ok(email::build_message(m)?.formatted()),
            Channel::Sms => {
                let seg = sms_segments(&m.body_text);
                let doc = json!({
                    "delivery_id": m.delivery_id.0,
                    "campaign": m.campaign,
                    "step": m.step_index + 1,
                    "to": m.to,
                    "from": m.sender.sms_from,
                    "body": m.body_text,
                    "encoding": match seg.encoding { SmsEncoding::Gsm7 => "GSM-7", SmsEncoding::Ucs2 => "UCS-2" },
                    "segments": seg.segments,
                    "has_stop_wording": has_stop_wording(&m.body_text),
                    "date": m.date.to_rfc3339(),
                });
                Ok(pretty(&doc))
            }
            Channel::Linkedin => {
                let kind = if m.body_text.chars().count() <= LINKEDIN_NOTE_LIMIT {
                    "connection_note"
                } else {
                    "message"
                };
                let doc = json!({
                    "task": "linkedin",
                    "delivery_id": m.delivery_id.0,
                    "campaign": m.campaign,
                    "step": m.step_index + 1,
                    "profile_url": m.to,
                    "lead_name": m.to_name,
                    "kind": kind,
                    "message": m.body_text,
                    "created": m.date.to_rfc3339(),
                    "due_by": m.due_by.map(|d| d.to_rfc3339()),
                    "status": "open",
                });
                Ok(pretty(&doc))
            }
        }
    }
}

fn pretty(doc: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(doc).unwrap_or_default();
    out.push(b'\n');
    out
}

#[async_trait]
impl ChannelSender for OutboxChannel {
    fn channel(&self) -> Channel {
        self.channel
    }

    fn name(&self) -> &str {
        "outbox"
    }

    async fn health_check(&self) -> Result<(), DeliveryError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| DeliveryError::Config {
                reason: format!("cannot create outbox directory {}: {e}", self.dir.display()),
            })
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        if message.channel != self.channel {
            return Err(DeliveryError::Config {
                reason: format!(
                    "a {} message was routed to the {} outbox",
                    message.channel, self.channel
                ),
            });
        }
        let bytes = self.render(message)?;
        let path = self.dir.join(self.file_name(message));
        let tmp = path.with_extension("tmp");
        let io_err = |e: std::io::Error| DeliveryError::Transient {
            reason: format!("cannot write {}: {e}", path.display()),
            retry_after: None,
        };
        tokio::fs::create_dir_all(&self.dir).await.map_err(io_err)?;
        tokio::fs::write(&tmp, &bytes).await.map_err(io_err)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io_err)?;
        Ok(Accepted {
            provider_ref: path.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Sender, Unsubscribe};
    use chrono::{DateTime, Utc};
    use engager_domain::{DeliveryId, EmailAddress, LeadId};

    fn message(channel: Channel, to: &str, body: &str) -> OutgoingMessage {
        OutgoingMessage {
            delivery_id: DeliveryId(7),
            lead_id: LeadId(3),
            campaign: "intro".into(),
            step_index: 0,
            channel,
            to: to.into(),
            to_name: Some("Jane Doe".into()),
            subject: Some("Quick question, Jane".into()),
            body_text: body.into(),
            body_html: None,
            date: DateTime::parse_from_rfc3339("2026-03-02T09:15:00Z")
                .unwrap()
                .with_timezone(&Utc),
            message_id: crate::email::message_id(DeliveryId(7), "intro", "acme.example"),
            sender: Sender {
                name: "Maya Chen".into(),
                email: EmailAddress::parse("maya@acme.example").unwrap(),
                postal_address: "1 Main St, Springfield".into(),
                sms_from: Some("+15005550006".into()),
            },
            unsubscribe: Some(Unsubscribe {
                url: "https://acme.example/u/TOKEN".into(),
                mailto: Some("mailto:unsubscribe@acme.example?subject=unsubscribe".into()),
            }),
            due_by: None,
        }
    }

    #[tokio::test]
    async fn email_outbox_writes_a_complete_rfc5322_message() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxChannel::new(
            Channel::Email,
            &OutboxConfig {
                dir: dir.path().into(),
            },
        );
        let m = message(Channel::Email, "jane@example.com", "Hi Jane,\n\nBody.\n");
        let accepted = outbox.send(&m).await.unwrap();
        let text = std::fs::read_to_string(&accepted.provider_ref).unwrap();
        assert!(text.contains("\r\n"), "RFC 5322 lines end in CRLF");
        // Unfold folded header lines (RFC 5322 §2.2.3) before looking for whole headers.
        let unfolded = text.replace("\r\n ", " ");
        for needle in [
            "From: \"Maya Chen\" <maya@acme.example>",
            "To: \"Jane Doe\" <jane@example.com>",
            "Subject: Quick question, Jane",
            "Date: Mon, 02 Mar 2026 09:15:00 +0000",
            &format!("Message-ID: {}", m.message_id),
            "List-Unsubscribe: <https://acme.example/u/TOKEN>, <mailto:unsubscribe@acme.example?subject=unsubscribe>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "X-Engager-Delivery: 7",
            "Hi Jane,",
        ] {
            assert!(unfolded.contains(needle), "missing {needle:?} in\n{text}");
        }
        // Sending again (a retry after a crash) rewrites the same bytes, not a second file.
        outbox.send(&m).await.unwrap();
        assert_eq!(std::fs::read_dir(outbox.dir()).unwrap().count(), 1);
        assert_eq!(
            std::fs::read_to_string(&accepted.provider_ref).unwrap(),
            text
        );
    }

    #[tokio::test]
    async fn html_bodies_are_multipart_with_a_stable_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxChannel::new(
            Channel::Email,
            &OutboxConfig {
                dir: dir.path().into(),
            },
        );
        let mut m = message(Channel::Email, "jane@example.com", "text");
        m.body_html = Some("<p>html</p>".into());
        let a = std::fs::read(outbox.send(&m).await.unwrap().provider_ref).unwrap();
        let b = std::fs::read(outbox.send(&m).await.unwrap().provider_ref).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("<p>html</p>"));
    }

    #[tokio::test]
    async fn sms_and_linkedin_outboxes() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            dir: dir.path().into(),
        };
        let sms = OutboxChannel::new(Channel::Sms, &config);
        let body = format!("{} Reply STOP to opt out", "x".repeat(150));
        let path = sms
            .send(&message(Channel::Sms, "+14155550100", &body))
            .await
            .unwrap()
            .provider_ref;
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(doc["segments"], 2);
        assert_eq!(doc["encoding"], "GSM-7");
        assert_eq!(doc["has_stop_wording"], true);
        let li = OutboxChannel::new(Channel::Linkedin, &config);
        let path = li
            .send(&message(
                Channel::Linkedin,
                "https://www.linkedin.com/in/jane",
                "Hi Jane, loved your post.",
            ))
            .await
            .unwrap()
            .provider_ref;
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(doc["kind"], "connection_note");
        assert_eq!(doc["status"], "open");
    }

    #[tokio::test]
    async fn a_bad_recipient_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxChannel::new(
            Channel::Email,
            &OutboxConfig {
                dir: dir.path().into(),
            },
        );
        let err = outbox
            .send(&message(Channel::Email, "not an address", "x"))
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "{err}");
    }
}
