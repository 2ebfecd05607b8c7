//! PostgreSQL: which sending account each delivery went through (mailbox rotation).

use chrono::{DateTime, Utc};
use engager_domain::{Channel, DeliveryId, EnrollmentId};
use sqlx::Row;

use super::PgStore;
use crate::common::{corrupt_in, ms};
use crate::*;

impl PgStore {
    pub(super) async fn set_delivery_account_impl(
        &self,
        id: DeliveryId,
        token: i64,
        account: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE deliveries SET account = $1 WHERE id = $2 AND fencing_token = $3 \
             AND state IN ('claimed', 'sending')",
        )
        .bind(account)
        .bind(id.0)
        .bind(token)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn enrollment_account_impl(
        &self,
        enrollment: EnrollmentId,
        channel: Channel,
    ) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT account FROM deliveries WHERE enrollment_id = $1 AND channel = $2 \
             AND account IS NOT NULL AND state IN ('sent', 'sending', 'unknown') \
             ORDER BY id LIMIT 1",
        )
        .bind(enrollment.0)
        .bind(channel.as_str())
        .fetch_optional(self.pool())
        .await?)
    }

    pub(super) async fn sent_counts_by_account_since_impl(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<AccountSentCount>> {
        let rows = sqlx::query(
            "SELECT channel, account, COUNT(*) FROM deliveries WHERE state = 'sent' AND sent_at >= $1 \
             GROUP BY channel, account ORDER BY channel COLLATE \"C\", account COLLATE \"C\"",
        )
        .bind(ms(since))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let channel: String = r.try_get(0)?;
                let n: i64 = r.try_get(2)?;
                Ok(AccountSentCount {
                    channel: channel
                        .parse()
                        .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                    account: r.try_get(1)?,
                    sent: n.max(0) as u64,
                })
            })
            .collect()
    }
}
