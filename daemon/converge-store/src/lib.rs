//! The durable journal, entity state, decisions and outbox, behind one
//! interface ([`Backend`]) with two implementations: SQLite, embedded, for a
//! single daemon, and PostgreSQL, shared by several daemons. This is the only
//! crate that knows SQL.
//!
//! # What is stored
//! - the **journal**: every accepted event, deduplicated on `(source, id)` and
//!   numbered by a growing `seq`;
//! - the **processed cursor**: the highest `seq` up to which every event's
//!   processing is committed;
//! - **entity state**, keyed by `kind/id`;
//! - **decisions** the rules made for each event, and **rule failures**;
//! - the **outbox**: one action per routed decision, `pending` until its
//!   outcome is recorded as `done` or `dead_letter` (failed for good); a
//!   person then retries a dead letter (`pending` again, same id) or drops
//!   it (`dropped`). Each action's failed attempts, dead-lettering, retries
//!   and drops are kept in its **history**;
//! - **timers** (`schedule` and `expect` decisions), `pending` until they are
//!   `fired`, `cancelled` (an expect whose event arrived) or `skipped` (due
//!   while the daemon was down, with the `skip` catch-up policy);
//! - **convergence gates**: sends `held` by `hold_send` decisions until they
//!   are `released` (by a rule's `release_send` or a person's override), and
//!   the overrides, written with the processing of the event that caused them;
//! - **leases** (PostgreSQL): who among several daemons holds a partition of
//!   the entities, a source, an action, until when, under which fencing token.
//!
//! Processing an event (entity state, decisions, actions, rule failures, the
//! event marked processed) is one [`ProcessedEvent`] in a [`WriteBatch`], so
//! it lands atomically: after a crash an event is either fully processed or
//! not at all. The timers an event's decisions create, the expects it
//! cancels and the events its rules emit are part of the same
//! [`ProcessedEvent`].
//!
//! Firing a timer is one [`FiredTimer`]: its event is journaled and the timer
//! marked `fired` in one transaction, and only if the timer was still
//! `pending`, so a timer fires exactly once, whatever crashes around it.
//!
//! # Group commit
//! A commit's cost (an fsync) is the same for one event as for a thousand, so
//! throughput comes from **group commit**, which is the caller's job: the
//! daemon's writer thread gathers many requests and hands them to
//! [`Backend::write`] as one [`WriteBatch`], which is one transaction. This
//! crate does no batching or buffering of its own: when `write` returns
//! `Ok`, the batch is committed with the promised durability.
//!
//! # Partitions
//! Every entity key falls in one of [`PARTITIONS`] partitions
//! ([`partition_of`]). With several daemons on PostgreSQL, each partition is
//! processed by the one daemon holding its lease, which is what keeps an
//! entity's events in order and applied once (see `docs/scaling.md`).
//!
//! A [`Store`] is `Send` but not `Sync`: each thread opens its own.

mod decision_body;
mod error;
mod event_body;
mod postgres;
mod records;
mod sqlite;
mod write;

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::Duration;

use converge_model::{EntityKey, EntityState, Sample};
use sha2::{Digest, Sha256};

pub use error::StoreError;
pub use records::{
    ActionDetail, ActionHistoryKind, ActionHistoryRecord, ActionLease, ActionOutcome, ActionRecord,
    ActionStatus, Appended, Counts, DeadLetterChange, DeadLetterOp, DeadLetterOutcome,
    DecisionRecord, EventTrail, ExpectedArrival, Fence, FiredTimer, GateChange, GateOverrideRecord,
    GateRecord, HeldSendRecord, HeldSendStatus, JournaledEvent, LeaseRecord, NewAction,
    NewDecision, NewEvent, NewTimer, OpenSpan, OutcomeKind, PayloadJson, PendingAction,
    ProcessedEvent, PruneCandidate, PrunePage, RecentRuleFailure, RetryingAction, RuleActivity,
    RuleTimers, SampleGroup, SampleQuery, SkippedTimer, SourceState, TimerCancellation, TimerKind,
    TimerRecord, TimerRecordKind, TimerStatus, WriteBatch, WriteResult, idempotency_key,
    instance_hex,
};

/// How many partitions the entities are spread over. Fixed: it is part of
/// the stored data (each event, timer and held send records its partition).
pub const PARTITIONS: u32 = 64;

/// The partition of an entity key (`kind/id`), or of whatever else groups
/// events (an event about no entity uses its subject, or its id): the first
/// four bytes of its SHA-256, so every daemon and version agrees.
pub fn partition_of(key: &str) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % PARTITIONS
}

/// The notification channel of a commit that journaled events (shared
/// databases): a wake-up hint for the daemons processing them.
pub const EVENTS_CHANNEL: &str = "converge_events";

/// The partition of an event: that of its entity (its subject parsed as an
/// entity key), else of its raw subject, else of its id.
pub fn event_partition(subject: Option<&str>, id: &str) -> u32 {
    match subject {
        Some(subject) => match EntityKey::parse(subject) {
            Some(key) => partition_of(&key.to_string()),
            None => partition_of(subject),
        },
        None => partition_of(id),
    }
}

/// How much a SQLite commit must survive. The journal is always in WAL
/// mode; this chooses when the WAL is fsynced. (A PostgreSQL commit is as
/// durable as the server's `synchronous_commit` makes it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is fsynced on every commit, so a committed
    /// batch survives power loss and OS crashes. One fsync per write.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is fsynced only at checkpoints, so a
    /// committed batch survives `kill -9` and process crashes, but the last
    /// batches can be lost if the OS crashes or the power fails.
    Normal,
}

/// What the writer checks of an existing SQLite database before using it
/// (`storage.check_on_start`). The WAL is checked either way: that read is
/// as small as the WAL, and it is what keeps acknowledged commits from
/// being dropped without a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartCheck {
    /// `PRAGMA quick_check` (every page's structure, not the indexes'
    /// agreement with their tables) and the checks that the tables agree.
    #[default]
    Quick,
    /// Only the WAL.
    Off,
}

/// Where the database is.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An embedded SQLite file, for one daemon.
    Sqlite {
        path: PathBuf,
        durability: Durability,
    },
    /// A PostgreSQL database several daemons may share. `url` is a
    /// `postgres://` URL or a libpq key=value string without the password,
    /// which comes apart (from the environment).
    Postgres {
        url: String,
        password: Option<String>,
    },
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite { path, durability } => f
                .debug_struct("Sqlite")
                .field("path", path)
                .field("durability", durability)
                .finish(),
            Location::Postgres { url, password } => f
                .debug_struct("Postgres")
                .field("url", url)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite { path, .. } => write!(f, "{}", path.display()),
            Location::Postgres { url, .. } => write!(f, "{url}"),
        }
    }
}

impl Location {
    /// Whether several daemons may share this database.
    pub fn is_shared(&self) -> bool {
        matches!(self, Location::Postgres { .. })
    }
}

/// A connection to the converge database, whichever the backend. Derefs to
/// [`Backend`], where every operation is.
///
/// Every operation blocks the calling thread (PostgreSQL's client runs
/// its own small runtime): call them from a thread of your own, or from
/// `tokio::task::spawn_blocking` / `block_in_place`, never straight from
/// an async task. Dropping a `Store` is taken care of: it steps out of the
/// async runtime itself.
pub struct Store(Option<Box<dyn Backend>>);

impl Drop for Store {
    fn drop(&mut self) {
        // Closing a PostgreSQL connection waits for the server's goodbye,
        // which must not happen on an async worker thread.
        let Some(backend) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| drop(backend));
            }
            _ => drop(backend),
        }
    }
}

impl Store {
    fn new(backend: Box<dyn Backend>) -> Store {
        Store(Some(backend))
    }

    /// Opens the database for writing, creating it if needed, and migrates
    /// the schema to the current version. An existing SQLite database must
    /// pass the start checks ([`StartCheck::Quick`]): a damaged one is
    /// [`StoreError::Damaged`].
    pub fn open(location: &Location) -> Result<Store, StoreError> {
        Store::open_checked(location, StartCheck::Quick)
    }

    /// [`Store::open`] with the start checks `check` (SQLite).
    pub fn open_checked(location: &Location, check: StartCheck) -> Result<Store, StoreError> {
        Ok(match location {
            Location::Sqlite { path, durability } => Store::new(Box::new(
                sqlite::SqliteStore::open(path, *durability, check)?,
            )),
            Location::Postgres { url, password } => Store::new(Box::new(
                postgres::PostgresStore::open(url, password.as_deref())?,
            )),
        })
    }

    /// Opens an existing database for queries. Does not migrate: fails with
    /// [`StoreError::Missing`] if there is no database yet and with
    /// [`StoreError::SchemaVersion`] if it is not at the version this build
    /// reads. (A PostgreSQL reader can also write: only SQLite has
    /// read-only connections.)
    pub fn open_reader(location: &Location) -> Result<Store, StoreError> {
        Ok(match location {
            Location::Sqlite { path, .. } => {
                Store::new(Box::new(sqlite::SqliteStore::open_reader(path)?))
            }
            Location::Postgres { url, password } => Store::new(Box::new(
                postgres::PostgresStore::open_reader(url, password.as_deref())?,
            )),
        })
    }
}

/// One check of a database's integrity, as `converge verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// What is wrong; `None` when the check passed.
    pub problem: Option<String>,
}

/// `converge verify`: every check of the database at `location`, without
/// changing it. SQLite: its WAL, `PRAGMA integrity_check` and that the
/// tables agree; PostgreSQL (which checks its own pages) that the tables
/// agree.
pub fn verify(location: &Location) -> Result<Vec<Check>, StoreError> {
    match location {
        Location::Sqlite { path, .. } => sqlite::verify(path),
        Location::Postgres { .. } => Store::open_reader(location)?.coherence(),
    }
}

/// `converge backup`: copies the live SQLite database at `database` to the
/// new file `to`, while the daemon may be writing it, and gives the copy a
/// new instance id (returned). See [`idempotency_key`].
pub fn backup(database: &std::path::Path, to: &std::path::Path) -> Result<i64, StoreError> {
    sqlite::backup(database, to)
}

/// Every pending timer due at or before `due_by_ms`, in due order (then
/// creation order), read from `store` `page` timers at a time as the
/// iteration reaches them ([`Backend::due_timers`]): readers that stop
/// early (`take`, enough found) read no further. An error ends it.
pub fn pending_timers(
    store: &dyn Backend,
    due_by_ms: i64,
    page: usize,
) -> impl Iterator<Item = Result<TimerRecord, StoreError>> + '_ {
    let mut after = None;
    let mut read = std::collections::VecDeque::new();
    let mut ended = false;
    std::iter::from_fn(move || {
        if read.is_empty() && !ended {
            match store.due_timers(due_by_ms, after, page) {
                Ok(timers) => {
                    ended = timers.len() < page;
                    after = timers.last().map(|t| (t.due_at_ms, t.id));
                    read.extend(timers);
                }
                Err(e) => {
                    ended = true;
                    return Some(Err(e));
                }
            }
        }
        read.pop_front().map(Ok)
    })
}

impl Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &(dyn Backend + 'static) {
        self.0.as_deref().expect("a store is open until dropped")
    }
}

impl DerefMut for Store {
    fn deref_mut(&mut self) -> &mut (dyn Backend + 'static) {
        self.0
            .as_deref_mut()
            .expect("a store is open until dropped")
    }
}

/// Every operation on the converge database. Both backends pass the same
/// conformance tests (`tests/it`). What only a database several daemons
/// share can do is [`Coordination`], which PostgreSQL alone implements.
pub trait Backend: Send {
    // ---- writing ----

    /// Commits everything in `batch` in one transaction: fences checked
    /// first, then appends, processed events (with their timers and emitted
    /// events), fired and skipped timers, action outcomes, people's retries
    /// and drops of dead letters, and source state.
    ///
    /// All or nothing: on any error the whole batch is rolled back, appends
    /// included, and the store is as it was.
    fn write(&mut self, batch: &WriteBatch) -> Result<WriteResult, StoreError>;

    /// Copies the write-ahead log into the database and truncates it
    /// (SQLite), so a log that grew while commits were failing (a full
    /// disk) gives its space back. Nothing to do on PostgreSQL.
    fn truncate_wal(&mut self) -> Result<(), StoreError>;

    /// Replaces every metric sample with `samples` (each event's, with the
    /// `seq` of the event that finished them) and the states of `entities`
    /// (those that exist) in one transaction: `converge report --rebuild`.
    /// The samples are read as they are written, so a caller may stream
    /// them from a file; an error from them rolls everything back.
    fn replace_samples(
        &mut self,
        samples: &mut dyn Iterator<Item = Result<(i64, Vec<Sample>), StoreError>>,
        entities: &[EntityState],
    ) -> Result<(), StoreError>;

    // ---- the database ----

    /// The database's instance id: random, given when it was created (or
    /// migrated to a version with one), new in a backup's copy. Every
    /// action records the one it was created under ([`idempotency_key`]).
    fn instance(&self) -> Result<i64, StoreError>;

    /// Gives the database a new random instance id and returns it: for a
    /// database restored from a copy made some other way than `converge
    /// backup`, so it never reissues the original's idempotency keys.
    fn new_instance(&mut self) -> Result<i64, StoreError>;

    /// The checks that the tables agree with each other: the processed
    /// cursor within the journal, every action's decision and event there,
    /// no id handed out again, an instance id.
    fn coherence(&self) -> Result<Vec<Check>, StoreError>;

    // ---- the journal ----

    /// The highest journal `seq` up to which every event's processing is
    /// committed; 0 before any. Processing resumes with
    /// [`Backend::events_after`] this cursor.
    fn processed_cursor(&self) -> Result<i64, StoreError>;

    /// The highest `seq` in the journal; 0 when it is empty. Events up to it
    /// were journaled before this call; later ones get higher numbers.
    fn journal_head(&self) -> Result<i64, StoreError>;

    /// Retention: the page of up to `limit` events after `after_seq` that
    /// [`WriteBatch::prune`] may remove, those received before `before_ms`
    /// and no longer needed (see [`PrunePage`]).
    fn prunable(
        &self,
        after_seq: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<PrunePage, StoreError>;

    /// Up to `limit` journaled events with a `seq` greater than `seq`, in `seq`
    /// order.
    fn events_after(&self, seq: i64, limit: usize) -> Result<Vec<JournaledEvent>, StoreError>;

    // ---- entities ----

    /// The entity's last committed state, if any event was about it.
    fn entity(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError>;

    /// The last committed states of those of `keys` any event was about,
    /// in no particular order: one read for a page of events' entities.
    fn entities(&self, keys: &[EntityKey]) -> Result<Vec<EntityState>, StoreError>;

    /// [`Backend::entities_after`], only the entities with an open span of
    /// this kind (in their own or a channel's `flow`), from a partial index:
    /// "blocked now" and "open escalations" without reading every entity.
    fn entities_with_open(
        &self,
        span: OpenSpan,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<EntityState>, StoreError>;

    /// Up to `limit` entities whose key (`kind/id`) sorts after `after`, in
    /// key order: walks every entity a page at a time.
    fn entities_after(
        &self,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<EntityState>, StoreError>;

    // ---- the outbox ----

    /// Up to `limit` pending actions, in id order (the order they were
    /// decided), whether or not their next attempt is due.
    fn pending_actions(&self, limit: usize) -> Result<Vec<PendingAction>, StoreError>;

    /// Like [`Backend::pending_actions`], from the action after `after_id`:
    /// pages through a backlog larger than one `limit`.
    fn pending_actions_after(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<PendingAction>, StoreError>;

    /// Up to `limit` dead letters with an id greater than `after_id`, in id
    /// order (the order they were decided), each with its event and
    /// decision; their histories are left empty (see [`Backend::action`]).
    fn dead_letters(&self, after_id: i64, limit: usize) -> Result<Vec<ActionDetail>, StoreError>;

    /// How many actions are dead letters now.
    fn dead_letter_count(&self) -> Result<i64, StoreError>;

    /// Up to `limit` pending actions that failed at least once (their
    /// `attempts` count since they were decided or last retried), the
    /// next to be tried first; histories left empty.
    fn retrying_actions(&self, limit: usize) -> Result<Vec<RetryingAction>, StoreError>;

    /// One action, whatever its status, with its event, decision and
    /// history; `None` if no action has this id.
    fn action(&self, id: i64) -> Result<Option<ActionDetail>, StoreError>;

    // ---- trails ----

    /// The first event with this `(source, id)` (on any hook) and everything
    /// processing made of it, or `None` if it was never journaled.
    fn event_trail(&self, source: &str, id: &str) -> Result<Option<EventTrail>, StoreError>;

    /// The trails of every event with this `id`, from any source, in `seq`
    /// order: ids are usually unique enough for `converge explain <id>`.
    fn find_event_trail(&self, id: &str) -> Result<Vec<EventTrail>, StoreError>;

    /// The trails of up to `limit` events journaled after `after_seq`, in
    /// `seq` order: the journal's decisions and actions a page at a time
    /// (`converge export`).
    fn trails_after(&self, after_seq: i64, limit: usize) -> Result<Vec<EventTrail>, StoreError>;

    /// The trails of up to `limit` events whose `subject` is `subject` (an
    /// entity key, `campaign/c-42`), journaled after `after_seq`, in `seq`
    /// order: an entity's audit trail, a page at a time (the next page starts
    /// after the last `seq`), from an index, however long the journal.
    fn subject_trails(
        &self,
        subject: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<EventTrail>, StoreError>;

    // ---- rule activity ----

    /// The newest `limit` rule failures, newest first (the order they were
    /// recorded), each with the event it failed on. Reads the failures'
    /// primary key backwards and each one's event by `seq`: `limit` rows
    /// read, however many failures the journal holds.
    fn recent_rule_failures(&self, limit: usize) -> Result<Vec<RecentRuleFailure>, StoreError>;

    /// Per rule, the decisions it made (a row for its live decisions, one
    /// for its shadow decisions) and how often it failed, on the events
    /// received at or after `since_ms`; ordered by rule name (byte order),
    /// live before shadow. Failures are neither live nor shadow: they are
    /// counted on the rule's live row, else its shadow row; a rule that only
    /// failed has a live row with no decisions.
    ///
    /// Costs what the period holds, not the journal: `seq` grows with
    /// `received_at_ms` (stamped from a clock that never goes back), so the
    /// period is every event after the last one received before `since_ms`,
    /// found by walking the journal back from its head; decisions and
    /// failures are then counted from their `event_seq` indexes. An event
    /// stamped out of `seq` order (by milliseconds, within one group commit;
    /// on a shared database, by another daemon's clock) can land on the
    /// wrong side of `since_ms`.
    fn rule_activity(&self, since_ms: i64) -> Result<Vec<RuleActivity>, StoreError>;

    // ---- timers ----

    /// Up to `limit` pending timers due at or before `due_by_ms`, in due
    /// order (then creation order), after `after` (a timer's
    /// `(due_at_ms, id)`) when given: the next page of the backlog.
    fn due_timers(
        &self,
        due_by_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StoreError>;

    /// When the earliest pending timer is due; `None` when none is pending.
    fn next_timer_due(&self) -> Result<Option<i64>, StoreError>;

    /// How many timers are waiting to fire.
    fn pending_timer_count(&self) -> Result<i64, StoreError>;

    /// How many of the `limit` pending timers due soonest each version of
    /// each rule created, by rule and then hash: what waits on a rule
    /// edited or removed since.
    fn pending_timers_by_rule(&self, limit: usize) -> Result<Vec<RuleTimers>, StoreError>;

    /// The pending timer of one entity (`kind/id`) due soonest (then the
    /// first made): a campaign gate's deadline, a task's next rung.
    fn soonest_pending_timer(&self, entity: &EntityKey) -> Result<Option<TimerRecord>, StoreError>;

    /// The timers of one entity (`kind/id`), newest first, up to `limit`;
    /// only the pending ones when `pending_only`. A timer's entity is the
    /// subject of the event that created it ([`NewTimer::entity`]): SQLite
    /// finds an entity's timers through the events about it.
    fn entity_timers(
        &self,
        entity: &EntityKey,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StoreError>;

    // ---- gates ----

    /// Every send still held by a gate, in the order they were held. Held
    /// sends are few (they wait for people), so this is read whole: by the
    /// processor at start, and by `GET /v1/gates`.
    fn open_held_sends(&self) -> Result<Vec<HeldSendRecord>, StoreError>;

    /// One campaign's gate (`campaign` is its entity key): its held sends,
    /// released ones included, and its overrides, newest first, up to
    /// `limit` of each.
    fn gate(&self, campaign: &EntityKey, limit: usize) -> Result<GateRecord, StoreError>;

    /// The overrides of a campaign's gate, newest first, up to `limit`.
    fn gate_overrides(
        &self,
        campaign: &str,
        limit: usize,
    ) -> Result<Vec<GateOverrideRecord>, StoreError>;

    // ---- sources and sizes ----

    /// The value kept under `key` (a poll cursor, a hook's secret), if any.
    fn source_state(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// The greatest id of a `source` event named `<name>@...` (a schedule's
    /// last occurrence), if any. Cheap on a large journal.
    fn last_occurrence_id(&self, source: &str, name: &str) -> Result<Option<String>, StoreError>;

    /// Sizes of the store, cheap enough to read every few seconds.
    fn counts(&self) -> Result<Counts, StoreError>;

    /// A metric's samples in a period, grouped by a slice, ordered by slice
    /// value (no value last). Rates come counted by the database; durations
    /// with their values, for percentiles.
    fn sample_groups(&self, query: &SampleQuery) -> Result<Vec<SampleGroup>, StoreError>;

    // ---- several daemons ----

    /// The operations that coordinate several daemons on one database:
    /// [`StoreError::NotShared`] on a database only one daemon can use
    /// (SQLite), which has none.
    fn coordination(&self) -> Result<&dyn Coordination, StoreError> {
        Err(StoreError::NotShared)
    }
}

/// What several daemons sharing one database (PostgreSQL) coordinate with:
/// leases on partitions, sources and actions, reads by partition, and
/// notifications between them. Reached through [`Backend::coordination`].
pub trait Coordination {
    /// Takes or keeps the lease `name` for `holder` for `ttl` (on the
    /// database's clock): granted if nobody holds it, its holder let it
    /// expire, or `holder` already holds it (then extended). Returns the
    /// fencing token: the same while `holder` keeps the lease, a higher one
    /// each time it changes hands. `None` when someone else holds it.
    fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError>;

    /// Gives the lease back if `holder` holds it, so another can take it now.
    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// The leases not expired whose names start with `prefix`.
    fn live_leases(&self, prefix: &str) -> Result<Vec<LeaseRecord>, StoreError>;

    /// Up to `limit` events of these partitions not processed yet, in `seq`
    /// order.
    fn unprocessed_events(
        &self,
        partitions: &[u32],
        limit: usize,
    ) -> Result<Vec<JournaledEvent>, StoreError>;

    /// Like [`Backend::due_timers`], only for entities of these partitions.
    fn due_timers_in(
        &self,
        partitions: &[u32],
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StoreError>;

    /// Like [`Backend::open_held_sends`], only for campaigns of these partitions.
    fn held_sends_in(&self, partitions: &[u32]) -> Result<Vec<HeldSendRecord>, StoreError>;

    /// Claims up to `limit` pending actions whose next attempt is due by
    /// `now_ms` and whose lease is free or expired, for `holder`, for `ttl`:
    /// each comes back with its new fencing token
    /// ([`PendingAction::lease_token`]). Claims skip rows another daemon is
    /// claiming at the same moment (`SKIP LOCKED`).
    fn claim_actions(
        &self,
        holder: &str,
        ttl: Duration,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<PendingAction>, StoreError>;

    /// Extends `holder`'s leases on these actions (`(id, token)`) by `ttl`;
    /// returns the ids whose lease was lost (taken over, or no longer
    /// pending), which the caller must stop working on.
    fn renew_action_leases(
        &self,
        holder: &str,
        ttl: Duration,
        actions: &[(i64, i64)],
    ) -> Result<Vec<i64>, StoreError>;

    /// Subscribes this connection to `channel` (`LISTEN`).
    fn listen(&self, channel: &str) -> Result<(), StoreError>;

    /// Waits up to `timeout` for notifications on the channels this
    /// connection listens to; returns their `(channel, payload)`s, empty on
    /// timeout. A wake-up hint only: nothing depends on it being delivered.
    fn wait_for_notifications(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Sends a notification on `channel` now (`NOTIFY`).
    fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError>;
}

/// One line at start for what the migrations did: a new database is
/// created at `to`, an older one migrated from `from` (each migration's
/// own line is at debug level).
pub(crate) fn log_migrated(from: i64, to: i64) {
    if from == 0 {
        tracing::info!(version = to, "created the converge database");
    } else if from < to {
        tracing::info!(from, to, "migrated the converge database schema");
    }
}

/// Groups `(slice, value)` rows ordered by slice, then value, into
/// [`SampleGroup`]s; orders groups with the no-slice group last.
pub(crate) fn group_durations(
    rows: impl IntoIterator<Item = (Option<String>, f64)>,
) -> Vec<SampleGroup> {
    let mut groups: Vec<SampleGroup> = Vec::new();
    for (slice, value) in rows {
        match groups.last_mut() {
            Some(group) if group.slice == slice => {
                group.samples += 1;
                group.total += value;
                group.values.push(value);
            }
            _ => groups.push(SampleGroup {
                slice,
                samples: 1,
                total: value,
                values: vec![value],
            }),
        }
    }
    order_groups(&mut groups);
    groups
}

/// A period's decision counts per `(rule, shadow)` and failure counts per
/// rule as [`RuleActivity`] rows, in rule then shadow order (byte order,
/// whatever the database's collation). A rule's failures go on its live
/// row, else its shadow row, else a live row of their own.
pub(crate) fn merge_rule_activity(
    decisions: impl IntoIterator<Item = (String, bool, i64)>,
    failures: impl IntoIterator<Item = (String, i64)>,
) -> Vec<RuleActivity> {
    let mut rows: BTreeMap<(String, bool), RuleActivity> = BTreeMap::new();
    for (rule, shadow, decisions) in decisions {
        rows.entry((rule.clone(), shadow))
            .or_insert_with(|| RuleActivity {
                rule,
                shadow,
                decisions: 0,
                failures: 0,
            })
            .decisions += decisions;
    }
    for (rule, failures) in failures {
        let shadow_only =
            !rows.contains_key(&(rule.clone(), false)) && rows.contains_key(&(rule.clone(), true));
        rows.entry((rule.clone(), shadow_only))
            .or_insert_with(|| RuleActivity {
                rule,
                shadow: false,
                decisions: 0,
                failures: 0,
            })
            .failures += failures;
    }
    rows.into_values().collect()
}

/// Slice values ascending, the group without one last, whatever the database's NULL order.
pub(crate) fn order_groups(groups: &mut [SampleGroup]) {
    groups.sort_by(|a, b| match (&a.slice, &b.slice) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}
