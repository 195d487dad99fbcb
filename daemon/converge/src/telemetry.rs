//! Metrics and the occurrences that feed them. Each occurrence is one method
//! that both counts and logs, so the log and `/metrics` never disagree.
//! Metric names follow `converge_<noun>_<unit>_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// An action as its log lines name it: the log shows no spans at `info`,
/// so each line says which action, plugin, route and event it is about.
pub struct ActionNamed<'a> {
    pub id: i64,
    pub plugin: &'a str,
    pub route: &'a str,
    /// The event its decision came from (from outside: escaped when logged).
    pub event_id: &'a str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: RejectReason,
}

/// Why intake refused a request; the label of `converge_events_rejected_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RejectReason {
    ContentType,
    TooLarge,
    MalformedJson,
    InvalidEvent,
    BadSource,
    Unavailable,
    /// A listed hook's signature check failed (or it has no secret to check with).
    Signature,
    /// A hook's decoder plugin failed or made an invalid event.
    DecoderFailed,
    /// Its body did not arrive within `server.body_read_timeout`.
    SlowRequest,
    /// Its body would take the bodies being received past
    /// `server.max_body_bytes_in_flight`.
    Busy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub plugin: String,
    pub outcome: ActionOutcomeLabel,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ActionOutcomeLabel {
    Ok,
    Failed,
    Retried,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabel {
    pub outcome: ReloadOutcome,
}

/// How a reload of the rules went; the label of `converge_rule_reloads_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReloadOutcome {
    Ok,
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: &'static str,
}

/// Every metric the daemon exports. Cheap to clone (all handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub events_accepted: Counter,
    pub events_duplicate: Counter,
    pub events_pruned: Counter,
    pub events_rejected: Family<ReasonLabel, Counter>,
    pub events_processed: Counter,
    pub decisions: Family<KindLabel, Counter>,
    pub shadow_decisions: Family<KindLabel, Counter>,
    pub rule_reloads: Family<ReloadLabel, Counter>,
    pub rule_failures: Counter,
    pub actions: Family<ActionLabels, Counter>,
    pub queue_depth: Family<QueueLabel, Gauge<i64, AtomicI64>>,
    pub ack_latency: Histogram,
    pub event_to_action_latency: Histogram,
    pub action_duration: Histogram,
    pub commit_duration: Histogram,
    pub commit_batch_size: Histogram,
    pub journal_events: Gauge<i64, AtomicI64>,
    pub storage_errors: Counter<u64, AtomicU64>,
    /// 1 while storage is failing (`health`), else 0.
    pub storage_failing: Gauge<i64, AtomicI64>,
    pub timers_fired: Counter,
    pub timers_skipped: Counter,
    pub schedules_fired: Counter,
    pub schedules_skipped: Counter,
    pub poll_pages: Counter,
    pub poll_failures: Counter,
    pub timers_pending: Gauge<i64, AtomicI64>,
    pub events_emitted: Counter,
    pub sends_held: Counter,
    pub sends_released: Counter,
    pub gate_overrides: Counter,
    pub held_sends: Gauge<i64, AtomicI64>,
    pub actions_dead_lettered: Family<PluginLabel, Counter>,
    pub dead_letters: Gauge<i64, AtomicI64>,
    pub dead_letters_retried: Counter,
    pub dead_letters_dropped: Counter,
    pub timers_cancelled_by_people: Counter,
    pub connections_timed_out: Counter,
    /// Connections answered 503 and closed at `server.max_connections`.
    pub connections_refused: Counter,
    pub outcomes_fenced: Counter,
    pub partitions_held: Gauge<i64, AtomicI64>,
    pub partition_takeovers: Counter,
    /// The reports' headline values (docs/reports.md), read from the
    /// database at most every [`HEADLINE_EVERY`] when `/metrics` is scraped.
    pub items_blocked: Gauge<i64, AtomicI64>,
    pub escalations_open: Gauge<i64, AtomicI64>,
    pub exception_rate: Gauge<f64, AtomicU64>,
    pub headline_read_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// When each hook, poll and schedule last journaled events.
    pub sources: SourceActivity,
}

/// When each event source (`hook/<name>`, `poll/<name>`,
/// `schedule/<name>`) last journaled new events since the daemon started,
/// and how many: the console's health page. Bounded, since anyone can
/// post to an unlisted hook's name.
#[derive(Clone, Default)]
pub struct SourceActivity(Arc<std::sync::Mutex<std::collections::BTreeMap<String, SourceSeen>>>);

#[derive(Debug, Clone, PartialEq)]
pub struct SourceSeen {
    /// The wall clock's time of the last journaling.
    pub at: chrono::DateTime<chrono::Utc>,
    pub events: u64,
}

/// Most sources remembered; a new one past this is not.
const SOURCES_KEPT: usize = 1000;

impl SourceActivity {
    pub fn seen(&self, source: &str, events: usize) {
        if events == 0 {
            return;
        }
        let mut sources = self.0.lock().expect("sources");
        let at = chrono::Utc::now();
        if let Some(seen) = sources.get_mut(source) {
            seen.at = at;
            seen.events += events as u64;
        } else if sources.len() < SOURCES_KEPT {
            sources.insert(
                source.to_string(),
                SourceSeen {
                    at,
                    events: events as u64,
                },
            );
        }
    }

    pub fn get(&self, source: &str) -> Option<SourceSeen> {
        self.0.lock().expect("sources").get(source).cloned()
    }
}

/// How old the headline gauges may be when `/metrics` is scraped: reading
/// them scans every entity, so a scrape every few seconds does not.
pub const HEADLINE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

impl Metrics {
    pub fn new() -> Metrics {
        // 50 µs .. ~26 s, doubling: covers a group commit and a slow plugin alike.
        let latency = || Histogram::new(exponential_buckets(0.00005, 2.0, 20));
        let mut registry = Registry::with_prefix("converge");
        let events_accepted = Counter::default();
        registry.register(
            "events_accepted",
            "Events journaled and acknowledged",
            events_accepted.clone(),
        );
        let events_duplicate = Counter::default();
        registry.register(
            "events_duplicate",
            "Events acknowledged without journaling because their (source, id) was seen before",
            events_duplicate.clone(),
        );
        let events_pruned = Counter::default();
        registry.register(
            "events_pruned",
            "Processed events removed by retention (storage.retention) with what was recorded about them",
            events_pruned.clone(),
        );
        let events_rejected = Family::default();
        registry.register(
            "events_rejected",
            "Requests or events refused at intake, by reason",
            events_rejected.clone(),
        );
        let events_processed = Counter::default();
        registry.register(
            "events_processed",
            "Journaled events run through the rules",
            events_processed.clone(),
        );
        let decisions = Family::default();
        registry.register(
            "decisions",
            "Decisions recorded, by kind",
            decisions.clone(),
        );
        let shadow_decisions = Family::default();
        registry.register(
            "shadow_decisions",
            "Decisions of rules running in shadow (recorded, never acted on), by kind",
            shadow_decisions.clone(),
        );
        let rule_reloads = Family::default();
        registry.register(
            "rule_reloads",
            "Reloads of the rule files after a change or SIGHUP, by outcome",
            rule_reloads.clone(),
        );
        let rule_failures = Counter::default();
        registry.register(
            "rule_failures",
            "Rule evaluations that failed at run time",
            rule_failures.clone(),
        );
        let actions = Family::default();
        registry.register(
            "actions",
            "Plugin action attempts, by plugin and outcome",
            actions.clone(),
        );
        let queue_depth = Family::default();
        registry.register(
            "queue_depth",
            "Items waiting in each internal queue",
            queue_depth.clone(),
        );
        let ack_latency = latency();
        registry.register(
            "ack_latency_seconds",
            "From a request's arrival to its acknowledgement (journal commit included)",
            ack_latency.clone(),
        );
        let event_to_action_latency = latency();
        registry.register(
            "event_to_action_latency_seconds",
            "From an event's acknowledgement to the end of the first attempt of an action it caused",
            event_to_action_latency.clone(),
        );
        let action_duration = latency();
        registry.register(
            "action_duration_seconds",
            "Time one plugin action attempt took",
            action_duration.clone(),
        );
        let commit_duration = latency();
        registry.register(
            "commit_duration_seconds",
            "Time one group commit took, fsync included",
            commit_duration.clone(),
        );
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "commit_batch_size",
            "Requests gathered into one group commit",
            commit_batch_size.clone(),
        );
        let journal_events = Gauge::default();
        registry.register(
            "journal_events",
            "Events in the journal",
            journal_events.clone(),
        );
        let storage_errors = Counter::default();
        registry.register(
            "storage_errors",
            "Failed storage commits (each retry counts) and failed rounds of the cluster loop",
            storage_errors.clone(),
        );
        let storage_failing = Gauge::default();
        registry.register(
            "storage_failing",
            "1 while storage is failing: new events are refused and unrecorded work is retried",
            storage_failing.clone(),
        );
        let timers_fired = Counter::default();
        registry.register(
            "timers_fired",
            "Timers that fired and journaled their event",
            timers_fired.clone(),
        );
        let timers_skipped = Counter::default();
        registry.register(
            "timers_skipped",
            "Timers that fell due while the daemon was down and were skipped by their catch-up policy",
            timers_skipped.clone(),
        );
        let schedules_fired = Counter::default();
        registry.register(
            "schedules_fired",
            "Schedule occurrences journaled, late ones included",
            schedules_fired.clone(),
        );
        let schedules_skipped = Counter::default();
        registry.register(
            "schedules_skipped",
            "Schedule occurrences that fell due while the daemon was down and were skipped by their catch-up policy",
            schedules_skipped.clone(),
        );
        let poll_pages = Counter::default();
        registry.register(
            "poll_pages",
            "Pages of polled items journaled with their cursor",
            poll_pages.clone(),
        );
        let poll_failures = Counter::default();
        registry.register(
            "poll_failures",
            "Polls that failed (retried with backoff, or after the poll's interval)",
            poll_failures.clone(),
        );
        let timers_pending = Gauge::default();
        registry.register(
            "timers_pending",
            "Timers waiting to fire",
            timers_pending.clone(),
        );
        let events_emitted = Counter::default();
        registry.register(
            "events_emitted",
            "Events journaled by the emit decisions of rules",
            events_emitted.clone(),
        );
        let sends_held = Counter::default();
        registry.register(
            "sends_held",
            "Sends held by a convergence gate (hold_send on a send.requested event)",
            sends_held.clone(),
        );
        let sends_released = Counter::default();
        registry.register(
            "sends_released",
            "Held sends released, by a rule's release_send or an override",
            sends_released.clone(),
        );
        let gate_overrides = Counter::default();
        registry.register(
            "gate_overrides",
            "Convergence gates overridden by a person",
            gate_overrides.clone(),
        );
        let held_sends = Gauge::default();
        registry.register(
            "held_sends",
            "Sends held by convergence gates now",
            held_sends.clone(),
        );
        let actions_dead_lettered = Family::default();
        registry.register(
            "actions_dead_lettered",
            "Actions that failed for good (a permanent failure or no attempts left) and became dead letters, by plugin",
            actions_dead_lettered.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "dead_letters",
            "Dead letters now: actions waiting for a person to retry or drop them",
            dead_letters.clone(),
        );
        let dead_letters_retried = Counter::default();
        registry.register(
            "dead_letters_retried",
            "Dead letters a person put back to pending",
            dead_letters_retried.clone(),
        );
        let timers_cancelled_by_people = Counter::default();
        registry.register(
            "timers_cancelled_by_people",
            "Pending timers a person cancelled (POST /v1/timers/cancel)",
            timers_cancelled_by_people.clone(),
        );
        let dead_letters_dropped = Counter::default();
        registry.register(
            "dead_letters_dropped",
            "Dead letters a person dropped",
            dead_letters_dropped.clone(),
        );
        let connections_timed_out = Counter::default();
        registry.register(
            "connections_timed_out",
            "Connections closed because no whole request head arrived within server.header_read_timeout (idle keep-alive connections included)",
            connections_timed_out.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections answered 503 and closed because server.max_connections were open",
            connections_refused.clone(),
        );
        let outcomes_fenced = Counter::default();
        registry.register(
            "outcomes_fenced",
            "Action outcomes refused because the action's lease had passed to another daemon (several daemons on one database)",
            outcomes_fenced.clone(),
        );
        let partitions_held = Gauge::default();
        registry.register(
            "partitions_held",
            "Entity partitions this daemon processes now (several daemons on one database)",
            partitions_held.clone(),
        );
        let partition_takeovers = Counter::default();
        registry.register(
            "partition_takeovers",
            "Entity partitions this daemon took (at start, from a daemon that left or died, or rebalancing)",
            partition_takeovers.clone(),
        );
        let items_blocked = Gauge::default();
        registry.register(
            "items_blocked",
            "Items (entities and campaign channels) in a blocked stage now",
            items_blocked.clone(),
        );
        let escalations_open = Gauge::default();
        registry.register(
            "escalations_open",
            "Entities a rule escalated that have not moved (stage or owner) since",
            escalations_open.clone(),
        );
        let exception_rate = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "exception_rate_last_hour",
            "Share of the events of the last hour that raised an escalation or a rule failure",
            exception_rate.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            events_accepted,
            events_duplicate,
            events_pruned,
            events_rejected,
            events_processed,
            decisions,
            shadow_decisions,
            rule_reloads,
            rule_failures,
            actions,
            queue_depth,
            ack_latency,
            event_to_action_latency,
            action_duration,
            commit_duration,
            commit_batch_size,
            journal_events,
            storage_errors,
            storage_failing,
            timers_fired,
            timers_skipped,
            schedules_fired,
            schedules_skipped,
            poll_pages,
            poll_failures,
            timers_pending,
            events_emitted,
            sends_held,
            sends_released,
            gate_overrides,
            held_sends,
            actions_dead_lettered,
            dead_letters,
            dead_letters_retried,
            dead_letters_dropped,
            timers_cancelled_by_people,
            connections_timed_out,
            connections_refused,
            outcomes_fenced,
            partitions_held,
            partition_takeovers,
            items_blocked,
            escalations_open,
            exception_rate,
            headline_read_at: Arc::new(std::sync::Mutex::new(None)),
            sources: SourceActivity::default(),
        }
    }

    /// Whether the headline gauges are due for a new read (and marks them read).
    pub fn headline_due(&self) -> bool {
        let mut read_at = self.headline_read_at.lock().expect("headline lock");
        let due = read_at.is_none_or(|at| at.elapsed() >= HEADLINE_EVERY);
        if due {
            *read_at = Some(std::time::Instant::now());
        }
        due
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn rejected(&self, reason: RejectReason, detail: &str) {
        tracing::debug!(?reason, detail, "event rejected");
        self.events_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn timer_fired(&self, timer_id: i64, event_type: &str, entity: &str, late: bool) {
        tracing::debug!(timer_id, event_type, entity, late, "timer fired");
        self.timers_fired.inc();
    }

    pub fn timer_skipped(&self, timer_id: i64, event_type: &str, entity: &str) {
        tracing::debug!(
            timer_id,
            event_type,
            entity,
            "timer fell due while converge was down; skipped by its catch-up policy"
        );
        self.timers_skipped.inc();
    }

    /// A new rule set is in place; `rules` is `name@hash` of each rule.
    pub fn rules_reloaded(&self, cause: &str, rules: &[String]) {
        tracing::info!(cause, rules = %rules.join(", "), "rules reloaded");
        self.rule_reloads
            .get_or_create(&ReloadLabel {
                outcome: ReloadOutcome::Ok,
            })
            .inc();
    }

    /// A reload failed and the rules loaded before keep running; every
    /// error is `file:line:column: message`.
    pub fn rules_reload_failed(&self, cause: &str, errors: &[String]) {
        tracing::error!(
            cause,
            "rules not reloaded; the rules loaded before keep running:\n  {}",
            errors.join("\n  ")
        );
        self.rule_reloads
            .get_or_create(&ReloadLabel {
                outcome: ReloadOutcome::Failed,
            })
            .inc();
    }

    pub fn send_held(&self, campaign: &str, channel: &str, event_id: &str, reason: &str) {
        tracing::debug!(campaign, channel, event_id, reason, "send held by the gate");
        self.sends_held.inc();
    }

    pub fn sends_released(&self, campaign: &str, channel: &str, count: usize, by: &str) {
        tracing::debug!(campaign, channel, count, by, "held sends released");
        self.sends_released.inc_by(count as u64);
    }

    pub fn gate_overridden(
        &self,
        campaign: &str,
        channel: Option<&str>,
        by: &str,
        released: usize,
    ) {
        tracing::warn!(
            campaign,
            channel = channel.unwrap_or("*"),
            by,
            released,
            "gate overridden"
        );
        self.gate_overrides.inc();
    }

    /// `retryable`: it failed for a reason that may pass, but its attempts
    /// are used up.
    pub fn action_dead_lettered(
        &self,
        action: ActionNamed<'_>,
        attempts: u32,
        retryable: bool,
        error: &str,
    ) {
        let ActionNamed {
            id,
            plugin,
            route,
            event_id,
        } = action;
        tracing::error!(
            action_id = id,
            plugin,
            route,
            event_id = %event_id.escape_debug(),
            error,
            attempts,
            cause = if retryable {
                "no attempts left"
            } else {
                "permanent failure"
            },
            "action failed for good; it is a dead letter (converge dlq)"
        );
        self.actions_dead_lettered
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc();
    }

    pub fn dead_letter_retried(&self, action_id: i64, by: &str) {
        tracing::warn!(action_id, by, "dead letter retried");
        self.dead_letters_retried.inc();
    }

    pub fn dead_letter_dropped(&self, action_id: i64, by: &str) {
        tracing::warn!(action_id, by, "dead letter dropped");
        self.dead_letters_dropped.inc();
    }

    pub fn timers_cancelled(&self, rule: &str, cancelled: usize, by: &str) {
        tracing::warn!(rule, cancelled, by, "pending timers cancelled by a person");
        self.timers_cancelled_by_people.inc_by(cancelled as u64);
    }

    pub fn set_queue_depth(&self, queue: &'static str, depth: usize) {
        self.queue_depth
            .get_or_create(&QueueLabel { queue })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn action_attempt(&self, plugin: &str, outcome: ActionOutcomeLabel, took: Duration) {
        self.actions
            .get_or_create(&ActionLabels {
                plugin: plugin.to_string(),
                outcome,
            })
            .inc();
        self.action_duration.observe(took.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
