//! Alone on its database, or sharing it with other daemons (PostgreSQL,
//! docs/scaling.md): everything a daemon does differently between the two,
//! in one place, so that `daemon::run` builds one daemon either way.
//!
//! Alone, the daemon processes every event as its journal hands it over,
//! fires every timer and runs every source. Sharing, the events, timers
//! and held sends of each of the 64 partitions belong to the daemon
//! holding the partition's lease (`cluster`), a source runs on whichever
//! daemon holds its lease, new actions are leased to the daemon that
//! created them, and a rule reload is relayed to the others.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use converge_engine::Gates;
use converge_store::{Location, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cluster::{self, ClusterProcessor, ReloadPeers};
use crate::dispatcher::ActionLeases;
use crate::health::StorageHealth;
use crate::journal::{Journaled, QueuedAction};
use crate::processor::Processor;

/// The reloader's side of the reload relay: it announces its reloads on
/// the sender and hears the peers' on the receiver.
pub type ReloadRelay = (mpsc::Sender<()>, mpsc::Receiver<()>);

pub enum Topology {
    /// The only daemon on its database.
    Alone,
    /// One of several daemons on one database.
    Shared(Sharing),
}

pub struct Sharing {
    /// This daemon's name in its leases.
    pub holder: String,
    /// How long a lease lasts unless renewed (`storage.lease_ttl`).
    pub ttl: Duration,
    /// The connection the sources' leases are kept through.
    sources: Arc<Mutex<Store>>,
    /// The peers' side of the reload relay, until the processor takes it.
    reloads: Option<ReloadPeers>,
}

/// What the processing thread needs besides the processor, whichever way
/// it runs.
pub struct Processing {
    pub processor: Processor,
    /// Alone: where processing starts (the processed cursor), the journal's
    /// head, and the journal's new events.
    pub cursor: i64,
    pub head: i64,
    pub events: mpsc::UnboundedReceiver<Journaled>,
    pub clock: Clock,
    /// Sharing: where the actions its partitions' events create go.
    pub dispatcher: mpsc::Sender<QueuedAction>,
    pub stop: CancellationToken,
    pub fatal: CancellationToken,
}

impl Topology {
    /// `open_reader` opens another connection to the database (sharing it,
    /// one is kept for the sources' leases). Also returns the reloader's
    /// side of the reload relay, when sharing.
    pub fn new(
        location: &Location,
        ttl: Duration,
        open_reader: impl Fn() -> anyhow::Result<Store>,
    ) -> anyhow::Result<(Topology, Option<ReloadRelay>)> {
        if !location.is_shared() {
            return Ok((Topology::Alone, None));
        }
        let holder = cluster::holder_name();
        tracing::info!(%holder, database = %location, "sharing the database with other daemons");
        // A local reload is announced to the peers; a peer's reload is
        // relayed to the local reloader.
        let (announce_tx, announce_rx) = mpsc::channel(1);
        let (remote_tx, remote_rx) = mpsc::channel(1);
        let sharing = Sharing {
            holder,
            ttl,
            sources: Arc::new(Mutex::new(open_reader()?)),
            reloads: Some(ReloadPeers {
                announce: announce_rx,
                remote: remote_tx,
            }),
        };
        Ok((Topology::Shared(sharing), Some((announce_tx, remote_rx))))
    }

    pub fn holder(&self) -> Option<&str> {
        match self {
            Topology::Alone => None,
            Topology::Shared(sharing) => Some(&sharing.holder),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Topology::Shared(_))
    }

    /// The held sends processing starts from. Held sends are written with
    /// the processed cursor, so alone these are the ones held as of the
    /// cursor; sharing, a partition's are loaded when its lease is taken.
    pub fn initial_gates(&self, store: &Store) -> anyhow::Result<Gates> {
        match self {
            Topology::Alone => Ok(Gates::load(
                store
                    .open_held_sends()
                    .context("cannot read the held sends")?,
            )),
            Topology::Shared(_) => Ok(Gates::default()),
        }
    }

    /// Alone, the timer scheduler fires every timer; sharing, each
    /// partition's holder fires its timers in its processing loop.
    pub fn fires_timers_apart(&self) -> bool {
        !self.is_shared()
    }

    /// Sharing, the actions a daemon creates or claims are leased to it.
    pub fn action_leases(&self) -> Option<ActionLeases> {
        match self {
            Topology::Alone => None,
            Topology::Shared(sharing) => Some(ActionLeases {
                holder: sharing.holder.clone(),
                ttl: sharing.ttl,
            }),
        }
    }

    /// Starts the processing thread: alone, the processor on the journal's
    /// events; sharing, the cluster loop on its partitions' events.
    pub fn start_processing(&mut self, p: Processing) -> anyhow::Result<JoinHandle<()>> {
        let thread = std::thread::Builder::new().name("converge-processor".into());
        let runtime = tokio::runtime::Handle::current();
        match self {
            Topology::Alone => thread.spawn(move || {
                p.processor
                    .run(runtime, p.cursor, p.head, p.events, p.stop, p.fatal)
            }),
            Topology::Shared(sharing) => {
                let cluster = ClusterProcessor {
                    processor: p.processor,
                    clock: p.clock,
                    holder: sharing.holder.clone(),
                    ttl: sharing.ttl,
                    dispatcher: p.dispatcher,
                    reloads: sharing
                        .reloads
                        .take()
                        .context("the processing thread is started once")?,
                };
                let stop = p.stop;
                thread.spawn(move || cluster.run(stop))
            }
        }
        .context("cannot start the processor thread")
    }

    /// Runs a duty (a drop folder, a poll, the pruning): alone, from now
    /// until `stop`; sharing, only while this daemon holds the duty's lease.
    pub fn run_source(
        &self,
        duty: cluster::Duty,
        health: &StorageHealth,
        stop: &CancellationToken,
        start: Box<dyn Fn(CancellationToken) -> tokio::task::JoinHandle<()> + Send>,
    ) -> tokio::task::JoinHandle<()> {
        match self {
            Topology::Alone => start(stop.clone()),
            Topology::Shared(sharing) => tokio::spawn(cluster::lead(
                sharing.sources.clone(),
                health.clone(),
                duty,
                sharing.holder.clone(),
                sharing.ttl,
                stop.clone(),
                start,
            )),
        }
    }
}
