//! Dead letters: actions that failed for good (a permanent failure, or
//! every attempt used up) wait in the store for a person to retry or drop
//! them. This module is what a person's decision is ([`DeadLetterRequest`])
//! and the `converge dlq` commands, which ask the running daemon
//! (`/v1/dlq`); `web` serves them and the journal records them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::admin_client::{AdminClient, AdminError, admin_token, text};

/// Longest `by` and `reason` a retry or drop may carry.
const MAX_BY: usize = 200;
const MAX_REASON: usize = 2000;

/// Who retries or drops a dead letter, and why: kept in the action's history.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRequest {
    pub by: String,
    pub reason: String,
}

impl DeadLetterRequest {
    /// Checks what a person sent; the error says what is wrong.
    pub fn validate(self) -> Result<DeadLetterRequest, String> {
        let by = self.by.trim().to_string();
        let reason = self.reason.trim().to_string();
        if by.is_empty() || by.chars().count() > MAX_BY {
            return Err(format!("`by` names who decides: 1 to {MAX_BY} characters"));
        }
        if reason.is_empty() || reason.chars().count() > MAX_REASON {
            return Err(format!("`reason` says why: 1 to {MAX_REASON} characters"));
        }
        Ok(DeadLetterRequest { by, reason })
    }
}

#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    #[arg(long, short, global = true, default_value = "config/converge.toml")]
    config: PathBuf,
    /// Print the daemon's JSON answer as it is.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// The dead letters, oldest first: action, route, plugin, the event and
    /// rule behind it, attempts and the last error.
    List {
        /// At most this many (the daemon caps it at 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only those with an id greater than this, to page through.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// One action (dead letter or not) with its history: failed attempts
    /// and their errors, retries and drops with who and why.
    Show { id: i64 },
    /// Put a dead letter back to pending with a fresh attempt budget; it
    /// runs again with the same idempotency key. Needs the admin token
    /// (the variable `server.admin_token_env` names).
    Retry {
        id: i64,
        /// Who retries.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Drop a dead letter: it never runs again. Needs the admin token.
    Drop {
        id: i64,
        /// Who drops it.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// `converge dlq`: 0 done, 1 the daemon failed or refused, 2 the config is wrong.
pub async fn run(args: DlqArgs) -> ExitCode {
    let (client, config) = match AdminClient::load(&args.config, "converge dlq") {
        Ok(found) => found,
        Err(e) => return e.report(),
    };
    let done = match args.command {
        DlqCommand::List { limit, after } => list(&client, limit, after, args.json).await,
        DlqCommand::Show { id } => show(&client, id, args.json).await,
        DlqCommand::Retry { id, by, reason } => {
            decide(&client, &config, id, "retry", by, reason, args.json).await
        }
        DlqCommand::Drop { id, by, reason } => {
            decide(&client, &config, id, "drop", by, reason, args.json).await
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => AdminError::Failed(e).report(),
    }
}

async fn list(client: &AdminClient, limit: usize, after: i64, json: bool) -> anyhow::Result<()> {
    let answer = client
        .get(&format!("/v1/dlq?limit={limit}&after={after}"))
        .await?;
    if answer.status != 200 {
        bail!(
            "converge answered {}: {}",
            answer.status,
            answer.error_message()
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer.body)?);
    } else {
        print!("{}", describe_list(&answer.body));
    }
    Ok(())
}

async fn show(client: &AdminClient, id: i64, json: bool) -> anyhow::Result<()> {
    let answer = client.get(&format!("/v1/dlq/{id}")).await?;
    if answer.status != 200 {
        bail!(
            "converge answered {}: {}",
            answer.status,
            answer.error_message()
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer.body)?);
    } else {
        print!("{}", describe_action(&answer.body["action"]));
    }
    Ok(())
}

async fn decide(
    client: &AdminClient,
    config: &crate::config::Config,
    id: i64,
    op: &str,
    by: String,
    reason: String,
    json: bool,
) -> anyhow::Result<()> {
    let token = admin_token(config)?;
    let request = DeadLetterRequest { by, reason };
    let answer = client
        .post(
            &format!("/v1/dlq/{id}/{op}"),
            &token,
            &serde_json::to_value(&request)?,
        )
        .await?;
    if !(200..300).contains(&answer.status) {
        bail!(
            "{op} refused ({}): {}",
            answer.status,
            answer.error_message()
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer.body)?);
    } else if op == "retry" {
        println!(
            "action {id} is pending again and queued to run (idempotency key {})",
            text(&answer.body["idempotency_key"])
        );
    } else {
        println!("action {id} dropped; it will not run again");
    }
    Ok(())
}

/// The dead letters for people, one block each.
fn describe_list(answer: &Value) -> String {
    use std::fmt::Write;
    let letters = answer["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if letters.is_empty() {
        return "no dead letters\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(out, "{} dead letter(s)", text(&answer["count"]));
    for letter in &letters {
        let _ = writeln!(
            out,
            "action {}: {} via route {} (plugin {}), dead since {}",
            text(&letter["id"]),
            text(&letter["decision_kind"]),
            text(&letter["route"]),
            text(&letter["plugin"]),
            text(&letter["finished_at"]),
        );
        let _ = writeln!(
            out,
            "  event {} ({}) about {}, rule {}",
            text(&letter["event_id"]),
            text(&letter["event_type"]),
            text(&letter["subject"]),
            text(&letter["rule"]),
        );
        let _ = writeln!(
            out,
            "  after {} attempt(s): {}",
            text(&letter["attempts"]),
            text(&letter["detail"])
        );
    }
    if !answer["next_after"].is_null() {
        let _ = writeln!(
            out,
            "more: converge dlq list --after {}",
            text(&answer["next_after"])
        );
    }
    out
}

/// One action and its history for people.
fn describe_action(action: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "action {}: {} via route {} (plugin {})",
        text(&action["id"]),
        text(&action["decision_kind"]),
        text(&action["route"]),
        text(&action["plugin"])
    );
    let _ = writeln!(out, "  status           {}", text(&action["status"]));
    let _ = writeln!(out, "  attempts         {}", text(&action["attempts"]));
    let _ = writeln!(out, "  last detail      {}", text(&action["detail"]));
    let _ = writeln!(
        out,
        "  event            {} ({}) from {}, seq {}",
        text(&action["event_id"]),
        text(&action["event_type"]),
        text(&action["event_source"]),
        text(&action["event_seq"])
    );
    let _ = writeln!(out, "  subject          {}", text(&action["subject"]));
    let _ = writeln!(out, "  rule             {}", text(&action["rule"]));
    let _ = writeln!(
        out,
        "  idempotency key  {}",
        text(&action["idempotency_key"])
    );
    let history = action["history"].as_array().cloned().unwrap_or_default();
    if !history.is_empty() {
        out.push_str("  history:\n");
        for entry in &history {
            let who = match (entry.get("by"), entry.get("reason")) {
                (Some(by), Some(reason)) => format!(" by {}: {}", text(by), text(reason)),
                _ => String::new(),
            };
            let detail = entry
                .get("detail")
                .map(|d| format!(": {}", text(d)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {}  {} (attempts {}){who}{detail}",
                text(&entry["at"]),
                text(&entry["kind"]),
                text(&entry["attempts"])
            );
        }
    }
    out
}

/// The JSON of one action for `/v1/dlq`: the store's record, its times as
/// RFC 3339, and the idempotency key its plugin sends.
pub fn action_view(detail: &converge_store::ActionDetail) -> Value {
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
            .map_or(Value::Null, |t| {
                Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            })
    };
    let a = &detail.action;
    let history: Vec<Value> = a
        .history
        .iter()
        .map(|h| {
            let mut entry = json!({
                "at": time(Some(h.at_ms)),
                "kind": h.kind,
                "attempts": h.attempts,
            });
            for (name, value) in [("detail", &h.detail), ("by", &h.by), ("reason", &h.reason)] {
                if let Some(value) = value {
                    entry[name] = Value::String(value.clone());
                }
            }
            entry
        })
        .collect();
    json!({
        "id": a.id,
        "status": a.status,
        "route": a.route,
        "plugin": a.plugin,
        "attempts": a.attempts,
        "detail": a.detail,
        "external_id": a.external_id,
        "next_attempt_at": time(a.next_attempt_at_ms),
        "finished_at": time(a.finished_at_ms),
        "idempotency_key": crate::dispatcher::action_key(a),
        "event_seq": detail.event_seq,
        "event_id": detail.event_id,
        "event_source": detail.event_source,
        "event_type": detail.event_type,
        "subject": detail.subject,
        "decision_id": detail.decision_id,
        "decision_kind": detail.decision_kind,
        "rule": detail.rule,
        "history": history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_or_drop_needs_who_and_why() {
        let no_one = DeadLetterRequest {
            by: "  ".into(),
            reason: "fixed".into(),
        };
        assert!(no_one.validate().unwrap_err().contains("`by`"));
        let no_reason = DeadLetterRequest {
            by: "mia".into(),
            reason: String::new(),
        };
        assert!(no_reason.validate().unwrap_err().contains("`reason`"));
        let ok = DeadLetterRequest {
            by: " mia ".into(),
            reason: " token rotated ".into(),
        }
        .validate()
        .unwrap();
        assert_eq!(
            (ok.by.as_str(), ok.reason.as_str()),
            ("mia", "token rotated")
        );
    }
}
