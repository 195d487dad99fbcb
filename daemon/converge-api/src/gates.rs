//! Convergence gates: `GET /v1/gates` (the open gates), `GET
//! /v1/gates/{kind}/{id}` (one gate and its history), and a person's
//! override, `POST /v1/gates/{kind}/{id}/override` (docs/gates.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Time;
use crate::timers::PendingTimer;

/// The answer of `GET /v1/gates`: every open gate, oldest held first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    pub gates: Vec<Gate>,
}

/// One campaign's gate; `GET /v1/gates/{kind}/{id}` answers it alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// The campaign's entity key (`campaign/<id>`).
    pub campaign: String,
    /// Whether any send is still held.
    pub open: bool,
    /// When the oldest send still held was held; `null` when none is.
    pub held_since: Option<Time>,
    /// The campaign's channels (its `fields.channels`, those with a
    /// state, and those with a held send), in that order.
    pub channels: Vec<GateChannel>,
    /// The campaign's sends, held or released.
    pub held_sends: Vec<HeldSend>,
    /// The newest hold; `null` when nothing was ever held.
    pub last_hold: Option<LastHold>,
    /// The terms of the rule's `fields.gate`; `null` when it sets none.
    pub terms: Option<Vec<GateTerm>>,
    pub overrides: Vec<GateOverride>,
    /// The campaign's soonest pending timer: with the bundled gate rule,
    /// the gate's deadline (`gate.deadline`, unless `gate.closed` comes
    /// first); absent when none is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_timer: Option<PendingTimer>,
}

/// Where one channel stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateChannel {
    pub channel: String,
    pub stage: Option<String>,
    /// Whether its stage is `approved`.
    pub approved: bool,
    /// Whether its `paused` field is `true`.
    pub paused: bool,
    /// How many of its sends are held now.
    pub held: u64,
}

/// A send a gate held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSend {
    pub channel: String,
    /// The `send.requested` event that asked to send.
    pub event_id: String,
    pub event_seq: i64,
    /// The rules that held it, and why (`; `-separated, one per rule).
    pub rule: String,
    pub reason: String,
    pub held_at: Time,
    /// `held` or `released`.
    pub status: String,
    /// When it was released, and by whom (`rule <name>` or
    /// `override by <person>`); `null` while held.
    pub released_at: Option<Time>,
    pub released_by: Option<String>,
}

impl HeldSend {
    pub fn is_held(&self) -> bool {
        self.status == "held"
    }
}

/// The newest hold and the conditions that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastHold {
    pub channel: String,
    pub at: Time,
    pub rule: String,
    /// One per failed condition.
    pub reasons: Vec<String>,
}

/// One term of the rule's `fields.gate`: `{"term", "pass"}` for a
/// condition, `{"term", "value"}` for anything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateTerm {
    pub term: String,
    #[serde(flatten)]
    pub reading: TermReading,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermReading {
    /// A condition: whether it passes.
    Pass(bool),
    /// A value, shown as it is.
    Value(Value),
}

/// A person's override, as the gate's history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateOverride {
    pub by: String,
    pub reason: String,
    /// The channel overridden; `null`: every channel.
    pub channel: Option<String>,
    pub at: Time,
    /// How many held sends it released.
    pub released: i64,
    /// The `gate.override` event that carried it.
    pub event_seq: i64,
}

/// Longest `by` and `reason` an override may carry, in bytes.
const MAX_BY: usize = 200;
const MAX_REASON: usize = 2000;

/// The body of `POST /v1/gates/{kind}/{id}/override`: release the held
/// sends of `channel` (every channel when absent), on `by`'s word, for
/// `reason`. It is also the data of the `gate.override` event the daemon
/// journals, so the engine reads the same type back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub by: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl Override {
    /// Checks what a person sent, trimmed; the error says what is wrong.
    pub fn validate(self) -> Result<Override, String> {
        let by = self.by.trim().to_string();
        let reason = self.reason.trim().to_string();
        if by.is_empty() || by.len() > MAX_BY {
            return Err(format!(
                "`by` names who overrides: 1 to {MAX_BY} characters"
            ));
        }
        if reason.is_empty() || reason.len() > MAX_REASON {
            return Err(format!("`reason` says why: 1 to {MAX_REASON} characters"));
        }
        let channel = match self.channel.map(|c| c.trim().to_string()) {
            Some(c) if c.is_empty() => {
                return Err("`channel`, when given, names a channel".into());
            }
            other => other,
        };
        Ok(Override {
            by,
            reason,
            channel,
        })
    }
}

/// The 202 answer of an override: journaled, to be applied when the
/// event is processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideAccepted {
    pub campaign: String,
    /// The channel asked for; `null`: every channel.
    pub channel: Option<String>,
    /// How many sends it will release: those held when it was journaled.
    pub held: u64,
    pub event: JournaledEvent,
}

/// The `gate.override` event an override was journaled as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournaledEvent {
    pub id: String,
    /// Its journal `seq`.
    pub seq: Option<i64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{assert_wire, time};

    #[test]
    fn an_open_gate() {
        let gate = Gate {
            campaign: "campaign/fall-26".into(),
            open: true,
            held_since: Some(time("2026-11-20T09:00:00.000Z")),
            channels: vec![
                GateChannel {
                    channel: "email".into(),
                    stage: Some("approved".into()),
                    approved: true,
                    paused: false,
                    held: 1,
                },
                GateChannel {
                    channel: "paid".into(),
                    stage: None,
                    approved: false,
                    paused: true,
                    held: 0,
                },
            ],
            held_sends: vec![HeldSend {
                channel: "email".into(),
                event_id: "s-1".into(),
                event_seq: 3,
                rule: "convergence_gate".into(),
                reason: "not approved: paid (-)".into(),
                held_at: time("2026-11-20T09:00:00.000Z"),
                status: "held".into(),
                released_at: None,
                released_by: None,
            }],
            last_hold: Some(LastHold {
                channel: "email".into(),
                at: time("2026-11-20T09:00:00.000Z"),
                rule: "convergence_gate".into(),
                reasons: vec!["not approved: paid (-)".into()],
            }),
            terms: Some(vec![
                GateTerm {
                    term: "approved".into(),
                    reading: TermReading::Pass(false),
                },
                GateTerm {
                    term: "consistency".into(),
                    reading: TermReading::Value(json!(0.5)),
                },
                GateTerm {
                    term: "note".into(),
                    reading: TermReading::Value(Value::Null),
                },
            ]),
            overrides: vec![],
            next_timer: Some(PendingTimer {
                id: 4,
                entity: "campaign/fall-26".into(),
                kind: "expect".into(),
                event_type: "gate.deadline".into(),
                expect_type: Some("gate.closed".into()),
                rule: "convergence_gate".into(),
                version: "ab12".into(),
                due_at: time("2026-11-23T09:00:00.000Z"),
            }),
        };
        assert_wire(
            &gate,
            json!({
                "campaign": "campaign/fall-26",
                "open": true,
                "held_since": "2026-11-20T09:00:00.000Z",
                "channels": [
                    {"channel": "email", "stage": "approved", "approved": true, "paused": false, "held": 1},
                    {"channel": "paid", "stage": null, "approved": false, "paused": true, "held": 0},
                ],
                "held_sends": [{
                    "channel": "email",
                    "event_id": "s-1",
                    "event_seq": 3,
                    "rule": "convergence_gate",
                    "reason": "not approved: paid (-)",
                    "held_at": "2026-11-20T09:00:00.000Z",
                    "status": "held",
                    "released_at": null,
                    "released_by": null,
                }],
                "last_hold": {
                    "channel": "email",
                    "at": "2026-11-20T09:00:00.000Z",
                    "rule": "convergence_gate",
                    "reasons": ["not approved: paid (-)"],
                },
                "terms": [
                    {"term": "approved", "pass": false},
                    {"term": "consistency", "value": 0.5},
                    {"term": "note", "value": null},
                ],
                "overrides": [],
                "next_timer": {
                    "id": 4,
                    "entity": "campaign/fall-26",
                    "kind": "expect",
                    "event_type": "gate.deadline",
                    "expect_type": "gate.closed",
                    "rule": "convergence_gate",
                    "version": "ab12",
                    "due_at": "2026-11-23T09:00:00.000Z",
                },
            }),
        );
        assert!(gate.held_sends[0].is_held());
    }

    #[test]
    fn a_closed_gate_with_its_history() {
        let gate = Gate {
            campaign: "campaign/spring".into(),
            open: false,
            held_since: None,
            channels: vec![],
            held_sends: vec![HeldSend {
                channel: "email".into(),
                event_id: "s-1".into(),
                event_seq: 3,
                rule: "convergence_gate".into(),
                reason: "not approved: paid (draft)".into(),
                held_at: time("2026-11-20T09:00:00.000Z"),
                status: "released".into(),
                released_at: Some(time("2026-11-20T10:00:00.000Z")),
                released_by: Some("override by mia".into()),
            }],
            last_hold: None,
            terms: None,
            overrides: vec![GateOverride {
                by: "mia".into(),
                reason: "legal approved by phone".into(),
                channel: None,
                at: time("2026-11-20T10:00:00.000Z"),
                released: 1,
                event_seq: 9,
            }],
            next_timer: None,
        };
        assert_wire(
            &Gates { gates: vec![gate] },
            json!({"gates": [{
                "campaign": "campaign/spring",
                "open": false,
                "held_since": null,
                "channels": [],
                "held_sends": [{
                    "channel": "email",
                    "event_id": "s-1",
                    "event_seq": 3,
                    "rule": "convergence_gate",
                    "reason": "not approved: paid (draft)",
                    "held_at": "2026-11-20T09:00:00.000Z",
                    "status": "released",
                    "released_at": "2026-11-20T10:00:00.000Z",
                    "released_by": "override by mia",
                }],
                "last_hold": null,
                "terms": null,
                "overrides": [{
                    "by": "mia",
                    "reason": "legal approved by phone",
                    "channel": null,
                    "at": "2026-11-20T10:00:00.000Z",
                    "released": 1,
                    "event_seq": 9,
                }],
            }]}),
        );
    }

    #[test]
    fn an_override_and_its_answer() {
        assert_wire(
            &Override {
                by: "mia".into(),
                reason: "legal approved".into(),
                channel: None,
            },
            json!({"by": "mia", "reason": "legal approved"}),
        );
        assert_wire(
            &Override {
                by: "mia".into(),
                reason: "legal approved".into(),
                channel: Some("email".into()),
            },
            json!({"by": "mia", "reason": "legal approved", "channel": "email"}),
        );
        let unknown =
            serde_json::from_value::<Override>(json!({"by": "mia", "reason": "r", "who": "x"}));
        assert!(unknown.is_err());
        assert_wire(
            &OverrideAccepted {
                campaign: "campaign/spring".into(),
                channel: None,
                held: 2,
                event: JournaledEvent {
                    id: "override-1-2".into(),
                    seq: Some(12),
                },
            },
            json!({
                "campaign": "campaign/spring",
                "channel": null,
                "held": 2,
                "event": {"id": "override-1-2", "seq": 12},
            }),
        );
    }

    #[test]
    fn an_override_needs_who_and_why() {
        let bad = Override {
            by: " ".into(),
            reason: "launch now".into(),
            channel: None,
        };
        assert!(bad.validate().unwrap_err().contains("`by`"));
        let no_channel = Override {
            by: "mia".into(),
            reason: "launch now".into(),
            channel: Some(" ".into()),
        };
        assert!(no_channel.validate().unwrap_err().contains("`channel`"));
        let ok = Override {
            by: " mia ".into(),
            reason: "legal approved by phone".into(),
            channel: Some("email".into()),
        }
        .validate()
        .unwrap();
        assert_eq!(ok.by, "mia");
    }
}
