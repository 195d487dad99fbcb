//! The review console (`/ui`) in a real browser: headless Chromium driven
//! over WebDriver against the real daemon. What a person sees on Needs
//! action, overriding a gate from a record's page, a page following the
//! daemon without a reload, the reports of the known-answer month, a
//! filtered view that survives a reload, and actions refused without a
//! session. Screenshots of each page land in
//! `<CARGO_TARGET_TMPDIR>/console-screenshots/`.
//!
//! Reading beyond loopback (a token, or a session) and control characters
//! from events are checked over plain HTTP at the end.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::browser::Browser;
use crate::gates::{accept, channel, send};
use crate::reload::reminding;
use crate::support::{
    ADMIN_TOKEN, Daemon, Sink, Workspace, event, example_rule, numbered_events, sends_to_sink_toml,
};

mod accessibility;

const WAIT: Duration = Duration::from_secs(15);

/// The example gate and handoff-ladder rules, releases to the sink, on a
/// manual clock (so the pages' ages are the same on every run).
fn workspace(sink: &Sink) -> Workspace {
    workspace_with(sink, "")
}

/// [`workspace`] with `extra` appended to its config.
fn workspace_with(sink: &Sink, extra: &str) -> Workspace {
    let rule = |name: &str| example_rule(name);
    Workspace::new(
        &[
            ("convergence_gate", &rule("convergence_gate")),
            ("stalled_handoff", &rule("stalled_handoff")),
        ],
        &format!(
            "{}\n[clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n{extra}",
            sends_to_sink_toml(sink)
        ),
    )
}

/// campaign/c-1 with its email send held (paid is still in review), and
/// task/t-7 handed to maria (its ladder's first rung in 24h).
async fn held_send_and_handoff(daemon: &Daemon) {
    accept(daemon, &channel("c-1-email", "c-1", "email", "approved")).await;
    accept(daemon, &channel("c-1-paid", "c-1", "paid", "review")).await;
    accept(daemon, &send("c-1-send", "c-1", "email")).await;
    accept(
        daemon,
        &event(
            "t-7-handoff",
            "task.handoff",
            "task/t-7",
            json!({"owner": "maria", "stage": "review", "campaign": "c-1"}),
        ),
    )
    .await;
    for id in ["c-1-send", "t-7-handoff"] {
        daemon
            .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
            .await;
    }
}

/// A browser, and a daemon with campaign/c-1's email send held and
/// task/t-7 handed over; `None` where there is no Chromium.
struct Scene {
    browser: Browser,
    sink: Sink,
    daemon: Daemon,
    // Dropped last: the daemon's files.
    _ws: Workspace,
}

impl Scene {
    async fn start(browser: impl std::future::Future<Output = Option<Browser>>) -> Option<Scene> {
        let browser = browser.await?;
        let sink = Sink::start().await;
        let ws = workspace(&sink);
        let daemon = ws.start();
        held_send_and_handoff(&daemon).await;
        Some(Scene {
            browser,
            sink,
            daemon,
            _ws: ws,
        })
    }
}

/// Signs in through the login form, and lands on `next`.
async fn sign_in(browser: &Browser, daemon: &Daemon, who: &str, next: &str) {
    browser
        .goto(&format!("{}/ui/login?next={next}", daemon.url))
        .await;
    browser.fill("input[name=who]", who).await;
    browser.fill("input[name=token]", ADMIN_TOKEN).await;
    browser.submit("form.stack").await;
    browser.wait_for_text("header.top .who", who, WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_send_and_a_stalled_handoff_appear_on_needs_action_with_their_reasons() {
    let Some(Scene {
        browser,
        sink: _,
        daemon,
        ..
    }) = Scene::start(Browser::start()).await
    else {
        return;
    };
    daemon.advance_clock("2h").await;

    browser.goto(&format!("{}/ui", daemon.url)).await;
    let table = browser
        .wait_for_text("#needs-action", "Held sends", WAIT)
        .await;
    assert!(table.contains("email send held"), "{table}");
    assert!(
        table.contains("convergence_gate: not approved: paid (review)"),
        "every holding reason is shown: {table}"
    );
    assert_eq!(browser.count("tr[data-kind=waiting]").await, 1, "{table}");
    assert!(
        browser
            .text_of("tr[data-kind=waiting]")
            .await
            .contains("Waiting task/t-7"),
        "the task's row, tagged: {table}"
    );
    assert!(
        table.contains("task.handoff.remind unless task.handoff.ended comes (stalled_handoff)")
            && table.contains("in 22h"),
        "the next rung of the ladder and when it fires: {table}"
    );
    // Each row links to its record.
    browser.click("tr[data-kind=held] a.record").await;
    browser.wait_for_text("h1", "campaign/c-1", WAIT).await;
    browser.screenshot("record-held").await;
    browser.goto(&format!("{}/ui", daemon.url)).await;
    browser.screenshot("needs-action").await;
    insta::assert_snapshot!("needs_action", browser.text_of("#needs-action").await);

    browser.goto(&format!("{}/ui/campaigns", daemon.url)).await;
    let board = browser.text_of("section.campaign").await;
    assert!(board.contains("gate holding 1 send(s)"), "{board}");
    assert!(board.contains("not approved: paid (review)"), "{board}");
    assert!(
        board.contains("next gate.deadline (convergence_gate) in 1d 22h"),
        "the gate's deadline: {board}"
    );
    let terms = browser.text_of("section.campaign p.terms").await;
    assert!(
        terms.contains("% consistency ✓") || terms.contains("% consistency ✗"),
        "the score and the next term read apart: {terms}"
    );
    browser.screenshot("campaigns").await;
    browser.goto(&format!("{}/ui/health", daemon.url)).await;
    let rules = browser.text_of("#rule-activity").await;
    assert!(
        rules.contains("convergence_gate") && rules.contains("stalled_handoff"),
        "{rules}"
    );
    let unlisted = browser.text_of("#unlisted-hooks").await;
    assert!(
        unlisted.contains("Hooks the config does not list are accepted")
            && unlisted.contains("without a signature check"),
        "{unlisted}"
    );
    browser.screenshot("health").await;

    // The task moves on and the campaign converges: the ladder's rungs and
    // the gate's deadline are cancelled, and nothing is left waiting.
    accept(
        &daemon,
        &event(
            "t-7-approved",
            "task.updated",
            "task/t-7",
            json!({"stage": "approved"}),
        ),
    )
    .await;
    accept(&daemon, &channel("c-1-paid-ok", "c-1", "paid", "approved")).await;
    browser.goto(&format!("{}/ui", daemon.url)).await;
    browser
        .wait_for_text("p.empty", "Nothing needs action.", WAIT)
        .await;
    let (_, timers) = daemon.get("/v1/timers").await;
    let timers: serde_json::Value = serde_json::from_str(&timers).unwrap();
    assert_eq!(timers["timers"], json!([]), "{timers}");
    // The task's record says how: the ladder ended, its rungs cancelled.
    browser
        .goto(&format!("{}/ui/records/task/t-7", daemon.url))
        .await;
    let trail = browser.text_of("#trail").await;
    assert!(
        trail.contains("set_field field: handoff value: null")
            && trail.contains("cancel_expects event_type: task.handoff.ended"),
        "{trail}"
    );
    let rungs = browser.texts_of("#timers tbody tr").await;
    assert_eq!(rungs.len(), 1, "{rungs:?}");
    assert!(
        rungs
            .iter()
            .all(|r| r.contains("cancelled") && r.contains("rule stalled_handoff cancelled it")),
        "{rungs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_not_found_keeps_the_navigation_and_what_was_looked_for() {
    let Some(Scene {
        browser,
        sink: _,
        daemon,
        ..
    }) = Scene::start(Browser::start()).await
    else {
        return;
    };
    browser.goto(&format!("{}/ui", daemon.url)).await;
    // Enter (WebDriver's key U+E007) submits the box.
    browser
        .fill("form.find input[name=key]", "campaign/c-9\u{E007}")
        .await;
    browser.wait_for_text("h1", "No such record", WAIT).await;
    assert!(
        browser
            .text_of("p.error")
            .await
            .contains("No event about campaign/c-9 was journaled"),
    );
    assert_eq!(browser.count("header.top nav a").await, 4);
    assert_eq!(
        browser
            .attr("form.find input[name=key]", "value")
            .await
            .as_deref(),
        Some("campaign/c-9")
    );
    browser.screenshot("record-not-found").await;
    // Corrected in place, it opens the record.
    // Enter (WebDriver's key U+E007) submits the box.
    browser
        .fill("form.find input[name=key]", "campaign/c-1\u{E007}")
        .await;
    browser.wait_for_text("h1", "campaign/c-1", WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_page_scrolls_sideways_for_a_long_value_or_in_a_narrow_window() {
    let Some(Scene {
        browser,
        sink: _,
        daemon,
        ..
    }) = Scene::start(Browser::start()).await
    else {
        return;
    };
    let url = format!("https://example.com/landing/{}", "x".repeat(400));
    let message = "word ".repeat(200);
    accept(
        &daemon,
        &event(
            "c-1-long",
            "campaign.channel.updated",
            "campaign/c-1",
            json!({"channel": "social", "stage": "draft", "landing_url": url, "key_message": message}),
        ),
    )
    .await;
    daemon
        .wait_for_trail("c-1-long", |t| !t["processed_at_ms"].is_null())
        .await;
    for page in ["/ui/campaigns", "/ui/records/campaign/c-1", "/ui"] {
        browser.goto(&format!("{}{page}", daemon.url)).await;
        assert_eq!(browser.overflow_x().await, 0, "{page} scrolls sideways");
    }
    browser.goto(&format!("{}/ui/campaigns", daemon.url)).await;
    let board = browser.text_of("section.campaign").await;
    assert!(board.contains("xxxxxxxx"), "{board}");
    browser.screenshot("campaigns-long-value").await;

    // Half a laptop's screen: every page still fits, the header wraps.
    browser.resize(700, 1000).await;
    for page in [
        "/ui",
        "/ui/campaigns",
        "/ui/records/campaign/c-1",
        "/ui/records/task/t-7",
        "/ui/reports",
        "/ui/health",
    ] {
        browser.goto(&format!("{}{page}", daemon.url)).await;
        assert_eq!(
            browser.overflow_x().await,
            0,
            "{page} scrolls sideways in a 700-pixel window"
        );
    }
    browser.goto(&format!("{}/ui", daemon.url)).await;
    browser.screenshot("needs-action-700px").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_override_from_the_console_releases_the_send_once_and_the_trail_shows_who_and_why() {
    let Some(Scene {
        browser,
        sink,
        daemon,
        ..
    }) = Scene::start(Browser::start()).await
    else {
        return;
    };

    sign_in(&browser, &daemon, "ana", "/ui/records/campaign/c-1").await;
    browser.wait_for_text("#gate", "1 held", WAIT).await;
    browser
        .fill(
            "#gate form.act input[name=reason]",
            "legal approved by phone",
        )
        .await;
    browser.submit("#gate form.act").await;
    let notice = browser
        .wait_for_text("p.notice", "Override journaled", WAIT)
        .await;
    assert!(notice.contains("released by ana"), "{notice}");

    let received = sink.wait_for(1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body["event"]["id"], "c-1-send");
    assert_eq!(received[0].body["decision"]["channel"], "email");
    let gate = browser
        .wait_for_text("#gate", "released by override by ana", WAIT)
        .await;
    assert!(gate.contains("ana overrode every channel"), "{gate}");
    assert!(gate.contains("legal approved by phone"), "{gate}");
    // The override's event, processed: its release.
    let trail = browser.wait_for_text("#trail", "release_send", WAIT).await;
    assert!(trail.contains("gate.override"), "{trail}");
    // The release's action, done: its plugin's summary, not styled as an error.
    let summary = browser
        .wait_for_text("#trail div.action .detail.done", "-> 200", WAIT)
        .await;
    assert!(summary.starts_with("POST http://"), "{summary}");
    browser.screenshot("record-overridden").await;

    // Journaled like the CLI's override: the gate API shows who and why.
    let (status, gate) = daemon.get("/v1/gates/campaign/c-1").await;
    assert_eq!(status, 200);
    let gate: serde_json::Value = serde_json::from_str(&gate).unwrap();
    assert_eq!(gate["overrides"][0]["by"], "ana", "{gate:#}");
    assert_eq!(gate["overrides"][0]["reason"], "legal approved by phone");

    // Exactly once: nothing more reaches the sink.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_is_retried_from_its_record_with_who_and_why() {
    let Some(Scene {
        browser,
        sink,
        daemon,
        ..
    }) = Scene::start(Browser::start()).await
    else {
        return;
    };
    // The release fails for good (401 is permanent): a dead letter.
    sink.answer_next(&[reqwest::StatusCode::UNAUTHORIZED]);
    accept(&daemon, &channel("c-1-paid-ok", "c-1", "paid", "approved")).await;
    accept(&daemon, &send("c-1-send-2", "c-1", "email")).await;
    sink.wait_for(2).await;

    browser
        .goto(&format!("{}/ui?kind=dead_letter", daemon.url))
        .await;
    let row = browser
        .wait_for_text("tr[data-kind=dead_letter]", "last error", WAIT)
        .await;
    assert!(row.contains("via webhook-out"), "{row}");
    browser
        .click("tr[data-kind=dead_letter] td a:nth-of-type(2)")
        .await;
    sign_in(
        &browser,
        &daemon,
        "ana",
        &browser.current_url().await.replace(&daemon.url, ""),
    )
    .await;
    browser
        .fill(
            "div.action form.act input[name=reason]",
            "receiver fixed its token",
        )
        .await;
    browser.submit("div.action form.act").await;
    let notice = browser
        .wait_for_text("p.notice", "retried by ana", WAIT)
        .await;
    assert!(notice.contains("is pending now"), "{notice}");
    // Sent again, with the key of the attempt that failed.
    let received = sink.wait_for(3).await;
    let key = |i: usize| {
        received[i].headers["idempotency-key"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(key(2), key(0));
    let history = browser
        .wait_for_text("div.action ul.history", "receiver fixed its token", WAIT)
        .await;
    assert!(
        history.contains("retried") && history.contains("by ana"),
        "{history}"
    );
    browser.screenshot("record-dead-letter-retried").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dead_letters_shown_are_retried_at_once_after_a_fix() {
    let Some(Scene {
        browser,
        sink,
        daemon,
        ..
    }) = Scene::start(Browser::start()).await
    else {
        return;
    };
    // Two releases fail for good (401 is permanent): two dead letters.
    sink.answer_next(&[reqwest::StatusCode::UNAUTHORIZED; 2]);
    accept(&daemon, &channel("c-1-paid-ok", "c-1", "paid", "approved")).await;
    accept(&daemon, &send("c-1-send-2", "c-1", "email")).await;
    sink.wait_for(2).await;
    daemon.wait_for_metric("converge_dead_letters", 2.0).await;

    // Both failed the same way: the page says so once, above the rows,
    // and links to them.
    browser.goto(&format!("{}/ui", daemon.url)).await;
    let causes = browser
        .wait_for_text("#causes", "Actions failing the same way", WAIT)
        .await;
    let rows = browser.texts_of("#causes tbody tr").await;
    assert_eq!(rows.len(), 1, "{causes}");
    assert!(
        rows[0].contains("via webhook-out: ") && rows[0].contains("401"),
        "{causes}"
    );
    assert_eq!(browser.texts_of("#causes tbody td.n").await, ["2", "0"]);
    browser.screenshot("needs-action-causes").await;
    browser.click("#causes tbody a").await;
    let shown = browser
        .wait_for_text("p.cause-shown", "Actions failing with", WAIT)
        .await;
    assert!(shown.contains("401"), "{shown}");
    assert!(browser.current_url().await.contains("cause="));
    assert_eq!(
        browser
            .count("#needs-action tr[data-kind=dead_letter]")
            .await,
        2
    );
    assert_eq!(browser.count("#needs-action tbody tr").await, 2);
    assert_eq!(browser.count("#causes").await, 0);

    // Without a session the page offers no form.
    browser
        .goto(&format!("{}/ui?kind=dead_letter", daemon.url))
        .await;
    browser
        .wait_for_text("#needs-action", "last error", WAIT)
        .await;
    assert_eq!(browser.count("#retry-shown").await, 0);

    sign_in(&browser, &daemon, "ana", "/ui?kind=dead_letter").await;
    let form = browser
        .wait_for_text("#retry-shown", "The 2 dead letters shown", WAIT)
        .await;
    assert!(form.contains("Retry all 2"), "{form}");
    browser
        .fill(
            "#retry-shown input[name=reason]",
            "receiver fixed its token",
        )
        .await;
    browser.screenshot("needs-action-retry-shown").await;
    // Meanwhile someone retries one of them through the API: the form
    // passes over it (typing in it paused the page's live update).
    let (_, listed) = daemon.get("/v1/dlq").await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let ids: Vec<i64> = listed["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{listed:#}");
    let (status, body) = daemon
        .post_admin(
            &format!("/v1/dlq/{}/retry", ids[0]),
            Some(ADMIN_TOKEN),
            &json!({"by": "mia", "reason": "first one by hand"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    browser.submit("#retry-shown").await;
    let notice = browser
        .wait_for_text("p.notice", "retried by ana", WAIT)
        .await;
    assert!(
        notice.contains("1 dead letter(s) retried by ana; 1 passed over: no longer dead letters"),
        "{notice}"
    );
    // Both sent again, each with the key of its failed attempt.
    let received = sink.wait_for(4).await;
    let mut keys: Vec<String> = received
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    let mut again = keys.split_off(2);
    keys.sort();
    again.sort();
    assert_eq!(again, keys);
    daemon.wait_for_metric("converge_dead_letters", 0.0).await;
    // Each journaled with who and why.
    for (id, by, reason) in [
        (ids[0], "mia", "first one by hand"),
        (ids[1], "ana", "receiver fixed its token"),
    ] {
        let (_, body) = daemon.get(&format!("/v1/dlq/{id}")).await;
        let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
        let last = shown["action"]["history"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(
            (&last["kind"], &last["by"], &last["reason"]),
            (&json!("retried"), &json!(by), &json!(reason)),
            "{shown:#}"
        );
    }
    browser.screenshot("needs-action-retried-shown").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_action_retrying_after_a_failure_shows_its_error_and_next_attempt() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let sink = Sink::start().await;
    // The next attempt an hour away: the release waits, retrying.
    let ws = workspace_with(
        &sink,
        "[dispatch]\ninitial_backoff = \"1h\"\nmax_backoff = \"1h\"\nmax_attempts = 3\n",
    );
    let daemon = ws.start();
    held_send_and_handoff(&daemon).await;
    // The gate opens: both sends are released, and the receiver is down.
    sink.answer_next(&[reqwest::StatusCode::SERVICE_UNAVAILABLE; 2]);
    accept(&daemon, &channel("c-1-paid-ok", "c-1", "paid", "approved")).await;
    accept(&daemon, &send("c-1-send-2", "c-1", "email")).await;
    sink.wait_for(2).await;
    daemon.advance_clock("20m").await;

    browser
        .goto(&format!("{}/ui?kind=retrying", daemon.url))
        .await;
    let row = browser
        .wait_for_text("#needs-action tr[data-kind=retrying]", "last error", WAIT)
        .await;
    for part in [
        "Retrying",
        "campaign/c-1",
        "via webhook-out) from rule convergence_gate, 1 failed attempt(s)",
        "last error: ",
        "503",
        "20m ago",
        // An hour with jitter (up to twice that) after the failure.
        "attempt 2 of 3\nin ",
    ] {
        assert!(row.contains(part), "{part:?} not in {row}");
    }
    assert_eq!(browser.count("#needs-action tbody tr").await, 2);
    browser.screenshot("needs-action-retrying").await;
    // Not a dead letter: nothing to retry by hand.
    assert_eq!(daemon.metric("converge_dead_letters").await, 0.0);
    let (_, page) = daemon.get("/ui?kind=dead_letter").await;
    assert!(
        page.contains("Nothing needs action with these filters."),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_event_shows_up_on_an_open_page_without_a_reload() {
    let Some(Scene {
        browser,
        sink: _,
        daemon,
        ..
    }) = Scene::start(Browser::start()).await
    else {
        return;
    };

    browser
        .goto(&format!("{}/ui/records/campaign/c-1", daemon.url))
        .await;
    browser.wait_for_text("#trail", "c-1-send", WAIT).await;
    accept(&daemon, &channel("c-1-paid-copy", "c-1", "paid", "review")).await;
    browser.wait_for_text("#trail", "c-1-paid-copy", WAIT).await;

    browser.goto(&format!("{}/ui", daemon.url)).await;
    browser
        .wait_for_text("#needs-action", "Held sends", WAIT)
        .await;
    accept(&daemon, &send("c-2-send", "c-2", "email")).await;
    browser
        .wait_for_text("#needs-action", "campaign/c-2", WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reports_page_shows_the_numbers_of_the_known_answer_month() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let ws = crate::reports::month_workspace();
    let daemon = ws.start();
    crate::reports::play_the_month(&daemon).await;

    let (since, until) = crate::reports::MONTH;
    let query = format!("?since={since}&until={until}");
    browser
        .goto(&format!("{}/ui/reports{query}", daemon.url))
        .await;
    let mut rows = Vec::new();
    for metric in [
        "review_time",
        "handoff_delay",
        "blocked_work",
        "rework_rate",
        "launch_reliability",
        "launch_spread",
        "exception_rate",
        "cycle_time",
        "approval_pass_rate",
    ] {
        let text = browser
            .text_of(&format!("#report tr[data-metric={metric}]"))
            .await;
        rows.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    // The numbers of tests/it/reports.rs's `the_month`, as the table prints them.
    assert_eq!(
        rows,
        [
            "review_time 4 5.0h 15.9h",
            "handoff_delay 2 4.0h 5.4h",
            "blocked_work 1 36.0h 36.0h 1",
            "rework_rate 6 16.7%",
            "launch_reliability 2 50.0%",
            "launch_spread 1 18.0h 18.0h",
            "exception_rate 32 6.2%",
            "cycle_time 6 22.0h 73.5h",
            "approval_pass_rate 3 66.7%",
        ]
    );
    // Each metric's chart with its weekly numbers beside it.
    let review = browser.text_of("figure#review_time").await;
    assert!(review.contains("median per week"), "{review}");
    assert!(!review.contains("No samples"), "{review}");
    assert_eq!(browser.count("figure.metric svg.chart").await, 9);
    browser.screenshot("reports").await;

    // A period before the month: each chart says it has nothing, rather
    // than showing an empty table.
    browser
        .goto(&format!(
            "{}/ui/reports?since=2026-09-01&until=2026-10-01",
            daemon.url
        ))
        .await;
    for metric in ["review_time", "exception_rate", "approval_pass_rate"] {
        let card = browser.text_of(&format!("figure#{metric}")).await;
        assert!(card.contains("No samples in this period."), "{card}");
    }
    assert_eq!(browser.count("figure.metric table.numbers").await, 0);

    // The CSV download is `converge report --format csv` of the same period.
    let (status, csv) = daemon.get(&format!("/ui/reports.csv{query}")).await;
    assert_eq!(status, 200);
    let out = ws.converge(&[
        "report", "--since", since, "--until", until, "--format", "csv",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(csv, String::from_utf8(out.stdout).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_url_survives_a_reload_and_reads_without_javascript() {
    let Some(Scene {
        browser,
        sink: _,
        daemon,
        ..
    }) = Scene::start(Browser::start_without_javascript()).await
    else {
        return;
    };

    // The filter form works without script: a plain GET.
    browser.goto(&format!("{}/ui", daemon.url)).await;
    browser
        .select("form.filters select[name=kind]", "waiting")
        .await;
    browser
        .fill("form.filters input[name=owner]", "maria")
        .await;
    browser.submit("form.filters").await;
    let url = browser.current_url().await;
    assert!(
        url.contains("kind=waiting") && url.contains("owner=maria"),
        "{url}"
    );
    browser.reload().await;
    assert_eq!(browser.current_url().await, url);
    assert_eq!(browser.count("#needs-action tbody tr").await, 1);
    assert_eq!(browser.count("tr[data-kind=waiting]").await, 1);
    assert_eq!(
        browser
            .attr("form.filters input[name=owner]", "value")
            .await
            .as_deref(),
        Some("maria")
    );
    assert_eq!(
        browser
            .count("select[name=kind] option[value=waiting][selected]")
            .await,
        1
    );
    browser.screenshot("needs-action-filtered-no-js").await;

    // Every page reads without script.
    browser.goto(&format!("{}/ui/campaigns", daemon.url)).await;
    let board = browser.text_of("section.campaign").await;
    assert!(board.contains("not approved: paid (review)"), "{board}");
    // A day on, the ladder's first rung has fired and the next one waits.
    daemon.advance_clock("24h").await;
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.timers("task/t-7").await.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    browser
        .goto(&format!("{}/ui/records/task/t-7", daemon.url))
        .await;
    let timers = browser.text_of("#timers tbody").await;
    // The timer to fire next first, then the one that fired.
    let at = |rung: &str| {
        timers
            .find(&format!("task.handoff.{rung}"))
            .unwrap_or_else(|| panic!("no {rung}: {timers}"))
    };
    assert!(at("escalate_review") < at("remind"), "{timers}");
    assert!(!timers.contains("escalate_business"), "{timers}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_action_without_a_session_is_refused() {
    let Some(Scene {
        browser,
        sink,
        daemon,
        ..
    }) = Scene::start(Browser::start()).await
    else {
        return;
    };

    // Signed in, the form is there; with the session gone, sending it is refused.
    sign_in(&browser, &daemon, "ana", "/ui/records/campaign/c-1").await;
    browser
        .fill("#gate form.act input[name=reason]", "should not pass")
        .await;
    browser.delete_all_cookies().await;
    browser.submit("#gate form.act").await;
    let page = browser.wait_for_text("h1", "Sign in to act", WAIT).await;
    assert_eq!(page, "Sign in to act");
    browser.screenshot("action-refused").await;

    // Over plain HTTP: no session, then a session without its CSRF token.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, _, _) = daemon
        .request(
            Method::POST,
            "/ui/records/campaign/c-1/override",
            &form,
            "csrf=x&reason=no+session",
        )
        .await;
    assert_eq!(status, 401);
    let cookie = session_cookie(&daemon, ADMIN_TOKEN).await;
    let (status, _, _) = daemon
        .request(
            Method::POST,
            "/ui/records/campaign/c-1/override",
            &[form[0], ("cookie", &cookie)],
            "csrf=forged&reason=cross+site",
        )
        .await;
    assert_eq!(status, 403);

    // Nothing was released.
    let (_, gate) = daemon.get("/v1/gates/campaign/c-1").await;
    let gate: serde_json::Value = serde_json::from_str(&gate).unwrap();
    assert_eq!(gate["open"], true, "{gate:#}");
    assert!(gate["overrides"].as_array().unwrap().is_empty(), "{gate:#}");
    assert!(sink.received().is_empty());
}

/// Signs in over HTTP; the `cookie` header of the new session.
async fn session_cookie(daemon: &Daemon, token: &str) -> String {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/ui/login", daemon.url))
        .form(&[("who", "ana"), ("token", token), ("next", "/ui")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=28800"] {
        assert!(set.contains(attribute), "{set}");
    }
    set.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_loopback_reading_needs_a_token_or_a_session() {
    const READ_TOKEN: &str = "converge-test-read-token-0123456789";
    let ws = Workspace::new(&[], "");
    ws.edit_config("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    let daemon = ws.start_with_env(&[("CONVERGE_READ_TOKEN", READ_TOKEN)]);

    for path in [
        "/v1/status",
        "/v1/gates",
        "/v1/dlq",
        "/v1/events/x",
        "/v1/reports",
    ] {
        let (status, body) = daemon.get(path).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    for token in [READ_TOKEN, ADMIN_TOKEN] {
        let bearer = format!("Bearer {token}");
        let (status, _, _) = daemon
            .request(Method::GET, "/v1/status", &[("authorization", &bearer)], "")
            .await;
        assert_eq!(status, 200);
    }
    // The console sends a reader to sign in, and lets a session read.
    let (status, page) = daemon.get("/ui/campaigns").await;
    assert_eq!(status, 200);
    assert!(page.contains("Sign in"), "{page}");
    let cookie = session_cookie(&daemon, READ_TOKEN).await;
    let (status, _, page) = daemon
        .request(Method::GET, "/ui/campaigns", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("<h1>Campaigns</h1>"));
    // A read-only session cannot act.
    let (status, _, page) = daemon
        .request(Method::GET, "/ui", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(status, 200);
    let csrf = page
        .as_str()
        .unwrap()
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-out form's CSRF token")
        .to_string();
    let (status, _, _) = daemon
        .request(
            Method::POST,
            "/ui/records/campaign/c-1/override",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &cookie),
            ],
            format!("csrf={csrf}&reason=read+only"),
        )
        .await;
    assert_eq!(status, 403);
    // Health checks and metrics stay open.
    assert_eq!(daemon.get("/healthz").await.0, 200);
    assert_eq!(daemon.get("/metrics").await.0, 200);
    // The start says what is open: unsigned events on any hook name.
    let log = daemon.log();
    assert!(
        log.contains("beyond loopback, and server.unlisted_hooks is \"accept\""),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exceptions_show_rule_failures_and_the_bad_rows_of_dropped_files() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let ws = Workspace::new(
        &[(
            "fragile",
            "//! events: brief.imported\nif event.data.owner == \"max\" { throw \"no owner max\"; }\n",
        )],
        crate::filedrops::BRIEFS_DROP,
    );
    let dir = ws.dir.path().join("drops/briefs");
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = ws.start();
    // One row fails the rule; one has no campaign: a bad row, line 4.
    let temp = dir.join(".briefs.csv.tmp");
    std::fs::write(
        &temp,
        "campaign_id,brief_id,owner\nspring,B-1,lea\nspring,B-2,max\n,B-3,ana\n",
    )
    .unwrap();
    std::fs::rename(temp, dir.join("briefs.csv")).unwrap();
    daemon
        .wait_for_trail("B-2", |t| !t["processed_at_ms"].is_null())
        .await;

    browser
        .goto(&format!("{}/ui?kind=exception", daemon.url))
        .await;
    let table = browser
        .wait_for_text("#needs-action", "bad row", WAIT)
        .await;
    assert!(
        table.contains("rule fragile failed on brief.imported (B-2)"),
        "{table}"
    );
    assert!(table.contains("no owner max"), "{table}");
    assert!(
        table.contains("briefs.csv (briefs): 1 bad row(s), 2 event(s) taken"),
        "{table}"
    );
    assert!(table.contains("line 4:"), "{table}");
    browser.screenshot("needs-action-exceptions").await;

    // The health page lists the drop folder and its last file.
    browser.goto(&format!("{}/ui/health", daemon.url)).await;
    let sources = browser.text_of("#sources").await;
    assert!(sources.contains("drop folder briefs"), "{sources}");
    assert!(sources.contains("last file taken"), "{sources}");
}

/// A browser drops a NUL from the page: `review` and `review\0` would read
/// alike. Control characters from events show as U+FFFD instead.
#[tokio::test(flavor = "multi_thread")]
async fn control_characters_from_an_event_show_on_the_page() {
    let ws = Workspace::new(
        &[("stage", r#"escalate("ops", `stage ${event.data.stage}`);"#)],
        "",
    );
    let daemon = ws.start();
    let (status, body) = daemon
        .send_event(&event(
            "e-1",
            "task.updated",
            "task/T-1",
            json!({"stage": "review\u{0}\u{7}\u{1b}[31m"}),
        ))
        .await;
    assert_eq!(status, 202, "{body}");
    daemon
        .wait_for_trail("e-1", |t| t["processed_at_ms"].is_i64())
        .await;
    for path in ["/ui", "/ui/records/task/T-1"] {
        let (status, page) = daemon.get(path).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert!(
            !page
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
            "{path}: {page:?}"
        );
        assert!(
            page.contains("review\u{FFFD}\u{FFFD}\u{FFFD}[31m"),
            "{path}: {page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timers_of_an_earlier_version_and_of_a_removed_rule_are_cancelled_from_rules_and_health()
 {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let ws = Workspace::new(
        &[("remind", &reminding("v1")), ("digest", &reminding("d1"))],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n",
    );
    let daemon = ws.start();
    let send = |id: &'static str, task: &'static str| {
        let daemon = &daemon;
        async move {
            let update = event(id, "task.updated", &format!("task/{task}"), json!({}));
            assert_eq!(daemon.send_event(&update).await.0, 202);
            daemon
                .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
                .await;
        }
    };
    send("u-1", "T-1").await;
    send("u-2", "T-2").await;
    // remind is edited (its two reminders are the earlier version's), then
    // digest is taken out of the config (its three wait on a rule gone).
    let (_, status) = daemon.get("/v1/status").await;
    std::fs::write(ws.dir.path().join("remind.rhai"), reminding("v2")).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.get("/v1/status").await.1 == status {
        assert!(std::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send("u-3", "T-3").await;
    drop(daemon);
    let digest = ws.dir.path().join("digest.rhai").display().to_string();
    ws.edit_config(&format!(", {digest:?}"), "");
    let daemon = ws.start();

    // Reading without a session: the counts, no form.
    browser.goto(&format!("{}/ui/health", daemon.url)).await;
    browser
        .wait_for_text(
            "#rules",
            "Timers still waiting from rules no longer loaded",
            WAIT,
        )
        .await;
    assert!(!browser.page_source().await.contains("cancel-timers"));

    sign_in(&browser, &daemon, "ana", "/ui/health").await;
    let forms = browser.texts_of("form.cancel-timers span").await;
    assert_eq!(
        forms,
        [
            "digest: 3 timer(s) of a rule no longer loaded",
            "remind: 2 timer(s) from an earlier version"
        ]
    );
    browser.screenshot("health-stale-timers").await;
    browser.resize(700, 1000).await;
    assert_eq!(
        browser.overflow_x().await,
        0,
        "the forms scroll sideways in a 700-pixel window"
    );
    browser.screenshot("health-stale-timers-700px").await;
    // The removed rule's first (the forms are in rule order).
    browser
        .fill("form.cancel-timers input[name=reason]", "digest retired")
        .await;
    browser.submit("form.cancel-timers").await;
    browser
        .wait_for_text(".notice", "3 timer(s) of digest cancelled by ana", WAIT)
        .await;
    assert!(!browser.page_source().await.contains("timers-of-rules-gone"));
    browser
        .fill(
            "form.cancel-timers input[name=reason]",
            "the ladder changed",
        )
        .await;
    browser.submit("form.cancel-timers").await;
    browser
        .wait_for_text(".notice", "2 timer(s) of remind cancelled by ana", WAIT)
        .await;
    let page = browser.page_source().await;
    assert!(!page.contains("cancel-timers"), "{page}");
    assert!(!page.contains("from an earlier version"), "{page}");
    // The new version's reminder still waits; the others say who and why.
    let (_, timers) = daemon.get("/v1/entities/task/T-3/timers").await;
    assert!(timers.contains(r#""status":"pending""#), "{timers}");
    let (_, timers) = daemon.get("/v1/entities/task/T-1/timers").await;
    let timers: serde_json::Value = serde_json::from_str(&timers).unwrap();
    let reasons: Vec<&str> = timers["timers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cancel_reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{timers}");
    assert!(reasons.contains(&"digest retired") && reasons.contains(&"the ladder changed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timers_waiting_on_a_record_are_cancelled_from_its_page_and_say_by_whom() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let ws = Workspace::new(
        &[("remind", &reminding("v1"))],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n",
    );
    let daemon = ws.start();
    for (id, task) in [("u-1", "task/T-1"), ("u-2", "task/T-2")] {
        let update = event(id, "task.updated", task, json!({}));
        assert_eq!(daemon.send_event(&update).await.0, 202);
        daemon
            .wait_for_trail(id, |t| !t["processed_at_ms"].is_null())
            .await;
    }
    browser
        .goto(&format!("{}/ui/records/task/T-1", daemon.url))
        .await;
    browser
        .wait_for_text("#timers", "task.reminder", WAIT)
        .await;
    assert!(!browser.page_source().await.contains("cancel-timers"));

    sign_in(&browser, &daemon, "ana", "/ui/records/task/T-1").await;
    assert_eq!(
        browser.texts_of("#timers form.cancel-timers span").await,
        ["remind: 1 timer(s) waiting here"]
    );
    browser.resize(700, 1000).await;
    assert_eq!(
        browser.overflow_x().await,
        0,
        "the form scrolls sideways at 700 px"
    );
    browser.resize(1400, 1000).await;
    browser
        .fill("#timers input[name=reason]", "resolved by phone")
        .await;
    browser.submit("#timers form.cancel-timers").await;
    browser
        .wait_for_text(".notice", "1 timer(s) of remind cancelled by ana", WAIT)
        .await;
    let timers = browser.text_of("#timers tbody").await;
    assert!(timers.contains("cancelled"), "{timers}");
    assert!(timers.contains("by ana: resolved by phone"), "{timers}");
    assert!(!browser.page_source().await.contains("cancel-timers"));
    browser.screenshot("record-timers-cancelled").await;
    // The other task's reminder still waits.
    let (_, other) = daemon.get("/v1/entities/task/T-2/timers").await;
    assert!(other.contains(r#""status":"pending""#), "{other}");
}

/// More waiting items than the page reads (500), each with several timers,
/// more timers than one read of the backlog (2,000): the page lists the
/// 500 items whose timers fire soonest, and says that more are waiting.
#[tokio::test(flavor = "multi_thread")]
async fn more_waiting_items_than_the_page_lists_are_said_to_be_more() {
    // Task n's five reminders fire n*10+1 to n*10+5 minutes on: items in
    // order of n, and 2,505 timers.
    let ws = Workspace::new(
        &[(
            "reminders",
            "//! events: task.created\n\
             for k in 1..=5 { schedule(`${event.data.n * 10 + k}m`, \"task.remind\"); }\n",
        )],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n",
    );
    let daemon = ws.start();
    daemon
        .accept_all(&numbered_events(
            501,
            "task.created",
            "task",
            |n| json!({"n": n}),
        ))
        .await;
    daemon
        .wait_for_trail("c-500", |t| !t["processed_at_ms"].is_null())
        .await;

    let (status, page) = daemon.get("/ui?kind=waiting").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.matches(r#"data-kind="waiting""#).count(), 500);
    assert!(
        page.contains(r#"href="/ui/records/task/t-0""#),
        "the soonest is listed"
    );
    assert!(page.contains(r#"href="/ui/records/task/t-499""#));
    assert!(
        !page.contains(r#"href="/ui/records/task/t-500""#),
        "the 501st is not"
    );
    assert!(page.contains("Waiting (500+)"), "{page}");
    assert!(
        page.contains("More than 500 waiting: listed are the items whose timers fire soonest."),
        "{page}"
    );
    // Each item's soonest timer: its first reminder.
    assert!(page.contains("task.remind (reminders)"));

    // Kinds the store holds no more of than the page reads say nothing.
    assert!(page.contains("Escalations (0)"), "{page}");
    assert!(!page.contains("More than 500 escalations"));
}

/// With more open escalations than the page lists, the oldest are listed,
/// whatever their names: the store finds them by name.
#[tokio::test(flavor = "multi_thread")]
async fn more_escalations_than_the_page_lists_are_listed_oldest_first() {
    let ws = Workspace::new(
        &[(
            "stalled",
            "//! events: task.created\nescalate(\"ops\", \"stalled\");\n",
        )],
        "[clock]\nmode = \"manual\"\nstart = \"2026-11-23T09:00:00Z\"\n",
    );
    let daemon = ws.start();
    // t-0 to t-299 escalated at 09:00, t-300 to t-599 an hour later. By
    // name t-6 to t-99 come last, after every t-5xx.
    let events = numbered_events(600, "task.created", "task", |n| json!({"n": n}));
    daemon.accept_all(&events[..300]).await;
    daemon
        .wait_for_trail("c-299", |t| !t["processed_at_ms"].is_null())
        .await;
    daemon.advance_clock("1h").await;
    daemon.accept_all(&events[300..]).await;
    daemon
        .wait_for_trail("c-599", |t| !t["processed_at_ms"].is_null())
        .await;

    let (status, page) = daemon.get("/ui?kind=escalation").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.matches(r#"data-kind="escalation""#).count(), 500);
    for older in ["t-0", "t-7", "t-99", "t-299"] {
        assert!(
            page.contains(&format!(r#"href="/ui/records/task/{older}""#)),
            "{older}, escalated first, is listed"
        );
    }
    // Of the later ones, as old as each other, the first 200 by name.
    assert!(page.contains(r#"href="/ui/records/task/t-499""#), "{page}");
    assert!(!page.contains(r#"href="/ui/records/task/t-500""#), "{page}");
    assert!(!page.contains(r#"href="/ui/records/task/t-599""#), "{page}");
    assert!(
        page.contains(
            "More than 500 escalations: listed are the oldest (of at most the first 20,000 records by name)."
        ),
        "{page}"
    );
}
