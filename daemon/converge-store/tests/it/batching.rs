//! A batch leaves what writing its events one by one would leave. The
//! journal writer gathers whatever is waiting into one batch, so how the
//! processed events fall into batches is chance; what the store keeps must
//! not depend on it. Most at stake: an expect created by one event and
//! ended by a later one of the same batch, which the write works out
//! before the timers exist.

use converge_model::EntityState;
use converge_model::{CatchUp, EntityKey};
use converge_store::{
    ExpectedArrival, NewDecision, NewTimer, PendingAction, ProcessedEvent, TimerKind, TimerRecord,
    WriteBatch,
};
use proptest::prelude::*;
use serde_json::json;

use crate::helpers::{TestDb, action, appends, entity, event, notify, processed_plain};

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

/// The events, and where the batches end: each cut is the number of
/// events before it, so `[2, 5]` writes events 0-1, 2-4 and the rest.
fn plan() -> impl Strategy<Value = (Vec<Planned>, Vec<usize>)> {
    prop::collection::vec(planned(), 1..12).prop_flat_map(|events| {
        let n = events.len();
        (
            Just(events),
            prop::collection::btree_set(1..n.max(2), 0..n)
                .prop_map(|cuts| cuts.into_iter().collect::<Vec<_>>()),
        )
    })
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
    actions: Vec<(i64, i64, i64)>,
    created: usize,
    cancelled: usize,
    pending_timers: i64,
}

fn write_plan(db: &TestDb, events: &[Planned], cuts: &[usize]) -> Kept {
    let mut store = db.open();
    // Journaled first, each about its planned entity.
    let journaled: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(n, planned)| {
            let mut about = event("/jira", &format!("e-{n}"));
            let subject = key(planned.entity);
            about.json = about.json.replace(&format!("task/e-{n}"), &subject);
            about.subject = Some(subject);
            about
        })
        .collect();
    store.write(&appends(journaled)).unwrap();

    let (mut created, mut cancelled) = (0, 0);
    let mut actions: Vec<PendingAction> = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([events.len()]) {
        let result = store
            .write(&WriteBatch {
                processed: (start..end).map(|n| processed(n, &events[n])).collect(),
                ..WriteBatch::default()
            })
            .unwrap();
        created += result.timers_created;
        cancelled += result.timers_cancelled;
        actions.extend(result.actions);
        start = end;
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
            .map(|a| (a.id, a.event_seq, a.decision_id))
            .collect(),
        created,
        cancelled,
        pending_timers: store.pending_timer_count().unwrap(),
    }
}

/// The plan written one event per batch, and as `cuts` batch it: the
/// same entity states, timers (ids, statuses, when and why each closed),
/// actions and counts.
fn batches_leave_what_one_by_one_leaves(
    fresh: impl Fn() -> Option<TestDb>,
    events: &[Planned],
    cuts: &[usize],
) -> Result<(), TestCaseError> {
    let (Some(one_by_one), Some(batched)) = (fresh(), fresh()) else {
        return Ok(());
    };
    let every: Vec<usize> = (1..events.len()).collect();
    let expected = write_plan(&one_by_one, events, &every);
    let kept = write_plan(&batched, events, cuts);
    prop_assert_eq!(kept, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn sqlite_batches_leave_what_one_by_one_leaves((events, cuts) in plan()) {
        batches_leave_what_one_by_one_leaves(|| Some(TestDb::sqlite()), &events, &cuts)?;
    }
}

proptest! {
    // Two databases of its own per case on the server: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn postgres_batches_leave_what_one_by_one_leaves((events, cuts) in plan()) {
        batches_leave_what_one_by_one_leaves(TestDb::postgres, &events, &cuts)?;
    }
}
