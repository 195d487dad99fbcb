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
    #[error("{}", schema_version_message(*found, *supported))]
    SchemaVersion { found: i64, supported: i64 },

    /// A schema migration would have left the database inconsistent; it
    /// was rolled back, and the database is as it was.
    #[error("migrating the database to schema version {version} failed: {message}")]
    Migration { version: i64, message: String },

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

    /// A column holds a name this build does not know (a status, a kind, a
    /// catch-up policy): the row was not written by converge.
    #[error("the database holds an unknown {column} `{value}`")]
    UnknownValue { column: &'static str, value: String },

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

    /// Its message carries the server's own (`as_db_error`: code,
    /// message, detail), which the client error's `Display` leaves out, and
    /// the client error's cause; so it is not given as a `source` too,
    /// which would repeat them in an error chain.
    #[error("postgres: {}", postgres_detail(.0))]
    Postgres(::postgres::Error),

    #[error("sqlite: {0}")]
    Sqlite(#[source] rusqlite::Error),
}

/// What a schema of another version means, and what to do about it.
fn schema_version_message(found: i64, supported: i64) -> String {
    if found == 0 {
        "the database has no converge schema yet: the daemon creates it when it starts \
         (`converge run`)"
            .to_string()
    } else if found < supported {
        format!(
            "database schema version {found} is older than this build's {supported}: \
             the daemon of this build migrates it when it starts (`converge run`); \
             until then, read it with the converge that wrote it"
        )
    } else {
        format!(
            "database schema version {found} was written by a newer converge \
             (this build reads version {supported}): use that version"
        )
    }
}

impl StoreError {
    /// Whether the same write may succeed later: the database or its
    /// connection failed (a full disk, a lost server, a lock, a deadlock),
    /// rather than the batch being wrong.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Busy(_)
                | StoreError::Io { .. }
                | StoreError::Postgres(_)
                | StoreError::Sqlite(_)
        )
    }
}

/// A PostgreSQL error as the operator needs it: the server's code, message
/// and detail when the server answered (a deadlock, a terminated session),
/// else the client's error and its cause (a refused connection).
fn postgres_detail(e: &::postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
    };
    let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    if let Some(detail) = db.detail() {
        text.push_str(&format!(" (detail: {detail})"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!(" (hint: {hint})"));
    }
    text
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> StoreError {
        StoreError::Postgres(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e {
            // A row mapping's own error (an unknown stored name), carried
            // through rusqlite's, which is all a row mapping may return.
            rusqlite::Error::FromSqlConversionFailure(column, ty, source) => {
                match source.downcast::<StoreError>() {
                    Ok(own) => *own,
                    Err(source) => StoreError::Sqlite(rusqlite::Error::FromSqlConversionFailure(
                        column, ty, source,
                    )),
                }
            }
            e => match e.sqlite_error_code() {
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(e),
                _ => StoreError::Sqlite(e),
            },
        }
    }
}

#[cfg(test)]
mod schema_message_tests {
    use super::*;

    #[test]
    fn a_schema_of_another_version_says_what_to_do() {
        let older = StoreError::SchemaVersion {
            found: 9,
            supported: 10,
        };
        assert_eq!(
            older.to_string(),
            "database schema version 9 is older than this build's 10: the daemon of this build \
             migrates it when it starts (`converge run`); until then, read it with the converge \
             that wrote it"
        );
        let empty = StoreError::SchemaVersion {
            found: 0,
            supported: 10,
        };
        assert!(
            empty
                .to_string()
                .starts_with("the database has no converge schema yet")
        );
        let newer = StoreError::SchemaVersion {
            found: 12,
            supported: 10,
        };
        assert_eq!(
            newer.to_string(),
            "database schema version 12 was written by a newer converge (this build reads \
             version 10): use that version"
        );
    }
}
