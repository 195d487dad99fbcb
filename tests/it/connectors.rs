//! Connector plugins in the daemon: a hook that decodes a tool's own
//! payloads (GitHub's, from the published fixtures) after checking its
//! signature, and a poll that pages through a tool's API (a local fake
//! serving the fixture's issue) and resumes from its stored cursor.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Daemon, Workspace, plugin_dir, repo_root};

const SECRET: &str = "a github webhook secret";

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("../shared/fixtures/webhooks").join(path)).unwrap()
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn github_plugin(api: &str) -> String {
    format!(
        r#"
[plugins.github]
component = {component:?}
http_hosts = [{api:?}]
allow_plain_http = true

[plugins.github.credentials.github]
env = "CONVERGE_TEST_GITHUB_TOKEN"
"#,
        component = plugin_dir().join("github.wasm").display().to_string(),
    )
}

fn processed(trail: &Value) -> bool {
    !trail["processed_at_ms"].is_null()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_delivery_is_verified_decoded_and_deduplicated_by_its_delivery_id() {
    let ws = Workspace::new(
        &[(
            "issues",
            r#"notify("ops", `${event.type}: ${event.data.title}`);"#,
        )],
        &format!(
            r#"{plugin}
[hooks.github]
verify = "github"
secret_env = "CONVERGE_TEST_GITHUB_SECRET"
decode = "github"
config = {{ campaign = {{ label_prefix = "campaign:" }} }}
"#,
            plugin = github_plugin("127.0.0.1:9")
        ),
    );
    let daemon = ws.start_with_env(&[("CONVERGE_TEST_GITHUB_SECRET", SECRET)]);
    let body = fixture("github/issues.opened.json");
    let deliver = |signature: String| {
        let (daemon, body) = (&daemon, body.clone());
        async move {
            daemon
                .request(
                    Method::POST,
                    "/hooks/github",
                    &[
                        ("content-type", "application/json"),
                        ("x-github-event", "issues"),
                        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
                        ("x-hub-signature-256", &signature),
                    ],
                    body,
                )
                .await
        }
    };
    let (status, _, answer) = deliver(sign(&body)).await;
    assert_eq!(status, 202, "{answer}\n{}", daemon.log());
    assert_eq!(answer["events"][0]["status"], "accepted", "{answer}");
    let id = answer["events"][0]["id"].as_str().unwrap().to_string();
    let trail = daemon.wait_for_trail(&id, processed).await;
    assert_eq!(trail["type"], "github.issue.opened", "{trail}");
    assert_eq!(
        trail["decisions"][0]["decision"]["message"],
        "github.issue.opened: Spelling error in the README file"
    );

    // GitHub redelivers with the same delivery id: nothing new.
    let (status, _, answer) = deliver(sign(&body)).await;
    assert_eq!(status, 202);
    assert_eq!(answer["events"][0]["status"], "duplicate", "{answer}");
    assert_eq!(answer["events"][0]["id"], id.as_str());

    let (status, _, answer) = deliver(sign(b"something else")).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(daemon.metric("converge_journal_events").await, 1.0);
}

/// The `since` of every request the fake API answered.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// A GitHub issues API serving the fixture's issue, recording the `since`
/// of every request.
async fn fake_github() -> (String, Seen) {
    let issue: Value = serde_json::from_slice::<Value>(&fixture("github/issues.opened.json"))
        .unwrap()["issue"]
        .clone();
    let seen: Seen = Arc::default();
    async fn issues(
        State((issue, seen)): State<(Value, Seen)>,
        Query(query): Query<std::collections::HashMap<String, String>>,
    ) -> axum::Json<Value> {
        seen.lock().unwrap().push(query.get("since").cloned());
        // `since` is inclusive: the issue updated at the cursor comes back.
        axum::Json(json!([issue]))
    }
    let app = Router::new()
        .route("/repos/Codertocat/Hello-World/issues", get(issues))
        .with_state((issue, seen.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("127.0.0.1:{}", addr.port()), seen)
}

async fn wait_for_polls(seen: &Seen, n: usize, daemon: &Daemon) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen.lock().unwrap().len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} polls\n{}",
            seen.lock().unwrap().len(),
            daemon.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_poll_journals_each_item_once_and_resumes_from_its_cursor() {
    let (api, seen) = fake_github().await;
    let ws = Workspace::new(
        &[],
        &format!(
            r#"{plugin}
[[polls]]
name = "hello-world-issues"
plugin = "github"
interval = "5s"
config = {{ api_url = "http://{api}", repository = "Codertocat/Hello-World" }}
"#,
            plugin = github_plugin(&api)
        ),
    );
    let env = [("CONVERGE_TEST_GITHUB_TOKEN", "ghp_test_token")];
    let daemon = ws.start_with_env(&env);
    wait_for_polls(&seen, 1, &daemon).await;
    daemon.wait_for_metric("converge_journal_events", 1.0).await;
    daemon
        .wait_for_metric("converge_poll_pages_total", 1.0)
        .await;
    assert_eq!(
        seen.lock().unwrap()[0],
        None,
        "the first poll has no cursor"
    );
    daemon.kill9();

    // Restarted, it asks from the stored cursor, and the issue it gets
    // again is not journaled twice.
    let daemon = ws.start_with_env(&env);
    wait_for_polls(&seen, 2, &daemon).await;
    assert_eq!(
        seen.lock().unwrap()[1].as_deref(),
        Some("2019-05-15T15:20:18Z"),
        "{}",
        daemon.log()
    );
    daemon
        .wait_for_metric("converge_events_duplicate_total", 1.0)
        .await;
    assert_eq!(daemon.metric("converge_journal_events").await, 1.0);
}

#[test]
fn a_hook_cannot_decode_with_an_action_plugin() {
    let ws = Workspace::new(
        &[],
        &format!(
            r#"
[plugins.out]
component = {component:?}

[hooks.github]
decode = "out"
"#,
            component = plugin_dir().join("webhook_out.wasm").display().to_string(),
        ),
    );
    let out = ws.converge(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hooks.github.decode: plugin `out` does not decode payloads"),
        "{stderr}"
    );
}
