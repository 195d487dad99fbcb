//! Trello: captured board actions, each posted as Trello posts it
//! (`{"model", "action"}`) and signed over the body and the registered
//! callback URL, decoded onto campaigns by list and board and deduplicated
//! by action id; and a comment on the moved card through the API, with the
//! OAuth header the host injects.

use base64::Engine as _;
use converge_testkit::sink::{Reply, Sink};
use reqwest::Method;
use serde_json::json;

use super::{
    deliver, fixture, fixture_json, notifications, processed_trails, statuses, task_plugin,
};
use crate::support::{Workspace, actions_settled};

const SECRET: &str = "a trello app secret";
const SECRET_ENV: &str = "CONVERGE_TEST_TRELLO_SECRET";
const TOKEN_ENV: &str = "CONVERGE_TEST_TRELLO_TOKEN";
/// The callback URL as registered with Trello, which signs it.
const CALLBACK: &str = "https://converge.example.com/hooks/trello";

/// The list `an empty List` is the campaign `Site Relaunch`; the board
/// `idéias` is the campaign `ideias`.
fn hook() -> String {
    format!(
        r#"
[hooks.trello]
verify = "trello"
secret_env = "{SECRET_ENV}"
url = "{CALLBACK}"
decode = "trello"
config = {{ campaign = {{ lists = {{ 5514564da07f76c2633f07f0 = "Site Relaunch" }}, boards = {{ vfdBxuwr = "ideias" }} }} }}
"#
    )
}

/// A captured action as Trello delivers it: the watched board as the model.
fn delivery(action_file: &str) -> Vec<u8> {
    let action = fixture_json(&format!("trello/{action_file}"));
    let model = action["data"]["board"].clone();
    serde_json::to_vec(&json!({"model": model, "action": action})).unwrap()
}

fn signature(body: &[u8], url: &str) -> String {
    let mut signed = body.to_vec();
    signed.extend_from_slice(url.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hmac_sha1(SECRET.as_bytes(), &signed))
}

#[tokio::test(flavor = "multi_thread")]
async fn trello_actions_are_verified_with_the_callback_url_decoded_and_deduplicated_by_action_id() {
    let ws = Workspace::new(
        &[(
            "trello",
            r#"
if event.type == "trello.card.moved" {
    let change = event.data.changes[0];
    notify("ops", `${event.data.title} moved from ${change.from} to ${change.to} on ${event.data.board}`);
} else if event.type == "trello.card.commented" {
    notify("ops", `${event.data.user} on ${event.data.title}: ${event.data.comment.text}`);
}
"#,
        )],
        &format!(
            "{}{}",
            task_plugin("trello", "127.0.0.1:9", TOKEN_ENV, "OAuth"),
            hook()
        ),
    );
    let daemon = ws.start_with_env(&[(SECRET_ENV, SECRET)]);

    // Trello checks the callback URL before it creates the webhook.
    let (status, _, _) = daemon.request(Method::HEAD, "/hooks/trello", &[], "").await;
    assert_eq!(status, 200);

    let bodies = [
        delivery("action.updateCard.moved_list.json"),
        delivery("action.createCard.json"),
        delivery("action.commentCard.json"),
        fixture("trello/envelope.copyChecklist.full_body.json"),
    ];
    let mut answered = Vec::new();
    for body in &bodies {
        let signed = signature(body, CALLBACK);
        let headers = [
            ("content-type", "application/json"),
            ("x-trello-webhook", signed.as_str()),
        ];
        let events = deliver(&daemon, "trello", &headers, body.clone()).await;
        assert_eq!(statuses(&events), ["accepted"]);
        answered.extend(events);
    }
    let trails = processed_trails(&daemon, &answered).await;
    let seen: Vec<(&str, &str, &str)> = trails
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap(),
                t["type"].as_str().unwrap(),
                t["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "55900c950fbd86334d5c4071",
                "trello.card.moved",
                "campaign/Site-Relaunch"
            ),
            (
                "55906023892770637b766345",
                "trello.card.created",
                "campaign/Site-Relaunch"
            ),
            (
                "55762ae2f38ad695c5aedd85",
                "trello.card.commented",
                "campaign/ideias"
            ),
            (
                "59bc8e2ddbd7af0e1474fb0e",
                "trello.checklist.copied",
                "trello-board/597f3c854baa6e43db4f07d7"
            ),
        ]
    );
    assert_eq!(trails[0]["source"], "https://trello.com/b/7hs3uLZE");
    assert_eq!(
        notifications(&trails[0]),
        ["posts-per-page moved from _preferences to an empty List on This is a Site"]
    );
    assert_eq!(
        notifications(&trails[2]),
        ["Alfred Molyneaux on instructions -: alô!"]
    );

    // A redelivery is the same action.
    let moved = &bodies[0];
    let signed = signature(moved, CALLBACK);
    let headers = [
        ("content-type", "application/json"),
        ("x-trello-webhook", signed.as_str()),
    ];
    let again = deliver(&daemon, "trello", &headers, moved.clone()).await;
    assert_eq!(statuses(&again), ["duplicate"]);

    // Signed for another URL (say, what a proxy in front shows): refused.
    let elsewhere = signature(moved, "http://127.0.0.1:8080/hooks/trello");
    let (status, _, answer) = daemon
        .request(
            Method::POST,
            "/hooks/trello",
            &[
                ("content-type", "application/json"),
                ("x-trello-webhook", &elsewhere),
            ],
            moved.clone(),
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(daemon.metric("converge_journal_events").await, 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_on_a_moved_trello_card_comments_on_it_with_the_injected_oauth_header() {
    let api = Sink::answering(|request, _| {
        if request.method == "POST"
            && request.path == "/1/cards/550df104f244348fb46ce2b5/actions/comments"
        {
            Reply::json(json!({"id": "65f0c0ffee0000000000abcd", "type": "commentCard"}))
        } else {
            Reply::status(404, "")
        }
    })
    .await;
    let ws = Workspace::new(
        &[(
            "trello",
            r#"
if event.type == "trello.card.moved" {
    escalate("web_team", `${event.data.title} is now in ${event.data.list}`);
}
"#,
        )],
        &format!(
            r#"{plugin}{hook}
[[routes]]
decision = "escalate"
plugin = "trello"
config = {{ api_url = "{api}/1", action = "comment" }}
"#,
            plugin = task_plugin("trello", &api.host(), TOKEN_ENV, "OAuth"),
            hook = hook(),
            api = api.url(""),
        ),
    );
    let oauth = r#"oauth_consumer_key="e2e-app-key", oauth_token="e2e-member-token""#;
    let daemon = ws.start_with_env(&[(SECRET_ENV, SECRET), (TOKEN_ENV, oauth)]);
    let body = delivery("action.updateCard.moved_list.json");
    let signed = signature(&body, CALLBACK);
    deliver(
        &daemon,
        "trello",
        &[
            ("content-type", "application/json"),
            ("x-trello-webhook", &signed),
        ],
        body,
    )
    .await;
    let trail = daemon
        .wait_for_trail("55900c950fbd86334d5c4071", actions_settled)
        .await;
    let action = &trail["decisions"][0]["actions"][0];
    assert_eq!(action["status"], "done", "{trail}\n{}", daemon.log());
    assert_eq!(action["external_id"], "65f0c0ffee0000000000abcd");

    let requests = api.wait_for_or(1, || daemon.log()).await;
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let text = requests[0].body["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "Escalation (level 1) to web_team: posts-per-page is now in an empty List\n\n"
        ),
        "{text}"
    );
    assert!(text.contains("Subject: campaign/Site-Relaunch\nEvent: 55900c950fbd86334d5c4071\n"));
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("OAuth {oauth}").as_str())
    );
    assert!(!daemon.log().contains("e2e-member-token"));
}

/// HMAC-SHA1 (RFC 2104), which Trello signs with; the tests have no SHA-1
/// crate, so both are here, checked against RFC 2202 below.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..20].copy_from_slice(&sha1(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let padded = |byte: u8| -> Vec<u8> { block.iter().map(|k| k ^ byte).collect() };
    let mut inner = padded(0x36);
    inner.extend_from_slice(message);
    let mut outer = padded(0x5c);
    outer.extend_from_slice(&sha1(&inner));
    sha1(&outer)
}

/// SHA-1 (FIPS 180-4).
fn sha1(message: &[u8]) -> [u8; 20] {
    let mut state: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut padded = message.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    padded.extend_from_slice(&(message.len() as u64 * 8).to_be_bytes());
    for block in padded.chunks(64) {
        let mut w = [0u32; 80];
        for (word, bytes) in w.iter_mut().zip(block.chunks(4)) {
            *word = u32::from_be_bytes(bytes.try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = state;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let next = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, next);
        }
        for (h, v) in state.iter_mut().zip([a, b, c, d, e]) {
            *h = h.wrapping_add(v);
        }
    }
    let mut digest = [0u8; 20];
    for (bytes, word) in digest.chunks_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

#[test]
fn hmac_sha1_matches_rfc_2202() {
    assert_eq!(
        hex::encode(hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        hex::encode(hmac_sha1(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    );
}
