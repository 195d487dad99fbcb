//! The `http.send` import: the only way out of the sandbox. Every request is
//! checked against the plugin's grants and limits before the host sends it.

use ::http::header::{
    ACCEPT, CONNECTION, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use opentelemetry_http::HeaderInjector;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use url::Url;

use crate::bindings::converge::plugin::http::{self, HttpError, Method, Request, Response};
use crate::client;
use crate::config::Grants;
use crate::parsed_url::{self, ParsedUrl};
use crate::state::{CallContext, HostState};

/// The span of one request a plugin sends (see [`crate::TRACE_ONLY_SPANS`]).
pub(crate) const REQUEST_SPAN: &str = "http.request";

/// Headers a plugin may not set: they would let it steer the connection
/// (Host selects a virtual host behind a granted address) or desynchronise
/// framing. The host's HTTP client sets them itself.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
];

impl http::Host for HostState {
    async fn send(&mut self, req: Request) -> Result<Response, HttpError> {
        send(&mut self.call, req).await
    }
}

/// Checks, sends, and reads the response within the limits. Every attempt
/// counts toward the per-call request limit, denied ones included, so a
/// plugin retrying a denied request in a loop is still bounded.
async fn send(call: &mut CallContext, req: Request) -> Result<Response, HttpError> {
    if call.http_requests >= call.limits.max_http_requests {
        return Err(HttpError::Denied(format!(
            "request limit reached: {} per call",
            call.limits.max_http_requests
        )));
    }
    call.http_requests += 1;

    // A dry run names the credential it records; nothing else needs a copy.
    let credential = call.dry_run.as_ref().and_then(|_| req.credential.clone());
    let prepared = prepare(&call.grants, call.limits.max_request_bytes, req)?;
    if let Some(dry_run) = &call.dry_run {
        return Ok(dry_run.answer(
            &call.plugin,
            &call.action_id,
            &prepared,
            credential.as_deref(),
        ));
    }
    let method = prepared.method.clone();
    let host = prepared.url.host_str().unwrap_or_default().to_string();
    let max_response = call.limits.max_response_bytes;
    let span = tracing::info_span!(
        REQUEST_SPAN,
        otel.kind = "client",
        http.request.method = %method,
        server.address = %host,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let mut headers = prepared.headers;
    // The trace goes on to the receiver (W3C Trace Context); nothing is
    // added while traces are off.
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(&mut headers));
    });
    let uri = prepared
        .uri
        .map_err(|e| HttpError::Denied(format!("invalid url {:?}: {e}", prepared.url.as_str())))?;
    let mut request =
        ::http::Request::new(Full::new(Bytes::from(prepared.body.unwrap_or_default())));
    *request.method_mut() = prepared.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;

    let exchange = async {
        let response = call.http.request(request).await.map_err(transport_error)?;
        read_response(response, max_response).await
    };
    let result = match tokio::time::timeout(call.limits.http_timeout, exchange)
        .instrument(span.clone())
        .await
    {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout),
    };
    match &result {
        Ok(response) => span.record("http.response.status_code", response.status),
        Err(_) => span.record("otel.status_code", "error"),
    };
    match &result {
        Ok(response) => tracing::debug!(
            plugin = &*call.plugin,
            action_id = call.action_id,
            %method,
            host,
            status = response.status,
            "plugin http request"
        ),
        Err(error) => tracing::debug!(
            plugin = &*call.plugin,
            action_id = call.action_id,
            %method,
            host,
            ?error,
            "plugin http request failed"
        ),
    }
    result
}

/// A request that passed every check, ready to send.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) method: ::http::Method,
    pub(crate) url: Url,
    /// The URL as the client reads it; `Err` says why it could not.
    pub(crate) uri: Result<::http::Uri, String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Vec<u8>>,
}

/// Checks a guest request against the grants and builds what will be sent.
/// Pure, so the policy is testable without a network.
pub(crate) fn prepare(
    grants: &Grants,
    max_request_bytes: usize,
    req: Request,
) -> Result<Prepared, HttpError> {
    let ParsedUrl { url, uri } = parsed_url::parse(&req.url)
        .map_err(|e| HttpError::Denied(format!("invalid url {:?}: {e}", req.url)))?;
    match url.scheme() {
        "https" => {}
        "http" if grants.allow_plain_http => {}
        "http" => {
            return Err(HttpError::Denied(
                "plain http is not granted to this plugin; use https".into(),
            ));
        }
        other => {
            return Err(HttpError::Denied(format!(
                "scheme {other:?} is not allowed"
            )));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HttpError::Denied(
            "credentials in the url are not allowed; name a granted credential".into(),
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| HttpError::Denied("url has no host".into()))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| HttpError::Denied("url has no port".into()))?;
    let default_port = url.port().is_none();
    if !host_granted(&grants.http_hosts, host, port, default_port) {
        return Err(HttpError::Denied(format!(
            "host {host}:{port} is not granted to this plugin"
        )));
    }

    let body = req.body;
    if body.as_ref().is_some_and(|b| b.len() > max_request_bytes) {
        return Err(HttpError::TooLarge);
    }

    let mut headers = HeaderMap::new();
    for (name, value) in req.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| HttpError::Denied(format!("invalid header name {name:?}")))?;
        if FORBIDDEN_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("proxy-") {
            return Err(HttpError::Denied(format!("header {name} may not be set")));
        }
        let value = HeaderValue::try_from(value)
            .map_err(|_| HttpError::Denied(format!("invalid value for header {name}")))?;
        headers.append(name, value);
    }
    // What any client sends unless told otherwise.
    if !headers.contains_key(USER_AGENT) {
        headers.insert(USER_AGENT, HeaderValue::from_static(client::USER_AGENT));
    }
    if !headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    }
    if let Some(credential_name) = req.credential {
        let credential = grants.credentials.get(&credential_name).ok_or_else(|| {
            HttpError::Denied(match grants.unset_credentials.get(&credential_name) {
                Some(variable) => format!(
                    "credential {credential_name:?} has no value: the environment variable {variable} is not set in the daemon's environment"
                ),
                None => format!("credential {credential_name:?} is not granted to this plugin"),
            })
        })?;
        // The messages below name the credential, never its value.
        let name = HeaderName::try_from(credential.header.as_str()).map_err(|_| {
            HttpError::Denied(format!(
                "credential {credential_name:?} has an invalid header name"
            ))
        })?;
        let mut value = HeaderValue::try_from(credential.value.as_str()).map_err(|_| {
            HttpError::Denied(format!(
                "credential {credential_name:?} has an invalid header value"
            ))
        })?;
        value.set_sensitive(true);
        // `insert` replaces whatever the guest put under the same name.
        headers.insert(name, value);
    }

    Ok(Prepared {
        method: match req.method {
            Method::Get => ::http::Method::GET,
            Method::Post => ::http::Method::POST,
            Method::Put => ::http::Method::PUT,
            Method::Patch => ::http::Method::PATCH,
            Method::Delete => ::http::Method::DELETE,
        },
        url,
        uri,
        headers,
        body,
    })
}

/// Whether `host:port` matches one of the granted patterns. A pattern
/// without a port matches only the scheme's default port; `*.example.com`
/// matches any name with one or more labels before `.example.com`.
pub(crate) fn host_granted(patterns: &[String], host: &str, port: u16, default_port: bool) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    patterns.iter().any(|pattern| {
        let pattern = pattern.trim().to_ascii_lowercase();
        let (pattern_host, pattern_port) = split_host_port(&pattern);
        let port_ok = match pattern_port {
            Some(p) => p == port,
            None => default_port,
        };
        port_ok
            && match pattern_host.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .and_then(|rest| rest.strip_suffix('.'))
                    .is_some_and(|labels| !labels.is_empty()),
                None => host == pattern_host,
            }
    })
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]`. A pattern whose port
/// does not parse keeps it in the host, so it matches nothing.
fn split_host_port(pattern: &str) -> (&str, Option<u16>) {
    if pattern.starts_with('[') {
        if let Some((host, port)) = pattern.rsplit_once("]:")
            && let Ok(port) = port.parse()
        {
            return (&pattern[..host.len() + 1], Some(port));
        }
        return (pattern, None);
    }
    match pattern.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (pattern, None),
        },
        None => (pattern, None),
    }
}

/// Status, headers and body; a body past `max_bytes` is refused by its
/// declared length before reading, else as it arrives.
async fn read_response(
    response: ::http::Response<hyper::body::Incoming>,
    max_bytes: usize,
) -> Result<Response, HttpError> {
    let (parts, body) = response.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(HttpError::TooLarge);
    }
    let body = match Limited::new(body, max_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return Err(HttpError::TooLarge),
        Err(error) => return Err(HttpError::Transport(error_chain(&*error))),
    };
    Ok(Response {
        status: parts.status.as_u16(),
        headers: end_to_end(&parts.headers),
        body: body.into(),
    })
}

/// The response's headers a plugin is given: all but the hop-by-hop ones
/// (RFC 9110, 7.6.1), which describe the host's connection to the server
/// (`connection`, `keep-alive`, `transfer-encoding`, ...), not the answer.
/// The host owns that connection and has decoded the body; most servers
/// send two of them on every answer, each two strings copied into the
/// sandbox and freed there.
fn end_to_end(headers: &HeaderMap) -> Vec<(String, String)> {
    const HOP_BY_HOP: [&str; 7] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    // Any other header the connection header names is hop-by-hop too.
    let named_by_connection = |name: &HeaderName| {
        headers.get_all(CONNECTION).iter().any(|value| {
            value.to_str().is_ok_and(|listed| {
                listed
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
            })
        })
    };
    headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()) && !named_by_connection(name))
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn transport_error(error: hyper_util::client::legacy::Error) -> HttpError {
    if let Some(internal) = crate::resolve::internal_address(&error) {
        // A grant's name leading inside is a configuration matter: no retry helps.
        HttpError::Denied(internal)
    } else {
        HttpError::Transport(error_chain(&error))
    }
}

/// The client's `Display` hides the cause ("client error (Connect)"); the chain
/// says what actually went wrong (connection refused, TLS, DNS).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credential;

    #[test]
    fn a_plugin_is_given_the_end_to_end_headers_of_a_response() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("connection", "keep-alive, X-Hop"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-hop", "named by connection"),
            ("x-request-id", "r-1"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("x-name", "caf\u{e9}"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        let given = end_to_end(&headers);
        let given: Vec<(&str, &str)> = given
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            given,
            [
                ("content-type", "application/json"),
                ("x-request-id", "r-1"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-name", "caf\u{e9}"),
            ]
        );
    }

    fn patterns(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_host_matches_default_port_only() {
        let g = patterns(&["api.slack.com"]);
        assert!(host_granted(&g, "api.slack.com", 443, true));
        assert!(host_granted(&g, "API.Slack.com.", 443, true));
        assert!(!host_granted(&g, "api.slack.com", 8443, false));
        assert!(!host_granted(&g, "slack.com", 443, true));
        assert!(!host_granted(&g, "evil-api.slack.com", 443, true));
    }

    #[test]
    fn host_with_port_matches_that_port() {
        let g = patterns(&["hooks.example.com:8443", "127.0.0.1:3000", "[::1]:8080"]);
        assert!(host_granted(&g, "hooks.example.com", 8443, false));
        assert!(!host_granted(&g, "hooks.example.com", 443, true));
        assert!(host_granted(&g, "127.0.0.1", 3000, false));
        assert!(!host_granted(&g, "127.0.0.1", 3001, false));
        assert!(host_granted(&g, "[::1]", 8080, false));
    }

    #[test]
    fn wildcard_matches_one_or_more_labels_but_not_the_apex() {
        let g = patterns(&["*.example.com"]);
        assert!(host_granted(&g, "a.example.com", 443, true));
        assert!(host_granted(&g, "a.b.example.com", 443, true));
        assert!(!host_granted(&g, "example.com", 443, true));
        assert!(!host_granted(&g, "badexample.com", 443, true));
        assert!(!host_granted(&g, ".example.com", 443, true));
        assert!(!host_granted(&g, "a.example.com.evil.net", 443, true));
    }

    #[test]
    fn default_headers_are_added_only_where_the_plugin_set_none() {
        let g = grants();
        let plain = prepare(&g, 1024, request("https://hooks.example.com/")).unwrap();
        assert_eq!(plain.headers[USER_AGENT], client::USER_AGENT);
        assert_eq!(plain.headers[ACCEPT], "*/*");

        let mut own = request("https://hooks.example.com/");
        own.headers
            .push(("user-agent".into(), "partner-sdk/2".into()));
        own.headers
            .push(("accept".into(), "application/json".into()));
        let own = prepare(&g, 1024, own).unwrap();
        assert_eq!(own.headers.get_all(USER_AGENT).iter().count(), 1);
        assert_eq!(own.headers[USER_AGENT], "partner-sdk/2");
        assert_eq!(own.headers[ACCEPT], "application/json");
    }

    fn request(url: &str) -> Request {
        Request {
            method: Method::Post,
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(b"{}".to_vec()),
            credential: None,
        }
    }

    fn grants() -> Grants {
        Grants {
            http_hosts: patterns(&["hooks.example.com"]),
            allow_plain_http: false,
            credentials: [(
                "token".to_string(),
                Credential {
                    header: "authorization".into(),
                    value: "Bearer s3cret".into(),
                },
            )]
            .into(),
            unset_credentials: [("bot_token".to_string(), "SLACK_BOT_TOKEN".to_string())].into(),
        }
    }

    fn denied(result: Result<Prepared, HttpError>) -> String {
        match result {
            Err(HttpError::Denied(message)) => message,
            other => panic!("expected denied, got {other:?}"),
        }
    }

    #[test]
    fn plain_http_needs_a_grant() {
        let message = denied(prepare(
            &grants(),
            1024,
            request("http://hooks.example.com/"),
        ));
        assert!(message.contains("plain http"), "{message}");
        let mut g = grants();
        g.allow_plain_http = true;
        assert!(prepare(&g, 1024, request("http://hooks.example.com/")).is_ok());
        let message = denied(prepare(&g, 1024, request("ftp://hooks.example.com/")));
        assert!(message.contains("scheme"), "{message}");
    }

    #[test]
    fn credentials_are_injected_only_when_granted_and_never_echoed() {
        let mut req = request("https://hooks.example.com/x");
        req.credential = Some("token".into());
        req.headers.push(("Authorization".into(), "forged".into()));
        let prepared = prepare(&grants(), 1024, req).unwrap();
        let values: Vec<_> = prepared.headers.get_all("authorization").iter().collect();
        assert_eq!(values, ["Bearer s3cret"]);

        let mut req = request("https://hooks.example.com/x");
        req.credential = Some("other".into());
        let message = denied(prepare(&grants(), 1024, req));
        assert!(message.contains("\"other\" is not granted"), "{message}");
        assert!(!message.contains("s3cret"));

        // Granted, but its variable is unset: the error says which to set.
        let mut req = request("https://hooks.example.com/x");
        req.credential = Some("bot_token".into());
        let message = denied(prepare(&grants(), 1024, req));
        assert_eq!(
            message,
            "credential \"bot_token\" has no value: the environment variable SLACK_BOT_TOKEN is not set in the daemon's environment"
        );
    }

    #[test]
    fn userinfo_host_header_and_large_bodies_are_refused() {
        denied(prepare(
            &grants(),
            1024,
            request("https://u:p@hooks.example.com/"),
        ));
        let mut req = request("https://hooks.example.com/");
        req.headers.push(("Host".into(), "internal".into()));
        denied(prepare(&grants(), 1024, req));
        assert!(matches!(
            prepare(&grants(), 1, request("https://hooks.example.com/")),
            Err(HttpError::TooLarge)
        ));
    }
}
