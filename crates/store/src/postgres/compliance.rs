//! PostgreSQL: consent records, per-send compliance evidence, campaign halts (the same rows
//! as SQLite's).

use std::collections::HashMap;

use engager_domain::compliance::ConsentRecord;
use engager_domain::{CampaignId, DeliveryId, LeadId};
use sqlx::Row;

use super::PgStore;
use crate::common::{corrupt_in, from_ms, ms};
use crate::compliance_records::{channel_str, consent_from_parts, split_regimes};
use crate::*;

impl PgStore {
    pub(super) async fn record_consent_impl(&self, r: &ConsentRecord) -> StoreResult<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO consents (lead_id, channel, basis, source, reference, contact, obtained_at, expires_at, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(r.lead_id.0)
        .bind(channel_str(r.channel))
        .bind(r.basis.as_str())
        .bind(&r.source)
        .bind(&r.reference)
        .bind(&r.contact)
        .bind(ms(r.obtained_at))
        .bind(r.expires_at.map(ms))
        .bind(ms(chrono::Utc::now()))
        .fetch_one(self.pool())
        .await?;
        Ok(id)
    }

    pub(super) async fn consents_impl(
        &self,
        leads: &[LeadId],
    ) -> StoreResult<HashMap<LeadId, Vec<ConsentRecord>>> {
        let ids: Vec<i64> = leads.iter().map(|l| l.0).collect();
        let rows = sqlx::query(
            "SELECT id, lead_id, channel, basis, source, reference, contact, obtained_at, expires_at \
             FROM consents WHERE lead_id = ANY($1) ORDER BY lead_id, obtained_at, id",
        )
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        let mut out: HashMap<LeadId, Vec<ConsentRecord>> = HashMap::new();
        for r in rows {
            let record = consent_from_parts(
                "consents",
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
                from_ms(r.try_get(7)?),
                r.try_get::<Option<i64>, _>(8)?.map(from_ms),
            )?;
            out.entry(record.lead_id).or_default().push(record);
        }
        Ok(out)
    }

    pub(super) async fn record_evidence_impl(&self, e: &SendEvidence) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO compliance_evidence (delivery_id, lead_id, checked_at, provider, regimes, checks_json, consent_id, \
                 footer_postal, footer_unsubscribe, one_click_header, stop_wording) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (delivery_id) DO UPDATE SET checked_at = excluded.checked_at, provider = excluded.provider, \
                 regimes = excluded.regimes, checks_json = excluded.checks_json, consent_id = excluded.consent_id, \
                 footer_postal = excluded.footer_postal, footer_unsubscribe = excluded.footer_unsubscribe, \
                 one_click_header = excluded.one_click_header, stop_wording = excluded.stop_wording",
        )
        .bind(e.delivery_id.0)
        .bind(e.lead_id.0)
        .bind(ms(e.checked_at))
        .bind(&e.provider)
        .bind(e.regimes.join(","))
        .bind(serde_json::to_string(&e.checks).unwrap_or_else(|_| "[]".into()))
        .bind(e.consent_id)
        .bind(i32::from(e.footer_postal))
        .bind(i32::from(e.footer_unsubscribe))
        .bind(i32::from(e.one_click_header))
        .bind(i32::from(e.stop_wording))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(super) async fn evidence_since_impl(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<EvidenceRow>> {
        let rows = sqlx::query(
            "SELECT e.delivery_id, e.lead_id, e.checked_at, e.provider, e.regimes, e.checks_json, e.consent_id, \
                    e.footer_postal, e.footer_unsubscribe, e.one_click_header, e.stop_wording, \
                    d.channel, d.campaign_id, d.state \
             FROM compliance_evidence e JOIN deliveries d ON d.id = e.delivery_id \
             WHERE e.checked_at >= $1 ORDER BY e.checked_at, e.delivery_id",
        )
        .bind(ms(since))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                let regimes: String = r.try_get(4)?;
                let checks: String = r.try_get(5)?;
                let channel: String = r.try_get(11)?;
                Ok(EvidenceRow {
                    evidence: SendEvidence {
                        delivery_id: DeliveryId(r.try_get(0)?),
                        lead_id: LeadId(r.try_get(1)?),
                        checked_at: from_ms(r.try_get(2)?),
                        provider: r.try_get(3)?,
                        regimes: split_regimes(&regimes),
                        checks: serde_json::from_str(&checks)
                            .map_err(|e| corrupt_in("compliance_evidence", "checks_json", e))?,
                        consent_id: r.try_get(6)?,
                        footer_postal: r.try_get::<i32, _>(7)? != 0,
                        footer_unsubscribe: r.try_get::<i32, _>(8)? != 0,
                        one_click_header: r.try_get::<i32, _>(9)? != 0,
                        stop_wording: r.try_get::<i32, _>(10)? != 0,
                    },
                    channel: channel
                        .parse()
                        .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                    campaign_id: CampaignId(r.try_get(12)?),
                    state: r.try_get(13)?,
                })
            })
            .collect()
    }

    pub(super) async fn compliance_traces_impl(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<ComplianceTrace>> {
        let rows = sqlx::query(
            "SELECT lead_id, campaign_id, evaluated_at, code, gates_json FROM traces \
             WHERE evaluated_at >= $1 AND gates_json LIKE '%\"compliance\"%' AND gates_json LIKE '%\"passed\":false%' \
             ORDER BY evaluated_at, id",
        )
        .bind(ms(since))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(ComplianceTrace {
                    lead_id: LeadId(r.try_get(0)?),
                    campaign_id: CampaignId(r.try_get(1)?),
                    evaluated_at: from_ms(r.try_get(2)?),
                    code: r.try_get(3)?,
                    gates_json: r.try_get(4)?,
                })
            })
            .collect()
    }

    pub(super) async fn campaign_halts_impl(&self) -> StoreResult<Vec<CampaignHalt>> {
        let rows = sqlx::query(
            "SELECT campaign_id, halted, reason, changed_by, changed_at FROM campaign_halts ORDER BY campaign_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(CampaignHalt {
                    campaign_id: CampaignId(r.try_get(0)?),
                    halted: r.try_get::<i32, _>(1)? != 0,
                    reason: r.try_get(2)?,
                    changed_by: r.try_get(3)?,
                    changed_at: from_ms(r.try_get(4)?),
                })
            })
            .collect()
    }

    pub(super) async fn set_campaign_halt_impl(&self, h: &CampaignHalt) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO campaign_halts (campaign_id, halted, reason, changed_by, changed_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (campaign_id) DO UPDATE SET halted = excluded.halted, reason = excluded.reason, \
                 changed_by = excluded.changed_by, changed_at = excluded.changed_at \
             WHERE campaign_halts.halted <> excluded.halted",
        )
        .bind(h.campaign_id.0)
        .bind(i32::from(h.halted))
        .bind(&h.reason)
        .bind(&h.changed_by)
        .bind(ms(h.changed_at))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn pending_opt_out_writebacks_impl(
        &self,
        prefix: &str,
        limit: usize,
    ) -> StoreResult<Vec<(LeadId, String)>> {
        let rows = sqlx::query(
            "SELECT l.id, l.source_ref FROM leads l \
             WHERE l.source_ref IS NOT NULL AND starts_with(l.source, $1) \
             AND (l.status = 'unsubscribed' \
                  OR EXISTS (SELECT 1 FROM consents c WHERE c.lead_id = l.id AND c.basis = 'objection')) \
             AND NOT EXISTS (SELECT 1 FROM opt_out_writebacks w WHERE w.lead_id = l.id) \
             ORDER BY l.id LIMIT $2",
        )
        .bind(prefix)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| Ok((LeadId(r.try_get(0)?), r.try_get(1)?)))
            .collect()
    }

    pub(super) async fn mark_opt_outs_written_back_impl(
        &self,
        leads: &[LeadId],
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()> {
        let ids: Vec<i64> = leads.iter().map(|l| l.0).collect();
        sqlx::query(
            "INSERT INTO opt_out_writebacks (lead_id, written_at) SELECT unnest($1::bigint[]), $2 \
             ON CONFLICT (lead_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(ms(now))
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
