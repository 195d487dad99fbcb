//! `converge timers cancel`: a person cancels the pending timers of a rule
//! through the running daemon (`POST /v1/timers/cancel`), after an edit
//! changed what they are for or the rule was removed. Each cancelled timer
//! keeps who cancelled it and why.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use converge_api::timers::{CancelTimers, TimersCancelled};

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
    let TimersCommand::Cancel {
        rule,
        version,
        entity,
        by,
        reason,
    } = args.command;
    let request = CancelTimers {
        rule,
        version,
        entity,
        by,
        reason,
    };
    let done = async {
        let token = admin_token(&config)?;
        let answer: TimersCancelled = client
            .post("/v1/timers/cancel", &token, &request)
            .await
            .map_err(|e| {
                e.explain(|refused| {
                    format!("cancel refused ({}): {}", refused.status, refused.message())
                })
            })?;
        if args.json {
            println!("{}", json_text(&answer)?);
        } else {
            println!("{}", describe(&request, &answer));
        }
        anyhow::Ok(())
    };
    match done.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => AdminError::Failed(e).report(),
    }
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
