//! LinkedIn steps as tasks for a person.
//!
//! LinkedIn's User Agreement forbids bots that send messages, and its messaging API is open
//! only to approved partners, so Engager never sends on LinkedIn: the dispatcher drafts the
//! message and hands the delivery to a person as a task (profile link, text, deadline). The
//! person sends it by hand and says so (`engager tasks done`), or skips it.
//!
//! Ledger invariants kept:
//! - **No duplicate.** A task is opened only for a delivery the dispatcher claimed and moved
//!   to `sending` (the fencing token is checked in the same transaction), at most one task per
//!   delivery. While it is open the delivery stays `sending`, without a lease, so lease
//!   recovery never turns it into `unknown` and no worker claims it again.
//! - **No loss.** Every task ends in exactly one way, in one transaction with its delivery:
//!   done (`sent`, with a `sent` event, the enrollment moves on), skipped (`cancelled`, the
//!   enrollment moves on), fell back (`cancelled`, and a new row for the same step on the
//!   next channel, which the enrollment waits for), or cancelled with the sequence (a reply,
//!   bounce or opt-out cancels the lead's open tasks).
//! - **Deadlines.** A task still open at its deadline is handled per its step
//!   (`on_deadline = "skip"` or `"fallback"`) by [`handle_deadlines`], which `engager run` and
//!   the daemon call on every pass.

use chrono::{DateTime, Utc};
use engager_channels::{ChannelSender, OutgoingMessage};
use engager_domain::campaign::OnDeadline;
use engager_domain::{Campaign, Channel, EventKind};
use engager_store::{
    DeliveryRecord, FollowUp, NewEvent, NewTask, PlanDecision, Store, StoreError, TaskClose,
    TaskFilter, TaskRecord, TaskState,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::planner::{suppression_keys, Planner, LINKEDIN_NOTE_LIMIT};
use crate::{Catalog, EngineConfig};

/// Why a task command failed.
#[derive(Debug, Error)]
pub enum TaskError {
    /// No task with that id.
    #[error("no task {0} (see `engager tasks list`)")]
    NotFound(i64),
    /// The task is no longer open.
    #[error("task {id} is already {state}; only open tasks can be changed")]
    NotOpen {
        /// The task.
        id: i64,
        /// Its state.
        state: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `connection_note` when the text fits LinkedIn's 300-character note, else `message`.
pub fn task_kind(body: &str) -> &'static str {
    if body.chars().count() <= LINKEDIN_NOTE_LIMIT {
        "connection_note"
    } else {
        "message"
    }
}

/// Hands a claimed, `sending` LinkedIn delivery to a person: the outbox sender (when
/// enabled) writes the task file for people who work from files, and the task is opened in
/// the store. `None` when the claim was lost meanwhile (nothing is opened then).
pub async fn hand_over(
    store: &dyn Store,
    sender: Option<&dyn ChannelSender>,
    d: &DeliveryRecord,
    campaign: &Campaign,
    message: &OutgoingMessage,
    now: DateTime<Utc>,
) -> Result<Option<TaskRecord>, StoreError> {
    let step = campaign.step(d.step_index);
    let deadline = step.map_or(
        chrono::Duration::days(engager_domain::campaign::DEFAULT_TASK_DEADLINE_DAYS),
        |s| s.task_deadline,
    );
    let on_deadline = step.map_or(OnDeadline::Skip, |s| s.on_deadline);
    if let Some(sender) = sender {
        if let Err(e) = sender.send(message).await {
            // The task in the store is what counts; the file is a convenience.
            warn!(delivery_id = d.id.0, error = %e, "Could not write the task file; the task is still listed by `engager tasks list`.");
        }
    }
    let task = store
        .open_task(
            &NewTask {
                delivery_id: d.id,
                kind: task_kind(&d.body_text).to_owned(),
                profile_url: d.to_address.clone(),
                body: d.body_text.clone(),
                due_at: now + deadline,
                on_deadline: on_deadline.as_str().to_owned(),
            },
            d.fencing_token,
            now,
        )
        .await?;
    match &task {
        Some(t) => info!(
            delivery_id = d.id.0,
            task_id = t.id,
            due_at = %t.due_at,
            "LinkedIn step handed to a person as a task."
        ),
        None => warn!(
            delivery_id = d.id.0,
            "Claim lost before the task was opened; no task."
        ),
    }
    Ok(task)
}

/// What the enrollment does after the task's step: the next step's due time (counted from
/// now, in the lead's zone), or completion.
async fn follow_up(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    task: &TaskRecord,
    now: DateTime<Utc>,
) -> Result<FollowUp, StoreError> {
    let next = catalog
        .get(task.campaign_id)
        .and_then(|c| c.step(task.step_index + 1));
    let Some(next) = next else {
        return Ok(FollowUp::Complete);
    };
    Ok(match store.lead(task.lead_id).await? {
        Some(lead) => FollowUp::NextStepAt(crate::timing::next_step_due(config, &lead, next, now)),
        None => FollowUp::NextStepAt(now + next.delay),
    })
}

async fn open_task(store: &dyn Store, id: i64) -> Result<TaskRecord, TaskError> {
    let task = store.task(id).await?.ok_or(TaskError::NotFound(id))?;
    if task.state != TaskState::Open {
        return Err(TaskError::NotOpen {
            id,
            state: task.state.as_str(),
        });
    }
    Ok(task)
}

/// What completing a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The task, as it is now.
    pub task: TaskRecord,
    /// Whether a reply was recorded too.
    pub replied: bool,
    /// Sequences the reply stopped.
    pub enrollments_stopped: u64,
}

/// A person sent the task's message: its delivery becomes `sent` (with a `sent` event) and
/// the enrollment moves on; with `replied`, a reply event follows, which stops the lead's
/// sequences.
pub async fn complete(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    id: i64,
    replied: bool,
    now: DateTime<Utc>,
) -> Result<Completed, TaskError> {
    let task = open_task(store, id).await?;
    let next = follow_up(store, catalog, config, &task, now).await?;
    if !store
        .close_task(id, &TaskClose::Done { follow_up: next }, now)
        .await?
    {
        let state = store.task(id).await?.map_or("gone", |t| t.state.as_str());
        return Err(TaskError::NotOpen { id, state });
    }
    let mut enrollments_stopped = 0;
    if replied {
        let effects = store
            .record_event(&NewEvent {
                lead_id: task.lead_id,
                delivery_id: Some(task.delivery_id),
                kind: EventKind::Replied,
                occurred_at: now,
                detail: serde_json::json!({"task_id": id, "channel": "linkedin"}).to_string(),
                source: "task".into(),
            })
            .await?;
        enrollments_stopped = effects.enrollments_stopped;
    }
    let task = store.task(id).await?.ok_or(TaskError::NotFound(id))?;
    Ok(Completed {
        task,
        replied,
        enrollments_stopped,
    })
}

/// A person decided not to send the task's message: its delivery is `cancelled` and the
/// enrollment moves on to the next step.
pub async fn skip(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<TaskRecord, TaskError> {
    let task = open_task(store, id).await?;
    let next = follow_up(store, catalog, config, &task, now).await?;
    let closed = store
        .close_task(
            id,
            &TaskClose::Skipped {
                reason: reason.to_owned(),
                follow_up: next,
            },
            now,
        )
        .await?;
    let task = store.task(id).await?.ok_or(TaskError::NotFound(id))?;
    if !closed {
        return Err(TaskError::NotOpen {
            id,
            state: task.state.as_str(),
        });
    }
    Ok(task)
}

/// Marks every open task done now, as a person working through the list would (the
/// simulation's stand-in for the user); returns them as sent deliveries.
pub async fn complete_open_tasks(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    now: DateTime<Utc>,
) -> Result<Vec<crate::dispatcher::SentDelivery>, StoreError> {
    let open = store
        .tasks(&TaskFilter {
            state: Some(TaskState::Open),
            ..Default::default()
        })
        .await?;
    let mut sent = Vec::with_capacity(open.len());
    for task in open {
        match complete(store, catalog, config, task.id, false, now).await {
            Ok(_) => sent.push(crate::dispatcher::SentDelivery {
                delivery_id: task.delivery_id,
                lead_id: task.lead_id,
                campaign_id: task.campaign_id,
                step_index: task.step_index,
                channel: task.channel,
                sent_at: now,
                provider_ref: format!("task:{}", task.id),
            }),
            Err(TaskError::Store(e)) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(sent)
}

/// What the deadline pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadlineReport {
    /// Tasks skipped at their deadline.
    pub skipped: Vec<i64>,
    /// Tasks whose step was planned on another channel: (task, channel).
    pub fell_back: Vec<(i64, Channel)>,
}

/// Handles every open task past its deadline, per its step: skip it, or plan the step again
/// on the step's next channel the lead can be reached on (through every planner gate; when
/// none passes, the task is skipped with the planner's reason).
pub async fn handle_deadlines(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    now: DateTime<Utc>,
) -> Result<DeadlineReport, StoreError> {
    let mut report = DeadlineReport::default();
    let overdue = store
        .tasks(&TaskFilter {
            state: Some(TaskState::Open),
            due_before: Some(now),
            limit: Some(config.batch_size.max(1)),
            ..Default::default()
        })
        .await?;
    for task in overdue {
        let deadline = format!(
            "not done by its deadline {}",
            task.due_at.format("%Y-%m-%d %H:%M UTC")
        );
        if OnDeadline::parse(&task.on_deadline) == Some(OnDeadline::Fallback) {
            match fallback_delivery(store, catalog, config, &task, &deadline, now).await? {
                Ok(delivery) => {
                    let channel = delivery.channel;
                    if store
                        .close_task(
                            task.id,
                            &TaskClose::Fallback {
                                reason: deadline.clone(),
                                delivery,
                            },
                            now,
                        )
                        .await?
                    {
                        info!(task_id = task.id, %channel, "Task past its deadline: the step falls back to another channel.");
                        report.fell_back.push((task.id, channel));
                    }
                    continue;
                }
                Err(why) => {
                    let reason = format!("{deadline}; no fallback: {why}");
                    skip_overdue(store, catalog, config, &task, &reason, now, &mut report).await?;
                    continue;
                }
            }
        }
        skip_overdue(store, catalog, config, &task, &deadline, now, &mut report).await?;
    }
    Ok(report)
}

async fn skip_overdue(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    task: &TaskRecord,
    reason: &str,
    now: DateTime<Utc>,
    report: &mut DeadlineReport,
) -> Result<(), StoreError> {
    let next = follow_up(store, catalog, config, task, now).await?;
    if store
        .close_task(
            task.id,
            &TaskClose::Skipped {
                reason: reason.to_owned(),
                follow_up: next,
            },
            now,
        )
        .await?
    {
        info!(
            task_id = task.id,
            reason, "Task past its deadline: skipped."
        );
        report.skipped.push(task.id);
    }
    Ok(())
}

/// The planner's delivery for the task's step without LinkedIn, or why there is none.
async fn fallback_delivery(
    store: &dyn Store,
    catalog: &Catalog,
    config: &EngineConfig,
    task: &TaskRecord,
    deadline: &str,
    now: DateTime<Utc>,
) -> Result<Result<engager_store::NewDelivery, String>, StoreError> {
    let Some(campaign) = catalog.get(task.campaign_id) else {
        return Ok(Err("the campaign no longer exists".into()));
    };
    let Some(lead) = store.lead(task.lead_id).await? else {
        return Ok(Err("the lead no longer exists".into()));
    };
    let Some(enrollment) = store
        .enrollments_for_lead(task.lead_id)
        .await?
        .into_iter()
        .find(|e| e.id == task.enrollment_id)
    else {
        return Ok(Err("the enrollment no longer exists".into()));
    };
    let history_since = now - config.timing.history.max(chrono::Duration::days(7));
    let mut histories = store.contact_history(&[lead.id], history_since).await?;
    let history = histories.remove(&lead.id).unwrap_or_default();
    let suppressed = store.suppressed(&suppression_keys(&lead)).await?;
    let due = engager_store::DueEnrollment {
        enrollment: engager_store::EnrollmentRecord {
            current_step: task.step_index,
            ..enrollment
        },
        lead,
    };
    let evaluation = Planner::new(store, catalog, config).evaluate_excluding(
        &due,
        campaign,
        &history,
        &suppressed,
        &[(task.channel, format!("task {deadline}"))],
        now,
    );
    Ok(match evaluation.decision {
        PlanDecision::Plan(delivery) | PlanDecision::Review(delivery) => Ok(delivery),
        PlanDecision::Defer { until } => Err(format!(
            "the next channel is not free before {}",
            until.format("%Y-%m-%d %H:%M UTC")
        )),
        PlanDecision::Skip { .. } | PlanDecision::Stop { .. } => Err(evaluation
            .trace
            .gates
            .iter()
            .rev()
            .find(|g| !g.passed)
            .map_or_else(|| "no other channel".to_owned(), |g| g.reason.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_or_message_by_length() {
        assert_eq!(task_kind("Hi Jane"), "connection_note");
        assert_eq!(task_kind(&"x".repeat(301)), "message");
    }
}
