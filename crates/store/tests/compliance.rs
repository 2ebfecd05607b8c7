//! Consent records, per-send compliance evidence and campaign halts, on SQLite and
//! PostgreSQL (the PostgreSQL half runs when `ENGAGER_TEST_DATABASE_URL` is set; CI sets it).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_domain::compliance::{Basis, ConsentRecord};
use engager_domain::{Channel, EmailAddress, LeadId, NewLead};
use engager_store::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn consent(lead: LeadId, channel: Option<Channel>, basis: Basis, days: i64) -> ConsentRecord {
    ConsentRecord {
        id: 0,
        lead_id: lead,
        channel,
        basis,
        source: format!("form day {days}"),
        reference: (basis == Basis::LegitimateInterest).then(|| "LIA-7".into()),
        contact: channel.map(|_| "+14155550123".into()),
        obtained_at: t0() + Duration::days(days),
        expires_at: (basis == Basis::Implied).then(|| t0() + Duration::days(700)),
    }
}

async fn consents_evidence_and_halts_round_trip(store: Arc<dyn Store>) {
    let ids: Vec<LeadId> = store
        .upsert_leads(
            &[
                NewLead {
                    email: Some(EmailAddress::parse("ada@example.com").unwrap()),
                    source: "csv:t.csv".into(),
                    ..NewLead::default()
                },
                NewLead {
                    email: Some(EmailAddress::parse("bob@example.com").unwrap()),
                    source: "csv:t.csv".into(),
                    ..NewLead::default()
                },
            ],
            t0(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(UpsertOutcome::id)
        .collect();
    let (ada, bob) = (ids[0], ids[1]);
    // Recorded out of order: read back oldest first per lead.
    let later = store
        .record_consent(&consent(ada, Some(Channel::Sms), Basis::Withdrawn, 5))
        .await
        .unwrap();
    let first = store
        .record_consent(&consent(ada, Some(Channel::Sms), Basis::Consent, 1))
        .await
        .unwrap();
    store
        .record_consent(&consent(bob, None, Basis::Implied, 2))
        .await
        .unwrap();
    assert_ne!(first, later);
    let all = store.consents(&[ada, bob]).await.unwrap();
    let a = &all[&ada];
    assert_eq!(a.len(), 2);
    assert_eq!((a[0].id, a[0].basis), (first, Basis::Consent));
    assert_eq!((a[1].id, a[1].basis), (later, Basis::Withdrawn));
    assert_eq!(a[0].channel, Some(Channel::Sms));
    assert_eq!(a[0].contact.as_deref(), Some("+14155550123"));
    assert_eq!(a[0].obtained_at, t0() + Duration::days(1));
    let b = &all[&bob];
    assert_eq!(b[0].channel, None);
    assert_eq!(b[0].expires_at, Some(t0() + Duration::days(700)));
    // The planner reads them with the contact history.
    let history = store
        .contact_history(&[ada], t0() - Duration::days(30))
        .await
        .unwrap();
    assert_eq!(history[&ada].consents.len(), 2);

    // Evidence: stored once per delivery, replaced by a retry's check, read with the state.
    let campaign = store
        .save_campaign("intro", "Intro", "[campaign]", t0())
        .await
        .unwrap();
    store.enroll(campaign, &[ada], t0()).await.unwrap();
    let due = store.due_enrollments(t0(), None, 10).await.unwrap();
    let e = &due[0];
    store
        .record_evaluations(
            &[Evaluation {
                trace: TraceRecord {
                    enrollment_id: e.enrollment.id,
                    campaign_id: e.enrollment.campaign_id,
                    lead_id: e.lead.id,
                    step_index: 0,
                    evaluated_at: t0(),
                    outcome: "planned".into(),
                    code: None,
                    channel: Some(Channel::Email),
                    at: Some(t0()),
                    gates: vec![
                        GateRow {
                            gate: "compliance".into(),
                            passed: false,
                            reason: "sms: TCPA/CTIA refused: no prior express consent recorded for this number".into(),
                        },
                        GateRow {
                            gate: "channel".into(),
                            passed: true,
                            reason: "email".into(),
                        },
                    ],
                },
                decision: PlanDecision::Plan(NewDelivery {
                    channel: Channel::Email,
                    send_at: t0(),
                    to_address: "ada@example.com".into(),
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
    let d = store
        .claim_due_deliveries(t0(), 1, "w", Duration::minutes(5))
        .await
        .unwrap()
        .remove(0);
    let mut evidence = SendEvidence {
        delivery_id: d.id,
        lead_id: ada,
        checked_at: t0(),
        provider: "graph".into(),
        regimes: vec!["can_spam".into()],
        checks: vec!["CAN-SPAM: first".into()],
        consent_id: None,
        footer_postal: true,
        footer_unsubscribe: true,
        one_click_header: false,
        stop_wording: false,
    };
    store.record_evidence(&evidence).await.unwrap();
    evidence.checks = vec!["CAN-SPAM: retried".into()];
    evidence.consent_id = Some(first);
    evidence.checked_at = t0() + Duration::minutes(1);
    store.record_evidence(&evidence).await.unwrap();
    let rows = store.evidence_since(t0()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].evidence, evidence);
    assert_eq!(rows[0].channel, Channel::Email);
    assert_eq!(rows[0].campaign_id, campaign);
    assert_eq!(rows[0].state, "claimed");
    assert!(store
        .evidence_since(t0() + Duration::minutes(2))
        .await
        .unwrap()
        .is_empty());
    // The refusal is found in the traces.
    let traces = store.compliance_traces(t0()).await.unwrap();
    assert_eq!(traces.len(), 1);
    assert!(traces[0].gates_json.contains("TCPA/CTIA refused"));
    assert!(store
        .compliance_traces(t0() + Duration::seconds(1))
        .await
        .unwrap()
        .is_empty());

    // Halts: set once, kept until resumed.
    let halt = CampaignHalt {
        campaign_id: campaign,
        halted: true,
        reason: "CAN-SPAM (step 1): deceptive subject".into(),
        changed_by: "compliance".into(),
        changed_at: t0(),
    };
    assert!(store.set_campaign_halt(&halt).await.unwrap());
    let again = CampaignHalt {
        reason: "another".into(),
        ..halt.clone()
    };
    assert!(!store.set_campaign_halt(&again).await.unwrap());
    assert_eq!(store.campaign_halts().await.unwrap(), vec![halt.clone()]);
    let resumed = CampaignHalt {
        halted: false,
        reason: "fixed".into(),
        changed_by: "cli".into(),
        changed_at: t0() + Duration::hours(1),
        ..halt
    };
    assert!(store.set_campaign_halt(&resumed).await.unwrap());
    assert_eq!(store.campaign_halts().await.unwrap(), vec![resumed]);
}

async fn opt_outs_are_written_back_once(store: Arc<dyn Store>) {
    let airtable = |email: &str, rec: &str| NewLead {
        email: Some(EmailAddress::parse(email).unwrap()),
        source: "airtable:appX/Leads".into(),
        source_ref: Some(rec.into()),
        ..NewLead::default()
    };
    let ids: Vec<LeadId> = store
        .upsert_leads(
            &[
                airtable("a@x.example", "recA"),
                airtable("b@x.example", "recB"),
                airtable("c@x.example", "recC"),
                NewLead {
                    email: Some(EmailAddress::parse("d@x.example").unwrap()),
                    source: "csv:leads.csv".into(),
                    ..NewLead::default()
                },
            ],
            t0(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(UpsertOutcome::id)
        .collect();
    assert!(store
        .pending_opt_out_writebacks("airtable:", 10)
        .await
        .unwrap()
        .is_empty());
    // A unsubscribes, C objects, D (not from Airtable) unsubscribes.
    for lead in [ids[0], ids[3]] {
        store
            .record_event(&NewEvent {
                lead_id: lead,
                delivery_id: None,
                kind: engager_domain::EventKind::Unsubscribed,
                occurred_at: t0(),
                detail: "{}".into(),
                source: "manual".into(),
            })
            .await
            .unwrap();
    }
    store
        .record_consent(&consent(ids[2], None, Basis::Objection, 1))
        .await
        .unwrap();
    let pending = store
        .pending_opt_out_writebacks("airtable:", 10)
        .await
        .unwrap();
    assert_eq!(
        pending,
        vec![(ids[0], "recA".to_owned()), (ids[2], "recC".to_owned())]
    );
    store
        .mark_opt_outs_written_back(&[ids[0]], t0())
        .await
        .unwrap();
    assert_eq!(
        store
            .pending_opt_out_writebacks("airtable:", 10)
            .await
            .unwrap(),
        vec![(ids[2], "recC".to_owned())]
    );
    // Marking twice is harmless.
    store
        .mark_opt_outs_written_back(&[ids[0], ids[2]], t0())
        .await
        .unwrap();
    assert!(store
        .pending_opt_out_writebacks("airtable:", 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_opt_outs_are_written_back_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    opt_outs_are_written_back_once(engager_store::open(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_opt_outs_are_written_back_once() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("opt_out_writebacks");
    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema)
        .await
        .unwrap();
    opt_outs_are_written_back_once(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_consents_evidence_and_halts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    consents_evidence_and_halts_round_trip(engager_store::open(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_consents_evidence_and_halts() {
    let Some(url) = engager_testkit::postgres_url() else {
        return;
    };
    let schema = engager_testkit::unique_schema("consents_evidence_halts");
    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema)
        .await
        .unwrap();
    consents_evidence_and_halts_round_trip(Arc::new(store)).await;
}
