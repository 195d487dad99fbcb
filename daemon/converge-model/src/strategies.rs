//! proptest strategies for entity states and decisions, for the property
//! tests that hold another way of writing or reading them to serde's: their
//! JSON written directly (`entity_json`, `decision_json`, the store's
//! decision bodies) and the state's map for the rules (converge-rules'
//! `convert`). The structs are built with literals, so a member added to a
//! state or a decision stops these compiling until the tests are looked at.
//!
//! Tests only: built for this crate's tests and, with the `strategies`
//! feature, for other crates' (as a dev-dependency).

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::entity::{ChannelState, EntityState};
use crate::flow::Flow;
use crate::{CatchUp, DecisionInputs, DecisionKind, DecisionSite, DecisionTrace};

/// Whole seconds, milliseconds, micro- and nanoseconds (each written with
/// its own number of digits), from year 1 to 9999.
pub fn time() -> impl Strategy<Value = DateTime<Utc>> + Clone {
    (
        -62_135_596_800i64..253_402_300_799,
        prop_oneof![
            Just(0u32),
            (0u32..1000).prop_map(|ms| ms * 1_000_000),
            (0u32..1_000_000).prop_map(|us| us * 1000),
            0u32..1_000_000_000,
        ],
    )
        .prop_map(|(seconds, nanos)| Utc.timestamp_opt(seconds, nanos).unwrap())
}

/// Plain words, any text, and strings that need escapes in JSON: control
/// characters alone, and quotes and backslashes with others. For the
/// strings of states and decisions written directly.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-z_]{0,8}",
        any::<String>(),
        Just("quote \" back \\ del \u{7f} é ☃".to_owned()),
        Just("tab \t nul \u{0} unit \u{1f} line\n".to_owned()),
    ]
    .boxed()
}

/// Any JSON value, its strings and member names from `text`.
pub fn json_value(text: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        text.clone().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text.clone(), inner, 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// An entity's or a channel's `fields`.
pub fn fields(text: BoxedStrategy<String>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(text.clone(), json_value(text), 0..5)
        .prop_map(|members| members.into_iter().collect())
}

/// Empty half the time: an empty flow is left out of a state's JSON.
pub fn flow() -> impl Strategy<Value = Flow> {
    let some = (
        (proptest::option::of(time()), 0u32..3, 0u32..3),
        (
            proptest::option::of(time()),
            proptest::option::of(time()),
            0u32..3,
        ),
        (prop::collection::vec("[a-z]{1,5}", 0..3), 0u32..3),
        (proptest::option::of(time()), proptest::option::of(time())),
    )
        .prop_map(
            |(
                (review_since, reviews, returns),
                (blocked_since, handoff_since, overrides),
                (sent, corrections),
                (escalated_since, launch_began),
            )| Flow {
                review_since,
                reviews,
                returns,
                blocked_since,
                handoff_since,
                overrides,
                sent,
                corrections,
                escalated_since,
                launch_began,
            },
        );
    prop_oneof![Just(Flow::default()), some]
}

pub fn channel(text: BoxedStrategy<String>) -> impl Strategy<Value = ChannelState> {
    (
        proptest::option::of(text.clone()),
        proptest::option::of(text.clone()),
        fields(text),
        proptest::option::of(time()),
        flow(),
    )
        .prop_map(|(stage, owner, fields, updated_at, flow)| ChannelState {
            stage,
            owner,
            fields,
            updated_at,
            flow,
        })
}

/// An entity's state, every string in it (names, values, stages, owners,
/// channels) from `text`.
pub fn entity_state(text: BoxedStrategy<String>) -> impl Strategy<Value = EntityState> {
    (
        (
            text.clone(),
            text.clone(),
            proptest::option::of(text.clone()),
            proptest::option::of(text.clone()),
        ),
        (
            fields(text.clone()),
            prop::collection::btree_map(text.clone(), channel(text.clone()), 0..4),
        ),
        (time(), time(), proptest::option::of(time())),
        (any::<u64>(), proptest::option::of(text), flow()),
    )
        .prop_map(
            |(
                (kind, id, stage, owner),
                (fields, channels),
                (created_at, updated_at, stage_since),
                (events, last_event_type, flow),
            )| EntityState {
                kind,
                id,
                stage,
                owner,
                fields,
                channels,
                created_at,
                updated_at,
                stage_since,
                events,
                last_event_type,
                flow,
            },
        )
}

fn catch_up() -> impl Strategy<Value = CatchUp> {
    prop_oneof![Just(CatchUp::FireLate), Just(CatchUp::Skip)]
}

/// A timer's or an emit's `data`: often empty, as most are.
fn data() -> BoxedStrategy<Value> {
    prop_oneof![Just(serde_json::json!({})), json_value(text()).boxed()].boxed()
}

/// Every kind of decision, each member from its whole range.
pub fn decision_kind() -> impl Strategy<Value = DecisionKind> {
    let t = text;
    prop_oneof![
        (t(), t(), any::<u32>()).prop_map(|(to, reason, level)| DecisionKind::Escalate {
            to,
            reason,
            level
        }),
        (t(), t()).prop_map(|(to, message)| DecisionKind::Notify { to, message }),
        (t(), json_value(t())).prop_map(|(field, value)| DecisionKind::SetField { field, value }),
        t().prop_map(|stage| DecisionKind::SetStage { stage }),
        t().prop_map(|owner| DecisionKind::AssignOwner { owner }),
        (t(), t()).prop_map(|(channel, reason)| DecisionKind::PauseChannel { channel, reason }),
        (t(), t()).prop_map(|(channel, reason)| DecisionKind::ResumeChannel { channel, reason }),
        (t(), t()).prop_map(|(channel, reason)| DecisionKind::HoldSend { channel, reason }),
        (t(), t()).prop_map(|(channel, reason)| DecisionKind::ReleaseSend { channel, reason }),
        (t(), data()).prop_map(|(event_type, data)| DecisionKind::Emit { event_type, data }),
        (any::<u64>(), t(), data(), catch_up()).prop_map(
            |(after_ms, event_type, data, catch_up)| DecisionKind::Schedule {
                after_ms,
                event_type,
                data,
                catch_up,
            }
        ),
        (t(), any::<u64>(), t(), catch_up()).prop_map(
            |(event_type, within_ms, otherwise, catch_up)| DecisionKind::Expect {
                event_type,
                within_ms,
                otherwise,
                catch_up,
            }
        ),
        t().prop_map(|event_type| DecisionKind::CancelExpects { event_type }),
    ]
}

/// No trace, or one made in a rule file (a plain path, one with a colon,
/// any text), with or without inputs and terms.
pub fn decision_trace() -> impl Strategy<Value = Option<DecisionTrace>> {
    let file = prop_oneof![
        Just("rules/gate.rhai".to_owned()),
        Just("/srv/rules/a:b.rhai".to_owned()),
        text(),
    ];
    let inputs = (
        proptest::option::of(text()),
        proptest::option::of(text()),
        time(),
        any::<u64>(),
    )
        .prop_map(|(stage, owner, updated_at, events)| DecisionInputs {
            stage,
            owner,
            updated_at,
            events,
        });
    let terms = prop::collection::btree_map(text(), json_value(text()), 0..3);
    proptest::option::of(
        (
            file,
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(inputs),
            terms,
        )
            .prop_map(|(file, line, column, inputs, terms)| DecisionTrace {
                at: DecisionSite { file, line, column },
                inputs,
                terms,
            }),
    )
}
