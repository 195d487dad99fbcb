//! The PostgreSQL write: one batch, one transaction, in the order
//! [`WriteBatch`] documents, safe against other daemons writing at once.
//!
//! Each step's `WHERE` is its guard against another daemon: an event is
//! marked processed only while unprocessed, a timer fired only while
//! pending, an outcome recorded only while the action is pending (and, when
//! leased, still under the caller's token). `READ COMMITTED` re-checks
//! those conditions on the latest row after waiting for a concurrent
//! writer, so the loser sees the winner's change, never a stale row.
//!
//! What the outbox's attempts and people's decisions change is in
//! `outbox.rs`.

use std::collections::{BTreeMap, HashSet};

use postgres::GenericClient;
use postgres::error::SqlState;

use super::{Conn, PostgresStore, Session, outbox, sql_partition};
use crate::records::{
    ActionLease, Appended, FiredTimer, GateChange, NewDecision, NewEvent, NewTimer, PendingAction,
    ProcessedEvent, SkippedTimer, WriteBatch, WriteResult, catch_up_name,
};
use crate::{StoreError, event_partition, partition_of};

/// How many times a write that deadlocked is tried.
const DEADLOCK_ATTEMPTS: u32 = 3;

/// Commits everything in `batch` in one transaction. A transaction
/// PostgreSQL aborted to break a deadlock with another daemon's (both
/// journaling the same events, in opposite orders) is tried again.
pub(super) fn write(
    store: &mut PostgresStore,
    batch: &WriteBatch,
) -> Result<WriteResult, StoreError> {
    if batch.is_empty() {
        return Ok(WriteResult::default());
    }
    let Conn { client, statements } = store.conn.get_mut();
    let mut attempt = 1;
    loop {
        let mut tx = client.transaction()?;
        let written = write_in(
            &mut Session {
                client: &mut tx,
                statements,
            },
            batch,
        );
        match written {
            Ok(result) => {
                tx.commit()?;
                return Ok(result);
            }
            Err(StoreError::Postgres(e))
                if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                    && attempt < DEADLOCK_ATTEMPTS =>
            {
                tracing::warn!(
                    attempt,
                    "write deadlocked with another daemon's; trying again"
                );
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn write_in<C: GenericClient>(
    s: &mut Session<'_, C>,
    batch: &WriteBatch,
) -> Result<WriteResult, StoreError> {
    check_fences(s, batch)?;
    let mut result = WriteResult {
        fired: Vec::with_capacity(batch.fired_timers.len()),
        ..WriteResult::default()
    };
    result.appended = append(s, &batch.appends)?;
    mark_processed(s, &batch.processed)?;
    upsert_entities(s, &batch.processed)?;
    let lease = new_action_lease(s, batch)?;
    for processed in &batch.processed {
        record_processed(s, processed, lease.as_ref(), &mut result)?;
    }
    for fired in &batch.fired_timers {
        result.fired.push(fire_timer(s, fired)?);
    }
    for skipped in &batch.skipped_timers {
        result.timers_skipped += skip_timer(s, skipped)?;
    }
    outbox::record_outcomes(s, &batch.outcomes, &mut result)?;
    for change in &batch.dead_letters {
        result
            .dead_letters
            .push(outbox::change_dead_letter(s, change)?);
    }
    for state in &batch.source_state {
        s.execute(
            "INSERT INTO source_state (key, value, updated_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE
             SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
            &[&state.key, &state.value, &state.updated_at_ms],
        )?;
    }
    let journaled = result
        .appended
        .iter()
        .chain(&result.emitted)
        .chain(result.fired.iter().flatten())
        .any(|a| matches!(a, Appended::New { .. }));
    if journaled {
        // Delivered at commit, and only if the commit happens.
        s.execute("SELECT pg_notify($1, '')", &[&crate::EVENTS_CHANNEL])?;
    }
    Ok(result)
}

/// Fails with [`StoreError::Fenced`] unless every fence's lease is still
/// held, unexpired, by its holder with its token. The leases stay locked
/// (`FOR SHARE`) until the commit, so none changes hands mid-batch.
fn check_fences<C: GenericClient>(
    s: &mut Session<'_, C>,
    batch: &WriteBatch,
) -> Result<(), StoreError> {
    if batch.fences.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = batch.fences.iter().map(|f| f.lease.as_str()).collect();
    let live = s.rows(
        "SELECT name, holder, token FROM leases
         WHERE name = ANY($1) AND expires_at_ms > converge_now_ms()
         ORDER BY name FOR SHARE",
        &[&names],
        |row| {
            Ok((
                row.try_get::<_, String>(0)?,
                row.try_get::<_, String>(1)?,
                row.try_get::<_, i64>(2)?,
            ))
        },
    )?;
    for fence in &batch.fences {
        let held = live.iter().any(|(name, holder, token)| {
            *name == fence.lease && *holder == fence.holder && *token == fence.token
        });
        if !held {
            return Err(StoreError::Fenced {
                lease: fence.lease.clone(),
            });
        }
    }
    Ok(())
}

/// Journals each event unless its `(source, id)` is there already (or
/// earlier in `events`), in one statement: new events get `seq`s in
/// `events` order. The journal is looked up before inserting, because an
/// `INSERT` that hits the unique key still takes a `seq` from the sequence
/// and would leave a gap for every duplicate. When another daemon inserts
/// the same event at the same moment, the `INSERT` waits for its commit and
/// skips the row: its `seq` comes back `NULL`, and a second look finds it.
fn append<C: GenericClient>(
    s: &mut Session<'_, C>,
    events: &[NewEvent],
) -> Result<Vec<Appended>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&NewEvent) -> &str| events.iter().map(f).collect::<Vec<_>>();
    let subjects: Vec<Option<&str>> = events.iter().map(|e| e.subject.as_deref()).collect();
    let received: Vec<i64> = events.iter().map(|e| e.received_at_ms).collect();
    let partitions: Vec<i32> = events
        .iter()
        .map(|e| sql_partition(event_partition(e.subject.as_deref(), &e.id)))
        .collect();
    let rows = s.query(
        "WITH input AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::bigint[], $7::integer[])
                 WITH ORDINALITY AS i (source, id, type, subject, json, received_at_ms,
                                       partition, n)
         ), journaled AS (
             SELECT i.n, e.seq FROM input i JOIN events e ON e.id = i.id AND e.source = i.source
         ), first AS (
             SELECT DISTINCT ON (id, source) * FROM input
             WHERE n NOT IN (SELECT n FROM journaled)
             ORDER BY id, source, n
         ), inserted AS (
             INSERT INTO events (source, id, type, subject, json, received_at_ms, partition)
             SELECT source, id, type, subject, json, received_at_ms, partition
             FROM first ORDER BY n
             ON CONFLICT (id, source) DO NOTHING
             RETURNING seq, id, source
         )
         SELECT coalesce(j.seq, ins.seq), j.seq IS NULL AND f.n = i.n
         FROM input i
         LEFT JOIN journaled j ON j.n = i.n
         LEFT JOIN inserted ins ON ins.id = i.id AND ins.source = i.source
         LEFT JOIN first f ON f.id = i.id AND f.source = i.source
         ORDER BY i.n",
        &[
            &column(|e| &e.source),
            &column(|e| &e.id),
            &column(|e| &e.ty),
            &subjects,
            &column(|e| &e.json),
            &received,
            &partitions,
        ],
    )?;
    let mut appended = Vec::with_capacity(events.len());
    for (event, i) in events.iter().zip(0..) {
        let answer = match rows.get(i) {
            Some(row) => (row.try_get::<_, Option<i64>>(0)?, row.try_get(1)?),
            None => (None, false),
        };
        appended.push(match answer {
            (Some(seq), true) => Appended::New { seq },
            (Some(seq), false) => Appended::Duplicate { seq },
            (None, _) => Appended::Duplicate {
                seq: s.value(
                    "SELECT seq FROM events WHERE id = $1 AND source = $2",
                    &[&event.id, &event.source],
                )?,
            },
        });
    }
    Ok(appended)
}

/// Marks the batch's events processed, each only if it is not already:
/// the exactly-once guard, which waits for another daemon processing the
/// same event and then refuses.
fn mark_processed<C: GenericClient>(
    s: &mut Session<'_, C>,
    processed: &[ProcessedEvent],
) -> Result<(), StoreError> {
    if processed.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = processed.iter().map(|p| p.seq).collect();
    let at: Vec<i64> = processed.iter().map(|p| p.processed_at_ms).collect();
    let marked: HashSet<i64> = s
        .rows(
            "UPDATE events SET processed_at_ms = p.at_ms
             FROM unnest($1::bigint[], $2::bigint[]) AS p (seq, at_ms)
             WHERE events.seq = p.seq AND events.processed_at_ms IS NULL
             RETURNING events.seq",
            &[&seqs, &at],
            |row| row.try_get(0),
        )?
        .into_iter()
        .collect();
    let mut seen = HashSet::new();
    for seq in seqs {
        // Named twice in one batch: the second is already processed.
        if !marked.contains(&seq) || !seen.insert(seq) {
            let exists = s
                .query_opt("SELECT FROM events WHERE seq = $1", &[&seq])?
                .is_some();
            return Err(if exists {
                StoreError::AlreadyProcessed { seq }
            } else {
                StoreError::UnknownEvent { seq }
            });
        }
    }
    Ok(())
}

/// Upserts the entities' states after the batch, in one statement: the
/// last state of each entity in the batch, in key order (so two daemons
/// upserting the same entities lock them in the same order).
fn upsert_entities<C: GenericClient>(
    s: &mut Session<'_, C>,
    processed: &[ProcessedEvent],
) -> Result<(), StoreError> {
    let mut latest = BTreeMap::new();
    for entity in processed.iter().filter_map(|p| p.entity.as_ref()) {
        latest.insert(entity.key().to_string(), entity);
    }
    if latest.is_empty() {
        return Ok(());
    }
    let states = latest
        .values()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    let updated: Vec<i64> = latest
        .values()
        .map(|e| e.updated_at.timestamp_millis())
        .collect();
    let keys: Vec<String> = latest.into_keys().collect();
    s.execute(
        "INSERT INTO entities (key, state, updated_at_ms)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
         ON CONFLICT (key) DO UPDATE
         SET state = excluded.state, updated_at_ms = excluded.updated_at_ms",
        &[&keys, &states, &updated],
    )?;
    Ok(())
}

/// The lease the actions of this batch start under: one fresh token for
/// them all, until the database's now plus the ttl.
struct NewLease<'a> {
    holder: &'a str,
    token: i64,
    until_ms: i64,
}

fn new_action_lease<'b, C: GenericClient>(
    s: &mut Session<'_, C>,
    batch: &'b WriteBatch,
) -> Result<Option<NewLease<'b>>, StoreError> {
    let Some(ActionLease { holder, ttl_ms }) = &batch.new_action_lease else {
        return Ok(None);
    };
    let creates_actions = batch
        .processed
        .iter()
        .flat_map(|p| &p.decisions)
        .any(|d| !d.actions.is_empty());
    if !creates_actions {
        return Ok(None);
    }
    let row = s.query_one(
        "SELECT nextval('lease_tokens'), converge_now_ms() + $1",
        &[ttl_ms],
    )?;
    Ok(Some(NewLease {
        holder,
        token: row.try_get(0)?,
        until_ms: row.try_get(1)?,
    }))
}

/// What processing one event adds, besides its mark and its entity
/// (written for the whole batch at once): decisions and actions, rule
/// failures, timers cancelled and created, emitted events, gate changes.
fn record_processed<C: GenericClient>(
    s: &mut Session<'_, C>,
    processed: &ProcessedEvent,
    lease: Option<&NewLease<'_>>,
    result: &mut WriteResult,
) -> Result<(), StoreError> {
    let seq = processed.seq;
    let at_ms = processed.processed_at_ms;
    for new in &processed.decisions {
        insert_decision(s, processed, new, lease, &mut result.actions)?;
    }
    for failure in &processed.rule_failures {
        s.execute(
            "INSERT INTO rule_failures (event_seq, rule, rule_hash, message)
             VALUES ($1, $2, $3, $4)",
            &[&seq, &failure.rule, &failure.rule_hash, &failure.message],
        )?;
    }
    if let Some(arrival) = &processed.cancel_expects {
        let cancelled = s.execute(
            "UPDATE timers SET status = 'cancelled', closed_at_ms = $1
             WHERE entity = $2 AND status = 'pending' AND expect_type = $3",
            &[&at_ms, &arrival.entity, &arrival.event_type],
        )?;
        result.timers_cancelled += usize::try_from(cancelled).unwrap_or(usize::MAX);
    }
    for timer in &processed.timers {
        insert_timer(s, seq, timer)?;
    }
    result.timers_created += processed.timers.len();
    result.emitted.extend(append(s, &processed.emits)?);
    for change in &processed.gate_changes {
        record_gate_change(s, seq, at_ms, change)?;
    }
    Ok(())
}

/// Inserts a decision and its actions in one statement; appends the
/// actions, in order, to `actions`.
fn insert_decision<C: GenericClient>(
    s: &mut Session<'_, C>,
    processed: &ProcessedEvent,
    new: &NewDecision,
    lease: Option<&NewLease<'_>>,
    actions: &mut Vec<PendingAction>,
) -> Result<(), StoreError> {
    let decision = &new.decision;
    let routes: Vec<&str> = new.actions.iter().map(|a| a.route.as_str()).collect();
    let plugins: Vec<&str> = new.actions.iter().map(|a| a.plugin.as_str()).collect();
    let payloads: Vec<&str> = new
        .actions
        .iter()
        .map(|a| a.payload_json.as_str())
        .collect();
    // Identities are taken in the order rows are inserted (`ORDER BY a.n`),
    // so the ids in ascending order are the actions in the batch's order.
    let row = s.query_one(
        "WITH decision AS (
             INSERT INTO decisions (event_seq, rule, rule_hash, kind, body, created_at_ms, shadow)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id
         ), created AS (
             INSERT INTO actions (decision_id, event_seq, route, plugin, payload, created_at_ms,
                                  lease_holder, lease_token, lease_until_ms)
             SELECT decision.id, $1, a.route, a.plugin, a.payload, $6, $11, $12, $13
             FROM decision,
                  unnest($8::text[], $9::text[], $10::text[])
                      WITH ORDINALITY AS a (route, plugin, payload, n)
             ORDER BY a.n
             RETURNING id
         )
         SELECT (SELECT id FROM decision),
                array(SELECT id FROM created ORDER BY id)",
        &[
            &processed.seq,
            &decision.rule,
            &decision.rule_hash,
            &decision.kind.name(),
            &serde_json::to_string(decision)?,
            &processed.processed_at_ms,
            &new.shadow,
            &routes,
            &plugins,
            &payloads,
            &lease.map(|l| l.holder),
            &lease.map(|l| l.token),
            &lease.map(|l| l.until_ms),
        ],
    )?;
    let decision_id: i64 = row.try_get(0)?;
    let ids: Vec<i64> = row.try_get(1)?;
    for (id, action) in ids.into_iter().zip(&new.actions) {
        actions.push(PendingAction::created(
            id,
            processed.seq,
            decision_id,
            action,
            lease.map(|l| l.token),
        ));
    }
    Ok(())
}

fn insert_timer<C: GenericClient>(
    s: &mut Session<'_, C>,
    seq: i64,
    timer: &NewTimer,
) -> Result<(), StoreError> {
    let (kind, expect_type) = timer.kind.columns();
    s.execute(
        "INSERT INTO timers (entity, kind, event_type, data, expect_type, due_at_ms,
                             catch_up, rule, rule_hash, created_by_seq, partition)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &timer.entity,
            &kind,
            &timer.event_type,
            &serde_json::to_string(&timer.data)?,
            &expect_type,
            &timer.due_at_ms,
            &catch_up_name(timer.catch_up),
            &timer.rule,
            &timer.rule_hash,
            &seq,
            &sql_partition(partition_of(&timer.entity)),
        ],
    )?;
    Ok(())
}

fn record_gate_change<C: GenericClient>(
    s: &mut Session<'_, C>,
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
            s.execute(
                "INSERT INTO held_sends
                 (campaign, channel, event_seq, rule, reason, held_at_ms, partition)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (event_seq, channel) DO NOTHING",
                &[
                    campaign,
                    channel,
                    &seq,
                    rule,
                    reason,
                    &at_ms,
                    &sql_partition(partition_of(campaign)),
                ],
            )?;
        }
        GateChange::Release {
            campaign,
            channel,
            by,
        } => {
            s.execute(
                "UPDATE held_sends
                 SET status = 'released', released_seq = $1, released_at_ms = $2,
                     released_by = $3
                 WHERE campaign = $4 AND channel = $5 AND status = 'held'",
                &[&seq, &at_ms, by, campaign, channel],
            )?;
        }
        GateChange::Override {
            campaign,
            channel,
            by,
            reason,
            released,
        } => {
            s.execute(
                "INSERT INTO gate_overrides
                 (campaign, channel, \"by\", reason, event_seq, released, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    campaign,
                    channel,
                    by,
                    reason,
                    &seq,
                    &i64::try_from(*released).unwrap_or(i64::MAX),
                    &at_ms,
                ],
            )?;
        }
    }
    Ok(())
}

/// Marks the timer fired and journals its event, or does nothing (`None`)
/// if it is no longer pending: fired, skipped or cancelled before, by this
/// batch or by another daemon (which this `UPDATE` waits for).
fn fire_timer<C: GenericClient>(
    s: &mut Session<'_, C>,
    fired: &FiredTimer,
) -> Result<Option<Appended>, StoreError> {
    let claimed = s.execute(
        "UPDATE timers SET status = 'fired', closed_at_ms = $1
         WHERE id = $2 AND status = 'pending'",
        &[&fired.fired_at_ms, &fired.timer_id],
    )?;
    if claimed == 0 {
        let exists = s
            .query_opt("SELECT FROM timers WHERE id = $1", &[&fired.timer_id])?
            .is_some();
        if !exists {
            return Err(StoreError::UnknownTimer { id: fired.timer_id });
        }
        return Ok(None);
    }
    let appended = append(s, std::slice::from_ref(&fired.event))?.pop();
    if let Some(appended) = appended {
        s.execute(
            "UPDATE timers SET fired_seq = $1 WHERE id = $2",
            &[&appended.seq(), &fired.timer_id],
        )?;
    }
    Ok(appended)
}

fn skip_timer<C: GenericClient>(
    s: &mut Session<'_, C>,
    skipped: &SkippedTimer,
) -> Result<usize, StoreError> {
    let closed = s.execute(
        "UPDATE timers SET status = 'skipped', closed_at_ms = $1
         WHERE id = $2 AND status = 'pending'",
        &[&skipped.skipped_at_ms, &skipped.timer_id],
    )?;
    Ok(usize::try_from(closed).unwrap_or(usize::MAX))
}
