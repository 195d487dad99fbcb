//! `entities(filter)`: a rule reads the states of other entities, for the
//! review points that look at the whole team (all tasks blocked, every
//! campaign with a held send, the handoffs older than 48h); and
//! `report(filter)`: it reads the team's numbers (docs/reports.md), for
//! the review points that check them against a threshold.
//!
//! The rules crate only reads the filter and hands it to a [`World`]; what
//! "as of this event" means (the daemon's database, a replay's simulated
//! states) is the caller's. Results are bounded twice: by the filter's
//! `limit`, and by the rule's operation budget, which each entity returned
//! spends [`OPERATIONS_PER_ENTITY`] of.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use converge_model::{Metric, SampleGroup, SampleQuery, Slice, point_in_time};
use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext};
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

    /// The samples of `query` grouped as a report groups them: the samples
    /// of the events decided before this one.
    fn report(&self, query: &SampleQuery) -> Result<Vec<SampleGroup>, String>;
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
    let world = world_of("entities() reads the daemon's entities")?;
    let found = world.find(&query).map_err(|e| format!("entities: {e}"))?;
    spend(
        &ctx,
        found.len(),
        "entities: the queries of this run read more entities than its operation budget allows",
        "narrow the filter or lower `limit`",
    )?;
    Ok(found
        .iter()
        .map(|value| json_to_dynamic(value).into_read_only())
        .collect())
}

/// The world of the run, for a query; `what` says what is missing without one.
fn world_of(what: &str) -> Result<SharedWorld, Box<EvalAltResult>> {
    with_run(|state| {
        state
            .world
            .clone_world()
            .ok_or_else(|| format!("{what}, which this run does not have"))
    })
}

/// Spends the operations `rows` read by a query cost, failing the run with
/// `over` (and `advice`) past its budget.
fn spend(
    ctx: &NativeCallContext,
    rows: usize,
    over: &str,
    advice: &str,
) -> Result<(), Box<EvalAltResult>> {
    let max = ctx.engine().max_operations();
    with_run(|state| {
        state.query_operations += rows as u64 * OPERATIONS_PER_ENTITY;
        if max > 0 && state.query_operations > max {
            return Err(format!(
                "{over} ({OPERATIONS_PER_ENTITY} operations each, {max} in all): {advice}"
            ));
        }
        Ok(())
    })
}

/// The members a `report` filter may have.
const REPORT_FILTERS: &[&str] = &["metric", "by", "since", "until"];

/// How far before `until` a report reads when its filter gives no
/// `since`: the period `converge report` reads by default.
const REPORT_DAYS: i64 = 28;

/// Reads a rule's `report` filter: the metric, the slice and the period
/// (`since` and `until`: a duration before `now`, or an RFC 3339 time;
/// `until` excluded, and by default just after `now`, so the samples of
/// every event decided before this one count).
fn report_query(filter: &Map, now: DateTime<Utc>) -> Result<SampleQuery, String> {
    let mut metric = None;
    let mut by = None;
    let mut since = None;
    let mut until = now + Duration::milliseconds(1);
    for (name, value) in filter {
        let text = || {
            value.clone().into_string().map_err(|_| {
                format!(
                    "`{name}` must be a string, got a value of type `{}`",
                    value.type_name()
                )
            })
        };
        match name.as_str() {
            "metric" => metric = Some(text()?.parse::<Metric>()?),
            "by" => by = Some(text()?.parse::<Slice>()?),
            "since" => since = Some(report_time(name, value, now)?),
            "until" => until = report_time(name, value, now)?,
            other => {
                return Err(format!(
                    "unknown filter `{other}`: the filters are {}",
                    REPORT_FILTERS.join(", ")
                ));
            }
        }
    }
    let Some(metric) = metric else {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        return Err(format!("`metric` is required: one of {}", names.join(", ")));
    };
    let since = since.unwrap_or(until - Duration::days(REPORT_DAYS));
    if since >= until {
        return Err(format!(
            "`since` ({}) must be before `until` ({})",
            since.to_rfc3339(),
            until.to_rfc3339()
        ));
    }
    Ok(SampleQuery {
        metric,
        by,
        since_ms: since.timestamp_millis(),
        until_ms: until.timestamp_millis(),
    })
}

/// A report's bound, as `converge report` takes them: a date (its
/// midnight UTC), an RFC 3339 time, or a duration before `now` (a string,
/// or an integer number of seconds).
fn report_time(name: &str, value: &Dynamic, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let bound = match value.clone().into_string() {
        Ok(text) => point_in_time(&text, now),
        Err(_) => parse_duration(&format!("`{name}`"), value)
            .ok()
            .and_then(|ago| Duration::from_std(ago).ok())
            .and_then(|ago| now.checked_sub_signed(ago)),
    };
    bound.ok_or_else(|| {
        format!(
            "`{name}` must be a date (\"2026-11-02\"), an RFC 3339 time or a duration \
             before now (\"7d\", \"12h\", or seconds), got {value}"
        )
    })
}

/// One report row as rules read it: `metric`, `slice` (`()` unsliced or
/// for the samples without one), `samples`, `median_hours` and `p85_hours`
/// (durations), `rate` (rates, 0 to 1); a value a group has not is `()`.
fn report_row(metric: Metric, group: &SampleGroup) -> Dynamic {
    let summary = group.summary(metric);
    let number = |value: Option<f64>| value.map_or(Dynamic::UNIT, Dynamic::from_float);
    let mut row = Map::new();
    row.insert("metric".into(), metric.name().into());
    row.insert(
        "slice".into(),
        group.slice.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    row.insert("samples".into(), Dynamic::from_int(group.samples));
    row.insert("median_hours".into(), number(summary.median_hours));
    row.insert("p85_hours".into(), number(summary.p85_hours));
    row.insert("rate".into(), number(summary.rate));
    Dynamic::from_map(row).into_read_only()
}

/// `report(#{ metric: "rework_rate", since: "7d" })`: the team's number
/// (a map); with `by`, one row per slice value (an array, in slice order,
/// the samples without one last). Each row spends what an entity costs.
pub(crate) fn report(ctx: NativeCallContext, filter: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let now = with_run(|state| Ok(state.now))?;
    let query = report_query(&filter, now).map_err(|e| format!("report: {e}"))?;
    let world = world_of("report() reads the daemon's reports")?;
    let groups = world.report(&query).map_err(|e| format!("report: {e}"))?;
    spend(
        &ctx,
        groups.len().max(1),
        "report: the queries of this run read more than its operation budget allows",
        "narrow the filter",
    )?;
    if query.by.is_none() {
        let whole = groups.into_iter().next().unwrap_or_default();
        return Ok(report_row(query.metric, &whole));
    }
    Ok(Dynamic::from_array(
        groups
            .iter()
            .map(|group| report_row(query.metric, group))
            .collect(),
    ))
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
    fn a_report_filter_reads_the_metric_slice_and_period() {
        let now: DateTime<Utc> = "2026-11-30T09:00:00Z".parse().unwrap();
        let ms = |t: &str| t.parse::<DateTime<Utc>>().unwrap().timestamp_millis();
        // By default the 28 days up to just after now, now's own samples included.
        let query = report_query(&map(&[("metric", "rework_rate".into())]), now).unwrap();
        assert_eq!(
            query,
            SampleQuery {
                metric: Metric::ReworkRate,
                by: None,
                since_ms: ms("2026-11-02T09:00:00.001Z"),
                until_ms: ms("2026-11-30T09:00:00.001Z"),
            }
        );
        let query = report_query(
            &map(&[
                ("metric", "launch_spread".into()),
                ("by", "channel".into()),
                ("since", "7d".into()),
                ("until", "2026-11-30".into()),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(query.by, Some(Slice::Channel));
        assert_eq!(query.since_ms, ms("2026-11-23T09:00:00Z"));
        assert_eq!(query.until_ms, ms("2026-11-30T00:00:00Z"));
        let query = report_query(
            &map(&[
                ("metric", "cycle_time".into()),
                ("since", "2026-11-01T12:00:00+01:00".into()),
                ("until", Dynamic::from_int(3600)),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(query.since_ms, ms("2026-11-01T11:00:00Z"));
        assert_eq!(query.until_ms, ms("2026-11-30T08:00:00Z"));

        let error = |pairs: &[(&str, Dynamic)]| report_query(&map(pairs), now).unwrap_err();
        assert!(error(&[]).contains("`metric` is required: one of review_time"));
        assert!(
            error(&[("metric", "speed".into())])
                .contains("unknown metric `speed`: the metrics are review_time")
        );
        assert!(
            error(&[("metric", "rework_rate".into()), ("by", "team".into())])
                .contains("a report is by owner, campaign")
        );
        assert!(
            error(&[("metric", "rework_rate".into()), ("period", "7d".into())])
                .contains("unknown filter `period`: the filters are metric, by, since, until")
        );
        assert!(
            error(&[("metric", "rework_rate".into()), ("since", "a week".into())])
                .contains("`since` must be a date (\"2026-11-02\"), an RFC 3339 time or a duration before now (\"7d\", \"12h\", or seconds), got a week")
        );
        assert!(error(&[("metric", Dynamic::from_int(3))]).contains("`metric` must be a string"));
        assert!(
            error(&[
                ("metric", "rework_rate".into()),
                ("since", "1d".into()),
                ("until", "2d".into())
            ])
            .contains("`since` (2026-11-29T09:00:00+00:00) must be before `until`")
        );
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
