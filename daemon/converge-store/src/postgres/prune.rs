//! Retention on PostgreSQL: the same pages and removals as SQLite's
//! (`sqlite/prune.rs`, which documents them), in PostgreSQL's dialect.

use postgres::GenericClient;

use super::{Session, sql_limit};
use crate::StoreError;
use crate::records::{PruneCandidate, PrunePage};

pub(super) fn prunable<C: GenericClient>(
    s: &mut Session<'_, C>,
    after_seq: i64,
    before_ms: i64,
    limit: usize,
) -> Result<PrunePage, StoreError> {
    let rows = s.rows(
        "SELECT e.seq, e.source, e.id, e.hook, e.received_at_ms,
                e.processed_at_ms IS NOT NULL,
                (EXISTS (SELECT 1 FROM decisions d JOIN actions a ON a.decision_id = d.id
                         WHERE d.event_seq = e.seq AND a.status IN ('pending', 'dead_letter'))
                 OR EXISTS (SELECT 1 FROM timers t WHERE t.created_by_seq = e.seq AND t.status = 'pending')
                 OR EXISTS (SELECT 1 FROM held_sends h WHERE h.event_seq = e.seq AND h.status = 'held'))
         FROM events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2",
        &[&after_seq, &sql_limit(limit)],
        |row| {
            Ok((
                PruneCandidate {
                    seq: row.try_get(0)?,
                    source: row.try_get(1)?,
                    id: row.try_get(2)?,
                    hook: Some(row.try_get::<_, String>(3)?).filter(|h| !h.is_empty()),
                    received_at_ms: row.try_get(4)?,
                },
                row.try_get(5)?,
                row.try_get(6)?,
            ))
        },
    )?;
    Ok(PrunePage::from_rows(rows, after_seq, before_ms, limit))
}

pub(super) fn prune<C: GenericClient>(
    s: &mut Session<'_, C>,
    seqs: &[i64],
) -> Result<usize, StoreError> {
    let mut pruned = 0;
    for &seq in seqs {
        // Locked, so a daemon recording an outcome or a release for it
        // waits, and the check below sees what it committed.
        let removable: Option<bool> = s
            .query_opt(
                "SELECT e.processed_at_ms IS NOT NULL
                    AND NOT (EXISTS (SELECT 1 FROM decisions d JOIN actions a ON a.decision_id = d.id
                                     WHERE d.event_seq = e.seq AND a.status IN ('pending', 'dead_letter'))
                             OR EXISTS (SELECT 1 FROM timers t WHERE t.created_by_seq = e.seq AND t.status = 'pending')
                             OR EXISTS (SELECT 1 FROM held_sends h WHERE h.event_seq = e.seq AND h.status = 'held'))
                 FROM events e WHERE e.seq = $1 FOR UPDATE",
                &[&seq],
            )?
            .map(|row| row.try_get(0))
            .transpose()?;
        if removable != Some(true) {
            continue;
        }
        for statement in REMOVE {
            s.execute(statement, &[&seq])?;
        }
        pruned += 1;
    }
    Ok(pruned)
}

/// As `sqlite::prune::REMOVE`.
const REMOVE: &[&str] = &[
    "DELETE FROM action_payloads WHERE action_id IN
         (SELECT a.id FROM actions a JOIN decisions d ON a.decision_id = d.id WHERE d.event_seq = $1)",
    "DELETE FROM action_history WHERE action_id IN
         (SELECT a.id FROM actions a JOIN decisions d ON a.decision_id = d.id WHERE d.event_seq = $1)",
    "DELETE FROM actions WHERE decision_id IN (SELECT id FROM decisions WHERE event_seq = $1)",
    "DELETE FROM decisions WHERE event_seq = $1",
    "DELETE FROM rule_failures WHERE event_seq = $1",
    "DELETE FROM rule_notes WHERE event_seq = $1",
    "DELETE FROM gate_overrides WHERE event_seq = $1",
    "UPDATE held_sends SET released_seq = NULL WHERE released_seq = $1",
    "DELETE FROM held_sends WHERE event_seq = $1",
    "UPDATE timers SET fired_seq = NULL WHERE fired_seq = $1",
    "DELETE FROM timers WHERE created_by_seq = $1",
    "DELETE FROM events WHERE seq = $1",
];
