//! Runs action plugins as sandboxed WebAssembly components.
//!
//! A plugin is a component of the `converge:plugin@0.1.0` `action-plugin`
//! world (`plugins/wit/converge-plugin.wit`). [`PluginHost::load`] compiles it
//! (or loads it precompiled), checks it against the world and its API
//! version, and returns a [`Plugin`]; [`Plugin::execute`] runs one action in
//! a fresh instance and returns what happened as an [`ActionDone`] or an
//! [`ActionFailure`] the caller can route to its retry policy.
//!
//! # What a plugin gets
//! - `host.log`: lines go to `tracing` tagged with `plugin` and `action_id`,
//!   escaped, at most [`PluginLimits::max_log_lines`] per call, 4 KiB each.
//! - `host.config-json`: the route's non-secret config passed to `execute`.
//! - `http.send`: requests to the hosts in [`Grants::http_hosts`], over
//!   https (plain http only with [`Grants::allow_plain_http`]), no
//!   redirects followed, bounded in count, size and time. A request may
//!   *name* a granted credential; the host adds its header.
//! - WASI p2, because the Rust standard library imports it: clocks and
//!   random numbers work; stdout and stderr are captured in memory (64 KiB
//!   each) and logged at debug after the call.
//!
//! # What a plugin does not get
//! - Credential values, environment variables, arguments, files (no
//!   preopens), stdin, sockets or DNS (denied in WASI), the daemon's stdout.
//! - Any state from an earlier call: each call gets a new `Store` and
//!   instance from a cached `InstancePre`, dropped afterwards.
//! - Unbounded resources: memory is capped per instance, guest compute by an
//!   epoch budget, the whole call by a wall-clock timeout. A trap, running
//!   out of memory or time fails that call only; the next call starts fresh.

mod config;
mod error;
mod host;
mod http;
mod plugin;
mod state;

pub use config::{Credential, Grants, PluginHostConfig, PluginLimits, PluginSpec};
pub use error::{ActionFailure, LoadError};
pub use host::{PluginHost, SUPPORTED_API_VERSIONS};
pub use plugin::{ActionDone, ActionInput, Plugin, PluginInfo};

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
}
