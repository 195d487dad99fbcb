//! The timer scheduler: fires the durable timers that `schedule` and `expect`
//! decisions created, when they fall due on the daemon's [`Clock`].
//!
//! One task sleeps until the next due timer, or until it is woken: by the
//! journal after a commit that created a timer due before then
//! ([`TimerWake`]), or by the manual clock moving. It then hands every due
//! timer to the journal writer (one request, one group commit), which
//! journals the timer's event and marks the timer `fired` in one
//! transaction, only if it is still pending: a timer fires once, whatever
//! crashes around it. The fired event goes to the processor like any other
//! event.
//!
//! At start the scheduler waits for the processor to take in the events
//! journaled before this start (one of them may cancel an expect), then
//! applies each timer's catch-up policy to the timers that fell due before
//! this start: `fire_late` fires them with `"late": true`, `skip` marks them
//! `skipped`.
//!
//! A timer is data: it keeps the rule name and rule hash that created it and
//! fires whether that rule has since changed or been removed; the event it
//! journals is run through the rules loaded when it fires.

use std::sync::Arc;
use std::time::Duration;

use converge_model::CatchUp;
use converge_store::{SkippedTimer, Store, TimerRecord};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use converge_engine::effects::timer_event;

use crate::clock::{Clock, sleep_or_wait};
use crate::journal::{Journal, JournalError, Stopping, TimerFiring, room};
use crate::telemetry::Metrics;
use crate::timer_wake::TimerWake;

/// Most timers fired in one journal request.
pub const FIRE_BATCH: usize = 256;
/// The longest the scheduler sleeps on the system clock without looking
/// again, so a wall-clock jump is noticed within this time.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long to wait before reading again after a storage error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// The scheduler's reads, as `StorageHealth` names them while they fail.
const TIMER_READS: &str = "timer reads";

pub struct Scheduler {
    /// Its own read connection: due timers and the next due time.
    pub reader: Store,
    pub journal: Journal,
    pub clock: Clock,
    pub metrics: Metrics,
    /// Woken by the journal when it created a timer due before the
    /// scheduler means to look again.
    pub wake: Arc<TimerWake>,
    /// The daemon's in-flight budget (`server.max_events_in_flight`),
    /// shared with the sources of outside events: a fired timer's event
    /// holds its place until its processing commits, so a backlog of due
    /// timers (a daemon down for days) waits for the rules instead of
    /// filling memory ahead of them.
    pub in_flight: Arc<Semaphore>,
    /// Most timers read and fired at once: [`FIRE_BATCH`], or the whole
    /// budget when that is smaller.
    pub page: usize,
}

impl Scheduler {
    /// Runs until `stop`; starts firing once `caught_up`.
    pub async fn run(mut self, caught_up: CancellationToken, stop: CancellationToken) {
        tokio::select! {
            () = caught_up.cancelled() => {}
            () = stop.cancelled() => return,
        }
        let started_at_ms = self.clock.now_ms();
        let mut clock_moved = self.clock.watch();
        loop {
            // Before reading: a commit from now on, until the next due time
            // is known, wakes the scheduler again.
            self.wake.awake();
            // A firing waits for its commit, which lasts as long as a
            // storage failure: stopping does not wait for it (the timers
            // stay pending, or fired if the commit came first).
            let fired = tokio::select! {
                fired = self.fire_due(started_at_ms) => fired,
                () = stop.cancelled() => break,
            };
            let wait = match fired {
                Ok(true) => continue,
                Ok(false) => self.until_next_due(),
                Err(Stopping) => break,
            };
            let planned_ms = wait.map_or(i64::MAX, |wait| {
                let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                self.clock.now_ms().saturating_add(wait_ms)
            });
            self.wake.sleeping_until(planned_ms);
            tokio::select! {
                () = sleep_or_wait(wait) => {}
                () = self.wake.notified() => {}
                () = clock_moved.moved() => {}
                () = stop.cancelled() => break,
            }
        }
        tracing::debug!("timer scheduler stopped");
    }

    /// Fires (or skips) one page of due timers. `Ok(true)`: there may be more.
    async fn fire_due(&mut self, started_at_ms: i64) -> Result<bool, Stopping> {
        let now_ms = self.clock.now_ms();
        let due =
            match tokio::task::block_in_place(|| self.reader.due_timers(now_ms, None, self.page)) {
                Ok(due) => {
                    self.journal.health().succeeded(TIMER_READS);
                    due
                }
                Err(e) => {
                    let health = self.journal.health();
                    health.failed(TIMER_READS, &e.to_string(), RETRY_AFTER_ERROR);
                    tokio::time::sleep(RETRY_AFTER_ERROR).await;
                    return Ok(true);
                }
            };
        if due.is_empty() {
            return Ok(false);
        }
        let full_page = due.len() == self.page;
        let plan = FiringPlan::of(due, now_ms, |timer| timer.due_at_ms <= started_at_ms);
        let FiringPlan {
            fire,
            skip,
            fired: fired_timers,
            skipped: skipped_timers,
        } = plan;
        // Room for the events fired (a skipped timer journals none). A
        // timer cancelled during the wait is no longer pending when the
        // journal fires it, so it is not fired.
        let permit = room(&self.in_flight, fire.len()).await?;
        match self.journal.timers(fire, skip, permit).await {
            Ok(journaled) => {
                for ((timer, late), journaled) in fired_timers.iter().zip(journaled) {
                    if journaled {
                        self.metrics
                            .timer_fired(timer.id, &timer.event_type, &timer.entity, *late);
                    }
                }
                for timer in &skipped_timers {
                    self.metrics
                        .timer_skipped(timer.id, &timer.event_type, &timer.entity);
                }
                Ok(full_page)
            }
            Err(JournalError::Closed) => Err(Stopping),
            Err(JournalError::Storage(e)) => {
                // The journal reports its failure (`StorageHealth`).
                tracing::debug!(error = %e, "cannot fire timers; retrying");
                tokio::time::sleep(RETRY_AFTER_ERROR).await;
                Ok(true)
            }
        }
    }

    /// How long to sleep before the next timer is due. `None`: sleep until
    /// woken.
    fn until_next_due(&mut self) -> Option<Duration> {
        let next = match tokio::task::block_in_place(|| self.reader.next_timer_due()) {
            Ok(next) => {
                self.journal.health().succeeded(TIMER_READS);
                next
            }
            Err(e) => {
                let health = self.journal.health();
                health.failed(TIMER_READS, &e.to_string(), RETRY_AFTER_ERROR);
                return Some(RETRY_AFTER_ERROR);
            }
        };
        match (&self.clock, next) {
            // A manual clock moves only when told, and telling wakes us.
            (Clock::Manual(_), _) => None,
            (Clock::System, None) => Some(MAX_SLEEP),
            (Clock::System, Some(due)) => {
                let wait = u64::try_from(due - self.clock.now_ms()).unwrap_or(0);
                Some(Duration::from_millis(wait).min(MAX_SLEEP))
            }
        }
    }
}

/// What to do with a page of due timers: fire them (their events made) or
/// skip them, per their catch-up policy when they are late.
pub struct FiringPlan {
    pub fire: Vec<TimerFiring>,
    pub skip: Vec<SkippedTimer>,
    /// The timers of `fire`, in order, each with whether it is late.
    pub fired: Vec<(TimerRecord, bool)>,
    /// The timers skipped by their `skip` policy (not those skipped because
    /// they cannot make a valid event).
    pub skipped: Vec<TimerRecord>,
}

impl FiringPlan {
    /// `late` says which timers fell due while nobody could fire them.
    pub fn of(
        due: Vec<TimerRecord>,
        now_ms: i64,
        late: impl Fn(&TimerRecord) -> bool,
    ) -> FiringPlan {
        let mut plan = FiringPlan {
            fire: Vec::new(),
            skip: Vec::new(),
            fired: Vec::new(),
            skipped: Vec::new(),
        };
        for timer in due {
            let late = late(&timer);
            if late && timer.catch_up == CatchUp::Skip {
                plan.skip.push(SkippedTimer {
                    timer_id: timer.id,
                    skipped_at_ms: now_ms,
                });
                plan.skipped.push(timer);
                continue;
            }
            match timer_event(&timer, late) {
                Ok(event) => {
                    plan.fire.push(TimerFiring {
                        timer_id: timer.id,
                        event,
                        fired_at_ms: now_ms,
                    });
                    plan.fired.push((timer, late));
                }
                Err(e) => {
                    // Cannot happen for timers converge wrote; skipping
                    // keeps one bad row from blocking every later timer.
                    tracing::error!(timer_id = timer.id, error = %e, "timer cannot make a valid event; skipped");
                    plan.skip.push(SkippedTimer {
                        timer_id: timer.id,
                        skipped_at_ms: now_ms,
                    });
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use converge_store::{TimerRecordKind, TimerStatus};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_timer_event_carries_its_data_and_the_timer() {
        let timer = TimerRecord {
            id: 7,
            entity: "task/T-1".into(),
            kind: TimerRecordKind::Schedule,
            event_type: "task.reminder".into(),
            data: json!({"level": 2}),
            expect_type: None,
            due_at_ms: 1_764_000_000_000,
            catch_up: CatchUp::FireLate,
            rule: "stalled".into(),
            rule_hash: "h".into(),
            created_by_seq: 3,
            status: TimerStatus::Pending,
            fired_seq: None,
            closed_at_ms: None,
            cancelled_by: None,
            cancel_reason: None,
        };
        let event = timer_event(&timer, true).unwrap();
        assert_eq!(
            (event.id.as_str(), event.source.as_str(), event.ty.as_str()),
            ("timer-7", converge_model::sources::TIMERS, "task.reminder")
        );
        assert_eq!(event.subject.as_deref(), Some("task/T-1"));
        assert_eq!(event.time.unwrap().timestamp_millis(), timer.due_at_ms);
        assert_eq!(
            event.data,
            json!({"level": 2, "timer": {"id": 7, "rule": "stalled",
                   "scheduled_for": "2025-11-24T16:00:00.000Z", "late": true}})
        );
    }
}
