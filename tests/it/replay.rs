//! `converge replay`: decisions from an NDJSON file and from the journal of
//! a daemon run, a diff between two rule sets, a bad line reported; timers,
//! expects and emits simulated on the events' clock, and decision traces in
//! `--json`.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::support::{Workspace, event, example_rule};

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

/// What HANDOFF_V2 decides differently from HANDOFF on EVENTS.
const HANDOFF_V2_CHANGES: [&str; 4] = [
    "e2 (task.updated task/T-1 at 2026-11-23T11:00:00Z)",
    r#"+ handoff  {"kind":"pause_channel","channel":"email","reason":"the task is blocked"}"#,
    "e3 (task.updated task/T-1 at 2026-11-23T11:00:00Z)",
    r#"- handoff  {"kind":"escalate","to":"review_owner","reason":"task/T-1 is blocked","level":2}"#,
];

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

/// The last `n` lines of a summary up to its `rule failures` line (the
/// metrics follow it).
fn ending_at_rule_failures(text: &[String], n: usize) -> Vec<String> {
    let end = text
        .iter()
        .position(|line| line.starts_with("rule failures: "))
        .expect("a summary")
        + 1;
    text[end - n..end].to_vec()
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
            r#"2026-11-23T10:00:00Z  e1  handoff  {"kind":"notify","to":"ana","message":"task/T-1 is yours since 2026-11-23T10:00:00Z"}"#,
            r#"2026-11-23T11:00:00Z  e2  handoff  {"kind":"escalate","to":"review_owner","reason":"task/T-1 is blocked","level":2}"#,
            // No `time`: the replay clock stays at e2's, and the state built
            // from e2 still says blocked.
            r#"2026-11-23T11:00:00Z  e3  handoff  {"kind":"escalate","to":"review_owner","reason":"task/T-1 is blocked","level":2}"#,
            "",
            "replayed 3 events in [time]",
            "simulated: 0 timers fired, 0 events emitted",
            "decisions: 2 escalate, 1 notify",
            "rule failures: none",
            // The metrics of the replayed events (docs/reports.md): T-1 is
            // still blocked; two of three events escalated.
            "metrics:",
            "  blocked_work: no samples; 1 blocked now",
            "  exception_rate: 66.7% (3 samples)",
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
    // The handoff's time is when the daemon's clock journaled it.
    let since = daemon
        .wait_for_trail("j1", |trail| !trail["processed_at_ms"].is_null())
        .await["decisions"][0]["decision"]["message"]
        .clone();
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
            json!(["j1", 1, "handoff", {"kind": "notify", "to": "bo", "message": since}]),
            json!(["j2", 2, "handoff", {"kind": "escalate", "to": "review_owner", "reason": "task/T-7 is blocked", "level": 2}]),
        ]
    );
    // The live run decided the same for j2 (j1's message differs: it says
    // the live clock's `now`, where replay says the event's time).
    let mut live_decision = live["decisions"][0]["decision"].clone();
    let members = live_decision.as_object_mut().unwrap();
    assert_eq!(members.remove("rule"), Some(json!("handoff")));
    members.remove("rule_hash");
    // With the same trace: call site, inputs.
    let live_trace = members.remove("trace").unwrap();
    assert_eq!(lines[1]["trace"], live_trace, "{live}");
    assert!(
        live_trace["at"]
            .as_str()
            .unwrap()
            .ends_with("handoff.rhai:6:5"),
        "{live_trace}"
    );
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
    let b_is = format!(
        "b is a with handoff from {}",
        b_dir.join("handoff.rhai").display()
    );
    assert_eq!(
        without_timing(&stdout(&out)),
        [
            HANDOFF_V2_CHANGES[0],
            HANDOFF_V2_CHANGES[1],
            HANDOFF_V2_CHANGES[2],
            HANDOFF_V2_CHANGES[3],
            "",
            "replayed 3 events in [time]",
            &b_is,
            "a: decisions: 2 escalate, 1 notify; rule failures: none; simulated: 0 timers fired, 0 events emitted",
            "b: decisions: 1 escalate, 1 notify, 1 pause_channel; rule failures: none; simulated: 0 timers fired, 0 events emitted",
            "2 of 3 events decide differently: 1 only in a (-), 1 only in b (+)",
            "b would pause 1 more channel, 1 fewer escalation",
            "metrics (a -> b):",
            "  exception_rate: 66.7% -> 33.3%",
        ]
    );

    let same = ws.converge(&["replay", "--events", &events, "--rules", &a, "--diff", &a]);
    assert!(same.status.success(), "{}", stderr(&same));
    assert!(
        stdout(&same).ends_with("no decision would change\nmetrics: the same for a and b\n"),
        "{}",
        stdout(&same)
    );
}

/// Counts every event: a rule an edit of HANDOFF leaves alone.
const TALLY: &str = r#"notify("ops", `seen ${event.id}`);"#;

#[test]
fn a_diff_of_one_edited_rule_runs_the_configs_other_rules_on_both_sides() {
    let ws = Workspace::new(&[("tally", TALLY), ("handoff", HANDOFF)], "");
    let dir = ws.dir.path();
    let edited = write(dir, "edits/handoff.rhai", HANDOFF_V2);
    let events = write(dir, "events.ndjson", EVENTS);

    // Only the edit's differences: tally decides the same in a and b.
    let out = ws.converge(&["replay", "--events", &events, "--diff", &edited]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(without_timing(&stdout(&out))[..4], HANDOFF_V2_CHANGES);
    assert!(
        stdout(&out).contains(&format!("\nb is a with handoff from {edited}\n")),
        "{}",
        stdout(&out)
    );

    // What leaving a rule out changes, with an edit or alone.
    let out = ws.converge(&["replay", "--events", &events, "--without", "tally"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("- tally  ").count(), 3, "{text}");
    assert!(!text.contains("+ "), "{text}");
    assert!(text.contains("\nb is a with tally left out\n"), "{text}");
    assert!(
        text.contains("3 of 3 events decide differently: 3 only in a (-), 0 only in b (+)"),
        "{text}"
    );

    // A name a does not have is refused before anything runs.
    let out = ws.converge(&[
        "replay",
        "--events",
        &events,
        "--diff",
        &edited,
        "--without",
        "tallies",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "error: --without tallies: a has no rule `tallies` (its rules: tally, handoff)\n"
    );
    assert_eq!(stdout(&out), "");
}

fn stalled_handoff() -> String {
    example_rule("stalled_handoff")
}

/// Two tasks handed off at once; T-2 moves after 30h, T-1 never does. The
/// last event is 80h after the handoffs.
const LADDER: &str = r#"{"specversion":"1.0","id":"h1","source":"/jira","type":"task.handoff","subject":"task/T-1","time":"2026-11-23T10:00:00Z","data":{"owner":"bo","stage":"review","business_owner":"carla"}}
{"specversion":"1.0","id":"h2","source":"/jira","type":"task.handoff","subject":"task/T-2","time":"2026-11-23T10:00:00Z","data":{"owner":"cy","stage":"review"}}
{"specversion":"1.0","id":"u2","source":"/jira","type":"task.updated","subject":"task/T-2","time":"2026-11-24T16:00:00Z","data":{"stage":"in_progress"}}
{"specversion":"1.0","id":"c1","source":"/jira","type":"task.commented","subject":"task/T-1","time":"2026-11-26T18:00:00Z","data":{}}
"#;

/// The decisions of the handoffs (notify, set_field, the first rung).
fn handoff_lines(id: &str, task: &str, owner: &str) -> Vec<String> {
    let at = "2026-11-23T10:00:00Z";
    vec![
        format!(
            r#"{at}  {id}  stalled_handoff  {{"kind":"notify","to":"{owner}","message":"task/{task} was handed to you for review"}}"#
        ),
        format!(
            r#"{at}  {id}  stalled_handoff  {{"kind":"set_field","field":"handoff","value":{{"at":"{at}","owner":"{owner}","stage_since":"{at}"}}}}"#
        ),
        format!(
            r#"{at}  {id}  stalled_handoff  {{"kind":"expect","event_type":"task.handoff.ended","within_ms":86400000,"otherwise":"task.handoff.remind","catch_up":"fire_late"}}"#
        ),
    ]
}

/// The decisions of a rung that fires: its notice, then the next rung.
fn rung_lines(at: &str, id: &str, notice: &str, next: &str) -> Vec<String> {
    vec![
        format!(r#"{at}  {id}  stalled_handoff  {notice}"#),
        format!(
            r#"{at}  {id}  stalled_handoff  {{"kind":"cancel_expects","event_type":"task.handoff.ended"}}"#
        ),
        format!(
            r#"{at}  {id}  stalled_handoff  {{"kind":"expect","event_type":"task.handoff.ended","within_ms":86400000,"otherwise":"task.handoff.{next}","catch_up":"fire_late"}}"#
        ),
    ]
}

#[test]
fn a_stalled_handoff_climbs_the_ladder_on_the_virtual_clock_until_the_task_moves() {
    let ws = Workspace::new(&[("stalled_handoff", &stalled_handoff())], "");
    let events = write(ws.dir.path(), "events.ndjson", LADDER);
    let out = ws.converge(&["replay", "--events", &events]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut expected = handoff_lines("h1", "T-1", "bo");
    expected.extend(handoff_lines("h2", "T-2", "cy"));
    // Both reminders at 24h, each expecting its 48h rung; T-2 moves at 30h,
    // which ends its ladder: `cancel_expects` cancels its waiting rung
    // (timer 4).
    expected.extend(rung_lines(
        "2026-11-24T10:00:00Z",
        "timer-1",
        r#"{"kind":"notify","to":"bo","message":"task/T-1 has waited 24h for you since it was handed to you (stage: review): pick it up or hand it back"}"#,
        "escalate_review",
    ));
    expected.extend(rung_lines(
        "2026-11-24T10:00:00Z",
        "timer-2",
        r#"{"kind":"notify","to":"cy","message":"task/T-2 has waited 24h for you since it was handed to you (stage: review): pick it up or hand it back"}"#,
        "escalate_review",
    ));
    expected.extend([
        r#"2026-11-24T16:00:00Z  u2  stalled_handoff  {"kind":"set_field","field":"handoff","value":null}"#.into(),
        r#"2026-11-24T16:00:00Z  u2  stalled_handoff  {"kind":"cancel_expects","event_type":"task.handoff.ended"}"#.into(),
    ]);
    expected.extend(rung_lines(
        "2026-11-25T10:00:00Z",
        "timer-3",
        r#"{"kind":"escalate","to":"review_owner","reason":"task/T-1 has not moved for 48h since it was handed to bo (stage: review)","level":2}"#,
        "escalate_business",
    ));
    expected.extend([
        r#"2026-11-26T10:00:00Z  timer-5  stalled_handoff  {"kind":"escalate","to":"carla","reason":"task/T-1 has not moved for 72h since it was handed to bo (stage: review)","level":3}"#.into(),
        "".into(),
        "replayed 4 events in [time]".into(),
        "simulated: 4 timers fired, 0 events emitted".into(),
        "decisions: 4 cancel_expects, 2 escalate, 5 expect, 4 notify, 3 set_field".into(),
        "rule failures: none".into(),
        "metrics:".into(),
        "  review_time: median 30.0h, p85 30.0h (1 sample)".into(),
        "  exception_rate: 25.0% (8 samples)".into(),
        "  approval_pass_rate: 0.0% (1 sample)".into(),
    ]);
    assert_eq!(without_timing(&stdout(&out)), expected);

    // Without the last event no timer fires after T-2's move (30h) ...
    let first_three: String = LADDER.lines().take(3).map(|l| format!("{l}\n")).collect();
    let events = write(ws.dir.path(), "first-three.ndjson", &first_three);
    let out = ws.converge(&["replay", "--events", &events]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = without_timing(&stdout(&out));
    assert_eq!(
        ending_at_rule_failures(&text, 3),
        [
            "simulated: 2 timers fired, 0 events emitted; 1 timer not yet due at 2026-11-24T16:00:00Z",
            "decisions: 3 cancel_expects, 4 expect, 4 notify, 3 set_field",
            "rule failures: none",
        ]
    );
    // ... unless --until says how far the clock goes.
    let out = ws.converge(&[
        "replay",
        "--events",
        &events,
        "--until",
        "2026-11-26T18:00:00Z",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = without_timing(&stdout(&out));
    assert_eq!(
        ending_at_rule_failures(&text, 3),
        [
            "simulated: 4 timers fired, 0 events emitted",
            "decisions: 4 cancel_expects, 2 escalate, 5 expect, 4 notify, 3 set_field",
            "rule failures: none",
        ]
    );
}

#[test]
fn recorded_timer_events_are_simulated_instead_unless_no_simulate() {
    let ws = Workspace::new(&[("stalled_handoff", &stalled_handoff())], "");
    // The reminder the live run journaled for T-1.
    let recorded_timer = r#"{"specversion":"1.0","id":"timer-1","source":"converge/timers","type":"task.handoff.remind","subject":"task/T-1","time":"2026-11-24T10:00:00.000Z","data":{"timer":{"id":1,"rule":"stalled_handoff","scheduled_for":"2026-11-24T10:00:00.000Z","late":false}}}"#;
    let text = format!(
        "{}\n{recorded_timer}\n{}\n",
        LADDER.lines().next().unwrap(),
        LADDER.lines().nth(3).unwrap()
    );
    let events = write(ws.dir.path(), "events.ndjson", &text);
    let reminders = |out: &Output| -> Vec<String> {
        stdout(out)
            .lines()
            .filter(|l| l.contains("has waited 24h"))
            .map(|l| l.split("  ").take(2).collect::<Vec<_>>().join("  "))
            .collect()
    };

    let out = ws.converge(&["replay", "--events", &events]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Once, from the simulated timer, not twice.
    assert_eq!(reminders(&out), ["2026-11-24T10:00:00Z  timer-1"]);
    let text = stdout(&out);
    assert!(
        text.contains(
            "events/s); 1 timer or emit event journaled by converge left out (simulated instead)\n"
        ),
        "{text}"
    );
    let text = without_timing(&text);
    assert_eq!(
        ending_at_rule_failures(&text, 4),
        [
            "replayed 2 events in [time]",
            "simulated: 3 timers fired, 0 events emitted",
            "decisions: 2 cancel_expects, 2 escalate, 3 expect, 2 notify, 1 set_field",
            "rule failures: none",
        ]
    );

    let out = ws.converge(&["replay", "--events", &events, "--no-simulate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(reminders(&out), ["2026-11-24T10:00:00Z  timer-1"]);
    let text = without_timing(&stdout(&out));
    assert_eq!(
        ending_at_rule_failures(&text, 3),
        [
            "replayed 3 events in [time]",
            "decisions: 1 cancel_expects, 2 expect, 2 notify, 1 set_field",
            "rule failures: none",
        ]
    );
}

/// Expects an update within 48h of a handoff.
const EXPECT_UPDATE: &str = r#"//! events: task.*
if event.type == "task.handoff" {
    expect("task.updated", "48h", "task.stalled");
}
if event.type == "task.stalled" {
    escalate("review_owner", `${event.subject} stalled (due ${event.data.timer.scheduled_for})`, 2);
}
"#;

#[test]
fn an_expect_is_cancelled_by_the_expected_event_and_fires_without_it() {
    let ws = Workspace::new(&[("expect_update", EXPECT_UPDATE)], "");
    let events = write(
        ws.dir.path(),
        "events.ndjson",
        r#"{"specversion":"1.0","id":"h1","source":"/t","type":"task.handoff","subject":"task/T-1","time":"2026-11-23T10:00:00Z"}
{"specversion":"1.0","id":"h2","source":"/t","type":"task.handoff","subject":"task/T-2","time":"2026-11-23T10:00:00Z"}
{"specversion":"1.0","id":"u1","source":"/t","type":"task.updated","subject":"task/T-1","time":"2026-11-25T09:00:00Z"}
{"specversion":"1.0","id":"c3","source":"/t","type":"task.commented","subject":"task/T-3","time":"2026-11-25T22:00:00Z"}
"#,
    );
    let out = ws.converge(&["replay", "--events", &events]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        without_timing(&stdout(&out)),
        [
            r#"2026-11-23T10:00:00Z  h1  expect_update  {"kind":"expect","event_type":"task.updated","within_ms":172800000,"otherwise":"task.stalled","catch_up":"fire_late"}"#,
            r#"2026-11-23T10:00:00Z  h2  expect_update  {"kind":"expect","event_type":"task.updated","within_ms":172800000,"otherwise":"task.stalled","catch_up":"fire_late"}"#,
            // T-1 was updated at 47h: its expect is cancelled; T-2's fires.
            r#"2026-11-25T10:00:00Z  timer-2  expect_update  {"kind":"escalate","to":"review_owner","reason":"task/T-2 stalled (due 2026-11-25T10:00:00.000Z)","level":2}"#,
            "",
            "replayed 4 events in [time]",
            "simulated: 1 timer fired, 0 events emitted",
            "decisions: 1 escalate, 2 expect",
            "rule failures: none",
            "metrics:",
            "  exception_rate: 20.0% (5 samples)",
        ]
    );
}

/// An approval emits `campaign.ready`, which emits `campaign.announce`;
/// `loop` emits itself until the depth guard refuses.
const CHAIN: &str = r#"
if event.type == "campaign.approved" {
    emit("campaign.ready", #{ by: event.data.by });
} else if event.type == "campaign.ready" {
    notify(event.data.by, `${event.subject} is ready (${event.id}, by ${entity.fields.by})`);
    emit("campaign.announce");
} else if event.type == "campaign.announce" {
    notify("team", `${event.subject} announced`);
} else if event.type == "loop" {
    emit("loop");
}
"#;

#[test]
fn emitted_events_follow_their_cause_up_to_the_depth_guard() {
    let ws = Workspace::new(&[("chain", CHAIN)], "");
    ws.edit_config("[rules]\n", "[rules]\nmax_emit_depth = 2\n");
    let events = write(
        ws.dir.path(),
        "events.ndjson",
        r#"{"specversion":"1.0","id":"a1","source":"/t","type":"campaign.approved","subject":"campaign/C-1","time":"2026-11-23T10:00:00Z","data":{"by":"mia"}}
{"specversion":"1.0","id":"l1","source":"/t","type":"loop","subject":"campaign/C-1","time":"2026-11-23T11:00:00Z"}
"#,
    );
    let out = ws.converge(&["replay", "--events", &events]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        without_timing(&stdout(&out)),
        [
            r#"2026-11-23T10:00:00Z  a1  chain  {"kind":"emit","event_type":"campaign.ready","data":{"by":"mia"}}"#,
            r#"2026-11-23T10:00:00Z  emit-1-1  chain  {"kind":"notify","to":"mia","message":"campaign/C-1 is ready (emit-1-1, by mia)"}"#,
            r#"2026-11-23T10:00:00Z  emit-1-1  chain  {"kind":"emit","event_type":"campaign.announce","data":{}}"#,
            r#"2026-11-23T10:00:00Z  emit-2-1  chain  {"kind":"notify","to":"team","message":"campaign/C-1 announced"}"#,
            r#"2026-11-23T11:00:00Z  l1  chain  {"kind":"emit","event_type":"loop","data":{}}"#,
            r#"2026-11-23T11:00:00Z  emit-4-1  chain  {"kind":"emit","event_type":"loop","data":{}}"#,
            "2026-11-23T11:00:00Z  emit-5-1  chain  FAILED: emit of `loop` refused: it would be 3 emits deep, past rules.max_emit_depth (2); is a rule emitting in a loop?",
            "",
            "replayed 2 events in [time]",
            "simulated: 0 timers fired, 4 events emitted",
            "decisions: 4 emit, 2 notify",
            "rule failures: 1 chain",
            "metrics:",
            "  exception_rate: 16.7% (6 samples)",
        ]
    );
}

#[test]
fn a_diff_counts_the_decisions_timers_lead_to() {
    let ws = Workspace::new(&[], "");
    let dir = ws.dir.path();
    let a = write(dir, "a/stalled_handoff.rhai", &stalled_handoff());
    // b climbs the ladder even when the task moved: it never sees a move,
    // so it neither ends the ladder nor stops a rung.
    let moved = "let moved = handoff != () && (entity.owner != handoff.owner || entity.stage_since != handoff.stage_since);";
    let source = stalled_handoff();
    assert!(source.contains(moved));
    let b = write(
        dir,
        "b/stalled_handoff.rhai",
        &source.replace(moved, "let moved = false;"),
    );
    let events = write(dir, "events.ndjson", LADDER);
    let out = ws.converge(&["replay", "--events", &events, "--rules", &a, "--diff", &b]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        without_timing(&stdout(&out)),
        [
            "u2 (task.updated task/T-2 at 2026-11-24T16:00:00Z)",
            r#"- stalled_handoff  {"kind":"set_field","field":"handoff","value":null}"#,
            r#"- stalled_handoff  {"kind":"cancel_expects","event_type":"task.handoff.ended"}"#,
            "timer-4 (task.handoff.escalate_review task/T-2 at 2026-11-25T10:00:00Z)",
            r#"+ stalled_handoff  {"kind":"escalate","to":"review_owner","reason":"task/T-2 has not moved for 48h since it was handed to cy (stage: in_progress)","level":2}"#,
            r#"+ stalled_handoff  {"kind":"cancel_expects","event_type":"task.handoff.ended"}"#,
            r#"+ stalled_handoff  {"kind":"expect","event_type":"task.handoff.ended","within_ms":86400000,"otherwise":"task.handoff.escalate_business","catch_up":"fire_late"}"#,
            "timer-6 (task.handoff.escalate_business task/T-2 at 2026-11-26T10:00:00Z)",
            r#"+ stalled_handoff  {"kind":"escalate","to":"business_owner","reason":"task/T-2 has not moved for 72h since it was handed to cy (stage: in_progress)","level":3}"#,
            "",
            "replayed 4 events in [time]",
            &format!("b is a with stalled_handoff from {b}"),
            "a: decisions: 4 cancel_expects, 2 escalate, 5 expect, 4 notify, 3 set_field; rule failures: none; simulated: 4 timers fired, 0 events emitted",
            "b: decisions: 4 cancel_expects, 4 escalate, 6 expect, 4 notify, 2 set_field; rule failures: none; simulated: 6 timers fired, 0 events emitted",
            "3 of 10 events (4 replayed, 6 simulated) decide differently: 2 only in a (-), 4 only in b (+)",
            "b would wait for 1 more expected event, 2 more escalations, 1 fewer field change; cancel_expects decisions differ in what they say",
            "metrics (a -> b):",
            "  exception_rate: 25.0% -> 40.0%",
        ]
    );

    let out = ws.converge(&[
        "replay", "--events", &events, "--rules", &a, "--diff", &b, "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7, "{lines:#?}");
    assert_eq!(
        (&lines[0]["origin"], &lines[0]["only_in"], &lines[0]["now"]),
        (
            &json!("recorded"),
            &json!("a"),
            &json!("2026-11-24T16:00:00Z")
        )
    );
    assert_eq!(
        (&lines[2]["origin"], &lines[2]["only_in"], &lines[2]["now"]),
        (&json!("timer"), &json!("b"), &json!("2026-11-25T10:00:00Z"))
    );
    assert!(lines[2]["trace"]["at"].is_string(), "{}", lines[2]);
    let summary = &lines[6]["summary"];
    assert_eq!(summary["b"]["decisions"]["escalate"], 4, "{summary}");
    assert_eq!(
        summary["a"]["simulated"],
        json!({"timers_fired": 4, "events_emitted": 0, "timers_pending": 0, "clock": "2026-11-26T18:00:00Z"})
    );
    assert_eq!(
        summary["change"],
        "b would wait for 1 more expected event, 2 more escalations, 1 fewer field change; cancel_expects decisions differ in what they say"
    );
    assert_eq!(
        summary["b_is_a_with"],
        json!({"replaced": [{"rule": "stalled_handoff", "file": b}], "added": [], "left_out": []})
    );
}

/// Escalates a blocked task, saying why.
const BECAUSE: &str = r#"//! events: task.*
if event.type == "task.updated" {
    let blocked = event.data.get("stage") == "blocked";
    because(#{ blocked: blocked, stage: event.data.get("stage") });
    if blocked {
        escalate("review_owner", "blocked", 2);
        schedule("1h", "task.still_blocked");
    }
}
if event.type == "task.still_blocked" {
    notify("ana", "still blocked");
}
"#;

#[test]
fn json_lines_carry_each_decisions_trace() {
    let ws = Workspace::new(&[("because", BECAUSE)], "");
    let events = write(
        ws.dir.path(),
        "events.ndjson",
        r#"{"specversion":"1.0","id":"e1","source":"/t","type":"task.updated","subject":"task/T-1","time":"2026-11-23T10:00:00Z","data":{"stage":"blocked","owner":"bo"}}
{"specversion":"1.0","id":"e2","source":"/t","type":"task.viewed","subject":"task/T-1","time":"2026-11-23T12:00:00Z"}
"#,
    );
    let out = ws.converge(&["replay", "--events", &events, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let rule = ws.dir.path().join("because.rhai").display().to_string();
    for line in &mut lines[..3] {
        assert!(line["rule_hash"].as_str().is_some_and(|h| !h.is_empty()));
        line.as_object_mut().unwrap().remove("rule_hash");
    }
    let inputs = json!({"stage": "blocked", "owner": "bo", "updated_at": "2026-11-23T10:00:00Z", "events": 1});
    let terms = json!({"blocked": true, "stage": "blocked"});
    assert_eq!(
        lines[..3],
        [
            json!({"event": "e1", "seq": null, "origin": "recorded", "type": "task.updated",
                "subject": "task/T-1", "now": "2026-11-23T10:00:00Z", "rule": "because",
                "decision": {"kind": "escalate", "to": "review_owner", "reason": "blocked", "level": 2},
                "trace": {"at": format!("{rule}:6:9"), "inputs": inputs, "terms": terms}}),
            json!({"event": "e1", "seq": null, "origin": "recorded", "type": "task.updated",
                "subject": "task/T-1", "now": "2026-11-23T10:00:00Z", "rule": "because",
                "decision": {"kind": "schedule", "after_ms": 3_600_000, "event_type": "task.still_blocked", "data": {}, "catch_up": "fire_late"},
                "trace": {"at": format!("{rule}:7:9"), "inputs": inputs, "terms": terms}}),
            json!({"event": "timer-1", "seq": null, "origin": "timer", "type": "task.still_blocked",
                "subject": "task/T-1", "now": "2026-11-23T11:00:00Z", "rule": "because",
                "decision": {"kind": "notify", "to": "ana", "message": "still blocked"},
                "trace": {"at": format!("{rule}:11:5"),
                    // A fired timer is not an update of the task: still 1 event.
                    "inputs": {"stage": "blocked", "owner": "bo", "updated_at": "2026-11-23T10:00:00Z", "events": 1}}}),
        ]
    );
}

/// A reminder 48h after a task is created; an approval expected within
/// 24h, whose absence escalates and emits `task.flagged`.
const LIVE_TIMERS: &str = r#"
if event.type == "task.created" {
    schedule("48h", "task.reminder", #{ level: 1 });
    expect("task.approved", "24h", "task.approval_missing");
}
if event.type == "task.reminder" {
    notify("owner", `reminder level ${event.data.level}`);
}
if event.type == "task.approval_missing" {
    escalate("review_owner", "no approval within 24h");
    emit("task.flagged");
}
if event.type == "task.flagged" {
    notify("review_owner", `${event.subject} flagged`);
}
"#;

/// `(event, rule, decision with its trace)` of each decision line.
fn decision_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("decision").is_some())
        .map(|l| json!([l["event"], l["rule"], l["decision"], l["trace"]]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_with_fired_timers_and_emits_replays_to_the_live_decisions() {
    let ws = Workspace::new(
        &[("live", LIVE_TIMERS)],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T10:00:00Z\"\n",
    );
    let daemon = ws.start();
    let processed = |trail: &Value| !trail["processed_at_ms"].is_null();
    let (status, body) = daemon
        .send_event(&event("c-1", "task.created", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202, "{body}");
    daemon.wait_for_trail("c-1", processed).await;
    daemon.advance_clock("25h").await;
    daemon.wait_for_trail("emit-2-1", processed).await;
    daemon.advance_clock("23h").await;
    daemon.wait_for_trail("timer-1", processed).await;
    let mut viewed = event("v-1", "task.viewed", "task/T-1", json!({}));
    viewed["time"] = json!("2026-11-25T12:00:00Z");
    let (status, body) = daemon.send_event(&viewed).await;
    assert_eq!(status, 202, "{body}");
    daemon.wait_for_trail("v-1", processed).await;
    let mut live = Vec::new();
    for id in ["c-1", "timer-2", "emit-2-1", "timer-1", "v-1"] {
        let trail = daemon.wait_for_trail(id, processed).await;
        for d in trail["decisions"].as_array().unwrap() {
            let mut decision = d["decision"].clone();
            let members = decision.as_object_mut().unwrap();
            let rule = members.remove("rule").unwrap();
            members.remove("rule_hash");
            let trace = members.remove("trace").unwrap();
            live.push(json!([id, rule, decision, trace]));
        }
    }
    assert!(daemon.terminate().success());
    assert_eq!(live.len(), 6, "{live:#?}");

    // The timers and the emit are simulated (the journaled ones left out),
    // and decide what they decided live, with the same ids and traces.
    let out = ws.converge(&["replay", "--from-journal", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(decision_lines(&out), live);
    // Only recorded events have a journal seq.
    let origins: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("decision").is_some())
        .map(|l| json!([l["event"], l["seq"], l["origin"]]))
        .collect();
    assert_eq!(
        origins,
        [
            json!(["c-1", 1, "recorded"]),
            json!(["c-1", 1, "recorded"]),
            json!(["timer-2", null, "timer"]),
            json!(["timer-2", null, "timer"]),
            json!(["emit-2-1", null, "emit"]),
            json!(["timer-1", null, "timer"]),
        ]
    );
    let last: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let summary = &last["summary"];
    assert_eq!(
        (&summary["events"], &summary["journaled_by_converge"]),
        (&json!(2), &json!(3)),
        "{summary}"
    );
    assert_eq!(
        summary["simulated"],
        json!({"timers_fired": 2, "events_emitted": 1, "timers_pending": 0, "clock": "2026-11-25T10:00:00Z"})
    );

    // --no-simulate replays the journaled ones instead: the same decisions.
    let out = ws.converge(&["replay", "--from-journal", "--json", "--no-simulate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(decision_lines(&out), live);
    let last: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"]["events"], 5, "{last}");
    assert!(last["summary"].get("simulated").is_none(), "{last}");
}
