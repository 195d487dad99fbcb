//! The one Rhai engine every rule runs on: its limits, the language features
//! rules get, and the functions that record decisions.
//!
//! Registered functions are shared by every rule and every thread, but the
//! decisions they record belong to one rule run. They reach that run through a
//! thread-local slot ([`RunState`]): `RuleSet::evaluate` fills the slot just
//! before a rule runs and empties it right after, on the same thread. Rhai
//! calls native functions synchronously on the thread that runs the script and
//! a rule cannot start another evaluation, so the slot always holds exactly the
//! run that is calling, even when several threads evaluate at once.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use converge_model::{CatchUp, DecisionKind, StageRoles};
use rhai::packages::{
    BasicArrayPackage, BasicBlobPackage, BasicMapPackage, BasicMathPackage, BitFieldPackage,
    CorePackage, LogicPackage, MoreStringPackage, Package,
};
use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FLOAT, INT, ImmutableString, Map, NativeCallContext,
    OptimizationLevel, Position, def_package,
};

use crate::RuleLimits;
use crate::convert::{dynamic_to_json, positive_u32};
use crate::measures::{self, parse_time, positive_duration_ms};

/// Print/debug lines kept per rule run; the rest are counted, not stored, so a
/// printing loop cannot grow the evaluation without bound.
pub(crate) const MAX_NOTES_PER_RULE: usize = 32;

/// Condition terms one `because` may give: a trace is for people, and a
/// decision's stored body should stay small.
pub(crate) const MAX_TERMS: usize = 32;

/// The condition terms of `because`, shared by every decision they apply to.
pub(crate) type Terms = Arc<BTreeMap<String, serde_json::Value>>;

/// A decision as a rule run records it, with where it was made.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub kind: DecisionKind,
    /// Of the decision function's call in the rule's source (1-based; 0 when
    /// Rhai gives none).
    pub line: u32,
    pub column: u32,
    /// The terms of the last `because` before the call, if any.
    pub terms: Option<Terms>,
}

/// What one rule run has recorded so far.
#[derive(Debug, Default)]
pub(crate) struct RunState {
    /// Whether the event names an entity: every decision about the entity
    /// (all but `escalate` and `notify`) needs one.
    pub has_entity: bool,
    /// The run's clock, for `hours_since`.
    pub now: DateTime<Utc>,
    /// The rule's catch-up policy, carried by its `schedule` and `expect`.
    pub catch_up: CatchUp,
    pub max_decisions: usize,
    pub decisions: Vec<Recorded>,
    /// What the last `because` gave: attached to every later decision of
    /// the run, until the next `because`.
    pub terms: Option<Terms>,
    pub notes: Vec<String>,
    pub notes_dropped: usize,
    /// Where `entities(..)` reads from, when the caller has entity states.
    pub world: WorldSlot,
    /// Operations the run's queries have spent (`query::OPERATIONS_PER_ENTITY` each).
    pub query_operations: u64,
    /// The team's stage names, for `stage_role` (`None`: the default names).
    pub stages: Option<Arc<StageRoles>>,
}

/// The run's [`crate::World`], if any (a slot so `RunState` stays `Debug`).
#[derive(Clone, Default)]
pub(crate) struct WorldSlot(pub Option<crate::query::SharedWorld>);

impl std::fmt::Debug for WorldSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "World"
        } else {
            "no world"
        })
    }
}

impl WorldSlot {
    pub fn clone_world(&self) -> Option<crate::query::SharedWorld> {
        self.0.clone()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<RunState>> = const { RefCell::new(None) };
}

/// Holds the thread-local slot for one rule run. Dropping it (also when the
/// run panics) empties the slot, so a later run never sees stale decisions.
pub(crate) struct RunGuard(());

impl RunGuard {
    pub fn start(state: RunState) -> RunGuard {
        CURRENT.with(|slot| {
            let previous = slot.borrow_mut().replace(state);
            debug_assert!(previous.is_none(), "rule runs do not nest");
        });
        RunGuard(())
    }

    pub fn finish(self) -> RunState {
        CURRENT
            .with(|slot| slot.borrow_mut().take())
            .unwrap_or_default()
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        CURRENT.with(|slot| slot.borrow_mut().take());
    }
}

pub(crate) fn with_run<T>(
    f: impl FnOnce(&mut RunState) -> Result<T, String>,
) -> Result<T, Box<EvalAltResult>> {
    CURRENT.with(|slot| match slot.borrow_mut().as_mut() {
        Some(state) => f(state).map_err(|message| message.into()),
        None => Err("decision functions can only be called while a rule runs".into()),
    })
}

fn record(at: Position, kind: DecisionKind) -> Result<(), Box<EvalAltResult>> {
    with_run(|state| {
        if state.decisions.len() >= state.max_decisions {
            return Err(format!(
                "Too many decisions: a rule may make at most {} per event",
                state.max_decisions
            ));
        }
        let number = |n: Option<usize>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        state.decisions.push(Recorded {
            kind,
            line: number(at.line()),
            column: number(at.position()),
            terms: state.terms.clone(),
        });
        Ok(())
    })
}

/// `because(#{ approved: true, consistency: 0.72 })`: the condition terms
/// the rule's next decisions rest on. Replaces the terms of an earlier
/// `because`; `because(#{})` clears them.
fn because(terms: Map) -> Result<(), Box<EvalAltResult>> {
    if terms.len() > MAX_TERMS {
        return Err(format!("because: at most {MAX_TERMS} terms, got {}", terms.len()).into());
    }
    let terms = terms
        .into_iter()
        .map(|(name, value)| {
            dynamic_to_json(&value)
                .map(|value| (name.to_string(), value))
                .map_err(|e| format!("because: `{name}`: {e}"))
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    with_run(|state| {
        state.terms = (!terms.is_empty()).then(|| Arc::new(terms));
        Ok(())
    })
}

fn note(text: String) {
    CURRENT.with(|slot| {
        if let Some(state) = slot.borrow_mut().as_mut() {
            if state.notes.len() < MAX_NOTES_PER_RULE {
                state.notes.push(text);
            } else {
                state.notes_dropped += 1;
            }
        }
    });
}

fn non_empty(function: &str, argument: &str, value: ImmutableString) -> Result<String, String> {
    if value.trim().is_empty() {
        Err(format!("{function}: `{argument}` must not be empty"))
    } else {
        Ok(value.into_owned())
    }
}

fn escalate(
    at: Position,
    to: ImmutableString,
    reason: ImmutableString,
    level: INT,
) -> Result<(), Box<EvalAltResult>> {
    let to = non_empty("escalate", "to", to)?;
    let level = positive_u32(level)
        .ok_or_else(|| format!("escalate: level must be 1 or more, got {level}"))?;
    record(
        at,
        DecisionKind::Escalate {
            to,
            reason: reason.into_owned(),
            level,
        },
    )
}

fn notify(
    at: Position,
    to: ImmutableString,
    message: ImmutableString,
) -> Result<(), Box<EvalAltResult>> {
    let to = non_empty("notify", "to", to)?;
    record(
        at,
        DecisionKind::Notify {
            to,
            message: message.into_owned(),
        },
    )
}

/// How a rule avoids failing where the event names no entity: the guard
/// docs/rules.md teaches, which reads through `()` without copying.
pub(crate) const GUARD_HINT: &str =
    "guard the rule first, as in `if entity?.kind != \"task\" { return; }`";

/// Fails the rule unless the event names an entity; `call` is how the
/// message shows the call, e.g. `set_stage("review")`.
fn require_entity(call: impl FnOnce() -> String) -> Result<(), Box<EvalAltResult>> {
    with_run(|state| {
        if state.has_entity {
            Ok(())
        } else {
            Err(format!(
                "{}: this event names no entity ({GUARD_HINT})",
                call()
            ))
        }
    })
}

fn set_field(
    at: Position,
    field: ImmutableString,
    value: Dynamic,
) -> Result<(), Box<EvalAltResult>> {
    let field = non_empty("set_field", "field", field)?;
    let value = dynamic_to_json(&value).map_err(|e| format!("set_field: {e}"))?;
    require_entity(|| format!("set_field(\"{field}\", ..)"))?;
    record(at, DecisionKind::SetField { field, value })
}

fn set_stage(at: Position, stage: ImmutableString) -> Result<(), Box<EvalAltResult>> {
    let stage = non_empty("set_stage", "stage", stage)?;
    require_entity(|| format!("set_stage(\"{stage}\")"))?;
    record(at, DecisionKind::SetStage { stage })
}

fn assign_owner(at: Position, owner: ImmutableString) -> Result<(), Box<EvalAltResult>> {
    let owner = non_empty("assign_owner", "person", owner)?;
    require_entity(|| format!("assign_owner(\"{owner}\")"))?;
    record(at, DecisionKind::AssignOwner { owner })
}

/// The four channel decisions share their arguments and checks.
fn channel_decision(
    at: Position,
    function: &'static str,
    channel: ImmutableString,
    reason: ImmutableString,
    kind: fn(String, String) -> DecisionKind,
) -> Result<(), Box<EvalAltResult>> {
    let channel = non_empty(function, "channel", channel)?;
    require_entity(|| format!("{function}(\"{channel}\", ..)"))?;
    record(at, kind(channel, reason.into_owned()))
}

/// An event type a rule asks converge to journal: not empty, no whitespace.
fn checked_event_type(
    function: &str,
    argument: &str,
    value: ImmutableString,
) -> Result<String, String> {
    let value = non_empty(function, argument, value)?;
    if value.chars().any(char::is_whitespace) {
        return Err(format!(
            "{function}: `{argument}` must be an event type without spaces, got \"{value}\""
        ));
    }
    Ok(value)
}

/// The data of an emitted or scheduled event: a map, as JSON.
fn event_data(function: &str, data: Map) -> Result<serde_json::Value, String> {
    dynamic_to_json(&Dynamic::from_map(data)).map_err(|e| format!("{function}: `data`: {e}"))
}

fn emit(at: Position, ty: ImmutableString, data: Map) -> Result<(), Box<EvalAltResult>> {
    let event_type = checked_event_type("emit", "event_type", ty)?;
    let data = event_data("emit", data)?;
    require_entity(|| format!("emit(\"{event_type}\")"))?;
    record(at, DecisionKind::Emit { event_type, data })
}

fn schedule(
    at: Position,
    after: Dynamic,
    ty: ImmutableString,
    data: Map,
) -> Result<(), Box<EvalAltResult>> {
    let after_ms = positive_duration_ms("schedule: `after`", &after)?;
    let event_type = checked_event_type("schedule", "event_type", ty)?;
    let data = event_data("schedule", data)?;
    require_entity(|| format!("schedule({after}, \"{event_type}\")"))?;
    let catch_up = with_run(|state| Ok(state.catch_up))?;
    record(
        at,
        DecisionKind::Schedule {
            after_ms,
            event_type,
            data,
            catch_up,
        },
    )
}

fn expect(
    at: Position,
    ty: ImmutableString,
    within: Dynamic,
    otherwise: ImmutableString,
) -> Result<(), Box<EvalAltResult>> {
    let event_type = checked_event_type("expect", "event_type", ty)?;
    let within_ms = positive_duration_ms("expect: `within`", &within)?;
    let otherwise = checked_event_type("expect", "otherwise", otherwise)?;
    require_entity(|| format!("expect(\"{event_type}\", ..)"))?;
    let catch_up = with_run(|state| Ok(state.catch_up))?;
    record(
        at,
        DecisionKind::Expect {
            event_type,
            within_ms,
            otherwise,
            catch_up,
        },
    )
}

/// Ends the entity's pending expects of `event_type` (as that event's
/// arrival would), before any timer this event creates.
fn cancel_expects(at: Position, ty: ImmutableString) -> Result<(), Box<EvalAltResult>> {
    let event_type = checked_event_type("cancel_expects", "event_type", ty)?;
    require_entity(|| format!("cancel_expects(\"{event_type}\")"))?;
    record(at, DecisionKind::CancelExpects { event_type })
}

fn time_arg(function: &str, what: &str, text: &str) -> Result<DateTime<Utc>, String> {
    parse_time(&format!("{function}: {what}"), text)
}

/// Time arithmetic without a clock: rules get `now` as text and compare it
/// with the entity's timestamps.
fn seconds_between(from: ImmutableString, to: ImmutableString) -> Result<INT, Box<EvalAltResult>> {
    let from = time_arg("seconds_between", "from", &from)?;
    let to = time_arg("seconds_between", "to", &to)?;
    Ok((to - from).num_seconds())
}

/// `stage_role(stage)`: the role the team's stage names give a stage
/// (`"review"`, `"launch"`, ...), as the reports read it; `()` for a stage
/// no role names, and for a `()` stage.
fn stage_role(stage: Dynamic) -> Result<Dynamic, Box<EvalAltResult>> {
    static DEFAULT: std::sync::LazyLock<StageRoles> = std::sync::LazyLock::new(StageRoles::default);
    if stage.is_unit() {
        return Ok(Dynamic::UNIT);
    }
    let name = stage.clone().into_immutable_string().map_err(|_| {
        format!(
            "stage_role: `stage` must be a string or (), got a value of type `{}`",
            stage.type_name()
        )
    })?;
    with_run(|state| {
        let roles = state.stages.as_deref().unwrap_or(&DEFAULT);
        Ok(roles
            .role(Some(&name))
            .map_or(Dynamic::UNIT, |role| Dynamic::from(role.name())))
    })
}

/// Hours from `time` to the run's `now`, with the fraction (90 minutes is 1.5).
fn hours_since(time: Dynamic) -> Result<FLOAT, Box<EvalAltResult>> {
    let Ok(text) = time.clone().into_string() else {
        return Err(format!(
            "hours_since: `time` must be an RFC 3339 string, got {} (a `()` time, e.g. `entity.stage_since`, has to be checked first)",
            if time.is_unit() { "()".to_string() } else { format!("a value of type `{}`", time.type_name()) }
        )
        .into());
    };
    let time = time_arg("hours_since", "time", &text)?;
    let now = with_run(|state| Ok(state.now))?;
    Ok((now - time).num_seconds() as FLOAT / 3600.0)
}

fn duration(value: Dynamic) -> Result<INT, Box<EvalAltResult>> {
    let duration = measures::parse_duration("duration", &value)?;
    Ok(INT::try_from(duration.as_secs()).map_err(|_| format!("duration: {value} is too long"))?)
}

/// The items as text with `separator` between them; items that are not
/// strings are written as `to_string` writes them. Fails as soon as the text
/// passes the rules' string limit: Rhai checks a function's result only
/// after it is built, and thousands of long items would build a large string
/// first.
fn joined(
    ctx: &NativeCallContext,
    items: &Array,
    separator: &str,
) -> Result<ImmutableString, Box<EvalAltResult>> {
    let limit = ctx.engine().max_string_size();
    let mut text = String::new();
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            text.push_str(separator);
        }
        // A string is written as it is (as `Display` writes it, without
        // the formatter); writing to a String cannot fail.
        match item.read_lock::<ImmutableString>() {
            Some(string) => text.push_str(&string),
            None => {
                let _ = write!(text, "{item}");
            }
        }
        if limit > 0 && text.len() > limit {
            return Err(EvalAltResult::ErrorDataTooLarge(
                "Length of string".to_string(),
                ctx.call_position(),
            )
            .into());
        }
    }
    Ok(text.into())
}

/// Text helpers Rhai's packages lack. `lines` exists because backtick
/// strings keep `\n` as two characters, and a message of several lines
/// reads best as one string per line.
fn registered_text(engine: &mut Engine) {
    engine.register_fn(
        "join",
        |ctx: NativeCallContext, items: &mut Array, separator: ImmutableString| {
            joined(&ctx, items, &separator)
        },
    );
    engine.register_fn("lines", |ctx: NativeCallContext, items: &mut Array| {
        joined(&ctx, items, "\n")
    });
}

/// `array.contains(value)`, and so `value in array`: Rhai's own, with the
/// usual comparisons made here. Rhai's calls `==` for each item through the
/// engine, which looks the operator up from scratch every time, finds no
/// function (`==` on strings is built in) and only then falls back to the
/// built-in one: about 3,000 instructions an item, the dearest call in the
/// gate race's rule (`CHANNELS.contains(channel)`). Two strings, integers,
/// booleans, characters or units compare as that built-in `==` compares
/// them; any other pair goes to `==` as in Rhai's, with its answers.
/// Registered on the engine, it comes before the packages' `contains`.
fn array_contains(
    ctx: NativeCallContext,
    array: &mut Array,
    value: Dynamic,
) -> Result<bool, Box<EvalAltResult>> {
    for item in array.iter_mut() {
        let equal = match plainly_equal(item, &value) {
            Some(equal) => equal,
            None => ctx
                .call_native_fn_raw("==", true, &mut [item, &mut value.clone()])
                .or_else(|err| match *err {
                    EvalAltResult::ErrorFunctionNotFound(ref signature, ..)
                        if signature.starts_with("==") =>
                    {
                        // Rhai's own answer: no `==` for two values of one
                        // type is an error; values of two types differ.
                        if item.type_id() == value.type_id() {
                            Err(err)
                        } else {
                            Ok(Dynamic::FALSE)
                        }
                    }
                    _ => Err(err),
                })?
                .as_bool()
                .unwrap_or(false),
        };
        if equal {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `a == b`, for two values of one of the types whose `==` is plain
/// equality; `None` for any other pair.
fn plainly_equal(a: &Dynamic, b: &Dynamic) -> Option<bool> {
    if a.is_shared() || b.is_shared() {
        return None;
    }
    if let (Ok(a), Ok(b)) = (a.as_immutable_string_ref(), b.as_immutable_string_ref()) {
        return Some(*a == *b);
    }
    if let (Ok(a), Ok(b)) = (a.as_int(), b.as_int()) {
        return Some(a == b);
    }
    if let (Ok(a), Ok(b)) = (a.as_bool(), b.as_bool()) {
        return Some(a == b);
    }
    if let (Ok(a), Ok(b)) = (a.as_char(), b.as_char()) {
        return Some(a == b);
    }
    (a.is_unit() && b.is_unit()).then_some(true)
}

fn registered_measures(engine: &mut Engine) {
    engine.register_fn("duration", duration);
    engine.register_fn("hours_since", hours_since);
    engine.register_fn("missing", |entity: Dynamic, names: Array| {
        measures::missing(&entity, &names).map_err(Box::<EvalAltResult>::from)
    });
    // The map by reference: a rule's own map (`event.data` read into a
    // variable) is not copied for the call.
    engine.register_fn("missing_in", |map: &mut Map, names: Array| {
        measures::missing_in(Some(map), &names).map_err(Box::<EvalAltResult>::from)
    });
    engine.register_fn("missing_in", |_: (), names: Array| {
        measures::missing_in(None, &names).map_err(Box::<EvalAltResult>::from)
    });
    engine.register_fn(
        "missing_in",
        |value: Dynamic, _: Array| -> Result<Array, Box<EvalAltResult>> {
            Err(format!(
                "missing_in: the first argument must be a map or (), got a value of type `{}`",
                value.type_name()
            )
            .into())
        },
    );
    engine.register_fn("agreement", |entity: Dynamic, field: ImmutableString| {
        measures::agreement_with_outliers(&entity, &field)
            .map(|(share, _)| share)
            .map_err(Box::<EvalAltResult>::from)
    });
    engine.register_fn(
        "text_similarity",
        |a: ImmutableString, b: ImmutableString| measures::text_similarity(&a, &b),
    );
    engine.register_fn(
        "message_consistency",
        |entity: Dynamic, field: ImmutableString| {
            measures::message_consistency(&entity, &field).map_err(Box::<EvalAltResult>::from)
        },
    );
    engine.register_fn(
        "launch_spread_hours",
        |entity: Dynamic, field: ImmutableString| {
            measures::launch_spread_seconds(&entity, &field)
                .map(|s| s as FLOAT / 3600.0)
                .map_err(Box::<EvalAltResult>::from)
        },
    );
    engine.register_fn(
        "launch_within",
        |entity: Dynamic, field: ImmutableString, window: Dynamic| {
            let window = measures::parse_duration("launch_within: `window`", &window)?;
            let spread = measures::launch_spread_seconds(&entity, &field)?;
            Ok::<_, Box<EvalAltResult>>(
                spread <= i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
            )
        },
    );
    engine.register_fn(
        "audience_overlap",
        |entity: Dynamic, field: ImmutableString| {
            measures::audience_overlap(&entity, &field).map_err(Box::<EvalAltResult>::from)
        },
    );
    engine.register_fn("consistency", |entity: Dynamic, spec: Map| {
        measures::consistency(&entity, &spec).map_err(Box::<EvalAltResult>::from)
    });
}

def_package! {
    /// Every package rules get, in one module. Rhai looks a call up in each
    /// global module in turn (once more for each `Dynamic` variant of its
    /// arguments) the first time it is made: eight packages were eight
    /// lookups per miss. When every rule run started with an empty cache
    /// (each rule now keeps its own, see `Rule::run`), the lookup was the
    /// hottest function of the processor thread on the gate race, and one
    /// module 3.5% fewer instructions per event replaying the race's rule,
    /// 1.5% with the example rules. A call made through the engine from a
    /// native function (`NativeCallContext::call_native_fn_raw`) still
    /// starts from an empty cache: see `array_contains`. Combined as Rhai's own
    /// `StandardPackage` is, a later package's function wins over an
    /// earlier one's of the same signature, as when each was registered on
    /// its own.
    RulePackage(lib):
        CorePackage,
        BitFieldPackage,
        LogicPackage,
        BasicMathPackage,
        BasicArrayPackage,
        BasicBlobPackage,
        BasicMapPackage,
        MoreStringPackage
    {}
}

/// Builds the engine as research §5.3 describes, with two differences: the
/// time package is left out (its `timestamp()` reads the host clock, which
/// would make replay disagree with the live run), and there is no wall-clock
/// deadline, for the same reason; `max_operations` bounds CPU instead.
pub(crate) fn build(limits: &RuleLimits) -> Engine {
    let mut engine = Engine::new_raw();
    RulePackage::new().register_into_engine(&mut engine);

    // No string interner. Rhai interns every string a statement assigns and
    // every interpolation it builds; rules build new ones per event (keys,
    // owners, messages), so the cache stays full and each insertion scanned
    // all of it for one to evict: 1.6% of the daemon's CPU on the example
    // rules, for sharing that saves a small allocation.
    engine.set_max_strings_interned(0);
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_variables(256);
    engine.set_max_functions(64);
    engine.set_strict_variables(true);
    engine.set_fail_on_invalid_map_property(true);
    engine.set_optimization_level(OptimizationLevel::Simple);
    engine.disable_symbol("eval");

    engine.on_print(|text| note(text.to_string()));
    engine.on_debug(|text, _source, pos| note(with_position(text, pos)));

    // Decision functions take the call's context for its position: the
    // `at` of the decision's trace.
    engine.register_fn(
        "escalate",
        |ctx: NativeCallContext, to: ImmutableString, reason: ImmutableString| {
            escalate(ctx.call_position(), to, reason, 1)
        },
    );
    engine.register_fn(
        "escalate",
        |ctx: NativeCallContext, to: ImmutableString, reason: ImmutableString, level: INT| {
            escalate(ctx.call_position(), to, reason, level)
        },
    );
    engine.register_fn(
        "notify",
        |ctx: NativeCallContext, to: ImmutableString, message: ImmutableString| {
            notify(ctx.call_position(), to, message)
        },
    );
    engine.register_fn(
        "set_field",
        |ctx: NativeCallContext, field: ImmutableString, value: Dynamic| {
            set_field(ctx.call_position(), field, value)
        },
    );
    engine.register_fn(
        "set_stage",
        |ctx: NativeCallContext, stage: ImmutableString| set_stage(ctx.call_position(), stage),
    );
    engine.register_fn(
        "assign_owner",
        |ctx: NativeCallContext, owner: ImmutableString| assign_owner(ctx.call_position(), owner),
    );
    engine.register_fn(
        "pause_channel",
        |ctx: NativeCallContext, channel: ImmutableString, reason: ImmutableString| {
            channel_decision(
                ctx.call_position(),
                "pause_channel",
                channel,
                reason,
                |channel, reason| DecisionKind::PauseChannel { channel, reason },
            )
        },
    );
    engine.register_fn(
        "resume_channel",
        |ctx: NativeCallContext, channel: ImmutableString, reason: ImmutableString| {
            channel_decision(
                ctx.call_position(),
                "resume_channel",
                channel,
                reason,
                |channel, reason| DecisionKind::ResumeChannel { channel, reason },
            )
        },
    );
    engine.register_fn(
        "hold_send",
        |ctx: NativeCallContext, channel: ImmutableString, reason: ImmutableString| {
            channel_decision(
                ctx.call_position(),
                "hold_send",
                channel,
                reason,
                |channel, reason| DecisionKind::HoldSend { channel, reason },
            )
        },
    );
    engine.register_fn(
        "release_send",
        |ctx: NativeCallContext, channel: ImmutableString, reason: ImmutableString| {
            channel_decision(
                ctx.call_position(),
                "release_send",
                channel,
                reason,
                |channel, reason| DecisionKind::ReleaseSend { channel, reason },
            )
        },
    );
    engine.register_fn("emit", |ctx: NativeCallContext, ty: ImmutableString| {
        emit(ctx.call_position(), ty, Map::new())
    });
    engine.register_fn(
        "emit",
        |ctx: NativeCallContext, ty: ImmutableString, data: Map| {
            emit(ctx.call_position(), ty, data)
        },
    );
    engine.register_fn(
        "schedule",
        |ctx: NativeCallContext, after: Dynamic, ty: ImmutableString| {
            schedule(ctx.call_position(), after, ty, Map::new())
        },
    );
    engine.register_fn(
        "schedule",
        |ctx: NativeCallContext, after: Dynamic, ty: ImmutableString, data: Map| {
            schedule(ctx.call_position(), after, ty, data)
        },
    );
    engine.register_fn(
        "expect",
        |ctx: NativeCallContext,
         ty: ImmutableString,
         within: Dynamic,
         otherwise: ImmutableString| { expect(ctx.call_position(), ty, within, otherwise) },
    );
    engine.register_fn(
        "cancel_expects",
        |ctx: NativeCallContext, ty: ImmutableString| cancel_expects(ctx.call_position(), ty),
    );
    engine.register_fn("because", because);
    engine.register_fn("entities", crate::query::entities);
    engine.register_fn("report", crate::query::report);
    engine.register_fn("seconds_between", seconds_between);
    engine.register_fn("stage_role", stage_role);
    registered_text(&mut engine);
    registered_measures(&mut engine);
    engine.register_fn("contains", array_contains);
    engine
}

fn with_position(text: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(line), Some(column)) => format!("{line}:{column}: {text}"),
        (Some(line), None) => format!("{line}: {text}"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Values of every kind `==` treats differently, as Rhai source.
    const VALUES: &[&str] = &[
        "1", "2", "1.0", "\"a\"", "\"b\"", "\"1\"", "'a'", "true", "false", "()", "[1]", "[]",
        "#{a: 1}", "#{}",
    ];

    /// What `contains` and `in` answer, or the error they give, for the
    /// items and value given.
    fn answers(engine: &Engine, items: &[&str], value: &str) -> String {
        // `x` is captured by a closure, so it is a shared value.
        let script = format!(
            "let a = [{}]; let x = {value}; let f = || x; \
             [a.contains({value}), {value} in a, a.contains(x), x in a]",
            items.join(", ")
        );
        match engine.eval::<Array>(&script) {
            Ok(answers) => format!("{answers:?}"),
            Err(err) => format!("error: {err}"),
        }
    }

    proptest! {
        #[test]
        fn contains_answers_as_rhais_own(
            items in prop::collection::vec(prop::sample::select(VALUES), 0..6),
            value in prop::sample::select(VALUES),
        ) {
            let ours = build(&RuleLimits::default());
            let rhais = Engine::new();
            prop_assert_eq!(answers(&ours, &items, value), answers(&rhais, &items, value));
        }
    }

    #[test]
    fn contains_finds_what_it_should() {
        let engine = build(&RuleLimits::default());
        assert_eq!(
            answers(&engine, &["\"email\"", "\"paid\""], "\"paid\""),
            "[true, true, true, true]"
        );
        assert_eq!(
            answers(&engine, &["\"email\"", "\"paid\""], "\"Paid\""),
            "[false, false, false, false]"
        );
        assert_eq!(
            answers(&engine, &["1", "2"], "2.0"),
            "[true, true, true, true]"
        );
        assert_eq!(
            answers(&engine, &["\"a\""], "'a'"),
            answers(&Engine::new(), &["\"a\""], "'a'")
        );
    }
}
