//! The log: what the daemon and the commands write to stderr.
//!
//! One line per thing an operator may act on (start, stop, reloads, failures,
//! dead letters); per-event lines (decisions, actions done, timers fired,
//! held sends) are at DEBUG, so a busy daemon's log stays small at the
//! default INFO. Text for people, with colours only on a terminal; JSON
//! (one object per line) for log shippers.

use std::io::IsTerminal;

use converge_plugin_host::TRACE_ONLY_SPANS;
use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
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

/// The log: `format`, written by `writer`, filtered by `filter`.
///
/// Spans (`intake`, `process`, `action`) are the log's only when `filter`
/// lets some `debug` line through: the per-event lines are at `debug`, and
/// each takes its event and action from the spans it is in. At `info` and
/// above every line names what it is about itself, and the log makes no
/// spans: the log's layer filters them out where they are called, so with
/// traces off no layer wants them and none is made. Made for the log, the
/// spans cost the daemon 4.4% of its instructions per event on the gate
/// race's workload (`benches/gate-race/count.sh`), whether or not a line
/// was written in them. The plugin host's trace-only spans
/// ([`converge_plugin_host::TRACE_ONLY_SPANS`]) are never the log's.
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
    let debug = filter
        .max_level_hint()
        .is_none_or(|max| max >= LevelFilter::DEBUG);
    let for_the_log = filter_fn(move |meta| {
        !meta.is_span() || (debug && !TRACE_ONLY_SPANS.contains(&meta.name()))
    });
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

    /// What the log writes at `level` for a warning in an action's span,
    /// inside the plugin host's trace-only spans, and whether each span was
    /// made (action, plugin call, request).
    fn log_in_spans(level: &str, format: LogFormat) -> (String, [bool; 3]) {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(log_layer(
            EnvFilter::new(level),
            format,
            move || writer.clone(),
            false,
        ));
        let made = tracing::subscriber::with_default(subscriber, || {
            let action = tracing::info_span!("action", action_id = 7, route = "notify-r");
            let _action = action.enter();
            let call = tracing::info_span!(TRACE_ONLY_SPANS[0], plugin = "webhook-out");
            let _call = call.enter();
            let request = tracing::info_span!(TRACE_ONLY_SPANS[1], server.address = "x");
            let _request = request.enter();
            tracing::warn!(action_id = 7, "action failed");
            [&action, &call, &request].map(|span| !span.is_disabled())
        });
        (out.text(), made)
    }

    /// One test, the levels in turn: which spans are made is settled per
    /// call site, and call sites are shared by every thread's subscriber.
    #[test]
    fn the_log_makes_spans_only_when_it_shows_debug_lines_and_never_the_trace_only_ones() {
        for format in [LogFormat::Text, LogFormat::Json] {
            // At info, a line names what it is about itself.
            let (text, made) = log_in_spans("info", format);
            assert_eq!(made, [false; 3], "info {format:?}");
            assert!(text.contains("action failed"), "{format:?}: {text}");
            assert!(text.contains("action_id"), "the line's own field: {text}");
            assert!(!text.contains("notify-r"), "no span in the line: {text}");

            for level in ["debug", "warn,converge=debug"] {
                let (text, made) = log_in_spans(level, format);
                assert_eq!(made, [true, false, false], "{level} {format:?}");
                assert!(text.contains("action failed"), "{format:?}: {text}");
                assert!(text.contains("notify-r"), "the action's span: {text}");
                for name in TRACE_ONLY_SPANS {
                    assert!(!text.contains(name), "{format:?}: {name} in {text}");
                }
            }
        }
    }
}
