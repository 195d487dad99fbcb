//! What goes into the store and what comes out of it.

use std::sync::Arc;

use converge_model::{CatchUp, Decision, EntityState, Event, RuleFailure, RuleNote, Sample};
use serde::de::IntoDeserializer;
use serde::de::value::StrDeserializer;
use serde::{Deserialize, Serialize};

use crate::StoreError;

pub use converge_model::records::{
    ExpectedArrival, GateChange, HeldSendRecord, HeldSendStatus, NewAction, NewDecision, NewTimer,
    PayloadJson, TimerKind, TimerRecord, TimerRecordKind, TimerStatus,
};

// ---- writes ----

/// Everything one [`Backend::write`](crate::Backend::write) commits, in one
/// transaction, in this order: `fences` checked, `appends`, then `processed` (with the events
/// it emits), then `fired_timers` and `skipped_timers`, then `outcomes`, then
/// `dead_letters`. So a
/// batch may process events it appends and record outcomes of actions it
/// creates; an expect cancelled by `processed` does not fire in the same
/// batch; and journal `seq`s follow that order: appended events, then
/// emitted events, then fired timers' events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub appends: Vec<NewEvent>,
    pub fired_timers: Vec<FiredTimer>,
    pub skipped_timers: Vec<SkippedTimer>,
    pub processed: Vec<ProcessedEvent>,
    pub outcomes: Vec<ActionOutcome>,
    /// Written after everything else, last value of a key wins.
    pub source_state: Vec<SourceState>,
    /// What people asked of dead letters (retry, drop).
    pub dead_letters: Vec<DeadLetterChange>,
    /// Pending timers people cancel.
    pub timer_cancellations: Vec<TimerCancellation>,
    /// Leases this batch is only valid under (shared databases): if any is
    /// no longer held with its token, the batch fails with
    /// [`crate::StoreError::Fenced`] and nothing is written.
    pub fences: Vec<Fence>,
    /// When set (shared databases), the actions `processed` creates are
    /// leased to this holder from the start, so no other daemon claims them
    /// while their creator runs them.
    pub new_action_lease: Option<ActionLease>,
    /// Retention: journal `seq`s of events to remove with everything
    /// recorded about them, written last. An event still needed (see
    /// [`PrunePage`]) or not processed is left alone.
    pub prune: Vec<i64>,
}

/// A lease a write depends on: `holder` must still hold `lease` with `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub holder: String,
    pub token: i64,
}

/// Who new actions are leased to, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionLease {
    pub holder: String,
    pub ttl_ms: i64,
}

/// A lease as [`Coordination::live_leases`](crate::Coordination::live_leases) reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    pub name: String,
    pub holder: String,
    pub token: i64,
    pub expires_at_ms: i64,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.source_state.is_empty()
            && self.appends.is_empty()
            && self.fired_timers.is_empty()
            && self.skipped_timers.is_empty()
            && self.processed.is_empty()
            && self.outcomes.is_empty()
            && self.dead_letters.is_empty()
            && self.timer_cancellations.is_empty()
            && self.fences.is_empty()
            && self.prune.is_empty()
    }
}

/// A value an event source keeps between starts (a poll cursor, a hook's
/// handshake secret), under a key the source chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    pub key: String,
    pub value: String,
    pub updated_at_ms: i64,
}

/// An event to journal. Deduplicated on `(source, id)`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub source: String,
    pub id: String,
    pub ty: String,
    pub subject: Option<String>,
    /// The hook it came in on: with `source` and `id`, its identity in the
    /// journal (`None` for converge's own sources).
    pub hook: Option<String>,
    /// The event in the CloudEvents JSON format, as replay reads it back.
    pub json: String,
    pub received_at_ms: i64,
}

impl NewEvent {
    pub fn from_event(event: &Event, received_at_ms: i64) -> NewEvent {
        NewEvent {
            source: event.source.clone(),
            id: event.id.clone(),
            ty: event.ty.clone(),
            subject: event.subject.clone(),
            hook: event.hook.clone(),
            json: event.json.clone(),
            received_at_ms,
        }
    }

    /// The `hook` column: empty for events of converge's own sources, so
    /// the unique `(id, source, hook)` holds for them too (NULLs are distinct).
    pub(crate) fn hook_column(&self) -> &str {
        self.hook.as_deref().unwrap_or("")
    }

    /// What its row keeps in columns, which its stored JSON leaves out.
    pub(crate) fn columns(&self) -> crate::event_body::Columns<'_> {
        crate::event_body::Columns {
            id: &self.id,
            ty: &self.ty,
            source: &self.source,
            subject: self.subject.as_deref(),
            hook: self.hook.as_deref(),
        }
    }
}

/// The outcome of processing one journaled event.
///
/// Written atomically with the processed cursor: the entity state is upserted,
/// decisions and their actions inserted, rule failures recorded, the event
/// marked processed and the cursor advanced to at least `seq`.
///
/// Timers: first every pending `expect` timer that `cancel_expects` matches
/// is cancelled, then `timers` are created (so an event never cancels the
/// timers its own processing created). `emits` are journaled like appends,
/// deduplicated on `(source, id)`, with `seq`s after every event before them
/// in the batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessedEvent {
    pub seq: i64,
    /// The entity's state after the event, when the event is about an entity.
    /// Shared: the processor keeps the same state in its cache for the
    /// entity's next event, rather than a copy of it per event.
    pub entity: Option<Arc<EntityState>>,
    pub decisions: Vec<NewDecision>,
    pub rule_failures: Vec<RuleFailure>,
    /// What the rules printed, bounded by the caller.
    pub rule_notes: Vec<RuleNote>,
    pub processed_at_ms: i64,
    /// Durable timers the decisions asked for; `created_by_seq` is `seq`,
    /// and each one's entity is the event's subject.
    pub timers: Vec<NewTimer>,
    /// The arrival this event is, for the `expect` timers waiting for it,
    /// and the expects its rules cancelled (`cancel_expects`).
    pub cancel_expects: Vec<ExpectedArrival>,
    /// Events the rules emitted, journaled in the same transaction.
    pub emits: Vec<NewEvent>,
    /// What the event did to convergence gates, applied in this order after
    /// the decisions are recorded.
    pub gate_changes: Vec<GateChange>,
    /// The metric samples the event finished (`report_samples`).
    pub samples: Vec<Sample>,
}

/// Fire a pending timer: journal `event` and mark the timer `fired`, in one
/// transaction. Nothing happens if the timer is no longer pending (fired,
/// cancelled or skipped in an earlier commit or earlier in this batch).
#[derive(Debug, Clone, PartialEq)]
pub struct FiredTimer {
    pub timer_id: i64,
    /// The event the timer journals; its `(source, id)` is unique to the timer.
    pub event: NewEvent,
    pub fired_at_ms: i64,
}

/// Close a pending timer without firing it (its catch-up policy is `skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedTimer {
    pub timer_id: i64,
    pub skipped_at_ms: i64,
}

/// What happened when the outbox ran an action.
///
/// An outcome for an action that is no longer `pending` is ignored (and
/// logged): delivery is at least once, so a late duplicate must not undo a
/// final status.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionOutcome {
    pub action_id: i64,
    pub result: OutcomeKind,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// What the plugin said; kept as the action's last detail (empty: none).
    pub detail: String,
    pub finished_at_ms: i64,
    /// The fencing token of the lease the attempt ran under (shared
    /// databases): the outcome is recorded only if the action's lease still
    /// has it, so a daemon that lost the lease cannot overwrite the new
    /// holder's work. `None`: not leased (a single daemon).
    pub lease_token: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    /// The action succeeded: its status becomes `done`.
    Done { external_id: Option<String> },
    /// The action failed for good (a permanent failure, or its attempts are
    /// used up): its status becomes `dead_letter` until a person retries or
    /// drops it. Recorded in its history with the detail.
    DeadLetter,
    /// The attempt failed; the action stays `pending` until
    /// `next_attempt_at_ms`. Recorded in its history with the detail.
    Retry { next_attempt_at_ms: i64 },
}

/// A person's decision about a dead letter, recorded in the action's
/// history with who, when and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterChange {
    pub action_id: i64,
    pub op: DeadLetterOp,
    pub by: String,
    pub reason: String,
    pub at_ms: i64,
}

/// A person cancels the pending timers a rule made: those of one version
/// of it, or about one entity, when given. The soonest due first, at most
/// `limit` in one commit, so a large backlog does not hold the journal up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerCancellation {
    pub rule: String,
    /// A rule version (its hash), or all of them.
    pub version: Option<String>,
    /// An entity key, or all of them.
    pub entity: Option<String>,
    pub limit: usize,
    pub by: String,
    pub reason: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterOp {
    /// Back to `pending` with its attempt count at zero (a fresh budget);
    /// same id, so the same idempotency key.
    Retry,
    /// To `dropped`: never run again.
    Drop,
}

/// What a [`DeadLetterChange`] did. Refusals are answers, not errors: one
/// person's stale request must not roll back the rest of a group commit.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadLetterOutcome {
    /// Pending again: what the outbox should run next.
    Retried(PendingAction),
    Dropped,
    /// The action is not a dead letter (any more): its status now.
    NotDeadLetter {
        status: ActionStatus,
    },
    /// No action has this id.
    Unknown,
}

/// What a [`Backend::write`](crate::Backend::write) did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteResult {
    /// One per [`WriteBatch::appends`], in the same order.
    pub appended: Vec<Appended>,
    /// One per [`WriteBatch::fired_timers`], in the same order: `None` when
    /// the timer was no longer pending and nothing was journaled.
    pub fired: Vec<Option<Appended>>,
    /// One per emitted event of every [`ProcessedEvent::emits`], in order.
    pub emitted: Vec<Appended>,
    /// Timers created, cancelled and skipped by this batch: when any, the
    /// next due time may have changed.
    pub timers_created: usize,
    pub timers_cancelled: usize,
    pub timers_skipped: usize,
    /// Every action the batch's `processed` created, in order, with its id:
    /// what the outbox should run next.
    pub actions: Vec<PendingAction>,
    /// One per [`WriteBatch::dead_letters`], in the same order.
    pub dead_letters: Vec<DeadLetterOutcome>,
    /// One per [`WriteBatch::timer_cancellations`], in the same order: the
    /// timers it cancelled (also counted in `timers_cancelled`).
    pub cancelled_by_people: Vec<usize>,
    /// Actions this batch moved to `dead_letter` (outcomes that were not
    /// ignored): with the retried and dropped ones, what the dead-letter
    /// gauge follows.
    pub dead_lettered: usize,
    /// Actions whose outcome was not recorded because their lease had
    /// passed to another holder (shared databases).
    pub outcomes_fenced: Vec<i64>,
    /// Events [`WriteBatch::prune`] removed.
    pub pruned: usize,
}

/// An event retention may remove, as
/// [`Backend::prunable`](crate::Backend::prunable) reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneCandidate {
    pub seq: i64,
    pub source: String,
    pub id: String,
    pub hook: Option<String>,
    pub received_at_ms: i64,
}

/// A page of the journal as retention sees it: the events after a `seq`,
/// in order, up to the first that was received at or after the cut-off or
/// is not processed yet. An event is still needed, and never a candidate,
/// while an action of it is not finished (pending, or a dead letter
/// waiting for a person), a timer it created is pending, or a send it
/// asked for is held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePage {
    /// The events that may go, oldest first.
    pub candidates: Vec<PruneCandidate>,
    /// The last `seq` looked at: the next page starts after it.
    pub examined_to: i64,
    /// Nothing after `examined_to` may go yet.
    pub finished: bool,
}

impl PrunePage {
    /// Rows are `(event, processed, needed)` in `seq` order after
    /// `after_seq`, at most `limit` of them.
    pub(crate) fn from_rows(
        rows: Vec<(PruneCandidate, bool, bool)>,
        after_seq: i64,
        before_ms: i64,
        limit: usize,
    ) -> PrunePage {
        let mut page = PrunePage {
            examined_to: after_seq,
            finished: rows.len() < limit,
            ..PrunePage::default()
        };
        for (event, processed, needed) in rows {
            if !processed || event.received_at_ms >= before_ms {
                page.finished = true;
                break;
            }
            page.examined_to = event.seq;
            if !needed {
                page.candidates.push(event);
            }
        }
        page
    }
}

/// Where an appended event is in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Journaled now, at `seq`.
    New { seq: i64 },
    /// The journal already held an event with this `(source, id)`, at `seq`,
    /// from an earlier batch or earlier in this one. Nothing was written.
    Duplicate { seq: i64 },
}

impl Appended {
    pub fn seq(self) -> i64 {
        match self {
            Appended::New { seq } | Appended::Duplicate { seq } => seq,
        }
    }
}

// ---- reads ----

/// A journaled event, as processing and replay read it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournaledEvent {
    pub seq: i64,
    pub json: String,
    pub received_at_ms: i64,
}

/// An action of the outbox that is still `pending`.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAction {
    pub id: i64,
    pub event_seq: i64,
    pub decision_id: i64,
    pub route: String,
    pub plugin: String,
    pub payload: PayloadJson,
    /// Attempts made so far.
    pub attempts: u32,
    /// When to try again after a failed attempt; `None` means now.
    pub next_attempt_at_ms: Option<i64>,
    /// The fencing token of this daemon's lease on the action (shared
    /// databases), to pass back with its outcome.
    pub lease_token: Option<i64>,
    /// The database instance it was created under; `None` for actions
    /// recorded before databases had one. Part of its idempotency key.
    pub instance: Option<i64>,
}

/// Everything the store knows about one event: for `converge explain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventTrail {
    pub seq: i64,
    pub source: String,
    pub id: String,
    /// The CloudEvents `type`.
    #[serde(rename = "type")]
    pub ty: String,
    pub subject: Option<String>,
    pub received_at_ms: i64,
    /// `None` while the event waits to be processed.
    pub processed_at_ms: Option<i64>,
    /// The webhook it came in on; `None` for converge's own sources.
    pub hook: Option<String>,
    pub decisions: Vec<DecisionRecord>,
    pub rule_failures: Vec<RuleFailure>,
    /// What the rules printed while deciding it; omitted when nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rule_notes: Vec<RuleNote>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    pub id: i64,
    pub decision: Decision,
    /// Made by a rule running in shadow (never acted on); omitted when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    pub actions: Vec<ActionRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRecord {
    pub id: i64,
    pub route: String,
    pub plugin: String,
    pub status: ActionStatus,
    /// Attempts since it was decided or last retried from the dead letters.
    pub attempts: u32,
    /// The last outcome's detail.
    pub detail: Option<String>,
    pub external_id: Option<String>,
    /// When a pending action is tried again.
    pub next_attempt_at_ms: Option<i64>,
    /// When it became `done`, `dead_letter` or `dropped`.
    pub finished_at_ms: Option<i64>,
    /// The idempotency key its payload names, when its plugin sends one
    /// other than the action's own (a released send's, derived from the
    /// send); the daemon shows whichever the plugin sends.
    #[serde(skip)]
    pub payload_key: Option<String>,
    /// The database instance it was created under (see
    /// [`PendingAction::instance`]).
    #[serde(skip)]
    pub instance: Option<i64>,
    /// Its failed attempts, dead-lettering, retries and drops, oldest first;
    /// omitted when empty (an action that succeeded at once).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ActionHistoryRecord>,
}

/// One entry of an action's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionHistoryRecord {
    pub at_ms: i64,
    pub kind: ActionHistoryKind,
    /// The attempt count at that point: the failed attempt's number, or the
    /// attempts made before a retry or drop.
    pub attempts: u32,
    /// The plugin's error, for a failed attempt or the dead-lettering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Who retried or dropped it, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where an action of the outbox stands, stored (and shown) by its serde
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting to run, or to be tried again after a failed attempt.
    Pending,
    /// Its plugin succeeded.
    Done,
    /// It failed for good, and waits for a person to retry or drop it.
    DeadLetter,
    /// A dead letter a person dropped: it never runs again.
    Dropped,
}

impl ActionStatus {
    /// The stored name, the same as its serde name.
    pub fn name(self) -> &'static str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Done => "done",
            ActionStatus::DeadLetter => "dead_letter",
            ActionStatus::Dropped => "dropped",
        }
    }
}

/// What an entry of an action's history records, stored (and shown) by its
/// serde name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionHistoryKind {
    /// An attempt failed; the action stayed pending.
    AttemptFailed,
    /// The action failed for good and became a dead letter.
    DeadLettered,
    /// A person retried the dead letter.
    Retried,
    /// A person dropped the dead letter.
    Dropped,
}

impl ActionHistoryKind {
    /// The stored name, the same as its serde name.
    pub fn name(self) -> &'static str {
        match self {
            ActionHistoryKind::AttemptFailed => "attempt_failed",
            ActionHistoryKind::DeadLettered => "dead_lettered",
            ActionHistoryKind::Retried => "retried",
            ActionHistoryKind::Dropped => "dropped",
        }
    }
}

/// An action with the event and decision it came from: a dead letter in
/// `GET /v1/dlq`, or any action in `GET /v1/dlq/{id}` (with its history).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionDetail {
    #[serde(flatten)]
    pub action: ActionRecord,
    pub event_seq: i64,
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub decision_id: i64,
    pub decision_kind: String,
    pub rule: String,
}

/// A pending action that failed at least once and waits for its next
/// attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryingAction {
    #[serde(flatten)]
    pub detail: ActionDetail,
    /// Its first failed attempt since it was decided, or since a person
    /// last retried it from the dead letters; `None` if the history no
    /// longer has it.
    pub failing_since_ms: Option<i64>,
}

/// A person's override of a gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateOverrideRecord {
    pub id: i64,
    pub campaign: String,
    /// The channel overridden; `None`: every channel.
    pub channel: Option<String>,
    pub by: String,
    pub reason: String,
    /// The `gate.override` event that carried it.
    pub event_seq: i64,
    /// How many held sends it released.
    pub released: i64,
    pub at_ms: i64,
}

/// One campaign's gate: its held sends (newest first, released ones
/// included) and its overrides (newest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GateRecord {
    pub held_sends: Vec<HeldSendRecord>,
    pub overrides: Vec<GateOverrideRecord>,
}

/// Sizes of the store, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub events: i64,
    /// Journaled after the processed cursor.
    pub unprocessed_events: i64,
    pub decisions: i64,
    pub actions_pending: i64,
    pub actions_done: i64,
    /// Actions that ever went to the dead letters (a retried one counts
    /// again if it fails again for good).
    pub actions_dead_lettered: i64,
    /// Dead letters now: waiting for a person to retry or drop them.
    pub dead_letters: i64,
}

/// A rule failure with the event it failed on, as the console lists the
/// newest ([`Backend::recent_rule_failures`](crate::Backend::recent_rule_failures)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentRuleFailure {
    pub event_seq: i64,
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub received_at_ms: i64,
    pub rule: String,
    pub message: String,
}

/// What one rule did on the events of a period
/// ([`Backend::rule_activity`](crate::Backend::rule_activity)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleActivity {
    pub rule: String,
    /// Decisions made by the rule running in shadow.
    pub shadow: bool,
    pub decisions: i64,
    pub failures: i64,
}

/// Pending timers one version of a rule created
/// ([`Backend::pending_timers_by_rule`](crate::Backend::pending_timers_by_rule)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTimers {
    pub rule: String,
    pub rule_hash: String,
    pub pending: i64,
}

// ---- conversions both backends store the same way ----

/// A timer kind's `kind` and `expect_type` columns.
pub(crate) fn timer_kind_columns(kind: &TimerKind) -> (&'static str, Option<&str>) {
    match kind {
        TimerKind::Schedule => (TimerRecordKind::Schedule.name(), None),
        TimerKind::Expect { expect_type } => (TimerRecordKind::Expect.name(), Some(expect_type)),
    }
}

/// A catch-up policy as stored: its serde name.
pub(crate) fn catch_up_name(catch_up: CatchUp) -> &'static str {
    match catch_up {
        CatchUp::FireLate => "fire_late",
        CatchUp::Skip => "skip",
    }
}

/// A value stored as its serde name (a catch-up policy, a status, a kind)
/// read back from `column` (`table.column`, for the error): the reverse of
/// [`catch_up_name`] and the `name()`s of the record enums.
pub(crate) fn parse_stored<'de, T: Deserialize<'de>>(
    column: &'static str,
    name: &'de str,
) -> Result<T, StoreError> {
    let name_of: StrDeserializer<'_, serde::de::value::Error> = name.into_deserializer();
    T::deserialize(name_of).map_err(|_| StoreError::UnknownValue {
        column,
        value: name.to_string(),
    })
}

impl PendingAction {
    /// An action `processed` just created: not attempted yet.
    pub(crate) fn created(
        id: i64,
        event_seq: i64,
        decision_id: i64,
        action: &NewAction,
        instance: i64,
        lease_token: Option<i64>,
    ) -> PendingAction {
        PendingAction {
            id,
            event_seq,
            decision_id,
            route: action.route.clone(),
            plugin: action.plugin.clone(),
            payload: action.payload.clone(),
            attempts: 0,
            next_attempt_at_ms: None,
            lease_token,
            instance: Some(instance),
        }
    }
}

impl ActionRecord {
    /// The idempotency key its plugin sends ([`idempotency_key`]).
    pub fn idempotency_key(&self) -> String {
        idempotency_key(self.id, self.instance, self.payload_key.as_deref())
    }
}

/// The idempotency key an action's plugin sends, the same on every attempt:
/// `converge-<instance>-action-<id>`, or for a released send, whose payload
/// names a key of its own (`converge-send-...`), that key with the instance
/// after `converge-`. The instance (16 hex digits) keeps the keys of a
/// database restored from a backup apart from those the original issued
/// after the backup, even where ids repeat. An action recorded before
/// databases had an instance (`None`) keeps the key it always had, so a
/// retry of it stays a duplicate to its receiver.
pub fn idempotency_key(action_id: i64, instance: Option<i64>, payload_key: Option<&str>) -> String {
    match (instance, payload_key) {
        (None, Some(key)) => key.to_string(),
        (None, None) => format!("converge-action-{action_id}"),
        (Some(instance), Some(key)) => {
            let rest = key.strip_prefix("converge-").unwrap_or(key);
            format!("converge-{}-{rest}", instance_hex(instance))
        }
        (Some(instance), None) => format!("converge-{}-action-{action_id}", instance_hex(instance)),
    }
}

/// An instance id as keys and reports show it: its 64 bits in hex.
pub fn instance_hex(instance: i64) -> String {
    format!("{:016x}", instance as u64)
}

/// An open span an entity's `flow` records, which the store indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenSpan {
    /// `blocked_since`: the entity or one of its channels is blocked.
    Blocked,
    /// `escalated_since`: escalated and not moved since.
    Escalated,
}

impl OpenSpan {
    /// This span's bit in an entity row's `open_spans` column, which the
    /// stores index (a partial index per bit).
    pub const fn bit(self) -> i64 {
        match self {
            OpenSpan::Blocked => 1,
            OpenSpan::Escalated => 2,
        }
    }

    /// Whether `entity`'s flow, or one of its channels', has this span open.
    pub fn is_open(self, entity: &EntityState) -> bool {
        let open = |flow: &converge_model::Flow| match self {
            OpenSpan::Blocked => flow.blocked_since.is_some(),
            OpenSpan::Escalated => flow.escalated_since.is_some(),
        };
        open(&entity.flow) || entity.channels.values().any(|channel| open(&channel.flow))
    }

    /// The `open_spans` column of `entity`'s row: the bits of its open spans.
    pub fn bits_of(entity: &EntityState) -> i64 {
        [OpenSpan::Blocked, OpenSpan::Escalated]
            .into_iter()
            .filter(|span| span.is_open(entity))
            .map(OpenSpan::bit)
            .sum()
    }
}

pub use converge_model::{SampleGroup, SampleQuery};

#[cfg(test)]
pub(crate) mod tests {
    use converge_model::{CatchUp, EntityKey, EntityState};

    use super::*;

    /// Each value's stored name reads back as itself.
    fn names_read_back<'a, T>(column: &'static str, all: &[T], name: fn(T) -> &'static str)
    where
        T: Copy + PartialEq + std::fmt::Debug + Deserialize<'a>,
    {
        for &value in all {
            assert_eq!(parse_stored::<T>(column, name(value)).unwrap(), value);
        }
    }

    #[test]
    fn stored_names_read_back_and_an_unknown_one_is_named() {
        names_read_back(
            "actions.status",
            &[
                ActionStatus::Pending,
                ActionStatus::Done,
                ActionStatus::DeadLetter,
                ActionStatus::Dropped,
            ],
            ActionStatus::name,
        );
        names_read_back(
            "action_history.kind",
            &[
                ActionHistoryKind::AttemptFailed,
                ActionHistoryKind::DeadLettered,
                ActionHistoryKind::Retried,
                ActionHistoryKind::Dropped,
            ],
            ActionHistoryKind::name,
        );
        names_read_back(
            "timers.kind",
            &[TimerRecordKind::Schedule, TimerRecordKind::Expect],
            TimerRecordKind::name,
        );
        names_read_back(
            "timers.status",
            &[
                TimerStatus::Pending,
                TimerStatus::Fired,
                TimerStatus::Cancelled,
                TimerStatus::Skipped,
            ],
            TimerStatus::name,
        );
        names_read_back(
            "held_sends.status",
            &[HeldSendStatus::Held, HeldSendStatus::Released],
            HeldSendStatus::name,
        );
        names_read_back(
            "timers.catch_up",
            &[CatchUp::FireLate, CatchUp::Skip],
            catch_up_name,
        );
        // The JSON shows the same names.
        assert_eq!(
            serde_json::to_value(ActionStatus::DeadLetter).unwrap(),
            "dead_letter"
        );
        assert_eq!(
            serde_json::to_value(ActionHistoryKind::AttemptFailed).unwrap(),
            "attempt_failed"
        );

        for unknown in ["failed", "Done", "dead-letter", ""] {
            let error = parse_stored::<ActionStatus>("actions.status", unknown).unwrap_err();
            assert!(
                matches!(&error, StoreError::UnknownValue { column: "actions.status", value }
                    if value == unknown),
                "{error:?}"
            );
            assert_eq!(
                error.to_string(),
                format!("the database holds an unknown actions.status `{unknown}`")
            );
            assert!(!error.is_retryable());
        }
    }

    /// Entities with a span open on them or on a channel, both spans, a
    /// field bearing a span's name, and none: their `open_spans` bits are
    /// 1, 1, 2, 3, 0 and 0.
    pub(crate) fn open_span_states() -> Vec<EntityState> {
        let at: chrono::DateTime<chrono::Utc> = "2026-11-02T10:00:00Z".parse().unwrap();
        let state =
            |id: &str| EntityState::new(&EntityKey::parse(&format!("task/{id}")).unwrap(), at);
        let mut blocked = state("T-1");
        blocked.flow.blocked_since = Some(at);
        let mut channel_blocked = state("T-2");
        channel_blocked
            .channels
            .insert("email".into(), Default::default());
        channel_blocked
            .channels
            .get_mut("email")
            .unwrap()
            .flow
            .blocked_since = Some(at);
        let mut escalated = state("T-3");
        escalated.channels.insert("paid".into(), Default::default());
        escalated
            .channels
            .get_mut("paid")
            .unwrap()
            .flow
            .escalated_since = Some(at);
        let mut both = state("T-4");
        both.flow.blocked_since = Some(at);
        both.flow.escalated_since = Some(at);
        let mut named_alike = state("T-5");
        named_alike
            .fields
            .insert("blocked_since".into(), "soon".into());
        named_alike
            .fields
            .insert("escalated_since".into(), "soon".into());
        vec![
            blocked,
            channel_blocked,
            escalated,
            both,
            named_alike,
            state("T-6"),
        ]
    }
}
