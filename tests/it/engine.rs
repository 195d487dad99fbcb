//! The one decision path, end to end: gates composed from several rules
//! send once, after the hold clears; the engine's time is the daemon's
//! clock (entity times, timers passed by a clock move); the manual clock
//! survives a restart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Daemon, Sink, Workspace, event, is_send_key, sends_to_sink_toml};

const START: &str = "2026-11-23T10:00:00Z";

fn manual_clock(start: &str) -> String {
    format!("[clock]\nmode = \"manual\"\nstart = \"{start}\"\n")
}

async fn processed(daemon: &Daemon, id: &str) -> Value {
    daemon
        .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
        .await
}

async fn accept(daemon: &Daemon, event: &Value) {
    let (status, body) = daemon.send_event(event).await;
    assert_eq!(status, 202, "{body}");
}

/// The messages of the notify decisions in an event's trail.
fn messages(trail: &Value) -> Vec<String> {
    trail["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["decision"]["message"].as_str().map(str::to_string))
        .collect()
}

fn gate_workspace(sink: &Sink, rules: &[(&str, &str)]) -> Workspace {
    Workspace::new(rules, &sends_to_sink_toml(sink))
}

fn send_requested(id: &str) -> Value {
    event(
        id,
        "send.requested",
        "campaign/c-1",
        json!({"channel": "email", "body": "Guaranteed risk-free!"}),
    )
}

/// The idempotency keys of the sends the sink got.
fn send_keys(sink: &Sink) -> Vec<String> {
    sink.received()
        .iter()
        .filter(|r| r.path == "/send")
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_held_by_one_rule_and_released_by_another_goes_out_once_after_approval() {
    let sink = Sink::start().await;
    let ws = gate_workspace(
        &sink,
        &[
            (
                "a_release",
                "//! events: send.requested\nrelease_send(\"email\", \"rule A: ok\");",
            ),
            (
                "b_hold",
                "//! events: send.requested\nhold_send(\"email\", \"rule B: not ok\");",
            ),
            (
                "c_later",
                "//! events: legal.approved\nrelease_send(\"email\", \"approved later\");",
            ),
        ],
    );
    let daemon = ws.start();
    accept(&daemon, &send_requested("req-1")).await;
    let trail = processed(&daemon, "req-1").await;
    let release = &trail["decisions"][0];
    assert_eq!(release["decision"]["kind"], "release_send", "{trail}");
    assert_eq!(release["actions"], json!([]), "released before approval");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(send_keys(&sink).is_empty(), "sent before approval");

    // A restart between the hold and the approval changes nothing.
    assert!(daemon.terminate().success());
    let daemon = ws.start();
    accept(
        &daemon,
        &event("ok-1", "legal.approved", "campaign/c-1", json!({})),
    )
    .await;
    sink.wait_for(1).await;
    accept(
        &daemon,
        &event("ok-2", "legal.approved", "campaign/c-1", json!({})),
    )
    .await;
    processed(&daemon, "ok-2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys = send_keys(&sink);
    assert_eq!(keys.len(), 1, "{keys:?}\n{}", daemon.log());
    assert!(is_send_key(&keys[0], 1), "{keys:?}");
    let sent = &sink.received()[0].body;
    assert_eq!(sent["event"]["id"], "req-1", "{sent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_banned_claim_stays_held_though_the_launch_timing_releases_it() {
    let sink = Sink::start().await;
    let ws = gate_workspace(
        &sink,
        &[
            (
                "launch_timing",
                "//! events: send.requested\nrelease_send(event.data.channel, \"launches within 2h\");",
            ),
            (
                "regulated_claims",
                r#"//! events: send.requested, legal.approved
if event.type == "send.requested" && event.data.body.contains("risk-free") && entity.fields.get("legal") != "approved" {
    hold_send(event.data.channel, "banned claim `risk-free` needs legal approval");
} else if event.type == "legal.approved" {
    set_field("legal", "approved");
    for held in gate.held { release_send(held.channel, "legal approved the claims"); }
}"#,
            ),
        ],
    );
    let daemon = ws.start();
    accept(&daemon, &send_requested("req-1")).await;
    processed(&daemon, "req-1").await;
    let (_, gates) = daemon.get("/v1/gates").await;
    let gates: Value = serde_json::from_str(&gates).unwrap();
    let held = &gates["gates"][0]["held_sends"][0];
    assert_eq!(held["rule"], "regulated_claims", "{gates}");
    assert_eq!(held["status"], "held");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(send_keys(&sink).is_empty());

    accept(
        &daemon,
        &event("ok-1", "legal.approved", "campaign/c-1", json!({})),
    )
    .await;
    sink.wait_for(1).await;
    processed(&daemon, "ok-1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send_keys(&sink).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn entity_times_follow_the_daemons_clock() {
    let rule = r#"
        if event.type == "check" {
            notify("me", `in stage ${hours_since(entity.stage_since)}h, updated ${hours_since(entity.updated_at)}h ago`);
        }
    "#;
    let ws = Workspace::new(&[("age", rule)], &manual_clock(START));
    let daemon = ws.start();
    accept(
        &daemon,
        &event(
            "s-1",
            "task.updated",
            "task/T-1",
            json!({"stage": "review"}),
        ),
    )
    .await;
    processed(&daemon, "s-1").await;
    daemon.advance_clock("48h").await;
    accept(&daemon, &event("c-1", "check", "task/T-1", json!({}))).await;
    let trail = processed(&daemon, "c-1").await;
    assert_eq!(
        messages(&trail),
        ["in stage 48.0h, updated 48.0h ago"],
        "{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timer_a_clock_move_passes_is_decided_at_its_due_time() {
    let rule = r#"
        if event.type == "ping" {
            schedule("1h", "pong");
        } else if event.type == "pong" {
            notify("me", `${event.time}|${now}|${entity.events}`);
        }
    "#;
    let ws = Workspace::new(&[("ping", rule)], &manual_clock(START));
    let daemon = ws.start();
    accept(&daemon, &event("p-1", "ping", "task/T-1", json!({}))).await;
    processed(&daemon, "p-1").await;
    daemon.advance_clock("5h").await;
    let trail = processed(&daemon, "timer-1").await;
    let message = messages(&trail).concat();
    let parts: Vec<&str> = message.split('|').collect();
    let [due, now, events] = parts[..] else {
        panic!("{message}");
    };
    assert!(due.starts_with("2026-11-23T11:00:00"), "{message}");
    assert_eq!(due, now, "the timer was not decided at its due time");
    // The reminder is not an update of the task.
    assert_eq!(events, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manual_clock_continues_after_a_restart() {
    let ws = Workspace::new(&[], &manual_clock(START));
    let daemon = ws.start();
    daemon.advance_clock("7d").await;
    assert!(daemon.terminate().success());

    let daemon = ws.start();
    let (_, body) = daemon.get("/v1/clock").await;
    let clock: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(clock["now"], "2026-11-30T10:00:00.000Z", "{body}");
    assert!(
        daemon
            .log()
            .contains("clock.start is earlier than where the manual clock stood"),
        "{}",
        daemon.log()
    );

    // A later start is a restart "later".
    assert!(daemon.terminate().success());
    ws.edit_config(START, "2026-12-05T10:00:00Z");
    let daemon = ws.start();
    let (_, body) = daemon.get("/v1/clock").await;
    let clock: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(clock["now"], "2026-12-05T10:00:00.000Z", "{body}");
}

/// One decision as both sides print it: the event it was made for, the
/// engine's time, the rule, the decision with its trace, and whether it was
/// made in shadow.
fn normalized(
    (id, ty): (&str, &str),
    subject: &Value,
    now: &str,
    rule: &Value,
    decision: &Value,
    trace: &Value,
    shadow: bool,
) -> String {
    json!({
        "event": id, "type": ty, "subject": subject, "now": now, "rule": rule,
        "decision": decision, "trace": trace, "shadow": shadow,
    })
    .to_string()
}

fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Every decision the daemon recorded, in journal order.
fn daemon_decisions(ws: &Workspace) -> Vec<String> {
    let store = converge_store::Store::open_reader(&converge_store::Location::Sqlite {
        path: ws.dir.path().join("data/converge.db"),
        durability: converge_store::Durability::Full,
    })
    .unwrap();
    let mut all = Vec::new();
    for journaled in store.events_after(0, 10_000).unwrap() {
        let event: Value = serde_json::from_str(&journaled.json).unwrap();
        let trail = store
            .event_trail(
                event["source"].as_str().unwrap(),
                event["id"].as_str().unwrap(),
            )
            .unwrap()
            .unwrap();
        let now = rfc3339_ms(trail.processed_at_ms.unwrap());
        for d in &trail.decisions {
            let decision = serde_json::to_value(&d.decision).unwrap();
            let kind = serde_json::to_value(&d.decision.kind).unwrap();
            all.push(normalized(
                (&trail.id, &trail.ty),
                &json!(trail.subject),
                &now,
                &decision["rule"],
                &kind,
                &decision["trace"],
                d.shadow,
            ));
        }
    }
    all
}

/// Every decision `converge replay --json` prints for the journal.
fn replayed_decisions(ws: &Workspace, until: &str) -> Vec<String> {
    let out = ws.converge(&[
        "replay",
        "--from-journal",
        "--json",
        "--quiet",
        "--until",
        until,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line.get("decision").is_some())
        .map(|line| {
            normalized(
                (
                    line["event"].as_str().unwrap(),
                    line["type"].as_str().unwrap(),
                ),
                &line["subject"],
                &rfc3339_ms(
                    chrono::DateTime::parse_from_rfc3339(line["now"].as_str().unwrap())
                        .unwrap()
                        .timestamp_millis(),
                ),
                &line["rule"],
                &line["decision"],
                &line["trace"],
                line["shadow"] == json!(true),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_and_replay_make_the_same_decisions() {
    let handoff = r#"
        //! events: task.handoff, task.remind, task.escalate, task.stalled
        if event.type == "task.handoff" {
            schedule("24h", "task.remind", #{ level: 1 });
            schedule("48h", "task.escalate", #{ level: 2 });
        } else if event.type == "task.remind" {
            notify(entity.owner, `reminder ${event.data.level}: in ${entity.stage} for ${hours_since(entity.stage_since)}h`);
        } else if event.type == "task.escalate" {
            because(#{ hours: hours_since(entity.stage_since), owner: entity.owner });
            escalate("review-lead", `stalled ${hours_since(entity.stage_since)}h`, 2);
            emit("task.stalled", #{ by: "handoff" });
        } else if event.type == "task.stalled" {
            notify("ops", `stalled chain from ${event.data.by}, updated ${entity.updated_at}`);
        }
    "#;
    let claims = r#"
        //! events: send.requested
        if event.data.body.contains("risk-free") && entity.fields.get("legal") != "approved" {
            hold_send(event.data.channel, "banned claim `risk-free` needs legal approval");
        }
    "#;
    let timing =
        "//! events: send.requested\nrelease_send(event.data.channel, \"launches within 2h\");";
    let legal = r#"
        //! events: legal.approved
        set_field("legal", "approved");
        for held in gate.held { release_send(held.channel, `legal approved (held by ${held.rules})`); }
    "#;
    let strict = "//! events: task.handoff, send.requested\nescalate(\"shadow-lead\", `would escalate ${event.type}`);";
    let sink = Sink::start().await;
    let ws = Workspace::new(
        &[
            ("handoff", handoff),
            ("claims", claims),
            ("timing", timing),
            ("legal", legal),
            ("strict", strict),
        ],
        &format!("{}\n{}", sends_to_sink_toml(&sink), manual_clock(START)),
    );
    ws.edit_config("files = [", "shadow = [\"strict.rhai\"]\nfiles = [");
    let strict_path = ws.dir.path().join("strict.rhai").display().to_string();
    ws.edit_config(
        "shadow = [\"strict.rhai\"]",
        &format!("shadow = [{strict_path:?}]"),
    );
    let token = "equivalence-admin-token-0123456789";
    let daemon = ws.start_with_env(&[("CONVERGE_ADMIN_TOKEN", token)]);

    let task = |id: &str, ty: &str, data: Value| event(id, ty, "task/T-1", data);
    let send = |id: &str, campaign: &str, channel: &str, body: &str| {
        event(
            id,
            "send.requested",
            &format!("campaign/{campaign}"),
            json!({"channel": channel, "body": body}),
        )
    };
    accept(
        &daemon,
        &task(
            "h-1",
            "task.handoff",
            json!({"owner": "ana", "stage": "review"}),
        ),
    )
    .await;
    processed(&daemon, "h-1").await;
    daemon.advance_clock("30h").await;
    processed(&daemon, "timer-1").await;
    daemon.advance_clock("30h").await;
    processed(&daemon, "timer-2").await;
    accept(
        &daemon,
        &send("s-1", "c-1", "email", "Guaranteed risk-free!"),
    )
    .await;
    accept(&daemon, &send("s-2", "c-1", "social", "Fall sale")).await;
    accept(&daemon, &send("s-3", "c-2", "email", "risk-free returns")).await;
    processed(&daemon, "s-3").await;
    daemon.advance_clock("1h").await;
    let (status, body) = daemon
        .post_admin(
            "/v1/gates/campaign/c-2/override",
            Some(token),
            &json!({"by": "mia", "reason": "legal approved by phone"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    daemon.advance_clock("1h").await;
    accept(
        &daemon,
        &event("l-1", "legal.approved", "campaign/c-1", json!({})),
    )
    .await;
    processed(&daemon, "l-1").await;
    sink.wait_for(3).await;
    let (_, clock) = daemon.get("/v1/clock").await;
    let until: Value = serde_json::from_str(&clock).unwrap();
    assert!(daemon.terminate().success());

    let live = daemon_decisions(&ws);
    let replayed = replayed_decisions(&ws, until["now"].as_str().unwrap());
    assert!(live.len() >= 12, "{live:#?}");
    for kind in [
        "\"schedule\"",
        "\"notify\"",
        "\"escalate\"",
        "\"emit\"",
        "\"hold_send\"",
        "\"release_send\"",
        "\"shadow\":true",
    ] {
        assert!(
            live.iter().any(|d| d.contains(kind)),
            "no {kind} in {live:#?}"
        );
    }
    assert_eq!(live, replayed);
}
