//! The deliverability monitor per sending account and domain in the store: counts grouped by
//! `deliveries.account`, and halts of accounts and domains. Runs on SQLite and on PostgreSQL
//! (when `ENGAGER_TEST_DATABASE_URL` is set).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_domain::deliverability::SendingCounts;
use engager_domain::{Channel, EmailAddress, EventKind, LeadId, NewLead};
use engager_store::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

const A: &str = "email:graph:maya@acme.example";
const B: &str = "email:graph:sam@acme.example";

/// Imports `n` leads, enrolls them and plans step 0 of each by email at `t0`; returns the
/// claimed deliveries in lead order.
async fn claimed(store: &dyn Store, n: usize) -> Vec<DeliveryRecord> {
    let leads: Vec<NewLead> = (0..n)
        .map(|i| NewLead {
            email: Some(EmailAddress::parse(&format!("lead{i}@example.com")).unwrap()),
            source: "csv:t.csv".into(),
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
    let due = store.due_enrollments(t0(), None, 100).await.unwrap();
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
    let mut rows = store
        .claim_due_deliveries(t0(), 100, "w", Duration::minutes(5))
        .await
        .unwrap();
    rows.sort_by_key(|d| ids.iter().position(|l| *l == d.lead_id));
    assert_eq!(rows.len(), n);
    rows
}

async fn begin(store: &dyn Store, d: &DeliveryRecord) {
    assert!(store
        .begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5))
        .await
        .unwrap());
}

async fn finish(store: &dyn Store, d: &DeliveryRecord, outcome: SendOutcome) {
    assert!(store
        .record_outcome(d.id, d.fencing_token, &outcome, &FollowUp::Complete, t0())
        .await
        .unwrap());
}

fn sent(d: &DeliveryRecord) -> SendOutcome {
    SendOutcome::Sent {
        provider_ref: format!("<{}@x>", d.id.0),
    }
}

async fn send_as(store: &dyn Store, d: &DeliveryRecord, account: Option<&str>) {
    begin(store, d).await;
    if let Some(account) = account {
        assert!(store
            .set_delivery_account(d.id, d.fencing_token, account)
            .await
            .unwrap());
    }
    finish(store, d, sent(d)).await;
}

async fn event(store: &dyn Store, d: &DeliveryRecord, kind: EventKind) {
    store
        .record_event(&NewEvent {
            lead_id: d.lead_id,
            delivery_id: Some(d.id),
            kind,
            occurred_at: t0() + Duration::minutes(5),
            detail: "{}".into(),
            source: "test".into(),
        })
        .await
        .unwrap();
}

async fn counts_are_grouped_by_account_with_what_each_drew(store: Arc<dyn Store>) {
    let rows = claimed(store.as_ref(), 7).await;
    // Maya: 3 sent, one hard bounce, one complaint. Sam: 2 sent, one reply, one
    // unsubscribe. Two sent before accounts were recorded, one of them bounced.
    for d in &rows[0..3] {
        send_as(store.as_ref(), d, Some(A)).await;
    }
    for d in &rows[3..5] {
        send_as(store.as_ref(), d, Some(B)).await;
    }
    for d in &rows[5..7] {
        send_as(store.as_ref(), d, None).await;
    }
    event(store.as_ref(), &rows[0], EventKind::HardBounce).await;
    event(store.as_ref(), &rows[1], EventKind::Complained).await;
    event(store.as_ref(), &rows[3], EventKind::Replied).await;
    event(store.as_ref(), &rows[4], EventKind::Unsubscribed).await;
    event(store.as_ref(), &rows[5], EventKind::HardBounce).await;

    let mut counts = store
        .sending_counts_by_account(t0() - Duration::hours(1))
        .await
        .unwrap();
    counts.sort_by(|a, b| a.account.cmp(&b.account));
    let c = |sent, hard_bounces, complaints, unsubscribes, replies| SendingCounts {
        sent,
        hard_bounces,
        complaints,
        unsubscribes,
        replies,
    };
    assert_eq!(
        counts,
        vec![
            AccountSendingCounts {
                channel: Channel::Email,
                account: None,
                counts: c(2, 1, 0, 0, 0),
            },
            AccountSendingCounts {
                channel: Channel::Email,
                account: Some(A.into()),
                counts: c(3, 1, 1, 0, 0),
            },
            AccountSendingCounts {
                channel: Channel::Email,
                account: Some(B.into()),
                counts: c(2, 0, 0, 1, 1),
            },
        ]
    );
    // The accounts add up to the channel's figure.
    let channel = store
        .sending_counts(Channel::Email, t0() - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(channel, c(7, 2, 1, 1, 1));
    // Sends before `since` are not counted.
    assert!(store
        .sending_counts_by_account(t0() + Duration::seconds(1))
        .await
        .unwrap()
        .is_empty());
}

async fn account_and_domain_halts_keep_the_first_reason_until_resumed(store: Arc<dyn Store>) {
    assert!(store.account_halts().await.unwrap().is_empty());
    let halt = |key: &str, halted: bool, reason: &str, at: i64| AccountHalt {
        key: key.to_owned(),
        halted,
        reason: reason.to_owned(),
        changed_by: if halted { "monitor" } else { "person" }.to_owned(),
        changed_at: t0() + Duration::minutes(at),
    };
    let account_key = format!("account:{A}");
    assert!(store
        .set_account_halt(&halt(&account_key, true, "hard bounces 6%", 0))
        .await
        .unwrap());
    assert!(store
        .set_account_halt(&halt("domain:acme.example", true, "complaints 0.5%", 1))
        .await
        .unwrap());
    // The monitor finding the same breach again changes nothing.
    assert!(!store
        .set_account_halt(&halt(&account_key, true, "hard bounces 7%", 2))
        .await
        .unwrap());
    let halts = store.account_halts().await.unwrap();
    assert_eq!(
        halts,
        vec![
            halt(&account_key, true, "hard bounces 6%", 0),
            halt("domain:acme.example", true, "complaints 0.5%", 1),
        ]
    );
    // A person resumes the domain; the account stays halted.
    assert!(store
        .set_account_halt(&halt("domain:acme.example", false, "list cleaned", 3))
        .await
        .unwrap());
    assert!(!store
        .set_account_halt(&halt("domain:acme.example", false, "again", 4))
        .await
        .unwrap());
    let halts = store.account_halts().await.unwrap();
    assert_eq!(
        halts,
        vec![
            halt(&account_key, true, "hard bounces 6%", 0),
            halt("domain:acme.example", false, "list cleaned", 3),
        ]
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
    counts_are_grouped_by_account_with_what_each_drew,
    account_and_domain_halts_keep_the_first_reason_until_resumed,
);
