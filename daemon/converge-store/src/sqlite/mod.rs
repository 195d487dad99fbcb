//! The SQLite backend: the embedded database of a single daemon.
//!
//! # Durability
//! - The database is always in WAL mode: a commit appends to the write-ahead
//!   log, readers keep reading the last committed snapshot while the writer
//!   works, and pages are copied back to the database file by checkpoints,
//!   mostly on a thread of their own (`checkpoint`).
//! - [`Durability::Full`] (`synchronous=FULL`) fsyncs the WAL on every commit:
//!   a commit that returned survives power loss and OS crashes.
//!   [`Durability::Normal`] (`synchronous=NORMAL`) fsyncs only at checkpoints:
//!   a commit survives the process being killed, but the last commits can be
//!   lost when the machine goes down. The database never corrupts in either.
//!
//! # Integrity
//! Before the writer uses an existing database it checks its WAL, runs
//! `PRAGMA quick_check` and checks that the tables agree with each other
//! (`integrity`); a damaged database is refused with what is wrong and
//! the way out. [`backup`] copies a live database for restoring one.
//!
//! # Connections
//! One writer (migrates the schema, owns every write) and any number of
//! read-only readers on other threads. Two daemons cannot share one SQLite
//! file: it has no [`crate::Coordination`] ([`StoreError::NotShared`]).

mod checkpoint;
pub(crate) mod integrity;
mod prune;
mod read;
pub(crate) mod schema;
mod write;

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::{Check, Durability, StartCheck, StoreError, WriteBatch, WriteResult};

/// How long a connection waits for another one's lock before giving up with
/// [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Enough for every statement this crate prepares, so none is ever re-parsed.
const STATEMENT_CACHE_CAPACITY: usize = 64;

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
    /// The writer's: checkpoints the WAL when a commit found it long.
    checkpointer: Option<checkpoint::Checkpointer>,
}

impl SqliteStore {
    /// Opens the database for writing, creating its parent directory and file
    /// if needed, and migrates the schema to the current version.
    ///
    /// Sets WAL mode, `synchronous` per `durability`, a 5 s busy timeout and
    /// foreign keys on. Open exactly one writer per database.
    ///
    /// An existing database must pass the start checks (`integrity`) that
    /// `check` asks for: a damaged one is [`StoreError::Damaged`], and
    /// nothing in it was changed.
    pub(crate) fn open(
        path: &Path,
        durability: Durability,
        check: StartCheck,
    ) -> Result<SqliteStore, StoreError> {
        let existed = path.is_file();
        let check = existed && check == StartCheck::Quick;
        let started = std::time::Instant::now();
        // Before any connection: opening would replay the WAL up to the
        // damage, and the first checkpoint would then erase the rest.
        if existed {
            integrity::refuse_damaged_wal(path)?;
        }
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open_with_flags(
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
        // Checkpoints run on a thread of their own (`checkpoint`), so a
        // commit does not wait for one before its events are acknowledged.
        checkpoint::watch_wal(&mut conn)?;
        // Checkpoints truncate the WAL back to this size, so one burst does not
        // leave a huge file behind.
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        if check {
            integrity::refuse_damaged_pages(path, &conn)?;
        }
        let mut store = SqliteStore {
            conn,
            checkpointer: None,
        };
        schema::migrate(&mut store.conn)?;
        if check {
            integrity::refuse_incoherent(path, &store.conn)?;
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "the database passed its start checks (WAL, quick_check, tables)"
            );
        }
        store.checkpointer = Some(checkpoint::Checkpointer::start(path, durability)?);
        Ok(store)
    }

    /// Commits `batch` ([`write::write`]), then lets the checkpointer see
    /// how long the commit left the WAL.
    fn write_batch(&mut self, batch: &WriteBatch) -> Result<WriteResult, StoreError> {
        let (result, wal_pages) = checkpoint::pages_after(|| write::write(&mut self.conn, batch));
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.after_commit(&self.conn, wal_pages);
        }
        result
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
        Ok(SqliteStore {
            conn,
            checkpointer: None,
        })
    }
}

/// `converge verify`: every check, on a read-only connection; changes nothing.
/// A database too damaged to read is reported as such, after its WAL.
pub(crate) fn verify(path: &Path) -> Result<Vec<Check>, StoreError> {
    if !path.is_file() {
        return Err(StoreError::Missing {
            path: path.to_path_buf(),
        });
    }
    let mut checks = vec![integrity::wal_check(path)?];
    let unreadable = |name, e| Check {
        name,
        problem: Some(format!("the database cannot be read: {e}")),
    };
    let store = match SqliteStore::open_reader(path) {
        Ok(store) => store,
        Err(StoreError::Sqlite(e)) => {
            checks.push(unreadable("integrity_check", e));
            return Ok(checks);
        }
        Err(e) => return Err(e),
    };
    checks.push(Check {
        name: "integrity_check",
        problem: integrity::page_check(&store.conn, true)?,
    });
    match integrity::coherence(&store.conn) {
        Ok(coherence) => checks.extend(coherence),
        Err(StoreError::Sqlite(e)) => checks.push(unreadable("coherence", e)),
        Err(e) => return Err(e),
    }
    Ok(checks)
}

/// Copies the database at `path` to a new file `to` with SQLite's online
/// backup API, on a read-only connection of its own, so the daemon can go
/// on writing. Then gives the copy a new instance id, so that once
/// restored it never issues the idempotency keys the original issues after
/// the backup (actions keep the instance they were created under), and
/// syncs it. Returns the copy's instance id.
pub(crate) fn backup(path: &Path, to: &Path) -> Result<i64, StoreError> {
    let source = SqliteStore::open_reader(path)?;
    if to.exists() {
        return Err(StoreError::Io {
            path: to.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a backup does not overwrite an existing file",
            ),
        });
    }
    let mut copy = Connection::open(to)?;
    {
        let backup = Backup::new(&source.conn, &mut copy)?;
        // All pages in one step: one read transaction, one snapshot. Copied
        // a few pages at a time, every commit of the daemon in between would
        // start the copy over.
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                // Busy or locked by another connection: try again.
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let instance: i64 = copy.query_row(
        "UPDATE meta SET value = random() WHERE key = ?1 RETURNING value",
        [schema::INSTANCE],
        |row| row.get(0),
    )?;
    // Closing the last connection checkpoints the copy's WAL into it and
    // removes the WAL: the copy is one file.
    copy.close().map_err(|(_, e)| e)?;
    let sync = |file: &Path| {
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|source| StoreError::Io {
                path: file.to_path_buf(),
                source,
            })
    };
    sync(to)?;
    if let Some(dir) = to.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        sync(dir)?;
    }
    Ok(instance)
}

/// Settings every connection needs, writer or reader.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}
