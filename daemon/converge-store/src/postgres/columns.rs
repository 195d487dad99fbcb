//! The select lists the decoders of `read.rs` read, in their order. Macros
//! rather than constants, so statements built with them (`concat!`) stay
//! `&'static str`s, which is what the statement cache keys on.

/// What `read::timer` decodes. The rule version by subqueries, so the list
/// also serves `UPDATE timers ... RETURNING`.
macro_rules! timer_columns {
    () => {
        "id, entity, kind, event_type, data, expect_type, due_at_ms, catch_up, \
         (SELECT v.rule FROM rule_versions v WHERE v.id = rule_version), \
         (SELECT v.hash FROM rule_versions v WHERE v.id = rule_version), \
         created_by_seq, status, fired_seq, closed_at_ms, cancelled_by, cancel_reason"
    };
}

/// What `read::held_send` decodes, and the join it comes from.
macro_rules! held_send_columns {
    () => {
        "h.id, h.campaign, h.channel, h.event_seq, e.json, e.id, e.type, e.source, e.subject, \
         h.rule, h.reason, h.held_at_ms, h.status, h.released_seq, h.released_at_ms, \
         h.released_by, e.hook \
         FROM held_sends h JOIN events e ON e.seq = h.event_seq"
    };
}

/// What `read::pending_action` decodes, from `actions` unaliased (also in
/// `UPDATE actions ... RETURNING`). A payload that is missing reads as
/// empty, which the dispatcher refuses with a clear error.
macro_rules! pending_action_columns {
    () => {
        "actions.id, actions.event_seq, actions.decision_id, actions.route, actions.plugin, \
         coalesce((SELECT p.payload FROM action_payloads p WHERE p.action_id = actions.id), ''), \
         actions.attempts, actions.next_attempt_at_ms, actions.lease_token, actions.instance"
    };
}

/// What `read::action_record` decodes (`a`: actions).
macro_rules! action_columns {
    () => {
        "a.id, a.route, a.plugin, a.status, a.attempts, a.detail, a.external_id, \
         a.next_attempt_at_ms, a.finished_at_ms, a.payload_key, \
         a.instance"
    };
}

/// What `read::action_detail` decodes, and the join it comes from.
macro_rules! action_detail_columns {
    () => {
        concat!(action_detail_select!(), action_detail_from!())
    };
}

/// The columns of [`action_detail_columns`], to add more after them.
macro_rules! action_detail_select {
    () => {
        concat!(
            action_columns!(),
            ", a.event_seq, e.id, e.source, e.type, e.subject, a.decision_id, d.kind, v.rule"
        )
    };
}

/// The join of [`action_detail_columns`].
macro_rules! action_detail_from {
    () => {
        " FROM actions a JOIN events e ON e.seq = a.event_seq \
         JOIN decisions d ON d.id = a.decision_id \
         JOIN rule_versions v ON v.id = d.rule_version"
    };
}
