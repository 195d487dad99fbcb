//! What rules cost per event: the three example rules from `rules/` plus 17
//! guard-style rules (the shape most production rules have: a type check that
//! usually does not match, a few lines when it does), evaluated for 100 000
//! events against entity state that evolves as the daemon would keep it.
//!
//! It runs twice: once with plain guard rules (every rule runs for every
//! event and its `if event.type == ..` guard decides), once with the same
//! rules declaring `//! events: <type>` in their header, so `RuleSet::evaluate`
//! skips them without starting the script.
//!
//! Run it in release: `cargo run --release -p converge-rules --example rule_cost`.

use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use converge_model::{EntityState, Event};
use converge_rules::{RuleLimits, RuleSet, RuleSource};
use serde_json::json;

const EVENTS: usize = 100_000;
const ENTITIES: usize = 200;

/// Guard rules on event types the sample stream rarely or never sends.
const GUARDS: &[(&str, &str)] = &[
    ("form_submitted", "form.submitted"),
    ("asset_uploaded", "asset.uploaded"),
    ("asset_approved", "asset.approved"),
    ("send_requested", "campaign.send.requested"),
    ("send_completed", "campaign.send.completed"),
    ("brief_created", "brief.created"),
    ("brief_changed", "brief.updated"),
    ("comment_added", "task.commented"),
    ("due_date_moved", "task.due_changed"),
    ("segment_changed", "audience.updated"),
    ("timer_fired", "timer.fired"),
    ("review_requested", "review.requested"),
    ("review_done", "review.completed"),
    ("launch_window", "campaign.scheduled"),
];

fn guard_rule(name: &str, ty: &str, with_header: bool) -> RuleSource {
    let header = if with_header {
        format!("//! events: {ty}\n")
    } else {
        String::new()
    };
    let source = format!(
        r#"{header}// {name}: act on {ty} only.
if event.type == "{ty}" {{
    let owner = if entity == () {{ "ops_exceptions" }} else {{ entity.owner ?? "ops_exceptions" }};
    if event.data.get("priority") == "high" {{
        escalate(owner, `{ty} with high priority`, 2);
    }} else {{
        notify(owner, `{ty}`);
    }}
}}
"#
    );
    RuleSource {
        name: name.into(),
        path: format!("bench/{name}.rhai").into(),
        source,
    }
}

/// Three rules that run on every task event and usually decide nothing.
fn busy_rules() -> Vec<RuleSource> {
    let rules = [
        (
            "priority_label",
            r#"if entity != () && entity.kind == "task" {
    let p = entity.fields.get("priority");
    if p == "urgent" && entity.stage != "in_progress" {
        escalate("review_owner", `task/${entity.id} is urgent and not started`, 2);
    }
}"#,
        ),
        (
            "stage_age",
            r#"if entity != () && entity.stage_since != () {
    let hours = seconds_between(entity.stage_since, now) / 3600;
    if hours > 24 * 30 {
        notify(entity.owner ?? "ops_exceptions", `stuck in ${entity.stage} for ${hours}h`);
    }
}"#,
        ),
        (
            "rework_count",
            r#"if entity != () && event.type == "task.updated" && event.data.get("stage") == "rework" {
    let n = entity.fields.get("rework_count") ?? 0;
    set_field("rework_count", n + 1);
}"#,
        ),
    ];
    rules
        .into_iter()
        .map(|(name, source)| RuleSource {
            name: name.into(),
            path: format!("bench/{name}.rhai").into(),
            source: source.into(),
        })
        .collect()
}

fn example_rules() -> Vec<RuleSource> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    ["required_fields", "stalled_handoff", "channel_approval"]
        .into_iter()
        .map(|name| {
            let path = dir.join(format!("{name}.rhai"));
            RuleSource {
                name: name.into(),
                source: std::fs::read_to_string(&path).expect("example rule"),
                path,
            }
        })
        .collect()
}

fn event(i: usize) -> Event {
    let n = i % ENTITIES;
    let (subject, ty, data) = match i % 10 {
        0 => (
            format!("task/T-{n}"),
            "task.handoff",
            json!({"owner": format!("reviewer-{}", i % 7)}),
        ),
        1 => (
            format!("task/T-{n}"),
            "task.updated",
            json!({"stage": "blocked"}),
        ),
        2 | 3 => {
            let channel = ["email", "social", "paid"][i % 3];
            let stage = if i.is_multiple_of(4) {
                "rejected"
            } else {
                "approved"
            };
            (
                format!("campaign/c-{n}"),
                "campaign.channel.updated",
                json!({"channel": channel, "stage": stage,
                       "offer_code": "FALL25", "cta_url": "https://example.com/fall"}),
            )
        }
        _ => {
            let stage = ["draft", "review", "rework", "approved"][i % 4];
            (
                format!("task/T-{n}"),
                "task.updated",
                json!({"stage": stage, "owner": format!("owner-{}", i % 5),
                       "priority": "normal", "brief": "Q4 launch brief",
                       "deadline": "2026-12-01", "labels": ["q4", "launch"]}),
            )
        }
    };
    Event::from_value(json!({
        "specversion": "1.0", "id": format!("e-{i}"), "source": "/bench", "type": ty,
        "subject": subject, "time": "2026-11-23T09:00:00Z", "data": data,
    }))
    .expect("bench event")
}

fn main() {
    for with_header in [false, true] {
        measure(with_header);
    }
}

fn measure(with_header: bool) {
    let mut sources = example_rules();
    sources.extend(busy_rules());
    sources.extend(
        GUARDS
            .iter()
            .map(|(name, ty)| guard_rule(name, ty, with_header)),
    );
    assert_eq!(sources.len(), 20);
    let rules = match RuleSet::compile(sources, &RuleLimits::default()) {
        Ok(rules) => rules,
        Err(errors) => panic!("{errors:#?}"),
    };

    let events: Vec<Event> = (0..1000).map(event).collect();
    let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
    let mut states: std::collections::HashMap<String, EntityState> = Default::default();
    let (mut decisions, mut failures) = (0usize, 0usize);

    let start = Instant::now();
    for i in 0..EVENTS {
        let e = &events[i % events.len()];
        let key = e.entity_key().expect("bench events name entities");
        let state = states
            .entry(key.to_string())
            .or_insert_with(|| EntityState::new(&key, now));
        state.apply_event(&e.ty, &e.data, now);
        let evaluation = rules.evaluate(e, Some(state), now);
        decisions += evaluation.decisions.len();
        failures += evaluation.failures.len();
    }
    let elapsed = start.elapsed();

    println!(
        "{} rules ({}), {EVENTS} events: {:.2} µs/event ({decisions} decisions, {failures} failures, {:.2?} total)",
        rules.rules().len(),
        if with_header {
            "guards declare `events`"
        } else {
            "guards only in the script"
        },
        elapsed.as_secs_f64() * 1e6 / EVENTS as f64,
        elapsed,
    );
}
