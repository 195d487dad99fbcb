//! Routes: which plugin acts on which decision, and what the action carries.
//!
//! A route matches a decision kind and, when it says so, the rule that
//! decided, the decision's `to` (escalate, notify) and its `channel`
//! (pause, resume, hold and release a send). Every matching route acts:
//! a decision with two matching routes becomes two actions. A filter on a
//! member the kind does not have could never match; the config refuses it
//! ([`Route::unreachable`]).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::ops::Range;

use converge_model::records::{NewAction, PayloadJson, PayloadLayout};
use converge_model::{Decision, DecisionKind, EntityState};
use serde::Deserialize;
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
/// as the plugin receives them. The engine writes it (`payload_json`)
/// and the dispatcher reads it back; the JSON members are carried as raw
/// text so they are never parsed into trees and rebuilt on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionPayload<'a> {
    /// The decision kind routed: `escalate`, `notify`, ...
    pub kind: Cow<'a, str>,
    pub rule: Cow<'a, str>,
    /// The decision's JSON.
    pub decision: &'a str,
    /// The JSON of the CloudEvent that caused the decision (for a released
    /// send, the `send.requested` event that asked for it).
    pub event: &'a str,
    /// The JSON of the entity's state after the event and the rules, or
    /// `null` (an event about no entity, or a route with `carry_entity =
    /// false`).
    pub entity: &'a str,
    /// The idempotency key the action's plugin sends, when it is not the
    /// action's own: a released send's comes from the send
    /// ([`send_key`]), so a second release could not make a second key.
    pub idempotency_key: Option<Cow<'a, str>>,
}

/// The payload's JSON object, as `payload_json` writes it; read through
/// serde, which checks that the members are JSON.
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    rule: Cow<'a, str>,
    #[serde(borrow)]
    decision: &'a RawValue,
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(borrow)]
    entity: &'a RawValue,
    #[serde(default, borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

impl<'a> ActionPayload<'a> {
    /// An action's payload: taken by its layout when this process wrote it
    /// (parsing it again cost about 8,600 instructions per action), parsed
    /// when it was read back from the store.
    pub fn read(payload: &'a PayloadJson) -> Result<ActionPayload<'a>, serde_json::Error> {
        let json = payload.as_str();
        match payload
            .layout()
            .and_then(|layout| ActionPayload::laid_out(json, layout))
        {
            Some(read) => Ok(read),
            None => ActionPayload::parse(json),
        }
    }

    /// A payload's JSON, parsed, and so checked.
    fn parse(json: &'a str) -> Result<ActionPayload<'a>, serde_json::Error> {
        let stored: Stored<'a> = serde_json::from_str(json)?;
        Ok(ActionPayload {
            kind: stored.kind,
            rule: stored.rule,
            decision: stored.decision.get(),
            event: stored.event.get(),
            entity: stored.entity.get(),
            idempotency_key: stored.idempotency_key,
        })
    }

    /// The members where the layout says they are; `None` if a range does
    /// not fall within the text.
    fn laid_out(json: &'a str, layout: &PayloadLayout) -> Option<ActionPayload<'a>> {
        Some(ActionPayload {
            kind: Cow::Borrowed(json.get(layout.kind.clone())?),
            rule: Cow::Borrowed(json.get(layout.rule.clone())?),
            decision: json.get(layout.decision.clone())?,
            event: json.get(layout.event.clone())?,
            entity: json.get(layout.entity.clone())?,
            idempotency_key: match &layout.idempotency_key {
                Some(range) => Some(Cow::Borrowed(json.get(range.clone())?)),
                None => None,
            },
        })
    }

    /// The `id` of the event, for logs, without parsing the whole event.
    pub fn event_id(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        serde_json::from_str::<Id>(self.event).ok().map(|e| e.id)
    }

    /// The event's `traceparent` (CloudEvents distributed tracing), so the
    /// action continues the event's trace.
    pub fn event_traceparent(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Trace {
            traceparent: Option<String>,
        }
        serde_json::from_str::<Trace>(self.event)
            .ok()
            .and_then(|e| e.traceparent)
    }
}

/// Writes an action's payload: `{"kind", "rule", "decision", "event",
/// "entity"}` and, when there is one, `"idempotency_key"`, with where each
/// lies in the text (unless a string needed escapes, which no kind, rule
/// name or send key does). `decision`, `event` and `entity` are JSON that
/// converge wrote (`Decision::to_json`, an event's `json`,
/// `EntityState::to_json`, or `null`), copied as they are, not checked
/// again: checking the event alone took about 2,500 instructions an event.
pub fn payload_json(
    kind: &str,
    rule: &str,
    decision: &str,
    event: &str,
    entity: &str,
    idempotency_key: Option<&str>,
) -> PayloadJson {
    let mut json = String::with_capacity(
        96 + kind.len() + rule.len() + decision.len() + event.len() + entity.len(),
    );
    let mut plain = true;
    json.push_str("{\"kind\":");
    let kind = push_string(&mut json, kind, &mut plain);
    json.push_str(",\"rule\":");
    let rule = push_string(&mut json, rule, &mut plain);
    json.push_str(",\"decision\":");
    let decision = push_json(&mut json, decision);
    json.push_str(",\"event\":");
    let event = push_json(&mut json, event);
    json.push_str(",\"entity\":");
    let entity = push_json(&mut json, entity);
    let idempotency_key = idempotency_key.map(|key| {
        json.push_str(",\"idempotency_key\":");
        push_string(&mut json, key, &mut plain)
    });
    json.push('}');
    if !plain {
        return PayloadJson::stored(json);
    }
    PayloadJson::written(
        json,
        PayloadLayout {
            kind,
            rule,
            decision,
            event,
            entity,
            idempotency_key,
        },
    )
}

/// Appends `text` as a JSON string; returns where it lies between the
/// quotes. `plain` is cleared when it needed escapes (control characters,
/// `"` and `\`): then the text there is not `text`.
fn push_string(json: &mut String, text: &str, plain: &mut bool) -> Range<usize> {
    json.push('"');
    let start = json.len();
    if converge_model::json_text::is_plain(text) {
        json.push_str(text);
    } else {
        *plain = false;
        let quoted = serde_json::to_string(text).expect("a string serializes");
        json.push_str(&quoted[1..quoted.len() - 1]);
    }
    let end = json.len();
    json.push('"');
    start..end
}

fn push_json(json: &mut String, raw: &str) -> Range<usize> {
    let start = json.len();
    json.push_str(raw);
    start..json.len()
}

/// The entity's state as actions carry it: serialized when the first
/// route that carries it acts, once per event, and not at all when no
/// route does.
pub struct EntityJson<'a> {
    state: Option<&'a EntityState>,
    json: OnceCell<String>,
}

impl<'a> EntityJson<'a> {
    pub fn new(state: Option<&'a EntityState>) -> EntityJson<'a> {
        EntityJson {
            state,
            json: OnceCell::new(),
        }
    }

    /// The state as JSON (`null` for an event about no entity).
    fn get(&self) -> &str {
        self.json.get_or_init(|| {
            self.state
                .map_or_else(|| "null".into(), EntityState::to_json)
        })
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
/// decision, `event` (the event's JSON, as converge wrote it) and, when the
/// route carries it, `entity`; `key` names the send when the decision
/// performs one (`send_seq`, for [`send_key`]).
pub fn actions(
    routes: &[Route],
    decision: &Decision,
    event: &str,
    entity: &EntityJson<'_>,
    send: Option<(i64, &str)>,
) -> Vec<NewAction> {
    let mut matching = routes.iter().filter(|r| r.matches(decision)).peekable();
    if matching.peek().is_none() {
        return Vec::new();
    }
    let decision_json = decision.to_json();
    matching
        .map(|route| {
            let key = send.map(|(seq, channel)| send_key(seq, channel, &route.name));
            let entity = if route.carry_entity {
                entity.get()
            } else {
                "null"
            };
            let payload = payload_json(
                decision.kind.name(),
                &decision.rule,
                &decision_json,
                event,
                entity,
                key.as_deref(),
            );
            NewAction {
                route: route.name.clone(),
                plugin: route.plugin.clone(),
                payload,
                payload_key: key,
            }
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

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    #[test]
    fn a_payload_written_here_is_read_by_its_layout_as_parsing_reads_it() {
        let decision = raw(r#"{"kind":"notify","to":"gate.open","message":"é \"q\" \u00e9"}"#);
        let event = raw(r#"{"id": "e1", "data": {"a": [1, 2.5, null], "b": "}"}}"#);
        for (entity, key) in [
            ("null", None),
            (
                r#"{"kind":"campaign","fields":{}}"#,
                Some("converge-send-7-00ff"),
            ),
        ] {
            let entity = raw(entity);
            let payload = payload_json(
                "notify",
                "gate",
                decision.get(),
                event.get(),
                entity.get(),
                key,
            );
            assert!(payload.layout().is_some());
            let read = ActionPayload::read(&payload).unwrap();
            assert_eq!(
                read,
                ActionPayload {
                    kind: "notify".into(),
                    rule: "gate".into(),
                    decision: decision.get(),
                    event: event.get(),
                    entity: entity.get(),
                    idempotency_key: key.map(Cow::from),
                }
            );
            assert_eq!(read, ActionPayload::parse(payload.as_str()).unwrap());
            // Read back from the store, the same text has no layout and is
            // parsed, to the same payload.
            let stored = PayloadJson::stored(payload.as_str().to_string());
            assert_eq!(stored, payload);
            assert_eq!(ActionPayload::read(&stored).unwrap(), read);
        }
    }

    #[test]
    fn a_layout_that_does_not_fit_its_text_is_not_followed() {
        let payload = payload_json("notify", "gate", "{}", "{}", "null", None);
        let mut layout = payload.layout().unwrap().clone();
        layout.decision = layout.decision.start..10_000;
        let bogus = PayloadJson::written(payload.as_str().to_string(), layout);
        assert_eq!(
            ActionPayload::read(&bogus).unwrap(),
            ActionPayload::parse(payload.as_str()).unwrap()
        );
        // Without a layout, text that is not a payload is an error.
        for broken in [r#"{"kind":"#, r#"{"kind":"notify"}"#, "[]"] {
            assert!(ActionPayload::read(&PayloadJson::stored(broken.into())).is_err());
        }
    }

    /// Strings that need no escapes, and any strings at all.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z0-9_.-]{0,12}",
            "[a-z\"\\\\\u{1}\u{1f}é /]{0,12}",
            any::<String>()
        ]
    }

    proptest::proptest! {
        #[test]
        fn what_is_written_is_read_back_whatever_the_strings(
            kind in text(),
            rule in text(),
            key in proptest::option::of(text()),
            members in proptest::sample::subsequence(
                vec!["null", "{}", r#"{"a":"\"}\\","b":[1,{"c":null}]}"#, r#" [ "x" , -1e3 ] "#, r#""\ud83d\ude00""#],
                3,
            ),
        ) {
            let (decision, event, entity) = (raw(members[0]), raw(members[1]), raw(members[2]));
            let payload = payload_json(
                &kind,
                &rule,
                decision.get(),
                event.get(),
                entity.get(),
                key.as_deref(),
            );
            let written = ActionPayload {
                kind: kind.as_str().into(),
                rule: rule.as_str().into(),
                decision: decision.get(),
                event: event.get(),
                entity: entity.get(),
                idempotency_key: key.as_deref().map(Cow::from),
            };
            proptest::prop_assert_eq!(&ActionPayload::read(&payload).unwrap(), &written);
            proptest::prop_assert_eq!(&ActionPayload::parse(payload.as_str()).unwrap(), &written);
            // The text is the JSON serde writes for the same members.
            let expected = serde_json::json!({
                "kind": kind, "rule": rule,
                "decision": serde_json::from_str::<serde_json::Value>(decision.get()).unwrap(),
                "event": serde_json::from_str::<serde_json::Value>(event.get()).unwrap(),
                "entity": serde_json::from_str::<serde_json::Value>(entity.get()).unwrap(),
            });
            let mut expected = expected.as_object().unwrap().clone();
            if let Some(key) = &key {
                expected.insert("idempotency_key".into(), key.as_str().into());
            }
            proptest::prop_assert_eq!(
                serde_json::from_str::<serde_json::Value>(payload.as_str()).unwrap(),
                serde_json::Value::Object(expected)
            );
            // Laid out unless a string needed escapes.
            let plain = |s: &str| serde_json::to_string(s).unwrap().len() == s.len() + 2;
            proptest::prop_assert_eq!(
                payload.layout().is_some(),
                plain(&kind) && plain(&rule) && key.as_deref().is_none_or(plain)
            );
        }
    }
}
