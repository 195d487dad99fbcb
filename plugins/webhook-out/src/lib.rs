//! The `webhook-out` action plugin: POSTs each action, with its decision,
//! event and entity, as one JSON document to an operator-configured URL.
//!
//! Config: `{"url": "https://...", "headers": {"x-name": "value"}, "credential": "name"}`;
//! only `url` is required. Every request carries `idempotency-key: <action id>`,
//! which stays the same on every retry, so receivers can drop duplicates.

use std::collections::BTreeMap;

use converge_plugin_sdk::{Action, ActionOutcome, ActionPlugin, PluginError, PluginInfo, http};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Headers the plugin sets itself, or that would carry a secret in plain
/// config (credentials are named with `credential` and injected by the host).
const RESERVED_HEADERS: &[&str] = &["content-type", "idempotency-key", "authorization"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    credential: Option<String>,
}

impl Config {
    fn parse(json: &str) -> Result<Self, PluginError> {
        let config: Config = converge_plugin_sdk::parse_config(json)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), PluginError> {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(PluginError::InvalidInput(format!(
                "plugin config: url: must be an http:// or https:// URL, got {:?}",
                self.url
            )));
        }
        if let Some(name) = self
            .headers
            .keys()
            .find(|name| RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
        {
            return Err(PluginError::InvalidInput(format!(
                "plugin config: headers.{name}: set by the plugin or the host, not by config"
            )));
        }
        Ok(())
    }
}

/// The document POSTed for one action. The decision, event and entity are
/// passed through as the host wrote them: checked to be JSON, not rebuilt.
#[derive(Serialize)]
struct Payload<'a> {
    action_id: &'a str,
    kind: &'a str,
    rule: &'a str,
    decision: &'a RawValue,
    event: &'a RawValue,
    entity: &'a RawValue,
}

fn raw<'a>(member: &str, json: &'a str) -> Result<&'a RawValue, PluginError> {
    serde_json::from_str(json)
        .map_err(|e| PluginError::InvalidInput(format!("action {member}: not JSON: {e}")))
}

fn payload(action: &Action) -> Result<Payload<'_>, PluginError> {
    Ok(Payload {
        action_id: &action.id,
        kind: &action.kind,
        rule: &action.rule,
        decision: raw("decision", &action.decision_json)?,
        event: raw("event", &action.event_json)?,
        entity: raw("entity", &action.entity_json)?,
    })
}

fn request(config: &Config, action: &Action) -> Result<http::Request, PluginError> {
    let mut headers: Vec<(&str, &str)> = vec![("idempotency-key", &action.id)];
    headers.extend(config.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    Ok(http::json_request(
        http::Method::Post,
        &config.url,
        &payload(action)?,
        config.credential.as_deref(),
        &headers,
    ))
}

struct WebhookOut;

impl ActionPlugin for WebhookOut {
    fn describe() -> PluginInfo {
        converge_plugin_sdk::plugin_info!()
    }

    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        let config = Config::parse(&converge_plugin_sdk::config_json())?;
        let response = http::send(&request(&config, &action)?)?;
        if !response.is_success() {
            return Err(response.error());
        }
        Ok(ActionOutcome::new(format!(
            "POST {} -> {}",
            config.url, response.status
        )))
    }
}

converge_plugin_sdk::export_action_plugin!(WebhookOut);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn action() -> Action {
        Action {
            id: "act-1".into(),
            kind: "escalate".into(),
            rule: "stalled".into(),
            decision_json: r#"{"kind": "escalate", "to": "owner", "reason": "late", "level": 1}"#
                .into(),
            event_json: r#"{"id": "e1", "subject": "PR-7"}"#.into(),
            entity_json: "null".into(),
        }
    }

    #[test]
    fn posts_the_action_as_one_document_with_its_idempotency_key() {
        let config = Config::parse(
            r#"{"url": "https://hooks.example.com/in", "headers": {"x-team": "mops"}, "credential": "hook_secret"}"#,
        )
        .unwrap();
        let request = request(&config, &action()).unwrap();
        assert_eq!(request.method, http::Method::Post);
        assert_eq!(request.url, "https://hooks.example.com/in");
        assert_eq!(request.credential.as_deref(), Some("hook_secret"));
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("content-type", "application/json"),
                ("idempotency-key", "act-1"),
                ("x-team", "mops")
            ]
        );
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "action_id": "act-1",
                "kind": "escalate",
                "rule": "stalled",
                "decision": {"kind": "escalate", "to": "owner", "reason": "late", "level": 1},
                "event": {"id": "e1", "subject": "PR-7"},
                "entity": null,
            })
        );
    }

    #[test]
    fn a_missing_or_bad_url_is_invalid_input() {
        for (config, needle) in [
            (r#"{}"#, "url"),
            (r#"{"url": "hooks.example.com"}"#, "url"),
            (r#"{"url": 7}"#, "url"),
            (r#"{"url": "https://x", "header": {}}"#, "header"),
            (
                r#"{"url": "https://x", "headers": {"Authorization": "Bearer s3cret"}}"#,
                "headers.Authorization",
            ),
        ] {
            let err = Config::parse(config).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.contains(needle)),
                "{config}: {err:?}"
            );
        }
    }

    #[test]
    fn a_malformed_action_is_invalid_input() {
        let action = Action {
            decision_json: "not json".into(),
            ..action()
        };
        assert!(matches!(
            payload(&action),
            Err(PluginError::InvalidInput(_))
        ));
    }
}
