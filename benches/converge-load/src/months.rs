//! `converge-load months`: months of events on a manual clock, with and
//! without `storage.retention`, printing the database's size as the
//! simulated weeks pass. Each simulated day sends `--per-day` handoffs
//! (batches of 100) about `--entities` tasks through the example rules,
//! waits for them to be processed, and moves the clock a day. With a
//! retention, the size stops growing once the retention is reached.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::Daemon;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(clap::Args, Debug)]
pub struct MonthsArgs {
    /// Simulated days.
    #[arg(long, default_value_t = 120)]
    days: u64,
    /// Events sent per simulated day.
    #[arg(long, default_value_t = 2_000)]
    per_day: u64,
    /// Distinct tasks the events are about.
    #[arg(long, default_value_t = 5_000)]
    entities: u64,
    /// storage.retention; "none" keeps everything.
    #[arg(long, default_value = "30d")]
    retention: String,
}

pub async fn run(args: MonthsArgs, converge: &Path, root: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), root, &args)?;
    let converge = converge.to_path_buf();
    let mut daemon = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Daemon::start(&converge, &config)).await??
    };
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let result = simulate(&client, &daemon.url, &args, dir.path()).await;
    let peak_rss = daemon.peak_rss_kib();
    tokio::task::spawn_blocking(move || daemon.stop()).await?;
    result?;
    println!(
        "{} days x {} events in {:.1} s; daemon peak RSS {:.1} MiB",
        args.days,
        args.per_day,
        started.elapsed().as_secs_f64(),
        peak_rss.unwrap_or(0) as f64 / 1024.0
    );
    Ok(())
}

async fn simulate(
    client: &HttpClient,
    url: &str,
    args: &MonthsArgs,
    dir: &Path,
) -> anyhow::Result<()> {
    println!(
        "retention {}: {} events a day about {} tasks",
        args.retention, args.per_day, args.entities
    );
    println!(
        "{:>5} {:>12} {:>12} {:>14}",
        "day", "journaled", "db MB", "bytes/event"
    );
    let mut next = 0u64;
    for day in 1..=args.days {
        let mut sent = 0;
        while sent < args.per_day {
            let n = (args.per_day - sent).min(100);
            let events: Vec<Value> = (next..next + n)
                .map(|id| crate::event(id, args.entities))
                .collect();
            next += n;
            sent += n;
            let request = hyper::Request::post(format!("{url}/hooks/load"))
                .header("content-type", "application/cloudevents-batch+json")
                .body(Full::new(Bytes::from(Value::Array(events).to_string())))?;
            let response = client.request(request).await.context("POST /hooks/load")?;
            if !response.status().is_success() {
                bail!("the daemon answered {}", response.status());
            }
        }
        settle(client, url).await?;
        let advance = hyper::Request::post(format!("{url}/v1/clock"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", crate::ADMIN_TOKEN))
            .body(Full::new(Bytes::from(r#"{"advance": "1d"}"#)))?;
        let response = client.request(advance).await.context("POST /v1/clock")?;
        if !response.status().is_success() {
            bail!("moving the clock: {}", response.status());
        }
        if day % 7 == 0 || day == args.days {
            // A moment for the round the clock's move started.
            tokio::time::sleep(Duration::from_millis(500)).await;
            settle(client, url).await?;
            let bytes = crate::database_bytes(&dir.join("data"));
            println!(
                "{day:>5} {next:>12} {:>12.1} {:>14.0}",
                bytes as f64 / 1e6,
                bytes as f64 / next as f64
            );
        }
    }
    Ok(())
}

async fn settle(client: &HttpClient, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let request = hyper::Request::get(format!("{url}/v1/status")).body(Full::default())?;
        let response = client.request(request).await.context("GET /v1/status")?;
        let body = response.into_body().collect().await?.to_bytes();
        let status: Value = serde_json::from_slice(&body)?;
        if status["journal"]["processed"] == status["journal"]["head"] {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the daemon did not settle: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_config(dir: &Path, root: &Path, args: &MonthsArgs) -> anyhow::Result<std::path::PathBuf> {
    let mut rules: Vec<String> = std::fs::read_dir(root.join("rules"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "rhai"))
        .map(|path| format!("{:?}", path.display().to_string()))
        .collect();
    rules.sort();
    let retention = match args.retention.as_str() {
        "none" => String::new(),
        keep => format!("retention = {keep:?}\n"),
    };
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[storage]
data_dir = "data"
durability = "normal"
{retention}
[rules]
files = [{rules}]

[clock]
mode = "manual"
start = "2026-01-05T09:00:00Z"
"#,
        rules = rules.join(", "),
    );
    let path = dir.join("converge.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}
