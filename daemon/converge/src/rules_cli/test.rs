//! `converge rules test`: rule tests are data. A `*.test.toml` file beside
//! the rules names the rules it runs and lists cases; each case is a clock, an
//! optional starting entity state and steps, each step an event and the
//! decisions it must produce. The format is documented in
//! `docs/rule-tests.md`; `cargo test` runs the repository's test files
//! through this same runner (`tests/it/rules_cli.rs`).
//!
//! A case simulates the daemon: a step runs its event exactly as the
//! processor does (the event applied to its entity's state, then the rules
//! evaluated on it with the clock's `now`), and the state carries over to the
//! next step. `schedule` and `expect` decisions become pending timers, which
//! fire, as the scheduler fires them, when a step's `advance` moves the clock
//! past their due time; an event of an `expect`'s type cancels it; `emit`
//! decisions journal events processed right after the one that emitted them.
//! That simulation is `simulate.rs`, shared with `converge replay`.
//! A step's expectations cover its event, the timers it fired and the events
//! emitted in it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use chrono::{DateTime, Utc};
use converge_model::entity::ChannelState;
use converge_model::{EntityKey, EntityState, Event};
use converge_rules::{Evaluation, RuleLimits, RuleSet, RuleSource};
use serde_json::{Map, Value};

use super::diff;
use crate::Exit;
use converge_engine::effects::data_without_timer;
use converge_engine::{Engine, Origin, Rules, Simulated, Simulation};

/// The clock of a case that does not set `now`: fixed, so tests never depend
/// on the day they run.
const DEFAULT_NOW: &str = "2026-01-01T00:00:00Z";
const TEST_SUFFIX: &str = ".test.toml";
/// `rules.max_emit_depth` when no config is given: the config's default.
const DEFAULT_MAX_EMIT_DEPTH: u32 = 8;

mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub rules: Option<Vec<String>>,
        /// Rule files run in shadow, after the live ones (as `rules.shadow`).
        #[serde(default)]
        pub shadow: Vec<String>,
        #[serde(default, rename = "case")]
        pub cases: Vec<Case>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Case {
        pub name: String,
        pub now: Option<toml::Value>,
        pub entity: Option<Entity>,
        #[serde(default, rename = "step")]
        pub steps: Vec<Step>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Entity {
        pub kind: String,
        pub id: String,
        pub stage: Option<String>,
        pub owner: Option<String>,
        #[serde(default)]
        pub fields: toml::Table,
        #[serde(default)]
        pub channels: BTreeMap<String, Channel>,
        pub created_at: Option<toml::Value>,
        pub stage_since: Option<toml::Value>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Channel {
        pub stage: Option<String>,
        pub owner: Option<String>,
        #[serde(default)]
        pub fields: toml::Table,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Step {
        pub event: Option<Event>,
        pub advance: Option<String>,
        pub expect: Option<Vec<toml::Table>>,
        #[serde(default)]
        pub expect_failures: Vec<String>,
        /// Every decision the shadow rules make on the step's event.
        pub expect_shadow: Option<Vec<toml::Table>>,
        pub fired: Option<Vec<Follower>>,
        pub emitted: Option<Vec<Follower>>,
        /// The sends held after the step, every campaign's, oldest first:
        /// each table's members (`campaign`, `channel`, `send`, `rules`,
        /// `reasons`) must match.
        pub held: Option<Vec<toml::Table>>,
        /// The sends released during the step, in order (`campaign`,
        /// `channel`, `send`, `by`).
        pub released: Option<Vec<toml::Table>>,
    }

    /// An event converge journals itself during a step: a fired timer's or
    /// an emitted one.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Follower {
        #[serde(rename = "type")]
        pub ty: String,
        pub subject: Option<String>,
        pub time: Option<toml::Value>,
        pub data: Option<toml::Value>,
        pub expect: Option<Vec<toml::Table>>,
        #[serde(default)]
        pub expect_failures: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Event {
        #[serde(rename = "type")]
        pub ty: String,
        pub subject: Option<String>,
        pub data: Option<toml::Value>,
        pub id: Option<String>,
        pub source: Option<String>,
        pub time: Option<toml::Value>,
    }
}

/// What running every test file found.
#[derive(Debug, Default)]
struct Totals {
    passed: usize,
    failed: usize,
    /// Test files that could not run: unreadable, malformed, or naming rules
    /// that do not compile.
    invalid: usize,
}

/// What a rule test runs on without a config: no routes, the default limits and stage names.
fn default_engine() -> Engine {
    Engine {
        routes: Vec::new(),
        max_emit_depth: DEFAULT_MAX_EMIT_DEPTH,
        stages: Default::default(),
    }
}

pub fn run(config_path: Option<&Path>, paths: &[PathBuf]) -> ExitCode {
    let started = Instant::now();
    let (limits, engine, roots) = match (config_path, paths.is_empty()) {
        (None, false) => (RuleLimits::default(), default_engine(), paths.to_vec()),
        (config_path, _) => {
            let config_path = config_path.unwrap_or(Path::new("config/converge.toml"));
            let config = match super::load_config(config_path) {
                Ok(config) => config,
                Err(exit) => return exit,
            };
            let roots = if paths.is_empty() {
                super::rule_dirs(&config)
            } else {
                paths.to_vec()
            };
            let engine = Engine {
                routes: Vec::new(),
                max_emit_depth: config.rules.max_emit_depth,
                stages: std::sync::Arc::new(config.report),
            };
            (config.rules.limits, engine, roots)
        }
    };
    let files = match find_test_files(&roots) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid.into();
        }
    };

    let mut totals = Totals::default();
    let mut failures = Vec::new();
    let loaded: Vec<_> = files
        .iter()
        .map(|f| (f, TestFile::load(f, &limits)))
        .collect();
    let cases: usize = loaded
        .iter()
        .filter_map(|(_, t)| t.as_ref().ok())
        .map(|t| t.cases.len())
        .sum();
    println!(
        "running {cases} {} from {} {}",
        plural(cases, "test", "tests"),
        files.len(),
        plural(files.len(), "file", "files")
    );
    for (path, test_file) in loaded {
        let display = display_name(path);
        let test_file = match test_file {
            Ok(test_file) => test_file,
            Err(message) => {
                println!("test {display} ... ERROR");
                failures.push((display.clone(), message));
                totals.invalid += 1;
                continue;
            }
        };
        for case in &test_file.cases {
            let title = format!("{display} :: {}", case.name);
            let rules = Rules {
                live: &test_file.rules,
                shadow: Some(&test_file.shadow),
            };
            match run_case(rules, &engine, case) {
                Ok(()) => {
                    println!("test {title} ... ok");
                    totals.passed += 1;
                }
                Err(report) => {
                    println!("test {title} ... FAILED");
                    failures.push((title, report));
                    totals.failed += 1;
                }
            }
        }
    }

    if !failures.is_empty() {
        println!("\nfailures:");
        for (title, report) in &failures {
            println!("\n---- {title} ----\n{}", report.trim_end());
        }
    }
    let ok = totals.failed == 0 && totals.invalid == 0;
    let mut summary = format!(
        "\ntest result: {}. {} passed; {} failed",
        if ok { "ok" } else { "FAILED" },
        totals.passed,
        totals.failed
    );
    if totals.invalid > 0 {
        let _ = write!(
            summary,
            "; {} invalid {}",
            totals.invalid,
            plural(totals.invalid, "file", "files")
        );
    }
    println!(
        "{summary}; finished in {:.2}s",
        started.elapsed().as_secs_f64()
    );

    if totals.invalid > 0 {
        Exit::Invalid.into()
    } else if totals.failed > 0 {
        Exit::Failure.into()
    } else {
        Exit::Ok.into()
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The file name: test files live beside their rules, so the name is what
/// an author recognizes.
fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Every test file under `roots`: a file is taken as given, a directory is
/// searched (not recursively) for `*.test.toml`.
fn find_test_files(roots: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for root in roots {
        if root.is_dir() {
            let found = super::files_ending_with(root, TEST_SUFFIX)
                .map_err(|e| format!("cannot read {}: {e}", root.display()))?;
            files.extend(found);
        } else if root.is_file() {
            files.push(super::tidy(root));
        } else {
            return Err(format!("{}: no such file or directory", root.display()));
        }
    }
    files.dedup();
    Ok(files)
}

/// The type of every event the test files in `dirs` name (their steps'
/// events, fired timers and emitted events), for `converge rules check`,
/// which counts them as known event types. A file that cannot be read or
/// parsed names none: `converge rules test` is where that is reported.
pub(super) fn event_types_in_tests(dirs: &[PathBuf]) -> BTreeSet<String> {
    let mut types = BTreeSet::new();
    for dir in dirs {
        for path in super::files_ending_with(dir, TEST_SUFFIX).unwrap_or_default() {
            let Some(file) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| toml::from_str::<raw::File>(&text).ok())
            else {
                continue;
            };
            for step in file.cases.iter().flat_map(|c| &c.steps) {
                types.extend(step.event.iter().map(|e| e.ty.clone()));
                let followers = step.fired.iter().chain(&step.emitted).flatten();
                types.extend(followers.map(|f| f.ty.clone()));
            }
        }
    }
    types
}

/// A test file, its rules compiled.
struct TestFile {
    rules: RuleSet,
    /// The file's `shadow` rules (empty without).
    shadow: RuleSet,
    cases: Vec<raw::Case>,
}

impl TestFile {
    fn load(path: &Path, limits: &RuleLimits) -> Result<TestFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let file: raw::File = toml::from_str(&text).map_err(|e| {
            format!(
                "{}: {}",
                path.display(),
                e.to_string().trim_end().replace('\n', "\n    ")
            )
        })?;
        if file.cases.is_empty() {
            return Err(format!("{}: no [[case]] in the file", path.display()));
        }
        for case in &file.cases {
            if case.steps.is_empty() {
                return Err(format!(
                    "{}: case `{}` has no [[case.step]]",
                    path.display(),
                    case.name
                ));
            }
            for (i, step) in case.steps.iter().enumerate() {
                step_shape(step).map_err(|e| {
                    format!(
                        "{}: case `{}`, step {}: {e}",
                        path.display(),
                        case.name,
                        i + 1
                    )
                })?;
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let rule_files: Vec<PathBuf> = match &file.rules {
            Some(rules) => rules.iter().map(|r| super::tidy(&dir.join(r))).collect(),
            None => {
                let name = display_name(path);
                let stem = name.strip_suffix(TEST_SUFFIX).unwrap_or(&name);
                vec![super::tidy(&dir.join(format!("{stem}.rhai")))]
            }
        };
        let compile = |files: Vec<PathBuf>| -> Result<RuleSet, String> {
            let mut sources = Vec::with_capacity(files.len());
            for rule in files {
                sources.push(RuleSource::read(&rule).map_err(|e| {
                    format!(
                        "{}: cannot read rule {}: {e}",
                        path.display(),
                        rule.display()
                    )
                })?);
            }
            RuleSet::compile(sources, limits).map_err(|errors| {
                let mut message = format!("{}: its rules do not compile:", path.display());
                for e in errors {
                    let _ = write!(message, "\n  {e}");
                }
                message
            })
        };
        let shadow_files: Vec<PathBuf> = file
            .shadow
            .iter()
            .map(|r| super::tidy(&dir.join(r)))
            .collect();
        if let Some(both) = shadow_files.iter().find(|f| rule_files.contains(f)) {
            return Err(format!(
                "{}: {} is in both `rules` and `shadow`; a rule runs live or in shadow",
                path.display(),
                both.display()
            ));
        }
        Ok(TestFile {
            rules: compile(rule_files)?,
            shadow: compile(shadow_files)?,
            cases: file.cases,
        })
    }
}

/// A step has an event, or only advances the clock (to fire timers); the
/// expectations about the step's own event need one.
fn step_shape(step: &raw::Step) -> Result<(), String> {
    if step.event.is_some() {
        return Ok(());
    }
    if step.advance.is_none() {
        return Err("a step needs an `event`, an `advance`, or both".into());
    }
    if step.expect.is_some() || !step.expect_failures.is_empty() || step.expect_shadow.is_some() {
        return Err("`expect` and `expect_failures` are about the step's `event`, and it has none (expectations for fired timers go in `fired`)".into());
    }
    Ok(())
}

/// Most timers one step may fire: past this a rule is rescheduling itself in
/// a loop faster than the step advances, and the case stops with an error.
const MAX_FIRINGS_PER_STEP: usize = 10_000;

/// Runs the steps of one case in order; the error is the failure report.
fn run_case(rules: Rules<'_>, engine: &Engine, case: &raw::Case) -> Result<(), String> {
    let now = match &case.now {
        Some(value) => time("now", value)?,
        None => DEFAULT_NOW.parse().expect("a valid constant time"),
    };
    let mut sim = Simulation::new(rules, engine.clone(), now);
    if let Some(spec) = &case.entity {
        sim.insert_entity(starting_state(spec, now)?);
    }
    for (i, step) in case.steps.iter().enumerate() {
        let number = i + 1;
        let mut until = sim.now;
        if let Some(advance) = &step.advance {
            let by = humantime::parse_duration(advance).map_err(|e| {
                format!("step {number}: advance: `{advance}` is not a duration like \"30m\" or \"48h\": {e}")
            })?;
            let by = chrono::Duration::from_std(by)
                .map_err(|e| format!("step {number}: advance: {e}"))?;
            until += by;
        }
        let mut ran = StepRun::default();
        sim.advance_to(until, Some(MAX_FIRINGS_PER_STEP), &mut |p| ran.push(p))
            .map_err(|e| format!("step {number}: {e}"))?;
        let heading = match &step.event {
            Some(spec) => {
                let event = step_event(spec, number, sim.now)
                    .map_err(|e| format!("step {number}: event: {e}"))?;
                let heading = format!("{} at {}", event.ty, rfc3339(sim.now));
                sim.run(&event, Origin::Input, &mut |p| ran.push(p))
                    .map_err(|e| format!("step {number}: {e}"))?;
                heading
            }
            None => format!(
                "advance {} to {}",
                step.advance.as_deref().unwrap_or_default(),
                rfc3339(sim.now)
            ),
        };
        let mut problems = check_step(step, &ran);
        if let Some(expected) = &step.held {
            let held: Vec<Value> = sim
                .gates()
                .all()
                .map(|(campaign, send)| {
                    let mut view = send.to_rule_value();
                    view["campaign"] = campaign.into();
                    view["send"] = view["event_id"].take();
                    view
                })
                .collect();
            problems.push_str(&check_sends("held", expected, &held));
        }
        if let Some(expected) = &step.released {
            problems.push_str(&check_sends("released", expected, &ran.released));
        }
        if !problems.is_empty() {
            return Err(format!("step {number} ({heading}):\n{problems}"));
        }
    }
    Ok(())
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// One event processed, and what the rules made of it.
struct Ran {
    event: Event,
    evaluation: Evaluation,
    /// The shadow rules' decisions.
    shadow: Vec<converge_model::Decision>,
}

/// Everything one step processed, by origin, each in processing order.
#[derive(Default)]
struct StepRun {
    /// Timers that fell due while the step advanced the clock.
    fired: Vec<Ran>,
    /// The step's `event`.
    event: Option<Ran>,
    /// Events emitted by the events processed in the step.
    emitted: Vec<Ran>,
    /// Every send released in the step, as `released` expectations read them.
    released: Vec<Value>,
}

impl StepRun {
    fn push(&mut self, processed: Simulated<'_>) {
        for release in &processed.outcome.releases {
            for send in &release.sends {
                self.released.push(serde_json::json!({
                    "campaign": release.campaign,
                    "channel": release.channel,
                    "send": send,
                    "by": release.by,
                }));
            }
        }
        let shadow = processed.shadow().cloned().collect();
        let ran = Ran {
            shadow,
            event: processed.event.clone(),
            evaluation: processed.evaluation,
        };
        match processed.origin {
            Origin::Input => self.event = Some(ran),
            Origin::Timer => self.fired.push(ran),
            Origin::Emit => self.emitted.push(ran),
        }
    }
}

/// Compares sends (held or released) with a step's list of them: as many,
/// and each expected table's members equal to the send's. The result lists
/// every difference; empty when they match.
fn check_sends(what: &str, expected: &[toml::Table], actual: &[Value]) -> String {
    let mut problems = String::new();
    let show = |sends: &[Value]| {
        sends
            .iter()
            .map(|s| format!("    {s}\n"))
            .collect::<String>()
    };
    let matches = expected.len() == actual.len()
        && expected.iter().zip(actual).all(|(want, send)| {
            want.iter()
                .all(|(key, value)| send.get(key) == Some(&toml_to_json(value.clone())))
        });
    if !matches {
        let want: Vec<Value> = expected
            .iter()
            .map(|t| toml_to_json(toml::Value::Table(t.clone())))
            .collect();
        let _ = writeln!(
            problems,
            "  the {what} sends differ:\n  expected:\n{}  actual:\n{}",
            show(&want),
            show(actual)
        );
    }
    problems
}

/// Compares everything one step processed with its expectations; the
/// result lists every difference (empty when there is none).
fn check_step(step: &raw::Step, ran: &StepRun) -> String {
    let mut problems = String::new();
    if let Some(event) = &ran.event {
        problems.push_str(&check_decisions(
            step.expect.as_deref(),
            &step.expect_failures,
            &event.evaluation,
        ));
        if let Some(expected) = &step.expect_shadow {
            let shadow = Evaluation {
                decisions: event.shadow.clone(),
                ..Evaluation::default()
            };
            let found = check_decisions(Some(expected), &[], &shadow);
            if !found.is_empty() {
                let _ = writeln!(problems, "  in shadow:");
                problems.push_str(&found);
            }
        }
    }
    problems.push_str(&check_followers(
        "fired timer",
        step.fired.as_deref(),
        &ran.fired,
    ));
    problems.push_str(&check_followers(
        "emitted event",
        step.emitted.as_deref(),
        &ran.emitted,
    ));
    problems
}

/// Checks the events converge journaled itself during a step (fired timers
/// or emitted events) against their list in the step. Without a list, only
/// their rule failures are problems, as for a step without `expect`.
fn check_followers(what: &str, expected: Option<&[raw::Follower]>, actual: &[Ran]) -> String {
    let mut problems = String::new();
    let section = |problems: &mut String, i: usize, ran: &Ran, found: &str| {
        if found.is_empty() {
            return;
        }
        let at = ran.event.time.map(rfc3339).unwrap_or_default();
        let _ = writeln!(problems, "  {what} {} ({} at {at}):", i + 1, ran.event.ty);
        for line in found.lines() {
            let _ = writeln!(problems, "  {line}");
        }
    };
    let Some(expected) = expected else {
        for (i, ran) in actual.iter().enumerate() {
            section(
                &mut problems,
                i,
                ran,
                &check_decisions(None, &[], &ran.evaluation),
            );
        }
        return problems;
    };
    let expected_types: Vec<&str> = expected.iter().map(|f| f.ty.as_str()).collect();
    let actual_types: Vec<&str> = actual.iter().map(|r| r.event.ty.as_str()).collect();
    if expected_types != actual_types {
        let _ = writeln!(problems, "  the {what}s differ (- expected, + actual):");
        let lines = |types: &[&str]| types.iter().map(|t| format!("{t}\n")).collect::<String>();
        for line in diff::lines(&lines(&expected_types), &lines(&actual_types)) {
            let _ = writeln!(problems, "    {line}");
        }
        return problems;
    }
    for (i, (want, ran)) in expected.iter().zip(actual).enumerate() {
        let mut found = String::new();
        if let Some(subject) = &want.subject
            && ran.event.subject.as_deref() != Some(subject.as_str())
        {
            let _ = writeln!(
                found,
                "  the subject is {:?}, expected {subject:?}",
                ran.event.subject.as_deref().unwrap_or_default()
            );
        }
        if let Some(at) = &want.time {
            match time("time", at) {
                Ok(at) if ran.event.time == Some(at) => {}
                Ok(at) => {
                    let _ = writeln!(
                        found,
                        "  the time is {}, expected {}",
                        ran.event.time.map(rfc3339).unwrap_or_default(),
                        rfc3339(at)
                    );
                }
                Err(e) => {
                    let _ = writeln!(found, "  {e}");
                }
            }
        }
        if let Some(data) = &want.data {
            let expected = toml_to_json(data.clone());
            let actual = without_nulls(data_without_timer(&ran.event).into_owned());
            if expected != actual {
                let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON prints");
                let _ = writeln!(found, "  the data differs (- expected, + actual):");
                for line in diff::lines(&pretty(&expected), &pretty(&actual)) {
                    let _ = writeln!(found, "    {line}");
                }
            }
        }
        found.push_str(&check_decisions(
            want.expect.as_deref(),
            &want.expect_failures,
            &ran.evaluation,
        ));
        section(&mut problems, i, ran, &found);
    }
    problems
}

/// Compares one event's decisions and failures with their expectations; the
/// result is the problems, two spaces in, or nothing.
fn check_decisions(
    expect: Option<&[toml::Table]>,
    expect_failures: &[String],
    evaluation: &Evaluation,
) -> String {
    let mut problems = String::new();
    if let Some(expect) = expect {
        let expected: Vec<Value> = expect
            .iter()
            .map(|e| toml_to_json(toml::Value::Table(e.clone())))
            .collect();
        let actual: Vec<Value> = evaluation
            .decisions
            .iter()
            .enumerate()
            .map(|(i, decision)| {
                let mut value =
                    without_nulls(serde_json::to_value(decision).expect("decisions serialize"));
                if let Value::Object(members) = &mut value {
                    members.remove("rule_hash");
                    let rule_expected = expected.get(i).is_some_and(|e| e.get("rule").is_some());
                    if !rule_expected {
                        members.remove("rule");
                    }
                    // The trace is compared only when the expectation gives
                    // one, and then only the members it gives (`at`,
                    // `inputs`, `terms`): a test should not break because a
                    // line moved.
                    match (
                        expected.get(i).and_then(|e| e.get("trace")),
                        members.get_mut("trace"),
                    ) {
                        (Some(Value::Object(wanted)), Some(Value::Object(trace))) => {
                            trace.retain(|key, _| wanted.contains_key(key));
                        }
                        (Some(_), _) => {}
                        (None, _) => {
                            members.remove("trace");
                        }
                    }
                }
                value
            })
            .collect();
        if expected != actual {
            let pretty = |v: &Vec<Value>| serde_json::to_string_pretty(v).expect("JSON prints");
            let _ = writeln!(problems, "  the decisions differ (- expected, + actual):");
            for line in diff::lines(&pretty(&expected), &pretty(&actual)) {
                let _ = writeln!(problems, "    {line}");
            }
        }
    }

    let mut unmatched: Vec<&str> = expect_failures.iter().map(String::as_str).collect();
    for failure in &evaluation.failures {
        match unmatched
            .iter()
            .position(|wanted| failure.message.contains(wanted))
        {
            Some(i) => {
                unmatched.remove(i);
            }
            None => {
                let _ = writeln!(problems, "  unexpected rule failure: {}", failure.message);
            }
        }
    }
    for wanted in unmatched {
        let _ = writeln!(
            problems,
            "  expected a rule failure containing `{wanted}`; there was none"
        );
    }

    if !problems.is_empty() && !evaluation.notes.is_empty() {
        let _ = writeln!(problems, "  rule output (print/debug):");
        for note in &evaluation.notes {
            let _ = writeln!(problems, "    {}: {}", note.rule, note.message);
        }
    }
    problems
}

/// The event of a step, with `id`, `source` and `time` defaulted.
fn step_event(spec: &raw::Event, number: usize, now: DateTime<Utc>) -> Result<Event, String> {
    let mut json = Map::new();
    json.insert("specversion".into(), "1.0".into());
    json.insert(
        "id".into(),
        spec.id
            .clone()
            .unwrap_or_else(|| format!("step-{number}"))
            .into(),
    );
    json.insert(
        "source".into(),
        spec.source
            .clone()
            .unwrap_or_else(|| "/converge/rules-test".into())
            .into(),
    );
    json.insert("type".into(), spec.ty.clone().into());
    if let Some(subject) = &spec.subject {
        json.insert("subject".into(), subject.clone().into());
    }
    let at = match &spec.time {
        Some(value) => time("time", value)?,
        None => now,
    };
    json.insert(
        "time".into(),
        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into(),
    );
    if let Some(data) = &spec.data {
        json.insert("datacontenttype".into(), "application/json".into());
        json.insert("data".into(), toml_to_json(data.clone()));
    }
    Event::from_value(Value::Object(json)).map_err(|e| e.to_string())
}

/// The case's `entity`: what it gives, the rest as a new entity's state.
fn starting_state(spec: &raw::Entity, now: DateTime<Utc>) -> Result<EntityState, String> {
    let key = EntityKey {
        kind: spec.kind.clone(),
        id: spec.id.clone(),
    };
    if EntityKey::parse(&key.to_string()).as_ref() != Some(&key) {
        return Err(format!(
            "entity: `{key}` is not an entity a subject can name (kind: lowercase letters, digits, `_`, `-`; id: no spaces)"
        ));
    }
    let created_at = match &spec.created_at {
        Some(value) => time("entity.created_at", value)?,
        None => now,
    };
    let mut state = EntityState::new(&key, created_at);
    state.owner = spec.owner.clone();
    if let Some(stage) = &spec.stage {
        state.stage = Some(stage.clone());
        state.stage_since = Some(created_at);
    }
    if let Some(value) = &spec.stage_since {
        state.stage_since = Some(time("entity.stage_since", value)?);
    }
    state.fields = table_to_map(&spec.fields);
    state.channels = spec
        .channels
        .iter()
        .map(|(name, channel)| {
            let state = ChannelState {
                stage: channel.stage.clone(),
                owner: channel.owner.clone(),
                fields: table_to_map(&channel.fields),
                updated_at: Some(created_at),
                ..ChannelState::default()
            };
            (name.clone(), state)
        })
        .collect();
    Ok(state)
}

/// A time written as an RFC 3339 string or a bare TOML date-time.
fn time(key: &str, value: &toml::Value) -> Result<DateTime<Utc>, String> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        other => return Err(format!("{key}: expected a time, got {}", other.type_str())),
    };
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("{key}: `{text}` is not an RFC 3339 time like \"2026-11-23T10:00:00Z\": {e}")
        })
}

fn table_to_map(table: &toml::Table) -> Map<String, Value> {
    table
        .iter()
        .map(|(k, v)| (k.clone(), toml_to_json(v.clone())))
        .collect()
}

/// `value` without the object members that are `null`, at any depth: TOML
/// has no null, so an expectation writes a null member (a removed field,
/// an absent stage) by leaving it out.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// TOML to JSON, date-times as their RFC 3339 text (serde would turn them
/// into toml's private marker map).
fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(source: &str) -> RuleSet {
        RuleSet::compile(
            vec![RuleSource {
                name: "r".into(),
                path: "rules/r.rhai".into(),
                source: source.into(),
            }],
            &RuleLimits::default(),
        )
        .unwrap()
    }

    fn case(text: &str) -> raw::Case {
        let mut file: raw::File = toml::from_str(text).unwrap();
        file.cases.remove(0)
    }

    #[test]
    fn state_carries_over_and_the_clock_advances() {
        let rules = rules(
            r#"
            if entity != () && entity.stage_since != () {
                let hours = seconds_between(entity.stage_since, now) / 3600;
                notify(entity.owner, `${entity.fields.brief} ${hours}h`);
            }
            "#,
        );
        let case = case(
            r#"
            [[case]]
            name = "x"
            now = 2026-11-23T10:00:00Z
            entity = { kind = "task", id = "T-1", owner = "ana", fields = { brief = "b" } }
            [[case.step]]
            event = { type = "task.updated", subject = "task/T-1", data = { stage = "review" } }
            expect = [{ kind = "notify", to = "ana", message = "b 0h" }]
            [[case.step]]
            advance = "48h"
            event = { type = "task.viewed", subject = "task/T-1" }
            expect = [{ kind = "notify", to = "ana", message = "b 48h", rule = "r" }]
            "#,
        );
        run_case(live(&rules), &default_engine(), &case).unwrap();
    }

    #[test]
    fn a_difference_is_reported_as_a_diff() {
        let rules = rules(r#"notify("ana", "hi"); throw "boom";"#);
        let case = case(
            r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "t" }
            expect = [{ kind = "notify", to = "bo", message = "hi" }]
            "#,
        );
        let report = run_case(live(&rules), &default_engine(), &case).unwrap_err();
        assert_eq!(
            report,
            "step 1 (t at 2026-01-01T00:00:00Z):
  the decisions differ (- expected, + actual):
    - [
    -   {
    -     \"kind\": \"notify\",
    -     \"message\": \"hi\",
    -     \"to\": \"bo\"
    -   }
    - ]
    + []
  unexpected rule failure: rules/r.rhai:1:22: Runtime error: boom
"
        );
    }

    #[test]
    fn expected_failures_match_by_substring() {
        let rules = rules(r#"throw "boom";"#);
        let case = case(
            r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "t" }
            expect = []
            expect_failures = ["boom"]
            "#,
        );
        run_case(live(&rules), &default_engine(), &case).unwrap();
    }

    fn run(rules_source: &str, case_text: &str) -> Result<(), String> {
        let rules = rules(rules_source);
        run_case(live(&rules), &default_engine(), &case(case_text))
    }

    fn live(rules: &RuleSet) -> Rules<'_> {
        Rules {
            live: rules,
            shadow: None,
        }
    }

    #[test]
    fn a_case_asserts_what_the_shadow_rules_decide_and_they_change_nothing() {
        let live = rules(r#"notify("ops", `stage ${entity.stage}`);"#);
        let shadow = RuleSet::compile(
            vec![RuleSource {
                name: "strict".into(),
                path: "rules/strict.rhai".into(),
                source: r#"set_stage("blocked"); escalate("lead", "would escalate");"#.into(),
            }],
            &RuleLimits::default(),
        )
        .unwrap();
        let rules = Rules {
            live: &live,
            shadow: Some(&shadow),
        };
        let text = |level: u32| {
            format!(
                r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = {{ type = "t", subject = "task/T-1", data = {{ stage = "review" }} }}
            expect = [{{ kind = "notify", to = "ops", message = "stage review" }}]
            expect_shadow = [
                {{ kind = "set_stage", stage = "blocked" }},
                {{ kind = "escalate", to = "lead", reason = "would escalate", level = {level} }},
            ]
            [[case.step]]
            event = {{ type = "t", subject = "task/T-1" }}
            expect = [{{ kind = "notify", to = "ops", message = "stage review" }}]
            "#
            )
        };
        run_case(rules, &default_engine(), &case(&text(1))).unwrap();
        let err = run_case(rules, &default_engine(), &case(&text(3))).unwrap_err();
        assert!(err.contains("in shadow:"), "{err}");
    }

    #[test]
    fn timers_fire_in_due_order_as_the_daemon_journals_them() {
        let result = run(
            r#"
            if event.type == "task.handoff" {
                schedule("48h", "task.escalate", #{ level: 2 });
                schedule("24h", "task.remind", #{ level: 1 });
            } else if event.source == "converge/timers" {
                let t = event.data.timer;
                notify(entity.owner, `${event.id} ${event.type} level ${event.data.level} timer ${t.id} ${t.rule} ${t.scheduled_for} late=${t.late} now=${now} level field: ${entity.fields.get("level")} timer field: ${entity.fields.get("timer")}`);
            }
            "#,
            r#"
            [[case]]
            name = "x"
            now = 2026-11-23T10:00:00Z
            entity = { kind = "task", id = "T-1", owner = "ana" }
            [[case.step]]
            event = { type = "task.handoff", subject = "task/T-1" }
            expect = [
                { kind = "schedule", after_ms = 172800000, event_type = "task.escalate", data = { level = 2 }, catch_up = "fire_late" },
                { kind = "schedule", after_ms = 86400000, event_type = "task.remind", data = { level = 1 }, catch_up = "fire_late" },
            ]
            fired = []
            [[case.step]]
            advance = "23h"
            fired = []
            [[case.step]]
            advance = "2d"
            fired = [
                { type = "task.remind", subject = "task/T-1", time = 2026-11-24T10:00:00Z, data = { level = 1 }, expect = [
                    { kind = "notify", to = "ana", message = "timer-2 task.remind level 1 timer 2 r 2026-11-24T10:00:00.000Z late=false now=2026-11-24T10:00:00Z level field:  timer field: " },
                ] },
                { type = "task.escalate", time = 2026-11-25T10:00:00Z, expect = [
                    { kind = "notify", to = "ana", message = "timer-1 task.escalate level 2 timer 1 r 2026-11-25T10:00:00.000Z late=false now=2026-11-25T10:00:00Z level field:  timer field: " },
                ] },
            ]
            [[case.step]]
            advance = "30d"
            event = { type = "task.viewed", subject = "task/T-1" }
            expect = []
            fired = []
            "#,
        );
        result.unwrap();
    }

    #[test]
    fn an_event_of_the_expected_type_cancels_the_expect() {
        let rules = r#"
            if event.type == "task.handoff" {
                expect("task.updated", "48h", "task.stalled");
            } else if event.type == "task.stalled" {
                escalate("review_owner", `${event.subject} stalled`, 2);
            }
        "#;
        let cancelled = r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "task.handoff", subject = "task/T-1" }
            [[case.step]]
            advance = "47h"
            event = { type = "task.commented", subject = "task/T-1" }
            fired = []
            [[case.step]]
            event = { type = "task.updated", subject = "task/T-2" }
            [[case.step]]
            event = { type = "task.updated", subject = "task/T-1" }
            [[case.step]]
            advance = "10d"
            fired = []
        "#;
        run(rules, cancelled).unwrap();
        let fires = r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "task.handoff", subject = "task/T-1" }
            [[case.step]]
            advance = "48h"
            event = { type = "task.updated", subject = "task/T-1" }
            fired = [
                { type = "task.stalled", time = 2026-01-03T00:00:00Z, data = {}, expect = [
                    { kind = "escalate", to = "review_owner", reason = "task/T-1 stalled", level = 2 },
                ] },
            ]
        "#;
        run(rules, fires).unwrap();
    }

    #[test]
    fn a_case_asserts_the_sends_held_and_released() {
        let rules = r#"
            if event.type == "send.requested" {
                release_send(event.data.channel, "timing ok");
                if event.data.body.contains("risk-free") {
                    hold_send(event.data.channel, "banned claim");
                }
            } else if event.type == "legal.approved" {
                for held in gate.held { release_send(held.channel, "legal ok"); }
            }
        "#;
        let case = |released_by: &str| {
            format!(
                r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = {{ id = "s-1", type = "send.requested", subject = "campaign/c-1", data = {{ channel = "email", body = "risk-free!" }} }}
            held = [{{ campaign = "campaign/c-1", channel = "email", send = "s-1", reasons = ["banned claim"] }}]
            released = []
            [[case.step]]
            event = {{ type = "legal.approved", subject = "campaign/c-1" }}
            held = []
            released = [{{ channel = "email", send = "s-1", by = "{released_by}" }}]
            "#
            )
        };
        run(rules, &case("rule r")).unwrap();
        let err = run(rules, &case("rule someone-else")).unwrap_err();
        assert!(err.contains("the released sends differ"), "{err}");
        assert!(err.starts_with("step 2 (legal.approved"), "{err}");
    }

    #[test]
    fn emitted_events_follow_the_event_that_emitted_them() {
        let result = run(
            r#"
            if event.type == "a" {
                emit("b", #{ n: 1 });
                emit("c");
                notify("x", "a");
            } else if event.type == "b" {
                emit("d");
                notify("x", `b ${event.id} ${event.data.n} merged: ${"n" in entity.fields}`);
            } else if event.type == "loop" {
                emit("loop");
            }
            "#,
            r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "a", subject = "task/T-1" }
            expect = [
                { kind = "emit", event_type = "b", data = { n = 1 } },
                { kind = "emit", event_type = "c", data = {} },
                { kind = "notify", to = "x", message = "a" },
            ]
            emitted = [
                { type = "b", subject = "task/T-1", data = { n = 1 }, expect = [
                    { kind = "emit", event_type = "d", data = {} },
                    { kind = "notify", to = "x", message = "b emit-1-1 1 merged: false" },
                ] },
                { type = "c", expect = [] },
                { type = "d", expect = [] },
            ]
            [[case.step]]
            event = { type = "loop", subject = "task/T-1" }
            expect = [{ kind = "emit", event_type = "loop", data = {} }]
            emitted = [
                { type = "loop" }, { type = "loop" }, { type = "loop" }, { type = "loop" },
                { type = "loop" }, { type = "loop" }, { type = "loop" },
                { type = "loop", expect = [], expect_failures = ["emit of `loop` refused: it would be 9 emits deep"] },
            ]
            "#,
        );
        result.unwrap();
    }

    #[test]
    fn timers_created_while_advancing_fire_in_the_same_advance() {
        let result = run(
            r#"
            if event.type == "start" || event.type == "tick" && event.data.n < 3 {
                let n = if event.type == "tick" { event.data.n + 1 } else { 1 };
                schedule("1h", "tick", #{ n: n });
            }
            "#,
            r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "start", subject = "task/T-1" }
            [[case.step]]
            advance = "1d"
            fired = [
                { type = "tick", time = 2026-01-01T01:00:00Z, data = { n = 1 } },
                { type = "tick", time = 2026-01-01T02:00:00Z, data = { n = 2 } },
                { type = "tick", time = 2026-01-01T03:00:00Z, data = { n = 3 }, expect = [] },
            ]
            "#,
        );
        result.unwrap();
    }

    #[test]
    fn fired_timers_that_differ_are_reported() {
        let rules = r#"
            if event.type == "start" {
                schedule("1h", "tick");
                schedule("2h", "tock");
            } else if event.type == "tock" {
                notify("ana", "tock");
            } else if event.type == "tick" {
                throw "boom";
            }
        "#;
        let report = run(
            rules,
            r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "start", subject = "task/T-1" }
            [[case.step]]
            advance = "3h"
            fired = [{ type = "tock" }]
            "#,
        )
        .unwrap_err();
        assert_eq!(
            report,
            "step 2 (advance 3h to 2026-01-01T03:00:00Z):
  the fired timers differ (- expected, + actual):
    + tick
      tock
"
        );
        let report = run(
            rules,
            r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "start", subject = "task/T-1" }
            [[case.step]]
            advance = "3h"
            fired = [
                { type = "tick", expect_failures = ["boom"] },
                { type = "tock", time = 2026-01-01T03:00:00Z, expect = [] },
            ]
            "#,
        )
        .unwrap_err();
        assert_eq!(
            report,
            "step 2 (advance 3h to 2026-01-01T03:00:00Z):
  fired timer 2 (tock at 2026-01-01T02:00:00Z):
    the time is 2026-01-01T02:00:00Z, expected 2026-01-01T03:00:00Z
    the decisions differ (- expected, + actual):
      - []
      + [
      +   {
      +     \"kind\": \"notify\",
      +     \"message\": \"tock\",
      +     \"to\": \"ana\"
      +   }
      + ]
"
        );
        // Without a `fired` list, a fired timer's rule failure still fails the case.
        let report = run(
            rules,
            r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "start", subject = "task/T-1" }
            [[case.step]]
            advance = "3h"
            "#,
        )
        .unwrap_err();
        assert!(
            report.contains("  fired timer 1 (tick at 2026-01-01T01:00:00Z):\n    unexpected rule failure: rules/r.rhai:"),
            "{report}"
        );
    }

    #[test]
    fn timers_due_together_fire_together() {
        // The second timer is an expect for the first one's type; fired in
        // the same commit, the first cannot cancel it.
        run(
            r#"
            if event.type == "start" {
                schedule("1h", "ping");
                expect("ping", "1h", "no.ping");
            }
            "#,
            r#"
            [[case]]
            name = "x"
            [[case.step]]
            event = { type = "start", subject = "task/T-1" }
            [[case.step]]
            advance = "1h"
            fired = [{ type = "ping" }, { type = "no.ping" }]
            "#,
        )
        .unwrap();
    }

    #[test]
    fn a_step_without_an_event_only_advances() {
        let shape = |text: &str| step_shape(&case(text).steps[0]);
        let no_event = "[[case]]\nname = \"x\"\n[[case.step]]\n";
        assert!(shape(no_event).unwrap_err().contains("needs an `event`"));
        let expect_without_event = format!("{no_event}advance = \"1h\"\nexpect = []\n");
        assert!(
            shape(&expect_without_event)
                .unwrap_err()
                .contains("go in `fired`")
        );
        assert_eq!(shape(&format!("{no_event}advance = \"1h\"\n")), Ok(()));
    }
}
