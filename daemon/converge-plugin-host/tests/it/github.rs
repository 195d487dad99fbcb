//! The `github` connector in the host: decoding real deliveries, polling a
//! fake REST API page by page through 429s and 5xx, and acting on issues
//! with the host-injected token.

use std::time::Duration;

use converge_plugin_host::{
    ActionInput, CallFailure, DecodeInput, Plugin, PluginLimits, PollInput,
};
use serde_json::{Value, json};

use crate::support::{Reply, Sink, fixture, grants_with, host, load, spec};

async fn github(api: &Sink) -> Plugin {
    let grants = grants_with(api, "github", "authorization", "Bearer ghp-test");
    load(&host(), spec("github", grants, PluginLimits::default())).await
}

fn events(json: &[String]) -> Vec<Value> {
    json.iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn issue(number: u64, updated: &str, labels: &[&str]) -> Value {
    json!({
        "number": number,
        "title": format!("Issue {number}"),
        "state": "open",
        "html_url": format!("https://github.com/acme/launch/issues/{number}"),
        "created_at": "2024-03-01T09:00:00Z",
        "updated_at": updated,
        "closed_at": null,
        "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
        "assignee": {"login": "ana"},
        "assignees": [{"login": "ana"}],
        "user": {"login": "bo"},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connector_plugin_loads_as_one_and_describes_what_it_does() {
    let api = Sink::answering(|_, _| Reply::status(404, "")).await;
    let plugin = github(&api).await;
    assert_eq!(plugin.info().name, "github");
    assert!(plugin.info().api_version.starts_with("0.1"));
    let connector = plugin.connector().expect("a connector plugin");
    assert!(connector.decodes && connector.polls);
    assert_eq!(
        connector.actions,
        ["create_task", "comment", "transition", "assign"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn decodes_a_real_delivery_into_a_campaign_event() {
    let api = Sink::answering(|_, _| Reply::status(404, "")).await;
    let plugin = github(&api).await;
    let input = DecodeInput {
        hook: "github".into(),
        method: "POST".into(),
        headers: vec![
            ("X-GitHub-Event".into(), "issues".into()),
            ("X-GitHub-Delivery".into(), "d-1".into()),
        ],
        body: fixture("github", "issues.labeled.json"),
    };
    let config = json!({"campaign": {"repositories": {"Codertocat/Hello-World": "spring-launch"}}});
    let decoded = plugin
        .decode(input.clone(), &config.to_string())
        .await
        .unwrap();
    let decoded = events(&decoded);
    assert_eq!(decoded.len(), 1);
    assert_eq!(decoded[0]["type"], "github.issue.labeled");
    // The signed body's digest, not the unsigned delivery header.
    assert!(decoded[0]["id"].as_str().unwrap().starts_with("github-"));
    assert_eq!(decoded[0]["subject"], "campaign/spring-launch");
    assert_eq!(decoded[0]["data"]["key"], "Codertocat/Hello-World#1");

    let failure = plugin
        .decode(
            DecodeInput {
                headers: vec![],
                ..input
            },
            "{}",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&failure, CallFailure::InvalidInput(m) if m.contains("X-GitHub-Event")),
        "{failure:?}"
    );
    assert!(api.received().is_empty(), "decoding makes no request");
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_page_by_page_through_a_429_and_a_5xx() {
    // Page 1 (two issues), then a 429, then a 502, then the last page.
    let api = Sink::answering(|request, before| match before {
        0 => Reply::json(json!([
            issue(1, "2024-03-01T10:00:00Z", &["campaign:spring"]),
            issue(2, "2024-03-01T11:00:00Z", &[]),
        ])),
        1 => Reply::status(429, "slow down").header("retry-after", "7"),
        2 => Reply::status(502, "bad gateway"),
        _ => {
            assert_eq!(
                request.param("since").as_deref(),
                Some("2024-03-01T11:00:00Z")
            );
            Reply::json(json!([issue(2, "2024-03-01T11:00:00Z", &[]),]))
        }
    })
    .await;
    let plugin = github(&api).await;
    let config = json!({
        "api_url": api.url(""),
        "repository": "acme/launch",
        "campaign": {"label_prefix": "campaign:"},
        "poll": {"per_page": 2, "since": "2024-03-01T00:00:00Z"},
    })
    .to_string();

    let page = plugin
        .poll(PollInput { cursor: None }, &config)
        .await
        .unwrap();
    assert!(page.more);
    let polled = events(&page.events);
    assert_eq!(polled.len(), 2);
    assert_eq!(polled[0]["subject"], "campaign/spring");
    assert_eq!(polled[0]["type"], "github.issue.updated");
    assert_eq!(polled[1]["subject"], "github-issue/acme/launch#2");
    let cursor = page.cursor.clone();

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
        CallFailure::RateLimited(Some(Duration::from_secs(7)))
    );
    let failed = plugin
        .poll(
            PollInput {
                cursor: cursor.clone(),
            },
            &config,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&failed, CallFailure::Transient(m) if m.contains("502")),
        "{failed:?}"
    );
    assert!(failed.retryable());

    let last = plugin.poll(PollInput { cursor }, &config).await.unwrap();
    assert!(!last.more);
    assert_eq!(
        events(&last.events)[0]["id"],
        polled[1]["id"],
        "the same change keeps its id"
    );

    let seen = api.received();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.path == "/repos/acme/launch/issues"));
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == "Bearer ghp-test")
    );
    assert_eq!(
        seen[0].param("since").as_deref(),
        Some("2024-03-01T00:00:00Z")
    );
    assert_eq!(seen[0].param("sort").as_deref(), Some("updated"));
}

fn action(id: &str, kind: &str, decision: Value, event: Value) -> ActionInput {
    ActionInput {
        id: id.into(),
        kind: kind.into(),
        rule: "required_fields".into(),
        decision_json: decision.to_string(),
        event_json: event.to_string(),
        entity_json: "null".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn performs_each_action_with_the_host_token() {
    let api = Sink::answering(|request, _| match request.path.as_str() {
        "/repos/acme/launch/issues" => Reply::json(json!({"number": 42})),
        "/repos/acme/launch/issues/7/comments" => Reply::json(json!({"id": 901})),
        _ => Reply::json(json!({})),
    })
    .await;
    let plugin = github(&api).await;
    let base = json!({"api_url": api.url(""), "repository": "acme/launch", "campaign": {"label_prefix": "campaign:"}});
    let with = |extra: Value| {
        let mut config = base.clone();
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        config.to_string()
    };
    let escalation = action(
        "converge-action-1",
        "escalate",
        json!({"kind": "escalate", "to": "ops", "reason": "no brief", "level": 1}),
        json!({"id": "e-1", "subject": "campaign/spring", "data": {"key": "acme/launch#7"}}),
    );

    let done = plugin
        .execute(
            escalation.clone(),
            &with(json!({"action": "create_task", "labels": ["exception"]})),
        )
        .await
        .unwrap();
    assert_eq!(done.external_id.as_deref(), Some("acme/launch#42"));
    let done = plugin
        .execute(escalation.clone(), &with(json!({"action": "comment"})))
        .await
        .unwrap();
    assert_eq!(done.external_id.as_deref(), Some("901"));
    let stage = action(
        "converge-action-2",
        "set_stage",
        json!({"kind": "set_stage", "stage": "done"}),
        json!({"data": {"key": "acme/launch#7"}}),
    );
    plugin
        .execute(
            stage,
            &with(json!({"action": "transition", "states": {"done": "closed"}})),
        )
        .await
        .unwrap();
    let owner = action(
        "converge-action-3",
        "assign_owner",
        json!({"kind": "assign_owner", "owner": "ana"}),
        json!({"data": {"key": "acme/launch#7"}}),
    );
    plugin
        .execute(
            owner,
            &with(json!({"action": "assign", "users": {"ana": "ana-gh"}})),
        )
        .await
        .unwrap();

    let seen = api.received();
    let calls: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.method.to_string(), s.path.clone()))
        .collect();
    assert_eq!(
        calls,
        [
            ("POST".into(), "/repos/acme/launch/issues".into()),
            ("POST".into(), "/repos/acme/launch/issues/7/comments".into()),
            ("PATCH".into(), "/repos/acme/launch/issues/7".into()),
            (
                "POST".into(),
                "/repos/acme/launch/issues/7/assignees".into()
            ),
        ]
    );
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == "Bearer ghp-test")
    );
    let created = seen[0].json();
    assert_eq!(
        created["title"],
        "Escalation (level 1) to ops: no brief (campaign/spring)"
    );
    assert_eq!(created["labels"], json!(["exception", "campaign:spring"]));
    assert!(
        created["body"]
            .as_str()
            .unwrap()
            .contains("Action: converge-action-1")
    );
    assert!(
        seen[1].json()["body"]
            .as_str()
            .unwrap()
            .starts_with("Escalation (level 1)")
    );
    assert_eq!(seen[2].json(), json!({"state": "closed"}));
    assert_eq!(seen[3].json(), json!({"assignees": ["ana-gh"]}));
    assert!(
        seen.iter()
            .all(|s| !String::from_utf8_lossy(&s.bytes).contains("ghp-test"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn action_plugins_have_no_decode_or_poll() {
    let api = Sink::answering(|_, _| Reply::status(404, "")).await;
    let grants = grants_with(&api, "x", "authorization", "y");
    let plugin = load(
        &host(),
        spec("webhook_out", grants, PluginLimits::default()),
    )
    .await;
    assert!(plugin.connector().is_none());
    let failure = plugin.poll(PollInput::default(), "{}").await.unwrap_err();
    assert!(
        matches!(&failure, CallFailure::InvalidInput(m) if m.contains("action plugin")),
        "{failure:?}"
    );
    assert!(!failure.retryable());
}
