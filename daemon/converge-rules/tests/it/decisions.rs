//! The decisions beyond escalate, notify and set_field: what they record,
//! how they change the entity, and how bad arguments fail the rule.

use converge_model::{CatchUp, DecisionKind};
use serde_json::json;

use crate::{compile, entity_after, event, now};

fn campaign() -> (converge_model::Event, converge_model::EntityState) {
    let e = event(
        "campaign.channel.updated",
        Some("campaign/c-1"),
        json!({"channel": "email", "stage": "approved"}),
    );
    let state = entity_after(&e, None);
    (e, state)
}

fn kinds(rule: &str) -> Vec<DecisionKind> {
    let set = compile(&[("r", rule)]);
    let (e, mut state) = campaign();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    eval.decisions.into_iter().map(|d| d.kind).collect()
}

fn failure(rule: &str) -> String {
    let set = compile(&[("r", rule)]);
    let (e, mut state) = campaign();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.decisions, vec![]);
    assert_eq!(eval.failures.len(), 1, "{rule}");
    eval.failures[0].message.clone()
}

#[test]
fn every_decision_function_records_its_kind() {
    let got = kinds(
        r#"
set_stage("review");
assign_owner("ana");
pause_channel("email", "offer code differs");
resume_channel("email", "fixed");
hold_send("social", "gate closed");
release_send("social", "gate passed");
emit("campaign.gate.passed");
emit("campaign.gate.failed", #{ score: 0.5, failing: ["timing"] });
schedule("48h", "task.reminder");
schedule(90, "task.reminder", #{ level: 2 });
expect("task.updated", "1d12h", "task.stalled");
cancel_expects("task.handoff.ended");
"#,
    );
    assert_eq!(
        got,
        vec![
            DecisionKind::SetStage {
                stage: "review".into()
            },
            DecisionKind::AssignOwner {
                owner: "ana".into()
            },
            DecisionKind::PauseChannel {
                channel: "email".into(),
                reason: "offer code differs".into()
            },
            DecisionKind::ResumeChannel {
                channel: "email".into(),
                reason: "fixed".into()
            },
            DecisionKind::HoldSend {
                channel: "social".into(),
                reason: "gate closed".into()
            },
            DecisionKind::ReleaseSend {
                channel: "social".into(),
                reason: "gate passed".into()
            },
            DecisionKind::Emit {
                event_type: "campaign.gate.passed".into(),
                data: json!({})
            },
            DecisionKind::Emit {
                event_type: "campaign.gate.failed".into(),
                data: json!({"score": 0.5, "failing": ["timing"]})
            },
            DecisionKind::Schedule {
                after_ms: 48 * 3_600_000,
                event_type: "task.reminder".into(),
                data: json!({}),
                catch_up: CatchUp::FireLate
            },
            DecisionKind::Schedule {
                after_ms: 90_000,
                event_type: "task.reminder".into(),
                data: json!({"level": 2}),
                catch_up: CatchUp::FireLate
            },
            DecisionKind::Expect {
                event_type: "task.updated".into(),
                within_ms: 36 * 3_600_000,
                otherwise: "task.stalled".into(),
                catch_up: CatchUp::FireLate
            },
            DecisionKind::CancelExpects {
                event_type: "task.handoff.ended".into()
            },
        ]
    );
}

#[test]
fn timers_carry_the_rules_catch_up_policy() {
    let got = kinds(
        "//! catch_up: skip\nschedule(\"2d\", \"t.due\");\nexpect(\"t.done\", 60, \"t.late\");",
    );
    assert!(matches!(
        got[0],
        DecisionKind::Schedule {
            after_ms: 172_800_000,
            catch_up: CatchUp::Skip,
            ..
        }
    ));
    assert!(matches!(
        got[1],
        DecisionKind::Expect {
            within_ms: 60_000,
            catch_up: CatchUp::Skip,
            ..
        }
    ));
}

#[test]
fn state_changing_decisions_are_applied_for_the_next_rule() {
    let set = compile(&[
        (
            "change",
            r#"set_stage("review"); assign_owner("ana"); pause_channel("email", "bad offer"); pause_channel("paid", "not ready");
               hold_send("email", "held"); emit("x.y");
               print(`sees ${entity.stage} ${entity.owner} ${entity.channels.email.fields.get("paused")}`);"#,
        ),
        (
            "after",
            r#"let email = entity.channels.email;
               print(`sees ${entity.stage} ${entity.owner} ${email.fields.paused} ${email.fields.paused_reason} ${entity.channels.paid.fields.paused}`);
               resume_channel("email", "fixed"); resume_channel("social", "never existed");"#,
        ),
    ]);
    let (e, mut state) = campaign();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    let notes: Vec<&str> = eval.notes.iter().map(|n| n.message.as_str()).collect();
    assert_eq!(notes, ["sees   ", "sees review ana true bad offer true"]);
    assert_eq!(state.stage.as_deref(), Some("review"));
    assert_eq!(state.stage_since, Some(now()));
    assert_eq!(state.owner.as_deref(), Some("ana"));
    let email = &state.channels["email"];
    assert_eq!(email.fields.get("paused"), Some(&json!(false)));
    assert_eq!(email.fields.get("paused_reason"), None);
    assert_eq!(email.updated_at, Some(now()));
    assert_eq!(state.channels["paid"].fields["paused"], json!(true));
    assert!(!state.channels.contains_key("social"));
}

#[test]
fn decisions_about_the_entity_need_one() {
    let set = compile(&[
        ("a", r#"set_stage("x");"#),
        ("b", r#"assign_owner("ana");"#),
        ("c", r#"pause_channel("email", "r");"#),
        ("d", r#"hold_send("email", "r");"#),
        ("e", r#"emit("x.y");"#),
        ("f", r#"schedule("1h", "x.y");"#),
        ("g", r#"expect("x.y", "1h", "x.z");"#),
        ("i", r#"cancel_expects("x.y");"#),
        ("h", r#"notify("ops", "fine without an entity");"#),
    ]);
    let eval = set.evaluate(&event("ping", None, json!({})), None, now());
    let messages: Vec<String> = eval.failures.iter().map(|f| f.message.clone()).collect();
    let tail = ": this event names no entity (guard the rule first, as in `if entity?.kind != \"task\" { return; }`)";
    assert_eq!(
        messages,
        [
            format!("rules/a.rhai:1:1: Runtime error: set_stage(\"x\"){tail}"),
            format!("rules/b.rhai:1:1: Runtime error: assign_owner(\"ana\"){tail}"),
            format!("rules/c.rhai:1:1: Runtime error: pause_channel(\"email\", ..){tail}"),
            format!("rules/d.rhai:1:1: Runtime error: hold_send(\"email\", ..){tail}"),
            format!("rules/e.rhai:1:1: Runtime error: emit(\"x.y\"){tail}"),
            format!("rules/f.rhai:1:1: Runtime error: schedule(1h, \"x.y\"){tail}"),
            format!("rules/g.rhai:1:1: Runtime error: expect(\"x.y\", ..){tail}"),
            format!("rules/i.rhai:1:1: Runtime error: cancel_expects(\"x.y\"){tail}"),
        ]
    );
    assert_eq!(eval.decisions.len(), 1);
}

#[test]
fn bad_arguments_fail_the_rule_naming_the_argument() {
    for (rule, expected) in [
        (
            r#"set_stage(" ");"#,
            "rules/r.rhai:1:1: Runtime error: set_stage: `stage` must not be empty",
        ),
        (
            r#"assign_owner("");"#,
            "rules/r.rhai:1:1: Runtime error: assign_owner: `person` must not be empty",
        ),
        (
            r#"pause_channel("", "r");"#,
            "rules/r.rhai:1:1: Runtime error: pause_channel: `channel` must not be empty",
        ),
        (
            r#"emit("task updated");"#,
            "rules/r.rhai:1:1: Runtime error: emit: `event_type` must be an event type without spaces, got \"task updated\"",
        ),
        (
            r#"schedule("0s", "t");"#,
            "rules/r.rhai:1:1: Runtime error: schedule: `after` must be more than zero, got \"0s\"",
        ),
        (
            r#"schedule(0, "t");"#,
            "rules/r.rhai:1:1: Runtime error: schedule: `after` must be more than zero, got 0",
        ),
        (
            r#"schedule(-5, "t");"#,
            "rules/r.rhai:1:1: Runtime error: schedule: `after` must not be negative, got -5",
        ),
        (
            r#"schedule("soon", "t");"#,
            "rules/r.rhai:1:1: Runtime error: schedule: `after` must be a duration such as \"48h\", \"2d\", \"1d12h\", \"90m\" or a number of seconds, got \"soon\" (expected number at 0)",
        ),
        (
            r#"schedule(1.5, "t");"#,
            "rules/r.rhai:1:1: Runtime error: schedule: `after` must be a duration string or a number of seconds, got a value of type `f64`",
        ),
        (
            r#"expect("t", "-1h", "u");"#,
            "rules/r.rhai:1:1: Runtime error: expect: `within` must be a duration such as \"48h\", \"2d\", \"1d12h\", \"90m\" or a number of seconds, got \"-1h\" (expected number at 0)",
        ),
        (
            r#"expect("t", "1h", "");"#,
            "rules/r.rhai:1:1: Runtime error: expect: `otherwise` must not be empty",
        ),
        (
            r#"cancel_expects("task done");"#,
            "rules/r.rhai:1:1: Runtime error: cancel_expects: `event_type` must be an event type without spaces, got \"task done\"",
        ),
        (
            r#"emit("t", #{ x: 1.0 / 0.0 });"#,
            "rules/r.rhai:1:1: Runtime error: emit: `data`: inf cannot be stored as JSON",
        ),
        (
            r#"let x = 1;
  emit("t", 5);"#,
            "rules/r.rhai:2:3: Function not found: emit (&str | ImmutableString | String, i64)",
        ),
    ] {
        assert_eq!(failure(rule), expected, "{rule}");
    }
}
