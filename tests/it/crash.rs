//! Crashes under load: events keep arriving while the daemon is killed with
//! SIGKILL three times and restarted, each time "later" on a manual clock.
//! Afterwards every acknowledged event is journaled and processed, every
//! action was performed, an idempotent receiver (dropping repeats of an
//! `Idempotency-Key`) applied each effect once, and every timer that fell
//! due while the daemon was down fired exactly once. Loopback only, and
//! bounded: a few hundred events. `converge-load soak` runs the same for
//! minutes. The same test runs on SQLite and on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::postgres::TestDatabase;
use crate::support::{Daemon, Sink, Workspace, event, under_load_toml};

/// Every created task is notified at once and reminded an hour later.
const RULE: &str = r#"
if event.type == "task.created" {
    notify("ops", `created ${event.id}`);
    schedule("1h", "task.reminder", #{ of: event.id });
}
if event.type == "task.reminder" {
    notify("ops", `reminder ${event.data.of} late=${event.data.timer.late}`);
}
"#;

const KILLS: usize = 3;
/// Acknowledged events per run before the kill.
const ACKED_PER_RUN: usize = 80;
const SENDERS: usize = 4;

/// The clock of run `n`: two hours after the last, so the reminders of
/// run `n - 1` fell due while the daemon was down.
fn clock_start(run: usize) -> String {
    format!("2026-11-23T{:02}:00:00Z", 2 * run)
}

/// What an idempotent receiver made of the deliveries: the effects it
/// applied (the first delivery of each key), by what they are about.
#[derive(Default)]
struct Applied {
    /// Created event id -> the keys of the notifications about it.
    created: BTreeMap<String, BTreeSet<String>>,
    /// Created event id -> the keys of its reminders, and whether late.
    reminders: BTreeMap<String, BTreeSet<String>>,
    late_reminders: usize,
    deliveries: usize,
    repeated_deliveries: usize,
}

fn applied(sink: &Sink) -> Applied {
    let mut applied = Applied::default();
    let mut seen = BTreeSet::new();
    for received in sink.received() {
        applied.deliveries += 1;
        let key = received.headers["idempotency-key"]
            .to_str()
            .unwrap()
            .to_string();
        if !seen.insert(key.clone()) {
            // The receiver has seen this key: it drops the repeat.
            applied.repeated_deliveries += 1;
            continue;
        }
        let message = received.body["decision"]["message"].as_str().unwrap();
        if let Some(id) = message.strip_prefix("created ") {
            applied.created.entry(id.into()).or_default().insert(key);
        } else if let Some(rest) = message.strip_prefix("reminder ") {
            let (id, late) = rest.split_once(" late=").unwrap();
            applied.late_reminders += usize::from(late == "true");
            applied.reminders.entry(id.into()).or_default().insert(key);
        } else {
            panic!("unexpected delivery: {message}");
        }
    }
    applied
}

/// Posts events until told to stop, whether or not the daemon is up;
/// records the ids it got a 2xx for.
async fn send_until_stopped(
    url: String,
    next: Arc<AtomicUsize>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let id = format!("c-{n}");
        let body = event(
            &id,
            "task.created",
            &format!("task/T-{}", n % 13),
            json!({}),
        );
        let sent = client
            .post(format!("{url}/hooks/test"))
            .header("content-type", "application/cloudevents+json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                acked.lock().unwrap().insert(id);
            }
            // Refused (503) or the daemon is down: not acknowledged, so not promised.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn status(daemon: &Daemon) -> Value {
    let (code, body) = daemon.get("/v1/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_nothing_acknowledged_and_applies_nothing_twice() {
    sigkill_under_load(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_on_postgres_loses_nothing_and_applies_nothing_twice() {
    if let Some(db) = TestDatabase::create("sigkill_under_load_on_postgres") {
        sigkill_under_load(Some(&db)).await;
    }
}

async fn sigkill_under_load(db: Option<&TestDatabase>) {
    let sink = Sink::start().await;
    let ws = Workspace::new(&[("crash", RULE)], &under_load_toml(&sink, &clock_start(0)));
    // One address across restarts, so the senders need not follow the daemon.
    ws.listen_on_free_port();
    if let Some(db) = db {
        // Short leases: the restarted daemon takes over its dead self's.
        db.configure(&ws, "2s");
    }
    let start = |ws: &Workspace| match db {
        Some(db) => ws.start_with_env(&db.env()),
        None => ws.start(),
    };

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut daemon = start(&ws);
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            tokio::spawn(send_until_stopped(
                daemon.url.clone(),
                next.clone(),
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();

    for run in 1..=KILLS {
        // Kill mid-stream: requests are in flight, actions are running.
        let target = acked.lock().unwrap().len() + ACKED_PER_RUN;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < target {
            assert!(Instant::now() < deadline, "load stalled\n{}", daemon.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        daemon.kill9();
        ws.edit_config(&clock_start(run - 1), &clock_start(run));
        daemon = start(&ws);
    }
    // Some load on the last run too, then quiet.
    let target = acked.lock().unwrap().len() + ACKED_PER_RUN / 2;
    while acked.lock().unwrap().len() < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Every acknowledged event is processed, then the last run's reminders
    // come due on the clock.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = status(&daemon).await;
        if status["journal"]["processed"] == status["journal"]["head"]
            && status["actions_pending"] == 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "{status:#}\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.advance_clock("2h").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let applied = loop {
        let applied = applied(&sink);
        let status = status(&daemon).await;
        let settled = status["timers_pending"] == 0
            && status["actions_pending"] == 0
            && status["journal"]["processed"] == status["journal"]["head"];
        if settled && acked.iter().all(|id| applied.reminders.contains_key(id)) {
            break applied;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events reminded\n{status:#}\n{}",
            acked
                .iter()
                .filter(|id| applied.reminders.contains_key(*id))
                .count(),
            acked.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Acknowledged = journaled and processed, and every action performed.
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !applied.created.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never acted on: {missing:?}"
    );
    for id in acked.iter().step_by(37) {
        let (code, body) = daemon.get(&format!("/v1/events/{id}")).await;
        assert_eq!(code, 200, "{id}: {body}");
        let trail: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            trail["events"].as_array().unwrap().len(),
            1,
            "journaled once"
        );
        assert!(trail["events"][0]["processed_at_ms"].is_i64());
    }
    let status = status(&daemon).await;
    assert_eq!(status["dead_letters"], 0, "{status:#}");

    // Each effect once: one key per notification and per reminder, and
    // one reminder per task, whatever was delivered again after a kill.
    // (Events whose acknowledgement was lost in a kill may have been
    // journaled too; they obey the same rules.)
    for (id, keys) in applied.created.iter().chain(&applied.reminders) {
        assert_eq!(keys.len(), 1, "{id} applied under several keys: {keys:?}");
    }
    assert_eq!(
        applied.created.keys().collect::<Vec<_>>(),
        applied.reminders.keys().collect::<Vec<_>>(),
        "every created task reminded exactly once"
    );
    // The reminders of the first runs fell due while the daemon was down.
    // (How many depends on how much of each run's load was processed
    // before its kill; on PostgreSQL a restarted daemon first waits for its
    // dead predecessor's leases to expire, so more of the backlog can fall
    // to the last run, whose reminders are not late.)
    let min_late = if db.is_some() { 1 } else { ACKED_PER_RUN };
    assert!(
        applied.late_reminders >= min_late,
        "{}",
        applied.late_reminders
    );
    println!(
        "{} acknowledged, {} effects applied, {} deliveries ({} repeats dropped by key), {} late reminders",
        acked.len(),
        applied.created.len() + applied.reminders.len(),
        applied.deliveries,
        applied.repeated_deliveries,
        applied.late_reminders
    );
}
