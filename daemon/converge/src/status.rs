//! `converge status`: asks a running daemon for `GET /v1/status` at the
//! config's `server.listen` and prints it for people (or as JSON).

use std::path::Path;
use std::time::Duration;

use converge_api::status::Status;

use crate::admin_client::{AdminClient, AdminError, json_text};

pub async fn run(config_path: &Path, as_json: bool) -> Result<(), AdminError> {
    let (client, _) = AdminClient::load(config_path, "converge status")?;
    let status: Status = client.get_or_explain("/v1/status").await?;
    if as_json {
        println!("{}", json_text(&status)?);
    } else {
        print!("{}", describe(&status));
    }
    Ok(())
}

fn describe(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let uptime = u64::try_from(status.uptime_seconds).unwrap_or(0);
    let _ = writeln!(
        out,
        "converge {}, up {} (since {})",
        status.version,
        humantime::format_duration(Duration::from_secs(uptime)),
        status.started_at
    );
    let _ = writeln!(
        out,
        "journal: head {}, processed {}; actions pending: {}; dead letters: {}; timers pending: {}",
        status.journal.head,
        status.journal.processed,
        status.actions_pending,
        status.dead_letters,
        status.timers_pending
    );
    if let (Some(since), Some(error)) = (&status.storage.since, &status.storage.error) {
        let _ = writeln!(
            out,
            "storage: FAILING since {since}: {error} (new events are refused; unrecorded work is retried)"
        );
    }
    if let Some(cluster) = &status.cluster {
        let _ = writeln!(
            out,
            "this daemon: {}; {} daemon(s) share the database:",
            cluster.daemon,
            cluster.daemons.len()
        );
        for daemon in &cluster.daemons {
            let _ = writeln!(
                out,
                "  {}  {} partition(s)",
                daemon.daemon, daemon.partitions
            );
        }
    }
    let _ = writeln!(
        out,
        "rules: {} loaded at {}",
        status.rules.len(),
        status.rules_loaded_at
    );
    for rule in &status.rules {
        let events = match &rule.events {
            Some(events) => events.join(", "),
            None => "*".into(),
        };
        let _ = writeln!(
            out,
            "  {:>5}  {}  {}  {}  events: {events}{}",
            rule.order,
            rule.name,
            rule.hash,
            rule.file,
            if rule.shadow { "  [shadow]" } else { "" }
        );
    }
    match &status.last_reload {
        None => out.push_str("last reload: none since start\n"),
        Some(last) => {
            let _ = writeln!(out, "last reload: {} at {}", last.outcome.as_str(), last.at);
        }
    }
    if let Some(error) = &status.last_reload_error {
        let _ = writeln!(
            out,
            "reload error at {} (the rules above keep running):",
            error.at
        );
        for line in &error.errors {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
