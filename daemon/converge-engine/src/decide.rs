//! [`Engine::decide`]: everything one event causes, computed without I/O.
//!
//! The daemon (one database or shared), `converge rules test` and
//! `converge replay` all call it; what they differ in is only where the
//! states come from and where the outcome goes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use converge_model::records::{ExpectedArrival, GateChange, NewAction, NewDecision, NewTimer};
use converge_model::{
    Decision, DecisionKind, EntityKey, EntityState, Event, RuleFailure, RuleNote, Sample, sources,
};
use converge_rules::{Evaluation, RuleSet, World};

use crate::effects::{emitted_event, emitted_id, new_timer};
use crate::flow::{Before, Happened, StageRoles, observe};
use crate::gates::{
    Gates, HeldSend, OVERRIDE_RULE, Override, OverrideEvent, fail_safe_hold, requested_channel,
};
use crate::query::{EntitySource, QueryWorld};
use crate::routes::{EntityJson, Route, actions};

/// What decides: the routes and the emit depth limit. The rules come with
/// each call, since a reload may replace them between two events.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub routes: Vec<Route>,
    /// Deepest chain of `emit`s allowed (`rules.max_emit_depth`).
    pub max_emit_depth: u32,
    /// The team's stage names mapped onto the roles the metrics need, and
    /// that rules read with `stage_role(..)`.
    pub stages: Arc<StageRoles>,
}

/// Where an event's decisions come from.
enum Deciding<'r> {
    Rules(Rules<'r>),
    /// What the daemon recorded when it processed the event.
    Recorded(Evaluation),
}

/// One compiled version of the rules: the live ones, then the shadow ones.
#[derive(Clone, Copy)]
pub struct Rules<'r> {
    pub live: &'r RuleSet,
    pub shadow: Option<&'r RuleSet>,
}

/// One event to decide on.
pub struct Input<'a> {
    /// The event's journal `seq` (in a simulation, its number): the held
    /// send's identity and the base of emitted events' ids.
    pub seq: i64,
    pub event: &'a Event,
    /// The state of the entity the event names, if converge has one; a new
    /// entity starts at the engine's time.
    pub entity: Option<EntityState>,
    /// The clock when the event is processed.
    pub clock: DateTime<Utc>,
    /// What rules calling `entities(..)` read: the states as of this event.
    /// `None` where there are none to read (they fail).
    pub entities: Option<Arc<dyn EntitySource>>,
}

/// Everything one event causes.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The engine's time for the event: the rules' `now` and every time
    /// processing writes ([`decision_time`]).
    pub now: DateTime<Utc>,
    /// The entity's state after the event and the rules.
    pub entity: Option<EntityState>,
    /// Live decisions (with their actions), then the override's, then the
    /// shadow rules' (without).
    pub decisions: Vec<NewDecision>,
    /// Rules that failed, and decisions that could not take effect.
    pub failures: Vec<RuleFailure>,
    /// What the rules printed (`print`, `debug`), in order.
    pub notes: Vec<RuleNote>,
    pub timers: Vec<NewTimer>,
    /// The arrival this event is, for the `expect` timers waiting for it,
    /// then the expects its rules cancelled (`cancel_expects`).
    pub cancel_expects: Vec<ExpectedArrival>,
    /// Events the rules emitted, processed after this one.
    pub emitted: Vec<Event>,
    /// What the event did to convergence gates, in order.
    pub gate_changes: Vec<GateChange>,
    /// Sends released, per channel: for metrics and the log.
    pub releases: Vec<Release>,
    /// `release_send` decisions a hold of the same event overruled.
    pub overruled: Vec<Overruled>,
    /// The metric samples the event finished (`flow`), kept with its results.
    pub samples: Vec<Sample>,
}

/// Held sends of one channel released by one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub campaign: String,
    pub channel: String,
    /// The ids of the `send.requested` events released, oldest first (the
    /// event's own send last, when it was released at once).
    pub sends: Vec<String>,
    /// How many of them were held (the event's own send, sent at once, is not).
    pub held: usize,
    pub by: String,
}

/// A release that did not happen: a rule held the same channel on the same event.
#[derive(Debug, Clone, PartialEq)]
pub struct Overruled {
    pub rule: String,
    pub channel: String,
    /// The rules whose holds won.
    pub held_by: Vec<String>,
}

/// The engine's time for an event. Events converge journals itself on
/// time (a timer or schedule occurrence not fired late, an emitted event)
/// are decided at their own `time`: a timer a clock move passes is decided
/// at its due time, as replay decides it. Every other event, late timers
/// included, is decided at the clock's time when processed.
pub fn decision_time(event: &Event, clock: DateTime<Utc>) -> DateTime<Utc> {
    let on_time = match event.source.as_str() {
        sources::RULES => true,
        sources::TIMERS => !late(event, "timer"),
        sources::SCHEDULES => !late(event, "schedule"),
        _ => false,
    };
    match event.time {
        Some(time) if on_time => time,
        _ => clock,
    }
}

fn late(event: &Event, member: &str) -> bool {
    event
        .data
        .get(member)
        .and_then(|m| m.get("late"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// Whether an event's data is a fact about its entity. Events converge
/// journals itself (fired timers, emitted events, schedule occurrences,
/// overrides) are not: they change neither its fields, nor `updated_at`,
/// nor its event count.
pub fn changes_entity(event: &Event) -> bool {
    !sources::is_reserved(&event.source)
}

impl Engine {
    /// Decides one event: applies it to its entity, runs the live rules (then
    /// the shadow rules on a scratch copy), applies the gate rules to the
    /// holds and releases, routes the live decisions to actions, and turns
    /// `schedule`/`expect`/`emit` into timers and events. `gates` moves with
    /// the outcome; everything else is returned.
    pub fn decide(
        &self,
        rules: Rules<'_>,
        input: Input<'_>,
        gates: &mut Gates,
    ) -> Result<Outcome, String> {
        self.run(Deciding::Rules(rules), input, gates)
    }

    /// [`Engine::decide`] with the live decisions and rule failures the
    /// daemon recorded for the event instead of running rules: the same
    /// states, gates and metric samples as when it was processed, whatever
    /// the rules are now (`converge report --rebuild`). A person's override
    /// is decided from its event again, so its recorded decisions are left
    /// out here.
    pub fn redecide(
        &self,
        recorded: Evaluation,
        input: Input<'_>,
        gates: &mut Gates,
    ) -> Result<Outcome, String> {
        self.run(Deciding::Recorded(recorded), input, gates)
    }

    fn run(
        &self,
        deciding: Deciding<'_>,
        input: Input<'_>,
        gates: &mut Gates,
    ) -> Result<Outcome, String> {
        let Input {
            seq,
            event,
            entity,
            clock,
            entities,
        } = input;
        let now = decision_time(event, clock);
        let before = Before::of(entity.as_ref());
        let key = event.entity_key();
        // The entity's key as text, written once: the gate's campaign (when
        // the entity is one) and the expects this event may cancel.
        let key_text = key.as_ref().map(EntityKey::text);
        let campaign = key_text.as_deref();
        let mut entity = key.as_ref().map(|key| {
            let mut state = entity.unwrap_or_else(|| EntityState::new(key, now));
            if changes_entity(event) {
                state.apply_event(&event.ty, &event.data, now);
            }
            state
        });
        let (evaluation, shadow) = match deciding {
            Deciding::Rules(rules) => {
                let gate = gates.rule_view(campaign);
                // Built only for the events a querying rule handles.
                let queries = rules.live.queries_for(&event.ty)
                    || rules.shadow.is_some_and(|s| s.queries_for(&event.ty));
                let world: Option<Arc<dyn World>> = match entities {
                    Some(source) if queries => Some(Arc::new(QueryWorld::new(
                        source,
                        entity.clone(),
                        gates,
                        self.stages.clone(),
                        now,
                    ))),
                    _ => None,
                };
                let mut evaluation = rules.live.evaluate_in(
                    event,
                    entity.as_mut(),
                    now,
                    gate.as_ref(),
                    world.clone(),
                    Some(&self.stages),
                );
                let fail_safe = fail_safe_hold(rules.live, event, &evaluation);
                evaluation.decisions.extend(fail_safe);
                // Shadow rules change only a copy of the state, which is dropped.
                let shadow = match rules.shadow {
                    Some(shadow) if !shadow.rules().is_empty() => {
                        let mut scratch = entity.clone();
                        shadow.evaluate_in(
                            event,
                            scratch.as_mut(),
                            now,
                            gate.as_ref(),
                            world,
                            Some(&self.stages),
                        )
                    }
                    _ => Evaluation::default(),
                };
                (evaluation, shadow)
            }
            Deciding::Recorded(mut recorded) => {
                recorded.decisions.retain(|d| d.rule != OVERRIDE_RULE);
                if let Some(state) = entity.as_mut() {
                    for decision in &recorded.decisions {
                        converge_rules::apply(state, &decision.kind, now);
                    }
                }
                (recorded, Evaluation::default())
            }
        };

        let mut outcome = Outcome {
            now,
            cancel_expects: key_text
                .clone()
                .map(|key| ExpectedArrival::came(key, &event.ty))
                .into_iter()
                .collect(),
            ..Outcome::default()
        };
        let entity_json = EntityJson::new(entity.as_ref());
        let event_json = event.json.as_str();
        let mut sends = Sends {
            seq,
            event,
            campaign,
            holds: holds_by_channel(&evaluation.decisions),
            released_own: HashSet::new(),
            now,
        };

        outcome.notes = evaluation.notes;
        outcome.failures = evaluation.failures;
        for decision in evaluation.decisions {
            if let Err(message) = self.effect(seq, event, &decision, now, &mut outcome) {
                outcome.failures.push(RuleFailure {
                    rule: decision.rule,
                    rule_hash: decision.rule_hash,
                    message,
                });
                continue;
            }
            let actions = match &decision.kind {
                DecisionKind::HoldSend { channel, .. } => {
                    sends.hold(channel, gates, &mut outcome);
                    actions(&self.routes, &decision, event_json, &entity_json, None)
                }
                DecisionKind::ReleaseSend { channel, .. } => {
                    if let Some(held_by) = sends.holds.get(channel.as_str()) {
                        outcome.overruled.push(Overruled {
                            rule: decision.rule.clone(),
                            channel: channel.clone(),
                            held_by: held_by.iter().map(|(rule, _)| rule.clone()).collect(),
                        });
                        Vec::new()
                    } else {
                        let by = format!("rule {}", decision.rule);
                        sends.release(
                            self,
                            &decision,
                            channel,
                            &by,
                            &entity_json,
                            gates,
                            &mut outcome,
                        )
                    }
                }
                _ => actions(&self.routes, &decision, event_json, &entity_json, None),
            };
            outcome.decisions.push(NewDecision {
                decision,
                shadow: false,
                actions,
            });
        }
        match Override::of(event) {
            Some(Ok(request)) => {
                let decisions =
                    self.apply_override(&request, &mut sends, &entity_json, gates, &mut outcome);
                outcome.decisions.extend(decisions);
            }
            Some(Err(message)) => outcome.failures.push(RuleFailure {
                rule: OVERRIDE_RULE.into(),
                rule_hash: String::new(),
                message,
            }),
            None => {}
        }
        let escalated = outcome
            .decisions
            .iter()
            .any(|d| matches!(d.decision.kind, DecisionKind::Escalate { .. }));
        let exception = escalated || !outcome.failures.is_empty();
        let released = outcome
            .releases
            .iter()
            .filter(|r| Some(r.campaign.as_str()) == campaign)
            .map(|r| r.channel.as_str())
            .collect();
        outcome.samples = observe(
            &self.stages,
            &before,
            entity.as_mut(),
            &Happened {
                event,
                now,
                exception,
                escalated,
                released,
                gates: &*gates,
            },
        );
        outcome.notes.extend(shadow.notes);
        outcome.failures.extend(shadow.failures);
        outcome
            .decisions
            .extend(shadow.decisions.into_iter().map(|decision| NewDecision {
                decision,
                shadow: true,
                actions: Vec::new(),
            }));
        outcome.entity = entity;
        Ok(outcome)
    }

    /// A person's override: releases the held sends of its channel (or of
    /// every held channel), each channel's release recorded as a
    /// `release_send` decision of [`OVERRIDE_RULE`] with who and why, then
    /// the override itself for the gate's history.
    fn apply_override(
        &self,
        request: &Override,
        sends: &mut Sends<'_>,
        entity_json: &EntityJson<'_>,
        gates: &mut Gates,
        outcome: &mut Outcome,
    ) -> Vec<NewDecision> {
        let Some(campaign) = sends.campaign else {
            return Vec::new();
        };
        let channels = match &request.channel {
            Some(channel) => vec![channel.clone()],
            None => gates.held_channels(campaign),
        };
        let by = format!("override by {}", request.by);
        let mut decisions = Vec::new();
        let before = gates.held();
        for channel in channels {
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
                sends.release(self, &decision, &channel, &by, entity_json, gates, outcome);
            decisions.push(NewDecision {
                decision,
                shadow: false,
                actions,
            });
        }
        outcome.gate_changes.push(GateChange::Override {
            campaign: campaign.to_string(),
            channel: request.channel.clone(),
            by: request.by.clone(),
            reason: request.reason.clone(),
            released: before - gates.held(),
        });
        decisions
    }

    /// Turns a `schedule` or `expect` decision into a timer, an `emit` into
    /// an event and a `cancel_expects` into the expects it ends; other
    /// decisions have no effect here. An `Err` is why
    /// the decision cannot take effect: it is recorded as a failure of its
    /// rule instead of as a decision.
    fn effect(
        &self,
        seq: i64,
        event: &Event,
        decision: &Decision,
        now: DateTime<Utc>,
        outcome: &mut Outcome,
    ) -> Result<(), String> {
        if let DecisionKind::Emit { event_type, data } = &decision.kind {
            let id = emitted_id(seq, outcome.emitted.len() + 1);
            let emitted = emitted_event(event, id, event_type, data, now, self.max_emit_depth)?;
            outcome.emitted.push(emitted);
        } else if let DecisionKind::CancelExpects { event_type } = &decision.kind {
            let entity = event.entity_key().ok_or_else(|| {
                "`cancel_expects` needs an event about an entity (a subject like `task/T-1`)"
                    .to_string()
            })?;
            outcome.cancel_expects.push(ExpectedArrival::by_rule(
                entity.text(),
                event_type,
                &decision.rule,
            ));
        } else if let Some(timer) = new_timer(event, decision, now)? {
            outcome.timers.push(timer);
        }
        Ok(())
    }
}

/// The rules that hold each channel in this event, with their reasons, in
/// decision order.
fn holds_by_channel(decisions: &[Decision]) -> BTreeMap<String, Vec<(String, String)>> {
    let mut holds: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for decision in decisions {
        if let DecisionKind::HoldSend { channel, reason } = &decision.kind {
            let by = holds.entry(channel.clone()).or_default();
            if !by
                .iter()
                .any(|(rule, r)| *rule == decision.rule && r == reason)
            {
                by.push((decision.rule.clone(), reason.clone()));
            }
        }
    }
    holds
}

/// The sends of one event's processing: its own (when it is a
/// `send.requested`) and its campaign's held ones.
struct Sends<'a> {
    seq: i64,
    event: &'a Event,
    campaign: Option<&'a str>,
    /// Every hold this event's live rules made, by channel.
    holds: BTreeMap<String, Vec<(String, String)>>,
    /// The channels of this event's own send released already: a second
    /// release in the same event sends nothing more.
    released_own: HashSet<String>,
    now: DateTime<Utc>,
}

impl Sends<'_> {
    /// A hold of the channel this `send.requested` asked for holds the
    /// send, once, with every rule that held it and every reason; on other
    /// events a hold only overrules this event's releases of the channel.
    fn hold(&mut self, channel: &str, gates: &mut Gates, outcome: &mut Outcome) {
        let (Some(campaign), Some(requested)) = (self.campaign, requested_channel(self.event))
        else {
            return;
        };
        if requested != channel {
            return;
        }
        let Some(holds) = self.holds.get(channel) else {
            return;
        };
        let rules: Vec<&str> = holds.iter().map(|(rule, _)| rule.as_str()).collect();
        let reasons: Vec<&str> = holds.iter().map(|(_, reason)| reason.as_str()).collect();
        let send = HeldSend {
            event_seq: self.seq,
            event_id: self.event.id.clone(),
            channel: channel.to_string(),
            event_json: self.event.json.clone(),
            rule: dedup(&rules).join(", "),
            reason: reasons.join("; "),
            held_at_ms: self.now.timestamp_millis(),
        };
        if gates.hold(campaign, send.clone()) {
            outcome.gate_changes.push(GateChange::Hold {
                campaign: campaign.to_string(),
                channel: send.channel,
                rule: send.rule,
                reason: send.reason,
            });
        }
    }

    /// Releases the sends of `channel` held for the campaign, and the
    /// event's own send when it requested one on `channel` and no rule held
    /// it: one action per send and matching route, carrying the send's own
    /// event and a key derived from the send.
    #[allow(clippy::too_many_arguments)]
    fn release(
        &mut self,
        engine: &Engine,
        decision: &Decision,
        channel: &str,
        by: &str,
        entity_json: &EntityJson<'_>,
        gates: &mut Gates,
        outcome: &mut Outcome,
    ) -> Vec<NewAction> {
        let Some(campaign) = self.campaign else {
            return Vec::new();
        };
        let released = gates.release(campaign, channel);
        let mut sends: Vec<(i64, &str, &str)> = released
            .iter()
            .map(|h| (h.event_seq, h.event_id.as_str(), h.event_json.as_str()))
            .collect();
        let own_held = released.iter().any(|h| h.event_seq == self.seq);
        if requested_channel(self.event) == Some(channel)
            && !own_held
            && self.released_own.insert(channel.to_string())
        {
            sends.push((self.seq, &self.event.id, &self.event.json));
        }
        if !sends.is_empty() {
            outcome.releases.push(Release {
                campaign: campaign.to_string(),
                channel: channel.to_string(),
                sends: sends.iter().map(|(_, id, _)| id.to_string()).collect(),
                held: released.len(),
                by: by.to_string(),
            });
        }
        if !released.is_empty() {
            outcome.gate_changes.push(GateChange::Release {
                campaign: campaign.to_string(),
                channel: channel.to_string(),
                by: by.to_string(),
            });
        }
        let mut all = Vec::new();
        for (send_seq, _, send) in sends {
            all.extend(actions(
                &engine.routes,
                decision,
                send,
                entity_json,
                Some((send_seq, channel)),
            ));
        }
        all
    }
}

/// `items` without repeats, in first-seen order.
fn dedup<'a>(items: &[&'a str]) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(item) {
            seen.push(*item);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use converge_rules::{RuleLimits, RuleSource};
    use serde_json::{Value, json};

    use super::*;

    fn rules(files: &[(&str, &str)]) -> RuleSet {
        RuleSet::compile(
            files
                .iter()
                .map(|(name, source)| RuleSource {
                    name: (*name).into(),
                    path: format!("rules/{name}.rhai").into(),
                    source: (*source).into(),
                })
                .collect(),
            &RuleLimits::default(),
        )
        .unwrap()
    }

    fn event(id: &str, ty: &str, data: Value) -> Event {
        Event::from_value(
            json!({"specversion": "1.0", "id": id, "source": "/t", "type": ty,
            "subject": "campaign/c-1", "data": data}),
        )
        .unwrap()
    }

    fn engine() -> Engine {
        Engine {
            routes: vec![Route {
                name: "sends".into(),
                decision: "release_send".into(),
                plugin: "webhook-out".into(),
                config_json: "{}".into(),
                rule: None,
                to: None,
                channel: None,
                carry_entity: true,
            }],
            max_emit_depth: 8,
            stages: Default::default(),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// The idempotency keys of an outcome's actions.
    fn keys(outcome: &Outcome) -> Vec<String> {
        outcome
            .decisions
            .iter()
            .flat_map(|d| &d.actions)
            .map(|a| {
                let payload: Value = serde_json::from_str(a.payload.as_str()).unwrap();
                payload["idempotency_key"].as_str().unwrap().to_string()
            })
            .collect()
    }

    const RELEASE: &str = "//! events: send.requested\nrelease_send(\"email\", \"rule A: ok\");";
    const HOLD: &str = "//! events: send.requested\nhold_send(\"email\", \"rule B: not ok\");";
    const LATER: &str = "//! events: legal.approved\nrelease_send(\"email\", \"approved later\");";

    #[test]
    fn a_hold_beats_a_release_of_the_same_event_whatever_the_rule_order() {
        for order in [
            [("a_release", RELEASE), ("b_hold", HOLD), ("c_later", LATER)],
            [("b_hold", HOLD), ("a_release", RELEASE), ("c_later", LATER)],
        ] {
            let rules = rules(&order);
            let rules = Rules {
                live: &rules,
                shadow: None,
            };
            let (engine, mut gates) = (engine(), Gates::default());
            let request = event("req-1", "send.requested", json!({"channel": "email"}));
            let requested = engine
                .decide(
                    rules,
                    Input {
                        seq: 1,
                        event: &request,
                        entity: None,
                        clock: at("2026-01-01T00:00:00Z"),
                        entities: None,
                    },
                    &mut gates,
                )
                .unwrap();
            assert!(keys(&requested).is_empty(), "sent before approval");
            assert_eq!(
                requested.overruled,
                [Overruled {
                    rule: "a_release".into(),
                    channel: "email".into(),
                    held_by: vec!["b_hold".into()],
                }]
            );
            let held = gates.of("campaign/c-1");
            assert_eq!(held.len(), 1);
            assert_eq!(
                (held[0].rule.as_str(), held[0].reason.as_str()),
                ("b_hold", "rule B: not ok")
            );

            let approval = event("ok-1", "legal.approved", json!({}));
            let approved = engine
                .decide(
                    rules,
                    Input {
                        seq: 2,
                        event: &approval,
                        entity: requested.entity.clone(),
                        clock: at("2026-01-01T01:00:00Z"),
                        entities: None,
                    },
                    &mut gates,
                )
                .unwrap();
            assert_eq!(
                keys(&approved),
                [crate::routes::send_key(1, "email", "sends")]
            );
            assert_eq!(approved.releases[0].sends, ["req-1"]);
            assert_eq!(gates.held(), 0);

            let again = engine
                .decide(
                    rules,
                    Input {
                        seq: 3,
                        event: &event("ok-2", "legal.approved", json!({})),
                        entity: approved.entity.clone(),
                        clock: at("2026-01-01T02:00:00Z"),
                        entities: None,
                    },
                    &mut gates,
                )
                .unwrap();
            assert!(keys(&again).is_empty(), "a send released twice");
        }
    }

    #[test]
    fn every_rule_holding_a_send_is_kept_with_its_reason() {
        let rules = rules(&[
            (
                "claims",
                "hold_send(\"email\", \"banned claim: risk-free\");",
            ),
            ("timing", "hold_send(\"email\", \"launches 5h apart\");"),
            ("ok", "release_send(\"email\", \"looks fine\");"),
        ]);
        let mut gates = Gates::default();
        let request = event("req-1", "send.requested", json!({"channel": "email"}));
        let outcome = engine()
            .decide(
                Rules {
                    live: &rules,
                    shadow: None,
                },
                Input {
                    seq: 7,
                    event: &request,
                    entity: None,
                    clock: at("2026-01-01T00:00:00Z"),
                    entities: None,
                },
                &mut gates,
            )
            .unwrap();
        assert!(keys(&outcome).is_empty());
        let view = gates.rule_view(Some("campaign/c-1")).unwrap();
        assert_eq!(gates.rule_view(Some("campaign/other")), None);
        assert_eq!(view["open"], json!(true));
        assert_eq!(view["held"][0]["rules"], json!(["claims", "timing"]));
        assert_eq!(
            view["held"][0]["reasons"],
            json!(["banned claim: risk-free", "launches 5h apart"])
        );
    }

    #[test]
    fn an_unheld_send_released_by_two_rules_goes_out_once() {
        let rules = rules(&[
            ("one", "release_send(\"email\", \"ok\");"),
            ("two", "release_send(\"email\", \"also ok\");"),
        ]);
        let request = event("req-1", "send.requested", json!({"channel": "email"}));
        let outcome = engine()
            .decide(
                Rules {
                    live: &rules,
                    shadow: None,
                },
                Input {
                    seq: 4,
                    event: &request,
                    entity: None,
                    clock: at("2026-01-01T00:00:00Z"),
                    entities: None,
                },
                &mut Gates::default(),
            )
            .unwrap();
        assert_eq!(
            keys(&outcome),
            [crate::routes::send_key(4, "email", "sends")]
        );
    }

    #[test]
    fn rules_read_the_held_sends_and_release_what_another_rule_held() {
        let rules = rules(&[
            (
                "hold",
                "//! events: send.requested\nhold_send(\"email\", \"wait\");",
            ),
            (
                "release",
                "//! events: check\nif gate.open && gate.held[0].rules[0] == \"hold\" { release_send(gate.held[0].channel, `was: ${gate.held[0].reasons[0]}`); }",
            ),
        ]);
        let rules = Rules {
            live: &rules,
            shadow: None,
        };
        let mut gates = Gates::default();
        let clock = at("2026-01-01T00:00:00Z");
        let request = event("req-1", "send.requested", json!({"channel": "email"}));
        let input = |seq, event| Input {
            seq,
            event,
            entity: None,
            clock,
            entities: None,
        };
        engine()
            .decide(rules, input(1, &request), &mut gates)
            .unwrap();
        let check = event("c-1", "check", json!({}));
        let outcome = engine()
            .decide(rules, input(2, &check), &mut gates)
            .unwrap();
        assert_eq!(keys(&outcome).len(), 1);
        let DecisionKind::ReleaseSend { reason, .. } = &outcome.decisions[0].decision.kind else {
            panic!("{:?}", outcome.decisions);
        };
        assert_eq!(reason, "was: wait");
    }

    #[test]
    fn converges_own_events_are_decided_at_their_time_unless_late() {
        let clock = at("2026-01-01T05:00:00Z");
        let timer = |late: bool| {
            Event::from_value(json!({"specversion": "1.0", "id": "timer-1",
                "source": sources::TIMERS, "type": "pong", "subject": "task/T-1",
                "time": "2026-01-01T01:00:00Z", "data": {"timer": {"id": 1, "late": late}}}))
            .unwrap()
        };
        assert_eq!(
            decision_time(&timer(false), clock),
            at("2026-01-01T01:00:00Z")
        );
        assert_eq!(decision_time(&timer(true), clock), clock);
        let outside = Event::from_value(json!({"specversion": "1.0", "id": "e",
            "source": "/jira", "type": "t", "time": "2026-01-01T01:00:00Z"}))
        .unwrap();
        assert_eq!(decision_time(&outside, clock), clock);
    }

    #[test]
    fn timer_and_emitted_events_do_not_change_the_entity() {
        let rules = rules(&[("noop", "let x = 1;")]);
        let rules = Rules {
            live: &rules,
            shadow: None,
        };
        let clock = at("2026-01-01T00:00:00Z");
        let mut gates = Gates::default();
        let update = Event::from_value(json!({"specversion": "1.0", "id": "u", "source": "/jira",
            "type": "task.updated", "subject": "task/T-1", "data": {"stage": "review"}}))
        .unwrap();
        let first = engine()
            .decide(
                rules,
                Input {
                    seq: 1,
                    event: &update,
                    entity: None,
                    clock,
                    entities: None,
                },
                &mut gates,
            )
            .unwrap();
        let before = first.entity.unwrap();
        assert_eq!(before.stage_since, Some(clock));
        let reminder = Event::from_value(json!({"specversion": "1.0", "id": "timer-1",
            "source": sources::TIMERS, "type": "task.remind", "subject": "task/T-1",
            "time": "2026-01-03T00:00:00Z", "data": {"hours": 48, "timer": {"id": 1, "late": false}}}))
        .unwrap();
        let after = engine()
            .decide(
                rules,
                Input {
                    seq: 2,
                    event: &reminder,
                    entity: Some(before.clone()),
                    clock: at("2026-01-03T00:00:00Z"),
                    entities: None,
                },
                &mut gates,
            )
            .unwrap();
        assert_eq!(after.entity.unwrap(), before);
    }

    #[test]
    fn a_route_that_does_not_carry_the_entity_gets_null_and_the_others_its_state() {
        let route = |name: &str, carry_entity: bool| Route {
            name: name.into(),
            decision: "notify".into(),
            plugin: "webhook-out".into(),
            config_json: "{}".into(),
            rule: None,
            to: None,
            channel: None,
            carry_entity,
        };
        let decide = |routes: Vec<Route>| {
            let rules = rules(&[("tell", "notify(\"ops\", \"changed\");")]);
            let engine = Engine { routes, ..engine() };
            let update = event(
                "u-1",
                "asset.updated",
                json!({"channel": "email", "owner": "ana"}),
            );
            let outcome = engine
                .decide(
                    Rules {
                        live: &rules,
                        shadow: None,
                    },
                    Input {
                        seq: 1,
                        event: &update,
                        entity: None,
                        clock: at("2026-01-01T00:00:00Z"),
                        entities: None,
                    },
                    &mut Gates::default(),
                )
                .unwrap();
            let payloads: Vec<(String, Value)> = outcome.decisions[0]
                .actions
                .iter()
                .map(|a| {
                    (
                        a.route.clone(),
                        serde_json::from_str(a.payload.as_str()).unwrap(),
                    )
                })
                .collect();
            (payloads, outcome.entity.unwrap())
        };

        let (payloads, state) = decide(vec![route("whole", true), route("small", false)]);
        assert_eq!(payloads.len(), 2);
        let (whole, small) = (&payloads[0].1, &payloads[1].1);
        assert_eq!(
            (payloads[0].0.as_str(), payloads[1].0.as_str()),
            ("whole", "small")
        );
        assert_eq!(
            (&whole["entity"]["kind"], &whole["entity"]["id"]),
            (&json!("campaign"), &json!("c-1"))
        );
        assert_eq!(whole["entity"]["channels"]["email"]["owner"], json!("ana"));
        assert_eq!(small["entity"], Value::Null);
        // Everything else is the same for both.
        for member in ["kind", "rule", "decision", "event"] {
            assert_eq!(whole[member], small[member], "{member}");
        }
        assert_eq!(small["event"]["id"], json!("u-1"));
        assert_eq!(state.key().to_string(), "campaign/c-1");

        // The state itself does not depend on what the actions carry.
        let (payloads, alone) = decide(vec![route("small", false)]);
        assert_eq!(payloads[0].1["entity"], Value::Null);
        assert_eq!(alone, state);
    }
}
