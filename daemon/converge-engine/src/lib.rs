//! The one decision path of converge. [`Engine::decide`] takes an event,
//! the state of the entity it names, the held sends, the rules and the
//! clock, and returns everything the event causes: the entity's new state,
//! decisions with their traces and actions, gate changes, timers to create
//! and expects to cancel, emitted events. It does no I/O.
//!
//! The daemon calls it for every journaled event (with one database or a
//! shared one); [`Simulation`] calls it for `converge rules test` and
//! `converge replay`, so a rule decides the same way live, in its tests and
//! in replay.
//!
//! - `decide`: the entry point, the time rule ([`decision_time`]) and the
//!   gate rule (a hold beats a release within one event);
//! - `gates`: held sends, and overrides;
//! - `query`: what rules' `entities(..)` read, from any [`EntitySource`];
//! - `routes`: which plugin acts on which decision, and the action payload;
//! - `effects`: decisions into timers and events, a fired timer's event;
//! - `flow`: the metrics' bookkeeping: stage roles, an item's flow, samples;
//! - `simulate`: the daemon in memory, on a clock the caller moves.

pub mod decide;
pub mod effects;
pub mod flow;
pub mod gates;
pub mod query;
pub mod routes;
pub mod simulate;

pub use decide::{
    Engine, Input, Outcome, Overruled, Release, Rules, changes_entity, decision_time,
};
pub use flow::{Blocked, Role, StageRoles, blocked_now};
pub use gates::{Gates, HeldSend, Override, OverrideEvent};
pub use query::{EntitySource, InMemory};
pub use routes::{ActionPayload, Route};
pub use simulate::{Origin, Simulated, Simulation};
