//! Hot reload, `/v1/status` and `converge status`, and shadow rules, on the
//! real binary: rule files are edited while the daemon runs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, Sink, Workspace, actions_settled, event, plugins_toml};

fn version(tag: &str) -> String {
    format!("if event.type == \"task.updated\" {{ notify(\"ops\", \"{tag}\"); }}\n")
}

async fn status(daemon: &Daemon) -> Value {
    let (code, body) = daemon.get("/v1/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `/v1/status` until `done` holds.
async fn wait_for_status(daemon: &Daemon, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status(daemon).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the status never got there; last: {status:#}\nlog:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the daemon's log (read by another thread) has `text`.
async fn wait_for_log(daemon: &Daemon, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "the log never showed {text}:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a `task.updated` and returns its one decision.
async fn decide(daemon: &Daemon, id: &str) -> Value {
    let (code, body) = daemon
        .send_event(&event(id, "task.updated", "task/T-1", json!({})))
        .await;
    assert_eq!(code, 202, "{body}");
    let trail = daemon
        .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
        .await;
    assert_eq!(trail["decisions"].as_array().unwrap().len(), 1, "{trail}");
    trail["decisions"][0]["decision"].clone()
}

fn rule_hash(status: &Value) -> String {
    status["rules"][0]["hash"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_rule_decides_the_next_event_and_a_broken_edit_leaves_the_old_one_running() {
    let ws = Workspace::new(&[("greet", &version("v1"))], "");
    let file = ws.dir.path().join("greet.rhai");
    let daemon = ws.start();

    let first = status(&daemon).await;
    assert_eq!(first["rules"][0]["name"], "greet");
    assert_eq!(first["rules"][0]["shadow"], false);
    assert!(first["last_reload"].is_null() && first["last_reload_error"].is_null());
    let v1 = rule_hash(&first);
    let decision = decide(&daemon, "e-1").await;
    assert_eq!(
        (decision["rule_hash"].as_str(), decision["message"].as_str()),
        (Some(v1.as_str()), Some("v1"))
    );

    // An edit takes effect for the next event.
    std::fs::write(&file, version("v2")).unwrap();
    let second = wait_for_status(&daemon, |s| rule_hash(s) != v1).await;
    assert_eq!(second["last_reload"]["outcome"], "ok");
    let v2 = rule_hash(&second);
    let decision = decide(&daemon, "e-2").await;
    assert_eq!(
        (decision["rule_hash"].as_str(), decision["message"].as_str()),
        (Some(v2.as_str()), Some("v2"))
    );

    // A broken edit is refused: v2 keeps deciding, the error is visible.
    std::fs::write(
        &file,
        "if event.type == \"task.updated\" {\n    notify(\"ops\", \"v3\";\n}\n",
    )
    .unwrap();
    let broken = wait_for_status(&daemon, |s| !s["last_reload_error"].is_null()).await;
    assert_eq!(broken["last_reload"]["outcome"], "failed");
    assert_eq!(rule_hash(&broken), v2);
    let error = broken["last_reload_error"]["errors"][0].as_str().unwrap();
    let location = format!("{}:2:", file.display());
    assert!(
        error.starts_with(&location),
        "{error} should start with {location}"
    );
    wait_for_log(&daemon, &location).await;
    let decision = decide(&daemon, "e-3").await;
    assert_eq!(
        (decision["rule_hash"].as_str(), decision["message"].as_str()),
        (Some(v2.as_str()), Some("v2"))
    );

    // The fix reloads and clears the error.
    std::fs::write(&file, version("v4")).unwrap();
    let fixed = wait_for_status(&daemon, |s| s["last_reload_error"].is_null()).await;
    assert_eq!(fixed["last_reload"]["outcome"], "ok");
    let v4 = rule_hash(&fixed);
    assert_ne!(v4, v2);
    let decision = decide(&daemon, "e-4").await;
    assert_eq!(
        (decision["rule_hash"].as_str(), decision["message"].as_str()),
        (Some(v4.as_str()), Some("v4"))
    );

    assert_eq!(
        daemon
            .metric("converge_rule_reloads_total{outcome=\"Failed\"}")
            .await,
        1.0
    );
    assert!(
        daemon
            .metric("converge_rule_reloads_total{outcome=\"Ok\"}")
            .await
            >= 2.0
    );
}

/// Reminds a day after each `task.updated`; `tag` makes each version's hash.
pub fn reminding(tag: &str) -> String {
    format!(
        "// {tag}\nif event.type == \"task.updated\" {{ schedule(\"24h\", \"task.reminder\"); }}\n"
    )
}

/// The waiting-timers cell of `rule`'s row on Rules & health.
fn waiting_cell(page: &str, rule: &str) -> String {
    let row = page
        .split("<tr>")
        .find(|row| row.contains(&format!("<b>{rule}</b>")))
        .unwrap_or_else(|| panic!("no row for {rule}:\n{page}"));
    let cell = row.split(r#"<td class="n timers">"#).nth(1).unwrap();
    cell[..cell.find("</td>").unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_and_health_counts_the_timers_waiting_on_each_version_and_on_rules_gone() {
    let ws = Workspace::new(
        &[("remind", &reminding("v1")), ("greet", &version("g1"))],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n",
    );
    let file = ws.dir.path().join("remind.rhai");
    let daemon = ws.start();
    let update =
        |id: &str, task: &str| event(id, "task.updated", &format!("task/{task}"), json!({}));
    for (id, task) in [("u-1", "T-1"), ("u-2", "T-2")] {
        assert_eq!(daemon.send_event(&update(id, task)).await.0, 202);
        daemon
            .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
            .await;
    }
    let (_, page) = daemon.get("/ui/health").await;
    assert_eq!(waiting_cell(&page, "remind"), "2");
    assert_eq!(waiting_cell(&page, "greet"), "0");

    // Edited: the two reminders waiting are the earlier version's.
    let v1 = status(&daemon).await["rules"][0]["hash"].clone();
    std::fs::write(&file, reminding("v2")).unwrap();
    wait_for_status(&daemon, |s| s["rules"][0]["hash"] != v1).await;
    assert_eq!(daemon.send_event(&update("u-3", "T-3")).await.0, 202);
    daemon
        .wait_for_trail("u-3", |t| !t["processed_at_ms"].is_null())
        .await;
    let (_, page) = daemon.get("/ui/health").await;
    assert_eq!(
        waiting_cell(&page, "remind"),
        r#"3<br><small class="earlier">2 from an earlier version</small>"#
    );
    assert!(!page.contains("timers-of-rules-gone"), "{page}");
    drop(daemon);

    // Removed from the config: its reminders still wait, and say whose.
    ws.edit_config(&format!("{:?}, ", file.display().to_string()), "");
    let daemon = ws.start();
    let (_, page) = daemon.get("/ui/health").await;
    assert!(
        page.contains(
            "Timers still waiting from rules no longer loaded: <b>remind</b> (3). \
             They fire as planned, and the rules loaded then decide their events."
        ),
        "{page}"
    );
    assert_eq!(waiting_cell(&page, "greet"), "0");
}

/// `converge timers cancel`, run as a person would, with the admin token.
fn cancel_timers(ws: &Workspace, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["timers", "cancel"])
        .args(args)
        .arg("--config")
        .arg(ws.config())
        .env("CONVERGE_ADMIN_TOKEN", crate::support::ADMIN_TOKEN)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each timer of an entity, as `/v1/entities/.../timers` lists them:
/// (status, who cancelled it, why).
async fn timer_states(daemon: &Daemon, task: &str) -> Vec<(String, Value, Value)> {
    let (code, body) = daemon
        .get(&format!("/v1/entities/task/{task}/timers"))
        .await;
    assert_eq!(code, 200, "{body}");
    let timers: Value = serde_json::from_str(&body).unwrap();
    timers["timers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["status"].as_str().unwrap().to_string(),
                t["cancelled_by"].clone(),
                t["cancel_reason"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timers_an_earlier_version_made_are_cancelled_with_who_and_why_and_never_fire() {
    let ws = Workspace::new(
        &[("remind", &reminding("v1"))],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n",
    );
    ws.listen_on_free_port();
    let daemon = ws.start();
    let update =
        |id: &str, task: &str| event(id, "task.updated", &format!("task/{task}"), json!({}));
    let send = |id: &'static str, task: &'static str| {
        let daemon = &daemon;
        async move {
            assert_eq!(daemon.send_event(&update(id, task)).await.0, 202);
            daemon
                .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
                .await;
        }
    };
    send("u-1", "T-1").await;
    send("u-2", "T-2").await;
    let v1 = status(&daemon).await["rules"][0]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(ws.dir.path().join("remind.rhai"), reminding("v2")).unwrap();
    wait_for_status(&daemon, |s| s["rules"][0]["hash"] != v1.as_str()).await;
    send("u-3", "T-3").await;

    // `converge status` says what waits on the earlier version, and how to
    // cancel it.
    let seen = status(&daemon).await;
    assert_eq!(
        seen["stale_timers"],
        json!([{"rule": "remind", "version": v1, "pending": 2, "rule_gone": false}])
    );
    let out = ws.converge(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("  remind  {v1}  2 pending, an earlier version\n")),
        "{text}"
    );
    assert!(
        text.contains("cancel: converge timers cancel --rule RULE"),
        "{text}"
    );

    // `converge timers list` shows each pending timer, soonest first,
    // with the version that made it; `--version` narrows to one.
    let v2 = status(&daemon).await["rules"][0]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ws.converge(&["timers", "list", "--rule", "remind"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 5, "{listed}");
    assert!(lines[0].starts_with("DUE "), "{listed}");
    for (line, task, version) in [(1, "T-1", &v1), (2, "T-2", &v1), (3, "T-3", &v2)] {
        assert!(
            lines[line].starts_with("2026-11-24T09:00:00.000Z  task/")
                && lines[line].contains(&format!("task/{task}  task.reminder  remind {version}")),
            "{listed}"
        );
    }
    assert_eq!(lines[4], "3 pending timer(s)");
    let out = ws.converge(&[
        "timers",
        "list",
        "--rule",
        "remind",
        "--version",
        &v1,
        "--json",
    ]);
    let only: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(only["timers"].as_array().unwrap().len(), 2, "{only}");
    assert_eq!(only["more"], false);
    let out = ws.converge(&["timers", "list", "--limit", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .ends_with("1 pending timer(s) listed; more match (--limit, --rule, --within)\n")
    );
    // Due within an hour of the daemon's clock: none yet.
    let out = ws.converge(&["timers", "list", "--within", "1h"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no pending timer\n");
    let (code, _, answer) = daemon
        .request(reqwest::Method::GET, "/v1/timers?within=soon", &[], "")
        .await;
    assert_eq!(code, 400, "{answer}");

    // What a person gets wrong is refused, and nothing is cancelled.
    let (ok, _, err) = cancel_timers(
        &ws,
        &[
            "--rule", "remind", "--entity", "T-1", "--by", "ana", "--reason", "x",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("`entity` is a key like `task/JIRA-7`"),
        "{err}"
    );

    let reason = "the reminder moved to the new ladder";
    let (ok, out, err) = cancel_timers(
        &ws,
        &[
            "--rule",
            "remind",
            "--version",
            &v1,
            "--by",
            "ana",
            "--reason",
            reason,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("cancelled 2 pending timer(s) of rule remind version {v1}; none of them will fire")
    );
    let cancelled = ("cancelled".to_string(), json!("ana"), json!(reason));
    assert_eq!(timer_states(&daemon, "T-1").await, vec![cancelled.clone()]);
    assert_eq!(timer_states(&daemon, "T-2").await, vec![cancelled]);
    let (_, page) = daemon.get("/ui/health").await;
    assert_eq!(waiting_cell(&page, "remind"), "1");
    assert_eq!(status(&daemon).await["stale_timers"], json!([]));
    let out = ws.converge(&["status"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("no longer loaded"));
    let (_, page) = daemon.get("/ui/records/task/T-1").await;
    assert!(
        page.contains(&format!("<small>by ana: {reason}</small>")),
        "{page}"
    );
    let out = ws.converge(&["explain", "--entity", "task/T-1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": cancelled at "), "{text}");
    assert!(text.contains(&format!(" by ana: {reason}")), "{text}");

    // A day later only the new version's reminder fires.
    daemon.advance_clock("25h").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while timer_states(&daemon, "T-3").await[0].0 != "fired" {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(timer_states(&daemon, "T-1").await[0].0, "cancelled");
    // Again: nothing is left to cancel.
    let (ok, out, _) = cancel_timers(
        &ws,
        &["--rule", "remind", "--by", "ana", "--reason", reason],
    );
    assert!(ok);
    assert_eq!(
        out.trim(),
        "no pending timer of rule remind: nothing cancelled"
    );
    assert_eq!(
        daemon
            .metric("converge_timers_cancelled_by_people_total")
            .await,
        2.0
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_when_watching_is_off() {
    let ws = Workspace::new(&[("greet", &version("v1"))], "");
    ws.edit_config("[rules]\n", "[rules]\nwatch = false\n");
    let daemon = ws.start();
    let v1 = rule_hash(&status(&daemon).await);
    std::fs::write(ws.dir.path().join("greet.rhai"), version("v2")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rule_hash(&status(&daemon).await), v1, "not watched");

    let pid = daemon.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    wait_for_status(&daemon, |s| rule_hash(s) != v1).await;
    assert_eq!(decide(&daemon, "e-1").await["message"], "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_rules_decisions_are_recorded_but_never_acted_on() {
    let sink = Sink::start().await;
    let live = r#"
if event.type == "task.created" { notify("ops", "live"); }
if event.type == "task.checked" { notify("ops", `stage=${entity.stage}`); }
"#;
    let trial = r#"
if event.type == "task.created" {
    notify("ops", "shadow");
    set_stage("trialled");
    schedule("1h", "task.later");
}
"#;
    let routes = format!(
        "[[routes]]\ndecision = \"notify\"\nplugin = \"webhook-out\"\nconfig = {{ url = {:?} }}\n",
        sink.url("/hook")
    );
    let ws = Workspace::new(
        &[("announce", live), ("trial", trial)],
        &format!("{}{routes}", plugins_toml(&sink)),
    );
    let trial_path = ws.dir.path().join("trial.rhai").display().to_string();
    ws.edit_config(
        "[rules]\n",
        &format!("[rules]\nshadow = [{trial_path:?}]\n"),
    );
    let daemon = ws.start();

    let rules = status(&daemon).await["rules"].clone();
    let shadow: Vec<_> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["shadow"].as_bool().unwrap()))
        .collect();
    assert_eq!(shadow, [("announce", false), ("trial", true)]);

    let created = event("c-1", "task.created", "task/T-1", json!({}));
    assert_eq!(daemon.send_event(&created).await.0, 202);
    let trail = daemon
        .wait_for_trail("c-1", |t| {
            t["decisions"].as_array().is_some_and(|d| d.len() == 4) && actions_settled(t)
        })
        .await;
    let decisions = trail["decisions"].as_array().unwrap();
    let summary: Vec<_> = decisions
        .iter()
        .map(|d| {
            (
                d["decision"]["rule"].as_str().unwrap(),
                d["decision"]["kind"].as_str().unwrap(),
                d["shadow"] == true,
                d["actions"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("announce", "notify", false, 1),
            ("trial", "notify", true, 0),
            ("trial", "set_stage", true, 0),
            ("trial", "schedule", true, 0),
        ]
    );

    // No timer, no state change: the next event sees the stage untouched.
    assert!(daemon.timers("task/T-1").await.is_empty());
    let checked = event("k-1", "task.checked", "task/T-1", json!({}));
    assert_eq!(daemon.send_event(&checked).await.0, 202);
    let trail = daemon.wait_for_trail("k-1", actions_settled).await;
    let message = trail["decisions"][0]["decision"]["message"]
        .as_str()
        .unwrap();
    assert!(!message.contains("trialled"), "{message}");

    // Only the live decisions reached the sink.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = sink.received();
    let messages: Vec<_> = received
        .iter()
        .map(|r| {
            r.body["decision"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages.iter().all(|m| !m.contains("shadow")),
        "{messages:?}"
    );
    assert_eq!(
        daemon
            .metric("converge_shadow_decisions_total{kind=\"notify\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn converge_status_reads_the_daemon_at_the_configured_address() {
    let ws = Workspace::new(&[("greet", &version("v1"))], "");
    let output = ws.converge(&["status"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fixed port"), "{stderr}");

    let port = crate::support::free_port().port();
    ws.edit_config("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let daemon = ws.start();
    let hash = rule_hash(&status(&daemon).await);
    let output = ws.converge(&["status"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("greet") && stdout.contains(&hash),
        "{stdout}"
    );
    assert!(stdout.contains("last reload: none since start"), "{stdout}");

    let output = ws.converge(&["status", "--json"]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["rules"][0]["hash"], hash.as_str());
    drop(daemon);
}
