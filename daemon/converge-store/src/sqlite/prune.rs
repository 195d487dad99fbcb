//! Retention (`storage.retention`): the oldest processed events nothing
//! needs any more, removed with everything recorded about them.

use rusqlite::{Connection, params};

use crate::StoreError;
use crate::records::{PruneCandidate, PrunePage};

/// The page of the journal after `after_seq` that retention may look at:
/// processed events received before `before_ms`, in `seq` order, those
/// still needed left out. See [`PrunePage`].
pub(super) fn prunable(
    conn: &Connection,
    after_seq: i64,
    before_ms: i64,
    limit: usize,
) -> Result<PrunePage, StoreError> {
    let sql = format!(
        "SELECT e.seq, e.source, e.id, e.hook, e.received_at_ms,
                e.processed_at_ms IS NOT NULL, {NEEDED}
         FROM events e WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params![after_seq, limit as i64], |row| {
        Ok((
            PruneCandidate {
                seq: row.get(0)?,
                source: row.get(1)?,
                id: row.get(2)?,
                hook: Some(row.get::<_, String>(3)?).filter(|h| !h.is_empty()),
                received_at_ms: row.get(4)?,
            },
            row.get::<_, bool>(5)?,
            row.get::<_, bool>(6)?,
        ))
    })?;
    let mut rows_read = Vec::with_capacity(limit);
    for row in rows {
        rows_read.push(row?);
    }
    Ok(PrunePage::from_rows(rows_read, after_seq, before_ms, limit))
}

/// Why an event is kept whatever its age (`e` is the event): an action of
/// it that is not finished (pending, or a dead letter waiting for a
/// person), a timer it created that is still pending, a send it asked for
/// that a gate still holds. The same condition serves both backends.
const NEEDED: &str = "(EXISTS (SELECT 1 FROM decisions d JOIN actions a ON a.decision_id = d.id
                 WHERE d.event_seq = e.seq AND a.status IN ('pending', 'dead_letter'))
     OR EXISTS (SELECT 1 FROM timers t WHERE t.created_by_seq = e.seq AND t.status = 'pending')
     OR EXISTS (SELECT 1 FROM held_sends h WHERE h.event_seq = e.seq AND h.status = 'held'))";

/// Removes each event of `seqs` that is processed and not needed (checked
/// again here: the page was read outside this transaction), with its
/// decisions, actions and their history, rule failures and notes, gate
/// overrides, released held sends and closed timers. Metric samples and
/// entity states stay. Returns how many events went. Runs inside the
/// write's transaction, on its connection.
pub(super) fn prune(tx: &Connection, seqs: &[i64]) -> Result<usize, StoreError> {
    let check = format!(
        "SELECT e.processed_at_ms IS NOT NULL AND NOT {NEEDED} FROM events e WHERE e.seq = ?1"
    );
    let mut pruned = 0;
    for &seq in seqs {
        let removable: Option<bool> = tx
            .prepare_cached(&check)?
            .query_row([seq], |row| row.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        if removable != Some(true) {
            continue;
        }
        for statement in REMOVE {
            tx.prepare_cached(statement)?.execute([seq])?;
        }
        pruned += 1;
    }
    Ok(pruned)
}

/// What removing event `?1` removes, in an order the foreign keys allow.
const REMOVE: &[&str] = &[
    // None is left once an action is done or dropped; this is for the old rows.
    "DELETE FROM action_payloads WHERE action_id IN
         (SELECT a.id FROM actions a JOIN decisions d ON a.decision_id = d.id WHERE d.event_seq = ?1)",
    "DELETE FROM action_history WHERE action_id IN
         (SELECT a.id FROM actions a JOIN decisions d ON a.decision_id = d.id WHERE d.event_seq = ?1)",
    "DELETE FROM actions WHERE decision_id IN (SELECT id FROM decisions WHERE event_seq = ?1)",
    "DELETE FROM decisions WHERE event_seq = ?1",
    "DELETE FROM rule_failures WHERE event_seq = ?1",
    "DELETE FROM rule_notes WHERE event_seq = ?1",
    "DELETE FROM gate_overrides WHERE event_seq = ?1",
    "UPDATE held_sends SET released_seq = NULL WHERE released_seq = ?1",
    "DELETE FROM held_sends WHERE event_seq = ?1",
    "UPDATE timers SET fired_seq = NULL WHERE fired_seq = ?1",
    "DELETE FROM timers WHERE created_by_seq = ?1",
    "DELETE FROM events WHERE seq = ?1",
];
