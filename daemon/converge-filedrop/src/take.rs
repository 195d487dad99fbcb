//! Taking one file: hash it, stream its rows to the sink chunk by chunk, then
//! move it to `processed/` or `failed/` with an error report beside it.
//!
//! The file leaves the inbox only after its last chunk was appended, so an
//! interruption anywhere before that leaves it to be read again from the
//! start; the ids are the same the second time and the journal drops the
//! rows it already has.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use converge_model::Event;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{DropConfig, Format};
use crate::events::{FileContext, build_event};
use crate::inbox::{self, FAILED, Fingerprint, Inbox, PROCESSED, REPORT_SUFFIX};
use crate::rows::{Limits, Position, RawRow, ReadError, Stopped, read_rows};
use crate::sink::{EventSink, SinkError};

/// At most this many bad rows are named in a report; the rest are counted.
pub const MAX_LISTED_ERRORS: usize = 1000;

/// The start of a file that decides whether it looks like text at all.
const SNIFF_BYTES: usize = 8192;

/// Where a taken file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// At least one event was taken, or the file was empty.
    Processed,
    /// Nothing could be taken: unreadable, not the format, or only bad rows.
    Failed,
}

/// A bad row: where it is and why it was not taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    #[serde(flatten)]
    pub at: Position,
    pub reason: String,
}

/// What happened to one file; also the content of its error report.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The file's name in the inbox.
    pub file: String,
    pub outcome: Outcome,
    /// Where the file is now.
    #[serde(skip)]
    pub moved_to: PathBuf,
    /// The error report written beside it, when anything was wrong.
    #[serde(skip)]
    pub report: Option<PathBuf>,
    pub sha256: String,
    /// Events appended to the sink.
    pub events: u64,
    pub bad_rows: u64,
    /// Appends made (each at most `chunk_rows` events).
    pub chunks: u64,
    /// What made the file, or its rest, unreadable.
    pub file_error: Option<String>,
    /// The first [`MAX_LISTED_ERRORS`] bad rows.
    pub errors: Vec<RowError>,
    pub errors_not_listed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// Not a file this drop takes (symlink, folder, outside the folder,
    /// temporary name, unknown format); it is left alone.
    #[error("`{path}` is not taken: {reason}")]
    Ignored { path: PathBuf, reason: &'static str },
    /// The file disappeared before it could be taken.
    #[error("`{0}` is gone")]
    Vanished(PathBuf),
    /// The file changed while it was read; it stays in the inbox and is taken
    /// once it settles again.
    #[error("`{0}` changed while it was read; it is left in place")]
    Changed(PathBuf),
    /// An append failed; the file stays in the inbox and reading it again is safe.
    #[error("`{path}`: {source}")]
    Sink {
        path: PathBuf,
        #[source]
        source: SinkError,
    },
    /// Reading or moving failed; the file stays in the inbox.
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Takes one file of the drop's folder now, without waiting for it to settle
/// (that is [`crate::run`]'s job): every row becomes an event appended to
/// `sink` in chunks of `chunk_rows`, then the file moves to `processed/` or
/// `failed/`. Dropping the returned future (at shutdown) abandons the file
/// where it is: it stays in the inbox and is read again from its first row
/// next time.
pub async fn take_file(
    config: &DropConfig,
    path: &Path,
    sink: &impl EventSink,
) -> Result<FileReport, TakeError> {
    let located = {
        let (dir, path, forced) = (config.dir.clone(), path.to_path_buf(), config.format);
        blocking(move || locate(&dir, &path, forced)).await?
    };
    let Located {
        inbox,
        name,
        format,
        before,
    } = located;
    let path = inbox.dir.join(&name);

    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(TakeError::Vanished(path)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let problem = format!("the file cannot be read: {e}");
            return finish(config, inbox, name, before, Taken::unreadable(problem)).await;
        }
        Err(e) => return Err(TakeError::Io { path, source: e }),
    };

    let (tx, mut rx) = mpsc::channel::<Chunk>(1);
    let reader = {
        let config = config.clone();
        let mtime = before
            .modified
            .map(|t| DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::AutoSi, true));
        tokio::task::spawn_blocking(move || read_file(file, &config, format, before, mtime, &tx))
    };

    let mut taken = Taken::default();
    while let Some(chunk) = rx.recv().await {
        taken.note_bad_rows(chunk.bad);
        if chunk.events.is_empty() {
            continue;
        }
        let count = chunk.events.len() as u64;
        sink.append(chunk.events)
            .await
            .map_err(|source| TakeError::Sink {
                path: path.clone(),
                source,
            })?;
        taken.events += count;
        taken.chunks += 1;
    }
    let summary = match reader.await {
        Ok(summary) => summary,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => return Err(shutting_down()),
    };
    match summary {
        Ok(summary) => {
            taken.sha256 = summary.sha256;
            taken.file_error = summary.file_error;
        }
        Err(ReadFailure::Changed) => return Err(TakeError::Changed(path)),
        Err(ReadFailure::Io(source)) => return Err(TakeError::Io { path, source }),
        // The receiver was open until the reader finished, so this does not
        // happen; were it to, the file simply stays to be taken again.
        Err(ReadFailure::Stopped) => return Err(TakeError::Changed(path)),
    }
    finish(config, inbox, name, before, taken).await
}

struct Located {
    inbox: Inbox,
    name: String,
    format: Format,
    before: Fingerprint,
}

/// Checks that `path` names a regular file directly inside the folder,
/// whatever spelling the caller used.
fn locate(dir: &Path, path: &Path, forced: Option<Format>) -> Result<Located, TakeError> {
    let inbox = Inbox::open(dir).map_err(|source| TakeError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ignored = |reason| TakeError::Ignored {
        path: path.to_path_buf(),
        reason,
    };
    let (Some(parent), Some(file_name)) = (path.parent(), path.file_name()) else {
        return Err(ignored("not a file inside the drop folder"));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if fs::canonicalize(parent).ok().as_deref() != Some(inbox.dir.as_path()) {
        return Err(ignored("not a file directly inside the drop folder"));
    }
    let full = inbox.dir.join(file_name);
    let meta = match fs::symlink_metadata(&full) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(TakeError::Vanished(full)),
        Err(source) => return Err(TakeError::Io { path: full, source }),
    };
    let (name, format) = inbox::classify(file_name, meta.file_type(), forced)
        .map_err(|skip| ignored(skip.reason()))?;
    Ok(Located {
        inbox,
        name,
        format,
        before: Fingerprint::of(&meta),
    })
}

/// What the reading thread hands over: at most `chunk_rows` events and at
/// most `chunk_rows` bad rows.
#[derive(Default)]
struct Chunk {
    events: Vec<Event>,
    bad: Vec<RowError>,
}

struct ReadSummary {
    sha256: String,
    file_error: Option<String>,
}

enum ReadFailure {
    Changed,
    Io(io::Error),
    Stopped,
}

impl From<io::Error> for ReadFailure {
    fn from(e: io::Error) -> Self {
        ReadFailure::Io(e)
    }
}

/// The blocking half: a first pass hashes the whole file (the ids need the
/// hash before the first row), the second streams the rows while hashing
/// again, so a file that changed in between is noticed.
fn read_file(
    mut file: File,
    config: &DropConfig,
    format: Format,
    before: Fingerprint,
    mtime: Option<String>,
    tx: &mpsc::Sender<Chunk>,
) -> Result<ReadSummary, ReadFailure> {
    // The name could have been swapped between the stat and the open.
    if Fingerprint::of(&file.metadata()?) != before {
        return Err(ReadFailure::Changed);
    }
    let (sha256, head_problem) = hash_file(&mut file, format, tx)?;
    if let Some(problem) = head_problem {
        return Ok(ReadSummary {
            sha256,
            file_error: Some(problem),
        });
    }
    file.seek(SeekFrom::Start(0))?;
    let context = FileContext {
        source: config.source(),
        format,
        sha256: sha256.clone(),
        mtime,
    };
    let limits = Limits {
        max_row_bytes: config.max_row_bytes,
        csv_delimiter: config.csv_delimiter,
    };
    let mut hashing = Hashing {
        inner: file,
        hasher: Sha256::new(),
    };
    let mut chunk = Chunk::default();
    let mut emit = |row: RawRow| -> Result<(), Stopped> {
        let at = row.at;
        match row
            .fields
            .and_then(|fields| build_event(config, &context, at, fields))
        {
            Ok(event) => chunk.events.push(event),
            Err(reason) => chunk.bad.push(RowError { at, reason }),
        }
        if chunk.events.len() >= config.chunk_rows || chunk.bad.len() >= config.chunk_rows {
            tx.blocking_send(std::mem::take(&mut chunk))
                .map_err(|_| Stopped)?;
        }
        Ok(())
    };
    let file_error = match read_rows(format, &mut hashing, limits, &mut emit) {
        Ok(()) => None,
        Err(ReadError::Format(problem)) => Some(problem),
        Err(ReadError::Io(e)) => return Err(ReadFailure::Io(e)),
        Err(ReadError::Stopped) => return Err(ReadFailure::Stopped),
    };
    if !chunk.events.is_empty() || !chunk.bad.is_empty() {
        tx.blocking_send(chunk).map_err(|_| ReadFailure::Stopped)?;
    }
    // A reader that stopped early left bytes unhashed.
    io::copy(&mut hashing, &mut io::sink())?;
    if hex::encode(hashing.hasher.finalize()) != sha256 {
        return Err(ReadFailure::Changed);
    }
    Ok(ReadSummary { sha256, file_error })
}

fn hash_file(
    file: &mut File,
    format: Format,
    tx: &mpsc::Sender<Chunk>,
) -> Result<(String, Option<String>), ReadFailure> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if head.len() < SNIFF_BYTES {
            let take = n.min(SNIFF_BYTES - head.len());
            head.extend_from_slice(&buffer[..take]);
        }
        hasher.update(&buffer[..n]);
        if tx.is_closed() {
            return Err(ReadFailure::Stopped);
        }
    }
    Ok((hex::encode(hasher.finalize()), sniff(&head, format)))
}

/// Exports are text: a NUL byte near the start means a binary file (a
/// spreadsheet saved as .xlsx and renamed, an image) or UTF-16 text.
fn sniff(head: &[u8], format: Format) -> Option<String> {
    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        return Some("the file is UTF-16 text; export it as UTF-8".into());
    }
    let offset = head.iter().position(|&b| b == 0)?;
    Some(format!(
        "the file looks binary (a NUL byte at offset {offset}), not {} text",
        format.to_string().to_uppercase()
    ))
}

struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What the async half learnt while the file was read.
#[derive(Default)]
struct Taken {
    sha256: String,
    events: u64,
    chunks: u64,
    bad_rows: u64,
    errors: Vec<RowError>,
    file_error: Option<String>,
}

impl Taken {
    fn unreadable(problem: String) -> Taken {
        Taken {
            file_error: Some(problem),
            ..Taken::default()
        }
    }

    fn note_bad_rows(&mut self, bad: Vec<RowError>) {
        self.bad_rows += bad.len() as u64;
        let room = MAX_LISTED_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(bad.into_iter().take(room));
    }
}

/// Checks the file did not change, then moves it out and writes its report.
async fn finish(
    config: &DropConfig,
    inbox: Inbox,
    name: String,
    before: Fingerprint,
    taken: Taken,
) -> Result<FileReport, TakeError> {
    let drop_name = config.name.clone();
    let report = blocking(move || {
        let path = inbox.dir.join(&name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if Fingerprint::of(&meta) == before => {}
            Ok(_) => return Err(TakeError::Changed(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(TakeError::Vanished(path)),
            Err(source) => return Err(TakeError::Io { path, source }),
        }
        let outcome = if taken.events == 0 && (taken.bad_rows > 0 || taken.file_error.is_some()) {
            Outcome::Failed
        } else {
            Outcome::Processed
        };
        let folder = match outcome {
            Outcome::Processed => PROCESSED,
            Outcome::Failed => FAILED,
        };
        let moved_to = inbox
            .move_out(&name, folder)
            .map_err(|source| TakeError::Io {
                path: path.clone(),
                source,
            })?;
        let listed = taken.errors.len() as u64;
        let mut report = FileReport {
            file: name,
            outcome,
            moved_to,
            report: None,
            sha256: taken.sha256,
            events: taken.events,
            bad_rows: taken.bad_rows,
            chunks: taken.chunks,
            file_error: taken.file_error,
            errors: taken.errors,
            errors_not_listed: taken.bad_rows - listed,
        };
        if report.bad_rows > 0 || report.file_error.is_some() {
            let mut report_path = report.moved_to.clone().into_os_string();
            report_path.push(REPORT_SUFFIX);
            let report_path = PathBuf::from(report_path);
            // The file is already out of the inbox: a report that cannot be
            // written is logged, not a reason to take the file again.
            match write_report(&report_path, &report) {
                Ok(()) => report.report = Some(report_path),
                Err(e) => tracing::error!(
                    report = %report_path.display(),
                    error = %e,
                    "cannot write the error report"
                ),
            }
        }
        Ok(report)
    })
    .await?;
    log(&drop_name, &report);
    Ok(report)
}

fn write_report(path: &Path, report: &FileReport) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(report).map_err(io::Error::other)?;
    text.push(b'\n');
    let mut file = File::create_new(path)?;
    io::Write::write_all(&mut file, &text)?;
    file.sync_all()
}

fn log(drop_name: &str, report: &FileReport) {
    let moved_to = report.moved_to.display();
    if report.bad_rows > 0 || report.file_error.is_some() {
        let report_path = report
            .report
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        tracing::warn!(
            drop = drop_name,
            file = report.file,
            outcome = ?report.outcome,
            events = report.events,
            bad_rows = report.bad_rows,
            file_error = report.file_error.as_deref().unwrap_or(""),
            moved_to = %moved_to,
            report = report_path,
            "file taken with errors"
        );
    } else {
        tracing::info!(
            drop = drop_name,
            file = report.file,
            events = report.events,
            chunks = report.chunks,
            moved_to = %moved_to,
            "file taken"
        );
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TakeError> + Send + 'static,
) -> Result<T, TakeError> {
    crate::unblock(f)
        .await
        .unwrap_or_else(|| Err(shutting_down()))
}

fn shutting_down() -> TakeError {
    TakeError::Io {
        path: PathBuf::new(),
        source: io::Error::other("the runtime is shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_utf16_heads_are_named() {
        assert_eq!(sniff(b"a,b\n1,2\n", Format::Csv), None);
        assert_eq!(
            sniff(b"PK\x03\x04\x00\x00", Format::Csv).unwrap(),
            "the file looks binary (a NUL byte at offset 4), not CSV text"
        );
        assert!(
            sniff(b"\xFF\xFEa\x00", Format::Json)
                .unwrap()
                .contains("UTF-16")
        );
    }
}
