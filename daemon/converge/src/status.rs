//! `converge status`: asks a running daemon for `GET /v1/status` at the
//! config's `server.listen` and prints it for people (or as JSON).

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::Value;

use crate::admin_client::{AdminClient, AdminError, text};

pub async fn run(config_path: &Path, as_json: bool) -> Result<(), AdminError> {
    let (client, _) = AdminClient::load(config_path, "converge status")?;
    let answer = client.get("/v1/status").await?;
    if answer.status != 200 {
        return Err(AdminError::Failed(anyhow!(
            "converge at {} answered {}: {}",
            client.address(),
            answer.status,
            answer.error_message()
        )));
    }
    let status = answer.body;
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

fn describe(status: &Value) -> String {
    use std::fmt::Write;
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
        "journal: head {}, processed {}; actions pending: {}; dead letters: {}; timers pending: {}",
        text(&status["journal"]["head"]),
        text(&status["journal"]["processed"]),
        text(&status["actions_pending"]),
        text(&status["dead_letters"]),
        text(&status["timers_pending"])
    );
    if let Some(cluster) = status["cluster"].as_object() {
        let daemons = cluster
            .get("daemons")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "this daemon: {}; {} daemon(s) share the database:",
            cluster.get("daemon").map(text).unwrap_or_default(),
            daemons.len()
        );
        for daemon in &daemons {
            let _ = writeln!(
                out,
                "  {}  {} partition(s)",
                text(&daemon["daemon"]),
                text(&daemon["partitions"])
            );
        }
    }
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
