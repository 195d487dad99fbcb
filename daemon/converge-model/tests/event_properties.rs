//! Property tests for the CloudEvents decoder: whatever arrives over HTTP, it
//! answers with an event or an error, never a panic; and what it journals
//! reads back as the same event.

use converge_model::{Event, EventError};
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The reading that names every error: bytes to a JSON value, then the
/// value to an event. `from_json` reads valid events in one parse; both
/// must give the same event, or the same error.
fn through_a_value(body: &[u8]) -> Result<Event, EventError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    Event::from_value(value)
}

fn batch_through_values(body: &[u8]) -> Result<Vec<Event>, EventError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(EventError::NotABatch);
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            Event::from_value(item).map_err(|error| EventError::InBatch {
                index,
                error: Box::new(error),
            })
        })
        .collect()
}

/// Attributes as senders write them, some invalid: missing, empty, of the
/// wrong type, another spec version, extensions, data as text or JSON.
fn event_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![json!("1.0"), json!("0.3"), json!(1), Value::Null]),
        prop::sample::select(vec![json!("e-1"), json!(""), json!(7), Value::Null]),
        prop::sample::select(vec![json!("/jira"), json!(""), json!(["/x"]), Value::Null]),
        prop::sample::select(vec![json!("task.updated"), json!(""), Value::Null]),
        proptest::option::of("[a-z]{1,8}/[A-Za-z0-9-]{1,10}"),
        proptest::option::of(prop::sample::select(vec![
            "application/json",
            "text/plain",
            "application/vnd.x+json",
        ])),
        proptest::option::of(json_value()),
        proptest::option::of(prop::sample::select(vec![
            json!("acme"),
            json!(3),
            json!(true),
        ])),
        proptest::option::of(prop::sample::select(vec![
            json!("2026-11-23T10:00:00Z"),
            json!("yesterday"),
        ])),
    )
        .prop_map(
            |(spec, id, source, ty, subject, content_type, data, tenant, time)| {
                let mut event = serde_json::Map::new();
                for (name, value) in [
                    ("specversion", spec),
                    ("id", id),
                    ("source", source),
                    ("type", ty),
                ] {
                    if !value.is_null() {
                        event.insert(name.into(), value);
                    }
                }
                let optional = [
                    ("subject", subject.map(Value::from)),
                    ("datacontenttype", content_type.map(Value::from)),
                    ("data", data),
                    ("tenant", tenant),
                    ("time", time),
                ];
                for (name, value) in optional {
                    if let Some(value) = value {
                        event.insert(name.into(), value);
                    }
                }
                Value::Object(event)
            },
        )
}

proptest! {
    #[test]
    fn one_parse_reads_as_a_value_does(event in event_like()) {
        let body = event.to_string();
        prop_assert_eq!(Event::from_json(body.as_bytes()), through_a_value(body.as_bytes()));
        if let Ok(read) = Event::from_json(body.as_bytes()) {
            prop_assert_eq!(Event::from_journal(&read.json), Ok(read.clone()));
        }
    }

    #[test]
    fn one_parse_reads_batches_as_values_do(events in prop::collection::vec(event_like(), 0..4)) {
        let body = Value::Array(events).to_string();
        prop_assert_eq!(Event::batch_from_json(body.as_bytes()), batch_through_values(body.as_bytes()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert_eq!(Event::from_json(&body), through_a_value(&body));
        prop_assert_eq!(Event::batch_from_json(&body), batch_through_values(&body));
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let body = value.to_string();
        prop_assert_eq!(Event::from_json(body.as_bytes()), through_a_value(body.as_bytes()));
        prop_assert_eq!(
            Event::batch_from_json(body.as_bytes()),
            batch_through_values(body.as_bytes())
        );
    }

    #[test]
    fn valid_events_survive_the_journal(
        id in "[A-Za-z0-9._-]{1,20}",
        source in "/[a-z]{1,10}(/[a-z0-9]{1,6})?",
        ty in "[a-z]{1,8}\\.[a-z]{1,8}",
        subject in proptest::option::of("[a-z]{1,8}/[A-Za-z0-9-]{1,10}"),
        data in json_value(),
    ) {
        let mut event = json!({"specversion": "1.0", "id": id, "source": source, "type": ty, "data": data});
        if let Some(subject) = &subject {
            event["subject"] = json!(subject);
        }
        let parsed = Event::from_json(event.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&parsed.id, &id);
        prop_assert_eq!(&parsed.subject, &subject);
        prop_assert_eq!(Event::from_journal(&parsed.json).unwrap(), parsed.clone());
        prop_assert_eq!(parsed.entity_key().is_some(), subject.is_some());
    }
}
