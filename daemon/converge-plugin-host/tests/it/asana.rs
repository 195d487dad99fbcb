//! The `asana` connector in the host: the handshake, the events API's sync
//! tokens (412 first, then pages) through a 429 and a 500, and task actions
//! with the host-injected token.

use std::time::Duration;

use converge_plugin_host::{
    ActionInput, CallFailure, DecodeInput, Plugin, PluginLimits, PollInput,
};
use serde_json::{Value, json};

use crate::support::{Reply, Sink, grants_with, host, load, spec};

async fn asana(api: &Sink) -> Plugin {
    let grants = grants_with(api, "asana", "authorization", "Bearer asana-test");
    load(&host(), spec("asana", grants, PluginLimits::default())).await
}

fn events(json: &[String]) -> Vec<Value> {
    json.iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn changed(gid: &str) -> Value {
    json!({
        "user": {"gid": "12345", "resource_type": "user", "name": "Ana"},
        "resource": {"gid": gid, "resource_type": "task", "name": format!("Task {gid}")},
        "action": "changed",
        "parent": null,
        "created_at": "2024-03-01T10:00:00.000Z",
        "change": {"field": "completed", "action": "changed"},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handshake_decodes_to_nothing() {
    let api = Sink::answering(|_, _| Reply::status(404, "")).await;
    let plugin = asana(&api).await;
    let input = DecodeInput {
        hook: "asana".into(),
        method: "POST".into(),
        headers: vec![(
            "X-Hook-Secret".into(),
            "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81".into(),
        )],
        body: Vec::new(),
    };
    assert!(plugin.decode(input, "{}").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_events_with_sync_tokens_through_a_429_and_a_500() {
    let api = Sink::answering(|request, before| {
        assert_eq!(request.path, "/api/1.0/events");
        assert_eq!(request.param("resource").as_deref(), Some("8675309"));
        match (before, request.param("sync").as_deref()) {
            (0, None) => Reply::status(
                412,
                r#"{"errors":[{"message":"Sync token invalid or too old"}],"sync":"s1"}"#,
            ),
            (1, Some("s1")) => Reply::json(
                json!({"data": [changed("1"), changed("2")], "sync": "s2", "has_more": true}),
            ),
            (2, Some("s2")) => Reply::status(429, "").header("retry-after", "30"),
            (3, Some("s2")) => Reply::status(500, "server error"),
            (4, Some("s2")) => {
                Reply::json(json!({"data": [changed("3")], "sync": "s3", "has_more": false}))
            }
            other => panic!("unexpected request {other:?}"),
        }
    })
    .await;
    let plugin = asana(&api).await;
    let config = json!({
        "api_url": api.url("/api/1.0"),
        "poll": {"projects": ["8675309"]},
        "campaign": {"projects": {"8675309": "spring"}},
    })
    .to_string();

    let first = plugin
        .poll(PollInput { cursor: None }, &config)
        .await
        .unwrap();
    assert!(first.events.is_empty() && !first.more);
    let second = plugin
        .poll(
            PollInput {
                cursor: first.cursor,
            },
            &config,
        )
        .await
        .unwrap();
    assert!(second.more);
    let polled = events(&second.events);
    assert_eq!(polled.len(), 2);
    assert_eq!(polled[0]["type"], "asana.task.changed");
    assert_eq!(polled[0]["subject"], "campaign/spring");
    assert_eq!(polled[1]["data"]["key"], "2");
    let cursor = second.cursor;
    assert_eq!(
        plugin
            .poll(
                PollInput {
                    cursor: cursor.clone()
                },
                &config
            )
            .await
            .unwrap_err(),
        CallFailure::RateLimited(Some(Duration::from_secs(30)))
    );
    assert!(matches!(
        plugin
            .poll(
                PollInput {
                    cursor: cursor.clone()
                },
                &config
            )
            .await
            .unwrap_err(),
        CallFailure::Transient(_)
    ));
    let last = plugin.poll(PollInput { cursor }, &config).await.unwrap();
    assert!(!last.more);
    assert_eq!(last.cursor.as_deref(), Some(r#"{"sync":{"8675309":"s3"}}"#));
    assert!(
        api.received()
            .iter()
            .all(|s| s.headers["authorization"] == "Bearer asana-test")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_comments_moves_and_assigns_tasks() {
    let api = Sink::answering(|request, _| match request.path.as_str() {
        "/api/1.0/tasks" => Reply::json(json!({"data": {"gid": "999"}})),
        "/api/1.0/tasks/42/stories" => Reply::json(json!({"data": {"gid": "s-1"}})),
        _ => Reply::json(json!({"data": {}})),
    })
    .await;
    let plugin = asana(&api).await;
    let config = |extra: Value| {
        let mut config = json!({"api_url": api.url("/api/1.0"), "project": "8675309", "sections": {"review": "sec-review"}});
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        config.to_string()
    };
    let action = |kind: &str, decision: Value| ActionInput {
        id: "converge-action-9".into(),
        kind: kind.into(),
        rule: "required_fields".into(),
        decision_json: decision.to_string(),
        event_json: json!({"id": "e1", "subject": "asana-task/42", "data": {"key": "42"}})
            .to_string(),
        entity_json: "null".into(),
    };
    let escalate = json!({"kind": "escalate", "to": "ops", "reason": "no deadline", "level": 1});
    let created = plugin
        .execute(
            action("escalate", escalate.clone()),
            &config(json!({"action": "create_task"})),
        )
        .await
        .unwrap();
    assert_eq!(created.external_id.as_deref(), Some("999"));
    plugin
        .execute(
            action("escalate", escalate),
            &config(json!({"action": "comment"})),
        )
        .await
        .unwrap();
    plugin
        .execute(
            action("set_stage", json!({"stage": "review"})),
            &config(json!({"action": "transition"})),
        )
        .await
        .unwrap();
    plugin
        .execute(
            action("assign_owner", json!({"owner": "ana"})),
            &config(json!({"action": "assign", "users": {"ana": "ana@example.com"}})),
        )
        .await
        .unwrap();

    let seen = api.received();
    let calls: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            "POST /api/1.0/tasks",
            "POST /api/1.0/tasks/42/stories",
            "POST /api/1.0/sections/sec-review/addTask",
            "PUT /api/1.0/tasks/42",
        ]
    );
    assert_eq!(seen[0].json()["data"]["projects"], json!(["8675309"]));
    assert_eq!(
        seen[0].json()["data"]["name"],
        "Escalation (level 1) to ops: no deadline (asana-task/42)"
    );
    assert_eq!(seen[2].json(), json!({"data": {"task": "42"}}));
    assert_eq!(
        seen[3].json(),
        json!({"data": {"assignee": "ana@example.com"}})
    );
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == "Bearer asana-test")
    );
}
