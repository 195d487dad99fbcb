//! Convergence gates end to end: the example `convergence_gate` rule holds
//! a send while the channels disagree, releases it (and the held ones) to
//! the channel's plugin once they agree, and a person can override it with
//! the admin token. Its helpers serve the gate tests of several daemons too.

use serde_json::{Value, json};

use crate::support::{
    Daemon, Sink, Workspace, actions_settled, event, example_rule, is_send_key, sends_to_sink_toml,
};

pub const TOKEN: &str = "test-admin-token-0123456789";

fn workspace(sink: &Sink) -> Workspace {
    let rule = example_rule("convergence_gate");
    let ws = Workspace::new(&[("convergence_gate", &rule)], &sends_to_sink_toml(sink));
    // So `converge gates` can find the daemon.
    ws.listen_on_free_port();
    ws
}

/// A channel that agrees with the others; `stage` decides approval. Its
/// launch is three days after the console tests' manual clock starts: a
/// send held then is escalated 24h before (on the system clock, at once).
pub fn channel(id: &str, campaign: &str, name: &str, stage: &str) -> Value {
    event(
        id,
        "campaign.channel.updated",
        &format!("campaign/{campaign}"),
        json!({
            "channel": name,
            "stage": stage,
            "offer_code": "FALL25",
            "landing_url": "https://shop.test/fall",
            "key_message": "Save 25% on fall gear",
            "launch_at": "2026-11-26T09:00:00Z",
            "segments": ["loyal", "new"],
        }),
    )
}

pub fn send(id: &str, campaign: &str, name: &str) -> Value {
    event(
        id,
        "send.requested",
        &format!("campaign/{campaign}"),
        json!({"channel": name, "requested_by": "eve"}),
    )
}

pub async fn accept(daemon: &Daemon, event: &Value) {
    let (status, body) = daemon.send_event(event).await;
    assert_eq!(status, 202, "{body}");
}

async fn processed(daemon: &Daemon, id: &str) -> Value {
    daemon
        .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
        .await
}

async fn gates(daemon: &Daemon) -> Vec<Value> {
    let (status, body) = daemon.get("/v1/gates").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["gates"].as_array().unwrap().clone()
}

pub async fn override_gate(
    daemon: &Daemon,
    campaign: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/gates/campaign/{campaign}/override",
            daemon.url
        ))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_is_held_until_the_channels_agree_then_released_with_the_held_ones() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);

    accept(&daemon, &channel("c-1", "fall-26", "email", "approved")).await;
    accept(&daemon, &channel("c-2", "fall-26", "social", "review")).await;
    accept(&daemon, &send("s-1", "fall-26", "email")).await;
    let trail = processed(&daemon, "s-1").await;
    assert_eq!(trail["decisions"][0]["decision"]["kind"], "hold_send");
    assert_eq!(trail["decisions"][0]["actions"], json!([]));

    let open = gates(&daemon).await;
    assert_eq!(open.len(), 1, "{open:#?}");
    let gate = &open[0];
    assert_eq!(gate["campaign"], "campaign/fall-26");
    assert_eq!(
        gate["channels"],
        json!([
            {"channel": "email", "stage": "approved", "approved": true, "paused": false, "held": 1},
            {"channel": "social", "stage": "review", "approved": false, "paused": false, "held": 0},
        ])
    );
    assert_eq!(
        gate["last_hold"]["reasons"],
        json!(["not approved: social (review)"])
    );
    assert_eq!(gate["held_sends"][0]["event_id"], "s-1");
    assert_eq!(gate["held_sends"][0]["status"], "held");
    assert_eq!(daemon.metric("converge_sends_held_total").await, 1.0);
    assert_eq!(daemon.metric("converge_held_sends").await, 1.0);

    let out = ws.converge(&["gates"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("campaign/fall-26: held since"), "{text}");
    assert!(text.contains("- not approved: social (review)"), "{text}");
    assert!(text.contains("email event s-1 since"), "{text}");

    // The channels converge: the held send goes out at once, and the next
    // one on its own event.
    accept(&daemon, &channel("c-3", "fall-26", "social", "approved")).await;
    let received = sink.wait_for(1).await;
    assert_eq!(received[0].body["event"]["id"], "s-1");
    let trail = processed(&daemon, "c-3").await;
    assert_eq!(trail["decisions"][0]["decision"]["kind"], "release_send");
    accept(&daemon, &send("s-2", "fall-26", "email")).await;
    let received = sink.wait_for(2).await;
    assert_eq!(received.len(), 2);
    let mut sent: Vec<&Value> = received.iter().map(|r| &r.body).collect();
    sent.sort_by_key(|b| b["event"]["id"].as_str().unwrap().to_string());
    for (body, id) in sent.iter().zip(["s-1", "s-2"]) {
        assert_eq!(body["kind"], "release_send");
        assert_eq!(body["rule"], "convergence_gate");
        assert_eq!(body["decision"]["channel"], "email");
        assert_eq!(
            body["decision"]["reason"],
            "every channel is approved, consistency 100%, launches within 48h"
        );
        assert_eq!(body["event"]["id"], id);
        assert_eq!(body["event"]["type"], "send.requested");
        assert_eq!(
            body["event"]["data"],
            json!({"channel": "email", "requested_by": "eve"})
        );
        assert_eq!(body["entity"]["channels"]["social"]["stage"], "approved");
    }
    assert!(received.iter().all(|r| r.path == "/send"));
    daemon.wait_for_metric("converge_held_sends", 0.0).await;
    assert_eq!(daemon.metric("converge_sends_released_total").await, 1.0);
    assert!(gates(&daemon).await.is_empty());
    let (_, history) = daemon.get("/v1/gates/campaign/fall-26").await;
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history["open"], false);
    assert_eq!(
        history["held_sends"][0]["released_by"],
        "rule convergence_gate"
    );
    let out = ws.converge(&["gates"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no open gates"));
    // A closed gate's history, for people.
    let out = ws.converge(&["gates", "show", "fall-26"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.starts_with("campaign/fall-26: nothing held now\n"),
        "{shown}"
    );
    assert!(
        shown.contains("  sends held:\n    email event s-1 since ")
            && shown.contains("; released at ")
            && shown.contains(" by rule convergence_gate\n"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_campaigns_brief_is_the_hub_its_channels_are_held_to_and_the_console_marks_who_is_off_it()
{
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);

    // The brief says FALL26 and three segments; both channels agree with
    // each other on FALL25, within the brief's segments.
    let brief = |id: &str, offer: &str| {
        event(
            id,
            "campaign.updated",
            "campaign/hub-26",
            json!({"owner": "mia", "offer_code": offer, "segments": ["loyal", "new", "lapsed"]}),
        )
    };
    accept(&daemon, &brief("b-1", "FALL26")).await;
    accept(&daemon, &channel("c-1", "hub-26", "email", "approved")).await;
    accept(&daemon, &channel("c-2", "hub-26", "paid", "approved")).await;
    accept(&daemon, &send("s-1", "hub-26", "email")).await;
    let trail = processed(&daemon, "s-1").await;
    assert_eq!(trail["decisions"][0]["decision"]["kind"], "hold_send");
    assert_eq!(
        trail["decisions"][0]["decision"]["reason"],
        "consistency 60% is below 90% (failing: agreement (email, paid))"
    );

    // The campaign's card shows the brief beside the channels and marks
    // the codes off it, not the segments within it.
    let (status, page) = daemon.get("/ui/campaigns").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(">Brief</th>"), "{page}");
    assert!(page.contains("<td class=\"brief\">FALL26</td>"), "{page}");
    assert_eq!(
        page.matches("title=\"differs from the brief\"").count(),
        2,
        "both channels' offer codes: {page}"
    );
    assert!(!page.contains("differs from the other channels"), "{page}");

    // The brief takes the channels' code: the gate passes on that event.
    accept(&daemon, &brief("b-2", "FALL25")).await;
    let received = sink.wait_for(1).await;
    assert_eq!(received[0].body["event"]["id"], "s-1");
    assert_eq!(
        received[0].body["decision"]["reason"],
        "every channel is approved, consistency 100%, launches within 48h"
    );
    let (_, page) = daemon.get("/ui/campaigns").await;
    assert!(!page.contains("differs from the brief"), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gate_rule_that_fails_on_a_send_request_holds_the_send_until_it_can_judge_it() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);

    // The brief's launch is not a time: the gate rule cannot judge.
    accept(
        &daemon,
        &event(
            "b-1",
            "campaign.updated",
            "campaign/safe-26",
            json!({"owner": "mia", "launch_at": "next week"}),
        ),
    )
    .await;
    accept(&daemon, &channel("c-1", "safe-26", "email", "approved")).await;
    accept(&daemon, &send("s-1", "safe-26", "email")).await;
    let trail = processed(&daemon, "s-1").await;
    let decision = &trail["decisions"][0]["decision"];
    assert_eq!(decision["kind"], "hold_send", "{trail:#}");
    assert_eq!(decision["rule"], "converge/fail-safe");
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .starts_with("rule convergence_gate failed on the request, so the send is held: "),
        "{decision}"
    );
    assert!(
        trail["rule_failures"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`next week` is not an RFC 3339 time"),
        "{trail:#}"
    );
    let open = gates(&daemon).await;
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["held_sends"][0]["event_id"], "s-1");

    // The brief is corrected: the rule judges again and the send goes out.
    accept(
        &daemon,
        &event(
            "b-2",
            "campaign.updated",
            "campaign/safe-26",
            json!({"launch_at": "2026-11-26T09:00:00Z"}),
        ),
    )
    .await;
    let received = sink.wait_for(1).await;
    assert_eq!(received[0].body["event"]["id"], "s-1");
    assert_eq!(received[0].body["rule"], "convergence_gate");
    assert!(gates(&daemon).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_still_held_a_day_before_its_launch_is_escalated_to_the_campaign_owner() {
    let sink = Sink::start().await;
    let rule = example_rule("convergence_gate");
    let ws = Workspace::new(
        &[("convergence_gate", &rule)],
        &format!(
            "{}\n[[routes]]\ndecision = \"escalate\"\nplugin = \"webhook-out\"\nconfig = {{ url = \"{}\" }}\n\
             [clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n",
            sends_to_sink_toml(&sink),
            sink.url("/escalate"),
        ),
    );
    ws.listen_on_free_port();
    let daemon = ws.start();
    let mut owned = channel("c-0", "fall-26", "email", "approved");
    owned["data"] = json!({"owner": "mia"});
    owned["type"] = json!("campaign.updated");
    accept(&daemon, &owned).await;
    accept(&daemon, &channel("c-1", "fall-26", "email", "approved")).await;
    accept(&daemon, &channel("c-2", "fall-26", "social", "review")).await;
    accept(&daemon, &send("s-1", "fall-26", "email")).await;
    let trail = processed(&daemon, "s-1").await;
    assert_eq!(trail["decisions"][0]["decision"]["kind"], "hold_send");
    assert_eq!(trail["decisions"][1]["decision"]["kind"], "notify");
    assert_eq!(trail["decisions"][2]["decision"]["kind"], "expect");
    // The gate shows its deadline.
    let open = gates(&daemon).await;
    assert_eq!(
        (
            &open[0]["next_timer"]["event_type"],
            &open[0]["next_timer"]["due_at"]
        ),
        (&json!("gate.deadline"), &json!("2026-11-25T09:00:00.000Z"))
    );
    let out = ws.converge(&["gates", "show", "fall-26"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(
            "  next: gate.deadline unless gate.closed comes (rule convergence_gate) at 2026-11-25T09:00:00.000Z\n"
        ),
        "{shown}"
    );

    // Another campaign's gate opens and closes: closing cancels its deadline.
    accept(&daemon, &channel("d-1", "spring", "email", "approved")).await;
    accept(&daemon, &channel("d-2", "spring", "social", "review")).await;
    accept(&daemon, &send("t-1", "spring", "email")).await;
    accept(&daemon, &channel("d-3", "spring", "social", "approved")).await;
    let released = sink.wait_for(1).await;
    assert_eq!(released[0].body["event"]["id"], "t-1");
    let pending = || async {
        let (status, body) = daemon.get("/v1/timers").await;
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        let timers = body["timers"].as_array().unwrap().clone();
        timers
            .iter()
            .map(|t| format!("{} {}", t["entity"].as_str().unwrap(), t["event_type"]))
            .collect::<Vec<_>>()
    };
    daemon
        .wait_for_trail("d-3", |t| !t["processed_at_ms"].is_null())
        .await;
    let mut timers = pending().await;
    for _ in 0..50 {
        if timers.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        timers = pending().await;
    }
    assert_eq!(timers, ["campaign/fall-26 \"gate.deadline\""]);

    // The deadline is 24h before the launch (2026-11-26T09:00): two days on.
    daemon.advance_clock("47h").await;
    assert_eq!(sink.received().len(), 1, "nothing before the deadline");
    daemon.advance_clock("1h").await;
    let received = sink.wait_for(2).await;
    assert_eq!(received[1].path, "/escalate");
    let body = &received[1].body;
    assert_eq!(body["kind"], "escalate");
    assert_eq!(body["decision"]["to"], "mia");
    assert_eq!(
        body["decision"]["reason"],
        "campaign/fall-26: the email send is still held 24h before the campaign launches \
         at 2026-11-26T09:00:00Z: not approved: social (review)"
    );
    assert_eq!(body["event"]["type"], "gate.deadline");

    // Approval releases it; the send goes out, and the gate is closed.
    accept(&daemon, &channel("c-3", "fall-26", "social", "approved")).await;
    let received = sink.wait_for(3).await;
    assert_eq!(received[2].path, "/send");
    assert_eq!(received[2].body["event"]["id"], "s-1");
    assert!(gates(&daemon).await.is_empty());
    assert!(pending().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_send_survives_kill_9_and_is_released_once_after_restart() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);
    accept(&daemon, &channel("c-1", "fall-26", "email", "approved")).await;
    accept(&daemon, &channel("c-2", "fall-26", "social", "review")).await;
    accept(&daemon, &send("s-1", "fall-26", "email")).await;
    let trail = processed(&daemon, "s-1").await;
    assert_eq!(trail["decisions"][0]["decision"]["kind"], "hold_send");
    assert_eq!(gates(&daemon).await.len(), 1);
    daemon.kill9();

    // The same config, so the same port and database.
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);
    let open = gates(&daemon).await;
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["campaign"], "campaign/fall-26");
    let held = open[0]["held_sends"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(
        (
            &held[0]["event_id"],
            &held[0]["channel"],
            &held[0]["status"]
        ),
        (&json!("s-1"), &json!("email"), &json!("held"))
    );
    assert_eq!(daemon.metric("converge_held_sends").await, 1.0);
    assert!(sink.received().is_empty(), "nothing was sent while held");

    accept(&daemon, &channel("c-3", "fall-26", "social", "approved")).await;
    accept(&daemon, &send("s-2", "fall-26", "email")).await;
    for (id, what) in [("c-3", "the held send"), ("s-2", "s-2")] {
        let releases = daemon.wait_for_trail(id, actions_settled).await;
        let actions: Vec<&Value> = releases["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["actions"].as_array().unwrap())
            .collect();
        assert_eq!(actions.len(), 1, "{what}: {releases:#}");
        assert_eq!(actions[0]["status"], "done", "{releases:#}");
    }
    daemon.wait_for_metric("converge_held_sends", 0.0).await;
    assert!(gates(&daemon).await.is_empty());

    // Every action is done, so nothing more is coming: the held send went
    // out once, under one idempotency key, and s-2 under another.
    let received = sink.received();
    let of = |id: &str| -> Vec<String> {
        received
            .iter()
            .filter(|r| r.body["event"]["id"] == id)
            .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string())
            .collect()
    };
    let (held_keys, s2_keys) = (of("s-1"), of("s-2"));
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(held_keys.len(), 1, "{received:#?}");
    assert_eq!(s2_keys.len(), 1, "{received:#?}");
    assert_ne!(held_keys[0], s2_keys[0]);
    // A send's key comes from the send (its journal seq), not the action.
    let s1_seq = held[0]["event_seq"].as_i64().unwrap();
    assert!(is_send_key(&held_keys[0], s1_seq), "{held_keys:?}");
    assert!(s2_keys[0].contains("-send-"), "{s2_keys:?}");
    let sent = received.iter().find(|r| r.body["event"]["id"] == "s-1");
    assert_eq!(sent.unwrap().body["kind"], "release_send");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_override_with_the_admin_token_releases_and_is_recorded() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", TOKEN)]);

    accept(&daemon, &channel("c-1", "spring", "email", "approved")).await;
    accept(&daemon, &channel("c-2", "spring", "paid", "draft")).await;
    accept(&daemon, &send("s-1", "spring", "email")).await;
    processed(&daemon, "s-1").await;
    assert_eq!(gates(&daemon).await.len(), 1);

    let request = json!({"by": "mia", "reason": "paid launches next week; legal approved email"});
    let (status, body) = override_gate(&daemon, "spring", "wrong-token", request.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    // Nothing but `Authorization: Bearer <the token>` acts: not a part of
    // it, more than it, another scheme, or the token elsewhere.
    let basic = format!("Basic {}", base64_encode(&format!("admin:{TOKEN}")));
    let variants = [
        None,
        Some("Bearer ".to_string()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {TOKEN} {TOKEN}")),
        Some(TOKEN.to_string()),
        Some(format!("Token {TOKEN}")),
        Some(basic),
    ];
    for authorization in &variants {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(value) = authorization {
            headers.push(("authorization", value.as_str()));
        }
        let (status, _, body) = daemon
            .request(
                reqwest::Method::POST,
                &format!("/v1/gates/campaign/spring/override?token={TOKEN}"),
                &headers,
                request.to_string(),
            )
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (401, &json!("unauthorized")),
            "{authorization:?}"
        );
    }
    assert_eq!(gates(&daemon).await[0]["held_sends"][0]["status"], "held");
    assert_eq!(daemon.metric("converge_gate_overrides_total").await, 0.0);

    // Through the CLI, with the token from the environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["gates", "override", "spring", "--by", "mia", "--reason"])
        .arg(request["reason"].as_str().unwrap())
        .arg("--config")
        .arg(ws.config())
        .env("CONVERGE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let received = sink.wait_for(1).await;
    assert_eq!(received[0].body["kind"], "release_send");
    assert_eq!(received[0].body["rule"], "converge/admin");
    assert_eq!(
        received[0].body["decision"]["reason"],
        "override by mia: paid launches next week; legal approved email"
    );
    assert_eq!(received[0].body["event"]["id"], "s-1");
    daemon
        .wait_for_metric("converge_gate_overrides_total", 1.0)
        .await;
    assert!(gates(&daemon).await.is_empty());
    let (_, history) = daemon.get("/v1/gates/campaign/spring").await;
    let history: Value = serde_json::from_str(&history).unwrap();
    let recorded = &history["overrides"][0];
    assert_eq!(
        (&recorded["by"], &recorded["reason"], &recorded["released"]),
        (&json!("mia"), &request["reason"], &json!(1))
    );
    assert!(recorded["at"].is_string());
    assert_eq!(history["held_sends"][0]["released_by"], "override by mia");

    // Nothing left to override.
    let (status, body) = override_gate(&daemon, "spring", TOKEN, request).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn overrides_are_disabled_without_a_token() {
    let sink = Sink::start().await;
    let ws = workspace(&sink);
    let daemon = ws.start_without_admin_token();
    let (status, body) = override_gate(
        &daemon,
        "spring",
        TOKEN,
        json!({"by": "mia", "reason": "x"}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overrides are disabled: set CONVERGE_ADMIN_TOKEN"),
        "{body}"
    );
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
