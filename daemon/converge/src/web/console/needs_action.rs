//! Needs action, the console's home page: every record waiting for a
//! person, oldest first. Open escalations and blocked work (from the
//! store's partial indexes), held sends with every holding reason, items
//! waiting with a rule's timer to fire (a stalled handoff's next rung, a
//! campaign's launch window: the item's soonest pending timer), actions
//! retrying after a failure and dead letters with their last error, and
//! exceptions (rule failures, bad rows of dropped files): at most
//! [`PER_KIND`] of each, and a note naming the kinds the store has more of.
//! The filters live in the URL.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use converge_engine::flow::campaign_of;
use converge_model::text::cut;
use converge_model::{EntityKey, EntityState};
use converge_store::{ActionDetail, Backend, OpenSpan, StoreError, TimerRecord};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Viewer;
use super::{Page, Section, answer, read, record_href, record_link, time_of, when};
use crate::web::AppState;

/// How many of each kind the page reads; the page says when there are more.
const PER_KIND: usize = 500;
/// How many pending timers, soonest first, are read at a time while
/// looking for the items waiting on one, and at most in all: a rule that
/// piles up timers on a few items (a reminder scheduled on every update)
/// does not make the page read the whole backlog.
const TIMERS_PAGE: usize = 2000;
const TIMERS_READ_AT_MOST: usize = 50_000;
/// How many records with an open escalation (or an open block) are read at
/// a time, and at most in all, to list the oldest [`PER_KIND`] of their
/// spans: the store finds them by name, and the oldest are the ones a
/// person should see first.
const OPEN_PAGE: usize = 1000;
const OPEN_READ_AT_MOST: usize = 20_000;
/// Which open escalations and blocks are listed when there are more.
const OLDEST_OPEN: &str = "the oldest (of at most the first 20,000 records by name)";
/// How many of the newest error reports of each drop folder are shown.
const DROP_REPORTS: usize = 20;

/// The kinds of rows, as the `kind` filter names them.
pub const KINDS: [(&str, &str); 7] = [
    ("escalation", "Escalations"),
    ("held", "Held sends"),
    ("waiting", "Waiting"),
    ("blocked", "Blocked"),
    ("retrying", "Retrying"),
    ("dead_letter", "Dead letters"),
    ("exception", "Exceptions"),
];

/// Which rows of each kind the page lists when the store holds more than
/// [`PER_KIND`] (held sends are all listed).
const LISTED_FIRST: [(&str, &str); 6] = [
    ("escalation", OLDEST_OPEN),
    ("blocked", OLDEST_OPEN),
    ("waiting", "the items whose timers fire soonest"),
    ("retrying", "the actions to be tried next"),
    ("dead_letter", "the oldest"),
    ("exception", "the newest"),
];

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    campaign: String,
    /// At least this old: "24h", "2d".
    #[serde(default)]
    age: String,
    /// Failing actions with this [`Row::cause`].
    #[serde(default)]
    cause: String,
    #[serde(default)]
    notice: Option<String>,
}

impl Filters {
    fn query(&self) -> String {
        super::query_string(&[
            ("kind", &self.kind),
            ("owner", &self.owner),
            ("campaign", &self.campaign),
            ("age", &self.age),
            ("cause", &self.cause),
        ])
    }
}

/// One thing waiting for a person.
#[derive(Debug, Clone)]
pub struct Row {
    pub kind: &'static str,
    /// The record it is about (`campaign/c-1`), if any.
    pub record: Option<String>,
    pub owner: Option<String>,
    pub campaign: Option<String>,
    /// What is wrong, one line each.
    pub what: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    /// What happens next, and when (a timer's rung).
    pub next: Option<(String, DateTime<Utc>)>,
    /// The action it is about (a dead letter's, for its retry and drop
    /// forms, or one retrying), linked on its record's page.
    pub action: Option<i64>,
    /// Why an action fails, the same for every action failing the same
    /// way: its route, its plugin and its last error.
    pub cause: Option<String>,
}

/// `GET /ui`.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let now = state.clock.now();
    let drops = state.console.sources.clone();
    let max_attempts = state.console.max_attempts;
    let version = match super::version_or_unchanged(&state, &headers, now).await {
        Ok(version) => version,
        Err(unchanged) => return unchanged,
    };
    let loaded = read(&state, move |store| {
        let mut listed = rows(store, max_attempts)?;
        listed
            .rows
            .extend(super::health::drop_reports(&drops, DROP_REPORTS));
        Ok(listed)
    })
    .await;
    let Listed { mut rows, partial } = match loaded {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let viewer = state.console.sessions.viewer(&headers);
    let url = format!("/ui{}", filters.query());
    answer(|| {
        let min_age = humantime::parse_duration(filters.age.trim()).ok();
        let age_error = (!filters.age.trim().is_empty() && min_age.is_none())
            .then(|| format!("`{}` is not an age like 24h or 2d", filters.age.trim()));
        let totals = counts(&rows);
        // Listed only on the unfiltered view, where the link to each leads.
        let causes = if filters.cause.trim().is_empty() {
            causes(&rows, now)
        } else {
            Vec::new()
        };
        rows.retain(|row| keep(row, &filters, min_age, now));
        rows.sort_by_key(|row| row.since.unwrap_or(now));
        Page {
            title: "Needs action",
            section: Section::NeedsAction,
            viewer: viewer.as_ref(),
            url: &url,
            version: &version,
            now,
        }
        .render(html! {
            (super::notice(filters.notice.as_deref()))
            (filter_form(&filters, &totals, &partial, age_error.as_deref()))
            (partial_notice(&partial))
            @if filters.cause.trim().is_empty() {
                (causes_table(&causes, now))
            } @else {
                p.cause-shown { "Actions failing with " q { (filters.cause.trim()) } ". " a href="/ui" { "Show everything" } }
            }
            (retry_shown(&rows, viewer.as_ref(), &url))
            @if rows.is_empty() {
                p.empty { "Nothing needs action" @if !filters.query().is_empty() { " with these filters" } "." }
            } @else {
                table.rows #needs-action {
                    thead { tr { th { "Kind" } th { "Record" } th { "Owner" } th { "What" } th { "Since" } th { "Next" } } }
                    tbody {
                        @for row in &rows {
                            tr data-kind=(row.kind) {
                                td { span class={"tag " (row.kind)} { (label(row.kind)) } }
                                td {
                                    @match &row.record { Some(record) => (record_link(record)), None => "—" }
                                    @if let (Some(action), Some(record)) = (row.action, &row.record) {
                                        " " a href={(record_href(record)) "#action-" (action)} { small { "action " (action) } }
                                    }
                                    @if let (Some(campaign), Some(record)) = (&row.campaign, &row.record) {
                                        @if campaign != record { br; small { (record_link(campaign)) } }
                                    }
                                }
                                td { (row.owner.as_deref().unwrap_or("—")) }
                                td.what { @for line in &row.what { div { (line) } } }
                                td.since { @match row.since { Some(at) => (when(at, now)), None => "—" } }
                                td.next {
                                    @if let Some((what, at)) = &row.next { div { (what) } small { (when(*at, now)) } }
                                }
                            }
                        }
                    }
                }
            }
        })
    })
}

/// For a person who may act, when the page shows several dead letters:
/// one form that retries them all (after a fix), each journaled with who
/// and why.
fn retry_shown(rows: &[Row], viewer: Option<&Viewer>, back: &str) -> Markup {
    let ids: Vec<String> = rows
        .iter()
        .filter(|row| row.kind == "dead_letter")
        .filter_map(|row| row.action)
        .map(|id| id.to_string())
        .collect();
    match viewer {
        Some(viewer) if viewer.can_act && ids.len() > 1 => html! {
            form.act #retry-shown method="post" action="/ui/dead-letters/retry" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="back" value=(back);
                input type="hidden" name="ids" value=(ids.join(","));
                span { "The " (ids.len()) " dead letters shown:" }
                input name="reason" required maxlength="2000" placeholder="why retry them (kept with each)" aria-label="Reason to retry them";
                button type="submit" { "Retry all " (ids.len()) }
            }
        },
        _ => html! {},
    }
}

/// How much of an error a cause keeps: enough to tell causes apart, and
/// short enough for the link that shows its actions.
const CAUSE_CHARS: usize = 300;

/// The failing actions that share a cause: how many are dead letters, how
/// many are retrying, and since when the oldest fails.
struct Cause {
    text: String,
    dead: usize,
    retrying: usize,
    since: DateTime<Utc>,
}

/// The causes that two or more failing actions share, the most common
/// first: one revoked token turns every escalation into a dead letter, and
/// the page then says so once, above the rows.
fn causes(rows: &[Row], now: DateTime<Utc>) -> Vec<Cause> {
    let mut by_text: BTreeMap<&str, Cause> = BTreeMap::new();
    for row in rows {
        let Some(text) = row.cause.as_deref() else {
            continue;
        };
        let cause = by_text.entry(text).or_insert_with(|| Cause {
            text: text.to_string(),
            dead: 0,
            retrying: 0,
            since: now,
        });
        match row.kind {
            "dead_letter" => cause.dead += 1,
            _ => cause.retrying += 1,
        }
        cause.since = cause.since.min(row.since.unwrap_or(now));
    }
    let mut causes: Vec<Cause> = by_text
        .into_values()
        .filter(|c| c.dead + c.retrying > 1)
        .collect();
    causes.sort_by_key(|c| (std::cmp::Reverse(c.dead + c.retrying), c.since));
    causes
}

fn causes_table(causes: &[Cause], now: DateTime<Utc>) -> Markup {
    html! {
        @if !causes.is_empty() {
            table.rows #causes {
                caption { "Actions failing the same way" }
                thead { tr { th { "Cause" } th.n { "Dead letters" } th.n { "Retrying" } th { "Since" } th {} } }
                tbody {
                    @for cause in causes {
                        tr {
                            td.what { (cause.text) }
                            td.n { (cause.dead) }
                            td.n { (cause.retrying) }
                            td.since { (when(cause.since, now)) }
                            td { a href={"/ui" (super::query_string(&[("cause", &cause.text)]))} { "Show them" } }
                        }
                    }
                }
            }
        }
    }
}

fn label(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("Other", |(_, label)| label)
}

fn counts(rows: &[Row]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(row.kind).or_default() += 1;
    }
    counts
}

fn keep(row: &Row, f: &Filters, min_age: Option<std::time::Duration>, now: DateTime<Utc>) -> bool {
    let kind = f.kind.trim();
    let owner = f.owner.trim();
    let campaign = f.campaign.trim();
    let cause = f.cause.trim();
    (kind.is_empty() || row.kind == kind)
        && (cause.is_empty() || row.cause.as_deref() == Some(cause))
        && (owner.is_empty() || row.owner.as_deref() == Some(owner))
        && (campaign.is_empty()
            || row
                .campaign
                .as_deref()
                .is_some_and(|c| c == campaign || c.strip_prefix("campaign/") == Some(campaign)))
        && min_age.is_none_or(|age| {
            row.since
                .is_some_and(|since| (now - since).to_std().unwrap_or_default() >= age)
        })
}

/// Which kinds are listed in part, and which of their rows.
fn partial_notice(partial: &BTreeSet<&'static str>) -> Markup {
    html! {
        @if !partial.is_empty() {
            div.partial role="note" {
                @for (kind, which) in LISTED_FIRST.iter().filter(|(k, _)| partial.contains(k)) {
                    p { "More than " (PER_KIND) " " (label(kind).to_lowercase()) ": listed are " (which) "." }
                }
                p { "The filters look only at what is listed." }
            }
        }
    }
}

fn filter_form(
    f: &Filters,
    totals: &BTreeMap<&'static str, usize>,
    partial: &BTreeSet<&'static str>,
    error: Option<&str>,
) -> Markup {
    html! {
        form.filters method="get" action="/ui" {
            label { "Kind "
                select name="kind" {
                    option value="" selected[f.kind.is_empty()] { "All" }
                    @for (kind, label) in KINDS {
                        option value=(kind) selected[f.kind == kind] {
                            (label) " (" (totals.get(kind).copied().unwrap_or(0))
                            @if partial.contains(kind) { "+" } ")"
                        }
                    }
                }
            }
            label { "Owner " input name="owner" value=(f.owner) placeholder="anyone" size="12"; }
            label { "Campaign " input name="campaign" value=(f.campaign) placeholder="any" size="12"; }
            label { "At least " input name="age" value=(f.age) placeholder="24h" size="5"; " old" }
            button type="submit" { "Filter" }
            @if !f.query().is_empty() { a href="/ui" { "Clear" } }
        }
        @if let Some(error) = error { p.error { (error) } }
    }
}

/// The rows the page lists, and the kinds the store held more of.
pub struct Listed {
    pub rows: Vec<Row>,
    /// Kinds of which only the first [`PER_KIND`] are listed.
    pub partial: BTreeSet<&'static str>,
}

/// The first [`PER_KIND`] of `read` (read one more, to know), noting
/// `kind` in `partial` when there were more.
fn first<T>(mut read: Vec<T>, kind: &'static str, partial: &mut BTreeSet<&'static str>) -> Vec<T> {
    if read.len() > PER_KIND {
        read.truncate(PER_KIND);
        partial.insert(kind);
    }
    read
}

/// The oldest [`PER_KIND`] open spans of `span` (an entity's own and its
/// channels'), read from at most [`OPEN_READ_AT_MOST`] records, noting
/// `kind` in `partial` when there were more.
fn oldest_open(
    store: &dyn Backend,
    span: OpenSpan,
    kind: &'static str,
    since: impl Fn(&converge_model::Flow) -> Option<DateTime<Utc>> + Copy,
    partial: &mut BTreeSet<&'static str>,
) -> Result<Vec<Row>, StoreError> {
    let oldest_first = |rows: &mut Vec<Row>| {
        rows.sort_by(|a, b| (a.since, &a.record).cmp(&(b.since, &b.record)));
        // One more than listed, to know there were more.
        rows.truncate(PER_KIND + 1);
    };
    let mut rows = Vec::new();
    let (mut after, mut read) = (None, 0);
    loop {
        let page = store.entities_with_open(span, after.as_ref(), OPEN_PAGE)?;
        read += page.len();
        for entity in &page {
            rows.extend(open_spans(entity, kind, since));
        }
        if rows.len() > 2 * PER_KIND {
            oldest_first(&mut rows);
        }
        if page.len() < OPEN_PAGE {
            break;
        }
        if read >= OPEN_READ_AT_MOST {
            partial.insert(kind);
            break;
        }
        after = page.last().map(EntityState::key);
    }
    oldest_first(&mut rows);
    Ok(first(rows, kind, partial))
}

/// Every row from the store, unfiltered; an action gets `max_attempts`.
pub fn rows(store: &dyn Backend, max_attempts: u32) -> Result<Listed, StoreError> {
    let mut rows = Vec::new();
    let mut partial = BTreeSet::new();
    rows.extend(oldest_open(
        store,
        OpenSpan::Escalated,
        "escalation",
        |f| f.escalated_since,
        &mut partial,
    )?);
    rows.extend(oldest_open(
        store,
        OpenSpan::Blocked,
        "blocked",
        |f| f.blocked_since,
        &mut partial,
    )?);
    let (waiting, all_found) = waiting(store)?;
    if !all_found {
        partial.insert("waiting");
    }
    let waiting = first(waiting, "waiting", &mut partial);
    rows.extend(held_with_their_timers(held_sends(store)?, waiting));
    for retrying in first(
        store.retrying_actions(PER_KIND + 1)?,
        "retrying",
        &mut partial,
    ) {
        let action = &retrying.detail.action;
        let next = action.next_attempt_at_ms.and_then(time_of).map(|at| {
            let attempt = format!("attempt {} of {max_attempts}", action.attempts + 1);
            (attempt, at)
        });
        rows.push(Row {
            since: retrying.failing_since_ms.and_then(time_of),
            next,
            ..action_row("retrying", &retrying.detail, "failed attempt(s)")
        });
    }
    for letter in first(
        store.dead_letters(0, PER_KIND + 1)?,
        "dead_letter",
        &mut partial,
    ) {
        rows.push(Row {
            since: letter.action.finished_at_ms.and_then(time_of),
            ..action_row("dead_letter", &letter, "attempt(s)")
        });
    }
    let failures = store.recent_rule_failures(PER_KIND + 1)?;
    for failure in first(failures, "exception", &mut partial) {
        rows.push(Row {
            kind: "exception",
            record: failure.subject.clone(),
            owner: None,
            campaign: campaign_of_subject(failure.subject.as_deref()),
            what: vec![
                format!(
                    "rule {} failed on {} ({})",
                    failure.rule, failure.event_type, failure.event_id
                ),
                failure.message.clone(),
            ],
            since: time_of(failure.received_at_ms),
            next: None,
            action: None,
            cause: None,
        });
    }
    with_owners(store, &mut rows)?;
    Ok(Listed { rows, partial })
}

/// The held sends' rows, then the items waiting on a timer. A campaign
/// whose sends are held is a held send, not a waiting item: its timer
/// (the gate's deadline) goes on its held rows instead.
fn held_with_their_timers(mut held: Vec<Row>, waiting: Vec<Row>) -> Vec<Row> {
    let mut rest = Vec::new();
    for row in waiting {
        let mut holding = held
            .iter_mut()
            .filter(|h| h.record == row.record)
            .peekable();
        if holding.peek().is_none() {
            rest.push(row);
            continue;
        }
        for h in holding {
            h.next = row.next.clone();
        }
    }
    held.extend(rest);
    held
}

/// A row about an action (retrying, or a dead letter): which one, from
/// which rule, and its last error; `since` and `next` left for the caller.
fn action_row(kind: &'static str, letter: &ActionDetail, attempts: &str) -> Row {
    let action = &letter.action;
    Row {
        kind,
        record: letter.subject.clone(),
        owner: None,
        campaign: campaign_of_subject(letter.subject.as_deref()),
        what: vec![
            format!(
                "action {} ({} via {}) from rule {}, {} {attempts}",
                action.id, action.route, action.plugin, letter.rule, action.attempts
            ),
            format!(
                "last error: {}",
                action.detail.as_deref().unwrap_or("none recorded")
            ),
        ],
        since: None,
        next: None,
        action: Some(action.id),
        cause: Some(format!(
            "{} via {}: {}",
            action.route,
            action.plugin,
            cut(
                action.detail.as_deref().unwrap_or("no error recorded"),
                CAUSE_CHARS
            )
        )),
    }
}

/// The owner and campaign of the rows that name a record but not them
/// (dead letters, rule failures), from the records' states, in one read.
fn with_owners(store: &dyn Backend, rows: &mut [Row]) -> Result<(), StoreError> {
    let keys: Vec<EntityKey> = rows
        .iter()
        .filter(|r| r.owner.is_none())
        .filter_map(|r| EntityKey::parse(r.record.as_deref()?))
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let states: HashMap<String, EntityState> = store
        .entities(&keys)?
        .into_iter()
        .map(|e| (e.key_text(), e))
        .collect();
    for row in rows.iter_mut().filter(|r| r.owner.is_none()) {
        if let Some(entity) = row.record.as_ref().and_then(|r| states.get(r)) {
            row.owner = entity.owner.clone();
            row.campaign = row.campaign.take().or_else(|| campaign_of(entity));
        }
    }
    Ok(())
}

/// The entity's own open span and each channel's, as rows.
fn open_spans(
    entity: &EntityState,
    kind: &'static str,
    since: impl Fn(&converge_model::Flow) -> Option<DateTime<Utc>>,
) -> Vec<Row> {
    let key = entity.key_text();
    let campaign = campaign_of(entity);
    let stage = entity.stage.as_deref().unwrap_or("no stage");
    let mut rows = Vec::new();
    if let Some(at) = since(&entity.flow) {
        rows.push(Row {
            kind,
            record: Some(key.clone()),
            owner: entity.owner.clone(),
            campaign: campaign.clone(),
            what: vec![format!(
                "{} since {} (stage: {stage})",
                if kind == "blocked" {
                    "blocked"
                } else {
                    "escalated"
                },
                at.format("%a %d %b %H:%M")
            )],
            since: Some(at),
            next: None,
            action: None,
            cause: None,
        });
    }
    for (name, channel) in &entity.channels {
        if let Some(at) = since(&channel.flow) {
            rows.push(Row {
                kind,
                record: Some(key.clone()),
                owner: channel.owner.clone().or_else(|| entity.owner.clone()),
                campaign: campaign.clone(),
                what: vec![format!(
                    "channel {name} {} (stage: {})",
                    if kind == "blocked" {
                        "blocked"
                    } else {
                        "escalated"
                    },
                    channel.stage.as_deref().unwrap_or("no stage")
                )],
                since: Some(at),
                next: None,
                action: None,
                cause: None,
            });
        }
    }
    rows
}

/// One row per campaign and channel still held, with every reason of its
/// holds (a gate rule gives them joined by "; ").
fn held_sends(store: &dyn Backend) -> Result<Vec<Row>, StoreError> {
    let held = store.open_held_sends()?;
    let keys: Vec<EntityKey> = held
        .iter()
        .filter_map(|h| EntityKey::parse(&h.campaign))
        .collect();
    let owners: HashMap<String, Option<String>> = store
        .entities(&keys)?
        .into_iter()
        .map(|e| (e.key_text(), e.owner))
        .collect();
    let mut by_channel: BTreeMap<(String, String), Row> = BTreeMap::new();
    for send in &held {
        let row = by_channel
            .entry((send.campaign.clone(), send.channel.clone()))
            .or_insert_with(|| Row {
                kind: "held",
                record: Some(send.campaign.clone()),
                owner: owners.get(&send.campaign).cloned().flatten(),
                campaign: Some(send.campaign.clone()),
                what: vec![format!("{} send held", send.channel)],
                since: time_of(send.held_at_ms),
                next: None,
                action: None,
                cause: None,
            });
        for reason in send.reason.split("; ") {
            let line = format!("{}: {reason}", send.rule);
            if !row.what.contains(&line) {
                row.what.push(line);
            }
        }
        if let Some(at) = time_of(send.held_at_ms) {
            row.since = Some(row.since.map_or(at, |s| s.min(at)));
        }
    }
    let mut rows: Vec<Row> = by_channel.into_values().collect();
    for row in &mut rows {
        let sends = held
            .iter()
            .filter(|h| {
                Some(&h.campaign) == row.record.as_ref() && row.what[0].starts_with(&h.channel)
            })
            .count();
        if sends > 1 {
            row.what[0] = format!("{} ({sends} requests)", row.what[0]);
        }
    }
    Ok(rows)
}

/// Items with a rule's timer still to fire (a reminder, the next rung of
/// a stalled handoff's escalation ladder, an expected event's deadline such
/// as a campaign's launch window), with that timer and when it fires: the
/// first [`PER_KIND`] and one more, those whose soonest timers fire first,
/// soonest first, and whether the search for them ended (see
/// [`soonest_timers`]). Waiting since the handoff (the owner's change,
/// `flow.handoff_since`), else since the stage began.
fn waiting(store: &dyn Backend) -> Result<(Vec<Row>, bool), StoreError> {
    let (soonest, ended) = soonest_timers(
        converge_store::pending_timers(store, i64::MAX, TIMERS_PAGE),
        PER_KIND + 1,
        TIMERS_READ_AT_MOST,
    )?;
    let keys: Vec<EntityKey> = soonest
        .iter()
        .filter_map(|t| EntityKey::parse(&t.entity))
        .collect();
    let entities: HashMap<String, EntityState> = store
        .entities(&keys)?
        .into_iter()
        .map(|e| (e.key_text(), e))
        .collect();
    let rows = soonest
        .iter()
        .filter_map(|timer| Some(waiting_row(entities.get(&timer.entity)?, timer)))
        .collect();
    Ok((rows, ended))
}

/// Each entity's soonest pending timer, for up to `entities` entities,
/// soonest first, from `backlog` (the pending timers in due order): `true`
/// when that many were found or the backlog ended, `false` when `budget`
/// timers were read first (more entities may wait, on timers later than
/// all those read).
fn soonest_timers(
    backlog: impl Iterator<Item = Result<TimerRecord, StoreError>>,
    entities: usize,
    budget: usize,
) -> Result<(Vec<TimerRecord>, bool), StoreError> {
    let mut seen = std::collections::HashSet::new();
    let mut soonest = Vec::new();
    let mut read = 0;
    for timer in backlog.take(budget) {
        let timer = timer?;
        read += 1;
        if seen.insert(timer.entity.clone()) {
            soonest.push(timer);
            if soonest.len() == entities {
                return Ok((soonest, true));
            }
        }
    }
    Ok((soonest, read < budget))
}

/// An item's row under Waiting: who it waits on, and its soonest timer.
fn waiting_row(entity: &EntityState, timer: &TimerRecord) -> Row {
    let since = entity
        .flow
        .handoff_since
        .or(entity.stage_since)
        .unwrap_or(entity.updated_at);
    let rung = match &timer.expect_type {
        Some(expected) => format!(
            "{} unless {expected} comes ({})",
            timer.event_type, timer.rule
        ),
        None => format!("{} ({})", timer.event_type, timer.rule),
    };
    let owner = entity.owner.as_deref().unwrap_or("nobody");
    Row {
        kind: "waiting",
        record: Some(entity.key_text()),
        owner: entity.owner.clone(),
        campaign: campaign_of(entity),
        what: vec![match entity.stage.as_deref() {
            Some(stage) => format!("waiting on {owner} (stage: {stage})"),
            None => format!("waiting on {owner}"),
        }],
        since: Some(since),
        next: time_of(timer.due_at_ms).map(|at| (rung, at)),
        action: None,
        cause: None,
    }
}

fn campaign_of_subject(subject: Option<&str>) -> Option<String> {
    subject
        .filter(|s| s.starts_with("campaign/"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_on_open_spans_names_the_bound_read() {
        let bound = OPEN_READ_AT_MOST
            .to_string()
            .as_bytes()
            .rchunks(3)
            .rev()
            .map(|digits| std::str::from_utf8(digits).unwrap())
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            OLDEST_OPEN.contains(&format!("first {bound} records")),
            "{OLDEST_OPEN}"
        );
    }

    fn failing(kind: &'static str, cause: &str, hours_ago: i64, now: DateTime<Utc>) -> Row {
        Row {
            kind,
            record: None,
            owner: None,
            campaign: None,
            what: Vec::new(),
            since: Some(now - chrono::Duration::hours(hours_ago)),
            next: None,
            action: Some(1),
            cause: Some(cause.to_string()),
        }
    }

    /// A pending `schedule` timer of rule `remind`.
    fn pending(id: i64, entity: &str, due_at_ms: i64) -> TimerRecord {
        TimerRecord {
            id,
            entity: entity.into(),
            kind: converge_model::records::TimerRecordKind::Schedule,
            event_type: "task.remind".into(),
            data: serde_json::json!({}),
            expect_type: None,
            due_at_ms,
            catch_up: converge_model::CatchUp::FireLate,
            rule: "remind".into(),
            rule_hash: "h".into(),
            created_by_seq: 1,
            status: converge_model::records::TimerStatus::Pending,
            fired_seq: None,
            closed_at_ms: None,
            cancelled_by: None,
            cancel_reason: None,
        }
    }

    /// `soonest_timers` over `backlog` (in due order), counting the timers
    /// it took.
    fn soonest_of(
        backlog: &[TimerRecord],
        entities: usize,
        budget: usize,
    ) -> (Vec<(String, i64)>, bool, usize) {
        let mut taken = 0;
        let iter = backlog.iter().cloned().inspect(|_| taken += 1).map(Ok);
        let (found, ended) = soonest_timers(iter, entities, budget).unwrap();
        let found = found.into_iter().map(|t| (t.entity, t.id)).collect();
        (found, ended, taken)
    }

    #[test]
    fn the_soonest_timer_of_each_item_is_found_within_a_budget() {
        // task/a has three timers due first, then b, c, d one each; a's
        // last is due after b's.
        let backlog = [
            pending(1, "task/a", 10),
            pending(2, "task/a", 20),
            pending(3, "task/b", 25),
            pending(4, "task/a", 30),
            pending(5, "task/c", 40),
            pending(6, "task/d", 50),
        ];
        let all = |ids: &[(&str, i64)]| -> Vec<(String, i64)> {
            ids.iter().map(|(e, id)| (e.to_string(), *id)).collect()
        };
        let every = all(&[("task/a", 1), ("task/b", 3), ("task/c", 5), ("task/d", 6)]);
        assert_eq!(soonest_of(&backlog, 10, 100), (every.clone(), true, 6));
        // Stops reading once it has as many items as asked for.
        assert_eq!(
            soonest_of(&backlog, 2, 100),
            (all(&[("task/a", 1), ("task/b", 3)]), true, 3)
        );
        // A budget of four timers finds a and b, and says there may be more.
        assert_eq!(
            soonest_of(&backlog, 10, 4),
            (all(&[("task/a", 1), ("task/b", 3)]), false, 4)
        );
        // A backlog as long as the budget is not known to have ended.
        assert_eq!(soonest_of(&backlog, 10, 6), (every, false, 6));
        assert_eq!(soonest_of(&[], 10, 100), (Vec::new(), true, 0));
    }

    #[test]
    fn a_waiting_row_names_its_owner_stage_and_soonest_timer() {
        use converge_model::records::TimerRecordKind;
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        let timer =
            |entity: &str, event_type: &str, expect: Option<&str>, rule: &str| TimerRecord {
                kind: if expect.is_some() {
                    TimerRecordKind::Expect
                } else {
                    TimerRecordKind::Schedule
                },
                event_type: event_type.into(),
                expect_type: expect.map(str::to_string),
                rule: rule.into(),
                ..pending(1, entity, at("2026-11-25T09:00:00Z").timestamp_millis())
            };
        // A campaign in its launch window: no stage to name.
        let key = EntityKey::parse("campaign/fall-26").unwrap();
        let mut campaign = EntityState::new(&key, at("2026-11-23T09:00:00Z"));
        campaign.owner = Some("fin".into());
        let row = waiting_row(
            &campaign,
            &timer(
                "campaign/fall-26",
                "campaign.launch.lagging",
                Some("campaign.launch.complete"),
                "launch_window",
            ),
        );
        assert_eq!(row.what, ["waiting on fin"]);
        assert_eq!(row.since, Some(at("2026-11-23T09:00:00Z")));
        assert_eq!(
            row.next,
            Some((
                "campaign.launch.lagging unless campaign.launch.complete comes (launch_window)"
                    .to_string(),
                at("2026-11-25T09:00:00Z")
            ))
        );
        // A task handed on: waiting since the handoff, in its stage.
        let key = EntityKey::parse("task/t-7").unwrap();
        let mut task = EntityState::new(&key, at("2026-11-23T09:00:00Z"));
        task.stage = Some("review".into());
        task.stage_since = Some(at("2026-11-23T09:00:00Z"));
        task.flow.handoff_since = Some(at("2026-11-23T10:00:00Z"));
        let row = waiting_row(&task, &timer("task/t-7", "task.remind", None, "reminders"));
        assert_eq!(row.what, ["waiting on nobody (stage: review)"]);
        assert_eq!(row.since, Some(at("2026-11-23T10:00:00Z")));
        assert_eq!(row.next.unwrap().0, "task.remind (reminders)");
    }

    #[test]
    fn a_held_campaigns_timer_goes_on_its_held_rows_not_under_waiting() {
        let now = Utc::now();
        let row = |kind: &'static str, record: &str, next: Option<&str>| Row {
            kind,
            record: Some(record.to_string()),
            owner: None,
            campaign: None,
            what: Vec::new(),
            since: Some(now),
            next: next.map(|n| (n.to_string(), now + chrono::Duration::hours(46))),
            action: None,
            cause: None,
        };
        let held = vec![
            row("held", "campaign/c-1", None),
            row("held", "campaign/c-1", None),
            row("held", "campaign/c-2", None),
        ];
        let waiting = vec![
            row(
                "waiting",
                "campaign/c-1",
                Some("gate.deadline (convergence_gate)"),
            ),
            row(
                "waiting",
                "task/t-7",
                Some("task.handoff.remind (stalled_handoff)"),
            ),
        ];
        let rows = held_with_their_timers(held, waiting);
        let shown: Vec<(&str, &str, Option<&str>)> = rows
            .iter()
            .map(|r| {
                (
                    r.kind,
                    r.record.as_deref().unwrap(),
                    r.next.as_ref().map(|(n, _)| n.as_str()),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "held",
                    "campaign/c-1",
                    Some("gate.deadline (convergence_gate)")
                ),
                (
                    "held",
                    "campaign/c-1",
                    Some("gate.deadline (convergence_gate)")
                ),
                ("held", "campaign/c-2", None),
                (
                    "waiting",
                    "task/t-7",
                    Some("task.handoff.remind (stalled_handoff)")
                ),
            ]
        );
    }

    #[test]
    fn causes_shared_by_two_or_more_actions_are_listed_the_most_common_first() {
        let now = Utc::now();
        let rows = vec![
            failing("dead_letter", "slack: not_authed", 1, now),
            failing("retrying", "hook: HTTP 503", 5, now),
            failing("dead_letter", "slack: not_authed", 3, now),
            failing("retrying", "slack: not_authed", 2, now),
            failing("dead_letter", "hook: HTTP 503", 4, now),
            failing("dead_letter", "mailchimp: 400", 9, now),
        ];
        let causes = causes(&rows, now);
        let listed: Vec<(&str, usize, usize, i64)> = causes
            .iter()
            .map(|c| {
                (
                    c.text.as_str(),
                    c.dead,
                    c.retrying,
                    (now - c.since).num_hours(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [("slack: not_authed", 2, 1, 3), ("hook: HTTP 503", 1, 1, 5),]
        );
    }
}
