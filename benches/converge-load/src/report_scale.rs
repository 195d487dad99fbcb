//! `converge-load report`: how fast `converge report` answers on a large
//! journal. It builds a database of `--events` processed events (a year of
//! task lifecycles: created, handed over, worked, reviewed, some sent back
//! or blocked, done), each decided by the real engine so the metric samples
//! are the daemon's, then times `converge report` over the whole year,
//! whole and sliced, and prints the median of three runs of each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use converge_engine::{Engine, Gates, Input, Rules};
use converge_model::{EntityKey, EntityState, Event};
use converge_rules::{RuleLimits, RuleSet};
use converge_store::{Appended, Durability, Location, NewEvent, ProcessedEvent, Store, WriteBatch};
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Events to journal (about ten per task).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Keep the database here instead of a temporary directory (reused when
    /// it already holds the events).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Events written per transaction while building the database.
const CHUNK: usize = 5_000;

pub fn run(args: ReportArgs, converge: &Path) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("converge.toml");
    std::fs::write(
        &config,
        "[storage]\ndata_dir = \"data\"\ndurability = \"normal\"\n",
    )?;
    let location = Location::Sqlite {
        path: dir.join("data/converge.db"),
        durability: Durability::Normal,
    };
    let mut store = Store::open(&location)?;
    let have = store.processed_cursor()?;
    if have >= args.events as i64 {
        println!("reusing the {have} events in {}", dir.display());
    } else if have > 0 {
        bail!("{} holds {have} events; give an empty --dir", dir.display());
    } else {
        build(&mut store, args.events)?;
    }
    drop(store);
    let size = std::fs::metadata(dir.join("data/converge.db"))?.len();
    println!("database: {:.0} MB", size as f64 / 1e6);

    for slice in [
        &[][..],
        &["--by", "owner"],
        &["--by", "week"],
        &["--by", "campaign"],
    ] {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let out = Command::new(converge)
                .args([
                    "report",
                    "--since",
                    "2026-01-01",
                    "--until",
                    "2027-06-01",
                    "--format",
                    "csv",
                ])
                .args(slice)
                .arg("--config")
                .arg(&config)
                .output()
                .context("running converge report")?;
            times.push(started.elapsed());
            if !out.status.success() {
                bail!(
                    "converge report failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            rows = out.stdout.iter().filter(|b| **b == b'\n').count() - 1;
        }
        times.sort();
        println!(
            "converge report {:<16} {rows:>5} rows  median {:>6.0} ms (runs: {})",
            slice.join(" "),
            times[1].as_secs_f64() * 1000.0,
            times
                .iter()
                .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Journals and processes `events` events through the engine, `CHUNK` at a time.
fn build(store: &mut Store, events: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let rules = RuleSet::compile(Vec::new(), &RuleLimits::default())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let engine = Engine::default();
    let mut gates = Gates::default();
    let mut states: HashMap<EntityKey, EntityState> = HashMap::new();
    let mut lifecycle = Lifecycles::default();
    let mut written = 0;
    let mut samples = 0;
    while written < events {
        let chunk: Vec<(Event, i64)> = (0..CHUNK.min(events - written))
            .map(|_| lifecycle.next())
            .collect();
        let appends: Vec<NewEvent> = chunk
            .iter()
            .map(|(event, at)| NewEvent::from_event(event, *at))
            .collect();
        let appended = store.write(&WriteBatch {
            appends,
            ..WriteBatch::default()
        })?;
        let mut processed = Vec::with_capacity(chunk.len());
        for ((event, at), appended) in chunk.iter().zip(appended.appended) {
            let Appended::New { seq } = appended else {
                bail!("event {} was journaled twice", event.id);
            };
            let key = event.entity_key().context("every event names an entity")?;
            let outcome = engine
                .decide(
                    Rules {
                        live: &rules,
                        shadow: None,
                    },
                    Input {
                        seq,
                        event,
                        entity: states.remove(&key),
                        clock: DateTime::<Utc>::from_timestamp_millis(*at).unwrap_or_default(),
                        entities: None,
                    },
                    &mut gates,
                )
                .map_err(|e| anyhow::anyhow!(e))?;
            if let Some(state) = &outcome.entity {
                states.insert(key, state.clone());
            }
            samples += outcome.samples.len();
            processed.push(ProcessedEvent {
                seq,
                entity: outcome.entity,
                processed_at_ms: *at,
                samples: outcome.samples,
                ..ProcessedEvent::default()
            });
        }
        store.write(&WriteBatch {
            processed,
            ..WriteBatch::default()
        })?;
        written += chunk.len();
        if written % 100_000 < CHUNK {
            println!("  {written} events journaled and processed");
        }
    }
    let elapsed = started.elapsed();
    println!(
        "built {written} events ({samples} metric samples, {} entities) in {:.1?}: {:.0} events/s",
        states.len(),
        elapsed,
        written as f64
            / elapsed
                .as_secs_f64()
                .max(Duration::from_millis(1).as_secs_f64())
    );
    Ok(())
}

/// Task lifecycles one after another, each a fixed script with variations
/// by task number; the tasks start every five minutes from 2026-01-05.
#[derive(Default)]
struct Lifecycles {
    task: usize,
    step: usize,
    events: usize,
}

const OWNERS: [&str; 12] = [
    "ana", "ben", "cy", "dee", "eve", "fin", "gus", "hal", "ivy", "jo", "kai", "lu",
];

impl Lifecycles {
    /// The next event and its time (ms).
    fn next(&mut self) -> (Event, i64) {
        loop {
            if let Some((hours, data)) = self.script(self.task, self.step) {
                self.step += 1;
                self.events += 1;
                let start = 1_767_571_200_000_i64 + self.task as i64 * 300_000; // 2026-01-05
                let at = start + (hours * 3_600_000.0) as i64;
                let event = Event::from_value(json!({
                    "specversion": "1.0",
                    "id": format!("t{}-{}", self.task, self.step),
                    "source": "https://tasks.example.com",
                    "type": "task.updated",
                    "subject": format!("task/T-{}", self.task),
                    "data": data,
                }))
                .expect("a valid event");
                return (event, at);
            }
            self.task += 1;
            self.step = 0;
        }
    }

    /// Step `step` of task `task`: hours after its start and the data.
    fn script(&self, task: usize, step: usize) -> Option<(f64, Value)> {
        let owner = OWNERS[task % OWNERS.len()];
        let next_owner = OWNERS[(task * 7 + 3) % OWNERS.len()];
        let sent_back = task % 10 < 3;
        let blocked = task % 10 == 7;
        let mut steps: Vec<(f64, Value)> = vec![
            (
                0.0,
                json!({"stage": "brief", "owner": owner, "campaign": format!("c-{}", task % 500)}),
            ),
            (2.0, json!({"stage": "in progress"})),
            (5.0, json!({"owner": next_owner})),
            (
                5.0 + (task % 48) as f64,
                json!({"comment": "on it", "actor": next_owner}),
            ),
            (30.0, json!({"stage": "in review"})),
        ];
        if sent_back {
            steps.push((
                34.0 + (task % 20) as f64,
                json!({"stage": "changes requested"}),
            ));
            steps.push((60.0, json!({"stage": "in review"})));
        }
        if blocked {
            steps.push((62.0, json!({"stage": "blocked"})));
            steps.push((62.0 + (task % 72) as f64, json!({"stage": "in review"})));
        }
        steps.push((140.0 + (task % 30) as f64, json!({"stage": "approved"})));
        steps.push((150.0, json!({"stage": "done"})));
        steps.into_iter().nth(step)
    }
}
