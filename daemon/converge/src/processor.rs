//! The processor: applies each journaled event to its entity's state, runs the
//! rules, turns decisions into actions by the configured routes, and hands the
//! lot to the journal to commit in one transaction.
//!
//! It is one thread, taking events in journal order, which is what keeps the
//! events of one entity in order. Rhai evaluation is synchronous CPU work, so
//! it stays off the async runtime.
//!
//! The rules come from a `watch` channel the reloader updates; the processor
//! reads the current version before each batch, so a reload takes effect
//! between events. Shadow rules run after the live rules on a scratch copy
//! of the entity state; their decisions are recorded with the `shadow`
//! mark and given no actions, timers, emits or state changes.
//!
//! What each event causes is decided by the engine (`converge_engine`),
//! the same code `converge rules test` and `converge replay` run: this
//! module only feeds it states (its cache, else the store), logs and counts
//! the outcome, and hands it to the journal.
//!
//! A rule that reads other entities (`entities(..)`) must see every earlier
//! event's results: before an event such a rule handles, the processor
//! hands over what it has and waits until the journal has committed it
//! (`settle`), and the rule reads the database (`StoreEntities`). Only those
//! events pay for the wait.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use converge_engine::{Engine, EntitySource, Gates, Input, Outcome, Rules};
use converge_model::records::HeldSendRecord;
use converge_model::{EntityKey, EntityState, Event, RuleNote};
use converge_store::{GateChange, NewEvent, ProcessedEvent, Store};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::entity_cache::EntityCache;
use crate::journal::{Journal, Journaled, Processed};
use crate::reload::LoadedRules;
use crate::telemetry::Metrics;

/// Most events processed before their results are handed to the journal.
const BATCH: usize = 512;

pub struct Processor {
    /// The current rules; a hot reload replaces them.
    pub rules: watch::Receiver<Arc<LoadedRules>>,
    /// The decision path: routes and limits.
    pub engine: Engine,
    /// The processor's own connection: entity states not in the cache and
    /// the backlog are read through it; in shared-database mode the
    /// cluster loop also writes, leases and listens through it.
    pub store: Store,
    pub journal: Journal,
    pub metrics: Metrics,
    /// The states this processor last wrote, which may be ahead of the store
    /// by the batches the journal has not committed yet (`entity_cache`).
    pub cache: EntityCache,
    /// The last `seq` whose results are known committed (`settle` saw it).
    pub committed: i64,
    /// Cancelled once the events journaled before this start are processed
    /// (their results handed to the journal): the timer scheduler waits for
    /// it, so an expected event that arrived before a crash cancels its
    /// expect before the expect can fire.
    pub caught_up: CancellationToken,
    /// Every held send, ahead of the store like `cache`; loaded at start.
    pub gates: Gates,
    /// What querying rules read: the database, through its own connection.
    pub entities: Arc<StoreEntities>,
    /// The last `seq` handed to the journal, which `settle` waits for.
    pub handed_over: i64,
    /// Cancelled when the daemon stops: `settle` then stops waiting for a
    /// commit that a storage failure holds back.
    pub stopping: CancellationToken,
}

/// The database as rules' `entities(..)` read it (its own connection, so
/// a query never waits for the processor's).
pub struct StoreEntities {
    store: std::sync::Mutex<Store>,
}

/// Entity states read per query while a rule's `entities(..)` scans a kind.
const SCAN_PAGE: usize = 256;

impl StoreEntities {
    pub fn new(store: Store) -> StoreEntities {
        StoreEntities {
            store: std::sync::Mutex::new(store),
        }
    }
}

impl EntitySource for StoreEntities {
    fn scan(&self, kind: &str, visit: &mut dyn FnMut(EntityState) -> bool) -> Result<(), String> {
        let store = self
            .store
            .lock()
            .map_err(|_| "the query connection failed")?;
        // Keys sort as `kind/id`: the first after `kind/` starts the kind.
        let mut after = EntityKey {
            kind: kind.to_string(),
            id: String::new(),
        };
        loop {
            let page = store
                .entities_after(Some(&after), SCAN_PAGE)
                .map_err(|e| format!("cannot read the {kind} entities: {e}"))?;
            let full = page.len() == SCAN_PAGE;
            for state in page {
                if state.kind != kind {
                    return Ok(());
                }
                after = state.key();
                if !visit(state) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn sample_groups(
        &self,
        query: &converge_model::SampleQuery,
    ) -> Result<Vec<converge_model::SampleGroup>, String> {
        let store = self
            .store
            .lock()
            .map_err(|_| "the query connection failed")?;
        store
            .sample_groups(query)
            .map_err(|e| format!("cannot read the {} samples: {e}", query.metric))
    }

    fn pending_timers(&self, entity: &str) -> Result<Vec<converge_store::TimerRecord>, String> {
        let store = self
            .store
            .lock()
            .map_err(|_| "the query connection failed")?;
        let Some(key) = EntityKey::parse(entity) else {
            return Ok(Vec::new());
        };
        let mut timers = store
            .entity_timers(&key, true, converge_rules::QUERY_DEFAULT_LIMIT)
            .map_err(|e| format!("cannot read the timers of {entity}: {e}"))?;
        timers.sort_by_key(|t| (t.due_at_ms, t.id));
        Ok(timers)
    }
}

impl Processor {
    /// Processes the events journaled before start (after the processed
    /// cursor, up to `head`), then live ones until `rx` closes or `stop`
    /// fires. A storage failure cancels `fatal`: the daemon cannot go on
    /// deciding on states it cannot read.
    pub fn run(
        mut self,
        runtime: tokio::runtime::Handle,
        backlog_after: i64,
        head: i64,
        mut rx: mpsc::UnboundedReceiver<Journaled>,
        stop: CancellationToken,
        fatal: CancellationToken,
    ) {
        if let Err(e) = self.catch_up(backlog_after, head, &stop) {
            if !stop.is_cancelled() {
                tracing::error!(error = %e, "cannot process the journal backlog; stopping");
                fatal.cancel();
            }
            return;
        }
        self.caught_up.cancel();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let first = runtime.block_on(async {
                tokio::select! {
                    item = rx.recv() => item,
                    () = stop.cancelled() => None,
                }
            });
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            self.metrics.set_queue_depth("processor", rx.len());
            let rules = self.rules.borrow_and_update().clone();
            let sent = self.process_batch(batch.drain(..), &rules);
            if let Err(e) = sent {
                if !stop.is_cancelled() {
                    tracing::error!(error = %e, "processing stopped");
                    fatal.cancel();
                }
                break;
            }
        }
        tracing::debug!("processor stopped");
    }

    fn catch_up(
        &mut self,
        mut after: i64,
        head: i64,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        if after >= head {
            return Ok(());
        }
        tracing::info!(
            from = after + 1,
            to = head,
            "processing events journaled before this start"
        );
        while after < head && !stop.is_cancelled() {
            let page = self
                .store
                .events_after(after, BATCH)
                .map_err(|e| e.to_string())?;
            let mut processed = Vec::with_capacity(page.len());
            let rules = self.rules.borrow_and_update().clone();
            for journaled in page.into_iter().take_while(|j| j.seq <= head) {
                after = journaled.seq;
                self.make_room(&mut processed)?;
                let event = match Event::from_journal(&journaled.json) {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::error!(seq = journaled.seq, error = %e, "journaled event no longer parses; skipped");
                        continue;
                    }
                };
                if queries(&rules, &event) {
                    self.hand_over(std::mem::take(&mut processed))?;
                    self.settle()?;
                }
                processed.push(self.process(
                    Journaled {
                        seq: journaled.seq,
                        event,
                        received_at_ms: journaled.received_at_ms,
                        acked_at: None,
                        permit: None,
                    },
                    &rules,
                )?);
            }
            if processed.is_empty() {
                break;
            }
            self.hand_over(processed)?;
        }
        Ok(())
    }

    /// Processes `items` in order and hands the results to the journal,
    /// settling first before each event a querying rule handles.
    fn process_batch(
        &mut self,
        items: impl Iterator<Item = Journaled>,
        rules: &LoadedRules,
    ) -> Result<(), String> {
        let mut processed = Vec::new();
        for item in items {
            if queries(rules, &item.event) {
                self.hand_over(std::mem::take(&mut processed))?;
                self.settle()?;
            }
            self.make_room(&mut processed)?;
            processed.push(self.process(item, rules)?);
        }
        self.hand_over(processed)
    }

    /// Evicts the least recently used states while the cache is full,
    /// waiting first for the journal to commit one that is not yet: a state
    /// dropped while its batch is on its way to the database would be read
    /// back stale from the store. With a cache much larger than the events
    /// in flight, that wait is rare.
    fn make_room(&mut self, processed: &mut Vec<Processed>) -> Result<(), String> {
        while self.cache.is_full() {
            if self.cache.lru_seq().is_some_and(|seq| seq > self.committed) {
                self.hand_over(std::mem::take(processed))?;
                self.settle()?;
            }
            self.cache.evict_lru();
        }
        Ok(())
    }

    /// For the cluster loop, between pages (each committed before the
    /// next): evicts down to the cache's size.
    pub fn trim_cache(&mut self) {
        self.cache.trim_committed();
    }

    /// For the cluster loop, when the partitions it holds change (or it
    /// lost them all): another daemon may have changed their entities
    /// and gates, so no cached state is kept and the held sends are those
    /// the database has for the partitions now held.
    pub fn hold_partitions(&mut self, held_sends: Vec<HeldSendRecord>) {
        self.cache.clear();
        self.gates = Gates::load(held_sends);
    }

    fn hand_over(&mut self, processed: Vec<Processed>) -> Result<(), String> {
        let Some(last) = processed.last() else {
            return Ok(());
        };
        let seq = last.result.seq;
        self.journal
            .processed_blocking(processed)
            .map_err(|e| e.to_string())?;
        self.handed_over = self.handed_over.max(seq);
        Ok(())
    }

    /// Waits until the journal has committed every result handed to it, so
    /// the database holds the states as of the next event. While storage
    /// is failing the journal keeps retrying those results, so the wait
    /// lasts as long as the failure does.
    fn settle(&mut self) -> Result<(), String> {
        let mut deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            if self.stopping.is_cancelled() {
                return Err("stopping before the journal committed the results".into());
            }
            if self.journal.health().is_failing() {
                deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
            }
            let cursor = self
                .store
                .processed_cursor()
                .map_err(|e| format!("cannot read the processed cursor: {e}"))?;
            if cursor >= self.handed_over {
                self.committed = self.committed.max(cursor);
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the journal has not committed the results up to {} in {}s",
                    self.handed_over,
                    SETTLE_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    pub fn process(&mut self, item: Journaled, rules: &LoadedRules) -> Result<Processed, String> {
        let event = &item.event;
        let span =
            tracing::info_span!("process", event_id = %event.id.escape_debug(), seq = item.seq);
        crate::otel::continue_trace(&span, event.traceparent.as_deref());
        let _enter = span.enter();
        let entity = match event.entity_key() {
            Some(key) => self.entity(&key)?,
            None => None,
        };
        let outcome = self.engine.decide(
            Rules {
                live: &rules.live,
                shadow: Some(&rules.shadow),
            },
            Input {
                seq: item.seq,
                event,
                entity,
                // When the daemon's clock journaled it: what replay reads
                // back, so both decide at the same time.
                clock: millis_to_time(item.received_at_ms),
                entities: Some(self.entities.clone() as Arc<dyn EntitySource>),
            },
            &mut self.gates,
        )?;
        self.observe(event, &outcome);
        let entity = outcome.entity.map(Arc::new);
        if let Some(state) = &entity {
            self.cache.insert(Arc::clone(state), item.seq);
        }
        let now_ms = outcome.now.timestamp_millis();
        let rule_notes = kept_notes(&outcome.notes);
        Ok(Processed {
            result: ProcessedEvent {
                seq: item.seq,
                entity,
                decisions: outcome.decisions,
                rule_failures: outcome.failures,
                rule_notes,
                processed_at_ms: now_ms,
                timers: outcome.timers,
                cancel_expects: outcome.cancel_expects,
                emits: outcome
                    .emitted
                    .iter()
                    .map(|e| NewEvent::from_event(e, now_ms))
                    .collect(),
                gate_changes: outcome.gate_changes,
                samples: outcome.samples,
            },
            emitted: outcome.emitted,
            acked_at: item.acked_at,
            permit: item.permit,
        })
    }

    /// Logs and counts what the engine decided for one event.
    fn observe(&self, event: &Event, outcome: &Outcome) {
        for note in &outcome.notes {
            tracing::debug!(rule = %note.rule, "{}", note.message.escape_debug());
        }
        for decision in &outcome.decisions {
            let kind = decision.decision.kind.name();
            let label = crate::telemetry::KindLabel {
                kind: kind.to_string(),
            };
            if decision.shadow {
                self.metrics.shadow_decisions.get_or_create(&label).inc();
                tracing::debug!(rule = %decision.decision.rule, kind, "shadow decision (not acted on)");
            } else {
                self.metrics.decisions.get_or_create(&label).inc();
                tracing::debug!(rule = %decision.decision.rule, kind, "decision");
            }
        }
        for failure in &outcome.failures {
            self.metrics.rule_failures.inc();
            tracing::warn!(
                rule = %failure.rule,
                event_id = %event.id.escape_debug(),
                error = %failure.message.escape_debug(),
                "rule failed"
            );
        }
        for change in &outcome.gate_changes {
            match change {
                GateChange::Hold {
                    campaign,
                    channel,
                    reason,
                    ..
                } => self.metrics.send_held(
                    campaign,
                    channel,
                    &event.id.escape_debug().to_string(),
                    reason,
                ),
                GateChange::Override {
                    campaign,
                    channel,
                    by,
                    released,
                    ..
                } => self
                    .metrics
                    .gate_overridden(campaign, channel.as_deref(), by, *released),
                GateChange::Release { .. } => {}
            }
        }
        for release in outcome.releases.iter().filter(|r| r.held > 0) {
            self.metrics.sends_released(
                &release.campaign,
                &release.channel,
                release.held,
                &release.by,
            );
        }
        for overruled in &outcome.overruled {
            tracing::info!(
                rule = %overruled.rule,
                event_id = %event.id.escape_debug(),
                channel = %overruled.channel,
                held_by = %overruled.held_by.join(", "),
                "release overruled: a rule held the same channel on this event"
            );
        }
        self.metrics.held_sends.set(self.gates.held() as i64);
    }

    /// The entity's state as this processor last wrote it, else as the
    /// store has it; `None` for an entity no event was about yet. A cached
    /// state is taken out of the cache: the engine returns the state after
    /// the event, which `process` puts back. On an error nothing is put
    /// back, and none is needed: the error stops processing, or, with
    /// several daemons, fails the round, which clears the cache.
    fn entity(&mut self, key: &EntityKey) -> Result<Option<EntityState>, String> {
        if let Some(state) = self.cache.take(key) {
            return Ok(Some(state));
        }
        self.store
            .entity(key)
            .map_err(|e| format!("cannot read the state of {key}: {e}"))
    }
}

/// How long `settle` waits for the journal's commit, once storage works,
/// before giving up.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a live or shadow rule that handles the event reads other entities.
pub fn queries(rules: &LoadedRules, event: &Event) -> bool {
    rules.live.queries_for(&event.ty) || rules.shadow.queries_for(&event.ty)
}

/// Longest line of rule output kept with an event's trail; the rules crate
/// bounds how many lines a rule keeps per event.
const MAX_NOTE_CHARS: usize = 1000;

/// What the rules printed for an event, as its trail keeps it: each line
/// cut at [`MAX_NOTE_CHARS`].
fn kept_notes(notes: &[RuleNote]) -> Vec<RuleNote> {
    notes
        .iter()
        .map(|note| {
            let mut message = note.message.clone();
            if let Some((cut, _)) = message.char_indices().nth(MAX_NOTE_CHARS) {
                message.truncate(cut);
                message.push_str(" ...");
            }
            RuleNote {
                rule: note.rule.clone(),
                message,
            }
        })
        .collect()
}

/// A journal time in milliseconds; out of range (a damaged row) is the epoch.
pub fn millis_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}
