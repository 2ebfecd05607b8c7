//! Open and click tracking at send time: the dispatcher applies the campaign's `[tracking]`
//! to a claimed email just before sending it, and stores the result first.
//!
//! Tracking happens here rather than in the planner because tokens name the delivery, whose
//! id only exists once the planner's row is stored. The tracked message replaces the
//! ledger's copy before it is sent, so the ledger holds what was actually sent, and the
//! rewriting is deterministic and idempotent (`engager_domain::tracking::apply`): a retry
//! (or a send reconciled after a crash) sends the same bytes and tokens.

use chrono::{DateTime, Utc};
use engager_domain::{tracking, Campaign, Channel};
use engager_store::{DeliveryRecord, Store, StoreError, TrackedMessage};
use tracing::debug;

use crate::EngineConfig;

/// The bodies to send, or `None` when the claim was lost while storing them.
pub async fn prepare(
    store: &dyn Store,
    config: &EngineConfig,
    campaign: &Campaign,
    d: &DeliveryRecord,
    now: DateTime<Utc>,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    let unchanged = || Ok(Some((d.body_text.clone(), d.body_html.clone())));
    if d.channel != Channel::Email || !campaign.tracking.any() {
        return unchanged();
    }
    let tracked = tracking::apply(
        campaign.tracking,
        &config.public_base_url,
        &config.link_secret,
        d.id,
        &d.body_text,
        d.body_html.as_deref(),
    );
    if !tracked.changed(&d.body_text, d.body_html.as_deref()) {
        return unchanged();
    }
    let message = TrackedMessage {
        body_text: tracked.body_text,
        body_html: tracked.body_html,
        links: tracked.links,
    };
    if !store
        .save_tracked_message(d.id, d.fencing_token, &message, now)
        .await?
    {
        return Ok(None);
    }
    debug!(
        links = message.links.len(),
        pixel = tracked.pixel,
        "Tracking applied to the message."
    );
    Ok(Some((message.body_text, message.body_html)))
}
