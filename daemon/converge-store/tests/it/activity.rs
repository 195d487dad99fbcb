//! What the rules did lately: the newest rule failures, and each rule's
//! decisions and failures since a time.

use converge_model::RuleFailure;
use converge_store::{
    NewDecision, NewEvent, ProcessedEvent, RecentRuleFailure, RuleActivity, WriteBatch,
};

use crate::helpers::{TestDb, event, notify, processed_plain};

/// An event received at `at_ms`.
fn received(id: &str, at_ms: i64) -> NewEvent {
    NewEvent {
        hook: None,
        received_at_ms: at_ms,
        ..event("/jira", id)
    }
}

fn failed(rule: &str, message: &str) -> RuleFailure {
    RuleFailure {
        rule: rule.into(),
        rule_hash: format!("{rule}-hash"),
        message: message.into(),
    }
}

fn decided(rule: &str, shadow: bool) -> NewDecision {
    NewDecision {
        decision: notify(rule, "ana"),
        shadow,
        actions: vec![],
    }
}

/// Processing of `seq` that made `decisions` and had `failures`.
fn processed(seq: i64, decisions: Vec<NewDecision>, failures: Vec<RuleFailure>) -> ProcessedEvent {
    ProcessedEvent {
        decisions,
        rule_failures: failures,
        ..processed_plain(seq)
    }
}

fn recent_rule_failures_are_the_newest_first_with_their_events(db: &TestDb) {
    let mut store = db.open();
    assert_eq!(store.recent_rule_failures(10).unwrap(), []);
    store
        .write(&WriteBatch {
            appends: vec![
                received("T-1", 1_000),
                NewEvent {
                    hook: None,
                    source: "converge/timers".into(),
                    ty: "task.late".into(),
                    subject: None,
                    ..received("timer-7", 2_000)
                },
                received("T-3", 3_000),
            ],
            processed: vec![
                processed(
                    1,
                    vec![],
                    vec![failed("slow", "timed out"), failed("broken", "x")],
                ),
                processed(3, vec![decided("stalled", false)], vec![]),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    // Event 2 is processed after event 3: its failure is the newest.
    store
        .write(&WriteBatch {
            processed: vec![processed(2, vec![], vec![failed("late", "no due date")])],
            ..WriteBatch::default()
        })
        .unwrap();

    let failure = |seq: i64, id: &str, rule: &str, message: &str| RecentRuleFailure {
        event_seq: seq,
        event_id: id.into(),
        event_source: "/jira".into(),
        event_type: "task.updated".into(),
        subject: Some(format!("task/{id}")),
        received_at_ms: seq * 1_000,
        rule: rule.into(),
        message: message.into(),
    };
    let late = RecentRuleFailure {
        event_seq: 2,
        event_id: "timer-7".into(),
        event_source: "converge/timers".into(),
        event_type: "task.late".into(),
        subject: None,
        received_at_ms: 2_000,
        rule: "late".into(),
        message: "no due date".into(),
    };
    let reader = db.reader();
    assert_eq!(
        reader.recent_rule_failures(2).unwrap(),
        [late.clone(), failure(1, "T-1", "broken", "x")]
    );
    assert_eq!(
        reader.recent_rule_failures(10).unwrap(),
        [
            late,
            failure(1, "T-1", "broken", "x"),
            failure(1, "T-1", "slow", "timed out"),
        ]
    );
    assert_eq!(reader.recent_rule_failures(0).unwrap(), []);

    // What the console receives.
    let json = serde_json::to_value(&reader.recent_rule_failures(1).unwrap()[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "event_seq": 2,
            "event_id": "timer-7",
            "event_source": "converge/timers",
            "event_type": "task.late",
            "subject": null,
            "received_at_ms": 2_000,
            "rule": "late",
            "message": "no due date",
        })
    );
}

fn activity(rule: &str, shadow: bool, decisions: i64, failures: i64) -> RuleActivity {
    RuleActivity {
        rule: rule.into(),
        shadow,
        decisions,
        failures,
    }
}

fn rule_activity_counts_each_rules_decisions_and_failures_since_a_time(db: &TestDb) {
    let mut store = db.open();
    assert_eq!(store.rule_activity(0).unwrap(), []);
    store
        .write(&WriteBatch {
            appends: vec![
                received("e-1", 1_000),
                received("e-2", 2_000),
                received("e-3", 3_000),
                received("e-4", 3_000),
                received("e-5", 4_000),
                // Journaled, not processed yet: nothing to count.
                received("e-6", 5_000),
            ],
            processed: vec![
                processed(
                    1,
                    vec![decided("stalled", false), decided("old", false)],
                    vec![failed("welcome", "x")],
                ),
                processed(
                    2,
                    vec![decided("stalled", false), decided("welcome", true)],
                    vec![],
                ),
                processed(
                    3,
                    vec![
                        decided("stalled", false),
                        decided("stalled", false),
                        decided("moved", false),
                    ],
                    vec![failed("broken", "x")],
                ),
                processed(4, vec![], vec![failed("stalled", "x")]),
                // `moved` now runs in shadow; `welcome` fails as well.
                processed(
                    5,
                    vec![decided("moved", true), decided("welcome", true)],
                    vec![
                        failed("broken", "x"),
                        failed("moved", "x"),
                        failed("welcome", "x"),
                    ],
                ),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    let reader = db.reader();

    assert_eq!(
        reader.rule_activity(0).unwrap(),
        [
            activity("broken", false, 0, 2),
            activity("moved", false, 1, 1),
            activity("moved", true, 1, 0),
            activity("old", false, 1, 0),
            activity("stalled", false, 4, 1),
            activity("welcome", true, 2, 2),
        ]
    );
    // From e-2 on: e-1's decisions and failure are left out.
    assert_eq!(
        reader.rule_activity(2_000).unwrap(),
        [
            activity("broken", false, 0, 2),
            activity("moved", false, 1, 1),
            activity("moved", true, 1, 0),
            activity("stalled", false, 3, 1),
            activity("welcome", true, 2, 1),
        ]
    );
    // At or after: both events received at 3 000 count.
    assert_eq!(
        reader.rule_activity(3_000).unwrap(),
        [
            activity("broken", false, 0, 2),
            activity("moved", false, 1, 1),
            activity("moved", true, 1, 0),
            activity("stalled", false, 2, 1),
            activity("welcome", true, 1, 1),
        ]
    );
    // Only e-5: `moved` has only shadow decisions, so its failure goes there.
    assert_eq!(
        reader.rule_activity(3_001).unwrap(),
        [
            activity("broken", false, 0, 1),
            activity("moved", true, 1, 1),
            activity("welcome", true, 1, 1),
        ]
    );
    assert_eq!(reader.rule_activity(4_001).unwrap(), []);
    assert_eq!(reader.rule_activity(i64::MAX).unwrap(), []);

    let json = serde_json::to_value(activity("moved", true, 1, 1)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"rule": "moved", "shadow": true, "decisions": 1, "failures": 1})
    );
}

conformance!(
    recent_rule_failures_are_the_newest_first_with_their_events,
    rule_activity_counts_each_rules_decisions_and_failures_since_a_time,
);
