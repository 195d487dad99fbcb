//! `GET /v1/timers`: the pending timers, soonest first, of every rule or
//! of one. `POST /v1/timers/cancel`: a person cancels the pending timers of
//! a rule (of one of its versions, about one entity), behind the admin
//! token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use converge_api::Time;
use converge_api::timers::{CancelTimers, PendingTimer, PendingTimers, TimersCancelled};
use converge_model::EntityKey;
use converge_model::records::TimerRecord;
use converge_store::{StoreError, TimerCancellation};
use serde::Deserialize;

use super::{ApiError, AppState, internal, require_admin, storage};

/// How many timers `GET /v1/timers` lists, by default and at most.
const LISTED: usize = 100;
const LISTED_MAX: usize = 1_000;
/// How many of the soonest pending timers a listing reads at most, a page
/// at a time, looking for those it asks for: the answer stays quick
/// whatever the backlog, and says `more` beyond it.
const READ_AT_MOST: usize = 100_000;
const READ_PAGE: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    rule: Option<String>,
    version: Option<String>,
    /// Due within this long from now (`24h`, `3d`).
    within: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/timers?rule=&version=&within=&limit=`: pending timers, soonest
/// first.
pub(super) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(LISTED).clamp(1, LISTED_MAX);
    let due_by_ms = match query.within.as_deref().map(str::trim) {
        None | Some("") => i64::MAX,
        Some(within) => {
            let within = humantime::parse_duration(within).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("`within` is a duration like 24h or 3d: {e}"),
                )
            })?;
            let within_ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
            state.clock.now_ms().saturating_add(within_ms)
        }
    };
    let wanted = move |timer: &TimerRecord| {
        query.rule.as_deref().is_none_or(|rule| timer.rule == rule)
            && query
                .version
                .as_deref()
                .is_none_or(|version| timer.rule_hash == version)
    };
    let reader = state.reader.clone();
    let listed = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let reader = reader.lock().expect("reader");
        let mut timers = Vec::new();
        let backlog =
            converge_store::pending_timers(&**reader, due_by_ms, READ_PAGE).take(READ_AT_MOST);
        let mut read = 0;
        for timer in backlog {
            let timer = timer?;
            read += 1;
            if wanted(&timer) {
                if timers.len() == limit {
                    return Ok(PendingTimers { timers, more: true });
                }
                timers.push(pending(&timer));
            }
        }
        Ok(PendingTimers {
            timers,
            more: read == READ_AT_MOST,
        })
    })
    .await
    .map_err(internal)?
    .map_err(storage)?;
    Ok(Json(listed).into_response())
}

/// A stored timer as the API shows a pending one.
pub(crate) fn pending(timer: &TimerRecord) -> PendingTimer {
    PendingTimer {
        id: timer.id,
        entity: timer.entity.clone(),
        kind: timer.kind.name().to_string(),
        event_type: timer.event_type.clone(),
        expect_type: timer.expect_type.clone(),
        rule: timer.rule.clone(),
        version: timer.rule_hash.clone(),
        due_at: Time::stored(timer.due_at_ms),
    }
}

/// Timers cancelled in one commit: a backlog of a rule's timers is
/// cancelled in several short commits rather than one that holds the
/// journal up.
const PER_COMMIT: usize = 1_000;

/// `POST /v1/timers/cancel` with `{"rule", "version"?, "entity"?, "by",
/// "reason"}`: the matching pending timers never fire; each keeps who
/// cancelled it and why.
pub(super) async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers, "cancelling timers")?;
    let request: CancelTimers =
        serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    let cancelled = cancel_timers(&state, request).await?;
    Ok(Json(TimersCancelled { cancelled }).into_response())
}

/// What a person sent, checked: who, why, the rule, an entity key.
fn checked(request: CancelTimers) -> Result<CancelTimers, ApiError> {
    let request = request.validate().map_err(invalid)?;
    if let Some(entity) = &request.entity
        && EntityKey::parse(entity).is_none()
    {
        return Err(invalid(format!(
            "`entity` is a key like `task/JIRA-7` (kind/id), not {entity:?}"
        )));
    }
    Ok(request)
}

fn invalid(e: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!(
            "expected {{\"rule\", \"version\" (optional), \"entity\" (optional), \"by\", \"reason\"}}: {e}"
        ),
    )
}

/// Checks the request a person sent (the API's or the console's), then
/// cancels the timers it names, a commit of at most [`PER_COMMIT`] at a
/// time until none is left; returns how many.
pub(crate) async fn cancel_timers(
    state: &AppState,
    request: CancelTimers,
) -> Result<u64, ApiError> {
    let request = checked(request)?;
    let mut cancelled = 0;
    loop {
        let page = TimerCancellation {
            rule: request.rule.clone(),
            version: request.version.clone(),
            entity: request.entity.clone(),
            limit: PER_COMMIT,
            by: request.by.clone(),
            reason: request.reason.clone(),
            at_ms: state.clock.now_ms(),
        };
        let committed = state.journal.cancel_timers(page).await;
        let done = match committed {
            Ok(n) => n,
            Err(e) => {
                record(state, &request, cancelled);
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("{cancelled} cancelled, then storage failed: {e}"),
                ));
            }
        };
        cancelled += done as u64;
        if done < PER_COMMIT {
            break;
        }
    }
    record(state, &request, cancelled);
    Ok(cancelled)
}

fn record(state: &AppState, request: &CancelTimers, cancelled: u64) {
    if cancelled > 0 {
        let cancelled = usize::try_from(cancelled).unwrap_or(usize::MAX);
        state
            .metrics
            .timers_cancelled(&request.rule, cancelled, &request.by);
    }
}
