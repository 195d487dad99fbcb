//! The client side of the commands that ask a running daemon
//! (`converge status`, `converge gates`, `converge dlq`): where the daemon
//! listens, per the config's `server.listen`, and one HTTP/1.0 exchange
//! with it. HTTP/1.0 because the answer then ends when the daemon closes
//! the connection: no chunked decoding, no client library.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;

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

/// A running daemon, as the config says where to find it.
pub struct AdminClient {
    address: SocketAddr,
}

/// An answer: the status code and the JSON body (a string when not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The message of an `{"error": {...}}` answer, or the whole body.
    pub fn error_message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .map_or_else(|| self.body.to_string(), str::to_string)
    }
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
        Ok((
            AdminClient {
                address: reachable(listen),
            },
            config,
        ))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.request("GET", path, None, None).await
    }

    /// POSTs `body` as JSON with the admin token.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> anyhow::Result<Answer> {
        self.request("POST", path, Some(token), Some(&body.to_string()))
            .await
    }

    /// One HTTP/1.0 request; the answer ends when the daemon closes the
    /// connection.
    async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let address = self.address;
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .with_context(|| format!("cannot reach converge at {address} (is it running?)"))?;
            let mut head = format!(
                "{method} {path} HTTP/1.0\r\nHost: {address}\r\nAccept: application/json\r\n"
            );
            if let Some(token) = token {
                head.push_str(&format!("Authorization: Bearer {token}\r\n"));
            }
            if let Some(body) = body {
                head.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                ));
            }
            head.push_str("\r\n");
            head.push_str(body.unwrap_or_default());
            stream.write_all(head.as_bytes()).await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            anyhow::Ok(answer)
        };
        let answer = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .with_context(|| {
                format!("converge at {address} did not answer within {TIMEOUT:?}")
            })??;
        let text = String::from_utf8_lossy(&answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            bail!("converge at {address} sent a malformed answer");
        };
        let status = head
            .lines()
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("converge at {address} sent a malformed answer"))?;
        let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
        Ok(Answer { status, body })
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

/// A JSON value for people: strings bare, null as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
