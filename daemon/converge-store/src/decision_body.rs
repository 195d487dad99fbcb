//! How a decision is stored in its row's `body`: only what the row's
//! columns and its event's other decisions do not already say.
//!
//! - `rule` and `rule_hash` are left out: the row has them as columns.
//! - The trace's `inputs` (the entity as the rule saw it) are the same for
//!   every decision of one run of a rule, so they are stored with the first
//!   decision of each rule version (and shadow flag) on the event only; the
//!   others read them back from it, the event's decisions being read
//!   together and in order.
//!
//! On the example rules this took 13% off the database per handoff
//! (`converge-load months`, docs/deploy.md). The saving is paid for on the
//! rare read (an event's trail), never on the hot write. Bodies written
//! whole before this layout read the same.

use std::collections::BTreeMap;

use converge_model::{Decision, DecisionInputs, DecisionKind, DecisionSite, DecisionTrace};
use serde::Serialize;
use serde_json::Value;

/// One rule run on an event: the rule, its version (hash) and whether it
/// ran in shadow.
type Run<'a> = (&'a str, &'a str, bool);

#[derive(Serialize)]
struct Body<'a> {
    #[serde(flatten)]
    kind: &'a DecisionKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<TraceBody<'a>>,
}

#[derive(Serialize)]
struct TraceBody<'a> {
    at: &'a DecisionSite,
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<&'a DecisionInputs>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    terms: &'a BTreeMap<String, Value>,
}

/// Encodes the decisions of one event, in the order they are inserted.
#[derive(Default)]
pub(crate) struct EventBodies<'a> {
    runs: Vec<Run<'a>>,
}

impl<'a> EventBodies<'a> {
    /// The body to store for the event's next decision.
    pub(crate) fn encode(
        &mut self,
        decision: &'a Decision,
        shadow: bool,
    ) -> serde_json::Result<String> {
        // Whole patterns: a field added to a decision or its trace does not
        // compile here until the body stores it, so nothing is lost silently.
        let Decision {
            rule,
            rule_hash,
            kind,
            trace,
        } = decision;
        let run = (rule.as_str(), rule_hash.as_str(), shadow);
        let first_of_run = !self.runs.contains(&run);
        if first_of_run {
            self.runs.push(run);
        }
        serde_json::to_string(&Body {
            kind,
            trace: trace
                .as_ref()
                .map(|DecisionTrace { at, inputs, terms }| TraceBody {
                    at,
                    inputs: inputs.as_ref().filter(|_| first_of_run),
                    terms,
                }),
        })
    }
}

/// Decodes the decisions of one event, in the order they were inserted.
#[derive(Default)]
pub(crate) struct EventDecisions {
    inputs: Vec<((String, String, bool), Value)>,
}

impl EventDecisions {
    /// The decision a row holds: its `rule`, `rule_hash` and `shadow`
    /// columns and its `body`.
    pub(crate) fn decode(
        &mut self,
        rule: String,
        rule_hash: String,
        shadow: bool,
        body: &str,
    ) -> serde_json::Result<Decision> {
        let mut value: Value = serde_json::from_str(body)?;
        let run = (rule.clone(), rule_hash.clone(), shadow);
        if let Some(object) = value.as_object_mut() {
            object.insert("rule".into(), Value::String(rule));
            object.insert("rule_hash".into(), Value::String(rule_hash));
            if let Some(trace) = object.get_mut("trace").and_then(Value::as_object_mut) {
                let earlier = self.inputs.iter().find(|(r, _)| *r == run);
                match (trace.get("inputs"), earlier) {
                    (Some(inputs), None) => self.inputs.push((run, inputs.clone())),
                    (None, Some((_, inputs))) => {
                        trace.insert("inputs".into(), inputs.clone());
                    }
                    _ => {}
                }
            }
        }
        serde_json::from_value(value)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decision(rule: &str, kind: Value) -> Decision {
        let mut value = json!({
            "rule": rule,
            "rule_hash": "b54c3c0b1825aa80",
            "trace": {"at": format!("rules/{rule}.rhai:66:13"),
                      "inputs": {"stage": "review", "owner": "ana",
                                 "updated_at": "2026-01-05T09:00:00Z", "events": 1}}
        });
        value
            .as_object_mut()
            .unwrap()
            .extend(kind.as_object().unwrap().clone());
        serde_json::from_value(value).unwrap()
    }

    fn escalate(rule: &str) -> Decision {
        decision(
            rule,
            json!({"kind": "escalate", "to": "review_owner", "reason": "stalled", "level": 2}),
        )
    }

    fn notify(rule: &str) -> Decision {
        decision(
            rule,
            json!({"kind": "notify", "to": "ana", "message": "handed to you"}),
        )
    }

    fn round_trip(decisions: &[(Decision, bool)]) -> (Vec<String>, Vec<Decision>) {
        let mut bodies = EventBodies::default();
        let stored: Vec<String> = decisions
            .iter()
            .map(|(d, shadow)| bodies.encode(d, *shadow).unwrap())
            .collect();
        let mut read = EventDecisions::default();
        let decoded = decisions
            .iter()
            .zip(&stored)
            .map(|((d, shadow), body)| {
                read.decode(d.rule.clone(), d.rule_hash.clone(), *shadow, body)
                    .unwrap()
            })
            .collect();
        (stored, decoded)
    }

    #[test]
    fn the_first_body_of_a_run_leaves_out_only_what_the_columns_hold() {
        let (stored, read) = round_trip(&[(escalate("stalled_handoff"), false)]);
        assert_eq!(
            serde_json::from_str::<Value>(&stored[0]).unwrap(),
            json!({"kind": "escalate", "to": "review_owner", "reason": "stalled", "level": 2,
                   "trace": {"at": "rules/stalled_handoff.rhai:66:13",
                             "inputs": {"stage": "review", "owner": "ana",
                                        "updated_at": "2026-01-05T09:00:00Z", "events": 1}}})
        );
        assert_eq!(read, vec![escalate("stalled_handoff")]);
    }

    #[test]
    fn later_decisions_of_a_run_store_no_inputs_and_read_them_back() {
        let decisions = [
            (escalate("stalled_handoff"), false),
            (notify("gate"), false),
            (notify("stalled_handoff"), false),
            (notify("stalled_handoff"), true),
        ];
        let (stored, read) = round_trip(&decisions);
        let has_inputs: Vec<bool> = stored.iter().map(|b| b.contains("\"inputs\"")).collect();
        // The second stalled_handoff decision shares the first's run; the
        // shadow one is another run (another version of the rule).
        assert_eq!(has_inputs, [true, true, false, true]);
        let expected: Vec<Decision> = decisions.into_iter().map(|(d, _)| d).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn a_decision_without_trace_or_inputs_reads_back_without_them() {
        let mut untraced = notify("gate");
        untraced.trace = None;
        let mut no_entity = escalate("gate");
        no_entity.trace.as_mut().unwrap().inputs = None;
        let mut after = notify("gate");
        after.trace.as_mut().unwrap().inputs = None;
        let decisions = [(untraced, false), (no_entity, false), (after, false)];
        let (stored, read) = round_trip(&decisions);
        assert!(!stored[0].contains("trace"), "{}", stored[0]);
        assert!(stored.iter().all(|b| !b.contains("inputs")), "{stored:?}");
        let expected: Vec<Decision> = decisions.into_iter().map(|(d, _)| d).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn bodies_written_whole_before_read_the_same() {
        let decisions = [escalate("stalled_handoff"), notify("stalled_handoff")];
        let mut read = EventDecisions::default();
        for d in &decisions {
            let whole = serde_json::to_string(d).unwrap();
            let decoded = read
                .decode(d.rule.clone(), d.rule_hash.clone(), false, &whole)
                .unwrap();
            assert_eq!(&decoded, d);
        }
    }
}
