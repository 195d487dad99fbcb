//! `POST /v1/timers/cancel`: a person cancels the pending timers of a rule
//! (of one of its versions, about one entity), behind the admin token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use converge_api::timers::{CancelTimers, TimersCancelled};
use converge_model::EntityKey;
use converge_store::TimerCancellation;

use super::{ApiError, AppState, require_admin};

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
