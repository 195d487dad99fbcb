//! The `github` connector plugin: decodes GitHub webhook deliveries (issues,
//! pull requests, comments, classic project cards, projects v2 items) into
//! canonical events, polls a repository's issues and pull requests through
//! the REST API, and acts on them: create an issue, comment, close or reopen,
//! assign. Config keys and event types are in `docs/connectors.md`.

use std::collections::BTreeMap;

use converge_plugin_sdk::event::{CloudEvent, campaign_from_labels, campaign_subject, event_id};
use converge_plugin_sdk::http::{self, Method};
use converge_plugin_sdk::task::{self, Operation, TaskConnector};
use converge_plugin_sdk::{Action, ActionOutcome, Inbound, PluginError, PollResult, connector};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// REST API base; GitHub Enterprise Server's is `https://<host>/api/v3`.
    #[serde(default = "default_api_url")]
    api_url: String,
    /// Granted credential the host sends as `authorization: Bearer <token>`.
    #[serde(default = "default_credential")]
    credential: String,
    /// `owner/repo`: what `poll` reads and `create_task` creates in.
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    campaign: CampaignMapping,
    /// Whether events carry the tool's payload as `data.raw`.
    #[serde(default = "yes")]
    include_raw: bool,
    #[serde(default)]
    poll: PollConfig,
    /// What `execute` does: `create_task`, `comment`, `transition`, `assign`.
    #[serde(default)]
    action: Option<Operation>,
    /// A fixed item to act on (`owner/repo#12`) instead of the event's.
    #[serde(default)]
    key: Option<String>,
    /// Transition target when the decision names no stage.
    #[serde(default)]
    to: Option<String>,
    /// Assignee when the decision names no one.
    #[serde(default)]
    assignee: Option<String>,
    /// converge owner names -> GitHub logins.
    #[serde(default)]
    users: BTreeMap<String, String>,
    /// converge stages -> `open` or `closed`.
    #[serde(default)]
    states: BTreeMap<String, String>,
    /// Labels every created issue gets.
    #[serde(default)]
    labels: Vec<String>,
}

/// How an item finds its campaign; the first that matches wins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignMapping {
    /// Labels like `campaign:spring-launch` name the campaign.
    #[serde(default)]
    label_prefix: Option<String>,
    /// Classic project id or projects v2 node id -> campaign.
    #[serde(default)]
    projects: BTreeMap<String, String>,
    /// `owner/repo` -> campaign, for everything in the repository.
    #[serde(default)]
    repositories: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollConfig {
    /// Start of the first poll (RFC 3339); without it, from the beginning.
    #[serde(default)]
    since: Option<String>,
    #[serde(default = "default_per_page")]
    per_page: u32,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            since: None,
            per_page: default_per_page(),
        }
    }
}

fn default_api_url() -> String {
    "https://api.github.com".to_owned()
}

fn default_credential() -> String {
    "github".to_owned()
}

fn default_per_page() -> u32 {
    50
}

fn yes() -> bool {
    true
}

impl Config {
    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.api_url.trim_end_matches('/'))
    }

    fn repository(&self) -> Result<&str, PluginError> {
        self.repository.as_deref().ok_or_else(|| {
            PluginError::InvalidInput("plugin config: repository: required (owner/repo)".into())
        })
    }

    /// The campaign an item maps to: a label, its project, its repository.
    fn campaign(&self, labels: &[String], project: Option<&str>, repo: &str) -> Option<String> {
        let mapping = &self.campaign;
        mapping
            .label_prefix
            .as_deref()
            .and_then(|prefix| campaign_from_labels(labels.iter().map(String::as_str), prefix))
            .or_else(|| project.and_then(|p| mapping.projects.get(p).cloned()))
            .or_else(|| mapping.repositories.get(repo).cloned())
    }
}

/// An issue or pull request, normalized: what rules read.
struct Item {
    subject: String,
    fields: Map<String, Value>,
    labels: Vec<String>,
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn logins(value: Option<&Value>) -> Vec<Value> {
    value
        .and_then(Value::as_array)
        .map(|users| {
            users
                .iter()
                .filter_map(|u| u.get("login").cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// An issue or pull request object of the REST API or a webhook payload.
fn item(object: &Value, repo: &str) -> Item {
    let is_pr = object.get("pull_request").is_some() || object.get("merged").is_some();
    let number = object.get("number").cloned().unwrap_or(Value::Null);
    let key = format!("{repo}#{number}");
    let kind = if is_pr {
        "github-pull-request"
    } else {
        "github-issue"
    };
    let subject = format!("{kind}/{key}");
    let labels: Vec<String> = object
        .get("labels")
        .and_then(Value::as_array)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|l| l.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut fields = Map::new();
    fields.insert("key".into(), key.into());
    fields.insert("item".into(), subject.clone().into());
    fields.insert("number".into(), number);
    fields.insert(
        "title".into(),
        object.get("title").cloned().unwrap_or(Value::Null),
    );
    fields.insert(
        "status".into(),
        object.get("state").cloned().unwrap_or(Value::Null),
    );
    fields.insert(
        "assignee".into(),
        object
            .pointer("/assignee/login")
            .cloned()
            .unwrap_or(Value::Null),
    );
    fields.insert("assignees".into(), logins(object.get("assignees")).into());
    fields.insert("labels".into(), labels.clone().into());
    fields.insert(
        "url".into(),
        object.get("html_url").cloned().unwrap_or(Value::Null),
    );
    fields.insert(
        "author".into(),
        object
            .pointer("/user/login")
            .cloned()
            .unwrap_or(Value::Null),
    );
    Item {
        subject,
        fields,
        labels,
    }
}

/// GitHub's `changes` object (`{"title": {"from": "..."}}`) as a list of
/// `{field, from, to}`, `to` read from the changed object.
fn changes(body: &Value, object: &Value) -> Vec<Value> {
    let Some(changes) = body.get("changes").and_then(Value::as_object) else {
        return Vec::new();
    };
    changes
        .iter()
        .map(|(field, change)| {
            let from = change.get("from").cloned().unwrap_or(Value::Null);
            let to = change
                .get("to")
                .cloned()
                .or_else(|| object.get(field).cloned())
                .unwrap_or(Value::Null);
            json!({"field": field, "from": from, "to": to})
        })
        .collect()
}

/// The event type's noun for a webhook event name.
fn noun(event: &str) -> &str {
    match event {
        "issues" => "issue",
        other => other,
    }
}

/// The event's subject: the campaign when one was found (recorded in
/// `data.campaign`), else the item itself.
fn mapped(campaign: Option<String>, item_subject: String, data: &mut Map<String, Value>) -> String {
    match campaign.as_deref().and_then(campaign_subject) {
        Some(subject) => {
            data.insert("campaign".into(), campaign.into());
            subject
        }
        None => item_subject,
    }
}

/// Where the next poll starts: issues updated at or after `since`, sorted
/// by update time, and the page within that query (above 1 only when a
/// whole page shares one update time).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cursor {
    #[serde(default)]
    since: Option<String>,
    #[serde(default = "first_page")]
    page: u32,
}

fn first_page() -> u32 {
    1
}

fn parse_cursor(config: &Config, cursor: Option<&str>) -> Result<Cursor, PluginError> {
    let first = Cursor {
        since: config.poll.since.clone(),
        page: 1,
    };
    connector::parse_cursor(cursor, first)
}

fn poll_url(config: &Config, cursor: &Cursor) -> Result<String, PluginError> {
    let repo = config.repository()?;
    let per_page = config.poll.per_page.to_string();
    let page = cursor.page.to_string();
    let mut query = vec![
        ("state", "all"),
        ("sort", "updated"),
        ("direction", "asc"),
        ("per_page", per_page.as_str()),
        ("page", page.as_str()),
    ];
    if let Some(since) = &cursor.since {
        query.push(("since", since));
    }
    Ok(http::url_with_query(
        &config.api(&format!("/repos/{repo}/issues")),
        &query,
    ))
}

/// One page of the issues list as events, and where the next poll starts.
fn poll_page(config: &Config, cursor: &Cursor, items: &[Value]) -> Result<PollResult, PluginError> {
    let repo = config.repository()?;
    let mut events = Vec::with_capacity(items.len());
    let mut latest = cursor.since.clone();
    for object in items {
        let updated = str_at(object, "/updated_at").unwrap_or_default();
        let item = item(object, repo);
        let noun = if item.subject.starts_with("github-pull-request/") {
            "pull_request"
        } else {
            "issue"
        };
        let verb = if str_at(object, "/created_at") == Some(updated) {
            "opened"
        } else if str_at(object, "/closed_at") == Some(updated) {
            "closed"
        } else {
            "updated"
        };
        let mut data = item.fields;
        let campaign = config.campaign(&item.labels, None, repo);
        let subject = mapped(campaign, item.subject, &mut data);
        if config.include_raw {
            data.insert("raw".into(), object.clone());
        }
        let source = str_at(object, "/html_url")
            .and_then(|url| {
                url.split_once(if noun == "issue" {
                    "/issues/"
                } else {
                    "/pull/"
                })
            })
            .map_or_else(
                || format!("https://github.com/{repo}"),
                |(base, _)| base.to_owned(),
            );
        let key = data.get("key").and_then(Value::as_str).unwrap_or_default();
        events.push(
            CloudEvent::new(
                format!("poll:{key}@{updated}"),
                source,
                format!("github.{noun}.{verb}"),
            )
            .subject(subject)
            .time(updated)
            .data(Value::Object(data))
            .to_json(),
        );
        // ISO 8601 UTC times of one format compare as strings.
        if latest.as_deref().is_none_or(|l| updated > l) {
            latest = Some(updated.to_owned());
        }
    }
    let full = items.len() >= config.poll.per_page as usize;
    let next = if full && latest == cursor.since {
        Cursor {
            since: cursor.since.clone(),
            page: cursor.page + 1,
        }
    } else {
        Cursor {
            since: latest,
            page: 1,
        }
    };
    let cursor = serde_json::to_string(&next).expect("a cursor always serializes");
    Ok(PollResult::page(events, cursor, full))
}

/// `owner/repo#12` (or `#12` / `12` with the configured repository).
fn parse_key<'a>(config: &'a Config, key: &'a str) -> Result<(&'a str, u64), PluginError> {
    let (repo, number) = match key.rsplit_once('#') {
        Some((repo, number)) if !repo.is_empty() => (repo, number),
        Some((_, number)) => (config.repository()?, number),
        None => (config.repository()?, key),
    };
    let number = number.parse().map_err(|_| {
        PluginError::InvalidInput(format!("{key:?} is not an issue key like owner/repo#12"))
    })?;
    Ok((repo, number))
}

const ACCEPT: (&str, &str) = ("accept", "application/vnd.github+json");

fn send(config: &Config, method: Method, path: &str, body: &Value) -> Result<Value, PluginError> {
    let request = http::json_request(
        method,
        &config.api(path),
        body,
        Some(&config.credential),
        &[ACCEPT],
    );
    http::send_checked(&request)?.json()
}

struct GitHub;

impl TaskConnector for GitHub {
    type Config = Config;

    const EVENT_TYPES: &'static [&'static str] = &[
        "github.issue.<action>",
        "github.pull_request.<action>",
        "github.issue_comment.<action>",
        "github.project_card.<action>",
        "github.projects_v2_item.<action>",
        "github.issue.updated",
        "github.pull_request.updated",
        "github.<event>.<action>",
    ];

    fn decode(config: &Config, inbound: &Inbound) -> Result<Vec<CloudEvent>, PluginError> {
        let event_name = inbound.header("x-github-event").ok_or_else(|| {
            PluginError::InvalidInput(format!(
                "hook {}: no X-GitHub-Event header: not a GitHub delivery",
                inbound.hook
            ))
        })?;
        if event_name == "ping" {
            return Ok(Vec::new());
        }
        let body: Value = inbound.json()?;
        // From the event name and the signed body, not the unsigned
        // X-GitHub-Delivery: a captured delivery sent again under a new
        // delivery id is the same event (a duplicate); redeliveries carry the
        // same body.
        let id = event_id("github-", &[event_name.as_bytes(), &inbound.body]);
        let action = str_at(&body, "/action").unwrap_or("received");
        let event_type = format!("github.{}.{action}", noun(event_name));
        let repo = str_at(&body, "/repository/full_name").unwrap_or_default();
        let source = str_at(&body, "/repository/html_url")
            .map(str::to_owned)
            .or_else(|| {
                str_at(&body, "/organization/login").map(|o| format!("https://github.com/{o}"))
            })
            .unwrap_or_else(|| "https://github.com".to_owned());

        let (subject, mut data, time) = match event_name {
            "issues" | "pull_request" | "issue_comment" => {
                let object = body
                    .get("pull_request")
                    .filter(|_| event_name == "pull_request")
                    .or_else(|| body.get("issue"))
                    .ok_or_else(|| {
                        PluginError::InvalidInput(format!("{event_name} delivery without its item"))
                    })?;
                let item = item(object, repo);
                let mut data = item.fields;
                let mut time = str_at(object, "/updated_at");
                data.insert("changes".into(), changes(&body, object).into());
                if let Some(label) = body.pointer("/label/name") {
                    data.insert("label".into(), label.clone());
                }
                // Only (un)assignment deliveries carry a top-level assignee: who
                // was (un)assigned, as opposed to the item's assignees.
                if let Some(login) = body.pointer("/assignee/login") {
                    data.insert("assigned".into(), login.clone());
                }
                if let Some(reviewer) = body
                    .pointer("/requested_reviewer/login")
                    .or_else(|| body.pointer("/requested_team/name"))
                {
                    data.insert("requested_reviewer".into(), reviewer.clone());
                }
                if let Some(comment) = body.get("comment") {
                    time = str_at(comment, "/updated_at").or(time);
                    data.insert(
                        "comment".into(),
                        json!({
                            "id": comment.get("id"),
                            "author": comment.pointer("/user/login"),
                            "body": comment.get("body"),
                        }),
                    );
                }
                let campaign = config.campaign(&item.labels, None, repo);
                (mapped(campaign, item.subject, &mut data), data, time)
            }
            "project_card" => {
                let card = body.get("project_card").cloned().unwrap_or(Value::Null);
                let card_id = card.get("id").cloned().unwrap_or(Value::Null);
                let project = str_at(&card, "/project_url").and_then(|u| u.rsplit('/').next());
                let subject = format!("github-project-card/{card_id}");
                let mut data = Map::new();
                data.insert("key".into(), card_id.to_string().into());
                data.insert("item".into(), subject.clone().into());
                data.insert("project".into(), project.into());
                data.insert(
                    "column".into(),
                    card.get("column_id").cloned().unwrap_or(Value::Null),
                );
                data.insert(
                    "note".into(),
                    card.get("note").cloned().unwrap_or(Value::Null),
                );
                data.insert(
                    "content_url".into(),
                    card.get("content_url").cloned().unwrap_or(Value::Null),
                );
                let column_change = body.pointer("/changes/column_id/from").map(
                    |from| json!({"field": "column", "from": from, "to": card.get("column_id")}),
                );
                data.insert(
                    "changes".into(),
                    column_change.into_iter().collect::<Vec<_>>().into(),
                );
                let campaign = config.campaign(&[], project, repo);
                let time = str_at(&body, "/project_card/updated_at");
                (mapped(campaign, subject, &mut data), data, time)
            }
            "projects_v2_item" => {
                let item = body.get("projects_v2_item").cloned().unwrap_or(Value::Null);
                let node_id = str_at(&item, "/node_id").unwrap_or_default().to_owned();
                let project = str_at(&item, "/project_node_id");
                let subject = format!("github-project-item/{node_id}");
                let mut data = Map::new();
                data.insert("key".into(), node_id.into());
                data.insert("item".into(), subject.clone().into());
                data.insert("project".into(), project.into());
                data.insert(
                    "content_type".into(),
                    item.get("content_type").cloned().unwrap_or(Value::Null),
                );
                data.insert(
                    "content".into(),
                    item.get("content_node_id").cloned().unwrap_or(Value::Null),
                );
                let field_change = body.pointer("/changes/field_value").map(|change| {
                    json!({
                        "field": change.get("field_node_id"),
                        "field_type": change.get("field_type"),
                        "from": change.get("from"),
                        "to": change.get("to"),
                    })
                });
                data.insert(
                    "changes".into(),
                    field_change.into_iter().collect::<Vec<_>>().into(),
                );
                let campaign = config.campaign(&[], project, repo);
                let time = str_at(&body, "/projects_v2_item/updated_at");
                (mapped(campaign, subject, &mut data), data, time)
            }
            _ => {
                let subject = if repo.is_empty() {
                    "github/unknown".to_owned()
                } else {
                    format!("github-repository/{repo}")
                };
                let mut data = Map::new();
                data.insert("repository".into(), repo.into());
                let campaign = config.campaign(&[], None, repo);
                (mapped(campaign, subject, &mut data), data, None)
            }
        };
        if let Some(sender) = body.pointer("/sender/login") {
            data.insert("sender".into(), sender.clone());
        }
        if config.include_raw {
            data.insert("raw".into(), body.clone());
        }
        Ok(vec![
            CloudEvent::new(id, source, event_type)
                .subject(subject)
                .time_opt(time.map(str::to_owned))
                .data(Value::Object(data)),
        ])
    }

    fn poll(config: &Config, cursor: Option<&str>) -> Result<PollResult, PluginError> {
        let cursor = parse_cursor(config, cursor)?;
        let items: Vec<Value> =
            http::get_json(&poll_url(config, &cursor)?, Some(&config.credential))?;
        poll_page(config, &cursor, &items)
    }

    fn execute(config: &Config, action: &Action) -> Result<ActionOutcome, PluginError> {
        match task::operation(config.action)? {
            Operation::CreateTask => {
                let repo = config.repository()?;
                let text = task::text(action)?;
                let mut labels = config.labels.clone();
                if let (Some(prefix), Some(campaign)) =
                    (&config.campaign.label_prefix, task::event_campaign(action))
                {
                    labels.push(format!("{prefix}{campaign}"));
                }
                let body = json!({"title": text.title, "body": text.body, "labels": labels});
                let created = send(
                    config,
                    Method::Post,
                    &format!("/repos/{repo}/issues"),
                    &body,
                )?;
                let key = format!(
                    "{repo}#{}",
                    created.get("number").cloned().unwrap_or(Value::Null)
                );
                Ok(ActionOutcome::new(format!("created {key}")).with_external_id(key))
            }
            Operation::Comment => {
                let key = task::target_key(action, config.key.as_deref())?;
                let (repo, number) = parse_key(config, &key)?;
                let text = task::text(action)?;
                let path = format!("/repos/{repo}/issues/{number}/comments");
                let created = send(config, Method::Post, &path, &json!({"body": text.body}))?;
                let outcome = ActionOutcome::new(format!("commented on {repo}#{number}"));
                Ok(match created.get("id") {
                    Some(id) => outcome.with_external_id(id.to_string()),
                    None => outcome,
                })
            }
            Operation::Transition => {
                let key = task::target_key(action, config.key.as_deref())?;
                let (repo, number) = parse_key(config, &key)?;
                let stage = task::target_stage(action, config.to.as_deref())?;
                let state = config
                    .states
                    .get(&stage)
                    .map_or(stage.as_str(), String::as_str);
                if !matches!(state, "open" | "closed") {
                    return Err(PluginError::InvalidInput(format!(
                        "plugin config: states.{stage}: GitHub issues are open or closed, not {state:?}"
                    )));
                }
                let path = format!("/repos/{repo}/issues/{number}");
                send(config, Method::Patch, &path, &json!({"state": state}))?;
                Ok(ActionOutcome::new(format!("{repo}#{number} is {state}"))
                    .with_external_id(format!("{repo}#{number}")))
            }
            Operation::Assign => {
                let key = task::target_key(action, config.key.as_deref())?;
                let (repo, number) = parse_key(config, &key)?;
                let login = task::assignee(action, config.assignee.as_deref(), &config.users)?;
                let path = format!("/repos/{repo}/issues/{number}/assignees");
                send(config, Method::Post, &path, &json!({"assignees": [login]}))?;
                Ok(
                    ActionOutcome::new(format!("assigned {repo}#{number} to {login}"))
                        .with_external_id(format!("{repo}#{number}")),
                )
            }
        }
    }
}

converge_plugin_sdk::export_connector_plugin!(GitHub);

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/webhooks/github/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn config(json: Value) -> Config {
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn delivery(event: &str, file: &str) -> Inbound {
        Inbound {
            hook: "github".into(),
            method: "POST".into(),
            headers: vec![
                ("X-GitHub-Event".into(), event.into()),
                (
                    "X-GitHub-Delivery".into(),
                    "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
                ),
            ],
            body: fixture(file),
        }
    }

    fn decode_one(config: &Config, inbound: &Inbound) -> Value {
        let events = GitHub::decode(config, inbound).unwrap();
        assert_eq!(events.len(), 1);
        events[0].to_value()
    }

    #[test]
    fn an_opened_issue_is_about_the_issue_without_a_mapping() {
        let event = decode_one(
            &config(json!({})),
            &delivery("issues", "issues.opened.json"),
        );
        assert_eq!(event["type"], "github.issue.opened");
        let body = fixture("issues.opened.json");
        assert_eq!(event["id"], event_id("github-", &[b"issues", &body]));
        assert_eq!(event["source"], "https://github.com/Codertocat/Hello-World");
        assert_eq!(event["subject"], "github-issue/Codertocat/Hello-World#1");
        assert_eq!(event["time"], "2019-05-15T15:20:18Z");
        let data = &event["data"];
        assert_eq!(data["key"], "Codertocat/Hello-World#1");
        assert_eq!(data["title"], "Spelling error in the README file");
        assert_eq!(data["status"], "open");
        assert_eq!(data["author"], "Codertocat");
        assert_eq!(data["raw"]["action"], "opened");
        assert!(data.get("campaign").is_none());
    }

    #[test]
    fn a_label_with_the_prefix_maps_the_issue_to_its_campaign() {
        let config = config(json!({"campaign": {"label_prefix": "b"}}));
        let event = decode_one(&config, &delivery("issues", "issues.labeled.json"));
        assert_eq!(event["type"], "github.issue.labeled");
        // The fixture's label is `bug`: with prefix `b`, the campaign is `ug`.
        assert_eq!(event["subject"], "campaign/ug");
        assert_eq!(event["data"]["campaign"], "ug");
        assert_eq!(event["data"]["label"], "bug");
        assert_eq!(event["data"]["labels"], json!(["bug"]));
        assert_eq!(
            event["data"]["item"],
            "github-issue/Codertocat/Hello-World#1"
        );
    }

    #[test]
    fn a_repository_table_maps_everything_in_it() {
        let config = config(json!({
            "campaign": {"label_prefix": "campaign:", "repositories": {"Codertocat/Hello-World": "Spring Launch"}},
            "include_raw": false
        }));
        let event = decode_one(&config, &delivery("issues", "issues.assigned.json"));
        assert_eq!(event["type"], "github.issue.assigned");
        assert_eq!(event["subject"], "campaign/Spring-Launch");
        assert_eq!(event["data"]["assigned"], "Codertocat");
        assert_eq!(event["data"]["assignee"], "Codertocat");
        assert!(event["data"].get("raw").is_none());
    }

    #[test]
    fn comments_and_review_requests_carry_their_specifics() {
        let event = decode_one(
            &config(json!({})),
            &delivery("issue_comment", "issue_comment.created.json"),
        );
        assert_eq!(event["type"], "github.issue_comment.created");
        assert_eq!(event["subject"], "github-issue/Codertocat/Hello-World#1");
        assert_eq!(event["data"]["comment"]["author"], "Codertocat");
        assert_eq!(
            event["data"]["comment"]["body"],
            "You are totally right! I'll get this fixed right away."
        );

        let event = decode_one(
            &config(json!({})),
            &delivery("pull_request", "pull_request.review_requested.json"),
        );
        assert_eq!(event["type"], "github.pull_request.review_requested");
        assert_eq!(
            event["subject"],
            "github-pull-request/Codertocat/Hello-World#2"
        );
        assert_eq!(event["data"]["requested_reviewer"], "octocat");
        assert_eq!(
            event["data"]["title"],
            "Update the README with new information."
        );
    }

    #[test]
    fn project_cards_and_items_map_through_the_projects_table() {
        let config = config(
            json!({"campaign": {"projects": {"2640902": "spring", "PVT_kwDOAWcTxs07Gw": "fall"}}}),
        );
        let event = decode_one(
            &config,
            &delivery("project_card", "project_card.moved.json"),
        );
        assert_eq!(event["type"], "github.project_card.moved");
        assert_eq!(event["subject"], "campaign/spring");
        assert_eq!(
            event["data"]["changes"],
            json!([{"field": "column", "from": 9999467, "to": 5368157}])
        );
        assert_eq!(event["data"]["item"], "github-project-card/21567453");

        let event = decode_one(
            &config,
            &delivery("projects_v2_item", "projects_v2_item.edited.json"),
        );
        assert_eq!(event["type"], "github.projects_v2_item.edited");
        assert_eq!(event["subject"], "campaign/fall");
        assert_eq!(event["source"], "https://github.com/Octocoders");
        assert_eq!(
            event["data"]["changes"][0]["field"],
            "PVTF_lADOAWcTxs07G84AAali"
        );
    }

    #[test]
    fn pings_carry_no_event_and_other_events_are_about_the_repository() {
        assert!(
            GitHub::decode(&config(json!({})), &delivery("ping", "ping.json"))
                .unwrap()
                .is_empty()
        );
        let event = decode_one(&config(json!({})), &delivery("label", "label.created.json"));
        assert_eq!(event["type"], "github.label.created");
        assert_eq!(event["subject"], "github-repository/Codertocat/Hello-World");
    }

    #[test]
    fn without_a_delivery_id_the_id_is_a_hash_of_the_delivery() {
        let mut inbound = delivery("issues", "issues.opened.json");
        inbound.headers.retain(|(n, _)| n != "X-GitHub-Delivery");
        let first = decode_one(&config(json!({})), &inbound);
        let again = decode_one(&config(json!({})), &inbound);
        assert_eq!(first["id"], again["id"]);
        assert!(first["id"].as_str().unwrap().starts_with("github-"));
    }

    #[test]
    fn a_delivery_without_an_event_header_or_json_is_invalid_input() {
        let mut inbound = delivery("issues", "issues.opened.json");
        inbound.headers.clear();
        assert!(matches!(
            GitHub::decode(&config(json!({})), &inbound),
            Err(PluginError::InvalidInput(_))
        ));
        let mut inbound = delivery("issues", "issues.opened.json");
        inbound.body = b"<html>".to_vec();
        assert!(matches!(
            GitHub::decode(&config(json!({})), &inbound),
            Err(PluginError::InvalidInput(_))
        ));
    }

    fn issue(number: u64, created: &str, updated: &str) -> Value {
        json!({
            "number": number,
            "title": format!("issue {number}"),
            "state": "open",
            "html_url": format!("https://github.com/o/r/issues/{number}"),
            "created_at": created,
            "updated_at": updated,
            "closed_at": null,
            "labels": [],
        })
    }

    #[test]
    fn a_page_moves_the_cursor_to_the_latest_update() {
        let config = config(json!({"repository": "o/r", "poll": {"per_page": 2}}));
        let cursor = parse_cursor(&config, None).unwrap();
        assert_eq!(
            poll_url(&config, &cursor).unwrap(),
            "https://api.github.com/repos/o/r/issues?state=all&sort=updated&direction=asc&per_page=2&page=1"
        );
        let page = poll_page(
            &config,
            &cursor,
            &[
                issue(1, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
                issue(2, "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"),
            ],
        )
        .unwrap();
        assert!(page.more);
        let events: Vec<Value> = page
            .events
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(events[0]["type"], "github.issue.opened");
        assert_eq!(events[1]["type"], "github.issue.updated");
        assert_eq!(events[1]["id"], "poll:o/r#2@2024-01-02T00:00:00Z");
        assert_eq!(events[1]["source"], "https://github.com/o/r");
        let next = parse_cursor(&config, page.cursor.as_deref()).unwrap();
        assert_eq!(
            next,
            Cursor {
                since: Some("2024-01-02T00:00:00Z".into()),
                page: 1
            }
        );
        assert!(
            poll_url(&config, &next)
                .unwrap()
                .ends_with("&page=1&since=2024-01-02T00%3A00%3A00Z")
        );

        let last = poll_page(
            &config,
            &next,
            &[issue(2, "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z")],
        )
        .unwrap();
        assert!(!last.more);
    }

    #[test]
    fn a_full_page_of_one_update_time_moves_to_the_next_page() {
        let config = config(json!({"repository": "o/r", "poll": {"per_page": 2}}));
        let cursor = Cursor {
            since: Some("2024-01-02T00:00:00Z".into()),
            page: 1,
        };
        let same = "2024-01-02T00:00:00Z";
        let page = poll_page(
            &config,
            &cursor,
            &[issue(1, same, same), issue(2, same, same)],
        )
        .unwrap();
        assert!(page.more);
        let next = parse_cursor(&config, page.cursor.as_deref()).unwrap();
        assert_eq!(
            next,
            Cursor {
                since: Some(same.into()),
                page: 2
            }
        );
    }

    #[test]
    fn keys_name_the_repository_and_number() {
        let config = config(json!({"repository": "o/r"}));
        assert_eq!(parse_key(&config, "a/b#7").unwrap(), ("a/b", 7));
        assert_eq!(parse_key(&config, "#7").unwrap(), ("o/r", 7));
        assert_eq!(parse_key(&config, "7").unwrap(), ("o/r", 7));
        assert!(parse_key(&config, "a/b#x").is_err());
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let err = converge_plugin_sdk::parse_config::<Config>(r#"{"campaign": {"label": "x"}}"#)
            .unwrap_err();
        assert!(matches!(err, PluginError::InvalidInput(m) if m.contains("campaign")));
    }
}
