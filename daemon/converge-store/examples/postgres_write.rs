//! What processing costs on PostgreSQL, in statements and time: journals
//! 10,240 events, then processes them in batches of 256, each event making
//! 4 decisions (the first with an action), 3 timers (one an `expect`),
//! cancelling the expects of its entity, and each batch recording the
//! outcomes of the previous batch's actions: about what `task.handoff`
//! makes through the example rules.
//!
//! `CONVERGE_TEST_POSTGRES=postgres://user:password@host/db \
//!  cargo run --release -p converge-store --example postgres_write`
//!
//! Runs in a database of its own, created and dropped here; the statement
//! counts come from `pg_stat_statements` (which the server must preload)
//! for that database only, `BEGIN` and `COMMIT` included.

use std::time::{Duration, Instant};

use converge_model::{CatchUp, Decision, DecisionKind, EntityKey, EntityState};
use converge_store::{
    ActionOutcome, ExpectedArrival, Location, NewAction, NewDecision, NewEvent, NewTimer,
    OutcomeKind, PayloadJson, ProcessedEvent, Store, TimerKind, WriteBatch,
};
use serde_json::json;

const EVENTS: usize = 10_240;
const BATCH: usize = 256;
const ENTITIES: usize = 5_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::var("CONVERGE_TEST_POSTGRES")
        .map_err(|_| "set CONVERGE_TEST_POSTGRES to a postgres:// URL")?;
    let name = format!("converge_bench_{}", std::process::id());
    let mut admin = postgres::Client::connect(&server, postgres::NoTls)?;
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let outcome = run(&server, &name);
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    outcome
}

fn run(server: &str, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut config: postgres::Config = server.parse()?;
    config.dbname(name);
    let mut stats = config.connect(postgres::NoTls)?;
    stats.batch_execute("CREATE EXTENSION pg_stat_statements")?;
    let mut url = server.to_string();
    let at = url.rfind('/').ok_or("the URL names no database")?;
    url.replace_range(at + 1.., name);
    let mut store = Store::open(&Location::Postgres {
        url,
        password: None,
    })?;

    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(BATCH) {
        store.write(&WriteBatch {
            appends: chunk.iter().map(|&i| event(i)).collect(),
            ..WriteBatch::default()
        })?;
    }

    // From here on: only this database's statistics, only processing.
    stats.execute(
        "SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database WHERE datname = $1",
        &[&name],
    )?;
    let before = statements(&mut stats, name)?;
    let mut elapsed = Duration::ZERO;
    let mut previous_actions = Vec::new();
    let mut batches = 0;
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(BATCH) {
        let batch = WriteBatch {
            processed: chunk.iter().map(|&i| processed(i)).collect(),
            outcomes: std::mem::take(&mut previous_actions),
            ..WriteBatch::default()
        };
        let start = Instant::now();
        let result = store.write(&batch)?;
        elapsed += start.elapsed();
        batches += 1;
        previous_actions = result
            .actions
            .iter()
            .map(|a| ActionOutcome {
                action_id: a.id,
                result: OutcomeKind::Done { external_id: None },
                attempts: 1,
                detail: String::new(),
                finished_at_ms: 9_000,
                lease_token: None,
            })
            .collect();
    }
    let after = statements(&mut stats, name)?;
    let counts = store.counts()?;
    assert_eq!(counts.unprocessed_events, 0);
    println!(
        "{EVENTS} events processed in {batches} batches of {BATCH} in {elapsed:.2?}: \
         {:.1} µs/event, {:.0} events/s, {:.1} statements/batch",
        elapsed.as_secs_f64() * 1e6 / EVENTS as f64,
        EVENTS as f64 / elapsed.as_secs_f64(),
        (after - before) as f64 / batches as f64,
    );
    println!(
        "{} decisions, {} actions done, {} timers pending",
        counts.decisions,
        counts.actions_done,
        store.pending_timer_count()?
    );
    println!("server time per batch, by statement:");
    for row in stats.query(
        "SELECT s.calls, s.total_exec_time, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 70)
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = $1 AND s.query NOT LIKE '%pg_stat_statements%'
           AND s.query NOT LIKE '%pg_database%'
         ORDER BY s.total_exec_time DESC LIMIT 8",
        &[&name],
    )? {
        let (calls, ms, query): (i64, f64, String) = (row.get(0), row.get(1), row.get(2));
        println!(
            "  {:>8.0} µs  {calls:>6} calls  {query}",
            ms * 1e3 / batches as f64
        );
    }
    Ok(())
}

/// Statements run in the benchmark's database so far.
fn statements(stats: &mut postgres::Client, name: &str) -> Result<i64, postgres::Error> {
    stats
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = $1 AND s.query NOT LIKE '%pg_stat_statements%'
               AND s.query NOT LIKE '%pg_database%'",
            &[&name],
        )?
        .try_get(0)
}

fn entity_key(i: usize) -> String {
    format!("task/JIRA-{}", i % ENTITIES)
}

fn event(i: usize) -> NewEvent {
    let id = format!("evt-{i:08}");
    let subject = entity_key(i);
    let json = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"https://jira.example.com/webhooks","type":"task.handoff","subject":"{subject}","data":{{"from":"ana","to":"bo"}}}}"#
    );
    NewEvent {
        hook: None,
        source: "https://jira.example.com/webhooks".into(),
        id,
        ty: "task.handoff".into(),
        subject: Some(subject),
        json,
        received_at_ms: 1_790_000_000_000 + i as i64,
    }
}

fn processed(i: usize) -> ProcessedEvent {
    let at = "2026-11-23T10:00:00Z".parse().expect("a valid time");
    let key = entity_key(i);
    let mut entity = EntityState::new(&EntityKey::parse(&key).expect("a task key"), at);
    entity.set("owner", "bo".into(), at);
    let decision = |rule: &str, actions: Vec<NewAction>| NewDecision {
        decision: Decision {
            rule: rule.into(),
            rule_hash: "ab12".into(),
            kind: DecisionKind::Notify {
                to: "bo".into(),
                message: "a task was handed to you".into(),
            },
            trace: None,
        },
        shadow: false,
        actions,
    };
    let timer = |kind: TimerKind, due: i64| NewTimer {
        entity: key.clone(),
        kind,
        event_type: "task.handoff.stalled".into(),
        data: json!({"from": "ana"}),
        due_at_ms: 1_800_000_000_000 + due,
        catch_up: CatchUp::FireLate,
        rule: "handoff".into(),
        rule_hash: "ab12".into(),
    };
    let received_at_ms = 1_790_000_000_000 + i as i64;
    ProcessedEvent {
        seq: i as i64 + 1,
        entity: Some(entity.into()),
        decisions: vec![
            decision(
                "handoff",
                vec![NewAction {
                    route: "slack".into(),
                    plugin: "slack".into(),
                    payload: PayloadJson::stored(
                        r##"{"channel":"#handoffs","text":"handed to bo"}"##.into(),
                    ),
                    payload_key: None,
                }],
            ),
            decision("handoff-audit", vec![]),
            decision("handoff-owner", vec![]),
            decision("handoff-sla", vec![]),
        ],
        processed_at_ms: received_at_ms + 1,
        timers: vec![
            timer(TimerKind::Schedule, 1),
            timer(TimerKind::Schedule, 2),
            timer(
                TimerKind::Expect {
                    expect_type: "task.handoff".into(),
                },
                3,
            ),
        ],
        cancel_expects: vec![ExpectedArrival::came(key.clone(), "task.handoff")],
        ..ProcessedEvent::default()
    }
}
