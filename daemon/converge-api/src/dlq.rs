//! Dead letters: `GET /v1/dlq` (the list), `GET /v1/dlq/{id}` (one action,
//! dead letter or not, with its history), and a person's retry or drop,
//! `POST /v1/dlq/{id}/retry|drop`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Time;

/// The answer of `GET /v1/dlq?after=<id>&limit=<n>`: dead letters oldest
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetters {
    pub dead_letters: Vec<ActionView>,
    /// How many dead letters there are in all.
    pub count: i64,
    /// The `after` of the next page; `null` at the end.
    pub next_after: Option<i64>,
}

/// The answer of `GET /v1/dlq/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionShown {
    pub action: ActionView,
}

/// An action with the event and decision it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionView {
    pub id: i64,
    /// `pending`, `done`, `dead_letter` or `dropped`.
    pub status: String,
    pub route: String,
    pub plugin: String,
    /// Attempts since it was decided or last retried.
    pub attempts: u32,
    /// The last outcome's detail.
    pub detail: Option<String>,
    /// The id its plugin reported for what it did (a created issue, a
    /// sent message), if any.
    pub external_id: Option<String>,
    /// When a pending action is tried again.
    pub next_attempt_at: Option<Time>,
    /// When it became `done`, `dead_letter` or `dropped`.
    pub finished_at: Option<Time>,
    /// The key its plugin sends, the same on every attempt and retry.
    pub idempotency_key: String,
    pub event_seq: i64,
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub decision_id: i64,
    pub decision_kind: String,
    pub rule: String,
    /// Failed attempts, dead-lettering, retries and drops, oldest first.
    pub history: Vec<ActionHistory>,
}

/// One step of an action's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionHistory {
    pub at: Time,
    /// `attempt_failed`, `dead_lettered`, `retried` or `dropped`.
    pub kind: String,
    /// The failed attempt's number, or the attempts made before a retry
    /// or drop.
    pub attempts: u32,
    /// The plugin's error, for a failed attempt or the dead-lettering;
    /// absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Who retried or dropped it, and why; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Longest `by` and `reason` a retry or drop may carry, in characters.
const MAX_BY: usize = 200;
const MAX_REASON: usize = 2000;

/// The body of `POST /v1/dlq/{id}/retry` and `.../drop`: who decides, and
/// why; kept in the action's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRequest {
    pub by: String,
    pub reason: String,
}

impl DeadLetterRequest {
    /// Checks what a person sent, trimmed; the error says what is wrong.
    pub fn validate(self) -> Result<DeadLetterRequest, String> {
        let by = self.by.trim().to_string();
        let reason = self.reason.trim().to_string();
        if by.is_empty() || by.chars().count() > MAX_BY {
            return Err(format!("`by` names who decides: 1 to {MAX_BY} characters"));
        }
        if reason.is_empty() || reason.chars().count() > MAX_REASON {
            return Err(format!("`reason` says why: 1 to {MAX_REASON} characters"));
        }
        Ok(DeadLetterRequest { by, reason })
    }
}

/// The answer of a retry (202) or a drop (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterChanged {
    pub id: i64,
    pub status: ChangedStatus,
    /// The key the action runs with, as before.
    pub idempotency_key: String,
}

/// What a dead letter became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedStatus {
    /// Retried: queued to run with a fresh attempt budget.
    Pending,
    /// Dropped: it never runs again.
    Dropped,
}

impl ChangedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangedStatus::Pending => "pending",
            ChangedStatus::Dropped => "dropped",
        }
    }
}

impl fmt::Display for ChangedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{assert_wire, time};

    fn dead_letter() -> ActionView {
        ActionView {
            id: 4,
            status: "dead_letter".into(),
            route: "notify->webhook-out".into(),
            plugin: "webhook-out".into(),
            attempts: 1,
            detail: Some("unauthorized: HTTP 401".into()),
            external_id: None,
            next_attempt_at: None,
            finished_at: Some(time("2026-11-20T09:00:01.500Z")),
            idempotency_key: "converge-5f1c0a9e2b7d4e31-action-4".into(),
            event_seq: 2,
            event_id: "p-1".into(),
            event_source: "test".into(),
            event_type: "task.updated".into(),
            subject: Some("task/T-1".into()),
            decision_id: 3,
            decision_kind: "notify".into(),
            rule: "notify_all".into(),
            history: vec![
                ActionHistory {
                    at: time("2026-11-20T09:00:01.500Z"),
                    kind: "dead_lettered".into(),
                    attempts: 1,
                    detail: Some("unauthorized: HTTP 401".into()),
                    by: None,
                    reason: None,
                },
                ActionHistory {
                    at: time("2026-11-20T10:00:00.000Z"),
                    kind: "retried".into(),
                    attempts: 1,
                    detail: None,
                    by: Some("mia".into()),
                    reason: Some("token rotated".into()),
                },
            ],
        }
    }

    fn dead_letter_wire() -> serde_json::Value {
        json!({
            "id": 4,
            "status": "dead_letter",
            "route": "notify->webhook-out",
            "plugin": "webhook-out",
            "attempts": 1,
            "detail": "unauthorized: HTTP 401",
            "external_id": null,
            "next_attempt_at": null,
            "finished_at": "2026-11-20T09:00:01.500Z",
            "idempotency_key": "converge-5f1c0a9e2b7d4e31-action-4",
            "event_seq": 2,
            "event_id": "p-1",
            "event_source": "test",
            "event_type": "task.updated",
            "subject": "task/T-1",
            "decision_id": 3,
            "decision_kind": "notify",
            "rule": "notify_all",
            "history": [
                {"at": "2026-11-20T09:00:01.500Z", "kind": "dead_lettered", "attempts": 1,
                 "detail": "unauthorized: HTTP 401"},
                {"at": "2026-11-20T10:00:00.000Z", "kind": "retried", "attempts": 1,
                 "by": "mia", "reason": "token rotated"},
            ],
        })
    }

    #[test]
    fn a_page_of_dead_letters() {
        assert_wire(
            &DeadLetters {
                dead_letters: vec![dead_letter()],
                count: 1,
                next_after: None,
            },
            json!({"dead_letters": [dead_letter_wire()], "count": 1, "next_after": null}),
        );
        assert_wire(
            &DeadLetters {
                dead_letters: vec![],
                count: 120,
                next_after: Some(100),
            },
            json!({"dead_letters": [], "count": 120, "next_after": 100}),
        );
    }

    #[test]
    fn an_action_shown() {
        assert_wire(
            &ActionShown {
                action: dead_letter(),
            },
            json!({"action": dead_letter_wire()}),
        );
        let done = ActionView {
            status: "done".into(),
            history: vec![],
            ..dead_letter()
        };
        let wire = serde_json::to_value(&done).unwrap();
        assert_eq!(wire["history"], json!([]), "an empty history is listed");
    }

    #[test]
    fn a_retry_or_drop_and_its_answer() {
        assert_wire(
            &DeadLetterRequest {
                by: "mia".into(),
                reason: "token rotated".into(),
            },
            json!({"by": "mia", "reason": "token rotated"}),
        );
        assert!(
            serde_json::from_value::<DeadLetterRequest>(json!({"by": "mia", "why": "x"})).is_err()
        );
        assert_wire(
            &DeadLetterChanged {
                id: 4,
                status: ChangedStatus::Pending,
                idempotency_key: "converge-5f1c0a9e2b7d4e31-action-4".into(),
            },
            json!({"id": 4, "status": "pending", "idempotency_key": "converge-5f1c0a9e2b7d4e31-action-4"}),
        );
        assert_wire(
            &DeadLetterChanged {
                id: 4,
                status: ChangedStatus::Dropped,
                idempotency_key: "converge-5f1c0a9e2b7d4e31-send-3-9a0e4b6c1d2f3a47".into(),
            },
            json!({"id": 4, "status": "dropped", "idempotency_key": "converge-5f1c0a9e2b7d4e31-send-3-9a0e4b6c1d2f3a47"}),
        );
    }

    #[test]
    fn a_retry_or_drop_needs_who_and_why() {
        let no_one = DeadLetterRequest {
            by: "  ".into(),
            reason: "fixed".into(),
        };
        assert!(no_one.validate().unwrap_err().contains("`by`"));
        let no_reason = DeadLetterRequest {
            by: "mia".into(),
            reason: String::new(),
        };
        assert!(no_reason.validate().unwrap_err().contains("`reason`"));
        let ok = DeadLetterRequest {
            by: " mia ".into(),
            reason: " token rotated ".into(),
        }
        .validate()
        .unwrap();
        assert_eq!(
            (ok.by.as_str(), ok.reason.as_str()),
            ("mia", "token rotated")
        );
    }
}
