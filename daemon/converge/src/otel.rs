//! Traces over OTLP: `[telemetry]`, the exporter, and the W3C trace context
//! that ties everything done for one event into one trace.
//!
//! With `telemetry.otlp_endpoint` set, the daemon's spans (`intake`,
//! `process`, `action`, `plugin.call`, `http.request`) are exported to an
//! OpenTelemetry collector over OTLP/HTTP. The context crosses the journal in
//! the event's `traceparent` (the CloudEvents distributed-tracing extension):
//! the sender's when it sent one, otherwise the intake span's, recorded at
//! intake. Processing and each action continue from it, so they belong to the
//! same trace after a restart too, and the plugin host sends `traceparent` on
//! with every request a plugin makes.
//!
//! Off (the default), no layer is installed and no event gets a
//! `traceparent` it did not come with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::{Layer, Registry};

/// `[telemetry]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Where spans are POSTed (`<otlp_endpoint>/v1/traces`); `None`: traces
    /// are off.
    pub traces_url: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// The share of new traces kept; a sender's sampling decision wins for
    /// the traces it started.
    pub sample_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> TelemetrySettings {
        TelemetrySettings {
            traces_url: None,
            service_name: "converge".into(),
            sample_ratio: 1.0,
        }
    }
}

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The traces URL for a collector's base URL (what `OTEL_EXPORTER_OTLP_ENDPOINT`
/// holds: `http://collector:4318`), or why it is not one.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| format!("`{endpoint}` is not a URL like \"http://127.0.0.1:4318\": {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{endpoint}` is not an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "`{endpoint}` has a query, fragment or user: give the collector's base URL, and its credentials in OTEL_EXPORTER_OTLP_HEADERS"
        ));
    }
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        return Err(format!(
            "`{endpoint}` names the traces path: give the collector's base URL; converge adds /v1/traces"
        ));
    }
    Ok(format!("{base}/v1/traces"))
}

/// Set once the exporting layer is installed: work done only for traces
/// (reading an action's event for its context) is skipped without it.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The layer that exports spans, beside the log's.
pub type TraceLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Traces being exported; flushed and stopped when dropped.
pub struct Exporting {
    provider: SdkTracerProvider,
}

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: the last spans were not exported: {e}");
        }
    }
}

/// The layer that turns the daemon's spans into exported ones, when
/// `settings` asks for traces. Call outside the async runtime: the exporter
/// sends from a thread of its own with a blocking client.
pub fn layer(settings: &TelemetrySettings) -> anyhow::Result<Option<(TraceLayer, Exporting)>> {
    let Some(url) = &settings.traces_url else {
        return Ok(None);
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .context("cannot build the OTLP client")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(Blocking(client))
        .build()
        .context("cannot build the OTLP exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING.store(true, Ordering::Relaxed);
    let tracer = provider.tracer("converge");
    // The daemon's own spans only: a dependency's would start traces of
    // their own, and DEBUG per-event lines stay out of the spans.
    let spans = Targets::new()
        .with_target("converge", tracing::Level::INFO)
        .with_target("converge_plugin_host", tracing::Level::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(spans)
        .boxed();
    Ok(Some((layer, Exporting { provider })))
}

/// Makes `span` continue the trace `traceparent` names. Call before the span
/// is entered. An invalid `traceparent` is ignored, as W3C Trace Context
/// asks: the span starts a trace of its own.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only without the layer (traces off), where there is nothing to link.
        let _ = span.set_parent(cx);
    }
}

/// `span`'s W3C `traceparent`, when traces are exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The exporter's HTTP client: the daemon's reqwest, blocking, because the
/// batch processor exports from its own thread, outside the async runtime.
#[derive(Debug)]
struct Blocking(reqwest::blocking::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Blocking {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()?;
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = response.headers().clone();
        }
        Ok(answer.body(response.bytes()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_is_the_collectors_base_url_and_its_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("https://otel.example.com/otlp/").as_deref(),
            Ok("https://otel.example.com/otlp/v1/traces")
        );
        for bad in [
            "127.0.0.1:4318",
            "grpc://collector:4317",
            "http://collector:4318/v1/traces",
            "http://user:pw@collector:4318",
            "http://collector:4318?key=1",
        ] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_the_layer_a_span_has_no_traceparent_and_takes_none() {
        let span = tracing::info_span!("intake");
        continue_trace(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(traceparent(&span), None);
    }
}
