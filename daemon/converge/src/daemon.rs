//! `converge run`: builds every stage from the config, starts them in order,
//! and stops them in order.
//!
//! Start: compile rules (and start watching them for hot reload), open the store, load plugins, start the journal
//! writer, the processor (which first catches up on events journaled before
//! this start), the timer scheduler (which waits for that catch-up, then
//! applies the catch-up policy of timers that fell due while converge was
//! down), the dispatcher (which first reads pending actions), and last the
//! HTTP listener.
//!
//! Stop (SIGINT, SIGTERM, or a fatal storage error): the listener stops
//! accepting and finishes the requests it has; rule reloads stop; the
//! scheduler stops firing;
//! the processor finishes its batch; the dispatcher waits up to
//! `dispatch.shutdown_grace` for running actions; the journal commits what it
//! was handed. Whatever was not done is durable and resumes at the next start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use converge_plugin_host::{InstanceNeeds, Plugin, PluginHost, PluginHostConfig, PluginSpec};
use converge_rules::RuleSet;
use converge_store::Store;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, MANUAL_CLOCK_KEY};
use crate::cluster::Duty;
use crate::config::{ClockConfig, Config};
use crate::dispatcher::Dispatcher;
use crate::entity_cache::EntityCache;
use crate::filedrops;
use crate::health::StorageHealth;
use crate::hooks::Hooks;
use crate::journal::{Downstream, Journal};
use crate::polls::Poller;
use crate::processor::{Processor, StoreEntities};
use crate::reload::{LoadedRules, Reloader, RulesHandle};
use crate::retention::Pruner;
use crate::schedules::ScheduleSource;
use crate::telemetry::Metrics;
use crate::timer_wake::TimerWake;
use crate::timers::{FIRE_BATCH, Scheduler};
use crate::topology::{Processing, Topology};
use crate::web::{self, AppParts, AppState};

/// How many committed actions wait in memory for the dispatcher; beyond it
/// they are read back from the outbox.
const DISPATCH_QUEUE: usize = 10_000;

/// Where a manual clock stands at start: where it stood when the daemon
/// last moved it (kept under [`MANUAL_CLOCK_KEY`]), so a restart does not
/// send it back; `clock.start` when it never moved, or when `start` is
/// later (a restart "later"). A `start` earlier than the kept time is
/// ignored with a warning: the clock only moves forward.
fn manual_start(
    start: Option<chrono::DateTime<chrono::Utc>>,
    kept: Option<&str>,
) -> chrono::DateTime<chrono::Utc> {
    let kept = kept.and_then(|text| match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(at) => Some(at.with_timezone(&chrono::Utc)),
        Err(e) => {
            tracing::warn!(kept = %text.escape_debug(), error = %e, "the kept manual clock does not parse; starting from clock.start");
            None
        }
    });
    match (start, kept) {
        (Some(start), Some(kept)) if start < kept => {
            tracing::warn!(%start, %kept, "clock.start is earlier than where the manual clock stood before this restart; it continues from there (the clock only moves forward)");
            kept
        }
        (Some(start), _) => start,
        (None, Some(kept)) => kept,
        (None, None) => chrono::Utc::now(),
    }
}

/// Compiles every configured rule; the error lists every problem with file:line:column.
pub fn compile_rules(config: &Config) -> anyhow::Result<RuleSet> {
    let sources = config.rules.sources()?;
    RuleSet::compile(sources, &config.rules.limits).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{} rule error(s):\n  {}", list.len(), list.join("\n  "))
    })
}

pub fn plugin_host(config: &Config) -> anyhow::Result<PluginHost> {
    PluginHost::new(plugin_host_config(config))
}

/// How the daemon's plugin host is built from the config.
pub fn plugin_host_config(config: &Config) -> PluginHostConfig {
    let max_memory_bytes = config
        .plugins
        .values()
        .map(|p| p.limits.memory_bytes)
        .max()
        .unwrap_or(64 << 20);
    // A slot of the instance pool holds an instance of the largest plugin,
    // no more: a Python or JavaScript component instantiates many more core
    // modules than a Rust one, and every slot reserves address space for
    // its memories. A component that cannot be read here fails its load,
    // which says why.
    let instance_needs = config
        .plugins
        .values()
        .filter_map(|p| InstanceNeeds::of_file(&p.component).ok())
        .reduce(InstanceNeeds::max)
        .unwrap_or_default();
    PluginHostConfig {
        cache_dir: Some(config.storage.plugin_cache_dir.clone()),
        // Every running action holds one instance; loading and describing
        // plugins, decodes and polls take a few more.
        max_instances: u32::try_from(config.dispatch.concurrency + 16).unwrap_or(u32::MAX),
        instance_needs,
        max_memory_bytes,
        ..PluginHostConfig::default()
    }
}

/// Loads every configured plugin; the error lists every plugin that failed.
pub async fn load_plugins(
    host: &PluginHost,
    config: &Config,
) -> anyhow::Result<HashMap<String, Plugin>> {
    let mut plugins = HashMap::new();
    let mut errors = Vec::new();
    for (name, plugin) in &config.plugins {
        let spec = PluginSpec {
            name: name.clone(),
            component: plugin.component.clone(),
            grants: plugin.grants.clone(),
            limits: plugin.limits.clone(),
        };
        match host.load(spec).await {
            Ok(loaded) => {
                plugins.insert(name.clone(), loaded);
            }
            Err(e) => errors.push(format!("plugins.{name}: {e:#}")),
        }
    }
    // Hooks that decode and polls need connector plugins that do so.
    let connector = |name: &str| plugins.get(name).and_then(|p: &Plugin| p.connector());
    for (hook, h) in &config.hooks {
        if let Some(decode) = &h.decode
            && plugins.contains_key(&decode.plugin)
            && !connector(&decode.plugin).is_some_and(|c| c.decodes)
        {
            errors.push(format!(
                "hooks.{hook}.decode: plugin `{}` does not decode payloads (it is not a connector plugin that decodes)",
                decode.plugin
            ));
        }
    }
    for (i, poll) in config.polls.iter().enumerate() {
        if plugins.contains_key(&poll.plugin) && !connector(&poll.plugin).is_some_and(|c| c.polls) {
            errors.push(format!(
                "polls[{i}].plugin: plugin `{}` does not poll (it is not a connector plugin that polls)",
                poll.plugin
            ));
        }
    }
    if errors.is_empty() {
        Ok(plugins)
    } else {
        bail!(
            "{} plugin error(s):\n  {}",
            errors.len(),
            errors.join("\n  ")
        )
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let started_at = chrono::Utc::now();
    let rules = LoadedRules::compile(&config.rules).map_err(|errors| {
        anyhow::anyhow!("{} rule error(s):\n  {}", errors.len(), errors.join("\n  "))
    })?;
    tracing::info!(
        rules = rules.live.rules().len(),
        shadow = rules.shadow.rules().len(),
        versions = %rules.versions().join(", "),
        "rules compiled"
    );
    let rules = RulesHandle::new(rules);

    std::fs::create_dir_all(&config.storage.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.storage.data_dir.display()
        )
    })?;
    let database = &config.storage.location;
    // Database calls block: off the async workers, like every other one.
    let reader = || {
        tokio::task::block_in_place(|| Store::open_reader(database))
            .with_context(|| format!("cannot open {database}"))
    };
    let (store, cursor, head, timers_pending, dead_letters, manual_clock) =
        tokio::task::block_in_place(|| {
            let store = Store::open_checked(database, config.storage.check_on_start)
                .with_context(|| format!("cannot open the database {database}"))?;
            let cursor = store.processed_cursor()?;
            let head = store.journal_head()?;
            let timers_pending = store.pending_timer_count()?;
            let dead_letters = store.dead_letter_count()?;
            let manual_clock = store
                .source_state(MANUAL_CLOCK_KEY)
                .context("cannot read the manual clock")?;
            anyhow::Ok((
                store,
                cursor,
                head,
                timers_pending,
                dead_letters,
                manual_clock,
            ))
        })?;

    // Opened after the database is: sharing it, the topology keeps a
    // connection of its own for the sources' leases.
    let (mut topology, reload_peers) = Topology::new(database, config.storage.lease_ttl, reader)?;
    let gates = tokio::task::block_in_place(|| topology.initial_gates(&store))?;

    let host = plugin_host(&config)?;
    let plugins = load_plugins(&host, &config).await?;
    tracing::info!(plugins = plugins.len(), "plugins loaded");

    let clock = match config.clock {
        ClockConfig::System => Clock::System,
        ClockConfig::Manual { start } => {
            let start = manual_start(start, manual_clock.as_deref());
            tracing::warn!(%start, "running on a manual clock (clock.mode = \"manual\"): time moves only through POST /v1/clock");
            Clock::manual(start)
        }
    };
    let metrics = Metrics::new();
    metrics.journal_events.set(head);
    // Counted once here; the journal keeps the gauge up to date from then on.
    metrics.timers_pending.set(timers_pending);
    metrics.held_sends.set(gates.held() as i64);
    metrics.dead_letters.set(dead_letters);
    if config.server.admin_token.is_none() {
        tracing::info!(
            variable = %config.server.admin_token_env,
            "the admin API is disabled (gate overrides, dead-letter retries and drops, timer cancellations, the console's actions): the admin token variable is not set"
        );
    }
    let timer_wake = TimerWake::new();
    let fatal = CancellationToken::new();
    let (processor_tx, processor_rx) = mpsc::unbounded_channel();
    let (dispatcher_tx, dispatcher_rx) = mpsc::channel(DISPATCH_QUEUE);
    let dispatcher_tx_for_processing = dispatcher_tx.clone();
    let overflow = Arc::new(AtomicBool::new(true));
    let (journal, writer) = Journal::start(
        store,
        config.storage.max_batch,
        Downstream {
            processor: processor_tx,
            dispatcher: dispatcher_tx,
            dispatcher_overflow: overflow.clone(),
            timer_wake: timer_wake.clone(),
            shared: topology.is_shared(),
        },
        metrics.clone(),
        clock.clone(),
        StorageHealth::new(metrics.clone()),
        fatal.clone(),
    );

    let stop_processor = CancellationToken::new();
    let caught_up = CancellationToken::new();
    let processor = Processor {
        rules: rules.subscribe(),
        engine: config.engine(),
        store: reader()?,
        journal: journal.clone(),
        metrics: metrics.clone(),
        cache: EntityCache::new(config.storage.entity_cache_entries),
        committed: 0,
        caught_up: caught_up.clone(),
        gates,
        entities: Arc::new(StoreEntities::new(reader()?)),
        handed_over: 0,
        stopping: stop_processor.clone(),
    };
    let processor_thread = topology.start_processing(Processing {
        processor,
        cursor,
        head,
        events: processor_rx,
        clock: clock.clone(),
        dispatcher: dispatcher_tx_for_processing,
        stop: stop_processor.clone(),
        fatal: fatal.clone(),
    })?;

    // The in-flight budget (`journal::room`): events from outside and fired
    // timers' events hold a place from their source until their processing
    // commits.
    let in_flight = Arc::new(Semaphore::new(config.server.max_events_in_flight));
    let stop_scheduler = CancellationToken::new();
    let scheduler_task = topology.fires_timers_apart().then(|| {
        let scheduler = Scheduler {
            reader: reader()?,
            journal: journal.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            wake: timer_wake,
            in_flight: in_flight.clone(),
            page: FIRE_BATCH.min(config.server.max_events_in_flight),
        };
        anyhow::Ok(tokio::spawn(
            scheduler.run(caught_up, stop_scheduler.clone()),
        ))
    });
    let scheduler_task = scheduler_task.transpose()?;

    let stop_reloader = CancellationToken::new();
    let reloader = Reloader {
        rules: rules.clone(),
        config: config.rules.clone(),
        metrics: metrics.clone(),
        peers: reload_peers,
    };
    let reloader_task = reloader.start(stop_reloader.clone());

    let plugins_for_web = Arc::new(plugins.clone());
    let stop_dispatcher = CancellationToken::new();
    let dispatcher = Dispatcher {
        plugins,
        routes: config
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect(),
        settings: config.dispatch.clone(),
        journal: journal.clone(),
        reader: reader()?,
        metrics: metrics.clone(),
        overflow,
        leases: topology.action_leases(),
        clock: clock.clone(),
    };
    let dispatcher_task = tokio::spawn(dispatcher.run(dispatcher_rx, stop_dispatcher.clone()));

    let stop_sources = CancellationToken::new();
    let schedule_task = tokio::spawn(
        ScheduleSource {
            schedules: config.schedules.clone(),
            reader: Mutex::new(reader()?),
            journal: journal.clone(),
            in_flight: in_flight.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
        }
        .run(stop_sources.clone()),
    );

    let web_reader = Arc::new(Mutex::new(reader()?));
    let health = journal.health().clone();
    let run_source = |duty: Duty, start| topology.run_source(duty, &health, &stop_sources, start);
    let mut source_tasks = Vec::new();
    for drop in &config.file_drops {
        let (drop, journal, in_flight) = (drop.clone(), journal.clone(), in_flight.clone());
        source_tasks.push(run_source(
            Duty::FileDrop(drop.name.clone()),
            Box::new(move |stop| filedrops::watch(&drop, &journal, &in_flight, stop)),
        ));
    }
    if let Some(retention) = &config.storage.retention {
        let pruner = (
            retention.clone(),
            Arc::new(Mutex::new(reader()?)),
            journal.clone(),
            clock.clone(),
            metrics.clone(),
        );
        // Sharing the database, one daemon prunes at a time.
        source_tasks.push(run_source(
            Duty::Retention,
            Box::new(move |stop| {
                let (retention, reader, journal, clock, metrics) = pruner.clone();
                tokio::spawn(
                    Pruner {
                        retention,
                        reader,
                        journal,
                        clock,
                        metrics,
                    }
                    .run(stop),
                )
            }),
        ));
    }
    for poll in &config.polls {
        let Some(plugin) = plugins_for_web.get(&poll.plugin).cloned() else {
            continue;
        };
        let poller = (
            poll.clone(),
            web_reader.clone(),
            journal.clone(),
            in_flight.clone(),
            metrics.clone(),
        );
        source_tasks.push(run_source(
            Duty::Poll(poll.name.clone()),
            Box::new(move |stop| {
                let (poll, reader, journal, in_flight, metrics) = poller.clone();
                tokio::spawn(
                    Poller {
                        poll,
                        plugin: plugin.clone(),
                        reader,
                        journal,
                        in_flight,
                        metrics,
                    }
                    .run(stop),
                )
            }),
        ));
    }

    let state = AppState::new(AppParts {
        journal,
        metrics,
        max_body_bytes: config.server.max_body_bytes,
        in_flight,
        reader: web_reader,
        clock,
        rules,
        started_at,
        admin_token: config.server.admin_token.clone(),
        admin_token_env: config.server.admin_token_env.clone(),
        hooks: Hooks::new(config.hooks.clone(), config.server.accept_unlisted_hooks),
        plugins: plugins_for_web,
        holder: topology.holder().map(str::to_string),
        console: crate::web::console::Console::new(&config, config.server.listen),
    });
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let address = listener.local_addr()?;
    // Before saying it is ready: a SIGTERM from whoever read that line must
    // find the handler in place, not the default action (death by signal).
    let mut signals = ShutdownSignals::register()?;
    tracing::info!(%address, "converge is ready");
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("converge: listening on http://{address}");
    // Under systemd (`Type=notify`, docs/deploy.md): ready now. Without
    // NOTIFY_SOCKET this does nothing.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd that converge is ready");
    }

    let shutdown = CancellationToken::new();
    let server = {
        let shutdown = shutdown.clone();
        let limits = web::Limits {
            header_read: config.server.header_read_timeout,
            body_read: config.server.body_read_timeout,
            max_connections: config.server.max_connections,
            body_bytes_in_flight: config.server.max_body_bytes_in_flight,
        };
        let metrics = state.metrics.clone();
        tokio::spawn(async move {
            web::serve(listener, web::router(state), limits, metrics, shutdown).await;
        })
    };

    let failed = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "shutting down");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            false
        }
        () = fatal.cancelled() => {
            tracing::error!("shutting down after a storage failure");
            true
        }
    };
    shutdown.cancel();
    if let Err(e) = server.await {
        tracing::error!(error = %e, "HTTP server task failed");
    }
    stop_sources.cancel();
    let _ = schedule_task.await;
    for task in source_tasks {
        let _ = task.await;
    }
    stop_reloader.cancel();
    let _ = reloader_task.await;
    stop_scheduler.cancel();
    if let Some(task) = scheduler_task {
        let _ = task.await;
    }
    stop_processor.cancel();
    let _ = tokio::task::spawn_blocking(move || processor_thread.join()).await;
    stop_dispatcher.cancel();
    let _ = dispatcher_task.await;
    wait_for_writer(writer).await;
    if failed {
        bail!("stopped after a storage failure; see the log above");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The writer ends once every journal handle is gone; a plugin call abandoned
/// after the shutdown grace may still hold one, so do not wait forever.
async fn wait_for_writer(writer: std::thread::JoinHandle<()>) {
    for _ in 0..50 {
        if writer.is_finished() {
            let _ = writer.join();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(
        "journal writer still busy at exit; anything it had not committed is replayed at the next start"
    );
}

/// SIGINT and SIGTERM, handled from the moment they are registered.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> anyhow::Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// The name of the first signal that arrives.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// `converge check`: every problem of a config, its rules and its plugins.
/// The stage roles compared with the stages of the entities in the
/// database, when there is one to read.
fn stage_roles_against_the_database(config: &Config) -> Vec<String> {
    let location = &config.storage.location;
    if let converge_store::Location::Sqlite { path, .. } = location
        && !path.exists()
    {
        return vec!["stage roles: no database yet to compare them with".into()];
    }
    match converge_store::Store::open_reader(location)
        .and_then(|store| crate::report::stage_role_warnings(&*store, &config.report))
    {
        Ok(warnings) => warnings
            .into_iter()
            .map(|w| format!("warning: {w}"))
            .collect(),
        Err(e) => vec![format!(
            "stage roles: cannot read the entities of {location} to compare them with: {e}"
        )],
    }
}

pub async fn check(config_path: &Path) -> Result<Vec<String>, Vec<String>> {
    let config = Config::load(config_path, &|name| std::env::var(name).ok())
        .map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let mut report = config
        .warnings
        .iter()
        .map(|w| format!("warning: {w}"))
        .collect::<Vec<_>>();
    match compile_rules(&config) {
        Ok(rules) => report.push(format!(
            "{} rule(s) compiled, {} in shadow",
            rules.rules().len(),
            config.rules.shadow.len()
        )),
        Err(e) => errors.push(format!("{e:#}")),
    }
    match plugin_host(&config) {
        Ok(host) => match load_plugins(&host, &config).await {
            Ok(plugins) => {
                let mut names: Vec<_> = plugins
                    .values()
                    .map(|p| {
                        let info = p.info();
                        format!(
                            "{} {} (plugin API {})",
                            info.name, info.version, info.api_version
                        )
                    })
                    .collect();
                names.sort();
                report.push(format!(
                    "{} plugin(s) loaded: {}",
                    names.len(),
                    names.join(", ")
                ));
            }
            Err(e) => errors.push(format!("{e:#}")),
        },
        Err(e) => errors.push(format!("{e:#}")),
    }
    report.push(format!("{} route(s)", config.routes.len()));
    report.extend(stage_roles_against_the_database(&config));
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(errors)
    }
}
