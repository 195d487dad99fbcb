//! The outbox's part of a write: the outcomes of attempts, which a stale
//! lease holder cannot record, and people's retries and drops of dead
//! letters. Outcomes are many (one per action run) and go in one statement
//! per batch; people's decisions are few and go one by one.

use std::collections::{HashMap, HashSet};

use postgres::GenericClient;

use super::{Session, sql_attempts};
use crate::StoreError;
use crate::records::{
    ActionHistoryKind, ActionOutcome, ActionStatus, DeadLetterChange, DeadLetterOp,
    DeadLetterOutcome, OutcomeKind, WriteResult,
};

/// Counter shards: enough that daemons rarely share one.
const COUNTER_SHARDS: i32 = 16;

/// Records each outcome whose action is still pending (and, for a leased
/// attempt, still under its token), with the history rows of failures and
/// the done and dead-lettered counters, in one statement. An action named
/// by several outcomes of the batch (a failed attempt, then its success)
/// takes them in turn: the outcomes go in rounds, the first of each action
/// in the first round, so each round names an action at most once.
pub(super) fn record_outcomes<C: GenericClient>(
    s: &mut Session<'_, C>,
    outcomes: &[ActionOutcome],
    result: &mut WriteResult,
) -> Result<(), StoreError> {
    // Each outcome with its place in the batch.
    let mut rounds: Vec<Vec<(usize, &ActionOutcome)>> = Vec::new();
    let mut mentions: HashMap<i64, usize> = HashMap::new();
    for (place, outcome) in outcomes.iter().enumerate() {
        let mention = mentions.entry(outcome.action_id).or_insert(0);
        if rounds.len() == *mention {
            rounds.push(Vec::new());
        }
        rounds[*mention].push((place, outcome));
        *mention += 1;
    }
    let mut fenced = Vec::new();
    for round in &rounds {
        let in_round: Vec<&ActionOutcome> = round.iter().map(|(_, o)| *o).collect();
        let recorded = record_round(s, &in_round)?;
        let missed: Vec<(usize, &ActionOutcome)> = round
            .iter()
            .zip(&recorded)
            .filter(|(_, recorded)| !**recorded)
            .map(|(outcome, _)| *outcome)
            .collect();
        fenced.extend(not_recorded(s, &missed)?);
        result.dead_lettered += in_round
            .iter()
            .zip(&recorded)
            .filter(|(outcome, recorded)| {
                **recorded && matches!(outcome.result, OutcomeKind::DeadLetter)
            })
            .count();
    }
    // In the order of the outcomes, as if recorded one by one.
    fenced.sort_by_key(|&(place, _)| place);
    result
        .outcomes_fenced
        .extend(fenced.into_iter().map(|(_, id)| id));
    Ok(())
}

/// One round of [`record_outcomes`]: whether each outcome was recorded.
/// Leaving `pending` ends the lease; a retry keeps it with its holder.
fn record_round<C: GenericClient>(
    s: &mut Session<'_, C>,
    round: &[&ActionOutcome],
) -> Result<Vec<bool>, StoreError> {
    let ids: Vec<i64> = round.iter().map(|o| o.action_id).collect();
    let kinds: Vec<&str> = round
        .iter()
        .map(|o| match o.result {
            OutcomeKind::Done { .. } => ActionStatus::Done.name(),
            OutcomeKind::DeadLetter => ActionStatus::DeadLetter.name(),
            // Not a status: the query keeps the action's own for it.
            OutcomeKind::Retry { .. } => "retry",
        })
        .collect();
    let attempts: Vec<i64> = round.iter().map(|o| sql_attempts(o.attempts)).collect();
    let details: Vec<Option<&str>> = round
        .iter()
        .map(|o| Some(o.detail.as_str()).filter(|d| !d.is_empty()))
        .collect();
    let at: Vec<i64> = round.iter().map(|o| o.finished_at_ms).collect();
    let tokens: Vec<Option<i64>> = round.iter().map(|o| o.lease_token).collect();
    let external_ids: Vec<Option<&str>> = round
        .iter()
        .map(|o| match &o.result {
            OutcomeKind::Done { external_id } => external_id.as_deref(),
            _ => None,
        })
        .collect();
    let next_attempts: Vec<Option<i64>> = round
        .iter()
        .map(|o| match o.result {
            OutcomeKind::Retry { next_attempt_at_ms } => Some(next_attempt_at_ms),
            _ => None,
        })
        .collect();
    let recorded: HashSet<i64> = s
        .rows(
            "WITH o AS (
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                                      $5::bigint[], $6::bigint[], $7::text[], $8::bigint[])
                     WITH ORDINALITY AS o (id, kind, attempts, detail, at_ms, token,
                                           external_id, next_attempt_at_ms, n)
             ), recorded AS (
                 UPDATE actions a
                 SET status = CASE WHEN o.kind = 'retry' THEN a.status ELSE o.kind END,
                     attempts = o.attempts, detail = o.detail,
                     next_attempt_at_ms = o.next_attempt_at_ms,
                     finished_at_ms = CASE WHEN o.kind = 'retry' THEN a.finished_at_ms
                                           ELSE o.at_ms END,
                     external_id = CASE WHEN o.kind = 'retry' THEN a.external_id
                                        ELSE o.external_id END,
                     lease_holder = CASE WHEN o.kind = 'retry' THEN a.lease_holder END,
                     lease_token = CASE WHEN o.kind = 'retry' THEN a.lease_token END,
                     lease_until_ms = CASE WHEN o.kind = 'retry' THEN a.lease_until_ms END
                 FROM o
                 WHERE a.id = o.id AND a.status = 'pending'
                   AND (o.token IS NULL OR a.lease_token = o.token)
                 RETURNING o.n, o.kind, o.id
             ), finished_payloads AS (
                 -- Done, it never runs again: its payload goes.
                 DELETE FROM action_payloads p USING recorded r
                 WHERE p.action_id = r.id AND r.kind = 'done'
             ), history AS (
                 INSERT INTO action_history (action_id, at_ms, kind, attempts, detail)
                 SELECT o.id, o.at_ms,
                        CASE o.kind WHEN 'retry' THEN 'attempt_failed' ELSE 'dead_lettered' END,
                        o.attempts, o.detail
                 FROM o JOIN recorded r USING (n)
                 WHERE o.kind <> 'done'
                 ORDER BY o.n
             ), counted AS (
                 INSERT INTO counters (name, shard, value)
                 SELECT c.name, pg_backend_pid() % $9, c.value
                 FROM (SELECT 'actions_done' AS name,
                              count(*) FILTER (WHERE kind = 'done') AS value
                       FROM recorded
                       UNION ALL
                       SELECT 'actions_dead_lettered',
                              count(*) FILTER (WHERE kind = 'dead_letter')
                       FROM recorded) c
                 WHERE c.value > 0
                 ON CONFLICT (name, shard) DO UPDATE SET value = counters.value + excluded.value
             )
             SELECT n FROM recorded",
            &[
                &ids,
                &kinds,
                &attempts,
                &details,
                &at,
                &tokens,
                &external_ids,
                &next_attempts,
                &COUNTER_SHARDS,
            ],
            |row| Ok(row.try_get(0)?),
        )?
        .into_iter()
        .collect();
    Ok((1..=round.len())
        .map(|n| recorded.contains(&i64::try_from(n).unwrap_or(i64::MAX)))
        .collect())
}

/// Why these outcomes were not recorded: no such action (an error), its
/// lease passed to another holder (returned, with the outcome's place in
/// the batch, for `outcomes_fenced`), or it had already finished (a late
/// duplicate, ignored). One statement, when any.
fn not_recorded<C: GenericClient>(
    s: &mut Session<'_, C>,
    missed: &[(usize, &ActionOutcome)],
) -> Result<Vec<(usize, i64)>, StoreError> {
    if missed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = missed.iter().map(|(_, o)| o.action_id).collect();
    let tokens: HashMap<i64, Option<i64>> = s
        .rows(
            "SELECT id, lease_token FROM actions WHERE id = ANY($1)",
            &[&ids],
            |row| Ok((row.try_get(0)?, row.try_get(1)?)),
        )?
        .into_iter()
        .collect();
    let mut fenced = Vec::new();
    for &(place, outcome) in missed {
        let id = outcome.action_id;
        let Some(token) = tokens.get(&id) else {
            return Err(StoreError::UnknownAction { id });
        };
        if outcome.lease_token.is_some() && *token != outcome.lease_token {
            tracing::warn!(
                action_id = id,
                "ignored the outcome of an attempt whose lease passed to another daemon"
            );
            fenced.push((place, id));
        } else {
            tracing::warn!(
                action_id = id,
                "ignored an outcome for an action that had already finished"
            );
        }
    }
    Ok(fenced)
}

fn add_history<C: GenericClient>(
    s: &mut Session<'_, C>,
    change: &DeadLetterChange,
    kind: ActionHistoryKind,
    attempts: i64,
) -> Result<(), StoreError> {
    s.execute(
        "INSERT INTO action_history (action_id, at_ms, kind, attempts, \"by\", reason)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &change.action_id,
            &change.at_ms,
            &kind.name(),
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
    let status: ActionStatus = super::read::stored(&row, 0, "actions.status")?;
    let attempts: i64 = row.try_get(1)?;
    if status != ActionStatus::DeadLetter {
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
            add_history(s, change, ActionHistoryKind::Retried, attempts)?;
            Ok(DeadLetterOutcome::Retried(super::read::pending_action(
                &row,
            )?))
        }
        DeadLetterOp::Drop => {
            s.execute(
                "UPDATE actions SET status = 'dropped', finished_at_ms = $1 WHERE id = $2",
                &[&change.at_ms, &change.action_id],
            )?;
            s.execute(
                "DELETE FROM action_payloads WHERE action_id = $1",
                &[&change.action_id],
            )?;
            add_history(s, change, ActionHistoryKind::Dropped, attempts)?;
            Ok(DeadLetterOutcome::Dropped)
        }
    }
}
