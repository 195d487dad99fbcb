//! How a decision turns into events, shared by everything that runs rules
//! the way the daemon does: the processor, `converge replay` and
//! `converge rules test`. One place, so the three cannot drift apart.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use converge_model::{Decision, DecisionKind, Event};
use converge_store::{NewTimer, TimerKind};
use serde_json::{Value, json};

use crate::gates::ADMIN_SOURCE;
use crate::timers::TIMER_SOURCE;

/// The source of events journaled by `emit` decisions.
pub const EMIT_SOURCE: &str = "converge/rules";
/// The CloudEvents extension counting how many emits deep an event is.
pub const DEPTH_EXTENSION: &str = "convergedepth";

/// How many emits deep an event is: its `convergedepth` extension, 0 for
/// events from outside.
pub fn emit_depth(event: &Event) -> u32 {
    if event.source != EMIT_SOURCE {
        return 0;
    }
    serde_json::from_str::<Value>(&event.json)
        .ok()
        .and_then(|json| match json.get(DEPTH_EXTENSION)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .map_or(0, |d| u32::try_from(d).unwrap_or(u32::MAX))
}

/// A decision's data as an event's data object: `null` is `{}`, and any
/// other non-object is kept under `value`.
pub fn data_object(data: &Value) -> Value {
    match data {
        Value::Object(_) => data.clone(),
        Value::Null => json!({}),
        other => json!({ "value": other }),
    }
}

/// What of an event's data merges into its entity's state: everything, but
/// for a fired timer's own `timer` member (its id, rule and lateness), which
/// rules read from the event and which is not a fact about the entity, and
/// for the events of converge's admin API (a gate override's who and why
/// are the gate's history, not fields of the campaign).
pub fn entity_data(event: &Event) -> Cow<'_, Value> {
    if event.source == ADMIN_SOURCE {
        return Cow::Owned(json!({}));
    }
    match &event.data {
        Value::Object(members) if event.source == TIMER_SOURCE && members.contains_key("timer") => {
            let mut members = members.clone();
            members.remove("timer");
            Cow::Owned(Value::Object(members))
        }
        data => Cow::Borrowed(data),
    }
}

/// The event an `emit` decision journals: about the same entity as the
/// event that caused it, one emit deeper. Refused past `max_depth`, which
/// stops rules that emit in a loop.
pub fn emitted_event(
    cause: &Event,
    id: String,
    event_type: &str,
    data: &Value,
    now: DateTime<Utc>,
    max_depth: u32,
) -> Result<Event, String> {
    let depth = emit_depth(cause) + 1;
    if depth > max_depth {
        return Err(format!(
            "emit of `{event_type}` refused: it would be {depth} emits deep, past rules.max_emit_depth ({max_depth}); is a rule emitting in a loop?"
        ));
    }
    let mut json = json!({
        "specversion": "1.0",
        "id": id,
        "source": EMIT_SOURCE,
        "type": event_type,
        "time": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": data_object(data),
        DEPTH_EXTENSION: depth,
    });
    if let Some(subject) = &cause.subject {
        json["subject"] = Value::String(subject.clone());
    }
    Event::from_value(json).map_err(|e| format!("emit of `{event_type}`: {e}"))
}

/// The durable timer a `schedule` or `expect` decision asks for, due at
/// `now` plus its delay; `None` for the other decisions. The `Err` is why
/// the decision cannot take effect: it is recorded as a failure of its rule.
pub fn new_timer(
    event: &Event,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<Option<NewTimer>, String> {
    let (kind, event_type, data, after_ms, catch_up) = match &decision.kind {
        DecisionKind::Schedule {
            after_ms,
            event_type,
            data,
            catch_up,
        } => (
            TimerKind::Schedule,
            event_type,
            data_object(data),
            *after_ms,
            *catch_up,
        ),
        DecisionKind::Expect {
            event_type,
            within_ms,
            otherwise,
            catch_up,
        } => (
            TimerKind::Expect {
                expect_type: event_type.clone(),
            },
            otherwise,
            json!({}),
            *within_ms,
            *catch_up,
        ),
        _ => return Ok(None),
    };
    let name = decision.kind.name();
    let entity = event.entity_key().ok_or_else(|| {
        format!("`{name}` needs an event about an entity (a subject like `task/T-1`)")
    })?;
    let due_at_ms = i64::try_from(after_ms)
        .ok()
        .and_then(|after| now.timestamp_millis().checked_add(after))
        .ok_or_else(|| format!("`{name}`: {after_ms} ms is too far in the future"))?;
    Ok(Some(NewTimer {
        entity: entity.to_string(),
        kind,
        event_type: event_type.clone(),
        data,
        due_at_ms,
        catch_up,
        rule: decision.rule.clone(),
        rule_hash: decision.rule_hash.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Event {
        Event::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn a_fired_timers_metadata_stays_out_of_the_entity() {
        let timer = event(
            r#"{"specversion":"1.0","id":"timer-1","source":"converge/timers","type":"task.remind",
                "subject":"task/T-1","data":{"step":2,"timer":{"id":1,"late":false}}}"#,
        );
        assert_eq!(*entity_data(&timer), json!({"step": 2}));
        let other = event(
            r#"{"specversion":"1.0","id":"e-1","source":"/jira","type":"t","data":{"timer":3}}"#,
        );
        assert_eq!(*entity_data(&other), json!({"timer": 3}));
        let over = event(
            r#"{"specversion":"1.0","id":"o-1","source":"converge/admin","type":"gate.override",
                "subject":"campaign/c","data":{"by":"mia","reason":"ok"}}"#,
        );
        assert_eq!(*entity_data(&over), json!({}));
    }

    #[test]
    fn emits_go_one_level_deeper_until_the_limit() {
        let now = "2026-11-23T10:00:00Z".parse().unwrap();
        let cause = event(
            r#"{"specversion":"1.0","id":"e-1","source":"/jira","type":"t","subject":"task/T-1"}"#,
        );
        let first = emitted_event(
            &cause,
            "emit-1-1".into(),
            "task.checked",
            &Value::Null,
            now,
            2,
        )
        .unwrap();
        assert_eq!(
            (first.subject.as_deref(), emit_depth(&first)),
            (Some("task/T-1"), 1)
        );
        assert_eq!(first.data, json!({}));
        let second =
            emitted_event(&first, "emit-2-1".into(), "task.checked", &json!(5), now, 2).unwrap();
        assert_eq!(
            (emit_depth(&second), &second.data),
            (2, &json!({"value": 5}))
        );
        let refused = emitted_event(
            &second,
            "emit-3-1".into(),
            "task.checked",
            &Value::Null,
            now,
            2,
        );
        assert!(refused.unwrap_err().contains("3 emits deep"));
    }
}
