//! A plugin that misbehaves on purpose, for the daemon's integration tests:
//! each mode proves that one kind of bad plugin fails its action with a clear
//! error while the daemon keeps serving.
//!
//! Config: `{"mode": "trap" | "loop" | "alloc" | "ok" | "slow_http", "url": "..."}`;
//! `url` is what `slow_http` calls, to exercise the host's wall-clock limit.

use std::hint::black_box;

use converge_plugin_sdk::{Action, ActionOutcome, ActionPlugin, PluginError, PluginInfo, http};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// Panics, which traps the instance.
    Trap,
    /// Spins forever: only fuel or an epoch deadline stops it.
    Loop,
    /// Allocates without bound: only the store's memory limit stops it.
    Alloc,
    /// Behaves, so tests can show the same plugin works when asked nicely.
    Ok,
    /// Calls `url` through the host, which the test server answers slowly.
    SlowHttp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: Mode,
    #[serde(default)]
    url: Option<String>,
}

const MIB: usize = 1024 * 1024;

struct Misbehaving;

impl ActionPlugin for Misbehaving {
    fn describe() -> PluginInfo {
        converge_plugin_sdk::plugin_info!()
    }

    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        let config: Config = converge_plugin_sdk::config()?;
        match config.mode {
            Mode::Trap => panic!("misbehaving plugin: deliberate trap"),
            Mode::Loop => {
                let mut counter = 0u64;
                loop {
                    // black_box keeps the optimizer from proving the loop
                    // has no effect and deleting it.
                    counter = black_box(counter.wrapping_add(1));
                }
            }
            Mode::Alloc => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Filled with data so the pages are really touched, and
                    // kept so nothing is ever freed.
                    hoard.push(black_box(vec![0xA5; MIB]));
                    black_box(&hoard);
                }
            }
            Mode::Ok => Ok(ActionOutcome::new("ok")),
            Mode::SlowHttp => {
                let url = config.url.ok_or_else(|| {
                    PluginError::InvalidInput(
                        "plugin config: url: required for mode slow_http".to_owned(),
                    )
                })?;
                let response = http::send(&http::Request {
                    method: http::Method::Get,
                    url: url.clone(),
                    headers: vec![("idempotency-key".to_owned(), action.id)],
                    body: None,
                    credential: None,
                })?;
                Ok(ActionOutcome::new(format!(
                    "GET {url} -> {}",
                    response.status
                )))
            }
        }
    }
}

converge_plugin_sdk::export_action_plugin!(Misbehaving);
