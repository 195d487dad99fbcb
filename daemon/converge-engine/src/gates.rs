//! Convergence gates as the engine keeps them: every held send, and what a
//! person's override asks for.
//!
//! A `hold_send` on a `send.requested` event holds that event's send on the
//! channel; within one event a hold from any rule beats a release from any
//! other (`decide.rs`). A held send leaves [`Gates`] when it is released,
//! so it is released at most once; the store keeps the same record through
//! `GateChange`s committed with each event's processing, which is what
//! [`Gates::load`] reads back at start.
//!
//! A gate fails closed: when a rule that gates sends fails on a send
//! request that no rule held, the engine holds the send itself
//! ([`fail_safe_hold`]), so it is neither sent unjudged nor lost; the rule's
//! next successful check releases it as any held send.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use converge_model::records::HeldSendRecord;
use converge_model::{Decision, DecisionKind, Event, OwnEvent, sources};
use converge_rules::{Evaluation, RuleSet};
use serde_json::{Value, json};

/// The type of an override's event.
pub const OVERRIDE_TYPE: &str = "gate.override";
/// The type of the events that ask for a send, which a gate may hold.
pub const SEND_REQUESTED: &str = "send.requested";
/// The rule name the decisions of an override are recorded under: the
/// admin API's source, as journals already record them.
pub const OVERRIDE_RULE: &str = sources::ADMIN;
/// The rule name a send held because its gating rule failed is recorded
/// under ([`fail_safe_hold`]).
pub const FAIL_SAFE_RULE: &str = "converge/fail-safe";

/// The hold the engine records when a rule that gates sends
/// ([`converge_rules::Rule::gates_sends`]) failed on a send request and no
/// rule held the send: a gate whose rule cannot judge a send keeps it.
/// Its reason names the rule and its error.
pub fn fail_safe_hold(rules: &RuleSet, event: &Event, evaluation: &Evaluation) -> Option<Decision> {
    let channel = requested_channel(event)?;
    event.entity_key()?;
    let held = evaluation.decisions.iter().any(
        |d| matches!(&d.kind, DecisionKind::HoldSend { channel: held, .. } if held == channel),
    );
    if held {
        return None;
    }
    let failure = evaluation.failures.iter().find(|failure| {
        rules
            .rules()
            .iter()
            .any(|rule| rule.name == failure.rule && rule.gates_sends)
    })?;
    Some(Decision {
        rule: FAIL_SAFE_RULE.into(),
        rule_hash: String::new(),
        trace: None,
        kind: DecisionKind::HoldSend {
            channel: channel.into(),
            // Reasons are `; `-separated where several rules hold a send.
            reason: format!(
                "rule {} failed on the request, so the send is held: {}",
                failure.rule,
                failure.message.replace("; ", ", ")
            ),
        },
    })
}

/// A send held by a gate.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldSend {
    /// The journal `seq` of the `send.requested` event.
    pub event_seq: i64,
    pub event_id: String,
    pub channel: String,
    /// That event's JSON: what its release hands the channel's plugin.
    pub event_json: String,
    /// The rules that held it, and why (`; `-separated, one per rule).
    pub rule: String,
    pub reason: String,
    pub held_at_ms: i64,
}

impl HeldSend {
    /// The send as rules read it in `gate.held`.
    pub fn to_rule_value(&self) -> Value {
        let since = DateTime::<Utc>::from_timestamp_millis(self.held_at_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        json!({
            "channel": self.channel,
            "event_id": self.event_id,
            "since": since,
            "rules": self.rule.split(", ").collect::<Vec<_>>(),
            "reasons": self.reason.split("; ").collect::<Vec<_>>(),
        })
    }
}

/// Every held send, by campaign (entity key). What the store holds as
/// `held`, plus the changes of the batches not committed yet: the engine
/// reads only this, never the store.
#[derive(Debug, Default, Clone)]
pub struct Gates {
    open: HashMap<String, Vec<HeldSend>>,
}

impl Gates {
    pub fn load(records: Vec<HeldSendRecord>) -> Gates {
        let mut gates = Gates::default();
        for record in records {
            gates
                .open
                .entry(record.campaign)
                .or_default()
                .push(HeldSend {
                    event_seq: record.event_seq,
                    event_id: record.event_id,
                    channel: record.channel,
                    event_json: record.event_json,
                    rule: record.rule,
                    reason: record.reason,
                    held_at_ms: record.held_at_ms,
                });
        }
        gates
    }

    /// How many sends are held, in every campaign.
    pub fn held(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }

    /// The sends held for one campaign, oldest first.
    pub fn of(&self, campaign: &str) -> &[HeldSend] {
        self.open.get(campaign).map_or(&[], Vec::as_slice)
    }

    /// Every held send, with its campaign, by campaign then oldest first.
    pub fn all(&self) -> impl Iterator<Item = (&str, &HeldSend)> {
        let mut campaigns: Vec<&String> = self.open.keys().collect();
        campaigns.sort();
        campaigns
            .into_iter()
            .flat_map(|c| self.open[c].iter().map(move |send| (c.as_str(), send)))
    }

    /// Holds a send; false if this event's send on this channel is already held.
    pub fn hold(&mut self, campaign: &str, send: HeldSend) -> bool {
        let held = self.open.entry(campaign.to_string()).or_default();
        if held
            .iter()
            .any(|h| h.event_seq == send.event_seq && h.channel == send.channel)
        {
            return false;
        }
        held.push(send);
        true
    }

    /// Takes every send of the campaign held on `channel`, oldest first.
    pub fn release(&mut self, campaign: &str, channel: &str) -> Vec<HeldSend> {
        let Some(held) = self.open.get_mut(campaign) else {
            return Vec::new();
        };
        let (released, kept) = held.drain(..).partition(|h| h.channel == channel);
        *held = kept;
        if held.is_empty() {
            self.open.remove(campaign);
        }
        released
    }

    /// The channels of the campaign with held sends, in the order first held.
    pub fn held_channels(&self, campaign: &str) -> Vec<String> {
        let mut channels: Vec<String> = Vec::new();
        for held in self.of(campaign) {
            if !channels.contains(&held.channel) {
                channels.push(held.channel.clone());
            }
        }
        channels
    }

    /// What rules read as `gate`: whether the campaign's gate holds
    /// anything, and each held send; `None` when it holds nothing.
    pub fn rule_view(&self, campaign: Option<&str>) -> Option<Value> {
        let held = campaign.map(|c| self.of(c)).unwrap_or_default();
        if held.is_empty() {
            return None;
        }
        let held: Vec<Value> = held.iter().map(HeldSend::to_rule_value).collect();
        Some(json!({"open": true, "held": held}))
    }
}

/// What a `gate.override` event asks: the admin API's override request,
/// journaled as the event's data.
pub use converge_api::gates::Override;

/// An [`Override`] as the `gate.override` event that carries it: a trait,
/// as the type is `converge-api`'s, which knows no events.
pub trait OverrideEvent: Sized {
    /// The override an event of converge's admin API carries, if it is one.
    fn of(event: &Event) -> Option<Result<Self, String>>;
    /// The event that journals this override of `campaign` (an entity key).
    fn event(&self, id: String, campaign: &str, now: DateTime<Utc>) -> Result<Event, String>;
}

impl OverrideEvent for Override {
    fn of(event: &Event) -> Option<Result<Override, String>> {
        if event.source != sources::ADMIN || event.ty != OVERRIDE_TYPE {
            return None;
        }
        Some(
            serde_json::from_value::<Override>(event.data.clone())
                .map_err(|e| format!("the override event's data is not an override: {e}"))
                .and_then(Override::validate),
        )
    }

    fn event(&self, id: String, campaign: &str, now: DateTime<Utc>) -> Result<Event, String> {
        let data = serde_json::to_value(self).map_err(|e| e.to_string())?;
        Event::own(OwnEvent {
            id,
            source: sources::ADMIN,
            ty: OVERRIDE_TYPE,
            subject: Some(campaign),
            time: now,
            data,
            extensions: &[],
        })
        .map_err(|e| e.to_string())
    }
}

/// The channel a `send.requested` event asks to send on.
pub fn requested_channel(event: &Event) -> Option<&str> {
    if event.ty != SEND_REQUESTED {
        return None;
    }
    event.data.get("channel").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failing_rule_that_gates_sends_makes_the_engine_hold_a_request() {
        let rules = RuleSet::compile(
            [
                (
                    "gate",
                    "if event.data.fail { throw \"no brief\"; }\nrelease_send(\"email\", \"ok\");",
                ),
                ("digest", "throw \"unrelated\";"),
                (
                    "keeper",
                    "if event.data.keep { hold_send(\"email\", \"legal first\"); }",
                ),
            ]
            .into_iter()
            .map(|(name, source)| converge_rules::RuleSource {
                name: name.into(),
                path: format!("rules/{name}.rhai").into(),
                source: source.into(),
            })
            .collect(),
            &converge_rules::RuleLimits::default(),
        )
        .unwrap();
        let request = |ty: &str, data: Value| {
            Event::from_value(json!({
                "specversion": "1.0", "id": "e-1", "source": "/t", "type": ty,
                "subject": "campaign/c-1", "data": data,
            }))
            .unwrap()
        };
        let hold = |event: &Event| {
            let mut state =
                converge_model::EntityState::new(&event.entity_key().unwrap(), Utc::now());
            let evaluation = rules.evaluate(event, Some(&mut state), Utc::now());
            fail_safe_hold(&rules, event, &evaluation).map(|d| (d.rule, d.kind))
        };

        let failing = request(
            SEND_REQUESTED,
            json!({"channel": "email", "fail": true, "keep": false}),
        );
        assert_eq!(
            hold(&failing),
            Some((
                FAIL_SAFE_RULE.to_string(),
                DecisionKind::HoldSend {
                    channel: "email".into(),
                    reason: "rule gate failed on the request, so the send is held: rules/gate.rhai:1:22: Runtime error: no brief".into(),
                }
            ))
        );
        // `digest` fails on every event, but gates nothing.
        let passing = request(
            SEND_REQUESTED,
            json!({"channel": "email", "fail": false, "keep": false}),
        );
        assert_eq!(hold(&passing), None);
        // Held by a rule already: nothing to add.
        let kept = request(
            SEND_REQUESTED,
            json!({"channel": "email", "fail": true, "keep": true}),
        );
        assert_eq!(hold(&kept), None);
        // Not a send request, or one that names no channel: nothing to hold.
        assert_eq!(
            hold(&request(
                "campaign.updated",
                json!({"fail": true, "keep": false})
            )),
            None
        );
        assert_eq!(
            hold(&request(
                SEND_REQUESTED,
                json!({"fail": true, "keep": false})
            )),
            None
        );
    }

    fn held(seq: i64, channel: &str) -> HeldSend {
        HeldSend {
            event_seq: seq,
            event_id: format!("e-{seq}"),
            channel: channel.into(),
            event_json: "{}".into(),
            rule: "r".into(),
            reason: "why".into(),
            held_at_ms: 0,
        }
    }

    #[test]
    fn releases_take_one_channel_and_close_an_empty_gate() {
        let mut gates = Gates::default();
        assert!(gates.hold("campaign/c", held(1, "email")));
        assert!(!gates.hold("campaign/c", held(1, "email")), "held once");
        assert!(gates.hold("campaign/c", held(2, "social")));
        assert!(gates.hold("campaign/c", held(3, "email")));
        assert_eq!(gates.held(), 3);
        assert_eq!(gates.held_channels("campaign/c"), ["email", "social"]);
        let released: Vec<i64> = gates
            .release("campaign/c", "email")
            .iter()
            .map(|h| h.event_seq)
            .collect();
        assert_eq!(released, [1, 3]);
        assert_eq!(gates.release("campaign/c", "social").len(), 1);
        assert_eq!(gates.held(), 0);
        assert!(gates.open.is_empty());
    }
}
