//! `converge status`: asks a running daemon for `GET /v1/status` at the
//! config's `server.listen` and prints it for people (or as JSON).

use std::path::Path;
use std::time::Duration;

use converge_api::status::{RuleInUse, Status};

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
        "rules: {} loaded at {}, run in this order:",
        status.rules.len(),
        status.rules_loaded_at
    );
    out.push_str(&rules_table(&status.rules));
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

/// The rules as a table with a header, one per line, columns aligned: the
/// header's `order` (rules run by it, then as the config lists them), the
/// name, the version (the source's hash), the events it runs on and its
/// file; a shadow rule is marked after its file.
fn rules_table(rules: &[RuleInUse]) -> String {
    let header = ["order", "rule", "version", "events", "file"].map(String::from);
    let rows: Vec<[String; 5]> = rules
        .iter()
        .map(|rule| {
            [
                rule.order.to_string(),
                rule.name.clone(),
                rule.hash.clone(),
                rule.events
                    .as_ref()
                    .map_or_else(|| "*".into(), |events| events.join(", ")),
                if rule.shadow {
                    format!("{}  [shadow]", rule.file)
                } else {
                    rule.file.clone()
                },
            ]
        })
        .collect();
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "  {:>w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, order: i64, events: Option<&[&str]>, shadow: bool) -> RuleInUse {
        RuleInUse {
            name: name.into(),
            file: format!("rules/{name}.rhai"),
            hash: "0123456789abcdef".into(),
            order,
            position: 1,
            events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
            shadow,
        }
    }

    #[test]
    fn the_rules_read_as_a_table_with_a_header() {
        let rules = [
            rule("required_fields", 20, None, false),
            rule(
                "stalled_handoff",
                100,
                Some(&["task.*", "handoff.done"]),
                false,
            ),
            rule("gate_v2", 100, Some(&["send.requested"]), true),
        ];
        assert_eq!(
            rules_table(&rules),
            "  order  rule             version           events                file\n\
             \x20    20  required_fields  0123456789abcdef  *                     rules/required_fields.rhai\n\
             \x20   100  stalled_handoff  0123456789abcdef  task.*, handoff.done  rules/stalled_handoff.rhai\n\
             \x20   100  gate_v2          0123456789abcdef  send.requested        rules/gate_v2.rhai  [shadow]\n"
        );
    }
}
