//! A loaded plugin and the one place that builds its stores, and every way a
//! call can go wrong becomes an [`CallFailure`].
//!
//! An instance that finished a call normally is kept warm for the next call
//! of the same plugin (while the plugin's warm instances' memories stay
//! within `PluginHostConfig::warm_memory_bytes` and the pool has a free
//! slot, each for at most [`MAX_CALLS_PER_INSTANCE`] calls): a plugin under
//! a steady load then builds no instance at all. Building and resetting an
//! instance per action cost more than everything else in a dispatch, and
//! the memory reset behind it forces TLB shootdowns across cores. An instance that
//! trapped, ran out of time, CPU or memory is always thrown away. Instances
//! are never shared between plugins, so what one plugin keeps in memory
//! stays with that plugin; plugins must not rely on state between calls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::bindings::connector::exports::converge::plugin::connector as wit_connector;
use crate::bindings::connector::{ConnectorPlugin, ConnectorPluginPre};
use crate::bindings::converge::plugin::types::{self, PluginError};
use crate::bindings::{ActionPlugin, ActionPluginPre};
use crate::config::{Grants, PluginLimits};
use crate::error::CallFailure;
use crate::host::Shared;
use crate::state::{CallContext, CapturedOutput, HostState, Limiter};

/// The span of one call into a plugin (see [`crate::TRACE_ONLY_SPANS`]).
pub(crate) const CALL_SPAN: &str = "plugin.call";

/// Bytes of stdout and of stderr kept per call.
const CAPTURE_BYTES: usize = 64 * 1024;
/// Bytes of stderr quoted in a trap message (a Rust panic message lands there).
const TRAP_STDERR_BYTES: usize = 1024;
/// Bytes of each stream logged after a call; the rest is counted.
const LOGGED_OUTPUT_BYTES: usize = 4096;
/// Backtrace frames quoted in a trap message.
const TRAP_BACKTRACE_FRAMES: usize = 4;
/// Calls one instance serves before it is replaced, which bounds what a
/// plugin's heap can accumulate.
pub(crate) const MAX_CALLS_PER_INSTANCE: u32 = 10_000;

/// An instance between two calls, with everything that is reset per call.
pub(crate) struct Warm {
    store: Store<HostState>,
    instance: Instance,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    calls: u32,
    /// Its slot of the instance pool; declared after `store` so that it is
    /// released only once the store has given the slot back.
    slot: OwnedSemaphorePermit,
}

impl Warm {
    fn memory_bytes(&self) -> usize {
        self.store.data().limiter.memory_bytes
    }
}

/// A loaded, checked plugin. Cheap to clone; calls may run concurrently,
/// each in its own instance.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    sandbox: Sandbox,
    info: PluginInfo,
    /// What the plugin's `connector` export says it does; `None` for an
    /// action plugin.
    connector: Option<ConnectorInfo>,
    /// The component file, for messages.
    path: PathBuf,
}

/// What the plugin says about itself in `describe()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    /// The WIT package version the plugin was built against.
    pub api_version: String,
}

/// What a connector plugin says it does in `connector.describe()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// [`Plugin::decode`] accepts the tool's webhook deliveries.
    pub decodes: bool,
    /// [`Plugin::poll`] reads the tool's API.
    pub polls: bool,
    /// The event types the plugin produces, e.g. `jira.issue.updated`.
    pub event_types: Vec<String>,
    /// The actions [`Plugin::execute`] performs, e.g. `create_task`.
    pub actions: Vec<String>,
}

/// One webhook delivery for [`Plugin::decode`], as the WIT `inbound` record.
#[derive(Debug, Clone, Default)]
pub struct DecodeInput {
    /// The daemon's name for the hook the delivery arrived on.
    pub hook: String,
    /// The HTTP method, upper case.
    pub method: String,
    /// Request headers in arrival order.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

/// One call of [`Plugin::poll`].
#[derive(Debug, Clone, Default)]
pub struct PollInput {
    /// The cursor the previous successful poll returned; `None` on the first.
    pub cursor: Option<String>,
}

/// One page of a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOutput {
    /// CloudEvent JSON objects, in the order they should be journaled; not
    /// validated here.
    pub events: Vec<String>,
    /// The cursor to store with these events and pass to the next poll;
    /// `None` keeps the stored one.
    pub cursor: Option<String>,
    /// Another page is ready now: poll again without waiting.
    pub more: bool,
    /// The tool asked for a pause before the next poll.
    pub retry_after: Option<Duration>,
}

/// One action to perform, as the WIT `action` record.
#[derive(Debug, Clone, Default)]
pub struct ActionInput {
    /// Idempotency key: the same on every retry of this action.
    pub id: String,
    pub kind: String,
    pub rule: String,
    pub decision_json: String,
    pub event_json: String,
    pub entity_json: String,
}

/// What a successful action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionDone {
    pub external_id: Option<String>,
    pub summary: String,
}

impl Plugin {
    pub(crate) fn new(
        sandbox: Sandbox,
        info: PluginInfo,
        connector: Option<ConnectorInfo>,
        path: PathBuf,
    ) -> Plugin {
        Plugin {
            inner: Arc::new(PluginInner {
                sandbox,
                info,
                connector,
                path,
            }),
        }
    }

    /// The operator's name for this plugin.
    pub fn name(&self) -> &str {
        &self.inner.sandbox.name
    }

    /// Its instances kept warm between calls now, and their linear memory
    /// in bytes.
    pub fn warm_instances(&self) -> (usize, usize) {
        let warm = self
            .inner
            .sandbox
            .warm
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (warm.len(), warm.iter().map(Warm::memory_bytes).sum())
    }

    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// What the plugin decodes, polls and acts on, when it is a connector
    /// plugin (a component of the `connector-plugin` world); `None` for an
    /// action plugin, which can only [`execute`](Plugin::execute).
    pub fn connector(&self) -> Option<&ConnectorInfo> {
        self.inner.connector.as_ref()
    }

    /// The component file the plugin was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs one action, in a warm instance of this plugin when one is idle,
    /// else in a new one (see the module's header). `config_json` is what
    /// the plugin's `host.config-json` returns during this call.
    pub async fn execute(
        &self,
        action: ActionInput,
        config_json: &str,
    ) -> Result<ActionDone, CallFailure> {
        let action_id = action.id.clone();
        let action = types::Action {
            id: action.id,
            kind: action.kind,
            rule: action.rule,
            decision_json: action.decision_json,
            event_json: action.event_json,
            entity_json: action.entity_json,
        };
        let sandbox = &self.inner.sandbox;
        let outcome = sandbox
            .run(&action_id, config_json, Call::Execute(action))
            .instrument(self.call_span("execute"))
            .await?;
        let Output::Executed(result) = outcome else {
            unreachable!("an execute call returns an execute output")
        };
        match result {
            Ok(outcome) => Ok(ActionDone {
                external_id: outcome.external_id,
                summary: outcome.summary,
            }),
            Err(error) => Err(failure(error, &sandbox.grants)),
        }
    }

    /// Decodes one webhook delivery into CloudEvent JSON strings, in a
    /// sandbox with the same limits, grants and credentials as
    /// [`execute`](Plugin::execute). `config_json` is what the plugin's
    /// `host.config-json` returns during this call. An empty list is a
    /// delivery that carries no event (a handshake, a heartbeat).
    pub async fn decode(
        &self,
        input: DecodeInput,
        config_json: &str,
    ) -> Result<Vec<String>, CallFailure> {
        self.require_connector("decode", |c| c.decodes)?;
        let call_id = format!("decode:{}", input.hook);
        let inbound = wit_connector::Inbound {
            hook: input.hook,
            method: input.method,
            headers: input.headers,
            body: input.body,
        };
        let output = self
            .inner
            .sandbox
            .run(&call_id, config_json, Call::Decode(inbound))
            .instrument(self.call_span("decode"))
            .await?;
        let Output::Decoded(result) = output else {
            unreachable!("a decode call returns a decode output")
        };
        result.map_err(|e| failure(e, &self.inner.sandbox.grants))
    }

    /// Reads one page of the tool's changes after `input.cursor`, in the
    /// same sandbox as [`execute`](Plugin::execute). The caller journals the
    /// events and stores the returned cursor together; on an error the
    /// stored cursor stays as it was.
    pub async fn poll(
        &self,
        input: PollInput,
        config_json: &str,
    ) -> Result<PollOutput, CallFailure> {
        self.require_connector("poll", |c| c.polls)?;
        let output = self
            .inner
            .sandbox
            .run("poll", config_json, Call::Poll(input.cursor))
            .instrument(self.call_span("poll"))
            .await?;
        let Output::Polled(result) = output else {
            unreachable!("a poll call returns a poll output")
        };
        let page = result.map_err(|e| failure(e, &self.inner.sandbox.grants))?;
        Ok(PollOutput {
            events: page.events,
            cursor: page.cursor,
            more: page.more,
            retry_after: page
                .retry_after_ms
                .map(|ms| Duration::from_millis(ms.into())),
        })
    }

    /// The span of one call into the plugin: a child of the caller's
    /// (the action, the webhook's intake, the poll), the parent of the
    /// plugin's HTTP requests.
    fn call_span(&self, call: &'static str) -> tracing::Span {
        tracing::info_span!(CALL_SPAN, plugin = %self.name(), call)
    }

    /// Refuses, before any instance is built, a call the plugin said at
    /// load it does not support: a configuration mistake, never retried.
    fn require_connector(
        &self,
        call: &str,
        supported: impl Fn(&ConnectorInfo) -> bool,
    ) -> Result<(), CallFailure> {
        match &self.inner.connector {
            Some(info) if supported(info) => Ok(()),
            Some(_) => Err(CallFailure::InvalidInput(format!(
                "plugin {} does not support {call}",
                self.name()
            ))),
            None => Err(CallFailure::InvalidInput(format!(
                "plugin {} is an action plugin: it has no {call}",
                self.name()
            ))),
        }
    }
}

/// What the plugin returned as an error, as the host reports it: without
/// the plugin's credentials, which a message quoting a response that echoed
/// them would otherwise carry into logs and the outbox.
fn failure(error: PluginError, grants: &Grants) -> CallFailure {
    let redact = |m| grants.redact(m);
    match error {
        PluginError::InvalidInput(m) => CallFailure::InvalidInput(redact(m)),
        PluginError::Unauthorized(m) => CallFailure::Unauthorized(redact(m)),
        PluginError::RateLimited(ms) => {
            CallFailure::RateLimited(ms.map(|ms| Duration::from_millis(ms.into())))
        }
        PluginError::Transient(m) => CallFailure::Transient(redact(m)),
        PluginError::Permanent(m) => CallFailure::Permanent(redact(m)),
    }
}

/// Everything needed to run calls of one plugin.
pub(crate) struct Sandbox {
    /// The operator's name for the plugin; tags logs.
    pub(crate) name: Arc<str>,
    /// Imports resolved and types checked once, at load.
    pub(crate) pre: Pre,
    pub(crate) grants: Arc<Grants>,
    pub(crate) limits: PluginLimits,
    pub(crate) shared: Arc<Shared>,
    /// Instances ready for the next call, oldest first; shared with the
    /// host, which may take one to free its slot for another plugin.
    pub(crate) warm: Arc<Mutex<Vec<Warm>>>,
}

/// A plugin's component, checked against the world it was found to fit.
pub(crate) enum Pre {
    Action(ActionPluginPre<HostState>),
    Connector(ConnectorPluginPre<HostState>),
}

/// A live instance of either world.
pub(crate) enum Instance {
    Action(ActionPlugin),
    Connector(ConnectorPlugin),
}

enum Call {
    Describe,
    DescribeConnector,
    Execute(types::Action),
    Decode(wit_connector::Inbound),
    Poll(Option<String>),
}

enum Output {
    Described(types::PluginInfo),
    ConnectorDescribed(wit_connector::ConnectorInfo),
    Executed(Result<types::ActionOutcome, PluginError>),
    Decoded(Result<Vec<String>, PluginError>),
    Polled(Result<wit_connector::PollResult, PluginError>),
}

/// Where a call failed, which decides how its error is reported.
enum Failed {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

impl Sandbox {
    pub(crate) async fn describe(&self) -> Result<PluginInfo, CallFailure> {
        let Output::Described(info) = self.run("describe", "{}", Call::Describe).await? else {
            unreachable!("a describe call returns a describe output")
        };
        Ok(PluginInfo {
            name: info.name,
            version: info.version,
            api_version: info.api_version,
        })
    }

    /// What a connector plugin offers; `None` for an action plugin.
    pub(crate) async fn describe_connector(&self) -> Result<Option<ConnectorInfo>, CallFailure> {
        if matches!(self.pre, Pre::Action(_)) {
            return Ok(None);
        }
        let output = self.run("describe", "{}", Call::DescribeConnector).await?;
        let Output::ConnectorDescribed(info) = output else {
            unreachable!("a connector describe call returns a connector describe output")
        };
        Ok(Some(ConnectorInfo {
            decodes: info.decodes,
            polls: info.polls,
            event_types: info.event_types,
            actions: info.actions,
        }))
    }

    /// The one place a plugin store is built: memory limits, CPU budget,
    /// empty WASI, captured stdio.
    fn new_store(
        &self,
        action_id: &str,
        config_json: &str,
        stdout: &CapturedOutput,
        stderr: &CapturedOutput,
    ) -> Store<HostState> {
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .table_elements(20_000)
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let tick = self.shared.epoch_tick.as_nanos().max(1);
        let cpu_ticks = self.limits.cpu_time.as_nanos().div_ceil(tick).max(1);
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                inner: limits,
                memory_denied: false,
                memory_bytes: 0,
            },
            cpu_ticks_left: u64::try_from(cpu_ticks).unwrap_or(u64::MAX),
            cpu_exhausted: false,
            call: CallContext {
                plugin: self.name.clone(),
                action_id: action_id.to_string(),
                config_json: config_json.to_string(),
                grants: self.grants.clone(),
                limits: self.limits.clone(),
                http: self.shared.http.clone(),
                dry_run: self.shared.dry_run.clone(),
                http_requests: 0,
                log_lines: 0,
                log_lines_dropped: 0,
            },
        };
        let mut store = Store::new(&self.shared.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        // Each tick of guest compute yields to tokio, so a busy guest does not
        // starve other tasks and the wall-clock timeout can fire; once the
        // budget is spent the guest traps.
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if state.cpu_ticks_left == 0 {
                state.cpu_exhausted = true;
                return Err(wasmtime::Error::msg("cpu time budget exceeded"));
            }
            state.cpu_ticks_left -= 1;
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        store
    }

    /// Resets what a call may have changed in a warm instance's state.
    fn prepare(&self, state: &mut HostState, action_id: &str, config_json: &str) {
        let tick = self.shared.epoch_tick.as_nanos().max(1);
        let cpu_ticks = self.limits.cpu_time.as_nanos().div_ceil(tick).max(1);
        state.cpu_ticks_left = u64::try_from(cpu_ticks).unwrap_or(u64::MAX);
        state.cpu_exhausted = false;
        state.limiter.memory_denied = false;
        state.call.action_id = action_id.to_string();
        state.call.config_json = config_json.to_string();
        state.call.http_requests = 0;
        state.call.log_lines = 0;
        state.call.log_lines_dropped = 0;
    }

    async fn run(
        &self,
        action_id: &str,
        config_json: &str,
        call: Call,
    ) -> Result<Output, CallFailure> {
        let warm = self.warm.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (mut store, instance, stdout, stderr, calls, slot) = match warm {
            Some(mut warm) => {
                self.prepare(warm.store.data_mut(), action_id, config_json);
                warm.store.set_epoch_deadline(1);
                warm.stdout.clear();
                warm.stderr.clear();
                (
                    warm.store,
                    Some(warm.instance),
                    warm.stdout,
                    warm.stderr,
                    warm.calls,
                    warm.slot,
                )
            }
            None => {
                // Waiting for a slot is bounded like the call, and apart
                // from it: a full pool delays the call, it does not fail it.
                let slot = self.shared.take_slot(self.limits.wall_time).await?;
                let stdout = CapturedOutput::new(CAPTURE_BYTES);
                let stderr = CapturedOutput::new(CAPTURE_BYTES);
                let store = self.new_store(action_id, config_json, &stdout, &stderr);
                (store, None, stdout, stderr, 0, slot)
            }
        };

        let wall_time = self.limits.wall_time;
        // Boxed: the guest call's future is kilobytes, which the timeout
        // and each `.await` up the stack would otherwise copy again.
        let running = Box::pin(async {
            let instance = match instance {
                Some(instance) => instance,
                None => match &self.pre {
                    Pre::Action(pre) => pre
                        .instantiate_async(&mut store)
                        .await
                        .map(Instance::Action),
                    Pre::Connector(pre) => pre
                        .instantiate_async(&mut store)
                        .await
                        .map(Instance::Connector),
                }
                .map_err(Failed::Instantiate)?,
            };
            let output = call_instance(&instance, &mut store, call)
                .await
                .map_err(Failed::Call)?;
            Ok((instance, output))
        });
        // Dropping the future on timeout abandons the guest mid-call; the
        // store is dropped below and never used for another call.
        let (result, instance) = match tokio::time::timeout(wall_time, running).await {
            Err(_) => (Err(CallFailure::Timeout(wall_time)), None),
            Ok(Ok((instance, output))) => (Ok(output), Some(instance)),
            Ok(Err(failed)) => (Err(self.classify(store.data(), failed, &stderr)), None),
        };

        let state = store.data();
        if state.call.log_lines_dropped > 0 {
            tracing::warn!(
                plugin = &*self.name,
                action_id,
                dropped = state.call.log_lines_dropped,
                limit = self.limits.max_log_lines,
                "plugin log lines over the per-call limit were dropped"
            );
        }
        for (stream, output) in [("stdout", &stdout), ("stderr", &stderr)] {
            let (text, dropped) = output.contents();
            if text.is_empty() {
                continue;
            }
            let text = self.grants.redact(text);
            let (text, cut) = head(&text, LOGGED_OUTPUT_BYTES);
            // Escaped so a plugin cannot forge log lines with newlines.
            tracing::info!(
                plugin = &*self.name,
                action_id,
                stream,
                dropped_bytes = dropped + cut,
                output = %text.escape_debug(),
                "plugin output"
            );
        }
        let keep =
            instance.filter(|_| calls + 1 < MAX_CALLS_PER_INSTANCE && self.shared.slot_is_free());
        if let Some(instance) = keep {
            let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
            let kept: usize = warm.iter().map(Warm::memory_bytes).sum();
            let memory = store.data().limiter.memory_bytes;
            if kept.saturating_add(memory) <= self.shared.warm_memory_bytes {
                warm.push(Warm {
                    store,
                    instance,
                    stdout,
                    stderr,
                    calls: calls + 1,
                    slot,
                });
                return result;
            }
        }
        // The slot goes back only once the store has released the pool's
        // resources.
        drop(store);
        drop(slot);
        result
    }

    fn classify(&self, state: &HostState, failed: Failed, stderr: &CapturedOutput) -> CallFailure {
        if state.cpu_exhausted {
            return CallFailure::CpuLimit;
        }
        if state.limiter.memory_denied {
            return CallFailure::MemoryLimit;
        }
        match failed {
            Failed::Instantiate(e) => CallFailure::Host(format!("instantiation failed: {e:#}")),
            Failed::Call(e) => CallFailure::Trap(self.grants.redact(trap_summary(&e, stderr))),
        }
    }
}

/// Makes one call on an instance of either world. The `action` interface
/// has the same bindings in both; a connector call on an action instance
/// cannot happen, because [`Plugin`] checks what the plugin is first.
async fn call_instance(
    instance: &Instance,
    store: &mut Store<HostState>,
    call: Call,
) -> wasmtime::Result<Output> {
    match (instance, call) {
        (Instance::Action(i), Call::Describe) => i
            .converge_plugin_action()
            .call_describe(store)
            .await
            .map(Output::Described),
        (Instance::Connector(i), Call::Describe) => i
            .converge_plugin_action()
            .call_describe(store)
            .await
            .map(Output::Described),
        (Instance::Action(i), Call::Execute(a)) => i
            .converge_plugin_action()
            .call_execute(store, &a)
            .await
            .map(Output::Executed),
        (Instance::Connector(i), Call::Execute(a)) => i
            .converge_plugin_action()
            .call_execute(store, &a)
            .await
            .map(Output::Executed),
        (Instance::Connector(i), Call::DescribeConnector) => i
            .converge_plugin_connector()
            .call_describe(store)
            .await
            .map(Output::ConnectorDescribed),
        (Instance::Connector(i), Call::Decode(inbound)) => i
            .converge_plugin_connector()
            .call_decode(store, &inbound)
            .await
            .map(Output::Decoded),
        (Instance::Connector(i), Call::Poll(cursor)) => i
            .converge_plugin_connector()
            .call_poll(store, cursor.as_deref())
            .await
            .map(Output::Polled),
        (Instance::Action(_), Call::DescribeConnector | Call::Decode(_) | Call::Poll(_)) => Err(
            wasmtime::Error::msg("an action plugin has no connector interface"),
        ),
    }
}

/// The first `max` bytes of `text` (cut on a char boundary) and how many
/// bytes were cut.
fn head(text: &str, max: usize) -> (&str, usize) {
    if text.len() <= max {
        return (text, 0);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], text.len() - end)
}

/// One line saying why the guest stopped: the panic message (a Rust guest
/// prints it to stderr before aborting), the trap, and the innermost frames
/// of the plugin's own code.
fn trap_summary(error: &wasmtime::Error, stderr: &CapturedOutput) -> String {
    let cause = if let Some(exit) = error.downcast_ref::<I32Exit>() {
        format!("plugin exited with status {}", exit.0)
    } else if let Some(trap) = error.downcast_ref::<Trap>() {
        trap.to_string()
    } else {
        error.root_cause().to_string()
    };
    let mut summary = panic_message(stderr);
    if summary.is_empty() {
        summary = cause;
    } else {
        summary = format!("{summary} ({cause})");
    }
    if let Some(backtrace) = error.downcast_ref::<WasmBacktrace>() {
        let frames = plugin_frames(backtrace);
        if !frames.is_empty() {
            summary.push_str(" at ");
            summary.push_str(&frames.join(" <- "));
        }
    }
    summary
}

/// The end of stderr on one line, without the standard library's hint
/// about `RUST_BACKTRACE` (the host already reports the backtrace).
fn panic_message(stderr: &CapturedOutput) -> String {
    let (text, _) = stderr.contents();
    let text: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE"))
        .flat_map(str::split_whitespace)
        .collect();
    let text = text.join(" ");
    let mut start = text.len().saturating_sub(TRAP_STDERR_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].chars().filter(|c| !c.is_control()).collect()
}

/// Function names of the innermost frames, skipping the standard library's
/// panic and abort machinery, which every panicking guest shares.
fn plugin_frames(backtrace: &WasmBacktrace) -> Vec<String> {
    // Each line reads `  3:  0xcd19 - module.wasm!function`, possibly
    // followed by indented `at file:line` lines, which are skipped.
    backtrace
        .to_string()
        .lines()
        .filter_map(|line| line.split_once(" - ").map(|(_, frame)| frame))
        .map(|frame| frame.split_once('!').map_or(frame, |(_, name)| name).trim())
        .map(without_crate_hashes)
        .filter(|name| {
            name != "abort"
                && !["std::", "core::", "alloc::", "__rustc::", "<wasm function"]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
        })
        .take(TRAP_BACKTRACE_FRAMES)
        .collect()
}

/// `std[d123b7a1a2ed1472]::process::abort` -> `std::process::abort` and
/// `f::hfb0c02d13bd4517b` -> `f`: symbol hashes (v0 crate disambiguators,
/// legacy suffixes) only add noise to a message.
fn without_crate_hashes(name: &str) -> String {
    let name = match name.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            path
        }
        _ => name,
    };
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        match after[1..].find(']') {
            Some(close) if after[1..=close].chars().all(|c| c.is_ascii_hexdigit()) => {
                rest = &after[close + 2..];
            }
            _ => {
                out.push('[');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_hashes_are_dropped_from_frame_names() {
        assert_eq!(
            without_crate_hashes("std[d123b7a1a2ed1472]::process::abort"),
            "std::process::abort"
        );
        assert_eq!(
            without_crate_hashes("<misbehaving[0ab]::Misbehaving as x[1]::Y>::execute"),
            "<misbehaving::Misbehaving as x::Y>::execute"
        );
        assert_eq!(without_crate_hashes("a::b::hfb0c02d13bd4517b"), "a::b");
        assert_eq!(without_crate_hashes("a::hello"), "a::hello");
        assert_eq!(without_crate_hashes("f[not hex]"), "f[not hex]");
        assert_eq!(without_crate_hashes("unclosed[ab"), "unclosed[ab");
    }
}
