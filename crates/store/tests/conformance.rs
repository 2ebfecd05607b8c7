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
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
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
        gates: vec![GateRow {
            gate: "compliance".into(),
            passed: true,
            reason: "not suppressed".into(),
        }],
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
            variant: None,
        }),
    }
}

/// Imports `n` leads, one campaign, enrolls all and plans step 0 for each at `t0`.
async fn seed(store: &dyn Store, n: usize) -> (engager_domain::CampaignId, Vec<LeadId>) {
    let leads: Vec<NewLead> = (0..n)
        .map(|i| lead(&format!("lead{i}@example.com"), "US"))
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
    assert_eq!(store.enroll(campaign, &ids, t0()).await.unwrap(), n as u64);
    let mut after = None;
    loop {
        let due = store.due_enrollments(t0(), after, 50).await.unwrap();
        if due.is_empty() {
            break;
        }
        after = due.last().map(DueEnrollment::cursor);
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
    let out = store
        .upsert_leads(&[first, lead("max@example.com", "US")], t0())
        .await
        .unwrap();
    assert!(matches!(out[0], UpsertOutcome::Inserted(_)));
    let mut again = lead("jane.doe@example.com", "DE");
    again.title = Some("CEO".into());
    let out2 = store.upsert_leads(&[again], t0()).await.unwrap();
    assert_eq!(out2, vec![UpsertOutcome::Updated(out[0].id())]);
    let jane = store
        .lead_by_email("JANE.DOE@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(jane.profile.title.as_deref(), Some("CEO"));
    assert_eq!(
        jane.profile.phone.as_ref().unwrap().as_str(),
        "+4915123456789",
        "an update without a phone keeps the old one"
    );
    assert_eq!(jane.profile.phone.as_ref().unwrap().region(), Some("DE"));
    assert_eq!(
        jane.profile.custom.get("note").map(String::as_str),
        Some("met at expo")
    );
    let us = store
        .lead_ids(&LeadFilter {
            country: Some("us".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(us, vec![out[1].id()]);
    assert_eq!(
        store.lead_counts().await.unwrap(),
        vec![("active".to_string(), 2)]
    );
}

async fn planning_is_unique_per_enrollment_and_step(store: Arc<dyn Store>) {
    let (campaign, ids) = seed(store.as_ref(), 3).await;
    let planned = store
        .deliveries(&DeliveryFilter {
            state: Some(DeliveryState::Planned),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(planned.len(), 3);
    // Nothing is due any more: every enrollment waits for its delivery.
    assert!(store
        .due_enrollments(t0() + Duration::days(1), None, 10)
        .await
        .unwrap()
        .is_empty());
    // Enrolling again is a no-op.
    assert_eq!(store.enroll(campaign, &ids, t0()).await.unwrap(), 0);
    let traces = store.traces_for_lead(ids[0]).await.unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].gates[0].reason, "not suppressed");
    assert_eq!(traces[0].outcome, "planned");
}

async fn claim_send_and_follow_up(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 2).await;
    let claimed = store
        .claim_due_deliveries(t0(), 10, "w1", Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed
        .iter()
        .all(|d| d.state == DeliveryState::Claimed && d.claimed_by.as_deref() == Some("w1")));
    assert!(store
        .claim_due_deliveries(t0(), 10, "w2", Duration::minutes(5))
        .await
        .unwrap()
        .is_empty());
    let d = &claimed[0];
    assert!(store
        .begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5))
        .await
        .unwrap());
    let next = t0() + Duration::days(3);
    let sent = SendOutcome::Sent {
        provider_ref: "<1@x>".into(),
    };
    assert!(store
        .record_outcome(
            d.id,
            d.fencing_token,
            &sent,
            &FollowUp::NextStepAt(next),
            t0()
        )
        .await
        .unwrap());
    let row = &store
        .deliveries(&DeliveryFilter {
            lead: Some(d.lead_id),
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(
        (row.state, row.attempts, row.provider_ref.as_deref()),
        (DeliveryState::Sent, 1, Some("<1@x>"))
    );
    assert_eq!(row.sent_at, Some(t0()));
    let e = &store.enrollments_for_lead(d.lead_id).await.unwrap()[0];
    assert_eq!(
        (e.state, e.current_step, e.next_due_at),
        (EnrollmentState::Active, 1, Some(next))
    );
    let due = store.due_enrollments(next, None, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].enrollment.current_step, 1);
    let events = store.events_for_lead(d.lead_id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.kind, EventKind::Sent);
    // The last step completes the enrollment.
    let other = &claimed[1];
    store
        .begin_send(other.id, other.fencing_token, t0(), Duration::minutes(5))
        .await
        .unwrap();
    store
        .record_outcome(
            other.id,
            other.fencing_token,
            &sent,
            &FollowUp::Complete,
            t0(),
        )
        .await
        .unwrap();
    let e2 = &store.enrollments_for_lead(other.lead_id).await.unwrap()[0];
    assert_eq!(e2.state, EnrollmentState::Completed);
    assert!(ids.contains(&other.lead_id));
    // Touches count the sent delivery at its sent time.
    let touches = store
        .touches(&[d.lead_id], t0() - Duration::days(7))
        .await
        .unwrap();
    assert_eq!(touches[&d.lead_id], vec![t0()]);
}

async fn stale_fencing_tokens_cannot_record(store: Arc<dyn Store>) {
    seed(store.as_ref(), 1).await;
    let lease = Duration::minutes(5);
    let first = store
        .claim_due_deliveries(t0(), 10, "old", lease)
        .await
        .unwrap()
        .remove(0);
    // The old worker stalls; its lease runs out and the row goes back to the queue.
    let later = t0() + Duration::minutes(6);
    assert_eq!(
        store.recover_expired_leases(later).await.unwrap(),
        Recovered {
            requeued: 1,
            unknown: 0
        }
    );
    let second = store
        .claim_due_deliveries(later, 10, "new", lease)
        .await
        .unwrap()
        .remove(0);
    assert!(second.fencing_token > first.fencing_token);
    assert!(
        !store
            .begin_send(first.id, first.fencing_token, later, lease)
            .await
            .unwrap(),
        "stale token must not send"
    );
    assert!(store
        .begin_send(second.id, second.fencing_token, later, lease)
        .await
        .unwrap());
    let sent = SendOutcome::Sent {
        provider_ref: "p".into(),
    };
    assert!(!store
        .record_outcome(
            first.id,
            first.fencing_token,
            &sent,
            &FollowUp::Complete,
            later
        )
        .await
        .unwrap());
    assert!(store
        .record_outcome(
            second.id,
            second.fencing_token,
            &sent,
            &FollowUp::Complete,
            later
        )
        .await
        .unwrap());
}

async fn expired_sending_becomes_unknown_and_is_never_resent(store: Arc<dyn Store>) {
    seed(store.as_ref(), 1).await;
    let lease = Duration::minutes(5);
    let d = store
        .claim_due_deliveries(t0(), 10, "w", lease)
        .await
        .unwrap()
        .remove(0);
    assert!(store
        .begin_send(d.id, d.fencing_token, t0(), lease)
        .await
        .unwrap());
    // Crash: nothing recorded. After the lease the row is ambiguous, not queued again.
    let later = t0() + Duration::minutes(10);
    assert_eq!(
        store.recover_expired_leases(later).await.unwrap(),
        Recovered {
            requeued: 0,
            unknown: 1
        }
    );
    assert!(store
        .claim_due_deliveries(later + Duration::days(1), 10, "w", lease)
        .await
        .unwrap()
        .is_empty());
    let row = &store
        .deliveries(&DeliveryFilter {
            state: Some(DeliveryState::Unknown),
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert!(row.last_error.as_deref().unwrap().contains("lease expired"));
}

async fn retries_wait_for_their_time(store: Arc<dyn Store>) {
    seed(store.as_ref(), 1).await;
    let lease = Duration::minutes(5);
    let d = store
        .claim_due_deliveries(t0(), 10, "w", lease)
        .await
        .unwrap()
        .remove(0);
    store
        .begin_send(d.id, d.fencing_token, t0(), lease)
        .await
        .unwrap();
    let at = t0() + Duration::minutes(30);
    let retry = SendOutcome::Retry {
        at,
        error: "421 try later".into(),
    };
    assert!(store
        .record_outcome(d.id, d.fencing_token, &retry, &FollowUp::Complete, t0())
        .await
        .unwrap());
    assert!(store
        .claim_due_deliveries(at - Duration::seconds(1), 10, "w", lease)
        .await
        .unwrap()
        .is_empty());
    let again = store
        .claim_due_deliveries(at, 10, "w", lease)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("421 try later"));
    assert_eq!(store.next_due_at().await.unwrap(), Some(at + lease));
}

async fn a_reply_stops_the_sequence_and_an_unsubscribe_suppresses(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 2).await;
    let effects = store
        .record_event(&NewEvent {
            lead_id: ids[0],
            delivery_id: None,
            kind: EventKind::Replied,
            occurred_at: t0(),
            detail: "{}".into(),
            source: "test".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        (
            effects.enrollments_stopped,
            effects.deliveries_cancelled,
            effects.suppressed
        ),
        (1, 1, false)
    );
    let e = &store.enrollments_for_lead(ids[0]).await.unwrap()[0];
    assert_eq!(
        (e.state, e.stop_reason.as_deref()),
        (EnrollmentState::Stopped, Some("replied"))
    );
    // The second lead is claimed, then unsubscribes before sending: the send must not start.
    let claimed = store
        .claim_due_deliveries(t0(), 10, "w", Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let d = &claimed[0];
    let effects = store
        .record_event(&NewEvent {
            lead_id: ids[1],
            delivery_id: Some(d.id),
            kind: EventKind::Unsubscribed,
            occurred_at: t0(),
            detail: "{}".into(),
            source: "test".into(),
        })
        .await
        .unwrap();
    assert!(effects.suppressed);
    assert!(!store
        .begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5))
        .await
        .unwrap());
    let lead = store.lead(ids[1]).await.unwrap().unwrap();
    assert_eq!(lead.status, engager_domain::LeadStatus::Unsubscribed);
    let hits = store
        .suppressed(&[
            SuppressionKey::Email("lead1@example.com".into()),
            SuppressionKey::Email("lead0@example.com".into()),
        ])
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].reason, "unsubscribed");
    assert!(!store
        .add_suppression(
            &SuppressionKey::Email("lead1@example.com".into()),
            "manual",
            "cli",
            t0()
        )
        .await
        .unwrap());
    assert!(store
        .add_suppression(
            &SuppressionKey::Domain("example.org".into()),
            "manual",
            "cli",
            t0()
        )
        .await
        .unwrap());
}

async fn summary_counts_by_step_and_channel(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 3).await;
    let claimed = store
        .claim_due_deliveries(t0(), 1, "w", Duration::minutes(5))
        .await
        .unwrap();
    let d = &claimed[0];
    store
        .begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5))
        .await
        .unwrap();
    store
        .record_outcome(
            d.id,
            d.fencing_token,
            &SendOutcome::Sent {
                provider_ref: "x".into(),
            },
            &FollowUp::Complete,
            t0(),
        )
        .await
        .unwrap();
    store
        .record_event(&NewEvent {
            lead_id: d.lead_id,
            delivery_id: Some(d.id),
            kind: EventKind::Opened,
            occurred_at: t0(),
            detail: "{}".into(),
            source: "t".into(),
        })
        .await
        .unwrap();
    let rows = store.step_summary().await.unwrap();
    let get = |metric: &str| rows.iter().find(|r| r.metric == metric).map(|r| r.count);
    assert_eq!(get("delivery:planned"), Some(2));
    assert_eq!(get("delivery:sent"), Some(1));
    assert_eq!(get("event:sent"), Some(1));
    assert_eq!(get("event:opened"), Some(1));
    assert!(rows
        .iter()
        .all(|r| r.campaign == "intro" && r.step_index == 0 && r.channel == "email"));
    assert_eq!(ids.len(), 3);
    let pending = store.pending_writebacks("csv:", 10).await.unwrap();
    assert!(
        pending.is_empty(),
        "csv leads have no source_ref to write back to"
    );
}

async fn concurrent_claimers_never_share_a_row(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    seed(a.as_ref(), 120).await;
    let worker = |store: Arc<dyn Store>, name: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim_due_deliveries(t0(), 7, name, Duration::minutes(5))
                    .await
                    .unwrap();
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

async fn every_planner_decision_moves_the_enrollment(store: Arc<dyn Store>) {
    let leads: Vec<NewLead> = (0..5)
        .map(|i| lead(&format!("d{i}@example.com"), "US"))
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
    let due = store.due_enrollments(t0(), None, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.lead.id).collect::<Vec<_>>(),
        ids,
        "enrollments follow the order of the leads"
    );
    let later = t0() + Duration::hours(2);
    let next = t0() + Duration::days(2);
    let decide = |d: &DueEnrollment, outcome: &str, code: Option<&str>, decision: PlanDecision| {
        let mut trace = trace(d, outcome, t0());
        trace.code = code.map(str::to_owned);
        Evaluation { trace, decision }
    };
    // The same enrollment twice in one batch: a skip then the plan of the next step. Its
    // decisions apply in order, so the plan finds the enrollment at step 1.
    let mut plan_step_1 = plan(&due[4], t0());
    plan_step_1.trace.step_index = 1;
    let evals = vec![
        decide(
            &due[0],
            "deferred",
            Some("quiet_hours"),
            PlanDecision::Defer { until: later },
        ),
        decide(
            &due[1],
            "skipped",
            Some("no_phone"),
            PlanDecision::Skip {
                next_due: Some(next),
            },
        ),
        decide(
            &due[2],
            "skipped",
            Some("no_phone"),
            PlanDecision::Skip { next_due: None },
        ),
        decide(
            &due[3],
            "stopped",
            Some("suppressed"),
            PlanDecision::Stop {
                reason: "suppressed".into(),
            },
        ),
        decide(
            &due[4],
            "skipped",
            Some("no_phone"),
            PlanDecision::Skip {
                next_due: Some(t0()),
            },
        ),
        plan_step_1,
    ];
    store.record_evaluations(&evals, t0()).await.unwrap();
    let state = |i: usize| {
        let store = store.clone();
        let lead = ids[i];
        async move {
            let e = store.enrollments_for_lead(lead).await.unwrap().remove(0);
            (e.state, e.current_step, e.next_due_at, e.stop_reason)
        }
    };
    assert_eq!(
        state(0).await,
        (EnrollmentState::Active, 0, Some(later), None)
    );
    assert_eq!(
        state(1).await,
        (EnrollmentState::Active, 1, Some(next), None)
    );
    assert_eq!(state(2).await, (EnrollmentState::Completed, 1, None, None));
    assert_eq!(
        state(3).await,
        (
            EnrollmentState::Stopped,
            0,
            None,
            Some("suppressed".to_string())
        )
    );
    assert_eq!(state(4).await, (EnrollmentState::Waiting, 1, None, None));
    let planned = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    assert_eq!(planned.len(), 1);
    assert_eq!(
        (planned[0].lead_id, planned[0].step_index, planned[0].state),
        (ids[4], 1, DeliveryState::Planned)
    );
    let traces = store.traces_for_lead(ids[4]).await.unwrap();
    assert_eq!(
        traces
            .iter()
            .map(|t| (t.outcome.as_str(), t.step_index))
            .collect::<Vec<_>>(),
        vec![("skipped", 0), ("planned", 1)]
    );
    assert_eq!(traces[0].code.as_deref(), Some("no_phone"));
    assert!(store
        .due_enrollments(t0(), None, 10)
        .await
        .unwrap()
        .is_empty());
    let due_later = store.due_enrollments(later, None, 10).await.unwrap();
    assert_eq!(
        due_later.iter().map(|d| d.lead.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    assert_eq!(
        store.next_due_at().await.unwrap(),
        Some(t0()),
        "the planned delivery is due first"
    );
    let counts = store.enrollment_counts().await.unwrap();
    let states: Vec<(&str, u64)> = counts.iter().map(|(_, s, n)| (s.as_str(), *n)).collect();
    assert_eq!(
        states,
        vec![
            ("active", 2),
            ("completed", 1),
            ("stopped", 1),
            ("waiting", 1)
        ]
    );
    let rows = store.step_summary().await.unwrap();
    let get = |metric: &str| {
        rows.iter()
            .filter(|r| r.metric == metric)
            .map(|r| r.count)
            .sum::<u64>()
    };
    assert_eq!((get("skipped:no_phone"), get("stopped:suppressed")), (3, 1));
}

async fn leads_without_email_match_by_source_ref_then_phone(store: Arc<dyn Store>) {
    let mut by_ref = NewLead {
        source: "airtable:app/Leads".into(),
        source_ref: Some("rec1".into()),
        ..NewLead::default()
    };
    by_ref.first_name = Some("Ann".into());
    by_ref.custom.insert("tier".into(), "gold".into());
    let by_phone = NewLead {
        phone: Some(PhoneE164::parse("+14155550123", None).unwrap()),
        source: "csv:b.csv".into(),
        ..NewLead::default()
    };
    let out = store
        .upsert_leads(&[by_ref.clone(), by_phone.clone()], t0())
        .await
        .unwrap();
    assert!(out.iter().all(|o| matches!(o, UpsertOutcome::Inserted(_))));
    let mut ref_again = NewLead {
        last_name: Some("Lee".into()),
        ..by_ref
    };
    ref_again.first_name = None;
    ref_again.custom = [("stage".to_string(), "lead".to_string())].into();
    let phone_again = NewLead {
        company: Some("Acme".into()),
        ..by_phone
    };
    let out2 = store
        .upsert_leads(&[ref_again, phone_again], t0())
        .await
        .unwrap();
    assert_eq!(
        out2,
        vec![
            UpsertOutcome::Updated(out[0].id()),
            UpsertOutcome::Updated(out[1].id())
        ]
    );
    let ann = store.lead(out[0].id()).await.unwrap().unwrap();
    assert_eq!(
        (
            ann.profile.first_name.as_deref(),
            ann.profile.last_name.as_deref()
        ),
        (Some("Ann"), Some("Lee"))
    );
    assert_eq!(
        ann.profile.custom.get("tier").map(String::as_str),
        Some("gold"),
        "custom fields merge"
    );
    assert_eq!(
        ann.profile.custom.get("stage").map(String::as_str),
        Some("lead")
    );
    assert_eq!(
        store
            .lead(out[1].id())
            .await
            .unwrap()
            .unwrap()
            .profile
            .company
            .as_deref(),
        Some("Acme")
    );
    // A lead twice in one batch: the second occurrence updates the first.
    let twice = NewLead {
        source: "airtable:app/Leads".into(),
        source_ref: Some("rec2".into()),
        ..NewLead::default()
    };
    let out3 = store
        .upsert_leads(&[twice.clone(), twice], t0())
        .await
        .unwrap();
    assert!(matches!(out3[0], UpsertOutcome::Inserted(_)));
    assert_eq!(out3[1], UpsertOutcome::Updated(out3[0].id()));
    assert_eq!(
        store.lead_counts().await.unwrap(),
        vec![("active".to_string(), 3)]
    );
    let airtable = store
        .lead_ids(&LeadFilter {
            source_prefix: Some("airtable:".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(airtable, vec![out[0].id(), out3[0].id()]);
    assert!(store
        .lead_ids(&LeadFilter {
            has_email: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
}

async fn sent_deliveries_are_written_back_once(store: Arc<dyn Store>) {
    let mut l = lead("rec@example.com", "US");
    l.source = "airtable:app/Leads".into();
    l.source_ref = Some("recA".into());
    let ids: Vec<LeadId> = store
        .upsert_leads(&[l, lead("csv@example.com", "US")], t0())
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
    let due = store.due_enrollments(t0(), None, 10).await.unwrap();
    store
        .record_evaluations(&due.iter().map(|d| plan(d, t0())).collect::<Vec<_>>(), t0())
        .await
        .unwrap();
    let lease = Duration::minutes(5);
    for d in store
        .claim_due_deliveries(t0(), 10, "w", lease)
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
    let pending = store.pending_writebacks("airtable:", 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].source_ref.as_str(),
            pending[0].source.as_str(),
            pending[0].sent_at
        ),
        ("recA", "airtable:app/Leads", t0())
    );
    store
        .mark_written_back(&[pending[0].delivery_id], t0())
        .await
        .unwrap();
    assert!(store
        .pending_writebacks("airtable:", 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .pending_writebacks("csv:", 10)
        .await
        .unwrap()
        .is_empty());
}

async fn suppression_checks_keep_the_callers_keys(store: Arc<dyn Store>) {
    let phone = SuppressionKey::Phone("+14155550123".into());
    let domain = SuppressionKey::Domain("example.org".into());
    assert!(store
        .add_suppression(&phone, "manual", "cli", t0())
        .await
        .unwrap());
    assert!(store
        .add_suppression(&domain, "manual", "cli", t0())
        .await
        .unwrap());
    let asked = [
        SuppressionKey::Email("a@example.org".into()),
        domain.clone(),
        SuppressionKey::Phone("+14155550000".into()),
        phone.clone(),
    ];
    let hits = store.suppressed(&asked).await.unwrap();
    assert_eq!(
        hits.iter().map(|h| h.key.clone()).collect::<Vec<_>>(),
        vec![domain, phone]
    );
    assert!(hits
        .iter()
        .all(|h| h.reason == "manual" && h.source == "cli" && h.created_at == t0()));
    assert!(store.suppressed(&[]).await.unwrap().is_empty());
}

async fn a_released_claim_waits_for_its_new_time(store: Arc<dyn Store>) {
    seed(store.as_ref(), 1).await;
    let lease = Duration::minutes(5);
    let d = store
        .claim_due_deliveries(t0(), 10, "w", lease)
        .await
        .unwrap()
        .remove(0);
    let later = t0() + Duration::hours(9);
    assert!(
        !store
            .release_claim(d.id, d.fencing_token + 1, later, "quiet hours", t0())
            .await
            .unwrap(),
        "stale token"
    );
    assert!(store
        .release_claim(d.id, d.fencing_token, later, "quiet hours", t0())
        .await
        .unwrap());
    assert!(
        !store
            .release_claim(d.id, d.fencing_token, later, "quiet hours", t0())
            .await
            .unwrap(),
        "no longer claimed"
    );
    assert!(!store
        .begin_send(d.id, d.fencing_token, t0(), lease)
        .await
        .unwrap());
    assert!(store
        .claim_due_deliveries(later - Duration::seconds(1), 10, "w", lease)
        .await
        .unwrap()
        .is_empty());
    let again = store
        .claim_due_deliveries(later, 10, "w", lease)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((again.id, again.send_at, again.attempts), (d.id, later, 0));
    assert!(again.fencing_token > d.fencing_token);
}

/// A permanent channel failure and the step's fallback are recorded together: the failed
/// row keeps its error, a planned row on the next channel appears, the enrollment waits for
/// it; a stale token writes nothing; a channel is never planned twice for one step, and a
/// live row blocks another plan of its step.
async fn a_failed_channel_falls_back_in_one_transaction(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 2).await;
    let claimed = store
        .claim_due_deliveries(t0(), 10, "w1", Duration::minutes(5))
        .await
        .unwrap();
    let d = claimed.iter().find(|d| d.lead_id == ids[0]).unwrap();
    assert!(store
        .begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5))
        .await
        .unwrap());
    let enrollment = store.enrollments_for_lead(ids[0]).await.unwrap()[0].clone();
    let lead = store.lead(ids[0]).await.unwrap().unwrap();
    let due = DueEnrollment {
        enrollment: enrollment.clone(),
        lead,
    };
    let mut fallback = plan(&due, t0() + Duration::minutes(1));
    if let PlanDecision::Plan(next) = &mut fallback.decision {
        next.channel = Channel::Sms;
        next.to_address = "+15555550100".into();
        next.subject = None;
    }
    fallback.trace.gates[0].reason = "fell back from email to sms: 550 5.1.1".into();
    let error = "permanent failure: 550 5.1.1 no such user";
    // A stale token records nothing.
    assert!(!store
        .record_fallback(d.id, d.fencing_token - 1, error, &fallback, t0())
        .await
        .unwrap());
    assert!(store
        .record_fallback(d.id, d.fencing_token, error, &fallback, t0())
        .await
        .unwrap());
    let rows = store
        .deliveries(&DeliveryFilter {
            lead: Some(ids[0]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let failed = rows.iter().find(|r| r.channel == Channel::Email).unwrap();
    assert_eq!(failed.state, DeliveryState::Failed);
    assert_eq!(failed.last_error.as_deref(), Some(error));
    let next = rows.iter().find(|r| r.channel == Channel::Sms).unwrap();
    assert_eq!(
        (
            next.state,
            next.step_index,
            next.send_at,
            next.enrollment_id
        ),
        (
            DeliveryState::Planned,
            0,
            t0() + Duration::minutes(1),
            enrollment.id
        )
    );
    let e = &store.enrollments_for_lead(ids[0]).await.unwrap()[0];
    assert_eq!((e.state, e.current_step), (EnrollmentState::Waiting, 0));
    let traces = store.traces_for_lead(ids[0]).await.unwrap();
    assert_eq!(
        traces.last().unwrap().gates[0].reason,
        "fell back from email to sms: 550 5.1.1"
    );
    let failed_channels = store.failed_channels(&[enrollment.id]).await.unwrap();
    assert_eq!(
        failed_channels,
        vec![FailedChannel {
            enrollment_id: enrollment.id,
            step_index: 0,
            channel: Channel::Email,
            error: error.into(),
        }]
    );
    assert!(store.failed_channels(&[]).await.unwrap().is_empty());
    // The fallback row is claimable and the enrollment moves on when it is sent.
    let again = store
        .claim_due_deliveries(t0() + Duration::minutes(1), 10, "w1", Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![next.id]
    );
    assert!(store
        .begin_send(
            next.id,
            again[0].fencing_token,
            t0() + Duration::minutes(1),
            Duration::minutes(5)
        )
        .await
        .unwrap());
    // The sms fails too and nothing is left: the step stops as failed.
    let stop = Evaluation {
        trace: trace(&due, "stopped", t0()),
        decision: PlanDecision::Stop {
            reason: "delivery_failed".into(),
        },
    };
    assert!(store
        .record_fallback(
            next.id,
            again[0].fencing_token,
            "permanent failure: landline",
            &stop,
            t0()
        )
        .await
        .unwrap());
    let e = &store.enrollments_for_lead(ids[0]).await.unwrap()[0];
    assert_eq!(
        (e.state, e.stop_reason.as_deref()),
        (EnrollmentState::Stopped, Some("delivery_failed"))
    );
    assert_eq!(
        store.failed_channels(&[enrollment.id]).await.unwrap().len(),
        2
    );
    // The other lead's row is live: planning its step again adds nothing.
    let other = store.enrollments_for_lead(ids[1]).await.unwrap()[0].clone();
    let other_due = DueEnrollment {
        enrollment: EnrollmentRecord {
            state: EnrollmentState::Active,
            ..other
        },
        lead: store.lead(ids[1]).await.unwrap().unwrap(),
    };
    let mut sms = plan(&other_due, t0());
    if let PlanDecision::Plan(next) = &mut sms.decision {
        next.channel = Channel::Sms;
    }
    store.record_evaluations(&[sms], t0()).await.unwrap();
    assert_eq!(
        store
            .deliveries(&DeliveryFilter {
                lead: Some(ids[1]),
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        1
    );
}

fn permit(account: &str, now: DateTime<Utc>, per_minute: u32, cap: Option<u32>) -> PermitRequest {
    PermitRequest {
        account: account.into(),
        channel: Channel::Email,
        rates: vec![RateQuota {
            per: Duration::minutes(1),
            count: per_minute,
        }],
        daily_cap: cap,
        now,
    }
}

/// The shared limiter: two handles on one database take permits from the same rows. Sends
/// are spaced evenly (no burst), a daily cap counts every process's permits, a provider's
/// pause holds every process, and accounts are independent.
async fn two_handles_share_one_rate_limit(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    // 6 per minute: one every 10 s. Asked every 2.5 s, alternately by each handle, for 2 min.
    let mut granted = Vec::new();
    for i in 0..48 {
        let now = t0() + Duration::milliseconds(2500 * i);
        let store = if i % 2 == 0 { &a } else { &b };
        match store
            .take_send_permit(&permit("email:graph", now, 6, None))
            .await
            .unwrap()
        {
            Permit::Granted => granted.push(now),
            Permit::Wait { until, reason } => {
                assert!(
                    until > now && until <= now + Duration::seconds(10),
                    "{until} {now}"
                );
                assert!(reason.contains("rate limit of email:graph"), "{reason}");
            }
        }
    }
    assert_eq!(granted.len(), 12, "{granted:?}");
    assert!(granted
        .windows(2)
        .all(|w| w[1] - w[0] >= Duration::seconds(10)));
    // Concurrent requests at one instant: exactly one permit.
    let now = t0() + Duration::hours(1);
    let request = permit("email:graph", now, 6, None);
    let (x, y) = tokio::join!(a.take_send_permit(&request), b.take_send_permit(&request));
    let grants = [x.unwrap(), y.unwrap()]
        .iter()
        .filter(|p| **p == Permit::Granted)
        .count();
    assert_eq!(grants, 1);
    // A daily cap of 3 across both handles, then tomorrow.
    let mut day = 0;
    for i in 0..6 {
        let now = t0() + Duration::hours(2) + Duration::minutes(i);
        let store = if i % 2 == 0 { &a } else { &b };
        match store
            .take_send_permit(&permit("sms:twilio", now, 60, Some(3)))
            .await
            .unwrap()
        {
            Permit::Granted => day += 1,
            Permit::Wait { until, reason } => {
                assert!(reason.contains("daily cap of 3"), "{reason}");
                assert_eq!(
                    until,
                    (t0() + Duration::days(1))
                        .date_naive()
                        .and_hms_opt(0, 0, 0)
                        .unwrap()
                        .and_utc()
                );
            }
        }
    }
    assert_eq!(day, 3);
    // A pause set through one handle holds the other; a shorter pause never shortens it.
    let now = t0() + Duration::hours(3);
    a.pause_account("email:graph", now + Duration::seconds(30))
        .await
        .unwrap();
    a.pause_account("email:graph", now + Duration::seconds(5))
        .await
        .unwrap();
    match b
        .take_send_permit(&permit("email:graph", now + Duration::seconds(10), 6, None))
        .await
        .unwrap()
    {
        Permit::Wait { until, .. } => assert_eq!(until, now + Duration::seconds(30)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.take_send_permit(&permit("email:graph", now + Duration::seconds(30), 6, None))
            .await
            .unwrap(),
        Permit::Granted
    );
    // Another account is not held.
    assert_eq!(
        b.take_send_permit(&permit("email:smtp", now, 6, None))
            .await
            .unwrap(),
        Permit::Granted
    );
}

/// The planner's history batch: touches with channel, state, enrollment and step, and
/// engagement events without `sent`/`delivered`, oldest first, filtered by `since`.
async fn contact_history_returns_touches_and_engagement_per_lead(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 3).await;
    let lease = Duration::minutes(5);
    let sent_at = t0() + Duration::hours(1);
    let d = store
        .claim_due_deliveries(sent_at, 1, "w", lease)
        .await
        .unwrap()
        .remove(0);
    assert!(store
        .begin_send(d.id, d.fencing_token, sent_at, lease)
        .await
        .unwrap());
    store
        .record_outcome(
            d.id,
            d.fencing_token,
            &SendOutcome::Sent {
                provider_ref: "<h@x>".into(),
            },
            &FollowUp::Complete,
            sent_at,
        )
        .await
        .unwrap();
    let engaged = d.lead_id;
    let others: Vec<LeadId> = ids.iter().copied().filter(|l| *l != engaged).collect();
    let (uninterested, untouched) = (others[0], others[1]);
    let event = |lead, kind, hours: i64, delivery| NewEvent {
        lead_id: lead,
        delivery_id: delivery,
        kind,
        occurred_at: t0() + Duration::hours(hours),
        detail: "{}".into(),
        source: "test".into(),
    };
    for e in [
        event(engaged, EventKind::Clicked, 3, Some(d.id)),
        event(engaged, EventKind::Delivered, 1, Some(d.id)),
        event(engaged, EventKind::Opened, 2, Some(d.id)),
        event(uninterested, EventKind::NotInterested, 4, None),
    ] {
        store.record_event(&e).await.unwrap();
    }
    let history = store
        .contact_history(&ids, t0() - Duration::hours(1))
        .await
        .unwrap();
    let h = &history[&engaged];
    assert_eq!(h.touches.len(), 1);
    let touch = h.touches[0];
    assert_eq!(
        (touch.at, touch.channel, touch.sent, touch.delivery),
        (sent_at, Channel::Email, true, Some(d.id))
    );
    assert_eq!(touch.step, Some((d.enrollment_id, 0)));
    let kinds: Vec<EventKind> = h.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::Opened, EventKind::Clicked]);
    assert_eq!(h.events[0].delivery, Some(d.id));
    // "Not interested" stopped the sequence: its planned delivery is cancelled, not a touch.
    let h = &history[&uninterested];
    assert!(h.touches.is_empty(), "{h:?}");
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.events[0].kind, EventKind::NotInterested);
    assert_eq!(h.events[0].delivery, None);
    // A scheduled delivery is a touch that is not sent yet.
    let h = &history[&untouched];
    assert_eq!(
        (h.touches.len(), h.touches[0].sent, h.touches[0].at),
        (1, false, t0())
    );
    assert!(h.events.is_empty());
    // `since` filters both lists; leads without history are absent.
    let later = store
        .contact_history(&[engaged, untouched], t0() + Duration::minutes(150))
        .await
        .unwrap();
    assert!(!later.contains_key(&untouched));
    assert!(later[&engaged].touches.is_empty());
    assert_eq!(later[&engaged].events.len(), 1);
    assert_eq!(later[&engaged].events[0].kind, EventKind::Clicked);
    assert!(store.contact_history(&[], t0()).await.unwrap().is_empty());
}

async fn send_one(store: &dyn Store, at: DateTime<Utc>) -> DeliveryRecord {
    let claimed = store
        .claim_due_deliveries(at, 1, "w", Duration::minutes(5))
        .await
        .unwrap();
    let d = claimed.into_iter().next().expect("a due delivery");
    assert!(store
        .begin_send(d.id, d.fencing_token, at, Duration::minutes(5))
        .await
        .unwrap());
    assert!(store
        .record_outcome(
            d.id,
            d.fencing_token,
            &SendOutcome::Sent {
                provider_ref: format!("ref-{}", d.id.0),
            },
            &FollowUp::Complete,
            at,
        )
        .await
        .unwrap());
    d
}

async fn report_facts_flag_engagement_and_list_conversions(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 3).await;
    let first = send_one(store.as_ref(), t0()).await;
    let second = send_one(store.as_ref(), t0() + Duration::minutes(1)).await;
    let event = |d: &DeliveryRecord, kind: EventKind, minutes: i64, detail: &str| NewEvent {
        lead_id: d.lead_id,
        delivery_id: Some(d.id),
        kind,
        occurred_at: t0() + Duration::minutes(minutes),
        detail: detail.into(),
        source: "t".into(),
    };
    for e in [
        event(&first, EventKind::Opened, 5, "{}"),
        event(&first, EventKind::Clicked, 6, "{}"),
        event(&first, EventKind::Replied, 60, "{}"),
        event(&second, EventKind::Opened, 2, r#"{"automated":true}"#),
        event(&second, EventKind::Clicked, 2, r#"{"automated":true}"#),
    ] {
        store.record_event(&e).await.unwrap();
    }
    store
        .record_event(&NewEvent {
            delivery_id: None,
            ..event(
                &first,
                EventKind::Converted,
                120,
                r#"{"value":2500.5,"note":"demo"}"#,
            )
        })
        .await
        .unwrap();
    let facts = store
        .report_facts(&ReportQuery {
            campaign: Some("intro".into()),
            since: t0() - Duration::days(1),
            until: t0() + Duration::days(1),
        })
        .await
        .unwrap();
    assert_eq!(facts.deliveries.len(), 2, "only sent deliveries: {facts:?}");
    let (a, b) = (&facts.deliveries[0], &facts.deliveries[1]);
    assert_eq!((a.delivery_id, b.delivery_id), (first.id, second.id));
    assert_eq!(
        (a.campaign.as_str(), a.step_index, a.channel),
        ("intro", 0, Channel::Email)
    );
    assert_eq!(a.country, "US");
    assert!(a.opened && a.clicked && a.replied && !a.negative_reply && !a.bounced);
    assert_eq!(a.first_reply_at, Some(t0() + Duration::minutes(60)));
    assert!(
        !b.opened && !b.clicked,
        "automated opens and clicks are not a person's"
    );
    assert_eq!(b.sent_at, t0() + Duration::minutes(1));
    assert_eq!(facts.conversions.len(), 1);
    assert_eq!(facts.conversions[0].lead_id, first.lead_id);
    assert_eq!(facts.conversions[0].value, Some(2500.5));
    let other = store
        .report_facts(&ReportQuery {
            campaign: Some("other".into()),
            since: t0() - Duration::days(1),
            until: t0() + Duration::days(1),
        })
        .await
        .unwrap();
    assert_eq!(other, ReportFacts::default());
    let later = store
        .report_facts(&ReportQuery {
            campaign: None,
            since: t0() + Duration::seconds(30),
            until: t0() + Duration::days(1),
        })
        .await
        .unwrap();
    assert_eq!(later.deliveries.len(), 1, "the period bounds the send time");
    // What channel choice learns: sends and positive replies per industry, country, channel.
    let evidence = store
        .channel_evidence(t0() - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        evidence,
        vec![ChannelEvidenceRow {
            industry: String::new(),
            country: "US".into(),
            channel: Channel::Email,
            sent: 2,
            positive: 1,
        }]
    );
    assert!(later.conversions.len() <= 1);
    assert_eq!(ids.len(), 3);
}

async fn inbound_events_are_recorded_once_and_cursors_persist(store: Arc<dyn Store>) {
    let (_, ids) = seed(store.as_ref(), 3).await;
    let d = send_one(store.as_ref(), t0()).await;
    assert_eq!(store.find_delivery(d.id).await.unwrap().unwrap().id, d.id);
    assert!(store
        .find_delivery(engager_domain::DeliveryId(999_999))
        .await
        .unwrap()
        .is_none());
    let by_ref = store
        .find_delivery_by_provider_ref(&format!("ref-{}", d.id.0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_ref.id, d.id);
    assert!(store
        .find_delivery_by_provider_ref("<nope@x>")
        .await
        .unwrap()
        .is_none());
    let reply = NewEvent {
        lead_id: d.lead_id,
        delivery_id: Some(d.id),
        kind: EventKind::Replied,
        occurred_at: t0() + Duration::hours(1),
        detail: "{}".into(),
        source: "inbound:test".into(),
    };
    let first = store
        .record_external_event(&reply, "<r1@mail.example>")
        .await
        .unwrap()
        .expect("recorded the first time");
    assert_eq!(first.enrollments_stopped, 0, "the sequence had completed");
    assert!(store
        .record_external_event(&reply, "<r1@mail.example>")
        .await
        .unwrap()
        .is_none());
    let replies = store
        .events_for_lead(d.lead_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.kind == EventKind::Replied)
        .count();
    assert_eq!(replies, 1);
    // A company stop matches the whole domain, never a mere suffix of it.
    let none = store
        .stop_domain_sequences("ample.com", "company_replied", t0())
        .await
        .unwrap();
    assert_eq!(none.enrollments_stopped, 0);
    let company = store
        .stop_domain_sequences("EXAMPLE.com", "company_replied", t0() + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(company.enrollments_stopped, 2);
    assert_eq!(company.deliveries_cancelled, 2);
    for id in ids.iter().filter(|id| **id != d.lead_id) {
        let e = &store.enrollments_for_lead(*id).await.unwrap()[0];
        assert_eq!(e.state, EnrollmentState::Stopped);
        assert_eq!(e.stop_reason.as_deref(), Some("company_replied"));
    }
    // Cursors.
    assert!(store.inbound_cursor("imap:a").await.unwrap().is_none());
    let mut cursor = InboundCursor {
        source: "imap:a".into(),
        uid_validity: Some(u32::MAX),
        last_uid: Some(7),
        last_received_at: None,
        updated_at: t0(),
    };
    store.save_inbound_cursor(&cursor).await.unwrap();
    assert_eq!(
        store.inbound_cursor("imap:a").await.unwrap(),
        Some(cursor.clone())
    );
    cursor.last_uid = Some(9);
    cursor.updated_at = t0() + Duration::minutes(5);
    store.save_inbound_cursor(&cursor).await.unwrap();
    assert_eq!(store.inbound_cursor("imap:a").await.unwrap(), Some(cursor));
    let graph = InboundCursor {
        source: "graph:m/inbox".into(),
        uid_validity: None,
        last_uid: None,
        last_received_at: Some(t0() + Duration::seconds(3)),
        updated_at: t0(),
    };
    store.save_inbound_cursor(&graph).await.unwrap();
    assert_eq!(
        store.inbound_cursor("graph:m/inbox").await.unwrap(),
        Some(graph)
    );
}

async fn tasks_close_in_one_transaction_with_their_delivery(store: Arc<dyn Store>) {
    let (_, _) = seed(store.as_ref(), 4).await;
    let mut claimed = store
        .claim_due_deliveries(t0(), 10, "w", Duration::minutes(5))
        .await
        .unwrap();
    claimed.sort_by_key(|d| d.id);
    assert_eq!(claimed.len(), 4);
    let new_task = |d: &DeliveryRecord| NewTask {
        delivery_id: d.id,
        kind: "connection_note".into(),
        profile_url: "https://www.linkedin.com/in/ada".into(),
        body: "Hi Ada".into(),
        due_at: t0() + Duration::days(2),
        on_deadline: "skip".into(),
    };
    let mut tasks = Vec::new();
    for d in &claimed {
        // Not `sending` yet: no task.
        assert!(store
            .open_task(&new_task(d), d.fencing_token, t0())
            .await
            .unwrap()
            .is_none());
        assert!(store
            .begin_send(d.id, d.fencing_token, t0(), Duration::minutes(5))
            .await
            .unwrap());
        // A stale token: no task.
        assert!(store
            .open_task(&new_task(d), d.fencing_token + 1000, t0())
            .await
            .unwrap()
            .is_none());
        let task = store
            .open_task(&new_task(d), d.fencing_token, t0())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(task.state, TaskState::Open);
        assert_eq!(task.delivery_id, d.id);
        assert_eq!(task.lead_id, d.lead_id);
        // At most one task per delivery.
        let again = store
            .open_task(&new_task(d), d.fencing_token, t0())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.id, task.id);
        tasks.push(task);
    }
    // The lease is gone: an open task is never recovered as an interrupted send.
    let recovered = store
        .recover_expired_leases(t0() + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(recovered.unknown, 0);
    let row = store.find_delivery(claimed[0].id).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Sending);
    assert_eq!(row.claimed_by, Some(format!("task:{}", tasks[0].id)));
    assert_eq!(row.lease_until, None);
    let open = TaskFilter {
        state: Some(TaskState::Open),
        ..Default::default()
    };
    assert_eq!(store.tasks(&open).await.unwrap().len(), 4);
    assert!(store
        .tasks(&TaskFilter {
            due_before: Some(t0() + Duration::days(1)),
            ..open.clone()
        })
        .await
        .unwrap()
        .is_empty());

    // Done: sent, with a `sent` event, and the enrollment moves on.
    let next = t0() + Duration::days(3);
    assert!(store
        .close_task(
            tasks[0].id,
            &TaskClose::Done {
                follow_up: FollowUp::NextStepAt(next)
            },
            t0() + Duration::hours(1)
        )
        .await
        .unwrap());
    let row = store.find_delivery(claimed[0].id).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Sent);
    assert_eq!(row.provider_ref, Some(format!("task:{}", tasks[0].id)));
    let e = &store.enrollments_for_lead(tasks[0].lead_id).await.unwrap()[0];
    assert_eq!(
        (e.state, e.current_step, e.next_due_at),
        (EnrollmentState::Active, 1, Some(next))
    );
    assert!(store
        .events_for_lead(tasks[0].lead_id)
        .await
        .unwrap()
        .iter()
        .any(|e| e.event.kind == EventKind::Sent));
    // A closed task cannot be closed again.
    assert!(!store
        .close_task(
            tasks[0].id,
            &TaskClose::Done {
                follow_up: FollowUp::Complete
            },
            t0()
        )
        .await
        .unwrap());

    // Skipped: cancelled, the enrollment moves on.
    assert!(store
        .close_task(
            tasks[1].id,
            &TaskClose::Skipped {
                reason: "not connected".into(),
                follow_up: FollowUp::Complete
            },
            t0()
        )
        .await
        .unwrap());
    let row = store.find_delivery(claimed[1].id).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Cancelled);
    let skipped = store.task(tasks[1].id).await.unwrap().unwrap();
    assert_eq!(
        (skipped.state, skipped.note.as_deref()),
        (TaskState::Skipped, Some("not connected"))
    );
    assert_eq!(
        store.enrollments_for_lead(tasks[1].lead_id).await.unwrap()[0].state,
        EnrollmentState::Completed
    );

    // Fell back: the task's row is cancelled, a new row plans the same step on SMS.
    assert!(store
        .close_task(
            tasks[2].id,
            &TaskClose::Fallback {
                reason: "deadline passed".into(),
                delivery: NewDelivery {
                    channel: Channel::Sms,
                    send_at: t0() + Duration::days(2),
                    to_address: "+14155550123".into(),
                    subject: None,
                    body_text: "Hi Ada".into(),
                    body_html: None,
                    variant: None,
                },
            },
            t0() + Duration::days(2)
        )
        .await
        .unwrap());
    let rows = store
        .deliveries(&DeliveryFilter {
            lead: Some(tasks[2].lead_id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let sms = rows.iter().find(|r| r.channel == Channel::Sms).unwrap();
    assert_eq!((sms.state, sms.step_index), (DeliveryState::Planned, 0));
    let old = rows.iter().find(|r| r.id == claimed[2].id).unwrap();
    assert_eq!(old.state, DeliveryState::Cancelled);
    assert_eq!(
        store.task(tasks[2].id).await.unwrap().unwrap().state,
        TaskState::FellBack
    );
    assert_eq!(
        store.enrollments_for_lead(tasks[2].lead_id).await.unwrap()[0].state,
        EnrollmentState::Waiting
    );

    // A reply stops the sequence and cancels the open task with its delivery.
    let effects = store
        .record_event(&NewEvent {
            lead_id: tasks[3].lead_id,
            delivery_id: None,
            kind: EventKind::Replied,
            occurred_at: t0() + Duration::hours(5),
            detail: "{}".into(),
            source: "manual".into(),
        })
        .await
        .unwrap();
    assert_eq!(effects.deliveries_cancelled, 1);
    assert_eq!(
        store.task(tasks[3].id).await.unwrap().unwrap().state,
        TaskState::Cancelled
    );
    assert_eq!(
        store
            .find_delivery(claimed[3].id)
            .await
            .unwrap()
            .unwrap()
            .state,
        DeliveryState::Cancelled
    );
    assert!(store.tasks(&open).await.unwrap().is_empty());
}

async fn review_holds_until_approved_or_dropped(store: Arc<dyn Store>) {
    let leads: Vec<NewLead> = (0..2)
        .map(|i| lead(&format!("review{i}@example.com"), "US"))
        .collect();
    let ids: Vec<LeadId> = store
        .upsert_leads(&leads, t0())
        .await
        .unwrap()
        .into_iter()
        .map(UpsertOutcome::id)
        .collect();
    let campaign = store
        .save_campaign("reviewed", "Reviewed", "[campaign]", t0())
        .await
        .unwrap();
    store.enroll(campaign, &ids, t0()).await.unwrap();
    let due = store.due_enrollments(t0(), None, 10).await.unwrap();
    let evals: Vec<Evaluation> = due
        .iter()
        .map(|d| {
            let mut e = plan(d, t0());
            if let PlanDecision::Plan(delivery) = e.decision {
                e.decision = PlanDecision::Review(delivery);
            }
            e
        })
        .collect();
    store.record_evaluations(&evals, t0()).await.unwrap();
    let held = store
        .deliveries(&DeliveryFilter {
            state: Some(DeliveryState::PendingReview),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    assert!(
        store
            .claim_due_deliveries(t0() + Duration::hours(1), 10, "w", Duration::minutes(5))
            .await
            .unwrap()
            .is_empty(),
        "a held message is never claimed"
    );
    let later = t0() + Duration::hours(2);
    assert!(store
        .resolve_review(
            held[0].id,
            &ReviewResolution::Approve {
                subject: Some("Edited".into()),
                body_text: "Checked text".into(),
                body_html: None,
            },
            later,
        )
        .await
        .unwrap());
    assert!(store
        .resolve_review(
            held[1].id,
            &ReviewResolution::Drop {
                reason: "off-brand".into(),
                next_due: Some(later),
            },
            later,
        )
        .await
        .unwrap());
    assert!(
        !store
            .resolve_review(
                held[1].id,
                &ReviewResolution::Drop {
                    reason: "again".into(),
                    next_due: None,
                },
                later,
            )
            .await
            .unwrap(),
        "only a held message can be resolved"
    );
    let claimed = store
        .claim_due_deliveries(later, 10, "w", Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, held[0].id);
    assert_eq!(claimed[0].body_text, "Checked text");
    assert_eq!(
        claimed[0].send_at, later,
        "a past send time moves to the approval"
    );
    // The dropped step's enrollment moved on to its next step.
    let next = store.due_enrollments(later, None, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].lead.id, held[1].lead_id);
    assert_eq!(next[0].enrollment.current_step, 1);
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

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shared_rate_limit() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("t.db").display());
                let a = engager_store::open(&url).await.unwrap();
                let b = engager_store::open(&url).await.unwrap();
                super::two_handles_share_one_rate_limit(a, b).await;
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

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shared_rate_limit() {
                let Some(url) = engager_testkit::postgres_url() else { return };
                let schema = engager_testkit::unique_schema("shared_rate_limit");
                let a = engager_store::postgres::PgStore::connect_isolated(&url, &schema).await.unwrap();
                let b = engager_store::postgres::PgStore::connect_isolated(&url, &schema).await.unwrap();
                super::two_handles_share_one_rate_limit(Arc::new(a), Arc::new(b)).await;
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
    every_planner_decision_moves_the_enrollment,
    leads_without_email_match_by_source_ref_then_phone,
    sent_deliveries_are_written_back_once,
    suppression_checks_keep_the_callers_keys,
    a_released_claim_waits_for_its_new_time,
    contact_history_returns_touches_and_engagement_per_lead,
    a_failed_channel_falls_back_in_one_transaction,
    report_facts_flag_engagement_and_list_conversions,
    inbound_events_are_recorded_once_and_cursors_persist,
    tasks_close_in_one_transaction_with_their_delivery,
    review_holds_until_approved_or_dropped,
);
