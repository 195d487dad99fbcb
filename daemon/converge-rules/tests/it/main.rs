//! Behaviour of the rules crate through its public API, one binary for all.

mod compile;
mod decisions;
mod evaluate;
mod example_rules;
mod measures;
mod metadata;
mod script;
mod trace;

use chrono::{DateTime, Utc};
use converge_model::{EntityState, Event};
use converge_rules::{RuleLimits, RuleSet, RuleSource};
use serde_json::{Value, json};

pub fn source(name: &str, text: &str) -> RuleSource {
    RuleSource {
        name: name.to_string(),
        path: format!("rules/{name}.rhai").into(),
        source: text.to_string(),
    }
}

pub fn compile(rules: &[(&str, &str)]) -> RuleSet {
    let sources = rules
        .iter()
        .map(|(name, text)| source(name, text))
        .collect();
    match RuleSet::compile(sources, &RuleLimits::default()) {
        Ok(set) => set,
        Err(errors) => panic!("rules do not compile: {errors:#?}"),
    }
}

pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("test timestamp")
}

/// The daemon clock every test uses.
pub fn now() -> DateTime<Utc> {
    at("2026-11-23T10:00:00Z")
}

/// A CloudEvent as a sender would post it.
pub fn event(ty: &str, subject: Option<&str>, data: Value) -> Event {
    let mut v = json!({
        "specversion": "1.0", "id": "e-1", "source": "/tests", "type": ty,
        "time": "2026-11-23T09:59:00Z", "data": data,
    });
    if let Some(subject) = subject {
        v["subject"] = json!(subject);
    }
    Event::from_value(v).expect("test event")
}

/// The entity the event names, with the event applied, as the daemon passes it.
pub fn entity_after(event: &Event, before: Option<EntityState>) -> EntityState {
    let key = event.entity_key().expect("event names an entity");
    let mut state = before.unwrap_or_else(|| EntityState::new(&key, at("2026-11-01T00:00:00Z")));
    state.apply_event(&event.ty, &event.data, event.time.expect("event time"));
    state
}
