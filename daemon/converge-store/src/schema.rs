//! The schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Migrations are
//! only ever appended: a released one is never edited.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// Keys of the `meta` table.
pub(crate) const PROCESSED_CURSOR: &str = "processed_cursor";
/// Kept as counters because counting finished actions would scan them all.
pub(crate) const ACTIONS_DONE: &str = "actions_done";
pub(crate) const ACTIONS_FAILED: &str = "actions_failed";

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
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = version(&tx)?;
        if !(0..=CURRENT_VERSION).contains(&found) {
            return Err(StoreError::SchemaVersion {
                found,
                supported: CURRENT_VERSION,
            });
        }
        let Some(sql) = MIGRATIONS.get(found as usize) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
        tracing::info!(version = found + 1, "migrated the converge database schema");
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
