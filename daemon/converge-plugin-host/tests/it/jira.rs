//! The `jira` connector in the host: the real delivery decoded, a JQL
//! search polled page by page through a 429 and a 503, and issue actions
//! with the host-injected credential.

use std::time::Duration;

use converge_plugin_host::{
    ActionInput, CallFailure, DecodeInput, Plugin, PluginLimits, PollInput,
};
use serde_json::{Value, json};

use crate::support::{Reply, Sink, fixture, grants_with, host, load, spec};

const AUTH: &str = "Basic amlyYS10ZXN0";

async fn jira(api: &Sink) -> Plugin {
    let grants = grants_with(api, "jira", "authorization", AUTH);
    load(&host(), spec("jira", grants, PluginLimits::default())).await
}

fn events(json: &[String]) -> Vec<Value> {
    json.iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn issue(key: &str, updated: &str, labels: &[&str]) -> Value {
    json!({"key": key, "fields": {
        "summary": format!("{key} summary"),
        "status": {"name": "In Review"},
        "assignee": {"displayName": "Ana", "accountId": "acc-ana"},
        "labels": labels,
        "project": {"key": "MOPS"},
        "created": "2024-03-01T09:00:00.000+0000",
        "updated": updated,
    }})
}

#[tokio::test(flavor = "multi_thread")]
async fn decodes_the_documented_issue_update() {
    let api = Sink::answering(|_, _| Reply::status(404, "")).await;
    let plugin = jira(&api).await;
    let input = DecodeInput {
        hook: "jira".into(),
        method: "POST".into(),
        headers: vec![("X-Atlassian-Webhook-Identifier".into(), "wh-1".into())],
        body: fixture("jira", "jira_issue_updated.with_changelog_and_comment.json"),
    };
    let config = json!({"campaign": {"projects": {"JRA": "speed"}}}).to_string();
    let decoded = events(&plugin.decode(input, &config).await.unwrap());
    assert_eq!(decoded.len(), 1);
    assert_eq!(decoded[0]["type"], "jira.issue.updated");
    // The signed body's digest, not the unsigned identifier header.
    assert!(decoded[0]["id"].as_str().unwrap().starts_with("jira-"));
    assert_eq!(decoded[0]["subject"], "campaign/speed");
    assert_eq!(decoded[0]["data"]["changes"][1]["to"], "New Feature");
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_the_search_page_by_page_through_a_429_and_a_503() {
    let api = Sink::answering(|request, before| {
        assert_eq!(request.path, "/rest/api/3/search");
        match before {
            0 => Reply::json(
                json!({"startAt": 0, "maxResults": 2, "total": 3, "issues": [
                    issue("MOPS-1", "2024-03-01T09:00:00.000+0000", &["campaign:spring"]),
                    issue("MOPS-2", "2024-03-01T10:30:00.000+0000", &[]),
                ]}),
            ),
            1 => Reply::status(429, "").header("retry-after", "3"),
            2 => Reply::status(503, "maintenance"),
            _ => Reply::json(
                json!({"startAt": 0, "maxResults": 2, "total": 1, "issues": [
                    issue("MOPS-3", "2024-03-01T11:00:00.000+0000", &[]),
                ]}),
            ),
        }
    })
    .await;
    let plugin = jira(&api).await;
    let config = json!({
        "base_url": api.url(""),
        "campaign": {"label_prefix": "campaign:"},
        "poll": {"jql": "project = MOPS", "page_size": 2},
    })
    .to_string();

    let first = plugin
        .poll(PollInput { cursor: None }, &config)
        .await
        .unwrap();
    assert!(first.more);
    let polled = events(&first.events);
    assert_eq!(polled[0]["subject"], "campaign/spring");
    assert_eq!(polled[0]["type"], "jira.issue.created");
    assert_eq!(polled[1]["subject"], "jira-issue/MOPS-2");
    assert_eq!(polled[1]["data"]["status"], "In Review");

    let cursor = first.cursor;
    let limited = plugin
        .poll(
            PollInput {
                cursor: cursor.clone(),
            },
            &config,
        )
        .await
        .unwrap_err();
    assert_eq!(
        limited,
        CallFailure::RateLimited(Some(Duration::from_secs(3)))
    );
    let unavailable = plugin
        .poll(
            PollInput {
                cursor: cursor.clone(),
            },
            &config,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&unavailable, CallFailure::Transient(m) if m.contains("503")),
        "{unavailable:?}"
    );
    let last = plugin.poll(PollInput { cursor }, &config).await.unwrap();
    assert!(!last.more);
    assert_eq!(events(&last.events)[0]["data"]["key"], "MOPS-3");

    let seen = api.received();
    assert_eq!(
        seen[0].param("jql").as_deref(),
        Some("(project = MOPS) ORDER BY updated ASC, key ASC")
    );
    assert_eq!(
        seen[3].param("jql").as_deref(),
        Some("(project = MOPS) AND updated >= \"2024/03/01 10:30\" ORDER BY updated ASC, key ASC")
    );
    assert!(seen.iter().all(|s| s.headers["authorization"] == AUTH));
}

fn action(kind: &str, decision: Value) -> ActionInput {
    ActionInput {
        id: format!("converge-action-{kind}"),
        kind: kind.into(),
        rule: "launch_readiness".into(),
        decision_json: decision.to_string(),
        event_json: json!({"id": "e-9", "subject": "campaign/spring", "data": {"key": "MOPS-7"}})
            .to_string(),
        entity_json: "null".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_comments_transitions_and_assigns() {
    let api =
        Sink::answering(
            |request, _| match (request.method.as_str(), request.path.as_str()) {
                ("POST", "/rest/api/3/issue") => {
                    Reply::json(json!({"id": "10001", "key": "MOPS-42"}))
                }
                ("POST", "/rest/api/3/issue/MOPS-7/comment") => Reply::json(json!({"id": "5001"})),
                ("GET", "/rest/api/3/issue/MOPS-7/transitions") => {
                    Reply::json(json!({"transitions": [
                        {"id": "11", "name": "Start", "to": {"name": "In Progress"}},
                        {"id": "31", "name": "Approve", "to": {"name": "Approved"}},
                    ]}))
                }
                ("POST", "/rest/api/3/issue/MOPS-7/transitions") => Reply::status(204, ""),
                ("PUT", "/rest/api/3/issue/MOPS-7/assignee") => Reply::status(204, ""),
                _ => Reply::status(404, "no such route"),
            },
        )
        .await;
    let plugin = jira(&api).await;
    let config = |extra: Value| {
        let mut config = json!({"base_url": api.url(""), "project": "MOPS", "campaign": {"label_prefix": "campaign:"}});
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        config.to_string()
    };
    let escalate = json!({"kind": "escalate", "to": "ops", "reason": "brief missing", "level": 1});

    let created = plugin
        .execute(
            action("escalate", escalate.clone()),
            &config(json!({"action": "create_task"})),
        )
        .await
        .unwrap();
    assert_eq!(created.external_id.as_deref(), Some("MOPS-42"));
    let commented = plugin
        .execute(
            action("escalate", escalate),
            &config(json!({"action": "comment"})),
        )
        .await
        .unwrap();
    assert_eq!(commented.external_id.as_deref(), Some("5001"));
    plugin
        .execute(
            action(
                "set_stage",
                json!({"kind": "set_stage", "stage": "approved"}),
            ),
            &config(json!({"action": "transition"})),
        )
        .await
        .unwrap();
    plugin
        .execute(
            action(
                "assign_owner",
                json!({"kind": "assign_owner", "owner": "ana"}),
            ),
            &config(json!({"action": "assign", "users": {"ana": "acc-ana"}})),
        )
        .await
        .unwrap();
    let missing = plugin
        .execute(
            action(
                "set_stage",
                json!({"kind": "set_stage", "stage": "launched"}),
            ),
            &config(json!({"action": "transition"})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, CallFailure::Permanent(m) if m.contains("Start, Approve")),
        "{missing:?}"
    );

    let seen = api.received();
    let calls: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            "POST /rest/api/3/issue",
            "POST /rest/api/3/issue/MOPS-7/comment",
            "GET /rest/api/3/issue/MOPS-7/transitions",
            "POST /rest/api/3/issue/MOPS-7/transitions",
            "PUT /rest/api/3/issue/MOPS-7/assignee",
            "GET /rest/api/3/issue/MOPS-7/transitions",
        ]
    );
    assert!(seen.iter().all(|s| s.headers["authorization"] == AUTH));
    let fields = &seen[0].json()["fields"];
    assert_eq!(fields["project"], json!({"key": "MOPS"}));
    assert_eq!(fields["issuetype"], json!({"name": "Task"}));
    assert_eq!(fields["labels"], json!(["campaign:spring"]));
    assert_eq!(
        fields["summary"],
        "Escalation (level 1) to ops: brief missing (campaign/spring)"
    );
    assert_eq!(fields["description"]["type"], "doc");
    assert_eq!(
        seen[1].json()["body"]["content"][0]["content"][0]["text"],
        "Escalation (level 1) to ops: brief missing"
    );
    assert_eq!(seen[3].json(), json!({"transition": {"id": "31"}}));
    assert_eq!(seen[4].json(), json!({"accountId": "acc-ana"}));
}
