//! Acting from the console: overriding a held gate, retrying or dropping a
//! dead letter, retrying the dead letters a Needs action page shows,
//! cancelling the timers of earlier or removed rule versions. Each needs a
//! session signed in with the admin token and the session's CSRF token,
//! and goes through the same code as the `/v1` API
//! (`web::journal_override`, `web::dlq::change_dead_letter`,
//! `web::timers::cancel_timers`), so it is journaled with who and why
//! exactly like `converge gates override`, `converge dlq retry|drop` and
//! `converge timers cancel`. The answer is a redirect back to the record,
//! with what happened as a notice.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use converge_api::timers::CancelTimers;
use converge_model::EntityKey;
use converge_store::DeadLetterOp;
use serde::Deserialize;

use super::session::{Viewer, csrf_matches, safe_next};
use super::{encode, error_page};
use crate::dlq::DeadLetterRequest;
use crate::gates::Override;
use crate::web::AppState;

/// The session allowed to act, or the page that says why not.
fn actor(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Viewer, Box<Response>> {
    let Some(viewer) = state.console.sessions.viewer(headers) else {
        return Err(Box::new(error_page(
            StatusCode::UNAUTHORIZED,
            "Sign in to act",
            "Overrides, retries and drops need a console session signed in with the admin token.",
        )));
    };
    if !csrf_matches(&viewer, csrf) {
        return Err(Box::new(error_page(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "The form did not come from this session (or the session changed). Open the page again and resend.",
        )));
    }
    if !viewer.can_act {
        return Err(Box::new(error_page(
            StatusCode::FORBIDDEN,
            "Read only",
            "This session was signed in with the read token: sign in with the admin token to act.",
        )));
    }
    Ok(viewer)
}

/// Who (the session's name) and why (the form's reason), checked as the
/// API checks them.
fn dead_letter_request(
    viewer: &Viewer,
    reason: String,
) -> Result<DeadLetterRequest, Box<Response>> {
    DeadLetterRequest {
        by: viewer.who.clone(),
        reason,
    }
    .validate()
    .map_err(|e| {
        Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "Nothing was recorded",
            &e,
        ))
    })
}

/// Back to the page the form was on (its path and query, less an earlier
/// notice), with what happened as a notice, at `anchor` when given.
fn back_to(page: &str, notice: &str, anchor: &str) -> Response {
    let (path, query) = page.split_once('?').unwrap_or((page, ""));
    let mut kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("notice="))
        .collect();
    let notice = format!("notice={}", encode(notice));
    kept.push(&notice);
    Redirect::to(&format!("{path}?{}{anchor}", kept.join("&"))).into_response()
}

#[derive(Deserialize)]
pub struct OverrideForm {
    csrf: String,
    reason: String,
    /// Empty: every held channel.
    #[serde(default)]
    channel: String,
}

/// `POST /ui/records/{kind}/{id}/override`.
pub async fn override_gate(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<OverrideForm>,
) -> Response {
    let viewer = match actor(&state, &headers, &form.csrf) {
        Ok(viewer) => viewer,
        Err(page) => return *page,
    };
    let Some(key) = EntityKey::parse(&format!("{kind}/{id}")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "No such record",
            "A record is <kind>/<id>.",
        );
    };
    let channel = Some(form.channel.trim().to_string()).filter(|c| !c.is_empty());
    let request = match (Override {
        by: viewer.who.clone(),
        reason: form.reason,
        channel,
    })
    .validate()
    {
        Ok(request) => request,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "The override was not sent", &e),
    };
    let record = format!("/ui/records/{}/{}", encode(&kind), encode(&id));
    match crate::web::journal_override(&state, &key, request).await {
        Ok(accepted) => back_to(
            &record,
            &format!(
                "Override journaled (event {}): {} held send(s) released by {}",
                accepted.event.id, accepted.held, viewer.who
            ),
            "#gate",
        ),
        Err(e) => error_page(e.status(), "The override was not journaled", e.message()),
    }
}

#[derive(Deserialize)]
pub struct DeadLetterForm {
    csrf: String,
    reason: String,
    /// The record page to return to.
    #[serde(default)]
    back: String,
}

/// `POST /ui/dead-letters/{id}/retry` and `.../drop`.
pub async fn dead_letter(
    State(state): State<AppState>,
    Path((id, op)): Path<(i64, String)>,
    headers: HeaderMap,
    Form(form): Form<DeadLetterForm>,
) -> Response {
    let viewer = match actor(&state, &headers, &form.csrf) {
        Ok(viewer) => viewer,
        Err(page) => return *page,
    };
    let op = match op.as_str() {
        "retry" => DeadLetterOp::Retry,
        "drop" => DeadLetterOp::Drop,
        _ => return error_page(StatusCode::NOT_FOUND, "No such action", "retry or drop"),
    };
    let request = match dead_letter_request(&viewer, form.reason) {
        Ok(request) => request,
        Err(page) => return *page,
    };
    let back = safe_next(Some(&form.back));
    match crate::web::dlq::change_dead_letter(&state, id, op, request).await {
        Ok((_, answer)) => back_to(
            &back,
            &format!(
                "Action {id} is {} now ({} by {})",
                answer.status,
                if matches!(op, DeadLetterOp::Retry) {
                    "retried"
                } else {
                    "dropped"
                },
                viewer.who
            ),
            &if back.starts_with("/ui/records/") {
                format!("#action-{id}")
            } else {
                String::new()
            },
        ),
        Err(e) => error_page(e.status(), "Nothing was recorded", e.message()),
    }
}

/// The most dead letters one form retries: what one Needs action page
/// can show.
const RETRY_SHOWN_MAX: usize = 1000;

#[derive(Deserialize)]
pub struct RetryShownForm {
    csrf: String,
    reason: String,
    /// The action ids of the dead letters the page showed, comma-separated.
    ids: String,
    /// The page to return to, with its filters.
    #[serde(default)]
    back: String,
}

/// `POST /ui/dead-letters/retry`: retries every dead letter a Needs action
/// page showed (after a fix: a secret set, a receiver back), each its own
/// journaled change with who and why, as one `converge dlq retry` each.
/// One no longer a dead letter (retried or dropped meanwhile) is counted
/// and passed over.
pub async fn retry_shown(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<RetryShownForm>,
) -> Response {
    let viewer = match actor(&state, &headers, &form.csrf) {
        Ok(viewer) => viewer,
        Err(page) => return *page,
    };
    let ids: Result<Vec<i64>, _> = form
        .ids
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::parse)
        .collect();
    let ids = match ids {
        Ok(ids) if !ids.is_empty() && ids.len() <= RETRY_SHOWN_MAX => ids,
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Nothing was recorded",
                &format!("`ids` names 1 to {RETRY_SHOWN_MAX} actions by id, comma-separated"),
            );
        }
    };
    let request = match dead_letter_request(&viewer, form.reason) {
        Ok(request) => request,
        Err(page) => return *page,
    };
    let back = safe_next(Some(&form.back));
    let (mut retried, mut passed) = (0, 0);
    for id in ids {
        match crate::web::dlq::change_dead_letter(&state, id, DeadLetterOp::Retry, request.clone())
            .await
        {
            Ok(_) => retried += 1,
            Err(e) if matches!(e.status(), StatusCode::CONFLICT | StatusCode::NOT_FOUND) => {
                passed += 1
            }
            Err(e) => {
                return error_page(
                    e.status(),
                    "Not every dead letter was retried",
                    &format!("{retried} retried, then action {id}: {}", e.message()),
                );
            }
        }
    }
    let mut notice = format!("{retried} dead letter(s) retried by {}", viewer.who);
    if passed > 0 {
        notice.push_str(&format!("; {passed} passed over: no longer dead letters"));
    }
    back_to(&back, &notice, "")
}

#[derive(Deserialize)]
pub struct CancelTimersForm {
    csrf: String,
    reason: String,
    rule: String,
    /// The rule versions whose timers to cancel, comma-separated; empty:
    /// every version (a removed rule's).
    #[serde(default)]
    versions: String,
    /// Only those about this entity (from its record page).
    #[serde(default)]
    entity: String,
    /// The page to return to: Rules & health, or the record.
    #[serde(default)]
    back: String,
}

/// `POST /ui/timers/cancel`: cancels the pending timers that earlier
/// versions of a rule (or a removed rule) made, or those of a rule about
/// one entity, as one `converge timers cancel` per version, each timer
/// keeping who and why.
pub async fn cancel_timers(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CancelTimersForm>,
) -> Response {
    let viewer = match actor(&state, &headers, &form.csrf) {
        Ok(viewer) => viewer,
        Err(page) => return *page,
    };
    let versions: Vec<Option<String>> = match form
        .versions
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| Some(v.to_string()))
        .collect::<Vec<_>>()
    {
        versions if versions.is_empty() => vec![None],
        versions => versions,
    };
    let mut cancelled = 0;
    for version in versions {
        let request = CancelTimers {
            rule: form.rule.clone(),
            version,
            entity: Some(form.entity.clone()),
            by: viewer.who.clone(),
            reason: form.reason.clone(),
        };
        match crate::web::timers::cancel_timers(&state, request).await {
            Ok(n) => cancelled += n,
            Err(e) if cancelled == 0 => {
                return error_page(e.status(), "Nothing was cancelled", e.message());
            }
            Err(e) => {
                return error_page(
                    e.status(),
                    "Not every timer was cancelled",
                    &format!("{cancelled} cancelled, then: {}", e.message()),
                );
            }
        }
    }
    let back = match form.back.as_str() {
        "" => "/ui/health".to_string(),
        back => safe_next(Some(back)),
    };
    let anchor = if back.starts_with("/ui/records/") {
        "#timers"
    } else {
        "#rules"
    };
    back_to(
        &back,
        &format!(
            "{cancelled} timer(s) of {} cancelled by {}",
            form.rule.trim(),
            viewer.who
        ),
        anchor,
    )
}
