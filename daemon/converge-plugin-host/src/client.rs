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
use http_body_util::Full;
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
