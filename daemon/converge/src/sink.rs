//! `converge sink`: prints every HTTP request it receives and answers like a
//! Slack API or a webhook receiver would, so the walkthrough in the README can
//! show actions arriving without any account anywhere.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Json};
use serde_json::json;

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!(
        "converge sink: listening on http://{}",
        listener.local_addr()?
    );
    let app = Router::new().fallback(receive);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn receive(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let idempotency = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let authorized = if headers.contains_key("authorization") {
        "yes"
    } else {
        "no"
    };
    let text = String::from_utf8_lossy(&body);
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.into_owned());
    println!(
        "{method} {uri} (idempotency-key: {idempotency}, authorization header: {authorized})\n{pretty}\n"
    );
    // Slack's chat.postMessage answers ok/ts; any other receiver ignores the body.
    Json(json!({"ok": true, "ts": "1700000000.000100"}))
}
