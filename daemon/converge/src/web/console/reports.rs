//! Reports: the seed metrics (docs/reports.md) as weekly charts with their
//! numbers beside them, and the period's table, sliced like `converge
//! report` (the same `ReportRequest`, the same `report::compute`), with a
//! CSV download of what the table shows.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use converge_model::flow::week_of;
use converge_model::{Metric, MetricShape};
use maud::{Markup, html};
use serde::Deserialize;

use super::svg::{self, Bar, Unit};
use super::{Page, Section, answer, error_page, read};
use crate::report::{self, Report, ReportRequest};
use crate::web::AppState;

/// The page's period when none is given: twelve weeks to now.
const DEFAULT_SINCE: &str = "84d";

#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    by: String,
}

impl ReportQuery {
    fn request(&self, by: Option<&str>, now: DateTime<Utc>) -> Result<ReportRequest, String> {
        let text = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_string);
        ReportRequest::parse(
            None,
            by,
            Some(text(&self.since).unwrap_or_else(|| DEFAULT_SINCE.into())).as_deref(),
            text(&self.until).as_deref(),
            now,
        )
    }

    fn by(&self) -> Option<&str> {
        Some(self.by.trim()).filter(|b| !b.is_empty())
    }

    fn query(&self) -> String {
        super::query_string(&[
            ("since", &self.since),
            ("until", &self.until),
            ("by", &self.by),
        ])
    }
}

/// `GET /ui/reports`.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ReportQuery>,
) -> Response {
    let now = state.clock.now();
    let request = match query.request(query.by(), now) {
        Ok(request) => request,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "This report cannot be made", &e),
    };
    let version = match super::version_or_unchanged(&state, &headers, now).await {
        Ok(version) => version,
        Err(unchanged) => return unchanged,
    };
    let weeks = state.console.weeks.clone();
    let loaded = read(&state, move |store| {
        report::weekly_and_whole(store, &request, |query| weeks.groups(store, query, now))
    })
    .await;
    let (weekly, table) = match loaded {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let viewer = state.console.sessions.viewer(&headers);
    let url = format!("/ui/reports{}", query.query());
    answer(|| {
        Page {
            title: "Reports",
            section: Section::Reports,
            viewer: viewer.as_ref(),
            url: &url,
            version: &version,
            now,
        }
        .render(html! {
            (form(&query, &table))
            div.charts {
                @for metric in Metric::ALL {
                    @if !(metric == Metric::BlockedWork && weekly.rows.iter().all(|r| r.metric != metric)) {
                        (chart(metric, &weekly))
                    }
                }
            }
            h2 { "The period" @if let Some(by) = table.by { ", by " (by) } }
            (table_of(&table))
            p { a.download href={"/ui/reports.csv" (query.query())} download { "Download this table as CSV" } }
            p.hint { "The same numbers as " code { "converge report" (cli_args(&query)) } "; what each metric measures is in docs/reports.md." }
        })
    })
}

/// `GET /ui/reports.csv`: the period's table as CSV.
pub async fn csv(State(state): State<AppState>, Query(query): Query<ReportQuery>) -> Response {
    let now = state.clock.now();
    let request = match query.request(query.by(), now) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    match read(&state, move |store| report::compute(store, &request)).await {
        Ok(report) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"converge-report.csv\"",
                ),
            ],
            report.csv(),
        )
            .into_response(),
        Err(page) => page,
    }
}

fn cli_args(query: &ReportQuery) -> String {
    let mut args = String::new();
    for (flag, value) in [
        ("--since", &query.since),
        ("--until", &query.until),
        ("--by", &query.by),
    ] {
        if !value.trim().is_empty() {
            args.push_str(&format!(" {flag} {}", value.trim()));
        }
    }
    if query.since.trim().is_empty() {
        args.push_str(&format!(" --since {DEFAULT_SINCE}"));
    }
    args
}

fn form(query: &ReportQuery, table: &Report) -> Markup {
    html! {
        form.filters method="get" action="/ui/reports" {
            label { "Since " input name="since" value=(query.since) placeholder=(DEFAULT_SINCE) size="12"; }
            label { "Until " input name="until" value=(query.until) placeholder="now" size="12"; }
            label { "By "
                select name="by" {
                    option value="" selected[query.by.is_empty()] { "nothing" }
                    @for slice in ["owner", "campaign", "channel", "stage", "week"] {
                        option value=(slice) selected[query.by == slice] { (slice) }
                    }
                }
            }
            button type="submit" { "Show" }
            small { (table.since.format("%Y-%m-%d %H:%M")) " to " (table.until.format("%Y-%m-%d %H:%M")) " UTC" }
        }
    }
}

fn unit(metric: Metric) -> Unit {
    match metric.shape() {
        MetricShape::Duration => Unit::Hours,
        MetricShape::Rate => Unit::Share,
    }
}

/// One metric's weeks: the median of a duration, the share of a rate.
fn chart(metric: Metric, weekly: &Report) -> Markup {
    let unit = unit(metric);
    let mut weeks = Vec::new();
    let mut monday = week_of(weekly.since);
    let last = week_of(weekly.until - Duration::milliseconds(1));
    while monday <= last {
        weeks.push(monday);
        monday += Duration::days(7);
    }
    let bars: Vec<Bar> = weeks
        .iter()
        .map(|week| {
            let row = weekly
                .rows
                .iter()
                .find(|r| r.metric == metric && r.slice.as_deref() == Some(&week.to_string()));
            Bar {
                label: week.format("%m-%d").to_string(),
                value: row.and_then(|r| match unit {
                    Unit::Hours => r.median_hours,
                    Unit::Share => r.rate,
                }),
                samples: row.map_or(0, |r| r.samples),
            }
        })
        .collect();
    let what = match unit {
        Unit::Hours => "median per week",
        Unit::Share => "share per week",
    };
    html! {
        figure.metric id=(metric.name()) {
            figcaption { b { (metric.name()) } " " small { (what) } }
            (svg::bars(metric.name(), &bars, unit))
            @if bars.iter().all(|bar| bar.samples == 0) {
                p.empty { "No samples in this period." }
            } @else {
                table.numbers {
                    tr { th { "week of" } th { (if matches!(unit, Unit::Hours) { "median" } else { "share" }) } th { "samples" } }
                    @for (week, bar) in weeks.iter().zip(&bars) {
                        @if bar.samples > 0 {
                            tr { td { (week.to_string()) } td { (bar.value.map(|v| unit.text(v)).unwrap_or_default()) } td { (bar.samples) } }
                        }
                    }
                }
            }
        }
    }
}

fn table_of(report: &Report) -> Markup {
    html! {
        table.rows #report {
            thead {
                tr {
                    th { "metric" }
                    @if let Some(by) = report.by { th { (by) } }
                    th.n { "samples" } th.n { "median" } th.n { "p85" } th.n { "rate" } th.n { "blocked now" }
                }
            }
            tbody {
                @for row in &report.rows {
                    tr data-metric=(row.metric.name()) {
                        td { (row.metric.name()) }
                        @if report.by.is_some() { td { (row.slice.as_deref().unwrap_or("(none)")) } }
                        td.n { (row.samples) }
                        td.n { (row.median_hours.map(report::hours_text).unwrap_or_default()) }
                        td.n { (row.p85_hours.map(report::hours_text).unwrap_or_default()) }
                        td.n { (row.rate.map(report::percent_text).unwrap_or_default()) }
                        td.n { (row.blocked_now.map(|n| n.to_string()).unwrap_or_default()) }
                    }
                }
            }
        }
    }
}
