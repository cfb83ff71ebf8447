//! OpenTelemetry traces: the spans a small OTLP/HTTP receiver (started
//! here) gets for a request that failed over, and for a stream — their
//! parent/child structure, the caller's `traceparent` as the root's parent,
//! the `traceparent` the upstream received, and the GenAI attributes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};

use crate::harness::{Gateway, assert_done, client, deployment, sse_events};
use crate::mock::Mock;

/// What the receiver got: each export's content type and body.
type Exports = Arc<Mutex<Vec<(String, Bytes)>>>;

/// An OTLP/HTTP receiver on loopback: `POST /v1/traces`, answered 200.
async fn receiver() -> (String, Exports) {
    let got = Exports::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(got): State<Exports>, headers: HeaderMap, body: Bytes| async move {
                    let kind = headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    got.lock().unwrap().push((kind, body));
                    ""
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Every span received so far (protobuf exports).
fn spans(got: &Exports) -> Vec<Span> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|(kind, body)| {
            assert_eq!(kind, "application/x-protobuf");
            let export = ExportTraceServiceRequest::decode(body.clone()).unwrap();
            export
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits for spans until `done` says they are all there.
async fn wait_for(got: &Exports, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let all = spans(got);
        if done(&all) {
            return all;
        }
        assert!(Instant::now() < until, "spans never all came: {all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn attrs(s: &Span) -> HashMap<String, Value> {
    s.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => json!(s),
                Some(Any::IntValue(i)) => json!(i),
                Some(Any::DoubleValue(d)) => json!(d),
                Some(Any::BoolValue(b)) => json!(b),
                Some(Any::ArrayValue(a)) => Value::Array(
                    a.values
                        .iter()
                        .map(|v| match &v.value {
                            Some(Any::StringValue(s)) => json!(s),
                            other => json!(format!("{other:?}")),
                        })
                        .collect(),
                ),
                other => json!(format!("{other:?}")),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn traced_gateway(mock: &Mock, collector: &str) -> Gateway {
    Gateway::start(
        json!({
            "flaky": {"strategy": "priority", "deployments": [
                deployment("primary", &mock.url, "fail-500"),
                deployment("backup", &mock.url, "gpt-backup")]},
            "ok": {"deployments": [deployment("good-dep", &mock.url, "good")]},
        }),
        &["openai", "priority"],
        json!({"telemetry": {"otlp": {"endpoint": collector, "batch_delay_ms": 50}}}),
    )
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_over_request_is_one_trace_under_the_callers_span() {
    let mock = Mock::start().await;
    let (collector, got) = receiver().await;
    let gw = traced_gateway(&mock, &collector);

    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .body(
            json!({"model": "flaky", "messages": [{"role": "user", "content": "hello"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-deployment"], "backup");

    let all = wait_for(&got, |all| {
        all.iter().any(|s| s.kind == SpanKind::Server as i32)
            && all
                .iter()
                .filter(|s| s.kind == SpanKind::Client as i32)
                .count()
                == 2
    })
    .await;
    // One trace: the caller's.
    assert!(
        all.iter().all(|s| hex(&s.trace_id) == CALLER_TRACE),
        "{all:#?}"
    );

    let root = all
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(hex(&root.parent_span_id), CALLER_SPAN);
    assert_eq!(root.name, "chat flaky");
    let a = attrs(root);
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.request.model"], "flaky");
    assert_eq!(a["switchyard.attempts"], 2);
    assert_eq!(a["switchyard.deployment"], "backup");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert!(
        a["gen_ai.usage.input_tokens"].as_i64().unwrap() > 0,
        "{a:?}"
    );
    assert!(
        a["gen_ai.usage.output_tokens"].as_i64().unwrap() > 0,
        "{a:?}"
    );
    assert!(a.contains_key("switchyard.request_id"));

    // Two attempts, children of the request, in the order sent.
    let mut attempts: Vec<&Span> = all
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    for s in &attempts {
        assert_eq!(s.parent_span_id, root.span_id, "{s:#?}");
        assert!(s.start_time_unix_nano >= root.start_time_unix_nano);
        assert!(s.end_time_unix_nano <= root.end_time_unix_nano);
    }
    let failed = attrs(attempts[0]);
    assert_eq!(failed["switchyard.deployment"], "primary");
    assert_eq!(failed["gen_ai.request.model"], "fail-500");
    assert_eq!(failed["gen_ai.provider.name"], "openai");
    assert_eq!(failed["http.response.status_code"], 500);
    assert_eq!(
        failed["error.type"], "overloaded",
        "the failure class of a 500"
    );
    assert_eq!(attempts[0].status.as_ref().unwrap().code, 2, "error status");
    assert_eq!(attempts[0].name, "chat fail-500");
    let served = attrs(attempts[1]);
    assert_eq!(served["switchyard.deployment"], "backup");
    assert_eq!(served["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert!(served["gen_ai.usage.output_tokens"].as_i64().unwrap() > 0);
    assert!(!served.contains_key("error.type"));

    // Plugin calls: the strategy's under the request, the adapter's under
    // their attempt.
    let plugins: Vec<&Span> = all
        .iter()
        .filter(|s| attrs(s).contains_key("switchyard.plugin"))
        .collect();
    let under = |parent: &Span, plugin: &str| {
        plugins
            .iter()
            .filter(|s| {
                s.parent_span_id == parent.span_id && attrs(s)["switchyard.plugin"] == plugin
            })
            .count()
    };
    assert!(under(root, "priority") >= 1, "{plugins:#?}");
    assert!(
        under(attempts[0], "openai") >= 2,
        "build and classify: {plugins:#?}"
    );
    assert!(
        under(attempts[1], "openai") >= 2,
        "build and parse: {plugins:#?}"
    );

    // The upstream got each attempt's span as its parent, in the caller's trace.
    let sent: Vec<String> = mock
        .requests()
        .iter()
        .filter(|r| r.uri.ends_with("/chat/completions"))
        .map(|r| {
            r.headers
                .iter()
                .find(|(n, _)| n == "traceparent")
                .expect("traceparent forwarded")
                .1
                .clone()
        })
        .collect();
    assert_eq!(
        sent,
        attempts
            .iter()
            .map(|s| format!("00-{CALLER_TRACE}-{}-01", hex(&s.span_id)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_traced_to_its_last_chunk() {
    let mock = Mock::start().await;
    let (collector, got) = receiver().await;
    let gw = traced_gateway(&mock, &collector);

    let r = gw.chat("ok", true).await;
    assert_eq!(r.status(), 200);
    let events = sse_events(r).await;
    assert_done(&events);

    let all = wait_for(&got, |all| {
        all.iter().any(|s| s.kind == SpanKind::Server as i32)
            && all.iter().any(|s| s.kind == SpanKind::Client as i32)
    })
    .await;
    let root = all
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert!(root.parent_span_id.is_empty(), "a new trace");
    // The stream's own plugin calls (its chunks parsed after it committed)
    // are in the same trace, under the request.
    assert!(
        all.iter().all(|s| s.trace_id == root.trace_id),
        "one trace: {all:#?}"
    );
    let steps = all
        .iter()
        .filter(|s| {
            let a = attrs(s);
            a.get("switchyard.plugin.call") == Some(&json!("StreamStep"))
                || a.get("switchyard.plugin.call") == Some(&json!("FeedParser"))
        })
        .count();
    assert!(steps >= 2, "the stream's steps are traced: {all:#?}");
    let a = attrs(root);
    assert_eq!(a["switchyard.stream"], true);
    assert_eq!(a["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert!(a["switchyard.ttft_ms"].as_f64().unwrap() > 0.0);
    let attempt = all
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(attempt.parent_span_id, root.span_id);
    let b = attrs(attempt);
    assert_eq!(b["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert!(
        b["gen_ai.usage.output_tokens"].as_i64().unwrap() > 0,
        "{b:?}"
    );
    // The attempt's span lasts as long as its stream.
    assert!(attempt.end_time_unix_nano > attempt.start_time_unix_nano);
    assert!(root.end_time_unix_nano >= attempt.end_time_unix_nano);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_export_and_a_collector_that_is_down_never_fail_a_request() {
    let mock = Mock::start().await;
    let (collector, got) = receiver().await;
    let gw = Gateway::start(
        json!({"ok": {"deployments": [deployment("good-dep", &mock.url, "good")]}}),
        &["openai"],
        json!({"telemetry": {"otlp": {"endpoint": collector, "protocol": "http/json",
            "batch_delay_ms": 50}}}),
    );
    assert_eq!(gw.chat("ok", false).await.status(), 200);
    let until = Instant::now() + Duration::from_secs(10);
    let body: Value = loop {
        if let Some((kind, body)) = got.lock().unwrap().first().cloned() {
            assert_eq!(kind, "application/json");
            break serde_json::from_slice(&body).unwrap();
        }
        assert!(Instant::now() < until, "no export came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let names: Vec<&str> = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"chat ok"), "{names:?}");

    // No collector at all: requests are served, a warning says why.
    let dead = format!("http://127.0.0.1:{}", crate::harness::refused_port());
    let gw = Gateway::start(
        json!({"ok": {"deployments": [deployment("good-dep", &mock.url, "good")]}}),
        &["openai"],
        json!({"telemetry": {"otlp": {"endpoint": dead, "batch_delay_ms": 20}}}),
    );
    for _ in 0..5 {
        assert_eq!(gw.chat("ok", false).await.status(), 200);
    }
    assert!(
        gw.wait_for_log("traces not exported", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_at_a_stop_are_exported_on_one_thread() {
    let mock = Mock::start().await;
    let (collector, got) = receiver().await;
    // Nothing is sent on a timer during the test: only the stop flushes.
    let mut gw = Gateway::start(
        json!({"ok": {"deployments": [deployment("good-dep", &mock.url, "good")]}}),
        &["openai"],
        json!({"server": {"threads": 1},
               "telemetry": {"otlp": {"endpoint": collector, "batch_delay_ms": 60000}}}),
    );
    assert_eq!(gw.chat("ok", false).await.status(), 200);
    assert!(spans(&got).is_empty());
    let started = Instant::now();
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.logs());
    // The export ran while the runtime was still driven: no waiting out the
    // exporter's 5 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let names: Vec<String> = spans(&got).into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "chat ok"), "{names:?}");
}
