use converge_model::{EntityKey, RuleNote};
use converge_store::{
    ActionOutcome, Appended, Counts, NewDecision, OutcomeKind, PayloadJson, PendingAction,
    ProcessedEvent, SourceState, StoreError, WriteBatch,
};

use crate::helpers::{
    TestDb, action, appends, entity, event, failure, notify, processed_plain,
    processed_with_actions,
};

fn processing_stores_state_decisions_and_actions_and_advances_the_cursor(db: &TestDb) {
    let mut store = db.open();
    store
        .write(&appends(vec![event("/jira", "T-1"), event("/jira", "T-2")]))
        .unwrap();
    assert_eq!(store.processed_cursor().unwrap(), 0);
    let instance = store.instance().unwrap();

    let result = store
        .write(&WriteBatch {
            processed: vec![processed_with_actions(1, "T-1", "ana")],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(
        result.actions,
        vec![
            PendingAction {
                lease_token: None,
                id: 1,
                event_seq: 1,
                decision_id: 1,
                route: "slack".into(),
                plugin: "webhook-out".into(),
                payload: PayloadJson::stored(r#"{"route":"slack"}"#.into()),
                attempts: 0,
                next_attempt_at_ms: None,
                instance: Some(instance),
            },
            PendingAction {
                lease_token: None,
                id: 2,
                event_seq: 1,
                decision_id: 1,
                route: "mail".into(),
                plugin: "webhook-out".into(),
                payload: PayloadJson::stored(r#"{"route":"mail"}"#.into()),
                attempts: 0,
                next_attempt_at_ms: None,
                instance: Some(instance),
            },
        ]
    );
    assert_eq!(store.pending_actions(10).unwrap(), result.actions);
    assert_eq!(store.processed_cursor().unwrap(), 1);
    assert_eq!(
        store
            .events_after(store.processed_cursor().unwrap(), 10)
            .unwrap()[0]
            .seq,
        2,
        "the processed event is behind the cursor"
    );

    let key = EntityKey::parse("task/T-1").unwrap();
    assert_eq!(store.entity(&key).unwrap(), Some(entity("T-1", "review")));
    assert_eq!(
        store
            .entity(&EntityKey::parse("task/T-2").unwrap())
            .unwrap(),
        None
    );

    // A later event replaces the state.
    let mut later = processed_plain(2);
    later.entity = Some(entity("T-1", "approved").into());
    store
        .write(&WriteBatch {
            processed: vec![later],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(store.entity(&key).unwrap(), Some(entity("T-1", "approved")));
    assert_eq!(store.processed_cursor().unwrap(), 2);
}

fn one_batch_can_append_process_and_finish_actions(db: &TestDb) {
    let mut store = db.open();
    let result = store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            processed: vec![processed_with_actions(1, "T-1", "ana")],
            outcomes: vec![ActionOutcome {
                lease_token: None,
                action_id: 1,
                result: OutcomeKind::DeadLetter,
                attempts: 1,
                detail: "404".into(),
                finished_at_ms: 3_000,
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(result.actions.len(), 2);
    let pending = store.pending_actions(10).unwrap();
    assert_eq!(pending.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2]);
}

fn the_cursor_never_moves_back(db: &TestDb) {
    let mut store = db.open();
    let events = (1..=3).map(|i| event("/x", &format!("e-{i}"))).collect();
    store.write(&appends(events)).unwrap();
    store
        .write(&WriteBatch {
            processed: vec![processed_plain(3), processed_plain(1)],
            ..WriteBatch::default()
        })
        .unwrap();
    // Event 2 waits. SQLite's cursor is the highest processed seq (a single
    // daemon processes in order); PostgreSQL's stops before the oldest
    // unprocessed event, since daemons process partitions at their own pace.
    let expected = if db.is_postgres() { 1 } else { 3 };
    assert_eq!(store.processed_cursor().unwrap(), expected);
    store
        .write(&WriteBatch {
            processed: vec![processed_plain(2)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(store.processed_cursor().unwrap(), 3);
}

fn a_failing_write_rolls_back_the_whole_batch(db: &TestDb) {
    let mut store = db.open();
    store.write(&appends(vec![event("/jira", "T-1")])).unwrap();

    let err = store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-2"), event("/jira", "T-3")],
            processed: vec![processed_with_actions(1, "T-1", "ana"), processed_plain(42)],
            ..WriteBatch::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownEvent { seq: 42 }), "{err}");

    assert_eq!(
        store.events_after(0, 10).unwrap().len(),
        1,
        "appends rolled back"
    );
    assert_eq!(store.processed_cursor().unwrap(), 0);
    assert!(store.pending_actions(10).unwrap().is_empty());
    assert_eq!(
        store
            .entity(&EntityKey::parse("task/T-1").unwrap())
            .unwrap(),
        None
    );
    let trail = store.event_trail("/jira", "T-1").unwrap().unwrap();
    assert_eq!((trail.processed_at_ms, trail.decisions.len()), (None, 0));

    // The store is usable afterwards. SQLite gives the rolled-back seqs
    // again; PostgreSQL's sequences never go back, so its journal has a gap.
    let result = store.write(&appends(vec![event("/jira", "T-2")])).unwrap();
    let [Appended::New { seq }] = result.appended[..] else {
        panic!("{:?}", result.appended);
    };
    if db.is_postgres() {
        assert!(seq > 1, "{seq}");
    } else {
        assert_eq!(seq, 2);
    }
}

fn processing_an_event_twice_is_refused(db: &TestDb) {
    let mut store = db.open();
    store.write(&appends(vec![event("/jira", "T-1")])).unwrap();
    let batch = WriteBatch {
        processed: vec![processed_with_actions(1, "T-1", "ana")],
        ..WriteBatch::default()
    };
    store.write(&batch).unwrap();
    let err = store.write(&batch).unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyProcessed { seq: 1 }),
        "{err}"
    );
    assert_eq!(
        store.pending_actions(10).unwrap().len(),
        2,
        "no duplicate actions"
    );
}

fn an_event_named_twice_in_one_batch_is_refused(db: &TestDb) {
    let mut store = db.open();
    let err = store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            processed: vec![processed_plain(1), processed_plain(1)],
            ..WriteBatch::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyProcessed { seq: 1 }),
        "{err}"
    );
    assert_eq!(store.journal_head().unwrap(), 0);
}

fn an_entity_changed_twice_in_one_batch_keeps_the_last_state(db: &TestDb) {
    let mut store = db.open();
    let processed = ["review", "approved"]
        .into_iter()
        .zip(1..)
        .map(|(stage, seq)| ProcessedEvent {
            entity: Some(entity("T-1", stage).into()),
            ..processed_plain(seq)
        })
        .collect();
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1"), event("/jira", "T-1b")],
            processed,
            ..WriteBatch::default()
        })
        .unwrap();
    let key = EntityKey::parse("task/T-1").unwrap();
    assert_eq!(store.entity(&key).unwrap(), Some(entity("T-1", "approved")));
}

fn entities_are_read_by_the_page(db: &TestDb) {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1"), event("/jira", "T-2")],
            processed: vec![
                ProcessedEvent {
                    entity: Some(entity("T-1", "review").into()),
                    ..processed_plain(1)
                },
                ProcessedEvent {
                    entity: Some(entity("T-2", "draft").into()),
                    ..processed_plain(2)
                },
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    let keys: Vec<EntityKey> = ["task/T-2", "task/T-9", "task/T-1"]
        .into_iter()
        .map(|k| EntityKey::parse(k).unwrap())
        .collect();
    let mut states = store.entities(&keys).unwrap();
    states.sort_by_key(|s| s.key().to_string());
    assert_eq!(
        states,
        vec![entity("T-1", "review"), entity("T-2", "draft")]
    );
    assert!(store.entities(&[]).unwrap().is_empty());
}

fn an_outcome_for_an_unknown_action_rolls_back_the_batch(db: &TestDb) {
    let mut store = db.open();
    let err = store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            outcomes: vec![ActionOutcome {
                lease_token: None,
                action_id: 7,
                result: OutcomeKind::Done { external_id: None },
                attempts: 1,
                detail: String::new(),
                finished_at_ms: 3_000,
            }],
            ..WriteBatch::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownAction { id: 7 }), "{err}");
    assert!(store.events_after(0, 10).unwrap().is_empty());
}

fn pending_actions_page_by_id(db: &TestDb) {
    let mut store = db.open();
    let decisions = (0..5)
        .map(|i| NewDecision {
            decision: notify("r", &format!("p{i}")),
            shadow: false,
            actions: vec![action("slack")],
        })
        .collect();
    let mut processed = processed_plain(1);
    processed.decisions = decisions;
    store
        .write(&WriteBatch {
            appends: vec![event("/x", "e")],
            processed: vec![processed],
            ..WriteBatch::default()
        })
        .unwrap();
    let first = store.pending_actions(2).unwrap();
    assert_eq!(first.iter().map(|a| a.id).collect::<Vec<_>>(), vec![1, 2]);
    let next = store.pending_actions_after(2, 10).unwrap();
    assert_eq!(next.iter().map(|a| a.id).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(
        next.iter().map(|a| a.decision_id).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
}

fn entities_are_listed_in_key_order_a_page_at_a_time(db: &TestDb) {
    let mut store = db.open();
    let ids = ["T-3", "T-1", "T-2"];
    let events = ids.iter().map(|id| event("/jira", id)).collect();
    let processed = ids
        .iter()
        .zip(1..)
        .map(|(id, seq)| {
            let mut p = processed_plain(seq);
            p.entity = Some(entity(id, "review").into());
            p
        })
        .collect();
    store
        .write(&WriteBatch {
            appends: events,
            processed,
            ..WriteBatch::default()
        })
        .unwrap();

    let first = store.entities_after(None, 2).unwrap();
    assert_eq!(
        first.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["T-1", "T-2"]
    );
    let rest = store.entities_after(Some(&first[1].key()), 2).unwrap();
    assert_eq!(
        rest.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["T-3"]
    );
}

fn counts_follow_the_journal_and_the_outbox(db: &TestDb) {
    let mut store = db.open();
    assert_eq!(store.counts().unwrap(), Counts::default());

    let events = (1..=4).map(|i| event("/x", &format!("e-{i}"))).collect();
    store.write(&appends(events)).unwrap();
    store
        .write(&WriteBatch {
            processed: vec![
                processed_with_actions(1, "e-1", "ana"),
                processed_with_actions(2, "e-2", "bo"),
            ],
            outcomes: vec![],
            ..WriteBatch::default()
        })
        .unwrap();
    let finish = |action_id, result| ActionOutcome {
        lease_token: None,
        action_id,
        result,
        attempts: 1,
        detail: String::new(),
        finished_at_ms: 3_000,
    };
    store
        .write(&WriteBatch {
            outcomes: vec![
                finish(1, OutcomeKind::Done { external_id: None }),
                finish(2, OutcomeKind::DeadLetter),
                finish(
                    3,
                    OutcomeKind::Retry {
                        next_attempt_at_ms: 9_000,
                    },
                ),
                // A late duplicate is not counted twice.
                finish(1, OutcomeKind::Done { external_id: None }),
            ],
            ..WriteBatch::default()
        })
        .unwrap();

    let expected = Counts {
        events: 4,
        unprocessed_events: 2,
        decisions: 2,
        actions_pending: 2,
        actions_done: 1,
        actions_dead_lettered: 1,
        dead_letters: 1,
    };
    assert_eq!(store.counts().unwrap(), expected);
    assert_eq!(db.reader().counts().unwrap(), expected);
}

/// A decision as a trail shows it: id, rule, shadow, its actions' ids and routes.
type DecisionSummary = (i64, String, bool, Vec<(i64, String)>);

/// Several events in one batch, each with several decisions, some with
/// several actions: every action stays with its decision, and ids follow
/// the batch's order (events, their decisions, their actions).
fn several_events_in_one_batch_keep_each_action_with_its_decision(db: &TestDb) {
    let mut store = db.open();
    let decided = |rule: &str, shadow: bool, routes: &[&str]| NewDecision {
        decision: notify(rule, "ana"),
        shadow,
        actions: routes.iter().map(|r| action(r)).collect(),
    };
    let result = store
        .write(&WriteBatch {
            appends: vec![
                event("/jira", "T-1"),
                event("/jira", "T-2"),
                event("/jira", "T-3"),
            ],
            processed: vec![
                ProcessedEvent {
                    decisions: vec![
                        decided("a", false, &["slack", "mail"]),
                        decided("b", true, &[]),
                        decided("c", false, &["sms"]),
                    ],
                    rule_failures: vec![failure("slow")],
                    ..processed_plain(1)
                },
                ProcessedEvent {
                    rule_failures: vec![failure("broken"), failure("slow")],
                    rule_notes: vec![
                        RuleNote {
                            rule: "slow".into(),
                            message: "checked 3 channels".into(),
                        },
                        RuleNote {
                            rule: "broken".into(),
                            message: "about to fail".into(),
                        },
                    ],
                    ..processed_plain(2)
                },
                ProcessedEvent {
                    decisions: vec![decided("e", false, &["pager"]), decided("f", false, &[])],
                    ..processed_plain(3)
                },
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    let made: Vec<(i64, i64, i64, &str)> = result
        .actions
        .iter()
        .map(|a| (a.id, a.event_seq, a.decision_id, a.route.as_str()))
        .collect();
    assert_eq!(
        made,
        [
            (1, 1, 1, "slack"),
            (2, 1, 1, "mail"),
            (3, 1, 3, "sms"),
            (4, 3, 4, "pager")
        ]
    );
    assert_eq!(store.pending_actions(10).unwrap(), result.actions);
    // What the rules printed stays with its event, in order.
    let notes: Vec<(String, String)> = store
        .event_trail("/jira", "T-2")
        .unwrap()
        .unwrap()
        .rule_notes
        .into_iter()
        .map(|n| (n.rule, n.message))
        .collect();
    assert_eq!(
        notes,
        [
            ("slow".to_string(), "checked 3 channels".to_string()),
            ("broken".to_string(), "about to fail".to_string())
        ]
    );
    assert!(
        store
            .event_trail("/jira", "T-1")
            .unwrap()
            .unwrap()
            .rule_notes
            .is_empty()
    );

    let summary = |id: &str| {
        let trail = store.event_trail("/jira", id).unwrap().unwrap();
        let decisions: Vec<DecisionSummary> = trail
            .decisions
            .iter()
            .map(|d| {
                (
                    d.id,
                    d.decision.rule.clone(),
                    d.shadow,
                    d.actions.iter().map(|a| (a.id, a.route.clone())).collect(),
                )
            })
            .collect();
        let failures: Vec<String> = trail.rule_failures.into_iter().map(|f| f.rule).collect();
        (decisions, failures)
    };
    let owned = |pairs: &[(i64, &str)]| -> Vec<(i64, String)> {
        pairs.iter().map(|(id, r)| (*id, r.to_string())).collect()
    };
    assert_eq!(
        summary("T-1"),
        (
            vec![
                (1, "a".into(), false, owned(&[(1, "slack"), (2, "mail")])),
                (2, "b".into(), true, vec![]),
                (3, "c".into(), false, owned(&[(3, "sms")])),
            ],
            vec!["slow".into()]
        )
    );
    assert_eq!(
        summary("T-2"),
        (vec![], vec!["broken".to_string(), "slow".to_string()])
    );
    assert_eq!(
        summary("T-3"),
        (
            vec![
                (4, "e".into(), false, owned(&[(4, "pager")])),
                (5, "f".into(), false, vec![]),
            ],
            vec![]
        )
    );
    assert_eq!(store.counts().unwrap().decisions, 5);
}

/// Source state written twice in one batch keeps the last value.
fn the_last_source_state_of_a_key_in_a_batch_wins(db: &TestDb) {
    let mut store = db.open();
    let state = |key: &str, value: &str| SourceState {
        key: key.into(),
        value: value.into(),
        updated_at_ms: 1_000,
    };
    store
        .write(&WriteBatch {
            source_state: vec![
                state("poll/jira", "cursor-1"),
                state("hook/github", "secret"),
                state("poll/jira", "cursor-2"),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    store
        .write(&WriteBatch {
            source_state: vec![state("poll/jira", "cursor-3")],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(
        store.source_state("poll/jira").unwrap().as_deref(),
        Some("cursor-3")
    );
    assert_eq!(
        store.source_state("hook/github").unwrap().as_deref(),
        Some("secret")
    );
    assert_eq!(store.source_state("poll/other").unwrap(), None);
}

conformance!(
    processing_stores_state_decisions_and_actions_and_advances_the_cursor,
    one_batch_can_append_process_and_finish_actions,
    the_cursor_never_moves_back,
    a_failing_write_rolls_back_the_whole_batch,
    processing_an_event_twice_is_refused,
    an_event_named_twice_in_one_batch_is_refused,
    an_entity_changed_twice_in_one_batch_keeps_the_last_state,
    entities_are_read_by_the_page,
    an_outcome_for_an_unknown_action_rolls_back_the_batch,
    pending_actions_page_by_id,
    entities_are_listed_in_key_order_a_page_at_a_time,
    counts_follow_the_journal_and_the_outbox,
    several_events_in_one_batch_keep_each_action_with_its_decision,
    the_last_source_state_of_a_key_in_a_batch_wins,
);
