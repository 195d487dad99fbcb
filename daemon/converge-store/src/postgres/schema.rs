//! The PostgreSQL schema and its migrations, versioned in `schema_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Migrations
//! are only ever appended: a released one is never edited. The versions are
//! PostgreSQL's own: the tables mirror SQLite's (same columns, same
//! meaning, times in epoch milliseconds) plus what sharing needs, but the
//! histories differ.

use std::path::PathBuf;

use postgres::Client;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite's seven versions built, and the cluster's part:
    // partitions, leases, fencing tokens.
    //
    // Columns compared by order (`events.id` for a schedule's last
    // occurrence, `entities.key` for paging) are `COLLATE "C"`: byte order,
    // like SQLite, whatever the database's locale.
    //
    // `partition` (events, timers, held sends) is where the work of one
    // daemon is found: `events_unprocessed` holds only what waits to be
    // processed, so each daemon's next page, and the processed cursor, stay
    // as small as the backlog.
    //
    // An action's lease (`lease_holder`, `lease_token`, `lease_until_ms`)
    // says which daemon runs it; all three are set or none.
    //
    // `counters` replaces SQLite's `meta` counters: spread over shards (the
    // connection's backend pid) so two daemons recording outcomes do not
    // queue on one row until each other's commit.
    r#"
    CREATE FUNCTION converge_now_ms() RETURNS bigint LANGUAGE sql VOLATILE
        AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

    CREATE TABLE events (
        seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        source          text NOT NULL,
        id              text COLLATE "C" NOT NULL,
        type            text NOT NULL,
        subject         text,
        json            text NOT NULL,
        received_at_ms  bigint NOT NULL,
        processed_at_ms bigint,
        partition       integer NOT NULL,
        UNIQUE (id, source)
    );
    CREATE INDEX events_unprocessed ON events (partition, seq) WHERE processed_at_ms IS NULL;
    CREATE INDEX events_by_subject ON events (subject, seq);

    CREATE TABLE entities (
        key           text COLLATE "C" PRIMARY KEY,
        state         text NOT NULL,
        updated_at_ms bigint NOT NULL
    );

    CREATE TABLE decisions (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_seq     bigint NOT NULL REFERENCES events (seq),
        rule          text NOT NULL,
        rule_hash     text NOT NULL,
        kind          text NOT NULL,
        body          text NOT NULL,
        created_at_ms bigint NOT NULL,
        shadow        boolean NOT NULL DEFAULT false
    );
    CREATE INDEX decisions_by_event ON decisions (event_seq);

    CREATE TABLE actions (
        id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        decision_id        bigint NOT NULL REFERENCES decisions (id),
        event_seq          bigint NOT NULL REFERENCES events (seq),
        route              text NOT NULL,
        plugin             text NOT NULL,
        payload            text NOT NULL,
        status             text NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'done', 'dead_letter', 'dropped')),
        attempts           bigint NOT NULL DEFAULT 0,
        next_attempt_at_ms bigint,
        detail             text,
        external_id        text,
        created_at_ms      bigint NOT NULL,
        finished_at_ms     bigint,
        lease_holder       text,
        lease_token        bigint,
        lease_until_ms     bigint,
        CHECK ((lease_holder IS NULL) = (lease_token IS NULL)
               AND (lease_token IS NULL) = (lease_until_ms IS NULL))
    );
    CREATE INDEX actions_by_decision ON actions (decision_id);
    CREATE INDEX actions_pending ON actions (id) WHERE status = 'pending';
    CREATE INDEX actions_dead_letter ON actions (id) WHERE status = 'dead_letter';

    CREATE TABLE action_history (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        action_id bigint NOT NULL REFERENCES actions (id),
        at_ms     bigint NOT NULL,
        kind      text NOT NULL
                  CHECK (kind IN ('attempt_failed', 'dead_lettered', 'retried', 'dropped')),
        attempts  bigint NOT NULL,
        detail    text,
        "by"      text,
        reason    text
    );
    CREATE INDEX action_history_by_action ON action_history (action_id, id);

    CREATE TABLE rule_failures (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_seq bigint NOT NULL REFERENCES events (seq),
        rule      text NOT NULL,
        rule_hash text NOT NULL,
        message   text NOT NULL
    );
    CREATE INDEX rule_failures_by_event ON rule_failures (event_seq);

    CREATE TABLE timers (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        entity         text NOT NULL,
        kind           text NOT NULL CHECK (kind IN ('schedule', 'expect')),
        event_type     text NOT NULL,
        data           text NOT NULL,
        expect_type    text,
        due_at_ms      bigint NOT NULL,
        catch_up       text NOT NULL CHECK (catch_up IN ('fire_late', 'skip')),
        rule           text NOT NULL,
        rule_hash      text NOT NULL,
        created_by_seq bigint NOT NULL REFERENCES events (seq),
        status         text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'fired', 'cancelled', 'skipped')),
        fired_seq      bigint REFERENCES events (seq),
        closed_at_ms   bigint,
        partition      integer NOT NULL,
        CHECK ((kind = 'expect') = (expect_type IS NOT NULL))
    );
    CREATE INDEX timers_due ON timers (due_at_ms, id) WHERE status = 'pending';
    CREATE INDEX timers_due_by_partition ON timers (partition, due_at_ms, id)
        WHERE status = 'pending';
    CREATE INDEX timers_by_entity ON timers (entity, status, expect_type);

    CREATE TABLE held_sends (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        campaign       text NOT NULL,
        channel        text NOT NULL,
        event_seq      bigint NOT NULL REFERENCES events (seq),
        rule           text NOT NULL,
        reason         text NOT NULL,
        held_at_ms     bigint NOT NULL,
        status         text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'released')),
        released_seq   bigint REFERENCES events (seq),
        released_at_ms bigint,
        released_by    text,
        partition      integer NOT NULL,
        UNIQUE (event_seq, channel)
    );
    CREATE INDEX held_sends_open ON held_sends (campaign, channel, id) WHERE status = 'held';
    CREATE INDEX held_sends_by_campaign ON held_sends (campaign, id);

    CREATE TABLE gate_overrides (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        campaign  text NOT NULL,
        channel   text,
        "by"      text NOT NULL,
        reason    text NOT NULL,
        event_seq bigint NOT NULL REFERENCES events (seq),
        released  bigint NOT NULL,
        at_ms     bigint NOT NULL
    );
    CREATE INDEX gate_overrides_by_campaign ON gate_overrides (campaign, id);

    CREATE TABLE source_state (
        key           text PRIMARY KEY,
        value         text NOT NULL,
        updated_at_ms bigint NOT NULL
    );

    CREATE TABLE counters (
        name  text NOT NULL,
        shard integer NOT NULL,
        value bigint NOT NULL,
        PRIMARY KEY (name, shard)
    );

    CREATE TABLE leases (
        name          text PRIMARY KEY,
        holder        text NOT NULL,
        token         bigint NOT NULL,
        expires_at_ms bigint NOT NULL
    );
    -- Fencing tokens, of partition and action leases alike: each grant to a
    -- new holder takes the next, so a newer holder always has a higher one.
    CREATE SEQUENCE lease_tokens;
    "#,
    // 2: what rules printed while deciding an event, for `converge explain`.
    r#"
    CREATE TABLE rule_notes (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_seq bigint NOT NULL REFERENCES events (seq),
        rule      text NOT NULL,
        message   text NOT NULL
    );
    CREATE INDEX rule_notes_by_event ON rule_notes (event_seq);
    "#,
    // 3: the metrics' samples (docs/reports.md), and the views BI tools read.
    // No reference to `events`: samples outlive pruned events.
    r#"
    CREATE TABLE metric_samples (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_seq bigint NOT NULL,
        metric    text COLLATE "C" NOT NULL,
        at_ms     bigint NOT NULL,
        week      text COLLATE "C" NOT NULL,
        value     double precision NOT NULL,
        entity    text COLLATE "C" NOT NULL,
        campaign  text COLLATE "C",
        owner     text COLLATE "C",
        channel   text COLLATE "C",
        stage     text COLLATE "C"
    );
    CREATE INDEX metric_samples_by_metric ON metric_samples (metric, at_ms);
    -- The entities with an open block or escalation in their flow: what
    -- "blocked now" and "open escalations" read.
    CREATE INDEX entities_blocked ON entities (key) WHERE strpos(state, '"blocked_since"') > 0;
    CREATE INDEX entities_escalated ON entities (key) WHERE strpos(state, '"escalated_since"') > 0;
    CREATE VIEW report_samples AS
        SELECT metric,
               to_timestamp(at_ms / 1000.0) AS at,
               week::date AS week,
               value,
               CASE WHEN metric IN ('review_time', 'handoff_delay', 'blocked_work', 'cycle_time')
                    THEN value / 3600.0 END AS hours,
               entity, campaign, owner, channel, stage, event_seq
        FROM metric_samples;
    CREATE VIEW report_weekly AS
        SELECT metric, week::date AS week, owner, campaign, channel, stage,
               COUNT(*) AS samples,
               SUM(value) AS total,
               AVG(value) AS mean
        FROM metric_samples
        GROUP BY metric, week, owner, campaign, channel, stage;
    "#,
    // 4: an event's identity is its id, source and the hook it came in on
    // (docs/webhooks.md). Events journaled before keep the empty hook.
    r#"
    ALTER TABLE events ADD COLUMN hook text NOT NULL DEFAULT '';
    ALTER TABLE events ADD CONSTRAINT events_identity UNIQUE (id, source, hook);
    ALTER TABLE events DROP CONSTRAINT events_id_source_key;
    "#,
    // 5: the database's instance: a random id that idempotency keys carry,
    // so a database restored from a dump (given a new one by `converge
    // verify --new-instance`) never reissues a key the original issued.
    // Each action keeps the instance it was created under; the ones from
    // before have none and keep their old keys.
    r#"
    CREATE TABLE instance (
        id  bigint NOT NULL,
        one boolean PRIMARY KEY DEFAULT true CHECK (one)
    );
    INSERT INTO instance (id)
        VALUES (('x' || substr(md5(gen_random_uuid()::text), 1, 16))::bit(64)::bigint);
    ALTER TABLE actions ADD COLUMN instance bigint;
    "#,
    // 6: retention (`storage.retention`) removes an event with the rows
    // that reference it; these indexes find those rows without scanning
    // their tables.
    r#"
    CREATE INDEX timers_by_creator ON timers (created_by_seq);
    CREATE INDEX timers_by_fired ON timers (fired_seq) WHERE fired_seq IS NOT NULL;
    CREATE INDEX held_sends_by_release ON held_sends (released_seq) WHERE released_seq IS NOT NULL;
    CREATE INDEX gate_overrides_by_event ON gate_overrides (event_seq);
    "#,
    // 7: an action's payload is kept only while the action may still run,
    // as SQLite's version 13 does (see there).
    r#"
    CREATE TABLE action_payloads (
        action_id bigint PRIMARY KEY REFERENCES actions (id),
        payload   text NOT NULL
    );
    INSERT INTO action_payloads (action_id, payload)
        SELECT id, payload FROM actions WHERE status IN ('pending', 'dead_letter');
    ALTER TABLE actions ADD COLUMN payload_key text;
    UPDATE actions SET payload_key = payload::jsonb ->> 'idempotency_key'
        WHERE payload LIKE '%"idempotency_key"%';
    ALTER TABLE actions DROP COLUMN payload;
    "#,
    // 8: decisions and timers name their rule version by id, and decisions
    // lose `created_at_ms`, as SQLite's version 14 does (see there).
    r#"
    CREATE TABLE rule_versions (
        id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        rule text NOT NULL,
        hash text NOT NULL,
        UNIQUE (rule, hash)
    );
    INSERT INTO rule_versions (rule, hash)
        SELECT rule, rule_hash FROM decisions UNION SELECT rule, rule_hash FROM timers;
    ALTER TABLE decisions ADD COLUMN rule_version integer REFERENCES rule_versions (id);
    UPDATE decisions d SET rule_version = v.id
        FROM rule_versions v WHERE v.rule = d.rule AND v.hash = d.rule_hash;
    ALTER TABLE decisions ALTER COLUMN rule_version SET NOT NULL,
        DROP COLUMN rule, DROP COLUMN rule_hash, DROP COLUMN created_at_ms;
    ALTER TABLE timers ADD COLUMN rule_version integer REFERENCES rule_versions (id);
    UPDATE timers t SET rule_version = v.id
        FROM rule_versions v WHERE v.rule = t.rule AND v.hash = t.rule_hash;
    ALTER TABLE timers ALTER COLUMN rule_version SET NOT NULL,
        DROP COLUMN rule, DROP COLUMN rule_hash;
    "#,
    // 9: an entity's open block and escalation are bits of a column the
    // writer sets, as SQLite's version 15 does (see there).
    r#"
    ALTER TABLE entities ADD COLUMN open_spans smallint NOT NULL DEFAULT 0;
    UPDATE entities SET open_spans =
        (coalesce(state::jsonb -> 'flow' ? 'blocked_since', false)
         OR EXISTS (SELECT 1 FROM jsonb_each(coalesce(state::jsonb -> 'channels', '{}')) c
                    WHERE c.value -> 'flow' ? 'blocked_since'))::int
      + 2 * (coalesce(state::jsonb -> 'flow' ? 'escalated_since', false)
         OR EXISTS (SELECT 1 FROM jsonb_each(coalesce(state::jsonb -> 'channels', '{}')) c
                    WHERE c.value -> 'flow' ? 'escalated_since'))::int
    WHERE strpos(state, '"blocked_since"') > 0 OR strpos(state, '"escalated_since"') > 0;
    DROP INDEX entities_blocked;
    DROP INDEX entities_escalated;
    CREATE INDEX entities_blocked ON entities (key) WHERE open_spans & 1 <> 0;
    CREATE INDEX entities_escalated ON entities (key) WHERE open_spans & 2 <> 0;
    "#,
    // 10: who cancelled a pending timer by hand, and why, as SQLite's
    // version 18.
    r#"
    ALTER TABLE timers ADD COLUMN cancelled_by text, ADD COLUMN cancel_reason text;
    "#,
    // 11: `launch_spread` is a duration: `report_samples` gives its hours
    // (SQLite's version 19).
    r#"
    CREATE OR REPLACE VIEW report_samples AS
        SELECT metric,
               to_timestamp(at_ms / 1000.0) AS at,
               week::date AS week,
               value,
               CASE WHEN metric IN ('review_time', 'handoff_delay', 'blocked_work',
                                    'launch_spread', 'cycle_time')
                    THEN value / 3600.0 END AS hours,
               entity, campaign, owner, channel, stage, event_seq
        FROM metric_samples;
    "#,
];

/// The schema version this build reads and writes.
pub(super) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock migrations hold ("converge" in ASCII), so daemons
/// starting at once on a new database migrate it once: the others wait,
/// then find it current.
const MIGRATION_LOCK: i64 = 0x636f_6e76_6572_6765;

/// Brings the schema to [`CURRENT_VERSION`], in one transaction.
pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)")?;
    let found = match tx.query_opt("SELECT version FROM schema_version", &[])? {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])?;
            0
        }
    };
    if !(0..=CURRENT_VERSION).contains(&found) {
        return Err(StoreError::SchemaVersion {
            found,
            supported: CURRENT_VERSION,
        });
    }
    if found == CURRENT_VERSION {
        return Ok(());
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(sql)?;
        tracing::debug!(version, "migrated the converge database schema");
    }
    tx.execute(
        "UPDATE schema_version SET version = $1",
        &[&CURRENT_VERSION],
    )?;
    tx.commit()?;
    crate::log_migrated(found, CURRENT_VERSION);
    Ok(())
}

/// A reader does not migrate, so it must find the schema already current.
pub(super) fn check_current(client: &mut Client, location: PathBuf) -> Result<(), StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        return Err(StoreError::Missing { path: location });
    }
    let found = match client.query_opt("SELECT version FROM schema_version", &[])? {
        Some(row) => row.try_get(0)?,
        None => 0,
    };
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
    use postgres::NoTls;

    use super::*;

    /// A database of its own on the `CONVERGE_TEST_POSTGRES` server (the
    /// conformance suite's), dropped at the end; `None` without a server.
    struct Scratch {
        server: String,
        name: String,
    }

    impl Scratch {
        fn new(label: &str) -> Option<Scratch> {
            let server = std::env::var("CONVERGE_TEST_POSTGRES").ok()?;
            let name = format!("converge_schema_{label}_{}", std::process::id());
            let mut admin = Client::connect(&server, NoTls).unwrap();
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            Some(Scratch { server, name })
        }

        fn client(&self) -> Client {
            let mut config: postgres::Config = self.server.parse().unwrap();
            config.dbname(&self.name);
            config.connect(NoTls).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Ok(mut admin) = Client::connect(&self.server, NoTls) {
                let _ = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    /// A database left at `version`, with one event (`e-1`, seq 1).
    fn at_version(client: &mut Client, version: usize) {
        for sql in &MIGRATIONS[..version] {
            client.batch_execute(sql).unwrap();
        }
        client
            .batch_execute(&format!(
                "CREATE TABLE schema_version (version bigint NOT NULL);
                 INSERT INTO schema_version (version) VALUES ({version});
                 INSERT INTO events (source, id, hook, type, subject, json, received_at_ms, partition)
                     VALUES ('/jira', 'e-1', '', 'task.updated', 'task/T-1', '{{}}', 1000, 0);"
            ))
            .unwrap();
    }

    /// Migrates `client`'s database, and checks it ends at the current version.
    fn migrate_to_current(client: &mut Client) {
        migrate(client).unwrap();
        let version: i64 = client
            .query_one("SELECT version FROM schema_version", &[])
            .unwrap()
            .get(0);
        assert_eq!(version, CURRENT_VERSION);
    }

    /// Version 7 keeps the payloads of the actions that may still run,
    /// drops the others', and keeps the keys payloads named.
    #[test]
    fn version_6_upgrades_in_place_to_payloads_kept_while_needed() {
        let Some(scratch) = Scratch::new("v6") else {
            return;
        };
        let mut client = scratch.client();
        at_version(&mut client, 6);
        client
            .batch_execute(
                r#"
                INSERT INTO decisions (event_seq, rule, rule_hash, kind, body, created_at_ms)
                    VALUES (1, 'r', 'h', 'notify', '{}', 2000);
                INSERT INTO actions (decision_id, event_seq, route, plugin, payload, status,
                                     created_at_ms, instance) VALUES
                    (1, 1, 'r', 'webhook-out', '{}', 'pending', 2000, 5),
                    (1, 1, 'r', 'webhook-out', '{"kind":"notify"}', 'dead_letter', 2000, 5),
                    (1, 1, 'r', 'webhook-out',
                     '{"kind":"notify","idempotency_key":"converge-send-3-ab12"}', 'done', 2000, 5),
                    (1, 1, 'r', 'webhook-out', 'not json', 'dropped', 2000, 5);
                "#,
            )
            .unwrap();

        migrate_to_current(&mut client);
        let kept: Vec<(i64, String)> = client
            .query(
                "SELECT action_id, payload FROM action_payloads ORDER BY action_id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(
            kept,
            [
                (1, "{}".to_string()),
                (2, r#"{"kind":"notify"}"#.to_string())
            ]
        );
        let keys: Vec<Option<String>> = client
            .query("SELECT payload_key FROM actions ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            keys,
            [None, None, Some("converge-send-3-ab12".to_string()), None]
        );
        let payload_column: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                                WHERE table_name = 'actions' AND column_name = 'payload')",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(!payload_column, "the payload lives in action_payloads only");
    }

    /// A database at version 7 names each decision's and timer's rule
    /// version in two text columns; 8 moves them to `rule_versions`.
    #[test]
    fn version_7_upgrades_in_place_to_rule_versions_named_once() {
        let Some(scratch) = Scratch::new("v7") else {
            return;
        };
        let mut client = scratch.client();
        at_version(&mut client, 7);
        client
            .batch_execute(
                r#"
                INSERT INTO decisions (event_seq, rule, rule_hash, kind, body, created_at_ms)
                    VALUES (1, 'r', 'h', 'notify', '{}', 2000),
                           (1, 'gate', 'h2', 'escalate', '{}', 2000);
                INSERT INTO timers (entity, kind, event_type, data, expect_type, due_at_ms,
                                    catch_up, rule, rule_hash, created_by_seq, partition)
                    VALUES ('task/T-1', 'schedule', 'task.late', '{}', NULL, 5000, 'skip',
                            'r', 'h', 1, 0),
                           ('task/T-1', 'expect', 'task.late', '{}', 'task.done', 6000,
                            'fire_late', 'gate', 'h3', 1, 0);
                "#,
            )
            .unwrap();

        migrate_to_current(&mut client);
        let mut named = |table: &str| -> Vec<(i64, String, String)> {
            client
                .query(
                    &format!(
                        "SELECT t.id, v.rule, v.hash FROM {table} t
                         JOIN rule_versions v ON v.id = t.rule_version ORDER BY t.id"
                    ),
                    &[],
                )
                .unwrap()
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect()
        };
        let pair = |id: i64, rule: &str, hash: &str| (id, rule.to_string(), hash.to_string());
        assert_eq!(
            named("decisions"),
            [pair(1, "r", "h"), pair(2, "gate", "h2")]
        );
        assert_eq!(named("timers"), [pair(1, "r", "h"), pair(2, "gate", "h3")]);
        let versions: i64 = client
            .query_one("SELECT count(*) FROM rule_versions", &[])
            .unwrap()
            .get(0);
        assert_eq!(versions, 3);
    }

    /// Version 9 sets each entity's `open_spans` from its state, as
    /// SQLite's 15 does, and the spans are read through the new indexes.
    #[test]
    fn version_8_upgrades_in_place_to_open_spans_read_from_the_states() {
        use crate::OpenSpan;

        let Some(scratch) = Scratch::new("v8") else {
            return;
        };
        let mut client = scratch.client();
        at_version(&mut client, 8);
        let states = crate::records::tests::open_span_states();
        for entity in &states {
            client
                .execute(
                    "INSERT INTO entities (key, state, updated_at_ms) VALUES ($1, $2, 0)",
                    &[&entity.key_text(), &serde_json::to_string(entity).unwrap()],
                )
                .unwrap();
        }

        migrate_to_current(&mut client);
        let bits: Vec<(String, i64)> = client
            .query(
                "SELECT key, open_spans::bigint FROM entities ORDER BY key",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let expected: Vec<(String, i64)> = states
            .iter()
            .map(|e| (e.key_text(), OpenSpan::bits_of(e)))
            .collect();
        assert_eq!(bits, expected);
        let blocked: Vec<String> = client
            .query(
                "SELECT key FROM entities WHERE open_spans & 1 <> 0 ORDER BY key",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(blocked, ["task/T-1", "task/T-2", "task/T-4"]);
    }
}
