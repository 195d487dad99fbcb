//! The dispatcher: runs each outbox action in its plugin, records the
//! outcome, and retries what failed for a reason that may pass.
//!
//! Actions arrive from the journal right after the commit that created them.
//! The outbox table is the source of truth: at start, and whenever the
//! in-memory queue overflowed, pending actions are read back from it. An
//! action is removed from the in-flight set only once its outcome is
//! committed, so an action is never run twice by one daemon; after a crash,
//! an action whose outcome was not committed runs again (at least once, with
//! the same idempotency key).
//!
//! An action that fails for good (a permanent failure, or its attempts are
//! used up) becomes a dead letter in the store. A person's retry puts it
//! back to pending and the journal queues it here again, marked `retried`:
//! it runs with a fresh attempt budget and the same idempotency key.
//!
//! With several daemons on one database ([`ActionLeases`]), an action runs
//! under a lease: the daemon whose processing created it holds it from the
//! start, renews it while the action runs or waits for a retry, and records
//! its outcome with the lease's fencing token, which the store refuses once
//! the lease has passed to another daemon. Instead of reading the pending
//! actions, each daemon claims the ones whose lease is free or expired:
//! a dead daemon's actions run again elsewhere once their leases expire.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use converge_plugin_host::{ActionInput, CallFailure, Plugin};
use converge_store::{ActionOutcome, OutcomeKind, PendingAction, Store};
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::{Clock, Slept, sleep_unless_stopped};
use crate::config::{Dispatch, Route};
use crate::journal::{Journal, QueuedAction};
use crate::telemetry::{ActionNamed, ActionOutcomeLabel, Metrics};
use converge_engine::ActionPayload;

/// How many pending actions one read of the outbox returns.
/// The dispatcher's storage work, as [`StorageHealth`](crate::health::StorageHealth)
/// names it while it fails.
const OUTBOX_READS: &str = "outbox reads";
const ACTION_CLAIMS: &str = "action claims";
const ACTION_LEASES: &str = "action leases";
/// How often the dispatcher looks after its leases, claims unheld actions
/// (sharing a database) and rereads the outbox after an overflow.
const TICK: Duration = Duration::from_millis(500);
const RELOAD_PAGE: usize = 10_000;
/// The finished set is forgotten past this size while no read of the outbox
/// is near: it only guards against copies that such a read made.
const FINISHED_LIMIT: usize = 100_000;

/// Who this daemon is among several sharing a database, and how long its
/// action leases last.
#[derive(Clone, Debug)]
pub struct ActionLeases {
    pub holder: String,
    pub ttl: Duration,
}

pub struct Dispatcher {
    pub plugins: HashMap<String, Plugin>,
    pub routes: HashMap<String, Route>,
    pub settings: Dispatch,
    pub journal: Journal,
    pub reader: Store,
    pub metrics: Metrics,
    pub overflow: Arc<AtomicBool>,
    /// Set with several daemons on one database.
    pub leases: Option<ActionLeases>,
    /// What outcomes are stamped with, so that an action's times read on
    /// the same clock as its event's; the waits between attempts are real
    /// time whatever the clock.
    pub clock: Clock,
}

/// What every action task shares. Its maps are looked up several times for
/// every action, and their keys are converge's own (configured names), so
/// they hash with rustc-hash's hasher: std's SipHash, which guards against
/// keys chosen by an attacker, cost about 1,000 instructions an action.
struct Shared {
    plugins: FxHashMap<String, Plugin>,
    routes: FxHashMap<String, Route>,
    settings: Dispatch,
    journal: Journal,
    metrics: Metrics,
    clock: Clock,
    /// Bounds concurrent plugin calls.
    permits: Semaphore,
    /// Actions with a task, from queueing until their outcome is committed,
    /// and actions finished since the last read of the outbox began.
    tracked: Mutex<Tracked>,
    stop: CancellationToken,
}

impl Dispatcher {
    /// Runs until `stop` fires, then waits up to the configured grace for the
    /// actions already running; those still running after it stay pending in
    /// the outbox and run again at the next start.
    pub async fn run(self, mut rx: mpsc::Receiver<QueuedAction>, stop: CancellationToken) {
        let Dispatcher {
            plugins,
            routes,
            settings,
            journal,
            reader,
            metrics,
            overflow,
            leases,
            clock,
        } = self;
        let grace = settings.shutdown_grace;
        let shared = Arc::new(Shared {
            permits: Semaphore::new(settings.concurrency),
            plugins: plugins.into_iter().collect(),
            routes: routes.into_iter().collect(),
            settings,
            journal,
            metrics,
            clock,
            tracked: Mutex::new(Tracked::default()),
            stop: stop.clone(),
        });
        let tracker = TaskTracker::new();
        // Read the outbox once at start: actions left pending by the last run.
        overflow.store(leases.is_none(), Ordering::Release);
        let mut tick = tokio::time::interval(TICK);
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                item = rx.recv() => match item {
                    Some(queued) => {
                        if queued.retried {
                            // It finished once (as a dead letter); this is a new run of it.
                            shared.tracked().finished.remove(&queued.action.id);
                        }
                        spawn_action(&shared, &tracker, queued.action, queued.acked_at)
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    shared.metrics.set_queue_depth("dispatcher", rx.len());
                    if let Some(leases) = &leases {
                        if renewed.elapsed() >= leases.ttl / 3 {
                            renewed = Instant::now();
                            renew_leases(&shared, &reader, leases);
                        }
                        if rx.is_empty() {
                            claim_actions(&shared, &tracker, &reader, leases);
                        }
                        continue;
                    }
                    let quiet = rx.is_empty() && shared.tracked().in_flight.len() < RELOAD_PAGE / 2;
                    if !quiet || !overflow.load(Ordering::Acquire) {
                        shared.tracked().forget_finished_past(FINISHED_LIMIT);
                    }
                    if quiet && overflow.swap(false, Ordering::AcqRel) {
                        // Anything finished before this read began is no longer pending in it.
                        shared.tracked().finished.clear();
                        let reloaded = tokio::task::block_in_place(|| reader.pending_actions(RELOAD_PAGE));
                        match reloaded {
                            Ok(actions) => {
                                shared.journal.health().succeeded(OUTBOX_READS);
                                if actions.len() == RELOAD_PAGE {
                                    overflow.store(true, Ordering::Release);
                                }
                                for action in actions {
                                    spawn_action(&shared, &tracker, action, None);
                                }
                            }
                            Err(e) => {
                                shared.journal.health().failed(OUTBOX_READS, &e.to_string(), TICK);
                                overflow.store(true, Ordering::Release);
                            }
                        }
                    }
                }
            }
        }
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            let left: Vec<i64> = shared.tracked().in_flight.keys().copied().collect();
            tracing::warn!(
                actions = ?left,
                "shutdown grace elapsed with actions still running; they stay pending and run again at the next start"
            );
        }
        // Drop our handle to the journal only after the tasks are done with theirs.
        drop(reader);
    }
}

/// Extends the leases of the actions this daemon is running; those lost to
/// another daemon (this one stalled past the lease) stop at their next step.
fn renew_leases(shared: &Shared, reader: &Store, leases: &ActionLeases) {
    let held: Vec<(i64, i64)> = shared
        .tracked()
        .in_flight
        .iter()
        .filter_map(|(id, token)| token.map(|token| (*id, token)))
        .collect();
    let health = shared.journal.health();
    if held.is_empty() {
        // No lease left to renew: a failure to renew those is over too.
        health.succeeded(ACTION_LEASES);
        return;
    }
    let renewed = tokio::task::block_in_place(|| {
        reader
            .coordination()?
            .renew_action_leases(&leases.holder, leases.ttl, &held)
    });
    match renewed {
        Ok(lost) => {
            health.succeeded(ACTION_LEASES);
            if !lost.is_empty() {
                tracing::warn!(actions = ?lost, "action leases lost to another daemon; those actions stop here");
                shared.tracked().lost.extend(lost);
            }
        }
        Err(e) => health.failed(ACTION_LEASES, &e.to_string(), leases.ttl / 3),
    }
}

/// Claims due actions nobody holds (new ones another daemon could not
/// queue, retried dead letters, a dead daemon's), as many as there is room for.
fn claim_actions(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    reader: &Store,
    leases: &ActionLeases,
) {
    let room = (shared.settings.concurrency * 2).saturating_sub(shared.tracked().in_flight.len());
    if room == 0 {
        return;
    }
    let now_ms = shared.clock.now_ms();
    match tokio::task::block_in_place(|| {
        reader
            .coordination()?
            .claim_actions(&leases.holder, leases.ttl, now_ms, room)
    }) {
        Ok(actions) => {
            shared.journal.health().succeeded(ACTION_CLAIMS);
            for action in actions {
                tracing::debug!(action_id = action.id, "claimed an action");
                // A claim is a fresh run, even of an action finished here before.
                shared.tracked().finished.remove(&action.id);
                spawn_action(shared, tracker, action, None);
            }
        }
        Err(e) => shared
            .journal
            .health()
            .failed(ACTION_CLAIMS, &e.to_string(), TICK),
    }
}

/// Which actions this dispatcher is running or has just finished, by id
/// (hashed as `Shared`'s maps are: each action looks here several times).
#[derive(Default)]
struct Tracked {
    /// Running actions and their lease tokens (with several daemons).
    in_flight: FxHashMap<i64, Option<i64>>,
    finished: FxHashSet<i64>,
    /// Running actions whose lease passed to another daemon.
    lost: FxHashSet<i64>,
}

impl Tracked {
    /// Whether a task should start for this action.
    fn start(&mut self, id: i64, lease_token: Option<i64>) -> bool {
        if self.finished.contains(&id) || self.in_flight.contains_key(&id) {
            return false;
        }
        self.in_flight.insert(id, lease_token);
        true
    }

    fn stop(&mut self, id: i64, finished: bool) {
        self.in_flight.remove(&id);
        self.lost.remove(&id);
        if finished {
            self.finished.insert(id);
        }
    }

    fn forget_finished_past(&mut self, limit: usize) {
        if self.finished.len() > limit {
            self.finished.clear();
        }
    }
}

impl Shared {
    fn tracked(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn spawn_action(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    action: PendingAction,
    acked_at: Option<Instant>,
) {
    if !shared.tracked().start(action.id, action.lease_token) {
        return;
    }
    let span = tracing::info_span!(
        "action",
        action_id = action.id,
        event_id = tracing::field::Empty,
        plugin = %action.plugin,
        route = %action.route
    );
    // The span, when one was made (traces, or a log showing `debug` lines),
    // names its event once, whatever number of attempts follow; without
    // one the payload is not read here.
    if !span.is_disabled()
        && let Ok(payload) = ActionPayload::read(&action.payload)
    {
        if let Some(event_id) = payload.event_id() {
            span.record("event_id", event_id);
        }
        if crate::otel::exporting() {
            crate::otel::continue_trace(&span, payload.event_traceparent().as_deref());
        }
    }
    let shared = shared.clone();
    // Boxed where it is made: an action's future holds the plugin call's,
    // kilobytes that each wrapper and the task would otherwise copy again.
    let run = Box::pin(async move {
        let id = action.id;
        let finished = run_action(&shared, action, acked_at).await;
        shared.tracked().stop(id, finished);
    });
    tracker.spawn(run.instrument(span));
}

/// Runs an action until it is done, failed for good, or the dispatcher stops.
/// Returns whether its final outcome was committed.
async fn run_action(shared: &Shared, action: PendingAction, mut acked_at: Option<Instant>) -> bool {
    let mut attempts = action.attempts;
    if let Some(due) = action.next_attempt_at_ms {
        // At most the longest backoff, after a restart: a due time further
        // off is from a clock that was moved back (a manual one started
        // earlier), or a rate limit's hint, which its next attempt hears again.
        let wait = due - shared.clock.now_ms();
        let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0))
            .min(shared.settings.max_backoff);
        if sleep_unless_stopped(wait, &shared.stop).await == Slept::Stopped {
            return false;
        }
    }
    loop {
        let permit = tokio::select! {
            permit = shared.permits.acquire() => permit.expect("the semaphore is never closed"),
            () = shared.stop.cancelled() => return false,
        };
        if shared.tracked().lost.contains(&action.id) {
            // Another daemon holds it now and runs it.
            return true;
        }
        attempts += 1;
        let started = Instant::now();
        let result = attempt(shared, &action).await;
        drop(permit);
        let took = started.elapsed();
        if let Some(at) = acked_at.take() {
            shared
                .metrics
                .event_to_action_latency
                .observe(at.elapsed().as_secs_f64());
        }
        let finished_at_ms = shared.clock.now_ms();
        let (kind, detail, retry_in) = match result {
            Ok(done) => {
                shared
                    .metrics
                    .action_attempt(&action.plugin, ActionOutcomeLabel::Ok, took);
                tracing::debug!(summary = %done.summary.escape_debug(), attempts, "action done");
                (
                    OutcomeKind::Done {
                        external_id: done.external_id,
                    },
                    done.summary,
                    None,
                )
            }
            Err(failure) => {
                let detail = failure.to_string();
                let retry_in = (failure.retryable() && attempts < shared.settings.max_attempts)
                    .then(|| retry_delay(&shared.settings, attempts, &failure));
                match retry_in {
                    Some(delay) => {
                        shared.metrics.action_attempt(
                            &action.plugin,
                            ActionOutcomeLabel::Retried,
                            took,
                        );
                        tracing::warn!(
                            action_id = action.id,
                            plugin = %action.plugin,
                            route = %action.route,
                            event_id = %event_id_of(&action).escape_debug(),
                            error = %detail.escape_debug(),
                            attempts,
                            retry_in = ?delay,
                            "action failed; will retry"
                        );
                        let next =
                            finished_at_ms + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                        (
                            OutcomeKind::Retry {
                                next_attempt_at_ms: next,
                            },
                            detail,
                            Some(delay),
                        )
                    }
                    None => {
                        shared.metrics.action_attempt(
                            &action.plugin,
                            ActionOutcomeLabel::Failed,
                            took,
                        );
                        shared.metrics.action_dead_lettered(
                            ActionNamed {
                                id: action.id,
                                plugin: &action.plugin,
                                route: &action.route,
                                event_id: &event_id_of(&action),
                            },
                            attempts,
                            failure.retryable(),
                            &detail,
                        );
                        (OutcomeKind::DeadLetter, detail, None)
                    }
                }
            }
        };
        let outcome = ActionOutcome {
            action_id: action.id,
            result: kind,
            attempts,
            detail,
            finished_at_ms,
            lease_token: action.lease_token,
        };
        if let Err(e) = shared.journal.outcomes(vec![outcome]).await {
            tracing::error!(action_id = action.id, error = %e, "cannot record the action's outcome; it runs again at the next start");
            return false;
        }
        match retry_in {
            None => return true,
            Some(delay) => match sleep_unless_stopped(delay, &shared.stop).await {
                Slept::Fully => continue,
                Slept::Stopped => return false,
            },
        }
    }
}

async fn attempt(
    shared: &Shared,
    action: &PendingAction,
) -> Result<converge_plugin_host::ActionDone, CallFailure> {
    let route = shared.routes.get(&action.route).ok_or_else(|| {
        CallFailure::Permanent(format!("route `{}` is no longer configured", action.route))
    })?;
    let plugin = shared.plugins.get(&route.plugin).ok_or_else(|| {
        CallFailure::Permanent(format!("plugin `{}` is not loaded", route.plugin))
    })?;
    let payload = ActionPayload::read(&action.payload)
        .map_err(|e| CallFailure::Permanent(format!("the outbox payload is not readable: {e}")))?;
    let id = converge_store::idempotency_key(
        action.id,
        action.instance,
        payload.idempotency_key.as_deref(),
    );
    plugin
        .execute(action_input(id, &payload), &route.config_json)
        .await
}

/// The id of the event an action's decision came from, for its log lines
/// (which name what they are about: the log shows no spans at `info`);
/// empty when the payload does not say.
fn event_id_of(action: &PendingAction) -> String {
    ActionPayload::read(&action.payload)
        .ok()
        .and_then(|payload| payload.event_id())
        .unwrap_or_default()
}

/// What a plugin's `execute` gets of an action: its idempotency key `id`
/// and its payload's parts.
pub fn action_input(id: String, payload: &ActionPayload<'_>) -> ActionInput {
    ActionInput {
        id,
        kind: payload.kind.to_string(),
        rule: payload.rule.to_string(),
        decision_json: payload.decision.to_string(),
        event_json: payload.event.to_string(),
        entity_json: payload.entity.to_string(),
    }
}

/// Exponential backoff with jitter from the configured bounds; a plugin's
/// rate-limit hint wins when it asks for longer.
fn retry_delay(settings: &Dispatch, attempts: u32, failure: &CallFailure) -> Duration {
    let backoff = ExponentialBuilder::new()
        .with_min_delay(settings.initial_backoff)
        .with_max_delay(settings.max_backoff)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.saturating_sub(1) as usize)
        .unwrap_or(settings.max_backoff);
    match failure {
        CallFailure::RateLimited(Some(hint)) => {
            backoff.max(*hint).min(settings.max_backoff.max(*hint))
        }
        _ => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_runs_once_however_often_it_is_queued() {
        let mut tracked = Tracked::default();
        assert!(tracked.start(7, None));
        assert!(!tracked.start(7, None), "already running");
        tracked.stop(7, true);
        assert!(!tracked.start(7, None), "a stale copy of a finished action");
        // A read of the outbox that begins after the outcome's commit cannot return it.
        tracked.finished.clear();
        assert!(tracked.start(8, None));
        tracked.stop(8, false);
        assert!(
            tracked.start(8, None),
            "an action stopped before its outcome runs again"
        );
    }

    #[test]
    fn the_finished_set_is_bounded() {
        let mut tracked = Tracked::default();
        for id in 0..10 {
            tracked.start(id, None);
            tracked.stop(id, true);
        }
        tracked.forget_finished_past(20);
        assert_eq!(tracked.finished.len(), 10);
        tracked.forget_finished_past(5);
        assert!(tracked.finished.is_empty());
    }

    #[test]
    fn retries_back_off_within_bounds_and_honour_rate_limits() {
        let settings = Dispatch {
            concurrency: 1,
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            shutdown_grace: Duration::ZERO,
        };
        let transient = CallFailure::Transient("503".into());
        for attempts in 1..10 {
            let delay = retry_delay(&settings, attempts, &transient);
            assert!(delay >= Duration::from_millis(100), "{attempts}: {delay:?}");
            assert!(delay <= Duration::from_secs(10), "{attempts}: {delay:?}");
        }
        let first = retry_delay(&settings, 1, &transient);
        assert!(first < Duration::from_millis(400), "{first:?}");
        let limited = CallFailure::RateLimited(Some(Duration::from_secs(30)));
        assert_eq!(retry_delay(&settings, 1, &limited), Duration::from_secs(30));
    }
}
