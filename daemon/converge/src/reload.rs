//! Hot reload of the rules, and the rules' shadow mode.
//!
//! [`LoadedRules`] is one compiled version of every rule file, split into
//! the live rules and the shadow rules (`rules.shadow`). The processor reads
//! the current version from a `watch` channel before each batch, so a new
//! version takes effect between events, never within one.
//!
//! The [`Reloader`] task watches the directories of the rule files
//! (`rules.watch`) and listens for SIGHUP. After a change (and 200 ms
//! without another, so an editor's several writes make one reload) it
//! recompiles every rule file. If every rule compiles, the new version
//! replaces the old one at once; if any does not, the old version keeps
//! running and the errors, each with file:line:column, are logged and kept
//! for `GET /v1/status` until a reload succeeds. Only rule files reload:
//! the config, and so the list of rule files, routes and limits, is read at
//! start.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use converge_rules::RuleSet;
use converge_store::RuleTimers;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Rules;
use crate::telemetry::Metrics;

/// Quiet time after a file change before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// One compiled version of the rule files.
pub struct LoadedRules {
    /// The rules whose decisions take effect, in the order they run.
    pub live: RuleSet,
    /// The rules of `rules.shadow`. They run after the live rules, on a
    /// scratch copy of the entity state (with the live rules' changes):
    /// their decisions are recorded with the `shadow` mark, and nothing they
    /// decide creates an action, a timer or an event, or changes the state.
    pub shadow: RuleSet,
    /// When this version was compiled (wall clock: an operator's stamp,
    /// not an input of any rule).
    pub loaded_at: DateTime<Utc>,
}

impl LoadedRules {
    /// Reads and compiles every rule file; on failure, every problem as
    /// `file:line:column: message` (or `file: message` when unreadable).
    pub fn compile(config: &Rules) -> Result<LoadedRules, Vec<String>> {
        let (live, shadow) = config
            .live_and_shadow()
            .map_err(|e| vec![format!("{e:#}")])?;
        let messages = |errors: Vec<converge_rules::CompileError>| -> Vec<String> {
            errors.iter().map(ToString::to_string).collect()
        };
        // All together first: rule names must be unique across live and shadow.
        let all = live.iter().chain(&shadow).cloned().collect();
        RuleSet::compile(all, &config.limits).map_err(messages)?;
        Ok(LoadedRules {
            live: RuleSet::compile(live, &config.limits).map_err(messages)?,
            shadow: RuleSet::compile(shadow, &config.limits).map_err(messages)?,
            loaded_at: Utc::now(),
        })
    }

    /// The hash of the rule of this name loaded now, live or shadow.
    pub fn hash_of(&self, name: &str) -> Option<&str> {
        self.live
            .rules()
            .iter()
            .chain(self.shadow.rules())
            .find(|r| r.name == name)
            .map(|r| r.hash.as_str())
    }

    /// Of pending timers counted by the rule version that made them
    /// (`Backend::pending_timers_by_rule`), those a version not loaded now
    /// made, each with whether its rule is gone (rather than edited). They
    /// fire as planned unless a person cancels them.
    pub fn stale_timers<'a>(
        &self,
        timers: &'a [RuleTimers],
    ) -> impl Iterator<Item = (&'a RuleTimers, bool)> {
        timers.iter().filter_map(|t| match self.hash_of(&t.rule) {
            Some(hash) if hash == t.rule_hash => None,
            Some(_) => Some((t, false)),
            None => Some((t, true)),
        })
    }

    /// `name@hash` of every rule, live then shadow, for the log.
    pub fn versions(&self) -> Vec<String> {
        let shadow = self
            .shadow
            .rules()
            .iter()
            .map(|r| format!("{}@{} (shadow)", r.name, r.hash));
        self.live
            .rules()
            .iter()
            .map(|r| format!("{}@{}", r.name, r.hash))
            .chain(shadow)
            .collect()
    }
}

/// How the last reload went, for `GET /v1/status`.
#[derive(Debug, Clone, Default)]
pub struct ReloadHistory {
    /// The last reload attempt and whether it succeeded; `None` before the first.
    pub last: Option<(DateTime<Utc>, bool)>,
    /// The errors of the last failed reload, until a reload succeeds.
    pub error: Option<(DateTime<Utc>, Vec<String>)>,
}

/// The current rules and their reload history, shared by the reloader
/// (which writes), the processor and the web layer (which read).
#[derive(Clone)]
pub struct RulesHandle {
    current: Arc<watch::Sender<Arc<LoadedRules>>>,
    history: Arc<Mutex<ReloadHistory>>,
}

impl RulesHandle {
    pub fn new(rules: LoadedRules) -> RulesHandle {
        RulesHandle {
            current: Arc::new(watch::Sender::new(Arc::new(rules))),
            history: Arc::default(),
        }
    }

    /// What the processor reads the current version from.
    pub fn subscribe(&self) -> watch::Receiver<Arc<LoadedRules>> {
        self.current.subscribe()
    }

    /// The rules in use and the reload history that led to them, read
    /// together: a reload swaps the rules and records its outcome under the
    /// history's lock, so reading the rules under it too never pairs a
    /// reload's outcome with the rules from before it (a status that said
    /// "reloaded" while showing the old version's hash).
    pub fn current_with_history(&self) -> (Arc<LoadedRules>, ReloadHistory) {
        let history = self.history.lock().expect("reload history");
        (self.current.borrow().clone(), history.clone())
    }

    /// Compiles the rule files again; swaps the new version in only if
    /// every rule compiled.
    pub fn reload(&self, config: &Rules, metrics: &Metrics, cause: &str) {
        let compiled = LoadedRules::compile(config);
        let now = Utc::now();
        let mut history = self.history.lock().expect("reload history");
        match compiled {
            Ok(rules) => {
                metrics.rules_reloaded(cause, &rules.versions());
                // The swap and the history's update happen under the
                // history's lock, which `current_with_history` reads under.
                self.current.send_replace(Arc::new(rules));
                history.last = Some((now, true));
                history.error = None;
            }
            Err(errors) => {
                metrics.rules_reload_failed(cause, &errors);
                history.last = Some((now, false));
                history.error = Some((now, errors));
            }
        }
    }
}

/// Reloads the rules after a rule file changes or on SIGHUP.
pub struct Reloader {
    pub rules: RulesHandle,
    pub config: Rules,
    pub metrics: Metrics,
    /// With several daemons on one database: reloads here are announced to
    /// the others (`announce`), and theirs reload here (`remote`).
    pub peers: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

impl Reloader {
    /// Starts watching and listening for SIGHUP before it returns (a SIGHUP
    /// before the handler is in place would end the process), then reloads
    /// until `stop`. A watcher that cannot start is logged, and SIGHUP still
    /// reloads.
    pub fn start(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (changed_tx, changed) = mpsc::channel(1);
        let watcher = if self.config.watch {
            match watch_files(&self.config.files, changed_tx) {
                Ok(watcher) => Some(watcher),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the rule files; reload them with SIGHUP");
                    None
                }
            }
        } else {
            None
        };
        let hangup = hangup_signal();
        tokio::spawn(self.run(watcher, changed, hangup, stop))
    }

    async fn run(
        mut self,
        _watcher: Option<notify::RecommendedWatcher>,
        mut changed: mpsc::Receiver<()>,
        mut hangup: mpsc::Receiver<()>,
        stop: CancellationToken,
    ) {
        let (announce, mut remote) = match self.peers.take() {
            Some((announce, remote)) => (Some(announce), Some(remote)),
            None => (None, None),
        };
        let from_peers = async |remote: &mut Option<mpsc::Receiver<()>>| match remote {
            Some(remote) => remote.recv().await,
            None => std::future::pending().await,
        };
        loop {
            let cause = tokio::select! {
                () = stop.cancelled() => break,
                Some(()) = changed.recv() => {
                    // Wait until the files have been quiet for a moment.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changed.recv()).await {}
                    "a rule file changed"
                }
                Some(()) = hangup.recv() => "SIGHUP",
                Some(()) = from_peers(&mut remote) => "another daemon reloaded its rules",
            };
            let ours = cause != "another daemon reloaded its rules";
            let (rules, config, metrics) = (
                self.rules.clone(),
                self.config.clone(),
                self.metrics.clone(),
            );
            // Reading files and compiling Rhai is blocking work.
            let _ =
                tokio::task::spawn_blocking(move || rules.reload(&config, &metrics, cause)).await;
            // A reload of our own is the others' cue; theirs is not echoed back.
            if ours && let Some(announce) = &announce {
                let _ = announce.try_send(());
            }
        }
    }
}

/// Watches the directories holding the rule files (editors often replace
/// a file rather than write it, which a watch on the file itself would
/// lose) and sends a wake-up for every change to one of the files.
fn watch_files(
    files: &[PathBuf],
    changed: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::event::{EventKind, ModifyKind};
    use notify::{RecursiveMode, Watcher};

    let mut directories = HashSet::new();
    let mut watched = HashSet::new();
    for file in files {
        let (Some(parent), Some(name)) = (file.parent(), file.file_name()) else {
            continue;
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let directory = parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf());
        watched.insert(directory.join(name));
        directories.insert(directory);
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading a file (the reload itself does) is no change.
        if matches!(
            event.kind,
            EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
        ) {
            return;
        }
        if event.paths.iter().any(|path| watched.contains(path)) {
            // Full means a wake-up is already waiting: nothing is lost.
            let _ = changed.try_send(());
        }
    })?;
    for directory in &directories {
        watcher.watch(directory, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// SIGHUP as a stream of wake-ups; never wakes where there is no SIGHUP.
fn hangup_signal() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        if tx.send(()).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}
