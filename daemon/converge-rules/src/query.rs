//! `entities(filter)`: a rule reads the states of other entities, for the
//! review points that look at the whole team (all tasks blocked, every
//! campaign with a held send, the handoffs older than 48h).
//!
//! The rules crate only reads the filter and hands it to a [`World`]; what
//! "as of this event" means (the daemon's database, a replay's simulated
//! states) is the caller's. Results are bounded twice: by the filter's
//! `limit`, and by the rule's operation budget, which each entity returned
//! spends [`OPERATIONS_PER_ENTITY`] of.

use std::sync::Arc;

use rhai::{EvalAltResult, Map, NativeCallContext};
use serde_json::Value;

use crate::convert::{dynamic_to_json, json_to_dynamic};
use crate::engine::with_run;
use crate::measures::parse_duration;

/// Entities a query returns when the filter gives no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` a filter may ask for.
pub const MAX_LIMIT: usize = 1000;
/// What each entity a query returns costs from the rule's `max_operations`:
/// about what reading it in the script costs, so a rule that queries a
/// lot fails like one that loops a lot.
pub const OPERATIONS_PER_ENTITY: u64 = 50;

/// The filters a rule can give, each optional but `kind`.
const FILTERS: &[&str] = &[
    "kind",
    "stage",
    "role",
    "owner",
    "fields",
    "channel",
    "paused",
    "held",
    "blocked",
    "stage_older_than",
    "idle_for",
    "handoff_older_than",
    "timers",
    "limit",
];

/// A rule's `entities(#{ .. })` filter, read and checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityQuery {
    /// `task`, `campaign`...: queries read one kind at a time.
    pub kind: String,
    /// Any of these stage names (compared as stage roles compare names).
    pub stages: Vec<String>,
    /// A stage role (`review`, `blocked`...), by the config's stage names.
    pub role: Option<String>,
    pub owner: Option<String>,
    /// Fields that must have these values.
    pub fields: Vec<(String, Value)>,
    /// Has this channel.
    pub channel: Option<String>,
    /// Has a paused channel (`channel` given: that channel is paused).
    pub paused: Option<bool>,
    /// Has a send held at its gate (`channel` given: on that channel).
    pub held: Option<bool>,
    /// Is in a blocked span now (the entity or, `channel` given, that channel).
    pub blocked: Option<bool>,
    /// Its stage has not changed for at least this long.
    pub stage_older_than_ms: Option<i64>,
    /// Nothing about it changed for at least this long.
    pub idle_for_ms: Option<i64>,
    /// Handed to its owner at least this long ago, who has not moved it yet.
    pub handoff_older_than_ms: Option<i64>,
    /// Add each entity's pending timers (`timers` member).
    pub timers: bool,
    pub limit: usize,
}

/// Where the entities of a query come from: the states as of the event
/// being decided.
pub trait World {
    /// The entities matching `query` in key order, at most `query.limit`,
    /// each as the `entity` map rules know, plus `held` (the sends its gate
    /// holds) and, when asked, `timers`.
    fn find(&self, query: &EntityQuery) -> Result<Vec<Value>, String>;
}

/// What `entities` answers with when nothing provides a world (a caller
/// that runs rules without entity states).
pub(crate) type SharedWorld = Arc<dyn World>;

impl EntityQuery {
    /// Reads a rule's filter map; an unknown filter or a value of the wrong
    /// type is an error naming the valid ones.
    pub fn from_map(filter: &Map) -> Result<EntityQuery, String> {
        let mut query = EntityQuery {
            limit: DEFAULT_LIMIT,
            ..EntityQuery::default()
        };
        for (name, value) in filter {
            let name = name.as_str();
            let text = || -> Result<String, String> {
                value
                    .clone()
                    .into_immutable_string()
                    .map(|s| s.to_string())
                    .map_err(|_| format!("entities: `{name}` is a string"))
            };
            let flag = || -> Result<bool, String> {
                value
                    .as_bool()
                    .map_err(|_| format!("entities: `{name}` is true or false"))
            };
            let age = || -> Result<i64, String> {
                let duration = parse_duration(&format!("entities: `{name}`"), value)?;
                i64::try_from(duration.as_millis())
                    .map_err(|_| format!("entities: `{name}` is too long"))
            };
            match name {
                "kind" => query.kind = text()?,
                "stage" => {
                    query.stages = if value.is_array() {
                        value
                            .clone()
                            .into_array()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|s| {
                                s.into_immutable_string()
                                    .map(|s| s.to_string())
                                    .map_err(|_| {
                                        "entities: `stage` is a name or an array of names"
                                            .to_string()
                                    })
                            })
                            .collect::<Result<_, _>>()?
                    } else {
                        vec![text()?]
                    }
                }
                "role" => query.role = Some(text()?),
                "owner" => query.owner = Some(text()?),
                "fields" => {
                    let Some(fields) = value.read_lock::<Map>() else {
                        return Err("entities: `fields` is a map of field names to values".into());
                    };
                    for (field, expected) in fields.iter() {
                        query
                            .fields
                            .push((field.to_string(), dynamic_to_json(expected)?));
                    }
                }
                "channel" => query.channel = Some(text()?),
                "paused" => query.paused = Some(flag()?),
                "held" => query.held = Some(flag()?),
                "blocked" => query.blocked = Some(flag()?),
                "stage_older_than" => query.stage_older_than_ms = Some(age()?),
                "idle_for" => query.idle_for_ms = Some(age()?),
                "handoff_older_than" => query.handoff_older_than_ms = Some(age()?),
                "timers" => query.timers = flag()?,
                "limit" => {
                    let limit = value
                        .as_int()
                        .ok()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|n| (1..=MAX_LIMIT).contains(n));
                    query.limit = limit.ok_or_else(|| {
                        format!("entities: `limit` is a number from 1 to {MAX_LIMIT}")
                    })?;
                }
                other => {
                    return Err(format!(
                        "entities: unknown filter `{other}`: the filters are {}",
                        FILTERS.join(", ")
                    ));
                }
            }
        }
        if query.kind.is_empty() {
            return Err(
                "entities: give the `kind` to read, e.g. entities(#{ kind: \"task\", role: \"blocked\" })"
                    .into(),
            );
        }
        Ok(query)
    }
}

/// `entities(filter)`: the matching entities as an array of maps, read-only.
pub(crate) fn entities(
    ctx: NativeCallContext,
    filter: Map,
) -> Result<rhai::Array, Box<EvalAltResult>> {
    let query = EntityQuery::from_map(&filter)?;
    let world = with_run(|state| {
        state.world.clone_world().ok_or_else(|| {
            "entities() reads the daemon's entities, which this run does not have".to_string()
        })
    })?;
    let found = world.find(&query).map_err(|e| format!("entities: {e}"))?;
    let max = ctx.engine().max_operations();
    with_run(|state| {
        state.query_operations += found.len() as u64 * OPERATIONS_PER_ENTITY;
        if max > 0 && state.query_operations > max {
            return Err(format!(
                "entities: the queries of this run read more entities than its operation budget \
                 allows ({} operations each, {max} in all): narrow the filter or lower `limit`",
                OPERATIONS_PER_ENTITY
            ));
        }
        Ok(())
    })?;
    Ok(found
        .iter()
        .map(|value| json_to_dynamic(value).into_read_only())
        .collect())
}

#[cfg(test)]
mod tests {
    use rhai::Dynamic;

    use super::*;

    fn map(pairs: &[(&str, Dynamic)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect()
    }

    #[test]
    fn a_filter_reads_every_member_and_names_the_valid_ones() {
        let query = EntityQuery::from_map(&map(&[
            ("kind", "task".into()),
            (
                "stage",
                Dynamic::from_array(vec!["Blocked".into(), "On hold".into()]),
            ),
            ("owner", "ana".into()),
            ("handoff_older_than", "48h".into()),
            ("limit", Dynamic::from_int(20)),
        ]))
        .unwrap();
        assert_eq!(query.kind, "task");
        assert_eq!(query.stages, vec!["Blocked", "On hold"]);
        assert_eq!(query.handoff_older_than_ms, Some(48 * 3_600_000));
        assert_eq!(query.limit, 20);

        let error =
            EntityQuery::from_map(&map(&[("kind", "task".into()), ("colour", "red".into())]))
                .unwrap_err();
        assert!(
            error.starts_with("entities: unknown filter `colour`: the filters are kind, stage"),
            "{error}"
        );
        let error = EntityQuery::from_map(&map(&[("stage", "blocked".into())])).unwrap_err();
        assert!(error.contains("give the `kind`"), "{error}");
        let error = EntityQuery::from_map(&map(&[
            ("kind", "task".into()),
            ("limit", Dynamic::from_int(5000)),
        ]))
        .unwrap_err();
        assert_eq!(error, "entities: `limit` is a number from 1 to 1000");
        let error = EntityQuery::from_map(&map(&[("kind", "task".into()), ("held", "yes".into())]))
            .unwrap_err();
        assert_eq!(error, "entities: `held` is true or false");
    }
}
