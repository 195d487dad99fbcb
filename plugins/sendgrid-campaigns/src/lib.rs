//! The `sendgrid-campaigns` action plugin: schedules and cancels Twilio
//! SendGrid Marketing Campaigns single sends (v3 API).
//!
//! | operation | call | default for |
//! |---|---|---|
//! | `schedule` | `PUT /v3/marketing/singlesends/{id}/schedule` `{"send_at"}` | `release_send` |
//! | `cancel` | `DELETE /v3/marketing/singlesends/{id}/schedule` | `hold_send`, `pause_channel` |
//!
//! `send_at` is the event's `data.send_at` (another member with the config's
//! `send_at`), as `YYYY-MM-DDTHH:MM:SSZ`; an event without one sends `now`,
//! as does `send_now = true`. Which single send: `single_send_id`, else the
//! campaign's entry in `single_sends`.
//!
//! SendGrid takes no idempotency key on these calls. Scheduling sets the
//! time (the same time twice is one schedule) and cancelling a cancelled
//! schedule leaves a draft; a call SendGrid refuses is checked against the
//! single send's status (`GET /v3/marketing/singlesends/{id}`), and a status
//! showing the call already took effect (`scheduled` at that time,
//! `triggered` for a send now, `draft` for a cancel) is success.
//!
//! Rate limits: a 429 waits until `X-RateLimit-Reset` (measured against the
//! response's `Date`, so no clock is needed), else its `Retry-After`.

use std::collections::BTreeMap;

use channel_target::Ids;
use converge_plugin_sdk::http::{self, HttpError, Method, Request, Response};
use converge_plugin_sdk::{Action, ActionOutcome, ActionPlugin, PluginError, PluginInfo};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_base_url")]
    base_url: String,
    #[serde(default = "default_credential")]
    credential: String,
    #[serde(default)]
    action: Option<Operation>,
    #[serde(default)]
    single_send_id: Option<Ids>,
    #[serde(default)]
    single_sends: BTreeMap<String, Ids>,
    #[serde(default = "default_send_at")]
    send_at: String,
    #[serde(default)]
    send_now: bool,
    /// A subuser's name, sent as `on-behalf-of` from a parent account.
    #[serde(default)]
    on_behalf_of: Option<String>,
}

fn default_base_url() -> String {
    "https://api.sendgrid.com".to_owned()
}

fn default_credential() -> String {
    "sendgrid".to_owned()
}

fn default_send_at() -> String {
    channel_target::DEFAULT_SEND_AT.to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Operation {
    Schedule,
    Cancel,
}

impl Operation {
    fn for_action(configured: Option<Operation>, kind: &str) -> Result<Operation, PluginError> {
        if let Some(operation) = configured {
            return Ok(operation);
        }
        match kind {
            "release_send" => Ok(Operation::Schedule),
            "hold_send" | "pause_channel" => Ok(Operation::Cancel),
            _ => Err(PluginError::InvalidInput(format!(
                "plugin config: action: required for `{kind}` decisions (schedule or cancel)"
            ))),
        }
    }
}

/// When a schedule sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendAt {
    Now,
    At(i64),
}

impl SendAt {
    fn text(self) -> String {
        match self {
            SendAt::Now => "now".to_owned(),
            SendAt::At(at) => channel_target::format_utc(at),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Call {
    operation: Operation,
    id: String,
    send_at: Option<SendAt>,
}

fn calls(config: &Config, action: &Action) -> Result<Vec<Call>, PluginError> {
    let operation = Operation::for_action(config.action, &action.kind)?;
    let ids = channel_target::targets(
        action,
        config.single_send_id.as_ref(),
        &config.single_sends,
        "single_sends",
    )?;
    let send_at = match operation {
        Operation::Cancel => None,
        Operation::Schedule if config.send_now => Some(SendAt::Now),
        Operation::Schedule => {
            let present = action.event()?.pointer(&config.send_at).is_some();
            Some(if present {
                SendAt::At(channel_target::send_at(action, &config.send_at)?)
            } else {
                SendAt::Now
            })
        }
    };
    Ok(ids
        .into_iter()
        .map(|id| Call {
            operation,
            id,
            send_at,
        })
        .collect())
}

fn single_send_url(config: &Config, id: &str) -> String {
    format!(
        "{}/v3/marketing/singlesends/{}",
        config.base_url.trim_end_matches('/'),
        http::percent_encode(id)
    )
}

fn with_subuser(config: &Config, mut request: Request) -> Request {
    if let Some(subuser) = &config.on_behalf_of {
        request
            .headers
            .push(("on-behalf-of".to_owned(), subuser.clone()));
    }
    request
}

fn request(config: &Config, call: &Call) -> Request {
    let url = format!("{}/schedule", single_send_url(config, &call.id));
    let request = match call.send_at {
        Some(send_at) => http::json_request(
            Method::Put,
            &url,
            &json!({"send_at": send_at.text()}),
            Some(&config.credential),
            &[("accept", "application/json")],
        ),
        None => Request {
            method: Method::Delete,
            url,
            headers: vec![("accept".to_owned(), "application/json".to_owned())],
            body: None,
            credential: Some(config.credential.clone()),
        },
    };
    with_subuser(config, request)
}

fn status_request(config: &Config, call: &Call) -> Request {
    with_subuser(
        config,
        http::get_request(&single_send_url(config, &call.id), Some(&config.credential)),
    )
}

/// SendGrid's error document: `{"errors": [{"field", "message"}]}`.
#[derive(Debug, Deserialize)]
struct Errors {
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    message: String,
}

/// A non-2xx answer as the error whose retry policy fits it.
fn error(response: &Response) -> PluginError {
    if response.status == 429 {
        let reset = channel_target::wait_until_reset_ms(
            response.header("x-ratelimit-reset"),
            response.header("date"),
        );
        return PluginError::RateLimited(reset.or_else(|| {
            response
                .header("retry-after")
                .and_then(http::retry_after_ms)
        }));
    }
    let Ok(errors) = serde_json::from_slice::<Errors>(&response.body) else {
        return response.error();
    };
    let messages: Vec<String> = errors
        .errors
        .iter()
        .map(|e| match &e.field {
            Some(field) if !field.is_empty() => format!("{field}: {}", e.message),
            _ => e.message.clone(),
        })
        .collect();
    let message = format!(
        "sendgrid: HTTP {}: {}",
        response.status,
        messages.join("; ")
    );
    match response.error() {
        PluginError::Unauthorized(_) => PluginError::Unauthorized(message),
        PluginError::Transient(_) => PluginError::Transient(message),
        _ => PluginError::Permanent(message),
    }
}

#[derive(Debug, Deserialize)]
struct State {
    status: String,
    #[serde(default)]
    send_at: Option<String>,
}

fn already(call: &Call, state: &State) -> bool {
    match call.send_at {
        None => state.status == "draft",
        Some(SendAt::Now) => state.status == "triggered",
        Some(SendAt::At(at)) => {
            matches!(state.status.as_str(), "scheduled" | "triggered")
                && state
                    .send_at
                    .as_deref()
                    .and_then(channel_target::parse_rfc3339)
                    == Some(at)
        }
    }
}

type Send<'a> = dyn FnMut(&Request) -> Result<Response, HttpError> + 'a;

fn perform_call(config: &Config, call: &Call, send: &mut Send) -> Result<bool, PluginError> {
    let response = send(&request(config, call))?;
    if response.is_success() {
        return Ok(false);
    }
    let refused = error(&response);
    if !matches!(refused, PluginError::Permanent(_)) || response.status == 404 {
        return Err(refused);
    }
    let state = send(&status_request(config, call))?;
    if !state.is_success() {
        return Err(refused);
    }
    let state: State = state.json()?;
    if already(call, &state) {
        return Ok(true);
    }
    Err(match refused {
        PluginError::Permanent(message) => PluginError::Permanent(format!(
            "{message} (single send {} is `{}`)",
            call.id, state.status
        )),
        other => other,
    })
}

fn perform(
    config: &Config,
    action: &Action,
    send: &mut Send,
) -> Result<ActionOutcome, PluginError> {
    let calls = calls(config, action)?;
    let mut parts = Vec::new();
    for call in &calls {
        let repeated = perform_call(config, call, send)?;
        let mut part = match call.send_at {
            Some(send_at) => format!("scheduled single send {} for {}", call.id, send_at.text()),
            None => format!("cancelled the schedule of single send {}", call.id),
        };
        if repeated {
            part.push_str(" (already)");
        }
        parts.push(part);
    }
    let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    Ok(
        ActionOutcome::new(format!("sendgrid: {}", parts.join("; ")))
            .with_external_id(ids.join(",")),
    )
}

struct SendgridCampaigns;

impl ActionPlugin for SendgridCampaigns {
    fn describe() -> PluginInfo {
        converge_plugin_sdk::plugin_info!()
    }

    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        let config: Config = converge_plugin_sdk::config()?;
        perform(&config, &action, &mut |request| http::send(request))
    }
}

converge_plugin_sdk::export_action_plugin!(SendgridCampaigns);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const ID: &str = "27c21bd1-d1bc-11ea-8f22-9ea2f5b0bd05";

    fn config(extra: Value) -> Config {
        let mut json = json!({"single_sends": {"fall-26": ID}});
        for (k, v) in extra.as_object().unwrap() {
            json[k] = v.clone();
        }
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn action(kind: &str, data: Value) -> Action {
        Action {
            id: "converge-0123456789abcdef-send-3-77aa".into(),
            kind: kind.into(),
            rule: "gate".into(),
            decision_json: json!({"kind": kind, "channel": "email", "reason": "r"}).to_string(),
            event_json: json!({"id": "s-1", "subject": "campaign/fall-26", "data": data})
                .to_string(),
            entity_json: "null".into(),
        }
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn scripted(answers: Vec<Response>) -> impl FnMut(&Request) -> Result<Response, HttpError> {
        let mut answers = answers.into_iter();
        move |_: &Request| Ok(answers.next().expect("an answer for every request"))
    }

    #[test]
    fn a_release_schedules_at_the_events_time_or_now() {
        let config = config(json!({"on_behalf_of": "emea"}));
        let at = calls(
            &config,
            &action(
                "release_send",
                json!({"send_at": "2026-11-23T10:07:30+00:00"}),
            ),
        )
        .unwrap();
        let request = request(&config, &at[0]);
        assert_eq!(request.method, Method::Put);
        assert_eq!(
            request.url,
            format!("https://api.sendgrid.com/v3/marketing/singlesends/{ID}/schedule")
        );
        assert_eq!(request.credential.as_deref(), Some("sendgrid"));
        assert!(
            request
                .headers
                .contains(&("on-behalf-of".to_owned(), "emea".to_owned()))
        );
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"send_at": "2026-11-23T10:07:30Z"}));

        let now = calls(&config, &action("release_send", json!({}))).unwrap();
        let body: Value =
            serde_json::from_slice(super::request(&config, &now[0]).body.as_deref().unwrap())
                .unwrap();
        assert_eq!(body, json!({"send_at": "now"}));
        let forced = self::config(json!({"send_now": true}));
        let now = calls(
            &forced,
            &action("release_send", json!({"send_at": "2026-11-23T10:07:30Z"})),
        )
        .unwrap();
        assert_eq!(now[0].send_at, Some(SendAt::Now));
        assert!(matches!(
            calls(&config, &action("release_send", json!({"send_at": "tomorrow"}))),
            Err(PluginError::InvalidInput(m)) if m.contains("not an RFC 3339 time")
        ));
    }

    #[test]
    fn a_hold_or_a_pause_deletes_the_schedule() {
        let config = config(json!({}));
        for kind in ["hold_send", "pause_channel"] {
            let call = calls(&config, &action(kind, json!({}))).unwrap();
            let request = request(&config, &call[0]);
            assert_eq!(request.method, Method::Delete);
            assert!(request.url.ends_with("/schedule"));
            assert_eq!(request.body, None);
        }
        assert!(matches!(
            Operation::for_action(None, "resume_channel"),
            Err(PluginError::InvalidInput(m)) if m.contains("action: required")
        ));
    }

    #[test]
    fn a_201_is_done() {
        let config = config(json!({}));
        let mut send = scripted(vec![response(
            201,
            &[],
            r#"{"send_at":"2026-11-23T10:07:30Z","status":"scheduled"}"#,
        )]);
        let outcome = perform(
            &config,
            &action("release_send", json!({"send_at": "2026-11-23T10:07:30Z"})),
            &mut send,
        )
        .unwrap();
        assert_eq!(
            outcome.summary,
            format!("sendgrid: scheduled single send {ID} for 2026-11-23T10:07:30Z")
        );
        assert_eq!(outcome.external_id.as_deref(), Some(ID));
    }

    #[test]
    fn a_refused_repeat_is_checked_against_the_status() {
        let config = config(json!({}));
        let refused = r#"{"errors":[{"field":"send_at","message":"cannot schedule a single send that has already been triggered"}]}"#;
        let mut send = scripted(vec![
            response(400, &[], refused),
            response(
                200,
                &[],
                r#"{"id":"x","status":"triggered","send_at":"2026-11-23T10:00:00Z"}"#,
            ),
        ]);
        let outcome = perform(&config, &action("release_send", json!({})), &mut send).unwrap();
        assert_eq!(
            outcome.summary,
            format!("sendgrid: scheduled single send {ID} for now (already)")
        );
        let mut send = scripted(vec![
            response(
                400,
                &[],
                r#"{"errors":[{"field":null,"message":"single send has already been triggered"}]}"#,
            ),
            response(200, &[], r#"{"id":"x","status":"triggered"}"#),
        ]);
        assert_eq!(
            perform(&config, &action("hold_send", json!({})), &mut send),
            Err(PluginError::Permanent(format!(
                "sendgrid: HTTP 400: single send has already been triggered (single send {ID} is `triggered`)"
            )))
        );
    }

    #[test]
    fn errors_map_to_their_retry_policy() {
        assert_eq!(
            error(&response(
                429,
                &[
                    ("X-RateLimit-Reset", "1795428012"),
                    ("Date", "Mon, 23 Nov 2026 10:00:00 GMT")
                ],
                r#"{"errors":[{"field":null,"message":"too many requests"}]}"#
            )),
            PluginError::RateLimited(Some(12_000))
        );
        assert_eq!(
            error(&response(429, &[("retry-after", "4")], "")),
            PluginError::RateLimited(Some(4000))
        );
        assert_eq!(
            error(&response(
                401,
                &[],
                r#"{"errors":[{"field":null,"message":"authorization required"}]}"#
            )),
            PluginError::Unauthorized("sendgrid: HTTP 401: authorization required".into())
        );
        assert_eq!(
            error(&response(
                404,
                &[],
                r#"{"errors":[{"field":"id","message":"Single Send not found"}]}"#
            )),
            PluginError::Permanent("sendgrid: HTTP 404: id: Single Send not found".into())
        );
        assert!(matches!(
            error(&response(502, &[], "bad gateway")),
            PluginError::Transient(_)
        ));
    }
}
