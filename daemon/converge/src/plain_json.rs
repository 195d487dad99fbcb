//! Plain JSON webhooks: a hook with a `[hooks.<name>.json]` table takes the
//! JSON that form tools, Zapier, Make, n8n and most SaaS "webhook" settings
//! send, and makes each object a CloudEvent by the table's templates.
//!
//! A template is text with JSON pointers in braces: `"campaign/{/campaign_id}"`.
//! A template that is one pointer takes the member as it is (a string, or a
//! number's digits); text around pointers makes a string. Without an `id`
//! template an event's id is a hash of its object, so a sender that posts
//! the same object twice (a retry) journals it once.

use converge_model::Event;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// `[hooks.<name>.json]`, validated.
#[derive(Debug, Clone)]
pub struct JsonMapping {
    pub ty: Template,
    pub source: Template,
    pub id: Option<Template>,
    pub subject: Option<Template>,
    pub time: Option<Template>,
}

/// Why a body makes no events: not JSON at all (the sender's bytes), or
/// JSON the templates cannot make events of.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Unmappable(String),
}

/// A string with `{/json/pointer}` parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Pointer(String),
}

impl Template {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{text}`: a `{{` without its `}}`"))?;
            let pointer = &after[..close];
            if !pointer.starts_with('/') {
                return Err(format!(
                    "`{text}`: `{{{pointer}}}` is not a JSON pointer (they start with `/`, like `{{/campaign/id}}`)"
                ));
            }
            parts.push(Part::Pointer(pointer.to_string()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("an empty template".into());
        }
        Ok(Template { parts })
    }

    /// The template filled from `object`; the error names a pointer that
    /// finds nothing, or finds an object, an array or a `null`.
    pub fn fill(&self, object: &Value) -> Result<String, String> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Pointer(p) => match object.pointer(p) {
                    Some(Value::String(s)) => text.push_str(s),
                    Some(Value::Number(n)) => text.push_str(&n.to_string()),
                    Some(Value::Bool(b)) => text.push_str(&b.to_string()),
                    Some(Value::Null) | None => return Err(format!("`{p}` is missing")),
                    Some(_) => {
                        return Err(format!("`{p}` is an object or an array, not a value"));
                    }
                },
            }
        }
        Ok(text)
    }
}

impl JsonMapping {
    /// The events of a plain JSON body: an object is one event, an array of
    /// objects one per object (journaled all or none). The error says which
    /// object and which template failed.
    pub fn events(&self, body: &[u8]) -> Result<Vec<Event>, MappingError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| MappingError::NotJson(e.to_string()))?;
        match value {
            Value::Object(_) => Ok(vec![self.event(value).map_err(MappingError::Unmappable)?]),
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    self.event(item)
                        .map_err(|e| MappingError::Unmappable(format!("item {i}: {e}")))
                })
                .collect(),
            _ => Err(MappingError::Unmappable(
                "a plain JSON body is an object, or an array of objects".into(),
            )),
        }
    }

    fn event(&self, object: Value) -> Result<Event, String> {
        if !object.is_object() {
            return Err("not an object".into());
        }
        let fill = |name: &str, template: &Template| {
            template
                .fill(&object)
                .map_err(|e| format!("`{name}` template: {e}"))
        };
        let id = match &self.id {
            Some(template) => fill("id", template)?,
            None => content_id(&object),
        };
        let mut attributes = Map::new();
        attributes.insert("specversion".into(), json!("1.0"));
        attributes.insert("id".into(), json!(id));
        attributes.insert("source".into(), json!(fill("source", &self.source)?));
        attributes.insert("type".into(), json!(fill("type", &self.ty)?));
        if let Some(template) = &self.subject {
            attributes.insert("subject".into(), json!(fill("subject", template)?));
        }
        if let Some(template) = &self.time {
            attributes.insert("time".into(), json!(fill("time", template)?));
        }
        attributes.insert("datacontenttype".into(), json!("application/json"));
        attributes.insert("data".into(), object);
        Event::from_value(Value::Object(attributes)).map_err(|e| e.to_string())
    }
}

/// An id for an object without one: a hash of its JSON (serde_json writes
/// members sorted by name), so the same object posted again, in any member
/// order, is a duplicate.
fn content_id(object: &Value) -> String {
    let digest = Sha256::digest(object.to_string().as_bytes());
    format!("sha256-{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(ty: &str, subject: Option<&str>, id: Option<&str>) -> JsonMapping {
        JsonMapping {
            ty: Template::parse(ty).unwrap(),
            source: Template::parse("hook/forms").unwrap(),
            id: id.map(|t| Template::parse(t).unwrap()),
            subject: subject.map(|t| Template::parse(t).unwrap()),
            time: None,
        }
    }

    #[test]
    fn templates_mix_text_and_pointers() {
        let object = json!({"campaign": {"id": "c-42"}, "n": 7, "tags": ["a"]});
        let fill = |t: &str| Template::parse(t).unwrap().fill(&object);
        assert_eq!(fill("campaign/{/campaign/id}").unwrap(), "campaign/c-42");
        assert_eq!(fill("{/n}").unwrap(), "7");
        assert_eq!(fill("brief.submitted").unwrap(), "brief.submitted");
        assert_eq!(fill("{/missing}").unwrap_err(), "`/missing` is missing");
        assert!(fill("{/tags}").unwrap_err().contains("not a value"));
        assert!(
            Template::parse("{campaign}")
                .unwrap_err()
                .contains("JSON pointer")
        );
        assert!(
            Template::parse("campaign/{/id")
                .unwrap_err()
                .contains("without")
        );
        assert!(Template::parse("").is_err());
    }

    #[test]
    fn an_object_becomes_an_event_with_the_object_as_its_data() {
        let m = mapping(
            "form.{/kind}",
            Some("campaign/{/campaign}"),
            Some("{/submission}"),
        );
        let events = m
            .events(br#"{"kind": "brief", "campaign": "c-1", "submission": 991}"#)
            .unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.id.as_str(), e.ty.as_str()), ("991", "form.brief"));
        assert_eq!(e.source, "hook/forms");
        assert_eq!(e.subject.as_deref(), Some("campaign/c-1"));
        assert_eq!(e.data["kind"], "brief");
    }

    #[test]
    fn without_an_id_the_same_object_in_any_order_gets_the_same_id_and_another_another() {
        let m = mapping("form.submitted", None, None);
        let a = m.events(br#"{"email": "a@example.com"}"#).unwrap();
        let again = m.events(br#"{"email": "a@example.com"}"#).unwrap();
        let b = m.events(br#"{"email": "b@example.com"}"#).unwrap();
        let reordered = m
            .events(br#"{"plan": "pro", "email": "a@example.com"}"#)
            .unwrap();
        let ordered = m
            .events(br#"{"email": "a@example.com", "plan": "pro"}"#)
            .unwrap();
        assert_eq!(a[0].id, again[0].id);
        assert_eq!(
            reordered[0].id, ordered[0].id,
            "member order does not matter"
        );
        assert_ne!(a[0].id, b[0].id);
        assert!(a[0].id.starts_with("sha256-"), "{}", a[0].id);
    }

    #[test]
    fn an_array_is_one_event_per_object_and_a_bad_one_names_its_item() {
        let m = mapping("row.added", Some("task/{/key}"), Some("{/key}"));
        let events = m.events(br#"[{"key": "T-1"}, {"key": "T-2"}]"#).unwrap();
        assert_eq!(events.len(), 2);
        let err = m.events(br#"[{"key": "T-1"}, {"other": 1}]"#).unwrap_err();
        assert_eq!(err.to_string(), "item 1: `id` template: `/key` is missing");
        assert!(
            m.events(b"42")
                .unwrap_err()
                .to_string()
                .contains("an object")
        );
        assert!(matches!(
            m.events(b"{oops").unwrap_err(),
            MappingError::NotJson(_)
        ));
    }

    #[test]
    fn a_time_that_is_not_rfc_3339_is_refused_naming_the_value() {
        let m = JsonMapping {
            time: Some(Template::parse("{/at}").unwrap()),
            ..mapping("t", None, None)
        };
        for (at, shown) in [
            (r#""yesterday""#, "yesterday"),
            ("1733000000", "1733000000"),
        ] {
            let body = format!(r#"{{"at": {at}}}"#);
            assert_eq!(
                m.events(body.as_bytes()).unwrap_err().to_string(),
                format!(
                    "not a valid CloudEvent: attribute `time` must be an RFC 3339 time such as 2026-11-02T09:00:00Z, got `{shown}`"
                )
            );
        }
        let ok = m.events(br#"{"at": "2026-11-23T10:00:00Z"}"#).unwrap();
        assert!(ok[0].time.is_some());
    }
}
