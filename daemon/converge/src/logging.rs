//! The log: what the daemon and the commands write to stderr.
//!
//! One line per thing an operator may act on (start, stop, reloads, failures,
//! dead letters); per-event lines (decisions, actions done, timers fired,
//! held sends) are at DEBUG, so a busy daemon's log stays small at the
//! default INFO. Text for people, with colours only on a terminal; JSON
//! (one object per line) for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::otel::{Exporting, TelemetrySettings};

/// `[log]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// An `EnvFilter` directive: `info`, `debug`, `info,converge=debug`.
    /// `RUST_LOG`, when set, wins.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Whether `level` is a list of `LEVEL` or `target=LEVEL` directives, the
/// error says why not. (`EnvFilter` alone would take a bare word as a
/// target, and a typo would silence the log.)
pub fn check_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for directive in level.split(',').map(str::trim) {
        let named = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&named.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` names no level (one of {})",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Starts the log, and the export of traces when `telemetry` asks for it.
/// Once per process, outside the async runtime; keep what it returns until
/// the process ends: dropping it flushes the last spans.
pub fn init(settings: &LogSettings, telemetry: &TelemetrySettings) -> Option<Exporting> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::builder().parse(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match settings.format {
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // The log's level filters the log only: spans go to the exporter at
    // INFO whatever the log shows.
    let mut layers = vec![log.with_filter(filter).boxed()];
    let exporting = match crate::otel::layer(telemetry) {
        Ok(Some((traces, exporting))) => {
            layers.push(traces);
            Some(exporting)
        }
        Ok(None) => None,
        Err(e) => {
            eprintln!("warning: traces are not exported: {e:#}");
            None
        }
    };
    tracing_subscriber::registry().with(layers).init();
    if let (Some(_), Some(url)) = (&exporting, &telemetry.traces_url) {
        tracing::info!(url, "traces are exported over OTLP");
    }
    exporting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_is_levels_per_target_and_a_bare_word_is_refused() {
        for good in [
            "info",
            "debug",
            "info,converge=debug",
            "warn,converge::web=TRACE",
        ] {
            assert_eq!(check_level(good), Ok(()), "{good}");
        }
        for bad in ["loud", "info,converge", "", "info,=debug,"] {
            assert!(check_level(bad).is_err(), "{bad}");
        }
    }
}
