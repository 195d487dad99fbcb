//! `converge-load console`: how fast the console's pages render on a large
//! database. It builds the database of `database.rs` (a year of processed
//! events: tasks and campaigns), starts `converge run` on it, and asks for
//! each page over HTTP, a few times untimed, then `--runs` times timed, one
//! request at a time on a kept-alive connection: the time from sending the
//! request to the last byte of the page. It prints each page's status, size,
//! median and slowest time, then stops the daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::Daemon;
use crate::database::{Database, DatabaseArgs};

#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Untimed requests of each page first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed requests of each page.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The daemon's clock: "system"; "end", a manual clock at the newest
    /// event (the year of events ends in 2027); or a manual clock at this
    /// RFC 3339 time. "Now" places the default reports period and the
    /// health page's last day.
    #[arg(long, default_value = "system")]
    clock: String,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The header a live page's poll carries: the version it shows.
const SEEN: &str = "x-converge-seen";

pub async fn run(args: ConsoleArgs, converge: &Path) -> anyhow::Result<()> {
    let database = {
        let database = args.database.clone();
        tokio::task::spawn_blocking(move || Database::prepare(&database)).await??
    };
    let config = match args.clock.as_str() {
        "system" => database.config.clone(),
        start => {
            let start = match start {
                "end" => database
                    .latest_ms
                    .and_then(DateTime::<Utc>::from_timestamp_millis)
                    .context("the journal is empty")?,
                time => DateTime::parse_from_rfc3339(time)
                    .with_context(|| {
                        format!("--clock {time}: not system, end or an RFC 3339 time")
                    })?
                    .with_timezone(&Utc),
            };
            let config = database.config.with_file_name("console.toml");
            let mut text = std::fs::read_to_string(&database.config)?;
            text.push_str(&format!(
                "\n[clock]\nmode = \"manual\"\nstart = \"{}\"\n",
                start.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
            std::fs::write(&config, text)?;
            println!("the daemon's clock: manual, from {start}");
            config
        }
    };
    let started = Instant::now();
    let converge = converge.to_path_buf();
    let mut daemon =
        tokio::task::spawn_blocking(move || Daemon::start(&converge, &config)).await??;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let measured = measure(&client, &daemon.url, &args, started).await;
    let peak_rss = daemon.peak_rss_kib();
    tokio::task::spawn_blocking(move || daemon.stop()).await?;
    let rows = measured?;

    println!(
        "\nconsole pages on {} events ({:.0} MB database), clock {}, {} timed requests each after {} untimed:",
        args.database.events,
        database.size as f64 / 1e6,
        args.clock,
        args.runs,
        args.warmup
    );
    println!(
        "{:<52} {:>6} {:>9} {:>10} {:>10}",
        "page", "status", "bytes", "median ms", "max ms"
    );
    for row in &rows {
        println!(
            "{:<52} {:>6} {:>9} {:>10.1} {:>10.1}",
            row.page,
            row.statuses,
            row.bytes,
            row.median.as_secs_f64() * 1000.0,
            row.max.as_secs_f64() * 1000.0
        );
    }
    if let Some(kib) = peak_rss {
        println!("daemon peak RSS: {:.1} MiB", kib as f64 / 1024.0);
    }
    let slow: Vec<&str> = rows
        .iter()
        .filter(|r| r.median > Duration::from_millis(100))
        .map(|r| r.page.as_str())
        .collect();
    if !slow.is_empty() {
        println!("over 100 ms (median): {}", slow.join(", "));
    }
    Ok(())
}

/// One page's timings.
struct Row {
    page: String,
    /// Every status seen, e.g. "200" or "204/200".
    statuses: String,
    /// The last answer's size.
    bytes: usize,
    median: Duration,
    max: Duration,
}

async fn measure(
    client: &HttpClient,
    base: &str,
    args: &ConsoleArgs,
    started: Instant,
) -> anyhow::Result<Vec<Row>> {
    wait_healthy(client, base).await?;
    println!(
        "converge run: listening on {base}, healthy {:.2?} after start",
        started.elapsed()
    );

    let mut pages = vec![
        "/ui".to_string(),
        "/ui/campaigns".to_string(),
        format!("/ui/records/task/{}", args.database.a_task()),
    ];
    if let Some(campaign) = args.database.a_campaign() {
        pages.push(format!("/ui/records/campaign/{campaign}"));
    }
    pages.extend([
        "/ui/reports".to_string(),
        "/ui/reports?since=2026-01-01&until=2027-06-01".to_string(),
        "/ui/health".to_string(),
    ]);
    let mut rows = Vec::new();
    let mut version = None;
    for page in pages {
        let url = format!("{base}{page}");
        let mut times = Vec::new();
        let mut statuses = Vec::new();
        let mut bytes = 0;
        for run in 0..args.warmup + args.runs {
            let (status, body, took) = get(client, &url, None).await?;
            if status != 200 {
                bail!(
                    "GET {page} answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(500)])
                );
            }
            if run >= args.warmup {
                times.push(took);
            }
            if !statuses.contains(&status) {
                statuses.push(status);
            }
            bytes = body.len();
            if page == "/ui" {
                version = Some(data_version(&body).context("/ui has no data-version")?);
            }
        }
        rows.push(row(page, &statuses, bytes, times));
    }

    // The live page's poll: 204 while the daemon's state is the version the
    // page shows. The version moves with the clock's minute: a 200 then
    // carries the new one, and is not timed.
    let mut seen = version.context("/ui was not read")?;
    let (mut times, mut answered, mut pages) = (Vec::new(), 0, 0);
    while times.len() < args.runs {
        let (status, body, took) = get(client, &format!("{base}/ui"), Some(&seen)).await?;
        match status {
            204 => {
                answered += 1;
                if answered > args.warmup {
                    times.push(took);
                }
            }
            200 if pages < 5 => {
                pages += 1;
                seen = data_version(&body).context("/ui has no data-version")?;
            }
            _ => bail!(
                "the poll of /ui answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            ),
        }
    }
    let mut poll = row(
        "/ui with X-Converge-Seen (live poll)".into(),
        &[204],
        0,
        times,
    );
    if pages > 0 {
        poll.page = format!("{} ({pages} x 200: new minute)", poll.page);
    }
    rows.push(poll);
    Ok(rows)
}

fn row(page: String, statuses: &[u16], bytes: usize, mut times: Vec<Duration>) -> Row {
    times.sort();
    let n = times.len();
    let median = match n {
        0 => Duration::ZERO,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2,
    };
    Row {
        page,
        statuses: statuses
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        bytes,
        median,
        max: times.last().copied().unwrap_or_default(),
    }
}

/// GET `url`: the status, the whole body, and how long until its last byte.
async fn get(
    client: &HttpClient,
    url: &str,
    seen: Option<&str>,
) -> anyhow::Result<(u16, Bytes, Duration)> {
    let mut request = hyper::Request::get(url);
    if let Some(seen) = seen {
        request = request.header(SEEN, seen);
    }
    let request = request.body(Empty::new())?;
    let started = Instant::now();
    let response = client
        .request(request)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body, started.elapsed()))
}

async fn wait_healthy(client: &HttpClient, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok((200, _, _)) = get(client, &format!("{base}/healthz"), None).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{base}/healthz did not answer 200 within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `data-version` of the page's `<main>`: the state it shows.
fn data_version(page: &[u8]) -> Option<String> {
    const ATTRIBUTE: &str = "data-version=\"";
    let page = std::str::from_utf8(page).ok()?;
    let at = page.find(ATTRIBUTE)? + ATTRIBUTE.len();
    let end = page[at..].find('"')?;
    Some(page[at..at + end].to_string())
}
