//! The decision trace: where each decision was made, on which entity state,
//! and the condition terms the rule gave with `because`.

use converge_model::{DecisionInputs, DecisionSite, EntityState};
use serde_json::json;

use crate::{at, compile, entity_after, event, now};

fn site(file: &str, line: u32, column: u32) -> DecisionSite {
    DecisionSite {
        file: file.into(),
        line,
        column,
    }
}

fn campaign() -> (converge_model::Event, EntityState) {
    let e = event(
        "send.requested",
        Some("campaign/c-42"),
        json!({"stage": "review", "owner": "ana"}),
    );
    let state = entity_after(&e, None);
    (e, state)
}

#[test]
fn each_decision_names_the_call_that_made_it() {
    let set = compile(&[(
        "gate",
        "if entity == () { return; }\nnotify(\"ana\", \"first\");\n  fn hold(c) { hold_send(c, \"wait\"); }\nhold(\"email\");\n",
    )]);
    let (e, mut state) = campaign();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    let sites: Vec<_> = eval
        .decisions
        .iter()
        .map(|d| d.trace.as_ref().unwrap().at.clone())
        .collect();
    // Inside a script function, the call in the function's body.
    assert_eq!(
        sites,
        vec![
            site("rules/gate.rhai", 2, 1),
            site("rules/gate.rhai", 3, 16)
        ]
    );
    assert_eq!(sites[0].to_string(), "rules/gate.rhai:2:1");
}

#[test]
fn inputs_are_the_state_the_rule_saw() {
    let set = compile(&[
        (
            "first",
            "set_stage(\"approved\");\nnotify(\"ana\", entity.stage);",
        ),
        ("second", "notify(\"ana\", entity.stage);"),
    ]);
    let (e, mut state) = campaign();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    let inputs: Vec<_> = eval
        .decisions
        .iter()
        .map(|d| d.trace.as_ref().unwrap().inputs.clone().unwrap())
        .collect();
    let seen = |stage: &str, updated_at: &str| DecisionInputs {
        stage: Some(stage.into()),
        owner: Some("ana".into()),
        updated_at: at(updated_at),
        events: 1,
    };
    // `first` decided both on the review state; `second` saw its change.
    assert_eq!(
        inputs,
        vec![
            seen("review", "2026-11-23T09:59:00Z"),
            seen("review", "2026-11-23T09:59:00Z"),
            seen("approved", "2026-11-23T10:00:00Z"),
        ]
    );

    // An event about no entity: no inputs.
    let eval = compile(&[("say", "notify(\"ops\", \"hi\");")]).evaluate(
        &event("ping", None, json!({})),
        None,
        now(),
    );
    assert_eq!(eval.decisions[0].trace.as_ref().unwrap().inputs, None);
}

#[test]
fn because_gives_the_terms_of_the_later_decisions() {
    let set = compile(&[
        (
            "gate",
            r#"
notify("ops", "before");
because(#{ approved: true, consistency: 0.72, within_window: false, failing: ["timing"] });
hold_send("email", "not converged");
notify("ops", "held");
because(#{});
notify("ops", "after");
"#,
        ),
        ("next", r#"notify("ops", "another rule");"#),
    ]);
    let (e, mut state) = campaign();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    let terms: Vec<_> = eval
        .decisions
        .iter()
        .map(|d| serde_json::to_value(&d.trace.as_ref().unwrap().terms).unwrap())
        .collect();
    let gate = json!({"approved": true, "consistency": 0.72, "within_window": false, "failing": ["timing"]});
    assert_eq!(
        terms,
        vec![json!({}), gate.clone(), gate, json!({}), json!({})]
    );
    // Stored with the decision, in its JSON body.
    let body = serde_json::to_value(&eval.decisions[1]).unwrap();
    assert_eq!(body["trace"]["terms"]["consistency"], 0.72);
    assert_eq!(body["trace"]["at"], "rules/gate.rhai:4:1");
    assert!(
        serde_json::to_value(&eval.decisions[0]).unwrap()["trace"]
            .get("terms")
            .is_none()
    );
}

#[test]
fn because_refuses_what_json_cannot_hold() {
    let set = compile(&[("bad", "because(#{ x: 0.0 / 0.0 });\nnotify(\"a\", \"b\");")]);
    let eval = set.evaluate(&event("ping", None, json!({})), None, now());
    assert_eq!(eval.decisions, vec![]);
    assert_eq!(eval.failures.len(), 1);
    assert!(
        eval.failures[0]
            .message
            .contains("because: `x`: NaN cannot be stored as JSON"),
        "{}",
        eval.failures[0].message
    );
}

/// The `because` example of `docs/rules.md`, so it cannot rot.
#[test]
fn the_documented_gate_example_runs() {
    let set = compile(&[(
        "gate",
        r#"
let channel = event.data.channel;
let check = consistency(entity, #{ fields: ["offer_code", "landing_url"], threshold: 0.9 });
let approved = entity.channels.values().all(|c| c.stage == "approved");
let within = launch_within(entity, "launch_at", "48h");
because(#{ approved: approved, consistency: check.score, within_window: within });
if approved && check.score >= 0.9 && within {
    release_send(channel, "converged");
} else {
    hold_send(channel, "not converged");
}
"#,
    )]);
    let e = event(
        "send.requested",
        Some("campaign/c-42"),
        json!({"channel": "email", "stage": "draft"}),
    );
    let mut state = entity_after(&e, None);
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    assert_eq!(eval.decisions[0].kind.name(), "hold_send");
    assert_eq!(
        serde_json::to_value(&eval.decisions[0].trace.as_ref().unwrap().terms).unwrap(),
        json!({"approved": false, "consistency": 1.0, "within_window": true})
    );
}
