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
//! Finding the decisions a rule can make, and the event types it names, is
//! a scan of its source ([`tokens`]) outside comments, not an evaluation,
//! so: calls inside `${...}` of a backtick string are not seen; method-call
//! syntax (`"ana".notify(..)`) is not seen; an event type built at run time
//! is not seen; a call in a branch that can never run counts anyway; and a
//! channel that is not a string literal is not matched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use converge_model::DecisionKind;
use converge_rules::{Rule, RuleSet, RuleSource};

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
    let mut broken = BTreeSet::new();
    let compiled = match RuleSet::compile(sources.clone(), &config.rules.limits) {
        Ok(rules) => {
            problems.extend(gate_conflicts(&rules, &sources));
            rules.rules().len()
        }
        Err(errors) => {
            let compiled = sources.len() - errors.len();
            broken.extend(errors.iter().map(|e| e.path.clone()));
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
            if DecisionKind::ROUTED_ONLY.contains(&call.name)
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

    // A rule that does not compile has its error already; its header may
    // be what is wrong.
    let known = KnownEventTypes::gather(config, &sources);
    for source in sources.iter().filter(|s| !broken.contains(&s.path)) {
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
/// in Rhai source, skipping comments, strings, method calls (`.name(`) and
/// function definitions (`fn name(`).
fn decision_calls(source: &str) -> Vec<Call> {
    let tokens = tokens(source);
    let mut calls = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let Some(name) = token
            .word()
            .and_then(|w| DecisionKind::NAMES.iter().find(|n| **n == w))
        else {
            continue;
        };
        if is_call(&tokens, i) {
            calls.push(Call {
                name,
                line: token.line,
                column: token.column,
            });
        }
    }
    calls
}

/// A `hold_send` or `release_send` call whose channel is a string literal.
#[derive(Debug, PartialEq, Eq)]
struct ChannelCall {
    channel: String,
    /// 1-based.
    line: usize,
    /// 1-based, in characters.
    column: usize,
}

/// The calls of `function` in Rhai source whose first argument, the
/// channel, is a string literal; as [`decision_calls`] finds calls.
fn channel_calls(source: &str, function: &str) -> Vec<ChannelCall> {
    let tokens = tokens(source);
    tokens
        .iter()
        .enumerate()
        .filter(|(i, token)| token.word() == Some(function) && is_call(&tokens, *i))
        .filter_map(|(i, token)| {
            literal_argument(&tokens, i + 1, 0).map(|channel| ChannelCall {
                channel: channel.to_string(),
                line: token.line,
                column: token.column,
            })
        })
        .collect()
}

/// A warning for each pair of rules where one can hold a channel's send and
/// the other can release it, both running on `send.requested`: the one event
/// on which a hold holds anything (docs/gates.md). The engine lets a hold
/// beat a release within one event, so the release does nothing there:
/// worth knowing for the release's author.
fn gate_conflicts(rules: &RuleSet, sources: &[RuleSource]) -> Vec<Problem> {
    let on_sends: Vec<(&Rule, &RuleSource)> = rules
        .rules()
        .iter()
        .filter(|rule| rule.handles(SEND_REQUESTED))
        .filter_map(|rule| {
            sources
                .iter()
                .find(|source| source.path == rule.path)
                .map(|source| (rule, source))
        })
        .collect();
    let mut problems = Vec::new();
    for (hold_index, (holder, hold_source)) in on_sends.iter().enumerate() {
        let holds = channel_calls(&hold_source.source, "hold_send");
        if holds.is_empty() {
            continue;
        }
        for (release_index, (releaser, release_source)) in on_sends.iter().enumerate() {
            if release_index == hold_index {
                continue;
            }
            let releases = channel_calls(&release_source.source, "release_send");
            let mut reported = BTreeSet::new();
            for hold in &holds {
                let Some(release) = releases.iter().find(|r| r.channel == hold.channel) else {
                    continue;
                };
                if !reported.insert(hold.channel.as_str()) {
                    continue;
                }
                let (channel, held_by, released_by) = (&hold.channel, &holder.name, &releaser.name);
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

/// Whether the word at `i` is called as a function: `name(`, not `.name(`
/// or `fn name(`.
fn is_call(tokens: &[Token], i: usize) -> bool {
    let before = i.checked_sub(1).map(|j| &tokens[j].kind);
    tokens.get(i + 1).is_some_and(|t| t.is('('))
        && !matches!(before, Some(Kind::Punct('.')))
        && !matches!(before, Some(Kind::Word(w)) if w == "fn")
}

/// The event types converge knows of, which the patterns of rule headers
/// should match:
/// - the string literals rules compare `event.type` with (`==`, `!=`, either
///   side) or list as `switch event.type` cases;
/// - the event types rules journal: `emit("t", ..)`, `schedule(after, "t")`
///   and `expect(.., .., "otherwise")` with a string literal;
/// - the `type` of every event in the rule test files beside the rules
///   (steps, fired timers, emitted events);
/// - the types converge journals itself (`gate.override`) and the types of
///   the config's schedules;
/// - the config's `rules.event_types`, for types that only come from outside.
#[derive(Debug, Default)]
struct KnownEventTypes(BTreeSet<String>);

impl KnownEventTypes {
    fn gather(config: &Config, sources: &[RuleSource]) -> KnownEventTypes {
        let mut known = KnownEventTypes::default();
        for source in sources {
            known.0.extend(event_types_named(&source.source));
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

/// The event types a rule's source names as string literals; see
/// [`KnownEventTypes`].
fn event_types_named(source: &str) -> Vec<String> {
    let tokens = tokens(source);
    let mut types = Vec::new();
    let is_event_type = |at: usize| {
        matches!(tokens.get(at..at + 3), Some([e, dot, ty])
            if e.word() == Some("event") && dot.is('.') && ty.word() == Some("type"))
            && (at == 0 || !tokens[at - 1].is('.'))
    };
    let is_comparison = |at: usize| matches!(tokens.get(at..at + 2), Some([a, b]) if (a.is('=') || a.is('!')) && b.is('='));
    for i in 0..tokens.len() {
        // event.type == "t", event.type != "t"
        if is_event_type(i)
            && is_comparison(i + 3)
            && let Some(text) = tokens.get(i + 5).and_then(Token::string)
        {
            types.push(text.to_string());
        }
        // "t" == event.type
        if let Some(text) = tokens[i].string()
            && is_comparison(i + 1)
            && is_event_type(i + 3)
        {
            types.push(text.to_string());
        }
        // switch event.type { "a" => .., "b" | "c" => .. }
        if tokens[i].word() == Some("switch")
            && is_event_type(i + 1)
            && tokens.get(i + 4).is_some_and(|t| t.is('{'))
        {
            let mut depth = 0;
            for (j, token) in tokens.iter().enumerate().skip(i + 4) {
                match token.kind {
                    Kind::Punct('{' | '(' | '[') => depth += 1,
                    Kind::Punct('}' | ')' | ']') => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                let case_label = matches!(tokens.get(j + 1..j + 3), Some([a, b]) if a.is('=') && b.is('>'))
                    || tokens.get(j + 1).is_some_and(|t| t.is('|'));
                if let Some(text) = token.string()
                    && depth == 1
                    && case_label
                {
                    types.push(text.to_string());
                }
            }
        }
        // emit("t"), schedule(after, "t"), expect(t, within, "otherwise")
        let argument = match tokens[i].word() {
            Some("emit") => 0,
            Some("schedule") => 1,
            Some("expect") => 2,
            _ => continue,
        };
        if is_call(&tokens, i)
            && let Some(text) = literal_argument(&tokens, i + 1, argument)
        {
            types.push(text.to_string());
        }
    }
    types
}

/// The `n`th (0-based) argument of the call whose `(` is at `open`, when it
/// is a string literal and nothing else.
fn literal_argument(tokens: &[Token], open: usize, n: usize) -> Option<&str> {
    let mut depth = 0;
    let mut argument = 0;
    let mut i = open + 1;
    while let Some(token) = tokens.get(i) {
        match token.kind {
            Kind::Punct('(' | '[' | '{') => depth += 1,
            Kind::Punct(')' | ']' | '}') if depth == 0 => return None,
            Kind::Punct(')' | ']' | '}') => depth -= 1,
            Kind::Punct(',') if depth == 0 => argument += 1,
            _ => {}
        }
        let starts_argument = i == open + 1 || tokens[i - 1].is(',');
        if depth == 0 && argument == n && starts_argument && !token.is(',') {
            let ends = tokens.get(i + 1).is_some_and(|t| t.is(',') || t.is(')'));
            return token.string().filter(|_| ends);
        }
        i += 1;
    }
    None
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

/// A token of Rhai source, as far as the lints need one.
#[derive(Debug, PartialEq)]
struct Token {
    kind: Kind,
    /// 1-based.
    line: usize,
    /// 1-based, in characters.
    column: usize,
}

#[derive(Debug, PartialEq)]
enum Kind {
    /// An identifier or keyword.
    Word(String),
    /// A string literal's text: a `"..."` string, or a backtick string
    /// without `${`.
    Str(String),
    /// A backtick string with `${`, a character literal, or a number.
    Other,
    /// One character of punctuation: `==` is two.
    Punct(char),
}

impl Token {
    fn word(&self) -> Option<&str> {
        match &self.kind {
            Kind::Word(w) => Some(w),
            _ => None,
        }
    }

    fn string(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    fn is(&self, c: char) -> bool {
        self.kind == Kind::Punct(c)
    }
}

/// The tokens of Rhai source, without comments (which nest, in Rhai).
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let (mut line, mut column) = (1, 1);
    let mut i = 0;

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
        let (start_line, start_column) = (line, column);
        let kind = if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, &mut line, &mut column, 1);
            }
            continue;
        } else if c == '/' && next == Some('*') {
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
            continue;
        } else if c == '"' || c == '`' || c == '\'' {
            advance(&mut i, &mut line, &mut column, 1);
            let mut text = String::new();
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    advance(&mut i, &mut line, &mut column, 1);
                }
                if let Some(&ch) = chars.get(i) {
                    text.push(ch);
                }
                advance(&mut i, &mut line, &mut column, 1);
            }
            advance(&mut i, &mut line, &mut column, 1);
            match c {
                '"' => Kind::Str(text),
                '`' if !text.contains("${") => Kind::Str(text),
                _ => Kind::Other,
            }
        } else if c.is_alphabetic() || c == '_' {
            let mut word = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                word.push(chars[i]);
                advance(&mut i, &mut line, &mut column, 1);
            }
            Kind::Word(word)
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                advance(&mut i, &mut line, &mut column, 1);
            }
            Kind::Other
        } else {
            advance(&mut i, &mut line, &mut column, 1);
            if c.is_whitespace() {
                continue;
            }
            Kind::Punct(c)
        };
        tokens.push(Token {
            kind,
            line: start_line,
            column: start_column,
        });
    }
    tokens
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

    #[test]
    fn finds_the_literal_channels_of_gate_calls() {
        let source = r#"hold_send("email", "held");
hold_send(event.data.channel, "not a literal");
release_send("email", "a release"); // hold_send("sms", "in a comment")
x.hold_send("social", "a method call");
if true { hold_send(`paid`, `held by ${x}`); }
hold_send("email" + suffix, "not only a literal");
"#;
        let found = |function| -> Vec<_> {
            channel_calls(source, function)
                .into_iter()
                .map(|c| (c.channel, c.line, c.column))
                .collect()
        };
        assert_eq!(
            found("hold_send"),
            [("email".to_string(), 1, 1), ("paid".to_string(), 5, 11)]
        );
        assert_eq!(found("release_send"), [("email".to_string(), 3, 1)]);
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
        let found: Vec<_> = gate_conflicts(&rules, &sources)
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
if event.type == "task.handoff" || "task.viewed" != event.type { return; }
// event.type == "in.a.comment"
let note = "event.type == \"in.a.string\"";
x.event.type == "not.the.event";
switch event.type {
    "task.remind" => 1,
    "task.a" | "task.b" => #{ x: "not.a.case" },
    _ => 0,
};
emit("task.flagged", #{ reason: "late" });
emit(`task.templated.${x}`);
schedule("24h", "task.nudge");
schedule(`24h`, `task.backticked`, #{});
schedule("24h", "task." + kind);
expect(t(1, 2), "48h", "task.stalled");
expect("task.reviewed", "48h");
x.emit("not.a.call");
"#;
        assert_eq!(
            event_types_named(source),
            [
                "task.handoff",
                "task.viewed",
                "task.remind",
                "task.a",
                "task.b",
                "task.flagged",
                "task.nudge",
                "task.backticked",
                "task.stalled",
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
