//! Checkpoints mostly off the writer's path.
//!
//! A checkpoint copies the WAL's pages into the database file and fsyncs
//! it. Left to SQLite, the commit that takes the WAL past a size runs it,
//! and the events of that commit wait for it before they are acknowledged.
//! Here the writer only notes, after each commit, how long the WAL has
//! grown (SQLite's WAL hook). Past [`NUDGE_PAGES`] it asks a thread of its
//! own, with its own connection, to checkpoint while the writer goes on.
//!
//! SQLite starts the WAL over from its beginning only when a write
//! transaction begins after a checkpoint copied all of it, and the
//! background one cannot: the writer appends while it copies. So when it
//! is done, the writer's next commit finishes the job itself, copying only
//! what was written meanwhile (a short stall instead of a long one), and
//! its next transaction starts the WAL over. One cycle copies each page
//! about as often as SQLite's own checkpoint would: asking again as soon
//! as a checkpoint ended would copy the same hot pages over and over.
//!
//! Should the cycle not come round (a reader holding an old snapshot, a
//! failing checkpoint), the commit that takes the WAL past
//! [`BACKSTOP_PAGES`] checkpoints as SQLite would: the WAL's bound.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use rusqlite::hooks::Wal;
use rusqlite::{Connection, OpenFlags};

use crate::{Durability, StoreError};

/// WAL pages (4 KiB) after which the writer asks for a checkpoint.
const NUDGE_PAGES: i32 = 1_000;
/// WAL pages after which the writer's own commit checkpoints, as SQLite's
/// automatic checkpoint does: the bound on the WAL's length.
const BACKSTOP_PAGES: i32 = 4_000;

thread_local! {
    /// The WAL's length after this thread's last commit, from the WAL hook,
    /// which SQLite calls on the committing thread.
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

/// Installs the WAL hook on the writer's connection. It replaces SQLite's
/// automatic checkpoint (which is itself a WAL hook).
pub(super) fn watch_wal(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.wal_hook(Some(wal_committed))
}

fn wal_committed(wal: &mut Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    if pages >= BACKSTOP_PAGES {
        // Not an error of the commit, which has happened: SQLite's own
        // automatic checkpoint ignores the outcome too. A busy checkpoint
        // (the background one running) is tried again on the next commit.
        let _ = wal.checkpoint();
    }
    Ok(())
}

/// Runs `commit` and returns the WAL's length after it, as far as the WAL
/// hook saw: 0 when the commit wrote no pages.
pub(super) fn pages_after<T>(commit: impl FnOnce() -> T) -> (T, i32) {
    WAL_PAGES.with(|p| p.set(0));
    let done = commit();
    (done, WAL_PAGES.with(Cell::get))
}

/// Where the cycle is: the writer moves it from idle to copying, the
/// thread from copying to copied, the writer from copied back to idle.
const IDLE: u8 = 0;
const COPYING: u8 = 1;
const COPIED: u8 = 2;

/// The background checkpointer of one database. Dropping it stops the
/// thread and closes its connection.
pub(super) struct Checkpointer {
    state: Arc<AtomicU8>,
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection of its own to `path` (an existing database in WAL
    /// mode) and starts the thread.
    pub(super) fn start(path: &Path, durability: Durability) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        super::configure(&conn)?;
        // A checkpoint syncs as its connection's `synchronous` says.
        conn.pragma_update(None, "synchronous", super::synchronous(durability))?;
        // Only the writer's hook decides when; this connection writes nothing.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // The writer nudges only from idle, so a nudge never waits on another.
        let (nudge, nudged) = sync_channel::<()>(1);
        let state = Arc::new(AtomicU8::new(IDLE));
        let copied = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("converge-checkpoint".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    checkpoint(&conn);
                    // Failed or not: the writer's own checkpoint follows.
                    copied.store(COPIED, Ordering::Release);
                }
            })
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Checkpointer {
            state,
            nudge: Some(nudge),
            thread: Some(thread),
        })
    }

    /// After the writer's commit that left the WAL `wal_pages` long: asks
    /// for a background checkpoint if the WAL is long and none is running,
    /// or finishes one the thread has done on the writer's `conn`.
    pub(super) fn after_commit(&self, conn: &Connection, wal_pages: i32) {
        match self.state.load(Ordering::Acquire) {
            IDLE if wal_pages >= NUDGE_PAGES => {
                if let Some(nudge) = &self.nudge {
                    self.state.store(COPYING, Ordering::Release);
                    // Cannot be full (only sent from idle) nor disconnected
                    // while `self` lives.
                    let _ = nudge.try_send(());
                }
            }
            COPIED => {
                checkpoint(conn);
                self.state.store(IDLE, Ordering::Release);
            }
            _ => {}
        }
    }
}

fn checkpoint(conn: &Connection) {
    // PASSIVE: copies what no reader still needs, never waits for the writer.
    // Its answer row (busy, WAL pages, pages copied) needs no action.
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        // The writer's backstop checkpoints if this keeps failing.
        tracing::debug!(error = %e, "a WAL checkpoint did not run");
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop after the checkpoint
        // it may be running.
        self.nudge.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
