//! What a rule's `entities(..)` and `report(..)` read: the entity states
//! and the metric samples as of the event being decided, whoever keeps them.
//!
//! An [`EntitySource`] yields the states of one kind in key order (the
//! daemon's database once the results of every earlier event are
//! committed; a simulation's states); `QueryWorld` adds the event's own
//! entity as it is now, the held sends of the engine's gates, and the
//! filtering, so the daemon, `rules test` and `replay` answer alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use converge_model::flow::week_of;
use converge_model::records::TimerRecord;
use converge_model::{EntityState, Metric, Sample, SampleGroup, SampleQuery, Slice};
use converge_rules::{EntityQuery, World};
use serde_json::{Value, json};

use crate::flow::{Role, StageRoles, normalize_stage};
use crate::gates::Gates;

/// Entity states as of the event being decided.
pub trait EntitySource: Send + Sync {
    /// Calls `visit` with each entity of `kind`, in key order, until it
    /// returns false.
    fn scan(&self, kind: &str, visit: &mut dyn FnMut(EntityState) -> bool) -> Result<(), String>;

    /// The entity's pending timers (`kind/id`), soonest first.
    fn pending_timers(&self, entity: &str) -> Result<Vec<TimerRecord>, String>;

    /// The metric samples of `query`, grouped ([`SampleQuery::group`]).
    fn sample_groups(&self, query: &SampleQuery) -> Result<Vec<SampleGroup>, String>;
}

/// The world one event's rules query.
pub(crate) struct QueryWorld {
    pub source: Arc<dyn EntitySource>,
    /// The event's own entity, after the event: newer than any source.
    pub current: Option<EntityState>,
    /// Held sends by campaign, as rules read them in `gate.held`.
    pub held: HashMap<String, Vec<Value>>,
    pub roles: Arc<StageRoles>,
    pub now: DateTime<Utc>,
}

impl QueryWorld {
    pub fn new(
        source: Arc<dyn EntitySource>,
        current: Option<EntityState>,
        gates: &Gates,
        roles: Arc<StageRoles>,
        now: DateTime<Utc>,
    ) -> QueryWorld {
        let mut held: HashMap<String, Vec<Value>> = HashMap::new();
        for (campaign, send) in gates.all() {
            held.entry(campaign.to_string())
                .or_default()
                .push(send.to_rule_value());
        }
        QueryWorld {
            source,
            current,
            held,
            roles,
            now,
        }
    }

    fn matches(&self, query: &EntityQuery, state: &EntityState) -> bool {
        let now = self.now;
        let older = |since: Option<DateTime<Utc>>, ms: Option<i64>| match ms {
            None => true,
            Some(ms) => since.is_some_and(|since| now - since >= Duration::milliseconds(ms)),
        };
        let channel = query.channel.as_deref().map(|c| state.channels.get(c));
        if matches!(channel, Some(None)) {
            return false;
        }
        let channel = channel.flatten();
        let stage = channel.map_or(state.stage.as_deref(), |c| c.stage.as_deref());
        let stage_ok = query.stages.is_empty()
            || stage.is_some_and(|stage| {
                let stage = normalize_stage(stage);
                query.stages.iter().any(|s| normalize_stage(s) == stage)
            });
        let role_ok = query.role.as_deref().is_none_or(|role| {
            Role::from_name(role).is_ok_and(|role| self.roles.role(stage) == Some(role))
        });
        let owner = channel
            .and_then(|c| c.owner.as_deref())
            .or(state.owner.as_deref());
        let owner_ok = query.owner.as_deref().is_none_or(|o| owner == Some(o));
        let fields = channel.map_or(&state.fields, |c| &c.fields);
        let fields_ok = query
            .fields
            .iter()
            .all(|(name, value)| fields.get(name) == Some(value));
        let paused = |c: &converge_model::entity::ChannelState| {
            c.fields.get("paused") == Some(&Value::Bool(true))
        };
        let paused_ok = query.paused.is_none_or(|want| {
            let is = match channel {
                Some(c) => paused(c),
                None => state.channels.values().any(paused),
            };
            is == want
        });
        let held = self.held.get(&state.key_text());
        let held_ok = query.held.is_none_or(|want| {
            let is = held.is_some_and(|sends| {
                sends.iter().any(|send| {
                    query
                        .channel
                        .as_deref()
                        .is_none_or(|c| send["channel"].as_str() == Some(c))
                })
            });
            is == want
        });
        let flow = channel.map_or(&state.flow, |c| &c.flow);
        let blocked_ok = query
            .blocked
            .is_none_or(|want| flow.blocked_since.is_some() == want);
        stage_ok
            && role_ok
            && owner_ok
            && fields_ok
            && paused_ok
            && held_ok
            && blocked_ok
            && older(state.stage_since, query.stage_older_than_ms)
            && older(Some(state.updated_at), query.idle_for_ms)
            && older(flow.handoff_since, query.handoff_older_than_ms)
    }

    fn answer(&self, query: &EntityQuery, state: &EntityState) -> Result<Value, String> {
        let key = state.key_text();
        let mut value = serde_json::to_value(state).map_err(|e| e.to_string())?;
        value["held"] = json!(self.held.get(&key).cloned().unwrap_or_default());
        if query.timers {
            let timers: Vec<Value> = self
                .source
                .pending_timers(&key)?
                .iter()
                .map(|t| {
                    json!({
                        "id": t.id,
                        "kind": t.kind,
                        "event_type": t.event_type,
                        "due": DateTime::<Utc>::from_timestamp_millis(t.due_at_ms)
                            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                        "rule": t.rule,
                    })
                })
                .collect();
            value["timers"] = json!(timers);
        }
        Ok(value)
    }
}

impl World for QueryWorld {
    fn report(&self, query: &SampleQuery) -> Result<Vec<SampleGroup>, String> {
        self.source.sample_groups(query)
    }

    fn find(&self, query: &EntityQuery) -> Result<Vec<Value>, String> {
        if let Some(role) = &query.role {
            Role::from_name(role)?;
        }
        let current = self
            .current
            .as_ref()
            .filter(|state| state.kind == query.kind);
        let current_key = current.map(EntityState::key_text);
        // The source's states in key order, the event's own entity in place
        // of its older state; past `limit` matches, later keys cannot count.
        let mut found: Vec<EntityState> = Vec::new();
        self.source.scan(&query.kind, &mut |state| {
            if current_key.as_deref() == Some(state.key_text().as_str()) {
                return true;
            }
            if self.matches(query, &state) {
                found.push(state);
            }
            found.len() < query.limit
        })?;
        if let Some(current) = current.filter(|state| self.matches(query, state)) {
            let key = current.key_text();
            let at = found.partition_point(|state| state.key_text() < key);
            found.insert(at, current.clone());
            found.truncate(query.limit);
        }
        found
            .iter()
            .map(|state| self.answer(query, state))
            .collect()
    }
}

/// Entity states and pending timers held in memory: a simulation's.
#[derive(Default)]
pub struct InMemory {
    /// By key, in key order.
    pub entities: std::collections::BTreeMap<String, EntityState>,
    /// Pending timers by entity, soonest first.
    pub timers: HashMap<String, Vec<TimerRecord>>,
    /// The metric samples so far, shared with the simulation that adds to
    /// them (kept only when a rule reads the reports).
    pub samples: Arc<Mutex<SampleLog>>,
}

impl EntitySource for InMemory {
    fn scan(&self, kind: &str, visit: &mut dyn FnMut(EntityState) -> bool) -> Result<(), String> {
        let from = format!("{kind}/");
        for (_, state) in self
            .entities
            .range(from.clone()..)
            .take_while(|(key, _)| key.starts_with(&from))
        {
            if !visit(state.clone()) {
                break;
            }
        }
        Ok(())
    }

    fn pending_timers(&self, entity: &str) -> Result<Vec<TimerRecord>, String> {
        Ok(self.timers.get(entity).cloned().unwrap_or_default())
    }

    fn sample_groups(&self, query: &SampleQuery) -> Result<Vec<SampleGroup>, String> {
        let samples = self
            .samples
            .lock()
            .map_err(|_| "the samples are poisoned")?;
        Ok(samples.group(query))
    }
}

/// A simulation's metric samples, as `report(..)` reads them: for each
/// metric its samples' times, values and slices, the slices' names kept
/// once. A replay of a year keeps millions of samples; whole `Sample`s
/// (with the entity and four strings each) took several hundred MiB.
#[derive(Debug, Default)]
pub struct SampleLog {
    by_metric: HashMap<Metric, Vec<LoggedSample>>,
    /// Each slice value once; a sample names it by its index here.
    names: Vec<String>,
    index: HashMap<String, u32>,
}

#[derive(Debug, Clone, Copy)]
struct LoggedSample {
    at_ms: i64,
    value: f64,
    /// Owner, campaign, channel and stage: indexes into `names`.
    slices: [Option<u32>; 4],
}

impl SampleLog {
    pub fn push(&mut self, sample: &Sample) {
        let mut name = |value: &Option<String>| {
            let value = value.as_ref()?;
            if let Some(i) = self.index.get(value) {
                return Some(*i);
            }
            let i = u32::try_from(self.names.len()).ok()?;
            self.names.push(value.clone());
            self.index.insert(value.clone(), i);
            Some(i)
        };
        let slices = [
            name(&sample.owner),
            name(&sample.campaign),
            name(&sample.channel),
            name(&sample.stage),
        ];
        self.by_metric
            .entry(sample.metric)
            .or_default()
            .push(LoggedSample {
                at_ms: sample.at.timestamp_millis(),
                value: sample.value,
                slices,
            });
    }

    /// The groups of `query`, as [`SampleQuery::group`] makes them.
    pub fn group(&self, query: &SampleQuery) -> Vec<SampleGroup> {
        let logged = self
            .by_metric
            .get(&query.metric)
            .map_or(&[][..], Vec::as_slice);
        query.group_values(
            logged
                .iter()
                .filter(|s| query.covers(s.at_ms))
                .map(|s| (query.by.and_then(|by| self.slice(s, by)), s.value)),
        )
    }

    /// A logged sample's value of a slice (the week as `2026-11-02`).
    fn slice(&self, sample: &LoggedSample, by: Slice) -> Option<String> {
        let name = |i: usize| sample.slices[i].map(|n| self.names[n as usize].clone());
        match by {
            Slice::Owner => name(0),
            Slice::Campaign => name(1),
            Slice::Channel => name(2),
            Slice::Stage => name(3),
            Slice::Week => {
                DateTime::<Utc>::from_timestamp_millis(sample.at_ms).map(|t| week_of(t).to_string())
            }
        }
    }
}

#[cfg(test)]
mod sample_log_tests {
    use super::*;

    /// The log groups as the model's grouping of whole samples does, for
    /// every slice and a period that leaves samples out on both sides.
    #[test]
    fn the_log_groups_like_whole_samples() {
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        let sample =
            |metric, time: &str, value, owner: Option<&str>, channel: Option<&str>| Sample {
                metric,
                at: at(time),
                value,
                entity: "campaign/c-1".into(),
                campaign: Some("campaign/c-1".into()),
                owner: owner.map(str::to_string),
                channel: channel.map(str::to_string),
                stage: Some("launched".into()),
            };
        let samples = [
            sample(
                Metric::LaunchSpread,
                "2026-11-02T10:00:00Z",
                3600.0,
                Some("ana"),
                Some("email"),
            ),
            sample(
                Metric::LaunchSpread,
                "2026-11-03T10:00:00Z",
                7200.0,
                None,
                Some("social"),
            ),
            sample(
                Metric::LaunchSpread,
                "2026-11-10T10:00:00Z",
                60.0,
                Some("ana"),
                None,
            ),
            sample(
                Metric::LaunchSpread,
                "2026-11-20T10:00:00Z",
                1.0,
                Some("ben"),
                Some("email"),
            ),
            sample(
                Metric::ReworkRate,
                "2026-11-03T10:00:00Z",
                1.0,
                Some("ana"),
                Some("email"),
            ),
            sample(
                Metric::ReworkRate,
                "2026-11-04T10:00:00Z",
                0.0,
                Some("ben"),
                None,
            ),
        ];
        let mut log = SampleLog::default();
        samples.iter().for_each(|s| log.push(s));
        for metric in [Metric::LaunchSpread, Metric::ReworkRate, Metric::CycleTime] {
            for by in std::iter::once(None).chain(Slice::ALL.into_iter().map(Some)) {
                let query = SampleQuery {
                    metric,
                    by,
                    since_ms: at("2026-11-02T12:00:00Z").timestamp_millis(),
                    until_ms: at("2026-11-20T10:00:00Z").timestamp_millis(),
                };
                assert_eq!(log.group(&query), query.group(samples.iter()), "{query:?}");
            }
        }
        // Not an empty comparison: the period holds two of the durations.
        let query = SampleQuery {
            metric: Metric::LaunchSpread,
            by: Some(Slice::Owner),
            since_ms: at("2026-11-02T12:00:00Z").timestamp_millis(),
            until_ms: at("2026-11-20T10:00:00Z").timestamp_millis(),
        };
        let groups = log.group(&query);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (groups[0].slice.as_deref(), groups[0].samples),
            (Some("ana"), 1)
        );
        assert_eq!((groups[1].slice.as_deref(), groups[1].samples), (None, 1));
    }
}
