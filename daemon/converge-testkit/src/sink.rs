//! A local HTTP server standing in for what converge sends to: webhook
//! receivers, Slack, a tool's REST API. It records every request and
//! answers it: by default 200 with a Slack-like `{"ok": true}` body (or
//! the statuses a test scripted, in order), or as the test's own responder
//! says, which also learns how many requests came before (to answer 429 or
//! 5xx once, then succeed).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

/// One request as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    /// The raw query string, empty when there is none.
    pub query: String,
    pub headers: HeaderMap,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
    /// The body as it arrived.
    pub bytes: Bytes,
    /// When it arrived: the gaps a sender leaves (retries, rate limits).
    pub at: Instant,
}

impl Received {
    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body, which must be JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("a JSON request body")
    }
}

/// What a responder answers: status, headers and a body, or nothing ever.
pub struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: String,
    never: bool,
}

impl Reply {
    pub fn json(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            never: false,
        }
    }

    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).expect("a valid status"),
            headers: Vec::new(),
            body: body.into(),
            never: false,
        }
    }

    pub fn with_status(mut self, status: u16) -> Reply {
        self.status = StatusCode::from_u16(status).expect("a valid status");
        self
    }

    /// The request is accepted and never answered: for the sender's timeouts.
    pub fn never() -> Reply {
        Reply {
            never: true,
            ..Reply::status(200, "")
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

type Responder = dyn Fn(&Received, usize) -> Reply + Send + Sync;

#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<StatusCode>>>,
}

impl Sink {
    /// On a free loopback port, answering 200 `{"ok": true, ..}` or the
    /// scripted statuses ([`Sink::answer_next`]).
    pub async fn start() -> Sink {
        Sink::start_on("127.0.0.1:0".parse().expect("an address")).await
    }

    /// [`Sink::start`] on `addr`.
    pub async fn start_on(addr: SocketAddr) -> Sink {
        let sink = Sink::placeholder(addr);
        let script = sink.script.clone();
        sink.serve(move |_, _| {
            let status = script.lock().unwrap().pop_front().unwrap_or(StatusCode::OK);
            Reply {
                status,
                ..Reply::json(serde_json::json!({"ok": true, "ts": "1700000000.000100"}))
            }
        })
        .await
    }

    /// On a free loopback port, answering as `responder` says; it gets each
    /// request and how many came before it.
    pub async fn answering(
        responder: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> Sink {
        Sink::placeholder("127.0.0.1:0".parse().expect("an address"))
            .serve(responder)
            .await
    }

    /// A sink that is not running yet, for configs that name its address.
    pub fn placeholder(addr: SocketAddr) -> Sink {
        Sink {
            addr,
            received: Arc::default(),
            script: Arc::default(),
        }
    }

    async fn serve(
        mut self,
        responder: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> Sink {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("the sink cannot listen on {}: {e}", self.addr));
        self.addr = listener.local_addr().expect("the sink's address");
        let received = self.received.clone();
        let responder: Arc<Responder> = Arc::new(responder);
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, bytes: Bytes| {
                let received = received.clone();
                let responder = responder.clone();
                async move {
                    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&bytes).into_owned())
                    });
                    let request = Received {
                        method,
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or_default().to_string(),
                        headers,
                        body,
                        bytes,
                        at: Instant::now(),
                    };
                    let before = {
                        let mut received = received.lock().unwrap();
                        received.push(request.clone());
                        received.len() - 1
                    };
                    respond(responder(&request, before)).await
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        self
    }

    /// The address, as `host:port`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next answers of a sink started with [`Sink::start`], in order;
    /// then 200 again.
    pub fn answer_next(&self, statuses: &[StatusCode]) {
        self.script.lock().unwrap().extend(statuses.iter().copied());
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_for_or(n, String::new).await
    }

    /// [`Sink::wait_for`], adding `context()` (a daemon's log) to the
    /// failure when they do not come.
    pub async fn wait_for_or(&self, n: usize, context: impl Fn() -> String) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the sink got {} of {n} requests: {:?}\n{}",
                received.len(),
                received
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect::<Vec<_>>(),
                context()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn respond(reply: Reply) -> Response {
    if reply.never {
        return std::future::pending().await;
    }
    let mut response = (reply.status, reply.body).into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("a valid header value"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(sink: &Sink, path: &str, body: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(sink.addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            sink.host(),
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    #[tokio::test]
    async fn the_sink_records_requests_and_answers_the_scripted_statuses_then_200() {
        let sink = Sink::start().await;
        sink.answer_next(&[StatusCode::SERVICE_UNAVAILABLE]);
        assert_eq!(post(&sink, "/a?x=1%202", r#"{"n": 1}"#).await.0, 503);
        let (status, body) = post(&sink, "/b", "not json").await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ok"], true);
        let received = sink.wait_for(2).await;
        assert_eq!(received[0].path, "/a");
        assert_eq!(received[0].param("x").as_deref(), Some("1 2"));
        assert_eq!(received[0].body["n"], 1);
        assert_eq!(received[1].body, Value::String("not json".into()));
        assert_eq!(received[1].method, Method::POST);
    }

    #[tokio::test]
    async fn a_responder_answers_with_what_came_before() {
        let sink = Sink::answering(|request, before| match before {
            0 => Reply::status(429, "slow down").header("retry-after", "1"),
            _ => Reply::json(serde_json::json!({"path": request.path})),
        })
        .await;
        assert_eq!(post(&sink, "/x", "").await, (429, "slow down".into()));
        let (status, body) = post(&sink, "/y", "").await;
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"path":"/y"}"#);
    }
}
