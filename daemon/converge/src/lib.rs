//! `converge`: the automation rules daemon for marketing operations, and the
//! commands that go with it. See ARCHITECTURE.md for the map of the code.
//!
//! The binary (`main.rs`) only picks the allocator and calls [`main`]; the
//! library exists so that `config` can be driven by fuzz targets and tools.

mod admin_client;
mod backup;
mod clock;
mod cluster;
pub mod config;
mod daemon;
mod dispatcher;
mod dlq;
mod entity_cache;
mod explain;
mod filedrops;
mod gates;
mod health;
pub mod hooks;
mod journal;
mod logging;
mod otel;
mod plain_json;
mod polls;
mod processor;
pub mod redact;
mod reload;
mod replay;
mod report;
mod retention;
mod rules_cli;
pub mod schedules;
mod sink;
mod status;
mod telemetry;
mod timer_wake;
mod timers;
mod timers_cli;
mod topology;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::Config;
use crate::logging::LogSettings;
use crate::otel::TelemetrySettings;

#[derive(Parser)]
#[command(
    name = "converge",
    version,
    about = "Automation rules daemon for marketing operations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short, default_value = "config/converge.toml")]
        config: PathBuf,
    },
    /// Validate the config, compile the rules and load the plugins, listing every problem.
    Check {
        #[arg(long, short, default_value = "config/converge.toml")]
        config: PathBuf,
    },
    /// Show why converge did what it did with an event (or, with `--entity`,
    /// with every event about an entity): decisions, the rule lines and
    /// inputs behind them, actions and their outcomes.
    Explain(explain::ExplainArgs),
    /// Ask the running daemon (at the config's `server.listen`) for its status:
    /// rules in use and their hashes, the last reload and its error, backlogs.
    Status {
        #[arg(long, short, default_value = "config/converge.toml")]
        config: PathBuf,
        /// Print the status as JSON, as `GET /v1/status` returns it.
        #[arg(long)]
        json: bool,
    },
    /// Tools for rule authors: `check` lints the rules, `test` runs their tests.
    Rules {
        #[command(subcommand)]
        command: rules_cli::RulesCommand,
    },
    /// Run rules over recorded events (the journal, or an NDJSON file) on a
    /// virtual clock, executing nothing; `--diff` shows what edited rules would change.
    Replay(replay::ReplayArgs),
    /// The metrics of the reporting layer (review time, handoff delay,
    /// blocked work, rework, launch reliability...) over a period, whole or
    /// by owner, campaign, channel, stage or week.
    Report(report::ReportArgs),
    /// The decisions (with their traces) and actions (with their outcomes)
    /// of the events received in a period, one JSON object per line.
    Export(report::ExportArgs),
    /// The open convergence gates (campaigns with held sends): channels,
    /// reasons, held sends, overrides; `gates override` releases a gate.
    Gates(gates::GatesArgs),
    /// Dead letters: actions that failed for good. `list`, `show <id>`,
    /// and `retry <id>` / `drop <id>` with who and why (admin token).
    Dlq(dlq::DlqArgs),
    /// Pending timers: `cancel --rule R [--version H] [--entity E]` with who
    /// and why (admin token), after an edit or a removal of the rule.
    Timers(timers_cli::TimersArgs),
    /// Copy the live SQLite database to a new file (the daemon may be
    /// running), as a new instance: what to restore a damaged database from.
    Backup(backup::BackupArgs),
    /// Check the database without changing it (its WAL, every page, that
    /// its tables agree); exits 1 if it is damaged.
    Verify(backup::VerifyArgs),
    /// Print the shell completion script for `shell` (bash, zsh, fish,
    /// elvish, powershell): `converge completions bash > /etc/bash_completion.d/converge`.
    Completions { shell: clap_complete::Shell },
    /// A local HTTP server that prints every request it receives: a stand-in
    /// for Slack or any webhook receiver while trying converge out.
    Sink {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
    },
}

/// The process exit codes.
#[repr(u8)]
enum Exit {
    Ok = 0,
    /// The daemon or a command failed while running.
    Failure = 1,
    /// The config, a rule or a plugin is wrong: nothing was started.
    Invalid = 2,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Runs the command line: parses the arguments, runs the command, and
/// returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs as its config says.
    let run_config = match &cli.command {
        Command::Run { config } => match Config::load(config, &|name| std::env::var(name).ok()) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid.into();
            }
        },
        _ => None,
    };
    // The commands print what they have to say; their log keeps to
    // warnings and errors (the plugin host's "plugin loaded" lines are the
    // daemon's), unless `RUST_LOG` asks for more.
    let command_log = LogSettings {
        level: "warn".into(),
        ..LogSettings::default()
    };
    // Traces are the daemon's only; kept to the end of `main`, where
    // dropping it exports the last spans.
    let _traces = logging::init(
        run_config.as_ref().map_or(&command_log, |c| &c.log),
        run_config
            .as_ref()
            .map_or(&TelemetrySettings::default(), |c| &c.telemetry),
    );
    // The commands that read the database run outside the async runtime:
    // the PostgreSQL client runs one of its own, which cannot nest.
    let command = match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "converge",
                &mut std::io::stdout(),
            );
            return Exit::Ok.into();
        }
        Command::Explain(args) => return explain::run(&args),
        Command::Replay(args) => return replay::run(args),
        Command::Report(args) => return report::run(&args),
        Command::Export(args) => return report::export(&args),
        Command::Backup(args) => return backup::backup(&args),
        Command::Verify(args) => return backup::verify(&args),
        Command::Rules { command } => return rules_cli::run(command),
        command => command,
    };
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failure.into();
        }
    };
    runtime.block_on(async {
        match command {
            Command::Run { .. } => {
                let config = run_config.expect("loaded before the log started");
                match daemon::run(config).await {
                    Ok(()) => Exit::Ok.into(),
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        Exit::Failure.into()
                    }
                }
            }
            Command::Check { config } => match daemon::check(&config).await {
                Ok(report) => {
                    for line in report {
                        println!("{line}");
                    }
                    println!("ok: {}", config.display());
                    Exit::Ok.into()
                }
                Err(errors) => {
                    for e in errors {
                        eprintln!("error: {e}");
                    }
                    Exit::Invalid.into()
                }
            },
            Command::Status { config, json } => match status::run(&config, json).await {
                Ok(()) => Exit::Ok.into(),
                Err(e) => e.report(),
            },
            Command::Gates(args) => gates::run(args).await,
            Command::Dlq(args) => dlq::run(args).await,
            Command::Timers(args) => timers_cli::run(args).await,
            Command::Sink { listen } => match sink::run(listen).await {
                Ok(()) => Exit::Ok.into(),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Exit::Failure.into()
                }
            },
            Command::Completions { .. }
            | Command::Explain(_)
            | Command::Replay(_)
            | Command::Report(_)
            | Command::Export(_)
            | Command::Backup(_)
            | Command::Verify(_)
            | Command::Rules { .. } => {
                unreachable!("run before the runtime starts")
            }
        }
    })
}

/// The async runtime of the commands that need one.
pub(crate) fn async_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(not_preempting_on_wake)
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Marks the calling thread `SCHED_BATCH`: it still gets its fair share of
/// the cores, but waking up it no longer preempts the thread running on
/// its core. The runtime's threads wake thousands of times a second (a
/// request's bytes, a commit's answer, a plugin's response), most often on
/// the core of the journal writer that woke them, the one thread every
/// event waits on. Under load such wake-ups preempted the writer in the
/// middle of its commits 2,400-3,700 times a second (with handoffs
/// acknowledged at 8,000 a second), 160-220 times with this; held at
/// 5,000 handoffs a second, the ack and event-to-action p99s were lower
/// in 7 of 8 alternated pairs, by 11-38% (docs/performance.md).
/// Nothing needs a privilege for it; where the kernel refuses, the thread
/// keeps the usual policy.
fn not_preempting_on_wake() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` lives across the call, which only reads it; pid 0
        // is the calling thread.
        let refused = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0;
        if refused {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "the async runtime's thread keeps its scheduling policy"
            );
        }
    }
}
