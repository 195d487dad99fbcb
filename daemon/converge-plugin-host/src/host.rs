//! The engine, the linker and the epoch ticker shared by every plugin, and
//! loading a component into a checked, ready-to-instantiate [`Plugin`].

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::connector::ConnectorPluginPre;
use crate::bindings::{ActionPlugin, ActionPluginPre};
use crate::config::{PluginHostConfig, PluginSpec};
use crate::error::{CallFailure, LoadError};
use crate::needs::InstanceNeeds;
use crate::plugin::{Plugin, Pre, Sandbox, Warm};
use crate::state::HostState;

/// `major.minor` versions of the plugin API this host runs.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1"];

/// Loads plugins. Cheap to keep for the daemon's lifetime; the plugins it
/// returns keep what they need alive on their own.
pub struct PluginHost {
    shared: Arc<Shared>,
}

/// What every plugin of one host shares.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    /// WASI p2 and the converge imports, type-checked against each
    /// component once at load.
    linker: Linker<HostState>,
    /// One client for every plugin (`client`): pooled connections, rustls, no redirects.
    pub(crate) http: crate::client::HttpClient,
    /// Set for a dry run: requests are recorded there, not sent.
    pub(crate) dry_run: Option<crate::DryRun>,
    pub(crate) epoch_tick: Duration,
    cache_dir: Option<PathBuf>,
    /// Part of every cache key, so a wasmtime upgrade or a config change
    /// never loads an incompatible artifact.
    engine_hash: u64,
    /// One permit per slot of the instance pool, held by every live
    /// instance (running or warm), so a call that finds the pool full waits
    /// for a slot instead of failing to instantiate.
    slots: Arc<Semaphore>,
    /// `max_instances`, for messages.
    slot_count: u32,
    /// What one slot holds; a component that needs more is refused at load.
    slot: InstanceNeeds,
    /// What one plugin's warm instances may keep of linear memory
    /// (`PluginHostConfig::warm_memory_bytes`).
    pub(crate) warm_memory_bytes: usize,
    /// Every plugin's warm instances, so a call that finds the pool full
    /// can take the slot of an idle instance of another plugin.
    idle: Mutex<Vec<Weak<Mutex<Vec<Warm>>>>>,
    /// Kept alive as long as any plugin is: without ticks a guest in an
    /// endless loop would never be interrupted.
    _ticker: EpochTicker,
}

/// The instance pool: `max_instances` slots, each with room for one
/// instance of the largest component the host was told about
/// (`instance_needs`). The per-component caps make a component that needs
/// more than a slot fail to instantiate instead of eating into other slots.
fn pooling(config: &PluginHostConfig) -> InstanceAllocationStrategy {
    let n = config.max_instances.max(1);
    let slot = config.instance_needs;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(slot.core_instances.max(1)))
        .total_tables(n.saturating_mul(slot.tables.max(1)))
        .total_memories(n.saturating_mul(slot.memories.max(1)))
        .max_core_instances_per_component(slot.core_instances.max(1))
        .max_tables_per_component(slot.tables.max(1))
        .max_memories_per_component(slot.memories.max(1))
        .total_stacks(n)
        .max_memory_size(config.max_memory_bytes)
        // Every async call runs on a pooled fiber stack; keep the part a call
        // uses resident rather than returning it to the kernel after each
        // call (an madvise, and a TLB shootdown, per action otherwise).
        .async_stack_keep_resident(256 << 10);
    InstanceAllocationStrategy::Pooling(pool)
}

impl PluginHost {
    pub fn new(config: PluginHostConfig) -> anyhow::Result<PluginHost> {
        anyhow::ensure!(
            !config.epoch_tick.is_zero(),
            "plugin host: epoch_tick must be greater than zero"
        );
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            // No component-model-async: a host-to-guest call costs about
            // 140 ns without it and 600 ns with it (wasmtime PR #14189), and
            // plugins use none of its APIs (WASI 0.3, async components).
            .concurrency_support(false);
        // The pooling allocator reuses reserved memory, tables and fiber
        // stacks instead of an mmap/munmap (and the TLB shootdowns that come
        // with it) for each instance and each async call. Where the address
        // space cannot hold the pool, fall back to allocating on demand.
        let engine = match Engine::new(wasm.clone().allocation_strategy(pooling(&config))) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!(error = %e, "plugin host: pooling allocator unavailable; allocating instances on demand");
                Engine::new(&wasm).map_err(|e| anyhow::anyhow!("{e:#}"))?
            }
        };

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("plugin host: linking WASI")?;
        ActionPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("plugin host: linking the converge imports")?;

        let http = crate::client::new_client();

        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hasher.finish();

        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        Ok(PluginHost {
            shared: Arc::new(Shared {
                engine,
                linker,
                http,
                dry_run: config.dry_run,
                epoch_tick: config.epoch_tick,
                cache_dir: config.cache_dir,
                engine_hash,
                slots: Arc::new(Semaphore::new(config.max_instances.max(1) as usize)),
                slot_count: config.max_instances.max(1),
                slot: config.instance_needs,
                warm_memory_bytes: config.warm_memory_bytes,
                idle: Mutex::default(),
                _ticker: ticker,
            }),
        })
    }

    /// Compiles (or loads from the cache), type-checks against the WIT world,
    /// calls `describe()` once in a sandbox, and checks that the plugin's API
    /// `major.minor` is supported. Errors name the plugin and the file.
    pub async fn load(&self, spec: PluginSpec) -> Result<Plugin, LoadError> {
        let shared = self.shared.clone();
        let (name, path) = (spec.name.clone(), spec.component.clone());
        // Compiling takes from milliseconds (Rust) to tens of seconds (an
        // interpreter inside the component) of CPU.
        let (component, needs) =
            tokio::task::spawn_blocking(move || shared.component(&name, &path))
                .await
                .map_err(|e| LoadError::Compile {
                    plugin: spec.name.clone(),
                    path: spec.component.clone(),
                    reason: format!("compilation task failed: {e}"),
                })??;

        let incompatible = |e: wasmtime::Error| LoadError::Incompatible {
            plugin: spec.name.clone(),
            path: spec.component.clone(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(incompatible)?;
        // A component is a connector plugin when it fits the connector
        // world (which also exports `action`), else it must fit the action
        // world; the error names what the action world misses.
        let pre = match ConnectorPluginPre::new(instance_pre.clone()) {
            Ok(pre) => Pre::Connector(pre),
            Err(_) => Pre::Action(ActionPluginPre::new(instance_pre).map_err(incompatible)?),
        };

        let warm = Arc::default();
        self.shared
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&warm));
        let sandbox = Sandbox {
            name: spec.name.as_str().into(),
            pre,
            grants: Arc::new(spec.grants),
            limits: spec.limits,
            shared: self.shared.clone(),
            warm,
        };
        let info = sandbox
            .describe()
            .await
            .map_err(|source| LoadError::Describe {
                plugin: spec.name.clone(),
                path: spec.component.clone(),
                source,
            })?;
        let connector =
            sandbox
                .describe_connector()
                .await
                .map_err(|source| LoadError::Describe {
                    plugin: spec.name.clone(),
                    path: spec.component.clone(),
                    source,
                })?;
        let found = api_major_minor(&info.api_version);
        if !SUPPORTED_API_VERSIONS.contains(&found.as_deref().unwrap_or("")) {
            return Err(LoadError::UnsupportedApi {
                plugin: spec.name,
                path: spec.component,
                found: info.api_version,
                supported: SUPPORTED_API_VERSIONS.join(", "),
            });
        }
        tracing::info!(
            plugin = spec.name,
            path = %spec.component.display(),
            plugin_name = info.name,
            plugin_version = info.version,
            api_version = info.api_version,
            connector = connector.is_some(),
            core_instances = needs.core_instances,
            memories = needs.memories,
            "plugin loaded"
        );
        Ok(Plugin::new(sandbox, info, connector, spec.component))
    }
}

impl Shared {
    /// Takes a slot of the instance pool for a new instance: a free one,
    /// else the slot of an idle instance of any plugin, else the first slot
    /// a running call frees, waiting up to `wait`. The permit must be
    /// dropped after the instance's store.
    pub(crate) async fn take_slot(
        &self,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, CallFailure> {
        loop {
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => return Ok(permit),
                Err(TryAcquireError::Closed) => unreachable!("the slots are never closed"),
                Err(TryAcquireError::NoPermits) => {}
            }
            match self.evict_idle() {
                // Dropped outside the locks: this frees its pool slot.
                Some(evicted) => drop(evicted),
                None => break,
            }
        }
        tracing::debug!(
            slots = self.slot_count,
            "instance pool full; waiting for a slot"
        );
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => unreachable!("the slots are never closed"),
            Err(_) => Err(CallFailure::Host(format!(
                "no free plugin instance within {wait:?}: all {} slots of the instance pool are running calls",
                self.slot_count
            ))),
        }
    }

    /// Whether a finished instance may stay warm: not while another call
    /// waits for its slot (a fair semaphore has no permit left then).
    pub(crate) fn slot_is_free(&self) -> bool {
        self.slots.available_permits() > 0
    }

    /// Takes the oldest idle instance of the first plugin that has one.
    fn evict_idle(&self) -> Option<Warm> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|warm| warm.strong_count() > 0);
        idle.iter().filter_map(Weak::upgrade).find_map(|warm| {
            let mut warm = warm.lock().unwrap_or_else(|e| e.into_inner());
            (!warm.is_empty()).then(|| warm.remove(0))
        })
    }

    /// The compiled component, from the cache when a compatible artifact of
    /// the same bytes is there, compiled (and cached) otherwise, and what
    /// one of its instances takes from the pool.
    fn component(
        &self,
        plugin: &str,
        path: &Path,
    ) -> Result<(Component, InstanceNeeds), LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            plugin: plugin.into(),
            path: path.into(),
            source,
        })?;
        let needs = InstanceNeeds::of_component(&bytes).map_err(|reason| LoadError::Compile {
            plugin: plugin.into(),
            path: path.into(),
            reason,
        })?;
        // Refused before compiling, which takes long for such components.
        if !needs.fits_in(&self.slot) {
            return Err(LoadError::TooLarge {
                plugin: plugin.into(),
                path: path.into(),
                needs,
                slot: self.slot,
            });
        }
        self.compile(plugin, path, &bytes).map(|c| (c, needs))
    }

    fn compile(&self, plugin: &str, path: &Path, bytes: &[u8]) -> Result<Component, LoadError> {
        let compile_error = |e: wasmtime::Error| LoadError::Compile {
            plugin: plugin.into(),
            path: path.into(),
            reason: format!("{e:#}"),
        };
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes).map_err(compile_error);
        };

        let key = format!(
            "{}-{:016x}.cwasm",
            hex::encode(Sha256::digest(bytes)),
            self.engine_hash
        );
        let cached = dir.join(&key);
        if cached.is_file() {
            // SAFETY: the cache directory holds only artifacts this host wrote
            // with `precompile_component` (it must be writable by converge
            // alone), and wasmtime rejects artifacts from another version or
            // config with an error rather than loading them.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(
                    plugin,
                    cache = %cached.display(),
                    error = format!("{e:#}"),
                    "precompiled plugin rejected; compiling again"
                ),
            }
        }

        let artifact = self
            .engine
            .precompile_component(bytes)
            .map_err(compile_error)?;
        if let Err(e) = write_atomically(dir, &key, &artifact) {
            // The cache only saves time; a read-only directory must not stop
            // the plugin from loading.
            tracing::warn!(plugin, cache = %dir.display(), error = %e, "cannot cache precompiled plugin");
        }
        // SAFETY: `artifact` was produced by `precompile_component` on this
        // very engine just above.
        unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(compile_error)
    }
}

/// Writes to a temporary name and renames, so a concurrent load or a crash
/// never leaves a half-written artifact under the final name.
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, dir.join(name)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// `"0.1.3"` -> `"0.1"`; `None` when it is not `major.minor[.patch]`.
fn api_major_minor(version: &str) -> Option<String> {
    let mut parts = version.trim().split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some(format!("{major}.{minor}"))
}

/// Advances the engine epoch every tick on a dedicated thread, until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> anyhow::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("converge-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    std::thread::park_timeout(tick);
                    engine.increment_epoch();
                }
            })
            .context("plugin host: starting the epoch ticker thread")?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_compare_on_major_minor() {
        assert_eq!(api_major_minor("0.1.0").as_deref(), Some("0.1"));
        assert_eq!(api_major_minor("0.1").as_deref(), Some("0.1"));
        assert_eq!(api_major_minor("1.x"), None);
        assert_eq!(api_major_minor(""), None);
    }
}
