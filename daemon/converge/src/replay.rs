//! `converge replay`: runs a rule set over recorded events (the journal of
//! the config's database, or an NDJSON file of CloudEvents) on a virtual
//! clock, and prints what the rules would decide. It executes no action and
//! writes nothing; `--diff` runs a second rule set (`variant`: the first
//! with edited rules) over the same events and prints which decisions would
//! change.
//!
//! Each rule set runs in its own [`Simulation`] (`simulate.rs`, shared with
//! `converge rules test`), which does the processor's work in memory: the
//! event's data is applied to its entity's state, the rules are evaluated,
//! the decisions the processor would refuse become failures of their rule,
//! `schedule` and `expect` decisions become timers that fire on the virtual
//! clock, and `emit` decisions become events processed after the one that
//! emitted them. The differences from the daemon are deliberate:
//!
//! - `now` is the event's `time`, else the time the journal received it,
//!   else (an NDJSON event without `time`) the previous event's `now`: never
//!   the wall clock, so a replay gives the same decisions every time. Before
//!   each recorded event, the simulated timers due by its `now` fire;
//! - entity state starts empty and lives in memory, built from the replayed
//!   events alone: decisions depend on history, so a faithful replay starts
//!   at the beginning of the entities' history;
//! - the events converge journaled itself in the live run (fired timers from
//!   `converge/timers`, emits from `converge/rules`) are skipped, since the
//!   simulation makes its own; `--no-simulate` replays them as recorded and
//!   simulates no timer and no emit instead.
//!
//! The user guide is `docs/replay.md`.

mod generate;
mod variant;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use converge_model::{Decision, DecisionKind, Event, Metric, RuleFailure, Sample};
use converge_rules::{Evaluation, RuleLimits, RuleSet, RuleSource};
use converge_store::{Location, Store, StoreError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::Exit;
use crate::config::Config;
use converge_engine::effects::data_without_timer;
use converge_engine::{Engine, Origin, Rules, Simulated, Simulation};
use converge_model::sources;

use crate::reload::LoadedRules;
use crate::report::{self, Report, ReportRequest, SampleTally};

/// Journal events read per query.
const PAGE: usize = 4096;
/// Events between two updates of the progress bar.
const PROGRESS_EVERY: u64 = 1024;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The config: its database is the journal replayed, its rules and
    /// `rules.limits` are used unless `--rules` says otherwise.
    #[arg(long, short, default_value = "config/converge.toml")]
    config: PathBuf,
    /// Replay the journal of the config's database (the default source).
    #[arg(long, conflicts_with = "events")]
    from_journal: bool,
    /// Replay an NDJSON file of CloudEvents, one per line, instead of the journal.
    #[arg(long, value_name = "FILE.ndjson")]
    events: Option<PathBuf>,
    /// The rules to run: rule files, or directories whose `*.rhai` files are
    /// taken in name order. Default: the config's `rules.files`.
    #[arg(long, num_args = 1.., value_name = "DIR_OR_FILE")]
    rules: Vec<PathBuf>,
    /// Compare with a second rule set, the first with these rules in place
    /// of the ones of the same name (added when new): prints the decisions
    /// only the first set makes (`-`) and only the second makes (`+`).
    #[arg(long, num_args = 1.., value_name = "DIR_OR_FILE")]
    diff: Vec<PathBuf>,
    /// Compare with the first rule set without these rules (by name), as
    /// `--diff` does; the two combine.
    #[arg(long, num_args = 1.., value_name = "RULE")]
    without: Vec<String>,
    /// Report decisions from this time on (RFC 3339); earlier events still
    /// build entity state.
    #[arg(long, value_parser = parse_time, value_name = "RFC3339")]
    since: Option<DateTime<Utc>>,
    /// Leave out events after this time (RFC 3339), and after the last
    /// event fire the simulated timers due by then. Without it, no timer
    /// fires after the last event.
    #[arg(long, value_parser = parse_time, value_name = "RFC3339")]
    until: Option<DateTime<Utc>>,
    /// Do not simulate timers and emits: replay the events converge
    /// journaled for them (sources `converge/timers`, `converge/rules`) as
    /// recorded instead.
    #[arg(long)]
    no_simulate: bool,
    /// One JSON object per line: each decision (or difference) with its
    /// trace, then the summary.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Write N synthetic events to the `--events` file and exit (for
    /// measuring replay speed).
    #[arg(long, hide = true, value_name = "N", requires = "events")]
    generate: Option<u64>,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{text}` is not an RFC 3339 time like \"2026-11-23T10:00:00Z\": {e}"))
}

pub fn run(args: ReplayArgs) -> ExitCode {
    if let (Some(n), Some(path)) = (args.generate, &args.events) {
        return match generate::write(path, n) {
            Ok(()) => {
                println!("wrote {n} events to {}", path.display());
                Exit::Ok.into()
            }
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                Exit::Failure.into()
            }
        };
    }
    let config = match Config::load(&args.config, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid.into();
        }
    };
    let limits = &config.rules.limits;
    // The config's rules run as the daemon runs them, shadow ones included;
    // rule files named on the command line all run live.
    let first = if args.rules.is_empty() {
        LoadedRules::compile(&config.rules)
            .map(|loaded| (loaded.live, Some(loaded.shadow)))
            .map_err(|errors| format!("{} rule error(s):\n  {}", errors.len(), errors.join("\n  ")))
    } else {
        rule_files(&args.rules)
            .and_then(|files| read(&files))
            .and_then(|sources| compile(sources, limits).map(|r| (r, None)))
    };
    let first = match first {
        Ok(first) => first,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid.into();
        }
    };
    let second = if args.diff.is_empty() && args.without.is_empty() {
        None
    } else {
        let first_sources = if args.rules.is_empty() {
            config
                .rules
                .live_and_shadow()
                .map(|(live, _)| live)
                .map_err(|e| format!("{e:#}"))
        } else {
            rule_files(&args.rules).and_then(|files| read(&files))
        };
        let second = first_sources.and_then(|first_sources| {
            let diff = rule_files(&args.diff).and_then(|files| read(&files))?;
            variant::compile(&first.0, first_sources, diff, &args.without, limits)
        });
        match second {
            Ok((rules, changes)) => Some(((rules, None), changes)),
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid.into();
            }
        }
    };
    let source = match &args.events {
        Some(path) => Source::ndjson(path),
        None => Source::journal(&config.storage.location),
    };
    let mut source = match source {
        Ok(source) => source,
        Err(e) => {
            eprintln!("error: {e}");
            if args.events.is_none() {
                for warning in config.storage_warnings() {
                    eprintln!("note: {warning}");
                }
            }
            return Exit::Failure.into();
        }
    };
    let progress = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        source.progress_bar()
    };
    let simulate = !args.no_simulate;
    let engine = config.engine();
    let simulation = |rules| new_simulation(rules, &engine, simulate);
    let mut run = Run {
        window: (args.since, args.until),
        simulate,
        progress,
        started: Instant::now(),
        input: InputCounts::default(),
    };
    let mut report = Reporter {
        out: Output {
            writer: BufWriter::new(std::io::stdout().lock()),
            json: args.json,
        },
        totals: Totals::new(&(args.since, args.until)),
        since: args.since,
        error: None,
    };
    let result = match &second {
        None => {
            let mut sim = simulation(&first);
            run.events(&mut source, |recorded| {
                replay_event(&mut sim, recorded, &mut |p, seq| report.single(p, seq))?;
                report.written()
            })
            .and_then(|()| match args.until {
                Some(until) if simulate => sim
                    .advance_to(until, None, &mut |p| report.single(p, None))
                    .map(drop),
                _ => Ok(()),
            })
            .and_then(|()| report.written())
            .and_then(|()| {
                report.totals.a.finish(&sim, simulate);
                report.summary(&run)
            })
        }
        Some((second, changes)) => {
            let (mut a, mut b) = (simulation(&first), simulation(second));
            run.events(&mut source, |recorded| {
                let seen_a = step(&mut a, recorded)?;
                let seen_b = step(&mut b, recorded)?;
                report.compare(seen_a, seen_b)
            })
            .and_then(|()| match args.until {
                Some(until) if simulate => {
                    let (seen_a, seen_b) = (until_end(&mut a, until)?, until_end(&mut b, until)?);
                    report.compare(seen_a, seen_b)
                }
                _ => Ok(()),
            })
            .and_then(|()| {
                report.totals.a.finish(&a, simulate);
                report.totals.b.finish(&b, simulate);
                report.diff_summary(&run, changes)
            })
        }
    };
    run.progress.finish_and_clear();
    let flushed = result.and_then(|()| {
        report
            .out
            .writer
            .flush()
            .map_err(|e| format!("cannot write the output: {e}"))
    });
    match flushed {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failure.into()
        }
    }
}

/// A simulation of the daemon for one rule set (live, and shadow when the
/// config's rules are replayed), before every event: the first event sets
/// the clock.
fn new_simulation<'r>(
    (live, shadow): &'r (RuleSet, Option<RuleSet>),
    engine: &Engine,
    simulate: bool,
) -> Simulation<'r> {
    let rules = Rules {
        live,
        shadow: shadow.as_ref(),
    };
    let sim = Simulation::new(rules, engine.clone(), DateTime::<Utc>::MIN_UTC);
    if simulate {
        sim
    } else {
        sim.without_timers_and_emits()
    }
}

/// Runs one recorded event in `sim`: first the timers due by its `now`,
/// then the event and what it emits, at its own `now` even when an earlier
/// event's was later (the rules see the event's time). `each` gets every
/// event processed, and the journal `seq` of the recorded one.
fn replay_event(
    sim: &mut Simulation<'_>,
    recorded: &Recorded,
    each: &mut impl FnMut(Simulated<'_>, Option<i64>),
) -> Result<(), String> {
    sim.advance_to(recorded.now, None, &mut |p| each(p, None))?;
    sim.now = recorded.now;
    sim.run_recorded(&recorded.event, Origin::Input, recorded.seq, &mut |p| {
        let seq = recorded.seq.filter(|_| p.origin == Origin::Input);
        each(p, seq);
    })
}

/// What one simulation processed for one recorded event.
fn step(sim: &mut Simulation<'_>, recorded: &Recorded) -> Result<Vec<Seen>, String> {
    let mut seen = Vec::new();
    replay_event(sim, recorded, &mut |p, seq| seen.push(Seen::of(p, seq)))?;
    Ok(seen)
}

/// What one simulation processed after the last event, firing the timers
/// due by `until`.
fn until_end(sim: &mut Simulation<'_>, until: DateTime<Utc>) -> Result<Vec<Seen>, String> {
    let mut seen = Vec::new();
    sim.advance_to(until, None, &mut |p| seen.push(Seen::of(p, None)))?;
    Ok(seen)
}

/// Events converge journals itself for decisions: a fired timer's and an
/// emitted one. A replay that simulates timers and emits makes its own.
fn journaled_by_converge(event: &Event) -> bool {
    event.source == sources::TIMERS || event.source == sources::RULES
}

/// The files named on the command line, directories expanded to their
/// `*.rhai` files in name order.
fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            let entries = std::fs::read_dir(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for entry in entries {
                let file = entry
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                    .path();
                if file.is_file() && file.extension().is_some_and(|ext| ext == "rhai") {
                    found.push(file);
                }
            }
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    Ok(files)
}

/// Reads rule files as the daemon does: each named by its file stem.
fn read(files: &[PathBuf]) -> Result<Vec<RuleSource>, String> {
    files
        .iter()
        .map(|path| {
            RuleSource::read(path).map_err(|e| format!("cannot read rule {}: {e}", path.display()))
        })
        .collect()
}

/// Compiles rules with the config's limits.
fn compile(sources: Vec<RuleSource>, limits: &RuleLimits) -> Result<RuleSet, String> {
    RuleSet::compile(sources, limits).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("{} rule error(s):\n  {}", list.len(), list.join("\n  "))
    })
}

/// One event read from a source, with the `now` the rules see for it.
struct Recorded {
    event: Event,
    /// Its journal `seq`; `None` for a file.
    seq: Option<i64>,
    now: DateTime<Utc>,
}

/// Where the events come from.
enum Source {
    Journal {
        store: Store,
        /// The journal's last `seq` when the replay started: events a running
        /// daemon journals meanwhile are not replayed.
        head: i64,
        after: i64,
        page: std::vec::IntoIter<converge_store::JournaledEvent>,
    },
    Ndjson {
        path: PathBuf,
        reader: BufReader<File>,
        size: u64,
        /// Bytes read so far, for the progress bar.
        read: u64,
        line: String,
        number: usize,
        /// The `now` of the last event, for events without `time`.
        clock: Option<DateTime<Utc>>,
    },
}

/// What a source yields next.
enum Next {
    Event(Box<Recorded>),
    /// A line or journal entry that is not a usable event: where, and why.
    Skipped(String),
    End,
}

impl Source {
    fn journal(database: &Location) -> Result<Source, String> {
        let store = Store::open_reader(database).map_err(|e| match e {
            StoreError::Missing { .. } => {
                format!("no database at {database} (has the daemon run with this config?)")
            }
            e => format!("cannot open {database}: {e}"),
        })?;
        let head = store
            .journal_head()
            .map_err(|e| format!("cannot read {database}: {e}"))?;
        Ok(Source::Journal {
            store,
            head,
            after: 0,
            page: Vec::new().into_iter(),
        })
    }

    fn ndjson(path: &Path) -> Result<Source, String> {
        let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Source::Ndjson {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            size,
            read: 0,
            line: String::new(),
            number: 0,
            clock: None,
        })
    }

    /// A bar counting journal events, or bytes of the file.
    fn progress_bar(&self) -> ProgressBar {
        let (len, template) = match self {
            Source::Journal { head, .. } => (
                u64::try_from(*head).unwrap_or(0),
                "replaying {wide_bar} {human_pos}/{human_len} events, {per_sec}, {eta} left",
            ),
            Source::Ndjson { size, .. } => (
                *size,
                "replaying {wide_bar} {bytes}/{total_bytes}, {bytes_per_sec}, {eta} left",
            ),
        };
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar
    }

    /// How far the source is, in the bar's unit.
    fn position(&self) -> u64 {
        match self {
            Source::Journal { after, .. } => u64::try_from(*after).unwrap_or(0),
            Source::Ndjson { read, .. } => *read,
        }
    }

    fn next(&mut self) -> Result<Next, String> {
        match self {
            Source::Journal {
                store,
                head,
                after,
                page,
            } => {
                let journaled = match page.next() {
                    Some(journaled) => journaled,
                    None if *after >= *head => return Ok(Next::End),
                    None => {
                        *page = store
                            .events_after(*after, PAGE)
                            .map_err(|e| format!("cannot read the journal: {e}"))?
                            .into_iter();
                        match page.next() {
                            Some(journaled) => journaled,
                            None => return Ok(Next::End),
                        }
                    }
                };
                if journaled.seq > *head {
                    return Ok(Next::End);
                }
                *after = journaled.seq;
                Ok(match Event::from_journal(&journaled.json) {
                    Ok(event) => {
                        // The daemon decided it at the time its clock
                        // journaled it (`converge_engine::decision_time`).
                        let now = millis_to_time(journaled.received_at_ms);
                        Next::Event(Box::new(Recorded {
                            event,
                            seq: Some(journaled.seq),
                            now,
                        }))
                    }
                    Err(e) => Next::Skipped(format!(
                        "journal seq {}: no longer parses: {e}",
                        journaled.seq
                    )),
                })
            }
            Source::Ndjson {
                path,
                reader,
                read,
                line,
                number,
                clock,
                ..
            } => loop {
                line.clear();
                let bytes = reader
                    .read_line(line)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if bytes == 0 {
                    return Ok(Next::End);
                }
                *read += bytes as u64;
                *number += 1;
                if line.trim().is_empty() {
                    continue;
                }
                let where_ = format!("{}:{}", path.display(), number);
                // A recording of journaled events: it may name their hooks.
                let event = match Event::from_journal(line) {
                    Ok(event) => event,
                    Err(e) => return Ok(Next::Skipped(format!("{where_}: {e}"))),
                };
                let Some(now) = event.time.or(*clock) else {
                    return Ok(Next::Skipped(format!(
                        "{where_}: the event has no `time`, and no earlier event set the replay clock"
                    )));
                };
                *clock = Some(now);
                return Ok(Next::Event(Box::new(Recorded {
                    event,
                    seq: None,
                    now,
                })));
            },
        }
    }
}

fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// What one rule set concluded for one event.
#[derive(Debug, Default)]
struct Outcome {
    decisions: Vec<Decision>,
    failures: Vec<RuleFailure>,
    /// The shadow rules' decisions: printed, marked, never compared.
    shadow: Vec<Decision>,
}

impl From<Evaluation> for Outcome {
    fn from(evaluation: Evaluation) -> Outcome {
        Outcome {
            decisions: evaluation.decisions,
            failures: evaluation.failures,
            shadow: Vec::new(),
        }
    }
}

/// The event a decision was made for, as the output names it.
struct About<'a> {
    id: &'a str,
    /// Its journal `seq`: recorded events from the journal only.
    seq: Option<i64>,
    origin: Origin,
    ty: &'a str,
    subject: Option<&'a str>,
    now: DateTime<Utc>,
}

impl About<'_> {
    fn origin(&self) -> &'static str {
        match self.origin {
            Origin::Input => "recorded",
            Origin::Timer => "timer",
            Origin::Emit => "emit",
        }
    }
}

/// One event a simulation processed, kept to compare with the other rule
/// set's.
struct Seen {
    id: String,
    seq: Option<i64>,
    origin: Origin,
    ty: String,
    subject: Option<String>,
    now: DateTime<Utc>,
    /// What makes a simulated event the same in both rule sets, whose ids
    /// differ when they created timers or emitted events in another order:
    /// its type, subject, time and data (a timer's `timer` member aside).
    identity: String,
    outcome: Outcome,
    /// The metric samples it finished.
    samples: Vec<Sample>,
}

impl Seen {
    fn of(processed: Simulated<'_>, seq: Option<i64>) -> Seen {
        let event = processed.event;
        let identity = match processed.origin {
            // The same recorded event is replayed on both sides.
            Origin::Input => String::new(),
            Origin::Timer | Origin::Emit => format!(
                "{}\n{}\n{:?}\n{}",
                event.ty,
                event.subject.as_deref().unwrap_or_default(),
                event.time,
                data_without_timer(event)
            ),
        };
        Seen {
            id: event.id.clone(),
            seq,
            origin: processed.origin,
            ty: event.ty.clone(),
            subject: event.subject.clone(),
            now: processed.now,
            identity,
            outcome: processed.evaluation.into(),
            samples: processed.outcome.samples,
        }
    }

    fn about(&self) -> About<'_> {
        About {
            id: &self.id,
            seq: self.seq,
            origin: self.origin,
            ty: &self.ty,
            subject: self.subject.as_deref(),
            now: self.now,
        }
    }
}

/// Pairs what two simulations processed for one recorded event: the same
/// event on both sides, or one side's alone; in time order.
fn pair(a: Vec<Seen>, b: Vec<Seen>) -> Vec<(Option<Seen>, Option<Seen>)> {
    let mut b: Vec<Option<Seen>> = b.into_iter().map(Some).collect();
    let mut pairs: Vec<(Option<Seen>, Option<Seen>)> = a
        .into_iter()
        .map(|a| {
            let same = b.iter().position(|b| {
                b.as_ref()
                    .is_some_and(|b| b.origin == a.origin && b.identity == a.identity)
            });
            let b = same.and_then(|i| b[i].take());
            (Some(a), b)
        })
        .collect();
    pairs.extend(b.into_iter().flatten().map(|b| (None, Some(b))));
    pairs.sort_by_key(|(a, b)| a.as_ref().or(b.as_ref()).map(|seen| seen.now));
    pairs
}

/// A decision or a failure, as compared between two rule sets: the rule's
/// name and what it concluded, not its hash (a changed rule that decides the
/// same is no change).
#[derive(Debug, PartialEq)]
enum Item<'a> {
    Decision(&'a Decision),
    Failure(&'a RuleFailure),
}

impl Item<'_> {
    fn same(&self, other: &Item<'_>) -> bool {
        match (self, other) {
            (Item::Decision(a), Item::Decision(b)) => a.rule == b.rule && a.kind == b.kind,
            (Item::Failure(a), Item::Failure(b)) => a.rule == b.rule && a.message == b.message,
            _ => false,
        }
    }
}

/// The items only in `a` and only in `b`, each in its order; an item that
/// appears twice in one and once in the other counts once as a difference.
fn differences<'a>(a: &'a Outcome, b: &'a Outcome) -> (Vec<Item<'a>>, Vec<Item<'a>>) {
    let items = |o: &'a Outcome| -> Vec<Item<'a>> {
        o.decisions
            .iter()
            .map(Item::Decision)
            .chain(o.failures.iter().map(Item::Failure))
            .collect()
    };
    let (a, mut b): (Vec<_>, Vec<_>) = (items(a), items(b).into_iter().map(Some).collect());
    let mut only_a = Vec::new();
    for item in a {
        match b
            .iter()
            .position(|other| other.as_ref().is_some_and(|o| o.same(&item)))
        {
            Some(i) => b[i] = None,
            None => only_a.push(item),
        }
    }
    (only_a, b.into_iter().flatten().collect())
}

/// The replay loop's state: the time window, the bar, the counts of
/// recorded events.
/// `--since` and `--until`.
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

struct Run {
    window: Window,
    /// Whether timers and emits are simulated (not `--no-simulate`).
    simulate: bool,
    progress: ProgressBar,
    started: Instant,
    input: InputCounts,
}

/// What became of the recorded events.
#[derive(Debug, Default)]
struct InputCounts {
    /// Events replayed and reported.
    events: u64,
    /// Events before `--since`, replayed only to build state.
    warm_up: u64,
    /// Events after `--until`, not replayed.
    after_window: u64,
    /// Lines or journal entries that are not events.
    skipped: u64,
    /// Fired timers' and emitted events converge journaled, skipped because
    /// the replay simulates its own.
    by_converge: u64,
}

impl InputCounts {
    fn replayed(&self) -> u64 {
        self.events + self.warm_up
    }
}

impl Run {
    /// Feeds every recorded event of the window to `each`.
    fn events(
        &mut self,
        source: &mut Source,
        mut each: impl FnMut(&Recorded) -> Result<(), String>,
    ) -> Result<(), String> {
        let (since, until) = self.window;
        loop {
            let recorded = match source.next()? {
                Next::End => break,
                Next::Skipped(message) => {
                    self.progress
                        .suspend(|| eprintln!("warning: skipped {message}"));
                    self.input.skipped += 1;
                    continue;
                }
                Next::Event(recorded) => recorded,
            };
            if self.simulate && journaled_by_converge(&recorded.event) {
                self.input.by_converge += 1;
                continue;
            }
            if until.is_some_and(|until| recorded.now > until) {
                self.input.after_window += 1;
                continue;
            }
            each(&recorded)?;
            if since.is_some_and(|since| recorded.now < since) {
                self.input.warm_up += 1;
            } else {
                self.input.events += 1;
            }
            if self.input.replayed().is_multiple_of(PROGRESS_EVERY) {
                self.progress.set_position(source.position());
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Counts {
    decisions: BTreeMap<&'static str, u64>,
    failures: BTreeMap<String, u64>,
    /// Simulated events reported: fired timers' and emitted ones.
    timers_fired: u64,
    events_emitted: u64,
    /// When the replay simulates: the timers not due when it ended, and
    /// its clock then.
    pending: Option<(usize, DateTime<Utc>)>,
    /// The metric samples of the events reported, and at the end the
    /// metrics they make (what `converge report` would say).
    samples: SampleTally,
    metrics: Option<Report>,
}

impl Counts {
    /// Counts for the events of `window` (`--since`, `--until`).
    fn new(window: &Window) -> Counts {
        Counts {
            decisions: BTreeMap::new(),
            failures: BTreeMap::new(),
            timers_fired: 0,
            events_emitted: 0,
            pending: None,
            samples: SampleTally::new(ReportRequest {
                metrics: Metric::ALL.to_vec(),
                by: None,
                since: window.0.unwrap_or(DateTime::<Utc>::MIN_UTC),
                until: window.1.unwrap_or(DateTime::<Utc>::MAX_UTC),
            }),
            metrics: None,
        }
    }

    fn count(&mut self, origin: Origin, outcome: &Outcome) {
        for d in &outcome.decisions {
            *self.decisions.entry(d.kind.name()).or_default() += 1;
        }
        for f in &outcome.failures {
            *self.failures.entry(f.rule.clone()).or_default() += 1;
        }
        match origin {
            Origin::Input => {}
            Origin::Timer => self.timers_fired += 1,
            Origin::Emit => self.events_emitted += 1,
        }
    }

    fn finish(&mut self, sim: &Simulation<'_>, simulate: bool) {
        if simulate {
            self.pending = Some((sim.pending_timers(), sim.now));
        }
        self.metrics = Some(self.samples.report(sim.entities()));
    }

    fn metrics_json(&self) -> Value {
        json!(self.metrics.as_ref().map(|m| &m.rows))
    }

    /// `3 timers fired, 1 event emitted; 2 timers not yet due at <clock>`.
    fn simulated_line(&self) -> Option<String> {
        let (pending, clock) = self.pending?;
        let mut line = format!(
            "{} {} fired, {} {} emitted",
            self.timers_fired,
            plural(self.timers_fired, "timer", "timers"),
            self.events_emitted,
            plural(self.events_emitted, "event", "events"),
        );
        if pending > 0 {
            let _ = write!(
                line,
                "; {pending} {} not yet due at {}",
                plural(pending as u64, "timer", "timers"),
                rfc3339(clock)
            );
        }
        Some(line)
    }

    fn simulated_json(&self) -> Option<Value> {
        let (pending, clock) = self.pending?;
        Some(json!({
            "timers_fired": self.timers_fired,
            "events_emitted": self.events_emitted,
            "timers_pending": pending,
            "clock": rfc3339(clock),
        }))
    }

    fn json(&self) -> Value {
        let mut value = json!({
            "decisions": self.decisions,
            "rule_failures": self.failures,
            "metrics": self.metrics_json(),
        });
        if let Some(simulated) = self.simulated_json() {
            value["simulated"] = simulated;
        }
        value
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

#[derive(Debug, Default)]
struct DiffCounts {
    /// Events compared: the recorded ones reported, and the simulated ones
    /// either rule set processed (once when both did).
    compared: u64,
    changed_events: u64,
    only_a: usize,
    only_b: usize,
    /// Kinds with a difference, even when their totals are equal.
    changed_kinds: BTreeSet<&'static str>,
}

#[derive(Debug)]
struct Totals {
    a: Counts,
    b: Counts,
    diff: DiffCounts,
}

impl Totals {
    fn new(window: &Window) -> Totals {
        Totals {
            a: Counts::new(window),
            b: Counts::new(window),
            diff: DiffCounts::default(),
        }
    }
}

/// Reports what the simulations processed: counts it, and prints the
/// decisions (or the differences) of the events from `--since` on.
struct Reporter<W: Write> {
    out: Output<W>,
    totals: Totals,
    since: Option<DateTime<Utc>>,
    /// The first failure to write; nothing is written after it.
    error: Option<String>,
}

impl<W: Write> Reporter<W> {
    fn reported(&self, now: DateTime<Utc>) -> bool {
        self.since.is_none_or(|since| now >= since)
    }

    fn single(&mut self, processed: Simulated<'_>, seq: Option<i64>) {
        if !self.reported(processed.now) {
            return;
        }
        let event = processed.event;
        let about = About {
            id: &event.id,
            seq,
            origin: processed.origin,
            ty: &event.ty,
            subject: event.subject.as_deref(),
            now: processed.now,
        };
        let shadow = processed.shadow().cloned().collect();
        for sample in &processed.outcome.samples {
            self.totals.a.samples.add(sample);
        }
        let outcome = Outcome {
            shadow,
            ..Outcome::from(processed.evaluation)
        };
        self.totals.a.count(about.origin, &outcome);
        if self.error.is_none()
            && let Err(e) = self.out.decisions(&about, &outcome)
        {
            self.error = Some(e);
        }
    }

    /// The output error, if writing failed.
    fn written(&mut self) -> Result<(), String> {
        self.error.take().map_or(Ok(()), Err)
    }

    fn compare(&mut self, a: Vec<Seen>, b: Vec<Seen>) -> Result<(), String> {
        let empty = Outcome::default();
        for (a, b) in pair(a, b) {
            let Some(seen) = a.as_ref().or(b.as_ref()) else {
                continue;
            };
            if !self.reported(seen.now) {
                continue;
            }
            let (outcome_a, outcome_b) = (
                a.as_ref().map_or(&empty, |a| &a.outcome),
                b.as_ref().map_or(&empty, |b| &b.outcome),
            );
            let totals = &mut self.totals;
            if let Some(a) = &a {
                totals.a.count(a.origin, outcome_a);
                a.samples.iter().for_each(|s| totals.a.samples.add(s));
            }
            if let Some(b) = &b {
                totals.b.count(b.origin, outcome_b);
                b.samples.iter().for_each(|s| totals.b.samples.add(s));
            }
            totals.diff.compared += 1;
            let (only_a, only_b) = differences(outcome_a, outcome_b);
            if only_a.is_empty() && only_b.is_empty() {
                continue;
            }
            totals.diff.changed_events += 1;
            totals.diff.only_a += only_a.len();
            totals.diff.only_b += only_b.len();
            for item in only_a.iter().chain(&only_b) {
                if let Item::Decision(d) = item {
                    totals.diff.changed_kinds.insert(d.kind.name());
                }
            }
            self.out.difference(&seen.about(), &only_a, &only_b)?;
        }
        Ok(())
    }

    fn summary(&mut self, run: &Run) -> Result<(), String> {
        let (seconds, rate) = speed(&run.input, run.started);
        let counts = &self.totals.a;
        if self.out.json {
            let mut summary = events_json(&run.input, seconds, rate);
            summary["decisions"] = json!(counts.decisions);
            summary["rule_failures"] = json!(counts.failures);
            if let Some(simulated) = counts.simulated_json() {
                summary["simulated"] = simulated;
            }
            summary["metrics"] = counts.metrics_json();
            return self.out.line(&json!({ "summary": summary }).to_string());
        }
        let mut lines = vec![String::new(), events_line(&run.input, seconds, rate)];
        lines.extend(counts.simulated_line().map(|s| format!("simulated: {s}")));
        lines.push(format!("decisions: {}", counts_line(&counts.decisions)));
        lines.push(format!("rule failures: {}", counts_line(&counts.failures)));
        lines.extend(
            counts
                .metrics
                .as_ref()
                .map(report::Report::summary_lines)
                .into_iter()
                .flatten(),
        );
        lines.iter().try_for_each(|line| self.out.line(line))
    }

    fn diff_summary(&mut self, run: &Run, changes: &variant::Changes) -> Result<(), String> {
        let (seconds, rate) = speed(&run.input, run.started);
        let totals = &self.totals;
        let wording = diff_wording(&totals.a.decisions, &totals.b.decisions, &totals.diff);
        if self.out.json {
            let mut summary = events_json(&run.input, seconds, rate);
            summary["a"] = totals.a.json();
            summary["b"] = totals.b.json();
            summary["b_is_a_with"] = changes.json();
            summary["compared_events"] = json!(totals.diff.compared);
            summary["changed_events"] = json!(totals.diff.changed_events);
            summary["only_in_a"] = json!(totals.diff.only_a);
            summary["only_in_b"] = json!(totals.diff.only_b);
            summary["change"] = json!(wording);
            return self.out.line(&json!({ "summary": summary }).to_string());
        }
        let mut lines = vec![
            String::new(),
            events_line(&run.input, seconds, rate),
            changes.line(),
        ];
        for (name, counts) in [("a", &totals.a), ("b", &totals.b)] {
            let mut line = format!(
                "{name}: decisions: {}; rule failures: {}",
                counts_line(&counts.decisions),
                counts_line(&counts.failures)
            );
            if let Some(simulated) = counts.simulated_line() {
                let _ = write!(line, "; simulated: {simulated}");
            }
            lines.push(line);
        }
        let simulated = totals.diff.compared.saturating_sub(run.input.events);
        let of = if simulated > 0 {
            format!(
                "{} events ({} replayed, {simulated} simulated)",
                totals.diff.compared, run.input.events
            )
        } else {
            format!("{} events", totals.diff.compared)
        };
        lines.push(format!(
            "{} of {of} decide differently: {} only in a (-), {} only in b (+)",
            totals.diff.changed_events, totals.diff.only_a, totals.diff.only_b
        ));
        lines.push(wording);
        if let (Some(a), Some(b)) = (&totals.a.metrics, &totals.b.metrics) {
            lines.extend(report::changes(a, b));
        }
        lines.iter().try_for_each(|line| self.out.line(line))
    }
}

/// Where results go: text or NDJSON on stdout.
struct Output<W: Write> {
    writer: W,
    json: bool,
}

impl<W: Write> Output<W> {
    fn line(&mut self, text: &str) -> Result<(), String> {
        writeln!(self.writer, "{text}").map_err(|e| format!("cannot write the output: {e}"))
    }

    /// The members every JSON line about an event has.
    fn event_json(about: &About<'_>) -> Value {
        json!({
            "event": about.id,
            "seq": about.seq,
            "origin": about.origin(),
            "type": about.ty,
            "subject": about.subject,
            "now": rfc3339(about.now),
        })
    }

    /// A decision's members in a JSON line: as the store records it, the
    /// trace included.
    fn decision_json(line: &mut Value, d: &Decision) {
        line["rule"] = json!(d.rule);
        line["rule_hash"] = json!(d.rule_hash);
        line["decision"] = json!(d.kind);
        if let Some(trace) = &d.trace {
            line["trace"] = json!(trace);
        }
    }

    fn decisions(&mut self, about: &About<'_>, outcome: &Outcome) -> Result<(), String> {
        let now = rfc3339(about.now);
        for d in &outcome.decisions {
            let line = if self.json {
                let mut line = Self::event_json(about);
                Self::decision_json(&mut line, d);
                line.to_string()
            } else {
                format!("{now}  {}  {}  {}", about.id, d.rule, kind_json(&d.kind))
            };
            self.line(&line)?;
        }
        for d in &outcome.shadow {
            let line = if self.json {
                let mut line = Self::event_json(about);
                Self::decision_json(&mut line, d);
                line["shadow"] = json!(true);
                line.to_string()
            } else {
                format!(
                    "{now}  {}  {}  (shadow)  {}",
                    about.id,
                    d.rule,
                    kind_json(&d.kind)
                )
            };
            self.line(&line)?;
        }
        for f in &outcome.failures {
            let line = if self.json {
                let mut line = Self::event_json(about);
                line["rule"] = json!(f.rule);
                line["rule_hash"] = json!(f.rule_hash);
                line["failure"] = json!(f.message);
                line.to_string()
            } else {
                format!("{now}  {}  {}  FAILED: {}", about.id, f.rule, f.message)
            };
            self.line(&line)?;
        }
        Ok(())
    }

    fn difference(
        &mut self,
        about: &About<'_>,
        only_a: &[Item<'_>],
        only_b: &[Item<'_>],
    ) -> Result<(), String> {
        if !self.json {
            let line = format!(
                "{} ({} {} at {})",
                about.id,
                about.ty,
                about.subject.unwrap_or("-"),
                rfc3339(about.now)
            );
            self.line(&line)?;
        }
        let marked = only_a
            .iter()
            .map(|item| ("-", "a", item))
            .chain(only_b.iter().map(|item| ("+", "b", item)));
        for (mark, side, item) in marked {
            let line = match (self.json, item) {
                (false, Item::Decision(d)) => format!("{mark} {}  {}", d.rule, kind_json(&d.kind)),
                (false, Item::Failure(f)) => format!("{mark} {}  FAILED: {}", f.rule, f.message),
                (true, Item::Decision(d)) => {
                    let mut line = Self::event_json(about);
                    line["only_in"] = json!(side);
                    Self::decision_json(&mut line, d);
                    line.to_string()
                }
                (true, Item::Failure(f)) => {
                    let mut line = Self::event_json(about);
                    line["only_in"] = json!(side);
                    line["rule"] = json!(f.rule);
                    line["failure"] = json!(f.message);
                    line.to_string()
                }
            };
            self.line(&line)?;
        }
        Ok(())
    }
}

fn speed(input: &InputCounts, started: Instant) -> (f64, f64) {
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        input.replayed() as f64 / seconds
    } else {
        0.0
    };
    (seconds, rate)
}

fn events_json(input: &InputCounts, seconds: f64, rate: f64) -> Value {
    json!({
        "events": input.events,
        "warm_up_events": input.warm_up,
        "events_after_until": input.after_window,
        "skipped": input.skipped,
        "journaled_by_converge": input.by_converge,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "events_per_second": rate.round(),
    })
}

fn events_line(input: &InputCounts, seconds: f64, rate: f64) -> String {
    let mut line = format!(
        "replayed {} events in {seconds:.2}s ({rate:.0} events/s)",
        input.replayed()
    );
    if input.warm_up > 0 {
        let _ = write!(line, "; {} before --since only built state", input.warm_up);
    }
    if input.after_window > 0 {
        let _ = write!(line, "; {} after --until left out", input.after_window);
    }
    if input.skipped > 0 {
        let _ = write!(line, "; {} skipped (not events)", input.skipped);
    }
    if input.by_converge > 0 {
        let _ = write!(
            line,
            "; {} timer or emit {} journaled by converge left out (simulated instead)",
            input.by_converge,
            plural(input.by_converge, "event", "events")
        );
    }
    line
}

/// `3 escalate, 12 notify`, or `none`.
fn counts_line<K: std::fmt::Display>(counts: &BTreeMap<K, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(name, n)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The change from `a` to `b` in words: "b would pause 3 more channels, 2
/// fewer escalations"; kinds whose totals match but whose decisions differ
/// are named after.
fn diff_wording(
    a: &BTreeMap<&'static str, u64>,
    b: &BTreeMap<&'static str, u64>,
    diff: &DiffCounts,
) -> String {
    if diff.only_a == 0 && diff.only_b == 0 {
        return "no decision would change".into();
    }
    // Verb phrases ("pause 3 more channels") first, so that noun phrases
    // ("2 fewer escalations") can follow them without a verb of their own.
    let (mut verbs, mut nouns) = (Vec::new(), Vec::new());
    let mut same_count = Vec::new();
    for kind in DecisionKind::NAMES {
        let (na, nb) = (
            a.get(kind).copied().unwrap_or(0),
            b.get(kind).copied().unwrap_or(0),
        );
        if na == nb {
            if diff.changed_kinds.contains(kind) {
                same_count.push(*kind);
            }
            continue;
        }
        let (n, more) = if nb > na {
            (nb - na, "more")
        } else {
            (na - nb, "fewer")
        };
        let (phrase, has_verb) = kind_phrase(kind, n, more);
        if has_verb {
            verbs.push(phrase);
        } else {
            nouns.push(phrase);
        }
    }
    let mut text = match (verbs.is_empty(), nouns.is_empty()) {
        (true, true) => "b would make as many decisions of each kind".to_string(),
        (true, false) => format!("b would make {}", nouns.join(", ")),
        _ => format!("b would {}", [verbs, nouns].concat().join(", ")),
    };
    if !same_count.is_empty() {
        let _ = write!(
            text,
            "; {} decisions differ in what they say",
            same_count.join(", ")
        );
    }
    text
}

/// "pause 3 more channels" (has a verb), "2 fewer escalations" (has none).
fn kind_phrase(kind: &str, n: u64, more: &str) -> (String, bool) {
    let (one, many, verb) = match kind {
        "escalate" => ("escalation", "escalations", ""),
        "notify" => ("notification", "notifications", ""),
        "set_field" => ("field change", "field changes", ""),
        "set_stage" => ("stage change", "stage changes", ""),
        "assign_owner" => ("owner assignment", "owner assignments", ""),
        "pause_channel" => ("channel", "channels", "pause "),
        "resume_channel" => ("channel", "channels", "resume "),
        "hold_send" => ("send", "sends", "hold "),
        "release_send" => ("send", "sends", "release "),
        "emit" => ("event", "events", "emit "),
        "schedule" => ("timer", "timers", "schedule "),
        "expect" => ("expected event", "expected events", "wait for "),
        "cancel_expects" => ("wait", "waits", "cancel "),
        other => (other, other, ""),
    };
    let phrase = format!("{verb}{n} {more} {}", if n == 1 { one } else { many });
    (phrase, !verb.is_empty())
}

/// A decision's kind and arguments as compact JSON.
fn kind_json(kind: &DecisionKind) -> String {
    serde_json::to_string(kind).expect("decisions serialize")
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording_names_each_kind_humanely() {
        let a = BTreeMap::from([("escalate", 5), ("pause_channel", 1), ("notify", 2)]);
        let b = BTreeMap::from([("escalate", 3), ("pause_channel", 4), ("notify", 2)]);
        let diff = DiffCounts {
            changed_events: 4,
            only_a: 3,
            only_b: 4,
            changed_kinds: ["escalate", "pause_channel", "notify"].into(),
            ..DiffCounts::default()
        };
        assert_eq!(
            diff_wording(&a, &b, &diff),
            "b would pause 3 more channels, 2 fewer escalations; notify decisions differ in what they say"
        );
        assert_eq!(
            kind_phrase("notify", 1, "more"),
            ("1 more notification".to_string(), false)
        );
        assert_eq!(
            diff_wording(&a, &a, &DiffCounts::default()),
            "no decision would change"
        );
    }

    #[test]
    fn differences_are_multisets() {
        let decision = |to: &str| Decision {
            rule: "r".into(),
            rule_hash: "h".into(),
            kind: DecisionKind::Notify {
                to: to.into(),
                message: "m".into(),
            },
            trace: None,
        };
        let a = Outcome {
            decisions: vec![decision("ana"), decision("ana"), decision("bo")],
            ..Outcome::default()
        };
        let mut b = Outcome {
            decisions: vec![decision("ana"), decision("cy")],
            ..Outcome::default()
        };
        b.decisions[0].rule_hash = "other".into();
        let (only_a, only_b) = differences(&a, &b);
        assert_eq!(
            only_a,
            vec![
                Item::Decision(&a.decisions[1]),
                Item::Decision(&a.decisions[2])
            ]
        );
        assert_eq!(only_b, vec![Item::Decision(&b.decisions[1])]);
    }
}
