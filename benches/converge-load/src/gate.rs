//! `converge-load gate`: converge alone on the gate race's workload
//! (benches/gate-race), with the race's own rule and config, so converge's
//! side can be measured without Node-RED, Node or wrk. The events are those
//! of the race's `events.js` as `ce.js` turns them into CloudEvents; each
//! is sent once at `--concurrency` connections, and a sink here counts the
//! decisions as the race's `sink.js` does. It reports requests per second,
//! request latency, when the sink held every decision, the daemon's CPU per
//! event and peak RSS, and fails if the counts are not the expected ones.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::{Daemon, commit_readings, commits_line, database_line, pct, usage_lines};

#[derive(clap::Args, Debug)]
pub struct GateArgs {
    /// Events to send, each once.
    #[arg(long, short, default_value_t = 40_000)]
    events: usize,
    /// Concurrent HTTP connections.
    #[arg(long, short, default_value_t = 32)]
    concurrency: usize,
    /// Runs on the same daemon, each with new campaigns, printing the
    /// daemon's RSS after each: whether memory stays flat run after run.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// `storage.durability` for this run instead of the race's "full": with
    /// "normal" a commit is not fsync'd, which tells how much the fsync
    /// costs.
    #[arg(long, value_parser = ["full", "normal"])]
    durability: Option<String>,
}

const CHANNELS: [&str; 3] = ["email", "social", "paid"];

/// The race's events (`events.js`) as CloudEvents (`ce.js`), and the
/// decisions they must make, by name. Campaign k has four events: the
/// three channels' approvals and an email update without an offer code;
/// every fifth campaign's paid channel has a different code.
fn workload(n: usize, prefix: &str) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut expected = BTreeMap::new();
    let mut count = |name: &str, by: usize| *expected.entry(name.to_string()).or_default() += by;
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let (k, slot) = (i / 4, i % 4);
        let mut data = json!({"channel": CHANNELS[slot % 3], "owner": "ana", "deadline": "2026-12-01", "offer_code": "FALL25", "approved": true});
        if slot == 3 {
            data["channel"] = json!("email");
            data.as_object_mut().map(|d| d.remove("offer_code"));
            count("escalate", 1);
        } else if slot == 2 && k % 5 == 0 {
            data["offer_code"] = json!("SPRING26");
        }
        events.push(
            json!({
                "specversion": "1.0",
                "id": format!("evt-{i}"),
                "source": format!("/race/{prefix}"),
                "type": "asset.updated",
                "subject": format!("campaign/{prefix}-{k}"),
                "data": data,
            })
            .to_string(),
        );
    }
    for k in 0..n.div_ceil(4) {
        let approvals = (n - 4 * k).min(3);
        if approvals == 3 {
            count("hold", 2);
            count(
                if k % 5 == 0 {
                    "channel.pause"
                } else {
                    "gate.open"
                },
                1,
            );
        } else {
            count("hold", approvals);
        }
    }
    (events, expected)
}

/// What the race's sink counts a decision as: a string `decision` as it
/// is; an object's `to` when its kind is `notify`, else its `kind`.
fn decision_name(body: &[u8]) -> String {
    let decision = serde_json::from_slice::<Value>(body)
        .map(|mut body| body["decision"].take())
        .unwrap_or(Value::Null);
    let name = match &decision {
        Value::Object(d) if d.get("kind") == Some(&json!("notify")) => &d["to"],
        Value::Object(d) => d.get("kind").unwrap_or(&Value::Null),
        other => other,
    };
    match name {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Default)]
struct Counts {
    by: BTreeMap<String, usize>,
    total: usize,
    bytes: usize,
    last: Option<Instant>,
}

async fn start_sink(counts: Arc<Mutex<Counts>>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let counts = counts.clone();
        async move {
            let name = decision_name(&body);
            let mut c = counts.lock().unwrap();
            *c.by.entry(name).or_default() += 1;
            c.total += 1;
            c.bytes += body.len();
            c.last = Some(Instant::now());
            "{\"ok\":true}"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The race's config, as run.sh runs it, on a free port, a temporary data
/// directory and this run's sink.
fn write_config(
    dir: &Path,
    root: &Path,
    plugin: &Path,
    sink: SocketAddr,
    durability: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let race = root.join("benches/gate-race/converge");
    let source = race.join("converge.toml");
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let cache = plugin
        .parent()
        .unwrap_or(root)
        .join("converge-load-plugin-cache");
    let mut replaced = 0;
    let mut config = String::new();
    for line in text.lines() {
        let key = line.split_once(" = ").map(|(key, _)| key);
        if let (Some("durability"), Some(durability)) = (key, durability) {
            config.push_str(&format!("durability = {durability:?}\n"));
            continue;
        }
        let line = match key {
            Some("listen") => r#"listen = "127.0.0.1:0""#.to_string(),
            Some("data_dir") => format!(
                "data_dir = {:?}\nplugin_cache_dir = {:?}",
                dir.join("data").display().to_string(),
                cache.display().to_string()
            ),
            Some("files") => format!(
                "files = [{:?}]",
                race.join("gate.rhai").display().to_string()
            ),
            Some("component") => format!("component = {:?}", plugin.display().to_string()),
            _ => {
                config.push_str(&line.replace("127.0.0.1:18901", &sink.to_string()));
                config.push('\n');
                continue;
            }
        };
        replaced += 1;
        config.push_str(&line);
        config.push('\n');
    }
    if replaced != 4 {
        bail!(
            "{}: expected one each of listen, data_dir, files and component",
            source.display()
        );
    }
    let path = dir.join("converge.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

pub async fn run(
    args: GateArgs,
    converge: &Path,
    plugin: &Path,
    root: &Path,
) -> anyhow::Result<()> {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let sink = start_sink(counts.clone()).await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), root, plugin, sink, args.durability.as_deref())?;
    let mut daemon = {
        let converge = converge.to_path_buf();
        tokio::task::spawn_blocking(move || Daemon::start(&converge, &config)).await??
    };
    let url = Arc::new(format!("{}/hooks/gate", daemon.url));
    println!(
        "converge-load gate: {} events, concurrency {}, {} run(s) on one daemon, the race's rule and config (benches/gate-race/converge){}",
        args.events,
        args.concurrency,
        args.runs,
        args.durability
            .as_deref()
            .map(|d| format!(", durability {d}"))
            .unwrap_or_default()
    );
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build_http();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut failed = None;
    for run in 1..=args.runs {
        if args.runs > 1 {
            println!("-- run {run} of {}", args.runs);
        }
        // New campaigns every run, as the race's fresh event prefixes make.
        let prefix = format!("load{stamp}r{run}");
        *counts.lock().unwrap() = Counts::default();
        let result = send_once(&args, &client, &url, &prefix, &counts, &daemon).await;
        match (result, daemon.rss_kib()) {
            (Ok(()), rss) => {
                if let (Some(kib), true) = (rss, args.runs > 1) {
                    println!("daemon RSS after the run: {:.1} MiB", kib as f64 / 1024.0)
                }
                println!(
                    "{}",
                    database_line(&dir.path().join("data"), run * args.events)
                );
            }
            (Err(e), _) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(kib) = daemon.peak_rss_kib() {
        println!("daemon peak RSS: {:.1} MiB", kib as f64 / 1024.0);
    }
    tokio::task::spawn_blocking(move || daemon.stop()).await?;
    failed.map_or(Ok(()), Err)
}

/// Sends one run's events, each once, waits for the sink to hold every
/// decision, and prints what it measured; fails on wrong counts.
async fn send_once(
    args: &GateArgs,
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &Arc<String>,
    prefix: &str,
    counts: &Arc<Mutex<Counts>>,
    daemon: &Daemon,
) -> anyhow::Result<()> {
    let (events, expected) = workload(args.events, prefix);
    let events = Arc::new(events);
    let next = Arc::new(AtomicUsize::new(0));
    let usage_before = daemon.usage();
    let commits_before = commit_readings(client, std::slice::from_ref(daemon)).await;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, next, events) =
            (client.clone(), url.clone(), next.clone(), events.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(event) = events.get(i) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let sent = Instant::now();
                let request = hyper::Request::post(url.as_str())
                    .header("content-type", "application/cloudevents+json")
                    .body(Full::new(Bytes::from(event.clone())))?;
                let response = client.request(request).await.context("POST to converge")?;
                let status = response.status();
                let answer = response.into_body().collect().await?.to_bytes();
                if status != 202 {
                    bail!(
                        "converge answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let sent = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while counts.lock().unwrap().total < args.events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage_after = daemon.usage();
    let commits = commits_before
        .zip(commit_readings(client, std::slice::from_ref(daemon)).await)
        .map(|(before, after)| after[0].since(&before[0]));

    let counts = counts.lock().unwrap();
    println!(
        "requests: {} in {:.2}s = {:.0} req/s (202 once journaled)",
        args.events,
        sent.as_secs_f64(),
        args.events as f64 / sent.as_secs_f64()
    );
    println!(
        "request latency: p50 {} p99 {} max {}",
        pct(&mut latencies, 0.50),
        pct(&mut latencies, 0.99),
        pct(&mut latencies, 1.0)
    );
    match counts.last {
        Some(last) => println!(
            "decisions: {} of {} at the sink, the last {:.2}s after the first request ({:.0} bytes each)",
            counts.total,
            args.events,
            last.duration_since(started).as_secs_f64(),
            counts.bytes as f64 / counts.total.max(1) as f64
        ),
        None => println!("decisions: none at the sink"),
    }
    let usage = usage_before
        .zip(usage_after)
        .map(|(before, after)| after.since(&before));
    println!("{}", usage_lines(usage.as_ref(), args.events));
    println!("{}", commits_line(commits.as_ref(), args.events));
    if counts.by != expected {
        bail!(
            "the sink counted {:?}, the events make {:?}",
            counts.by,
            expected
        );
    }
    println!("the sink's counts are the expected ones: {expected:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_expects_what_events_js_prints() {
        // `node events.js 10 f` prints
        // {"gate.open":1,"channel.pause":1,"hold":6,"escalate":2}
        let (events, expected) = workload(10, "c");
        assert_eq!(events.len(), 10);
        let expected: Vec<_> = expected.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            expected,
            [
                ("channel.pause", 1),
                ("escalate", 2),
                ("gate.open", 1),
                ("hold", 6)
            ]
        );
        let third: Value = serde_json::from_str(&events[2]).unwrap();
        assert_eq!(third["subject"], "campaign/c-0");
        assert_eq!(third["data"]["channel"], "paid");
        assert_eq!(third["data"]["offer_code"], "SPRING26");
        let fourth: Value = serde_json::from_str(&events[3]).unwrap();
        assert_eq!(fourth["data"]["channel"], "email");
        assert!(fourth["data"].get("offer_code").is_none());
    }

    #[test]
    fn the_config_is_the_races_with_this_runs_places_and_durability() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = tempfile::tempdir().unwrap();
        let sink: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        let plugin = Path::new("/plugins/webhook_out.wasm");
        let storage = |durability| {
            let path = write_config(dir.path(), &root, plugin, sink, durability).unwrap();
            let config: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
            let storage = &config["storage"];
            assert_eq!(
                storage["data_dir"].as_str(),
                dir.path().join("data").to_str()
            );
            assert_eq!(config["server"]["listen"].as_str(), Some("127.0.0.1:0"));
            assert!(
                config["routes"][0]["config"]["url"]
                    .as_str()
                    .unwrap()
                    .starts_with("http://127.0.0.1:4321/"),
                "{config}"
            );
            storage["durability"].as_str().unwrap().to_string()
        };
        assert_eq!(storage(None), "full", "the race's own");
        assert_eq!(storage(Some("normal")), "normal");
    }

    #[test]
    fn decisions_are_named_as_the_race_sink_names_them() {
        for (body, name) in [
            (
                r#"{"decision":{"kind":"notify","to":"gate.open"}}"#,
                "gate.open",
            ),
            (r#"{"decision":{"kind":"escalate","to":"ops"}}"#, "escalate"),
            (r#"{"decision":"hold"}"#, "hold"),
            (r#"not json"#, "null"),
        ] {
            assert_eq!(decision_name(body.as_bytes()), name, "{body}");
        }
    }
}
