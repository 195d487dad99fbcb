//! The `meta-ads` action plugin: sets the status of Meta (Facebook and
//! Instagram) ad campaigns and ad sets through the Marketing API, a
//! `POST /{version}/{id}` with `{"status": "PAUSED" | "ACTIVE"}` per
//! object.
//!
//! `pause_channel` and `hold_send` pause, `resume_channel` and
//! `release_send` activate; the config's `status` decides for any kind.
//! Which objects: `object_id` (one id or a list), else the campaign's entry
//! in `objects`.
//!
//! The Graph API takes no idempotency key. Setting a status is idempotent
//! in itself: an object already `PAUSED` stays paused when paused again,
//! so a repeated call (a retry after a lost reply, or objects set before a
//! failure on a later one) changes nothing.
//!
//! Errors are `{"error": {"message", "type", "code", "error_subcode",
//! "fbtrace_id"}}`: the rate-limit codes (4, 17, 32, 613, 80000-80014) are
//! `rate-limited`, waiting as long as `X-Business-Use-Case-Usage`'s
//! `estimated_time_to_regain_access` says; 190 (bad token) and the
//! permission codes (10, 200-299) `unauthorized`; 1, 2 and `is_transient`
//! `transient`; others `permanent`, with Meta's message and trace id.

use std::collections::BTreeMap;

use channel_target::{Ids, Status};
use converge_plugin_sdk::http::{self, HttpError, Method, Request, Response};
use converge_plugin_sdk::{Action, ActionOutcome, ActionPlugin, PluginError, PluginInfo};
use serde::Deserialize;
use serde_json::{Value, json};

/// The Marketing API version requests go to unless the config names one.
const DEFAULT_API_VERSION: &str = "v24.0";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_base_url")]
    base_url: String,
    #[serde(default = "default_api_version")]
    api_version: String,
    #[serde(default = "default_credential")]
    credential: String,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    object_id: Option<Ids>,
    #[serde(default)]
    objects: BTreeMap<String, Ids>,
}

fn default_base_url() -> String {
    "https://graph.facebook.com".to_owned()
}

fn default_api_version() -> String {
    DEFAULT_API_VERSION.to_owned()
}

fn default_credential() -> String {
    "meta".to_owned()
}

fn request(config: &Config, id: &str, status: Status) -> Result<Request, PluginError> {
    let version = config.api_version.trim_matches('/');
    if !version.starts_with('v') || version.contains('/') {
        return Err(PluginError::InvalidInput(format!(
            "plugin config: api_version: `{version}` is not a Graph API version such as {DEFAULT_API_VERSION}"
        )));
    }
    let url = format!(
        "{}/{version}/{}",
        config.base_url.trim_end_matches('/'),
        http::percent_encode(id)
    );
    Ok(http::json_request(
        Method::Post,
        &url,
        &json!({"status": status.as_str()}),
        Some(&config.credential),
        &[("accept", "application/json")],
    ))
}

#[derive(Debug, Deserialize)]
struct ErrorDocument {
    error: GraphError,
}

#[derive(Debug, Deserialize)]
struct GraphError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_subcode: Option<i64>,
    #[serde(default)]
    fbtrace_id: Option<String>,
    #[serde(default)]
    is_transient: bool,
}

fn is_rate_limit(code: i64) -> bool {
    matches!(code, 4 | 17 | 32 | 613 | 80_000..=80_014)
}

/// The longest `estimated_time_to_regain_access` (minutes) of the
/// `X-Business-Use-Case-Usage` header, as milliseconds.
fn regain_access_ms(response: &Response) -> Option<u32> {
    let usage: Value = serde_json::from_str(response.header("x-business-use-case-usage")?).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|entry| entry.get("estimated_time_to_regain_access")?.as_u64())
        .max()
        .filter(|m| *m > 0)?;
    Some(u32::try_from(minutes.saturating_mul(60_000)).unwrap_or(u32::MAX))
}

fn error(response: &Response) -> PluginError {
    let Ok(ErrorDocument { error }) = serde_json::from_slice::<ErrorDocument>(&response.body)
    else {
        return response.error();
    };
    let mut message = format!("meta: HTTP {}: {}", response.status, error.message);
    if let Some(code) = error.code {
        message.push_str(&format!(" (code {code}"));
        if let Some(subcode) = error.error_subcode {
            message.push_str(&format!(", subcode {subcode}"));
        }
        if let Some(trace) = &error.fbtrace_id {
            message.push_str(&format!(", fbtrace_id {trace}"));
        }
        message.push(')');
    }
    match error.code {
        Some(code) if is_rate_limit(code) => {
            PluginError::RateLimited(regain_access_ms(response).or_else(|| {
                response
                    .header("retry-after")
                    .and_then(http::retry_after_ms)
            }))
        }
        Some(190 | 102 | 10 | 200..=299) => PluginError::Unauthorized(message),
        Some(1 | 2) => PluginError::Transient(message),
        _ if error.is_transient => PluginError::Transient(message),
        _ => match response.error() {
            PluginError::RateLimited(hint) => PluginError::RateLimited(hint),
            PluginError::Unauthorized(_) => PluginError::Unauthorized(message),
            PluginError::Transient(_) => PluginError::Transient(message),
            _ => PluginError::Permanent(message),
        },
    }
}

type Send<'a> = dyn FnMut(&Request) -> Result<Response, HttpError> + 'a;

fn perform(
    config: &Config,
    action: &Action,
    send: &mut Send,
) -> Result<ActionOutcome, PluginError> {
    let status = Status::for_action(config.status, &action.kind)?;
    let ids = channel_target::targets(
        action,
        config.object_id.as_ref(),
        &config.objects,
        "objects",
    )?;
    for id in &ids {
        let response = send(&request(config, id, status)?)?;
        if !response.is_success() {
            return Err(error(&response));
        }
        // Meta answers {"success": true}; anything else is not a change.
        let body: Value = response.json()?;
        if body.get("success") != Some(&Value::Bool(true)) {
            return Err(PluginError::Permanent(format!(
                "meta: HTTP {} without success for {id}: {body}",
                response.status
            )));
        }
    }
    Ok(ActionOutcome::new(format!(
        "meta: set {} to {}",
        ids.join(", "),
        status.as_str()
    ))
    .with_external_id(ids.join(",")))
}

struct MetaAds;

impl ActionPlugin for MetaAds {
    fn describe() -> PluginInfo {
        converge_plugin_sdk::plugin_info!()
    }

    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        let config: Config = converge_plugin_sdk::config()?;
        perform(&config, &action, &mut |request| http::send(request))
    }
}

converge_plugin_sdk::export_action_plugin!(MetaAds);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: Value) -> Config {
        let mut json =
            json!({"objects": {"fall-26": ["120210000000000001", "120210000000000002"]}});
        for (k, v) in extra.as_object().unwrap() {
            json[k] = v.clone();
        }
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn action(kind: &str) -> Action {
        Action {
            id: "converge-0123456789abcdef-action-9".into(),
            kind: kind.into(),
            rule: "low_consistency_pause".into(),
            decision_json: json!({"kind": kind, "channel": "paid", "reason": "r"}).to_string(),
            event_json: json!({"id": "e", "subject": "campaign/fall-26"}).to_string(),
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

    #[test]
    fn a_pause_posts_paused_to_every_mapped_object() {
        let config = config(json!({}));
        let mut requests = Vec::new();
        let outcome = perform(&config, &action("pause_channel"), &mut |r: &Request| {
            requests.push(r.clone());
            Ok(response(200, &[], r#"{"success":true}"#))
        })
        .unwrap();
        assert_eq!(
            outcome.summary,
            "meta: set 120210000000000001, 120210000000000002 to PAUSED"
        );
        let urls: Vec<&str> = requests.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://graph.facebook.com/v24.0/120210000000000001",
                "https://graph.facebook.com/v24.0/120210000000000002"
            ]
        );
        assert_eq!(requests[0].method, Method::Post);
        assert_eq!(requests[0].credential.as_deref(), Some("meta"));
        assert_eq!(
            requests[0].body.as_deref(),
            Some(br#"{"status":"PAUSED"}"#.as_slice())
        );
    }

    #[test]
    fn kinds_pick_the_status_and_the_config_can_override() {
        assert_eq!(
            Status::for_action(None, "resume_channel"),
            Ok(Status::Active)
        );
        assert_eq!(Status::for_action(None, "release_send"), Ok(Status::Active));
        assert_eq!(Status::for_action(None, "hold_send"), Ok(Status::Paused));
        assert_eq!(
            Status::for_action(Some(Status::Paused), "escalate"),
            Ok(Status::Paused)
        );
        assert!(matches!(
            Status::for_action(None, "notify"),
            Err(PluginError::InvalidInput(m)) if m.contains("status: required")
        ));
        let bad = config(json!({"api_version": "../v1"}));
        assert!(matches!(
            request(&bad, "1", Status::Paused),
            Err(PluginError::InvalidInput(m)) if m.contains("api_version")
        ));
    }

    #[test]
    fn rate_limit_codes_wait_as_meta_says() {
        let limited = r#"{"error":{"message":"User request limit reached","type":"OAuthException","is_transient":true,"code":17,"error_subcode":2446079,"fbtrace_id":"AbCdEf123"}}"#;
        let usage = r#"{"act_1234567890":[{"type":"ads_management","call_count":100,"total_cputime":34,"total_time":41,"estimated_time_to_regain_access":2}]}"#;
        assert_eq!(
            error(&response(
                400,
                &[("X-Business-Use-Case-Usage", usage)],
                limited
            )),
            PluginError::RateLimited(Some(120_000))
        );
        assert_eq!(
            error(&response(400, &[], limited)),
            PluginError::RateLimited(None)
        );
        let account = r#"{"error":{"message":"There have been too many calls from this ad-account. Please wait a bit and try again.","type":"OAuthException","code":613,"error_subcode":1487742,"fbtrace_id":"X"}}"#;
        assert_eq!(
            error(&response(400, &[], account)),
            PluginError::RateLimited(None)
        );
    }

    #[test]
    fn graph_errors_map_to_their_retry_policy_with_the_trace_id() {
        let token = r#"{"error":{"message":"Error validating access token: Session has expired.","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"A1"}}"#;
        assert_eq!(
            error(&response(400, &[], token)),
            PluginError::Unauthorized(
                "meta: HTTP 400: Error validating access token: Session has expired. (code 190, subcode 463, fbtrace_id A1)".into()
            )
        );
        let unknown = r#"{"error":{"message":"Unsupported post request. Object with ID '1' does not exist, cannot be loaded due to missing permissions, or does not support this operation.","type":"GraphMethodException","code":100,"error_subcode":33,"fbtrace_id":"B2"}}"#;
        assert!(matches!(
            error(&response(400, &[], unknown)),
            PluginError::Permanent(m) if m.contains("code 100, subcode 33, fbtrace_id B2")
        ));
        let temporary = r#"{"error":{"message":"An unexpected error has occurred. Please retry your request later.","type":"OAuthException","is_transient":true,"code":2,"fbtrace_id":"C3"}}"#;
        assert!(matches!(
            error(&response(500, &[], temporary)),
            PluginError::Transient(_)
        ));
        assert!(matches!(
            error(&response(503, &[], "upstream")),
            PluginError::Transient(_)
        ));
    }

    #[test]
    fn a_200_without_success_is_not_a_change() {
        let config = config(json!({"object_id": "1"}));
        assert!(matches!(
            perform(&config, &action("pause_channel"), &mut |_: &Request| Ok(response(200, &[], r#"{"success":false}"#))),
            Err(PluginError::Permanent(m)) if m.contains("without success")
        ));
    }
}
