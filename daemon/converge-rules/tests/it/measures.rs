//! The helpers: durations, missing data (of an entity or any map) and the
//! convergence measures, with the exact values `docs/rules.md` gives.

use converge_model::{DecisionKind, EntityState};
use serde_json::{Value, json};

use crate::{compile, entity_after, event, now};

/// A campaign whose channels have the given fields.
fn campaign(channels: Value) -> EntityState {
    let mut state: Option<EntityState> = None;
    for (name, fields) in channels.as_object().unwrap() {
        let mut data = fields.clone();
        data["channel"] = json!(name);
        let e = event("campaign.channel.updated", Some("campaign/c-1"), data);
        state = Some(entity_after(&e, state));
    }
    state.unwrap()
}

/// What `expr` evaluates to in a rule run on `state`, as JSON.
fn value(expr: &str, mut state: EntityState) -> Value {
    let set = compile(&[("r", &format!("set_field(\"out\", {expr});"))]);
    let e = event(
        "x.y",
        Some(&format!("{}/{}", state.kind, state.id)),
        json!({}),
    );
    let eval = set.evaluate(&e, Some(&mut state), now());
    assert_eq!(eval.failures, vec![], "{expr}");
    match &eval.decisions[0].kind {
        DecisionKind::SetField { value, .. } => value.clone(),
        other => panic!("{other:?}"),
    }
}

fn fails(expr: &str, mut state: EntityState) -> String {
    let set = compile(&[("r", &format!("set_field(\"out\", {expr});"))]);
    let e = event("x.y", Some("campaign/c-1"), json!({}));
    let eval = set.evaluate(&e, Some(&mut state), now());
    eval.failures[0].message.clone()
}

fn fall_campaign() -> EntityState {
    campaign(json!({
        "email": {"offer_code": "FALL25", "landing_url": "https://x.test/fall",
                  "key_message": "Save 25% on fall gear", "launch_at": "2026-11-24T09:00:00Z",
                  "segments": ["loyal", "new"]},
        "social": {"offer_code": "FALL25", "landing_url": "https://x.test/fall",
                   "key_message": "Fall gear is 25% off", "launch_at": "2026-11-25T09:00:00Z",
                   "segments": ["loyal", "new"]},
        "paid": {"offer_code": "FALL20", "landing_url": "https://x.test/fall",
                 "key_message": "Save 25% on fall gear today", "launch_at": "2026-11-28T09:00:00Z",
                 "segments": ["new", "lapsed"]},
    }))
}

/// `state` after the campaign's own brief set `brief` (campaign.updated).
fn with_brief(state: EntityState, brief: Value) -> EntityState {
    let e = event("campaign.updated", Some("campaign/c-1"), brief);
    entity_after(&e, Some(state))
}

#[test]
fn durations_and_hours() {
    let state = fall_campaign();
    assert_eq!(value(r#"duration("48h")"#, state.clone()), json!(172_800));
    assert_eq!(value(r#"duration("1d12h")"#, state.clone()), json!(129_600));
    assert_eq!(value("duration(90)", state.clone()), json!(90));
    // now is 2026-11-23T10:00:00Z
    assert_eq!(
        value(r#"hours_since("2026-11-21T08:30:00Z")"#, state.clone()),
        json!(49.5)
    );
    assert_eq!(
        value(r#"hours_since("2026-11-21T08:30:00Z") > 48"#, state.clone()),
        json!(true)
    );
    assert_eq!(
        fails(r#"duration("2 fortnights")"#, state.clone()),
        "rules/r.rhai:1:18: Runtime error: duration must be a duration such as \"48h\", \"2d\", \"1d12h\", \"90m\" or a number of seconds, got \"2 fortnights\" (unknown time unit \"fortnights\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations))"
    );
    assert_eq!(
        fails("hours_since(entity.stage_since)", state),
        "rules/r.rhai:1:18: Runtime error: hours_since: `time` must be an RFC 3339 string, got () (a `()` time, e.g. `entity.stage_since`, has to be checked first)"
    );
}

#[test]
fn missing_lists_blank_and_absent_names_in_order() {
    let e = event(
        "task.updated",
        Some("task/T-1"),
        json!({"stage": "draft", "owner": "  ", "brief": "", "deadline": "2026-12-01", "budget": 0}),
    );
    let state = entity_after(&e, None);
    assert_eq!(
        value(
            r#"missing(entity, ["owner", "stage", "deadline", "brief", "approvals", "budget"])"#,
            state.clone()
        ),
        json!(["owner", "brief", "approvals"])
    );
    assert_eq!(
        fails(r#"missing((), ["owner"])"#, state.clone()),
        "rules/r.rhai:1:18: Runtime error: missing: the entity is () (guard the rule first, as in `if entity?.kind != \"task\" { return; }`)"
    );
    assert_eq!(
        fails(r#"missing(entity.owner, ["owner"])"#, state.clone()),
        "rules/r.rhai:1:18: Runtime error: missing: the first argument must be the `entity` map"
    );
    // A `fields` that is not a map has no members: each name read from it
    // is missing.
    assert_eq!(
        value(
            r#"missing(#{ stage: "draft", fields: 42 }, ["stage", "brief"])"#,
            state
        ),
        json!(["brief"])
    );
}

/// What `expr` evaluates to in a rule run on an event carrying `data`
/// (about no entity), as JSON; or the rule's failure.
fn on_data(expr: &str, data: Value) -> Result<Value, String> {
    let set = compile(&[("r", &format!("notify(\"ops\", `${{{expr}}}`);"))]);
    let eval = set.evaluate(&event("x.y", None, data), None, now());
    if let Some(failure) = eval.failures.first() {
        return Err(failure.message.clone());
    }
    match &eval.decisions[0].kind {
        DecisionKind::Notify { message, .. } => Ok(Value::String(message.clone())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_in_lists_the_blank_and_absent_members_of_any_map_in_order() {
    let data = json!({"owner": "  ", "brief": "", "deadline": "2026-12-01", "budget": 0,
                      "approved": false, "tags": [], "stage": null});
    let names =
        r#"["owner", "deadline", "brief", "approvals", "budget", "approved", "tags", "stage"]"#;
    // Read into a variable, as a rule reads `event.data`, and straight from
    // the event: the same answer.
    let expected = json!(r#"["owner", "brief", "approvals", "stage"]"#);
    assert_eq!(
        on_data(
            &format!("{{ let data = event.data; missing_in(data, {names}) }}"),
            data.clone()
        ),
        Ok(expected.clone())
    );
    assert_eq!(
        on_data(&format!("missing_in(event.data, {names})"), data.clone()),
        Ok(expected.clone())
    );
    assert_eq!(
        on_data(
            &format!("{{ let data = event.data; data.missing_in({names}) }}"),
            data.clone()
        ),
        Ok(expected)
    );
    // The map read is left as it was.
    assert_eq!(
        on_data(
            r#"{ let data = event.data; missing_in(data, ["owner"]); data.owner }"#,
            data.clone()
        ),
        Ok(json!("  "))
    );
    // `()` (no data) has no members; nothing asked for, nothing missing.
    assert_eq!(
        on_data(r#"missing_in((), ["owner", "brief"])"#, json!({})),
        Ok(json!(r#"["owner", "brief"]"#))
    );
    assert_eq!(
        on_data("missing_in(event.data, [])", data.clone()),
        Ok(json!("[]"))
    );
    // docs/rules.md's example.
    assert_eq!(
        on_data(
            r#"missing_in(event.data, ["owner", "deadline", "offer_code"])"#,
            json!({"owner": "ana", "deadline": ""})
        ),
        Ok(json!(r#"["deadline", "offer_code"]"#))
    );
    // Only `stage` and `owner` of an entity are read from its top level by
    // `missing`; `missing_in` reads the map it is given, `fields` or not.
    assert_eq!(
        on_data(
            r#"missing_in(#{ stage: "draft", fields: #{ brief: "b" } }, ["stage", "brief"])"#,
            json!({})
        ),
        Ok(json!(r#"["brief"]"#))
    );
}

#[test]
fn missing_in_refuses_what_is_not_a_map_and_names_that_are_not_strings() {
    let data = json!({"owner": "ana"});
    assert_eq!(
        on_data(r#"missing_in(event.data, ["owner", 42])"#, data.clone()),
        Err("rules/r.rhai:1:18: Runtime error: missing_in: names must be strings, got a value of type `i64`".into())
    );
    assert_eq!(
        on_data(r#"missing_in(event.data.owner, ["owner"])"#, data),
        Err("rules/r.rhai:1:18: Runtime error: missing_in: the first argument must be a map or (), got a value of type `string`".into())
    );
}

#[test]
fn agreement_is_the_share_holding_the_most_common_value() {
    let state = fall_campaign();
    assert_eq!(
        value(r#"agreement(entity, "offer_code")"#, state.clone()),
        json!(2.0 / 3.0)
    );
    assert_eq!(
        value(r#"agreement(entity, "landing_url")"#, state.clone()),
        json!(1.0)
    );
    assert_eq!(
        value(r#"agreement(entity, "nobody_has_this")"#, state),
        json!(1.0)
    );
    let split =
        campaign(json!({"email": {"offer_code": "A"}, "social": {"offer_code": "B"}, "paid": {}}));
    assert_eq!(
        value(r#"agreement(entity, "offer_code")"#, split),
        json!(0.5)
    );
}

#[test]
fn message_consistency_is_the_lowest_pairwise_word_jaccard() {
    let state = fall_campaign();
    assert_eq!(
        value(
            r#"text_similarity("Save 25% on fall gear", "Fall gear is 25% off")"#,
            state.clone()
        ),
        json!(3.0 / 7.0)
    );
    assert_eq!(
        value(
            r#"text_similarity("Save 25% this fall", "this FALL: save 25%!")"#,
            state.clone()
        ),
        json!(1.0)
    );
    // email~paid 5/6, email~social 3/7, social~paid 3/8: the lowest is 3/8.
    assert_eq!(
        value(r#"message_consistency(entity, "key_message")"#, state),
        json!(0.375)
    );
}

#[test]
fn launch_spread_and_window() {
    let state = fall_campaign();
    assert_eq!(
        value(r#"launch_spread_hours(entity, "launch_at")"#, state.clone()),
        json!(96.0)
    );
    assert_eq!(
        value(r#"launch_within(entity, "launch_at", "4d")"#, state.clone()),
        json!(true)
    );
    assert_eq!(
        value(
            r#"launch_within(entity, "launch_at", "48h")"#,
            state.clone()
        ),
        json!(false)
    );
    let bad = campaign(
        json!({"email": {"launch_at": "tomorrow"}, "paid": {"launch_at": "2026-11-28T09:00:00Z"}}),
    );
    assert_eq!(
        fails(r#"launch_spread_hours(entity, "launch_at")"#, bad),
        "rules/r.rhai:1:18: Runtime error: launch_spread_hours: channels.email.fields.launch_at `tomorrow` is not an RFC 3339 time: premature end of input"
    );
}

#[test]
fn audience_overlap_is_the_lowest_pairwise_jaccard() {
    // email~social 1, email~paid and social~paid 1/3.
    assert_eq!(
        value(r#"audience_overlap(entity, "segments")"#, fall_campaign()),
        json!(1.0 / 3.0)
    );
}

#[test]
fn consistency_combines_the_parts_it_is_asked_for() {
    let spec = r#"#{ fields: ["offer_code", "landing_url"], message: "key_message", launch: "launch_at", window: "48h", audience: "segments" }"#;
    let got = value(&format!("consistency(entity, {spec})"), fall_campaign());
    // agreement 2/3, message 3/8, timing 48/96 = 0.5, audience 1/3:
    // 0.4 * 2/3 + 0.2 * 0.375 + 0.2 * 0.5 + 0.2 * 1/3 = 0.5083...
    let score = 0.4 * (2.0 / 3.0) + 0.2 * 0.375 + 0.2 * 0.5 + 0.2 * (1.0 / 3.0);
    assert_eq!(
        got,
        json!({
            "score": score,
            "parts": {"agreement": 2.0 / 3.0, "message": 0.375, "timing": 0.5, "audience": 1.0 / 3.0},
            "failing": ["agreement", "message", "timing", "audience"],
            "outliers": ["paid"],
        })
    );

    // Only agreement and timing, with a threshold: weights renormalise to 2/3 and 1/3.
    let got = value(
        r#"consistency(entity, #{ fields: ["landing_url"], launch: "launch_at", window: "4d", threshold: 0.8 })"#,
        fall_campaign(),
    );
    assert_eq!(
        got,
        json!({"score": 1.0, "parts": {"agreement": 1.0, "timing": 1.0}, "failing": [], "outliers": []})
    );

    assert_eq!(
        fails(r#"consistency(entity, #{ feilds: [] })"#, fall_campaign()),
        "rules/r.rhai:1:18: Runtime error: consistency: unknown key `feilds` (known: fields, message, launch, window, audience, threshold, hub)"
    );
    assert_eq!(
        fails(
            r#"consistency(entity, #{ launch: "launch_at" })"#,
            fall_campaign()
        ),
        "rules/r.rhai:1:18: Runtime error: consistency: `launch` needs a `window`, e.g. window: \"48h\""
    );
}

const FULL_SPEC: &str = r#"#{ fields: ["offer_code", "landing_url"], message: "key_message", launch: "launch_at", window: "48h", audience: "segments" }"#;

fn consistency_with(spec: &str, hub: bool, state: EntityState) -> Value {
    let spec = spec.replacen("#{", &format!("#{{ hub: {hub},"), 1);
    value(&format!("consistency(entity, {spec})"), state)
}

#[test]
fn with_a_hub_each_channel_is_measured_against_the_campaigns_own_brief() {
    let state = with_brief(
        fall_campaign(),
        json!({"offer_code": "FALL25", "landing_url": "https://x.test/fall",
               "key_message": "Save 25% on fall gear", "launch_at": "2026-11-25T09:00:00Z",
               "segments": ["loyal", "new", "lapsed"]}),
    );
    // Agreement: paid's FALL20 is off the brief, 2/3. Message: social's words
    // share 3 of 7 with the brief's (email's all, paid's 5 of 6). Timing: paid
    // launches 72h after the brief's launch, past 48h: 48/72. Audience: every
    // channel targets segments the brief names: 1.
    let score = 0.4 * (2.0 / 3.0) + 0.2 * (3.0 / 7.0) + 0.2 * (48.0 / 72.0) + 0.2 * 1.0;
    assert_eq!(
        consistency_with(FULL_SPEC, true, state.clone()),
        json!({
            "score": score,
            "parts": {"agreement": 2.0 / 3.0, "message": 3.0 / 7.0, "timing": 48.0 / 72.0, "audience": 1.0},
            "failing": ["agreement", "message", "timing"],
            "outliers": ["paid"],
        })
    );
    // Without `hub` the brief is not read: the channels against each other.
    assert_eq!(
        consistency_with(FULL_SPEC, false, state),
        consistency_with(FULL_SPEC, false, fall_campaign())
    );
}

#[test]
fn a_hub_settles_a_tie_and_judges_a_single_channel() {
    // Two channels, two codes: without a hub neither is the agreed one.
    let split = campaign(json!({"email": {"offer_code": "A"}, "social": {"offer_code": "B"}}));
    let spec = r#"#{ fields: ["offer_code"] }"#;
    assert_eq!(
        consistency_with(spec, true, split.clone())["outliers"],
        json!(["email", "social"])
    );
    let briefed = with_brief(split, json!({"offer_code": "A"}));
    assert_eq!(
        consistency_with(spec, true, briefed),
        json!({"score": 0.5, "parts": {"agreement": 0.5}, "failing": ["agreement"], "outliers": ["social"]})
    );
    // One channel has nobody to disagree with, but can be off the brief.
    let alone = with_brief(
        campaign(json!({"paid": {"offer_code": "B"}})),
        json!({"offer_code": "A"}),
    );
    assert_eq!(
        consistency_with(spec, false, alone.clone())["outliers"],
        json!([])
    );
    assert_eq!(
        consistency_with(spec, true, alone),
        json!({"score": 0.0, "parts": {"agreement": 0.0}, "failing": ["agreement"], "outliers": ["paid"]})
    );
}

#[test]
fn a_hub_without_a_field_leaves_that_part_to_the_channels() {
    // The brief names the offer code only: the rest compares channels.
    let state = with_brief(fall_campaign(), json!({"offer_code": "FALL20"}));
    let got = consistency_with(FULL_SPEC, true, state);
    // email and social are off FALL20: 1/3. The other parts as without a hub.
    let peers = consistency_with(FULL_SPEC, false, fall_campaign());
    assert_eq!(got["parts"]["agreement"], json!(1.0 / 3.0));
    assert_eq!(got["outliers"], json!(["email", "social"]));
    for part in ["message", "timing", "audience"] {
        assert_eq!(got["parts"][part], peers["parts"][part], "{part}");
    }
    // No brief at all: exactly the peers' result.
    assert_eq!(consistency_with(FULL_SPEC, true, fall_campaign()), peers);
}

#[test]
fn a_hubs_audience_is_a_taxonomy_a_channel_may_target_part_of() {
    let state = with_brief(
        campaign(json!({
            "email": {"segments": ["loyal"]},
            "social": {"segments": ["loyal", "vip"]},
            "paid": {"segments": []},
        })),
        json!({"segments": ["loyal", "new"]}),
    );
    // email within it, social half outside it, paid targets nothing yet.
    assert_eq!(
        consistency_with(r#"#{ audience: "segments" }"#, true, state)["parts"],
        json!({"audience": 0.5})
    );
}

#[test]
fn a_hub_with_a_brief_of_the_wrong_type_fails_the_rule_naming_it() {
    let brief = |brief: Value| with_brief(fall_campaign(), brief);
    assert_eq!(
        fails(r#"consistency(entity, #{ hub: "yes" })"#, fall_campaign()),
        "rules/r.rhai:1:18: Runtime error: consistency: `hub` must be true or false, got yes"
    );
    assert_eq!(
        fails(
            r#"consistency(entity, #{ hub: true, launch: "launch_at", window: "48h" })"#,
            brief(json!({"launch_at": "next week"}))
        ),
        "rules/r.rhai:1:18: Runtime error: consistency: the campaign's fields.launch_at `next week` is not an RFC 3339 time: premature end of input"
    );
    assert_eq!(
        fails(
            r#"consistency(entity, #{ hub: true, audience: "segments" })"#,
            brief(json!({"segments": "loyal"}))
        ),
        "rules/r.rhai:1:18: Runtime error: consistency: the campaign's fields.segments must be an array of segments"
    );
    assert_eq!(
        fails(
            r#"consistency(entity, #{ hub: true, message: "key_message" })"#,
            brief(json!({"key_message": 25}))
        ),
        "rules/r.rhai:1:18: Runtime error: consistency: the campaign's fields.key_message must be a string, got a value of type `i64`"
    );
}
