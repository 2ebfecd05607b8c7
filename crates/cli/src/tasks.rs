//! `engager tasks`: LinkedIn steps, which a person sends by hand (LinkedIn's terms forbid
//! automating it and its messaging API is partner-only), listed with the profile link, the
//! personalized text and the deadline; marked done (optionally with a reply) or skipped.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use engager_engine::{Catalog, Clock, SystemClock};
use engager_store::{TaskFilter, TaskRecord, TaskState};
use serde_json::json;

use crate::commands::App;
use crate::inbox::parse_instant;
use crate::output::{print_json, table, when};

/// `engager tasks …`
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Tasks waiting for a person (open ones by default), by deadline.
    List(ListArgs),
    /// You sent the message: records the send (and a reply with --replied).
    Done(DoneArgs),
    /// You will not send it: the sequence goes on with the next step.
    Skip(SkipArgs),
}

/// `engager tasks list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only open tasks whose deadline is within the next 24 hours (or passed).
    #[arg(long, conflicts_with = "overdue")]
    pub due: bool,
    /// Only open tasks whose deadline has passed.
    #[arg(long)]
    pub overdue: bool,
    /// Tasks in this state instead: open, done, skipped, fell_back, cancelled, or all.
    #[arg(long, default_value = "open")]
    pub state: String,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Act as if it were this instant (RFC 3339), for tests and replays.
    #[arg(long, hide = true, value_parser = parse_instant)]
    pub now: Option<DateTime<Utc>>,
}

/// `engager tasks done`
#[derive(Debug, Args)]
pub struct DoneArgs {
    /// The task id.
    pub id: i64,
    /// The lead answered: records a reply, which stops the lead's sequences.
    #[arg(long)]
    pub replied: bool,
    /// Act as if it were this instant (RFC 3339), for tests and replays.
    #[arg(long, hide = true, value_parser = parse_instant)]
    pub now: Option<DateTime<Utc>>,
}

/// `engager tasks skip`
#[derive(Debug, Args)]
pub struct SkipArgs {
    /// The task id.
    pub id: i64,
    /// Why (kept with the task and the delivery).
    #[arg(long, default_value = "skipped by hand")]
    pub reason: String,
    /// Act as if it were this instant (RFC 3339), for tests and replays.
    #[arg(long, hide = true, value_parser = parse_instant)]
    pub now: Option<DateTime<Utc>>,
}

fn task_json(t: &TaskRecord, campaign: &str, now: DateTime<Utc>) -> serde_json::Value {
    json!({
        "id": t.id, "delivery_id": t.delivery_id.0, "lead_id": t.lead_id.0, "campaign": campaign,
        "step": t.step_index + 1, "channel": t.channel.as_str(), "kind": t.kind,
        "profile_url": t.profile_url, "message": t.body, "state": t.state.as_str(),
        "due_at": t.due_at.to_rfc3339(), "overdue": t.state == TaskState::Open && t.due_at <= now,
        "on_deadline": t.on_deadline, "note": t.note, "created_at": t.created_at.to_rfc3339(),
        "closed_at": t.closed_at.map(|c| c.to_rfc3339()),
    })
}

pub async fn run(app: &App, command: TasksCommand, json: bool) -> Result<ExitCode> {
    let catalog = Catalog::load(app.store.as_ref()).await?;
    let slug = |t: &TaskRecord| {
        catalog
            .get(t.campaign_id)
            .map_or_else(|| t.campaign_id.to_string(), |c| c.slug.clone())
    };
    match command {
        TasksCommand::List(args) => {
            let now = args.now.unwrap_or_else(|| SystemClock.now());
            let state = match args.state.trim() {
                "all" => None,
                s => Some(TaskState::parse(s).ok_or_else(|| {
                    anyhow!(
                        "--state {s:?}: expected open, done, skipped, fell_back, cancelled or all"
                    )
                })?),
            };
            let (state, due_before) = if args.overdue {
                (Some(TaskState::Open), Some(now))
            } else if args.due {
                (
                    Some(TaskState::Open),
                    Some(now + chrono::Duration::hours(24)),
                )
            } else {
                (state, None)
            };
            let tasks = app
                .store
                .tasks(&TaskFilter {
                    state,
                    due_before,
                    limit: Some(args.limit),
                    ..Default::default()
                })
                .await?;
            if json {
                print_json(&json!(tasks
                    .iter()
                    .map(|t| task_json(t, &slug(t), now))
                    .collect::<Vec<_>>()));
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table(&[
                "Id", "Lead", "Campaign", "Step", "Kind", "Profile", "Due", "State", "Message",
            ]);
            for task in &tasks {
                let due = if task.state == TaskState::Open && task.due_at <= now {
                    format!("{} (overdue)", when(task.due_at))
                } else {
                    when(task.due_at)
                };
                t.add_row(vec![
                    task.id.to_string(),
                    task.lead_id.to_string(),
                    slug(task),
                    (task.step_index + 1).to_string(),
                    task.kind.clone(),
                    task.profile_url.clone(),
                    due,
                    task.state.as_str().to_owned(),
                    task.body.clone(),
                ]);
            }
            println!("{t}");
            println!(
                "{} task(s). Send each by hand on LinkedIn, then `engager tasks done <id>` (add --replied when the lead answered) or `engager tasks skip <id>`.",
                tasks.len()
            );
        }
        TasksCommand::Done(args) => {
            let now = args.now.unwrap_or_else(|| SystemClock.now());
            let done = engager_engine::tasks::complete(
                app.store.as_ref(),
                &catalog,
                &app.engine,
                args.id,
                args.replied,
                now,
            )
            .await?;
            if json {
                let mut value = task_json(&done.task, &slug(&done.task), now);
                value["replied"] = json!(done.replied);
                value["enrollments_stopped"] = json!(done.enrollments_stopped);
                print_json(&value);
            } else {
                println!(
                    "Task {} done: delivery {} recorded as sent{}.",
                    done.task.id,
                    done.task.delivery_id,
                    if done.replied {
                        format!(
                            "; reply recorded, {} sequence(s) stopped",
                            done.enrollments_stopped
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
        TasksCommand::Skip(args) => {
            let now = args.now.unwrap_or_else(|| SystemClock.now());
            let task = engager_engine::tasks::skip(
                app.store.as_ref(),
                &catalog,
                &app.engine,
                args.id,
                &args.reason,
                now,
            )
            .await?;
            if json {
                print_json(&task_json(&task, &slug(&task), now));
            } else {
                println!(
                    "Task {} skipped ({}); the sequence goes on with the next step.",
                    task.id, args.reason
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
