//! The log: what the daemon and the commands write to stderr.
//!
//! One line per thing an operator may act on (start, stop, reloads, failures,
//! dead letters); per-event lines (decisions, actions done, timers fired,
//! held sends) are at DEBUG, so a busy daemon's log stays small at the
//! default INFO. Text for people, with colours only on a terminal; JSON
//! (one object per line) for log shippers.

use std::io::IsTerminal;

use converge_plugin_host::TRACE_ONLY_SPANS;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
    // The log's level filters the log only: spans go to the exporter at
    // INFO whatever the log shows.
    let mut layers = vec![log_layer(
        filter,
        settings.format,
        std::io::stderr,
        std::io::stderr().is_terminal(),
    )];
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

/// The log: `format`, written by `writer`, filtered by `filter`, and
/// without the spans made for exported traces only
/// ([`converge_plugin_host::TRACE_ONLY_SPANS`]). Those are left out where they
/// are called, so with traces off they are never made: on the gate race's
/// workload that took the spans' cost from 35,000 to 19,000 instructions
/// per event (of about 570,000 the daemon ran per event).
fn log_layer<S, W>(
    filter: EnvFilter,
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let log = tracing_subscriber::fmt::layer().with_writer(writer);
    let log = match format {
        LogFormat::Text => log.with_ansi(ansi).boxed(),
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let for_the_log =
        filter_fn(|meta| !(meta.is_span() && TRACE_ONLY_SPANS.contains(&meta.name())));
    log.with_filter(filter.and(for_the_log)).boxed()
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

    /// What the log layer wrote, line by line.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn the_plugin_hosts_trace_spans_are_not_made_for_the_log_and_a_warning_keeps_its_action() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let out = Captured::default();
            let writer = out.clone();
            let subscriber = tracing_subscriber::registry().with(log_layer(
                EnvFilter::new("info"),
                format,
                move || writer.clone(),
                false,
            ));
            tracing::subscriber::with_default(subscriber, || {
                let action = tracing::info_span!("action", action_id = 7, route = "notify-r");
                let _action = action.enter();
                assert!(!action.is_disabled());
                let call = tracing::info_span!(TRACE_ONLY_SPANS[0], plugin = "webhook-out");
                let request = tracing::info_span!(TRACE_ONLY_SPANS[1], server.address = "x");
                assert!(call.is_disabled(), "{format:?}");
                assert!(request.is_disabled(), "{format:?}");
                let _call = call.enter();
                let _request = request.enter();
                tracing::warn!(plugin = "webhook-out", action_id = 7, "action failed");
            });
            let text = out.text();
            assert!(text.contains("action failed"), "{format:?}: {text}");
            assert!(text.contains("notify-r"), "the action's span: {text}");
            for name in TRACE_ONLY_SPANS {
                assert!(!text.contains(name), "{format:?}: {name} in {text}");
            }
        }
    }
}
