//! Open and click tracking end to end: a campaign with `[tracking]` planned and sent through
//! the real planner and dispatcher (email outbox), then its pixel and links requested from
//! the server, on SQLite and on PostgreSQL (when `ENGAGER_TEST_DATABASE_URL` is set).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use engager_channels::{ChannelSender, OutboxChannel, OutboxConfig, Sender};
use engager_domain::frequency::{BudgetRules, FrequencyPolicy};
use engager_domain::links::lead_token;
use engager_domain::tracking::{click_token, open_token};
use engager_domain::{
    Channel, DeliveryId, DeliveryState, EmailAddress, EventKind, LeadId, NewLead, TimeZone,
};
use engager_engine::dispatcher::{ChannelSet, Dispatcher};
use engager_engine::planner::Planner;
use engager_engine::timing::TimingRules;
use engager_engine::{Catalog, Clock, EngineConfig, VirtualClock};
use engager_server::{router, ServerConfig, ServerState, TrackingConfig};
use engager_store::*;
use tower::ServiceExt;

const BASE: &str = "https://t.acme.example";
const SECRET: &[u8] = b"link-secret-for-tracking-tests";
const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";
const CASE_STUDY: &str = "https://acme.example/case-study?ref=mail&x=1";
const PRICING: &str = "https://acme.example/pricing";

fn t0() -> DateTime<Utc> {
    // A Monday, 10:00 in New York.
    DateTime::parse_from_rfc3339("2026-03-02T15:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        sender: Sender {
            name: "Maya".into(),
            email: EmailAddress::parse("maya@acme.example").unwrap(),
            postal_address: "1 Main St, Springfield".into(),
            sms_from: None,
        },
        sender_company: "Acme".into(),
        public_base_url: BASE.into(),
        unsubscribe_mailto: None,
        link_secret: SECRET.to_vec(),
        default_time_zone: TimeZone::parse("America/New_York").unwrap(),
        frequency: FrequencyPolicy {
            min_gap: Duration::hours(1),
            max_per_week: 20,
        },
        budget: BudgetRules::default(),
        timing: TimingRules::default(),
        max_jitter: Duration::zero(),
        sms_quiet_start_hour: 8,
        sms_quiet_end_hour: 21,
        max_sms_segments: 3,
        batch_size: 100,
        lease: Duration::minutes(5),
        max_attempts: 3,
        max_age: Duration::hours(72),
        retry_base_delay: Duration::minutes(1),
        retry_max_delay: Duration::hours(1),
        enabled_channels: vec![Channel::Email],
        worker_id: "test".into(),
        compliance: Default::default(),
    }
}

fn campaign(slug: &str, tracking: &str) -> String {
    format!(
        r#"
slug = "{slug}"
name = "Tracked"
best_time = false
{tracking}
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "intro"
channels = ["email"]
subject = "Hi {{{{ lead.first_name }}}}"
body = "Hello, see {CASE_STUDY} and {PRICING}."
html = "<p>Hello, see <a href=\"https://acme.example/case-study?ref=mail&amp;x=1\">the case study</a> and <a href=\"{PRICING}\">pricing</a>.</p>"
"#
    )
}

/// A sent email of a campaign: its ledger row as sent, and the outbox file's text.
struct Sent {
    delivery: DeliveryRecord,
    eml: String,
}

/// Plans and sends one email per lead of a campaign through the real planner and dispatcher.
async fn send_campaign(
    store: &dyn Store,
    outbox: &std::path::Path,
    slug: &str,
    tracking: &str,
    people: &[&str],
) -> Vec<Sent> {
    let leads: Vec<NewLead> = people
        .iter()
        .map(|n| NewLead {
            email: Some(EmailAddress::parse(&format!("{n}@example.com")).unwrap()),
            first_name: Some((*n).into()),
            country: Some(engager_domain::CountryCode::parse("US").unwrap()),
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
    let campaign_id = store
        .save_campaign(slug, "Tracked", &campaign(slug, tracking), t0())
        .await
        .unwrap();
    store.enroll(campaign_id, &ids, t0()).await.unwrap();
    let catalog = Catalog::load(store).await.unwrap();
    let config = engine_config();
    let planned = Planner::new(store, &catalog, &config)
        .plan_due(t0(), None, false)
        .await
        .unwrap();
    assert_eq!(planned.planned, ids.len(), "{planned:?}");
    let outbox = OutboxConfig {
        dir: outbox.to_path_buf(),
    };
    let channels = ChannelSet::new()
        .with(Arc::new(OutboxChannel::new(Channel::Email, &outbox)) as Arc<dyn ChannelSender>);
    let report = Dispatcher::new(store, &catalog, &config, &channels)
        .dispatch_due(t0() + Duration::days(2), None)
        .await
        .unwrap();
    assert_eq!(report.sent.len(), ids.len(), "{report:?}");
    let mut out = Vec::new();
    for id in ids {
        let delivery = store
            .deliveries(&DeliveryFilter {
                lead: Some(id),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.state == DeliveryState::Sent)
            .unwrap();
        let file = std::fs::read_dir(outbox.dir.join("email"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{:08}-", delivery.id.0))
            })
            .unwrap();
        let raw = std::fs::read(file).unwrap();
        let eml = mail_parser::MessageParser::default()
            .parse(&raw)
            .map(|m| {
                format!(
                    "{}\n{}",
                    m.body_text(0).unwrap_or_default(),
                    m.body_html(0).unwrap_or_default()
                )
            })
            .unwrap();
        out.push(Sent { delivery, eml });
    }
    out
}

fn app(
    store: &Arc<dyn Store>,
    clock: &VirtualClock,
    tracking: TrackingConfig,
) -> (Router, ServerState) {
    let state = ServerState::with_clock(
        Arc::clone(store),
        ServerConfig::from_engine(&engine_config()),
        Arc::new(clock.clone()),
    )
    .unwrap()
    .with_tracking(tracking);
    (router(state.clone()), state)
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    ua: Option<&str>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(ua) = ua {
        request = request.header(header::USER_AGENT, ua);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    (status, headers, body)
}

async fn tracking_events(store: &dyn Store, lead: LeadId) -> Vec<EventRecord> {
    store
        .events_for_lead(lead)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.event.kind, EventKind::Opened | EventKind::Clicked))
        .collect()
}

fn detail(e: &EventRecord) -> serde_json::Value {
    serde_json::from_str(&e.event.detail).unwrap()
}

fn is_gif(headers: &HeaderMap, body: &[u8]) -> bool {
    headers[header::CONTENT_TYPE] == "image/gif"
        && body.starts_with(b"GIF89a")
        && body.len() == 43
        && headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("no-store")
}

fn sent_at(s: &Sent) -> DateTime<Utc> {
    s.delivery.sent_at.unwrap()
}

/// The tracked message is what the ledger holds and what was sent; a person's open and
/// click are recorded with their delivery and lead and count in the report.
async fn a_tracked_email_records_a_persons_open_and_click(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let sent = send_campaign(
        store.as_ref(),
        dir.path(),
        "tracked",
        "[tracking]\nopens = true\nclicks = true",
        &["ada"],
    )
    .await;
    let s = &sent[0];
    let d = &s.delivery;
    let c0 = format!("{BASE}/c/{}", click_token(SECRET, d.id, 0));
    let c1 = format!("{BASE}/c/{}", click_token(SECRET, d.id, 1));
    let pixel = format!("{BASE}/o/{}.gif", open_token(SECRET, d.id));
    let unsubscribe = format!("{BASE}/u/{}", lead_token(SECRET, "unsubscribe", d.lead_id));
    // The ledger holds the tracked message, and it is what went out.
    for body in [
        d.body_text.as_str(),
        d.body_html.as_deref().unwrap(),
        s.eml.as_str(),
    ] {
        assert!(body.contains(&c0) && body.contains(&c1), "{body}");
        assert!(
            !body.contains("acme.example/pricing"),
            "destinations are not sent: {body}"
        );
        assert!(
            body.contains(&unsubscribe),
            "the unsubscribe link is never rewritten"
        );
    }
    assert!(d.body_html.as_deref().unwrap().contains(&pixel));
    assert!(!d.body_text.contains("/o/"), "no pixel in the text part");
    assert!(s.eml.contains(&pixel));
    // No personal data in any tracking URL.
    for url in [&c0, &c1, &pixel] {
        assert!(
            !url.contains("ada") && !url.contains("example.com/"),
            "{url}"
        );
    }

    let clock = VirtualClock::new(sent_at(s) + Duration::hours(2));
    let (app, state) = app(&store, &clock, TrackingConfig::default());
    let (code, headers, body) = call(&app, Method::GET, &pixel[BASE.len()..], Some(BROWSER)).await;
    assert_eq!(code, StatusCode::OK);
    assert!(is_gif(&headers, &body));
    clock.advance(Duration::minutes(3));
    let (code, headers, _) = call(&app, Method::GET, &c0[BASE.len()..], Some(BROWSER)).await;
    assert_eq!(code, StatusCode::FOUND);
    assert_eq!(
        headers[header::LOCATION],
        CASE_STUDY,
        "the &amp; is decoded once"
    );
    assert!(headers[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("no-store"));
    state.flush_tracking().await;

    let events = tracking_events(store.as_ref(), d.lead_id).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].event.kind, EventKind::Opened);
    assert_eq!(events[1].event.kind, EventKind::Clicked);
    for e in &events {
        assert_eq!(e.event.delivery_id, Some(d.id));
        assert_eq!(e.event.lead_id, d.lead_id);
        assert_eq!(e.event.source, "tracking");
        assert_eq!(detail(e)["automated"], false);
    }
    assert_eq!(detail(&events[1])["link"], 0);
    assert_eq!(events[0].event.occurred_at, sent_at(s) + Duration::hours(2));

    let facts = store
        .report_facts(&ReportQuery {
            campaign: Some("tracked".into()),
            since: t0(),
            until: t0() + Duration::days(10),
        })
        .await
        .unwrap();
    assert_eq!(facts.deliveries.len(), 1);
    assert!(facts.deliveries[0].opened && facts.deliveries[0].clicked);
}

/// Anything but a genuine click token for a stored link gets 404 and no redirect; query
/// parameters never choose the destination; the pixel answers every token alike.
async fn forged_tampered_and_cross_purpose_tokens_never_redirect(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let sent = send_campaign(
        store.as_ref(),
        dir.path(),
        "tracked",
        "[tracking]\nopens = true\nclicks = true",
        &["bob"],
    )
    .await;
    let d = &sent[0].delivery;
    let clock = VirtualClock::new(sent_at(&sent[0]) + Duration::hours(1));
    let (app, state) = app(&store, &clock, TrackingConfig::default());
    let good = click_token(SECRET, d.id, 1);
    let mut tampered = URL_SAFE_NO_PAD.decode(&good).unwrap();
    tampered[11] ^= 1; // link 0 instead of 1, tag unchanged
    let tampered = URL_SAFE_NO_PAD.encode(tampered);
    let other_secret = click_token(b"not-the-secret-at-all", d.id, 1);
    let no_such_link = click_token(SECRET, d.id, 7);
    let no_such_delivery = click_token(SECRET, DeliveryId(d.id.0 + 1000), 0);
    let open = open_token(SECRET, d.id);
    let unsubscribe = lead_token(SECRET, "unsubscribe", d.lead_id);
    for (what, path) in [
        ("tampered", format!("/c/{tampered}")),
        ("other secret", format!("/c/{other_secret}")),
        ("unknown link", format!("/c/{no_such_link}")),
        ("unknown delivery", format!("/c/{no_such_delivery}")),
        ("open token", format!("/c/{open}")),
        ("unsubscribe token", format!("/c/{unsubscribe}")),
        ("garbage", "/c/https%3A%2F%2Fevil.example".to_owned()),
        (
            "redirect parameter",
            format!("/c/{tampered}?url=https://evil.example&next=//evil.example"),
        ),
        ("extra path", format!("/c/{good}/https://evil.example")),
        ("empty", "/c/".to_owned()),
    ] {
        for method in [Method::GET, Method::HEAD] {
            let (code, headers, _) = call(&app, method.clone(), &path, Some(BROWSER)).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{what} {method}");
            assert!(
                headers.get(header::LOCATION).is_none(),
                "{what}: no redirect"
            );
        }
    }
    // A genuine token with redirect-looking parameters goes to its stored destination only.
    let (code, headers, _) = call(
        &app,
        Method::GET,
        &format!("/c/{good}?url=https://evil.example&redirect=https%3A%2F%2Fevil.example"),
        Some(BROWSER),
    )
    .await;
    assert_eq!(code, StatusCode::FOUND);
    assert_eq!(headers[header::LOCATION], PRICING);
    // HEAD answers like GET and records nothing.
    let (code, headers, _) = call(&app, Method::HEAD, &format!("/c/{good}"), Some(BROWSER)).await;
    assert_eq!(
        (code, &headers[header::LOCATION]),
        (StatusCode::FOUND, &PRICING.parse().unwrap())
    );
    let (code, headers, body) =
        call(&app, Method::HEAD, &format!("/o/{open}.gif"), Some(BROWSER)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/gif");
    assert!(body.is_empty());
    // The pixel is served whatever the token, and only a genuine one records an open.
    let forged_open = open_token(b"not-the-secret-at-all", d.id);
    for path in [
        format!("/o/{forged_open}.gif"),
        format!("/o/{good}.gif"),
        "/o/nonsense.gif".to_owned(),
        format!("/o/{}", "A".repeat(300)),
    ] {
        let (code, headers, body) = call(&app, Method::GET, &path, Some(BROWSER)).await;
        assert_eq!(code, StatusCode::OK, "{path}");
        assert!(is_gif(&headers, &body), "{path}");
    }
    state.flush_tracking().await;
    let events = tracking_events(store.as_ref(), d.lead_id).await;
    assert_eq!(
        events.iter().map(|e| e.event.kind).collect::<Vec<_>>(),
        vec![EventKind::Clicked],
        "only the genuine GET click is recorded"
    );
}

/// Apple's proxy, a scanner clicking within seconds of the send and a burst on every link
/// are flagged with their reason and left out of human rates and of the lead's history.
async fn machine_opens_and_clicks_are_flagged_and_left_out_of_human_rates(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let sent = send_campaign(
        store.as_ref(),
        dir.path(),
        "tracked",
        "[tracking]\nopens = true\nclicks = true",
        &["cat", "dan"],
    )
    .await;
    let (cat, dan) = (&sent[0], &sent[1]);
    let clock = VirtualClock::new(sent_at(cat) + Duration::seconds(2));
    let (app, state) = app(&store, &clock, TrackingConfig::default());
    let open = |s: &Sent| format!("/o/{}.gif", open_token(SECRET, s.delivery.id));
    let click = |s: &Sent, i: u32| format!("/c/{}", click_token(SECRET, s.delivery.id, i));

    // cat: a security gateway follows a link 2 s after the send, with a browser's user agent.
    let (code, _, _) = call(&app, Method::GET, &click(cat, 0), Some(BROWSER)).await;
    assert_eq!(
        code,
        StatusCode::FOUND,
        "a flagged click still reaches its destination"
    );
    // An hour later, Apple's proxy fetches the pixel.
    clock.advance(Duration::hours(1));
    call(&app, Method::GET, &open(cat), Some("Mozilla/5.0")).await;
    // A scanner named by its user agent.
    call(
        &app,
        Method::GET,
        &click(cat, 1),
        Some("Mozilla/5.0 (compatible; Barracuda Sentinel)"),
    )
    .await;
    state.flush_tracking().await;
    // dan, two hours after the send: every link within a second, in two batches, by a client
    // that looks like a browser.
    clock.advance(sent_at(dan) + Duration::hours(2) - clock.now());
    call(&app, Method::GET, &click(dan, 0), Some(BROWSER)).await;
    state.flush_tracking().await;
    clock.advance(Duration::milliseconds(300));
    call(&app, Method::GET, &click(dan, 1), Some(BROWSER)).await;
    // A person opens dan's message the next day.
    clock.advance(Duration::days(1));
    call(&app, Method::GET, &open(dan), Some(BROWSER)).await;
    state.flush_tracking().await;

    let reasons = |events: &[EventRecord]| -> Vec<(EventKind, String)> {
        events
            .iter()
            .map(|e| {
                let d = detail(e);
                let reason = if d["automated"] == true {
                    d["reason"].as_str().unwrap().to_owned()
                } else {
                    assert_eq!(d["automated"], false);
                    "person".to_owned()
                };
                (e.event.kind, reason)
            })
            .collect()
    };
    let cat_events = tracking_events(store.as_ref(), cat.delivery.lead_id).await;
    assert_eq!(
        reasons(&cat_events),
        vec![
            (EventKind::Clicked, "too_soon_after_send".to_owned()),
            (EventKind::Opened, "apple_mpp".to_owned()),
            (EventKind::Clicked, "security_scanner".to_owned()),
        ]
    );
    let dan_events = tracking_events(store.as_ref(), dan.delivery.lead_id).await;
    assert_eq!(
        reasons(&dan_events),
        vec![
            (EventKind::Clicked, "all_links_at_once".to_owned()),
            (EventKind::Clicked, "all_links_at_once".to_owned()),
            (EventKind::Opened, "person".to_owned()),
        ],
        "the first click of the burst is flagged once the burst is seen"
    );

    let facts = store
        .report_facts(&ReportQuery {
            campaign: Some("tracked".into()),
            since: t0(),
            until: t0() + Duration::days(10),
        })
        .await
        .unwrap();
    let fact = |s: &Sent| {
        facts
            .deliveries
            .iter()
            .find(|f| f.delivery_id == s.delivery.id)
            .unwrap()
            .clone()
    };
    assert!(
        !fact(cat).opened && !fact(cat).clicked,
        "machines only: no human open or click"
    );
    assert!(fact(dan).opened && !fact(dan).clicked);
    // The best-time model and fatigue read the history: machine events are not in it.
    let history = store
        .contact_history(&[cat.delivery.lead_id, dan.delivery.lead_id], t0())
        .await
        .unwrap();
    let kinds = |lead: LeadId| -> Vec<EventKind> {
        history
            .get(&lead)
            .map(|h| h.events.iter().map(|e| e.kind).collect())
            .unwrap_or_default()
    };
    assert!(
        kinds(cat.delivery.lead_id).is_empty(),
        "{:?}",
        kinds(cat.delivery.lead_id)
    );
    assert_eq!(kinds(dan.delivery.lead_id), vec![EventKind::Opened]);
}

/// A campaign without `[tracking]` sends its message untouched; one with clicks only gets
/// no pixel.
async fn campaigns_choose_what_is_tracked(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let plain = send_campaign(store.as_ref(), dir.path(), "plain", "", &["eve"]).await;
    let d = &plain[0].delivery;
    assert!(d.body_text.contains(CASE_STUDY) && d.body_text.contains(PRICING));
    assert!(plain[0].eml.contains(PRICING));
    let html = d.body_html.as_deref().unwrap();
    assert!(html.contains("https://acme.example/case-study?ref=mail&amp;x=1"));
    assert!(!html.contains("/o/") && !html.contains("/c/"), "{html}");
    assert_eq!(store.tracked_link(d.id, 0).await.unwrap(), None);

    let clicks = send_campaign(
        store.as_ref(),
        dir.path(),
        "clicks-only",
        "[tracking]\nclicks = true",
        &["fay"],
    )
    .await;
    let d = &clicks[0].delivery;
    assert!(!d.body_text.contains(PRICING));
    assert!(!d.body_html.as_deref().unwrap().contains("/o/"), "no pixel");
    assert_eq!(
        store.tracked_link(d.id, 1).await.unwrap().as_deref(),
        Some(PRICING)
    );
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
    a_tracked_email_records_a_persons_open_and_click,
    forged_tampered_and_cross_purpose_tokens_never_redirect,
    machine_opens_and_clicks_are_flagged_and_left_out_of_human_rates,
    campaigns_choose_what_is_tracked,
    a_full_queue_makes_requests_wait_and_loses_nothing,
    links_already_sent_survive_a_rotation_of_the_secret,
    erasure_and_retention_keep_machine_flags_and_drop_destinations,
);

/// Erasing a lead deletes its tracked links (their clicks then get 404) and blanks its events'
/// details but keeps the machine flag, as retention does, so human rates do not change.
async fn erasure_and_retention_keep_machine_flags_and_drop_destinations(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let sent = send_campaign(
        store.as_ref(),
        dir.path(),
        "tracked",
        "[tracking]\nopens = true\nclicks = true",
        &["hal", "ivy"],
    )
    .await;
    let (hal, ivy) = (&sent[0], &sent[1]);
    let clock = VirtualClock::new(sent_at(hal) + Duration::hours(1));
    let (app, state) = app(&store, &clock, TrackingConfig::default());
    for s in [hal, ivy] {
        let open = format!("/o/{}.gif", open_token(SECRET, s.delivery.id));
        call(&app, Method::GET, &open, Some("Mozilla/5.0")).await; // Apple's proxy
        call(&app, Method::GET, &open, Some(BROWSER)).await;
        let click = format!("/c/{}", click_token(SECRET, s.delivery.id, 0));
        call(&app, Method::GET, &click, Some("curl/8.5.0")).await;
    }
    state.flush_tracking().await;
    let flags = |events: &[EventRecord]| -> Vec<bool> {
        events
            .iter()
            .map(|e| detail(e)["automated"] == true)
            .collect()
    };
    let export = store.export_subject(hal.delivery.lead_id).await.unwrap();
    assert!(
        export.to_string().contains(PRICING),
        "the export has the tracked links"
    );
    store
        .erase_subject(
            hal.delivery.lead_id,
            &AuditEntry {
                at: t0() + Duration::days(3),
                action: "erasure".into(),
                subject: "lead:test".into(),
                detail: "test".into(),
                actor: "test".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(store.tracked_link(hal.delivery.id, 0).await.unwrap(), None);
    let (code, headers, _) = call(
        &app,
        Method::GET,
        &format!("/c/{}", click_token(SECRET, hal.delivery.id, 0)),
        Some(BROWSER),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(headers.get(header::LOCATION).is_none());
    assert_eq!(
        store
            .tracked_link(ivy.delivery.id, 0)
            .await
            .unwrap()
            .as_deref(),
        Some(CASE_STUDY)
    );
    let hal_events = tracking_events(store.as_ref(), hal.delivery.lead_id).await;
    assert_eq!(flags(&hal_events), vec![true, false, true]);
    assert!(hal_events
        .iter()
        .all(|e| !e.event.detail.contains("reason")));

    let cutoff = t0() + Duration::days(30);
    store
        .apply_retention(
            &engager_store::gdpr::RetentionCutoffs {
                bodies_before: cutoff,
                details_before: cutoff,
            },
            false,
        )
        .await
        .unwrap();
    let ivy_events = tracking_events(store.as_ref(), ivy.delivery.lead_id).await;
    assert_eq!(flags(&ivy_events), vec![true, false, true]);
    assert!(ivy_events.iter().all(|e| !e.event.detail.contains("link")));
    let facts = store
        .report_facts(&ReportQuery {
            campaign: None,
            since: t0(),
            until: t0() + Duration::days(10),
        })
        .await
        .unwrap();
    assert!(
        facts.deliveries.iter().all(|f| f.opened && !f.clicked),
        "{facts:?}"
    );
}

/// On a real port, with a writer that would hold its batch for a minute: stopping the server
/// writes every event that was answered before the process ends. The server has a store
/// handle of its own (`server_store`, on the same database), as `engager serve`'s process
/// would: its connections end with its runtime.
async fn a_graceful_shutdown_writes_every_queued_event(
    store: Arc<dyn Store>,
    server_store: Arc<dyn Store>,
) {
    let dir = tempfile::tempdir().unwrap();
    let sent = send_campaign(
        store.as_ref(),
        dir.path(),
        "tracked",
        "[tracking]\nopens = true\nclicks = true",
        &["gus"],
    )
    .await;
    let d = &sent[0].delivery;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = ServerState::new(server_store, ServerConfig::from_engine(&engine_config()))
        .unwrap()
        .with_tracking(TrackingConfig {
            batch_size: 100_000,
            flush_interval: StdDuration::from_secs(60),
            queue: 1_000,
            ..TrackingConfig::default()
        });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The server runs on its own runtime, dropped as soon as `serve_on` returns, as when
    // `engager serve`'s process exits: whatever was not written by then is lost.
    let listener = listener.into_std().unwrap();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let served = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            engager_server::serve_on(listener, state, async {
                let _ = stop_rx.await;
            })
            .await
        });
        runtime.shutdown_background();
        served
    });
    // Never follow the redirect: tests stay off the internet.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let pixel = format!("http://127.0.0.1:{port}/o/{}.gif", open_token(SECRET, d.id));
    let link = format!("http://127.0.0.1:{port}/c/{}", click_token(SECRET, d.id, 0));
    const N: usize = 120;
    let mut calls = Vec::new();
    for i in 0..N {
        let http = http.clone();
        let url = if i % 4 == 0 {
            link.clone()
        } else {
            pixel.clone()
        };
        calls.push(tokio::spawn(async move {
            http.get(url)
                .header(header::USER_AGENT, BROWSER)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for call in calls {
        let status = call.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::FOUND,
            "{status}"
        );
    }
    assert!(
        tracking_events(store.as_ref(), d.lead_id).await.is_empty(),
        "the writer still holds the batch"
    );
    stop_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || server.join())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let events = tracking_events(store.as_ref(), d.lead_id).await;
    assert_eq!(events.len(), N, "no event lost");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event.kind == EventKind::Clicked)
            .count(),
        N / 4
    );
}

/// A queue of two and a writer that would wait a minute: requests beyond the queue wait for
/// room (the writer is woken to write early), none is dropped or times out.
async fn a_full_queue_makes_requests_wait_and_loses_nothing(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let sent = send_campaign(
        store.as_ref(),
        dir.path(),
        "tracked",
        "[tracking]\nopens = true",
        &["joe"],
    )
    .await;
    let d = &sent[0].delivery;
    let clock = VirtualClock::new(sent_at(&sent[0]) + Duration::hours(1));
    let (app, state) = app(
        &store,
        &clock,
        TrackingConfig {
            batch_size: 100_000,
            flush_interval: StdDuration::from_secs(60),
            queue: 2,
            ..TrackingConfig::default()
        },
    );
    let pixel = format!("/o/{}.gif", open_token(SECRET, d.id));
    const N: usize = 60;
    let calls: Vec<_> = (0..N)
        .map(|_| {
            let (app, pixel) = (app.clone(), pixel.clone());
            tokio::spawn(async move { call(&app, Method::GET, &pixel, Some(BROWSER)).await.0 })
        })
        .collect();
    let answered = tokio::time::timeout(StdDuration::from_secs(20), async {
        let mut codes = Vec::new();
        for c in calls {
            codes.push(c.await.unwrap());
        }
        codes
    })
    .await
    .expect("requests waiting for room are served well before the writer's interval");
    assert!(answered.iter().all(|c| *c == StatusCode::OK));
    state.flush_tracking().await;
    assert_eq!(tracking_events(store.as_ref(), d.lead_id).await.len(), N);
}

/// After `links.secret` is rotated (the old one kept in `links.previous_secrets`), the pixel
/// and links of messages already sent keep working; a retired secret no longer verifies.
async fn links_already_sent_survive_a_rotation_of_the_secret(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let sent = send_campaign(
        store.as_ref(),
        dir.path(),
        "tracked",
        "[tracking]\nopens = true\nclicks = true",
        &["kay"],
    )
    .await;
    let d = &sent[0].delivery;
    let clock = VirtualClock::new(sent_at(&sent[0]) + Duration::hours(1));
    let mut config = ServerConfig::from_engine(&engine_config());
    config.link_secret = b"the-new-link-secret-after-rotation".to_vec();
    config.previous_link_secrets = vec![SECRET.to_vec()];
    let state =
        ServerState::with_clock(Arc::clone(&store), config, Arc::new(clock.clone())).unwrap();
    let app = router(state.clone());
    let (code, headers, _) = call(
        &app,
        Method::GET,
        &format!("/c/{}", click_token(SECRET, d.id, 1)),
        Some(BROWSER),
    )
    .await;
    assert_eq!(
        (code, &headers[header::LOCATION]),
        (StatusCode::FOUND, &PRICING.parse().unwrap())
    );
    call(
        &app,
        Method::GET,
        &format!("/o/{}.gif", open_token(SECRET, d.id)),
        Some(BROWSER),
    )
    .await;
    let (code, _, _) = call(
        &app,
        Method::GET,
        &format!("/c/{}", click_token(b"a-secret-never-configured", d.id, 1)),
        Some(BROWSER),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    state.flush_tracking().await;
    let kinds: Vec<EventKind> = tracking_events(store.as_ref(), d.lead_id)
        .await
        .iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(kinds, vec![EventKind::Clicked, EventKind::Opened]);
}

/// The graceful-shutdown test on both backends, with two handles on one database.
mod graceful_shutdown {
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let store = engager_store::open(&url).await.unwrap();
        let server_store = engager_store::open(&url).await.unwrap();
        super::a_graceful_shutdown_writes_every_queued_event(store, server_store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(url) = engager_testkit::postgres_url() else {
            return;
        };
        let schema = engager_testkit::unique_schema("graceful_shutdown");
        let connect = || engager_store::postgres::PgStore::connect_isolated(&url, &schema);
        let store = Arc::new(connect().await.unwrap());
        let server_store = Arc::new(connect().await.unwrap());
        super::a_graceful_shutdown_writes_every_queued_event(store, server_store).await;
    }
}
