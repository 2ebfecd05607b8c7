//! Email through Microsoft Graph (Exchange Online), app-only.
//!
//! Invariants:
//! - Every send is two requests: create a draft (`POST /users/{mailbox}/messages`, which
//!   returns the `internetMessageId` and `conversationId` we need to match replies), then
//!   `POST .../messages/{id}/send`. A failure while creating the draft is never ambiguous —
//!   nothing was sent — so it is transient (or permanent/config by Graph's answer). Only a
//!   failure answering `/send` (timeout or dropped connection after the request was
//!   written, or a 500/502/504) is ambiguous.
//! - At most `max_concurrent_requests` (≤ 4, Exchange Online's per-mailbox limit) requests
//!   to the mailbox are in flight from one [`GraphMailbox`]; token requests do not count.
//! - A 401 fetches a new token and repeats the request once; a second 401 is a
//!   configuration error. Nothing else is retried here: retries wait in the ledger.
//! - Our delivery id travels in the `X-Engager-Delivery` header. Graph accepts only `X-`
//!   custom headers, so `List-Unsubscribe`/`List-Unsubscribe-Post` cannot be set: Graph mail
//!   has an unsubscribe link in its body but no one-click header.
//! - The provider reference of a delivery is the message's `internetMessageId`.

mod config;
mod errors;
mod inbox;
mod token;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use engager_domain::{Channel, DeliveryId, EmailAddress};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};
use url::Url;

pub use config::{GraphConfig, DEFAULT_AUTHORITY_URL, DEFAULT_GRAPH_URL, MAX_MAILBOX_CONCURRENCY};
pub use inbox::{
    classify as classify_inbound, InboundKind, InboundMessage, SentMessage, DELIVERY_HEADER,
};
pub use token::GRAPH_SCOPE;

use errors::Stage;
use inbox::{GraphMessage, MessagePage};
use token::TokenSource;

use crate::http::{self, Effect};
use crate::{Accepted, ChannelSender, DeliveryError, OutgoingMessage};

/// Ask Graph for ids that survive moving a message to Sent Items.
const PREFER_IMMUTABLE_IDS: &str = "IdType=\"ImmutableId\"";
/// Ask Graph for text bodies when reading.
const PREFER_TEXT_BODY: &str = "outlook.body-content-type=\"text\"";
/// Messages per page when reading.
const PAGE_SIZE: &str = "100";
/// A listing stops after this many pages (100,000 messages) rather than loop forever.
const MAX_PAGES: usize = 1000;
/// The fields read for inbound messages.
const SELECT_INBOUND: &str = "id,internetMessageId,conversationId,receivedDateTime,from,sender,subject,body,internetMessageHeaders";
/// The fields read for our sent messages.
const SELECT_SENT: &str = "id,internetMessageId,conversationId,sentDateTime,internetMessageHeaders";
/// The application permissions sending needs: creating drafts and sending them.
const REQUIRED_ROLES: &[(&str, &str)] = &[
    ("Mail.Send", "send mail"),
    ("Mail.ReadWrite", "create drafts (and read replies)"),
];

/// A draft created in the mailbox, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// Graph's (immutable) id of the message.
    pub id: String,
    /// The RFC 5322 Message-ID Exchange assigned; replies quote it in `In-Reply-To`.
    pub internet_message_id: String,
    /// Exchange's conversation id; replies share it.
    pub conversation_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DraftResponse {
    id: String,
    #[serde(default)]
    internet_message_id: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
}

struct Reply {
    body: Vec<u8>,
}

/// A client for one mailbox: token, concurrency limit, sending, reading.
pub struct GraphMailbox {
    config: GraphConfig,
    http: reqwest::Client,
    tokens: TokenSource,
    permits: Semaphore,
    user_url: Url,
}

impl std::fmt::Debug for GraphMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphMailbox")
            .field("mailbox", &self.config.mailbox)
            .field("user_url", &self.user_url.as_str())
            .finish_non_exhaustive()
    }
}

impl GraphMailbox {
    /// Checks the configuration and builds the client; no request is sent yet.
    pub fn new(config: GraphConfig) -> Result<Self, DeliveryError> {
        config.check()?;
        let mut user_url = Url::parse(&config.graph_url).map_err(|e| DeliveryError::Config {
            reason: format!("invalid configuration at key `channels.graph.graph_url`: {e}"),
        })?;
        user_url
            .path_segments_mut()
            .map_err(|()| DeliveryError::Config {
                reason: "invalid configuration at key `channels.graph.graph_url`: not a base URL"
                    .into(),
            })?
            .pop_if_empty()
            .push("users")
            .push(&config.mailbox);
        Ok(Self {
            http: http::client(config.request_timeout(), config.connect_timeout())?,
            tokens: TokenSource::new(&config),
            permits: Semaphore::new(config.max_concurrent_requests),
            user_url,
            config,
        })
    }

    /// The configuration the client was built from.
    pub fn config(&self) -> &GraphConfig {
        &self.config
    }

    /// How many access tokens were requested so far (for tests and diagnostics).
    pub fn tokens_fetched(&self) -> u64 {
        self.tokens.fetched()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.user_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        url
    }

    /// Sends one request to the mailbox under the concurrency limit, with one token refresh on
    /// 401; a non-success answer is classified for `stage`.
    async fn call(
        &self,
        stage: Stage,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        prefer: &[&str],
    ) -> Result<Reply, DeliveryError> {
        let effect = if stage == Stage::SendDraft {
            Effect::Send
        } else {
            Effect::NoSend
        };
        let what = url.path().to_owned();
        let mut refreshed = false;
        loop {
            let token = self.tokens.token(&self.http, &self.config).await?;
            let permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| DeliveryError::Config {
                    reason: "Graph: the mailbox client was shut down".into(),
                })?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, token.header.clone());
            for value in prefer {
                request = request.header("Prefer", *value);
            }
            request = match body {
                Some(json) => request.json(json),
                None if method == Method::POST => request.header(CONTENT_LENGTH, "0"),
                None => request,
            };
            let response = request
                .send()
                .await
                .map_err(|e| http::transport_error("Graph", &what, &e, effect))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = match response.bytes().await {
                Ok(bytes) => bytes.to_vec(),
                Err(e) if status.is_success() && effect == Effect::NoSend => {
                    return Err(http::transport_error("Graph", &what, &e, effect));
                }
                // The status alone decides: /send answers 202 without a body, and an error
                // status is classified even when its body was cut off.
                Err(_) => Vec::new(),
            };
            drop(permit);
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                debug!("Graph refused the token; fetching a new one.");
                self.tokens.invalidate(&token.header).await;
                refreshed = true;
                continue;
            }
            if status.is_success() {
                return Ok(Reply { body });
            }
            return Err(errors::classify(
                stage,
                &self.config.mailbox,
                status,
                &headers,
                &body,
            ));
        }
    }

    /// Creates the draft of `message` in the mailbox's Drafts folder.
    pub async fn create_draft(&self, message: &OutgoingMessage) -> Result<Draft, DeliveryError> {
        let subject = message
            .subject
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| DeliveryError::Permanent {
                reason: "an email needs a subject".into(),
            })?;
        let (content_type, content) = match &message.body_html {
            Some(html) => ("HTML", html.as_str()),
            None => ("Text", message.body_text.as_str()),
        };
        let mut recipient = json!({ "address": message.to });
        if let Some(name) = &message.to_name {
            recipient["name"] = json!(name);
        }
        let draft = json!({
            "subject": subject,
            "body": { "contentType": content_type, "content": content },
            "toRecipients": [{ "emailAddress": recipient }],
            "internetMessageHeaders": [
                { "name": DELIVERY_HEADER, "value": message.delivery_id.to_string() },
            ],
        });
        let reply = self
            .call(
                Stage::CreateDraft,
                Method::POST,
                &self.url(&["messages"]),
                Some(&draft),
                &[PREFER_IMMUTABLE_IDS],
            )
            .await?;
        let created: DraftResponse =
            serde_json::from_slice(&reply.body).map_err(|e| DeliveryError::Transient {
                reason: format!("Graph: unexpected answer to creating the draft: {e}"),
                retry_after: None,
            })?;
        let internet_message_id =
            created
                .internet_message_id
                .ok_or_else(|| DeliveryError::Transient {
                    reason: "Graph: the created draft has no internetMessageId".into(),
                    retry_after: None,
                })?;
        Ok(Draft {
            id: created.id,
            internet_message_id,
            conversation_id: created.conversation_id,
        })
    }

    /// Sends a draft. A definite refusal removes the draft (best effort); an ambiguous
    /// failure keeps it, as evidence for reconciliation.
    pub async fn send_draft(&self, draft: &Draft) -> Result<(), DeliveryError> {
        let result = self
            .call(
                Stage::SendDraft,
                Method::POST,
                &self.url(&["messages", &draft.id, "send"]),
                None,
                &[PREFER_IMMUTABLE_IDS],
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error @ DeliveryError::Ambiguous { .. }) => Err(DeliveryError::Ambiguous {
                reason: format!(
                    "{error} (draft {}, internetMessageId {})",
                    draft.id, draft.internet_message_id
                ),
            }),
            Err(error) => {
                if error.is_permanent() || matches!(error, DeliveryError::Config { .. }) {
                    self.delete_draft(draft).await;
                }
                Err(error)
            }
        }
    }

    async fn delete_draft(&self, draft: &Draft) {
        let url = self.url(&["messages", &draft.id]);
        if let Err(error) = self
            .call(
                Stage::Read,
                Method::DELETE,
                &url,
                None,
                &[PREFER_IMMUTABLE_IDS],
            )
            .await
        {
            debug!(%error, "Could not delete the draft of a refused message.");
        }
    }

    async fn list<T>(
        &self,
        folder: &str,
        query: &[(&str, String)],
        prefer: &[&str],
        mut visit: impl FnMut(GraphMessage) -> Option<T>,
    ) -> Result<Vec<T>, DeliveryError> {
        let mut url = self.url(&["mailFolders", folder, "messages"]);
        url.set_query(Some(&odata_query(query)));
        let mut found = Vec::new();
        for _ in 0..MAX_PAGES {
            let reply = self
                .call(Stage::Read, Method::GET, &url, None, prefer)
                .await?;
            let page: MessagePage =
                serde_json::from_slice(&reply.body).map_err(|e| DeliveryError::Transient {
                    reason: format!("Graph: unexpected message listing: {e}"),
                    retry_after: None,
                })?;
            found.extend(page.value.into_iter().filter_map(&mut visit));
            match page.next_link {
                Some(link) => url = self.next_link(&link)?,
                None => return Ok(found),
            }
        }
        warn!(
            pages = MAX_PAGES,
            "Graph listing stopped after the page limit."
        );
        Ok(found)
    }

    /// Follows `@odata.nextLink` verbatim, but only to the configured Graph host: the token
    /// must never be sent anywhere else.
    fn next_link(&self, link: &str) -> Result<Url, DeliveryError> {
        let next = Url::parse(link).map_err(|e| DeliveryError::Transient {
            reason: format!("Graph: unusable @odata.nextLink: {e}"),
            retry_after: None,
        })?;
        if next.origin() != self.user_url.origin() {
            return Err(DeliveryError::Config {
                reason: format!(
                    "Graph: @odata.nextLink points to {}, not to `channels.graph.graph_url`",
                    next.origin().ascii_serialization()
                ),
            });
        }
        Ok(next)
    }

    /// Messages received in the reply folder (`reply_folder`, default the inbox) at or after
    /// `since`, oldest first, classified as reply, auto-reply or non-delivery report, with
    /// the conversation id and `In-Reply-To`/`References` to match them to our sends.
    pub async fn poll_replies(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<InboundMessage>, DeliveryError> {
        let query = [
            (
                "$filter",
                format!("receivedDateTime ge {}", odata_time(since)),
            ),
            ("$orderby", "receivedDateTime asc".to_owned()),
            ("$top", PAGE_SIZE.to_owned()),
            ("$select", SELECT_INBOUND.to_owned()),
        ];
        self.list(
            &self.config.reply_folder,
            &query,
            &[PREFER_IMMUTABLE_IDS, PREFER_TEXT_BODY],
            |m| Some(m.into_inbound()),
        )
        .await
    }

    /// Our message for `delivery` in Sent Items, sent at or after `since`, found by its
    /// `X-Engager-Delivery` header: how an `unknown` delivery is reconciled.
    pub async fn find_sent(
        &self,
        delivery: DeliveryId,
        since: DateTime<Utc>,
    ) -> Result<Option<SentMessage>, DeliveryError> {
        let query = [
            ("$filter", format!("sentDateTime ge {}", odata_time(since))),
            ("$orderby", "sentDateTime asc".to_owned()),
            ("$top", PAGE_SIZE.to_owned()),
            ("$select", SELECT_SENT.to_owned()),
        ];
        let found = self
            .list("sentitems", &query, &[PREFER_IMMUTABLE_IDS], |m| {
                let sent = m.into_sent();
                (sent.delivery_id == Some(delivery)).then_some(sent)
            })
            .await?;
        Ok(found.into_iter().next())
    }

    /// Our message with this `internetMessageId` in Sent Items.
    pub async fn find_sent_by_message_id(
        &self,
        internet_message_id: &str,
    ) -> Result<Option<SentMessage>, DeliveryError> {
        let query = [
            (
                "$filter",
                format!("internetMessageId eq {}", odata_string(internet_message_id)),
            ),
            ("$select", SELECT_SENT.to_owned()),
        ];
        let found = self
            .list("sentitems", &query, &[PREFER_IMMUTABLE_IDS], |m| {
                Some(m.into_sent())
            })
            .await?;
        Ok(found.into_iter().next())
    }

    /// Our messages in Sent Items that belong to a conversation: matches a reply that lost
    /// its `In-Reply-To` to the delivery it answers.
    pub async fn sent_in_conversation(
        &self,
        conversation_id: &str,
    ) -> Result<Vec<SentMessage>, DeliveryError> {
        let query = [
            (
                "$filter",
                format!("conversationId eq {}", odata_string(conversation_id)),
            ),
            ("$top", PAGE_SIZE.to_owned()),
            ("$select", SELECT_SENT.to_owned()),
        ];
        self.list("sentitems", &query, &[PREFER_IMMUTABLE_IDS], |m| {
            Some(m.into_sent())
        })
        .await
    }

    /// Checks the secret (a token is issued), the granted permissions (when the token says)
    /// and that the mailbox exists and is reachable.
    pub async fn health_check(&self) -> Result<(), DeliveryError> {
        let token = self.tokens.token(&self.http, &self.config).await?;
        if let Some(roles) = &token.roles {
            let missing: Vec<String> = REQUIRED_ROLES
                .iter()
                .filter(|(role, _)| !roles.iter().any(|r| r == role))
                .map(|(role, why)| format!("{role} (to {why})"))
                .collect();
            if !missing.is_empty() {
                return Err(DeliveryError::Config {
                    reason: format!(
                        "Graph: the app registration lacks the application permission(s) {}; \
                         add them in Entra ID and grant admin consent (granted: {})",
                        missing.join(", "),
                        if roles.is_empty() {
                            "none".to_owned()
                        } else {
                            roles.join(", ")
                        }
                    ),
                });
            }
        }
        let mut url = self.url(&["mailFolders", "drafts"]);
        url.set_query(Some("$select=id"));
        self.call(Stage::Read, Method::GET, &url, None, &[]).await?;
        Ok(())
    }
}

/// Microsoft Graph email: one mailbox, draft then send.
#[derive(Debug, Clone)]
pub struct GraphChannel {
    mailbox: Arc<GraphMailbox>,
}

impl GraphChannel {
    /// Checks the configuration and builds the channel; no request is sent yet.
    pub fn new(config: GraphConfig) -> Result<Self, DeliveryError> {
        Ok(Self {
            mailbox: Arc::new(GraphMailbox::new(config)?),
        })
    }

    /// The mailbox client, shared with reply polling and reconciliation so that they count
    /// against the same concurrency limit and reuse the token.
    pub fn mailbox(&self) -> &Arc<GraphMailbox> {
        &self.mailbox
    }
}

#[async_trait]
impl ChannelSender for GraphChannel {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn name(&self) -> &str {
        "graph"
    }

    async fn health_check(&self) -> Result<(), DeliveryError> {
        self.mailbox.health_check().await
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        if message.channel != Channel::Email {
            return Err(DeliveryError::Config {
                reason: format!(
                    "a {} message was routed to the Graph email channel",
                    message.channel
                ),
            });
        }
        EmailAddress::parse(&message.to).map_err(|e| DeliveryError::Permanent {
            reason: format!("recipient address: {e}"),
        })?;
        let draft = self.mailbox.create_draft(message).await?;
        self.mailbox.send_draft(&draft).await?;
        info!(
            conversation_id = draft.conversation_id.as_deref().unwrap_or_default(),
            "Sent through Graph."
        );
        Ok(Accepted {
            provider_ref: draft.internet_message_id,
        })
    }

    async fn reconcile(
        &self,
        delivery: DeliveryId,
        since: DateTime<Utc>,
    ) -> Result<crate::Reconciled, DeliveryError> {
        Ok(match self.mailbox.find_sent(delivery, since).await? {
            Some(sent) => crate::Reconciled::Sent {
                provider_ref: sent.internet_message_id.unwrap_or(sent.id),
            },
            None => crate::Reconciled::NotFound,
        })
    }
}

/// `2026-03-02T09:15:00Z`: an OData DateTimeOffset literal.
fn odata_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An OData string literal: single quotes, inner quotes doubled.
fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A query string with `$` kept in names and spaces as `%20` (not `+`, which OData reads
/// literally in some places).
fn odata_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                percent_encode(name, true),
                percent_encode(value, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str, keep_dollar: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b',' => {
                out.push(char::from(byte));
            }
            b'$' if keep_dollar => out.push('$'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_queries_encode_values_but_keep_dollar_names() {
        assert_eq!(
            odata_query(&[
                (
                    "$filter",
                    format!("receivedDateTime ge {}", odata_time(DateTime::UNIX_EPOCH))
                ),
                ("$select", "id,subject".into()),
            ]),
            "$filter=receivedDateTime%20ge%201970-01-01T00%3A00%3A00Z&$select=id,subject"
        );
        assert_eq!(odata_string("<a'b@x>"), "'<a''b@x>'");
    }
}
