//! The `jira` connector plugin: decodes Jira Cloud webhook deliveries
//! (issue and comment events with their changelog) into canonical events,
//! polls issues updated since a cursor with a JQL search, and acts on
//! issues: create, comment, transition, assign. Config keys and event types
//! are in `docs/connectors.md`.

use std::collections::BTreeMap;

use converge_plugin_sdk::event::{
    CloudEvent, campaign_from_labels, campaign_subject, event_id, rfc3339_from_millis,
};
use converge_plugin_sdk::http::{self, Method, percent_encode};
use converge_plugin_sdk::task::{self, Operation, TaskConnector};
use converge_plugin_sdk::{Action, ActionOutcome, Inbound, PluginError, PollResult, connector};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Issue fields a poll asks for: what [`issue_fields`] reads.
const POLL_FIELDS: &str =
    "summary,status,assignee,labels,priority,issuetype,project,created,updated";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `https://<site>.atlassian.net`: required to poll and act; the
    /// events' `source` when set.
    #[serde(default)]
    base_url: Option<String>,
    /// Granted credential the host injects (`authorization: Basic ...` for
    /// an API token, `Bearer ...` for OAuth).
    #[serde(default = "default_credential")]
    credential: String,
    #[serde(default)]
    campaign: CampaignMapping,
    #[serde(default = "yes")]
    include_raw: bool,
    #[serde(default)]
    poll: PollConfig,
    #[serde(default)]
    action: Option<Operation>,
    /// A fixed issue to act on instead of the event's `data.key`.
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    assignee: Option<String>,
    /// converge owner names -> Jira account ids.
    #[serde(default)]
    users: BTreeMap<String, String>,
    /// Project key new issues are created in.
    #[serde(default)]
    project: Option<String>,
    #[serde(default = "default_issue_type")]
    issue_type: String,
    #[serde(default)]
    labels: Vec<String>,
    /// converge stages -> Jira transition or status names.
    #[serde(default)]
    transitions: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignMapping {
    /// Labels like `campaign:spring-launch` name the campaign.
    #[serde(default)]
    label_prefix: Option<String>,
    /// A custom field holding the campaign, e.g. `customfield_10042`
    /// (text, select or labels field).
    #[serde(default)]
    field: Option<String>,
    /// Project key -> campaign.
    #[serde(default)]
    projects: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollConfig {
    /// Which issues to poll, e.g. `project = MOPS`; ANDed with the cursor.
    #[serde(default)]
    jql: Option<String>,
    /// Start of the first poll (`2024-03-01T00:00` or longer, in the API
    /// user's time zone); without it, every matching issue.
    #[serde(default)]
    since: Option<String>,
    #[serde(default = "default_page_size")]
    page_size: u32,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            jql: None,
            since: None,
            page_size: default_page_size(),
        }
    }
}

fn default_credential() -> String {
    "jira".to_owned()
}

fn default_issue_type() -> String {
    "Task".to_owned()
}

fn default_page_size() -> u32 {
    50
}

fn yes() -> bool {
    true
}

impl Config {
    fn base_url(&self) -> Result<&str, PluginError> {
        self.base_url
            .as_deref()
            .map(|url| url.trim_end_matches('/'))
            .ok_or_else(|| {
                PluginError::InvalidInput(
                    "plugin config: base_url: required (https://<site>.atlassian.net)".into(),
                )
            })
    }

    fn api(&self, path: &str) -> Result<String, PluginError> {
        Ok(format!("{}{path}", self.base_url()?))
    }

    /// The campaign an issue maps to: a label, the custom field, its project.
    fn campaign(&self, fields: &Value, project: Option<&str>) -> Option<String> {
        let mapping = &self.campaign;
        let labels = fields.get("labels").and_then(Value::as_array);
        mapping
            .label_prefix
            .as_deref()
            .zip(labels)
            .and_then(|(prefix, labels)| {
                campaign_from_labels(labels.iter().filter_map(Value::as_str), prefix)
            })
            .or_else(|| {
                mapping
                    .field
                    .as_deref()
                    .and_then(|field| field_text(fields.get(field)?))
            })
            .or_else(|| project.and_then(|p| mapping.projects.get(p).cloned()))
    }
}

/// A custom field's value as text: a string, an option's `value`, a
/// user's or version's `name`, or the first of a list.
fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Object(o) => ["value", "name"]
            .iter()
            .find_map(|k| o.get(*k))
            .and_then(field_text),
        Value::Array(items) => items.iter().find_map(field_text),
        _ => None,
    }
}

/// A Jira object (status, priority, issue type) by name, or a plain string.
fn name(value: Option<&Value>) -> Value {
    match value {
        Some(Value::String(s)) => s.clone().into(),
        Some(v) => v.get("name").cloned().unwrap_or(Value::Null),
        None => Value::Null,
    }
}

/// Jira writes offsets without a colon (`-0600`); RFC 3339 needs one.
fn rfc3339(jira_time: &str) -> Option<String> {
    let (head, offset) = jira_time.split_at(jira_time.len().checked_sub(5)?);
    let sign = offset.chars().next()?;
    if matches!(sign, '+' | '-') && offset[1..].chars().all(|c| c.is_ascii_digit()) {
        Some(format!("{head}{}:{}", &offset[..3], &offset[3..]))
    } else {
        Some(jira_time.to_owned())
    }
}

/// An issue, normalized: subject, what rules read, and its `updated`.
fn issue_fields(config: &Config, issue: &Value) -> (String, Map<String, Value>) {
    let key = issue.get("key").and_then(Value::as_str).unwrap_or_default();
    let fields = issue.get("fields").cloned().unwrap_or(Value::Null);
    let project = fields
        .pointer("/project/key")
        .and_then(Value::as_str)
        .or_else(|| key.split_once('-').map(|(p, _)| p));
    let item = format!("jira-issue/{key}");
    let mut data = Map::new();
    data.insert("key".into(), key.into());
    data.insert("item".into(), item.clone().into());
    data.insert("project".into(), project.into());
    data.insert(
        "title".into(),
        fields.get("summary").cloned().unwrap_or(Value::Null),
    );
    data.insert("status".into(), name(fields.get("status")));
    data.insert("issue_type".into(), name(fields.get("issuetype")));
    data.insert("priority".into(), name(fields.get("priority")));
    data.insert(
        "assignee".into(),
        fields
            .pointer("/assignee/displayName")
            .cloned()
            .unwrap_or(Value::Null),
    );
    data.insert(
        "assignee_id".into(),
        fields
            .pointer("/assignee/accountId")
            .cloned()
            .unwrap_or(Value::Null),
    );
    data.insert(
        "labels".into(),
        fields.get("labels").cloned().unwrap_or(json!([])),
    );
    let subject = match config.campaign(&fields, project) {
        Some(campaign) => match campaign_subject(&campaign) {
            Some(subject) => {
                data.insert("campaign".into(), campaign.into());
                subject
            }
            None => item,
        },
        None => item,
    };
    (subject, data)
}

/// `jira:issue_updated` -> (`issue`, `updated`); `comment_created` ->
/// (`comment`, `created`).
fn noun_verb(webhook_event: &str) -> (&str, &str) {
    let name = webhook_event.strip_prefix("jira:").unwrap_or(webhook_event);
    name.rsplit_once('_').unwrap_or((name, "received"))
}

fn source(config: &Config, body: &Value) -> String {
    if let Ok(base) = config.base_url() {
        return base.to_owned();
    }
    body.pointer("/issue/self")
        .and_then(Value::as_str)
        .and_then(|url| {
            let rest = url.split_once("://")?.1;
            let host = rest.split('/').next()?;
            Some(format!("{}://{host}", url.split_once("://")?.0))
        })
        .unwrap_or_else(|| "jira".to_owned())
}

/// Where the next poll starts: issues updated at or after `since` (Jira's
/// own `updated` value of the last issue seen), and an offset within that
/// search, above 0 only when a whole page shares one minute (JQL compares
/// dates to the minute).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cursor {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    start_at: u32,
}

/// `2024-03-01T10:15:30.000+0200` -> `2024/03/01 10:15`: the minute JQL
/// compares, in the same time zone Jira wrote it in (the API user's, which
/// is also the one JQL reads dates in).
fn jql_minute(time: &str) -> Result<String, PluginError> {
    let bytes = time.as_bytes();
    let well_formed = bytes.len() >= 16
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b' ')
        && bytes[13] == b':';
    if !well_formed {
        return Err(PluginError::InvalidInput(format!(
            "{time:?} is not a time like 2024-03-01T10:15"
        )));
    }
    Ok(format!(
        "{} {}",
        time[..10].replace('-', "/"),
        &time[11..16]
    ))
}

fn parse_cursor(config: &Config, cursor: Option<&str>) -> Result<Cursor, PluginError> {
    let first = Cursor {
        since: config.poll.since.clone(),
        start_at: 0,
    };
    connector::parse_cursor(cursor, first)
}

fn poll_url(config: &Config, cursor: &Cursor) -> Result<String, PluginError> {
    let mut clauses = Vec::new();
    if let Some(jql) = &config.poll.jql {
        clauses.push(format!("({jql})"));
    }
    if let Some(since) = &cursor.since {
        clauses.push(format!("updated >= \"{}\"", jql_minute(since)?));
    }
    let jql = format!("{} ORDER BY updated ASC, key ASC", clauses.join(" AND "));
    let mut fields = POLL_FIELDS.to_owned();
    if let Some(field) = &config.campaign.field {
        fields.push(',');
        fields.push_str(field);
    }
    let start_at = cursor.start_at.to_string();
    let page_size = config.poll.page_size.to_string();
    Ok(http::url_with_query(
        &config.api("/rest/api/3/search")?,
        &[
            ("jql", jql.trim()),
            ("startAt", &start_at),
            ("maxResults", &page_size),
            ("fields", &fields),
        ],
    ))
}

#[derive(Debug, Deserialize)]
struct SearchPage {
    #[serde(default)]
    issues: Vec<Value>,
}

fn poll_page(
    config: &Config,
    cursor: &Cursor,
    page: &SearchPage,
) -> Result<PollResult, PluginError> {
    let source = config.base_url()?.to_owned();
    let mut events = Vec::with_capacity(page.issues.len());
    let mut latest = cursor.since.clone();
    for issue in &page.issues {
        let updated = issue
            .pointer("/fields/updated")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let created = issue.pointer("/fields/created").and_then(Value::as_str);
        let (subject, mut data) = issue_fields(config, issue);
        if config.include_raw {
            data.insert("raw".into(), issue.clone());
        }
        let key = issue.get("key").and_then(Value::as_str).unwrap_or_default();
        let verb = if created == Some(updated) {
            "created"
        } else {
            "updated"
        };
        events.push(
            CloudEvent::new(
                format!("poll:{key}@{updated}"),
                &source,
                format!("jira.issue.{verb}"),
            )
            .subject(subject)
            .time_opt(rfc3339(updated))
            .data(Value::Object(data))
            .to_json(),
        );
        // Sorted by `updated`: the last issue is the latest.
        if !updated.is_empty() {
            latest = Some(updated.to_owned());
        }
    }
    let full = page.issues.len() >= config.poll.page_size as usize;
    let same_minute = match (&latest, &cursor.since) {
        (Some(latest), Some(since)) => jql_minute(latest)? == jql_minute(since)?,
        _ => false,
    };
    let next = if full && same_minute {
        Cursor {
            since: cursor.since.clone(),
            start_at: cursor.start_at + page.issues.len() as u32,
        }
    } else {
        Cursor {
            since: latest,
            start_at: 0,
        }
    };
    let cursor = serde_json::to_string(&next).expect("a cursor always serializes");
    Ok(PollResult::page(events, cursor, full))
}

/// Plain text as an Atlassian Document: one paragraph per non-empty line.
fn adf(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| json!({"type": "paragraph", "content": [{"type": "text", "text": line}]}))
        .collect();
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

fn send(
    config: &Config,
    method: Method,
    path: &str,
    body: &Value,
) -> Result<http::Response, PluginError> {
    http::send_json(method, &config.api(path)?, body, Some(&config.credential))
}

#[derive(Debug, Deserialize)]
struct Transitions {
    transitions: Vec<Transition>,
}

#[derive(Debug, Deserialize)]
struct Transition {
    id: String,
    name: String,
    #[serde(default)]
    to: Option<Value>,
}

struct Jira;

impl TaskConnector for Jira {
    type Config = Config;

    const EVENT_TYPES: &'static [&'static str] = &[
        "jira.issue.created",
        "jira.issue.updated",
        "jira.issue.deleted",
        "jira.comment.created",
        "jira.comment.updated",
        "jira.comment.deleted",
        "jira.<noun>.<verb>",
    ];

    fn decode(config: &Config, inbound: &Inbound) -> Result<Vec<CloudEvent>, PluginError> {
        let body: Value = inbound.json()?;
        let webhook_event = body
            .get("webhookEvent")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                PluginError::InvalidInput(format!(
                    "hook {}: no webhookEvent: not a Jira delivery",
                    inbound.hook
                ))
            })?;
        let (noun, verb) = noun_verb(webhook_event);
        // From the signed body, not the unsigned X-Atlassian-Webhook-Identifier:
        // a captured delivery sent again under a new identifier is the same
        // event (a duplicate), and Jira's retries carry the same body.
        let id = event_id("jira-", &[&inbound.body]);
        let (subject, mut data) = match body.get("issue") {
            Some(issue) => issue_fields(config, issue),
            None => ("jira/unknown".to_owned(), Map::new()),
        };
        let changes: Vec<Value> = body
            .pointer("/changelog/items")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|item| {
                        json!({
                            "field": item.get("field"),
                            "from": item.get("fromString"),
                            "to": item.get("toString"),
                            "from_id": item.get("from"),
                            "to_id": item.get("to"),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        data.insert("changes".into(), changes.into());
        if let Some(comment) = body.get("comment") {
            data.insert(
                "comment".into(),
                json!({
                    "id": comment.get("id"),
                    "author": comment.pointer("/author/displayName"),
                    "body": comment.get("body"),
                }),
            );
        }
        if let Some(user) = body.pointer("/user/displayName") {
            data.insert("user".into(), user.clone());
        }
        if config.include_raw {
            data.insert("raw".into(), body.clone());
        }
        let time = body
            .get("timestamp")
            .and_then(Value::as_i64)
            .and_then(rfc3339_from_millis);
        Ok(vec![
            CloudEvent::new(id, source(config, &body), format!("jira.{noun}.{verb}"))
                .subject(subject)
                .time_opt(time)
                .data(Value::Object(data)),
        ])
    }

    fn poll(config: &Config, cursor: Option<&str>) -> Result<PollResult, PluginError> {
        let cursor = parse_cursor(config, cursor)?;
        let page: SearchPage =
            http::get_json(&poll_url(config, &cursor)?, Some(&config.credential))?;
        poll_page(config, &cursor, &page)
    }

    fn execute(config: &Config, action: &Action) -> Result<ActionOutcome, PluginError> {
        match task::operation(config.action)? {
            Operation::CreateTask => {
                let project = config.project.as_deref().ok_or_else(|| {
                    PluginError::InvalidInput(
                        "plugin config: project: required to create issues".into(),
                    )
                })?;
                let text = task::text(action)?;
                let mut labels = config.labels.clone();
                if let (Some(prefix), Some(campaign)) =
                    (&config.campaign.label_prefix, task::event_campaign(action))
                {
                    labels.push(format!("{prefix}{campaign}"));
                }
                let body = json!({"fields": {
                    "project": {"key": project},
                    "summary": text.title,
                    "issuetype": {"name": config.issue_type},
                    "labels": labels,
                    "description": adf(&text.body),
                }});
                let created: Value =
                    send(config, Method::Post, "/rest/api/3/issue", &body)?.json()?;
                let key = created
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Ok(ActionOutcome::new(format!("created {key}")).with_external_id(key))
            }
            Operation::Comment => {
                let key = task::target_key(action, config.key.as_deref())?;
                let text = task::text(action)?;
                let path = format!("/rest/api/3/issue/{}/comment", percent_encode(&key));
                let created: Value = send(
                    config,
                    Method::Post,
                    &path,
                    &json!({"body": adf(&text.body)}),
                )?
                .json()?;
                let outcome = ActionOutcome::new(format!("commented on {key}"));
                Ok(match created.get("id").and_then(Value::as_str) {
                    Some(id) => outcome.with_external_id(id),
                    None => outcome,
                })
            }
            Operation::Transition => {
                let key = task::target_key(action, config.key.as_deref())?;
                let stage = task::target_stage(action, config.to.as_deref())?;
                let target = config.transitions.get(&stage).unwrap_or(&stage);
                let path = format!("/rest/api/3/issue/{}/transitions", percent_encode(&key));
                let available: Transitions =
                    http::get_json(&config.api(&path)?, Some(&config.credential))?;
                let matches = |t: &Transition| {
                    t.name.eq_ignore_ascii_case(target)
                        || t.to
                            .as_ref()
                            .and_then(|to| to.get("name"))
                            .and_then(Value::as_str)
                            .is_some_and(|status| status.eq_ignore_ascii_case(target))
                };
                let Some(transition) = available.transitions.iter().find(|t| matches(t)) else {
                    let names: Vec<&str> = available
                        .transitions
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect();
                    return Err(PluginError::Permanent(format!(
                        "{key} has no transition to {target:?} from its status; available: {}",
                        names.join(", ")
                    )));
                };
                send(
                    config,
                    Method::Post,
                    &path,
                    &json!({"transition": {"id": transition.id}}),
                )?;
                Ok(ActionOutcome::new(format!("moved {key} to {target}")).with_external_id(key))
            }
            Operation::Assign => {
                let key = task::target_key(action, config.key.as_deref())?;
                let account = task::assignee(action, config.assignee.as_deref(), &config.users)?;
                let path = format!("/rest/api/3/issue/{}/assignee", percent_encode(&key));
                send(config, Method::Put, &path, &json!({"accountId": account}))?;
                Ok(
                    ActionOutcome::new(format!("assigned {key} to {account}"))
                        .with_external_id(key),
                )
            }
        }
    }
}

converge_plugin_sdk::export_connector_plugin!(Jira);

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_UPDATED: &str = include_str!(
        "../../../tests/fixtures/webhooks/jira/jira_issue_updated.with_changelog_and_comment.json"
    );

    fn config(json: Value) -> Config {
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn delivery(headers: &[(&str, &str)]) -> Inbound {
        Inbound {
            hook: "jira".into(),
            method: "POST".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).into(), (*v).into()))
                .collect(),
            body: ISSUE_UPDATED.as_bytes().to_vec(),
        }
    }

    fn decode_one(config: &Config, inbound: &Inbound) -> Value {
        let events = Jira::decode(config, inbound).unwrap();
        assert_eq!(events.len(), 1);
        events[0].to_value()
    }

    #[test]
    fn an_issue_update_carries_its_changelog_and_comment() {
        let inbound = delivery(&[("X-Atlassian-Webhook-Identifier", "wh-77")]);
        let event = decode_one(&config(json!({})), &inbound);
        assert_eq!(event["type"], "jira.issue.updated");
        // The id is the body's, whatever the unsigned identifier header says.
        assert_eq!(event["id"], event_id("jira-", &[&inbound.body]));
        let replayed = delivery(&[("X-Atlassian-Webhook-Identifier", "wh-78")]);
        assert_eq!(decode_one(&config(json!({})), &replayed)["id"], event["id"]);
        assert_eq!(event["source"], "https://jira.atlassian.com");
        assert_eq!(event["subject"], "jira-issue/JRA-20002");
        assert_eq!(event["time"], "2018-05-07T13:03:57.764Z");
        let data = &event["data"];
        assert_eq!(data["key"], "JRA-20002");
        assert_eq!(data["title"], "I feel the need for speed");
        assert_eq!(data["priority"], "Minor");
        assert_eq!(data["project"], "JRA");
        assert_eq!(data["user"], "Bryan Rollins [Atlassian]");
        assert_eq!(
            data["changes"],
            json!([
                {"field": "summary", "from": "What is going on here?????", "to": "A new summary.", "from_id": null, "to_id": null},
                {"field": "issuetype", "from": "Improvement", "to": "New Feature", "from_id": "4", "to_id": "2"},
            ])
        );
        assert_eq!(data["comment"]["body"], "Just in time for AtlasCamp!");
        assert_eq!(data["raw"]["webhookEvent"], "jira:issue_updated");
    }

    #[test]
    fn the_campaign_comes_from_a_label_the_custom_field_or_the_project() {
        let by_label =
            config(json!({"campaign": {"label_prefix": "mo", "projects": {"JRA": "jira-work"}}}));
        // The fixture's labels are UI, dialogue and move: prefix `mo` -> `ve`.
        assert_eq!(
            decode_one(&by_label, &delivery(&[]))["subject"],
            "campaign/ve"
        );
        let by_project = config(
            json!({"campaign": {"label_prefix": "campaign:", "projects": {"JRA": "jira-work"}}}),
        );
        let event = decode_one(&by_project, &delivery(&[]));
        assert_eq!(event["subject"], "campaign/jira-work");
        assert_eq!(event["data"]["campaign"], "jira-work");
        assert_eq!(event["data"]["item"], "jira-issue/JRA-20002");

        let fields = json!({"customfield_1": {"value": "Spring Launch"}, "labels": []});
        let by_field = config(json!({"campaign": {"field": "customfield_1"}}));
        assert_eq!(
            by_field.campaign(&fields, None).as_deref(),
            Some("Spring Launch")
        );
        assert_eq!(
            field_text(&json!(["", {"name": "x"}])).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn without_a_webhook_identifier_the_id_is_a_hash_of_the_body() {
        let first = decode_one(
            &config(json!({"base_url": "https://acme.atlassian.net/"})),
            &delivery(&[]),
        );
        assert!(first["id"].as_str().unwrap().starts_with("jira-"));
        assert_eq!(first["source"], "https://acme.atlassian.net");
        let again = decode_one(
            &config(json!({"base_url": "https://acme.atlassian.net"})),
            &delivery(&[]),
        );
        assert_eq!(first["id"], again["id"]);
    }

    #[test]
    fn event_names_become_noun_and_verb() {
        assert_eq!(noun_verb("jira:issue_created"), ("issue", "created"));
        assert_eq!(noun_verb("comment_deleted"), ("comment", "deleted"));
        assert_eq!(noun_verb("jira:worklog_updated"), ("worklog", "updated"));
        assert_eq!(noun_verb("board"), ("board", "received"));
    }

    #[test]
    fn a_body_that_is_not_a_jira_event_is_invalid_input() {
        let mut inbound = delivery(&[]);
        inbound.body = br#"{"hello": 1}"#.to_vec();
        assert!(
            matches!(Jira::decode(&config(json!({})), &inbound), Err(PluginError::InvalidInput(m)) if m.contains("webhookEvent"))
        );
    }

    #[test]
    fn times_become_rfc3339() {
        assert_eq!(
            rfc3339("2009-12-16T23:46:10.612-0600").as_deref(),
            Some("2009-12-16T23:46:10.612-06:00")
        );
        assert_eq!(
            jql_minute("2024-03-01T10:15:30.000+0200").unwrap(),
            "2024/03/01 10:15"
        );
        assert!(jql_minute("yesterday").is_err());
    }

    fn issue(key: &str, updated: &str) -> Value {
        json!({"key": key, "fields": {
            "summary": format!("{key} summary"),
            "status": {"name": "In Progress"},
            "assignee": {"displayName": "Ana", "accountId": "acc-1"},
            "labels": [],
            "created": "2024-03-01T09:00:00.000+0000",
            "updated": updated,
        }})
    }

    #[test]
    fn polls_search_after_the_last_update_in_jql_order() {
        let config = config(json!({
            "base_url": "https://acme.atlassian.net",
            "poll": {"jql": "project = MOPS", "page_size": 2, "since": "2024-03-01T00:00"},
        }));
        let cursor = parse_cursor(&config, None).unwrap();
        let url = poll_url(&config, &cursor).unwrap();
        assert!(url.starts_with("https://acme.atlassian.net/rest/api/3/search?jql=%28project%20%3D%20MOPS%29%20AND%20updated%20%3E%3D%20%222024%2F03%2F01%2000%3A00%22%20ORDER%20BY%20updated%20ASC%2C%20key%20ASC&startAt=0&maxResults=2"), "{url}");
        let page = SearchPage {
            issues: vec![
                issue("MOPS-1", "2024-03-01T09:00:00.000+0000"),
                issue("MOPS-2", "2024-03-01T10:30:00.000+0000"),
            ],
        };
        let result = poll_page(&config, &cursor, &page).unwrap();
        assert!(result.more);
        let events: Vec<Value> = result
            .events
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(events[0]["type"], "jira.issue.created");
        assert_eq!(events[1]["type"], "jira.issue.updated");
        assert_eq!(events[1]["data"]["status"], "In Progress");
        assert_eq!(events[1]["data"]["assignee_id"], "acc-1");
        assert_eq!(events[1]["time"], "2024-03-01T10:30:00.000+00:00");
        let next = parse_cursor(&config, result.cursor.as_deref()).unwrap();
        assert_eq!(
            next,
            Cursor {
                since: Some("2024-03-01T10:30:00.000+0000".into()),
                start_at: 0
            }
        );

        // A full page within one minute moves on by offset.
        let same = SearchPage {
            issues: vec![
                issue("MOPS-2", "2024-03-01T10:30:00.000+0000"),
                issue("MOPS-3", "2024-03-01T10:30:59.000+0000"),
            ],
        };
        let result = poll_page(&config, &next, &same).unwrap();
        let next = parse_cursor(&config, result.cursor.as_deref()).unwrap();
        assert_eq!(next.start_at, 2);
    }

    #[test]
    fn descriptions_are_atlassian_documents() {
        assert_eq!(
            adf("a\n\nb"),
            json!({"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": "a"}]},
                {"type": "paragraph", "content": [{"type": "text", "text": "b"}]},
            ]})
        );
    }
}
