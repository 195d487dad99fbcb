use std::sync::Arc;

use converge_model::{Decision, DecisionKind, EntityState};
use converge_model::{RuleFailure, RuleNote};
use converge_rules::{RuleLimits, RuleSet};
use serde_json::json;

use crate::{at, compile, entity_after, event, now, source};

fn escalate(rule: &RuleSet, index: usize, to: &str, reason: &str, level: u32) -> Decision {
    decision(
        rule,
        index,
        DecisionKind::Escalate {
            to: to.into(),
            reason: reason.into(),
            level,
        },
    )
}

fn notify(rule: &RuleSet, index: usize, to: &str, message: &str) -> Decision {
    decision(
        rule,
        index,
        DecisionKind::Notify {
            to: to.into(),
            message: message.into(),
        },
    )
}

fn set_field(rule: &RuleSet, index: usize, field: &str, value: serde_json::Value) -> Decision {
    decision(
        rule,
        index,
        DecisionKind::SetField {
            field: field.into(),
            value,
        },
    )
}

fn decision(set: &RuleSet, index: usize, kind: DecisionKind) -> Decision {
    let rule = &set.rules()[index];
    Decision {
        rule: rule.name.clone(),
        rule_hash: rule.hash.clone(),
        kind,
        trace: None,
    }
}

/// The decisions without their traces (the trace tests check those).
fn untraced(decisions: Vec<Decision>) -> Vec<Decision> {
    decisions
        .into_iter()
        .map(|decision| Decision {
            trace: None,
            ..decision
        })
        .collect()
}

fn failure(set: &RuleSet, index: usize, message: &str) -> RuleFailure {
    let rule = &set.rules()[index];
    RuleFailure {
        rule: rule.name.clone(),
        rule_hash: rule.hash.clone(),
        message: message.into(),
    }
}

fn task_event() -> (converge_model::Event, EntityState) {
    let e = event(
        "task.updated",
        Some("task/T-1"),
        json!({"stage": "review", "owner": "ana", "priority": "high"}),
    );
    let state = entity_after(&e, None);
    (e, state)
}

#[test]
fn decisions_carry_the_rule_name_and_hash() {
    let set = compile(&[
        ("first", r#"escalate("review_owner", "stalled");"#),
        (
            "second",
            r#"
            if event.type == "task.updated" {
                escalate(entity.owner, `task ${entity.id}`, 3);
                notify("ops", `now is ${now}, event at ${event.time}`);
                set_field("score", 2.5);
                set_field("labels", ["a", 1, #{ x: () }]);
                set_field("priority", ());
            }
            "#,
        ),
    ]);
    let (e, mut state) = task_event();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    assert_eq!(
        untraced(eval.decisions),
        vec![
            escalate(&set, 0, "review_owner", "stalled", 1),
            escalate(&set, 1, "ana", "task T-1", 3),
            notify(
                &set,
                1,
                "ops",
                "now is 2026-11-23T10:00:00Z, event at 2026-11-23T09:59:00Z"
            ),
            set_field(&set, 1, "score", json!(2.5)),
            set_field(&set, 1, "labels", json!(["a", 1, {"x": null}])),
            set_field(&set, 1, "priority", json!(null)),
        ]
    );
    assert_eq!(set.rules()[0].hash.len(), 16);
    assert_ne!(set.rules()[0].hash, set.rules()[1].hash);
    assert_eq!(state.fields.get("priority"), None, "null removes the field");
    assert_eq!(state.fields["labels"], json!(["a", 1, {"x": null}]));
}

#[test]
fn the_event_map_has_every_attribute() {
    let set = compile(&[(
        "r",
        r#"
        let e = event;
        notify("t", `${e.id}|${e.source}|${e.type}|${e.subject}|${e.time}|${e.data.n + 1}|${e.data.list.len()}`);
        "#,
    )]);
    let e = event(
        "custom",
        Some("nothing-here"),
        json!({"n": 41, "list": [1, 2, 3]}),
    );
    let eval = set.evaluate(&e, None, now());
    assert_eq!(
        untraced(eval.decisions),
        vec![notify(
            &set,
            0,
            "t",
            "e-1|/tests|custom|nothing-here|2026-11-23T09:59:00Z|42|3"
        )]
    );
}

#[test]
fn the_entity_map_mirrors_the_entity_state() {
    let set = compile(&[(
        "r",
        r#"
        let c = entity.channels.email;
        notify("t", `${entity.kind}/${entity.id} ${entity.stage} ${entity.owner} ${entity.events} ${entity.last_event_type} ${entity.created_at} ${entity.stage_since}`);
        notify("t", `${c.stage} ${c.owner} ${c.fields.offer_code} ${c.updated_at} ${entity.fields.len()}`);
        "#,
    )]);
    let first = event(
        "campaign.updated",
        Some("campaign/c-42"),
        json!({"stage": "draft"}),
    );
    let state = entity_after(&first, None);
    let e = event(
        "campaign.channel.updated",
        Some("campaign/c-42"),
        json!({"channel": "email", "stage": "approved", "owner": "eve", "offer_code": "FALL25"}),
    );
    let mut state = entity_after(&e, Some(state));
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    assert_eq!(
        untraced(eval.decisions),
        vec![
            notify(
                &set,
                0,
                "t",
                "campaign/c-42 draft  2 campaign.channel.updated 2026-11-01T00:00:00Z 2026-11-23T09:59:00Z"
            ),
            notify(&set, 0, "t", "approved eve FALL25 2026-11-23T09:59:00Z 0"),
        ]
    );
}

#[test]
fn set_field_is_applied_and_seen_by_the_next_rule_only() {
    let set = compile(&[
        (
            "marks",
            r#"
            set_field("escalation_tier", 2);
            set_field("stage", "triage");
            notify("log", `marks sees ${entity.stage} ${entity.fields.get("escalation_tier")}`);
            "#,
        ),
        (
            "reads",
            r#"notify("log", `reads sees ${entity.stage} ${entity.fields.escalation_tier}`);"#,
        ),
    ]);
    let (e, mut state) = task_event();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    assert_eq!(
        untraced(eval.decisions),
        vec![
            set_field(&set, 0, "escalation_tier", json!(2)),
            set_field(&set, 0, "stage", json!("triage")),
            notify(&set, 0, "log", "marks sees review "),
            notify(&set, 1, "log", "reads sees triage 2"),
        ]
    );
    assert_eq!(state.fields["escalation_tier"], json!(2));
    assert_eq!(state.stage.as_deref(), Some("triage"));
    assert_eq!((state.stage_since, state.updated_at), (Some(now()), now()));
}

#[test]
fn a_failing_rule_does_not_stop_the_others() {
    let set = compile(&[
        ("loops", "let n = 0;\nloop {\n    n += 1;\n}\n"),
        ("bad_args", "\nescalate(1, 2);"),
        (
            "throws",
            "if true {\n    throw \"no owner for \" + entity.id;\n}",
        ),
        ("decides", r#"escalate("review_owner", "still here", 2);"#),
        ("bad_level", r#"escalate("review_owner", "x", 0);"#),
        ("bad_property", "notify(\"a\", event.dta);"),
    ]);
    let (e, mut state) = task_event();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(
        untraced(eval.decisions),
        vec![escalate(&set, 3, "review_owner", "still here", 2)]
    );
    assert_eq!(
        eval.failures,
        vec![
            failure(&set, 0, "rules/loops.rhai:3:10: Too many operations"),
            failure(
                &set,
                1,
                "rules/bad_args.rhai:2:1: Function not found: escalate (i64, i64)"
            ),
            failure(
                &set,
                2,
                "rules/throws.rhai:2:5: Runtime error: no owner for T-1"
            ),
            failure(
                &set,
                4,
                "rules/bad_level.rhai:1:1: Runtime error: escalate: level must be 1 or more, got 0"
            ),
            failure(
                &set,
                5,
                "rules/bad_property.rhai:1:19: Property not found: dta"
            ),
        ]
    );
}

#[test]
fn a_failing_rule_keeps_none_of_its_decisions() {
    let set = compile(&[
        (
            "half_done",
            "notify(\"ana\", \"first\");\nset_field(\"stage\", \"done\");\nlet x = 1 / 0;\n",
        ),
        ("after", r#"notify("log", `stage is ${entity.stage}`);"#),
    ]);
    let (e, mut state) = task_event();
    let before = state.clone();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(
        untraced(eval.decisions),
        vec![notify(&set, 1, "log", "stage is review")]
    );
    assert_eq!(
        eval.failures,
        vec![failure(
            &set,
            0,
            "rules/half_done.rhai:3:11: Division by zero: 1 / 0"
        )]
    );
    assert_eq!(state, before);
}

#[test]
fn string_growth_hits_the_size_limit() {
    let set = compile(&[("grows", "let s = \"x\";\nloop {\n    s += s;\n}")]);
    let (e, mut state) = task_event();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.decisions, vec![]);
    assert_eq!(
        eval.failures,
        vec![failure(
            &set,
            0,
            "rules/grows.rhai:3:7: Length of string too large"
        )]
    );
}

#[test]
fn join_writes_the_items_between_separators() {
    let set = compile(&[(
        "joins",
        r#"
        notify("ops", ["a", "b"].join(", "));
        notify("ops", [1, 2.5, true, (), 'c', "d"].join("|"));
        notify("ops", [].join(", "));
        notify("ops", join(event.data.labels, " + "));
        notify("ops", event.data.labels.join("/"));
        "#,
    )]);
    let e = event(
        "task.updated",
        Some("task/T-1"),
        json!({"labels": ["urgent", "legal"]}),
    );
    let mut state = entity_after(&e, None);
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    let messages: Vec<&str> = eval
        .decisions
        .iter()
        .map(|d| match &d.kind {
            DecisionKind::Notify { message, .. } => message.as_str(),
            other => panic!("not a notify: {other:?}"),
        })
        .collect();
    assert_eq!(
        messages,
        [
            "a, b",
            "1|2.5|true||c|d",
            "",
            "urgent + legal",
            "urgent/legal"
        ]
    );
}

#[test]
fn a_join_longer_than_the_string_limit_fails_the_rule() {
    let limits = RuleLimits {
        max_string_size: 16,
        ..RuleLimits::default()
    };
    let set = RuleSet::compile(
        vec![
            source(
                "long",
                "notify(\"ops\", \"fits\");\nlet text = [\"0123456789\", \"0123456789\"].join(\"\");",
            ),
            source("lines", "let text = lines([\"01234567\", \"01234567\"]);"),
            source("short", r#"notify("ops", ["0123456789", "012345"].join(""));"#),
        ],
        &limits,
    )
    .unwrap();
    let (e, mut state) = task_event();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(
        eval.failures,
        vec![
            failure(&set, 0, "rules/long.rhai:2:41: Length of string too large"),
            failure(&set, 1, "rules/lines.rhai:1:12: Length of string too large"),
        ]
    );
    assert_eq!(
        untraced(eval.decisions),
        vec![notify(&set, 2, "ops", "0123456789012345")]
    );
}

#[test]
fn a_message_of_several_lines_carries_real_line_breaks() {
    let set = compile(&[(
        "held",
        r#"
        notify("ana", lines([
            `task/${entity.id} is held:`,
            "- the offer code differs",
            "- launches are 72h apart",
        ]));
        notify("ana", "first\nsecond");
        notify("ana", `kept\nas typed`);
        notify("ana", `spans
          two lines`);
        "#,
    )]);
    let (e, mut state) = task_event();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    assert_eq!(
        untraced(eval.decisions),
        vec![
            notify(
                &set,
                0,
                "ana",
                "task/T-1 is held:\n- the offer code differs\n- launches are 72h apart"
            ),
            notify(&set, 0, "ana", "first\nsecond"),
            // Backtick strings have no escapes: a backslash and an `n`.
            notify(&set, 0, "ana", r"kept\nas typed"),
            // A line break typed in a backtick string is kept, and so is
            // the indentation after it.
            notify(&set, 0, "ana", "spans\n          two lines"),
        ]
    );
}

#[test]
fn limits_are_configurable() {
    let limits = RuleLimits {
        max_operations: 50,
        max_decisions_per_rule: 2,
        ..RuleLimits::default()
    };
    let set = RuleSet::compile(
        vec![
            source("busy", "let n = 0;\nfor i in 0..100 { n += i; }"),
            source("chatty", r#"for i in 0..3 { notify("a", `${i}`); }"#),
        ],
        &limits,
    )
    .unwrap();
    let (e, mut state) = task_event();
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.decisions, vec![]);
    assert_eq!(
        eval.failures,
        vec![
            failure(&set, 0, "rules/busy.rhai:2:24: Too many operations"),
            failure(
                &set,
                1,
                "rules/chatty.rhai:1:17: Runtime error: Too many decisions: a rule may make at most 2 per event"
            ),
        ]
    );
}

#[test]
fn an_event_without_an_entity_gives_unit() {
    let set = compile(&[
        (
            "checks",
            r#"if entity == () && type_of(entity) == "()" && type_of(event) == "map" {
                notify("ops", `no entity for ${event.subject}`);
            }"#,
        ),
        ("sets", "set_field(\"x\", 1);"),
    ]);
    let e = event("ping", None, json!(null));
    let eval = set.evaluate(&e, None, now());
    assert_eq!(
        untraced(eval.decisions),
        vec![notify(&set, 0, "ops", "no entity for ")]
    );
    assert_eq!(
        eval.failures,
        vec![failure(
            &set,
            1,
            "rules/sets.rhai:1:1: Runtime error: set_field(\"x\", ..): this event names no entity (guard the rule first, as in `if entity?.kind != \"task\" { return; }`)"
        )]
    );
}

/// What docs/rules.md teaches of `?.`: it reads `()` through a missing
/// entity or channel, the rest of the chain unread (methods included), and
/// reads members as `.` does when there is something to read.
#[test]
fn elvis_reads_unit_through_a_missing_entity_or_channel() {
    let rule = r#"
        let email = if entity?.kind == "campaign" { entity.channels.get("email") } else { () };
        notify("kind", `${entity?.kind}`);
        notify("approved", `${email?.fields.get("approved")}`);
        notify("stage", `${email?.stage}`);
        notify("keys", `${email?.fields.keys()}`);
    "#;
    let set = compile(&[("elvis", rule)]);
    let texts = |decisions: Vec<Decision>| -> Vec<String> {
        decisions
            .into_iter()
            .map(|d| match d.kind {
                DecisionKind::Notify { message, .. } => message,
                other => panic!("{other:?}"),
            })
            .collect()
    };

    let none = set.evaluate(&event("ping", None, json!(null)), None, now());
    assert_eq!(none.failures, vec![]);
    assert_eq!(texts(none.decisions), ["", "", "", ""]);

    let no_email = event("campaign.updated", Some("campaign/c-1"), json!({}));
    let mut state = entity_after(&no_email, None);
    let eval = set.evaluate(&no_email, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    assert_eq!(texts(eval.decisions), ["campaign", "", "", ""]);

    let email = event(
        "campaign.channel.updated",
        Some("campaign/c-1"),
        json!({"channel": "email", "stage": "approved", "approved": true}),
    );
    let mut state = entity_after(&email, Some(state));
    let eval = set.evaluate(&email, Some(&mut state), now());
    assert_eq!(eval.failures, vec![]);
    assert_eq!(
        texts(eval.decisions),
        ["campaign", "true", "approved", "[\"approved\"]"]
    );
}

#[test]
fn inputs_are_read_only() {
    let attempts = [
        "event.type = \"other\";",
        "event.data.n = 1;",
        "event.data.list.push(9);",
        "event.data.list[0] = 7;",
        "event.data.remove(\"n\");",
        "event.data += #{ x: 1 };",
        "entity.fields.priority = \"low\";",
        "entity.channels.clear();",
        "entity.stage = \"done\";",
        "now = \"2030-01-01T00:00:00Z\";",
        "let e = event; e.type = \"copy\"; e.data.list.push(1);",
        "let d = entity.fields; d.priority = \"copy\";",
        "fn change(e) { e.type = \"in fn\"; e.data.n = 0; }\nchange(event);",
        "fn change() { this.type = \"method\"; }\nevent.change();",
        "let f = |v| { v.type = \"closure\"; v };\nf.call(event);",
        "for x in event.data.list { x = 100; }",
        "let f = || { event.type = \"captured\"; };\nf.call();",
        "let f = || event.data;\nlet d = f.call();\nd.n = 0;",
    ];
    let mut rules: Vec<(String, String)> = attempts
        .iter()
        .enumerate()
        .map(|(i, text)| (format!("attempt_{i}"), text.to_string()))
        .collect();
    rules.push((
        "sees".into(),
        "notify(\"a\", `${event.type} ${event.data} ${entity.stage} ${entity.fields} ${entity.channels.len()} ${now}`);".into(),
    ));
    let pairs: Vec<(&str, &str)> = rules
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let set = compile(&pairs);
    let e = event(
        "task.updated",
        Some("task/T-1"),
        json!({"stage": "review", "priority": "high", "n": 41, "list": [1, 2]}),
    );
    let mut state = entity_after(&e, None);
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(
        untraced(eval.decisions),
        vec![notify(
            &set,
            attempts.len(),
            "a",
            "task.updated #{\"list\": [1, 2], \"n\": 41, \"priority\": \"high\", \"stage\": \"review\"} review #{\"list\": [1, 2], \"n\": 41, \"priority\": \"high\"} 0 2026-11-23T10:00:00Z"
        )]
    );
    let failed: Vec<String> = eval.failures.iter().map(|f| f.message.clone()).collect();
    assert_eq!(
        failed,
        [
            "rules/attempt_0.rhai:1:1: Cannot modify constant event",
            "rules/attempt_1.rhai:1:1: Cannot modify constant event",
            "rules/attempt_2.rhai:1:17: Non-pure method 'push' cannot be called on constant",
            "rules/attempt_3.rhai:1:1: Cannot modify constant event",
            "rules/attempt_4.rhai:1:12: Non-pure method 'remove' cannot be called on constant",
            "rules/attempt_5.rhai:1:1: Cannot modify constant event",
            "rules/attempt_6.rhai:1:1: Cannot modify constant entity",
            "rules/attempt_7.rhai:1:17: Non-pure method 'clear' cannot be called on constant",
            "rules/attempt_8.rhai:1:1: Cannot modify constant entity",
            "rules/attempt_9.rhai:1:1: Cannot modify constant now",
            "rules/attempt_13.rhai:2:7: Cannot modify constant  (line 1, position 15); in call to function 'change'",
            "rules/attempt_16.rhai:2:3: Cannot modify constant event (line 1, position 14); in closure call",
        ]
    );
}

#[test]
fn seconds_between_measures_from_entity_times_to_now() {
    let set = compile(&[(
        "age",
        r#"
        let hours = seconds_between(entity.stage_since, now) / 3600;
        if hours >= 1 { notify("ops", `in ${entity.stage} for ${hours}h`); }
        "#,
    )]);
    let (e, mut state) = task_event();
    state.stage_since = Some(at("2026-11-21T10:00:00Z"));
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(
        untraced(eval.decisions),
        vec![notify(&set, 0, "ops", "in review for 48h")]
    );
}

#[test]
fn stage_role_names_a_stages_role_by_the_teams_stage_names() {
    let set = compile(&[(
        "roles",
        r#"
        let roles = [];
        for stage in ["In Review", "ready_to_launch", "Live", "Shipped", "Parked", ()] {
            roles.push(stage_role(stage));
        }
        set_field("roles", roles);
        "#,
    )]);
    let (e, mut state) = task_event();
    let roles = |eval: converge_rules::Evaluation| match &eval.decisions[0].kind {
        DecisionKind::SetField { value, .. } => value.clone(),
        other => panic!("{other:?} {:?}", eval.failures),
    };
    // Without the team's names, the default ones: case, `_` and `-` aside.
    assert_eq!(
        roles(set.evaluate(&e, Some(&mut state.clone()), now())),
        json!(["review", "approved", "launch", "done", null, null])
    );
    // The team's own: "Parked" is blocked, and "Live" is done, no longer launch.
    let team = converge_model::StageRoles::configured(vec![
        (converge_model::Role::Blocked, vec!["Parked".into()]),
        (
            converge_model::Role::Done,
            vec!["Live".into(), "Shipped".into()],
        ),
    ])
    .unwrap();
    let eval = set.evaluate_in(
        &e,
        Some(&mut state),
        now(),
        None,
        None,
        Some(&Arc::new(team)),
    );
    assert_eq!(
        roles(eval),
        json!(["review", "approved", "done", "done", "blocked", null])
    );

    let wrong = compile(&[("wrong", "stage_role(3);")]);
    let (e, mut state) = task_event();
    let eval = wrong.evaluate(&e, Some(&mut state), now());
    assert_eq!(
        eval.failures[0].message,
        "rules/wrong.rhai:1:1: Runtime error: stage_role: `stage` must be a string or (), got a value of type `i64`"
    );
}

#[test]
fn print_and_debug_become_notes() {
    let set = compile(&[(
        "talks",
        "print(\"hello\");\ndebug(42);\nfor i in 0..40 { print(i); }",
    )]);
    let (e, mut state) = task_event();
    let eval = set.evaluate(&e, Some(&mut state), now());
    let note = |message: &str| RuleNote {
        rule: "talks".into(),
        message: message.into(),
    };
    assert_eq!(eval.notes.len(), 33);
    assert_eq!(eval.notes[0], note("hello"));
    assert_eq!(eval.notes[1], note("2:1: 42"));
    assert_eq!(eval.notes[32], note("(10 more lines not kept)"));
}

#[test]
fn threads_evaluating_at_once_keep_their_own_decisions() {
    let set = Arc::new(compile(&[(
        "echo",
        r#"for i in 0..5 { notify(event.data.who, `${i}`); }"#,
    )]));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let set = Arc::clone(&set);
            std::thread::spawn(move || {
                let who = format!("thread-{t}");
                let e = event("x", None, json!({"who": who}));
                for _ in 0..200 {
                    let eval = set.evaluate(&e, None, now());
                    assert_eq!(eval.decisions.len(), 5);
                    assert!(eval.decisions.iter().all(|d| matches!(
                        &d.kind,
                        DecisionKind::Notify { to, .. } if *to == who
                    )));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn every_limit_fails_the_rule_with_its_own_message() {
    let set = compile(&[
        ("recurses", "fn down(n) { down(n + 1) }\ndown(0);"),
        ("big_array", "let a = [];\nfor i in 0..5000 { a.push(i); }"),
        (
            "big_map",
            "let m = #{};\nfor i in 0..5000 { m[`k${i}`] = i; }\nnotify(\"n\", `${m.len()}`);",
        ),
    ]);
    let (e, mut state) = task_event();
    let eval = set.evaluate(&e, Some(&mut state), now());
    let messages: Vec<&str> = eval.failures.iter().map(|f| f.message.as_str()).collect();
    // Rhai checks a map's size when the map is next used, not on every
    // insertion; the operation limit bounds the growth until then.
    assert_eq!(
        messages,
        [
            "rules/recurses.rhai:2:1: Stack overflow",
            "rules/big_array.rhai:2:22: Size of array/BLOB too large",
            "rules/big_map.rhai:3:18: Size of object map too large",
        ]
    );
    assert_eq!(eval.decisions, vec![]);
}

#[test]
fn each_run_calls_the_functions_its_own_rule_and_arguments_name() {
    // What a call resolved to is remembered from one event to the next; it
    // must stay the rule's own function, and follow the arguments' types.
    let set = compile(&[
        (
            "first",
            "fn label() { \"first\" }\nnotify(label(), `${event.data.v.contains(\"a\")}`);",
        ),
        (
            "second",
            "fn label() { \"second\" }\nnotify(label(), `${event.data.v.contains(\"a\")}`);",
        ),
    ]);
    for round in 0..3 {
        for (v, has) in [
            (json!("cat"), "true"),
            (json!(["a", "b"]), "true"),
            (json!("dog"), "false"),
            (json!([1, 2]), "false"),
        ] {
            let e = event("x", None, json!({"v": v}));
            let eval = set.evaluate(&e, None, now());
            assert_eq!(eval.failures, vec![], "round {round}, v = {v}");
            assert_eq!(
                untraced(eval.decisions),
                vec![
                    notify(&set, 0, "first", has),
                    notify(&set, 1, "second", has)
                ],
                "round {round}, v = {v}"
            );
        }
    }
}

#[test]
fn a_rule_cut_short_inside_a_function_runs_whole_on_the_next_event() {
    let set = compile(&[(
        "deep",
        "fn down(n) { if n == 0 { 0 } else { 1 + down(n - 1) } }\n\
         notify(\"depth\", `${down(event.data.n)}`);",
    )]);
    for n in [5, 100_000, 7, 100_000, 3] {
        let e = event("x", None, json!({ "n": n }));
        let eval = set.evaluate(&e, None, now());
        if n == 100_000 {
            assert_eq!(eval.decisions, vec![]);
            assert_eq!(eval.failures.len(), 1, "n = {n}");
        } else {
            assert_eq!(eval.failures, vec![], "n = {n}");
            assert_eq!(
                untraced(eval.decisions),
                vec![notify(&set, 0, "depth", &n.to_string())]
            );
        }
    }
}
