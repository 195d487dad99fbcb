//! The journal's group commits during a run, from the daemon's
//! `converge_commit_duration_seconds` histogram (`GET /metrics`): how many,
//! how long on average, and how many were slow. A tail in the acknowledgement
//! latency that the commits do not show is waiting somewhere else.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

const METRIC: &str = "converge_commit_duration_seconds";
/// Commits longer than this count as slow (a bucket bound of the histogram).
const SLOW_S: f64 = 0.0128;

/// The histogram, cumulative as Prometheus writes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commits {
    pub count: u64,
    pub sum_s: f64,
    /// (upper bound in seconds, commits at most that long), ascending.
    pub buckets: Vec<(f64, u64)>,
}

impl Commits {
    /// Reads the histogram out of a Prometheus text exposition.
    pub fn parse(text: &str) -> anyhow::Result<Commits> {
        let mut commits = Commits::default();
        let mut seen_count = false;
        for line in text.lines().filter(|l| l.starts_with(METRIC)) {
            let (name, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("a metric line without a value: {line}"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("not a number in: {line}"))?;
            match &name[METRIC.len()..] {
                "_count" => {
                    commits.count = value as u64;
                    seen_count = true;
                }
                "_sum" => commits.sum_s = value,
                bucket => {
                    let Some(le) = bucket
                        .strip_prefix("_bucket{le=\"")
                        .and_then(|b| b.strip_suffix("\"}"))
                    else {
                        continue;
                    };
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse()
                            .with_context(|| format!("not a bucket bound in: {line}"))?
                    };
                    commits.buckets.push((le, value as u64));
                }
            }
        }
        if !seen_count {
            bail!("no {METRIC}_count in the daemon's metrics");
        }
        commits.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(commits)
    }

    /// What happened between `before` and `self` (the same daemon, later).
    pub fn since(&self, before: &Commits) -> Commits {
        let earlier = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0, |(_, n)| *n)
        };
        Commits {
            count: self.count.saturating_sub(before.count),
            sum_s: (self.sum_s - before.sum_s).max(0.0),
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| (le, n.saturating_sub(earlier(le))))
                .collect(),
        }
    }

    /// Several daemons' commits together.
    pub fn sum(all: &[Commits]) -> Commits {
        let mut total = Commits::default();
        for commits in all {
            total.count += commits.count;
            total.sum_s += commits.sum_s;
            for &(le, n) in &commits.buckets {
                match total.buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, sum)) => *sum += n,
                    None => total.buckets.push((le, n)),
                }
            }
        }
        total.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        total
    }

    /// How many commits took longer than `seconds` (a bucket bound).
    fn longer_than(&self, seconds: f64) -> u64 {
        let within = self
            .buckets
            .iter()
            .find(|(le, _)| *le >= seconds)
            .map_or(self.count, |(_, n)| *n);
        self.count.saturating_sub(within)
    }

    /// The smallest bucket bound the longest commit is within.
    fn longest_within(&self) -> Option<f64> {
        self.buckets
            .iter()
            .find(|(_, n)| *n >= self.count)
            .map(|(le, _)| *le)
    }

    /// The run's commits, for the `events` sent in it.
    pub fn line(&self, events: usize) -> String {
        if self.count == 0 {
            return "journal commits: none".into();
        }
        let longest = match self.longest_within() {
            Some(le) if le.is_finite() => format!("the longest under {:.1} ms", le * 1000.0),
            _ => "the longest past the largest bucket".into(),
        };
        format!(
            "journal commits: {} (one per {:.1} events), {:.2} ms on average, {} over {:.1} ms, {longest}",
            self.count,
            events as f64 / self.count as f64,
            self.sum_s * 1000.0 / self.count as f64,
            self.longer_than(SLOW_S),
            SLOW_S * 1000.0,
        )
    }
}

/// Reads the commit histogram of the daemon at `base` (http://host:port).
pub async fn fetch(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
) -> anyhow::Result<Commits> {
    let uri: hyper::Uri = format!("{base}/metrics").parse()?;
    let response = client.get(uri).await.context("GET /metrics")?;
    if !response.status().is_success() {
        bail!("GET /metrics answered {}", response.status());
    }
    let body = response.into_body().collect().await?.to_bytes();
    Commits::parse(std::str::from_utf8(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP converge_commit_duration_seconds Time one group commit took, fsync included.
# TYPE converge_commit_duration_seconds histogram
converge_commit_duration_seconds_sum 9.17
converge_commit_duration_seconds_count 8158
converge_commit_duration_seconds_bucket{le="0.0064"} 8150
converge_commit_duration_seconds_bucket{le="0.0128"} 8154
converge_commit_duration_seconds_bucket{le="0.0256"} 8157
converge_commit_duration_seconds_bucket{le="0.0512"} 8158
converge_commit_duration_seconds_bucket{le="+Inf"} 8158
converge_commit_batch_size_count 12
"#;

    #[test]
    fn the_histogram_is_read_from_the_exposition() {
        let commits = Commits::parse(TEXT).unwrap();
        assert_eq!(commits.count, 8158);
        assert_eq!(commits.sum_s, 9.17);
        assert_eq!(commits.buckets.len(), 5);
        assert_eq!(commits.buckets[0], (0.0064, 8150));
        assert_eq!(commits.buckets[4], (f64::INFINITY, 8158));
        assert_eq!(commits.longer_than(SLOW_S), 4);
        assert_eq!(commits.longest_within(), Some(0.0512));
    }

    #[test]
    fn a_run_is_the_difference_of_two_readings() {
        let after = Commits::parse(TEXT).unwrap();
        let before = Commits::parse(
            "converge_commit_duration_seconds_sum 0.17\n\
             converge_commit_duration_seconds_count 158\n\
             converge_commit_duration_seconds_bucket{le=\"0.0064\"} 150\n\
             converge_commit_duration_seconds_bucket{le=\"0.0128\"} 158\n\
             converge_commit_duration_seconds_bucket{le=\"+Inf\"} 158\n",
        )
        .unwrap();
        let run = after.since(&before);
        assert_eq!(run.count, 8000);
        assert!((run.sum_s - 9.0).abs() < 1e-9);
        assert_eq!(run.buckets[0], (0.0064, 8000));
        // A bucket the first reading lacked counts from zero.
        assert_eq!(run.buckets[2], (0.0256, 8157));
        assert_eq!(run.longer_than(SLOW_S), 4);
    }

    #[test]
    fn the_line_says_how_many_how_long_and_how_many_were_slow() {
        let commits = Commits::parse(TEXT).unwrap();
        assert_eq!(
            commits.line(81_580),
            "journal commits: 8158 (one per 10.0 events), 1.12 ms on average, 4 over 12.8 ms, the longest under 51.2 ms"
        );
        assert_eq!(Commits::default().line(10), "journal commits: none");
    }

    #[test]
    fn daemons_add_up() {
        let one = Commits::parse(TEXT).unwrap();
        let both = Commits::sum(&[one.clone(), one]);
        assert_eq!(both.count, 16316);
        assert_eq!(both.longer_than(SLOW_S), 8);
    }

    #[test]
    fn metrics_without_the_histogram_are_an_error() {
        let error = Commits::parse("converge_events_total 3\n").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("converge_commit_duration_seconds_count")
        );
    }
}
