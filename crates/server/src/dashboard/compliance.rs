//! The hook of the compliance panel's evidence summary.
//!
//! The panel already shows what the store records today: opt-outs (unsubscribes and
//! complaints from the report), the suppression list by kind and reason, the audit log and
//! the deliverability halts. When consent records and the compliance validators land (the
//! `compliance` report), their summary plugs in here: return one row per figure
//! (label, value, detail) and the panel renders them as a table above the audit log; the
//! figures must come from that report's code, not be recomputed here.

use engager_store::Store;

/// One figure of the compliance evidence: label, value, detail (plain text, escaped when
/// rendered).
pub(crate) type EvidenceRow = (String, String, String);

/// The compliance-evidence summary for the period; `None` while this build records no
/// consent evidence.
pub(crate) async fn evidence_summary(
    _store: &dyn Store,
    _since: chrono::DateTime<chrono::Utc>,
    _until: chrono::DateTime<chrono::Utc>,
) -> Option<Vec<EvidenceRow>> {
    None
}
