//! A record's page: one campaign's or task's state, its gate (held sends,
//! overrides, and the override form), its timers, and its trail: every
//! event about it in order, with its data, each rule's decisions (condition
//! terms, the state the rule saw, what it printed), the actions with every
//! attempt and outcome, and what became of the sends it asked for. The same
//! facts as `converge explain --entity`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use converge_model::{EntityKey, EntityState};
use converge_store::{
    ActionRecord, ActionStatus, DecisionRecord, EventTrail, GateRecord, HeldSendStatus, TimerStatus,
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::session::Viewer;
use super::{
    Page, Section, answer, encode, error_page, error_page_finding, json_block, plain, read,
    record_link, when, when_ms,
};
use crate::explain::Facts;
use crate::web::AppState;

/// Events per page of the trail.
const TRAIL_PAGE: usize = 50;

#[derive(Deserialize)]
pub struct RecordQuery {
    /// The trail starts after this journal `seq`.
    #[serde(default)]
    after: i64,
    notice: Option<String>,
}

#[derive(Deserialize)]
pub struct FindQuery {
    #[serde(default)]
    key: String,
}

/// `GET /ui/records?key=campaign/c-1`: the search box in the header.
pub async fn find(Query(query): Query<FindQuery>) -> Response {
    match EntityKey::parse(query.key.trim()) {
        Some(key) => Redirect::to(&format!(
            "/ui/records/{}/{}",
            encode(&key.kind),
            encode(&key.id)
        ))
        .into_response(),
        None => error_page_finding(
            StatusCode::BAD_REQUEST,
            "No such record",
            &format!(
                "`{}` is not a record: give kind/id, e.g. campaign/c-42 or task/t-7",
                query.key.trim()
            ),
            query.key.trim(),
        ),
    }
}

struct Loaded {
    entity: Option<EntityState>,
    gate: GateRecord,
    timers: crate::explain::ShownTimers,
    trail: Vec<(EventTrail, Facts)>,
}

/// `GET /ui/records/{kind}/{id}`.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
    Query(query): Query<RecordQuery>,
) -> Response {
    let Some(key) = EntityKey::parse(&format!("{kind}/{id}")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "No such record",
            "A record is <kind>/<id>, with a lowercase kind.",
        );
    };
    let now = state.clock.now();
    let after = query.after.max(0);
    let version = match super::version_or_unchanged(&state, &headers, now).await {
        Ok(version) => version,
        Err(unchanged) => return unchanged,
    };
    let lookup = key.clone();
    let redaction = state.console.redaction.clone();
    let loaded = read(&state, move |store| {
        let subject = lookup.to_string();
        let trail = store
            .subject_trails(&subject, after, TRAIL_PAGE + 1)?
            .into_iter()
            .map(|mut trail| {
                let facts = Facts::of(store, &mut trail, &redaction);
                (trail, facts)
            })
            .collect();
        Ok(Loaded {
            entity: store.entity(&lookup)?,
            gate: store.gate(&lookup, 200)?,
            timers: crate::explain::shown_timers(store, &lookup)?,
            trail,
        })
    })
    .await;
    let mut loaded = match loaded {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    if let Some(entity) = &mut loaded.entity {
        state.console.redaction.entity(entity);
    }
    let subject = key.to_string();
    if loaded.entity.is_none() && loaded.trail.is_empty() && after == 0 {
        return error_page_finding(
            StatusCode::NOT_FOUND,
            "No such record",
            &format!("No event about {subject} was journaled."),
            &subject,
        );
    }
    let more = loaded.trail.len() > TRAIL_PAGE;
    loaded.trail.truncate(TRAIL_PAGE);
    let viewer = state.console.sessions.viewer(&headers);
    let path = format!("/ui/records/{}/{}", encode(&key.kind), encode(&key.id));
    let url = if after > 0 {
        format!("{path}?after={after}")
    } else {
        path.clone()
    };
    answer(|| {
        let title = subject.clone();
        Page {
            title: &title,
            section: Section::Records,
            viewer: viewer.as_ref(),
            url: &url,
            version: &version,
            now,
        }
        .render(html! {
            (super::notice(query.notice.as_deref()))
            @if let Some(entity) = &loaded.entity { (summary(entity, now)) }
            (gate(&subject, &path, &loaded.gate, viewer.as_ref(), now))
            @if !loaded.timers.timers.is_empty() { (timers(&subject, &path, &loaded.timers, viewer.as_ref(), now)) }
            section #trail {
                h2 { "Trail" }
                @if after > 0 { p { a href=(path) { "From the first event" } } }
                @if loaded.trail.is_empty() { p.empty { "No event after this point." } }
                @for (trail, facts) in &loaded.trail {
                    (event(trail, facts, &url, viewer.as_ref(), now))
                }
                @if more {
                    @if let Some((last, _)) = loaded.trail.last() {
                        p { a href={(path) "?after=" (last.seq)} { "Later events" } }
                    }
                }
            }
        })
    })
}

fn summary(entity: &EntityState, now: DateTime<Utc>) -> Markup {
    html! {
        section.summary {
            dl {
                dt { "Stage" } dd { (entity.stage.as_deref().unwrap_or("—"))
                    @if let Some(since) = entity.stage_since { small { " since " (when(since, now)) } } }
                dt { "Owner" } dd { (entity.owner.as_deref().unwrap_or("nobody")) }
                @if let Some(campaign) = converge_engine::flow::campaign_of(entity).filter(|c| *c != entity.key_text()) {
                    dt { "Campaign" } dd { (record_link(&campaign)) }
                }
                dt { "Events" } dd { (entity.events) @if let Some(last) = &entity.last_event_type { small { " last: " (last) } } }
                dt { "Updated" } dd { (when(entity.updated_at, now)) }
                dt { "Created" } dd { (when(entity.created_at, now)) }
            }
            @if !entity.fields.is_empty() {
                details open {
                    summary { "Fields" }
                    table.fields {
                        @for (name, value) in &entity.fields {
                            tr { th { (name) } td { @if value.is_object() || value.is_array() { (json_block(value)) } @else { (plain(value)) } } }
                        }
                    }
                }
            }
            @if !entity.channels.is_empty() {
                details open {
                    summary { "Channels" }
                    table.fields {
                        tr { th { "Channel" } th { "Stage" } th { "Owner" } th { "Fields" } }
                        @for (name, channel) in &entity.channels {
                            tr {
                                td { (name) }
                                td { (channel.stage.as_deref().unwrap_or("—")) }
                                td { (channel.owner.as_deref().unwrap_or("—")) }
                                td { @for (field, value) in &channel.fields { span.pair { (field) "=" (plain(value)) } " " } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn gate(
    subject: &str,
    path: &str,
    gate: &GateRecord,
    viewer: Option<&Viewer>,
    now: DateTime<Utc>,
) -> Markup {
    let held: Vec<_> = gate
        .held_sends
        .iter()
        .filter(|h| h.status == HeldSendStatus::Held)
        .collect();
    let mut channels: Vec<&str> = held.iter().map(|h| h.channel.as_str()).collect();
    channels.dedup();
    html! {
        @if !gate.held_sends.is_empty() || !gate.overrides.is_empty() {
            section #gate {
                h2 { "Gate" @if held.is_empty() { span.tag.clear { "clear" } } @else { span.tag.held { (held.len()) " held" } } }
                table.rows {
                    thead { tr { th { "Channel" } th { "Held by" } th { "Reasons" } th { "Held" } th { "Outcome" } } }
                    tbody {
                        @for send in &gate.held_sends {
                            tr {
                                td { (send.channel) }
                                td { (send.rule) br; small { "request " (send.event_id) } }
                                td { ul { @for reason in send.reason.split("; ") { li { (reason) } } } }
                                td { (when_ms(send.held_at_ms, now)) }
                                td {
                                    @match (&send.released_by, send.released_at_ms) {
                                        (Some(by), Some(at)) => { "released by " (by) " " (when_ms(at, now)) }
                                        _ => span.tag.held { "held" },
                                    }
                                }
                            }
                        }
                    }
                }
                @if !gate.overrides.is_empty() {
                    h3 { "Overrides" }
                    ul.overrides {
                        @for o in &gate.overrides {
                            li { b { (o.by) } " overrode " (o.channel.as_deref().unwrap_or("every channel")) " " (when_ms(o.at_ms, now))
                                ", releasing " (o.released) ": " q { (o.reason) } }
                        }
                    }
                }
                @if !held.is_empty() {
                    @match viewer {
                        Some(viewer) if viewer.can_act => {
                            form.act method="post" action={(path) "/override"} {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                label { "Channel "
                                    select name="channel" {
                                        option value="" { "every held channel" }
                                        @for channel in &channels { option value=(channel) { (channel) } }
                                    }
                                }
                                label { "Reason " input name="reason" required maxlength="2000" size="40" placeholder="why the send may go out now"; }
                                button type="submit" { "Override the gate" }
                                small { " as " (viewer.who) ", journaled for " (subject) }
                            }
                        }
                        _ => p { a href={"/ui/login?next=" (encode(path))} { "Sign in with the admin token" } " to override this gate." },
                    }
                }
            }
        }
    }
}

/// The timers in `explain`'s reading order: waiting ones first, the next
/// to fire at the top; for a person who may act, a form per rule with
/// timers waiting here that cancels them (a task resolved outside the tools
/// whose ladder should stop).
fn timers(
    subject: &str,
    path: &str,
    shown: &crate::explain::ShownTimers,
    viewer: Option<&Viewer>,
    now: DateTime<Utc>,
) -> Markup {
    let mut waiting: Vec<(&str, usize)> = Vec::new();
    for timer in shown
        .timers
        .iter()
        .filter(|t| t.status == TimerStatus::Pending)
    {
        match waiting.iter_mut().find(|(rule, _)| *rule == timer.rule) {
            Some((_, n)) => *n += 1,
            None => waiting.push((&timer.rule, 1)),
        }
    }
    let timers = crate::explain::reading_order(&shown.timers);
    // With more waiting than listed, a rule's count is a lower bound.
    let more = if shown.more_waiting { "+" } else { "" };
    html! {
        section #timers {
            h2 { "Timers" }
            table.rows {
                thead { tr { th { "Event" } th { "Kind" } th { "Rule" } th { "Due" } th { "Status" } } }
                tbody {
                    @for timer in timers {
                        tr class=(timer.status.name()) {
                            td { (timer.event_type) }
                            td { (timer.kind.name()) @if let Some(t) = &timer.expect_type { small { " until " (t) } } }
                            td { (timer.rule) }
                            td { (when_ms(timer.due_at_ms, now)) }
                            td {
                                (timer.status.name()) @if let Some(at) = timer.closed_at_ms { small { " " (when_ms(at, now)) } }
                                @if let Some(by) = &timer.cancelled_by {
                                    br; small { "by " (by) @if let Some(reason) = &timer.cancel_reason { ": " (reason) } }
                                } @else if let Some(reason) = &timer.cancel_reason {
                                    br; small { (reason) }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(viewer) = viewer.filter(|v| v.can_act) {
                @for (rule, n) in &waiting {
                    form.act.cancel-timers method="post" action="/ui/timers/cancel" {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        input type="hidden" name="rule" value=(rule);
                        input type="hidden" name="entity" value=(subject);
                        input type="hidden" name="back" value=(path);
                        span { b { (rule) } ": " (n) (more) " timer(s) waiting here" }
                        input name="reason" required maxlength="2000" placeholder="why (kept with each)" aria-label={ "Reason to cancel the timers of " (rule) };
                        button type="submit" { "Cancel them" }
                    }
                }
            }
        }
    }
}

fn event(
    trail: &EventTrail,
    facts: &Facts,
    back: &str,
    viewer: Option<&Viewer>,
    now: DateTime<Utc>,
) -> Markup {
    html! {
        article.event id={"seq-" (trail.seq)} {
            header {
                b { (trail.ty) }
                " " code { (trail.id) }
                small {
                    " from " (trail.source)
                    @if let Some(hook) = &trail.hook { " on hook " (hook) }
                    " · seq " (trail.seq) " · received " (when_ms(trail.received_at_ms, now))
                }
                @if trail.processed_at_ms.is_none() { span.tag.held { "waiting for the rules" } }
            }
            @if let Some(data) = &facts.data {
                @if !data.is_null() { details { summary { "Data" } (json_block(data)) } }
            }
            @if !trail.decisions.is_empty() {
                ol.decisions {
                    @for decision in &trail.decisions { (decision_item(decision, back, viewer, now)) }
                }
            }
            @for note in &trail.rule_notes {
                p.note { "rule " (note.rule) " printed: " code { (note.message) } }
            }
            @for failure in &trail.rule_failures {
                p.error { "rule " (failure.rule) " failed: " (failure.message) }
            }
            @for send in &facts.sends {
                p.send {
                    (send.channel) " send held by " (send.rule) " " (when_ms(send.held_at_ms, now))
                    @match (&send.released_by, send.released_at_ms) {
                        (Some(by), Some(at)) => { "; released by " (by) " " (when_ms(at, now)) }
                        _ => "; still held",
                    }
                }
            }
        }
    }
}

fn decision_item(
    record: &DecisionRecord,
    back: &str,
    viewer: Option<&Viewer>,
    now: DateTime<Utc>,
) -> Markup {
    let decision = &record.decision;
    let mut args = serde_json::to_value(&decision.kind).unwrap_or(Value::Null);
    if let Some(map) = args.as_object_mut() {
        map.remove("kind");
    }
    html! {
        li.decision {
            b { (decision.kind.name()) }
            @if record.shadow { " " span.tag.shadow { "shadow" } }
            @if let Some(map) = args.as_object() {
                // A null here says something (`set_field(f, ())` removes f),
                // so it reads as `explain` prints it.
                @for (name, value) in map {
                    " " span.pair { (name) ": " @if value.is_null() { "null" } @else { (plain(value)) } }
                }
            }
            div.by {
                "by rule " b { (decision.rule) }
                @if let Some(trace) = &decision.trace {
                    " at " code { (trace.at.to_string()) }
                    @if let Some(inputs) = &trace.inputs {
                        small { " · saw stage " (inputs.stage.as_deref().unwrap_or("none")) ", owner "
                            (inputs.owner.as_deref().unwrap_or("nobody")) ", " (inputs.events) " events" }
                    }
                }
            }
            @if let Some(trace) = &decision.trace {
                @if !trace.terms.is_empty() {
                    ul.terms {
                        @for (name, value) in &trace.terms {
                            @match value {
                                Value::Bool(true) => li.yes { "✓ " (name) },
                                Value::Bool(false) => li.no { "✗ " (name) },
                                other => li { (name) ": " (plain(other)) },
                            }
                        }
                    }
                }
            }
            @for action in &record.actions { (action_item(action, back, viewer, now)) }
        }
    }
}

fn action_item(
    action: &ActionRecord,
    back: &str,
    viewer: Option<&Viewer>,
    now: DateTime<Utc>,
) -> Markup {
    html! {
        div.action id={"action-" (action.id)} {
            "action " (action.id) " → " (action.route) " (" (action.plugin) "): "
            span class={"tag " (action.status.name())} { (action.status.name()) }
            " after " (action.attempts) " attempt(s)"
            @if let Some(at) = action.finished_at_ms { " " (when_ms(at, now)) }
            @if let Some(at) = action.next_attempt_at_ms.filter(|_| action.status == ActionStatus::Pending) { " · next attempt " (when_ms(at, now)) }
            // A done action's detail is its plugin's summary; any other's
            // is the last error.
            @if let Some(detail) = &action.detail { div class={"detail " (action.status.name())} { (detail) } }
            @if !action.history.is_empty() {
                ul.history {
                    @for entry in &action.history {
                        li {
                            (when_ms(entry.at_ms, now)) " " (entry.kind.name().replace('_', " ")) " (attempt " (entry.attempts) ")"
                            @if let Some(by) = &entry.by { " by " b { (by) } }
                            @if let Some(reason) = &entry.reason { ": " q { (reason) } }
                            @if let Some(detail) = &entry.detail { ": " (detail) }
                        }
                    }
                }
            }
            @if action.status == ActionStatus::DeadLetter {
                @match viewer {
                    Some(viewer) if viewer.can_act => {
                        @for (op, label) in [("retry", "Retry"), ("drop", "Drop")] {
                            form.act method="post" action={"/ui/dead-letters/" (action.id) "/" (op)} {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                input type="hidden" name="back" value=(back);
                                input name="reason" required maxlength="2000" placeholder={"why " (op)} aria-label={"Reason to " (op)};
                                button type="submit" { (label) }
                            }
                        }
                    }
                    _ => div { a href={"/ui/login?next=" (encode(back))} { "Sign in with the admin token" } " to retry or drop it." },
                }
            }
        }
    }
}
