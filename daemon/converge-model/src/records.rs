//! What processing asks the store to keep (decisions and their actions,
//! timers, gate changes) and the records of timers and held sends it reads
//! back: shared by the engine, which makes them without I/O, and the store,
//! which writes and reads them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{CatchUp, Decision};

/// A change to a campaign's convergence gate, part of a processed event
/// (the store's `ProcessedEvent`).
#[derive(Debug, Clone, PartialEq)]
pub enum GateChange {
    /// Hold the send this event requested on `channel` (the event's `seq` is
    /// the held send's `event_seq`). Holding the same event's channel twice
    /// is a no-op.
    Hold {
        campaign: String,
        channel: String,
        rule: String,
        reason: String,
    },
    /// Release every send of `campaign` held on `channel`; `by` says who
    /// (`rule <name>` or `override by <person>`).
    Release {
        campaign: String,
        channel: String,
        by: String,
    },
    /// A person overrode the gate (of one channel, or all when `None`),
    /// releasing `released` held sends; recorded for the gate's history.
    Override {
        campaign: String,
        channel: Option<String>,
        by: String,
        reason: String,
        released: usize,
    },
}

/// A durable timer to create: at `due_at_ms` it journals an event of
/// `event_type` about `entity`, unless it is an `expect` cancelled first.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTimer {
    /// The entity key (`kind/id`): the fired event's subject, and the
    /// subject of the event whose processing creates the timer (a rule
    /// schedules for the entity its event is about). The SQLite store
    /// lists an entity's timers through the events about it, so it
    /// relies on this.
    pub entity: String,
    pub kind: TimerKind,
    /// The type of the event journaled when the timer fires.
    pub event_type: String,
    /// A JSON object, the fired event's data (with `timer` added).
    pub data: Value,
    pub due_at_ms: i64,
    pub catch_up: CatchUp,
    /// The rule and rule version that asked for the timer.
    pub rule: String,
    pub rule_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerKind {
    /// Fires at its due time.
    Schedule,
    /// Cancelled if an event of `expect_type` about the entity is processed
    /// before its due time; fires otherwise.
    Expect { expect_type: String },
}

/// What cancels the `expect` timers of `entity` waiting for `event_type`:
/// an event of that type about it, or a rule's `cancel_expects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedArrival {
    pub entity: String,
    pub event_type: String,
    /// The rule whose `cancel_expects` this is; `None`: the event came.
    pub by_rule: Option<String>,
}

impl ExpectedArrival {
    /// The event of `event_type` came.
    pub fn came(entity: impl Into<String>, event_type: impl Into<String>) -> ExpectedArrival {
        ExpectedArrival {
            entity: entity.into(),
            event_type: event_type.into(),
            by_rule: None,
        }
    }

    /// A rule's `cancel_expects(event_type)`.
    pub fn by_rule(
        entity: impl Into<String>,
        event_type: impl Into<String>,
        rule: &str,
    ) -> ExpectedArrival {
        ExpectedArrival {
            entity: entity.into(),
            event_type: event_type.into(),
            by_rule: Some(rule.to_string()),
        }
    }

    /// Why the timers it cancels were cancelled, as they keep it: made
    /// only for a timer it does cancel (almost every event cancels none).
    pub fn reason(&self) -> String {
        match &self.by_rule {
            None => format!("{} came", self.event_type),
            Some(rule) => format!("rule {rule} cancelled it"),
        }
    }
}

/// A decision and the actions its routes asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    pub decision: Decision,
    /// Made by a rule running in shadow: recorded for the trail, and the
    /// processor gives it no actions, timers, emits or state changes.
    pub shadow: bool,
    pub actions: Vec<NewAction>,
}

/// One action to put in the outbox, `pending` until an outcome finishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    pub route: String,
    pub plugin: String,
    pub payload: PayloadJson,
    /// The idempotency key the payload names, when it is not the action's
    /// own (a released send's). The store keeps it beside the action, which
    /// outlives its payload.
    pub payload_key: Option<String>,
}

/// An action's payload as the outbox keeps it: one JSON object with the
/// decision kind routed, the rule, the decision, the event, the entity and,
/// for a released send, its idempotency key (converge-engine's
/// `payload_json` writes it and `ActionPayload` reads it). A payload written
/// in this process also knows where those members lie in its text
/// (`PayloadLayout`), so the dispatcher takes them as they are instead of
/// parsing the payload again; one read back from the store does not, and
/// is parsed.
#[derive(Debug, Clone)]
pub struct PayloadJson {
    json: String,
    layout: Option<Box<PayloadLayout>>,
}

impl PayloadJson {
    /// A payload as the store kept it.
    pub fn stored(json: String) -> PayloadJson {
        PayloadJson { json, layout: None }
    }

    /// A payload just written, with where its members lie in `json`.
    pub fn written(json: String, layout: PayloadLayout) -> PayloadJson {
        PayloadJson {
            json,
            layout: Some(Box::new(layout)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.json
    }

    pub fn layout(&self) -> Option<&PayloadLayout> {
        self.layout.as_deref()
    }
}

/// Equal when the JSON is: the layout only says what the JSON holds.
impl PartialEq for PayloadJson {
    fn eq(&self, other: &PayloadJson) -> bool {
        self.json == other.json
    }
}

/// Where the members of a payload lie in its JSON, as byte ranges: the
/// text of the kind, rule and idempotency key between their quotes (each
/// written without escapes), and the decision, event and entity JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadLayout {
    pub kind: std::ops::Range<usize>,
    pub rule: std::ops::Range<usize>,
    pub decision: std::ops::Range<usize>,
    pub event: std::ops::Range<usize>,
    pub entity: std::ops::Range<usize>,
    pub idempotency_key: Option<std::ops::Range<usize>>,
}

/// A timer, as `/v1/entities/{kind}/{id}/timers` and the scheduler read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimerRecord {
    pub id: i64,
    pub entity: String,
    pub kind: TimerRecordKind,
    pub event_type: String,
    pub data: Value,
    /// For an `expect`: the event type that cancels it.
    pub expect_type: Option<String>,
    pub due_at_ms: i64,
    pub catch_up: CatchUp,
    pub rule: String,
    pub rule_hash: String,
    pub created_by_seq: i64,
    pub status: TimerStatus,
    /// The journal `seq` of the event it fired.
    pub fired_seq: Option<i64>,
    /// When it fired, was cancelled or was skipped.
    pub closed_at_ms: Option<i64>,
    /// Who cancelled it by hand, and why; `None` for every other way a
    /// timer closes (fired, skipped). An `expect` its event met has no
    /// `cancelled_by` and the reason `<event type> came`; one a rule's
    /// `cancel_expects` ended, `rule <name> cancelled it`.
    pub cancelled_by: Option<String>,
    pub cancel_reason: Option<String>,
}

/// A send held by a convergence gate, as the processor and `GET /v1/gates`
/// read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldSendRecord {
    pub id: i64,
    /// The campaign's entity key (`campaign/<id>`).
    pub campaign: String,
    pub channel: String,
    /// The `send.requested` event that asked to send.
    pub event_seq: i64,
    pub event_id: String,
    /// That event in the CloudEvents JSON format: what a release hands the
    /// channel's action plugin.
    #[serde(skip)]
    pub event_json: String,
    /// The rule that held it and why.
    pub rule: String,
    pub reason: String,
    pub held_at_ms: i64,
    pub status: HeldSendStatus,
    /// The event whose processing released it, when, and who (`rule <name>`
    /// or `override by <person>`).
    pub released_seq: Option<i64>,
    pub released_at_ms: Option<i64>,
    pub released_by: Option<String>,
}

/// A [`TimerRecord`]'s kind, stored (and shown) as `schedule` or `expect`.
/// Unlike [`TimerKind`] it leaves the `expect`'s event type to the record's
/// own `expect_type`, so the record keeps the shape of its row and of its
/// JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerRecordKind {
    Schedule,
    Expect,
}

impl TimerRecordKind {
    /// The stored name, the same as its serde name.
    pub fn name(self) -> &'static str {
        match self {
            TimerRecordKind::Schedule => "schedule",
            TimerRecordKind::Expect => "expect",
        }
    }
}

/// Where a timer stands, stored (and shown) by its serde name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerStatus {
    /// Waiting for its due time (an `expect`, for its event too).
    Pending,
    /// It journaled its event (`fired_seq`).
    Fired,
    /// An `expect` whose event arrived first.
    Cancelled,
    /// It fell due while converge was down and its catch-up policy is `skip`.
    Skipped,
}

impl TimerStatus {
    /// The stored name, the same as its serde name.
    pub fn name(self) -> &'static str {
        match self {
            TimerStatus::Pending => "pending",
            TimerStatus::Fired => "fired",
            TimerStatus::Cancelled => "cancelled",
            TimerStatus::Skipped => "skipped",
        }
    }
}

/// Where a held send stands, stored (and shown) by its serde name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldSendStatus {
    /// The gate still holds it.
    Held,
    /// A rule or an override released it (`released_by`).
    Released,
}

impl HeldSendStatus {
    /// The stored name, the same as its serde name.
    pub fn name(self) -> &'static str {
        match self {
            HeldSendStatus::Held => "held",
            HeldSendStatus::Released => "released",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::*;

    /// Each value's name is its serde name, and reads back as itself.
    fn names_are_serde_names<T>(all: &[T], name: fn(T) -> &'static str)
    where
        T: Copy + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned,
    {
        for &value in all {
            assert_eq!(
                serde_json::to_value(value).unwrap(),
                Value::String(name(value).into())
            );
            let back: T = serde_json::from_value(Value::String(name(value).into())).unwrap();
            assert_eq!(back, value);
        }
    }

    #[test]
    fn record_states_are_stored_by_their_serde_names() {
        names_are_serde_names(
            &[TimerRecordKind::Schedule, TimerRecordKind::Expect],
            TimerRecordKind::name,
        );
        names_are_serde_names(
            &[
                TimerStatus::Pending,
                TimerStatus::Fired,
                TimerStatus::Cancelled,
                TimerStatus::Skipped,
            ],
            TimerStatus::name,
        );
        names_are_serde_names(
            &[HeldSendStatus::Held, HeldSendStatus::Released],
            HeldSendStatus::name,
        );
    }
}
