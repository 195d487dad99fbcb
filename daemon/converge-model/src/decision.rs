//! Decisions: what a rule concluded, as data. Rules never act; the daemon
//! records each decision and routes it to actions by its kind.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One decision, with the rule that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub rule: String,
    /// Hash of the rule's source, so a decision names the exact rule version.
    pub rule_hash: String,
    #[serde(flatten)]
    pub kind: DecisionKind,
}

/// The closed set of decisions rules can make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecisionKind {
    /// Raise the entity to someone (an owner role or a person) with a reason.
    Escalate {
        to: String,
        reason: String,
        level: u32,
    },
    /// Tell someone something.
    Notify { to: String, message: String },
    /// Change the entity's state: `stage`, `owner` or a field (`null` removes it).
    SetField { field: String, value: Value },
}

impl DecisionKind {
    /// The name routes use: `escalate`, `notify`, `set_field`.
    pub fn name(&self) -> &'static str {
        match self {
            DecisionKind::Escalate { .. } => "escalate",
            DecisionKind::Notify { .. } => "notify",
            DecisionKind::SetField { .. } => "set_field",
        }
    }

    pub const NAMES: &'static [&'static str] = &["escalate", "notify", "set_field"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_flat_with_its_kind() {
        let d = Decision {
            rule: "stalled".into(),
            rule_hash: "ab12".into(),
            kind: DecisionKind::Escalate {
                to: "review_owner".into(),
                reason: "no progress for 48h".into(),
                level: 2,
            },
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            json!({"rule": "stalled", "rule_hash": "ab12", "kind": "escalate",
                   "to": "review_owner", "reason": "no progress for 48h", "level": 2})
        );
        assert_eq!(serde_json::from_value::<Decision>(v).unwrap(), d);
    }

    #[test]
    fn names_list_every_kind_as_serialized() {
        let kinds = [
            DecisionKind::Escalate {
                to: "a".into(),
                reason: "b".into(),
                level: 1,
            },
            DecisionKind::Notify {
                to: "a".into(),
                message: "b".into(),
            },
            DecisionKind::SetField {
                field: "a".into(),
                value: json!(1),
            },
        ];
        let names: Vec<&str> = kinds.iter().map(DecisionKind::name).collect();
        assert_eq!(names, DecisionKind::NAMES);
        for kind in &kinds {
            assert_eq!(serde_json::to_value(kind).unwrap()["kind"], kind.name());
        }
    }
}
