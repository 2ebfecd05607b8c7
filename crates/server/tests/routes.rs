//! The server's routes, driven through the router (`tower::ServiceExt::oneshot`) on SQLite
//! and on PostgreSQL (when `ENGAGER_TEST_DATABASE_URL` is set), and once on a real port.
//!
//! Twilio requests are signed with `engager_testkit::twilio::twilio_signature`, an
//! implementation independent of the one the server verifies with.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use engager_domain::links::lead_token;
use engager_domain::{
    Channel, DeliveryState, EmailAddress, EventKind, LeadId, LeadStatus, NewLead, PhoneE164,
};
use engager_engine::VirtualClock;
use engager_server::{
    default_help_reply, router, ServerConfig, ServerState, TwilioWebhooks, TWILIO_INBOUND_PATH,
    TWILIO_STATUS_PATH,
};
use engager_store::*;
use engager_testkit::twilio::twilio_signature;
use tower::ServiceExt;

const TOKEN: &str = "twilio-auth-token-for-tests";
const BASE: &str = "https://engager.example.com";
const SECRET: &[u8] = b"link-secret-for-the-server-tests";
const OUR_NUMBER: &str = "+14155550123";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T15:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn config(base: &str) -> ServerConfig {
    ServerConfig {
        public_base_url: base.to_owned(),
        link_secret: SECRET.to_vec(),
        previous_link_secrets: Vec::new(),
        company: "Acme Analytics".into(),
        help_reply: default_help_reply("Acme Analytics", "Maya Chen", "maya@acme.example"),
        twilio: Some(TwilioWebhooks {
            auth_token: TOKEN.into(),
            status_callback: None,
        }),
        max_body_bytes: 16 * 1024,
        request_timeout: StdDuration::from_secs(10),
    }
}

/// One lead of the fixture.
struct Person {
    id: LeadId,
    email: String,
    phone: String,
    sid: String,
}

struct Fx {
    store: Arc<dyn Store>,
    app: Router,
    clock: VirtualClock,
    people: Vec<Person>,
}

/// Three leads (ada, bob, carol), each enrolled in a two-step campaign whose first step, an
/// SMS, was sent (Message SID known) and whose second step is due in three days.
async fn fixture(store: Arc<dyn Store>) -> Fx {
    let names = ["ada", "bob", "carol"];
    let leads: Vec<NewLead> = names
        .iter()
        .enumerate()
        .map(|(i, n)| NewLead {
            email: Some(EmailAddress::parse(&format!("{n}@example.com")).unwrap()),
            phone: Some(PhoneE164::parse(&format!("+1415555010{}", i + 1), None).unwrap()),
            first_name: Some((*n).into()),
            source: "csv:test.csv".into(),
            ..NewLead::default()
        })
        .collect();
    let ids: Vec<LeadId> = store
        .upsert_leads(&leads, t0())
        .await
        .unwrap()
        .into_iter()
        .map(UpsertOutcome::id)
        .collect();
    let campaign = store
        .save_campaign("sms", "SMS", "[campaign]", t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    let due = store.due_enrollments(t0(), None, 10).await.unwrap();
    let evals: Vec<Evaluation> = due
        .iter()
        .map(|d| Evaluation {
            trace: TraceRecord {
                enrollment_id: d.enrollment.id,
                campaign_id: d.enrollment.campaign_id,
                lead_id: d.lead.id,
                step_index: 0,
                evaluated_at: t0(),
                outcome: "planned".into(),
                code: None,
                channel: Some(Channel::Sms),
                at: Some(t0()),
                gates: vec![],
            },
            decision: PlanDecision::Plan(NewDelivery {
                channel: Channel::Sms,
                send_at: t0(),
                to_address: d.lead.profile.phone.as_ref().unwrap().as_str().to_owned(),
                subject: None,
                body_text: "Hi, a quick question from Acme. Reply STOP to opt out.".into(),
                body_html: None,
                variant: None,
            }),
        })
        .collect();
    store.record_evaluations(&evals, t0()).await.unwrap();
    let claimed = store
        .claim_due_deliveries(t0(), 10, "test", Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let mut people = Vec::new();
    for d in &claimed {
        assert!(store
            .begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5))
            .await
            .unwrap());
        let sid = format!("SM{:032x}", d.id.0 + 1000);
        assert!(store
            .record_outcome(
                d.id,
                d.fencing_token,
                &SendOutcome::Sent {
                    provider_ref: sid.clone()
                },
                &FollowUp::NextStepAt(t0() + Duration::days(3)),
                t0(),
            )
            .await
            .unwrap());
        let lead = store.lead(d.lead_id).await.unwrap().unwrap();
        people.push(Person {
            id: d.lead_id,
            email: lead.profile.email.unwrap().as_str().to_owned(),
            phone: d.to_address.clone(),
            sid,
        });
    }
    people.sort_by_key(|p| p.id);
    let clock = VirtualClock::new(t0() + Duration::minutes(1));
    let state =
        ServerState::with_clock(Arc::clone(&store), config(BASE), Arc::new(clock.clone())).unwrap();
    Fx {
        store,
        app: router(state),
        clock,
        people,
    }
}

/// A fourth lead whose first step (an email) is queued for tomorrow: not sent yet.
async fn queued_lead(store: &dyn Store) -> Person {
    let lead = NewLead {
        email: Some(EmailAddress::parse("dee@example.com").unwrap()),
        phone: Some(PhoneE164::parse("+14155550109", None).unwrap()),
        first_name: Some("dee".into()),
        source: "csv:test.csv".into(),
        ..NewLead::default()
    };
    let id = store.upsert_leads(&[lead], t0()).await.unwrap()[0].id();
    let campaign = store
        .save_campaign("mail", "Mail", "[campaign]", t0())
        .await
        .unwrap();
    store.enroll(campaign, &[id], t0()).await.unwrap();
    let due = store.due_enrollments(t0(), None, 10).await.unwrap();
    let d = due.iter().find(|d| d.lead.id == id).unwrap();
    let tomorrow = t0() + Duration::days(1);
    store
        .record_evaluations(
            &[Evaluation {
                trace: TraceRecord {
                    enrollment_id: d.enrollment.id,
                    campaign_id: campaign,
                    lead_id: id,
                    step_index: 0,
                    evaluated_at: t0(),
                    outcome: "planned".into(),
                    code: None,
                    channel: Some(Channel::Email),
                    at: Some(tomorrow),
                    gates: vec![],
                },
                decision: PlanDecision::Plan(NewDelivery {
                    channel: Channel::Email,
                    send_at: tomorrow,
                    to_address: "dee@example.com".into(),
                    subject: Some("Hello".into()),
                    body_text: "Hi".into(),
                    body_html: None,
                    variant: None,
                }),
            }],
            t0(),
        )
        .await
        .unwrap();
    Person {
        id,
        email: "dee@example.com".into(),
        phone: "+14155550109".into(),
        sid: String::new(),
    }
}

async fn delivery_states(store: &dyn Store, lead: LeadId) -> Vec<DeliveryState> {
    store
        .deliveries(&DeliveryFilter {
            lead: Some(lead),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|d| d.state)
        .collect()
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn form(params: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// A form POST to `path`, signed as Twilio signs it for `BASE + path`.
fn signed(path: &str, params: &[(String, String)]) -> Request<Body> {
    let signature = twilio_signature(TOKEN, &format!("{BASE}{path}"), params);
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .body(Body::from(form(params)))
        .unwrap()
}

fn status_params(sid: &str, status: &str, code: Option<u32>) -> Vec<(String, String)> {
    let mut p = params(&[
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("MessageStatus", status),
        ("To", "+14155550101"),
        ("MessageSid", sid),
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("From", OUR_NUMBER),
        ("ApiVersion", "2010-04-01"),
    ]);
    if let Some(code) = code {
        p.push(("ErrorCode".into(), code.to_string()));
    }
    p
}

fn inbound_params(sid: &str, from: &str, body: &str) -> Vec<(String, String)> {
    params(&[
        ("ToCountry", "US"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("SmsSid", sid),
        ("SmsStatus", "received"),
        ("Body", body),
        ("To", OUR_NUMBER),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ])
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn events(store: &dyn Store, lead: LeadId, kind: EventKind) -> Vec<EventRecord> {
    store
        .events_for_lead(lead)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.kind == kind)
        .collect()
}

async fn is_suppressed(store: &dyn Store, key: SuppressionKey) -> Option<SuppressionRecord> {
    store.suppressed(&[key]).await.unwrap().into_iter().next()
}

async fn enrollment_state(store: &dyn Store, lead: LeadId) -> EnrollmentState {
    store.enrollments_for_lead(lead).await.unwrap()[0].state
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

// --- status callbacks --------------------------------------------------------------------

async fn status_callbacks_only_move_forward_and_replays_change_nothing(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let ada = &fx.people[0];
    let post = |status: &str| signed(TWILIO_STATUS_PATH, &status_params(&ada.sid, status, None));
    let (code, _, body) = send(&fx.app, post("sent")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(body.contains("\"applied\""), "{body}");
    let (_, _, body) = send(&fx.app, post("delivered")).await;
    assert!(body.contains("\"applied\""), "{body}");
    // Out of order and replayed: a late `sent`, a late `queued`, the same `delivered` again.
    for late in ["sent", "queued", "delivered", "undelivered"] {
        let (code, _, body) = send(&fx.app, post(late)).await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("\"stale\"") && body.contains("\"delivered\""),
            "{late}: {body}"
        );
    }
    let message = fx.store.sms_message(&ada.sid).await.unwrap().unwrap();
    assert_eq!(message.status.as_deref(), Some("delivered"));
    let delivered = events(fx.store.as_ref(), ada.id, EventKind::Delivered).await;
    assert_eq!(
        delivered.len(),
        1,
        "one delivered event however many callbacks"
    );
    assert_eq!(delivered[0].event.source, "webhook:twilio");
    assert!(events(fx.store.as_ref(), ada.id, EventKind::SoftBounce)
        .await
        .is_empty());
    // `read` may still follow `delivered`.
    let (_, _, body) = send(&fx.app, post("read")).await;
    assert!(body.contains("\"applied\""), "{body}");
    assert_eq!(
        enrollment_state(fx.store.as_ref(), ada.id).await,
        EnrollmentState::Active
    );
}

async fn failures_suppress_unreachable_numbers_and_opt_outs_end_the_lead(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let (ada, bob, carol) = (&fx.people[0], &fx.people[1], &fx.people[2]);
    // A landline (30006): the number is suppressed, the lead goes on by email.
    let (code, _, body) = send(
        &fx.app,
        signed(
            TWILIO_STATUS_PATH,
            &status_params(&ada.sid, "undelivered", Some(30006)),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let entry = is_suppressed(fx.store.as_ref(), SuppressionKey::Phone(ada.phone.clone()))
        .await
        .expect("the landline is suppressed");
    assert_eq!(entry.reason, "sms_undeliverable:30006");
    assert!(
        is_suppressed(fx.store.as_ref(), SuppressionKey::Email(ada.email.clone()))
            .await
            .is_none()
    );
    let bounce = events(fx.store.as_ref(), ada.id, EventKind::SoftBounce).await;
    assert_eq!(bounce.len(), 1);
    assert!(
        bounce[0].event.detail.contains("\"permanent\":true"),
        "{}",
        bounce[0].event.detail
    );
    assert_eq!(
        fx.store.lead(ada.id).await.unwrap().unwrap().status,
        LeadStatus::Active
    );
    assert_eq!(
        enrollment_state(fx.store.as_ref(), ada.id).await,
        EnrollmentState::Active
    );
    let ledger = fx
        .store
        .deliveries(&DeliveryFilter {
            lead: Some(ada.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ledger[0].last_error.as_deref(),
        Some("twilio undelivered, error 30006")
    );

    // 21610: the recipient had replied STOP to this sender: an opt-out everywhere.
    send(
        &fx.app,
        signed(
            TWILIO_STATUS_PATH,
            &status_params(&bob.sid, "failed", Some(21610)),
        ),
    )
    .await;
    assert_eq!(
        events(fx.store.as_ref(), bob.id, EventKind::Unsubscribed)
            .await
            .len(),
        1
    );
    assert!(
        is_suppressed(fx.store.as_ref(), SuppressionKey::Phone(bob.phone.clone()))
            .await
            .is_some()
    );
    assert_eq!(
        fx.store.lead(bob.id).await.unwrap().unwrap().status,
        LeadStatus::Unsubscribed
    );
    assert_eq!(
        enrollment_state(fx.store.as_ref(), bob.id).await,
        EnrollmentState::Stopped
    );

    // Carrier filtering (30007) may pass later: recorded, nothing suppressed.
    send(
        &fx.app,
        signed(
            TWILIO_STATUS_PATH,
            &status_params(&carol.sid, "undelivered", Some(30007)),
        ),
    )
    .await;
    let soft = events(fx.store.as_ref(), carol.id, EventKind::SoftBounce).await;
    assert_eq!(soft.len(), 1);
    assert!(soft[0].event.detail.contains("\"permanent\":false"));
    assert!(is_suppressed(
        fx.store.as_ref(),
        SuppressionKey::Phone(carol.phone.clone())
    )
    .await
    .is_none());
}

async fn forged_or_missing_signatures_get_403_and_write_nothing(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let ada = &fx.people[0];
    let stop = inbound_params("SMf0000000000000000000000000000001", &ada.phone, "STOP");
    let delivered = status_params(&ada.sid, "delivered", None);
    let forged = |path: &str, params: &[(String, String)], signature: Option<String>| {
        let mut r =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(s) = signature {
            r = r.header("X-Twilio-Signature", s);
        }
        r.body(Body::from(form(params))).unwrap()
    };
    let cases = [
        // Another key.
        (
            TWILIO_INBOUND_PATH,
            &stop,
            Some(twilio_signature(
                "not-the-token",
                &format!("{BASE}{TWILIO_INBOUND_PATH}"),
                &stop,
            )),
        ),
        // Another URL (http instead of https, another host, another route).
        (
            TWILIO_INBOUND_PATH,
            &stop,
            Some(twilio_signature(
                TOKEN,
                &format!("http://engager.example.com{TWILIO_INBOUND_PATH}"),
                &stop,
            )),
        ),
        (
            TWILIO_INBOUND_PATH,
            &stop,
            Some(twilio_signature(
                TOKEN,
                &format!("https://evil.example{TWILIO_INBOUND_PATH}"),
                &stop,
            )),
        ),
        (
            TWILIO_STATUS_PATH,
            &delivered,
            Some(twilio_signature(
                TOKEN,
                &format!("{BASE}{TWILIO_INBOUND_PATH}"),
                &delivered,
            )),
        ),
        // No signature, garbage.
        (TWILIO_INBOUND_PATH, &stop, None),
        (
            TWILIO_STATUS_PATH,
            &delivered,
            Some("bm90IGEgc2lnbmF0dXJl".into()),
        ),
    ];
    for (i, (path, params, signature)) in cases.into_iter().enumerate() {
        let (code, _, body) = send(&fx.app, forged(path, params, signature)).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "case {i}: {body}");
        assert!(body.contains("X-Twilio-Signature"), "{body}");
    }
    // Signed, then a parameter changed on the way.
    let mut tampered = signed(TWILIO_INBOUND_PATH, &stop);
    *tampered.body_mut() = Body::from(form(&inbound_params(
        "SMf0000000000000000000000000000001",
        &fx.people[1].phone,
        "STOP",
    )));
    let (code, _, _) = send(&fx.app, tampered).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    // Nothing was written.
    for p in &fx.people {
        assert!(
            is_suppressed(fx.store.as_ref(), SuppressionKey::Phone(p.phone.clone()))
                .await
                .is_none()
        );
        assert!(fx.store.sms_inbound_log(&p.phone).await.unwrap().is_empty());
        assert_eq!(
            enrollment_state(fx.store.as_ref(), p.id).await,
            EnrollmentState::Active
        );
        assert_eq!(
            fx.store.sms_message(&p.sid).await.unwrap().unwrap().status,
            None
        );
        assert_eq!(
            fx.store.events_for_lead(p.id).await.unwrap().len(),
            1,
            "only the send"
        );
    }
}

async fn an_unknown_message_sid_writes_nothing(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let sid = "SMffffffffffffffffffffffffffffffff";
    let (code, _, body) = send(
        &fx.app,
        signed(
            TWILIO_STATUS_PATH,
            &status_params(sid, "undelivered", Some(30006)),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("unknown_message"), "{body}");
    assert!(fx.store.sms_message(sid).await.unwrap().is_none());
    assert!(is_suppressed(
        fx.store.as_ref(),
        SuppressionKey::Phone("+14155550101".into())
    )
    .await
    .is_none());
}

async fn malformed_webhooks_get_400_naming_the_problem(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let no_sid = params(&[("MessageStatus", "delivered")]);
    let (code, _, body) = send(&fx.app, signed(TWILIO_STATUS_PATH, &no_sid)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("MessageSid"), "{body}");
    let odd = status_params(&fx.people[0].sid, "teleported", None);
    let (code, _, body) = send(&fx.app, signed(TWILIO_STATUS_PATH, &odd)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("teleported"), "{body}");
    let no_from = params(&[("MessageSid", "SM1"), ("To", OUR_NUMBER), ("Body", "hi")]);
    let (code, _, body) = send(&fx.app, signed(TWILIO_INBOUND_PATH, &no_from)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("From"), "{body}");
    // Not a form at all.
    let json = Request::post(TWILIO_INBOUND_PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"Body\":\"STOP\"}"))
        .unwrap();
    let (code, _, body) = send(&fx.app, json).await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body.contains("application/x-www-form-urlencoded"), "{body}");
    let binary = Request::post(TWILIO_STATUS_PATH)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(vec![b'a', b'=', 0xff, 0xfe]))
        .unwrap();
    let (code, _, body) = send(&fx.app, binary).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("UTF-8"), "{body}");
    // Too large.
    let big = params(&[("Body", &"x".repeat(20_000))]);
    let (code, _, _) = send(&fx.app, signed(TWILIO_INBOUND_PATH, &big)).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(fx
        .store
        .sms_inbound_log(&fx.people[0].phone)
        .await
        .unwrap()
        .is_empty());
}

// --- inbound messages ----------------------------------------------------------------------

async fn stop_suppresses_at_once_and_start_lifts_it_with_an_audit_trail(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let (ada, bob) = (&fx.people[0], &fx.people[1]);
    let stop = inbound_params("SM10000000000000000000000000000001", &ada.phone, "Stop");
    let (code, headers, body) = send(&fx.app, signed(TWILIO_INBOUND_PATH, &stop)).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        content_type(&headers).starts_with("text/xml"),
        "{headers:?}"
    );
    assert!(body.ends_with("<Response></Response>"), "{body}");
    let entry = is_suppressed(fx.store.as_ref(), SuppressionKey::Phone(ada.phone.clone()))
        .await
        .expect("the number is suppressed at once");
    assert_eq!(entry.source, "webhook:twilio");
    assert_eq!(
        enrollment_state(fx.store.as_ref(), ada.id).await,
        EnrollmentState::Stopped
    );
    assert_eq!(
        fx.store.lead(ada.id).await.unwrap().unwrap().status,
        LeadStatus::Unsubscribed
    );
    let optouts = events(fx.store.as_ref(), ada.id, EventKind::Unsubscribed).await;
    assert_eq!(optouts.len(), 1);
    // Bob is untouched.
    assert_eq!(
        enrollment_state(fx.store.as_ref(), bob.id).await,
        EnrollmentState::Active
    );
    // Twilio retries a webhook it got no answer to: the replay changes nothing.
    let (code, _, _) = send(&fx.app, signed(TWILIO_INBOUND_PATH, &stop)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        events(fx.store.as_ref(), ada.id, EventKind::Unsubscribed)
            .await
            .len(),
        1
    );
    // Every opt-out keyword works, any case.
    for (i, word) in ["STOPALL", "unsubscribe", "Cancel", "END", "quit"]
        .iter()
        .enumerate()
    {
        let number = format!("+1202555{:04}", i);
        let sid = format!("SM2{i:031}");
        send(
            &fx.app,
            signed(TWILIO_INBOUND_PATH, &inbound_params(&sid, &number, word)),
        )
        .await;
        assert!(
            is_suppressed(fx.store.as_ref(), SuppressionKey::Phone(number))
                .await
                .is_some(),
            "{word}"
        );
    }
    // A STOP from a lead whose first message is still queued cancels it.
    let dee = queued_lead(fx.store.as_ref()).await;
    let stop_dee = inbound_params("SM10000000000000000000000000000009", &dee.phone, "STOP");
    send(&fx.app, signed(TWILIO_INBOUND_PATH, &stop_dee)).await;
    assert_eq!(
        delivery_states(fx.store.as_ref(), dee.id).await,
        vec![DeliveryState::Cancelled]
    );
    assert!(
        is_suppressed(fx.store.as_ref(), SuppressionKey::Phone(dee.phone.clone()))
            .await
            .is_some()
    );
    // START: re-consent lifts the number's suppression, and the log keeps both.
    fx.clock.advance(Duration::hours(2));
    let start = inbound_params("SM10000000000000000000000000000002", &ada.phone, "START");
    let (code, _, body) = send(&fx.app, signed(TWILIO_INBOUND_PATH, &start)).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.ends_with("<Response></Response>"), "{body}");
    assert!(
        is_suppressed(fx.store.as_ref(), SuppressionKey::Phone(ada.phone.clone()))
            .await
            .is_none()
    );
    let log = fx.store.sms_inbound_log(&ada.phone).await.unwrap();
    let actions: Vec<SmsAction> = log.iter().map(|r| r.action).collect();
    assert_eq!(actions, vec![SmsAction::OptOut, SmsAction::OptIn]);
    assert_eq!(
        log[1].received_at,
        t0() + Duration::minutes(1) + Duration::hours(2)
    );
    // The compliance audit log names the lead by id, never the number.
    let audit = fx.store.audit_log(t0()).await.unwrap();
    let mine: Vec<(&str, &str)> = audit
        .iter()
        .filter(|a| a.subject == format!("lead:{}", ada.id))
        .map(|a| (a.action.as_str(), a.actor.as_str()))
        .collect();
    assert_eq!(
        mine,
        vec![("opt_out", "server"), ("consent", "server")],
        "{audit:?}"
    );
    assert!(audit
        .iter()
        .all(|a| !a.detail.contains(&ada.phone) && !a.subject.contains(&ada.phone)));
    // The opt-out stays on record; sequences are not restarted by START.
    assert_eq!(
        events(fx.store.as_ref(), ada.id, EventKind::Unsubscribed)
            .await
            .len(),
        1
    );
    assert_eq!(
        enrollment_state(fx.store.as_ref(), ada.id).await,
        EnrollmentState::Stopped
    );
}

async fn help_gets_the_sender_identification(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let ada = &fx.people[0];
    let help = inbound_params("SM30000000000000000000000000000001", &ada.phone, "help");
    let (code, headers, body) = send(&fx.app, signed(TWILIO_INBOUND_PATH, &help)).await;
    assert_eq!(code, StatusCode::OK);
    assert!(content_type(&headers).starts_with("text/xml"));
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>Acme Analytics: messages from Maya Chen. \
         Questions: maya@acme.example. Reply STOP to opt out. Msg &amp; data rates may apply.</Message></Response>"
    );
    assert!(
        is_suppressed(fx.store.as_ref(), SuppressionKey::Phone(ada.phone.clone()))
            .await
            .is_none()
    );
    assert_eq!(
        enrollment_state(fx.store.as_ref(), ada.id).await,
        EnrollmentState::Active
    );
    assert_eq!(
        fx.store.sms_inbound_log(&ada.phone).await.unwrap()[0].action,
        SmsAction::Help
    );
}

async fn any_other_text_is_a_reply_that_stops_the_sequence(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let (ada, bob) = (&fx.people[0], &fx.people[1]);
    let reply = inbound_params(
        "SM40000000000000000000000000000001",
        &ada.phone,
        "Sounds good, call me tomorrow",
    );
    let (code, _, body) = send(&fx.app, signed(TWILIO_INBOUND_PATH, &reply)).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        body.ends_with("<Response></Response>"),
        "no automatic answer to a reply: {body}"
    );
    let replies = events(fx.store.as_ref(), ada.id, EventKind::Replied).await;
    assert_eq!(replies.len(), 1);
    assert!(replies[0].event.detail.contains("call me tomorrow"));
    assert!(
        replies[0].event.delivery_id.is_some(),
        "matched to the SMS it answers"
    );
    assert_eq!(
        enrollment_state(fx.store.as_ref(), ada.id).await,
        EnrollmentState::Stopped
    );
    assert_eq!(
        fx.store.lead(ada.id).await.unwrap().unwrap().status,
        LeadStatus::Active
    );
    assert!(
        is_suppressed(fx.store.as_ref(), SuppressionKey::Phone(ada.phone.clone()))
            .await
            .is_none()
    );
    assert_eq!(
        enrollment_state(fx.store.as_ref(), bob.id).await,
        EnrollmentState::Active
    );
    // A number nobody has: logged, nothing else.
    let stranger = inbound_params(
        "SM40000000000000000000000000000002",
        "+12025550199",
        "who is this?",
    );
    let (code, _, _) = send(&fx.app, signed(TWILIO_INBOUND_PATH, &stranger)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        fx.store
            .sms_inbound_log("+12025550199")
            .await
            .unwrap()
            .len(),
        1
    );
}

// --- one-click unsubscribe -----------------------------------------------------------------

fn unsubscribe_path(lead: LeadId) -> String {
    format!("/u/{}", lead_token(SECRET, "unsubscribe", lead))
}

fn one_click(path: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("List-Unsubscribe=One-Click"))
        .unwrap()
}

async fn one_click_post_unsubscribes_once(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let (ada, bob) = (&fx.people[0], &fx.people[1]);
    // Long after the email was sent: links do not expire.
    fx.clock.advance(Duration::days(45));
    let (code, headers, body) = send(&fx.app, one_click(&unsubscribe_path(ada.id))).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(headers.get(header::LOCATION).is_none(), "no redirect");
    assert!(content_type(&headers).starts_with("text/html"));
    assert!(body.contains("You are unsubscribed"), "{body}");
    let entry = is_suppressed(fx.store.as_ref(), SuppressionKey::Email(ada.email.clone()))
        .await
        .expect("the address is suppressed");
    assert_eq!(entry.source, "one-click");
    assert_eq!(
        fx.store.lead(ada.id).await.unwrap().unwrap().status,
        LeadStatus::Unsubscribed
    );
    assert_eq!(
        enrollment_state(fx.store.as_ref(), ada.id).await,
        EnrollmentState::Stopped
    );
    // Again: still 200, still one opt-out on record.
    let (code, _, body) = send(&fx.app, one_click(&unsubscribe_path(ada.id))).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("You are unsubscribed"));
    assert_eq!(
        events(fx.store.as_ref(), ada.id, EventKind::Unsubscribed)
            .await
            .len(),
        1
    );
    let audit = fx.store.audit_log(t0()).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.subject == format!("lead:{}", ada.id) && a.action == "opt_out")
            .count(),
        1,
        "{audit:?}"
    );
    // The token acted on ada only.
    assert!(
        is_suppressed(fx.store.as_ref(), SuppressionKey::Email(bob.email.clone()))
            .await
            .is_none()
    );
    assert_eq!(
        enrollment_state(fx.store.as_ref(), bob.id).await,
        EnrollmentState::Active
    );
    // A queued delivery is cancelled by the opt-out.
    let dee = queued_lead(fx.store.as_ref()).await;
    assert_eq!(
        delivery_states(fx.store.as_ref(), dee.id).await,
        vec![DeliveryState::Planned]
    );
    let (code, _, _) = send(&fx.app, one_click(&unsubscribe_path(dee.id))).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        delivery_states(fx.store.as_ref(), dee.id).await,
        vec![DeliveryState::Cancelled]
    );
    // multipart/form-data, as RFC 8058 recommends mailbox providers send it.
    let boundary = "----engager-test-boundary";
    let multipart = Request::post(unsubscribe_path(bob.id))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--{boundary}--\r\n"
        )))
        .unwrap();
    let (code, _, body) = send(&fx.app, multipart).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        is_suppressed(fx.store.as_ref(), SuppressionKey::Email(bob.email.clone()))
            .await
            .is_some()
    );
}

async fn get_shows_a_page_and_never_unsubscribes(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let ada = &fx.people[0];
    for _ in 0..3 {
        let (code, headers, body) = send(
            &fx.app,
            Request::get(unsubscribe_path(ada.id))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert!(content_type(&headers).starts_with("text/html"));
        assert!(body.contains("<form method=\"post\">"), "{body}");
        assert!(
            body.contains("name=\"List-Unsubscribe\" value=\"One-Click\""),
            "the button posts the one-click body: {body}"
        );
        assert!(body.contains("Acme Analytics"));
        assert!(!body.contains(&ada.email), "no personal data on the page");
    }
    assert!(
        is_suppressed(fx.store.as_ref(), SuppressionKey::Email(ada.email.clone()))
            .await
            .is_none()
    );
    assert!(events(fx.store.as_ref(), ada.id, EventKind::Unsubscribed)
        .await
        .is_empty());
    assert_eq!(
        enrollment_state(fx.store.as_ref(), ada.id).await,
        EnrollmentState::Active
    );
    // After the POST, the page says so.
    send(&fx.app, one_click(&unsubscribe_path(ada.id))).await;
    let (_, _, body) = send(
        &fx.app,
        Request::get(unsubscribe_path(ada.id))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(body.contains("You are unsubscribed"), "{body}");
}

async fn links_signed_with_a_previous_secret_keep_working(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let ada = &fx.people[0];
    // The secret was rotated: the new one signs, the old one is still accepted.
    let mut cfg = config(BASE);
    cfg.link_secret = b"a-brand-new-link-secret-after-rotation".to_vec();
    cfg.previous_link_secrets = vec![SECRET.to_vec()];
    let app = router(
        ServerState::with_clock(Arc::clone(&fx.store), cfg, Arc::new(fx.clock.clone())).unwrap(),
    );
    let stranger = format!(
        "/u/{}",
        lead_token(b"a-secret-never-configured-here", "unsubscribe", ada.id)
    );
    let (code, _, _) = send(&app, one_click(&stranger)).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, body) = send(&app, one_click(&unsubscribe_path(ada.id))).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(fx
        .store
        .suppressed(&[SuppressionKey::Email(ada.email.clone())])
        .await
        .unwrap()
        .iter()
        .any(|s| s.key == SuppressionKey::Email(ada.email.clone())));
}

async fn bad_tokens_get_404_and_bad_bodies_400_and_nothing_is_written(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let ada = &fx.people[0];
    let good = lead_token(SECRET, "unsubscribe", ada.id);
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let bad_tokens = [
        String::from_utf8(flipped).unwrap(),
        lead_token(b"another-secret-entirely", "unsubscribe", ada.id),
        lead_token(SECRET, "click", ada.id),
        lead_token(SECRET, "unsubscribe", LeadId(999_999)),
        "not-a-token".to_owned(),
    ];
    for token in &bad_tokens {
        let path = format!("/u/{token}");
        let (code, headers, body) = send(&fx.app, one_click(&path)).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{token}");
        assert!(content_type(&headers).starts_with("text/html"));
        assert!(body.contains("not valid"), "{body}");
        let (code, _, _) = send(&fx.app, Request::get(&path).body(Body::empty()).unwrap()).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{token}");
    }
    // A genuine token without the one-click body.
    let wrong_body = Request::post(unsubscribe_path(ada.id))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("List-Unsubscribe=Maybe"))
        .unwrap();
    let (code, _, body) = send(&fx.app, wrong_body).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("List-Unsubscribe=One-Click"), "{body}");
    let broken = Request::post(unsubscribe_path(ada.id))
        .header(header::CONTENT_TYPE, "multipart/form-data")
        .body(Body::from("garbage"))
        .unwrap();
    let (code, _, body) = send(&fx.app, broken).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("multipart/form-data"), "{body}");
    for p in &fx.people {
        assert!(
            is_suppressed(fx.store.as_ref(), SuppressionKey::Email(p.email.clone()))
                .await
                .is_none()
        );
        assert!(events(fx.store.as_ref(), p.id, EventKind::Unsubscribed)
            .await
            .is_empty());
    }
}

async fn health_and_unknown_routes(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let (code, _, body) = send(
        &fx.app,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (code, _, _) = send(
        &fx.app,
        Request::get("/nowhere").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, _) = send(
        &fx.app,
        Request::get(TWILIO_STATUS_PATH)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
}

async fn metrics_and_readiness(store: Arc<dyn Store>) {
    let fx = fixture(store).await;
    let now = engager_engine::Clock::now(&fx.clock);
    fx.store
        .save_account_state(&engager_store::AccountState {
            account: "sms:twilio".into(),
            circuit: "open".into(),
            open_until: Some(now + chrono::Duration::minutes(5)),
            last_error: Some("503".into()),
            updated_at: now,
        })
        .await
        .unwrap();
    fx.store
        .set_sending_halt(&engager_store::SendingHalt {
            channel: engager_domain::Channel::Email,
            halted: true,
            reason: "hard bounces 6%".into(),
            changed_by: "monitor".into(),
            changed_at: now,
        })
        .await
        .unwrap();
    let (code, headers, body) = send(
        &fx.app,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(content_type(&headers).starts_with("text/plain; version=0.0.4"));
    for line in [
        "engager_up 1",
        "engager_deliveries{channel=\"sms\",state=\"sent\"} 3",
        "engager_deliveries{channel=\"email\",state=\"sent\"} 0",
        "engager_circuit_open{account=\"sms:twilio\",state=\"open\"} 1",
        "engager_sending_halted{channel=\"email\"} 1",
        "engager_sending_halted{channel=\"sms\"} 0",
        "# TYPE engager_queue_due gauge",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "{line} missing from:\n{body}"
        );
    }
    assert!(
        !body.contains('@') && !body.contains("+1"),
        "no contact details: {body}"
    );
    let (code, _, body) = send(
        &fx.app,
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((code, body.as_str()), (StatusCode::OK, "ready\n"));
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite:{}", dir.path().join("t.db").display());
                    super::$name(engager_store::open(&url).await.unwrap()).await;
                }
            )*
        }

        mod postgres {
            use std::sync::Arc;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = engager_testkit::postgres_url() else { return };
                    let schema = engager_testkit::unique_schema(stringify!($name));
                    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema).await.unwrap();
                    super::$name(Arc::new(store)).await;
                }
            )*
        }
    };
}

on_both_backends!(
    status_callbacks_only_move_forward_and_replays_change_nothing,
    failures_suppress_unreachable_numbers_and_opt_outs_end_the_lead,
    forged_or_missing_signatures_get_403_and_write_nothing,
    an_unknown_message_sid_writes_nothing,
    malformed_webhooks_get_400_naming_the_problem,
    stop_suppresses_at_once_and_start_lifts_it_with_an_audit_trail,
    help_gets_the_sender_identification,
    any_other_text_is_a_reply_that_stops_the_sequence,
    one_click_post_unsubscribes_once,
    get_shows_a_page_and_never_unsubscribes,
    bad_tokens_get_404_and_bad_bodies_400_and_nothing_is_written,
    links_signed_with_a_previous_secret_keep_working,
    health_and_unknown_routes,
    metrics_and_readiness,
);

// --- concurrency and a real port -------------------------------------------------------------

/// Many copies of the same callbacks at once, in every order: one event per status kind, and
/// the final status is the most advanced one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callbacks_on_postgresql_settle_on_the_most_advanced_status() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("concurrent_callbacks");
    let store = Arc::new(
        engager_store::postgres::PgStore::connect_isolated(&url, &schema)
            .await
            .unwrap(),
    );
    let fx = fixture(store).await;
    let ada = &fx.people[0];
    let mut calls = Vec::new();
    for round in 0..8 {
        for status in ["queued", "sent", "delivered", "sent", "undelivered"] {
            let app = fx.app.clone();
            let request = signed(
                TWILIO_STATUS_PATH,
                &status_params(
                    &ada.sid,
                    status,
                    Some(30006).filter(|_| status == "undelivered"),
                ),
            );
            calls.push(tokio::spawn(async move {
                let _ = round;
                send(&app, request).await.0
            }));
        }
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    let status = fx
        .store
        .sms_message(&ada.sid)
        .await
        .unwrap()
        .unwrap()
        .status;
    assert!(
        matches!(status.as_deref(), Some("delivered") | Some("undelivered")),
        "{status:?}"
    );
    let terminal = events(fx.store.as_ref(), ada.id, EventKind::Delivered)
        .await
        .len()
        + events(fx.store.as_ref(), ada.id, EventKind::SoftBounce)
            .await
            .len();
    assert_eq!(terminal, 1, "exactly one terminal event");
}

/// The server on a real port: signed STOP over HTTP, a stalled body times out with 408, and
/// a graceful shutdown ends `serve_on`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_port_answers_times_out_stalled_bodies_and_shuts_down_gracefully() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let store = engager_store::open(&format!("sqlite:{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cfg = config(&base);
    cfg.request_timeout = StdDuration::from_millis(300);
    let state = ServerState::new(Arc::clone(&store), cfg).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(engager_server::serve_on(listener, state, async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let stop = inbound_params("SM50000000000000000000000000000001", "+14155550177", "STOP");
    let url = format!("{base}{TWILIO_INBOUND_PATH}");
    let response = http
        .post(&url)
        .header("X-Twilio-Signature", twilio_signature(TOKEN, &url, &stop))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&stop))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("<Response></Response>"));
    assert!(
        store
            .suppressed(&[SuppressionKey::Phone("+14155550177".into())])
            .await
            .unwrap()
            .len()
            == 1
    );
    // A client that announces a body and never sends it is cut off.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    raw.write_all(
        format!("POST {TWILIO_STATUS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nMessageSid=SM1")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(StdDuration::from_secs(5), raw.read(&mut answer))
        .await
        .expect("the server answers a stalled request")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(raw);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(StdDuration::from_secs(5), server)
        .await
        .expect("serve_on returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "the port is closed"
    );
}

/// Routes follow the path of the public base URL (a server published under a prefix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_live_under_the_base_url_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = engager_store::open(&format!("sqlite:{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let base = "https://example.com/engager";
    let app = router(ServerState::new(store, config(base)).unwrap());
    let stop = inbound_params("SM60000000000000000000000000000001", "+14155550178", "STOP");
    let path = format!("/engager{TWILIO_INBOUND_PATH}");
    let signature = twilio_signature(TOKEN, &format!("https://example.com{path}"), &stop);
    let request = Request::post(&path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .body(Body::from(form(&stop)))
        .unwrap();
    let (code, _, body) = send(&app, request).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _, _) = send(
        &app,
        Request::get("/engager/healthz")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _, _) = send(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(code, StatusCode::OK);
}
