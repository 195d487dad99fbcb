//! The log at the default level says what an operator may act on, not what
//! each event did: per-event lines are at DEBUG. Colours only on a terminal
//! (never here: stderr is a pipe); `log.format = "json"` writes one JSON
//! object per line for log shippers.

use serde_json::{Value, json};

use crate::support::{Daemon, Sink, Workspace, actions_settled, event, notify_all_to_sink};

const RULE: &str = r#"notify("ops", `saw ${event.id}`);"#;

async fn send_and_wait(daemon: &Daemon, n: usize) {
    for i in 0..n {
        let id = format!("e-{i}");
        let (status, body) = daemon
            .send_event(&event(
                &id,
                "task.updated",
                "task/T-1",
                json!({"stage": "review"}),
            ))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    daemon
        .wait_for_trail(&format!("e-{}", n - 1), |t| t["processed_at_ms"].is_i64())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_info_the_log_does_not_grow_with_events_and_has_no_colour_codes() {
    let ws = Workspace::new(&[("say", RULE)], "");
    let daemon = ws.start();
    send_and_wait(&daemon, 5).await;
    let after_five = daemon.log().lines().count();
    send_and_wait(&daemon, 50).await;
    let log = daemon.log();
    assert_eq!(
        log.lines().count(),
        after_five,
        "45 more events added lines:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(log.contains("converge is ready"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_with_level_and_message() {
    let ws = Workspace::new(&[("say", RULE)], "\n[log]\nformat = \"json\"\n");
    let daemon = ws.start_with_env(&[("RUST_LOG", "info,converge=debug")]);
    send_and_wait(&daemon, 3).await;
    let log = daemon.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let ready = lines
        .iter()
        .find(|l| l["message"] == "converge is ready")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(ready["level"], "INFO");
    assert!(ready["timestamp"].is_string());
    // At DEBUG the decisions are there, with the event they were made for.
    let decision = lines
        .iter()
        .find(|l| l["message"] == "decision")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(decision["level"], "DEBUG");
    assert_eq!(decision["rule"], "say");
    assert_eq!(decision["span"]["event_id"], "e-0", "{decision}");
}

/// A failed attempt's warning names its action, route and event in its own
/// fields: at `info` the log makes no spans. At `debug` it also shows the
/// action's span, which names the event once however many attempts it saw.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempt_names_its_action_and_event_itself_and_its_span_only_at_debug() {
    for (level, spans) in [("info", false), ("info,converge=debug", true)] {
        let sink = Sink::start().await;
        sink.answer_next(&[reqwest::StatusCode::SERVICE_UNAVAILABLE; 2]);
        let ws = notify_all_to_sink(&sink);
        let daemon = ws.start_with_env(&[("RUST_LOG", level)]);
        let sent = event("e-1", "task.updated", "task/T-1", json!({}));
        let (status, body) = daemon.send_event(&sent).await;
        assert_eq!(status, 202, "{body}");
        let trail = daemon.wait_for_trail("e-1", actions_settled).await;
        let action = &trail["decisions"][0]["actions"][0];
        assert_eq!(action["status"], "done", "{action:#}");
        let route = action["route"].as_str().unwrap();

        let log = daemon.log();
        let retries: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("action failed; will retry"))
            .collect();
        assert_eq!(retries.len(), 2, "{level}: {log}");
        for line in retries {
            for field in [
                format!("action_id={}", action["id"]),
                "plugin=webhook-out".to_string(),
                format!("route={route}"),
                "event_id=e-1".to_string(),
            ] {
                assert!(line.contains(&field), "{level}: {field} in {line}");
            }
            assert_eq!(line.contains(" action{"), spans, "{level}: {line}");
            let in_span = usize::from(spans);
            assert_eq!(line.matches("event_id=\"e-1\"").count(), in_span, "{line}");
            for trace_only in ["plugin.call", "http.request"] {
                assert!(!line.contains(trace_only), "{level}: {line}");
            }
        }
    }
}

#[test]
fn a_bad_log_setting_is_an_error_naming_its_key() {
    let ws = Workspace::new(&[], "\n[log]\nformat = \"xml\"\nlevel = \"loud\"\n");
    let out = ws.converge(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("log.format: `xml` is not one of"),
        "{stderr}"
    );
    assert!(stderr.contains("log.level: `loud`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_database_is_one_line_at_start_and_an_existing_one_none() {
    let ws = Workspace::new(&[("say", RULE)], "");
    let first = ws.start();
    send_and_wait(&first, 1).await;
    let log = first.log();
    assert_eq!(
        log.matches("created the converge database").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("migrated"), "one line per migration:\n{log}");
    assert!(first.terminate().success());

    let second = ws.start();
    send_and_wait(&second, 1).await;
    let log = second.log();
    assert!(log.contains("converge is ready"), "{log}");
    assert!(!log.contains("created the converge database"), "{log}");
    assert!(!log.contains("migrated"), "{log}");
}
