//! Three daemons on one PostgreSQL database, under load from senders that
//! spread their events over all three; one daemon is killed with SIGKILL
//! mid-run and restarted. Afterwards: no acknowledged event is lost, every
//! entity's events were applied in order and once (each event sees its
//! entity's event count equal to its own number), no action was performed
//! twice at an idempotent receiver, and every timer fired once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::gates::{TOKEN, accept, channel, override_gate, send};
use crate::postgres::TestDatabase;
use crate::support::{
    Daemon, Sink, Workspace, event, example_rule, plugins_toml, sends_to_sink_toml, under_load_toml,
};

/// Every created task is notified with its number and what its entity has
/// seen, and reminded an hour later.
const RULE: &str = r#"
if event.type == "task.created" {
    notify("ops", `created ${event.id} n=${event.data.n} seen=${entity.events}`);
    schedule("1h", "task.reminder", #{ of: event.id });
}
if event.type == "task.reminder" {
    notify("ops", `reminder ${event.data.of}`);
}
"#;

const DAEMONS: usize = 3;
const SENDERS: usize = 6;
/// Entities per sender: a sender sends each entity's events in order.
const ENTITIES: usize = 3;
const ACKED_PER_PHASE: usize = 120;

fn workspace(db: &TestDatabase, sink: &Sink) -> Workspace {
    let ws = Workspace::new(
        &[("cluster", RULE)],
        &under_load_toml(sink, "2026-11-23T08:00:00Z"),
    );
    db.configure(&ws, "3s");
    ws.listen_on_free_port();
    ws
}

/// Sends its entities' events in rounds, each event until some daemon
/// acknowledges it (trying the next daemon on failure), as a webhook
/// sender with retries does. Records the acknowledged ids.
async fn send_until_stopped(
    sender: usize,
    urls: Vec<String>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    sent_to: Arc<Vec<AtomicUsize>>,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut target = sender;
    for round in 1.. {
        for entity in 0..ENTITIES {
            let id = format!("e-{sender}-{entity}-{round}");
            let body = event(
                &id,
                "task.created",
                &format!("task/S{sender}-{entity}"),
                json!({ "n": round }),
            )
            .to_string();
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let daemon = target % urls.len();
                let sent = client
                    .post(format!("{}/hooks/test", urls[daemon]))
                    .header("content-type", "application/cloudevents+json")
                    .body(body.clone())
                    .send()
                    .await;
                target += 1;
                match sent {
                    Ok(response) if response.status().is_success() => {
                        sent_to[daemon].fetch_add(1, Ordering::Relaxed);
                        acked.lock().unwrap().insert(id.clone());
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    }
}

async fn wait_for_acks(acked: &Mutex<BTreeSet<String>>, target: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < target {
        assert!(Instant::now() < deadline, "load stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status(daemon: &Daemon) -> Value {
    let (code, body) = daemon.get("/v1/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[derive(Default, Debug)]
struct Applied {
    /// Created event id -> (its keys, n, seen).
    created: BTreeMap<String, (BTreeSet<String>, u64, u64)>,
    reminders: BTreeMap<String, BTreeSet<String>>,
    repeated_deliveries: usize,
}

fn applied(sink: &Sink) -> Applied {
    let mut applied = Applied::default();
    let mut seen_keys = BTreeSet::new();
    for received in sink.received() {
        let key = received.headers["idempotency-key"]
            .to_str()
            .unwrap()
            .to_string();
        if !seen_keys.insert(key.clone()) {
            applied.repeated_deliveries += 1;
            continue;
        }
        let message = received.body["decision"]["message"].as_str().unwrap();
        if let Some(rest) = message.strip_prefix("created ") {
            let (id, rest) = rest.split_once(" n=").unwrap();
            let (n, seen) = rest.split_once(" seen=").unwrap();
            let entry = applied.created.entry(id.into()).or_default();
            entry.0.insert(key);
            (entry.1, entry.2) = (n.parse().unwrap(), seen.parse().unwrap());
        } else if let Some(id) = message.strip_prefix("reminder ") {
            applied.reminders.entry(id.into()).or_default().insert(key);
        } else {
            panic!("unexpected delivery: {message}");
        }
    }
    applied
}

#[tokio::test(flavor = "multi_thread")]
async fn three_daemons_share_the_work_and_survive_a_sigkill() {
    let Some(db) = TestDatabase::create("three_daemons_share_the_work_and_survive_a_sigkill")
    else {
        return;
    };
    let sink = Sink::start().await;
    let workspaces: Vec<Workspace> = (0..DAEMONS).map(|_| workspace(&db, &sink)).collect();
    let mut daemons: Vec<Daemon> = workspaces
        .iter()
        .map(|ws| ws.start_with_env(&db.env()))
        .collect();
    let urls: Vec<String> = daemons.iter().map(|d| d.url.clone()).collect();

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let sent_to = Arc::new(
        (0..DAEMONS)
            .map(|_| AtomicUsize::new(0))
            .collect::<Vec<_>>(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            tokio::spawn(send_until_stopped(
                sender,
                urls.clone(),
                acked.clone(),
                sent_to.clone(),
                stop.clone(),
            ))
        })
        .collect();

    wait_for_acks(&acked, ACKED_PER_PHASE).await;
    // Mid-run: requests in flight, partitions and actions held.
    daemons.remove(1).kill9();
    let at_kill = acked.lock().unwrap().len();
    wait_for_acks(&acked, at_kill + ACKED_PER_PHASE).await;
    daemons.insert(1, workspaces[1].start_with_env(&db.env()));
    let at_restart = acked.lock().unwrap().len();
    wait_for_acks(&acked, at_restart + ACKED_PER_PHASE).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Everything acknowledged gets processed and acted on, whoever took it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = status(&daemons[0]).await;
        if status["journal"]["processed"] == status["journal"]["head"]
            && status["actions_pending"] == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{status:#}\n{}",
            daemons[0].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every daemon processed a share (the restarted one since its start).
    for (i, daemon) in daemons.iter().enumerate() {
        let processed = daemon.metric("converge_events_processed_total").await;
        let partitions = daemon.metric("converge_partitions_held").await;
        assert!(
            processed > 0.0 && partitions > 0.0,
            "daemon {i}: {processed} processed, {partitions} partitions\n{}",
            daemon.log()
        );
    }
    for (i, count) in sent_to.iter().enumerate() {
        assert!(
            count.load(Ordering::Relaxed) > 0,
            "daemon {i} acknowledged nothing"
        );
    }

    // The reminders come due on every daemon's clock; each fires once.
    for daemon in &daemons {
        daemon.advance_clock("2h").await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let applied = loop {
        let applied = applied(&sink);
        let status = status(&daemons[0]).await;
        if status["timers_pending"] == 0
            && status["actions_pending"] == 0
            && acked.iter().all(|id| applied.reminders.contains_key(id))
        {
            break applied;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} reminded\n{status:#}",
            acked
                .iter()
                .filter(|id| applied.reminders.contains_key(*id))
                .count(),
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !applied.created.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged, never acted on: {missing:?}"
    );
    for (id, (keys, n, seen)) in &applied.created {
        assert_eq!(keys.len(), 1, "{id} applied under several keys: {keys:?}");
        assert_eq!(
            n, seen,
            "{id}: event {n} of its entity applied as event {seen}"
        );
    }
    for (id, keys) in &applied.reminders {
        assert_eq!(keys.len(), 1, "{id} reminded under several keys: {keys:?}");
    }
    assert_eq!(
        applied.created.keys().collect::<Vec<_>>(),
        applied.reminders.keys().collect::<Vec<_>>(),
        "every created task reminded exactly once"
    );
    let status = status(&daemons[2]).await;
    assert_eq!(status["dead_letters"], 0, "{status:#}");
    // The commands that read the database work on PostgreSQL too.
    let first = acked.iter().next().unwrap();
    let explain = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["explain", first, "--config"])
        .arg(workspaces[0].config())
        .envs(db.env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        explain.status.success() && text.contains(first.as_str()) && text.contains("notify"),
        "{text}\n{}",
        String::from_utf8_lossy(&explain.stderr)
    );
    // Without the password's variable, the command says which one to set.
    let explain = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["explain", first, "--config"])
        .arg(workspaces[0].config())
        .env_remove(crate::postgres::PASSWORD_ENV)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&explain.stderr);
    assert!(!explain.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "note: storage.password_env: {} is not set",
            crate::postgres::PASSWORD_ENV
        )),
        "{err}"
    );
    println!(
        "{} acknowledged ({:?} per daemon), {} effects, {} repeated deliveries dropped by key",
        acked.len(),
        sent_to
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect::<Vec<_>>(),
        applied.created.len() + applied.reminders.len(),
        applied.repeated_deliveries
    );
}

/// A daemon's workspace on the shared database with the example
/// convergence gate and a `greet` rule, rule files not watched: only SIGHUP
/// (or the other daemon) reloads them.
fn gate_workspace(db: &TestDatabase, sink: &Sink) -> Workspace {
    let gate = example_rule("convergence_gate");
    let greet = r#"if event.type == "hello" { notify("ops", "v1"); }"#;
    let ws = Workspace::new(
        &[("convergence_gate", &gate), ("greet", greet)],
        &sends_to_sink_toml(sink),
    );
    ws.edit_config("[rules]\n", "[rules]\nwatch = false\n");
    db.configure(&ws, "3s");
    ws
}

fn rules_hash(status: &Value, rule: &str) -> String {
    status["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == rule)
        .map(|r| r["hash"].as_str().unwrap().to_string())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_and_a_gate_override_reach_every_daemon() {
    let Some(db) = TestDatabase::create("a_reload_and_a_gate_override_reach_every_daemon") else {
        return;
    };
    let sink = Sink::start().await;
    let (a, b) = (gate_workspace(&db, &sink), gate_workspace(&db, &sink));
    let env = [db.env()[0], ("CONVERGE_ADMIN_TOKEN", TOKEN)];
    let (da, db_) = (a.start_with_env(&env), b.start_with_env(&env));

    // A reload on one daemon: the other reloads its own files.
    let before = rules_hash(&status(&db_).await, "greet");
    for ws in [&a, &b] {
        let greet = "if event.type == \"hello\" { notify(\"ops\", \"v2\"); }";
        std::fs::write(ws.dir.path().join("greet.rhai"), greet).unwrap();
    }
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &da.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status(&db_).await;
        if rules_hash(&status, "greet") != before {
            assert_eq!(status["last_reload"]["outcome"], "ok", "{status:#}");
            break;
        }
        assert!(Instant::now() < deadline, "b never reloaded\n{}", db_.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rules_hash(&status(&da).await, "greet"),
        rules_hash(&status(&db_).await, "greet")
    );

    // A send held through one daemon, overridden through the other.
    accept(&da, &channel("c-1", "spring", "email", "approved")).await;
    accept(&da, &channel("c-2", "spring", "paid", "draft")).await;
    accept(&da, &send("s-1", "spring", "email")).await;
    let trail = db_
        .wait_for_trail("s-1", |t| !t["processed_at_ms"].is_null())
        .await;
    assert_eq!(trail["decisions"][0]["decision"]["kind"], "hold_send");
    let request = json!({"by": "mia", "reason": "legal approved email"});
    let (code, body) = override_gate(&db_, "spring", TOKEN, request).await;
    assert_eq!(code, 202, "{body}");
    let received = sink.wait_for(1).await;
    assert_eq!(received[0].body["event"]["id"], "s-1");
    assert_eq!(received[0].body["kind"], "release_send");
    for daemon in [&da, &db_] {
        let (code, body) = daemon.get("/v1/gates/campaign/spring").await;
        assert_eq!(code, 200, "{body}");
        let gate: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(gate["open"], false, "{gate:#}");
        assert_eq!(gate["held_sends"][0]["released_by"], "override by mia");
    }
}

/// Rows of a drop folder both daemons watch.
const BRIEF_RULE: &str = r#"
//! events: brief.imported
notify("ops", `brief ${event.data.brief_id}`);
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_drop_folder_is_read_by_one_daemon_at_a_time_and_taken_over() {
    let Some(db) = TestDatabase::create("a_drop_folder_is_read_by_one_daemon_at_a_time") else {
        return;
    };
    let sink = Sink::start().await;
    let shared = tempfile::tempdir().unwrap();
    let drops = shared.path().join("briefs");
    std::fs::create_dir_all(&drops).unwrap();
    let workspace = || {
        let ws = Workspace::new(
            &[("briefs", BRIEF_RULE)],
            &format!(
                r#"{plugins}
[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "{url}" }}

[[file_drops]]
name = "briefs"
dir = {dir:?}
type = "brief.imported"
subject = "campaign/{{campaign_id}}"
id_field = "brief_id"
settle = "100ms"
rescan = "200ms"
"#,
                plugins = plugins_toml(&sink),
                url = sink.url("/hook"),
                dir = drops.display().to_string(),
            ),
        );
        db.configure(&ws, "2s");
        ws
    };
    let (a, b) = (workspace(), workspace());
    let mut daemons = vec![a.start_with_env(&db.env()), b.start_with_env(&db.env())];
    let drop_file = |name: &str, rows: std::ops::Range<usize>| {
        let mut csv = String::from("campaign_id,brief_id\n");
        for i in rows {
            csv.push_str(&format!("c-{},B-{i}\n", i % 7));
        }
        let temp = drops.join(format!(".{name}.tmp"));
        std::fs::write(&temp, csv).unwrap();
        std::fs::rename(temp, drops.join(name)).unwrap();
    };
    drop_file("one.csv", 0..50);
    let received = sink.wait_for(50).await;
    // The leader: the daemon whose journal took the rows.
    let mut leader = None;
    for (i, daemon) in daemons.iter().enumerate() {
        if daemon.metric("converge_events_accepted_total").await > 0.0 {
            assert!(leader.is_none(), "both daemons read the folder");
            leader = Some(i);
        }
    }
    let leader = leader.expect("one daemon read the folder");
    assert_eq!(received.len(), 50);
    let names = [
        status(&daemons[0]).await["cluster"]["daemon"].clone(),
        status(&daemons[1]).await["cluster"]["daemon"].clone(),
    ];
    let other = 1 - leader;
    // Both daemons say who reads the folder: the status API and the console.
    let duties = |status: &Value, name: &Value| {
        status["cluster"]["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["daemon"] == *name)
            .map(|d| d["duties"].clone())
    };
    let seen = status(&daemons[other]).await;
    assert_eq!(
        duties(&seen, &names[leader]),
        Some(json!([{"kind": "file_drop", "name": "briefs"}])),
        "{seen}"
    );
    assert_eq!(duties(&seen, &names[other]), Some(json!([])), "{seen}");
    let (code, page) = daemons[other].get("/ui/health").await;
    assert_eq!(code, 200);
    let leader_name = names[leader].as_str().unwrap();
    assert!(page.contains("2 daemon(s) share this database"), "{page}");
    assert!(
        page.contains(&format!("read by <code>{leader_name}</code>")),
        "{page}"
    );
    let (_, page) = daemons[leader].get("/ui/health").await;
    assert!(page.contains("read by this daemon"), "{page}");
    assert!(!page.contains("id=\"unrun\""), "{page}");

    // The leader dies; the other takes the folder over once its lease expires.
    daemons.remove(leader).kill9();
    drop_file("two.csv", 50..80);
    // Every row acted on (a delivery the dead leader had in flight may come
    // twice, under one idempotency key).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut briefs: Vec<String> = sink
            .received()
            .iter()
            .map(|r| r.body["decision"]["message"].as_str().unwrap().to_string())
            .collect();
        briefs.sort();
        briefs.dedup();
        if briefs.len() == 80 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 80 rows acted on: {briefs:?}\n{}",
            briefs.len(),
            daemons[0].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        daemons[0].metric("converge_events_accepted_total").await >= 30.0,
        "{}",
        daemons[0].log()
    );
    assert!(drops.join("processed/two.csv").exists());
    // The survivor runs the folder now, and says so.
    let seen = status(&daemons[0]).await;
    assert_eq!(
        duties(&seen, &names[other]),
        Some(json!([{"kind": "file_drop", "name": "briefs"}])),
        "{seen}"
    );
}
