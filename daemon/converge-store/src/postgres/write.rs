//! The PostgreSQL write: one batch, one transaction, the steps of
//! `crate::write` in its order, safe against other daemons writing at once.
//!
//! Each step's `WHERE` is its guard against another daemon: an event is
//! marked processed only while unprocessed, a timer fired only while
//! pending, an outcome recorded only while the action is pending (and, when
//! leased, still under the caller's token). `READ COMMITTED` re-checks
//! those conditions on the latest row after waiting for a concurrent
//! writer, so the loser sees the winner's change, never a stale row.
//!
//! Set-based: every kind of row a batch writes (decisions and actions,
//! timers, cancelled expects, rule failures, emitted events, outcomes...)
//! goes in one statement over arrays (`unnest`), whatever the batch's
//! size, because a round trip costs far more than the rows. Where the
//! order of a batch's events matters (two outcomes for one action, the
//! same event journaled twice), the result is what writing them one by
//! one, as SQLite does, would leave.
//!
//! What the outbox's attempts and people's decisions change is in
//! `outbox.rs`.

use std::collections::{BTreeMap, HashSet};

use converge_model::{RuleFailure, RuleNote, Sample};
use postgres::GenericClient;
use postgres::error::SqlState;

use super::{Conn, PostgresStore, Session, outbox, sql_partition};
use crate::records::{
    ActionLease, ActionOutcome, Appended, DeadLetterChange, DeadLetterOutcome, FiredTimer,
    GateChange, NewAction, NewDecision, NewEvent, NewTimer, OpenSpan, PendingAction,
    ProcessedEvent, SkippedTimer, SourceState, TimerCancellation, WriteBatch, WriteResult,
    catch_up_name, timer_kind_columns,
};
use crate::write::{Arrival, BatchTimer, WriteSteps};
use crate::{StoreError, event_partition, partition_of};

/// The common table expressions `new_versions` and `versions`: the ids of
/// the rule versions (`rule_versions`) the rows of `$rows` (with `rule` and
/// `rule_hash` columns) name, adding those not seen before. Only a version
/// missing from the statement's snapshot is inserted, so the identity is
/// not spent on every batch; `DO UPDATE` (not `DO NOTHING`) returns a row
/// another daemon added since the snapshot, which the snapshot's read of
/// `rule_versions` cannot see.
macro_rules! rule_versions_of {
    ($rows:literal) => {
        concat!(
            "new_versions AS (
                 INSERT INTO rule_versions (rule, hash)
                 SELECT DISTINCT r.rule, r.rule_hash FROM ",
            $rows,
            " r
                 WHERE NOT EXISTS (SELECT 1 FROM rule_versions v
                                   WHERE v.rule = r.rule AND v.hash = r.rule_hash)
                 ON CONFLICT (rule, hash) DO UPDATE SET rule = excluded.rule
                 RETURNING id, rule, hash
             ), versions AS (
                 SELECT id, rule, hash FROM rule_versions
                 WHERE (rule, hash) IN (SELECT r.rule, r.rule_hash FROM ",
            $rows,
            " r)
                 UNION ALL SELECT id, rule, hash FROM new_versions
             )"
        )
    };
}

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
    let Conn {
        client, statements, ..
    } = store.conn_mut()?;
    let mut attempt = 1;
    loop {
        let mut tx = client.transaction()?;
        let written = crate::write::write(
            &mut Session {
                client: &mut tx,
                statements,
            },
            batch,
        );
        match written {
            Ok(result) => {
                tx.commit()?;
                if journaled_any(&result) {
                    // After the commit, on its own: a NOTIFY inside a
                    // transaction holds PostgreSQL's database-wide notify
                    // lock through that transaction's commit (its fsync),
                    // which would serialize every daemon's commits. Alone
                    // it writes nothing and holds the lock for a moment.
                    // A hint only: if it is lost, the daemons find the
                    // events at their next look. So its failure (the
                    // connection lost right after the commit) is not the
                    // write's: reporting it would have the caller write
                    // again what is committed.
                    if let Err(e) =
                        client.execute("SELECT pg_notify($1, '')", &[&crate::EVENTS_CHANNEL])
                    {
                        tracing::warn!(error = %StoreError::from(e), "committed, but the other daemons were not notified");
                    }
                }
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

impl<C: GenericClient> WriteSteps for Session<'_, C> {
    fn check_fences(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        check_fences(self, batch)
    }

    fn append(&mut self, events: &[&NewEvent]) -> Result<Vec<Appended>, StoreError> {
        append(self, events)
    }

    fn mark_processed(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        mark_processed(self, processed)
    }

    fn upsert_entities(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        upsert_entities(self, processed)
    }

    fn insert_decisions(&mut self, batch: &WriteBatch) -> Result<Vec<PendingAction>, StoreError> {
        let lease = new_action_lease(self, batch)?;
        insert_decisions(self, &batch.processed, lease.as_ref())
    }

    fn insert_rule_failures(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        insert_rule_failures(self, processed)
    }

    fn insert_rule_notes(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        insert_rule_notes(self, processed)
    }

    fn insert_samples(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError> {
        insert_samples(self, processed)
    }

    fn cancel_expects(&mut self, arrivals: &[Arrival<'_>]) -> Result<usize, StoreError> {
        cancel_expects(self, arrivals)
    }

    fn insert_timers(&mut self, timers: &[BatchTimer<'_>]) -> Result<(), StoreError> {
        insert_timers(self, timers)
    }

    fn record_gate_change(
        &mut self,
        seq: i64,
        at_ms: i64,
        change: &GateChange,
    ) -> Result<(), StoreError> {
        record_gate_change(self, seq, at_ms, change)
    }

    fn fire_timers(&mut self, fired: &[FiredTimer]) -> Result<Vec<Option<Appended>>, StoreError> {
        fire_timers(self, fired)
    }

    fn skip_timers(&mut self, skipped: &[SkippedTimer]) -> Result<usize, StoreError> {
        skip_timers(self, skipped)
    }

    fn record_outcomes(
        &mut self,
        outcomes: &[ActionOutcome],
        result: &mut WriteResult,
    ) -> Result<(), StoreError> {
        outbox::record_outcomes(self, outcomes, result)
    }

    fn change_dead_letter(
        &mut self,
        change: &DeadLetterChange,
    ) -> Result<DeadLetterOutcome, StoreError> {
        outbox::change_dead_letter(self, change)
    }

    fn cancel_timers(&mut self, cancellation: &TimerCancellation) -> Result<usize, StoreError> {
        cancel_timers(self, cancellation)
    }

    fn write_source_state(&mut self, states: &[SourceState]) -> Result<(), StoreError> {
        write_source_state(self, states)
    }

    fn prune(&mut self, seqs: &[i64]) -> Result<usize, StoreError> {
        super::prune::prune(self, seqs)
    }
}

/// Whether a write journaled any new event (appended, emitted, fired).
fn journaled_any(result: &WriteResult) -> bool {
    result
        .appended
        .iter()
        .chain(&result.emitted)
        .chain(result.fired.iter().flatten())
        .any(|a| matches!(a, Appended::New { .. }))
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

/// Journals each event unless its `(source, id, hook)` is there already (or
/// earlier in `events`), in one statement: new events get `seq`s in
/// `events` order. The journal is looked up before inserting, because an
/// `INSERT` that hits the unique key still takes a `seq` from the sequence
/// and would leave a gap for every duplicate. When another daemon inserts
/// the same event at the same moment, the `INSERT` waits for its commit and
/// skips the row: its `seq` comes back `NULL`, and a second look finds it.
fn append<C: GenericClient>(
    s: &mut Session<'_, C>,
    events: &[&NewEvent],
) -> Result<Vec<Appended>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&NewEvent) -> &str| events.iter().map(|e| f(e)).collect::<Vec<_>>();
    let subjects: Vec<Option<&str>> = events.iter().map(|e| e.subject.as_deref()).collect();
    let received: Vec<i64> = events.iter().map(|e| e.received_at_ms).collect();
    let stored: Vec<std::borrow::Cow<'_, str>> = events
        .iter()
        .map(|e| crate::event_body::encode(&e.json, e.columns()))
        .collect();
    let stored: Vec<&str> = stored.iter().map(|json| json.as_ref()).collect();
    let partitions: Vec<i32> = events
        .iter()
        .map(|e| sql_partition(event_partition(e.subject.as_deref(), &e.id)))
        .collect();
    let rows = s.query(
        "WITH input AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::bigint[], $7::integer[], $8::text[])
                 WITH ORDINALITY AS i (source, id, type, subject, json, received_at_ms,
                                       partition, hook, n)
         ), journaled AS (
             SELECT i.n, e.seq FROM input i
             JOIN events e ON e.id = i.id AND e.source = i.source AND e.hook = i.hook
         ), first AS (
             SELECT DISTINCT ON (id, source, hook) * FROM input
             WHERE n NOT IN (SELECT n FROM journaled)
             ORDER BY id, source, hook, n
         ), inserted AS (
             INSERT INTO events (source, id, type, subject, json, received_at_ms, partition, hook)
             SELECT source, id, type, subject, json, received_at_ms, partition, hook
             FROM first ORDER BY n
             ON CONFLICT (id, source, hook) DO NOTHING
             RETURNING seq, id, source, hook
         )
         SELECT coalesce(j.seq, ins.seq), j.seq IS NULL AND f.n = i.n
         FROM input i
         LEFT JOIN journaled j ON j.n = i.n
         LEFT JOIN inserted ins ON ins.id = i.id AND ins.source = i.source AND ins.hook = i.hook
         LEFT JOIN first f ON f.id = i.id AND f.source = i.source AND f.hook = i.hook
         ORDER BY i.n",
        &[
            &column(|e| &e.source),
            &column(|e| &e.id),
            &column(|e| &e.ty),
            &subjects,
            &stored,
            &received,
            &partitions,
            &column(NewEvent::hook_column),
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
                    "SELECT seq FROM events WHERE id = $1 AND source = $2 AND hook = $3",
                    &[&event.id, &event.source, &event.hook_column()],
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
            |row| Ok(row.try_get(0)?),
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
        latest.insert(entity.key_text(), entity);
    }
    if latest.is_empty() {
        return Ok(());
    }
    let states: Vec<String> = latest.values().map(|e| e.to_json()).collect();
    let updated: Vec<i64> = latest
        .values()
        .map(|e| e.updated_at.timestamp_millis())
        .collect();
    let open_spans: Vec<i16> = latest
        .values()
        .map(|e| OpenSpan::bits_of(e) as i16)
        .collect();
    let keys: Vec<String> = latest.into_keys().collect();
    s.execute(
        "INSERT INTO entities (key, state, updated_at_ms, open_spans)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::smallint[])
         ON CONFLICT (key) DO UPDATE
         SET state = excluded.state, updated_at_ms = excluded.updated_at_ms,
             open_spans = excluded.open_spans",
        &[&keys, &states, &updated, &open_spans],
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

/// Inserts every decision of the batch and their actions, in one
/// statement; returns the actions created, in the batch's order (its
/// events, their decisions, their actions).
///
/// The ids are taken from the sequences first and handed out in ascending
/// order (the `n`th smallest to the `n`th row), so each action knows its
/// decision's id within the statement, and ids follow the batch's order
/// whatever order PostgreSQL evaluates `nextval` in. They are looked up
/// by place in one sorted array, not joined row to row: the planner takes
/// an `unnest` for 10 rows and would join a page's thousands of decisions
/// to their ids in a nested loop, in time growing with their square.
fn insert_decisions<C: GenericClient>(
    s: &mut Session<'_, C>,
    processed: &[ProcessedEvent],
    lease: Option<&NewLease<'_>>,
) -> Result<Vec<PendingAction>, StoreError> {
    let decisions: Vec<(&ProcessedEvent, &NewDecision)> = processed
        .iter()
        .flat_map(|p| p.decisions.iter().map(move |d| (p, d)))
        .collect();
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    let event_seqs: Vec<i64> = decisions.iter().map(|(p, _)| p.seq).collect();
    let rules: Vec<&str> = decisions
        .iter()
        .map(|(_, d)| d.decision.rule.as_str())
        .collect();
    let rule_hashes: Vec<&str> = decisions
        .iter()
        .map(|(_, d)| d.decision.rule_hash.as_str())
        .collect();
    let kinds: Vec<&str> = decisions
        .iter()
        .map(|(_, d)| d.decision.kind.name())
        .collect();
    // One encoder per event: bodies share what the event's decisions share.
    let mut bodies = Vec::with_capacity(decisions.len());
    let mut event = None;
    let mut encoder = crate::decision_body::EventBodies::default();
    for (p, d) in &decisions {
        if event != Some(p.seq) {
            event = Some(p.seq);
            encoder = crate::decision_body::EventBodies::default();
        }
        bodies.push(encoder.encode(&d.decision, d.shadow));
    }
    let created_at: Vec<i64> = decisions.iter().map(|(p, _)| p.processed_at_ms).collect();
    let shadows: Vec<bool> = decisions.iter().map(|(_, d)| d.shadow).collect();
    // Each action names its decision by its 1-based place in `decisions`.
    let actions: Vec<(i64, &NewAction)> = decisions
        .iter()
        .zip(1_i64..)
        .flat_map(|((_, d), n)| d.actions.iter().map(move |a| (n, a)))
        .collect();
    let action_decisions: Vec<i64> = actions.iter().map(|(n, _)| *n).collect();
    let routes: Vec<&str> = actions.iter().map(|(_, a)| a.route.as_str()).collect();
    let plugins: Vec<&str> = actions.iter().map(|(_, a)| a.plugin.as_str()).collect();
    let payloads: Vec<&str> = actions.iter().map(|(_, a)| a.payload.as_str()).collect();
    let payload_keys: Vec<Option<&str>> = actions
        .iter()
        .map(|(_, a)| a.payload_key.as_deref())
        .collect();
    let row = s.query_one(
        concat!(
            "WITH d AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::bigint[], $7::boolean[])
                 WITH ORDINALITY AS d (event_seq, rule, rule_hash, kind, body, created_at_ms,
                                       shadow, n)
         ), ",
            rule_versions_of!("d"),
            ", d_ids AS (
             SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids
             FROM (SELECT nextval('decisions_id_seq') AS id FROM d) taken
         ), a AS (
             SELECT * FROM unnest($8::bigint[], $9::text[], $10::text[], $11::text[],
                                  $15::text[])
                 WITH ORDINALITY AS a (decision, route, plugin, payload, payload_key, n)
         ), a_ids AS (
             SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids
             FROM (SELECT nextval('actions_id_seq') AS id FROM a) taken
         ), inserted_decisions AS (
             INSERT INTO decisions (id, event_seq, rule_version, kind, body, shadow)
             OVERRIDING SYSTEM VALUE
             SELECT i.ids[d.n], d.event_seq, ver.id, d.kind, d.body, d.shadow
             FROM d CROSS JOIN d_ids i
             JOIN versions ver ON ver.rule = d.rule AND ver.hash = d.rule_hash
             ORDER BY d.n
         ), inserted_actions AS (
             INSERT INTO actions (id, decision_id, event_seq, route, plugin, payload_key,
                                  created_at_ms, lease_holder, lease_token, lease_until_ms,
                                  instance)
             OVERRIDING SYSTEM VALUE
             SELECT i.ids[a.n], di.ids[a.decision], ($1::bigint[])[a.decision], a.route,
                    a.plugin, a.payload_key, ($6::bigint[])[a.decision],
                    $12, $13, $14, (SELECT id FROM instance)
             FROM a CROSS JOIN a_ids i CROSS JOIN d_ids di
             ORDER BY a.n
         ), inserted_payloads AS (
             INSERT INTO action_payloads (action_id, payload)
             SELECT i.ids[a.n], a.payload FROM a CROSS JOIN a_ids i
         )
         SELECT (SELECT ids FROM d_ids), (SELECT ids FROM a_ids), (SELECT id FROM instance)"
        ),
        &[
            &event_seqs,
            &rules,
            &rule_hashes,
            &kinds,
            &bodies,
            &created_at,
            &shadows,
            &action_decisions,
            &routes,
            &plugins,
            &payloads,
            &lease.map(|l| l.holder),
            &lease.map(|l| l.token),
            &lease.map(|l| l.until_ms),
            &payload_keys,
        ],
    )?;
    let decision_ids: Vec<i64> = row.try_get(0)?;
    let mut action_ids = row.try_get::<_, Vec<i64>>(1)?.into_iter();
    let instance: i64 = row.try_get(2)?;
    let mut created = Vec::with_capacity(actions.len());
    for ((processed, new), decision_id) in decisions.iter().zip(decision_ids) {
        for (action, id) in new.actions.iter().zip(action_ids.by_ref()) {
            created.push(PendingAction::created(
                id,
                processed.seq,
                decision_id,
                action,
                instance,
                lease.map(|l| l.token),
            ));
        }
    }
    Ok(created)
}

fn insert_rule_failures<C: GenericClient>(
    s: &mut Session<'_, C>,
    processed: &[ProcessedEvent],
) -> Result<(), StoreError> {
    let failures: Vec<(i64, &RuleFailure)> = processed
        .iter()
        .flat_map(|p| p.rule_failures.iter().map(move |f| (p.seq, f)))
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = failures.iter().map(|(seq, _)| *seq).collect();
    let rules: Vec<&str> = failures.iter().map(|(_, f)| f.rule.as_str()).collect();
    let hashes: Vec<&str> = failures.iter().map(|(_, f)| f.rule_hash.as_str()).collect();
    let messages: Vec<&str> = failures.iter().map(|(_, f)| f.message.as_str()).collect();
    s.execute(
        "INSERT INTO rule_failures (event_seq, rule, rule_hash, message)
         SELECT event_seq, rule, rule_hash, message
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
             WITH ORDINALITY AS f (event_seq, rule, rule_hash, message, n)
         ORDER BY n",
        &[&seqs, &rules, &hashes, &messages],
    )?;
    Ok(())
}

fn insert_samples<C: GenericClient>(
    s: &mut Session<'_, C>,
    processed: &[ProcessedEvent],
) -> Result<(), StoreError> {
    let samples: Vec<(i64, &Sample)> = processed
        .iter()
        .flat_map(|p| p.samples.iter().map(move |x| (p.seq, x)))
        .collect();
    insert_sample_rows(s, &samples)
}

/// Inserts the samples of `page` and empties it.
fn insert_page<C: GenericClient>(
    s: &mut Session<'_, C>,
    page: &mut Vec<(i64, Sample)>,
) -> Result<(), StoreError> {
    let rows: Vec<(i64, &Sample)> = page.iter().map(|(seq, sample)| (*seq, sample)).collect();
    insert_sample_rows(s, &rows)?;
    page.clear();
    Ok(())
}

fn insert_sample_rows<C: GenericClient>(
    s: &mut Session<'_, C>,
    samples: &[(i64, &Sample)],
) -> Result<(), StoreError> {
    if samples.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = samples.iter().map(|(seq, _)| *seq).collect();
    let metrics: Vec<&str> = samples.iter().map(|(_, x)| x.metric.name()).collect();
    let ats: Vec<i64> = samples
        .iter()
        .map(|(_, x)| x.at.timestamp_millis())
        .collect();
    let weeks: Vec<String> = samples.iter().map(|(_, x)| x.week().to_string()).collect();
    let values: Vec<f64> = samples.iter().map(|(_, x)| x.value).collect();
    let entities: Vec<&str> = samples.iter().map(|(_, x)| x.entity.as_str()).collect();
    let campaigns: Vec<Option<&str>> = samples.iter().map(|(_, x)| x.campaign.as_deref()).collect();
    let owners: Vec<Option<&str>> = samples.iter().map(|(_, x)| x.owner.as_deref()).collect();
    let channels: Vec<Option<&str>> = samples.iter().map(|(_, x)| x.channel.as_deref()).collect();
    let stages: Vec<Option<&str>> = samples.iter().map(|(_, x)| x.stage.as_deref()).collect();
    s.execute(
        "INSERT INTO metric_samples
             (event_seq, metric, at_ms, week, value, entity, campaign, owner, channel, stage)
         SELECT event_seq, metric, at_ms, week, value, entity, campaign, owner, channel, stage
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::float8[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
             WITH ORDINALITY AS x (event_seq, metric, at_ms, week, value, entity,
                                   campaign, owner, channel, stage, k)
         ORDER BY k",
        &[
            &seqs, &metrics, &ats, &weeks, &values, &entities, &campaigns, &owners, &channels,
            &stages,
        ],
    )?;
    Ok(())
}

fn insert_rule_notes<C: GenericClient>(
    s: &mut Session<'_, C>,
    processed: &[ProcessedEvent],
) -> Result<(), StoreError> {
    let notes: Vec<(i64, &RuleNote)> = processed
        .iter()
        .flat_map(|p| p.rule_notes.iter().map(move |n| (p.seq, n)))
        .collect();
    if notes.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = notes.iter().map(|(seq, _)| *seq).collect();
    let rules: Vec<&str> = notes.iter().map(|(_, n)| n.rule.as_str()).collect();
    let messages: Vec<&str> = notes.iter().map(|(_, n)| n.message.as_str()).collect();
    s.execute(
        "INSERT INTO rule_notes (event_seq, rule, message)
         SELECT event_seq, rule, message
         FROM unnest($1::bigint[], $2::text[], $3::text[])
             WITH ORDINALITY AS n (event_seq, rule, message, k)
         ORDER BY k",
        &[&seqs, &rules, &messages],
    )?;
    Ok(())
}

/// Cancels the pending expects, created before this batch, that the
/// batch's events arrive for, in one statement; returns how many. Each is
/// closed at the processing time of the first event in the batch that
/// cancels it.
fn cancel_expects<C: GenericClient>(
    s: &mut Session<'_, C>,
    arrivals: &[Arrival<'_>],
) -> Result<usize, StoreError> {
    if arrivals.is_empty() {
        return Ok(0);
    }
    let entities: Vec<&str> = arrivals.iter().map(|a| a.arrival.entity.as_str()).collect();
    let types: Vec<&str> = arrivals
        .iter()
        .map(|a| a.arrival.event_type.as_str())
        .collect();
    let at: Vec<i64> = arrivals.iter().map(|a| a.at_ms).collect();
    let reasons: Vec<String> = arrivals.iter().map(|a| a.arrival.reason()).collect();
    let cancelled = s.execute(
        "UPDATE timers t SET status = 'cancelled', closed_at_ms = a.at_ms,
                             cancel_reason = a.reason
         FROM (SELECT DISTINCT ON (entity, event_type) entity, event_type, at_ms, reason
               FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
                   WITH ORDINALITY AS a (entity, event_type, at_ms, reason, n)
               ORDER BY entity, event_type, n) a
         WHERE t.entity = a.entity AND t.status = 'pending' AND t.expect_type = a.event_type",
        &[&entities, &types, &at, &reasons],
    )?;
    Ok(usize::try_from(cancelled).unwrap_or(usize::MAX))
}

/// Creates every timer of the batch, in one statement, with ids in the
/// batch's order.
fn insert_timers<C: GenericClient>(
    s: &mut Session<'_, C>,
    batch_timers: &[BatchTimer<'_>],
) -> Result<(), StoreError> {
    if batch_timers.is_empty() {
        return Ok(());
    }
    let closed_at: Vec<Option<i64>> = batch_timers.iter().map(BatchTimer::closed_at_ms).collect();
    let reasons: Vec<Option<String>> = batch_timers.iter().map(BatchTimer::cancel_reason).collect();
    let statuses: Vec<&str> = batch_timers.iter().map(|t| t.status().name()).collect();
    let timers: Vec<&NewTimer> = batch_timers.iter().map(|t| t.timer).collect();
    let entities: Vec<&str> = timers.iter().map(|t| t.entity.as_str()).collect();
    let (kinds, expect_types): (Vec<&str>, Vec<Option<&str>>) =
        timers.iter().map(|t| timer_kind_columns(&t.kind)).unzip();
    let event_types: Vec<&str> = timers.iter().map(|t| t.event_type.as_str()).collect();
    let data = timers
        .iter()
        .map(|t| serde_json::to_string(&t.data))
        .collect::<Result<Vec<_>, _>>()?;
    let due: Vec<i64> = timers.iter().map(|t| t.due_at_ms).collect();
    let catch_ups: Vec<&str> = timers.iter().map(|t| catch_up_name(t.catch_up)).collect();
    let rules: Vec<&str> = timers.iter().map(|t| t.rule.as_str()).collect();
    let hashes: Vec<&str> = timers.iter().map(|t| t.rule_hash.as_str()).collect();
    let created_by: Vec<i64> = batch_timers.iter().map(|t| t.created_by_seq).collect();
    let partitions: Vec<i32> = timers
        .iter()
        .map(|t| sql_partition(partition_of(&t.entity)))
        .collect();
    s.execute(
        concat!(
            "WITH t AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::bigint[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                                  $11::integer[], $12::text[], $13::bigint[], $14::text[])
                 WITH ORDINALITY AS t (entity, kind, event_type, data, expect_type, due_at_ms,
                                       catch_up, rule, rule_hash, created_by_seq, partition,
                                       status, closed_at_ms, cancel_reason, n)
         ), ",
            rule_versions_of!("t"),
            ", ids AS (
             SELECT array_agg(id ORDER BY id) AS ids
             FROM (SELECT nextval('timers_id_seq') AS id FROM t) taken
         )
         INSERT INTO timers (id, entity, kind, event_type, data, expect_type, due_at_ms,
                             catch_up, rule_version, created_by_seq, partition, status,
                             closed_at_ms, cancel_reason)
         OVERRIDING SYSTEM VALUE
         SELECT ids.ids[t.n], t.entity, t.kind, t.event_type, t.data, t.expect_type,
                t.due_at_ms, t.catch_up, ver.id, t.created_by_seq, t.partition, t.status,
                t.closed_at_ms, t.cancel_reason
         FROM t CROSS JOIN ids
         JOIN versions ver ON ver.rule = t.rule AND ver.hash = t.rule_hash
         ORDER BY t.n"
        ),
        &[
            &entities,
            &kinds,
            &event_types,
            &data,
            &expect_types,
            &due,
            &catch_ups,
            &rules,
            &hashes,
            &created_by,
            &partitions,
            &statuses,
            &closed_at,
            &reasons,
        ],
    )?;
    Ok(())
}

/// Gate changes are rare (a few per campaign send), and each depends on
/// the ones before it (a release frees what earlier holds held), so they
/// stay one statement each, in the batch's order.
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

/// Fires the batch's timers: marks each fired and journals its event, or
/// does nothing (`None`) if it is no longer pending (fired, skipped or
/// cancelled before, by this batch or by another daemon, which the
/// `UPDATE` waits for). A timer named twice fires at its first mention.
/// Three statements, whatever the number of timers.
fn fire_timers<C: GenericClient>(
    s: &mut Session<'_, C>,
    fired: &[FiredTimer],
) -> Result<Vec<Option<Appended>>, StoreError> {
    if fired.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = fired.iter().map(|f| f.timer_id).collect();
    let at: Vec<i64> = fired.iter().map(|f| f.fired_at_ms).collect();
    let claimed: HashSet<i64> = s
        .rows(
            "UPDATE timers t SET status = 'fired', closed_at_ms = f.at_ms
             FROM (SELECT DISTINCT ON (id) id, at_ms
                   FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS f (id, at_ms, n)
                   ORDER BY id, n) f
             WHERE t.id = f.id AND t.status = 'pending'
             RETURNING t.id",
            &[&ids, &at],
            |row| Ok(row.try_get(0)?),
        )?
        .into_iter()
        .collect();
    if claimed.len() < fired.len() {
        let unclaimed: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !claimed.contains(id))
            .collect();
        let known: HashSet<i64> = s
            .rows(
                "SELECT id FROM timers WHERE id = ANY($1)",
                &[&unclaimed],
                |row| Ok(row.try_get(0)?),
            )?
            .into_iter()
            .collect();
        if let Some(&id) = unclaimed.iter().find(|id| !known.contains(id)) {
            return Err(StoreError::UnknownTimer { id });
        }
    }
    let mut firing = HashSet::new();
    let firsts: Vec<bool> = ids
        .iter()
        .map(|id| claimed.contains(id) && firing.insert(*id))
        .collect();
    let events: Vec<&NewEvent> = fired
        .iter()
        .zip(&firsts)
        .filter(|(_, first)| **first)
        .map(|(f, _)| &f.event)
        .collect();
    let mut appended = append(s, &events)?.into_iter();
    let result: Vec<Option<Appended>> = firsts
        .iter()
        .map(|first| if *first { appended.next() } else { None })
        .collect();
    let (fired_ids, seqs): (Vec<i64>, Vec<i64>) = ids
        .iter()
        .zip(&result)
        .filter_map(|(id, appended)| Some((*id, appended.as_ref()?.seq())))
        .unzip();
    if !fired_ids.is_empty() {
        s.execute(
            "UPDATE timers t SET fired_seq = f.seq
             FROM unnest($1::bigint[], $2::bigint[]) AS f (id, seq)
             WHERE t.id = f.id",
            &[&fired_ids, &seqs],
        )?;
    }
    Ok(result)
}

/// Closes the pending ones among these timers without firing them, in one
/// statement; returns how many.
fn skip_timers<C: GenericClient>(
    s: &mut Session<'_, C>,
    skipped: &[SkippedTimer],
) -> Result<usize, StoreError> {
    if skipped.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = skipped.iter().map(|t| t.timer_id).collect();
    let at: Vec<i64> = skipped.iter().map(|t| t.skipped_at_ms).collect();
    let closed = s.execute(
        "UPDATE timers t SET status = 'skipped', closed_at_ms = k.at_ms
         FROM (SELECT DISTINCT ON (id) id, at_ms
               FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS k (id, at_ms, n)
               ORDER BY id, n) k
         WHERE t.id = k.id AND t.status = 'pending'",
        &[&ids, &at],
    )?;
    Ok(usize::try_from(closed).unwrap_or(usize::MAX))
}

/// Cancels the pending timers a person named, the soonest due first; only
/// pending ones (checked again on each row: a partition's holder may fire
/// one meanwhile).
fn cancel_timers<C: GenericClient>(
    s: &mut Session<'_, C>,
    cancel: &TimerCancellation,
) -> Result<usize, StoreError> {
    let limit = i64::try_from(cancel.limit).unwrap_or(i64::MAX);
    let cancelled = s.execute(
        "UPDATE timers SET status = 'cancelled', closed_at_ms = $1,
                           cancelled_by = $2, cancel_reason = $3
         WHERE status = 'pending' AND id IN (
             SELECT t.id FROM timers t
             WHERE t.status = 'pending'
               AND t.rule_version IN (SELECT id FROM rule_versions
                                      WHERE rule = $4 AND ($5::text IS NULL OR hash = $5))
               AND ($6::text IS NULL OR t.entity = $6)
             ORDER BY t.due_at_ms, t.id LIMIT $7)",
        &[
            &cancel.at_ms,
            &cancel.by,
            &cancel.reason,
            &cancel.rule,
            &cancel.version,
            &cancel.entity,
            &limit,
        ],
    )?;
    Ok(usize::try_from(cancelled).unwrap_or(usize::MAX))
}

/// Writes the sources' values in one statement, the last of each key
/// winning (an `ON CONFLICT` statement may not touch a row twice).
fn write_source_state<C: GenericClient>(
    s: &mut Session<'_, C>,
    states: &[SourceState],
) -> Result<(), StoreError> {
    if states.is_empty() {
        return Ok(());
    }
    let mut last = BTreeMap::new();
    for state in states {
        last.insert(state.key.as_str(), state);
    }
    let keys: Vec<&str> = last.keys().copied().collect();
    let values: Vec<&str> = last.values().map(|s| s.value.as_str()).collect();
    let at: Vec<i64> = last.values().map(|s| s.updated_at_ms).collect();
    s.execute(
        "INSERT INTO source_state (key, value, updated_at_ms)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
         ON CONFLICT (key) DO UPDATE
         SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
        &[&keys, &values, &at],
    )?;
    Ok(())
}

/// Every sample replaced, and the given entities' states, in one transaction.
pub(super) fn replace_samples(
    store: &mut PostgresStore,
    samples: &mut dyn Iterator<Item = Result<(i64, Vec<Sample>), StoreError>>,
    entities: &[converge_model::EntityState],
) -> Result<(), StoreError> {
    let Conn {
        client, statements, ..
    } = store.conn_mut()?;
    let mut tx = client.transaction()?;
    {
        let mut s = Session {
            client: &mut tx,
            statements,
        };
        s.execute("DELETE FROM metric_samples", &[])?;
        // Inserted 10,000 at a time as they are read.
        let mut page: Vec<(i64, Sample)> = Vec::new();
        for event in samples {
            let (seq, samples) = event?;
            page.extend(samples.into_iter().map(|sample| (seq, sample)));
            if page.len() >= 10_000 {
                insert_page(&mut s, &mut page)?;
            }
        }
        insert_page(&mut s, &mut page)?;
        for entity in entities {
            let key = entity.key_text();
            let state = entity.to_json();
            let open_spans = OpenSpan::bits_of(entity) as i16;
            s.execute(
                "UPDATE entities SET state = $1, open_spans = $2 WHERE key = $3",
                &[&state, &open_spans, &key],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}
