//! Decision rules written in Rhai: compiled once when they are loaded, run for
//! every event with bounded resources and no I/O, and recording what they
//! decide as [`Decision`]s. The rules crate knows nothing of HTTP, SQL or
//! plugins; it gets an event, the entity's state and a clock, and returns
//! decisions and failures, which is what makes replay trustworthy.
//!
//! The guide for rule authors, with an example for every variable and
//! function, is `docs/rules.md`; this header is the summary.
//!
//! # What a rule sees
//!
//! Every rule is a Rhai script run top to bottom once per event. In scope
//! (all three are constants: a rule changes state only through `set_field`):
//!
//! - `event`: a map with `id`, `source`, `type`, `subject` (string or `()`),
//!   `time` (RFC 3339 string or `()`) and `data` (the event's JSON data as Rhai
//!   values: objects are maps, `null` is `()`).
//! - `entity`: the state of the entity the event's subject names, as a map
//!   with `kind`, `id`, `stage`, `owner`, `fields`, `channels` (per channel:
//!   `stage`, `owner`, `fields`, `updated_at`), `created_at`, `updated_at`,
//!   `stage_since`, `events`, `last_event_type`; `()` when the event names no
//!   entity. The daemon applies the event to the state before rules run.
//! - `now`: the daemon clock as an RFC 3339 string (`2026-11-23T10:00:00Z`),
//!   the same for every rule of one event.
//!
//! Reading a map property that does not exist is an error (`event.dta` is a
//! typo, not a silent `()`), and `??` does not catch it: read optional members
//! with `map.get("name")` (`()` when absent), `map.get("name") ?? default`, or
//! test `"name" in map`. A variable that is not defined is a compile error.
//! `event`, `entity` and `now` are constants: assigning to them or calling a
//! mutating method on them fails the rule.
//!
//! # What a rule can do
//!
//! - `escalate(to, reason)` and `escalate(to, reason, level)`: raise the
//!   entity to an owner role or a person; `level` defaults to 1.
//! - `notify(to, message)`: tell someone something.
//! - `set_field(field, value)`: change `stage`, `owner` or a field of the
//!   entity; `value` is any Rhai value that JSON can hold, `()` removes it.
//!   Only when the event names an entity.
//! - `seconds_between(from, to)`: seconds from one RFC 3339 time to another,
//!   e.g. `seconds_between(entity.stage_since, now)`.
//! - `print(..)` and `debug(..)`: lines returned with the evaluation as
//!   [`RuleNote`]s (the first 32 per rule), never written to stdout.
//!
//! Each decision is recorded with the rule's name and the hash of its source.
//!
//! # How rules affect each other
//!
//! Rules run in the order given to [`RuleSet::compile`]. A rule is all or
//! nothing: if it fails at run time (too many operations, a type error, an
//! unknown function, `throw`), the decisions it made before failing are
//! discarded, a [`RuleFailure`] with the file, line and column is returned,
//! and the next rule runs as usual. When a rule succeeds, its `set_field`
//! decisions are applied to the entity state right away, so the `entity` map
//! the next rules see already has them (the rule that made them keeps seeing
//! the state it started with).
//!
//! # Limits
//!
//! [`RuleLimits`] bounds operations per rule run, call depth, expression
//! depth, string, array and map sizes and decisions per rule run. `eval` is
//! disabled, modules cannot be imported, and there is no clock, file, network
//! or random source: the same event, state and `now` always give the same
//! decisions.

mod convert;
mod engine;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use converge_model::{Decision, DecisionKind, EntityState, Event};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Position, Scope};
use sha2::{Digest, Sha256};

use crate::convert::{entity_to_dynamic, event_to_dynamic, rfc3339};
use crate::engine::{RunGuard, RunState};

/// One rule file as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// The name decisions carry; usually the file stem.
    pub name: String,
    /// Where the source came from, for error messages.
    pub path: PathBuf,
    pub source: String,
}

/// Resource bounds for every rule run. A rule that exceeds one fails; the
/// other rules still run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLimits {
    /// Rhai operations per rule run (about one per expression node, variable
    /// read, call or loop iteration). A typical rule needs about a hundred.
    pub max_operations: u64,
    /// Depth of nested function calls (recursion).
    pub max_call_levels: usize,
    /// Nesting depth of expressions at top level, checked when compiling.
    pub max_expr_depth: usize,
    /// Nesting depth of expressions inside functions, checked when compiling.
    pub max_function_expr_depth: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Items in one array.
    pub max_array_size: usize,
    /// Members of one map.
    pub max_map_size: usize,
    /// Decisions one rule may make for one event: a guard against a loop that
    /// escalates thousands of times within its operation budget.
    pub max_decisions_per_rule: usize,
}

impl Default for RuleLimits {
    fn default() -> RuleLimits {
        RuleLimits {
            max_operations: 100_000,
            max_call_levels: 16,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 64 * 1024,
            max_array_size: 4096,
            max_map_size: 4096,
            max_decisions_per_rule: 100,
        }
    }
}

/// A rule that does not compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct CompileError {
    pub rule: String,
    pub path: PathBuf,
    /// 1-based; 0 when Rhai gives no position.
    pub line: usize,
    /// 1-based; 0 when Rhai gives no position.
    pub column: usize,
    pub message: String,
}

/// One compiled rule.
#[derive(Clone)]
pub struct Rule {
    pub name: String,
    pub path: PathBuf,
    /// First 16 hex characters of the SHA-256 of the source: the rule version
    /// every decision names.
    pub hash: String,
    ast: Arc<AST>,
}

/// Every rule, compiled once, and the engine that runs them. Shared between
/// threads behind an `Arc`; `evaluate` takes `&self`.
#[derive(Clone)]
pub struct RuleSet {
    /// The engine is immutable once built, so one instance serves every
    /// thread; the rules' ASTs refer to its functions.
    engine: Arc<Engine>,
    /// In the order they run.
    rules: Vec<Rule>,
    limits: RuleLimits,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What the rules concluded for one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// In rule order, and within a rule in the order it made them. Failed
    /// rules contribute none.
    pub decisions: Vec<Decision>,
    pub failures: Vec<RuleFailure>,
    /// `print` and `debug` output, from successful and failed rules alike.
    pub notes: Vec<RuleNote>,
}

/// A rule that failed at run time for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    pub rule: String,
    pub rule_hash: String,
    /// `path:line:column: message`, e.g. `rules/x.rhai:3:9: Too many operations`
    /// (`path: message` when Rhai gives no position).
    pub message: String,
}

/// A line a rule printed with `print` or `debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleNote {
    pub rule: String,
    pub message: String,
}

impl RuleSet {
    /// Compiles every rule; returns all compile errors (not just the first),
    /// each with file:line:column. Rhai stops at the first error in a file,
    /// so there is at most one error per rule.
    pub fn compile(
        sources: Vec<RuleSource>,
        limits: &RuleLimits,
    ) -> Result<RuleSet, Vec<CompileError>> {
        let engine = engine::build(limits);
        let scope = declared_inputs();
        let mut rules = Vec::with_capacity(sources.len());
        let mut errors = Vec::new();
        for RuleSource { name, path, source } in sources {
            match engine.compile_with_scope(&scope, &source) {
                Ok(ast) => rules.push(Rule {
                    hash: source_hash(&source),
                    name,
                    path,
                    ast: Arc::new(ast),
                }),
                Err(err) => {
                    let (line, column) = line_column(err.position());
                    errors.push(CompileError {
                        rule: name,
                        path,
                        line,
                        column,
                        message: err.err_type().to_string(),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(RuleSet {
                engine: Arc::new(engine),
                rules,
                limits: limits.clone(),
            })
        } else {
            Err(errors)
        }
    }

    /// The rules, in the order they run.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Runs every rule, in the order given to `compile`, for one event.
    ///
    /// `entity` is the state of the entity the event names, with the event
    /// already applied; it is updated in place by the `set_field` decisions of
    /// rules that succeed, so callers must not apply those decisions again.
    pub fn evaluate(
        &self,
        event: &Event,
        mut entity: Option<&mut EntityState>,
        now: DateTime<Utc>,
    ) -> Evaluation {
        let event_value = rule_input(event_to_dynamic(event));
        let now_value = Dynamic::from(rfc3339(now));
        let mut entity_value = rule_input(entity_to_dynamic(entity.as_deref()));
        let mut evaluation = Evaluation::default();
        let mut scope = Scope::new();

        for rule in &self.rules {
            scope.clear();
            scope.push_constant_dynamic("event", event_value.clone());
            scope.push_constant_dynamic("entity", entity_value.clone());
            scope.push_constant_dynamic("now", now_value.clone());

            let guard = RunGuard::start(RunState {
                has_entity: entity.is_some(),
                max_decisions: self.limits.max_decisions_per_rule,
                ..RunState::default()
            });
            let result = self.engine.run_ast_with_scope(&mut scope, &rule.ast);
            let run = guard.finish();

            evaluation
                .notes
                .extend(run.notes.into_iter().map(|message| RuleNote {
                    rule: rule.name.clone(),
                    message,
                }));
            if run.notes_dropped > 0 {
                evaluation.notes.push(RuleNote {
                    rule: rule.name.clone(),
                    message: format!("({} more lines not kept)", run.notes_dropped),
                });
            }

            if let Err(err) = result {
                evaluation.failures.push(RuleFailure {
                    rule: rule.name.clone(),
                    rule_hash: rule.hash.clone(),
                    message: failure_message(&rule.path, *err),
                });
                continue;
            }

            let mut changed = false;
            for kind in run.decisions {
                if let (DecisionKind::SetField { field, value }, Some(state)) =
                    (&kind, entity.as_deref_mut())
                {
                    changed |= state.set(field, value.clone(), now);
                }
                evaluation.decisions.push(Decision {
                    rule: rule.name.clone(),
                    rule_hash: rule.hash.clone(),
                    kind,
                });
            }
            if changed {
                entity_value = rule_input(entity_to_dynamic(entity.as_deref()));
            }
        }
        evaluation
    }
}

/// Built once per event and handed to every rule. Sharing makes the per-rule
/// copy a reference count instead of a deep copy of the maps (it halved the
/// cost per event in `examples/rule_cost.rs`). A shared value is not protected
/// by the scope's constant flag alone, so the value itself is made read-only
/// as well: rules get "Cannot modify constant" instead of changing what the
/// next rule sees (test `inputs_are_read_only` tries the ways in).
fn rule_input(value: Dynamic) -> Dynamic {
    value.into_read_only().into_shared()
}

/// Declares the rule inputs for strict-variable checking. They are pushed as
/// variables, not constants: the optimizer would fold a constant's
/// compile-time placeholder value into the AST (research §3.1).
fn declared_inputs() -> Scope<'static> {
    let mut scope = Scope::new();
    scope.push("event", Dynamic::UNIT);
    scope.push("entity", Dynamic::UNIT);
    scope.push("now", Dynamic::UNIT);
    scope
}

fn source_hash(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    hex::encode(&digest[..8])
}

fn line_column(pos: Position) -> (usize, usize) {
    (pos.line().unwrap_or(0), pos.position().unwrap_or(0))
}

fn failure_message(path: &Path, mut err: EvalAltResult) -> String {
    let pos = err.take_position();
    // Errors inside script functions span several lines ("... in call to
    // function 'f'"); one line reads better in logs.
    let message = err.to_string().replace('\n', "; ");
    match line_column(pos) {
        (0, _) => format!("{}: {message}", path.display()),
        (line, 0) => format!("{}:{line}: {message}", path.display()),
        (line, column) => format!("{}:{line}:{column}: {message}", path.display()),
    }
}
