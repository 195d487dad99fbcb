//! The per-call store data: what a guest's imports can reach, and what the
//! host records about the call while it runs.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::converge::plugin::host::{self, Level};
use crate::bindings::converge::plugin::types;
use crate::config::{Grants, PluginLimits};

/// Longest log line kept; the rest is cut with a marker.
const MAX_LOG_LINE_BYTES: usize = 4096;

/// Store data of one instance: built with its store, reset by
/// `Sandbox::prepare` before each call of a warm instance, dropped with it.
pub(crate) struct HostState {
    /// WASI with nothing granted: no env, args, preopens, sockets; stdio
    /// captured into `stdout`/`stderr`.
    pub(crate) wasi: WasiCtx,
    /// WASI resources (streams, pollables) the guest holds.
    pub(crate) table: ResourceTable,
    /// Memory and instance limits; records whether a grow was refused.
    pub(crate) limiter: Limiter,
    /// Compute budget left, in epoch ticks.
    pub(crate) cpu_ticks_left: u64,
    /// Set by the epoch callback when the budget ran out, so the resulting
    /// trap can be reported as `CpuLimit` rather than a generic trap.
    pub(crate) cpu_exhausted: bool,
    pub(crate) call: CallContext,
}

/// What the host imports need to serve one call.
pub(crate) struct CallContext {
    pub(crate) plugin: Arc<str>,
    pub(crate) action_id: String,
    pub(crate) config_json: String,
    pub(crate) grants: Arc<Grants>,
    pub(crate) limits: PluginLimits,
    pub(crate) http: crate::client::HttpClient,
    pub(crate) dry_run: Option<crate::DryRun>,
    pub(crate) http_requests: u32,
    pub(crate) log_lines: u32,
    pub(crate) log_lines_dropped: u32,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let call = &mut self.call;
        if call.log_lines >= call.limits.max_log_lines {
            call.log_lines_dropped += 1;
            return;
        }
        call.log_lines += 1;
        let message = call.grants.redact(message);
        let message = truncate_line(&message);
        // Escaped so a plugin cannot forge extra log lines with newlines.
        let message = message.escape_debug();
        let plugin = &*call.plugin;
        let action_id = call.action_id.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, action_id, "{message}"),
            Level::Debug => tracing::debug!(plugin, action_id, "{message}"),
            Level::Info => tracing::info!(plugin, action_id, "{message}"),
            Level::Warn => tracing::warn!(plugin, action_id, "{message}"),
            Level::Error => tracing::error!(plugin, action_id, "{message}"),
        }
    }

    fn config_json(&mut self) -> String {
        self.call.config_json.clone()
    }
}

fn truncate_line(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_LOG_LINE_BYTES {
        return message.into();
    }
    let mut end = MAX_LOG_LINE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes cut)", &message[..end], message.len() - end).into()
}

/// `StoreLimits` plus a record of whether a grow was refused, so a trap
/// caused by the memory limit is reported as `MemoryLimit` without matching
/// on error strings.
pub(crate) struct Limiter {
    pub(crate) inner: StoreLimits,
    pub(crate) memory_denied: bool,
    /// The instance's linear memories, in bytes (they never shrink).
    pub(crate) memory_bytes: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let result = self.inner.memory_growing(current, desired, maximum);
        match result {
            Ok(true) => self.memory_bytes += desired.saturating_sub(current),
            _ => self.memory_denied = true,
        }
        result
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_denied = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A guest's stdout or stderr, kept in memory up to a cap. Output past the
/// cap is dropped silently: a chatty plugin must not fail because of it, and
/// nothing it prints may reach the daemon's own stdout.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    buffer: Arc<Mutex<Captured>>,
}

struct Captured {
    bytes: BytesMut,
    capacity: usize,
    dropped: usize,
}

impl CapturedOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        CapturedOutput {
            buffer: Arc::new(Mutex::new(Captured {
                bytes: BytesMut::new(),
                capacity,
                dropped: 0,
            })),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = buf.capacity - buf.bytes.len();
        let kept = data.len().min(room);
        buf.bytes.extend_from_slice(&data[..kept]);
        buf.dropped += data.len() - kept;
    }

    /// Empties the buffer, for an instance's next call.
    pub(crate) fn clear(&self) {
        let mut buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buf.bytes.clear();
        buf.dropped = 0;
    }

    /// What was captured, lossily decoded, and how many bytes were dropped.
    pub(crate) fn contents(&self) -> (String, usize) {
        let buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        (
            String::from_utf8_lossy(&buf.bytes).into_owned(),
            buf.dropped,
        )
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_keeps_the_first_bytes_and_counts_the_rest() {
        let out = CapturedOutput::new(4);
        out.push(b"ab");
        out.push(b"cdef");
        assert_eq!(out.contents(), ("abcd".to_string(), 2));
    }

    #[test]
    fn long_log_lines_are_cut_on_a_char_boundary() {
        let line = "é".repeat(MAX_LOG_LINE_BYTES);
        let cut = truncate_line(&line);
        assert!(cut.len() < line.len());
        assert!(cut.ends_with("bytes cut)"));
    }
}
