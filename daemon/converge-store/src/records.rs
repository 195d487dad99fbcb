//! What goes into the store and what comes out of it.

use converge_model::{Decision, EntityState, Event};
use serde::Serialize;

// ---- writes ----

/// Everything one [`Store::write`](crate::Store::write) commits, in one
/// transaction, in this order: `appends`, then `processed`, then `outcomes`.
/// So a batch may process events it appends and record outcomes of actions it
/// creates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub appends: Vec<NewEvent>,
    pub processed: Vec<ProcessedEvent>,
    pub outcomes: Vec<ActionOutcome>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.processed.is_empty() && self.outcomes.is_empty()
    }
}

/// An event to journal. Deduplicated on `(source, id)`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub source: String,
    pub id: String,
    pub ty: String,
    pub subject: Option<String>,
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
            json: event.json.clone(),
            received_at_ms,
        }
    }
}

/// The outcome of processing one journaled event.
///
/// Written atomically with the processed cursor: the entity state is upserted,
/// decisions and their actions inserted, rule failures recorded, the event
/// marked processed and the cursor advanced to at least `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedEvent {
    pub seq: i64,
    /// The entity's state after the event, when the event is about an entity.
    pub entity: Option<EntityState>,
    pub decisions: Vec<NewDecision>,
    pub rule_failures: Vec<RuleFailure>,
    pub processed_at_ms: i64,
}

/// A decision and the actions its routes asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    pub decision: Decision,
    pub actions: Vec<NewAction>,
}

/// One action to put in the outbox, `pending` until an outcome finishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    pub route: String,
    pub plugin: String,
    pub payload_json: String,
}

/// A rule that failed on an event (error, timeout...): the event is still
/// processed, and the failure is kept for `converge explain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleFailure {
    pub rule: String,
    pub rule_hash: String,
    pub message: String,
}

/// What happened when the outbox ran an action.
///
/// An outcome for an action that is already `done` or `failed` is ignored (and
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
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    /// The action succeeded: its status becomes `done`.
    Done { external_id: Option<String> },
    /// The action failed for good, no more retries: its status becomes `failed`.
    Failed,
    /// The attempt failed; the action stays `pending` until `next_attempt_at_ms`.
    Retry { next_attempt_at_ms: i64 },
}

/// What a [`Store::write`](crate::Store::write) did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteResult {
    /// One per [`WriteBatch::appends`], in the same order.
    pub appended: Vec<Appended>,
    /// Every action the batch's `processed` created, in order, with its id:
    /// what the outbox should run next.
    pub actions: Vec<PendingAction>,
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
    pub payload_json: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When to try again after a failed attempt; `None` means now.
    pub next_attempt_at_ms: Option<i64>,
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
    pub decisions: Vec<DecisionRecord>,
    pub rule_failures: Vec<RuleFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    pub id: i64,
    pub decision: Decision,
    pub actions: Vec<ActionRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRecord {
    pub id: i64,
    pub route: String,
    pub plugin: String,
    /// `pending`, `done` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// The last outcome's detail.
    pub detail: Option<String>,
    pub external_id: Option<String>,
    /// When a pending action is tried again.
    pub next_attempt_at_ms: Option<i64>,
    /// When it became `done` or `failed`.
    pub finished_at_ms: Option<i64>,
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
    pub actions_failed: i64,
}
