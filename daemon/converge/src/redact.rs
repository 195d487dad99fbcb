//! Fields a hook marks secret (`hooks.<name>.secret_fields`), hidden
//! wherever converge shows an event's data to a person: `converge explain`
//! (its report and `--json`) and the console's trail. The journal keeps the
//! data whole, since rules and actions need it; only what is shown is
//! redacted.
//!
//! A field is a JSON pointer into the event's `data` (RFC 6901: `/contact/
//! email`, `~1` for a `/` and `~0` for a `~` in a name), where a `*`
//! segment matches every member of an object or element of an array
//! (`/contacts/*/email`).

use std::collections::HashMap;

use converge_model::EntityState;
use converge_store::EventTrail;
use serde_json::Value;

/// What a redacted value is shown as.
pub const REDACTED: &str = "[redacted]";

/// Printed values shorter than this are not searched for in rule notes:
/// a secret `"no"` would blank every "no" a rule printed.
const SHORTEST_SEARCHED: usize = 4;

/// One `secret_fields` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Name(String),
    Any,
}

impl FieldPath {
    pub fn parse(pointer: &str) -> Result<FieldPath, String> {
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(format!(
                "`{pointer}` is not a JSON pointer into the event's data: it starts with `/`, as in `/contact/email`"
            ));
        };
        let segments = rest
            .split('/')
            .map(|segment| match segment {
                "*" => Ok(Segment::Any),
                _ => unescape(segment).map(Segment::Name).ok_or_else(|| {
                    format!("`{pointer}`: `~` is written `~0` and `/` in a name `~1`")
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FieldPath { segments })
    }

    /// Replaces every value the path reaches with [`REDACTED`], returning
    /// the values replaced.
    fn redact(&self, data: &mut Value, found: &mut Vec<Value>) {
        redact_at(&self.segments, data, found);
    }
}

fn unescape(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

fn redact_at(segments: &[Segment], value: &mut Value, found: &mut Vec<Value>) {
    let Some((first, rest)) = segments.split_first() else {
        if !matches!(value, Value::Null) {
            found.push(std::mem::replace(value, Value::from(REDACTED)));
        }
        return;
    };
    match (first, value) {
        (Segment::Any, Value::Object(members)) => {
            for member in members.values_mut() {
                redact_at(rest, member, found);
            }
        }
        (Segment::Any, Value::Array(elements)) => {
            for element in elements {
                redact_at(rest, element, found);
            }
        }
        (Segment::Name(name), Value::Object(members)) => {
            if let Some(member) = members.get_mut(name) {
                redact_at(rest, member, found);
            }
        }
        (Segment::Name(name), Value::Array(elements)) => {
            if let Some(element) = name.parse::<usize>().ok().and_then(|i| elements.get_mut(i)) {
                redact_at(rest, element, found);
            }
        }
        _ => {}
    }
}

/// The secret fields of every listed hook that has some.
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    by_hook: HashMap<String, Vec<FieldPath>>,
}

impl Redaction {
    pub fn new(by_hook: impl IntoIterator<Item = (String, Vec<FieldPath>)>) -> Redaction {
        Redaction {
            by_hook: by_hook
                .into_iter()
                .filter(|(_, fields)| !fields.is_empty())
                .collect(),
        }
    }

    /// Redacts the data of the event `trail` is about, by the fields its
    /// hook marks secret, and the secret values themselves wherever the
    /// trail repeats them: what the rules printed, the decisions (their
    /// messages and traces), rule failures and actions' details.
    pub fn apply(&self, data: &mut Value, trail: &mut EventTrail) {
        let Some(fields) = trail
            .hook
            .as_deref()
            .and_then(|hook| self.by_hook.get(hook))
        else {
            return;
        };
        let mut found = Vec::new();
        for field in fields {
            field.redact(data, &mut found);
        }
        let mut secrets = Vec::new();
        for value in &found {
            printed(value, &mut secrets);
        }
        if secrets.is_empty() {
            return;
        }
        // Longest first, so a secret containing another goes whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let hide = |text: &mut String| {
            for secret in &secrets {
                if text.contains(secret.as_str()) {
                    *text = text.replace(secret.as_str(), REDACTED);
                }
            }
        };
        for note in &mut trail.rule_notes {
            hide(&mut note.message);
        }
        for failure in &mut trail.rule_failures {
            hide(&mut failure.message);
        }
        for record in &mut trail.decisions {
            if let Ok(mut value) = serde_json::to_value(&record.decision) {
                each_string(&mut value, &hide);
                if let Ok(decision) = serde_json::from_value(value) {
                    record.decision = decision;
                }
            }
            for action in &mut record.actions {
                if let Some(detail) = &mut action.detail {
                    hide(detail);
                }
            }
        }
    }
}

impl Redaction {
    /// Hides, in an entity's fields and its channels' fields, what any
    /// hook's secret fields name: a state merges the data of events from
    /// every hook, and which hook set a field is not kept.
    pub fn entity(&self, state: &mut EntityState) {
        let mut found = Vec::new();
        for field in self.by_hook.values().flatten() {
            let mut fields = Value::Object(std::mem::take(&mut state.fields));
            field.redact(&mut fields, &mut found);
            if let Value::Object(map) = fields {
                state.fields = map;
            }
            for channel in state.channels.values_mut() {
                let mut fields = Value::Object(std::mem::take(&mut channel.fields));
                field.redact(&mut fields, &mut found);
                if let Value::Object(map) = fields {
                    channel.fields = map;
                }
            }
        }
    }
}

fn each_string(value: &mut Value, f: &impl Fn(&mut String)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(elements) => elements.iter_mut().for_each(|e| each_string(e, f)),
        Value::Object(members) => members.values_mut().for_each(|m| each_string(m, f)),
        _ => {}
    }
}

/// The texts a rule printing `value` (or a part of it) would show.
fn printed(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(elements) => elements.iter().for_each(|e| printed(e, out)),
        Value::Object(members) => members.values().for_each(|m| printed(m, out)),
        Value::Bool(_) | Value::Null => return,
    }
    out.retain(|s| s.chars().count() >= SHORTEST_SEARCHED);
}

#[cfg(test)]
mod tests {
    use converge_model::{Decision, DecisionKind, RuleFailure, RuleNote};
    use converge_store::DecisionRecord;
    use serde_json::json;

    use super::*;

    fn redaction(fields: &[&str]) -> Redaction {
        Redaction::new([(
            "forms".to_string(),
            fields
                .iter()
                .map(|f| FieldPath::parse(f).unwrap())
                .collect(),
        )])
    }

    /// A trail of an event on `hook` whose rules printed `notes`, failed
    /// with `failure` and escalated with `reason`.
    fn trail(hook: Option<&str>, notes: &[&str], failure: &str, reason: &str) -> EventTrail {
        EventTrail {
            seq: 1,
            source: "/forms".into(),
            id: "f-1".into(),
            ty: "lead.created".into(),
            subject: Some("campaign/c-1".into()),
            received_at_ms: 0,
            processed_at_ms: Some(1),
            hook: hook.map(str::to_string),
            decisions: vec![DecisionRecord {
                id: 1,
                decision: Decision {
                    rule: "intake".into(),
                    rule_hash: "0011223344556677".into(),
                    kind: DecisionKind::Escalate {
                        to: "ops".into(),
                        reason: reason.into(),
                        level: 1,
                    },
                    trace: None,
                },
                shadow: false,
                actions: vec![],
            }],
            rule_failures: vec![RuleFailure {
                rule: "strict".into(),
                rule_hash: "8899aabbccddeeff".into(),
                message: failure.into(),
            }],
            rule_notes: notes
                .iter()
                .map(|message| RuleNote {
                    rule: "intake".into(),
                    message: message.to_string(),
                })
                .collect(),
        }
    }

    fn reason(trail: &EventTrail) -> &str {
        match &trail.decisions[0].decision.kind {
            DecisionKind::Escalate { reason, .. } => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_fields_named_are_redacted_and_their_values_wherever_the_trail_repeats_them() {
        let mut data = json!({
            "contact": {"email": "ana@example.com", "name": "Ana"},
            "contacts": [{"email": "bo@example.com"}, {"email": "cy@example.com", "phone": 5550100}],
            "a/b": "slash",
            "campaign": "c-1"
        });
        let mut trail = trail(
            Some("forms"),
            &[
                "from ana@example.com about c-1",
                "cy@example.com called 5550100",
            ],
            "no such lead bo@example.com",
            "check ana@example.com",
        );
        redaction(&[
            "/contact/email",
            "/contacts/*/email",
            "/contacts/1/phone",
            "/a~1b",
            "/absent/x",
        ])
        .apply(&mut data, &mut trail);
        assert_eq!(
            data,
            json!({
                "contact": {"email": REDACTED, "name": "Ana"},
                "contacts": [{"email": REDACTED}, {"email": REDACTED, "phone": REDACTED}],
                "a/b": REDACTED,
                "campaign": "c-1"
            })
        );
        assert_eq!(trail.rule_notes[0].message, "from [redacted] about c-1");
        assert_eq!(trail.rule_notes[1].message, "[redacted] called [redacted]");
        assert_eq!(trail.rule_failures[0].message, "no such lead [redacted]");
        assert_eq!(reason(&trail), "check [redacted]");
    }

    #[test]
    fn another_hooks_events_and_short_values_in_texts_are_left_alone() {
        let r = redaction(&["/code"]);
        let mut data = json!({"code": "ok"});
        for hook in [Some("other"), None] {
            let mut other = trail(hook, &["status ok"], "", "ok");
            r.apply(&mut data, &mut other);
            assert_eq!(data, json!({"code": "ok"}));
        }
        let mut forms = trail(Some("forms"), &["status ok"], "", "ok");
        r.apply(&mut data, &mut forms);
        assert_eq!(data, json!({"code": REDACTED}));
        assert_eq!(forms.rule_notes[0].message, "status ok");
        assert_eq!(reason(&forms), "ok");
    }

    #[test]
    fn an_entity_shows_no_field_any_hook_marks_secret() {
        let mut state = EntityState::new(
            &converge_model::EntityKey::parse("campaign/c-1").unwrap(),
            chrono::DateTime::UNIX_EPOCH,
        );
        state.fields = json!({"contact": {"email": "ana@example.com", "name": "Ana"}})
            .as_object()
            .unwrap()
            .clone();
        let email = converge_model::entity::ChannelState {
            fields: json!({"contact": {"email": "bo@example.com"}, "list": "news"})
                .as_object()
                .unwrap()
                .clone(),
            ..Default::default()
        };
        state.channels.insert("email".into(), email);
        redaction(&["/contact/email"]).entity(&mut state);
        assert_eq!(
            Value::Object(state.fields),
            json!({"contact": {"email": REDACTED, "name": "Ana"}})
        );
        assert_eq!(
            Value::Object(state.channels["email"].fields.clone()),
            json!({"contact": {"email": REDACTED}, "list": "news"})
        );
    }

    #[test]
    fn a_field_that_is_not_a_pointer_is_refused_with_the_way_to_write_it() {
        assert!(
            FieldPath::parse("contact.email")
                .unwrap_err()
                .contains("starts with `/`")
        );
        assert!(FieldPath::parse("/a~2").unwrap_err().contains("`~0`"));
        assert_eq!(
            FieldPath::parse("/x~0y/*").unwrap().segments,
            vec![Segment::Name("x~y".into()), Segment::Any]
        );
    }
}
