//! The `asana` connector plugin: decodes Asana webhook deliveries (batches
//! of compact events; the handshake and heartbeats carry none) into
//! canonical events, polls projects through the events API with its sync
//! tokens, and acts on tasks: create, comment, move to a section, assign.
//! Config keys and event types are in `docs/connectors.md`.

use std::collections::BTreeMap;

use converge_plugin_sdk::event::{CloudEvent, campaign_subject, event_id};
use converge_plugin_sdk::http::{self, Method, percent_encode};
use converge_plugin_sdk::task::{self, Operation, TaskConnector};
use converge_plugin_sdk::{
    Action, ActionOutcome, Inbound, PluginError, PollResult, connector, log,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_api_url")]
    api_url: String,
    /// Granted credential the host sends as `authorization: Bearer <token>`.
    #[serde(default = "default_credential")]
    credential: String,
    #[serde(default)]
    campaign: CampaignMapping,
    /// Hook name -> the project gid its webhook was created on: a task's
    /// `changed` event names no project, the hook it came on does.
    #[serde(default)]
    hooks: BTreeMap<String, String>,
    #[serde(default = "yes")]
    include_raw: bool,
    #[serde(default)]
    poll: PollConfig,
    #[serde(default)]
    action: Option<Operation>,
    /// A fixed task gid to act on instead of the event's `data.key`.
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    assignee: Option<String>,
    /// converge owner names -> Asana user gids (or emails).
    #[serde(default)]
    users: BTreeMap<String, String>,
    /// The project new tasks are created in.
    #[serde(default)]
    project: Option<String>,
    /// converge stages -> section gids, for `transition`.
    #[serde(default)]
    sections: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignMapping {
    /// Project gid -> campaign.
    #[serde(default)]
    projects: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollConfig {
    /// Project gids whose events are polled.
    #[serde(default)]
    projects: Vec<String>,
}

fn default_api_url() -> String {
    "https://app.asana.com/api/1.0".to_owned()
}

fn default_credential() -> String {
    "asana".to_owned()
}

fn yes() -> bool {
    true
}

impl Config {
    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.api_url.trim_end_matches('/'))
    }
}

const SOURCE: &str = "https://app.asana.com";

/// One Asana event as a canonical event. `project` is the project the
/// event is known to be about (the polled one, the hook's), if any.
fn event(config: &Config, event: &Value, project: Option<&str>) -> CloudEvent {
    let resource = event.get("resource").cloned().unwrap_or(Value::Null);
    let resource_type = resource
        .get("resource_type")
        .or_else(|| event.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("resource");
    let gid = resource
        .get("gid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let action = event
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("changed");
    let parent = event.get("parent").filter(|p| !p.is_null());
    let parent_project = parent
        .filter(|p| p.get("resource_type").and_then(Value::as_str) == Some("project"))
        .and_then(|p| p.get("gid"))
        .and_then(Value::as_str);
    let own_project = (resource_type == "project").then_some(gid);
    let project = parent_project.or(own_project).or(project);

    let item = format!("asana-{resource_type}/{gid}");
    let mut data = Map::new();
    data.insert("key".into(), gid.into());
    data.insert("item".into(), item.clone().into());
    data.insert("resource_type".into(), resource_type.into());
    data.insert(
        "title".into(),
        resource.get("name").cloned().unwrap_or(Value::Null),
    );
    data.insert("action".into(), action.into());
    data.insert("project".into(), project.into());
    data.insert(
        "user".into(),
        event.pointer("/user/gid").cloned().unwrap_or(Value::Null),
    );
    if let Some(parent) = parent {
        data.insert(
            "parent".into(),
            json!({"gid": parent.get("gid"), "resource_type": parent.get("resource_type")}),
        );
    }
    let changes: Vec<Value> = event
        .get("change")
        .filter(|c| !c.is_null())
        .map(|change| {
            let value = |name: &str| change.get(name).filter(|v| !v.is_null()).cloned();
            json!({
                "field": change.get("field"),
                "action": change.get("action"),
                "to": value("new_value").or_else(|| value("added_value")),
                "removed": value("removed_value"),
            })
        })
        .into_iter()
        .collect();
    data.insert("changes".into(), changes.into());
    let campaign = project.and_then(|p| config.campaign.projects.get(p));
    let subject = match campaign.and_then(|c| campaign_subject(c)) {
        Some(subject) => {
            data.insert("campaign".into(), campaign.cloned().into());
            subject
        }
        None => item,
    };
    if config.include_raw {
        data.insert("raw".into(), event.clone());
    }
    // Asana events carry no id: the event itself, serialized with sorted
    // keys, identifies it across redeliveries.
    let id = event_id("asana-", &[event.to_string().as_bytes()]);
    CloudEvent::new(id, SOURCE, format!("asana.{resource_type}.{action}"))
        .subject(subject)
        .time_opt(
            event
                .get("created_at")
                .and_then(Value::as_str)
                .map(str::to_owned),
        )
        .data(Value::Object(data))
}

#[derive(Debug, Deserialize)]
struct Delivery {
    events: Vec<Value>,
}

/// The events API's sync token per polled project.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cursor {
    #[serde(default)]
    sync: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct EventsPage {
    #[serde(default)]
    data: Vec<Value>,
    #[serde(default)]
    sync: Option<String>,
    #[serde(default)]
    has_more: bool,
}

fn events_url(config: &Config, project: &str, sync: Option<&str>) -> String {
    let mut query = vec![("resource", project)];
    if let Some(sync) = sync {
        query.push(("sync", sync));
    }
    http::url_with_query(&config.api("/events"), &query)
}

fn send(config: &Config, method: Method, path: &str, data: Value) -> Result<Value, PluginError> {
    let response = http::send_json(
        method,
        &config.api(path),
        &json!({"data": data}),
        Some(&config.credential),
    )?;
    let body: Value = response.json()?;
    Ok(body.get("data").cloned().unwrap_or(Value::Null))
}

fn task_path(gid: &str, rest: &str) -> String {
    format!("/tasks/{}{rest}", percent_encode(gid))
}

struct Asana;

impl TaskConnector for Asana {
    type Config = Config;

    const EVENT_TYPES: &'static [&'static str] = &[
        "asana.task.added",
        "asana.task.changed",
        "asana.task.removed",
        "asana.task.deleted",
        "asana.task.undeleted",
        "asana.story.added",
        "asana.<resource_type>.<action>",
    ];

    fn decode(config: &Config, inbound: &Inbound) -> Result<Vec<CloudEvent>, PluginError> {
        // The handshake: the daemon answers it by echoing X-Hook-Secret.
        if inbound.header("x-hook-secret").is_some()
            && inbound.body.iter().all(u8::is_ascii_whitespace)
        {
            return Ok(Vec::new());
        }
        let delivery: Delivery = inbound.json()?;
        let project = config.hooks.get(&inbound.hook).map(String::as_str);
        Ok(delivery
            .events
            .iter()
            .map(|e| event(config, e, project))
            .collect())
    }

    /// One request per project: new events and the next sync token. A 412
    /// carries a fresh token and no events: the first poll of a project, or a
    /// token Asana no longer knows (its events are gone; polling resumes from
    /// now).
    fn poll(config: &Config, cursor: Option<&str>) -> Result<PollResult, PluginError> {
        if config.poll.projects.is_empty() {
            return Err(PluginError::InvalidInput(
                "plugin config: poll.projects: list the project gids to poll".into(),
            ));
        }
        let mut cursor = connector::parse_cursor(cursor, Cursor::default())?;
        let mut events = Vec::new();
        let mut more = false;
        for project in &config.poll.projects {
            let token = cursor.sync.get(project).map(String::as_str);
            let url = events_url(config, project, token);
            let response = http::send(&http::get_request(&url, Some(&config.credential)))?;
            let page: EventsPage = match response.status {
                412 => {
                    if token.is_some() {
                        log::warn(&format!(
                            "project {project}: sync token expired; events since the last poll are lost"
                        ));
                    }
                    response.json()?
                }
                _ if response.is_success() => response.json()?,
                _ => return Err(response.error()),
            };
            events.extend(
                page.data
                    .iter()
                    .map(|e| event(config, e, Some(project)).to_json()),
            );
            if let Some(sync) = page.sync {
                cursor.sync.insert(project.clone(), sync);
            }
            more |= page.has_more;
        }
        let cursor = serde_json::to_string(&cursor).expect("a cursor always serializes");
        Ok(PollResult::page(events, cursor, more))
    }

    fn execute(config: &Config, action: &Action) -> Result<ActionOutcome, PluginError> {
        match task::operation(config.action)? {
            Operation::CreateTask => {
                let project = config.project.as_deref().ok_or_else(|| {
                    PluginError::InvalidInput(
                        "plugin config: project: required to create tasks".into(),
                    )
                })?;
                let text = task::text(action)?;
                let created = send(
                    config,
                    Method::Post,
                    "/tasks",
                    json!({"name": text.title, "notes": text.body, "projects": [project]}),
                )?;
                let gid = created
                    .get("gid")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Ok(ActionOutcome::new(format!("created task {gid}")).with_external_id(gid))
            }
            Operation::Comment => {
                let gid = task::target_key(action, config.key.as_deref())?;
                let text = task::text(action)?;
                let story = send(
                    config,
                    Method::Post,
                    &task_path(&gid, "/stories"),
                    json!({"text": text.body}),
                )?;
                let outcome = ActionOutcome::new(format!("commented on task {gid}"));
                Ok(match story.get("gid").and_then(Value::as_str) {
                    Some(id) => outcome.with_external_id(id),
                    None => outcome,
                })
            }
            Operation::Transition => {
                let gid = task::target_key(action, config.key.as_deref())?;
                let stage = task::target_stage(action, config.to.as_deref())?;
                let section = task::lookup(&config.sections, &format!("sections.{stage}"), &stage)?;
                let path = format!("/sections/{}/addTask", percent_encode(section));
                send(config, Method::Post, &path, json!({"task": gid}))?;
                Ok(
                    ActionOutcome::new(format!("moved task {gid} to section {section}"))
                        .with_external_id(gid),
                )
            }
            Operation::Assign => {
                let gid = task::target_key(action, config.key.as_deref())?;
                let user = task::assignee(action, config.assignee.as_deref(), &config.users)?;
                send(
                    config,
                    Method::Put,
                    &task_path(&gid, ""),
                    json!({"assignee": user}),
                )?;
                Ok(ActionOutcome::new(format!("assigned task {gid} to {user}"))
                    .with_external_id(gid))
            }
        }
    }
}

converge_plugin_sdk::export_connector_plugin!(Asana);

#[cfg(test)]
mod tests {
    use super::*;

    const HANDSHAKE: &str =
        include_str!("../../../tests/fixtures/webhooks/asana/handshake.x_hook_secret.json");

    fn config(json: Value) -> Config {
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn inbound(hook: &str, headers: &[(&str, &str)], body: &str) -> Inbound {
        Inbound {
            hook: hook.into(),
            method: "POST".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).into(), (*v).into()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// The documented handshake request: an X-Hook-Secret and no body.
    #[test]
    fn the_handshake_carries_no_event() {
        let handshake: Value = serde_json::from_str(HANDSHAKE).unwrap();
        let secret = handshake["handshake_request"]["headers"]["X-Hook-Secret"]
            .as_str()
            .unwrap();
        let events = Asana::decode(
            &config(json!({})),
            &inbound("asana", &[("X-Hook-Secret", secret)], ""),
        )
        .unwrap();
        assert!(events.is_empty());
    }

    #[test]
    fn a_heartbeat_carries_no_event() {
        let events = Asana::decode(
            &config(json!({})),
            &inbound("asana", &[], r#"{"events": []}"#),
        )
        .unwrap();
        assert!(events.is_empty());
    }

    /// An event assembled from the EventResponse schema's documented
    /// examples (`events_delivery.description.json`): an assignee set on a
    /// task, with the parent null as the docs describe.
    fn assignee_changed() -> Value {
        json!({
            "user": {"gid": "12345", "resource_type": "user"},
            "resource": {"gid": "12345", "resource_type": "task", "name": "Bug Task"},
            "type": "task",
            "action": "changed",
            "parent": null,
            "created_at": "2012-02-22T02:06:58.147Z",
            "change": {"field": "assignee", "action": "changed", "new_value": {"gid": "12345", "resource_type": "user"}},
        })
    }

    #[test]
    fn a_task_change_maps_to_its_hooks_project_campaign() {
        let config = config(
            json!({"hooks": {"asana-mops": "8675309"}, "campaign": {"projects": {"8675309": "spring"}}}),
        );
        let body = json!({"events": [assignee_changed()]}).to_string();
        let events = Asana::decode(&config, &inbound("asana-mops", &[], &body)).unwrap();
        let event = events[0].to_value();
        assert_eq!(event["type"], "asana.task.changed");
        assert_eq!(event["source"], "https://app.asana.com");
        assert_eq!(event["subject"], "campaign/spring");
        assert_eq!(event["time"], "2012-02-22T02:06:58.147Z");
        let data = &event["data"];
        assert_eq!(data["key"], "12345");
        assert_eq!(data["item"], "asana-task/12345");
        assert_eq!(data["title"], "Bug Task");
        assert_eq!(
            data["changes"],
            json!([{"field": "assignee", "action": "changed", "to": {"gid": "12345", "resource_type": "user"}, "removed": null}])
        );

        let other_hook = Asana::decode(&config, &inbound("asana-other", &[], &body)).unwrap();
        assert_eq!(other_hook[0].to_value()["subject"], "asana-task/12345");
        assert_eq!(
            events[0].id(),
            other_hook[0].id(),
            "the id depends on the event only"
        );
    }

    #[test]
    fn a_task_added_to_a_project_maps_by_its_parent() {
        let added = json!({
            "user": {"gid": "12345", "resource_type": "user"},
            "resource": {"gid": "777", "resource_type": "task"},
            "action": "added",
            "parent": {"gid": "8675309", "resource_type": "project"},
            "created_at": "2012-02-22T02:06:58.147Z",
        });
        let config = config(json!({"campaign": {"projects": {"8675309": "spring"}}}));
        let events = Asana::decode(
            &config,
            &inbound("asana", &[], &json!({"events": [added]}).to_string()),
        )
        .unwrap();
        let event = events[0].to_value();
        assert_eq!(event["type"], "asana.task.added");
        assert_eq!(event["subject"], "campaign/spring");
        assert_eq!(event["data"]["parent"]["gid"], "8675309");
    }

    #[test]
    fn a_body_without_events_is_invalid_input() {
        assert!(matches!(
            Asana::decode(
                &config(json!({})),
                &inbound("asana", &[], r#"{"data": []}"#)
            ),
            Err(PluginError::InvalidInput(_))
        ));
    }
}
