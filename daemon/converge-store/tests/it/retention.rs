//! Retention: processed events older than the cut-off that nothing needs
//! any more go, with what was recorded about them; the rest stays.

use converge_model::{CatchUp, RuleNote};
use converge_store::{ActionOutcome, NewTimer, OutcomeKind, ProcessedEvent, TimerKind, WriteBatch};
use serde_json::json;

use crate::helpers::{TestDb, event, failure, processed_plain, processed_with_actions};

fn done(action_id: i64) -> ActionOutcome {
    ActionOutcome {
        lease_token: None,
        action_id,
        result: OutcomeKind::Done { external_id: None },
        attempts: 1,
        detail: String::new(),
        finished_at_ms: 3_000,
    }
}

fn with_timer(seq: i64) -> ProcessedEvent {
    ProcessedEvent {
        timers: vec![NewTimer {
            entity: "task/e3".into(),
            kind: TimerKind::Schedule,
            event_type: "task.remind".into(),
            data: json!({}),
            due_at_ms: 90_000,
            catch_up: CatchUp::FireLate,
            rule: "remind".into(),
            rule_hash: "remind-hash".into(),
        }],
        ..processed_plain(seq)
    }
}

/// Five events received at 1,000: e1 acted on (both actions done), with a
/// rule failure and a note; e2's actions still pending; e3 waiting on its
/// timer; e4 decided nothing; e5 not processed yet.
fn journal(db: &TestDb) -> converge_store::Store {
    let mut store = db.open();
    let mut first = processed_with_actions(1, "e1", "ana");
    first.rule_failures = vec![failure("slow")];
    first.rule_notes = vec![RuleNote {
        rule: "stalled".into(),
        message: "checked".into(),
    }];
    store
        .write(&WriteBatch {
            appends: ["e1", "e2", "e3", "e4", "e5"]
                .into_iter()
                .map(|id| event("/t", id))
                .collect(),
            processed: vec![
                first,
                processed_with_actions(2, "e2", "bo"),
                with_timer(3),
                processed_plain(4),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    store
        .write(&WriteBatch {
            outcomes: vec![done(1), done(2)],
            ..WriteBatch::default()
        })
        .unwrap();
    store
}

fn seqs(page: &converge_store::PrunePage) -> Vec<i64> {
    page.candidates.iter().map(|c| c.seq).collect()
}

fn only_what_nothing_needs_is_offered_up_to_the_first_unprocessed_event(db: &TestDb) {
    let _store = journal(db);
    let reader = db.reader();
    let page = reader.prunable(0, 5_000, 100).unwrap();
    assert_eq!(seqs(&page), [1, 4]);
    assert_eq!((page.examined_to, page.finished), (4, true));
    let candidate = &page.candidates[0];
    assert_eq!(
        (
            candidate.source.as_str(),
            candidate.id.as_str(),
            candidate.received_at_ms
        ),
        ("/t", "e1", 1_000)
    );
    // Nothing is older than the cut-off.
    let page = reader.prunable(0, 1_000, 100).unwrap();
    assert!(page.candidates.is_empty());
    assert_eq!((page.examined_to, page.finished), (0, true));
    // A page at a time.
    let page = reader.prunable(0, 5_000, 2).unwrap();
    assert_eq!(
        (seqs(&page), page.examined_to, page.finished),
        (vec![1], 2, false)
    );
    let page = reader.prunable(2, 5_000, 2).unwrap();
    assert_eq!(
        (seqs(&page), page.examined_to, page.finished),
        (vec![4], 4, false)
    );
}

fn pruning_removes_an_event_with_its_records_and_keeps_what_is_needed(db: &TestDb) {
    let mut store = journal(db);
    let written = store
        .write(&WriteBatch {
            prune: vec![1, 2, 3, 4, 5],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(written.pruned, 2);
    let reader = db.reader();
    assert_eq!(reader.event_trail("/t", "e1").unwrap(), None);
    assert_eq!(reader.event_trail("/t", "e4").unwrap(), None);
    for kept in ["e2", "e3", "e5"] {
        assert!(reader.event_trail("/t", kept).unwrap().is_some(), "{kept}");
    }
    assert_eq!(reader.pending_actions(10).unwrap().len(), 2);
    assert_eq!(reader.pending_timer_count().unwrap(), 1);
    assert_eq!(
        reader
            .entity_timers(
                &converge_model::EntityKey::parse("task/e3").unwrap(),
                false,
                10
            )
            .unwrap()
            .len(),
        1
    );
    // The entity states stay.
    assert!(
        reader
            .entity(&converge_model::EntityKey::parse("task/e1").unwrap())
            .unwrap()
            .is_some()
    );
    // Its actions done, e2 may go too.
    store
        .write(&WriteBatch {
            outcomes: vec![done(3), done(4)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(seqs(&reader.prunable(0, 5_000, 100).unwrap()), [2]);
    let written = store
        .write(&WriteBatch {
            prune: vec![2],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(written.pruned, 1);
    assert_eq!(reader.event_trail("/t", "e2").unwrap(), None);
    // A pruned event sent again is journaled again: retention is also how
    // long duplicates are recognised.
    let again = store
        .write(&WriteBatch {
            appends: vec![event("/t", "e1")],
            ..WriteBatch::default()
        })
        .unwrap();
    assert!(matches!(
        again.appended[0],
        converge_store::Appended::New { .. }
    ));
}

conformance!(
    only_what_nothing_needs_is_offered_up_to_the_first_unprocessed_event,
    pruning_removes_an_event_with_its_records_and_keeps_what_is_needed,
);
