//! The metrics' bookkeeping: how an event moves an item's [`Flow`], and the
//! [`Sample`]s it finishes. docs/reports.md is the definition each function
//! here implements; a change to one is a change to the other.
//!
//! Stage names differ between teams and tools, so the metrics never read a
//! stage name: [`StageRoles`] maps names onto the [`Role`]s they need.
//! The ranked roles are ordered (brief < work < review < approved < launch
//! < done) so "back to an earlier stage" has a meaning; `blocked` is off the
//! line. An unmapped stage has no role and moves no metric.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use converge_model::{EntityState, Event, Flow, Metric, Sample};
use serde_json::Value;

use crate::gates::{Gates, Override};

/// What a stage means to the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Brief,
    Work,
    Review,
    Approved,
    Launch,
    Done,
    Blocked,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Brief,
        Role::Work,
        Role::Review,
        Role::Approved,
        Role::Launch,
        Role::Done,
        Role::Blocked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Brief => "brief",
            Role::Work => "work",
            Role::Review => "review",
            Role::Approved => "approved",
            Role::Launch => "launch",
            Role::Done => "done",
            Role::Blocked => "blocked",
        }
    }

    pub fn from_name(name: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
                format!("`{name}` is not a stage role: the roles are {}", names.join(", "))
            })
    }

    /// The place on the line from brief to done; `blocked` has none.
    fn rank(self) -> Option<u8> {
        match self {
            Role::Blocked => None,
            ranked => Some(ranked as u8),
        }
    }

    fn finishes(self) -> bool {
        matches!(self, Role::Launch | Role::Done)
    }

    /// The stage names a role has when the config does not say: the usual
    /// column and status names of Jira, Asana, Trello, Workfront and
    /// Monday boards.
    pub fn default_stages(self) -> &'static [&'static str] {
        match self {
            Role::Brief => &[
                "brief", "backlog", "intake", "requested", "new", "to do", "todo", "open",
            ],
            Role::Work => &[
                "draft",
                "in progress",
                "doing",
                "working on it",
                "production",
                "changes requested",
                "rework",
                "revise",
                "rejected",
            ],
            Role::Review => &[
                "review",
                "in review",
                "ready for review",
                "pending review",
                "legal review",
                "approval",
                "pending approval",
                "awaiting approval",
                "qa",
            ],
            Role::Approved => &["approved", "ready", "ready to launch", "scheduled"],
            Role::Launch => &["launched", "live", "sent", "published"],
            Role::Done => &["done", "complete", "completed", "closed", "shipped"],
            Role::Blocked => &["blocked", "on hold", "waiting"],
        }
    }
}

/// Stage names in the form they are compared: lower case, `_` and `-` as spaces.
pub fn normalize_stage(stage: &str) -> String {
    stage
        .trim()
        .chars()
        .map(|c| match c {
            '_' | '-' => ' ',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The team's stage names mapped onto roles, and the fields the metrics read.
#[derive(Debug, Clone)]
pub struct StageRoles {
    roles: HashMap<String, Role>,
    /// The field holding an item's planned launch (`launch_at`): a channel's
    /// own, else the campaign's.
    pub planned_field: String,
    /// A member of an event's data saying who acted (`actor`): when present,
    /// only the new owner's own move ends a handoff.
    pub actor_field: String,
    /// A member of an event's data carrying a review decision (`approval`:
    /// `approved`, `changes_requested`, `rejected`), as approval tools send it.
    pub approval_field: String,
}

impl Default for StageRoles {
    fn default() -> StageRoles {
        StageRoles::new(Role::ALL.map(|role| {
            (
                role,
                role.default_stages()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            )
        }))
        .expect("the default stage names are each in one role")
    }
}

impl StageRoles {
    /// Roles with their stage names. A name in two roles is an error naming both.
    pub fn new(
        roles: impl IntoIterator<Item = (Role, Vec<String>)>,
    ) -> Result<StageRoles, String> {
        let mut by_name: HashMap<String, Role> = HashMap::new();
        for (role, names) in roles {
            for name in names {
                let key = normalize_stage(&name);
                if let Some(other) = by_name.insert(key, role)
                    && other != role
                {
                    return Err(format!(
                        "stage `{name}` is in both `{}` and `{}`",
                        other.name(),
                        role.name()
                    ));
                }
            }
        }
        Ok(StageRoles {
            roles: by_name,
            planned_field: "launch_at".into(),
            actor_field: "actor".into(),
            approval_field: "approval".into(),
        })
    }

    /// The default names, with each role the config lists taking exactly
    /// the config's names (and those names leaving any other role's defaults).
    pub fn configured(listed: Vec<(Role, Vec<String>)>) -> Result<StageRoles, String> {
        let taken: Vec<String> = listed
            .iter()
            .flat_map(|(_, names)| names.iter().map(|n| normalize_stage(n)))
            .collect();
        let mut roles = listed.clone();
        for role in Role::ALL {
            if !listed.iter().any(|(r, _)| *r == role) {
                let defaults = role
                    .default_stages()
                    .iter()
                    .filter(|name| !taken.contains(&normalize_stage(name)))
                    .map(ToString::to_string)
                    .collect();
                roles.push((role, defaults));
            }
        }
        StageRoles::new(roles)
    }

    pub fn role(&self, stage: Option<&str>) -> Option<Role> {
        self.roles.get(&normalize_stage(stage?)).copied()
    }

    /// The stage names mapped to a role, for `converge check`.
    pub fn names(&self, role: Role) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .roles
            .iter()
            .filter(|(_, r)| **r == role)
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}

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
    let key = format!("{}/{}", entity.kind, entity.id);
    let campaign = campaign_of(entity, &key);
    let event_channel = happened
        .event
        .data
        .get("channel")
        .and_then(Value::as_str);
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
        track(
            roles,
            &level,
            (stage_before, owner_before),
            (channel.stage.as_deref(), owner),
            &mut channel.flow,
            happened,
            &mut samples,
        );
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

fn track(
    roles: &StageRoles,
    level: &Level<'_>,
    (stage_before, owner_before): StageOwner<'_>,
    (stage, owner): StageOwner<'_>,
    flow: &mut Flow,
    happened: &Happened<'_>,
    samples: &mut Vec<Sample>,
) {
    let now = happened.now;
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
    if role == Some(Role::Review) && flow.review_since.is_none() && role_before != Some(Role::Review)
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
        samples.push(level.sample(Metric::ReviewTime, now, seconds(since, now), owner, review_stage));
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
        && let (Some(from), Some(to)) = (role_before.and_then(Role::rank), role.and_then(Role::rank))
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
        samples.push(level.sample(Metric::BlockedWork, now, seconds(since, now), owner, stage_before));
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
        if role == Some(Role::Launch) {
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
    let key = format!("{}/{}", entity.kind, entity.id);
    let campaign = campaign_of(entity, &key);
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
fn campaign_of(entity: &EntityState, key: &str) -> Option<String> {
    if entity.kind == "campaign" {
        return Some(key.to_string());
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
