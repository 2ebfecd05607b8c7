//! Reply classification and recommendation narratives against the OpenAI fake (speaking the
//! real chat-completions wire format, strict JSON schemas included): the model's class is used
//! when valid; malformed output, an unknown class or a server error fall back to the keyword
//! rules without losing the reply; a narrative with a number not in the evidence is rejected.

use std::sync::Arc;

use engager_ai::llm::{LlmClient, LlmConfig};
use engager_domain::reply::ReplyClass;
use engager_engine::analytics::Recommendation;
use engager_engine::narrative::{narrate, Narrative, NARRATIVE_SCHEMA_NAME};
use engager_engine::replies::{ReplyClassifier, CLASSIFICATION_SCHEMA_NAME};
use engager_testkit::openai::{FakeOpenAi, Reply};
use serde_json::json;

fn client(fake: &FakeOpenAi) -> Arc<LlmClient> {
    let mut c = LlmConfig::new(fake.base_url().parse().unwrap(), "gpt-test");
    c.max_retries = 0;
    Arc::new(LlmClient::new(c).unwrap())
}

#[tokio::test]
async fn the_model_classifies_replies_and_failures_fall_back_to_the_rules() {
    let fake = FakeOpenAi::start(None, &["gpt-test"]).await.unwrap();
    let classifier = ReplyClassifier::with_llm(client(&fake));
    // A valid answer is used as is (the rules would have said positive: "a call").
    fake.reply_next(Reply::Json(
        json!({"class": "neutral", "reason": "Asks who is calling, no interest shown."}),
    ));
    let c = classifier
        .classify("Re: intro", "Who are you and why would I want a call?")
        .await;
    assert_eq!(c.class, ReplyClass::Neutral);
    assert_eq!(c.source, "llm");
    assert_eq!(c.reason, "Asks who is calling, no interest shown.");
    let request = &fake.requests()[0].body;
    assert_eq!(
        request["response_format"]["json_schema"]["name"],
        CLASSIFICATION_SCHEMA_NAME
    );
    assert_eq!(request["response_format"]["json_schema"]["strict"], true);
    assert!(request["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("why would I want a call"));
    // Malformed output, an unknown class, an extra property, a refusal and a server error:
    // the keyword rules decide, and the reason says the model failed.
    for (reply, why) in [
        (
            Reply::Content("negative, probably".into()),
            "content is not JSON",
        ),
        (
            Reply::Json(json!({"class": "hostile", "reason": "angry"})),
            "unknown reply class \"hostile\"",
        ),
        (
            Reply::Json(json!({"class": "negative", "reason": "x", "score": 3})),
            "unexpected property \"score\"",
        ),
        (Reply::Refusal("I can't help with that.".into()), "refused"),
        (Reply::ServerError, "500"),
    ] {
        fake.reply_next(reply);
        let c = classifier
            .classify("Re: intro", "Please remove me from your list.")
            .await;
        assert_eq!(c.class, ReplyClass::Unsubscribe, "{why}");
        assert_eq!(c.source, "rules");
        assert!(
            c.reason
                .starts_with("keyword rule: \"remove me\" (the model failed:")
                && c.reason.contains(why),
            "{why}: {}",
            c.reason
        );
    }
    // Without a model: the rules alone.
    let rules = ReplyClassifier::rules_only()
        .classify("Out of office", "I am on vacation until May 3.")
        .await;
    assert_eq!(
        (rules.class, rules.source),
        (ReplyClass::OutOfOffice, "rules")
    );
}

fn recs() -> Vec<Recommendation> {
    vec![
        Recommendation {
            kind: "channel",
            action: "For industry SaaS, prefer sms over email".into(),
            evidence:
                "positive replies: sms 12.7% (38 of 300) vs email 3.3% (10 of 300) (p = 0.000)"
                    .into(),
            strength: 0.0,
        },
        Recommendation {
            kind: "stop_segment",
            action: "Stop contacting country DE".into(),
            evidence: "positive replies 0 of 250 (at most 1.5% at 95% confidence) vs 4.2% overall"
                .into(),
            strength: 0.015,
        },
    ]
}

#[tokio::test]
async fn a_narrative_is_kept_only_when_its_numbers_are_in_the_evidence() {
    let fake = FakeOpenAi::start(None, &[]).await.unwrap();
    let llm = client(&fake);
    let good = "SaaS leads answer texts far better than email: 12.7% positive replies against 3.3%, on 300 sends each. Germany drew 0 positive replies from 250 sends, at most 1.5%, well under the 4.2% overall, so stop there.";
    fake.reply_next(Reply::Json(json!({ "narrative": good })));
    assert_eq!(
        narrate(&llm, &recs()).await,
        Narrative::Accepted(good.into())
    );
    let request = &fake.requests()[0].body;
    assert_eq!(
        request["response_format"]["json_schema"]["name"],
        NARRATIVE_SCHEMA_NAME
    );
    let prompt = request["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains("sms 12.7% (38 of 300)")
            && prompt.contains("2. Stop contacting country DE"),
        "{prompt}"
    );
    // A number the evidence does not have (a made-up ratio) rejects the narrative.
    fake.reply_next(Reply::Json(json!({
        "narrative": "Texts work almost four times better (3.8x) than email for SaaS; stop Germany."
    })));
    match narrate(&llm, &recs()).await {
        Narrative::Rejected { reason, text } => {
            assert_eq!(reason, "it states number(s) not in the evidence: 3.8");
            assert!(text.contains("3.8x"));
        }
        other => panic!("{other:?}"),
    }
    // Malformed output: no narrative, and why.
    fake.reply_next(Reply::Content("{\"story\": \"...\"}".into()));
    match narrate(&llm, &recs()).await {
        Narrative::Failed(e) => assert!(e.contains("unexpected property \"story\""), "{e}"),
        other => panic!("{other:?}"),
    }
}

mod inbound {
    //! Inbound replies read from the Graph fake are classified by the OpenAI fake (or the
    //! keyword rules when its output is malformed) before they are recorded.

    use std::sync::Arc;

    use chrono::{DateTime, Duration, Utc};
    use engager_channels::{GraphChannel, GraphConfig};
    use engager_domain::reply::ReplyClass;
    use engager_domain::{Channel, EmailAddress, EventKind, LeadId, LeadStatus, NewLead};
    use engager_engine::inbound::{InboundOptions, InboundPoller, MailSource};
    use engager_engine::replies::ReplyClassifier;
    use engager_store::*;
    use engager_testkit::graph::{FakeGraph, FakeGraphSetup};
    use engager_testkit::openai::{FakeOpenAi, Reply};
    use serde_json::json;

    const TENANT: &str = "contoso.onmicrosoft.com";
    const CLIENT: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
    const SECRET: &str = "s3cr3t~value";

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Four leads, each sent one email whose provider reference is `<dN@acme.example>`, with
    /// the next step due in three days.
    async fn sent(store: &dyn Store) -> Vec<LeadId> {
        let leads: Vec<NewLead> = (0..4)
            .map(|i| NewLead {
                email: Some(EmailAddress::parse(&format!("lead{i}@northwind.example")).unwrap()),
                source: "test".into(),
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
            .save_campaign("c", "C", "[campaign]", t0())
            .await
            .unwrap();
        store.enroll(campaign, &ids, t0()).await.unwrap();
        let due = store.due_enrollments(t0(), None, 10).await.unwrap();
        let evaluations: Vec<Evaluation> = due
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
                    channel: Some(Channel::Email),
                    at: Some(t0()),
                    gates: Vec::new(),
                },
                decision: PlanDecision::Plan(NewDelivery {
                    channel: Channel::Email,
                    send_at: t0(),
                    to_address: d.lead.profile.email.as_ref().unwrap().to_string(),
                    subject: Some("Hello".into()),
                    body_text: "Hi".into(),
                    body_html: None,
                    variant: None,
                }),
            })
            .collect();
        store.record_evaluations(&evaluations, t0()).await.unwrap();
        let lease = Duration::minutes(5);
        for d in store
            .claim_due_deliveries(t0(), 10, "w", lease)
            .await
            .unwrap()
        {
            let i = ids.iter().position(|l| *l == d.lead_id).unwrap();
            assert!(store
                .begin_send(d.id, d.fencing_token, t0(), lease)
                .await
                .unwrap());
            store
                .record_outcome(
                    d.id,
                    d.fencing_token,
                    &SendOutcome::Sent {
                        provider_ref: format!("<d{i}@acme.example>"),
                    },
                    &FollowUp::NextStepAt(t0() + Duration::days(3)),
                    t0(),
                )
                .await
                .unwrap();
        }
        ids
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_are_classified_before_they_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = engager_store::open(&format!("sqlite:{}", dir.path().join("r.db").display()))
            .await
            .unwrap();
        let ids = sent(store.as_ref()).await;
        let graph = FakeGraph::start(FakeGraphSetup::new(
            TENANT,
            CLIENT,
            SECRET,
            "maya@acme.example",
        ))
        .await
        .unwrap();
        let at = t0() + Duration::hours(2);
        let reply = |i: usize, subject: &str, body: &str, extra: &[(&str, &str)]| {
            let ours = format!("<d{i}@acme.example>");
            let mut headers = vec![("In-Reply-To", ours.as_str())];
            headers.extend_from_slice(extra);
            graph.deliver(
                &format!("lead{i}@northwind.example"),
                subject,
                body,
                &headers,
                None,
                at + Duration::minutes(i as i64),
            );
        };
        reply(
            0,
            "RE: Hello",
            "Interesting - can you send pricing for 20 seats?",
            &[],
        );
        reply(1, "RE: Hello", "Who is this?", &[]);
        reply(2, "RE: Hello", "Take me off your list.", &[]);
        reply(
            3,
            "Automatic reply: Hello",
            "I am out of the office until Monday.",
            &[("Auto-Submitted", "auto-replied")],
        );
        let llm = FakeOpenAi::start(None, &[]).await.unwrap();
        llm.respond_with(|request| {
            let user = request["messages"][1]["content"].as_str().unwrap_or("");
            if user.contains("pricing") {
                Reply::Json(json!({"class": "positive", "reason": "Asks for pricing."}))
            } else if user.contains("Who is this") {
                Reply::Content("I think this is neutral".into())
            } else {
                Reply::Json(
                    json!({"class": "unsubscribe", "reason": "Asks to be taken off the list."}),
                )
            }
        });
        let mut llm_config = engager_ai::llm::LlmConfig::new(llm.base_url().parse().unwrap(), "m");
        llm_config.max_retries = 0;
        let classifier = ReplyClassifier::with_llm(Arc::new(
            engager_ai::llm::LlmClient::new(llm_config).unwrap(),
        ));
        let mut config = GraphConfig::new(TENANT, CLIENT, SECRET.into(), "maya@acme.example");
        config.authority_url = graph.authority_url().to_owned();
        config.graph_url = graph.graph_url();
        config.request_timeout_secs = 5.0;
        let channel = GraphChannel::new(config).unwrap();
        let poller = InboundPoller::new(
            vec![MailSource::graph(channel.mailbox().clone())],
            InboundOptions::default(),
        )
        .with_classifier(classifier);
        let now = t0() + Duration::hours(4);
        let report = poller.poll_once(store.as_ref(), now).await.unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.recorded(), 4, "{report:#?}");
        // Three person-written replies asked the model; the out-of-office did not.
        assert_eq!(llm.request_count(), 3);
        let class = |i: usize| {
            let store = store.clone();
            let lead = ids[i];
            async move { store.replies(Some(lead), 5).await.unwrap().remove(0) }
        };
        let r0 = class(0).await;
        assert_eq!(
            (r0.kind, r0.class, r0.classified_by.as_deref()),
            (EventKind::Replied, Some(ReplyClass::Positive), Some("llm"))
        );
        assert_eq!(r0.reason.as_deref(), Some("Asks for pricing."));
        // Malformed model output: the keyword rules classify, and say the model failed.
        let r1 = class(1).await;
        assert_eq!(
            (r1.kind, r1.class, r1.classified_by.as_deref()),
            (EventKind::Replied, Some(ReplyClass::Neutral), Some("rules"))
        );
        assert!(
            r1.reason.as_deref().unwrap().contains("the model failed"),
            "{r1:?}"
        );
        // An unsubscribe request: a negative reply, the address suppressed, the lead out.
        let r2 = class(2).await;
        assert_eq!(
            (r2.kind, r2.class),
            (EventKind::NegativeReply, Some(ReplyClass::Unsubscribe))
        );
        assert_eq!(
            store.lead(ids[2]).await.unwrap().unwrap().status,
            LeadStatus::Unsubscribed
        );
        assert_eq!(
            store
                .suppressed(&[SuppressionKey::Email("lead2@northwind.example".into())])
                .await
                .unwrap()
                .len(),
            1
        );
        // Out of office: recorded as such, the sequence goes on; the replies stopped theirs.
        let r3 = class(3).await;
        assert_eq!(
            (r3.kind, r3.class, r3.classified_by.as_deref()),
            (
                EventKind::AutoReplied,
                Some(ReplyClass::OutOfOffice),
                Some("rules")
            )
        );
        for (i, running) in [(0, false), (1, false), (2, false), (3, true)] {
            let e = store.enrollments_for_lead(ids[i]).await.unwrap();
            assert_eq!(
                e[0].state == EnrollmentState::Waiting || e[0].state == EnrollmentState::Active,
                running,
                "lead {i}: {:?}",
                e[0].state
            );
        }
        // Reading the mailbox again records nothing and asks the model nothing.
        let again = poller
            .poll_once(store.as_ref(), now + Duration::minutes(5))
            .await
            .unwrap();
        assert_eq!(again.recorded(), 0);
        assert_eq!(llm.request_count(), 3);
    }
}
