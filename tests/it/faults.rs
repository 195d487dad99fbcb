//! Storage faults: the disk fills up (a file-size limit on the daemon's
//! process stands in for it), PostgreSQL connections are lost. The daemon
//! keeps running and refuses new events (503) while it cannot write, then
//! resumes by itself: every event it acknowledged, before and after, is
//! processed exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::postgres::TestDatabase;
use crate::support::{Daemon, Sink, Workspace, event, under_load_toml};

/// Every created task is notified once, through the sink.
const RULE: &str = r#"
if event.type == "task.created" {
    notify("ops", `created ${event.id}`);
}
"#;

/// How many clients send events at once while the disk fills.
const SENDERS: usize = 4;

fn workspace(sink: &Sink) -> Workspace {
    Workspace::new(
        &[("faults", RULE)],
        &under_load_toml(sink, "2026-11-23T08:00:00Z"),
    )
}

/// Posts a `task.created` event; returns the status and `Retry-After`.
async fn post(url: &str, id: &str) -> (u16, Option<String>) {
    let body = event(id, "task.created", &format!("task/{id}"), json!({})).to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    match client
        .post(format!("{url}/hooks/test"))
        .header("content-type", "application/cloudevents+json")
        .body(body)
        .send()
        .await
    {
        Ok(response) => (
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
        ),
        // The connection broke: the sender does not know; counted apart.
        Err(_) => (0, None),
    }
}

async fn status(daemon: &Daemon) -> Value {
    let (code, body) = daemon.get("/v1/status").await;
    assert_eq!(code, 200, "{body}\n{}", daemon.log());
    serde_json::from_str(&body).unwrap()
}

fn running(daemon: &mut Daemon) -> bool {
    daemon.child.try_wait().unwrap().is_none()
}

/// Waits until the sink has a delivery for every acknowledged event, then
/// checks that it got nothing else and that each event's notification
/// carries one idempotency key: each event was processed once (repeated
/// deliveries of one action, which an idempotent receiver drops, are
/// allowed).
async fn assert_processed_once(sink: &Sink, acked: &BTreeSet<String>, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for received in sink.received() {
            let message = received.body["decision"]["message"].as_str().unwrap();
            let id = message.strip_prefix("created ").unwrap().to_string();
            let key = received.headers["idempotency-key"].to_str().unwrap();
            keys.entry(id).or_default().insert(key.to_string());
        }
        let delivered: BTreeSet<String> = keys.keys().cloned().collect();
        if delivered.is_superset(acked) || Instant::now() > deadline {
            let missing: Vec<_> = acked.difference(&delivered).collect();
            assert!(
                missing.is_empty(),
                "acknowledged but never processed: {missing:?}\n{}",
                daemon.log()
            );
            let unacked: Vec<_> = delivered.difference(acked).collect();
            assert!(unacked.is_empty(), "processed but refused: {unacked:?}");
            let twice: Vec<_> = keys.iter().filter(|(_, k)| k.len() > 1).collect();
            assert!(twice.is_empty(), "processed more than once: {twice:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The size of the largest file in `dir`.
fn largest_file(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .max()
        .unwrap()
}

fn set_file_size_limit(pid: u32, limit: u64) {
    let limit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain system call on another process's limits, with a
    // valid `rlimit` and no old value asked for.
    let done = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(done, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Starts a daemon on a disk that is nearly full (a file-size limit a
/// little above its database's largest file) and sends events from
/// several clients at once, so rule results and outcomes are being
/// committed when it fills, until one is refused. Returns the daemon and
/// the events it acknowledged.
async fn fill_the_disk(ws: &Workspace) -> (Daemon, BTreeSet<String>) {
    // A first run creates the database.
    assert!(ws.start().terminate().success());
    let data = ws.dir.path().join("data");
    let limit = largest_file(&data) + 256 * 1024;
    let daemon = ws.start_configured(&[], move |command| {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Past the limit a write fails with EFBIG, as on a full
                // disk, instead of the signal killing the process.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let full = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (url, acked, full) = (daemon.url.clone(), acked.clone(), full.clone());
            tokio::spawn(async move {
                for n in 1..=5_000 {
                    if full.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let id = format!("before-{sender}-{n}");
                    match post(&url, &id).await {
                        (202, _) => {
                            acked.lock().unwrap().insert(id);
                        }
                        (503, retry_after) => {
                            full.store(true, Ordering::Relaxed);
                            return match retry_after.as_deref() {
                                Some("1") => Ok(()),
                                other => Err(format!("{id}: Retry-After {other:?}")),
                            };
                        }
                        other => return Err(format!("{id}: {other:?}")),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for sender in senders {
        if let Err(e) = sender.await.unwrap() {
            panic!("{e}\n{}", daemon.log());
        }
    }
    assert!(full.load(Ordering::Relaxed), "the disk never filled");
    // Full from now on, for every file: under the limit alone a checkpoint
    // that copied the WAL into the database starts the WAL over and gives
    // the journal room again, sooner or later (as the blocks a real full
    // disk had already given the WAL would), and the test would race it.
    set_file_size_limit(daemon.child.id(), 0);
    let acked = acked.lock().unwrap().clone();
    (daemon, acked)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_new_events_until_space_frees_and_loses_none() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let (mut daemon, mut acked) = fill_the_disk(&ws).await;

    // The daemon stays up, refusing new events, and says why.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(running(&mut daemon), "the daemon exited:\n{}", daemon.log());
    for n in 1..=3 {
        let (code, _) = post(&daemon.url, &format!("refused-{n}")).await;
        assert_eq!(code, 503, "{}", daemon.log());
    }
    let storage = &status(&daemon).await["storage"];
    assert_eq!(storage["state"], "failing", "{storage}");
    assert!(storage["since"].is_string(), "{storage}");
    assert!(
        storage["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{storage}"
    );
    assert_eq!(daemon.metric("converge_storage_failing").await, 1.0);
    assert!(daemon.metric("converge_storage_errors_total").await >= 1.0);

    // Space frees: the daemon resumes by itself.
    set_file_size_limit(daemon.child.id(), libc::RLIM_INFINITY);
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 1..=20 {
        let id = format!("after-{n}");
        loop {
            match post(&daemon.url, &id).await {
                (202, _) => break,
                (503, _) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("{id}: {other:?}\n{}", daemon.log()),
            }
        }
        acked.insert(id);
    }
    assert_processed_once(&sink, &acked, &daemon).await;
    let storage = &status(&daemon).await["storage"];
    assert_eq!(
        storage,
        &json!({"state": "ok", "since": null, "error": null})
    );
    assert_eq!(daemon.metric("converge_storage_failing").await, 0.0);
    assert!(
        daemon.log().contains("storage works again"),
        "{}",
        daemon.log()
    );
    assert!(running(&mut daemon), "{}", daemon.log());
    assert!(daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_postgres_connections_pause_the_daemon_and_lose_no_event() {
    let Some(db) = TestDatabase::create("lost_postgres_connections") else {
        return;
    };
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    db.configure(&ws, "3s");
    let mut daemon = ws.start_with_env(&db.env());

    // A trickle of events, each sent until acknowledged, as a webhook
    // sender with retries does.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let answers = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let (url, acked, answers, stop) = (
            daemon.url.clone(),
            acked.clone(),
            answers.clone(),
            stop.clone(),
        );
        async move {
            for n in 1.. {
                let id = format!("trickle-{n}");
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (code, _) = post(&url, &id).await;
                    *answers.lock().unwrap().entry(code).or_default() += 1;
                    if code == 202 {
                        acked.lock().unwrap().insert(id);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        db.terminate_connections();
    }
    // It takes events again after the last loss.
    let before = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < before + 20 {
        assert!(
            Instant::now() < deadline,
            "intake did not resume:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();

    assert!(running(&mut daemon), "the daemon exited:\n{}", daemon.log());
    let answers = answers.lock().unwrap().clone();
    assert!(
        answers.keys().all(|code| [202, 503].contains(code)),
        "{answers:?}\n{}",
        daemon.log()
    );
    assert!(answers.contains_key(&503), "never refused: {answers:?}");
    assert!(
        daemon.log().contains("connected to PostgreSQL again"),
        "{}",
        daemon.log()
    );
    let acked = acked.lock().unwrap().clone();
    assert_processed_once(&sink, &acked, &daemon).await;
    // The server's own words, not just "db error".
    assert!(
        daemon
            .log()
            .contains("terminating connection due to administrator command"),
        "{}",
        daemon.log()
    );
    let storage = &status(&daemon).await["storage"];
    assert_eq!(storage["state"], "ok", "{storage}");
    assert!(daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_whose_disk_is_full_stops_on_sigterm_and_the_next_start_loses_nothing() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let (daemon, mut acked) = fill_the_disk(&ws).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Stopping does not wait for the disk: the unrecorded work is
    // replayed from the journal at the next start.
    let asked = Instant::now();
    assert!(daemon.terminate().success());
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );

    let daemon = ws.start();
    for n in 1..=5 {
        let id = format!("after-{n}");
        assert_eq!(post(&daemon.url, &id).await.0, 202, "{}", daemon.log());
        acked.insert(id);
    }
    assert_processed_once(&sink, &acked, &daemon).await;
    assert!(daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_down_for_seconds_is_logged_once_per_failing_stage_not_at_every_retry() {
    let Some(db) = TestDatabase::create("a_database_down_for_seconds") else {
        return;
    };
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let drops = ws.dir.path().join("drops");
    ws.edit_config(
        "[storage]\n",
        &format!(
            "[[file_drops]]\nname = \"briefs\"\ndir = {:?}\ntype = \"brief.imported\"\nsubject = \"campaign/{{campaign_id}}\"\n\n[storage]\n",
            drops.display().to_string()
        ),
    );
    db.configure(&ws, "3s");
    let mut daemon = ws.start_with_env(&db.env());
    assert_eq!(post(&daemon.url, "before").await.0, 202);
    sink.wait_for(1).await;
    let logged_before = daemon.log().lines().count();

    // Six seconds without the database: a dozen claims of actions, six
    // rounds of the drop folder's lease and the processing loop's retries.
    db.refuse_connections(true);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(post(&daemon.url, "while-down").await.0, 503);
    let failing = status_while_failing(&daemon).await;
    db.refuse_connections(false);

    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&daemon).await["storage"]["state"] != "ok" {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(post(&daemon.url, "after").await.0, 202);
    sink.wait_for(2).await;
    assert!(running(&mut daemon), "{}", daemon.log());

    // Each stage that failed says when it works again (the log is written
    // a little behind).
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = daemon.log();
        let failed = failed_stages(&log[..]);
        let resumed = |stage: &String| {
            log.contains(&format!("storage works again; resuming stage=\"{stage}\""))
        };
        if failed.iter().all(resumed) {
            break log;
        }
        assert!(Instant::now() < deadline, "a stage never resumed:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let failed = failed_stages(&log);
    for expected in ["action claims", "source leases", "processing"] {
        assert!(failed.contains(&expected.to_string()), "{expected}:\n{log}");
    }
    // One line per failing stage, not one per retry; a lost connection is
    // named once per connection and the folder's lease once.
    let outage: Vec<&str> = log
        .lines()
        .skip(logged_before)
        .filter(|line| line.contains(" ERROR ") || line.contains(" WARN "))
        .collect();
    let mut stages: Vec<&String> = failed.iter().collect();
    stages.dedup();
    assert_eq!(
        stages.len(),
        failed.len(),
        "a stage logged twice: {outage:#?}"
    );
    assert!(
        !log.contains("still failing"),
        "a line per retry: {outage:#?}"
    );
    assert!(outage.len() <= 12, "{} lines: {outage:#?}", outage.len());
    assert!(failing.contains("connections"), "{failing}");
    assert!(daemon.terminate().success());
}

/// The stages the log says failed, in order, once per line.
fn failed_stages(log: &str) -> Vec<String> {
    let mut stages: Vec<String> = log
        .lines()
        .filter(|line| line.contains("storage failed; retrying"))
        .filter_map(|line| line.split("stage=\"").nth(1)?.split('"').next())
        .map(String::from)
        .collect();
    stages.sort();
    stages
}

/// The storage error `/v1/status` gives while the database is down (it
/// answers 503 then, with the reason).
async fn status_while_failing(daemon: &Daemon) -> String {
    let (code, body) = daemon.get("/v1/status").await;
    assert_eq!(code, 503, "{body}");
    body
}
