//! Schedules: events on a cron calendar (`[[schedules]]` in the config), such
//! as a daily digest of blocked work or a weekly review point.
//!
//! Each occurrence is journaled as an event with the id
//! `<schedule>@<occurrence time in UTC>` from the source
//! `converge/schedules`. The journal is the schedule's only state: its
//! deduplication on (source, id) makes an occurrence fire once whatever
//! crashes around it, and the last occurrence journaled tells, at start,
//! which ones fell due while converge was down. Those follow the schedule's
//! catch-up policy: `fire_late` journals the most recent missed occurrence
//! once, with `"late": true`; `skip` journals none. A schedule seen for the
//! first time starts with the next occurrence.
//!
//! Occurrences are computed in the schedule's time zone (so "9:00 on
//! weekdays" follows daylight saving time) on the daemon's `Clock`, so a
//! manual clock moves schedules too.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use converge_model::{CatchUp, Event, OwnEvent};
use converge_store::Store;
use croner::Cron;
use croner::parser::CronParser;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Slept, sleep_or_wait, sleep_unless_stopped};
use crate::journal::{Journal, JournalError, Stopping, room};
use crate::telemetry::Metrics;
use converge_engine::effects::data_object;

/// The source of the events schedules journal.
pub const SCHEDULE_SOURCE: &str = converge_model::sources::SCHEDULES;
/// The longest the source sleeps on the system clock without looking again,
/// so a wall-clock jump is noticed within this time.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long to wait before trying again after a storage error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// The schedules' reads, as `StorageHealth` names them while they fail.
const SCHEDULE_READS: &str = "schedule reads";
/// Most occurrences of one schedule journaled in one wake-up; more can only
/// come from a huge clock jump, and are skipped with a warning.
const MAX_OCCURRENCES_PER_WAKE: usize = 1000;

/// One `[[schedules]]` entry, validated.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Unique among schedules; the first part of each occurrence's id.
    pub name: String,
    pub cron: Cron,
    /// The expression as written, for the events and the log.
    pub cron_text: String,
    pub timezone: Tz,
    pub event_type: String,
    pub subject: Option<String>,
    /// The config's `data` table, as the events' data.
    pub data: Value,
    pub catch_up: CatchUp,
}

impl Schedule {
    /// Validates one schedule; each error starts with the field it is about
    /// (`cron: ...`).
    pub fn new(
        name: &str,
        cron: &str,
        timezone: &str,
        event_type: &str,
        subject: Option<String>,
        data: Value,
        catch_up: CatchUp,
    ) -> Result<Schedule, Vec<String>> {
        let mut errors = Vec::new();
        if !converge_model::sources::valid_name(name) {
            errors.push(format!(
                "name: `{name}` must be letters, digits, '-' or '_' (it is part of every occurrence's event id)"
            ));
        }
        // `0/15` as well as `*/15` and `0-59/15`: cron's usual forms, as
        // schedules have always been read.
        let parser = CronParser::builder().sloppy_ranges(true).build();
        let parsed = parser.parse(cron).map_err(|e| {
            errors.push(format!(
                "cron: `{cron}` is not a cron expression (minute hour day-of-month month day-of-week, with optional seconds first): {e}"
            ))
        });
        let tz = timezone.parse::<Tz>().map_err(|_| {
            errors.push(format!(
                "timezone: `{timezone}` is not an IANA time zone name like \"Europe/Paris\" or \"UTC\""
            ))
        });
        if event_type.trim().is_empty() {
            errors.push("type: must not be empty".into());
        }
        if !matches!(data, Value::Object(_)) {
            errors.push("data: must be a table".into());
        }
        match (parsed, tz) {
            (Ok(cron_parsed), Ok(tz)) if errors.is_empty() => {
                let schedule = Schedule {
                    name: name.into(),
                    cron: cron_parsed,
                    cron_text: cron.into(),
                    timezone: tz,
                    event_type: event_type.into(),
                    subject,
                    data,
                    catch_up,
                };
                if schedule.next_after(Utc::now()).is_none() {
                    return Err(vec![format!("cron: `{cron}` never occurs")]);
                }
                Ok(schedule)
            }
            _ => Err(errors),
        }
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.timezone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last occurrence at or before `at`.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&self.timezone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

pub struct ScheduleSource {
    pub schedules: Vec<Schedule>,
    /// Its own read connection: the last occurrence of each schedule. In a
    /// mutex only to make the source `Sync`; nothing else uses it.
    pub reader: std::sync::Mutex<Store>,
    pub journal: Journal,
    /// The intake budget webhooks use too: a schedule waits for room like
    /// any other source.
    pub in_flight: Arc<Semaphore>,
    pub clock: Clock,
    pub metrics: Metrics,
}

impl ScheduleSource {
    /// Journals each schedule's occurrences as they fall due, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        if self.schedules.is_empty() {
            return;
        }
        let mut clock_moved = self.clock.watch();
        let Ok(mut after) = self.catch_up(&stop).await else {
            return;
        };
        loop {
            let now = self.clock.now();
            for (schedule, after) in self.schedules.iter().zip(after.iter_mut()) {
                match self.fire_due(schedule, after, now).await {
                    Ok(()) => {}
                    Err(Stopping) => return,
                }
            }
            let next = self
                .schedules
                .iter()
                .zip(&after)
                .filter_map(|(schedule, after)| schedule.next_after(*after))
                .min();
            let wait = match (&self.clock, next) {
                (Clock::Manual(_), _) => None,
                (Clock::System, None) => Some(MAX_SLEEP),
                (Clock::System, Some(next)) => Some(
                    (next - self.clock.now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(MAX_SLEEP),
                ),
            };
            tokio::select! {
                () = sleep_or_wait(wait) => {}
                () = clock_moved.moved() => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Applies each schedule's catch-up policy and returns, per schedule,
    /// the time after which its next occurrence is due.
    async fn catch_up(&self, stop: &CancellationToken) -> Result<Vec<DateTime<Utc>>, Stopping> {
        let now = self.clock.now();
        let mut after = Vec::with_capacity(self.schedules.len());
        for schedule in &self.schedules {
            let last = loop {
                match tokio::task::block_in_place(|| {
                    self.reader
                        .lock()
                        .expect("schedule reader")
                        .last_occurrence_id(SCHEDULE_SOURCE, &schedule.name)
                }) {
                    Ok(last) => {
                        self.journal.health().succeeded(SCHEDULE_READS);
                        break last.as_deref().and_then(occurrence_time);
                    }
                    Err(e) => {
                        let error = format!("schedule {}: {e}", schedule.name);
                        let health = self.journal.health();
                        health.failed(SCHEDULE_READS, &error, RETRY_AFTER_ERROR);
                        if sleep_unless_stopped(RETRY_AFTER_ERROR, stop).await == Slept::Stopped {
                            return Err(Stopping);
                        }
                    }
                }
            };
            let missed = last.and_then(|last| {
                schedule
                    .latest_at_or_before(now)
                    .filter(|latest| *latest > last)
            });
            match (missed, schedule.catch_up) {
                (Some(missed), CatchUp::FireLate) => {
                    self.fire(schedule, missed, true).await?;
                }
                (Some(missed), CatchUp::Skip) => {
                    tracing::info!(schedule = %schedule.name, occurrence = %missed, "schedule occurrence fell due while converge was down; skipped by its catch-up policy");
                    self.metrics.schedules_skipped.inc();
                }
                (None, _) => {}
            }
            after.push(now);
        }
        Ok(after)
    }

    /// Journals every occurrence of `schedule` in (`after`, `now`], moving
    /// `after` to the last one journaled.
    async fn fire_due(
        &self,
        schedule: &Schedule,
        after: &mut DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), Stopping> {
        let mut fired = 0;
        while let Some(next) = schedule.next_after(*after).filter(|next| *next <= now) {
            if fired == MAX_OCCURRENCES_PER_WAKE {
                tracing::warn!(schedule = %schedule.name, until = %now, "the clock jumped past more than {MAX_OCCURRENCES_PER_WAKE} occurrences; the rest are skipped");
                *after = now;
                return Ok(());
            }
            self.fire(schedule, next, false).await?;
            *after = next;
            fired += 1;
        }
        Ok(())
    }

    /// Journals one occurrence, retrying storage errors until it is on disk.
    async fn fire(
        &self,
        schedule: &Schedule,
        at: DateTime<Utc>,
        late: bool,
    ) -> Result<(), Stopping> {
        let event = match occurrence_event(schedule, at, late) {
            Ok(event) => event,
            Err(e) => {
                // The config was validated; an occurrence out of chrono's range is the only way here.
                tracing::error!(schedule = %schedule.name, error = %e, "schedule cannot make a valid event; occurrence skipped");
                return Ok(());
            }
        };
        loop {
            let permit = room(&self.in_flight, 1).await?;
            match self.journal.append(vec![event.clone()], permit).await {
                Ok(appended) => {
                    let new = appended
                        .first()
                        .is_some_and(|a| matches!(a, converge_store::Appended::New { .. }));
                    if new {
                        tracing::info!(schedule = %schedule.name, occurrence = %at, late, "schedule fired");
                        self.metrics.schedules_fired.inc();
                        self.metrics
                            .sources
                            .seen(&format!("schedule/{}", schedule.name), 1);
                    }
                    return Ok(());
                }
                Err(JournalError::Closed) => return Err(Stopping),
                Err(JournalError::Storage(e)) => {
                    // The journal reports its failure (`StorageHealth`).
                    tracing::debug!(schedule = %schedule.name, error = %e, "cannot journal a schedule occurrence; retrying");
                    tokio::time::sleep(RETRY_AFTER_ERROR).await;
                }
            }
        }
    }
}

/// The id of an occurrence: `<schedule>@<UTC time, seconds>`. Ids of one
/// schedule sort in time order, which [`Backend::last_occurrence_id`](converge_store::Backend::last_occurrence_id) relies on.
pub fn occurrence_id(schedule: &str, at: DateTime<Utc>) -> String {
    format!(
        "{schedule}@{}",
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// The time of an occurrence id written by [`occurrence_id`].
fn occurrence_time(id: &str) -> Option<DateTime<Utc>> {
    let (_, time) = id.rsplit_once('@')?;
    DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The event of one occurrence: the schedule's type, subject and data, with a
/// `schedule` member (`name`, `cron`, `timezone`, `scheduled_for`, `late`).
pub fn occurrence_event(
    schedule: &Schedule,
    at: DateTime<Utc>,
    late: bool,
) -> Result<Event, String> {
    let scheduled_for = at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut data = data_object(&schedule.data);
    if let Value::Object(members) = &mut data {
        members.insert(
            "schedule".into(),
            json!({
                "name": schedule.name,
                "cron": schedule.cron_text,
                "timezone": schedule.timezone.name(),
                "scheduled_for": scheduled_for,
                "late": late,
            }),
        );
    }
    Event::own(OwnEvent {
        id: occurrence_id(&schedule.name, at),
        source: SCHEDULE_SOURCE,
        ty: &schedule.event_type,
        subject: schedule.subject.as_deref(),
        time: at,
        data,
        extensions: &[],
    })
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, timezone: &str) -> Schedule {
        Schedule::new(
            "daily-digest",
            cron,
            timezone,
            "digest.daily",
            Some("report/blocked-work".into()),
            json!({"scope": "blocked"}),
            CatchUp::FireLate,
        )
        .unwrap()
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = Schedule::new(
            "bad name",
            "61 * * * *",
            "Mars/Olympus",
            "",
            None,
            json!([]),
            CatchUp::Skip,
        )
        .unwrap_err();
        let fields: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            ["name", "cron", "timezone", "type", "data"],
            "{errors:#?}"
        );
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn occurrences_follow_the_time_zone_across_daylight_saving() {
        let s = schedule("0 9 * * MON-FRI", "Europe/Paris");
        // Friday 2026-03-27, 9:00 Paris is 08:00 UTC (winter time).
        let friday = s.next_after(utc("2026-03-27T00:00:00Z")).unwrap();
        assert_eq!(friday, utc("2026-03-27T08:00:00Z"));
        // Clocks go forward on Sunday 29th: Monday 9:00 Paris is 07:00 UTC.
        let monday = s.next_after(friday).unwrap();
        assert_eq!(monday, utc("2026-03-30T07:00:00Z"));
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-30T06:59:59Z")),
            Some(friday)
        );
        assert_eq!(s.latest_at_or_before(monday), Some(monday));
    }

    /// A daily midnight job in London ran twice on the day clocks go
    /// forward (00:00 and again at 02:00) with croner before 4.0.3.
    #[test]
    fn a_daily_occurrence_comes_once_on_the_day_clocks_go_forward() {
        let s = schedule("0 0 * * *", "Europe/London");
        // Sunday 2026-03-29: 01:00 GMT becomes 02:00 BST.
        let sunday = s.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(sunday, utc("2026-03-29T00:00:00Z"));
        assert_eq!(
            s.next_after(sunday),
            Some(utc("2026-03-29T23:00:00Z")),
            "Monday's midnight, British summer time"
        );
    }

    #[test]
    fn a_step_reads_from_a_start_a_range_or_everything() {
        let every = |cron| {
            let s = schedule(cron, "UTC");
            let first = s.next_after(utc("2026-11-23T09:01:00Z")).unwrap();
            (first, s.next_after(first).unwrap())
        };
        let quarter = (utc("2026-11-23T09:15:00Z"), utc("2026-11-23T09:30:00Z"));
        assert_eq!(every("*/15 * * * *"), quarter);
        assert_eq!(every("0/15 * * * *"), quarter);
        assert_eq!(every("0-59/15 * * * *"), quarter);
        assert_eq!(
            every("5/15 * * * *"),
            (utc("2026-11-23T09:05:00Z"), utc("2026-11-23T09:20:00Z"))
        );
    }

    #[test]
    fn occurrence_ids_sort_in_time_order_and_parse_back() {
        let a = occurrence_id("digest", utc("2026-11-23T09:00:00Z"));
        let b = occurrence_id("digest", utc("2026-11-24T09:00:00Z"));
        assert_eq!(a, "digest@2026-11-23T09:00:00Z");
        assert!(a < b);
        assert_eq!(occurrence_time(&b), Some(utc("2026-11-24T09:00:00Z")));
        assert_eq!(occurrence_time("digest@not-a-time"), None);
    }

    #[test]
    fn an_occurrence_event_carries_the_schedule() {
        let s = schedule("0 9 * * *", "UTC");
        let event = occurrence_event(&s, utc("2026-11-23T09:00:00Z"), true).unwrap();
        assert_eq!(
            (event.id.as_str(), event.source.as_str(), event.ty.as_str()),
            (
                "daily-digest@2026-11-23T09:00:00Z",
                SCHEDULE_SOURCE,
                "digest.daily"
            )
        );
        assert_eq!(event.subject.as_deref(), Some("report/blocked-work"));
        assert_eq!(
            event.data,
            json!({"scope": "blocked", "schedule": {
                "name": "daily-digest", "cron": "0 9 * * *", "timezone": "UTC",
                "scheduled_for": "2026-11-23T09:00:00Z", "late": true}})
        );
    }
}
