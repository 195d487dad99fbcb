//! File drops (`[[file_drops]]`): the watched folders of
//! `converge-filedrop`, whose rows reach the rules through the journal like
//! webhook events. This module is the adapter: each chunk of rows waits for
//! room in the same in-flight budget as webhooks, then for its group commit,
//! before the folder reads on; the crate moves a file out of the inbox only
//! after its last chunk is journaled.

use std::sync::Arc;

use converge_filedrop::{DropConfig, EventSink, SinkError};
use converge_model::Event;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::journal::{Journal, JournalError, Stopping, room};

/// Journals the rows of dropped files.
pub struct JournalSink {
    pub journal: Journal,
    pub in_flight: Arc<Semaphore>,
}

impl EventSink for JournalSink {
    async fn append(&self, events: Vec<Event>) -> Result<(), SinkError> {
        let permit = room(&self.in_flight, events.len())
            .await
            .map_err(|Stopping| SinkError::Closed)?;
        match self.journal.append(events, permit).await {
            Ok(_) => Ok(()),
            Err(JournalError::Closed) => Err(SinkError::Closed),
            Err(JournalError::Storage(e)) => Err(SinkError::Failed(e)),
        }
    }
}

/// Starts the watcher of one drop folder; it stops with `stop`.
pub fn watch(
    drop: &DropConfig,
    journal: &Journal,
    in_flight: &Arc<Semaphore>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let sink = JournalSink {
        journal: journal.clone(),
        in_flight: in_flight.clone(),
    };
    // A fresh install has no inbox yet; one that cannot be made is
    // reported by the watcher below.
    if let Err(e) = std::fs::create_dir_all(&drop.dir) {
        tracing::warn!(drop = %drop.name, dir = %drop.dir.display(), error = %e, "cannot create the drop folder");
    }
    let drop = drop.clone();
    tokio::spawn(async move {
        let name = drop.name.clone();
        tracing::info!(drop = %name, dir = %drop.dir.display(), "watching a drop folder");
        if let Err(e) = converge_filedrop::run(drop, sink, stop).await {
            tracing::error!(drop = %name, error = %e, "the drop folder is not watched");
        }
    })
}
