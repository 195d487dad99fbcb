//! `converge rules test`: rule tests are data. A `*.test.toml` file beside
//! the rules names the rules it runs and lists cases; each case is a clock, an
//! optional starting entity state and steps, each step an event and the
//! decisions it must produce. The format is documented in
//! `docs/rule-tests.md`; `cargo test` runs the repository's test files
//! through this same runner (`tests/it/rules_cli.rs`).
//!
//! A step runs exactly as the processor runs an event: the event is applied
//! to its entity's state, then the rules are evaluated on it with the clock's
//! `now`; the state carries over to the next step.

use std::collections::BTreeMap;
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

/// The clock of a case that does not set `now`: fixed, so tests never depend
/// on the day they run.
const DEFAULT_NOW: &str = "2026-01-01T00:00:00Z";
const TEST_SUFFIX: &str = ".test.toml";

mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub rules: Option<Vec<String>>,
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
        pub event: Event,
        pub advance: Option<String>,
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

pub fn run(config_path: Option<&Path>, paths: &[PathBuf]) -> ExitCode {
    let started = Instant::now();
    let (limits, roots) = match (config_path, paths.is_empty()) {
        (None, false) => (RuleLimits::default(), paths.to_vec()),
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
            (config.rules.limits, roots)
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
            match run_case(&test_file.rules, case) {
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

/// A test file, its rules compiled.
struct TestFile {
    rules: RuleSet,
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
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let rule_files = match &file.rules {
            Some(rules) => rules.iter().map(|r| super::tidy(&dir.join(r))).collect(),
            None => {
                let name = display_name(path);
                let stem = name.strip_suffix(TEST_SUFFIX).unwrap_or(&name);
                vec![super::tidy(&dir.join(format!("{stem}.rhai")))]
            }
        };
        let mut sources = Vec::with_capacity(rule_files.len());
        for rule in rule_files {
            let source = std::fs::read_to_string(&rule).map_err(|e| {
                format!(
                    "{}: cannot read rule {}: {e}",
                    path.display(),
                    rule.display()
                )
            })?;
            sources.push(RuleSource {
                name: super::rule_name(&rule),
                path: rule,
                source,
            });
        }
        let rules = RuleSet::compile(sources, limits).map_err(|errors| {
            let mut message = format!("{}: its rules do not compile:", path.display());
            for e in errors {
                let _ = write!(message, "\n  {e}");
            }
            message
        })?;
        Ok(TestFile {
            rules,
            cases: file.cases,
        })
    }
}

/// Runs the steps of one case in order; the error is the failure report.
fn run_case(rules: &RuleSet, case: &raw::Case) -> Result<(), String> {
    let mut now = match &case.now {
        Some(value) => time("now", value)?,
        None => DEFAULT_NOW.parse().expect("a valid constant time"),
    };
    let mut entities = BTreeMap::new();
    if let Some(spec) = &case.entity {
        let state = starting_state(spec, now)?;
        entities.insert(state.key(), state);
    }
    for (i, step) in case.steps.iter().enumerate() {
        let number = i + 1;
        if let Some(advance) = &step.advance {
            let by = humantime::parse_duration(advance).map_err(|e| {
                format!("step {number}: advance: `{advance}` is not a duration like \"30m\" or \"48h\": {e}")
            })?;
            let by = chrono::Duration::from_std(by)
                .map_err(|e| format!("step {number}: advance: {e}"))?;
            now += by;
        }
        let event = step_event(&step.event, number, now)
            .map_err(|e| format!("step {number}: event: {e}"))?;
        let evaluation = process(rules, &event, &mut entities, now);
        check_step(step, &evaluation).map_err(|problems| {
            format!(
                "step {number} ({} at {}):\n{problems}",
                event.ty,
                now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            )
        })?;
    }
    Ok(())
}

/// What the processor does with one event (`processor.rs`): the event's time
/// (or the clock, standing in for the time it was received) is when the
/// state changed; the state is created on first sight, the event applied,
/// then the rules run on it with the clock's `now`.
fn process(
    rules: &RuleSet,
    event: &Event,
    entities: &mut BTreeMap<EntityKey, EntityState>,
    now: DateTime<Utc>,
) -> Evaluation {
    let at = event.time.unwrap_or(now);
    let mut entity = event.entity_key().map(|key| {
        entities
            .remove(&key)
            .unwrap_or_else(|| EntityState::new(&key, at))
    });
    if let Some(state) = entity.as_mut() {
        state.apply_event(&event.ty, &event.data, at);
    }
    let evaluation = rules.evaluate(event, entity.as_mut(), now);
    if let Some(state) = entity {
        entities.insert(state.key(), state);
    }
    evaluation
}

/// Compares one step's result with its expectations; the error lists every
/// difference.
fn check_step(step: &raw::Step, evaluation: &Evaluation) -> Result<(), String> {
    let mut problems = String::new();
    if let Some(expect) = &step.expect {
        let expected: Vec<Value> = expect
            .iter()
            .map(|e| toml_to_json(toml::Value::Table(e.clone())))
            .collect();
        let actual: Vec<Value> = evaluation
            .decisions
            .iter()
            .enumerate()
            .map(|(i, decision)| {
                let mut value = serde_json::to_value(decision).expect("decisions serialize");
                if let Value::Object(members) = &mut value {
                    members.remove("rule_hash");
                    let rule_expected = expected.get(i).is_some_and(|e| e.get("rule").is_some());
                    if !rule_expected {
                        members.remove("rule");
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

    let mut unmatched: Vec<&str> = step.expect_failures.iter().map(String::as_str).collect();
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

    if problems.is_empty() {
        return Ok(());
    }
    if !evaluation.notes.is_empty() {
        let _ = writeln!(problems, "  rule output (print/debug):");
        for note in &evaluation.notes {
            let _ = writeln!(problems, "    {}: {}", note.rule, note.message);
        }
    }
    Err(problems)
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
        run_case(&rules, &case).unwrap();
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
        let report = run_case(&rules, &case).unwrap_err();
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
        run_case(&rules, &case).unwrap();
    }
}
