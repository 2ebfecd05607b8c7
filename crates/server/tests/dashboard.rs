//! The dashboard and `/metrics` through the router (`tower::ServiceExt::oneshot`): access
//! (disabled without a token, login redirect, wrong token, session cookie, logout, cross-site
//! posts, open redirects), escaping of data, figures equal to the report's, and the latency
//! histograms. Store-backed tests run on SQLite and on PostgreSQL (when
//! `ENGAGER_TEST_DATABASE_URL` is set).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use engager_domain::{Channel, CountryCode, EmailAddress, EventKind, LeadId, NewLead};
use engager_engine::monitor::MonitorSettings;
use engager_engine::report::{build, Dimension};
use engager_engine::VirtualClock;
use engager_server::dashboard::DashboardConfig;
use engager_server::{default_help_reply, router, ServerConfig, ServerState};
use engager_store::*;
use tower::ServiceExt;

const ADMIN: &str = "dashboard-admin-token-for-the-tests-0123";
const BASE: &str = "https://engager.example.com";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T15:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn config() -> ServerConfig {
    ServerConfig {
        public_base_url: BASE.to_owned(),
        link_secret: b"link-secret-for-the-dashboard-tests".to_vec(),
        previous_link_secrets: Vec::new(),
        company: "Acme Analytics".into(),
        help_reply: default_help_reply("Acme Analytics", "Maya Chen", "maya@acme.example"),
        twilio: None,
        max_body_bytes: 16 * 1024,
        request_timeout: StdDuration::from_secs(10),
    }
}

fn dashboard() -> DashboardConfig {
    DashboardConfig {
        admin_token: ADMIN.into(),
        monitor: MonitorSettings::default(),
        channels: vec![Channel::Email, Channel::Sms],
        accounts: Vec::new(),
        sender_domain: None,
    }
}

fn app(store: Arc<dyn Store>, with_dashboard: bool) -> Router {
    let clock = VirtualClock::new(t0() + Duration::days(1));
    let state = ServerState::with_clock(store, config(), Arc::new(clock)).unwrap();
    router(if with_dashboard {
        state.with_dashboard(dashboard())
    } else {
        state
    })
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn bearer(path: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap()
}

fn form(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

const CAMPAIGN: &str = r#"
slug = "ab-test"
name = "Launch <b>\"loud\"</b> & co"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "hello"
channels = ["email"]
subject = "Hello {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, a quick note."
[[steps.variants]]
name = "a"
subject = "Subject <A>"
[[steps.variants]]
name = "b"
subject = "Subject B"
"#;

/// Six leads (the first one's industry is a script tag), each sent one email of the A/B step
/// at t0 (variants a, b alternating), accepted 90 s after its due time; four delivered 30
/// minutes later; leads 1 and 2 replied, lead 0 opened, lead 3 unsubscribed.
async fn seed(store: &dyn Store) -> Vec<LeadId> {
    let leads: Vec<NewLead> = (0..6)
        .map(|i| NewLead {
            email: Some(EmailAddress::parse(&format!("p{i}@example.com")).unwrap()),
            first_name: Some(format!("P{i}")),
            industry: Some(if i == 0 {
                "<script>alert(\"x\")</script>".into()
            } else {
                "Software".into()
            }),
            country: Some(CountryCode::parse(if i % 2 == 0 { "DE" } else { "US" }).unwrap()),
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
        .save_campaign("ab-test", "Launch <b>\"loud\"</b> & co", CAMPAIGN, t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    let due = store.due_enrollments(t0(), None, 10).await.unwrap();
    let evals: Vec<Evaluation> = due
        .iter()
        .map(|d| {
            let i = ids.iter().position(|id| *id == d.lead.id).unwrap();
            Evaluation {
                trace: TraceRecord {
                    enrollment_id: d.enrollment.id,
                    campaign_id: d.enrollment.campaign_id,
                    lead_id: d.lead.id,
                    step_index: 0,
                    evaluated_at: t0(),
                    outcome: "planned".into(),
                    code: None,
                    channel: Some(Channel::Email),
                    at: Some(t0()),
                    gates: vec![],
                },
                decision: PlanDecision::Plan(NewDelivery {
                    channel: Channel::Email,
                    send_at: t0(),
                    to_address: format!("p{i}@example.com"),
                    subject: Some("Hello".into()),
                    body_text: "Hi".into(),
                    body_html: None,
                    variant: Some(if i % 2 == 0 { "a" } else { "b" }.into()),
                }),
            }
        })
        .collect();
    store.record_evaluations(&evals, t0()).await.unwrap();
    let sent_at = t0() + Duration::seconds(90);
    let claimed = store
        .claim_due_deliveries(sent_at, 10, "test", Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 6);
    let mut by_lead = std::collections::HashMap::new();
    for d in &claimed {
        assert!(store
            .begin_send(d.id, d.fencing_token, sent_at, Duration::minutes(5))
            .await
            .unwrap());
        assert!(store
            .record_outcome(
                d.id,
                d.fencing_token,
                &SendOutcome::Sent {
                    provider_ref: format!("<m{}@example.com>", d.id.0)
                },
                &FollowUp::Complete,
                sent_at,
            )
            .await
            .unwrap());
        by_lead.insert(d.lead_id, d.id);
    }
    let event = |i: usize, kind: EventKind, minutes: i64| NewEvent {
        lead_id: ids[i],
        delivery_id: Some(by_lead[&ids[i]]),
        kind,
        occurred_at: sent_at + Duration::minutes(minutes),
        detail: "{}".into(),
        source: "test".into(),
    };
    for e in [
        event(0, EventKind::Delivered, 30),
        event(1, EventKind::Delivered, 30),
        event(2, EventKind::Delivered, 30),
        event(3, EventKind::Delivered, 30),
        event(0, EventKind::Opened, 60),
        event(1, EventKind::Replied, 120),
        event(2, EventKind::Replied, 180),
        event(3, EventKind::Unsubscribed, 240),
    ] {
        store.record_event(&e).await.unwrap();
    }
    ids
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    let store = engager_store::open(&url).await.unwrap();
    (dir, store)
}

// --- access -----------------------------------------------------------------------------------

#[tokio::test]
async fn without_an_admin_token_the_dashboard_is_disabled_and_says_how_to_enable_it() {
    let (_dir, store) = sqlite().await;
    let app = app(store, false);
    for path in ["/dashboard", "/dashboard/health", "/dashboard/login"] {
        let (status, _, body) = call(&app, bearer(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(body.contains("ENGAGER_SERVER__ADMIN_TOKEN"), "{body}");
    }
    let (status, _, _) = call(&app, form("/dashboard/login", &format!("token={ADMIN}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The public routes are unaffected.
    let (status, _, _) = call(&app, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn login_sets_a_session_cookie_that_works_until_logout_and_wrong_tokens_are_refused() {
    let (_dir, store) = sqlite().await;
    let app = app(store, true);
    // No credentials: to the login page, remembering where to go.
    let (status, headers, _) = call(&app, get("/dashboard/health?period=7d")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/dashboard/login?next=%2Fdashboard%2Fhealth%3Fperiod%3D7d"
    );
    let (status, _, body) = call(&app, get("/dashboard/login?next=%2Fdashboard%2Fhealth")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("type=\"password\"") && body.contains("value=\"/dashboard/health\""));
    // A wrong bearer token: 401, nothing shown.
    let wrong = Request::get("/dashboard")
        .header(header::AUTHORIZATION, "Bearer not-the-token")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = call(&app, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    assert!(!body.contains("Overview"));
    // A wrong token in the form: 401, the form again, no cookie.
    let (status, headers, body) = call(&app, form("/dashboard/login", "token=nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!headers.contains_key(header::SET_COOKIE));
    assert!(body.contains("not the admin token"));
    // The right token: a cookie (HttpOnly, SameSite=Strict, Secure for an https base URL,
    // not the token) and back to where the user was going.
    let (status, headers, _) = call(
        &app,
        form(
            "/dashboard/login",
            &format!("token={ADMIN}&next=%2Fdashboard%2Fhealth"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard/health");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/dashboard"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains(ADMIN),
        "the cookie must not hold the token"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |path: &str| {
        Request::get(path)
            .header(header::COOKIE, session.clone())
            .body(Body::empty())
            .unwrap()
    };
    let (status, headers, body) = call(&app, with_cookie("/dashboard/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Queue and channel health"));
    // Same-origin referrers: browsers then send `Origin` on the login and logout POSTs.
    assert_eq!(headers[header::REFERRER_POLICY], "same-origin");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    // A tampered cookie is not a session.
    let tampered = Request::get("/dashboard")
        .header(header::COOKIE, format!("{session}0"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, tampered).await.0, StatusCode::SEE_OTHER);
    // Logout is a POST that deletes the cookie.
    let logout = Request::post("/dashboard/logout")
        .header(header::COOKIE, session.clone())
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = call(&app, logout).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cleared = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("engager_dashboard=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // GET never logs out (no state-changing GETs).
    assert_eq!(
        call(&app, get("/dashboard/logout")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn cross_site_posts_and_open_redirects_are_refused() {
    let (_dir, store) = sqlite().await;
    let app = app(store, true);
    let cross = Request::post("/dashboard/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::HOST, "engager.example.com")
        .body(Body::from(format!("token={ADMIN}")))
        .unwrap();
    let (status, headers, _) = call(&app, cross).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!headers.contains_key(header::SET_COOKIE));
    // An opaque origin (a sandboxed frame, a data: page) is not ours either.
    let opaque = Request::post("/dashboard/logout")
        .header(header::ORIGIN, "null")
        .header(header::HOST, "engager.example.com")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, opaque).await.0, StatusCode::FORBIDDEN);
    let same = Request::post("/dashboard/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .header(header::HOST, "127.0.0.1:8080")
        .body(Body::from(format!(
            "token={ADMIN}&next=https%3A%2F%2Fevil.example%2Fdashboard"
        )))
        .unwrap();
    let (status, headers, _) = call(&app, same).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard");
    for next in [
        "%2F%2Fevil.example%2Fdashboard",
        "%2Fdashboardx",
        "%2Fmetrics",
    ] {
        let (_, headers, _) = call(
            &app,
            form("/dashboard/login", &format!("token={ADMIN}&next={next}")),
        )
        .await;
        assert_eq!(headers[header::LOCATION], "/dashboard", "{next}");
    }
}

// --- content ------------------------------------------------------------------------------------

#[tokio::test]
async fn data_is_escaped_everywhere_it_is_shown() {
    let (_dir, store) = sqlite().await;
    seed(store.as_ref()).await;
    store
        .save_account_state(&AccountState {
            account: "email:smtp".into(),
            circuit: "open".into(),
            open_until: Some(t0() + Duration::days(2)),
            last_error: Some("<img src=x onerror=alert(1)>".into()),
            updated_at: t0(),
        })
        .await
        .unwrap();
    let app = app(store, true);
    let mut pages = String::new();
    for path in [
        "/dashboard?period=all",
        "/dashboard/campaigns/ab-test?period=all",
        "/dashboard/experiments/ab-test/1",
        "/dashboard/health",
        "/dashboard/campaigns/%3Cscript%3E",
        "/dashboard?period=%3Cscript%3E",
    ] {
        let (_, _, body) = call(&app, bearer(path)).await;
        pages.push_str(&body);
    }
    assert!(
        !pages.contains("<script"),
        "a raw script tag reached a page"
    );
    assert!(
        !pages.contains("<img src=x"),
        "raw HTML from data reached a page"
    );
    assert!(pages.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
    assert!(pages.contains("Launch &lt;b&gt;&quot;loud&quot;&lt;/b&gt; &amp; co"));
    assert!(pages.contains("Subject &lt;A&gt;"));
    assert!(pages.contains("&lt;img src=x onerror=alert(1)&gt;"));
}

#[tokio::test]
async fn bad_parameters_and_unknown_pages_get_clear_errors() {
    let (_dir, store) = sqlite().await;
    seed(store.as_ref()).await;
    let app = app(store, true);
    let (status, _, body) = call(&app, bearer("/dashboard?period=5y")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("period=&quot;5y&quot; is not a known period"),
        "{body}"
    );
    let (status, _, body) = call(&app, bearer("/dashboard/campaigns/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("There is no campaign &quot;nope&quot;"));
    let (status, _, _) = call(&app, bearer("/dashboard/experiments/ab-test/2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(&app, bearer("/dashboard/nothing-here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The rate cell the dashboard shows for a report rate.
fn cell(r: &engager_engine::report::Rate) -> String {
    format!(
        "{:.1}%<br><small class=\"muted\">[{:.1}–{:.1}]</small>",
        r.rate * 100.0,
        r.low * 100.0,
        r.high * 100.0
    )
}

async fn pages_show_the_reports_figures(store: Arc<dyn Store>) {
    seed(store.as_ref()).await;
    let facts = store
        .report_facts(&ReportQuery {
            campaign: None,
            since: DateTime::<Utc>::UNIX_EPOCH,
            until: t0() + Duration::days(1),
        })
        .await
        .unwrap();
    let app = app(Arc::clone(&store), true);

    let (status, _, overview) = call(&app, bearer("/dashboard?period=all")).await;
    assert_eq!(status, StatusCode::OK);
    let by_campaign = build(&facts, Dimension::Campaign, 0.95);
    let total = &by_campaign.total;
    // What was seeded: 6 sent, 4 delivered, 2 replies, 1 unsubscribe.
    assert_eq!(
        (
            total.sent,
            total.delivered,
            total.replied,
            total.unsubscribed
        ),
        (6, 4, 2, 1)
    );
    assert!(overview.contains("<div class=\"v\">6</div><div class=\"i\">4 delivered</div>"));
    assert!(overview.contains("<div class=\"k\">Reply rate</div><div class=\"v\">33.3%</div>"));
    for key in ["reply", "positive_reply", "bounce", "unsubscribe", "open"] {
        assert!(
            overview.contains(&cell(&total.rates[key])),
            "the overview lacks the {key} rate {:?}",
            total.rates[key]
        );
    }
    assert!(
        overview.contains("6 leads (100.0%)"),
        "the funnel's first stage"
    );
    assert!(
        overview.contains("2 leads (33.3%)"),
        "the funnel's replied stage"
    );

    let (status, _, page) = call(&app, bearer("/dashboard/campaigns/ab-test?period=all")).await;
    assert_eq!(status, StatusCode::OK);
    let by_variant = build(&facts, Dimension::Variant, 0.95);
    assert_eq!(by_variant.rows.len(), 2);
    for row in &by_variant.rows {
        assert_eq!(row.sent, 3);
        let shown = format!(
            "<td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            row.key,
            row.leads,
            row.sent,
            cell(&row.rates["open"])
        );
        assert!(page.contains(&shown), "the variant row {shown}");
    }
    // The experiment's verdict, as `engager ab results` judges it.
    assert!(page.contains("needs more data: variant a needs 197 more sends"));

    let (_, _, health) = call(&app, bearer("/dashboard/health")).await;
    // The ledger: six email deliveries in state sent.
    let sent_col = engager_domain::DeliveryState::ALL
        .iter()
        .position(|s| *s == engager_domain::DeliveryState::Sent)
        .unwrap();
    let mut expected = String::from("<tr><td>email</td>");
    for i in 0..engager_domain::DeliveryState::ALL.len() {
        expected.push_str(if i == sent_col {
            "<td class=\"n\">6</td>"
        } else {
            "<td class=\"n\">0</td>"
        });
    }
    assert!(health.contains(&expected), "{expected}");

    let (_, _, compliance) = call(&app, bearer("/dashboard/compliance?period=all")).await;
    assert!(compliance.contains("<div class=\"k\">Unsubscribes</div><div class=\"v\">1</div>"));
    assert!(compliance.contains("<tr><td>email</td><td class=\"n\">6</td><td class=\"n\">1</td>"));

    let (_, _, deliverability) = call(&app, bearer("/dashboard/deliverability")).await;
    // Six sends are under the monitor's minimum sample: learning.
    assert!(deliverability.contains("<td>email</td><td><span class=\"muted\">learning</span>"));
}

async fn metrics_have_latency_histograms(store: Arc<dyn Store>) {
    seed(store.as_ref()).await;
    let app = app(Arc::clone(&store), true);
    // One dashboard request and one health check, then the scrape.
    assert_eq!(
        call(&app, bearer("/dashboard/health")).await.0,
        StatusCode::OK
    );
    assert_eq!(call(&app, get("/healthz")).await.0, StatusCode::OK);
    let (status, _, text) = call(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    // Existing metric names are kept.
    assert!(text.contains("engager_deliveries{channel=\"email\",state=\"sent\"} 6"));
    // Every email was accepted 90 s after its due time.
    for line in [
        "# TYPE engager_send_delay_seconds histogram",
        "engager_send_delay_seconds_bucket{channel=\"email\",le=\"60\"} 0",
        "engager_send_delay_seconds_bucket{channel=\"email\",le=\"300\"} 6",
        "engager_send_delay_seconds_bucket{channel=\"email\",le=\"+Inf\"} 6",
        "engager_send_delay_seconds_sum{channel=\"email\"} 540",
        "engager_send_delay_seconds_count{channel=\"email\"} 6",
        // Four delivery reports, 30 minutes after sending.
        "engager_delivery_report_seconds_bucket{channel=\"email\",le=\"900\"} 0",
        "engager_delivery_report_seconds_bucket{channel=\"email\",le=\"3600\"} 4",
        "engager_delivery_report_seconds_count{channel=\"email\"} 4",
        "engager_delivery_report_seconds_sum{channel=\"email\"} 7200",
        "# TYPE engager_http_request_duration_seconds histogram",
        "engager_http_request_duration_seconds_count{route=\"/dashboard/health\",method=\"GET\",status=\"2xx\"} 1",
        "engager_http_request_duration_seconds_count{route=\"/healthz\",method=\"GET\",status=\"2xx\"} 1",
        "engager_http_request_duration_seconds_bucket{route=\"/healthz\",method=\"GET\",status=\"2xx\",le=\"+Inf\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Buckets are cumulative.
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("engager_send_delay_seconds_bucket{channel=\"email\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    // No SMS was sent: no SMS series.
    assert!(!text.contains("engager_send_delay_seconds_count{channel=\"sms\"}"));
}

fn api(token: Option<&str>, body: &str) -> Request<Body> {
    let mut r =
        Request::post("/api/v1/conversions").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

/// The conversions API: admin token required, bad bodies named, a conversion recorded once
/// per external id, and it counts like `engager convert`.
async fn the_conversions_api_records_a_conversion_once(store: Arc<dyn Store>) {
    let ids = seed(store.as_ref()).await;
    let without = app(Arc::clone(&store), false);
    let (code, _, _) = call(&without, api(Some(ADMIN), r#"{"lead": 1}"#)).await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "disabled without an admin token"
    );
    let app = app(Arc::clone(&store), true);
    let (code, headers, _) = call(&app, api(None, r#"{"lead": 1}"#)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    let (code, _, _) = call(
        &app,
        api(
            Some("wrong-token-wrong-token-wrong-token"),
            r#"{"lead": 1}"#,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    for (body, field) in [
        ("not json", "(body)"),
        ("[1]", "(body)"),
        (r#"{"value": 5}"#, "lead"),
        (r#"{"lead": true}"#, "lead"),
        (r#"{"lead": 1, "value": -3}"#, "value"),
        (r#"{"lead": 1, "value": "ten"}"#, "value"),
        (r#"{"lead": 1, "amount": 10}"#, "amount"),
        (r#"{"lead": 1, "kind": 7}"#, "kind"),
    ] {
        let (code, _, text) = call(&app, api(Some(ADMIN), body)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["field"], field, "{body}: {text}");
    }
    let (code, _, _) = call(&app, api(Some(ADMIN), r#"{"lead": 999999}"#)).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let before = store.events_for_lead(ids[1]).await.unwrap().len();
    let body =
        r#"{"lead": "P1@example.com", "value": 1200.5, "kind": "meeting", "external_id": "crm-9"}"#;
    let (code, _, text) = call(&app, api(Some(ADMIN), body)).await;
    assert_eq!(code, StatusCode::CREATED, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["lead_id"], ids[1].0);
    assert_eq!(v["duplicate"], false);
    // The CRM retries: nothing new.
    let (code, _, text) = call(&app, api(Some(ADMIN), body)).await;
    assert_eq!(code, StatusCode::OK);
    assert!(text.contains("\"duplicate\":true"), "{text}");
    let events = store.events_for_lead(ids[1]).await.unwrap();
    assert_eq!(events.len(), before + 1);
    let conversion = events
        .iter()
        .find(|e| e.event.kind == EventKind::Converted)
        .unwrap();
    assert_eq!(conversion.event.source, "api");
    assert!(
        conversion.event.detail.contains("1200.5") && conversion.event.detail.contains("meeting")
    );
    // Reports count it.
    let facts = store
        .report_facts(&ReportQuery {
            campaign: None,
            since: t0() - Duration::days(1),
            until: t0() + Duration::days(30),
        })
        .await
        .unwrap();
    assert_eq!(
        facts
            .conversions
            .iter()
            .filter(|c| c.lead_id == ids[1])
            .count(),
        1
    );
}
/// Two SMTP accounts on one domain, one of them halted by the monitor: the deliverability
/// page lists both with their figures, and the halted one with why and the command that
/// lifts the halt.
async fn halted_accounts_show_with_their_resume_command(store: Arc<dyn Store>) {
    const MAYA: &str = "email:smtp:maya@acme.example";
    const SAM: &str = "email:smtp:sam@acme.example";
    store
        .set_account_halt(&AccountHalt {
            key: format!("account:{MAYA}"),
            halted: true,
            reason: "hard bounces 12.0% (6 of 50 sent) is above the halt level of 5.0%".into(),
            changed_by: "monitor".into(),
            changed_at: t0(),
        })
        .await
        .unwrap();
    let clock = VirtualClock::new(t0() + Duration::days(1));
    let state = ServerState::with_clock(store, config(), Arc::new(clock))
        .unwrap()
        .with_dashboard(DashboardConfig {
            accounts: vec![(Channel::Email, MAYA.into()), (Channel::Email, SAM.into())],
            sender_domain: Some("acme.example".into()),
            ..dashboard()
        });
    let app = router(state);
    let (status, _, page) = call(&app, bearer("/dashboard/deliverability")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<h2>Per sending account and domain</h2>"),
        "{page}"
    );
    let row = |name: &str| {
        let start = page
            .find(&format!("<td>account</td><td>{name}</td>"))
            .unwrap_or_else(|| panic!("no row for {name}: {page}"));
        page[start..start + page[start..].find("</tr>").unwrap()].to_owned()
    };
    let maya = row(MAYA);
    assert!(maya.contains("<span class=\"bad\">halted</span>"), "{maya}");
    assert!(maya.contains("hard bounces 12.0%"), "{maya}");
    assert!(
        maya.contains(&format!("engager deliverability resume --account {MAYA}")),
        "{maya}"
    );
    let sam = row(SAM);
    assert!(!sam.contains("halted"), "{sam}");
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_dir, store) = super::sqlite().await;
                    super::$name(store).await;
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
    pages_show_the_reports_figures,
    metrics_have_latency_histograms,
    the_conversions_api_records_a_conversion_once,
    halted_accounts_show_with_their_resume_command
);

#[tokio::test]
async fn under_a_base_path_links_redirects_and_the_cookie_stay_under_it() {
    let (_dir, store) = sqlite().await;
    let mut config = config();
    config.public_base_url = "https://example.com/engager".into();
    let state = ServerState::with_clock(
        store,
        config,
        Arc::new(VirtualClock::new(t0() + Duration::days(1))),
    )
    .unwrap()
    .with_dashboard(dashboard());
    let app = router(state);
    let (status, headers, _) = call(&app, get("/engager/dashboard")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/engager/dashboard/login?next=%2Fengager%2Fdashboard"
    );
    let (status, headers, _) = call(
        &app,
        form(
            "/engager/dashboard/login",
            &format!("token={ADMIN}&next=%2Fengager%2Fdashboard%2Fhealth"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/engager/dashboard/health");
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Path=/engager/dashboard;"));
    let (status, _, body) = call(&app, bearer("/engager/dashboard")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("href=\"/engager/dashboard/health\""));
    assert!(body.contains("action=\"/engager/dashboard/logout\""));
    // Not at the root.
    assert_eq!(
        call(&app, bearer("/dashboard")).await.0,
        StatusCode::NOT_FOUND
    );
}
