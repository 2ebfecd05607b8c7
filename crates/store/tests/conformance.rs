//! The store conformance story: the same scenarios run on SQLite and on PostgreSQL.
//!
//! PostgreSQL runs when `ENGAGER_TEST_DATABASE_URL` is set (CI sets it to the machine's
//! server and fails if it cannot be reached); when unset, the PostgreSQL half prints a loud
//! notice and is skipped.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_domain::{Channel, DeliveryState, EmailAddress, EventKind, LeadId, NewLead, PhoneE164};
use engager_store::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z").unwrap().with_timezone(&Utc)
}

fn lead(email: &str, country: &str) -> NewLead {
    NewLead {
        email: Some(EmailAddress::parse(email).unwrap()),
        first_name: Some("Ada".into()),
        country: Some(engager_domain::CountryCode::parse(country).unwrap()),
        source: "csv:test.csv".into(),
        ..NewLead::default()
    }
}

fn trace(e: &DueEnrollment, outcome: &str, at: DateTime<Utc>) -> TraceRecord {
    TraceRecord {
        enrollment_id: e.enrollment.id,
        campaign_id: e.enrollment.campaign_id,
        lead_id: e.lead.id,
        step_index: e.enrollment.current_step,
        evaluated_at: at,
        outcome: outcome.into(),
        code: None,
        channel: Some(Channel::Email),
        at: Some(at),
        gates: vec![GateRow { gate: "compliance".into(), passed: true, reason: "not suppressed".into() }],
    }
}

fn plan(e: &DueEnrollment, send_at: DateTime<Utc>) -> Evaluation {
    Evaluation {
        trace: trace(e, "planned", send_at),
        decision: PlanDecision::Plan(NewDelivery {
            channel: Channel::Email,
            send_at,
            to_address: e.lead.profile.email.as_ref().unwrap().to_string(),
            subject: Some("Hello".into()),
            body_text: "Hi there".into(),
            body_html: None,
        }),
    }
}

/// Imports `n` leads, one campaign, enrolls all and plans step 0 for each at `t0`.
async fn seed(store: &dyn Store, n: usize) -> (engager_domain::CampaignId, Vec<LeadId>) {
    let leads: Vec<NewLead> = (0..n).map(|i| lead(&format!("lead{i}@example.com"), "US")).collect();
    let ids: Vec<LeadId> = store.upsert_leads(&leads, t0()).await.unwrap().into_iter().map(UpsertOutcome::id).collect();
    let campaign = store.save_campaign("intro", "Intro", "[campaign]", t0()).await.unwrap();
    assert_eq!(store.enroll(campaign, &ids, t0()).await.unwrap(), n as u64);
    let mut after = None;
    loop {
        let due = store.due_enrollments(t0(), after, 50).await.unwrap();
        if due.is_empty() {
            break;
        }
        after = due.last().map(|d| d.enrollment.id);
        let evals: Vec<Evaluation> = due.iter().map(|d| plan(d, t0())).collect();
        store.record_evaluations(&evals, t0()).await.unwrap();
    }
    (campaign, ids)
}

async fn leads_upsert_by_normalized_email(store: Arc<dyn Store>) {
    let mut first = lead("Jane.Doe@Example.com", "DE");
    first.phone = Some(PhoneE164::parse("+4915123456789", None).unwrap());
    first.title = Some("CTO".into());
    first.custom.insert("note".into(), "met at expo".into());
    let out = store.upsert_leads(&[first, lead("max@example.com", "US")], t0()).await.unwrap();
    assert!(matches!(out[0], UpsertOutcome::Inserted(_)));
    let mut again = lead("jane.doe@example.com", "DE");
    again.title = Some("CEO".into());
    let out2 = store.upsert_leads(&[again], t0()).await.unwrap();
    assert_eq!(out2, vec![UpsertOutcome::Updated(out[0].id())]);
    let jane = store.lead_by_email("JANE.DOE@example.com").await.unwrap().unwrap();
    assert_eq!(jane.profile.title.as_deref(), Some("CEO"));
    assert_eq!(jane.profile.phone.as_ref().unwrap().as_str(), "+4915123456789", "an update without a phone keeps the old one");
    assert_eq!(jane.profile.phone.as_ref().unwrap().region(), Some("DE"));
    assert_eq!(jane.profile.custom.get("note").map(String::as_str), Some("met at expo"));
    let us = store.lead_ids(&LeadFilter { country: Some("us".into()), ..Default::default() }).await.unwrap();
    assert_eq!(us, vec![out[1].id()]);
    assert_eq!(store.lead_counts().await.unwrap(), vec![("active".to_string(), 2)]);
}

async fn planning_is_unique_per_enrollment_and_step(store: Arc<dyn Store>) {
    let (campaign, ids) = seed(store.as_ref(), 3).await;
    let planned = store.deliveries(&DeliveryFilter { state: Some(DeliveryState::Planned), ..Default::default() }).await.unwrap();
    assert_eq!(planned.len(), 3);
    // Nothing is due any more: every enrollment waits for its delivery.
    assert!(store.due_enrollments(t0() + Duration::days(1), None, 10).await.unwrap().is_empty());
    // Enrolling again is a no-op.
    assert_eq!(store.enroll(campaign, &ids, t0()).await.unwrap(), 0);
    let traces = store.traces_for_lead(ids[0]).await.unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].gates[0].reason, "not suppressed");
    assert_eq!(traces[0].outcome, "planned");
}

async fn claim_send_and_follow_up(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 2).await;
    let claimed = store.claim_due_deliveries(t0(), 10, "w1", Duration::minutes(5)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|d| d.state == DeliveryState::Claimed && d.claimed_by.as_deref() == Some("w1")));
    assert!(store.claim_due_deliveries(t0(), 10, "w2", Duration::minutes(5)).await.unwrap().is_empty());
    let d = &claimed[0];
    assert!(store.begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5)).await.unwrap());
    let next = t0() + Duration::days(3);
    let sent = SendOutcome::Sent { provider_ref: "<1@x>".into() };
    assert!(store.record_outcome(d.id, d.fencing_token, &sent, &FollowUp::NextStepAt(next), t0()).await.unwrap());
    let row = &store.deliveries(&DeliveryFilter { lead: Some(d.lead_id), ..Default::default() }).await.unwrap()[0];
    assert_eq!((row.state, row.attempts, row.provider_ref.as_deref()), (DeliveryState::Sent, 1, Some("<1@x>")));
    assert_eq!(row.sent_at, Some(t0()));
    let e = &store.enrollments_for_lead(d.lead_id).await.unwrap()[0];
    assert_eq!((e.state, e.current_step, e.next_due_at), (EnrollmentState::Active, 1, Some(next)));
    let due = store.due_enrollments(next, None, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].enrollment.current_step, 1);
    let events = store.events_for_lead(d.lead_id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.kind, EventKind::Sent);
    // The last step completes the enrollment.
    let other = &claimed[1];
    store.begin_send(other.id, other.fencing_token, t0(), Duration::minutes(5)).await.unwrap();
    store.record_outcome(other.id, other.fencing_token, &sent, &FollowUp::Complete, t0()).await.unwrap();
    let e2 = &store.enrollments_for_lead(other.lead_id).await.unwrap()[0];
    assert_eq!(e2.state, EnrollmentState::Completed);
    assert!(ids.contains(&other.lead_id));
    // Touches count the sent delivery at its sent time.
    let touches = store.touches(&[d.lead_id], t0() - Duration::days(7)).await.unwrap();
    assert_eq!(touches[&d.lead_id], vec![t0()]);
}

async fn stale_fencing_tokens_cannot_record(store: Arc<dyn Store>) {
    seed(store.as_ref(), 1).await;
    let lease = Duration::minutes(5);
    let first = store.claim_due_deliveries(t0(), 10, "old", lease).await.unwrap().remove(0);
    // The old worker stalls; its lease runs out and the row goes back to the queue.
    let later = t0() + Duration::minutes(6);
    assert_eq!(store.recover_expired_leases(later).await.unwrap(), Recovered { requeued: 1, unknown: 0 });
    let second = store.claim_due_deliveries(later, 10, "new", lease).await.unwrap().remove(0);
    assert!(second.fencing_token > first.fencing_token);
    assert!(!store.begin_send(first.id, first.fencing_token, later, lease).await.unwrap(), "stale token must not send");
    assert!(store.begin_send(second.id, second.fencing_token, later, lease).await.unwrap());
    let sent = SendOutcome::Sent { provider_ref: "p".into() };
    assert!(!store.record_outcome(first.id, first.fencing_token, &sent, &FollowUp::Complete, later).await.unwrap());
    assert!(store.record_outcome(second.id, second.fencing_token, &sent, &FollowUp::Complete, later).await.unwrap());
}

async fn expired_sending_becomes_unknown_and_is_never_resent(store: Arc<dyn Store>) {
    seed(store.as_ref(), 1).await;
    let lease = Duration::minutes(5);
    let d = store.claim_due_deliveries(t0(), 10, "w", lease).await.unwrap().remove(0);
    assert!(store.begin_send(d.id, d.fencing_token, t0(), lease).await.unwrap());
    // Crash: nothing recorded. After the lease the row is ambiguous, not queued again.
    let later = t0() + Duration::minutes(10);
    assert_eq!(store.recover_expired_leases(later).await.unwrap(), Recovered { requeued: 0, unknown: 1 });
    assert!(store.claim_due_deliveries(later + Duration::days(1), 10, "w", lease).await.unwrap().is_empty());
    let row = &store.deliveries(&DeliveryFilter { state: Some(DeliveryState::Unknown), ..Default::default() }).await.unwrap()[0];
    assert!(row.last_error.as_deref().unwrap().contains("lease expired"));
}

async fn retries_wait_for_their_time(store: Arc<dyn Store>) {
    seed(store.as_ref(), 1).await;
    let lease = Duration::minutes(5);
    let d = store.claim_due_deliveries(t0(), 10, "w", lease).await.unwrap().remove(0);
    store.begin_send(d.id, d.fencing_token, t0(), lease).await.unwrap();
    let at = t0() + Duration::minutes(30);
    let retry = SendOutcome::Retry { at, error: "421 try later".into() };
    assert!(store.record_outcome(d.id, d.fencing_token, &retry, &FollowUp::Complete, t0()).await.unwrap());
    assert!(store.claim_due_deliveries(at - Duration::seconds(1), 10, "w", lease).await.unwrap().is_empty());
    let again = store.claim_due_deliveries(at, 10, "w", lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("421 try later"));
    assert_eq!(store.next_due_at().await.unwrap(), Some(at + lease));
}

async fn a_reply_stops_the_sequence_and_an_unsubscribe_suppresses(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 2).await;
    let effects = store
        .record_event(&NewEvent { lead_id: ids[0], delivery_id: None, kind: EventKind::Replied, occurred_at: t0(), detail: "{}".into(), source: "test".into() })
        .await
        .unwrap();
    assert_eq!((effects.enrollments_stopped, effects.deliveries_cancelled, effects.suppressed), (1, 1, false));
    let e = &store.enrollments_for_lead(ids[0]).await.unwrap()[0];
    assert_eq!((e.state, e.stop_reason.as_deref()), (EnrollmentState::Stopped, Some("replied")));
    // The second lead is claimed, then unsubscribes before sending: the send must not start.
    let claimed = store.claim_due_deliveries(t0(), 10, "w", Duration::minutes(5)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let d = &claimed[0];
    let effects = store
        .record_event(&NewEvent { lead_id: ids[1], delivery_id: Some(d.id), kind: EventKind::Unsubscribed, occurred_at: t0(), detail: "{}".into(), source: "test".into() })
        .await
        .unwrap();
    assert!(effects.suppressed);
    assert!(!store.begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5)).await.unwrap());
    let lead = store.lead(ids[1]).await.unwrap().unwrap();
    assert_eq!(lead.status, engager_domain::LeadStatus::Unsubscribed);
    let hits = store
        .suppressed(&[SuppressionKey::Email("lead1@example.com".into()), SuppressionKey::Email("lead0@example.com".into())])
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].reason, "unsubscribed");
    assert!(!store.add_suppression(&SuppressionKey::Email("lead1@example.com".into()), "manual", "cli", t0()).await.unwrap());
    assert!(store.add_suppression(&SuppressionKey::Domain("example.org".into()), "manual", "cli", t0()).await.unwrap());
}

async fn summary_counts_by_step_and_channel(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 3).await;
    let claimed = store.claim_due_deliveries(t0(), 1, "w", Duration::minutes(5)).await.unwrap();
    let d = &claimed[0];
    store.begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5)).await.unwrap();
    store.record_outcome(d.id, d.fencing_token, &SendOutcome::Sent { provider_ref: "x".into() }, &FollowUp::Complete, t0()).await.unwrap();
    store
        .record_event(&NewEvent { lead_id: d.lead_id, delivery_id: Some(d.id), kind: EventKind::Opened, occurred_at: t0(), detail: "{}".into(), source: "t".into() })
        .await
        .unwrap();
    let rows = store.step_summary().await.unwrap();
    let get = |metric: &str| rows.iter().find(|r| r.metric == metric).map(|r| r.count);
    assert_eq!(get("delivery:planned"), Some(2));
    assert_eq!(get("delivery:sent"), Some(1));
    assert_eq!(get("event:sent"), Some(1));
    assert_eq!(get("event:opened"), Some(1));
    assert!(rows.iter().all(|r| r.campaign == "intro" && r.step_index == 0 && r.channel == "email"));
    assert_eq!(ids.len(), 3);
    let pending = store.pending_writebacks("csv:", 10).await.unwrap();
    assert!(pending.is_empty(), "csv leads have no source_ref to write back to");
}

async fn concurrent_claimers_never_share_a_row(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    seed(a.as_ref(), 120).await;
    let worker = |store: Arc<dyn Store>, name: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.claim_due_deliveries(t0(), 7, name, Duration::minutes(5)).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.into_iter().map(|d| d.id));
            }
            got
        })
    };
    let (x, y) = tokio::join!(worker(a.clone(), "a"), worker(b.clone(), "b"));
    let (x, y) = (x.unwrap(), y.unwrap());
    let all: HashSet<_> = x.iter().chain(y.iter()).collect();
    assert_eq!(x.len() + y.len(), 120, "every row claimed exactly once");
    assert_eq!(all.len(), 120, "no row claimed twice");
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite:{}", dir.path().join("t.db").display());
                    super::$name(engager_store::open(&url).await.unwrap()).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_claimers() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("t.db").display());
                let a = engager_store::open(&url).await.unwrap();
                let b = engager_store::open(&url).await.unwrap();
                super::concurrent_claimers_never_share_a_row(a, b).await;
            }
        }

        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = engager_testkit::postgres_url() else { return };
                    let schema = engager_testkit::unique_schema(stringify!($name));
                    let store = engager_store::postgres::PgStore::connect_isolated(&url, &schema).await.unwrap();
                    super::$name(Arc::new(store)).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_claimers() {
                let Some(url) = engager_testkit::postgres_url() else { return };
                let schema = engager_testkit::unique_schema("concurrent_claimers");
                let a = engager_store::postgres::PgStore::connect_isolated(&url, &schema).await.unwrap();
                let b = engager_store::postgres::PgStore::connect_isolated(&url, &schema).await.unwrap();
                super::concurrent_claimers_never_share_a_row(Arc::new(a), Arc::new(b)).await;
            }
        }
    };
}

conformance!(
    leads_upsert_by_normalized_email,
    planning_is_unique_per_enrollment_and_step,
    claim_send_and_follow_up,
    stale_fencing_tokens_cannot_record,
    expired_sending_becomes_unknown_and_is_never_resent,
    retries_wait_for_their_time,
    a_reply_stops_the_sequence_and_an_unsubscribe_suppresses,
    summary_counts_by_step_and_channel,
);
