//! A damaged database is refused at start and `converge verify` says what
//! is wrong; a database restored from `converge backup` never reissues an
//! idempotency key the original issued (docs/reliability.md, "A damaged
//! database").

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Daemon, Sink, Workspace, actions_settled, event, notify_all_to_sink};

fn workspace(sink: &Sink) -> Workspace {
    notify_all_to_sink(sink)
}

fn database(ws: &Workspace) -> PathBuf {
    ws.dir.path().join("data").join("converge.db")
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// Sends `ids` and waits until each one's action is settled.
async fn deliver(daemon: &Daemon, ids: &[&str]) {
    for id in ids {
        let (status, body) = daemon
            .send_event(&event(id, "task.updated", "task/T-1", json!({})))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    for id in ids {
        daemon.wait_for_trail(id, actions_settled).await;
    }
}

fn keys(sink: &Sink) -> Vec<String> {
    sink.received()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string())
        .collect()
}

/// `converge run` on a database it must refuse: its exit status and
/// stderr, or a failure if it is still running after a minute.
fn run_refused(ws: &Workspace) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["run", "--config"])
        .arg(ws.config())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("converge started on a damaged database");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_refuses_a_database_whose_wal_was_damaged_mid_log_and_verify_says_why() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start();
    let ids: Vec<String> = (1..=40).map(|n| format!("e-{n}")).collect();
    deliver(&daemon, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // Killed: every commit is still in the WAL only.
    daemon.kill9();
    let db = database(&ws);
    let wal = sidecar(&db, "-wal");

    let verified = ws.converge(&["verify"]);
    let out = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(0), "{out}");
    assert!(out.contains("the database is sound"), "{out}");

    // 64 flipped bytes in the middle of the WAL: SQLite would replay the
    // frames before them and silently drop every commit after.
    let mut bytes = std::fs::read(&wal).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 64] {
        *byte = !*byte;
    }
    std::fs::write(&wal, &bytes).unwrap();

    let (code, stderr) = run_refused(&ws);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("the database {} is damaged", db.display())),
        "{stderr}"
    );
    assert!(stderr.contains("fails its checksum"), "{stderr}");
    assert!(stderr.contains("converge backup"), "{stderr}");
    assert!(
        stderr.contains(&format!("move {} aside", wal.display())),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&wal).unwrap(), bytes, "the WAL is untouched");

    let verified = ws.converge(&["verify"]);
    let out = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{out}");
    assert!(
        out.lines()
            .any(|line| line.starts_with("DAMAGED   write-ahead log: frame")
                && line.contains("fails its checksum")),
        "{out}"
    );
    assert!(out.contains("ok        integrity_check"), "{out}");
}

/// Without instance ids, a database restored from a backup took the
/// action ids the original had used after the backup, so its new actions
/// went out with idempotency keys the receiver had already seen, and an
/// idempotent receiver dropped them.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_restored_from_a_backup_never_reissues_the_originals_keys() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start();
    deliver(&daemon, &["a-1", "a-2", "a-3"]).await;

    let backup = ws.dir.path().join("backup.db");
    let out = ws.converge(&["backup", backup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backed up"),
        "{out:?}"
    );
    // The original goes on after the backup: actions 4 and 5.
    deliver(&daemon, &["a-4", "a-5"]).await;
    let original = keys(&sink);
    assert_eq!(original.len(), 5);
    assert!(daemon.terminate().success());

    // Restored: the backup in place of the database.
    let db = database(&ws);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sidecar(&db, suffix));
    }
    std::fs::copy(&backup, &db).unwrap();
    let daemon = ws.start();
    deliver(&daemon, &["b-1", "b-2"]).await;
    let all = keys(&sink);
    let restored = &all[5..];
    assert_eq!(restored.len(), 2);

    // The same action ids again (4 and 5), under new keys.
    let ids = |keys: &[String]| {
        let mut ids: Vec<String> = keys
            .iter()
            .map(|key| key.rsplit_once("-action-").unwrap().1.to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(restored), ["4", "5"]);
    assert_eq!(ids(&original[3..]), ["4", "5"]);
    for key in restored {
        assert!(
            !original.contains(key),
            "{key} was issued before: {original:?}"
        );
    }
    drop(daemon);
}

#[test]
fn backup_of_a_postgres_database_points_to_pg_dump() {
    let ws = Workspace::new(&[], "");
    ws.edit_config(
        "data_dir = \"data\"",
        "data_dir = \"data\"\nurl = \"postgres://converge@localhost/converge\"",
    );
    let backup = ws.dir.path().join("backup.db");
    let out = ws.converge(&["backup", backup.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(
        stderr.contains("converge verify --new-instance"),
        "{stderr}"
    );
    assert!(!backup.exists());
}
