//! Runs plugins as sandboxed WebAssembly components.
//!
//! A plugin is a component of one of the two worlds of the
//! `converge:plugin@0.1.0` package (`plugins/wit/converge-plugin.wit`):
//! `action-plugin` (exports `action`) or `connector-plugin` (exports
//! `connector` and `action`). [`PluginHost::load`] compiles it (or loads it
//! precompiled), finds which world it fits from its exports, checks its API
//! version, and returns a [`Plugin`]:
//! - [`Plugin::execute`] runs one action and returns an [`ActionDone`];
//! - for connector plugins ([`Plugin::connector`] is `Some`),
//!   [`Plugin::decode`] turns one webhook delivery into CloudEvent JSON
//!   strings and [`Plugin::poll`] reads one page of a tool's API after a
//!   cursor, returning a [`PollOutput`].
//!
//! Every call runs in the same sandbox, whatever its kind, and fails with an
//! [`CallFailure`] the caller can route to its retry policy.
//!
//! # What a plugin gets
//! - `host.log`: lines go to `tracing` tagged with `plugin` and `action_id`,
//!   escaped, at most [`PluginLimits::max_log_lines`] per call, 4 KiB each.
//! - `host.config-json`: the non-secret config passed to the call (a
//!   route's for `execute`, a connector's for `decode` and `poll`).
//! - `http.send`: requests to the hosts in [`Grants::http_hosts`], over
//!   https (plain http only with [`Grants::allow_plain_http`]), no
//!   redirects followed, bounded in count, size and time. A request may
//!   *name* a granted credential; the host adds its header.
//! - WASI 0.2 (p2: every interface of `wasmtime_wasi::p2`, so what language
//!   runtimes import links): clocks and random numbers work, the
//!   filesystem has no preopens, sockets and name lookups are denied;
//!   stdout and stderr are captured in memory (64 KiB each) and logged at
//!   info after the call, tagged with the plugin and the action, the first
//!   4 KiB of each stream. No `wasi:http`: HTTP goes through `http.send`.
//!
//! # What a plugin does not get
//! - Credential values, environment variables, arguments, files (no
//!   preopens), stdin, sockets or DNS (denied in WASI), the daemon's stdout.
//! - Any state it can rely on from an earlier call: an instance that
//!   finished a call normally may serve the next call of the same plugin
//!   (see `plugin.rs`), one that failed is dropped.
//! - Unbounded resources: memory is capped per instance, guest compute by an
//!   epoch budget, the whole call by a wall-clock timeout. A trap, running
//!   out of memory or time fails that call only; the next call starts fresh.

mod client;
mod config;
mod dry_run;
mod error;
mod host;
mod http;
mod needs;
mod parsed_url;
mod plugin;
mod resolve;
mod state;

pub use config::{Credential, Grants, PluginHostConfig, PluginLimits, PluginSpec};
pub use dry_run::{DryRun, RecordedRequest, STAND_IN_BODY, STAND_IN_STATUS, StandIn};
pub use error::{CallFailure, LoadError};
pub use host::{PluginHost, SUPPORTED_API_VERSIONS};
pub use needs::InstanceNeeds;
pub use plugin::{
    ActionDone, ActionInput, ConnectorInfo, DecodeInput, Plugin, PluginInfo, PollInput, PollOutput,
};

/// The spans the plugin host makes for exported traces only: a call into a
/// plugin (`plugin.call`) and each request the plugin sends (`http.request`).
/// The log leaves them out at every level (`converge`'s log layer filters
/// them): the plugin host's log lines name their plugin and action
/// themselves, and at `debug` the action's span gives the rest, so making
/// the two spans for every action cost the daemon work for nothing the log
/// showed.
pub const TRACE_ONLY_SPANS: [&str; 2] = [plugin::CALL_SPAN, http::REQUEST_SPAN];

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../plugins/wit",
        world: "action-plugin",
        imports: {
            "converge:plugin/http.send": async,
        },
        exports: {
            default: async,
        },
    });

    /// The connector world imports the same interfaces as the action world,
    /// so it reuses their bindings: one linker serves both worlds.
    pub(crate) mod connector {
        wasmtime::component::bindgen!({
            path: "../../plugins/wit",
            world: "connector-plugin",
            exports: {
                default: async,
            },
            with: {
                "converge:plugin/types": crate::bindings::converge::plugin::types,
                "converge:plugin/host": crate::bindings::converge::plugin::host,
                "converge:plugin/http": crate::bindings::converge::plugin::http,
            },
        });
    }
}
