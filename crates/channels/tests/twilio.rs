//! The Twilio SMS channel and webhook parsing against the faithful fake in `engager-testkit`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use engager_channels::twilio::webhook::{
    self, InboundIntent, InboundSms, MessageStatus, StatusCallback,
};
use engager_channels::twilio::{TwilioChannel, TwilioConfig};
use engager_channels::{ChannelSender, DeliveryError, OutgoingMessage, Sender};
use engager_domain::sms::SmsEncoding;
use engager_domain::{Channel, DeliveryId, EmailAddress, LeadId};
use engager_testkit::faults::Fault;
use engager_testkit::twilio::{FakeTwilio, FakeTwilioSetup};
use serde_json::json;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6";
const FROM: &str = "+14155550123";

async fn fake() -> FakeTwilio {
    FakeTwilio::start(FakeTwilioSetup::new(SID, TOKEN))
        .await
        .unwrap()
}

fn config(fake: &FakeTwilio) -> TwilioConfig {
    let mut config = TwilioConfig::new(SID, TOKEN.into(), FROM);
    config.api_url = fake.api_url().to_owned();
    config.status_callback = Some("https://engager.acme.example/webhooks/twilio/status".into());
    config.request_timeout_secs = 5.0;
    config
}

fn sms(id: i64, to: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        delivery_id: DeliveryId(id),
        lead_id: LeadId(3),
        campaign: "intro".into(),
        step_index: 1,
        channel: Channel::Sms,
        to: to.into(),
        to_name: None,
        subject: None,
        body_text: body.into(),
        body_html: None,
        date: Utc::now(),
        message_id: String::new(),
        sender: Sender {
            name: "Maya Chen".into(),
            email: EmailAddress::parse("maya@acme.example").unwrap(),
            postal_address: "1 Main St".into(),
            sms_from: Some("+14155559999".into()),
        },
        unsubscribe: None,
        due_by: None,
    }
}

fn error(code: u32, status: u16) -> serde_json::Value {
    json!({"code": code, "message": "m", "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status})
}

#[tokio::test]
async fn a_send_returns_the_sid_and_its_segments_match_twilios_count() {
    let fake = fake().await;
    let channel = TwilioChannel::new(config(&fake)).unwrap();
    channel.health_check().await.unwrap();
    let body = format!(
        "{} Reply STOP to opt out.",
        "Quick question about your pipeline. ".repeat(5)
    );
    let accepted = channel.send(&sms(1, "+14155550100", &body)).await.unwrap();
    let unicode = "Hola 👋 ¿hablamos mañana? Responde STOP para no recibir más. ".repeat(2);
    channel
        .send(&sms(2, "+14155550101", &unicode))
        .await
        .unwrap();

    let log = fake.accepted();
    assert_eq!(log.len(), 2);
    assert_eq!(accepted.provider_ref, log[0].sid);
    assert!(log[0].sid.starts_with("SM") && log[0].sid.len() == 34);
    let ours = TwilioChannel::segments(&body);
    assert_eq!(ours.encoding, SmsEncoding::Gsm7);
    assert_eq!(ours.segments, 2);
    assert_eq!(log[0].num_segments, ours.segments);
    let ours = TwilioChannel::segments(&unicode);
    assert_eq!(ours.encoding, SmsEncoding::Ucs2);
    assert_eq!(log[1].num_segments, ours.segments);
    assert_eq!(log[0].from.as_deref(), Some(FROM));
    assert_eq!(
        log[0].status_callback.as_deref(),
        Some("https://engager.acme.example/webhooks/twilio/status")
    );
    assert_eq!(log[0].body, body);
}

#[tokio::test]
async fn the_sender_comes_from_config_or_a_messaging_service_or_the_sender_settings() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.from = None;
    let channel = TwilioChannel::new(config.clone()).unwrap();
    channel.send(&sms(1, "+14155550100", "Hi")).await.unwrap();
    assert_eq!(fake.accepted()[0].from.as_deref(), Some("+14155559999"));
    let mut no_sender = sms(2, "+14155550100", "Hi");
    no_sender.sender.sms_from = None;
    assert!(matches!(
        channel.send(&no_sender).await.unwrap_err(),
        DeliveryError::Config { .. }
    ));

    config.messaging_service_sid = Some("MG0123456789abcdef0123456789abcdef".into());
    TwilioChannel::new(config)
        .unwrap()
        .send(&sms(3, "+14155550100", "Hi"))
        .await
        .unwrap();
    let last = fake.accepted().pop().unwrap();
    assert_eq!(last.from, None);
    assert_eq!(
        last.messaging_service_sid.as_deref(),
        Some("MG0123456789abcdef0123456789abcdef")
    );
}

#[tokio::test]
async fn error_codes_are_classified() {
    let mut setup = FakeTwilioSetup::new(SID, TOKEN);
    setup.landlines = vec!["+14155550199".into()];
    let fake = FakeTwilio::start(setup).await.unwrap();
    let channel = TwilioChannel::new(config(&fake)).unwrap();

    fake.opt_out("+14155550150", FROM);
    let err = channel
        .send(&sms(1, "+14155550150", "Hi"))
        .await
        .unwrap_err();
    assert!(
        err.is_opt_out() && err.is_permanent() && err.to_string().contains("21610"),
        "{err}"
    );

    let err = channel
        .send(&sms(2, "+14155550199", "Hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Permanent { reason } if reason.contains("21614")),
        "{err}"
    );

    let err = channel.send(&sms(3, "4155550100", "Hi")).await.unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Permanent { reason } if reason.contains("21211")),
        "{err}"
    );

    fake.fail_next(Fault::status_retry_after(429, "1.5", error(20429, 429)));
    let err = channel
        .send(&sms(4, "+14155550100", "Hi"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_millis(1500)));

    fake.fail_next(Fault::status(503, error(20503, 503)));
    assert!(channel
        .send(&sms(5, "+14155550100", "Hi"))
        .await
        .unwrap_err()
        .is_transient());
    fake.fail_next(Fault::status(500, error(20500, 500)));
    assert!(channel
        .send(&sms(6, "+14155550100", "Hi"))
        .await
        .unwrap_err()
        .is_ambiguous());

    let long = "x".repeat(1601);
    let err = channel
        .send(&sms(7, "+14155550100", &long))
        .await
        .unwrap_err();
    assert!(err.is_permanent() && !err.is_opt_out(), "{err}");
    assert!(fake.accepted().is_empty(), "nothing was accepted");
}

#[tokio::test]
async fn too_many_concurrent_requests_are_transient() {
    let mut setup = FakeTwilioSetup::new(SID, TOKEN);
    setup.max_concurrent = Some(2);
    setup.latency = Duration::from_millis(50);
    let fake = FakeTwilio::start(setup).await.unwrap();
    let channel = Arc::new(TwilioChannel::new(config(&fake)).unwrap());
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let channel = Arc::clone(&channel);
            tokio::spawn(async move { channel.send(&sms(i, "+14155550100", "Hi")).await })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => {}
            Err(e) => {
                assert!(e.is_transient() && e.to_string().contains("20429"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 1);
    assert_eq!(fake.accepted().len(), 6 - refused);
}

#[tokio::test]
async fn wrong_credentials_are_a_config_error() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.auth_token = "0000000000000000000000000000dead".into();
    let channel = TwilioChannel::new(config).unwrap();
    let err = channel.health_check().await.unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Config { reason } if reason.contains("20003") && !reason.contains("dead")),
        "{err}"
    );
    let err = channel
        .send(&sms(1, "+14155550100", "Hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Config { reason } if reason.contains("auth_token")),
        "{err}"
    );
    assert!(fake.accepted().is_empty());
}

#[tokio::test]
async fn failures_after_the_request_was_written_are_ambiguous() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.request_timeout_secs = 0.3;
    let channel = TwilioChannel::new(config.clone()).unwrap();

    fake.fail_next(Fault::DropAfterAccept);
    let err = channel
        .send(&sms(1, "+14155550100", "Hi"))
        .await
        .unwrap_err();
    assert!(err.is_ambiguous(), "{err}");
    assert_eq!(fake.accepted().len(), 1, "the fake accepted it");

    fake.fail_next(Fault::StallAfterAccept(Duration::from_secs(2)));
    let err = channel
        .send(&sms(2, "+14155550100", "Hi"))
        .await
        .unwrap_err();
    assert!(
        err.is_ambiguous() && err.to_string().contains("timed out"),
        "{err}"
    );
    assert_eq!(fake.accepted().len(), 2);

    fake.fail_next(Fault::DropBeforeAccept);
    assert!(channel
        .send(&sms(3, "+14155550100", "Hi"))
        .await
        .unwrap_err()
        .is_ambiguous());
    assert_eq!(fake.accepted().len(), 2);

    // Nothing listening: the request never left, so it is safe to retry.
    config.api_url = "http://127.0.0.1:9".into();
    let unreachable = TwilioChannel::new(config).unwrap();
    assert!(unreachable
        .send(&sms(4, "+14155550100", "Hi"))
        .await
        .unwrap_err()
        .is_transient());
}

type Captured = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

async fn capture(
    State(captured): State<Captured>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> &'static str {
    captured.lock().unwrap().push((headers, body.to_vec()));
    webhook::EMPTY_TWIML
}

#[tokio::test]
async fn signed_status_callbacks_verify_and_apply_monotonically() {
    let captured: Captured = Arc::default();
    let app = axum::Router::new()
        .route("/webhooks/twilio/status", axum::routing::post(capture))
        .with_state(Arc::clone(&captured));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/webhooks/twilio/status",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut setup = FakeTwilioSetup::new(SID, TOKEN);
    setup.status_callbacks = true;
    setup.undeliverable = vec![("+14155550177".into(), 30007)];
    let fake = FakeTwilio::start(setup).await.unwrap();
    let mut config = config(&fake);
    config.status_callback = Some(url.clone());
    let channel = TwilioChannel::new(config).unwrap();
    let delivered = channel
        .send(&sms(1, "+14155550100", "Hi"))
        .await
        .unwrap()
        .provider_ref;
    let filtered = channel
        .send(&sms(2, "+14155550177", "Hi"))
        .await
        .unwrap()
        .provider_ref;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while captured.lock().unwrap().len() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = captured.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    let mut status: std::collections::HashMap<String, MessageStatus> = Default::default();
    let mut callbacks = Vec::new();
    for (headers, body) in &requests {
        let params = webhook::parse_form(body);
        let signature = headers
            .get(webhook::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        webhook::verify_signature(TOKEN, &url, &params, signature).unwrap();
        callbacks.push(StatusCallback::from_params(&params).unwrap());
    }
    // Replay them in the worst order: terminal ones first, then the late `sent`s.
    callbacks.sort_by_key(|c| !c.status.is_terminal());
    for callback in callbacks.iter().chain(callbacks.iter()) {
        if callback
            .status
            .advances(status.get(&callback.message_sid).copied())
        {
            status.insert(callback.message_sid.clone(), callback.status);
        }
    }
    assert_eq!(status[&delivered], MessageStatus::Delivered);
    assert_eq!(status[&filtered], MessageStatus::Undelivered);
    let failure = callbacks
        .iter()
        .find(|c| c.message_sid == filtered && c.status.is_failure())
        .unwrap();
    assert_eq!(failure.error_code, Some(30007));

    // A tampered callback does not verify.
    let (headers, body) = &requests[0];
    let mut params = webhook::parse_form(body);
    params.push(("ErrorCode".into(), "30003".into()));
    let signature = headers
        .get(webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    assert!(webhook::verify_signature(TOKEN, &url, &params, signature).is_err());
}

#[tokio::test]
async fn an_inbound_stop_is_an_opt_out_and_later_sends_are_refused() {
    let fake = fake().await;
    let channel = TwilioChannel::new(config(&fake)).unwrap();
    let url = "https://engager.acme.example/webhooks/twilio/inbound";
    let lead = "+14155550100";
    channel.send(&sms(1, lead, "Hi")).await.unwrap();

    let stop = fake.inbound(url, lead, FROM, "Stop");
    webhook::verify_signature(TOKEN, url, &stop.params, Some(&stop.signature)).unwrap();
    assert!(webhook::verify_signature(
        TOKEN,
        "https://engager.acme.example/webhooks/twilio/other",
        &stop.params,
        Some(&stop.signature)
    )
    .is_err());
    let inbound = InboundSms::from_params(&webhook::parse_form(stop.body().as_bytes())).unwrap();
    assert_eq!(inbound.intent, InboundIntent::OptOut);
    assert_eq!(inbound.from, lead);
    let err = channel
        .send(&sms(2, lead, "Following up"))
        .await
        .unwrap_err();
    assert!(err.is_opt_out(), "{err}");

    let start = fake.inbound(url, lead, FROM, "START");
    assert_eq!(
        InboundSms::from_params(&start.params).unwrap().intent,
        InboundIntent::OptIn
    );
    channel.send(&sms(3, lead, "Welcome back")).await.unwrap();
    let help = fake.inbound(url, lead, FROM, "help");
    assert_eq!(
        InboundSms::from_params(&help.params).unwrap().intent,
        InboundIntent::Help
    );
    let reply = fake.inbound(url, lead, FROM, "Sounds good, call me at 3");
    assert_eq!(
        InboundSms::from_params(&reply.params).unwrap().intent,
        InboundIntent::Reply
    );
    assert_eq!(fake.accepted().len(), 2);
}
