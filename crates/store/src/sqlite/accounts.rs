//! SQLite: which sending account each delivery went through (mailbox rotation).

use engager_domain::{Channel, DeliveryId, EnrollmentId};
use rusqlite::{params, Connection, OptionalExtension};

use crate::common::corrupt_in;
use crate::*;

/// The states of a delivery that count as "contacted through its account": sent, or begun
/// and possibly sent.
pub(super) const CONTACTED: &str = "('sent', 'sending', 'unknown')";

pub(super) fn set_delivery_account(
    c: &mut Connection,
    id: DeliveryId,
    token: i64,
    account: &str,
) -> StoreResult<bool> {
    let n = c
        .prepare_cached(
            "UPDATE deliveries SET account = ?1 WHERE id = ?2 AND fencing_token = ?3 \
             AND state IN ('claimed', 'sending')",
        )?
        .execute(params![account, id.0, token])?;
    Ok(n == 1)
}

pub(super) fn enrollment_account(
    c: &mut Connection,
    enrollment: EnrollmentId,
    channel: Channel,
) -> StoreResult<Option<String>> {
    let sql = format!(
        "SELECT account FROM deliveries WHERE enrollment_id = ?1 AND channel = ?2 \
         AND account IS NOT NULL AND state IN {CONTACTED} ORDER BY id LIMIT 1"
    );
    Ok(c.prepare_cached(&sql)?
        .query_row(params![enrollment.0, channel.as_str()], |r| r.get(0))
        .optional()?)
}

pub(super) fn sent_counts_by_account_since(
    c: &mut Connection,
    since: i64,
) -> StoreResult<Vec<AccountSentCount>> {
    let mut stmt = c.prepare_cached(
        "SELECT channel, account, COUNT(*) FROM deliveries WHERE state = 'sent' AND sent_at >= ?1 \
         GROUP BY channel, account ORDER BY channel, account",
    )?;
    let rows = stmt
        .query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(channel, account, n)| {
            Ok(AccountSentCount {
                channel: channel
                    .parse()
                    .map_err(|e| corrupt_in("deliveries", "channel", e))?,
                account,
                sent: n.max(0) as u64,
            })
        })
        .collect()
}
