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
    every_planner_decision_moves_the_enrollment,
    leads_without_email_match_by_source_ref_then_phone,
    sent_deliveries_are_written_back_once,
    suppression_checks_keep_the_callers_keys,
    a_released_claim_waits_for_its_new_time,
    contact_history_returns_touches_and_engagement_per_lead,
);
