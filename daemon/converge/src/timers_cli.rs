//! `converge timers list`: the pending timers, soonest first, from the
//! running daemon (`GET /v1/timers`): what the rules will do next, and
//! when. `converge timers cancel`: a person cancels the pending timers of
//! a rule (`POST /v1/timers/cancel`), after an edit changed what they are
//! for or the rule was removed. Each cancelled timer keeps who cancelled it
//! and why.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use converge_api::timers::{CancelTimers, PendingTimers, TimersCancelled};

use crate::admin_client::{AdminClient, AdminError, admin_token, json_text};

#[derive(Args)]
pub struct TimersArgs {
    #[command(subcommand)]
    command: TimersCommand,
    #[arg(long, short, global = true, default_value = "config/converge.toml")]
    config: PathBuf,
    /// Print the daemon's JSON answer as it is.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum TimersCommand {
    /// List the pending timers, soonest first: what fires, about what, from
    /// which rule and version, and when.
    List {
        /// Only those a rule made, by name.
        #[arg(long)]
        rule: Option<String>,
        /// Only those one version of it made (its hash).
        #[arg(long, requires = "rule")]
        version: Option<String>,
        /// Only those due within this long (`24h`, `3d`).
        #[arg(long)]
        within: Option<String>,
        /// At most this many (1 to 1,000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Cancel the pending timers a rule made, so none of them fires: all of
    /// them, those of one version of the rule, or those about one entity.
    /// Needs the admin token (the variable `server.admin_token_env` names).
    Cancel {
        /// The rule that made them, by name (a removed rule's too).
        #[arg(long)]
        rule: String,
        /// Only those one version made: its hash, as `converge status` and
        /// the console's Rules & health show it (a prefix is not enough).
        #[arg(long)]
        version: Option<String>,
        /// Only those about this entity (`task/JIRA-7`).
        #[arg(long)]
        entity: Option<String>,
        /// Who cancels them.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// `converge timers`: 0 done, 1 the daemon failed or refused, 2 the config
/// is wrong.
pub async fn run(args: TimersArgs) -> ExitCode {
    let (client, config) = match AdminClient::load(&args.config, "converge timers") {
        Ok(found) => found,
        Err(e) => return e.report(),
    };
    let done = match args.command {
        TimersCommand::List {
            rule,
            version,
            within,
            limit,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (name, value) in [("rule", rule), ("version", version), ("within", within)] {
                if let Some(value) = value {
                    query.append_pair(name, &value);
                }
            }
            query.append_pair("limit", &limit.to_string());
            let path = format!("/v1/timers?{}", query.finish());
            list(&client, &path, args.json).await
        }
        TimersCommand::Cancel {
            rule,
            version,
            entity,
            by,
            reason,
        } => {
            let request = CancelTimers {
                rule,
                version,
                entity,
                by,
                reason,
            };
            match admin_token(&config) {
                Ok(token) => cancel(&client, &token, &request, args.json).await,
                Err(e) => Err(e),
            }
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => AdminError::Failed(e).report(),
    }
}

async fn cancel(
    client: &AdminClient,
    token: &str,
    request: &CancelTimers,
    as_json: bool,
) -> anyhow::Result<()> {
    let answer: TimersCancelled = client
        .post("/v1/timers/cancel", token, request)
        .await
        .map_err(|e| {
            e.explain(|refused| {
                format!("cancel refused ({}): {}", refused.status, refused.message())
            })
        })?;
    if as_json {
        println!("{}", json_text(&answer)?);
    } else {
        println!("{}", describe(request, &answer));
    }
    Ok(())
}

async fn list(client: &AdminClient, path: &str, as_json: bool) -> anyhow::Result<()> {
    let pending: PendingTimers = client.get_or_explain(path).await?;
    if as_json {
        println!("{}", json_text(&pending)?);
    } else {
        print!("{}", table(&pending));
    }
    Ok(())
}

/// One line per timer, its columns aligned, then how many.
fn table(pending: &PendingTimers) -> String {
    let rows: Vec<[String; 4]> = pending
        .timers
        .iter()
        .map(|timer| {
            let fires = match &timer.expect_type {
                Some(expected) => format!("{} unless {expected}", timer.event_type),
                None => timer.event_type.clone(),
            };
            [
                timer.due_at.to_string(),
                timer.entity.clone(),
                fires,
                format!("{} {}", timer.rule, timer.version),
            ]
        })
        .collect();
    let header = ["DUE", "ENTITY", "FIRES", "RULE AND VERSION"].map(String::from);
    let mut widths = [0; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    match (pending.timers.len(), pending.more) {
        (0, _) => out = "no pending timer\n".to_string(),
        (n, false) => out.push_str(&format!("{n} pending timer(s)\n")),
        (n, true) => out.push_str(&format!(
            "{n} pending timer(s) listed; more match (--limit, --rule, --within)\n"
        )),
    }
    out
}

/// What was cancelled, as a sentence.
fn describe(request: &CancelTimers, answer: &TimersCancelled) -> String {
    let mut which = format!("of rule {}", request.rule);
    if let Some(version) = &request.version {
        which.push_str(&format!(" version {version}"));
    }
    if let Some(entity) = &request.entity {
        which.push_str(&format!(" about {entity}"));
    }
    match answer.cancelled {
        0 => format!("no pending timer {which}: nothing cancelled"),
        n => format!("cancelled {n} pending timer(s) {which}; none of them will fire"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_timers_read_as_aligned_columns_then_how_many() {
        use converge_api::Time;
        use converge_api::timers::PendingTimer;
        let timer = |id, entity: &str, expect: Option<&str>| PendingTimer {
            id,
            entity: entity.into(),
            kind: if expect.is_some() {
                "expect"
            } else {
                "schedule"
            }
            .into(),
            event_type: "task.handoff.remind".into(),
            expect_type: expect.map(str::to_string),
            rule: "stalled_handoff".into(),
            version: "b54c3c0b1825aa80".into(),
            due_at: Time::stored(1_764_320_400_000),
        };
        let pending = PendingTimers {
            timers: vec![
                timer(1, "task/JIRA-7", None),
                timer(2, "campaign/spring-26", Some("task.moved")),
            ],
            more: true,
        };
        assert_eq!(
            table(&pending),
            "DUE                       ENTITY              FIRES                                  RULE AND VERSION\n\
             2025-11-28T09:00:00.000Z  task/JIRA-7         task.handoff.remind                    stalled_handoff b54c3c0b1825aa80\n\
             2025-11-28T09:00:00.000Z  campaign/spring-26  task.handoff.remind unless task.moved  stalled_handoff b54c3c0b1825aa80\n\
             2 pending timer(s) listed; more match (--limit, --rule, --within)\n"
        );
        let none = PendingTimers {
            timers: Vec::new(),
            more: false,
        };
        assert_eq!(table(&none), "no pending timer\n");
    }

    #[test]
    fn a_cancellation_reads_as_what_it_did() {
        let request = CancelTimers {
            rule: "stalled_handoff".into(),
            version: Some("b54c3c0b1825aa80".into()),
            entity: None,
            by: "ana".into(),
            reason: "the ladder changed".into(),
        };
        assert_eq!(
            describe(&request, &TimersCancelled { cancelled: 3 }),
            "cancelled 3 pending timer(s) of rule stalled_handoff version b54c3c0b1825aa80; none of them will fire"
        );
        let about = CancelTimers {
            version: None,
            entity: Some("task/T-1".into()),
            ..request
        };
        assert_eq!(
            describe(&about, &TimersCancelled { cancelled: 0 }),
            "no pending timer of rule stalled_handoff about task/T-1: nothing cancelled"
        );
    }
}
