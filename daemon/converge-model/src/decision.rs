//! Decisions: what a rule concluded, as data. Rules never act; the daemon
//! records each decision and routes it to actions by its kind.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One decision, with the rule that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub rule: String,
    /// Hash of the rule's source, so a decision names the exact rule version.
    pub rule_hash: String,
    #[serde(flatten)]
    pub kind: DecisionKind,
    /// Why the decision was made: where in the rule, from which inputs, on
    /// which condition terms. The rules crate fills it for every decision;
    /// `None` in decisions recorded before traces existed, and in the
    /// hand-made decisions of tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<DecisionTrace>,
}

/// The decision trace: what `converge explain` shows under each decision.
///
/// As JSON: `{"at": "rules/gate.rhai:42:5", "inputs": {"stage": "review",
/// "owner": "ana", "updated_at": "2026-11-23T09:59:00Z", "events": 4},
/// "terms": {"approved": true, "consistency": 0.72}}`; `inputs` is absent
/// when the event names no entity, `terms` when the rule gave none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionTrace {
    /// The call of the decision function in the rule's source.
    pub at: DecisionSite,
    /// The entity as the rule saw it (before its own state changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<DecisionInputs>,
    /// The condition terms the rule gave with `because(#{ .. })`, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub terms: BTreeMap<String, Value>,
}

/// A position in a rule file, written `file:line:column` (1-based), the
/// form compile and run-time errors use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionSite {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for DecisionSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

impl std::str::FromStr for DecisionSite {
    type Err = String;

    /// Splits from the right, so a file name may itself contain `:`.
    fn from_str(text: &str) -> Result<DecisionSite, String> {
        let mut parts = text.rsplitn(3, ':');
        let (Some(column), Some(line), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("`{text}` is not file:line:column"));
        };
        let number = |part: &str| {
            part.parse::<u32>()
                .map_err(|_| format!("`{text}` is not file:line:column"))
        };
        Ok(DecisionSite {
            file: file.to_string(),
            line: number(line)?,
            column: number(column)?,
        })
    }
}

impl Serialize for DecisionSite {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DecisionSite {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DecisionSite, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What the rule knew of the entity when it decided: enough to tell, months
/// later, which state a decision was made on, without copying the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInputs {
    pub stage: Option<String>,
    pub owner: Option<String>,
    /// The entity's last change, as the rule saw it.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    /// Events applied to the entity so far, this one included: its version.
    pub events: u64,
}

/// The closed set of decisions rules can make.
///
/// Decisions that change the entity (`set_field`, `set_stage`,
/// `assign_owner`, `pause_channel`, `resume_channel`) are applied to its
/// state as soon as the rule that made them succeeds, so later rules see
/// them. `schedule` and `expect` become durable timers, and `cancel_expects`
/// ends pending `expect`s. Every decision can
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
    /// End the entity's pending expects of `event_type`, as its arrival
    /// would, without journaling an event: before the timers this event's
    /// decisions create, so an `expect` after it starts a new countdown.
    CancelExpects { event_type: String },
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
            DecisionKind::CancelExpects { .. } => "cancel_expects",
        }
    }

    /// The kinds whose decisions do nothing but start the actions their
    /// routes give them: unrouted, they are only recorded. The others change
    /// the entity, journal an event or start a timer inside converge, routed
    /// or not. Names, for what reads rules' source rather than their
    /// decisions (`converge rules check`).
    pub const ROUTED_ONLY: &'static [&'static str] = &["escalate", "notify"];

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
        "cancel_expects",
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
            trace: None,
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
            DecisionKind::CancelExpects {
                event_type: "t".into(),
            },
        ];
        for kind in &kinds {
            let back: DecisionKind =
                serde_json::from_value(serde_json::to_value(kind).unwrap()).unwrap();
            assert_eq!(&back, kind);
        }
        let names: Vec<&str> = kinds.iter().map(DecisionKind::name).collect();
        assert_eq!(names, DecisionKind::NAMES);
        for name in DecisionKind::ROUTED_ONLY {
            assert!(DecisionKind::NAMES.contains(name), "{name}");
        }
        for kind in &kinds {
            assert_eq!(serde_json::to_value(kind).unwrap()["kind"], kind.name());
        }
    }

    #[test]
    fn a_trace_rides_along_and_old_decisions_have_none() {
        let v = json!({"rule": "gate", "rule_hash": "ab12", "kind": "hold_send",
            "channel": "email", "reason": "not approved",
            "trace": {"at": "rules/a:b.rhai:12:5",
                      "inputs": {"stage": "review", "owner": null,
                                 "updated_at": "2026-11-23T09:59:00Z", "events": 3},
                      "terms": {"approved": false, "consistency": 0.72}}});
        let d: Decision = serde_json::from_value(v.clone()).unwrap();
        let trace = d.trace.as_ref().unwrap();
        assert_eq!(
            trace.at,
            DecisionSite {
                file: "rules/a:b.rhai".into(),
                line: 12,
                column: 5
            }
        );
        assert_eq!(trace.terms["approved"], json!(false));
        assert_eq!(serde_json::to_value(&d).unwrap(), v);

        let old: Decision = serde_json::from_value(json!({"rule": "r", "rule_hash": "h",
            "kind": "notify", "to": "a", "message": "m"}))
        .unwrap();
        assert_eq!(old.trace, None);
        assert!("rules/x.rhai:3".parse::<DecisionSite>().is_err());
    }
}
