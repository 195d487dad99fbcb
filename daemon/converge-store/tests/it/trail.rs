use converge_store::{
    ActionOutcome, ActionStatus, NewDecision, NewEvent, OutcomeKind, ProcessedEvent, WriteBatch,
};

use crate::helpers::{TestDb, action, event, failure, notify};

fn the_trail_shows_decisions_actions_statuses_and_rule_failures(db: &TestDb) {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            processed: vec![ProcessedEvent {
                seq: 1,
                entity: None,
                decisions: vec![
                    NewDecision {
                        decision: notify("stalled", "ana"),
                        shadow: false,
                        actions: vec![action("slack"), action("mail")],
                    },
                    NewDecision {
                        decision: notify("unrouted", "bo"),
                        shadow: true,
                        actions: vec![],
                    },
                ],
                rule_failures: vec![failure("slow"), failure("broken")],
                processed_at_ms: 2_000,
                ..ProcessedEvent::default()
            }],
            outcomes: vec![ActionOutcome {
                lease_token: None,
                action_id: 2,
                result: OutcomeKind::DeadLetter,
                attempts: 3,
                detail: "mail server said no".into(),
                finished_at_ms: 3_000,
            }],
            ..WriteBatch::default()
        })
        .unwrap();

    let trail = db.reader().event_trail("/jira", "T-1").unwrap().unwrap();
    assert_eq!(
        (trail.seq, trail.ty.as_str(), trail.subject.as_deref()),
        (1, "task.updated", Some("task/T-1"))
    );
    assert_eq!(
        (trail.received_at_ms, trail.processed_at_ms),
        (1_000, Some(2_000))
    );
    assert_eq!(trail.decisions.len(), 2);
    assert_eq!(trail.decisions[0].decision, notify("stalled", "ana"));
    assert_eq!(trail.decisions[1].decision, notify("unrouted", "bo"));
    assert!(trail.decisions[1].actions.is_empty());
    assert_eq!(
        (trail.decisions[0].shadow, trail.decisions[1].shadow),
        (false, true),
        "the shadow mark is kept"
    );
    let statuses: Vec<_> = trail.decisions[0]
        .actions
        .iter()
        .map(|a| (a.id, a.route.as_str(), a.status, a.attempts))
        .collect();
    assert_eq!(
        statuses,
        [
            (1, "slack", ActionStatus::Pending, 0),
            (2, "mail", ActionStatus::DeadLetter, 3)
        ]
    );
    assert_eq!(
        trail.rule_failures,
        vec![failure("slow"), failure("broken")]
    );

    // What the CLI prints.
    let json = serde_json::to_value(&trail).unwrap();
    assert_eq!(json["decisions"][0]["decision"]["kind"], "notify");
    assert_eq!(json["decisions"][0]["actions"][1]["status"], "dead_letter");
    assert!(
        json["decisions"][0].get("shadow").is_none(),
        "omitted when false"
    );
    assert_eq!(json["decisions"][1]["shadow"], true);
}

fn an_unprocessed_event_has_a_bare_trail_and_unknown_events_none(db: &TestDb) {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            ..WriteBatch::default()
        })
        .unwrap();
    let trail = store.event_trail("/jira", "T-1").unwrap().unwrap();
    assert_eq!(trail.processed_at_ms, None);
    assert!(trail.decisions.is_empty() && trail.rule_failures.is_empty());
    assert_eq!(store.event_trail("/asana", "T-1").unwrap(), None);
    assert_eq!(store.event_trail("/jira", "T-2").unwrap(), None);
}

fn find_event_trail_matches_the_id_from_any_source(db: &TestDb) {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![
                event("/jira", "e-1"),
                event("/jira", "e-2"),
                event("/asana", "e-1"),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    let trails = store.find_event_trail("e-1").unwrap();
    assert_eq!(
        trails
            .iter()
            .map(|t| (t.seq, t.source.as_str()))
            .collect::<Vec<_>>(),
        [(1, "/jira"), (3, "/asana")]
    );
    assert!(store.find_event_trail("e-9").unwrap().is_empty());
}

/// An event about `subject` (or about nothing).
fn about(id: &str, subject: Option<&str>) -> NewEvent {
    NewEvent {
        hook: None,
        subject: subject.map(str::to_string),
        ..event("/tests", id)
    }
}

fn subject_trails_page_through_one_subject_in_seq_order(db: &TestDb) {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![
                about("e-1", Some("campaign/c-42")),
                about("e-2", Some("campaign/c-7")),
                about("e-3", Some("campaign/c-42")),
                about("e-4", None),
                about("e-5", Some("campaign/c-4")),
                about("e-6", Some("campaign/c-42")),
                about("e-7", Some("campaign/c-420")),
            ],
            processed: vec![ProcessedEvent {
                seq: 3,
                decisions: vec![NewDecision {
                    decision: notify("stalled", "ana"),
                    shadow: false,
                    actions: vec![action("slack")],
                }],
                processed_at_ms: 2_000,
                ..ProcessedEvent::default()
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    let reader = db.reader();
    let page = |after| {
        reader
            .subject_trails("campaign/c-42", after, 2)
            .unwrap()
            .into_iter()
            .map(|t| (t.seq, t.id, t.decisions.len()))
            .collect::<Vec<_>>()
    };

    let first = page(0);
    assert_eq!(first, [(1, "e-1".into(), 0), (3, "e-3".into(), 1)]);
    let second = page(first.last().unwrap().0);
    assert_eq!(second, [(6, "e-6".into(), 0)]);
    assert!(page(6).is_empty());
    // Each trail is complete, as `converge explain --entity` prints it.
    let trails = reader.subject_trails("campaign/c-42", 1, 1).unwrap();
    assert_eq!(trails[0].decisions[0].actions[0].route, "slack");
    assert!(
        reader
            .subject_trails("campaign/c-", 0, 10)
            .unwrap()
            .is_empty()
    );
}

conformance!(
    the_trail_shows_decisions_actions_statuses_and_rule_failures,
    an_unprocessed_event_has_a_bare_trail_and_unknown_events_none,
    find_event_trail_matches_the_id_from_any_source,
    subject_trails_page_through_one_subject_in_seq_order,
);
