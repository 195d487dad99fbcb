//! The log: what the daemon and the commands write to stderr.
//!
//! One line per thing an operator may act on (start, stop, reloads, failures,
//! dead letters); per-event lines (decisions, actions done, timers fired,
//! held sends) are at DEBUG, so a busy daemon's log stays small at the
//! default INFO. Text for people, with colours only on a terminal; JSON
//! (one object per line) for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

impl LogFormat {
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
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

/// Starts the log. Once per process.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::builder().parse(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
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
