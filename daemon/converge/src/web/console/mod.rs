//! The review console at `/ui`: what needs action, every campaign's gate,
//! every record's trail, the reports and the rules' health, in the browser,
//! served by the daemon itself (docs/console.md).
//!
//! Pages are rendered on the server (`maud`, checked at compile time) from
//! the same store reads and views as the `/v1` API, and read correctly with
//! JavaScript off. With it on, the bundled htmx asks for the page again
//! every two seconds and swaps its `#live` part in only when the daemon's
//! state changed (`X-Converge-Seen` against [`Version`]; 204 otherwise).
//! Acting (an override, a dead letter's retry or drop) needs a session
//! signed in with the admin token (`session`).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeZone, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::config::AdminToken;
use crate::web::{ApiError, AppState};

mod act;
mod campaigns;
mod health;
mod needs_action;
mod record;
mod reports;
mod session;
mod svg;
mod weeks;

pub use session::Sessions;

/// Where the console lives on the daemon's listen address.
pub const ROOT: &str = "/ui";
/// The header a live page's poll carries: the version it shows.
const SEEN_HEADER: &str = "x-converge-seen";

/// What the console needs besides the API's state.
#[derive(Clone)]
pub struct Console {
    pub sessions: Sessions,
    /// Reading needs a token: the daemon listens beyond loopback.
    pub reads_need_token: bool,
    /// The read token, if set (the admin token reads too).
    pub read_token: Option<AdminToken>,
    /// The event sources the config names, for the health page.
    pub sources: std::sync::Arc<Vec<health::Source>>,
    /// The reports page's finished weeks.
    pub weeks: weeks::WeekCache,
    /// The hooks' secret fields, hidden in the trails shown.
    pub redaction: std::sync::Arc<crate::redact::Redaction>,
    /// How many attempts an action gets (`dispatch.max_attempts`), to say
    /// how near a retrying one is to becoming a dead letter.
    pub max_attempts: u32,
}

impl Console {
    pub fn new(config: &crate::config::Config, listen: SocketAddr) -> Console {
        Console {
            sessions: Sessions::default(),
            reads_need_token: !listen.ip().is_loopback(),
            read_token: config.server.read_token.clone(),
            sources: std::sync::Arc::new(health::Source::from_config(config)),
            weeks: weeks::WeekCache::default(),
            redaction: std::sync::Arc::new(config.redaction()),
            max_attempts: config.dispatch.max_attempts,
        }
    }
}

/// The console's routes; `web::router` adds them under the read guard.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(needs_action::page))
        .route("/ui/", get(|| async { Redirect::permanent(ROOT) }))
        .route("/ui/campaigns", get(campaigns::page))
        .route("/ui/records", get(record::find))
        .route("/ui/records/{kind}/{id}", get(record::page))
        .route("/ui/reports", get(reports::page))
        .route("/ui/reports.csv", get(reports::csv))
        .route("/ui/health", get(health::page))
        .route("/ui/records/{kind}/{id}/override", post(act::override_gate))
        .route("/ui/dead-letters/retry", post(act::retry_shown))
        .route("/ui/timers/cancel", post(act::cancel_timers))
        .route("/ui/dead-letters/{id}/{op}", post(act::dead_letter))
        .route("/ui/logout", post(session::logout))
}

/// The routes anyone may reach: signing in, and the assets its page uses.
pub fn open_routes() -> Router<AppState> {
    Router::new()
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/assets/{name}", get(asset))
}

/// The read guard of the console and the `/v1` reads: open on loopback;
/// beyond it, a session or `Authorization: Bearer <read or admin token>`.
pub async fn read_guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.console.reads_need_token || may_read(&state, request.headers()) {
        return next.run(request).await;
    }
    if request.uri().path().starts_with(ROOT) {
        let back = request
            .uri()
            .path_and_query()
            .map_or(ROOT.to_string(), |p| p.to_string());
        return Redirect::to(&format!("/ui/login?next={}", encode(&back))).into_response();
    }
    ApiError::unauthorized(
        "this daemon listens beyond loopback: reading needs `Authorization: Bearer <read or admin token>`",
    )
    .into_response()
}

fn may_read(state: &AppState, headers: &HeaderMap) -> bool {
    if state.console.sessions.viewer(headers).is_some() {
        return true;
    }
    let Some(given) = crate::web::bearer(headers) else {
        return false;
    };
    [
        state.admin_token.as_ref(),
        state.console.read_token.as_ref(),
    ]
    .into_iter()
    .flatten()
    .any(|token| crate::web::token_matches(given, token))
}

/// The console's stylesheet and script, compiled into the binary.
async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, content_type): (&'static str, &'static str) = match name.as_str() {
        "console.css" => (include_str!("assets/console.css"), "text/css"),
        "htmx.min.js" => (include_str!("assets/htmx.min.js"), "text/javascript"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Percent-encodes `text` for a query string.
pub fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `?name=value&...` of the parameters given (trimmed), or nothing: a
/// filtered page's own address.
pub fn query_string(pairs: &[(&str, &String)]) -> String {
    let given: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v.trim())))
        .collect();
    if given.is_empty() {
        String::new()
    } else {
        format!("?{}", given.join("&"))
    }
}

/// The five sections, in the order of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    NeedsAction,
    Campaigns,
    Records,
    Reports,
    Health,
}

/// How much of the daemon's state a page reflects: the journal's head and
/// the processed cursor, the outbox's counters, and the clock's minute (ages
/// on the page move with it). A live page asks again with the version it
/// shows and gets 204 while nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(String);

impl Version {
    pub fn of(store: &dyn converge_store::Backend, now: DateTime<Utc>) -> Version {
        let counts = store.counts().unwrap_or_default();
        let head = store.journal_head().unwrap_or_default();
        Version(format!(
            "{head}.{}.{}.{}.{}.{}.{}",
            counts.unprocessed_events,
            counts.decisions,
            counts.actions_pending,
            counts.actions_done,
            counts.dead_letters,
            now.timestamp() / 60
        ))
    }

    /// Whether a live page's poll already shows this version.
    pub fn seen_by(&self, headers: &HeaderMap) -> bool {
        headers
            .get(SEEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|seen| seen == self.0)
    }
}

/// Who is looking, from their session cookie, if any.
pub use session::Viewer;

/// A page: the navigation, the signed-in person, and the `#live` main part
/// that polls `live_url` (its own URL) for changes.
pub struct Page<'a> {
    pub title: &'a str,
    pub section: Section,
    pub viewer: Option<&'a Viewer>,
    /// The page's own URL (path and query), polled when live.
    pub url: &'a str,
    pub version: &'a Version,
    pub now: DateTime<Utc>,
}

impl Page<'_> {
    pub fn render(&self, main: Markup) -> Markup {
        // The poll pauses while a form has the focus, so typing a reason is
        // never swapped away.
        let headers = format!(r#"{{"X-Converge-Seen": "{}"}}"#, self.version.0);
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · converge" }
                    link rel="stylesheet" href="/ui/assets/console.css";
                    script src="/ui/assets/htmx.min.js" defer {}
                }
                body {
                    header.top {
                        (navigation(Some(self.section), ""))
                        div.who {
                            span.clock title="The daemon's clock" { (self.now.format("%a %d %b %H:%M UTC")) }
                            @match self.viewer {
                                Some(viewer) => {
                                    span { (viewer.who) @if !viewer.can_act { " (read only)" } }
                                    form method="post" action="/ui/logout" {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button.link type="submit" { "Sign out" }
                                    }
                                }
                                None => { a href={"/ui/login?next=" (encode(self.url))} { "Sign in to act" } }
                            }
                        }
                    }
                    main #live hx-get=(self.url) hx-trigger="every 2s [!document.activeElement.closest('form')]"
                        hx-select="#live" hx-swap="outerHTML" hx-headers=(headers) data-version=(self.version.0) {
                        h1 { (self.title) }
                        (main)
                    }
                }
            }
        }
    }
}

/// The brand, the sections (`current` marked) and the box that opens a
/// record (holding `find`): the top of every page, error pages too.
fn navigation(current: Option<Section>, find: &str) -> Markup {
    let nav = [
        (Section::NeedsAction, "/ui", "Needs action"),
        (Section::Campaigns, "/ui/campaigns", "Campaigns"),
        (Section::Reports, "/ui/reports", "Reports"),
        (Section::Health, "/ui/health", "Rules & health"),
    ];
    html! {
        a.brand href="/ui" { "converge" }
        nav {
            @for (section, href, label) in nav {
                a href=(href) aria-current=[(Some(section) == current).then_some("page")] { (label) }
            }
        }
        form.find method="get" action="/ui/records" {
            input type="search" name="key" value=[(!find.is_empty()).then_some(find)] placeholder="campaign/c-42" aria-label="Open a record";
        }
    }
}

/// The daemon's state's version, read before a page's own reads: a live
/// poll that already shows it gets 204 at the cost of this read alone.
pub async fn version_or_unchanged(
    state: &AppState,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<Version, Response> {
    let version = read(state, move |store| Ok(Version::of(store, now))).await?;
    if version.seen_by(headers) {
        return Err(StatusCode::NO_CONTENT.into_response());
    }
    Ok(version)
}

/// A page's answer, never cached: it is the daemon's state now (a live
/// poll that already shows it was answered 204 by [`version_or_unchanged`]).
pub fn answer(page: impl FnOnce() -> Markup) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], visible(page())).into_response()
}

/// The page with each control character an event carried (maud escapes
/// only `& < > "`) shown as U+FFFD: a browser would drop a NUL silently,
/// and `review` and `review\0` would read alike. Tabs and line breaks stay.
fn visible(page: Markup) -> Markup {
    let text = page.into_string();
    if !text.chars().any(is_hidden_control) {
        return PreEscaped(text);
    }
    PreEscaped(
        text.chars()
            .map(|c| if is_hidden_control(c) { '\u{FFFD}' } else { c })
            .collect(),
    )
}

fn is_hidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// An error page: what went wrong, in the console's frame.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    error_page_finding(status, title, message, "")
}

/// An error page whose record box holds `find`: what was looked for, to
/// correct rather than type again.
pub fn error_page_finding(status: StatusCode, title: &str, message: &str, find: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · converge" }
                link rel="stylesheet" href="/ui/assets/console.css";
            }
            body {
                header.top { (navigation(None, find)) }
                main #live {
                    h1 { (title) }
                    p.error { (message) }
                    p { a href="/ui" { "Back to Needs action" } }
                }
            }
        }
    };
    (status, visible(body)).into_response()
}

/// A failed store read, as a page.
pub fn unavailable(e: impl std::fmt::Display) -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database did not answer",
        &e.to_string(),
    )
}

/// Runs a blocking read of the store off the async workers.
pub async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn converge_store::Backend) -> Result<T, converge_store::StoreError>
    + Send
    + 'static,
) -> Result<T, Response> {
    let reader = state.reader.clone();
    tokio::task::spawn_blocking(move || f(&**reader.lock().expect("reader")))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
}

// ---- how values read on a page ----

pub fn time_of(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// "3h 20m", "2d 4h", "45s": how long, to the two largest units.
pub fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// A time with how long ago (or from now) it is, the exact time on hover.
pub fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let seconds = (now - at).num_seconds();
    let text = if seconds >= 0 {
        format!("{} ago", span(seconds))
    } else {
        format!("in {}", span(-seconds))
    };
    html! { time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC")) { (text) } }
}

pub fn when_ms(ms: i64, now: DateTime<Utc>) -> Markup {
    match time_of(ms) {
        Some(at) => when(at, now),
        None => html! { "?" },
    }
}

/// The address of an entity's record page.
pub fn record_href(key: &str) -> String {
    match key.split_once('/') {
        Some((kind, id)) => format!("/ui/records/{}/{}", encode(kind), encode(id)),
        None => ROOT.to_string(),
    }
}

/// The link to an entity's record page.
pub fn record_link(key: &str) -> Markup {
    html! { a.record href=(record_href(key)) { (key) } }
}

/// A JSON value as readable text: strings bare, the rest as JSON.
pub fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Pretty JSON in a `<pre>`.
pub fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// A short notice above a page's content (after an action).
pub fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.notice role="status" { (text) }
        }
    }
}
