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

use chrono::{DateTime, Utc};
use converge_model::DecisionKind;
use rhai::packages::{
    BasicArrayPackage, BasicBlobPackage, BasicMapPackage, BasicMathPackage, BitFieldPackage,
    CorePackage, LogicPackage, MoreStringPackage, Package,
};
use rhai::{Dynamic, Engine, EvalAltResult, INT, ImmutableString, OptimizationLevel, Position};

use crate::RuleLimits;
use crate::convert::{dynamic_to_json, positive_u32};

/// Print/debug lines kept per rule run; the rest are counted, not stored, so a
/// printing loop cannot grow the evaluation without bound.
pub(crate) const MAX_NOTES_PER_RULE: usize = 32;

/// What one rule run has recorded so far.
#[derive(Debug, Default)]
pub(crate) struct RunState {
    /// Whether the event names an entity: `set_field` needs one.
    pub has_entity: bool,
    pub max_decisions: usize,
    pub decisions: Vec<DecisionKind>,
    pub notes: Vec<String>,
    pub notes_dropped: usize,
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

fn with_run<T>(
    f: impl FnOnce(&mut RunState) -> Result<T, String>,
) -> Result<T, Box<EvalAltResult>> {
    CURRENT.with(|slot| match slot.borrow_mut().as_mut() {
        Some(state) => f(state).map_err(|message| message.into()),
        None => Err("decision functions can only be called while a rule runs".into()),
    })
}

fn record(kind: DecisionKind) -> Result<(), Box<EvalAltResult>> {
    with_run(|state| {
        if state.decisions.len() >= state.max_decisions {
            return Err(format!(
                "Too many decisions: a rule may make at most {} per event",
                state.max_decisions
            ));
        }
        state.decisions.push(kind);
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
        Ok(value.to_string())
    }
}

fn escalate(
    to: ImmutableString,
    reason: ImmutableString,
    level: INT,
) -> Result<(), Box<EvalAltResult>> {
    let to = non_empty("escalate", "to", to)?;
    let level = positive_u32(level)
        .ok_or_else(|| format!("escalate: level must be 1 or more, got {level}"))?;
    record(DecisionKind::Escalate {
        to,
        reason: reason.to_string(),
        level,
    })
}

fn notify(to: ImmutableString, message: ImmutableString) -> Result<(), Box<EvalAltResult>> {
    let to = non_empty("notify", "to", to)?;
    record(DecisionKind::Notify {
        to,
        message: message.to_string(),
    })
}

fn set_field(field: ImmutableString, value: Dynamic) -> Result<(), Box<EvalAltResult>> {
    let field = non_empty("set_field", "field", field)?;
    let value = dynamic_to_json(&value).map_err(|e| format!("set_field: {e}"))?;
    with_run(|state| {
        if state.has_entity {
            Ok(())
        } else {
            Err(format!(
                "set_field(\"{field}\", ..): this event names no entity (check `entity != ()` first)"
            ))
        }
    })?;
    record(DecisionKind::SetField { field, value })
}

fn parse_time(what: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("seconds_between: {what} `{text}` is not an RFC 3339 time: {e}"))
}

/// Time arithmetic without a clock: rules get `now` as text and compare it
/// with the entity's timestamps.
fn seconds_between(from: ImmutableString, to: ImmutableString) -> Result<INT, Box<EvalAltResult>> {
    let from = parse_time("from", &from)?;
    let to = parse_time("to", &to)?;
    Ok((to - from).num_seconds())
}

/// Builds the engine as research §5.3 describes, with two differences: the
/// time package is left out (its `timestamp()` reads the host clock, which
/// would make replay disagree with the live run), and there is no wall-clock
/// deadline, for the same reason; `max_operations` bounds CPU instead.
pub(crate) fn build(limits: &RuleLimits) -> Engine {
    let mut engine = Engine::new_raw();
    CorePackage::new().register_into_engine(&mut engine);
    BitFieldPackage::new().register_into_engine(&mut engine);
    LogicPackage::new().register_into_engine(&mut engine);
    BasicMathPackage::new().register_into_engine(&mut engine);
    BasicArrayPackage::new().register_into_engine(&mut engine);
    BasicBlobPackage::new().register_into_engine(&mut engine);
    BasicMapPackage::new().register_into_engine(&mut engine);
    MoreStringPackage::new().register_into_engine(&mut engine);

    engine.set_max_strings_interned(1024);
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_variables(256);
    engine.set_max_functions(64);
    engine.set_max_modules(0);
    engine.set_strict_variables(true);
    engine.set_fail_on_invalid_map_property(true);
    engine.set_optimization_level(OptimizationLevel::Simple);
    engine.disable_symbol("eval");

    engine.on_print(|text| note(text.to_string()));
    engine.on_debug(|text, _source, pos| note(with_position(text, pos)));

    engine.register_fn("escalate", |to, reason| escalate(to, reason, 1));
    engine.register_fn("escalate", escalate);
    engine.register_fn("notify", notify);
    engine.register_fn("set_field", set_field);
    engine.register_fn("seconds_between", seconds_between);
    engine
}

fn with_position(text: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(line), Some(column)) => format!("{line}:{column}: {text}"),
        (Some(line), None) => format!("{line}: {text}"),
        _ => text.to_string(),
    }
}
