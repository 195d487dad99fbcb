//! SendGrid: the signed Event Webhook's published known-answer delivery
//! (ECDSA P-256, checked with the account's public key) decoded and
//! deduplicated by its event id; and the docs' array of every event type
//! decoded onto the campaign its category names, on the email channel.

use reqwest::Method;

use super::{
    decoder_plugin, deliver, fixture, fixture_json, notifications, processed_trails, statuses,
};
use crate::support::Workspace;

const KEY_ENV: &str = "CONVERGE_TEST_SENDGRID_KEY";

#[tokio::test(flavor = "multi_thread")]
async fn sendgrid_events_are_verified_decoded_onto_their_campaign_and_deduplicated_by_event_id() {
    let vector = fixture_json("sendgrid/signed_event_webhook.known_answer.json");
    // Only the known-answer delivery is signed: the private key behind it is
    // not published, so the docs' other bodies go to a hook that verifies
    // nothing, to show how they decode.
    let ws = Workspace::new(
        &[(
            "email",
            r#"
if event.type == "sendgrid.message.dropped" {
    escalate("deliverability", `${event.data.email}: ${event.data.reason}`);
}
if event.type == "sendgrid.message.bounced" {
    notify("ops", `${event.data.campaign} ${event.data.channel}: ${event.data.email} bounced (${event.data.reason})`);
}
"#,
        )],
        &format!(
            r#"{plugin}
[hooks.sendgrid]
verify = "sendgrid"
secret_env = "{KEY_ENV}"
decode = "sendgrid"

[hooks.sendgrid-docs]
decode = "sendgrid"
config = {{ campaign = {{ category_prefix = "cat " }} }}
"#,
            plugin = decoder_plugin("sendgrid"),
        ),
    );
    let key = vector["public_key_base64_der"].as_str().unwrap();
    let daemon = ws.start_with_env(&[(KEY_ENV, key)]);
    let signed = vector["raw_body"].as_str().unwrap();
    let signature = vector["headers"]["X-Twilio-Email-Event-Webhook-Signature"]
        .as_str()
        .unwrap();
    let timestamp = vector["headers"]["X-Twilio-Email-Event-Webhook-Timestamp"]
        .as_str()
        .unwrap();
    let headers = [
        ("content-type", "application/json"),
        ("x-twilio-email-event-webhook-signature", signature),
        ("x-twilio-email-event-webhook-timestamp", timestamp),
    ];
    let answered = deliver(&daemon, "sendgrid", &headers, signed).await;
    assert_eq!(statuses(&answered), ["accepted"]);
    assert_eq!(
        answered[0]["id"],
        "dropped:ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA"
    );
    let trail = &processed_trails(&daemon, &answered).await[0];
    assert_eq!(trail["type"], "sendgrid.message.dropped");
    // Nothing in this send names a campaign: the event is about the message.
    assert_eq!(
        trail["subject"],
        "sendgrid-message/LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"
    );
    let decision = &trail["decisions"][0]["decision"];
    assert_eq!(decision["kind"], "escalate", "{trail}");
    assert_eq!(decision["reason"], "hello@world.com: Bounced Address");

    let again = deliver(&daemon, "sendgrid", &headers, signed).await;
    assert_eq!(statuses(&again), ["duplicate"]);

    let other_signature = vector["negative_cases"][2]["signature"].as_str().unwrap();
    for (signature, body) in [(signature, "payload"), (other_signature, signed)] {
        let (status, _, answer) = daemon
            .request(
                Method::POST,
                "/hooks/sendgrid",
                &[
                    ("content-type", "application/json"),
                    ("x-twilio-email-event-webhook-signature", signature),
                    ("x-twilio-email-event-webhook-timestamp", timestamp),
                ],
                body,
            )
            .await;
        assert_eq!(status, 401, "{answer}");
    }

    // The docs' events carry the category `cat facts`: with the prefix
    // `cat `, they are about the campaign `facts`.
    let all = deliver(
        &daemon,
        "sendgrid-docs",
        &[("content-type", "application/json")],
        fixture("sendgrid/event_webhook.all_event_types.json"),
    )
    .await;
    assert_eq!(statuses(&all), ["accepted"; 11]);
    let trails = processed_trails(&daemon, &all).await;
    let types: Vec<&str> = trails.iter().map(|t| t["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "sendgrid.message.processed",
            "sendgrid.message.deferred",
            "sendgrid.message.delivered",
            "sendgrid.message.opened",
            "sendgrid.message.clicked",
            "sendgrid.message.bounced",
            "sendgrid.message.dropped",
            "sendgrid.message.spam_reported",
            "sendgrid.message.unsubscribed",
            "sendgrid.message.group_unsubscribed",
            "sendgrid.message.group_resubscribed",
        ]
    );
    for trail in &trails {
        assert_eq!(trail["subject"], "campaign/facts", "{trail}");
        assert_eq!(trail["source"], "https://sendgrid.com");
    }
    assert_eq!(
        notifications(&trails[5]),
        ["facts email: example@test.com bounced (500 unknown recipient)"]
    );
    assert_eq!(trails[6]["decisions"][0]["decision"]["kind"], "escalate");
    assert_eq!(daemon.metric("converge_journal_events").await, 12.0);
}

/// Every other scheme warns about an unset secret variable and refuses
/// requests until it is set; SendGrid's config check used a stand-in key
/// that is not a P-256 point, so the whole config was refused instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_sendgrid_hook_whose_key_is_not_set_fails_closed_instead_of_refusing_the_config() {
    let ws = Workspace::new(
        &[],
        &format!(
            "{}\n[hooks.sendgrid]\nverify = \"sendgrid\"\nsecret_env = \"{KEY_ENV}\"\ndecode = \"sendgrid\"\n",
            decoder_plugin("sendgrid")
        ),
    );
    let out = ws.converge(&["check"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("hooks.sendgrid.secret_env: {KEY_ENV} is not set")),
        "{said}"
    );
    let daemon = ws.start();
    let (status, _, answer) = daemon
        .request(
            Method::POST,
            "/hooks/sendgrid",
            &[("content-type", "application/json")],
            "[]",
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(KEY_ENV),
        "{answer}"
    );
}
