//! The reporting layer's known answers: a scripted month of handoffs,
//! reviews, reworks, blocks, launches and exceptions
//! (`tests/fixtures/reports/month.ndjson`), POSTed to the real daemon on its
//! manual clock, with every metric's value worked out by hand below. The
//! same numbers come from `converge report`, `GET /v1/reports` and
//! `converge replay` of the journal, on SQLite and on PostgreSQL.

use serde_json::{Value, json};

use crate::postgres::TestDatabase;
use crate::support::{Daemon, Workspace, example_rule, repo_root};

pub const MONTH: (&str, &str) = ("2026-11-01", "2026-12-01");

fn month_events() -> Vec<Value> {
    let path = repo_root().join("tests/fixtures/reports/month.ndjson");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

pub fn month_workspace() -> Workspace {
    let rules =
        std::fs::read_to_string(repo_root().join("tests/fixtures/reports/rules.rhai")).unwrap();
    let ws = Workspace::new(
        &[("month", &rules)],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-01T00:00:00Z\"\n",
    );
    ws.listen_on_free_port();
    ws
}

async fn set_clock(daemon: &Daemon, to: &str) {
    daemon.set_clock(to).await;
}

/// Each event at its own time on the daemon's clock, until every event is
/// processed; the clock stays at the last event's time.
pub async fn play_the_month(daemon: &Daemon) {
    let events = month_events();
    for event in &events {
        set_clock(daemon, event["time"].as_str().unwrap()).await;
        let (status, body) = daemon.send_event(event).await;
        assert_eq!(status, 202, "{body}");
    }
    let last = events.last().unwrap()["id"].as_str().unwrap();
    daemon
        .wait_for_trail(last, |t| !t["processed_at_ms"].is_null())
        .await;
}

/// The headline gauges of `/metrics` right after the month's last event
/// (2026-11-26T09:00Z): T-3 is blocked, and escalated without moving
/// since; the one event of the last hour failed a rule.
async fn check_the_gauges(daemon: &Daemon) {
    let (status, text) = daemon.get("/metrics").await;
    assert_eq!(status, 200);
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(gauge("converge_items_blocked"), 1.0);
    assert_eq!(gauge("converge_escalations_open"), 1.0);
    assert_eq!(gauge("converge_exception_rate_last_hour"), 1.0);
}

/// `(metric, slice, samples, median_hours, p85_hours, rate, blocked_now)` of each row.
type Line = (
    String,
    Option<String>,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
);

fn lines(rows: &Value) -> Vec<Line> {
    let round = |v: &Value| v.as_f64().map(|x| (x * 10_000.0).round() / 10_000.0);
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"].as_str().unwrap().to_string(),
                r["slice"].as_str().map(str::to_string),
                r["samples"].as_i64().unwrap(),
                round(&r["median_hours"]),
                round(&r["p85_hours"]),
                round(&r["rate"]),
                r["blocked_now"].as_i64(),
            )
        })
        .collect()
}

fn line(
    metric: &str,
    slice: Option<&str>,
    samples: i64,
    median: Option<f64>,
    p85: Option<f64>,
    rate: Option<f64>,
    blocked_now: Option<i64>,
) -> Line {
    let round = |v: Option<f64>| v.map(|x| (x * 10_000.0).round() / 10_000.0);
    (
        metric.into(),
        slice.map(str::to_string),
        samples,
        median,
        p85,
        round(rate),
        blocked_now,
    )
}

/// The whole month, worked out by hand from month.ndjson:
/// - review_time: T-1 6h (changes requested) and 4h, T-2 2h, T-3 24h:
///   [2, 4, 6, 24] -> median 5, p85 at rank 0.85*3 = 2.55: 6 + 0.55*18 = 15.9;
/// - handoff_delay: ben->cy, cy's comment 6h later (ben's own comment does
///   not count); dee->eve, eve's stage change 2h later: median 4, p85 5.4;
/// - blocked_work: T-2 blocked 36h; T-3 blocked now;
/// - rework_rate: 6 finishes (T-1 done, T-2 done, spring and fall
///   launched, summer's email and social channels launched), T-1 had
///   changes requested: 1/6;
/// - launch_reliability: spring on its day with nothing held (yes), fall on
///   its day with the email send still held (no): 50%; summer plans no
///   launch, so its channels' launches are not measured;
/// - launch_spread: summer's social launched 18h after its email;
/// - exception_rate: 32 events, one escalated, one failed a rule: 2/32;
/// - cycle_time: T-1 72h, T-2 78h, spring 2h, fall 24h, summer's email 2h
///   and social 20h (from summer's first event): [2, 2, 20, 24, 72, 78]
///   -> median 22, p85 at rank 4.25: 72 + 0.25*6 = 73.5;
/// - approval_pass_rate: first reviews T-1 no, T-2 yes, T-3 yes: 2/3.
fn the_month() -> Vec<Line> {
    vec![
        line("review_time", None, 4, Some(5.0), Some(15.9), None, None),
        line("handoff_delay", None, 2, Some(4.0), Some(5.4), None, None),
        line(
            "blocked_work",
            None,
            1,
            Some(36.0),
            Some(36.0),
            None,
            Some(1),
        ),
        line("rework_rate", None, 6, None, None, Some(1.0 / 6.0), None),
        line("launch_reliability", None, 2, None, None, Some(0.5), None),
        line("launch_spread", None, 1, Some(18.0), Some(18.0), None, None),
        line(
            "exception_rate",
            None,
            32,
            None,
            None,
            Some(2.0 / 32.0),
            None,
        ),
        line("cycle_time", None, 6, Some(22.0), Some(73.5), None, None),
        line(
            "approval_pass_rate",
            None,
            3,
            None,
            None,
            Some(2.0 / 3.0),
            None,
        ),
    ]
}

/// `converge replay` of the month's journal, as JSON lines.
const REPLAY_THE_MONTH: [&str; 6] = [
    "replay",
    "--from-journal",
    "--json",
    "--quiet",
    "--until",
    "2026-12-01T00:00:00Z",
];

/// The metrics of a replay's summary line.
fn replayed_metrics(out: std::process::Output) -> Vec<Line> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    lines(&summary["summary"]["metrics"])
}

fn report_json(ws: &Workspace, extra: &[&str]) -> Value {
    let mut args = vec![
        "report", "--since", MONTH.0, "--until", MONTH.1, "--format", "json",
    ];
    args.extend(extra);
    let out = ws.converge(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn report_text(ws: &Workspace, extra: &[&str]) -> String {
    let mut args = vec!["report", "--since", MONTH.0, "--until", MONTH.1];
    args.extend(extra);
    let out = ws.converge(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Everything checked against the month's daemon run, whichever database it used.
async fn check_the_month(ws: &Workspace, daemon: &Daemon) {
    let report = report_json(ws, &[]);
    assert_eq!(lines(&report["rows"]), the_month(), "{report:#}");

    // Slices, worked out by hand: review time per owner (ana's two reviews,
    // 6h and 4h: p85 4 + 0.85*2), exceptions per week (the last week holds
    // both of its 9 events' exceptions).
    let by_owner = report_json(ws, &["--by", "owner", "--metric", "review_time"]);
    assert_eq!(
        lines(&by_owner["rows"]),
        vec![
            line(
                "review_time",
                Some("ana"),
                2,
                Some(5.0),
                Some(5.7),
                None,
                None
            ),
            line(
                "review_time",
                Some("cy"),
                1,
                Some(2.0),
                Some(2.0),
                None,
                None
            ),
            line(
                "review_time",
                Some("eve"),
                1,
                Some(24.0),
                Some(24.0),
                None,
                None
            ),
        ]
    );
    let by_week = report_json(ws, &["--by", "week", "--metric", "exception_rate"]);
    assert_eq!(
        lines(&by_week["rows"]),
        vec![
            line(
                "exception_rate",
                Some("2026-11-02"),
                7,
                None,
                None,
                Some(0.0),
                None
            ),
            line(
                "exception_rate",
                Some("2026-11-09"),
                9,
                None,
                None,
                Some(0.0),
                None
            ),
            line(
                "exception_rate",
                Some("2026-11-16"),
                7,
                None,
                None,
                Some(0.0),
                None
            ),
            line(
                "exception_rate",
                Some("2026-11-23"),
                9,
                None,
                None,
                Some(0.2222),
                None
            ),
        ]
    );
    let blocked = report_json(ws, &["--by", "owner", "--metric", "blocked_work"]);
    assert_eq!(
        lines(&blocked["rows"]),
        vec![
            line(
                "blocked_work",
                Some("cy"),
                1,
                Some(36.0),
                Some(36.0),
                None,
                Some(0)
            ),
            line("blocked_work", Some("eve"), 0, None, None, None, Some(1)),
        ]
    );

    // The API answers the same, on the daemon's clock.
    let (status, body) = daemon
        .get(&format!("/v1/reports?since={}&until={}", MONTH.0, MONTH.1))
        .await;
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(lines(&api["rows"]), the_month());
    let (status, csv) = daemon
        .get("/v1/reports?metric=rework_rate&by=campaign&since=30d&format=csv")
        .await;
    assert_eq!(status, 200, "{csv}");
    assert_eq!(
        csv,
        "metric,campaign,samples,median_hours,p85_hours,rate,blocked_now\n\
         rework_rate,campaign/fall,1,,,0,\n\
         rework_rate,campaign/spring,3,,,0.3333,\n\
         rework_rate,campaign/summer,2,,,0,\n"
    );
    let (status, body) = daemon.get("/v1/reports?by=team").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("a report is by owner, campaign, channel, stage, week"),
        "{body}"
    );

    // The month's decisions and failures, for a spreadsheet or a BI tool.
    let export = |since: &str| -> Vec<Value> {
        let out = ws.converge(&["export", "--since", since, "--until", MONTH.1]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let exported = export(MONTH.0);
    let summary: Vec<(&str, &str, &str)> = exported
        .iter()
        .map(|l| {
            (
                l["event"]["id"].as_str().unwrap(),
                l["rule"].as_str().unwrap(),
                l["decision"]["kind"]
                    .as_str()
                    .or(l["failure"].as_str().map(|_| "failure"))
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("m-25", "month", "hold_send"),
            ("m-27", "month", "escalate"),
            ("m-28", "month", "failure")
        ]
    );
    assert_eq!(
        exported[0]["event"]["received_at"],
        "2026-11-23T10:00:00.000Z"
    );
    let at = exported[1]["trace"]["at"].as_str().unwrap();
    assert!(at.ends_with("month.rhai:5:5"), "{:#}", exported[1]);
    assert_eq!(export("2026-11-26").len(), 1);

    // Replaying the journal computes the same metrics.
    let out = ws.converge(&REPLAY_THE_MONTH);
    assert_eq!(replayed_metrics(out), the_month());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_month_reports_the_numbers_worked_out_by_hand() {
    let ws = month_workspace();
    let daemon = ws.start();
    play_the_month(&daemon).await;
    check_the_gauges(&daemon).await;
    set_clock(&daemon, "2026-12-01T00:00:00Z").await;
    check_the_month(&ws, &daemon).await;

    // What a person reads, and what a spreadsheet or BI tool imports.
    insta::assert_snapshot!("month_table", report_text(&ws, &[]));
    insta::assert_snapshot!("month_by_owner_table", report_text(&ws, &["--by", "owner"]));
    insta::assert_snapshot!(
        "month_by_week_csv",
        report_text(&ws, &["--by", "week", "--format", "csv"])
    );
    insta::assert_snapshot!(
        "month_by_campaign_json",
        report_text(&ws, &["--by", "campaign", "--format", "json"])
    );

    // A team that names its review stage differently is told what its
    // mapping misses, from the stages the entities have.
    let out = ws.converge(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("report.stages"), "{stdout}");
    std::fs::write(
        ws.config(),
        std::fs::read_to_string(ws.config()).unwrap()
            + "\n[report.stages]\nreview = [\"Needs sign-off\"]\nblocked = [\"Stuck\"]\n",
    )
    .unwrap();
    let out = ws.converge(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The stages the entities have now: T-3 blocked, T-1 and T-2 done,
    // spring and fall launched, and summer's channels.
    for expected in [
        "warning: report.stages.review: no entity has any of the stages `Needs sign-off`; \
         the stages in use are `Blocked`, `Done`, `Launched`",
        "warning: report.stages.blocked: no entity has any of the stages `Stuck`; \
         the stages in use are `Blocked`, `Done`, `Launched`",
        "warning: stage `Blocked` (1 item) has no role in [report.stages], so it moves no metric",
    ] {
        assert!(stdout.contains(expected), "{expected}\nnot in\n{stdout}");
    }

    // Rebuilding from the journal: refused while the daemon runs; then the
    // same numbers with the same roles, and new ones with new roles.
    let running = ws.converge(&["report", "--rebuild"]);
    assert_eq!(running.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&running.stderr);
    assert!(stderr.contains("stop it before --rebuild"), "{stderr}");
    daemon.terminate();
    ws.edit_config(
        "\n[report.stages]\nreview = [\"Needs sign-off\"]\nblocked = [\"Stuck\"]\n",
        "",
    );
    let report = report_json(&ws, &["--rebuild"]);
    assert_eq!(lines(&report["rows"]), the_month(), "{report:#}");
    // With "Changes Requested" a blocked stage, T-1's first review is not
    // sent back: it runs from Nov 3 09:00 to its approval on Nov 4 13:00
    // (28h), with 18h blocked in between. Review times [2, 24, 28]: median
    // 24, p85 24 + 0.7*4; blocked spans [18, 36]: median 27, p85 18 +
    // 0.85*18; every first review passes; no finish went back.
    std::fs::write(
        ws.config(),
        std::fs::read_to_string(ws.config()).unwrap()
            + "\n[report.stages]\nblocked = [\"Blocked\", \"Changes Requested\"]\n",
    )
    .unwrap();
    let report = report_json(&ws, &["--rebuild"]);
    let mut expected = the_month();
    expected[0] = line("review_time", None, 3, Some(24.0), Some(26.8), None, None);
    expected[2] = line(
        "blocked_work",
        None,
        2,
        Some(27.0),
        Some(33.3),
        None,
        Some(1),
    );
    expected[3] = line("rework_rate", None, 6, None, None, Some(0.0), None);
    expected[8] = line("approval_pass_rate", None, 3, None, None, Some(1.0), None);
    assert_eq!(lines(&report["rows"]), expected, "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_month_reports_the_same_on_postgres() {
    let Some(db) = TestDatabase::create("a_scripted_month_reports_the_same_on_postgres") else {
        return;
    };
    let ws = month_workspace();
    db.configure(&ws, "5s");
    let daemon = ws.start_with_env(&db.env());
    play_the_month(&daemon).await;
    check_the_gauges(&daemon).await;
    set_clock(&daemon, "2026-12-01T00:00:00Z").await;
    // The commands read the database with its password from the environment.
    let with_password = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
            .args(args)
            .arg("--config")
            .arg(ws.config())
            .env(db.env()[0].0, db.env()[0].1)
            .output()
            .unwrap()
    };
    let out = with_password(&[
        "report", "--since", MONTH.0, "--until", MONTH.1, "--format", "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(lines(&report["rows"]), the_month(), "{report:#}");
    let (status, body) = daemon
        .get(&format!(
            "/v1/reports?since={}&until={}&by=owner",
            MONTH.0, MONTH.1
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let out = with_password(&[
        "report", "--since", MONTH.0, "--until", MONTH.1, "--format", "json", "--by", "owner",
    ]);
    let by_owner: Value = serde_json::from_slice(&out.stdout).unwrap();
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(lines(&api["rows"]), lines(&by_owner["rows"]));
    let out = with_password(&REPLAY_THE_MONTH);
    assert_eq!(replayed_metrics(out), the_month());

    // A rebuild waits for the daemons sharing the database to stop.
    let out = with_password(&["report", "--rebuild"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop them before --rebuild"));
    daemon.terminate();
    let out = with_password(&[
        "report",
        "--rebuild",
        "--since",
        MONTH.0,
        "--until",
        MONTH.1,
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(lines(&report["rows"]), the_month(), "{report:#}");
}

#[test]
fn bad_report_parameters_exit_2_naming_the_valid_ones() {
    let ws = Workspace::new(&[], "");
    for (args, expected) in [
        (
            vec!["report", "--metric", "speed"],
            "unknown metric `speed`: the metrics are review_time",
        ),
        (
            vec!["report", "--by", "team"],
            "unknown slice `team`: a report is by owner, campaign",
        ),
        (
            vec!["report", "--since", "yesterday-ish"],
            "--since `yesterday-ish` is not a date",
        ),
        (vec!["report", "--format", "xml"], "unknown format `xml`"),
    ] {
        let out = ws.converge(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

fn digest_workspace() -> Workspace {
    let digest = example_rule("review_point_digest");
    Workspace::new(
        &[("review_point_digest", &digest)],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-27T09:00:00Z\"\n",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_review_point_digest_reads_the_whole_team_live_and_in_replay() {
    let ws = digest_workspace();
    let daemon = ws.start();
    digest_scenario(&ws, &daemon, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_review_point_digest_reads_the_whole_team_on_postgres() {
    let Some(db) = TestDatabase::create("a_review_point_digest_reads_the_whole_team_on_postgres")
    else {
        return;
    };
    let ws = digest_workspace();
    db.configure(&ws, "5s");
    let daemon = ws.start_with_env(&db.env());
    digest_scenario(&ws, &daemon, &db.env()).await;
}

/// The Monday review point's digest (rules/review_point_digest.rhai) reads
/// the team's tasks through `entities(..)` and its numbers through
/// `report(..)`: live, the states and samples as of its event (every
/// earlier event's results committed first, even those processed in the
/// same batch), and in a replay of the journal the same.
async fn digest_scenario(ws: &Workspace, daemon: &Daemon, env: &[(&str, &str)]) {
    let task = |id: &str, subject: &str, data: Value| {
        crate::support::event(id, "task.updated", subject, data)
    };
    // One batch: the digest's event comes right after the events it must see.
    let batch: Vec<Value> = vec![
        task(
            "t1",
            "task/T-1",
            json!({"stage": "in progress", "owner": "ana"}),
        ),
        task("t2", "task/T-1", json!({"stage": "blocked"})),
        task("t3", "task/T-2", json!({"stage": "review", "owner": "ben"})),
        task("t4", "task/T-2", json!({"owner": "cy"})),
        // Handed from dee to eve, who moves it 30h later (below).
        task("t6", "task/T-3", json!({"stage": "draft", "owner": "dee"})),
        task("t7", "task/T-3", json!({"owner": "eve"})),
        crate::support::event("rw-0", "review.weekly", "review/weekly", json!({})),
    ];
    let (status, body) = daemon.send_batch(&batch).await;
    assert_eq!(status, 202, "{body}");
    let trail = daemon
        .wait_for_trail("rw-0", |t| !t["processed_at_ms"].is_null())
        .await;
    assert_eq!(
        trail["decisions"][0]["decision"]["message"],
        "Review point: 1 blocked, 0 handoffs waiting over 48h\nana:\n  blocked 0h: task/T-1 (blocked)",
        "{trail:#}"
    );
    set_clock(daemon, "2026-11-28T15:00:00Z").await;
    let (status, body) = daemon
        .send_event(&task("t8", "task/T-3", json!({"stage": "in progress"})))
        .await;
    assert_eq!(status, 202, "{body}");
    set_clock(daemon, "2026-11-30T09:00:00Z").await;
    let review = crate::support::event("rw-1", "review.weekly", "review/weekly", json!({}));
    let later = task("t5", "task/T-1", json!({"stage": "in progress"}));
    let (status, body) = daemon.send_batch(&[review, later]).await;
    assert_eq!(status, 202, "{body}");
    let expected = "Review point: 1 blocked, 1 handoffs waiting over 48h\n\
                    ana:\n  blocked 72h: task/T-1 (blocked)\n\
                    cy:\n  waiting for cy 72h: task/T-2 (review)\n\
                    Over the line in the last 7 days: handoff delay p85 30h of 1 (line 24h)";
    let trail = daemon
        .wait_for_trail("rw-1", |t| !t["processed_at_ms"].is_null())
        .await;
    assert_eq!(
        trail["decisions"][0]["decision"]["message"], expected,
        "{trail:#}"
    );
    // T-1's move right after the digest did not leak into it; and it ended the block.
    daemon
        .wait_for_trail("t5", |t| !t["processed_at_ms"].is_null())
        .await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["replay", "--from-journal", "--json", "--quiet", "--config"])
        .arg(ws.config())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let replayed: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event"] == "rw-0" || l["event"] == "rw-1")
        .collect();
    assert_eq!(replayed.len(), 2, "{stdout}");
    assert_eq!(
        replayed[0]["decision"]["message"],
        trail_message(daemon, "rw-0").await
    );
    assert_eq!(replayed[1]["decision"]["message"], expected);
}

async fn trail_message(daemon: &Daemon, id: &str) -> Value {
    let trail = daemon
        .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
        .await;
    trail["decisions"][0]["decision"]["message"].clone()
}
