//! `converge rules`: tools for rule authors that need neither the database
//! nor a running daemon.
//!
//! - `converge rules check`: compiles every configured rule and lints the
//!   rule set against the config (decisions nobody acts on, rule files the
//!   config does not list, files listed twice, header `events` patterns no
//!   known event type matches, a channel one rule holds and another releases
//!   on `send.requested`); see [`check`].
//! - `converge rules test`: runs the `*.test.toml` files beside the rules
//!   (fixture events, a starting state, a clock, expected decisions); see
//!   [`mod@test`] for the runner and `docs/rule-tests.md` for the format.
//! - `converge rules try`: the config's rules and routes on events from a
//!   file, each action's plugin called in a dry run that shows its HTTP
//!   requests and sends none; see [`dry_run`].

mod check;
mod diff;
mod dry_run;
mod test;

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::Exit;
use crate::config::Config;

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Compile every rule and lint the rule set: decisions no route acts on,
    /// rule files the config does not list, files listed twice, header
    /// `events` patterns that match no known event type, a channel one rule
    /// holds and another releases on `send.requested`.
    Check {
        #[arg(long, short, default_value = "config/converge.toml")]
        config: PathBuf,
    },
    /// Run the `*.test.toml` rule tests (by default, those beside the
    /// config's rules); exits 1 if a test fails, 2 if a test file or its
    /// rules are invalid.
    Test {
        /// The config whose rule directories hold the tests and whose
        /// `rules.limits` apply. Without it, PATHS are run with the default
        /// limits; with neither, `config/converge.toml` is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Test files, or directories to search for `*.test.toml`.
        paths: Vec<PathBuf>,
    },
    /// Run the config's rules and routes on the events of a file (one
    /// CloudEvent, or one per line) and call each action's plugin in a dry
    /// run: its HTTP requests are shown and answered with a stand-in, never
    /// sent, and nothing is stored. Credentials need not be set.
    Try(dry_run::TryArgs),
}

pub fn run(command: RulesCommand) -> ExitCode {
    match command {
        RulesCommand::Check { config } => check::run(&config),
        RulesCommand::Test { config, paths } => test::run(config.as_deref(), &paths),
        RulesCommand::Try(args) => dry_run::run(&args),
    }
}

/// Loads the config the way `converge check` does, printing its errors.
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path, &|_| None).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Invalid.into()
    })
}

/// The directories that hold the configured rules, each once, in config order.
fn rule_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in &config.rules.files {
        let dir = tidy(file.parent().unwrap_or(Path::new(".")));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// The files in `dir` whose names end with `suffix`, sorted.
fn files_ending_with(dir: &Path, suffix: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let matches = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(suffix));
        if matches && path.is_file() {
            files.push(tidy(&path));
        }
    }
    files.sort();
    Ok(files)
}

/// `config/../rules/x.rhai` -> `rules/x.rhai`: config paths are joined to the
/// config's directory, and messages read better without the detour. Purely
/// lexical, so it can differ from the file system only through symlinked
/// directories, which is acceptable for display and for comparing the
/// config's own entries.
fn tidy(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                let can_pop = matches!(out.components().next_back(), Some(Component::Normal(_)));
                if can_pop {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_removes_detours() {
        assert_eq!(
            tidy(Path::new("config/../rules/x.rhai")),
            Path::new("rules/x.rhai")
        );
        assert_eq!(tidy(Path::new("./a/./b")), Path::new("a/b"));
        assert_eq!(tidy(Path::new("../a")), Path::new("../a"));
        assert_eq!(tidy(Path::new("/x/../y")), Path::new("/y"));
        assert_eq!(tidy(Path::new("a/..")), Path::new("."));
    }
}
