//! `converge status`: asks a running daemon for `GET /v1/status` at the
//! config's `server.listen` and prints it for people (or as JSON).

use std::path::Path;
use std::time::Duration;

use converge_api::status::{Cluster, RuleInUse, StaleTimers, Status};

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
        out.push_str(&cluster_lines(cluster));
    }
    let _ = writeln!(
        out,
        "rules: {} loaded at {}, run in this order:",
        status.rules.len(),
        status.rules_loaded_at
    );
    out.push_str(&rules_table(&status.rules));
    out.push_str(&stale_timer_lines(&status.stale_timers));
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

/// The timers waiting from rule versions not loaded now, and how to cancel
/// them; nothing when there are none.
fn stale_timer_lines(stale: &[StaleTimers]) -> String {
    use std::fmt::Write;
    if stale.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "timers waiting from rule versions no longer loaded (they fire as planned):\n",
    );
    let width = stale
        .iter()
        .map(|s| s.rule.chars().count())
        .max()
        .unwrap_or(0);
    for timers in stale {
        let _ = writeln!(
            out,
            "  {:width$}  {}  {} pending, {}",
            timers.rule,
            timers.version,
            timers.pending,
            if timers.rule_gone {
                "the rule was removed"
            } else {
                "an earlier version"
            },
        );
    }
    out.push_str(
        "  cancel: converge timers cancel --rule RULE [--version VERSION] --by WHO --reason WHY\n",
    );
    out
}

/// The daemons sharing the database: each one's partitions and the duties
/// (sources, pruning) it runs.
fn cluster_lines(cluster: &Cluster) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "this daemon: {}; {} daemon(s) share the database:\n",
        cluster.daemon,
        cluster.daemons.len()
    );
    for daemon in &cluster.daemons {
        let _ = write!(
            out,
            "  {}  {} partition(s)",
            daemon.daemon, daemon.partitions
        );
        if !daemon.duties.is_empty() {
            let duties: Vec<String> = daemon.duties.iter().map(|d| d.to_string()).collect();
            let _ = write!(out, "; runs {}", duties.join(", "));
        }
        out.push('\n');
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
    fn each_daemon_sharing_the_database_is_listed_with_the_duties_it_runs() {
        use converge_api::status::{ClusterDaemon, Duty};
        let cluster = Cluster {
            daemon: "vm-12-a".into(),
            daemons: vec![
                ClusterDaemon {
                    daemon: "vm-12-a".into(),
                    partitions: 32,
                    duties: vec![Duty::FileDrop("briefs".into()), Duty::Retention],
                },
                ClusterDaemon {
                    daemon: "vm-13-b".into(),
                    partitions: 32,
                    duties: vec![],
                },
            ],
        };
        assert_eq!(
            cluster_lines(&cluster),
            "this daemon: vm-12-a; 2 daemon(s) share the database:\n\
             \x20 vm-12-a  32 partition(s); runs drop folder briefs, retention\n\
             \x20 vm-13-b  32 partition(s)\n"
        );
    }

    #[test]
    fn timers_of_rule_versions_gone_are_listed_with_how_to_cancel_them() {
        assert_eq!(stale_timer_lines(&[]), "");
        let stale = [
            StaleTimers {
                rule: "digest".into(),
                version: "0011223344556677".into(),
                pending: 3,
                rule_gone: true,
            },
            StaleTimers {
                rule: "stalled_handoff".into(),
                version: "b54c3c0b1825aa80".into(),
                pending: 12,
                rule_gone: false,
            },
        ];
        assert_eq!(
            stale_timer_lines(&stale),
            "timers waiting from rule versions no longer loaded (they fire as planned):\n\
             \x20 digest           0011223344556677  3 pending, the rule was removed\n\
             \x20 stalled_handoff  b54c3c0b1825aa80  12 pending, an earlier version\n\
             \x20 cancel: converge timers cancel --rule RULE [--version VERSION] --by WHO --reason WHY\n"
        );
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
