//! `converge explain`: the decision trace of an event, and the audit trail
//! of an entity, as a report and as JSON.

use serde_json::{Value, json};

use crate::support::{Workspace, event};

/// The gate gives its condition terms with `because`; `say` has none.
const GATE: &str = r#"if event.type != "send.requested" { return; }
let approved = entity.stage == "approved";
because(#{ approved: approved, consistency: 0.72 });
if approved {
    release_send(event.data.channel, "approved");
} else {
    hold_send(event.data.channel, "not approved yet");
}
"#;

const SAY: &str = r#"notify("ops", `saw ${event.type}`);"#;

/// The report with what changes from run to run replaced: the workspace's
/// path, rule versions, and converge's own times.
fn redacted(out: &std::process::Output, ws: &Workspace, hashes: &[(String, &str)]) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut text = String::from_utf8(out.stdout.clone()).unwrap();
    text = text.replace(&ws.dir.path().display().to_string(), "<ws>");
    for (hash, name) in hashes {
        text = text.replace(hash.as_str(), name);
    }
    text.lines()
        .map(|line| {
            for label in ["  received   ", "  processed  "] {
                if let Some(rest) = line.strip_prefix(label) {
                    assert!(rest.ends_with('Z'), "{line}");
                    return format!("{label}<time>");
                }
            }
            // A held send's times, and what a rule saw: the entity's times
            // are the daemon's clock.
            if let Some((before, after)) = line.split_once(" held at ")
                && let Some((time, rest)) = after.split_once(" by ")
            {
                assert!(time.ends_with('Z'), "{line}");
                return format!("{before} held at <time> by {rest}");
            }
            if let Some((before, after)) = line.split_once(" updated ")
                && let Some((time, rest)) = after.split_once(", ")
            {
                assert!(time.ends_with('Z'), "{line}");
                return format!("{before} updated <time>, {rest}");
            }
            line.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The timers closing `converge explain --entity <subject>`, a line each.
fn timer_lines(ws: &Workspace, subject: &str) -> Vec<String> {
    let out = ws.converge(&["explain", "--entity", subject]);
    let report = redacted(&out, ws, &[]);
    let (_, timers) = report
        .split_once("\ntimers, waiting ones first (the next to fire on top):\n")
        .unwrap_or_else(|| panic!("no timers in {report}"));
    timers.lines().map(str::to_string).collect()
}

fn hash(trail: &Value, rule: &str) -> String {
    trail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["decision"]["rule"] == rule)
        .map(|d| d["decision"]["rule_hash"].as_str().unwrap().to_string())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_where_each_decision_was_made_and_why() {
    let ws = Workspace::new(&[("gate", GATE), ("say", SAY)], "");
    let daemon = ws.start();
    let send = event(
        "s-1",
        "send.requested",
        "campaign/c-42",
        json!({"channel": "email"}),
    );
    daemon
        .send_event(&event(
            "c-1",
            "campaign.updated",
            "campaign/c-42",
            json!({"stage": "review", "owner": "ana"}),
        ))
        .await;
    daemon.send_event(&send).await;
    daemon
        .send_event(&event("o-1", "task.created", "task/T-9", json!({})))
        .await;
    let trail = daemon
        .wait_for_trail("s-1", |t| t["processed_at_ms"].is_i64())
        .await;
    daemon
        .wait_for_trail("o-1", |t| t["processed_at_ms"].is_i64())
        .await;
    let hashes = [
        (hash(&trail, "gate"), "<gate>"),
        (hash(&trail, "say"), "<say>"),
    ];

    let out = ws.converge(&["explain", "s-1"]);
    assert_eq!(
        redacted(&out, &ws, &hashes),
        r#"event s-1 (send.requested) from /tests on hook test
  subject    campaign/c-42
  time       2026-11-23T10:00:00Z
  data       {"channel":"email"}
  received   <time>
  processed  <time>
  seq        2
  1. hold_send  channel: "email", reason: "not approved yet"
     by rule gate at <ws>/gate.rhai:7:5 (version <gate>)
     saw stage "review", owner "ana", updated <time>, 2 events
     because
       ✗ approved
         consistency: 0.72
     no action (no route)
  2. notify  message: "saw send.requested", to: "ops"
     by rule say at <ws>/say.rhai:1:1 (version <say>)
     saw stage "review", owner "ana", updated <time>, 2 events
     no action (no route)
  gate: email held at <time> by gate: not approved yet; still held"#
    );

    // The JSON keeps the trace with the decision.
    let out = ws.converge(&["explain", "s-1", "--json"]);
    let trails: Value = serde_json::from_slice(&out.stdout).unwrap();
    let decision = &trails[0]["decisions"][0]["decision"];
    assert_eq!(
        decision["trace"]["at"],
        format!("{}/gate.rhai:7:5", ws.dir.path().display())
    );
    assert_eq!(
        decision["trace"]["terms"],
        json!({"approved": false, "consistency": 0.72})
    );
    let mut inputs = decision["trace"]["inputs"].clone();
    // The entity's times are the daemon's clock when it journaled the event.
    let updated_at = inputs["updated_at"].take();
    assert!(
        updated_at.as_str().is_some_and(|t| t.ends_with('Z')),
        "{updated_at}"
    );
    assert_eq!(
        inputs,
        json!({"stage": "review", "owner": "ana", "updated_at": null, "events": 2})
    );

    // The entity's trail: every event about it, in order, and nothing else.
    let out = ws.converge(&["explain", "--entity", "campaign/c-42"]);
    let report = redacted(&out, &ws, &hashes);
    assert!(
        report.starts_with(
            r#"entity campaign/c-42

event c-1 (campaign.updated) from /tests on hook test
  subject    campaign/c-42
  time       2026-11-23T10:00:00Z
  data       {"owner":"ana","stage":"review"}
  received   <time>
  processed  <time>
  seq        1
  1. notify  message: "saw campaign.updated", to: "ops"
     by rule say at <ws>/say.rhai:1:1 (version <say>)
     saw stage "review", owner "ana", updated <time>, 1 event
     no action (no route)

event s-1 (send.requested) from /tests on hook test
"#
        ),
        "{report}"
    );
    assert!(!report.contains("task/T-9"), "{report}");
    let out = ws.converge(&["explain", "--entity", "campaign/c-42", "--json"]);
    let trails: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = trails
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c-1", "s-1"]);

    for args in [
        &["explain", "nope"][..],
        &["explain", "--entity", "campaign/none"],
        &["explain", "--entity", "not an entity"],
    ] {
        let out = ws.converge(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_what_each_rule_printed_for_the_event() {
    let ws = Workspace::new(
        &[(
            "chatty",
            "print(`checking ${event.type}`);\nprint(\"two\\nlines\");\nnotify(\"ops\", \"seen\");",
        )],
        "",
    );
    let daemon = ws.start();
    daemon
        .send_event(&event("p-1", "task.created", "task/T-1", json!({})))
        .await;
    daemon
        .wait_for_trail("p-1", |t| t["processed_at_ms"].is_i64())
        .await;
    let out = ws.converge(&["explain", "p-1"]);
    let report = redacted(&out, &ws, &[]);
    assert!(
        report.ends_with("  chatty printed: checking task.created\n  chatty printed: two\\nlines"),
        "{report}"
    );
    let out = ws.converge(&["explain", "p-1", "--json"]);
    let trails: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        trails[0]["rule_notes"],
        json!([
            {"rule": "chatty", "message": "checking task.created"},
            {"rule": "chatty", "message": "two\nlines"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_no_rule_decided_on_names_the_rules_that_run_for_its_type() {
    let ws = Workspace::new(
        &[
            ("gate", &format!("//! events: send.requested\n{GATE}")),
            (
                "blocked",
                "//! events: task.*\nif entity.stage == \"blocked\" { escalate(\"ops\", \"blocked\"); }",
            ),
        ],
        "",
    );
    let daemon = ws.start();
    for (id, stage) in [("q-1", "review"), ("q-2", "blocked")] {
        daemon
            .send_event(&event(
                id,
                "task.updated",
                "task/T-1",
                json!({"stage": stage}),
            ))
            .await;
        daemon
            .wait_for_trail(id, |t| t["processed_at_ms"].is_i64())
            .await;
    }
    let out = ws.converge(&["explain", "q-1"]);
    let report = redacted(&out, &ws, &[]);
    assert!(
        report.ends_with(
            "  no decisions\n  rules that run for task.updated in the config now: blocked; \
             1 other(s) do not (their `events` headers)"
        ),
        "{report}"
    );
    // Said only where no rule decided; never in the JSON.
    let out = ws.converge(&["explain", "q-2"]);
    assert!(!redacted(&out, &ws, &[]).contains("rules that run for"));
    let out = ws.converge(&["explain", "q-1", "--json"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("rules that run for"));
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_and_the_console_hide_the_fields_a_hook_marks_secret() {
    let ws = Workspace::new(
        &[(
            "leads",
            "print(`lead from ${event.data.contact.email}`);\nescalate(\"ops\", `call ${event.data.contact.email}`);",
        )],
        r#"
[hooks.test]
secret_fields = ["/contact/email", "/cards/*/number"]

[hooks.other]
"#,
    );
    let daemon = ws.start();
    let data = json!({
        "contact": {"email": "ana@example.com", "name": "Ana"},
        "cards": [{"number": "4111111111111111", "brand": "visa"}],
    });
    daemon
        .send_event(&event("l-1", "lead.created", "campaign/c-1", data.clone()))
        .await;
    let (status, _) = daemon
        .post(
            "/hooks/other",
            "application/cloudevents+json",
            event("l-2", "lead.created", "campaign/c-2", data.clone()).to_string(),
        )
        .await;
    assert_eq!(status, 202);
    for id in ["l-1", "l-2"] {
        daemon
            .wait_for_trail(id, |t| t["processed_at_ms"].is_i64())
            .await;
    }

    // The rules saw the data whole: the secret is in the journal and the
    // decision, and only what converge shows is redacted.
    let out = ws.converge(&["explain", "l-1", "--json"]);
    let trails: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        trails[0]["data"],
        json!({
            "contact": {"email": "[redacted]", "name": "Ana"},
            "cards": [{"number": "[redacted]", "brand": "visa"}],
        })
    );
    assert_eq!(
        trails[0]["rule_notes"],
        json!([{"rule": "leads", "message": "lead from [redacted]"}])
    );
    assert_eq!(
        trails[0]["decisions"][0]["decision"]["reason"],
        "call [redacted]"
    );
    let report = String::from_utf8(ws.converge(&["explain", "l-1"]).stdout).unwrap();
    assert!(report.contains("[redacted]"), "{report}");
    assert!(!report.contains("ana@example.com"), "{report}");
    assert!(!report.contains("4111111111111111"), "{report}");

    // Another hook's events are its own: nothing marked, nothing hidden.
    let out = ws.converge(&["explain", "l-2", "--json"]);
    let trails: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(trails[0]["data"], data);

    let (status, page) = daemon.get("/ui/records/campaign/c-1").await;
    assert_eq!(status, 200);
    assert!(page.contains("[redacted]"), "{page}");
    assert!(!page.contains("ana@example.com"), "{page}");
    assert!(!page.contains("4111111111111111"), "{page}");
    let (_, page) = daemon.get("/ui/records/campaign/c-2").await;
    assert!(page.contains("ana@example.com"), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entitys_trail_ends_with_its_timers_the_next_to_fire_first() {
    let ws = Workspace::new(
        &[(
            "ladder",
            "//! events: task.handoff\n\
             schedule(\"1h\", \"task.nudge\");\n\
             schedule(\"48h\", \"task.escalate\");\n\
             schedule(\"24h\", \"task.remind\");\n",
        )],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n",
    );
    let daemon = ws.start();
    daemon
        .send_event(&event("h-1", "task.handoff", "task/T-1", json!({})))
        .await;
    daemon
        .wait_for_trail("h-1", |t| t["processed_at_ms"].is_i64())
        .await;
    daemon.advance_clock("2h").await;
    daemon
        .wait_for_metric("converge_timers_fired_total", 1.0)
        .await;

    let lines = timer_lines(&ws, "task/T-1");
    assert_eq!(
        lines[..2],
        [
            "  task.remind  schedule by rule ladder, due 2026-11-24T09:00:00Z: pending",
            "  task.escalate  schedule by rule ladder, due 2026-11-25T09:00:00Z: pending",
        ],
        "{lines:#?}"
    );
    assert!(
        lines[2].starts_with(
            "  task.nudge  schedule by rule ladder, due 2026-11-23T10:00:00Z: fired at 2026-11-23T"
        ),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 3, "{lines:#?}");
    // The JSON stays the trails alone.
    let out = ws.converge(&["explain", "--entity", "task/T-1", "--json"]);
    let trails: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(trails.as_array().unwrap().iter().all(|t| t["seq"].is_i64()));
}

/// A timer made long ago and still waiting (a campaign's gate deadline)
/// stays on the entity's views when 60 later ones have fired since.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_waiting_timer_is_shown_past_many_newer_fired_ones() {
    let ws = Workspace::new(
        &[(
            "deadline",
            "//! events: task.created, task.poke\n\
             if event.type == \"task.created\" { schedule(\"48h\", \"task.deadline\"); }\n\
             if event.type == \"task.poke\" { schedule(\"1m\", \"task.ping\"); }\n",
        )],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n",
    );
    let daemon = ws.start();
    let mut events = vec![event("c-1", "task.created", "task/T-1", json!({}))];
    events.extend((0..60).map(|i| event(&format!("p-{i}"), "task.poke", "task/T-1", json!({}))));
    daemon.accept_all(&events).await;
    daemon
        .wait_for_trail("p-59", |t| t["processed_at_ms"].is_i64())
        .await;
    daemon.advance_clock("2m").await;
    daemon
        .wait_for_metric("converge_timers_fired_total", 60.0)
        .await;

    let lines = timer_lines(&ws, "task/T-1");
    assert_eq!(
        lines[0], "  task.deadline  schedule by rule deadline, due 2026-11-25T09:00:00Z: pending",
        "{lines:#?}"
    );
    // Then the newest 49 of the 60 that fired.
    assert_eq!(lines.len(), 50, "{lines:#?}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains("task.ping") && l.contains(": fired at"))
    );

    let (_, page) = daemon.get("/ui/records/task/T-1").await;
    assert!(
        page.contains("task.deadline"),
        "the record page shows it too"
    );

    // More waiting than listed: the newest 50, and a line saying so.
    let pokes: Vec<_> = (0..51)
        .map(|i| event(&format!("q-{i}"), "task.poke", "task/T-2", json!({})))
        .collect();
    daemon.accept_all(&pokes).await;
    daemon
        .wait_for_trail("q-50", |t| t["processed_at_ms"].is_i64())
        .await;
    let lines = timer_lines(&ws, "task/T-2");
    assert_eq!(lines.len(), 51, "{lines:#?}");
    assert!(
        lines[..50].iter().all(|l| l.ends_with(": pending")),
        "{lines:#?}"
    );
    assert_eq!(
        lines[50],
        "(only the newest 50 waiting are listed: GET /v1/entities/task/T-2/timers?pending=true has up to 1,000)"
    );
}
