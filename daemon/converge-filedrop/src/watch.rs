//! Watching a drop's folder: notice files (file watcher, plus a periodic
//! rescan for what it misses), wait until each has settled, and take them.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::DropConfig;
use crate::inbox::{Fingerprint, Inbox, Seen};
use crate::sink::{EventSink, SinkError};
use crate::take::{TakeError, take_file};

/// After a watcher wake-up, wait this long so a burst of writes costs one scan.
const COALESCE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The folder is missing, not a folder, or `processed/`/`failed/` cannot
    /// be made in it.
    #[error("file drop `{name}`: folder `{dir}`: {source}")]
    Folder {
        name: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Watches the drop's folder and takes every file that settles, until
/// `shutdown` is cancelled or the sink reports [`SinkError::Closed`]. A file
/// whose take fails (the sink refused a chunk, an I/O error) stays in the
/// folder and is tried again after `rescan`. Returns an error only when the
/// folder cannot be used at start.
pub async fn run(
    config: DropConfig,
    sink: impl EventSink,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let dir = config.dir.clone();
    let Some(opened) = crate::unblock(move || Inbox::open(&dir)).await else {
        return Ok(());
    };
    let inbox = opened.map_err(|source| RunError::Folder {
        name: config.name.clone(),
        dir: config.dir.clone(),
        source,
    })?;
    let wake = Arc::new(Notify::new());
    // Kept alive for the whole loop: dropping it stops the watching.
    let _watcher = watch(&inbox.dir, &wake, &config);
    tracing::info!(
        drop = config.name,
        dir = %inbox.dir.display(),
        settle = %humantime::format_duration(config.settle),
        rescan = %humantime::format_duration(config.rescan),
        "watching file drop"
    );

    let mut tracker = Tracker::new(config.settle, config.settle_warn_after);
    let mut told: HashSet<OsString> = HashSet::new();
    loop {
        let scanned = {
            let (inbox, forced) = (inbox.clone(), config.format);
            crate::unblock(move || inbox.scan(forced)).await
        };
        let Some(scanned) = scanned else {
            return Ok(());
        };
        let now = Instant::now();
        match scanned {
            Ok(scan) => {
                tracker.observe(scan.files, now);
                // Told once per name, for as long as the name stays there.
                let present: HashSet<&OsString> = scan.skipped.iter().map(|(n, _)| n).collect();
                told.retain(|name| present.contains(name));
                for (name, skip) in &scan.skipped {
                    if skip.is_surprising() && told.insert(name.clone()) {
                        tracing::warn!(
                            drop = config.name,
                            file = %Path::new(name).display(),
                            reason = skip.reason(),
                            "file left in the drop folder, not taken"
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(
                drop = config.name,
                dir = %inbox.dir.display(),
                error = %e,
                "cannot list the drop folder"
            ),
        }
        for name in tracker.overdue(now) {
            tracing::warn!(
                drop = config.name,
                file = name,
                waited = %humantime::format_duration(config.settle_warn_after),
                "file is still changing and is not taken until its size and modification \
                 time stay unchanged for the settle period; write it under a temporary name \
                 and rename it when complete"
            );
        }

        for name in tracker.ready(now) {
            let path = inbox.dir.join(&name);
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                result = take_file(&config, &path, &sink) => result,
            };
            match result {
                Ok(_) | Err(TakeError::Vanished(_) | TakeError::Ignored { .. }) => {
                    tracker.forget(&name);
                }
                Err(TakeError::Changed(_)) => tracker.unsettle(&name, Instant::now()),
                Err(TakeError::Sink {
                    source: SinkError::Closed,
                    ..
                }) => return Ok(()),
                Err(e) => {
                    tracing::warn!(
                        drop = config.name,
                        error = %e,
                        retry_in = %humantime::format_duration(config.rescan),
                        "file not taken; it stays in the folder"
                    );
                    tracker.retry_at(&name, Instant::now() + config.rescan);
                }
            }
        }

        let now = Instant::now();
        let wait = tracker
            .next_due()
            .map_or(config.rescan, |due| due.saturating_duration_since(now))
            .min(config.rescan);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = wake.notified() => {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(COALESCE) => {}
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The watcher only wakes the loop; the scan decides. Without one (inotify
/// limits, network file systems) the periodic rescan still finds every file.
fn watch(dir: &Path, wake: &Arc<Notify>, config: &DropConfig) -> Option<RecommendedWatcher> {
    let wake = Arc::clone(wake);
    let started = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            wake.notify_one();
        }
    })
    .and_then(|mut watcher| {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    match started {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(
                drop = config.name,
                error = %e,
                rescan = %humantime::format_duration(config.rescan),
                "no file watcher for the drop folder; relying on the periodic rescan"
            );
            None
        }
    }
}

/// Which files have settled: a file is ready once two observations at least
/// `settle` apart found the same size, modification time and inode.
#[derive(Debug)]
pub(crate) struct Tracker {
    settle: Duration,
    warn_after: Duration,
    files: HashMap<String, Tracked>,
}

#[derive(Debug)]
struct Tracked {
    fingerprint: Fingerprint,
    /// The fingerprint has been this since then.
    stable_since: Instant,
    first_seen: Instant,
    /// The never-settles warning is given once.
    warned: bool,
    /// After a failed take: not before then.
    not_before: Option<Instant>,
}

impl Tracker {
    pub fn new(settle: Duration, warn_after: Duration) -> Tracker {
        Tracker {
            settle,
            warn_after,
            files: HashMap::new(),
        }
    }

    /// Records one scan: new files start settling, changed ones start again,
    /// gone ones are forgotten.
    pub fn observe(&mut self, seen: Vec<Seen>, now: Instant) {
        let mut present = HashSet::with_capacity(seen.len());
        for file in seen {
            match self.files.get_mut(&file.name) {
                Some(tracked) if tracked.fingerprint == file.fingerprint => {}
                Some(tracked) => {
                    tracked.fingerprint = file.fingerprint;
                    tracked.stable_since = now;
                }
                None => {
                    self.files.insert(
                        file.name.clone(),
                        Tracked {
                            fingerprint: file.fingerprint,
                            stable_since: now,
                            first_seen: now,
                            warned: false,
                            not_before: None,
                        },
                    );
                }
            }
            present.insert(file.name);
        }
        self.files.retain(|name, _| present.contains(name));
    }

    fn due(&self, tracked: &Tracked) -> Instant {
        let settled = tracked.stable_since + self.settle;
        tracked.not_before.map_or(settled, |t| t.max(settled))
    }

    /// Files to take now, oldest first.
    pub fn ready(&self, now: Instant) -> Vec<String> {
        let mut ready: Vec<(&Instant, &String)> = self
            .files
            .iter()
            .filter(|(_, t)| self.due(t) <= now)
            .map(|(name, t)| (&t.first_seen, name))
            .collect();
        ready.sort();
        ready.into_iter().map(|(_, name)| name.clone()).collect()
    }

    /// When the next file becomes ready, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.files.values().map(|t| self.due(t)).min()
    }

    /// Files still changing `warn_after` after they were first seen, each once.
    pub fn overdue(&mut self, now: Instant) -> Vec<String> {
        let mut overdue = Vec::new();
        for (name, t) in &mut self.files {
            let changing = now < t.stable_since + self.settle;
            if !t.warned && changing && now.duration_since(t.first_seen) >= self.warn_after {
                t.warned = true;
                overdue.push(name.clone());
            }
        }
        overdue.sort();
        overdue
    }

    pub fn forget(&mut self, name: &str) {
        self.files.remove(name);
    }

    pub fn unsettle(&mut self, name: &str, now: Instant) {
        if let Some(t) = self.files.get_mut(name) {
            t.stable_since = now;
        }
    }

    pub fn retry_at(&mut self, name: &str, at: Instant) {
        if let Some(t) = self.files.get_mut(name) {
            t.not_before = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Real fingerprints of a file that grows by one byte per call.
    struct Growing {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Growing {
        fn new() -> Growing {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.csv");
            fs::write(&path, "a\n").unwrap();
            Growing { _dir: dir, path }
        }

        fn seen(&self) -> Vec<Seen> {
            vec![Seen {
                name: "a.csv".into(),
                fingerprint: Fingerprint::of(&fs::metadata(&self.path).unwrap()),
            }]
        }

        fn grow(&self) {
            let mut text = fs::read(&self.path).unwrap();
            text.extend_from_slice(b"1\n");
            fs::write(&self.path, text).unwrap();
        }
    }

    const SETTLE: Duration = Duration::from_secs(2);
    const WARN: Duration = Duration::from_secs(60);

    #[test]
    fn a_file_is_ready_only_after_it_stays_unchanged_for_the_settle_period() {
        let file = Growing::new();
        let mut tracker = Tracker::new(SETTLE, WARN);
        let t0 = Instant::now();
        tracker.observe(file.seen(), t0);
        assert!(tracker.ready(t0).is_empty());
        assert_eq!(tracker.next_due(), Some(t0 + SETTLE));
        tracker.observe(file.seen(), t0 + SETTLE / 2);
        assert!(tracker.ready(t0 + SETTLE / 2).is_empty());
        tracker.observe(file.seen(), t0 + SETTLE);
        assert_eq!(tracker.ready(t0 + SETTLE), ["a.csv"]);
    }

    #[test]
    fn a_growing_file_is_never_ready_and_is_reported_once() {
        let file = Growing::new();
        let mut tracker = Tracker::new(SETTLE, WARN);
        let t0 = Instant::now();
        let mut warnings = 0;
        for step in 0..100u32 {
            let now = t0 + Duration::from_secs(1) * step;
            file.grow();
            tracker.observe(file.seen(), now);
            assert!(tracker.ready(now).is_empty(), "step {step}");
            warnings += tracker.overdue(now).len();
        }
        assert_eq!(warnings, 1);
        let later = t0 + Duration::from_secs(200);
        tracker.observe(file.seen(), later);
        tracker.observe(file.seen(), later + SETTLE);
        assert_eq!(tracker.ready(later + SETTLE), ["a.csv"]);
    }

    #[test]
    fn a_failed_take_waits_for_its_retry_time_and_gone_files_are_forgotten() {
        let file = Growing::new();
        let mut tracker = Tracker::new(SETTLE, WARN);
        let t0 = Instant::now();
        tracker.observe(file.seen(), t0);
        tracker.retry_at("a.csv", t0 + SETTLE * 5);
        tracker.observe(file.seen(), t0 + SETTLE * 2);
        assert!(tracker.ready(t0 + SETTLE * 2).is_empty());
        assert_eq!(tracker.ready(t0 + SETTLE * 5), ["a.csv"]);
        tracker.observe(Vec::new(), t0 + SETTLE * 6);
        assert_eq!(tracker.next_due(), None);
    }
}
