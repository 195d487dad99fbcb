//! Convergence gates: the sends a campaign's rules hold until its channels
//! converge, and the people who override them.
//!
//! Rules decide (`hold_send` / `release_send`) and the engine keeps the
//! held sends (`converge_engine::gates`); this module shows them:
//! - [`gate_view`], the JSON of one gate for `GET /v1/gates` and
//!   `converge gates`;
//! - `converge gates` and `converge gates override`, which ask the daemon.
//!
//! See docs/gates.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use chrono::{TimeZone, Utc};
use clap::{Args, Subcommand};
use converge_model::EntityState;
use converge_store::{GateOverrideRecord, HeldSendRecord};
use serde_json::{Map, Value, json};

use crate::admin_client::{AdminClient, admin_token, text};

pub use converge_engine::gates::Override;

fn time(ms: i64) -> Value {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
}

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
) -> Value {
    let still_held: Vec<&HeldSendRecord> = held.iter().filter(|h| h.status == "held").collect();
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
    let channels: Vec<Value> = names
        .iter()
        .map(|name| {
            let state = entity.and_then(|e| e.channels.get(name));
            let stage = state.and_then(|s| s.stage.clone());
            let paused = state
                .and_then(|s| s.fields.get("paused"))
                .is_some_and(|p| p == &Value::Bool(true));
            json!({
                "channel": name,
                "stage": stage,
                "approved": stage.as_deref() == Some("approved"),
                "paused": paused,
                "held": still_held.iter().filter(|h| &h.channel == name).count(),
            })
        })
        .collect();
    let last_hold = held.iter().max_by_key(|h| (h.held_at_ms, h.id)).map(|h| {
        json!({
            "channel": h.channel,
            "at": time(h.held_at_ms),
            "rule": h.rule,
            "reasons": h.reason.split("; ").collect::<Vec<_>>(),
        })
    });
    let terms = entity
        .and_then(|e| e.fields.get("gate"))
        .and_then(Value::as_object)
        .map(gate_terms);
    let sends: Vec<Value> = held
        .iter()
        .map(|h| {
            json!({
                "channel": h.channel,
                "event_id": h.event_id,
                "event_seq": h.event_seq,
                "rule": h.rule,
                "reason": h.reason,
                "held_at": time(h.held_at_ms),
                "status": h.status,
                "released_at": h.released_at_ms.map_or(Value::Null, time),
                "released_by": h.released_by,
            })
        })
        .collect();
    let overrides: Vec<Value> = overrides
        .iter()
        .map(|o| {
            json!({
                "by": o.by,
                "reason": o.reason,
                "channel": o.channel,
                "at": time(o.at_ms),
                "released": o.released,
                "event_seq": o.event_seq,
            })
        })
        .collect();
    json!({
        "campaign": campaign,
        "open": !still_held.is_empty(),
        "held_since": still_held.iter().map(|h| h.held_at_ms).min().map_or(Value::Null, time),
        "channels": channels,
        "held_sends": sends,
        "last_hold": last_hold,
        "terms": terms,
        "overrides": overrides,
    })
}

/// The terms of `fields.gate`: a boolean is a condition (pass or fail),
/// anything else a value shown as is.
fn gate_terms(gate: &Map<String, Value>) -> Value {
    let terms: Vec<Value> = gate
        .iter()
        .map(|(name, value)| match value {
            Value::Bool(pass) => json!({"term": name, "pass": pass}),
            other => json!({"term": name, "value": other}),
        })
        .collect();
    Value::Array(terms)
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

/// The body of a `GET` the daemon answered 200; anything else is the error.
async fn get_ok(client: &AdminClient, path: &str) -> anyhow::Result<Value> {
    let answer = client.get(path).await?;
    if answer.status != 200 {
        bail!(
            "converge at {} answered {}: {}",
            client.address(),
            answer.status,
            answer.error_message()
        );
    }
    Ok(answer.body)
}

async fn list(client: &AdminClient, as_json: bool) -> anyhow::Result<()> {
    let body = get_ok(client, "/v1/gates").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", describe(&body));
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
    let body = get_ok(client, &format!("/v1/gates/{campaign}")).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let mut out = String::new();
        describe_gate(&mut out, &body, true);
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
    let answer = client
        .post(
            &format!("/v1/gates/{campaign}/override"),
            token,
            &serde_json::to_value(&request)?,
        )
        .await?;
    if answer.status != 202 {
        bail!(
            "override refused ({}): {}",
            answer.status,
            answer.error_message()
        );
    }
    println!(
        "override of {campaign} journaled as event {} (seq {}); its releases show in `converge gates`",
        answer.body["event"]["id"].as_str().unwrap_or("?"),
        answer.body["event"]["seq"]
    );
    Ok(())
}

/// The open gates for people.
fn describe(answer: &Value) -> String {
    let gates = answer["gates"].as_array().cloned().unwrap_or_default();
    if gates.is_empty() {
        return "no open gates: no send is held\n".into();
    }
    let mut out = String::new();
    for gate in &gates {
        describe_gate(&mut out, gate, false);
    }
    out
}

/// One gate for people; with `history`, the sends it released too.
fn describe_gate(out: &mut String, gate: &Value, history: bool) {
    use std::fmt::Write;
    if gate["open"] == true {
        let _ = writeln!(
            out,
            "{}: held since {}",
            text(&gate["campaign"]),
            text(&gate["held_since"])
        );
    } else {
        let _ = writeln!(out, "{}: nothing held now", text(&gate["campaign"]));
    }
    out.push_str("  channels:\n");
    for channel in gate["channels"].as_array().into_iter().flatten() {
        let held = channel["held"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "    {:<12} {:<12} {}{}{}",
            text(&channel["channel"]),
            text(&channel["stage"]),
            if channel["approved"] == true {
                "approved"
            } else {
                "not approved"
            },
            if channel["paused"] == true {
                ", paused"
            } else {
                ""
            },
            if held > 0 {
                format!(", {held} send(s) held")
            } else {
                String::new()
            }
        );
    }
    if let Some(last) = gate["last_hold"].as_object() {
        let _ = writeln!(
            out,
            "  last hold ({} at {}, by {}), failing:",
            last.get("channel").map(text).unwrap_or_default(),
            last.get("at").map(text).unwrap_or_default(),
            last.get("rule").map(text).unwrap_or_default()
        );
        for reason in last
            .get("reasons")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(out, "    - {}", text(reason));
        }
    }
    if let Some(terms) = gate["terms"].as_array() {
        let terms: Vec<String> = terms
            .iter()
            .map(|t| match &t["pass"] {
                Value::Bool(pass) => format!(
                    "{} {}",
                    text(&t["term"]),
                    if *pass { "pass" } else { "FAIL" }
                ),
                _ => format!("{} {}", text(&t["term"]), text(&t["value"])),
            })
            .collect();
        let _ = writeln!(out, "  gate terms: {}", terms.join(", "));
    }
    out.push_str(if history {
        "  sends held:\n"
    } else {
        "  held sends:\n"
    });
    let sends = gate["held_sends"].as_array().map_or(&[][..], Vec::as_slice);
    if history && sends.is_empty() {
        out.push_str("    none\n");
    }
    for send in sends {
        let released = send["status"] != "held";
        if released && !history {
            continue;
        }
        let _ = writeln!(
            out,
            "    {} event {} since {}: {}{}",
            text(&send["channel"]),
            text(&send["event_id"]),
            text(&send["held_at"]),
            text(&send["reason"]),
            if released {
                format!(
                    "; released at {} by {}",
                    text(&send["released_at"]),
                    text(&send["released_by"])
                )
            } else {
                String::new()
            }
        );
    }
    let overrides = gate["overrides"].as_array().cloned().unwrap_or_default();
    if !overrides.is_empty() {
        out.push_str("  overrides:\n");
        for o in &overrides {
            let _ = writeln!(
                out,
                "    {} by {} ({}): {}; released {}",
                text(&o["at"]),
                text(&o["by"]),
                o["channel"].as_str().unwrap_or("every channel"),
                text(&o["reason"]),
                text(&o["released"])
            );
        }
    }
}
