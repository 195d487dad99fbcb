//! Mailchimp: audience webhooks, which sign nothing, checked by the secret
//! in the hook's URL (`url-secret`); Mailchimp's GET check of a new
//! webhook's URL answered without an event; the published subscribe form
//! decoded onto its member and deduplicated; a campaign sent decoded onto
//! the converge campaign the table maps it to, and decided on.

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{decoder_plugin, deliver, fixture_json, notifications, processed_trails, statuses};
use crate::support::Workspace;

const KEY_ENV: &str = "CONVERGE_TEST_MAILCHIMP_KEY";
const KEY: &str = "c0ffee5e11a9b7d3e1f20a4b";
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A form body of these pairs, encoded as Mailchimp sends it.
fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        form.append_pair(name, value);
    }
    form.finish().into_bytes()
}

/// The published subscribe sample, as the form it is on the wire.
fn subscribe_form() -> Vec<u8> {
    let fields: Map<String, Value> = serde_json::from_value(fixture_json(
        "mailchimp/marketing_webhook.subscribe.form_fields.json",
    ))
    .unwrap();
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str().unwrap()))
        .collect();
    form(&pairs)
}

/// A hook checked by the secret in its URL, decoding onto the campaign
/// `spring-launch`, and a rule that notifies of every campaign sent.
fn workspace() -> Workspace {
    Workspace::new(
        &[(
            "email_launch",
            r#"
if event.type == "mailchimp.campaign.sent" {
    notify("launches", `${event.data.campaign} went out on ${event.data.channel}: ${event.data.title}`);
}
"#,
        )],
        &format!(
            r#"{plugin}
[hooks.mailchimp]
verify = "url-secret"
secret_env = "{KEY_ENV}"
decode = "mailchimp"
config = {{ campaigns = {{ spring-launch = "4d2b1d8f70" }} }}

[hooks.plain]
"#,
            plugin = decoder_plugin("mailchimp"),
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn mailchimp_audience_webhooks_are_checked_by_the_secret_in_their_url_and_decoded() {
    let ws = workspace();
    let daemon = ws.start_with_env(&[(KEY_ENV, KEY)]);
    let hook = format!("mailchimp?key={KEY}");

    // Mailchimp checks the URL with a GET when the webhook is created.
    let (status, _, answer) = daemon
        .request(Method::GET, &format!("/hooks/{hook}"), &[], "")
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"events": []}));
    for (query, refusal) in [
        ("", "missing query parameter `key`"),
        (
            "?key=guess",
            "query parameter `key` does not match the secret",
        ),
    ] {
        for method in [Method::GET, Method::POST] {
            let (status, _, answer) = daemon
                .request(
                    method.clone(),
                    &format!("/hooks/mailchimp{query}"),
                    &[FORM],
                    subscribe_form(),
                )
                .await;
            assert_eq!(status, 401, "{method} {query}: {answer}");
            assert_eq!(
                answer["error"]["message"],
                format!("the request does not verify: {refusal}")
            );
        }
    }
    // A hook without a decoder takes POST only.
    let (status, headers, answer) = daemon.request(Method::GET, "/hooks/plain", &[], "").await;
    assert_eq!(status, 405, "{answer}");
    assert_eq!(headers["allow"], "POST, HEAD");
    assert_eq!(answer["error"]["message"], "hook `plain` takes POST");

    // The published subscribe: about the member, by its subscriber hash.
    let answered = deliver(&daemon, &hook, &[FORM], subscribe_form()).await;
    assert_eq!(statuses(&answered), ["accepted"]);
    let trail = &processed_trails(&daemon, &answered).await[0];
    assert_eq!(trail["type"], "mailchimp.member.subscribed");
    assert_eq!(
        trail["subject"],
        "mailchimp-member/a6b5da1054/6def22f266be37015519943ce0c3ae6b"
    );
    assert_eq!(trail["source"], "/mailchimp/audiences/a6b5da1054");
    // Mailchimp sends no delivery id: the same form again is a duplicate.
    let again = deliver(&daemon, &hook, &[FORM], subscribe_form()).await;
    assert_eq!(statuses(&again), ["duplicate"]);

    // A campaign sent: about the converge campaign, on its email channel.
    let sent = form(&[
        ("type", "campaign"),
        ("fired_at", "2026-03-02 09:00:12"),
        ("data[id]", "4d2b1d8f70"),
        ("data[subject]", "Spring is here"),
        ("data[status]", "sent"),
        ("data[reason]", ""),
        ("data[list_id]", "a6b5da1054"),
    ]);
    let answered = deliver(&daemon, &hook, &[FORM], sent).await;
    let trail = &processed_trails(&daemon, &answered).await[0];
    assert_eq!(trail["type"], "mailchimp.campaign.sent");
    assert_eq!(trail["subject"], "campaign/spring-launch");
    assert_eq!(
        notifications(trail),
        ["spring-launch went out on email: Spring is here"]
    );

    // Not Mailchimp's form: the sender's mistake, and nothing is kept.
    let (status, _, answer) = daemon
        .request(
            Method::POST,
            &format!("/hooks/{hook}"),
            &[("content-type", "application/json")],
            r#"{"type":"subscribe"}"#,
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mailchimp posts a form"),
        "{answer}"
    );
    assert!(!daemon.log().contains(KEY), "{}", daemon.log());
}

/// `converge rules try --hook`: a body as Mailchimp posts it, decoded by
/// the hook's plugin, decided on by the rules, without a daemon.
#[test]
fn rules_try_decodes_a_mailchimp_form_through_its_hook() {
    let ws = workspace();
    let body = ws.dir.path().join("sent.form");
    std::fs::write(
        &body,
        form(&[
            ("type", "campaign"),
            ("fired_at", "2026-03-02 09:00:12"),
            ("data[id]", "4d2b1d8f70"),
            ("data[subject]", "Spring is here"),
            ("data[status]", "sent"),
            ("data[list_id]", "a6b5da1054"),
        ]),
    )
    .unwrap();
    let run = |headers: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_converge"));
        command
            .args(["rules", "try", "--hook", "mailchimp", "--config"])
            .arg(ws.config());
        for header in headers {
            command.args(["--header", header]);
        }
        command.arg(&body).env_remove(KEY_ENV).output().unwrap()
    };
    let out = run(&["Content-Type: application/x-www-form-urlencoded"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("mailchimp.campaign.sent (campaign/spring-launch)"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "email_launch: {\"kind\":\"notify\",\"to\":\"launches\",\"message\":\"spring-launch went out on email: Spring is here\"}\n    no route acts on it"
        ),
        "{shown}"
    );
    // What the hook refuses, `try` refuses, saying why.
    let out = run(&["Content-Type: application/json"]);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("hook `mailchimp`: mailchimp cannot decode")
            && said.contains("Mailchimp posts a form"),
        "{said}"
    );
}
