//! `converge replay`: decisions from an NDJSON file and from the journal of
//! a daemon run, a diff between two rule sets, and a bad line reported.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::support::{Workspace, event};

/// Tells the new owner (with the replay clock's `now`), and escalates every
/// event about a task while it is blocked: a decision that depends on history.
const HANDOFF: &str = r#"//! events: task.*
if event.type == "task.handoff" {
    notify(event.data.owner, `${event.subject} is yours since ${now}`);
}
if entity.stage == "blocked" {
    escalate("review_owner", `${event.subject} is blocked`, 2);
}
"#;

/// Like HANDOFF, but escalates only when a task becomes blocked, and pauses
/// its email channel then.
const HANDOFF_V2: &str = r#"//! events: task.*
if event.type == "task.handoff" {
    notify(event.data.owner, `${event.subject} is yours since ${now}`);
}
if type_of(event.data) == "map" && event.data.get("stage") == "blocked" {
    escalate("review_owner", `${event.subject} is blocked`, 2);
    pause_channel("email", "the task is blocked");
}
"#;

const EVENTS: &str = r#"{"specversion":"1.0","id":"e1","source":"/t","type":"task.handoff","subject":"task/T-1","time":"2026-11-23T10:00:00Z","data":{"owner":"ana"}}
{"specversion":"1.0","id":"e2","source":"/t","type":"task.updated","subject":"task/T-1","time":"2026-11-23T11:00:00Z","data":{"stage":"blocked"}}

{"specversion":"1.0","id":"e3","source":"/t","type":"task.updated","subject":"task/T-1","data":{"note":"still stuck"}}
"#;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lines before the summary's timing line, which differs between runs.
fn without_timing(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| match line.split_once(" events in ") {
            Some((before, _)) if line.starts_with("replayed ") => {
                format!("{before} events in [time]")
            }
            _ => line.to_string(),
        })
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn an_ndjson_file_replays_to_exact_decisions_on_the_events_clock() {
    let ws = Workspace::new(&[("handoff", HANDOFF)], "");
    let events = write(ws.dir.path(), "events.ndjson", EVENTS);
    let out = ws.converge(&["replay", "--events", &events]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        without_timing(&stdout(&out)),
        [
            r#"e1  handoff  {"kind":"notify","to":"ana","message":"task/T-1 is yours since 2026-11-23T10:00:00Z"}"#,
            r#"e2  handoff  {"kind":"escalate","to":"review_owner","reason":"task/T-1 is blocked","level":2}"#,
            // No `time`: the replay clock stays at e2's, and the state built
            // from e2 still says blocked.
            r#"e3  handoff  {"kind":"escalate","to":"review_owner","reason":"task/T-1 is blocked","level":2}"#,
            "",
            "replayed 3 events in [time]",
            "decisions: 2 escalate, 1 notify",
            "rule failures: none",
        ]
    );
}

#[test]
fn a_bad_line_is_reported_with_its_number_skipped_and_counted() {
    let ws = Workspace::new(&[("handoff", HANDOFF)], "");
    let text = EVENTS.replacen('\n', "\n{\"id\": \"half an event\"\n", 1);
    let events = write(ws.dir.path(), "events.ndjson", &text);
    let out = ws.converge(&["replay", "--events", &events, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("warning: skipped {events}:2: ")),
        "{err}"
    );
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(lines[0]["event"], "e1");
    assert_eq!(lines[0]["now"], "2026-11-23T10:00:00Z");
    let summary = &lines[3]["summary"];
    assert_eq!(summary["events"], 3);
    assert_eq!(summary["skipped"], 1);
    assert_eq!(summary["decisions"], json!({"escalate": 2, "notify": 1}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_journal_of_a_daemon_run_replays_to_the_same_decisions() {
    let ws = Workspace::new(&[("handoff", HANDOFF)], "");
    let daemon = ws.start();
    for e in [
        event("j1", "task.handoff", "task/T-7", json!({"owner": "bo"})),
        event(
            "j2",
            "task.updated",
            "task/T-7",
            json!({"stage": "blocked"}),
        ),
        event("j3", "campaign.updated", "campaign/C-1", json!({})),
    ] {
        let (status, body) = daemon.send_event(&e).await;
        assert_eq!(status, 202, "{body}");
    }
    let live = daemon
        .wait_for_trail("j2", |trail| {
            trail["decisions"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    assert!(daemon.terminate().success());

    let out = ws.converge(&["replay", "--from-journal", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions: Vec<Value> = lines
        .iter()
        .filter(|l| l.get("decision").is_some())
        .map(|l| json!([l["event"], l["seq"], l["rule"], l["decision"]]))
        .collect();
    assert_eq!(
        decisions,
        [
            json!(["j1", 1, "handoff", {"kind": "notify", "to": "bo", "message": "task/T-7 is yours since 2026-11-23T10:00:00Z"}]),
            json!(["j2", 2, "handoff", {"kind": "escalate", "to": "review_owner", "reason": "task/T-7 is blocked", "level": 2}]),
        ]
    );
    // The live run decided the same for j2 (j1's message differs: it says
    // the live clock's `now`, where replay says the event's time).
    let mut live_decision = live["decisions"][0]["decision"].clone();
    let members = live_decision.as_object_mut().unwrap();
    assert_eq!(members.remove("rule"), Some(json!("handoff")));
    members.remove("rule_hash");
    // Replay prints the decision without its trace.
    assert!(members.remove("trace").is_some());
    assert_eq!(live_decision, decisions[1][3], "{live}");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["events"], 3, "{summary}");
}

#[test]
fn a_diff_shows_the_decisions_that_would_change_and_sums_them_up() {
    let ws = Workspace::new(&[], "");
    let dir = ws.dir.path();
    let a = write(dir, "a/handoff.rhai", HANDOFF);
    let b_dir = dir.join("b");
    write(dir, "b/handoff.rhai", HANDOFF_V2);
    let events = write(dir, "events.ndjson", EVENTS);
    let out = ws.converge(&[
        "replay",
        "--events",
        &events,
        "--rules",
        &a,
        "--diff",
        &b_dir.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        without_timing(&stdout(&out)),
        [
            "e2 (task.updated task/T-1 at 2026-11-23T11:00:00Z)",
            r#"+ handoff  {"kind":"pause_channel","channel":"email","reason":"the task is blocked"}"#,
            "e3 (task.updated task/T-1 at 2026-11-23T11:00:00Z)",
            r#"- handoff  {"kind":"escalate","to":"review_owner","reason":"task/T-1 is blocked","level":2}"#,
            "",
            "replayed 3 events in [time]",
            "a: decisions: 2 escalate, 1 notify; rule failures: none",
            "b: decisions: 1 escalate, 1 notify, 1 pause_channel; rule failures: none",
            "2 of 3 events decide differently: 1 only in a (-), 1 only in b (+)",
            "b would pause 1 more channel, 1 fewer escalation",
        ]
    );

    let same = ws.converge(&["replay", "--events", &events, "--rules", &a, "--diff", &a]);
    assert!(same.status.success(), "{}", stderr(&same));
    assert!(
        stdout(&same).ends_with("no decision would change\n"),
        "{}",
        stdout(&same)
    );
}
