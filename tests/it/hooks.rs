//! Listed hooks (`[hooks.<name>]`): signatures checked before anything is
//! journaled, 401 and nothing kept when they fail, Asana's handshake,
//! Slack's URL verification, Trello's HEAD check, and unlisted hooks refused
//! on request. The schemes themselves are tested against the published
//! vectors in `converge-signatures`; here, that the daemon uses them.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Daemon, Workspace, event};

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
/// Standard Webhooks secrets: the old one and the one it is rotated to.
const OLD_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_WHSEC: &str = "whsec_dGhlIG5ldyBzZWNyZXQgYWZ0ZXIgcm90YXRpb24=";

const CLOUDEVENTS: &str = "application/cloudevents+json";

fn workspace(extra: &str) -> Workspace {
    Workspace::new(
        &[],
        &format!(
            r#"
[hooks.github]
verify = "github"
secret_env = "CONVERGE_TEST_GITHUB_SECRET"

[hooks.partner]
verify = "standard-webhooks"
secret_env = ["CONVERGE_TEST_WHSEC_OLD", "CONVERGE_TEST_WHSEC_NEW"]

[hooks.asana]
verify = "asana"

[hooks.slack]
verify = "slack"
secret_env = "CONVERGE_TEST_SLACK_SECRET"

[hooks.unset]
verify = "github"
secret_env = "CONVERGE_TEST_NOT_SET"
{extra}"#
        ),
    )
}

fn start(ws: &Workspace) -> Daemon {
    ws.start_with_env(&[
        ("CONVERGE_TEST_GITHUB_SECRET", GITHUB_SECRET),
        ("CONVERGE_TEST_WHSEC_OLD", OLD_WHSEC),
        ("CONVERGE_TEST_WHSEC_NEW", NEW_WHSEC),
        ("CONVERGE_TEST_SLACK_SECRET", "slack-signing-secret"),
    ])
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn github_signature(body: &str) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(GITHUB_SECRET.as_bytes(), body.as_bytes()))
    )
}

fn standard_webhooks_signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mac = hmac_sha256(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn journaled(daemon: &Daemon, id: &str) -> bool {
    daemon.get(&format!("/v1/events/{id}")).await.0 == 200
}

async fn rejected_signatures(daemon: &Daemon) -> f64 {
    daemon
        .metric("converge_events_rejected_total{reason=\"Signature\"}")
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_request_is_journaled_and_a_bad_one_gets_401_and_nothing_kept() {
    let ws = workspace("");
    let daemon = start(&ws);
    let body = event(
        "gh-1",
        "task.created",
        "task/T-1",
        json!({"title": "brief"}),
    )
    .to_string();

    let (status, _, answer) = daemon
        .request(
            Method::POST,
            "/hooks/github",
            &[
                ("content-type", CLOUDEVENTS),
                ("x-hub-signature-256", &github_signature(&body)),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert!(journaled(&daemon, "gh-1").await);

    // The same signature over a changed body, a wrong secret, no signature.
    let tampered = body.replace("brief", "BRIEF").replace("gh-1", "gh-2");
    let original_signature = github_signature(&body);
    let wrong_secret = format!(
        "sha256={}",
        hex::encode(hmac_sha256(b"not the secret", tampered.as_bytes()))
    );
    for headers in [
        vec![
            ("content-type", CLOUDEVENTS),
            ("x-hub-signature-256", original_signature.as_str()),
        ],
        vec![
            ("content-type", CLOUDEVENTS),
            ("x-hub-signature-256", wrong_secret.as_str()),
        ],
        vec![("content-type", CLOUDEVENTS)],
    ] {
        let (status, _, answer) = daemon
            .request(Method::POST, "/hooks/github", &headers, tampered.clone())
            .await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["code"], "bad_signature", "{answer}");
    }
    assert!(!journaled(&daemon, "gh-2").await);
    assert_eq!(rejected_signatures(&daemon).await, 3.0);
    assert_eq!(daemon.metric("converge_journal_events").await, 1.0);

    // A hook whose secret variable is not set refuses, and says what to set.
    let (status, _, answer) = daemon
        .request(
            Method::POST,
            "/hooks/unset",
            &[
                ("content-type", CLOUDEVENTS),
                ("x-hub-signature-256", &github_signature(&tampered)),
            ],
            tampered.clone(),
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("set CONVERGE_TEST_NOT_SET"),
        "{answer}"
    );
    // No secret appears in what the daemon wrote.
    let log = daemon.log();
    assert!(!log.contains(GITHUB_SECRET), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_webhooks_accept_either_secret_during_rotation_and_refuse_stale_requests() {
    let ws = workspace("");
    let daemon = start(&ws);
    let post = |secret: &'static str, id: &'static str, timestamp: i64| {
        let body = event(
            id,
            "asset.updated",
            "asset/banner-1",
            json!({"stage": "review"}),
        )
        .to_string();
        let signature = standard_webhooks_signature(secret, &format!("msg-{id}"), timestamp, &body);
        let daemon = &daemon;
        async move {
            let timestamp = timestamp.to_string();
            let delivery = format!("msg-{id}");
            daemon
                .request(
                    Method::POST,
                    "/hooks/partner",
                    &[
                        ("content-type", CLOUDEVENTS),
                        ("webhook-id", &delivery),
                        ("webhook-timestamp", &timestamp),
                        ("webhook-signature", &signature),
                    ],
                    body,
                )
                .await
        }
    };
    assert_eq!(post(OLD_WHSEC, "sw-1", now()).await.0, 202);
    assert_eq!(post(NEW_WHSEC, "sw-2", now()).await.0, 202);
    let (status, _, answer) = post(NEW_WHSEC, "sw-3", now() - 3600).await;
    assert_eq!(status, 401, "{answer}");
    assert!(journaled(&daemon, "sw-2").await);
    assert!(!journaled(&daemon, "sw-3").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_asana_hook_keeps_the_handshake_secret_and_refuses_a_second_handshake() {
    let ws = workspace("");
    let daemon = start(&ws);
    let body = event(
        "as-1",
        "task.updated",
        "task/T-9",
        json!({"section": "Review"}),
    )
    .to_string();
    let signed = |secret: &str| hex::encode(hmac_sha256(secret.as_bytes(), body.as_bytes()));

    // Before the handshake there is no secret to check with.
    let (status, _, _) = daemon
        .request(
            Method::POST,
            "/hooks/asana",
            &[
                ("content-type", CLOUDEVENTS),
                ("x-hook-signature", &signed("x")),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, 401);

    let (status, headers, _) = daemon
        .request(
            Method::POST,
            "/hooks/asana",
            &[("x-hook-secret", "asana-secret-1")],
            "",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-hook-secret"], "asana-secret-1");

    // A stranger's handshake cannot replace it.
    let (status, _, answer) = daemon
        .request(
            Method::POST,
            "/hooks/asana",
            &[("x-hook-secret", "stolen")],
            "",
        )
        .await;
    assert_eq!(status, 401, "{answer}");

    assert_eq!(deliver(&daemon, &body, &signed("stolen")).await, 401);
    assert_eq!(
        deliver(&daemon, &body, &signed("asana-secret-1")).await,
        202
    );
    daemon.kill9();

    // The secret survives a restart.
    let daemon = start(&ws);
    assert_eq!(
        deliver(&daemon, &body, &signed("asana-secret-1")).await,
        202,
        "{}",
        daemon.log()
    );
    assert_eq!(deliver(&daemon, &body, &signed("stolen")).await, 401);
}

async fn deliver(daemon: &Daemon, body: &str, signature: &str) -> u16 {
    daemon
        .request(
            Method::POST,
            "/hooks/asana",
            &[
                ("content-type", CLOUDEVENTS),
                ("x-hook-signature", signature),
            ],
            body.to_string(),
        )
        .await
        .0
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_url_verification_is_answered_only_when_signed() {
    let ws = workspace("");
    let daemon = start(&ws);
    let body = json!({"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let timestamp = now().to_string();
    let signature = format!(
        "v0={}",
        hex::encode(hmac_sha256(
            b"slack-signing-secret",
            format!("v0:{timestamp}:{body}").as_bytes()
        ))
    );
    let (status, _, answer) = daemon
        .request(
            Method::POST,
            "/hooks/slack",
            &[
                ("content-type", "application/json"),
                ("x-slack-request-timestamp", &timestamp),
                ("x-slack-signature", &signature),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let (status, _, _) = daemon
        .request(
            Method::POST,
            "/hooks/slack",
            &[
                ("content-type", "application/json"),
                ("x-slack-request-timestamp", &timestamp),
                ("x-slack-signature", "v0=00"),
            ],
            body,
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn unlisted_hooks_can_be_refused_and_head_answers_for_listed_ones() {
    let ws = workspace("");
    ws.edit_config("[server]\n", "[server]\nunlisted_hooks = \"reject\"\n");
    let daemon = start(&ws);
    let (status, answer) = daemon
        .post(
            "/hooks/anything",
            CLOUDEVENTS,
            event("u-1", "task.created", "task/T-1", Value::Null).to_string(),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "unknown_hook");
    for (path, expected) in [("/hooks/github", 200), ("/hooks/anything", 404)] {
        let (status, _, _) = daemon.request(Method::HEAD, path, &[], "").await;
        assert_eq!(status, expected, "HEAD {path}");
    }
    // The console's health page says so.
    let (status, page) = daemon.get("/ui/health").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Hooks the config does not list are refused (404)"),
        "{page}"
    );
}

#[test]
fn bad_hook_settings_name_their_keys() {
    let ws = Workspace::new(
        &[],
        r#"
[hooks.trello]
verify = "trello"
secret_env = "TRELLO_SECRET"

[hooks.other]
verify = "gitlab"

[hooks.github]
verify = "github"
secret_env = "GH"
tolerance = "5m"
"#,
    );
    let out = ws.converge(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for key in [
        "hooks.trello.url:",
        "hooks.other.verify: unknown signature scheme `gitlab`",
        "hooks.github.tolerance:",
    ] {
        assert!(stderr.contains(key), "no `{key}` in:\n{stderr}");
    }
}

/// An event's identity is its source, id and the hook it came in on: what
/// anyone posts to another hook, even with a tool's source and id, neither
/// suppresses that tool's signed delivery nor reads as it to the rules.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_on_another_hook_cannot_suppress_or_pose_as_a_listed_hooks() {
    let ws = Workspace::new(
        &[("who", "print(`on ${event.hook}`);")],
        r#"
[hooks.github]
verify = "github"
secret_env = "CONVERGE_TEST_GITHUB_SECRET"
"#,
    );
    let daemon = start(&ws);
    let mut posed = event(
        "wh-42",
        "task.updated",
        "task/T-1",
        json!({"stage": "done"}),
    );
    posed["source"] = json!("https://github.com/acme/site");
    let body = posed.to_string();

    // First, a stranger on an open hook, with the tool's source and id.
    let (status, answer) = daemon
        .post("/hooks/anyone", CLOUDEVENTS, body.clone())
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["events"][0]["status"], "accepted", "{answer}");
    // Then the tool's signed delivery of the same event: journaled, not a duplicate.
    let signature = github_signature(&body);
    let headers = [
        ("content-type", CLOUDEVENTS),
        ("x-hub-signature-256", signature.as_str()),
    ];
    let signed = || daemon.request(Method::POST, "/hooks/github", &headers, body.clone());
    let (status, _, answer) = signed().await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["events"][0]["status"], "accepted", "{answer}");
    // Its redelivery on its own hook is the duplicate.
    let (_, _, again) = signed().await;
    assert_eq!(again["events"][0]["status"], "duplicate", "{again}");
    assert_eq!(again["events"][0]["seq"], answer["events"][0]["seq"]);

    // Both are in the journal, each with its hook, and the rules told them apart.
    let trail = loop {
        let (_, body) = daemon.get("/v1/events/wh-42").await;
        let trail: Value = serde_json::from_str(&body).unwrap();
        let events = trail["events"].as_array().unwrap();
        if events.len() == 2 && events.iter().all(|e| !e["processed_at_ms"].is_null()) {
            break trail;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let seen: Vec<(String, String)> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["hook"].as_str().unwrap().to_string(),
                e["rule_notes"][0]["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("anyone".to_string(), "on anyone".to_string()),
            ("github".to_string(), "on github".to_string())
        ]
    );

    // `explain` tells them apart by hook or source.
    let out = ws.converge(&["explain", "wh-42", "--hook", "github"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("on hook github") && !text.contains("on hook anyone"),
        "{text}"
    );
    let out = ws.converge(&["explain", "wh-42", "--source", "https://elsewhere"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("https://github.com/acme/site (hook anyone)"),
        "{stderr}"
    );

    // Only converge names an event's hook.
    let mut forged = event("wh-43", "task.updated", "task/T-1", json!({}));
    forged["convergehook"] = json!("github");
    let (status, answer) = daemon
        .post("/hooks/anyone", CLOUDEVENTS, forged.to_string())
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("convergehook"),
        "{answer}"
    );
}

/// A Zapier/Make-style hook: plain JSON, signed with a shared secret,
/// mapped to events by the hook's templates.
#[tokio::test(flavor = "multi_thread")]
async fn plain_json_is_mapped_to_events_by_the_hooks_templates() {
    let ws = Workspace::new(
        &[(
            "say",
            "print(`${event.type} ${event.subject} ${event.data.channel}`);",
        )],
        r#"
[hooks.zapier]
verify = "hmac-sha256"
secret_env = "CONVERGE_TEST_ZAPIER_SECRET"
header = "x-zapier-signature"
[hooks.zapier.json]
type = "brief.{/action}"
subject = "campaign/{/campaign}"
id = "{/submission_id}"
time = "{/submitted_at}"
"#,
    );
    let daemon = ws.start_with_env(&[("CONVERGE_TEST_ZAPIER_SECRET", "zap-secret")]);
    let daemon = &daemon;
    let post = |body: String, content_type: &'static str| {
        let signature = hex::encode(hmac_sha256(b"zap-secret", body.as_bytes()));
        async move {
            let headers = [
                ("content-type", content_type),
                ("x-zapier-signature", signature.as_str()),
            ];
            daemon
                .request(Method::POST, "/hooks/zapier", &headers, body)
                .await
        }
    };
    let body = json!({
        "action": "submitted", "campaign": "spring", "channel": "email",
        "submission_id": 991, "submitted_at": "2026-11-23T10:00:00Z"
    })
    .to_string();

    let (status, _, answer) = post(body.clone(), "application/json").await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["events"][0]["status"], "accepted");
    assert_eq!(answer["events"][0]["source"], "hook/zapier");
    let trail = daemon
        .wait_for_trail("991", |t| t["processed_at_ms"].is_i64())
        .await;
    assert_eq!(trail["type"], "brief.submitted");
    assert_eq!(trail["subject"], "campaign/spring");
    assert_eq!(trail["hook"], "zapier");
    assert_eq!(
        trail["rule_notes"][0]["message"],
        "brief.submitted campaign/spring email"
    );
    // The sender's retry is a duplicate.
    let (_, _, again) = post(body.clone(), "application/json").await;
    assert_eq!(again["events"][0]["status"], "duplicate");

    // What the templates cannot fill, and what is not plain JSON, is refused.
    let (status, _, answer) = post(json!({"action": "x"}).to_string(), "application/json").await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("invalid_event"))
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`/submission_id` is missing"),
        "{answer}"
    );
    let (status, _, answer) = post(body.clone(), CLOUDEVENTS).await;
    assert_eq!(status, 415, "{answer}");
    let (status, _, _) = post("{not json".into(), "application/json").await;
    assert_eq!(status, 400);
    // The signature is checked first, as on every listed hook.
    let (status, _, _) = daemon
        .request(
            Method::POST,
            "/hooks/zapier",
            &[("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(status, 401);
}
