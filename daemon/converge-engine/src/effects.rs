//! How a decision turns into events and timers, and the event a fired timer
//! journals: pure functions of the decision, the event and the engine's time.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use converge_model::records::{NewTimer, TimerRecord};
use converge_model::{Decision, DecisionKind, Event, OwnEvent, sources};
use serde_json::{Value, json};

/// The CloudEvents extension counting how many emits deep an event is.
pub const DEPTH_EXTENSION: &str = "convergedepth";

/// How many emits deep an event is: its `convergedepth` extension, 0 for
/// events from outside.
pub fn emit_depth(event: &Event) -> u32 {
    if event.source != sources::RULES {
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

/// The id of the `n`th event (from 1) emitted while processing the event
/// at journal `seq`.
pub fn emitted_id(seq: i64, n: usize) -> String {
    format!("emit-{seq}-{n}")
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
    Event::own(OwnEvent {
        id,
        source: sources::RULES,
        ty: event_type,
        subject: cause.subject.as_deref(),
        time: now,
        data: data_object(data),
        extensions: &[(DEPTH_EXTENSION, i64::from(depth))],
    })
    .map_err(|e| format!("emit of `{event_type}`: {e}"))
}

/// The durable timer a `schedule` or `expect` decision asks for, due at
/// `now` plus its delay; `None` for the other decisions. The `Err` is why
/// the decision cannot take effect: it is recorded as a failure of its rule.
pub fn new_timer(
    event: &Event,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<Option<NewTimer>, String> {
    use converge_model::records::TimerKind;
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
        entity: entity.text(),
        kind,
        event_type: event_type.clone(),
        data,
        due_at_ms,
        catch_up,
        rule: decision.rule.clone(),
        rule_hash: decision.rule_hash.clone(),
    }))
}

/// The event a fired timer journals (`timer-<id>` from `converge/timers`):
/// its data, with the timer itself under `timer`, at its due time; `late`
/// when it fires after converge was down past that time.
pub fn timer_event(timer: &TimerRecord, late: bool) -> Result<Event, String> {
    let due = DateTime::<Utc>::from_timestamp_millis(timer.due_at_ms)
        .ok_or_else(|| format!("due time {} ms is out of range", timer.due_at_ms))?;
    let mut data = data_object(&timer.data);
    if let Value::Object(members) = &mut data {
        members.insert(
            "timer".into(),
            json!({
                "id": timer.id,
                "rule": timer.rule,
                "scheduled_for": due.to_rfc3339_opts(SecondsFormat::Millis, true),
                "late": late,
            }),
        );
    }
    Event::own(OwnEvent {
        id: format!("timer-{}", timer.id),
        source: sources::TIMERS,
        ty: &timer.event_type,
        subject: Some(&timer.entity),
        time: due,
        data,
        extensions: &[],
    })
    .map_err(|e| e.to_string())
}

/// A fired timer's data without its `timer` member (its id, rule and
/// lateness): what the rule that scheduled it gave. Other events' data as is.
pub fn data_without_timer(event: &Event) -> Cow<'_, Value> {
    match &event.data {
        Value::Object(members)
            if event.source == sources::TIMERS && members.contains_key("timer") =>
        {
            let mut members = members.clone();
            members.remove("timer");
            Cow::Owned(Value::Object(members))
        }
        data => Cow::Borrowed(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Event {
        Event::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn emits_go_one_level_deeper_until_the_limit() {
        let now = "2026-11-23T10:00:00Z".parse().unwrap();
        let cause = event(
            r#"{"specversion":"1.0","id":"e-1","source":"/jira","type":"t","subject":"task/T-1"}"#,
        );
        let first = emitted_event(
            &cause,
            emitted_id(1, 1),
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
            emitted_event(&first, emitted_id(2, 1), "task.checked", &json!(5), now, 2).unwrap();
        assert_eq!(
            (emit_depth(&second), &second.data),
            (2, &json!({"value": 5}))
        );
        let refused = emitted_event(
            &second,
            emitted_id(3, 1),
            "task.checked",
            &Value::Null,
            now,
            2,
        );
        assert!(refused.unwrap_err().contains("3 emits deep"));
    }
}
