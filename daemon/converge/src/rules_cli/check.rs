//! `converge rules check`: compiles every configured rule (every error with
//! file:line:column), then lints the rule set against the config. Each
//! problem is one `path:line:column: error|warning: message` line and a
//! `hint:` line; the messages are tested word for word, so scripts and
//! editors can rely on them.
//!
//! The lints:
//! - a decision a rule can make whose kind no `[[routes]]` entry acts on,
//!   for the kinds whose only effect is the actions their routes start
//!   ([`ROUTED_ONLY`]); the others change the entity, journal an event or
//!   start a timer inside converge, routed or not;
//! - a `.rhai` file in a rules directory that `rules.files` does not list;
//! - a rule file listed twice in `rules.files` (an error: converge would
//!   refuse to start, rule names must be unique).
//!
//! Finding the decisions a rule can make is a scan of its source for calls
//! `name(` of a decision function, outside comments and strings. It does not
//! evaluate anything, so: calls inside `${...}` of a backtick string are not
//! seen; method-call syntax (`"ana".notify(..)`) is not seen; and a call in a
//! branch that can never run is reported anyway.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use converge_model::DecisionKind;
use converge_rules::{RuleSet, RuleSource};

use crate::Exit;
use crate::config::Config;

/// Decision kinds that do nothing unless a route sends them to a plugin.
const ROUTED_ONLY: &[&str] = &["escalate", "notify"];

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

impl Problem {
    fn print(&self) {
        println!(
            "{}:{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.column,
            if self.error { "error" } else { "warning" },
            self.message
        );
        if let Some(hint) = &self.hint {
            println!("  hint: {hint}");
        }
    }
}

pub fn run(config_path: &Path) -> ExitCode {
    let config = match super::load_config(config_path) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let (problems, compiled) = check(&config, config_path);
    for problem in &problems {
        problem.print();
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
        match std::fs::read_to_string(path) {
            Ok(source) => sources.push(RuleSource {
                name: super::rule_name(path),
                path: path.clone(),
                source,
            }),
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
    let compiled = match RuleSet::compile(sources.clone(), &config.rules.limits) {
        Ok(rules) => rules.rules().len(),
        Err(errors) => {
            let compiled = sources.len() - errors.len();
            problems.extend(errors.into_iter().map(|e| Problem {
                path: e.path,
                line: e.line,
                column: e.column,
                error: true,
                message: e.message,
                hint: None,
            }));
            compiled
        }
    };

    let routed: BTreeSet<&str> = config.routes.iter().map(|r| r.decision.as_str()).collect();
    for source in &sources {
        let mut reported = BTreeSet::new();
        for call in decision_calls(&source.source) {
            if ROUTED_ONLY.contains(&call.name)
                && !routed.contains(call.name)
                && reported.insert(call.name)
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

/// A call of a decision function in a rule's source.
#[derive(Debug, PartialEq, Eq)]
struct Call {
    name: &'static str,
    /// 1-based.
    line: usize,
    /// 1-based, in characters.
    column: usize,
}

/// The calls `name(` of decision functions (named like their decision kind)
/// in Rhai source, skipping comments, strings, character literals, method
/// calls (`.name(`) and function definitions (`fn name(`).
fn decision_calls(source: &str) -> Vec<Call> {
    let chars: Vec<char> = source.chars().collect();
    let mut calls = Vec::new();
    let (mut line, mut column) = (1, 1);
    let mut i = 0;
    // The last identifier or punctuation seen outside comments, to tell
    // `fn name(` and `.name(` from calls.
    let mut previous_word = String::new();
    let mut previous_char = ' ';

    let advance = |i: &mut usize, line: &mut usize, column: &mut usize, n: usize| {
        for _ in 0..n {
            if *i >= chars.len() {
                return;
            }
            if chars[*i] == '\n' {
                *line += 1;
                *column = 1;
            } else {
                *column += 1;
            }
            *i += 1;
        }
    };

    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, &mut line, &mut column, 1);
            }
        } else if c == '/' && next == Some('*') {
            // Rhai block comments nest.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    advance(&mut i, &mut line, &mut column, 2);
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    advance(&mut i, &mut line, &mut column, 2);
                    if depth == 0 {
                        break;
                    }
                } else {
                    advance(&mut i, &mut line, &mut column, 1);
                }
            }
        } else if c == '"' || c == '`' || c == '\'' {
            advance(&mut i, &mut line, &mut column, 1);
            while i < chars.len() && chars[i] != c {
                let n = if chars[i] == '\\' { 2 } else { 1 };
                advance(&mut i, &mut line, &mut column, n);
            }
            advance(&mut i, &mut line, &mut column, 1);
            previous_char = c;
            previous_word.clear();
        } else if c.is_alphabetic() || c == '_' {
            let (start_line, start_column) = (line, column);
            let mut word = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                word.push(chars[i]);
                advance(&mut i, &mut line, &mut column, 1);
            }
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let called = chars.get(j) == Some(&'(');
            let name = DecisionKind::NAMES.iter().find(|n| **n == word);
            if let Some(name) = name
                && called
                && previous_char != '.'
                && previous_word != "fn"
            {
                calls.push(Call {
                    name,
                    line: start_line,
                    column: start_column,
                });
            }
            previous_char = 'a';
            previous_word = word;
        } else {
            if !c.is_whitespace() {
                previous_char = c;
                previous_word.clear();
            }
            advance(&mut i, &mut line, &mut column, 1);
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_decision_calls_outside_comments_and_strings() {
        let source = r#"// escalate("x", "y") in a comment
/* notify("a", "b") /* nested */ still a comment */
let s = "notify(\"a\", \"b\")";
let t = `escalate(${1})`;
fn notify(a) { a }
x.escalate("a");
if true {
    escalate ("ops", "é is one column", 2);
}
notify("a", s); set_field("x", 1);
"#;
        let calls: Vec<_> = decision_calls(source)
            .into_iter()
            .map(|c| (c.name, c.line, c.column))
            .collect();
        assert_eq!(
            calls,
            [("escalate", 8, 5), ("notify", 10, 1), ("set_field", 10, 17)]
        );
    }
}
