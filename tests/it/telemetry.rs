//! Traces over OTLP: a webhook's intake, the rules and each action with its
//! plugin call and the request the plugin sends are one trace, with the
//! parent links a collector shows; a sender's trace is continued.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::support::{Sink, event, notify_all_to_sink, notify_all_to_sink_with};

/// What a sender that traces puts in its event or header.
const SENDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";

/// A local OTLP/HTTP receiver: what a collector's `otlp` receiver takes on
/// `/v1/traces` (protobuf), decoded.
#[derive(Clone, Default)]
struct Collector {
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

/// One exported span, with ids in hex as a collector shows them.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: BTreeMap<String, String>,
    service: String,
}

impl Collector {
    /// Starts it and answers its base URL, what `telemetry.otlp_endpoint` takes.
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let bodies = collector.bodies.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let bodies = bodies.clone();
                async move {
                    bodies.lock().unwrap().push(body);
                    // An empty ExportTraceServiceResponse.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (collector, url)
    }

    fn spans(&self) -> Vec<Span> {
        let mut spans = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            let request = ExportTraceServiceRequest::decode(body.as_ref())
                .expect("an OTLP/protobuf ExportTraceServiceRequest");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
                    .unwrap_or_default();
                for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                    spans.push(Span {
                        name: span.name,
                        trace: hex::encode(span.trace_id),
                        id: hex::encode(span.span_id),
                        parent: hex::encode(span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|a| {
                                let value = a.value.as_ref().and_then(|v| v.value.as_ref());
                                (a.key.clone(), text(value))
                            })
                            .collect(),
                        service: service.clone(),
                    });
                }
            }
        }
        spans
    }

    /// Waits until `done` holds for the spans received so far.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the collector never got {what}; it has:\n{spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// The span named `name` whose attribute `key` is `value`.
fn find<'a>(spans: &'a [Span], name: &str, key: &str, value: &str) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.name == name && s.attributes.get(key).is_some_and(|v| v == value))
}

/// The spans one notified event makes: intake, process, action, and the
/// plugin call and HTTP request under the action.
struct EventSpans {
    intake: Span,
    process: Span,
    action: Span,
    call: Span,
    request: Span,
}

fn event_spans(spans: &[Span], event_id: &str) -> Option<EventSpans> {
    let action = find(spans, "action", "event_id", event_id)?;
    let call = spans
        .iter()
        .find(|s| s.name == "plugin.call" && s.parent == action.id)?;
    let request = spans
        .iter()
        .find(|s| s.name == "http.request" && s.parent == call.id)?;
    Some(EventSpans {
        intake: find(spans, "intake", "event_id", event_id)?.clone(),
        process: find(spans, "process", "event_id", event_id)?.clone(),
        action: action.clone(),
        call: call.clone(),
        request: request.clone(),
    })
}

/// The `traceparent` header of the sink's request for `event_id`.
fn sent_traceparent(sink: &Sink, event_id: &str) -> Option<String> {
    sink.received()
        .iter()
        .find(|r| r.body["event"]["id"] == event_id)
        .expect("the sink got the event's notification")
        .headers
        .get("traceparent")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_runs_from_intake_through_the_rules_and_the_plugin_call_to_the_request_it_sends()
{
    let (collector, endpoint) = Collector::start().await;
    let sink = Sink::start().await;
    let ws = notify_all_to_sink_with(
        &sink,
        &format!("[telemetry]\notlp_endpoint = {endpoint:?}\nservice_name = \"converge-test\""),
    );
    // Export every 100 ms rather than every 5 s.
    let daemon = ws.start_with_env(&[("OTEL_BSP_SCHEDULE_DELAY", "100")]);

    // An event from a sender that does not trace: the trace begins at intake.
    let (status, _) = daemon
        .send_event(&event("plain-1", "task.updated", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202);
    // One that carries its producer's context (CloudEvents distributed tracing).
    let mut traced = event("traced-1", "task.updated", "task/T-2", json!({}));
    traced["traceparent"] = json!(format!("00-{SENDER_TRACE}-{SENDER_SPAN}-01"));
    assert_eq!(daemon.send_event(&traced).await.0, 202);
    // A plain W3C `traceparent` header, as any traced HTTP client sends.
    let header_trace = "0af7651916cd43dd8448eb211c80319c";
    let header_span = "b7ad6b7169203331";
    let (status, _, _) = daemon
        .request(
            reqwest::Method::POST,
            "/hooks/test",
            &[
                ("content-type", "application/cloudevents+json"),
                (
                    "traceparent",
                    &format!("00-{header_trace}-{header_span}-01"),
                ),
            ],
            event("header-1", "task.updated", "task/T-3", json!({})).to_string(),
        )
        .await;
    assert_eq!(status, 202);
    sink.wait_for(3).await;

    let spans = collector
        .wait_for("every event's spans", |spans| {
            ["plain-1", "traced-1", "header-1"]
                .iter()
                .all(|id| event_spans(spans, id).is_some())
        })
        .await;
    assert!(spans.iter().all(|s| s.service == "converge-test"));

    // Untraced sender: intake is the root; processing and the action
    // continue from it through the journal.
    let plain = event_spans(&spans, "plain-1").unwrap();
    assert_eq!(
        plain.intake.parent, "",
        "intake is the root: {:?}",
        plain.intake
    );
    assert_eq!(plain.intake.attributes["hook"], "test");
    for child in [&plain.process, &plain.action] {
        assert_eq!(child.trace, plain.intake.trace, "{child:?}");
        assert_eq!(child.parent, plain.intake.id, "{child:?}");
    }
    for descendant in [&plain.call, &plain.request] {
        assert_eq!(descendant.trace, plain.intake.trace, "{descendant:?}");
    }
    assert_eq!(plain.call.attributes["plugin"], "webhook-out");
    assert_eq!(plain.request.attributes["http.request.method"], "POST");
    assert_eq!(plain.request.attributes["http.response.status_code"], "200");
    // The receiver gets the context of the request span, to go on with it.
    assert_eq!(
        sent_traceparent(&sink, "plain-1").as_deref(),
        Some(format!("00-{}-{}-01", plain.intake.trace, plain.request.id).as_str())
    );

    // A traced sender: its trace goes on; its span is the parent of intake,
    // processing and the action.
    let traced = event_spans(&spans, "traced-1").unwrap();
    for span in [&traced.intake, &traced.process, &traced.action] {
        assert_eq!(span.trace, SENDER_TRACE, "{span:?}");
        assert_eq!(span.parent, SENDER_SPAN, "{span:?}");
    }
    assert_eq!(traced.request.trace, SENDER_TRACE);
    assert_eq!(
        sent_traceparent(&sink, "traced-1").as_deref(),
        Some(format!("00-{SENDER_TRACE}-{}-01", traced.request.id).as_str())
    );

    // The header's context is the parent of intake, which the event then
    // carries into processing.
    let header = event_spans(&spans, "header-1").unwrap();
    assert_eq!(header.intake.trace, header_trace);
    assert_eq!(header.intake.parent, header_span);
    assert_eq!(header.process.parent, header.intake.id);
    assert_eq!(header.action.parent, header.intake.id);

    // Each event is its own trace.
    assert_ne!(plain.intake.trace, header.intake.trace);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_telemetry_nothing_is_added_to_events_or_requests() {
    let sink = Sink::start().await;
    let ws = notify_all_to_sink(&sink);
    let daemon = ws.start();
    let (status, _) = daemon
        .send_event(&event("plain-1", "task.updated", "task/T-1", json!({})))
        .await;
    assert_eq!(status, 202);
    let received = sink.wait_for(1).await;
    assert_eq!(sent_traceparent(&sink, "plain-1"), None);
    assert!(
        received[0].body["event"].get("traceparent").is_none(),
        "{}",
        received[0].body["event"]
    );
}
