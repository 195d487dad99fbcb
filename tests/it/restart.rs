//! Acknowledged means durable: after `kill -9` and a restart, every
//! acknowledged event is processed and every pending action performed.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::{Sink, Workspace, actions_settled, event, free_port, plugins_toml};

const RULE: &str = r#"notify("ops", `event ${event.id}`);"#;

fn workspace(sink_addr: std::net::SocketAddr) -> Workspace {
    // The sink is addressed by its port; plugins_toml only needs its host.
    let placeholder = Sink::placeholder(sink_addr);
    Workspace::new(
        &[("notify_all", RULE)],
        &format!(
            r#"{plugins}
[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "http://{sink_addr}/hook" }}

[dispatch]
initial_backoff = "100ms"
max_backoff = "300ms"
max_attempts = 1000
shutdown_grace = "1s"
"#,
            plugins = plugins_toml(&placeholder),
        ),
    )
}

fn batch(from: usize, to: usize) -> String {
    Value::Array(
        (from..to)
            .map(|i| {
                event(
                    &format!("r-{i}"),
                    "task.updated",
                    &format!("task/T-{}", i % 7),
                    json!({"n": i}),
                )
            })
            .collect(),
    )
    .to_string()
}

fn event_ids(sink: &Sink) -> BTreeSet<String> {
    sink.received()
        .iter()
        .map(|r| r.body["event"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_acknowledged_is_lost_across_kill_9() {
    // Nothing listens there yet: actions fail and stay pending until the sink starts.
    let sink_addr = free_port();
    let ws = workspace(sink_addr);
    let daemon = ws.start();
    for chunk in 0..4 {
        let (status, answer) = daemon
            .post(
                "/hooks/test",
                "application/cloudevents-batch+json",
                batch(chunk * 100, chunk * 100 + 100),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    // Some actions have been tried (and failed: nothing listens yet)...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while daemon
        .metric("converge_actions_total{plugin=\"webhook-out\",outcome=\"Retried\"}")
        .await
        < 1.0
    {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    daemon.kill9();

    let sink = Sink::start_on(sink_addr).await;
    let daemon = ws.start();
    let expected: BTreeSet<String> = (0..400).map(|i| format!("r-{i}")).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while event_ids(&sink) != expected {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 400 events reached the sink\n{}",
            event_ids(&sink).len(),
            daemon.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Every event is in the journal exactly once, with its action done.
    for i in [0, 199, 399] {
        let trail = daemon
            .wait_for_trail(&format!("r-{i}"), actions_settled)
            .await;
        assert_eq!(trail["decisions"].as_array().unwrap().len(), 1, "{trail}");
        assert_eq!(trail["decisions"][0]["actions"][0]["status"], "done");
    }
    // Retries carry one idempotency key per action.
    let received = sink.received();
    let keys: BTreeSet<&str> = received
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_pending_work_resumes() {
    // Nothing listens there yet: actions fail and stay pending until the sink starts.
    let sink_addr = free_port();
    let ws = workspace(sink_addr);
    let daemon = ws.start();
    let (status, _) = daemon
        .post(
            "/hooks/test",
            "application/cloudevents-batch+json",
            batch(0, 50),
        )
        .await;
    assert_eq!(status, 202);
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status:?}");

    let sink = Sink::start_on(sink_addr).await;
    let daemon = ws.start();
    let expected: BTreeSet<String> = (0..50).map(|i| format!("r-{i}")).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while event_ids(&sink) != expected {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(daemon.terminate().success());
}
