//! The two ways a plugin lets its caller down: it cannot be loaded, or one
//! call (an action, a decode, a poll) failed.

use std::path::PathBuf;
use std::time::Duration;

/// Why [`PluginHost::load`](crate::PluginHost::load) refused a plugin. Every
/// variant names the plugin and its file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {plugin}: cannot read {}: {source}", path.display())]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {plugin}: {} is not a valid WebAssembly component: {reason}", path.display())]
    Compile {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "plugin {plugin}: {} fits neither the converge:plugin action-plugin nor the connector-plugin world: {reason}",
        path.display()
    )]
    Incompatible {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {plugin}: describe() in {} failed: {source}", path.display())]
    Describe {
        plugin: String,
        path: PathBuf,
        source: CallFailure,
    },
    #[error(
        "plugin {plugin}: {} was built for plugin API {found}; this host supports {supported}",
        path.display()
    )]
    UnsupportedApi {
        plugin: String,
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error(
        "plugin {plugin}: an instance of {} needs {needs}, more than a slot of the instance pool holds ({slot}); the pool is sized when the host starts, from the components it is given (PluginHostConfig::instance_needs; the daemon reads its configured plugins' components), so restart it to load this one",
        path.display()
    )]
    TooLarge {
        plugin: String,
        path: PathBuf,
        needs: crate::InstanceNeeds,
        slot: crate::InstanceNeeds,
    },
    #[error("plugin {plugin}: precompiled cache for {}: {reason}", path.display())]
    Cache {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
}

/// Why one plugin call failed: an action, a decode or a poll. The first
/// five are what the plugin itself returned; the rest are what the host
/// observed. The retry policy is the same for every kind of call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("rate limited{}", match .0 { Some(d) => format!(" (retry after {d:?})"), None => String::new() })]
    RateLimited(Option<Duration>),
    #[error("transient failure: {0}")]
    Transient(String),
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call used up its CPU budget in pure compute.
    #[error("plugin exceeded its CPU time budget")]
    CpuLimit,
    /// The guest tried to grow a memory past its limit.
    #[error("plugin exceeded its memory limit")]
    MemoryLimit,
    /// The whole call took longer than its wall-time limit.
    #[error("plugin call timed out after {0:?}")]
    Timeout(Duration),
    /// The host could not run the call (instantiation failed, ...).
    #[error("plugin host error: {0}")]
    Host(String),
}

impl CallFailure {
    /// Whether retrying the same action later may succeed. A guest that
    /// trapped or ran out of CPU or memory would do the same again.
    pub fn retryable(&self) -> bool {
        match self {
            CallFailure::RateLimited(_)
            | CallFailure::Transient(_)
            | CallFailure::Timeout(_)
            | CallFailure::Host(_) => true,
            CallFailure::InvalidInput(_)
            | CallFailure::Unauthorized(_)
            | CallFailure::Permanent(_)
            | CallFailure::Trap(_)
            | CallFailure::CpuLimit
            | CallFailure::MemoryLimit => false,
        }
    }
}
