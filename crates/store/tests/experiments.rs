//! A/B experiment counts, assignments and decisions, reply classification and its effect on
//! the report facts, and leads by source reference — the same scenarios on SQLite and on
//! PostgreSQL (when `ENGAGER_TEST_DATABASE_URL` is set).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_domain::reply::ReplyClass;
use engager_domain::{Channel, EmailAddress, EventKind, LeadId, LeadStatus, NewLead};
use engager_store::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Imports `n` leads, enrolls them in one campaign, plans step 0 for each with the variant
/// `variant(i)`, and sends every delivery. Returns the campaign and the sent deliveries in
/// lead order.
async fn seed_sent(
    store: &dyn Store,
    n: usize,
    variant: impl Fn(usize) -> Option<&'static str>,
) -> (engager_domain::CampaignId, Vec<DeliveryRecord>) {
    let leads: Vec<NewLead> = (0..n)
        .map(|i| NewLead {
            email: Some(EmailAddress::parse(&format!("lead{i}@example.com")).unwrap()),
            source: "airtable:appX/Leads".into(),
            source_ref: Some(format!("rec{i}")),
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
        .save_campaign("intro", "Intro", "[campaign]", t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    let due = store.due_enrollments(t0(), None, 1000).await.unwrap();
    let evaluations: Vec<Evaluation> = due
        .iter()
        .map(|d| {
            let i = ids.iter().position(|l| *l == d.lead.id).unwrap();
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
                    gates: Vec::new(),
                },
                decision: PlanDecision::Plan(NewDelivery {
                    channel: Channel::Email,
                    send_at: t0(),
                    to_address: d.lead.profile.email.as_ref().unwrap().to_string(),
                    subject: Some("Hello".into()),
                    body_text: "Hi".into(),
                    body_html: None,
                    variant: variant(i).map(str::to_owned),
                }),
            }
        })
        .collect();
    store.record_evaluations(&evaluations, t0()).await.unwrap();
    let lease = Duration::minutes(5);
    for d in store
        .claim_due_deliveries(t0(), 1000, "w", lease)
        .await
        .unwrap()
    {
        assert!(store
            .begin_send(d.id, d.fencing_token, t0(), lease)
            .await
            .unwrap());
        let sent = SendOutcome::Sent {
            provider_ref: format!("<{}@x>", d.id.0),
        };
        assert!(store
            .record_outcome(d.id, d.fencing_token, &sent, &FollowUp::Complete, t0())
            .await
            .unwrap());
    }
    let mut sent = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    sent.sort_by_key(|d| ids.iter().position(|l| *l == d.lead_id));
    assert_eq!(sent.len(), n);
    (campaign, sent)
}

fn event(d: &DeliveryRecord, kind: EventKind, minutes: i64) -> NewEvent {
    NewEvent {
        lead_id: d.lead_id,
        delivery_id: Some(d.id),
        kind,
        occurred_at: t0() + Duration::minutes(minutes),
        detail: "{}".into(),
        source: "t".into(),
    }
}

async fn variant_counts_follow_the_reports_rules(store: Arc<dyn Store>) {
    let (campaign, sent) =
        seed_sent(store.as_ref(), 6, |i| Some(if i < 3 { "a" } else { "b" })).await;
    // a: one plain reply (positive), one reply classified neutral, one complaint.
    // b: one negative reply, one conversion, one reply asking to unsubscribe.
    store
        .record_external_event(&event(&sent[0], EventKind::Replied, 10), "<r0@x>")
        .await
        .unwrap();
    store
        .record_external_event(&event(&sent[1], EventKind::Replied, 10), "<r1@x>")
        .await
        .unwrap();
    store
        .classify_reply(&ReplyClassification {
            reply: ReplyRef::External("<r1@x>".into()),
            class: ReplyClass::Neutral,
            source: "rules".into(),
            reason: "keyword rule: no known phrase".into(),
            at: t0() + Duration::minutes(11),
        })
        .await
        .unwrap();
    store
        .record_event(&event(&sent[2], EventKind::Complained, 10))
        .await
        .unwrap();
    store
        .record_event(&event(&sent[3], EventKind::NegativeReply, 10))
        .await
        .unwrap();
    store
        .record_event(&NewEvent {
            delivery_id: None,
            ..event(&sent[4], EventKind::Converted, 60)
        })
        .await
        .unwrap();
    store
        .record_external_event(&event(&sent[5], EventKind::Replied, 10), "<r5@x>")
        .await
        .unwrap();
    store
        .classify_reply(&ReplyClassification {
            reply: ReplyRef::External("<r5@x>".into()),
            class: ReplyClass::Unsubscribe,
            source: "llm".into(),
            reason: "asks to be removed".into(),
            at: t0() + Duration::minutes(11),
        })
        .await
        .unwrap();
    let rows = store.variant_counts().await.unwrap();
    let row = |v: &str| rows.iter().find(|r| r.variant == v).unwrap().clone();
    assert_eq!(
        row("a"),
        VariantCountRow {
            campaign_id: campaign,
            step_index: 0,
            variant: "a".into(),
            sent: 3,
            positive: 1,
            conversions: 0,
            unsubscribes: 0,
            complaints: 1,
        }
    );
    assert_eq!(
        (
            row("b").sent,
            row("b").positive,
            row("b").conversions,
            row("b").unsubscribes
        ),
        (3, 0, 1, 1)
    );
    // The report facts agree: the neutral reply is a reply but not a positive one; the
    // unsubscribe request is a negative reply and an unsubscribe.
    let facts = store
        .report_facts(&ReportQuery {
            campaign: None,
            since: t0() - Duration::days(1),
            until: t0() + Duration::days(1),
        })
        .await
        .unwrap();
    let fact = |d: &DeliveryRecord| {
        facts
            .deliveries
            .iter()
            .find(|f| f.delivery_id == d.id)
            .unwrap()
    };
    assert!(
        fact(&sent[0]).replied && !fact(&sent[0]).neutral_reply && !fact(&sent[0]).negative_reply
    );
    assert!(fact(&sent[1]).replied && fact(&sent[1]).neutral_reply);
    assert!(fact(&sent[5]).replied && fact(&sent[5]).negative_reply && fact(&sent[5]).unsubscribed);
    // Channel evidence counts positive replies the same way: only sent[0].
    let evidence = store
        .channel_evidence(t0() - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(evidence.iter().map(|e| e.positive).sum::<u64>(), 1);
}

async fn assignments_come_from_deliveries(store: Arc<dyn Store>) {
    let (campaign, sent) = seed_sent(store.as_ref(), 3, |i| {
        (i != 1).then_some(if i == 0 { "a" } else { "b" })
    })
    .await;
    let leads: Vec<LeadId> = sent.iter().map(|d| d.lead_id).collect();
    let mut got = store.variant_assignments(&leads).await.unwrap();
    got.sort_by_key(|a| a.lead_id);
    assert_eq!(
        got,
        vec![
            VariantAssignment {
                lead_id: leads[0],
                campaign_id: campaign,
                step_index: 0,
                variant: "a".into()
            },
            VariantAssignment {
                lead_id: leads[2],
                campaign_id: campaign,
                step_index: 0,
                variant: "b".into()
            },
        ]
    );
    assert!(store
        .variant_assignments(&[leads[1]])
        .await
        .unwrap()
        .is_empty());
    assert!(store.variant_assignments(&[]).await.unwrap().is_empty());
}

async fn decisions_replace_each_other_and_are_audited(store: Arc<dyn Store>) {
    assert!(store.experiment_decisions().await.unwrap().is_empty());
    let promoted = ExperimentDecision {
        experiment: "intro#1".into(),
        state: DecisionState::Promoted,
        variant: Some("b".into()),
        source: "auto".into(),
        reason: "b beats a: 8.0% vs 5.0% (p = 0.006)".into(),
        decided_at: t0(),
    };
    let audit = |detail: &str| AuditEntry {
        at: t0(),
        action: "ab_promote".into(),
        subject: "intro#1".into(),
        detail: detail.into(),
        actor: "planner".into(),
    };
    store
        .save_experiment_decision(&promoted, &audit("promoted b"))
        .await
        .unwrap();
    assert_eq!(
        store.experiment_decisions().await.unwrap(),
        vec![promoted.clone()]
    );
    let reset = ExperimentDecision {
        state: DecisionState::Reset,
        variant: None,
        source: "person".into(),
        reason: "rerun after the pricing change".into(),
        decided_at: t0() + Duration::hours(1),
        ..promoted
    };
    store
        .save_experiment_decision(&reset, &audit("reset"))
        .await
        .unwrap();
    assert_eq!(store.experiment_decisions().await.unwrap(), vec![reset]);
    let log = store.audit_log(t0() - Duration::days(1)).await.unwrap();
    let details: Vec<&str> = log
        .iter()
        .filter(|e| e.action == "ab_promote")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(details, vec!["promoted b", "reset"]);
}

async fn classification_changes_the_event_and_applies_its_effects(store: Arc<dyn Store>) {
    let (_, sent) = seed_sent(store.as_ref(), 2, |_| None).await;
    // An automatic reply leaves the sequence running; a person then says it was a real
    // "not interested": the event becomes a negative reply and stops the sequences.
    store
        .record_external_event(&event(&sent[0], EventKind::AutoReplied, 5), "<ooo@x>")
        .await
        .unwrap();
    let id = store.replies(Some(sent[0].lead_id), 10).await.unwrap()[0].event_id;
    let done = store
        .classify_reply(&ReplyClassification {
            reply: ReplyRef::Event(id),
            class: ReplyClass::Negative,
            source: "person".into(),
            reason: "it was a real no".into(),
            at: t0() + Duration::minutes(30),
        })
        .await
        .unwrap();
    assert_eq!(done.previous, None);
    assert_eq!(done.previous_kind, EventKind::AutoReplied);
    let replies = store.replies(Some(sent[0].lead_id), 10).await.unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].kind, EventKind::NegativeReply);
    assert_eq!(replies[0].class, Some(ReplyClass::Negative));
    assert_eq!(replies[0].classified_by.as_deref(), Some("person"));
    assert_eq!(replies[0].reason.as_deref(), Some("it was a real no"));
    // Reclassified: the previous class is reported.
    let again = store
        .classify_reply(&ReplyClassification {
            reply: ReplyRef::Event(id),
            class: ReplyClass::Unsubscribe,
            source: "person".into(),
            reason: "asked to be removed".into(),
            at: t0() + Duration::minutes(31),
        })
        .await
        .unwrap();
    assert_eq!(again.previous, Some(ReplyClass::Negative));
    assert!(
        again.effects.suppressed,
        "an unsubscribe request suppresses the address"
    );
    let lead = store.lead(sent[0].lead_id).await.unwrap().unwrap();
    assert_eq!(lead.status, LeadStatus::Unsubscribed);
    let hits = store
        .suppressed(&[SuppressionKey::Email("lead0@example.com".into())])
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    // The other lead is untouched.
    let other = store.lead(sent[1].lead_id).await.unwrap().unwrap();
    assert_eq!(other.status, LeadStatus::Active);
    // Not a reply, or no such event: a clear error.
    store
        .record_event(&event(&sent[1], EventKind::Opened, 5))
        .await
        .unwrap();
    let opened = store.events_for_lead(sent[1].lead_id).await.unwrap();
    let opened = opened
        .iter()
        .find(|e| e.event.kind == EventKind::Opened)
        .unwrap()
        .id;
    let err = store
        .classify_reply(&ReplyClassification {
            reply: ReplyRef::Event(opened),
            class: ReplyClass::Positive,
            source: "person".into(),
            reason: String::new(),
            at: t0(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("it is a opened event"), "{err}");
    let err = store
        .classify_reply(&ReplyClassification {
            reply: ReplyRef::Event(999_999),
            class: ReplyClass::Positive,
            source: "person".into(),
            reason: String::new(),
            at: t0(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("reply event 999999 not found"), "{err}");
    // The classification's reason is personal data: exported, and blanked by an erasure.
    let export = store
        .export_subject(sent[0].lead_id)
        .await
        .unwrap()
        .to_string();
    assert!(export.contains("asked to be removed"), "{export}");
    store
        .erase_subject(
            sent[0].lead_id,
            &AuditEntry {
                at: t0() + Duration::hours(2),
                action: "erasure".into(),
                subject: format!("lead:{}", sent[0].lead_id.0),
                detail: "test".into(),
                actor: "test".into(),
            },
        )
        .await
        .unwrap();
    let after = store.replies(Some(sent[0].lead_id), 10).await.unwrap();
    assert_eq!(
        after[0].class,
        Some(ReplyClass::Unsubscribe),
        "the class stays for the counts"
    );
    assert_eq!(after[0].reason.as_deref(), Some(""));
}

async fn leads_are_found_by_source_reference(store: Arc<dyn Store>) {
    let (_, sent) = seed_sent(store.as_ref(), 2, |_| None).await;
    assert_eq!(
        store
            .lead_by_source_ref("airtable:appX/Leads", "rec1")
            .await
            .unwrap(),
        Some(sent[1].lead_id)
    );
    assert_eq!(
        store
            .lead_by_source_ref("airtable:appX/Other", "rec1")
            .await
            .unwrap(),
        None
    );
}

macro_rules! both_backends {
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

both_backends!(
    variant_counts_follow_the_reports_rules,
    assignments_come_from_deliveries,
    decisions_replace_each_other_and_are_audited,
    classification_changes_the_event_and_applies_its_effects,
    leads_are_found_by_source_reference,
);
