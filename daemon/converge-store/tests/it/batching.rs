//! A batch leaves what writing its events one by one would leave. The
//! journal writer gathers whatever is waiting into one batch, so how the
//! processed events fall into batches is chance; what the store keeps must
//! not depend on it. Most at stake: an expect created by one event and
//! ended by a later one of the same batch, which the write works out
//! before the timers exist, and two outcomes of one action in a batch,
//! which PostgreSQL records in rounds.

use converge_model::EntityState;
use std::fmt::Debug;
use std::ops::Range;

use converge_model::{CatchUp, EntityKey};
use converge_store::{
    ActionDetail, ActionOutcome, Appended, Counts, ExpectedArrival, FiredTimer, NewDecision,
    NewTimer, OutcomeKind, PendingAction, ProcessedEvent, TimerKind, TimerRecord, WriteBatch,
};
use proptest::prelude::*;
use serde_json::json;

use crate::helpers::{
    TestDb, action, appends, entity, event, event_about, notify, processed_plain,
};

const ENTITIES: [&str; 2] = ["A", "B"];
const TYPES: [&str; 2] = ["task.approved", "task.reviewed"];

/// One processed event of the plan: about `ENTITIES[entity]`, arriving as
/// `TYPES[ty]` for the expects waiting for it.
#[derive(Debug, Clone)]
struct Planned {
    entity: usize,
    ty: usize,
    /// An expect it creates, for an event of `TYPES[t]`.
    expects: Option<usize>,
    /// Its rule's `cancel_expects` of `TYPES[t]`.
    rule_cancels: Option<usize>,
    /// Whether it makes a decision with an action.
    acts: bool,
}

fn planned() -> impl Strategy<Value = Planned> {
    (
        0..ENTITIES.len(),
        0..TYPES.len(),
        proptest::option::of(0..TYPES.len()),
        proptest::option::weighted(0.2, 0..TYPES.len()),
        any::<bool>(),
    )
        .prop_map(|(entity, ty, expects, rule_cancels, acts)| Planned {
            entity,
            ty,
            expects,
            rule_cancels,
            acts,
        })
}

/// What an attempt of a planned outcome ended in.
#[derive(Debug, Clone, Copy)]
enum Ended {
    Retry,
    Done,
    DeadLetter,
}

/// The events to process, then outcomes of the actions they create, each
/// with where its batches end: a cut is the number of items before it, so
/// `[2, 5]` writes items 0-1, 2-4 and the rest.
#[derive(Debug, Clone)]
struct Plan {
    events: Vec<Planned>,
    event_cuts: Vec<usize>,
    /// Each names an action by its place among those created (modulo
    /// their number): two outcomes may name one action.
    outcomes: Vec<(prop::sample::Index, Ended)>,
    outcome_cuts: Vec<usize>,
}

/// Cuts of `n` items into batches: none (one batch) up to every one.
fn cuts(n: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::btree_set(1..n.max(2), 0..n.max(1))
        .prop_map(move |cuts| cuts.into_iter().filter(|&c| c < n).collect())
}

fn plan() -> impl Strategy<Value = Plan> {
    let ended = prop_oneof![
        Just(Ended::Retry),
        Just(Ended::Done),
        Just(Ended::DeadLetter)
    ];
    (
        prop::collection::vec(planned(), 1..12),
        prop::collection::vec((any::<prop::sample::Index>(), ended), 0..10),
    )
        .prop_flat_map(|(events, outcomes)| {
            let (n, m) = (events.len(), outcomes.len());
            (Just(events), cuts(n), Just(outcomes), cuts(m))
        })
        .prop_map(|(events, event_cuts, outcomes, outcome_cuts)| Plan {
            events,
            event_cuts,
            outcomes,
            outcome_cuts,
        })
}

/// The batches `cuts` makes of `items`; `None`: one item per batch.
fn batches<T>(items: &[T], cuts: Option<&[usize]>) -> Vec<Range<usize>> {
    let Some(cuts) = cuts else {
        return (0..items.len()).map(|n| n..n + 1).collect();
    };
    let mut start = 0;
    let mut ranges = Vec::new();
    for end in cuts.iter().copied().chain([items.len()]) {
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// What `write` keeps on a fresh database writing one item per batch
/// (`as_planned` false) and on another writing the batches the plan cut
/// (true): the same, or the case fails.
fn same_either_way<T: PartialEq + Debug>(
    fresh: impl Fn() -> Option<TestDb>,
    write: impl Fn(&TestDb, bool) -> T,
) -> Result<Option<T>, TestCaseError> {
    let (Some(one_at_a_time), Some(batched)) = (fresh(), fresh()) else {
        return Ok(None);
    };
    let expected = write(&one_at_a_time, false);
    let kept = write(&batched, true);
    prop_assert_eq!(&kept, &expected);
    Ok(Some(kept))
}

/// [`same_either_way`] on PostgreSQL, and what it keeps is what SQLite
/// keeps for the same batches: the same ids, statuses and answers.
fn same_either_way_and_as_on_sqlite<T: PartialEq + Debug>(
    write: impl Fn(&TestDb, bool) -> T,
) -> Result<(), TestCaseError> {
    if let Some(kept) = same_either_way(TestDb::postgres, &write)? {
        prop_assert_eq!(kept, write(&TestDb::sqlite(), true));
    }
    Ok(())
}

fn key(entity: usize) -> String {
    format!("task/{}", ENTITIES[entity])
}

/// Event `n` of the plan, journaled as `seq` n + 1.
fn processed(n: usize, planned: &Planned) -> ProcessedEvent {
    let seq = n as i64 + 1;
    let subject = key(planned.entity);
    let mut cancel_expects = vec![ExpectedArrival::came(&subject, TYPES[planned.ty])];
    if let Some(t) = planned.rule_cancels {
        cancel_expects.push(ExpectedArrival::by_rule(&subject, TYPES[t], "ladder"));
    }
    let timers = planned
        .expects
        .map(|t| NewTimer {
            entity: subject.clone(),
            kind: TimerKind::Expect {
                expect_type: TYPES[t].into(),
            },
            event_type: "task.stalled".into(),
            data: json!({"n": n}),
            due_at_ms: 100_000 + seq,
            catch_up: CatchUp::FireLate,
            rule: "stalled".into(),
            rule_hash: "stalled-hash".into(),
        })
        .into_iter()
        .collect();
    let decisions = planned
        .acts
        .then(|| NewDecision {
            decision: notify("ladder", &format!("to-{n}")),
            shadow: false,
            actions: vec![action("slack")],
        })
        .into_iter()
        .collect();
    ProcessedEvent {
        entity: Some(entity(ENTITIES[planned.entity], &format!("stage-{n}")).into()),
        processed_at_ms: 10_000 + seq * 10,
        cancel_expects,
        timers,
        decisions,
        ..processed_plain(seq)
    }
}

/// What the store keeps after the plan, in a form two databases compare by.
#[derive(Debug, PartialEq)]
struct Kept {
    entities: Vec<Option<EntityState>>,
    timers: Vec<TimerRecord>,
    /// Each action as it ended, with its history, without the database's
    /// instance (each database has its own).
    actions: Vec<ActionDetail>,
    created: usize,
    cancelled: usize,
    dead_lettered: usize,
    pending_timers: i64,
    counts: Counts,
}

/// The plan written in its batches (`as_planned`) or one item per batch.
fn write_plan(db: &TestDb, plan: &Plan, as_planned: bool) -> Kept {
    let mut store = db.open();
    // Journaled first, each about its planned entity.
    let journaled: Vec<_> = plan
        .events
        .iter()
        .enumerate()
        .map(|(n, planned)| event_about(&format!("e-{n}"), ENTITIES[planned.entity]))
        .collect();
    store.write(&appends(journaled)).unwrap();

    let (mut created, mut cancelled, mut dead_lettered) = (0, 0, 0);
    let mut actions: Vec<PendingAction> = Vec::new();
    for batch in batches(&plan.events, as_planned.then_some(&plan.event_cuts)) {
        let result = store
            .write(&WriteBatch {
                processed: batch.map(|n| processed(n, &plan.events[n])).collect(),
                ..WriteBatch::default()
            })
            .unwrap();
        created += result.timers_created;
        cancelled += result.timers_cancelled;
        actions.extend(result.actions);
    }
    if !actions.is_empty() {
        for batch in batches(&plan.outcomes, as_planned.then_some(&plan.outcome_cuts)) {
            let outcomes = batch
                .map(|k| outcome(k, &plan.outcomes[k], &actions))
                .collect();
            let result = store
                .write(&WriteBatch {
                    outcomes,
                    ..WriteBatch::default()
                })
                .unwrap();
            dead_lettered += result.dead_lettered;
        }
    }

    let keys: Vec<EntityKey> = (0..ENTITIES.len())
        .map(|e| EntityKey::parse(&key(e)).unwrap())
        .collect();
    let mut timers: Vec<TimerRecord> = keys
        .iter()
        .flat_map(|key| store.entity_timers(key, false, 100).unwrap())
        .collect();
    timers.sort_by_key(|t| t.id);
    Kept {
        entities: keys.iter().map(|key| store.entity(key).unwrap()).collect(),
        timers,
        actions: actions
            .iter()
            .map(|a| {
                let mut detail = store.action(a.id).unwrap().unwrap();
                detail.action.instance = None;
                detail
            })
            .collect(),
        created,
        cancelled,
        dead_lettered,
        pending_timers: store.pending_timer_count().unwrap(),
        counts: store.counts().unwrap(),
    }
}

/// Outcome `k` of the plan, for one of `actions`: the attempt it says.
fn outcome(
    k: usize,
    (which, ended): &(prop::sample::Index, Ended),
    actions: &[PendingAction],
) -> ActionOutcome {
    let k = k as i64;
    ActionOutcome {
        action_id: actions[which.index(actions.len())].id,
        result: match ended {
            Ended::Retry => OutcomeKind::Retry {
                next_attempt_at_ms: 50_000 + k,
            },
            Ended::Done => OutcomeKind::Done {
                external_id: Some(format!("x-{k}")),
            },
            Ended::DeadLetter => OutcomeKind::DeadLetter,
        },
        attempts: u32::try_from(k).unwrap() + 1,
        detail: format!("attempt {k}"),
        finished_at_ms: 20_000 + k,
        lease_token: None,
    }
}

/// Events journaled in batches as `cuts` makes them, some sent twice: what
/// each append answered (its `seq`, or the `seq` it duplicates), in order.
fn journal(db: &TestDb, ids: &[usize], cuts: Option<&[usize]>) -> Vec<Appended> {
    let mut store = db.open();
    let mut answered = Vec::new();
    for batch in batches(ids, cuts) {
        let events = ids[batch]
            .iter()
            .map(|id| event("/jira", &format!("e-{id}")))
            .collect();
        answered.extend(store.write(&appends(events)).unwrap().appended);
    }
    answered
}

fn journal_plan() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(0_usize..5, 1..12).prop_flat_map(|ids| {
        let n = ids.len();
        (Just(ids), cuts(n))
    })
}

/// Four timers, then `fires` (timer ids, some named twice) fired in
/// batches as `cuts` makes them: what each firing answered, and the timers.
fn fire(
    db: &TestDb,
    fires: &[i64],
    cuts: Option<&[usize]>,
) -> (Vec<Option<Appended>>, Vec<TimerRecord>) {
    let mut store = db.open();
    let timers = (0..4)
        .map(|n| NewTimer {
            entity: key(0),
            kind: TimerKind::Schedule,
            event_type: "task.reminder".into(),
            data: json!({"n": n}),
            due_at_ms: 3_000 + n,
            catch_up: CatchUp::FireLate,
            rule: "reminders".into(),
            rule_hash: "reminders-hash".into(),
        })
        .collect();
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "A")],
            processed: vec![ProcessedEvent {
                timers,
                ..processed_plain(1)
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    let mut answered = Vec::new();
    for batch in batches(fires, cuts) {
        let fired_timers = fires[batch]
            .iter()
            .map(|&id| FiredTimer {
                timer_id: id,
                event: event("converge/timers", &format!("timer-{id}")),
                fired_at_ms: 5_000 + id,
            })
            .collect();
        let result = store
            .write(&WriteBatch {
                fired_timers,
                ..WriteBatch::default()
            })
            .unwrap();
        answered.extend(result.fired);
    }
    let mut timers = store
        .entity_timers(&EntityKey::parse(&key(0)).unwrap(), false, 10)
        .unwrap();
    timers.sort_by_key(|t| t.id);
    (answered, timers)
}

fn fire_plan() -> impl Strategy<Value = (Vec<i64>, Vec<usize>)> {
    prop::collection::vec(1_i64..=4, 1..10).prop_flat_map(|fires| {
        let n = fires.len();
        (Just(fires), cuts(n))
    })
}

// A batch leaves what its items written one by one leave: the same
// entity states, timers (ids, statuses, when and why each closed),
// actions (statuses, attempts, histories) and counts. An event sent
// twice is journaled once, at its first sending, and `seq`s have no
// gaps; a timer fires once, at its first mention; whether the second is
// in the same batch or a later one.
// PostgreSQL keeps, besides, what SQLite keeps.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn sqlite_batches_leave_what_one_by_one_leaves(plan in plan()) {
        same_either_way(|| Some(TestDb::sqlite()), |db, as_planned| write_plan(db, &plan, as_planned))?;
    }

    #[test]
    fn sqlite_batches_journal_what_one_by_one_journals((ids, cuts) in journal_plan()) {
        same_either_way(|| Some(TestDb::sqlite()), |db, as_planned| journal(db, &ids, as_planned.then_some(&cuts)))?;
    }

    #[test]
    fn sqlite_batches_fire_what_one_by_one_fires((fires, cuts) in fire_plan()) {
        same_either_way(|| Some(TestDb::sqlite()), |db, as_planned| fire(db, &fires, as_planned.then_some(&cuts)))?;
    }
}

proptest! {
    // Two databases of its own per case on the server: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn postgres_batches_leave_what_one_by_one_leaves(plan in plan()) {
        same_either_way_and_as_on_sqlite(|db, as_planned| write_plan(db, &plan, as_planned))?;
    }

    #[test]
    fn postgres_batches_journal_what_one_by_one_journals((ids, cuts) in journal_plan()) {
        same_either_way_and_as_on_sqlite(|db, as_planned| journal(db, &ids, as_planned.then_some(&cuts)))?;
    }

    #[test]
    fn postgres_batches_fire_what_one_by_one_fires((fires, cuts) in fire_plan()) {
        same_either_way_and_as_on_sqlite(|db, as_planned| fire(db, &fires, as_planned.then_some(&cuts)))?;
    }
}
