//! The outbox's part of a write: the outcomes of attempts, which a stale
//! lease holder cannot record, and people's retries and drops of dead
//! letters.

use postgres::GenericClient;

use super::{Session, sql_attempts};
use crate::StoreError;
use crate::records::{
    ActionOutcome, DeadLetterChange, DeadLetterOp, DeadLetterOutcome, OutcomeKind, WriteResult,
};

/// Counter shards: enough that daemons rarely share one.
const COUNTER_SHARDS: i32 = 16;

/// Records each outcome whose action is still pending (and, for a leased
/// attempt, still under its token); counts the done and dead-lettered.
pub(super) fn record_outcomes<C: GenericClient>(
    s: &mut Session<'_, C>,
    outcomes: &[ActionOutcome],
    result: &mut WriteResult,
) -> Result<(), StoreError> {
    let (mut done, mut dead_lettered) = (0_i64, 0_i64);
    for outcome in outcomes {
        let detail = Some(outcome.detail.as_str()).filter(|d| !d.is_empty());
        let attempts = sql_attempts(outcome.attempts);
        // $1 id, $2 attempts, $3 detail, $4 finished at, $5 lease token
        // (NULL: not leased); $6 what the kind adds. Leaving `pending` ends
        // the lease; a retry keeps it with its holder.
        let recorded = match &outcome.result {
            OutcomeKind::Done { external_id } => s.execute(
                "UPDATE actions
                 SET status = 'done', attempts = $2, detail = $3, finished_at_ms = $4,
                     external_id = $6, next_attempt_at_ms = NULL,
                     lease_holder = NULL, lease_token = NULL, lease_until_ms = NULL
                 WHERE id = $1 AND status = 'pending'
                   AND ($5::bigint IS NULL OR lease_token = $5)",
                &[
                    &outcome.action_id,
                    &attempts,
                    &detail,
                    &outcome.finished_at_ms,
                    &outcome.lease_token,
                    external_id,
                ],
            )?,
            OutcomeKind::DeadLetter => s.execute(
                "WITH finished AS (
                     UPDATE actions
                     SET status = 'dead_letter', attempts = $2, detail = $3,
                         finished_at_ms = $4, external_id = NULL, next_attempt_at_ms = NULL,
                         lease_holder = NULL, lease_token = NULL, lease_until_ms = NULL
                     WHERE id = $1 AND status = 'pending'
                       AND ($5::bigint IS NULL OR lease_token = $5)
                     RETURNING id)
                 INSERT INTO action_history (action_id, at_ms, kind, attempts, detail)
                 SELECT id, $4, 'dead_lettered', $2, $3 FROM finished",
                &[
                    &outcome.action_id,
                    &attempts,
                    &detail,
                    &outcome.finished_at_ms,
                    &outcome.lease_token,
                ],
            )?,
            OutcomeKind::Retry { next_attempt_at_ms } => s.execute(
                "WITH failed AS (
                     UPDATE actions SET attempts = $2, detail = $3, next_attempt_at_ms = $6
                     WHERE id = $1 AND status = 'pending'
                       AND ($5::bigint IS NULL OR lease_token = $5)
                     RETURNING id)
                 INSERT INTO action_history (action_id, at_ms, kind, attempts, detail)
                 SELECT id, $4, 'attempt_failed', $2, $3 FROM failed",
                &[
                    &outcome.action_id,
                    &attempts,
                    &detail,
                    &outcome.finished_at_ms,
                    &outcome.lease_token,
                    next_attempt_at_ms,
                ],
            )?,
        } == 1;
        if recorded {
            match outcome.result {
                OutcomeKind::Done { .. } => done += 1,
                OutcomeKind::DeadLetter => dead_lettered += 1,
                OutcomeKind::Retry { .. } => {}
            }
        } else {
            not_recorded(s, outcome, result)?;
        }
    }
    if done > 0 || dead_lettered > 0 {
        s.execute(
            "INSERT INTO counters (name, shard, value)
             SELECT c.name, pg_backend_pid() % $3, c.value
             FROM (VALUES ('actions_done', $1::bigint), ('actions_dead_lettered', $2::bigint))
                  AS c (name, value)
             WHERE c.value > 0
             ON CONFLICT (name, shard) DO UPDATE SET value = counters.value + excluded.value",
            &[&done, &dead_lettered, &COUNTER_SHARDS],
        )?;
    }
    result.dead_lettered = usize::try_from(dead_lettered).unwrap_or(0);
    Ok(())
}

/// Why an outcome was not recorded: no such action (an error), its lease
/// passed to another holder (reported in `outcomes_fenced`), or it had
/// already finished (a late duplicate, ignored).
fn not_recorded<C: GenericClient>(
    s: &mut Session<'_, C>,
    outcome: &ActionOutcome,
    result: &mut WriteResult,
) -> Result<(), StoreError> {
    let id = outcome.action_id;
    let Some(row) = s.query_opt("SELECT lease_token FROM actions WHERE id = $1", &[&id])? else {
        return Err(StoreError::UnknownAction { id });
    };
    let token: Option<i64> = row.try_get(0)?;
    if outcome.lease_token.is_some() && token != outcome.lease_token {
        tracing::warn!(
            action_id = id,
            "ignored the outcome of an attempt whose lease passed to another daemon"
        );
        result.outcomes_fenced.push(id);
    } else {
        tracing::warn!(
            action_id = id,
            "ignored an outcome for an action that had already finished"
        );
    }
    Ok(())
}

fn add_history<C: GenericClient>(
    s: &mut Session<'_, C>,
    change: &DeadLetterChange,
    kind: &str,
    attempts: i64,
) -> Result<(), StoreError> {
    s.execute(
        "INSERT INTO action_history (action_id, at_ms, kind, attempts, \"by\", reason)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &change.action_id,
            &change.at_ms,
            &kind,
            &attempts,
            &change.by,
            &change.reason,
        ],
    )?;
    Ok(())
}

/// Retries or drops a dead letter, only while it is one. The row is locked
/// first, so two people acting on it from two daemons act once.
pub(super) fn change_dead_letter<C: GenericClient>(
    s: &mut Session<'_, C>,
    change: &DeadLetterChange,
) -> Result<DeadLetterOutcome, StoreError> {
    let found = s.query_opt(
        "SELECT status, attempts FROM actions WHERE id = $1 FOR UPDATE",
        &[&change.action_id],
    )?;
    let Some(row) = found else {
        return Ok(DeadLetterOutcome::Unknown);
    };
    let status: String = row.try_get(0)?;
    let attempts: i64 = row.try_get(1)?;
    if status != "dead_letter" {
        return Ok(DeadLetterOutcome::NotDeadLetter { status });
    }
    match change.op {
        DeadLetterOp::Retry => {
            // Its lease is cleared, so any daemon's claim picks it up.
            let row = s.query_one(
                concat!(
                    "UPDATE actions
                     SET status = 'pending', attempts = 0, next_attempt_at_ms = NULL,
                         finished_at_ms = NULL,
                         lease_holder = NULL, lease_token = NULL, lease_until_ms = NULL
                     WHERE id = $1
                     RETURNING ",
                    pending_action_columns!()
                ),
                &[&change.action_id],
            )?;
            add_history(s, change, "retried", attempts)?;
            Ok(DeadLetterOutcome::Retried(super::read::pending_action(
                &row,
            )?))
        }
        DeadLetterOp::Drop => {
            s.execute(
                "UPDATE actions SET status = 'dropped', finished_at_ms = $1 WHERE id = $2",
                &[&change.at_ms, &change.action_id],
            )?;
            add_history(s, change, "dropped", attempts)?;
            Ok(DeadLetterOutcome::Dropped)
        }
    }
}
