//! `converge replay --generate N --events FILE`: synthetic recorded events
//! for measuring replay speed, shaped like `benches/converge-load`'s: task
//! handoffs and updates across 5,000 entities, one second apart. Some
//! updates block a task or blank its brief, so the example rules decide
//! something now and then.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

const ENTITIES: u64 = 5000;
const START: &str = "2026-01-05T09:00:00Z";

pub fn write(path: &Path, n: u64) -> std::io::Result<()> {
    let start: DateTime<Utc> = START.parse().expect("a valid constant time");
    let mut out = BufWriter::new(File::create(path)?);
    for i in 0..n {
        let secs = i64::try_from(i).unwrap_or(i64::MAX);
        let time = start + Duration::seconds(secs);
        let task = i % ENTITIES;
        let round = i / ENTITIES;
        let (ty, data) = match round % 4 {
            0 => (
                "task.handoff",
                json!({
                    "owner": format!("reviewer-{}", (task + round) % 50),
                    "stage": "review",
                    "brief": "b",
                    "deadline": "2026-12-01",
                }),
            ),
            1 if task.is_multiple_of(10) => ("task.updated", json!({"stage": "blocked"})),
            2 if task.is_multiple_of(25) => ("task.updated", json!({"brief": ""})),
            3 => (
                "task.updated",
                json!({"stage": "in_progress", "brief": "b"}),
            ),
            _ => ("task.updated", json!({"stage": "in_progress"})),
        };
        let event = json!({
            "specversion": "1.0",
            "id": format!("gen-{i}"),
            "source": "/converge-replay-generate",
            "type": ty,
            "subject": format!("task/LOAD-{task}"),
            "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "datacontenttype": "application/json",
            "data": data,
        });
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
