//! `/v1/dlq`: the dead letters, one action with its history, and a
//! person's retry or drop (behind the admin token).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use converge_api::dlq::{ActionShown, ChangedStatus, DeadLetterChanged, DeadLetters};
use converge_store::{DeadLetterChange, DeadLetterOp, DeadLetterOutcome};
use serde::Deserialize;

use super::{ApiError, AppState, internal, require_admin, storage};
use crate::dlq::{DeadLetterRequest, action_view};

/// How many dead letters one `GET /v1/dlq` lists, by default and at most.
const LISTED: usize = 100;
const LISTED_MAX: usize = 1000;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
}

/// `GET /v1/dlq?after=<id>&limit=<n>`: dead letters oldest first, how many
/// there are, and where the next page starts (`next_after`, null at the end).
pub(super) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(LISTED).clamp(1, LISTED_MAX);
    let reader = state.reader.clone();
    let (letters, count) = tokio::task::spawn_blocking(move || {
        let reader = reader.lock().expect("reader");
        Ok::<_, converge_store::StoreError>((
            reader.dead_letters(query.after, limit)?,
            reader.dead_letter_count()?,
        ))
    })
    .await
    .map_err(internal)?
    .map_err(storage)?;
    let next_after = (letters.len() == limit)
        .then(|| letters.last().map(|l| l.action.id))
        .flatten();
    Ok(Json(DeadLetters {
        dead_letters: letters.iter().map(action_view).collect(),
        count,
        next_after,
    })
    .into_response())
}

fn action_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_action_id",
            "an action id is a number",
        )
    })
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "action_not_found",
        format!("no action {id}"),
    )
}

/// `GET /v1/dlq/{id}`: one action, dead letter or not, with its event,
/// decision and history.
pub(super) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = action_id(&id)?;
    let reader = state.reader.clone();
    let action = tokio::task::spawn_blocking(move || reader.lock().expect("reader").action(id))
        .await
        .map_err(internal)?
        .map_err(storage)?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(ActionShown {
        action: action_view(&action),
    })
    .into_response())
}

/// `POST /v1/dlq/{id}/retry` with `{"by", "reason"}` and the admin token:
/// the dead letter is pending again with a fresh attempt budget and goes
/// to the dispatcher. 202 once committed.
pub(super) async fn retry(
    state: State<AppState>,
    id: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(state, id, headers, body, DeadLetterOp::Retry).await
}

/// `POST /v1/dlq/{id}/drop` with `{"by", "reason"}` and the admin token:
/// the dead letter never runs again. 200 once committed.
pub(super) async fn drop(
    state: State<AppState>,
    id: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(state, id, headers, body, DeadLetterOp::Drop).await
}

async fn decide(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
    op: DeadLetterOp,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers, "dead-letter retries and drops")?;
    let id = action_id(&id)?;
    let request: DeadLetterRequest = serde_json::from_slice(&body)
        .map_err(|e| e.to_string())
        .and_then(DeadLetterRequest::validate)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("expected {{\"by\": \"<who>\", \"reason\": \"<why>\"}}: {e}"),
            )
        })?;
    let (status, answer) = change_dead_letter(&state, id, op, request).await?;
    Ok((status, Json(answer)).into_response())
}

/// Records a person's retry or drop of dead letter `id` (the `/v1` API's
/// and the console's) and answers what the API answers: the status and
/// the action's new status and key.
pub(crate) async fn change_dead_letter(
    state: &AppState,
    id: i64,
    op: DeadLetterOp,
    request: DeadLetterRequest,
) -> Result<(StatusCode, DeadLetterChanged), ApiError> {
    let change = DeadLetterChange {
        action_id: id,
        op,
        by: request.by.clone(),
        reason: request.reason,
        at_ms: state.clock.now_ms(),
    };
    let outcome = state
        .journal
        .dead_letters(vec![change])
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("not recorded: {e}"),
            )
        })?
        .pop()
        .ok_or_else(|| internal("the journal gave no outcome"))?;
    // What the plugin sends, as the store decides it from the action's row
    // (its instance, a released send's own key).
    let reader = state.reader.clone();
    let key = || async move {
        tokio::task::spawn_blocking(move || reader.lock().expect("reader").action(id))
            .await
            .map_err(internal)?
            .map_err(storage)?
            .map(|detail| detail.action.idempotency_key())
            .ok_or_else(|| internal(format!("action {id} was changed, then not found")))
    };
    let changed = |status, idempotency_key| DeadLetterChanged {
        id,
        status,
        idempotency_key,
    };
    match outcome {
        DeadLetterOutcome::Retried(_) => {
            state.metrics.dead_letter_retried(id, &request.by);
            Ok((
                StatusCode::ACCEPTED,
                changed(ChangedStatus::Pending, key().await?),
            ))
        }
        DeadLetterOutcome::Dropped => {
            state.metrics.dead_letter_dropped(id, &request.by);
            Ok((
                StatusCode::OK,
                changed(ChangedStatus::Dropped, key().await?),
            ))
        }
        DeadLetterOutcome::NotDeadLetter { status } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_dead_letter",
            format!("action {id} is {}, not a dead letter", status.name()),
        )),
        DeadLetterOutcome::Unknown => Err(not_found(id)),
    }
}
