//! `converge rules check`: compiles every configured rule (every error with
//! file:line:column), then lints the rule set against the config. Each
//! problem is one `path:line:column: error|warning: message` line and a
//! `hint:` line; the messages are tested word for word, so scripts and
//! editors can rely on them.
//!
//! The lints:
//! - a decision a rule can make whose kind no `[[routes]]` entry acts on,
//!   for the kinds whose only effect is the actions their routes start
//!   ([`DecisionKind::ROUTED_ONLY`]); the others change the entity, journal
//!   an event or start a timer inside converge, routed or not;
//! - a `.rhai` file in a rules directory that `rules.files` does not list;
//! - a rule file listed twice in `rules.files` (an error: converge would
//!   refuse to start, rule names must be unique);
//! - a pattern in a rule's `//! events:` header that matches no known event
//!   type ([`KnownEventTypes`]), most often a typo that keeps the rule from
//!   ever running;
//! - two rules that handle `send.requested`, one able to hold a channel's
//!   send and the other to release it ([`gate_conflicts`]): the hold wins
//!   on that event, which the release's author may not expect. Checked
//!   only when every rule compiles.
//!
//! A rule that does not compile has its error reported, and the lints of
//! its decisions and header wait until it compiles. Finding the decisions a
//! rule can make, and the event types it names, reads its script as Rhai
//! compiles it ([`Script`]): calls inside the `${..}` of a backtick string,
//! method calls (`"ana".notify(..)`) and calls in the rule's own functions
//! are seen, but it is not an evaluation, so: a call in a branch that can
//! never run counts anyway, unless the compiler drops the branch (`if false
//! { .. }`); an event type or a channel built at run time is not seen (a
//! `const`, or `"a" + "b"`, is: the compiler folds them); and a function
//! called through a pointer (`Fn("notify")`, `call(..)`) is not seen.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use converge_model::DecisionKind;
use converge_rules::script::{Argument, Call};
use converge_rules::{Rule, RuleSet, RuleSource, Script};

use crate::Exit;
use crate::config::Config;
use converge_engine::gates::{OVERRIDE_TYPE, SEND_REQUESTED};

/// One problem, printed as `path:line:column: severity: message` and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    path: PathBuf,
    line: usize,
    column: usize,
    error: bool,
    message: String,
    hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.column,
            if self.error { "error" } else { "warning" },
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

pub fn run(config_path: &Path) -> ExitCode {
    let config = match super::load_config(config_path) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let (problems, compiled) = check(&config, config_path);
    for problem in &problems {
        println!("{problem}");
    }
    let errors = problems.iter().filter(|p| p.error).count();
    let warnings = problems.len() - errors;
    println!(
        "{}: {} of {} rule(s) compiled, {errors} error(s), {warnings} warning(s)",
        config_path.display(),
        compiled,
        config.rules.files.len()
    );
    if errors > 0 {
        Exit::Invalid.into()
    } else {
        Exit::Ok.into()
    }
}

/// Every problem, in the order of the configured files, then the number of
/// rules that compiled.
fn check(config: &Config, config_path: &Path) -> (Vec<Problem>, usize) {
    let mut problems = Vec::new();
    let files: Vec<PathBuf> = config.rules.files.iter().map(|f| super::tidy(f)).collect();

    let mut sources = Vec::new();
    // A file listed twice is reported below, by the indexes of its entries;
    // compiling it once keeps the rules crate's duplicate-name error away.
    let mut unique = files.clone();
    let mut listed = BTreeSet::new();
    unique.retain(|p| listed.insert(p.clone()));
    for path in &unique {
        match RuleSource::read(path) {
            Ok(source) => sources.push(source),
            Err(e) => problems.push(Problem {
                path: path.clone(),
                line: 0,
                column: 0,
                error: true,
                message: format!("cannot read the rule: {e}"),
                hint: None,
            }),
        }
    }
    // A script that does not compile has no entry: `RuleSet::compile`
    // reports its error.
    let scripts: Vec<(&RuleSource, Script)> = sources
        .iter()
        .filter_map(|source| {
            let script = Script::compile(source, &config.rules.limits).ok()?;
            Some((source, script))
        })
        .collect();
    let mut broken = BTreeSet::new();
    let compiled = match RuleSet::compile(sources.clone(), &config.rules.limits) {
        Ok(rules) => {
            problems.extend(gate_conflicts(&rules, &scripts));
            problems.extend(broad_queries(&rules));
            rules.rules().len()
        }
        Err(errors) => {
            // A rule may have several errors (one per header problem).
            broken.extend(errors.iter().map(|e| e.path.clone()));
            problems.extend(errors.into_iter().map(|e| Problem {
                path: e.path,
                line: e.line,
                column: e.column,
                error: true,
                message: e.message,
                hint: None,
            }));
            sources.len() - broken.len()
        }
    };

    // A rule that does not compile has its error already.
    let linted = || scripts.iter().filter(|(s, _)| !broken.contains(&s.path));
    let routed: BTreeSet<&str> = config.routes.iter().map(|r| r.decision.as_str()).collect();
    for (source, script) in linted() {
        let mut reported = BTreeSet::new();
        for call in decision_calls(script) {
            let name = call.name.as_str();
            if DecisionKind::ROUTED_ONLY.contains(&name)
                && !routed.contains(name)
                && reported.insert(name)
            {
                problems.push(Problem {
                    path: source.path.clone(),
                    line: call.line,
                    column: call.column,
                    error: false,
                    message: format!("decision `{}` is never routed to an action", call.name),
                    hint: Some(format!(
                        "add a [[routes]] entry with decision = \"{}\" to {}; until then the decision is only recorded",
                        call.name,
                        config_path.display()
                    )),
                });
            }
        }
    }

    // Every script that compiles names known types, even one whose header
    // does not: that header may be what is wrong.
    let known = KnownEventTypes::gather(config, scripts.iter().map(|(_, script)| script));
    for (source, _) in linted() {
        for pattern in header_event_patterns(&source.source) {
            if known.matched_by(&pattern.text) {
                continue;
            }
            let hint = match known.closest_to(&pattern.text) {
                Some(near) => format!(
                    "did you mean `{near}`? If not, and events of this type come from outside, add it to [rules] event_types in {}",
                    config_path.display()
                ),
                None => format!(
                    "no rule compares event.type with it, emits, schedules or expects it, and no rule test sends it; if events of this type come from outside, add it to [rules] event_types in {}",
                    config_path.display()
                ),
            };
            problems.push(Problem {
                path: source.path.clone(),
                line: pattern.line,
                column: pattern.column,
                error: false,
                message: format!(
                    "`events` pattern `{}` matches no known event type",
                    pattern.text
                ),
                hint: Some(hint),
            });
        }
    }

    for (i, path) in files.iter().enumerate() {
        if let Some(first) = files[..i].iter().position(|p| p == path) {
            problems.push(Problem {
                path: path.clone(),
                line: 1,
                column: 1,
                error: true,
                message: format!(
                    "rule file is listed twice in rules.files (rules.files[{first}] and rules.files[{i}])"
                ),
                hint: Some("rule names must be unique; remove one entry".into()),
            });
        }
    }

    for dir in super::rule_dirs(config) {
        let Ok(present) = super::files_ending_with(&dir, ".rhai") else {
            continue;
        };
        for path in present.into_iter().filter(|p| !files.contains(p)) {
            problems.push(Problem {
                path,
                line: 1,
                column: 1,
                error: false,
                message: "unused rule: rules.files does not list this file".into(),
                hint: Some(format!(
                    "add it to rules.files in {} to run it, or delete it",
                    config_path.display()
                )),
            });
        }
    }
    (problems, compiled)
}

/// A rule that reads other entities or the reports and handles every
/// event, or a pattern of them: before each event it handles, the daemon
/// waits for the commit of every event before it, so on busy event types
/// it serializes processing. Meant for review points (a schedule's event).
fn broad_queries(rules: &RuleSet) -> Vec<Problem> {
    rules
        .rules()
        .iter()
        .filter(|rule| rule.queries)
        .filter_map(|rule| {
            let handles = match &rule.events {
                None => "every event".to_string(),
                Some(patterns) => {
                    let broad: Vec<&str> = patterns
                        .iter()
                        .filter(|p| p.contains('*'))
                        .map(String::as_str)
                        .collect();
                    if broad.is_empty() {
                        return None;
                    }
                    format!("`{}`", broad.join("`, `"))
                }
            };
            Some(Problem {
                path: rule.path.clone(),
                line: 1,
                column: 1,
                error: false,
                message: format!(
                    "rule `{}` reads other entities or the reports (`entities`, `report`) on {handles}: \
                     each such event waits for the events before it to be committed",
                    rule.name
                ),
                hint: Some(
                    "give it the event types it needs in its `events` header, such as a schedule's \
                     (`events: review.weekly`, docs/schedules.md), as review points do"
                        .into(),
                ),
            })
        })
        .collect()
}

/// The calls of decision functions (named like their decision kind) a
/// rule's script makes, in source order.
fn decision_calls(script: &Script) -> impl Iterator<Item = &Call> {
    script
        .calls()
        .iter()
        .filter(|call| DecisionKind::NAMES.contains(&call.name.as_str()))
}

/// A `hold_send` or `release_send` call whose channel is known when the
/// rule compiles.
#[derive(Debug, PartialEq, Eq)]
struct ChannelCall<'a> {
    channel: &'a str,
    /// 1-based.
    line: usize,
    /// 1-based, in characters.
    column: usize,
}

/// The calls of `function` in a rule's script whose first argument, the
/// channel, is a string known when the rule compiles.
fn channel_calls<'a>(script: &'a Script, function: &str) -> Vec<ChannelCall<'a>> {
    script
        .calls()
        .iter()
        .filter(|call| call.name == function)
        .filter_map(|call| {
            Some(ChannelCall {
                channel: call.text(0)?,
                line: call.line,
                column: call.column,
            })
        })
        .collect()
}

/// A warning for each pair of rules where one can hold a channel's send and
/// the other can release it, both running on `send.requested`: the one event
/// on which a hold holds anything (docs/gates.md). The engine lets a hold
/// beat a release within one event, so the release does nothing there:
/// worth knowing for the release's author.
fn gate_conflicts(rules: &RuleSet, scripts: &[(&RuleSource, Script)]) -> Vec<Problem> {
    let on_sends: Vec<(&Rule, &RuleSource, &Script)> = rules
        .rules()
        .iter()
        .filter(|rule| rule.handles(SEND_REQUESTED))
        .filter_map(|rule| {
            scripts
                .iter()
                .find(|(source, _)| source.path == rule.path)
                .map(|(source, script)| (rule, *source, script))
        })
        .collect();
    let mut problems = Vec::new();
    for (hold_index, (holder, hold_source, hold_script)) in on_sends.iter().enumerate() {
        let holds = channel_calls(hold_script, "hold_send");
        if holds.is_empty() {
            continue;
        }
        for (release_index, (releaser, release_source, release_script)) in
            on_sends.iter().enumerate()
        {
            if release_index == hold_index {
                continue;
            }
            let releases = channel_calls(release_script, "release_send");
            let mut reported = BTreeSet::new();
            for hold in &holds {
                let Some(release) = releases.iter().find(|r| r.channel == hold.channel) else {
                    continue;
                };
                if !reported.insert(hold.channel) {
                    continue;
                }
                let (channel, held_by, released_by) = (hold.channel, &holder.name, &releaser.name);
                let outcome = format!(
                    "the hold wins on that event (whatever the rule order), so `{released_by}` releases nothing there and the send stays held until a later release or an override"
                );
                problems.push(Problem {
                    path: hold_source.path.clone(),
                    line: hold.line,
                    column: hold.column,
                    error: false,
                    message: format!(
                        "on `{SEND_REQUESTED}`, `{held_by}` holds `{channel}` and `{released_by}` releases it: {outcome}"
                    ),
                    hint: Some(format!(
                        "`{released_by}` releases it at {}:{}:{}; if `{released_by}` means to send once `{held_by}`'s condition clears, release on the event that clears it, or let one rule decide whether `{channel}` is held on `{SEND_REQUESTED}`",
                        release_source.path.display(),
                        release.line,
                        release.column
                    )),
                });
            }
        }
    }
    problems
}

/// The event types converge knows of, which the patterns of rule headers
/// should match:
/// - the strings rules compare `event.type` with (`==`, `!=`, either side)
///   or list as `switch event.type` cases;
/// - the event types rules journal: `emit("t", ..)`, `schedule(after, "t")`
///   and `expect(.., .., "otherwise")` with a string known when the rule
///   compiles;
/// - the `type` of every event in the rule test files beside the rules
///   (steps, fired timers, emitted events);
/// - the types converge journals itself (`gate.override`) and the types of
///   the config's schedules;
/// - the config's `rules.event_types`, for types that only come from outside.
#[derive(Debug, Default)]
struct KnownEventTypes(BTreeSet<String>);

impl KnownEventTypes {
    fn gather<'a>(
        config: &Config,
        scripts: impl IntoIterator<Item = &'a Script>,
    ) -> KnownEventTypes {
        let mut known = KnownEventTypes::default();
        for script in scripts {
            known
                .0
                .extend(event_types_named(script).into_iter().map(String::from));
        }
        known
            .0
            .extend(super::test::event_types_in_tests(&super::rule_dirs(config)));
        known.0.insert(OVERRIDE_TYPE.to_string());
        known
            .0
            .extend(config.schedules.iter().map(|s| s.event_type.clone()));
        known.0.extend(config.rules.event_types.iter().cloned());
        known
    }

    /// Whether some known type matches `pattern`. A pattern of nothing but
    /// `*` matches every type, known or not.
    fn matched_by(&self, pattern: &str) -> bool {
        pattern.chars().all(|c| c == '*')
            || self
                .0
                .iter()
                .any(|t| converge_rules::event_type_matches(pattern, t))
    }

    /// The known type nearest a pattern without `*`, when it is near
    /// enough to be a typo of it (at most a quarter of its characters off).
    fn closest_to(&self, pattern: &str) -> Option<&str> {
        if pattern.contains('*') {
            return None;
        }
        let most = (pattern.chars().count() / 4).max(1);
        self.0
            .iter()
            .map(|t| (strsim::levenshtein(pattern, t), t))
            .filter(|(d, _)| *d <= most)
            .min()
            .map(|(_, t)| t.as_str())
    }
}

/// The event types a rule's script names as strings known when it compiles;
/// see [`KnownEventTypes`].
fn event_types_named(script: &Script) -> Vec<&str> {
    let is_event_type = |argument: &Argument| argument.is_path(&["event", "type"]);
    let mut types = Vec::new();
    for call in script.calls() {
        match (call.name.as_str(), call.arguments.as_slice()) {
            // event.type == "t", "t" != event.type
            ("==" | "!=", [a, Argument::Text(ty)] | [Argument::Text(ty), a])
                if is_event_type(a) =>
            {
                types.push(ty.as_str());
            }
            // emit("t"), schedule(after, "t"), expect(t, within, "otherwise")
            ("emit", _) => types.extend(call.text(0)),
            ("schedule", _) => types.extend(call.text(1)),
            ("expect", _) => types.extend(call.text(2)),
            _ => {}
        }
    }
    // switch event.type { "a" => .., "b" | "c" => .. }
    for switch in script.switches() {
        if is_event_type(&switch.subject) {
            types.extend(switch.labels.iter().map(String::as_str));
        }
    }
    types
}

/// One event type pattern of a rule header's `events`, where it stands.
#[derive(Debug, PartialEq, Eq)]
struct HeaderPattern {
    text: String,
    /// 1-based.
    line: usize,
    /// 1-based, in characters.
    column: usize,
}

/// The patterns of the `events` line of a rule's header (the run of `//!`
/// lines the file starts with, blank lines before it allowed: as the rules
/// crate reads it), with their positions.
fn header_event_patterns(source: &str) -> Vec<HeaderPattern> {
    let mut patterns = Vec::new();
    let mut in_header = false;
    for (index, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("//!") else {
            if trimmed.is_empty() && !in_header {
                continue;
            }
            break;
        };
        in_header = true;
        let Some((key, value)) = rest.split_once(':') else {
            continue;
        };
        if key.trim() != "events" {
            continue;
        }
        // Byte offset of `value` in `line`.
        let mut offset = line.len() - value.len();
        for part in value.split(',') {
            let text = part.trim();
            if !text.is_empty() {
                let at = offset + (part.len() - part.trim_start().len());
                patterns.push(HeaderPattern {
                    text: text.to_string(),
                    line: index + 1,
                    column: line[..at].chars().count() + 1,
                });
            }
            offset += part.len() + 1;
        }
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(source: &str) -> Script {
        let source = RuleSource {
            name: "r".into(),
            path: "r.rhai".into(),
            source: source.into(),
        };
        Script::compile(&source, &Default::default()).expect("the rule compiles")
    }

    /// `check` of these rule files, written in a temporary directory and
    /// listed in this order: the first line of each problem as printed, with
    /// paths relative to that directory, and the number of rules compiled.
    fn checked(rules: &[(&str, &str)]) -> (Vec<String>, usize) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (file, source) in rules {
            std::fs::write(dir.path().join(file), source).expect("the rule is written");
        }
        let files: Vec<String> = rules.iter().map(|(file, _)| format!("{file:?}")).collect();
        let config_path = dir.path().join("converge.toml");
        let text = format!(
            "[storage]\ndata_dir = \"data\"\n\n[rules]\nfiles = [{}]\n",
            files.join(", ")
        );
        let config = Config::parse(&config_path, &text, &|_| None).expect("a valid config");
        let prefix = format!("{}/", dir.path().display());
        let (problems, compiled) = check(&config, &config_path);
        let lines = problems
            .iter()
            .map(|problem| {
                let printed = problem.to_string().replace(&prefix, "");
                printed.lines().next().unwrap_or_default().to_string()
            })
            .collect();
        (lines, compiled)
    }

    fn problem_lines(rules: &[(&str, &str)]) -> Vec<String> {
        checked(rules).0
    }

    #[test]
    fn finds_decision_calls_outside_comments_strings_and_own_functions() {
        let source = r#"// escalate("x", "y") in a comment
/* notify("a", "b") /* nested */ still a comment */
let s = "notify(\"a\", \"b\")";
let t = `escalate(${1})`;
fn notify(a) { a }
let x = "ops";
notify(x);
if true {
    escalate ("ops", "é is one column", 2);
}
notify("a", s); set_field("x", 1);
"#;
        let script = script(source);
        let calls: Vec<_> = decision_calls(&script)
            .map(|c| (c.name.as_str(), c.line, c.column))
            .collect();
        assert_eq!(
            calls,
            [("escalate", 9, 5), ("notify", 11, 1), ("set_field", 11, 17)]
        );
    }

    #[test]
    fn a_decision_inside_an_interpolation_is_seen() {
        let rule = "let n = 1;\nlet text = `late by ${n}h: ${notify(\"ana\", \"late\")}`;\n";
        assert_eq!(
            problem_lines(&[("late.rhai", rule)]),
            ["late.rhai:2:30: warning: decision `notify` is never routed to an action"]
        );
    }

    #[test]
    fn a_decision_in_method_call_syntax_is_seen() {
        let rule = "if entity != () {\n    entity.owner.escalate(\"late\");\n}\n";
        assert_eq!(
            problem_lines(&[("late.rhai", rule)]),
            ["late.rhai:2:18: warning: decision `escalate` is never routed to an action"]
        );
    }

    #[test]
    fn a_decision_inside_a_function_of_the_rule_is_seen() {
        let rule = "fn tell(who) {\n    notify(who, \"late\");\n}\ntell(\"ana\");\n";
        assert_eq!(
            problem_lines(&[("late.rhai", rule)]),
            ["late.rhai:2:5: warning: decision `notify` is never routed to an action"]
        );
    }

    #[test]
    fn a_rule_that_does_not_compile_is_not_linted() {
        let broken = "//! events: task.updatd\nif true {\n    notify(\"a\", \"b\"\n}\n";
        let lines = problem_lines(&[("broken.rhai", broken)]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("broken.rhai:4:1: error: "),
            "{lines:?}"
        );
    }

    #[test]
    fn a_rule_with_two_header_errors_is_one_rule_that_does_not_compile() {
        let rule = "//! orde: 5\n//! catch_up: never\nlet x = 1;\n";
        let (lines, compiled) = checked(&[("r.rhai", rule)]);
        assert_eq!((lines.len(), compiled), (2, 0), "{lines:?}");
    }

    #[test]
    fn finds_the_channels_of_gate_calls_known_when_the_rule_compiles() {
        let source = r#"const CHANNEL = "push";
let x = "social";
let suffix = "-2";
hold_send("email", "held");
hold_send(event.data.channel, "not known");
release_send("email", "a release"); // hold_send("sms", "in a comment")
"ads".hold_send("a method call");
x.hold_send("the channel is a variable");
if true { hold_send(`paid`, `held by ${x}`); }
hold_send("email" + suffix, "built at run time");
release_send(CHANNEL, "a constant");
"#;
        let script = script(source);
        let found = |function| -> Vec<_> {
            channel_calls(&script, function)
                .into_iter()
                .map(|c| (c.channel, c.line, c.column))
                .collect()
        };
        assert_eq!(
            found("hold_send"),
            [("email", 4, 1), ("ads", 7, 7), ("paid", 9, 11)]
        );
        assert_eq!(found("release_send"), [("email", 6, 1), ("push", 11, 1)]);
    }

    #[test]
    fn a_rule_that_queries_on_a_broad_pattern_or_every_event_is_reported() {
        let query = "let n = entities(#{ kind: \"task\" }).len();\n";
        let lines = problem_lines(&[
            (
                "digest.rhai",
                &format!("//! events: review.weekly\n{query}"),
            ),
            (
                "busy.rhai",
                &format!("//! events: task.*, review.weekly\n{query}"),
            ),
            (
                "every.rhai",
                "let r = report(#{ metric: \"rework_rate\" });\n",
            ),
            (
                "plain.rhai",
                "//! events: task.*\nnotify(\"ops\", \"x\");\n",
            ),
        ]);
        let lines: Vec<&String> = lines.iter().filter(|l| l.contains("reads other")).collect();
        assert_eq!(
            lines,
            [
                "busy.rhai:1:1: warning: rule `busy` reads other entities or the reports \
                 (`entities`, `report`) on `task.*`: each such event waits for the events \
                 before it to be committed",
                "every.rhai:1:1: warning: rule `every` reads other entities or the reports \
                 (`entities`, `report`) on every event: each such event waits for the events \
                 before it to be committed",
            ]
        );
    }

    #[test]
    fn a_hold_and_a_release_of_one_channel_on_send_requested_are_reported() {
        let sources: Vec<RuleSource> = [
            (
                "a_release",
                "//! events: send.requested\nrelease_send(\"email\", \"rule A: ok\");\n",
            ),
            (
                "b_hold",
                "//! events: send.requested\nhold_send(\"email\", \"rule B: not ok\");\n",
            ),
            (
                "c_later",
                "//! events: legal.approved\nrelease_send(\"email\", \"approved later\");\n",
            ),
            // Runs first; releases through a channel no literal names.
            (
                "d_sms_hold",
                "//! order: 1\nhold_send(\"sms\", \"held\");\nrelease_send(event.data.channel, \"x\");\n",
            ),
            // Every event, so `send.requested` too.
            ("e_sms_release", "release_send(\"sms\", \"ok\");\n"),
        ]
        .into_iter()
        .map(|(name, source)| RuleSource {
            name: name.into(),
            path: format!("rules/{name}.rhai").into(),
            source: source.into(),
        })
        .collect();
        let rules = RuleSet::compile(sources.clone(), &Default::default()).unwrap();
        let scripts: Vec<_> = sources
            .iter()
            .map(|source| (source, script(&source.source)))
            .collect();
        let found: Vec<_> = gate_conflicts(&rules, &scripts)
            .into_iter()
            .map(|p| {
                format!(
                    "{}:{}:{}: {}\n  hint: {}",
                    p.path.display(),
                    p.line,
                    p.column,
                    p.message,
                    p.hint.unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                "rules/d_sms_hold.rhai:2:1: on `send.requested`, `d_sms_hold` holds `sms` and `e_sms_release` releases it: the hold wins on that event (whatever the rule order), so `e_sms_release` releases nothing there and the send stays held until a later release or an override\n  \
                 hint: `e_sms_release` releases it at rules/e_sms_release.rhai:1:1; if `e_sms_release` means to send once `d_sms_hold`'s condition clears, release on the event that clears it, or let one rule decide whether `sms` is held on `send.requested`",
                "rules/b_hold.rhai:2:1: on `send.requested`, `b_hold` holds `email` and `a_release` releases it: the hold wins on that event (whatever the rule order), so `a_release` releases nothing there and the send stays held until a later release or an override\n  \
                 hint: `a_release` releases it at rules/a_release.rhai:2:1; if `a_release` means to send once `b_hold`'s condition clears, release on the event that clears it, or let one rule decide whether `email` is held on `send.requested`",
            ]
        );
    }

    #[test]
    fn globs_match_as_the_rules_crate_matches() {
        let table = [
            ("task.updated", "task.updated", true),
            ("task.updated", "task.updated2", false),
            ("task.*", "task.updated", true),
            ("task.*", "task.due.changed", true),
            ("task.*", "task", false),
            ("task.*", "tasks.updated", false),
            ("*", "anything", true),
            ("*.updated", "campaign.channel.updated", true),
            ("*.updated", "campaign.created", false),
            ("campaign.*.updated", "campaign.channel.updated", true),
            ("campaign.*.updated", "campaign.updated", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*a*b*", "xaxbx", true),
            ("*a*b*", "xbxax", false),
        ];
        for (pattern, ty, expected) in table {
            assert_eq!(
                converge_rules::event_type_matches(pattern, ty),
                expected,
                "{pattern} ~ {ty}"
            );
            // The same answer as the rule a header with this pattern makes.
            let rules = RuleSet::compile(
                vec![RuleSource {
                    name: "r".into(),
                    path: "r.rhai".into(),
                    source: format!("//! events: {pattern}\n"),
                }],
                &Default::default(),
            )
            .unwrap();
            assert_eq!(rules.rules()[0].handles(ty), expected, "{pattern} ~ {ty}");
        }
    }

    #[test]
    fn finds_the_event_types_a_rule_names() {
        let source = r#"//! events: task.*
let x = #{ event: #{ type: "" } };
let kind = "k";
if event.type == "task.handoff" || "task.viewed" != event.type { return; }
// event.type == "in.a.comment"
let note = "event.type == \"in.a.string\"";
if x.event.type == "not.the.event" { return; }
switch event.type {
    "task.remind" => 1,
    "task.a" | "task.b" => #{ x: "not.a.case" },
    _ => 0,
};
emit("task.flagged", #{ reason: "late" });
emit(`task.templated.${kind}`);
schedule("24h", "task.nudge");
schedule(`24h`, `task.backticked`, #{});
schedule("24h", "task." + kind);
expect(t(1, 2), "48h", "task.stalled");
expect("task.reviewed", "48h");
x.emit("not.an.event.type");
"task.by.method".emit();
"#;
        let script = script(source);
        let mut named = event_types_named(&script);
        named.sort_unstable();
        assert_eq!(
            named,
            [
                "task.a",
                "task.b",
                "task.backticked",
                "task.by.method",
                "task.flagged",
                "task.handoff",
                "task.nudge",
                "task.remind",
                "task.stalled",
                "task.viewed",
            ]
        );
    }

    #[test]
    fn finds_the_header_patterns_where_they_stand() {
        let source = "\n//! name: x\n  //! events:  task.*,asset.créé , *.done\n//! order: 1\nlet events = 1;\n//! events: not.the.header\n";
        let found: Vec<_> = header_event_patterns(source)
            .into_iter()
            .map(|p| (p.text, p.line, p.column))
            .collect();
        assert_eq!(
            found,
            [
                ("task.*".to_string(), 3, 16),
                ("asset.créé".to_string(), 3, 23),
                ("*.done".to_string(), 3, 36),
            ]
        );
    }

    #[test]
    fn a_near_known_type_is_suggested() {
        let known = KnownEventTypes(
            ["task.updated", "task.handoff", "asset.created"]
                .map(String::from)
                .into(),
        );
        assert!(known.matched_by("task.*") && known.matched_by("*") && !known.matched_by("tsk.*"));
        assert_eq!(known.closest_to("task.updatd"), Some("task.updated"));
        assert_eq!(known.closest_to("task.deleted"), None);
        assert_eq!(known.closest_to("tsk.*"), None);
    }
}
