//! What can go wrong in the store, by what the caller can do about it.

use std::path::PathBuf;

use rusqlite::ErrorCode;

#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// [`Store::open_reader`](crate::Store::open_reader) found no database:
    /// the daemon has not created it yet, or the path is wrong.
    #[error("no converge database at {path}")]
    Missing { path: PathBuf },

    /// The database's schema is not the one this build reads: it was written
    /// by a newer converge, or (for a reader) the writer has not migrated it yet.
    #[error("database schema version {found}, this build uses version {supported}")]
    SchemaVersion { found: i64, supported: i64 },

    /// Another connection held a lock for longer than the busy timeout: most
    /// likely a second daemon writing the same database.
    #[error("the database is locked by another connection: {0}")]
    Busy(#[source] rusqlite::Error),

    /// The filesystem refused WAL mode (some network filesystems do).
    #[error("the database could not be put in WAL mode (it is in `{mode}` mode)")]
    NoWal { mode: String },

    /// A [`ProcessedEvent`](crate::ProcessedEvent) named a `seq` the journal
    /// does not hold. The whole batch was rolled back.
    #[error("event seq {seq} is not in the journal")]
    UnknownEvent { seq: i64 },

    /// A [`ProcessedEvent`](crate::ProcessedEvent) named an event whose
    /// processing was already committed; writing it again would duplicate its
    /// decisions and actions. The whole batch was rolled back.
    #[error("event seq {seq} was already processed")]
    AlreadyProcessed { seq: i64 },

    /// An [`ActionOutcome`](crate::ActionOutcome) named an action that does not
    /// exist. The whole batch was rolled back.
    #[error("action {id} does not exist")]
    UnknownAction { id: i64 },

    /// A [`FiredTimer`](crate::FiredTimer) named a timer that does not exist.
    /// The whole batch was rolled back.
    #[error("timer {id} does not exist")]
    UnknownTimer { id: i64 },

    /// Entity state or a decision could not be turned into JSON or read back.
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("creating {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A [`WriteBatch::fences`](crate::WriteBatch) lease is no longer held
    /// with its token: another daemon took it over. Nothing was written.
    #[error("lease `{lease}` was lost to another daemon")]
    Fenced { lease: String },

    /// A cluster operation on a database only one daemon can use (SQLite).
    #[error("this needs a database several daemons share (PostgreSQL)")]
    NotShared,

    /// The database failed a check at start (or `converge verify`): using
    /// it would lose acknowledged work or repeat idempotency keys.
    #[error("the database {path} is damaged: {problem}. To go on: {way_out}")]
    Damaged {
        path: PathBuf,
        problem: String,
        way_out: String,
    },

    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),

    #[error("sqlite: {0}")]
    Sqlite(#[source] rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(e),
            _ => StoreError::Sqlite(e),
        }
    }
}
