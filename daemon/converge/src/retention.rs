//! Retention (`storage.retention`): processed events older than the
//! retention, with their decisions, actions, rule failures and notes, are
//! pruned in the background, a page at a time, each page its own small
//! commit through the journal, so intake never waits long behind it.
//!
//! What is still needed stays whatever its age (`PrunePage`): an event
//! whose actions are pending or dead letters, whose timers are pending,
//! whose send a gate holds; and the last occurrence of each schedule, which
//! tells the schedule where to resume. Entity states and the reports'
//! samples are never pruned.
//!
//! With `storage.retention_archive`, each page is first appended to a
//! gzipped NDJSON file of the day the events were received (one line per
//! event: its trail, as `converge explain --json` shows it, and the event
//! itself) and synced; only then is it pruned. A crash between the two
//! archives a page again at the next round: lines are unique by `seq`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use converge_store::{PruneCandidate, Store};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Retention;
use crate::journal::Journal;
use crate::schedules::SCHEDULE_SOURCE;
use crate::telemetry::Metrics;

/// Events looked at, and at most pruned, per commit.
const PAGE: usize = 500;

/// How often a round runs on the system clock; a manual clock's move
/// starts one at once.
const EVERY: Duration = Duration::from_secs(60);

pub struct Pruner {
    pub retention: Retention,
    pub reader: Arc<Mutex<Store>>,
    pub journal: Journal,
    pub clock: Clock,
    pub metrics: Metrics,
}

impl Pruner {
    pub async fn run(self, stop: CancellationToken) {
        let mut watch = self.clock.watch();
        loop {
            if let Err(e) = self.round(&stop).await {
                tracing::warn!(error = %format!("{e:#}"), "retention: pruning failed; trying again at the next round");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
                () = watch.moved() => {}
            }
        }
    }

    /// Prunes every page that may go now.
    async fn round(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let keep = chrono::Duration::from_std(self.retention.keep).unwrap_or(chrono::Duration::MAX);
        let before_ms = (self.clock.now() - keep).timestamp_millis();
        let mut after = 0;
        let mut pruned = 0;
        while !stop.is_cancelled() {
            let (page, trails) = tokio::task::block_in_place(|| {
                let store = self.reader.lock().unwrap_or_else(|e| e.into_inner());
                let mut page = store.prunable(after, before_ms, PAGE)?;
                page.candidates
                    .retain(|c| !is_last_occurrence(&store, c).unwrap_or(true));
                let trails = match &self.retention.archive {
                    Some(_) => archived_lines(&store, &page.candidates)?,
                    None => Vec::new(),
                };
                anyhow::Ok((page, trails))
            })?;
            if let Some(dir) = &self.retention.archive {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || archive(&dir, &trails))
                    .await
                    .context("archiving")??;
            }
            if !page.candidates.is_empty() {
                let seqs = page.candidates.iter().map(|c| c.seq).collect();
                let n = self.journal.prune(seqs).await?;
                pruned += n;
                self.metrics.events_pruned.inc_by(n as u64);
            }
            after = page.examined_to;
            if page.finished {
                break;
            }
            // Room for the writes waiting behind this page.
            tokio::task::yield_now().await;
        }
        if pruned > 0 {
            tracing::info!(
                events = pruned,
                "retention: pruned events older than storage.retention"
            );
        }
        Ok(())
    }
}

/// Whether `c` is the last occurrence of its schedule, which the schedule
/// reads at start to know which occurrence it missed.
fn is_last_occurrence(store: &Store, c: &PruneCandidate) -> anyhow::Result<bool> {
    if c.source != SCHEDULE_SOURCE {
        return Ok(false);
    }
    let Some((name, _)) = c.id.rsplit_once('@') else {
        return Ok(false);
    };
    Ok(store.last_occurrence_id(SCHEDULE_SOURCE, name)?.as_deref() == Some(c.id.as_str()))
}

/// One archive line per candidate: its trail and the event, with the day
/// (UTC) it was received, which names its file.
fn archived_lines(
    store: &Store,
    candidates: &[PruneCandidate],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut lines = Vec::with_capacity(candidates.len());
    for c in candidates {
        let Some(trail) = store
            .trails_after(c.seq - 1, 1)?
            .into_iter()
            .next()
            .filter(|t| t.seq == c.seq)
        else {
            continue;
        };
        let event = store
            .events_after(c.seq - 1, 1)?
            .into_iter()
            .next()
            .filter(|e| e.seq == c.seq)
            .and_then(|e| serde_json::from_str::<Value>(&e.json).ok())
            .unwrap_or(Value::Null);
        let mut line = serde_json::to_value(&trail)?;
        line["event"] = event;
        let day = DateTime::<Utc>::from_timestamp_millis(c.received_at_ms)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string();
        lines.push((day, line.to_string()));
    }
    Ok(lines)
}

/// Appends `lines` to their days' files, one gzip member per file and
/// page, and syncs each file before returning.
fn archive(dir: &Path, lines: &[(String, String)]) -> anyhow::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the archive directory {}", dir.display()))?;
    let mut start = 0;
    while start < lines.len() {
        let day = &lines[start].0;
        let end = start + lines[start..].iter().take_while(|(d, _)| d == day).count();
        let path = archive_file(dir, day);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut gz = GzEncoder::new(file, Compression::default());
        for (_, line) in &lines[start..end] {
            gz.write_all(line.as_bytes())?;
            gz.write_all(b"\n")?;
        }
        let file = gz
            .finish()
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot sync {}", path.display()))?;
        start = end;
    }
    Ok(())
}

/// The file of the events received on `day` (`YYYY-MM-DD`).
pub fn archive_file(dir: &Path, day: &str) -> PathBuf {
    dir.join(format!("events-{day}.ndjson.gz"))
}
