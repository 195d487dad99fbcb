//! Entities (campaigns, tasks, assets...) and the state converge keeps for them.
//!
//! How an event changes an entity's state (documented for rule authors in
//! `docs/entities.md`):
//! - an event's `subject` of the form `<kind>/<id>` names the entity; other
//!   subjects, or none, leave every entity untouched;
//! - when `data` is a JSON object, its members are merged into the state:
//!   `stage` and `owner` (strings) set those attributes, every other member is
//!   set in `fields`, and a member whose value is `null` is removed;
//! - when `data.channel` is a string, the event is about that channel of the
//!   entity (a campaign's email, social, paid...): the other members are merged
//!   into `channels.<channel>` by the same rules, and the entity-level fields,
//!   stage and owner stay as they are;
//! - `updated_at` moves to the event's time only when something changed, and
//!   `stage_since` when the stage changed; `events` counts every event applied.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::flow::Flow;

/// `campaign/c-42`: the kind and id of an entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    pub kind: String,
    pub id: String,
}

impl EntityKey {
    /// A subject names an entity when it is `<kind>/<id>` with a lowercase kind
    /// (`[a-z][a-z0-9_-]*`) and a non-empty id without whitespace.
    pub fn parse(subject: &str) -> Option<EntityKey> {
        let (kind, id) = subject.split_once('/')?;
        let mut chars = kind.chars();
        let kind_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        let id_ok = !id.is_empty() && !id.chars().any(char::is_whitespace);
        (kind_ok && id_ok).then(|| EntityKey {
            kind: kind.to_string(),
            id: id.to_string(),
        })
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

impl EntityKey {
    /// The key as text, `<kind>/<id>`, as `Display` writes it, built in
    /// one allocation rather than through the formatter.
    pub fn text(&self) -> String {
        key_text(&self.kind, &self.id)
    }
}

/// An entity's key as text, `<kind>/<id>`, as `EntityKey`'s `Display`
/// writes it: built in one allocation, where `key().to_string()` copied
/// the kind and the id into a key and then went through the formatter.
/// Several of these are made per event (the gate, the expects cancelled,
/// the samples, the entity's row).
fn key_text(kind: &str, id: &str) -> String {
    let mut text = String::with_capacity(kind.len() + 1 + id.len());
    text.push_str(kind);
    text.push('/');
    text.push_str(id);
    text
}

/// Everything converge knows about one entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    pub kind: String,
    pub id: String,
    pub stage: Option<String>,
    pub owner: Option<String>,
    pub fields: Map<String, Value>,
    /// Per-channel sub-state of a campaign, by channel name.
    pub channels: BTreeMap<String, ChannelState>,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    /// Last time an event or a rule changed anything.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    /// When the stage last changed: what "stalled" is measured from.
    #[serde(serialize_with = "crate::rfc3339::option")]
    pub stage_since: Option<DateTime<Utc>>,
    /// How many events were applied.
    pub events: u64,
    pub last_event_type: Option<String>,
    /// The item's open spans and counts, for the reports (`flow.rs`).
    #[serde(default, skip_serializing_if = "Flow::is_empty")]
    pub flow: Flow,
}

/// One channel of a campaign: its own stage, owner and fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelState {
    pub stage: Option<String>,
    pub owner: Option<String>,
    pub fields: Map<String, Value>,
    #[serde(serialize_with = "crate::rfc3339::option")]
    pub updated_at: Option<DateTime<Utc>>,
    /// The channel's own open spans and counts, for the reports.
    #[serde(default, skip_serializing_if = "Flow::is_empty")]
    pub flow: Flow,
}

impl EntityState {
    pub fn new(key: &EntityKey, at: DateTime<Utc>) -> EntityState {
        EntityState {
            kind: key.kind.clone(),
            id: key.id.clone(),
            stage: None,
            owner: None,
            fields: Map::new(),
            channels: BTreeMap::new(),
            created_at: at,
            updated_at: at,
            stage_since: None,
            events: 0,
            last_event_type: None,
            flow: Flow::default(),
        }
    }

    pub fn key(&self) -> EntityKey {
        EntityKey {
            kind: self.kind.clone(),
            id: self.id.clone(),
        }
    }

    /// The entity's key as text, `<kind>/<id>`: `key().text()` without
    /// copying the kind and the id into a key first.
    pub fn key_text(&self) -> String {
        key_text(&self.kind, &self.id)
    }

    /// Applies one event's `data`, as the module documentation describes.
    /// Returns whether anything other than the event counters changed.
    pub fn apply_event(&mut self, event_type: &str, data: &Value, at: DateTime<Utc>) -> bool {
        self.events += 1;
        self.last_event_type = Some(event_type.to_string());
        let Value::Object(members) = data else {
            return false;
        };
        let changed = match members.get("channel").and_then(Value::as_str) {
            Some(channel) => {
                let channel_state = self.channels.entry(channel.to_string()).or_default();
                let mut changed = false;
                for (name, value) in members.iter().filter(|(name, _)| *name != "channel") {
                    changed |= channel_state.set(name, value.clone());
                }
                if changed {
                    channel_state.updated_at = Some(at);
                }
                changed
            }
            None => {
                let mut changed = false;
                for (name, value) in members {
                    changed |= self.set(name, value.clone(), at);
                }
                changed
            }
        };
        if changed {
            self.updated_at = at;
        }
        changed
    }

    /// Sets one member: `stage`, `owner` or a field. `null` removes it.
    /// Returns whether the state changed.
    pub fn set(&mut self, name: &str, value: Value, at: DateTime<Utc>) -> bool {
        let changed = match name {
            "stage" => {
                let changed = set_attribute(&mut self.stage, value);
                if changed {
                    self.stage_since = Some(at);
                }
                changed
            }
            "owner" => set_attribute(&mut self.owner, value),
            _ => set_field(&mut self.fields, name, value),
        };
        if changed {
            self.updated_at = at;
        }
        changed
    }

    /// Sets one member of a channel (`stage`, `owner` or a field; `null`
    /// removes it), creating the channel when a value is set on one that does
    /// not exist yet. Rules use it to pause and resume channels. Returns
    /// whether the state changed; the channel's and the entity's `updated_at`
    /// move to `at` only then.
    pub fn set_channel(
        &mut self,
        channel: &str,
        name: &str,
        value: Value,
        at: DateTime<Utc>,
    ) -> bool {
        let channel_state = match self.channels.get_mut(channel) {
            Some(state) => state,
            None if value.is_null() => return false,
            None => self.channels.entry(channel.to_string()).or_default(),
        };
        let changed = channel_state.set(name, value);
        if changed {
            channel_state.updated_at = Some(at);
            self.updated_at = at;
        }
        changed
    }
}

impl ChannelState {
    fn set(&mut self, name: &str, value: Value) -> bool {
        match name {
            "stage" => set_attribute(&mut self.stage, value),
            "owner" => set_attribute(&mut self.owner, value),
            _ => set_field(&mut self.fields, name, value),
        }
    }
}

/// `stage` and `owner` are strings; any other JSON value is kept as its text.
fn set_attribute(slot: &mut Option<String>, value: Value) -> bool {
    let new = match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    };
    let changed = *slot != new;
    *slot = new;
    changed
}

fn set_field(fields: &mut Map<String, Value>, name: &str, value: Value) -> bool {
    if value.is_null() {
        return fields.remove(name).is_some();
    }
    if fields.get(name) == Some(&value) {
        return false;
    }
    fields.insert(name.to_string(), value);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn subjects_that_name_entities() {
        let key = EntityKey::parse("campaign/c-42").unwrap();
        assert_eq!((key.kind.as_str(), key.id.as_str()), ("campaign", "c-42"));
        assert_eq!(
            EntityKey::parse("task/JIRA-7/sub").unwrap().id,
            "JIRA-7/sub"
        );
        for bad in [
            "campaign",
            "/c-42",
            "campaign/",
            "Campaign/c",
            "task/a b",
            "9x/a",
        ] {
            assert_eq!(EntityKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn merges_fields_stage_and_owner() {
        let key = EntityKey::parse("task/T-1").unwrap();
        let mut s = EntityState::new(&key, at("2026-11-01T00:00:00Z"));
        let t1 = at("2026-11-02T00:00:00Z");
        assert!(s.apply_event(
            "task.updated",
            &json!({"stage": "review", "owner": "ana", "priority": "high", "brief": "x"}),
            t1
        ));
        assert_eq!(s.stage.as_deref(), Some("review"));
        assert_eq!(s.owner.as_deref(), Some("ana"));
        assert_eq!(s.fields["priority"], "high");
        assert_eq!((s.updated_at, s.stage_since), (t1, Some(t1)));

        let t2 = at("2026-11-03T00:00:00Z");
        assert!(s.apply_event("task.updated", &json!({"brief": null, "owner": "bo"}), t2));
        assert!(!s.fields.contains_key("brief"));
        assert_eq!(s.stage_since, Some(t1), "stage did not change");

        let t3 = at("2026-11-04T00:00:00Z");
        assert!(!s.apply_event("task.viewed", &json!({"owner": "bo"}), t3));
        assert_eq!(s.updated_at, t2, "nothing changed");
        assert_eq!(s.events, 3);
    }

    #[test]
    fn channel_events_update_only_their_channel() {
        let key = EntityKey::parse("campaign/c-42").unwrap();
        let t = at("2026-11-02T00:00:00Z");
        let mut s = EntityState::new(&key, t);
        s.apply_event(
            "campaign.channel.updated",
            &json!({"channel": "email", "stage": "approved", "offer_code": "FALL25"}),
            t,
        );
        assert_eq!(s.stage, None);
        let email = &s.channels["email"];
        assert_eq!(email.stage.as_deref(), Some("approved"));
        assert_eq!(email.fields["offer_code"], "FALL25");
        assert_eq!(email.updated_at, Some(t));
    }

    #[test]
    fn set_channel_changes_one_channel_member() {
        let key = EntityKey::parse("campaign/c-42").unwrap();
        let t0 = at("2026-11-01T00:00:00Z");
        let t1 = at("2026-11-02T00:00:00Z");
        let mut s = EntityState::new(&key, t0);
        assert!(!s.set_channel("email", "paused_reason", Value::Null, t1));
        assert!(
            s.channels.is_empty(),
            "removing from no channel creates none"
        );
        assert!(s.set_channel("email", "paused", json!(true), t1));
        assert_eq!(s.channels["email"].fields["paused"], json!(true));
        assert_eq!(
            (s.updated_at, s.channels["email"].updated_at),
            (t1, Some(t1))
        );
        let t2 = at("2026-11-03T00:00:00Z");
        assert!(!s.set_channel("email", "paused", json!(true), t2));
        assert_eq!(s.updated_at, t1, "nothing changed");
        assert!(s.set_channel("email", "stage", json!("approved"), t2));
        assert_eq!(s.channels["email"].stage.as_deref(), Some("approved"));
        assert_eq!(s.stage, None);
    }

    proptest::proptest! {
        #[test]
        fn a_key_as_text_is_what_its_display_writes(kind in ".{0,12}", id in ".{0,24}") {
            let key = EntityKey { kind: kind.clone(), id: id.clone() };
            proptest::prop_assert_eq!(key.text(), key.to_string());
            let state = EntityState::new(&key, at("2026-12-06T18:00:00Z"));
            proptest::prop_assert_eq!(state.key_text(), key.to_string());
        }
    }
}
