//! The channel action plugins in the daemon: a rule's `release_send`,
//! `hold_send`, `pause_channel` or `resume_channel` routed to `mailchimp`,
//! `sendgrid-campaigns`, `meta-ads` or `linkedin-ads`, performed on a local
//! fake of the vendor's API that checks what the vendor checks (path,
//! method, the credential the host injects, the body) and answers as the
//! vendor's reference documents: success, the vendor's error documents,
//! rate limits with their wait, and a repeat after a lost reply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{Daemon, Workspace, actions_settled, event, plugin_dir};

/// One request a fake vendor API received.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Option<Value>,
    at: Instant,
}

impl Call {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A vendor API on 127.0.0.1: each request is recorded, then answered by
/// a function of itself and the number of earlier requests.
#[derive(Clone)]
struct Fake {
    host: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Fake {
    async fn start(answer: impl Fn(usize, &Call) -> Response + Send + Sync + 'static) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Fake {
            host: listener.local_addr().unwrap().to_string(),
            calls: Arc::default(),
        };
        let calls = fake.calls.clone();
        let answer = Arc::new(answer);
        let app = Router::new().fallback(
            move |method: axum::http::Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (calls, answer) = (calls.clone(), answer.clone());
                async move {
                    let call = Call {
                        method: method.to_string(),
                        path: uri.path().to_string(),
                        query: uri.query().map(str::to_string),
                        headers,
                        body: if body.is_empty() {
                            None
                        } else {
                            Some(serde_json::from_slice(&body).unwrap_or_else(|_| {
                                Value::String(String::from_utf8_lossy(&body).into_owned())
                            }))
                        },
                        at: Instant::now(),
                    };
                    let n = {
                        let mut all = calls.lock().unwrap();
                        all.push(call.clone());
                        all.len() - 1
                    };
                    answer(n, &call)
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// The plugin `name` (its component `<file>.wasm`) granted the fake and a
/// credential named like the plugin, read from `env`, sent as
/// `authorization: <scheme> <value>`.
fn plugin(name: &str, file: &str, host: &str, env: &str, scheme: &str) -> String {
    format!(
        r#"
[plugins.{name}]
component = {component:?}
http_hosts = [{host:?}]
allow_plain_http = true

[plugins.{name}.credentials.{name}]
env = "{env}"
scheme = "{scheme}"
"#,
        component = plugin_dir()
            .join(format!("{file}.wasm"))
            .display()
            .to_string(),
    )
}

/// The actions of every decision of a trail.
fn actions(trail: &Value) -> Vec<Value> {
    trail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["actions"].as_array().unwrap().clone())
        .collect()
}

/// The one action of an event, once it is done or a dead letter.
async fn settled_action(daemon: &Daemon, id: &str) -> Value {
    let trail = daemon.wait_for_trail(id, actions_settled).await;
    let actions = actions(&trail);
    assert_eq!(actions.len(), 1, "{trail:#}\n{}", daemon.log());
    actions[0].clone()
}

async fn accept(daemon: &Daemon, event: &Value) {
    let (status, body) = daemon.send_event(event).await;
    assert_eq!(status, 202, "{body}");
}

/// The answer of a problem document, as Mailchimp sends its errors.
fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json; charset=utf-8")],
        json!({
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
            "instance": "995c5cb0-3280-4a6e-808b-3b096d0bb219",
        })
        .to_string(),
    )
        .into_response()
}

const MAILCHIMP_KEY_ENV: &str = "CONVERGE_TEST_MAILCHIMP_KEY";
/// Mailchimp's API keys end with the data center; obviously not a real one.
const MAILCHIMP_KEY: &str = "0000fake0000key0000-us21";

/// Mailchimp takes HTTP Basic with any user name and the key as password.
fn mailchimp_basic() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("anystring:{MAILCHIMP_KEY}"))
}

/// A released send: every `send.requested` is released at once.
const RELEASE_EVERY_SEND: &str = r#"
if event.type == "send.requested" {
    release_send(event.data.channel, "approved and aligned");
}
"#;

/// What Mailchimp's campaigns are, as the fake keeps them: id -> (status,
/// send_time), and how many times each was really sent or scheduled.
#[derive(Default)]
struct Campaigns {
    status: HashMap<String, (String, Option<String>)>,
    effects: Vec<String>,
}

/// A fake of the Marketing API 3.0's campaign actions, after its reference:
/// the campaign must exist (404 problem), a sent campaign cannot be sent or
/// scheduled again (400), a schedule needs a `schedule_time` on the quarter
/// hour, `GET /campaigns/{id}` reads the status. `first` answers the first
/// request instead, when it returns an answer.
async fn fake_mailchimp(
    campaigns: Arc<Mutex<Campaigns>>,
    first: impl Fn(&Call, &mut Campaigns) -> Option<Response> + Send + Sync + 'static,
) -> Fake {
    let basic = format!("Basic {}", mailchimp_basic());
    Fake::start(move |n, call| {
        let mut state = campaigns.lock().unwrap();
        if call.header("authorization") != Some(basic.as_str()) {
            return problem(
                StatusCode::UNAUTHORIZED,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            );
        }
        if n == 0
            && let Some(answer) = first(call, &mut state)
        {
            return answer;
        }
        let parts: Vec<&str> = call.path.trim_start_matches('/').split('/').collect();
        match (call.method.as_str(), parts.as_slice()) {
            ("GET", ["3.0", "campaigns", id]) => match state.status.get(*id) {
                Some((status, send_time)) => {
                    assert_eq!(call.query.as_deref(), Some("fields=status%2Csend_time"));
                    axum::Json(json!({"status": status, "send_time": send_time})).into_response()
                }
                None => problem(
                    StatusCode::NOT_FOUND,
                    "Resource Not Found",
                    "The requested resource could not be found.",
                ),
            },
            ("POST", ["3.0", "campaigns", id, "actions", action]) => {
                let id = (*id).to_string();
                let Some((status, _)) = state.status.get(&id).cloned() else {
                    return problem(
                        StatusCode::NOT_FOUND,
                        "Resource Not Found",
                        "The requested resource could not be found.",
                    );
                };
                if status == "sent" {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        "Bad Request",
                        "This campaign has already been sent.",
                    );
                }
                match *action {
                    "send" => {
                        assert_eq!(call.body, None);
                        state.status.insert(id.clone(), ("sent".into(), None));
                        state.effects.push(format!("send {id}"));
                    }
                    "schedule" => {
                        let body = call.body.clone().unwrap_or(Value::Null);
                        assert_eq!(
                            call.header("content-type"),
                            Some("application/json"),
                            "{call:?}"
                        );
                        let Some(time) = body["schedule_time"].as_str() else {
                            return problem(
                                StatusCode::BAD_REQUEST,
                                "Invalid Resource",
                                "The resource submitted could not be validated.",
                            );
                        };
                        if !matches!(&time[14..16], "00" | "15" | "30" | "45") {
                            return problem(
                                StatusCode::BAD_REQUEST,
                                "Bad Request",
                                "Schedule time must be on the quarter-hour (:00, :15, :30, :45).",
                            );
                        }
                        state
                            .status
                            .insert(id.clone(), ("schedule".into(), Some(time.to_string())));
                        state.effects.push(format!("schedule {id} {time} {body}"));
                    }
                    _ => return StatusCode::NOT_FOUND.into_response(),
                }
                StatusCode::NO_CONTENT.into_response()
            }
            _ => problem(
                StatusCode::NOT_FOUND,
                "Resource Not Found",
                "The requested resource could not be found.",
            ),
        }
    })
    .await
}

fn mailchimp_workspace(api: &Fake, route_config: &str) -> Workspace {
    Workspace::new(
        &[("gate", RELEASE_EVERY_SEND)],
        &format!(
            r#"{plugin}
[[routes]]
decision = "release_send"
plugin = "mailchimp"
channel = "email"
config = {{ base_url = "{url}/3.0", {route_config} }}
"#,
            plugin = plugin(
                "mailchimp",
                "mailchimp",
                &api.host,
                MAILCHIMP_KEY_ENV,
                "Basic"
            ),
            url = api.url(),
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_send_schedules_its_mailchimp_campaign_after_a_rate_limit() {
    let campaigns = Arc::new(Mutex::new(Campaigns::default()));
    campaigns
        .lock()
        .unwrap()
        .status
        .insert("b03bfc2d6e".into(), ("save".into(), None));
    // The first call meets Mailchimp's limit of simultaneous connections.
    let api = fake_mailchimp(campaigns.clone(), |_, _| {
        let mut answer = problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "You have exceeded the limit of 10 simultaneous connections.",
        );
        answer
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
        Some(answer)
    })
    .await;
    let ws = mailchimp_workspace(
        &api,
        r#"action = "schedule", campaigns = { "fall-26" = "b03bfc2d6e" }"#,
    );
    let basic = mailchimp_basic();
    let daemon = ws.start_with_env(&[(MAILCHIMP_KEY_ENV, basic.as_str())]);
    accept(
        &daemon,
        &event(
            "s-1",
            "send.requested",
            "campaign/fall-26",
            json!({"channel": "email", "send_at": "2026-11-24T09:30:00+01:00"}),
        ),
    )
    .await;
    let action = settled_action(&daemon, "s-1").await;
    assert_eq!(action["status"], "done", "{action:#}\n{}", daemon.log());
    assert_eq!(action["attempts"], 2, "{action:#}");
    assert_eq!(action["external_id"], "b03bfc2d6e");

    let calls = api.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    for call in &calls {
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/3.0/campaigns/b03bfc2d6e/actions/schedule");
        assert_eq!(
            call.body,
            Some(json!({"schedule_time": "2026-11-24T08:30:00+00:00", "timewarp": false}))
        );
    }
    // The retry waited as long as Retry-After asked, past the test's
    // 200 ms backoff ceiling.
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert_eq!(
        campaigns.lock().unwrap().effects,
        [
            r#"schedule b03bfc2d6e 2026-11-24T08:30:00+00:00 {"schedule_time":"2026-11-24T08:30:00+00:00","timewarp":false}"#
        ]
    );
    // The host added the key; neither the config nor the log holds it.
    let config = std::fs::read_to_string(ws.config()).unwrap();
    assert!(!config.contains(MAILCHIMP_KEY) && !config.contains(&basic));
    let log = daemon.log();
    assert!(!log.contains(MAILCHIMP_KEY) && !log.contains(&basic));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mailchimp_send_repeated_after_a_lost_reply_sends_once() {
    let campaigns = Arc::new(Mutex::new(Campaigns::default()));
    campaigns
        .lock()
        .unwrap()
        .status
        .insert("b03bfc2d6e".into(), ("save".into(), None));
    // The first send goes out, but its reply is lost: a gateway error.
    let api = fake_mailchimp(campaigns.clone(), |call, state| {
        assert_eq!(call.path, "/3.0/campaigns/b03bfc2d6e/actions/send");
        state
            .status
            .insert("b03bfc2d6e".into(), ("sent".into(), None));
        state.effects.push("send b03bfc2d6e".into());
        Some(StatusCode::BAD_GATEWAY.into_response())
    })
    .await;
    let ws = mailchimp_workspace(&api, r#"campaigns = { "fall-26" = "b03bfc2d6e" }"#);
    let basic = mailchimp_basic();
    let daemon = ws.start_with_env(&[(MAILCHIMP_KEY_ENV, basic.as_str())]);
    accept(
        &daemon,
        &event(
            "s-1",
            "send.requested",
            "campaign/fall-26",
            json!({"channel": "email"}),
        ),
    )
    .await;
    let action = settled_action(&daemon, "s-1").await;
    assert_eq!(action["status"], "done", "{action:#}\n{}", daemon.log());
    assert_eq!(action["attempts"], 2, "{action:#}");
    let calls: Vec<(String, String)> = api
        .calls()
        .iter()
        .map(|c| (c.method.clone(), c.path.clone()))
        .collect();
    assert_eq!(
        calls,
        [
            (
                "POST".into(),
                "/3.0/campaigns/b03bfc2d6e/actions/send".into()
            ),
            (
                "POST".into(),
                "/3.0/campaigns/b03bfc2d6e/actions/send".into()
            ),
            ("GET".into(), "/3.0/campaigns/b03bfc2d6e".into()),
        ]
    );
    // Mailchimp refused the repeat; the campaign's status showed it sent.
    assert_eq!(campaigns.lock().unwrap().effects, ["send b03bfc2d6e"]);
    let (_, body) = daemon.get("/v1/events/s-1").await;
    assert!(
        body.contains("mailchimp: sent campaign b03bfc2d6e (already)"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_mailchimp_campaign_is_a_dead_letter_with_mailchimps_detail() {
    let campaigns = Arc::new(Mutex::new(Campaigns::default()));
    let api = fake_mailchimp(campaigns.clone(), |_, _| None).await;
    let ws = mailchimp_workspace(&api, r#"campaigns = { "fall-26" = "0000deleted" }"#);
    let basic = mailchimp_basic();
    let daemon = ws.start_with_env(&[(MAILCHIMP_KEY_ENV, basic.as_str())]);
    accept(
        &daemon,
        &event(
            "s-1",
            "send.requested",
            "campaign/fall-26",
            json!({"channel": "email"}),
        ),
    )
    .await;
    // A campaign converge does not map is the operator's to fix, too.
    accept(
        &daemon,
        &event(
            "s-2",
            "send.requested",
            "campaign/spring",
            json!({"channel": "email"}),
        ),
    )
    .await;
    let action = settled_action(&daemon, "s-1").await;
    assert_eq!(action["status"], "dead_letter", "{action:#}");
    assert_eq!(action["attempts"], 1, "not retried: {action:#}");
    assert_eq!(
        action["detail"],
        "permanent failure: mailchimp: HTTP 404: Resource Not Found: The requested resource could not be found.",
        "{action:#}"
    );
    let unmapped = settled_action(&daemon, "s-2").await;
    assert_eq!(unmapped["status"], "dead_letter", "{unmapped:#}");
    assert!(
        unmapped["detail"]
            .as_str()
            .unwrap()
            .contains("plugin config: campaigns: no entry for campaign `spring`"),
        "{unmapped:#}"
    );
    // One call, for the mapped campaign only.
    assert_eq!(api.calls().len(), 1, "{:#?}", api.calls());
    assert!(campaigns.lock().unwrap().effects.is_empty());
}

const SENDGRID_KEY_ENV: &str = "CONVERGE_TEST_SENDGRID_KEY";
const SENDGRID_KEY: &str = "SG.fake-key-id.fake-key-secret";
const SINGLE_SEND: &str = "27c21bd1-d1bc-11ea-8f22-9ea2f5b0bd05";

#[tokio::test(flavor = "multi_thread")]
async fn a_held_send_cancels_and_its_release_schedules_the_sendgrid_single_send() {
    // The single send as SendGrid keeps it: status and send_at.
    let single = Arc::new(Mutex::new((
        "scheduled".to_string(),
        Some("2026-11-24T08:00:00Z".to_string()),
    )));
    let state = single.clone();
    let api = Fake::start(move |_, call| {
        let auth = format!("Bearer {SENDGRID_KEY}");
        if call.header("authorization") != Some(auth.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"errors": [{"field": null, "message": "authorization required"}]})),
            )
                .into_response();
        }
        let path = format!("/v3/marketing/singlesends/{SINGLE_SEND}/schedule");
        if call.path != path {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"errors": [{"field": "id", "message": "Single Send not found"}]})),
            )
                .into_response();
        }
        let mut single = state.lock().unwrap();
        match call.method.as_str() {
            "DELETE" => {
                *single = ("draft".into(), None);
                axum::Json(json!({"id": SINGLE_SEND, "status": "draft"})).into_response()
            }
            "PUT" => {
                let send_at = call.body.as_ref().and_then(|b| b["send_at"].as_str());
                let Some(send_at) = send_at else {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(json!({"errors": [{"field": "send_at", "message": "send_at is required"}]})),
                    )
                        .into_response();
                };
                *single = ("scheduled".into(), Some(send_at.to_string()));
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"send_at": send_at, "status": "scheduled"})),
                )
                    .into_response()
            }
            _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        }
    })
    .await;
    let rules = r#"
if event.type == "send.requested" {
    hold_send(event.data.channel, "legal has not approved the claims");
}
if event.type == "legal.approved" {
    for held in gate.held {
        release_send(held.channel, "legal approved the claims");
    }
}
"#;
    let ws = Workspace::new(
        &[("claims", rules)],
        &format!(
            r#"{plugin}
[[routes]]
decision = "hold_send"
plugin = "sendgrid"
channel = "email"
config = {{ base_url = "{url}", single_sends = {{ "fall-26" = "{SINGLE_SEND}" }} }}

[[routes]]
decision = "release_send"
plugin = "sendgrid"
channel = "email"
config = {{ base_url = "{url}", single_sends = {{ "fall-26" = "{SINGLE_SEND}" }} }}
"#,
            plugin = plugin(
                "sendgrid",
                "sendgrid_campaigns",
                &api.host,
                SENDGRID_KEY_ENV,
                "Bearer"
            ),
            url = api.url(),
        ),
    );
    let daemon = ws.start_with_env(&[(SENDGRID_KEY_ENV, SENDGRID_KEY)]);
    accept(
        &daemon,
        &event(
            "s-1",
            "send.requested",
            "campaign/fall-26",
            json!({"channel": "email", "send_at": "2026-11-24T09:05:00+01:00"}),
        ),
    )
    .await;
    let hold = settled_action(&daemon, "s-1").await;
    assert_eq!(hold["status"], "done", "{hold:#}\n{}", daemon.log());
    assert_eq!(*single.lock().unwrap(), ("draft".to_string(), None));

    accept(
        &daemon,
        &event("l-1", "legal.approved", "campaign/fall-26", json!({})),
    )
    .await;
    let release = settled_action(&daemon, "l-1").await;
    assert_eq!(release["status"], "done", "{release:#}\n{}", daemon.log());
    assert_eq!(release["external_id"], SINGLE_SEND);
    assert_eq!(
        *single.lock().unwrap(),
        (
            "scheduled".to_string(),
            Some("2026-11-24T08:05:00Z".to_string())
        )
    );
    let calls = api.calls();
    let summary: Vec<(&str, Option<&Value>)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.body.as_ref()))
        .collect();
    assert_eq!(
        summary,
        [
            ("DELETE", None),
            ("PUT", Some(&json!({"send_at": "2026-11-24T08:05:00Z"}))),
        ]
    );
    assert!(!daemon.log().contains(SENDGRID_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sendgrid_rate_limit_waits_until_its_reset() {
    // 429 with X-RateLimit-Reset two seconds after the response's Date.
    let api = Fake::start(|n, call| {
        if n == 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let date = http_date(now);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("x-ratelimit-limit", "600".to_string()),
                    ("x-ratelimit-remaining", "0".to_string()),
                    ("x-ratelimit-reset", (now + 2).to_string()),
                    ("date", date),
                ],
                axum::Json(json!({"errors": [{"field": null, "message": "too many requests"}]})),
            )
                .into_response();
        }
        assert_eq!(call.method, "PUT");
        assert_eq!(call.body, Some(json!({"send_at": "now"})));
        (
            StatusCode::CREATED,
            axum::Json(json!({"send_at": "2026-11-24T08:05:00Z", "status": "triggered"})),
        )
            .into_response()
    })
    .await;
    let ws = Workspace::new(
        &[("gate", RELEASE_EVERY_SEND)],
        &format!(
            r#"{plugin}
[[routes]]
decision = "release_send"
plugin = "sendgrid"
config = {{ base_url = "{url}", single_send_id = "{SINGLE_SEND}" }}
"#,
            plugin = plugin(
                "sendgrid",
                "sendgrid_campaigns",
                &api.host,
                SENDGRID_KEY_ENV,
                "Bearer"
            ),
            url = api.url(),
        ),
    );
    let daemon = ws.start_with_env(&[(SENDGRID_KEY_ENV, SENDGRID_KEY)]);
    accept(
        &daemon,
        &event(
            "s-1",
            "send.requested",
            "campaign/fall-26",
            json!({"channel": "email"}),
        ),
    )
    .await;
    let action = settled_action(&daemon, "s-1").await;
    assert_eq!(action["status"], "done", "{action:#}\n{}", daemon.log());
    assert_eq!(action["attempts"], 2);
    let calls = api.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].header("authorization"),
        Some(format!("Bearer {SENDGRID_KEY}").as_str())
    );
    // Reset is 2 s after Date (whole seconds, so at least 1 s passed).
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
}

/// IMF-fixdate of a time in seconds since the epoch, as servers send `Date`.
fn http_date(seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

const META_TOKEN_ENV: &str = "CONVERGE_TEST_META_TOKEN";
const META_TOKEN: &str = "EAAfake0meta0system0user0token";

/// A rule pausing the checked channel when a consistency check fails, and
/// resuming it when one passes.
const PAUSE_ON_CONSISTENCY: &str = r#"
if event.type == "consistency.checked" && event.data.score < 0.8 {
    pause_channel(event.data.channel, `consistency ${event.data.score}`);
}
if event.type == "consistency.checked" && event.data.score >= 0.8 {
    resume_channel(event.data.channel, "consistent again");
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn pausing_the_paid_channel_pauses_its_meta_ad_sets_through_a_rate_limit() {
    let statuses: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(
        [
            ("120210000000000001", "ACTIVE"),
            ("120210000000000002", "ACTIVE"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    ));
    let state = statuses.clone();
    let api = Fake::start(move |n, call| {
        let error = |status: StatusCode, error: Value| (status, axum::Json(json!({"error": error}))).into_response();
        if call.header("authorization") != Some(format!("Bearer {META_TOKEN}").as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"message": "Invalid OAuth access token - Cannot parse access token", "type": "OAuthException", "code": 190, "fbtrace_id": "Fk1"}),
            );
        }
        // The first call meets the ads management rate limit.
        if n == 0 {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"message": "There have been too many calls from this ad-account. Please wait a bit and try again.", "type": "OAuthException", "code": 80004, "error_subcode": 2446079, "fbtrace_id": "Fk2"}),
            );
        }
        let id = call.path.strip_prefix("/v24.0/").unwrap_or_default();
        let mut statuses = state.lock().unwrap();
        let Some(current) = statuses.get_mut(id) else {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"message": format!("Unsupported post request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."), "type": "GraphMethodException", "code": 100, "error_subcode": 33, "fbtrace_id": "Fk3"}),
            );
        };
        match call.body.as_ref().and_then(|b| b["status"].as_str()) {
            Some(status @ ("ACTIVE" | "PAUSED")) if call.method == "POST" => {
                *current = status.to_string();
                axum::Json(json!({"success": true})).into_response()
            }
            _ => error(
                StatusCode::BAD_REQUEST,
                json!({"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100, "fbtrace_id": "Fk4"}),
            ),
        }
    })
    .await;
    let ws = Workspace::new(
        &[("pause", PAUSE_ON_CONSISTENCY)],
        &format!(
            r#"{plugin}
[[routes]]
decision = "pause_channel"
plugin = "meta"
channel = "paid"
config = {{ base_url = "{url}", objects = {{ "fall-26" = ["120210000000000001", "120210000000000002"], "spring" = "999" }} }}

[[routes]]
decision = "resume_channel"
plugin = "meta"
channel = "paid"
config = {{ base_url = "{url}", objects = {{ "fall-26" = ["120210000000000001", "120210000000000002"] }} }}
"#,
            plugin = plugin("meta", "meta_ads", &api.host, META_TOKEN_ENV, "Bearer"),
            url = api.url(),
        ),
    );
    let daemon = ws.start_with_env(&[(META_TOKEN_ENV, META_TOKEN)]);
    accept(
        &daemon,
        &event(
            "c-1",
            "consistency.checked",
            "campaign/fall-26",
            json!({"channel": "paid", "score": 0.61}),
        ),
    )
    .await;
    let pause = settled_action(&daemon, "c-1").await;
    assert_eq!(pause["status"], "done", "{pause:#}\n{}", daemon.log());
    assert_eq!(pause["attempts"], 2, "{pause:#}");
    assert_eq!(
        pause["external_id"],
        "120210000000000001,120210000000000002"
    );
    let all_paused = statuses.lock().unwrap().values().all(|s| s == "PAUSED");
    assert!(all_paused, "{:?}", statuses.lock().unwrap());
    let calls = api.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v24.0/120210000000000001",
            "/v24.0/120210000000000001",
            "/v24.0/120210000000000002"
        ]
    );
    assert!(
        calls
            .iter()
            .all(|c| c.body == Some(json!({"status": "PAUSED"})))
    );

    // Consistent again: the ad sets go back to ACTIVE.
    accept(
        &daemon,
        &event(
            "c-2",
            "consistency.checked",
            "campaign/fall-26",
            json!({"channel": "paid", "score": 0.93}),
        ),
    )
    .await;
    let resume = settled_action(&daemon, "c-2").await;
    assert_eq!(resume["status"], "done", "{resume:#}");
    let all_active = statuses.lock().unwrap().values().all(|s| s == "ACTIVE");
    assert!(all_active, "{:?}", statuses.lock().unwrap());

    // An ad set Meta does not know: a dead letter with Meta's message.
    accept(
        &daemon,
        &event(
            "c-3",
            "consistency.checked",
            "campaign/spring",
            json!({"channel": "paid", "score": 0.2}),
        ),
    )
    .await;
    let unknown = settled_action(&daemon, "c-3").await;
    assert_eq!(unknown["status"], "dead_letter", "{unknown:#}");
    assert_eq!(unknown["attempts"], 1);
    let detail = unknown["detail"].as_str().unwrap();
    assert!(
        detail.contains("Object with ID '999' does not exist")
            && detail.contains("code 100, subcode 33, fbtrace_id Fk3"),
        "{detail}"
    );
    assert!(!daemon.log().contains(META_TOKEN));
}

const LINKEDIN_TOKEN_ENV: &str = "CONVERGE_TEST_LINKEDIN_TOKEN";
const LINKEDIN_TOKEN: &str = "AQfake-linkedin-member-token";

#[tokio::test(flavor = "multi_thread")]
async fn pausing_a_channel_pauses_its_linkedin_campaign_with_a_versioned_partial_update() {
    let status = Arc::new(Mutex::new("ACTIVE".to_string()));
    let state = status.clone();
    let api = Fake::start(move |n, call| {
        let error = |status: StatusCode, code: &str, service: u32, message: &str| {
            (
                status,
                axum::Json(json!({"status": status.as_u16(), "serviceErrorCode": service, "code": code, "message": message})),
            )
                .into_response()
        };
        if call.header("authorization") != Some(format!("Bearer {LINKEDIN_TOKEN}").as_str()) {
            return error(StatusCode::UNAUTHORIZED, "INVALID_ACCESS_TOKEN", 65600, "Invalid access token");
        }
        if call.header("linkedin-version").is_none_or(|v| v.len() != 6) {
            return error(StatusCode::BAD_REQUEST, "VERSION_MISSING", 0, "A version must be present. Please specify a version by adding the LinkedIn-Version header.");
        }
        if call.header("x-restli-protocol-version") != Some("2.0.0")
            || call.header("x-restli-method") != Some("PARTIAL_UPDATE")
        {
            return error(StatusCode::BAD_REQUEST, "ILLEGAL_ARGUMENT", 100, "Unsupported method");
        }
        // The first call meets the daily application limit, without a Retry-After.
        if n == 0 {
            return error(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS", 101, "Resource level throttle APPLICATION DAY limit for calls to this resource is reached.");
        }
        if call.method != "POST" || call.path != "/rest/adAccounts/508915158/adCampaigns/299395414" {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", 0, "Not Found");
        }
        match call.body.as_ref().and_then(|b| b.pointer("/patch/$set/status")).and_then(Value::as_str) {
            Some(new @ ("ACTIVE" | "PAUSED")) => {
                *state.lock().unwrap() = new.to_string();
                StatusCode::NO_CONTENT.into_response()
            }
            _ => error(StatusCode::BAD_REQUEST, "FIELD_VALUE_DOES_NOT_MATCH_PATTERN", 100, "Invalid patch"),
        }
    })
    .await;
    let ws = Workspace::new(
        &[("pause", PAUSE_ON_CONSISTENCY)],
        &format!(
            r#"{plugin}
[[routes]]
decision = "pause_channel"
plugin = "linkedin"
channel = "linkedin"
config = {{ base_url = "{url}/rest", account_id = "urn:li:sponsoredAccount:508915158", campaigns = {{ "fall-26" = "urn:li:sponsoredCampaign:299395414" }} }}
"#,
            plugin = plugin(
                "linkedin",
                "linkedin_ads",
                &api.host,
                LINKEDIN_TOKEN_ENV,
                "Bearer"
            ),
            url = api.url(),
        ),
    );
    let daemon = ws.start_with_env(&[(LINKEDIN_TOKEN_ENV, LINKEDIN_TOKEN)]);
    accept(
        &daemon,
        &event(
            "c-1",
            "consistency.checked",
            "campaign/fall-26",
            json!({"channel": "linkedin", "score": 0.5}),
        ),
    )
    .await;
    let action = settled_action(&daemon, "c-1").await;
    assert_eq!(action["status"], "done", "{action:#}\n{}", daemon.log());
    assert_eq!(action["attempts"], 2, "rate limited once: {action:#}");
    assert_eq!(action["external_id"], "urn:li:sponsoredCampaign:299395414");
    assert_eq!(*status.lock().unwrap(), "PAUSED");
    let calls = api.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].header("linkedin-version"), Some("202601"));
    assert_eq!(
        calls[1].body,
        Some(json!({"patch": {"$set": {"status": "PAUSED"}}}))
    );
    assert!(!daemon.log().contains(LINKEDIN_TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn pausing_and_resuming_the_email_channel_pauses_and_starts_its_mailchimp_automation() {
    // The classic automation's status, as Mailchimp keeps it.
    let automation = Arc::new(Mutex::new("sending".to_string()));
    let state = automation.clone();
    let basic = format!("Basic {}", mailchimp_basic());
    let api = Fake::start(move |_, call| {
        if call.header("authorization") != Some(basic.as_str()) {
            return problem(
                StatusCode::UNAUTHORIZED,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            );
        }
        let mut status = state.lock().unwrap();
        match (call.method.as_str(), call.path.as_str()) {
            ("GET", "/3.0/automations/4e3a0c9b1d") => {
                axum::Json(json!({"status": *status})).into_response()
            }
            ("POST", "/3.0/automations/4e3a0c9b1d/actions/pause-all-emails") => {
                if *status == "paused" {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        "Bad Request",
                        "This automation is already paused.",
                    );
                }
                *status = "paused".into();
                StatusCode::NO_CONTENT.into_response()
            }
            ("POST", "/3.0/automations/4e3a0c9b1d/actions/start-all-emails") => {
                *status = "sending".into();
                StatusCode::NO_CONTENT.into_response()
            }
            _ => problem(
                StatusCode::NOT_FOUND,
                "Resource Not Found",
                "The requested resource could not be found.",
            ),
        }
    })
    .await;
    let config = format!(
        r#"base_url = "{}/3.0", automations = {{ "fall-26" = "4e3a0c9b1d" }}"#,
        api.url()
    );
    let ws = Workspace::new(
        &[("pause", PAUSE_ON_CONSISTENCY)],
        &format!(
            r#"{plugin}
[[routes]]
decision = "pause_channel"
plugin = "mailchimp"
channel = "email"
config = {{ {config} }}

[[routes]]
decision = "resume_channel"
plugin = "mailchimp"
channel = "email"
config = {{ {config} }}
"#,
            plugin = plugin(
                "mailchimp",
                "mailchimp",
                &api.host,
                MAILCHIMP_KEY_ENV,
                "Basic"
            ),
        ),
    );
    let key = mailchimp_basic();
    let daemon = ws.start_with_env(&[(MAILCHIMP_KEY_ENV, key.as_str())]);
    let check = |id: &str, score: f64| {
        event(
            id,
            "consistency.checked",
            "campaign/fall-26",
            json!({"channel": "email", "score": score}),
        )
    };
    accept(&daemon, &check("c-1", 0.4)).await;
    let pause = settled_action(&daemon, "c-1").await;
    assert_eq!(pause["status"], "done", "{pause:#}\n{}", daemon.log());
    assert_eq!(*automation.lock().unwrap(), "paused");

    // Paused again (another failing check): Mailchimp refuses, the status
    // says paused, so the action is done and nothing changed.
    accept(&daemon, &check("c-2", 0.3)).await;
    let again = settled_action(&daemon, "c-2").await;
    assert_eq!(again["status"], "done", "{again:#}\n{}", daemon.log());
    assert_eq!(again["attempts"], 1);

    accept(&daemon, &check("c-3", 0.95)).await;
    let resume = settled_action(&daemon, "c-3").await;
    assert_eq!(resume["status"], "done", "{resume:#}");
    assert_eq!(*automation.lock().unwrap(), "sending");

    let calls: Vec<String> = api
        .calls()
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(
        calls,
        [
            "POST /3.0/automations/4e3a0c9b1d/actions/pause-all-emails",
            "POST /3.0/automations/4e3a0c9b1d/actions/pause-all-emails",
            "GET /3.0/automations/4e3a0c9b1d",
            "POST /3.0/automations/4e3a0c9b1d/actions/start-all-emails",
        ]
    );
    let (_, body) = daemon.get("/v1/events/c-2").await;
    assert!(
        body.contains("mailchimp: paused automation 4e3a0c9b1d (already)"),
        "{body}"
    );
}
