//! One write: a [`WriteBatch`] committed in the order it documents, the same
//! for both backends. `write` here is the order and what the order of a
//! batch's events decides; each backend says how a step is written
//! ([`WriteSteps`]): SQLite row by row through cached statements,
//! PostgreSQL one statement over arrays per kind of row, because there a
//! round trip costs far more than the rows.

use std::collections::HashMap;

use crate::StoreError;
use crate::records::{
    ActionOutcome, Appended, DeadLetterChange, DeadLetterOutcome, ExpectedArrival, FiredTimer,
    GateChange, NewEvent, NewTimer, PendingAction, ProcessedEvent, SkippedTimer, SourceState,
    TimerCancellation, TimerKind, TimerStatus, WriteBatch, WriteResult,
};

/// The steps of one write, inside the backend's transaction. Each step
/// takes every row of its kind in the batch, in the batch's order.
pub(crate) trait WriteSteps {
    /// Fails with [`StoreError::Fenced`] unless every lease the batch
    /// depends on is still held (or [`StoreError::NotShared`] where there
    /// are no leases).
    fn check_fences(&mut self, batch: &WriteBatch) -> Result<(), StoreError>;

    /// Journals each event unless its `(source, id, hook)` is there already
    /// (or earlier in `events`): new events get `seq`s in `events` order.
    fn append(&mut self, events: &[&NewEvent]) -> Result<Vec<Appended>, StoreError>;

    /// Marks the events processed, each only while it is not (the
    /// exactly-once guard): [`StoreError::AlreadyProcessed`] or
    /// [`StoreError::UnknownEvent`] otherwise.
    fn mark_processed(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError>;

    /// Writes the entities' states: each entity's last in the batch wins.
    fn upsert_entities(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError>;

    /// Inserts the decisions and their actions (the outbox, leased as the
    /// batch's `new_action_lease` says); returns the actions created, in
    /// the batch's order.
    fn insert_decisions(&mut self, batch: &WriteBatch) -> Result<Vec<PendingAction>, StoreError>;

    fn insert_rule_failures(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError>;

    fn insert_rule_notes(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError>;

    fn insert_samples(&mut self, processed: &[ProcessedEvent]) -> Result<(), StoreError>;

    /// Cancels the pending expects, created before this batch, that the
    /// arrivals end, each at the time of the first arrival that ends it,
    /// with its reason; returns how many.
    fn cancel_expects(&mut self, arrivals: &[Arrival<'_>]) -> Result<usize, StoreError>;

    /// Creates the batch's timers, with ids in the batch's order, each with
    /// the status [`batch_timers`] gave it.
    fn insert_timers(&mut self, timers: &[BatchTimer<'_>]) -> Result<(), StoreError>;

    /// One change to the held sends. Each depends on those before it (a
    /// release frees what earlier holds held), so they come one by one.
    fn record_gate_change(
        &mut self,
        seq: i64,
        at_ms: i64,
        change: &GateChange,
    ) -> Result<(), StoreError>;

    /// Marks each timer fired and journals its event, or does nothing
    /// (`None`) if it is no longer pending; a timer named twice fires at
    /// its first mention. [`StoreError::UnknownTimer`] for an id that
    /// never was.
    fn fire_timers(&mut self, fired: &[FiredTimer]) -> Result<Vec<Option<Appended>>, StoreError>;

    /// Closes the pending ones among these timers without firing them;
    /// returns how many.
    fn skip_timers(&mut self, skipped: &[SkippedTimer]) -> Result<usize, StoreError>;

    /// Records each outcome whose action is still pending, with the
    /// history and counters; adds to `result`'s dead-lettered count (and
    /// the outcomes a lease fenced off).
    fn record_outcomes(
        &mut self,
        outcomes: &[ActionOutcome],
        result: &mut WriteResult,
    ) -> Result<(), StoreError>;

    /// Retries or drops a dead letter, only while it is one.
    fn change_dead_letter(
        &mut self,
        change: &DeadLetterChange,
    ) -> Result<DeadLetterOutcome, StoreError>;

    /// Cancels the pending timers a person named, the soonest due first.
    fn cancel_timers(&mut self, cancellation: &TimerCancellation) -> Result<usize, StoreError>;

    /// Writes the sources' values, the last of each key winning.
    fn write_source_state(&mut self, states: &[SourceState]) -> Result<(), StoreError>;

    /// Retention: removes the events of `seqs` that are processed and not
    /// needed, with what was recorded about them; returns how many.
    fn prune(&mut self, seqs: &[i64]) -> Result<usize, StoreError>;
}

/// An event of the batch arriving for the expects that wait for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival<'a> {
    pub arrival: &'a ExpectedArrival,
    /// The processing time of the event: when the expects it ends close.
    pub at_ms: i64,
}

/// A timer the batch creates, and whether a later event of the same batch
/// already ended it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchTimer<'a> {
    pub timer: &'a NewTimer,
    pub created_by_seq: i64,
    /// An expect that a later event of the batch arrives for: created
    /// cancelled, at that event's processing time, as if that event's
    /// cancellation had run after it was created.
    pub cancelled: Option<Arrival<'a>>,
}

impl BatchTimer<'_> {
    pub(crate) fn status(&self) -> TimerStatus {
        match self.cancelled {
            Some(_) => TimerStatus::Cancelled,
            None => TimerStatus::Pending,
        }
    }

    pub(crate) fn closed_at_ms(&self) -> Option<i64> {
        self.cancelled.map(|c| c.at_ms)
    }

    pub(crate) fn cancel_reason(&self) -> Option<String> {
        self.cancelled.map(|c| c.arrival.reason())
    }
}

/// Commits everything in `batch` through `steps`, in the order
/// [`WriteBatch`] documents. The caller owns the transaction.
pub(crate) fn write(
    steps: &mut impl WriteSteps,
    batch: &WriteBatch,
) -> Result<WriteResult, StoreError> {
    steps.check_fences(batch)?;
    let mut result = WriteResult::default();
    if !batch.appends.is_empty() {
        let appends: Vec<&NewEvent> = batch.appends.iter().collect();
        result.appended = steps.append(&appends)?;
    }

    let processed = batch.processed.as_slice();
    if !processed.is_empty() {
        steps.mark_processed(processed)?;
        steps.upsert_entities(processed)?;
        result.actions = steps.insert_decisions(batch)?;
        steps.insert_rule_failures(processed)?;
        steps.insert_rule_notes(processed)?;
        steps.insert_samples(processed)?;
        let arrivals: Vec<Arrival<'_>> = processed
            .iter()
            .flat_map(|p| {
                p.cancel_expects.iter().map(|arrival| Arrival {
                    arrival,
                    at_ms: p.processed_at_ms,
                })
            })
            .collect();
        if !arrivals.is_empty() {
            result.timers_cancelled = steps.cancel_expects(&arrivals)?;
        }
        let timers = batch_timers(processed);
        if !timers.is_empty() {
            steps.insert_timers(&timers)?;
            result.timers_created = timers.len();
            result.timers_cancelled += timers.iter().filter(|t| t.cancelled.is_some()).count();
        }
        let emits: Vec<&NewEvent> = processed.iter().flat_map(|p| &p.emits).collect();
        if !emits.is_empty() {
            result.emitted = steps.append(&emits)?;
        }
        for p in processed {
            for change in &p.gate_changes {
                steps.record_gate_change(p.seq, p.processed_at_ms, change)?;
            }
        }
    }

    if !batch.fired_timers.is_empty() {
        result.fired = steps.fire_timers(&batch.fired_timers)?;
    }
    if !batch.skipped_timers.is_empty() {
        result.timers_skipped = steps.skip_timers(&batch.skipped_timers)?;
    }
    if !batch.outcomes.is_empty() {
        steps.record_outcomes(&batch.outcomes, &mut result)?;
    }
    for change in &batch.dead_letters {
        result.dead_letters.push(steps.change_dead_letter(change)?);
    }
    for cancellation in &batch.timer_cancellations {
        let cancelled = steps.cancel_timers(cancellation)?;
        result.timers_cancelled += cancelled;
        result.cancelled_by_people.push(cancelled);
    }
    if !batch.source_state.is_empty() {
        steps.write_source_state(&batch.source_state)?;
    }
    if !batch.prune.is_empty() {
        result.pruned = steps.prune(&batch.prune)?;
    }
    Ok(result)
}

/// The timers `processed` creates, in its order, each expect that a later
/// event of the batch arrives for marked cancelled by the first such event.
pub(crate) fn batch_timers(processed: &[ProcessedEvent]) -> Vec<BatchTimer<'_>> {
    let count: usize = processed.iter().map(|p| p.timers.len()).sum();
    if count == 0 {
        return Vec::new();
    }
    let mut timers: Vec<BatchTimer<'_>> = processed
        .iter()
        .flat_map(|p| {
            p.timers.iter().map(|timer| BatchTimer {
                timer,
                created_by_seq: p.seq,
                cancelled: None,
            })
        })
        .collect();
    // Walking the batch backwards, `next_arrival` holds, for each
    // (entity, type), the earliest arrival after the current event. An
    // event's own arrivals do not end the expects it creates: those come
    // after it.
    let mut next_arrival: HashMap<(&str, &str), Arrival<'_>> = HashMap::new();
    let mut place = count;
    for p in processed.iter().rev() {
        for timer in p.timers.iter().rev() {
            place -= 1;
            if let TimerKind::Expect { expect_type } = &timer.kind {
                timers[place].cancelled = next_arrival
                    .get(&(timer.entity.as_str(), expect_type.as_str()))
                    .copied();
            }
        }
        // Backwards within the event too: its first arrival for a type
        // is the one that ends the expect (`task.done came` before a
        // rule's cancelling of the same type).
        for arrival in p.cancel_expects.iter().rev() {
            next_arrival.insert(
                (arrival.entity.as_str(), arrival.event_type.as_str()),
                Arrival {
                    arrival,
                    at_ms: p.processed_at_ms,
                },
            );
        }
    }
    timers
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_model::CatchUp;

    fn expect(entity: &str, expect_type: &str) -> NewTimer {
        NewTimer {
            entity: entity.into(),
            kind: TimerKind::Expect {
                expect_type: expect_type.into(),
            },
            event_type: "task.late".into(),
            data: serde_json::Value::Null,
            due_at_ms: 1_000,
            catch_up: CatchUp::FireLate,
            rule: "r".into(),
            rule_hash: "h".into(),
        }
    }

    fn processed(seq: i64, timers: Vec<NewTimer>, arrivals: &[(&str, &str)]) -> ProcessedEvent {
        ProcessedEvent {
            seq,
            processed_at_ms: seq * 10,
            timers,
            cancel_expects: arrivals
                .iter()
                .map(|(entity, ty)| ExpectedArrival {
                    entity: (*entity).into(),
                    event_type: (*ty).into(),
                    by_rule: None,
                })
                .collect(),
            ..ProcessedEvent::default()
        }
    }

    #[test]
    fn an_expect_is_ended_by_the_first_later_arrival_not_its_own_events() {
        let batch = [
            processed(
                1,
                vec![expect("task:a", "task.done")],
                &[("task:a", "task.done")],
            ),
            processed(2, vec![expect("task:b", "task.done")], &[]),
            processed(
                3,
                vec![],
                &[("task:a", "task.done"), ("task:b", "task.other")],
            ),
            processed(4, vec![], &[("task:a", "task.done")]),
        ];
        let timers = batch_timers(&batch);
        let ended: Vec<Option<i64>> = timers.iter().map(BatchTimer::closed_at_ms).collect();
        // task:a's expect: its own event's arrival does not count, event 3's does.
        // task:b's: nothing of its type comes after it.
        assert_eq!(ended, [Some(30), None]);
        assert_eq!(timers[0].cancel_reason().as_deref(), Some("task.done came"));
        assert_eq!(
            timers.iter().map(|t| t.created_by_seq).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn an_events_first_arrival_for_a_type_is_the_one_that_ends_an_expect() {
        let mut arriving = processed(2, vec![], &[("task:a", "task.done")]);
        arriving.cancel_expects.push(ExpectedArrival {
            entity: "task:a".into(),
            event_type: "task.done".into(),
            by_rule: Some("ladder".into()),
        });
        let batch = [
            processed(1, vec![expect("task:a", "task.done")], &[]),
            arriving,
        ];
        let timers = batch_timers(&batch);
        // As cancelling one arrival after the other would leave it: the
        // event came before its rule cancelled anything.
        assert_eq!(timers[0].cancel_reason().as_deref(), Some("task.done came"));
    }
}
