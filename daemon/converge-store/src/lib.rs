//! The durable journal, entity state, decisions and outbox, on SQLite. This is
//! the only crate that knows SQL.
//!
//! # What is stored
//! - the **journal**: every accepted event, deduplicated on `(source, id)` and
//!   numbered by a growing `seq`;
//! - the **processed cursor**: the highest `seq` whose processing is committed;
//! - **entity state**, keyed by `kind/id`;
//! - **decisions** the rules made for each event, and **rule failures**;
//! - the **outbox**: one action per routed decision, `pending` until its
//!   outcome is recorded as `done` or `dead_letter` (failed for good); a
//!   person then retries a dead letter (`pending` again, same id) or drops
//!   it (`dropped`). Each action's failed attempts, dead-lettering, retries
//!   and drops are kept in its **history**;
//! - **timers** (`schedule` and `expect` decisions), `pending` until they are
//!   `fired`, `cancelled` (an expect whose event arrived) or `skipped` (due
//!   while the daemon was down, with the `skip` catch-up policy);
//! - **convergence gates**: sends `held` by `hold_send` decisions until they
//!   are `released` (by a rule's `release_send` or a person's override), and
//!   the overrides, written with the processing of the event that caused them.
//!
//! Processing an event (entity state, decisions, actions, rule failures, the
//! cursor) is one [`ProcessedEvent`] in a [`WriteBatch`], so it lands
//! atomically: after a crash an event is either fully processed or not at all,
//! and processing resumes from [`Store::processed_cursor`]. The timers an
//! event's decisions create, the expects it cancels and the events its rules
//! emit are part of the same [`ProcessedEvent`].
//!
//! Firing a timer is one [`FiredTimer`]: its event is journaled and the timer
//! marked `fired` in one transaction, and only if the timer was still
//! `pending`, so a timer fires exactly once, whatever crashes around it.
//!
//! # Durability
//! - The database is always in WAL mode: a commit appends to the write-ahead
//!   log, readers keep reading the last committed snapshot while the writer
//!   works, and pages are copied back to the database file by checkpoints.
//! - [`Durability::Full`] (`synchronous=FULL`) fsyncs the WAL on every commit:
//!   a commit that returned survives power loss and OS crashes.
//!   [`Durability::Normal`] (`synchronous=NORMAL`) fsyncs only at checkpoints:
//!   a commit survives the process being killed, but the last commits can be
//!   lost when the machine goes down. The database never corrupts in either.
//! - An fsync costs the same for one event as for a thousand, so throughput
//!   comes from **group commit**, which is the caller's job: the daemon's one
//!   writer thread gathers many requests and hands them to [`Store::write`] as
//!   one [`WriteBatch`], which is one transaction and one fsync. This crate does
//!   no batching or buffering of its own: when `write` returns `Ok`, the batch
//!   is committed with the promised durability.
//!
//! # Connections
//! One writer [`Store::open`] (migrates the schema, owns every write) and any
//! number of readers [`Store::open_reader`] (read-only, for queries, on other
//! threads). A `Store` is `Send` but not `Sync`: each thread owns its own.
//!
//! Rows are never deleted, so `seq` and ids are dense and `max()` of a primary
//! key is a row count; [`Store::counts`] relies on that to stay cheap.

mod error;
mod read;
mod records;
mod schema;
mod sources;
mod write;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use error::StoreError;
pub use records::{
    ActionDetail, ActionHistoryRecord, ActionOutcome, ActionRecord, Appended, Counts,
    DeadLetterChange, DeadLetterOp, DeadLetterOutcome, DecisionRecord, EventTrail, ExpectedArrival,
    FiredTimer, GateChange, GateOverrideRecord, GateRecord, HeldSendRecord, JournaledEvent,
    NewAction, NewDecision, NewEvent, NewTimer, OutcomeKind, PendingAction, ProcessedEvent,
    RuleFailure, SkippedTimer, SourceState, TimerKind, TimerRecord, WriteBatch, WriteResult,
};

/// How long a connection waits for another one's lock before giving up with
/// [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Enough for every statement this crate prepares, so none is ever re-parsed.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Pages (4 KiB) of WAL after which a commit checkpoints it.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// How much a commit must survive. The journal is always in WAL mode; this
/// chooses when the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is fsynced on every commit, so a committed
    /// batch survives power loss and OS crashes. One fsync per [`Store::write`].
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is fsynced only at checkpoints, so a
    /// committed batch survives `kill -9` and process crashes, but the last
    /// batches can be lost if the OS crashes or the power fails.
    Normal,
}

impl Durability {
    fn synchronous(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// A connection to the converge database: the one writer, or a reader.
pub struct Store {
    /// Every statement goes through `prepare_cached` on this connection.
    conn: Connection,
}

impl Store {
    /// Opens the database for writing, creating its parent directory and file
    /// if needed, and migrates the schema to the current version.
    ///
    /// Sets WAL mode, `synchronous` per `durability`, a 5 s busy timeout and
    /// foreign keys on. Open exactly one writer per database.
    pub fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { mode });
        }
        conn.pragma_update(None, "synchronous", durability.synchronous())?;
        // Checkpoint every ~40 MB of WAL rather than SQLite's 4 MB: fewer
        // checkpoints (each one fsyncs the database file) measured 10-15% more
        // journal throughput, for a longer WAL replay when opening after a crash.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        // Checkpoints truncate the WAL back to this size, so one burst does not
        // leave a huge file behind.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        let mut store = Store { conn };
        schema::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// Opens an existing database read-only, for queries. Does not migrate:
    /// fails with [`StoreError::Missing`] if there is no database yet and with
    /// [`StoreError::SchemaVersion`] if the writer has not migrated it to the
    /// version this build reads.
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        schema::check_current(&conn)?;
        Ok(Store { conn })
    }
}

/// Settings every connection needs, writer or reader.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}
