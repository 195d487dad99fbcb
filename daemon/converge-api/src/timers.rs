//! Waiting timers: `GET /v1/timers` lists them, soonest first; a person
//! cancels them with `POST /v1/timers/cancel`, those of one rule (of one of
//! its versions, about one entity), with who and why.

use serde::{Deserialize, Serialize};

use crate::Time;
use crate::dlq::DeadLetterRequest;

/// The answer of `GET /v1/timers`: pending timers, soonest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTimers {
    pub timers: Vec<PendingTimer>,
    /// More timers match than are listed (ask with a larger `limit`, or
    /// narrow by `rule` or `within`).
    pub more: bool,
}

/// One pending timer: what fires, about what, from which rule, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTimer {
    pub id: i64,
    /// The entity its event is about (`task/JIRA-7`).
    pub entity: String,
    /// `schedule`, or `expect` (a deadline an event of `expect_type` meets).
    pub kind: String,
    /// The type of the event it journals when it fires.
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_type: Option<String>,
    /// The rule that made it, and that rule's version (its hash).
    pub rule: String,
    pub version: String,
    pub due_at: Time,
}

/// The body of `POST /v1/timers/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelTimers {
    /// The rule whose timers to cancel, by name.
    pub rule: String,
    /// One version of it (its hash, as `converge status` shows it); all of
    /// its versions when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// One entity's timers (`task/JIRA-7`); every entity's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub by: String,
    pub reason: String,
}

impl CancelTimers {
    /// Checks what a person sent, trimmed; the error says what is wrong.
    pub fn validate(self) -> Result<CancelTimers, String> {
        let who = DeadLetterRequest {
            by: self.by,
            reason: self.reason,
        }
        .validate()?;
        let rule = self.rule.trim().to_string();
        if rule.is_empty() {
            return Err("`rule` names the rule whose timers to cancel".into());
        }
        let present = |value: Option<String>| {
            value
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Ok(CancelTimers {
            rule,
            version: present(self.version),
            entity: present(self.entity),
            by: who.by,
            reason: who.reason,
        })
    }
}

/// The answer of `POST /v1/timers/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimersCancelled {
    /// The pending timers it cancelled; none fires.
    pub cancelled: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::assert_wire;

    #[test]
    fn a_cancellation_of_one_rule_versions_timers() {
        assert_wire(
            &CancelTimers {
                rule: "stalled_handoff".into(),
                version: Some("b54c3c0b1825aa80".into()),
                entity: None,
                by: "ana".into(),
                reason: "the ladder changed".into(),
            },
            json!({"rule": "stalled_handoff", "version": "b54c3c0b1825aa80",
                   "by": "ana", "reason": "the ladder changed"}),
        );
        assert_wire(&TimersCancelled { cancelled: 12 }, json!({"cancelled": 12}));
    }

    #[test]
    fn pending_timers_soonest_first() {
        assert_wire(
            &PendingTimers {
                timers: vec![PendingTimer {
                    id: 7,
                    entity: "task/JIRA-7".into(),
                    kind: "expect".into(),
                    event_type: "task.review_due".into(),
                    expect_type: Some("task.reviewed".into()),
                    rule: "review_deadline".into(),
                    version: "b54c3c0b1825aa80".into(),
                    due_at: Time::stored(1_764_320_400_000),
                }],
                more: false,
            },
            json!({"timers": [{"id": 7, "entity": "task/JIRA-7", "kind": "expect",
                   "event_type": "task.review_due", "expect_type": "task.reviewed",
                   "rule": "review_deadline", "version": "b54c3c0b1825aa80",
                   "due_at": "2025-11-28T09:00:00.000Z"}], "more": false}),
        );
    }

    #[test]
    fn a_cancellation_says_what_is_missing() {
        let request = |rule: &str, by: &str| CancelTimers {
            rule: rule.into(),
            version: Some("  ".into()),
            entity: Some(" task/T-1 ".into()),
            by: by.into(),
            reason: "why".into(),
        };
        let valid = request(" stalled ", "ana").validate().unwrap();
        assert_eq!(
            (valid.rule.as_str(), valid.version, valid.entity.as_deref()),
            ("stalled", None, Some("task/T-1"))
        );
        assert!(
            request("", "ana")
                .validate()
                .unwrap_err()
                .contains("`rule`")
        );
        assert!(
            request("stalled", " ")
                .validate()
                .unwrap_err()
                .contains("`by`")
        );
        let unknown = serde_json::from_value::<CancelTimers>(json!({
            "rule": "r", "by": "b", "reason": "r", "entities": ["x"]}));
        assert!(unknown.unwrap_err().to_string().contains("entities"));
    }
}
