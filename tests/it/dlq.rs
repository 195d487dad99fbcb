//! Dead letters end to end: an action that fails for good waits in the
//! store, `converge dlq` lists and shows it, and a person with the admin
//! token retries it (delivered with the same idempotency key) or drops it.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Daemon, Sink, Workspace, actions_settled, event, is_action_key, notify_all_to_sink,
    notify_all_to_sink_with,
};

const TOKEN: &str = "dlq-admin-token-0123456789";

fn workspace(sink: &Sink) -> Workspace {
    let ws = notify_all_to_sink(sink);
    ws.listen_on_free_port();
    ws
}

/// Sends one event and waits until its one action is settled; returns it.
async fn settled_action(daemon: &Daemon, id: &str) -> Value {
    let (status, body) = daemon
        .send_event(&event(id, "task.updated", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202, "{body}");
    let trail = daemon.wait_for_trail(id, actions_settled).await;
    trail["decisions"][0]["actions"][0].clone()
}

fn cli(ws: &Workspace, args: &[&str], token: Option<&str>) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_converge"));
    command.args(args).arg("--config").arg(ws.config());
    command.env_remove("CONVERGE_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("CONVERGE_ADMIN_TOKEN", token);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn decision() -> Value {
    json!({"by": "mia", "reason": "the receiver's token was rotated"})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_failure_is_dead_lettered_then_retried_with_the_same_key() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);

    sink.answer_next(&[StatusCode::UNAUTHORIZED]);
    let action = settled_action(&daemon, "p-1").await;
    assert_eq!(action["status"], "dead_letter", "{action}");
    assert_eq!(action["attempts"], 1, "a permanent failure is not retried");
    let id = action["id"].as_i64().unwrap();
    daemon.wait_for_metric("converge_dead_letters", 1.0).await;
    assert_eq!(
        daemon
            .metric("converge_actions_dead_lettered_total{plugin=\"webhook-out\"}")
            .await,
        1.0
    );

    // Listed with its error, and explained as a dead letter.
    let (ok, out, err) = cli(&ws, &["dlq", "list"], None);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("action {id}: notify via route")),
        "{out}"
    );
    assert!(
        out.contains("event p-1 (task.updated) about task/T-1"),
        "{out}"
    );
    assert!(
        out.contains("after 1 attempt(s): unauthorized: HTTP 401"),
        "{out}"
    );
    let (ok, out, err) = cli(&ws, &["explain", "p-1"], None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("DEAD LETTER after 1 attempt"), "{out}");
    assert!(
        out.contains(&format!(
            "converge dlq retry {id} or converge dlq drop {id}"
        )),
        "{out}"
    );

    // Without the token, or with a wrong one, nothing happens.
    let path = format!("/v1/dlq/{id}/retry");
    let (status, body) = daemon.post_admin(&path, None, &decision()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = daemon
        .post_admin(&path, Some("wrong-token-0123456789"), &decision())
        .await;
    assert_eq!(status, 401);
    let (ok, _, err) = cli(
        &ws,
        &[
            "dlq",
            "retry",
            &id.to_string(),
            "--by",
            "mia",
            "--reason",
            "x",
        ],
        None,
    );
    assert!(!ok);
    assert!(err.contains("set CONVERGE_ADMIN_TOKEN"), "{err}");
    assert_eq!(sink.received().len(), 1);

    // Retried through the CLI: delivered, with the same idempotency key.
    let (ok, out, err) = cli(
        &ws,
        &[
            "dlq",
            "retry",
            &id.to_string(),
            "--by",
            "mia",
            "--reason",
            "the receiver's token was rotated",
        ],
        Some(TOKEN),
    );
    assert!(ok, "{out}{err}");
    let received = sink.wait_for(2).await;
    let keys: Vec<&str> = received
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap())
        .collect();
    let key = keys[0];
    assert!(is_action_key(key, id), "{key}");
    assert!(out.contains(key), "{out}");
    assert_eq!(keys, [key, key]);
    let action =
        daemon.wait_for_trail("p-1", actions_settled).await["decisions"][0]["actions"][0].clone();
    assert_eq!(action["status"], "done", "{action}");
    assert_eq!(action["attempts"], 1, "a fresh attempt budget");
    daemon.wait_for_metric("converge_dead_letters", 0.0).await;
    assert_eq!(
        daemon.metric("converge_dead_letters_retried_total").await,
        1.0
    );

    // The history says who retried it and why.
    let (ok, out, err) = cli(&ws, &["dlq", "show", &id.to_string(), "--json"], None);
    assert!(ok, "{out}{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    let history: Vec<(&str, Option<&str>)> = shown["action"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["kind"].as_str().unwrap(), h["by"].as_str()))
        .collect();
    assert_eq!(history, [("dead_lettered", None), ("retried", Some("mia"))]);
    assert_eq!(
        shown["action"]["history"][1]["reason"],
        "the receiver's token was rotated"
    );
    let (ok, out, _) = cli(&ws, &["explain", "p-1"], None);
    assert!(ok);
    assert!(out.contains("retried by mia at "), "{out}");

    // Done is not a dead letter: nothing to retry.
    let (status, body) = daemon.post_admin(&path, Some(TOKEN), &decision()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_dead_letter");
    let (ok, out, _) = cli(&ws, &["dlq", "list"], None);
    assert!(ok);
    assert_eq!(out, "no dead letters\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_retries_are_dead_lettered_and_a_drop_is_final() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);

    // The test config allows 3 attempts.
    sink.answer_next(&[StatusCode::SERVICE_UNAVAILABLE; 3]);
    let action = settled_action(&daemon, "x-1").await;
    assert_eq!(action["status"], "dead_letter", "{action}");
    assert_eq!(action["attempts"], 3);
    let id = action["id"].as_i64().unwrap();

    let (status, body) = daemon.get("/v1/dlq").await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["count"], 1);
    let letter = &listed["dead_letters"][0];
    assert_eq!(
        (&letter["id"], &letter["attempts"]),
        (&json!(id), &json!(3))
    );
    assert!(
        letter["detail"].as_str().unwrap().contains("HTTP 503"),
        "{letter}"
    );
    assert!(
        is_action_key(letter["idempotency_key"].as_str().unwrap(), id),
        "{letter}"
    );
    let (_, body) = daemon.get(&format!("/v1/dlq/{id}")).await;
    let shown: Value = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> = shown["action"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["attempt_failed", "attempt_failed", "dead_lettered"]);

    let (ok, out, err) = cli(
        &ws,
        &[
            "dlq",
            "drop",
            &id.to_string(),
            "--by",
            "mia",
            "--reason",
            "campaign cancelled",
        ],
        Some(TOKEN),
    );
    assert!(ok, "{out}{err}");
    let (_, body) = daemon.get(&format!("/v1/dlq/{id}")).await;
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["action"]["status"], "dropped");
    assert_eq!(shown["action"]["history"][3]["by"], "mia");
    assert_eq!(
        shown["action"]["history"][3]["reason"],
        "campaign cancelled"
    );
    daemon.wait_for_metric("converge_dead_letters", 0.0).await;
    assert_eq!(
        daemon.metric("converge_dead_letters_dropped_total").await,
        1.0
    );

    // Final: neither retried nor dropped again; unknown ids are 404.
    let (status, _) = daemon
        .post_admin(&format!("/v1/dlq/{id}/retry"), Some(TOKEN), &decision())
        .await;
    assert_eq!(status, 409);
    let (status, body) = daemon
        .post_admin("/v1/dlq/999/drop", Some(TOKEN), &decision())
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(daemon.get("/v1/dlq/999").await.0, 404);
    let (status, body) = daemon
        .post_admin(
            &format!("/v1/dlq/{id}/drop"),
            Some(TOKEN),
            &json!({"by": "mia"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        sink.received().len(),
        3,
        "a dropped action never runs again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_and_drops_are_disabled_without_an_admin_token() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_without_admin_token();
    let (status, body) = daemon
        .post_admin("/v1/dlq/1/retry", Some(TOKEN), &decision())
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "admin_disabled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("set CONVERGE_ADMIN_TOKEN"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dead_letter_of_a_route_is_retried_at_once_after_a_fix() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);

    // The receiver refuses the daemon's credentials for a while.
    sink.answer_next(&[StatusCode::UNAUTHORIZED; 3]);
    let mut ids = Vec::new();
    for event_id in ["b-1", "b-2", "b-3"] {
        let action = settled_action(&daemon, event_id).await;
        assert_eq!(action["status"], "dead_letter", "{action}");
        ids.push(action["id"].as_i64().unwrap());
    }
    let (_, body) = daemon.get("/v1/dlq").await;
    let listed: Value = serde_json::from_str(&body).unwrap();
    let route = listed["dead_letters"][0]["route"]
        .as_str()
        .unwrap()
        .to_string();

    // Another route's dead letters: none, so nothing is retried.
    let retry = |route: &str| {
        cli(
            &ws,
            &[
                "dlq",
                "retry",
                "--all",
                "--route",
                route,
                "--by",
                "mia",
                "--reason",
                "the receiver's token was rotated",
            ],
            Some(TOKEN),
        )
    };
    let (ok, out, err) = retry("no-such-route");
    assert!(ok, "{out}{err}");
    assert_eq!(out, "no dead letters to retry\n");
    assert_eq!(sink.received().len(), 3);

    // Fixed: every one of the route at once, each with its own key again.
    let (ok, out, err) = retry(&route);
    assert!(ok, "{out}{err}");
    for id in &ids {
        assert!(
            out.contains(&format!("action {id} is pending again")),
            "{out}"
        );
    }
    assert!(out.ends_with("retried 3 of 3 dead letter(s)\n"), "{out}");
    let received = sink.wait_for(6).await;
    let mut keys: Vec<&str> = received[3..]
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap())
        .collect();
    keys.sort();
    let mut expected: Vec<&str> = received[..3]
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap())
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
    for event_id in ["b-1", "b-2", "b-3"] {
        let trail = daemon.wait_for_trail(event_id, actions_settled).await;
        assert_eq!(trail["decisions"][0]["actions"][0]["status"], "done");
    }
    daemon.wait_for_metric("converge_dead_letters", 0.0).await;
    assert_eq!(
        daemon.metric("converge_dead_letters_retried_total").await,
        3.0
    );

    // Several by id, one of them unknown: the others are dropped, and the
    // command fails naming the one refused.
    sink.answer_next(&[StatusCode::UNAUTHORIZED]);
    let action = settled_action(&daemon, "b-4").await;
    let id = action["id"].as_i64().unwrap().to_string();
    let (ok, out, err) = cli(
        &ws,
        &[
            "dlq",
            "drop",
            &id,
            "999999",
            "--by",
            "mia",
            "--reason",
            "campaign cancelled",
        ],
        Some(TOKEN),
    );
    assert!(!ok, "{out}{err}");
    assert!(out.contains(&format!("action {id} dropped")), "{out}{err}");
    assert!(out.contains("dropped 1 of 2 dead letter(s)"), "{out}");
    assert!(err.contains("action 999999: drop refused (404)"), "{err}");
    assert!(err.contains("1 of 2 refused (actions 999999)"), "{err}");
    daemon.wait_for_metric("converge_dead_letters", 0.0).await;
}

/// [`workspace`] on a manual clock that stands at 2026-03-02 09:00 UTC.
fn on_a_manual_clock(sink: &Sink) -> Workspace {
    let ws = notify_all_to_sink_with(
        sink,
        "[clock]\nmode = \"manual\"\nstart = \"2026-03-02T09:00:00Z\"\n",
    );
    ws.listen_on_free_port();
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_is_dated_on_the_daemons_clock() {
    let sink = Sink::start().await;
    let ws = on_a_manual_clock(&sink);
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);

    sink.answer_next(&[StatusCode::UNAUTHORIZED]);
    let action = settled_action(&daemon, "m-1").await;
    assert_eq!(action["status"], "dead_letter", "{action}");
    let id = action["id"].as_i64().unwrap();
    daemon.advance_clock("2h").await;
    let (status, body) = daemon
        .post_admin(&format!("/v1/dlq/{id}/retry"), Some(TOKEN), &decision())
        .await;
    assert_eq!(status, 202, "{body}");
    let action =
        daemon.wait_for_trail("m-1", actions_settled).await["decisions"][0]["actions"][0].clone();
    assert_eq!(action["status"], "done", "{action}");

    // Every time of the action reads on the manual clock, not the wall's.
    let (status, body) = daemon.get(&format!("/v1/dlq/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).unwrap();
    let history: Vec<(&str, &str)> = shown["action"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["kind"].as_str().unwrap(), h["at"].as_str().unwrap()))
        .collect();
    assert_eq!(
        history,
        [
            ("dead_lettered", "2026-03-02T09:00:00.000Z"),
            ("retried", "2026-03-02T11:00:00.000Z"),
        ]
    );
    assert_eq!(
        shown["action"]["finished_at"], "2026-03-02T11:00:00.000Z",
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_needs_action_page_ages_a_dead_letter_on_the_daemons_clock() {
    let sink = Sink::start().await;
    let ws = on_a_manual_clock(&sink);
    let daemon = ws.start();

    sink.answer_next(&[StatusCode::UNAUTHORIZED]);
    let action = settled_action(&daemon, "m-2").await;
    assert_eq!(action["status"], "dead_letter", "{action}");
    daemon.advance_clock("3h").await;
    let (status, page) = daemon.get("/ui?kind=dead_letter").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(r#"title="2026-03-02 09:00:00 UTC">3h ago</time>"#),
        "{page}"
    );
}
