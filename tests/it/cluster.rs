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

use crate::postgres::TestDatabase;
use crate::support::{Daemon, Sink, Workspace, event, plugins_toml};

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
        &format!(
            r#"{plugins}
[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "{url}" }}

[dispatch]
initial_backoff = "50ms"
max_backoff = "200ms"
max_attempts = 1000
shutdown_grace = "1s"

[clock]
mode = "manual"
start = "2026-11-23T08:00:00Z"
"#,
            plugins = plugins_toml(sink),
            url = sink.url("/hook"),
        ),
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
