//! Mailbox rotation in the ledger: which account each delivery went through, the account a
//! sequence is on, and sends per account. Runs on SQLite and on PostgreSQL (when
//! `ENGAGER_TEST_DATABASE_URL` is set).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use engager_domain::{Channel, EmailAddress, LeadId, NewLead};
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

async fn the_account_of_each_delivery_is_recorded_and_sticks_to_its_sequence(
    store: Arc<dyn Store>,
) {
    let rows = claimed(store.as_ref(), 4).await;
    let (first, second, failed, legacy) = (&rows[0], &rows[1], &rows[2], &rows[3]);

    // A stale claim cannot set the account.
    assert!(!store
        .set_delivery_account(first.id, first.fencing_token + 1, A)
        .await
        .unwrap());
    begin(store.as_ref(), first).await;
    assert!(store
        .set_delivery_account(first.id, first.fencing_token, A)
        .await
        .unwrap());
    finish(store.as_ref(), first, sent(first)).await;

    begin(store.as_ref(), second).await;
    assert!(store
        .set_delivery_account(second.id, second.fencing_token, B)
        .await
        .unwrap());
    finish(store.as_ref(), second, sent(second)).await;

    // A permanent failure on an account did not contact the lead through it.
    begin(store.as_ref(), failed).await;
    assert!(store
        .set_delivery_account(failed.id, failed.fencing_token, A)
        .await
        .unwrap());
    finish(
        store.as_ref(),
        failed,
        SendOutcome::Failed {
            error: "permanent failure: mailbox unavailable".into(),
        },
    )
    .await;

    // A send recorded without an account (as before migration 0010).
    begin(store.as_ref(), legacy).await;
    finish(store.as_ref(), legacy, sent(legacy)).await;

    // Once recorded, the account is final: a finished row takes no other.
    assert!(!store
        .set_delivery_account(first.id, first.fencing_token, B)
        .await
        .unwrap());

    let found = store.find_delivery(first.id).await.unwrap().unwrap();
    assert_eq!(found.account.as_deref(), Some(A));
    let listed = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let account_of = |id| {
        listed
            .iter()
            .find(|d| d.id == id)
            .and_then(|d| d.account.clone())
    };
    assert_eq!(account_of(second.id).as_deref(), Some(B));
    assert_eq!(account_of(failed.id).as_deref(), Some(A));
    assert_eq!(account_of(legacy.id), None);

    assert_eq!(
        store
            .enrollment_account(first.enrollment_id, Channel::Email)
            .await
            .unwrap()
            .as_deref(),
        Some(A)
    );
    assert_eq!(
        store
            .enrollment_account(second.enrollment_id, Channel::Email)
            .await
            .unwrap()
            .as_deref(),
        Some(B)
    );
    assert_eq!(
        store
            .enrollment_account(first.enrollment_id, Channel::Sms)
            .await
            .unwrap(),
        None,
        "the account is per channel"
    );
    assert_eq!(
        store
            .enrollment_account(failed.enrollment_id, Channel::Email)
            .await
            .unwrap(),
        None,
        "a failed send does not bind the sequence"
    );
    assert_eq!(
        store
            .enrollment_account(legacy.enrollment_id, Channel::Email)
            .await
            .unwrap(),
        None
    );

    let mut counts = store
        .sent_counts_by_account_since(t0() - Duration::hours(1))
        .await
        .unwrap();
    counts.sort_by(|a, b| a.account.cmp(&b.account));
    assert_eq!(
        counts,
        vec![
            AccountSentCount {
                channel: Channel::Email,
                account: None,
                sent: 1
            },
            AccountSentCount {
                channel: Channel::Email,
                account: Some(A.into()),
                sent: 1
            },
            AccountSentCount {
                channel: Channel::Email,
                account: Some(B.into()),
                sent: 1
            },
        ]
    );
    assert!(store
        .sent_counts_by_account_since(t0() + Duration::seconds(1))
        .await
        .unwrap()
        .is_empty());

    // The shared limiter starts an account's day from that account's sends (and those
    // recorded without an account), not from the whole channel's: 3 sent today on email.
    let permit = |account: &str, cap: u32| PermitRequest {
        account: account.to_owned(),
        channel: Channel::Email,
        rates: Vec::new(),
        daily_cap: Some(cap),
        now: t0() + Duration::minutes(1),
    };
    assert_eq!(
        store.take_send_permit(&permit(A, 3)).await.unwrap(),
        Permit::Granted,
        "maya: 1 of hers + 1 without an account, so a third is allowed"
    );
    assert!(matches!(
        store.take_send_permit(&permit(A, 3)).await.unwrap(),
        Permit::Wait { .. }
    ));
    assert!(matches!(
        store.take_send_permit(&permit(B, 2)).await.unwrap(),
        Permit::Wait { .. }
    ));
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

both_backends!(the_account_of_each_delivery_is_recorded_and_sticks_to_its_sequence);
