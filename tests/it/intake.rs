//! Bad input at intake gets a clear 4xx and journals nothing; duplicates are
//! acknowledged once.

use serde_json::{Value, json};

use crate::support::{Workspace, event};

const COUNTER_RULE: &str = r#"
// Every event that reaches the rules leaves a decision, so the tests can count them.
notify("counter", event.id);
"#;

async fn journaled(daemon: &crate::support::Daemon) -> f64 {
    daemon.metric("converge_events_accepted_total").await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_journal_nothing() {
    let ws = Workspace::new(&[("counter", COUNTER_RULE)], "");
    let daemon = ws.start();
    let ce = "application/cloudevents+json";

    let cases: Vec<(&str, String, u16, &str)> = vec![
        (ce, "{not json".into(), 400, "malformed_json"),
        (
            ce,
            json!({"specversion": "1.0", "source": "/x", "type": "t"}).to_string(),
            400,
            "invalid_event",
        ),
        (
            ce,
            json!({"specversion": "1.0", "id": "1", "type": "t"}).to_string(),
            400,
            "invalid_event",
        ),
        (
            ce,
            json!({"specversion": "1.0", "id": "1", "source": "/x"}).to_string(),
            400,
            "invalid_event",
        ),
        (
            ce,
            json!({"specversion": "0.3", "id": "1", "source": "/x", "type": "t"}).to_string(),
            400,
            "invalid_event",
        ),
        (ce, "[1, 2]".into(), 400, "invalid_event"),
        // CloudEvents 1.0: a subject is not empty; extension names are a-z, 0-9.
        (
            ce,
            json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "subject": ""})
                .to_string(),
            400,
            "invalid_event",
        ),
        (
            ce,
            json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "Trace-Id": "a"})
                .to_string(),
            400,
            "invalid_event",
        ),
        // Nested past serde_json's recursion limit, within the body limit.
        (
            ce,
            format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)),
            400,
            "malformed_json",
        ),
        (
            ce,
            format!(
                r#"{{"specversion":"1.0","id":"deep","source":"/x","type":"t","data":{}1{}}}"#,
                r#"{"a":"#.repeat(10_000),
                "}".repeat(10_000)
            ),
            400,
            "malformed_json",
        ),
        (
            "application/json",
            event("e-1", "t", "task/T-1", json!({})).to_string(),
            415,
            "unsupported_content_type",
        ),
        (
            "text/plain",
            "hello".into(),
            415,
            "unsupported_content_type",
        ),
        (
            ce,
            format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000)),
            413,
            "body_too_large",
        ),
        (
            "application/cloudevents-batch+json",
            json!([event("b-1", "t", "task/T-1", json!({})), {"specversion": "1.0", "id": "b-2"}])
                .to_string(),
            400,
            "invalid_event",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let (got, answer) = daemon.post("/hooks/test", content_type, body.clone()).await;
        assert_eq!(got, status, "{content_type} {body:.80}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, answer) = daemon
        .post(
            "/hooks/bad%20name",
            ce,
            event("e-2", "t", "task/T-1", json!({})).to_string(),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("unknown_hook"))
    );

    // The missing attribute is named.
    let (_, answer) = daemon
        .post(
            "/hooks/test",
            ce,
            json!({"specversion": "1.0", "id": "1", "source": "/x"}).to_string(),
        )
        .await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`type`"),
        "{answer}"
    );

    // Nothing was journaled: b-1 of the rejected batch included.
    assert_eq!(journaled(&daemon).await, 0.0);
    assert!(
        daemon
            .metric("converge_events_rejected_total{reason=\"MalformedJson\"}")
            .await
            >= 1.0
    );
    let (status, _) = daemon.get("/v1/events/b-1").await;
    assert_eq!(status, 404);

    // And the daemon still takes good events.
    let (status, answer) = daemon
        .send_event(&event("ok-1", "t", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["events"][0]["status"], "accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_is_acknowledged_without_a_second_processing() {
    let ws = Workspace::new(&[("counter", COUNTER_RULE)], "");
    let daemon = ws.start();
    let e = event(
        "dup-1",
        "task.updated",
        "task/T-1",
        json!({"stage": "review"}),
    );
    let (status, first) = daemon.send_event(&e).await;
    assert_eq!(
        (status, first["events"][0]["status"].as_str()),
        (202, Some("accepted"))
    );
    let (status, second) = daemon.send_event(&e).await;
    assert_eq!(
        (status, second["events"][0]["status"].as_str()),
        (202, Some("duplicate"))
    );
    assert_eq!(first["events"][0]["seq"], second["events"][0]["seq"]);

    // A batch with the same id twice, and the same id from another source.
    let mut other_source = e.clone();
    other_source["source"] = Value::from("/elsewhere");
    let batch = json!([
        event("dup-2", "t", "task/T-2", json!({})),
        event("dup-2", "t", "task/T-2", json!({})),
        other_source
    ]);
    let (status, answer) = daemon
        .post(
            "/hooks/test",
            "application/cloudevents-batch+json",
            batch.to_string(),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let statuses: Vec<&str> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "duplicate", "accepted"]);

    let trail = daemon
        .wait_for_trail("dup-1", |t| t["processed_at_ms"].is_i64())
        .await;
    assert_eq!(trail["decisions"].as_array().unwrap().len(), 1);
    let trails = daemon.get("/v1/events/dup-1").await.1;
    let trails: Value = serde_json::from_str(&trails).unwrap();
    assert_eq!(
        trails["events"].as_array().unwrap().len(),
        2,
        "one per source"
    );
    assert_eq!(daemon.metric("converge_events_accepted_total").await, 3.0);
    assert_eq!(daemon.metric("converge_events_duplicate_total").await, 2.0);
}
