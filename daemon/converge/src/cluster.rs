//! Several daemons on one PostgreSQL database: who processes what.
//!
//! PostgreSQL is the only coordinator; the daemons never talk to each other.
//! Every piece of work that must happen once is guarded by a lease in the
//! database (`leases`: holder, fencing token, expiry on the database's clock):
//!
//! - **Membership.** Each daemon keeps a `daemon/<holder>` lease alive; the
//!   live ones say how many daemons share the work.
//! - **Partitions.** Entities fall in [`PARTITIONS`] partitions. Each daemon
//!   holds about `PARTITIONS / daemons` partition leases and processes the
//!   events of those partitions, in journal order, with its own entity cache
//!   and gates, firing their due timers too. Every commit of processing is
//!   fenced by the tokens of the partitions it touches: a daemon that lost a
//!   partition (it stalled past the lease) cannot write to it any more.
//! - **Takeover.** A dead daemon's leases expire after `storage.lease_ttl`;
//!   the others then take its partitions (and run its actions, see
//!   `dispatcher`, and its sources, see [`lead`]). A daemon that stops
//!   cleanly releases its leases at once.
//! - **Wake-ups.** After a commit that journals events the store notifies
//!   `converge_events`; the processing loop waits on it, but also looks
//!   every [`POLL`], so a lost notification only delays.
//! - **Reloads.** A daemon that reloaded its rules (file change, SIGHUP)
//!   notifies `converge_reload`; the others reload their own rule files.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use converge_engine::decision_time;
use converge_model::{EntityKey, EntityState, Event, RuleFailure};
use converge_store::{
    ActionLease, Backend, EVENTS_CHANNEL, Fence, FiredTimer, JournaledEvent, NewEvent, PARTITIONS,
    ProcessedEvent, Store, StoreError, WriteBatch, WriteResult, event_partition, partition_of,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::health::{self, StorageHealth};
use crate::journal::{Journaled, QueuedAction};
use crate::processor::{Processor, millis_to_time, queries};
use crate::timers::FiringPlan;

/// The channel a daemon that reloaded its rules notifies.
pub const RELOAD_CHANNEL: &str = "converge_reload";
/// The longest the processing loop waits without looking for work.
const POLL: Duration = Duration::from_millis(200);
/// The most time between two rounds of membership (renewing this daemon's
/// leases, taking free or expired partitions).
const MEMBERSHIP_ROUND: Duration = Duration::from_secs(1);
/// Most events processed (or timers fired) in one commit.
const BATCH: usize = 512;
/// This loop's name in [`StorageHealth`].
const STAGE: &str = "processing";
/// Taking and renewing the duties' leases, as [`StorageHealth`] names it.
const SOURCE_LEASES: &str = "source leases";

/// A name for this daemon among those sharing the database: new at every
/// start, so a restarted daemon never mistakes its previous life's leases
/// for its own.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "converge".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

/// What the names of partitions' leases start with, and daemons'.
const PARTITION_LEASES: &str = "partition/";
const DAEMON_LEASES: &str = "daemon/";

fn partition_lease(partition: u32) -> String {
    format!("{PARTITION_LEASES}{partition}")
}

fn daemon_lease(holder: &str) -> String {
    format!("{DAEMON_LEASES}{holder}")
}

/// Work that one daemon at a time does, each under a lease of its own (see
/// [`lead`]); the others stand by to take it over.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Duty {
    /// Reading the drop folder of this name.
    FileDrop(String),
    /// Running the poll of this name.
    Poll(String),
    /// Pruning old events (`storage.retention`).
    Retention,
}

const FILE_DROP_LEASES: &str = "source/file_drop/";
const POLL_LEASES: &str = "source/poll/";
const RETENTION_LEASE: &str = "maintenance/retention";

impl Duty {
    /// The name of its lease.
    pub fn lease(&self) -> String {
        match self {
            Duty::FileDrop(name) => format!("{FILE_DROP_LEASES}{name}"),
            Duty::Poll(name) => format!("{POLL_LEASES}{name}"),
            Duty::Retention => RETENTION_LEASE.into(),
        }
    }

    /// The duty a lease is held for, if it is one.
    fn of_lease(lease: &str) -> Option<Duty> {
        if let Some(name) = lease.strip_prefix(FILE_DROP_LEASES) {
            Some(Duty::FileDrop(name.into()))
        } else if let Some(name) = lease.strip_prefix(POLL_LEASES) {
            Some(Duty::Poll(name.into()))
        } else {
            (lease == RETENTION_LEASE).then_some(Duty::Retention)
        }
    }
}

/// A live daemon sharing the database, how many partitions it holds and
/// the duties it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub holder: String,
    pub partitions: u64,
    pub duties: Vec<Duty>,
}

/// The daemons sharing the database whose leases are live, as `/v1/status`
/// and the console show them. One read of the (small) lease table.
pub fn members(store: &dyn Backend) -> Result<Vec<Member>, StoreError> {
    let leases = store.coordination()?.live_leases("")?;
    let held_by = |holder: &str| {
        let holder = holder.to_string();
        leases.iter().filter(move |lease| lease.holder == holder)
    };
    Ok(leases
        .iter()
        .filter(|lease| lease.name.starts_with(DAEMON_LEASES))
        .map(|daemon| Member {
            holder: daemon.holder.clone(),
            partitions: held_by(&daemon.holder)
                .filter(|lease| lease.name.starts_with(PARTITION_LEASES))
                .count() as u64,
            duties: held_by(&daemon.holder)
                .filter_map(|lease| Duty::of_lease(&lease.name))
                .collect(),
        })
        .collect())
}

/// A partition this daemon holds.
struct Held {
    token: i64,
    /// On the daemon's clock: timers due before it are late.
    since_ms: i64,
}

/// Rules reloads to and from the other daemons.
pub struct ReloadPeers {
    /// A local reload happened: tell the others.
    pub announce: mpsc::Receiver<()>,
    /// Another daemon reloaded: reload here too.
    pub remote: mpsc::Sender<()>,
}

/// The processing loop of a daemon sharing the database: partitions,
/// events, timers, reload notifications.
pub struct ClusterProcessor {
    /// Its `store` is this loop's own connection, for reads and writes.
    pub processor: Processor,
    /// Leases' and timers' time.
    pub clock: Clock,
    pub holder: String,
    pub ttl: Duration,
    pub dispatcher: mpsc::Sender<QueuedAction>,
    pub reloads: ReloadPeers,
}

impl ClusterProcessor {
    /// Runs until `stop`, then gives its leases back.
    ///
    /// A storage failure (a lost connection, a deadlock) ends the round it
    /// happened in: this loop then forgets its partitions and its cache
    /// (whatever it processed since its last commit may not be on disk),
    /// waits with backoff, and starts over, taking its partitions again
    /// through the same lease logic as at start. A partition whose lease
    /// expired meanwhile may have gone to another daemon; its fenced
    /// commits keep this one from writing to it.
    pub fn run(mut self, stop: CancellationToken) {
        let mut held = BTreeMap::new();
        let health = self.processor.journal.health().clone();
        let mut delays = health::retry_delays();
        while let Err(e) = self.work(&mut held, &stop, &health) {
            if !health.stage_failing(STAGE) {
                // The rounds before this one worked: a new failure.
                delays = health::retry_delays();
            }
            let wait = delays.next().unwrap_or_default();
            health.failed(STAGE, &format!("{e:#}"), wait);
            self.forget(&mut held);
            if sleep_unless_stopped(wait, &stop) {
                break;
            }
        }
        // Released at once, the partitions move on without waiting for expiry.
        if let Ok(shared) = self.processor.store.coordination() {
            for partition in held.keys() {
                let _ = shared.release_lease(&partition_lease(*partition), &self.holder);
            }
            let _ = shared.release_lease(&daemon_lease(&self.holder), &self.holder);
        }
        tracing::debug!("processor stopped");
    }

    /// After a failed round: holds nothing until the next membership round
    /// takes the partitions again, and keeps no state that may be ahead
    /// of the database.
    fn forget(&mut self, held: &mut BTreeMap<u32, Held>) {
        held.clear();
        self.processor.hold_partitions(Vec::new());
        self.processor.metrics.partitions_held.set(0);
    }

    fn work(
        &mut self,
        held: &mut BTreeMap<u32, Held>,
        stop: &CancellationToken,
        health: &StorageHealth,
    ) -> anyhow::Result<()> {
        let shared = self.processor.store.coordination()?;
        shared.listen(EVENTS_CHANNEL)?;
        shared.listen(RELOAD_CHANNEL)?;
        self.processor.caught_up.cancel();
        // Renewing is needed every third of the lease; looking for a dead
        // daemon's expired partitions more often makes a takeover faster.
        let round = (self.ttl / 3).min(MEMBERSHIP_ROUND);
        let mut last_membership: Option<Instant> = None;
        while !stop.is_cancelled() {
            if last_membership.is_none_or(|at| at.elapsed() >= round) {
                last_membership = Some(Instant::now());
                self.membership(held)?;
                health.succeeded(STAGE);
            }
            while self.reloads.announce.try_recv().is_ok() {
                self.processor
                    .store
                    .coordination()?
                    .notify(RELOAD_CHANNEL, &self.holder)?;
            }
            let busy = self.process_events(held)? | self.fire_timers(held)?;
            if busy {
                continue;
            }
            let wait = last_membership
                .map(|at| round.saturating_sub(at.elapsed()))
                .unwrap_or_default()
                .min(POLL);
            for (channel, payload) in self
                .processor
                .store
                .coordination()?
                .wait_for_notifications(wait)?
            {
                if channel == RELOAD_CHANNEL && payload != self.holder {
                    let _ = self.reloads.remote.try_send(());
                }
            }
        }
        Ok(())
    }

    /// Keeps this daemon's leases: its heartbeat, then its share of the
    /// partitions (renewed; extras given back; free or expired ones taken).
    /// About 2 + (partitions held) statements a round.
    fn membership(&mut self, held: &mut BTreeMap<u32, Held>) -> anyhow::Result<()> {
        let store = &self.processor.store;
        let shared = store.coordination()?;
        let holder = self.holder.as_str();
        shared.hold_lease(&daemon_lease(holder), holder, self.ttl)?;
        let daemons = shared.live_leases(DAEMON_LEASES)?.len().max(1);
        let share = PARTITIONS.div_ceil(u32::try_from(daemons).unwrap_or(u32::MAX)) as usize;
        let mut changed = false;

        let mut lost = Vec::new();
        for (partition, h) in held.iter() {
            if shared.hold_lease(&partition_lease(*partition), holder, self.ttl)? != Some(h.token) {
                lost.push(*partition);
            }
        }
        for partition in lost {
            tracing::warn!(partition, "partition lease lost to another daemon");
            held.remove(&partition);
            changed = true;
        }
        while held.len() > share {
            let Some((partition, _)) = held.pop_last() else {
                break;
            };
            shared.release_lease(&partition_lease(partition), holder)?;
            changed = true;
        }
        if held.len() < share {
            // Its own live leases (kept through a lost connection) it takes
            // again, with their tokens.
            let taken: std::collections::HashSet<String> = shared
                .live_leases(PARTITION_LEASES)?
                .into_iter()
                .filter(|lease| lease.holder != holder)
                .map(|lease| lease.name)
                .collect();
            // Each daemon starts looking at its own place, so they do not
            // all race for the same partitions.
            let offset = partition_of(holder);
            for i in 0..PARTITIONS {
                if held.len() >= share {
                    break;
                }
                let partition = (offset + i) % PARTITIONS;
                let name = partition_lease(partition);
                if held.contains_key(&partition) || taken.contains(&name) {
                    continue;
                }
                if let Some(token) = shared.hold_lease(&name, holder, self.ttl)? {
                    held.insert(
                        partition,
                        Held {
                            token,
                            since_ms: self.clock.now_ms(),
                        },
                    );
                    self.processor.metrics.partition_takeovers.inc();
                    changed = true;
                }
            }
        }
        if changed {
            let partitions: Vec<u32> = held.keys().copied().collect();
            let held_sends = shared.held_sends_in(&partitions)?;
            self.processor.hold_partitions(held_sends);
            self.processor
                .metrics
                .partitions_held
                .set(i64::try_from(held.len()).unwrap_or(i64::MAX));
            tracing::info!(partitions = ?partitions, daemons, "partitions held");
        }
        let (store, metrics) = (&self.processor.store, &self.processor.metrics);
        metrics.timers_pending.set(store.pending_timer_count()?);
        metrics.dead_letters.set(store.dead_letter_count()?);
        Ok(())
    }

    /// Processes one page of the held partitions' unprocessed events, in
    /// journal order, and commits the lot fenced by those partitions.
    /// Returns whether there was any.
    fn process_events(&mut self, held: &mut BTreeMap<u32, Held>) -> anyhow::Result<bool> {
        if held.is_empty() {
            return Ok(false);
        }
        let partitions: Vec<u32> = held.keys().copied().collect();
        // The previous page is committed: any state may be evicted.
        self.processor.trim_cache();
        let page = self
            .processor
            .store
            .coordination()?
            .unprocessed_events(&partitions, BATCH)?;
        if page.is_empty() {
            return Ok(false);
        }
        let rules = self.processor.rules.borrow_and_update().clone();
        let events: Vec<_> = page
            .into_iter()
            .map(|journaled| (Event::from_journal(&journaled.json), journaled))
            .collect();
        self.prefetch(&events)?;
        let mut touched = Vec::new();
        let mut processed = Vec::with_capacity(events.len());
        for (event, journaled) in events {
            let event = match event {
                // A querying rule reads the database: the page ends before
                // its event, which starts the next page once this one is
                // committed.
                Ok(event) if !processed.is_empty() && queries(&rules, &event) => break,
                Ok(event) => event,
                Err(e) => {
                    // Recorded as processed with the reason, or it would
                    // come back on every page.
                    tracing::error!(seq = journaled.seq, error = %e, "journaled event no longer parses; skipped");
                    processed.push(unreadable(
                        journaled.seq,
                        &e.to_string(),
                        self.clock.now_ms(),
                    ));
                    continue;
                }
            };
            touched.push(event_partition(event.subject.as_deref(), &event.id));
            let item = Journaled {
                seq: journaled.seq,
                event,
                received_at_ms: journaled.received_at_ms,
                acked_at: None,
                permit: None,
            };
            let result = self
                .processor
                .process(item, &rules)
                .map_err(|message| anyhow::anyhow!(message))?;
            processed.push(result.result);
        }
        let count = processed.len();
        let batch = WriteBatch {
            processed,
            fences: self.fences(held, touched),
            new_action_lease: Some(ActionLease {
                holder: self.holder.clone(),
                ttl_ms: i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX),
            }),
            ..WriteBatch::default()
        };
        let written = match self.commit(held, &batch)? {
            Some(written) => written,
            None => return Ok(true),
        };
        let metrics = &self.processor.metrics;
        metrics.events_processed.inc_by(count as u64);
        let emitted = written
            .emitted
            .iter()
            .filter(|a| matches!(a, converge_store::Appended::New { .. }))
            .count() as u64;
        metrics.events_emitted.inc_by(emitted);
        metrics
            .journal_events
            .inc_by(i64::try_from(emitted).unwrap_or(0));
        for action in written.actions {
            // A full queue leaves the action leased here until its lease
            // expires; then any daemon claims it.
            let _ = self.dispatcher.try_send(QueuedAction {
                action,
                acked_at: None,
                retried: false,
            });
        }
        Ok(true)
    }

    /// Reads the states of a page's entities missing from the cache in one
    /// statement, rather than one each as the processor meets them; an
    /// entity no event was about yet starts new, as the processor would
    /// start it, at its first event's time.
    fn prefetch(
        &mut self,
        events: &[(Result<Event, converge_model::EventError>, JournaledEvent)],
    ) -> anyhow::Result<()> {
        let mut missing: HashMap<EntityKey, DateTime<Utc>> = HashMap::new();
        for (event, journaled) in events {
            let Ok(event) = event else { continue };
            let Some(key) = event.entity_key() else {
                continue;
            };
            if !self.processor.cache.contains(&key) {
                missing.entry(key).or_insert_with(|| {
                    decision_time(event, millis_to_time(journaled.received_at_ms))
                });
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let keys: Vec<EntityKey> = missing.keys().cloned().collect();
        for state in self.processor.store.entities(&keys)? {
            missing.remove(&state.key());
            self.processor.cache.insert(state, 0);
        }
        for (key, first_seen) in missing {
            self.processor
                .cache
                .insert(EntityState::new(&key, first_seen), 0);
        }
        Ok(())
    }

    /// Fires (or skips, per their catch-up policy) the held partitions' due
    /// timers. A timer that fell due before this daemon took its partition
    /// is late. Returns whether there was any.
    fn fire_timers(&mut self, held: &mut BTreeMap<u32, Held>) -> anyhow::Result<bool> {
        if held.is_empty() {
            return Ok(false);
        }
        let partitions: Vec<u32> = held.keys().copied().collect();
        let now_ms = self.clock.now_ms();
        let due = self
            .processor
            .store
            .coordination()?
            .due_timers_in(&partitions, now_ms, BATCH)?;
        if due.is_empty() {
            return Ok(false);
        }
        let touched: Vec<u32> = due.iter().map(|t| partition_of(&t.entity)).collect();
        let plan = FiringPlan::of(due, now_ms, |timer| {
            held.get(&partition_of(&timer.entity))
                .is_some_and(|h| timer.due_at_ms < h.since_ms)
        });
        let batch = WriteBatch {
            fired_timers: plan
                .fire
                .iter()
                .map(|f| FiredTimer {
                    timer_id: f.timer_id,
                    event: NewEvent::from_event(&f.event, f.fired_at_ms),
                    fired_at_ms: f.fired_at_ms,
                })
                .collect(),
            skipped_timers: plan.skip,
            fences: self.fences(held, touched),
            ..WriteBatch::default()
        };
        let Some(written) = self.commit(held, &batch)? else {
            return Ok(true);
        };
        let metrics = &self.processor.metrics;
        for ((timer, late), outcome) in plan.fired.iter().zip(&written.fired) {
            if outcome.is_some() {
                metrics.journal_events.inc();
                metrics.timer_fired(timer.id, &timer.event_type, &timer.entity, *late);
            }
        }
        for timer in &plan.skipped {
            metrics.timer_skipped(timer.id, &timer.event_type, &timer.entity);
        }
        Ok(true)
    }

    /// The fences of the held partitions among `touched`.
    fn fences(&self, held: &BTreeMap<u32, Held>, mut touched: Vec<u32>) -> Vec<Fence> {
        touched.sort_unstable();
        touched.dedup();
        touched
            .into_iter()
            .filter_map(|p| {
                held.get(&p).map(|h| Fence {
                    lease: partition_lease(p),
                    holder: self.holder.clone(),
                    token: h.token,
                })
            })
            .collect()
    }

    /// Commits a fenced batch. `Ok(None)`: a lease was lost, nothing was
    /// written, and the partitions are re-read at the next membership round
    /// (forced now), with a fresh cache.
    fn commit(
        &mut self,
        held: &mut BTreeMap<u32, Held>,
        batch: &WriteBatch,
    ) -> anyhow::Result<Option<WriteResult>> {
        match self.processor.store.write(batch) {
            Ok(written) => Ok(Some(written)),
            Err(StoreError::Fenced { lease }) => {
                tracing::warn!(%lease, "lease lost before the commit; another daemon has this work");
                if let Some(partition) = lease
                    .strip_prefix(PARTITION_LEASES)
                    .and_then(|p| p.parse().ok())
                {
                    held.remove(&partition);
                }
                let partitions: Vec<u32> = held.keys().copied().collect();
                let held_sends = self
                    .processor
                    .store
                    .coordination()?
                    .held_sends_in(&partitions)?;
                self.processor.hold_partitions(held_sends);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Sleeps `wait` on this plain thread, in short steps so a stop is not
/// kept waiting. Returns whether `stop` fired.
fn sleep_unless_stopped(wait: Duration, stop: &CancellationToken) -> bool {
    let until = Instant::now() + wait;
    while !stop.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    true
}

/// The processing record of a journaled event that no longer parses.
fn unreadable(seq: i64, error: &str, now_ms: i64) -> ProcessedEvent {
    ProcessedEvent {
        seq,
        processed_at_ms: now_ms,
        rule_failures: vec![RuleFailure {
            rule: "converge".into(),
            rule_hash: String::new(),
            message: format!("the journaled event no longer parses: {error}"),
        }],
        ..ProcessedEvent::default()
    }
}

/// Runs a duty (a poll, a drop folder, the pruning) only while this daemon
/// holds its lease: tries to take it every round (a third of `ttl`, at most
/// a second), starts the duty when it does, renews it, and stops the duty
/// if the lease is lost. Gives the lease back when `stop` fires.
pub async fn lead<F>(
    store: Arc<Mutex<Store>>,
    health: StorageHealth,
    duty: Duty,
    holder: String,
    ttl: Duration,
    stop: CancellationToken,
    start: F,
) where
    F: Fn(CancellationToken) -> JoinHandle<()>,
{
    let name = duty.lease();
    let mut running: Option<(CancellationToken, JoinHandle<()>)> = None;
    let mut tick = tokio::time::interval((ttl / 3).min(MEMBERSHIP_ROUND));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let held = tokio::task::block_in_place(|| {
            store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .coordination()?
                .hold_lease(&name, &holder, ttl)
        });
        match &held {
            Ok(_) => health.succeeded(SOURCE_LEASES),
            Err(e) => health.failed(SOURCE_LEASES, &format!("{name}: {e}"), tick.period()),
        }
        match (held, running.is_some()) {
            (Ok(Some(_)), false) => {
                tracing::info!(source = %name, "this daemon runs the source now");
                let token = stop.child_token();
                let handle = start(token.clone());
                running = Some((token, handle));
            }
            (Ok(Some(_)), true) | (Ok(None), false) => {}
            (Ok(None), true) | (Err(_), true) => {
                tracing::warn!(source = %name, "source lease lost; stopping it here");
                if let Some((token, handle)) = running.take() {
                    token.cancel();
                    let _ = handle.await;
                }
            }
            // Reported above.
            (Err(_), false) => {}
        }
    }
    if let Some((token, handle)) = running.take() {
        token.cancel();
        let _ = handle.await;
    }
    let _ = tokio::task::block_in_place(|| {
        store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .coordination()?
            .release_lease(&name, &holder)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duty_is_read_back_from_its_lease_and_other_leases_are_no_duty() {
        for duty in [
            Duty::FileDrop("briefs".into()),
            Duty::Poll("jira/board".into()),
            Duty::Retention,
        ] {
            assert_eq!(Duty::of_lease(&duty.lease()), Some(duty));
        }
        // The names running clusters already hold.
        assert_eq!(Duty::Poll("jira".into()).lease(), "source/poll/jira");
        assert_eq!(Duty::Retention.lease(), "maintenance/retention");
        for other in [
            "daemon/vm-1",
            "partition/7",
            "source/other/x",
            "maintenance/",
        ] {
            assert_eq!(Duty::of_lease(other), None, "{other}");
        }
    }
}
