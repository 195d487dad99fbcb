//! The vocabulary every converge layer shares: canonical events, the entities
//! they are about and the state converge keeps for them, and the decisions rules
//! make. Nothing here does I/O.

pub mod decision;
pub mod decision_json;
pub mod entity;
mod entity_json;
pub mod event;
pub mod flow;
pub mod json_text;
pub mod records;
pub mod rfc3339;
pub mod rule_run;
pub mod sources;
pub mod stages;
#[cfg(any(test, feature = "strategies"))]
pub mod strategies;
pub mod text;

pub use decision::{CatchUp, Decision, DecisionInputs, DecisionKind, DecisionSite, DecisionTrace};
pub use entity::{EntityKey, EntityState};
pub use event::{Event, EventError, HOOK_EXTENSION, OwnEvent};
pub use flow::{
    Flow, Metric, MetricShape, Sample, SampleGroup, SampleQuery, Slice, Summary, percentile,
    point_in_time,
};
pub use rule_run::{RuleFailure, RuleNote};
pub use stages::{Role, StageRoles};
