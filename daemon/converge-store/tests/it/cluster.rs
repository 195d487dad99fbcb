//! The cluster operations of a shared database (PostgreSQL): leases and
//! fencing, partitions, action claims, notifications. Each test opens
//! several stores on one database, as several daemons would.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use converge_store::{
    ActionLease, ActionOutcome, ActionStatus, Appended, Coordination, DeadLetterChange,
    DeadLetterOp, DeadLetterOutcome, Fence, GateChange, OutcomeKind, PendingAction, ProcessedEvent,
    Store, StoreError, WriteBatch, event_partition, partition_of,
};

use crate::helpers::{TestDb, appends, event, processed_plain, processed_with_actions};

const LONG: Duration = Duration::from_secs(60);

/// A task id whose entity (`task/<id>`) is in `partition`.
fn task_in(partition: u32) -> String {
    (0..)
        .map(|i| format!("T-{i}"))
        .find(|id| partition_of(&format!("task/{id}")) == partition)
        .unwrap()
}

fn fence(lease: &str, holder: &str, token: i64) -> Fence {
    Fence {
        lease: lease.into(),
        holder: holder.into(),
        token,
    }
}

fn outcome(action_id: i64, result: OutcomeKind, lease_token: Option<i64>) -> ActionOutcome {
    ActionOutcome {
        action_id,
        result,
        attempts: 1,
        detail: "HTTP 500".into(),
        finished_at_ms: 5_000,
        lease_token,
    }
}

/// The cluster operations of a PostgreSQL store.
fn shared(store: &Store) -> &dyn Coordination {
    store
        .coordination()
        .expect("PostgreSQL coordinates daemons")
}

fn ids(actions: &[PendingAction]) -> Vec<i64> {
    actions.iter().map(|a| a.id).collect()
}

/// One event with `count` pending actions, ids 1 to `count`, unleased.
fn store_with_actions(db: &TestDb, count: usize) -> Store {
    let mut store = db.open();
    let mut processed = processed_with_actions(1, "T-1", "ana");
    let actions = processed.decisions[0].actions[0].clone();
    processed.decisions[0].actions = vec![actions; count];
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            processed: vec![processed],
            ..WriteBatch::default()
        })
        .unwrap();
    store
}

#[test]
fn a_lease_is_granted_kept_refused_and_taken_over_with_a_higher_token() {
    let Some(db) = TestDb::postgres() else { return };
    let (a, b) = (db.open(), db.open());
    let first = shared(&a)
        .hold_lease("partition/7", "a", LONG)
        .unwrap()
        .unwrap();
    assert_eq!(
        shared(&a).hold_lease("partition/7", "a", LONG).unwrap(),
        Some(first)
    );
    assert_eq!(
        shared(&b).hold_lease("partition/7", "b", LONG).unwrap(),
        None
    );
    shared(&b)
        .hold_lease("daemon/b", "b", LONG)
        .unwrap()
        .unwrap();
    let live = shared(&b).live_leases("partition/").unwrap();
    assert_eq!(
        live.iter()
            .map(|l| (l.name.as_str(), l.holder.as_str(), l.token))
            .collect::<Vec<_>>(),
        [("partition/7", "a", first)]
    );

    // `a` stalls: its lease runs out, and `b` takes it over.
    a_lets_it_expire(&a, "partition/7", "a");
    assert!(shared(&b).live_leases("partition/").unwrap().is_empty());
    let second = shared(&b)
        .hold_lease("partition/7", "b", LONG)
        .unwrap()
        .unwrap();
    assert!(second > first, "{second} > {first}");
    assert_eq!(
        shared(&a).hold_lease("partition/7", "a", LONG).unwrap(),
        None
    );

    // Only its holder can release it; then it is free at once, and taking
    // it again is a new tenure.
    shared(&a).release_lease("partition/7", "a").unwrap();
    assert_eq!(
        shared(&a).hold_lease("partition/7", "a", LONG).unwrap(),
        None
    );
    shared(&b).release_lease("partition/7", "b").unwrap();
    let third = shared(&a)
        .hold_lease("partition/7", "a", LONG)
        .unwrap()
        .unwrap();
    assert!(third > second, "{third} > {second}");
}

/// Appends an event under the fence `(lease, "a", token)`: refused, and
/// nothing written.
fn assert_fenced(store: &mut Store, lease: &str, token: i64, why: &str) {
    let head = store.journal_head().unwrap();
    let err = store
        .write(&WriteBatch {
            fences: vec![fence(lease, "a", token)],
            ..appends(vec![event("/jira", "e-2")])
        })
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Fenced { lease: l } if l == lease),
        "{why}: {err}"
    );
    assert_eq!(
        store.journal_head().unwrap(),
        head,
        "{why}: nothing written"
    );
}

#[test]
fn a_fenced_write_fails_and_writes_nothing() {
    let Some(db) = TestDb::postgres() else { return };
    let (mut a, b) = (db.open(), db.open());
    let token = shared(&a)
        .hold_lease("partition/3", "a", LONG)
        .unwrap()
        .unwrap();
    a.write(&WriteBatch {
        fences: vec![fence("partition/3", "a", token)],
        ..appends(vec![event("/jira", "e-1")])
    })
    .unwrap();

    assert_fenced(&mut a, "partition/4", token, "never held");
    assert_fenced(&mut a, "partition/3", token + 1, "another token");
    a_lets_it_expire(&a, "partition/3", "a");
    assert_fenced(
        &mut a,
        "partition/3",
        token,
        "expired, even if nobody took it",
    );
    shared(&b)
        .hold_lease("partition/3", "b", LONG)
        .unwrap()
        .unwrap();
    assert_fenced(&mut a, "partition/3", token, "taken over");
}

/// Shortens `holder`'s lease to nothing, as if it stalled past it.
fn a_lets_it_expire(store: &Store, name: &str, holder: &str) {
    shared(store)
        .hold_lease(name, holder, Duration::ZERO)
        .unwrap()
        .unwrap();
}

#[test]
fn actions_created_under_a_lease_stay_with_their_creator() {
    let Some(db) = TestDb::postgres() else { return };
    let mut a = db.open();
    let b = db.open();
    let written = a
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1")],
            processed: vec![processed_with_actions(1, "T-1", "ana")],
            new_action_lease: Some(ActionLease {
                holder: "a".into(),
                ttl_ms: 60_000,
            }),
            ..WriteBatch::default()
        })
        .unwrap();
    let tokens: Vec<Option<i64>> = written.actions.iter().map(|a| a.lease_token).collect();
    assert!(tokens[0].is_some() && tokens[0] == tokens[1], "{tokens:?}");
    assert!(
        shared(&b)
            .claim_actions("b", LONG, 10_000, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        a.pending_actions(10)
            .unwrap()
            .iter()
            .all(|a| a.lease_token.is_none()),
        "listing is not holding"
    );

    // A retry keeps the lease with its holder; finishing ends it.
    let token = tokens[0];
    let retry = OutcomeKind::Retry {
        next_attempt_at_ms: 6_000,
    };
    let done = OutcomeKind::Done { external_id: None };
    let written = a
        .write(&WriteBatch {
            outcomes: vec![outcome(1, retry, token), outcome(2, done, token)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert!(written.outcomes_fenced.is_empty());
    assert!(
        shared(&b)
            .claim_actions("b", LONG, 10_000, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        shared(&a)
            .renew_action_leases("a", LONG, &[(1, token.unwrap()), (2, token.unwrap())])
            .unwrap(),
        [2],
        "action 2 is done: its lease is gone"
    );
}

#[test]
fn claims_from_two_daemons_take_disjoint_actions() {
    let Some(db) = TestDb::postgres() else { return };
    let store = store_with_actions(&db, 20);
    // Rows another connection has locked are skipped, not waited for.
    let mut sql = db.sql();
    let mut locking = sql.transaction().unwrap();
    locking
        .execute("SELECT FROM actions WHERE id <= 3 FOR UPDATE", &[])
        .unwrap();
    let started = Instant::now();
    let claimed = shared(&store).claim_actions("a", LONG, 10_000, 4).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(ids(&claimed), [4, 5, 6, 7]);
    locking.rollback().unwrap();

    let barrier = Barrier::new(2);
    let (a, b) = thread::scope(|scope| {
        let claim = |holder: &'static str| {
            let barrier = &barrier;
            let store = db.open();
            scope.spawn(move || {
                barrier.wait();
                (0..4)
                    .flat_map(|_| {
                        shared(&store)
                            .claim_actions(holder, LONG, 10_000, 3)
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        };
        let (a, b) = (claim("a"), claim("b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut all: Vec<i64> = ids(&a).into_iter().chain(ids(&b)).collect();
    all.sort_unstable();
    let expected: Vec<i64> = (1..=3).chain(8..=20).collect();
    assert_eq!(all, expected, "each free action claimed once");
    let mut tokens: Vec<i64> = a.iter().chain(&b).filter_map(|a| a.lease_token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 16, "a token per claim");
}

#[test]
fn an_expired_action_lease_is_reclaimed_and_the_stale_holder_is_fenced() {
    let Some(db) = TestDb::postgres() else { return };
    let mut a = store_with_actions(&db, 1);
    let mut b = db.open();
    // A failed attempt (unleased, as a single daemon records it): due again at 9 s.
    let retry = OutcomeKind::Retry {
        next_attempt_at_ms: 9_000,
    };
    b.write(&WriteBatch {
        outcomes: vec![outcome(1, retry, None)],
        ..WriteBatch::default()
    })
    .unwrap();
    assert!(
        shared(&a)
            .claim_actions("a", LONG, 8_999, 10)
            .unwrap()
            .is_empty(),
        "not due"
    );

    // `a` claims it and stalls past its lease; `b` takes it over.
    let stale = shared(&a)
        .claim_actions("a", Duration::ZERO, 9_000, 10)
        .unwrap();
    assert_eq!(ids(&stale), [1]);
    let fresh = shared(&b).claim_actions("b", LONG, 9_000, 10).unwrap();
    assert_eq!(ids(&fresh), [1]);
    let (stale, fresh) = (stale[0].lease_token.unwrap(), fresh[0].lease_token.unwrap());
    assert!(fresh > stale);
    assert!(
        shared(&a)
            .claim_actions("a", LONG, 9_000, 10)
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        shared(&a)
            .renew_action_leases("a", LONG, &[(1, stale)])
            .unwrap(),
        [1]
    );
    assert!(
        shared(&b)
            .renew_action_leases("b", LONG, &[(1, fresh)])
            .unwrap()
            .is_empty()
    );
    let late = a
        .write(&WriteBatch {
            outcomes: vec![outcome(1, OutcomeKind::DeadLetter, Some(stale))],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!((late.outcomes_fenced, late.dead_lettered), (vec![1], 0));
    assert_eq!(
        a.action(1).unwrap().unwrap().action.status,
        ActionStatus::Pending
    );

    let done = b
        .write(&WriteBatch {
            outcomes: vec![outcome(1, OutcomeKind::DeadLetter, Some(fresh))],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!((done.outcomes_fenced.len(), done.dead_lettered), (0, 1));
    assert_eq!(
        shared(&b)
            .renew_action_leases("b", LONG, &[(1, fresh)])
            .unwrap(),
        [1]
    );

    // A person retries the dead letter: unleased, any daemon claims it.
    let retried = a
        .write(&WriteBatch {
            dead_letters: vec![DeadLetterChange {
                action_id: 1,
                op: DeadLetterOp::Retry,
                by: "mia".into(),
                reason: "fixed".into(),
                at_ms: 10_000,
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    assert!(matches!(
        retried.dead_letters[..],
        [DeadLetterOutcome::Retried(PendingAction {
            lease_token: None,
            ..
        })]
    ));
    assert_eq!(
        ids(&shared(&a).claim_actions("a", LONG, 10_000, 10).unwrap()),
        [1]
    );
}

#[test]
fn unprocessed_events_are_read_by_partition_in_seq_order() {
    let Some(db) = TestDb::postgres() else { return };
    let mut store = db.open();
    let (here, there) = (task_in(1), task_in(2));
    let mut about_nothing = event("/x", "no-subject");
    about_nothing.subject = None;
    let nothing = event_partition(None, "no-subject");
    store
        .write(&appends(vec![
            event("/jira", &here),
            event("/jira", &there),
            event("/asana", &here),
            about_nothing,
        ]))
        .unwrap();
    // Another daemon's connection sees the same.
    let other = db.open();
    let seqs = |partitions: &[u32]| -> Vec<i64> {
        shared(&other)
            .unprocessed_events(partitions, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(seqs(&[1]), [1, 3]);
    assert_eq!(seqs(&[2, 1]), [1, 2, 3]);
    assert_eq!(seqs(&[nothing]), [4]);
    assert!(seqs(&[]).is_empty());
    assert_eq!(
        shared(&store).unprocessed_events(&[1, 2], 2).unwrap().len(),
        2
    );

    store
        .write(&WriteBatch {
            processed: vec![processed_plain(3)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(seqs(&[1]), [1]);
    assert_eq!(store.processed_cursor().unwrap(), 0, "event 1 still waits");
    store
        .write(&WriteBatch {
            processed: vec![processed_plain(1), processed_plain(2), processed_plain(4)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert!(seqs(&[1, 2, nothing]).is_empty());
    assert_eq!(store.processed_cursor().unwrap(), 4);
}

#[test]
fn timers_and_held_sends_are_read_by_partition() {
    let Some(db) = TestDb::postgres() else { return };
    let mut store = db.open();
    let (here, there) = (task_in(5), task_in(6));
    let timer = |id: &str| converge_store::NewTimer {
        entity: format!("task/{id}"),
        kind: converge_store::TimerKind::Schedule,
        event_type: "task.late".into(),
        data: serde_json::json!({}),
        due_at_ms: 3_000,
        catch_up: converge_model::CatchUp::FireLate,
        rule: "r".into(),
        rule_hash: "h".into(),
    };
    // One event holding two channels, of campaigns in two partitions.
    let hold = |campaign: &str, channel: &str| GateChange::Hold {
        campaign: campaign.into(),
        channel: channel.into(),
        rule: "gate".into(),
        reason: "not approved".into(),
    };
    let campaign_in = |partition| {
        (0..)
            .map(|i| format!("campaign/c-{i}"))
            .find(|c| partition_of(c) == partition)
            .unwrap()
    };
    let (campaign, elsewhere) = (campaign_in(5), campaign_in(6));
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", &here)],
            processed: vec![ProcessedEvent {
                timers: vec![timer(&here), timer(&there)],
                gate_changes: vec![hold(&campaign, "email"), hold(&elsewhere, "social")],
                ..processed_plain(1)
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    let due = shared(&store).due_timers_in(&[5], 3_000, 10).unwrap();
    assert_eq!(
        due.iter().map(|t| t.entity.as_str()).collect::<Vec<_>>(),
        [format!("task/{here}")]
    );
    assert!(
        shared(&store)
            .due_timers_in(&[5], 2_999, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.due_timers(3_000, None, 10).unwrap().len(), 2);
    let held = shared(&store).held_sends_in(&[5]).unwrap();
    assert_eq!(
        held.iter().map(|h| h.campaign.as_str()).collect::<Vec<_>>(),
        [campaign.as_str()]
    );
    assert_eq!(shared(&store).held_sends_in(&[5, 6]).unwrap().len(), 2);
}

/// Two daemons journaling the same event at the same moment: the second
/// `INSERT` waits for the first commit and finds the event there.
#[test]
fn the_same_event_appended_at_once_by_two_daemons_is_journaled_once() {
    let Some(db) = TestDb::postgres() else { return };
    let mut store = db.open();
    let mut sql = db.sql();
    let mut first = sql.transaction().unwrap();
    let seq: i64 = first
        .query_one(
            "INSERT INTO events (source, id, type, json, received_at_ms, partition)
             VALUES ('/jira', 'e-1', 'task.updated', '{}', 1, 0) RETURNING seq",
            &[],
        )
        .unwrap()
        .get(0);
    let second = thread::scope(|scope| {
        let appending = scope.spawn(|| store.write(&appends(vec![event("/jira", "e-1")])));
        thread::sleep(Duration::from_millis(300));
        assert!(!appending.is_finished(), "waits for the first commit");
        first.commit().unwrap();
        appending.join().unwrap().unwrap()
    });
    assert_eq!(second.appended, [Appended::Duplicate { seq }]);

    // And racing for real, many times over: one New and one Duplicate each.
    let barrier = Barrier::new(2);
    let results: Vec<Vec<Appended>> = thread::scope(|scope| {
        let racer = || {
            let barrier = &barrier;
            let mut store = db.open();
            scope.spawn(move || {
                barrier.wait();
                (0..50)
                    .map(|i| {
                        let batch = appends(vec![event("/race", &format!("r-{i}"))]);
                        store.write(&batch).unwrap().appended[0]
                    })
                    .collect()
            })
        };
        let racers = [racer(), racer()];
        racers.map(|r| r.join().unwrap()).into()
    });
    for (a, b) in results[0].iter().zip(&results[1]) {
        assert_eq!(a.seq(), b.seq());
        let new = [a, b]
            .iter()
            .filter(|x| matches!(x, Appended::New { .. }))
            .count();
        assert_eq!(new, 1, "{a:?} {b:?}");
    }
}

#[test]
fn commits_that_journal_events_notify_the_listeners() {
    let Some(db) = TestDb::postgres() else { return };
    let listener = db.open();
    let mut writer = db.open();
    shared(&listener).listen("converge_events").unwrap();
    shared(&listener).listen("converge_reload").unwrap();
    assert!(
        shared(&listener)
            .wait_for_notifications(Duration::from_millis(50))
            .unwrap()
            .is_empty()
    );

    writer.write(&appends(vec![event("/jira", "e-1")])).unwrap();
    shared(&writer).notify("converge_reload", "writer").unwrap();
    let mut arrived = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while arrived.len() < 2 && Instant::now() < deadline {
        arrived.extend(
            shared(&listener)
                .wait_for_notifications(Duration::from_secs(1))
                .unwrap(),
        );
    }
    assert_eq!(
        arrived,
        [
            ("converge_events".to_string(), String::new()),
            ("converge_reload".to_string(), "writer".to_string())
        ]
    );

    // A batch that journals nothing new notifies nothing.
    writer.write(&appends(vec![event("/jira", "e-1")])).unwrap();
    assert!(
        shared(&listener)
            .wait_for_notifications(Duration::from_millis(200))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn sqlite_is_not_shared() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    let err = store
        .coordination()
        .err()
        .expect("SQLite coordinates no daemons");
    assert!(matches!(err, StoreError::NotShared), "{err}");
    let err = store
        .write(&WriteBatch {
            fences: vec![fence("partition/1", "a", 1)],
            ..appends(vec![event("/jira", "e-1")])
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::NotShared), "{err}");
    assert_eq!(store.journal_head().unwrap(), 0);
}

/// Two daemons journaling the same two events in opposite orders each
/// wait for the other's: PostgreSQL aborts one, and a store whose write
/// was the one aborted tries it again.
#[test]
fn a_write_that_deadlocks_with_another_daemons_is_tried_again() {
    let Some(db) = TestDb::postgres() else { return };
    let mut store = db.open();
    let mut sql = db.sql();
    let mut other = sql.transaction().unwrap();
    let insert = |tx: &mut ::postgres::Transaction<'_>, id: &str| {
        tx.execute(
            "INSERT INTO events (source, id, type, json, received_at_ms, partition)
             VALUES ('/jira', $1, 'task.updated', '{}', 1, 0)",
            &[&id],
        )
    };
    insert(&mut other, "e-2").unwrap();
    let written = thread::scope(|scope| {
        let writing = scope
            .spawn(|| store.write(&appends(vec![event("/jira", "e-1"), event("/jira", "e-2")])));
        // The store has journaled e-1 and waits for e-2.
        thread::sleep(Duration::from_millis(300));
        match insert(&mut other, "e-1") {
            Ok(_) => other.commit().unwrap(),
            Err(e) => {
                assert_eq!(
                    e.code(),
                    Some(&::postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
                );
                other.rollback().unwrap();
            }
        }
        writing.join().unwrap()
    });
    let written = written.unwrap();
    assert_eq!(written.appended.len(), 2);
    assert_eq!(db.open().events_after(0, 10).unwrap().len(), 2);
}
