//! `converge backup` and `converge verify`: a copy of the live database to
//! restore from, and the checks that say whether a database is sound
//! (docs/reliability.md, "A damaged database").

use std::path::PathBuf;
use std::process::ExitCode;

use converge_store::{Location, Store, instance_hex};

use crate::Exit;
use crate::config::Config;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The file to write the copy to; it must not exist yet.
    path: PathBuf,
    #[arg(long, short, default_value = "config/converge.toml")]
    config: PathBuf,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long, short, default_value = "config/converge.toml")]
    config: PathBuf,
    /// Once the database is found sound, give it a new instance id, so its
    /// idempotency keys never repeat those of the database it was restored
    /// from (a copy made other than by `converge backup`, a `pg_dump`).
    /// Only with no daemon running on it.
    #[arg(long)]
    new_instance: bool,
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path, &|name| std::env::var(name).ok()).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Invalid.into()
    })
}

/// Copies the configured SQLite database to `args.path` while the daemon
/// may be running, and gives the copy a new instance id.
pub fn backup(args: &BackupArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let path = match &config.storage.location {
        Location::Sqlite { path, .. } => path,
        Location::Postgres { .. } => {
            eprintln!(
                "error: `converge backup` copies a SQLite database; back up PostgreSQL \
                 with its own tools (`pg_dump`), and after restoring a dump run \
                 `converge verify --new-instance` before starting converge on it"
            );
            return Exit::Failure.into();
        }
    };
    match converge_store::backup(path, &args.path) {
        Ok(instance) => {
            println!(
                "backed up {} to {} (instance {})",
                path.display(),
                args.path.display(),
                instance_hex(instance)
            );
            Exit::Ok.into()
        }
        Err(e) => {
            eprintln!("error: cannot back up {}: {e}", path.display());
            Exit::Failure.into()
        }
    }
}

/// Runs every check on the configured database without changing it and
/// prints one line per check; exits 0 when it is sound, 1 when it is not.
pub fn verify(args: &VerifyArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let database = &config.storage.location;
    let checks = match converge_store::verify(database) {
        Ok(checks) => checks,
        Err(e) => {
            eprintln!("error: cannot verify {database}: {e}");
            for warning in config.storage_warnings() {
                eprintln!("note: {warning}");
            }
            return Exit::Failure.into();
        }
    };
    println!("database  {database}");
    for check in &checks {
        match &check.problem {
            None => println!("ok        {}", check.name),
            Some(problem) => println!("DAMAGED   {}: {problem}", check.name),
        }
    }
    if checks.iter().any(|check| check.problem.is_some()) {
        println!(
            "the database is damaged: restore it from a backup made by `converge backup` \
             (docs/reliability.md, \"A damaged database\")"
        );
        return Exit::Failure.into();
    }
    println!("the database is sound");
    if args.new_instance {
        let renewed = Store::open(database).and_then(|mut store| store.new_instance());
        match renewed {
            Ok(instance) => println!("new instance id: {}", instance_hex(instance)),
            Err(e) => {
                eprintln!("error: cannot give {database} a new instance id: {e}");
                return Exit::Failure.into();
            }
        }
    }
    Exit::Ok.into()
}
