//! What the task tools' connectors (Jira, Asana, Trello, GitHub) share:
//! [`TaskConnector`], the [`Connector`] glue written once, and how an action
//! on a task takes what it needs from a decision and its event:
//!
//! - the operation is named by the route's config (`create_task`,
//!   `comment`, `transition`, `assign`), because decision kinds are
//!   converge's vocabulary, not a tool's;
//! - the item acted on is the config's `key` when set, else the event's
//!   `data.key`, which every connector's events carry;
//! - the text of a task or comment is built from the decision;
//! - a transition's target is the decision's `stage` (`set_stage`) or the
//!   config's `to`; an assignee is the decision's `owner` (`assign_owner`)
//!   or `to` (`escalate`, `notify`), or the config's `assignee`, looked up
//!   in the config's `users` table (converge name -> the tool's account).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::connector::{Connector, ConnectorInfo, Inbound, PollResult};
use crate::event::CloudEvent;
use crate::{Action, ActionOutcome, PluginError};

/// A task tool's connector: it decodes the tool's webhooks, polls its API
/// and performs every [`Operation`], each call with the operator's config.
/// Implementing it implements [`Connector`]: the config is read once per
/// call, decoded events become CloudEvent JSON, and `describe` lists
/// [`TaskConnector::EVENT_TYPES`] and [`Operation::NAMES`].
///
/// Each connector keeps its own `Config` type, because its keys differ and
/// `#[serde(deny_unknown_fields)]` does not combine with `#[serde(flatten)]`
/// of shared ones.
pub trait TaskConnector {
    /// The operator's config for the plugin, read from the host on every
    /// call; a parse error is `invalid-input` naming the key.
    type Config: DeserializeOwned;

    /// The event types the plugin produces.
    const EVENT_TYPES: &'static [&'static str];

    /// One webhook delivery to canonical events.
    fn decode(config: &Self::Config, inbound: &Inbound) -> Result<Vec<CloudEvent>, PluginError>;

    /// One page of the tool's changes after `cursor`, the text the previous
    /// poll returned (see [`crate::connector::parse_cursor`]).
    fn poll(config: &Self::Config, cursor: Option<&str>) -> Result<PollResult, PluginError>;

    /// One action on the tool, the operation the config's `action` names.
    fn execute(config: &Self::Config, action: &Action) -> Result<ActionOutcome, PluginError>;
}

impl<T: TaskConnector> Connector for T {
    fn info() -> ConnectorInfo {
        ConnectorInfo::new(T::EVENT_TYPES)
            .decodes()
            .polls()
            .actions(Operation::NAMES)
    }

    fn decode(inbound: Inbound) -> Result<Vec<String>, PluginError> {
        decode_json::<T>(&crate::config_json(), &inbound)
    }

    fn poll(cursor: Option<String>) -> Result<PollResult, PluginError> {
        <T as TaskConnector>::poll(&crate::config()?, cursor.as_deref())
    }

    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        <T as TaskConnector>::execute(&crate::config()?, &action)
    }
}

/// The pure half of a `decode` call: `config_json` is the host's config.
fn decode_json<T: TaskConnector>(
    config_json: &str,
    inbound: &Inbound,
) -> Result<Vec<String>, PluginError> {
    let config = crate::parse_config(config_json)?;
    Ok(<T as TaskConnector>::decode(&config, inbound)?
        .iter()
        .map(CloudEvent::to_json)
        .collect())
}

/// The actions a task connector performs, as routes name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    CreateTask,
    Comment,
    Transition,
    Assign,
}

impl Operation {
    /// The names, for `ConnectorInfo::actions`.
    pub const NAMES: &[&str] = &["create_task", "comment", "transition", "assign"];
}

/// The operation a route configured, or an `invalid-input` naming the key.
pub fn operation(configured: Option<Operation>) -> Result<Operation, PluginError> {
    configured.ok_or_else(|| {
        PluginError::InvalidInput(format!(
            "plugin config: action: required to perform an action (one of {})",
            Operation::NAMES.join(", ")
        ))
    })
}

/// A task's title and body, or a comment's text (the body), for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskText {
    pub title: String,
    pub body: String,
}

/// Longest title: tools cut or refuse longer ones (Jira's summary is 255).
const MAX_TITLE_CHARS: usize = 200;

/// The text of a task or comment for this action. The body ends with the
/// event, rule and action id, so a task created twice (actions run at
/// least once) can be recognised as the same.
pub fn text(action: &Action) -> Result<TaskText, PluginError> {
    let decision = action.decision()?;
    let event = action.event()?;
    let subject = event.get("subject").and_then(Value::as_str);
    let headline = match action.kind.as_str() {
        "escalate" => format!(
            "Escalation (level {}) to {}: {}",
            member(&decision, "level")?,
            member(&decision, "to")?,
            member(&decision, "reason")?
        ),
        "notify" => format!(
            "{}: {}",
            member(&decision, "to")?,
            member(&decision, "message")?
        ),
        kind => format!("{} decided {kind}", action.rule),
    };
    let mut title = match subject {
        Some(subject) => format!("{headline} ({subject})"),
        None => headline.clone(),
    };
    if let Some((cut, _)) = title.char_indices().nth(MAX_TITLE_CHARS) {
        title.truncate(cut);
        title.push_str("...");
    }
    let mut body = headline;
    if !matches!(action.kind.as_str(), "escalate" | "notify") {
        body.push_str(&format!(": {decision}"));
    }
    body.push_str("\n\n");
    if let Some(subject) = subject {
        body.push_str(&format!("Subject: {subject}\n"));
    }
    if let Some(id) = event.get("id").and_then(Value::as_str) {
        body.push_str(&format!("Event: {id}\n"));
    }
    body.push_str(&format!("Rule: {}\nAction: {}", action.rule, action.id));
    Ok(TaskText { title, body })
}

/// A decision member as text: strings bare, anything else as JSON.
fn member(decision: &Value, name: &str) -> Result<String, PluginError> {
    match decision.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Err(PluginError::InvalidInput(format!(
            "decision.{name}: missing"
        ))),
        Some(other) => Ok(other.to_string()),
    }
}

/// The item acted on: the config's `key`, else the event's `data.key`.
pub fn target_key(action: &Action, configured: Option<&str>) -> Result<String, PluginError> {
    if let Some(key) = configured {
        return Ok(key.to_owned());
    }
    let event = action.event()?;
    match event.pointer("/data/key") {
        Some(Value::String(key)) if !key.is_empty() => Ok(key.clone()),
        _ => Err(PluginError::InvalidInput(
            "no item to act on: the event has no data.key and the config no key".to_owned(),
        )),
    }
}

/// The stage to move the item to: the decision's `stage`, else the
/// config's `to`.
pub fn target_stage(action: &Action, configured: Option<&str>) -> Result<String, PluginError> {
    let decision = action.decision()?;
    if let Some(stage) = decision.get("stage").and_then(Value::as_str) {
        return Ok(stage.to_owned());
    }
    configured.map(str::to_owned).ok_or_else(|| {
        PluginError::InvalidInput(
            "no target: the decision has no stage and the config no `to`".to_owned(),
        )
    })
}

/// The tool account to assign: the decision's `owner` or `to`, else the
/// config's `assignee`, mapped through `users` when listed there.
pub fn assignee(
    action: &Action,
    configured: Option<&str>,
    users: &BTreeMap<String, String>,
) -> Result<String, PluginError> {
    let decision = action.decision()?;
    let name = ["owner", "to"]
        .iter()
        .find_map(|member| decision.get(*member).and_then(Value::as_str))
        .or(configured)
        .ok_or_else(|| {
            PluginError::InvalidInput(
                "no assignee: the decision has no owner or to, and the config no assignee"
                    .to_owned(),
            )
        })?;
    Ok(users.get(name).cloned().unwrap_or_else(|| name.to_owned()))
}

/// The campaign the action's event is about, when its subject is
/// `campaign/<name>`: a created task can be labelled with it, so the
/// connector maps the task back to the campaign.
pub fn event_campaign(action: &Action) -> Option<String> {
    let event = action.event().ok()?;
    event
        .get("subject")?
        .as_str()?
        .strip_prefix("campaign/")
        .map(str::to_owned)
}

/// A table lookup that names the config key when the entry is missing.
pub fn lookup<'a>(
    table: &'a BTreeMap<String, String>,
    key_path: &str,
    name: &str,
) -> Result<&'a str, PluginError> {
    table.get(name).map(String::as_str).ok_or_else(|| {
        PluginError::InvalidInput(format!("plugin config: {key_path}: no entry for {name:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ToolConfig {
        source: String,
    }

    /// A task connector whose decode makes one event named after the hook.
    struct Tool;

    impl TaskConnector for Tool {
        type Config = ToolConfig;

        const EVENT_TYPES: &'static [&'static str] = &["tool.item.updated"];

        fn decode(config: &ToolConfig, inbound: &Inbound) -> Result<Vec<CloudEvent>, PluginError> {
            Ok(vec![CloudEvent::new(
                inbound.hook.clone(),
                &config.source,
                "tool.item.updated",
            )])
        }

        fn poll(_: &ToolConfig, cursor: Option<&str>) -> Result<PollResult, PluginError> {
            Ok(PollResult::page(
                Vec::new(),
                cursor.unwrap_or_default(),
                false,
            ))
        }

        fn execute(_: &ToolConfig, action: &Action) -> Result<ActionOutcome, PluginError> {
            Ok(ActionOutcome::new(action.kind.clone()))
        }
    }

    #[test]
    fn task_connectors_describe_their_events_and_every_operation() {
        assert_eq!(
            <Tool as Connector>::info(),
            ConnectorInfo {
                decodes: true,
                polls: true,
                event_types: vec!["tool.item.updated".to_owned()],
                actions: vec![
                    "create_task".to_owned(),
                    "comment".to_owned(),
                    "transition".to_owned(),
                    "assign".to_owned(),
                ],
            }
        );
    }

    #[test]
    fn task_connectors_decode_to_cloudevent_json_with_the_config_read() {
        let inbound = Inbound {
            hook: "tool-hook".into(),
            method: "POST".into(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
        };
        let events =
            decode_json::<Tool>(r#"{"source": "https://tool.example"}"#, &inbound).unwrap();
        let events: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(
            events,
            [json!({
                "specversion": "1.0",
                "id": "tool-hook",
                "source": "https://tool.example",
                "type": "tool.item.updated",
            })]
        );
        assert!(matches!(
            decode_json::<Tool>(r#"{"source": "s", "sorce": "s"}"#, &inbound),
            Err(PluginError::InvalidInput(m)) if m.contains("sorce")
        ));
    }

    fn action(kind: &str, decision: Value, event: Value) -> Action {
        Action {
            id: "converge-action-7".into(),
            kind: kind.into(),
            rule: "required_fields".into(),
            decision_json: decision.to_string(),
            event_json: event.to_string(),
            entity_json: "null".into(),
        }
    }

    #[test]
    fn escalations_become_a_titled_task_with_its_trail() {
        let action = action(
            "escalate",
            json!({"kind": "escalate", "to": "ops", "reason": "no brief", "level": 2}),
            json!({"id": "e-1", "subject": "campaign/spring"}),
        );
        let text = text(&action).unwrap();
        assert_eq!(
            text.title,
            "Escalation (level 2) to ops: no brief (campaign/spring)"
        );
        assert_eq!(
            text.body,
            "Escalation (level 2) to ops: no brief\n\nSubject: campaign/spring\nEvent: e-1\nRule: required_fields\nAction: converge-action-7"
        );
        assert_eq!(event_campaign(&action).as_deref(), Some("spring"));
    }

    #[test]
    fn other_kinds_carry_the_decision_and_long_titles_are_cut() {
        let action = action(
            "set_field",
            json!({"kind": "set_field", "field": "x", "value": "y".repeat(300)}),
            json!({"id": "e-1"}),
        );
        let text = text(&action).unwrap();
        assert_eq!(text.title, "required_fields decided set_field");
        assert!(text.body.contains("\"field\":\"x\""));
        let long = super::text(&Action {
            kind: "notify".into(),
            decision_json: json!({"to": "a", "message": "m".repeat(500)}).to_string(),
            ..action
        })
        .unwrap();
        assert!(long.title.ends_with("...") && long.title.chars().count() == 203);
    }

    #[test]
    fn the_item_comes_from_the_config_or_the_event() {
        let with_key = action("notify", json!({}), json!({"data": {"key": "MOPS-7"}}));
        assert_eq!(target_key(&with_key, None).unwrap(), "MOPS-7");
        assert_eq!(target_key(&with_key, Some("MOPS-1")).unwrap(), "MOPS-1");
        let without = action("notify", json!({}), json!({"data": {}}));
        assert!(matches!(
            target_key(&without, None),
            Err(PluginError::InvalidInput(m)) if m.contains("data.key")
        ));
    }

    #[test]
    fn stages_and_assignees_come_from_the_decision_first() {
        let set_stage = action("set_stage", json!({"stage": "review"}), json!({}));
        assert_eq!(target_stage(&set_stage, Some("done")).unwrap(), "review");
        let notify = action("notify", json!({"to": "ana", "message": "m"}), json!({}));
        assert_eq!(target_stage(&notify, Some("done")).unwrap(), "done");
        assert!(target_stage(&notify, None).is_err());

        let users = BTreeMap::from([("ana".to_owned(), "acc-1".to_owned())]);
        assert_eq!(assignee(&notify, None, &users).unwrap(), "acc-1");
        let assign = action("assign_owner", json!({"owner": "bo"}), json!({}));
        assert_eq!(assignee(&assign, None, &users).unwrap(), "bo");
        let none = action("set_stage", json!({"stage": "x"}), json!({}));
        assert_eq!(assignee(&none, Some("ana"), &users).unwrap(), "acc-1");
        assert!(assignee(&none, None, &users).is_err());
    }

    #[test]
    fn a_missing_operation_names_the_key() {
        assert!(matches!(
            operation(None),
            Err(PluginError::InvalidInput(m)) if m.contains("action") && m.contains("create_task")
        ));
        assert_eq!(
            operation(Some(Operation::Comment)).unwrap(),
            Operation::Comment
        );
    }
}
