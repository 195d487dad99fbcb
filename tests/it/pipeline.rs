//! End to end: events in over HTTP, rules decide, plugins act on a local sink.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{Sink, Workspace, actions_settled, event, is_action_key, plugins_toml};

const RULES: &str = r#"
// Escalate a stalled task to its review owner; note every handoff.
if event.type == "task.stalled" {
    escalate("review_owner", `no progress on ${event.subject}`, 2);
}
if event.type == "task.handoff" {
    notify(entity.owner, `you now own ${entity.id} (stage ${entity.stage})`);
}
if event.type == "boom" {
    throw "this rule fails on purpose";
}
"#;

fn routes(sink: &Sink) -> String {
    format!(
        r##"
[[routes]]
decision = "escalate"
plugin = "slack"
config = {{ channel = "#mops-escalations", base_url = "{slack}" }}

[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "{hook}" }}
"##,
        slack = sink.url("/slack/api"),
        hook = sink.url("/hook"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_becomes_a_decision_and_a_plugin_call() {
    let sink = Sink::start().await;
    let ws = Workspace::new(
        &[("ops", RULES)],
        &format!("{}{}", plugins_toml(&sink), routes(&sink)),
    );
    let daemon = ws.start_with_env(&[("CONVERGE_TEST_SLACK_TOKEN", "xoxb-test-token")]);

    let handoff = event(
        "h-1",
        "task.handoff",
        "task/JIRA-7",
        json!({"owner": "ana", "stage": "review"}),
    );
    let (status, _) = daemon.send_event(&handoff).await;
    assert_eq!(status, 202);
    let stalled = event("s-1", "task.stalled", "task/JIRA-7", json!({}));
    assert_eq!(daemon.send_event(&stalled).await.0, 202);

    let received = sink.wait_for(2).await;
    let hook = received
        .iter()
        .find(|r| r.path == "/hook")
        .expect("webhook-out call");
    assert_eq!(hook.body["kind"], "notify");
    assert_eq!(hook.body["rule"], "ops");
    assert_eq!(hook.body["decision"]["to"], "ana");
    assert_eq!(
        hook.body["decision"]["message"],
        "you now own JIRA-7 (stage review)"
    );
    assert_eq!(hook.body["event"]["id"], "h-1");
    assert_eq!(hook.body["entity"]["owner"], "ana");
    let key = hook.headers["idempotency-key"].to_str().unwrap();
    assert!(
        (1..=2).any(|id| is_action_key(key, id)),
        "{key} is not an action's key"
    );

    let slack = received
        .iter()
        .find(|r| r.path == "/slack/api/chat.postMessage")
        .expect("slack call");
    assert_eq!(slack.body["channel"], "#mops-escalations");
    assert_eq!(
        slack.body["text"],
        ":rotating_light: Escalation (level 2) to review_owner: no progress on task/JIRA-7 — task/JIRA-7"
    );
    assert_eq!(slack.headers["authorization"], "Bearer xoxb-test-token");

    let trail = daemon.wait_for_trail("s-1", actions_settled).await;
    let decision = &trail["decisions"][0];
    assert_eq!(decision["decision"]["kind"], "escalate");
    assert_eq!(decision["decision"]["rule"], "ops");
    assert_eq!(
        decision["decision"]["rule_hash"].as_str().unwrap().len(),
        16
    );
    assert_eq!(decision["actions"][0]["status"], "done");
    assert_eq!(decision["actions"][0]["external_id"], "1700000000.000100");

    // The secret never reaches the log.
    assert!(!daemon.log().contains("xoxb-test-token"));
    let metrics = daemon.get("/metrics").await.1;
    for name in [
        "converge_events_accepted_total 2",
        "converge_decisions_total{kind=\"escalate\"} 1",
        "converge_actions_total{plugin=\"slack\",outcome=\"Ok\"} 1",
        "converge_ack_latency_seconds_count",
        "converge_event_to_action_latency_seconds_count",
        "converge_queue_depth",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_rule_is_recorded_and_the_others_still_run() {
    let sink = Sink::start().await;
    let other = r#"if event.type == "boom" { notify("ops", "boom seen"); }"#;
    let ws = Workspace::new(
        &[("ops", RULES), ("watch", other)],
        &format!("{}{}", plugins_toml(&sink), routes(&sink)),
    );
    let daemon = ws.start();
    assert_eq!(
        daemon
            .send_event(&event("b-1", "boom", "task/T-9", json!({})))
            .await
            .0,
        202
    );
    let trail = daemon.wait_for_trail("b-1", actions_settled).await;
    let failure = &trail["rule_failures"][0];
    assert_eq!(failure["rule"], "ops");
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("this rule fails on purpose"),
        "{failure}"
    );
    assert_eq!(trail["decisions"][0]["decision"]["rule"], "watch");
    assert_eq!(
        sink.wait_for(1).await[0].body["decision"]["message"],
        "boom seen"
    );
    assert_eq!(daemon.metric("converge_rule_failures_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_is_retried_and_a_missing_secret_fails_clearly() {
    let sink = Sink::start().await;
    let ws = Workspace::new(
        &[("ops", RULES)],
        &format!("{}{}", plugins_toml(&sink), routes(&sink)),
    );
    // No CONVERGE_TEST_SLACK_TOKEN: escalations cannot be posted.
    let daemon = ws.start();
    assert!(
        daemon
            .log()
            .contains("CONVERGE_TEST_SLACK_TOKEN is not set"),
        "{}",
        daemon.log()
    );

    sink.answer_next(&[StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_GATEWAY]);
    daemon
        .send_event(&event(
            "h-2",
            "task.handoff",
            "task/T-3",
            json!({"owner": "bo", "stage": "draft"}),
        ))
        .await;
    let trail = daemon.wait_for_trail("h-2", actions_settled).await;
    let action = &trail["decisions"][0]["actions"][0];
    assert_eq!(action["status"], "done", "{trail:#}");
    assert_eq!(action["attempts"], 3);
    assert_eq!(sink.received().len(), 3);
    assert_eq!(
        daemon
            .metric("converge_actions_total{plugin=\"webhook-out\",outcome=\"Retried\"}")
            .await,
        2.0
    );

    daemon
        .send_event(&event("s-2", "task.stalled", "task/T-3", json!({})))
        .await;
    let trail = daemon.wait_for_trail("s-2", actions_settled).await;
    let action = &trail["decisions"][0]["actions"][0];
    assert_eq!(action["status"], "dead_letter");
    assert_eq!(action["attempts"], 1, "not retried: {action}");
    // The error names the variable to set, not a missing grant.
    assert!(
        action["detail"].as_str().unwrap().contains(
            "credential \"bot_token\" has no value: the environment variable CONVERGE_TEST_SLACK_TOKEN is not set"
        ),
        "{action}"
    );
    assert_eq!(sink.received().len(), 3, "nothing reached the sink for it");
}

/// With a cache smaller than the entities in play, least recently used
/// states are evicted and read back from the store: every entity's second
/// event still sees its first.
#[tokio::test(flavor = "multi_thread")]
async fn entity_states_evicted_from_a_small_cache_are_read_back_whole() {
    let ws = Workspace::new(
        &[(
            "count",
            r#"if event.type == "task.checked" && entity.events != 2 { notify("ops", `stale ${entity.id}: ${entity.events}`); }"#,
        )],
        "",
    );
    ws.edit_config("[storage]\n", "[storage]\nentity_cache_entries = 1024\n");
    let daemon = ws.start();
    let entities = 1_500;
    for (round, ty) in [(0, "task.created"), (1, "task.checked")] {
        for chunk in (0..entities).collect::<Vec<_>>().chunks(250) {
            let batch: Vec<_> = chunk
                .iter()
                .map(|i| {
                    event(
                        &format!("{round}-{i}"),
                        ty,
                        &format!("task/T-{i}"),
                        json!({}),
                    )
                })
                .collect();
            let (status, body) = daemon.send_batch(&batch).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    daemon
        .wait_for_trail(&format!("1-{}", entities - 1), |t| {
            t["processed_at_ms"].is_i64()
        })
        .await;
    daemon
        .wait_for_metric("converge_events_processed_total", (2 * entities) as f64)
        .await;
    assert_eq!(
        daemon
            .metric("converge_decisions_total{kind=\"notify\"}")
            .await,
        0.0,
        "an entity was read back without its first event"
    );
}

/// A daemon whose one rule notifies `gate.open` on every asset update,
/// routed by `routes` (TOML after the plugins' tables), after one update
/// of campaign c-1 (event e-1) whose actions have settled: its trail.
async fn trail_of_one_gate_update(sink: &Sink, routes: &str) -> serde_json::Value {
    let ws = Workspace::new(
        &[(
            "gate",
            r#"if event.type == "asset.updated" { notify("gate.open", "FALL25"); }"#,
        )],
        &format!("{}\n{routes}", plugins_toml(sink)),
    );
    let daemon = ws.start();
    let update = event(
        "e-1",
        "asset.updated",
        "campaign/c-1",
        json!({"channel": "email", "offer_code": "FALL25"}),
    );
    assert_eq!(daemon.send_event(&update).await.0, 202);
    daemon.wait_for_trail("e-1", actions_settled).await
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_out_sends_only_the_selected_members() {
    let sink = Sink::start().await;
    let trail = trail_of_one_gate_update(
        &sink,
        &format!(
            r#"[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "{small}", select = ["/decision/kind", "/decision/to", "/event/id", "/entity/fields/missing"] }}

[[routes]]
decision = "notify"
plugin = "webhook-out"
name = "misconfigured"
config = {{ url = "{bad}", select = ["/decision", "event.id"] }}
"#,
            small = sink.url("/small"),
            bad = sink.url("/bad"),
        ),
    )
    .await;

    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0].path, "/small");
    assert_eq!(
        std::str::from_utf8(&received[0].bytes).unwrap(),
        r#"{"decision":{"kind":"notify","to":"gate.open"},"event":{"id":"e-1"}}"#
    );
    let actions = trail["decisions"][0]["actions"].as_array().unwrap();
    let bad = actions
        .iter()
        .find(|a| a["status"] != "done")
        .expect("the misconfigured route's action");
    assert_eq!(bad["status"], "dead_letter", "{bad:#}");
    assert!(
        bad["detail"].as_str().unwrap().contains(
            r#"plugin config: select[1]: "event.id" is not a JSON pointer: it starts with "/", as in "/event/id""#
        ),
        "{bad:#}"
    );
}

/// A route with `carry_entity = false` sends `entity: null` and everything
/// else as a route that carries the state does.
#[tokio::test(flavor = "multi_thread")]
async fn a_route_that_does_not_carry_the_entity_sends_it_as_null() {
    let sink = Sink::start().await;
    let trail = trail_of_one_gate_update(
        &sink,
        &format!(
            r#"[[routes]]
decision = "notify"
plugin = "webhook-out"
name = "whole"
config = {{ url = "{whole}" }}

[[routes]]
decision = "notify"
plugin = "webhook-out"
name = "small"
carry_entity = false
config = {{ url = "{small}" }}
"#,
            whole = sink.url("/whole"),
            small = sink.url("/small"),
        ),
    )
    .await;
    let actions = trail["decisions"][0]["actions"].as_array().unwrap();
    assert!(
        actions.iter().all(|a| a["status"] == "done"),
        "{actions:#?}"
    );

    let body = |path: &str| -> serde_json::Value {
        let received = sink.received();
        let request = received
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("nothing at {path}: {received:#?}"));
        serde_json::from_slice(&request.bytes).unwrap()
    };
    let (whole, small) = (body("/whole"), body("/small"));
    assert_eq!(
        whole["entity"]["channels"]["email"]["fields"]["offer_code"],
        "FALL25"
    );
    assert_eq!(small["entity"], serde_json::Value::Null);
    for member in ["kind", "rule", "decision", "event"] {
        assert_eq!(whole[member], small[member], "{member}");
    }
    assert_eq!(small["event"]["id"], "e-1");
}
