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
//! Convergence gates: a `hold_send` for a `send.requested` event holds that
//! send ([`Gates`]); a `release_send` releases every held send of its
//! channel (and the current send when the event requested it on that
//! channel), each becoming an action of the `release_send` routes with the
//! original send event; a `gate.override` event from converge's admin API
//! releases a campaign's held sends on a person's word. The changes are
//! committed with the event's processing.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use converge_model::{Decision, DecisionKind, EntityKey, EntityState, Event};
use converge_store::{
    ExpectedArrival, GateChange, NewAction, NewDecision, NewEvent, NewTimer, ProcessedEvent,
    RuleFailure, Store,
};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Route;
use crate::effects::{emitted_event, entity_data, new_timer};
use crate::gates::{Gates, HeldSend, OVERRIDE_RULE, Override, requested_channel};
use crate::journal::{Journal, Journaled, Processed};
use crate::outbox::ActionPayload;
use crate::reload::LoadedRules;
use crate::telemetry::Metrics;

/// How many entities' states stay in memory; past this the cache starts over
/// (states are re-read from the store on demand).
const ENTITY_CACHE_LIMIT: usize = 100_000;
/// Most events processed before their results are handed to the journal.
const BATCH: usize = 512;

pub struct Processor {
    /// The current rules; a hot reload replaces them.
    pub rules: watch::Receiver<Arc<LoadedRules>>,
    /// Routes by decision kind.
    pub routes: HashMap<String, Vec<Route>>,
    /// A read connection for entity states not in the cache and for the backlog.
    pub reader: Store,
    pub journal: Journal,
    pub metrics: Metrics,
    /// The states this processor last wrote, which may be ahead of the store
    /// by the batches the journal has not committed yet.
    pub cache: HashMap<EntityKey, EntityState>,
    /// The rules' `now`, the base of timers' due times, and processing times.
    pub clock: Clock,
    /// Deepest chain of `emit`s allowed (`rules.max_emit_depth`).
    pub max_emit_depth: u32,
    /// Cancelled once the events journaled before this start are processed
    /// (their results handed to the journal): the timer scheduler waits for
    /// it, so an expected event that arrived before a crash cancels its
    /// expect before the expect can fire.
    pub caught_up: CancellationToken,
    /// Every held send, ahead of the store like `cache`; loaded at start.
    pub gates: Gates,
}

/// What the decisions of one event ask the store to do besides recording them.
#[derive(Default)]
struct Effects {
    timers: Vec<NewTimer>,
    emits: Vec<NewEvent>,
    emitted: Vec<Event>,
    gate_changes: Vec<GateChange>,
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
            let processed: Result<Vec<_>, _> = batch
                .drain(..)
                .map(|item| self.process(item, &rules))
                .collect();
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
            let rules = self.rules.borrow_and_update().clone();
            for journaled in page.into_iter().take_while(|j| j.seq <= head) {
                after = journaled.seq;
                match Event::from_journal(&journaled.json) {
                    Ok(event) => processed.push(self.process(
                        Journaled {
                            seq: journaled.seq,
                            event,
                            received_at_ms: journaled.received_at_ms,
                            acked_at: None,
                            permit: None,
                        },
                        &rules,
                    )?),
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

    pub fn process(&mut self, item: Journaled, rules: &LoadedRules) -> Result<Processed, String> {
        let event = &item.event;
        let span = tracing::info_span!("process", event_id = %event.id, seq = item.seq);
        let _enter = span.enter();
        let now = self.clock.now();
        let at = event_time(event, item.received_at_ms);

        let mut entity = match event.entity_key() {
            Some(key) => Some(self.entity(key, at)?),
            None => None,
        };
        if let Some(state) = entity.as_mut() {
            state.apply_event(&event.ty, &entity_data(event), at);
        }
        let evaluation = rules.live.evaluate(event, entity.as_mut(), now);
        // Shadow rules change only a copy of the state, which is dropped.
        let shadow = if rules.shadow.rules().is_empty() {
            converge_rules::Evaluation::default()
        } else {
            let mut scratch = entity.clone();
            rules.shadow.evaluate(event, scratch.as_mut(), now)
        };
        for note in evaluation.notes.iter().chain(&shadow.notes) {
            tracing::debug!(rule = %note.rule, "{}", note.message);
        }

        let entity_json = serde_json::value::to_raw_value(&entity).map_err(|e| e.to_string())?;
        let event_json: &RawValue = serde_json::from_str(&event.json).map_err(|e| e.to_string())?;
        let mut decisions = Vec::with_capacity(evaluation.decisions.len());
        let mut rule_failures = Vec::new();
        let mut effects = Effects::default();
        for decision in evaluation.decisions {
            if let Err(message) = self.effect(item.seq, event, &decision, now, &mut effects) {
                rule_failures.push(converge_rules::RuleFailure {
                    rule: decision.rule,
                    rule_hash: decision.rule_hash,
                    message,
                });
                continue;
            }
            let kind = decision.kind.name();
            self.metrics
                .decisions
                .get_or_create(&crate::telemetry::KindLabel {
                    kind: kind.to_string(),
                })
                .inc();
            tracing::info!(rule = %decision.rule, kind, "decision");
            let actions = match &decision.kind {
                DecisionKind::HoldSend { channel, reason } => {
                    self.hold(
                        item.seq,
                        event,
                        &decision.rule,
                        channel,
                        reason,
                        &mut effects,
                    );
                    self.route(&decision, event_json, &entity_json)?
                }
                DecisionKind::ReleaseSend { channel, .. } => self.release(
                    item.seq,
                    event,
                    &decision,
                    channel,
                    &format!("rule {}", decision.rule),
                    &entity_json,
                    &mut effects,
                )?,
                _ => self.route(&decision, event_json, &entity_json)?,
            };
            decisions.push(NewDecision {
                decision,
                shadow: false,
                actions,
            });
        }
        match Override::of(event) {
            Some(Ok(request)) => decisions.extend(self.apply_override(
                item.seq,
                event,
                &request,
                &entity_json,
                &mut effects,
            )?),
            Some(Err(message)) => rule_failures.push(converge_rules::RuleFailure {
                rule: OVERRIDE_RULE.into(),
                rule_hash: String::new(),
                message,
            }),
            None => {}
        }
        self.metrics.held_sends.set(self.gates.held() as i64);
        for decision in shadow.decisions {
            let kind = decision.kind.name();
            self.metrics
                .shadow_decisions
                .get_or_create(&crate::telemetry::KindLabel {
                    kind: kind.to_string(),
                })
                .inc();
            tracing::info!(rule = %decision.rule, kind, "shadow decision (not acted on)");
            decisions.push(NewDecision {
                decision,
                shadow: true,
                actions: Vec::new(),
            });
        }
        let rule_failures = evaluation
            .failures
            .into_iter()
            .chain(shadow.failures)
            .chain(rule_failures)
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
                timers: effects.timers,
                cancel_expects: event.entity_key().map(|key| ExpectedArrival {
                    entity: key.to_string(),
                    event_type: event.ty.clone(),
                }),
                emits: effects.emits,
                gate_changes: effects.gate_changes,
            },
            emitted: effects.emitted,
            acked_at: item.acked_at,
            permit: item.permit,
        })
    }

    /// The actions of a decision's routes, each with the decision, this
    /// event and the entity.
    fn route(
        &self,
        decision: &Decision,
        event_json: &RawValue,
        entity_json: &RawValue,
    ) -> Result<Vec<NewAction>, String> {
        let kind = decision.kind.name();
        let routes = self.routes.get(kind).map(Vec::as_slice).unwrap_or_default();
        if routes.is_empty() {
            return Ok(Vec::new());
        }
        let decision_json = serde_json::value::to_raw_value(decision).map_err(|e| e.to_string())?;
        let payload = serde_json::to_string(&ActionPayload {
            kind,
            rule: &decision.rule,
            decision: &decision_json,
            event: event_json,
            entity: entity_json,
        })
        .map_err(|e| e.to_string())?;
        Ok(routes
            .iter()
            .map(|route| NewAction {
                route: route.name.clone(),
                plugin: route.plugin.clone(),
                payload_json: payload.clone(),
            })
            .collect())
    }

    /// A `hold_send` of the channel a `send.requested` event asked for
    /// holds that send; on other events it only stays a decision.
    fn hold(
        &mut self,
        seq: i64,
        event: &Event,
        rule: &str,
        channel: &str,
        reason: &str,
        effects: &mut Effects,
    ) {
        let (Some(key), Some(_)) = (event.entity_key(), requested_channel(event)) else {
            return;
        };
        let campaign = key.to_string();
        let send = HeldSend {
            event_seq: seq,
            channel: channel.to_string(),
            event_json: event.json.clone(),
        };
        if self.gates.hold(&campaign, send) {
            self.metrics
                .send_held(&campaign, channel, &event.id, reason);
            effects.gate_changes.push(GateChange::Hold {
                campaign,
                channel: channel.to_string(),
                rule: rule.to_string(),
                reason: reason.to_string(),
            });
        }
    }

    /// Releases the sends of `channel` held for the event's campaign, and
    /// the event's own send when it requested one on `channel` (and was not
    /// held by an earlier rule of this event, in which case it is among the
    /// held ones): one action per send and `release_send` route, carrying
    /// the send's own event.
    #[allow(clippy::too_many_arguments)]
    fn release(
        &mut self,
        seq: i64,
        event: &Event,
        decision: &Decision,
        channel: &str,
        by: &str,
        entity_json: &RawValue,
        effects: &mut Effects,
    ) -> Result<Vec<NewAction>, String> {
        let Some(key) = event.entity_key() else {
            return Ok(Vec::new());
        };
        let campaign = key.to_string();
        let released = self.gates.release(&campaign, channel);
        let mut sends: Vec<&str> = released.iter().map(|h| h.event_json.as_str()).collect();
        let current_held = released.iter().any(|h| h.event_seq == seq);
        if requested_channel(event) == Some(channel) && !current_held {
            sends.push(&event.json);
        }
        if !released.is_empty() {
            self.metrics
                .sends_released(&campaign, channel, released.len(), by);
            effects.gate_changes.push(GateChange::Release {
                campaign,
                channel: channel.to_string(),
                by: by.to_string(),
            });
        }
        let mut actions = Vec::new();
        for send in sends {
            let send: &RawValue = serde_json::from_str(send).map_err(|e| e.to_string())?;
            actions.extend(self.route(decision, send, entity_json)?);
        }
        Ok(actions)
    }

    /// A person's override: releases the held sends of its channel (or of
    /// every held channel), each channel's release recorded as a
    /// `release_send` decision of [`OVERRIDE_RULE`] with who and why, then
    /// the override itself for the gate's history.
    fn apply_override(
        &mut self,
        seq: i64,
        event: &Event,
        request: &Override,
        entity_json: &RawValue,
        effects: &mut Effects,
    ) -> Result<Vec<NewDecision>, String> {
        let Some(key) = event.entity_key() else {
            return Ok(Vec::new());
        };
        let campaign = key.to_string();
        let channels = match &request.channel {
            Some(channel) => vec![channel.clone()],
            None => self.gates.held_channels(&campaign),
        };
        let by = format!("override by {}", request.by);
        let mut decisions = Vec::new();
        let mut released = 0;
        for channel in channels {
            let before = self.gates.held();
            let decision = Decision {
                rule: OVERRIDE_RULE.into(),
                rule_hash: String::new(),
                trace: None,
                kind: DecisionKind::ReleaseSend {
                    channel: channel.clone(),
                    reason: format!("{by}: {}", request.reason),
                },
            };
            let actions =
                self.release(seq, event, &decision, &channel, &by, entity_json, effects)?;
            released += before - self.gates.held();
            decisions.push(NewDecision {
                decision,
                shadow: false,
                actions,
            });
        }
        self.metrics
            .gate_overridden(&campaign, request.channel.as_deref(), &request.by, released);
        effects.gate_changes.push(GateChange::Override {
            campaign,
            channel: request.channel.clone(),
            by: request.by.clone(),
            reason: request.reason.clone(),
            released,
        });
        Ok(decisions)
    }

    /// Turns a `schedule` or `expect` decision into a timer and an `emit`
    /// into an event to journal; other decisions have no effect here. An
    /// `Err` is why the decision cannot take effect: it is recorded as a
    /// failure of its rule instead of as a decision.
    fn effect(
        &self,
        seq: i64,
        event: &Event,
        decision: &Decision,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Result<(), String> {
        if let DecisionKind::Emit { event_type, data } = &decision.kind {
            let id = format!("emit-{seq}-{}", effects.emits.len() + 1);
            let emitted = emitted_event(event, id, event_type, data, now, self.max_emit_depth)?;
            effects
                .emits
                .push(NewEvent::from_event(&emitted, now.timestamp_millis()));
            effects.emitted.push(emitted);
        } else if let Some(timer) = new_timer(event, decision, now)? {
            effects.timers.push(timer);
        }
        Ok(())
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

/// When an event happened, as its entity's state records it: its own
/// `time`, else when it was received.
pub fn event_time(event: &Event, received_at_ms: i64) -> DateTime<Utc> {
    event.time.unwrap_or_else(|| millis_to_time(received_at_ms))
}

fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}
