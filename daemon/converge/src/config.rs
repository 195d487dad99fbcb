//! The daemon's configuration, in two stages: `raw` mirrors the TOML file
//! (unknown keys are errors, defaults are explicit), and [`Config`] is what
//! the rest of the daemon uses: paths resolved against the config file's
//! directory, durations parsed, secrets read from the environment. Validation
//! reports every problem at once, each with its key path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use converge_model::{CatchUp, DecisionKind};
use converge_store::Location;

use crate::hooks::{Decode, HookConfig, RawHook};
use crate::schedules::Schedule;
use anyhow::Context;
use converge_plugin_host::{Credential, Grants, PluginLimits};
use converge_rules::{RuleLimits, RuleSource};
use converge_store::{Durability, StartCheck};

use crate::logging::{LogFormat, LogSettings};
use crate::otel::TelemetrySettings;
use crate::plain_json::{JsonMapping, Template};

mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        #[serde(default)]
        pub server: Server,
        #[serde(default)]
        pub storage: Storage,
        #[serde(default)]
        pub rules: Rules,
        #[serde(default)]
        pub plugins: BTreeMap<String, Plugin>,
        #[serde(default)]
        pub routes: Vec<Route>,
        #[serde(default)]
        pub dispatch: Dispatch,
        #[serde(default)]
        pub clock: Clock,
        #[serde(default)]
        pub schedules: Vec<Schedule>,
        #[serde(default)]
        pub hooks: BTreeMap<String, Hook>,
        #[serde(default)]
        pub file_drops: Vec<converge_filedrop::RawDrop>,
        #[serde(default)]
        pub polls: Vec<Poll>,
        #[serde(default)]
        pub report: Report,
        #[serde(default)]
        pub log: Log,
        #[serde(default)]
        pub telemetry: Telemetry,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Telemetry {
        pub otlp_endpoint: Option<String>,
        pub service_name: String,
        pub sample_ratio: f64,
    }

    impl Default for Telemetry {
        fn default() -> Self {
            Telemetry {
                otlp_endpoint: None,
                service_name: "converge".into(),
                sample_ratio: 1.0,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Log {
        pub level: String,
        pub format: String,
    }

    impl Default for Log {
        fn default() -> Self {
            Log {
                level: "info".into(),
                format: "text".into(),
            }
        }
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Report {
        /// Role name -> the team's stage names for it.
        pub stages: BTreeMap<String, Vec<String>>,
        pub planned_field: Option<String>,
        pub actor_field: Option<String>,
        pub approval_field: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Hook {
        #[serde(default = "no_verification")]
        pub verify: String,
        #[serde(default)]
        pub secret_env: OneOrMany,
        pub url: Option<String>,
        pub tolerance: Option<String>,
        #[serde(default)]
        pub allow_legacy_sha1: bool,
        pub header: Option<String>,
        pub prefix: Option<String>,
        pub encoding: Option<String>,
        pub decode: Option<String>,
        #[serde(default = "empty_table")]
        pub config: toml::Value,
        pub json: Option<JsonMapping>,
        #[serde(default)]
        pub secret_fields: Vec<String>,
    }

    /// `[hooks.<name>.json]`: plain JSON mapped to CloudEvents.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct JsonMapping {
        #[serde(rename = "type")]
        pub ty: String,
        pub source: Option<String>,
        pub id: Option<String>,
        pub subject: Option<String>,
        pub time: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Poll {
        pub name: String,
        pub plugin: String,
        #[serde(default = "one_minute")]
        pub interval: String,
        #[serde(default = "empty_table")]
        pub config: toml::Value,
    }

    fn one_minute() -> String {
        "1m".into()
    }

    fn no_verification() -> String {
        "none".into()
    }

    /// A variable name, or a list of them (secret rotation).
    #[derive(Debug, Default, Deserialize)]
    #[serde(untagged, expecting = "a variable name or a list of variable names")]
    pub enum OneOrMany {
        #[default]
        None,
        One(String),
        Many(Vec<String>),
    }

    impl OneOrMany {
        pub fn to_vec(&self) -> Vec<String> {
            match self {
                OneOrMany::None => Vec::new(),
                OneOrMany::One(one) => vec![one.clone()],
                OneOrMany::Many(many) => many.clone(),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Schedule {
        pub name: String,
        pub cron: String,
        #[serde(default = "utc")]
        pub timezone: String,
        #[serde(rename = "type")]
        pub event_type: String,
        pub subject: Option<String>,
        #[serde(default = "empty_table")]
        pub data: toml::Value,
        #[serde(default = "fire_late")]
        pub catch_up: String,
    }

    fn utc() -> String {
        "UTC".into()
    }

    fn fire_late() -> String {
        "fire_late".into()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Clock {
        pub mode: String,
        pub start: Option<String>,
    }

    impl Default for Clock {
        fn default() -> Self {
            Clock {
                mode: "system".into(),
                start: None,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Server {
        pub listen: String,
        pub max_body_bytes: u64,
        pub max_events_in_flight: u64,
        pub max_connections: u64,
        pub max_body_bytes_in_flight: u64,
        pub admin_token_env: String,
        pub read_token_env: String,
        pub unlisted_hooks: String,
        pub header_read_timeout: String,
        pub body_read_timeout: String,
    }

    impl Default for Server {
        fn default() -> Self {
            Server {
                listen: "127.0.0.1:8420".into(),
                max_body_bytes: 1024 * 1024,
                max_events_in_flight: 50_000,
                max_connections: 1024,
                max_body_bytes_in_flight: 64 * 1024 * 1024,
                admin_token_env: "CONVERGE_ADMIN_TOKEN".into(),
                read_token_env: "CONVERGE_READ_TOKEN".into(),
                unlisted_hooks: "accept".into(),
                header_read_timeout: "10s".into(),
                body_read_timeout: "30s".into(),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Storage {
        pub data_dir: String,
        pub durability: String,
        pub max_batch: u64,
        pub plugin_cache_dir: Option<String>,
        pub url: Option<String>,
        pub password_env: String,
        pub lease_ttl: String,
        pub entity_cache_entries: u64,
        pub check_on_start: String,
        pub retention: Option<String>,
        pub retention_archive: Option<String>,
    }

    impl Default for Storage {
        fn default() -> Self {
            Storage {
                data_dir: "data".into(),
                durability: "full".into(),
                max_batch: 1024,
                plugin_cache_dir: None,
                url: None,
                password_env: "CONVERGE_DATABASE_PASSWORD".into(),
                lease_ttl: "15s".into(),
                entity_cache_entries: 10_000,
                check_on_start: "quick".into(),
                retention: None,
                retention_archive: None,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Rules {
        pub files: Vec<String>,
        pub shadow: Vec<String>,
        pub watch: bool,
        pub limits: RuleLimits,
        pub max_emit_depth: u64,
        pub event_types: Vec<String>,
    }

    impl Default for Rules {
        fn default() -> Self {
            Rules {
                files: Vec::new(),
                shadow: Vec::new(),
                watch: true,
                limits: RuleLimits::default(),
                max_emit_depth: 8,
                event_types: Vec::new(),
            }
        }
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RuleLimits {
        pub max_operations: Option<u64>,
        pub max_call_levels: Option<u64>,
        pub max_expr_depth: Option<u64>,
        pub max_string_size: Option<u64>,
        pub max_array_size: Option<u64>,
        pub max_map_size: Option<u64>,
        pub max_decisions_per_rule: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Plugin {
        pub component: String,
        #[serde(default)]
        pub http_hosts: Vec<String>,
        #[serde(default)]
        pub allow_plain_http: bool,
        #[serde(default)]
        pub credentials: BTreeMap<String, Credential>,
        #[serde(default)]
        pub limits: PluginLimits,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Credential {
        pub env: String,
        #[serde(default = "authorization")]
        pub header: String,
        #[serde(default = "bearer")]
        pub scheme: String,
    }

    fn authorization() -> String {
        "authorization".into()
    }

    fn bearer() -> String {
        "Bearer".into()
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct PluginLimits {
        pub memory_mib: Option<u64>,
        pub cpu_time: Option<String>,
        pub wall_time: Option<String>,
        pub http_requests: Option<u64>,
        pub http_timeout: Option<String>,
        pub response_bytes: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Route {
        pub decision: String,
        pub plugin: String,
        pub name: Option<String>,
        /// Filters: only decisions of this rule, to this `to`, about this channel.
        pub rule: Option<String>,
        pub to: Option<String>,
        pub channel: Option<String>,
        /// false: the actions carry `entity = null`, for a plugin that does
        /// not read the entity's state (less to store, send and parse).
        #[serde(default = "carries")]
        pub carry_entity: bool,
        #[serde(default = "empty_table")]
        pub config: toml::Value,
    }

    fn carries() -> bool {
        true
    }

    fn empty_table() -> toml::Value {
        toml::Value::Table(Default::default())
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Dispatch {
        pub concurrency: u64,
        pub max_attempts: u64,
        pub initial_backoff: String,
        pub max_backoff: String,
        pub shutdown_grace: String,
    }

    impl Default for Dispatch {
        fn default() -> Self {
            Dispatch {
                concurrency: 64,
                max_attempts: 8,
                initial_backoff: "1s".into(),
                max_backoff: "10m".into(),
                shutdown_grace: "10s".into(),
            }
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub storage: Storage,
    pub rules: Rules,
    pub plugins: BTreeMap<String, PluginConfig>,
    pub routes: Vec<Route>,
    pub dispatch: Dispatch,
    pub clock: ClockConfig,
    pub schedules: Vec<Schedule>,
    pub hooks: BTreeMap<String, HookConfig>,
    pub file_drops: Vec<converge_filedrop::DropConfig>,
    pub polls: Vec<PollConfig>,
    /// `[report]`: the stage names behind the metrics' roles.
    pub report: StageRoles,
    /// `[log]`: the level and the format of the daemon's log.
    pub log: LogSettings,
    /// `[telemetry]`: where traces go, if anywhere.
    pub telemetry: TelemetrySettings,
    /// Problems that do not stop the daemon (a missing secret fails only the
    /// actions that need it); `run` logs them and `check` lists them.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Events acknowledged but not yet through the rules; intake waits when
    /// this many are pending, which bounds memory under overload.
    pub max_events_in_flight: usize,
    /// Connections open at once; past it, new ones are answered 503.
    pub max_connections: usize,
    /// The bytes of all request bodies being received, together; a body
    /// that would go past it is answered 503. Bounds memory under many
    /// stalled senders, with `max_connections`.
    pub max_body_bytes_in_flight: usize,
    /// The environment variable holding the admin token (gate overrides).
    pub admin_token_env: String,
    /// Its value, if set and not empty; `None` disables the admin API.
    pub admin_token: Option<AdminToken>,
    /// The environment variable holding the read token: what reading the
    /// console and the `/v1` API needs when `listen` is not loopback.
    pub read_token_env: String,
    /// Its value, if set and not empty (the admin token reads too).
    pub read_token: Option<AdminToken>,
    /// Whether `/hooks/<name>` for a name not in `[hooks]` takes unsigned
    /// CloudEvents (`server.unlisted_hooks = "accept"`).
    pub accept_unlisted_hooks: bool,
    /// A connection that has not sent a whole request head this long after
    /// it started one is closed, so slow clients cannot hold connections.
    pub header_read_timeout: Duration,
    /// A request whose body has not fully arrived this long after its head
    /// is answered 408 and its connection closed.
    pub body_read_timeout: Duration,
}

/// The token that authorizes the admin API (`Authorization: Bearer ...`).
/// Never printed: its `Debug` shows only that it is set.
#[derive(Clone)]
pub struct AdminToken(pub String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<set>)")
    }
}

/// Shorter admin tokens are accepted with a warning.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

#[derive(Debug, Clone)]
pub struct Storage {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Most requests one group commit gathers.
    pub max_batch: usize,
    /// Where compiled plugins are kept between starts.
    pub plugin_cache_dir: PathBuf,
    /// The database: `data_dir/converge.db`, or the PostgreSQL database of
    /// `storage.url` (with the password from `storage.password_env`).
    pub location: Location,
    /// How long a daemon's leases (partitions, sources, actions) last
    /// without renewal: how soon the others take over a dead daemon's work.
    pub lease_ttl: Duration,
    /// Entity states the processor keeps in memory, least recently used
    /// out first: what bounds its memory over many entities.
    pub entity_cache_entries: usize,
    /// What the daemon checks of an existing SQLite database before using
    /// it (the WAL always).
    pub check_on_start: StartCheck,
    /// How long processed events are kept (`None`: for ever), and where
    /// the pruned ones are archived, if anywhere.
    pub retention: Option<Retention>,
}

/// `storage.retention` and `storage.retention_archive`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub keep: Duration,
    /// A directory of gzipped NDJSON files, one per day of pruned events.
    pub archive: Option<PathBuf>,
}

impl Retention {
    /// The shortest retention: a sender's retry of an event pruned already is
    /// journaled again, so events are kept at least as long as senders retry.
    pub const SHORTEST: Duration = Duration::from_secs(24 * 3600);
}

#[derive(Debug, Clone)]
pub struct Rules {
    pub files: Vec<PathBuf>,
    /// The files of `files` whose rules run in shadow: their decisions are
    /// recorded, marked `shadow`, and never acted on.
    pub shadow: Vec<PathBuf>,
    /// Reload the rules when a rule file changes (SIGHUP reloads them either way).
    pub watch: bool,
    pub limits: RuleLimits,
    /// How many events deep a chain of `emit`s may go (an event a webhook
    /// or a timer journaled is depth 0); a deeper emit is a rule failure.
    pub max_emit_depth: u32,
    /// Event types that only come from outside (webhooks, connectors), so
    /// `converge rules check` knows them when no rule or rule test names
    /// them; only the lint reads it.
    pub event_types: Vec<String>,
}

impl Rules {
    /// Reads every rule file of `files`, named as decisions name them: by
    /// file stem unless the rule's header names it.
    pub fn sources(&self) -> anyhow::Result<Vec<RuleSource>> {
        self.files
            .iter()
            .map(|path| {
                RuleSource::read(path)
                    .with_context(|| format!("cannot read rule {}", path.display()))
            })
            .collect()
    }

    /// [`Rules::sources`] split into the live rules and those of `shadow`.
    pub fn live_and_shadow(&self) -> anyhow::Result<(Vec<RuleSource>, Vec<RuleSource>)> {
        let (shadow, live) = self
            .sources()?
            .into_iter()
            .partition(|source| self.shadow.contains(&source.path));
        Ok((live, shadow))
    }
}

/// Which clock the daemon runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockConfig {
    System,
    /// A testing aid: stands still at `start` (default: the system time at
    /// start) until `POST /v1/clock` moves it.
    Manual {
        start: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub component: PathBuf,
    pub grants: Grants,
    pub limits: PluginLimits,
}

pub use converge_engine::Route;
use converge_engine::{Role, StageRoles};

/// One `[[polls]]` entry: a connector plugin polled for new items.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Unique among polls; its cursor is kept under `poll-cursor/<name>`.
    pub name: String,
    pub plugin: String,
    /// How long to wait after a poll that found no further page.
    pub interval: Duration,
    /// The `config` table as JSON: what the plugin reads with `config-json`.
    pub config_json: String,
}

#[derive(Debug, Clone)]
pub struct Dispatch {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub shutdown_grace: Duration,
}

/// Every problem found in a config file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {n} error{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// The decision engine as the daemon runs it: the routes, the emit
    /// depth and the stage roles of this config. `replay` and `rules try`
    /// decide with the same.
    pub fn engine(&self) -> converge_engine::Engine {
        converge_engine::Engine {
            routes: self.routes.clone(),
            max_emit_depth: self.rules.max_emit_depth,
            stages: std::sync::Arc::new(self.report.clone()),
        }
    }

    /// Reads and validates a config file, reading secrets with `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let fail = |errors: Vec<String>| ConfigErrors {
            path: path.to_path_buf(),
            errors,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(vec![format!("cannot read the file: {e}")]))?;
        Config::parse(path, &text, env).map_err(fail)
    }

    /// The warnings about the database's settings (an unset password
    /// variable): what a command that could not open the database adds to
    /// its error.
    pub fn storage_warnings(&self) -> impl Iterator<Item = &str> {
        self.warnings
            .iter()
            .filter(|w| w.starts_with("storage."))
            .map(String::as_str)
    }

    /// What the hooks' `secret_fields` hide wherever events are shown.
    pub fn redaction(&self) -> crate::redact::Redaction {
        crate::redact::Redaction::new(
            self.hooks
                .iter()
                .map(|(name, hook)| (name.clone(), hook.secret_fields.clone())),
        )
    }

    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<String>> {
        let raw: raw::File = parse_raw(text)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut v = Validator::default();
        let config = Config {
            server: v.server(&raw.server, env),
            storage: v.storage(&raw.storage, base, env),
            rules: v.rules(&raw.rules, base),
            plugins: raw
                .plugins
                .iter()
                .map(|(name, p)| (name.clone(), v.plugin(name, p, base, env)))
                .collect(),
            routes: v.routes(&raw.routes, &raw.plugins),
            dispatch: v.dispatch(&raw.dispatch),
            clock: v.clock(&raw.clock),
            report: v.report(&raw.report),
            log: v.log(&raw.log),
            telemetry: v.telemetry(&raw.telemetry),
            schedules: v.schedules(&raw.schedules),
            hooks: v.hooks(&raw.hooks, &raw.plugins, env),
            polls: v.polls(&raw.polls, &raw.plugins),
            file_drops: converge_filedrop::validate_drops(
                raw.file_drops.clone(),
                "file_drops",
                &|dir: &Path| resolve(base, dir),
            )
            .unwrap_or_else(|errors| {
                v.errors.extend(errors);
                Vec::new()
            }),
            warnings: Vec::new(),
        };
        for (i, drop) in config.file_drops.iter().enumerate() {
            // A chunk waits for room for all its rows in the in-flight budget.
            if drop.chunk_rows > config.server.max_events_in_flight {
                v.error(
                    &format!("file_drops[{i}].chunk_rows"),
                    format!(
                        "must not exceed server.max_events_in_flight ({})",
                        config.server.max_events_in_flight
                    ),
                );
            }
        }
        if v.errors.is_empty() {
            Ok(Config {
                warnings: v.warnings,
                ..config
            })
        } else {
            Err(v.errors)
        }
    }
}

/// A path the config names, from the config file's directory `base`:
/// see [`tidy`].
fn resolve(base: &Path, path: impl AsRef<Path>) -> PathBuf {
    tidy(base.join(path))
}

/// `path` written without `dir/..` when that names the same file or
/// directory: with the example config, rule traces, `explain` and the log
/// read `rules/stalled_handoff.rhai`, not `config/../rules/stalled_handoff.rhai`.
/// Only then: through a symlinked directory, `..` leads elsewhere than the
/// lexical reading says. The deepest part of the path that exists decides
/// (a data directory is made at the first start); a `..` past it is kept.
fn tidy(path: PathBuf) -> PathBuf {
    let clean = path_clean::clean(&path);
    if clean == path {
        return path;
    }
    let mut existing = path.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => return path,
        }
    }
    let rest = path.strip_prefix(existing).unwrap_or(Path::new(""));
    let same = same_file::is_same_file(existing, path_clean::clean(existing)).unwrap_or(false);
    if same
        && !rest
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        clean
    } else {
        path
    }
}

/// Deserializes the file, naming the key of the first problem
/// (`server.lisen: unknown field ...`) before toml's excerpt of the line.
fn parse_raw(text: &str) -> Result<raw::File, Vec<String>> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| vec![describe_toml_error(&e)])?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = describe_toml_error(e.inner());
        vec![if path == "." {
            message
        } else {
            format!("{path}: {message}")
        }]
    })
}

fn describe_toml_error(e: &toml::de::Error) -> String {
    // toml's message spans several lines with a source excerpt; keep it, one level in.
    e.to_string().trim_end().replace('\n', "\n    ")
}

#[derive(Default)]
struct Validator {
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Validator {
    fn error(&mut self, key: &str, message: impl fmt::Display) {
        self.errors.push(format!("{key}: {message}"));
    }

    fn duration(&mut self, key: &str, text: &str, min: Duration) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) if d >= min => d,
            Ok(_) => {
                self.error(
                    key,
                    format!("must be at least {}", humantime::format_duration(min)),
                );
                min
            }
            Err(e) => {
                self.error(
                    key,
                    format!("`{text}` is not a duration like \"500ms\", \"10s\" or \"2h\": {e}"),
                );
                min
            }
        }
    }

    /// The value `text` names among `choices`; else an error listing them
    /// (and the first choice, so that checking goes on: a config with an
    /// error is refused whatever the rest holds).
    fn one_of<T: Copy>(&mut self, key: &str, text: &str, choices: &[(&str, T)]) -> T {
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return *value;
        }
        let names: Vec<String> = choices
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        self.error(key, format!("`{text}` is not one of {}", names.join(", ")));
        choices[0].1
    }

    fn count(&mut self, key: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> usize {
        if !range.contains(&value) {
            self.error(
                key,
                format!("must be between {} and {}", range.start(), range.end()),
            );
        }
        usize::try_from(value).unwrap_or(usize::MAX)
    }

    /// What is open when the daemon listens beyond loopback: said at every
    /// start (and by `converge check`), since anyone on the network reaches it.
    fn open_listen_warnings(&mut self, listen: SocketAddr, raw: &raw::Server, has_token: bool) {
        if raw.unlisted_hooks == "accept" {
            self.warnings.push(format!(
                "server.listen is {listen}, beyond loopback, and server.unlisted_hooks is \"accept\": anyone who reaches it can post unsigned events to any /hooks/<name>; list your hooks and set unlisted_hooks = \"reject\""
            ));
        }
        if !has_token {
            self.warnings.push(format!(
                "server.listen is {listen}, beyond loopback, and neither {} nor {} is set: nobody can read the console (/ui) or the /v1 API, and nobody can act",
                raw.read_token_env.trim(),
                raw.admin_token_env.trim()
            ));
        }
    }

    fn server(&mut self, raw: &raw::Server, env: &dyn Fn(&str) -> Option<String>) -> Server {
        let admin_token_env = raw.admin_token_env.trim().to_string();
        if admin_token_env.is_empty() {
            self.error(
                "server.admin_token_env",
                "must name an environment variable",
            );
        }
        let admin_token = env(&admin_token_env)
            .filter(|t| !t.is_empty())
            .map(AdminToken);
        if admin_token
            .as_ref()
            .is_some_and(|t| t.0.len() < MIN_ADMIN_TOKEN_LEN)
        {
            self.warnings.push(format!(
                "server.admin_token_env: the token in {admin_token_env} is shorter than {MIN_ADMIN_TOKEN_LEN} characters"
            ));
        }
        let read_token_env = raw.read_token_env.trim().to_string();
        if read_token_env.is_empty() {
            self.error("server.read_token_env", "must name an environment variable");
        }
        let read_token = env(&read_token_env)
            .filter(|t| !t.is_empty())
            .map(AdminToken);
        if read_token
            .as_ref()
            .is_some_and(|t| t.0.len() < MIN_ADMIN_TOKEN_LEN)
        {
            self.warnings.push(format!(
                "server.read_token_env: the token in {read_token_env} is shorter than {MIN_ADMIN_TOKEN_LEN} characters"
            ));
        }
        let listen = raw.listen.parse().unwrap_or_else(|_| {
            self.error(
                "server.listen",
                format!("`{}` is not an address like \"127.0.0.1:8420\"", raw.listen),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        if !listen.ip().is_loopback() {
            self.open_listen_warnings(listen, raw, admin_token.is_some() || read_token.is_some());
        }
        if raw.max_body_bytes_in_flight < raw.max_body_bytes {
            self.error(
                "server.max_body_bytes_in_flight",
                format!(
                    "must be at least server.max_body_bytes ({}): one body must fit",
                    raw.max_body_bytes
                ),
            );
        }
        Server {
            listen,
            max_body_bytes: self.count(
                "server.max_body_bytes",
                raw.max_body_bytes,
                1024..=(64 << 20),
            ),
            max_events_in_flight: self.count(
                "server.max_events_in_flight",
                raw.max_events_in_flight,
                1..=10_000_000,
            ),
            max_connections: self.count(
                "server.max_connections",
                raw.max_connections,
                1..=1_000_000,
            ),
            max_body_bytes_in_flight: self.count(
                "server.max_body_bytes_in_flight",
                raw.max_body_bytes_in_flight,
                1024..=(16 << 30),
            ),
            admin_token_env,
            admin_token,
            read_token_env,
            read_token,
            accept_unlisted_hooks: self.one_of(
                "server.unlisted_hooks",
                &raw.unlisted_hooks,
                &[("accept", true), ("reject", false)],
            ),
            header_read_timeout: self.duration(
                "server.header_read_timeout",
                &raw.header_read_timeout,
                Duration::from_millis(100),
            ),
            body_read_timeout: self.duration(
                "server.body_read_timeout",
                &raw.body_read_timeout,
                Duration::from_millis(100),
            ),
        }
    }

    /// A PostgreSQL location; the password only ever comes from the environment.
    fn postgres(
        &mut self,
        url: &str,
        password_env: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Location {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            self.error(
                "storage.url",
                format!("`{url}` is not a PostgreSQL URL like \"postgres://converge@db.internal/converge\""),
            );
        } else if url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .is_some_and(|(user, _)| user.contains(':'))
        {
            self.error(
                "storage.url",
                format!("must not contain a password: put it in the environment variable storage.password_env names ({password_env})"),
            );
        }
        let password = env(password_env).filter(|p| !p.is_empty());
        if password.is_none() {
            self.warnings.push(format!(
                "storage.password_env: {password_env} is not set; connecting to PostgreSQL without a password"
            ));
        }
        Location::Postgres {
            url: url.to_string(),
            password,
        }
    }

    fn storage(
        &mut self,
        raw: &raw::Storage,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Storage {
        let durability = self.one_of(
            "storage.durability",
            &raw.durability,
            &[("full", Durability::Full), ("normal", Durability::Normal)],
        );
        let data_dir = resolve(base, &raw.data_dir);
        let location = match &raw.url {
            None => Location::Sqlite {
                path: data_dir.join("converge.db"),
                durability,
            },
            Some(url) => self.postgres(url, &raw.password_env, env),
        };
        let lease_ttl = self.duration("storage.lease_ttl", &raw.lease_ttl, Duration::from_secs(1));
        let check_on_start = self.one_of(
            "storage.check_on_start",
            &raw.check_on_start,
            &[("quick", StartCheck::Quick), ("off", StartCheck::Off)],
        );
        let retention = match (&raw.retention, &raw.retention_archive) {
            (Some(keep), archive) => Some(Retention {
                keep: self.duration("storage.retention", keep, Retention::SHORTEST),
                archive: archive.as_ref().map(|dir| resolve(base, dir)),
            }),
            (None, Some(_)) => {
                self.error(
                    "storage.retention_archive",
                    "archives what retention prunes: set storage.retention too",
                );
                None
            }
            (None, None) => None,
        };
        Storage {
            location,
            lease_ttl,
            check_on_start,
            retention,
            plugin_cache_dir: raw
                .plugin_cache_dir
                .as_ref()
                .map_or_else(|| data_dir.join("plugin-cache"), |dir| resolve(base, dir)),
            data_dir,
            durability,
            max_batch: self.count("storage.max_batch", raw.max_batch, 1..=100_000),
            entity_cache_entries: self.count(
                "storage.entity_cache_entries",
                raw.entity_cache_entries,
                crate::entity_cache::MIN_ENTRIES as u64..=100_000_000,
            ),
        }
    }

    fn rules(&mut self, raw: &raw::Rules, base: &Path) -> Rules {
        let defaults = RuleLimits::default();
        let mut limit = |key: &str, value: Option<u64>, default: usize| match value {
            None => default,
            Some(v) => self.count(&format!("rules.limits.{key}"), v, 1..=100_000_000),
        };
        let limits = RuleLimits {
            max_operations: raw
                .limits
                .max_operations
                .map_or(defaults.max_operations, |v| {
                    limit("max_operations", Some(v), 0) as u64
                }),
            max_call_levels: limit(
                "max_call_levels",
                raw.limits.max_call_levels,
                defaults.max_call_levels,
            ),
            max_expr_depth: limit(
                "max_expr_depth",
                raw.limits.max_expr_depth,
                defaults.max_expr_depth,
            ),
            max_string_size: limit(
                "max_string_size",
                raw.limits.max_string_size,
                defaults.max_string_size,
            ),
            max_array_size: limit(
                "max_array_size",
                raw.limits.max_array_size,
                defaults.max_array_size,
            ),
            max_map_size: limit(
                "max_map_size",
                raw.limits.max_map_size,
                defaults.max_map_size,
            ),
            max_decisions_per_rule: limit(
                "max_decisions_per_rule",
                raw.limits.max_decisions_per_rule,
                defaults.max_decisions_per_rule,
            ),
            ..defaults
        };
        let mut files = Vec::new();
        for (i, file) in raw.files.iter().enumerate() {
            let path = resolve(base, file);
            if !path.is_file() {
                self.error(
                    &format!("rules.files[{i}]"),
                    format!("`{}` is not a file", path.display()),
                );
            }
            files.push(path);
        }
        let mut shadow = Vec::new();
        for (i, file) in raw.shadow.iter().enumerate() {
            let path = resolve(base, file);
            if !files.contains(&path) {
                self.error(
                    &format!("rules.shadow[{i}]"),
                    format!("`{file}` is not one of rules.files (write it as it is written there)"),
                );
            }
            shadow.push(path);
        }
        let max_emit_depth =
            self.count("rules.max_emit_depth", raw.max_emit_depth, 0..=1000) as u32;
        for (i, event_type) in raw.event_types.iter().enumerate() {
            if event_type.is_empty() || event_type.chars().any(char::is_whitespace) {
                self.error(
                    &format!("rules.event_types[{i}]"),
                    format!(
                        "must be an event type, not empty and without spaces, got {event_type:?}"
                    ),
                );
            }
        }
        Rules {
            files,
            shadow,
            watch: raw.watch,
            limits,
            max_emit_depth,
            event_types: raw.event_types.clone(),
        }
    }

    fn report(&mut self, raw: &raw::Report) -> StageRoles {
        let mut listed = Vec::new();
        for (role, names) in &raw.stages {
            let key = format!("report.stages.{role}");
            match Role::from_name(role) {
                Ok(role) => {
                    if let Some(blank) = names.iter().find(|n| n.trim().is_empty()) {
                        self.error(&key, format!("`{blank}` is not a stage name"));
                    }
                    listed.push((role, names.clone()));
                }
                Err(message) => self.error(&key, message),
            }
        }
        let mut roles = StageRoles::configured(listed).unwrap_or_else(|message| {
            self.error("report.stages", message);
            StageRoles::default()
        });
        for (slot, value, key) in [
            (
                &mut roles.planned_field,
                &raw.planned_field,
                "report.planned_field",
            ),
            (
                &mut roles.actor_field,
                &raw.actor_field,
                "report.actor_field",
            ),
            (
                &mut roles.approval_field,
                &raw.approval_field,
                "report.approval_field",
            ),
        ] {
            match value.as_deref().map(str::trim) {
                None => {}
                Some("") => self.error(key, "a field name cannot be empty"),
                Some(name) => *slot = name.to_string(),
            }
        }
        roles
    }

    fn telemetry(&mut self, raw: &raw::Telemetry) -> TelemetrySettings {
        let traces_url = raw.otlp_endpoint.as_deref().and_then(|endpoint| {
            match crate::otel::traces_url(endpoint) {
                Ok(url) => Some(url),
                Err(e) => {
                    self.error("telemetry.otlp_endpoint", e);
                    None
                }
            }
        });
        if raw.service_name.trim().is_empty() {
            self.error("telemetry.service_name", "must not be empty");
        }
        if !(0.0..=1.0).contains(&raw.sample_ratio) {
            self.error(
                "telemetry.sample_ratio",
                format!(
                    "must be from 0 to 1 (the share of traces kept), got {}",
                    raw.sample_ratio
                ),
            );
        }
        TelemetrySettings {
            traces_url,
            service_name: raw.service_name.clone(),
            sample_ratio: raw.sample_ratio,
        }
    }

    fn log(&mut self, raw: &raw::Log) -> LogSettings {
        if let Err(e) = crate::logging::check_level(&raw.level) {
            self.error(
                "log.level",
                format!(
                    "`{}` is not a level like \"info\" or \"info,converge=debug\": {e}",
                    raw.level
                ),
            );
        }
        let format = self.one_of(
            "log.format",
            &raw.format,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        );
        LogSettings {
            level: raw.level.clone(),
            format,
        }
    }

    fn clock(&mut self, raw: &raw::Clock) -> ClockConfig {
        let start = raw.start.as_deref().and_then(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    self.error(
                        "clock.start",
                        format!(
                            "`{text}` is not an RFC 3339 time like \"2026-11-23T10:00:00Z\": {e}"
                        ),
                    )
                })
                .ok()
        });
        match raw.mode.as_str() {
            "system" => {
                if raw.start.is_some() {
                    self.error("clock.start", "only a manual clock has a start time");
                }
                ClockConfig::System
            }
            "manual" => ClockConfig::Manual { start },
            other => {
                self.error(
                    "clock.mode",
                    format!("`{other}` is not one of \"system\", \"manual\""),
                );
                ClockConfig::System
            }
        }
    }

    fn plugin(
        &mut self,
        name: &str,
        raw: &raw::Plugin,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> PluginConfig {
        let key = format!("plugins.{name}");
        let component = resolve(base, &raw.component);
        if !component.is_file() {
            self.error(
                &format!("{key}.component"),
                format!(
                    "`{}` is not a file (build the plugins with `cargo build --profile wasm --target wasm32-wasip2 -p {name}`)",
                    component.display()
                ),
            );
        }
        for (i, host) in raw.http_hosts.iter().enumerate() {
            if !valid_host_pattern(host) {
                self.error(
                    &format!("{key}.http_hosts[{i}]"),
                    format!("`{host}` is not a host, host:port or *.domain"),
                );
            }
        }
        let mut credentials = BTreeMap::new();
        let mut unset_credentials = BTreeMap::new();
        for (cred_name, cred) in &raw.credentials {
            let cred_key = format!("{key}.credentials.{cred_name}");
            if cred.env.is_empty() {
                self.error(
                    &format!("{cred_key}.env"),
                    "must name an environment variable",
                );
                continue;
            }
            match env(&cred.env) {
                Some(secret) if !secret.is_empty() => {
                    let value = if cred.scheme.is_empty() {
                        secret
                    } else {
                        format!("{} {secret}", cred.scheme)
                    };
                    credentials.insert(
                        cred_name.clone(),
                        Credential {
                            header: cred.header.to_ascii_lowercase(),
                            value,
                        },
                    );
                }
                _ => {
                    self.warnings.push(format!(
                        "{cred_key}: environment variable {} is not set; actions of plugin `{name}` that use this credential will fail",
                        cred.env
                    ));
                    unset_credentials.insert(cred_name.clone(), cred.env.clone());
                }
            }
        }
        let defaults = PluginLimits::default();
        let l = &raw.limits;
        let limits = PluginLimits {
            memory_bytes: l.memory_mib.map_or(defaults.memory_bytes, |m| {
                self.count(&format!("{key}.limits.memory_mib"), m, 1..=4096) << 20
            }),
            cpu_time: l.cpu_time.as_deref().map_or(defaults.cpu_time, |t| {
                self.duration(
                    &format!("{key}.limits.cpu_time"),
                    t,
                    Duration::from_millis(10),
                )
            }),
            wall_time: l.wall_time.as_deref().map_or(defaults.wall_time, |t| {
                self.duration(
                    &format!("{key}.limits.wall_time"),
                    t,
                    Duration::from_millis(10),
                )
            }),
            max_http_requests: l.http_requests.map_or(defaults.max_http_requests, |n| {
                self.count(&format!("{key}.limits.http_requests"), n, 0..=1000) as u32
            }),
            http_timeout: l
                .http_timeout
                .as_deref()
                .map_or(defaults.http_timeout, |t| {
                    self.duration(
                        &format!("{key}.limits.http_timeout"),
                        t,
                        Duration::from_millis(10),
                    )
                }),
            max_response_bytes: l.response_bytes.map_or(defaults.max_response_bytes, |n| {
                self.count(&format!("{key}.limits.response_bytes"), n, 1..=(256 << 20))
            }),
            ..defaults
        };
        PluginConfig {
            component,
            grants: Grants {
                http_hosts: raw.http_hosts.clone(),
                allow_plain_http: raw.allow_plain_http,
                credentials,
                unset_credentials,
            },
            limits,
        }
    }

    fn routes(
        &mut self,
        raw: &[raw::Route],
        plugins: &BTreeMap<String, raw::Plugin>,
    ) -> Vec<Route> {
        let mut names = std::collections::HashSet::new();
        raw.iter()
            .enumerate()
            .map(|(i, r)| {
                let key = format!("routes[{i}]");
                if !DecisionKind::NAMES.contains(&r.decision.as_str()) {
                    self.error(
                        &format!("{key}.decision"),
                        format!(
                            "`{}` is not a decision kind; known kinds: {}",
                            r.decision,
                            DecisionKind::NAMES.join(", ")
                        ),
                    );
                }
                if !plugins.contains_key(&r.plugin) {
                    self.error(
                        &format!("{key}.plugin"),
                        format!("no plugin `{}` is configured under [plugins]", r.plugin),
                    );
                }
                let name = r
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-to-{}", r.decision, r.plugin));
                if !names.insert(name.clone()) {
                    self.error(
                        &format!("{key}.name"),
                        format!("route name `{name}` is used twice; give one route a `name`"),
                    );
                }
                let config_json = match &r.config {
                    toml::Value::Table(_) => serde_json::to_string(&r.config)
                        .expect("a TOML table always converts to JSON"),
                    _ => {
                        self.error(&format!("{key}.config"), "must be a table");
                        "{}".into()
                    }
                };
                let route = Route {
                    name,
                    decision: r.decision.clone(),
                    plugin: r.plugin.clone(),
                    config_json,
                    rule: r.rule.clone(),
                    to: r.to.clone(),
                    channel: r.channel.clone(),
                    carry_entity: r.carry_entity,
                };
                if let Some(why) = route.unreachable() {
                    self.error(&key, why);
                }
                route
            })
            .collect()
    }

    fn hooks(
        &mut self,
        raw: &BTreeMap<String, raw::Hook>,
        plugins: &BTreeMap<String, raw::Plugin>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> BTreeMap<String, HookConfig> {
        let mut hooks = BTreeMap::new();
        for (name, h) in raw {
            let key = format!("hooks.{name}");
            let tolerance = h
                .tolerance
                .as_deref()
                .map(|t| self.duration(&format!("{key}.tolerance"), t, Duration::from_secs(1)));
            let decode = h.decode.as_ref().map(|plugin| {
                if !plugins.contains_key(plugin) {
                    self.error(
                        &format!("{key}.decode"),
                        format!("no plugin `{plugin}` in [plugins]"),
                    );
                }
                Decode {
                    plugin: plugin.clone(),
                    config_json: self.table_json(&format!("{key}.config"), &h.config),
                }
            });
            if decode.is_none() && h.config.as_table().is_some_and(|t| !t.is_empty()) {
                self.error(
                    &format!("{key}.config"),
                    "is for the `decode` plugin; this hook takes CloudEvents",
                );
            }
            let json = h
                .json
                .as_ref()
                .and_then(|m| self.json_mapping(&key, name, m));
            if json.is_some() && decode.is_some() {
                self.error(
                    &format!("{key}.json"),
                    "a hook either decodes a tool's payloads (`decode`) or maps plain JSON, not both",
                );
            }
            let secret_fields = h
                .secret_fields
                .iter()
                .filter_map(|field| match crate::redact::FieldPath::parse(field) {
                    Ok(path) => Some(path),
                    Err(e) => {
                        self.error(&format!("{key}.secret_fields"), e);
                        None
                    }
                })
                .collect();
            let secret_env = h.secret_env.to_vec();
            let fields = RawHook {
                verify: &h.verify,
                secret_env: &secret_env,
                url: h.url.as_deref(),
                tolerance,
                allow_legacy_sha1: h.allow_legacy_sha1,
                header: h.header.as_deref(),
                prefix: h.prefix.as_deref(),
                encoding: h.encoding.as_deref(),
            };
            match HookConfig::new(name, &fields, env) {
                Ok((mut hook, warnings)) => {
                    hook.decode = decode;
                    hook.json = json;
                    hook.secret_fields = secret_fields;
                    self.warnings.extend(warnings);
                    hooks.insert(name.clone(), hook);
                }
                Err(errors) => {
                    for e in errors {
                        self.errors.push(match e.field {
                            Some(field) => format!("{key}.{field}: {}", e.message),
                            None => format!("hooks.{name}: {}", e.message),
                        });
                    }
                }
            }
        }
        hooks
    }

    /// `[hooks.<name>.json]`: each template parsed (every bad one
    /// reported); the source defaults to `hook/<name>`.
    fn json_mapping(
        &mut self,
        key: &str,
        name: &str,
        raw: &raw::JsonMapping,
    ) -> Option<JsonMapping> {
        let default_source = format!("hook/{name}");
        let mut parse = |field: &str, text: &str| match Template::parse(text) {
            Ok(template) => Some(template),
            Err(e) => {
                self.error(&format!("{key}.json.{field}"), e);
                None
            }
        };
        let ty = parse("type", &raw.ty);
        let source = parse("source", raw.source.as_deref().unwrap_or(&default_source));
        let id = raw.id.as_deref().map(|t| parse("id", t));
        let subject = raw.subject.as_deref().map(|t| parse("subject", t));
        let time = raw.time.as_deref().map(|t| parse("time", t));
        // An optional template given but bad is `Some(None)`: no mapping.
        Some(JsonMapping {
            ty: ty?,
            source: source?,
            id: id.map_or(Some(None), |t| t.map(Some))?,
            subject: subject.map_or(Some(None), |t| t.map(Some))?,
            time: time.map_or(Some(None), |t| t.map(Some))?,
        })
    }

    /// A `config` table as the JSON a plugin reads with `config-json`.
    fn table_json(&mut self, key: &str, value: &toml::Value) -> String {
        match value {
            toml::Value::Table(_) => {
                serde_json::to_string(value).expect("a TOML table always converts to JSON")
            }
            _ => {
                self.error(key, "must be a table");
                "{}".into()
            }
        }
    }

    fn polls(
        &mut self,
        raw: &[raw::Poll],
        plugins: &BTreeMap<String, raw::Plugin>,
    ) -> Vec<PollConfig> {
        let mut polls: Vec<PollConfig> = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            let key = format!("polls[{i}]");
            if !converge_model::sources::valid_name(&p.name) {
                self.error(
                    &format!("{key}.name"),
                    format!("`{}` must be letters, digits, '-' or '_'", p.name),
                );
            } else if polls.iter().any(|other| other.name == p.name) {
                self.error(
                    &format!("{key}.name"),
                    format!("`{}` is used by an earlier poll", p.name),
                );
            }
            if !plugins.contains_key(&p.plugin) {
                self.error(
                    &format!("{key}.plugin"),
                    format!("no plugin `{}` in [plugins]", p.plugin),
                );
            }
            polls.push(PollConfig {
                name: p.name.clone(),
                plugin: p.plugin.clone(),
                interval: self.duration(
                    &format!("{key}.interval"),
                    &p.interval,
                    Duration::from_secs(5),
                ),
                config_json: self.table_json(&format!("{key}.config"), &p.config),
            });
        }
        polls
    }

    fn schedules(&mut self, raw: &[raw::Schedule]) -> Vec<Schedule> {
        let mut schedules: Vec<Schedule> = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let key = format!("schedules[{i}]");
            if schedules.iter().any(|other| other.name == s.name) {
                self.error(
                    &format!("{key}.name"),
                    format!("`{}` is used by an earlier schedule", s.name),
                );
            }
            let catch_up = self.one_of(
                &format!("{key}.catch_up"),
                &s.catch_up,
                &[("fire_late", CatchUp::FireLate), ("skip", CatchUp::Skip)],
            );
            let data = serde_json::to_value(&s.data).unwrap_or(serde_json::Value::Null);
            match Schedule::new(
                &s.name,
                &s.cron,
                &s.timezone,
                &s.event_type,
                s.subject.clone(),
                data,
                catch_up,
            ) {
                Ok(schedule) => schedules.push(schedule),
                Err(errors) => {
                    for e in errors {
                        self.errors.push(format!("{key}.{e}"));
                    }
                }
            }
        }
        schedules
    }

    fn dispatch(&mut self, raw: &raw::Dispatch) -> Dispatch {
        let initial_backoff = self.duration(
            "dispatch.initial_backoff",
            &raw.initial_backoff,
            Duration::from_millis(10),
        );
        let max_backoff = self.duration(
            "dispatch.max_backoff",
            &raw.max_backoff,
            Duration::from_millis(10),
        );
        if max_backoff < initial_backoff {
            self.error(
                "dispatch.max_backoff",
                "must not be shorter than dispatch.initial_backoff",
            );
        }
        Dispatch {
            concurrency: self.count("dispatch.concurrency", raw.concurrency, 1..=4096),
            max_attempts: self.count("dispatch.max_attempts", raw.max_attempts, 1..=1000) as u32,
            initial_backoff,
            max_backoff,
            shutdown_grace: self.duration(
                "dispatch.shutdown_grace",
                &raw.shutdown_grace,
                Duration::ZERO,
            ),
        }
    }
}

fn valid_host_pattern(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    name_ok && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(Path::new("/etc/converge/converge.toml"), text, &no_env)
    }

    #[test]
    fn an_empty_file_gets_working_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8420");
        assert_eq!(c.storage.data_dir, Path::new("/etc/converge/data"));
        assert_eq!(c.storage.durability, Durability::Full);
        assert!(c.routes.is_empty());
        assert_eq!(c.clock, ClockConfig::System);
        assert_eq!(c.rules.max_emit_depth, 8);
    }

    #[test]
    fn the_clock_is_system_or_manual_with_an_optional_start() {
        let c = parse("[clock]\nmode = \"manual\"\nstart = \"2026-11-23T10:00:00Z\"\n").unwrap();
        assert_eq!(
            c.clock,
            ClockConfig::Manual {
                start: Some("2026-11-23T10:00:00Z".parse().unwrap())
            }
        );
        let errors = parse("[clock]\nmode = \"sundial\"\nstart = \"tomorrow\"\n").unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("clock.start: `tomorrow`"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("clock.mode: `sundial`"),
            "{}",
            errors[1]
        );
        let errors = parse("[clock]\nstart = \"2026-11-23T10:00:00Z\"\n").unwrap_err();
        assert_eq!(
            errors,
            vec!["clock.start: only a manual clock has a start time"]
        );
    }

    #[test]
    fn telemetry_is_off_until_a_collector_is_named() {
        assert_eq!(parse("").unwrap().telemetry, TelemetrySettings::default());
        let c =
            parse("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nsample_ratio = 0.25\n")
                .unwrap();
        assert_eq!(
            c.telemetry.traces_url.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(c.telemetry.sample_ratio, 0.25);
        let errors = parse(
            "[telemetry]\notlp_endpoint = \"collector:4317\"\nservice_name = \"\"\nsample_ratio = 2.0\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("telemetry.otlp_endpoint: `collector:4317`"),
            "{}",
            errors[0]
        );
        assert_eq!(errors[1], "telemetry.service_name: must not be empty");
        assert!(
            errors[2].starts_with("telemetry.sample_ratio: must be from 0 to 1"),
            "{}",
            errors[2]
        );
    }

    #[test]
    fn a_hooks_secret_fields_are_json_pointers() {
        let c =
            parse("[hooks.forms]\nsecret_fields = [\"/contact/email\", \"/contacts/*/phone\"]\n")
                .unwrap();
        assert_eq!(
            c.hooks["forms"].secret_fields,
            vec![
                crate::redact::FieldPath::parse("/contact/email").unwrap(),
                crate::redact::FieldPath::parse("/contacts/*/phone").unwrap(),
            ]
        );
        let errors = parse("[hooks.forms]\nsecret_fields = [\"contact.email\"]\n").unwrap_err();
        assert_eq!(
            errors,
            vec![
                "hooks.forms.secret_fields: `contact.email` is not a JSON pointer into the event's data: it starts with `/`, as in `/contact/email`"
            ]
        );
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/converge.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // Its rule and plugin files may not be built; only the keys and values matter here.
        let errors = Config::parse(&path, &text, &no_env)
            .err()
            .unwrap_or_default();
        let unexpected: Vec<_> = errors
            .iter()
            .filter(|e| !e.contains(".component:") && !e.starts_with("rules.files"))
            .collect();
        assert!(unexpected.is_empty(), "{unexpected:#?}");
    }

    #[test]
    fn postgres_is_one_url_and_its_password_comes_from_the_environment() {
        let text =
            "[storage]\nurl = \"postgres://converge@db.internal/converge\"\nlease_ttl = \"5s\"\n";
        let env = |name: &str| (name == "CONVERGE_DATABASE_PASSWORD").then(|| "s3cret".to_string());
        let c = Config::parse(Path::new("/etc/converge/converge.toml"), text, &env).unwrap();
        assert_eq!(
            c.storage.location,
            Location::Postgres {
                url: "postgres://converge@db.internal/converge".into(),
                password: Some("s3cret".into()),
            }
        );
        assert!(c.storage.location.is_shared());
        assert_eq!(c.storage.lease_ttl, Duration::from_secs(5));
        assert!(
            !format!("{:?}", c.storage).contains("s3cret"),
            "the password is not printed"
        );
        // Without the variable: a warning, not an error (trust or peer authentication).
        let c = parse(text).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w
                    .starts_with("storage.password_env: CONVERGE_DATABASE_PASSWORD is not set")),
            "{:?}",
            c.warnings
        );

        let errors =
            parse("[storage]\nurl = \"postgres://converge:hunter2@db/converge\"\n").unwrap_err();
        assert!(
            errors[0].starts_with("storage.url: must not contain a password"),
            "{errors:?}"
        );
        assert!(
            !errors[0].contains("hunter2"),
            "the password is not repeated"
        );
        let errors = parse("[storage]\nurl = \"mysql://db/converge\"\n").unwrap_err();
        assert!(errors[0].starts_with("storage.url: "), "{errors:?}");
        // Without a URL: the SQLite file in the data directory.
        let c = parse("").unwrap();
        assert_eq!(
            c.storage.location,
            Location::Sqlite {
                path: PathBuf::from("/etc/converge/data/converge.db"),
                durability: Durability::Full,
            }
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let errors = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("server.lisen: "), "{}", errors[0]);
        assert!(errors[0].contains("unknown field `lisen`"), "{}", errors[0]);
        let errors = parse("[storage]\nmax_batch = \"lots\"\n").unwrap_err();
        assert!(
            errors[0].starts_with("storage.max_batch: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key_path() {
        let errors = parse(
            r#"
            [server]
            listen = "localhost"
            [storage]
            durability = "sometimes"
            [dispatch]
            initial_backoff = "soon"
            [[routes]]
            decision = "explode"
            plugin = "nowhere"
            "#,
        )
        .unwrap_err();
        let expected = [
            "server.listen: `localhost` is not an address",
            "storage.durability: `sometimes` is not one of \"full\", \"normal\"",
            "routes[0].decision: `explode` is not a decision kind",
            "routes[0].plugin: no plugin `nowhere` is configured",
            "dispatch.initial_backoff: `soon` is not a duration",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (e, prefix) in errors.iter().zip(expected) {
            assert!(e.starts_with(prefix), "{e:?} should start with {prefix:?}");
        }
    }

    #[test]
    fn every_rule_limit_is_applied_max_decisions_per_rule_included() {
        let config = parse(
            "[rules.limits]\nmax_operations = 5000\nmax_call_levels = 9\nmax_decisions_per_rule = 3\n",
        )
        .unwrap();
        let limits = &config.rules.limits;
        assert_eq!(
            (
                limits.max_operations,
                limits.max_call_levels,
                limits.max_decisions_per_rule
            ),
            (5000, 9, 3)
        );
    }

    #[test]
    fn routes_filter_by_rule_to_and_channel_and_a_filter_that_cannot_match_is_an_error() {
        let plugin = "[plugins.jira]\ncomponent = \"jira.wasm\"\n";
        let config = parse(&format!(
            r#"{plugin}
            [[routes]]
            decision = "escalate"
            plugin = "jira"
            name = "legal-to-jira"
            to = "legal"
            rule = "regulated_claims"
            [[routes]]
            decision = "release_send"
            plugin = "jira"
            channel = "email"
            "#
        ));
        // The component file does not exist here; only route errors matter.
        let errors = config.err().unwrap_or_default();
        assert!(
            errors.iter().all(|e| !e.starts_with("routes")),
            "{errors:#?}"
        );
        let errors = parse(&format!(
            r#"{plugin}
            [[routes]]
            decision = "escalate"
            plugin = "jira"
            channel = "email"
            "#
        ))
        .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("routes[0]: `channel` filters only")),
            "{errors:#?}"
        );
    }

    #[test]
    fn paths_out_of_the_config_directory_are_written_without_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/say.rhai"), "").unwrap();
        let config = Config::parse(
            &dir.path().join("config/converge.toml"),
            "[storage]\ndata_dir = \"../data\"\n[rules]\nfiles = [\"../rules/say.rhai\"]\nshadow = [\"../config/../rules/say.rhai\"]\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(config.rules.files, [dir.path().join("rules/say.rhai")]);
        assert_eq!(config.rules.shadow, config.rules.files);
        // Not made yet: what exists (config/..) decides.
        assert_eq!(config.storage.data_dir, dir.path().join("data"));
    }

    #[test]
    fn two_drops_naming_one_folder_two_ways_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config/inbox")).unwrap();
        let errors = Config::parse(
            &dir.path().join("config/converge.toml"),
            "[[file_drops]]\nname = \"briefs\"\ndir = \"inbox\"\ntype = \"brief.submitted\"\n\
             [[file_drops]]\nname = \"assets\"\ndir = \"../config/inbox\"\ntype = \"asset.listed\"\n",
            &no_env,
        )
        .unwrap_err();
        let inbox = dir.path().join("config/inbox");
        assert_eq!(
            errors,
            [format!(
                "file_drops[1].dir: `{}` is already watched by file_drops[0]",
                inbox.display()
            )]
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_path_through_a_symlinked_directory_keeps_its_dot_dot() {
        // config -> elsewhere/inner: config/.. is elsewhere, not the top.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere/inner")).unwrap();
        std::fs::create_dir(dir.path().join("elsewhere/rules")).unwrap();
        std::fs::write(dir.path().join("elsewhere/rules/say.rhai"), "").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("elsewhere/inner"),
            dir.path().join("config"),
        )
        .unwrap();
        let config = Config::parse(
            &dir.path().join("config/converge.toml"),
            "[rules]\nfiles = [\"../rules/say.rhai\"]\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(
            config.rules.files,
            [dir.path().join("config/../rules/say.rhai")]
        );
    }

    #[test]
    fn a_routes_actions_carry_the_entity_unless_it_says_not_to() {
        // Only that the component is a file is checked here.
        let component = tempfile::NamedTempFile::new().unwrap();
        let plugin = format!(
            "[plugins.webhook-out]\ncomponent = {:?}\n",
            component.path().display().to_string()
        );
        let config = parse(&format!(
            r#"{plugin}
            [[routes]]
            decision = "notify"
            plugin = "webhook-out"
            name = "whole"
            [[routes]]
            decision = "notify"
            plugin = "webhook-out"
            name = "small"
            carry_entity = false
            "#
        ))
        .unwrap();
        let carried: Vec<(&str, bool)> = config
            .routes
            .iter()
            .map(|r| (r.name.as_str(), r.carry_entity))
            .collect();
        assert_eq!(carried, [("whole", true), ("small", false)]);
        let errors = parse(&format!(
            "{plugin}[[routes]]\ndecision = \"notify\"\nplugin = \"webhook-out\"\ncarry_entity = \"no\"\n"
        ))
        .unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("carry_entity")),
            "{errors:#?}"
        );
    }

    #[test]
    fn secrets_come_from_the_environment_and_a_missing_one_is_a_warning() {
        let text = r#"
            [plugins.slack]
            component = "/dev/null"
            http_hosts = ["slack.com"]
            [plugins.slack.credentials.bot_token]
            env = "TEST_SLACK_TOKEN"
        "#;
        let with = Config::parse(Path::new("c.toml"), text, &|name| {
            (name == "TEST_SLACK_TOKEN").then(|| "xoxb-1".to_string())
        });
        // /dev/null is not a regular file: that error is expected; the secret is not.
        let errors = with.unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("plugins.slack.component"));

        let text = text.replace(
            "/dev/null",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        );
        let config = Config::parse(Path::new("Cargo.toml"), &text, &|name| {
            (name == "TEST_SLACK_TOKEN").then(|| "xoxb-1".to_string())
        })
        .unwrap();
        let cred = &config.plugins["slack"].grants.credentials["bot_token"];
        assert_eq!(
            (cred.header.as_str(), cred.value.as_str()),
            ("authorization", "Bearer xoxb-1")
        );
        assert!(config.warnings.is_empty());

        let without = Config::parse(Path::new("Cargo.toml"), &text, &no_env).unwrap();
        assert!(without.plugins["slack"].grants.credentials.is_empty());
        assert_eq!(without.warnings.len(), 1);
        assert!(without.warnings[0].contains("TEST_SLACK_TOKEN is not set"));
    }

    #[test]
    fn rule_event_types_must_be_event_types() {
        let c = parse("[rules]\nevent_types = [\"task.updated\"]\n").unwrap();
        assert_eq!(c.rules.event_types, ["task.updated"]);
        let errors = parse("[rules]\nevent_types = [\"a\", \"\", \"task updated\"]\n").unwrap_err();
        assert_eq!(
            errors,
            [
                "rules.event_types[1]: must be an event type, not empty and without spaces, got \"\"",
                "rules.event_types[2]: must be an event type, not empty and without spaces, got \"task updated\"",
            ]
        );
    }

    #[test]
    fn shadow_rules_must_be_among_the_rule_files() {
        let c = parse("[rules]\nwatch = false\n").unwrap();
        assert!(!c.rules.watch && c.rules.shadow.is_empty());
        let errors = parse("[rules]\nshadow = [\"rules/new.rhai\"]\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("rules.shadow[0]: `rules/new.rhai` is not one of rules.files"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn host_patterns() {
        for ok in ["slack.com", "127.0.0.1:9000", "*.example.com", "localhost"] {
            assert!(valid_host_pattern(ok), "{ok}");
        }
        for bad in ["", "https://slack.com", "a..b", "host:port", "*."] {
            assert!(!valid_host_pattern(bad), "{bad}");
        }
    }
}
