//! Connector plugins in the daemon, one tool per module: each tool's own
//! payloads (from the published fixtures) posted to a hook with the tool's
//! signature scheme, decoded onto campaigns and decided on by a rule;
//! polls paging through a local fake of the tool's API and resuming from
//! their stored cursor; and actions performed on that fake with the
//! credential the host injects. GitHub's tests are here; the helpers they
//! all share too.

mod asana;
mod hubspot;
mod jira;
mod mailchimp;
mod sendgrid;
mod trello;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Daemon, Workspace, plugin_dir, repo_root};

const SECRET: &str = "a github webhook secret";

/// A file of the published webhook fixtures, as it is.
fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("tests/fixtures/webhooks").join(path)).unwrap()
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn sign(body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[body]))
    )
}

/// A connector plugin granted the fake API at `api` and a credential named
/// like the plugin (the plugins' default), read from `credential_env` and
/// sent as `authorization: <scheme> <value>`.
fn task_plugin(name: &str, api: &str, credential_env: &str, scheme: &str) -> String {
    format!(
        r#"
[plugins.{name}]
component = {component:?}
http_hosts = [{api:?}]
allow_plain_http = true

[plugins.{name}.credentials.{name}]
env = "{credential_env}"
scheme = "{scheme}"
"#,
        component = plugin_dir()
            .join(format!("{name}.wasm"))
            .display()
            .to_string(),
    )
}

/// A plugin that only decodes: no hosts, no credentials.
fn decoder_plugin(name: &str) -> String {
    format!(
        "\n[plugins.{name}]\ncomponent = {:?}\n",
        plugin_dir()
            .join(format!("{name}.wasm"))
            .display()
            .to_string()
    )
}

/// The `events` of a hook's 202 answer, after checking it is one.
async fn deliver(
    daemon: &Daemon,
    hook: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Vec<Value> {
    let (status, _, answer) = daemon
        .request(Method::POST, &format!("/hooks/{hook}"), headers, body)
        .await;
    assert_eq!(status, 202, "{answer}\n{}", daemon.log());
    answer["events"].as_array().unwrap().clone()
}

/// Each answered event's status, e.g. `accepted` or `duplicate`.
fn statuses(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect()
}

/// The trails of these answered events, once processed, in order.
async fn processed_trails(daemon: &Daemon, events: &[Value]) -> Vec<Value> {
    let mut trails = Vec::new();
    for event in events {
        let id = event["id"].as_str().unwrap();
        trails.push(daemon.wait_for_trail(id, processed).await);
    }
    trails
}

/// The message of each notification decided on a trail.
fn notifications(trail: &Value) -> Vec<&str> {
    trail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["decision"]["message"].as_str())
        .collect()
}

fn github_plugin(api: &str) -> String {
    task_plugin("github", api, "CONVERGE_TEST_GITHUB_TOKEN", "Bearer")
}

fn processed(trail: &Value) -> bool {
    !trail["processed_at_ms"].is_null()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_delivery_is_verified_decoded_and_deduplicated_by_its_signed_body() {
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

    // A captured delivery sent again under a new delivery id (the header is
    // not signed) is the same event: a duplicate.
    let signature = sign(&body);
    let (status, _, answer) = daemon
        .request(
            Method::POST,
            "/hooks/github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", "issues"),
                ("x-github-delivery", "0000aaaa-replayed"),
                ("x-hub-signature-256", signature.as_str()),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "{} polls\n{}",
            seen.lock().unwrap().len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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
