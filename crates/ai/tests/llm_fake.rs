//! The LLM client and the regenerate-or-fall-back chain against the fake OpenAI-compatible
//! server: valid output, invalid JSON, gate failures, refusals, 429s, quota, timeouts and the
//! run's token budget.

use std::time::Duration;

use engager_ai::gate::{CheckContext, GateConfig};
use engager_ai::llm::{ChatMessage, LlmClient, LlmConfig, LlmError};
use engager_ai::personalize::{AiPersonalizer, DraftOutcome};
use engager_ai::prompt::{Brand, Prompt};
use engager_testkit::openai::{FakeOpenAi, Reply};
use secrecy::SecretString;
use serde_json::json;

const KEY: &str = "sk-test-123";

fn config(fake: &FakeOpenAi) -> LlmConfig {
    let mut c = LlmConfig::new(fake.base_url().parse().unwrap(), "gpt-test");
    c.api_key = Some(SecretString::from(KEY));
    c.timeout = Duration::from_millis(800);
    c
}

fn gate() -> GateConfig {
    GateConfig {
        allowed_link_domains: vec!["acme.example".into()],
        forbidden_phrases: vec![],
        max_similarity: 0.6,
        max_sms_segments: 2,
        sender_company: "Acme".into(),
    }
}

fn prompt() -> Prompt {
    Prompt {
        system: "You write one outreach message.".into(),
        user: "## Lead\n- first_name: Jane\n- company_short: Northwind\nChannel: email.".into(),
    }
}

fn context() -> CheckContext {
    CheckContext {
        channel: "email".into(),
        required_name: Some("Jane".into()),
        required_company: Some(("Northwind Inc.".into(), "Northwind".into())),
        previous_body: None,
    }
}

fn good() -> serde_json::Value {
    json!({
        "subject": "Reporting at Northwind",
        "body": "Hi Jane,\n\nTeams like Northwind often lose a day a week to manual reports. We get that down to an hour.\n\nWorth a short call?",
        "rationale": "specific"
    })
}

fn personalizer(fake: &FakeOpenAi, tweak: impl FnOnce(&mut LlmConfig)) -> AiPersonalizer {
    let mut c = config(fake);
    tweak(&mut c);
    AiPersonalizer::new(LlmClient::new(c).unwrap(), Brand::default(), gate())
}

#[tokio::test]
async fn a_valid_answer_is_checked_and_accepted_and_the_request_has_the_documented_shape() {
    let fake = FakeOpenAi::start(Some(KEY), &["gpt-test"]).await.unwrap();
    fake.reply_next(Reply::Json(good()));
    let p = personalizer(&fake, |_| {});
    let g = p.generate(&prompt(), &context()).await;
    let DraftOutcome::Accepted {
        draft,
        attempts,
        report,
    } = &g.outcome
    else {
        panic!("{:?}", g.outcome)
    };
    assert_eq!(*attempts, 1);
    assert_eq!(report.score, 1.0);
    assert!(draft.body.starts_with("Hi Jane"));
    assert!(g.cacheable);
    assert!(g.usage.total() > 0);
    assert_eq!(p.client().budget().used(), g.usage.total());
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let body = &requests[0].body;
    assert_eq!(requests[0].status, 200);
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"],
        json!(["subject", "body", "rationale"])
    );
}

#[tokio::test]
async fn invalid_json_is_regenerated_once_then_falls_back_to_the_template() {
    let fake = FakeOpenAi::start(Some(KEY), &[]).await.unwrap();
    let p = personalizer(&fake, |_| {});
    // Invalid, then valid: accepted on the second call.
    fake.reply_next(Reply::Content("Sure! Here is an email: Hi Jane".into()));
    fake.reply_next(Reply::Json(good()));
    let g = p.generate(&prompt(), &context()).await;
    assert!(
        matches!(g.outcome, DraftOutcome::Accepted { attempts: 2, .. }),
        "{:?}",
        g.outcome
    );
    let second = &fake.requests()[1].body["messages"];
    let last = second.as_array().unwrap().last().unwrap();
    assert_eq!(last["role"], "user");
    assert!(
        last["content"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"),
        "{last}"
    );
    // Invalid twice: the template.
    fake.reply_next(Reply::Content("{\"subject\": \"x\"".into()));
    fake.reply_next(Reply::Json(json!({"subject": "s", "body": "b"})));
    let g = p.generate(&prompt(), &context()).await;
    match &g.outcome {
        DraftOutcome::Fallback { code, attempts, .. } => {
            assert_eq!((code.as_str(), *attempts), ("invalid_output", 2));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        g.cacheable,
        "a model that answers badly is a stable outcome"
    );
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn gate_failures_are_fed_back_and_a_second_failure_falls_back() {
    let fake = FakeOpenAi::start(Some(KEY), &[]).await.unwrap();
    let p = personalizer(&fake, |_| {});
    let spammy = json!({"subject": "Re: our call", "body": "Hi Jane at Northwind, act now! https://evil.example/x and some more words to be long enough for email.", "rationale": "r"});
    fake.reply_next(Reply::Json(spammy.clone()));
    fake.reply_next(Reply::Json(spammy));
    let g = p.generate(&prompt(), &context()).await;
    let DraftOutcome::Fallback {
        code,
        report: Some(report),
        ..
    } = &g.outcome
    else {
        panic!("{:?}", g.outcome)
    };
    assert_eq!(code, "gate_failed");
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.check.as_str())
        .collect();
    assert_eq!(failed, vec!["links", "phrases", "subject"]);
    assert!(report.score < 1.0);
    // The second request carried the first draft and the failures.
    let messages = fake.requests()[1].body["messages"].clone();
    let m = messages.as_array().unwrap();
    assert_eq!(m.len(), 4);
    assert_eq!(m[2]["role"], "assistant");
    let feedback = m[3]["content"].as_str().unwrap();
    assert!(
        feedback.contains("links outside the allowed domains: evil.example")
            && feedback.contains("act now"),
        "{feedback}"
    );
}

#[tokio::test]
async fn a_refusal_falls_back_without_regenerating() {
    let fake = FakeOpenAi::start(Some(KEY), &[]).await.unwrap();
    let p = personalizer(&fake, |_| {});
    fake.reply_next(Reply::Refusal("I can't help with that.".into()));
    let g = p.generate(&prompt(), &context()).await;
    match &g.outcome {
        DraftOutcome::Fallback { code, reason, .. } => {
            assert_eq!(code, "refused");
            assert!(reason.contains("I can't help with that."));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_reset_and_quota_is_not() {
    let fake = FakeOpenAi::start(Some(KEY), &[]).await.unwrap();
    let client = LlmClient::new(config(&fake)).unwrap();
    let messages = [ChatMessage::system("s"), ChatMessage::user("u")];
    fake.reply_next(Reply::RateLimited {
        retry_after_ms: 150,
    });
    fake.reply_next(Reply::RateLimited {
        retry_after_ms: 150,
    });
    fake.reply_next(Reply::Json(good()));
    let started = std::time::Instant::now();
    let c = client.complete(&messages).await.unwrap();
    assert_eq!(c.retries, 2);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        fake.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 429, 200]
    );

    // More 429s than retries: rate limited, after 1 + max_retries requests.
    let mut c = config(&fake);
    c.max_retries = 1;
    let client = LlmClient::new(c).unwrap();
    for _ in 0..3 {
        fake.reply_next(Reply::RateLimited { retry_after_ms: 10 });
    }
    let before = fake.request_count();
    let err = client.complete(&messages).await.unwrap_err();
    assert!(matches!(err, LlmError::RateLimited(_)), "{err}");
    assert_eq!(fake.request_count() - before, 2);

    // A reset beyond the longest wait gives up at once.
    let mut c = config(&fake);
    c.max_retry_wait = Duration::from_millis(50);
    let client = LlmClient::new(c).unwrap();
    fake.reply_next(Reply::RateLimited {
        retry_after_ms: 60_000,
    });
    let err = client.complete(&messages).await.unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
    let _ = fake.requests();

    // insufficient_quota: one request, no retry, not cacheable.
    let p = personalizer(&fake, |_| {});
    fake.reply_next(Reply::InsufficientQuota);
    let before = fake.request_count();
    let g = p.generate(&prompt(), &context()).await;
    assert_eq!(fake.request_count() - before, 1);
    assert!(!g.cacheable);
    assert!(
        matches!(&g.outcome, DraftOutcome::Fallback { code, .. } if code == "insufficient_quota"),
        "{:?}",
        g.outcome
    );
}

#[tokio::test]
async fn a_slow_model_times_out_and_server_errors_are_retried() {
    let fake = FakeOpenAi::start(Some(KEY), &[]).await.unwrap();
    let p = personalizer(&fake, |c| c.timeout = Duration::from_millis(200));
    fake.reply_next(Reply::Slow(
        Duration::from_millis(1500),
        Box::new(Reply::Json(good())),
    ));
    let g = p.generate(&prompt(), &context()).await;
    assert!(
        matches!(&g.outcome, DraftOutcome::Fallback { code, .. } if code == "timeout"),
        "{:?}",
        g.outcome
    );
    assert!(!g.cacheable);

    let p = personalizer(&fake, |c| c.max_retry_wait = Duration::from_secs(2));
    fake.reply_next(Reply::ServerError);
    fake.reply_next(Reply::Json(good()));
    let g = p.generate(&prompt(), &context()).await;
    assert!(
        matches!(g.outcome, DraftOutcome::Accepted { .. }),
        "{:?}",
        g.outcome
    );
}

#[tokio::test]
async fn a_spent_budget_stops_ai_use_without_calling_the_model() {
    let fake = FakeOpenAi::start(Some(KEY), &[]).await.unwrap();
    let p = personalizer(&fake, |c| c.budget_tokens = Some(10));
    let g = p.generate(&prompt(), &context()).await;
    assert!(
        matches!(g.outcome, DraftOutcome::Accepted { .. }),
        "{:?}",
        g.outcome
    );
    assert!(p.client().budget().used() >= 10);
    let g = p.generate(&prompt(), &context()).await;
    assert!(
        matches!(&g.outcome, DraftOutcome::Fallback { code, .. } if code == "budget_exhausted"),
        "{:?}",
        g.outcome
    );
    assert!(!g.cacheable);
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn the_fake_rejects_malformed_requests_with_the_openai_error_shape() {
    let fake = FakeOpenAi::start(Some(KEY), &["gpt-test"]).await.unwrap();
    let url = format!("{}/chat/completions", fake.base_url());
    let http = reqwest::Client::new();
    let post =
        |body: serde_json::Value, key: &str| http.post(&url).bearer_auth(key).json(&body).send();
    let user = json!([{"role": "user", "content": "hi"}]);
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false});
    let cases = [
        (
            json!({"model": "gpt-test", "messages": user}),
            "wrong",
            401,
            "invalid_api_key",
        ),
        (json!({"messages": user}), KEY, 400, "model"),
        (json!({"model": "gpt-test"}), KEY, 400, "messages"),
        (
            json!({"model": "gpt-test", "messages": []}),
            KEY,
            400,
            "messages",
        ),
        (
            json!({"model": "gpt-test", "messages": [{"role": "robot", "content": "x"}]}),
            KEY,
            400,
            "messages.[0].role",
        ),
        (
            json!({"model": "gpt-test", "messages": user, "temperature": 3}),
            KEY,
            400,
            "temperature",
        ),
        (
            json!({"model": "gpt-test", "messages": user, "response_format": {"type": "json_schema"}}),
            KEY,
            400,
            "response_format.json_schema",
        ),
        (
            json!({"model": "gpt-test", "messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": schema}}}),
            KEY,
            400,
            "response_format.json_schema.name",
        ),
        (
            json!({"model": "gpt-test", "messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": []}}}}),
            KEY,
            400,
            "response_format.json_schema.schema",
        ),
        (
            json!({"model": "other", "messages": user}),
            KEY,
            404,
            "model_not_found",
        ),
    ];
    for (body, key, status, marker) in cases {
        let response = post(body.clone(), key).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let error: serde_json::Value = response.json().await.unwrap();
        let e = &error["error"];
        for field in ["message", "type", "param", "code"] {
            assert!(e.get(field).is_some(), "{field} missing in {error}");
        }
        assert!(
            e["param"] == marker || e["code"] == marker,
            "{body} → {error}"
        );
    }
    // Not JSON at all.
    let response = http
        .post(&url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // And a valid one passes.
    let ok = post(
        json!({"model": "gpt-test", "messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": schema}}}),
        KEY,
    )
    .await
    .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

/// Azure OpenAI's v1 endpoint: the key in an `api-key` header instead of a bearer token.
#[tokio::test]
async fn the_key_can_go_in_an_api_key_header() {
    let fake = FakeOpenAi::start(Some(KEY), &["gpt-test"]).await.unwrap();
    let mut c = config(&fake);
    c.api_key_header = Some("api-key".into());
    let client = LlmClient::new(c.clone()).unwrap();
    let messages = [ChatMessage {
        role: "user",
        content: "## Lead\n- first_name: Jane\n- company_short: Northwind\nChannel: email.".into(),
    }];
    client
        .complete(&messages)
        .await
        .expect("accepted with the api-key header");
    let sent = &fake.requests()[0];
    assert!(
        sent.headers.iter().any(|(k, v)| k == "api-key" && v == KEY),
        "{:?}",
        sent.headers
    );
    assert!(!sent.headers.iter().any(|(k, _)| k == "authorization"));
    c.api_key = Some(SecretString::from("sk-wrong"));
    let wrong = LlmClient::new(c)
        .unwrap()
        .complete(&messages)
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, LlmError::Http { status: 401, .. }),
        "{wrong:?}"
    );
}
