//! The SQLite write: one batch, one transaction, one fsync; the steps of
//! `crate::write` written row by row.

use rusqlite::{CachedStatement, Connection, OptionalExtension, TransactionBehavior, params};

use super::schema::{ACTIONS_DEAD_LETTERED, ACTIONS_DONE, INSTANCE, PROCESSED_CURSOR};
use crate::StoreError;
use crate::records::{
    ActionHistoryKind, ActionOutcome, ActionStatus, Appended, DeadLetterChange, DeadLetterOp,
    DeadLetterOutcome, FiredTimer, GateChange, NewEvent, OpenSpan, OutcomeKind, PayloadJson,
    PendingAction, ProcessedEvent, SkippedTimer, SourceState, TimerCancellation, WriteBatch,
    WriteResult, catch_up_name, timer_kind_columns,
};
use crate::write::{Arrival, BatchTimer, WriteSteps};

/// Commits everything in `batch` in one transaction (`BEGIN IMMEDIATE` ..
/// `COMMIT`), in the order [`WriteBatch`] documents.
pub(super) fn write(conn: &mut Connection, batch: &WriteBatch) -> Result<WriteResult, StoreError> {
    if batch.is_empty() {
        return Ok(WriteResult::default());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let result = crate::write::write(
        &mut Steps {
            w: Statements::new(&tx),
            rule_versions: RuleVersions::default(),
            instance: None,
        },
        batch,
    )?;
    tx.commit()?;
    Ok(result)
}

/// The steps of one write, row by row: SQLite is in the process, so a
/// statement per row costs no round trip.
struct Steps<'c> {
    w: Statements<'c>,
    rule_versions: RuleVersions,
    /// The database's instance, which each new action keeps: read once,
    /// when the batch creates its first action.
    instance: Option<i64>,
}

impl WriteSteps for Steps<'_> {
    /// A database of one daemon has no leases: a batch that depends on one
    /// or asks for one is refused.
    fn check_fences(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        if !batch.fences.is_empty() || batch.new_action_lease.is_some() {
            return Err(StoreError::NotShared);
        }
        Ok(())
    }

    fn append(&mut self, events: &[&NewEvent]) -> Result<Vec<Appended>, StoreError> {
        events
            .iter()
            .map(|event| append(&mut self.w, event))
            .collect()
    }

    fn mark_processed(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        let mut cursor = None;
        for p in processed {
            mark_processed(&mut self.w, p)?;
            cursor = cursor.max(Some(p.seq));
        }
        if let Some(seq) = cursor {
            self.w
                .get("UPDATE meta SET value = max(value, ?1) WHERE key = ?2")?
                .execute(params![seq, PROCESSED_CURSOR])?;
        }
        Ok(())
    }

    /// One upsert per event: an entity's later state in the batch
    /// overwrites its earlier one.
    fn upsert_entities(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        for entity in processed.iter().filter_map(|p| p.entity.as_ref()) {
            self.w
                .get(
                    "INSERT INTO entities (key, state, updated_at_ms, open_spans)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE
                     SET state = excluded.state, updated_at_ms = excluded.updated_at_ms,
                         open_spans = excluded.open_spans",
                )?
                .execute(params![
                    entity.key_text(),
                    entity.to_json(),
                    entity.updated_at.timestamp_millis(),
                    OpenSpan::bits_of(entity)
                ])?;
        }
        Ok(())
    }

    fn insert_decisions(&mut self, batch: &WriteBatch) -> Result<Vec<PendingAction>, StoreError> {
        let mut actions = Vec::new();
        for p in &batch.processed {
            insert_decisions(self, p, &mut actions)?;
        }
        Ok(actions)
    }

    fn insert_rule_failures(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        for p in processed {
            for failure in &p.rule_failures {
                self.w
                    .get(
                        "INSERT INTO rule_failures (event_seq, rule, rule_hash, message)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        p.seq,
                        failure.rule,
                        failure.rule_hash,
                        failure.message
                    ])?;
            }
        }
        Ok(())
    }

    fn insert_rule_notes(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        for p in processed {
            for note in &p.rule_notes {
                self.w
                    .get("INSERT INTO rule_notes (event_seq, rule, message) VALUES (?1, ?2, ?3)")?
                    .execute(params![p.seq, note.rule, note.message])?;
            }
        }
        Ok(())
    }

    fn insert_samples(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        for p in processed {
            insert_samples(&mut self.w, p.seq, &p.samples)?;
        }
        Ok(())
    }

    fn cancel_expects(&mut self, arrivals: &[Arrival<'_>]) -> Result<usize, StoreError> {
        let mut cancelled = 0;
        for arrival in arrivals {
            cancelled += cancel_expects(&mut self.w, arrival)?;
        }
        Ok(cancelled)
    }

    fn insert_timers(&mut self, timers: &[BatchTimer<'_>]) -> Result<(), StoreError> {
        for timer in timers {
            insert_timer(self, timer)?;
        }
        Ok(())
    }

    fn record_gate_change(
        &mut self,
        seq: i64,
        at_ms: i64,
        change: &GateChange,
    ) -> Result<(), StoreError> {
        record_gate_change(&mut self.w, seq, at_ms, change)
    }

    fn fire_timers(&mut self, fired: &[FiredTimer]) -> Result<Vec<Option<Appended>>, StoreError> {
        fired
            .iter()
            .map(|fired| fire_timer(&mut self.w, fired))
            .collect()
    }

    fn skip_timers(&mut self, skipped: &[SkippedTimer]) -> Result<usize, StoreError> {
        let mut closed = 0;
        for skipped in skipped {
            closed += self
                .w
                .get(
                    "UPDATE timers SET status = 'skipped', closed_at_ms = ?1
                     WHERE id = ?2 AND status = 'pending'",
                )?
                .execute(params![skipped.skipped_at_ms, skipped.timer_id])?;
        }
        Ok(closed)
    }

    fn record_outcomes(
        &mut self,
        outcomes: &[ActionOutcome],
        result: &mut WriteResult,
    ) -> Result<(), StoreError> {
        result.dead_lettered += record_outcomes(&mut self.w, outcomes)?;
        Ok(())
    }

    fn change_dead_letter(
        &mut self,
        change: &DeadLetterChange,
    ) -> Result<DeadLetterOutcome, StoreError> {
        change_dead_letter(&mut self.w, change)
    }

    fn cancel_timers(&mut self, cancellation: &TimerCancellation) -> Result<usize, StoreError> {
        cancel_timers(&mut self.w, cancellation)
    }

    fn write_source_state(&mut self, states: &[SourceState]) -> Result<(), StoreError> {
        for state in states {
            self.w
                .get(
                    "INSERT INTO source_state (key, value, updated_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                                                     updated_at_ms = excluded.updated_at_ms",
                )?
                .execute(params![state.key, state.value, state.updated_at_ms])?;
        }
        Ok(())
    }

    fn prune(&mut self, seqs: &[i64]) -> Result<usize, StoreError> {
        super::prune::prune(self.w.conn, seqs)
    }
}

/// The statements of one transaction, each taken from the connection's
/// cache once and kept for every row of the batch. `prepare_cached` hashes
/// the SQL and moves the statement out of the cache and back on each call,
/// about 4% of the journal writer's CPU when called per row.
struct Statements<'c> {
    conn: &'c Connection,
    taken: Vec<(&'static str, CachedStatement<'c>)>,
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Self {
        Statements {
            conn,
            taken: Vec::with_capacity(16),
        }
    }

    /// The statement for `sql`, a literal: found by its address, which is
    /// cheaper than hashing its text.
    fn get(&mut self, sql: &'static str) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let at = match self.taken.iter().position(|(s, _)| std::ptr::eq(*s, sql)) {
            Some(at) => at,
            None => {
                let statement = self.conn.prepare_cached(sql)?;
                self.taken.push((sql, statement));
                self.taken.len() - 1
            }
        };
        Ok(&mut self.taken[at].1)
    }
}

/// `changes()` and `last_insert_rowid()` rather than `RETURNING seq`: RETURNING
/// builds a temporary table per row, which measured ~25% slower on the journal.
fn append(w: &mut Statements<'_>, event: &NewEvent) -> Result<Appended, StoreError> {
    let inserted = w
        .get(
            "INSERT INTO events (source, id, hook, type, subject, json, received_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id, source, hook) DO NOTHING",
        )?
        .execute(params![
            event.source,
            event.id,
            event.hook_column(),
            event.ty,
            event.subject,
            crate::event_body::encode(&event.json, event.columns()),
            event.received_at_ms
        ])?;
    if inserted == 1 {
        return Ok(Appended::New {
            seq: w.conn.last_insert_rowid(),
        });
    }
    let seq = w
        .get("SELECT seq FROM events WHERE id = ?1 AND source = ?2 AND hook = ?3")?
        .query_row(
            params![event.id, event.source, event.hook_column()],
            |row| row.get(0),
        )?;
    Ok(Appended::Duplicate { seq })
}

/// Marks the timer fired and journals its event, or does nothing (`None`) if
/// the timer is no longer pending: the status check and the event's unique
/// `(source, id)` are what make a timer fire once.
fn fire_timer(w: &mut Statements<'_>, fired: &FiredTimer) -> Result<Option<Appended>, StoreError> {
    let claimed = w
        .get(
            "UPDATE timers SET status = 'fired', closed_at_ms = ?1
             WHERE id = ?2 AND status = 'pending'",
        )?
        .execute(params![fired.fired_at_ms, fired.timer_id])?;
    if claimed == 0 {
        let exists = w
            .get("SELECT 1 FROM timers WHERE id = ?1")?
            .exists(params![fired.timer_id])?;
        if !exists {
            return Err(StoreError::UnknownTimer { id: fired.timer_id });
        }
        return Ok(None);
    }
    let appended = append(w, &fired.event)?;
    w.get("UPDATE timers SET fired_seq = ?1 WHERE id = ?2")?
        .execute(params![appended.seq(), fired.timer_id])?;
    Ok(Some(appended))
}

/// The ids of the rule versions (`rule_versions`) a batch's rows name,
/// looked up or added once per batch. Not kept across batches: an id added
/// by a transaction that then fails would not exist.
#[derive(Default)]
struct RuleVersions {
    known: Vec<(String, String, i64)>,
}

impl RuleVersions {
    fn id(&mut self, w: &mut Statements<'_>, rule: &str, hash: &str) -> Result<i64, StoreError> {
        if let Some((_, _, id)) = self.known.iter().find(|(r, h, _)| r == rule && h == hash) {
            return Ok(*id);
        }
        let found: Option<i64> = w
            .get("SELECT id FROM rule_versions WHERE rule = ?1 AND hash = ?2")?
            .query_row(params![rule, hash], |row| row.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                w.get("INSERT INTO rule_versions (rule, hash) VALUES (?1, ?2)")?
                    .execute(params![rule, hash])?;
                w.conn.last_insert_rowid()
            }
        };
        self.known.push((rule.to_owned(), hash.to_owned(), id));
        Ok(id)
    }
}

fn insert_timer(steps: &mut Steps<'_>, batch_timer: &BatchTimer<'_>) -> Result<(), StoreError> {
    let timer = batch_timer.timer;
    let (kind, expect_type) = timer_kind_columns(&timer.kind);
    let rule_version = steps
        .rule_versions
        .id(&mut steps.w, &timer.rule, &timer.rule_hash)?;
    steps
        .w
        .get(
            "INSERT INTO timers (entity, kind, event_type, data, expect_type, due_at_ms,
                                 catch_up, rule_version, created_by_seq, status,
                                 closed_at_ms, cancel_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            timer.entity,
            kind,
            timer.event_type,
            serde_json::to_string(&timer.data)?,
            expect_type,
            timer.due_at_ms,
            catch_up_name(timer.catch_up),
            rule_version,
            batch_timer.created_by_seq,
            batch_timer.status().name(),
            batch_timer.closed_at_ms(),
            batch_timer.cancel_reason()
        ])?;
    Ok(())
}

fn mark_processed(w: &mut Statements<'_>, processed: &ProcessedEvent) -> Result<(), StoreError> {
    let seq = processed.seq;
    let marked = w
        .get(
            "UPDATE events SET processed_at_ms = ?1
             WHERE seq = ?2 AND processed_at_ms IS NULL",
        )?
        .execute(params![processed.processed_at_ms, seq])?;
    if marked == 0 {
        let exists = w
            .get("SELECT 1 FROM events WHERE seq = ?1")?
            .exists(params![seq])?;
        return Err(if exists {
            StoreError::AlreadyProcessed { seq }
        } else {
            StoreError::UnknownEvent { seq }
        });
    }
    // `entity_timers` finds timers through the events about their entity.
    debug_assert!(processed.entity.as_ref().is_none_or(|entity| {
        let key = entity.key_text();
        processed.timers.iter().all(|timer| timer.entity == key)
    }));
    Ok(())
}

/// The event's decisions and their actions, pushed onto `actions`.
fn insert_decisions(
    steps: &mut Steps<'_>,
    processed: &ProcessedEvent,
    actions: &mut Vec<PendingAction>,
) -> Result<(), StoreError> {
    let seq = processed.seq;
    let mut bodies = crate::decision_body::EventBodies::default();
    for new in &processed.decisions {
        let decision = &new.decision;
        let rule_version =
            steps
                .rule_versions
                .id(&mut steps.w, &decision.rule, &decision.rule_hash)?;
        let w = &mut steps.w;
        let decision_id = w
            .get(
                "INSERT INTO decisions (event_seq, rule_version, kind, body, shadow)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .insert(params![
                seq,
                rule_version,
                decision.kind.name(),
                bodies.encode(decision, new.shadow),
                new.shadow
            ])?;
        if new.actions.is_empty() {
            continue;
        }
        let instance = match steps.instance {
            Some(instance) => instance,
            None => {
                let instance: i64 = w
                    .get("SELECT value FROM meta WHERE key = ?1")?
                    .query_row([INSTANCE], |row| row.get(0))?;
                *steps.instance.insert(instance)
            }
        };
        for action in &new.actions {
            // Not `RETURNING`: it builds a temporary table per row (see `append`).
            w.get(
                "INSERT INTO actions
                 (decision_id, event_seq, route, plugin, payload_key, created_at_ms, instance)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                decision_id,
                seq,
                action.route,
                action.plugin,
                action.payload_key,
                processed.processed_at_ms,
                instance
            ])?;
            let id = w.conn.last_insert_rowid();
            w.get("INSERT INTO action_payloads (action_id, payload) VALUES (?1, ?2)")?
                .execute(params![id, action.payload.as_str()])?;
            actions.push(PendingAction::created(
                id,
                seq,
                decision_id,
                action,
                instance,
                None,
            ));
        }
    }
    Ok(())
}

/// Cancels the pending expects `arrival` ends, found first and then closed
/// by id, each saying why (`task.reviewed came`). One UPDATE searching
/// `timers_expecting`, whose `status` it changes, would build a temporary
/// table of row ids on every event, though almost always no expect is
/// waiting.
fn cancel_expects(w: &mut Statements<'_>, arrival: &Arrival<'_>) -> Result<usize, StoreError> {
    let Arrival { arrival, at_ms } = *arrival;
    let waiting: Vec<i64> = w
        .get(
            "SELECT id FROM timers INDEXED BY timers_expecting
             WHERE entity = ?1 AND status = 'pending' AND expect_type = ?2",
        )?
        .query_map(params![arrival.entity, arrival.event_type], |row| {
            row.get(0)
        })?
        .collect::<Result<_, _>>()?;
    if waiting.is_empty() {
        return Ok(0);
    }
    let reason = arrival.reason();
    let mut cancelled = 0;
    for id in waiting {
        cancelled += w
            .get(
                "UPDATE timers SET status = 'cancelled', closed_at_ms = ?1, cancel_reason = ?3
                 WHERE id = ?2 AND status = 'pending'",
            )?
            .execute(params![at_ms, id, reason])?;
    }
    Ok(cancelled)
}

fn record_gate_change(
    w: &mut Statements<'_>,
    seq: i64,
    at_ms: i64,
    change: &GateChange,
) -> Result<(), StoreError> {
    match change {
        GateChange::Hold {
            campaign,
            channel,
            rule,
            reason,
        } => {
            w.get(
                "INSERT INTO held_sends (campaign, channel, event_seq, rule, reason, held_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (event_seq, channel) DO NOTHING",
            )?
            .execute(params![campaign, channel, seq, rule, reason, at_ms])?;
        }
        GateChange::Release {
            campaign,
            channel,
            by,
        } => {
            w.get(
                "UPDATE held_sends
                 SET status = 'released', released_seq = ?1, released_at_ms = ?2, released_by = ?3
                 WHERE campaign = ?4 AND channel = ?5 AND status = 'held'",
            )?
            .execute(params![seq, at_ms, by, campaign, channel])?;
        }
        GateChange::Override {
            campaign,
            channel,
            by,
            reason,
            released,
        } => {
            w.get(
                "INSERT INTO gate_overrides (campaign, channel, by, reason, event_seq, released, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                campaign,
                channel,
                by,
                reason,
                seq,
                i64::try_from(*released).unwrap_or(i64::MAX),
                at_ms
            ])?;
        }
    }
    Ok(())
}

/// Returns how many actions went to the dead letters.
fn record_outcomes(
    w: &mut Statements<'_>,
    outcomes: &[ActionOutcome],
) -> Result<usize, StoreError> {
    let (mut done, mut dead_lettered) = (0_i64, 0_i64);
    for outcome in outcomes {
        let detail = Some(outcome.detail.as_str()).filter(|d| !d.is_empty());
        let changed = match &outcome.result {
            OutcomeKind::Done { external_id } => {
                let changed = finish(
                    w,
                    outcome,
                    ActionStatus::Done,
                    detail,
                    external_id.as_deref(),
                )?;
                done += changed as i64;
                changed
            }
            OutcomeKind::DeadLetter => {
                let changed = finish(w, outcome, ActionStatus::DeadLetter, detail, None)?;
                if changed {
                    dead_lettered += 1;
                    add_history(
                        w,
                        outcome.action_id,
                        outcome.finished_at_ms,
                        ActionHistoryKind::DeadLettered,
                        outcome.attempts,
                        detail,
                        None,
                    )?;
                }
                changed
            }
            OutcomeKind::Retry { next_attempt_at_ms } => {
                let changed =
                    w.get(
                        "UPDATE actions SET attempts = ?1, next_attempt_at_ms = ?2, detail = ?3
                         WHERE id = ?4 AND status = 'pending'",
                    )?
                    .execute(params![
                        outcome.attempts,
                        next_attempt_at_ms,
                        detail,
                        outcome.action_id
                    ])? == 1;
                if changed {
                    add_history(
                        w,
                        outcome.action_id,
                        outcome.finished_at_ms,
                        ActionHistoryKind::AttemptFailed,
                        outcome.attempts,
                        detail,
                        None,
                    )?;
                }
                changed
            }
        };
        if !changed {
            let id = outcome.action_id;
            let exists = w
                .get("SELECT 1 FROM actions WHERE id = ?1")?
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
    bump_counters(w, done, dead_lettered)?;
    Ok(usize::try_from(dead_lettered).unwrap_or(0))
}

fn bump_counters(w: &mut Statements<'_>, done: i64, dead_lettered: i64) -> Result<(), StoreError> {
    for (key, finished) in [(ACTIONS_DONE, done), (ACTIONS_DEAD_LETTERED, dead_lettered)] {
        if finished > 0 {
            w.get("UPDATE meta SET value = value + ?1 WHERE key = ?2")?
                .execute(params![finished, key])?;
        }
    }
    Ok(())
}

fn add_history(
    w: &mut Statements<'_>,
    action_id: i64,
    at_ms: i64,
    kind: ActionHistoryKind,
    attempts: u32,
    detail: Option<&str>,
    by_and_reason: Option<(&str, &str)>,
) -> Result<(), StoreError> {
    w.get(
        "INSERT INTO action_history (action_id, at_ms, kind, attempts, detail, by, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        action_id,
        at_ms,
        kind.name(),
        attempts,
        detail,
        by_and_reason.map(|(by, _)| by),
        by_and_reason.map(|(_, reason)| reason)
    ])?;
    Ok(())
}

/// Cancels the pending timers a person named, the soonest due first; only
/// pending ones, so a timer fired meanwhile is left as it is.
fn cancel_timers(w: &mut Statements<'_>, cancel: &TimerCancellation) -> Result<usize, StoreError> {
    Ok(w.get(
        "UPDATE timers SET status = 'cancelled', closed_at_ms = ?1,
                           cancelled_by = ?2, cancel_reason = ?3
         WHERE status = 'pending' AND id IN (
             SELECT t.id FROM timers t INDEXED BY timers_due
             WHERE t.status = 'pending'
               AND t.rule_version IN (SELECT id FROM rule_versions
                                      WHERE rule = ?4 AND (?5 IS NULL OR hash = ?5))
               AND (?6 IS NULL OR t.entity = ?6)
             ORDER BY t.due_at_ms, t.id LIMIT ?7)",
    )?
    .execute(params![
        cancel.at_ms,
        cancel.by,
        cancel.reason,
        cancel.rule,
        cancel.version,
        cancel.entity,
        i64::try_from(cancel.limit).unwrap_or(i64::MAX),
    ])?)
}

/// Retries or drops a dead letter, only while it is one.
fn change_dead_letter(
    w: &mut Statements<'_>,
    change: &DeadLetterChange,
) -> Result<DeadLetterOutcome, StoreError> {
    let found = w
        .get("SELECT status, attempts FROM actions WHERE id = ?1")?
        .query_row(params![change.action_id], |row| {
            Ok((
                super::read::stored::<ActionStatus>(row, 0, "actions.status")?,
                row.get::<_, u32>(1)?,
            ))
        })
        .optional()?;
    let Some((status, attempts)) = found else {
        return Ok(DeadLetterOutcome::Unknown);
    };
    if status != ActionStatus::DeadLetter {
        return Ok(DeadLetterOutcome::NotDeadLetter { status });
    }
    let who = Some((change.by.as_str(), change.reason.as_str()));
    match change.op {
        DeadLetterOp::Retry => {
            let action = w
                .get(
                    "UPDATE actions
                     SET status = 'pending', attempts = 0, next_attempt_at_ms = NULL,
                         finished_at_ms = NULL
                     WHERE id = ?1
                     RETURNING id, event_seq, decision_id, route, plugin,
                               coalesce((SELECT payload FROM action_payloads WHERE action_id = ?1), ''),
                               instance",
                )?
                .query_row(params![change.action_id], |row| {
                    Ok(PendingAction {
                        lease_token: None,
                        id: row.get(0)?,
                        event_seq: row.get(1)?,
                        decision_id: row.get(2)?,
                        route: row.get(3)?,
                        plugin: row.get(4)?,
                        payload: PayloadJson::stored(row.get(5)?),
                        attempts: 0,
                        next_attempt_at_ms: None,
                        instance: row.get(6)?,
                    })
                })?;
            add_history(
                w,
                change.action_id,
                change.at_ms,
                ActionHistoryKind::Retried,
                attempts,
                None,
                who,
            )?;
            Ok(DeadLetterOutcome::Retried(action))
        }
        DeadLetterOp::Drop => {
            w.get("UPDATE actions SET status = 'dropped', finished_at_ms = ?1 WHERE id = ?2")?
                .execute(params![change.at_ms, change.action_id])?;
            drop_payload(w, change.action_id)?;
            add_history(
                w,
                change.action_id,
                change.at_ms,
                ActionHistoryKind::Dropped,
                attempts,
                None,
                who,
            )?;
            Ok(DeadLetterOutcome::Dropped)
        }
    }
}

/// Moves a pending action to its final `status`; false if it was not pending.
fn finish(
    w: &mut Statements<'_>,
    outcome: &ActionOutcome,
    status: ActionStatus,
    detail: Option<&str>,
    external_id: Option<&str>,
) -> Result<bool, StoreError> {
    let changed = w
        .get(
            "UPDATE actions
             SET status = ?1, attempts = ?2, detail = ?3, external_id = ?4,
                 next_attempt_at_ms = NULL, finished_at_ms = ?5
             WHERE id = ?6 AND status = 'pending'",
        )?
        .execute(params![
            status.name(),
            outcome.attempts,
            detail,
            external_id,
            outcome.finished_at_ms,
            outcome.action_id
        ])?;
    if changed == 1 && status == ActionStatus::Done {
        drop_payload(w, outcome.action_id)?;
    }
    Ok(changed == 1)
}

/// An action done or dropped never runs again: its payload goes.
fn drop_payload(w: &mut Statements<'_>, action_id: i64) -> Result<(), StoreError> {
    w.get("DELETE FROM action_payloads WHERE action_id = ?1")?
        .execute([action_id])?;
    Ok(())
}

fn insert_samples(
    w: &mut Statements<'_>,
    seq: i64,
    samples: &[converge_model::Sample],
) -> Result<(), StoreError> {
    for (n, sample) in samples.iter().enumerate() {
        w.get(
            "INSERT INTO metric_samples
             (event_seq, n, metric, at_ms, week, value, entity, campaign, owner, channel, stage)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            seq,
            n as i64,
            sample.metric.name(),
            sample.at.timestamp_millis(),
            sample.week().to_string(),
            sample.value,
            sample.entity,
            sample.campaign,
            sample.owner,
            sample.channel,
            sample.stage,
        ])?;
    }
    Ok(())
}

pub(super) fn replace_samples(
    conn: &mut Connection,
    samples: &mut dyn Iterator<Item = Result<(i64, Vec<converge_model::Sample>), StoreError>>,
    entities: &[converge_model::EntityState],
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM metric_samples", [])?;
    let mut w = Statements::new(&tx);
    for event in samples {
        let (seq, samples) = event?;
        insert_samples(&mut w, seq, &samples)?;
    }
    for entity in entities {
        let key = entity.key_text();
        w.get("UPDATE entities SET state = ?1, open_spans = ?2 WHERE key = ?3")?
            .execute(params![entity.to_json(), OpenSpan::bits_of(entity), key])?;
    }
    drop(w);
    tx.commit()?;
    Ok(())
}
