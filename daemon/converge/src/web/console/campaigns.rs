//! Campaigns: each campaign with its channels side by side (stage and
//! approval, the values the channels must agree on, launch times, pauses),
//! its convergence gate (the terms its gate rule recorded in
//! `fields.gate`, the reasons of the last hold, the sends still held).
//! A value that differs from the campaign's own brief (the hub of a
//! hub-and-spoke workflow: the campaign's fields), or where the brief says
//! nothing from what most channels have, is marked, as the gate rule's
//! `consistency(.., #{ hub: true })` measures it, so the part that fails
//! is visible at a glance. A page at a time, in key order.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use converge_model::{EntityKey, EntityState};
use converge_store::{GateRecord, HeldSendRecord, HeldSendStatus, TimerRecord};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{Page, Section, answer, encode, plain, read, record_link, time_of, when, when_ms};
use crate::web::AppState;

const PER_PAGE: usize = 25;

/// The channel fields shown, in order, and whether the channels must agree
/// on them (the consistency parts a gate checks).
const ROWS: [(&str, &str, bool); 5] = [
    ("offer_code", "Offer code", true),
    ("landing_url", "Landing URL", true),
    ("key_message", "Message", true),
    ("segments", "Audience", true),
    ("launch_at", "Launch", false),
];

#[derive(Deserialize)]
pub struct PageQuery {
    /// The last campaign of the previous page.
    #[serde(default)]
    after: String,
}

struct Campaign {
    entity: EntityState,
    gate: GateRecord,
    /// Its soonest pending timer: the gate's deadline, with the bundled rule.
    next: Option<TimerRecord>,
}

/// `GET /ui/campaigns`.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let now = state.clock.now();
    let after = EntityKey::parse(&query.after)
        .filter(|k| k.kind == "campaign")
        .unwrap_or(EntityKey {
            kind: "campaign".into(),
            id: String::new(),
        });
    let version = match super::version_or_unchanged(&state, &headers, now).await {
        Ok(version) => version,
        Err(unchanged) => return unchanged,
    };
    let loaded = read(&state, move |store| {
        let entities = store.entities_after(Some(&after), PER_PAGE + 1)?;
        let mut campaigns = Vec::new();
        for entity in entities.into_iter().take_while(|e| e.kind == "campaign") {
            let gate = store.gate(&entity.key(), 20)?;
            let next = store.soonest_pending_timer(&entity.key())?;
            campaigns.push(Campaign { entity, gate, next });
        }
        Ok(campaigns)
    })
    .await;
    let mut campaigns = match loaded {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let more = campaigns.len() > PER_PAGE;
    campaigns.truncate(PER_PAGE);
    for campaign in &mut campaigns {
        state.console.redaction.entity(&mut campaign.entity);
    }
    let viewer = state.console.sessions.viewer(&headers);
    let url = if query.after.is_empty() {
        "/ui/campaigns".to_string()
    } else {
        format!("/ui/campaigns?after={}", encode(&query.after))
    };
    answer(|| {
        Page {
            title: "Campaigns",
            section: Section::Campaigns,
            viewer: viewer.as_ref(),
            url: &url,
            version: &version,
            now,
        }
        .render(html! {
            @if campaigns.is_empty() {
                p.empty { "No campaign yet: events about " code { "campaign/<id>" } " create them." }
            }
            @for campaign in &campaigns { (card(campaign, now)) }
            nav.pages {
                @if !query.after.is_empty() { a href="/ui/campaigns" { "First page" } }
                @if more {
                    @if let Some(last) = campaigns.last() {
                        a href={"/ui/campaigns?after=" (encode(&last.entity.key_text()))} { "Next page" }
                    }
                }
            }
        })
    })
}

fn card(campaign: &Campaign, now: DateTime<Utc>) -> Markup {
    let entity = &campaign.entity;
    let key = entity.key_text();
    let held: Vec<&HeldSendRecord> = campaign
        .gate
        .held_sends
        .iter()
        .filter(|h| h.status == HeldSendStatus::Held)
        .collect();
    let last_hold = campaign.gate.held_sends.first();
    let gate = entity.fields.get("gate");
    let term = |name: &str| gate.and_then(|g| g.get(name)).and_then(Value::as_bool);
    let score = gate
        .and_then(|g| g.get("consistency"))
        .and_then(Value::as_f64);
    let channels: Vec<&String> = entity.channels.keys().collect();
    let brief: BTreeMap<&str, &Value> = ROWS
        .iter()
        .filter_map(|(field, _, _)| brief(entity, field).map(|v| (*field, v)))
        .collect();
    let majority: BTreeMap<&str, String> = ROWS
        .iter()
        .filter(|(field, _, agree)| *agree && !brief.contains_key(field))
        .filter_map(|(field, _, _)| majority(entity, field).map(|v| (*field, v)))
        .collect();
    let earliest = channels.iter().filter_map(|c| launch(entity, c)).min();
    html! {
        section.campaign id=(key) {
            header {
                h2 { (record_link(&key)) }
                span { "owner " b { (entity.owner.as_deref().unwrap_or("nobody")) } }
                span { "stage " b { (entity.stage.as_deref().unwrap_or("—")) } }
                @if held.is_empty() {
                    span.tag.clear { "gate clear" }
                } @else {
                    span.tag.held { "gate holding " (held.len()) " send(s)" }
                }
                @if let Some(next) = &campaign.next {
                    span.next { "next " b { (next.event_type) } " (" (next.rule) ") " (when_ms(next.due_at_ms, now)) }
                }
            }
            @if gate.is_some() {
                p.terms {
                    (check("approved", term("approved")))
                    @match term("none_paused") {
                        Some(true) => { span.yes { "✓ none paused" } " " },
                        Some(false) => { span.no { "✗ a channel is paused" } " " },
                        None => {},
                    }
                    (check("consistent", term("consistent")))
                    @if let Some(score) = score { b { (format!("{:.0}%", score * 100.0)) } " consistency " }
                    (check("launches within the window", term("within_window")))
                    @if let Some(at) = gate.and_then(|g| g.get("checked_at")).and_then(Value::as_str).and_then(|t| t.parse::<DateTime<Utc>>().ok()) {
                        small { " checked " (when(at, now)) }
                    }
                }
            }
            @if let Some(hold) = last_hold {
                div.reasons {
                    @match hold.status {
                        HeldSendStatus::Held => "Held: ",
                        HeldSendStatus::Released => "Last hold (released): ",
                    }
                    ul { @for reason in hold.reason.split("; ") { li { (reason) } } }
                }
            }
            @if channels.is_empty() {
                p.empty { "No channel has reported yet." }
            } @else {
                table.channels {
                    thead {
                        tr {
                            th {}
                            @if !brief.is_empty() { th.brief title="the campaign's own values: every channel is held to them" { "Brief" } }
                            @for channel in &channels { th { (channel) } }
                        }
                    }
                    tbody {
                        tr {
                            th { "Stage" }
                            @if !brief.is_empty() { td.brief {} }
                            @for channel in &channels {
                                @let stage = entity.channels[*channel].stage.as_deref().unwrap_or("—");
                                td class=(if stage == "approved" { "ok" } else { "" }) { (stage) }
                            }
                        }
                        tr {
                            th { "Approval" }
                            @if !brief.is_empty() { td.brief {} }
                            @for channel in &channels {
                                td { (entity.channels[*channel].fields.get("approval").map(plain).unwrap_or_default()) }
                            }
                        }
                        @for (field, label, agree) in ROWS {
                            tr {
                                th { (label) }
                                @if !brief.is_empty() {
                                    td.brief {
                                        @match brief.get(field) {
                                            Some(value) if field == "launch_at" => {
                                                @match value.as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok()) {
                                                    Some(at) => (at.format("%a %d %b %H:%M")),
                                                    None => (plain(value)),
                                                }
                                            }
                                            Some(value) => (plain(value)),
                                            None => "—",
                                        }
                                    }
                                }
                                @for channel in &channels {
                                    @let value = entity.channels[*channel].fields.get(field);
                                    @let text = value.map(plain).unwrap_or_default();
                                    @let off = match (agree, value, brief.get(field)) {
                                        (false, _, _) | (_, None, _) => None,
                                        (true, Some(value), Some(hub)) => off_brief(field, value, hub).then_some("differs from the brief"),
                                        (true, Some(_), None) => majority.get(field).is_some_and(|m| *m != text).then_some("differs from the other channels"),
                                    };
                                    td class=(if off.is_some() { "off" } else { "" }) title=[off] {
                                        @if field == "launch_at" {
                                            @if let (Some(at), Some(first)) = (launch(entity, channel), earliest) {
                                                (at.format("%a %d %b %H:%M"))
                                                @if at > first { small { " +" (super::span((at - first).num_seconds())) } }
                                            } @else { (text) }
                                        } @else { (text) }
                                    }
                                }
                            }
                        }
                        tr {
                            th { "Paused" }
                            @if !brief.is_empty() { td.brief {} }
                            @for channel in &channels {
                                @let paused = entity.channels[*channel].fields.get("paused") == Some(&Value::Bool(true));
                                td class=(if paused { "off" } else { "" }) { @if paused { "paused" } @else { "—" } }
                            }
                        }
                        tr {
                            th { "Held sends" }
                            @if !brief.is_empty() { td.brief {} }
                            @for channel in &channels {
                                @let mine: Vec<&&HeldSendRecord> = held.iter().filter(|h| &&h.channel == channel).collect();
                                td class=(if mine.is_empty() { "" } else { "off" }) {
                                    @for send in mine {
                                        div { "held " @if let Some(at) = time_of(send.held_at_ms) { (when(at, now)) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn check(label: &str, value: Option<bool>) -> Markup {
    html! {
        @match value {
            Some(true) => span.yes { "✓ " (label) },
            Some(false) => span.no { "✗ not " (label) },
            None => {},
        }
        " "
    }
}

/// The campaign's own value of `field`, its brief, when it has one (not
/// null or blank, as the rules' measures read it).
fn brief<'a>(entity: &'a EntityState, field: &str) -> Option<&'a Value> {
    entity.fields.get(field).filter(|v| match v {
        Value::Null => false,
        Value::String(text) => !text.trim().is_empty(),
        _ => true,
    })
}

/// Whether a channel's value is off the brief: segments outside the
/// brief's (a channel may target part of them), any other value unequal.
fn off_brief(field: &str, value: &Value, brief: &Value) -> bool {
    match (field, value, brief) {
        ("segments", Value::Array(segments), Value::Array(allowed)) => {
            segments.iter().any(|s| !allowed.contains(s))
        }
        _ => value != brief,
    }
}

/// The value most channels that have `field` give it (ties: the smallest),
/// when at least two channels have it.
fn majority(entity: &EntityState, field: &str) -> Option<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for channel in entity.channels.values() {
        if let Some(value) = channel.fields.get(field) {
            *counts.entry(plain(value)).or_default() += 1;
        }
    }
    if counts.values().sum::<usize>() < 2 {
        return None;
    }
    let top = counts.values().copied().max()?;
    counts.into_iter().find(|(_, n)| *n == top).map(|(v, _)| v)
}

fn launch(entity: &EntityState, channel: &str) -> Option<DateTime<Utc>> {
    entity
        .channels
        .get(channel)?
        .fields
        .get("launch_at")?
        .as_str()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::off_brief;

    #[test]
    fn a_channel_is_off_the_brief_where_the_rules_hub_measure_says_so() {
        assert!(!off_brief("offer_code", &json!("FALL25"), &json!("FALL25")));
        assert!(off_brief("offer_code", &json!("FALL20"), &json!("FALL25")));
        assert!(off_brief("offer_code", &json!(25), &json!("25")));
        // Segments: a part of the brief's taxonomy is within it.
        let taxonomy = json!(["loyal", "new"]);
        assert!(!off_brief("segments", &json!(["loyal"]), &taxonomy));
        assert!(!off_brief("segments", &json!([]), &taxonomy));
        assert!(off_brief("segments", &json!(["loyal", "vip"]), &taxonomy));
    }
}
