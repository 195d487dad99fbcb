//! `converge explain`: why converge did what it did. For one event (by its
//! CloudEvents `id`) or for every event about one entity (`--entity
//! campaign/c-42`, the audit trail a compliance review asks for): the event,
//! each decision with the rule and the line that made it, the state the rule
//! saw and the condition terms it gave, the actions and how they ended, and
//! the rules that failed. A report for people by default; `--json` prints the
//! store's trails as they are.
//!
//! It reads the database directly (read-only on SQLite), so it works with the daemon
//! running or stopped.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use converge_model::{Decision, EntityKey};
use converge_store::{
    ActionHistoryKind, ActionRecord, ActionStatus, EventTrail, HeldSendRecord, Store, TimerRecord,
    TimerStatus,
};
use serde_json::Value;

use crate::Exit;
use crate::config::Config;
use crate::redact::Redaction;

/// The most timers an entity's view lists (`--entity`, the console's
/// record page): see [`shown_timers`].
pub const TIMERS_SHOWN: usize = 50;
/// Trails read per query in `--entity` mode: a long history is printed a
/// page at a time instead of being held in memory whole.
const ENTITY_PAGE: usize = 100;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The event's CloudEvents `id`.
    #[arg(required_unless_present = "entity", conflicts_with = "entity")]
    event_id: Option<String>,
    /// Every event about this entity (`kind/id`, e.g. `campaign/c-42`), in
    /// journal order, each with its decisions.
    #[arg(long)]
    entity: Option<String>,
    /// Only the event from this source, when several sources used the id.
    #[arg(long, conflicts_with = "entity")]
    source: Option<String>,
    /// Only the event that came in on this hook.
    #[arg(long, conflicts_with = "entity")]
    hook: Option<String>,
    #[arg(long, short, default_value = "config/converge.toml")]
    config: PathBuf,
    /// Print the trails as JSON (an array), as the store records them.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &ExplainArgs) -> ExitCode {
    // The environment only for the database password (storage.password_env).
    let config = match Config::load(&args.config, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid.into();
        }
    };
    let database = &config.storage.location;
    let store = match Store::open_reader(database) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: cannot read {database}: {e}");
            for warning in config.storage_warnings() {
                eprintln!("note: {warning}");
            }
            return Exit::Failure.into();
        }
    };
    let result = match (&args.event_id, &args.entity) {
        (_, Some(entity)) => explain_entity(&store, entity, Output::new(args.json, &config)),
        (Some(id), None) => {
            explain_event(&store, id, args, &config, Output::new(args.json, &config))
        }
        (None, None) => Err("give an event id or --entity kind/id".to_string()),
    };
    let result = result.map_err(|e| match &config.storage.retention {
        Some(retention) if e.starts_with("no event") => format!(
            "{e}; events processed more than {} ago are pruned (storage.retention)",
            humantime::format_duration(retention.keep)
        ),
        _ => e,
    });
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("error: {e} ({database})");
            Exit::Failure.into()
        }
    }
}

fn explain_event(
    store: &Store,
    id: &str,
    args: &ExplainArgs,
    config: &Config,
    mut out: Output,
) -> Result<(), String> {
    let mut trails = store
        .find_event_trail(id)
        .map_err(|e| format!("cannot read the trail of `{id}`: {e}"))?;
    if trails.is_empty() {
        return Err(format!("no event with id `{id}`"));
    }
    let sources: Vec<String> = trails
        .iter()
        .map(|t| match &t.hook {
            Some(hook) => format!("{} (hook {hook})", t.source),
            None => t.source.clone(),
        })
        .collect();
    trails.retain(|t| {
        args.source.as_ref().is_none_or(|s| *s == t.source)
            && args
                .hook
                .as_ref()
                .is_none_or(|h| Some(h) == t.hook.as_ref())
    });
    if trails.is_empty() {
        return Err(format!(
            "no event with id `{id}` from that source or hook; it came from: {}",
            sources.join(", ")
        ));
    }
    for trail in trails {
        let undecided = trail.processed_at_ms.is_some() && trail.decisions.iter().all(|d| d.shadow);
        let ty = trail.ty.clone();
        out.trail(store, trail)?;
        if undecided
            && !out.json
            && let Some(line) = rules_for_type(config, &ty)
        {
            out.line(&line)?;
        }
    }
    out.finish()
}

/// For an event no live rule decided on, which of the config's rules run
/// for its type now (their `events` headers): where "why did my rule not
/// fire" starts. `None` when the rules do not compile now.
fn rules_for_type(config: &Config, ty: &str) -> Option<String> {
    let loaded = crate::reload::LoadedRules::compile(&config.rules).ok()?;
    let (run, other): (Vec<_>, Vec<_>) = loaded.live.rules().iter().partition(|r| r.handles(ty));
    let run: Vec<&str> = run.iter().map(|r| r.name.as_str()).collect();
    let run = if run.is_empty() {
        "none".to_string()
    } else {
        run.join(", ")
    };
    Some(format!(
        "  rules that run for {ty} in the config now: {run}; {} other(s) do not (their `events` headers)",
        other.len()
    ))
}

fn explain_entity(store: &Store, entity: &str, mut out: Output) -> Result<(), String> {
    let json = out.json;
    let key = EntityKey::parse(entity).ok_or_else(|| {
        format!("`{entity}` is not an entity: expected kind/id, e.g. campaign/c-42")
    })?;
    let subject = key.to_string();
    if !json {
        out.line(&format!("entity {subject}"))?;
    }
    let mut after_seq = 0;
    let mut events = 0usize;
    loop {
        let page = store
            .subject_trails(&subject, after_seq, ENTITY_PAGE)
            .map_err(|e| format!("cannot read the trail of {subject}: {e}"))?;
        let Some(last) = page.last() else { break };
        after_seq = last.seq;
        let count = page.len();
        for trail in page {
            if !json {
                out.line("")?;
            }
            out.trail(store, trail)?;
        }
        events += count;
        if count < ENTITY_PAGE {
            break;
        }
    }
    if events == 0 {
        return Err(format!("no event about {subject}"));
    }
    // The JSON is the trails alone; `GET /v1/entities/{kind}/{id}/timers`
    // has the timers as JSON.
    if !json {
        let shown = shown_timers(&**store, &key)
            .map_err(|e| format!("cannot read the timers of {subject}: {e}"))?;
        if !shown.timers.is_empty() {
            out.line("")?;
            out.line("timers, waiting ones first (the next to fire on top):")?;
            for timer in reading_order(&shown.timers) {
                out.line(&timer_line(timer))?;
            }
            if shown.more_waiting {
                out.line(&format!(
                    "(only the newest {TIMERS_SHOWN} waiting are listed: GET /v1/entities/{subject}/timers?pending=true has up to 1,000)"
                ))?;
            }
        }
    }
    out.finish()
}

/// An entity's timers as its views show them: every waiting one, however
/// long ago it was made (a campaign's gate deadline outlives many later
/// reminders), up to [`TIMERS_SHOWN`], then the newest of the rest up to
/// that many in all.
pub struct ShownTimers {
    pub timers: Vec<TimerRecord>,
    /// The entity has more than [`TIMERS_SHOWN`] waiting (the newest listed).
    pub more_waiting: bool,
}

pub fn shown_timers(
    store: &dyn converge_store::Backend,
    key: &EntityKey,
) -> Result<ShownTimers, converge_store::StoreError> {
    let mut timers = store.entity_timers(key, true, TIMERS_SHOWN + 1)?;
    let more_waiting = timers.len() > TIMERS_SHOWN;
    timers.truncate(TIMERS_SHOWN);
    let room = TIMERS_SHOWN - timers.len();
    if room > 0 {
        let closed: Vec<TimerRecord> = store
            .entity_timers(key, false, TIMERS_SHOWN)?
            .into_iter()
            .filter(|t| t.status != TimerStatus::Pending)
            .take(room)
            .collect();
        timers.extend(closed);
    }
    Ok(ShownTimers {
        timers,
        more_waiting,
    })
}

/// An entity's timers as people read them: the pending ones first, the
/// next to fire on top (a handoff's ladder reads rung by rung), then those
/// that fired, were cancelled or skipped, the latest first.
pub fn reading_order(timers: &[TimerRecord]) -> Vec<&TimerRecord> {
    let mut timers: Vec<&TimerRecord> = timers.iter().collect();
    timers.sort_by_key(|t| match t.status {
        TimerStatus::Pending => (0, t.due_at_ms, t.id),
        _ => (1, -t.closed_at_ms.unwrap_or(t.due_at_ms), -t.id),
    });
    timers
}

fn timer_line(timer: &TimerRecord) -> String {
    let until = timer
        .expect_type
        .as_ref()
        .map(|t| format!(" until {t}"))
        .unwrap_or_default();
    let closed = timer
        .closed_at_ms
        .map(|at| format!(" at {}", millis(at)))
        .unwrap_or_default();
    let by = match (&timer.cancelled_by, &timer.cancel_reason) {
        (Some(by), Some(reason)) => format!(" by {by}: {reason}"),
        (Some(by), None) => format!(" by {by}"),
        // An expect its event cancelled.
        (None, Some(reason)) => format!(": {reason}"),
        (None, None) => String::new(),
    };
    format!(
        "  {}  {}{until} by rule {}, due {}: {}{closed}{by}",
        timer.event_type,
        timer.kind.name(),
        timer.rule,
        millis(timer.due_at_ms),
        timer.status.name(),
    )
}

/// Writes trails as the report or as one JSON array, as they come.
struct Output {
    json: bool,
    /// JSON items written so far.
    written: usize,
    /// The hooks' secret fields, hidden in what is shown.
    redaction: Redaction,
    stdout: std::io::StdoutLock<'static>,
}

impl Output {
    fn new(json: bool, config: &Config) -> Output {
        Output {
            json,
            written: 0,
            redaction: config.redaction(),
            stdout: std::io::stdout().lock(),
        }
    }

    fn line(&mut self, text: &str) -> Result<(), String> {
        writeln!(self.stdout, "{text}").map_err(|e| format!("cannot write the output: {e}"))
    }

    fn trail(&mut self, store: &Store, mut trail: EventTrail) -> Result<(), String> {
        let facts = Facts::of(&**store, &mut trail, &self.redaction);
        let trail = &trail;
        if self.json {
            let mut item = serde_json::to_value(trail).expect("trails serialize");
            item["time"] = facts.time.clone().into();
            item["data"] = facts.data.clone().unwrap_or(Value::Null);
            item["sends"] = serde_json::to_value(&facts.sends).expect("sends serialize");
            let item = serde_json::to_string_pretty(&item).expect("trails serialize");
            let separator = if self.written == 0 { "[" } else { "," };
            self.written += 1;
            self.line(&format!("{separator}\n{item}"))
        } else {
            let text = report(trail, &facts);
            write!(self.stdout, "{text}").map_err(|e| format!("cannot write the output: {e}"))
        }
    }

    fn finish(mut self) -> Result<(), String> {
        if self.json {
            self.line(if self.written == 0 { "[]" } else { "]" })?;
        }
        Ok(())
    }
}

/// What a trail shows besides what the rules made of the event: the
/// event's own `time` and `data` (from its journaled JSON), and, for a
/// `send.requested`, what became of each send it asked for.
#[derive(Debug, Default)]
pub struct Facts {
    pub time: Option<String>,
    pub data: Option<Value>,
    /// The sends this event asked for that a gate held: held still, or
    /// released when, by whom, by which event.
    pub sends: Vec<HeldSendRecord>,
}

/// Longest `data` the text report prints; `--json` has all of it.
const DATA_SHOWN: usize = 2000;

impl Facts {
    /// Read from the store; what cannot be read is left out. The fields
    /// the event's hook marks secret are redacted, in its data and in what
    /// the rules printed about it (`trail.rule_notes`).
    pub fn of(
        store: &dyn converge_store::Backend,
        trail: &mut EventTrail,
        redaction: &Redaction,
    ) -> Facts {
        let event = store
            .events_after(trail.seq - 1, 1)
            .ok()
            .and_then(|page| page.into_iter().next())
            .and_then(|journaled| serde_json::from_str::<Value>(&journaled.json).ok());
        let sends = trail
            .subject
            .as_deref()
            .filter(|_| trail.ty == converge_engine::gates::SEND_REQUESTED)
            .and_then(EntityKey::parse)
            .and_then(|key| store.gate(&key, 1000).ok())
            .map(|gate| {
                let mut sends: Vec<HeldSendRecord> = gate
                    .held_sends
                    .into_iter()
                    .filter(|h| h.event_seq == trail.seq)
                    .collect();
                sends.sort_by_key(|h| h.id);
                sends
            })
            .unwrap_or_default();
        let time = event
            .as_ref()
            .and_then(|e| e.get("time")?.as_str().map(str::to_string));
        let mut data = event.and_then(|mut e| e.get_mut("data").map(Value::take));
        if let Some(data) = &mut data {
            redaction.apply(data, trail);
        }
        Facts { time, data, sends }
    }
}

/// What became of a held send, in a line.
fn fate(send: &HeldSendRecord) -> String {
    let held = format!(
        "{} held at {} by {}: {}",
        send.channel,
        millis(send.held_at_ms),
        send.rule,
        send.reason
    );
    match (&send.released_at_ms, &send.released_by) {
        (Some(at), Some(by)) => format!(
            "{held}; released at {} by {by}{}",
            millis(*at),
            send.released_seq
                .map(|seq| format!(" (event seq {seq})"))
                .unwrap_or_default()
        ),
        _ => format!("{held}; still held"),
    }
}

/// One event's trail as text, e.g.:
///
/// ```text
/// event s-1 (send.requested) from /shop
///   subject    campaign/c-42
///   time       2026-11-23T10:00:00Z
///   received   2026-11-23T10:00:00Z
///   processed  2026-11-23T10:00:00Z
///   seq        1
///   1. hold_send  channel: "email", reason: "consistency 72%"
///      by rule gate at rules/gate.rhai:12:5 (version 5f1c0a3b9d2e4f60)
///      saw stage "review", owner "ana", updated 2026-11-23T10:00:00Z, 3 events
///      because
///        ✓ approved
///        ✗ within_window
///          consistency: 0.72
///      action 1 (route hold, plugin webhook-out): done after 1 attempt
///   rule failed: late (version 00aa..): rules/late.rhai:2:1: Too many operations
/// ```
pub fn report(trail: &EventTrail, facts: &Facts) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "event {} ({}) from {}",
        trail.id, trail.ty, trail.source
    );
    let _ = match &trail.hook {
        Some(hook) => writeln!(text, " on hook {hook}"),
        None => writeln!(text),
    };
    let _ = writeln!(
        text,
        "  subject    {}",
        trail.subject.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        text,
        "  time       {}",
        facts.time.as_deref().unwrap_or("none")
    );
    if let Some(data) = &facts.data {
        let mut shown = data.to_string();
        if shown.len() > DATA_SHOWN {
            let mut end = DATA_SHOWN;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
            shown.push_str(" ...");
        }
        let _ = writeln!(text, "  data       {shown}");
    }
    let _ = writeln!(text, "  received   {}", millis(trail.received_at_ms));
    let _ = writeln!(
        text,
        "  processed  {}",
        trail.processed_at_ms.map_or("not yet".to_string(), millis)
    );
    let _ = writeln!(text, "  seq        {}", trail.seq);
    if trail.decisions.is_empty() && trail.processed_at_ms.is_some() {
        let _ = writeln!(text, "  no decisions");
    }
    for (n, record) in trail.decisions.iter().enumerate() {
        decision(&mut text, n + 1, &record.decision, record.shadow);
        if record.shadow {
            let _ = writeln!(text, "     shadow: recorded, never acted on");
        } else if record.actions.is_empty() {
            let _ = writeln!(text, "     no action (no route)");
        }
        for a in &record.actions {
            let _ = writeln!(text, "     {}", action(a));
            for line in history(a) {
                let _ = writeln!(text, "       {line}");
            }
        }
    }
    for failure in &trail.rule_failures {
        let _ = writeln!(
            text,
            "  rule failed: {} (version {}): {}",
            failure.rule, failure.rule_hash, failure.message
        );
    }
    for note in &trail.rule_notes {
        let _ = writeln!(
            text,
            "  {} printed: {}",
            note.rule,
            note.message.escape_debug()
        );
    }
    for send in &facts.sends {
        let _ = writeln!(text, "  gate: {}", fate(send));
    }
    text
}

fn decision(text: &mut String, n: usize, decision: &Decision, shadow: bool) {
    let mut arguments = Vec::new();
    if let Ok(Value::Object(members)) = serde_json::to_value(&decision.kind) {
        for (name, value) in members {
            if name != "kind" {
                arguments.push(format!("{name}: {value}"));
            }
        }
    }
    let _ = writeln!(
        text,
        "  {n}. {}{}  {}",
        decision.kind.name(),
        if shadow { " (shadow)" } else { "" },
        arguments.join(", ")
    );
    let at = decision
        .trace
        .as_ref()
        .map(|trace| format!(" at {}", trace.at))
        .unwrap_or_default();
    let _ = writeln!(
        text,
        "     by rule {}{at} (version {})",
        decision.rule, decision.rule_hash
    );
    let Some(trace) = &decision.trace else {
        return;
    };
    if let Some(inputs) = &trace.inputs {
        let quoted =
            |v: &Option<String>| v.as_ref().map_or("none".to_string(), |s| format!("{s:?}"));
        let _ = writeln!(
            text,
            "     saw stage {}, owner {}, updated {}, {} event{}",
            quoted(&inputs.stage),
            quoted(&inputs.owner),
            inputs
                .updated_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            inputs.events,
            if inputs.events == 1 { "" } else { "s" }
        );
    }
    if !trace.terms.is_empty() {
        let _ = writeln!(text, "     because");
        for (name, value) in &trace.terms {
            let _ = match value {
                Value::Bool(true) => writeln!(text, "       ✓ {name}"),
                Value::Bool(false) => writeln!(text, "       ✗ {name}"),
                other => writeln!(text, "         {name}: {other}"),
            };
        }
    }
}

fn action(a: &ActionRecord) -> String {
    let status = match a.status {
        ActionStatus::DeadLetter => "DEAD LETTER",
        other => other.name(),
    };
    let mut text = format!(
        "action {} (route {}, plugin {}): {status}",
        a.id, a.route, a.plugin
    );
    if a.attempts > 0 {
        let _ = write!(
            text,
            " after {} attempt{}",
            a.attempts,
            if a.attempts == 1 { "" } else { "s" }
        );
    }
    if let Some(at) = a.finished_at_ms {
        let _ = write!(text, " at {}", millis(at));
    } else if let Some(next) = a.next_attempt_at_ms {
        let _ = write!(text, ", next attempt at {}", millis(next));
    }
    if let Some(id) = &a.external_id {
        let _ = write!(text, ", external id {id}");
    }
    if let Some(detail) = a.detail.as_deref().filter(|d| !d.is_empty()) {
        let _ = write!(text, ": {detail}");
    }
    text
}

/// What people did with an action that failed for good, and what to do
/// with one that waits for them.
fn history(a: &ActionRecord) -> Vec<String> {
    let mut lines = Vec::new();
    for h in &a.history {
        let who = || {
            format!(
                "by {} at {}: {}",
                h.by.as_deref().unwrap_or("?"),
                millis(h.at_ms),
                h.reason.as_deref().unwrap_or("")
            )
        };
        match h.kind {
            ActionHistoryKind::DeadLettered => lines.push(format!(
                "dead-lettered at {} after {} attempt{}",
                millis(h.at_ms),
                h.attempts,
                if h.attempts == 1 { "" } else { "s" }
            )),
            ActionHistoryKind::Retried => lines.push(format!("retried {}", who())),
            ActionHistoryKind::Dropped => lines.push(format!("dropped {}", who())),
            ActionHistoryKind::AttemptFailed => {}
        }
    }
    if a.status == ActionStatus::DeadLetter {
        lines.push(format!(
            "waiting for a person: converge dlq retry {0} or converge dlq drop {0}",
            a.id
        ));
    }
    lines
}

fn millis(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_model::{
        DecisionInputs, DecisionKind, DecisionSite, DecisionTrace, RuleFailure, RuleNote,
    };
    use converge_store::{ActionHistoryRecord, DecisionRecord, HeldSendStatus};
    use serde_json::json;

    fn trail() -> EventTrail {
        let at = "2026-11-23T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let ms = at.timestamp_millis();
        EventTrail {
            seq: 7,
            source: "/shop".into(),
            id: "s-1".into(),
            ty: "send.requested".into(),
            subject: Some("campaign/c-42".into()),
            received_at_ms: ms,
            processed_at_ms: Some(ms + 250),
            hook: Some("shop".into()),
            decisions: vec![
                DecisionRecord {
                    id: 1,
                    decision: Decision {
                        rule: "gate".into(),
                        rule_hash: "5f1c0a3b9d2e4f60".into(),
                        kind: DecisionKind::HoldSend {
                            channel: "email".into(),
                            reason: "consistency 72%".into(),
                        },
                        trace: Some(DecisionTrace {
                            at: DecisionSite {
                                file: "rules/gate.rhai".into(),
                                line: 12,
                                column: 5,
                            },
                            inputs: Some(DecisionInputs {
                                stage: Some("review".into()),
                                owner: None,
                                updated_at: at,
                                events: 3,
                            }),
                            terms: [
                                ("approved".to_string(), json!(true)),
                                ("consistency".to_string(), json!(0.72)),
                                ("within_window".to_string(), json!(false)),
                            ]
                            .into(),
                        }),
                    },
                    shadow: false,
                    actions: vec![
                        ActionRecord {
                            id: 3,
                            route: "hold".into(),
                            plugin: "webhook-out".into(),
                            status: ActionStatus::Done,
                            attempts: 2,
                            detail: Some("HTTP 200".into()),
                            external_id: None,
                            next_attempt_at_ms: None,
                            finished_at_ms: Some(ms + 1500),
                            payload_key: None,
                            instance: None,
                            history: vec![],
                        },
                        ActionRecord {
                            id: 4,
                            route: "mail".into(),
                            plugin: "webhook-out".into(),
                            status: ActionStatus::DeadLetter,
                            attempts: 1,
                            detail: Some("unauthorized: HTTP 401".into()),
                            external_id: None,
                            next_attempt_at_ms: None,
                            finished_at_ms: Some(ms + 3000),
                            payload_key: None,
                            instance: None,
                            history: vec![
                                ActionHistoryRecord {
                                    at_ms: ms + 2000,
                                    kind: ActionHistoryKind::DeadLettered,
                                    attempts: 3,
                                    detail: Some("unauthorized: HTTP 401".into()),
                                    by: None,
                                    reason: None,
                                },
                                ActionHistoryRecord {
                                    at_ms: ms + 2500,
                                    kind: ActionHistoryKind::Retried,
                                    attempts: 3,
                                    detail: None,
                                    by: Some("mia".into()),
                                    reason: Some("token rotated".into()),
                                },
                                ActionHistoryRecord {
                                    at_ms: ms + 3000,
                                    kind: ActionHistoryKind::DeadLettered,
                                    attempts: 1,
                                    detail: Some("unauthorized: HTTP 401".into()),
                                    by: None,
                                    reason: None,
                                },
                            ],
                        },
                    ],
                },
                DecisionRecord {
                    id: 2,
                    decision: Decision {
                        rule: "old".into(),
                        rule_hash: "00aa".into(),
                        kind: DecisionKind::Notify {
                            to: "ops".into(),
                            message: "held".into(),
                        },
                        trace: None,
                    },
                    shadow: true,
                    actions: vec![],
                },
            ],
            rule_failures: vec![RuleFailure {
                rule: "late".into(),
                rule_hash: "77bb".into(),
                message: "rules/late.rhai:2:1: Too many operations".into(),
            }],
            rule_notes: vec![RuleNote {
                rule: "gate".into(),
                message: "consistency 0.72\nwindow 48h".into(),
            }],
        }
    }

    #[test]
    fn the_report_reads_top_down() {
        assert_eq!(
            report(
                &trail(),
                &Facts {
                    time: Some("2026-11-23T09:59:00Z".into()),
                    data: Some(serde_json::json!({"channel": "email"})),
                    sends: vec![HeldSendRecord {
                        id: 1,
                        campaign: "campaign/c-42".into(),
                        channel: "email".into(),
                        event_seq: 7,
                        event_id: "s-1".into(),
                        event_json: String::new(),
                        rule: "gate".into(),
                        reason: "consistency 72%".into(),
                        held_at_ms: 1_763_892_000_000,
                        status: HeldSendStatus::Released,
                        released_seq: Some(9),
                        released_at_ms: Some(1_763_895_600_000),
                        released_by: Some("override by mia".into()),
                    }],
                }
            ),
            "\
event s-1 (send.requested) from /shop on hook shop
  subject    campaign/c-42
  time       2026-11-23T09:59:00Z
  data       {\"channel\":\"email\"}
  received   2026-11-23T10:00:00Z
  processed  2026-11-23T10:00:00.250Z
  seq        7
  1. hold_send  channel: \"email\", reason: \"consistency 72%\"
     by rule gate at rules/gate.rhai:12:5 (version 5f1c0a3b9d2e4f60)
     saw stage \"review\", owner none, updated 2026-11-23T10:00:00Z, 3 events
     because
       ✓ approved
         consistency: 0.72
       ✗ within_window
     action 3 (route hold, plugin webhook-out): done after 2 attempts at 2026-11-23T10:00:01.500Z: HTTP 200
     action 4 (route mail, plugin webhook-out): DEAD LETTER after 1 attempt at 2026-11-23T10:00:03Z: unauthorized: HTTP 401
       dead-lettered at 2026-11-23T10:00:02Z after 3 attempts
       retried by mia at 2026-11-23T10:00:02.500Z: token rotated
       dead-lettered at 2026-11-23T10:00:03Z after 1 attempt
       waiting for a person: converge dlq retry 4 or converge dlq drop 4
  2. notify (shadow)  message: \"held\", to: \"ops\"
     by rule old (version 00aa)
     shadow: recorded, never acted on
  rule failed: late (version 77bb): rules/late.rhai:2:1: Too many operations
  gate printed: consistency 0.72\\nwindow 48h
  gate: email held at 2025-11-23T10:00:00Z by gate: consistency 72%; released at 2025-11-23T11:00:00Z by override by mia (event seq 9)
"
        );
    }

    #[test]
    fn a_cancelled_timer_says_who_or_what_cancelled_it() {
        use converge_model::CatchUp;
        use converge_store::{TimerRecordKind, TimerStatus};
        let due = "2026-11-24T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let rung = |cancelled_by: Option<&str>, cancel_reason: Option<&str>| TimerRecord {
            id: 1,
            entity: "task/T-1".into(),
            kind: TimerRecordKind::Expect,
            event_type: "task.handoff.remind".into(),
            data: json!({}),
            expect_type: Some("task.handoff.ended".into()),
            due_at_ms: due.timestamp_millis(),
            catch_up: CatchUp::FireLate,
            rule: "stalled_handoff".into(),
            rule_hash: "h".into(),
            created_by_seq: 1,
            status: TimerStatus::Cancelled,
            fired_seq: None,
            closed_at_ms: Some(due.timestamp_millis() - 3_600_000),
            cancelled_by: cancelled_by.map(str::to_string),
            cancel_reason: cancel_reason.map(str::to_string),
        };
        let head = "  task.handoff.remind  expect until task.handoff.ended by rule stalled_handoff, \
                    due 2026-11-24T10:00:00Z: cancelled at 2026-11-24T09:00:00Z";
        assert_eq!(
            timer_line(&rung(None, Some("task.handoff.ended came"))),
            format!("{head}: task.handoff.ended came")
        );
        assert_eq!(
            timer_line(&rung(Some("ana"), Some("resolved by phone"))),
            format!("{head} by ana: resolved by phone")
        );
        assert_eq!(timer_line(&rung(None, None)), head);
    }
}
