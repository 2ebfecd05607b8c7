//! SQLite: consent records, per-send compliance evidence, campaign halts.

use std::collections::HashMap;

use engager_domain::compliance::ConsentRecord;
use engager_domain::{CampaignId, DeliveryId, LeadId};
use rusqlite::{params, params_from_iter, Connection};

use crate::common::{corrupt_in, from_ms, ms};
use crate::compliance_records::{channel_str, consent_from_parts, split_regimes};
use crate::*;

pub(super) fn record_consent(c: &mut Connection, r: &ConsentRecord, now: i64) -> StoreResult<i64> {
    c.execute(
        "INSERT INTO consents (lead_id, channel, basis, source, reference, contact, obtained_at, expires_at, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            r.lead_id.0,
            channel_str(r.channel),
            r.basis.as_str(),
            r.source,
            r.reference,
            r.contact,
            ms(r.obtained_at),
            r.expires_at.map(ms),
            now
        ],
    )?;
    Ok(c.last_insert_rowid())
}

pub(super) fn consents(
    c: &mut Connection,
    leads: &[LeadId],
) -> StoreResult<HashMap<LeadId, Vec<ConsentRecord>>> {
    let mut out: HashMap<LeadId, Vec<ConsentRecord>> = HashMap::new();
    for chunk in leads.chunks(900) {
        let sql = format!(
            "SELECT id, lead_id, channel, basis, source, reference, contact, obtained_at, expires_at \
             FROM consents WHERE lead_id IN ({}) ORDER BY lead_id, obtained_at, id",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut stmt = c.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(chunk.iter().map(|l| l.0)))?;
        while let Some(r) = rows.next()? {
            let record = consent_from_parts(
                "consents",
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                from_ms(r.get(7)?),
                r.get::<_, Option<i64>>(8)?.map(from_ms),
            )?;
            out.entry(record.lead_id).or_default().push(record);
        }
    }
    Ok(out)
}

pub(super) fn record_evidence(c: &mut Connection, e: &SendEvidence) -> StoreResult<()> {
    c.execute(
        "INSERT INTO compliance_evidence (delivery_id, lead_id, checked_at, provider, regimes, checks_json, consent_id, \
             footer_postal, footer_unsubscribe, one_click_header, stop_wording) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT (delivery_id) DO UPDATE SET checked_at = excluded.checked_at, provider = excluded.provider, \
             regimes = excluded.regimes, checks_json = excluded.checks_json, consent_id = excluded.consent_id, \
             footer_postal = excluded.footer_postal, footer_unsubscribe = excluded.footer_unsubscribe, \
             one_click_header = excluded.one_click_header, stop_wording = excluded.stop_wording",
        params![
            e.delivery_id.0,
            e.lead_id.0,
            ms(e.checked_at),
            e.provider,
            e.regimes.join(","),
            serde_json::to_string(&e.checks).unwrap_or_else(|_| "[]".into()),
            e.consent_id,
            e.footer_postal,
            e.footer_unsubscribe,
            e.one_click_header,
            e.stop_wording
        ],
    )?;
    Ok(())
}

pub(super) fn evidence_since(c: &mut Connection, since: i64) -> StoreResult<Vec<EvidenceRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT e.delivery_id, e.lead_id, e.checked_at, e.provider, e.regimes, e.checks_json, e.consent_id, \
                e.footer_postal, e.footer_unsubscribe, e.one_click_header, e.stop_wording, \
                d.channel, d.campaign_id, d.state \
         FROM compliance_evidence e JOIN deliveries d ON d.id = e.delivery_id \
         WHERE e.checked_at >= ?1 ORDER BY e.checked_at, e.delivery_id",
    )?;
    let mut rows = stmt.query([since])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let regimes: String = r.get(4)?;
        let checks: String = r.get(5)?;
        let channel: String = r.get(11)?;
        out.push(EvidenceRow {
            evidence: SendEvidence {
                delivery_id: DeliveryId(r.get(0)?),
                lead_id: LeadId(r.get(1)?),
                checked_at: from_ms(r.get(2)?),
                provider: r.get(3)?,
                regimes: split_regimes(&regimes),
                checks: serde_json::from_str(&checks)
                    .map_err(|e| corrupt_in("compliance_evidence", "checks_json", e))?,
                consent_id: r.get(6)?,
                footer_postal: r.get::<_, i64>(7)? != 0,
                footer_unsubscribe: r.get::<_, i64>(8)? != 0,
                one_click_header: r.get::<_, i64>(9)? != 0,
                stop_wording: r.get::<_, i64>(10)? != 0,
            },
            channel: channel
                .parse()
                .map_err(|e| corrupt_in("deliveries", "channel", e))?,
            campaign_id: CampaignId(r.get(12)?),
            state: r.get(13)?,
        });
    }
    Ok(out)
}

pub(super) fn compliance_traces(
    c: &mut Connection,
    since: i64,
) -> StoreResult<Vec<ComplianceTrace>> {
    let mut stmt = c.prepare_cached(
        "SELECT lead_id, campaign_id, evaluated_at, code, gates_json FROM traces \
         WHERE evaluated_at >= ?1 AND gates_json LIKE '%\"compliance\"%' AND gates_json LIKE '%\"passed\":false%' \
         ORDER BY evaluated_at, id",
    )?;
    let mut rows = stmt.query([since])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(ComplianceTrace {
            lead_id: LeadId(r.get(0)?),
            campaign_id: CampaignId(r.get(1)?),
            evaluated_at: from_ms(r.get(2)?),
            code: r.get(3)?,
            gates_json: r.get(4)?,
        });
    }
    Ok(out)
}

pub(super) fn campaign_halts(c: &mut Connection) -> StoreResult<Vec<CampaignHalt>> {
    let mut stmt = c.prepare_cached(
        "SELECT campaign_id, halted, reason, changed_by, changed_at FROM campaign_halts ORDER BY campaign_id",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(CampaignHalt {
            campaign_id: CampaignId(r.get(0)?),
            halted: r.get::<_, i64>(1)? != 0,
            reason: r.get(2)?,
            changed_by: r.get(3)?,
            changed_at: from_ms(r.get(4)?),
        });
    }
    Ok(out)
}

pub(super) fn set_campaign_halt(c: &mut Connection, h: &CampaignHalt) -> StoreResult<bool> {
    let n = c.execute(
        "INSERT INTO campaign_halts (campaign_id, halted, reason, changed_by, changed_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (campaign_id) DO UPDATE SET halted = excluded.halted, reason = excluded.reason, \
             changed_by = excluded.changed_by, changed_at = excluded.changed_at \
         WHERE campaign_halts.halted <> excluded.halted",
        params![h.campaign_id.0, h.halted, h.reason, h.changed_by, ms(h.changed_at)],
    )?;
    Ok(n > 0)
}

pub(super) fn pending_opt_out_writebacks(
    c: &mut Connection,
    prefix: &str,
    limit: usize,
) -> StoreResult<Vec<(LeadId, String)>> {
    let mut stmt = c.prepare_cached(
        "SELECT l.id, l.source_ref FROM leads l \
         WHERE l.source_ref IS NOT NULL AND substr(l.source, 1, length(?1)) = ?1 \
         AND (l.status = 'unsubscribed' \
              OR EXISTS (SELECT 1 FROM consents c WHERE c.lead_id = l.id AND c.basis = 'objection')) \
         AND NOT EXISTS (SELECT 1 FROM opt_out_writebacks w WHERE w.lead_id = l.id) \
         ORDER BY l.id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![prefix, limit as i64], |r| {
            Ok((LeadId(r.get(0)?), r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn mark_opt_outs_written_back(
    c: &mut Connection,
    leads: &[LeadId],
    now: i64,
) -> StoreResult<()> {
    let tx = c.transaction()?;
    for l in leads {
        tx.execute(
            "INSERT INTO opt_out_writebacks (lead_id, written_at) VALUES (?1, ?2) ON CONFLICT (lead_id) DO NOTHING",
            params![l.0, now],
        )?;
    }
    tx.commit()?;
    Ok(())
}
