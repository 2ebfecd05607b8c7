//! The Twilio fake enforces what Twilio enforces (protocol notes §2.9), with raw HTTP.

use engager_testkit::faults::Fault;
use engager_testkit::twilio::{FakeTwilio, FakeTwilioSetup};
use serde_json::Value;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "token-1";

async fn create(
    fake: &FakeTwilio,
    auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new()
        .post(format!(
            "{}/2010-04-01/Accounts/{SID}/Messages.json",
            fake.api_url()
        ))
        .form(form);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

#[tokio::test]
async fn basic_auth_and_the_account_are_checked() {
    let fake = FakeTwilio::start(FakeTwilioSetup::new(SID, TOKEN))
        .await
        .unwrap();
    let form = [
        ("To", "+14155550100"),
        ("From", "+14155550123"),
        ("Body", "Hi"),
    ];
    let (status, body, headers) = create(&fake, None, &form).await;
    assert_eq!((status, body["code"].as_u64()), (401, Some(20003)));
    assert!(headers
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let (status, _, _) = create(&fake, Some((SID, "wrong")), &form).await;
    assert_eq!(status, 401);
    let response = reqwest::Client::new()
        .post(format!(
            "{}/2010-04-01/Accounts/ACffffffffffffffffffffffffffffffff/Messages.json",
            fake.api_url()
        ))
        .basic_auth(SID, Some(TOKEN))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert!(fake.accepted().is_empty());
}

#[tokio::test]
async fn the_form_is_validated_and_the_resource_looks_like_twilios() {
    let fake = FakeTwilio::start(FakeTwilioSetup::new(SID, TOKEN))
        .await
        .unwrap();
    let auth = Some((SID, TOKEN));
    let cases: [(&[(&str, &str)], u64); 7] = [
        (&[("From", "+14155550123"), ("Body", "Hi")], 21604),
        (&[("To", "+14155550100"), ("Body", "Hi")], 21603),
        (&[("To", "+14155550100"), ("From", "+14155550123")], 21602),
        (
            &[("To", "555-0100"), ("From", "+14155550123"), ("Body", "Hi")],
            21211,
        ),
        (
            &[
                ("To", "+14155550100"),
                ("From", "+14155550123"),
                ("Body", "Hi"),
                ("StatusCallback", "not a url"),
            ],
            21609,
        ),
        (
            &[
                ("To", "+14155550100"),
                ("MessagingServiceSid", "MG1"),
                ("Body", "Hi"),
            ],
            21701,
        ),
        (
            &[
                ("To", "+14155550100"),
                ("From", "+14155550123"),
                ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
                ("Body", "Hi"),
            ],
            21603,
        ),
    ];
    for (form, code) in cases {
        let (status, body, _) = create(&fake, auth, form).await;
        assert_eq!(
            (status, body["code"].as_u64()),
            (400, Some(code)),
            "{form:?}: {body}"
        );
        assert_eq!(
            body["more_info"],
            format!("https://www.twilio.com/docs/errors/{code}")
        );
    }
    let long = "x".repeat(1601);
    let (status, body, _) = create(
        &fake,
        auth,
        &[
            ("To", "+14155550100"),
            ("From", "+14155550123"),
            ("Body", &long),
        ],
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(21617)));

    let (status, body, _) = create(
        &fake,
        auth,
        &[
            ("To", "+14155550100"),
            ("From", "+14155550123"),
            ("Body", "Hi"),
            ("MediaUrl", "https://a.example/1.png"),
            ("MediaUrl", "https://a.example/2.png"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["sid"].as_str().unwrap().starts_with("SM"));
    assert_eq!(body["status"], "queued");
    assert_eq!(body["num_segments"], "1", "numbers are strings");
    assert_eq!(body["num_media"], "0");
    assert!(body["error_code"].is_null());
    assert!(
        body["date_created"].as_str().unwrap().ends_with("+0000"),
        "RFC 2822 dates"
    );
    assert_eq!(body["direction"], "outbound-api");
    let media: Vec<_> = fake.accepted()[0]
        .params
        .iter()
        .filter(|(n, _)| n == "MediaUrl")
        .cloned()
        .collect();
    assert_eq!(media.len(), 2, "repeated keys are kept");

    let (status, body, _) = create(
        &fake,
        auth,
        &[
            ("To", "+14155550100"),
            ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
            ("Body", "Hi"),
        ],
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["num_segments"], "0");
}

#[tokio::test]
async fn accepted_then_dropped_logs_the_message_and_answers_nothing() {
    let fake = FakeTwilio::start(FakeTwilioSetup::new(SID, TOKEN))
        .await
        .unwrap();
    fake.fail_next(Fault::DropAfterAccept);
    let result = reqwest::Client::new()
        .post(format!(
            "{}/2010-04-01/Accounts/{SID}/Messages.json",
            fake.api_url()
        ))
        .basic_auth(SID, Some(TOKEN))
        .form(&[
            ("To", "+14155550100"),
            ("From", "+14155550123"),
            ("Body", "Hi"),
        ])
        .send()
        .await;
    assert!(result.is_err(), "no response: {result:?}");
    assert_eq!(fake.accepted().len(), 1);
    assert_eq!(fake.requests()[0].status, 0);
}
