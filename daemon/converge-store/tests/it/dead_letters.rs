//! Dead letters: actions that failed for good wait for a person, who retries
//! (same action, fresh attempts) or drops them; each step is in the
//! action's history.

use converge_store::{
    ActionHistoryKind, ActionOutcome, ActionStatus, DeadLetterChange, DeadLetterOp,
    DeadLetterOutcome, OutcomeKind, WriteBatch,
};

use crate::helpers::{TestDb, event, processed_with_actions};

fn outcome(action_id: i64, result: OutcomeKind, attempts: u32, detail: &str) -> ActionOutcome {
    ActionOutcome {
        lease_token: None,
        action_id,
        result,
        attempts,
        detail: detail.into(),
        finished_at_ms: 5_000 + i64::from(attempts),
    }
}

fn change(action_id: i64, op: DeadLetterOp) -> DeadLetterChange {
    DeadLetterChange {
        action_id,
        op,
        by: "mia".into(),
        reason: "the receiver is fixed".into(),
        at_ms: 9_000,
    }
}

/// One event, about `task/T-1`, with two pending actions (ids 1 and 2).
fn store_with_two_actions(db: &TestDb) -> converge_store::Store {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            processed: vec![processed_with_actions(1, "T-1", "ana")],
            ..WriteBatch::default()
        })
        .unwrap();
    store
}

/// [`store_with_two_actions`], action 1 failed twice, then for good.
fn store_with_a_dead_letter(db: &TestDb) -> converge_store::Store {
    let mut store = store_with_two_actions(db);
    let retry = OutcomeKind::Retry {
        next_attempt_at_ms: 6_000,
    };
    store
        .write(&WriteBatch {
            outcomes: vec![
                outcome(1, retry.clone(), 1, "HTTP 503"),
                outcome(1, retry, 2, "HTTP 503"),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    let written = store
        .write(&WriteBatch {
            outcomes: vec![outcome(
                1,
                OutcomeKind::DeadLetter,
                3,
                "unauthorized: HTTP 401",
            )],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(written.dead_lettered, 1);
    store
}

fn a_dead_letter_is_listed_with_its_error_and_history(db: &TestDb) {
    let store = store_with_a_dead_letter(db);
    let listed = db.reader().dead_letters(0, 10).unwrap();
    assert_eq!(listed.len(), 1);
    let dead = &listed[0];
    assert_eq!(
        (dead.action.id, dead.action.status, dead.action.attempts),
        (1, ActionStatus::DeadLetter, 3)
    );
    assert_eq!(
        dead.action.detail.as_deref(),
        Some("unauthorized: HTTP 401")
    );
    assert_eq!(
        (dead.event_id.as_str(), dead.event_source.as_str()),
        ("T-1", "/jira")
    );
    assert_eq!(
        (dead.decision_kind.as_str(), dead.rule.as_str()),
        ("notify", "stalled")
    );
    assert!(
        dead.action.history.is_empty(),
        "the list leaves histories out"
    );
    assert!(db.reader().dead_letters(1, 10).unwrap().is_empty());
    assert_eq!(store.counts().unwrap().dead_letters, 1);

    let shown = store.action(1).unwrap().unwrap();
    let history: Vec<(ActionHistoryKind, u32, Option<&str>)> = shown
        .action
        .history
        .iter()
        .map(|h| (h.kind, h.attempts, h.detail.as_deref()))
        .collect();
    assert_eq!(
        history,
        [
            (ActionHistoryKind::AttemptFailed, 1, Some("HTTP 503")),
            (ActionHistoryKind::AttemptFailed, 2, Some("HTTP 503")),
            (
                ActionHistoryKind::DeadLettered,
                3,
                Some("unauthorized: HTTP 401")
            ),
        ]
    );
    // The trail shows the same history.
    let trail = store.event_trail("/jira", "T-1").unwrap().unwrap();
    assert_eq!(trail.decisions[0].actions[0].history, shown.action.history);
    assert!(store.action(99).unwrap().is_none());
}

fn a_retried_dead_letter_is_pending_again_with_a_fresh_budget(db: &TestDb) {
    let mut store = store_with_a_dead_letter(db);
    let written = store
        .write(&WriteBatch {
            dead_letters: vec![change(1, DeadLetterOp::Retry)],
            ..WriteBatch::default()
        })
        .unwrap();
    let [DeadLetterOutcome::Retried(action)] = written.dead_letters.as_slice() else {
        panic!("{:?}", written.dead_letters);
    };
    assert_eq!(
        (action.id, action.attempts, action.next_attempt_at_ms),
        (1, 0, None)
    );
    assert_eq!(action.route, "slack");
    let pending: Vec<i64> = store
        .pending_actions(10)
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(pending, [1, 2]);
    assert_eq!(store.counts().unwrap().dead_letters, 0);
    let shown = store.action(1).unwrap().unwrap();
    assert_eq!(shown.action.finished_at_ms, None);
    let retried = shown.action.history.last().unwrap();
    assert_eq!(
        (
            retried.kind,
            retried.attempts,
            retried.by.as_deref(),
            retried.reason.as_deref(),
            retried.at_ms
        ),
        (
            ActionHistoryKind::Retried,
            3,
            Some("mia"),
            Some("the receiver is fixed"),
            9_000
        )
    );

    // Retrying again is refused: it is no longer a dead letter.
    let written = store
        .write(&WriteBatch {
            dead_letters: vec![
                change(1, DeadLetterOp::Retry),
                change(7, DeadLetterOp::Drop),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(
        written.dead_letters,
        [
            DeadLetterOutcome::NotDeadLetter {
                status: ActionStatus::Pending
            },
            DeadLetterOutcome::Unknown
        ]
    );
    // It can finish, and fail for good again.
    store
        .write(&WriteBatch {
            outcomes: vec![outcome(1, OutcomeKind::DeadLetter, 1, "still 401")],
            ..WriteBatch::default()
        })
        .unwrap();
    let counts = store.counts().unwrap();
    assert_eq!((counts.dead_letters, counts.actions_dead_lettered), (1, 2));
}

fn a_dropped_dead_letter_never_runs_and_says_who_dropped_it(db: &TestDb) {
    let mut store = store_with_a_dead_letter(db);
    let written = store
        .write(&WriteBatch {
            dead_letters: vec![change(1, DeadLetterOp::Drop)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(written.dead_letters, [DeadLetterOutcome::Dropped]);
    let pending: Vec<i64> = store
        .pending_actions(10)
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(pending, [2]);
    let shown = store.action(1).unwrap().unwrap();
    assert_eq!(shown.action.status, ActionStatus::Dropped);
    assert_eq!(shown.action.finished_at_ms, Some(9_000));
    assert_eq!(
        shown.action.history.last().unwrap().kind,
        ActionHistoryKind::Dropped
    );
    assert!(store.dead_letters(0, 10).unwrap().is_empty());
    // A late outcome does not bring it back.
    store
        .write(&WriteBatch {
            outcomes: vec![outcome(1, OutcomeKind::Done { external_id: None }, 4, "")],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(
        store.action(1).unwrap().unwrap().action.status,
        ActionStatus::Dropped
    );
}

/// A payload is what a plugin is called with: kept while its action may
/// run (pending, or a dead letter a person may retry), gone once it is done
/// or dropped. The key a payload named outlives it.
fn an_action_keeps_its_payload_only_while_it_may_run(db: &TestDb) {
    let mut store = db.open();
    let mut processed = processed_with_actions(1, "T-1", "ana");
    processed.decisions[0].actions[1].payload_key = Some("converge-send-7-ab12".into());
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            processed: vec![processed],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(db.kept_payloads(), [1, 2]);
    let pending = store.pending_actions(10).unwrap();
    assert_eq!(pending[1].payload.as_str(), r#"{"route":"mail"}"#);

    let done = OutcomeKind::Done { external_id: None };
    store
        .write(&WriteBatch {
            outcomes: vec![
                outcome(2, done, 1, "HTTP 200"),
                outcome(1, OutcomeKind::DeadLetter, 1, "HTTP 401"),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(db.kept_payloads(), [1], "the dead letter's stays");
    let sent = db.reader().action(2).unwrap().unwrap().action;
    assert_eq!(
        sent.idempotency_key(),
        converge_store::idempotency_key(2, sent.instance, Some("converge-send-7-ab12"))
    );
    assert_eq!(sent.payload_key.as_deref(), Some("converge-send-7-ab12"));

    let written = store
        .write(&WriteBatch {
            dead_letters: vec![change(1, DeadLetterOp::Retry)],
            ..WriteBatch::default()
        })
        .unwrap();
    let [DeadLetterOutcome::Retried(retried)] = written.dead_letters.as_slice() else {
        panic!("{:?}", written.dead_letters);
    };
    assert_eq!(retried.payload.as_str(), r#"{"route":"slack"}"#);

    store
        .write(&WriteBatch {
            outcomes: vec![outcome(1, OutcomeKind::DeadLetter, 1, "HTTP 401")],
            ..WriteBatch::default()
        })
        .unwrap();
    store
        .write(&WriteBatch {
            dead_letters: vec![change(1, DeadLetterOp::Drop)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(db.kept_payloads(), Vec::<i64>::new());
    assert!(
        db.reader()
            .coherence()
            .unwrap()
            .iter()
            .all(|c| c.problem.is_none())
    );
}

/// Actions waiting for another attempt after a failure: what the console
/// shows as retrying, each failing since its first failed attempt after a
/// person's last retry.
fn retrying_actions_are_listed_the_next_to_be_tried_first(db: &TestDb) {
    let mut store = store_with_two_actions(db);
    assert!(
        store.retrying_actions(10).unwrap().is_empty(),
        "none failed yet"
    );
    let retry = |next_attempt_at_ms| OutcomeKind::Retry { next_attempt_at_ms };
    store
        .write(&WriteBatch {
            outcomes: vec![
                outcome(1, retry(6_000), 1, "HTTP 503"),
                outcome(2, retry(6_500), 1, "timed out"),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    store
        .write(&WriteBatch {
            outcomes: vec![outcome(1, retry(7_000), 2, "HTTP 502")],
            ..WriteBatch::default()
        })
        .unwrap();
    let listed = |store: &converge_store::Store, limit| -> Vec<(i64, u32, String, Option<i64>)> {
        store
            .retrying_actions(limit)
            .unwrap()
            .into_iter()
            .map(|r| {
                let a = r.detail.action;
                (
                    a.id,
                    a.attempts,
                    a.detail.unwrap_or_default(),
                    r.failing_since_ms,
                )
            })
            .collect()
    };
    assert_eq!(
        listed(&store, 10),
        [
            (2, 1, "timed out".to_string(), Some(5_001)),
            (1, 2, "HTTP 502".to_string(), Some(5_001)),
        ]
    );
    assert_eq!(listed(&store, 1).len(), 1);
    let first = &store.retrying_actions(1).unwrap()[0].detail;
    assert_eq!(
        (
            first.event_id.as_str(),
            first.subject.as_deref(),
            first.rule.as_str()
        ),
        ("T-1", Some("task/T-1"), "stalled")
    );

    // Dead-lettered, it is no longer retrying; retried by a person and
    // failing again, it fails since then, not since its first life.
    store
        .write(&WriteBatch {
            outcomes: vec![
                outcome(1, OutcomeKind::DeadLetter, 3, "HTTP 401"),
                outcome(2, OutcomeKind::Done { external_id: None }, 2, "HTTP 200"),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    assert!(listed(&store, 10).is_empty());
    store
        .write(&WriteBatch {
            dead_letters: vec![change(1, DeadLetterOp::Retry)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert!(
        listed(&store, 10).is_empty(),
        "a retry starts from 0 attempts"
    );
    store
        .write(&WriteBatch {
            outcomes: vec![ActionOutcome {
                finished_at_ms: 9_500,
                ..outcome(1, retry(9_600), 1, "HTTP 503")
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(
        listed(&store, 10),
        [(1, 1, "HTTP 503".to_string(), Some(9_500))]
    );
}

conformance!(
    retrying_actions_are_listed_the_next_to_be_tried_first,
    an_action_keeps_its_payload_only_while_it_may_run,
    a_dead_letter_is_listed_with_its_error_and_history,
    a_retried_dead_letter_is_pending_again_with_a_fresh_budget,
    a_dropped_dead_letter_never_runs_and_says_who_dropped_it,
);
