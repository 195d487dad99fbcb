//! `converge-load`: drives events over HTTP into a converge daemon and
//! reports what a user of the daemon would ask about: acknowledged events per
//! second, acknowledgement latency, event-to-action latency, and the daemon's
//! peak memory, CPU time per event and the journal's commits.
//!
//! By default it starts everything itself: a sink server standing in for a
//! webhook receiver, and `converge run` on a temporary config with the
//! example rules of `rules/` and one `webhook-out` action per event. Each
//! event is a `task.handoff` with its required fields present: the example
//! rules notify the new owner (routed to `webhook-out`), remember the
//! handoff, end the task's earlier ladder and expect the first rung of its
//! new one.
//!
//! With `--max-in-flight` set low it floods the daemon past its in-flight
//! budget: refused requests (503 with Retry-After) are counted and sent
//! again after the delay, and the peak RSS shows the memory bound.
//!
//! `converge-load gate` runs converge's side of the gate race
//! (benches/gate-race): see `gate.rs`.
//!
//! `converge-load soak` is the crash test for minutes: see `soak.rs`;
//! `converge-load report` times `converge report` on a large journal: see
//! `report_scale.rs`; `converge-load console` times the console's pages on
//! the same journal: see `console.rs`.

mod commits;
mod console;
mod database;
mod gate;
mod months;
mod report_scale;
mod soak;
mod usage;

/// The admin token of the daemons this tool starts.
pub const ADMIN_TOKEN: &str = "converge-load-admin-token-0123456789";

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use commits::Commits;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use usage::Usage;

#[derive(Parser, Debug)]
#[command(about = "Load test a converge daemon over HTTP")]
struct Cli {
    #[command(subcommand)]
    command: Option<Mode>,
    #[command(flatten)]
    args: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// Send events for minutes while killing the daemon with SIGKILL and
    /// restarting it; check that nothing acknowledged is lost and nothing
    /// is applied twice, and print the counts.
    Soak(soak::SoakArgs),
    /// Build a database of a year of processed events (1,000,000 by
    /// default) and time `converge report` on it.
    Report(report_scale::ReportArgs),
    /// Build the same database, start `converge run` on it and time each
    /// page of the console at /ui.
    Console(console::ConsoleArgs),
    /// Months of events on a manual clock, printing the database's size
    /// each simulated week: flat once `storage.retention` is reached.
    Months(months::MonthsArgs),
    /// The gate race's workload (benches/gate-race) on converge alone:
    /// each event once, then the decisions counted at a sink.
    Gate(gate::GateArgs),
}

#[derive(clap::Args, Debug)]
struct Args {
    /// Events to send.
    #[arg(long, short, default_value_t = 100_000)]
    events: usize,
    /// Concurrent HTTP connections.
    #[arg(long, short, default_value_t = 64)]
    concurrency: usize,
    /// Events per request (1 = application/cloudevents+json, more = a batch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Target rate in events/s (open loop); unset = as fast as acknowledged.
    #[arg(long)]
    rate: Option<f64>,
    /// Only acknowledge: run the rules but route no decision to a plugin.
    #[arg(long)]
    no_actions: bool,
    /// "full" or "normal" (see storage.durability).
    #[arg(long, default_value = "full")]
    durability: String,
    /// server.max_events_in_flight: events acknowledged but not yet
    /// through the rules. Set it low to measure backpressure.
    #[arg(long, default_value_t = 100_000)]
    max_in_flight: usize,
    /// Run on this PostgreSQL database (`storage.url`, no password: the
    /// daemons read it from CONVERGE_DATABASE_PASSWORD) instead of SQLite.
    /// Empty it first: the run counts on a fresh journal.
    #[arg(long)]
    postgres: Option<String>,
    /// Daemons to start on the `--postgres` database; requests go to each
    /// in turn.
    #[arg(long, default_value_t = 1)]
    daemons: usize,
    /// Distinct entities the events are about (`task/LOAD-<id mod N>`).
    /// Set it past `--entity-cache` to measure the cache's bound on memory.
    #[arg(long, default_value_t = 5_000)]
    entities: u64,
    /// storage.entity_cache_entries: entity states kept in memory.
    #[arg(long, default_value_t = 10_000)]
    entity_cache: usize,
    /// Keep the run's directory (config, database, logs) here, to inspect
    /// the database after the run. It must not exist yet.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// dispatch.concurrency: plugin calls at once. Under valgrind
    /// (`benches/gate-race/count.sh --handoffs`) only a few plugin
    /// instances' memory can be reserved, so the count runs with 6.
    #[arg(long, default_value_t = 128)]
    dispatch_concurrency: usize,
    /// The converge binary (default: release/converge in the target directory).
    #[arg(long, global = true)]
    converge: Option<PathBuf>,
}

/// Send and arrival times by event id.
#[derive(Default)]
struct Timings {
    sent: HashMap<u64, Instant>,
    acted: HashMap<u64, Instant>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, args } = Cli::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let converge = args
        .converge
        .clone()
        .unwrap_or_else(|| target.join("release/converge"));
    if !converge.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p converge`",
            converge.display()
        );
    }
    let command = match command {
        Some(Mode::Report(report)) => {
            // Needs no plugin: only the converge binary.
            return tokio::task::spawn_blocking(move || report_scale::run(report, &converge))
                .await?;
        }
        Some(Mode::Console(console)) => return console::run(console, &converge).await,
        Some(Mode::Months(months)) => return months::run(months, &converge, &root).await,
        command => command,
    };
    let plugin = target.join("wasm32-wasip2/wasm/webhook_out.wasm");
    if !plugin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --profile wasm --target wasm32-wasip2 -p webhook-out`",
            plugin.display()
        );
    }
    match command {
        Some(Mode::Soak(soak)) => return soak::run(soak, &converge, &plugin).await,
        Some(Mode::Gate(gate)) => return gate::run(gate, &converge, &plugin, &root).await,
        _ => {}
    }

    let timings = Arc::new(Mutex::new(Timings::default()));
    let sink = start_sink(timings.clone()).await?;
    let temporary;
    let dir = match &args.keep {
        Some(keep) => {
            std::fs::create_dir(keep)
                .with_context(|| format!("creating {} for --keep", keep.display()))?;
            keep.clone()
        }
        None => {
            temporary = tempfile::tempdir()?;
            temporary.path().to_path_buf()
        }
    };
    if args.daemons > 1 && args.postgres.is_none() {
        bail!(
            "--daemons {} needs --postgres: several daemons share one PostgreSQL database",
            args.daemons
        );
    }
    let config = write_config(&dir, &root, &plugin, sink, &args)?;
    let mut daemons = (0..args.daemons.max(1))
        .map(|_| Daemon::start(&converge, &config))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let urls: Arc<Vec<String>> = Arc::new(
        daemons
            .iter()
            .map(|d| format!("{}/hooks/load", d.url))
            .collect(),
    );
    println!(
        "converge-load: {} events, concurrency {}, batch {}, rate {}, actions {}, {}",
        args.events,
        args.concurrency,
        args.batch,
        args.rate.map_or("max".to_string(), |r| format!("{r}/s")),
        !args.no_actions,
        match &args.postgres {
            Some(_) => format!("{} daemon(s) on PostgreSQL", daemons.len()),
            None => format!("SQLite, durability {}", args.durability),
        }
    );

    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build_http();
    let requests = args.events.div_ceil(args.batch);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let usage_before: Option<Vec<Usage>> = daemons.iter().map(Daemon::usage).collect();
    let commits_before = commit_readings(&client, &daemons).await;
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, urls, next, timings, refused) = (
            client.clone(),
            urls.clone(),
            next.clone(),
            timings.clone(),
            refused.clone(),
        );
        let (batch, events, rate, entities) = (args.batch, args.events, args.rate, args.entities);
        workers.push(tokio::spawn(async move {
            let mut ack_latencies = Vec::new();
            loop {
                let request = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if request >= requests {
                    return Ok::<_, anyhow::Error>(ack_latencies);
                }
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64((request * batch) as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let ids: Vec<u64> = (request * batch..((request + 1) * batch).min(events))
                    .map(|i| i as u64)
                    .collect();
                let (content_type, body) = body(&ids, entities);
                let sent = Instant::now();
                {
                    let mut t = timings.lock().unwrap();
                    for id in &ids {
                        t.sent.insert(*id, sent);
                    }
                }
                let body = Bytes::from(body);
                let url = &urls[request % urls.len()];
                loop {
                    let req = hyper::Request::post(url)
                        .header("content-type", content_type)
                        .body(Full::new(body.clone()))?;
                    let response = client.request(req).await.context("POST to converge")?;
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let answer = response.into_body().collect().await?.to_bytes();
                    match (status.as_u16(), retry_after) {
                        (202, _) => break,
                        // Backpressure: what a well-behaved sender does.
                        (503, Some(secs)) => {
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_secs(secs)).await;
                        }
                        _ => bail!(
                            "converge answered {status}: {}",
                            String::from_utf8_lossy(&answer)
                        ),
                    }
                }
                ack_latencies.push(sent.elapsed());
            }
        }));
    }
    let mut ack = Vec::new();
    for worker in workers {
        ack.extend(worker.await??);
    }
    let ack_elapsed = started.elapsed();

    let mut actions = Vec::new();
    if !args.no_actions {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = timings.lock().unwrap().acted.len();
            if done >= args.events || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = timings.lock().unwrap();
        for (id, acted) in &t.acted {
            if let Some(sent) = t.sent.get(id) {
                actions.push(acted.saturating_duration_since(*sent));
            }
        }
    }
    let all_elapsed = started.elapsed();
    let peak_rss = daemons.iter().filter_map(Daemon::peak_rss_kib).max();
    // Everything the daemons did for the events: intake, rules, and the
    // actions when there are any, as they are waited for above.
    let usage_after: Option<Vec<Usage>> = daemons.iter().map(Daemon::usage).collect();
    let usage = usage_before
        .zip(usage_after)
        .map(|(before, after)| Usage::sum(&after).since(&Usage::sum(&before)));
    let commits = commits_before
        .zip(commit_readings(&client, &daemons).await)
        .map(|(before, after)| Commits::sum(&after).since(&Commits::sum(&before)));
    for daemon in &mut daemons {
        daemon.stop();
    }

    println!(
        "acknowledged: {} events in {:.2}s = {:.0} events/s",
        args.events,
        ack_elapsed.as_secs_f64(),
        args.events as f64 / ack_elapsed.as_secs_f64()
    );
    let refused = refused.load(std::sync::atomic::Ordering::Relaxed);
    if refused > 0 {
        println!(
            "refused with 503 + Retry-After (in-flight budget {} full): {refused} requests, sent again",
            args.max_in_flight
        );
    }
    println!(
        "ack latency (per request, retries included): p50 {} p99 {} max {}",
        pct(&mut ack, 0.50),
        pct(&mut ack, 0.99),
        pct(&mut ack, 1.0)
    );
    if !args.no_actions {
        println!(
            "actions: {} of {} arrived in {:.2}s = {:.0} events/s end to end",
            actions.len(),
            args.events,
            all_elapsed.as_secs_f64(),
            actions.len() as f64 / all_elapsed.as_secs_f64()
        );
        println!(
            "event-to-action latency: p50 {} p99 {} max {}",
            pct(&mut actions, 0.50),
            pct(&mut actions, 0.99),
            pct(&mut actions, 1.0)
        );
    }
    match peak_rss {
        Some(kib) => println!(
            "daemon peak RSS (largest daemon): {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("daemon peak RSS: unknown (no /proc)"),
    }
    println!("{}", usage_lines(usage.as_ref(), args.events));
    println!("{}", commits_line(commits.as_ref(), args.events));
    if args.postgres.is_none() {
        println!("{}", database_line(&dir.join("data"), args.events));
    }
    if let Some(keep) = &args.keep {
        println!("run directory kept in {}", keep.display());
    }
    Ok(())
}

/// The SQLite database's size on disk (file and WAL) in `data_dir`.
fn database_bytes(data_dir: &Path) -> u64 {
    ["converge.db", "converge.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data_dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// The database's size for the `events` journaled into it so far.
fn database_line(data_dir: &Path, events: usize) -> String {
    let bytes = database_bytes(data_dir);
    format!(
        "database on disk (SQLite file + WAL): {:.1} MB, {:.0} bytes per event",
        bytes as f64 / 1e6,
        bytes as f64 / events.max(1) as f64
    )
}

/// Each daemon's commit histogram so far; `None` (said on stderr) if one
/// cannot be read.
async fn commit_readings(
    client: &Client<HttpConnector, Full<Bytes>>,
    daemons: &[Daemon],
) -> Option<Vec<Commits>> {
    let mut readings = Vec::new();
    for daemon in daemons {
        match commits::fetch(client, &daemon.url).await {
            Ok(commits) => readings.push(commits),
            Err(e) => {
                eprintln!("cannot read the daemon's commit metrics: {e:#}");
                return None;
            }
        }
    }
    Some(readings)
}

/// The journal's commits during the run.
fn commits_line(commits: Option<&Commits>, events: usize) -> String {
    match commits {
        Some(commits) => commits.line(events),
        None => "journal commits: unknown (no metrics)".into(),
    }
}

/// What the daemons used for the run, per event: CPU in all and by
/// thread, and bytes written to storage.
fn usage_lines(usage: Option<&Usage>, events: usize) -> String {
    match usage {
        Some(usage) => usage.lines(events),
        None => "daemon CPU: unknown (no /proc)".into(),
    }
}

fn pct(samples: &mut [Duration], p: f64) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    format!("{:.2}ms", samples[i].as_secs_f64() * 1000.0)
}

fn event(id: u64, entities: u64) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": format!("load-{id}"),
        "source": "/converge-load",
        "type": "task.handoff",
        "subject": format!("task/LOAD-{}", id % entities.max(1)),
        "datacontenttype": "application/json",
        "data": {"owner": format!("reviewer-{}", id % 50), "stage": "review", "brief": "b", "deadline": "2026-12-01"},
    })
}

fn body(ids: &[u64], entities: u64) -> (&'static str, String) {
    if ids.len() == 1 {
        (
            "application/cloudevents+json",
            event(ids[0], entities).to_string(),
        )
    } else {
        let events: Vec<_> = ids.iter().map(|id| event(*id, entities)).collect();
        (
            "application/cloudevents-batch+json",
            serde_json::Value::Array(events).to_string(),
        )
    }
}

/// The number in the `"id":"load-N"` of the event inside a webhook-out body.
/// A text search rather than a JSON parse: the sink shares the CPU with the
/// daemon it measures, so it should cost as little as it can.
fn load_event_id(body: &[u8]) -> Option<u64> {
    const NEEDLE: &[u8] = b"\"id\":\"load-";
    let at = body.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Records when each event's action arrives.
async fn start_sink(timings: Arc<Mutex<Timings>>) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let timings = timings.clone();
        async move {
            let at = Instant::now();
            let id = load_event_id(&body);
            if let Some(id) = id {
                timings.lock().unwrap().acted.entry(id).or_insert(at);
            }
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn write_config(
    dir: &Path,
    root: &Path,
    plugin: &Path,
    sink: std::net::SocketAddr,
    args: &Args,
) -> anyhow::Result<PathBuf> {
    // Every example rule, as the bundled config runs them.
    let mut rules: Vec<String> = std::fs::read_dir(root.join("rules"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "rhai"))
        .map(|path| format!("{:?}", path.display().to_string()))
        .collect();
    rules.sort();
    let rules = rules.join(", ");
    let routes = if args.no_actions {
        String::new()
    } else {
        format!(
            "[[routes]]\ndecision = \"notify\"\nplugin = \"webhook-out\"\nconfig = {{ url = \"http://{sink}/hook\" }}\n"
        )
    };
    let database = match &args.postgres {
        Some(url) => format!("url = {url:?}\n"),
        None => format!("durability = {:?}\n", args.durability),
    };
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_events_in_flight = {max_in_flight}

[storage]
data_dir = "data"
entity_cache_entries = {entity_cache}
{database}plugin_cache_dir = {cache:?}

[rules]
files = [{rules}]

[plugins.webhook-out]
component = {plugin:?}
http_hosts = ["{sink}"]
allow_plain_http = true

{routes}

[dispatch]
concurrency = {dispatch_concurrency}
"#,
        max_in_flight = args.max_in_flight,
        dispatch_concurrency = args.dispatch_concurrency,
        entity_cache = args.entity_cache,
        cache = plugin
            .parent()
            .unwrap_or(root)
            .join("converge-load-plugin-cache")
            .display()
            .to_string(),
        plugin = plugin.display().to_string(),
    );
    let path = dir.join("converge.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

struct Daemon {
    child: Child,
    url: String,
}

impl Daemon {
    fn start(converge: &Path, config: &Path) -> anyhow::Result<Daemon> {
        let mut child = Command::new(converge)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            // What moves a manual clock (`soak`).
            .env("CONVERGE_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", converge.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        for line in BufReader::new(stdout).lines() {
            if let Some(url) = line?.strip_prefix("converge: listening on ") {
                return Ok(Daemon {
                    child,
                    url: url.to_string(),
                });
            }
        }
        bail!("converge exited before listening")
    }

    /// VmHWM: the most resident memory the daemon ever had.
    fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// The daemon's resident memory now.
    fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// CPU time (in all and by thread) and bytes written so far.
    fn usage(&self) -> Option<Usage> {
        Usage::of_process(self.child.id())
    }

    /// SIGKILL: no chance to clean up.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
