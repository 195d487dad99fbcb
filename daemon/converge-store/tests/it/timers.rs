use converge_model::{CatchUp, EntityKey};
use converge_store::{
    Appended, ExpectedArrival, FiredTimer, NewEvent, NewTimer, ProcessedEvent, SkippedTimer,
    StoreError, TimerCancellation, TimerKind, TimerRecordKind, TimerStatus, WriteBatch,
};
use serde_json::json;

use crate::helpers::{TestDb, appends, event, event_about, processed_plain};

fn timer(entity: &str, kind: TimerKind, event_type: &str, due_at_ms: i64) -> NewTimer {
    NewTimer {
        entity: entity.into(),
        kind,
        event_type: event_type.into(),
        data: json!({"step": 1}),
        due_at_ms,
        catch_up: CatchUp::FireLate,
        rule: "stalled".into(),
        rule_hash: "stalled-hash".into(),
    }
}

fn expect(entity: &str, expect_type: &str, otherwise: &str, due_at_ms: i64) -> NewTimer {
    timer(
        entity,
        TimerKind::Expect {
            expect_type: expect_type.into(),
        },
        otherwise,
        due_at_ms,
    )
}

fn timer_event(timer_id: i64) -> NewEvent {
    NewEvent {
        hook: None,
        source: "converge/timers".into(),
        id: format!("timer-{timer_id}"),
        ty: "task.reminder".into(),
        subject: Some("task/T-1".into()),
        json: format!(
            r#"{{"specversion":"1.0","id":"timer-{timer_id}","source":"converge/timers","type":"task.reminder","subject":"task/T-1"}}"#
        ),
        received_at_ms: 5_000,
    }
}

fn fire(timer_id: i64) -> FiredTimer {
    FiredTimer {
        timer_id,
        event: timer_event(timer_id),
        fired_at_ms: 5_000,
    }
}

fn fires(timer_ids: &[i64]) -> WriteBatch {
    WriteBatch {
        fired_timers: timer_ids.iter().map(|&id| fire(id)).collect(),
        ..WriteBatch::default()
    }
}

fn processed_with(seq: i64, timers: Vec<NewTimer>) -> ProcessedEvent {
    ProcessedEvent {
        timers,
        ..processed_plain(seq)
    }
}

/// Another event about `task/<entity_id>` (the events' subject is what a
/// timer's entity is: the store lists an entity's timers through the
/// events about it).
/// One journaled event, about `task/T-1`, that created `timers`.
fn store_with_timers(db: &TestDb, timers: Vec<NewTimer>) -> converge_store::Store {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            processed: vec![processed_with(1, timers)],
            ..WriteBatch::default()
        })
        .unwrap();
    store
}

fn timers_are_created_with_the_processing_and_read_in_due_order(db: &TestDb) {
    let store = store_with_timers(
        db,
        vec![
            timer("task/T-1", TimerKind::Schedule, "task.late", 3_000),
            expect("task/T-1", "task.approved", "task.unapproved", 2_000),
        ],
    );
    assert_eq!(store.next_timer_due().unwrap(), Some(2_000));
    assert_eq!(store.pending_timer_count().unwrap(), 2);
    assert!(store.due_timers(1_999, None, 10).unwrap().is_empty());
    let due = store.due_timers(3_000, None, 10).unwrap();
    assert_eq!(due.iter().map(|t| t.id).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(due[0].kind, TimerRecordKind::Expect);
    assert_eq!(due[0].expect_type.as_deref(), Some("task.approved"));
    assert_eq!(due[1].data, json!({"step": 1}));
    assert_eq!(due[1].created_by_seq, 1);
    assert_eq!(due[1].status, TimerStatus::Pending);

    let key = EntityKey::parse("task/T-1").unwrap();
    assert_eq!(store.entity_timers(&key, true, 10).unwrap().len(), 2);
    let other = EntityKey::parse("task/T-2").unwrap();
    assert!(store.entity_timers(&other, false, 10).unwrap().is_empty());
}

/// task/T-1 with four pending timers, ids 1 to 4 due at `due`: the first
/// made is not the first due, and two are due at once.
fn four_timers(db: &TestDb, due: [i64; 3]) -> converge_store::Store {
    let [late, twice, nudge] = due;
    store_with_timers(
        db,
        vec![
            timer("task/T-1", TimerKind::Schedule, "task.late", late),
            expect("task/T-1", "task.approved", "task.unapproved", twice),
            timer("task/T-1", TimerKind::Schedule, "task.remind", twice),
            timer("task/T-1", TimerKind::Schedule, "task.nudge", nudge),
        ],
    )
}

fn the_pending_backlog_is_read_in_due_order_a_page_at_a_time(db: &TestDb) {
    // Two timers due at 2,000 (ids 2 and 3, in creation order), one far off.
    let mut store = four_timers(db, [9_000_000, 2_000, 4_000]);
    let ids = |store: &converge_store::Store, due_by, after, limit| {
        store
            .due_timers(due_by, after, limit)
            .unwrap()
            .iter()
            .map(|t| (t.due_at_ms, t.id))
            .collect::<Vec<_>>()
    };
    let all = vec![(2_000, 2), (2_000, 3), (4_000, 4), (9_000_000, 1)];
    assert_eq!(ids(&store, i64::MAX, None, 10), all);
    // Pages: after a timer means after its place, ties broken by id.
    assert_eq!(ids(&store, i64::MAX, None, 1), all[..1]);
    assert_eq!(ids(&store, i64::MAX, Some((2_000, 2)), 2), all[1..3]);
    assert_eq!(ids(&store, i64::MAX, Some((2_000, 3)), 10), all[2..]);
    assert!(ids(&store, i64::MAX, Some((9_000_000, 1)), 10).is_empty());
    // Due by a time, and after a timer, at once.
    assert_eq!(ids(&store, 4_000, Some((2_000, 2)), 10), all[1..3]);
    // The same, iterated a page at a time, whatever the page.
    for page in [1, 2, 3, 4, 10] {
        for (due_by, expected) in [(i64::MAX, &all[..]), (4_000, &all[..3])] {
            let iterated: Vec<_> = converge_store::pending_timers(&*store, due_by, page)
                .map(|t| t.map(|t| (t.due_at_ms, t.id)))
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(iterated, expected, "pages of {page}, due by {due_by}");
        }
    }

    // Only pending timers: a fired one leaves the backlog.
    store.write(&fires(&[2])).unwrap();
    assert_eq!(ids(&store, i64::MAX, None, 10), all[1..]);
}

fn an_entitys_soonest_pending_timer_is_the_one_due_first_not_the_newest(db: &TestDb) {
    let mut store = four_timers(db, [5_000, 3_000, 4_000]);
    let soonest = |store: &converge_store::Store, entity: &str| {
        store
            .soonest_pending_timer(&EntityKey::parse(entity).unwrap())
            .unwrap()
            .map(|t| t.id)
    };
    // Two due at 3,000: the first made.
    assert_eq!(soonest(&store, "task/T-1"), Some(2));
    store.write(&fires(&[2])).unwrap();
    assert_eq!(soonest(&store, "task/T-1"), Some(3));
    store.write(&fires(&[3, 4, 1])).unwrap();
    assert_eq!(soonest(&store, "task/T-1"), None, "none pending");
    assert_eq!(soonest(&store, "task/T-2"), None, "no timer at all");
}

fn a_timer_fires_exactly_once(db: &TestDb) {
    let mut store = store_with_timers(
        db,
        vec![timer("task/T-1", TimerKind::Schedule, "task.late", 3_000)],
    );
    // Twice in one batch, then once more in a later one: one event.
    let result = store.write(&fires(&[1, 1])).unwrap();
    assert_eq!(result.fired, vec![Some(Appended::New { seq: 2 }), None]);
    let result = store.write(&fires(&[1])).unwrap();
    assert_eq!(result.fired, vec![None]);
    drop(store);

    let store = db.open();
    let journal = store.events_after(0, 10).unwrap();
    assert_eq!(journal.len(), 2, "{journal:?}");
    let key = EntityKey::parse("task/T-1").unwrap();
    let timers = store.entity_timers(&key, false, 10).unwrap();
    assert_eq!(timers[0].status, TimerStatus::Fired);
    assert_eq!(timers[0].fired_seq, Some(2));
    assert_eq!(timers[0].closed_at_ms, Some(5_000));
    assert_eq!(store.next_timer_due().unwrap(), None);
    assert_eq!(store.pending_timer_count().unwrap(), 0);
}

fn firing_an_unknown_timer_rolls_back_the_batch(db: &TestDb) {
    let mut store = store_with_timers(
        db,
        vec![timer("task/T-1", TimerKind::Schedule, "task.late", 3_000)],
    );
    let err = store.write(&fires(&[1, 7])).unwrap_err();
    assert!(matches!(err, StoreError::UnknownTimer { id: 7 }), "{err}");
    assert_eq!(store.pending_timer_count().unwrap(), 1);
    assert_eq!(store.journal_head().unwrap(), 1);
}

fn a_skipped_timer_never_fires(db: &TestDb) {
    let mut store = store_with_timers(
        db,
        vec![timer("task/T-1", TimerKind::Schedule, "task.late", 3_000)],
    );
    let result = store
        .write(&WriteBatch {
            skipped_timers: vec![SkippedTimer {
                timer_id: 1,
                skipped_at_ms: 4_000,
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(result.timers_skipped, 1);
    assert_eq!(store.write(&fires(&[1])).unwrap().fired, vec![None]);
    let key = EntityKey::parse("task/T-1").unwrap();
    let timers = store.entity_timers(&key, false, 10).unwrap();
    assert_eq!(timers[0].status, TimerStatus::Skipped);
    assert_eq!(store.journal_head().unwrap(), 1);
}

fn the_expected_event_cancels_only_the_expects_waiting_for_it(db: &TestDb) {
    let mut store = store_with_timers(
        db,
        vec![
            expect("task/T-1", "task.approved", "task.unapproved", 3_000),
            expect("task/T-1", "task.assigned", "task.unassigned", 3_000),
            timer("task/T-1", TimerKind::Schedule, "task.approved", 3_000),
        ],
    );
    // Another task waits for the same event type.
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-2")],
            processed: vec![processed_with(
                2,
                vec![expect(
                    "task/T-2",
                    "task.approved",
                    "task.unapproved",
                    3_000,
                )],
            )],
            ..WriteBatch::default()
        })
        .unwrap();
    store
        .write(&appends(vec![event_about("T-1b", "T-1")]))
        .unwrap();
    let result = store
        .write(&WriteBatch {
            processed: vec![ProcessedEvent {
                cancel_expects: vec![
                    ExpectedArrival::came("task/T-1", "task.approved"),
                    // A rule's `cancel_expects`.
                    ExpectedArrival::by_rule("task/T-1", "task.assigned", "ladder"),
                ],
                // A new expect made by the very event that cancels: kept.
                timers: vec![expect("task/T-1", "task.approved", "x", 9_000)],
                ..processed_plain(3)
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!((result.timers_cancelled, result.timers_created), (2, 1));
    let statuses = |entity: &str| -> Vec<(i64, TimerStatus, Option<String>)> {
        store
            .entity_timers(&EntityKey::parse(entity).unwrap(), false, 10)
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.status, t.cancel_reason))
            .collect()
    };
    // The cancelled one says why, for `explain` and the record page.
    assert_eq!(
        statuses("task/T-1"),
        vec![
            (5, TimerStatus::Pending, None),
            (3, TimerStatus::Pending, None),
            (
                2,
                TimerStatus::Cancelled,
                Some("rule ladder cancelled it".to_string())
            ),
            (
                1,
                TimerStatus::Cancelled,
                Some("task.approved came".to_string())
            ),
        ]
    );
    assert_eq!(statuses("task/T-2"), vec![(4, TimerStatus::Pending, None)]);
    // A cancelled expect does not fire.
    assert_eq!(store.write(&fires(&[1])).unwrap().fired, vec![None]);
}

fn emitted_events_are_journaled_with_the_processing(db: &TestDb) {
    let mut store = db.open();
    let mut emitted = event("converge/rules", "emit-1-1");
    emitted.ty = "task.checked".into();
    let result = store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1"), event("/jira", "T-2")],
            processed: vec![ProcessedEvent {
                emits: vec![emitted.clone()],
                ..processed_plain(1)
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(result.emitted, vec![Appended::New { seq: 3 }]);
    assert_eq!(store.journal_head().unwrap(), 3);
    // Deduplicated like any append.
    store.write(&appends(vec![emitted])).unwrap();
    assert_eq!(store.journal_head().unwrap(), 3);
}

fn an_expect_cancelled_in_a_batch_does_not_fire_in_the_same_batch(db: &TestDb) {
    let mut store = store_with_timers(
        db,
        vec![expect(
            "task/T-1",
            "task.approved",
            "task.unapproved",
            3_000,
        )],
    );
    let result = store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1-approved")],
            processed: vec![ProcessedEvent {
                cancel_expects: vec![ExpectedArrival::came("task/T-1", "task.approved")],
                ..processed_plain(2)
            }],
            fired_timers: vec![fire(1)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(result.fired, vec![None]);
    assert_eq!(result.timers_cancelled, 1);
    assert_eq!(store.journal_head().unwrap(), 2);
}

/// Expects created and cancelled within one batch end as if its events
/// were processed one by one: an event cancels what the events before it
/// created, never what it or a later event creates, and a timer is closed
/// by the first event that arrives for it.
fn an_expect_is_cancelled_by_the_first_later_event_of_the_batch_it_waits_for(db: &TestDb) {
    let mut store = store_with_timers(
        db,
        vec![expect(
            "task/T-1",
            "task.approved",
            "task.unapproved",
            9_000,
        )],
    );
    let approved = |entity: &str| vec![ExpectedArrival::came(entity, "task.approved")];
    store
        .write(&appends(vec![
            event_about("e-2", "T-2"),
            event_about("e-3", "T-1"),
            event_about("e-4", "T-2"),
            event_about("e-5", "T-1"),
            event_about("e-6", "T-1"),
        ]))
        .unwrap();
    let result = store
        .write(&WriteBatch {
            processed: vec![
                ProcessedEvent {
                    // Nothing of T-2 is pending yet: the expect seq 4
                    // creates comes after this arrival.
                    cancel_expects: approved("task/T-2"),
                    processed_at_ms: 2_100,
                    ..processed_plain(2)
                },
                ProcessedEvent {
                    cancel_expects: approved("task/T-1"),
                    timers: vec![expect("task/T-1", "task.approved", "x", 9_000)],
                    processed_at_ms: 2_200,
                    ..processed_plain(3)
                },
                ProcessedEvent {
                    // Its own new expect is not what it arrives for.
                    cancel_expects: approved("task/T-2"),
                    timers: vec![expect("task/T-2", "task.approved", "x", 9_000)],
                    processed_at_ms: 2_300,
                    ..processed_plain(4)
                },
                ProcessedEvent {
                    // A rule's `cancel_expects` ends it as an arrival would.
                    cancel_expects: vec![ExpectedArrival::by_rule(
                        "task/T-1",
                        "task.approved",
                        "ladder",
                    )],
                    timers: vec![timer(
                        "task/T-1",
                        TimerKind::Schedule,
                        "task.approved",
                        9_000,
                    )],
                    processed_at_ms: 2_400,
                    ..processed_plain(5)
                },
                ProcessedEvent {
                    // The expect seq 5 closed stays closed by seq 5.
                    cancel_expects: approved("task/T-1"),
                    processed_at_ms: 2_500,
                    ..processed_plain(6)
                },
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!((result.timers_cancelled, result.timers_created), (2, 3));
    // id, made by seq, status, closed at, why.
    type Row = (i64, i64, TimerStatus, Option<i64>, Option<String>);
    let timers = |entity: &str| -> Vec<Row> {
        store
            .entity_timers(&EntityKey::parse(entity).unwrap(), false, 10)
            .unwrap()
            .into_iter()
            .map(|t| {
                (
                    t.id,
                    t.created_by_seq,
                    t.status,
                    t.closed_at_ms,
                    t.cancel_reason,
                )
            })
            .collect()
    };
    let came = || Some("task.approved came".to_string());
    assert_eq!(
        timers("task/T-1"),
        vec![
            (4, 5, TimerStatus::Pending, None, None),
            (
                2,
                3,
                TimerStatus::Cancelled,
                Some(2_400),
                Some("rule ladder cancelled it".to_string())
            ),
            (1, 1, TimerStatus::Cancelled, Some(2_200), came()),
        ]
    );
    assert_eq!(
        timers("task/T-2"),
        vec![(3, 4, TimerStatus::Pending, None, None)]
    );
    assert_eq!(store.pending_timer_count().unwrap(), 2);
}

/// Timers fired and skipped together: each once, in the batch's order.
fn timers_fired_and_skipped_in_one_batch(db: &TestDb) {
    let mut store = store_with_timers(
        db,
        (1..=4)
            .map(|i| timer("task/T-1", TimerKind::Schedule, "task.late", 3_000 + i))
            .collect(),
    );
    let result = store
        .write(&WriteBatch {
            fired_timers: vec![fire(3), fire(1), fire(3)],
            skipped_timers: vec![
                SkippedTimer {
                    timer_id: 2,
                    skipped_at_ms: 4_000,
                },
                SkippedTimer {
                    timer_id: 1,
                    skipped_at_ms: 4_000,
                },
                SkippedTimer {
                    timer_id: 2,
                    skipped_at_ms: 4_000,
                },
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(
        result.fired,
        vec![
            Some(Appended::New { seq: 2 }),
            Some(Appended::New { seq: 3 }),
            None
        ]
    );
    assert_eq!(result.timers_skipped, 1);
    let key = EntityKey::parse("task/T-1").unwrap();
    let timers: Vec<(i64, TimerStatus, Option<i64>)> = store
        .entity_timers(&key, false, 10)
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.status, t.fired_seq))
        .collect();
    assert_eq!(
        timers,
        vec![
            (4, TimerStatus::Pending, None),
            (3, TimerStatus::Fired, Some(2)),
            (2, TimerStatus::Skipped, None),
            (1, TimerStatus::Fired, Some(3)),
        ]
    );
    let journal = store.events_after(1, 10).unwrap();
    assert!(journal[0].json.contains("timer-3") && journal[1].json.contains("timer-1"));
}

/// What waits on each version of each rule: the soonest `limit` pending
/// timers, counted by the rule version that created them.
fn pending_timers_are_counted_by_the_rule_version_that_made_them(db: &TestDb) {
    let version = |rule: &str, hash: &str, due_at_ms| NewTimer {
        rule: rule.into(),
        rule_hash: hash.into(),
        ..timer("task/T-1", TimerKind::Schedule, "task.late", due_at_ms)
    };
    let mut store = store_with_timers(
        db,
        vec![
            version("stalled", "v1", 1_000),
            version("stalled", "v2", 2_000),
            version("stalled", "v1", 3_000),
            version("digest", "d1", 4_000),
        ],
    );
    let counted = |store: &converge_store::Store, limit| -> Vec<(String, String, i64)> {
        store
            .pending_timers_by_rule(limit)
            .unwrap()
            .into_iter()
            .map(|t| (t.rule, t.rule_hash, t.pending))
            .collect()
    };
    let owned = |rows: &[(&str, &str, i64)]| -> Vec<(String, String, i64)> {
        rows.iter()
            .map(|(r, h, n)| (r.to_string(), h.to_string(), *n))
            .collect()
    };
    assert_eq!(
        counted(&store, 10),
        owned(&[
            ("digest", "d1", 1),
            ("stalled", "v1", 2),
            ("stalled", "v2", 1)
        ])
    );
    // The soonest two only.
    assert_eq!(
        counted(&store, 2),
        owned(&[("stalled", "v1", 1), ("stalled", "v2", 1)])
    );
    // A fired timer waits no more.
    store.write(&fires(&[1])).unwrap();
    assert_eq!(
        counted(&store, 10),
        owned(&[
            ("digest", "d1", 1),
            ("stalled", "v1", 1),
            ("stalled", "v2", 1)
        ])
    );
}

/// A person cancels the pending timers of a rule (of one version, about one
/// entity): the soonest due first, up to the limit, each with who and why;
/// fired timers and other rules' stay as they are.
fn people_cancel_the_pending_timers_of_a_rule_with_who_and_why(db: &TestDb) {
    let made = |rule: &str, hash: &str, entity: &str, due_at_ms| NewTimer {
        rule: rule.into(),
        rule_hash: hash.into(),
        ..timer(entity, TimerKind::Schedule, "task.late", due_at_ms)
    };
    let mut store = store_with_timers(
        db,
        vec![
            made("stalled", "v1", "task/T-1", 1_000),
            made("stalled", "v2", "task/T-1", 2_000),
            made("stalled", "v1", "task/T-2", 3_000),
            made("stalled", "v1", "task/T-1", 4_000),
            made("digest", "d1", "task/T-1", 5_000),
        ],
    );
    store.write(&fires(&[1])).unwrap();
    let cancel = |version: Option<&str>, entity: Option<&str>, limit| TimerCancellation {
        rule: "stalled".into(),
        version: version.map(String::from),
        entity: entity.map(String::from),
        limit,
        by: "ana".into(),
        reason: "the ladder changed".into(),
        at_ms: 9_000,
    };
    let result = store
        .write(&WriteBatch {
            timer_cancellations: vec![
                // Version v1 about T-1: timer 1 fired already, so only 4.
                cancel(Some("v1"), Some("task/T-1"), 10),
                // Then any version, the soonest one left: timer 2.
                cancel(None, None, 1),
                cancel(Some("v9"), None, 10),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(result.cancelled_by_people, vec![1, 1, 0]);
    assert_eq!(result.timers_cancelled, 2);
    let state = |entity: &str| -> Vec<(i64, TimerStatus, Option<String>, Option<String>)> {
        store
            .entity_timers(&EntityKey::parse(entity).unwrap(), false, 10)
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.status, t.cancelled_by, t.cancel_reason))
            .collect()
    };
    let by_ana = || {
        (
            Some("ana".to_string()),
            Some("the ladder changed".to_string()),
        )
    };
    assert_eq!(
        state("task/T-1"),
        vec![
            (5, TimerStatus::Pending, None, None),
            (4, TimerStatus::Cancelled, by_ana().0, by_ana().1),
            (2, TimerStatus::Cancelled, by_ana().0, by_ana().1),
            (1, TimerStatus::Fired, None, None),
        ]
    );
    // T-2's timer (3) and the other rule's (5) still wait.
    assert_eq!(store.pending_timer_count().unwrap(), 2);
    // A cancelled timer is not fired.
    let fired = store.write(&fires(&[4])).unwrap();
    assert_eq!(fired.fired, vec![None]);
}

conformance!(
    people_cancel_the_pending_timers_of_a_rule_with_who_and_why,
    pending_timers_are_counted_by_the_rule_version_that_made_them,
    timers_are_created_with_the_processing_and_read_in_due_order,
    the_pending_backlog_is_read_in_due_order_a_page_at_a_time,
    an_entitys_soonest_pending_timer_is_the_one_due_first_not_the_newest,
    a_timer_fires_exactly_once,
    firing_an_unknown_timer_rolls_back_the_batch,
    a_skipped_timer_never_fires,
    the_expected_event_cancels_only_the_expects_waiting_for_it,
    emitted_events_are_journaled_with_the_processing,
    an_expect_cancelled_in_a_batch_does_not_fire_in_the_same_batch,
    an_expect_is_cancelled_by_the_first_later_event_of_the_batch_it_waits_for,
    timers_fired_and_skipped_in_one_batch,
);
