//! JSON <-> Rhai values, and the `event` / `entity` maps rules read.

use chrono::{DateTime, SecondsFormat, Utc};
use converge_model::{EntityState, Event};
use rhai::{Array, Dynamic, FLOAT, INT, Map};
use serde_json::{Number, Value};

/// Timestamps reach rules as RFC 3339 strings in UTC with a `Z` suffix, the
/// same text serde writes for the entity's timestamps, so rules can compare
/// them as strings.
pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
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
        Value::String(s) => Dynamic::from(s.clone()),
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
    let mut map = Map::new();
    map.insert("id".into(), Dynamic::from(event.id.clone()));
    map.insert("source".into(), Dynamic::from(event.source.clone()));
    map.insert("type".into(), Dynamic::from(event.ty.clone()));
    map.insert(
        "subject".into(),
        event.subject.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    map.insert(
        "time".into(),
        event
            .time
            .map_or(Dynamic::UNIT, |t| Dynamic::from(rfc3339(t))),
    );
    map.insert(
        "hook".into(),
        event.hook.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    map.insert("data".into(), json_to_dynamic(&event.data));
    Dynamic::from_map(map)
}

/// The `entity` map: the entity state as serde writes it, so a field added
/// to [`EntityState`] reaches rules without a change here.
pub(crate) fn entity_to_dynamic(entity: Option<&EntityState>) -> Dynamic {
    match entity {
        None => Dynamic::UNIT,
        // Straight to Rhai values, the same ones as through its JSON
        // (`json_to_dynamic`) without building that first: serializing
        // strings, maps, numbers and timestamps has no failure case; `()`
        // (no entity) is the fallback.
        Some(entity) => rhai::serde::to_dynamic(entity).unwrap_or(Dynamic::UNIT),
    }
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

    #[test]
    fn non_json_values_are_refused() {
        let err = dynamic_to_json(&Dynamic::from_float(f64::NAN)).unwrap_err();
        assert_eq!(err, "NaN cannot be stored as JSON");
        assert_eq!(positive_u32(0), None);
        assert_eq!(positive_u32(3), Some(3));
    }
}
