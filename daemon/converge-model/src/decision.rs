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
///
/// Decisions that change the entity (`set_field`, `set_stage`,
/// `assign_owner`, `pause_channel`, `resume_channel`) are applied to its
/// state as soon as the rule that made them succeeds, so later rules see
/// them. `schedule` and `expect` become durable timers. Every decision can
/// also be routed to actions by its kind.
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
    /// Move the entity to a stage.
    SetStage { stage: String },
    /// Make someone the owner of the entity.
    AssignOwner { owner: String },
    /// Stop a campaign channel's sends; sets `channels.<channel>.paused`.
    PauseChannel { channel: String, reason: String },
    /// Let a paused channel send again.
    ResumeChannel { channel: String, reason: String },
    /// Keep a channel's send from going out until it is released.
    HoldSend { channel: String, reason: String },
    /// Let a held send go out.
    ReleaseSend { channel: String, reason: String },
    /// Journal a new event about the same entity, processed after this one.
    Emit { event_type: String, data: Value },
    /// After `after_ms`, journal an event of `event_type` about the same entity.
    Schedule {
        after_ms: u64,
        event_type: String,
        data: Value,
        catch_up: CatchUp,
    },
    /// Unless an event of `event_type` about the same entity arrives within
    /// `within_ms`, journal an event of `otherwise` about it.
    Expect {
        event_type: String,
        within_ms: u64,
        otherwise: String,
        catch_up: CatchUp,
    },
}

/// What a timer that fell due while the daemon was down does at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire as soon as possible, marked `late`.
    #[default]
    FireLate,
    /// Do not fire; the timer is recorded as skipped.
    Skip,
}

impl DecisionKind {
    /// The name routes use: `escalate`, `notify`, `set_field`, ...
    pub fn name(&self) -> &'static str {
        match self {
            DecisionKind::Escalate { .. } => "escalate",
            DecisionKind::Notify { .. } => "notify",
            DecisionKind::SetField { .. } => "set_field",
            DecisionKind::SetStage { .. } => "set_stage",
            DecisionKind::AssignOwner { .. } => "assign_owner",
            DecisionKind::PauseChannel { .. } => "pause_channel",
            DecisionKind::ResumeChannel { .. } => "resume_channel",
            DecisionKind::HoldSend { .. } => "hold_send",
            DecisionKind::ReleaseSend { .. } => "release_send",
            DecisionKind::Emit { .. } => "emit",
            DecisionKind::Schedule { .. } => "schedule",
            DecisionKind::Expect { .. } => "expect",
        }
    }

    pub const NAMES: &'static [&'static str] = &[
        "escalate",
        "notify",
        "set_field",
        "set_stage",
        "assign_owner",
        "pause_channel",
        "resume_channel",
        "hold_send",
        "release_send",
        "emit",
        "schedule",
        "expect",
    ];
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
            DecisionKind::SetStage {
                stage: "review".into(),
            },
            DecisionKind::AssignOwner {
                owner: "ana".into(),
            },
            DecisionKind::PauseChannel {
                channel: "email".into(),
                reason: "r".into(),
            },
            DecisionKind::ResumeChannel {
                channel: "email".into(),
                reason: "r".into(),
            },
            DecisionKind::HoldSend {
                channel: "email".into(),
                reason: "r".into(),
            },
            DecisionKind::ReleaseSend {
                channel: "email".into(),
                reason: "r".into(),
            },
            DecisionKind::Emit {
                event_type: "t".into(),
                data: json!({}),
            },
            DecisionKind::Schedule {
                after_ms: 1,
                event_type: "t".into(),
                data: json!(null),
                catch_up: CatchUp::FireLate,
            },
            DecisionKind::Expect {
                event_type: "t".into(),
                within_ms: 1,
                otherwise: "u".into(),
                catch_up: CatchUp::Skip,
            },
        ];
        for kind in &kinds {
            let back: DecisionKind =
                serde_json::from_value(serde_json::to_value(kind).unwrap()).unwrap();
            assert_eq!(&back, kind);
        }
        let names: Vec<&str> = kinds.iter().map(DecisionKind::name).collect();
        assert_eq!(names, DecisionKind::NAMES);
        for kind in &kinds {
            assert_eq!(serde_json::to_value(kind).unwrap()["kind"], kind.name());
        }
    }
}
