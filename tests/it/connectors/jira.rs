//! Jira: Atlassian's documented issue event, signed, decoded onto its
//! campaign and deduplicated by its webhook identifier; a JQL poll of a
//! fake Jira through two pages, a 429 and a 5xx, resumed after `kill -9`;
//! and escalations that create and comment on issues with the credential
//! the host injects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use converge_testkit::sink::{Received, Reply, Sink};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    deliver, fixture, fixture_json, hmac_sha256, notifications, processed_trails, statuses,
    task_plugin,
};
use crate::support::{Workspace, actions_settled};

const ISSUE_UPDATED: &str = "jira/jira_issue_updated.with_changelog_and_comment.json";
const SECRET: &str = "a jira webhook secret";
const SECRET_ENV: &str = "CONVERGE_TEST_JIRA_SECRET";
const TOKEN_ENV: &str = "CONVERGE_TEST_JIRA_TOKEN";

/// Jira's API tokens go as Basic `email:token`.
fn basic_token() -> String {
    base64::engine::general_purpose::STANDARD.encode("mops-bot@example.com:jira-api-token-e2e")
}

fn plugin(api: &str) -> String {
    task_plugin("jira", api, TOKEN_ENV, "Basic")
}

fn signature(body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[body]))
    )
}

/// A hook that decodes Jira's payloads; the fixture's project `JRA` is the
/// campaign `Spring Launch`.
fn hook() -> String {
    format!(
        r#"
[hooks.jira]
verify = "jira"
secret_env = "{SECRET_ENV}"
decode = "jira"
config = {{ campaign = {{ label_prefix = "campaign:", projects = {{ JRA = "Spring Launch" }} }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jira_delivery_is_verified_decoded_onto_its_campaign_and_deduplicated_by_its_signed_body()
{
    let ws = Workspace::new(
        &[(
            "jira",
            r#"
if event.type == "jira.issue.updated" {
    let change = event.data.changes[0];
    notify("ops", `${event.data.key} (${event.data.campaign}): ${change.field} "${change.from}" -> "${change.to}"; ${event.data.comment.author}: ${event.data.comment.body}`);
}
"#,
        )],
        &format!("{}{}", plugin("127.0.0.1:9"), hook()),
    );
    let daemon = ws.start_with_env(&[(SECRET_ENV, SECRET)]);
    let body = fixture(ISSUE_UPDATED);
    let signed = signature(&body);
    let headers = |identifier| {
        [
            ("content-type", "application/json"),
            ("x-atlassian-webhook-identifier", identifier),
            ("x-atlassian-webhook-flow", "Primary"),
            ("x-hub-signature", signed.as_str()),
        ]
    };

    let events = deliver(&daemon, "jira", &headers("6f0a1c9e-1d4b"), body.clone()).await;
    assert_eq!(statuses(&events), ["accepted"]);
    // The id comes from the signed body, not the unsigned identifier.
    let id = events[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("jira-"), "{id}");
    let trail = &processed_trails(&daemon, &events).await[0];
    assert_eq!(trail["type"], "jira.issue.updated", "{trail}");
    assert_eq!(trail["subject"], "campaign/Spring-Launch");
    assert_eq!(trail["source"], "https://jira.atlassian.com");
    assert_eq!(
        notifications(trail),
        [
            r#"JRA-20002 (Spring Launch): summary "What is going on here?????" -> "A new summary."; Bryan Rollins [Atlassian]: Just in time for AtlasCamp!"#
        ]
    );

    // Jira retries a delivery with the same identifier: nothing new.
    let mut retry = headers("6f0a1c9e-1d4b").to_vec();
    retry.push(("x-atlassian-webhook-retry", "1"));
    let again = deliver(&daemon, "jira", &retry, body.clone()).await;
    assert_eq!(statuses(&again), ["duplicate"]);
    assert_eq!(again[0]["id"], id.as_str());

    // A captured delivery sent again under a new identifier is the same
    // event: a duplicate, its rules and actions do not run again.
    let replayed = deliver(&daemon, "jira", &headers("8b2d7e40-9c1a"), body.clone()).await;
    assert_eq!(statuses(&replayed), ["duplicate"]);
    assert_eq!(replayed[0]["id"], id.as_str());

    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("AtlasCamp", "anyone");
    let (status, _, answer) = daemon
        .request(
            Method::POST,
            "/hooks/jira",
            &headers("c0ffee00-0001"),
            tampered,
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(daemon.metric("converge_journal_events").await, 1.0);
    assert!(!daemon.log().contains(SECRET));
}

/// An issue of the fixture's shape in project MOPS, on the campaign
/// `spring-launch` by label, with its times in the fixture's time zone.
fn issue(key: &str, created: &str, updated: &str) -> Value {
    let mut issue = fixture_json(ISSUE_UPDATED)["issue"].clone();
    issue["key"] = key.into();
    issue["id"] = key.trim_start_matches("MOPS-").into();
    let fields = &mut issue["fields"];
    fields["created"] = created.into();
    fields["updated"] = updated.into();
    fields["project"] = json!({"key": "MOPS"});
    fields["status"] = json!({"name": "In Progress"});
    fields["labels"]
        .as_array_mut()
        .unwrap()
        .push("campaign:spring-launch".into());
    issue
}

fn updated(issue: &Value) -> &str {
    issue["fields"]["updated"].as_str().unwrap()
}

/// `2024-03-01T09:05:00.000-0600` -> `2024/03/01 09:05`, as JQL compares.
fn minute(time: &str) -> String {
    format!("{} {}", time[..10].replace('-', "/"), &time[11..16])
}

/// Jira's search, as far as the plugin uses it: the issues updated in or
/// after the JQL's `updated >= "<minute>"`, by `updated` then key, the page
/// at `startAt` of `maxResults`.
fn search(issues: &[Value], request: &Received) -> Value {
    let jql = request.param("jql").unwrap();
    let since = jql
        .split_once("updated >= \"")
        .map(|(_, rest)| rest[..16].to_string());
    let mut found: Vec<&Value> = issues
        .iter()
        .filter(|i| since.as_ref().is_none_or(|s| minute(updated(i)) >= *s))
        .collect();
    found.sort_by_key(|i| (updated(i), i["key"].as_str().unwrap()));
    let start: usize = request.param("startAt").unwrap().parse().unwrap();
    let max: usize = request.param("maxResults").unwrap().parse().unwrap();
    let page: Vec<&Value> = found.iter().skip(start).take(max).copied().collect();
    json!({"startAt": start, "maxResults": max, "total": found.len(), "issues": page})
}

fn poll_ids(keys_and_times: &[(&str, &str)]) -> Vec<String> {
    keys_and_times
        .iter()
        .map(|(key, time)| format!("poll:{key}@{time}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jira_poll_pages_through_a_rate_limit_and_a_5xx_and_resumes_after_kill_9() {
    const T1: &str = "2024-03-01T09:00:00.000-0600";
    const T2: &str = "2024-03-01T09:05:00.000-0600";
    const T3: &str = "2024-03-01T09:10:00.000-0600";
    const T4: &str = "2024-03-01T09:20:00.000-0600";
    let issues = Arc::new(Mutex::new(vec![
        issue("MOPS-1", T1, T1),
        issue("MOPS-2", T1, T2),
        issue("MOPS-3", T2, T3),
    ]));
    let served = issues.clone();
    // The second request is rate limited, the third fails: both ask for the
    // second page, which must then come once.
    let api = Sink::answering(move |request, n| match n {
        1 => Reply::json(json!({"errorMessages": ["Rate limit exceeded"]}))
            .with_status(429)
            .header("retry-after", "3"),
        2 => Reply::status(503, "upstream unavailable"),
        _ => Reply::json(search(&served.lock().unwrap(), request)),
    })
    .await;
    let ws = Workspace::new(
        &[(
            "jira",
            r#"if event.type.starts_with("jira.issue.") { notify("ops", `${event.type} ${event.data.key} ${event.data.status}`); }"#,
        )],
        &format!(
            r#"{plugin}
[[polls]]
name = "mops-issues"
plugin = "jira"
interval = "5s"
config = {{ base_url = "{url}", poll = {{ jql = "project = MOPS", page_size = 2 }}, campaign = {{ label_prefix = "campaign:" }} }}
"#,
            plugin = plugin(&api.host()),
            url = api.url(""),
        ),
    );
    let token = basic_token();
    let env = [(TOKEN_ENV, token.as_str())];
    let daemon = ws.start_with_env(&env);

    // Page 1: MOPS-1, MOPS-2 (full, so at once) -> 429 -> 503 -> page 2
    // from MOPS-2's minute: MOPS-2 again, MOPS-3 -> page 3: MOPS-3 alone.
    daemon
        .wait_for_metric("converge_poll_pages_total", 3.0)
        .await;
    let requests = api.wait_for_or(5, || daemon.log()).await;
    assert_eq!(daemon.metric("converge_poll_failures_total").await, 2.0);
    assert_eq!(daemon.metric("converge_journal_events").await, 3.0);
    assert_eq!(daemon.metric("converge_events_duplicate_total").await, 2.0);
    for request in &requests {
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/rest/api/3/search");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Basic {token}").as_str())
        );
    }
    let jql = |i: usize| requests[i].param("jql").unwrap();
    assert_eq!(jql(0), "(project = MOPS) ORDER BY updated ASC, key ASC");
    // The page refused twice is asked for again from the same cursor.
    let second_page =
        r#"(project = MOPS) AND updated >= "2024/03/01 09:05" ORDER BY updated ASC, key ASC"#;
    for (i, request) in requests.iter().enumerate().take(4).skip(1) {
        assert_eq!(request.param("jql").unwrap(), second_page, "request {i}");
        assert_eq!(request.param("startAt").unwrap(), "0");
    }
    assert!(
        requests[2].at - requests[1].at >= Duration::from_secs(3),
        "the poll waited {:?}, not the 3 s of Retry-After",
        requests[2].at - requests[1].at
    );
    assert!(jql(4).contains(r#"updated >= "2024/03/01 09:10""#));

    let ids = poll_ids(&[("MOPS-1", T1), ("MOPS-2", T2), ("MOPS-3", T3)]);
    let answered: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    let trails = processed_trails(&daemon, &answered).await;
    assert_eq!(trails[0]["type"], "jira.issue.created");
    assert_eq!(trails[1]["type"], "jira.issue.updated");
    for trail in &trails {
        assert_eq!(trail["subject"], "campaign/spring-launch", "{trail}");
        assert_eq!(trail["source"], api.url("").as_str());
    }
    assert_eq!(
        notifications(&trails[2]),
        ["jira.issue.updated MOPS-3 In Progress"]
    );
    daemon.kill9();

    // While converge is down, MOPS-4 changes. Restarted, the poll asks from
    // the stored cursor (MOPS-3's minute), gets MOPS-3 again and MOPS-4.
    issues.lock().unwrap().push(issue("MOPS-4", T1, T4));
    let before = api.received().len();
    let daemon = ws.start_with_env(&env);
    daemon.wait_for_metric("converge_journal_events", 4.0).await;
    let requests = api.wait_for_or(before + 1, || daemon.log()).await;
    assert_eq!(
        requests[before].param("jql").unwrap(),
        r#"(project = MOPS) AND updated >= "2024/03/01 09:10" ORDER BY updated ASC, key ASC"#
    );
    let id = &poll_ids(&[("MOPS-4", T4)])[0];
    let trail = &processed_trails(&daemon, &[json!({"id": id})]).await[0];
    assert_eq!(trail["type"], "jira.issue.updated");
    // Nothing journaled twice: each issue once, for all the pages read again.
    assert_eq!(daemon.metric("converge_journal_events").await, 4.0);
    for id in &ids {
        let (status, body) = daemon.get(&format!("/v1/events/{id}")).await;
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_creates_and_comments_on_jira_issues_with_the_injected_credential() {
    let api = Sink::answering(|request, _| {
        match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/rest/api/3/issue") => Reply::json(
                json!({"id": "10101", "key": "MOPS-101", "self": "http://jira/rest/api/3/issue/10101"}),
            )
            .with_status(201),
            ("POST", "/rest/api/3/issue/JRA-20002/comment") => {
                Reply::json(json!({"id": "300001"})).with_status(201)
            }
            _ => Reply::status(404, ""),
        }
    })
    .await;
    let routes = format!(
        r#"
[[routes]]
decision = "escalate"
plugin = "jira"
name = "escalations-to-jira"
config = {{ base_url = "{url}", action = "create_task", project = "MOPS", labels = ["converge"], campaign = {{ label_prefix = "campaign:" }} }}

[[routes]]
decision = "escalate"
plugin = "jira"
name = "escalations-on-the-issue"
config = {{ base_url = "{url}", action = "comment" }}
"#,
        url = api.url("")
    );
    let ws = Workspace::new(
        &[(
            "jira",
            r#"
if event.type == "jira.issue.updated" {
    escalate("mops_leads", `${event.data.key} changed its ${event.data.changes[1].field}`, 2);
}
"#,
        )],
        &format!("{}{}{routes}", plugin(&api.host()), hook()),
    );
    let token = basic_token();
    let daemon = ws.start_with_env(&[(SECRET_ENV, SECRET), (TOKEN_ENV, token.as_str())]);
    let body = fixture(ISSUE_UPDATED);
    let events = deliver(
        &daemon,
        "jira",
        &[
            ("content-type", "application/json"),
            ("x-atlassian-webhook-identifier", "a1b2c3d4-0001"),
            ("x-hub-signature", &signature(&body)),
        ],
        body,
    )
    .await;
    let trail = daemon
        .wait_for_trail(events[0]["id"].as_str().unwrap(), actions_settled)
        .await;
    let decision = &trail["decisions"][0];
    assert_eq!(decision["decision"]["kind"], "escalate", "{trail}");
    let actions = decision["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2, "{trail}");
    for action in actions {
        assert_eq!(action["status"], "done", "{trail}\n{}", daemon.log());
    }
    let external: Vec<&str> = actions
        .iter()
        .map(|a| a["external_id"].as_str().unwrap())
        .collect();
    assert!(external.contains(&"MOPS-101"), "{trail}");
    assert!(external.contains(&"300001"), "{trail}");

    let requests = api.wait_for_or(2, || daemon.log()).await;
    let create = requests
        .iter()
        .find(|r| r.path == "/rest/api/3/issue")
        .expect("an issue created");
    assert_eq!(create.method, "POST");
    let fields = &create.body["fields"];
    assert_eq!(fields["project"], json!({"key": "MOPS"}));
    assert_eq!(fields["issuetype"], json!({"name": "Task"}));
    assert_eq!(
        fields["summary"],
        "Escalation (level 2) to mops_leads: JRA-20002 changed its issuetype (campaign/Spring-Launch)"
    );
    // Labelled with its campaign, so the new issue's own events map back.
    assert_eq!(
        fields["labels"],
        json!(["converge", "campaign:Spring-Launch"])
    );
    assert_eq!(fields["description"]["type"], "doc");
    let description = fields["description"].to_string();
    for line in [
        "Subject: campaign/Spring-Launch",
        &format!("Event: {}", events[0]["id"].as_str().unwrap()),
        "Rule: jira",
    ] {
        assert!(description.contains(line), "{line} not in {description}");
    }
    let comment = requests
        .iter()
        .find(|r| r.path == "/rest/api/3/issue/JRA-20002/comment")
        .expect("a comment on the issue the event is about");
    assert_eq!(comment.method, "POST");
    assert_eq!(comment.body["body"]["type"], "doc");

    // The host added the credential; the plugin's config never held it and
    // the daemon never wrote it.
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Basic {token}").as_str())
        );
        assert!(!request.body.to_string().contains(&token));
    }
    let config = std::fs::read_to_string(ws.config()).unwrap();
    assert!(!config.contains(&token) && !config.contains("jira-api-token-e2e"));
    let log = daemon.log();
    assert!(!log.contains(&token) && !log.contains("jira-api-token-e2e"));
}
