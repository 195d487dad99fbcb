//! What several daemons sharing the database coordinate through it:
//! leases with fencing tokens, each daemon's share of the work by
//! partition, action claims, and wake-up notifications.
//!
//! Leases expire on the database's clock (`converge_now_ms()`); a lease is
//! live while that clock is before its `expires_at_ms`.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient};

use super::read::{held_send, journaled_event, pending_action, timer};
use super::{Session, sql_limit, sql_partitions, ttl_ms};
use crate::StoreError;
use crate::records::{HeldSendRecord, JournaledEvent, LeaseRecord, PendingAction, TimerRecord};

/// Grants, extends or refuses the lease in one statement. The token is
/// kept while the holder keeps the lease and is the sequence's next when
/// the lease changes hands. (The `VALUES` row takes a token even when the
/// holder only extends its lease: that burns a number, harmlessly, since
/// tokens only need to grow.)
pub(super) fn hold_lease<C: GenericClient>(
    s: &mut Session<'_, C>,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<i64>, StoreError> {
    let row = s.query_opt(
        "INSERT INTO leases AS l (name, holder, token, expires_at_ms)
         VALUES ($1, $2, nextval('lease_tokens'), converge_now_ms() + $3)
         ON CONFLICT (name) DO UPDATE
         SET holder = excluded.holder,
             token = CASE WHEN l.holder = excluded.holder THEN l.token ELSE excluded.token END,
             expires_at_ms = excluded.expires_at_ms
         WHERE l.holder = excluded.holder OR l.expires_at_ms <= converge_now_ms()
         RETURNING token",
        &[&name, &holder, &ttl_ms(ttl)],
    )?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// Deleted rather than expired: whoever takes it next, `holder` included,
/// starts a new tenure with a new token.
pub(super) fn release_lease<C: GenericClient>(
    s: &mut Session<'_, C>,
    name: &str,
    holder: &str,
) -> Result<(), StoreError> {
    s.execute(
        "DELETE FROM leases WHERE name = $1 AND holder = $2",
        &[&name, &holder],
    )?;
    Ok(())
}

pub(super) fn live_leases<C: GenericClient>(
    s: &mut Session<'_, C>,
    prefix: &str,
) -> Result<Vec<LeaseRecord>, StoreError> {
    s.rows(
        "SELECT name, holder, token, expires_at_ms FROM leases
         WHERE starts_with(name, $1) AND expires_at_ms > converge_now_ms()
         ORDER BY name",
        &[&prefix],
        |row| {
            Ok(LeaseRecord {
                name: row.try_get(0)?,
                holder: row.try_get(1)?,
                token: row.try_get(2)?,
                expires_at_ms: row.try_get(3)?,
            })
        },
    )
}

pub(super) fn unprocessed_events<C: GenericClient>(
    s: &mut Session<'_, C>,
    partitions: &[u32],
    limit: usize,
) -> Result<Vec<JournaledEvent>, StoreError> {
    s.rows(
        "SELECT seq, json, received_at_ms, id, type, source, subject, hook FROM events
         WHERE processed_at_ms IS NULL AND partition = ANY($1)
         ORDER BY seq LIMIT $2",
        &[&sql_partitions(partitions), &sql_limit(limit)],
        journaled_event,
    )
}

pub(super) fn due_timers_in<C: GenericClient>(
    s: &mut Session<'_, C>,
    partitions: &[u32],
    now_ms: i64,
    limit: usize,
) -> Result<Vec<TimerRecord>, StoreError> {
    let rows = s.query(
        concat!(
            "SELECT ",
            timer_columns!(),
            " FROM timers
             WHERE status = 'pending' AND partition = ANY($1) AND due_at_ms <= $2
             ORDER BY due_at_ms, id LIMIT $3"
        ),
        &[&sql_partitions(partitions), &now_ms, &sql_limit(limit)],
    )?;
    rows.iter().map(timer).collect()
}

pub(super) fn held_sends_in<C: GenericClient>(
    s: &mut Session<'_, C>,
    partitions: &[u32],
) -> Result<Vec<HeldSendRecord>, StoreError> {
    s.rows(
        concat!(
            "SELECT ",
            held_send_columns!(),
            " WHERE h.status = 'held' AND h.partition = ANY($1) ORDER BY h.id"
        ),
        &[&sql_partitions(partitions)],
        held_send,
    )
}

/// Leases up to `limit` due, unleased (or expired) pending actions to
/// `holder`, each with a token of its own. `SKIP LOCKED`: rows another
/// daemon is claiming right now are left to it rather than waited for.
pub(super) fn claim_actions<C: GenericClient>(
    s: &mut Session<'_, C>,
    holder: &str,
    ttl: Duration,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<PendingAction>, StoreError> {
    let mut claimed = s.rows(
        concat!(
            "UPDATE actions
             SET lease_holder = $1, lease_token = nextval('lease_tokens'),
                 lease_until_ms = converge_now_ms() + $2
             WHERE id IN (
                 SELECT id FROM actions
                 WHERE status = 'pending'
                   AND (next_attempt_at_ms IS NULL OR next_attempt_at_ms <= $3)
                   AND (lease_until_ms IS NULL OR lease_until_ms <= converge_now_ms())
                 ORDER BY id LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING ",
            pending_action_columns!()
        ),
        &[&holder, &ttl_ms(ttl), &now_ms, &sql_limit(limit)],
        pending_action,
    )?;
    claimed.sort_by_key(|action| action.id);
    Ok(claimed)
}

/// Extends the leases `holder` still has, with the same tokens; the others
/// (taken over, finished, dead-lettered) come back as lost.
pub(super) fn renew_action_leases<C: GenericClient>(
    s: &mut Session<'_, C>,
    holder: &str,
    ttl: Duration,
    actions: &[(i64, i64)],
) -> Result<Vec<i64>, StoreError> {
    if actions.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, tokens): (Vec<i64>, Vec<i64>) = actions.iter().copied().unzip();
    let renewed = s.rows(
        "UPDATE actions a SET lease_until_ms = converge_now_ms() + $2
         FROM unnest($3::bigint[], $4::bigint[]) AS r (id, token)
         WHERE a.id = r.id AND a.lease_token = r.token AND a.lease_holder = $1
           AND a.status = 'pending'
         RETURNING a.id",
        &[&holder, &ttl_ms(ttl), &ids, &tokens],
        |row| Ok(row.try_get::<_, i64>(0)?),
    )?;
    Ok(ids.into_iter().filter(|id| !renewed.contains(id)).collect())
}

/// `LISTEN` takes an identifier, not a parameter: the channel is quoted,
/// so it is matched exactly as `pg_notify` names it.
pub(super) fn listen_on(client: &mut Client, channel: &str) -> Result<(), StoreError> {
    let quoted = format!("\"{}\"", channel.replace('"', "\"\""));
    client.batch_execute(&format!("LISTEN {quoted}"))?;
    Ok(())
}

/// Waits up to `timeout` for the first notification, then takes every
/// other one already arrived without waiting more.
pub(super) fn wait_for_notifications(
    s: &mut Session<'_, Client>,
    timeout: Duration,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut notifications = s.client.notifications();
    let mut arrived = Vec::new();
    let first = notifications.timeout_iter(timeout).next()?;
    if let Some(first) = first {
        arrived.push(first);
        let mut queued = notifications.iter();
        while let Some(next) = queued.next()? {
            arrived.push(next);
        }
    }
    Ok(arrived
        .into_iter()
        .map(|n| (n.channel().to_string(), n.payload().to_string()))
        .collect())
}
