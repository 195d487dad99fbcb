//! File drops (`[[file_drops]]`) through the real binary: a file renamed
//! into the folder becomes events the rules act on, bad rows are reported by
//! line, the same file dropped again adds nothing, and a kill in the middle
//! of a large file loses and duplicates nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Daemon, Workspace};

const BRIEF_RULE: &str = r#"
//! events: brief.imported
notify("ops", `brief ${event.data.brief_id} for ${entity.id} from ${event.data.owner}`);
"#;

/// The `briefs` drop folder (`drops/briefs`): rows of campaign_id,
/// brief_id, owner become `brief.imported` events about the campaign.
pub const BRIEFS_DROP: &str = r#"
[[file_drops]]
name = "briefs"
dir = "drops/briefs"
type = "brief.imported"
subject = "campaign/{campaign_id}"
id_field = "brief_id"
settle = "100ms"
rescan = "200ms"
chunk_rows = 100
"#;

fn workspace() -> (Workspace, PathBuf) {
    let ws = Workspace::new(&[("briefs", BRIEF_RULE)], BRIEFS_DROP);
    let dir = ws.dir.path().join("drops/briefs");
    std::fs::create_dir_all(&dir).unwrap();
    (ws, dir)
}

/// Writes under a temporary name, then renames into the folder: the
/// convention for complete files.
fn drop_file(dir: &Path, name: &str, contents: &str) {
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(temp, dir.join(name)).unwrap();
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn processed(trail: &Value) -> bool {
    !trail["processed_at_ms"].is_null()
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_rows_become_events_and_bad_rows_are_reported_by_line() {
    let (ws, dir) = workspace();
    let daemon = ws.start();
    let csv = "campaign_id,brief_id,owner\nspring,B-1,lea\n,B-2,max\nsummer,B-3,ana\n";
    drop_file(&dir, "briefs.csv", csv);

    wait_for_file(&dir.join("processed/briefs.csv"));
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("processed/briefs.csv.errors.json")).unwrap(),
    )
    .unwrap();
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(errors[0]["line"], 3, "{report}");
    assert!(!dir.join("briefs.csv").exists());

    let trail = daemon.wait_for_trail("B-1", processed).await;
    assert_eq!(trail["source"], "converge-filedrop/briefs");
    assert_eq!(trail["subject"], "campaign/spring");
    assert_eq!(
        trail["decisions"][0]["decision"]["message"],
        "brief B-1 for spring from lea"
    );
    daemon.wait_for_trail("B-3", processed).await;
    let (status, _) = daemon.get("/v1/events/B-2").await;
    assert_eq!(status, 404);

    // The same export dropped again: nothing new is journaled.
    drop_file(&dir, "briefs.csv", csv);
    wait_for_file(&dir.join("processed/briefs-1.csv"));
    daemon
        .wait_for_metric("converge_events_duplicate_total", 2.0)
        .await;
    assert_eq!(daemon.metric("converge_journal_events").await, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_in_the_middle_of_a_large_file_loses_and_duplicates_nothing() {
    const ROWS: usize = 20_000;
    let (ws, dir) = workspace();
    let daemon = ws.start();
    let mut csv = String::from("campaign_id,brief_id,owner\n");
    for i in 0..ROWS {
        csv.push_str(&format!("c-{},B-{i},owner-{}\n", i % 100, i % 7));
    }
    drop_file(&dir, "big.csv", &csv);
    // Kill it once some rows are in, most likely well before the last one.
    wait_until(&daemon, |journaled| journaled >= 1000.0).await;
    daemon.kill9();

    let daemon = ws.start();
    wait_for_file(&dir.join("processed/big.csv"));
    daemon
        .wait_for_metric("converge_journal_events", ROWS as f64)
        .await;
    // Every row once: the first id, the last, and no more than ROWS events.
    daemon.wait_for_trail("B-0", processed).await;
    daemon
        .wait_for_trail(&format!("B-{}", ROWS - 1), processed)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        daemon.metric("converge_journal_events").await,
        ROWS as f64,
        "{}",
        daemon.log()
    );
}

async fn wait_until(daemon: &Daemon, done: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if done(daemon.metric("converge_journal_events").await) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no rows journaled\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn bad_drop_settings_name_their_keys() {
    let ws = Workspace::new(
        &[],
        r#"
[[file_drops]]
name = "briefs"
dir = "drops"
subject = "campaign/{campaign_id"
settle = "soon"
"#,
    );
    let out = ws.converge(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for key in [
        "file_drops[0].settle:",
        "file_drops[0].subject:",
        "file_drops[0].type",
    ] {
        assert!(stderr.contains(key), "no `{key}` in:\n{stderr}");
    }
}

#[test]
fn a_chunk_must_fit_in_the_in_flight_budget() {
    let ws = Workspace::new(
        &[],
        r#"
[[file_drops]]
name = "briefs"
dir = "drops"
type = "brief.imported"
chunk_rows = 100
"#,
    );
    ws.edit_config(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nmax_events_in_flight = 10",
    );
    let out = ws.converge(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("file_drops[0].chunk_rows: must not exceed server.max_events_in_flight (10)"),
        "{stderr}"
    );
}
