//! The Graph email channel against the faithful fake in `engager-testkit`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use engager_channels::graph::{GraphChannel, GraphConfig, InboundKind};
use engager_channels::{ChannelSender, DeliveryError, OutgoingMessage, Sender, Unsubscribe};
use engager_domain::{Channel, DeliveryId, EmailAddress, LeadId};
use engager_testkit::faults::Fault;
use engager_testkit::graph::{FakeGraph, FakeGraphSetup, GraphEndpoint};
use serde_json::json;

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const SECRET: &str = "sampleCredentia1s~secret";
const MAILBOX: &str = "maya@acme-analytics.example";

async fn fake() -> FakeGraph {
    FakeGraph::start(FakeGraphSetup::new(TENANT, CLIENT, SECRET, MAILBOX))
        .await
        .unwrap()
}

fn config(fake: &FakeGraph) -> GraphConfig {
    let mut config = GraphConfig::new(TENANT, CLIENT, SECRET.into(), MAILBOX);
    config.authority_url = fake.authority_url().to_owned();
    config.graph_url = fake.graph_url();
    config.request_timeout_secs = 5.0;
    config
}

fn channel(fake: &FakeGraph) -> GraphChannel {
    GraphChannel::new(config(fake)).unwrap()
}

fn message(id: i64, to: &str) -> OutgoingMessage {
    OutgoingMessage {
        delivery_id: DeliveryId(id),
        lead_id: LeadId(3),
        campaign: "intro".into(),
        step_index: 0,
        channel: Channel::Email,
        to: to.into(),
        to_name: Some("Jane Doe".into()),
        subject: Some("Quick question, Jane".into()),
        body_text: "Hi Jane,\n\nBody.\n\nUnsubscribe: https://acme.example/u/TOKEN\n".into(),
        body_html: None,
        date: Utc::now(),
        message_id: engager_channels::email::message_id(DeliveryId(id), "intro", "acme.example"),
        sender: Sender {
            name: "Maya Chen".into(),
            email: EmailAddress::parse(MAILBOX).unwrap(),
            postal_address: "1 Main St, Springfield".into(),
            sms_from: None,
        },
        unsubscribe: Some(Unsubscribe {
            url: "https://acme.example/u/TOKEN".into(),
            mailto: None,
        }),
        due_by: None,
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn a_send_is_a_draft_then_send_with_our_header_and_returns_the_internet_message_id() {
    let fake = fake().await;
    let channel = channel(&fake);
    channel.health_check().await.unwrap();
    let accepted = channel.send(&message(7, "jane@example.com")).await.unwrap();

    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    let mail = &sent[0];
    assert_eq!(accepted.provider_ref, mail.internet_message_id);
    assert_eq!(mail.header("X-Engager-Delivery"), Some("7"));
    assert_eq!(
        mail.headers.len(),
        1,
        "only X- headers, and no List-Unsubscribe: {:?}",
        mail.headers
    );
    assert_eq!(mail.to, vec!["jane@example.com".to_owned()]);
    assert_eq!(mail.to_names, vec![Some("Jane Doe".to_owned())]);
    assert_eq!(mail.subject, "Quick question, Jane");
    assert!(
        mail.body.contains("https://acme.example/u/TOKEN"),
        "the unsubscribe link is in the body"
    );
    assert_eq!(mail.folder, "sentitems");
    assert!(!mail.conversation_id.is_empty());

    let calls: Vec<(String, String)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    let create = format!("/v1.0/users/{MAILBOX}/messages");
    let send = format!("{create}/{}/send", mail.id);
    assert!(calls.contains(&("POST".into(), format!("/{TENANT}/oauth2/v2.0/token"))));
    let position = |wanted: &str| {
        calls
            .iter()
            .position(|(m, p)| m == "POST" && p == wanted)
            .unwrap()
    };
    assert!(position(&create) < position(&send), "{calls:?}");

    // The reply-matching fields are found again in Sent Items.
    let found = channel
        .mailbox()
        .find_sent_by_message_id(&accepted.provider_ref)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.delivery_id, Some(DeliveryId(7)));
    assert_eq!(
        found.conversation_id.as_deref(),
        Some(mail.conversation_id.as_str())
    );
}

#[tokio::test]
async fn html_bodies_are_sent_as_html() {
    let fake = fake().await;
    let mut m = message(8, "jane@example.com");
    m.body_html = Some("<p>Hi <b>Jane</b></p>".into());
    channel(&fake).send(&m).await.unwrap();
    assert_eq!(fake.sent()[0].body_type, "html");
}

#[tokio::test]
async fn the_token_is_cached_shared_by_concurrent_sends_and_renewed_before_expiry() {
    let mut setup = FakeGraphSetup::new(TENANT, CLIENT, SECRET, MAILBOX);
    setup.token_lifetime = Duration::from_secs(2);
    let fake = FakeGraph::start(setup).await.unwrap();
    let channel = channel(&fake);
    let sends = (0..8).map(|i| {
        let channel = channel.clone();
        async move { channel.send(&message(100 + i, "jane@example.com")).await }
    });
    for result in futures_join_all(sends).await {
        result.unwrap();
    }
    assert_eq!(
        fake.tokens_issued(),
        1,
        "one token for eight concurrent sends"
    );
    channel
        .send(&message(200, "jane@example.com"))
        .await
        .unwrap();
    assert_eq!(fake.tokens_issued(), 1);
    // Renewal happens at half the lifetime (the margin is capped there), before expiry.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    channel
        .send(&message(201, "jane@example.com"))
        .await
        .unwrap();
    assert_eq!(fake.tokens_issued(), 2);
    assert_eq!(channel.mailbox().tokens_fetched(), 2);
    assert!(
        fake.requests().iter().all(|r| r.status != 401),
        "no request ever used an expired token"
    );
}

async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_then_a_second_refusal_is_a_config_error() {
    let fake = fake().await;
    let channel = channel(&fake);
    channel.send(&message(1, "jane@example.com")).await.unwrap();
    fake.revoke_tokens();
    channel.send(&message(2, "jane@example.com")).await.unwrap();
    assert_eq!(fake.tokens_issued(), 2);
    assert_eq!(fake.sent().len(), 2);

    let unauthorized = json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token validation failure."}});
    fake.fail_next(
        GraphEndpoint::CreateMessage,
        Fault::status(401, unauthorized.clone()),
    );
    fake.fail_next(
        GraphEndpoint::CreateMessage,
        Fault::status(401, unauthorized),
    );
    let err = channel
        .send(&message(3, "jane@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Config { .. }), "{err}");
    assert_eq!(fake.sent().len(), 2);
}

#[tokio::test]
async fn a_bad_secret_is_a_config_error_that_the_health_check_reports() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.client_secret = "the-secret-id-not-its-value".into();
    let channel = GraphChannel::new(config).unwrap();
    let health = channel.health_check().await.unwrap_err();
    match &health {
        DeliveryError::Config { reason } => {
            assert!(reason.contains("client secret was refused"), "{reason}");
            assert!(reason.contains("AADSTS7000215"), "{reason}");
            assert!(
                !reason.contains("the-secret-id-not-its-value"),
                "the secret leaked: {reason}"
            );
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    let err = channel
        .send(&message(1, "jane@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Config { .. }), "{err}");
    assert!(fake.messages().is_empty(), "no draft was created");

    let mut config = self::config(&fake);
    config.tenant_id = "unknown.example".into();
    let err = GraphChannel::new(config)
        .unwrap()
        .health_check()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tenant_id"), "{err}");
}

#[tokio::test]
async fn a_missing_mail_send_permission_is_a_config_error_that_the_health_check_reports() {
    let fake = fake().await;
    fake.set_roles(&["Mail.ReadWrite"]);
    let channel = channel(&fake);
    let health = channel.health_check().await.unwrap_err().to_string();
    assert!(health.contains("Mail.Send"), "{health}");
    let err = channel
        .send(&message(1, "jane@example.com"))
        .await
        .unwrap_err();
    match &err {
        DeliveryError::Config { reason } => {
            assert!(
                reason.contains("ErrorAccessDenied") && reason.contains("Mail.Send"),
                "{reason}"
            )
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(fake.sent().is_empty());
    assert!(fake.messages().is_empty(), "the refused draft was removed");
}

#[tokio::test]
async fn an_unknown_mailbox_is_a_config_error() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.mailbox = "nobody@acme-analytics.example".into();
    let err = GraphChannel::new(config)
        .unwrap()
        .health_check()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Config { reason } if reason.contains("ErrorInvalidUser") && reason.contains("channels.graph.mailbox")),
        "{err}"
    );
}

#[tokio::test]
async fn throttling_is_transient_with_the_fractional_retry_after() {
    let fake = fake().await;
    let channel = channel(&fake);
    let body = json!({"error": {"code": "TooManyRequests", "message": "Please retry again later.",
        "innerError": {"code": "429", "message": "Please retry after", "status": "429"}}});
    fake.fail_next(
        GraphEndpoint::SendDraft,
        Fault::status_retry_after(429, "2.128", body),
    );
    let err = channel
        .send(&message(1, "jane@example.com"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_millis(2128)));
    assert!(fake.sent().is_empty());

    let concurrency = json!({"error": {"code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit."}});
    fake.fail_next(
        GraphEndpoint::CreateMessage,
        Fault::status_retry_after(429, "0.5", concurrency),
    );
    let err = channel
        .send(&message(2, "jane@example.com"))
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_millis(500)));

    let quota = json!({"error": {"code": "ErrorQuotaExceeded", "message": "The mailbox quota was exceeded."}});
    fake.fail_next(GraphEndpoint::SendDraft, Fault::status(403, quota));
    assert!(channel
        .send(&message(3, "jane@example.com"))
        .await
        .unwrap_err()
        .is_transient());

    fake.fail_next(
        GraphEndpoint::SendDraft,
        Fault::status_retry_after(
            503,
            "3",
            json!({"error": {"code": "serviceNotAvailable", "message": "x"}}),
        ),
    );
    let err = channel
        .send(&message(4, "jane@example.com"))
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert!(fake.sent().is_empty());
}

#[tokio::test]
async fn at_most_four_requests_are_in_flight_per_mailbox() {
    let fake = fake().await;
    fake.set_latency(Duration::from_millis(50));
    let channel = channel(&fake);
    let sends = (0..16).map(|i| {
        let channel = channel.clone();
        async move { channel.send(&message(i, "jane@example.com")).await }
    });
    for result in futures_join_all(sends).await {
        result.unwrap();
    }
    assert_eq!(fake.sent().len(), 16);
    assert_eq!(
        fake.throttled(),
        0,
        "the client never tripped MailboxConcurrency"
    );
    assert_eq!(fake.peak_concurrency(), 4);
}

#[tokio::test]
async fn a_refused_recipient_is_permanent_and_its_draft_is_removed() {
    let fake = fake().await;
    let channel = channel(&fake);
    let err = channel
        .send(&message(1, "not an address"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    fake.fail_next(
        GraphEndpoint::SendDraft,
        Fault::status(400, json!({"error": {"code": "ErrorInvalidRecipients", "message": "At least one recipient isn't valid."}})),
    );
    let err = channel
        .send(&message(2, "jane@example.com"))
        .await
        .unwrap_err();
    assert!(
        err.is_permanent() && err.to_string().contains("ErrorInvalidRecipients"),
        "{err}"
    );
    assert!(fake.sent().is_empty());
    assert!(fake.messages().is_empty(), "the refused draft was removed");
}

#[tokio::test]
async fn a_connection_dropped_after_the_send_was_accepted_is_ambiguous_and_reconcilable() {
    let fake = fake().await;
    let channel = channel(&fake);
    let before = Utc::now() - chrono::Duration::seconds(5);
    fake.fail_next(GraphEndpoint::SendDraft, Fault::DropAfterAccept);
    let err = channel
        .send(&message(7, "jane@example.com"))
        .await
        .unwrap_err();
    assert!(err.is_ambiguous(), "{err}");
    assert_eq!(fake.sent().len(), 1, "the fake did send it");

    // Reconciliation finds it in Sent Items by our header.
    let found = channel
        .mailbox()
        .find_sent(DeliveryId(7), before)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.internet_message_id.as_deref(),
        Some(fake.sent()[0].internet_message_id.as_str())
    );
    assert_eq!(
        channel
            .mailbox()
            .find_sent(DeliveryId(8), before)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn only_failures_answering_send_are_ambiguous() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.request_timeout_secs = 0.3;
    let channel = GraphChannel::new(config).unwrap();

    // Creating the draft never sends: a dropped connection there is transient.
    fake.fail_next(GraphEndpoint::CreateMessage, Fault::DropAfterAccept);
    let err = channel
        .send(&message(1, "jane@example.com"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    fake.fail_next(
        GraphEndpoint::CreateMessage,
        Fault::status(
            504,
            json!({"error": {"code": "UnknownError", "message": ""}}),
        ),
    );
    assert!(channel
        .send(&message(2, "jane@example.com"))
        .await
        .unwrap_err()
        .is_transient());

    // A timeout after /send was accepted is ambiguous.
    fake.fail_next(
        GraphEndpoint::SendDraft,
        Fault::StallAfterAccept(Duration::from_secs(2)),
    );
    let err = channel
        .send(&message(3, "jane@example.com"))
        .await
        .unwrap_err();
    assert!(err.is_ambiguous(), "{err}");
    // So is a gateway timeout or a server error answering /send.
    fake.fail_next(
        GraphEndpoint::SendDraft,
        Fault::status(
            504,
            json!({"error": {"code": "UnknownError", "message": ""}}),
        ),
    );
    assert!(channel
        .send(&message(4, "jane@example.com"))
        .await
        .unwrap_err()
        .is_ambiguous());
    // A connection dropped before /send was processed is still ambiguous to the client.
    fake.fail_next(GraphEndpoint::SendDraft, Fault::DropBeforeAccept);
    assert!(channel
        .send(&message(5, "jane@example.com"))
        .await
        .unwrap_err()
        .is_ambiguous());
    assert_eq!(fake.sent().len(), 1, "only the stalled one was sent");

    // Nothing listening at all: nothing was sent.
    let mut config = self::config(&fake);
    config.graph_url = "http://127.0.0.1:9/v1.0".into();
    let unreachable = GraphChannel::new(config).unwrap();
    assert!(unreachable
        .send(&message(6, "jane@example.com"))
        .await
        .unwrap_err()
        .is_transient());
}

#[tokio::test]
async fn replies_auto_replies_and_bounces_are_polled_across_pages() {
    let fake = fake().await;
    let channel = channel(&fake);
    let accepted = channel.send(&message(7, "jane@example.com")).await.unwrap();
    let ours = fake.sent()[0].clone();
    let since = at("2026-03-02T00:00:00Z");
    for i in 0..10 {
        fake.deliver(
            &format!("old{i}@example.com"),
            "old",
            "before the window",
            &[],
            None,
            at("2026-03-01T12:00:00Z"),
        );
    }
    for i in 0..205 {
        let t = since + chrono::Duration::minutes(i + 1);
        fake.deliver(
            &format!("other{i}@example.com"),
            "Newsletter",
            "unrelated",
            &[],
            None,
            t,
        );
    }
    fake.deliver_auto_reply(&ours, at("2026-03-02T10:00:30Z"));
    fake.deliver_reply(
        &ours,
        "jane@example.com",
        "Sure, call me Tuesday.",
        at("2026-03-02T11:00:30Z"),
    );
    fake.deliver_bounce(&ours, "5.1.10", at("2026-03-02T12:00:30Z"));

    let inbound = channel.mailbox().poll_replies(since).await.unwrap();
    assert_eq!(inbound.len(), 208);
    assert!(
        inbound
            .windows(2)
            .all(|w| w[0].received_at <= w[1].received_at),
        "oldest first"
    );
    let lists = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/mailFolders/inbox/messages"))
        .collect::<Vec<_>>();
    assert_eq!(lists.len(), 3, "three pages of 100");

    let ours_matched: Vec<_> = inbound
        .iter()
        .filter(|m| m.conversation_id.as_deref() == Some(ours.conversation_id.as_str()))
        .collect();
    assert_eq!(ours_matched.len(), 3);
    let reply = ours_matched
        .iter()
        .find(|m| m.kind == InboundKind::Reply)
        .unwrap();
    assert_eq!(
        reply.in_reply_to.as_deref(),
        Some(accepted.provider_ref.as_str())
    );
    assert_eq!(reply.from.as_deref(), Some("jane@example.com"));
    assert!(reply.body_text.contains("Tuesday"));
    assert!(ours_matched
        .iter()
        .any(|m| m.kind == InboundKind::AutoReply));
    let bounce = ours_matched
        .iter()
        .find(|m| matches!(m.kind, InboundKind::NonDelivery { .. }))
        .unwrap();
    assert_eq!(
        bounce.kind,
        InboundKind::NonDelivery {
            status: Some("5.1.10".into()),
            hard: true,
            recipient: None
        }
    );
    assert_eq!(bounce.delivery_id(), Some(DeliveryId(7)));
    assert!(bounce
        .referenced_message_ids()
        .contains(&accepted.provider_ref.as_str()));

    // A reply that lost its In-Reply-To still maps to the delivery through its conversation.
    let in_conversation = channel
        .mailbox()
        .sent_in_conversation(&ours.conversation_id)
        .await
        .unwrap();
    assert_eq!(in_conversation.len(), 1);
    assert_eq!(in_conversation[0].delivery_id, Some(DeliveryId(7)));
}

#[tokio::test]
async fn a_next_link_to_another_host_is_not_followed() {
    let fake = fake().await;
    let channel = channel(&fake);
    fake.fail_next(
        GraphEndpoint::ListMessages,
        Fault::status(200, json!({"value": [], "@odata.nextLink": "https://attacker.example/v1.0/users/x/messages?$skip=10"})),
    );
    let err = channel
        .mailbox()
        .poll_replies(Utc::now())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Config { reason } if reason.contains("attacker.example")),
        "{err}"
    );
}
