//! Whether storage is failing. The stages that retry storage work until it
//! succeeds (the journal writer, the cluster loop) report each failure and
//! their next success here; `/v1/status` shows the result, and
//! `converge_storage_failing` / `converge_storage_errors_total` count it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl StorageHealth {
    pub fn new(metrics: Metrics) -> StorageHealth {
        StorageHealth {
            failing: Arc::default(),
            metrics,
        }
    }

    /// `stage`'s storage work failed with `error`; it will try again in `retry_in`.
    pub fn failed(&self, stage: &'static str, error: &str, retry_in: Duration) {
        self.metrics.storage_errors.inc();
        let mut failing = self.lock();
        match failing.get_mut(stage) {
            Some(failure) => {
                failure.error = error.to_string();
                tracing::warn!(stage, error, ?retry_in, "storage still failing; retrying");
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
/// The longest wait between two tries: how late, at most, the daemon
/// notices that storage works again.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The waits between tries of failing storage work: exponential with
/// jitter, without end.
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_RETRY)
        .with_max_delay(MAX_RETRY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .chain(std::iter::repeat(MAX_RETRY))
}
