//! Durable timers and emitted events, end to end on a manual clock: "48
//! hours later" is one `POST /v1/clock`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Workspace, event, example_rule, numbered_events};

const START: &str = "2026-11-23T10:00:00Z";

/// Reminds after 48h; expects approval within 24h. The reminder and the
/// missing approval are ordinary events the same rule then acts on.
const TIMERS_RULE: &str = r#"
if event.type == "task.created" {
    schedule("48h", "task.reminder", #{ level: 1 });
    expect("task.approved", "24h", "task.approval_missing");
}
if event.type == "task.reminder" {
    let timer = event.data.timer;
    notify("owner", `reminder level ${event.data.level} from ${timer.rule} late=${timer.late}`);
}
if event.type == "task.approval_missing" {
    escalate("review_owner", "no approval within 24h");
}
"#;

fn manual_clock(start: &str) -> String {
    format!("[clock]\nmode = \"manual\"\nstart = \"{start}\"\n")
}

fn workspace(rule: &str) -> Workspace {
    Workspace::new(&[("timers", rule)], &manual_clock(START))
}

fn processed(trail: &Value) -> bool {
    !trail["processed_at_ms"].is_null()
}

fn kinds(trail: &Value) -> Vec<String> {
    trail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"]["kind"].as_str().unwrap().to_string())
        .collect()
}

fn statuses(timers: &[Value]) -> Vec<(i64, String)> {
    let mut statuses: Vec<(i64, String)> = timers
        .iter()
        .map(|t| {
            (
                t["id"].as_i64().unwrap(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    statuses.sort();
    statuses
}

async fn create_task(daemon: &crate::support::Daemon, id: &str) {
    let (status, body) = daemon
        .send_event(&event(
            id,
            "task.created",
            "task/T-1",
            json!({"title": "brief"}),
        ))
        .await;
    assert_eq!(status, 202, "{body}");
    let trail = daemon.wait_for_trail(id, processed).await;
    assert_eq!(kinds(&trail), ["schedule", "expect"], "{trail}");
}

async fn not_journaled(daemon: &crate::support::Daemon, id: &str) {
    let (status, _) = daemon.get(&format!("/v1/events/{id}")).await;
    assert_eq!(
        status,
        404,
        "{id} should not be journaled\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_once_when_the_clock_passes_its_due_time() {
    let ws = workspace(TIMERS_RULE);
    let daemon = ws.start();
    create_task(&daemon, "c-1").await;
    assert_eq!(
        statuses(&daemon.timers("task/T-1").await),
        [(1, "pending".into()), (2, "pending".into())]
    );
    daemon.wait_for_metric("converge_timers_pending", 2.0).await;

    // 25h later only the expect (due at 24h) has fired.
    daemon.advance_clock("25h").await;
    let missing = daemon.wait_for_trail("timer-2", processed).await;
    assert_eq!(missing["source"], "converge/timers");
    assert_eq!(missing["type"], "task.approval_missing");
    assert_eq!(kinds(&missing), ["escalate"], "{missing}");
    not_journaled(&daemon, "timer-1").await;

    // 48h: the reminder fires, on time, and the rules act on it.
    daemon.advance_clock("23h").await;
    let reminder = daemon.wait_for_trail("timer-1", processed).await;
    assert_eq!(reminder["subject"], "task/T-1");
    assert_eq!(
        reminder["decisions"][0]["decision"]["message"], "reminder level 1 from timers late=false",
        "{reminder}"
    );
    daemon
        .wait_for_metric("converge_timers_fired_total", 2.0)
        .await;
    daemon.wait_for_metric("converge_timers_pending", 0.0).await;

    // Once: more time changes nothing.
    daemon.advance_clock("30d").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(daemon.metric("converge_timers_fired_total").await, 2.0);
    let timers = daemon.timers("task/T-1").await;
    assert_eq!(
        statuses(&timers),
        [(1, "fired".into()), (2, "fired".into())]
    );
    assert!(timers.iter().all(|t| t["fired_seq"].is_i64()), "{timers:?}");
    let (_, trails) = daemon.get("/v1/events/timer-1").await;
    let trails: Value = serde_json::from_str(&trails).unwrap();
    assert_eq!(trails["events"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expect_is_cancelled_by_the_expected_event_and_fires_otherwise() {
    let ws = workspace(TIMERS_RULE);
    let daemon = ws.start();
    create_task(&daemon, "c-1").await;
    let (status, _) = daemon
        .send_event(&event("a-1", "task.approved", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202);
    daemon.wait_for_trail("a-1", processed).await;
    assert_eq!(
        statuses(&daemon.timers("task/T-1").await),
        [(1, "pending".into()), (2, "cancelled".into())]
    );
    // The approval of another task cancels nothing of this one; without
    // an approval, T-2's expect fires.
    let (status, _) = daemon
        .send_event(&event("c-2", "task.created", "task/T-2", json!({})))
        .await;
    assert_eq!(status, 202);
    daemon.wait_for_trail("c-2", processed).await;

    daemon.advance_clock("49h").await;
    daemon.wait_for_trail("timer-1", processed).await;
    let missing = daemon.wait_for_trail("timer-4", processed).await;
    assert_eq!(missing["subject"], "task/T-2");
    assert_eq!(kinds(&missing), ["escalate"]);
    daemon.wait_for_trail("timer-3", processed).await;
    not_journaled(&daemon, "timer-2").await;
    assert_eq!(daemon.metric("converge_timers_fired_total").await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timer_due_while_converge_was_down_fires_late_after_kill_9() {
    let ws = workspace(TIMERS_RULE);
    let daemon = ws.start();
    create_task(&daemon, "c-1").await;
    daemon.kill9();

    ws.edit_config(START, "2026-11-26T10:00:00Z");
    let daemon = ws.start();
    let reminder = daemon.wait_for_trail("timer-1", processed).await;
    assert_eq!(
        reminder["decisions"][0]["decision"]["message"], "reminder level 1 from timers late=true",
        "{reminder}"
    );
    let missing = daemon.wait_for_trail("timer-2", processed).await;
    assert_eq!(kinds(&missing), ["escalate"]);
    assert_eq!(
        statuses(&daemon.timers("task/T-1").await),
        [(1, "fired".into()), (2, "fired".into())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timer_due_while_converge_was_down_is_skipped_when_its_rule_says_so() {
    let ws = workspace(&format!("//! catch_up: skip\n{TIMERS_RULE}"));
    let daemon = ws.start();
    create_task(&daemon, "c-1").await;
    daemon.kill9();

    ws.edit_config(START, "2026-11-26T10:00:00Z");
    let daemon = ws.start();
    daemon
        .wait_for_metric("converge_timers_skipped_total", 2.0)
        .await;
    assert_eq!(
        statuses(&daemon.timers("task/T-1").await),
        [(1, "skipped".into()), (2, "skipped".into())]
    );
    not_journaled(&daemon, "timer-1").await;
    not_journaled(&daemon, "timer-2").await;
    // Skipping applies to what fell due while down; new timers fire.
    create_task(&daemon, "c-2").await;
    daemon.advance_clock("49h").await;
    daemon.wait_for_trail("timer-3", processed).await;
    daemon.wait_for_trail("timer-4", processed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timer_fires_exactly_once_across_a_restart_right_after_firing() {
    let ws = workspace(TIMERS_RULE);
    let daemon = ws.start();
    create_task(&daemon, "c-1").await;
    daemon.advance_clock("49h").await;
    // Killed as soon as the firing is committed, maybe before its event
    // is processed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while statuses(&daemon.timers("task/T-1").await) != [(1, "fired".into()), (2, "fired".into())] {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.kill9();

    ws.edit_config(START, "2026-12-01T10:00:00Z");
    let daemon = ws.start();
    let reminder = daemon.wait_for_trail("timer-1", processed).await;
    assert_eq!(
        reminder["decisions"][0]["decision"]["message"],
        "reminder level 1 from timers late=false"
    );
    daemon.wait_for_trail("timer-2", processed).await;
    // An event after the restart, processed: whatever the scheduler would
    // have fired at start has been by now.
    let (status, _) = daemon
        .send_event(&event("u-1", "task.updated", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202);
    daemon.wait_for_trail("u-1", processed).await;
    daemon.wait_for_metric("converge_timers_pending", 0.0).await;
    assert_eq!(daemon.metric("converge_timers_fired_total").await, 0.0);
    for id in ["timer-1", "timer-2"] {
        let (_, trails) = daemon.get(&format!("/v1/events/{id}")).await;
        let trails: Value = serde_json::from_str(&trails).unwrap();
        assert_eq!(trails["events"].as_array().unwrap().len(), 1, "{trails}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emitted_event_is_journaled_and_processed() {
    let rule = r#"
        if event.type == "task.created" {
            emit("task.checked", #{ by: "emit" });
        }
        if event.type == "task.checked" {
            notify("ops", `checked by ${event.data.by}`);
        }
    "#;
    let ws = Workspace::new(&[("checks", rule)], "");
    let daemon = ws.start();
    let (status, _) = daemon
        .send_event(&event("c-1", "task.created", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202);
    let created = daemon.wait_for_trail("c-1", processed).await;
    assert_eq!(kinds(&created), ["emit"]);
    let checked = daemon.wait_for_trail("emit-1-1", processed).await;
    assert_eq!(checked["source"], "converge/rules");
    assert_eq!(checked["subject"], "task/T-1");
    assert_eq!(checked["type"], "task.checked");
    assert_eq!(
        checked["decisions"][0]["decision"]["message"],
        "checked by emit"
    );
    daemon
        .wait_for_metric("converge_events_emitted_total", 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emit_loop_stops_at_the_max_emit_depth() {
    let rule = r#"if event.type == "ping" { emit("ping"); }"#;
    let ws = Workspace::new(&[("loop", rule)], "");
    ws.edit_config("[rules]\n", "[rules]\nmax_emit_depth = 3\n");
    let daemon = ws.start();
    let (status, _) = daemon
        .send_event(&event("p-1", "ping", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202);
    // p-1 (seq 1) -> emit-1-1 (depth 1) -> emit-2-1 (2) -> emit-3-1 (3) -> refused.
    let last = daemon.wait_for_trail("emit-3-1", processed).await;
    assert!(last["decisions"].as_array().unwrap().is_empty(), "{last}");
    let failure = last["rule_failures"][0]["message"].as_str().unwrap();
    assert!(failure.contains("max_emit_depth (3)"), "{failure}");
    not_journaled(&daemon, "emit-4-1").await;
    assert_eq!(daemon.metric("converge_events_emitted_total").await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_manual_clock_moves_and_converge_sources_are_reserved() {
    let ws = Workspace::new(&[], "");
    let daemon = ws.start();
    let (status, body) = daemon
        .post("/v1/clock", "application/json", r#"{"advance": "1h"}"#)
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "clock_not_manual");
    let mut forged = event("timer-1", "task.reminder", "task/T-1", json!({}));
    forged["source"] = json!("converge/timers");
    let (status, body) = daemon.send_event(&forged).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reserved")
    );

    let ws = Workspace::new(&[], &manual_clock(START));
    let daemon = ws.start();
    let moved = daemon.advance_clock("48h").await;
    assert_eq!(moved["now"], "2026-11-25T10:00:00.000Z");
    let token = daemon.admin_token.as_deref();
    let (status, body) = daemon
        .post_admin("/v1/clock", token, &json!({"set": START}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = daemon
        .post_admin("/v1/clock", token, &json!({"advance": "soon"}))
        .await;
    assert_eq!(status, 400, "{body}");

    // Moving the clock fires timers and journals schedules: it takes the
    // admin token, and nothing moves without it.
    let (status, body) = daemon
        .post_admin("/v1/clock", None, &json!({"set": "2099-01-01T00:00:00Z"}))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = daemon
        .post_admin("/v1/clock", Some("guess"), &json!({"advance": "1h"}))
        .await;
    assert_eq!(status, 401, "{body}");
    let (_, now) = daemon.get("/v1/clock").await;
    assert!(now.contains("2026-11-25T10:00:00.000Z"), "{now}");
    let ws = Workspace::new(&[], &manual_clock(START));
    let daemon = ws.start_without_admin_token();
    let (status, body) = daemon
        .post_admin("/v1/clock", None, &json!({"advance": "1h"}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("clock moves are disabled: set CONVERGE_ADMIN_TOKEN"),
        "{body}"
    );
}

/// A backlog of due timers (a daemon down for days, a clock moved a month)
/// fires no faster than the rules take its events: a fired timer's event
/// holds a place in `server.max_events_in_flight` until its processing
/// commits, as an event from outside does. What is journaled and not yet
/// processed never exceeds the budget, and every timer still fires.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_of_due_timers_fires_within_the_in_flight_budget() {
    const TIMERS: usize = 400;
    const BUDGET: usize = 8;
    let ws = workspace(
        r#"
if event.type == "task.created" { schedule("1h", "task.reminder", #{}); }
if event.type == "task.reminder" { notify("owner", "reminder"); }
"#,
    );
    ws.edit_config(
        "max_body_bytes = 65536",
        &format!("max_body_bytes = 65536\nmax_events_in_flight = {BUDGET}"),
    );
    let daemon = ws.start();
    let ids: Vec<usize> = (0..TIMERS).collect();
    for chunk in ids.chunks(BUDGET) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| {
                let subject = format!("task/T-{i}");
                event(&format!("t-{i}"), "task.created", &subject, json!({}))
            })
            .collect();
        // A full budget answers 503 after a wait: sent again, as a sender would.
        loop {
            let (status, body) = daemon.send_batch(&events).await;
            if status == 202 {
                break;
            }
            assert_eq!(status, 503, "{body}");
        }
    }
    daemon
        .wait_for_metric("converge_timers_pending", TIMERS as f64)
        .await;

    daemon.advance_clock("2h").await;
    let lag = || async {
        let (_, status) = daemon.get("/v1/status").await;
        let status: Value = serde_json::from_str(&status).unwrap();
        let journal = &status["journal"];
        journal["head"].as_i64().unwrap() - journal["processed"].as_i64().unwrap()
    };
    let all = (2 * TIMERS) as f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    while daemon.metric("converge_events_processed_total").await < all {
        // Head is read before the processed cursor: never more than the
        // lag at one moment.
        most = most.max(lag().await);
        assert!(
            std::time::Instant::now() < deadline,
            "the reminders were not all processed\n{}",
            daemon.log()
        );
    }
    assert!(
        most <= BUDGET as i64,
        "{most} events journaled and not processed, past the budget of {BUDGET}"
    );
    assert_eq!(
        daemon.metric("converge_timers_fired_total").await,
        TIMERS as f64
    );
    assert_eq!(lag().await, 0);
}

/// `GET /v1/timers?rule=` finds a rule's timers behind more than 10,000
/// sooner ones of another rule, reading the backlog a page at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_rules_timers_are_listed_behind_ten_thousand_sooner_ones() {
    let ws = Workspace::new(
        &[
            (
                "piles",
                "//! events: task.created\n\
                 for k in 1..=5 { schedule(`${k}m`, \"task.remind\"); }\n",
            ),
            (
                "later",
                "//! events: task.late\nschedule(\"48h\", \"task.chase\");\n",
            ),
        ],
        &manual_clock(START),
    );
    let daemon = ws.start();
    daemon
        .accept_all(&numbered_events(2_100, "task.created", "task", |_| {
            json!({})
        }))
        .await;
    let late = event("late-1", "task.late", "task/t-0", json!({}));
    assert_eq!(daemon.send_event(&late).await.0, 202);
    daemon.wait_for_trail("late-1", processed).await;

    let (status, listed) = daemon.get("/v1/timers?rule=later").await;
    assert_eq!(status, 200, "{listed}");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["more"], false, "{listed}");
    let timers = listed["timers"].as_array().unwrap();
    assert_eq!(timers.len(), 1, "{listed}");
    assert_eq!(timers[0]["event_type"], "task.chase");
    assert_eq!(timers[0]["due_at"], "2026-11-25T10:00:00.000Z");

    // The other rule's 10,500 are listed 1,000 at most, with more to come.
    let (_, piles) = daemon.get("/v1/timers?rule=piles&limit=1000").await;
    let piles: Value = serde_json::from_str(&piles).unwrap();
    assert_eq!(piles["timers"].as_array().unwrap().len(), 1_000);
    assert_eq!(piles["more"], true);
}

/// An item's timers are listed 1,000 at most, newest first, saying when it
/// has more.
#[tokio::test(flavor = "multi_thread")]
async fn an_items_timers_say_when_there_are_more_than_listed() {
    let ws = Workspace::new(
        &[(
            "piles",
            "//! events: task.created\n\
             for k in 1..=5 { schedule(`${k}m`, \"task.remind\"); }\n",
        )],
        &manual_clock(START),
    );
    let daemon = ws.start();
    // 201 events about task/busy: 1,005 timers; one about task/calm: 5.
    let mut events: Vec<Value> = (0..201)
        .map(|i| event(&format!("b-{i}"), "task.created", "task/busy", json!({})))
        .collect();
    events.push(event("calm-1", "task.created", "task/calm", json!({})));
    daemon.accept_all(&events).await;
    daemon.wait_for_trail("calm-1", processed).await;

    for path in [
        "/v1/entities/task/busy/timers",
        "/v1/entities/task/busy/timers?pending=true",
    ] {
        let (status, listed) = daemon.get(path).await;
        assert_eq!(status, 200, "{listed}");
        let listed: Value = serde_json::from_str(&listed).unwrap();
        let timers = listed["timers"].as_array().unwrap();
        assert_eq!(timers.len(), 1_000, "{path}");
        assert_eq!(listed["more"], true, "{path}");
        // Newest first: the last event's five are first.
        assert!(timers[0]["id"].as_i64() > timers[999]["id"].as_i64());
    }
    let (_, calm) = daemon.get("/v1/entities/task/calm/timers").await;
    let calm: Value = serde_json::from_str(&calm).unwrap();
    assert_eq!(calm["timers"].as_array().unwrap().len(), 5, "{calm}");
    assert_eq!(calm["more"], false);
}

/// The example escalation ladder (`rules/stalled_handoff.rhai`), whose rungs
/// wait one at a time: each rung that fires expects the next.
fn ladder_workspace(rule: &str) -> Workspace {
    Workspace::new(&[("stalled_handoff", rule)], &manual_clock(START))
}

fn example_ladder() -> String {
    example_rule("stalled_handoff")
}

async fn hand_off(daemon: &crate::support::Daemon) {
    let (status, body) = daemon
        .send_event(&event(
            "h-1",
            "task.handoff",
            "task/T-1",
            json!({"owner": "bo", "stage": "review"}),
        ))
        .await;
    assert_eq!(status, 202, "{body}");
    daemon.wait_for_trail("h-1", processed).await;
}

/// Each decision of a trail as `kind to|otherwise level`, the parts it has.
fn decisions(trail: &Value) -> Vec<String> {
    trail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let d = &d["decision"];
            let mut parts = vec![d["kind"].as_str().unwrap().to_string()];
            for key in ["to", "otherwise", "level"] {
                if !d[key].is_null() {
                    parts.push(d[key].to_string().trim_matches('"').to_string());
                }
            }
            parts.join(" ")
        })
        .collect()
}

/// Each timer's id and due time, in RFC 3339.
fn due_times(timers: &[Value]) -> Vec<(i64, String)> {
    let mut due: Vec<(i64, String)> = timers
        .iter()
        .map(|t| {
            let at = chrono::DateTime::from_timestamp_millis(t["due_at_ms"].as_i64().unwrap());
            let at = at
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            (t["id"].as_i64().unwrap(), at)
        })
        .collect();
    due.sort();
    due
}

/// What each rung of the example ladder decides for task/T-1: its notice,
/// then, but for the last, the next rung.
const REMIND: &[&str] = &[
    "notify bo",
    "cancel_expects",
    "expect task.handoff.escalate_review",
];
const REVIEW: &[&str] = &[
    "escalate review_owner 2",
    "cancel_expects",
    "expect task.handoff.escalate_business",
];
const BUSINESS: &[&str] = &["escalate business_owner 3"];

/// Waits for the timer event `id` to be processed and checks its decisions.
async fn rung(daemon: &crate::support::Daemon, id: &str, expected: &[&str]) {
    let trail = daemon.wait_for_trail(id, processed).await;
    assert_eq!(decisions(&trail), expected, "{trail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_ladder_keeps_its_times_with_one_rung_waiting() {
    let ws = ladder_workspace(&example_ladder());
    let daemon = ws.start();
    hand_off(&daemon).await;
    assert_eq!(
        statuses(&daemon.timers("task/T-1").await),
        [(1, "pending".into())]
    );

    daemon.advance_clock("24h").await;
    rung(&daemon, "timer-1", REMIND).await;
    daemon.advance_clock("24h").await;
    rung(&daemon, "timer-2", REVIEW).await;
    daemon.advance_clock("24h").await;
    rung(&daemon, "timer-3", BUSINESS).await;

    // Each rung was due its hours after the handoff, to the millisecond.
    let timers = daemon.timers("task/T-1").await;
    assert_eq!(
        due_times(&timers),
        [
            (1, "2026-11-24T10:00:00.000Z".into()),
            (2, "2026-11-25T10:00:00.000Z".into()),
            (3, "2026-11-26T10:00:00.000Z".into()),
        ]
    );
    assert_eq!(
        statuses(&timers),
        [
            (1, "fired".into()),
            (2, "fired".into()),
            (3, "fired".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ladder_rung_that_fires_late_brings_the_next_rungs_at_once() {
    let ws = ladder_workspace(&example_ladder());
    let daemon = ws.start();
    hand_off(&daemon).await;
    daemon.kill9();

    // Down for four days: every rung's time has passed.
    ws.edit_config(START, "2026-11-27T10:00:00Z");
    let daemon = ws.start();
    rung(&daemon, "timer-1", REMIND).await;
    // The next rung's time (48h after the handoff) has passed: it is due
    // a second after the late one fired.
    assert_eq!(
        due_times(&daemon.timers("task/T-1").await)[1],
        (2, "2026-11-27T10:00:01.000Z".into())
    );
    daemon.advance_clock("1s").await;
    rung(&daemon, "timer-2", REVIEW).await;
    daemon.advance_clock("1s").await;
    rung(&daemon, "timer-3", BUSINESS).await;
}

/// A ladder started when the example rule set all three rungs at the
/// handoff (`tests/fixtures/rules/stalled_handoff_three_timers.rhai`)
/// climbs once under today's rule: its first rung ends the other two and
/// expects the next itself, so no rung escalates twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_ladder_of_three_waiting_rungs_climbs_once_under_the_example_rule() {
    let three_timers = std::fs::read_to_string(
        crate::support::repo_root().join("tests/fixtures/rules/stalled_handoff_three_timers.rhai"),
    )
    .unwrap();
    let ws = ladder_workspace(&three_timers);
    let daemon = ws.start();
    hand_off(&daemon).await;
    assert_eq!(
        statuses(&daemon.timers("task/T-1").await),
        [
            (1, "pending".into()),
            (2, "pending".into()),
            (3, "pending".into())
        ]
    );
    daemon.terminate();

    std::fs::write(ws.dir.path().join("stalled_handoff.rhai"), example_ladder()).unwrap();
    let daemon = ws.start();
    daemon.advance_clock("24h").await;
    rung(&daemon, "timer-1", REMIND).await;
    daemon.advance_clock("24h").await;
    rung(&daemon, "timer-4", REVIEW).await;
    daemon.advance_clock("24h").await;
    rung(&daemon, "timer-5", BUSINESS).await;
    daemon.advance_clock("7d").await;
    daemon.wait_for_metric("converge_timers_pending", 0.0).await;

    not_journaled(&daemon, "timer-2").await;
    not_journaled(&daemon, "timer-3").await;
    let timers = daemon.timers("task/T-1").await;
    assert_eq!(
        statuses(&timers),
        [
            (1, "fired".into()),
            (2, "cancelled".into()),
            (3, "cancelled".into()),
            (4, "fired".into()),
            (5, "fired".into()),
        ]
    );
    for cancelled in &timers {
        if cancelled["status"] == "cancelled" {
            assert_eq!(
                cancelled["cancel_reason"],
                "rule stalled_handoff cancelled it"
            );
        }
    }
    assert_eq!(
        due_times(&timers)[3],
        (4, "2026-11-25T10:00:00.000Z".into())
    );
    assert_eq!(
        due_times(&timers)[4],
        (5, "2026-11-26T10:00:00.000Z".into())
    );
}
