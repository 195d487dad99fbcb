//! Helpers: the guest plugins built once per test run, a host per test, and
//! a local HTTP sink that records what reaches it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use converge_plugin_host::{
    ActionInput, Credential, Grants, Plugin, PluginHost, PluginHostConfig, PluginLimits, PluginSpec,
};

use converge_testkit::workspace_root;

/// A built plugin's component, by its file's name (`webhook_out`).
pub fn wasm(file: &str) -> PathBuf {
    converge_testkit::plugins_dir().join(format!("{file}.wasm"))
}

/// Shared by every test so each plugin is compiled by the debug-built
/// Cranelift once, not once per test.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

pub fn host() -> PluginHost {
    PluginHost::new(PluginHostConfig {
        cache_dir: Some(cache_dir()),
        ..PluginHostConfig::default()
    })
    .expect("plugin host")
}

/// Loads one at a time, so concurrent tests find the plugin in the cache
/// instead of all compiling it at once.
pub async fn load(host: &PluginHost, spec: PluginSpec) -> Plugin {
    static LOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = LOADING.lock().await;
    let name = spec.name.clone();
    host.load(spec)
        .await
        .unwrap_or_else(|e| panic!("load {name}: {e}"))
}

pub fn spec(file: &str, grants: Grants, limits: PluginLimits) -> PluginSpec {
    PluginSpec {
        name: file.replace('_', "-"),
        component: wasm(file),
        grants,
        limits,
    }
}

/// Grants plain http to the sink's `127.0.0.1:port`.
pub fn grants_for(sink: &Sink) -> Grants {
    plain_http_to(sink.addr)
}

/// Plain http to `addr` and nothing else.
pub fn plain_http_to(addr: SocketAddr) -> Grants {
    Grants {
        http_hosts: vec![addr.to_string()],
        allow_plain_http: true,
        credentials: BTreeMap::new(),
        unset_credentials: BTreeMap::new(),
    }
}

pub fn credential(value: &str) -> Credential {
    Credential {
        header: "authorization".into(),
        value: value.into(),
    }
}

pub fn action(id: &str) -> ActionInput {
    ActionInput {
        id: id.into(),
        kind: "escalate".into(),
        rule: "stalled".into(),
        decision_json: r#"{"kind":"escalate","to":"owner","reason":"late","level":1}"#.into(),
        event_json: r#"{"id":"e1","subject":"PR-7"}"#.into(),
        entity_json: "null".into(),
    }
}

/// A webhook fixture from `tests/fixtures/webhooks`.
pub fn fixture(tool: &str, file: &str) -> Vec<u8> {
    let path = workspace_root()
        .join("tests/fixtures/webhooks")
        .join(tool)
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One request as the sink saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// The raw query string, empty when there is none.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON request body")
    }
}

/// What a [`FakeApi`] answers: status, headers and a body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(body: serde_json::Value) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

type Responder = dyn Fn(&Seen, usize) -> Reply + Send + Sync;
/// What the fake API's handler shares: the requests so far and the responder.
type FakeState = (Arc<Mutex<Vec<Seen>>>, Arc<Responder>);

/// A local stand-in for a tool's REST API: every request is recorded and
/// answered by the test's responder, which also gets how many requests came
/// before (to answer 429 or 5xx once, then succeed).
pub struct FakeApi {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    pub async fn start(
        responder: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> FakeApi {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = (seen.clone(), Arc::new(responder) as Arc<Responder>);
        let app = axum::Router::new().fallback(answer).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake api");
        let addr = listener.local_addr().expect("fake api address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeApi { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Plain http to this server, and one credential under `name`.
    pub fn grants(&self, name: &str, header: &str, value: &str) -> Grants {
        Grants {
            http_hosts: vec![self.addr.to_string()],
            allow_plain_http: true,
            credentials: [(
                name.to_string(),
                Credential {
                    header: header.into(),
                    value: value.into(),
                },
            )]
            .into(),
            unset_credentials: BTreeMap::new(),
        }
    }
}

async fn answer(
    State((seen, responder)): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Seen {
        method,
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        body,
    };
    let before = {
        let mut seen = seen.lock().unwrap();
        seen.push(request.clone());
        seen.len() - 1
    };
    let reply = responder(&request, before);
    let mut response = (
        StatusCode::from_u16(reply.status).expect("a valid status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("a valid header value"));
    }
    response
}

/// A local HTTP server standing in for webhooks and Slack:
/// - `/api/chat.postMessage`: Slack; `ok` only with `Bearer xoxb-test`;
/// - `/never`: accepts the request and never answers;
/// - anything else: 200 `ok`.
pub struct Sink {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Sink {
    pub async fn start() -> Sink {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink");
        let addr = listener.local_addr().expect("sink address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Sink { addr, seen }
    }

    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn record(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    seen.lock().unwrap().push(Seen {
        method,
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers.clone(),
        body,
    });
    match path.as_str() {
        "/never" => std::future::pending().await,
        "/api/chat.postMessage" => {
            let authorized = headers
                .get("authorization")
                .is_some_and(|v| v == "Bearer xoxb-test");
            let body = if authorized {
                r#"{"ok":true,"channel":"C1","ts":"1700000000.000100"}"#
            } else {
                r#"{"ok":false,"error":"invalid_auth"}"#
            };
            (StatusCode::OK, [("content-type", "application/json")], body).into_response()
        }
        _ => (StatusCode::OK, "ok").into_response(),
    }
}
