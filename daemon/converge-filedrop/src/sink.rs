//! Where a drop's events go: the daemon's journal, or a test's memory.

use std::future::Future;
use std::sync::Arc;

use converge_model::Event;

/// Appends events durably. [`crate::take_file`] waits for each append before
/// reading on, so at most a few chunks of a file are in memory at once, and a
/// file leaves the inbox only after its last chunk was appended.
///
/// Appending must be idempotent on `(source, id)`: a file interrupted midway
/// is read again from its first row, with the same ids.
pub trait EventSink: Send + Sync {
    fn append(&self, events: Vec<Event>) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl<S: EventSink> EventSink for Arc<S> {
    fn append(&self, events: Vec<Event>) -> impl Future<Output = Result<(), SinkError>> + Send {
        S::append(self, events)
    }
}

impl<S: EventSink> EventSink for &S {
    fn append(&self, events: Vec<Event>) -> impl Future<Output = Result<(), SinkError>> + Send {
        S::append(self, events)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SinkError {
    /// The sink is shutting down: [`crate::run`] stops.
    #[error("the event sink is closed")]
    Closed,
    /// This append failed; the file stays in the inbox and is read again later.
    #[error("appending events failed: {0}")]
    Failed(String),
}
