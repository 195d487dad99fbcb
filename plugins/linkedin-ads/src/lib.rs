//! The `linkedin-ads` action plugin: sets the status of LinkedIn ad
//! campaigns through the versioned Marketing API (Rest.li 2.0): a partial
//! update per campaign,
//!
//! ```text
//! POST /rest/adAccounts/{account}/adCampaigns/{campaign}
//! LinkedIn-Version: 202601
//! X-Restli-Protocol-Version: 2.0.0
//! X-RestLi-Method: PARTIAL_UPDATE
//! {"patch": {"$set": {"status": "PAUSED"}}}
//! ```
//!
//! answered `204 No Content`. `pause_channel` and `hold_send` pause,
//! `resume_channel` and `release_send` activate; the config's `status`
//! decides for any kind. Which campaigns: `campaign_id` (one or a list),
//! else the converge campaign's entry in `campaigns`, in the ad account
//! `account_id`. Ids may be given as URNs (`urn:li:sponsoredCampaign:…`).
//!
//! LinkedIn takes no idempotency key. A partial update that sets the
//! status the campaign already has leaves it as it is, so a repeated call
//! changes nothing.
//!
//! Errors are `{"status", "serviceErrorCode", "code", "message"}`. LinkedIn
//! sends no `Retry-After` with its 429 (its limits are daily): the host's
//! backoff decides when to try again, unless a `Retry-After` does come.

use std::collections::BTreeMap;

use channel_target::{Ids, Status};
use converge_plugin_sdk::http::{self, HttpError, Method, Request, Response};
use converge_plugin_sdk::{Action, ActionOutcome, ActionPlugin, PluginError, PluginInfo};
use serde::Deserialize;
use serde_json::json;

/// The `LinkedIn-Version` (YYYYMM) sent unless the config names one.
const DEFAULT_VERSION: &str = "202601";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_base_url")]
    base_url: String,
    #[serde(default = "default_version")]
    version: String,
    #[serde(default = "default_credential")]
    credential: String,
    /// The sponsored ad account the campaigns belong to.
    account_id: String,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    campaign_id: Option<Ids>,
    #[serde(default)]
    campaigns: BTreeMap<String, Ids>,
}

fn default_base_url() -> String {
    "https://api.linkedin.com/rest".to_owned()
}

fn default_version() -> String {
    DEFAULT_VERSION.to_owned()
}

fn default_credential() -> String {
    "linkedin".to_owned()
}

/// The numeric id of `id` or of its URN (`urn:li:sponsoredCampaign:123`).
fn numeric_id(id: &str, what: &str, key: &str) -> Result<String, PluginError> {
    let bare = id.rsplit(':').next().unwrap_or(id);
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PluginError::InvalidInput(format!(
            "plugin config: {key}: `{id}` is not a LinkedIn {what} id (digits or its URN)"
        )));
    }
    Ok(bare.to_owned())
}

fn request(config: &Config, campaign: &str, status: Status) -> Result<Request, PluginError> {
    if config.version.len() != 6 || !config.version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PluginError::InvalidInput(format!(
            "plugin config: version: `{}` is not a LinkedIn-Version (YYYYMM)",
            config.version
        )));
    }
    let account = numeric_id(&config.account_id, "ad account", "account_id")?;
    let url = format!(
        "{}/adAccounts/{account}/adCampaigns/{campaign}",
        config.base_url.trim_end_matches('/')
    );
    Ok(http::json_request(
        Method::Post,
        &url,
        &json!({"patch": {"$set": {"status": status.as_str()}}}),
        Some(&config.credential),
        &[
            ("accept", "application/json"),
            ("linkedin-version", &config.version),
            ("x-restli-protocol-version", "2.0.0"),
            ("x-restli-method", "PARTIAL_UPDATE"),
        ],
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDocument {
    #[serde(default)]
    message: String,
    #[serde(default)]
    service_error_code: Option<i64>,
    #[serde(default)]
    code: Option<String>,
}

fn error(response: &Response) -> PluginError {
    let refused = response.error();
    let Ok(document) = serde_json::from_slice::<ErrorDocument>(&response.body) else {
        return refused;
    };
    if document.message.is_empty() {
        return refused;
    }
    let mut message = format!("linkedin: HTTP {}: {}", response.status, document.message);
    let details: Vec<String> = document
        .code
        .iter()
        .cloned()
        .chain(
            document
                .service_error_code
                .map(|c| format!("serviceErrorCode {c}")),
        )
        .collect();
    if !details.is_empty() {
        message.push_str(&format!(" ({})", details.join(", ")));
    }
    match refused {
        PluginError::RateLimited(hint) => PluginError::RateLimited(hint),
        PluginError::Unauthorized(_) => PluginError::Unauthorized(message),
        PluginError::Transient(_) => PluginError::Transient(message),
        _ => PluginError::Permanent(message),
    }
}

type Send<'a> = dyn FnMut(&Request) -> Result<Response, HttpError> + 'a;

fn perform(
    config: &Config,
    action: &Action,
    send: &mut Send,
) -> Result<ActionOutcome, PluginError> {
    let status = Status::for_action(config.status, &action.kind)?;
    let key = if config.campaign_id.is_some() {
        "campaign_id"
    } else {
        "campaigns"
    };
    let ids = channel_target::targets(
        action,
        config.campaign_id.as_ref(),
        &config.campaigns,
        "campaigns",
    )?
    .iter()
    .map(|id| numeric_id(id, "campaign", key))
    .collect::<Result<Vec<_>, _>>()?;
    for id in &ids {
        let response = send(&request(config, id, status)?)?;
        if !response.is_success() {
            return Err(error(&response));
        }
    }
    Ok(ActionOutcome::new(format!(
        "linkedin: set campaign {} to {}",
        ids.join(", "),
        status.as_str()
    ))
    .with_external_id(
        ids.iter()
            .map(|id| format!("urn:li:sponsoredCampaign:{id}"))
            .collect::<Vec<_>>()
            .join(","),
    ))
}

struct LinkedinAds;

impl ActionPlugin for LinkedinAds {
    fn describe() -> PluginInfo {
        converge_plugin_sdk::plugin_info!()
    }

    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        let config: Config = converge_plugin_sdk::config()?;
        perform(&config, &action, &mut |request| http::send(request))
    }
}

converge_plugin_sdk::export_action_plugin!(LinkedinAds);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn config(extra: Value) -> Config {
        let mut json = json!({"account_id": "urn:li:sponsoredAccount:508915158", "campaigns": {"fall-26": "urn:li:sponsoredCampaign:299395414"}});
        for (k, v) in extra.as_object().unwrap() {
            json[k] = v.clone();
        }
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn action(kind: &str) -> Action {
        Action {
            id: "converge-0123456789abcdef-action-4".into(),
            kind: kind.into(),
            rule: "r".into(),
            decision_json: json!({"kind": kind, "channel": "linkedin", "reason": "r"}).to_string(),
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
    fn a_pause_is_a_versioned_partial_update() {
        let config = config(json!({}));
        let mut requests = Vec::new();
        let outcome = perform(&config, &action("pause_channel"), &mut |r: &Request| {
            requests.push(r.clone());
            Ok(response(204, &[], ""))
        })
        .unwrap();
        assert_eq!(
            outcome.summary,
            "linkedin: set campaign 299395414 to PAUSED"
        );
        assert_eq!(
            outcome.external_id.as_deref(),
            Some("urn:li:sponsoredCampaign:299395414")
        );
        let request = &requests[0];
        assert_eq!(request.method, Method::Post);
        assert_eq!(
            request.url,
            "https://api.linkedin.com/rest/adAccounts/508915158/adCampaigns/299395414"
        );
        for header in [
            ("linkedin-version", "202601"),
            ("x-restli-protocol-version", "2.0.0"),
            ("x-restli-method", "PARTIAL_UPDATE"),
            ("content-type", "application/json"),
        ] {
            assert!(
                request
                    .headers
                    .contains(&(header.0.to_owned(), header.1.to_owned())),
                "{header:?} in {:?}",
                request.headers
            );
        }
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"patch": {"$set": {"status": "PAUSED"}}}));
        assert_eq!(request.credential.as_deref(), Some("linkedin"));
    }

    #[test]
    fn ids_and_versions_are_checked_before_any_call() {
        let bad = config(json!({"campaign_id": "spring launch"}));
        assert!(matches!(
            perform(&bad, &action("pause_channel"), &mut |_: &Request| unreachable!()),
            Err(PluginError::InvalidInput(m)) if m.contains("campaign_id: `spring launch` is not a LinkedIn campaign id")
        ));
        let version = config(json!({"version": "2026-01"}));
        assert!(matches!(
            perform(&version, &action("resume_channel"), &mut |_: &Request| unreachable!()),
            Err(PluginError::InvalidInput(m)) if m.contains("LinkedIn-Version")
        ));
    }

    #[test]
    fn errors_map_to_their_retry_policy() {
        assert_eq!(
            error(&response(
                429,
                &[],
                r#"{"status":429,"serviceErrorCode":101,"code":"TOO_MANY_REQUESTS","message":"Resource level throttle APPLICATION DAY limit for calls to this resource is reached."}"#
            )),
            PluginError::RateLimited(None)
        );
        assert_eq!(
            error(&response(401, &[], r#"{"status":401,"serviceErrorCode":65601,"code":"REVOKED_ACCESS_TOKEN","message":"The token used in the request has been revoked by the user"}"#)),
            PluginError::Unauthorized("linkedin: HTTP 401: The token used in the request has been revoked by the user (REVOKED_ACCESS_TOKEN, serviceErrorCode 65601)".into())
        );
        assert!(matches!(
            error(&response(400, &[], r#"{"status":400,"serviceErrorCode":100,"code":"INVALID_STATUS_TRANSITION","message":"Cannot change status from ARCHIVED to ACTIVE"}"#)),
            PluginError::Permanent(m) if m.contains("ARCHIVED to ACTIVE")
        ));
        assert!(matches!(
            error(&response(504, &[], "")),
            PluginError::Transient(_)
        ));
    }
}
