//! `converge rules try EVENTS`: the config's rules and routes run on events
//! from a file, as the daemon would run them, and each action's plugin is
//! called in a dry run: its HTTP requests are checked against its grants,
//! shown, and answered with a stand-in instead of sent. Nothing is stored
//! and nothing leaves the machine: a rule author sees what Slack, Mailchimp
//! or a webhook would have received before a rule or a route goes live.
//!
//! Credentials are not needed: a credential whose variable is unset is
//! given a placeholder, and no credential's value is ever shown (its header
//! names the credential).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use converge_engine::{ActionPayload, Engine, Origin, Rules, Simulated, Simulation};
use converge_model::{DecisionKind, Event, records::NewAction};
use converge_plugin_host::{
    ActionInput, DryRun, PluginHost, PluginHostConfig, RecordedRequest, STAND_IN_BODY,
    STAND_IN_STATUS, StandIn,
};
use serde_json::{Value, json};

use crate::Exit;
use crate::config::Config;
use crate::daemon::{load_plugins, plugin_host_config};
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
    /// One JSON object per action: its decision, route, plugin, requests
    /// and what the plugin said.
    #[arg(long)]
    json: bool,
    /// A CloudEvent (JSON), or NDJSON of several, run in order.
    events: PathBuf,
}

pub fn run(args: &TryArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid.into();
        }
    };
    let answers = match answers(&args.answer, &config) {
        Ok(answers) => answers,
        Err(e) => {
            eprintln!("error: --answer {e}");
            return Exit::Invalid.into();
        }
    };
    let events = match read_events(&args.events) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid.into();
        }
    };
    let loaded = match LoadedRules::compile(&config.rules) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!(
                "error: {} rule error(s):\n  {}",
                errors.len(),
                errors.join("\n  ")
            );
            return Exit::Invalid.into();
        }
    };
    let mut decided = match decide(&config, &loaded, &events, args.advance) {
        Ok(decided) => decided,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failure.into();
        }
    };
    let runtime = match crate::async_runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    let actions = std::mem::take(&mut decided.actions);
    let tried = match runtime.block_on(try_actions(&config, answers, actions)) {
        Ok(tried) => tried,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Exit::Invalid.into();
        }
    };
    let out = if args.json {
        tried
            .iter()
            .map(|t| to_json(t).to_string() + "\n")
            .collect()
    } else {
        text(&decided, &tried, events.len())
    };
    print!("{out}");
    Exit::Ok.into()
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
    if let Ok(one) = Event::from_json(text.trim().as_bytes()) {
        return Ok(vec![one]);
    }
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = Event::from_json(line.as_bytes())
            .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(format!("{}: no event in it", path.display()));
    }
    Ok(events)
}

/// What the rules decided, in the words `try` prints, and the actions.
struct Decided {
    /// Per event processed: its line, then one line per decision, each
    /// decision's actions numbered in `actions` order.
    lines: Vec<Line>,
    actions: Vec<(String, String, Value, NewAction)>,
    /// Events of timers that fired, and events the rules emitted.
    timers: usize,
    emitted: usize,
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
    let engine = Engine {
        routes: config.routes.clone(),
        max_emit_depth: config.rules.max_emit_depth,
        stages: config.report.clone(),
    };
    let rules = Rules {
        live: &loaded.live,
        shadow: Some(&loaded.shadow),
    };
    let mut sim = Simulation::new(rules, engine, Utc::now());
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
                self.actions.push((
                    event.id.clone(),
                    decision.rule.clone(),
                    serde_json::to_value(&decision.kind).expect("decisions serialize"),
                    action.clone(),
                ));
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

/// Each action through its plugin, in a dry run.
async fn try_actions(
    config: &Config,
    answers: BTreeMap<String, (StandIn, String)>,
    actions: Vec<(String, String, Value, NewAction)>,
) -> anyhow::Result<Vec<Tried>> {
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
    let plugins = load_plugins(&host, config).await?;
    let mut tried = Vec::new();
    for (n, (event, rule, decision, action)) in actions.into_iter().enumerate() {
        let route = config.routes.iter().find(|r| r.name == action.route);
        let plugin = plugins.get(&action.plugin);
        let outcome = match (route, plugin, ActionPayload::parse(&action.payload_json)) {
            (Some(route), Some(plugin), Ok(payload)) => {
                let input = ActionInput {
                    id: format!("try-{}", n + 1),
                    kind: payload.kind.to_string(),
                    rule: payload.rule.to_string(),
                    decision_json: payload.decision.get().to_string(),
                    event_json: payload.event.get().to_string(),
                    entity_json: payload.entity.get().to_string(),
                };
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
        let answered = match answers.get(&action.plugin) {
            Some((_, named)) => named.clone(),
            None => format!("{STAND_IN_STATUS} {STAND_IN_BODY}"),
        };
        tried.push(Tried {
            event,
            rule,
            decision,
            route: action.route,
            plugin: action.plugin,
            requests: dry_run.take(),
            answered,
            outcome,
        });
    }
    Ok(tried)
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
