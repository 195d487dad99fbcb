//! The `trello` connector in the host: the captured envelope decoded, a
//! board's actions polled backwards through a 429 and a 500, and card
//! actions with the host-injected OAuth header.

use std::time::Duration;

use converge_plugin_host::{
    ActionInput, CallFailure, DecodeInput, Plugin, PluginLimits, PollInput,
};
use serde_json::{Value, json};

use crate::support::{Reply, Sink, fixture, grants_with, host, load, spec};

const AUTH: &str = r#"OAuth oauth_consumer_key="k", oauth_token="t""#;

async fn trello(api: &Sink) -> Plugin {
    let grants = grants_with(api, "trello", "authorization", AUTH);
    load(&host(), spec("trello", grants, PluginLimits::default())).await
}

fn events(json: &[String]) -> Vec<Value> {
    json.iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn card_moved(id: &str) -> Value {
    let mut action: Value =
        serde_json::from_slice(&fixture("trello", "action.updateCard.moved_list.json")).unwrap();
    action["id"] = id.into();
    action
}

#[tokio::test(flavor = "multi_thread")]
async fn decodes_the_full_envelope() {
    let api = Sink::answering(|_, _| Reply::status(404, "")).await;
    let plugin = trello(&api).await;
    let input = DecodeInput {
        hook: "trello".into(),
        method: "POST".into(),
        headers: vec![],
        body: fixture("trello", "envelope.copyChecklist.full_body.json"),
    };
    let config =
        json!({"campaign": {"boards": {"597f3c854baa6e43db4f07d7": "testing"}}}).to_string();
    let decoded = events(&plugin.decode(input, &config).await.unwrap());
    assert_eq!(decoded[0]["type"], "trello.checklist.copied");
    assert_eq!(decoded[0]["subject"], "campaign/testing");
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_a_board_backwards_through_a_429_and_a_500() {
    let api = Sink::answering(|request, before| {
        assert_eq!(request.path, "/1/boards/b1/actions");
        match before {
            0 => Reply::json(json!([card_moved("a3"), card_moved("a2")])),
            1 => Reply::status(429, "").header("retry-after", "10"),
            2 => Reply::status(500, "oops"),
            _ => Reply::json(json!([card_moved("a1")])),
        }
    })
    .await;
    let plugin = trello(&api).await;
    let config = json!({"api_url": api.url("/1"), "board": "b1", "poll": {"limit": 2}}).to_string();

    let first = plugin
        .poll(PollInput { cursor: None }, &config)
        .await
        .unwrap();
    assert!(first.more);
    let ids: Vec<Value> = events(&first.events)
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, ["a2", "a3"]);
    assert_eq!(events(&first.events)[0]["type"], "trello.card.moved");
    let cursor = first.cursor;
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
        CallFailure::RateLimited(Some(Duration::from_secs(10)))
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

    let seen = api.received();
    assert_eq!(seen[0].param("before"), None);
    assert_eq!(seen[3].param("before").as_deref(), Some("a2"));
    assert!(seen.iter().all(|s| s.headers["authorization"] == AUTH));
}

#[tokio::test(flavor = "multi_thread")]
async fn moves_creates_comments_and_assigns_cards() {
    let api =
        Sink::answering(
            |request, _| match (request.method.as_str(), request.path.as_str()) {
                ("POST", "/1/cards") => Reply::json(json!({"id": "new-card"})),
                ("POST", "/1/cards/c1/actions/comments") => Reply::json(json!({"id": "comment-1"})),
                _ => Reply::json(json!({})),
            },
        )
        .await;
    let plugin = trello(&api).await;
    let config = |extra: Value| {
        let mut config =
            json!({"api_url": api.url("/1"), "list": "l-inbox", "lists": {"review": "l-review"}});
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        config.to_string()
    };
    let action = |kind: &str, decision: Value| ActionInput {
        id: "converge-action-5".into(),
        kind: kind.into(),
        rule: "stalled_handoff".into(),
        decision_json: decision.to_string(),
        event_json: json!({"id": "e1", "data": {"key": "c1"}}).to_string(),
        entity_json: "null".into(),
    };
    let notify = json!({"kind": "notify", "to": "ana", "message": "card stalled"});
    let created = plugin
        .execute(
            action("notify", notify.clone()),
            &config(json!({"action": "create_task"})),
        )
        .await
        .unwrap();
    assert_eq!(created.external_id.as_deref(), Some("new-card"));
    plugin
        .execute(
            action("notify", notify),
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
            &config(json!({"action": "assign", "users": {"ana": "m-ana"}})),
        )
        .await
        .unwrap();
    let unknown = plugin
        .execute(
            action("set_stage", json!({"stage": "done"})),
            &config(json!({"action": "transition"})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, CallFailure::InvalidInput(m) if m.contains("lists.done")),
        "{unknown:?}"
    );

    let seen = api.received();
    let calls: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            "POST /1/cards",
            "POST /1/cards/c1/actions/comments",
            "PUT /1/cards/c1",
            "POST /1/cards/c1/idMembers"
        ]
    );
    assert_eq!(seen[0].json()["idList"], "l-inbox");
    assert_eq!(seen[0].json()["name"], "ana: card stalled");
    assert_eq!(seen[2].json(), json!({"idList": "l-review"}));
    assert_eq!(seen[3].json(), json!({"value": "m-ana"}));
    assert!(seen.iter().all(|s| s.headers["authorization"] == AUTH));
}
