//! How a decision is stored in its row's `body`: only what the row's
//! columns and its event's other decisions do not already say.
//!
//! - `rule`, `rule_hash` and `kind` are left out: the row has them (the
//!   rule and its version through `rule_version`).
//! - A `schedule`'s empty `data` and a `schedule`'s or `expect`'s
//!   `catch_up` of `fire_late` (what almost every timer has) are left out,
//!   and read back as those defaults.
//! - The trace's `inputs` (the entity as the rule saw it) are the same for
//!   every decision of one run of a rule, so they are stored with the first
//!   decision of each rule version (and shadow flag) on the event only; the
//!   others read them back from it, the event's decisions being read
//!   together and in order.
//! - The trace's `at` (`file:line:column`) is stored as `line:column` when
//!   its file is the one of the run's previous decision: a rule's
//!   decisions are almost always called from its own file, and the path
//!   (often absolute) was the longest part of a short decision's body.
//!
//! On the example rules this took 13% off the database per handoff
//! (`converge-load months`, docs/deploy.md). The saving is paid for on the
//! rare read (an event's trail), never on the hot write. Bodies written
//! whole before this layout read the same.

use converge_model::decision_json::{TimerDefaults, decision_trace, kind_members};
use converge_model::{Decision, DecisionTrace};
use serde_json::Value;

/// One rule run on an event: the rule, its version (hash) and whether it
/// ran in shadow.
type Run<'a> = (&'a str, &'a str, bool);

/// The rule runs of one event's decisions so far, each with the file of
/// its last traced decision: what a decision's body may leave out.
#[derive(Default)]
struct Runs<'a> {
    runs: Vec<(Run<'a>, Option<&'a str>)>,
}

impl<'a> Runs<'a> {
    /// Records a decision of `run` made in `file` (none when untraced) and
    /// says whether it is the run's first, and whether `file` is the one of
    /// the run's previous traced decision.
    fn visit(&mut self, run: Run<'a>, file: Option<&'a str>) -> (bool, bool) {
        let seen = self.runs.iter().position(|(r, _)| *r == run);
        let index = seen.unwrap_or_else(|| {
            self.runs.push((run, None));
            self.runs.len() - 1
        });
        let last_file = &mut self.runs[index].1;
        let same_file = file.is_some() && *last_file == file;
        if file.is_some() {
            *last_file = file;
        }
        (seen.is_none(), same_file)
    }
}

/// Encodes the decisions of one event, in the order they are inserted.
#[derive(Default)]
pub(crate) struct EventBodies<'a> {
    runs: Runs<'a>,
}

impl<'a> EventBodies<'a> {
    /// The body to store for the event's next decision. Written directly,
    /// the same text serde_json writes of the decision less what the
    /// module's comment leaves out (a property test holds it to that): the
    /// journal writer makes one for every decision, and through serde
    /// (its flattened kind and untagged site) a decision took about 4,500
    /// instructions.
    pub(crate) fn encode(&mut self, decision: &'a Decision, shadow: bool) -> String {
        // Whole patterns: a field added to a decision or its trace does not
        // compile here until the body stores it, so nothing is lost silently.
        let Decision {
            rule,
            rule_hash,
            kind,
            trace,
        } = decision;
        let file = trace.as_ref().map(|trace| trace.at.file.as_str());
        let (first_of_run, same_file) = self
            .runs
            .visit((rule.as_str(), rule_hash.as_str(), shadow), file);
        let mut out = Vec::with_capacity(160);
        out.push(b'{');
        kind_members(&mut out, kind, TimerDefaults::LeftOut);
        if let Some(DecisionTrace { at, inputs, terms }) = trace {
            out.extend_from_slice(b",\"trace\":");
            decision_trace(
                &mut out,
                (!same_file).then_some(at.file.as_str()),
                at,
                inputs.as_ref().filter(|_| first_of_run),
                terms,
            );
        }
        out.push(b'}');
        String::from_utf8(out).expect("JSON written from strings is UTF-8")
    }
}

/// Decodes the decisions of one event, in the order they were inserted.
#[derive(Default)]
pub(crate) struct EventDecisions {
    runs: Vec<((String, String, bool), RunRead)>,
}

/// What a run's earlier decisions said that its later ones leave out.
#[derive(Default)]
struct RunRead {
    inputs: Option<Value>,
    file: Option<String>,
}

impl EventDecisions {
    /// The decision a row holds: its rule and rule version, its `kind` and
    /// `shadow` columns and its `body`.
    pub(crate) fn decode(
        &mut self,
        rule: String,
        rule_hash: String,
        kind: &str,
        shadow: bool,
        body: &str,
    ) -> serde_json::Result<Decision> {
        let mut value: Value = serde_json::from_str(body)?;
        let run = (rule.clone(), rule_hash.clone(), shadow);
        if let Some(object) = value.as_object_mut() {
            object.insert("rule".into(), Value::String(rule));
            object.insert("rule_hash".into(), Value::String(rule_hash));
            if !object.contains_key("kind") {
                object.insert("kind".into(), Value::String(kind.to_string()));
            }
            if kind == "schedule" && !object.contains_key("data") {
                object.insert("data".into(), Value::Object(Default::default()));
            }
            if matches!(kind, "schedule" | "expect") && !object.contains_key("catch_up") {
                object.insert("catch_up".into(), Value::String("fire_late".into()));
            }
            if let Some(trace) = object.get_mut("trace").and_then(Value::as_object_mut) {
                let index = match self.runs.iter().position(|(r, _)| *r == run) {
                    Some(index) => index,
                    None => {
                        self.runs.push((run, RunRead::default()));
                        self.runs.len() - 1
                    }
                };
                let earlier = &mut self.runs[index].1;
                match (trace.get("inputs"), &earlier.inputs) {
                    (Some(inputs), None) => earlier.inputs = Some(inputs.clone()),
                    (None, Some(inputs)) => {
                        trace.insert("inputs".into(), inputs.clone());
                    }
                    _ => {}
                }
                if let Some(Value::String(at)) = trace.get_mut("at") {
                    match (at.rsplitn(3, ':').nth(2), &earlier.file) {
                        (Some(file), _) => earlier.file = Some(file.to_string()),
                        // `line:column`: in the previous decision's file.
                        (None, Some(file)) => *at = format!("{file}:{at}"),
                        // Nothing to complete it from: the site's parse says so.
                        (None, None) => {}
                    }
                }
            }
        }
        serde_json::from_value(value)
    }
}

#[cfg(test)]
mod tests {
    use converge_model::strategies::{decision_kind, decision_trace};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// What `EventBodies::encode` writes, made through serde and then cut,
    /// as the store made bodies before it wrote them directly: the
    /// reference of the property test.
    mod reference {
        use std::collections::BTreeMap;

        use converge_model::{
            CatchUp, Decision, DecisionInputs, DecisionKind, DecisionSite, DecisionTrace,
        };
        use serde::Serialize;
        use serde_json::Value;

        /// Where a decision was made, as stored: whole, or without the file when
        /// it is the run's previous decision's. Two parts (`line:column`) cannot be
        /// mistaken for a whole site, which always has three.
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Site<'a> {
            Whole(&'a DecisionSite),
            InPreviousFile(Position),
        }

        struct Position {
            line: u32,
            column: u32,
        }

        impl Serialize for Position {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&format_args!("{}:{}", self.line, self.column))
            }
        }

        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(flatten)]
            kind: &'a DecisionKind,
            #[serde(skip_serializing_if = "Option::is_none")]
            trace: Option<TraceBody<'a>>,
        }

        #[derive(Serialize)]
        struct TraceBody<'a> {
            at: Site<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            inputs: Option<&'a DecisionInputs>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            terms: &'a BTreeMap<String, Value>,
        }

        /// Encodes the decisions of one event, in the order they are inserted.
        #[derive(Default)]
        pub(super) struct EventBodies<'a> {
            runs: super::super::Runs<'a>,
        }

        impl<'a> EventBodies<'a> {
            /// The body to store for the event's next decision.
            pub(super) fn encode(
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
                let file = trace.as_ref().map(|trace| trace.at.file.as_str());
                let (first_of_run, same_file) = self
                    .runs
                    .visit((rule.as_str(), rule_hash.as_str(), shadow), file);
                let trace = trace.as_ref().map(|DecisionTrace { at, inputs, terms }| {
                    let site = if same_file {
                        Site::InPreviousFile(Position {
                            line: at.line,
                            column: at.column,
                        })
                    } else {
                        Site::Whole(at)
                    };
                    TraceBody {
                        at: site,
                        inputs: inputs.as_ref().filter(|_| first_of_run),
                        terms,
                    }
                });
                let whole = serde_json::to_string(&Body { kind, trace })?;
                Ok(without_defaults(without_kind(whole, kind.name()), kind))
            }
        }

        /// `body` without its leading `"kind"` member (the tag `serde` writes
        /// first), which the row's `kind` column holds. Any other shape is kept
        /// whole: the reader adds the kind only where the body has none.
        pub(super) fn without_kind(mut body: String, kind: &str) -> String {
            // `"kind":"<kind>"`, after the opening brace.
            let tag_end = 1 + r#""kind":"""#.len() + kind.len();
            let tagged = body
                .strip_prefix(r#"{"kind":""#)
                .and_then(|rest| rest.strip_prefix(kind))
                .and_then(|rest| rest.strip_prefix('"'));
            match tagged.and_then(|rest| rest.bytes().next()) {
                Some(b',') => body.replace_range(1..=tag_end, ""),
                Some(b'}') => body.replace_range(1..tag_end, ""),
                _ => {}
            }
            body
        }

        /// `body` (already without its kind) without the members a timer decision
        /// has at their defaults. Only where the text cut is certainly the member:
        /// each follows only numbers and strings of its kind (a string cannot hold
        /// the unescaped quotes the text has), so its first occurrence is it. A
        /// `schedule`'s `catch_up` after non-empty `data` is kept, since the data
        /// could hold the same text first.
        pub(super) fn without_defaults(body: String, kind: &DecisionKind) -> String {
            let fire_late = r#","catch_up":"fire_late""#;
            let piece = match kind {
                DecisionKind::Schedule { data, catch_up, .. }
                    if data.as_object().is_some_and(|o| o.is_empty()) =>
                {
                    match catch_up {
                        CatchUp::FireLate => r#","data":{},"catch_up":"fire_late""#,
                        CatchUp::Skip => r#","data":{}"#,
                    }
                }
                DecisionKind::Expect {
                    catch_up: CatchUp::FireLate,
                    ..
                } => fire_late,
                _ => return body,
            };
            match body.find(piece) {
                Some(at) => {
                    let mut body = body;
                    body.replace_range(at..at + piece.len(), "");
                    body
                }
                None => body,
            }
        }
    }

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
            .map(|(d, shadow)| bodies.encode(d, *shadow))
            .collect();
        let mut read = EventDecisions::default();
        let decoded = decisions
            .iter()
            .zip(&stored)
            .map(|((d, shadow), body)| {
                read.decode(
                    d.rule.clone(),
                    d.rule_hash.clone(),
                    d.kind.name(),
                    *shadow,
                    body,
                )
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
            json!({"to": "review_owner", "reason": "stalled", "level": 2,
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
    fn later_decisions_of_a_run_in_the_same_file_store_only_line_and_column() {
        let mut elsewhere = notify("stalled_handoff");
        elsewhere.trace.as_mut().unwrap().at = "rules/lib/notify.rhai:3:5".parse().unwrap();
        let mut untraced = notify("stalled_handoff");
        untraced.trace = None;
        let decisions = [
            (escalate("stalled_handoff"), false),
            (notify("stalled_handoff"), false),
            (notify("gate"), false),
            (untraced, false),
            (elsewhere, false),
            (notify("stalled_handoff"), false),
            (notify("stalled_handoff"), true),
        ];
        let (stored, read) = round_trip(&decisions);
        let sites: Vec<Option<String>> = stored
            .iter()
            .map(|b| {
                let body: Value = serde_json::from_str(b).unwrap();
                body["trace"]["at"].as_str().map(str::to_string)
            })
            .collect();
        let whole = |file: &str| Some(format!("rules/{file}.rhai:66:13"));
        assert_eq!(
            sites,
            [
                whole("stalled_handoff"),
                Some("66:13".into()),
                whole("gate"),
                None,
                Some("rules/lib/notify.rhai:3:5".into()),
                whole("stalled_handoff"),
                // Shadow: another run, so the file again.
                whole("stalled_handoff"),
            ]
        );
        let expected: Vec<Decision> = decisions.into_iter().map(|(d, _)| d).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn a_short_site_with_nothing_before_it_is_an_error_not_a_guess() {
        let mut read = EventDecisions::default();
        let err = read
            .decode(
                "gate".into(),
                "b54c3c0b1825aa80".into(),
                "notify",
                false,
                r#"{"to":"ana","message":"m","trace":{"at":"66:13"}}"#,
            )
            .unwrap_err();
        assert!(err.to_string().contains("file:line:column"), "{err}");
    }

    #[test]
    fn the_kind_tag_is_cut_only_when_it_leads_and_matches_the_column() {
        let cut = |body: &str, kind: &str| reference::without_kind(body.to_string(), kind);
        assert_eq!(
            cut(r#"{"kind":"notify","to":"ana"}"#, "notify"),
            r#"{"to":"ana"}"#
        );
        assert_eq!(cut(r#"{"kind":"notify"}"#, "notify"), "{}");
        // Another kind, a prefix of the kind, or no tag first: kept whole.
        for (body, kind) in [
            (r#"{"kind":"notify","to":"ana"}"#, "escalate"),
            (r#"{"kind":"set_field_x","f":1}"#, "set_field"),
            (r#"{"to":"ana","kind":"notify"}"#, "notify"),
            (r#"{"kind":"notify""#, "notify"),
        ] {
            assert_eq!(cut(body, kind), body);
        }
    }

    #[test]
    fn every_kind_is_stored_without_its_tag_and_read_back_from_the_column() {
        let kinds = [
            json!({"kind": "set_field", "field": "handoff", "value": {"owner": "ana"}}),
            json!({"kind": "schedule", "after_ms": 86_400_000, "event_type": "task.handoff.remind",
                   "data": {}, "catch_up": "fire_late"}),
            json!({"kind": "hold_send", "channel": "email", "reason": "gate closed"}),
            json!({"kind": "emit", "event_type": "gate.open", "data": {"campaign": "c-1"}}),
        ];
        let decisions: Vec<(Decision, bool)> = kinds
            .into_iter()
            .map(|kind| (decision("convergence_gate", kind), false))
            .collect();
        let (stored, read) = round_trip(&decisions);
        for body in &stored {
            assert!(
                body.starts_with('{') && !body.contains(r#""kind""#),
                "{body}"
            );
        }
        let expected: Vec<Decision> = decisions.into_iter().map(|(d, _)| d).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn timer_defaults_are_left_out_only_where_certainly_theirs() {
        let timers = [
            (
                json!({"kind": "schedule", "after_ms": 1000, "event_type": "t.remind",
                    "data": {}, "catch_up": "fire_late"}),
                r#"{"after_ms":1000,"event_type":"t.remind","trace""#,
            ),
            (
                json!({"kind": "schedule", "after_ms": 1000, "event_type": "t.remind",
                    "data": {}, "catch_up": "skip"}),
                r#"{"after_ms":1000,"event_type":"t.remind","catch_up":"skip","trace""#,
            ),
            // Data that holds the default's text first: everything kept.
            (
                json!({"kind": "schedule", "after_ms": 1000, "event_type": "t.remind",
                    "data": {"a": 1, "catch_up": "fire_late"}, "catch_up": "fire_late"}),
                r#"{"after_ms":1000,"event_type":"t.remind","data":{"a":1,"catch_up":"fire_late"},"catch_up":"fire_late","trace""#,
            ),
            (
                json!({"kind": "expect", "event_type": "t.done", "within_ms": 5,
                    "otherwise": "t.late", "catch_up": "fire_late"}),
                r#"{"event_type":"t.done","within_ms":5,"otherwise":"t.late","trace""#,
            ),
            (
                json!({"kind": "expect", "event_type": "t.done", "within_ms": 5,
                    "otherwise": "t.late", "catch_up": "skip"}),
                r#"{"event_type":"t.done","within_ms":5,"otherwise":"t.late","catch_up":"skip","trace""#,
            ),
        ];
        for (kind, stored_start) in timers {
            let made = decision("stalled_handoff", kind);
            let (stored, read) = round_trip(&[(made.clone(), false)]);
            assert!(stored[0].starts_with(stored_start), "{}", stored[0]);
            assert_eq!(read, [made]);
        }
    }

    #[test]
    fn bodies_written_whole_before_read_the_same() {
        let decisions = [escalate("stalled_handoff"), notify("stalled_handoff")];
        let mut read = EventDecisions::default();
        for d in &decisions {
            let whole = serde_json::to_string(d).unwrap();
            let decoded = read
                .decode(
                    d.rule.clone(),
                    d.rule_hash.clone(),
                    d.kind.name(),
                    false,
                    &whole,
                )
                .unwrap();
            assert_eq!(&decoded, d);
        }
    }

    /// An event's decisions. (Not read back here: the decisions of one run
    /// share their inputs, which these do not; the unit tests above read
    /// bodies back.)
    fn decisions() -> impl Strategy<Value = Vec<(Decision, bool)>> {
        let rule = prop_oneof![Just("gate"), Just("ladder"), Just("fields")];
        let hash = prop_oneof![Just("b54c3c0b1825aa80"), Just("0a1b2c3d4e5f6071")];
        prop::collection::vec(
            (rule, hash, decision_kind(), decision_trace(), any::<bool>()).prop_map(
                |(rule, hash, kind, trace, shadow)| {
                    let decision = Decision {
                        rule: rule.to_owned(),
                        rule_hash: hash.to_owned(),
                        kind,
                        trace,
                    };
                    (decision, shadow)
                },
            ),
            1..8,
        )
    }

    proptest! {
        #[test]
        fn bodies_are_written_as_serde_writes_them_less_what_is_left_out(decisions in decisions()) {
            let mut direct = EventBodies::default();
            let mut through_serde = reference::EventBodies::default();
            for (decision, shadow) in &decisions {
                prop_assert_eq!(
                    direct.encode(decision, *shadow),
                    through_serde.encode(decision, *shadow).unwrap()
                );
            }
        }
    }
}
