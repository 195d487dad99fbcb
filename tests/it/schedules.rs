//! Schedules (`[[schedules]]`), end to end on a manual clock: occurrences
//! fire once each, in the schedule's time zone, and the catch-up policy
//! decides what happens to those that fell due while converge was down.

use serde_json::Value;

use crate::support::{Daemon, Workspace};

const DIGEST_RULE: &str = r#"
//! events: digest.daily
let s = event.data.schedule;
notify("ops", `digest for ${event.data.scope} at ${s.scheduled_for} late=${s.late}`);
"#;

fn workspace(start: &str, catch_up: &str) -> Workspace {
    Workspace::new(
        &[("digest", DIGEST_RULE)],
        &format!(
            r#"
[clock]
mode = "manual"
start = "{start}"

[[schedules]]
name = "daily-digest"
# 9:00 in Paris on weekdays: 08:00 UTC in winter.
cron = "0 9 * * MON-FRI"
timezone = "Europe/Paris"
type = "digest.daily"
subject = "report/blocked-work"
data = {{ scope = "blocked" }}
catch_up = "{catch_up}"
"#
        ),
    )
}

fn processed(trail: &Value) -> bool {
    !trail["processed_at_ms"].is_null()
}

fn message(trail: &Value) -> String {
    trail["decisions"][0]["decision"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn not_journaled(daemon: &Daemon, id: &str) {
    let (status, _) = daemon.get(&format!("/v1/events/{id}")).await;
    assert_eq!(
        status,
        404,
        "{id} should not be journaled\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_occurrence_fires_once_in_the_schedule_time_zone() {
    // Monday 2026-11-23, 07:00 UTC = 08:00 in Paris.
    let ws = workspace("2026-11-23T07:00:00Z", "fire_late");
    let daemon = ws.start();
    daemon.advance_clock("59m").await;
    not_journaled(&daemon, "daily-digest@2026-11-23T08:00:00Z").await;

    daemon.advance_clock("1m").await;
    let first = daemon
        .wait_for_trail("daily-digest@2026-11-23T08:00:00Z", processed)
        .await;
    assert_eq!(first["source"], "converge/schedules");
    assert_eq!(first["type"], "digest.daily");
    assert_eq!(first["subject"], "report/blocked-work");
    assert_eq!(
        message(&first),
        "digest for blocked at 2026-11-23T08:00:00Z late=false"
    );

    // A week later: Tuesday to Friday and the next Monday fired once each, the weekend not at all.
    daemon.advance_clock("7d").await;
    for day in ["24", "25", "26", "27"] {
        let trail = daemon
            .wait_for_trail(&format!("daily-digest@2026-11-{day}T08:00:00Z"), processed)
            .await;
        assert!(message(&trail).ends_with("late=false"), "{trail}");
    }
    daemon
        .wait_for_metric("converge_schedules_fired_total", 6.0)
        .await;
    let monday = daemon
        .wait_for_trail("daily-digest@2026-11-30T08:00:00Z", processed)
        .await;
    assert_eq!(
        message(&monday),
        "digest for blocked at 2026-11-30T08:00:00Z late=false"
    );
    not_journaled(&daemon, "daily-digest@2026-11-28T08:00:00Z").await;
    assert_eq!(daemon.metric("converge_schedules_fired_total").await, 6.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_occurrence_missed_while_down_fires_late_once() {
    let ws = workspace("2026-11-23T07:00:00Z", "fire_late");
    let daemon = ws.start();
    daemon.advance_clock("1h").await;
    daemon
        .wait_for_trail("daily-digest@2026-11-23T08:00:00Z", processed)
        .await;
    daemon.kill9();

    // Down from Monday to Wednesday noon: Tuesday's and Wednesday's
    // occurrences were missed; only the latest fires, late.
    ws.edit_config("2026-11-23T07:00:00Z", "2026-11-25T12:00:00Z");
    let daemon = ws.start();
    let late = daemon
        .wait_for_trail("daily-digest@2026-11-25T08:00:00Z", processed)
        .await;
    assert_eq!(
        message(&late),
        "digest for blocked at 2026-11-25T08:00:00Z late=true"
    );
    not_journaled(&daemon, "daily-digest@2026-11-24T08:00:00Z").await;
    daemon
        .wait_for_metric("converge_schedules_fired_total", 1.0)
        .await;
    daemon.terminate();

    // Started again at the same time: that occurrence is journaled already.
    let daemon = ws.start();
    daemon.advance_clock("1s").await;
    daemon.wait_for_metric("converge_journal_events", 2.0).await;
    assert_eq!(daemon.metric("converge_schedules_fired_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skip_schedule_does_not_catch_up_and_a_new_schedule_starts_now() {
    // First start on Wednesday noon: a schedule never seen before does not
    // fire the morning's occurrence.
    let ws = workspace("2026-11-25T12:00:00Z", "skip");
    let daemon = ws.start();
    daemon.advance_clock("1d").await;
    daemon
        .wait_for_trail("daily-digest@2026-11-26T08:00:00Z", processed)
        .await;
    not_journaled(&daemon, "daily-digest@2026-11-25T08:00:00Z").await;
    daemon.kill9();

    // Down until Monday: Friday's occurrence is skipped, not fired.
    ws.edit_config("2026-11-25T12:00:00Z", "2026-11-30T07:00:00Z");
    let daemon = ws.start();
    daemon
        .wait_for_metric("converge_schedules_skipped_total", 1.0)
        .await;
    not_journaled(&daemon, "daily-digest@2026-11-27T08:00:00Z").await;
    daemon.advance_clock("1h").await;
    daemon
        .wait_for_trail("daily-digest@2026-11-30T08:00:00Z", processed)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_schedule_names_its_keys() {
    let ws = Workspace::new(
        &[],
        r#"
[[schedules]]
name = "digest"
cron = "0 25 * * *"
timezone = "Europe/Atlantis"
type = "digest.daily"
catch_up = "sometimes"
"#,
    );
    let out = ws.converge(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for key in [
        "schedules[0].cron:",
        "schedules[0].timezone:",
        "schedules[0].catch_up:",
    ] {
        assert!(stderr.contains(key), "no `{key}` in:\n{stderr}");
    }
}
