//! The one HTTP client every plugin's requests go out through: HTTP/1.1
//! with pooled keep-alive connections, rustls with Mozilla's roots, names
//! resolved to public addresses only ([`PublicOnly`]), and no redirects
//! followed (a 3xx is the plugin's to read).
//!
//! hyper-util's client, without reqwest's layers on top: the imports need
//! none of them (the host applies its own timeout, size limits and headers),
//! and they cost about as much CPU again as the exchange itself, which a
//! daemon sending one request per action pays on every action.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::resolve::PublicOnly;

/// What the host sends with: cheap to clone (the pool is shared).
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector<PublicOnly>>, Full<Bytes>>;

/// Sent unless the plugin sets its own.
pub(crate) const USER_AGENT: &str = concat!("converge/", env!("CARGO_PKG_VERSION"));

pub(crate) fn new_client() -> HttpClient {
    let mut tcp = HttpConnector::new_with_resolver(PublicOnly);
    // The TLS layer above takes https:// through this connector too.
    tcp.enforce_http(false);
    // Requests are written whole; waiting for an ACK before the next
    // segment only adds latency.
    tcp.set_nodelay(true);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        // Idle connections close after the pool's idle timeout (90 s)
        // rather than staying open until the server closes them.
        .pool_timer(TokioTimer::new())
        .build(tls)
}

/// A response's body, refused past `max_bytes` (by its declared length
/// before reading, else as it arrives).
pub(crate) async fn read_body(
    response: ::http::Response<hyper::body::Incoming>,
    max_bytes: usize,
) -> Result<(::http::response::Parts, Bytes), BodyError> {
    let (parts, body) = response.into_parts();
    let declared = parts
        .headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, max_bytes).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(error) => Err(BodyError::Transport(error)),
    }
}

#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    Transport(Box<dyn std::error::Error + Send + Sync>),
}
