//! How fast the journal takes events with `Durability::Full`: appends 200,000
//! events in batches of 256, one `Store::write` (one transaction, one fsync)
//! per batch, as the daemon's writer thread does. Then processes them all the
//! same way: entity state for each, and a decision with one action for every
//! tenth.
//!
//! `cargo run --release -p converge-store --example journal_throughput [DIR]`
//! DIR is where the database goes (default: a temporary directory); put it on
//! the disk you care about, since fsync cost is the point.

use std::time::Instant;

use converge_model::{Decision, DecisionKind, EntityKey, EntityState};
use converge_store::{
    Durability, Location, NewAction, NewDecision, NewEvent, PayloadJson, ProcessedEvent, Store,
    WriteBatch,
};

const EVENTS: usize = 200_000;
const BATCH: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let path = dir.path().join("converge.db");
    let mut store = Store::open(&Location::Sqlite {
        path: path.clone(),
        durability: Durability::Full,
    })?;

    let batches: Vec<WriteBatch> = (0..EVENTS)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| WriteBatch {
            appends: chunk.iter().map(|&i| event(i)).collect(),
            ..WriteBatch::default()
        })
        .collect();

    let start = Instant::now();
    for batch in &batches {
        store.write(batch)?;
    }
    let elapsed = start.elapsed();
    let counts = store.counts()?;
    assert_eq!(counts.events, EVENTS as i64);
    println!(
        "{EVENTS} events in {} batches of {BATCH} (synchronous=FULL) in {:.2?}: {:.0} events/s, {:.0} commits/s",
        batches.len(),
        elapsed,
        EVENTS as f64 / elapsed.as_secs_f64(),
        batches.len() as f64 / elapsed.as_secs_f64(),
    );

    let start = Instant::now();
    let mut actions = 0;
    for batch in batches_processing(&batches)? {
        actions += store.write(&batch)?.actions.len();
    }
    let elapsed = start.elapsed();
    assert_eq!(store.processed_cursor()?, EVENTS as i64);
    println!(
        "processed them in {:.2?}: {:.0} events/s ({actions} actions created)",
        elapsed,
        EVENTS as f64 / elapsed.as_secs_f64(),
    );
    println!("database: {}", path.display());
    Ok(())
}

/// A task update the size of a typical tracker webhook (~400 bytes).
fn event(i: usize) -> NewEvent {
    let id = format!("evt-{i:08}");
    let subject = format!("task/JIRA-{}", i % 5_000);
    let json = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"https://jira.example.com/webhooks","type":"task.updated","subject":"{subject}","time":"2026-11-23T10:00:00Z","datacontenttype":"application/json","data":{{"stage":"review","owner":"ana@example.com","priority":"high","summary":"Fall campaign email copy needs legal review before Friday","sprint":42}}}}"#
    );
    NewEvent {
        hook: None,
        source: "https://jira.example.com/webhooks".into(),
        id,
        ty: "task.updated".into(),
        subject: Some(subject),
        json,
        received_at_ms: 1_790_000_000_000 + i as i64,
    }
}

/// What processing each batch of events would commit.
fn batches_processing(
    batches: &[WriteBatch],
) -> Result<Vec<WriteBatch>, Box<dyn std::error::Error>> {
    let at = "2026-11-23T10:00:00Z".parse()?;
    let mut seq = 0;
    let mut processing = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut processed = Vec::with_capacity(batch.appends.len());
        for event in &batch.appends {
            seq += 1;
            let key = EntityKey::parse(event.subject.as_deref().unwrap_or_default())
                .ok_or("every event is about a task")?;
            let mut entity = EntityState::new(&key, at);
            entity.set("stage", "review".into(), at);
            let decisions = if seq % 10 == 0 {
                vec![NewDecision {
                    decision: Decision {
                        rule: "stalled".into(),
                        rule_hash: "ab12".into(),
                        kind: DecisionKind::Notify {
                            to: "review_owner".into(),
                            message: "no progress for 48h".into(),
                        },
                        trace: None,
                    },
                    shadow: false,
                    actions: vec![NewAction {
                        route: "slack".into(),
                        plugin: "slack".into(),
                        payload: PayloadJson::stored(
                            r##"{"channel":"#reviews","text":"no progress for 48h"}"##.into(),
                        ),
                        payload_key: None,
                    }],
                }]
            } else {
                Vec::new()
            };
            processed.push(ProcessedEvent {
                seq,
                entity: Some(entity.into()),
                decisions,
                rule_failures: Vec::new(),
                processed_at_ms: event.received_at_ms + 1,
                ..ProcessedEvent::default()
            });
        }
        processing.push(WriteBatch {
            processed,
            ..WriteBatch::default()
        });
    }
    Ok(processing)
}
