//! PostgreSQL: the deliverability monitor per sending account and domain (the same rows as
//! SQLite's).

use sqlx::Row;

use super::PgStore;
use crate::common::{corrupt_in, from_ms, ms};
use crate::*;

impl PgStore {
    pub(super) async fn sending_counts_by_account_impl(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<AccountSendingCounts>> {
        let rows = sqlx::query(
            "SELECT d.channel, d.account, COUNT(*),
                    COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'hard_bounce')),
                    COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'complained')),
                    COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'unsubscribed')),
                    COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind IN ('replied', 'negative_reply')))
               FROM deliveries d
              WHERE d.state = 'sent' AND d.sent_at >= $1
              GROUP BY d.channel, d.account
              ORDER BY d.channel, d.account",
        )
        .bind(ms(since))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                let n =
                    |i: usize| -> StoreResult<u64> { Ok(r.try_get::<i64, _>(i)?.max(0) as u64) };
                let channel: String = r.try_get(0)?;
                Ok(AccountSendingCounts {
                    channel: channel
                        .parse()
                        .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                    account: r.try_get(1)?,
                    counts: engager_domain::deliverability::SendingCounts {
                        sent: n(2)?,
                        hard_bounces: n(3)?,
                        complaints: n(4)?,
                        unsubscribes: n(5)?,
                        replies: n(6)?,
                    },
                })
            })
            .collect()
    }

    pub(super) async fn account_halts_impl(&self) -> StoreResult<Vec<AccountHalt>> {
        let rows = sqlx::query(
            "SELECT key, halted, reason, changed_by, changed_at FROM account_halts ORDER BY key",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(AccountHalt {
                    key: r.try_get(0)?,
                    halted: r.try_get::<i32, _>(1)? != 0,
                    reason: r.try_get(2)?,
                    changed_by: r.try_get(3)?,
                    changed_at: from_ms(r.try_get(4)?),
                })
            })
            .collect()
    }

    pub(super) async fn set_account_halt_impl(&self, halt: &AccountHalt) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO account_halts (key, halted, reason, changed_by, changed_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO UPDATE SET halted = excluded.halted, reason = excluded.reason, \
                 changed_by = excluded.changed_by, changed_at = excluded.changed_at \
             WHERE account_halts.halted <> excluded.halted",
        )
        .bind(&halt.key)
        .bind(i32::from(halt.halted))
        .bind(&halt.reason)
        .bind(&halt.changed_by)
        .bind(ms(halt.changed_at))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
