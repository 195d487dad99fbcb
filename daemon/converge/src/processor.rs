//! The processor: applies each journaled event to its entity's state, runs the
//! rules, turns decisions into actions by the configured routes, and hands the
//! lot to the journal to commit in one transaction.
//!
//! It is one thread, taking events in journal order, which is what keeps the
//! events of one entity in order. Rhai evaluation is synchronous CPU work, so
//! it stays off the async runtime.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use converge_model::{EntityKey, EntityState, Event};
use converge_rules::RuleSet;
use converge_store::{NewAction, NewDecision, ProcessedEvent, RuleFailure, Store};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Route;
use crate::journal::{Journal, Journaled, Processed};
use crate::outbox::ActionPayload;
use crate::telemetry::Metrics;

/// How many entities' states stay in memory; past this the cache starts over
/// (states are re-read from the store on demand).
const ENTITY_CACHE_LIMIT: usize = 100_000;
/// Most events processed before their results are handed to the journal.
const BATCH: usize = 512;

pub struct Processor {
    pub rules: Arc<RuleSet>,
    /// Routes by decision kind.
    pub routes: HashMap<String, Vec<Route>>,
    /// A read connection for entity states not in the cache and for the backlog.
    pub reader: Store,
    pub journal: Journal,
    pub metrics: Metrics,
    /// The states this processor last wrote, which may be ahead of the store
    /// by the batches the journal has not committed yet.
    pub cache: HashMap<EntityKey, EntityState>,
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
            tracing::error!(error = %e, "cannot process the journal backlog; stopping");
            fatal.cancel();
            return;
        }
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
            let processed: Result<Vec<_>, _> =
                batch.drain(..).map(|item| self.process(item)).collect();
            let sent = match processed {
                Ok(processed) => self
                    .journal
                    .processed_blocking(processed)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::error!(error = %e, "processing stopped");
                fatal.cancel();
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
                .reader
                .events_after(after, BATCH)
                .map_err(|e| e.to_string())?;
            let mut processed = Vec::with_capacity(page.len());
            for journaled in page.into_iter().take_while(|j| j.seq <= head) {
                after = journaled.seq;
                match Event::from_journal(&journaled.json) {
                    Ok(event) => processed.push(self.process(Journaled {
                        seq: journaled.seq,
                        event,
                        received_at_ms: journaled.received_at_ms,
                        acked_at: None,
                        permit: None,
                    })?),
                    Err(e) => {
                        tracing::error!(seq = journaled.seq, error = %e, "journaled event no longer parses; skipped")
                    }
                }
            }
            if processed.is_empty() {
                break;
            }
            self.journal
                .processed_blocking(processed)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn process(&mut self, item: Journaled) -> Result<Processed, String> {
        let event = &item.event;
        let span = tracing::info_span!("process", event_id = %event.id, seq = item.seq);
        let _enter = span.enter();
        let now = Utc::now();
        let at = event
            .time
            .unwrap_or_else(|| millis_to_time(item.received_at_ms));

        let mut entity = match event.entity_key() {
            Some(key) => Some(self.entity(key, at)?),
            None => None,
        };
        if let Some(state) = entity.as_mut() {
            state.apply_event(&event.ty, &event.data, at);
        }
        let evaluation = self.rules.evaluate(event, entity.as_mut(), now);
        for note in &evaluation.notes {
            tracing::debug!(rule = %note.rule, "{}", note.message);
        }

        let entity_json = serde_json::value::to_raw_value(&entity).map_err(|e| e.to_string())?;
        let event_json: &RawValue = serde_json::from_str(&event.json).map_err(|e| e.to_string())?;
        let mut decisions = Vec::with_capacity(evaluation.decisions.len());
        for decision in evaluation.decisions {
            let kind = decision.kind.name();
            self.metrics
                .decisions
                .get_or_create(&crate::telemetry::KindLabel {
                    kind: kind.to_string(),
                })
                .inc();
            tracing::info!(rule = %decision.rule, kind, "decision");
            let routes = self.routes.get(kind).map(Vec::as_slice).unwrap_or_default();
            let actions = if routes.is_empty() {
                Vec::new()
            } else {
                let decision_json =
                    serde_json::value::to_raw_value(&decision).map_err(|e| e.to_string())?;
                let payload = serde_json::to_string(&ActionPayload {
                    kind,
                    rule: &decision.rule,
                    decision: &decision_json,
                    event: event_json,
                    entity: &entity_json,
                })
                .map_err(|e| e.to_string())?;
                routes
                    .iter()
                    .map(|route| NewAction {
                        route: route.name.clone(),
                        plugin: route.plugin.clone(),
                        payload_json: payload.clone(),
                    })
                    .collect()
            };
            decisions.push(NewDecision { decision, actions });
        }
        let rule_failures = evaluation
            .failures
            .into_iter()
            .map(|f| {
                self.metrics.rule_failures.inc();
                tracing::warn!(rule = %f.rule, error = %f.message, "rule failed");
                RuleFailure {
                    rule: f.rule,
                    rule_hash: f.rule_hash,
                    message: f.message,
                }
            })
            .collect();
        if let Some(state) = &entity {
            if self.cache.len() >= ENTITY_CACHE_LIMIT {
                self.cache.clear();
            }
            self.cache.insert(state.key(), state.clone());
        }
        Ok(Processed {
            result: ProcessedEvent {
                seq: item.seq,
                entity,
                decisions,
                rule_failures,
                processed_at_ms: now.timestamp_millis(),
            },
            acked_at: item.acked_at,
            permit: item.permit,
        })
    }

    fn entity(&mut self, key: EntityKey, at: DateTime<Utc>) -> Result<EntityState, String> {
        if let Some(state) = self.cache.get(&key) {
            return Ok(state.clone());
        }
        match self.reader.entity(&key) {
            Ok(state) => Ok(state.unwrap_or_else(|| EntityState::new(&key, at))),
            Err(e) => Err(format!("cannot read the state of {key}: {e}")),
        }
    }
}

fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}
