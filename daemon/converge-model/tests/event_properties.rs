//! Property tests for the CloudEvents decoder: whatever arrives over HTTP, it
//! answers with an event or an error, never a panic; and what it journals
//! reads back as the same event.

use converge_model::Event;
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

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Event::from_json(&body);
        let _ = Event::batch_from_json(&body);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let body = value.to_string();
        let _ = Event::from_json(body.as_bytes());
        let _ = Event::batch_from_json(body.as_bytes());
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
