//! OpenTelemetry traces: one span per request, a child per attempt and per
//! plugin call, exported over OTLP/HTTP by a background thread.
//!
//! Off unless the config has `telemetry.otlp`. Off, the spans below are
//! never built: their callsites (target [`TARGET`]) are disabled for the log
//! output, and no other layer exists, so each costs one cached check.
//!
//! Why `tracing` spans rather than OpenTelemetry calls in the pipeline: a
//! plugin call or an upstream send nested anywhere below a request finds its
//! parent as the current span, with no context threaded through. The
//! attributes that are only known at the end (usage, finish reason, cost,
//! status) are written from the request's record when it completes
//! ([`crate::pipeline::outcome`]), so the span agrees with the store.
//!
//! The exporter never touches the request path: finished spans go into the
//! batch processor's bounded queue (dropped when full), and its thread sends
//! them through a small client that runs on the gateway's runtime. A
//! collector that is down costs a warning a minute, never a request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use serde::Deserialize;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::pipeline::End;
use crate::pipeline::outcome::{AttemptRecord, Record};

/// The `tracing` target of every span meant for export (and only those).
pub const TARGET: &str = "switchyard::otel";

/// Whether spans are exported (set once, at start).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Traces are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `telemetry` in the config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Where traces go; none: no traces.
    pub otlp: Option<OtlpConfig>,
}

/// `telemetry.otlp`: the collector that receives the traces.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP address; `/v1/traces` is added unless the
    /// path already ends with it.
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Sent with every export (a token as `${VAR}`); never logged.
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of new traces kept; a caller's sampled flag is followed.
    #[serde(default = "one")]
    pub sample_ratio: f64,
    /// How long spans wait in the batch before they are sent.
    #[serde(default = "default_batch_delay_ms")]
    pub batch_delay_ms: u64,
    /// Spans waiting to be sent at most; more are dropped.
    #[serde(default = "default_queue")]
    pub max_queue: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be secrets: names only.
        let mut headers: Vec<&String> = self.headers.keys().collect();
        headers.sort();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.shown_url())
            .field("protocol", &self.protocol)
            .field("headers", &headers)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("batch_delay_ms", &self.batch_delay_ms)
            .field("max_queue", &self.max_queue)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

fn default_service_name() -> String {
    "switchyard".into()
}
fn one() -> f64 {
    1.0
}
fn default_batch_delay_ms() -> u64 {
    1000
}
fn default_queue() -> usize {
    4096
}
fn default_timeout_ms() -> u64 {
    10_000
}

impl OtlpConfig {
    /// The URL spans are posted to, for the log: without credentials.
    pub fn shown_url(&self) -> String {
        let url = self.traces_url();
        match url::Url::parse(&url) {
            Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            _ => url,
        }
    }

    /// The URL spans are posted to.
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }
}

/// Flushes and stops the exporter when dropped (at exit).
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

/// The layer that turns [`TARGET`] spans into OpenTelemetry spans.
pub type Layer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

/// Builds the exporter and its layer; sends through `runtime`.
pub fn start<S>(
    config: &OtlpConfig,
    runtime: tokio::runtime::Handle,
) -> Result<(Layer<S>, TelemetryGuard), String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let url = config.traces_url();
    url.parse::<http::Uri>()
        .map_err(|e| format!("telemetry.otlp.endpoint {:?}: {e}", config.endpoint))?;
    let protocol = match config.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
        OtlpProtocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
    };
    let timeout = Duration::from_millis(config.timeout_ms);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Client::new(runtime, timeout)?)
        .with_endpoint(url)
        .with_protocol(protocol)
        .with_timeout(timeout)
        .with_headers(config.headers.clone())
        .build()
        .map_err(|e| format!("telemetry.otlp: {e}"))?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(config.batch_delay_ms))
                .with_max_queue_size(config.max_queue)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("switchyard");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        // Started at their first child (or their end), not when first
        // entered: a request's span is named once its route is known.
        .with_context_activation(false);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((layer, TelemetryGuard { provider }))
}

/// The span of one request, a child of the caller's `traceparent` when it
/// sent one. Named and given its attributes when its record completes.
pub fn request_span(headers: &http::HeaderMap, request_id: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = "chat",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        "switchyard.request_id" = request_id,
        "gen_ai.operation.name" = "chat",
    );
    if headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let _ = span.set_parent(parent);
    }
    span
}

/// The span of one attempt on one deployment (a child of the current
/// span: its request's, or its stream's for a resumed leg).
pub fn attempt_span(deployment: &str, adapter: &str, model: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "attempt",
        otel.name = format!("chat {model}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        "gen_ai.operation.name" = "chat",
        "gen_ai.provider.name" = adapter,
        "gen_ai.request.model" = model,
        "switchyard.deployment" = deployment,
    )
}

/// Names a request's span for its route (`chat <route>`, as the GenAI
/// conventions have it).
pub fn name_request(span: &Span, route: &str) {
    set(span, |s| {
        s.record("otel.name", format!("chat {route}"));
        s.set_attribute("gen_ai.request.model", route.to_string());
    });
}

/// The span of one plugin call made for a request (calls outside one, such
/// as loading a plugin, are not traced).
pub fn plugin_span(plugin: &str, call: &'static str) -> Span {
    if !enabled() || Span::current().is_none() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "plugin",
        otel.name = format!("plugin {plugin} {call}"),
        otel.status_code = tracing::field::Empty,
        "switchyard.plugin" = plugin,
        "switchyard.plugin.call" = call,
    )
}

/// The W3C `traceparent` (and `tracestate`) of `span`, for the upstream.
pub fn inject(span: &Span, headers: &mut Vec<(String, String)>) {
    if !enabled() || span.is_none() {
        return;
    }
    let cx = span.context();
    let mut found = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut found);
    for (name, value) in found {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        headers.push((name, value));
    }
}

/// Sets attributes on `span` (nothing when it is not exported).
pub fn set(span: &Span, attributes: impl FnOnce(&Span)) {
    if enabled() && !span.is_none() {
        attributes(span);
    }
}

/// Marks `span` failed with `message`.
pub fn fail(span: &Span, message: impl Into<std::borrow::Cow<'static, str>>) {
    set(span, |s| {
        s.set_status(opentelemetry::trace::Status::error(message))
    });
}

/// Closes an attempt's span with what the attempt learnt.
pub fn end_attempt(a: &mut AttemptRecord) {
    let span = std::mem::replace(&mut a.span, Span::none());
    set(&span, |s| {
        if let Some(u) = &a.usage {
            s.set_attribute("gen_ai.usage.input_tokens", i64::from(u.prompt_tokens));
            s.set_attribute("gen_ai.usage.output_tokens", i64::from(u.completion_tokens));
            if a.estimated {
                s.set_attribute("switchyard.usage.estimated", true);
            }
        }
        if !a.finish_reasons.is_empty() {
            s.set_attribute(
                "gen_ai.response.finish_reasons",
                string_array(&a.finish_reasons),
            );
        }
        if let Some(status) = a.status {
            s.set_attribute("http.response.status_code", i64::from(status));
        }
        if let Some(cost) = a.cost {
            s.set_attribute("switchyard.cost_usd", cost);
        }
        if let Some(ttft) = a.ttft {
            s.set_attribute("switchyard.ttft_ms", ttft.as_secs_f64() * 1e3);
        }
        if a.cut {
            s.set_attribute("switchyard.cut", true);
        }
        if let Some((evaluator, v)) = &a.verdict {
            s.set_attribute("switchyard.evaluator", evaluator.to_string());
            s.set_attribute("switchyard.verdict.pass", v.pass);
            s.set_attribute("switchyard.verdict.score", f64::from(v.score));
        }
        if let Some(class) = a.class {
            s.set_attribute("error.type", class.name());
            s.set_status(opentelemetry::trace::Status::error(class.name()));
        }
    });
}

/// Closes a request's span (and any attempt's still open) with its outcome.
pub fn end_request(r: &mut Record, end: &End) {
    for a in &mut r.attempts {
        end_attempt(a);
    }
    let span = std::mem::replace(&mut r.span, Span::none());
    set(&span, |s| {
        s.set_attribute("switchyard.stream", r.stream);
        s.set_attribute("switchyard.attempts", r.attempts.len() as i64);
        s.set_attribute("switchyard.outcome", end.name());
        s.set_attribute("http.response.status_code", i64::from(end.status()));
        if let Some(caller) = &r.caller {
            s.set_attribute("switchyard.caller", caller.clone());
        }
        let billed = r.attempts.iter().filter_map(|a| a.usage);
        let (input, output) = billed.fold((0i64, 0i64), |(i, o), u| {
            (
                i + i64::from(u.prompt_tokens),
                o + i64::from(u.completion_tokens),
            )
        });
        if r.attempts.iter().any(|a| a.usage.is_some()) {
            s.set_attribute("gen_ai.usage.input_tokens", input);
            s.set_attribute("gen_ai.usage.output_tokens", output);
        }
        let cost: f64 = r.attempts.iter().filter_map(|a| a.cost).sum();
        s.set_attribute("switchyard.cost_usd", cost);
        if let Some(last) = r.attempts.last() {
            s.set_attribute("switchyard.deployment", last.deployment.clone());
            if !last.finish_reasons.is_empty() {
                s.set_attribute(
                    "gen_ai.response.finish_reasons",
                    string_array(&last.finish_reasons),
                );
            }
        }
        if let Some(ttft) = r.ttft {
            s.set_attribute("switchyard.ttft_ms", ttft.as_secs_f64() * 1e3);
        }
        if end.status() >= 400 || !matches!(end, End::Answered) {
            s.set_status(opentelemetry::trace::Status::error(end.name()));
        }
    });
}

fn string_array(items: &[String]) -> opentelemetry::Value {
    opentelemetry::Value::Array(opentelemetry::Array::String(
        items.iter().map(|i| i.clone().into()).collect(),
    ))
}

/// Adds the finish reasons named in an answer or a stream chunk
/// (`"finish_reason":"stop"`) to `into`, once each.
pub fn finish_reasons(json: &str, into: &mut Vec<String>) {
    const KEY: &str = "\"finish_reason\"";
    let mut rest = json;
    while let Some(at) = rest.find(KEY) {
        rest = rest[at + KEY.len()..].trim_start();
        let Some(value) = rest.strip_prefix(':').map(str::trim_start) else {
            continue;
        };
        rest = value;
        let Some(value) = value.strip_prefix('"') else {
            continue;
        };
        let Some(end) = value.find('"') else {
            return;
        };
        let reason = &value[..end];
        if !reason.is_empty() && reason.len() <= 64 && !into.iter().any(|r| r == reason) {
            into.push(reason.to_string());
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Posts exports on the gateway's runtime (the batch processor's thread
/// has none) with the host's TLS settings; warns about failures at most
/// once a minute.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
    warned: crate::logging::Every,
}

impl Client {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("telemetry.otlp: cannot build its HTTP client: {e}"))?;
        Ok(Self {
            http,
            runtime,
            warned: crate::logging::Every::new(Duration::from_secs(60)),
        })
    }

    fn warn(&self, what: &str) {
        if self.warned.due() {
            tracing::warn!(
                "traces not exported (telemetry.otlp): {what}; spans are dropped meanwhile"
            );
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let http = self.http.clone();
        let sent = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = http.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            let mut out = http::Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, reqwest::Error>(out)
        });
        match sent.await {
            Ok(Ok(response)) => {
                if !response.status().is_success() {
                    self.warn(&format!("the collector answered {}", response.status()));
                }
                Ok(response)
            }
            Ok(Err(e)) => {
                self.warn(&e.to_string());
                Err(Box::new(e))
            }
            Err(e) => Err(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> OtlpConfig {
        serde_json::from_value(serde_json::json!({ "endpoint": endpoint })).unwrap()
    }

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            config("http://127.0.0.1:4318").traces_url(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            config("http://c:4318/").traces_url(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            config("https://c/otlp/v1/traces").traces_url(),
            "https://c/otlp/v1/traces"
        );
    }

    #[test]
    fn finish_reasons_are_read_from_answers_and_chunks() {
        let mut found = Vec::new();
        finish_reasons(
            r#"{"choices":[{"index":0,"finish_reason": "stop"},{"index":1,"finish_reason":"length"}]}"#,
            &mut found,
        );
        finish_reasons(
            r#"{"choices":[{"delta":{},"finish_reason":null}]}"#,
            &mut found,
        );
        finish_reasons(r#"{"choices":[{"finish_reason":"stop"}]}"#, &mut found);
        finish_reasons(r#"{"finish_reason":"unterminated"#, &mut found);
        assert_eq!(found, ["stop", "length"]);
    }

    #[test]
    fn credentials_in_the_endpoint_are_not_shown() {
        let c = config("https://user:secret@collector:4318");
        assert_eq!(
            c.traces_url(),
            "https://user:secret@collector:4318/v1/traces"
        );
        assert_eq!(c.shown_url(), "https://collector:4318/v1/traces");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn header_values_stay_out_of_debug_output() {
        let mut c = config("http://c:4318");
        c.headers
            .insert("authorization".into(), "Bearer secret-token".into());
        let shown = format!("{c:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("secret-token"), "{shown}");
    }
}
