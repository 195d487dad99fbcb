//! Polls (`[[polls]]`): connector plugins asked for new items of a tool that
//! has no webhook (or whose webhooks cannot reach converge).
//!
//! Each poll is one task calling the plugin's `poll` with its cursor, an
//! opaque string the plugin returns with each page. The page's events and
//! the new cursor are committed in one transaction (`source_state` key
//! `poll-cursor/<name>`), so a crash repeats at most the page in flight,
//! whose events the journal then deduplicates on (source, id): nothing is
//! lost, nothing journaled twice. A page that says `more` is followed at
//! once; otherwise the poll waits its `interval`, or the plugin's
//! `retry_after`. Failures the plugin calls retryable (network, 5xx, 429)
//! back off exponentially with jitter up to the interval; others are logged
//! and tried again after the interval, since a fixed config or an expired
//! token should not need a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use converge_model::Event;
use converge_plugin_host::{CallFailure, Plugin, PollInput};
use converge_store::{SourceState, Store};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::clock::{Slept, sleep_unless_stopped};
use crate::config::PollConfig;
use crate::journal::{Journal, JournalError, Stopping, room};
use crate::telemetry::Metrics;

/// The first wait after a retryable failure; it doubles up to the interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Reading the polls' cursors, as `StorageHealth` names it while it fails.
const CURSOR_READS: &str = "poll cursor reads";

pub struct Poller {
    pub poll: PollConfig,
    pub plugin: Plugin,
    /// Reads the stored cursor at start. Shared; only read here.
    pub reader: Arc<Mutex<Store>>,
    pub journal: Journal,
    /// The intake budget webhooks use too.
    pub in_flight: Arc<Semaphore>,
    pub metrics: Metrics,
}

/// The key of a poll's cursor in `source_state`.
pub fn cursor_key(poll: &str) -> String {
    format!("poll-cursor/{poll}")
}

impl Poller {
    pub async fn run(self, stop: CancellationToken) {
        let name = self.poll.name.clone();
        let key = cursor_key(&name);
        let mut cursor = loop {
            let read = tokio::task::block_in_place(|| {
                self.reader.lock().expect("reader").source_state(&key)
            });
            match read {
                Ok(cursor) => {
                    self.journal.health().succeeded(CURSOR_READS);
                    break cursor;
                }
                Err(e) => {
                    let error = format!("poll {name}: {e}");
                    let health = self.journal.health();
                    health.failed(CURSOR_READS, &error, FIRST_RETRY);
                    if sleep_unless_stopped(FIRST_RETRY, &stop).await == Slept::Stopped {
                        return;
                    }
                }
            }
        };
        tracing::info!(poll = %name, plugin = %self.poll.plugin, resumes = cursor.is_some(), "polling");
        let mut failures = 0usize;
        loop {
            let page = tokio::select! {
                page = self.plugin.poll(PollInput { cursor: cursor.clone() }, &self.poll.config_json) => page,
                () = stop.cancelled() => return,
            };
            let wait = match page {
                Ok(page) => {
                    failures = 0;
                    let events = self.valid_events(&page.events);
                    let kept = page.cursor.clone().map(|value| SourceState {
                        key: key.clone(),
                        value,
                        updated_at_ms: chrono::Utc::now().timestamp_millis(),
                    });
                    match self.journal_page(events, kept).await {
                        Ok(()) => {}
                        Err(Stopping) => return,
                    }
                    if page.cursor.is_some() {
                        cursor = page.cursor;
                    }
                    if page.more {
                        Duration::ZERO
                    } else {
                        page.retry_after.unwrap_or(self.poll.interval)
                    }
                }
                Err(failure) => {
                    failures += 1;
                    self.metrics.poll_failures.inc();
                    let wait = self.wait_after(&failure, failures);
                    tracing::warn!(poll = %name, error = %failure.to_string().escape_debug(), retry_in = ?wait, "poll failed");
                    wait
                }
            };
            if sleep_unless_stopped(wait, &stop).await == Slept::Stopped {
                return;
            }
        }
    }

    /// The page's events that are CloudEvents; a plugin that makes others
    /// has a bug, which is logged rather than allowed to stop the poll.
    fn valid_events(&self, jsons: &[String]) -> Vec<Event> {
        jsons
            .iter()
            .filter_map(|json| match Event::from_json(json.as_bytes()) {
                Ok(event) if !converge_model::sources::is_reserved(&event.source) => Some(event),
                Ok(event) => {
                    tracing::error!(poll = %self.poll.name, source = %event.source, "the plugin made an event with a source converge reserves; dropped");
                    None
                }
                Err(e) => {
                    tracing::error!(poll = %self.poll.name, error = %e, "the plugin made an event that is not valid; dropped");
                    None
                }
            })
            .collect()
    }

    /// Journals a page's events with its cursor, retrying storage errors:
    /// the cursor must not move without its events.
    async fn journal_page(
        &self,
        events: Vec<Event>,
        kept: Option<SourceState>,
    ) -> Result<(), Stopping> {
        if events.is_empty() && kept.is_none() {
            return Ok(());
        }
        loop {
            let permit = room(&self.in_flight, events.len()).await?;
            match self
                .journal
                .append_with_state(events.clone(), kept.clone().into_iter().collect(), permit)
                .await
            {
                Ok(appended) => {
                    self.metrics.poll_pages.inc();
                    let new = appended
                        .iter()
                        .filter(|a| matches!(a, converge_store::Appended::New { .. }))
                        .count();
                    self.metrics
                        .sources
                        .seen(&format!("poll/{}", self.poll.name), new);
                    return Ok(());
                }
                Err(JournalError::Closed) => return Err(Stopping),
                Err(JournalError::Storage(e)) => {
                    // The journal reports its failure (`StorageHealth`).
                    tracing::debug!(poll = %self.poll.name, error = %e, "cannot journal a polled page; retrying");
                    tokio::time::sleep(FIRST_RETRY).await;
                }
            }
        }
    }

    /// How long to wait after the `failures`-th failure in a row.
    fn wait_after(&self, failure: &CallFailure, failures: usize) -> Duration {
        let interval = self.poll.interval;
        if !failure.retryable() {
            return interval;
        }
        let backoff = ExponentialBuilder::new()
            .with_min_delay(FIRST_RETRY)
            .with_max_delay(interval)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(failures.saturating_sub(1))
            .unwrap_or(interval);
        match failure {
            CallFailure::RateLimited(Some(hint)) => backoff.max(*hint),
            _ => backoff,
        }
    }
}
