//! The HTTP layer: webhook intake, metrics, health, the daemon's status, the
//! event trail, an entity's timers, convergence gates and their overrides,
//! dead letters (`dlq`), and (in manual clock mode) the clock. The
//! only module that serves HTTP; the `/v1` answers it shares with the
//! commands are `converge_api` types. Every error goes through
//! [`ApiError`]: a status, a stable code and a message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use converge_api::ErrorBody;
use converge_api::clock::{ClockMode, ClockMove, ClockNow};
use converge_api::gates::{Gates, JournaledEvent, OverrideAccepted};
use converge_api::status::{
    Cluster, ClusterDaemon, JournalPosition, Reload, ReloadError, ReloadOutcome, RuleInUse,
    StaleTimers, Status,
};
use converge_engine::gates::OverrideEvent;
use converge_model::event::TRACEPARENT_EXTENSION;
use converge_model::{EntityKey, Event, EventError};
use converge_plugin_host::{CallFailure, DecodeInput, Plugin};
use converge_signatures::Inbound;
use converge_store::{Appended, SourceState, Store};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::clock::{Clock, ClockError};
use crate::config::AdminToken;
use crate::gates::{Override, gate_view};
use crate::hooks::{self, Checked, Decode, HookConfig, Hooks, valid_hook_name};
use crate::journal::Journal;
use crate::plain_json::{JsonMapping, MappingError};
use crate::reload::RulesHandle;
use crate::report;
use crate::telemetry::{Metrics, RejectReason};

pub(crate) mod console;
pub(crate) mod dlq;
mod serve;
pub(crate) mod timers;

pub use serve::{Limits, serve};

/// How long intake waits for room in the in-flight budget before answering 503.
const BACKPRESSURE_WAIT: Duration = Duration::from_secs(5);
/// Most timers `/v1/entities/{kind}/{id}/timers` lists.
const TIMERS_LISTED: usize = 1000;

/// What every handler shares. Each request's extractor clones it, so it
/// is one `Arc`: a clone per request of the parts (the metrics alone hold
/// dozens of `Arc`s) showed in profiles of intake.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub journal: Journal,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// Events acknowledged but not yet processed.
    pub in_flight: Arc<Semaphore>,
    pub reader: Arc<Mutex<Store>>,
    /// `POST /v1/clock` moves it when it is manual.
    pub clock: Clock,
    /// The rules in use and how their last reload went, for `/v1/status`.
    pub rules: RulesHandle,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The admin API's token (gate overrides); `None` disables it.
    pub admin_token: Option<AdminToken>,
    /// The variable it comes from, to say what to set when it is missing.
    pub admin_token_env: String,
    /// The `[hooks]` of the config and what they learned since start.
    pub hooks: Hooks,
    /// The loaded plugins, for the hooks that decode with one.
    pub plugins: Arc<HashMap<String, Plugin>>,
    /// This daemon's name among several sharing the database, if they do.
    pub holder: Option<String>,
    /// The console's sessions and settings (`/ui`).
    pub console: console::Console,
}

pub fn router(state: AppState) -> Router {
    // Reading needs a token when the daemon listens beyond loopback
    // (`console::read_guard`); the admin routes check the admin token.
    let reads = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/events/{id}", get(event_trail))
        .route("/v1/entities/{kind}/{id}/timers", get(entity_timers))
        .route("/v1/reports", get(reports))
        .route("/v1/gates", get(open_gates))
        .route("/v1/gates/{kind}/{id}", get(one_gate))
        .route("/v1/gates/{kind}/{id}/override", post(override_gate))
        .route("/v1/dlq", get(dlq::list))
        .route("/v1/dlq/{id}", get(dlq::show))
        .route("/v1/dlq/{id}/retry", post(dlq::retry))
        .route("/v1/dlq/{id}/drop", post(dlq::drop))
        .route("/v1/timers", get(timers::list))
        .route("/v1/timers/cancel", post(timers::cancel))
        .route("/v1/clock", get(clock_now).post(move_clock))
        .merge(console::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            console::read_guard,
        ));
    Router::new()
        .route(
            "/hooks/{source}",
            post(intake).get(intake).head(hook_exists),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(console::open_routes())
        .merge(reads)
        .with_state(state)
}

/// An error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn rejected(reason: RejectReason, metrics: &Metrics, message: impl Into<String>) -> ApiError {
        let message = message.into();
        metrics.rejected(reason, &message);
        let (status, code) = match reason {
            RejectReason::ContentType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_type",
            ),
            RejectReason::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            RejectReason::MalformedJson => (StatusCode::BAD_REQUEST, "malformed_json"),
            RejectReason::InvalidEvent => (StatusCode::BAD_REQUEST, "invalid_event"),
            RejectReason::BadSource => (StatusCode::NOT_FOUND, "unknown_hook"),
            RejectReason::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            RejectReason::Signature => (StatusCode::UNAUTHORIZED, "bad_signature"),
            RejectReason::DecoderFailed => (StatusCode::BAD_GATEWAY, "decoder_failed"),
            RejectReason::SlowRequest => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            RejectReason::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        };
        ApiError::new(status, code, message)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// Keeps a route's established code for "the admin API is disabled".
    fn with_disabled_code(mut self, code: &'static str) -> ApiError {
        if self.code == "admin_disabled" {
            self.code = code;
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody::new(self.code, self.message));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(
                header::ALLOW,
                header::HeaderValue::from_static("POST, HEAD"),
            );
        }
        if self.status == StatusCode::REQUEST_TIMEOUT || self.code == "busy" {
            // The rest of a stalled body is not worth waiting for.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

enum Mode {
    Single,
    Batch,
}

fn mode(headers: &HeaderMap) -> Option<Mode> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/cloudevents+json" => Some(Mode::Single),
        "application/cloudevents-batch+json" => Some(Mode::Batch),
        _ => None,
    }
}

/// The events of a CloudEvents body, single or batch by content type.
fn cloudevents(
    headers: &HeaderMap,
    body: &[u8],
    metrics: &Metrics,
) -> Result<Vec<Event>, ApiError> {
    let Some(mode) = mode(headers) else {
        return Err(ApiError::rejected(
            RejectReason::ContentType,
            metrics,
            "send CloudEvents in structured JSON mode: content-type application/cloudevents+json, or application/cloudevents-batch+json for a batch",
        ));
    };
    let parsed = match mode {
        Mode::Single => Event::from_json(body).map(|e| vec![e]),
        Mode::Batch => Event::batch_from_json(body),
    };
    parsed.map_err(|e| {
        let reason = match &e {
            EventError::Json(_) => RejectReason::MalformedJson,
            _ => RejectReason::InvalidEvent,
        };
        ApiError::rejected(reason, metrics, e.to_string())
    })
}

/// The events of a plain JSON body, by the hook's `json` templates
/// (`plain_json`). Only `application/json` (or a `+json` type other than
/// CloudEvents') is taken.
fn plain_json_events(
    hook: &str,
    mapping: &JsonMapping,
    headers: &HeaderMap,
    body: &[u8],
    metrics: &Metrics,
) -> Result<Vec<Event>, ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let json = essence == "application/json" || essence.ends_with("+json");
    if !json || mode(headers).is_some() {
        return Err(ApiError::rejected(
            RejectReason::ContentType,
            metrics,
            format!("hook `{hook}` maps plain JSON: send content-type application/json"),
        ));
    }
    mapping.events(body).map_err(|e| {
        let reason = match e {
            MappingError::NotJson(_) => RejectReason::MalformedJson,
            MappingError::Unmappable(_) => RejectReason::InvalidEvent,
        };
        ApiError::rejected(reason, metrics, format!("hook `{hook}`: {e}"))
    })
}

/// The events a connector plugin decodes from a tool's payload. A payload
/// the plugin does not understand is the sender's problem (400); a plugin
/// that fails or returns something that is not a CloudEvent is converge's
/// (502, so the sender retries later, or 503 when the plugin says so).
async fn decoded_events(
    state: &AppState,
    hook: &str,
    decode: &Decode,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<Vec<Event>, ApiError> {
    let metrics = &state.metrics;
    let plugin = state.plugins.get(&decode.plugin).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("plugin `{}` is not loaded", decode.plugin),
        )
    })?;
    let input = DecodeInput {
        hook: hook.to_string(),
        method: parts.method.as_str().to_string(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect(),
        body: body.to_vec(),
    };
    let decoded = plugin
        .decode(input, &decode.config_json)
        .await
        .map_err(|e| match e {
            CallFailure::InvalidInput(m) | CallFailure::Permanent(m) => ApiError::rejected(
                RejectReason::InvalidEvent,
                metrics,
                format!("{} cannot decode this payload: {m}", decode.plugin),
            ),
            CallFailure::Transient(_) | CallFailure::RateLimited(_) => ApiError::rejected(
                RejectReason::Unavailable,
                metrics,
                format!("{} cannot decode now: {e}", decode.plugin),
            ),
            other => ApiError::rejected(
                RejectReason::DecoderFailed,
                metrics,
                format!("{} failed: {other}", decode.plugin),
            ),
        })?;
    decoded
        .iter()
        .map(|json| {
            Event::from_json(json.as_bytes()).map_err(|e| {
                ApiError::rejected(
                    RejectReason::DecoderFailed,
                    metrics,
                    format!("{} made an event that is not valid: {e}", decode.plugin),
                )
            })
        })
        .collect()
}

/// `HEAD /hooks/{source}`: 200 when the hook takes requests. Trello checks
/// its callback URL this way before it creates a webhook.
async fn hook_exists(State(state): State<AppState>, Path(hook): Path<String>) -> StatusCode {
    if state.hooks.exists(&hook) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// The handshake secret an Asana hook keeps in the store, if any.
fn stored_hook_secret(state: &AppState, hook: &str) -> Option<String> {
    let key = hooks::secret_key(hook);
    tokio::task::block_in_place(|| {
        state
            .reader
            .lock()
            .expect("reader")
            .source_state(&key)
            .map_err(|e| tracing::error!(hook, error = %e, "cannot read the hook's secret"))
            .ok()
            .flatten()
    })
}

/// Asana's handshake, on a hook [`Hooks::check`] found without a secret:
/// converge keeps the secret (durably, before answering) and echoes it.
async fn asana_handshake_answer(
    state: &AppState,
    hook: &HookConfig,
    secret: &str,
) -> Result<Response, ApiError> {
    let echo = header::HeaderValue::from_str(secret).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_handshake",
            "X-Hook-Secret is not a valid header value",
        )
    })?;
    let permit = state
        .in_flight
        .clone()
        .acquire_many_owned(0)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        })?;
    let now_ms = state.clock.now_ms();
    let kept = SourceState {
        key: hooks::secret_key(&hook.name),
        value: secret.to_string(),
        updated_at_ms: now_ms,
    };
    state
        .journal
        .append_with_state(Vec::new(), vec![kept], permit)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the hook's secret was not kept: {e}"),
            )
        })?;
    state.hooks.learn(hook, secret.to_string());
    tracing::info!(hook = %hook.name, "Asana handshake: the hook's secret is kept");
    Ok((StatusCode::OK, [("x-hook-secret", echo)]).into_response())
}

/// `POST /hooks/{source}`: verify, validate, journal durably, then acknowledge.
/// A `GET` reaches only a hook with a decoder, verified like a `POST`: the
/// plugin says what it means (Mailchimp checks a new webhook's URL with
/// one, which journals nothing).
async fn intake(
    State(state): State<AppState>,
    Path(hook): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let metrics = &state.metrics;
    let listed = state.hooks.listed.get(&hook);
    if listed.is_none() && !state.hooks.exists(&hook) {
        let message = if valid_hook_name(&hook) {
            format!(
                "no hook `{hook}`: hooks not listed under [hooks] are refused (server.unlisted_hooks = \"reject\")"
            )
        } else {
            "a hook name is 1 to 64 letters, digits, '-' or '_'".to_string()
        };
        return Err(ApiError::rejected(
            RejectReason::BadSource,
            metrics,
            message,
        ));
    }
    if request.method() == Method::GET && listed.is_none_or(|hook| hook.decode.is_none()) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("hook `{hook}` takes POST"),
        ));
    }
    let (parts, body) = request.into_parts();
    let limit = state.max_body_bytes;
    let body = to_bytes(body, limit).await.map_err(|e| {
        if serve::timed_out(&e) {
            return ApiError::rejected(RejectReason::SlowRequest, metrics, e.to_string());
        }
        if serve::over_budget(&e) {
            return ApiError::rejected(RejectReason::Busy, metrics, e.to_string());
        }
        ApiError::rejected(
            RejectReason::TooLarge,
            metrics,
            format!("the body is over the limit of {limit} bytes (server.max_body_bytes)"),
        )
    })?;
    if let Some(listed) = listed {
        let inbound = Inbound {
            method: parts.method.as_str(),
            headers: &parts.headers,
            query: parts.uri.query().unwrap_or_default(),
            body: &body,
        };
        let stored = || stored_hook_secret(&state, &listed.name);
        let checked = state
            .hooks
            .check(listed, &inbound, chrono::Utc::now().timestamp(), stored)
            .map_err(|e| ApiError::rejected(RejectReason::Signature, metrics, e.to_string()))?;
        match checked {
            Checked::Events => {}
            Checked::AsanaHandshake(secret) => {
                return asana_handshake_answer(&state, listed, secret).await;
            }
            Checked::SlackChallenge(challenge) => {
                return Ok(Json(json!({ "challenge": challenge })).into_response());
            }
        }
    }
    let events = match listed {
        Some(HookConfig {
            decode: Some(decode),
            ..
        }) => decoded_events(&state, &hook, decode, &parts, &body).await?,
        Some(HookConfig {
            json: Some(mapping),
            ..
        }) => plain_json_events(&hook, mapping, &parts.headers, &body, metrics)?,
        _ => cloudevents(&parts.headers, &body, metrics)?,
    };
    let ids: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.source.clone(), e.id.clone()))
        .collect();
    let span = match ids.as_slice() {
        // Ids and sources come from outside: escaped, so a line break in
        // one cannot forge a log line.
        [(_, id)] => {
            tracing::info_span!("intake", hook = %hook.escape_debug(), event_id = %id.escape_debug())
        }
        _ => tracing::info_span!("intake", hook = %hook.escape_debug(), events = ids.len()),
    };
    // The sender's trace: its `traceparent` header (W3C, and CloudEvents'
    // binary mode), else the one event's own extension.
    let sender = parts
        .headers
        .get(TRACEPARENT_EXTENSION)
        .and_then(|v| v.to_str().ok())
        .or(match events.as_slice() {
            [event] => event.traceparent.as_deref(),
            _ => None,
        });
    crate::otel::continue_trace(&span, sender);
    // The hook is part of each event's identity (docs/webhooks.md); the
    // intake's trace context goes with the events that have none.
    let context = crate::otel::traceparent(&span);
    let events: Vec<Event> = events
        .into_iter()
        .map(|e| e.arrived_on(&hook, context.clone()))
        .collect();
    if let Some(event) = events
        .iter()
        .find(|e| converge_model::sources::is_reserved(&e.source))
    {
        return Err(ApiError::rejected(
            RejectReason::InvalidEvent,
            metrics,
            format!(
                "source `{}` is reserved for events converge journals itself",
                event.source
            ),
        ));
    }
    if events.is_empty() {
        return Ok((StatusCode::OK, Json(json!({"events": []}))).into_response());
    }
    let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
    let permit = tokio::time::timeout(
        BACKPRESSURE_WAIT,
        state.in_flight.clone().acquire_many_owned(count),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(|| {
        ApiError::rejected(
            RejectReason::Unavailable,
            metrics,
            "too many events are waiting for the rules; try again shortly",
        )
    })?;
    let appended = state
        .journal
        .append(events, permit)
        .instrument(span.clone())
        .await
        .map_err(|e| {
            ApiError::rejected(
                RejectReason::Unavailable,
                metrics,
                format!("not journaled: {e}"),
            )
        })?;
    metrics.ack_latency.observe(arrived.elapsed().as_secs_f64());
    let new = appended
        .iter()
        .filter(|a| matches!(a, Appended::New { .. }))
        .count();
    metrics.sources.seen(&format!("hook/{hook}"), new);
    let events: Vec<_> = ids
        .iter()
        .zip(appended)
        .map(|((source, id), outcome)| {
            let (status, seq) = match outcome {
                Appended::New { seq } => ("accepted", seq),
                Appended::Duplicate { seq } => ("duplicate", seq),
            };
            span.in_scope(
                || tracing::debug!(event_id = %id.escape_debug(), source = %source.escape_debug(), status, seq, "event acknowledged"),
            );
            Acknowledged {
                id,
                seq,
                source,
                status,
            }
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(Acknowledgements { events })).into_response())
}

/// The answer to events posted to a hook: `{"events": [..]}`, each event's
/// members in the order `json!` wrote them (a map's, by name), written
/// straight from the ids rather than through a `serde_json::Value` per
/// event.
#[derive(serde::Serialize)]
struct Acknowledgements<'a> {
    events: Vec<Acknowledged<'a>>,
}

#[derive(serde::Serialize)]
struct Acknowledged<'a> {
    id: &'a str,
    seq: i64,
    source: &'a str,
    /// `accepted`, or `duplicate` for an event journaled before.
    status: &'static str,
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .set_queue_depth("journal", state.journal.queue_depth());
    if state.metrics.headline_due() {
        let (reader, now) = (state.reader.clone(), state.clock.now());
        let read = tokio::task::spawn_blocking(move || {
            report::headline(&**reader.lock().expect("reader"), now)
        })
        .await;
        match read {
            Ok(Ok(headline)) => {
                let metrics = &state.metrics;
                metrics.items_blocked.set(headline.items_blocked);
                metrics.escalations_open.set(headline.escalations_open);
                metrics.exception_rate.set(headline.exception_rate);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the report gauges"),
            Err(e) => tracing::warn!(error = %e, "cannot read the report gauges"),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Body::from(state.metrics.render()),
    )
        .into_response()
}

/// How many pending timers, the soonest due, the status and the console
/// count by the rule version that made them: a bound on their read.
pub(crate) const TIMERS_COUNTED: usize = 10_000;

/// `GET /v1/status`: version, uptime, the rules in use, the last reload and
/// its error, and where the journal, the outbox and the timers stand.
async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let reader = state.reader.clone();
    let holder = state.holder.clone();
    let store = tokio::task::spawn_blocking(move || {
        let reader = reader.lock().expect("reader");
        let counts = reader.counts()?;
        // Sharing the database: the live daemons and how many partitions each holds.
        let cluster = match holder {
            Some(holder) => {
                let daemons = crate::cluster::members(&**reader)?
                    .into_iter()
                    .map(|member| ClusterDaemon {
                        daemon: member.holder,
                        partitions: member.partitions,
                        duties: member.duties.iter().map(wire_duty).collect(),
                    })
                    .collect();
                Some(Cluster {
                    daemon: holder,
                    daemons,
                })
            }
            None => None,
        };
        Ok::<_, converge_store::StoreError>((
            JournalPosition {
                head: reader.journal_head()?,
                processed: reader.processed_cursor()?,
            },
            counts,
            reader.pending_timer_count()?,
            reader.pending_timers_by_rule(TIMERS_COUNTED)?,
            cluster,
        ))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    // The database cannot be read (a PostgreSQL server down): 503, as
    // intake answers meanwhile, with the reason.
    .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage", e.to_string()))?;
    let (journal, counts, timers_pending, rule_timers, cluster) = store;
    let (rules, history) = state.rules.current_with_history();
    let stale_timers = rules
        .stale_timers(&rule_timers)
        .map(|(t, rule_gone)| StaleTimers {
            rule: t.rule.clone(),
            version: t.rule_hash.clone(),
            pending: t.pending,
            rule_gone,
        })
        .collect();
    let describe = |shadow: bool| {
        move |(position, rule): (usize, &converge_rules::Rule)| RuleInUse {
            name: rule.name.clone(),
            file: rule.path.display().to_string(),
            hash: rule.hash.clone(),
            order: rule.order,
            position: position as u64 + 1,
            events: rule.events.clone(),
            shadow,
        }
    };
    let listed = rules
        .live
        .rules()
        .iter()
        .enumerate()
        .map(describe(false))
        .chain(rules.shadow.rules().iter().enumerate().map(describe(true)))
        .collect();
    let now = chrono::Utc::now();
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: state.started_at.into(),
        uptime_seconds: (now - state.started_at).num_seconds(),
        clock: state.clock.now().into(),
        rules: listed,
        rules_loaded_at: rules.loaded_at.into(),
        last_reload: history.last.map(|(at, ok)| Reload {
            at: at.into(),
            outcome: if ok {
                ReloadOutcome::Ok
            } else {
                ReloadOutcome::Failed
            },
        }),
        last_reload_error: history.error.map(|(at, errors)| ReloadError {
            at: at.into(),
            errors,
        }),
        journal,
        actions_pending: counts.actions_pending,
        dead_letters: counts.dead_letters,
        timers_pending,
        stale_timers,
        storage: storage_status(state.journal.health()),
        cluster,
    })
    .into_response())
}

/// A duty as `/v1/status` names it.
pub(crate) fn wire_duty(duty: &crate::cluster::Duty) -> converge_api::status::Duty {
    use crate::cluster::Duty;
    use converge_api::status::Duty as Wire;
    match duty {
        Duty::FileDrop(name) => Wire::FileDrop(name.clone()),
        Duty::Poll(name) => Wire::Poll(name.clone()),
        Duty::Retention => Wire::Retention,
    }
}

/// Storage as `/v1/status` shows it.
fn storage_status(health: &crate::health::StorageHealth) -> converge_api::status::Storage {
    use converge_api::status::{Storage, StorageState};
    match health.failure() {
        None => Storage {
            state: StorageState::Ok,
            since: None,
            error: None,
        },
        Some(failure) => Storage {
            state: StorageState::Failing,
            since: Some(failure.since.into()),
            error: Some(failure.error),
        },
    }
}

/// `GET /v1/events/{id}`: what converge did with an event: its decisions, their
/// actions and outcomes, and the rules that failed on it.
async fn event_trail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let reader = state.reader.clone();
    let trails =
        tokio::task::spawn_blocking(move || reader.lock().expect("reader").find_event_trail(&id))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
            })?;
    if trails.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "event_not_found",
            "no event with this id was journaled",
        ));
    }
    Ok(Json(json!({"events": trails})).into_response())
}

#[derive(Deserialize)]
struct ReportQuery {
    metric: Option<String>,
    by: Option<String>,
    since: Option<String>,
    until: Option<String>,
    format: Option<String>,
}

/// `GET /v1/reports`: `converge report` over HTTP, with the same parameters
/// (`metric`, `by`, `since`, `until`; `format=json` by default, or `csv`),
/// on the daemon's clock.
async fn reports(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let invalid =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_report", message);
    let format = match query.format.as_deref().unwrap_or("json") {
        "table" => return Err(invalid("a report over HTTP is json or csv".into())),
        other => other.parse::<report::Format>().map_err(invalid)?,
    };
    let request = report::ReportRequest::parse(
        query.metric.as_deref(),
        query.by.as_deref(),
        query.since.as_deref(),
        query.until.as_deref(),
        now,
    )
    .map_err(invalid)?;
    let reader = state.reader.clone();
    let report = tokio::task::spawn_blocking(move || {
        report::compute(&**reader.lock().expect("reader"), &request)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    let content_type = match format {
        report::Format::Csv => "text/csv; charset=utf-8",
        _ => "application/json",
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        report.render(format),
    )
        .into_response())
}

/// `GET /v1/entities/{kind}/{id}/timers`: the entity's timers, newest first
/// (at most [`TIMERS_LISTED`], and `more` when it has others);
/// `?pending=true` for the waiting ones only.
async fn entity_timers(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<TimersQuery>,
) -> Result<Response, ApiError> {
    let Some(key) = EntityKey::parse(&format!("{kind}/{id}")) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_entity",
            "an entity is <kind>/<id>, with a lowercase kind",
        ));
    };
    let reader = state.reader.clone();
    let mut timers = tokio::task::spawn_blocking(move || {
        reader
            .lock()
            .expect("reader")
            .entity_timers(&key, query.pending, TIMERS_LISTED + 1)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    let more = timers.len() > TIMERS_LISTED;
    timers.truncate(TIMERS_LISTED);
    Ok(Json(json!({"timers": timers, "more": more})).into_response())
}

/// Most held sends and overrides one gate lists.
const GATE_HISTORY: usize = 200;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
}

fn entity_key(kind: &str, id: &str) -> Result<EntityKey, ApiError> {
    EntityKey::parse(&format!("{kind}/{id}")).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_entity",
            "an entity is <kind>/<id>, with a lowercase kind",
        )
    })
}

/// `GET /v1/gates`: every open gate (a campaign with held sends), oldest
/// held first.
async fn open_gates(State(state): State<AppState>) -> Result<Response, ApiError> {
    let reader = state.reader.clone();
    let gates = tokio::task::spawn_blocking(move || {
        let reader = reader.lock().expect("reader");
        let held = reader.open_held_sends()?;
        let mut campaigns: Vec<String> = Vec::new();
        for h in &held {
            if !campaigns.contains(&h.campaign) {
                campaigns.push(h.campaign.clone());
            }
        }
        campaigns
            .iter()
            .map(|campaign| {
                let entity = EntityKey::parse(campaign)
                    .map(|key| reader.entity(&key))
                    .transpose()?
                    .flatten();
                let sends: Vec<_> = held
                    .iter()
                    .filter(|h| &h.campaign == campaign)
                    .cloned()
                    .collect();
                let overrides = reader.gate_overrides(campaign, GATE_HISTORY)?;
                let next = next_timer(&**reader, campaign)?;
                Ok(gate_view(
                    campaign,
                    entity.as_ref(),
                    &sends,
                    &overrides,
                    next,
                ))
            })
            .collect::<Result<Vec<_>, converge_store::StoreError>>()
    })
    .await
    .map_err(internal)?
    .map_err(storage)?;
    Ok(Json(Gates { gates }).into_response())
}

/// `GET /v1/gates/{kind}/{id}`: one campaign's gate, open or not, with its
/// history: held and released sends, and overrides.
async fn one_gate(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = entity_key(&kind, &id)?;
    let campaign = format!("{kind}/{id}");
    let reader = state.reader.clone();
    let of = campaign.clone();
    let (entity, gate, next) = tokio::task::spawn_blocking(move || {
        let reader = reader.lock().expect("reader");
        Ok::<_, converge_store::StoreError>((
            reader.entity(&key)?,
            reader.gate(&key, GATE_HISTORY)?,
            next_timer(&**reader, &of)?,
        ))
    })
    .await
    .map_err(internal)?
    .map_err(storage)?;
    Ok(Json(gate_view(
        &campaign,
        entity.as_ref(),
        &gate.held_sends,
        &gate.overrides,
        next,
    ))
    .into_response())
}

/// A campaign's soonest pending timer, for its gate.
fn next_timer(
    reader: &dyn converge_store::Backend,
    campaign: &str,
) -> Result<Option<converge_api::timers::PendingTimer>, converge_store::StoreError> {
    let Some(key) = EntityKey::parse(campaign) else {
        return Ok(None);
    };
    Ok(reader
        .soonest_pending_timer(&key)?
        .as_ref()
        .map(timers::pending))
}

/// Whether the request carries the admin token.
fn authorized(headers: &HeaderMap, token: &AdminToken) -> bool {
    bearer(headers).is_some_and(|given| token_matches(given, token))
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether `given` is `token`: both hashed first, so the comparison takes
/// the same time whatever the lengths, and compared in constant time.
pub(crate) fn token_matches(given: &str, token: &AdminToken) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let given = Sha256::digest(given.trim().as_bytes());
    let expected = Sha256::digest(token.0.as_bytes());
    given.ct_eq(&expected).into()
}

/// The admin API acts only with the token: 503 when the daemon has none
/// (`what` says what is disabled), 401 when the request does not carry it.
fn require_admin(state: &AppState, headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            format!(
                "{what} are disabled: set {} in the daemon's environment (server.admin_token_env) and restart it",
                state.admin_token_env
            ),
        ));
    };
    if !authorized(headers, token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin token as `Authorization: Bearer <token>`",
        ));
    }
    Ok(())
}

/// `POST /v1/gates/{kind}/{id}/override` with `{"by", "reason", "channel"?}`
/// and `Authorization: Bearer <admin token>`: journals a `gate.override`
/// event (source `converge/admin`), whose processing releases the
/// campaign's held sends (of `channel`, or all) and records who and why.
/// 202 once journaled.
async fn override_gate(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers, "overrides")
        .map_err(|e| e.with_disabled_code("overrides_disabled"))?;
    let key = entity_key(&kind, &id)?;
    let request: Override = serde_json::from_slice(&body)
        .map_err(|e| e.to_string())
        .and_then(Override::validate)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_override",
                format!("expected {{\"by\": \"<who>\", \"reason\": \"<why>\", \"channel\": \"<optional>\"}}: {e}"),
            )
        })?;
    let accepted = journal_override(&state, &key, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// Journals a person's override of `key`'s gate (the `/v1` API's and the
/// console's): 409 when nothing is held, 503 when the journal is full.
/// Answers what `POST /v1/gates/{kind}/{id}/override` answers.
pub(crate) async fn journal_override(
    state: &AppState,
    key: &EntityKey,
    request: Override,
) -> Result<OverrideAccepted, ApiError> {
    let campaign = key.to_string();
    let reader = state.reader.clone();
    let (lookup, channel) = (campaign.clone(), request.channel.clone());
    let held = tokio::task::spawn_blocking(move || {
        reader
            .lock()
            .expect("reader")
            .open_held_sends()
            .map(|held| {
                held.iter()
                    .filter(|h| h.campaign == lookup)
                    .filter(|h| channel.as_ref().is_none_or(|c| &h.channel == c))
                    .count()
            })
    })
    .await
    .map_err(internal)?
    .map_err(storage)?;
    if held == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "nothing_held",
            match &request.channel {
                Some(channel) => format!("{campaign} has no send held on {channel}"),
                None => format!("{campaign} has no held send"),
            },
        ));
    }
    let now = state.clock.now();
    let id = format!(
        "override-{}-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        std::process::id()
    );
    let event = request
        .event(id.clone(), &campaign, now)
        .map_err(internal)?;
    let permit = tokio::time::timeout(BACKPRESSURE_WAIT, state.in_flight.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "too many events are waiting for the rules; try again shortly",
            )
        })?;
    let appended = state
        .journal
        .append(vec![event], permit)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("not journaled: {e}"),
            )
        })?;
    let seq = appended.first().map(|a| a.seq());
    tracing::info!(campaign = %campaign, by = %request.by.escape_debug(), event_id = %id, "gate override journaled");
    Ok(OverrideAccepted {
        campaign,
        channel: request.channel,
        held: held as u64,
        event: JournaledEvent { id, seq },
    })
}

#[derive(Deserialize)]
struct TimersQuery {
    #[serde(default)]
    pending: bool,
}

fn clock_body(clock: &Clock) -> Response {
    Json(ClockNow {
        now: clock.now().into(),
        mode: if clock.as_manual().is_some() {
            ClockMode::Manual
        } else {
            ClockMode::System
        },
    })
    .into_response()
}

/// `GET /v1/clock`: the daemon's time.
async fn clock_now(State(state): State<AppState>) -> Response {
    clock_body(&state.clock)
}

/// `POST /v1/clock`: moves a manual clock forward (a testing aid); 404 when
/// the daemon runs on the system clock. Due timers fire right after, so a
/// move journals events and runs actions: it needs the admin token.
async fn move_clock(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(manual) = state.clock.as_manual() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "clock_not_manual",
            "the clock can be moved only when clock.mode is \"manual\"",
        ));
    };
    require_admin(&state, &headers, "clock moves")?;
    let bad =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_clock_move", message);
    let request: ClockMove = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected {{\"advance\": \"48h\"}} or {{\"set\": \"<RFC 3339 time>\"}}: {e}"
        ))
    })?;
    let clock_error = |e: ClockError| match e {
        ClockError::Backwards { .. } => {
            ApiError::new(StatusCode::CONFLICT, "clock_backwards", e.to_string())
        }
        ClockError::OutOfRange => bad(e.to_string()),
    };
    let to = match request {
        ClockMove::Advance(text) => {
            let by = humantime::parse_duration(&text)
                .map_err(|e| bad(format!("`{text}` is not a duration like \"48h\": {e}")))?;
            manual.after(by).map_err(clock_error)?
        }
        ClockMove::Set(text) => chrono::DateTime::parse_from_rfc3339(&text)
            .map_err(|e| bad(format!("`{text}` is not an RFC 3339 time: {e}")))?
            .with_timezone(&chrono::Utc),
    };
    if to < manual.now() {
        return Err(clock_error(ClockError::Backwards {
            now: manual.now().to_rfc3339(),
            to: to.to_rfc3339(),
        }));
    }
    // Kept before it moves, so a restart continues from where it stood.
    keep_manual_clock(&state, to).await?;
    let now = manual.set(to).map_err(clock_error)?;
    tracing::info!(now = %now, "manual clock moved");
    Ok(clock_body(&state.clock))
}

/// Keeps where the manual clock moves to (`source_state`), durably.
async fn keep_manual_clock(
    state: &AppState,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<(), ApiError> {
    let unavailable =
        |message: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    let permit = state
        .in_flight
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| unavailable("the daemon is stopping".into()))?;
    let kept = SourceState {
        key: crate::clock::MANUAL_CLOCK_KEY.into(),
        value: to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        updated_at_ms: to.timestamp_millis(),
    };
    state
        .journal
        .append_with_state(Vec::new(), vec![kept], permit)
        .await
        .map(drop)
        .map_err(|e| unavailable(format!("the clock was not moved: {e}")))
}
