//! File drops: a watched folder where operators (or their tools) drop exported
//! CSV, JSON and NDJSON files (briefs, channel schedules, asset lists), and
//! each row becomes a converge event appended to the journal.
//!
//! This crate owns the folder protocol (write under a temporary name, then
//! rename; files are taken once they settle, then moved to `processed/` or
//! `failed/` with an error report), the streaming readers, and how a row
//! becomes an event with a stable id, so the same file dropped twice, or read
//! again after a restart, appends nothing new. It knows nothing of the
//! journal: events go to an [`EventSink`]. The protocol for users is in
//! `docs/file-drops.md`.

mod config;
mod events;
mod inbox;
mod rows;
mod sink;
mod take;
mod watch;

pub use config::{DropConfig, Format, RawDrop, SOURCE_PREFIX, Template, validate, validate_drops};
pub use rows::Position;
pub use sink::{EventSink, SinkError};
pub use take::{FileReport, MAX_LISTED_ERRORS, Outcome, RowError, TakeError, take_file};
pub use watch::{RunError, run};

/// Runs blocking file work off the async threads. `None` when the runtime is
/// shutting down and cancelled it; a panic in `f` is re-raised here.
async fn unblock<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Some(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}
