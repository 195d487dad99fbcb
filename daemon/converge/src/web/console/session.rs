//! Signing in to the console: the admin token (or the read token) is
//! exchanged once for a session cookie (HttpOnly, SameSite=Strict,
//! expiring), so the browser never keeps the token. Each session has its
//! own CSRF token, which every form that acts carries. Sessions live in
//! memory: a restart signs everyone out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, html};
use serde::Deserialize;

use crate::web::{AppState, token_matches};

const COOKIE: &str = "converge_session";
/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions at once; signing in past it ends the oldest.
const MAX_SESSIONS: usize = 1000;
const MAX_WHO: usize = 200;

/// Who is looking at a page, from their session.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub who: String,
    /// Signed in with the admin token: may override gates and retry or
    /// drop dead letters.
    pub can_act: bool,
    /// What this session's forms carry.
    pub csrf: String,
}

struct Session {
    viewer: Viewer,
    expires: Instant,
}

/// The console's sessions, by their cookie's value.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl Sessions {
    /// The viewer of the request's session cookie, while it lasts.
    pub fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        let id = session_cookie(headers)?;
        let mut sessions = self.0.lock().expect("sessions");
        match sessions.get(id) {
            Some(session) if session.expires > Instant::now() => Some(session.viewer.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    fn start(&self, who: String, can_act: bool) -> String {
        let id = random_token();
        let mut sessions = self.0.lock().expect("sessions");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                viewer: Viewer {
                    who,
                    can_act,
                    csrf: random_token(),
                },
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    fn end(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            self.0.lock().expect("sessions").remove(id);
        }
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// 32 random bytes from the operating system, in hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random numbers");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a form's CSRF token is the session's, in constant time.
pub fn csrf_matches(viewer: &Viewer, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == viewer.csrf.len() && bool::from(given.as_bytes().ct_eq(viewer.csrf.as_bytes()))
}

/// Only the console's own pages are where signing in, or a form that
/// acted, leads back to.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next) if next.starts_with("/ui") && !next.starts_with("//") => next.to_string(),
        _ => super::ROOT.to_string(),
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /ui/login`: the sign-in form.
pub async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    login_form(StatusCode::OK, &safe_next(query.next.as_deref()), None)
}

fn login_form(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · converge" }
                link rel="stylesheet" href="/ui/assets/console.css";
            }
            body {
                header.top { a.brand href="/ui" { "converge" } }
                main #live.narrow {
                    h1 { "Sign in" }
                    p {
                        "Overrides and dead-letter retries and drops need the daemon's admin token "
                        "(the variable " code { "server.admin_token_env" } " names). "
                        "The read token only reads. Your name goes into the journal with every action."
                    }
                    @if let Some(error) = error { p.error role="alert" { (error) } }
                    form.stack method="post" action="/ui/login" {
                        input type="hidden" name="next" value=(next);
                        label { "Your name" input name="who" required maxlength="200" autocomplete="name"; }
                        label { "Token" input type="password" name="token" required autocomplete="current-password"; }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    };
    (status, page).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    who: String,
    token: String,
    next: Option<String>,
}

/// `POST /ui/login`: a session for the admin token (may act) or the read
/// token (reads only); 401 and the form again otherwise.
pub async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let next = safe_next(form.next.as_deref());
    let who = form.who.trim().to_string();
    if who.is_empty() || who.chars().count() > MAX_WHO {
        return login_form(
            StatusCode::BAD_REQUEST,
            &next,
            Some("Give your name (up to 200 characters): it is journaled with your actions."),
        );
    }
    let token = form.token.trim();
    let admin = state
        .admin_token
        .as_ref()
        .is_some_and(|t| token_matches(token, t));
    let reader = state
        .console
        .read_token
        .as_ref()
        .is_some_and(|t| token_matches(token, t));
    if !admin && !reader {
        tracing::info!(who = %who.escape_debug(), "console sign-in refused");
        let hint = if state.admin_token.is_none() {
            format!(
                "That is not a token this daemon knows. It has no admin token: set {} in its environment and restart it to act from the console.",
                state.admin_token_env
            )
        } else {
            "That is not a token this daemon knows.".to_string()
        };
        return login_form(StatusCode::UNAUTHORIZED, &next, Some(&hint));
    }
    let id = state.console.sessions.start(who.clone(), admin);
    tracing::info!(who = %who.escape_debug(), can_act = admin, "console sign-in");
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of hex digits"),
    );
    response
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// `POST /ui/logout`: ends the session.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(viewer) = state.console.sessions.viewer(&headers)
        && csrf_matches(&viewer, &form.csrf)
    {
        state.console.sessions.end(&headers);
    }
    let mut response = Redirect::to(super::ROOT).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("converge_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}
