//! Routes: which plugin acts on which decision, and what the action carries.
//!
//! A route matches a decision kind and, when it says so, the rule that
//! decided, the decision's `to` (escalate, notify) and its `channel`
//! (pause, resume, hold and release a send). Every matching route acts:
//! a decision with two matching routes becomes two actions. A filter on a
//! member the kind does not have could never match; the config refuses it
//! ([`Route::unreachable`]).

use std::cell::OnceCell;

use converge_model::records::NewAction;
use converge_model::{Decision, DecisionKind, EntityState};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// One `[[routes]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub decision: String,
    pub plugin: String,
    /// The route's `config` table as JSON: what the plugin reads with `config-json`.
    pub config_json: String,
    /// Only decisions of this rule.
    pub rule: Option<String>,
    /// Only decisions to this person or team (`escalate`, `notify`).
    pub to: Option<String>,
    /// Only decisions about this channel (`pause_channel`, `resume_channel`,
    /// `hold_send`, `release_send`).
    pub channel: Option<String>,
    /// Whether its actions carry the entity's state (`carry_entity`, true
    /// unless the route says otherwise); without it their `entity` is
    /// `null`, for plugins that read only the decision and the event.
    pub carry_entity: bool,
}

/// The decision kinds with a `to`, and those with a `channel`.
pub const KINDS_WITH_TO: &[&str] = &["escalate", "notify"];
pub const KINDS_WITH_CHANNEL: &[&str] = &[
    "pause_channel",
    "resume_channel",
    "hold_send",
    "release_send",
];

impl Route {
    /// Why the route could never match, if it could not: a filter on a
    /// member its decision kind does not have.
    pub fn unreachable(&self) -> Option<String> {
        if self.to.is_some() && !KINDS_WITH_TO.contains(&self.decision.as_str()) {
            return Some(format!(
                "`to` filters only {} decisions; `{}` decisions have no `to`, so this route would never act",
                KINDS_WITH_TO.join(" and "),
                self.decision
            ));
        }
        if self.channel.is_some() && !KINDS_WITH_CHANNEL.contains(&self.decision.as_str()) {
            return Some(format!(
                "`channel` filters only {} decisions; `{}` decisions have no channel, so this route would never act",
                KINDS_WITH_CHANNEL.join(", "),
                self.decision
            ));
        }
        None
    }

    /// Whether this route acts on `decision`.
    pub fn matches(&self, decision: &Decision) -> bool {
        if self.decision != decision.kind.name() {
            return false;
        }
        if self
            .rule
            .as_ref()
            .is_some_and(|rule| *rule != decision.rule)
        {
            return false;
        }
        let (to, channel) = match &decision.kind {
            DecisionKind::Escalate { to, .. } | DecisionKind::Notify { to, .. } => (Some(to), None),
            DecisionKind::PauseChannel { channel, .. }
            | DecisionKind::ResumeChannel { channel, .. }
            | DecisionKind::HoldSend { channel, .. }
            | DecisionKind::ReleaseSend { channel, .. } => (None, Some(channel)),
            _ => (None, None),
        };
        let filter_ok = |filter: &Option<String>, value: Option<&String>| {
            filter.as_ref().is_none_or(|want| value == Some(want))
        };
        filter_ok(&self.to, to) && filter_ok(&self.channel, channel)
    }
}

/// What the outbox keeps for each action while it may run (pending or a
/// dead letter): the decision, the event and the entity as JSON, exactly
/// as the plugin receives them. The engine writes
/// it and the dispatcher reads it back; the JSON members are carried as raw
/// text so they are never parsed into trees and rebuilt on the way.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActionPayload<'a> {
    /// The decision kind routed: `escalate`, `notify`, ...
    pub kind: &'a str,
    pub rule: &'a str,
    #[serde(borrow)]
    pub decision: &'a RawValue,
    /// The CloudEvent that caused the decision (for a released send, the
    /// `send.requested` event that asked for it).
    #[serde(borrow)]
    pub event: &'a RawValue,
    /// The entity's state after the event and the rules, or `null` (an
    /// event about no entity, or a route with `carry_entity = false`).
    #[serde(borrow)]
    pub entity: &'a RawValue,
    /// The idempotency key the action's plugin sends, when it is not the
    /// action's own: a released send's comes from the send
    /// ([`send_key`]), so a second release could not make a second key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<&'a str>,
}

impl<'a> ActionPayload<'a> {
    pub fn parse(json: &'a str) -> Result<ActionPayload<'a>, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The `id` of the event, for logs, without parsing the whole event.
    pub fn event_id(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        serde_json::from_str::<Id>(self.event.get())
            .ok()
            .map(|e| e.id)
    }

    /// The event's `traceparent` (CloudEvents distributed tracing), so the
    /// action continues the event's trace.
    pub fn event_traceparent(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Trace {
            traceparent: Option<String>,
        }
        serde_json::from_str::<Trace>(self.event.get())
            .ok()
            .and_then(|e| e.traceparent)
    }
}

/// The entity's state as actions carry it: serialized when the first
/// route that carries it acts, once per event, and not at all when no
/// route does.
pub struct EntityJson<'a> {
    state: Option<&'a EntityState>,
    json: OnceCell<Box<RawValue>>,
}

impl<'a> EntityJson<'a> {
    pub fn new(state: Option<&'a EntityState>) -> EntityJson<'a> {
        EntityJson {
            state,
            json: OnceCell::new(),
        }
    }

    /// The state as JSON (`null` for an event about no entity).
    fn get(&self) -> Result<&RawValue, String> {
        if let Some(json) = self.json.get() {
            return Ok(json);
        }
        let json = serde_json::value::to_raw_value(&self.state).map_err(|e| e.to_string())?;
        Ok(self.json.get_or_init(|| json))
    }
}

/// The idempotency key of the action that performs a released send: the
/// `send.requested` event's journal `seq`, its channel and the route. The
/// same send released again (by another rule, an override, a retry or
/// after a restart) gets the same key, so the receiver can drop it.
pub fn send_key(send_seq: i64, channel: &str, route: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(channel.as_bytes());
    hash.update([0]);
    hash.update(route.as_bytes());
    let digest = hash.finalize();
    format!("converge-send-{send_seq}-{}", hex::encode(&digest[..8]))
}

/// The actions of a decision: one per matching route, each carrying the
/// decision, `event` and, when the route carries it, `entity`; `key`
/// names the send when the decision performs one (`send_seq`, for
/// [`send_key`]).
pub fn actions(
    routes: &[Route],
    decision: &Decision,
    event: &RawValue,
    entity: &EntityJson<'_>,
    send: Option<(i64, &str)>,
) -> Result<Vec<NewAction>, String> {
    let mut matching = routes.iter().filter(|r| r.matches(decision)).peekable();
    if matching.peek().is_none() {
        return Ok(Vec::new());
    }
    let decision_json = serde_json::value::to_raw_value(decision).map_err(|e| e.to_string())?;
    matching
        .map(|route| {
            let key = send.map(|(seq, channel)| send_key(seq, channel, &route.name));
            let entity = if route.carry_entity {
                entity.get()?
            } else {
                RawValue::NULL
            };
            let payload = serde_json::to_string(&ActionPayload {
                kind: decision.kind.name(),
                rule: &decision.rule,
                decision: &decision_json,
                event,
                entity,
                idempotency_key: key.as_deref(),
            })
            .map_err(|e| e.to_string())?;
            Ok(NewAction {
                route: route.name.clone(),
                plugin: route.plugin.clone(),
                payload_json: payload,
                payload_key: key,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(decision: &str) -> Route {
        Route {
            name: format!("{decision}-r"),
            decision: decision.into(),
            plugin: "p".into(),
            config_json: "{}".into(),
            rule: None,
            to: None,
            channel: None,
            carry_entity: true,
        }
    }

    fn escalate(rule: &str, to: &str) -> Decision {
        Decision {
            rule: rule.into(),
            rule_hash: String::new(),
            trace: None,
            kind: DecisionKind::Escalate {
                to: to.into(),
                reason: "r".into(),
                level: 1,
            },
        }
    }

    #[test]
    fn a_route_matches_its_kind_and_every_filter_it_sets() {
        let any = route("escalate");
        let legal = Route {
            to: Some("legal".into()),
            ..route("escalate")
        };
        let by_rule = Route {
            rule: Some("claims".into()),
            ..legal.clone()
        };
        let d = escalate("claims", "legal");
        assert!(any.matches(&d) && legal.matches(&d) && by_rule.matches(&d));
        let other = escalate("timing", "legal");
        assert!(legal.matches(&other) && !by_rule.matches(&other));
        assert!(!legal.matches(&escalate("claims", "campaign-manager")));
        assert!(!route("notify").matches(&d));
    }

    #[test]
    fn a_filter_on_a_member_the_kind_lacks_is_unreachable() {
        let r = Route {
            channel: Some("email".into()),
            ..route("escalate")
        };
        assert!(r.unreachable().unwrap().contains("no channel"));
        let r = Route {
            to: Some("ana".into()),
            ..route("release_send")
        };
        assert!(r.unreachable().unwrap().contains("no `to`"));
        let ok = Route {
            channel: Some("email".into()),
            ..route("release_send")
        };
        assert_eq!(ok.unreachable(), None);
    }

    #[test]
    fn a_sends_key_depends_on_the_send_and_the_route_only() {
        let key = send_key(7, "email", "sends");
        assert_eq!(key, send_key(7, "email", "sends"));
        assert!(key.starts_with("converge-send-7-"), "{key}");
        assert_ne!(key, send_key(7, "paid", "sends"));
        assert_ne!(key, send_key(8, "email", "sends"));
        assert_ne!(key, send_key(7, "email", "other"));
    }
}
