use converge_store::{ActionHistoryKind, ActionOutcome, ActionStatus, OutcomeKind, WriteBatch};

use crate::helpers::{TestDb, event, processed_with_actions};

fn outcome(action_id: i64, result: OutcomeKind, attempts: u32, detail: &str) -> ActionOutcome {
    ActionOutcome {
        lease_token: None,
        action_id,
        result,
        attempts,
        detail: detail.into(),
        finished_at_ms: 5_000,
    }
}

fn outcomes(outcomes: Vec<ActionOutcome>) -> WriteBatch {
    WriteBatch {
        outcomes,
        ..WriteBatch::default()
    }
}

/// Two events, each with two pending actions: ids 1, 2 (event 1) and 3, 4.
fn store_with_four_actions(db: &TestDb) -> converge_store::Store {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1"), event("/jira", "T-2")],
            processed: vec![
                processed_with_actions(1, "T-1", "ana"),
                processed_with_actions(2, "T-2", "bo"),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    store
}

fn done_and_dead_lettered_leave_the_outbox_and_retry_stays(db: &TestDb) {
    let mut store = store_with_four_actions(db);
    store
        .write(&outcomes(vec![
            outcome(
                1,
                OutcomeKind::Done {
                    external_id: Some("msg-9".into()),
                },
                1,
                "200",
            ),
            outcome(2, OutcomeKind::DeadLetter, 5, "gave up after 5 attempts"),
            outcome(
                3,
                OutcomeKind::Retry {
                    next_attempt_at_ms: 60_000,
                },
                2,
                "503",
            ),
        ]))
        .unwrap();

    let pending = store.pending_actions(10).unwrap();
    assert_eq!(pending.iter().map(|a| a.id).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(
        (pending[0].attempts, pending[0].next_attempt_at_ms),
        (2, Some(60_000))
    );
    assert_eq!(
        (pending[1].attempts, pending[1].next_attempt_at_ms),
        (0, None)
    );

    let trail = store.event_trail("/jira", "T-1").unwrap().unwrap();
    let actions = &trail.decisions[0].actions;
    assert_eq!(actions[0].status, ActionStatus::Done);
    assert_eq!(actions[0].external_id.as_deref(), Some("msg-9"));
    assert_eq!(actions[0].detail.as_deref(), Some("200"));
    assert_eq!(actions[0].finished_at_ms, Some(5_000));
    assert_eq!(
        (actions[1].status, actions[1].attempts),
        (ActionStatus::DeadLetter, 5)
    );

    let trail = store.event_trail("/jira", "T-2").unwrap().unwrap();
    let retried = &trail.decisions[0].actions[0];
    assert_eq!(retried.status, ActionStatus::Pending);
    assert_eq!(retried.detail.as_deref(), Some("503"));
    assert_eq!(retried.next_attempt_at_ms, Some(60_000));
    assert_eq!(retried.finished_at_ms, None);
}

fn a_retried_action_can_finish_later(db: &TestDb) {
    let mut store = store_with_four_actions(db);
    store
        .write(&outcomes(vec![outcome(
            4,
            OutcomeKind::Retry {
                next_attempt_at_ms: 60_000,
            },
            1,
            "timeout",
        )]))
        .unwrap();
    store
        .write(&outcomes(vec![outcome(
            4,
            OutcomeKind::Done { external_id: None },
            2,
            "",
        )]))
        .unwrap();
    let action = &store
        .event_trail("/jira", "T-2")
        .unwrap()
        .unwrap()
        .decisions[0]
        .actions[1];
    assert_eq!(action.status, ActionStatus::Done);
    assert_eq!(action.attempts, 2);
    assert_eq!(action.detail, None, "an empty detail is no detail");
    assert_eq!(action.next_attempt_at_ms, None);
}

fn a_late_outcome_does_not_reopen_a_finished_action(db: &TestDb) {
    let mut store = store_with_four_actions(db);
    store
        .write(&outcomes(vec![outcome(
            1,
            OutcomeKind::Done { external_id: None },
            1,
            "ok",
        )]))
        .unwrap();
    store
        .write(&outcomes(vec![
            outcome(
                1,
                OutcomeKind::Retry {
                    next_attempt_at_ms: 1,
                },
                2,
                "late",
            ),
            outcome(1, OutcomeKind::DeadLetter, 3, "late"),
        ]))
        .unwrap();
    let action = &store
        .event_trail("/jira", "T-1")
        .unwrap()
        .unwrap()
        .decisions[0]
        .actions[0];
    assert_eq!(
        (action.status, action.attempts, action.detail.as_deref()),
        (ActionStatus::Done, 1, Some("ok"))
    );
    assert!(!store.pending_actions(10).unwrap().iter().any(|a| a.id == 1));
}

/// Several outcomes for one action in one batch apply in their order, as
/// if written one by one: failed attempts, then success; an outcome after
/// the action finished is ignored.
fn several_outcomes_for_one_action_in_one_batch_apply_in_order(db: &TestDb) {
    let mut store = store_with_four_actions(db);
    let retry = |id, attempts, detail| {
        outcome(
            id,
            OutcomeKind::Retry {
                next_attempt_at_ms: 60_000,
            },
            attempts,
            detail,
        )
    };
    let result = store
        .write(&outcomes(vec![
            retry(1, 1, "503"),
            outcome(2, OutcomeKind::Done { external_id: None }, 1, ""),
            retry(1, 2, "timeout"),
            outcome(3, OutcomeKind::DeadLetter, 1, "404"),
            outcome(
                1,
                OutcomeKind::Done {
                    external_id: Some("msg-1".into()),
                },
                3,
                "200",
            ),
            outcome(2, OutcomeKind::DeadLetter, 2, "late"),
            retry(3, 2, "late"),
        ]))
        .unwrap();
    assert_eq!(result.dead_lettered, 1);
    assert!(result.outcomes_fenced.is_empty());

    let first = store.action(1).unwrap().unwrap();
    assert_eq!(
        (
            first.action.status,
            first.action.attempts,
            first.action.detail.as_deref(),
            first.action.external_id.as_deref(),
            first.action.next_attempt_at_ms
        ),
        (ActionStatus::Done, 3, Some("200"), Some("msg-1"), None)
    );
    let history: Vec<(ActionHistoryKind, u32, Option<String>)> = first
        .action
        .history
        .into_iter()
        .map(|h| (h.kind, h.attempts, h.detail))
        .collect();
    assert_eq!(
        history,
        vec![
            (ActionHistoryKind::AttemptFailed, 1, Some("503".into())),
            (ActionHistoryKind::AttemptFailed, 2, Some("timeout".into())),
        ]
    );
    assert_eq!(
        store.action(2).unwrap().unwrap().action.status,
        ActionStatus::Done
    );
    let third = store.action(3).unwrap().unwrap();
    assert_eq!(
        (third.action.status, third.action.history.len()),
        (ActionStatus::DeadLetter, 1)
    );
    let counts = store.counts().unwrap();
    assert_eq!(
        (
            counts.actions_done,
            counts.actions_dead_lettered,
            counts.actions_pending
        ),
        (2, 1, 1)
    );
}

conformance!(
    done_and_dead_lettered_leave_the_outbox_and_retry_stays,
    a_retried_action_can_finish_later,
    a_late_outcome_does_not_reopen_a_finished_action,
    several_outcomes_for_one_action_in_one_batch_apply_in_order,
);
