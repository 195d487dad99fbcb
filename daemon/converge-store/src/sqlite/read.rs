//! The SQLite [`Backend`]: queries (writes are in `write.rs`). They read the last committed snapshot, so readers on other
//! connections never see half a batch and never block the writer.

use converge_model::{EntityKey, EntityState, MetricShape, RuleFailure, RuleNote};
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, params};
use serde::de::DeserializeOwned;

use super::SqliteStore;
use super::schema::{ACTIONS_DEAD_LETTERED, ACTIONS_DONE, INSTANCE, PROCESSED_CURSOR};
use crate::records::{
    ActionDetail, ActionHistoryRecord, ActionRecord, Counts, DecisionRecord, EventTrail,
    GateOverrideRecord, GateRecord, HeldSendRecord, JournaledEvent, PayloadJson, PendingAction,
    RecentRuleFailure, RetryingAction, RuleActivity, RuleTimers, TimerRecord, parse_stored,
};
use crate::{
    Backend, Check, OpenSpan, SampleGroup, SampleQuery, StoreError, WriteBatch, WriteResult,
    merge_rule_activity, order_groups,
};
use std::collections::HashMap;

impl SqliteStore {
    /// The entity states `sql` selects (`state` after key `?1`, at most `?2`).
    fn states_after(
        &self,
        sql: &str,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<EntityState>, StoreError> {
        let after = after.map(EntityKey::to_string).unwrap_or_default();
        let states = self
            .conn
            .prepare_cached(sql)?
            .query_map(params![after, sql_limit(limit)], |row| {
                row.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(states
            .iter()
            .map(|s| serde_json::from_str(s))
            .collect::<Result<_, _>>()?)
    }
}

/// A `limit` as SQLite takes it; anything past `i64::MAX` is no limit anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Backend for SqliteStore {
    fn instance(&self) -> Result<i64, StoreError> {
        self.meta(INSTANCE)
    }

    fn new_instance(&mut self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "UPDATE meta SET value = random() WHERE key = ?1 RETURNING value",
            [INSTANCE],
            |row| row.get(0),
        )?)
    }

    fn coherence(&self) -> Result<Vec<Check>, StoreError> {
        super::integrity::coherence(&self.conn)
    }

    fn processed_cursor(&self) -> Result<i64, StoreError> {
        self.meta(PROCESSED_CURSOR)
    }

    fn journal_head(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM events")?
            .query_row([], |row| row.get(0))?)
    }

    fn prunable(
        &self,
        after_seq: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<crate::PrunePage, StoreError> {
        super::prune::prunable(&self.conn, after_seq, before_ms, limit)
    }

    fn events_after(&self, seq: i64, limit: usize) -> Result<Vec<JournaledEvent>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, json, received_at_ms, id, type, source, subject, hook
             FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let events = stmt
            .query_map(params![seq, sql_limit(limit)], |row| {
                Ok(JournaledEvent {
                    seq: row.get(0)?,
                    json: event_json(row, 1, 3, 7)?,
                    received_at_ms: row.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(events)
    }

    fn entity(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError> {
        let state: Option<String> = self
            .conn
            .prepare_cached("SELECT state FROM entities WHERE key = ?1")?
            .query_row(params![key.to_string()], |row| row.get(0))
            .optional()?;
        Ok(state.map(|s| serde_json::from_str(&s)).transpose()?)
    }

    fn entities(&self, keys: &[EntityKey]) -> Result<Vec<EntityState>, StoreError> {
        // A local file: one indexed lookup per key costs no round trip.
        let mut states = Vec::new();
        for key in keys {
            states.extend(self.entity(key)?);
        }
        Ok(states)
    }

    fn entities_after(
        &self,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<EntityState>, StoreError> {
        self.states_after(
            "SELECT state FROM entities WHERE key > ?1 ORDER BY key LIMIT ?2",
            after,
            limit,
        )
    }

    fn entities_with_open(
        &self,
        span: OpenSpan,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<EntityState>, StoreError> {
        // Literal conditions (`OpenSpan::bit`), so SQLite picks the partial
        // index they define.
        let sql = match span {
            OpenSpan::Blocked => {
                "SELECT state FROM entities INDEXED BY entities_blocked
                 WHERE open_spans & 1 AND key > ?1 ORDER BY key LIMIT ?2"
            }
            OpenSpan::Escalated => {
                "SELECT state FROM entities INDEXED BY entities_escalated
                 WHERE open_spans & 2 AND key > ?1 ORDER BY key LIMIT ?2"
            }
        };
        self.states_after(sql, after, limit)
    }

    fn pending_actions(&self, limit: usize) -> Result<Vec<PendingAction>, StoreError> {
        self.pending_actions_after(0, limit)
    }

    fn pending_actions_after(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<PendingAction>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.id, a.event_seq, a.decision_id, a.route, a.plugin,
                    coalesce(p.payload, ''), a.attempts,
                    a.next_attempt_at_ms, a.instance
             FROM actions a INDEXED BY actions_pending
             LEFT JOIN action_payloads p ON p.action_id = a.id
             WHERE a.status = 'pending' AND a.id > ?1
             ORDER BY a.id LIMIT ?2",
        )?;
        let actions = stmt
            .query_map(params![after_id, sql_limit(limit)], |row| {
                Ok(PendingAction {
                    lease_token: None,
                    id: row.get(0)?,
                    event_seq: row.get(1)?,
                    decision_id: row.get(2)?,
                    route: row.get(3)?,
                    plugin: row.get(4)?,
                    payload: PayloadJson::stored(row.get(5)?),
                    attempts: row.get(6)?,
                    next_attempt_at_ms: row.get(7)?,
                    instance: row.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(actions)
    }

    fn event_trail(&self, source: &str, id: &str) -> Result<Option<EventTrail>, StoreError> {
        // One read transaction, so the trail is one consistent snapshot.
        let snapshot = self.conn.unchecked_transaction()?;
        let head = snapshot
            .prepare_cached(
                "SELECT seq, source, id, type, subject, received_at_ms, processed_at_ms, hook
                 FROM events WHERE id = ?1 AND source = ?2 ORDER BY seq LIMIT 1",
            )?
            .query_row(params![id, source], trail_head)
            .optional()?;
        let trail = head.map(|trail| self.complete_trail(trail)).transpose()?;
        snapshot.finish()?;
        Ok(trail)
    }

    fn find_event_trail(&self, id: &str) -> Result<Vec<EventTrail>, StoreError> {
        let snapshot = self.conn.unchecked_transaction()?;
        let heads = snapshot
            .prepare_cached(
                "SELECT seq, source, id, type, subject, received_at_ms, processed_at_ms, hook
                 FROM events WHERE id = ?1 ORDER BY seq",
            )?
            .query_map(params![id], trail_head)?
            .collect::<Result<Vec<_>, _>>()?;
        let trails = heads
            .into_iter()
            .map(|trail| self.complete_trail(trail))
            .collect::<Result<_, _>>()?;
        snapshot.finish()?;
        Ok(trails)
    }

    fn trails_after(&self, after_seq: i64, limit: usize) -> Result<Vec<EventTrail>, StoreError> {
        let snapshot = self.conn.unchecked_transaction()?;
        let heads = snapshot
            .prepare_cached(
                "SELECT seq, source, id, type, subject, received_at_ms, processed_at_ms, hook
                 FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![after_seq, sql_limit(limit)], trail_head)?
            .collect::<Result<Vec<_>, _>>()?;
        let trails = heads
            .into_iter()
            .map(|trail| self.complete_trail(trail))
            .collect::<Result<_, _>>()?;
        snapshot.finish()?;
        Ok(trails)
    }

    fn subject_trails(
        &self,
        subject: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<EventTrail>, StoreError> {
        let snapshot = self.conn.unchecked_transaction()?;
        let heads = snapshot
            .prepare_cached(SUBJECT_TRAIL_HEADS)?
            .query_map(params![subject, after_seq, sql_limit(limit)], trail_head)?
            .collect::<Result<Vec<_>, _>>()?;
        let trails = heads
            .into_iter()
            .map(|trail| self.complete_trail(trail))
            .collect::<Result<_, _>>()?;
        snapshot.finish()?;
        Ok(trails)
    }

    fn recent_rule_failures(&self, limit: usize) -> Result<Vec<RecentRuleFailure>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(RECENT_RULE_FAILURES)?
            .query_map(params![sql_limit(limit)], |row| {
                Ok(RecentRuleFailure {
                    event_seq: row.get(0)?,
                    event_id: row.get(1)?,
                    event_source: row.get(2)?,
                    event_type: row.get(3)?,
                    subject: row.get(4)?,
                    received_at_ms: row.get(5)?,
                    rule: row.get(6)?,
                    message: row.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn rule_activity(&self, since_ms: i64) -> Result<Vec<RuleActivity>, StoreError> {
        let snapshot = self.conn.unchecked_transaction()?;
        let after_seq: i64 = self
            .conn
            .prepare_cached(LAST_SEQ_BEFORE)?
            .query_row(params![since_ms], |row| row.get(0))
            .optional()?
            .unwrap_or(0);
        let decisions = self
            .conn
            .prepare_cached(DECISIONS_AFTER)?
            .query_map(params![after_seq], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let failures = self
            .conn
            .prepare_cached(FAILURES_AFTER)?
            .query_map(params![after_seq], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        snapshot.finish()?;
        Ok(merge_rule_activity(decisions, failures))
    }

    fn due_timers(
        &self,
        due_by_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        let (after_due, after_id) = after.unwrap_or((i64::MIN, i64::MIN));
        let rows = self
            .conn
            .prepare_cached(&format!(
                "SELECT {TIMER_COLUMNS} FROM timers INDEXED BY timers_due
                 WHERE status = 'pending' AND due_at_ms <= ?1
                   AND due_at_ms >= ?2 AND (due_at_ms > ?2 OR id > ?3)
                 ORDER BY due_at_ms, id LIMIT ?4"
            ))?
            .query_map(
                params![due_by_ms, after_due, after_id, sql_limit(limit)],
                timer_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(TimerRow::into_record).collect()
    }

    fn next_timer_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT min(due_at_ms) FROM timers INDEXED BY timers_due WHERE status = 'pending'",
            )?
            .query_row([], |row| row.get(0))?)
    }

    fn pending_timer_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM timers INDEXED BY timers_due WHERE status = 'pending'",
            )?
            .query_row([], |row| row.get(0))?)
    }

    fn pending_timers_by_rule(&self, limit: usize) -> Result<Vec<RuleTimers>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT v.rule, v.hash, count(*)
                 FROM (SELECT rule_version FROM timers INDEXED BY timers_due
                       WHERE status = 'pending' ORDER BY due_at_ms, id LIMIT ?1) t
                 JOIN rule_versions v ON v.id = t.rule_version
                 GROUP BY v.rule, v.hash ORDER BY v.rule, v.hash",
            )?
            .query_map(params![sql_limit(limit)], |row| {
                Ok(RuleTimers {
                    rule: row.get(0)?,
                    rule_hash: row.get(1)?,
                    pending: row.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn entity_timers(
        &self,
        entity: &EntityKey,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        let rows = self
            .conn
            .prepare_cached(&format!(
                "SELECT {TIMER_COLUMNS} FROM timers INDEXED BY timers_by_creator
                 WHERE created_by_seq IN (SELECT seq FROM events WHERE subject = ?1)
                   AND entity = ?1 AND (?2 = 0 OR status = 'pending')
                 ORDER BY id DESC LIMIT ?3"
            ))?
            .query_map(
                params![entity.to_string(), pending_only, sql_limit(limit)],
                timer_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(TimerRow::into_record).collect()
    }

    fn soonest_pending_timer(&self, entity: &EntityKey) -> Result<Option<TimerRecord>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {TIMER_COLUMNS} FROM timers INDEXED BY timers_by_creator
                 WHERE created_by_seq IN (SELECT seq FROM events WHERE subject = ?1)
                   AND entity = ?1 AND status = 'pending'
                 ORDER BY due_at_ms, id LIMIT 1"
            ))?
            .query_row(params![entity.to_string()], timer_row)
            .optional()?
            .map(TimerRow::into_record)
            .transpose()
    }

    fn open_held_sends(&self) -> Result<Vec<HeldSendRecord>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {HELD_COLUMNS} FROM held_sends h INDEXED BY held_sends_open
                 JOIN events e ON e.seq = h.event_seq
                 WHERE h.status = 'held' ORDER BY h.id"
            ))?
            .query_map([], held_send_row)?
            .collect::<Result<_, _>>()?)
    }

    fn gate(&self, campaign: &EntityKey, limit: usize) -> Result<GateRecord, StoreError> {
        let snapshot = self.conn.unchecked_transaction()?;
        let campaign = campaign.to_string();
        let held_sends = self
            .conn
            .prepare_cached(&format!(
                "SELECT {HELD_COLUMNS} FROM held_sends h INDEXED BY held_sends_by_campaign
                 JOIN events e ON e.seq = h.event_seq
                 WHERE h.campaign = ?1 ORDER BY h.id DESC LIMIT ?2"
            ))?
            .query_map(params![campaign, sql_limit(limit)], held_send_row)?
            .collect::<Result<_, _>>()?;
        let overrides = self.gate_overrides(&campaign, limit)?;
        snapshot.finish()?;
        Ok(GateRecord {
            held_sends,
            overrides,
        })
    }

    fn gate_overrides(
        &self,
        campaign: &str,
        limit: usize,
    ) -> Result<Vec<GateOverrideRecord>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, campaign, channel, by, reason, event_seq, released, at_ms
                 FROM gate_overrides WHERE campaign = ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![campaign, sql_limit(limit)], |row| {
                Ok(GateOverrideRecord {
                    id: row.get(0)?,
                    campaign: row.get(1)?,
                    channel: row.get(2)?,
                    by: row.get(3)?,
                    reason: row.get(4)?,
                    event_seq: row.get(5)?,
                    released: row.get(6)?,
                    at_ms: row.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn sample_groups(&self, query: &SampleQuery) -> Result<Vec<SampleGroup>, StoreError> {
        let duration = query.metric.shape() == MetricShape::Duration;
        let range = params![query.metric.name(), query.since_ms, query.until_ms];
        if query.by.is_none() && !duration {
            let (samples, total): (i64, f64) = self
                .conn
                .prepare_cached(
                    "SELECT count(*), total(value) FROM metric_samples
                     WHERE metric = ?1 AND at_ms >= ?2 AND at_ms < ?3",
                )?
                .query_row(range, |row| Ok((row.get(0)?, row.get(1)?)))?;
            return Ok(if samples == 0 {
                Vec::new()
            } else {
                vec![SampleGroup {
                    slice: None,
                    samples,
                    total,
                    values: Vec::new(),
                }]
            });
        }
        // Grouped here rather than by SQL: SQLite would sort every row of
        // the range for GROUP BY or ORDER BY, which costs three times the
        // scan. The slice is a parameter, so one statement serves them all.
        let mut statement = self.conn.prepare_cached(
            "SELECT CASE ?4 WHEN 'owner' THEN owner WHEN 'campaign' THEN campaign
                        WHEN 'channel' THEN channel WHEN 'stage' THEN stage
                        WHEN 'week' THEN week END,
                    value
             FROM metric_samples
             WHERE metric = ?1 AND at_ms >= ?2 AND at_ms < ?3",
        )?;
        let by = query.by.map_or("", |slice| slice.name());
        let mut rows = statement.query(params![
            query.metric.name(),
            query.since_ms,
            query.until_ms,
            by
        ])?;
        let mut unsliced: Option<SampleGroup> = None;
        let mut sliced: HashMap<String, SampleGroup> = HashMap::new();
        while let Some(row) = rows.next()? {
            let value: f64 = row.get(1)?;
            let slice = row
                .get_ref(0)?
                .as_str_or_null()
                .map_err(rusqlite::Error::from)?;
            let group = match slice {
                None => unsliced.get_or_insert_with(SampleGroup::default),
                Some(slice) => match sliced.get_mut(slice) {
                    Some(group) => group,
                    None => sliced
                        .entry(slice.to_string())
                        .or_insert_with(|| SampleGroup {
                            slice: Some(slice.to_string()),
                            ..SampleGroup::default()
                        }),
                },
            };
            group.samples += 1;
            group.total += value;
            if duration {
                group.values.push(value);
            }
        }
        let mut groups: Vec<SampleGroup> = sliced.into_values().chain(unsliced).collect();
        for group in &mut groups {
            group.values.sort_unstable_by(f64::total_cmp);
        }
        order_groups(&mut groups);
        Ok(groups)
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        let snapshot = self.conn.unchecked_transaction()?;
        let cursor = self.processed_cursor()?;
        let one = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<i64, StoreError> {
            Ok(self
                .conn
                .prepare_cached(sql)?
                .query_row(params, |row| row.get(0))?)
        };
        let counts = Counts {
            // The largest seq or id counts what was ever journaled or
            // decided, pruned rows included.
            events: one("SELECT coalesce(max(seq), 0) FROM events", &[])?,
            unprocessed_events: one("SELECT count(*) FROM events WHERE seq > ?1", &[&cursor])?,
            decisions: one("SELECT coalesce(max(id), 0) FROM decisions", &[])?,
            actions_pending: one(
                "SELECT count(*) FROM actions INDEXED BY actions_pending WHERE status = 'pending'",
                &[],
            )?,
            actions_done: self.meta(ACTIONS_DONE)?,
            actions_dead_lettered: self.meta(ACTIONS_DEAD_LETTERED)?,
            dead_letters: self.dead_letter_count()?,
        };
        snapshot.finish()?;
        Ok(counts)
    }

    fn dead_letters(&self, after_id: i64, limit: usize) -> Result<Vec<ActionDetail>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {ACTION_COLUMNS}, {ACTION_ORIGIN_COLUMNS}
                 FROM actions a INDEXED BY actions_dead_letter
                 JOIN events e ON e.seq = a.event_seq
                 JOIN decisions d ON d.id = a.decision_id
                 WHERE a.status = 'dead_letter' AND a.id > ?1
                 ORDER BY a.id LIMIT ?2"
            ))?
            .query_map(params![after_id, sql_limit(limit)], action_detail_row)?
            .collect::<Result<_, _>>()?)
    }

    fn retrying_actions(&self, limit: usize) -> Result<Vec<RetryingAction>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {ACTION_COLUMNS}, {ACTION_ORIGIN_COLUMNS}, ({FAILING_SINCE})
                 FROM actions a INDEXED BY actions_pending
                 JOIN events e ON e.seq = a.event_seq
                 JOIN decisions d ON d.id = a.decision_id
                 WHERE a.status = 'pending' AND a.attempts > 0
                 ORDER BY a.next_attempt_at_ms, a.id LIMIT ?1"
            ))?
            .query_map(params![sql_limit(limit)], |row| {
                Ok(RetryingAction {
                    detail: action_detail_row(row)?,
                    failing_since_ms: row.get(19)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn dead_letter_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM actions INDEXED BY actions_dead_letter
                 WHERE status = 'dead_letter'",
            )?
            .query_row([], |row| row.get(0))?)
    }

    fn action(&self, id: i64) -> Result<Option<ActionDetail>, StoreError> {
        let snapshot = self.conn.unchecked_transaction()?;
        let detail = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ACTION_COLUMNS}, {ACTION_ORIGIN_COLUMNS}
                 FROM actions a
                 JOIN events e ON e.seq = a.event_seq
                 JOIN decisions d ON d.id = a.decision_id
                 WHERE a.id = ?1"
            ))?
            .query_row(params![id], action_detail_row)
            .optional()?;
        let detail = match detail {
            Some(mut detail) => {
                detail.action.history = self.action_history(id)?;
                Some(detail)
            }
            None => None,
        };
        snapshot.finish()?;
        Ok(detail)
    }

    fn write(&mut self, batch: &WriteBatch) -> Result<WriteResult, StoreError> {
        self.write_batch(batch)
    }

    fn truncate_wal(&mut self) -> Result<(), StoreError> {
        // The answer row says whether readers kept the checkpoint from
        // finishing; either way the next one carries on.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn replace_samples(
        &mut self,
        samples: &mut dyn Iterator<Item = Result<(i64, Vec<converge_model::Sample>), StoreError>>,
        entities: &[EntityState],
    ) -> Result<(), StoreError> {
        super::write::replace_samples(&mut self.conn, samples, entities)
    }

    fn source_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM source_state WHERE key = ?1")?
            .query_row(params![key], |row| row.get(0))
            .optional()?)
    }

    fn last_occurrence_id(&self, source: &str, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id FROM events WHERE id >= ?1 || '@' AND id < ?1 || 'A' AND source = ?2
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![name, source], |row| row.get(0))
            .optional()?)
    }
}

impl SqliteStore {
    fn meta(&self, key: &str) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row(params![key], |row| row.get(0))?)
    }

    /// Adds the decisions, actions and rule failures of the event to its head.
    fn complete_trail(&self, mut trail: EventTrail) -> Result<EventTrail, StoreError> {
        let decisions = self
            .conn
            .prepare_cached(
                "SELECT d.id, v.rule, v.hash, d.kind, d.body, d.shadow
                 FROM decisions d JOIN rule_versions v ON v.id = d.rule_version
                 WHERE d.event_seq = ?1 ORDER BY d.id",
            )?
            .query_map(params![trail.seq], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, bool>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut actions_of = self.conn.prepare_cached(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions a WHERE a.decision_id = ?1 ORDER BY a.id"
        ))?;
        let mut read = crate::decision_body::EventDecisions::default();
        for (id, rule, rule_hash, kind, body, shadow) in decisions {
            let decision = read.decode(rule, rule_hash, &kind, shadow, &body)?;
            let mut actions: Vec<ActionRecord> = actions_of
                .query_map(params![id], action_row)?
                .collect::<Result<_, _>>()?;
            for action in &mut actions {
                action.history = self.action_history(action.id)?;
            }
            trail.decisions.push(DecisionRecord {
                id,
                decision,
                shadow,
                actions,
            });
        }
        trail.rule_notes = self
            .conn
            .prepare_cached(
                "SELECT rule, message FROM rule_notes WHERE event_seq = ?1 ORDER BY id",
            )?
            .query_map(params![trail.seq], |row| {
                Ok(RuleNote {
                    rule: row.get(0)?,
                    message: row.get(1)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        trail.rule_failures = self
            .conn
            .prepare_cached(
                "SELECT rule, rule_hash, message FROM rule_failures
                 WHERE event_seq = ?1 ORDER BY id",
            )?
            .query_map(params![trail.seq], |row| {
                Ok(RuleFailure {
                    rule: row.get(0)?,
                    rule_hash: row.get(1)?,
                    message: row.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(trail)
    }

    /// An action's history, oldest first.
    fn action_history(&self, action_id: i64) -> Result<Vec<ActionHistoryRecord>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT at_ms, kind, attempts, detail, by, reason FROM action_history
                 WHERE action_id = ?1 ORDER BY id",
            )?
            .query_map(params![action_id], |row| {
                Ok(ActionHistoryRecord {
                    at_ms: row.get(0)?,
                    kind: stored(row, 1, "action_history.kind")?,
                    attempts: row.get(2)?,
                    detail: row.get(3)?,
                    by: row.get(4)?,
                    reason: row.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }
}

const ACTION_COLUMNS: &str = "a.id, a.route, a.plugin, a.status, a.attempts, a.detail, \
     a.external_id, a.next_attempt_at_ms, a.finished_at_ms, \
     a.payload_key, a.instance";

fn action_row(row: &Row<'_>) -> rusqlite::Result<ActionRecord> {
    Ok(ActionRecord {
        id: row.get(0)?,
        route: row.get(1)?,
        plugin: row.get(2)?,
        status: stored(row, 3, "actions.status")?,
        attempts: row.get(4)?,
        detail: row.get(5)?,
        external_id: row.get(6)?,
        next_attempt_at_ms: row.get(7)?,
        finished_at_ms: row.get(8)?,
        payload_key: row.get(9)?,
        instance: row.get(10)?,
        history: Vec::new(),
    })
}

/// After [`ACTION_COLUMNS`]: where the action came from.
const ACTION_ORIGIN_COLUMNS: &str = "a.event_seq, e.id, e.source, e.type, e.subject, a.decision_id, d.kind, \
     (SELECT rule FROM rule_versions WHERE id = d.rule_version)";

fn action_detail_row(row: &Row<'_>) -> rusqlite::Result<ActionDetail> {
    Ok(ActionDetail {
        action: action_row(row)?,
        event_seq: row.get(11)?,
        event_id: row.get(12)?,
        event_source: row.get(13)?,
        event_type: row.get(14)?,
        subject: row.get(15)?,
        decision_id: row.get(16)?,
        decision_kind: row.get(17)?,
        rule: row.get(18)?,
    })
}

/// The first failed attempt of action `a` after its last retry by a
/// person (the history's ids grow with time).
const FAILING_SINCE: &str = "SELECT min(h.at_ms) FROM action_history h
     WHERE h.action_id = a.id AND h.kind = 'attempt_failed'
       AND h.id > coalesce((SELECT max(r.id) FROM action_history r
                            WHERE r.action_id = a.id AND r.kind = 'retried'), 0)";

/// The heads of a page of a subject's trail: `?1` subject, `?2` the `seq`
/// the page starts after, `?3` the page size. The schema's tests check that
/// it reads the `events_by_subject` index.
pub(crate) const SUBJECT_TRAIL_HEADS: &str =
    "SELECT seq, source, id, type, subject, received_at_ms, processed_at_ms, hook
     FROM events WHERE subject = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

/// The newest rule failures (`?1` of them) with their events: the
/// failures' rowids backwards, each event by its rowid.
const RECENT_RULE_FAILURES: &str =
    "SELECT f.event_seq, e.id, e.source, e.type, e.subject, e.received_at_ms, f.rule, f.message
     FROM rule_failures f JOIN events e ON e.seq = f.event_seq
     ORDER BY f.id DESC LIMIT ?1";

/// The last event received before `?1`: walks the journal back from its
/// head, and stops there when `?1` is recent.
const LAST_SEQ_BEFORE: &str =
    "SELECT seq FROM events WHERE received_at_ms < ?1 ORDER BY seq DESC LIMIT 1";

/// Decisions and failures of the events after `?1`, counted over a range of
/// their `event_seq` index.
const DECISIONS_AFTER: &str = "SELECT v.rule, d.shadow, count(*) FROM decisions d \
     INDEXED BY decisions_by_event JOIN rule_versions v ON v.id = d.rule_version \
     WHERE d.event_seq > ?1 GROUP BY v.rule, d.shadow";
const FAILURES_AFTER: &str = "SELECT rule, count(*) FROM rule_failures \
     INDEXED BY rule_failures_by_event WHERE event_seq > ?1 GROUP BY rule";

fn trail_head(row: &Row<'_>) -> rusqlite::Result<EventTrail> {
    Ok(EventTrail {
        seq: row.get(0)?,
        source: row.get(1)?,
        id: row.get(2)?,
        ty: row.get(3)?,
        subject: row.get(4)?,
        received_at_ms: row.get(5)?,
        processed_at_ms: row.get(6)?,
        hook: Some(row.get::<_, String>(7)?).filter(|hook| !hook.is_empty()),
        decisions: Vec::new(),
        rule_failures: Vec::new(),
        rule_notes: Vec::new(),
    })
}

const HELD_COLUMNS: &str = "h.id, h.campaign, h.channel, h.event_seq, e.json, e.id, e.type, \
     e.source, e.subject, h.rule, h.reason, h.held_at_ms, h.status, h.released_seq, \
     h.released_at_ms, h.released_by, e.hook";

/// An event's JSON from its stored text (column `json`), the four columns
/// from `columns` on (`id`, `type`, `source`, `subject`) and `hook`.
fn event_json(row: &Row<'_>, json: usize, columns: usize, hook: usize) -> rusqlite::Result<String> {
    let (id, ty, source, subject): (String, String, String, Option<String>) = (
        row.get(columns)?,
        row.get(columns + 1)?,
        row.get(columns + 2)?,
        row.get(columns + 3)?,
    );
    let hook: Option<String> = row.get(hook)?;
    Ok(crate::event_body::decode(
        row.get(json)?,
        crate::event_body::Columns {
            id: &id,
            ty: &ty,
            source: &source,
            subject: subject.as_deref(),
            hook: hook.as_deref(),
        },
    ))
}

fn held_send_row(row: &Row<'_>) -> rusqlite::Result<HeldSendRecord> {
    Ok(HeldSendRecord {
        id: row.get(0)?,
        campaign: row.get(1)?,
        channel: row.get(2)?,
        event_seq: row.get(3)?,
        event_json: event_json(row, 4, 5, 16)?,
        event_id: row.get(5)?,
        rule: row.get(9)?,
        reason: row.get(10)?,
        held_at_ms: row.get(11)?,
        status: stored(row, 12, "held_sends.status")?,
        released_seq: row.get(13)?,
        released_at_ms: row.get(14)?,
        released_by: row.get(15)?,
    })
}

/// A timer's rule and rule version by subqueries rather than a join: the
/// queries that read them pick the timers' index themselves.
const TIMER_COLUMNS: &str = "id, entity, kind, event_type, data, expect_type, due_at_ms, \
     catch_up, (SELECT rule FROM rule_versions v WHERE v.id = rule_version), \
     (SELECT hash FROM rule_versions v WHERE v.id = rule_version), \
     created_by_seq, status, fired_seq, closed_at_ms, cancelled_by, cancel_reason";

/// A timer row before its JSON column is parsed (rusqlite's row mapping
/// cannot return a JSON error).
struct TimerRow {
    record: TimerRecord,
    data: String,
}

impl TimerRow {
    fn into_record(self) -> Result<TimerRecord, StoreError> {
        let TimerRow { mut record, data } = self;
        record.data = serde_json::from_str(&data)?;
        Ok(record)
    }
}

fn timer_row(row: &Row<'_>) -> rusqlite::Result<TimerRow> {
    Ok(TimerRow {
        record: TimerRecord {
            id: row.get(0)?,
            entity: row.get(1)?,
            kind: stored(row, 2, "timers.kind")?,
            event_type: row.get(3)?,
            data: serde_json::Value::Null,
            expect_type: row.get(5)?,
            due_at_ms: row.get(6)?,
            catch_up: stored(row, 7, "timers.catch_up")?,
            rule: row.get(8)?,
            rule_hash: row.get(9)?,
            created_by_seq: row.get(10)?,
            status: stored(row, 11, "timers.status")?,
            fired_seq: row.get(12)?,
            closed_at_ms: row.get(13)?,
            cancelled_by: row.get(14)?,
            cancel_reason: row.get(15)?,
        },
        data: row.get(4)?,
    })
}

/// Column `index`, a value stored as its name ([`parse_stored`]). An
/// unknown name is the store's error, carried through rusqlite's (which
/// gives it back as [`StoreError::UnknownValue`]).
pub(super) fn stored<T: DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
    column: &'static str,
) -> rusqlite::Result<T> {
    let value = row.get_ref(index)?;
    let name = value.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, value.data_type(), Box::new(e))
    })?;
    parse_stored(column, name)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use converge_model::CatchUp;

    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::{
        Backend, Durability, NewEvent, NewTimer, ProcessedEvent, SourceState, TimerKind,
        TimerRecordKind, TimerStatus, WriteBatch,
    };

    /// A new database in a directory of its own, removed when dropped.
    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            &dir.path().join("c.db"),
            Durability::Normal,
            Default::default(),
        )
        .unwrap();
        (dir, store)
    }

    /// How SQLite would run `sql` (one integer parameter), a step a line.
    fn plan(conn: &Connection, sql: &str) -> String {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params![1_000], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("\n")
    }

    #[test]
    fn the_activity_reads_walk_keys_and_indexes_without_sorting() {
        let (_dir, store) = store();

        let recent = plan(&store.conn, RECENT_RULE_FAILURES);
        assert!(recent.contains("SCAN f"), "{recent}");
        assert!(
            recent.contains("SEARCH e USING INTEGER PRIMARY KEY"),
            "{recent}"
        );
        assert!(
            !recent.contains("TEMP B-TREE"),
            "the key gives the order: {recent}"
        );

        let before = plan(&store.conn, LAST_SEQ_BEFORE);
        assert_eq!(before, "SCAN events", "backwards in seq order, no sort");

        for (sql, index) in [
            (DECISIONS_AFTER, "decisions_by_event"),
            (FAILURES_AFTER, "rule_failures_by_event"),
        ] {
            let counted = plan(&store.conn, sql);
            assert!(
                counted.contains(&format!("USING INDEX {index} (event_seq>?)")),
                "{counted}"
            );
        }
    }

    // What event sources read back: their kept state and the last occurrence
    // of a schedule.

    fn event(source: &str, id: &str) -> NewEvent {
        NewEvent {
            hook: None,
            source: source.into(),
            id: id.into(),
            ty: "digest.daily".into(),
            subject: None,
            json: "{}".into(),
            received_at_ms: 1,
        }
    }

    #[test]
    fn the_last_occurrence_is_the_greatest_id_of_that_name_and_source() {
        let (_dir, mut store) = store();
        let schedules = "converge/schedules";
        store
            .write(&WriteBatch {
                appends: vec![
                    event(schedules, "digest@2026-11-24T08:00:00Z"),
                    event(schedules, "digest@2026-11-23T08:00:00Z"),
                    // A longer name sharing the prefix, and another source.
                    event(schedules, "digest-weekly@2026-12-01T08:00:00Z"),
                    event("/elsewhere", "digest@2027-01-01T08:00:00Z"),
                ],
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(
            store
                .last_occurrence_id(schedules, "digest")
                .unwrap()
                .as_deref(),
            Some("digest@2026-11-24T08:00:00Z")
        );
        assert_eq!(store.last_occurrence_id(schedules, "weekly").unwrap(), None);
        let plan: String = store
            .conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT id FROM events WHERE id >= ?1 || '@' AND id < ?1 || 'A'
                 AND source = ?2 ORDER BY id DESC LIMIT 1",
            )
            .unwrap()
            .query_map(["digest", schedules], |row| row.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join("; ");
        assert!(
            plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN events"), "{plan}");
    }

    #[test]
    fn source_state_keeps_the_last_value_of_a_key() {
        let (_dir, mut store) = store();
        assert_eq!(store.source_state("poll/jira").unwrap(), None);
        let state = |value: &str, at| SourceState {
            key: "poll/jira".into(),
            value: value.into(),
            updated_at_ms: at,
        };
        store
            .write(&WriteBatch {
                appends: vec![event("/jira", "j-1")],
                source_state: vec![state("page-1", 1), state("page-2", 2)],
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(
            store.source_state("poll/jira").unwrap().as_deref(),
            Some("page-2")
        );
        store
            .write(&WriteBatch {
                source_state: vec![state("page-3", 3)],
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(
            store.source_state("poll/jira").unwrap().as_deref(),
            Some("page-3")
        );
    }

    /// A name the row mapping does not know comes out of rusqlite's error
    /// as the store's own, naming the column and the value.
    #[test]
    fn an_unknown_stored_name_is_an_error_naming_it() {
        let (_dir, mut store) = store();
        store
            .write(&WriteBatch {
                appends: vec![event("/jira", "j-1")],
                processed: vec![ProcessedEvent {
                    seq: 1,
                    processed_at_ms: 1,
                    timers: vec![NewTimer {
                        entity: "task/T-1".into(),
                        kind: TimerKind::Schedule,
                        event_type: "task.remind".into(),
                        data: serde_json::json!({}),
                        due_at_ms: 10,
                        catch_up: CatchUp::Skip,
                        rule: "stalled".into(),
                        rule_hash: "h".into(),
                    }],
                    ..ProcessedEvent::default()
                }],
                ..WriteBatch::default()
            })
            .unwrap();
        let due = store.due_timers(10, None, 10).unwrap();
        assert_eq!(
            (due[0].kind, due[0].status, due[0].catch_up),
            (
                TimerRecordKind::Schedule,
                TimerStatus::Pending,
                CatchUp::Skip
            )
        );

        // Only a database not written by converge holds such a row.
        store
            .conn
            .execute_batch(
                "PRAGMA ignore_check_constraints = ON;
                 UPDATE timers SET kind = 'alarm';
                 PRAGMA ignore_check_constraints = OFF;",
            )
            .unwrap();
        let error = store.due_timers(10, None, 10).unwrap_err();
        assert!(
            matches!(&error, StoreError::UnknownValue { column: "timers.kind", value }
                if value == "alarm"),
            "{error:?}"
        );
    }
}
