//! What plugins can and cannot reach over `http.send`.

use converge_plugin_host::{CallFailure, Grants, PluginLimits};
use serde_json::{Value, json};

use crate::support::{
    Reply, Sink, action, credential, grants_for, host, load, plain_http_to, sink, spec,
};

#[tokio::test(flavor = "multi_thread")]
async fn webhook_out_posts_the_action_with_its_idempotency_key() {
    let sink = sink().await;
    let host = host();
    let plugin = load(
        &host,
        spec("webhook_out", grants_for(&sink), PluginLimits::default()),
    )
    .await;
    assert_eq!(plugin.info().name, "webhook-out");
    assert!(plugin.info().api_version.starts_with("0.1"));

    let config = json!({"url": sink.url("/hook")}).to_string();
    let done = plugin.execute(action("act-1"), &config).await.unwrap();
    assert!(done.summary.contains("200"), "{done:?}");

    let seen = sink.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/hook");
    assert_eq!(seen[0].headers["idempotency-key"], "act-1");
    assert_eq!(seen[0].headers["content-type"], "application/json");
    // What any client sends when the plugin does not say.
    assert!(
        seen[0].headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("converge/"),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(seen[0].headers["accept"], "*/*");
    let body: Value = serde_json::from_slice(&seen[0].bytes).unwrap();
    assert_eq!(
        body,
        json!({
            "action_id": "act-1",
            "kind": "escalate",
            "rule": "stalled",
            "decision": {"kind": "escalate", "to": "owner", "reason": "late", "level": 1},
            "event": {"id": "e1", "subject": "PR-7"},
            "entity": null,
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_token_reaches_slack_but_never_the_plugin() {
    let sink = sink().await;
    let mut grants = grants_for(&sink);
    grants
        .credentials
        .insert("bot_token".into(), credential("Bearer xoxb-test"));
    let host = host();
    let plugin = load(&host, spec("slack", grants, PluginLimits::default())).await;

    // The config only names the credential; the value lives in the host.
    let config = json!({"channel": "#mops", "base_url": sink.url("/api")}).to_string();
    let done = plugin.execute(action("act-2"), &config).await.unwrap();
    assert_eq!(done.external_id.as_deref(), Some("1700000000.000100"));

    let seen = sink.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/chat.postMessage");
    assert_eq!(seen[0].headers["authorization"], "Bearer xoxb-test");
    let body: Value = serde_json::from_slice(&seen[0].bytes).unwrap();
    assert_eq!(body["channel"], "#mops");
    assert!(!String::from_utf8_lossy(&seen[0].bytes).contains("xoxb"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_invalid_auth_is_unauthorized() {
    let sink = sink().await;
    let mut grants = grants_for(&sink);
    grants
        .credentials
        .insert("bot_token".into(), credential("Bearer xoxb-revoked"));
    let host = host();
    let plugin = load(&host, spec("slack", grants, PluginLimits::default())).await;

    let config = json!({"channel": "#mops", "base_url": sink.url("/api")}).to_string();
    let failure = plugin.execute(action("act-3"), &config).await.unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Unauthorized(m) if m.contains("invalid_auth")),
        "{failure:?}"
    );
    assert!(!failure.retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_not_granted_is_denied_before_sending() {
    let sink = sink().await;
    let host = host();
    let plugin = load(
        &host,
        spec("slack", grants_for(&sink), PluginLimits::default()),
    )
    .await;

    let config = json!({"channel": "#mops", "base_url": sink.url("/api")}).to_string();
    let failure = plugin.execute(action("act-4"), &config).await.unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Permanent(m) if m.contains("\"bot_token\" is not granted")),
        "{failure:?}"
    );
    assert!(sink.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_not_granted_is_denied_and_nothing_is_sent() {
    let sink = sink().await;
    let grants = Grants {
        http_hosts: vec!["hooks.example.com".into(), "127.0.0.1:1".into()],
        allow_plain_http: true,
        ..Grants::default()
    };
    let host = host();
    let plugin = load(&host, spec("webhook_out", grants, PluginLimits::default())).await;

    let config = json!({"url": sink.url("/hook")}).to_string();
    let failure = plugin.execute(action("act-5"), &config).await.unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Permanent(m) if m.contains("denied") && m.contains("not granted")),
        "{failure:?}"
    );
    assert!(sink.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_name_that_leads_to_an_internal_address_is_refused() {
    let sink = sink().await;
    let port = sink.host().rsplit_once(':').unwrap().1.to_string();
    // The grant names `localhost`, which resolves to loopback: refused,
    // permanently, saying how to reach it on purpose.
    let grants = Grants {
        http_hosts: vec![format!("localhost:{port}")],
        allow_plain_http: true,
        ..Grants::default()
    };
    let host = host();
    let plugin = load(&host, spec("webhook_out", grants, PluginLimits::default())).await;
    let config = json!({"url": format!("http://localhost:{port}/hook")}).to_string();
    let failure = plugin.execute(action("act-7"), &config).await.unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Permanent(m)
            if m.contains("localhost resolves to") && m.contains("grant that address itself")),
        "{failure:?}"
    );
    assert!(sink.received().is_empty());

    // Granting the address itself reaches it.
    let plugin = load(
        &host,
        spec("webhook_out", grants_for(&sink), PluginLimits::default()),
    )
    .await;
    let config = json!({"url": sink.url("/hook")}).to_string();
    plugin.execute(action("act-7"), &config).await.unwrap();
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_refused_unless_allowed() {
    let sink = sink().await;
    let host = host();
    let config = json!({"url": sink.url("/hook")}).to_string();

    let mut grants = grants_for(&sink);
    grants.allow_plain_http = false;
    let plugin = load(&host, spec("webhook_out", grants, PluginLimits::default())).await;
    let failure = plugin.execute(action("act-6"), &config).await.unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Permanent(m) if m.contains("plain http")),
        "{failure:?}"
    );
    assert!(sink.received().is_empty());

    let plugin = load(
        &host,
        spec("webhook_out", grants_for(&sink), PluginLimits::default()),
    )
    .await;
    plugin.execute(action("act-6"), &config).await.unwrap();
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_count_is_limited_per_call() {
    let sink = sink().await;
    let host = host();
    let limits = PluginLimits {
        max_http_requests: 0,
        ..PluginLimits::default()
    };
    let plugin = load(&host, spec("webhook_out", grants_for(&sink), limits)).await;
    let config = json!({"url": sink.url("/hook")}).to_string();
    let failure = plugin.execute(action("act-7"), &config).await.unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Permanent(m) if m.contains("request limit")),
        "{failure:?}"
    );
    assert!(sink.received().is_empty());
}

/// Instances are reused between calls: what a call counts against its limits
/// must start from zero on the next call of the same instance.
#[tokio::test(flavor = "multi_thread")]
async fn per_call_limits_start_over_on_a_reused_instance() {
    let sink = sink().await;
    let host = host();
    let limits = PluginLimits {
        max_http_requests: 1,
        ..PluginLimits::default()
    };
    let plugin = load(&host, spec("webhook_out", grants_for(&sink), limits)).await;
    for i in 0..5 {
        let config = json!({"url": sink.url(&format!("/hook/{i}"))}).to_string();
        plugin
            .execute(action(&format!("act-{i}")), &config)
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
    }
    let paths: Vec<String> = sink.received().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        ["/hook/0", "/hook/1", "/hook/2", "/hook/3", "/hook/4"]
    );
}

/// `misbehaving` in mode `slow_http`: one GET, whatever its status, as
/// "GET <url> -> <status>".
async fn get(grants: Grants, limits: PluginLimits, url: &str) -> Result<String, CallFailure> {
    let plugin = load(&host(), spec("misbehaving", grants, limits)).await;
    let config = json!({"mode": "slow_http", "url": url}).to_string();
    plugin
        .execute(action("act-9"), &config)
        .await
        .map(|done| done.summary)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_the_plugins_to_read_not_followed() {
    let api = Sink::answering(|seen, _| match seen.path.as_str() {
        "/moved" => Reply::status(302, "").header("location", "/elsewhere"),
        _ => Reply::status(200, "ok"),
    })
    .await;
    let url = api.url("/moved");
    let summary = get(plain_http_to(api.addr), PluginLimits::default(), &url)
        .await
        .unwrap();
    assert_eq!(summary, format!("GET {url} -> 302"));
    let paths: Vec<String> = api.received().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/moved"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_past_the_limit_is_refused_whether_its_length_is_declared_or_not() {
    let limits = PluginLimits {
        max_response_bytes: 1024,
        ..PluginLimits::default()
    };
    // Declared: axum sends a content-length.
    let api = Sink::answering(|_, _| Reply::status(200, &"x".repeat(4096))).await;
    let failure = get(plain_http_to(api.addr), limits.clone(), &api.url("/big"))
        .await
        .unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Permanent(m) if m.contains("over the host's size limit")),
        "{failure:?}"
    );
    // Not declared: chunks, past the limit only as they arrive.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 4096];
        let _ = socket.read(&mut head).await;
        let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
        let mut response = String::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        for _ in 0..4 {
            response.push_str(&chunk);
        }
        response.push_str("0\r\n\r\n");
        let _ = socket.write_all(response.as_bytes()).await;
    });
    let failure = get(
        plain_http_to(addr),
        limits,
        &format!("http://{addr}/stream"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Permanent(m) if m.contains("over the host's size limit")),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_transient_and_says_why() {
    // A port nobody listens on: bound, then let go.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let failure = get(
        plain_http_to(addr),
        PluginLimits::default(),
        &format!("http://{addr}/hook"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Transient(m) if m.to_lowercase().contains("connection refused")),
        "{failure:?}"
    );
}
