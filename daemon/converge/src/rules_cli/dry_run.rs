//! `converge rules try EVENTS`: the config's rules and routes run on events
//! from a file, as the daemon would run them, and each action's plugin is
//! called in a dry run: its HTTP requests are checked against its grants,
//! shown, and answered with a stand-in instead of sent. Nothing is stored
//! and nothing leaves the machine: a rule author sees what Slack, Mailchimp
//! or a webhook would have received before a rule or a route goes live.
//!
//! With `--hook`, the file is a body as a sender posts it, and the hook's
//! own way of making events (its connector plugin, its JSON mapping)
//! makes them, so a tool's real payload can be followed from delivery to
//! the requests it causes.
//!
//! Credentials are not needed: a credential whose variable is unset is
//! given a placeholder, and no credential's value is ever shown (its header
//! names the credential).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use converge_engine::{ActionPayload, Origin, Rules, Simulated, Simulation};
use converge_model::{DecisionKind, Event, records::NewAction};
use converge_plugin_host::{
    DecodeInput, DryRun, Plugin, PluginHost, PluginHostConfig, RecordedRequest, STAND_IN_BODY,
    STAND_IN_STATUS, StandIn,
};
use serde_json::{Value, json};

use crate::Exit;
use crate::config::Config;
use crate::daemon::{load_plugins, plugin_host_config};
use crate::dispatcher::action_input;
use crate::hooks::HookConfig;
use crate::reload::LoadedRules;

/// The most of a request's body shown as text; the JSON output has it whole.
const SHOWN_BODY_BYTES: usize = 2048;

/// More timers than this firing while `--advance` moves the clock is a
/// rule scheduling in a loop.
const MAX_TIMER_FIRINGS: usize = 10_000;

/// The value a credential whose variable is unset gets in a dry run.
const PLACEHOLDER: &str = "unset-in-this-environment";

/// One action of the run, and what its plugin did with the stand-in.
struct Tried {
    event: String,
    rule: String,
    decision: Value,
    route: String,
    plugin: String,
    requests: Vec<RecordedRequest>,
    /// How the dry run answered its requests, in words.
    answered: String,
    outcome: Result<String, String>,
}

#[derive(clap::Args)]
pub struct TryArgs {
    /// The config whose rules, routes, hooks and plugins run.
    #[arg(long, short, default_value = "config/converge.toml")]
    config: PathBuf,
    /// After the last event, move the clock on by this much (`72h`, `3d`),
    /// firing the timers due on the way: an escalation ladder's later
    /// steps, an expected event's deadline.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    advance: Option<Duration>,
    /// Answer a plugin's requests with the JSON in FILE (status 200, or
    /// the STATUS given) instead of the stand-in `200 {"ok": true}`: the
    /// reply a plugin reads, or an error, to see what it makes of it.
    /// Repeat for several plugins.
    #[arg(long, value_name = "PLUGIN=[STATUS:]FILE")]
    answer: Vec<String>,
    /// The file is what a sender posts to this hook, turned into events
    /// as the hook does (its connector plugin, its JSON mapping, or
    /// CloudEvents); its signature is not checked.
    #[arg(long, value_name = "NAME")]
    hook: Option<String>,
    /// A request header for `--hook` (`X-GitHub-Event: issues`), as the
    /// sender sends it. Repeat for several.
    #[arg(long, value_name = "NAME: VALUE", requires = "hook")]
    header: Vec<String>,
    /// One JSON object per action: its decision, route, plugin, requests
    /// and what the plugin said.
    #[arg(long)]
    json: bool,
    /// CloudEvents (one, a JSON array of them, or one per line), run in
    /// order; with `--hook`, a body as the hook's sender posts it.
    events: PathBuf,
}

pub fn run(args: &TryArgs) -> ExitCode {
    match output(args) {
        Ok(out) => {
            print!("{out}");
            Exit::Ok.into()
        }
        Err((exit, message)) => {
            eprintln!("error: {message}");
            exit.into()
        }
    }
}

/// What `try` prints, or why it cannot run (an invalid config, rule,
/// plugin or input is [`Exit::Invalid`]).
fn output(args: &TryArgs) -> Result<String, (Exit, String)> {
    let invalid = |message: String| (Exit::Invalid, message);
    let config = load(&args.config).map_err(invalid)?;
    let answers = answers(&args.answer, &config).map_err(|e| invalid(format!("--answer {e}")))?;
    let loaded = LoadedRules::compile(&config.rules).map_err(|errors| {
        invalid(format!(
            "{} rule error(s):\n  {}",
            errors.len(),
            errors.join("\n  ")
        ))
    })?;
    let runtime = crate::async_runtime().map_err(|e| (Exit::Failure, e))?;
    let plugins = runtime
        .block_on(Plugins::load(&config, answers))
        .map_err(|e| invalid(format!("{e:#}")))?;
    let events = match &args.hook {
        None => read_events(&args.events),
        Some(hook) => {
            runtime.block_on(plugins.hook_events(&config, hook, &args.header, &args.events))
        }
    }
    .map_err(invalid)?;
    let mut decided =
        decide(&config, &loaded, &events, args.advance).map_err(|e| (Exit::Failure, e))?;
    let actions = std::mem::take(&mut decided.actions);
    let tried = runtime
        .block_on(plugins.try_actions(&config, actions))
        .map_err(|e| (Exit::Failure, format!("{e:#}")))?;
    Ok(if args.json {
        tried
            .iter()
            .map(|t| to_json(t).to_string() + "\n")
            .collect()
    } else {
        text(&decided, &tried, events.len())
    })
}

/// The config, with a placeholder for each credential whose variable is
/// unset, so that its plugin's requests are made (and shown) as they would
/// be with it.
fn load(path: &Path) -> Result<Config, String> {
    let env = |name: &str| std::env::var(name).ok();
    let first = Config::load(path, &env).map_err(|e| e.to_string())?;
    let unset: Vec<String> = first
        .plugins
        .values()
        .flat_map(|p| p.grants.unset_credentials.values().cloned())
        .collect();
    if unset.is_empty() {
        return Ok(first);
    }
    Config::load(path, &|name| {
        env(name).or_else(|| unset.iter().any(|v| v == name).then(|| PLACEHOLDER.into()))
    })
    .map_err(|e| e.to_string())
}

/// The `--answer PLUGIN=[STATUS:]FILE`s: each plugin's answer, and how
/// the output names it.
fn answers(
    given: &[String],
    config: &Config,
) -> Result<BTreeMap<String, (StandIn, String)>, String> {
    let mut answers = BTreeMap::new();
    for answer in given {
        let (plugin, rest) = answer
            .split_once('=')
            .ok_or_else(|| format!("`{answer}`: expected PLUGIN=[STATUS:]FILE"))?;
        if !config.plugins.contains_key(plugin) {
            return Err(format!("`{answer}`: the config has no plugin `{plugin}`"));
        }
        let (status, file) = match rest.split_once(':') {
            Some((status, file))
                if status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let status: u16 = status.parse().expect("three digits");
                if !(100..=599).contains(&status) {
                    return Err(format!("`{answer}`: {status} is not an HTTP status"));
                }
                (status, file)
            }
            _ => (STAND_IN_STATUS, rest),
        };
        let body =
            std::fs::read(file).map_err(|e| format!("`{answer}`: cannot read {file}: {e}"))?;
        answers.insert(
            plugin.to_string(),
            (StandIn { status, body }, format!("{status} from {file}")),
        );
    }
    Ok(answers)
}

/// One CloudEvent (a JSON object), or several, one per line.
fn read_events(path: &Path) -> Result<Vec<Event>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    events_of(&text).map_err(|e| format!("{}{e}", path.display()))
}

/// One CloudEvent, a JSON array of them, or one per line. `Err` starts
/// with where in the text (`:3: ...`), or `: ...`.
fn events_of(text: &str) -> Result<Vec<Event>, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        return Event::batch_from_json(trimmed.as_bytes()).map_err(|e| format!(": {e}"));
    }
    if let Ok(one) = Event::from_json(trimmed.as_bytes()) {
        return Ok(vec![one]);
    }
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = Event::from_json(line.as_bytes()).map_err(|e| format!(":{}: {e}", i + 1))?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(": no event in it".to_string());
    }
    Ok(events)
}

/// What the rules decided, in the words `try` prints, and the actions.
struct Decided {
    /// Per event processed: its line, then one line per decision, each
    /// decision's actions numbered in `actions` order.
    lines: Vec<Line>,
    actions: Vec<Routed>,
    /// Events of timers that fired, and events the rules emitted.
    timers: usize,
    emitted: usize,
}

/// An action a decision's route made, with what the output names it by.
struct Routed {
    event: String,
    rule: String,
    decision: Value,
    action: NewAction,
}

enum Line {
    Event(String),
    Decision {
        text: String,
        actions: Vec<usize>,
        /// An `escalate` or `notify`, which only its routes carry out.
        routed_only: bool,
    },
    Failure(String),
}

/// The events in order, each at its `time` (the clock stays where it is
/// for one without), then the clock moved on by `advance`, firing the
/// timers due: what the rules decide and the actions they make.
fn decide(
    config: &Config,
    loaded: &LoadedRules,
    events: &[Event],
    advance: Option<Duration>,
) -> Result<Decided, String> {
    let engine = config.engine();
    let rules = Rules {
        live: &loaded.live,
        shadow: Some(&loaded.shadow),
    };
    // The daemon's clock as the journal keeps it, in whole milliseconds: a
    // rule comparing a time it stored with a timer's (the handoff ladder's
    // rungs) sees what it would live.
    let mut sim = Simulation::new(rules, engine, Utc::now().trunc_subsecs(3));
    let mut decided = Decided {
        lines: Vec::new(),
        actions: Vec::new(),
        timers: 0,
        emitted: 0,
    };
    for event in events {
        if let Some(time) = event.time {
            sim.now = time;
        }
        sim.run(event, Origin::Input, &mut |processed| {
            decided.add(processed)
        })?;
    }
    if let Some(advance) = advance {
        let by = chrono::Duration::from_std(advance).map_err(|e| format!("--advance: {e}"))?;
        let until = sim.now + by;
        sim.advance_to(until, Some(MAX_TIMER_FIRINGS), &mut |processed| {
            decided.add(processed);
        })?;
    }
    Ok(decided)
}

impl Decided {
    /// One event the simulation processed: its line, its rules' failures,
    /// and each live decision with the actions its routes made.
    fn add(&mut self, processed: Simulated<'_>) {
        let event = processed.event;
        self.lines.push(Line::Event(format!(
            "{} {} ({}){}",
            event.id,
            event.ty,
            event.subject.as_deref().unwrap_or("no subject"),
            match processed.origin {
                Origin::Emit => ", emitted".to_string(),
                Origin::Timer => format!(
                    ", a timer fired at {}",
                    processed
                        .now
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                ),
                Origin::Input => String::new(),
            }
        )));
        match processed.origin {
            Origin::Timer => self.timers += 1,
            Origin::Emit => self.emitted += 1,
            Origin::Input => {}
        }
        for failure in &processed.evaluation.failures {
            self.lines.push(Line::Failure(failure.message.clone()));
        }
        for new in processed.outcome.decisions.iter().filter(|d| !d.shadow) {
            let decision = &new.decision;
            let mut numbers = Vec::new();
            for action in &new.actions {
                numbers.push(self.actions.len());
                self.actions.push(Routed {
                    event: event.id.clone(),
                    rule: decision.rule.clone(),
                    decision: serde_json::to_value(&decision.kind).expect("decisions serialize"),
                    action: action.clone(),
                });
            }
            self.lines.push(Line::Decision {
                routed_only: DecisionKind::ROUTED_ONLY.contains(&decision.kind.name()),
                text: format!(
                    "{}: {}",
                    decision.rule,
                    serde_json::to_string(&decision.kind).expect("decisions serialize")
                ),
                actions: numbers,
            });
        }
    }
}

/// The config's plugins on a dry-run host.
struct Plugins {
    dry_run: DryRun,
    /// How the dry run answers each plugin, in words; the others get the
    /// stand-in.
    answered: BTreeMap<String, String>,
    loaded: HashMap<String, Plugin>,
    _host: PluginHost,
}

impl Plugins {
    async fn load(
        config: &Config,
        answers: BTreeMap<String, (StandIn, String)>,
    ) -> anyhow::Result<Plugins> {
        let dry_run = DryRun::answering(
            answers
                .iter()
                .map(|(plugin, (answer, _))| (plugin.clone(), answer.clone()))
                .collect(),
        );
        let host = PluginHost::new(PluginHostConfig {
            dry_run: Some(dry_run.clone()),
            ..plugin_host_config(config)
        })?;
        let loaded = load_plugins(&host, config).await?;
        Ok(Plugins {
            dry_run,
            answered: answers
                .into_iter()
                .map(|(plugin, (_, named))| (plugin, named))
                .collect(),
            loaded,
            _host: host,
        })
    }

    /// The events of a body posted to `hook`, as the hook makes them (its
    /// signature unchecked): its connector plugin's, its JSON mapping's,
    /// or the CloudEvents it is.
    async fn hook_events(
        &self,
        config: &Config,
        hook: &str,
        headers: &[String],
        path: &Path,
    ) -> Result<Vec<Event>, String> {
        let listed = config
            .hooks
            .get(hook)
            .ok_or_else(|| format!("--hook: the config has no hook `{hook}`"))?;
        let body =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let headers = headers
            .iter()
            .map(|header| {
                header
                    .split_once(':')
                    .map(|(name, value)| {
                        (name.trim().to_ascii_lowercase(), value.trim().to_string())
                    })
                    .filter(|(name, _)| !name.is_empty())
                    .ok_or_else(|| format!("--header `{header}`: expected NAME: VALUE"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let events = match listed {
            HookConfig {
                decode: Some(decode),
                ..
            } => {
                let plugin = self
                    .loaded
                    .get(&decode.plugin)
                    .ok_or_else(|| format!("plugin `{}` is not loaded", decode.plugin))?;
                let input = DecodeInput {
                    hook: hook.to_string(),
                    method: "POST".into(),
                    headers,
                    body,
                };
                let decoded = plugin
                    .decode(input, &decode.config_json)
                    .await
                    .map_err(|e| {
                        format!(
                            "hook `{hook}`: {} cannot decode {}: {e}",
                            decode.plugin,
                            path.display()
                        )
                    })?;
                decoded
                    .iter()
                    .map(|json| Event::from_json(json.as_bytes()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        format!(
                            "hook `{hook}`: {} made an event that is not valid: {e}",
                            decode.plugin
                        )
                    })?
            }
            HookConfig {
                json: Some(mapping),
                ..
            } => mapping
                .events(&body)
                .map_err(|e| format!("hook `{hook}`: {e}"))?,
            _ => events_of(&String::from_utf8_lossy(&body))
                .map_err(|e| format!("{}{e}", path.display()))?,
        };
        if events.is_empty() {
            return Err(format!(
                "hook `{hook}` makes no event of {} (a check, a heartbeat)",
                path.display()
            ));
        }
        Ok(events
            .into_iter()
            .map(|event| event.arrived_on(hook, None))
            .collect())
    }

    /// Each action through its plugin, in the dry run.
    async fn try_actions(
        &self,
        config: &Config,
        actions: Vec<Routed>,
    ) -> anyhow::Result<Vec<Tried>> {
        let mut tried = Vec::new();
        for (n, routed) in actions.into_iter().enumerate() {
            let Routed {
                event,
                rule,
                decision,
                action,
            } = routed;
            let route = config.routes.iter().find(|r| r.name == action.route);
            let plugin = self.loaded.get(&action.plugin);
            let outcome = match (route, plugin, ActionPayload::read(&action.payload)) {
                (Some(route), Some(plugin), Ok(payload)) => {
                    let input = action_input(format!("try-{}", n + 1), &payload);
                    plugin
                        .execute(input, &route.config_json)
                        .await
                        .map(|done| done.summary)
                        .map_err(|e| e.to_string())
                }
                (_, _, Err(e)) => Err(format!("the action's payload is not readable: {e}")),
                (None, _, _) => Err(format!("no route `{}`", action.route)),
                (_, None, _) => Err(format!("plugin `{}` is not loaded", action.plugin)),
            };
            let answered = self
                .answered
                .get(&action.plugin)
                .cloned()
                .unwrap_or_else(|| format!("{STAND_IN_STATUS} {STAND_IN_BODY}"));
            tried.push(Tried {
                event,
                rule,
                decision,
                route: action.route,
                plugin: action.plugin,
                requests: self.dry_run.take(),
                answered,
                outcome,
            });
        }
        Ok(tried)
    }
}

fn to_json(tried: &Tried) -> Value {
    let requests: Vec<Value> = tried
        .requests
        .iter()
        .map(|r| {
            json!({
                "method": r.method,
                "url": r.url,
                "headers": r.headers,
                "body": r.body.as_deref().map(String::from_utf8_lossy),
            })
        })
        .collect();
    let (ok, said) = match &tried.outcome {
        Ok(summary) => (true, summary),
        Err(error) => (false, error),
    };
    json!({
        "event": tried.event,
        "rule": tried.rule,
        "decision": tried.decision,
        "route": tried.route,
        "plugin": tried.plugin,
        "requests": requests,
        "outcome": {"ok": ok, "said": said},
    })
}

fn text(decided: &Decided, tried: &[Tried], events: usize) -> String {
    let mut out = String::new();
    let mut decisions = 0;
    for line in &decided.lines {
        match line {
            Line::Event(event) => {
                let _ = writeln!(out, "event {event}");
            }
            Line::Failure(failure) => {
                let _ = writeln!(out, "  rule failed: {failure}");
            }
            Line::Decision {
                text,
                actions,
                routed_only,
            } => {
                decisions += 1;
                let _ = writeln!(out, "  {text}");
                if actions.is_empty() && *routed_only {
                    let _ = writeln!(out, "    no route acts on it: nobody hears of it");
                }
                for &n in actions {
                    write_action(&mut out, &tried[n]);
                }
            }
        }
    }
    let requests: usize = tried.iter().map(|t| t.requests.len()).sum();
    let mut processed = format!("{events} event(s)");
    if decided.timers > 0 {
        let _ = write!(processed, ", {} timer(s) fired", decided.timers);
    }
    if decided.emitted > 0 {
        let _ = write!(processed, ", {} emitted", decided.emitted);
    }
    let _ = writeln!(
        out,
        "{processed}, {decisions} decision(s), {} action(s), {requests} request(s) shown; nothing was sent",
        tried.len()
    );
    out
}

fn write_action(out: &mut String, tried: &Tried) {
    let _ = writeln!(
        out,
        "    -> route {} (plugin {})",
        tried.route, tried.plugin
    );
    for request in &tried.requests {
        let _ = writeln!(out, "       {} {}", request.method, request.url);
        for (name, value) in &request.headers {
            let _ = writeln!(out, "         {name}: {value}");
        }
        if let Some(body) = &request.body {
            let shown = String::from_utf8_lossy(&body[..body.len().min(SHOWN_BODY_BYTES)]);
            for line in shown.lines() {
                let _ = writeln!(out, "         | {line}");
            }
            if body.len() > SHOWN_BODY_BYTES {
                let _ = writeln!(out, "         | ... ({} bytes in all)", body.len());
            }
        }
    }
    let answered = format!("each answered {} by the dry run", tried.answered);
    match &tried.outcome {
        Ok(summary) if tried.requests.is_empty() => {
            let _ = writeln!(out, "       no request; the plugin said: {summary}");
        }
        Ok(summary) => {
            let _ = writeln!(out, "       ({answered}) the plugin said: {summary}");
        }
        Err(error) => {
            let _ = writeln!(out, "       ({answered}) the plugin failed: {error}");
        }
    }
}
