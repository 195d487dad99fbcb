//! A decision's JSON written directly: the same text serde_json writes of
//! it (a property test holds the two together). Every routed decision's
//! action carries it, so it is written once for each: through serde (the
//! flattened kind, the site collected as a string) that took about 5,300
//! instructions a decision. The store's decision bodies write their members
//! with the same functions, less what the row's columns hold.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::json_text::{object, optional_string, serialized, string, time, value};
use crate::{CatchUp, Decision, DecisionInputs, DecisionKind, DecisionSite, DecisionTrace};

impl Decision {
    /// The decision as JSON: the same text as `serde_json::to_string(self)`.
    pub fn to_json(&self) -> String {
        // Whole patterns: a field added to a decision or its trace does not
        // compile here until it is written.
        let Decision {
            rule,
            rule_hash,
            kind,
            trace,
        } = self;
        let mut out = Vec::with_capacity(320);
        out.extend_from_slice(b"{\"rule\":");
        string(&mut out, rule);
        out.extend_from_slice(b",\"rule_hash\":");
        string(&mut out, rule_hash);
        out.extend_from_slice(b",\"kind\":\"");
        out.extend_from_slice(kind.name().as_bytes());
        out.extend_from_slice(b"\",");
        kind_members(&mut out, kind, TimerDefaults::Written);
        if let Some(DecisionTrace { at, inputs, terms }) = trace {
            out.extend_from_slice(b",\"trace\":");
            decision_trace(&mut out, Some(&at.file), at, inputs.as_ref(), terms);
        }
        out.push(b'}');
        String::from_utf8(out).expect("JSON written from strings is UTF-8")
    }
}

/// Whether [`kind_members`] writes the members of a timer's decision that
/// hold their defaults: a `schedule`'s empty `data` (and with it its
/// `catch_up` of `fire_late`), an `expect`'s `catch_up` of `fire_late`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerDefaults {
    Written,
    LeftOut,
}

/// Appends the kind's members as serde writes them, in their declared
/// order, without the `kind` tag and without a leading comma. Every kind
/// has at least one member, so something is always written.
pub fn kind_members(out: &mut Vec<u8>, kind: &DecisionKind, defaults: TimerDefaults) {
    let member = |out: &mut Vec<u8>, first: bool, name: &str| {
        if !first {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    };
    let text = |out: &mut Vec<u8>, first: bool, name: &str, text: &str| {
        member(out, first, name);
        string(out, text);
    };
    let catch_up = |out: &mut Vec<u8>, catch_up: &CatchUp| {
        member(out, false, "catch_up");
        serialized(out, catch_up);
    };
    let written = defaults == TimerDefaults::Written;
    match kind {
        DecisionKind::Escalate { to, reason, level } => {
            text(out, true, "to", to);
            text(out, false, "reason", reason);
            member(out, false, "level");
            serialized(out, level);
        }
        DecisionKind::Notify { to, message } => {
            text(out, true, "to", to);
            text(out, false, "message", message);
        }
        DecisionKind::SetField { field, value: to } => {
            text(out, true, "field", field);
            member(out, false, "value");
            value(out, to);
        }
        DecisionKind::SetStage { stage } => text(out, true, "stage", stage),
        DecisionKind::AssignOwner { owner } => text(out, true, "owner", owner),
        DecisionKind::PauseChannel { channel, reason }
        | DecisionKind::ResumeChannel { channel, reason }
        | DecisionKind::HoldSend { channel, reason }
        | DecisionKind::ReleaseSend { channel, reason } => {
            text(out, true, "channel", channel);
            text(out, false, "reason", reason);
        }
        DecisionKind::Emit { event_type, data } => {
            text(out, true, "event_type", event_type);
            member(out, false, "data");
            value(out, data);
        }
        DecisionKind::Schedule {
            after_ms,
            event_type,
            data,
            catch_up: when_late,
        } => {
            member(out, true, "after_ms");
            serialized(out, after_ms);
            text(out, false, "event_type", event_type);
            if written || !data.as_object().is_some_and(|o| o.is_empty()) {
                member(out, false, "data");
                value(out, data);
                catch_up(out, when_late);
            } else if *when_late != CatchUp::FireLate {
                catch_up(out, when_late);
            }
        }
        DecisionKind::Expect {
            event_type,
            within_ms,
            otherwise,
            catch_up: when_late,
        } => {
            text(out, true, "event_type", event_type);
            member(out, false, "within_ms");
            serialized(out, within_ms);
            text(out, false, "otherwise", otherwise);
            if written || *when_late != CatchUp::FireLate {
                catch_up(out, when_late);
            }
        }
        DecisionKind::CancelExpects { event_type } => text(out, true, "event_type", event_type),
    }
}

/// Appends a decision's trace as serde writes a [`DecisionTrace`], its
/// site in `file` (`None`: only `line:column`, the store's short form for a
/// decision made in its run's previous file) and with `inputs` when given
/// (the store keeps them with a run's first decision only).
pub fn decision_trace(
    out: &mut Vec<u8>,
    file: Option<&str>,
    at: &DecisionSite,
    inputs: Option<&DecisionInputs>,
    terms: &BTreeMap<String, Value>,
) {
    out.extend_from_slice(b"{\"at\":");
    site(out, file, at);
    if let Some(inputs) = inputs {
        out.extend_from_slice(b",\"inputs\":");
        decision_inputs(out, inputs);
    }
    if !terms.is_empty() {
        out.extend_from_slice(b",\"terms\":");
        object(out, terms);
    }
    out.push(b'}');
}

/// Appends where the decision was made: `"file:line:column"` as serde
/// writes a [`DecisionSite`], or `"line:column"` when `file` is `None`.
fn site(out: &mut Vec<u8>, file: Option<&str>, at: &DecisionSite) {
    match file {
        Some(file) if !crate::json_text::is_plain(file) => {
            serialized(out, &format!("{file}:{}:{}", at.line, at.column));
        }
        file => {
            out.push(b'"');
            if let Some(file) = file {
                out.extend_from_slice(file.as_bytes());
                out.push(b':');
            }
            serialized(out, &at.line);
            out.push(b':');
            serialized(out, &at.column);
            out.push(b'"');
        }
    }
}

/// Appends [`DecisionInputs`] as serde writes them.
fn decision_inputs(out: &mut Vec<u8>, inputs: &DecisionInputs) {
    let DecisionInputs {
        stage,
        owner,
        updated_at,
        events,
    } = inputs;
    out.extend_from_slice(b"{\"stage\":");
    optional_string(out, stage.as_deref());
    out.extend_from_slice(b",\"owner\":");
    optional_string(out, owner.as_deref());
    out.extend_from_slice(b",\"updated_at\":");
    time(out, updated_at);
    out.extend_from_slice(b",\"events\":");
    serialized(out, events);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::strategies::{decision_kind, decision_trace, text};
    use crate::{Decision, DecisionKind, DecisionSite, DecisionTrace};

    #[test]
    fn a_traced_notify_is_written_as_serde_writes_it() {
        let decision = Decision {
            rule: "gate".into(),
            rule_hash: "b54c3c0b1825aa80".into(),
            kind: DecisionKind::Notify {
                to: "gate.open".into(),
                message: "FALL25 \"quoted\"".into(),
            },
            trace: Some(DecisionTrace {
                at: DecisionSite {
                    file: "rules/gate.rhai".into(),
                    line: 52,
                    column: 5,
                },
                inputs: None,
                terms: [("approved".to_string(), serde_json::json!(3))].into(),
            }),
        };
        assert_eq!(
            decision.to_json(),
            r#"{"rule":"gate","rule_hash":"b54c3c0b1825aa80","kind":"notify","to":"gate.open","message":"FALL25 \"quoted\"","trace":{"at":"rules/gate.rhai:52:5","terms":{"approved":3}}}"#
        );
        assert_eq!(
            decision.to_json(),
            serde_json::to_string(&decision).unwrap()
        );
    }

    proptest! {
        #[test]
        fn decisions_are_written_as_serde_writes_them(
            rule in text(),
            rule_hash in text(),
            kind in decision_kind(),
            trace in decision_trace(),
        ) {
            let decision = Decision { rule, rule_hash, kind, trace };
            prop_assert_eq!(decision.to_json(), serde_json::to_string(&decision).unwrap());
        }
    }
}
