//! The `mailchimp` action plugin: acts on Mailchimp campaigns and classic
//! automations through the Marketing API 3.0.
//!
//! | operation | call | default for |
//! |---|---|---|
//! | `send` | `POST /campaigns/{id}/actions/send` | `release_send` |
//! | `schedule` | `POST /campaigns/{id}/actions/schedule` `{"schedule_time", "timewarp"}` | |
//! | `unschedule` | `POST /campaigns/{id}/actions/unschedule` | `hold_send` |
//! | `pause_automation` | `POST /automations/{id}/actions/pause-all-emails` | `pause_channel` |
//! | `resume_automation` | `POST /automations/{id}/actions/start-all-emails` | `resume_channel` |
//!
//! Which campaign or automation: the route config's `campaign_id` /
//! `automation_id`, else the converge campaign's entry in `campaigns` /
//! `automations`. A schedule's time is the event's `data.send_at`
//! (`send_at` names another member), on a quarter hour as Mailchimp
//! requires.
//!
//! Mailchimp takes no idempotency key. A call repeated after a lost reply
//! is answered 400 (a campaign already sent or scheduled cannot be sent or
//! scheduled again), so on a 4xx the plugin reads the campaign's or
//! automation's status, and a status that shows the call already took
//! effect is success: the repeat changes nothing and reports `already`.
//!
//! The API key is a host-held credential (HTTP Basic `anystring:<key>`);
//! the plugin names it and never sees it.
//!
//! It also decodes Mailchimp's audience webhooks (`audience`): a hook's
//! `config` reads its own keys, a route's these.

mod audience;

use std::collections::BTreeMap;

use channel_target::Ids;
use converge_plugin_sdk::http::{self, HttpError, Method, Request, Response};
use converge_plugin_sdk::{Action, ActionOutcome, Connector, ConnectorInfo, Inbound, PluginError};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `https://<dc>.api.mailchimp.com/3.0`, the data center of the account.
    base_url: String,
    #[serde(default = "default_credential")]
    credential: String,
    #[serde(default)]
    action: Option<Operation>,
    #[serde(default)]
    campaign_id: Option<Ids>,
    #[serde(default)]
    campaigns: BTreeMap<String, Ids>,
    #[serde(default)]
    automation_id: Option<Ids>,
    #[serde(default)]
    automations: BTreeMap<String, Ids>,
    /// JSON pointer into the event to the time of a `schedule`.
    #[serde(default = "default_send_at")]
    send_at: String,
    /// Mailchimp's Timewarp: send at `schedule_time` in each recipient's zone.
    #[serde(default)]
    timewarp: bool,
}

fn default_credential() -> String {
    "mailchimp".to_owned()
}

fn default_send_at() -> String {
    channel_target::DEFAULT_SEND_AT.to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Operation {
    Send,
    Schedule,
    Unschedule,
    PauseAutomation,
    ResumeAutomation,
}

impl Operation {
    const NAMES: &[&str] = &[
        "send",
        "schedule",
        "unschedule",
        "pause_automation",
        "resume_automation",
    ];

    /// The configured operation, else the one a channel decision implies.
    fn for_action(configured: Option<Operation>, kind: &str) -> Result<Operation, PluginError> {
        if let Some(operation) = configured {
            return Ok(operation);
        }
        match kind {
            "release_send" => Ok(Operation::Send),
            "hold_send" => Ok(Operation::Unschedule),
            "pause_channel" => Ok(Operation::PauseAutomation),
            "resume_channel" => Ok(Operation::ResumeAutomation),
            _ => Err(PluginError::InvalidInput(format!(
                "plugin config: action: required for `{kind}` decisions (one of {})",
                Operation::NAMES.join(", ")
            ))),
        }
    }

    fn on_automation(self) -> bool {
        matches!(
            self,
            Operation::PauseAutomation | Operation::ResumeAutomation
        )
    }

    fn path(self, id: &str) -> String {
        let id = http::percent_encode(id);
        match self {
            Operation::Send => format!("/campaigns/{id}/actions/send"),
            Operation::Schedule => format!("/campaigns/{id}/actions/schedule"),
            Operation::Unschedule => format!("/campaigns/{id}/actions/unschedule"),
            Operation::PauseAutomation => format!("/automations/{id}/actions/pause-all-emails"),
            Operation::ResumeAutomation => format!("/automations/{id}/actions/start-all-emails"),
        }
    }

    fn done(self) -> &'static str {
        match self {
            Operation::Send => "sent",
            Operation::Schedule => "scheduled",
            Operation::Unschedule => "unscheduled",
            Operation::PauseAutomation => "paused",
            Operation::ResumeAutomation => "started",
        }
    }
}

/// One call to make: the operation on one campaign or automation.
#[derive(Debug, PartialEq)]
struct Call {
    operation: Operation,
    id: String,
    /// A schedule's time, seconds since the epoch.
    at: Option<i64>,
}

fn calls(config: &Config, action: &Action) -> Result<Vec<Call>, PluginError> {
    let operation = Operation::for_action(config.action, &action.kind)?;
    let ids = if operation.on_automation() {
        channel_target::targets(
            action,
            config.automation_id.as_ref(),
            &config.automations,
            "automations",
        )?
    } else {
        channel_target::targets(
            action,
            config.campaign_id.as_ref(),
            &config.campaigns,
            "campaigns",
        )?
    };
    let at = match operation {
        Operation::Schedule => {
            let at = channel_target::send_at(action, &config.send_at)?;
            if at.rem_euclid(900) != 0 {
                return Err(PluginError::InvalidInput(format!(
                    "event{}: {}: Mailchimp schedules on the quarter hour only (:00, :15, :30, :45)",
                    config.send_at,
                    channel_target::format_utc(at)
                )));
            }
            Some(at)
        }
        _ => None,
    };
    Ok(ids
        .into_iter()
        .map(|id| Call { operation, id, at })
        .collect())
}

fn base(config: &Config) -> &str {
    config.base_url.trim_end_matches('/')
}

/// Mailchimp's own time form, `2017-02-04T19:13:00+00:00`.
fn mailchimp_time(at: i64) -> String {
    let utc = channel_target::format_utc(at);
    format!("{}+00:00", utc.trim_end_matches('Z'))
}

fn request(config: &Config, call: &Call) -> Request {
    let url = format!("{}{}", base(config), call.operation.path(&call.id));
    match call.at {
        Some(at) => http::json_request(
            Method::Post,
            &url,
            &json!({"schedule_time": mailchimp_time(at), "timewarp": config.timewarp}),
            Some(&config.credential),
            &[("accept", "application/json")],
        ),
        None => Request {
            method: Method::Post,
            url,
            headers: vec![("accept".to_owned(), "application/json".to_owned())],
            body: None,
            credential: Some(config.credential.clone()),
        },
    }
}

/// The GET that reads a campaign's or automation's status.
fn status_request(config: &Config, call: &Call) -> Request {
    let what = if call.operation.on_automation() {
        "automations"
    } else {
        "campaigns"
    };
    let url = http::url_with_query(
        &format!("{}/{what}/{}", base(config), http::percent_encode(&call.id)),
        &[("fields", "status,send_time")],
    );
    http::get_request(&url, Some(&config.credential))
}

/// Mailchimp's error document (RFC 7807 problem details).
#[derive(Debug, Default, Deserialize)]
struct Problem {
    #[serde(default)]
    title: String,
    #[serde(default)]
    detail: String,
}

/// A non-2xx answer as the error whose retry policy fits it, with
/// Mailchimp's title and detail when the body is its problem document.
fn error(response: &Response) -> PluginError {
    let Ok(problem) = serde_json::from_slice::<Problem>(&response.body) else {
        return response.error();
    };
    if problem.title.is_empty() && problem.detail.is_empty() {
        return response.error();
    }
    let message = format!(
        "mailchimp: HTTP {}: {}: {}",
        response.status, problem.title, problem.detail
    );
    match response.error() {
        PluginError::RateLimited(hint) => PluginError::RateLimited(hint),
        PluginError::Unauthorized(_) => PluginError::Unauthorized(message),
        PluginError::Transient(_) => PluginError::Transient(message),
        _ => PluginError::Permanent(message),
    }
}

#[derive(Debug, Deserialize)]
struct State {
    status: String,
    #[serde(default)]
    send_time: Option<String>,
}

/// Whether the state read after a refused call shows the call took effect
/// already (it ran before, and its reply was lost).
fn already(call: &Call, state: &State) -> bool {
    match call.operation {
        Operation::Send => matches!(state.status.as_str(), "sending" | "sent"),
        Operation::Schedule => {
            matches!(state.status.as_str(), "schedule" | "sending" | "sent")
                && state
                    .send_time
                    .as_deref()
                    .and_then(channel_target::parse_rfc3339)
                    == call.at
        }
        Operation::Unschedule => matches!(state.status.as_str(), "save" | "paused"),
        Operation::PauseAutomation => state.status == "paused",
        Operation::ResumeAutomation => state.status == "sending",
    }
}

type Send<'a> = dyn FnMut(&Request) -> Result<Response, HttpError> + 'a;

/// Performs one call; `Ok(true)` when it had already been done.
fn perform_call(config: &Config, call: &Call, send: &mut Send) -> Result<bool, PluginError> {
    let response = send(&request(config, call))?;
    if response.is_success() {
        return Ok(false);
    }
    let refused = error(&response);
    if !matches!(refused, PluginError::Permanent(_)) || response.status == 404 {
        return Err(refused);
    }
    // A refused call may be one that took effect before: read the status.
    let state = send(&status_request(config, call))?;
    if !state.is_success() {
        return Err(refused);
    }
    let state: State = state.json()?;
    if already(call, &state) {
        return Ok(true);
    }
    Err(match refused {
        PluginError::Permanent(message) => {
            PluginError::Permanent(format!("{message} (status now `{}`)", state.status))
        }
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
        let what = if call.operation.on_automation() {
            "automation"
        } else {
            "campaign"
        };
        let mut part = format!("{} {what} {}", call.operation.done(), call.id);
        if let Some(at) = call.at {
            part.push_str(&format!(" for {}", channel_target::format_utc(at)));
        }
        if repeated {
            part.push_str(" (already)");
        }
        parts.push(part);
    }
    let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    Ok(
        ActionOutcome::new(format!("mailchimp: {}", parts.join("; ")))
            .with_external_id(ids.join(",")),
    )
}

struct Mailchimp;

impl Connector for Mailchimp {
    fn info() -> ConnectorInfo {
        ConnectorInfo::new(audience::EVENT_TYPES)
            .decodes()
            .actions(Operation::NAMES)
    }

    fn decode(inbound: Inbound) -> Result<Vec<String>, PluginError> {
        let config: audience::Config = converge_plugin_sdk::config()?;
        Ok(audience::decode(&config, &inbound)?
            .iter()
            .map(converge_plugin_sdk::event::CloudEvent::to_json)
            .collect())
    }

    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        let config: Config = converge_plugin_sdk::config()?;
        perform(&config, &action, &mut |request| http::send(request))
    }
}

converge_plugin_sdk::export_connector_plugin!(Mailchimp);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const BASE: &str = "https://us21.api.mailchimp.com/3.0";

    fn config(extra: Value) -> Config {
        let mut json = json!({"base_url": BASE, "campaigns": {"fall-26": "b03bfc2d6e"}, "automations": {"fall-26": "4e3a0c9b1d"}});
        for (k, v) in extra.as_object().unwrap() {
            json[k] = v.clone();
        }
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn action(kind: &str, data: Value) -> Action {
        Action {
            id: "converge-0123456789abcdef-send-12-9f2c".into(),
            kind: kind.into(),
            rule: "gate".into(),
            decision_json: json!({"kind": kind, "channel": "email", "reason": "converged"})
                .to_string(),
            event_json: json!({"id": "s-1", "type": "send.requested", "subject": "campaign/fall-26", "data": data})
                .to_string(),
            entity_json: "null".into(),
        }
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    const NOT_FOUND: &str = r#"{"type":"https://mailchimp.com/developer/marketing/docs/errors/","title":"Resource Not Found","status":404,"detail":"The requested resource could not be found.","instance":"995c5cb0-3280-4a6e-808b-3b096d0bb219"}"#;
    const ALREADY_SENT: &str = r#"{"type":"https://mailchimp.com/developer/marketing/docs/errors/","title":"Bad Request","status":400,"detail":"This campaign has already been sent.","instance":"2a3f8b1e-0c55-4c1a-9a7d-1f0e4d6b5c21"}"#;

    /// Answers the requests in order, recording them.
    fn scripted(answers: Vec<Response>) -> impl FnMut(&Request) -> Result<Response, HttpError> {
        let mut answers = answers.into_iter();
        move |_: &Request| Ok(answers.next().expect("an answer for every request"))
    }

    #[test]
    fn channel_decisions_pick_their_operation_and_the_config_can_override() {
        assert_eq!(
            Operation::for_action(None, "release_send"),
            Ok(Operation::Send)
        );
        assert_eq!(
            Operation::for_action(None, "hold_send"),
            Ok(Operation::Unschedule)
        );
        assert_eq!(
            Operation::for_action(None, "pause_channel"),
            Ok(Operation::PauseAutomation)
        );
        assert_eq!(
            Operation::for_action(None, "resume_channel"),
            Ok(Operation::ResumeAutomation)
        );
        assert_eq!(
            Operation::for_action(Some(Operation::Schedule), "release_send"),
            Ok(Operation::Schedule)
        );
        assert!(matches!(
            Operation::for_action(None, "escalate"),
            Err(PluginError::InvalidInput(m)) if m.contains("action: required for `escalate`")
        ));
    }

    #[test]
    fn a_schedule_posts_the_send_time_of_the_event_on_the_quarter_hour() {
        let config = config(json!({"action": "schedule"}));
        let action = action(
            "release_send",
            json!({"channel": "email", "send_at": "2026-11-23T11:15:00+01:00"}),
        );
        let calls = calls(&config, &action).unwrap();
        assert_eq!(
            calls,
            [Call {
                operation: Operation::Schedule,
                id: "b03bfc2d6e".into(),
                at: Some(1_795_428_900)
            }]
        );
        let request = request(&config, &calls[0]);
        assert_eq!(request.method, Method::Post);
        assert_eq!(
            request.url,
            format!("{BASE}/campaigns/b03bfc2d6e/actions/schedule")
        );
        assert_eq!(request.credential.as_deref(), Some("mailchimp"));
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"schedule_time": "2026-11-23T10:15:00+00:00", "timewarp": false})
        );

        let off = self::action("release_send", json!({"send_at": "2026-11-23T10:10:00Z"}));
        assert!(matches!(
            super::calls(&config, &off),
            Err(PluginError::InvalidInput(m)) if m.contains("quarter hour")
        ));
    }

    #[test]
    fn automations_and_campaign_actions_have_their_paths_and_no_body() {
        let config = config(json!({}));
        let pause = calls(&config, &action("pause_channel", json!({}))).unwrap();
        let request = request(&config, &pause[0]);
        assert_eq!(
            request.url,
            format!("{BASE}/automations/4e3a0c9b1d/actions/pause-all-emails")
        );
        assert_eq!(request.body, None);
        let resume = calls(&config, &action("resume_channel", json!({}))).unwrap();
        assert_eq!(
            super::request(&config, &resume[0]).url,
            format!("{BASE}/automations/4e3a0c9b1d/actions/start-all-emails")
        );
        let hold = calls(&config, &action("hold_send", json!({}))).unwrap();
        assert_eq!(
            super::request(&config, &hold[0]).url,
            format!("{BASE}/campaigns/b03bfc2d6e/actions/unschedule")
        );
        let fixed = self::config(json!({"campaign_id": "fixed/1"}));
        let send = calls(&fixed, &action("release_send", json!({}))).unwrap();
        assert_eq!(
            super::request(&fixed, &send[0]).url,
            format!("{BASE}/campaigns/fixed%2F1/actions/send")
        );
    }

    #[test]
    fn a_send_answered_204_is_done() {
        let config = config(json!({}));
        let mut send = scripted(vec![response(204, "")]);
        let outcome = perform(&config, &action("release_send", json!({})), &mut send).unwrap();
        assert_eq!(outcome.summary, "mailchimp: sent campaign b03bfc2d6e");
        assert_eq!(outcome.external_id.as_deref(), Some("b03bfc2d6e"));
    }

    #[test]
    fn a_repeated_send_of_a_sent_campaign_is_done_already() {
        let config = config(json!({}));
        let mut requests = Vec::new();
        let mut answers = vec![
            response(400, ALREADY_SENT),
            response(
                200,
                r#"{"status":"sent","send_time":"2026-11-23T10:00:03+00:00"}"#,
            ),
        ]
        .into_iter();
        let outcome = perform(
            &config,
            &action("release_send", json!({})),
            &mut |r: &Request| {
                requests.push(r.clone());
                Ok(answers.next().unwrap())
            },
        )
        .unwrap();
        assert_eq!(
            outcome.summary,
            "mailchimp: sent campaign b03bfc2d6e (already)"
        );
        assert_eq!(requests[1].method, Method::Get);
        assert_eq!(
            requests[1].url,
            format!("{BASE}/campaigns/b03bfc2d6e?fields=status%2Csend_time")
        );
    }

    #[test]
    fn a_refused_call_that_did_not_take_effect_is_permanent_with_mailchimps_detail() {
        let config = config(json!({}));
        let mut send = scripted(vec![
            response(400, ALREADY_SENT),
            response(200, r#"{"status":"save"}"#),
        ]);
        assert_eq!(
            perform(&config, &action("release_send", json!({})), &mut send),
            Err(PluginError::Permanent(
                "mailchimp: HTTP 400: Bad Request: This campaign has already been sent. (status now `save`)".into()
            ))
        );
        let mut send = scripted(vec![response(404, NOT_FOUND)]);
        assert_eq!(
            perform(&config, &action("hold_send", json!({})), &mut send),
            Err(PluginError::Permanent(
                "mailchimp: HTTP 404: Resource Not Found: The requested resource could not be found.".into()
            ))
        );
    }

    #[test]
    fn a_schedule_is_already_done_only_at_the_same_time() {
        let call = Call {
            operation: Operation::Schedule,
            id: "c".into(),
            at: Some(1_795_428_900),
        };
        let state = |status: &str, time: &str| State {
            status: status.into(),
            send_time: Some(time.into()),
        };
        assert!(already(
            &call,
            &state("schedule", "2026-11-23T10:15:00+00:00")
        ));
        assert!(!already(
            &call,
            &state("schedule", "2026-11-23T10:30:00+00:00")
        ));
        assert!(!already(&call, &state("save", "")));
        let unschedule = Call {
            operation: Operation::Unschedule,
            id: "c".into(),
            at: None,
        };
        assert!(already(&unschedule, &state("save", "")));
        assert!(!already(&unschedule, &state("sent", "")));
    }

    #[test]
    fn statuses_map_to_their_retry_policy() {
        let with = |status: u16, headers: &[(&str, &str)], body: &str| Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            error(&with(
                429,
                &[("Retry-After", "2")],
                r#"{"title":"Too Many Requests","status":429,"detail":"You have exceeded the limit of 10 simultaneous connections."}"#
            )),
            PluginError::RateLimited(Some(2000))
        );
        assert!(matches!(
            error(&with(401, &[], r#"{"title":"API Key Invalid","status":401,"detail":"Your API key may be invalid, or you've attempted to access the wrong datacenter."}"#)),
            PluginError::Unauthorized(m) if m.contains("API Key Invalid")
        ));
        assert!(matches!(
            error(&with(503, &[], "<html>")),
            PluginError::Transient(_)
        ));
        assert!(
            matches!(error(&with(500, &[], r#"{"title":"Internal Server Error","status":500,"detail":"x"}"#)), PluginError::Transient(m) if m.contains("Internal Server Error"))
        );
    }

    #[test]
    fn an_unmapped_campaign_is_invalid_input() {
        let config = config(json!({}));
        let mut other = action("release_send", json!({}));
        other.event_json = json!({"id": "s", "subject": "campaign/spring"}).to_string();
        let mut send = scripted(vec![]);
        assert!(matches!(
            perform(&config, &other, &mut send),
            Err(PluginError::InvalidInput(m)) if m == "plugin config: campaigns: no entry for campaign `spring`"
        ));
    }
}
