//! SQLite: the deliverability monitor per sending account and domain.

use rusqlite::{params, Connection};

use crate::common::{corrupt_in, from_ms, ms};
use crate::*;

/// What each account sent at or after `?1` and what those sends drew; the same counting as
/// the per-channel `sending_counts`.
const COUNTS_BY_ACCOUNT: &str = "\
SELECT d.channel, d.account, COUNT(*),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'hard_bounce')), 0),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'complained')), 0),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind = 'unsubscribed')), 0),
       COALESCE(SUM(EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id AND e.kind IN ('replied', 'negative_reply'))), 0)
  FROM deliveries d
 WHERE d.state = 'sent' AND d.sent_at >= ?1
 GROUP BY d.channel, d.account
 ORDER BY d.channel, d.account";

pub(super) fn sending_counts_by_account(
    c: &mut Connection,
    since: i64,
) -> StoreResult<Vec<AccountSendingCounts>> {
    let mut stmt = c.prepare_cached(COUNTS_BY_ACCOUNT)?;
    let mut rows = stmt.query([since])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
        let channel: String = r.get(0)?;
        out.push(AccountSendingCounts {
            channel: channel
                .parse()
                .map_err(|e| corrupt_in("deliveries", "channel", e))?,
            account: r.get(1)?,
            counts: engager_domain::deliverability::SendingCounts {
                sent: n(2)?,
                hard_bounces: n(3)?,
                complaints: n(4)?,
                unsubscribes: n(5)?,
                replies: n(6)?,
            },
        });
    }
    Ok(out)
}

pub(super) fn account_halts(c: &mut Connection) -> StoreResult<Vec<AccountHalt>> {
    let mut stmt = c.prepare_cached(
        "SELECT key, halted, reason, changed_by, changed_at FROM account_halts ORDER BY key",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(AccountHalt {
            key: r.get(0)?,
            halted: r.get::<_, i64>(1)? != 0,
            reason: r.get(2)?,
            changed_by: r.get(3)?,
            changed_at: from_ms(r.get(4)?),
        });
    }
    Ok(out)
}

pub(super) fn set_account_halt(c: &mut Connection, halt: &AccountHalt) -> StoreResult<bool> {
    // Only a change of state is written, so the first halt's reason and time are kept while
    // the monitor keeps finding the same breach.
    let changed = c.execute(
        "INSERT INTO account_halts (key, halted, reason, changed_by, changed_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (key) DO UPDATE SET halted = excluded.halted, reason = excluded.reason, \
             changed_by = excluded.changed_by, changed_at = excluded.changed_at \
         WHERE account_halts.halted <> excluded.halted",
        params![
            halt.key,
            i64::from(halt.halted),
            halt.reason,
            halt.changed_by,
            ms(halt.changed_at)
        ],
    )?;
    Ok(changed > 0)
}
