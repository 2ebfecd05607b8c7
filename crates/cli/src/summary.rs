//! The per-step summary shown by `engager status` and at the end of the quickstart.

use std::collections::BTreeMap;

use engager_engine::Catalog;
use engager_store::{Store, StoreError};
use serde_json::json;

use crate::output::table;

/// Counts per (campaign, step, channel).
#[derive(Debug, Default)]
pub struct Summary {
    rows: BTreeMap<(String, usize, String), StepCounts>,
    step_names: BTreeMap<(String, usize), String>,
}

/// The counts of one (campaign, step, channel).
#[derive(Debug, Default, Clone)]
pub struct StepCounts {
    planned: u64,
    sent: u64,
    cancelled: u64,
    failed: u64,
    pending: u64,
    skipped: BTreeMap<String, u64>,
    events: BTreeMap<String, u64>,
}

impl Summary {
    /// Reads the summary from the store.
    pub async fn load(store: &dyn Store, catalog: &Catalog) -> Result<Self, StoreError> {
        let mut summary = Summary::default();
        for c in catalog.all() {
            for s in &c.steps {
                summary
                    .step_names
                    .insert((c.slug.clone(), s.index), s.name.clone());
            }
        }
        for row in store.step_summary().await? {
            let counts = summary
                .rows
                .entry((row.campaign, row.step_index, row.channel))
                .or_default();
            let (kind, name) = row
                .metric
                .split_once(':')
                .unwrap_or((row.metric.as_str(), ""));
            match kind {
                "delivery" => {
                    counts.planned += row.count;
                    match name {
                        "sent" => counts.sent += row.count,
                        "cancelled" => counts.cancelled += row.count,
                        "failed" => counts.failed += row.count,
                        _ => counts.pending += row.count,
                    }
                }
                "skipped" | "stopped" => {
                    *counts.skipped.entry(format!("{kind}: {name}")).or_default() += row.count
                }
                "event" => *counts.events.entry(name.to_owned()).or_default() += row.count,
                _ => {}
            }
        }
        Ok(summary)
    }

    fn event(c: &StepCounts, kind: &str) -> u64 {
        c.events.get(kind).copied().unwrap_or(0)
    }

    /// The summary as a table, and the skip reasons below it.
    pub fn render(&self) -> String {
        let mut t = table(&[
            "Campaign",
            "Step",
            "Channel",
            "Planned",
            "Sent",
            "Pending",
            "Cancelled",
            "Failed",
            "Skipped",
            "Opened",
            "Clicked",
            "Replied",
            "Bounced",
            "Unsub",
        ]);
        let mut reasons = table(&["Campaign", "Step", "Skipped / stopped because", "Count"]);
        let mut any_reason = false;
        for ((campaign, step, channel), c) in &self.rows {
            let name = self
                .step_names
                .get(&(campaign.clone(), *step))
                .cloned()
                .unwrap_or_default();
            let skipped: u64 = c.skipped.values().sum();
            t.add_row(vec![
                campaign.clone(),
                format!("{} {}", step + 1, name),
                channel.clone(),
                c.planned.to_string(),
                c.sent.to_string(),
                c.pending.to_string(),
                c.cancelled.to_string(),
                c.failed.to_string(),
                skipped.to_string(),
                Self::event(c, "opened").to_string(),
                Self::event(c, "clicked").to_string(),
                Self::event(c, "replied").to_string(),
                (Self::event(c, "hard_bounce") + Self::event(c, "soft_bounce")).to_string(),
                Self::event(c, "unsubscribed").to_string(),
            ]);
            for (reason, n) in &c.skipped {
                any_reason = true;
                reasons.add_row(vec![
                    campaign.clone(),
                    format!("{} {}", step + 1, name),
                    reason.clone(),
                    n.to_string(),
                ]);
            }
        }
        if any_reason {
            format!("{t}\n{reasons}")
        } else {
            t.to_string()
        }
    }

    /// The summary as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!(self
            .rows
            .iter()
            .map(|((campaign, step, channel), c)| json!({
                "campaign": campaign,
                "step": step + 1,
                "step_name": self.step_names.get(&(campaign.clone(), *step)),
                "channel": channel,
                "planned": c.planned,
                "sent": c.sent,
                "pending": c.pending,
                "cancelled": c.cancelled,
                "failed": c.failed,
                "skipped": c.skipped,
                "events": c.events,
            }))
            .collect::<Vec<_>>())
    }
}
