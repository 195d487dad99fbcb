//! Pure helpers rules call: durations, missing data, and the convergence
//! measures of a campaign (how much its channels agree). They read only their
//! arguments (and `hours_since` the `now` of the run), so they are as
//! deterministic as the rest of a rule. The formulas are documented for rule
//! authors in `docs/rules.md`; the tests below pin the examples given there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rhai::{Array, Dynamic, DynamicReadLock, FLOAT, Map};

use crate::convert::dynamic_to_json;

/// Weights of the parts in the combined consistency score, renormalised over
/// the parts a rule asks for. Agreement weighs most: a wrong offer code or
/// landing URL is a broken campaign, a reworded message is not.
pub(crate) const WEIGHT_AGREEMENT: FLOAT = 0.4;
pub(crate) const WEIGHT_MESSAGE: FLOAT = 0.2;
pub(crate) const WEIGHT_TIMING: FLOAT = 0.2;
pub(crate) const WEIGHT_AUDIENCE: FLOAT = 0.2;

/// `"48h"`, `"2d"`, `"1d12h"`, `"90m"`, `"30s"` (the `humantime` forms) or an
/// integer number of seconds, as a `Duration`. `what` names the argument in
/// the error (`schedule: \`after\``).
pub(crate) fn parse_duration(what: &str, value: &Dynamic) -> Result<Duration, String> {
    if let Ok(seconds) = value.as_int() {
        return u64::try_from(seconds)
            .map(Duration::from_secs)
            .map_err(|_| format!("{what} must not be negative, got {seconds}"));
    }
    if value.is_string() {
        let text = value.clone().into_string().unwrap_or_default();
        return humantime::parse_duration(text.trim()).map_err(|e| {
            format!(
                "{what} must be a duration such as \"48h\", \"2d\", \"1d12h\", \"90m\" or a number of seconds, got \"{text}\" ({e})"
            )
        });
    }
    Err(format!(
        "{what} must be a duration string or a number of seconds, got a value of type `{}`",
        value.type_name()
    ))
}

/// Like [`parse_duration`], but zero is refused too: a timer due now is a
/// mistake (use `emit`).
pub(crate) fn positive_duration_ms(what: &str, value: &Dynamic) -> Result<u64, String> {
    let duration = parse_duration(what, value)?;
    let ms = u64::try_from(duration.as_millis())
        .map_err(|_| format!("{what} is too long: {}", describe(value)))?;
    if ms == 0 {
        return Err(format!(
            "{what} must be more than zero, got {}",
            describe(value)
        ));
    }
    Ok(ms)
}

fn describe(value: &Dynamic) -> String {
    if value.is_string() {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

pub(crate) fn parse_time(what: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{what} `{text}` is not an RFC 3339 time: {e}"))
}

/// A value counts as absent when it is `()` or a string with nothing but
/// whitespace.
fn is_blank(value: &Dynamic) -> bool {
    if value.is_unit() {
        return true;
    }
    value
        .as_immutable_string_ref()
        .is_ok_and(|text| text.trim().is_empty())
}

/// The entity map a measure was given, or an error naming the function.
/// Borrowed, not copied: the measures read a few members of it, and a copy
/// of the whole entity (its channels and their fields) cost more than the
/// measure itself.
fn entity_map<'a>(function: &str, entity: &'a Dynamic) -> Result<DynamicReadLock<'a, Map>, String> {
    if entity.is_unit() {
        return Err(format!(
            "{function}: the entity is () ({})",
            crate::engine::GUARD_HINT
        ));
    }
    entity
        .read_lock::<Map>()
        .ok_or_else(|| format!("{function}: the first argument must be the `entity` map"))
}

fn member(map: &Map, name: &str) -> Dynamic {
    map.get(name).cloned().unwrap_or(Dynamic::UNIT)
}

/// The map under `name` in `map`, borrowed; `None` when it is absent or
/// not a map.
fn member_map<'a>(map: &'a Map, name: &str) -> Option<DynamicReadLock<'a, Map>> {
    map.get(name).and_then(|value| value.read_lock::<Map>())
}

/// `missing(entity, names)`: the names that are missing, in the order given.
/// `stage` and `owner` are read from the entity, every other name from
/// `fields`; a name is missing when it is absent, `()` or blank.
pub(crate) fn missing(entity: &Dynamic, names: &Array) -> Result<Array, String> {
    let entity = entity_map("missing", entity)?;
    let fields = member_map(&entity, "fields");
    blank_names("missing", names, |name| match name {
        "stage" | "owner" => entity.get(name),
        other => fields.as_deref().and_then(|fields| fields.get(other)),
    })
}

/// `missing_in(map, names)`: the names, in the order given, that are
/// missing among the members of any map (an event's `data`, say), by the
/// same measure as `missing`. `()` has no members: every name is missing.
pub(crate) fn missing_in(map: Option<&Map>, names: &Array) -> Result<Array, String> {
    blank_names("missing_in", names, |name| {
        map.and_then(|map| map.get(name))
    })
}

/// The names in `names` whose value, as `lookup` finds it, is absent, `()`
/// or blank; an error names `function` when a name is not a string.
fn blank_names<'a>(
    function: &str,
    names: &Array,
    lookup: impl Fn(&str) -> Option<&'a Dynamic>,
) -> Result<Array, String> {
    let mut out = Array::new();
    for name in names {
        let Ok(text) = name.as_immutable_string_ref() else {
            return Err(format!(
                "{function}: names must be strings, got a value of type `{}`",
                name.type_name()
            ));
        };
        if lookup(&text).is_none_or(is_blank) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// The value of `field` in every channel that has it (not absent, `()` or
/// blank), by channel name (sorted).
fn channel_values(
    function: &str,
    entity: &Dynamic,
    field: &str,
) -> Result<Vec<(String, Dynamic)>, String> {
    let entity = entity_map(function, entity)?;
    let Some(channels) = member_map(&entity, "channels") else {
        return Ok(Vec::new());
    };
    let mut values = Vec::new();
    for (name, channel) in channels.iter() {
        let value = channel
            .read_lock::<Map>()
            .and_then(|channel| member_map(&channel, "fields").map(|fields| member(&fields, field)))
            .unwrap_or(Dynamic::UNIT);
        if !is_blank(&value) {
            values.push((name.to_string(), value));
        }
    }
    Ok(values)
}

/// Every channel's value of `field` read by `read`, which is told where the
/// value is (`function: channels.<c>.fields.<field>`) for its error.
fn read_channels<T>(
    function: &str,
    entity: &Dynamic,
    field: &str,
    read: fn(Dynamic, &str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    channel_values(function, entity, field)?
        .into_iter()
        .map(|(channel, value)| {
            read(
                value,
                &format!("{function}: channels.{channel}.fields.{field}"),
            )
        })
        .collect()
}

/// A text's word set; `at` names the value in the error.
fn read_words(value: Dynamic, at: &str) -> Result<BTreeSet<String>, String> {
    value
        .into_string()
        .map(|text| words(&text))
        .map_err(|ty| format!("{at} must be a string, got a value of type `{ty}`"))
}

/// An RFC 3339 time; `at` names the value in the error.
fn read_time(value: Dynamic, at: &str) -> Result<DateTime<Utc>, String> {
    let text = value
        .into_string()
        .map_err(|ty| format!("{at} must be an RFC 3339 string, got a value of type `{ty}`"))?;
    parse_time(at, &text)
}

/// A segment array as a set; `at` names the value in the error.
fn read_segments(value: Dynamic, at: &str) -> Result<BTreeSet<String>, String> {
    value
        .try_cast::<Array>()
        .map(|items| items.iter().map(comparable).collect())
        .ok_or_else(|| format!("{at} must be an array of segments"))
}

/// Equality for agreement: values compare as their JSON text, so `"1"` and
/// `1` differ and maps compare by content.
fn comparable(value: &Dynamic) -> String {
    dynamic_to_json(value).map_or_else(|_| value.to_string(), |json| json.to_string())
}

/// The agreement on one field: the share of channels having it that hold its
/// most common value (1.0 when fewer than two channels have it), and the
/// channels that disagree. When the most common value is tied, no value is
/// the agreed one and every channel having the field disagrees.
pub(crate) fn agreement_with_outliers(
    entity: &Dynamic,
    field: &str,
) -> Result<(FLOAT, Vec<String>), String> {
    let values = channel_values("agreement", entity, field)?;
    if values.len() < 2 {
        return Ok((1.0, Vec::new()));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let keyed: Vec<(String, String)> = values
        .iter()
        .map(|(channel, value)| (channel.clone(), comparable(value)))
        .collect();
    for (_, key) in &keyed {
        *counts.entry(key.clone()).or_default() += 1;
    }
    let top = counts.values().copied().max().unwrap_or(0);
    let tied = counts.values().filter(|&&n| n == top).count() > 1;
    let outliers = keyed
        .into_iter()
        .filter(|(_, key)| tied || counts[key] != top)
        .map(|(channel, _)| channel)
        .collect();
    Ok((top as FLOAT / values.len() as FLOAT, outliers))
}

/// The campaign's own value of `field` (its brief, in a hub-and-spoke
/// workflow), when it has one (not absent, `()` or blank).
fn hub_value(entity: &Dynamic, field: &str) -> Result<Option<Dynamic>, String> {
    let entity = entity_map("consistency", entity)?;
    let value =
        member_map(&entity, "fields").map_or(Dynamic::UNIT, |fields| member(&fields, field));
    Ok((!is_blank(&value)).then_some(value))
}

/// The agreement on one field with the hub's value: the share of channels
/// having the field that hold the campaign's own value (1.0 when none has
/// it), and the channels that hold another.
fn agreement_with_hub(
    entity: &Dynamic,
    field: &str,
    hub: &Dynamic,
) -> Result<(FLOAT, Vec<String>), String> {
    let values = channel_values("agreement", entity, field)?;
    if values.is_empty() {
        return Ok((1.0, Vec::new()));
    }
    let hub = comparable(hub);
    let outliers: Vec<String> = values
        .iter()
        .filter(|(_, value)| comparable(value) != hub)
        .map(|(channel, _)| channel.clone())
        .collect();
    let share = (values.len() - outliers.len()) as FLOAT / values.len() as FLOAT;
    Ok((share, outliers))
}

/// The lowercase words of a text: maximal runs of letters and digits.
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn jaccard<T: Ord>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> FLOAT {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a.intersection(b).count();
    let all = a.len() + b.len() - shared;
    shared as FLOAT / all as FLOAT
}

/// Jaccard similarity of the two texts' lowercase word sets: shared words
/// over all distinct words; 1.0 when both have no words.
pub(crate) fn text_similarity(a: &str, b: &str) -> FLOAT {
    jaccard(&words(a), &words(b))
}

/// Smallest pairwise similarity among channels' values (1.0 with fewer than
/// two), computed by `similarity` on two values.
fn min_pairwise<T>(values: &[T], similarity: impl Fn(&T, &T) -> FLOAT) -> FLOAT {
    let mut lowest: FLOAT = 1.0;
    for (i, a) in values.iter().enumerate() {
        for b in &values[i + 1..] {
            lowest = lowest.min(similarity(a, b));
        }
    }
    lowest
}

pub(crate) fn message_consistency(entity: &Dynamic, field: &str) -> Result<FLOAT, String> {
    let texts = read_channels("message_consistency", entity, field, read_words)?;
    Ok(min_pairwise(&texts, jaccard))
}

/// The lowest similarity of a channel's text to the hub's (1.0 when no
/// channel has one).
fn message_with_hub(entity: &Dynamic, field: &str, hub: Dynamic) -> Result<FLOAT, String> {
    let hub = read_words(hub, &format!("consistency: the campaign's fields.{field}"))?;
    Ok(read_channels("consistency", entity, field, read_words)?
        .iter()
        .map(|text| jaccard(text, &hub))
        .fold(1.0, FLOAT::min))
}

/// Seconds between the earliest and the latest launch (0 with fewer than two
/// channels having the field).
pub(crate) fn launch_spread_seconds(entity: &Dynamic, field: &str) -> Result<i64, String> {
    let times = read_channels("launch_spread_hours", entity, field, read_time)?;
    match (times.iter().min(), times.iter().max()) {
        (Some(first), Some(last)) => Ok((*last - *first).num_seconds()),
        _ => Ok(0),
    }
}

/// Seconds from the hub's launch to the channel launch furthest from it,
/// before or after (0 when no channel has one).
fn launch_distance_from_hub(entity: &Dynamic, field: &str, hub: Dynamic) -> Result<i64, String> {
    let hub = read_time(hub, &format!("consistency: the campaign's fields.{field}"))?;
    Ok(read_channels("consistency", entity, field, read_time)?
        .iter()
        .map(|at| (*at - hub).num_seconds().abs())
        .max()
        .unwrap_or(0))
}

pub(crate) fn audience_overlap(entity: &Dynamic, field: &str) -> Result<FLOAT, String> {
    let sets = read_channels("audience_overlap", entity, field, read_segments)?;
    Ok(min_pairwise(&sets, jaccard))
}

/// The lowest share of a channel's segments that are among the hub's (its
/// taxonomy); a channel targeting a part of it is within it. 1.0 when no
/// channel has segments.
fn audience_within_hub(entity: &Dynamic, field: &str, hub: Dynamic) -> Result<FLOAT, String> {
    let hub = read_segments(hub, &format!("consistency: the campaign's fields.{field}"))?;
    Ok(read_channels("consistency", entity, field, read_segments)?
        .iter()
        .filter(|set| !set.is_empty())
        .map(|set| set.intersection(&hub).count() as FLOAT / set.len() as FLOAT)
        .fold(1.0, FLOAT::min))
}

/// The timing part: 1.0 when the spread is within the window, else
/// window / spread.
pub(crate) fn timing_score(spread_seconds: i64, window_seconds: u64) -> FLOAT {
    if spread_seconds <= 0 || (spread_seconds as u64) <= window_seconds {
        1.0
    } else {
        window_seconds as FLOAT / spread_seconds as FLOAT
    }
}

/// `consistency(entity, spec)`: the parts `spec` asks for, their weighted
/// mean, the parts below `threshold` and the channels that disagree on the
/// `fields`. With `hub: true` the campaign is the hub of a hub-and-spoke
/// workflow: a part whose field the campaign itself has measures each
/// channel against that value instead of against the other channels.
pub(crate) fn consistency(entity: &Dynamic, spec: &Map) -> Result<Map, String> {
    const KEYS: &[&str] = &[
        "fields",
        "message",
        "launch",
        "window",
        "audience",
        "threshold",
        "hub",
    ];
    if let Some(unknown) = spec.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "consistency: unknown key `{unknown}` (known: {})",
            KEYS.join(", ")
        ));
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match spec.get(key) {
            None => Ok(None),
            Some(v) if v.is_unit() => Ok(None),
            Some(v) => v.clone().into_string().map(Some).map_err(|ty| {
                format!("consistency: `{key}` must be a field name, got a value of type `{ty}`")
            }),
        }
    };
    let threshold = match spec.get("threshold") {
        None => 1.0,
        Some(v) => v
            .as_float()
            .or_else(|_| v.as_int().map(|i| i as FLOAT))
            .ok()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| {
                format!("consistency: `threshold` must be a number from 0 to 1, got {v}")
            })?,
    };

    let hub = match spec.get("hub") {
        None => false,
        Some(v) => v
            .as_bool()
            .map_err(|_| format!("consistency: `hub` must be true or false, got {v}"))?,
    };
    // The value a part measures the channels against, when the hub has it.
    let reference = |field: &str| -> Result<Option<Dynamic>, String> {
        if hub {
            hub_value(entity, field)
        } else {
            Ok(None)
        }
    };

    let mut parts = Map::new();
    let mut weighted = 0.0;
    let mut weights = 0.0;
    let mut outliers: BTreeSet<String> = BTreeSet::new();
    let mut add = |parts: &mut Map, name: &str, weight: FLOAT, value: FLOAT| {
        parts.insert(name.into(), Dynamic::from_float(value));
        weighted += weight * value;
        weights += weight;
    };

    if let Some(fields) = spec.get("fields").filter(|v| !v.is_unit()) {
        let fields = fields
            .clone()
            .try_cast::<Array>()
            .ok_or("consistency: `fields` must be an array of field names")?;
        if !fields.is_empty() {
            let mut lowest: FLOAT = 1.0;
            for field in fields {
                let field = field.into_string().map_err(|ty| {
                    format!(
                        "consistency: `fields` must hold field names, got a value of type `{ty}`"
                    )
                })?;
                let (share, out) = match reference(&field)? {
                    Some(value) => agreement_with_hub(entity, &field, &value)?,
                    None => agreement_with_outliers(entity, &field)?,
                };
                lowest = lowest.min(share);
                outliers.extend(out);
            }
            add(&mut parts, "agreement", WEIGHT_AGREEMENT, lowest);
        }
    }
    if let Some(field) = text("message")? {
        let value = match reference(&field)? {
            Some(value) => message_with_hub(entity, &field, value)?,
            None => message_consistency(entity, &field)?,
        };
        add(&mut parts, "message", WEIGHT_MESSAGE, value);
    }
    match (text("launch")?, spec.get("window")) {
        (Some(field), Some(window)) => {
            let window = parse_duration("consistency: `window`", window)?.as_secs();
            let spread = match reference(&field)? {
                Some(value) => launch_distance_from_hub(entity, &field, value)?,
                None => launch_spread_seconds(entity, &field)?,
            };
            add(
                &mut parts,
                "timing",
                WEIGHT_TIMING,
                timing_score(spread, window),
            );
        }
        (Some(_), None) => {
            return Err("consistency: `launch` needs a `window`, e.g. window: \"48h\"".into());
        }
        (None, Some(_)) => return Err("consistency: `window` needs a `launch` field".into()),
        (None, None) => {}
    }
    if let Some(field) = text("audience")? {
        let value = match reference(&field)? {
            Some(value) => audience_within_hub(entity, &field, value)?,
            None => audience_overlap(entity, &field)?,
        };
        add(&mut parts, "audience", WEIGHT_AUDIENCE, value);
    }

    let score = if weights > 0.0 {
        weighted / weights
    } else {
        1.0
    };
    let failing: Array = ["agreement", "message", "timing", "audience"]
        .into_iter()
        .filter(|name| {
            parts
                .get(*name)
                .and_then(|v| v.as_float().ok())
                .is_some_and(|v| v < threshold)
        })
        .map(|name| Dynamic::from(name.to_string()))
        .collect();
    let mut result = Map::new();
    result.insert("score".into(), Dynamic::from_float(score));
    result.insert("parts".into(), Dynamic::from_map(parts));
    result.insert("failing".into(), Dynamic::from_array(failing));
    result.insert(
        "outliers".into(),
        Dynamic::from_array(outliers.into_iter().map(Dynamic::from).collect()),
    );
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_similarity_is_jaccard_of_word_sets() {
        assert_eq!(
            text_similarity("Save 25% this fall", "This fall: SAVE 25%!"),
            1.0
        );
        assert_eq!(
            text_similarity("Save 25% on fall gear", "Fall gear is 25% off"),
            3.0 / 7.0
        );
        assert_eq!(text_similarity("", "  "), 1.0);
        assert_eq!(text_similarity("hello", ""), 0.0);
    }

    #[test]
    fn timing_is_window_over_spread_past_the_window() {
        assert_eq!(timing_score(0, 0), 1.0);
        assert_eq!(timing_score(3600, 7200), 1.0);
        assert_eq!(timing_score(4 * 86400, 2 * 86400), 0.5);
    }

    #[test]
    fn durations_in_every_documented_form() {
        for (text, seconds) in [
            ("48h", 172_800),
            ("2d", 172_800),
            ("90m", 5400),
            ("30s", 30),
            ("1d12h", 129_600),
            ("1d 12h", 129_600),
        ] {
            assert_eq!(
                parse_duration("d", &Dynamic::from(text.to_string()))
                    .unwrap()
                    .as_secs(),
                seconds,
                "{text}"
            );
        }
        assert_eq!(
            parse_duration("d", &Dynamic::from_int(60))
                .unwrap()
                .as_secs(),
            60
        );
        assert!(parse_duration("d", &Dynamic::from_int(-1)).is_err());
        assert!(parse_duration("d", &Dynamic::from("soon".to_string())).is_err());
        assert_eq!(
            positive_duration_ms("schedule: `after`", &Dynamic::from("0s".to_string()))
                .unwrap_err(),
            "schedule: `after` must be more than zero, got \"0s\""
        );
    }
}
