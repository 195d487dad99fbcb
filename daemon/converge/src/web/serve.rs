//! The HTTP server: the router on hyper's HTTP/1 connections, with the two
//! deadlines `axum::serve` does not offer, so a slow or stalled client
//! cannot hold a connection (and its task and buffers) for long:
//! - `server.header_read_timeout`: a request head (request line and
//!   headers) must arrive whole within it, or the connection is closed;
//!   hyper applies it to every head, the first and each keep-alive one, so
//!   it is also how long an idle keep-alive connection stays open;
//! - `server.body_read_timeout`: a body must arrive whole within it after
//!   its head; reading it later fails, and intake answers 408 and closes.
//!
//! And two bounds on what many clients together can hold, so memory stays
//! bounded under a flood of stalled senders:
//! - `server.max_connections`: past it, a new connection is answered 503
//!   (`Retry-After: 1`) and closed at once;
//! - `server.max_body_bytes_in_flight`: the bytes of every request body
//!   being received, together; a body that would go past it fails, and
//!   intake answers 503 and closes its connection.
//!
//! Shutdown stops accepting, lets each connection finish the request it is
//! in (bounded by the same deadlines), and returns when all have closed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub max_connections: usize,
    pub body_bytes_in_flight: usize,
}

/// What a connection past `server.max_connections` is told before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 95\r\nConnection: close\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"too many open connections (server.max_connections)\"}}";

/// Serves `router` on `listener` until `shutdown`, then waits for the open
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let body_budget = Arc::new(Semaphore::new(limits.body_bytes_in_flight));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(held) = open.clone().try_acquire_owned() else {
            metrics.connections_refused.inc();
            connections.spawn(refuse(stream));
            continue;
        };
        let service = WithBodyDeadline {
            router: router.clone(),
            body_read: limits.body_read,
            budget: body_budget.clone(),
        };
        let (shutdown, metrics) = (shutdown.clone(), metrics.clone());
        connections.spawn(async move {
            let _held = held;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            match result {
                // A slow head, or an idle keep-alive connection: hyper
                // does not tell them apart.
                Err(e) if e.is_timeout() => {
                    metrics.connections_timed_out.inc();
                }
                Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
                Ok(()) => {}
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Answers a connection past the cap 503 and closes it, without reading
/// its request: a stalled client cannot hold this either.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(TOO_MANY_CONNECTIONS),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// The router, with each request's body under its deadline and the
/// shared byte budget.
#[derive(Clone)]
struct WithBodyDeadline {
    router: Router,
    body_read: Duration,
    budget: Arc<Semaphore>,
}

impl hyper::service::Service<Request<Incoming>> for WithBodyDeadline {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let deadline = tokio::time::Instant::now() + self.body_read;
        let budget = self.budget.clone();
        let request = request.map(|body| Body::new(DeadlineBody::new(body, deadline, budget)));
        let service = TowerToHyperService::new(self.router.clone());
        Box::pin(async move { hyper::service::Service::call(&service, request).await })
    }
}

/// Reading the body past its deadline fails with this.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within server.body_read_timeout")]
pub struct BodyTimedOut;

/// Reading a body that would take the bodies being received past
/// `server.max_body_bytes_in_flight` fails with this.
#[derive(Debug, thiserror::Error)]
#[error(
    "too many request bytes are arriving at once (server.max_body_bytes_in_flight); try again shortly"
)]
pub struct OverBudget;

/// A body that fails once its deadline passes, or when its bytes would
/// take the shared budget past its size; the bytes it took are given back
/// when it is dropped (read whole, or abandoned).
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    budget: Arc<Semaphore>,
    taken: Option<OwnedSemaphorePermit>,
}

impl DeadlineBody {
    fn new(
        inner: Incoming,
        deadline: tokio::time::Instant,
        budget: Arc<Semaphore>,
    ) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            budget,
            taken: None,
        }
    }

    /// Takes `bytes` from the budget, or says it is spent.
    fn take(&mut self, bytes: usize) -> Result<(), OverBudget> {
        let bytes = u32::try_from(bytes).map_err(|_| OverBudget)?;
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| OverBudget)?;
        match &mut self.taken {
            Some(taken) => taken.merge(permit),
            None => self.taken = Some(permit),
        }
        Ok(())
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if let Some(Ok(frame)) = &frame
                && let Some(data) = frame.data_ref()
                && let Err(e) = self.take(data.len())
            {
                return Poll::Ready(Some(Err(e.into())));
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether reading a body failed on its deadline (rather than its size).
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<BodyTimedOut>(error)
}

/// Whether reading a body failed on the shared byte budget.
pub fn over_budget(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<OverBudget>(error)
}

fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}
