//! A fresh PostgreSQL database per test, on the server the environment
//! variable `CONVERGE_TEST_POSTGRES` names (a URL with the password, e.g.
//! `postgres://converge:secret@localhost/converge`; `.ci/run` sets it).
//! Without it the PostgreSQL tests say they are skipped, except under CI,
//! where they fail: CI must not skip them silently.

use std::str::FromStr;

use crate::support::Workspace;

/// The environment variable the daemon reads the password from in these tests.
pub const PASSWORD_ENV: &str = "CONVERGE_TEST_DATABASE_PASSWORD";

pub struct TestDatabase {
    admin: postgres::Config,
    name: String,
    /// The daemon's `storage.url`: no password in it.
    pub url: String,
    pub password: String,
}

impl TestDatabase {
    /// `None` (after saying so) when no server is configured.
    pub fn create(test: &str) -> Option<TestDatabase> {
        let Ok(url) = std::env::var("CONVERGE_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the PostgreSQL tests: set CONVERGE_TEST_POSTGRES"
            );
            eprintln!("skipped {test}: CONVERGE_TEST_POSTGRES is not set");
            return None;
        };
        let admin = postgres::Config::from_str(&url).expect("CONVERGE_TEST_POSTGRES is a URL");
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("converge_it_{}_{suffix:x}", std::process::id());
        let user = admin.get_user().unwrap_or("postgres").to_string();
        let password = admin
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let host = match admin.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "localhost".into(),
        };
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        let db = TestDatabase {
            url: format!("postgres://{user}@{host}:{port}/{name}"),
            admin,
            name,
            password,
        };
        db.admin(&format!("CREATE DATABASE {}", db.name)).unwrap();
        Some(db)
    }

    /// Runs one statement on the server's admin database, off the async
    /// runtime (the blocking client starts its own).
    fn admin(&self, statement: &str) -> Result<(), String> {
        let (config, statement) = (self.admin.clone(), statement.to_string());
        std::thread::spawn(move || {
            let mut client = config
                .connect(postgres::NoTls)
                .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
            client
                .batch_execute(&statement)
                .map_err(|e| format!("{statement}: {e}"))
        })
        .join()
        .unwrap()
    }

    /// Ends every client session on this database, as a server restart or
    /// an operator would: the daemons' connections break. Only client
    /// sessions: an autovacuum worker on the database runs as a superuser,
    /// which the test role may not signal (the query would fail).
    pub fn terminate_connections(&self) {
        self.admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid() \
               AND backend_type = 'client backend'",
            self.name
        ))
        .unwrap();
    }

    /// Makes the database refuse every connection, and ends those open (an
    /// outage of the server, for this database alone), or takes them again.
    pub fn refuse_connections(&self, refuse: bool) {
        self.admin(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {}",
            self.name, !refuse
        ))
        .unwrap();
        if refuse {
            self.terminate_connections();
        }
    }

    /// Points a workspace's config at this database, with leases of `lease_ttl`.
    pub fn configure(&self, ws: &Workspace, lease_ttl: &str) {
        ws.edit_config(
            "[storage]\n",
            &format!(
                "[storage]\nurl = {:?}\npassword_env = {PASSWORD_ENV:?}\nlease_ttl = {lease_ttl:?}\n",
                self.url
            ),
        );
    }

    /// The environment a daemon on this database needs.
    pub fn env(&self) -> [(&str, &str); 1] {
        [(PASSWORD_ENV, self.password.as_str())]
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // The killed daemons' connections may still be closing: a leftover
        // test database is worth a line, not a failed test.
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        for attempt in 1..=5 {
            match self.admin(&statement) {
                Ok(()) => return,
                Err(e) if attempt == 5 => eprintln!("could not drop the test database: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
            }
        }
    }
}
