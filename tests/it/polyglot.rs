//! Plugins in Python and JavaScript (`plugins/examples/python-notify`,
//! `plugins/examples/js-notify`), built with their own toolchains and run
//! through the daemon: they act, map HTTP statuses to the right retry
//! policy, and a burst against a Python plugin, whose instances take many
//! core instances from the pool, spends no attempt on a full pool.
//!
//! The toolchains are componentize-py on `PATH` and `npm ci` run in
//! `plugins/examples/js-notify`; `.ci/run` installs both. Without them the
//! tests say so and pass, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::{Sink, Workspace, actions_settled, event, is_action_key, repo_root};

fn examples() -> PathBuf {
    repo_root().join("plugins/examples")
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `None` (with a note) when the toolchain is missing outside CI; a failure
/// under `CI=true`, where `.ci/run` installs it.
fn missing(toolchain: &str, hint: &str) -> Option<PathBuf> {
    let message = format!("{toolchain} is not installed ({hint})");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}; .ci/run installs it");
    }
    eprintln!("skipped: {message}");
    None
}

/// Runs an example's `build.sh` into the test's output directory, unless
/// a build of the same sources is there: the toolchains do not build the
/// same bytes twice, and a new component means compiling it again (long
/// for a 10-20 MB component in a debug build of the daemon).
fn build(example: &str, sources: &[&str]) -> PathBuf {
    let dir = examples().join(example);
    let mut hasher = Sha256::new();
    for file in sources {
        hasher.update(std::fs::read(dir.join(file)).unwrap());
    }
    hasher.update(std::fs::read(repo_root().join("plugins/wit/converge-plugin.wit")).unwrap());
    let hash = hex::encode(&hasher.finalize()[..8]);
    let out = out_dir().join(format!("{example}-{hash}.wasm"));
    if out.exists() {
        return out;
    }
    let started = Instant::now();
    let partial = out.with_extension("wasm.partial");
    let output = Command::new(dir.join("build.sh"))
        .arg(&partial)
        .output()
        .unwrap_or_else(|e| panic!("running {example}/build.sh: {e}"));
    assert!(
        output.status.success(),
        "{example}/build.sh failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &out).unwrap();
    let size = std::fs::metadata(&out).unwrap().len();
    eprintln!(
        "{example}: built {} ({size} bytes) in {:?}",
        out.display(),
        started.elapsed()
    );
    out
}

/// Compiles the plugins of `ws` into the shared plugin cache with
/// `converge check`, which has no start timeout, and says how long it took.
fn precompile(ws: &Workspace) {
    // One at a time: the tests share the Python component, which the first
    // compiles and the next finds in the cache.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let output = ws.converge(&["check"]);
    assert!(
        output.status.success(),
        "converge check failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "converge check (plugins loaded and compiled or cached) took {:?}",
        started.elapsed()
    );
}

/// The Python example built with componentize-py, if it is installed.
fn python_notify() -> Option<PathBuf> {
    static WASM: OnceLock<Option<PathBuf>> = OnceLock::new();
    WASM.get_or_init(|| {
        let found = Command::new("componentize-py")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return missing(
                "componentize-py",
                "pip install -r plugins/examples/python-notify/requirements.txt",
            );
        }
        Some(build(
            "python-notify",
            &["app.py", "build.sh", "requirements.txt"],
        ))
    })
    .clone()
}

/// The JavaScript example built with componentize-js, if `npm ci` ran.
fn js_notify() -> Option<PathBuf> {
    static WASM: OnceLock<Option<PathBuf>> = OnceLock::new();
    WASM.get_or_init(|| {
        let tool = examples().join("js-notify/node_modules/.bin/componentize-js");
        let node = Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !node || !tool.exists() {
            return missing(
                "componentize-js",
                "node, and npm ci in plugins/examples/js-notify",
            );
        }
        Some(build(
            "js-notify",
            &["app.js", "build.sh", "package-lock.json"],
        ))
    })
    .clone()
}

/// A workspace whose rule notifies `ops` of every event through `plugin`
/// (the component at `wasm`), which posts to the sink's `/notify`.
fn notify_through(plugin: &str, wasm: &Path, sink: &Sink, extra: &str) -> Workspace {
    Workspace::new(
        &[("notify_all", r#"notify("ops", `event ${event.id}`);"#)],
        &format!(
            r#"
[plugins.{plugin}]
component = {wasm:?}
http_hosts = ["{host}"]
allow_plain_http = true

[[routes]]
decision = "notify"
plugin = "{plugin}"
config = {{ url = "{url}" }}
{extra}"#,
            wasm = wasm.display().to_string(),
            host = sink.host(),
            url = sink.url("/notify"),
        ),
    )
}

/// The example acts through the daemon: its message reaches the sink with
/// the action's idempotency key, its stdout reaches the log at info, a 503
/// is retried and a 401 is not.
async fn notifies_through_the_daemon(plugin: &str, wasm: &Path) {
    let sink = Sink::start().await;
    let ws = notify_through(plugin, wasm, &sink, "");
    precompile(&ws);
    let daemon = ws.start();

    assert_eq!(
        daemon
            .send_event(&event("p-1", "task.updated", "task/T-1", json!({})))
            .await
            .0,
        202
    );
    let trail = daemon.wait_for_trail("p-1", actions_settled).await;
    let action = &trail["decisions"][0]["actions"][0];
    assert_eq!(action["status"], "done", "{trail:#}\n{}", daemon.log());
    let received = sink.wait_for(1).await;
    assert_eq!(received[0].path, "/notify");
    assert_eq!(received[0].body["text"], "event p-1", "{:?}", received[0]);
    assert_eq!(received[0].body["to"], "ops");
    assert_eq!(received[0].body["plugin"], plugin);
    let key = received[0].headers["idempotency-key"].to_str().unwrap();
    assert!(is_action_key(key, action["id"].as_i64().unwrap()), "{key}");
    assert_eq!(received[0].body["action_id"], key);
    // What the plugin printed is in the log at info, with its name.
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("plugin output")
            && l.contains(plugin)
            && l.contains("notified")),
        "{log}"
    );

    // A 503 is transient: retried, then done.
    sink.answer_next(&[StatusCode::SERVICE_UNAVAILABLE]);
    daemon
        .send_event(&event("p-2", "task.updated", "task/T-2", json!({})))
        .await;
    let trail = daemon.wait_for_trail("p-2", actions_settled).await;
    assert_eq!(
        trail["decisions"][0]["actions"][0]["status"], "done",
        "{trail:#}"
    );
    let retried = format!("converge_actions_total{{plugin=\"{plugin}\",outcome=\"Retried\"}}");
    assert_eq!(daemon.metric(&retried).await, 1.0);

    // A 401 is unauthorized: a dead letter at once, saying why.
    sink.answer_next(&[StatusCode::UNAUTHORIZED]);
    daemon
        .send_event(&event("p-3", "task.updated", "task/T-3", json!({})))
        .await;
    let trail = daemon.wait_for_trail("p-3", actions_settled).await;
    let action = &trail["decisions"][0]["actions"][0];
    assert_eq!(action["status"], "dead_letter", "{trail:#}");
    let detail = action["detail"].as_str().unwrap();
    assert!(detail.starts_with("unauthorized: HTTP 401"), "{detail}");
    assert_eq!(daemon.metric(&retried).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_plugin_notifies_through_the_daemon() {
    let Some(wasm) = python_notify() else { return };
    notifies_through_the_daemon("python-notify", &wasm).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_plugin_notifies_through_the_daemon() {
    let Some(wasm) = js_notify() else { return };
    notifies_through_the_daemon("js-notify", &wasm).await;
}

/// Regression: the pool was sized for Rust components (8 core instances
/// each); a componentize-py instance takes 14, so with the default
/// `dispatch.concurrency` a burst of 200 events failed 102 attempts with
/// "maximum concurrent limit of 640 for core instances reached".
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_against_a_python_plugin_fails_no_attempt() {
    let Some(wasm) = python_notify() else { return };
    let needs = converge_plugin_host::InstanceNeeds::of_file(&wasm).unwrap();
    assert!(needs.core_instances > 8, "{needs}");
    let sink = Sink::start().await;
    // No [dispatch] concurrency: the default (64) runs at once.
    let ws = notify_through(
        "python-notify",
        &wasm,
        &sink,
        "\n[dispatch]\ninitial_backoff = \"50ms\"\nmax_backoff = \"200ms\"\nmax_attempts = 3\n",
    );
    precompile(&ws);
    let daemon = ws.start();

    let events: Vec<_> = (0..200)
        .map(|i| {
            event(
                &format!("b-{i}"),
                "task.updated",
                &format!("task/B-{i}"),
                json!({}),
            )
        })
        .collect();
    for batch in events.chunks(50) {
        assert_eq!(daemon.send_batch(batch).await.0, 202);
    }
    let ok = "converge_actions_total{plugin=\"python-notify\",outcome=\"Ok\"}";
    let deadline = Instant::now() + Duration::from_secs(300);
    while daemon.metric(ok).await < 200.0 {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for outcome in ["Retried", "Failed"] {
        let name =
            format!("converge_actions_total{{plugin=\"python-notify\",outcome=\"{outcome}\"}}");
        assert_eq!(
            daemon.metric(&name).await,
            0.0,
            "{outcome}\n{}",
            daemon.log()
        );
    }
    assert_eq!(sink.received().len(), 200);
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())) {
        let memory: Vec<&str> = status
            .lines()
            .filter(|l| l.starts_with("VmPeak") || l.starts_with("VmHWM") || l.starts_with("VmRSS"))
            .collect();
        eprintln!("daemon memory after the burst: {}", memory.join(", "));
    }
}
