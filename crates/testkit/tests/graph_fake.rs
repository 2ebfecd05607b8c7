//! The Graph fake enforces what Graph enforces (protocol notes §1.10), with raw HTTP.

use std::time::Duration;

use engager_testkit::graph::{FakeGraph, FakeGraphSetup};
use serde_json::{json, Value};

const TENANT: &str = "contoso.onmicrosoft.com";
const MAILBOX: &str = "maya@acme.example";

async fn start() -> FakeGraph {
    FakeGraph::start(FakeGraphSetup::new(TENANT, "client-1", "secret-1", MAILBOX))
        .await
        .unwrap()
}

async fn token(fake: &FakeGraph, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/{TENANT}/oauth2/v2.0/token",
            fake.authority_url()
        ))
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn bearer(fake: &FakeGraph) -> String {
    let (status, body) = token(
        fake,
        &[
            ("client_id", "client-1"),
            ("client_secret", "secret-1"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    body["access_token"].as_str().unwrap().to_owned()
}

async fn post(fake: &FakeGraph, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/users/{MAILBOX}/{path}", fake.graph_url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_token_endpoint_refuses_what_entra_id_refuses() {
    let fake = start().await;
    let base = [
        ("client_id", "client-1"),
        ("client_secret", "secret-1"),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
    ];
    let with = |name: &str, value: &'static str| {
        base.iter()
            .map(|(n, v)| (*n, if *n == name { value } else { *v }))
            .collect::<Vec<_>>()
    };
    let (status, body) = token(&fake, &with("client_secret", "wrong")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));
    let (status, body) = token(&fake, &with("scope", "Mail.Send")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let (status, body) = token(&fake, &with("client_id", "someone-else")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let (status, body) = token(&fake, &with("grant_type", "password")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    assert_eq!(fake.tokens_issued(), 0);
    bearer(&fake).await;
    assert_eq!(fake.tokens_issued(), 1);
}

#[tokio::test]
async fn mail_requests_need_a_valid_bearer_token() {
    let fake = start().await;
    let response = reqwest::Client::new()
        .get(format!("{}/users/{MAILBOX}/messages", fake.graph_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(body["error"]["message"], "Access token is empty.");
    let (status, _) = post(&fake, "made-up", "messages", &json!({})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn drafts_validate_headers_and_properties_then_send() {
    let fake = start().await;
    let token = bearer(&fake).await;
    let draft = |headers: Value| {
        json!({
            "subject": "Hi", "body": {"contentType": "Text", "content": "Hello"},
            "toRecipients": [{"emailAddress": {"address": "jane@example.com", "name": "Jane"}}],
            "internetMessageHeaders": headers,
        })
    };
    let (status, body) = post(
        &fake,
        &token,
        "messages",
        &draft(json!([{"name": "List-Unsubscribe", "value": "<https://x>"}])),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("InvalidInternetMessageHeader"))
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("should start with 'x-' or 'X-'"));
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"name": format!("X-H{i}"), "value": "v"}))
        .collect();
    let (status, body) = post(&fake, &token, "messages", &draft(Value::Array(six))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("InvalidInternetMessageHeaderCollection"))
    );
    let (status, body) = post(
        &fake,
        &token,
        "messages",
        &json!({"subject": "x", "listUnsubscribe": "y"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("RequestBodyRead"))
    );

    let (status, created) = post(
        &fake,
        &token,
        "messages",
        &draft(json!([{"name": "X-Engager-Delivery", "value": "7"}])),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["isDraft"], true);
    let id = created["id"].as_str().unwrap();
    assert!(created["internetMessageId"]
        .as_str()
        .unwrap()
        .starts_with('<'));
    assert!(created["conversationId"].is_string());
    assert!(fake.sent().is_empty());

    let response = reqwest::Client::new()
        .post(format!(
            "{}/users/{MAILBOX}/messages/{id}/send",
            fake.graph_url()
        ))
        .bearer_auth(&token)
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert!(response.text().await.unwrap().is_empty());
    assert_eq!(fake.sent().len(), 1);
    assert_eq!(fake.sent()[0].header("x-engager-delivery"), Some("7"));

    // sendMail: 202 with an empty body, no id at all.
    let (status, body) = post(
        &fake,
        &token,
        "sendMail",
        &json!({"message": draft(json!([])), "saveToSentItems": true}),
    )
    .await;
    assert_eq!((status, body), (202, Value::Null));
    assert_eq!(fake.sent().len(), 2);
}

#[tokio::test]
async fn a_fifth_concurrent_request_is_throttled() {
    let mut setup = FakeGraphSetup::new(TENANT, "client-1", "secret-1", MAILBOX);
    setup.latency = Duration::from_millis(100);
    let fake = FakeGraph::start(setup).await.unwrap();
    let token = bearer(&fake).await;
    let client = reqwest::Client::new();
    let url = format!(
        "{}/users/{MAILBOX}/mailFolders/inbox/messages",
        fake.graph_url()
    );
    let requests = (0..8).map(|_| client.get(&url).bearer_auth(&token).send());
    let mut statuses = Vec::new();
    let mut throttled_body = None;
    for response in futures_all(requests).await {
        let response = response.unwrap();
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            throttled_body = Some(response.json::<Value>().await.unwrap());
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        4,
        "{statuses:?}"
    );
    let body = throttled_body.unwrap();
    assert_eq!(body["error"]["code"], "ApplicationThrottled");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("MailboxConcurrency"));
}

async fn futures_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn listings_filter_select_page_and_refuse_inefficient_orders() {
    let fake = start().await;
    let token = bearer(&fake).await;
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    for i in 0..15 {
        fake.deliver(
            "a@example.com",
            &format!("m{i}"),
            "x",
            &[("In-Reply-To", "<x@y>")],
            Some("conv-A"),
            t0 + chrono::Duration::minutes(i),
        );
    }
    fake.deliver("b@example.com", "other", "x", &[], Some("conv-B"), t0);
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let response = client.get(url).bearer_auth(token).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let base = format!(
        "{}/users/{MAILBOX}/mailFolders/inbox/messages",
        fake.graph_url()
    );
    let (status, page) = get(format!(
        "{base}?$filter=conversationId eq 'conv-A' and receivedDateTime ge 2026-03-02T00:05:00Z&$top=4&$select=subject,internetMessageHeaders"
    ))
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["value"].as_array().unwrap().len(), 4);
    assert!(page["value"][0]["internetMessageHeaders"].is_array());
    assert!(
        page["value"][0].get("body").is_none(),
        "$select replaces the default fields"
    );
    let mut seen = 4;
    let mut next = page["@odata.nextLink"].as_str().map(str::to_owned);
    while let Some(link) = next {
        let (status, page) = get(link).await;
        assert_eq!(status, 200);
        seen += page["value"].as_array().unwrap().len();
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 10);
    let (_, page) = get(base.clone()).await;
    assert!(
        page["value"][0].get("internetMessageHeaders").is_none(),
        "headers only when selected"
    );
    assert_eq!(
        page["value"].as_array().unwrap().len(),
        10,
        "default page size"
    );

    let (status, body) = get(format!(
        "{base}?$filter=conversationId eq 'conv-A'&$orderby=receivedDateTime desc"
    ))
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("InefficientFilter"))
    );
    let (status, _) = get(format!("{base}?$top=1001")).await;
    assert_eq!(status, 400);
}
