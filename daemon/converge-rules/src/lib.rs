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
//! Every rule is a Rhai script run top to bottom once per event it handles.
//! In scope (all three are constants: a rule changes state only through its
//! state-changing decisions):
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
//! - `set_stage(stage)`, `assign_owner(person)`.
//! - `pause_channel(channel, reason)`, `resume_channel(channel, reason)`:
//!   set the channel field `paused` (and `paused_reason`).
//! - `hold_send(channel, reason)`, `release_send(channel, reason)`.
//! - `emit(event_type[, data])`, `schedule(after, event_type[, data])`,
//!   `expect(event_type, within, otherwise)`: events now, later, or unless
//!   another arrives; `after`/`within` are `"48h"`-style durations or
//!   seconds; the timers carry the rule's `catch_up`.
//! - `because(#{ name: value, .. })`: the condition terms of the rule's
//!   later decisions (their trace), until the next `because`.
//! - `print(..)` and `debug(..)`: lines returned with the evaluation as
//!   [`RuleNote`]s (the first 32 per rule), never written to stdout.
//!
//! Every decision but `escalate` and `notify` needs the event to name an
//! entity. Text helpers: `items.join(separator)` and `lines(items)` (joined
//! with line breaks, which backtick strings cannot write). Helpers (pure;
//! module `measures`): `seconds_between(from, to)`,
//! `hours_since(time)`, `duration(text)`, `missing(entity, names)`,
//! `missing_in(map, names)`, and the
//! convergence measures `agreement`, `text_similarity` (Jaccard of word
//! sets), `message_consistency`, `launch_spread_hours`, `launch_within`,
//! `audience_overlap` and `consistency` (weighted mean of the parts, each
//! against the campaign's own value with `hub: true`). `stage_role(stage)`
//! reads the team's stage names (`StageRoles`, given to
//! [`RuleSet::evaluate_in`]).
//!
//! Each decision is recorded with the rule's name and the hash of its source,
//! and a [`DecisionTrace`]: the `file:line:column` of the call that made it,
//! the entity's `stage`, `owner`, `updated_at` and `events` as the rule saw
//! them, and the condition terms of the rule's last `because(#{ .. })` call
//! before it (`because` gives the terms of every later decision of the run,
//! until the next `because`).
//!
//! # How rules affect each other
//!
//! A rule file may start with a `//! key: value` header (module `metadata`):
//! `name`, `description`, `events` (the event types it runs for, `*` globs),
//! `order` (default [`DEFAULT_ORDER`]) and `catch_up`. Rules run by `order`,
//! then in the order given to [`RuleSet::compile`], and only for the events
//! they handle. A rule is all or
//! nothing: if it fails at run time (too many operations, a type error, an
//! unknown function, `throw`), the decisions it made before failing are
//! discarded, a [`RuleFailure`] with the file, line and column is returned,
//! and the next rule runs as usual. When a rule succeeds, its state-changing
//! decisions (`set_field`, `set_stage`, `assign_owner`, `pause_channel`,
//! `resume_channel`) are applied to the entity state right away, so the `entity` map
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
//!
//! # Reading a rule without running it
//!
//! [`Script`] compiles a rule's script as [`RuleSet::compile`] does and keeps
//! what lints need from its AST: the calls it makes, with the arguments known
//! when it compiles, and the case labels of its `switch`es.

mod convert;
mod engine;
mod measures;
mod metadata;
mod query;
pub mod script;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use converge_model::{
    CatchUp, Decision, DecisionInputs, DecisionKind, DecisionSite, DecisionTrace, EntityState,
    Event, RuleFailure, RuleNote, StageRoles,
};
use rhai::{AST, Caches, Dynamic, Engine, EvalAltResult, Position, Scope};
use sha2::{Digest, Sha256};

use crate::convert::{entity_to_dynamic, event_to_dynamic, rfc3339};
use crate::engine::{RunGuard, RunState};

pub use crate::metadata::{DEFAULT_ORDER, matches as event_type_matches};
pub use crate::query::{
    DEFAULT_LIMIT as QUERY_DEFAULT_LIMIT, EntityQuery, OPERATIONS_PER_ENTITY, World,
};
pub use crate::script::Script;

/// One rule file as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// The name decisions carry; usually the file stem.
    pub name: String,
    /// Where the source came from, for error messages.
    pub path: PathBuf,
    pub source: String,
}

impl RuleSource {
    /// Reads a rule file, named by its file stem (a `name` in the rule's
    /// header takes over when it compiles): how the daemon, replay and the
    /// rule tools all read rules.
    pub fn read(path: &Path) -> std::io::Result<RuleSource> {
        let source = std::fs::read_to_string(path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(RuleSource {
            name,
            path: path.to_path_buf(),
            source,
        })
    }
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
    /// The header's `name`, else [`RuleSource::name`]: what decisions carry.
    pub name: String,
    pub path: PathBuf,
    /// First 16 hex characters of the SHA-256 of the source: the rule version
    /// every decision names.
    pub hash: String,
    /// The header's `description`, for `converge rules check` and people.
    pub description: Option<String>,
    /// The header's `events`: the event types (with `*` globs) the rule runs
    /// for; `None` runs it for every event.
    pub events: Option<Vec<String>>,
    /// The header's `order` ([`DEFAULT_ORDER`] without one): rules run by
    /// ascending order, then in the order given to [`RuleSet::compile`].
    pub order: i64,
    /// The header's `catch_up`, carried by the rule's `schedule` and `expect`
    /// decisions.
    pub catch_up: CatchUp,
    /// Whether the rule calls `entities(..)` or `report(..)`: the daemon
    /// settles the results of earlier events before an event such a rule
    /// handles.
    pub queries: bool,
    /// Whether the rule calls `report(..)`: a simulation keeps the metric
    /// samples for it.
    pub reads_reports: bool,
    /// Whether the rule calls `hold_send(..)` or `release_send(..)`: it
    /// gates sends, so when it fails on a send request the engine holds the
    /// send rather than let it go unjudged.
    pub gates_sends: bool,
    /// `path` as text, as every decision's trace names it: made once here
    /// rather than for each run that decides.
    file: String,
    ast: Arc<AST>,
    /// Which function each of the rule's calls resolved to, kept from one
    /// run to the next (see [`Rule::run`]).
    calls: Arc<Mutex<Caches>>,
}

impl Rule {
    /// Runs the rule's script, as `Engine::run_ast_with_scope` does, but
    /// with the function resolutions of its earlier runs: Rhai resolves each
    /// call by searching the engine's packages, and remembers the answer
    /// only for the run (and only from a call's second time in it), so
    /// every event paid for every lookup again. What a call resolves to
    /// depends on the engine and the script alone, both fixed for the
    /// rule's life (rules cannot `import`: Rhai is built without modules).
    fn run(&self, engine: &Engine, scope: &mut Scope) -> Result<(), Box<EvalAltResult>> {
        let mut global = engine.new_global_runtime_state();
        global.lib.push(self.ast.shared_lib().clone());
        // Another thread running this rule now (replays, simulations) runs
        // it with a cache of its own.
        let mut own = None;
        let mut shared = self.calls.try_lock().ok();
        let caches = match shared.as_deref_mut() {
            Some(caches) => caches,
            None => own.insert(Caches::new()),
        };
        // Rhai's one entry point that takes the caches (under `internals`,
        // deprecated since 1.12). `run_ast_with_scope` also sets the AST's
        // source and embedded module resolver; a rule's AST has neither.
        debug_assert!(self.ast.source().is_none());
        #[allow(deprecated)]
        let result = engine.eval_statements_raw(&mut global, caches, scope, self.ast.statements());
        // A run cut short inside a script function leaves none of its
        // caches behind; the rule's own stays.
        caches.rewind_fn_resolution_caches(1);
        result.map(|_| ())
    }

    /// Whether the rule runs for events of this type (its `events` header).
    pub fn handles(&self, event_type: &str) -> bool {
        self.events.as_ref().is_none_or(|patterns| {
            patterns
                .iter()
                .any(|pattern| metadata::matches(pattern, event_type))
        })
    }
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
            .field("description", &self.description)
            .field("events", &self.events)
            .field("order", &self.order)
            .field("catch_up", &self.catch_up)
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

impl RuleSet {
    /// Compiles every rule; returns all compile errors (not just the first),
    /// each with file:line:column: every problem in a rule's header, or else
    /// the first Rhai error in its script (Rhai stops at the first), and two
    /// rules with the same name. The rules are then sorted by `order`, ties
    /// kept in the order given.
    pub fn compile(
        sources: Vec<RuleSource>,
        limits: &RuleLimits,
    ) -> Result<RuleSet, Vec<CompileError>> {
        let engine = engine::build(limits);
        let scope = declared_inputs();
        let mut rules: Vec<Rule> = Vec::with_capacity(sources.len());
        let mut errors = Vec::new();
        for RuleSource { name, path, source } in sources {
            let header = match metadata::parse(&source) {
                Ok(header) => header,
                Err(header_errors) => {
                    errors.extend(header_errors.into_iter().map(|e| CompileError {
                        rule: name.clone(),
                        path: path.clone(),
                        line: e.line,
                        column: e.column,
                        message: e.message,
                    }));
                    continue;
                }
            };
            let name = header.name.unwrap_or(name);
            match engine.compile_with_scope(&scope, &source) {
                Ok(ast) => {
                    if let Some(first) = rules.iter().find(|r| r.name == name) {
                        errors.push(CompileError {
                            message: format!(
                                "a rule named `{name}` already exists ({}); rule names must be unique",
                                first.path.display()
                            ),
                            rule: name,
                            path,
                            line: 1,
                            column: 1,
                        });
                        continue;
                    }
                    rules.push(Rule {
                        hash: source_hash(&source),
                        name,
                        file: path.display().to_string(),
                        path,
                        description: header.description,
                        events: header.events,
                        order: header.order,
                        catch_up: header.catch_up,
                        queries: script::calls(&ast, "entities") || script::calls(&ast, "report"),
                        reads_reports: script::calls(&ast, "report"),
                        gates_sends: script::calls(&ast, "hold_send")
                            || script::calls(&ast, "release_send"),
                        ast: Arc::new(ast),
                        calls: Arc::default(),
                    });
                }
                Err(err) => errors.push(script_error(name, path, &err)),
            }
        }
        if errors.is_empty() {
            // Stable: equal orders keep the order they were given in.
            rules.sort_by_key(|rule| rule.order);
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

    /// Whether any rule reads the reports (`report(..)`).
    pub fn reads_reports(&self) -> bool {
        self.rules.iter().any(|rule| rule.reads_reports)
    }

    /// Whether a rule that handles this event type reads other entities
    /// or the reports.
    pub fn queries_for(&self, event_type: &str) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.queries && rule.handles(event_type))
    }

    /// Runs every rule that handles the event's type ([`Rule::handles`]), in
    /// the order of [`RuleSet::rules`], for one event.
    ///
    /// `entity` is the state of the entity the event names, with the event
    /// already applied; it is updated in place by the state-changing
    /// decisions (`set_field`, `set_stage`, `assign_owner`, `pause_channel`,
    /// `resume_channel`) of rules that succeed, so callers must not apply
    /// those decisions again.
    pub fn evaluate(
        &self,
        event: &Event,
        entity: Option<&mut EntityState>,
        now: DateTime<Utc>,
    ) -> Evaluation {
        self.evaluate_at_gate(event, entity, now, None)
    }

    /// [`RuleSet::evaluate`], with the entity's convergence gate as rules
    /// read it in `gate`: `open` (whether any send is held) and `held`
    /// (each held send: `channel`, `event_id`, `since`, `rules`, `reasons`).
    /// `None` is a gate holding nothing, the common case, built once.
    pub fn evaluate_at_gate(
        &self,
        event: &Event,
        entity: Option<&mut EntityState>,
        now: DateTime<Utc>,
        gate: Option<&serde_json::Value>,
    ) -> Evaluation {
        self.evaluate_in(event, entity, now, gate, None, None)
    }

    /// [`RuleSet::evaluate_at_gate`], with the [`World`] that `entities(..)`
    /// reads (without one, a rule calling it fails) and the team's stage
    /// names that `stage_role(..)` reads (without them, the default names).
    pub fn evaluate_in(
        &self,
        event: &Event,
        mut entity: Option<&mut EntityState>,
        now: DateTime<Utc>,
        gate: Option<&serde_json::Value>,
        world: Option<Arc<dyn World>>,
        stages: Option<&Arc<StageRoles>>,
    ) -> Evaluation {
        static NOTHING_HELD: std::sync::LazyLock<Dynamic> = std::sync::LazyLock::new(|| {
            rule_input(crate::convert::json_to_dynamic(
                &serde_json::json!({"open": false, "held": []}),
            ))
        });
        let event_value = rule_input(event_to_dynamic(event));
        let gate_value = gate.map_or_else(
            || NOTHING_HELD.clone(),
            |gate| rule_input(crate::convert::json_to_dynamic(gate)),
        );
        let now_value = Dynamic::from(rfc3339(now));
        // Converted when a rule is about to read it: not at all when no rule
        // handles the event, and not after the last rule that changed it.
        let mut entity_value: Option<Dynamic> = None;
        let mut evaluation = Evaluation::default();
        let mut scope = Scope::new();

        for rule in self.rules.iter().filter(|rule| rule.handles(&event.ty)) {
            scope.clear();
            scope.push_constant_dynamic("event", event_value.clone());
            let entity_input = entity_value
                .get_or_insert_with(|| rule_input(entity_to_dynamic(entity.as_deref())));
            scope.push_constant_dynamic("entity", entity_input.clone());
            scope.push_constant_dynamic("now", now_value.clone());
            scope.push_constant_dynamic("gate", gate_value.clone());

            let guard = RunGuard::start(RunState {
                has_entity: entity.is_some(),
                now,
                catch_up: rule.catch_up,
                max_decisions: self.limits.max_decisions_per_rule,
                world: crate::engine::WorldSlot(world.clone()),
                stages: stages.cloned(),
                ..RunState::default()
            });
            let result = rule.run(&self.engine, &mut scope);
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

            // Read before this rule's own changes are applied: the state it saw.
            let inputs = entity.as_deref().map(|state| DecisionInputs {
                stage: state.stage.clone(),
                owner: state.owner.clone(),
                updated_at: state.updated_at,
                events: state.events,
            });
            let mut changed = false;
            for recorded in run.decisions {
                if let Some(state) = entity.as_deref_mut() {
                    changed |= apply(state, &recorded.kind, now);
                }
                evaluation.decisions.push(Decision {
                    rule: rule.name.clone(),
                    rule_hash: rule.hash.clone(),
                    kind: recorded.kind,
                    trace: Some(DecisionTrace {
                        at: DecisionSite {
                            file: rule.file.clone(),
                            line: recorded.line,
                            column: recorded.column,
                        },
                        inputs: inputs.clone(),
                        terms: recorded
                            .terms
                            .map(|terms| (*terms).clone())
                            .unwrap_or_default(),
                    }),
                });
            }
            if changed {
                entity_value = None;
            }
        }
        evaluation
    }
}

/// Applies a state-changing decision to the entity; the others change
/// nothing here. Returns whether the state changed. The engine uses it to
/// apply decisions recorded earlier (`converge report --rebuild`).
pub fn apply(state: &mut EntityState, kind: &DecisionKind, now: DateTime<Utc>) -> bool {
    use serde_json::Value;
    match kind {
        DecisionKind::SetField { field, value } => state.set(field, value.clone(), now),
        DecisionKind::SetStage { stage } => state.set("stage", Value::from(stage.as_str()), now),
        DecisionKind::AssignOwner { owner } => state.set("owner", Value::from(owner.as_str()), now),
        DecisionKind::PauseChannel { channel, reason } => {
            let paused = state.set_channel(channel, "paused", Value::Bool(true), now);
            let reason =
                state.set_channel(channel, "paused_reason", Value::from(reason.as_str()), now);
            paused | reason
        }
        // Resuming a channel the entity does not have creates none.
        DecisionKind::ResumeChannel { channel, .. } if state.channels.contains_key(channel) => {
            let paused = state.set_channel(channel, "paused", Value::Bool(false), now);
            let reason = state.set_channel(channel, "paused_reason", Value::Null, now);
            paused | reason
        }
        _ => false,
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
    scope.push("gate", Dynamic::UNIT);
    scope
}

fn source_hash(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    hex::encode(&digest[..8])
}

/// A Rhai error in a rule's script, where Rhai places it.
fn script_error(rule: String, path: PathBuf, err: &rhai::ParseError) -> CompileError {
    let (line, column) = line_column(err.position());
    CompileError {
        rule,
        path,
        line,
        column,
        message: err.err_type().to_string(),
    }
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
