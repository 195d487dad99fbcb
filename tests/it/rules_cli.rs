//! `converge rules test` and `converge rules check`: the repository's rule
//! tests pass, a failing test shows a diff and fails the run, and each lint
//! reports with its exact message.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::repo_root;

fn converge(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_converge"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The run time is the one thing that differs between runs.
fn without_time(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once("; finished in ") {
            Some((before, _)) => format!("{before}; finished in [time]"),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_rule_tests_in_the_repository_pass() {
    // The example config names the plugins; loading it needs them built.
    crate::support::plugin_dir();
    let out = converge(
        &repo_root(),
        &["rules", "test", "--config", "config/converge.toml"],
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "required_fields.test.toml",
        "stalled_handoff.test.toml",
        "channel_approval.test.toml",
        "rework_counting.test.toml",
        "low_consistency_pause.test.toml",
        "launch_readiness.test.toml",
        "convergence_gate.test.toml",
    ] {
        assert!(text.contains(&format!("test {file} :: ")), "{text}");
    }
    assert!(text.contains("\ntest result: ok. "), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
}

/// The gate race's rule (benches/gate-race) decides what the race counts:
/// its tests are held to the race's expected decisions.
#[test]
fn the_gate_race_rule_tests_pass() {
    let out = converge(
        &repo_root(),
        &["rules", "test", "benches/gate-race/converge"],
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("test gate.test.toml :: "), "{text}");
    assert!(
        text.contains("\ntest result: ok. 6 passed; 0 failed"),
        "{text}"
    );
}

#[test]
fn a_failing_rule_test_shows_the_diff_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("handoff.rhai"),
        "if event.type == \"task.handoff\" {\n    notify(entity.owner, `${event.subject} is yours`);\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("handoff.test.toml"),
        r#"
[[case]]
name = "the new owner hears of it"
[[case.step]]
event = { type = "task.handoff", subject = "task/JIRA-7", data = { owner = "ana" } }
expect = [{ kind = "notify", to = "ana", message = "task/JIRA-7 is yours" }]

[[case]]
name = "the wrong person hears of it"
now = "2026-11-23T10:00:00Z"
entity = { kind = "task", id = "JIRA-7", owner = "ana" }
[[case.step]]
event = { type = "task.viewed", subject = "task/JIRA-7" }
expect = []
[[case.step]]
advance = "48h"
event = { type = "task.handoff", subject = "task/JIRA-7", data = { owner = "bo" } }
expect = [{ kind = "notify", to = "ana", message = "task/JIRA-7 is yours", rule = "handoff" }]
"#,
    )
    .unwrap();

    let out = converge(dir.path(), &["rules", "test", "."]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        without_time(&stdout(&out)),
        r#"running 2 tests from 1 file
test handoff.test.toml :: the new owner hears of it ... ok
test handoff.test.toml :: the wrong person hears of it ... FAILED

failures:

---- handoff.test.toml :: the wrong person hears of it ----
step 2 (task.handoff at 2026-11-25T10:00:00Z):
  the decisions differ (- expected, + actual):
      [
        {
          "kind": "notify",
          "message": "task/JIRA-7 is yours",
          "rule": "handoff",
    -     "to": "ana"
    +     "to": "bo"
        }
      ]

test result: FAILED. 1 passed; 1 failed; finished in [time]"#
    );
}

#[test]
fn timers_fire_when_a_step_advances_the_clock_and_expects_are_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("review.rhai"),
        r#"//! events: task.*
if event.type == "task.handoff" {
    expect("task.reviewed", "48h", "task.review.overdue");
    schedule("24h", "task.review.nudge", #{ owner: event.data.owner });
} else if event.type == "task.review.nudge" {
    notify(event.data.owner, `${event.subject}: ${event.id} from ${event.data.timer.rule}`);
} else if event.type == "task.review.overdue" {
    escalate("review_owner", `${event.subject} was not reviewed within 48h`, 2);
    emit("task.flagged", #{ reason: "overdue" });
}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("review.test.toml"),
        r#"
[[case]]
name = "an unreviewed task is nudged at 24h and escalated at 48h"
now = "2026-11-23T10:00:00Z"
[[case.step]]
event = { type = "task.handoff", subject = "task/JIRA-7", data = { owner = "bo" } }
[[case.step]]
advance = "2d"
fired = [
    { type = "task.review.nudge", time = "2026-11-24T10:00:00Z", data = { owner = "bo" }, expect = [
        { kind = "notify", to = "bo", message = "task/JIRA-7: timer-2 from review" },
    ] },
    { type = "task.review.overdue", time = "2026-11-25T10:00:00Z", expect = [
        { kind = "escalate", to = "review_owner", reason = "task/JIRA-7 was not reviewed within 48h", level = 2 },
        { kind = "emit", event_type = "task.flagged", data = { reason = "overdue" } },
    ] },
]
emitted = [{ type = "task.flagged", data = { reason = "overdue" }, expect = [] }]

[[case]]
name = "a review in time cancels the escalation"
[[case.step]]
event = { type = "task.handoff", subject = "task/JIRA-7", data = { owner = "bo" } }
[[case.step]]
advance = "30h"
event = { type = "task.reviewed", subject = "task/JIRA-7" }
fired = [{ type = "task.review.nudge" }]
[[case.step]]
advance = "30d"
fired = [{ type = "task.review.overdue" }]
"#,
    )
    .unwrap();

    let out = converge(dir.path(), &["rules", "test", "."]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        without_time(&stdout(&out)),
        r#"running 2 tests from 1 file
test review.test.toml :: an unreviewed task is nudged at 24h and escalated at 48h ... ok
test review.test.toml :: a review in time cancels the escalation ... FAILED

failures:

---- review.test.toml :: a review in time cancels the escalation ----
step 3 (advance 30d to 2026-02-01T06:00:00Z):
  the fired timers differ (- expected, + actual):
    - task.review.overdue

test result: FAILED. 1 passed; 1 failed; finished in [time]"#
    );
}

#[test]
fn a_malformed_test_file_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.rhai"), "notify(\"a\", \"b\");\n").unwrap();
    std::fs::write(
        dir.path().join("x.test.toml"),
        "[[case]]\nname = \"x\"\n[[case.step]]\nevent = { typ = \"t\" }\n",
    )
    .unwrap();
    let out = converge(dir.path(), &["rules", "test", "x.test.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("test x.test.toml ... ERROR"), "{text}");
    assert!(text.contains("unknown field `typ`"), "{text}");
    assert!(text.contains("1 invalid file"), "{text}");
}

/// A config in `dir` listing `files`, with `extra` appended.
fn write_config(dir: &Path, files: &[&str], extra: &str) {
    let files: Vec<String> = files.iter().map(|f| format!("{f:?}")).collect();
    std::fs::write(
        dir.join("converge.toml"),
        format!(
            "[storage]\ndata_dir = \"data\"\n\n[rules]\nfiles = [{}]\n{extra}",
            files.join(", ")
        ),
    )
    .unwrap();
}

#[test]
fn rule_tests_read_stage_roles_by_the_configs_stage_names() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("live.rhai"),
        "if stage_role(event.data.stage) == \"launch\" {\n    notify(\"ops\", `${event.subject} is out`);\n}\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("live.test.toml"),
        r#"
[[case]]
name = "the team's own launch stage"
[[case.step]]
event = { type = "task.updated", subject = "task/T-1", data = { stage = "In Market" } }
expect = [{ kind = "notify", to = "ops", message = "task/T-1 is out" }]

[[case]]
name = "a default name the team's launch role no longer has"
[[case.step]]
event = { type = "task.updated", subject = "task/T-1", data = { stage = "Launched" } }
expect = []
"#,
    )
    .unwrap();
    write_config(
        dir.path(),
        &["rules/live.rhai"],
        "\n[report.stages]\nlaunch = [\"In Market\"]\n",
    );

    let out = converge(dir.path(), &["rules", "test", "--config", "converge.toml"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("test result: ok. 2 passed"));
    // Without the config, the default names: both cases fail.
    let out = converge(dir.path(), &["rules", "test", "rules/live.test.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("test result: FAILED. 0 passed; 2 failed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn rules_check_reports_unrouted_decisions_and_unused_or_doubled_files() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("late.rhai"),
        "// escalate(\"x\") in a comment is not a decision\nif entity != () {\n    set_field(\"late\", true);\n    escalate(\"ops\", \"late\");\n}\n",
    )
    .unwrap();
    std::fs::write(rules.join("old.rhai"), "notify(\"a\", \"b\");\n").unwrap();
    write_config(dir.path(), &["rules/late.rhai", "rules/late.rhai"], "");

    let out = converge(dir.path(), &["rules", "check", "--config", "converge.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        r#"rules/late.rhai:4:5: warning: decision `escalate` is never routed to an action
  hint: add a [[routes]] entry with decision = "escalate" to converge.toml; until then the decision is only recorded
rules/late.rhai:1:1: error: rule file is listed twice in rules.files (rules.files[0] and rules.files[1])
  hint: rule names must be unique; remove one entry
rules/old.rhai:1:1: warning: unused rule: rules.files does not list this file
  hint: add it to rules.files in converge.toml to run it, or delete it
converge.toml: 1 of 2 rule(s) compiled, 1 error(s), 2 warning(s)
"#
    );
}

#[test]
fn rules_check_warns_about_header_events_no_known_type_matches() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    // Known: task.updated (compared), asset.flagged (emitted), send.requested
    // (in a rule test), lead.created (config), gate.override (converge's own).
    std::fs::write(
        rules.join("watch.rhai"),
        r#"//! description: Watches.
//! events: task.updatd, asset.*, send.requested,  campaign.*.closed
if event.type == "task.updated" && entity != () {
    emit("asset.flagged");
}
"#,
    )
    .unwrap();
    std::fs::write(
        rules.join("watch.test.toml"),
        r#"
[[case]]
name = "a send request does nothing"
[[case.step]]
event = { type = "send.requested", subject = "campaign/c-1" }
expect = []
"#,
    )
    .unwrap();
    std::fs::write(
        rules.join("leads.rhai"),
        "//! events: lead.*, gate.override, *\nlet x = 1;\n",
    )
    .unwrap();
    write_config(
        dir.path(),
        &["rules/watch.rhai", "rules/leads.rhai"],
        "event_types = [\"lead.created\"]\n",
    );

    let out = converge(dir.path(), &["rules", "check", "--config", "converge.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        r#"rules/watch.rhai:2:13: warning: `events` pattern `task.updatd` matches no known event type
  hint: did you mean `task.updated`? If not, and events of this type come from outside, add it to [rules] event_types in converge.toml
rules/watch.rhai:2:52: warning: `events` pattern `campaign.*.closed` matches no known event type
  hint: no rule compares event.type with it, emits, schedules or expects it, and no rule test sends it; if events of this type come from outside, add it to [rules] event_types in converge.toml
converge.toml: 2 of 2 rule(s) compiled, 0 error(s), 2 warning(s)
"#
    );

    let invalid = tempfile::tempdir().unwrap();
    std::fs::write(invalid.path().join("x.rhai"), "let x = 1;\n").unwrap();
    write_config(invalid.path(), &["x.rhai"], "event_types = [\"\"]\n");
    let out = converge(
        invalid.path(),
        &["rules", "check", "--config", "converge.toml"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "rules.event_types[0]: must be an event type, not empty and without spaces, got \"\""
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rules_check_warns_when_one_rule_holds_a_channel_another_releases_on_the_same_event() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    for (file, source) in [
        (
            "a_release.rhai",
            "//! events: send.requested\nrelease_send(\"email\", \"rule A: ok\");\n",
        ),
        (
            "b_hold.rhai",
            "//! events: send.requested\nhold_send(\"email\", \"rule B: not ok\");\n",
        ),
        (
            "c_later.rhai",
            "//! events: legal.approved\nrelease_send(\"email\", \"approved later\");\n",
        ),
    ] {
        std::fs::write(rules.join(file), source).unwrap();
    }
    write_config(
        dir.path(),
        &[
            "rules/a_release.rhai",
            "rules/b_hold.rhai",
            "rules/c_later.rhai",
        ],
        "event_types = [\"send.requested\", \"legal.approved\"]\n",
    );

    let out = converge(dir.path(), &["rules", "check", "--config", "converge.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // c_later releases `email` too, on another event: no conflict.
    assert_eq!(
        stdout(&out),
        r#"rules/b_hold.rhai:2:1: warning: on `send.requested`, `b_hold` holds `email` and `a_release` releases it: the hold wins on that event (whatever the rule order), so `a_release` releases nothing there and the send stays held until a later release or an override
  hint: `a_release` releases it at rules/a_release.rhai:2:1; if `a_release` means to send once `b_hold`'s condition clears, release on the event that clears it, or let one rule decide whether `email` is held on `send.requested`
converge.toml: 3 of 3 rule(s) compiled, 0 error(s), 1 warning(s)
"#
    );
}

#[test]
fn rules_check_reports_every_compile_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.rhai"),
        "if true {\n    notify(\"a\", \"b\"\n}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("typo.rhai"), "let x = evnt.id;\n").unwrap();
    write_config(dir.path(), &["broken.rhai", "typo.rhai"], "");

    let out = converge(dir.path(), &["rules", "check", "--config", "converge.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("broken.rhai:3:1: error: "), "{text}");
    assert!(
        text.contains("typo.rhai:1:9: error: Undefined variable: evnt"),
        "{text}"
    );
    // The decision in broken.rhai is not linted until the rule compiles.
    assert!(
        text.ends_with("converge.toml: 0 of 2 rule(s) compiled, 2 error(s), 0 warning(s)\n"),
        "{text}"
    );
}

#[test]
fn the_bundled_rules_compile_without_errors_or_warnings() {
    crate::support::plugin_dir();
    let out = converge(
        &repo_root(),
        &["rules", "check", "--config", "config/converge.toml"],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with(", 0 error(s), 0 warning(s)\n"), "{text}");
}

/// `converge rules try`: the config's rules and routes on an event file,
/// each action's plugin called with its HTTP requests shown and answered by
/// the dry run, not sent: the receiver gets nothing, the credential shows
/// by name only (its variable unset here), and the JSON output has the
/// same requests.
#[tokio::test(flavor = "multi_thread")]
async fn rules_try_shows_the_requests_each_action_would_make_and_sends_none() {
    let sink = crate::support::Sink::start().await;
    let ws = crate::support::Workspace::new(
        &[(
            "briefs",
            r#"
if event.type == "brief.submitted" && !("owner" in event.data) {
    escalate("mops-leads", `brief ${event.subject} has no owner`);
    notify("ops", "a brief without an owner");
    notify("finance", "a budget to check");
    set_field("triaged", true);
    schedule("2d", "brief.still_unowned");
}
if event.type == "brief.still_unowned" {
    escalate("mops-leads", `brief ${event.subject} still has no owner`);
}
"#,
        )],
        &format!(
            r##"{plugins}
[[routes]]
decision = "escalate"
plugin = "slack"
config = {{ channel = "#mops-escalations", base_url = "{slack}" }}

[[routes]]
decision = "notify"
to = "ops"
plugin = "webhook-out"
carry_entity = false
config = {{ url = "{hook}", select = ["/decision/kind", "/decision/to", "/event/id"] }}
"##,
            plugins = crate::support::plugins_toml(&sink),
            slack = sink.url("/slack"),
            hook = sink.url("/hook"),
        ),
    );
    let events = ws.dir.path().join("brief.json");
    std::fs::write(
        &events,
        r#"{"specversion": "1.0", "id": "b-1", "source": "/forms", "type": "brief.submitted",
            "subject": "campaign/spring", "time": "2026-03-02T09:00:00Z", "data": {"title": "Spring"}}"#,
    )
    .unwrap();
    // What Slack answers when the bot is not in the channel.
    let refusal = ws.dir.path().join("not_in_channel.json");
    std::fs::write(&refusal, r#"{"ok": false, "error": "not_in_channel"}"#).unwrap();
    let answer = format!("slack={}", refusal.display());
    let config = ws.config();
    let run = move |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_converge"))
            .args(["rules", "try", "--advance", "3d", "--config"])
            .arg(&config)
            .args(extra)
            .arg(&events)
            .env_remove("CONVERGE_TEST_SLACK_TOKEN")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(move || {
        (run(&[]), run(&["--json"]), run(&["--answer", &answer]))
    })
    .await
    .unwrap();
    let (text, json, answered) = out;
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let shown = stdout(&text);
    let slack = sink.url("/slack/chat.postMessage");
    for expected in [
        "event b-1 brief.submitted (campaign/spring)",
        "  briefs: {\"kind\":\"escalate\",\"to\":\"mops-leads\",\"reason\":\"brief campaign/spring has no owner\",\"level\":1}",
        "    -> route",
        &format!("       POST {slack}"),
        "         authorization: <credential bot_token>",
        "  briefs: {\"kind\":\"set_field\",\"field\":\"triaged\",\"value\":true}\n",
        // The timer the rule set, fired by --advance: its escalation too.
        "event timer-1 brief.still_unowned (campaign/spring), a timer fired at 2026-03-04T09:00:00Z\n  briefs: {\"kind\":\"escalate\",\"to\":\"mops-leads\",\"reason\":\"brief campaign/spring still has no owner\",\"level\":1}\n    -> route",
        &format!("       POST {}", sink.url("/hook")),
        "         | {\"decision\":{\"kind\":\"notify\",\"to\":\"ops\"},\"event\":{\"id\":\"b-1\"}}",
        "  briefs: {\"kind\":\"notify\",\"to\":\"finance\",\"message\":\"a budget to check\"}\n    no route acts on it: nobody hears of it\n",
        "1 event(s), 1 timer(s) fired, 6 decision(s), 3 action(s), 3 request(s) shown; nothing was sent",
    ] {
        assert!(shown.contains(expected), "no `{expected}` in:\n{shown}");
    }
    assert!(!shown.contains("unset-in-this-environment"), "{shown}");
    // What the command has to say is on stdout; its log keeps to warnings.
    let said = String::from_utf8_lossy(&text.stderr);
    assert!(!said.contains("INFO"), "{said}");
    assert!(
        sink.received().is_empty(),
        "the dry run sent {:?}",
        sink.received()
    );

    assert!(json.status.success());
    let lines: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[2]["event"], "timer-1");
    assert_eq!(lines[0]["plugin"], "slack");
    assert_eq!(lines[0]["decision"]["kind"], "escalate");
    assert_eq!(lines[0]["requests"][0]["method"], "POST");
    assert_eq!(lines[0]["requests"][0]["url"], slack);
    let body: serde_json::Value =
        serde_json::from_str(lines[0]["requests"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["channel"], "#mops-escalations");
    assert_eq!(lines[1]["plugin"], "webhook-out");
    assert_eq!(lines[1]["outcome"]["ok"], true);

    // Slack's refusal given as its answer: the plugin's verdict on it.
    assert!(answered.status.success());
    let shown = stdout(&answered);
    assert!(
        shown.contains("not_in_channel.json by the dry run) the plugin failed: permanent failure: slack: not_in_channel (channel #mops-escalations)"),
        "{shown}"
    );
    assert!(sink.received().is_empty());
}

/// The bundled config's escalation ladder, tried from one handoff: every
/// rung decides on the clock `--advance` moves (the try's clock keeps the
/// journal's whole milliseconds, which the ladder's rungs compare).
#[test]
fn rules_try_climbs_the_bundled_handoff_ladder_rung_by_rung() {
    crate::support::plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("handoff.json");
    std::fs::write(
        &events,
        r#"{"specversion": "1.0", "id": "evt-1", "source": "/jira", "type": "task.handoff",
            "subject": "task/JIRA-7", "data": {"owner": "bo", "brief": "Q4 launch", "deadline": "2026-12-20"}}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_converge"))
        .current_dir(repo_root())
        .args([
            "rules",
            "try",
            "--advance",
            "3d",
            "--config",
            "config/converge.toml",
        ])
        .arg(&events)
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rung in [
        r#"{"kind":"notify","to":"bo","message":"task/JIRA-7 has waited 24h for you since it was handed to you (stage: no stage): pick it up or hand it back"}"#,
        r#"{"kind":"escalate","to":"review_owner","reason":"task/JIRA-7 has not moved for 48h since it was handed to bo (stage: no stage)","level":2}"#,
        r#"{"kind":"escalate","to":"business_owner","reason":"task/JIRA-7 has not moved for 72h since it was handed to bo (stage: no stage)","level":3}"#,
    ] {
        assert!(
            text.contains(&format!("  stalled_handoff: {rung}\n")),
            "{text}"
        );
    }
    assert!(
        text.ends_with(
            "1 event(s), 3 timer(s) fired, 10 decision(s), 4 action(s), 4 request(s) shown; nothing was sent\n"
        ),
        "{text}"
    );
}
