//! `converge report` and `GET /v1/reports`: the seed metrics over a
//! period, whole or sliced by owner, campaign, channel, stage or week, as a
//! table, CSV or JSON. docs/reports.md defines every metric.
//!
//! The numbers come from `metric_samples`, which the processor writes in the
//! same transaction as each event's results, so a report always agrees with
//! the journal it was read with. Like `explain`, the command reads the
//! database directly (read-only on SQLite), with the daemon running or not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use converge_engine::flow::normalize_stage;
use converge_engine::{StageRoles, blocked_now};
use converge_model::{EntityKey, EntityState, Metric, Sample, Slice};
use converge_store::{Backend, OpenSpan, SampleGroup, SampleQuery, StoreError};
use serde::Serialize;

use crate::Exit;
use crate::config::Config;

/// The period a report covers when `--since` is not given.
const DEFAULT_PERIOD_DAYS: i64 = 28;

/// Entities read per query when counting what is blocked now.
const ENTITY_PAGE: usize = 500;

#[derive(clap::Args)]
pub struct ReportArgs {
    #[arg(long, short, default_value = "config/converge.toml")]
    config: PathBuf,
    /// One metric (default: all of them): review_time, handoff_delay,
    /// blocked_work, rework_rate, launch_reliability, launch_spread,
    /// exception_rate, cycle_time, approval_pass_rate.
    #[arg(long)]
    metric: Option<String>,
    /// Slice by owner, campaign, channel, stage or week.
    #[arg(long)]
    by: Option<String>,
    /// Start of the period: a date (2026-11-02), an RFC 3339 time, or a
    /// duration before now (28d, 12h). Default: 28 days ago.
    #[arg(long)]
    since: Option<String>,
    /// End of the period (not included), in the same forms. Default: now.
    #[arg(long)]
    until: Option<String>,
    /// table (for people), csv or json.
    #[arg(long, default_value = "table")]
    format: String,
    /// First compute every sample again from the journal (after a change
    /// of `[report]`, or a restore); the daemon must be stopped.
    #[arg(long)]
    rebuild: bool,
}

/// What a report asks for, validated: the same for the command and the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRequest {
    pub metrics: Vec<Metric>,
    pub by: Option<Slice>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl ReportRequest {
    /// Reads the parameters as the user wrote them; every error names the
    /// valid forms.
    pub fn parse(
        metric: Option<&str>,
        by: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ReportRequest, String> {
        let metrics = match metric {
            None => Metric::ALL.to_vec(),
            Some(name) => vec![name.parse()?],
        };
        let by = by.map(str::parse).transpose()?;
        let until = match until {
            None => now,
            Some(text) => point_in_time("until", text, now)?,
        };
        let since = match since {
            None => until - Duration::days(DEFAULT_PERIOD_DAYS),
            Some(text) => point_in_time("since", text, now)?,
        };
        if since >= until {
            return Err(format!(
                "the period is empty: --since {} is not before --until {}",
                rfc3339(since),
                rfc3339(until)
            ));
        }
        Ok(ReportRequest {
            metrics,
            by,
            since,
            until,
        })
    }
}

impl ReportRequest {
    /// "Blocked now" is a count of the present: it has no week, so a report
    /// by week leaves it out.
    fn counts_blocked_now(&self) -> bool {
        self.metrics.contains(&Metric::BlockedWork) && self.by != Some(Slice::Week)
    }
}

/// A date (its midnight, UTC), an RFC 3339 time, or a duration before `now`.
fn point_in_time(name: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    converge_model::point_in_time(text, now).ok_or_else(|| {
        format!(
            "--{name} `{}` is not a date (2026-11-02), an RFC 3339 time \
             (2026-11-02T09:00:00Z) or a duration before now (28d, 12h)",
            text.trim()
        )
    })
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown format `{other}`: a report is printed as table, csv or json"
            )),
        }
    }
}

/// A computed report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(serialize_with = "serialize_time")]
    pub since: DateTime<Utc>,
    #[serde(serialize_with = "serialize_time")]
    pub until: DateTime<Utc>,
    pub by: Option<Slice>,
    pub rows: Vec<Row>,
}

/// One metric for one slice value (or for everything).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub metric: Metric,
    /// The slice's value; `None` for a whole report, or for samples without one.
    pub slice: Option<String>,
    pub samples: i64,
    /// Durations: the median and 85th percentile, in hours.
    pub median_hours: Option<f64>,
    pub p85_hours: Option<f64>,
    /// Rates: the share of yeses, from 0 to 1.
    pub rate: Option<f64>,
    /// `blocked_work` only: items blocked when the report was made.
    pub blocked_now: Option<i64>,
}

/// Reads the samples of each metric asked for and computes the rows; "blocked
/// now" from the entities' states as the database has them.
pub fn compute(store: &dyn Backend, request: &ReportRequest) -> Result<Report, StoreError> {
    let blocked = blocked_counts(store, request)?;
    assemble(request, blocked, |query| store.sample_groups(query))
}

/// Items blocked now, per slice value.
type BlockedCounts = Vec<(Option<String>, i64)>;

fn blocked_counts(
    store: &dyn Backend,
    request: &ReportRequest,
) -> Result<Option<BlockedCounts>, StoreError> {
    if !request.counts_blocked_now() {
        return Ok(None);
    }
    let mut counter = BlockedCounter::new(request.by);
    each_open(store, OpenSpan::Blocked, |entity| counter.add(entity))?;
    Ok(Some(counter.finish()))
}

/// `request` by week, and `request` as asked (whole, or by its slice):
/// the console's charts and table. The weeks' groups come from
/// `weekly_groups` (the store's, or a cache of them). Unsliced, the whole
/// period is the weeks merged, so each metric's samples are read once.
pub fn weekly_and_whole(
    store: &dyn Backend,
    request: &ReportRequest,
    mut weekly_groups: impl FnMut(&SampleQuery) -> Result<Vec<SampleGroup>, StoreError>,
) -> Result<(Report, Report), StoreError> {
    let weekly = ReportRequest {
        by: Some(Slice::Week),
        ..request.clone()
    };
    if request.by.is_some() {
        let by_week = assemble(&weekly, None, weekly_groups)?;
        return Ok((by_week, compute(store, request)?));
    }
    let mut weeks: BTreeMap<Metric, Vec<SampleGroup>> = BTreeMap::new();
    let by_week = assemble(&weekly, None, |query| {
        let groups = weekly_groups(query)?;
        weeks.insert(query.metric, groups.clone());
        Ok::<_, StoreError>(groups)
    })?;
    let blocked = blocked_counts(store, request)?;
    let whole = assemble(request, blocked, |query| {
        Ok::<_, StoreError>(merged(weeks.remove(&query.metric).unwrap_or_default()))
    })?;
    Ok((by_week, whole))
}

/// Groups as one group without a slice; none when there are none.
fn merged(groups: Vec<SampleGroup>) -> Vec<SampleGroup> {
    let mut all = SampleGroup::default();
    for group in &groups {
        all.samples += group.samples;
        all.total += group.total;
        all.values.extend_from_slice(&group.values);
    }
    all.values.sort_by(f64::total_cmp);
    if groups.is_empty() {
        Vec::new()
    } else {
        vec![all]
    }
}

/// What `converge check` says about the stage roles against the stages the
/// entities have: a configured role none of whose names any entity has,
/// and each stage in use that has no role (it moves no metric).
pub fn stage_role_warnings(
    store: &dyn Backend,
    roles: &StageRoles,
) -> Result<Vec<String>, StoreError> {
    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut after: Option<EntityKey> = None;
    loop {
        let page = store.entities_after(after.as_ref(), ENTITY_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.key());
        let stages = page.iter().flat_map(|entity| {
            entity
                .stage
                .iter()
                .chain(entity.channels.values().filter_map(|c| c.stage.as_ref()))
        });
        for stage in stages {
            seen.entry(normalize_stage(stage))
                .or_insert_with(|| (stage.clone(), 0))
                .1 += 1;
        }
        if page.len() < ENTITY_PAGE {
            break;
        }
    }
    let mut warnings = Vec::new();
    if seen.is_empty() {
        return Ok(warnings);
    }
    let in_use: Vec<&str> = seen.values().map(|(name, _)| name.as_str()).collect();
    for (role, names) in roles.listed() {
        if !names
            .iter()
            .any(|name| seen.contains_key(&normalize_stage(name)))
        {
            warnings.push(format!(
                "report.stages.{}: no entity has any of the stages {}; the stages in use are {}",
                role.name(),
                quoted(names.iter().map(String::as_str)),
                quoted(in_use.iter().copied())
            ));
        }
    }
    for (name, count) in seen.values() {
        if roles.role(Some(name)).is_none() {
            warnings.push(format!(
                "stage `{name}` ({count} {}) has no role in [report.stages], so it moves no metric",
                if *count == 1 { "item" } else { "items" }
            ));
        }
    }
    Ok(warnings)
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values `/metrics` shows as gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headline {
    pub items_blocked: i64,
    pub escalations_open: i64,
    /// Over the hour before `now`; 0 without events.
    pub exception_rate: f64,
}

/// Reads the headline values: a scan of every entity, and the exception
/// samples of the last hour.
pub fn headline(store: &dyn Backend, now: DateTime<Utc>) -> Result<Headline, StoreError> {
    let mut items_blocked = 0;
    each_open(store, OpenSpan::Blocked, |entity| {
        items_blocked += blocked_now(entity).len() as i64;
    })?;
    let mut escalations_open = 0;
    each_open(store, OpenSpan::Escalated, |entity| {
        escalations_open += i64::from(entity.flow.escalated_since.is_some());
    })?;
    let exceptions = store.sample_groups(&SampleQuery {
        metric: Metric::ExceptionRate,
        by: None,
        since_ms: (now - Duration::hours(1)).timestamp_millis(),
        until_ms: now.timestamp_millis() + 1,
    })?;
    let (samples, total) = exceptions
        .iter()
        .fold((0, 0.0), |(n, t), g| (n + g.samples, t + g.total));
    Ok(Headline {
        items_blocked,
        escalations_open,
        exception_rate: if samples > 0 {
            total / samples as f64
        } else {
            0.0
        },
    })
}

/// Calls `each` with every entity that has an open span of this kind.
fn each_open(
    store: &dyn Backend,
    span: OpenSpan,
    mut each: impl FnMut(&EntityState),
) -> Result<(), StoreError> {
    let mut after: Option<EntityKey> = None;
    loop {
        let page = store.entities_with_open(span, after.as_ref(), ENTITY_PAGE)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.key());
        page.iter().for_each(&mut each);
        if page.len() < ENTITY_PAGE {
            return Ok(());
        }
    }
}

/// The same report as the database's, from samples counted as they
/// arrive (a replay's): grouped at once by metric and slice, exactly as the
/// database groups them, so memory grows with the groups (and a duration
/// metric's values, for its percentiles), not with whole samples.
#[derive(Debug)]
pub struct SampleTally {
    request: ReportRequest,
    groups: BTreeMap<(Metric, Option<String>), SampleGroup>,
}

impl SampleTally {
    pub fn new(request: ReportRequest) -> SampleTally {
        SampleTally {
            request,
            groups: BTreeMap::new(),
        }
    }

    /// Counts `sample` when the request asks for its metric and its time
    /// is in the request's window.
    pub fn add(&mut self, sample: &Sample) {
        let request = &self.request;
        if !request.metrics.contains(&sample.metric)
            || sample.at < request.since
            || sample.at >= request.until
        {
            return;
        }
        let slice = request.by.and_then(|by| sample.slice(by));
        self.groups
            .entry((sample.metric, slice.clone()))
            .or_insert_with(|| SampleGroup {
                slice,
                ..SampleGroup::default()
            })
            .add(sample.metric, sample.value);
    }

    /// The report of the samples counted, with the items blocked now among
    /// `entities` when the request counts them.
    pub fn report<'a>(&self, entities: impl IntoIterator<Item = &'a EntityState>) -> Report {
        let request = &self.request;
        let blocked = request.counts_blocked_now().then(|| {
            let mut counter = BlockedCounter::new(request.by);
            entities.into_iter().for_each(|entity| counter.add(entity));
            counter.finish()
        });
        let result: Result<Report, std::convert::Infallible> =
            assemble(request, blocked, |query| {
                Ok(SampleGroup::in_report_order(
                    self.groups
                        .range((query.metric, None)..)
                        .take_while(|((metric, _), _)| *metric == query.metric)
                        .map(|(_, group)| group.clone())
                        .collect(),
                ))
            });
        match result {
            Ok(report) => report,
            Err(never) => match never {},
        }
    }
}

/// The rows of every metric asked for, from each metric's sample groups.
fn assemble<E>(
    request: &ReportRequest,
    blocked: Option<Vec<(Option<String>, i64)>>,
    mut groups_of: impl FnMut(&SampleQuery) -> Result<Vec<SampleGroup>, E>,
) -> Result<Report, E> {
    let mut rows = Vec::new();
    for &metric in &request.metrics {
        let groups = groups_of(&SampleQuery {
            metric,
            by: request.by,
            since_ms: request.since.timestamp_millis(),
            until_ms: request.until.timestamp_millis(),
        })?;
        let mut metric_rows: Vec<Row> = groups.iter().map(|g| row(metric, g)).collect();
        if let Some(blocked) = blocked.as_ref().filter(|_| metric == Metric::BlockedWork) {
            for (slice, count) in blocked {
                match metric_rows.iter_mut().find(|r| &r.slice == slice) {
                    Some(row) => row.blocked_now = Some(*count),
                    None => metric_rows.push(Row {
                        blocked_now: Some(*count),
                        ..row(
                            metric,
                            &SampleGroup {
                                slice: slice.clone(),
                                ..SampleGroup::default()
                            },
                        )
                    }),
                }
            }
            for row in &mut metric_rows {
                row.blocked_now.get_or_insert(0);
            }
            sort_rows(&mut metric_rows);
        }
        if metric_rows.is_empty() && request.by.is_none() {
            metric_rows.push(row(metric, &SampleGroup::default()));
        }
        rows.extend(metric_rows);
    }
    Ok(Report {
        since: request.since,
        until: request.until,
        by: request.by,
        rows,
    })
}

fn row(metric: Metric, group: &SampleGroup) -> Row {
    let summary = group.summary(metric);
    Row {
        metric,
        slice: group.slice.clone(),
        samples: group.samples,
        median_hours: summary.median_hours,
        p85_hours: summary.p85_hours,
        rate: summary.rate,
        blocked_now: None,
    }
}

impl Row {
    /// The headline value: the median of a duration, the share of a rate.
    fn value_text(&self) -> String {
        match (self.median_hours, self.rate) {
            (Some(median), _) => format!("median {}", hours_text(median)),
            (None, Some(rate)) => percent_text(rate),
            (None, None) => "no samples".into(),
        }
    }

    /// One line for people: `review_time: median 5.0h, p85 15.9h (4 samples)`.
    pub fn headline(&self) -> String {
        let mut line = format!("{}: {}", self.metric, self.value_text());
        if let Some(p85) = self.p85_hours {
            let _ = write!(line, ", p85 {}", hours_text(p85));
        }
        if self.samples > 0 {
            let _ = write!(
                line,
                " ({} {})",
                self.samples,
                if self.samples == 1 {
                    "sample"
                } else {
                    "samples"
                }
            );
        }
        if let Some(blocked) = self.blocked_now {
            let _ = write!(line, "; {blocked} blocked now");
        }
        line
    }
}

impl Report {
    /// The metrics that have something to say, one line each under
    /// `metrics:`, for a replay's summary; `metrics: no samples` otherwise.
    pub fn summary_lines(&self) -> Vec<String> {
        let lines: Vec<String> = self
            .rows
            .iter()
            .filter(|row| row.samples > 0 || row.blocked_now.unwrap_or(0) > 0)
            .map(|row| format!("  {}", row.headline()))
            .collect();
        if lines.is_empty() {
            return vec!["metrics: no samples".into()];
        }
        std::iter::once("metrics:".to_string())
            .chain(lines)
            .collect()
    }
}

/// How the metrics moved between two reports of the same rows (a replay's
/// two rule sets): `rework_rate: 25.0% -> 12.5%` for each that moved.
pub fn changes(a: &Report, b: &Report) -> Vec<String> {
    let moved: Vec<String> = a
        .rows
        .iter()
        .zip(&b.rows)
        .filter(|(a, b)| a.value_text() != b.value_text())
        .map(|(a, b)| format!("  {}: {} -> {}", a.metric, a.value_text(), b.value_text()))
        .collect();
    if moved.is_empty() {
        return vec!["metrics: the same for a and b".into()];
    }
    std::iter::once("metrics (a -> b):".to_string())
        .chain(moved)
        .collect()
}

fn sort_rows(rows: &mut [Row]) {
    rows.sort_by(|a, b| match (&a.slice, &b.slice) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

/// Items blocked now, counted per slice value.
struct BlockedCounter {
    by: Option<Slice>,
    counts: Vec<(Option<String>, i64)>,
}

impl BlockedCounter {
    fn new(by: Option<Slice>) -> BlockedCounter {
        BlockedCounter {
            by,
            counts: Vec::new(),
        }
    }

    fn add(&mut self, entity: &EntityState) {
        for item in blocked_now(entity) {
            let slice = match self.by {
                None => None,
                Some(Slice::Owner) => item.owner,
                Some(Slice::Campaign) => item.campaign,
                Some(Slice::Channel) => item.channel,
                Some(Slice::Stage) => item.stage,
                // `counts_blocked_now` keeps weeks out.
                Some(Slice::Week) => return,
            };
            match self.counts.iter_mut().find(|(s, _)| *s == slice) {
                Some((_, n)) => *n += 1,
                None => self.counts.push((slice, 1)),
            }
        }
    }

    fn finish(mut self) -> Vec<(Option<String>, i64)> {
        if self.counts.is_empty() && self.by.is_none() {
            self.counts.push((None, 0));
        }
        self.counts
    }
}

impl Report {
    /// The table for people: one line per metric and slice value; a metric's
    /// blank cells are the columns that do not apply to it, and a column
    /// that applies to none of the rows is left out.
    pub fn table(&self) -> String {
        let by = self.by.map_or("", |b| b.name());
        let mut header = vec!["metric"];
        if self.by.is_some() {
            header.push(by);
        }
        header.extend(["samples", "median", "p85", "rate", "blocked now"]);
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(ToString::to_string).collect()];
        for row in &self.rows {
            let mut line = vec![row.metric.to_string()];
            if self.by.is_some() {
                line.push(row.slice.clone().unwrap_or_else(|| "(none)".into()));
            }
            line.push(row.samples.to_string());
            line.push(row.median_hours.map(hours_text).unwrap_or_default());
            line.push(row.p85_hours.map(hours_text).unwrap_or_default());
            line.push(row.rate.map(percent_text).unwrap_or_default());
            line.push(row.blocked_now.map(|n| n.to_string()).unwrap_or_default());
            lines.push(line);
        }
        // A column no row fills (a rate's median, a duration's rate) is left out.
        let first_value = if self.by.is_some() { 3 } else { 2 };
        let filled: Vec<bool> = (0..lines[0].len())
            .map(|i| i < first_value || lines[1..].iter().any(|l| !l[i].is_empty()))
            .collect();
        let lines: Vec<Vec<String>> = lines
            .into_iter()
            .map(|line| {
                line.into_iter()
                    .zip(&filled)
                    .filter(|(_, keep)| **keep)
                    .map(|(cell, _)| cell)
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        // Numbers line up on the right, names on the left.
        let first_number = if self.by.is_some() { 2 } else { 1 };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} to {} (UTC){}",
            rfc3339(self.since),
            rfc3339(self.until),
            self.by.map(|b| format!(", by {b}")).unwrap_or_default()
        );
        for line in &lines {
            let cells: Vec<String> = line
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    if i < first_number {
                        format!("{cell:<w$}", w = widths[i])
                    } else {
                        format!("{cell:>w$}", w = widths[i])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        out
    }

    /// CSV with a header; hours and rates as plain numbers, empty when they do not apply.
    pub fn csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let by = self.by.map_or("slice", |b| b.name());
        let _ = writer.write_record([
            "metric",
            by,
            "samples",
            "median_hours",
            "p85_hours",
            "rate",
            "blocked_now",
        ]);
        for row in &self.rows {
            let _ = writer.write_record([
                row.metric.to_string(),
                row.slice.clone().unwrap_or_default(),
                row.samples.to_string(),
                row.median_hours.map(number_text).unwrap_or_default(),
                row.p85_hours.map(number_text).unwrap_or_default(),
                row.rate.map(number_text).unwrap_or_default(),
                row.blocked_now.map(|n| n.to_string()).unwrap_or_default(),
            ]);
        }
        let bytes = writer.into_inner().unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.table(),
            Format::Csv => self.csv(),
            Format::Json => self.json(),
        }
    }
}

pub(crate) fn hours_text(hours: f64) -> String {
    format!("{hours:.1}h")
}

pub(crate) fn percent_text(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// At most 4 decimals, without trailing zeros: stable across platforms.
fn number_text(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn serialize_time<S: serde::Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*time))
}

/// The config, with the environment only for the database password
/// (`storage.password_env`); an error is printed and exits 2.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path, &|name| std::env::var(name).ok()).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Invalid.into()
    })
}

/// A read-only connection to the config's database (on SQLite, the daemon
/// may be running); an error is printed and exits 1.
fn open_reader(config: &Config) -> Result<converge_store::Store, ExitCode> {
    let database = &config.storage.location;
    converge_store::Store::open_reader(database).map_err(|e| {
        eprintln!("error: cannot read {database}: {e}");
        for warning in config.storage_warnings() {
            eprintln!("note: {warning}");
        }
        Exit::Failure.into()
    })
}

pub fn run(args: &ReportArgs) -> ExitCode {
    let now = Utc::now();
    let parsed = args.format.parse::<Format>().and_then(|format| {
        ReportRequest::parse(
            args.metric.as_deref(),
            args.by.as_deref(),
            args.since.as_deref(),
            args.until.as_deref(),
            now,
        )
        .map(|request| (format, request))
    });
    let (format, request) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Invalid.into();
        }
    };
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let database = &config.storage.location;
    if args.rebuild {
        let rebuilt = converge_store::Store::open(database)
            .map_err(|e| format!("cannot open {database}: {e}"))
            .and_then(|mut store| rebuild(&mut store, &config));
        match rebuilt {
            Ok(rebuilt) => eprintln!(
                "rebuilt {} metric samples from {} events ({} entities' flows)",
                rebuilt.samples, rebuilt.events, rebuilt.entities
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Failure.into();
            }
        }
    }
    let store = match open_reader(&config) {
        Ok(store) => store,
        Err(exit) => return exit,
    };
    match compute(&*store, &request) {
        Ok(report) => {
            print!("{}", report.render(format));
            Exit::Ok.into()
        }
        Err(e) => {
            eprintln!("error: cannot read the metrics from {database}: {e}");
            Exit::Failure.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_tally_groups_samples_by_slice_within_the_window_as_they_arrive() {
        let sample = |metric, at_text: &str, value, owner: Option<&str>| Sample {
            metric,
            at: at(at_text),
            value,
            entity: "task/T-1".into(),
            campaign: None,
            owner: owner.map(Into::into),
            channel: None,
            stage: None,
        };
        let mut tally = SampleTally::new(ReportRequest {
            metrics: vec![Metric::ReviewTime, Metric::ExceptionRate],
            by: Some(Slice::Owner),
            since: at("2026-11-02T00:00:00Z"),
            until: at("2026-11-09T00:00:00Z"),
        });
        for s in [
            sample(
                Metric::ReviewTime,
                "2026-11-03T10:00:00Z",
                7200.0,
                Some("ana"),
            ),
            sample(
                Metric::ReviewTime,
                "2026-11-04T10:00:00Z",
                3600.0,
                Some("ana"),
            ),
            sample(Metric::ReviewTime, "2026-11-05T10:00:00Z", 36000.0, None),
            // Outside the window, and a metric not asked for.
            sample(Metric::ReviewTime, "2026-11-09T00:00:00Z", 1.0, Some("ana")),
            sample(Metric::ReworkRate, "2026-11-05T10:00:00Z", 1.0, Some("ana")),
            sample(
                Metric::ExceptionRate,
                "2026-11-05T10:00:00Z",
                1.0,
                Some("bo"),
            ),
            sample(
                Metric::ExceptionRate,
                "2026-11-06T10:00:00Z",
                0.0,
                Some("bo"),
            ),
        ] {
            tally.add(&s);
        }
        let report = tally.report([]);
        // metric, slice, samples, median (hours), rate
        type Line<'a> = (Metric, Option<&'a str>, i64, Option<f64>, Option<f64>);
        let rows: Vec<Line> = report
            .rows
            .iter()
            .map(|r| {
                (
                    r.metric,
                    r.slice.as_deref(),
                    r.samples,
                    r.median_hours,
                    r.rate,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (Metric::ReviewTime, Some("ana"), 2, Some(1.5), None),
                (Metric::ReviewTime, None, 1, Some(10.0), None),
                (Metric::ExceptionRate, Some("bo"), 2, None, Some(0.5)),
            ]
        );
    }

    #[test]
    fn periods_are_dates_times_or_durations_before_now() {
        let now = at("2026-12-02T10:00:00Z");
        let r = ReportRequest::parse(None, Some("week"), Some("2026-11-02"), None, now).unwrap();
        assert_eq!(r.since, at("2026-11-02T00:00:00Z"));
        assert_eq!(r.until, now);
        assert_eq!(r.by, Some(Slice::Week));
        assert_eq!(r.metrics, Metric::ALL);
        let r = ReportRequest::parse(Some("rework_rate"), None, Some("12h"), None, now).unwrap();
        assert_eq!(r.since, at("2026-12-01T22:00:00Z"));
        assert_eq!(r.metrics, vec![Metric::ReworkRate]);
        let r =
            ReportRequest::parse(None, None, None, Some("2026-11-30T12:00:00+01:00"), now).unwrap();
        assert_eq!(r.until, at("2026-11-30T11:00:00Z"));
        assert_eq!(r.since, at("2026-11-02T11:00:00Z"));
    }

    #[test]
    fn a_table_leaves_out_the_columns_no_row_fills() {
        let report = Report {
            since: at("2026-11-01T00:00:00Z"),
            until: at("2026-12-01T00:00:00Z"),
            by: Some(Slice::Owner),
            rows: vec![
                Row {
                    metric: Metric::ReviewTime,
                    slice: Some("ana".into()),
                    samples: 2,
                    median_hours: Some(5.0),
                    p85_hours: Some(5.7),
                    rate: None,
                    blocked_now: None,
                },
                Row {
                    metric: Metric::ReviewTime,
                    slice: None,
                    samples: 1,
                    median_hours: Some(24.0),
                    p85_hours: Some(24.0),
                    rate: None,
                    blocked_now: None,
                },
            ],
        };
        assert_eq!(
            report.table(),
            "2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z (UTC), by owner\n\
             metric       owner   samples  median    p85\n\
             review_time  ana           2    5.0h   5.7h\n\
             review_time  (none)        1   24.0h  24.0h\n"
        );
    }

    #[test]
    fn bad_parameters_name_the_valid_ones() {
        let now = at("2026-12-02T10:00:00Z");
        let error = ReportRequest::parse(Some("speed"), None, None, None, now).unwrap_err();
        assert!(error.contains("unknown metric `speed`"), "{error}");
        assert!(error.contains("approval_pass_rate"), "{error}");
        let error = ReportRequest::parse(None, Some("team"), None, None, now).unwrap_err();
        assert_eq!(
            error,
            "unknown slice `team`: a report is by owner, campaign, channel, stage, week"
        );
        let error = ReportRequest::parse(None, None, Some("last tuesday"), None, now).unwrap_err();
        assert!(
            error.starts_with("--since `last tuesday` is not a date"),
            "{error}"
        );
        let error = ReportRequest::parse(None, None, Some("2026-12-05"), None, now).unwrap_err();
        assert!(error.starts_with("the period is empty"), "{error}");
        assert!(
            "xml"
                .parse::<Format>()
                .unwrap_err()
                .contains("table, csv or json")
        );
    }
}

/// `converge export`: the decisions and actions of a period as NDJSON.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[arg(long, short, default_value = "config/converge.toml")]
    config: PathBuf,
    /// Start of the period (events received from then on), in the forms of
    /// `converge report`. Default: 28 days ago.
    #[arg(long)]
    since: Option<String>,
    /// End of the period (not included). Default: now.
    #[arg(long)]
    until: Option<String>,
}

/// Trails read per query while exporting.
const EXPORT_PAGE: usize = 500;

pub fn export(args: &ExportArgs) -> ExitCode {
    let now = Utc::now();
    let request = match ReportRequest::parse(
        None,
        None,
        args.since.as_deref(),
        args.until.as_deref(),
        now,
    ) {
        Ok(request) => request,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Invalid.into();
        }
    };
    let store = match load(&args.config).and_then(|config| open_reader(&config)) {
        Ok(store) => store,
        Err(exit) => return exit,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match export_lines(&*store, &request, &mut out) {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failure.into()
        }
    }
}

/// One line per decision of the events received in the period, in journal
/// order: the event (`seq`, `id`, `type`, `subject`, `received_at`), the
/// rule, the decision and its trace, `shadow`, and its actions with their
/// outcome; and one per rule failure (`failure` in place of `decision`).
fn export_lines(
    store: &dyn Backend,
    request: &ReportRequest,
    out: &mut impl std::io::Write,
) -> Result<(), String> {
    let (since, until) = (
        request.since.timestamp_millis(),
        request.until.timestamp_millis(),
    );
    let time = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
    };
    let mut after = 0;
    loop {
        let trails = store
            .trails_after(after, EXPORT_PAGE)
            .map_err(|e| format!("cannot read the journal: {e}"))?;
        let Some(last) = trails.last() else { break };
        after = last.seq;
        for trail in trails
            .iter()
            .filter(|t| (since..until).contains(&t.received_at_ms))
        {
            let event = serde_json::json!({
                "seq": trail.seq,
                "id": trail.id,
                "source": trail.source,
                "type": trail.ty,
                "subject": trail.subject,
                "received_at": time(trail.received_at_ms),
            });
            for decision in &trail.decisions {
                let line = serde_json::json!({
                    "event": event,
                    "rule": decision.decision.rule,
                    "rule_hash": decision.decision.rule_hash,
                    "decision": decision.decision.kind,
                    "trace": decision.decision.trace,
                    "shadow": decision.shadow,
                    "actions": decision.actions,
                });
                writeln!(out, "{line}").map_err(|e| format!("cannot write: {e}"))?;
            }
            for failure in &trail.rule_failures {
                let line = serde_json::json!({
                    "event": event,
                    "rule": failure.rule,
                    "rule_hash": failure.rule_hash,
                    "failure": failure.message,
                });
                writeln!(out, "{line}").map_err(|e| format!("cannot write: {e}"))?;
            }
        }
        if trails.len() < EXPORT_PAGE {
            break;
        }
    }
    out.flush().map_err(|e| format!("cannot write: {e}"))
}

/// Journal entries read per query while rebuilding.
const REBUILD_PAGE: usize = 500;

/// What a rebuild did.
#[derive(Debug, Default, PartialEq)]
pub struct Rebuilt {
    pub events: u64,
    pub samples: u64,
    pub entities: u64,
}

/// `converge report --rebuild`: every metric sample computed again from
/// the journal, with the config's stage roles, by the engine on the
/// decisions the daemon recorded (not on today's rules), and the entities'
/// `flow` with them; the old samples replaced in one transaction. For a
/// changed `[report]` config or a restored database. The daemon must be
/// stopped: it writes samples and flows too.
pub fn rebuild(store: &mut converge_store::Store, config: &Config) -> Result<Rebuilt, String> {
    refuse_if_running(&**store, config)?;
    let engine = converge_engine::Engine {
        routes: Vec::new(),
        max_emit_depth: config.rules.max_emit_depth,
        stages: std::sync::Arc::new(config.report.clone()),
    };
    let processed_up_to = if config.storage.location.is_shared() {
        i64::MAX
    } else {
        store.processed_cursor().map_err(|e| e.to_string())?
    };
    let mut gates = converge_engine::Gates::default();
    let mut states: std::collections::HashMap<EntityKey, EntityState> =
        std::collections::HashMap::new();
    // Each event's samples go to a temporary file as they are made and are
    // read back into the replacing transaction: a year of events would
    // otherwise hold hundreds of MiB of samples in memory.
    let mut spill = SampleSpill::new()?;
    let mut rebuilt = Rebuilt::default();
    let mut after = 0;
    loop {
        let events = store
            .events_after(after, REBUILD_PAGE)
            .map_err(|e| format!("cannot read the journal: {e}"))?;
        let Some(last) = events.last() else { break };
        let trails: std::collections::HashMap<i64, converge_store::EventTrail> = store
            .trails_after(after, REBUILD_PAGE)
            .map_err(|e| format!("cannot read the journal: {e}"))?
            .into_iter()
            .map(|t| (t.seq, t))
            .collect();
        after = last.seq;
        for journaled in &events {
            let Some(trail) = trails.get(&journaled.seq) else {
                continue;
            };
            // Not processed yet: the daemon will, and write its samples then.
            if journaled.seq > processed_up_to || trail.processed_at_ms.is_none() {
                continue;
            }
            let Ok(event) = converge_model::Event::from_journal(&journaled.json) else {
                continue;
            };
            let recorded = converge_rules::Evaluation {
                decisions: trail
                    .decisions
                    .iter()
                    .filter(|d| !d.shadow)
                    .map(|d| d.decision.clone())
                    .collect(),
                failures: trail.rule_failures.clone(),
                notes: Vec::new(),
            };
            let key = event.entity_key();
            let outcome = engine.redecide(
                recorded,
                converge_engine::Input {
                    seq: journaled.seq,
                    event: &event,
                    entity: key.as_ref().and_then(|key| states.remove(key)),
                    clock: crate::processor::millis_to_time(journaled.received_at_ms),
                    entities: None,
                },
                &mut gates,
            )?;
            if let Some(state) = outcome.entity {
                states.insert(state.key(), state);
            }
            rebuilt.events += 1;
            rebuilt.samples += outcome.samples.len() as u64;
            if !outcome.samples.is_empty() {
                spill.push(journaled.seq, &outcome.samples)?;
            }
        }
        if events.len() < REBUILD_PAGE {
            break;
        }
    }
    // The stored states keep everything but their flows, which are rebuilt.
    let keys: Vec<EntityKey> = states.keys().cloned().collect();
    let mut entities = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(REBUILD_PAGE) {
        for mut stored in store.entities(chunk).map_err(|e| e.to_string())? {
            let Some(fresh) = states.get(&stored.key()) else {
                continue;
            };
            stored.flow = fresh.flow.clone();
            for (name, channel) in &mut stored.channels {
                channel.flow = fresh
                    .channels
                    .get(name)
                    .map(|c| c.flow.clone())
                    .unwrap_or_default();
            }
            entities.push(stored);
        }
    }
    rebuilt.entities = entities.len() as u64;
    store
        .replace_samples(&mut spill.read_back()?, &entities)
        .map_err(|e| format!("cannot write the rebuilt samples: {e}"))?;
    Ok(rebuilt)
}

/// Rebuilt samples on their way to the store: one JSON line per event,
/// `[seq, [samples]]`, in an unnamed temporary file (gone when dropped).
struct SampleSpill {
    file: std::io::BufWriter<std::fs::File>,
}

impl SampleSpill {
    fn new() -> Result<SampleSpill, String> {
        let file = tempfile::tempfile()
            .map_err(|e| format!("cannot create a temporary file for the samples: {e}"))?;
        Ok(SampleSpill {
            file: std::io::BufWriter::new(file),
        })
    }

    fn push(&mut self, seq: i64, samples: &[Sample]) -> Result<(), String> {
        use std::io::Write;
        serde_json::to_writer(&mut self.file, &(seq, samples))
            .map_err(|e| e.to_string())
            .and_then(|()| self.file.write_all(b"\n").map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot write the samples to a temporary file: {e}"))
    }

    /// The samples written, in order, read as the store takes them.
    fn read_back(
        self,
    ) -> Result<impl Iterator<Item = Result<(i64, Vec<Sample>), converge_store::StoreError>>, String>
    {
        use std::io::Seek;
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| format!("cannot write the samples to a temporary file: {e}"))?;
        file.rewind()
            .map_err(|e| format!("cannot read the samples back: {e}"))?;
        Ok(
            serde_json::Deserializer::from_reader(std::io::BufReader::new(file))
                .into_iter::<(i64, Vec<Sample>)>()
                .map(|item| item.map_err(converge_store::StoreError::from)),
        )
    }
}

/// A running daemon writes samples and flows as it processes events: a
/// rebuild waits for it to stop.
fn refuse_if_running(store: &dyn Backend, config: &Config) -> Result<(), String> {
    if config.storage.location.is_shared() {
        let daemons = crate::cluster::members(store).map_err(|e| e.to_string())?;
        if !daemons.is_empty() {
            return Err(format!(
                "{} daemon(s) share this database now: stop them before --rebuild",
                daemons.len()
            ));
        }
        return Ok(());
    }
    let listen = config.server.listen;
    if std::net::TcpStream::connect_timeout(&listen, std::time::Duration::from_millis(300)).is_ok()
    {
        return Err(format!(
            "a daemon answers at {listen} (server.listen): stop it before --rebuild"
        ));
    }
    Ok(())
}
