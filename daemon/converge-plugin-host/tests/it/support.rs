//! Helpers: the guest plugins built once per test run, a host per test, and
//! local HTTP servers (the testkit's [`Sink`]) that record what reaches them:
//! one standing in for webhooks and Slack, and tools' APIs answered by each
//! test's responder.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use converge_plugin_host::{
    ActionInput, Credential, Grants, Plugin, PluginHost, PluginHostConfig, PluginLimits, PluginSpec,
};

pub use converge_testkit::sink::{Reply, Sink};
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

/// A local HTTP server standing in for webhooks and Slack:
/// - `/api/chat.postMessage`: Slack; `ok` only with `Bearer xoxb-test`;
/// - `/never`: accepts the request and never answers;
/// - anything else: 200 `ok`.
pub async fn sink() -> Sink {
    Sink::answering(|request, _| match request.path.as_str() {
        "/never" => Reply::never(),
        "/api/chat.postMessage" => {
            let authorized = request
                .headers
                .get("authorization")
                .is_some_and(|v| v == "Bearer xoxb-test");
            Reply::json(if authorized {
                serde_json::json!({"ok": true, "channel": "C1", "ts": "1700000000.000100"})
            } else {
                serde_json::json!({"ok": false, "error": "invalid_auth"})
            })
        }
        _ => Reply::status(200, "ok"),
    })
    .await
}

/// Plain http to `api`, and one credential under `name`.
pub fn grants_with(api: &Sink, name: &str, header: &str, value: &str) -> Grants {
    Grants {
        credentials: [(
            name.to_string(),
            Credential {
                header: header.into(),
                value: value.into(),
            },
        )]
        .into(),
        ..plain_http_to(api.addr)
    }
}
