//! Canonical events: CloudEvents 1.0 in the JSON format, validated once at intake.

use chrono::{DateTime, SubsecRound, Utc};
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::entity::EntityKey;
use crate::text::quoted;

mod wire;

/// A validated CloudEvent as converge journals it.
///
/// `json` is the event re-serialised in the CloudEvents JSON format: it is what
/// the journal stores and what replay reads back, so nothing the sender put in
/// the event (extensions, `dataschema`, ...) is lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub source: String,
    pub ty: String,
    pub subject: Option<String>,
    pub time: Option<DateTime<Utc>>,
    /// The webhook it came in on (the `convergehook` extension, which only
    /// converge writes): part of its identity, so a delivery on one hook can
    /// neither suppress nor stand in for another hook's. `None` for events
    /// converge's own sources journal (file drops, polls, schedules, timers).
    pub hook: Option<String>,
    /// The W3C trace context of whoever produced it (the CloudEvents
    /// distributed-tracing `traceparent` extension), kept as sent: the
    /// daemon's spans for the event continue that trace.
    pub traceparent: Option<String>,
    /// The `data` member when it is JSON; `Null` when absent or binary.
    pub data: Value,
    pub json: String,
}

/// The attributes of an event converge writes itself: a fired timer, an
/// `emit`, a gate override, a schedule's occurrence. All of them go through
/// the cloudevents crate's builder in [`Event::own`], so they are written
/// alike: JSON data (`datacontenttype` `application/json`), the time in
/// milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnEvent<'a> {
    pub id: String,
    /// One of [`crate::sources`].
    pub source: &'a str,
    pub ty: &'a str,
    pub subject: Option<&'a str>,
    pub time: DateTime<Utc>,
    pub data: Value,
    /// Extension attributes with integer values (an emit's depth).
    pub extensions: &'a [(&'a str, i64)],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not a valid CloudEvent: {0}")]
    Invalid(String),
    #[error(
        "the `{HOOK_EXTENSION}` extension is written by converge: it names the hook an event came in on"
    )]
    HookExtension,
    #[error("a batch must be a JSON array of CloudEvents")]
    NotABatch,
    #[error("event {index} of the batch: {error}")]
    InBatch {
        index: usize,
        error: Box<EventError>,
    },
}

/// The CloudEvents extension attribute that records an event's hook.
pub const HOOK_EXTENSION: &str = "convergehook";

/// The CloudEvents distributed-tracing extension: a W3C `traceparent`.
pub const TRACEPARENT_EXTENSION: &str = "traceparent";

/// Who wrote the JSON being read: the `convergehook` extension is refused
/// from outside and read back from the journal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    Outside,
    Journal,
}

impl Event {
    /// Parses one event in structured JSON mode (`application/cloudevents+json`).
    pub fn from_json(body: &[u8]) -> Result<Event, EventError> {
        Event::read(body, Writer::Outside)
    }

    /// Parses a batch (`application/cloudevents-batch+json`): a JSON array of events.
    /// One invalid event rejects the whole batch, so a batch is journaled all or nothing.
    pub fn batch_from_json(body: &[u8]) -> Result<Vec<Event>, EventError> {
        // Each event's text, as sent, read then as a single event is.
        let items: Vec<&RawValue> = match serde_json::from_slice(body) {
            Ok(items) => items,
            Err(_) => {
                let value: Value =
                    serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
                debug_assert!(!value.is_array(), "an array's items are JSON values");
                return Err(EventError::NotABatch);
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                Event::read(item.get().as_bytes(), Writer::Outside).map_err(|error| {
                    EventError::InBatch {
                        index,
                        error: Box::new(error),
                    }
                })
            })
            .collect()
    }

    pub fn from_value(value: Value) -> Result<Event, EventError> {
        Event::parse(value, Writer::Outside)
    }

    /// One pass for the plainly valid events (nearly all, see
    /// [`wire`]); anything else is read through the cloudevents crate.
    fn read(text: &[u8], writer: Writer) -> Result<Event, EventError> {
        match wire::Wire::read(text) {
            Some(wire) => {
                if writer == Writer::Outside {
                    check_extension_names(wire.extension_names())?;
                }
                wire.into_event().checked(writer)
            }
            None => Event::read_through_crate(text, writer),
        }
    }

    /// [`Event::from_json`] through the cloudevents crate alone: the
    /// reference the one-pass reader is held to, by a property test here
    /// and by the `cloudevent` fuzz target.
    #[doc(hidden)]
    pub fn from_json_through_crate(body: &[u8]) -> Result<Event, EventError> {
        Event::read_through_crate(body, Writer::Outside)
    }

    /// One parse, straight into a CloudEvent, for the events that are
    /// valid; anything else is read again through [`Event::parse`], whose
    /// errors name what is wrong.
    fn read_through_crate(text: &[u8], writer: Writer) -> Result<Event, EventError> {
        match serde_json::from_slice::<cloudevents::Event>(text) {
            Ok(event) if is_v10(&event) => Event::from_cloudevent(event, writer),
            _ => {
                let value: Value =
                    serde_json::from_slice(text).map_err(|e| EventError::Json(e.to_string()))?;
                Event::parse(value, writer)
            }
        }
    }

    fn parse(value: Value, writer: Writer) -> Result<Event, EventError> {
        if !value.is_object() {
            return Err(EventError::Invalid("an event must be a JSON object".into()));
        }
        check_attributes(&value)?;
        let event: cloudevents::Event =
            serde_json::from_value(value).map_err(|e| EventError::Invalid(e.to_string()))?;
        Event::from_cloudevent(event, writer)
    }

    fn from_cloudevent(mut event: cloudevents::Event, writer: Writer) -> Result<Event, EventError> {
        if writer == Writer::Outside {
            check_extension_names(event.iter_extensions().map(|(name, _)| name))?;
        }
        let json = serde_json::to_string(&event).map_err(|e| EventError::Invalid(e.to_string()))?;
        let read = Event {
            hook: event.extension(HOOK_EXTENSION).map(ToString::to_string),
            id: event.id().to_string(),
            source: event.source().to_string(),
            ty: event.ty().to_string(),
            traceparent: event
                .extension(TRACEPARENT_EXTENSION)
                .map(ToString::to_string),
            json,
            subject: event.subject().map(str::to_string),
            time: event.time().copied(),
            // Written into `json` above, so the data is moved out, not copied.
            data: match event.take_data().2 {
                Some(cloudevents::Data::Json(v)) => v,
                Some(cloudevents::Data::String(s)) => Value::String(s),
                Some(cloudevents::Data::Binary(_)) | None => Value::Null,
            },
        };
        read.checked(writer)
    }

    /// The event as read, once what converge asks of every event beyond
    /// the CloudEvents format holds: a `convergehook` only from the
    /// journal, a non-empty `id`, `source` and `type`, and from outside a
    /// `subject` that is not empty when present (as CloudEvents 1.0 asks).
    /// The journal's events are read as they were accepted, so an event an
    /// older converge took is never refused on its way back.
    fn checked(self, writer: Writer) -> Result<Event, EventError> {
        if self.hook.is_some() && writer == Writer::Outside {
            return Err(EventError::HookExtension);
        }
        for (name, value) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.ty),
        ] {
            if value.is_empty() {
                return Err(EventError::Invalid(format!(
                    "attribute `{name}` must not be empty"
                )));
            }
        }
        if writer == Writer::Outside && self.subject.as_deref() == Some("") {
            return Err(EventError::Invalid(
                "attribute `subject` must not be empty: leave it out when the event is about no entity"
                    .into(),
            ));
        }
        Ok(self)
    }

    /// An event converge writes itself: see [`OwnEvent`].
    pub fn own(attributes: OwnEvent<'_>) -> Result<Event, EventError> {
        let OwnEvent {
            id,
            source,
            ty,
            subject,
            time,
            data,
            extensions,
        } = attributes;
        let mut builder = EventBuilderV10::new()
            .id(id)
            .source(source)
            .ty(ty)
            .time(time.trunc_subsecs(3))
            .data("application/json", data);
        // An empty subject is refused from senders; one carried over from
        // an event journaled before that (an emit's cause) means, as it
        // did, no entity.
        if let Some(subject) = subject.filter(|subject| !subject.is_empty()) {
            builder = builder.subject(subject);
        }
        for &(name, value) in extensions {
            builder = builder.extension(name, value);
        }
        let event = builder
            .build()
            .map_err(|e| EventError::Invalid(e.to_string()))?;
        Event::from_cloudevent(event, Writer::Outside)
    }

    /// Reads back an event the journal stored.
    pub fn from_journal(json: &str) -> Result<Event, EventError> {
        Event::read(json.as_bytes(), Writer::Journal)
    }

    /// The event as it came in on `hook`: the hook is recorded in its JSON
    /// (the `convergehook` extension), so the journal, replay and `explain`
    /// all see it. Events from outside never carry the extension (parsing
    /// refuses it), so it is added, never replaced.
    ///
    /// `traceparent` is the context of the daemon's intake span, recorded
    /// only when the sender gave none: the daemon is then the event's
    /// producer, and processing continues the trace its intake began.
    pub fn arrived_on(mut self, hook: &str, traceparent: Option<String>) -> Event {
        debug_assert!(self.hook.is_none());
        // `json` is a compact object written when the event was read, so the
        // extensions go in as members before its closing brace, without
        // parsing and writing the event again (a CloudEvent's extensions
        // have no order). Each value is a JSON string, escaped by serde_json.
        let mut members = String::with_capacity(32 + hook.len());
        push_member(&mut members, HOOK_EXTENSION, hook);
        if self.traceparent.is_none()
            && let Some(traceparent) = traceparent
        {
            push_member(&mut members, TRACEPARENT_EXTENSION, &traceparent);
            self.traceparent = Some(traceparent);
        }
        let end = self
            .json
            .rfind('}')
            .expect("an event's own JSON is an object");
        self.json.insert_str(end, &members);
        self.hook = Some(hook.to_string());
        self
    }

    /// The entity this event is about, when its `subject` names one.
    pub fn entity_key(&self) -> Option<EntityKey> {
        self.subject.as_deref().and_then(EntityKey::parse)
    }
}

/// The cloudevents crate also reads CloudEvents 0.3; converge takes 1.0 only.
fn is_v10(event: &cloudevents::Event) -> bool {
    event.specversion() == cloudevents::event::SpecVersion::V10
}

/// `,"<name>":<value as a JSON string>`.
fn push_member(out: &mut String, name: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    // Writing a &str as JSON cannot fail.
    out.push_str(&serde_json::to_string(value).unwrap_or_default());
}

/// What the cloudevents crate refuses, checked first so that the sender's
/// error names the attribute: the crate reports a missing attribute as a
/// generic serde error, and a bad one as what its parser said (`premature
/// end of input` for a `time` of `yesterday`). It refuses no event the
/// crate reads: the same parsers, the same members; a null attribute or
/// extension counts as absent, as there.
fn check_attributes(value: &Value) -> Result<(), EventError> {
    let invalid = |message: String| Err(EventError::Invalid(message));
    for name in ["specversion", "id", "source", "type"] {
        match value.get(name) {
            None => return invalid(format!("required attribute `{name}` is missing")),
            Some(Value::String(_)) => {}
            Some(_) => return invalid(format!("attribute `{name}` must be a string")),
        }
    }
    match value.get("specversion").and_then(Value::as_str) {
        Some("1.0") => {}
        Some(other) => {
            return invalid(format!(
                "unsupported specversion `{other}`: converge accepts CloudEvents 1.0"
            ));
        }
        None => unreachable!("checked above"),
    }
    let Some(members) = value.as_object() else {
        unreachable!("an object, checked by the caller")
    };
    for (name, value) in members {
        if name == "data" {
            // Under a content type that is not JSON the crate reads `data`
            // as text (a null too).
            let content_type = members.get("datacontenttype").and_then(Value::as_str);
            if let Some(content_type) = content_type.filter(|t| !wire::is_json_content_type(t))
                && !value.is_string()
            {
                return invalid(format!(
                    "with `datacontenttype` {}, `data` must be a string: JSON data needs a JSON content type such as application/json",
                    quoted(content_type)
                ));
            }
            continue;
        }
        let text = match value {
            Value::Null => continue,
            Value::String(text) => Some(text.as_str()),
            _ => None,
        };
        match (name.as_str(), text) {
            ("specversion" | "id" | "source" | "type", _) => {}
            ("datacontenttype" | "subject", Some(_)) => {}
            ("time", Some(time)) => {
                if DateTime::parse_from_rfc3339(time).is_err() {
                    return invalid(format!(
                        "attribute `time` must be an RFC 3339 time such as 2026-11-02T09:00:00Z, got {}",
                        quoted(time)
                    ));
                }
            }
            ("dataschema", Some(uri)) => {
                if let Err(e) = url::Url::parse(uri) {
                    return invalid(format!(
                        "attribute `dataschema` must be an absolute URI, got {}: {e}",
                        quoted(uri)
                    ));
                }
            }
            ("data_base64", Some(encoded)) => {
                use base64::prelude::*;
                if members.contains_key("data") {
                    return invalid("an event carries `data` or `data_base64`, not both".into());
                }
                if let Err(e) = BASE64_STANDARD.decode(encoded) {
                    return invalid(format!("attribute `data_base64` is not base64: {e}"));
                }
            }
            ("datacontenttype" | "subject" | "time" | "dataschema" | "data_base64", None) => {
                return invalid(format!("attribute `{name}` must be a string"));
            }
            (_, _) => {
                if !wire::is_extension_value(value) {
                    return invalid(format!(
                        "extension attribute `{name}` must be a string, a boolean or an integer, got {}",
                        kind_of(value)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// CloudEvents 1.0: attribute names consist of lower-case ASCII letters
/// and digits. Checked on events from outside only (see
/// [`Event::checked`]). The error names every bad name, sorted: the
/// cloudevents crate keeps extensions in a hash map, so the order they
/// come in differs between the two readers and from one reading to the
/// next.
fn check_extension_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), EventError> {
    let is_valid = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let mut bad: Vec<&str> = names.filter(|name| !is_valid(name)).collect();
    if bad.is_empty() {
        return Ok(());
    }
    bad.sort_unstable();
    let attributes = if bad.len() == 1 {
        "extension attribute"
    } else {
        "extension attributes"
    };
    let names: Vec<String> = bad.into_iter().map(quoted).collect();
    Err(EventError::Invalid(format!(
        "{attributes} {} must be named with lower-case letters and digits only (a-z, 0-9)",
        names.join(", ")
    )))
}

/// What a JSON value is, for an error.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number that is not a 64-bit signed integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Result<Event, EventError> {
        Event::from_json(json.as_bytes())
    }

    #[test]
    fn parses_a_structured_event_and_keeps_extensions() {
        let e = event(
            r#"{"specversion":"1.0","id":"e-1","source":"/jira","type":"task.updated",
                "subject":"task/JIRA-7","time":"2026-11-23T10:00:00Z",
                "datacontenttype":"application/json","data":{"stage":"review"},"tenant":"acme"}"#,
        )
        .unwrap();
        assert_eq!(e.id, "e-1");
        assert_eq!(e.ty, "task.updated");
        assert_eq!(e.data["stage"], "review");
        assert_eq!(e.entity_key().unwrap().to_string(), "task/JIRA-7");
        let back = Event::from_journal(&e.json).unwrap();
        assert_eq!(back, e);
        assert!(e.json.contains("\"tenant\":\"acme\""));
    }

    #[test]
    fn the_hook_is_recorded_by_converge_and_refused_from_outside() {
        let json = r#"{"specversion":"1.0","id":"e-1","source":"/jira","type":"t"}"#;
        let e = event(json).unwrap();
        assert_eq!(e.hook, None);
        let on_hook = e.arrived_on("jira", None);
        assert_eq!(on_hook.hook.as_deref(), Some("jira"));
        let back = Event::from_journal(&on_hook.json).unwrap();
        assert_eq!(back, on_hook);
        // What the journal wrote is refused when it comes from outside.
        assert_eq!(
            Event::from_json(on_hook.json.as_bytes()),
            Err(EventError::HookExtension)
        );
        // Added to the JSON as written, escaped, after data ending in a brace.
        let json =
            r#"{"specversion":"1.0","id":"e-2","source":"/jira","type":"t","data":{"s":"}"}}"#;
        let on_hook = event(json).unwrap().arrived_on("ji\"ra\\", None);
        assert!(
            on_hook.json.ends_with(r#""}"},"convergehook":"ji\"ra\\"}"#),
            "{}",
            on_hook.json
        );
        let back = Event::from_journal(&on_hook.json).unwrap();
        assert_eq!(back.hook.as_deref(), Some("ji\"ra\\"));
        assert_eq!(back, on_hook);
    }

    #[test]
    fn a_senders_traceparent_is_kept_and_the_daemons_recorded_only_without_one() {
        const SENDER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        const INTAKE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let traced = event(&format!(
            r#"{{"specversion":"1.0","id":"e-1","source":"/x","type":"t","traceparent":"{SENDER}"}}"#
        ))
        .unwrap()
        .arrived_on("h", Some(INTAKE.into()));
        assert_eq!(traced.traceparent.as_deref(), Some(SENDER));
        assert!(!traced.json.contains(INTAKE));

        let untraced = event(r#"{"specversion":"1.0","id":"e-2","source":"/x","type":"t"}"#)
            .unwrap()
            .arrived_on("h", Some(INTAKE.into()));
        assert_eq!(untraced.traceparent.as_deref(), Some(INTAKE));
        // Extensions serialize in no fixed order: compare what they say.
        let back = Event::from_journal(&untraced.json).unwrap();
        assert_eq!(back.traceparent, untraced.traceparent);
        assert_eq!(back.hook, untraced.hook);
    }

    #[test]
    fn names_the_missing_attribute() {
        let err = event(r#"{"specversion":"1.0","source":"/x","type":"t"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a valid CloudEvent: required attribute `id` is missing"
        );
    }

    #[test]
    fn names_the_attribute_the_crate_refuses() {
        let refused = |members: &str| {
            let text =
                format!(r#"{{"specversion":"1.0","id":"1","source":"/x","type":"t",{members}}}"#);
            // Both readers answer alike: the one pass gives up on each of these.
            let through_crate = Event::from_json_through_crate(text.as_bytes()).unwrap_err();
            let err = event(&text).unwrap_err();
            assert_eq!(err, through_crate, "{members}");
            err.to_string()
        };
        let cases = [
            (
                r#""time":"yesterday""#,
                "attribute `time` must be an RFC 3339 time such as 2026-11-02T09:00:00Z, got `yesterday`",
            ),
            (
                r#""time":"2026-12-01T10:00:00""#,
                "attribute `time` must be an RFC 3339 time such as 2026-11-02T09:00:00Z, got `2026-12-01T10:00:00`",
            ),
            (r#""time":5"#, "attribute `time` must be a string"),
            (r#""subject":["a"]"#, "attribute `subject` must be a string"),
            (
                r#""datacontenttype":5"#,
                "attribute `datacontenttype` must be a string",
            ),
            (
                r#""dataschema":"schemas/brief.json""#,
                "attribute `dataschema` must be an absolute URI, got `schemas/brief.json`: relative URL without a base",
            ),
            (
                r#""data_base64":"!!!""#,
                "attribute `data_base64` is not base64: Invalid symbol 33, offset 0.",
            ),
            (
                r#""data":{"a":1},"data_base64":"aGk=""#,
                "an event carries `data` or `data_base64`, not both",
            ),
            (
                r#""datacontenttype":"text/plain","data":{"a":1}"#,
                "with `datacontenttype` `text/plain`, `data` must be a string: JSON data needs a JSON content type such as application/json",
            ),
            (
                r#""brief":{"id":7}"#,
                "extension attribute `brief` must be a string, a boolean or an integer, got an object",
            ),
            (
                r#""subject":"""#,
                "attribute `subject` must not be empty: leave it out when the event is about no entity",
            ),
            (
                r#""Brief":"b-1""#,
                "extension attribute `Brief` must be named with lower-case letters and digits only (a-z, 0-9)",
            ),
            (
                r#""trace-id":"t-1""#,
                "extension attribute `trace-id` must be named with lower-case letters and digits only (a-z, 0-9)",
            ),
            (
                r#""sAbject":"","Odd":true"#,
                "extension attributes `Odd`, `sAbject` must be named with lower-case letters and digits only (a-z, 0-9)",
            ),
            (
                r#""\u00e9t\u00e9":true"#,
                "extension attribute `\u{e9}t\u{e9}` must be named with lower-case letters and digits only (a-z, 0-9)",
            ),
            (
                r#""weight":0.5"#,
                "extension attribute `weight` must be a string, a boolean or an integer, got a number that is not a 64-bit signed integer",
            ),
        ];
        for (members, message) in cases {
            assert_eq!(
                refused(members),
                format!("not a valid CloudEvent: {message}"),
                "{members}"
            );
        }
        // A long value is cut in the error.
        let long = format!(r#""time":"{}""#, "9".repeat(10_000));
        let err = refused(&long);
        assert!(
            err.ends_with(&format!("got `{}…`", "9".repeat(64))),
            "{err}"
        );
    }

    #[test]
    fn what_the_crate_reads_is_still_read() {
        // Nulls count as absent; text under a text content type; integer,
        // boolean and string extensions; base64 data alone.
        for members in [
            r#""time":null,"subject":null,"dataschema":null,"ext":null"#,
            r#""datacontenttype":"text/plain","data":"hello""#,
            r#""datacontenttype":"application/vnd.brief+json","data":{"a":1}"#,
            r#""depth":3,"flag":true,"note":"x","time":"2026-12-01T10:00:00+01:00""#,
            r#""data_base64":"aGVsbG8=","dataschema":"https://example.com/s.json""#,
        ] {
            let text =
                format!(r#"{{"specversion":"1.0","id":"1","source":"/x","type":"t",{members}}}"#);
            let read = event(&text).unwrap_or_else(|e| panic!("{members}: {e}"));
            let mut through_crate = Event::from_json_through_crate(text.as_bytes()).unwrap();
            // The crate writes extensions in a hash map's order.
            let json = |e: &Event| serde_json::from_str::<Value>(&e.json).unwrap();
            assert_eq!(json(&through_crate), json(&read), "{members}");
            through_crate.json = read.json.clone();
            assert_eq!(through_crate, read, "{members}");
        }
    }

    #[test]
    fn numbers_in_data_read_back_from_the_journal_unchanged() {
        // Each read as the nearest double, so written and read again it is
        // the same double (serde_json's `float_roundtrip`): without it,
        // 70000000000000000344811693 was journaled as 7e+25 and read back
        // as 7.000000000000001e+25.
        for number in [
            "70000000000000000344811693",
            "7e25",
            "0.1",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
            "-0.0",
            "123456789.12345679",
        ] {
            let text = format!(
                r#"{{"specversion":"1.0","id":"1","source":"/x","type":"t","data":{{"a":{number}}}}}"#
            );
            let read = event(&text).unwrap();
            let back = Event::from_journal(&read.json).unwrap();
            assert_eq!(back, read, "{number}");
        }
    }

    #[test]
    fn the_journal_reads_back_what_an_older_converge_accepted() {
        // An empty subject and extension names outside a-z and 0-9 are
        // refused from senders; events journaled before that read back.
        for members in [r#""subject":"""#, r#""Odd-Name":"x","ext2":1"#] {
            let text =
                format!(r#"{{"specversion":"1.0","id":"1","source":"/x","type":"t",{members}}}"#);
            assert!(event(&text).is_err(), "{members}");
            let back = Event::from_journal(&text).unwrap_or_else(|e| panic!("{members}: {e}"));
            assert_eq!(back.id, "1");
        }
    }

    #[test]
    fn rejects_other_spec_versions_and_empty_ids() {
        assert!(matches!(
            event(r#"{"specversion":"0.3","id":"1","source":"/x","type":"t"}"#),
            Err(EventError::Invalid(_))
        ));
        assert!(matches!(
            event(r#"{"specversion":"1.0","id":"","source":"/x","type":"t"}"#),
            Err(EventError::Invalid(_))
        ));
    }

    #[test]
    fn a_batch_is_rejected_whole_and_names_the_bad_event() {
        let err = Event::batch_from_json(
            br#"[{"specversion":"1.0","id":"1","source":"/x","type":"t"},{"specversion":"1.0","id":"2","source":"/x"}]"#,
        )
        .unwrap_err();
        assert!(matches!(err, EventError::InBatch { index: 1, .. }), "{err}");
        assert_eq!(Event::batch_from_json(b"{}"), Err(EventError::NotABatch));
        // The cloudevents crate reads 0.3 too; the batch is still refused.
        let err = Event::batch_from_json(
            br#"[{"specversion":"1.0","id":"1","source":"/x","type":"t"},{"specversion":"0.3","id":"2","source":"/x","type":"t"}]"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, EventError::InBatch { index: 1, error } if matches!(**error, EventError::Invalid(_))),
            "{err}"
        );
    }

    #[test]
    fn converges_own_events_are_written_alike_and_read_back_whole() {
        let time = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let own = Event::own(OwnEvent {
            id: "emit-7-1".into(),
            source: "converge/rules",
            ty: "brief.reminder",
            subject: Some("campaign/c-1"),
            time,
            data: serde_json::json!({"n": 1}),
            extensions: &[("convergedepth", 2)],
        })
        .unwrap();
        assert_eq!(
            (own.id.as_str(), own.source.as_str(), own.ty.as_str()),
            ("emit-7-1", "converge/rules", "brief.reminder")
        );
        assert_eq!(own.entity_key().unwrap().to_string(), "campaign/c-1");
        // Milliseconds, as every time converge writes.
        assert_eq!(
            own.time
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "2026-11-23T10:00:00.123000000Z"
        );
        let json: Value = serde_json::from_str(&own.json).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"], serde_json::json!({"n": 1}));
        assert_eq!(json["convergedepth"], 2);
        assert_eq!(Event::from_journal(&own.json).unwrap(), own);

        // Without a subject the event is about no entity.
        let about = |id: &str, source: &'static str, subject: Option<&str>| {
            Event::own(OwnEvent {
                id: id.into(),
                source,
                ty: "t",
                subject,
                time,
                data: serde_json::json!({}),
                extensions: &[],
            })
        };
        let bare = |id: &str, source: &'static str| about(id, source, None);
        let timer = bare("timer-1", "converge/timers").unwrap();
        assert!(timer.entity_key().is_none() && !timer.json.contains("subject"));
        // So is an emit caused by an event journaled with an empty subject
        // before senders' empty subjects were refused.
        let emitted = about("emit-1", "converge/rules", Some("")).unwrap();
        assert_eq!(emitted.subject, None);
        assert!(!emitted.json.contains("subject"));
        // An empty id or source is refused, as from outside.
        assert!(matches!(
            bare("", "converge/timers"),
            Err(EventError::Invalid(_))
        ));
        assert!(matches!(bare("x", ""), Err(EventError::Invalid(_))));
    }
}
