//! The PostgreSQL backend: one database several daemons share.
//!
//! # Connections
//! One `postgres::Client` per [`PostgresStore`], so one per thread (a
//! `Store` is `Send`, not `Sync`). Every statement is prepared once per
//! connection and kept (`Statements`), so running it is one round trip.
//! Connections are plain TCP or Unix sockets (`NoTls`); TLS is for a later
//! change, so a URL that requires it (`sslmode=require`) fails to connect.
//!
//! A lost connection (the server restarted, a session was terminated)
//! fails the call that met it; the next call connects again, with the
//! channels it listened to, and prepares its statements afresh. The callers
//! pace those calls (the journal writer and the cluster loop back off), so
//! the store itself never sleeps.
//!
//! # Clocks
//! Lease expiry is measured on the database's clock (`converge_now_ms()`),
//! never a daemon's, so daemons with skewed clocks agree on who holds what.
//! Every other time (received, processed, due) is the caller's, in epoch
//! milliseconds, as on SQLite.
//!
//! # Where it differs from SQLite
//! - `seq`s and ids come from sequences, which a rolled-back transaction
//!   does not give back: they can have gaps. With several writers, a `seq`
//!   can also commit after a higher one, so "the events after seq N" is not
//!   a safe cursor across daemons; each daemon reads its partitions'
//!   unprocessed events instead
//!   ([`Coordination::unprocessed_events`](crate::Coordination::unprocessed_events)).
//! - The processed cursor is not stored: it is derived from which events
//!   are processed (`processed_at_ms`), since daemons process their
//!   partitions at their own pace.
//! - A reader (`open_reader`) is a full connection: it can write.

// First: the other modules build their statements with its macros.
#[macro_use]
mod columns;

mod cluster;
mod outbox;
mod prune;
mod read;
mod schema;
mod write;

use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::Host;
use postgres::types::ToSql;
use postgres::{Client, Config, GenericClient, IsolationLevel, NoTls, Row, Statement, Transaction};

use crate::StoreError;

/// How long connecting may take before it fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a PostgreSQL converge database.
pub(crate) struct PostgresStore {
    /// In a `RefCell` because queries take `&self` and a `Client` needs
    /// `&mut`. Borrowed once per [`Backend`](crate::Backend) call, and never
    /// while already borrowed: the functions below take a [`Session`]
    /// rather than calling back into the store.
    conn: RefCell<Conn>,
    /// Where to connect again after the connection is lost.
    url: String,
    password: Option<String>,
}

/// A connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: Statements,
    /// The channels `LISTEN`ed to, listened to again on a new connection.
    listening: Vec<String>,
}

impl Conn {
    /// Connects again if the connection is gone. A failed attempt leaves
    /// the closed client in place, so the next call tries again.
    fn reopen_if_closed(&mut self, url: &str, password: Option<&str>) -> Result<(), StoreError> {
        if !self.client.is_closed() {
            return Ok(());
        }
        let (mut client, _) = connect(url, password)?;
        for channel in &self.listening {
            cluster::listen_on(&mut client, channel)?;
        }
        self.client = client;
        self.statements.clear();
        tracing::info!("connected to PostgreSQL again");
        Ok(())
    }
}

/// Prepared statements by their SQL: every statement this crate runs is a
/// `&'static str`, so the map stays as small as the set of statements.
type Statements = HashMap<&'static str, Statement>;

impl PostgresStore {
    /// Connects and migrates the schema to the current version.
    pub(crate) fn open(url: &str, password: Option<&str>) -> Result<PostgresStore, StoreError> {
        let (mut client, _) = connect(url, password)?;
        schema::migrate(&mut client)?;
        Ok(PostgresStore::with(client, url, password))
    }

    /// Connects to a database the daemon has already migrated. Fails with
    /// [`StoreError::Missing`] if it holds no converge schema, and with
    /// [`StoreError::SchemaVersion`] if its schema is another version.
    pub(crate) fn open_reader(
        url: &str,
        password: Option<&str>,
    ) -> Result<PostgresStore, StoreError> {
        let (mut client, location) = connect(url, password)?;
        schema::check_current(&mut client, location)?;
        Ok(PostgresStore::with(client, url, password))
    }

    fn with(client: Client, url: &str, password: Option<&str>) -> PostgresStore {
        PostgresStore {
            conn: RefCell::new(Conn {
                client,
                statements: Statements::new(),
                listening: Vec::new(),
            }),
            url: url.to_string(),
            password: password.map(str::to_string),
        }
    }

    /// The connection, connected again first if it was lost.
    fn conn(&self) -> Result<RefMut<'_, Conn>, StoreError> {
        let mut conn = self.conn.borrow_mut();
        conn.reopen_if_closed(&self.url, self.password.as_deref())?;
        Ok(conn)
    }

    /// [`PostgresStore::conn`] for the writes, which hold `&mut self`.
    fn conn_mut(&mut self) -> Result<&mut Conn, StoreError> {
        let conn = self.conn.get_mut();
        conn.reopen_if_closed(&self.url, self.password.as_deref())?;
        Ok(conn)
    }

    /// Listens to `channel` on this connection and on every later one.
    fn listen(&self, channel: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        cluster::listen_on(&mut conn.client, channel)?;
        if !conn.listening.iter().any(|c| c == channel) {
            conn.listening.push(channel.to_string());
        }
        Ok(())
    }

    /// Runs `f` on the connection, each statement in its own transaction.
    /// If the connection turns out lost (an idle connection learns it only
    /// when used), connects again and runs `f` once more: what `f` runs
    /// reads, or writes that are the same done twice (leases, claims
    /// that expire, notifications).
    fn run<T>(
        &self,
        f: impl Fn(&mut Session<'_, Client>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        match conn.session(&f) {
            Err(e) if conn.client.is_closed() => {
                tracing::warn!(error = %e, "lost the connection to PostgreSQL; connecting again");
                conn.reopen_if_closed(&self.url, self.password.as_deref())?;
                conn.session(&f)
            }
            done => done,
        }
    }

    /// Runs `f` in one read-only `REPEATABLE READ` transaction, so the
    /// several queries of a trail or of the counts read one snapshot.
    /// Tried once more on a new connection if the connection was lost.
    fn snapshot<T>(
        &self,
        f: impl Fn(&mut Session<'_, Transaction<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        match conn.snapshot(&f) {
            Err(e) if conn.client.is_closed() => {
                tracing::warn!(error = %e, "lost the connection to PostgreSQL; connecting again");
                conn.reopen_if_closed(&self.url, self.password.as_deref())?;
                conn.snapshot(&f)
            }
            done => done,
        }
    }
}

impl Conn {
    fn session<T>(
        &mut self,
        f: impl Fn(&mut Session<'_, Client>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Conn {
            client, statements, ..
        } = self;
        f(&mut Session { client, statements })
    }

    fn snapshot<T>(
        &mut self,
        f: impl Fn(&mut Session<'_, Transaction<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Conn {
            client, statements, ..
        } = self;
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let value = f(&mut Session {
            client: &mut tx,
            statements,
        })?;
        tx.commit()?;
        Ok(value)
    }
}

/// Connects per `url` (a `postgres://` URL or libpq key=value string),
/// with the password given apart. Also returns where, without secrets, for
/// [`StoreError::Missing`].
fn connect(url: &str, password: Option<&str>) -> Result<(Client, PathBuf), StoreError> {
    let mut config = Config::from_str(url)?;
    if let Some(password) = password {
        config.password(password);
    }
    config
        .application_name("converge")
        .connect_timeout(CONNECT_TIMEOUT)
        // Notices ("... already exists, skipping") are not worth a log line.
        .notice_callback(|notice| tracing::debug!(notice = notice.message(), "postgres notice"));
    let client = config.connect(NoTls)?;
    Ok((client, location(&config)))
}

/// `postgres://user@host:port/dbname`, whatever the URL said, minus the password.
fn location(config: &Config) -> PathBuf {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    PathBuf::from(format!("postgres://{user}@{host}:{port}/{dbname}"))
}

/// A connection or a transaction, with the connection's prepared
/// statements: what every query and write runs on.
pub(super) struct Session<'a, C> {
    client: &'a mut C,
    statements: &'a mut Statements,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Session<'_, C> {
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Runs `sql`; returns how many rows it changed.
    fn execute(&mut self, sql: &'static str, params: &Params<'_>) -> Result<u64, StoreError> {
        let statement = self.prepared(sql)?;
        Ok(self.client.execute(&statement, params)?)
    }

    fn query(&mut self, sql: &'static str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
        let statement = self.prepared(sql)?;
        Ok(self.client.query(&statement, params)?)
    }

    fn query_one(&mut self, sql: &'static str, params: &Params<'_>) -> Result<Row, StoreError> {
        let statement = self.prepared(sql)?;
        Ok(self.client.query_one(&statement, params)?)
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let statement = self.prepared(sql)?;
        Ok(self.client.query_opt(&statement, params)?)
    }

    /// The rows of `sql`, each read by `decode`.
    fn rows<T>(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
        decode: impl Fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.query(sql, params)?;
        rows.iter().map(decode).collect()
    }

    /// The first column of the one row of `sql`.
    fn value<T>(&mut self, sql: &'static str, params: &Params<'_>) -> Result<T, StoreError>
    where
        T: for<'r> postgres::types::FromSql<'r>,
    {
        Ok(self.query_one(sql, params)?.try_get(0)?)
    }
}

/// A `limit` as a `LIMIT` parameter; anything past `i64::MAX` is no limit anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A partition as stored (`integer`); partitions are below [`crate::PARTITIONS`].
fn sql_partition(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}

fn sql_partitions(partitions: &[u32]) -> Vec<i32> {
    partitions.iter().copied().map(sql_partition).collect()
}

/// An attempt count as stored (`bigint`), and back.
fn sql_attempts(attempts: u32) -> i64 {
    i64::from(attempts)
}

fn attempts(stored: i64) -> u32 {
    u32::try_from(stored).unwrap_or(u32::MAX)
}

/// A lease's time to live in milliseconds, added to the database's clock.
fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}
