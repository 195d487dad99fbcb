//! What the operator decides about a plugin: where it is, what it may reach,
//! and how much it may consume. Resolved types only; parsing the TOML config
//! into these is the daemon's job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::InstanceNeeds;

/// Engine-wide settings, shared by every plugin the host loads.
#[derive(Debug, Clone)]
pub struct PluginHostConfig {
    /// How often the ticker thread advances the engine epoch. The CPU budget
    /// of a call is counted in these ticks, and a guest in pure compute
    /// yields to the async runtime once per tick.
    pub epoch_tick: Duration,
    /// Directory for precompiled `.cwasm` files, keyed by the SHA-256 of the
    /// component and the engine's compatibility hash. `None` compiles on
    /// every load. Must be writable only by converge: its files are loaded as
    /// trusted native code.
    pub cache_dir: Option<PathBuf>,
    /// Plugin instances that may exist at once, across all plugins, running
    /// or kept warm: the slots of the instance pool. A call that finds every
    /// slot taken takes an idle instance's slot, or else waits for a running
    /// call to free one (up to its wall time, then fails as retryable).
    pub max_instances: u32,
    /// What one slot holds: the largest [`InstanceNeeds`] of the components
    /// this host will load (the default fits Rust plugins). A component that
    /// needs more is refused at load with [`LoadError::TooLarge`](crate::LoadError::TooLarge).
    pub instance_needs: InstanceNeeds,
    /// The most linear memory any one instance may have; per-plugin limits
    /// above it are capped to it.
    pub max_memory_bytes: usize,
    /// Linear memory one plugin's idle instances may keep between calls:
    /// an instance that finished a call stays warm only while its memory
    /// and that of the plugin's other warm instances stay within it (and a
    /// slot of the pool is free). Small plugins keep as many instances warm
    /// as run at once, so a steady load builds none; a plugin with a large
    /// heap keeps fewer.
    pub warm_memory_bytes: usize,
    /// Record the plugins' HTTP requests instead of sending them
    /// ([`DryRun`](crate::DryRun)); `None` sends them.
    pub dry_run: Option<crate::DryRun>,
}

impl Default for PluginHostConfig {
    fn default() -> Self {
        PluginHostConfig {
            epoch_tick: Duration::from_millis(10),
            cache_dir: None,
            max_instances: 256,
            instance_needs: InstanceNeeds::default(),
            max_memory_bytes: 512 << 20,
            warm_memory_bytes: 512 << 20,
            dry_run: None,
        }
    }
}

/// One plugin to load: its component file and what the config grants it.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The operator's name for this plugin; tags its logs and errors.
    pub name: String,
    /// Path to the `.wasm` component.
    pub component: PathBuf,
    pub grants: Grants,
    pub limits: PluginLimits,
}

/// Everything outside the sandbox a plugin may touch. Empty by default.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Reachable `host[:port]` patterns: `api.slack.com`,
    /// `hooks.example.com:8443`, `*.example.com`. Without a port a pattern
    /// matches only the scheme's default port; `*.` matches one or more
    /// labels but not the apex domain.
    pub http_hosts: Vec<String>,
    /// Allow `http://` to granted hosts. `https://` is always allowed.
    pub allow_plain_http: bool,
    /// Credentials the plugin may name in a request, by name. The host adds
    /// the header; the plugin never sees the value.
    pub credentials: BTreeMap<String, Credential>,
    /// Credentials the config grants whose environment variable is unset,
    /// by name, with that variable: a request naming one fails saying
    /// which variable to set, not that the credential is not granted.
    pub unset_credentials: BTreeMap<String, String>,
}

impl Grants {
    /// `text` with every granted credential's value, and its token without
    /// the scheme (`xoxb-...` of `Bearer xoxb-...`), replaced by
    /// `<redacted>`: what a plugin says (errors, log lines) may quote a
    /// response that echoed the credential back.
    pub fn redact(&self, text: String) -> String {
        let mut text = text;
        for credential in self.credentials.values() {
            let value = credential.value.as_str();
            let token = value.split_once(' ').map_or(value, |(_, token)| token);
            for secret in [value, token] {
                // Too short to be a secret worth hiding, and would mangle text.
                if secret.len() >= 8 && text.contains(secret) {
                    text = text.replace(secret, "<redacted>");
                }
            }
        }
        text
    }
}

/// A secret header the host injects into a plugin's request.
#[derive(Clone)]
pub struct Credential {
    /// Header name, e.g. `authorization`.
    pub header: String,
    /// The full header value, e.g. `Bearer xoxb-...`. Secret: never logged,
    /// never shown by `Debug`, never passed to the guest.
    pub value: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Per-plugin resource limits. Every count and size is per call.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Cap on each linear memory of an instance; growing past it traps and
    /// the call fails with `MemoryLimit`.
    pub memory_bytes: usize,
    /// Budget for guest compute, counted in epoch ticks. Time spent in host
    /// calls (HTTP) counts as at most one tick per call.
    pub cpu_time: Duration,
    /// Wall-clock bound on the whole call, host I/O included.
    pub wall_time: Duration,
    /// Outgoing HTTP requests allowed in one call.
    pub max_http_requests: u32,
    /// Bound on one HTTP request, from sending to the last body byte.
    pub http_timeout: Duration,
    /// Largest request body a plugin may send.
    pub max_request_bytes: usize,
    /// Largest response body the host reads; larger ones fail with `too-large`.
    pub max_response_bytes: usize,
    /// Log lines kept per call; the rest are counted and dropped.
    pub max_log_lines: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 64 << 20,
            cpu_time: Duration::from_secs(1),
            wall_time: Duration::from_secs(15),
            max_http_requests: 20,
            http_timeout: Duration::from_secs(10),
            max_request_bytes: 1 << 20,
            max_response_bytes: 4 << 20,
            max_log_lines: 200,
        }
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn a_credential_and_its_token_are_redacted_and_short_values_left_alone() {
        let mut grants = Grants::default();
        grants.credentials.insert(
            "bot".into(),
            Credential {
                header: "authorization".into(),
                value: "Bearer xoxb-1234-secret".into(),
            },
        );
        grants.credentials.insert(
            "short".into(),
            Credential {
                header: "x-key".into(),
                value: "abc".into(),
            },
        );
        assert_eq!(
            grants.redact(
                "401: bad header Bearer xoxb-1234-secret; token xoxb-1234-secret; abc".into()
            ),
            "401: bad header <redacted>; token <redacted>; abc"
        );
    }
}
