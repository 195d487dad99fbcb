//! Convergence gates: the sends a campaign's rules hold until its channels
//! converge, and the people who override them.
//!
//! Rules decide (`hold_send` / `release_send`) and the engine keeps the
//! held sends (`converge_engine::gates`); this module shows them:
//! - [`gate_view`], one gate as `GET /v1/gates` answers it;
//! - `converge gates` and `converge gates override`, which ask the daemon.
//!
//! See docs/gates.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use converge_api::Time;
use converge_api::gates::{
    Gate, GateChannel, GateOverride, GateTerm, Gates, HeldSend, LastHold, OverrideAccepted,
    TermReading,
};
use converge_api::timers::PendingTimer;
use converge_model::EntityState;
use converge_store::{GateOverrideRecord, HeldSendRecord, HeldSendStatus};
use serde_json::{Map, Value};

use crate::admin_client::{AdminClient, admin_token, json_text, or_dash, text};

pub use converge_api::gates::Override;

/// One gate as `GET /v1/gates` shows it: its channels (stage, approval,
/// pause, held sends), its held sends, the reasons of the last hold (one
/// per failed condition), the terms of the rule's `fields.gate` when it
/// sets them, and the overrides. `held` are the campaign's sends, held or
/// released; `open` is whether any is still held.
pub fn gate_view(
    campaign: &str,
    entity: Option<&EntityState>,
    held: &[HeldSendRecord],
    overrides: &[GateOverrideRecord],
    next_timer: Option<PendingTimer>,
) -> Gate {
    let still_held: Vec<&HeldSendRecord> = held
        .iter()
        .filter(|h| h.status == HeldSendStatus::Held)
        .collect();
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    };
    if let Some(entity) = entity {
        for name in entity
            .fields
            .get("channels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            add(name);
        }
        for name in entity.channels.keys() {
            add(name);
        }
    }
    for h in &still_held {
        add(&h.channel);
    }
    let channels = names
        .iter()
        .map(|name| {
            let state = entity.and_then(|e| e.channels.get(name));
            let stage = state.and_then(|s| s.stage.clone());
            let paused = state
                .and_then(|s| s.fields.get("paused"))
                .is_some_and(|p| p == &Value::Bool(true));
            GateChannel {
                channel: name.clone(),
                approved: stage.as_deref() == Some("approved"),
                stage,
                paused,
                held: still_held.iter().filter(|h| &h.channel == name).count() as u64,
            }
        })
        .collect();
    let last_hold = held
        .iter()
        .max_by_key(|h| (h.held_at_ms, h.id))
        .map(|h| LastHold {
            channel: h.channel.clone(),
            at: Time::stored(h.held_at_ms),
            rule: h.rule.clone(),
            reasons: h.reason.split("; ").map(str::to_string).collect(),
        });
    let terms = entity
        .and_then(|e| e.fields.get("gate"))
        .and_then(Value::as_object)
        .map(gate_terms);
    let held_sends = held
        .iter()
        .map(|h| HeldSend {
            channel: h.channel.clone(),
            event_id: h.event_id.clone(),
            event_seq: h.event_seq,
            rule: h.rule.clone(),
            reason: h.reason.clone(),
            held_at: Time::stored(h.held_at_ms),
            status: h.status.name().to_string(),
            released_at: h.released_at_ms.map(Time::stored),
            released_by: h.released_by.clone(),
        })
        .collect();
    let overrides = overrides
        .iter()
        .map(|o| GateOverride {
            by: o.by.clone(),
            reason: o.reason.clone(),
            channel: o.channel.clone(),
            at: Time::stored(o.at_ms),
            released: o.released,
            event_seq: o.event_seq,
        })
        .collect();
    Gate {
        campaign: campaign.to_string(),
        open: !still_held.is_empty(),
        held_since: still_held
            .iter()
            .map(|h| h.held_at_ms)
            .min()
            .map(Time::stored),
        channels,
        held_sends,
        last_hold,
        terms,
        overrides,
        next_timer,
    }
}

/// The terms of `fields.gate`: a boolean is a condition (pass or fail),
/// anything else a value shown as is.
fn gate_terms(gate: &Map<String, Value>) -> Vec<GateTerm> {
    gate.iter()
        .map(|(name, value)| GateTerm {
            term: name.clone(),
            reading: match value {
                Value::Bool(pass) => TermReading::Pass(*pass),
                other => TermReading::Value(other.clone()),
            },
        })
        .collect()
}

// ---- the command line ----

#[derive(Args)]
pub struct GatesArgs {
    #[command(subcommand)]
    command: Option<GatesCommand>,
    #[arg(long, short, global = true, default_value = "config/converge.toml")]
    config: PathBuf,
    /// Print the gates as JSON, as `GET /v1/gates` returns them.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum GatesCommand {
    /// One campaign's gate, open or closed, with its history: every send
    /// it held (released ones too: when, by whom) and every override.
    Show {
        /// The campaign: `campaign/<id>` or `<id>`.
        campaign: String,
    },
    /// Release a campaign's held sends on a person's word, recorded with who
    /// and why. The admin token comes from the environment variable named
    /// by `server.admin_token_env` (default CONVERGE_ADMIN_TOKEN).
    Override {
        /// The campaign: `campaign/<id>` or `<id>`.
        campaign: String,
        /// Who overrides.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Release only this channel's sends (default: every channel's).
        #[arg(long)]
        channel: Option<String>,
    },
}

/// `converge gates`: 0 when it could ask, 1 when the daemon failed or
/// refused, 2 when the config is wrong.
pub async fn run(args: GatesArgs) -> ExitCode {
    let (client, config) = match AdminClient::load(&args.config, "converge gates") {
        Ok(found) => found,
        Err(e) => return e.report(),
    };
    let done = match args.command {
        None => list(&client, args.json).await,
        Some(GatesCommand::Show { campaign }) => show(&client, &campaign, args.json).await,
        Some(GatesCommand::Override {
            campaign,
            by,
            reason,
            channel,
        }) => match admin_token(&config) {
            Ok(token) => {
                let request = Override {
                    by,
                    reason,
                    channel,
                };
                override_gate(&client, &campaign, request, &token).await
            }
            Err(e) => Err(e),
        },
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::admin_client::AdminError::Failed(e).report(),
    }
}

async fn list(client: &AdminClient, as_json: bool) -> anyhow::Result<()> {
    let gates: Gates = client.get_or_explain("/v1/gates").await?;
    if as_json {
        println!("{}", json_text(&gates)?);
    } else {
        print!("{}", describe(&gates));
    }
    Ok(())
}

/// `campaign/<id>` from what a person typed: that, or a bare id.
fn campaign_key(campaign: &str) -> String {
    if campaign.contains('/') {
        campaign.to_string()
    } else {
        format!("campaign/{campaign}")
    }
}

async fn show(client: &AdminClient, campaign: &str, as_json: bool) -> anyhow::Result<()> {
    let campaign = campaign_key(campaign);
    let gate: Gate = client
        .get_or_explain(&format!("/v1/gates/{campaign}"))
        .await?;
    if as_json {
        println!("{}", json_text(&gate)?);
    } else {
        let mut out = String::new();
        describe_gate(&mut out, &gate, true);
        print!("{out}");
    }
    Ok(())
}

async fn override_gate(
    client: &AdminClient,
    campaign: &str,
    request: Override,
    token: &str,
) -> anyhow::Result<()> {
    let campaign = campaign_key(campaign);
    let accepted: OverrideAccepted = client
        .post(&format!("/v1/gates/{campaign}/override"), token, &request)
        .await
        .map_err(|e| {
            e.explain(|refused| {
                format!(
                    "override refused ({}): {}",
                    refused.status,
                    refused.message()
                )
            })
        })?;
    println!(
        "override of {campaign} journaled as event {} (seq {}); its releases show in `converge gates`",
        accepted.event.id,
        accepted
            .event
            .seq
            .map_or_else(|| "null".to_string(), |seq| seq.to_string())
    );
    Ok(())
}

/// The open gates for people.
fn describe(answer: &Gates) -> String {
    if answer.gates.is_empty() {
        return "no open gates: no send is held\n".into();
    }
    let mut out = String::new();
    for gate in &answer.gates {
        describe_gate(&mut out, gate, false);
    }
    out
}

/// One gate for people; with `history`, the sends it released too.
fn describe_gate(out: &mut String, gate: &Gate, history: bool) {
    use std::fmt::Write;
    if gate.open {
        let _ = writeln!(
            out,
            "{}: held since {}",
            gate.campaign,
            or_dash(gate.held_since)
        );
    } else {
        let _ = writeln!(out, "{}: nothing held now", gate.campaign);
    }
    out.push_str("  channels:\n");
    for channel in &gate.channels {
        let _ = writeln!(
            out,
            "    {:<12} {:<12} {}{}{}",
            channel.channel,
            or_dash(channel.stage.as_deref()),
            if channel.approved {
                "approved"
            } else {
                "not approved"
            },
            if channel.paused { ", paused" } else { "" },
            if channel.held > 0 {
                format!(", {} send(s) held", channel.held)
            } else {
                String::new()
            }
        );
    }
    if let Some(last) = &gate.last_hold {
        let _ = writeln!(
            out,
            "  last hold ({} at {}, by {}), failing:",
            last.channel, last.at, last.rule
        );
        for reason in &last.reasons {
            let _ = writeln!(out, "    - {reason}");
        }
    }
    if let Some(terms) = &gate.terms {
        let terms: Vec<String> = terms
            .iter()
            .map(|t| match &t.reading {
                TermReading::Pass(pass) => {
                    format!("{} {}", t.term, if *pass { "pass" } else { "FAIL" })
                }
                TermReading::Value(value) => format!("{} {}", t.term, text(value)),
            })
            .collect();
        let _ = writeln!(out, "  gate terms: {}", terms.join(", "));
    }
    out.push_str(if history {
        "  sends held:\n"
    } else {
        "  held sends:\n"
    });
    if history && gate.held_sends.is_empty() {
        out.push_str("    none\n");
    }
    for send in &gate.held_sends {
        let released = !send.is_held();
        if released && !history {
            continue;
        }
        let _ = writeln!(
            out,
            "    {} event {} since {}: {}{}",
            send.channel,
            send.event_id,
            send.held_at,
            send.reason,
            if released {
                format!(
                    "; released at {} by {}",
                    or_dash(send.released_at),
                    or_dash(send.released_by.as_deref())
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(timer) = &gate.next_timer {
        let _ = writeln!(
            out,
            "  next: {}{} (rule {}) at {}",
            timer.event_type,
            timer
                .expect_type
                .as_ref()
                .map(|t| format!(" unless {t} comes"))
                .unwrap_or_default(),
            timer.rule,
            timer.due_at
        );
    }
    if !gate.overrides.is_empty() {
        out.push_str("  overrides:\n");
        for o in &gate.overrides {
            let _ = writeln!(
                out,
                "    {} by {} ({}): {}; released {}",
                o.at,
                o.by,
                o.channel.as_deref().unwrap_or("every channel"),
                o.reason,
                o.released
            );
        }
    }
}
