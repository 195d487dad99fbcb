//! Secrets never leak: with the admin token and a plugin credential in the
//! daemon's environment, after events, actions, retries, dead letters and
//! overrides, neither value appears in the log, the database files,
//! `/metrics`, the HTTP API or any command's output. The credential
//! reaches only the receiver it is meant for.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Sink, Workspace, actions_settled, event, example_rule, plugins_toml};

const ADMIN_TOKEN: &str = "adm-SECRET-5f2a9c1e7b3d4068a1";
const SLACK_TOKEN: &str = "xoxb-SECRET-91c3e5a7d2f40b68c";

const OPS_RULE: &str = r#"
if event.type == "task.stalled" {
    escalate("review_owner", `no progress on ${event.subject}`, 1);
}
if event.type == "task.handoff" {
    notify(entity.owner, `you now own ${entity.id}`);
}
"#;

/// Every place a secret could end up, with what it holds.
fn assert_no_secret(place: &str, text: &str) {
    for secret in [ADMIN_TOKEN, SLACK_TOKEN] {
        // Also a distinctive part, in case a value is cut or reformatted.
        for needle in [secret, &secret[secret.len() - 16..]] {
            assert!(!text.contains(needle), "{place} contains a secret:\n{text}");
        }
    }
}

fn workspace(sink: &Sink) -> Workspace {
    let gate = example_rule("convergence_gate");
    let ws = Workspace::new(
        &[("ops", OPS_RULE), ("convergence_gate", &gate)],
        &format!(
            r##"{plugins}
[[routes]]
decision = "escalate"
plugin = "slack"
config = {{ channel = "#mops-escalations", base_url = "{slack}" }}

[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "{hook}" }}

[[routes]]
decision = "release_send"
plugin = "webhook-out"
config = {{ url = "{send}" }}
"##,
            plugins = plugins_toml(sink),
            slack = sink.url("/slack/api"),
            hook = sink.url("/hook"),
            send = sink.url("/send"),
        ),
    );
    ws.listen_on_free_port();
    ws
}

fn channel(id: &str, name: &str, stage: &str) -> Value {
    event(
        id,
        "campaign.channel.updated",
        "campaign/spring",
        json!({
            "channel": name,
            "stage": stage,
            "offer_code": "SPRING",
            "landing_url": "https://shop.test/spring",
            "key_message": "Spring is here",
            // Far off: the gate escalates a send held close to its launch.
            "launch_at": "2036-11-24T09:00:00Z",
            "segments": ["loyal"],
        }),
    )
}

fn run_cli(ws: &Workspace, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(args)
        .arg("--config")
        .arg(ws.config())
        .env("CONVERGE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CONVERGE_TEST_SLACK_TOKEN", SLACK_TOKEN)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "converge {args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_stay_out_of_logs_database_metrics_api_and_output() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_with_env(&[
        ("CONVERGE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("CONVERGE_TEST_SLACK_TOKEN", SLACK_TOKEN),
        ("RUST_LOG", "info,converge=debug"),
    ]);
    let accept = |event: Value| {
        let daemon = &daemon;
        async move {
            let (status, body) = daemon.send_event(&event).await;
            assert_eq!(status, 202, "{body}");
        }
    };

    // An escalation retried once, then one that fails for good and is
    // retried from the dead letters with the admin token.
    sink.answer_next(&[StatusCode::SERVICE_UNAVAILABLE]);
    accept(event("st-1", "task.stalled", "task/T-1", json!({}))).await;
    daemon.wait_for_trail("st-1", actions_settled).await;
    sink.answer_next(&[StatusCode::UNAUTHORIZED]);
    accept(event("st-2", "task.stalled", "task/T-1", json!({}))).await;
    let trail = daemon.wait_for_trail("st-2", actions_settled).await;
    let action = &trail["decisions"][0]["actions"][0];
    assert_eq!(action["status"], "dead_letter", "{trail}");
    let dead = action["id"].to_string();
    let path = format!("/v1/dlq/{dead}/retry");
    let decision = json!({"by": "mia", "reason": "token fixed"});
    assert_eq!(
        daemon
            .post_admin(&path, Some("not-the-token-000000"), &decision)
            .await
            .0,
        401
    );
    assert_eq!(
        daemon
            .post_admin(&path, Some(ADMIN_TOKEN), &decision)
            .await
            .0,
        202
    );
    accept(event(
        "h-1",
        "task.handoff",
        "task/T-1",
        json!({"owner": "ana"}),
    ))
    .await;

    // A held send, a refused override and an accepted one.
    accept(channel("c-1", "email", "approved")).await;
    accept(channel("c-2", "paid", "draft")).await;
    accept(event(
        "s-1",
        "send.requested",
        "campaign/spring",
        json!({"channel": "email"}),
    ))
    .await;
    daemon
        .wait_for_trail("s-1", |t| !t["processed_at_ms"].is_null())
        .await;
    let reason = json!({"by": "mia", "reason": "legal approved by phone"});
    let path = "/v1/gates/campaign/spring/override";
    assert_eq!(daemon.post_admin(path, None, &reason).await.0, 401);
    assert_eq!(
        daemon.post_admin(path, Some(ADMIN_TOKEN), &reason).await.0,
        202
    );

    // The credential went where it belongs: to the Slack stand-in, 4 times
    // (beside the handoff's and the gate's notices and the released send).
    let received = sink.wait_for(7).await;
    let authorized = received
        .iter()
        .filter(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|v| v.to_str().unwrap() == format!("Bearer {SLACK_TOKEN}"))
        })
        .count();
    assert_eq!(authorized, 4, "{received:#?}");
    daemon.wait_for_trail("h-1", actions_settled).await;
    daemon
        .wait_for_trail("st-2", |t| {
            t["decisions"][0]["actions"][0]["status"] == "done"
        })
        .await;

    // The HTTP API.
    for path in [
        "/metrics",
        "/v1/status",
        "/v1/events/st-1",
        "/v1/events/st-2",
        "/v1/events/s-1",
        "/v1/gates/campaign/spring",
        "/v1/dlq",
        &format!("/v1/dlq/{dead}"),
        "/v1/entities/task/T-1/timers",
    ] {
        let (status, body) = daemon.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_no_secret(path, &body);
    }
    // The commands people run, with the secrets in their environment.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["gates", "--json"],
        &["dlq", "list"],
        &["dlq", "show", &dead, "--json"],
        &["explain", "st-2"],
        &["explain", "--entity", "task/T-1", "--json"],
        &["explain", "--entity", "campaign/spring"],
        &["check"],
    ] {
        assert_no_secret(&format!("converge {args:?}"), &run_cli(&ws, args));
    }

    // The log, and every file the daemon wrote, after a clean stop.
    let log = {
        let log = daemon.log();
        assert!(daemon.terminate().success());
        log
    };
    assert!(
        log.contains("gate overridden"),
        "the log covers the run:\n{log}"
    );
    assert_no_secret("the log", &log);
    let data = ws.dir.path().join("data");
    let mut files = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert_no_secret(
                &path.display().to_string(),
                &String::from_utf8_lossy(&bytes),
            );
        }
    }
    assert!(files >= 1, "no database file in {}", data.display());
}

/// A Slack stand-in whose error answer quotes the Authorization header it got.
async fn echoing_slack() -> std::net::SocketAddr {
    async fn post_message(headers: axum::http::HeaderMap) -> axum::Json<Value> {
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        axum::Json(json!({"ok": false, "error": format!("invalid_auth: {got}")}))
    }
    let app = axum::Router::new().route(
        "/slack/api/chat.postMessage",
        axum::routing::post(post_message),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_echoes_the_credential_does_not_put_it_in_the_outbox() {
    let addr = echoing_slack().await;
    let slack = Sink::placeholder(addr);
    let ws = Workspace::new(
        &[("ops", OPS_RULE)],
        &format!(
            r##"{plugins}
[[routes]]
decision = "escalate"
plugin = "slack"
config = {{ channel = "#mops-escalations", base_url = "{api}" }}
"##,
            plugins = plugins_toml(&slack),
            api = slack.url("/slack/api"),
        ),
    );
    let daemon = ws.start_with_env(&[("CONVERGE_TEST_SLACK_TOKEN", SLACK_TOKEN)]);
    let (status, _) = daemon
        .send_event(&event("echo-1", "task.stalled", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202);
    let trail = daemon.wait_for_trail("echo-1", actions_settled).await;
    let action = &trail["decisions"][0]["actions"][0];
    let detail = action.to_string();
    // The failure is recorded, with the credential replaced.
    assert!(detail.contains("invalid_auth"), "{detail}");
    assert!(detail.contains("<redacted>"), "{detail}");
    assert_no_secret("the action's outcome", &detail);
    assert_no_secret("the log", &daemon.log());
    drop(daemon);
    for entry in std::fs::read_dir(ws.dir.path().join("data")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert_no_secret(
                &path.display().to_string(),
                &String::from_utf8_lossy(&bytes),
            );
        }
    }
}
