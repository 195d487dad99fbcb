//! Helpers: a recording sink that can fail on demand, drop configs with short
//! settle times, and waiting with a deadline.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use converge_filedrop::{DropConfig, EventSink, RawDrop, SinkError, validate};
use converge_model::Event;
use sha2::{Digest, Sha256};

/// Records every append; can refuse appends from a given one on.
#[derive(Default)]
pub struct MemorySink {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    events: Vec<Event>,
    chunk_sizes: Vec<usize>,
    attempts: usize,
    /// Appends numbered from 1; those at or after this one fail.
    fail_from: Option<usize>,
    fail_with: Option<SinkError>,
}

impl MemorySink {
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// Accepts `n` appends, then fails every later one.
    pub fn failing_after(n: usize) -> MemorySink {
        MemorySink::failing_with(n, SinkError::Failed("journal unavailable".into()))
    }

    pub fn failing_with(n: usize, error: SinkError) -> MemorySink {
        let sink = MemorySink::default();
        {
            let mut state = sink.state.lock().unwrap();
            state.fail_from = Some(n + 1);
            state.fail_with = Some(error);
        }
        sink
    }

    /// Fails only the `n`-th append (1-based) and accepts the others.
    pub fn failing_once_at(n: usize) -> OnceFailing {
        OnceFailing {
            inner: MemorySink::new(),
            at: n,
        }
    }

    pub fn events(&self) -> Vec<Event> {
        self.state.lock().unwrap().events.clone()
    }

    pub fn ids(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.id).collect()
    }

    pub fn chunk_sizes(&self) -> Vec<usize> {
        self.state.lock().unwrap().chunk_sizes.clone()
    }

    pub fn attempts(&self) -> usize {
        self.state.lock().unwrap().attempts
    }

    fn record(&self, events: Vec<Event>) -> Result<(), SinkError> {
        let mut state = self.state.lock().unwrap();
        state.attempts += 1;
        if let Some(from) = state.fail_from
            && state.attempts >= from
        {
            return Err(state.fail_with.clone().unwrap());
        }
        assert!(!events.is_empty(), "empty appends are never made");
        state.chunk_sizes.push(events.len());
        state.events.extend(events);
        Ok(())
    }
}

impl EventSink for MemorySink {
    async fn append(&self, events: Vec<Event>) -> Result<(), SinkError> {
        self.record(events)
    }
}

pub struct OnceFailing {
    pub inner: MemorySink,
    at: usize,
}

impl EventSink for OnceFailing {
    async fn append(&self, events: Vec<Event>) -> Result<(), SinkError> {
        let attempt = self.inner.attempts() + 1;
        if attempt == self.at {
            self.inner.state.lock().unwrap().attempts += 1;
            return Err(SinkError::Failed("journal busy".into()));
        }
        self.inner.record(events)
    }
}

/// What the journal keeps: one event per (source, id).
pub fn journal<'a>(runs: impl IntoIterator<Item = &'a MemorySink>) -> BTreeSet<(String, String)> {
    runs.into_iter()
        .flat_map(|sink| sink.events())
        .map(|e| (e.source, e.id))
        .collect()
}

/// A drop of type `brief.imported` on `dir`, with test-sized timings.
pub fn config(dir: &Path, edit: impl FnOnce(&mut RawDrop)) -> DropConfig {
    let mut raw = RawDrop::new("briefs", dir.to_str().unwrap());
    raw.event_type = Some("brief.imported".into());
    raw.settle = "100ms".into();
    raw.rescan = "200ms".into();
    edit(&mut raw);
    validate(raw, "file_drops[0]", &|dir: &Path| Path::new("/").join(dir)).unwrap()
}

pub fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), content).unwrap();
}

/// The derived id prefix of a file with this content.
pub fn id_prefix(content: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(content.as_ref()))[..32].to_string()
}

/// The names in `dir`; none while it does not exist yet.
pub fn names_in(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits until `done` holds, failing the test after a generous deadline.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A CSV export of `rows` briefs: `campaign_id,owner,channel`.
pub fn briefs_csv(rows: usize) -> String {
    let mut text = String::from("campaign_id,owner,channel\n");
    for i in 0..rows {
        text.push_str(&format!("c-{i},owner-{},email\n", i % 7));
    }
    text
}
