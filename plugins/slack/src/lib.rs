//! The `slack` action plugin: posts a message built from the decision to a
//! Slack channel with `chat.postMessage`.
//!
//! Config: `{"channel": "#mops-escalations", "base_url": "https://slack.com/api",
//! "credential": "bot_token"}`; `base_url` and `credential` have those
//! defaults. A decision may name its own `channel`, which wins over the
//! config's. The bot token is a host-held credential: the plugin names it and
//! the host adds `Authorization: Bearer <token>`, so the token never enters
//! the plugin.

use converge_plugin_sdk::{Action, ActionOutcome, ActionPlugin, PluginError, PluginInfo, http};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Optional because a decision may carry its own channel.
    #[serde(default)]
    channel: Option<String>,
    #[serde(default = "default_base_url")]
    base_url: String,
    #[serde(default = "default_credential")]
    credential: String,
}

fn default_base_url() -> String {
    "https://slack.com/api".to_owned()
}

fn default_credential() -> String {
    "bot_token".to_owned()
}

/// One `chat.postMessage` call, before it becomes an HTTP request.
#[derive(Debug, PartialEq)]
struct Message {
    channel: String,
    text: String,
}

impl Message {
    fn for_action(config: &Config, action: &Action) -> Result<Self, PluginError> {
        let decision = action.decision()?;
        let channel = match decision.get("channel") {
            Some(Value::String(channel)) => channel.clone(),
            Some(other) => {
                return Err(PluginError::InvalidInput(format!(
                    "decision.channel: expected a string, got {other}"
                )));
            }
            None => config.channel.clone().ok_or_else(|| {
                PluginError::InvalidInput(
                    "plugin config: channel: required unless the decision names a channel"
                        .to_owned(),
                )
            })?,
        };
        let text = text(action, &decision, &action.event()?)?;
        Ok(Message { channel, text })
    }
}

/// The message text for a decision, by the kind that was routed here.
fn text(action: &Action, decision: &Value, event: &Value) -> Result<String, PluginError> {
    match action.kind.as_str() {
        "escalate" => {
            let mut text = format!(
                ":rotating_light: Escalation (level {}) to {}: {}",
                member(decision, "level")?,
                member(decision, "to")?,
                member(decision, "reason")?,
            );
            if let Some(subject) = event.get("subject").and_then(Value::as_str) {
                text.push_str(" — ");
                text.push_str(subject);
            }
            Ok(text)
        }
        "notify" => Ok(format!(
            "{}: {}",
            member(decision, "to")?,
            member(decision, "message")?
        )),
        kind => Ok(format!("{} decided {kind}: {decision}", action.rule)),
    }
}

/// A decision member as message text: strings bare, anything else as JSON.
fn member(decision: &Value, name: &str) -> Result<String, PluginError> {
    match decision.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Err(PluginError::InvalidInput(format!(
            "decision.{name}: missing"
        ))),
        Some(other) => Ok(other.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct PostMessageResponse {
    ok: bool,
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// What Slack's answer means. Slack reports most failures as HTTP 200 with
/// `{"ok": false, "error": "..."}`, so the body decides, not the status.
fn outcome(channel: &str, response: &http::Response) -> Result<ActionOutcome, PluginError> {
    if !response.is_success() {
        return Err(response.error());
    }
    let body: PostMessageResponse = response.json()?;
    if body.ok {
        let outcome = ActionOutcome::new(format!("posted to {channel}"));
        return Ok(match body.ts {
            Some(ts) => outcome.with_external_id(ts),
            None => outcome,
        });
    }
    let error = body.error.unwrap_or_else(|| "unknown_error".to_owned());
    Err(match error.as_str() {
        "ratelimited" => PluginError::RateLimited(
            response
                .header("retry-after")
                .and_then(http::retry_after_ms),
        ),
        "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" => {
            PluginError::Unauthorized(format!("slack: {error}"))
        }
        "channel_not_found" | "not_in_channel" | "is_archived" => {
            PluginError::Permanent(format!("slack: {error} (channel {channel})"))
        }
        _ => PluginError::Permanent(format!("slack: {error}")),
    })
}

struct Slack;

impl ActionPlugin for Slack {
    fn describe() -> PluginInfo {
        converge_plugin_sdk::plugin_info!()
    }

    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        let config: Config = converge_plugin_sdk::config()?;
        let message = Message::for_action(&config, &action)?;
        let url = format!("{}/chat.postMessage", config.base_url.trim_end_matches('/'));
        let body = json!({"channel": message.channel, "text": message.text});
        let response = http::post_json(&url, &body, Some(&config.credential), &[])?;
        outcome(&message.channel, &response)
    }
}

converge_plugin_sdk::export_action_plugin!(Slack);

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE_OK: &str =
        include_str!("../../../tests/fixtures/webhooks/slack/chat.postMessage.response_ok.json");
    const RESPONSE_ERROR: &str =
        include_str!("../../../tests/fixtures/webhooks/slack/chat.postMessage.response_error.json");

    fn config(json: &str) -> Config {
        converge_plugin_sdk::parse_config(json).unwrap()
    }

    fn action(kind: &str, decision: Value, event: Value) -> Action {
        Action {
            id: "act-1".into(),
            kind: kind.into(),
            rule: "stalled".into(),
            decision_json: decision.to_string(),
            event_json: event.to_string(),
            entity_json: "null".into(),
        }
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response {
        http::Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn config_defaults_to_slack_and_the_bot_token() {
        let config = config(r##"{"channel": "#mops-escalations"}"##);
        assert_eq!(config.base_url, "https://slack.com/api");
        assert_eq!(config.credential, "bot_token");
    }

    #[test]
    fn escalations_name_level_owner_reason_and_subject() {
        let action = action(
            "escalate",
            json!({"kind": "escalate", "to": "review_owner", "reason": "no progress for 48h", "level": 2}),
            json!({"id": "e1", "subject": "PR-7"}),
        );
        let message =
            Message::for_action(&config(r##"{"channel": "#mops-escalations"}"##), &action).unwrap();
        assert_eq!(
            message,
            Message {
                channel: "#mops-escalations".into(),
                text: ":rotating_light: Escalation (level 2) to review_owner: no progress for 48h — PR-7".into(),
            }
        );
    }

    #[test]
    fn escalations_without_a_subject_end_at_the_reason() {
        let action = action(
            "escalate",
            json!({"to": "ops", "reason": "late", "level": 1}),
            json!({"id": "e1"}),
        );
        let message = Message::for_action(&config(r##"{"channel": "#c"}"##), &action).unwrap();
        assert_eq!(
            message.text,
            ":rotating_light: Escalation (level 1) to ops: late"
        );
    }

    #[test]
    fn notifications_and_other_kinds() {
        let config = config(r##"{"channel": "#c"}"##);
        let notify = action(
            "notify",
            json!({"kind": "notify", "to": "ops", "message": "brief approved"}),
            json!({}),
        );
        assert_eq!(
            Message::for_action(&config, &notify).unwrap().text,
            "ops: brief approved"
        );
        let other = action(
            "set_field",
            json!({"kind": "set_field", "field": "stage", "value": "review"}),
            json!({}),
        );
        assert_eq!(
            Message::for_action(&config, &other).unwrap().text,
            r#"stalled decided set_field: {"field":"stage","kind":"set_field","value":"review"}"#
        );
    }

    #[test]
    fn a_decision_channel_overrides_the_config() {
        let action = action(
            "notify",
            json!({"to": "ops", "message": "m", "channel": "#launch"}),
            json!({}),
        );
        let message = Message::for_action(&config(r##"{"channel": "#c"}"##), &action).unwrap();
        assert_eq!(message.channel, "#launch");
        let message = Message::for_action(&config("{}"), &action).unwrap();
        assert_eq!(message.channel, "#launch");
    }

    #[test]
    fn no_channel_anywhere_or_missing_members_are_invalid_input() {
        let notify = action("notify", json!({"to": "ops", "message": "m"}), json!({}));
        assert!(matches!(
            Message::for_action(&config("{}"), &notify),
            Err(PluginError::InvalidInput(m)) if m.contains("channel")
        ));
        let escalate = action("escalate", json!({"to": "ops", "level": 1}), json!({}));
        assert!(matches!(
            Message::for_action(&config(r##"{"channel": "#c"}"##), &escalate),
            Err(PluginError::InvalidInput(m)) if m == "decision.reason: missing"
        ));
    }

    #[test]
    fn an_ok_response_records_the_message_ts() {
        let outcome = outcome("#c", &response(200, &[], RESPONSE_OK)).unwrap();
        assert_eq!(outcome.external_id.as_deref(), Some("1503435956.000247"));
        assert_eq!(outcome.summary, "posted to #c");
    }

    #[test]
    fn an_error_response_is_permanent_with_slacks_error() {
        assert_eq!(
            outcome("#c", &response(200, &[], RESPONSE_ERROR)),
            Err(PluginError::Permanent("slack: too_many_attachments".into()))
        );
    }

    #[test]
    fn slack_errors_map_to_their_retry_policy() {
        let error = |e: &str| {
            outcome(
                "#c",
                &response(200, &[], &json!({"ok": false, "error": e}).to_string()),
            )
        };
        assert!(matches!(
            error("invalid_auth"),
            Err(PluginError::Unauthorized(_))
        ));
        assert!(matches!(
            error("token_revoked"),
            Err(PluginError::Unauthorized(_))
        ));
        assert!(matches!(
            error("channel_not_found"),
            Err(PluginError::Permanent(m)) if m.contains("#c")
        ));
        assert!(matches!(
            error("is_archived"),
            Err(PluginError::Permanent(_))
        ));
        assert_eq!(error("ratelimited"), Err(PluginError::RateLimited(None)));
        assert_eq!(
            outcome(
                "#c",
                &response(
                    200,
                    &[("Retry-After", "3")],
                    r#"{"ok": false, "error": "ratelimited"}"#
                )
            ),
            Err(PluginError::RateLimited(Some(3000)))
        );
    }

    #[test]
    fn http_failures_map_by_status() {
        assert_eq!(
            outcome("#c", &response(429, &[("retry-after", "30")], "")),
            Err(PluginError::RateLimited(Some(30_000)))
        );
        assert!(matches!(
            outcome("#c", &response(503, &[], "")),
            Err(PluginError::Transient(_))
        ));
        assert!(matches!(
            outcome("#c", &response(200, &[], "<html>")),
            Err(PluginError::Permanent(_))
        ));
    }
}
