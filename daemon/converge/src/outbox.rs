//! What the outbox keeps for each action: the decision, the event and the
//! entity as JSON, exactly as the plugin receives them. The processor writes
//! it and the dispatcher reads it back; the JSON members are carried as raw
//! text so they are never parsed into trees and rebuilt on the way.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Serialize, Deserialize)]
pub struct ActionPayload<'a> {
    /// The decision kind routed: `escalate`, `notify`, ...
    pub kind: &'a str,
    pub rule: &'a str,
    #[serde(borrow)]
    pub decision: &'a RawValue,
    /// The CloudEvent that caused the decision.
    #[serde(borrow)]
    pub event: &'a RawValue,
    /// The entity's state after the event and the rules, or `null`.
    #[serde(borrow)]
    pub entity: &'a RawValue,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_without_touching_the_members() {
        let decision = RawValue::from_string(r#"{"kind":"notify","to":"ana"}"#.into()).unwrap();
        let event = RawValue::from_string(r#"{"id":"e-1","type":"t"}"#.into()).unwrap();
        let entity = RawValue::from_string("null".into()).unwrap();
        let payload = ActionPayload {
            kind: "notify",
            rule: "r",
            decision: &decision,
            event: &event,
            entity: &entity,
        };
        let json = serde_json::to_string(&payload).unwrap();
        let back = ActionPayload::parse(&json).unwrap();
        assert_eq!((back.kind, back.rule), ("notify", "r"));
        assert_eq!(back.decision.get(), decision.get());
        assert_eq!(back.entity.get(), "null");
        assert_eq!(back.event_id().as_deref(), Some("e-1"));
    }
}
