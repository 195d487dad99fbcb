//! `converge replay`: runs a rule set over recorded events (the journal of
//! the config's database, or an NDJSON file of CloudEvents) on a virtual
//! clock, and prints what the rules would decide. It executes no action,
//! starts no timer and writes nothing; `--diff` runs a second rule set over
//! the same events and prints which decisions would change.
//!
//! Each event is run the way the processor runs it (`processor.rs`): the
//! event's data is applied to its entity's state, the rules are evaluated,
//! and the decisions the processor would refuse (an `emit` past
//! `rules.max_emit_depth`, a timer for an event about no entity) become
//! failures of their rule. The differences are deliberate:
//!
//! - `now` is the event's `time`, else the time the journal received it,
//!   else (an NDJSON event without `time`) the previous event's `now`: never
//!   the wall clock, so a replay gives the same decisions every time;
//! - entity state starts empty and lives in memory, built from the replayed
//!   events alone: decisions depend on history, so a faithful replay starts
//!   at the beginning of the entities' history;
//! - `emit`, `schedule` and `expect` decisions are reported, not carried out:
//!   no event is emitted and no timer fires. Events that emits and timers
//!   journaled during the live run are in the journal, and are replayed like
//!   any other.
//!
//! The user guide is `docs/replay.md`.

mod generate;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use converge_model::{Decision, DecisionKind, EntityKey, EntityState, Event};
use converge_rules::{RuleFailure, RuleLimits, RuleSet, RuleSource};
use converge_store::Store;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::Exit;
use crate::config::Config;
use crate::effects::{emitted_event, entity_data};

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
    /// A second rule set to compare with: prints the decisions only the
    /// first set makes (`-`) and only this one makes (`+`).
    #[arg(long, num_args = 1.., value_name = "DIR_OR_FILE")]
    diff: Vec<PathBuf>,
    /// Report decisions from this time on (RFC 3339); earlier events still
    /// build entity state.
    #[arg(long, value_parser = parse_time, value_name = "RFC3339")]
    since: Option<DateTime<Utc>>,
    /// Stop replaying events after this time (RFC 3339).
    #[arg(long, value_parser = parse_time, value_name = "RFC3339")]
    until: Option<DateTime<Utc>>,
    /// One JSON object per line: each decision (or difference), then the summary.
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
    let config = match Config::load(&args.config, &|_| None) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid.into();
        }
    };
    let limits = &config.rules.limits;
    let first = if args.rules.is_empty() {
        compile(&config.rules.files, limits)
    } else {
        rule_files(&args.rules).and_then(|files| compile(&files, limits))
    };
    let second = (!args.diff.is_empty())
        .then(|| rule_files(&args.diff).and_then(|files| compile(&files, limits)))
        .transpose();
    let (first, second) = match (first, second) {
        (Ok(first), Ok(second)) => (first, second),
        (first, second) => {
            for e in [first.err(), second.err()].into_iter().flatten() {
                eprintln!("error: {e}");
            }
            return Exit::Invalid.into();
        }
    };
    let source = match &args.events {
        Some(path) => Source::ndjson(path),
        None => Source::journal(&config.storage.database()),
    };
    let mut source = match source {
        Ok(source) => source,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failure.into();
        }
    };
    let progress = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        source.progress_bar()
    };
    let max_emit_depth = config.rules.max_emit_depth;
    let stdout = std::io::stdout().lock();
    let mut out = Output {
        writer: BufWriter::new(stdout),
        json: args.json,
    };
    let mut run = Run {
        window: (args.since, args.until),
        progress,
        started: Instant::now(),
        totals: Totals::default(),
    };
    let result = match second {
        None => {
            let mut replayer = Replayer::new(first, max_emit_depth);
            run.events(&mut source, |recorded, totals| {
                let outcome = replayer.process(&recorded.event, recorded.seq, recorded.now);
                totals.count(&outcome, Side::Only);
                out.decisions(recorded, &outcome)
            })
            .and_then(|()| out.summary(&run.totals, run.started))
        }
        Some(second) => {
            let mut a = Replayer::new(first, max_emit_depth);
            let mut b = Replayer::new(second, max_emit_depth);
            run.events(&mut source, |recorded, totals| {
                let (event, seq, now) = (&recorded.event, recorded.seq, recorded.now);
                let outcome_a = a.process(event, seq, now);
                let outcome_b = b.process(event, seq, now);
                totals.count(&outcome_a, Side::A);
                totals.count(&outcome_b, Side::B);
                let (only_a, only_b) = differences(&outcome_a, &outcome_b);
                if !only_a.is_empty() || !only_b.is_empty() {
                    totals.diff.changed_events += 1;
                    totals.diff.only_a += only_a.len();
                    totals.diff.only_b += only_b.len();
                    for item in only_a.iter().chain(&only_b) {
                        if let Item::Decision(d) = item {
                            totals.diff.changed_kinds.insert(d.kind.name());
                        }
                    }
                    out.difference(recorded, &only_a, &only_b)?;
                }
                Ok(())
            })
            .and_then(|()| out.diff_summary(&run.totals, run.started))
        }
    };
    run.progress.finish_and_clear();
    let flushed = result.and_then(|()| out.writer.flush().map_err(|e| e.to_string()));
    match flushed {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failure.into()
        }
    }
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

/// Compiles rule files as `daemon::compile_rules` does: each named by its
/// file stem, with the config's limits.
fn compile(files: &[PathBuf], limits: &RuleLimits) -> Result<RuleSet, String> {
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        let source = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read rule {}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        sources.push(RuleSource {
            name,
            path: path.clone(),
            source,
        });
    }
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
    fn journal(database: &Path) -> Result<Source, String> {
        if !database.is_file() {
            return Err(format!(
                "no database at {} (has the daemon run with this config?)",
                database.display()
            ));
        }
        let store = Store::open_reader(database)
            .map_err(|e| format!("cannot open {}: {e}", database.display()))?;
        let head = store
            .journal_head()
            .map_err(|e| format!("cannot read {}: {e}", database.display()))?;
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
                        let now = event
                            .time
                            .unwrap_or_else(|| millis_to_time(journaled.received_at_ms));
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
                let event = match Event::from_json(line.as_bytes()) {
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

/// One rule set and the entity states it built: the processor's work on an
/// event, with the state in memory and the effects only checked.
struct Replayer {
    rules: RuleSet,
    entities: HashMap<EntityKey, EntityState>,
    /// `rules.max_emit_depth`: an `emit` deeper than this is a rule failure.
    max_emit_depth: u32,
}

/// What one rule set concluded for one event.
#[derive(Debug, Default)]
struct Outcome {
    decisions: Vec<Decision>,
    failures: Vec<RuleFailure>,
}

impl Replayer {
    fn new(rules: RuleSet, max_emit_depth: u32) -> Replayer {
        Replayer {
            rules,
            entities: HashMap::new(),
            max_emit_depth,
        }
    }

    /// `Processor::process` without the store: the state changes at `now`
    /// (which is the event's time, or when it was received, as the
    /// processor's `at`), the event is applied, the rules run, and
    /// decisions that could not take effect become failures.
    fn process(&mut self, event: &Event, seq: Option<i64>, now: DateTime<Utc>) -> Outcome {
        let mut entity = event.entity_key().map(|key| {
            self.entities
                .remove(&key)
                .unwrap_or_else(|| EntityState::new(&key, now))
        });
        if let Some(state) = entity.as_mut() {
            state.apply_event(&event.ty, &entity_data(event), now);
        }
        let evaluation = self.rules.evaluate(event, entity.as_mut(), now);
        if let Some(state) = entity {
            self.entities.insert(state.key(), state);
        }
        let mut outcome = Outcome {
            decisions: Vec::with_capacity(evaluation.decisions.len()),
            failures: evaluation.failures,
        };
        let mut emits = 0;
        let mut refused = Vec::new();
        for decision in evaluation.decisions {
            match self.check_effect(event, seq, &decision, now, &mut emits) {
                Ok(()) => outcome.decisions.push(decision),
                Err(message) => refused.push(RuleFailure {
                    rule: decision.rule,
                    rule_hash: decision.rule_hash,
                    message,
                }),
            }
        }
        outcome.failures.extend(refused);
        outcome
    }

    /// `Processor::effect`'s checks, with its messages, without keeping the
    /// timer or the emitted event.
    fn check_effect(
        &self,
        event: &Event,
        seq: Option<i64>,
        decision: &Decision,
        now: DateTime<Utc>,
        emits: &mut usize,
    ) -> Result<(), String> {
        let kind = decision.kind.name();
        let timer = |after_ms: u64| {
            if event.entity_key().is_none() {
                return Err(format!(
                    "`{kind}` needs an event about an entity (a subject like `task/T-1`)"
                ));
            }
            i64::try_from(after_ms)
                .ok()
                .and_then(|after| now.timestamp_millis().checked_add(after))
                .map(drop)
                .ok_or_else(|| format!("`{kind}`: {after_ms} ms is too far in the future"))
        };
        match &decision.kind {
            DecisionKind::Schedule { after_ms, .. } => timer(*after_ms),
            DecisionKind::Expect { within_ms, .. } => timer(*within_ms),
            DecisionKind::Emit { event_type, data } => {
                *emits += 1;
                let id = format!("emit-{}-{emits}", seq.unwrap_or(0));
                emitted_event(event, id, event_type, data, now, self.max_emit_depth).map(drop)
            }
            _ => Ok(()),
        }
    }
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

/// The replay loop's state: the time window, the bar, the counts.
struct Run {
    window: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    progress: ProgressBar,
    started: Instant,
    totals: Totals,
}

impl Run {
    /// Feeds every event of the window to `each`; events before `--since`
    /// only build state (their decisions are neither printed nor counted).
    fn events(
        &mut self,
        source: &mut Source,
        mut each: impl FnMut(&Recorded, &mut Totals) -> Result<(), String>,
    ) -> Result<(), String> {
        let (since, until) = self.window;
        let mut warm_up = Totals::default();
        loop {
            let recorded = match source.next()? {
                Next::End => break,
                Next::Skipped(message) => {
                    self.progress
                        .suspend(|| eprintln!("warning: skipped {message}"));
                    self.totals.skipped += 1;
                    continue;
                }
                Next::Event(recorded) => recorded,
            };
            if until.is_some_and(|until| recorded.now > until) {
                self.totals.after_window += 1;
                continue;
            }
            if since.is_some_and(|since| recorded.now < since) {
                each(&recorded, &mut warm_up)?;
                self.totals.warm_up += 1;
            } else {
                each(&recorded, &mut self.totals)?;
                self.totals.events += 1;
            }
            if self.totals.replayed().is_multiple_of(PROGRESS_EVERY) {
                self.progress.set_position(source.position());
            }
        }
        Ok(())
    }
}

/// Which rule set a count is for.
#[derive(Clone, Copy)]
enum Side {
    Only,
    A,
    B,
}

#[derive(Debug, Default)]
struct Counts {
    decisions: BTreeMap<&'static str, u64>,
    failures: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct DiffCounts {
    changed_events: u64,
    only_a: usize,
    only_b: usize,
    /// Kinds with a difference, even when their totals are equal.
    changed_kinds: std::collections::BTreeSet<&'static str>,
}

#[derive(Debug, Default)]
struct Totals {
    /// Events replayed and reported.
    events: u64,
    /// Events before `--since`, replayed only to build state.
    warm_up: u64,
    /// Events after `--until`, not replayed.
    after_window: u64,
    /// Lines or journal entries that are not events.
    skipped: u64,
    a: Counts,
    b: Counts,
    diff: DiffCounts,
}

impl Totals {
    fn count(&mut self, outcome: &Outcome, side: Side) {
        let counts = match side {
            Side::Only | Side::A => &mut self.a,
            Side::B => &mut self.b,
        };
        for d in &outcome.decisions {
            *counts.decisions.entry(d.kind.name()).or_default() += 1;
        }
        for f in &outcome.failures {
            *counts.failures.entry(f.rule.clone()).or_default() += 1;
        }
    }

    fn replayed(&self) -> u64 {
        self.events + self.warm_up
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

    fn decisions(&mut self, recorded: &Recorded, outcome: &Outcome) -> Result<(), String> {
        for d in &outcome.decisions {
            let line = if self.json {
                json!({
                    "event": recorded.event.id,
                    "seq": recorded.seq,
                    "now": rfc3339(recorded.now),
                    "rule": d.rule,
                    "rule_hash": d.rule_hash,
                    "decision": d.kind,
                })
                .to_string()
            } else {
                format!("{}  {}  {}", recorded.event.id, d.rule, kind_json(&d.kind))
            };
            self.line(&line)?;
        }
        for f in &outcome.failures {
            let line = if self.json {
                json!({
                    "event": recorded.event.id,
                    "seq": recorded.seq,
                    "now": rfc3339(recorded.now),
                    "rule": f.rule,
                    "rule_hash": f.rule_hash,
                    "failure": f.message,
                })
                .to_string()
            } else {
                format!("{}  {}  FAILED: {}", recorded.event.id, f.rule, f.message)
            };
            self.line(&line)?;
        }
        Ok(())
    }

    fn difference(
        &mut self,
        recorded: &Recorded,
        only_a: &[Item<'_>],
        only_b: &[Item<'_>],
    ) -> Result<(), String> {
        let event = &recorded.event;
        if !self.json {
            let subject = event.subject.as_deref().unwrap_or("-");
            let line = format!(
                "{} ({} {subject} at {})",
                event.id,
                event.ty,
                rfc3339(recorded.now)
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
                (true, Item::Decision(d)) => json!({
                    "event": event.id, "seq": recorded.seq, "now": rfc3339(recorded.now),
                    "only_in": side, "rule": d.rule, "decision": d.kind,
                })
                .to_string(),
                (true, Item::Failure(f)) => json!({
                    "event": event.id, "seq": recorded.seq, "now": rfc3339(recorded.now),
                    "only_in": side, "rule": f.rule, "failure": f.message,
                })
                .to_string(),
            };
            self.line(&line)?;
        }
        Ok(())
    }

    fn summary(&mut self, totals: &Totals, started: Instant) -> Result<(), String> {
        let (seconds, rate) = speed(totals, started);
        if self.json {
            let mut summary = events_json(totals, seconds, rate);
            summary["decisions"] = json!(totals.a.decisions);
            summary["rule_failures"] = json!(totals.a.failures);
            return self.line(&json!({ "summary": summary }).to_string());
        }
        self.line("")?;
        self.line(&events_line(totals, seconds, rate))?;
        self.line(&format!("decisions: {}", counts_line(&totals.a.decisions)))?;
        self.line(&format!(
            "rule failures: {}",
            counts_line(&totals.a.failures)
        ))
    }

    fn diff_summary(&mut self, totals: &Totals, started: Instant) -> Result<(), String> {
        let (seconds, rate) = speed(totals, started);
        let wording = diff_wording(&totals.a.decisions, &totals.b.decisions, &totals.diff);
        if self.json {
            let mut summary = events_json(totals, seconds, rate);
            summary["a"] =
                json!({"decisions": totals.a.decisions, "rule_failures": totals.a.failures});
            summary["b"] =
                json!({"decisions": totals.b.decisions, "rule_failures": totals.b.failures});
            summary["changed_events"] = json!(totals.diff.changed_events);
            summary["only_in_a"] = json!(totals.diff.only_a);
            summary["only_in_b"] = json!(totals.diff.only_b);
            summary["change"] = json!(wording);
            return self.line(&json!({ "summary": summary }).to_string());
        }
        self.line("")?;
        self.line(&events_line(totals, seconds, rate))?;
        for (name, counts) in [("a", &totals.a), ("b", &totals.b)] {
            self.line(&format!(
                "{name}: decisions: {}; rule failures: {}",
                counts_line(&counts.decisions),
                counts_line(&counts.failures)
            ))?;
        }
        self.line(&format!(
            "{} of {} events decide differently: {} only in a (-), {} only in b (+)",
            totals.diff.changed_events, totals.events, totals.diff.only_a, totals.diff.only_b
        ))?;
        self.line(&wording)
    }
}

fn speed(totals: &Totals, started: Instant) -> (f64, f64) {
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        totals.replayed() as f64 / seconds
    } else {
        0.0
    };
    (seconds, rate)
}

fn events_json(totals: &Totals, seconds: f64, rate: f64) -> Value {
    json!({
        "events": totals.events,
        "warm_up_events": totals.warm_up,
        "events_after_until": totals.after_window,
        "skipped": totals.skipped,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "events_per_second": rate.round(),
    })
}

fn events_line(totals: &Totals, seconds: f64, rate: f64) -> String {
    let mut line = format!(
        "replayed {} events in {seconds:.2}s ({rate:.0} events/s)",
        totals.replayed()
    );
    if totals.warm_up > 0 {
        let _ = write!(line, "; {} before --since only built state", totals.warm_up);
    }
    if totals.after_window > 0 {
        let _ = write!(line, "; {} after --until left out", totals.after_window);
    }
    if totals.skipped > 0 {
        let _ = write!(line, "; {} skipped (not events)", totals.skipped);
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
            failures: Vec::new(),
        };
        let mut b = Outcome {
            decisions: vec![decision("ana"), decision("cy")],
            failures: Vec::new(),
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
