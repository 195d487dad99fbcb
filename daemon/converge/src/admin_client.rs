//! The client side of the commands that ask a running daemon
//! (`converge status`, `converge gates`, `converge dlq`): where the daemon
//! listens, per the config's `server.listen`, and its `/v1` API over HTTP
//! (`reqwest`), read into the `converge_api` types the daemon answers with.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use converge_api::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Config;

/// How long one request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why such a command did not do its job: the config is wrong (exit 2) or
/// the daemon failed, refused or did not answer (exit 1).
#[derive(Debug)]
pub enum AdminError {
    Invalid(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for AdminError {
    fn from(e: anyhow::Error) -> AdminError {
        AdminError::Failed(e)
    }
}

impl AdminError {
    /// Prints the error and gives the exit code.
    pub fn report(self) -> std::process::ExitCode {
        match self {
            AdminError::Invalid(e) => {
                eprintln!("error: {e}");
                crate::Exit::Invalid.into()
            }
            AdminError::Failed(e) => {
                eprintln!("error: {e:#}");
                crate::Exit::Failure.into()
            }
        }
    }
}

/// Why a request did not bring the answer asked for.
#[derive(Debug)]
pub enum CallError {
    /// The daemon answered with an error status.
    Refused(Refusal),
    /// It could not be reached, did not answer in time, or sent an answer
    /// that is not the one asked for; the message says which.
    Failed(anyhow::Error),
}

impl CallError {
    /// The error for people: `refused` words a refusal (each command says
    /// what was refused); any other failure keeps its own message.
    pub fn explain(self, refused: impl FnOnce(&Refusal) -> String) -> anyhow::Error {
        match self {
            CallError::Refused(refusal) => anyhow!(refused(&refusal)),
            CallError::Failed(e) => e,
        }
    }
}

/// An error answer: its status and, when the daemon sent one, its error
/// body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub error: Option<ErrorBody>,
    /// The body as it came, for an answer without an error body (a proxy's,
    /// an older daemon's).
    body: String,
}

impl Refusal {
    /// The error's message, else the body, else the status's reason.
    pub fn message(&self) -> String {
        if let Some(error) = &self.error {
            return error.error.message.clone();
        }
        match self.body.trim() {
            "" => reqwest::StatusCode::from_u16(self.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no message")
                .to_string(),
            body => body.to_string(),
        }
    }
}

/// A running daemon, as the config says where to find it.
pub struct AdminClient {
    address: SocketAddr,
    http: reqwest::Client,
    /// What reads send when the daemon listens beyond loopback: the read
    /// token, else the admin token, from the environment (docs/console.md).
    read_token: Option<String>,
}

impl AdminClient {
    /// Loads the config at `config_path` (with secrets from the
    /// environment, for the admin token) and finds the daemon it describes.
    /// `command` names the command in the error about a port of 0.
    pub fn load(config_path: &Path, command: &str) -> Result<(AdminClient, Config), AdminError> {
        let config = Config::load(config_path, &|name| std::env::var(name).ok())
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        let listen = config.server.listen;
        if listen.port() == 0 {
            return Err(AdminError::Invalid(format!(
                "server.listen is {listen}: the daemon picks a free port at each start, so `{command}` cannot find it; set a fixed port in {}",
                config_path.display()
            )));
        }
        // The daemon is this machine's, found by address: no proxy from the
        // environment sees the admin token, and no redirect takes it
        // elsewhere.
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot set up the HTTP client")?;
        Ok((
            AdminClient {
                address: reachable(listen),
                http,
                read_token: config
                    .server
                    .read_token
                    .as_ref()
                    .or(config.server.admin_token.as_ref())
                    .map(|t| t.0.clone()),
            },
            config,
        ))
    }

    /// `GET path`, its answer read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = &self.read_token {
            request = request.bearer_auth(token);
        }
        self.call(request).await
    }

    /// `GET path` as [`AdminClient::get`], a refusal said as "converge at
    /// `<address>` answered `<status>`: `<message>`".
    pub async fn get_or_explain<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.get(path).await.map_err(|e| {
            e.explain(|refused| {
                format!(
                    "converge at {} answered {}: {}",
                    self.address(),
                    refused.status,
                    refused.message()
                )
            })
        })
    }

    /// `POST path` with `body` as JSON and the admin token, the answer read
    /// as `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        body: &B,
    ) -> Result<T, CallError> {
        self.call(self.http.post(self.url(path)).bearer_auth(token).json(body))
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sends the request and reads the answer: `T` from a 2xx, the error
    /// body from anything else.
    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let failed = |e: reqwest::Error| CallError::Failed(self.failure(e));
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let body = response.bytes().await.map_err(failed)?;
        if !status.is_success() {
            return Err(CallError::Refused(Refusal {
                status: status.as_u16(),
                error: serde_json::from_slice(&body).ok(),
                body: String::from_utf8_lossy(&body).into_owned(),
            }));
        }
        serde_json::from_slice(&body).map_err(|e| {
            CallError::Failed(anyhow!(
                "converge at {} sent an answer this command cannot read ({e}); is it the same version?",
                self.address
            ))
        })
    }

    /// What went wrong with the exchange, for people: the cause at the
    /// bottom of reqwest's chain is the one that says it.
    fn failure(&self, e: reqwest::Error) -> anyhow::Error {
        let address = self.address;
        if e.is_timeout() {
            return anyhow!("converge at {address} did not answer within {TIMEOUT:?}");
        }
        let connect = e.is_connect();
        let error = anyhow::Error::new(e);
        let cause = error.root_cause();
        if connect {
            anyhow!("cannot reach converge at {address} (is it running?): {cause}")
        } else {
            anyhow!("the exchange with converge at {address} failed: {cause}")
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// The admin token from the environment, as the daemon reads it; the error
/// says which variable to set.
pub fn admin_token(config: &Config) -> anyhow::Result<String> {
    match &config.server.admin_token {
        Some(token) => Ok(token.0.clone()),
        None => bail!(
            "set {} to the daemon's admin token (server.admin_token_env)",
            config.server.admin_token_env
        ),
    }
}

/// A daemon listening on every interface is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        other => other,
    }
}

/// An answer as `--json` prints it: pretty, through a `Value` so its keys
/// come sorted, as the commands always printed them.
pub fn json_text<T: Serialize>(answer: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&serde_json::to_value(
        answer,
    )?)?)
}

/// A JSON value for people: strings bare, null as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// What is missing, for people: `-`.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, body: &str) -> Refusal {
        Refusal {
            status,
            error: serde_json::from_str(body).ok(),
            body: body.into(),
        }
    }

    #[test]
    fn a_refusal_says_the_daemon_s_message() {
        let typed = refusal(
            409,
            r#"{"error": {"code": "nothing_held", "message": "campaign/c-1 has no held send"}}"#,
        );
        assert_eq!(typed.message(), "campaign/c-1 has no held send");
        assert_eq!(
            typed.error.unwrap().error.code,
            "nothing_held",
            "the code is there to branch on"
        );
        assert_eq!(refusal(502, "bad gateway\n").message(), "bad gateway");
        assert_eq!(refusal(404, "").message(), "Not Found");
    }

    #[tokio::test]
    async fn a_daemon_that_is_not_running_is_named() {
        // A port just freed: nothing listens there.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = AdminClient {
            address,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            read_token: None,
        };
        let e = client
            .get::<Value>("/v1/status")
            .await
            .unwrap_err()
            .explain(|_| unreachable!("nothing answered"));
        let message = format!("{e:#}");
        assert!(
            message.starts_with(&format!(
                "cannot reach converge at {address} (is it running?): "
            )),
            "{message}"
        );
    }
}
