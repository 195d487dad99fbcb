//! What a converge plugin author builds on: the bindings for the
//! `converge:plugin` WIT package and small helpers around them, so an
//! action plugin is a type, a config struct and one `execute`, and a
//! connector plugin (world `connector-plugin`, see [`connector`]) is a type
//! implementing [`Connector`] with the help of [`event`] and [`http`]; a
//! task tool's connector implements [`task::TaskConnector`] instead.
//!
//! A plugin has no ambient authority. It reads the operator's configuration
//! with [`config`], logs through [`log`], and reaches the network only through
//! [`http`], which the host performs for it: only granted hosts are reachable,
//! and a credential is named, never seen (the host adds the header).
//!
//! ```no_run
//! use converge_plugin_sdk::{Action, ActionOutcome, ActionPlugin, PluginError, PluginInfo};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     url: String,
//! }
//!
//! struct Echo;
//!
//! impl ActionPlugin for Echo {
//!     fn describe() -> PluginInfo {
//!         converge_plugin_sdk::plugin_info!()
//!     }
//!
//!     fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
//!         let config: Config = converge_plugin_sdk::config()?;
//!         let body = serde_json::json!({ "id": action.id, "decision": action.decision()? });
//!         let response = converge_plugin_sdk::http::post_json(&config.url, &body, None, &[])?;
//!         if !response.is_success() {
//!             return Err(response.error());
//!         }
//!         Ok(ActionOutcome::new(format!("POST {} -> {}", config.url, response.status)))
//!     }
//! }
//!
//! converge_plugin_sdk::export_action_plugin!(Echo);
//! # fn main() {}
//! ```
//!
//! Build with `cargo build --profile wasm --target wasm32-wasip2 -p <name>`; the
//! crate must be a `cdylib`.
//!
//! On a non-wasm target the bindings compile but every host import panics, so
//! the helpers that do not call the host (error mapping, JSON parsing) are
//! plain functions a plugin can unit-test natively.

use serde::de::DeserializeOwned;

pub mod connector;
pub mod event;
pub mod task;

pub use connector::{Connector, ConnectorInfo, Inbound, PollResult};
pub use event::CloudEvent;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "action-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_action_plugin_bindings",
        default_bindings_module: "converge_plugin_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::converge::plugin::types::{Action, ActionOutcome, PluginError, PluginInfo};
/// The trait an action plugin implements: `describe` and `execute`.
pub use bindings::exports::converge::plugin::action::Guest as ActionPlugin;

/// The version of the `converge:plugin` WIT package this SDK was built
/// against; [`plugin_info!`] reports it so the host can check compatibility.
pub const API_VERSION: &str = "0.1.0";

/// Exports a type implementing [`ActionPlugin`] as the plugin's `action`
/// interface. Use once per plugin crate, at its root.
#[macro_export]
macro_rules! export_action_plugin {
    ($plugin:ident) => {
        $crate::bindings::__export_action_plugin_bindings!($plugin with_types_in $crate::bindings);
    };
}

/// The [`PluginInfo`] for the calling crate: its package name and version,
/// and the SDK's [`API_VERSION`].
#[macro_export]
macro_rules! plugin_info {
    () => {
        $crate::PluginInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
    };
}

impl PluginInfo {
    /// Info for a plugin built against this SDK's [`API_VERSION`].
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            api_version: API_VERSION.to_owned(),
        }
    }
}

impl ActionOutcome {
    /// An outcome with a one-line summary and no external id.
    pub fn new(summary: impl Into<String>) -> Self {
        ActionOutcome {
            external_id: None,
            summary: summary.into(),
        }
    }

    /// Records the remote side's id of what was created (a message ts, an issue key).
    pub fn with_external_id(mut self, external_id: impl Into<String>) -> Self {
        self.external_id = Some(external_id.into());
        self
    }
}

impl Action {
    /// The decision that caused this action, as a JSON object.
    pub fn decision(&self) -> Result<serde_json::Value, PluginError> {
        parse_member("decision", &self.decision_json)
    }

    /// The canonical event (a CloudEvent JSON object) behind the decision.
    pub fn event(&self) -> Result<serde_json::Value, PluginError> {
        parse_member("event", &self.event_json)
    }

    /// The entity's state after the event, or `Value::Null` when there is none.
    pub fn entity(&self) -> Result<serde_json::Value, PluginError> {
        parse_member("entity", &self.entity_json)
    }
}

fn parse_member(name: &str, json: &str) -> Result<serde_json::Value, PluginError> {
    serde_json::from_str(json)
        .map_err(|e| PluginError::InvalidInput(format!("action {name} is not valid JSON: {e}")))
}

/// The operator's configuration for this plugin, deserialized into `T`.
///
/// A config that does not parse is the operator's mistake, never retried:
/// the error is `invalid-input` and names the offending key when serde can.
pub fn config<T: DeserializeOwned>() -> Result<T, PluginError> {
    parse_config(&config_json())
}

/// The operator's configuration for this plugin as the host passed it, a
/// JSON object; for plugins that validate beyond what serde checks.
pub fn config_json() -> String {
    bindings::converge::plugin::host::config_json()
}

/// The pure half of [`config`], for tests.
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T, PluginError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let config = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let error = e.into_inner();
        if path == "." {
            PluginError::InvalidInput(format!("plugin config: {error}"))
        } else {
            PluginError::InvalidInput(format!("plugin config: {path}: {error}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| PluginError::InvalidInput(format!("plugin config: {e}")))?;
    Ok(config)
}

/// The first header with this name, compared case-insensitively.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Messages to the daemon's log, tagged by the host with the plugin and the
/// action being executed. Plugins have no stdout worth relying on.
pub mod log {
    use crate::bindings::converge::plugin::host::{self, Level};

    pub fn trace(message: &str) {
        host::log(Level::Trace, message);
    }

    pub fn debug(message: &str) {
        host::log(Level::Debug, message);
    }

    pub fn info(message: &str) {
        host::log(Level::Info, message);
    }

    pub fn warn(message: &str) {
        host::log(Level::Warn, message);
    }

    pub fn error(message: &str) {
        host::log(Level::Error, message);
    }
}

/// Outgoing HTTP, performed by the host on the plugin's behalf.
pub mod http {
    use crate::PluginError;
    use crate::bindings::converge::plugin::http as wit;

    pub use wit::{HttpError, Method, Request, Response};

    /// How much of a failed response's body goes into the error message.
    const ERROR_BODY_LIMIT: usize = 300;

    /// Sends a request through the host. Fails with [`HttpError::Denied`] when
    /// the URL's host or the credential is not granted to this plugin.
    pub fn send(request: &Request) -> Result<Response, HttpError> {
        wit::send(request)
    }

    /// POSTs `body` as JSON, with `content-type: application/json`, the named
    /// credential (injected by the host) and any extra headers.
    pub fn post_json(
        url: &str,
        body: &serde_json::Value,
        credential: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Response, HttpError> {
        send(&json_request(Method::Post, url, body, credential, headers))
    }

    /// The request [`post_json`] sends, without sending it.
    pub fn json_request(
        method: Method,
        url: &str,
        body: &impl serde::Serialize,
        credential: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Request {
        let mut all_headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        all_headers.extend(
            headers
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("content-type"))
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        Request {
            method,
            url: url.to_owned(),
            headers: all_headers,
            body: Some(
                serde_json::to_vec(body).expect("JSON values and plain structs always serialize"),
            ),
            credential: credential.map(str::to_owned),
        }
    }

    impl Response {
        /// Whether the status is 2xx.
        pub fn is_success(&self) -> bool {
            (200..300).contains(&self.status)
        }

        /// The first header with this name, compared case-insensitively.
        pub fn header(&self, name: &str) -> Option<&str> {
            crate::header(&self.headers, name)
        }

        /// The body parsed as JSON; an unparsable body is `permanent`, since
        /// the remote side will not answer differently on retry.
        pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
            serde_json::from_slice(&self.body).map_err(|e| {
                PluginError::Permanent(format!(
                    "HTTP {} response is not the expected JSON: {e}",
                    self.status
                ))
            })
        }

        /// This (non-2xx) response as a [`PluginError`]; see [`error_for_status`].
        pub fn error(&self) -> PluginError {
            error_for_status(self.status, &self.headers, &self.body)
        }
    }

    /// Maps a non-2xx response to the error whose retry policy fits it:
    /// 429 is `rate-limited` (with `Retry-After` seconds as milliseconds),
    /// 401/403 `unauthorized`, 408 and 5xx `transient`, any other status
    /// `permanent`. Messages carry the status and the start of the body.
    pub fn error_for_status(status: u16, headers: &[(String, String)], body: &[u8]) -> PluginError {
        match status {
            429 => PluginError::RateLimited(
                crate::header(headers, "retry-after").and_then(retry_after_ms),
            ),
            401 | 403 => PluginError::Unauthorized(status_message(status, body)),
            408 | 500..=599 => PluginError::Transient(status_message(status, body)),
            _ => PluginError::Permanent(status_message(status, body)),
        }
    }

    /// `Retry-After` in delay-seconds form, as milliseconds. The HTTP-date
    /// form is ignored: the host's own backoff is a fine fallback.
    pub fn retry_after_ms(value: &str) -> Option<u32> {
        let seconds: u32 = value.trim().parse().ok()?;
        Some(seconds.saturating_mul(1000))
    }

    /// A GET with `accept: application/json` and the named credential.
    pub fn get_request(url: &str, credential: Option<&str>) -> Request {
        Request {
            method: Method::Get,
            url: url.to_owned(),
            headers: vec![("accept".to_owned(), "application/json".to_owned())],
            body: None,
            credential: credential.map(str::to_owned),
        }
    }

    /// Sends through the host and fails on any non-2xx status with the
    /// error whose retry policy fits it ([`error_for_status`]): a 429 is
    /// `rate-limited` with its `Retry-After`, a 5xx `transient`.
    pub fn send_checked(request: &Request) -> Result<Response, PluginError> {
        let response = send(request)?;
        if !response.is_success() {
            return Err(response.error());
        }
        Ok(response)
    }

    /// GETs `url` and parses the 2xx body as JSON; see [`send_checked`].
    pub fn get_json<T: serde::de::DeserializeOwned>(
        url: &str,
        credential: Option<&str>,
    ) -> Result<T, PluginError> {
        send_checked(&get_request(url, credential))?.json()
    }

    /// Sends `body` as JSON with `method` and returns the checked response;
    /// see [`send_checked`].
    pub fn send_json(
        method: Method,
        url: &str,
        body: &impl serde::Serialize,
        credential: Option<&str>,
    ) -> Result<Response, PluginError> {
        send_checked(&json_request(method, url, body, credential, &[]))
    }

    /// `base` followed by `?name=value&...`, each name and value
    /// percent-encoded (JQL, dates and ids are safe to pass as they are).
    pub fn url_with_query(base: &str, query: &[(&str, &str)]) -> String {
        let mut url = base.to_owned();
        for (i, (name, value)) in query.iter().enumerate() {
            url.push(if i == 0 && !base.contains('?') {
                '?'
            } else {
                '&'
            });
            url.push_str(&percent_encode(name));
            url.push('=');
            url.push_str(&percent_encode(value));
        }
        url
    }

    /// Percent-encodes everything but RFC 3986's unreserved characters, so
    /// the result is safe in a path segment or a query value.
    pub fn percent_encode(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }

    fn status_message(status: u16, body: &[u8]) -> String {
        let body = String::from_utf8_lossy(body);
        let body = body.trim();
        if body.is_empty() {
            return format!("HTTP {status}");
        }
        match body.char_indices().nth(ERROR_BODY_LIMIT) {
            Some((cut, _)) => format!("HTTP {status}: {}...", &body[..cut]),
            None => format!("HTTP {status}: {body}"),
        }
    }

    /// Timeouts and transport failures may pass; a denied host or an
    /// oversized body will not change on retry.
    impl From<HttpError> for PluginError {
        fn from(error: HttpError) -> Self {
            match error {
                HttpError::Timeout => PluginError::Transient("HTTP request timed out".to_owned()),
                HttpError::Transport(message) => {
                    PluginError::Transient(format!("HTTP transport error: {message}"))
                }
                HttpError::Denied(message) => {
                    PluginError::Permanent(format!("HTTP request denied by the host: {message}"))
                }
                HttpError::TooLarge => PluginError::Permanent(
                    "HTTP request or response body is over the host's size limit".to_owned(),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::http::{
        HttpError, Method, error_for_status, json_request, retry_after_ms, url_with_query,
    };
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn status_429_is_rate_limited_with_retry_after_in_ms() {
        assert_eq!(
            error_for_status(429, &headers(&[("Retry-After", "30")]), b""),
            PluginError::RateLimited(Some(30_000))
        );
        assert_eq!(
            error_for_status(429, &[], b"slow down"),
            PluginError::RateLimited(None)
        );
        assert_eq!(
            error_for_status(
                429,
                &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]),
                b""
            ),
            PluginError::RateLimited(None)
        );
    }

    #[test]
    fn retry_after_saturates_instead_of_overflowing() {
        assert_eq!(retry_after_ms(" 2 "), Some(2000));
        assert_eq!(retry_after_ms("4294967295"), Some(u32::MAX));
        assert_eq!(retry_after_ms("-1"), None);
    }

    #[test]
    fn statuses_map_to_their_retry_policy() {
        assert_eq!(
            error_for_status(401, &[], b"bad token"),
            PluginError::Unauthorized("HTTP 401: bad token".into())
        );
        assert!(matches!(
            error_for_status(403, &[], b""),
            PluginError::Unauthorized(m) if m == "HTTP 403"
        ));
        assert!(matches!(
            error_for_status(500, &[], b""),
            PluginError::Transient(_)
        ));
        assert!(matches!(
            error_for_status(503, &[], b""),
            PluginError::Transient(_)
        ));
        assert!(matches!(
            error_for_status(408, &[], b""),
            PluginError::Transient(_)
        ));
        assert_eq!(
            error_for_status(404, &[], b"no such hook\n"),
            PluginError::Permanent("HTTP 404: no such hook".into())
        );
        assert!(matches!(
            error_for_status(422, &[], b""),
            PluginError::Permanent(_)
        ));
    }

    #[test]
    fn long_error_bodies_are_cut_on_a_char_boundary() {
        let body = "é".repeat(1000);
        let PluginError::Permanent(message) = error_for_status(400, &[], body.as_bytes()) else {
            panic!("expected permanent");
        };
        assert!(message.len() < 700, "{}", message.len());
        assert!(message.ends_with("..."));
    }

    #[test]
    fn http_errors_map_to_their_retry_policy() {
        assert!(matches!(
            PluginError::from(HttpError::Timeout),
            PluginError::Transient(_)
        ));
        assert!(matches!(
            PluginError::from(HttpError::Transport("reset".into())),
            PluginError::Transient(m) if m.contains("reset")
        ));
        assert!(matches!(
            PluginError::from(HttpError::Denied("evil.example not granted".into())),
            PluginError::Permanent(m) if m.contains("evil.example not granted")
        ));
        assert!(matches!(
            PluginError::from(HttpError::TooLarge),
            PluginError::Permanent(_)
        ));
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        url: String,
        #[serde(default)]
        retries: u32,
    }

    #[test]
    fn config_parses_into_the_plugin_type() {
        let config: Config = parse_config(r#"{"url": "https://example.com"}"#).unwrap();
        assert_eq!(
            config,
            Config {
                url: "https://example.com".into(),
                retries: 0
            }
        );
    }

    #[test]
    fn config_errors_are_invalid_input_naming_the_problem() {
        let err = parse_config::<Config>(r#"{"url": "x", "retires": 3}"#).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.contains("retires")),
            "{err:?}"
        );
        let err = parse_config::<Config>("{}").unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.contains("url")),
            "{err:?}"
        );
        let err = parse_config::<Config>(r#"{"url": ["x"]}"#).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.starts_with("plugin config: url: invalid type")),
            "{err:?}"
        );
        let err = parse_config::<Config>("not json").unwrap_err();
        assert!(matches!(err, PluginError::InvalidInput(_)));
    }

    fn action() -> Action {
        Action {
            id: "a1".into(),
            kind: "notify".into(),
            rule: "r".into(),
            decision_json: r#"{"kind": "notify", "to": "ops", "message": "hi"}"#.into(),
            event_json: r#"{"id": "e1", "subject": "PR-7"}"#.into(),
            entity_json: "null".into(),
        }
    }

    #[test]
    fn action_members_parse_as_json() {
        let action = action();
        assert_eq!(action.decision().unwrap()["to"], "ops");
        assert_eq!(action.event().unwrap()["subject"], "PR-7");
        assert_eq!(action.entity().unwrap(), serde_json::Value::Null);
    }

    #[test]
    fn malformed_action_members_are_invalid_input() {
        let action = Action {
            event_json: "{".into(),
            ..action()
        };
        assert!(matches!(
            action.event(),
            Err(PluginError::InvalidInput(m)) if m.contains("event")
        ));
    }

    #[test]
    fn json_requests_carry_content_type_once() {
        let request = json_request(
            Method::Post,
            "https://example.com/hook",
            &json!({"a": 1}),
            Some("token"),
            &[("Content-Type", "text/plain"), ("x-extra", "1")],
        );
        assert_eq!(
            request.headers,
            headers(&[("content-type", "application/json"), ("x-extra", "1")])
        );
        assert_eq!(request.body.as_deref(), Some(br#"{"a":1}"#.as_slice()));
        assert_eq!(request.credential.as_deref(), Some("token"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            url_with_query(
                "https://x.atlassian.net/rest/api/3/search",
                &[
                    ("jql", "updated >= \"2024/01/02 10:00\" ORDER BY updated"),
                    ("startAt", "0")
                ]
            ),
            "https://x.atlassian.net/rest/api/3/search?jql=updated%20%3E%3D%20%222024%2F01%2F02%2010%3A00%22%20ORDER%20BY%20updated&startAt=0"
        );
        assert_eq!(
            url_with_query("https://x/y?a=1", &[("b", "é")]),
            "https://x/y?a=1&b=%C3%A9"
        );
    }

    #[test]
    fn headers_are_found_case_insensitively() {
        let headers = headers(&[("X-GitHub-Event", "issues")]);
        assert_eq!(header(&headers, "x-github-event"), Some("issues"));
        assert_eq!(header(&headers, "x-github-delivery"), None);
    }

    #[test]
    fn plugin_info_reports_the_api_version() {
        assert_eq!(PluginInfo::new("p", "1.2.3").api_version, "0.1.0");
        assert!(
            include_str!("../../wit/converge-plugin.wit")
                .contains(&format!("package converge:plugin@{API_VERSION};"))
        );
    }
}
