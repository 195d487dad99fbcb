//! Dead letters: actions that failed for good (a permanent failure, or
//! every attempt used up) wait in the store for a person to retry or drop
//! them. This module is an action as `/v1/dlq` shows it ([`action_view`])
//! and the `converge dlq` commands, which ask the running daemon
//! (`/v1/dlq`); `web` serves them and the journal records them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use converge_api::Time;
use converge_api::dlq::{ActionHistory, ActionShown, ActionView, DeadLetterChanged, DeadLetters};

use crate::admin_client::{AdminClient, AdminError, CallError, admin_token, json_text, or_dash};

/// Who retries or drops a dead letter, and why: kept in the action's history.
pub use converge_api::dlq::DeadLetterRequest;

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
    /// Put dead letters back to pending with a fresh attempt budget; each
    /// runs again with the same idempotency key. Needs the admin token
    /// (the variable `server.admin_token_env` names).
    Retry {
        #[command(flatten)]
        which: Which,
        /// Who retries.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Drop dead letters for good: they will not run again. Needs the admin
    /// token.
    Drop {
        #[command(flatten)]
        which: Which,
        /// Who drops them.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// The dead letters a retry or a drop is for: given by id, or every one
/// (of a route, of a plugin) as the daemon lists them when asked.
#[derive(Args)]
#[group(skip)]
struct Which {
    /// The dead letters, by action id (or `--all`).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    ids: Vec<i64>,
    /// Every dead letter (after a fix: a secret set, a receiver back).
    #[arg(long)]
    all: bool,
    /// With `--all`: only those of this route.
    #[arg(long, requires = "all")]
    route: Option<String>,
    /// With `--all`: only those of this plugin.
    #[arg(long, requires = "all")]
    plugin: Option<String>,
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
        DlqCommand::Retry { which, by, reason } => {
            decide(&client, &config, which, "retry", by, reason, args.json).await
        }
        DlqCommand::Drop { which, by, reason } => {
            decide(&client, &config, which, "drop", by, reason, args.json).await
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => AdminError::Failed(e).report(),
    }
}

/// The error of a read the daemon refused.
fn refused_read(e: CallError) -> anyhow::Error {
    e.explain(|refused| {
        format!(
            "converge answered {}: {}",
            refused.status,
            refused.message()
        )
    })
}

async fn list(client: &AdminClient, limit: usize, after: i64, json: bool) -> anyhow::Result<()> {
    let answer: DeadLetters = client
        .get(&format!("/v1/dlq?limit={limit}&after={after}"))
        .await
        .map_err(refused_read)?;
    if json {
        println!("{}", json_text(&answer)?);
    } else {
        print!("{}", describe_list(&answer));
    }
    Ok(())
}

async fn show(client: &AdminClient, id: i64, json: bool) -> anyhow::Result<()> {
    let answer: ActionShown = client
        .get(&format!("/v1/dlq/{id}"))
        .await
        .map_err(refused_read)?;
    if json {
        println!("{}", json_text(&answer)?);
    } else {
        print!("{}", describe_action(&answer.action));
    }
    Ok(())
}

/// The ids `which` names: as given, or every dead letter the daemon lists
/// now (page by page), of the route and plugin asked for.
async fn selected(client: &AdminClient, which: Which) -> anyhow::Result<Vec<i64>> {
    if !which.all {
        return Ok(which.ids);
    }
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let page: DeadLetters = client
            .get(&format!("/v1/dlq?limit=1000&after={after}"))
            .await
            .map_err(refused_read)?;
        ids.extend(
            page.dead_letters
                .iter()
                .filter(|letter| which.route.as_ref().is_none_or(|r| *r == letter.route))
                .filter(|letter| which.plugin.as_ref().is_none_or(|p| *p == letter.plugin))
                .map(|letter| letter.id),
        );
        match page.next_after {
            Some(next) => after = next,
            None => return Ok(ids),
        }
    }
}

/// Retries or drops each selected dead letter through the daemon, one
/// journaled change each, with who and why. Goes on past a refusal (one
/// retried meanwhile from the console, say) and fails at the end if any
/// was refused.
async fn decide(
    client: &AdminClient,
    config: &crate::config::Config,
    which: Which,
    op: &str,
    by: String,
    reason: String,
    json: bool,
) -> anyhow::Result<()> {
    let token = admin_token(config)?;
    let all = which.all;
    let ids = selected(client, which).await?;
    if ids.is_empty() {
        if all {
            println!("no dead letters to {op}");
        }
        return Ok(());
    }
    let request = DeadLetterRequest { by, reason };
    let mut refused = Vec::new();
    for &id in &ids {
        let answer: Result<DeadLetterChanged, _> = client
            .post(&format!("/v1/dlq/{id}/{op}"), &token, &request)
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let e = e.explain(|refused| {
                    format!("{op} refused ({}): {}", refused.status, refused.message())
                });
                if ids.len() == 1 {
                    return Err(e);
                }
                eprintln!("action {id}: {e:#}");
                refused.push(id);
                continue;
            }
        };
        if json {
            println!("{}", json_text(&answer)?);
        } else if op == "retry" {
            println!(
                "action {id} is pending again and queued to run (idempotency key {})",
                answer.idempotency_key
            );
        } else {
            println!("action {id} dropped; it will not run again");
        }
    }
    let done = ids.len() - refused.len();
    if ids.len() > 1 && !json {
        let past = if op == "retry" { "retried" } else { "dropped" };
        println!("{past} {done} of {} dead letter(s)", ids.len());
    }
    if refused.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} refused (actions {})",
            refused.len(),
            ids.len(),
            refused
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The dead letters for people, one block each.
fn describe_list(answer: &DeadLetters) -> String {
    use std::fmt::Write;
    if answer.dead_letters.is_empty() {
        return "no dead letters\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(out, "{} dead letter(s)", answer.count);
    for letter in &answer.dead_letters {
        let _ = writeln!(
            out,
            "action {}: {} via route {} (plugin {}), dead since {}",
            letter.id,
            letter.decision_kind,
            letter.route,
            letter.plugin,
            or_dash(letter.finished_at),
        );
        let _ = writeln!(
            out,
            "  event {} ({}) about {}, rule {}",
            letter.event_id,
            letter.event_type,
            or_dash(letter.subject.as_deref()),
            letter.rule,
        );
        let _ = writeln!(
            out,
            "  after {} attempt(s): {}",
            letter.attempts,
            or_dash(letter.detail.as_deref())
        );
    }
    if let Some(next) = answer.next_after {
        let _ = writeln!(out, "more: converge dlq list --after {next}");
    }
    out
}

/// One action and its history for people.
fn describe_action(action: &ActionView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "action {}: {} via route {} (plugin {})",
        action.id, action.decision_kind, action.route, action.plugin
    );
    let _ = writeln!(out, "  status           {}", action.status);
    let _ = writeln!(out, "  attempts         {}", action.attempts);
    let _ = writeln!(
        out,
        "  last detail      {}",
        or_dash(action.detail.as_deref())
    );
    let _ = writeln!(
        out,
        "  event            {} ({}) from {}, seq {}",
        action.event_id, action.event_type, action.event_source, action.event_seq
    );
    let _ = writeln!(
        out,
        "  subject          {}",
        or_dash(action.subject.as_deref())
    );
    let _ = writeln!(out, "  rule             {}", action.rule);
    let _ = writeln!(out, "  idempotency key  {}", action.idempotency_key);
    if !action.history.is_empty() {
        out.push_str("  history:\n");
        for entry in &action.history {
            let who = match (&entry.by, &entry.reason) {
                (Some(by), Some(reason)) => format!(" by {by}: {reason}"),
                _ => String::new(),
            };
            let detail = entry
                .detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {}  {} (attempts {}){who}{detail}",
                entry.at, entry.kind, entry.attempts
            );
        }
    }
    out
}

/// One action as `/v1/dlq` shows it: the store's record, its times as
/// RFC 3339, and the idempotency key its plugin sends.
pub fn action_view(detail: &converge_store::ActionDetail) -> ActionView {
    let a = &detail.action;
    ActionView {
        id: a.id,
        status: a.status.name().to_string(),
        route: a.route.clone(),
        plugin: a.plugin.clone(),
        attempts: a.attempts,
        detail: a.detail.clone(),
        external_id: a.external_id.clone(),
        next_attempt_at: a.next_attempt_at_ms.map(Time::stored),
        finished_at: a.finished_at_ms.map(Time::stored),
        idempotency_key: a.idempotency_key(),
        event_seq: detail.event_seq,
        event_id: detail.event_id.clone(),
        event_source: detail.event_source.clone(),
        event_type: detail.event_type.clone(),
        subject: detail.subject.clone(),
        decision_id: detail.decision_id,
        decision_kind: detail.decision_kind.clone(),
        rule: detail.rule.clone(),
        history: a
            .history
            .iter()
            .map(|h| ActionHistory {
                at: Time::stored(h.at_ms),
                kind: h.kind.name().to_string(),
                attempts: h.attempts,
                detail: h.detail.clone(),
                by: h.by.clone(),
                reason: h.reason.clone(),
            })
            .collect(),
    }
}
