//! The SQLite backend: the embedded database of a single daemon.
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
//!
//! # Connections
//! One writer (migrates the schema, owns every write) and any number of
//! read-only readers on other threads. Two daemons cannot share one SQLite
//! file: the cluster operations answer [`StoreError::NotShared`].

mod read;
pub(crate) mod schema;
mod sources;
mod write;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{Durability, StoreError};

/// How long a connection waits for another one's lock before giving up with
/// [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Enough for every statement this crate prepares, so none is ever re-parsed.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Pages (4 KiB) of WAL after which a commit checkpoints it.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 2_500;
/// What a checkpoint truncates the WAL back to.
const JOURNAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

fn synchronous(durability: Durability) -> &'static str {
    match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    }
}

/// A connection to a SQLite converge database: the one writer, or a reader.
pub(crate) struct SqliteStore {
    /// Every statement goes through `prepare_cached` on this connection.
    conn: Connection,
}

impl SqliteStore {
    /// Opens the database for writing, creating its parent directory and file
    /// if needed, and migrates the schema to the current version.
    ///
    /// Sets WAL mode, `synchronous` per `durability`, a 5 s busy timeout and
    /// foreign keys on. Open exactly one writer per database.
    pub(crate) fn open(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
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
        conn.pragma_update(None, "synchronous", synchronous(durability))?;
        // Checkpoint every ~10 MB of WAL rather than SQLite's 4 MB: fewer
        // checkpoints (each one fsyncs the database file) mean more journal
        // throughput. Not more: on a filling disk the WAL is space the
        // database cannot use until a checkpoint, and a longer WAL is a
        // longer replay when opening after a crash.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        // Checkpoints truncate the WAL back to this size, so one burst does not
        // leave a huge file behind.
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        let mut store = SqliteStore { conn };
        schema::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// Opens an existing database read-only, for queries. Does not migrate:
    /// fails with [`StoreError::Missing`] if there is no database yet and with
    /// [`StoreError::SchemaVersion`] if the writer has not migrated it to the
    /// version this build reads.
    pub(crate) fn open_reader(path: &Path) -> Result<SqliteStore, StoreError> {
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
        Ok(SqliteStore { conn })
    }
}

/// Settings every connection needs, writer or reader.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}
