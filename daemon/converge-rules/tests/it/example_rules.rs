//! The rules in the repository's `rules/` directory, which the example config
//! and the daemon's integration tests use, run together in file-name order as
//! the example config loads them.

use std::path::PathBuf;

use converge_model::{Decision, DecisionKind, EntityState, Event};
use converge_rules::{RuleLimits, RuleSet, RuleSource};
use serde_json::{Value, json};

use crate::{entity_after, event, now};

fn example_rules() -> RuleSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("rules directory")
        .map(|entry| entry.expect("rules directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rhai"))
        .collect();
    paths.sort();
    let sources = paths
        .into_iter()
        .map(|path| RuleSource {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            source: std::fs::read_to_string(&path).expect("rule file"),
            path,
        })
        .collect();
    match RuleSet::compile(sources, &RuleLimits::default()) {
        Ok(set) => set,
        Err(errors) => panic!("example rules do not compile: {errors:#?}"),
    }
}

/// `(rule, kind)`: the hash is checked separately, once.
fn run(set: &RuleSet, e: &Event, state: Option<&mut EntityState>) -> Vec<(String, DecisionKind)> {
    let eval = set.evaluate(e, state, now());
    assert_eq!(eval.failures, vec![], "for {}", e.ty);
    assert_eq!(eval.notes, vec![]);
    for Decision {
        rule, rule_hash, ..
    } in &eval.decisions
    {
        let compiled = set.rules().iter().find(|r| r.name == *rule).unwrap();
        assert_eq!(*rule_hash, compiled.hash);
    }
    eval.decisions
        .into_iter()
        .map(|d| (d.rule, d.kind))
        .collect()
}

fn escalate(rule: &str, to: &str, reason: &str, level: u32) -> (String, DecisionKind) {
    (
        rule.into(),
        DecisionKind::Escalate {
            to: to.into(),
            reason: reason.into(),
            level,
        },
    )
}

fn notify(rule: &str, to: &str, message: &str) -> (String, DecisionKind) {
    (
        rule.into(),
        DecisionKind::Notify {
            to: to.into(),
            message: message.into(),
        },
    )
}

fn set_field(rule: &str, field: &str, value: Value) -> (String, DecisionKind) {
    (
        rule.into(),
        DecisionKind::SetField {
            field: field.into(),
            value,
        },
    )
}

/// An entity that already has everything `required_fields` asks for.
fn complete(subject: &str, owner: &str) -> EntityState {
    let kind = subject.split('/').next().unwrap();
    let e = event(
        &format!("{kind}.created"),
        Some(subject),
        json!({"stage": "draft", "owner": owner, "brief": "Fall launch brief", "deadline": "2026-12-01"}),
    );
    entity_after(&e, None)
}

#[test]
/// Each example rule's behaviour is specified by its `*.test.toml` beside it
/// (run by `converge rules test`); here, that they all compile together.
fn the_example_rules_compile_in_order() {
    let set = example_rules();
    let names: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "channel_approval",
            "convergence_gate",
            "launch_readiness",
            "launch_window",
            "low_consistency_pause",
            "required_fields",
            "review_point_digest",
            "rework_counting",
            "stalled_handoff",
            "weekly_review"
        ]
    );
}

#[test]
fn required_fields_escalates_what_is_missing() {
    let set = example_rules();

    let e = event("task.updated", Some("task/T-1"), json!({"stage": "draft"}));
    let mut state = entity_after(&e, None);
    assert_eq!(
        run(&set, &e, Some(&mut state)),
        vec![
            set_field(
                "required_fields",
                "missing_fields",
                json!(["brief", "deadline", "owner"])
            ),
            escalate(
                "required_fields",
                "ops_exceptions",
                "task/T-1 is missing required fields: brief, deadline, owner",
                1
            )
        ]
    );
    // Kept on the task, so the next event does not escalate it again.
    let e = event("task.commented", Some("task/T-1"), json!({}));
    let mut state = entity_after(&e, Some(state));
    assert_eq!(run(&set, &e, Some(&mut state)), vec![]);

    let e = event(
        "campaign.updated",
        Some("campaign/c-7"),
        json!({"owner": "mia", "brief": "   ", "deadline": "2026-12-01"}),
    );
    let mut state = entity_after(&e, None);
    assert_eq!(
        run(&set, &e, Some(&mut state)),
        vec![
            set_field("required_fields", "missing_fields", json!(["brief"])),
            escalate(
                "required_fields",
                "mia",
                "campaign/c-7 is missing required fields: brief",
                1
            )
        ]
    );

    let e = event(
        "task.updated",
        Some("task/T-2"),
        json!({"priority": "high"}),
    );
    let mut state = entity_after(&e, Some(complete("task/T-2", "ana")));
    assert_eq!(run(&set, &e, Some(&mut state)), vec![]);

    let e = event(
        "asset.updated",
        Some("asset/A-1"),
        json!({"stage": "draft"}),
    );
    let mut state = entity_after(&e, None);
    assert_eq!(
        run(&set, &e, Some(&mut state)),
        vec![],
        "assets have no required fields"
    );

    let e = event("ping", None, json!({}));
    assert_eq!(run(&set, &e, None), vec![]);
}

#[test]
fn channel_approval_sends_rejected_channels_back_for_rework() {
    let set = example_rules();

    let e = event(
        "campaign.channel.updated",
        Some("campaign/c-42"),
        json!({"channel": "email", "stage": "rejected", "owner": "eve"}),
    );
    let mut state = entity_after(&e, Some(complete("campaign/c-42", "mia")));
    assert_eq!(
        run(&set, &e, Some(&mut state)),
        vec![
            set_field("channel_approval", "needs_rework", json!(true)),
            notify(
                "channel_approval",
                "eve",
                "campaign/c-42: the email channel was rejected and needs rework"
            ),
        ]
    );
    assert_eq!(state.fields["needs_rework"], json!(true));

    let e = event(
        "campaign.channel.updated",
        Some("campaign/c-42"),
        json!({"channel": "paid", "stage": "rejected"}),
    );
    let mut state = entity_after(&e, Some(state));
    assert_eq!(
        run(&set, &e, Some(&mut state)),
        vec![
            set_field("channel_approval", "needs_rework", json!(true)),
            notify(
                "channel_approval",
                "mia",
                "campaign/c-42: the paid channel was rejected and needs rework"
            ),
        ]
    );

    let e = event(
        "campaign.channel.updated",
        Some("campaign/c-42"),
        json!({"channel": "social", "stage": "approved", "owner": "sam"}),
    );
    let mut state = entity_after(&e, Some(state));
    assert_eq!(run(&set, &e, Some(&mut state)), vec![]);
}

#[test]
fn rework_counting_counts_returns_from_review_and_tells_the_owner_the_third_time() {
    let set = example_rules();
    let step = |stage: &str, state: Option<EntityState>| {
        let e = event(
            "asset.updated",
            Some("asset/A-9"),
            json!({"stage": stage, "owner": "lea"}),
        );
        let mut state = entity_after(&e, state);
        let decisions = run(&set, &e, Some(&mut state));
        (decisions, state)
    };
    let (d, state) = step("draft", None);
    assert_eq!(d, vec![], "a new draft is not rework");
    let mut state = Some(state);
    for round in 1..=3 {
        let (d, s) = step("review", state.take());
        assert_eq!(
            d,
            vec![set_field("rework_counting", "in_review", json!(true))]
        );
        let (d, s) = step("draft", Some(s));
        let mut expected = vec![
            set_field("rework_counting", "in_review", Value::Null),
            set_field("rework_counting", "rework_count", json!(round)),
        ];
        if round == 3 {
            expected.push(notify(
                "rework_counting",
                "lea",
                "asset/A-9 went back to draft for the 3rd time: check its brief",
            ));
        }
        assert_eq!(d, expected, "round {round}");
        assert_eq!(s.fields["rework_count"], json!(round));
        state = Some(s);
    }
    // Approved after review, then back to draft: not a return from review.
    let (_, s) = step("review", state);
    let (d, s) = step("approved", Some(s));
    assert_eq!(
        d,
        vec![set_field("rework_counting", "in_review", Value::Null)]
    );
    let (d, s) = step("draft", Some(s));
    assert_eq!(d, vec![]);
    assert_eq!(s.fields["rework_count"], json!(3));
}

#[test]
fn low_consistency_pause_pauses_the_channels_that_disagree() {
    let set = example_rules();
    let channel = |name: &str, offer: &str, state: Option<EntityState>| {
        let e = event(
            "campaign.channel.updated",
            Some("campaign/c-9"),
            json!({"channel": name, "offer_code": offer, "landing_url": "https://x.test/fall",
                   "key_message": "Save 25% on fall gear", "launch_at": "2026-11-24T09:00:00Z",
                   "segments": ["loyal", "new"]}),
        );
        let mut state = entity_after(&e, state);
        let decisions = run(&set, &e, Some(&mut state));
        (decisions, state)
    };
    let (d, s) = channel("email", "FALL25", Some(complete("campaign/c-9", "mia")));
    assert_eq!(d, vec![]);
    let (d, s) = channel("social", "FALL25", Some(s));
    assert_eq!(d, vec![]);
    // Offer agreement 2/3, everything else 1: score 0.4 * 2/3 + 0.6 = 0.8667.
    let (d, s) = channel("paid", "FALL20", Some(s));
    assert_eq!(d, vec![]);
    // A fourth channel with a third offer code: agreement 2/4, score
    // 0.4 * 0.5 + 0.6 = 0.8, not below the threshold.
    let (d, s) = channel("events", "FALL15", Some(s));
    assert_eq!(d, vec![]);
    // social moves to a fourth code: every channel differs, agreement 1/4,
    // score 0.4 * 0.25 + 0.6 = 0.7.
    let (d, s) = channel("social", "SPRING", Some(s));
    let reason = "consistency 70% is below 80% (failing: agreement)";
    assert_eq!(
        d,
        ["email", "events", "paid", "social"]
            .iter()
            .map(|c| pause(c, reason))
            .collect::<Vec<_>>(),
        "every offer code differs: no value is agreed, every channel is paused"
    );
    assert_eq!(s.channels["paid"].fields["paused"], json!(true));
    assert_eq!(s.channels["paid"].fields["paused_reason"], json!(reason));
    // Already paused channels are not paused again.
    let (d, _) = channel("email", "OTHER", Some(s));
    assert_eq!(d, vec![]);
}

fn pause(channel: &str, reason: &str) -> (String, DecisionKind) {
    (
        "low_consistency_pause".into(),
        DecisionKind::PauseChannel {
            channel: channel.into(),
            reason: reason.into(),
        },
    )
}

/// Every `rhai` example in the rule authors' guide compiles, so the page cannot
/// drift from what the engine accepts.
#[test]
fn the_examples_in_docs_rules_md_compile() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/rules.md");
    let page = std::fs::read_to_string(&path).expect("docs/rules.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```rhai") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(blocks.len() >= 10, "found {} examples", blocks.len());
    let sources = blocks
        .iter()
        .enumerate()
        .map(|(i, text)| RuleSource {
            name: format!("example_{i}"),
            path: path.clone(),
            source: text.clone(),
        })
        .collect();
    if let Err(errors) = RuleSet::compile(sources, &RuleLimits::default()) {
        panic!("docs/rules.md examples do not compile: {errors:#?}");
    }
}
