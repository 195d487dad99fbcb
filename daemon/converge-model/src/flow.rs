//! What converge remembers of an item's way through its stages, and the
//! metric samples that way produces (docs/reports.md defines each metric).
//!
//! A [`Flow`] rides along with an entity (and with each channel of a
//! campaign) so the reports need no second store of per-item history: it is
//! saved, cached, simulated and replayed with the state it belongs to. The
//! engine updates it and turns each finished span (a review decided, a block
//! lifted, a handoff picked up, a launch) into a [`Sample`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// An item's open spans and counts, as the metrics need them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// When the current review round started (a review stage entered).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::option"
    )]
    pub review_since: Option<DateTime<Utc>>,
    /// Review decisions made so far: the first one decides `approval_pass_rate`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reviews: u32,
    /// Moves back to an earlier stage (or changes requested) since the item
    /// last finished: `rework_rate` counts an item that finishes with any.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub returns: u32,
    /// When the item entered a blocked stage, while it is blocked.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::option"
    )]
    pub blocked_since: Option<DateTime<Utc>>,
    /// When the owner last changed, until the new owner's first move.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::option"
    )]
    pub handoff_since: Option<DateTime<Utc>>,
    /// Overrides of the campaign's gate since it last launched.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overrides: u32,
    /// Channels whose send was released since the campaign last launched;
    /// releasing one of them again is a corrective send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<String>,
    /// Sends released again on a channel that had already sent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub corrections: u32,
    /// When a rule escalated the item, until it moves (its stage or owner
    /// changes): an open escalation.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::option"
    )]
    pub escalated_since: Option<DateTime<Utc>>,
    /// When a campaign's first channel launched, while any of its channels
    /// is launched or done: `launch_spread` measures the later launches from it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::option"
    )]
    pub launch_began: Option<DateTime<Utc>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Flow {
    pub fn is_empty(&self) -> bool {
        *self == Flow::default()
    }
}

/// The metrics converge reports, in the order reports list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ReviewTime,
    HandoffDelay,
    BlockedWork,
    ReworkRate,
    LaunchReliability,
    LaunchSpread,
    ExceptionRate,
    CycleTime,
    ApprovalPassRate,
}

/// Whether a metric's samples are durations (median, p85) or 0/1 outcomes (a share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricShape {
    Duration,
    Rate,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::ReviewTime,
        Metric::HandoffDelay,
        Metric::BlockedWork,
        Metric::ReworkRate,
        Metric::LaunchReliability,
        Metric::LaunchSpread,
        Metric::ExceptionRate,
        Metric::CycleTime,
        Metric::ApprovalPassRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::ReviewTime => "review_time",
            Metric::HandoffDelay => "handoff_delay",
            Metric::BlockedWork => "blocked_work",
            Metric::ReworkRate => "rework_rate",
            Metric::LaunchReliability => "launch_reliability",
            Metric::LaunchSpread => "launch_spread",
            Metric::ExceptionRate => "exception_rate",
            Metric::CycleTime => "cycle_time",
            Metric::ApprovalPassRate => "approval_pass_rate",
        }
    }

    pub fn shape(self) -> MetricShape {
        match self {
            Metric::ReviewTime
            | Metric::HandoffDelay
            | Metric::BlockedWork
            | Metric::LaunchSpread
            | Metric::CycleTime => MetricShape::Duration,
            Metric::ReworkRate
            | Metric::LaunchReliability
            | Metric::ExceptionRate
            | Metric::ApprovalPassRate => MetricShape::Rate,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Metric, String> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                format!("unknown metric `{s}`: the metrics are {}", names.join(", "))
            })
    }
}

/// Which samples a report reads: one metric, within `[since_ms, until_ms)`,
/// grouped by one slice or not at all.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleQuery {
    pub metric: Metric,
    pub by: Option<Slice>,
    pub since_ms: i64,
    pub until_ms: i64,
}

/// The samples of one slice value (`None`: the samples without one, or all
/// of them when the report is not sliced).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleGroup {
    pub slice: Option<String>,
    pub samples: i64,
    /// The sum of the values: seconds, or the count of yeses.
    pub total: f64,
    /// Every value in ascending order, for a duration metric's percentiles;
    /// empty for a rate.
    pub values: Vec<f64>,
}

/// What a report says of a group: a duration's median and 85th percentile
/// in hours, or a rate's share of yeses (0 to 1); `None` without samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub median_hours: Option<f64>,
    pub p85_hours: Option<f64>,
    pub rate: Option<f64>,
}

impl SampleGroup {
    /// Counts one sample of `metric`: a duration's value is kept for the
    /// percentiles.
    pub fn add(&mut self, metric: Metric, value: f64) {
        self.samples += 1;
        self.total += value;
        if metric.shape() == MetricShape::Duration {
            self.values.push(value);
        }
    }

    /// Groups in a report's order: in slice order (from a map, whose order
    /// puts `None` first) with the samples without a slice last, each
    /// duration's values ascending.
    pub fn in_report_order(mut groups: Vec<SampleGroup>) -> Vec<SampleGroup> {
        for group in &mut groups {
            group.values.sort_by(f64::total_cmp);
        }
        let unsliced_first = groups.first().is_some_and(|g| g.slice.is_none());
        groups.rotate_left(usize::from(unsliced_first));
        groups
    }

    pub fn summary(&self, metric: Metric) -> Summary {
        match metric.shape() {
            MetricShape::Duration => Summary {
                median_hours: percentile(&self.values, 0.5).map(|s| s / 3600.0),
                p85_hours: percentile(&self.values, 0.85).map(|s| s / 3600.0),
                rate: None,
            },
            MetricShape::Rate => Summary {
                rate: (self.samples > 0).then(|| self.total / self.samples as f64),
                ..Summary::default()
            },
        }
    }
}

/// A report's bound as people write it: a date (its midnight, UTC), an
/// RFC 3339 time, or a duration before `now` (`28d`, `12h`); `None` for
/// anything else, which the caller reports in its own words.
pub fn point_in_time(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    let ago = Duration::from_std(humantime::parse_duration(text).ok()?).ok()?;
    now.checked_sub_signed(ago)
}

/// The `p` percentile (0 to 1) of ascending `values`, interpolated between
/// the two nearest (Excel's PERCENTILE.INC: the median of an even count is
/// the mean of the middle two).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let last = values.len().checked_sub(1)?;
    let rank = p * last as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    Some(values[below] + (values[above] - values[below]) * (rank - below as f64))
}

/// What a report groups samples by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slice {
    Owner,
    Campaign,
    Channel,
    Stage,
    Week,
}

impl Slice {
    pub const ALL: [Slice; 5] = [
        Slice::Owner,
        Slice::Campaign,
        Slice::Channel,
        Slice::Stage,
        Slice::Week,
    ];

    /// Also the column of `metric_samples` it reads.
    pub fn name(self) -> &'static str {
        match self {
            Slice::Owner => "owner",
            Slice::Campaign => "campaign",
            Slice::Channel => "channel",
            Slice::Stage => "stage",
            Slice::Week => "week",
        }
    }
}

impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Slice {
    type Err = String;

    fn from_str(s: &str) -> Result<Slice, String> {
        Slice::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Slice::ALL.iter().map(|x| x.name()).collect();
                format!("unknown slice `{s}`: a report is by {}", names.join(", "))
            })
    }
}

/// One measurement: a duration in seconds, or 1.0/0.0 for a rate's yes/no,
/// with the slices a report can group it by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub metric: Metric,
    /// When the span ended or the outcome was known: the report's time.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub at: DateTime<Utc>,
    pub value: f64,
    /// `kind/id` of the item measured.
    pub entity: String,
    pub campaign: Option<String>,
    pub owner: Option<String>,
    pub channel: Option<String>,
    pub stage: Option<String>,
}

impl Sample {
    /// The Monday (UTC) of the ISO week the sample falls in: the `week` slice.
    pub fn week(&self) -> NaiveDate {
        week_of(self.at)
    }

    /// The sample's value of a slice (the week as `2026-11-02`).
    pub fn slice(&self, by: Slice) -> Option<String> {
        match by {
            Slice::Owner => self.owner.clone(),
            Slice::Campaign => self.campaign.clone(),
            Slice::Channel => self.channel.clone(),
            Slice::Stage => self.stage.clone(),
            Slice::Week => Some(self.week().to_string()),
        }
    }
}

impl SampleQuery {
    /// Whether a sample at `at_ms` falls within the query's period.
    pub fn covers(&self, at_ms: i64) -> bool {
        at_ms >= self.since_ms && at_ms < self.until_ms
    }

    /// The groups of `samples` this query reads, as the store gives them:
    /// in slice order with the samples without one last, each duration's
    /// values ascending.
    pub fn group<'a>(&self, samples: impl IntoIterator<Item = &'a Sample>) -> Vec<SampleGroup> {
        self.group_values(
            samples
                .into_iter()
                .filter(|s| s.metric == self.metric && self.covers(s.at.timestamp_millis()))
                .map(|s| (self.by.and_then(|by| s.slice(by)), s.value)),
        )
    }

    /// The groups of values of this query's metric and period, each with
    /// its slice value.
    pub fn group_values(
        &self,
        values: impl IntoIterator<Item = (Option<String>, f64)>,
    ) -> Vec<SampleGroup> {
        let mut groups: std::collections::BTreeMap<Option<String>, SampleGroup> =
            std::collections::BTreeMap::new();
        for (slice, value) in values {
            groups
                .entry(slice.clone())
                .or_insert_with(|| SampleGroup {
                    slice,
                    ..SampleGroup::default()
                })
                .add(self.metric, value);
        }
        SampleGroup::in_report_order(groups.into_values().collect())
    }
}

/// The Monday of `at`'s ISO week, in UTC.
pub fn week_of(at: DateTime<Utc>) -> NaiveDate {
    let day = at.date_naive();
    day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[3.0], 0.85), Some(3.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 10.0], 0.5), Some(2.5));
        // rank 0.85 * 3 = 2.55: 3 + 0.55 * (10 - 3)
        let p85 = percentile(&[1.0, 2.0, 3.0, 10.0], 0.85).unwrap();
        assert!((p85 - 6.85).abs() < 1e-9, "{p85}");
    }

    #[test]
    fn metric_names_round_trip_and_unknown_ones_list_the_valid_ones() {
        for metric in Metric::ALL {
            assert_eq!(metric.name().parse::<Metric>(), Ok(metric));
            assert_eq!(
                serde_json::to_value(metric).unwrap(),
                serde_json::json!(metric.name())
            );
        }
        let error = "review".parse::<Metric>().unwrap_err();
        assert!(error.contains("`review`"), "{error}");
        assert!(error.contains("review_time, handoff_delay"), "{error}");
    }

    #[test]
    fn weeks_start_on_monday() {
        let sunday: DateTime<Utc> = "2026-11-29T23:59:00Z".parse().unwrap();
        let monday: DateTime<Utc> = "2026-11-30T00:00:00Z".parse().unwrap();
        assert_eq!(week_of(sunday).to_string(), "2026-11-23");
        assert_eq!(week_of(monday).to_string(), "2026-11-30");
    }

    #[test]
    fn an_empty_flow_is_not_written() {
        assert!(Flow::default().is_empty());
        assert_eq!(serde_json::to_string(&Flow::default()).unwrap(), "{}");
    }
}
