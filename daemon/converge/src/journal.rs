//! The journal writer: one thread owns the database's write connection and
//! turns everything that must be durable (new events, the results of rules,
//! action outcomes) into group commits. Requests that arrive while a commit
//! is being fsynced wait for the next one and share it, so one fsync
//! acknowledges many events: this is what lets `synchronous=FULL` durability
//! run at tens of thousands of events per second.
//!
//! After a commit the writer hands its results on: newly journaled events
//! (from webhooks, fired timers and `emit` decisions, in journal order) to
//! the processor, newly created actions to the dispatcher, and a wake-up to
//! the timer scheduler when timers changed.
//!
//! When a commit fails (a full disk, a lost database connection), the
//! writer is the one place that retries: the work that must be recorded
//! (rule results, action outcomes, fired timers) is kept and committed
//! again, with backoff, together with such work arriving meanwhile, until it
//! commits, in the order it came. New events and people's dead-letter
//! changes are answered with an error instead (intake answers 503), at once
//! while there is unrecorded work, so nothing queues without bound. Rule
//! results are committed in order and never dropped, so the processor's
//! view of entities never disagrees with what ends up on disk; a batch and
//! its processed cursor still commit together.
//!
//! With several daemons on one database (`Downstream::shared`), new events
//! are not handed on: the daemon holding an event's partition finds it in
//! the database (`cluster`), and an event's place in the in-flight budget
//! ends with its commit here. Retried dead letters are not handed on either:
//! whichever daemon claims them first runs them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use converge_model::Event;
use converge_store::{
    ActionOutcome, Appended, DeadLetterChange, DeadLetterOutcome, FiredTimer, NewEvent,
    PendingAction, ProcessedEvent, SkippedTimer, SourceState, Store, TimerCancellation, WriteBatch,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::health::{self, StorageHealth};
use crate::telemetry::Metrics;
use crate::timer_wake::TimerWake;

/// The journal writer's name in [`StorageHealth`].
const STAGE: &str = "journal";
/// The row the writer rewrites to learn whether storage works again after
/// a failed commit that left nothing to retry.
const PROBE_KEY: &str = "journal/storage-probe";

/// An event the journal committed, on its way to the rules.
#[derive(Debug)]
pub struct Journaled {
    pub seq: i64,
    pub event: Event,
    pub received_at_ms: i64,
    /// When it was acknowledged, for the event-to-action latency; `None` for
    /// events recovered from the journal at start.
    pub acked_at: Option<Instant>,
    /// Holds the event's place in the in-flight budget until its processing
    /// commits: events from outside and fired timers' events. `None` for
    /// events recovered at start (read from the journal page by page) and
    /// emitted ones, which processing makes itself and which could
    /// otherwise wait on the processor for room it alone can free.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// An action the dispatcher should run.
#[derive(Debug)]
pub struct QueuedAction {
    pub action: PendingAction,
    pub acked_at: Option<Instant>,
    /// A dead letter a person retried: it ran before.
    pub retried: bool,
}

/// The processing of one event, ready to commit.
#[derive(Debug)]
pub struct Processed {
    pub result: ProcessedEvent,
    /// The events of `result.emits`, in the same order, for the processor
    /// once they are journaled.
    pub emitted: Vec<Event>,
    pub acked_at: Option<Instant>,
    pub permit: Option<OwnedSemaphorePermit>,
}

enum Request {
    Append {
        events: Vec<Event>,
        received_at_ms: i64,
        /// Committed with the events: a source's cursor moves only with
        /// the events it read.
        state: Vec<SourceState>,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<Result<Vec<Appended>, String>>,
    },
    Processed(Vec<Processed>),
    Timers {
        fire: Vec<TimerFiring>,
        skip: Vec<SkippedTimer>,
        /// One place in the in-flight budget per firing, which its event
        /// holds until its processing commits.
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<Result<Vec<bool>, String>>,
    },
    Outcomes {
        outcomes: Vec<ActionOutcome>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    DeadLetters {
        changes: Vec<DeadLetterChange>,
        reply: oneshot::Sender<Result<Vec<DeadLetterOutcome>, String>>,
    },
    /// A person cancels pending timers; the answer is how many.
    CancelTimers {
        cancellation: TimerCancellation,
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Retention: events to remove (`WriteBatch::prune`).
    Prune {
        seqs: Vec<i64>,
        reply: oneshot::Sender<Result<usize, String>>,
    },
}

impl Request {
    fn size(&self) -> usize {
        match self {
            Request::Append { events, state, .. } => events.len() + state.len(),
            Request::Processed(p) => p.len(),
            Request::Timers { fire, skip, .. } => fire.len() + skip.len(),
            Request::Outcomes { outcomes, .. } => outcomes.len(),
            Request::DeadLetters { changes, .. } => changes.len(),
            Request::CancelTimers { .. } => 1,
            Request::Prune { seqs, .. } => seqs.len(),
        }
    }
}

/// A due timer's event, to journal if the timer is still pending.
#[derive(Debug)]
pub struct TimerFiring {
    pub timer_id: i64,
    pub event: Event,
    pub fired_at_ms: i64,
}

/// The handle every stage uses to write. The writer thread stops when every
/// handle is dropped, after committing what it was given.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Request>,
    /// What every appended event's `received_at` is read from: the
    /// daemon's clock, which the engine decides outside events at.
    clock: Clock,
    /// Whether commits are failing, which the writer reports.
    health: StorageHealth,
}

/// The daemon is stopping (its journal is closed, or its stop token fired):
/// what a source's loop (polls, schedules, timers) returns to end.
#[derive(Debug)]
pub struct Stopping;

/// Waits for room for `events` in the daemon's in-flight budget
/// (`server.max_events_in_flight`), which the events hold from their source
/// until their processing commits. `Stopping` once the budget is closed.
/// Intake waits with a deadline and answers 503 instead (`web`).
pub async fn room(
    in_flight: &Arc<Semaphore>,
    events: usize,
) -> Result<OwnedSemaphorePermit, Stopping> {
    let events = u32::try_from(events).unwrap_or(u32::MAX);
    in_flight
        .clone()
        .acquire_many_owned(events)
        .await
        .map_err(|_| Stopping)
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the journal is shut down")]
    Closed,
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Where the writer sends what it committed.
pub struct Downstream {
    pub processor: mpsc::UnboundedSender<Journaled>,
    pub dispatcher: mpsc::Sender<QueuedAction>,
    /// Set when the dispatcher's queue was full and actions must be re-read
    /// from the outbox.
    pub dispatcher_overflow: Arc<AtomicBool>,
    /// Told the earliest due time of the timers a commit created.
    pub timer_wake: Arc<TimerWake>,
    /// Several daemons share the database: new events and retried dead
    /// letters are left for whichever daemon claims them.
    pub shared: bool,
}

impl Journal {
    /// Starts the writer thread on `store`. Call it on the async runtime,
    /// which times the writer's retries.
    pub fn start(
        store: Store,
        max_batch: usize,
        downstream: Downstream,
        metrics: Metrics,
        clock: Clock,
        health: StorageHealth,
        fatal: CancellationToken,
    ) -> (Journal, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let runtime = tokio::runtime::Handle::current();
        let writer = Writer {
            store,
            max_batch,
            downstream,
            metrics,
            health: health.clone(),
            runtime,
            fatal,
        };
        let handle = std::thread::Builder::new()
            .name("converge-journal".into())
            .spawn(move || writer.run(rx))
            .expect("spawning the journal thread");
        (Journal { tx, clock, health }, handle)
    }

    /// Whether storage is failing, as the writer and the cluster loop found it.
    pub fn health(&self) -> &StorageHealth {
        &self.health
    }

    /// Journals `events` durably, deduplicating on (source, id), received
    /// now on the daemon's clock. Returns when the commit is on disk;
    /// `permit` then travels with the new events.
    pub async fn append(
        &self,
        events: Vec<Event>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Vec<Appended>, JournalError> {
        self.append_with_state(events, Vec::new(), permit).await
    }

    /// [`Journal::append`], also keeping `state` (a poll cursor, a hook's
    /// secret) in the same transaction.
    pub async fn append_with_state(
        &self,
        events: Vec<Event>,
        state: Vec<SourceState>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Vec<Appended>, JournalError> {
        let received_at_ms = self.clock.now_ms();
        self.ask(|reply| Request::Append {
            events,
            received_at_ms,
            state,
            permit,
            reply,
        })
        .await
    }

    /// Sends the request `make` builds around its reply channel and waits
    /// for the writer's answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Request,
    ) -> Result<T, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await
            .map_err(|_| JournalError::Closed)?
            .map_err(JournalError::Storage)
    }

    /// Commits the results of rules. Called from the processor's thread.
    pub fn processed_blocking(&self, processed: Vec<Processed>) -> Result<(), JournalError> {
        self.tx
            .blocking_send(Request::Processed(processed))
            .map_err(|_| JournalError::Closed)
    }

    /// Fires timers (journals their events) and skips others, in one group
    /// commit. Returns, per firing, whether its event was journaled now
    /// (false: the timer was no longer pending). `permit` holds a place in
    /// the in-flight budget per firing; each new event takes its place to
    /// the processor.
    pub async fn timers(
        &self,
        fire: Vec<TimerFiring>,
        skip: Vec<SkippedTimer>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Vec<bool>, JournalError> {
        self.ask(|reply| Request::Timers {
            fire,
            skip,
            permit,
            reply,
        })
        .await
    }

    /// Records action outcomes and waits for the commit.
    pub async fn outcomes(&self, outcomes: Vec<ActionOutcome>) -> Result<(), JournalError> {
        self.ask(|reply| Request::Outcomes {
            outcomes,
            reply: Some(reply),
        })
        .await
    }

    /// Retries or drops dead letters and waits for the commit; a retried
    /// one goes to the dispatcher right after it.
    pub async fn dead_letters(
        &self,
        changes: Vec<DeadLetterChange>,
    ) -> Result<Vec<DeadLetterOutcome>, JournalError> {
        self.ask(|reply| Request::DeadLetters { changes, reply })
            .await
    }

    /// Cancels the pending timers `cancellation` names (at most its limit),
    /// in a commit of its own or with other writes; returns how many.
    pub async fn cancel_timers(
        &self,
        cancellation: TimerCancellation,
    ) -> Result<usize, JournalError> {
        self.ask(|reply| Request::CancelTimers {
            cancellation,
            reply,
        })
        .await
    }

    /// Removes the events of `seqs` that may still go (retention), in a
    /// commit of their own or with other writes; returns how many went.
    /// Not retried on failure: the next round finds them again.
    pub async fn prune(&self, seqs: Vec<i64>) -> Result<usize, JournalError> {
        self.ask(|reply| Request::Prune { seqs, reply }).await
    }

    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

struct Writer {
    store: Store,
    max_batch: usize,
    downstream: Downstream,
    metrics: Metrics,
    /// Told of every failed commit and of the first one that succeeds after.
    health: StorageHealth,
    /// Times the waits between retries: this thread is not async.
    runtime: tokio::runtime::Handle,
    /// Cancelled when a batch fails for a reason retrying cannot change (it
    /// names an event or action the store does not hold as it says): going
    /// on would leave the rules' view of entities ahead of what is on disk.
    fatal: CancellationToken,
}

/// Why a commit did not happen, and the work to commit again.
struct Failed {
    error: String,
    /// Rule results, outcomes and fired timers, in the order they came.
    unrecorded: Vec<Request>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut unrecorded = Vec::new();
        let mut delays = health::retry_delays();
        let mut wait = std::time::Duration::ZERO;
        let mut closed = false;
        loop {
            let mut pending: Vec<Request> = std::mem::take(&mut unrecorded);
            if pending.is_empty() {
                let first = if self.health.stage_failing(STAGE) {
                    // The last commit failed and left nothing to retry (its
                    // events were refused): try storage alone after the
                    // wait, so that the daemon says it works again without
                    // waiting for the next event.
                    match self
                        .runtime
                        .block_on(async { tokio::time::timeout(wait, rx.recv()).await })
                    {
                        Ok(Some(first)) => first,
                        Ok(None) => break,
                        Err(_waited) => {
                            match self.probe() {
                                Ok(()) => {
                                    self.recovered();
                                    delays = health::retry_delays();
                                }
                                Err(error) => {
                                    wait = delays.next().unwrap_or_default();
                                    self.health.failed(STAGE, &error, wait);
                                }
                            }
                            continue;
                        }
                    }
                } else {
                    let Some(first) = rx.blocking_recv() else {
                        break;
                    };
                    first
                };
                pending.push(first);
                self.gather(&mut rx, &mut pending);
            } else {
                closed = !self.wait_refusing(&mut rx, &mut pending, wait);
            }
            match self.commit(pending) {
                Ok(()) => {
                    self.recovered();
                    delays = health::retry_delays();
                }
                Err(failed) => {
                    wait = delays.next().unwrap_or_default();
                    self.health.failed(STAGE, &failed.error, wait);
                    unrecorded = failed.unrecorded;
                    if closed && !unrecorded.is_empty() {
                        tracing::error!(
                            error = %failed.error,
                            "stopping with rule results or outcomes not recorded; their events and actions are replayed at the next start"
                        );
                        return;
                    }
                }
            }
        }
        tracing::debug!("journal writer stopped");
    }

    /// A commit succeeded: if commits had failed, storage works again.
    fn recovered(&mut self) {
        if self.health.stage_failing(STAGE) {
            // The log may have grown while commits failed: give its space
            // back now rather than at the next checkpoint.
            if let Err(e) = self.store.truncate_wal() {
                tracing::warn!(error = %e, "cannot truncate the write-ahead log");
            }
        }
        self.health.succeeded(STAGE);
    }

    /// Writes one small row, as a commit of an event would, to learn
    /// whether storage works again.
    fn probe(&mut self) -> Result<(), String> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let batch = WriteBatch {
            source_state: vec![SourceState {
                key: PROBE_KEY.into(),
                value: now_ms.to_string(),
                updated_at_ms: now_ms,
            }],
            ..WriteBatch::default()
        };
        self.store
            .write(&batch)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Adds whatever else is waiting to `pending`, up to a batch.
    fn gather(&self, rx: &mut mpsc::Receiver<Request>, pending: &mut Vec<Request>) {
        let mut size: usize = pending.iter().map(Request::size).sum();
        while size < self.max_batch {
            match rx.try_recv() {
                Ok(request) => {
                    size += request.size();
                    pending.push(request);
                }
                Err(_) => break,
            }
        }
    }

    /// Waits `delay` before unrecorded work is tried again. What arrives
    /// meanwhile joins it if it must be recorded too; new events and
    /// dead-letter changes are refused at once. Returns false once every
    /// journal handle is gone (the daemon is stopping).
    fn wait_refusing(
        &self,
        rx: &mut mpsc::Receiver<Request>,
        pending: &mut Vec<Request>,
        delay: std::time::Duration,
    ) -> bool {
        let until = std::time::Instant::now() + delay;
        let refusal = match self.health.failure() {
            Some(failure) => format!("storage is failing ({}); try again shortly", failure.error),
            None => "storage is failing; try again shortly".to_string(),
        };
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let next = self
                .runtime
                .block_on(async { tokio::time::timeout(left, rx.recv()).await });
            match next {
                Err(_elapsed) => return true,
                Ok(None) => return false,
                Ok(Some(Request::Append { reply, .. })) => {
                    let _ = reply.send(Err(refusal.clone()));
                }
                Ok(Some(Request::DeadLetters { reply, .. })) => {
                    let _ = reply.send(Err(refusal.clone()));
                }
                Ok(Some(Request::CancelTimers { reply, .. })) => {
                    let _ = reply.send(Err(refusal.clone()));
                }
                Ok(Some(Request::Prune { reply, .. })) => {
                    let _ = reply.send(Err(refusal.clone()));
                }
                Ok(Some(request)) => pending.push(request),
            }
        }
    }

    /// Commits `requests` in one transaction and hands the results on. On
    /// failure, answers the requests that are not retried and returns the
    /// others, unchanged.
    fn commit(&mut self, mut requests: Vec<Request>) -> Result<(), Failed> {
        let mut batch = WriteBatch::default();
        for request in &mut requests {
            match request {
                Request::Append {
                    events,
                    received_at_ms,
                    state,
                    ..
                } => {
                    batch.appends.extend(
                        events
                            .iter()
                            .map(|e| NewEvent::from_event(e, *received_at_ms)),
                    );
                    batch.source_state.extend(state.iter().cloned());
                }
                Request::Timers { fire, skip, .. } => {
                    batch.fired_timers.extend(fire.iter().map(|f| FiredTimer {
                        timer_id: f.timer_id,
                        event: NewEvent::from_event(&f.event, f.fired_at_ms),
                        fired_at_ms: f.fired_at_ms,
                    }));
                    batch.skipped_timers.extend(skip.iter().copied());
                }
                // Moved, not cloned: this thread is the pipeline's narrowest
                // point. What the hand-off below reads (seq, time) stays.
                Request::Processed(processed) => {
                    batch.processed.extend(processed.iter_mut().map(|p| {
                        let result = std::mem::take(&mut p.result);
                        p.result.seq = result.seq;
                        p.result.processed_at_ms = result.processed_at_ms;
                        result
                    }))
                }
                Request::Outcomes { outcomes, .. } => {
                    batch.outcomes.extend(outcomes.iter().cloned())
                }
                Request::DeadLetters { changes, .. } => {
                    batch.dead_letters.extend(changes.iter().cloned())
                }
                Request::CancelTimers { cancellation, .. } => {
                    batch.timer_cancellations.push(cancellation.clone())
                }
                Request::Prune { seqs, .. } => batch.prune.extend(seqs.iter().copied()),
            }
        }
        let started = Instant::now();
        let result = self.store.write(&batch);
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .commit_batch_size
            .observe(requests.len() as f64);

        let written = match result {
            Ok(written) => written,
            Err(e) => {
                let error = e.to_string();
                let retryable = e.is_retryable();
                // Moved back: the results are committed as they were, later.
                let mut results = std::mem::take(&mut batch.processed).into_iter();
                let mut unrecorded = Vec::new();
                for request in requests {
                    match request {
                        Request::Append { reply, .. } => {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Request::DeadLetters { reply, .. } => {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Request::CancelTimers { reply, .. } => {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Request::Prune { reply, .. } => {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Request::Processed(mut processed) => {
                            for p in &mut processed {
                                p.result = results.next().unwrap_or_default();
                            }
                            unrecorded.push(Request::Processed(processed));
                        }
                        Request::Timers { .. } | Request::Outcomes { .. } => {
                            unrecorded.push(request)
                        }
                    }
                }
                if !retryable
                    && unrecorded
                        .iter()
                        .any(|r| matches!(r, Request::Processed(_)))
                {
                    tracing::error!(error = %error, "cannot record the results of rules; stopping");
                    self.fatal.cancel();
                    unrecorded.clear();
                }
                return Err(Failed { error, unrecorded });
            }
        };
        if !written.outcomes_fenced.is_empty() {
            tracing::warn!(actions = ?written.outcomes_fenced, "outcomes not recorded: the action's lease had passed to another daemon");
            self.metrics
                .outcomes_fenced
                .inc_by(written.outcomes_fenced.len() as u64);
        }
        let earliest_new_timer = batch
            .processed
            .iter()
            .flat_map(|p| p.timers.iter().map(|t| t.due_at_ms))
            .min();
        if let Some(due_ms) = earliest_new_timer {
            self.downstream.timer_wake.created(due_ms);
        }
        // The pending-timers gauge follows each commit instead of counting
        // the table, which holds a row per waiting timer.
        let fired = written
            .fired
            .iter()
            .filter(|outcome| outcome.is_some())
            .count();
        let closed = fired + written.timers_cancelled + written.timers_skipped;
        self.metrics
            .timers_pending
            .inc_by(i64::try_from(written.timers_created).unwrap_or(i64::MAX));
        self.metrics
            .timers_pending
            .dec_by(i64::try_from(closed).unwrap_or(i64::MAX));
        // Likewise the dead letters: in with outcomes, out with retries and drops.
        let revived = written
            .dead_letters
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    DeadLetterOutcome::Retried(_) | DeadLetterOutcome::Dropped
                )
            })
            .count();
        self.metrics
            .dead_letters
            .inc_by(i64::try_from(written.dead_lettered).unwrap_or(i64::MAX));
        self.metrics
            .dead_letters
            .dec_by(i64::try_from(revived).unwrap_or(i64::MAX));

        // New events go to the processor in journal order, which is the
        // store's order: appends, then emitted events, then fired timers.
        let mut appends = Vec::new();
        let mut timers = Vec::new();
        let mut processed = Vec::new();
        let mut retried = Vec::new();
        let mut dead_letters = written.dead_letters.into_iter();
        let mut cancelled_by_people = written.cancelled_by_people.into_iter();
        let mut pruned = written.pruned;
        for request in requests {
            match request {
                Request::Append { .. } => appends.push(request),
                Request::Timers { .. } => timers.push(request),
                Request::Processed(p) => processed.push(p),
                Request::Outcomes { reply, .. } => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Request::DeadLetters { changes, reply } => {
                    let outcomes: Vec<DeadLetterOutcome> =
                        dead_letters.by_ref().take(changes.len()).collect();
                    for outcome in &outcomes {
                        if let DeadLetterOutcome::Retried(action) = outcome {
                            retried.push(action.clone());
                        }
                    }
                    let _ = reply.send(Ok(outcomes));
                }
                Request::CancelTimers { reply, .. } => {
                    let _ = reply.send(Ok(cancelled_by_people.next().unwrap_or_default()));
                }
                // One pruner asks at a time; the count is the batch's.
                Request::Prune { reply, .. } => {
                    let _ = reply.send(Ok(std::mem::take(&mut pruned)));
                }
            }
        }
        let now = Instant::now();
        let mut appended = written.appended.into_iter();
        for request in appends {
            let Request::Append {
                events,
                received_at_ms,
                mut permit,
                reply,
                ..
            } = request
            else {
                continue;
            };
            let outcomes: Vec<Appended> = appended.by_ref().take(events.len()).collect();
            for (event, outcome) in events.into_iter().zip(&outcomes) {
                match outcome {
                    Appended::New { .. } if self.downstream.shared => {
                        self.metrics.events_accepted.inc();
                        self.metrics.journal_events.inc();
                    }
                    Appended::New { seq } => {
                        self.metrics.events_accepted.inc();
                        self.metrics.journal_events.inc();
                        let _ = self.downstream.processor.send(Journaled {
                            seq: *seq,
                            event,
                            received_at_ms,
                            acked_at: Some(now),
                            permit: permit.split(1),
                        });
                    }
                    Appended::Duplicate { .. } => {
                        self.metrics.events_duplicate.inc();
                    }
                }
            }
            let _ = reply.send(Ok(outcomes));
        }
        let mut emitted = written.emitted.into_iter();
        let mut acked_at_by_seq = HashMap::new();
        for p in processed.into_iter().flatten() {
            if let Some(at) = p.acked_at {
                acked_at_by_seq.insert(p.result.seq, at);
            }
            self.metrics.events_processed.inc();
            drop(p.permit);
            for (event, outcome) in p.emitted.into_iter().zip(emitted.by_ref()) {
                if let Appended::New { seq } = outcome {
                    self.metrics.events_emitted.inc();
                    self.metrics.journal_events.inc();
                    let _ = self.downstream.processor.send(Journaled {
                        seq,
                        received_at_ms: p.result.processed_at_ms,
                        event,
                        acked_at: None,
                        permit: None,
                    });
                }
            }
        }
        let mut fired = written.fired.into_iter();
        for request in timers {
            let Request::Timers {
                fire,
                mut permit,
                reply,
                ..
            } = request
            else {
                continue;
            };
            let mut results = Vec::with_capacity(fire.len());
            for (firing, outcome) in fire.into_iter().zip(fired.by_ref()) {
                let journaled = match outcome {
                    Some(Appended::New { seq }) => {
                        self.metrics.journal_events.inc();
                        let _ = self.downstream.processor.send(Journaled {
                            seq,
                            event: firing.event,
                            received_at_ms: firing.fired_at_ms,
                            acked_at: None,
                            permit: permit.split(1),
                        });
                        true
                    }
                    // Journaled before under the timer's id: not a new event.
                    Some(Appended::Duplicate { .. }) | None => false,
                };
                results.push(journaled);
            }
            let _ = reply.send(Ok(results));
        }
        let new = written.actions.into_iter().map(|action| QueuedAction {
            acked_at: acked_at_by_seq.get(&action.event_seq).copied(),
            action,
            retried: false,
        });
        if self.downstream.shared {
            retried.clear();
        }
        let retried = retried.into_iter().map(|action| QueuedAction {
            action,
            acked_at: None,
            retried: true,
        });
        for queued in new.chain(retried) {
            if self.downstream.dispatcher.try_send(queued).is_err() {
                self.downstream
                    .dispatcher_overflow
                    .store(true, Ordering::Release);
            }
        }
        Ok(())
    }
}
