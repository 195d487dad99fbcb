//! The schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Migrations are
//! only ever appended: a released one is never edited.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::StoreError;

/// Keys of the `meta` table.
pub(crate) const PROCESSED_CURSOR: &str = "processed_cursor";
/// Kept as counters because counting finished actions would scan them all.
pub(crate) const ACTIONS_DONE: &str = "actions_done";
/// Actions that ever went to the dead-letter state (the key was
/// `actions_failed` before version 7).
pub(crate) const ACTIONS_DEAD_LETTERED: &str = "actions_dead_lettered";
/// The database's random instance id, part of every idempotency key.
pub(crate) const INSTANCE: &str = "instance";

const MIGRATIONS: &[&str] = &[
    // 1: journal, entities, decisions, outbox.
    //
    // `UNIQUE(id, source)` rather than `(source, id)`: the same index then also
    // serves lookups by id alone (`converge explain <id>`), so the journal keeps
    // one secondary index.
    "
    CREATE TABLE events (
        seq             INTEGER PRIMARY KEY,
        source          TEXT NOT NULL,
        id              TEXT NOT NULL,
        type            TEXT NOT NULL,
        subject         TEXT,
        json            TEXT NOT NULL,
        received_at_ms  INTEGER NOT NULL,
        processed_at_ms INTEGER,
        UNIQUE (id, source)
    );

    CREATE TABLE entities (
        key           TEXT PRIMARY KEY,
        state         TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE decisions (
        id            INTEGER PRIMARY KEY,
        event_seq     INTEGER NOT NULL REFERENCES events (seq),
        rule          TEXT NOT NULL,
        rule_hash     TEXT NOT NULL,
        kind          TEXT NOT NULL,
        body          TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX decisions_by_event ON decisions (event_seq);

    CREATE TABLE actions (
        id                 INTEGER PRIMARY KEY,
        decision_id        INTEGER NOT NULL REFERENCES decisions (id),
        event_seq          INTEGER NOT NULL REFERENCES events (seq),
        route              TEXT NOT NULL,
        plugin             TEXT NOT NULL,
        payload            TEXT NOT NULL,
        status             TEXT NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'done', 'failed')),
        attempts           INTEGER NOT NULL DEFAULT 0,
        next_attempt_at_ms INTEGER,
        detail             TEXT,
        external_id        TEXT,
        created_at_ms      INTEGER NOT NULL,
        finished_at_ms     INTEGER
    );
    CREATE INDEX actions_by_decision ON actions (decision_id);
    -- Only pending actions are indexed: the outbox reads them in id order and
    -- the index stays as small as the backlog.
    CREATE INDEX actions_pending ON actions (id) WHERE status = 'pending';

    CREATE TABLE rule_failures (
        id        INTEGER PRIMARY KEY,
        event_seq INTEGER NOT NULL REFERENCES events (seq),
        rule      TEXT NOT NULL,
        rule_hash TEXT NOT NULL,
        message   TEXT NOT NULL
    );
    CREATE INDEX rule_failures_by_event ON rule_failures (event_seq);

    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES
        ('processed_cursor', 0), ('actions_done', 0), ('actions_failed', 0);
    ",
    // 2: durable timers (`schedule` and `expect` decisions).
    //
    // `timers_due` holds only pending timers, in due order: the scheduler's
    // next-due and due-now reads, and the pending count, stay as small as the
    // backlog. `timers_by_entity` (until 17) serves the listing of an entity's timers and
    // the cancellation of its expects (entity, 'pending', expect_type) on every
    // event about it.
    "
    CREATE TABLE timers (
        id             INTEGER PRIMARY KEY,
        entity         TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('schedule', 'expect')),
        event_type     TEXT NOT NULL,
        data           TEXT NOT NULL,
        expect_type    TEXT,
        due_at_ms      INTEGER NOT NULL,
        catch_up       TEXT NOT NULL CHECK (catch_up IN ('fire_late', 'skip')),
        rule           TEXT NOT NULL,
        rule_hash      TEXT NOT NULL,
        created_by_seq INTEGER NOT NULL REFERENCES events (seq),
        status         TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'fired', 'cancelled', 'skipped')),
        fired_seq      INTEGER REFERENCES events (seq),
        closed_at_ms   INTEGER,
        CHECK ((kind = 'expect') = (expect_type IS NOT NULL))
    );
    CREATE INDEX timers_due ON timers (due_at_ms, id) WHERE status = 'pending';
    CREATE INDEX timers_by_entity ON timers (entity, status, expect_type);
    ",
    // 3: shadow decisions: recorded for the trail, never acted on.
    "
    ALTER TABLE decisions ADD COLUMN shadow INTEGER NOT NULL DEFAULT 0 CHECK (shadow IN (0, 1));
    ",
    // 4: convergence gates: sends held by `hold_send` decisions until a
    // `release_send` or an override lets them go, and the overrides.
    //
    // A held send is the `send.requested` event that asked (`event_seq`) and
    // the channel held; `held_sends_open` holds only the held ones, which is
    // what the processor loads at start and `GET /v1/gates` lists.
    "
    CREATE TABLE held_sends (
        id             INTEGER PRIMARY KEY,
        campaign       TEXT NOT NULL,
        channel        TEXT NOT NULL,
        event_seq      INTEGER NOT NULL REFERENCES events (seq),
        rule           TEXT NOT NULL,
        reason         TEXT NOT NULL,
        held_at_ms     INTEGER NOT NULL,
        status         TEXT NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'released')),
        released_seq   INTEGER REFERENCES events (seq),
        released_at_ms INTEGER,
        released_by    TEXT,
        UNIQUE (event_seq, channel)
    );
    CREATE INDEX held_sends_open ON held_sends (campaign, channel, id) WHERE status = 'held';
    CREATE INDEX held_sends_by_campaign ON held_sends (campaign, id);

    CREATE TABLE gate_overrides (
        id        INTEGER PRIMARY KEY,
        campaign  TEXT NOT NULL,
        channel   TEXT,
        by        TEXT NOT NULL,
        reason    TEXT NOT NULL,
        event_seq INTEGER NOT NULL REFERENCES events (seq),
        released  INTEGER NOT NULL,
        at_ms     INTEGER NOT NULL
    );
    CREATE INDEX gate_overrides_by_campaign ON gate_overrides (campaign, id);
    ",
    // 5: an entity's trail (`converge explain --entity`) reads the events of
    // one subject in `seq` order, a page at a time; without this index every
    // page scans the journal from where the last one ended.
    "
    CREATE INDEX events_by_subject ON events (subject, seq);
    ",
    // 6: what event sources keep between starts, by key: a connector's poll
    // cursor, the secret an Asana hook received in its handshake.
    "
    CREATE TABLE source_state (
        key           TEXT PRIMARY KEY,
        value         TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 7: dead letters. An action that failed for good (`failed` until now)
    // is `dead_letter`: it waits for a person to retry it (back to
    // `pending`, same id, so the same idempotency key) or drop it
    // (`dropped`). SQLite cannot change a CHECK constraint in place, so the
    // table is rebuilt; nothing references `actions`, and its indexes are
    // created again. `actions_dead_letter` holds only the dead letters: the
    // list people read and the gauge count stay as small as that backlog.
    //
    // `action_history` keeps what the `actions` row overwrites: every
    // failed attempt with its error, the dead-lettering, and each retry or
    // drop with who and why. Successful attempts add no row.
    "
    CREATE TABLE actions_v7 (
        id                 INTEGER PRIMARY KEY,
        decision_id        INTEGER NOT NULL REFERENCES decisions (id),
        event_seq          INTEGER NOT NULL REFERENCES events (seq),
        route              TEXT NOT NULL,
        plugin             TEXT NOT NULL,
        payload            TEXT NOT NULL,
        status             TEXT NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'done', 'dead_letter', 'dropped')),
        attempts           INTEGER NOT NULL DEFAULT 0,
        next_attempt_at_ms INTEGER,
        detail             TEXT,
        external_id        TEXT,
        created_at_ms      INTEGER NOT NULL,
        finished_at_ms     INTEGER
    );
    INSERT INTO actions_v7 (id, decision_id, event_seq, route, plugin, payload, status,
                            attempts, next_attempt_at_ms, detail, external_id,
                            created_at_ms, finished_at_ms)
    SELECT id, decision_id, event_seq, route, plugin, payload,
           CASE status WHEN 'failed' THEN 'dead_letter' ELSE status END,
           attempts, next_attempt_at_ms, detail, external_id, created_at_ms, finished_at_ms
    FROM actions;
    DROP TABLE actions;
    ALTER TABLE actions_v7 RENAME TO actions;
    CREATE INDEX actions_by_decision ON actions (decision_id);
    CREATE INDEX actions_pending ON actions (id) WHERE status = 'pending';
    CREATE INDEX actions_dead_letter ON actions (id) WHERE status = 'dead_letter';
    UPDATE meta SET key = 'actions_dead_lettered' WHERE key = 'actions_failed';

    CREATE TABLE action_history (
        id        INTEGER PRIMARY KEY,
        action_id INTEGER NOT NULL REFERENCES actions (id),
        at_ms     INTEGER NOT NULL,
        kind      TEXT NOT NULL
                  CHECK (kind IN ('attempt_failed', 'dead_lettered', 'retried', 'dropped')),
        attempts  INTEGER NOT NULL,
        detail    TEXT,
        by        TEXT,
        reason    TEXT
    );
    CREATE INDEX action_history_by_action ON action_history (action_id, id);
    ",
    // 8: what rules printed while deciding an event, for `converge explain`.
    "
    CREATE TABLE rule_notes (
        id        INTEGER PRIMARY KEY,
        event_seq INTEGER NOT NULL REFERENCES events (seq),
        rule      TEXT NOT NULL,
        message   TEXT NOT NULL
    );
    CREATE INDEX rule_notes_by_event ON rule_notes (event_seq);
    ",
    // 9: the metrics' samples (docs/reports.md), and the views BI tools read.
    // No reference to `events`: samples outlive pruned events. Clustered by
    // metric and time, so a report reads one contiguous range per metric
    // (the `n`th sample of its event keeps the key unique).
    "
    CREATE TABLE metric_samples (
        metric    TEXT NOT NULL,
        at_ms     INTEGER NOT NULL,
        event_seq INTEGER NOT NULL,
        n         INTEGER NOT NULL,
        week      TEXT NOT NULL,
        value     REAL NOT NULL,
        entity    TEXT NOT NULL,
        campaign  TEXT,
        owner     TEXT,
        channel   TEXT,
        stage     TEXT,
        PRIMARY KEY (metric, at_ms, event_seq, n)
    ) WITHOUT ROWID;
    -- The entities with an open block or escalation in their flow: what
    -- \"blocked now\" and \"open escalations\" read.
    CREATE INDEX entities_blocked ON entities (key) WHERE instr(state, '\"blocked_since\"') > 0;
    CREATE INDEX entities_escalated ON entities (key) WHERE instr(state, '\"escalated_since\"') > 0;
    CREATE VIEW report_samples AS
        SELECT metric,
               strftime('%Y-%m-%dT%H:%M:%fZ', at_ms / 1000.0, 'unixepoch') AS at,
               week,
               value,
               CASE WHEN metric IN ('review_time', 'handoff_delay', 'blocked_work', 'cycle_time')
                    THEN value / 3600.0 END AS hours,
               entity, campaign, owner, channel, stage, event_seq
        FROM metric_samples;
    CREATE VIEW report_weekly AS
        SELECT metric, week, owner, campaign, channel, stage,
               COUNT(*) AS samples,
               SUM(value) AS total,
               AVG(value) AS mean
        FROM metric_samples
        GROUP BY metric, week, owner, campaign, channel, stage;
    ",
    // 10: an event's identity is its id, source and the hook it came in on
    // (docs/webhooks.md), so a delivery on one hook cannot suppress another
    // hook's. SQLite cannot change a table's constraints, so the journal is
    // copied into a new table (seqs kept, so every reference still holds;
    // `migrate` turns foreign keys off around migrations). Events journaled
    // before have no hook recorded: they keep the empty one.
    "
    CREATE TABLE events_v10 (
        seq             INTEGER PRIMARY KEY,
        source          TEXT NOT NULL,
        id              TEXT NOT NULL,
        hook            TEXT NOT NULL DEFAULT '',
        type            TEXT NOT NULL,
        subject         TEXT,
        json            TEXT NOT NULL,
        received_at_ms  INTEGER NOT NULL,
        processed_at_ms INTEGER,
        UNIQUE (id, source, hook)
    );
    INSERT INTO events_v10 (seq, source, id, type, subject, json, received_at_ms, processed_at_ms)
        SELECT seq, source, id, type, subject, json, received_at_ms, processed_at_ms FROM events;
    DROP TABLE events;
    ALTER TABLE events_v10 RENAME TO events;
    CREATE INDEX events_by_subject ON events (subject, seq);
    ",
    // 11: the database's instance: a random id (SQLite's `random()` is
    // seeded from the OS) that idempotency keys carry, so a database
    // restored from a backup (which gets a new one) never reissues a key the
    // original issued. Each action keeps the instance it was created under;
    // the ones from before have none and keep their old keys.
    "
    INSERT INTO meta (key, value) VALUES ('instance', random());
    ALTER TABLE actions ADD COLUMN instance INTEGER;
    ",
    // 12: retention (`storage.retention`) removes an event with the rows
    // that reference it; these indexes find those rows without scanning
    // their tables.
    "
    CREATE INDEX timers_by_creator ON timers (created_by_seq);
    CREATE INDEX timers_by_fired ON timers (fired_seq) WHERE fired_seq IS NOT NULL;
    CREATE INDEX held_sends_by_release ON held_sends (released_seq) WHERE released_seq IS NOT NULL;
    CREATE INDEX gate_overrides_by_event ON gate_overrides (event_seq);
    ",
    // 13: an action's payload (what its plugin is called with: the
    // decision, the event and the entity) is kept only while the action may
    // still run: pending, or a dead letter a person may retry. It was most
    // of the database's size, and nothing reads it once the action is done
    // or dropped. The idempotency key a payload names (a released send's)
    // moves to its own column, since the action's key is shown for good.
    "
    CREATE TABLE action_payloads (
        action_id INTEGER PRIMARY KEY REFERENCES actions (id),
        payload   TEXT NOT NULL
    );
    INSERT INTO action_payloads (action_id, payload)
        SELECT id, payload FROM actions WHERE status IN ('pending', 'dead_letter');
    ALTER TABLE actions ADD COLUMN payload_key TEXT;
    UPDATE actions SET payload_key =
        CASE WHEN json_valid(payload) THEN json_extract(payload, '$.idempotency_key') END;
    ALTER TABLE actions DROP COLUMN payload;
    ",
    // 14: the rule and rule version (hash) of a decision or timer are
    // named once, in `rule_versions`, and referenced by its id: the two
    // strings repeated on every row were an eighth of a handoff's bytes. A
    // decision's `created_at_ms` goes too: it was always its event's
    // `processed_at_ms`, and nothing read it. The tables are copied (ids
    // kept) as in 10, since SQLite cannot add a NOT NULL column without a
    // default.
    "
    CREATE TABLE rule_versions (
        id   INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        hash TEXT NOT NULL,
        UNIQUE (rule, hash)
    );
    INSERT INTO rule_versions (rule, hash)
        SELECT rule, rule_hash FROM decisions UNION SELECT rule, rule_hash FROM timers;

    CREATE TABLE decisions_v14 (
        id           INTEGER PRIMARY KEY,
        event_seq    INTEGER NOT NULL REFERENCES events (seq),
        rule_version INTEGER NOT NULL REFERENCES rule_versions (id),
        kind         TEXT NOT NULL,
        body         TEXT NOT NULL,
        shadow       INTEGER NOT NULL DEFAULT 0 CHECK (shadow IN (0, 1))
    );
    INSERT INTO decisions_v14 (id, event_seq, rule_version, kind, body, shadow)
        SELECT d.id, d.event_seq, v.id, d.kind, d.body, d.shadow
        FROM decisions d JOIN rule_versions v ON v.rule = d.rule AND v.hash = d.rule_hash;
    DROP TABLE decisions;
    ALTER TABLE decisions_v14 RENAME TO decisions;
    CREATE INDEX decisions_by_event ON decisions (event_seq);

    CREATE TABLE timers_v14 (
        id             INTEGER PRIMARY KEY,
        entity         TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('schedule', 'expect')),
        event_type     TEXT NOT NULL,
        data           TEXT NOT NULL,
        expect_type    TEXT,
        due_at_ms      INTEGER NOT NULL,
        catch_up       TEXT NOT NULL CHECK (catch_up IN ('fire_late', 'skip')),
        rule_version   INTEGER NOT NULL REFERENCES rule_versions (id),
        created_by_seq INTEGER NOT NULL REFERENCES events (seq),
        status         TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'fired', 'cancelled', 'skipped')),
        fired_seq      INTEGER REFERENCES events (seq),
        closed_at_ms   INTEGER,
        CHECK ((kind = 'expect') = (expect_type IS NOT NULL))
    );
    INSERT INTO timers_v14 (id, entity, kind, event_type, data, expect_type, due_at_ms, catch_up,
                            rule_version, created_by_seq, status, fired_seq, closed_at_ms)
        SELECT t.id, t.entity, t.kind, t.event_type, t.data, t.expect_type, t.due_at_ms,
               t.catch_up, v.id, t.created_by_seq, t.status, t.fired_seq, t.closed_at_ms
        FROM timers t JOIN rule_versions v ON v.rule = t.rule AND v.hash = t.rule_hash;
    DROP TABLE timers;
    ALTER TABLE timers_v14 RENAME TO timers;
    CREATE INDEX timers_due ON timers (due_at_ms, id) WHERE status = 'pending';
    CREATE INDEX timers_by_entity ON timers (entity, status, expect_type);
    CREATE INDEX timers_by_creator ON timers (created_by_seq);
    CREATE INDEX timers_by_fired ON timers (fired_seq) WHERE fired_seq IS NOT NULL;
    ",
    // 15: an entity's open block and escalation are bits of a column
    // (`OpenSpan::bit`) that the writer sets from the state, not text found
    // in it: the partial indexes' `instr` ran over every state written, and
    // matched a field that happened to be named `blocked_since`.
    r#"
    ALTER TABLE entities ADD COLUMN open_spans INTEGER NOT NULL DEFAULT 0;
    UPDATE entities SET open_spans =
        (json_extract(state, '$.flow.blocked_since') IS NOT NULL
         OR EXISTS (SELECT 1 FROM json_each(state, '$.channels') c
                    WHERE json_extract(c.value, '$.flow.blocked_since') IS NOT NULL))
      + 2 * (json_extract(state, '$.flow.escalated_since') IS NOT NULL
         OR EXISTS (SELECT 1 FROM json_each(state, '$.channels') c
                    WHERE json_extract(c.value, '$.flow.escalated_since') IS NOT NULL))
    WHERE instr(state, '"blocked_since"') > 0 OR instr(state, '"escalated_since"') > 0;
    DROP INDEX entities_blocked;
    DROP INDEX entities_escalated;
    CREATE INDEX entities_blocked ON entities (key) WHERE open_spans & 1;
    CREATE INDEX entities_escalated ON entities (key) WHERE open_spans & 2;
    "#,
    // 16: the same CHECKs with `=` and `OR` in place of `IN` lists of four:
    // SQLite builds a temporary b-tree for such a list each time a row is
    // written, on every action, timer and history row. The tables are
    // copied (ids kept) as in 14; the constraints accept the same values.
    "
    CREATE TABLE actions_v16 (
        id                 INTEGER PRIMARY KEY,
        decision_id        INTEGER NOT NULL REFERENCES decisions (id),
        event_seq          INTEGER NOT NULL REFERENCES events (seq),
        route              TEXT NOT NULL,
        plugin             TEXT NOT NULL,
        status             TEXT NOT NULL DEFAULT 'pending'
                           CHECK (status = 'pending' OR status = 'done'
                                  OR status = 'dead_letter' OR status = 'dropped'),
        attempts           INTEGER NOT NULL DEFAULT 0,
        next_attempt_at_ms INTEGER,
        detail             TEXT,
        external_id        TEXT,
        created_at_ms      INTEGER NOT NULL,
        finished_at_ms     INTEGER,
        instance           INTEGER,
        payload_key        TEXT
    );
    INSERT INTO actions_v16 (id, decision_id, event_seq, route, plugin, status, attempts,
                             next_attempt_at_ms, detail, external_id, created_at_ms,
                             finished_at_ms, instance, payload_key)
        SELECT id, decision_id, event_seq, route, plugin, status, attempts,
               next_attempt_at_ms, detail, external_id, created_at_ms,
               finished_at_ms, instance, payload_key
        FROM actions;
    DROP TABLE actions;
    ALTER TABLE actions_v16 RENAME TO actions;
    CREATE INDEX actions_by_decision ON actions (decision_id);
    CREATE INDEX actions_pending ON actions (id) WHERE status = 'pending';
    CREATE INDEX actions_dead_letter ON actions (id) WHERE status = 'dead_letter';

    CREATE TABLE action_history_v16 (
        id        INTEGER PRIMARY KEY,
        action_id INTEGER NOT NULL REFERENCES actions (id),
        at_ms     INTEGER NOT NULL,
        kind      TEXT NOT NULL
                  CHECK (kind = 'attempt_failed' OR kind = 'dead_lettered'
                         OR kind = 'retried' OR kind = 'dropped'),
        attempts  INTEGER NOT NULL,
        detail    TEXT,
        by        TEXT,
        reason    TEXT
    );
    INSERT INTO action_history_v16 (id, action_id, at_ms, kind, attempts, detail, by, reason)
        SELECT id, action_id, at_ms, kind, attempts, detail, by, reason FROM action_history;
    DROP TABLE action_history;
    ALTER TABLE action_history_v16 RENAME TO action_history;
    CREATE INDEX action_history_by_action ON action_history (action_id, id);

    CREATE TABLE timers_v16 (
        id             INTEGER PRIMARY KEY,
        entity         TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('schedule', 'expect')),
        event_type     TEXT NOT NULL,
        data           TEXT NOT NULL,
        expect_type    TEXT,
        due_at_ms      INTEGER NOT NULL,
        catch_up       TEXT NOT NULL CHECK (catch_up IN ('fire_late', 'skip')),
        rule_version   INTEGER NOT NULL REFERENCES rule_versions (id),
        created_by_seq INTEGER NOT NULL REFERENCES events (seq),
        status         TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status = 'pending' OR status = 'fired'
                              OR status = 'cancelled' OR status = 'skipped'),
        fired_seq      INTEGER REFERENCES events (seq),
        closed_at_ms   INTEGER,
        CHECK ((kind = 'expect') = (expect_type IS NOT NULL))
    );
    INSERT INTO timers_v16 (id, entity, kind, event_type, data, expect_type, due_at_ms,
                            catch_up, rule_version, created_by_seq, status, fired_seq,
                            closed_at_ms)
        SELECT id, entity, kind, event_type, data, expect_type, due_at_ms,
               catch_up, rule_version, created_by_seq, status, fired_seq, closed_at_ms
        FROM timers;
    DROP TABLE timers;
    ALTER TABLE timers_v16 RENAME TO timers;
    CREATE INDEX timers_due ON timers (due_at_ms, id) WHERE status = 'pending';
    CREATE INDEX timers_by_entity ON timers (entity, status, expect_type);
    CREATE INDEX timers_by_creator ON timers (created_by_seq);
    CREATE INDEX timers_by_fired ON timers (fired_seq) WHERE fired_seq IS NOT NULL;
    ",
    // 17: `timers_by_entity` held every timer ever made, keyed by entity:
    // each new timer went into it at a random place (a fifth of the pages
    // a handoff's commit wrote). What needs the entity is the cancelling
    // of pending expects, which `timers_expecting` serves and nothing else
    // grows; an entity's timers are listed through the events about it
    // (a timer's entity is its creating event's subject) and
    // `timers_by_creator`.
    "
    DROP INDEX timers_by_entity;
    CREATE INDEX timers_expecting ON timers (entity, expect_type)
        WHERE status = 'pending' AND expect_type IS NOT NULL;
    ",
    // 18: who cancelled a pending timer by hand, and why (`POST
    // /v1/timers/cancel`); null for every other way a timer closes.
    "
    ALTER TABLE timers ADD COLUMN cancelled_by TEXT;
    ALTER TABLE timers ADD COLUMN cancel_reason TEXT;
    ",
    // 19: `launch_spread` is a duration: `report_samples` gives its hours.
    "
    DROP VIEW report_samples;
    CREATE VIEW report_samples AS
        SELECT metric,
               strftime('%Y-%m-%dT%H:%M:%fZ', at_ms / 1000.0, 'unixepoch') AS at,
               week,
               value,
               CASE WHEN metric IN ('review_time', 'handoff_delay', 'blocked_work',
                                    'launch_spread', 'cycle_time')
                    THEN value / 3600.0 END AS hours,
               entity, campaign, owner, channel, stage, event_seq
        FROM metric_samples;
    ",
];

/// The schema version this build reads and writes.
pub(crate) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Brings the schema to [`CURRENT_VERSION`], one transaction per migration.
/// The version is read inside each migration's write transaction, so two
/// processes opening a new database at once do not both migrate it.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // A migration may rebuild a referenced table (10); foreign keys cannot
    // be switched inside a transaction, so they are off for all of them,
    // and each migration checks they still hold before it commits.
    conn.pragma_update(None, "foreign_keys", false)?;
    let migrated = migrate_each(conn);
    conn.pragma_update(None, "foreign_keys", true)?;
    migrated
}

fn migrate_each(conn: &mut Connection) -> Result<(), StoreError> {
    let mut from = None;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = version(&tx)?;
        if !(0..=CURRENT_VERSION).contains(&found) {
            return Err(StoreError::SchemaVersion {
                found,
                supported: CURRENT_VERSION,
            });
        }
        let from = *from.get_or_insert(found);
        let Some(sql) = MIGRATIONS.get(found as usize) else {
            crate::log_migrated(from, found);
            return Ok(());
        };
        tx.execute_batch(sql)?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(StoreError::Migration {
                version: found + 1,
                message: format!("rows of `{table}` lost their references"),
            });
        }
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
        tracing::debug!(version = found + 1, "migrated the converge database schema");
    }
}

/// A reader does not migrate, so it must find the schema already current.
pub(crate) fn check_current(conn: &Connection) -> Result<(), StoreError> {
    let found = version(conn)?;
    if found != CURRENT_VERSION {
        return Err(StoreError::SchemaVersion {
            found,
            supported: CURRENT_VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::super::read::SUBJECT_TRAIL_HEADS;
    use super::*;
    use crate::TimerStatus;

    /// A database as version 1 left it, with an event, a decision, an
    /// action and a moved cursor.
    fn version_1(conn: &Connection) {
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO events (source, id, type, subject, json, received_at_ms, processed_at_ms)
             VALUES ('/jira', 'e-1', 'task.updated', 'task/T-1', '{}', 1000, 2000)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO decisions (event_seq, rule, rule_hash, kind, body, created_at_ms)
             VALUES (1, 'r', 'h', 'notify', '{}', 2000)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO actions (decision_id, event_seq, route, plugin, payload, created_at_ms)
             VALUES (1, 1, 'route', 'webhook-out', '{}', 2000)",
            [],
        )
        .unwrap();
        conn.execute(
            "UPDATE meta SET value = 1 WHERE key = ?1",
            params![PROCESSED_CURSOR],
        )
        .unwrap();
    }

    #[test]
    fn version_1_upgrades_in_place_to_timers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("converge.db");
        let mut conn = Connection::open(&path).unwrap();
        version_1(&conn);
        assert_eq!(version(&conn).unwrap(), 1);
        assert!(check_current(&conn).is_err(), "a reader refuses version 1");

        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), CURRENT_VERSION);
        check_current(&conn).unwrap();
        // What version 1 held is untouched.
        let kept: (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM actions),
                        (SELECT value FROM meta WHERE key = 'processed_cursor')",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!(kept, (1, 1, 1));
        // The timers table exists, with its constraints.
        conn.execute(
            "INSERT INTO timers (entity, kind, event_type, data, expect_type, due_at_ms,
                                 catch_up, rule_version, created_by_seq)
             VALUES ('task/T-1', 'schedule', 'task.late', '{}', NULL, 5000, 'skip', 1, 1)",
            [],
        )
        .unwrap();
        let bad_kind = conn.execute(
            "INSERT INTO timers (entity, kind, event_type, data, expect_type, due_at_ms,
                                 catch_up, rule_version, created_by_seq)
             VALUES ('task/T-1', 'expect', 'task.late', '{}', NULL, 5000, 'skip', 1, 1)",
            [],
        );
        assert!(bad_kind.is_err(), "an expect needs its expect_type");
        // Migrating again is a no-op.
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), CURRENT_VERSION);
    }

    #[test]
    fn version_9_upgrades_in_place_to_events_identified_by_their_hook() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("converge.db");
        let mut conn = Connection::open(&path).unwrap();
        version_1(&conn);
        for sql in &MIGRATIONS[1..9] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 9).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();

        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), CURRENT_VERSION);
        let foreign_keys: bool = conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert!(foreign_keys, "foreign keys are on again after migrating");
        // The event kept its seq and its decision and action still point at it.
        let kept: (i64, String, i64) = conn
            .query_row(
                "SELECT e.seq, e.hook, a.event_seq FROM events e JOIN actions a ON a.event_seq = e.seq",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!(kept, (1, String::new(), 1));
        // The same source and id on a hook is another event; the index by
        // subject is back.
        conn.execute(
            "INSERT INTO events (source, id, hook, type, subject, json, received_at_ms)
             VALUES ('/jira', 'e-1', 'jira', 'task.updated', 'task/T-1', '{}', 3000)",
            [],
        )
        .unwrap();
        let same_hook = conn.execute(
            "INSERT INTO events (source, id, hook, type, subject, json, received_at_ms)
             VALUES ('/jira', 'e-1', 'jira', 'task.updated', 'task/T-1', '{}', 4000)",
            [],
        );
        assert!(same_hook.is_err(), "(id, source, hook) is unique");
        assert!(subject_trail_plan(&conn).contains("events_by_subject"));
    }

    /// How SQLite would run an entity trail page, one line per plan step.
    fn subject_trail_plan(conn: &Connection) -> String {
        plan_of(conn, SUBJECT_TRAIL_HEADS)
    }

    fn plan_of(conn: &Connection, query: &str) -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap();
        let steps = stmt
            .query_map(params!["campaign/c-42", 0, 50], |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        steps.join("\n")
    }

    #[test]
    fn version_4_upgrades_in_place_to_the_subject_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("converge.db");
        let mut conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        for (id, subject) in [
            ("e-1", Some("campaign/c-42")),
            ("e-2", Some("campaign/c-7")),
            ("e-3", None),
            ("e-4", Some("campaign/c-42")),
        ] {
            conn.execute(
                "INSERT INTO events (source, id, type, subject, json, received_at_ms)
                 VALUES ('/tests', ?1, 'campaign.updated', ?2, '{}', 1000)",
                params![id, subject],
            )
            .unwrap();
        }
        assert!(check_current(&conn).is_err(), "a reader refuses version 4");
        // The `hook` column came in version 10.
        let before = plan_of(&conn, &SUBJECT_TRAIL_HEADS.replace(", hook", ""));
        assert!(!before.contains("events_by_subject"), "{before}");

        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), CURRENT_VERSION);
        check_current(&conn).unwrap();
        let plan = subject_trail_plan(&conn);
        assert!(
            plan.contains("USING INDEX events_by_subject"),
            "an entity trail page reads the index: {plan}"
        );
        assert!(
            !plan.contains("TEMP B-TREE"),
            "the index gives the seq order: {plan}"
        );
        // The journal is untouched, and the index finds what it held.
        let seqs = conn
            .prepare(SUBJECT_TRAIL_HEADS)
            .unwrap()
            .query_map(params!["campaign/c-42", 0, 50], |row| row.get::<_, i64>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(seqs, [1, 4]);
        let events: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(events, 4);
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
    }

    #[test]
    fn version_6_upgrades_in_place_to_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("converge.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        version_1(&conn);
        for sql in &MIGRATIONS[1..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        // Action 1 is pending (from version_1); 2 failed for good, 3 is done.
        for (status, detail) in [("failed", "HTTP 401"), ("done", "HTTP 200")] {
            conn.execute(
                "INSERT INTO actions (decision_id, event_seq, route, plugin, payload, status,
                                      attempts, detail, created_at_ms, finished_at_ms)
                 VALUES (1, 1, 'route', 'webhook-out', '{}', ?1, 3, ?2, 2000, 3000)",
                params![status, detail],
            )
            .unwrap();
        }
        conn.execute(
            "UPDATE meta SET value = 1 WHERE key IN ('actions_done', 'actions_failed')",
            [],
        )
        .unwrap();

        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), CURRENT_VERSION);
        check_current(&conn).unwrap();
        let rows: Vec<(i64, String, i64, Option<String>)> = conn
            .prepare("SELECT id, status, attempts, detail FROM actions ORDER BY id")
            .unwrap()
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "pending".to_string(), 0, None),
                (
                    2,
                    "dead_letter".to_string(),
                    3,
                    Some("HTTP 401".to_string())
                ),
                (3, "done".to_string(), 3, Some("HTTP 200".to_string())),
            ]
        );
        let dead_lettered: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![ACTIONS_DEAD_LETTERED],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(dead_lettered, 1);
        assert_eq!(
            index_names(&conn, "actions"),
            [
                "actions_by_decision",
                "actions_dead_letter",
                "actions_pending"
            ]
        );
        let bad = conn.execute("UPDATE actions SET status = 'failed' WHERE id = 1", []);
        assert!(bad.is_err(), "`failed` is no longer a status");
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        let dangling: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);
    }

    /// Actions recorded before version 11 have no instance, and keep the
    /// idempotency key they always had: a retry of one in flight stays a
    /// duplicate to its receiver. New ones carry the instance.
    #[test]
    fn version_9_upgrades_in_place_to_instances_keeping_old_keys() {
        use crate::Backend;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("converge.db");
        {
            let conn = Connection::open(&path).unwrap();
            version_1(&conn);
            for sql in &MIGRATIONS[1..9] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 9).unwrap();
        }

        let store = opened(&path);
        let pending = store.pending_actions(10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].instance, None);
        let old = store.action(1).unwrap().unwrap().action;
        assert_eq!(old.idempotency_key(), "converge-action-1");
        let instance = store.instance().unwrap();
        let other = tempfile::tempdir().unwrap();
        let other = super::super::SqliteStore::open(
            &other.path().join("c.db"),
            crate::Durability::Full,
            Default::default(),
        )
        .unwrap()
        .instance()
        .unwrap();
        assert_ne!(instance, other, "each database draws its own");
    }

    /// A database left at `version`, built from [`version_1`]'s rows.
    fn at_version(conn: &Connection, version: usize) {
        // As `migrate` runs them: 10 rebuilds a referenced table.
        conn.pragma_update(None, "foreign_keys", false).unwrap();
        version_1(conn);
        for sql in &MIGRATIONS[1..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version as i64)
            .unwrap();
    }

    /// The names of `table`'s indexes, in order.
    fn index_names(conn: &Connection, table: &str) -> Vec<String> {
        conn.prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?1 ORDER BY name",
        )
        .unwrap()
        .query_map([table], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// A database file left at `version` ([`at_version`]), with what
    /// `seed` adds to it; the directory goes when the first value drops.
    fn database_at(
        version: usize,
        seed: impl FnOnce(&Connection),
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("converge.db");
        let conn = Connection::open(&path).unwrap();
        at_version(&conn, version);
        seed(&conn);
        (dir, path)
    }

    /// The store opened (and so migrated) on `path`, at the current version.
    fn opened(path: &std::path::Path) -> super::super::SqliteStore {
        let store =
            super::super::SqliteStore::open(path, crate::Durability::Full, Default::default())
                .unwrap();
        assert_eq!(version(&store.conn).unwrap(), CURRENT_VERSION);
        store
    }

    /// What the store's coherence checks find wrong.
    fn problems(store: &super::super::SqliteStore) -> Vec<String> {
        use crate::Backend;
        store
            .coherence()
            .unwrap()
            .into_iter()
            .filter_map(|c| c.problem)
            .collect()
    }

    /// Version 13 keeps the payloads of the actions that may still run,
    /// drops the others', and keeps the keys payloads named.
    #[test]
    fn version_12_upgrades_in_place_to_payloads_kept_while_needed() {
        use crate::Backend;

        let (_dir, path) = database_at(12, |conn| {
            // Action 1 is pending with '{}' (from version_1); 2 is a dead
            // letter, 3 done with a send's key, 4 dropped.
            for (status, payload) in [
                ("dead_letter", r#"{"kind":"notify"}"#),
                (
                    "done",
                    r#"{"kind":"notify","idempotency_key":"converge-send-3-ab12"}"#,
                ),
                ("dropped", r#"{"kind":"notify"}"#),
            ] {
                conn.execute(
                    "INSERT INTO actions (decision_id, event_seq, route, plugin, payload, status,
                                      attempts, created_at_ms, finished_at_ms, instance)
                 VALUES (1, 1, 'route', 'webhook-out', ?1, ?2, 1, 2000, 3000, 5)",
                    params![payload, status],
                )
                .unwrap();
            }
        });
        let store = opened(&path);
        let kept: Vec<(i64, String)> = store
            .conn
            .prepare("SELECT action_id, payload FROM action_payloads ORDER BY action_id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            kept,
            [
                (1, "{}".to_string()),
                (2, r#"{"kind":"notify"}"#.to_string())
            ]
        );
        let pending = store.pending_actions(10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].payload.as_str(), "{}");
        let done = store.action(3).unwrap().unwrap().action;
        assert_eq!(done.payload_key.as_deref(), Some("converge-send-3-ab12"));
        assert_eq!(
            done.idempotency_key(),
            "converge-0000000000000005-send-3-ab12"
        );
        assert_eq!(store.action(2).unwrap().unwrap().action.payload_key, None);
        let problems = problems(&store);
        assert!(problems.is_empty(), "{problems:?}");
    }

    /// A database at version 13 names each decision's and timer's rule and
    /// rule version in two text columns; 14 moves them to `rule_versions`
    /// and keeps every row's id, references and reading.
    #[test]
    fn version_13_upgrades_in_place_to_rule_versions_named_once() {
        use crate::Backend;

        let (_dir, path) = database_at(13, |conn| {
            conn.execute_batch(
                r#"
            UPDATE decisions SET body = '{"kind":"notify","to":"ana","message":"m"}';
            INSERT INTO decisions (event_seq, rule, rule_hash, kind, body, created_at_ms)
                VALUES (1, 'gate', 'h2', 'escalate',
                        '{"kind":"escalate","to":"owner","reason":"late","level":2}', 2000);
            INSERT INTO timers (entity, kind, event_type, data, expect_type, due_at_ms,
                                catch_up, rule, rule_hash, created_by_seq)
                VALUES ('task/T-1', 'schedule', 'task.late', '{}', NULL, 5000, 'skip',
                        'r', 'h', 1),
                       ('task/T-1', 'expect', 'task.late', '{}', 'task.done', 6000,
                        'fire_late', 'gate', 'h3', 1);
            "#,
            )
            .unwrap();
        });
        let store = opened(&path);
        let versions: Vec<(i64, String, String)> = store
            .conn
            .prepare("SELECT id, rule, hash FROM rule_versions ORDER BY rule, hash")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let named: Vec<(&str, &str)> = versions
            .iter()
            .map(|(_, r, h)| (r.as_str(), h.as_str()))
            .collect();
        assert_eq!(named, [("gate", "h2"), ("gate", "h3"), ("r", "h")]);

        let trail = store.event_trail("/jira", "e-1").unwrap().unwrap();
        let read: Vec<(i64, &str, &str, &str)> = trail
            .decisions
            .iter()
            .map(|d| {
                let decision = &d.decision;
                (
                    d.id,
                    decision.rule.as_str(),
                    decision.rule_hash.as_str(),
                    decision.kind.name(),
                )
            })
            .collect();
        assert_eq!(
            read,
            [(1, "r", "h", "notify"), (2, "gate", "h2", "escalate")]
        );
        assert_eq!(
            trail.decisions[0].actions.len(),
            1,
            "the action kept its decision"
        );
        let key = converge_model::EntityKey::parse("task/T-1").unwrap();
        let timers: Vec<(i64, String, String)> = store
            .entity_timers(&key, false, 10)
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.rule, t.rule_hash))
            .collect();
        assert_eq!(
            timers,
            [
                (2, "gate".to_string(), "h3".to_string()),
                (1, "r".to_string(), "h".to_string())
            ]
        );
        let problems = problems(&store);
        assert!(problems.is_empty(), "{problems:?}");
    }

    /// Version 15 sets each entity's `open_spans` from its state: a span
    /// open on the entity or on one of its channels, and nothing for a
    /// field that only bears a span's name.
    #[test]
    fn version_14_upgrades_in_place_to_open_spans_read_from_the_states() {
        use crate::{Backend, OpenSpan};

        let states = crate::records::tests::open_span_states();

        let (_dir, path) = database_at(14, |conn| {
            for entity in &states {
                conn.execute(
                    "INSERT INTO entities (key, state, updated_at_ms) VALUES (?1, ?2, 0)",
                    params![entity.key_text(), serde_json::to_string(entity).unwrap()],
                )
                .unwrap();
            }
        });
        let store = opened(&path);
        let bits: Vec<(String, i64)> = store
            .conn
            .prepare("SELECT key, open_spans FROM entities WHERE key LIKE 'task/T-%' ORDER BY key")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<(String, i64)> = states
            .iter()
            .map(|e| (e.key_text(), OpenSpan::bits_of(e)))
            .collect();
        assert_eq!(bits, expected);
        assert_eq!(
            expected.iter().map(|(_, bits)| *bits).collect::<Vec<_>>(),
            [1, 1, 2, 3, 0, 0]
        );
        let ids = |span| -> Vec<String> {
            store
                .entities_with_open(span, None, 10)
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .filter(|id| id.starts_with("T-"))
                .collect()
        };
        assert_eq!(ids(OpenSpan::Blocked), ["T-1", "T-2", "T-4"]);
        assert_eq!(ids(OpenSpan::Escalated), ["T-3", "T-4"]);
        let problems = problems(&store);
        assert!(problems.is_empty(), "{problems:?}");
    }

    /// Version 16 writes the status and kind checks without `IN` lists:
    /// the rows and their ids are kept, the checks refuse what they did,
    /// and writing an action, a timer or a history row no longer builds a
    /// temporary b-tree (`OpenEphemeral`) for a check.
    #[test]
    fn version_15_upgrades_in_place_to_checks_without_in_lists() {
        use crate::Backend;

        let (_dir, path) = database_at(15, |conn| {
            conn.execute_batch(
                "INSERT INTO action_history (action_id, at_ms, kind, attempts, detail)
                 VALUES (1, 2500, 'attempt_failed', 1, 'timeout');
             INSERT INTO timers (entity, kind, event_type, data, expect_type, due_at_ms,
                                 catch_up, rule_version, created_by_seq, status)
                 VALUES ('task/T-1', 'schedule', 'task.late', '{}', NULL, 5000, 'skip',
                         1, 1, 'pending');",
            )
            .unwrap();
        });
        let store = opened(&path);
        let history = store.action(1).unwrap().unwrap().action.history;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].detail.as_deref(), Some("timeout"));
        assert_eq!(store.pending_actions(10).unwrap()[0].id, 1);
        let key = converge_model::EntityKey::parse("task/T-1").unwrap();
        assert_eq!(store.entity_timers(&key, false, 10).unwrap().len(), 1);

        let conn = &store.conn;
        for refused in [
            "UPDATE actions SET status = 'failed' WHERE id = 1",
            "UPDATE timers SET status = 'gone' WHERE id = 1",
            "UPDATE action_history SET kind = 'done' WHERE id = 1",
        ] {
            let err = conn.execute(refused, []).unwrap_err().to_string();
            assert!(err.contains("CHECK constraint failed"), "{refused}: {err}");
        }
        for write in [
            "INSERT INTO actions (decision_id, event_seq, route, plugin, created_at_ms, instance)
                 VALUES (1, 1, 'route', 'webhook-out', 3000, 1)",
            "UPDATE actions SET status = 'done', finished_at_ms = 3000
                 WHERE id = 1 AND status = 'pending'",
            "INSERT INTO timers (entity, kind, event_type, data, expect_type, due_at_ms,
                                 catch_up, rule_version, created_by_seq)
                 VALUES ('task/T-1', 'expect', 'task.late', '{}', 'task.done', 6000,
                         'fire_late', 1, 1)",
            "UPDATE timers SET status = 'fired', closed_at_ms = 3000
                 WHERE id = 1 AND status = 'pending'",
            "INSERT INTO action_history (action_id, at_ms, kind, attempts)
                 VALUES (1, 3000, 'retried', 1)",
        ] {
            let program: Vec<String> = conn
                .prepare(&format!("EXPLAIN {write}"))
                .unwrap()
                .query_map([], |row| row.get(1))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                !program.iter().any(|op| op == "OpenEphemeral"),
                "{write}: {program:?}"
            );
        }
        let problems = problems(&store);
        assert!(problems.is_empty(), "{problems:?}");
    }

    /// Version 17 keeps only pending expects in an index by entity: every
    /// timer is still listed for its entity (through the events about it),
    /// a pending expect is still cancelled by the event it waits for, and
    /// the index of every timer by entity is gone.
    #[test]
    fn version_16_upgrades_in_place_to_an_index_of_pending_expects() {
        use crate::records::{ExpectedArrival, ProcessedEvent, WriteBatch};
        use crate::{Backend, NewEvent};

        let (_dir, path) = database_at(16, |conn| {
            conn.execute_batch(
                "INSERT INTO timers (entity, kind, event_type, data, expect_type, due_at_ms,
                                     catch_up, rule_version, created_by_seq, status)
                 VALUES ('task/T-1', 'schedule', 'task.late', '{}', NULL, 5000, 'skip',
                         1, 1, 'fired'),
                        ('task/T-1', 'expect', 'task.unapproved', '{}', 'task.approved',
                         6000, 'fire_late', 1, 1, 'pending');",
            )
            .unwrap();
        });
        let mut store = opened(&path);
        assert_eq!(
            index_names(&store.conn, "timers"),
            [
                "timers_by_creator",
                "timers_by_fired",
                "timers_due",
                "timers_expecting"
            ]
        );
        let key = converge_model::EntityKey::parse("task/T-1").unwrap();
        let listed = |store: &super::super::SqliteStore| -> Vec<(i64, TimerStatus)> {
            store
                .entity_timers(&key, false, 10)
                .unwrap()
                .into_iter()
                .map(|t| (t.id, t.status))
                .collect()
        };
        assert_eq!(
            listed(&store),
            [(2, TimerStatus::Pending), (1, TimerStatus::Fired)]
        );

        let approved = NewEvent {
            hook: None,
            source: "/jira".into(),
            id: "e-2".into(),
            ty: "task.approved".into(),
            subject: Some("task/T-1".into()),
            json: r#"{"specversion":"1.0","id":"e-2","source":"/jira","type":"task.approved","subject":"task/T-1"}"#.into(),
            received_at_ms: 3000,
        };
        store
            .write(&WriteBatch {
                appends: vec![approved],
                ..WriteBatch::default()
            })
            .unwrap();
        let written = store
            .write(&WriteBatch {
                processed: vec![ProcessedEvent {
                    seq: 2,
                    cancel_expects: vec![ExpectedArrival::came("task/T-1", "task.approved")],
                    processed_at_ms: 3000,
                    ..ProcessedEvent::default()
                }],
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(written.timers_cancelled, 1);
        assert_eq!(
            listed(&store),
            [(2, TimerStatus::Cancelled), (1, TimerStatus::Fired)]
        );
        let problems = problems(&store);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
