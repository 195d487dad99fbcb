//! `converge status`: asks a running daemon for `GET /v1/status` at the
//! config's `server.listen` and prints it for people (or as JSON).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Why `converge status` cannot ask: the config is wrong (exit 2) or the
/// daemon did not answer (exit 1).
pub enum StatusError {
    Invalid(String),
    Failed(anyhow::Error),
}

pub async fn run(config_path: &Path, as_json: bool) -> Result<(), StatusError> {
    let config =
        Config::load(config_path, &|_| None).map_err(|e| StatusError::Invalid(e.to_string()))?;
    let listen = config.server.listen;
    if listen.port() == 0 {
        return Err(StatusError::Invalid(format!(
            "server.listen is {listen}: the daemon picks a free port at each start, so `converge status` cannot find it; set a fixed port in {}",
            config_path.display()
        )));
    }
    let status = fetch(reachable(listen))
        .await
        .map_err(StatusError::Failed)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("JSON values serialize")
        );
    } else {
        print!("{}", describe(&status));
    }
    Ok(())
}

/// A daemon listening on every interface is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        other => other,
    }
}

/// One HTTP/1.0 request: the answer ends when the daemon closes the connection.
async fn fetch(address: SocketAddr) -> anyhow::Result<Value> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot reach converge at {address} (is it running?)"))?;
        stream
            .write_all(
                format!(
                    "GET /v1/status HTTP/1.0\r\nHost: {address}\r\nAccept: application/json\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| format!("converge at {address} did not answer within {TIMEOUT:?}"))??;
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("converge at {address} sent a malformed answer");
    };
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        bail!("converge at {address} answered `{status_line}`: {body}");
    }
    serde_json::from_str(body).with_context(|| format!("converge at {address} sent no JSON status"))
}

fn describe(status: &Value) -> String {
    use std::fmt::Write;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let uptime = status["uptime_seconds"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "converge {}, up {} (since {})",
        text(&status["version"]),
        humantime::format_duration(Duration::from_secs(uptime)),
        text(&status["started_at"])
    );
    let _ = writeln!(
        out,
        "journal: head {}, processed {}; actions pending: {}; timers pending: {}",
        text(&status["journal"]["head"]),
        text(&status["journal"]["processed"]),
        text(&status["actions_pending"]),
        text(&status["timers_pending"])
    );
    let rules = status["rules"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "rules: {} loaded at {}",
        rules.len(),
        text(&status["rules_loaded_at"])
    );
    for rule in &rules {
        let events = match rule["events"].as_array() {
            Some(events) => events.iter().map(text).collect::<Vec<_>>().join(", "),
            None => "*".into(),
        };
        let _ = writeln!(
            out,
            "  {:>5}  {}  {}  {}  events: {events}{}",
            text(&rule["order"]),
            text(&rule["name"]),
            text(&rule["hash"]),
            text(&rule["file"]),
            if rule["shadow"] == true {
                "  [shadow]"
            } else {
                ""
            }
        );
    }
    match &status["last_reload"] {
        Value::Null => out.push_str("last reload: none since start\n"),
        last => {
            let _ = writeln!(
                out,
                "last reload: {} at {}",
                text(&last["outcome"]),
                text(&last["at"])
            );
        }
    }
    if let Some(error) = status["last_reload_error"].as_object() {
        let _ = writeln!(
            out,
            "reload error at {} (the rules above keep running):",
            error.get("at").map(text).unwrap_or_default()
        );
        for line in error
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(out, "  {}", text(line));
        }
    }
    out
}
