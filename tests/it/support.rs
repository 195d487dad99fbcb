//! What the integration tests share: building the plugins, a temporary
//! daemon started from the real binary, the testkit's sink standing in for
//! Slack and webhook receivers, and a small HTTP client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use converge_testkit::sink::Sink;
pub use converge_testkit::{free_port, workspace_root as repo_root};

/// The bundled plugins and the tests' own, built once per test run: the
/// directory of the `.wasm` files.
pub fn plugin_dir() -> &'static Path {
    converge_testkit::plugins_dir()
}

/// Compiled plugins are shared by every daemon the tests start.
fn plugin_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// Quick retries, so tests of retries finish fast.
const DEFAULT_DISPATCH: &str = r#"
[dispatch]
initial_backoff = "50ms"
max_backoff = "200ms"
max_attempts = 3
shutdown_grace = "2s"
"#;

/// A temporary directory with a config, rules and a data dir.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// `extra` is appended to a config that listens on a free port and keeps
    /// its data in the workspace; `rules` are written as rule files.
    pub fn new(rules: &[(&str, &str)], extra: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (name, source) in rules {
            let path = dir.path().join(format!("{name}.rhai"));
            std::fs::write(&path, source).unwrap();
            files.push(format!("{:?}", path.display().to_string()));
        }
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536

[storage]
data_dir = "data"
plugin_cache_dir = {cache:?}

[rules]
files = [{files}]

{dispatch}
{extra}
"#,
            dispatch = if extra.contains("[dispatch]") {
                ""
            } else {
                DEFAULT_DISPATCH
            },
            cache = plugin_cache_dir().display().to_string(),
            files = files.join(", "),
        );
        std::fs::write(dir.path().join("converge.toml"), config).unwrap();
        Workspace { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("converge.toml")
    }

    /// Replaces `from` (which must be there) with `to` in the config, e.g.
    /// to restart on a manual clock that starts later.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        assert!(text.contains(from), "the config has no `{from}`:\n{text}");
        std::fs::write(self.config(), text.replace(from, to)).unwrap();
    }

    /// Listens on a fixed free port instead of port 0, so the commands that
    /// find the daemon through the config (`converge status`, `gates`,
    /// `dlq`) can reach it.
    pub fn listen_on_free_port(&self) {
        let port = free_port().port();
        self.edit_config(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
    }

    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        Daemon::start(&self.config(), env)
    }

    /// Starts the daemon with `configure` applied to its command last: to
    /// set limits on the process, say.
    pub fn start_configured(
        &self,
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Daemon {
        Daemon::start_with(&self.config(), env, Some(ADMIN_TOKEN), configure)
    }

    /// A daemon without an admin token: its admin API is disabled.
    pub fn start_without_admin_token(&self) -> Daemon {
        Daemon::start_with_token(&self.config(), &[], None)
    }

    pub fn converge(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_converge"))
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap()
    }
}

/// A workspace whose one rule notifies `ops` of every event, through
/// webhook-out to the sink's `/hook`.
pub fn notify_all_to_sink(sink: &Sink) -> Workspace {
    notify_all_to_sink_with(sink, "")
}

/// [`notify_all_to_sink`] with `extra` appended to its config.
pub fn notify_all_to_sink_with(sink: &Sink, extra: &str) -> Workspace {
    Workspace::new(
        &[("notify_all", r#"notify("ops", `event ${event.id}`);"#)],
        &format!(
            r#"{plugins}
[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "{url}" }}

{extra}
"#,
            plugins = plugins_toml(sink),
            url = sink.url("/hook"),
        ),
    )
}

/// The plugins (as [`plugins_toml`]) and a `release_send` route posting
/// each released send to the sink's `/send`.
pub fn sends_to_sink_toml(sink: &Sink) -> String {
    format!(
        r#"{plugins}
[[routes]]
decision = "release_send"
plugin = "webhook-out"
config = {{ url = "{url}" }}
"#,
        plugins = plugins_toml(sink),
        url = sink.url("/send"),
    )
}

/// A plugin section granting the plugins access to the local sink.
pub fn plugins_toml(sink: &Sink) -> String {
    let dir = plugin_dir();
    format!(
        r#"
[plugins.webhook-out]
component = {webhook:?}
http_hosts = ["{host}"]
allow_plain_http = true

[plugins.slack]
component = {slack:?}
http_hosts = ["{host}"]
allow_plain_http = true
[plugins.slack.credentials.bot_token]
env = "CONVERGE_TEST_SLACK_TOKEN"

[plugins.misbehaving]
component = {misbehaving:?}
http_hosts = ["{host}"]
allow_plain_http = true
[plugins.misbehaving.limits]
memory_mib = 16
cpu_time = "300ms"
wall_time = "1s"
"#,
        webhook = dir.join("webhook_out.wasm").display().to_string(),
        slack = dir.join("slack.wasm").display().to_string(),
        misbehaving = dir.join("misbehaving.wasm").display().to_string(),
        host = sink.host(),
    )
}

/// The config of the tests that kill daemons under load: every `notify`
/// goes to the sink through `webhook-out`, failed deliveries are retried
/// quickly and without end (a kill must not turn them into dead letters),
/// and time is a manual clock starting at `clock_start`.
pub fn under_load_toml(sink: &Sink, clock_start: &str) -> String {
    format!(
        r#"{plugins}
[[routes]]
decision = "notify"
plugin = "webhook-out"
config = {{ url = "{url}" }}

[dispatch]
initial_backoff = "50ms"
max_backoff = "200ms"
max_attempts = 1000
shutdown_grace = "1s"

[clock]
mode = "manual"
start = "{clock_start}"
"#,
        plugins = plugins_toml(sink),
        url = sink.url("/hook"),
    )
}

/// The admin token a test daemon gets unless its test gives its own
/// (`CONVERGE_ADMIN_TOKEN` in the environment) or none.
pub const ADMIN_TOKEN: &str = "converge-test-admin-token-0123456789";

/// A running `converge run`, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub stderr: Arc<Mutex<String>>,
    /// The admin token it runs with, if any: what `advance_clock` sends.
    pub admin_token: Option<String>,
}

impl Daemon {
    fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let token = env
            .iter()
            .find(|(k, _)| *k == "CONVERGE_ADMIN_TOKEN")
            .map_or(ADMIN_TOKEN, |(_, v)| v);
        Daemon::start_with_token(config, env, Some(token))
    }

    fn start_with_token(config: &Path, env: &[(&str, &str)], token: Option<&str>) -> Daemon {
        Daemon::start_with(config, env, token, |_| {})
    }

    fn start_with(
        config: &Path,
        env: &[(&str, &str)],
        token: Option<&str>,
        configure: impl FnOnce(&mut Command),
    ) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_converge"));
        command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match token {
            Some(token) => command.env("CONVERGE_ADMIN_TOKEN", token),
            None => command.env_remove("CONVERGE_ADMIN_TOKEN"),
        };
        for (k, v) in env.iter().filter(|(k, _)| *k != "CONVERGE_ADMIN_TOKEN") {
            command.env(k, v);
        }
        configure(&mut command);
        let mut child = command.spawn().expect("starting converge");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut all = stderr.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("converge: listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => Daemon {
                child,
                url,
                stderr,
                admin_token: token.map(str::to_string),
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "converge did not start; its log:\n{}",
                    stderr.lock().unwrap()
                );
            }
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "converge did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<String>,
    ) -> (u16, Value) {
        let response = client()
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body.into())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Any request, with its headers; answers the status, the response's
    /// headers and its body (JSON when it parses).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = client()
            .request(method, format!("{}{path}", self.url))
            .body(body.into());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POSTs JSON with `Authorization: Bearer <token>` when a token is given.
    pub async fn post_admin(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = client()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn send_event(&self, event: &Value) -> (u16, Value) {
        self.post(
            "/hooks/test",
            "application/cloudevents+json",
            event.to_string(),
        )
        .await
    }

    /// POSTs `events` to the `test` hook as one CloudEvents batch.
    pub async fn send_batch(&self, events: &[Value]) -> (u16, Value) {
        self.post(
            "/hooks/test",
            "application/cloudevents-batch+json",
            serde_json::to_string(events).unwrap(),
        )
        .await
    }

    /// POSTs `events` to the `test` hook in batches of 100, each accepted.
    pub async fn accept_all(&self, events: &[Value]) {
        for batch in events.chunks(100) {
            let (status, body) = self.send_batch(batch).await;
            assert_eq!(status, 202, "{body}");
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        // A pooled connection the daemon closed as this request went out
        // (its header read timeout, short in some tests) fails the request
        // before any answer: a GET is safe to send again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match client().get(format!("{}{path}", self.url)).send().await {
                Ok(response) => {
                    return (response.status().as_u16(), response.text().await.unwrap());
                }
                Err(e) if attempt < 3 && e.is_request() => continue,
                Err(e) => panic!("GET {path}: {e:?}"),
            }
        }
    }

    /// The trail of an event, once `done` says it is complete.
    pub async fn wait_for_trail(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let (status, body) = self.get(&format!("/v1/events/{id}")).await;
            if status == 200 {
                last = serde_json::from_str(&body).unwrap();
                if done(&last["events"][0]) {
                    return last["events"][0].clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the trail of {id} never completed; last: {last:#}\nlog:\n{}",
            self.log()
        );
    }

    /// Moves the daemon's manual clock forward (`clock.mode = "manual"`).
    pub async fn advance_clock(&self, by: &str) -> Value {
        self.move_clock(serde_json::json!({ "advance": by })).await
    }

    /// Sets the daemon's manual clock to a later time.
    pub async fn set_clock(&self, to: &str) -> Value {
        self.move_clock(serde_json::json!({ "set": to })).await
    }

    async fn move_clock(&self, request: Value) -> Value {
        let (status, body) = self
            .post_admin("/v1/clock", self.admin_token.as_deref(), &request)
            .await;
        assert_eq!(status, 200, "{body}\n{}", self.log());
        body
    }

    /// Every timer of an entity (`kind/id`), newest first.
    pub async fn timers(&self, entity: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/entities/{entity}/timers")).await;
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        body["timers"].as_array().unwrap().clone()
    }

    /// Waits until a metric reaches `value`.
    pub async fn wait_for_metric(&self, name: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.metric(name).await;
            if now == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {now}, not {value}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of a metric line, e.g. `converge_events_accepted_total`.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new).clone()
}

/// Whether every action of every decision of a trail reached a final status.
pub fn actions_settled(trail: &Value) -> bool {
    let decisions = trail["decisions"].as_array();
    decisions.is_some_and(|ds| {
        !ds.is_empty()
            && ds.iter().all(|d| {
                d["actions"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|a| a["status"] != "pending"))
            })
    })
}

/// Whether `key` is the idempotency key of action `id` of a database:
/// `converge-<instance, 16 hex digits>-action-<id>`.
pub fn is_action_key(key: &str, id: i64) -> bool {
    key.strip_prefix("converge-")
        .and_then(|rest| rest.split_once("-action-"))
        .is_some_and(|(instance, action)| {
            instance.len() == 16
                && instance.bytes().all(|b| b.is_ascii_hexdigit())
                && action == id.to_string()
        })
}

/// Whether `key` is the idempotency key of a send released from the
/// `send.requested` event at journal `seq`:
/// `converge-<instance>-send-<seq>-<hash>`.
pub fn is_send_key(key: &str, seq: i64) -> bool {
    key.strip_prefix("converge-")
        .and_then(|rest| rest.split_once("-send-"))
        .is_some_and(|(instance, send)| {
            instance.len() == 16 && send.starts_with(&format!("{seq}-"))
        })
}

/// `n` events of type `ty`, the i-th `c-<i>` about `<kind>/t-<i>` with
/// `data(i)`.
pub fn numbered_events(
    n: usize,
    ty: &str,
    kind: &str,
    data: impl Fn(usize) -> Value,
) -> Vec<Value> {
    (0..n)
        .map(|i| event(&format!("c-{i}"), ty, &format!("{kind}/t-{i}"), data(i)))
        .collect()
}

/// The source of the example rule `rules/<name>.rhai`.
pub fn example_rule(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("rules/{name}.rhai"))).unwrap()
}

/// A CloudEvent with the given id, type, subject and data.
pub fn event(id: &str, ty: &str, subject: &str, data: Value) -> Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tests",
        "type": ty,
        "subject": subject,
        "time": "2026-11-23T10:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    })
}
