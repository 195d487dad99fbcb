//! Asana: the handshake, a heartbeat, then a batch of events built from the
//! documented EventResponse examples, signed with the handshake's secret,
//! decoded onto the campaign of the hook's project.

use reqwest::Method;
use serde_json::{Value, json};

use super::{
    decoder_plugin, deliver, fixture_json, hmac_sha256, notifications, processed_trails, statuses,
};
use crate::support::Workspace;

/// The project the hook's webhook watches (the docs' `resource`), which is
/// the campaign `Bugs Bash`.
fn hook() -> &'static str {
    r#"
[hooks.asana]
verify = "asana"
decode = "asana"
config = { hooks = { asana = "8675309" }, campaign = { projects = { "8675309" = "Bugs Bash" } } }
"#
}

/// The scenarios of Asana's EventResponse docs, with their examples: a
/// task added to the project, its assignee set, a collaborator added.
fn events() -> Value {
    let user = json!({"gid": "12345", "resource_type": "user"});
    json!({"events": [
        {
            "user": user,
            "created_at": "2012-02-22T02:06:58.147Z",
            "type": "task",
            "action": "added",
            "resource": {"gid": "1337", "resource_type": "task", "name": "Draft the launch email"},
            "parent": {"gid": "8675309", "resource_type": "project", "name": "Bugs"},
        },
        {
            "user": user,
            "created_at": "2012-02-22T02:07:12.000Z",
            "type": "task",
            "action": "changed",
            "resource": {"gid": "1337", "resource_type": "task", "name": "Draft the launch email"},
            "parent": null,
            "change": {"field": "assignee", "action": "changed", "new_value": user},
        },
        {
            "user": user,
            "created_at": "2012-02-22T02:07:40.000Z",
            "type": "task",
            "action": "changed",
            "resource": {"gid": "1337", "resource_type": "task", "name": "Draft the launch email"},
            "parent": null,
            "change": {"field": "followers", "action": "added", "added_value": user},
        },
    ]})
}

#[tokio::test(flavor = "multi_thread")]
async fn asana_events_are_verified_with_the_handshake_secret_and_decoded_onto_the_hook_project() {
    let ws = Workspace::new(
        &[(
            "asana",
            r#"
if event.type == "asana.task.added" {
    notify("ops", `${event.data.title} added to ${event.data.campaign}`);
}
if event.type == "asana.task.changed" && event.data.changes[0].field == "assignee" {
    notify("ops", `task ${event.data.key} assigned to user ${event.data.changes[0].to.gid}`);
}
"#,
        )],
        &format!("{}{}", decoder_plugin("asana"), hook()),
    );
    let daemon = ws.start();
    let handshake = fixture_json("asana/handshake.x_hook_secret.json");
    let secret = handshake["handshake_request"]["headers"]["X-Hook-Secret"]
        .as_str()
        .unwrap();
    let (status, headers, _) = daemon
        .request(
            Method::POST,
            "/hooks/asana",
            &[("x-hook-secret", secret)],
            "",
        )
        .await;
    assert_eq!(status, 200, "{}", daemon.log());
    assert_eq!(headers["x-hook-secret"], secret);
    let sign = |body: &[u8]| hex::encode(hmac_sha256(secret.as_bytes(), &[body]));

    // The heartbeat sent after the handshake carries no event.
    let heartbeat = br#"{"events":[]}"#;
    let (status, _, answer) = daemon
        .request(
            Method::POST,
            "/hooks/asana",
            &[
                ("content-type", "application/json"),
                ("x-hook-signature", &sign(heartbeat)),
            ],
            heartbeat.to_vec(),
        )
        .await;
    assert_eq!((status, &answer), (200, &json!({"events": []})));

    let body = serde_json::to_vec(&events()).unwrap();
    let signature = sign(&body);
    let headers = [
        ("content-type", "application/json"),
        ("x-hook-signature", signature.as_str()),
    ];
    let answered = deliver(&daemon, "asana", &headers, body.clone()).await;
    assert_eq!(statuses(&answered), ["accepted"; 3]);
    let trails = processed_trails(&daemon, &answered).await;
    let types: Vec<&str> = trails.iter().map(|t| t["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "asana.task.added",
            "asana.task.changed",
            "asana.task.changed"
        ]
    );
    for trail in &trails {
        // A `changed` event names no project: the hook's is the campaign's.
        assert_eq!(trail["subject"], "campaign/Bugs-Bash", "{trail}");
        assert_eq!(trail["source"], "https://app.asana.com");
    }
    assert_eq!(
        notifications(&trails[0]),
        ["Draft the launch email added to Bugs Bash"]
    );
    assert_eq!(
        notifications(&trails[1]),
        ["task 1337 assigned to user 12345"]
    );
    assert!(notifications(&trails[2]).is_empty());

    // Asana retries a delivery it got no 2xx for: the same events again.
    let again = deliver(&daemon, "asana", &headers, body.clone()).await;
    assert_eq!(statuses(&again), ["duplicate"; 3]);

    // Nobody else can sign, nor take over the secret with a handshake.
    let forged = hex::encode(hmac_sha256(b"a guess", &[&body]));
    for headers in [
        vec![("x-hook-signature", forged.as_str())],
        vec![("x-hook-secret", "stolen")],
    ] {
        let (status, _, answer) = daemon
            .request(Method::POST, "/hooks/asana", &headers, body.clone())
            .await;
        assert_eq!(status, 401, "{answer}");
    }
    assert_eq!(daemon.metric("converge_journal_events").await, 3.0);
}
