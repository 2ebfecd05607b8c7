//! Airtable status changes as conversions: on `engager airtable sync`, every record whose
//! `Engagement_Status` is one of `[airtable] conversion_statuses` marks its lead as converted
//! (a `converted` event, which stops its sequences and counts in reports), once per lead
//! however often the base is synced.

use anyhow::Result;
use chrono::{DateTime, Utc};
use engager_domain::EventKind;
use engager_sources::airtable::StatusConversion;
use engager_store::{NewEvent, Store};
use serde_json::json;
use tracing::info;

/// What applying the conversions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversionSync {
    /// Conversions recorded now (or, in a dry run, that would be unless already recorded).
    pub recorded: usize,
    /// Records whose lead was already converted by an earlier sync.
    pub already: usize,
    /// Record ids with a conversion status but no lead in Engager (never imported).
    pub unknown: Vec<String>,
}

/// The idempotency key of a record's conversion: one per record, so one per lead.
pub fn conversion_key(source: &str, record_id: &str) -> String {
    format!("{source}:{record_id}:converted")
}

/// Records a conversion for each record's lead (found by its source reference); a record
/// whose conversion was recorded before records nothing.
pub async fn apply(
    store: &dyn Store,
    source: &str,
    conversions: &[StatusConversion],
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ConversionSync> {
    let mut out = ConversionSync::default();
    for c in conversions {
        let Some(lead) = store.lead_by_source_ref(source, &c.record_id).await? else {
            out.unknown.push(c.record_id.clone());
            continue;
        };
        if dry_run {
            out.recorded += 1;
            continue;
        }
        let event = NewEvent {
            lead_id: lead,
            delivery_id: None,
            kind: EventKind::Converted,
            occurred_at: now,
            detail: json!({
                "via": "airtable",
                "record": c.record_id,
                "status": c.status,
                "conversion": c.kind,
            })
            .to_string(),
            source: source.to_owned(),
        };
        match store
            .record_external_event(&event, &conversion_key(source, &c.record_id))
            .await?
        {
            Some(_) => {
                info!(lead_id = lead.0, record = %c.record_id, status = %c.status, "Airtable status marks the lead as converted.");
                out.recorded += 1;
            }
            None => out.already += 1,
        }
    }
    Ok(out)
}
