//! JSON <-> Rhai values, and the `event` / `entity` maps rules read.

use chrono::{DateTime, Utc};
use converge_model::entity::ChannelState;
use converge_model::{EntityState, Event, Flow};
use rhai::{Array, Dynamic, FLOAT, INT, ImmutableString, Map};
use serde_json::{Number, Value};

/// Timestamps reach rules as RFC 3339 strings in UTC with a `Z` suffix, the
/// same text serde writes for the entity's timestamps, so rules can compare
/// them as strings.
pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    converge_model::rfc3339::format(&at)
}

/// JSON numbers that fit an `i64` become integers, every other number a float.
pub(crate) fn json_to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(FLOAT::NAN)),
        },
        Value::String(s) => text(s),
        Value::Array(items) => {
            Dynamic::from_array(items.iter().map(json_to_dynamic).collect::<Array>())
        }
        Value::Object(members) => Dynamic::from_map(
            members
                .iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect::<Map>(),
        ),
    }
}

/// The value a rule passed to `set_field`, as JSON. `()` is `null`; a float
/// that JSON cannot hold (NaN, infinity) is an error rather than a silent null.
pub(crate) fn dynamic_to_json(value: &Dynamic) -> Result<Value, String> {
    let value = value.flatten_clone();
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Number(Number::from(i)));
    }
    if let Ok(f) = value.as_float() {
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} cannot be stored as JSON"));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if value.is_string() {
        return Ok(Value::String(value.into_string().unwrap_or_default()));
    }
    if value.is_array() {
        let items = value.cast::<Array>();
        return items
            .iter()
            .map(dynamic_to_json)
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if value.is_map() {
        let members = value.cast::<Map>();
        return members
            .iter()
            .map(|(k, v)| dynamic_to_json(v).map(|v| (k.to_string(), v)))
            .collect::<Result<_, _>>()
            .map(Value::Object);
    }
    Err(format!(
        "a value of type `{}` cannot be stored as JSON",
        value.type_name()
    ))
}

/// The `event` map: `id`, `source`, `type`, `subject`, `time`, `hook`, `data`.
pub(crate) fn event_to_dynamic(event: &Event) -> Dynamic {
    // In key order, as in `entity_to_dynamic`.
    Dynamic::from_map(Map::from([
        ("data".into(), json_to_dynamic(&event.data)),
        ("hook".into(), optional_text(event.hook.as_deref())),
        ("id".into(), text(&event.id)),
        ("source".into(), text(&event.source)),
        ("subject".into(), optional_text(event.subject.as_deref())),
        ("time".into(), optional_time(event.time)),
        ("type".into(), text(&event.ty)),
    ]))
}

/// The `entity` map: the entity state as serde writes it, as
/// `rhai::serde::to_dynamic` would give it (a property test holds the two
/// equal), built directly. Through serde it was a sixth of evaluating the
/// example rules: every name, number and timestamp went through Rhai's
/// generic serializer. The flow keeps serde's own shape: its members are
/// left out when empty or zero, and it is small.
pub(crate) fn entity_to_dynamic(entity: Option<&EntityState>) -> Dynamic {
    let Some(entity) = entity else {
        return Dynamic::UNIT;
    };
    let channels = entity
        .channels
        .iter()
        .map(|(name, channel)| (name.as_str().into(), channel_to_dynamic(channel)))
        .collect();
    // Built whole, members in key order: a map collected from sorted pairs
    // is laid out in one pass, where inserting searched it for every key.
    let mut map = Map::from([
        ("channels".into(), Dynamic::from_map(channels)),
        ("created_at".into(), time(entity.created_at)),
        ("events".into(), unsigned(entity.events)),
        ("fields".into(), members_to_dynamic(&entity.fields)),
        ("id".into(), text(&entity.id)),
        ("kind".into(), text(&entity.kind)),
        (
            "last_event_type".into(),
            optional_text(entity.last_event_type.as_deref()),
        ),
        ("owner".into(), optional_text(entity.owner.as_deref())),
        ("stage".into(), optional_text(entity.stage.as_deref())),
        ("stage_since".into(), optional_time(entity.stage_since)),
        ("updated_at".into(), time(entity.updated_at)),
    ]);
    if !entity.flow.is_empty() {
        map.insert("flow".into(), flow_to_dynamic(&entity.flow));
    }
    Dynamic::from_map(map)
}

fn channel_to_dynamic(channel: &ChannelState) -> Dynamic {
    let mut map = Map::from([
        ("fields".into(), members_to_dynamic(&channel.fields)),
        ("owner".into(), optional_text(channel.owner.as_deref())),
        ("stage".into(), optional_text(channel.stage.as_deref())),
        ("updated_at".into(), optional_time(channel.updated_at)),
    ]);
    if !channel.flow.is_empty() {
        map.insert("flow".into(), flow_to_dynamic(&channel.flow));
    }
    Dynamic::from_map(map)
}

fn flow_to_dynamic(flow: &Flow) -> Dynamic {
    // Serializing these plain members cannot fail.
    rhai::serde::to_dynamic(flow).unwrap_or(Dynamic::UNIT)
}

fn members_to_dynamic(members: &serde_json::Map<String, Value>) -> Dynamic {
    Dynamic::from_map(
        members
            .iter()
            .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
            .collect(),
    )
}

/// A string as rules read it, copied once: Rhai keeps a short string
/// inline, so building it from a `String` would copy it into its own
/// allocation and free that.
fn text(text: &str) -> Dynamic {
    Dynamic::from(ImmutableString::from(text))
}

fn optional_text(optional: Option<&str>) -> Dynamic {
    optional.map_or(Dynamic::UNIT, text)
}

fn time(at: DateTime<Utc>) -> Dynamic {
    Dynamic::from(rfc3339(at))
}

fn optional_time(at: Option<DateTime<Utc>>) -> Dynamic {
    at.map_or(Dynamic::UNIT, time)
}

/// As serde gives a `u64`: an integer while it fits, else a float.
fn unsigned(n: u64) -> Dynamic {
    INT::try_from(n).map_or(Dynamic::from_float(n as FLOAT), Dynamic::from_int)
}

/// `INT` as a non-negative count, for the places a rule passes a level.
pub(crate) fn positive_u32(value: INT) -> Option<u32> {
    u32::try_from(value).ok().filter(|v| *v >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_rhai_values() {
        let v =
            json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}, "big": 18446744073709551615u64});
        let back = dynamic_to_json(&json_to_dynamic(&v)).unwrap();
        assert_eq!(back["a"], json!([1, 2.5, "x", null, true]));
        assert_eq!(back["b"], json!({"c": -3}));
        assert_eq!(back["big"], json!(18446744073709551615.0f64));
    }

    #[test]
    fn an_entity_reads_the_same_as_through_its_json() {
        let entity: EntityState = serde_json::from_value(json!({
            "kind": "campaign", "id": "c-1", "stage": "review", "owner": null,
            "fields": {"brief": "b", "budget": 1200.5, "count": 3, "big": 18446744073709551615u64,
                       "neg": -7, "tags": ["a", 1, null, true], "nested": {"x": {"y": []}},
                       "empty": {}},
            "channels": {"email": {"stage": "ready", "owner": "ana", "fields": {"n": 1},
                                   "updated_at": "2026-01-05T09:00:00Z"}},
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-05T09:00:00.123Z",
            "stage_since": "2026-01-02T00:00:00Z", "events": 12,
            "last_event_type": "asset.updated"
        }))
        .unwrap();
        let direct = entity_to_dynamic(Some(&entity));
        let through_json = json_to_dynamic(&serde_json::to_value(&entity).unwrap());
        // Compared as JSON, which keeps integers and floats apart.
        assert_eq!(
            dynamic_to_json(&direct).unwrap(),
            dynamic_to_json(&through_json).unwrap()
        );
        assert_eq!(format!("{direct:?}"), format!("{through_json:?}"));
        assert!(entity_to_dynamic(None).is_unit());
    }

    mod properties {
        use super::*;
        use converge_model::strategies;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// The direct conversion gives exactly what serde gives, down
            /// to integers against floats and each timestamp's digits.
            #[test]
            fn an_entity_converts_as_serde_writes_it(entity in strategies::entity_state(strategies::text())) {
                let direct = entity_to_dynamic(Some(&entity));
                let through_serde = rhai::serde::to_dynamic(&entity).unwrap();
                prop_assert_eq!(format!("{direct:?}"), format!("{through_serde:?}"));
                // And what the JSON would give a rule: the same.
                let through_json = json_to_dynamic(&serde_json::to_value(&entity).unwrap());
                prop_assert_eq!(format!("{direct:?}"), format!("{through_json:?}"));
            }
        }
    }

    #[test]
    fn non_json_values_are_refused() {
        let err = dynamic_to_json(&Dynamic::from_float(f64::NAN)).unwrap_err();
        assert_eq!(err, "NaN cannot be stored as JSON");
        assert_eq!(positive_u32(0), None);
        assert_eq!(positive_u32(3), Some(3));
    }
}
