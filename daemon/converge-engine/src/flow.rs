//! The metrics' bookkeeping: how an event moves an item's [`Flow`], and the
//! [`Sample`]s it finishes. docs/reports.md is the definition each function
//! here implements; a change to one is a change to the other.
//!
//! Stage names differ between teams and tools, so the metrics never read a
//! stage name: [`StageRoles`] maps names onto the [`Role`]s they need.
//! The ranked roles are ordered (brief < work < review < approved < launch
//! < done) so "back to an earlier stage" has a meaning; `blocked` is off the
//! line. An unmapped stage has no role and moves no metric.

use chrono::{DateTime, Utc};
pub use converge_model::stages::{Role, StageRoles, normalize_stage};
use converge_model::{EntityState, Event, Flow, Metric, Sample};
use serde_json::Value;

use crate::gates::{Gates, Override, OverrideEvent};

/// The stage and owner of an entity and its channels before an event: all
/// the metrics compare with, kept instead of a clone of the whole state.
#[derive(Debug, Default)]
pub struct Before {
    stage: Option<String>,
    owner: Option<String>,
    channels: Vec<(String, Option<String>, Option<String>)>,
}

impl Before {
    pub fn of(entity: Option<&EntityState>) -> Before {
        let Some(entity) = entity else {
            return Before::default();
        };
        Before {
            stage: entity.stage.clone(),
            owner: entity.owner.clone(),
            channels: entity
                .channels
                .iter()
                .map(|(name, c)| (name.clone(), c.stage.clone(), c.owner.clone()))
                .collect(),
        }
    }

    fn channel(&self, name: &str) -> (Option<&str>, Option<&str>) {
        self.channels
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or((None, None), |(_, stage, owner)| {
                (stage.as_deref(), owner.as_deref())
            })
    }
}

/// What else of the event's outcome the metrics look at.
pub struct Happened<'a> {
    pub event: &'a Event,
    pub now: DateTime<Utc>,
    /// A live `escalate` decision or a rule failure: an exception.
    pub exception: bool,
    /// A live `escalate` decision about the entity.
    pub escalated: bool,
    /// Channels of this campaign whose held (or own) send went out.
    pub released: Vec<&'a str>,
    pub gates: &'a Gates,
}

/// Moves the flows of `entity` (and of its channels) for one event and
/// returns the samples it finishes, entity level first, then channels by name.
pub fn observe(
    roles: &StageRoles,
    before: &Before,
    entity: Option<&mut EntityState>,
    happened: &Happened<'_>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let Some(entity) = entity else {
        samples.push(exception_sample(None, happened));
        return samples;
    };
    let key = entity.key_text();
    let campaign = campaign_of(entity);
    let event_channel = happened.event.data.get("channel").and_then(Value::as_str);
    let override_channel = match Override::of(happened.event) {
        Some(Ok(request)) => Some(request.channel),
        _ => None,
    };

    // The entity itself.
    let entity_planned = planned(&entity.fields, &roles.planned_field);
    let level = Level {
        entity: &key,
        campaign: campaign.as_deref(),
        channel: None,
        created_at: entity.created_at,
        planned: entity_planned,
        about_it: event_channel.is_none(),
        overridden: override_channel.is_some(),
        released: happened.released.clone(),
        gate_held: happened.gates.of(&key).len(),
    };
    // The entity's own launch is not a channel's: it moves no spread.
    track(
        roles,
        &level,
        (before.stage.as_deref(), before.owner.as_deref()),
        (entity.stage.as_deref(), entity.owner.as_deref()),
        &mut entity.flow,
        happened,
        &mut samples,
    );

    // Each channel, with the entity's owner standing in for a channel without one.
    let entity_owner = entity.owner.clone();
    let mut launched = Vec::new();
    for (name, channel) in &mut entity.channels {
        let (stage_before, owner_before) = before.channel(name);
        let level = Level {
            entity: &key,
            campaign: campaign.as_deref(),
            channel: Some(name),
            created_at: entity.created_at,
            planned: planned(&channel.fields, &roles.planned_field).or(entity_planned),
            about_it: event_channel == Some(name.as_str()),
            overridden: matches!(&override_channel, Some(None))
                || matches!(&override_channel, Some(Some(c)) if c == name),
            released: happened
                .released
                .iter()
                .copied()
                .filter(|c| *c == name)
                .collect(),
            gate_held: happened
                .gates
                .of(&key)
                .iter()
                .filter(|send| send.channel == *name)
                .count(),
        };
        let owner = channel.owner.as_deref().or(entity_owner.as_deref());
        let owner_before = owner_before.or(before.owner.as_deref());
        let launch = track(
            roles,
            &level,
            (stage_before, owner_before),
            (channel.stage.as_deref(), owner),
            &mut channel.flow,
            happened,
            &mut samples,
        );
        if launch {
            launched.push(level.sample(
                Metric::LaunchSpread,
                happened.now,
                0.0,
                owner,
                channel.stage.as_deref(),
            ));
        }
    }
    if !launched.is_empty() {
        spread(roles, entity, launched, happened.now, &mut samples);
    }

    samples.push(exception_sample(Some((entity, &key, campaign)), happened));
    samples
}

/// One level the metrics are kept at: the entity, or one of its channels.
struct Level<'a> {
    entity: &'a str,
    campaign: Option<&'a str>,
    channel: Option<&'a str>,
    created_at: DateTime<Utc>,
    planned: Option<DateTime<Utc>>,
    /// The event is about this level (a channel event is about its channel only).
    about_it: bool,
    overridden: bool,
    released: Vec<&'a str>,
    /// Sends the gate still holds for this level after the event.
    gate_held: usize,
}

impl Level<'_> {
    fn sample(
        &self,
        metric: Metric,
        at: DateTime<Utc>,
        value: f64,
        owner: Option<&str>,
        stage: Option<&str>,
    ) -> Sample {
        Sample {
            metric,
            at,
            value,
            entity: self.entity.to_string(),
            campaign: self.campaign.map(ToString::to_string),
            owner: owner.map(ToString::to_string),
            channel: self.channel.map(ToString::to_string),
            stage: stage.map(ToString::to_string),
        }
    }
}

type StageOwner<'a> = (Option<&'a str>, Option<&'a str>);

/// `launch_spread`: how long after the campaign's first channel each later
/// one launched. `launched` holds a sample (valued 0) for each channel that
/// launched on this event. The first launch of a round opens it and is not
/// a sample; the round lasts while any channel that did not launch now is
/// launched or done. A round opened before the campaign kept its start
/// (state from an older converge) is not measured.
fn spread(
    roles: &StageRoles,
    entity: &mut EntityState,
    launched: Vec<Sample>,
    now: DateTime<Utc>,
    samples: &mut Vec<Sample>,
) {
    let round_open = entity.channels.iter().any(|(name, channel)| {
        !launched.iter().any(|s| s.channel.as_deref() == Some(name))
            && roles
                .role(channel.stage.as_deref())
                .is_some_and(Role::finishes)
    });
    let flow = &mut entity.flow;
    if !round_open {
        flow.launch_began = None;
    }
    for mut sample in launched {
        match flow.launch_began {
            Some(began) => {
                sample.value = seconds(began, now);
                samples.push(sample);
            }
            None if !round_open => flow.launch_began = Some(now),
            None => {}
        }
    }
}

/// Moves one level's flow for the event, pushing the samples it finishes;
/// true when the level launched (entered a `launch` stage from one that
/// does not finish).
fn track(
    roles: &StageRoles,
    level: &Level<'_>,
    (stage_before, owner_before): StageOwner<'_>,
    (stage, owner): StageOwner<'_>,
    flow: &mut Flow,
    happened: &Happened<'_>,
    samples: &mut Vec<Sample>,
) -> bool {
    let now = happened.now;
    let mut launched = false;
    let role_before = roles.role(stage_before);
    let role = roles.role(stage);
    let moved = stage_before != stage;

    // Handoff: a new owner, then that owner's first move (a stage change,
    // or a comment, on this level; by them when the event says who acted).
    if owner_before != owner {
        flow.handoff_since = (owner_before.is_some() && owner.is_some()).then_some(now);
    } else if let Some(since) = flow.handoff_since
        && level.about_it
        && (moved || happened.event.ty.contains("comment"))
        && actor_is(happened.event, &roles.actor_field, owner)
    {
        samples.push(level.sample(Metric::HandoffDelay, now, seconds(since, now), owner, stage));
        flow.handoff_since = None;
    }

    // Review: entering a review stage, then a decision (leaving review for
    // a later stage approves, for an earlier one requests changes; or an
    // approval member on an event about it).
    if role == Some(Role::Review)
        && flow.review_since.is_none()
        && role_before != Some(Role::Review)
    {
        flow.review_since = Some(now);
    }
    let decision = match (role_before, role) {
        (Some(Role::Review), Some(to)) if to != Role::Review && to != Role::Blocked => {
            Some(to > Role::Review)
        }
        _ if level.about_it && role == Some(Role::Review) => {
            approval(happened.event, &roles.approval_field)
        }
        _ => None,
    };
    let mut returned = false;
    if let (Some(approved), Some(since)) = (decision, flow.review_since) {
        let review_stage = if moved { stage_before } else { stage };
        samples.push(level.sample(
            Metric::ReviewTime,
            now,
            seconds(since, now),
            owner,
            review_stage,
        ));
        if flow.reviews == 0 {
            samples.push(level.sample(
                Metric::ApprovalPassRate,
                now,
                if approved { 1.0 } else { 0.0 },
                owner,
                review_stage,
            ));
        }
        flow.reviews += 1;
        flow.review_since = None;
        if !approved {
            flow.returns += 1;
            returned = true;
        }
    }
    if !returned
        && let (Some(from), Some(to)) =
            (role_before.and_then(Role::rank), role.and_then(Role::rank))
        && to < from
    {
        flow.returns += 1;
    }

    // Blocked: time from entering a blocked stage to leaving it.
    if role == Some(Role::Blocked) && role_before != Some(Role::Blocked) {
        flow.blocked_since.get_or_insert(now);
    } else if role != Some(Role::Blocked)
        && let Some(since) = flow.blocked_since.take()
    {
        samples.push(level.sample(
            Metric::BlockedWork,
            now,
            seconds(since, now),
            owner,
            stage_before,
        ));
    }

    // An escalation stays open until the item moves.
    if level.channel.is_none() {
        if moved || owner_before != owner {
            flow.escalated_since = None;
        }
        if happened.escalated {
            flow.escalated_since.get_or_insert(now);
        }
    }

    // The gate's history since the last launch.
    if level.overridden {
        flow.overrides += 1;
    }
    for channel in &level.released {
        if flow.sent.iter().any(|c| c == channel) {
            flow.corrections += 1;
        } else {
            flow.sent.push((*channel).to_string());
        }
    }

    // Finishing: entering launch or done from anything else.
    if role.is_some_and(Role::finishes) && !role_before.is_some_and(Role::finishes) {
        samples.push(level.sample(
            Metric::CycleTime,
            now,
            seconds(level.created_at, now),
            owner,
            stage,
        ));
        samples.push(level.sample(
            Metric::ReworkRate,
            now,
            if flow.returns > 0 { 1.0 } else { 0.0 },
            owner,
            stage,
        ));
        flow.returns = 0;
        launched = role == Some(Role::Launch);
        if launched {
            if let Some(planned) = level.planned {
                let reliable = planned.date_naive() == now.date_naive()
                    && level.gate_held == 0
                    && flow.overrides == 0
                    && flow.corrections == 0;
                samples.push(level.sample(
                    Metric::LaunchReliability,
                    now,
                    if reliable { 1.0 } else { 0.0 },
                    owner,
                    stage,
                ));
            }
            flow.overrides = 0;
            flow.corrections = 0;
            flow.sent.clear();
        }
    }
    launched
}

fn exception_sample(
    entity: Option<(&EntityState, &str, Option<String>)>,
    happened: &Happened<'_>,
) -> Sample {
    let value = if happened.exception { 1.0 } else { 0.0 };
    let channel = happened
        .event
        .data
        .get("channel")
        .and_then(Value::as_str)
        .map(ToString::to_string);
    match entity {
        None => Sample {
            metric: Metric::ExceptionRate,
            at: happened.now,
            value,
            entity: String::new(),
            campaign: None,
            owner: None,
            channel: None,
            stage: None,
        },
        Some((entity, key, campaign)) => {
            let state = channel.as_deref().and_then(|c| entity.channels.get(c));
            Sample {
                metric: Metric::ExceptionRate,
                at: happened.now,
                value,
                entity: key.to_string(),
                campaign,
                owner: state
                    .and_then(|c| c.owner.clone())
                    .or_else(|| entity.owner.clone()),
                stage: state
                    .and_then(|c| c.stage.clone())
                    .or_else(|| entity.stage.clone()),
                channel,
            }
        }
    }
}

/// Where an item (the entity, or one of its channels) is blocked now.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub entity: String,
    pub campaign: Option<String>,
    pub owner: Option<String>,
    pub channel: Option<String>,
    pub stage: Option<String>,
    pub since: DateTime<Utc>,
}

/// The entity's blocked items: itself and each channel whose flow has an open block.
pub fn blocked_now(entity: &EntityState) -> Vec<Blocked> {
    let key = entity.key_text();
    let campaign = campaign_of(entity);
    let mut blocked = Vec::new();
    if let Some(since) = entity.flow.blocked_since {
        blocked.push(Blocked {
            entity: key.clone(),
            campaign: campaign.clone(),
            owner: entity.owner.clone(),
            channel: None,
            stage: entity.stage.clone(),
            since,
        });
    }
    for (name, channel) in &entity.channels {
        if let Some(since) = channel.flow.blocked_since {
            blocked.push(Blocked {
                entity: key.clone(),
                campaign: campaign.clone(),
                owner: channel.owner.clone().or_else(|| entity.owner.clone()),
                channel: Some(name.clone()),
                stage: channel.stage.clone(),
                since,
            });
        }
    }
    blocked
}

/// A campaign is its own campaign; another item names its campaign in
/// `fields.campaign` (as connectors and `create_task` record it).
pub fn campaign_of(entity: &EntityState) -> Option<String> {
    if entity.kind == "campaign" {
        return Some(entity.key_text());
    }
    let name = entity.fields.get("campaign")?.as_str()?;
    Some(if name.starts_with("campaign/") {
        name.to_string()
    } else {
        format!("campaign/{name}")
    })
}

fn planned(fields: &serde_json::Map<String, Value>, field: &str) -> Option<DateTime<Utc>> {
    fields.get(field)?.as_str()?.parse().ok()
}

fn actor_is(event: &Event, field: &str, owner: Option<&str>) -> bool {
    match event.data.get(field).and_then(Value::as_str) {
        None => true,
        Some(actor) => Some(actor) == owner,
    }
}

/// `approved` is a pass; `changes_requested` or `rejected` is not; anything else no decision.
fn approval(event: &Event, field: &str) -> Option<bool> {
    let value = event.data.get(field)?.as_str()?;
    match normalize_stage(value).as_str() {
        "approved" => Some(true),
        "changes requested" | "rejected" => Some(false),
        _ => None,
    }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use converge_rules::{RuleLimits, RuleSet, RuleSource};
    use serde_json::json;

    use super::*;
    use crate::decide::{Engine, Input, Rules};

    /// One item's events through the engine, keeping every sample.
    struct Item {
        engine: Engine,
        rules: RuleSet,
        gates: Gates,
        state: Option<EntityState>,
        seq: i64,
        samples: Vec<Sample>,
    }

    impl Item {
        fn new(rules: &[(&str, &str)]) -> Item {
            let rules = RuleSet::compile(
                rules
                    .iter()
                    .map(|(name, source)| RuleSource {
                        name: (*name).into(),
                        path: format!("rules/{name}.rhai").into(),
                        source: (*source).into(),
                    })
                    .collect(),
                &RuleLimits::default(),
            )
            .unwrap();
            Item {
                engine: Engine::default(),
                rules,
                gates: Gates::default(),
                state: None,
                seq: 0,
                samples: Vec::new(),
            }
        }

        /// An event about `subject` at `at` (hours after 2026-11-02 09:00 UTC).
        fn at(&mut self, hours: f64, subject: &str, ty: &str, data: Value) -> &mut Item {
            self.seq += 1;
            let at = start() + chrono::Duration::milliseconds((hours * 3_600_000.0) as i64);
            let event = Event::from_value(json!({
                "specversion": "1.0", "id": format!("e-{}", self.seq), "source": "/tool",
                "type": ty, "subject": subject, "data": data,
            }))
            .unwrap();
            let outcome = self
                .engine
                .decide(
                    Rules {
                        live: &self.rules,
                        shadow: None,
                    },
                    Input {
                        seq: self.seq,
                        event: &event,
                        entity: self.state.take(),
                        clock: at,
                        entities: None,
                    },
                    &mut self.gates,
                )
                .unwrap();
            self.state = outcome.entity;
            self.samples.extend(outcome.samples);
            self
        }

        fn stage(&mut self, hours: f64, stage: &str) -> &mut Item {
            self.at(hours, "task/T-1", "task.updated", json!({"stage": stage}))
        }

        /// (value, owner, stage) of each sample of `metric`; hours for durations.
        fn of(&self, metric: Metric) -> Vec<(f64, Option<&str>, Option<&str>)> {
            self.samples
                .iter()
                .filter(|s| s.metric == metric)
                .map(|s| {
                    let value = match metric.shape() {
                        converge_model::MetricShape::Duration => s.value / 3600.0,
                        converge_model::MetricShape::Rate => s.value,
                    };
                    (value, s.owner.as_deref(), s.stage.as_deref())
                })
                .collect()
        }
    }

    fn start() -> DateTime<Utc> {
        "2026-11-02T09:00:00Z".parse().unwrap()
    }

    #[test]
    fn review_time_runs_from_entering_review_to_the_decision() {
        let mut item = Item::new(&[]);
        item.at(
            0.0,
            "task/T-1",
            "task.created",
            json!({"stage": "Draft", "owner": "ana"}),
        )
        .stage(2.0, "In Review")
        // Moving between review stages does not restart the review.
        .stage(3.0, "legal_review")
        .stage(7.5, "draft") // changes requested after 5.5h
        .stage(8.0, "review")
        .stage(10.0, "approved"); // approved after 2h
        assert_eq!(
            item.of(Metric::ReviewTime),
            vec![
                (5.5, Some("ana"), Some("legal_review")),
                (2.0, Some("ana"), Some("review"))
            ]
        );
        // Only the first review decides the pass rate: changes were requested.
        assert_eq!(
            item.of(Metric::ApprovalPassRate),
            vec![(0.0, Some("ana"), Some("legal_review"))]
        );
        assert_eq!(item.state.as_ref().unwrap().flow.returns, 1);
    }

    #[test]
    fn an_approval_member_decides_a_review_without_a_stage_change() {
        let mut item = Item::new(&[]);
        item.stage(0.0, "review")
            .at(
                4.0,
                "task/T-1",
                "approval.decided",
                json!({"approval": "approved"}),
            )
            // The stage following the approval is not a second decision.
            .stage(5.0, "approved");
        assert_eq!(
            item.of(Metric::ReviewTime),
            vec![(4.0, None, Some("review"))]
        );
        assert_eq!(
            item.of(Metric::ApprovalPassRate),
            vec![(1.0, None, Some("review"))]
        );
    }

    #[test]
    fn handoff_delay_waits_for_the_new_owners_own_move() {
        let mut item = Item::new(&[]);
        item.at(
            0.0,
            "task/T-1",
            "task.created",
            json!({"stage": "draft", "owner": "ana"}),
        )
        .at(1.0, "task/T-1", "task.assigned", json!({"owner": "ben"}))
        // Someone else's comment is not ben's move.
        .at(
            2.0,
            "task/T-1",
            "task.comment_added",
            json!({"actor": "ana"}),
        )
        .at(
            4.5,
            "task/T-1",
            "task.comment_added",
            json!({"actor": "ben"}),
        )
        // A second move is not measured again.
        .stage(6.0, "review")
        // A first assignment is not a handoff.
        .at(7.0, "task/T-2", "task.created", json!({"owner": "cy"}));
        assert_eq!(
            item.of(Metric::HandoffDelay),
            vec![(3.5, Some("ben"), Some("draft"))]
        );
    }

    #[test]
    fn blocked_time_and_what_is_blocked_now() {
        let mut item = Item::new(&[]);
        item.at(
            0.0,
            "task/T-1",
            "task.created",
            json!({"stage": "in progress", "owner": "ana"}),
        )
        .stage(1.0, "Blocked")
        .stage(3.0, "on_hold") // still blocked
        .stage(9.0, "in progress")
        .stage(10.0, "blocked");
        assert_eq!(
            item.of(Metric::BlockedWork),
            vec![(8.0, Some("ana"), Some("on_hold"))]
        );
        let blocked = blocked_now(item.state.as_ref().unwrap());
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].since, start() + chrono::Duration::hours(10));
    }

    #[test]
    fn rework_rate_and_cycle_time_are_counted_when_an_item_finishes() {
        let mut item = Item::new(&[]);
        item.at(0.0, "task/T-1", "task.created", json!({"stage": "brief"}))
            .stage(5.0, "draft")
            .stage(10.0, "brief") // back to an earlier stage
            .stage(20.0, "done") // finishes with a return
            .stage(21.0, "in progress") // reopened: a return again
            .stage(30.0, "done")
            .stage(40.0, "closed"); // done to done is not a new finish
        assert_eq!(
            item.of(Metric::ReworkRate),
            vec![(1.0, None, Some("done")), (1.0, None, Some("done"))]
        );
        assert_eq!(
            item.of(Metric::CycleTime),
            vec![(20.0, None, Some("done")), (30.0, None, Some("done"))]
        );
        let mut clean = Item::new(&[]);
        clean
            .stage(0.0, "draft")
            .stage(2.0, "review")
            .stage(3.0, "approved")
            .stage(4.0, "done");
        assert_eq!(
            clean.of(Metric::ReworkRate),
            vec![(0.0, None, Some("done"))]
        );
    }

    #[test]
    fn a_launch_is_reliable_on_plan_converged_and_without_override_or_correction() {
        let campaign = |item: &mut Item, hours: f64, data: Value| {
            item.at(hours, "campaign/c-1", "campaign.updated", data);
        };
        // On the planned day, nothing held: reliable.
        let mut on_plan = Item::new(&[]);
        campaign(
            &mut on_plan,
            0.0,
            json!({"stage": "approved", "launch_at": "2026-11-02T15:00:00Z"}),
        );
        campaign(&mut on_plan, 6.0, json!({"stage": "launched"}));
        assert_eq!(
            on_plan.of(Metric::LaunchReliability),
            vec![(1.0, None, Some("launched"))]
        );

        // A day late.
        let mut late = Item::new(&[]);
        campaign(
            &mut late,
            0.0,
            json!({"stage": "approved", "launch_at": "2026-11-02T15:00:00Z"}),
        );
        campaign(&mut late, 30.0, json!({"stage": "launched"}));
        assert_eq!(late.of(Metric::LaunchReliability)[0].0, 0.0);

        // On time, but a send is still held at the gate.
        let hold = (
            "hold",
            r#"if event.type == "send.requested" { hold_send("email", "not converged"); }"#,
        );
        let mut held = Item::new(&[hold]);
        campaign(
            &mut held,
            0.0,
            json!({"stage": "approved", "launch_at": "2026-11-02T15:00:00Z"}),
        );
        held.at(
            1.0,
            "campaign/c-1",
            "send.requested",
            json!({"channel": "email"}),
        );
        campaign(&mut held, 6.0, json!({"stage": "launched"}));
        assert_eq!(held.of(Metric::LaunchReliability)[0].0, 0.0);

        // Released by a person's override instead of converging.
        let mut overridden = Item::new(&[hold]);
        campaign(
            &mut overridden,
            0.0,
            json!({"stage": "approved", "launch_at": "2026-11-02T15:00:00Z"}),
        );
        overridden.at(
            1.0,
            "campaign/c-1",
            "send.requested",
            json!({"channel": "email"}),
        );
        let override_event = crate::gates::Override {
            by: "ops@acme".into(),
            reason: "launch anyway".into(),
            channel: None,
        }
        .event("o-1".into(), "campaign/c-1", start())
        .unwrap();
        overridden.seq += 1;
        let outcome = overridden
            .engine
            .decide(
                Rules {
                    live: &overridden.rules,
                    shadow: None,
                },
                Input {
                    seq: overridden.seq,
                    event: &override_event,
                    entity: overridden.state.take(),
                    clock: start() + chrono::Duration::hours(2),
                    entities: None,
                },
                &mut overridden.gates,
            )
            .unwrap();
        overridden.state = outcome.entity;
        campaign(&mut overridden, 6.0, json!({"stage": "launched"}));
        assert_eq!(overridden.of(Metric::LaunchReliability)[0].0, 0.0);

        // Without a planned date a launch is not measured.
        let mut unplanned = Item::new(&[]);
        campaign(&mut unplanned, 0.0, json!({"stage": "launched"}));
        assert!(unplanned.of(Metric::LaunchReliability).is_empty());
        assert_eq!(unplanned.of(Metric::CycleTime).len(), 1);
    }

    #[test]
    fn exception_rate_counts_every_event_and_those_that_escalated_or_failed() {
        let escalate = (
            "escalate",
            r#"if event.type == "bad" { escalate("ops", "bad news"); }"#,
        );
        let fail = ("fail", r#"if event.type == "broken" { throw "boom"; }"#);
        let mut item = Item::new(&[escalate, fail]);
        item.at(0.0, "task/T-1", "ok", json!({"owner": "ana"}))
            .at(1.0, "task/T-1", "bad", json!({}))
            .at(2.0, "task/T-1", "broken", json!({}))
            .at(3.0, "task/T-1", "ok", json!({}));
        let values: Vec<f64> = item.of(Metric::ExceptionRate).iter().map(|s| s.0).collect();
        assert_eq!(values, vec![0.0, 1.0, 1.0, 0.0]);
        assert!(
            item.of(Metric::ExceptionRate)
                .iter()
                .all(|s| s.1 == Some("ana"))
        );
    }

    #[test]
    fn an_escalation_stays_open_until_the_item_moves() {
        let escalate = (
            "escalate",
            r#"if event.type == "stalled" { escalate("ops", "stalled"); }"#,
        );
        let mut item = Item::new(&[escalate]);
        item.at(
            0.0,
            "task/T-1",
            "task.created",
            json!({"stage": "review", "owner": "ana"}),
        )
        .at(1.0, "task/T-1", "stalled", json!({}))
        .at(2.0, "task/T-1", "task.comment_added", json!({}));
        let since = item.state.as_ref().unwrap().flow.escalated_since;
        assert_eq!(since, Some(start() + chrono::Duration::hours(1)));
        item.stage(3.0, "approved");
        assert_eq!(item.state.as_ref().unwrap().flow.escalated_since, None);
    }

    #[test]
    fn launch_spread_measures_each_later_channel_from_the_campaigns_first_launch() {
        // A channel's stage (and owner) on a campaign, `hours` in.
        let channel = |item: &mut Item, hours: f64, subject: &str, data: Value| {
            item.at(hours, subject, "campaign.channel.updated", data);
        };
        let stage = |item: &mut Item, hours: f64, name: &str, stage: &str| {
            channel(
                item,
                hours,
                "campaign/c-1",
                json!({"channel": name, "stage": stage}),
            );
        };
        let spread = |item: &Item| -> Vec<(f64, Option<String>, Option<String>)> {
            item.samples
                .iter()
                .filter(|s| s.metric == Metric::LaunchSpread)
                .map(|s| (s.value / 3600.0, s.channel.clone(), s.owner.clone()))
                .collect()
        };
        let mut item = Item::new(&[]);
        channel(
            &mut item,
            0.0,
            "campaign/c-1",
            json!({"channel": "email", "stage": "approved", "owner": "gia"}),
        );
        channel(
            &mut item,
            0.0,
            "campaign/c-1",
            json!({"channel": "social", "stage": "approved", "owner": "hal"}),
        );
        stage(&mut item, 0.0, "paid", "approved");
        // The first launch opens the round; it is not a sample.
        stage(&mut item, 2.0, "email", "launched");
        assert_eq!(spread(&item), vec![]);
        // Done is still in the round; social launches 18h after email.
        stage(&mut item, 10.0, "email", "done");
        stage(&mut item, 20.0, "social", "launched");
        // A launched channel moving on is no new launch.
        stage(&mut item, 21.0, "social", "done");
        // A channel without an owner is the campaign's (nobody here).
        stage(&mut item, 26.5, "paid", "live");
        assert_eq!(
            spread(&item),
            vec![
                (18.0, Some("social".into()), Some("hal".into())),
                (24.5, Some("paid".into()), None),
            ]
        );
        // Every channel back at work ends the round: the next launch opens
        // another, and the channel following it is measured from it.
        for name in ["email", "social", "paid"] {
            stage(&mut item, 30.0, name, "draft");
        }
        stage(&mut item, 40.0, "paid", "launched");
        stage(&mut item, 43.0, "email", "launched");
        assert_eq!(
            spread(&item)[2..],
            [(3.0, Some("email".into()), Some("gia".into()))]
        );
        // The campaign's own launch stage is not a channel's launch.
        item.at(
            44.0,
            "campaign/c-1",
            "campaign.updated",
            json!({"stage": "launched"}),
        );
        assert_eq!(spread(&item).len(), 3);

        // A round opened before the campaign kept its start is not measured.
        let mut older = Item::new(&[]);
        stage(&mut older, 0.0, "email", "launched");
        older.state.as_mut().unwrap().flow.launch_began = None;
        stage(&mut older, 5.0, "social", "launched");
        assert_eq!(spread(&older), vec![]);
    }

    #[test]
    fn channels_keep_their_own_flow() {
        let mut item = Item::new(&[]);
        item.at(
            0.0,
            "campaign/c-1",
            "campaign.created",
            json!({"owner": "ana"}),
        )
        .at(
            1.0,
            "campaign/c-1",
            "channel.updated",
            json!({"channel": "email", "stage": "review"}),
        )
        .at(
            4.0,
            "campaign/c-1",
            "channel.updated",
            json!({"channel": "email", "stage": "approved", "owner": "ben"}),
        )
        .at(
            2.0,
            "campaign/c-1",
            "channel.updated",
            json!({"channel": "social", "stage": "review"}),
        );
        let review: Vec<_> = item
            .samples
            .iter()
            .filter(|s| s.metric == Metric::ReviewTime)
            .map(|s| (s.channel.as_deref(), s.owner.as_deref(), s.value / 3600.0))
            .collect();
        assert_eq!(review, vec![(Some("email"), Some("ben"), 3.0)]);
        let state = item.state.unwrap();
        assert!(state.flow.review_since.is_none());
        assert!(state.channels["social"].flow.review_since.is_some());
    }

    #[test]
    fn configured_stage_names_replace_a_roles_defaults() {
        let roles = StageRoles::configured(vec![(
            Role::Review,
            vec!["Needs Sign-off".into(), "Draft".into()],
        )])
        .unwrap();
        assert_eq!(roles.role(Some("needs sign off")), Some(Role::Review));
        // The default review names are gone; `draft` moved out of `work`.
        assert_eq!(roles.role(Some("in review")), None);
        assert_eq!(roles.role(Some("DRAFT")), Some(Role::Review));
        assert_eq!(roles.role(Some("blocked")), Some(Role::Blocked));
        let error = StageRoles::configured(vec![
            (Role::Review, vec!["Check".into()]),
            (Role::Blocked, vec!["check".into()]),
        ])
        .unwrap_err();
        assert_eq!(error, "stage `check` is in both `review` and `blocked`");
        assert!(
            Role::from_name("qa")
                .unwrap_err()
                .contains("brief, work, review")
        );
    }
}
