//! The PostgreSQL [`Backend`] and [`Coordination`]: queries (writes are in `write.rs`, the
//! cluster operations in `cluster.rs`). A query that reads several tables
//! (a trail, a gate, the counts) reads them in one snapshot.

use std::time::Duration;

use converge_model::{EntityKey, EntityState, MetricShape, RuleFailure, RuleNote};
use postgres::{GenericClient, Row};

use super::{PostgresStore, Session, attempts, cluster, sql_limit};
use crate::records::{
    ActionDetail, ActionHistoryRecord, ActionRecord, Counts, DecisionRecord, EventTrail,
    GateOverrideRecord, GateRecord, HeldSendRecord, JournaledEvent, PayloadJson, PendingAction,
    RecentRuleFailure, RetryingAction, RuleActivity, RuleTimers, TimerRecord, parse_stored,
};
use crate::{
    Backend, Check, Coordination, LeaseRecord, OpenSpan, PARTITIONS, SampleGroup, SampleQuery,
    StoreError, WriteBatch, WriteResult, group_durations, merge_rule_activity, order_groups,
};

impl Backend for PostgresStore {
    fn instance(&self) -> Result<i64, StoreError> {
        self.run(|s| s.value("SELECT id FROM instance", &[]))
    }

    fn new_instance(&mut self) -> Result<i64, StoreError> {
        self.run(|s| {
            s.value(
                "UPDATE instance
                 SET id = ('x' || substr(md5(gen_random_uuid()::text), 1, 16))::bit(64)::bigint
                 RETURNING id",
                &[],
            )
        })
    }

    /// Foreign keys keep every action's decision and event, and the
    /// processed cursor is computed from the journal, so what is left to
    /// check is that each identity sequence is past its table's ids (a
    /// restore that loaded rows but not the sequences would hand them out
    /// again) and the instance id.
    fn coherence(&self) -> Result<Vec<Check>, StoreError> {
        self.run(|s| {
            let mut past = Vec::new();
            for (table, sql) in [
                (
                    "events",
                    "SELECT coalesce((SELECT max(seq) FROM events), 0),
                            (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                             FROM events_seq_seq)",
                ),
                (
                    "decisions",
                    "SELECT coalesce((SELECT max(id) FROM decisions), 0),
                            (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                             FROM decisions_id_seq)",
                ),
                (
                    "actions",
                    "SELECT coalesce((SELECT max(id) FROM actions), 0),
                            (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                             FROM actions_id_seq)",
                ),
            ] {
                let row = s.query_one(sql, &[])?;
                let (last, handed_out): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                if handed_out < last {
                    past.push(format!(
                        "{table} hold id {last}, but its sequence is at {handed_out}: new \
                         {table} would take ids {} to {last} again",
                        handed_out + 1
                    ));
                }
            }
            let instances: i64 = s.value("SELECT count(*) FROM instance", &[])?;
            Ok(vec![
                Check {
                    name: "id sequences",
                    problem: (!past.is_empty()).then(|| past.join("; ")),
                },
                Check {
                    name: "instance id",
                    problem: (instances != 1).then(|| {
                        "the database has no instance id: idempotency keys would repeat".into()
                    }),
                },
            ])
        })
    }

    fn write(&mut self, batch: &WriteBatch) -> Result<WriteResult, StoreError> {
        super::write::write(self, batch)
    }

    fn truncate_wal(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn replace_samples(
        &mut self,
        samples: &mut dyn Iterator<Item = Result<(i64, Vec<converge_model::Sample>), StoreError>>,
        entities: &[EntityState],
    ) -> Result<(), StoreError> {
        super::write::replace_samples(self, samples, entities)
    }

    fn processed_cursor(&self) -> Result<i64, StoreError> {
        self.run(processed_cursor)
    }

    fn journal_head(&self) -> Result<i64, StoreError> {
        self.run(|s| s.value("SELECT coalesce(max(seq), 0) FROM events", &[]))
    }

    fn prunable(
        &self,
        after_seq: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<crate::PrunePage, StoreError> {
        self.run(|s| super::prune::prunable(s, after_seq, before_ms, limit))
    }

    fn events_after(&self, seq: i64, limit: usize) -> Result<Vec<JournaledEvent>, StoreError> {
        self.run(|s| {
            s.rows(
                "SELECT seq, json, received_at_ms, id, type, source, subject, hook FROM events
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&seq, &sql_limit(limit)],
                journaled_event,
            )
        })
    }

    fn entity(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError> {
        let row = self.run(|s| {
            s.query_opt(
                "SELECT state FROM entities WHERE key = $1",
                &[&key.to_string()],
            )
        })?;
        match row {
            Some(row) => Ok(Some(serde_json::from_str(row.try_get(0)?)?)),
            None => Ok(None),
        }
    }

    fn entities(&self, keys: &[EntityKey]) -> Result<Vec<EntityState>, StoreError> {
        let keys: Vec<String> = keys.iter().map(EntityKey::to_string).collect();
        let rows =
            self.run(|s| s.query("SELECT state FROM entities WHERE key = ANY($1)", &[&keys]))?;
        rows.iter()
            .map(|row| Ok(serde_json::from_str(row.try_get(0)?)?))
            .collect()
    }

    fn entities_after(
        &self,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<EntityState>, StoreError> {
        self.states_after(
            "SELECT state FROM entities WHERE key > $1 ORDER BY key LIMIT $2",
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
        // Literal conditions (`OpenSpan::bit`), so the planner can use the
        // partial index they define.
        let sql = match span {
            OpenSpan::Blocked => {
                "SELECT state FROM entities
                 WHERE open_spans & 1 <> 0 AND key > $1 ORDER BY key LIMIT $2"
            }
            OpenSpan::Escalated => {
                "SELECT state FROM entities
                 WHERE open_spans & 2 <> 0 AND key > $1 ORDER BY key LIMIT $2"
            }
        };
        self.states_after(sql, after, limit)
    }

    fn pending_actions(&self, limit: usize) -> Result<Vec<PendingAction>, StoreError> {
        self.pending_actions_after(0, limit)
    }

    /// Their `lease_token` is `None`: listing an action is not holding it
    /// (only [`Coordination::claim_actions`] hands out tokens).
    fn pending_actions_after(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<PendingAction>, StoreError> {
        self.run(|s| {
            s.rows(
                concat!(
                    "SELECT ",
                    pending_action_columns!(),
                    " FROM actions WHERE status = 'pending' AND id > $1 ORDER BY id LIMIT $2"
                ),
                &[&after_id, &sql_limit(limit)],
                |row| {
                    Ok(PendingAction {
                        lease_token: None,
                        ..pending_action(row)?
                    })
                },
            )
        })
    }

    fn dead_letters(&self, after_id: i64, limit: usize) -> Result<Vec<ActionDetail>, StoreError> {
        self.run(|s| {
            s.rows(
                concat!(
                    "SELECT ",
                    action_detail_columns!(),
                    " WHERE a.status = 'dead_letter' AND a.id > $1 ORDER BY a.id LIMIT $2"
                ),
                &[&after_id, &sql_limit(limit)],
                action_detail,
            )
        })
    }

    fn dead_letter_count(&self) -> Result<i64, StoreError> {
        self.run(dead_letter_count)
    }

    fn retrying_actions(&self, limit: usize) -> Result<Vec<RetryingAction>, StoreError> {
        self.run(|s| {
            s.rows(
                concat!(
                    "SELECT ",
                    action_detail_select!(),
                    // The first failed attempt after the last retry by a person.
                    ", (SELECT min(h.at_ms) FROM action_history h
                        WHERE h.action_id = a.id AND h.kind = 'attempt_failed'
                          AND h.id > coalesce((SELECT max(r.id) FROM action_history r
                                               WHERE r.action_id = a.id AND r.kind = 'retried'), 0))",
                    action_detail_from!(),
                    " WHERE a.status = 'pending' AND a.attempts > 0
                      ORDER BY a.next_attempt_at_ms, a.id LIMIT $1"
                ),
                &[&sql_limit(limit)],
                |row| {
                    Ok(RetryingAction {
                        detail: action_detail(row)?,
                        failing_since_ms: row.try_get(19)?,
                    })
                },
            )
        })
    }

    fn action(&self, id: i64) -> Result<Option<ActionDetail>, StoreError> {
        self.snapshot(|s| {
            let row = s.query_opt(
                concat!("SELECT ", action_detail_columns!(), " WHERE a.id = $1"),
                &[&id],
            )?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut detail = action_detail(&row)?;
            detail.action.history = action_history(s, id)?;
            Ok(Some(detail))
        })
    }

    fn event_trail(&self, source: &str, id: &str) -> Result<Option<EventTrail>, StoreError> {
        self.snapshot(|s| {
            let head = s.query_opt(
                "SELECT seq, source, id, type, subject, received_at_ms, processed_at_ms, hook
                 FROM events WHERE id = $1 AND source = $2 ORDER BY seq LIMIT 1",
                &[&id, &source],
            )?;
            head.map(|row| complete_trail(s, trail_head(&row)?))
                .transpose()
        })
    }

    fn find_event_trail(&self, id: &str) -> Result<Vec<EventTrail>, StoreError> {
        self.snapshot(|s| {
            let heads = s.rows(
                "SELECT seq, source, id, type, subject, received_at_ms, processed_at_ms, hook
                 FROM events WHERE id = $1 ORDER BY seq",
                &[&id],
                trail_head,
            )?;
            heads
                .into_iter()
                .map(|trail| complete_trail(s, trail))
                .collect()
        })
    }

    fn trails_after(&self, after_seq: i64, limit: usize) -> Result<Vec<EventTrail>, StoreError> {
        self.snapshot(|s| {
            let heads = s.rows(
                "SELECT seq, source, id, type, subject, received_at_ms, processed_at_ms, hook
                 FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &sql_limit(limit)],
                trail_head,
            )?;
            heads
                .into_iter()
                .map(|trail| complete_trail(s, trail))
                .collect()
        })
    }

    fn subject_trails(
        &self,
        subject: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<EventTrail>, StoreError> {
        self.snapshot(|s| {
            let heads = s.rows(
                "SELECT seq, source, id, type, subject, received_at_ms, processed_at_ms, hook
                 FROM events WHERE subject = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&subject, &after_seq, &sql_limit(limit)],
                trail_head,
            )?;
            heads
                .into_iter()
                .map(|trail| complete_trail(s, trail))
                .collect()
        })
    }

    fn recent_rule_failures(&self, limit: usize) -> Result<Vec<RecentRuleFailure>, StoreError> {
        // The failures' primary key backwards, each event by its primary key.
        self.run(|s| {
            s.rows(
                "SELECT f.event_seq, e.id, e.source, e.type, e.subject, e.received_at_ms,
                        f.rule, f.message
                 FROM rule_failures f JOIN events e ON e.seq = f.event_seq
                 ORDER BY f.id DESC LIMIT $1",
                &[&sql_limit(limit)],
                recent_rule_failure,
            )
        })
    }

    fn rule_activity(&self, since_ms: i64) -> Result<Vec<RuleActivity>, StoreError> {
        self.snapshot(|s| rule_activity(s, since_ms))
    }

    fn due_timers(
        &self,
        due_by_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        let (after_due, after_id) = after.unwrap_or((i64::MIN, i64::MIN));
        let rows = self.run(|s| {
            s.query(
                concat!(
                    "SELECT ",
                    timer_columns!(),
                    " FROM timers WHERE status = 'pending' AND due_at_ms <= $1
                       AND due_at_ms >= $2 AND (due_at_ms > $2 OR id > $3)
                     ORDER BY due_at_ms, id LIMIT $4"
                ),
                &[&due_by_ms, &after_due, &after_id, &sql_limit(limit)],
            )
        })?;
        rows.iter().map(timer).collect()
    }

    fn next_timer_due(&self) -> Result<Option<i64>, StoreError> {
        self.run(|s| {
            s.value(
                "SELECT min(due_at_ms) FROM timers WHERE status = 'pending'",
                &[],
            )
        })
    }

    fn pending_timer_count(&self) -> Result<i64, StoreError> {
        self.run(|s| s.value("SELECT count(*) FROM timers WHERE status = 'pending'", &[]))
    }

    fn pending_timers_by_rule(&self, limit: usize) -> Result<Vec<RuleTimers>, StoreError> {
        self.run(|s| {
            s.rows(
                "SELECT v.rule, v.hash, count(*)
                 FROM (SELECT rule_version FROM timers
                       WHERE status = 'pending' ORDER BY due_at_ms, id LIMIT $1) t
                 JOIN rule_versions v ON v.id = t.rule_version
                 GROUP BY v.rule, v.hash ORDER BY v.rule COLLATE \"C\", v.hash COLLATE \"C\"",
                &[&sql_limit(limit)],
                |row| {
                    Ok(RuleTimers {
                        rule: row.try_get(0)?,
                        rule_hash: row.try_get(1)?,
                        pending: row.try_get(2)?,
                    })
                },
            )
        })
    }

    fn entity_timers(
        &self,
        entity: &EntityKey,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        let rows = self.run(|s| {
            s.query(
                concat!(
                    "SELECT ",
                    timer_columns!(),
                    " FROM timers WHERE entity = $1 AND (NOT $2 OR status = 'pending')
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&entity.to_string(), &pending_only, &sql_limit(limit)],
            )
        })?;
        rows.iter().map(timer).collect()
    }

    fn soonest_pending_timer(&self, entity: &EntityKey) -> Result<Option<TimerRecord>, StoreError> {
        let rows = self.run(|s| {
            s.query(
                concat!(
                    "SELECT ",
                    timer_columns!(),
                    " FROM timers WHERE entity = $1 AND status = 'pending'
                     ORDER BY due_at_ms, id LIMIT 1"
                ),
                &[&entity.to_string()],
            )
        })?;
        rows.first().map(timer).transpose()
    }

    fn open_held_sends(&self) -> Result<Vec<HeldSendRecord>, StoreError> {
        self.run(|s| {
            s.rows(
                concat!(
                    "SELECT ",
                    held_send_columns!(),
                    " WHERE h.status = 'held' ORDER BY h.id"
                ),
                &[],
                held_send,
            )
        })
    }

    fn gate(&self, campaign: &EntityKey, limit: usize) -> Result<GateRecord, StoreError> {
        let campaign = campaign.to_string();
        self.snapshot(|s| {
            let held_sends = s.rows(
                concat!(
                    "SELECT ",
                    held_send_columns!(),
                    " WHERE h.campaign = $1 ORDER BY h.id DESC LIMIT $2"
                ),
                &[&campaign, &sql_limit(limit)],
                held_send,
            )?;
            let overrides = gate_overrides(s, &campaign, limit)?;
            Ok(GateRecord {
                held_sends,
                overrides,
            })
        })
    }

    fn gate_overrides(
        &self,
        campaign: &str,
        limit: usize,
    ) -> Result<Vec<GateOverrideRecord>, StoreError> {
        self.run(|s| gate_overrides(s, campaign, limit))
    }

    fn source_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row =
            self.run(|s| s.query_opt("SELECT value FROM source_state WHERE key = $1", &[&key]))?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    fn last_occurrence_id(&self, source: &str, name: &str) -> Result<Option<String>, StoreError> {
        // `events.id` is in byte order (`COLLATE "C"`), so this is a range
        // of the `(id, source)` index, as on SQLite.
        let row = self.run(|s| {
            s.query_opt(
                "SELECT id FROM events
                 WHERE id >= $1 || '@' AND id < $1 || 'A' AND source = $2
                 ORDER BY id DESC LIMIT 1",
                &[&name, &source],
            )
        })?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    fn sample_groups(&self, query: &SampleQuery) -> Result<Vec<SampleGroup>, StoreError> {
        // The slice is a parameter, so one prepared statement serves every slice.
        let by = query.by.map_or("", |slice| slice.name());
        let metric = query.metric.name();
        let params: [&(dyn postgres::types::ToSql + Sync); 4] =
            [&metric, &by, &query.since_ms, &query.until_ms];
        self.snapshot(|s| {
            if query.metric.shape() == MetricShape::Duration {
                let rows = s.rows(
                    "SELECT CASE $2::text WHEN 'owner' THEN owner WHEN 'campaign' THEN campaign
                                WHEN 'channel' THEN channel WHEN 'stage' THEN stage
                                WHEN 'week' THEN week END AS slice,
                            value
                     FROM metric_samples
                     WHERE metric = $1 AND at_ms >= $3 AND at_ms < $4
                     ORDER BY slice, value",
                    &params,
                    |row| {
                        Ok((
                            row.try_get::<_, Option<String>>(0)?,
                            row.try_get::<_, f64>(1)?,
                        ))
                    },
                )?;
                return Ok(group_durations(rows));
            }
            let mut groups = s.rows(
                "SELECT CASE $2::text WHEN 'owner' THEN owner WHEN 'campaign' THEN campaign
                            WHEN 'channel' THEN channel WHEN 'stage' THEN stage
                            WHEN 'week' THEN week END AS slice,
                        count(*), coalesce(sum(value), 0)
                 FROM metric_samples
                 WHERE metric = $1 AND at_ms >= $3 AND at_ms < $4
                 GROUP BY slice",
                &params,
                |row| {
                    Ok(SampleGroup {
                        slice: row.try_get(0)?,
                        samples: row.try_get(1)?,
                        total: row.try_get(2)?,
                        values: Vec::new(),
                    })
                },
            )?;
            order_groups(&mut groups);
            Ok(groups)
        })
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        self.snapshot(|s| {
            Ok(Counts {
                // The largest seq or id counts what was ever journaled or
                // decided, pruned rows included (an upper bound:
                // rolled-back batches leave gaps).
                events: s.value("SELECT coalesce(max(seq), 0) FROM events", &[])?,
                // Not yet processed, wherever they are in the journal (on
                // SQLite: after the cursor; the same when processed in order).
                unprocessed_events: s.value(
                    "SELECT count(*) FROM events WHERE processed_at_ms IS NULL",
                    &[],
                )?,
                decisions: s.value("SELECT coalesce(max(id), 0) FROM decisions", &[])?,
                actions_pending: s
                    .value("SELECT count(*) FROM actions WHERE status = 'pending'", &[])?,
                actions_done: counter(s, "actions_done")?,
                actions_dead_lettered: counter(s, "actions_dead_lettered")?,
                dead_letters: dead_letter_count(s)?,
            })
        })
    }

    fn coordination(&self) -> Result<&dyn Coordination, StoreError> {
        Ok(self)
    }
}

impl Coordination for PostgresStore {
    fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        self.run(|s| cluster::hold_lease(s, name, holder, ttl))
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.run(|s| cluster::release_lease(s, name, holder))
    }

    fn live_leases(&self, prefix: &str) -> Result<Vec<LeaseRecord>, StoreError> {
        self.run(|s| cluster::live_leases(s, prefix))
    }

    fn unprocessed_events(
        &self,
        partitions: &[u32],
        limit: usize,
    ) -> Result<Vec<JournaledEvent>, StoreError> {
        self.run(|s| cluster::unprocessed_events(s, partitions, limit))
    }

    fn due_timers_in(
        &self,
        partitions: &[u32],
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        self.run(|s| cluster::due_timers_in(s, partitions, now_ms, limit))
    }

    fn held_sends_in(&self, partitions: &[u32]) -> Result<Vec<HeldSendRecord>, StoreError> {
        self.run(|s| cluster::held_sends_in(s, partitions))
    }

    fn claim_actions(
        &self,
        holder: &str,
        ttl: Duration,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<PendingAction>, StoreError> {
        self.run(|s| cluster::claim_actions(s, holder, ttl, now_ms, limit))
    }

    fn renew_action_leases(
        &self,
        holder: &str,
        ttl: Duration,
        actions: &[(i64, i64)],
    ) -> Result<Vec<i64>, StoreError> {
        self.run(|s| cluster::renew_action_leases(s, holder, ttl, actions))
    }

    fn listen(&self, channel: &str) -> Result<(), StoreError> {
        PostgresStore::listen(self, channel)
    }

    fn wait_for_notifications(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.run(|s| cluster::wait_for_notifications(s, timeout))
    }

    fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.run(|s| {
            s.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                .map(drop)
        })
    }
}

/// The highest seq up to which every event is processed: just before the
/// oldest unprocessed one, or the journal's head when none is. The oldest
/// unprocessed event is looked up partition by partition, each the first
/// entry of its part of `events_unprocessed`, so the answer costs
/// [`PARTITIONS`] index probes whatever the journal's size.
fn processed_cursor<C: GenericClient>(s: &mut Session<'_, C>) -> Result<i64, StoreError> {
    s.value(
        "SELECT coalesce(
             (SELECT min(first.seq) - 1
              FROM generate_series(0, $1 - 1) AS p (partition)
              CROSS JOIN LATERAL (
                  SELECT seq FROM events
                  WHERE processed_at_ms IS NULL AND events.partition = p.partition
                  ORDER BY seq LIMIT 1) AS first),
             (SELECT max(seq) FROM events),
             0)",
        &[&i32::try_from(PARTITIONS).unwrap_or(i32::MAX)],
    )
}

/// [`Backend::rule_activity`]: the period starts after the last event
/// received before `since_ms`, found on the primary key backwards from the
/// head (`seq` grows with `received_at_ms`); its decisions and failures are
/// a range of their `event_seq` indexes. The boundary is a plain parameter,
/// not a subquery, so the planner sees how short that range is.
fn rule_activity<C: GenericClient>(
    s: &mut Session<'_, C>,
    since_ms: i64,
) -> Result<Vec<RuleActivity>, StoreError> {
    let after_seq = match s.query_opt(
        "SELECT seq FROM events WHERE received_at_ms < $1 ORDER BY seq DESC LIMIT 1",
        &[&since_ms],
    )? {
        Some(row) => row.try_get(0)?,
        None => 0_i64,
    };
    let decisions = s.rows(
        "SELECT v.rule, d.shadow, count(*)
         FROM decisions d JOIN rule_versions v ON v.id = d.rule_version
         WHERE d.event_seq > $1 GROUP BY v.rule, d.shadow",
        &[&after_seq],
        |row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)),
    )?;
    let failures = s.rows(
        "SELECT rule, count(*) FROM rule_failures WHERE event_seq > $1 GROUP BY rule",
        &[&after_seq],
        |row| Ok((row.try_get(0)?, row.try_get(1)?)),
    )?;
    Ok(merge_rule_activity(decisions, failures))
}

/// A counter's total over its shards.
fn counter<C: GenericClient>(s: &mut Session<'_, C>, name: &str) -> Result<i64, StoreError> {
    s.value(
        "SELECT coalesce(sum(value), 0)::bigint FROM counters WHERE name = $1",
        &[&name],
    )
}

fn dead_letter_count<C: GenericClient>(s: &mut Session<'_, C>) -> Result<i64, StoreError> {
    s.value(
        "SELECT count(*) FROM actions WHERE status = 'dead_letter'",
        &[],
    )
}

fn gate_overrides<C: GenericClient>(
    s: &mut Session<'_, C>,
    campaign: &str,
    limit: usize,
) -> Result<Vec<GateOverrideRecord>, StoreError> {
    s.rows(
        "SELECT id, campaign, channel, \"by\", reason, event_seq, released, at_ms
         FROM gate_overrides WHERE campaign = $1 ORDER BY id DESC LIMIT $2",
        &[&campaign, &sql_limit(limit)],
        |row| {
            Ok(GateOverrideRecord {
                id: row.try_get(0)?,
                campaign: row.try_get(1)?,
                channel: row.try_get(2)?,
                by: row.try_get(3)?,
                reason: row.try_get(4)?,
                event_seq: row.try_get(5)?,
                released: row.try_get(6)?,
                at_ms: row.try_get(7)?,
            })
        },
    )
}

/// Adds the decisions, actions and rule failures of the event to its head.
fn complete_trail<C: GenericClient>(
    s: &mut Session<'_, C>,
    mut trail: EventTrail,
) -> Result<EventTrail, StoreError> {
    let decisions = s.rows(
        "SELECT d.id, v.rule, v.hash, d.kind, d.body, d.shadow
         FROM decisions d JOIN rule_versions v ON v.id = d.rule_version
         WHERE d.event_seq = $1 ORDER BY d.id",
        &[&trail.seq],
        |row| {
            Ok((
                row.try_get::<_, i64>(0)?,
                row.try_get::<_, String>(1)?,
                row.try_get::<_, String>(2)?,
                row.try_get::<_, String>(3)?,
                row.try_get::<_, String>(4)?,
                row.try_get::<_, bool>(5)?,
            ))
        },
    )?;
    let mut read = crate::decision_body::EventDecisions::default();
    for (id, rule, rule_hash, kind, body, shadow) in decisions {
        let decision = read.decode(rule, rule_hash, &kind, shadow, &body)?;
        let mut actions = s.rows(
            concat!(
                "SELECT ",
                action_columns!(),
                " FROM actions a WHERE a.decision_id = $1 ORDER BY a.id"
            ),
            &[&id],
            action_record,
        )?;
        for action in &mut actions {
            action.history = action_history(s, action.id)?;
        }
        trail.decisions.push(DecisionRecord {
            id,
            decision,
            shadow,
            actions,
        });
    }
    trail.rule_notes = s.rows(
        "SELECT rule, message FROM rule_notes WHERE event_seq = $1 ORDER BY id",
        &[&trail.seq],
        |row| {
            Ok(RuleNote {
                rule: row.try_get(0)?,
                message: row.try_get(1)?,
            })
        },
    )?;
    trail.rule_failures = s.rows(
        "SELECT rule, rule_hash, message FROM rule_failures WHERE event_seq = $1 ORDER BY id",
        &[&trail.seq],
        |row| {
            Ok(RuleFailure {
                rule: row.try_get(0)?,
                rule_hash: row.try_get(1)?,
                message: row.try_get(2)?,
            })
        },
    )?;
    Ok(trail)
}

/// An action's history, oldest first.
fn action_history<C: GenericClient>(
    s: &mut Session<'_, C>,
    action_id: i64,
) -> Result<Vec<ActionHistoryRecord>, StoreError> {
    s.rows(
        "SELECT at_ms, kind, attempts, detail, \"by\", reason FROM action_history
         WHERE action_id = $1 ORDER BY id",
        &[&action_id],
        |row| {
            Ok(ActionHistoryRecord {
                at_ms: row.try_get(0)?,
                kind: stored(row, 1, "action_history.kind")?,
                attempts: attempts(row.try_get(2)?),
                detail: row.try_get(3)?,
                by: row.try_get(4)?,
                reason: row.try_get(5)?,
            })
        },
    )
}

// ---- rows to records: each reads the columns of its `*_columns!` macro, in order ----

impl PostgresStore {
    /// The entity states `sql` selects (`state` after key `$1`, at most `$2`).
    fn states_after(
        &self,
        sql: &'static str,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<EntityState>, StoreError> {
        let after = after.map(EntityKey::to_string).unwrap_or_default();
        let states = self.run(|s| {
            s.rows(sql, &[&after, &sql_limit(limit)], |row| {
                Ok(row.try_get::<_, String>(0)?)
            })
        })?;
        Ok(states
            .iter()
            .map(|s| serde_json::from_str(s))
            .collect::<Result<_, _>>()?)
    }
}

/// From `seq, json, received_at_ms, id, type, source, subject, hook`.
pub(super) fn journaled_event(row: &Row) -> Result<JournaledEvent, StoreError> {
    Ok(JournaledEvent {
        seq: row.try_get(0)?,
        json: event_json(row, 1, 3, 7)?,
        received_at_ms: row.try_get(2)?,
    })
}

/// An event's JSON from its stored text (column `json`), the four columns
/// from `columns` on (`id`, `type`, `source`, `subject`) and `hook`.
fn event_json(
    row: &Row,
    json: usize,
    columns: usize,
    hook: usize,
) -> Result<String, postgres::Error> {
    Ok(crate::event_body::decode(
        row.try_get(json)?,
        crate::event_body::Columns {
            id: row.try_get(columns)?,
            ty: row.try_get(columns + 1)?,
            source: row.try_get(columns + 2)?,
            subject: row.try_get(columns + 3)?,
            hook: row.try_get(hook)?,
        },
    ))
}

pub(super) fn pending_action(row: &Row) -> Result<PendingAction, StoreError> {
    Ok(PendingAction {
        id: row.try_get(0)?,
        event_seq: row.try_get(1)?,
        decision_id: row.try_get(2)?,
        route: row.try_get(3)?,
        plugin: row.try_get(4)?,
        payload: PayloadJson::stored(row.try_get(5)?),
        attempts: attempts(row.try_get(6)?),
        next_attempt_at_ms: row.try_get(7)?,
        lease_token: row.try_get(8)?,
        instance: row.try_get(9)?,
    })
}

fn action_record(row: &Row) -> Result<ActionRecord, StoreError> {
    Ok(ActionRecord {
        id: row.try_get(0)?,
        route: row.try_get(1)?,
        plugin: row.try_get(2)?,
        status: stored(row, 3, "actions.status")?,
        attempts: attempts(row.try_get(4)?),
        detail: row.try_get(5)?,
        external_id: row.try_get(6)?,
        next_attempt_at_ms: row.try_get(7)?,
        finished_at_ms: row.try_get(8)?,
        payload_key: row.try_get(9)?,
        instance: row.try_get(10)?,
        history: Vec::new(),
    })
}

fn action_detail(row: &Row) -> Result<ActionDetail, StoreError> {
    Ok(ActionDetail {
        action: action_record(row)?,
        event_seq: row.try_get(11)?,
        event_id: row.try_get(12)?,
        event_source: row.try_get(13)?,
        event_type: row.try_get(14)?,
        subject: row.try_get(15)?,
        decision_id: row.try_get(16)?,
        decision_kind: row.try_get(17)?,
        rule: row.try_get(18)?,
    })
}

/// `f.event_seq, e.id, e.source, e.type, e.subject, e.received_at_ms,
/// f.rule, f.message` (`f`: rule_failures, `e`: events).
fn recent_rule_failure(row: &Row) -> Result<RecentRuleFailure, StoreError> {
    Ok(RecentRuleFailure {
        event_seq: row.try_get(0)?,
        event_id: row.try_get(1)?,
        event_source: row.try_get(2)?,
        event_type: row.try_get(3)?,
        subject: row.try_get(4)?,
        received_at_ms: row.try_get(5)?,
        rule: row.try_get(6)?,
        message: row.try_get(7)?,
    })
}

/// `seq, source, id, type, subject, received_at_ms, processed_at_ms`.
fn trail_head(row: &Row) -> Result<EventTrail, StoreError> {
    Ok(EventTrail {
        seq: row.try_get(0)?,
        source: row.try_get(1)?,
        id: row.try_get(2)?,
        ty: row.try_get(3)?,
        subject: row.try_get(4)?,
        received_at_ms: row.try_get(5)?,
        processed_at_ms: row.try_get(6)?,
        hook: Some(row.try_get::<_, String>(7)?).filter(|hook| !hook.is_empty()),
        decisions: Vec::new(),
        rule_failures: Vec::new(),
        rule_notes: Vec::new(),
    })
}

pub(super) fn held_send(row: &Row) -> Result<HeldSendRecord, StoreError> {
    Ok(HeldSendRecord {
        id: row.try_get(0)?,
        campaign: row.try_get(1)?,
        channel: row.try_get(2)?,
        event_seq: row.try_get(3)?,
        event_json: event_json(row, 4, 5, 16)?,
        event_id: row.try_get(5)?,
        rule: row.try_get(9)?,
        reason: row.try_get(10)?,
        held_at_ms: row.try_get(11)?,
        status: stored(row, 12, "held_sends.status")?,
        released_seq: row.try_get(13)?,
        released_at_ms: row.try_get(14)?,
        released_by: row.try_get(15)?,
    })
}

pub(super) fn timer(row: &Row) -> Result<TimerRecord, StoreError> {
    Ok(TimerRecord {
        id: row.try_get(0)?,
        entity: row.try_get(1)?,
        kind: stored(row, 2, "timers.kind")?,
        event_type: row.try_get(3)?,
        data: serde_json::from_str(row.try_get(4)?)?,
        expect_type: row.try_get(5)?,
        due_at_ms: row.try_get(6)?,
        catch_up: stored(row, 7, "timers.catch_up")?,
        rule: row.try_get(8)?,
        rule_hash: row.try_get(9)?,
        created_by_seq: row.try_get(10)?,
        status: stored(row, 11, "timers.status")?,
        fired_seq: row.try_get(12)?,
        closed_at_ms: row.try_get(13)?,
        cancelled_by: row.try_get(14)?,
        cancel_reason: row.try_get(15)?,
    })
}

/// Column `index`, a value stored as its name ([`parse_stored`]).
pub(super) fn stored<'r, T: serde::Deserialize<'r>>(
    row: &'r Row,
    index: usize,
    column: &'static str,
) -> Result<T, StoreError> {
    parse_stored(column, row.try_get(index)?)
}
