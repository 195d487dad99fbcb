//! `storage.retention` in the daemon: on its clock, processed events past
//! the retention are pruned in the background and archived first; what a
//! timer still waits on stays.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, Workspace, event};

const RULE: &str = r#"
if event.type == "task.created" {
    notify("ops", `created ${event.id}`);
    if event.data.remind { schedule("30d", "task.remind"); }
}
"#;

async fn processed(daemon: &Daemon, id: &str) {
    daemon
        .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
        .await;
}

async fn journaled(daemon: &Daemon, id: &str) -> bool {
    let (status, _) = daemon.get(&format!("/v1/events/{id}")).await;
    status == 200
}

fn archived(path: &std::path::Path) -> Vec<Value> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_past_the_retention_are_archived_then_pruned_and_what_is_needed_stays() {
    let ws = Workspace::new(
        &[("created", RULE)],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T10:00:00Z\"\n",
    );
    ws.edit_config(
        "data_dir = \"data\"",
        "data_dir = \"data\"\nretention = \"7d\"\nretention_archive = \"archive\"",
    );
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", "retention-admin-token-0123456789")]);
    for (id, remind) in [("old-1", false), ("old-2", false), ("waits", true)] {
        let (status, body) = daemon
            .send_event(&event(
                id,
                "task.created",
                &format!("task/{id}"),
                json!({"remind": remind}),
            ))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    for id in ["old-1", "old-2", "waits"] {
        processed(&daemon, id).await;
    }
    // Six days on, nothing is old enough.
    daemon.advance_clock("6d").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(journaled(&daemon, "old-1").await);

    daemon.advance_clock("2d").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while journaled(&daemon, "old-2").await {
        assert!(Instant::now() < deadline, "never pruned:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!journaled(&daemon, "old-1").await);
    // Its timer is pending for 30 days: the event that set it stays.
    assert!(journaled(&daemon, "waits").await);
    // The entity states stay.
    let (status, page) = daemon.get("/ui/records/task/old-1").await;
    assert_eq!(status, 200, "{page}");

    let lines = archived(&ws.dir.path().join("archive/events-2026-11-23.ndjson.gz"));
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["old-1", "old-2"]);
    assert_eq!(lines[0]["event"]["data"], json!({"remind": false}));
    assert_eq!(
        lines[0]["decisions"][0]["decision"]["message"],
        "created old-1"
    );
    let (_, metrics) = daemon.get("/metrics").await;
    assert!(
        metrics.contains("converge_events_pruned_total 2"),
        "{metrics}"
    );

    // Explain says why an old event is gone.
    let out = ws.converge(&["explain", "old-1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("storage.retention"), "{stderr}");
}
