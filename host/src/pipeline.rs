//! The request pipeline, top to bottom:
//!
//! 1. read the request (model, stream, needs) — a malformed body is a 400;
//! 2. find its route — an unknown model is a 404;
//! 3. ask the route's strategy for the order of its deployments (a failing
//!    strategy falls back to the configured order);
//! 4. for each candidate: the adapter builds the upstream request, the host
//!    attaches the key and sends it, the adapter parses the answer or
//!    classifies the error, the evaluator checks a non-streamed answer;
//! 5. a retryable failure moves on to the next candidate; when all fail, the
//!    caller gets one error listing every attempt.
//!
//! A stream is committed to the client only once its first chunk parsed
//! cleanly, so an upstream that fails before that is failed over invisibly.
//! After that, a failure ends the stream with an error event, never with a
//! clean `[DONE]`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::{Capability, Config, Timeouts};
use crate::error::ApiError;
use crate::failover::{Attempt, FailureClass, Next};
use crate::health::{DeploymentHealth, InFlight};
use crate::plugins::bindings::{adapter, strategy, types::Usage};
use crate::plugins::{Kind, Registry, StreamSession};
use crate::upstream::{Endpoint, Upstream};

/// Everything a request needs, built once from the config.
pub struct Gateway {
    routes: HashMap<String, Route>,
    registry: Arc<Registry>,
    upstream: Upstream,
}

/// A model name clients may request.
pub struct Route {
    pub name: String,
    pub strategy: Option<String>,
    pub evaluator: Option<String>,
    pub deployments: Vec<Deployment>,
}

/// One deployment with its resolved secret, timeouts and live health.
pub struct Deployment {
    pub name: String,
    pub adapter: String,
    pub base_url: reqwest::Url,
    pub api_key_env: Option<String>,
    api_key: Option<String>,
    pub timeouts: Timeouts,
    pub target: adapter::Target,
    pub health: Arc<DeploymentHealth>,
    input_cost_per_1k: f64,
    output_cost_per_1k: f64,
    priority: u32,
    weight: u32,
    supports: strategy::Capabilities,
}

impl Deployment {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            deployment: &self.name,
            base_url: &self.base_url,
            api_key: self.api_key.as_deref(),
            api_key_env: self.api_key_env.as_deref(),
            timeouts: &self.timeouts,
        }
    }
}

/// What the pipeline produced for the client.
pub enum Answer {
    /// A complete, evaluated, non-streamed answer.
    Complete {
        deployment: String,
        body: Vec<u8>,
        attempts: usize,
    },
    /// A committed stream: SSE bytes, ending with `data: [DONE]` or an error event.
    Stream {
        deployment: String,
        events: mpsc::Receiver<Bytes>,
        attempts: usize,
    },
}

/// What the caller says about a request besides its body (from headers).
#[derive(Debug, Default)]
pub struct CallerHints {
    /// `x-switchyard-tags`, comma separated.
    pub tags: Vec<String>,
    /// `x-switchyard-priority`: low, normal, high or critical.
    pub priority: Option<strategy::TaskPriority>,
}

impl CallerHints {
    /// Parses a priority header value, naming the accepted values on error.
    pub fn parse_priority(value: &str) -> Result<strategy::TaskPriority, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(strategy::TaskPriority::Low),
            "normal" => Ok(strategy::TaskPriority::Normal),
            "high" => Ok(strategy::TaskPriority::High),
            "critical" => Ok(strategy::TaskPriority::Critical),
            other => Err(format!(
                "header x-switchyard-priority: {other:?} is not one of low, normal, high, critical"
            )),
        }
    }
}

/// The parts of a chat request the host reads; everything else passes
/// through to the adapter untouched.
#[derive(Deserialize)]
struct ChatRequestView<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<MessageView<'a>>,
    #[serde(default, deserialize_with = "null_as_false")]
    stream: bool,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    response_format: Option<ResponseFormat>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[allow(dead_code)]
    role: serde::de::IgnoredAny,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// `"stream": null` means not streamed, as OpenAI reads it.
fn null_as_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

impl Gateway {
    /// Resolves the config's routes. Missing API keys are warnings: the
    /// deployment fails its attempts (class `auth`) until the key is set.
    pub fn new(config: &Config, registry: Arc<Registry>) -> Result<Self, String> {
        let mut routes = HashMap::new();
        let mut connect_timeouts = vec![config.timeouts.connect_ms];
        for (name, r) in &config.routes {
            let mut deployments = Vec::with_capacity(r.deployments.len());
            for d in &r.deployments {
                let timeouts = match &d.timeouts {
                    Some(o) => config
                        .timeouts
                        .merged(o)
                        .map_err(|e| format!("deployment {}: timeouts: {e}", d.name))?,
                    None => config.timeouts,
                };
                connect_timeouts.push(timeouts.connect_ms);
                deployments.push(Deployment {
                    name: d.name.clone(),
                    adapter: d.adapter.clone(),
                    base_url: reqwest::Url::parse(&d.base_url)
                        .map_err(|e| format!("deployment {}: base_url: {e}", d.name))?,
                    api_key_env: d.api_key_env.clone(),
                    api_key: d.api_key_env.as_deref().and_then(|v| std::env::var(v).ok()),
                    timeouts,
                    target: adapter::Target {
                        deployment: d.name.clone(),
                        model: d.model.clone(),
                    },
                    health: Arc::new(DeploymentHealth::new(config.health)),
                    input_cost_per_1k: d.input_cost_per_1k,
                    output_cost_per_1k: d.output_cost_per_1k,
                    priority: d.priority,
                    weight: d.weight,
                    supports: capabilities(&d.capabilities),
                });
            }
            routes.insert(
                name.clone(),
                Route {
                    name: name.clone(),
                    strategy: r.strategy.clone(),
                    evaluator: r.evaluator.clone(),
                    deployments,
                },
            );
        }
        let upstream = Upstream::new(connect_timeouts).map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            routes,
            registry,
            upstream,
        })
    }

    /// Model names clients may request, sorted.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Serves one chat-completions request.
    pub async fn chat(
        self: &Arc<Self>,
        request_id: Arc<str>,
        hints: CallerHints,
        body: Bytes,
    ) -> Result<Answer, ApiError> {
        // 1. Read the request.
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::BadRequest(format!("request body is not UTF-8: {e}")))?;
        let view: ChatRequestView = serde_json::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("invalid chat request body: {e}")))?;
        if view.messages.is_empty() {
            return Err(ApiError::BadRequest(
                "`messages` must contain at least one message".into(),
            ));
        }

        // 2. Its route.
        let route = self
            .routes
            .get(view.model.as_ref())
            .ok_or_else(|| ApiError::ModelNotFound(view.model.to_string()))?;
        let span = tracing::info_span!("request", request_id = %request_id, model = %route.name);

        async move {
            // 3. The order to try its deployments in.
            let summary = summarize(&view, text, hints);
            let order = self.order(route, &summary, &request_id);
            if order.is_empty() {
                return Err(ApiError::NoCandidate {
                    model: route.name.clone(),
                    reason: format!(
                        "none of its deployments (or none the strategy chose) supports everything the request needs: {}",
                        capability_names(summary.needs)
                    ),
                });
            }

            // 4. Each candidate in turn.
            let mut attempts = Vec::new();
            for index in order {
                let deployment = &route.deployments[index];
                let started = Instant::now();
                let result = self
                    .attempt(route, deployment, text, view.stream, &request_id)
                    .await;
                match result {
                    Ok(answer) => {
                        match &answer {
                            Answer::Complete { .. } => {
                                deployment.health.record_success(started.elapsed())
                            }
                            // Judged when the stream ends (see `StreamPump`).
                            Answer::Stream { .. } => {
                                deployment.health.record_latency(started.elapsed())
                            }
                        }
                        tracing::info!(
                            deployment = %deployment.name,
                            attempts = attempts.len() + 1,
                            ms = started.elapsed().as_millis() as u64,
                            "answered"
                        );
                        return Ok(answer.with_attempts(attempts.len() + 1));
                    }
                    Err(attempt) => {
                        tracing::warn!(
                            deployment = %attempt.deployment,
                            class = ?attempt.class,
                            status = attempt.status,
                            "attempt failed: {}",
                            attempt.message
                        );
                        deployment
                            .health
                            .record_failure(attempt.class, attempt.retry_after());
                        if attempt.class.next() == Next::ReturnToCaller {
                            return Err(ApiError::UpstreamRejected {
                                deployment: attempt.deployment,
                                message: attempt.message,
                            });
                        }
                        attempts.push(attempt);
                    }
                }
            }
            // 5. Every candidate failed.
            Err(ApiError::AllFailed {
                model: route.name.clone(),
                attempts,
            })
        }
        .instrument(span)
        .await
    }

    /// The strategy's order, validated; the configured order when the route
    /// has no strategy or the strategy fails. Deployments cooling down go
    /// last whatever the strategy says: they are tried only if all else fails.
    fn order(
        &self,
        route: &Route,
        summary: &strategy::RequestSummary,
        request_id: &Arc<str>,
    ) -> Vec<usize> {
        let configured = || (0..route.deployments.len()).collect::<Vec<_>>();
        let mut order = match &route.strategy {
            None => configured(),
            Some(id) => {
                let candidates: Vec<strategy::Candidate> =
                    route.deployments.iter().map(candidate).collect();
                let ordered = self
                    .registry
                    .get(id, Kind::Strategy)
                    .and_then(|plugin| plugin.order(request_id, summary, &candidates))
                    .map_err(|e| e.to_string())
                    .and_then(|order| validate_order(order, candidates.len()));
                match ordered {
                    Ok(order) => order,
                    Err(e) => {
                        tracing::warn!(plugin = %id, "strategy failed, using the configured order: {e}");
                        configured()
                    }
                }
            }
        };
        // A deployment configured without a capability the request needs
        // (tools, JSON mode, vision, streaming) is never tried.
        order.retain(|&i| route.deployments[i].supports.contains(summary.needs));
        // Deployments cooling down (or whose half-open probe another request
        // holds) go last: tried only if everything else fails.
        order.sort_by_cached_key(|&i| !route.deployments[i].health.admit());
        order
    }

    /// One attempt on one deployment.
    async fn attempt(
        &self,
        route: &Route,
        d: &Deployment,
        request: &str,
        stream: bool,
        request_id: &Arc<str>,
    ) -> Result<Answer, Attempt> {
        let plugin_failed = |e: crate::plugins::PluginError| {
            Attempt::new(&d.name, FailureClass::Plugin, e.to_string())
        };
        let adapter = self
            .registry
            .get(&d.adapter, Kind::Adapter)
            .map_err(plugin_failed)?;
        let http = adapter
            .build_request(request_id, &d.target, request)
            .map_err(plugin_failed)?;

        // A stream's parser (and the adapter instance it lives in) is taken
        // before the upstream is called: if the plugin cannot serve, no
        // billed upstream call is thrown away.
        let session = match stream {
            true => Some(
                adapter
                    .open_stream(request_id, &d.target, request)
                    .map_err(plugin_failed)?,
            ),
            false => None,
        };

        let in_flight = d.health.start();
        let started = Instant::now();
        let endpoint = d.endpoint();
        let response = self.upstream.send(&endpoint, http).await?;

        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = Upstream::read_body(&endpoint, response, started).await?;
            let error = adapter
                .classify_error(request_id, &body)
                .map_err(plugin_failed)?;
            return Err(Attempt::upstream(&d.name, Some(status), error));
        }

        if let Some(session) = session {
            let evaluation = route.evaluator.as_ref().map(|evaluator| StreamEvaluation {
                registry: self.registry.clone(),
                evaluator: evaluator.clone(),
                request: request.to_string(),
                request_id: request_id.clone(),
                transcript: Transcript::default(),
            });
            return start_stream(d, session, response, started, in_flight, evaluation).await;
        }

        let body = Upstream::read_body(&endpoint, response, started).await?;
        let status = body.status;
        let answer = adapter
            .parse_response(request_id, &d.target, &body)
            .map_err(plugin_failed)?
            .map_err(|e| Attempt::upstream(&d.name, Some(status), e))?;
        log_usage(d, answer.usage);

        if let Some(evaluator) = &route.evaluator {
            self.evaluate(d, evaluator, request, &answer.body, request_id)?;
        }
        Ok(Answer::Complete {
            deployment: d.name.clone(),
            body: answer.body.into_bytes(),
            attempts: 0,
        })
    }

    /// Runs the route's evaluator. A failing *evaluator* accepts the answer
    /// (logged); a failing *verdict* rejects it.
    fn evaluate(
        &self,
        d: &Deployment,
        evaluator: &str,
        request: &str,
        response: &str,
        request_id: &Arc<str>,
    ) -> Result<(), Attempt> {
        let verdict = self
            .registry
            .get(evaluator, Kind::Evaluator)
            .and_then(|plugin| plugin.evaluate(request_id, request, response));
        match verdict {
            Err(e) => {
                tracing::warn!(plugin = %evaluator, "evaluator failed, accepting the answer: {e}");
                Ok(())
            }
            Ok(v) => {
                d.health.record_quality(v.score);
                if v.pass {
                    Ok(())
                } else {
                    tracing::warn!(plugin = %evaluator, score = v.score, reasons = ?v.reasons, "evaluator rejected the answer");
                    Err(Attempt::new(
                        &d.name,
                        FailureClass::EvaluatorRejected,
                        format!(
                            "evaluator {evaluator:?} rejected the answer (score {:.2}): {}",
                            v.score,
                            v.reasons.join("; ")
                        ),
                    ))
                }
            }
        }
    }
}

impl Answer {
    fn with_attempts(mut self, n: usize) -> Self {
        match &mut self {
            Answer::Complete { attempts, .. } | Answer::Stream { attempts, .. } => *attempts = n,
        }
        self
    }
}

/// Reads the stream until its first parsed chunk (failing over is still
/// possible until then), then commits: a task pumps the rest to the client.
async fn start_stream(
    d: &Deployment,
    mut session: StreamSession,
    response: reqwest::Response,
    started: Instant,
    in_flight: InFlight,
    evaluation: Option<StreamEvaluation>,
) -> Result<Answer, Attempt> {
    let fail = |class, message: String| Attempt::new(&d.name, class, message);
    let mut body = response.bytes_stream();
    // One budget from sending the request to the first parsed chunk.
    let deadline = started + d.timeouts.first_byte();
    let first = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (batch, eof) = match tokio::time::timeout(wait, body.next()).await {
            Err(_) => {
                return Err(fail(
                    FailureClass::Timeout,
                    format!(
                        "no stream chunk within {} ms (first_byte_ms)",
                        d.timeouts.first_byte_ms
                    ),
                ));
            }
            Ok(Some(Err(e))) => {
                return Err(fail(
                    FailureClass::Transport,
                    format!("stream broke before the first chunk: {e}"),
                ));
            }
            Ok(Some(Ok(bytes))) => (session.feed(&bytes), false),
            Ok(None) => (session.finish(), true),
        };
        let batch = batch
            .map_err(|e| fail(FailureClass::Plugin, e.to_string()))?
            .map_err(|e| Attempt::upstream(&d.name, None, e))?;
        if !batch.chunks.is_empty() || batch.done {
            break batch;
        }
        if eof {
            return Err(fail(
                FailureClass::Overloaded,
                "upstream closed the stream before any chunk".into(),
            ));
        }
    };

    let (tx, rx) = mpsc::channel(32);
    let pump = StreamPump {
        deployment: d.name.clone(),
        idle: d.timeouts.idle(),
        session,
        tx,
        in_flight,
        evaluation,
    };
    tokio::spawn(pump.run(first, body).in_current_span());
    Ok(Answer::Stream {
        deployment: d.name.clone(),
        events: rx,
        attempts: 0,
    })
}

/// Moves a committed stream from the upstream to the client.
struct StreamPump {
    deployment: String,
    idle: std::time::Duration,
    session: StreamSession,
    tx: mpsc::Sender<Bytes>,
    /// Keeps the deployment counted in flight until the stream ends.
    in_flight: InFlight,
    evaluation: Option<StreamEvaluation>,
}

impl StreamPump {
    async fn run(
        mut self,
        first: adapter::ChunkBatch,
        mut body: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin,
    ) {
        let mut usage = first.usage;
        let mut done = first.done;
        if self.forward(&first.chunks).await.is_err() {
            return;
        }
        let mut failure = None;
        while !done {
            let next = tokio::select! {
                biased;
                // Nothing to send for a while (e.g. keep-alive comments)
                // must not hide that the client left.
                () = self.tx.closed() => {
                    tracing::info!("client went away mid-stream");
                    return;
                }
                next = tokio::time::timeout(self.idle, body.next()) => next,
            };
            let (batch, eof) = match next {
                Err(_) => (
                    Err((
                        FailureClass::Timeout,
                        format!(
                            "upstream stream stalled for {} ms (idle_ms)",
                            self.idle.as_millis()
                        ),
                    )),
                    false,
                ),
                Ok(Some(Err(e))) => (
                    Err((
                        FailureClass::Transport,
                        format!("upstream stream broke: {e}"),
                    )),
                    false,
                ),
                Ok(Some(Ok(bytes))) => {
                    let fed = self.session.feed(&bytes);
                    (self.flatten(fed), false)
                }
                // The adapter's `finish` refuses an end it considers truncated.
                Ok(None) => {
                    let finished = self.session.finish();
                    (self.flatten(finished), true)
                }
            };
            match batch {
                Err(message) => {
                    failure = Some(message);
                    break;
                }
                Ok(batch) => {
                    usage = batch.usage.or(usage);
                    done = batch.done || eof;
                    if self.forward(&batch.chunks).await.is_err() {
                        return;
                    }
                }
            }
        }
        let health = self.in_flight.health();
        match failure {
            None => {
                health.record_success(std::time::Duration::ZERO);
                let _ = self.tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                match usage {
                    Some(u) => tracing::info!(
                        prompt_tokens = u.prompt_tokens,
                        completion_tokens = u.completion_tokens,
                        "stream complete"
                    ),
                    None => tracing::info!("stream complete (upstream reported no usage)"),
                }
                if let Some(evaluation) = &self.evaluation {
                    evaluation.run(health, &self.deployment);
                }
            }
            Some((class, message)) => {
                tracing::warn!(?class, "stream failed after commit: {message}");
                health.record_failure(class, None);
                let event = serde_json::json!({"error": {
                    "message": format!("deployment {:?}: {message}", self.deployment),
                    "type": "upstream_error",
                    "code": "stream_interrupted",
                }});
                let _ = self
                    .tx
                    .send(Bytes::from(format!("data: {event}\n\n")))
                    .await;
            }
        }
    }

    /// A parser result with its failure class, for the error event and health.
    fn flatten(
        &self,
        r: Result<Result<adapter::ChunkBatch, adapter::UpstreamError>, crate::plugins::PluginError>,
    ) -> Result<adapter::ChunkBatch, (FailureClass, String)> {
        match r {
            Ok(Ok(batch)) => Ok(batch),
            Ok(Err(e)) => {
                let a = Attempt::upstream(&self.deployment, None, e);
                Err((a.class, a.message))
            }
            Err(e) => Err((FailureClass::Plugin, e.to_string())),
        }
    }

    /// Sends chunks to the client as SSE events (and to the transcript).
    /// A client that stops reading for `idle` is dropped, so it cannot hold
    /// the upstream connection and the adapter instance forever.
    async fn forward(&mut self, chunks: &[String]) -> Result<(), ()> {
        for chunk in chunks {
            if let Some(evaluation) = &mut self.evaluation {
                evaluation.transcript.add(chunk);
            }
            let mut event = Vec::with_capacity(chunk.len() + 8);
            event.extend_from_slice(b"data: ");
            event.extend_from_slice(chunk.as_bytes());
            event.extend_from_slice(b"\n\n");
            match self.tx.send_timeout(Bytes::from(event), self.idle).await {
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                    tracing::info!("client went away mid-stream");
                    return Err(());
                }
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    tracing::warn!(
                        "client read nothing for {} ms; stream abandoned",
                        self.idle.as_millis()
                    );
                    return Err(());
                }
            }
        }
        Ok(())
    }
}

/// Evaluating a streamed answer once it is complete. The client already has
/// it, so a fail cannot trigger failover: it is logged and lowers the
/// deployment's quality score, which strategies see.
struct StreamEvaluation {
    registry: Arc<Registry>,
    evaluator: String,
    request: String,
    request_id: Arc<str>,
    transcript: Transcript,
}

impl StreamEvaluation {
    fn run(&self, health: &DeploymentHealth, deployment: &str) {
        let response = self.transcript.to_completion(deployment);
        let verdict = self
            .registry
            .get(&self.evaluator, Kind::Evaluator)
            .and_then(|p| p.evaluate(&self.request_id, &self.request, &response));
        match verdict {
            Err(e) => {
                tracing::warn!(plugin = %self.evaluator, "evaluator failed on a streamed answer: {e}")
            }
            Ok(v) => {
                health.record_quality(v.score);
                if !v.pass {
                    tracing::warn!(plugin = %self.evaluator, score = v.score, reasons = ?v.reasons,
                        "evaluator rejected a streamed answer (already delivered)");
                }
            }
        }
    }
}

/// The first choice of a streamed answer, reassembled from its chunks.
#[derive(Default)]
struct Transcript {
    content: String,
    finish_reason: Option<String>,
    tool_calls: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkView {
    #[serde(default)]
    choices: Vec<ChoiceView>,
}

#[derive(Deserialize)]
struct ChoiceView {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: DeltaView,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct DeltaView {
    content: Option<String>,
    tool_calls: Option<Vec<serde_json::Value>>,
}

impl Transcript {
    fn add(&mut self, chunk: &str) {
        let Ok(chunk) = serde_json::from_str::<ChunkView>(chunk) else {
            return;
        };
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content {
                self.content.push_str(&text);
            }
            if let Some(calls) = choice.delta.tool_calls {
                self.tool_calls.extend(calls);
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
    }

    /// A canonical `chat.completion` with the reassembled first choice.
    fn to_completion(&self, deployment: &str) -> String {
        let mut message = serde_json::json!({"role": "assistant", "content": self.content});
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = serde_json::Value::Array(self.tool_calls.clone());
        }
        serde_json::json!({
            "object": "chat.completion",
            "model": deployment,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
        })
        .to_string()
    }
}

fn log_usage(d: &Deployment, usage: Option<Usage>) {
    if let Some(u) = usage {
        let cost = f64::from(u.prompt_tokens) / 1000.0 * d.input_cost_per_1k
            + f64::from(u.completion_tokens) / 1000.0 * d.output_cost_per_1k;
        tracing::debug!(
            prompt_tokens = u.prompt_tokens,
            completion_tokens = u.completion_tokens,
            cost_usd = cost,
            "usage"
        );
    }
}

/// What the strategy is told about the request.
fn summarize(view: &ChatRequestView, text: &str, hints: CallerHints) -> strategy::RequestSummary {
    let content_bytes: usize = view
        .messages
        .iter()
        .filter_map(|m| m.content)
        .map(|c| c.get().len())
        .sum();
    let mut needs = strategy::Capabilities::empty();
    if view.tools.is_some() {
        needs |= strategy::Capabilities::TOOLS;
    }
    if view
        .response_format
        .as_ref()
        .is_some_and(|f| f.kind != "text")
    {
        needs |= strategy::Capabilities::JSON_MODE;
    }
    if view.stream {
        needs |= strategy::Capabilities::STREAMING;
    }
    if text.contains("\"image_url\"") {
        needs |= strategy::Capabilities::VISION;
    }
    strategy::RequestSummary {
        model: view.model.to_string(),
        // ~4 bytes per token is the usual rule of thumb for English text.
        input_tokens: (content_bytes / 4) as u32,
        max_output_tokens: view.max_completion_tokens.or(view.max_tokens),
        stream: view.stream,
        needs,
        priority: hints.priority.unwrap_or(strategy::TaskPriority::Normal),
        tags: hints.tags,
    }
}

fn candidate(d: &Deployment) -> strategy::Candidate {
    let h = d.health.snapshot();
    strategy::Candidate {
        deployment: d.name.clone(),
        adapter: d.adapter.clone(),
        healthy: h.healthy,
        headroom: h.headroom,
        in_flight: h.in_flight,
        error_rate: h.error_rate,
        latency_ms: h.latency_ms,
        input_cost_per_1k: d.input_cost_per_1k,
        output_cost_per_1k: d.output_cost_per_1k,
        priority: d.priority,
        weight: d.weight,
        quality: h.quality,
        supports: d.supports,
    }
}

/// Indices in range and each at most once.
fn validate_order(order: Vec<u32>, len: usize) -> Result<Vec<usize>, String> {
    let mut seen = vec![false; len];
    order
        .into_iter()
        .map(|i| {
            let i = i as usize;
            match seen.get_mut(i) {
                None => Err(format!(
                    "strategy returned index {i}, but there are {len} candidates"
                )),
                Some(true) => Err(format!("strategy returned index {i} twice")),
                Some(s) => {
                    *s = true;
                    Ok(i)
                }
            }
        })
        .collect()
}

fn capability_names(caps: strategy::Capabilities) -> String {
    let names = [
        (strategy::Capabilities::TOOLS, "tools"),
        (strategy::Capabilities::JSON_MODE, "json-mode"),
        (strategy::Capabilities::VISION, "vision"),
        (strategy::Capabilities::STREAMING, "streaming"),
    ];
    let named: Vec<&str> = names
        .iter()
        .filter(|(c, _)| caps.contains(*c))
        .map(|(_, n)| *n)
        .collect();
    if named.is_empty() {
        "nothing special".into()
    } else {
        named.join(", ")
    }
}

fn capabilities(list: &[Capability]) -> strategy::Capabilities {
    list.iter().fold(strategy::Capabilities::empty(), |acc, c| {
        acc | match c {
            Capability::Tools => strategy::Capabilities::TOOLS,
            Capability::JsonMode => strategy::Capabilities::JSON_MODE,
            Capability::Vision => strategy::Capabilities::VISION,
            Capability::Streaming => strategy::Capabilities::STREAMING,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_reassembles_the_first_choice() {
        let mut t = Transcript::default();
        t.add(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#);
        t.add(r#"{"choices":[{"index":0,"delta":{"content":"Hel"}},{"index":1,"delta":{"content":"x"}}]}"#);
        t.add(r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#);
        t.add(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#);
        t.add("not json");
        let c: serde_json::Value = serde_json::from_str(&t.to_completion("dep")).unwrap();
        assert_eq!(c["choices"][0]["message"]["content"], "Hello");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["model"], "dep");
    }

    #[test]
    fn order_validation_rejects_out_of_range_and_repeats() {
        assert_eq!(validate_order(vec![2, 0, 1], 3).unwrap(), vec![2, 0, 1]);
        assert_eq!(validate_order(vec![1], 3).unwrap(), vec![1]);
        assert!(validate_order(vec![3], 3).unwrap_err().contains("index 3"));
        assert!(validate_order(vec![0, 0], 3).unwrap_err().contains("twice"));
    }

    #[test]
    fn summary_reads_needs_and_limits() {
        let text = r#"{"model":"m","stream":true,"max_tokens":9,"tools":[],
            "response_format":{"type":"json_object"},
            "messages":[{"role":"user","content":"abcdefghijkl"}]}"#;
        let view: ChatRequestView = serde_json::from_str(text).unwrap();
        let hints = CallerHints {
            tags: vec!["t".into()],
            priority: Some(strategy::TaskPriority::High),
        };
        let s = summarize(&view, text, hints);
        assert_eq!(s.priority, strategy::TaskPriority::High);
        assert!(
            s.needs
                .contains(strategy::Capabilities::TOOLS | strategy::Capabilities::JSON_MODE)
        );
        assert!(s.stream && s.needs.contains(strategy::Capabilities::STREAMING));
        assert_eq!(s.max_output_tokens, Some(9));
        assert_eq!(s.input_tokens, 3, "14 bytes of JSON string / 4");
        assert_eq!(s.tags, vec!["t".to_string()]);
    }
}
