//! One pass over a CloudEvent's JSON, for the events that are plainly
//! valid: what nearly every sender posts, and everything the journal reads
//! back. The cloudevents crate reads an event into a `serde_json` map first,
//! builds that map a second time from the first, then builds `data` a third
//! time, and the event is written again from the result: about 26,000
//! instructions for a small event, the largest part of intake
//! (docs/performance.md).
//!
//! [`Wire::read`] takes only what it is sure of and gives up on anything
//! else: then the event is read as before, through the crate, whose result
//! and errors stay the reference. It reads an object with each member once;
//! `specversion` `1.0`; `id`, `type`, `source` and any `datacontenttype`,
//! `subject` and `time` as strings (a `time` in RFC 3339); `data` as JSON
//! (no `datacontenttype`, or a JSON one); extensions that are strings,
//! booleans or integers. It gives up on `data_base64`, `dataschema`, a
//! null attribute or extension, a non-JSON `datacontenttype` and anything
//! that is not JSON (a null `data` is JSON, read as the crate reads it).
//!
//! The event's JSON is written as the crate writes it: the attributes in
//! its order, `data` compact with its members sorted, then the extensions,
//! here in the order they came (the crate's order is a hash map's, so no
//! reader may rely on it). A differential property test and the
//! `cloudevent` fuzz target hold the two readers to the same events.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{Event, HOOK_EXTENSION, TRACEPARENT_EXTENSION, push_member};

/// A plainly valid CloudEvent, as read.
#[derive(Default)]
pub(super) struct Wire<'a> {
    id: Option<Cow<'a, str>>,
    source: Option<Cow<'a, str>>,
    ty: Option<Cow<'a, str>>,
    datacontenttype: Option<Cow<'a, str>>,
    subject: Option<Cow<'a, str>>,
    time: Option<DateTime<Utc>>,
    data: Option<Value>,
    /// Each a string, a boolean or an `i64`.
    extensions: Vec<(Cow<'a, str>, Value)>,
    specversion: bool,
}

impl<'a> Wire<'a> {
    /// The event, or `None` when it is not plainly valid.
    pub(super) fn read(text: &'a [u8]) -> Option<Wire<'a>> {
        let mut deserializer = serde_json::Deserializer::from_slice(text);
        let wire = deserializer.deserialize_map(WireVisitor).ok()?;
        deserializer.end().ok()?;
        (wire.specversion && wire.id.is_some() && wire.source.is_some() && wire.ty.is_some())
            .then_some(wire)
    }

    /// The names of the extension attributes read, in their order.
    pub(super) fn extension_names(&self) -> impl Iterator<Item = &str> {
        self.extensions.iter().map(|(name, _)| name.as_ref())
    }

    /// The event, its JSON written, before converge's own checks.
    pub(super) fn into_event(self) -> Event {
        let (id, source, ty) = (
            self.id.unwrap_or_default().into_owned(),
            self.source.unwrap_or_default().into_owned(),
            self.ty.unwrap_or_default().into_owned(),
        );
        let mut json = String::with_capacity(256);
        json.push_str(r#"{"specversion":"1.0""#);
        push_member(&mut json, "id", &id);
        push_member(&mut json, "type", &ty);
        push_member(&mut json, "source", &source);
        if let Some(datacontenttype) = &self.datacontenttype {
            push_member(&mut json, "datacontenttype", datacontenttype);
        }
        if let Some(subject) = &self.subject {
            push_member(&mut json, "subject", subject);
        }
        if let Some(time) = &self.time {
            // As the crate writes it: through chrono's `Serialize`.
            push_member(&mut json, "time", &crate::rfc3339::format(time));
        }
        if let Some(data) = &self.data {
            push_value(&mut json, "data", data);
        }
        let (mut hook, mut traceparent) = (None, None);
        for (name, value) in &self.extensions {
            push_value(&mut json, name, value);
            let text = || value.as_str().map(str::to_string);
            match name.as_ref() {
                HOOK_EXTENSION => hook = text(),
                TRACEPARENT_EXTENSION => traceparent = text(),
                _ => {}
            }
        }
        json.push('}');
        Event {
            hook,
            id,
            source,
            ty,
            traceparent,
            json,
            subject: self.subject.map(Cow::into_owned),
            time: self.time,
            data: self.data.unwrap_or(Value::Null),
        }
    }
}

/// `,<name as a JSON string>:<value>`.
fn push_value(json: &mut String, name: &str, value: &Value) {
    json.push(',');
    json.push_str(&serde_json::to_string(name).unwrap_or_default());
    json.push(':');
    // A `Value` read from JSON writes as JSON.
    json.push_str(&serde_json::to_string(value).unwrap_or_default());
}

/// Why the read gave up; the reason is not kept.
fn not_plain<E: de::Error>() -> E {
    E::custom("not a plainly valid CloudEvent")
}

/// Whether the crate reads this as an extension attribute's value: a
/// string, a boolean or an integer that fits an `i64`.
pub(super) fn is_extension_value(value: &Value) -> bool {
    match value {
        Value::String(_) | Value::Bool(_) => true,
        Value::Number(n) => n.as_i64().is_some(),
        _ => false,
    }
}

/// Whether the crate reads `data` as JSON under this content type.
pub(super) fn is_json_content_type(content_type: &str) -> bool {
    content_type.starts_with("application/json")
        || content_type.starts_with("text/json")
        || content_type.ends_with("+json")
}

struct WireVisitor;

impl<'de> Visitor<'de> for WireVisitor {
    type Value = Wire<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CloudEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire<'de>, A::Error> {
        let mut wire = Wire::default();
        while let Some(member) = map.next_key::<Member<'de>>()? {
            match member {
                Member::SpecVersion => {
                    let version = map.next_value::<Text<'de>>()?.0;
                    if wire.specversion || version != "1.0" {
                        return Err(not_plain());
                    }
                    wire.specversion = true;
                }
                Member::Id => once(&mut wire.id, map.next_value::<Text<'de>>()?.0)?,
                Member::Type => once(&mut wire.ty, map.next_value::<Text<'de>>()?.0)?,
                Member::Source => once(&mut wire.source, map.next_value::<Text<'de>>()?.0)?,
                Member::DataContentType => {
                    let content_type = map.next_value::<Text<'de>>()?.0;
                    if !is_json_content_type(&content_type) {
                        return Err(not_plain());
                    }
                    once(&mut wire.datacontenttype, content_type)?;
                }
                Member::Subject => once(&mut wire.subject, map.next_value::<Text<'de>>()?.0)?,
                Member::Time => {
                    let text = map.next_value::<Text<'de>>()?.0;
                    let time = DateTime::parse_from_rfc3339(&text).map_err(|_| not_plain())?;
                    once(&mut wire.time, time.with_timezone(&Utc))?;
                }
                Member::Data => {
                    let data = map.next_value::<Value>()?;
                    once(&mut wire.data, data)?;
                }
                Member::Other(name) => {
                    let value = map.next_value::<Value>()?;
                    // converge's own extensions are read as strings only.
                    let text_only = name == HOOK_EXTENSION || name == TRACEPARENT_EXTENSION;
                    if !is_extension_value(&value)
                        || (text_only && !value.is_string())
                        || wire.extensions.iter().any(|(seen, _)| *seen == name)
                    {
                        return Err(not_plain());
                    }
                    wire.extensions.push((name, value));
                }
                Member::Unplain => return Err(not_plain()),
            }
        }
        Ok(wire)
    }
}

/// Sets a member read once; a second time gives up.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(not_plain());
    }
    *slot = Some(value);
    Ok(())
}

/// A member's name.
enum Member<'a> {
    SpecVersion,
    Id,
    Type,
    Source,
    DataContentType,
    Subject,
    Time,
    Data,
    /// `dataschema` and `data_base64`: left to the cloudevents crate.
    Unplain,
    Other(Cow<'a, str>),
}

impl<'de> de::Deserialize<'de> for Member<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Text(name) = Text::deserialize(deserializer)?;
        Ok(Member::known(&name).unwrap_or(Member::Other(name)))
    }
}

impl Member<'_> {
    fn known(name: &str) -> Option<Member<'static>> {
        Some(match name {
            "specversion" => Member::SpecVersion,
            "id" => Member::Id,
            "type" => Member::Type,
            "source" => Member::Source,
            "datacontenttype" => Member::DataContentType,
            "subject" => Member::Subject,
            "time" => Member::Time,
            "data" => Member::Data,
            "dataschema" | "data_base64" => Member::Unplain,
            _ => return None,
        })
    }
}

/// A string (a member's name or value), borrowed from the text when it has
/// no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct String_;
        impl<'de> Visitor<'de> for String_ {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.into())))
            }
        }
        deserializer.deserialize_str(String_)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::super::{Event, Writer};

    /// Both readers agree on `text`, as a sender's and as the journal's.
    fn agree(text: &str) -> Result<(), TestCaseError> {
        for writer in [Writer::Outside, Writer::Journal] {
            let ours = Event::read(text.as_bytes(), writer);
            let reference = Event::read_through_crate(text.as_bytes(), writer);
            match (ours, reference) {
                (Ok(ours), Ok(reference)) => {
                    let parsed =
                        |json: &str| serde_json::from_str::<serde_json::Value>(json).unwrap();
                    prop_assert_eq!(parsed(&ours.json), parsed(&reference.json), "{}", text);
                    prop_assert_eq!(
                        Event {
                            json: String::new(),
                            ..ours.clone()
                        },
                        Event {
                            json: String::new(),
                            ..reference
                        },
                        "{}",
                        text
                    );
                    // What the journal stores reads back as the same event.
                    // Its JSON is compared parsed: an event that only the
                    // cloudevents crate reads keeps its extensions in a hash
                    // map, so their order in the text can change from one
                    // reading to the next.
                    let again = Event::read(ours.json.as_bytes(), Writer::Journal).unwrap();
                    prop_assert_eq!(parsed(&again.json), parsed(&ours.json), "{}", text);
                    prop_assert_eq!(
                        Event {
                            json: String::new(),
                            ..again
                        },
                        Event {
                            json: String::new(),
                            ..ours
                        },
                        "{}",
                        text
                    );
                }
                (ours, reference) => prop_assert_eq!(ours, reference, "{}", text),
            }
        }
        Ok(())
    }

    /// A member's value as JSON text: mostly what the member should hold,
    /// sometimes anything else.
    fn string_like(usual: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
        prop_oneof![
            6 => usual.prop_map(|s| serde_json::to_string(&s).unwrap()),
            1 => Just("null".to_string()),
            1 => Just("7".to_string()),
            1 => Just(r#"{"a":1}"#.to_string()),
        ]
        .boxed()
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z0-9/._-]{1,12}",
            "\\PC{0,8}",
            Just("quote \" and \\ and \u{e9} and \u{1F600}".to_string()),
        ]
    }

    fn time() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("2026-12-01T00:00:00Z".to_string()),
            Just("2026-12-01T09:30:00.120+02:00".to_string()),
            Just("2026-12-01T00:00:00.123456789Z".to_string()),
            Just("1969-07-20T20:17:40-05:00".to_string()),
            Just("2016-12-31T23:59:60Z".to_string()),
            Just("2026-12-01".to_string()),
            Just("yesterday".to_string()),
        ]
    }

    fn data() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            text().prop_map(|s| json!(s)),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![
            8 => value.prop_map(|v| v.to_string()),
            // The same member twice inside `data`: the last one counts.
            1 => Just(r#"{"a":1,"a":2}"#.to_string()),
        ]
    }

    fn extension_value() -> impl Strategy<Value = String> {
        prop_oneof![
            text().prop_map(|s| serde_json::to_string(&s).unwrap()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("18446744073709551615".to_string()),
            Just("1.5".to_string()),
            Just("1e3".to_string()),
            Just("null".to_string()),
            Just("[1]".to_string()),
            Just(r#"{"x":true}"#.to_string()),
        ]
    }

    fn member() -> impl Strategy<Value = (String, String)> {
        let named = |name: &'static str, value: BoxedStrategy<String>| {
            value.prop_map(move |v| (name.to_string(), v))
        };
        prop_oneof![
            named(
                "datacontenttype",
                string_like(prop_oneof![
                    Just("application/json".to_string()),
                    Just("application/json; charset=utf-8".to_string()),
                    Just("application/vnd.tool+json".to_string()),
                    Just("text/json".to_string()),
                    Just("text/plain".to_string()),
                    Just(String::new()),
                ])
            ),
            named("subject", string_like(text())),
            named("time", string_like(time())),
            named("data", data().boxed()),
            named(
                "data_base64",
                string_like(prop_oneof![
                    Just("eyJhIjoxfQ==".to_string()),
                    Just("aGVsbG8=".to_string()),
                    Just("not base64!".to_string()),
                ])
            ),
            named(
                "dataschema",
                string_like(prop_oneof![
                    Just("https://example.com/schema.json".to_string()),
                    Just("not a url".to_string()),
                ])
            ),
            (
                prop_oneof![
                    Just("ext".to_string()),
                    Just("partition".to_string()),
                    Just("traceparent".to_string()),
                    Just("convergehook".to_string()),
                    Just("Odd-Name".to_string()),
                    Just("\u{e9}t\u{e9}".to_string()),
                ],
                extension_value()
            ),
        ]
    }

    /// A CloudEvent's JSON text, written member by member so that members
    /// can repeat, be left out, or be spelled with escapes.
    fn event_text() -> impl Strategy<Value = String> {
        (
            string_like(prop_oneof![
                10 => Just("1.0".to_string()),
                1 => Just("0.3".to_string()),
                1 => Just("2.0".to_string()),
            ]),
            string_like(text()),
            string_like(text()),
            string_like(text()),
            prop::collection::vec(member(), 0..6),
            prop::collection::vec(any::<prop::sample::Index>(), 4),
            0..8usize,
            any::<bool>(),
        )
            .prop_map(|(version, id, source, ty, more, picks, shape, spaced)| {
                let mut members = vec![
                    ("specversion".to_string(), version),
                    ("id".to_string(), id),
                    ("source".to_string(), source),
                    ("type".to_string(), ty),
                ];
                members.extend(more);
                match shape {
                    // A required attribute left out.
                    0 => {
                        members.remove(picks[0].index(4));
                    }
                    // A member repeated.
                    1 => {
                        let again = members[picks[1].index(members.len())].clone();
                        members.insert(picks[2].index(members.len() + 1), again);
                    }
                    // A name spelled with an escape.
                    2 => {
                        let at = picks[3].index(members.len());
                        members[at].0 = members[at].0.replacen('e', "\\u0065", 1);
                    }
                    // The members in another order.
                    3 => {
                        let by = picks[0].index(members.len());
                        members.rotate_left(by);
                    }
                    _ => {}
                }
                let separator = if spaced { ", " } else { "," };
                let body = members
                    .iter()
                    .map(|(name, value)| format!("\"{name}\":{value}"))
                    .collect::<Vec<_>>()
                    .join(separator);
                if spaced {
                    format!(" {{ {body} }}\n")
                } else {
                    format!("{{{body}}}")
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_one_pass_reader_reads_what_the_cloudevents_crate_reads(text in event_text()) {
            agree(&text)?;
        }
    }

    #[test]
    fn the_usual_events_take_the_one_pass() {
        let race = r#"{"specversion":"1.0","id":"evt-0","source":"race","type":"asset.updated","subject":"campaign/r1-0","data":{"channel":"email","owner":"ana"},"time":"2026-12-01T00:00:00Z"}"#;
        let journal = r#"{"specversion":"1.0","id":"e-1","type":"task.handoff","source":"jira","subject":"task/J-1","time":"2026-12-01T00:00:00.120Z","data":{"to":"ana"},"convergehook":"jira","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;
        for text in [race, journal] {
            assert!(super::Wire::read(text.as_bytes()).is_some(), "{text}");
            agree(text).unwrap();
        }
        let event = Event::read(journal.as_bytes(), Writer::Journal).unwrap();
        assert_eq!(event.hook.as_deref(), Some("jira"));
        assert_eq!(event.json, journal, "written back as the crate writes it");
    }

    #[test]
    fn anything_unusual_is_left_to_the_cloudevents_crate() {
        for text in [
            r#"{"specversion":"1.0","id":"a","source":"s","type":"t","data_base64":"aGVsbG8="}"#,
            r#"{"specversion":"1.0","id":"a","source":"s","type":"t","datacontenttype":"text/plain","data":"hi"}"#,
            r#"{"specversion":"1.0","id":"a","source":"s","type":"t","subject":null}"#,
            r#"{"specversion":"1.0","id":"a","id":"b","source":"s","type":"t"}"#,
            r#"{"specversion":"1.0","id":"a","source":"s","type":"t","ext":1.5}"#,
            r#"{"specversion":"0.3","id":"a","source":"s","type":"t"}"#,
            r#"{"specversion":"1.0","source":"s","type":"t"}"#,
            r#"[{"specversion":"1.0","id":"a","source":"s","type":"t"}]"#,
        ] {
            assert!(super::Wire::read(text.as_bytes()).is_none(), "{text}");
            agree(text).unwrap();
        }
    }
}
