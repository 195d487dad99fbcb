//! Hostile rules in the running daemon: an infinite loop, deep recursion, a
//! string that grows without end and a runtime error each fail their own
//! rule for the event, recorded with it, while the other rules still decide
//! and the daemon keeps serving.

use serde_json::{Value, json};

use crate::support::{Workspace, event};

const RULES: &[(&str, &str)] = &[
    ("a_loops", "loop { }"),
    ("b_recurses", "fn down(n) { down(n + 1) }\ndown(0);"),
    ("c_grows", "let s = \"x\";\nloop { s += s; }"),
    (
        "d_errors",
        "let missing = event.data.nothing_here;\nnotify(\"ops\", missing);",
    ),
    (
        "e_works",
        r#"notify("ops", `${event.type} still decided`);"#,
    ),
];

fn processed(trail: &Value) -> bool {
    !trail["processed_at_ms"].is_null()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_hostile_rule_fails_alone_and_the_others_still_decide() {
    let ws = Workspace::new(RULES, "");
    let daemon = ws.start();
    for id in ["h-1", "h-2"] {
        let (status, body) = daemon
            .send_event(&event(
                id,
                "task.created",
                "task/T-1",
                json!({"title": "brief"}),
            ))
            .await;
        assert_eq!(status, 202, "{body}");
        let trail = daemon.wait_for_trail(id, processed).await;
        let failures: Vec<(String, String)> = trail["rule_failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["rule"].as_str().unwrap().to_string(),
                    f["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let rules: Vec<&str> = failures.iter().map(|(rule, _)| rule.as_str()).collect();
        assert_eq!(
            rules,
            ["a_loops", "b_recurses", "c_grows", "d_errors"],
            "{failures:#?}"
        );
        // Each message names the file, line and column, and what went wrong.
        for ((rule, message), expected) in failures.iter().zip([
            "Too many operations",
            "Stack overflow",
            "too large",
            "nothing_here",
        ]) {
            assert!(message.contains(&format!("{rule}.rhai:")), "{message}");
            assert!(message.contains(expected), "{rule}: {message}");
        }
        let decisions = trail["decisions"].as_array().unwrap();
        assert_eq!(decisions.len(), 1, "{trail}");
        assert_eq!(decisions[0]["decision"]["rule"], "e_works");
        assert_eq!(
            decisions[0]["decision"]["message"],
            "task.created still decided"
        );
    }
    assert_eq!(daemon.metric("converge_rule_failures_total").await, 8.0);
    assert_eq!(daemon.get("/healthz").await, (200, "ok\n".to_string()));
}

/// An event id with a line break in it, or a made-up log line, stays on its
/// own line of the log, escaped: nothing from outside can forge a log line.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_id_cannot_forge_a_log_line() {
    let ws = Workspace::new(&[("e_works", RULES[4].1)], "");
    let daemon = ws.start_with_env(&[("RUST_LOG", "debug")]);
    let forged = "x\n2026-12-01T21:40:00.000000Z ERROR converge::daemon: FORGED LINE";
    let mut forging = event(forged, "task.updated", "task/T-1", json!({}));
    forging["source"] = json!("/t\nFORGED SOURCE");
    let (status, body) = daemon.send_event(&forging).await;
    assert_eq!(status, 202, "{body}");
    daemon.wait_for_trail(&urlencode(forged), processed).await;
    let log = daemon.log();
    assert!(
        log.contains(r"x\n2026-12-01T21:40:00.000000Z ERROR"),
        "{log}"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-12-01T21:40:00.000000Z") && !line.starts_with("FORGED"),
            "a forged line: {line}\n{log}"
        );
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
