//! Dry runs: plugins called as in the daemon, their HTTP requests checked
//! against their grants as in the daemon, then kept here instead of sent,
//! and answered with a stand-in (`200`, `{"ok": true}`: a JSON object,
//! and the success Slack's API reports), or the answer given for that
//! plugin. What `converge rules try`
//! shows a rule author: the requests an action would make, with nothing
//! leaving the machine.
//!
//! A credential's value never reaches the record: the header the host put
//! it in shows `<credential NAME>`.

use std::sync::{Arc, Mutex};

use ::http::HeaderMap;

use crate::bindings::converge::plugin::http::Response;

/// The requests of a host built with [`PluginHostConfig::dry_run`](crate::PluginHostConfig::dry_run),
/// in the order the plugins made them. Clones share one record.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    /// What a plugin's requests are answered instead of the stand-in, by
    /// plugin name.
    answers: Arc<std::collections::BTreeMap<String, StandIn>>,
}

/// An answer of a dry run: a status and a body (sent as JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandIn {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Default for StandIn {
    fn default() -> StandIn {
        StandIn {
            status: STAND_IN_STATUS,
            body: STAND_IN_BODY.as_bytes().to_vec(),
        }
    }
}

/// One request a plugin made in a dry run, as the host would have sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub plugin: String,
    /// The call it was made in: an action's idempotency key.
    pub call: String,
    pub method: String,
    pub url: String,
    /// In the order the host would send them; the credential's header says
    /// which credential, not its value.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// The answer every request of a dry run gets.
pub const STAND_IN_STATUS: u16 = 200;
pub const STAND_IN_BODY: &str = r#"{"ok": true}"#;

impl DryRun {
    pub fn new() -> DryRun {
        DryRun::default()
    }

    /// Every request of these plugins gets this answer instead of the
    /// stand-in: a tool's reply a plugin reads (a created issue's key), or
    /// an error, to see what the plugin makes of it.
    pub fn answering(answers: std::collections::BTreeMap<String, StandIn>) -> DryRun {
        DryRun {
            requests: Arc::default(),
            answers: Arc::new(answers),
        }
    }

    /// What requests of `plugin` are answered.
    pub fn answer_of(&self, plugin: &str) -> StandIn {
        self.answers.get(plugin).cloned().unwrap_or_default()
    }

    /// The requests recorded since the last `take`, oldest first.
    pub fn take(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *self.requests.lock().expect("dry run record"))
    }

    /// Keeps a request that passed every check, and answers it.
    pub(crate) fn answer(
        &self,
        plugin: &str,
        call: &str,
        prepared: &crate::http::Prepared,
        credential: Option<&str>,
    ) -> Response {
        let request = RecordedRequest {
            plugin: plugin.to_string(),
            call: call.to_string(),
            method: prepared.method.to_string(),
            url: prepared.url.to_string(),
            headers: shown_headers(&prepared.headers, credential),
            body: prepared.body.clone(),
        };
        self.requests.lock().expect("dry run record").push(request);
        let answer = self.answer_of(plugin);
        Response {
            status: answer.status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: answer.body,
        }
    }
}

/// The headers with the sensitive ones (the injected credential) named
/// rather than shown.
fn shown_headers(headers: &HeaderMap, credential: Option<&str>) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = if value.is_sensitive() {
                format!("<credential {}>", credential.unwrap_or("?"))
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_string(), shown)
        })
        .collect()
}
