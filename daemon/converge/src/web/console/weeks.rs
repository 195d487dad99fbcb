//! The reports page's weekly groups, with the weeks that are over kept in
//! memory. A metric sample is written at its event's decision time, the
//! daemon's now, so a week that ended before the current one gets no new
//! samples: reading it once is enough. Only `converge report --rebuild`
//! rewrites past samples, from another process; a kept week is read again
//! after [`KEPT_FOR`], which bounds how long the page can show the numbers
//! from before a rebuild. The period's ragged ends (a `since` in the middle
//! of a week, the current week) are read each time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use converge_model::flow::week_of;
use converge_model::{Metric, Slice};
use converge_store::{Backend, SampleGroup, SampleQuery, StoreError};

/// How long a finished week's groups are kept.
pub const KEPT_FOR: StdDuration = StdDuration::from_secs(600);
/// Most weeks kept (metrics times weeks): years of weeks for every metric.
const MOST_KEPT: usize = 8 * 520;

/// A metric's week (its Monday), with when it was read.
type Kept = HashMap<(Metric, NaiveDate), (Instant, SampleGroup)>;

#[derive(Clone, Default)]
pub struct WeekCache(Arc<Mutex<Kept>>);

impl WeekCache {
    /// The groups by week of `query` (by week), on the daemon's clock `now`.
    pub fn groups(
        &self,
        store: &dyn Backend,
        query: &SampleQuery,
        now: DateTime<Utc>,
    ) -> Result<Vec<SampleGroup>, StoreError> {
        let (Some(since), Some(until)) = (time(query.since_ms), time(query.until_ms)) else {
            return store.sample_groups(query);
        };
        // Whole weeks inside the period that ended before the current week.
        let first = monday(week_of(since))
            + if week_of(since) == since.date_naive() && midnight(since) {
                Duration::zero()
            } else {
                Duration::days(7)
            };
        let current = monday(week_of(now));
        let end = monday(week_of(until)).min(current);
        if first >= end {
            return store.sample_groups(query);
        }
        let mut weeks: BTreeMap<String, SampleGroup> = BTreeMap::new();
        let mut add = |groups: Vec<SampleGroup>| {
            for group in groups {
                let key = group.slice.clone().unwrap_or_default();
                let into = weeks.entry(key).or_insert_with(|| SampleGroup {
                    slice: group.slice.clone(),
                    ..SampleGroup::default()
                });
                into.samples += group.samples;
                into.total += group.total;
                into.values.extend(group.values);
            }
        };
        let part = |since_ms: i64, until_ms: i64| SampleQuery {
            metric: query.metric,
            by: Some(Slice::Week),
            since_ms,
            until_ms,
        };
        if query.since_ms < first.timestamp_millis() {
            add(store.sample_groups(&part(query.since_ms, first.timestamp_millis()))?);
        }
        add(self.whole_weeks(store, query.metric, first, end)?);
        if end.timestamp_millis() < query.until_ms {
            add(store.sample_groups(&part(end.timestamp_millis(), query.until_ms))?);
        }
        Ok(weeks
            .into_values()
            .filter(|g| g.samples > 0)
            .map(|mut g| {
                g.values.sort_by(f64::total_cmp);
                g
            })
            .collect())
    }

    /// The weeks from `first` to `end` (Mondays), from memory where kept
    /// and fresh, else read in one query and kept.
    fn whole_weeks(
        &self,
        store: &dyn Backend,
        metric: Metric,
        first: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<SampleGroup>, StoreError> {
        let mondays: Vec<NaiveDate> =
            std::iter::successors(Some(first), |m| Some(*m + Duration::days(7)))
                .take_while(|m| *m < end)
                .map(|m| m.date_naive())
                .collect();
        let fresh = |at: &Instant| at.elapsed() < KEPT_FOR;
        let missing: Vec<NaiveDate> = {
            let kept = self.0.lock().expect("weeks");
            mondays
                .iter()
                .filter(|m| !kept.get(&(metric, **m)).is_some_and(|(at, _)| fresh(at)))
                .copied()
                .collect()
        };
        if let (Some(from), Some(to)) = (missing.first(), missing.last()) {
            let read = store.sample_groups(&SampleQuery {
                metric,
                by: Some(Slice::Week),
                since_ms: start_of(*from).timestamp_millis(),
                until_ms: (start_of(*to) + Duration::days(7)).timestamp_millis(),
            })?;
            let mut kept = self.0.lock().expect("weeks");
            if kept.len() + missing.len() > MOST_KEPT {
                kept.clear();
            }
            let at = Instant::now();
            for monday in &missing {
                let slice = monday.to_string();
                let group = read
                    .iter()
                    .find(|g| g.slice.as_deref() == Some(slice.as_str()))
                    .cloned()
                    .unwrap_or(SampleGroup {
                        slice: Some(slice),
                        ..SampleGroup::default()
                    });
                kept.insert((metric, *monday), (at, group));
            }
        }
        let kept = self.0.lock().expect("weeks");
        Ok(mondays
            .iter()
            .filter_map(|m| kept.get(&(metric, *m)).map(|(_, g)| g.clone()))
            .collect())
    }
}

fn time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

fn monday(week: NaiveDate) -> DateTime<Utc> {
    start_of(week)
}

fn midnight(at: DateTime<Utc>) -> bool {
    at == start_of(at.date_naive())
}

#[cfg(test)]
mod tests {
    use converge_model::Sample;
    use converge_store::{Durability, Location, Store};

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn sample(metric: Metric, time: &str, value: f64) -> Sample {
        Sample {
            metric,
            at: at(time),
            value,
            entity: "task/t-1".into(),
            campaign: None,
            owner: None,
            channel: None,
            stage: None,
        }
    }

    /// Samples on both sides of week boundaries and of the periods below.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&Location::Sqlite {
            path: dir.path().join("converge.db"),
            durability: Durability::Normal,
        })
        .unwrap();
        let times = [
            ("2026-10-31T10:00:00Z", 1.0),
            ("2026-11-01T23:59:59Z", 2.0),
            ("2026-11-02T00:00:00Z", 3.0),
            ("2026-11-04T12:00:00Z", 4.0),
            ("2026-11-10T08:00:00Z", 5.0),
            ("2026-11-16T00:00:00Z", 6.0),
            ("2026-11-24T09:00:00Z", 7.0),
            ("2026-11-30T10:00:00Z", 8.0),
        ];
        let samples: Vec<(i64, Vec<Sample>)> = times
            .iter()
            .enumerate()
            .map(|(i, (time, value))| {
                (
                    i as i64 + 1,
                    vec![sample(Metric::ReviewTime, time, *value * 3600.0)],
                )
            })
            .collect();
        store
            .replace_samples(&mut samples.into_iter().map(Ok), &[])
            .unwrap();
        (dir, store)
    }

    fn query(since: &str, until: &str) -> SampleQuery {
        SampleQuery {
            metric: Metric::ReviewTime,
            by: Some(Slice::Week),
            since_ms: at(since).timestamp_millis(),
            until_ms: at(until).timestamp_millis(),
        }
    }

    #[test]
    fn the_weeks_are_the_stores_whatever_the_period_and_the_clock() {
        let (_dir, store) = store();
        let cache = WeekCache::default();
        for (since, until, now) in [
            (
                "2026-11-01T00:00:00Z",
                "2026-12-01T00:00:00Z",
                "2026-11-26T09:00:00Z",
            ),
            (
                "2026-11-02T00:00:00Z",
                "2026-11-30T00:00:00Z",
                "2026-12-20T00:00:00Z",
            ),
            (
                "2026-10-30T12:00:00Z",
                "2026-11-24T10:00:00Z",
                "2026-11-24T10:00:00Z",
            ),
            (
                "2026-11-04T00:00:00Z",
                "2026-11-05T00:00:00Z",
                "2026-12-01T00:00:00Z",
            ),
            (
                "2026-11-10T00:00:00Z",
                "2026-11-11T00:00:00Z",
                "2026-11-10T12:00:00Z",
            ),
        ] {
            let query = query(since, until);
            // Twice: read, then kept.
            for _ in 0..2 {
                assert_eq!(
                    cache.groups(&*store, &query, at(now)).unwrap(),
                    store.sample_groups(&query).unwrap(),
                    "{since} to {until} at {now}"
                );
            }
        }
    }

    #[test]
    fn a_finished_week_is_read_once_and_the_current_week_every_time() {
        let (_dir, mut store) = store();
        let cache = WeekCache::default();
        let query = query("2026-11-02T00:00:00Z", "2026-12-01T00:00:00Z");
        let now = at("2026-11-26T09:00:00Z");
        let before = cache.groups(&*store, &query, now).unwrap();
        // The samples change behind the cache's back (a rebuild).
        store
            .replace_samples(
                &mut [
                    (
                        1,
                        vec![sample(Metric::ReviewTime, "2026-11-04T12:00:00Z", 36_000.0)],
                    ),
                    (
                        2,
                        vec![sample(Metric::ReviewTime, "2026-11-25T12:00:00Z", 72_000.0)],
                    ),
                ]
                .into_iter()
                .map(Ok),
                &[],
            )
            .unwrap();
        let after = cache.groups(&*store, &query, now).unwrap();
        let week = |groups: &[SampleGroup], monday: &str| {
            groups
                .iter()
                .find(|g| g.slice.as_deref() == Some(monday))
                .map(|g| g.values.clone())
        };
        // Finished weeks as first read (until KEPT_FOR), the current one fresh.
        assert_eq!(week(&after, "2026-11-02"), week(&before, "2026-11-02"));
        assert_eq!(week(&after, "2026-11-23"), Some(vec![72_000.0]));
    }
}
