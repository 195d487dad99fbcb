//! `converge-load soak`: the crash test of `tests/it/crash.rs`, for minutes.
//! Events keep arriving while the daemon is killed with SIGKILL `--kills`
//! times and restarted, each time two hours later on a manual clock; then it
//! checks and prints what a user relies on: every acknowledged event acted
//! on, each effect applied once at a receiver that drops repeated
//! `Idempotency-Key`s, every reminder timer fired once, late when it fell
//! due while the daemon was down. Exits 1 when any of that fails.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::Daemon;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// How long to send events for.
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// SIGKILLs, spread evenly over the run.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

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

/// The manual clock of run `n`: two hours after the previous run's, so the
/// reminders of run `n - 1` fell due while the daemon was down.
fn clock_start(run: usize) -> String {
    let first = chrono::DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z").expect("a valid time");
    (first + chrono::Duration::hours(2 * run as i64))
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What the idempotent receiver saw.
#[derive(Default)]
struct Receiver {
    keys: HashSet<String>,
    /// Created event id -> keys of its notifications.
    created: BTreeMap<String, BTreeSet<String>>,
    /// Created event id -> keys of its reminders.
    reminders: BTreeMap<String, BTreeSet<String>>,
    late_reminders: u64,
    deliveries: u64,
    repeats: u64,
}

impl Receiver {
    fn receive(&mut self, key: String, body: &[u8]) {
        self.deliveries += 1;
        if !self.keys.insert(key.clone()) {
            self.repeats += 1;
            return;
        }
        let body: Value = serde_json::from_slice(body).unwrap_or_default();
        let message = body["decision"]["message"].as_str().unwrap_or_default();
        if let Some(id) = message.strip_prefix("created ") {
            self.created.entry(id.into()).or_default().insert(key);
        } else if let Some((id, late)) = message
            .strip_prefix("reminder ")
            .and_then(|rest| rest.split_once(" late="))
        {
            self.late_reminders += u64::from(late == "true");
            self.reminders.entry(id.into()).or_default().insert(key);
        }
    }
}

#[derive(Default)]
struct Sent {
    acked: Mutex<BTreeSet<String>>,
    refused: AtomicU64,
    failed: AtomicU64,
}

pub async fn run(args: SoakArgs, converge: &Path, plugin: &Path) -> anyhow::Result<()> {
    let receiver = Arc::new(Mutex::new(Receiver::default()));
    let sink = start_receiver(receiver.clone()).await?;
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.path().join("converge.toml");
    std::fs::write(dir.path().join("soak.rhai"), RULE)?;
    let write_config = |run: usize| {
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:{port}"

[storage]
data_dir = "data"

[rules]
files = ["soak.rhai"]

[plugins.webhook-out]
component = {plugin:?}
http_hosts = ["{sink}"]
allow_plain_http = true

[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "http://{sink}/hook" }}

[dispatch]
initial_backoff = "50ms"
max_backoff = "1s"
max_attempts = 1000
shutdown_grace = "1s"

[clock]
mode = "manual"
start = "{start}"
"#,
                plugin = plugin.display().to_string(),
                start = clock_start(run),
            ),
        )
    };
    write_config(0)?;
    let mut daemon = Daemon::start(converge, &config)?;
    let url = daemon.url.clone();
    println!(
        "converge-load soak: {} min, {} kills, {} senders, daemon at {url}",
        args.minutes, args.kills, args.concurrency
    );

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..args.concurrency)
        .map(|_| {
            tokio::spawn(send_until_stopped(
                client.clone(),
                format!("{url}/hooks/soak"),
                next.clone(),
                sent.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let started = Instant::now();
    let mut peak_rss_kib = 0;
    for run in 1..=args.kills {
        let at = total.mul_f64(run as f64 / (args.kills + 1) as f64);
        tokio::time::sleep_until((started + at).into()).await;
        peak_rss_kib = peak_rss_kib.max(daemon.peak_rss_kib().unwrap_or(0));
        daemon.kill9();
        write_config(run)?;
        daemon = Daemon::start(converge, &config)?;
        println!(
            "  {:>6.1}s kill {run}: {} acknowledged so far",
            started.elapsed().as_secs_f64(),
            sent.acked.lock().unwrap().len()
        );
    }
    tokio::time::sleep_until((started + total).into()).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await?;
    }

    // Drain, then let the last run's reminders come due.
    let status = wait_settled(&client, &url, false).await?;
    let advance = hyper::Request::post(format!("{url}/v1/clock"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", crate::ADMIN_TOKEN))
        .body(Full::new(Bytes::from(r#"{"advance": "2h"}"#)))?;
    let moved = client.request(advance).await?;
    if !moved.status().is_success() {
        bail!("moving the clock: {}", moved.status());
    }
    let acked = sent.acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let reminded = {
            let r = receiver.lock().unwrap();
            acked.iter().all(|id| r.reminders.contains_key(id))
        };
        if reminded || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let final_status = wait_settled(&client, &url, true).await?;
    peak_rss_kib = peak_rss_kib.max(daemon.peak_rss_kib().unwrap_or(0));
    daemon.stop();

    let r = receiver.lock().unwrap();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !r.created.contains_key(*id) || !r.reminders.contains_key(*id))
        .collect();
    let twice = r
        .created
        .values()
        .chain(r.reminders.values())
        .filter(|keys| keys.len() > 1)
        .count();
    let unreminded = r
        .created
        .keys()
        .filter(|id| !r.reminders.contains_key(*id))
        .count();
    println!(
        "sent: {} acknowledged, {} refused (503), {} failed (daemon down or killed mid-request)",
        acked.len(),
        sent.refused.load(Ordering::Relaxed),
        sent.failed.load(Ordering::Relaxed)
    );
    println!(
        "journal: head {}, processed {}; before the last clock move: {} timers pending",
        final_status["journal"]["head"],
        final_status["journal"]["processed"],
        status["timers_pending"]
    );
    println!(
        "receiver: {} deliveries, {} repeats dropped by idempotency key, {} effects applied ({} notifications, {} reminders, {} of them late)",
        r.deliveries,
        r.repeats,
        r.created.len() + r.reminders.len(),
        r.created.len(),
        r.reminders.len(),
        r.late_reminders
    );
    println!(
        "acknowledged but not acted on: {}; effects applied twice: {twice}; tasks not reminded: {unreminded}; dead letters: {}",
        lost.len(),
        final_status["dead_letters"]
    );
    println!("daemon peak RSS: {:.1} MiB", peak_rss_kib as f64 / 1024.0);
    if !lost.is_empty() || twice > 0 || unreminded > 0 || final_status["dead_letters"] != 0 {
        bail!("the soak found lost or doubled work");
    }
    println!("ok");
    Ok(())
}

async fn send_until_stopped(
    client: HttpClient,
    url: String,
    next: Arc<AtomicUsize>,
    sent: Arc<Sent>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let id = format!("c-{n}");
        let event = serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "source": "/converge-load/soak",
            "type": "task.created",
            "subject": format!("task/SOAK-{}", n % 1000),
            "datacontenttype": "application/json",
            "data": {},
        });
        let request = hyper::Request::post(&url)
            .header("content-type", "application/cloudevents+json")
            .body(Full::new(Bytes::from(event.to_string())))
            .expect("a valid request");
        let answer = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
        match answer {
            Ok(Ok(response)) if response.status().is_success() => {
                sent.acked.lock().unwrap().insert(id);
            }
            Ok(Ok(_)) => {
                sent.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => {
                sent.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until every journaled event is processed and no action is
/// pending (and, when `timers`, no timer either); returns `/v1/status`.
async fn wait_settled(client: &HttpClient, url: &str, timers: bool) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let request = hyper::Request::get(format!("{url}/v1/status")).body(Full::default())?;
        let response = client.request(request).await.context("GET /v1/status")?;
        let body = response.into_body().collect().await?.to_bytes();
        let status: Value = serde_json::from_slice(&body)?;
        let settled = status["journal"]["processed"] == status["journal"]["head"]
            && status["actions_pending"] == 0
            && (!timers || status["timers_pending"] == 0);
        if settled {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("the daemon did not settle: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_receiver(receiver: Arc<Mutex<Receiver>>) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let receiver = receiver.clone();
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            receiver.lock().unwrap().receive(key, &body);
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_starts_two_hours_later() {
        assert_eq!(clock_start(0), "2026-11-23T00:00:00Z");
        assert_eq!(clock_start(13), "2026-11-24T02:00:00Z");
    }
}
