use std::path::PathBuf;

use converge_model::{Decision, DecisionKind, EntityKey, EntityState};
use converge_store::{
    Durability, NewAction, NewDecision, NewEvent, ProcessedEvent, RuleFailure, Store, WriteBatch,
};
use tempfile::TempDir;

/// A database file in a directory deleted when the test ends.
pub struct TestDb {
    pub dir: TempDir,
}

impl TestDb {
    pub fn new() -> TestDb {
        TestDb {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Nested, so `open` has to create the parent directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("state").join("converge.db")
    }

    pub fn open(&self) -> Store {
        Store::open(&self.path(), Durability::Full).unwrap()
    }

    pub fn reader(&self) -> Store {
        Store::open_reader(&self.path()).unwrap()
    }
}

pub fn event(source: &str, id: &str) -> NewEvent {
    let subject = format!("task/{id}");
    NewEvent {
        source: source.into(),
        id: id.into(),
        ty: "task.updated".into(),
        json: format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"{source}","type":"task.updated","subject":"{subject}"}}"#
        ),
        subject: Some(subject),
        received_at_ms: 1_000,
    }
}

pub fn appends(events: Vec<NewEvent>) -> WriteBatch {
    WriteBatch {
        appends: events,
        ..WriteBatch::default()
    }
}

pub fn entity(id: &str, stage: &str) -> EntityState {
    let key = EntityKey::parse(&format!("task/{id}")).unwrap();
    let mut state = EntityState::new(&key, "2026-11-01T00:00:00Z".parse().unwrap());
    state.set(
        "stage",
        stage.into(),
        "2026-11-02T00:00:00Z".parse().unwrap(),
    );
    state
}

pub fn notify(rule: &str, to: &str) -> Decision {
    Decision {
        rule: rule.into(),
        rule_hash: format!("{rule}-hash"),
        kind: DecisionKind::Notify {
            to: to.into(),
            message: format!("hello {to}"),
        },
        trace: None,
    }
}

pub fn action(route: &str) -> NewAction {
    NewAction {
        route: route.into(),
        plugin: "webhook-out".into(),
        payload_json: format!(r#"{{"route":"{route}"}}"#),
    }
}

/// Processing that decided to notify `to` through two routes.
pub fn processed_with_actions(seq: i64, id: &str, to: &str) -> ProcessedEvent {
    ProcessedEvent {
        seq,
        entity: Some(entity(id, "review")),
        decisions: vec![NewDecision {
            decision: notify("stalled", to),
            shadow: false,
            actions: vec![action("slack"), action("mail")],
        }],
        rule_failures: vec![],
        processed_at_ms: 2_000,
        ..ProcessedEvent::default()
    }
}

/// Processing that decided nothing.
pub fn processed_plain(seq: i64) -> ProcessedEvent {
    ProcessedEvent {
        seq,
        entity: None,
        decisions: vec![],
        rule_failures: vec![],
        processed_at_ms: 2_000,
        ..ProcessedEvent::default()
    }
}

pub fn failure(rule: &str) -> RuleFailure {
    RuleFailure {
        rule: rule.into(),
        rule_hash: format!("{rule}-hash"),
        message: "rule exceeded its time budget".into(),
    }
}
