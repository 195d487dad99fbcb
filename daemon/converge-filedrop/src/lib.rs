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

/// Reads `bytes` as a dropped file of `format` and builds its events the
/// way [`take_file`] does, in memory and without a sink: the rows' events,
/// the bad rows, and the error that ended the reading early, if any. For
/// tools and fuzzing; the daemon takes files with [`run`].
pub fn read_bytes(
    config: &DropConfig,
    format: Format,
    bytes: &[u8],
) -> (Vec<converge_model::Event>, Vec<RowError>, Option<String>) {
    use sha2::Digest as _;
    let context = events::FileContext {
        source: config.source(),
        format,
        sha256: hex::encode(sha2::Sha256::digest(bytes)),
        mtime: None,
    };
    let limits = rows::Limits {
        max_row_bytes: config.max_row_bytes,
        csv_delimiter: config.csv_delimiter,
    };
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    let ended = rows::read_rows(format, bytes, limits, &mut |row| {
        let at = row.at;
        match row
            .fields
            .and_then(|fields| events::build_event(config, &context, at, fields))
        {
            Ok(event) => good.push(event),
            Err(reason) => bad.push(RowError { at, reason }),
        }
        Ok(())
    });
    let file_error = match ended {
        Err(rows::ReadError::Format(problem)) => Some(problem),
        Err(rows::ReadError::Io(e)) => Some(e.to_string()),
        Ok(()) | Err(rows::ReadError::Stopped) => None,
    };
    (good, bad, file_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bytes_builds_the_events_and_names_the_bad_rows() {
        let raw = RawDrop {
            event_type: Some("brief.imported".into()),
            subject: Some("campaign/{campaign_id}".into()),
            ..RawDrop::new("briefs", "drops")
        };
        let config = validate(raw, "file_drops[0]", &|dir: &std::path::Path| {
            dir.to_path_buf()
        })
        .unwrap();
        let csv = b"campaign_id,owner\nspring,lea\n,max\n";
        let (events, bad, ended) = read_bytes(&config, Format::Csv, csv);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].subject.as_deref(), Some("campaign/spring"));
        assert_eq!(events[0].source, "converge-filedrop/briefs");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].at, Position::Line(3));
        assert_eq!(ended, None);
        let (events, _, ended) =
            read_bytes(&config, Format::Json, b"[{\"campaign_id\": \"a\"}, nope");
        assert_eq!(events.len(), 1);
        assert!(ended.is_some());
    }
}
