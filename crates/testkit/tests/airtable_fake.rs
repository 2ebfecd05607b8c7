//! The fake Airtable speaks the documented wire format: checked with raw HTTP requests.

use std::time::Duration;

use engager_testkit::airtable::{FakeAirtable, FakeAirtableSetup, FakeRecord};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const BASE: &str = "appFAKETEST00001";
const PAT: &str = "patFAKE.secret";

async fn fake(records: usize, tweak: impl FnOnce(&mut FakeAirtableSetup)) -> FakeAirtable {
    let mut setup = FakeAirtableSetup::new(BASE, "Lead List", PAT);
    setup.records = (0..records)
        .map(|i| {
            FakeRecord::new(
                format!("rec{i:014}"),
                json!({
                    "Name": format!("Person {i}"),
                    "Status": if i % 2 == 0 { "Auto-Send" } else { "Sent" },
                    "Notes": "",
                    "Flag": false,
                }),
            )
        })
        .collect();
    setup.extra_fields = vec!["Date Messaged".into()];
    setup.requests_per_second = 1000;
    tweak(&mut setup);
    FakeAirtable::start(setup).await.expect("the fake starts")
}

struct Api {
    http: reqwest::Client,
    root: String,
}

impl Api {
    fn new(fake: &FakeAirtable) -> Self {
        Self {
            http: reqwest::Client::new(),
            root: fake.base_url().to_owned(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
        token: &str,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.root))
            .query(query)
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the fake answers");
        let status = response.status();
        let body = response.json::<Value>().await.expect("a JSON body");
        (status, body)
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        self.call(Method::GET, path, query, None, PAT).await
    }

    async fn write(&self, method: Method, body: Value) -> (StatusCode, Value) {
        self.call(
            method,
            "/appFAKETEST00001/Lead%20List",
            &[],
            Some(body),
            PAT,
        )
        .await
    }
}

const TABLE: &str = "/appFAKETEST00001/Lead%20List";

fn error_type(body: &Value) -> &str {
    body["error"]["type"].as_str().unwrap_or("")
}

#[tokio::test]
async fn auth_and_routing_errors_use_airtable_shapes() {
    let fake = fake(1, |_| {}).await;
    let api = Api::new(&fake);
    let (status, body) = api.call(Method::GET, TABLE, &[], None, "patWRONG").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&body), "AUTHENTICATION_REQUIRED");

    let (status, body) = api.get("/appOTHERBASE0001/Lead%20List", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "NOT_FOUND"}));

    let (status, body) = api.get("/appFAKETEST00001/Nope", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&body), "NOT_FOUND");

    let (status, _) = api.get("/appFAKETEST00001/tblFAKE00000000001", &[]).await;
    assert_eq!(status, StatusCode::OK, "the table id works like its name");
}

#[tokio::test]
async fn listing_pages_omit_empty_fields_and_check_parameters() {
    let fake = fake(7, |_| {}).await;
    let api = Api::new(&fake);
    let (status, body) = api.get(TABLE, &[("pageSize", "3")]).await;
    assert_eq!(status, StatusCode::OK);
    let records = body["records"].as_array().expect("records");
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["id"], "rec00000000000000");
    assert_eq!(records[0]["createdTime"], "2024-01-01T00:00:00.000Z");
    assert_eq!(
        records[0]["fields"],
        json!({"Name": "Person 0", "Status": "Auto-Send"}),
        "empty text and false checkboxes are omitted"
    );
    let mut offset = body["offset"].as_str().expect("more pages").to_owned();
    let mut seen = 3;
    loop {
        let (_, page) = api
            .get(TABLE, &[("pageSize", "3"), ("offset", &offset)])
            .await;
        seen += page["records"].as_array().map_or(0, Vec::len);
        match page["offset"].as_str() {
            Some(next) => offset = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, 7);

    let (_, body) = api.get(TABLE, &[("maxRecords", "2")]).await;
    assert_eq!(body["records"].as_array().map(Vec::len), Some(2));
    assert!(body.get("offset").is_none(), "the last page has no offset");

    let (_, body) = api.get(TABLE, &[("fields[]", "Name")]).await;
    assert_eq!(body["records"][1]["fields"], json!({"Name": "Person 1"}));

    for (query, expected) in [
        (("pageSize", "101"), "INVALID_REQUEST_UNKNOWN"),
        (("pageSize", "0"), "INVALID_REQUEST_UNKNOWN"),
        (("view", "No such view"), "VIEW_NAME_NOT_FOUND"),
        (
            ("offset", "itrBOGUS/rec1"),
            "LIST_RECORDS_ITERATOR_NOT_AVAILABLE",
        ),
        (("sort[0][field]", "Name"), "INVALID_REQUEST_UNKNOWN"),
        (("fields[]", "Nope"), "UNKNOWN_FIELD_NAME"),
        (
            ("filterByFormula", "{Status}!='Sent'"),
            "INVALID_FILTER_BY_FORMULA",
        ),
        (
            ("filterByFormula", "{Nope}='x'"),
            "INVALID_FILTER_BY_FORMULA",
        ),
    ] {
        let (status, body) = api.get(TABLE, &[query]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query:?}");
        assert_eq!(error_type(&body), expected, "{query:?}");
    }

    let (_, body) = api
        .get(
            TABLE,
            &[(
                "filterByFormula",
                "OR(RECORD_ID()='rec00000000000001', {Status}='Auto-Send')",
            )],
        )
        .await;
    assert_eq!(body["records"].as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn expired_iterators_answer_422_once() {
    let fake = fake(5, |_| {}).await;
    let api = Api::new(&fake);
    let (_, first) = api.get(TABLE, &[("pageSize", "2")]).await;
    let offset = first["offset"].as_str().expect("offset").to_owned();
    fake.expire_iterators();
    let (status, body) = api
        .get(TABLE, &[("pageSize", "2"), ("offset", &offset)])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_type(&body), "LIST_RECORDS_ITERATOR_NOT_AVAILABLE");
    let (_, again) = api.get(TABLE, &[("pageSize", "2")]).await;
    let offset = again["offset"].as_str().expect("offset").to_owned();
    let (status, _) = api
        .get(TABLE, &[("pageSize", "2"), ("offset", &offset)])
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn patch_merges_put_replaces_and_batches_are_checked_whole() {
    let fake = fake(12, |_| {}).await;
    let api = Api::new(&fake);
    let (status, body) = api
        .write(
            Method::PATCH,
            json!({"records": [{"id": "rec00000000000000", "fields": {"Status": "Sent", "Date Messaged": "2024-05-06"}}], "typecast": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        fake.record("rec00000000000000")
            .map(|r| Value::Object(r.fields)),
        Some(json!({"Name": "Person 0", "Status": "Sent", "Date Messaged": "2024-05-06"}))
    );
    assert_eq!(body["records"][0]["fields"]["Name"], "Person 0");

    let (status, _) = api
        .write(
            Method::PUT,
            json!({"records": [{"id": "rec00000000000001", "fields": {"Status": "Auto-Send"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fake.record("rec00000000000001")
            .map(|r| Value::Object(r.fields)),
        Some(json!({"Status": "Auto-Send"})),
        "PUT clears the fields it does not name"
    );

    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"id": format!("rec{i:014}"), "fields": {"Status": "Sent"}}))
        .collect();
    let (status, body) = api.write(Method::PATCH, json!({ "records": eleven })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_type(&body), "INVALID_RECORDS");

    let (status, body) = api
        .write(
            Method::PATCH,
            json!({"records": [{"id": "rec00000000000002", "fields": {"Stauts": "Sent"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_type(&body), "UNKNOWN_FIELD_NAME");

    let (status, body) = api
        .write(
            Method::PATCH,
            json!({"records": [
                {"id": "rec00000000000003", "fields": {"Status": "Changed"}},
                {"id": "recMISSING000000", "fields": {"Status": "Changed"}},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_type(&body), "ROW_DOES_NOT_EXIST");
    assert_eq!(
        fake.record("rec00000000000003")
            .and_then(|r| r.fields.get("Status").cloned()),
        Some(json!("Sent")),
        "a rejected batch changes nothing"
    );

    let (status, body) = api
        .write(
            Method::POST,
            json!({"records": [{"fields": {"Name": "New Person"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = body["records"][0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        fake.record(&id).map(|r| Value::Object(r.fields)),
        Some(json!({"Name": "New Person"}))
    );
}

#[tokio::test]
async fn the_bucket_refuses_a_burst_beyond_5_and_then_everything_for_the_penalty() {
    let fake = fake(1, |setup| {
        setup.requests_per_second = 5;
        setup.penalty = Duration::from_millis(1000);
    })
    .await;
    let api = Api::new(&fake);
    let mut statuses = Vec::new();
    while statuses.len() < 20 && statuses.last() != Some(&StatusCode::TOO_MANY_REQUESTS) {
        statuses.push(api.get(TABLE, &[]).await.0);
    }
    let refused_at = statuses.len() - 1;
    assert_eq!(statuses[refused_at], StatusCode::TOO_MANY_REQUESTS);
    assert!(refused_at >= 5, "the bucket holds 5 requests: {statuses:?}");
    assert!(statuses[..refused_at].iter().all(|s| *s == StatusCode::OK));

    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = api.get(TABLE, &[]).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "still in the penalty box"
    );
    assert_eq!(error_type(&body), "TOO_MANY_REQUESTS");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(api.get(TABLE, &[]).await.0, StatusCode::OK);

    let log = fake.requests();
    assert_eq!(log.len(), refused_at + 3);
    assert_eq!(log[refused_at].status, 429);
}

#[tokio::test]
async fn scripted_failures_come_first_and_run_out() {
    let fake = fake(1, |_| {}).await;
    let api = Api::new(&fake);
    fake.fail_next(
        2,
        500,
        json!({"error": {"type": "SERVER_ERROR", "message": "boom"}}),
    );
    assert_eq!(
        api.get(TABLE, &[]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let (status, _) = api.call(Method::GET, TABLE, &[], None, "patWRONG").await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "even before the auth check"
    );
    assert_eq!(api.get(TABLE, &[]).await.0, StatusCode::OK);
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}
