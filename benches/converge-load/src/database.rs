//! The large database `converge-load report` and `converge-load console`
//! measure on: `--events` processed events over a year, each decided by the
//! real engine so the entity states and metric samples are the daemon's.
//!
//! Most events are task lifecycles (created, handed over, worked, reviewed,
//! some sent back or blocked, done; a few stay blocked), about ten per
//! task. Among them, one campaign per thousand events: its plan, then three
//! channels (email, social, web) with their offer code, landing page and
//! launch time, then each channel's approval (some disagree on a value,
//! some hold a channel). The total is `--events` either way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use converge_engine::{Engine, Gates, Input, Rules};
use converge_model::{EntityKey, EntityState, Event};
use converge_rules::{RuleLimits, RuleSet};
use converge_store::{Appended, Durability, Location, NewEvent, ProcessedEvent, Store, WriteBatch};
use serde_json::{Value, json};

#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// Events to journal (about ten per task, seven per campaign).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Keep the database here instead of a temporary directory (reused when
    /// it already holds the events).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl DatabaseArgs {
    /// A task the database holds, from the middle of the year.
    pub fn a_task(&self) -> String {
        format!("T-{}", self.events / 20)
    }

    /// A campaign the database holds, if it holds any.
    pub fn a_campaign(&self) -> Option<String> {
        let campaigns = self.events / EVENTS_PER_CAMPAIGN;
        (campaigns > 0).then(|| format!("c-{}", campaigns / 2))
    }
}

/// A built (or reused) database and the config that runs converge on it.
pub struct Database {
    /// `converge.toml`: the database, durability normal, and a listen
    /// address on loopback with a port of the system's choosing.
    pub config: PathBuf,
    /// The SQLite file's size in bytes.
    pub size: u64,
    /// The time (ms) of the newest of the last thousand events journaled:
    /// where the year of events ends.
    pub latest_ms: Option<i64>,
    /// Removed when the database is dropped, when no `--dir` was given.
    _temporary: tempfile::TempDir,
}

/// Events written per transaction while building the database.
const CHUNK: usize = 5_000;
/// One campaign per this many events.
const EVENTS_PER_CAMPAIGN: usize = 1_000;

impl Database {
    /// Builds the database in `--dir` (or a temporary directory), or reuses
    /// the one there, and writes its config.
    pub fn prepare(args: &DatabaseArgs) -> anyhow::Result<Database> {
        let temporary = tempfile::tempdir()?;
        let dir = args
            .dir
            .clone()
            .unwrap_or_else(|| temporary.path().to_path_buf());
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("converge.toml");
        std::fs::write(
            &config,
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [storage]\ndata_dir = \"data\"\ndurability = \"normal\"\n",
        )?;
        let path = dir.join("data/converge.db");
        let location = Location::Sqlite {
            path: path.clone(),
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
        let head = store.journal_head()?;
        let latest_ms = store
            .events_after((head - 1_000).max(0), 1_000)?
            .iter()
            .map(|e| e.received_at_ms)
            .max();
        drop(store);
        let size = std::fs::metadata(&path)?.len();
        println!("database: {:.0} MB ({})", size as f64 / 1e6, path.display());
        Ok(Database {
            config,
            size,
            latest_ms,
            _temporary: temporary,
        })
    }
}

/// Journals and processes `events` events through the engine, `CHUNK` at a time.
fn build(store: &mut Store, events: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let rules = RuleSet::compile(Vec::new(), &RuleLimits::default())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let engine = Engine::default();
    let mut gates = Gates::default();
    let mut states: HashMap<EntityKey, EntityState> = HashMap::new();
    let mut journal = Journal::new(events);
    let mut written = 0;
    let mut samples = 0;
    while written < events {
        let chunk: Vec<(Event, i64)> = (0..CHUNK.min(events - written))
            .map(|_| journal.next())
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
                entity: outcome.entity.map(Into::into),
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
    let campaigns = states.keys().filter(|k| k.kind == "campaign").count();
    println!(
        "built {written} events ({samples} metric samples, {} entities: {} tasks, {campaigns} campaigns) in {:.1?}: {:.0} events/s",
        states.len(),
        states.len() - campaigns,
        elapsed,
        written as f64
            / elapsed
                .as_secs_f64()
                .max(Duration::from_millis(1).as_secs_f64())
    );
    Ok(())
}

/// The events in journal order: task lifecycles, with the campaigns'
/// events spread evenly among them.
struct Journal {
    events: usize,
    emitted: usize,
    campaign_events: usize,
    tasks: Lifecycles,
    campaigns: Campaigns,
}

impl Journal {
    fn new(events: usize) -> Journal {
        Journal {
            events,
            emitted: 0,
            campaign_events: events / EVENTS_PER_CAMPAIGN * Campaigns::STEPS,
            tasks: Lifecycles::default(),
            campaigns: Campaigns::default(),
        }
    }

    /// The next event and its time (ms).
    fn next(&mut self) -> (Event, i64) {
        let (i, n) = (self.emitted, self.campaign_events);
        self.emitted += 1;
        if (i + 1) * n / self.events > i * n / self.events {
            self.campaigns.next(self.tasks.clock())
        } else {
            self.tasks.next()
        }
    }
}

/// 2026-01-05, when the first task starts.
const FIRST_START_MS: i64 = 1_767_571_200_000;

/// Task lifecycles one after another, each a fixed script with variations
/// by task number; the tasks start every five minutes from 2026-01-05.
#[derive(Default)]
struct Lifecycles {
    task: usize,
    step: usize,
}

const OWNERS: [&str; 12] = [
    "ana", "ben", "cy", "dee", "eve", "fin", "gus", "hal", "ivy", "jo", "kai", "lu",
];

impl Lifecycles {
    /// When the current task started (ms).
    fn clock(&self) -> i64 {
        FIRST_START_MS + self.task as i64 * 300_000
    }

    /// The next event and its time (ms).
    fn next(&mut self) -> (Event, i64) {
        loop {
            if let Some((hours, data)) = self.script(self.task, self.step) {
                self.step += 1;
                let at = self.clock() + (hours * 3_600_000.0) as i64;
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
            if task % 200 == 77 {
                // Still blocked: work waiting for a person.
                return steps.into_iter().nth(step);
            }
            steps.push((62.0 + (task % 72) as f64, json!({"stage": "in review"})));
        }
        steps.push((140.0 + (task % 30) as f64, json!({"stage": "approved"})));
        steps.push((150.0, json!({"stage": "done"})));
        steps.into_iter().nth(step)
    }
}

/// Campaigns one after another: `campaign/c-<n>` planned, its three
/// channels drafted, then each approved.
#[derive(Default)]
struct Campaigns {
    emitted: usize,
}

const CHANNELS: [&str; 3] = ["email", "social", "web"];

impl Campaigns {
    /// Events per campaign.
    const STEPS: usize = 1 + 2 * CHANNELS.len();

    /// The next campaign event, at `at` (ms).
    fn next(&mut self, at: i64) -> (Event, i64) {
        let (n, step) = (self.emitted / Self::STEPS, self.emitted % Self::STEPS);
        self.emitted += 1;
        let launch = DateTime::<Utc>::from_timestamp_millis(at + 14 * 86_400_000)
            .unwrap_or_default()
            .format("%Y-%m-%dT09:00:00Z")
            .to_string();
        let (event_type, data) = match step {
            0 => (
                "campaign.updated",
                json!({"stage": "planning", "owner": OWNERS[n % OWNERS.len()], "name": format!("Campaign {n}")}),
            ),
            s if s <= CHANNELS.len() => {
                let channel = CHANNELS[s - 1];
                // Some channels disagree with the others on a value.
                let offer = if n % 10 == 3 && channel == "web" {
                    format!("OFFER{}", n + 1)
                } else {
                    format!("OFFER{n}")
                };
                let landing = if n % 10 == 5 && channel == "social" {
                    format!("https://example.com/c-{n}/old")
                } else {
                    format!("https://example.com/c-{n}")
                };
                (
                    "campaign.channel.updated",
                    json!({"channel": channel, "stage": "draft", "offer_code": offer, "landing_url": landing, "launch_at": launch}),
                )
            }
            s => {
                let channel = CHANNELS[s - 1 - CHANNELS.len()];
                // Some channels are put on hold instead.
                let stage = if n % 50 == 7 && channel == "social" {
                    "on hold"
                } else {
                    "approved"
                };
                (
                    "campaign.channel.updated",
                    json!({"channel": channel, "stage": stage}),
                )
            }
        };
        let event = Event::from_value(json!({
            "specversion": "1.0",
            "id": format!("c{n}-{step}"),
            "source": "https://campaigns.example.com",
            "type": event_type,
            "subject": format!("campaign/c-{n}"),
            "data": data,
        }))
        .expect("a valid event");
        (event, at + step as i64 * 60_000)
    }
}
