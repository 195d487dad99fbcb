//! [`Store::write`]: one batch, one transaction, one fsync.

use rusqlite::{Transaction, TransactionBehavior, params};

use crate::records::{
    ActionOutcome, Appended, NewEvent, OutcomeKind, PendingAction, ProcessedEvent, WriteBatch,
    WriteResult,
};
use crate::schema::{ACTIONS_DONE, ACTIONS_FAILED, PROCESSED_CURSOR};
use crate::{Store, StoreError};

impl Store {
    /// Commits everything in `batch` in one transaction (`BEGIN IMMEDIATE` ..
    /// `COMMIT`): appends, then processed events, then action outcomes.
    ///
    /// All or nothing: on any error the whole batch is rolled back, appends
    /// included, and the store is as it was.
    pub fn write(&mut self, batch: &WriteBatch) -> Result<WriteResult, StoreError> {
        if batch.is_empty() {
            return Ok(WriteResult::default());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut result = WriteResult {
            appended: Vec::with_capacity(batch.appends.len()),
            actions: Vec::new(),
        };
        for event in &batch.appends {
            result.appended.push(append(&tx, event)?);
        }
        let mut cursor = None;
        for processed in &batch.processed {
            record_processed(&tx, processed, &mut result.actions)?;
            cursor = cursor.max(Some(processed.seq));
        }
        if let Some(seq) = cursor {
            tx.prepare_cached("UPDATE meta SET value = max(value, ?1) WHERE key = ?2")?
                .execute(params![seq, PROCESSED_CURSOR])?;
        }
        record_outcomes(&tx, &batch.outcomes)?;
        tx.commit()?;
        Ok(result)
    }
}

/// `changes()` and `last_insert_rowid()` rather than `RETURNING seq`: RETURNING
/// builds a temporary table per row, which measured ~25% slower on the journal.
fn append(tx: &Transaction<'_>, event: &NewEvent) -> Result<Appended, StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO events (source, id, type, subject, json, received_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id, source) DO NOTHING",
        )?
        .execute(params![
            event.source,
            event.id,
            event.ty,
            event.subject,
            event.json,
            event.received_at_ms
        ])?;
    if inserted == 1 {
        return Ok(Appended::New {
            seq: tx.last_insert_rowid(),
        });
    }
    let seq = tx
        .prepare_cached("SELECT seq FROM events WHERE id = ?1 AND source = ?2")?
        .query_row(params![event.id, event.source], |row| row.get(0))?;
    Ok(Appended::Duplicate { seq })
}

fn record_processed(
    tx: &Transaction<'_>,
    processed: &ProcessedEvent,
    actions: &mut Vec<PendingAction>,
) -> Result<(), StoreError> {
    let seq = processed.seq;
    let marked = tx
        .prepare_cached(
            "UPDATE events SET processed_at_ms = ?1
             WHERE seq = ?2 AND processed_at_ms IS NULL",
        )?
        .execute(params![processed.processed_at_ms, seq])?;
    if marked == 0 {
        let exists = tx
            .prepare_cached("SELECT 1 FROM events WHERE seq = ?1")?
            .exists(params![seq])?;
        return Err(if exists {
            StoreError::AlreadyProcessed { seq }
        } else {
            StoreError::UnknownEvent { seq }
        });
    }

    if let Some(entity) = &processed.entity {
        tx.prepare_cached(
            "INSERT INTO entities (key, state, updated_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE
             SET state = excluded.state, updated_at_ms = excluded.updated_at_ms",
        )?
        .execute(params![
            entity.key().to_string(),
            serde_json::to_string(entity)?,
            entity.updated_at.timestamp_millis()
        ])?;
    }

    for new in &processed.decisions {
        let decision = &new.decision;
        let decision_id = tx
            .prepare_cached(
                "INSERT INTO decisions (event_seq, rule, rule_hash, kind, body, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .insert(params![
                seq,
                decision.rule,
                decision.rule_hash,
                decision.kind.name(),
                serde_json::to_string(decision)?,
                processed.processed_at_ms
            ])?;
        for action in &new.actions {
            let id = tx
                .prepare_cached(
                    "INSERT INTO actions
                     (decision_id, event_seq, route, plugin, payload, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .insert(params![
                    decision_id,
                    seq,
                    action.route,
                    action.plugin,
                    action.payload_json,
                    processed.processed_at_ms
                ])?;
            actions.push(PendingAction {
                id,
                event_seq: seq,
                decision_id,
                route: action.route.clone(),
                plugin: action.plugin.clone(),
                payload_json: action.payload_json.clone(),
                attempts: 0,
                next_attempt_at_ms: None,
            });
        }
    }

    for failure in &processed.rule_failures {
        tx.prepare_cached(
            "INSERT INTO rule_failures (event_seq, rule, rule_hash, message)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            seq,
            failure.rule,
            failure.rule_hash,
            failure.message
        ])?;
    }
    Ok(())
}

fn record_outcomes(tx: &Transaction<'_>, outcomes: &[ActionOutcome]) -> Result<(), StoreError> {
    let (mut done, mut failed) = (0_i64, 0_i64);
    for outcome in outcomes {
        let detail = Some(outcome.detail.as_str()).filter(|d| !d.is_empty());
        let changed = match &outcome.result {
            OutcomeKind::Done { external_id } => {
                let changed = finish(tx, outcome, "done", detail, external_id.as_deref())?;
                done += changed as i64;
                changed
            }
            OutcomeKind::Failed => {
                let changed = finish(tx, outcome, "failed", detail, None)?;
                failed += changed as i64;
                changed
            }
            OutcomeKind::Retry { next_attempt_at_ms } => {
                tx.prepare_cached(
                    "UPDATE actions SET attempts = ?1, next_attempt_at_ms = ?2, detail = ?3
                     WHERE id = ?4 AND status = 'pending'",
                )?
                .execute(params![
                    outcome.attempts,
                    next_attempt_at_ms,
                    detail,
                    outcome.action_id
                ])? == 1
            }
        };
        if !changed {
            let id = outcome.action_id;
            let exists = tx
                .prepare_cached("SELECT 1 FROM actions WHERE id = ?1")?
                .exists(params![id])?;
            if !exists {
                return Err(StoreError::UnknownAction { id });
            }
            tracing::warn!(
                action_id = id,
                "ignored an outcome for an action that had already finished"
            );
        }
    }
    for (key, finished) in [(ACTIONS_DONE, done), (ACTIONS_FAILED, failed)] {
        if finished > 0 {
            tx.prepare_cached("UPDATE meta SET value = value + ?1 WHERE key = ?2")?
                .execute(params![finished, key])?;
        }
    }
    Ok(())
}

/// Moves a pending action to its final `status`; false if it was not pending.
fn finish(
    tx: &Transaction<'_>,
    outcome: &ActionOutcome,
    status: &str,
    detail: Option<&str>,
    external_id: Option<&str>,
) -> Result<bool, StoreError> {
    let changed = tx
        .prepare_cached(
            "UPDATE actions
             SET status = ?1, attempts = ?2, detail = ?3, external_id = ?4,
                 next_attempt_at_ms = NULL, finished_at_ms = ?5
             WHERE id = ?6 AND status = 'pending'",
        )?
        .execute(params![
            status,
            outcome.attempts,
            detail,
            external_id,
            outcome.finished_at_ms,
            outcome.action_id
        ])?;
    Ok(changed == 1)
}
