//! Rules and health: the rules loaded (and the last reload, with its
//! errors), each rule's decisions and failures over the last day with the
//! shadow rules' beside the live ones, the timers waiting on each rule
//! (and those an earlier version or a removed rule made), where the
//! journal, outbox and timers stand, the daemons sharing the database with
//! the duties each runs, and the event sources with their last events.

use std::path::PathBuf;
use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use converge_store::{RuleActivity, RuleTimers};
use maud::{Markup, html};

use super::needs_action::Row;
use super::session::Viewer;
use super::{Page, Section, answer, read, span, when};
use crate::cluster::{Duty, Member};
use crate::config::Config;
use crate::web::{AppState, TIMERS_COUNTED, wire_duty};

/// One event source of the config.
#[derive(Debug, Clone)]
pub struct Source {
    /// `hook`, `drop folder`, `poll` or `schedule`.
    pub kind: &'static str,
    pub name: String,
    /// How it takes events: a scheme, a folder, a plugin, a cron expression.
    pub detail: String,
    /// A drop folder's inbox.
    pub dir: Option<PathBuf>,
}

impl Source {
    pub fn from_config(config: &Config) -> Vec<Source> {
        let mut sources = Vec::new();
        for hook in config.hooks.values() {
            sources.push(Source {
                kind: "hook",
                name: hook.name.clone(),
                detail: match &hook.decode {
                    Some(decode) => {
                        format!("{} signature, decoded by {}", hook.scheme, decode.plugin)
                    }
                    None => format!("{} signature, CloudEvents", hook.scheme),
                },
                dir: None,
            });
        }
        for drop in &config.file_drops {
            sources.push(Source {
                kind: "drop folder",
                name: drop.name.clone(),
                detail: drop.dir.display().to_string(),
                dir: Some(drop.dir.clone()),
            });
        }
        for poll in &config.polls {
            sources.push(Source {
                kind: "poll",
                name: poll.name.clone(),
                detail: format!(
                    "{} every {}",
                    poll.plugin,
                    humantime::format_duration(poll.interval)
                ),
                dir: None,
            });
        }
        for schedule in &config.schedules {
            sources.push(Source {
                kind: "schedule",
                name: schedule.name.clone(),
                detail: format!("{} ({})", schedule.cron_text, schedule.timezone),
                dir: None,
            });
        }
        sources
    }

    /// What one daemon at a time does for it when daemons share the
    /// database: reading a drop folder, running a poll.
    fn duty(&self) -> Option<Duty> {
        match self.kind {
            "drop folder" => Some(Duty::FileDrop(self.name.clone())),
            "poll" => Some(Duty::Poll(self.name.clone())),
            _ => None,
        }
    }

    /// The key its activity is counted under (`telemetry::SourceActivity`).
    fn activity_key(&self) -> String {
        let kind = match self.kind {
            "drop folder" => "drop",
            other => other,
        };
        format!("{kind}/{}", self.name)
    }
}

/// The newest error reports (`*.errors.json`) of the drop folders, as
/// exception rows: files with bad rows, or that could not be read.
pub fn drop_reports(sources: &[Source], per_folder: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for source in sources {
        let Some(dir) = &source.dir else { continue };
        let mut reports: Vec<(SystemTime, PathBuf)> = ["processed", "failed"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".errors.json"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        reports.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (modified, path) in reports.into_iter().take(per_folder) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(report) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let file = report["file"].as_str().unwrap_or("?").to_string();
            let mut what = vec![match report["file_error"].as_str() {
                Some(error) => format!("{} ({}): {error}", file, source.name),
                None => format!(
                    "{} ({}): {} bad row(s), {} event(s) taken",
                    file, source.name, report["bad_rows"], report["events"]
                ),
            }];
            for error in report["errors"].as_array().into_iter().flatten().take(3) {
                let at = error["line"]
                    .as_u64()
                    .map(|l| format!("line {l}"))
                    .or_else(|| error["row"].as_u64().map(|r| format!("row {r}")))
                    .unwrap_or_else(|| "a row".into());
                what.push(format!("{at}: {}", error["reason"].as_str().unwrap_or("?")));
            }
            what.push(format!("report: {}", path.display()));
            rows.push(Row {
                kind: "exception",
                record: None,
                owner: None,
                campaign: None,
                what,
                since: Some(DateTime::<Utc>::from(modified)),
                next: None,
                action: None,
                cause: None,
            });
        }
    }
    rows
}

struct Standing {
    activity: Vec<RuleActivity>,
    head: i64,
    processed: i64,
    counts: converge_store::Counts,
    timers_pending: i64,
    /// The pending timers each rule version made (of the soonest
    /// [`TIMERS_COUNTED`]).
    rule_timers: Vec<RuleTimers>,
    /// The daemons sharing the database; `None` for a daemon alone.
    members: Option<Vec<Member>>,
}

#[derive(serde::Deserialize)]
pub struct HealthQuery {
    /// What an action from this page did (cancelling timers).
    notice: Option<String>,
}

/// `GET /ui/health`.
pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<HealthQuery>,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let since = now - Duration::hours(24);
    let version = match super::version_or_unchanged(&state, &headers, now).await {
        Ok(version) => version,
        Err(unchanged) => return unchanged,
    };
    let sharing = state.holder.is_some();
    let loaded = read(&state, move |store| {
        Ok(Standing {
            activity: store.rule_activity(since.timestamp_millis())?,
            head: store.journal_head()?,
            processed: store.processed_cursor()?,
            counts: store.counts()?,
            timers_pending: store.pending_timer_count()?,
            rule_timers: store.pending_timers_by_rule(TIMERS_COUNTED)?,
            members: if sharing {
                Some(crate::cluster::members(store)?)
            } else {
                None
            },
        })
    })
    .await;
    let standing = match loaded {
        Ok(standing) => standing,
        Err(page) => return page,
    };
    let viewer = state.console.sessions.viewer(&headers);
    let (rules, history) = state.rules.current_with_history();
    let wall = Utc::now();
    let stale = stale_timers(&rules, &standing.rule_timers);
    answer(|| {
        Page {
            title: "Rules & health",
            section: Section::Health,
            viewer: viewer.as_ref(),
            url: "/ui/health",
            version: &version,
            now,
        }
        .render(html! {
            (super::notice(query.notice.as_deref()))
            section.summary {
                dl {
                    dt { "converge" } dd { (env!("CARGO_PKG_VERSION")) small { " up " (span((wall - state.started_at).num_seconds())) } }
                    dt { "Clock" } dd { (now.format("%Y-%m-%d %H:%M:%S UTC")) @if state.clock.as_manual().is_some() { " " span.tag.held { "manual" } } }
                    dt { "Journal" } dd { (standing.head) " events, " (standing.head - standing.processed) " waiting for the rules" }
                    dt { "Actions" } dd { (standing.counts.actions_pending) " pending, " (standing.counts.actions_done) " done" }
                    dt { "Dead letters" } dd {
                        @if standing.counts.dead_letters > 0 {
                            a href="/ui?kind=dead_letter" { (standing.counts.dead_letters) " waiting for a person" }
                        } @else { "none" }
                    }
                    dt { "Timers" } dd { (standing.timers_pending) " pending" }
                }
            }
            section #rules {
                h2 { "Rules" }
                p {
                    "Loaded " (when(rules.loaded_at, wall)) " (" (rules.live.rules().len()) " live, " (rules.shadow.rules().len()) " shadow)."
                    @if let Some((at, ok)) = history.last {
                        " Last reload " (when(at, wall)) ": " @if ok { span.yes { "ok" } } @else { span.no { "failed" } }
                    }
                }
                @if let Some((at, errors)) = &history.error {
                    div.error role="alert" {
                        p { "The reload " (when(*at, wall)) " failed; the rules above keep running:" }
                        ul { @for error in errors { li { code { (error) } } } }
                    }
                }
                (rule_table(&rules, &standing.activity, &standing.rule_timers))
                (timers_of_rules_gone(&stale))
                (cancel_forms(&stale, viewer.as_ref()))
                @if standing.timers_pending > TIMERS_COUNTED as i64 {
                    p { small { "Waiting timers are counted among the " (TIMERS_COUNTED) " due soonest of " (standing.timers_pending) "." } }
                }
            }
            @if let (Some(members), Some(holder)) = (&standing.members, &state.holder) {
                (daemons(members, holder, &state.console.sources))
            }
            section #sources {
                h2 { "Sources" }
                @if state.console.sources.is_empty() {
                    p.empty { "The config names no hook, drop folder, poll or schedule." }
                }
                // Whether anyone who can reach the daemon may post events
                // unverified: what an operator must know about its intake.
                p #unlisted-hooks {
                    @if state.hooks.accept_unlisted {
                        "Hooks the config does not list are " b { "accepted" } ": CloudEvents posted to any "
                        code { "/hooks/<name>" } " are journaled without a signature check ("
                        code { "server.unlisted_hooks = \"accept\"" } "; use " code { "\"reject\"" }
                        " beyond loopback)."
                    } @else {
                        "Hooks the config does not list are refused (404): only the hooks below take events."
                    }
                }
                table.rows {
                    thead { tr { th { "Kind" } th { "Name" } th { "How" } th { "Last events" } } }
                    tbody {
                        @for source in state.console.sources.iter() {
                            tr {
                                td { (source.kind) }
                                td { (source.name) }
                                td { code.path { (source.detail) } }
                                td {
                                    (last_events(&state, source, wall))
                                    @if let Some(members) = &standing.members {
                                        (run_by(members, source, state.holder.as_deref()))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
    })
}

fn last_events(state: &AppState, source: &Source, wall: DateTime<Utc>) -> Markup {
    if let Some(dir) = &source.dir {
        let newest = ["processed", "failed"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max();
        return match newest {
            Some(at) => html! { "last file taken " (when(DateTime::<Utc>::from(at), wall)) },
            None => html! { "no file taken yet" },
        };
    }
    match state.metrics.sources.get(&source.activity_key()) {
        Some(seen) => html! { (seen.events) " since start, last " (when(seen.at, wall)) },
        None => html! { "none since start" },
    }
}

/// The daemons sharing the database: each one's partitions and duties, this
/// one marked, and the sources no daemon reads now (their leases expired
/// and not taken yet, or no daemon can run them).
fn daemons(members: &[Member], holder: &str, sources: &[Source]) -> Markup {
    let unrun: Vec<Duty> = sources
        .iter()
        .filter_map(Source::duty)
        .filter(|duty| !members.iter().any(|m| m.duties.contains(duty)))
        .collect();
    html! {
        section #daemons {
            h2 { "Daemons" }
            p {
                (members.len()) " daemon(s) share this database. Each processes the entities of its partitions (of "
                (converge_store::PARTITIONS) ") and runs the sources it holds; a daemon that stops hands them to the others, one that dies once its leases expire ("
                code { "storage.lease_ttl" } ")."
            }
            table.rows {
                thead { tr { th { "Daemon" } th.n { "Partitions" } th { "Runs" } } }
                tbody {
                    @for member in members {
                        tr {
                            td { code { (member.holder) } @if member.holder == holder { " " span.tag { "this one" } } }
                            td.n { (member.partitions) }
                            td {
                                @if member.duties.is_empty() { span.empty { "no source" } }
                                @for (i, duty) in member.duties.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (wire_duty(duty).to_string())
                                }
                            }
                        }
                    }
                }
            }
            @if !unrun.is_empty() {
                div.error role="alert" #unrun {
                    "No daemon runs "
                    @for (i, duty) in unrun.iter().enumerate() {
                        @if i > 0 { ", " }
                        b { (wire_duty(duty).to_string()) }
                    }
                    " now. A daemon takes a free source within a second: if this stays, read the daemons' logs."
                }
            }
        }
    }
}

/// Which daemon reads a drop folder or runs a poll, when daemons share the
/// database: a poll's counts above are only this daemon's (a folder's last
/// file is read from the folder itself).
fn run_by(members: &[Member], source: &Source, holder: Option<&str>) -> Markup {
    let Some(duty) = source.duty() else {
        return html! {};
    };
    let (verb, counted_there) = match duty {
        Duty::Poll(_) => ("polled", "; counted there"),
        _ => ("read", ""),
    };
    let runner = members.iter().find(|m| m.duties.contains(&duty));
    html! {
        br;
        small {
            @match runner {
                Some(m) if Some(m.holder.as_str()) == holder => { (verb) " by this daemon" },
                Some(m) => { (verb) " by " code { (m.holder) } (counted_there) },
                None => "no daemon has it now",
            }
        }
    }
}

/// The timers still waiting from rules no longer loaded: they fire as
/// planned, and the rules loaded then decide their events.
fn timers_of_rules_gone(stale: &[StaleTimers<'_>]) -> Markup {
    let gone: Vec<&StaleTimers<'_>> = stale.iter().filter(|s| s.gone).collect();
    html! {
        @if !gone.is_empty() {
            p #timers-of-rules-gone {
                "Timers still waiting from rules no longer loaded: "
                @for (i, stale) in gone.iter().enumerate() {
                    @if i > 0 { ", " }
                    b { (stale.rule) } " (" (stale.pending) ")"
                }
                ". They fire as planned, and the rules loaded then decide their events."
            }
        }
    }
}

/// Timers a rule version no longer loaded made: an earlier version of a
/// loaded rule's, or a removed rule's.
#[derive(Debug, PartialEq)]
struct StaleTimers<'a> {
    rule: &'a str,
    /// The versions that made them; all of the rule's when it is gone.
    versions: Vec<&'a str>,
    pending: i64,
    gone: bool,
}

fn stale_timers<'a>(
    rules: &crate::reload::LoadedRules,
    timers: &'a [RuleTimers],
) -> Vec<StaleTimers<'a>> {
    let mut stale: Vec<StaleTimers<'a>> = Vec::new();
    for (t, gone) in rules.stale_timers(timers) {
        match stale.last_mut() {
            Some(last) if last.rule == t.rule => {
                last.versions.push(&t.rule_hash);
                last.pending += t.pending;
            }
            _ => stale.push(StaleTimers {
                rule: &t.rule,
                versions: vec![&t.rule_hash],
                pending: t.pending,
                gone,
            }),
        }
    }
    stale
}

/// For a person who may act: a form per rule to cancel the timers its
/// earlier versions made, or a removed rule's, with why (kept with each).
fn cancel_forms(stale: &[StaleTimers<'_>], viewer: Option<&Viewer>) -> Markup {
    let Some(viewer) = viewer.filter(|v| v.can_act) else {
        return html! {};
    };
    html! {
        @for timers in stale {
            form.act.cancel-timers method="post" action="/ui/timers/cancel" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="rule" value=(timers.rule);
                // A removed rule's: every version of it.
                input type="hidden" name="versions" value=(if timers.gone { String::new() } else { timers.versions.join(",") });
                span {
                    b { (breakable(timers.rule)) } ": "
                    (timers.pending)
                    @if timers.gone { " timer(s) of a rule no longer loaded" } @else { " timer(s) from an earlier version" }
                }
                input name="reason" required maxlength="2000" placeholder="why (kept with each)" aria-label={ "Reason to cancel the timers of " (timers.rule) };
                button type="submit" { "Cancel them" }
            }
        }
    }
}

/// An identifier (`low_consistency_pause`, `campaign.channel.updated`)
/// that a narrow window may break after each `_` or `.`, never inside a
/// word.
fn breakable(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split_inclusive(['_', '.']).enumerate() {
            @if i > 0 { wbr; }
            (part)
        }
    }
}

/// A rule's waiting timers: all of them, and those an earlier version of
/// it made (they fire as planned; the version loaded decides their events).
fn waiting_timers(rule: &converge_rules::Rule, timers: &[RuleTimers]) -> Markup {
    let mine = timers.iter().filter(|t| t.rule == rule.name);
    let all: i64 = mine.clone().map(|t| t.pending).sum();
    let earlier: i64 = mine
        .filter(|t| t.rule_hash != rule.hash)
        .map(|t| t.pending)
        .sum();
    html! {
        (all)
        @if earlier > 0 { br; small.earlier { (earlier) " from an earlier version" } }
    }
}

/// Each rule with its decisions and failures over the last day; a shadow
/// rule's decisions in their own column, beside the live rule of its name.
fn rule_table(
    rules: &crate::reload::LoadedRules,
    activity: &[RuleActivity],
    timers: &[RuleTimers],
) -> Markup {
    let count = |name: &str, shadow: bool| {
        activity
            .iter()
            .filter(|a| a.rule == name && a.shadow == shadow)
            .map(|a| (a.decisions, a.failures))
            .fold((0, 0), |(d, f), (d2, f2)| (d + d2, f + f2))
    };
    let mut names: Vec<(&str, bool, &converge_rules::Rule)> = rules
        .live
        .rules()
        .iter()
        .map(|r| (r.name.as_str(), false, r))
        .collect();
    for rule in rules.shadow.rules() {
        names.push((rule.name.as_str(), true, rule));
    }
    html! {
        table.rows #rule-activity {
            thead { tr { th { "Rule" } th { "Runs on" } th.n { "Decisions (24h)" } th.n { "Shadow decisions (24h)" } th.n { "Failures (24h)" } th.n { "Waiting timers" } th { "Version" } } }
            tbody {
                @for (name, shadow, rule) in &names {
                    @let (live, live_failures) = count(name, false);
                    @let (in_shadow, shadow_failures) = count(name, true);
                    tr {
                        td { b { (breakable(name)) } @if *shadow { " " span.tag.shadow { "shadow" } } br; small.path { (rule.path.display().to_string()) } }
                        td { (breakable(&rule.events.as_ref().map_or("every event".to_string(), |e| e.join(", ")))) }
                        td.n { @if !*shadow { (live) } }
                        td.n { (in_shadow) }
                        td.n class=(if live_failures + shadow_failures > 0 { "off" } else { "" }) { (live_failures + shadow_failures) }
                        td.n.timers { (waiting_timers(rule, timers)) }
                        td.version { code { (rule.hash.chars().take(12).collect::<String>()) } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(kind: &'static str, name: &str) -> Source {
        Source {
            kind,
            name: name.into(),
            detail: String::new(),
            dir: None,
        }
    }

    #[test]
    fn a_source_no_daemon_runs_is_named_and_a_daemon_without_duties_says_so() {
        let members = [
            Member {
                holder: "vm-1-a".into(),
                partitions: 40,
                duties: vec![Duty::Poll("jira".into())],
            },
            Member {
                holder: "vm-2-b".into(),
                partitions: 24,
                duties: vec![],
            },
        ];
        let sources = [
            source("hook", "github"),
            source("poll", "jira"),
            source("drop folder", "briefs"),
        ];
        let page = daemons(&members, "vm-2-b", &sources).into_string();
        assert!(page.contains("2 daemon(s) share this database"), "{page}");
        assert!(
            page.contains("<code>vm-2-b</code> <span class=\"tag\">this one</span>"),
            "{page}"
        );
        assert!(page.contains("<td>poll jira</td>"), "{page}");
        assert!(page.contains("no source"), "{page}");
        assert!(
            page.contains("No daemon runs <b>drop folder briefs</b> now."),
            "{page}"
        );
        assert_eq!(
            run_by(&members, &sources[1], Some("vm-2-b")).into_string(),
            "<br><small>polled by <code>vm-1-a</code>; counted there</small>"
        );
        assert_eq!(
            run_by(&members, &sources[1], Some("vm-1-a")).into_string(),
            "<br><small>polled by this daemon</small>"
        );
        assert_eq!(
            run_by(&members, &sources[2], Some("vm-2-b")).into_string(),
            "<br><small>no daemon has it now</small>"
        );
        assert_eq!(
            run_by(&members, &sources[0], Some("vm-2-b")).into_string(),
            ""
        );
    }
}
