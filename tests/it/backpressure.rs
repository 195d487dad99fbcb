//! Backpressure: intake holds at most `server.max_events_in_flight` events
//! acknowledged but not yet processed; past it, a request waits, then is
//! refused with 503 and `Retry-After`, and nothing of it is journaled.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Workspace, event};

fn batch(ids: &[&str]) -> String {
    Value::Array(
        ids.iter()
            .map(|id| event(id, "task.updated", "task/T-1", json!({})))
            .collect(),
    )
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_in_flight_budget_intake_answers_503_with_retry_after() {
    let ws = Workspace::new(&[("quiet", "")], "");
    ws.edit_config(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nmax_events_in_flight = 2",
    );
    let daemon = ws.start();
    let client = reqwest::Client::new();
    let post = |body: String| {
        client
            .post(format!("{}/hooks/test", daemon.url))
            .header("content-type", "application/cloudevents-batch+json")
            .body(body)
            .send()
    };

    // Three events never fit in a budget of two: intake waits, then refuses.
    let started = Instant::now();
    let refused = post(batch(&["b-1", "b-2", "b-3"])).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "it waited for room first"
    );
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(
        daemon.get("/v1/events/b-1").await.0,
        404,
        "nothing journaled"
    );
    assert_eq!(
        daemon
            .metric("converge_events_rejected_total{reason=\"Unavailable\"}")
            .await,
        1.0
    );

    // Within the budget, and once the rules have caught up, again and again.
    for round in 0..3 {
        let ids = [format!("ok-{round}-1"), format!("ok-{round}-2")];
        let accepted = post(batch(&[&ids[0], &ids[1]])).await.unwrap();
        assert_eq!(accepted.status(), 202, "round {round}");
    }
    daemon
        .wait_for_metric("converge_events_processed_total", 6.0)
        .await;
}
