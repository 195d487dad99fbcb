//! What a rule's run for an event leaves besides its decisions: a failure
//! (an error, a limit hit) or the lines it printed. The rules make them, the
//! journal keeps them with the event's trail, `converge explain` shows them.

use serde::Serialize;

/// A rule that failed at run time for one event: its decisions are
/// discarded, the event is still processed and the other rules still run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleFailure {
    pub rule: String,
    pub rule_hash: String,
    /// `path:line:column: message`, e.g. `rules/x.rhai:3:9: Too many operations`
    /// (`path: message` when Rhai gives no position).
    pub message: String,
}

/// A line a rule printed with `print` or `debug`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleNote {
    pub rule: String,
    pub message: String,
}
