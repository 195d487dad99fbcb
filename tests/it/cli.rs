//! `converge check` and `converge explain`, and the bundled example config.

use serde_json::json;

use crate::support::{Workspace, event, repo_root};

#[test]
fn check_lists_every_problem_and_fails() {
    let ws = Workspace::new(
        &[
            (
                "broken",
                "if event.type == \"x\" {\n    notify(\"a\", \"b\"\n}\n",
            ),
            ("typo", "let x = evnt.id;\n"),
        ],
        "[[routes]]\ndecision = \"notify\"\nplugin = \"nowhere\"\n",
    );
    let out = ws.converge(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0].plugin: no plugin `nowhere`"),
        "{stderr}"
    );

    // With the config fixed, the rule errors show, each with file:line:column.
    std::fs::write(
        ws.config(),
        std::fs::read_to_string(ws.config()).unwrap().replace(
            "[[routes]]\ndecision = \"notify\"\nplugin = \"nowhere\"\n",
            "",
        ),
    )
    .unwrap();
    let out = ws.converge(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.rhai:3:1"), "{stderr}");
    assert!(stderr.contains("typo.rhai:1:9"), "{stderr}");

    // A broken rule also stops `converge run`, with the same message.
    let out = ws.converge(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("typo.rhai:1:9"));
}

#[test]
fn the_bundled_config_checks_clean() {
    crate::support::plugin_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .current_dir(repo_root())
        .args(["check", "--config", "config/converge.toml"])
        .env("SLACK_BOT_TOKEN", "xoxb-check")
        .env(
            "PARTNER_WEBHOOK_SECRET",
            "whsec_c2VjcmV0LWZvci10aGUtY2hlY2s=",
        )
        .env("GITHUB_WEBHOOK_SECRET", "a-secret-for-the-check")
        .env("GITHUB_TOKEN", "ghp_check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("plugin(s) loaded: github"), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_the_decisions_of_an_event() {
    let ws = Workspace::new(&[("say", r#"notify("ops", `saw ${event.type}`);"#)], "");
    let daemon = ws.start();
    daemon
        .send_event(&event("x-1", "task.created", "task/T-1", json!({})))
        .await;
    daemon
        .wait_for_trail("x-1", |t| t["processed_at_ms"].is_i64())
        .await;
    let out = ws.converge(&["explain", "x-1", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trails: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        trails[0]["decisions"][0]["decision"]["message"],
        "saw task.created"
    );
    // A decision with no route has no action.
    assert_eq!(trails[0]["decisions"][0]["actions"], json!([]));
    let out = ws.converge(&["explain", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        // Every command and a command's own flags.
        for word in ["explain", "report", "backup", "verify", "--entity"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
}

/// Under systemd (`Type=notify`) the daemon says READY=1 once it listens
/// and STOPPING=1 when it drains on SIGTERM.
#[test]
fn the_daemon_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let ws = Workspace::new(&[], "");
    let socket_path = ws.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let daemon = ws.start_with_env(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    assert!(daemon.terminate().success());
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "STOPPING=1");
}
