//! A plugin that traps, loops forever or allocates without bound fails its
//! action with a clear error, and the daemon keeps serving.

use serde_json::json;

use crate::support::{Sink, Workspace, actions_settled, event, plugins_toml};

const RULE: &str = r#"
if event.type == "misbehave" {
    escalate("ops", "trap", 1);
    notify("ops", "loop");
    set_field("alloc", true);
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_plugins_fail_their_action_only() {
    let sink = Sink::start().await;
    let routes = format!(
        r#"
[[routes]]
decision = "escalate"
plugin = "misbehaving"
config = {{ mode = "trap" }}

[[routes]]
decision = "notify"
plugin = "misbehaving"
config = {{ mode = "loop" }}

[[routes]]
decision = "set_field"
plugin = "misbehaving"
config = {{ mode = "alloc" }}

[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "{hook}" }}
"#,
        hook = sink.url("/hook")
    );
    let ws = Workspace::new(
        &[("misbehave", RULE)],
        &format!("{}{routes}", plugins_toml(&sink)),
    );
    let daemon = ws.start();
    assert_eq!(
        daemon
            .send_event(&event("m-1", "misbehave", "task/T-1", json!({})))
            .await
            .0,
        202
    );
    let trail = daemon.wait_for_trail("m-1", actions_settled).await;

    let mut outcomes = Vec::new();
    for decision in trail["decisions"].as_array().unwrap() {
        for action in decision["actions"].as_array().unwrap() {
            outcomes.push((
                action["route"].as_str().unwrap().to_string(),
                action["status"].as_str().unwrap().to_string(),
                action["detail"].as_str().unwrap_or_default().to_lowercase(),
            ));
        }
    }
    outcomes.sort();
    assert_eq!(outcomes.len(), 4, "{outcomes:#?}");
    let find = |route: &str| {
        outcomes
            .iter()
            .find(|o| o.0 == route)
            .unwrap_or_else(|| panic!("{route}: {outcomes:#?}"))
    };
    let (_, status, detail) = find("escalate-to-misbehaving");
    assert_eq!(status, "dead_letter");
    assert!(detail.contains("trap"), "{detail}");
    let (_, status, detail) = find("notify-to-misbehaving");
    assert_eq!(status, "dead_letter");
    assert!(detail.contains("cpu"), "{detail}");
    let (_, status, detail) = find("set_field-to-misbehaving");
    assert_eq!(status, "dead_letter");
    assert!(detail.contains("memory"), "{detail}");
    let (_, status, _) = find("notify-to-webhook-out");
    assert_eq!(status, "done");

    // Still serving, and still acting.
    assert_eq!(daemon.get("/healthz").await.0, 200);
    daemon
        .send_event(&event("m-2", "misbehave", "task/T-2", json!({})))
        .await;
    daemon.wait_for_trail("m-2", actions_settled).await;
    assert_eq!(sink.wait_for(2).await.len(), 2);
    assert_eq!(
        daemon
            .metric("converge_actions_total{plugin=\"misbehaving\",outcome=\"Failed\"}")
            .await,
        6.0
    );
}
