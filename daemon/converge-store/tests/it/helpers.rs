//! Test databases on both backends, and builders for what goes into them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use converge_model::{Decision, DecisionKind, EntityKey, EntityState, RuleFailure};
use converge_store::{
    Durability, Location, NewAction, NewDecision, NewEvent, PayloadJson, ProcessedEvent, Store,
    WriteBatch,
};
use tempfile::TempDir;

/// The PostgreSQL server the conformance tests also run on: a
/// `postgres://user:password@host/database` URL of a role that may create
/// databases. Each test gets a database of its own, dropped at its end.
pub const POSTGRES_URL_VAR: &str = "CONVERGE_TEST_POSTGRES";

/// Runs each named `fn name(db: &TestDb)` as two tests: `sqlite::name` and
/// `postgres::name` (skipped without [`POSTGRES_URL_VAR`]). A test written
/// but not named here is dead code, which the build refuses.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&$crate::helpers::TestDb::sqlite());
                }
            )+
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(db) = $crate::helpers::TestDb::postgres() {
                        super::$name(&db);
                    }
                }
            )+
        }
    };
}

/// A database only this test uses, deleted when the test ends.
pub enum TestDb {
    /// A file in a temporary directory.
    Sqlite { dir: TempDir },
    /// A database of its own on the [`POSTGRES_URL_VAR`] server.
    Postgres {
        /// The URL from the environment, to create and drop the database.
        server: String,
        name: String,
        /// How the store reaches it: the URL names the test database and
        /// the password comes apart, as a daemon's config gives them.
        location: Location,
    },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        TestDb::Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A fresh PostgreSQL database, or `None` (the test is skipped) when
    /// [`POSTGRES_URL_VAR`] is not set. On CI (`CI` set) that is a failure
    /// instead, so the PostgreSQL half of the suite cannot silently vanish.
    pub fn postgres() -> Option<TestDb> {
        let Ok(server) = std::env::var(POSTGRES_URL_VAR) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {POSTGRES_URL_VAR} is not: the PostgreSQL tests would be skipped"
            );
            eprintln!("skipped: set {POSTGRES_URL_VAR} to run the PostgreSQL tests");
            return None;
        };
        static CREATED: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "converge_test_{}_{}_{nanos}",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        admin(&server)
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let (url, password) = split_password(&server, &name);
        Some(TestDb::Postgres {
            server,
            name,
            location: Location::Postgres { url, password },
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }

    pub fn location(&self) -> Location {
        match self {
            TestDb::Sqlite { .. } => Location::Sqlite {
                path: self.path(),
                durability: Durability::Full,
            },
            TestDb::Postgres { location, .. } => location.clone(),
        }
    }

    /// The SQLite file: nested, so `open` has to create the parent directory.
    pub fn path(&self) -> PathBuf {
        match self {
            TestDb::Sqlite { dir } => dir.path().join("state").join("converge.db"),
            TestDb::Postgres { .. } => panic!("a PostgreSQL database has no path"),
        }
    }

    pub fn open(&self) -> Store {
        Store::open(&self.location()).unwrap()
    }

    pub fn reader(&self) -> Store {
        Store::open_reader(&self.location()).unwrap()
    }

    /// A plain connection to the PostgreSQL test database, to look at or
    /// tamper with what the store wrote.
    pub fn sql(&self) -> ::postgres::Client {
        match self {
            TestDb::Postgres { server, name, .. } => {
                let mut config: ::postgres::Config = server.parse().unwrap();
                config.dbname(name);
                config.connect(::postgres::NoTls).unwrap()
            }
            TestDb::Sqlite { .. } => panic!("not a PostgreSQL database"),
        }
    }

    /// The actions whose payload the database still keeps, by id: read
    /// straight from its table, since the store gives payloads out only
    /// to run their actions.
    pub fn kept_payloads(&self) -> Vec<i64> {
        let sql = "SELECT action_id FROM action_payloads ORDER BY action_id";
        match self {
            TestDb::Sqlite { .. } => rusqlite::Connection::open(self.path())
                .unwrap()
                .prepare(sql)
                .unwrap()
                .query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
            TestDb::Postgres { .. } => self
                .sql()
                .query(sql, &[])
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect(),
        }
    }

    /// The text the `events` row of `seq` stores as its `json`, read
    /// straight from the table.
    pub fn stored_event_json(&self, seq: i64) -> String {
        let sql = "SELECT json FROM events WHERE seq = $1";
        match self {
            TestDb::Sqlite { .. } => rusqlite::Connection::open(self.path())
                .unwrap()
                .query_row(&sql.replace('$', "?"), [seq], |row| row.get(0))
                .unwrap(),
            TestDb::Postgres { .. } => self.sql().query_one(sql, &[&seq]).unwrap().get(0),
        }
    }

    /// Whether a converge schema was ever created here (or, for SQLite,
    /// any file).
    pub fn exists(&self) -> bool {
        match self {
            TestDb::Sqlite { .. } => self.path().exists(),
            TestDb::Postgres { .. } => self
                .sql()
                .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
                .unwrap()
                .get(0),
        }
    }

    /// Marks the schema as `version`, creating a blank database (no
    /// tables) if there is none: what an older or newer converge would leave.
    pub fn set_schema_version(&self, version: i64) {
        match self {
            TestDb::Sqlite { .. } => {
                std::fs::create_dir_all(self.path().parent().unwrap()).unwrap();
                rusqlite::Connection::open(self.path())
                    .unwrap()
                    .pragma_update(None, "user_version", version)
                    .unwrap();
            }
            TestDb::Postgres { .. } => {
                let mut sql = self.sql();
                sql.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL);
                     DELETE FROM schema_version;",
                )
                .unwrap();
                sql.execute("INSERT INTO schema_version VALUES ($1)", &[&version])
                    .unwrap();
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { server, name, .. } = self {
            // FORCE: a store the test leaked must not keep the database alive.
            let dropped = admin(server)
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            if let Err(e) = dropped {
                eprintln!("could not drop the test database {name}: {e}");
            }
        }
    }
}

fn admin(server: &str) -> ::postgres::Client {
    ::postgres::Client::connect(server, ::postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_VAR}: {e}"))
}

/// `postgres://user:password@host/db?params` as the URL of database
/// `dbname` without the password, and the password.
fn split_password(server: &str, dbname: &str) -> (String, Option<String>) {
    let (scheme, rest) = server
        .split_once("://")
        .unwrap_or_else(|| panic!("{POSTGRES_URL_VAR} must be a postgres:// URL"));
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    let (user, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    let (user, password) = match user.map(|u| u.split_once(':').ok_or(u)) {
        Some(Ok((user, password))) => (format!("{user}@"), Some(password.to_string())),
        Some(Err(user)) => (format!("{user}@"), None),
        None => (String::new(), None),
    };
    (format!("{scheme}://{user}{host}/{dbname}{query}"), password)
}

pub fn event(source: &str, id: &str) -> NewEvent {
    let subject = format!("task/{id}");
    NewEvent {
        hook: None,
        source: source.into(),
        id: id.into(),
        ty: "task.updated".into(),
        json: format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"{source}","type":"task.updated","subject":"{subject}"}}"#
        ),
        subject: Some(subject),
        received_at_ms: 1_000,
    }
}

/// An event from `/jira` with id `id`, about `task/<entity_id>`.
pub fn event_about(id: &str, entity_id: &str) -> NewEvent {
    let mut about = event("/jira", id);
    let subject = format!("task/{entity_id}");
    about.json = about.json.replace(&format!("task/{id}"), &subject);
    about.subject = Some(subject);
    about
}

pub fn appends(events: Vec<NewEvent>) -> WriteBatch {
    WriteBatch {
        appends: events,
        ..WriteBatch::default()
    }
}

pub fn entity(id: &str, stage: &str) -> EntityState {
    let key = EntityKey::parse(&format!("task/{id}")).unwrap();
    let mut state = EntityState::new(&key, "2026-11-01T00:00:00Z".parse().unwrap());
    state.set(
        "stage",
        stage.into(),
        "2026-11-02T00:00:00Z".parse().unwrap(),
    );
    state
}

pub fn notify(rule: &str, to: &str) -> Decision {
    Decision {
        rule: rule.into(),
        rule_hash: format!("{rule}-hash"),
        kind: DecisionKind::Notify {
            to: to.into(),
            message: format!("hello {to}"),
        },
        trace: None,
    }
}

pub fn action(route: &str) -> NewAction {
    NewAction {
        route: route.into(),
        plugin: "webhook-out".into(),
        payload: PayloadJson::stored(format!(r#"{{"route":"{route}"}}"#)),
        payload_key: None,
    }
}

/// Processing that decided to notify `to` through two routes.
pub fn processed_with_actions(seq: i64, id: &str, to: &str) -> ProcessedEvent {
    ProcessedEvent {
        seq,
        entity: Some(entity(id, "review").into()),
        decisions: vec![NewDecision {
            decision: notify("stalled", to),
            shadow: false,
            actions: vec![action("slack"), action("mail")],
        }],
        rule_failures: vec![],
        processed_at_ms: 2_000,
        ..ProcessedEvent::default()
    }
}

/// Processing that decided nothing.
pub fn processed_plain(seq: i64) -> ProcessedEvent {
    ProcessedEvent {
        seq,
        entity: None,
        decisions: vec![],
        rule_failures: vec![],
        processed_at_ms: 2_000,
        ..ProcessedEvent::default()
    }
}

pub fn failure(rule: &str) -> RuleFailure {
    RuleFailure {
        rule: rule.into(),
        rule_hash: format!("{rule}-hash"),
        message: "rule exceeded its time budget".into(),
    }
}
