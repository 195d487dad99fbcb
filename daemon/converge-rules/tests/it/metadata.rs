//! The `//!` header of a rule file: name, description, events, order,
//! catch_up.

use converge_model::CatchUp;
use converge_rules::{DEFAULT_ORDER, RuleLimits, RuleSet};
use serde_json::json;

use crate::{compile, entity_after, event, now, source};

#[test]
fn the_header_is_exposed_on_the_rule() {
    let set = compile(&[
        (
            "file_stem",
            "//! name: stalled_handoff\n//! description: Escalate handoffs that do not move.\n//! events: task.handoff, task.*\n//! order: 20\n//! catch_up: skip\n\nlet x = 1;\n",
        ),
        ("plain", "let x = 1;"),
    ]);
    let rule = &set.rules()[0];
    assert_eq!(rule.name, "stalled_handoff");
    assert_eq!(
        rule.description.as_deref(),
        Some("Escalate handoffs that do not move.")
    );
    assert_eq!(
        rule.events,
        Some(vec!["task.handoff".to_string(), "task.*".to_string()])
    );
    assert_eq!((rule.order, rule.catch_up), (20, CatchUp::Skip));
    assert!(rule.handles("task.updated") && !rule.handles("campaign.updated"));

    let plain = &set.rules()[1];
    assert_eq!(plain.name, "plain");
    assert_eq!(
        (plain.description.as_ref(), plain.events.as_ref()),
        (None, None)
    );
    assert_eq!(
        (plain.order, plain.catch_up),
        (DEFAULT_ORDER, CatchUp::FireLate)
    );
    assert!(plain.handles("anything"));
}

#[test]
fn rules_run_by_order_then_as_given() {
    let set = compile(&[
        ("late", "//! order: 200\nnotify(\"ops\", \"late\");"),
        ("default_a", "notify(\"ops\", \"default_a\");"),
        ("early", "//! order: -1\nnotify(\"ops\", \"early\");"),
        ("default_b", "notify(\"ops\", \"default_b\");"),
        ("also_100", "//! order: 100\nnotify(\"ops\", \"also_100\");"),
    ]);
    let names: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["early", "default_a", "default_b", "also_100", "late"]
    );
    let eval = set.evaluate(&event("x", None, json!({})), None, now());
    let rules: Vec<&str> = eval.decisions.iter().map(|d| d.rule.as_str()).collect();
    assert_eq!(rules, names);
}

#[test]
fn rules_run_only_for_the_events_they_handle() {
    let set = compile(&[
        (
            "handoffs",
            "//! events: task.handoff\nnotify(\"ops\", event.type);",
        ),
        (
            "tasks",
            "//! events: task.*, asset.approved\nnotify(\"ops\", event.type);",
        ),
        ("all", "notify(\"ops\", event.type);"),
    ]);
    let ran = |ty: &str| -> Vec<String> {
        let e = event(ty, Some("task/T-1"), json!({}));
        let mut state = entity_after(&e, None);
        let eval = set.evaluate(&e, Some(&mut state), now());
        eval.decisions.into_iter().map(|d| d.rule).collect()
    };
    assert_eq!(ran("task.handoff"), ["handoffs", "tasks", "all"]);
    assert_eq!(ran("task.updated"), ["tasks", "all"]);
    assert_eq!(ran("asset.approved"), ["tasks", "all"]);
    assert_eq!(ran("campaign.updated"), ["all"]);
}

#[test]
fn header_errors_are_compile_errors_with_line_and_column() {
    let errors = RuleSet::compile(
        vec![
            source(
                "bad_header",
                "//! name: ok\n//! orde: 5\n//! catch_up: never\nlet x = 1;",
            ),
            source("bad_events", "//! events: task updated\nlet x = 1;"),
            source("bad_script", "//! order: 1\nlet x = ;"),
        ],
        &RuleLimits::default(),
    )
    .unwrap_err();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "rules/bad_header.rhai:2:5: rule header: unknown key `orde` (known: name, description, events, order, catch_up)",
            "rules/bad_header.rhai:3:15: rule header: `catch_up` must be `fire_late` or `skip`, got `never`",
            "rules/bad_events.rhai:1:13: rule header: `task updated` is not an event type or pattern (letters, digits, `.`, `_`, `-`, and `*` for any run of characters)",
            "rules/bad_script.rhai:2:9: Unexpected ';'",
        ]
    );
}

#[test]
fn two_rules_may_not_share_a_name() {
    let errors = RuleSet::compile(
        vec![
            source("stalled", "let x = 1;"),
            source("other", "//! name: stalled\nlet x = 1;"),
        ],
        &RuleLimits::default(),
    )
    .unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "rules/other.rhai:1:1: a rule named `stalled` already exists (rules/stalled.rhai); rule names must be unique"
    );
}
