//! The daemon as far as rules can tell, in memory: entity states, held
//! sends, pending timers and emitted events, on a clock the caller moves.
//! `converge rules test` moves it by the steps of a test case, `converge
//! replay` by the times of recorded events. Each event is decided by
//! [`Engine::decide`], as the daemon decides it; what is simulated here is
//! only what the store and the timer scheduler do around it:
//!
//! - the entity's `expect` timers waiting for the event's type are
//!   cancelled before the event's own decisions create timers, as the store
//!   commits them;
//! - emitted events are processed after the event that emitted them, in
//!   journal order: every emit of one event before the emits of those emits;
//! - moving the clock fires the timers due on the way, in due order; timers
//!   due at the same time fire together (the scheduler journals them in one
//!   commit), so none of them cancels another. A timer's event is decided at
//!   its due time (`decision_time`), and timers its decisions create fire
//!   too when they fall due on the way.
//!
//! Catch-up policies never apply: the simulated daemon is never down.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use converge_model::records::{NewTimer, TimerKind, TimerRecord, TimerRecordKind, TimerStatus};
use converge_model::{EntityKey, EntityState, Event};
use converge_rules::{Evaluation, RuleSet};

use crate::decide::{Engine, Input, Outcome, Rules};
use crate::effects::timer_event;
use crate::gates::Gates;
use crate::query::{EntitySource, InMemory, SampleLog};

/// Where an event the simulation processed came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From outside the simulation: a test step's event, a recorded event.
    Input,
    /// A timer that fell due while the clock moved.
    Timer,
    /// An `emit` decision of an event processed before it.
    Emit,
}

/// One event the simulation processed, and what the engine made of it.
pub struct Simulated<'e> {
    pub event: &'e Event,
    pub origin: Origin,
    /// The rules' `now` for it.
    pub now: DateTime<Utc>,
    /// The live decisions that took effect (the override's included), and
    /// the failures (including the decisions that could not take effect).
    pub evaluation: Evaluation,
    /// Everything else the event caused: shadow decisions, actions, gate
    /// changes, releases, timers, emitted events. Its `decisions` and
    /// `failures` are moved into `evaluation`.
    pub outcome: Outcome,
}

impl Simulated<'_> {
    /// The shadow rules' decisions.
    pub fn shadow(&self) -> impl Iterator<Item = &converge_model::Decision> {
        self.outcome
            .decisions
            .iter()
            .filter(|d| d.shadow)
            .map(|d| &d.decision)
    }
}

pub struct Simulation<'r> {
    rules: Rules<'r>,
    engine: Engine,
    /// The clock: the base of the engine's time.
    pub now: DateTime<Utc>,
    entities: HashMap<EntityKey, EntityState>,
    gates: Gates,
    timers: TimerQueue,
    /// The last journal `seq` given to an event: held sends and the ids of
    /// emitted events (`emit-<seq>-<n>`) are built from it. An event from
    /// outside with a recorded `seq` (a replay of the journal) keeps it;
    /// any other takes the next number, as a daemon journaling only these
    /// events would give it.
    seq: i64,
    /// Whether timers are kept and emitted events processed. Without, the
    /// decisions asking for them are only checked, as the processor checks
    /// them (`converge replay --no-simulate`).
    carry_out: bool,
    /// Every metric sample so far, for the rules that read the reports
    /// (`report(..)`); none is kept when no rule does.
    samples: Option<Arc<Mutex<SampleLog>>>,
}

impl<'r> Simulation<'r> {
    pub fn new(rules: Rules<'r>, engine: Engine, now: DateTime<Utc>) -> Simulation<'r> {
        Simulation {
            rules,
            engine,
            now,
            entities: HashMap::new(),
            gates: Gates::default(),
            timers: TimerQueue::default(),
            seq: 0,
            carry_out: true,
            samples: (rules.live.reads_reports()
                || rules.shadow.is_some_and(RuleSet::reads_reports))
            .then(Arc::default),
        }
    }

    /// Live rules only, no routes: what a rule test without a config runs.
    pub fn of_rules(rules: &'r RuleSet, max_emit_depth: u32, now: DateTime<Utc>) -> Simulation<'r> {
        Simulation::new(
            Rules {
                live: rules,
                shadow: None,
            },
            Engine {
                routes: Vec::new(),
                max_emit_depth,
                ..Engine::default()
            },
            now,
        )
    }

    /// Timers and emits are checked, never kept or processed.
    pub fn without_timers_and_emits(mut self) -> Simulation<'r> {
        self.carry_out = false;
        self
    }

    /// An entity's state before the first event.
    pub fn insert_entity(&mut self, state: EntityState) {
        self.entities.insert(state.key(), state);
    }

    /// An entity's state now.
    pub fn entity(&self, key: &EntityKey) -> Option<&EntityState> {
        self.entities.get(key)
    }

    /// The entity states and pending timers now, for rules' queries.
    fn in_memory(&self) -> InMemory {
        let mut timers: HashMap<String, Vec<TimerRecord>> = HashMap::new();
        let mut pending: Vec<&Pending> = self
            .timers
            .heap
            .iter()
            .map(|Reverse(p)| p)
            .filter(|p| !self.timers.cancelled.contains(&p.id))
            .collect();
        pending.sort_by_key(|p| p.order());
        for p in pending {
            timers
                .entry(p.timer.entity.clone())
                .or_default()
                .push(record(p.id, p.timer.clone()));
        }
        InMemory {
            entities: self
                .entities
                .iter()
                .map(|(key, state)| (key.to_string(), state.clone()))
                .collect(),
            timers,
            samples: self.samples.clone().unwrap_or_default(),
        }
    }

    /// Every entity's state now, in no particular order.
    pub fn entities(&self) -> impl Iterator<Item = &EntityState> {
        self.entities.values()
    }

    /// The sends held now.
    pub fn gates(&self) -> &Gates {
        &self.gates
    }

    /// Timers created and neither fired nor cancelled.
    pub fn pending_timers(&self) -> usize {
        self.timers.pending()
    }

    /// Moves the clock to `until` (never back), firing every timer due by
    /// then as the scheduler would, and handing each event processed on the
    /// way to `each`. Returns how many timers fired; more than
    /// `max_firings` (a rule rescheduling itself in a loop) stops it with an
    /// error.
    pub fn advance_to(
        &mut self,
        until: DateTime<Utc>,
        max_firings: Option<usize>,
        each: &mut impl FnMut(Simulated<'_>),
    ) -> Result<usize, String> {
        let until_ms = until.timestamp_millis();
        let mut fired = 0;
        while let Some(due_ms) = self.timers.next_due(until_ms) {
            let firing = self.timers.pop_due(due_ms);
            fired += firing.len();
            if max_firings.is_some_and(|max| fired > max) {
                return Err(format!(
                    "more than {} timers fired while advancing to {}; is a rule scheduling in a loop?",
                    max_firings.unwrap_or_default(),
                    until.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                ));
            }
            let events = firing
                .iter()
                .map(|record| timer_event(record, false))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a timer cannot make a valid event: {e}"))?;
            if let Some(due) = events.first().and_then(|e| e.time) {
                self.now = self.now.max(due);
            }
            let mut queue = VecDeque::new();
            for event in &events {
                self.process(event, Origin::Timer, &mut queue, each)?;
            }
            self.drain(queue, each)?;
        }
        self.now = self.now.max(until);
        Ok(fired)
    }

    /// Processes `event` at the clock's time, then the events it emits,
    /// then the events those emit, ...
    pub fn run(
        &mut self,
        event: &Event,
        origin: Origin,
        each: &mut impl FnMut(Simulated<'_>),
    ) -> Result<(), String> {
        self.run_recorded(event, origin, None, each)
    }

    /// [`run`](Self::run) for an event the journal numbered `seq`: it is
    /// decided under that `seq`, so what is derived from it (the ids of
    /// the events it emits, the keys of the sends it releases) is what the
    /// daemon derived. Events simulated after it number on from there.
    pub fn run_recorded(
        &mut self,
        event: &Event,
        origin: Origin,
        seq: Option<i64>,
        each: &mut impl FnMut(Simulated<'_>),
    ) -> Result<(), String> {
        let mut queue = VecDeque::new();
        self.process_as(event, origin, seq, &mut queue, each)?;
        self.drain(queue, each)
    }

    fn drain(
        &mut self,
        mut queue: VecDeque<Event>,
        each: &mut impl FnMut(Simulated<'_>),
    ) -> Result<(), String> {
        while let Some(event) = queue.pop_front() {
            self.process(&event, Origin::Emit, &mut queue, each)?;
        }
        Ok(())
    }

    /// What the daemon does with one event: the engine decides it; the
    /// store's part (cancel the expects it is, keep its timers, journal its
    /// emits) is done here. The events it emits go to the back of `queue`.
    fn process(
        &mut self,
        event: &Event,
        origin: Origin,
        queue: &mut VecDeque<Event>,
        each: &mut impl FnMut(Simulated<'_>),
    ) -> Result<(), String> {
        self.process_as(event, origin, None, queue, each)
    }

    fn process_as(
        &mut self,
        event: &Event,
        origin: Origin,
        recorded_seq: Option<i64>,
        queue: &mut VecDeque<Event>,
        each: &mut impl FnMut(Simulated<'_>),
    ) -> Result<(), String> {
        let seq = recorded_seq.unwrap_or(self.seq + 1);
        self.seq = self.seq.max(seq);
        let key = event.entity_key();
        let entity = key.as_ref().and_then(|key| {
            self.timers.cancel_expects(&key.to_string(), &event.ty);
            self.entities.remove(key)
        });
        // Only the events a querying rule handles pay for a snapshot.
        let queries = self.rules.live.queries_for(&event.ty)
            || self.rules.shadow.is_some_and(|s| s.queries_for(&event.ty));
        let entities = queries.then(|| Arc::new(self.in_memory()) as Arc<dyn EntitySource>);
        let mut outcome = self.engine.decide(
            self.rules,
            Input {
                seq,
                event,
                entity,
                clock: self.now,
                entities,
            },
            &mut self.gates,
        )?;
        if let Some(state) = outcome.entity.take() {
            self.entities.insert(state.key(), state.clone());
            outcome.entity = Some(state);
        }
        if let Some(samples) = &self.samples {
            let mut log = samples.lock().map_err(|_| "the samples are poisoned")?;
            outcome.samples.iter().for_each(|s| log.push(s));
        }
        if self.carry_out {
            // The rules' `cancel_expects` (the arrival was cancelled
            // above), before the timers this event creates.
            for ended in &outcome.cancel_expects {
                self.timers.cancel_expects(&ended.entity, &ended.event_type);
            }
            for timer in std::mem::take(&mut outcome.timers) {
                self.timers.push(timer.clone());
                outcome.timers.push(timer);
            }
            queue.extend(outcome.emitted.iter().cloned());
        }
        let mut evaluation = Evaluation {
            failures: std::mem::take(&mut outcome.failures),
            notes: std::mem::take(&mut outcome.notes),
            ..Evaluation::default()
        };
        evaluation.decisions = outcome
            .decisions
            .iter()
            .filter(|d| !d.shadow)
            .map(|d| d.decision.clone())
            .collect();
        each(Simulated {
            event,
            origin,
            now: outcome.now,
            evaluation,
            outcome,
        });
        Ok(())
    }
}

/// The pending timers: a heap by due time for firing, and the `expect`
/// timers by entity for cancelling, so neither costs a scan of every timer.
#[derive(Default)]
struct TimerQueue {
    /// Soonest first; equal due times in creation order. Cancelled timers
    /// stay until they reach the top.
    heap: BinaryHeap<Reverse<Pending>>,
    /// Pending `expect` timers by entity: id and the type that cancels it.
    expects: HashMap<String, Vec<(i64, String)>>,
    /// Ids of cancelled timers still in `heap`.
    cancelled: HashSet<i64>,
    /// Timers created so far: the next one's id is this plus one, as the
    /// store numbers them.
    created: i64,
}

struct Pending {
    id: i64,
    timer: NewTimer,
}

impl Pending {
    fn order(&self) -> (i64, i64) {
        (self.timer.due_at_ms, self.id)
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Pending) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Pending) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Pending) -> Ordering {
        self.order().cmp(&other.order())
    }
}

impl TimerQueue {
    fn push(&mut self, timer: NewTimer) {
        self.created += 1;
        let id = self.created;
        if let TimerKind::Expect { expect_type } = &timer.kind {
            self.expects
                .entry(timer.entity.clone())
                .or_default()
                .push((id, expect_type.clone()));
        }
        self.heap.push(Reverse(Pending { id, timer }));
    }

    fn pending(&self) -> usize {
        self.heap.len() - self.cancelled.len()
    }

    /// An event of `event_type` about `entity` arrived, or a rule cancelled
    /// the expects waiting for one.
    fn cancel_expects(&mut self, entity: &str, event_type: &str) {
        if self.expects.is_empty() {
            return;
        }
        let Some(waiting) = self.expects.get_mut(entity) else {
            return;
        };
        waiting.retain(|(id, expected)| {
            let arrived = expected == event_type;
            if arrived {
                self.cancelled.insert(*id);
            }
            !arrived
        });
        if waiting.is_empty() {
            self.expects.remove(entity);
        }
    }

    /// The due time of the next timer, if it is due by `until_ms`.
    fn next_due(&mut self, until_ms: i64) -> Option<i64> {
        while let Some(Reverse(top)) = self.heap.peek() {
            if !self.cancelled.remove(&top.id) {
                return Some(top.timer.due_at_ms).filter(|due| *due <= until_ms);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes every pending timer due at `due_ms`, in creation order, as the
    /// store would read them back.
    fn pop_due(&mut self, due_ms: i64) -> Vec<TimerRecord> {
        let mut due = Vec::new();
        while self
            .heap
            .peek()
            .is_some_and(|Reverse(top)| top.timer.due_at_ms == due_ms)
        {
            let Some(Reverse(Pending { id, timer })) = self.heap.pop() else {
                break;
            };
            if self.cancelled.remove(&id) {
                continue;
            }
            if matches!(timer.kind, TimerKind::Expect { .. })
                && let Some(waiting) = self.expects.get_mut(&timer.entity)
            {
                waiting.retain(|(other, _)| *other != id);
                if waiting.is_empty() {
                    self.expects.remove(&timer.entity);
                }
            }
            due.push(record(id, timer));
        }
        due
    }
}

/// A timer as the store reads it back when it falls due.
fn record(id: i64, timer: NewTimer) -> TimerRecord {
    let (kind, expect_type) = match timer.kind {
        TimerKind::Schedule => (TimerRecordKind::Schedule, None),
        TimerKind::Expect { expect_type } => (TimerRecordKind::Expect, Some(expect_type)),
    };
    TimerRecord {
        id,
        entity: timer.entity,
        kind,
        event_type: timer.event_type,
        data: timer.data,
        expect_type,
        due_at_ms: timer.due_at_ms,
        catch_up: timer.catch_up,
        rule: timer.rule,
        rule_hash: timer.rule_hash,
        created_by_seq: 0,
        status: TimerStatus::Pending,
        fired_seq: None,
        closed_at_ms: None,
        cancelled_by: None,
        cancel_reason: None,
    }
}

#[cfg(test)]
mod tests {
    use converge_rules::{RuleLimits, RuleSource};
    use serde_json::json;

    use super::*;

    fn rules(source: &str) -> RuleSet {
        RuleSet::compile(
            vec![RuleSource {
                name: "r".into(),
                path: "rules/r.rhai".into(),
                source: source.into(),
            }],
            &RuleLimits::default(),
        )
        .unwrap()
    }

    fn event(id: &str, ty: &str, time: &str) -> Event {
        Event::from_value(
            json!({"specversion": "1.0", "id": id, "source": "/t", "type": ty,
            "subject": "task/T-1", "time": time}),
        )
        .unwrap()
    }

    fn at(time: &str) -> DateTime<Utc> {
        time.parse().unwrap()
    }

    /// Every event processed, as `origin id type now: decision kinds`.
    fn log(trail: &mut Vec<String>) -> impl FnMut(Simulated<'_>) + '_ {
        |p| {
            let kinds: Vec<&str> = p
                .evaluation
                .decisions
                .iter()
                .map(|d| d.kind.name())
                .collect();
            let failures: Vec<&str> = p
                .evaluation
                .failures
                .iter()
                .map(|f| f.message.as_str())
                .collect();
            trail.push(format!(
                "{:?} {} {} {}: {kinds:?} {failures:?}",
                p.origin,
                p.event.id,
                p.event.ty,
                p.now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ));
        }
    }

    /// What rows a query reads is spent from the rule's operation budget,
    /// 50 each: three tasks or three report rows are 150 operations.
    #[test]
    fn queries_spend_the_rules_operation_budget() {
        let source = r#"
            if event.type == "count" {
                let n = entities(#{ kind: "task" }).len();
                notify("ops", `${n}`);
            } else if event.type == "weekly" {
                let rows = report(#{ metric: "exception_rate", by: "owner" });
                notify("ops", `${rows.len()}`);
            }
        "#;
        let limits = |max_operations| RuleLimits {
            max_operations,
            ..RuleLimits::default()
        };
        let run = |max_operations| {
            let rules = RuleSet::compile(
                vec![RuleSource {
                    name: "r".into(),
                    path: "rules/r.rhai".into(),
                    source: source.into(),
                }],
                &limits(max_operations),
            )
            .unwrap();
            let mut sim = Simulation::of_rules(&rules, 2, at("2026-01-01T00:00:00Z"));
            let mut trail = Vec::new();
            for (i, owner) in ["ana", "ben", "cy"].iter().enumerate() {
                let e = Event::from_value(json!({"specversion": "1.0", "id": format!("t{i}"),
                    "source": "/t", "type": "task.updated", "subject": format!("task/T-{i}"),
                    "data": {"owner": owner}}))
                .unwrap();
                sim.run(&e, Origin::Input, &mut |_| {}).unwrap();
            }
            for ty in ["count", "weekly"] {
                sim.run(
                    &event(ty, ty, "2026-01-01T00:00:00Z"),
                    Origin::Input,
                    &mut log(&mut trail),
                )
                .unwrap();
            }
            trail
        };
        assert_eq!(
            run(10_000),
            [
                r#"Input count count 2026-01-01T00:00:00Z: ["notify"] []"#,
                r#"Input weekly weekly 2026-01-01T00:00:00Z: ["notify"] []"#,
            ]
        );
        let over = run(120);
        assert!(
            over[0].contains(
                "entities: the queries of this run read more entities than its \
                 operation budget allows (50 operations each, 120 in all): narrow the filter"
            ),
            "{over:?}"
        );
        assert!(
            over[1].contains(
                "report: the queries of this run read more than its operation \
                 budget allows (50 operations each, 120 in all): narrow the filter"
            ),
            "{over:?}"
        );
    }

    #[test]
    fn a_recorded_event_keeps_its_journal_seq_and_simulated_ones_number_on_from_it() {
        let rules =
            rules(r#"if event.type == "start" || event.type == "relay" { emit("relay"); }"#);
        let mut sim = Simulation::of_rules(&rules, 2, at("2026-01-01T00:00:00Z"));
        let mut trail = Vec::new();
        sim.run_recorded(
            &event("e1", "start", "2026-01-01T00:00:00Z"),
            Origin::Input,
            Some(41),
            &mut log(&mut trail),
        )
        .unwrap();
        // An event without a recorded seq (a rule test's) takes the next.
        sim.run(
            &event("e2", "start", "2026-01-01T00:00:00Z"),
            Origin::Input,
            &mut log(&mut trail),
        )
        .unwrap();
        assert_eq!(
            trail,
            [
                r#"Input e1 start 2026-01-01T00:00:00Z: ["emit"] []"#,
                r#"Emit emit-41-1 relay 2026-01-01T00:00:00Z: ["emit"] []"#,
                r#"Emit emit-42-1 relay 2026-01-01T00:00:00Z: [] ["emit of `relay` refused: it would be 3 emits deep, past rules.max_emit_depth (2); is a rule emitting in a loop?"]"#,
                r#"Input e2 start 2026-01-01T00:00:00Z: ["emit"] []"#,
                r#"Emit emit-44-1 relay 2026-01-01T00:00:00Z: ["emit"] []"#,
                r#"Emit emit-45-1 relay 2026-01-01T00:00:00Z: [] ["emit of `relay` refused: it would be 3 emits deep, past rules.max_emit_depth (2); is a rule emitting in a loop?"]"#,
            ]
        );
    }

    #[test]
    fn timers_fire_in_due_order_and_together_when_due_together() {
        let rules = rules(
            r#"
            if event.type == "start" {
                schedule("2h", "late");
                schedule("1h", "ping");
                expect("ping", "1h", "no.ping");
            } else if event.type == "ping" {
                emit("pinged");
            }
            "#,
        );
        let mut sim = Simulation::of_rules(&rules, 8, at("2026-01-01T00:00:00Z"));
        let mut trail = Vec::new();
        sim.run(
            &event("e1", "start", "2026-01-01T00:00:00Z"),
            Origin::Input,
            &mut log(&mut trail),
        )
        .unwrap();
        assert_eq!(sim.pending_timers(), 3);
        let fired = sim
            .advance_to(at("2026-01-01T01:30:00Z"), None, &mut log(&mut trail))
            .unwrap();
        assert_eq!(fired, 2);
        assert_eq!(sim.now, at("2026-01-01T01:30:00Z"));
        assert_eq!(sim.pending_timers(), 1);
        assert_eq!(
            trail,
            [
                r#"Input e1 start 2026-01-01T00:00:00Z: ["schedule", "schedule", "expect"] []"#,
                // Due together, in creation order: the ping cannot cancel
                // the expect fired in the same commit.
                r#"Timer timer-2 ping 2026-01-01T01:00:00Z: ["emit"] []"#,
                r#"Timer timer-3 no.ping 2026-01-01T01:00:00Z: [] []"#,
                r#"Emit emit-2-1 pinged 2026-01-01T01:00:00Z: [] []"#,
            ]
        );
        let err = sim
            .advance_to(at("2026-01-02T00:00:00Z"), Some(0), &mut |_| {})
            .unwrap_err();
        assert!(err.contains("more than 0 timers fired"), "{err}");
    }

    #[test]
    fn an_event_of_the_expected_type_cancels_only_its_entitys_expects() {
        let rules = rules(
            r#"
            if event.type == "task.handoff" {
                expect("task.updated", "48h", "task.stalled");
                expect("task.viewed", "48h", "task.unseen");
            }
            "#,
        );
        let mut sim = Simulation::of_rules(&rules, 8, at("2026-01-01T00:00:00Z"));
        let mut trail = Vec::new();
        sim.run(
            &event("h", "task.handoff", "2026-01-01T00:00:00Z"),
            Origin::Input,
            &mut |_| {},
        )
        .unwrap();
        let mut other = event("u2", "task.updated", "2026-01-01T01:00:00Z");
        other.subject = Some("task/T-2".into());
        sim.run(&other, Origin::Input, &mut |_| {}).unwrap();
        assert_eq!(sim.pending_timers(), 2);
        sim.run(
            &event("u1", "task.updated", "2026-01-01T02:00:00Z"),
            Origin::Input,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(sim.pending_timers(), 1);
        sim.advance_to(at("2026-01-10T00:00:00Z"), None, &mut log(&mut trail))
            .unwrap();
        assert_eq!(
            trail,
            [r#"Timer timer-2 task.unseen 2026-01-03T00:00:00Z: [] []"#]
        );
        assert_eq!(sim.pending_timers(), 0);
        assert!(sim.timers.expects.is_empty());
    }

    #[test]
    fn without_timers_and_emits_the_decisions_are_only_checked() {
        let rules = rules(
            r#"
            schedule("1h", "later");
            emit("again");
            "#,
        );
        let mut sim =
            Simulation::of_rules(&rules, 0, at("2026-01-01T00:00:00Z")).without_timers_and_emits();
        let mut trail = Vec::new();
        sim.run(
            &event("e1", "start", "2026-01-01T00:00:00Z"),
            Origin::Input,
            &mut log(&mut trail),
        )
        .unwrap();
        sim.advance_to(at("2026-01-02T00:00:00Z"), None, &mut log(&mut trail))
            .unwrap();
        assert_eq!(
            trail,
            [
                "Input e1 start 2026-01-01T00:00:00Z: [\"schedule\"] [\"emit of `again` refused: it would be 1 emits deep, past rules.max_emit_depth (0); is a rule emitting in a loop?\"]"
            ]
        );
        assert_eq!(sim.pending_timers(), 0);
    }
}
