//! Whether storage is failing. The stages that retry storage work until it
//! succeeds (the journal writer, the cluster loop) report each failure and
//! their next success here; `/v1/status` shows the result, and
//! `converge_storage_failing` / `converge_storage_errors_total` count it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};

use crate::telemetry::Metrics;

/// Storage as the stages met it; cheap to clone, shared by all.
#[derive(Clone)]
pub struct StorageHealth {
    /// The failing stages, each since its first failure, with its last error.
    failing: Arc<Mutex<BTreeMap<&'static str, Failure>>>,
    metrics: Metrics,
}

/// Since when a stage's storage work fails, and how it failed last.
#[derive(Debug, Clone)]
pub struct Failure {
    pub since: DateTime<Utc>,
    pub error: String,
    /// When the failure was last written to the log, and the failures since.
    logged_at: Instant,
    unlogged: u64,
}

/// The least time between two "still failing" lines of one stage: an
/// outage of an hour is a page of log, not one line per retry.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(60);

impl Failure {
    /// Counts one more failure at `now`; the failures to report when it is
    /// time for a "still failing" line.
    fn again(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if now.duration_since(self.logged_at) < STILL_FAILING_EVERY {
            return None;
        }
        self.logged_at = now;
        Some(std::mem::take(&mut self.unlogged))
    }
}

impl StorageHealth {
    pub fn new(metrics: Metrics) -> StorageHealth {
        StorageHealth {
            failing: Arc::default(),
            metrics,
        }
    }

    /// `stage`'s storage work failed with `error`; it will try again in
    /// `retry_in`. The first failure is logged as an error, then a line at
    /// most every [`STILL_FAILING_EVERY`] while it goes on, and one when
    /// it ends.
    pub fn failed(&self, stage: &'static str, error: &str, retry_in: Duration) {
        self.metrics.storage_errors.inc();
        let mut failing = self.lock();
        match failing.get_mut(stage) {
            Some(failure) => {
                failure.error = error.to_string();
                if let Some(failures) = failure.again(Instant::now()) {
                    let failing_for = humantime::format_duration(
                        (Utc::now() - failure.since).to_std().unwrap_or_default(),
                    )
                    .to_string();
                    tracing::warn!(
                        stage,
                        error,
                        failures,
                        failing_for,
                        ?retry_in,
                        "storage still failing; retrying"
                    );
                }
            }
            None => {
                tracing::error!(
                    stage,
                    error,
                    ?retry_in,
                    "storage failed; retrying until it works again (while the journal cannot commit, new events are refused with 503)"
                );
                failing.insert(
                    stage,
                    Failure {
                        since: Utc::now(),
                        error: error.to_string(),
                        logged_at: Instant::now(),
                        unlogged: 0,
                    },
                );
            }
        }
        self.metrics.storage_failing.set(1);
    }

    /// `stage`'s storage work succeeded.
    pub fn succeeded(&self, stage: &'static str) {
        let mut failing = self.lock();
        if let Some(failure) = failing.remove(stage) {
            let failed_for = (Utc::now() - failure.since).to_std().unwrap_or_default();
            tracing::info!(stage, ?failed_for, "storage works again; resuming");
        }
        if failing.is_empty() {
            self.metrics.storage_failing.set(0);
        }
    }

    /// The longest-running failure, if any stage is failing.
    pub fn failure(&self) -> Option<Failure> {
        self.lock().values().min_by_key(|f| f.since).cloned()
    }

    /// Whether any stage is failing.
    pub fn is_failing(&self) -> bool {
        !self.lock().is_empty()
    }

    pub fn stage_failing(&self, stage: &'static str) -> bool {
        self.lock().contains_key(stage)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Failure>> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The first wait before storage work is tried again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Where the doubling stops; jitter adds up to as much again, so the daemon
/// notices that storage works again within 10 s.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The waits between tries of failing storage work: doubling from
/// [`FIRST_RETRY`] to [`MAX_RETRY`], each plus a random jitter of up to as
/// much again (so daemons that lost the same server do not retry in
/// step), without end.
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_RETRY)
        .with_max_delay(MAX_RETRY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_failing_until_every_failing_stage_succeeds() {
        let metrics = Metrics::new();
        let health = StorageHealth::new(metrics.clone());
        assert!(health.failure().is_none());

        health.failed("processing", "connection closed", Duration::ZERO);
        let first = health.failure().unwrap();
        health.failed("journal", "disk I/O error", Duration::ZERO);
        health.failed("processing", "connection refused", Duration::ZERO);
        // The longest failure, with its last error.
        let shown = health.failure().unwrap();
        assert_eq!(shown.since, first.since);
        assert_eq!(shown.error, "connection refused");
        assert_eq!(metrics.storage_errors.get(), 3);
        assert_eq!(metrics.storage_failing.get(), 1);

        health.succeeded("processing");
        assert_eq!(health.failure().unwrap().error, "disk I/O error");
        assert_eq!(metrics.storage_failing.get(), 1);
        health.succeeded("journal");
        assert!(health.failure().is_none());
        assert!(!health.is_failing());
        assert_eq!(metrics.storage_failing.get(), 0);
    }

    #[test]
    fn a_long_failure_is_logged_once_a_minute_with_the_failures_since() {
        let start = Instant::now();
        let mut failure = Failure {
            since: Utc::now(),
            error: "connection refused".into(),
            logged_at: start,
            unlogged: 0,
        };
        // Retries every half second: silent for a minute, then one line
        // that counts them.
        let reported: Vec<(u64, u64)> = (1..=250)
            .filter_map(|n| {
                let at = start + Duration::from_millis(500 * n);
                failure.again(at).map(|failures| (n, failures))
            })
            .collect();
        assert_eq!(reported, vec![(120, 120), (240, 120)]);
    }

    #[test]
    fn retries_back_off_up_to_five_seconds_and_never_end() {
        let delays: Vec<Duration> = retry_delays().take(50).collect();
        assert_eq!(delays.len(), 50);
        assert!(delays[0] >= FIRST_RETRY && delays[0] < 2 * FIRST_RETRY);
        assert!(delays.iter().all(|d| *d <= 2 * MAX_RETRY));
        assert!(delays[40..].iter().all(|d| *d >= MAX_RETRY));
    }
}
