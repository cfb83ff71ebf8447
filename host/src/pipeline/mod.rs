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

mod attempt;
mod request;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use request::CallerHints;

use crate::config::{Config, Timeouts};
use crate::domain::{AuthScheme, Candidate, Capabilities, Kind, RequestSummary, Target};
use crate::error::ApiError;
use crate::failover::{FailureClass, Next};
use crate::health::DeploymentHealth;
use crate::plugins::Registry;
use crate::upstream::{BaseUrl, Endpoint, Proxies, Upstream};
use request::{ChatRequestView, capabilities, summarize, validate_order};

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
    pub base_url: BaseUrl,
    pub api_key_env: Option<String>,
    api_key: Option<String>,
    pub timeouts: Timeouts,
    pub target: Arc<Target>,
    pub health: Arc<DeploymentHealth>,
    /// The config's auth override; otherwise the adapter's declaration.
    auth: Option<AuthScheme>,
    input_cost_per_1k: f64,
    output_cost_per_1k: f64,
    priority: u32,
    weight: u32,
    supports: Capabilities,
}

impl Deployment {
    fn endpoint<'a>(&'a self, adapter_auth: Option<&'a AuthScheme>) -> Endpoint<'a> {
        static BEARER: AuthScheme = AuthScheme::Bearer;
        Endpoint {
            deployment: &self.name,
            base_url: &self.base_url,
            api_key: self.api_key.as_deref(),
            api_key_env: self.api_key_env.as_deref(),
            auth: self.auth.as_ref().or(adapter_auth).unwrap_or(&BEARER),
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
                    base_url: BaseUrl::parse(&d.base_url)
                        .map_err(|e| format!("deployment {}: base_url: {e}", d.name))?,
                    api_key_env: d.api_key_env.clone(),
                    api_key: d.api_key_env.as_deref().and_then(|v| std::env::var(v).ok()),
                    timeouts,
                    target: Arc::new(Target {
                        deployment: d.name.clone(),
                        model: d.model.clone(),
                    }),
                    health: Arc::new(DeploymentHealth::new(config.health)),
                    auth: d.auth.as_ref().map(AuthScheme::from),
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
        let proxies = Proxies::from_env().map_err(|e| format!("outbound proxy: {e}"))?;
        if proxies.any() {
            tracing::info!(
                "upstreams are called through the outbound proxy the environment names (NO_PROXY exempts hosts)"
            );
        }
        let upstream =
            Upstream::new(connect_timeouts, proxies).map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            routes,
            registry,
            upstream,
        })
    }

    /// The same gateway sending to `upstream` instead (benchmarks and tests:
    /// [`Upstream::in_process`] measures the request path without sockets).
    pub fn with_upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = upstream;
        self
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
        let begun = Instant::now();
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
        // A span at `debug` only: at `info` its creation, formatting and
        // per-poll enter/exit cost several microseconds a request. Lines at
        // `info` and above name the request themselves (`request_id`, `model`).
        let span = tracing::debug_span!("request", request_id = %request_id, model = %route.name);

        async move {
            // 3. The order to try its deployments in.
            let summary = summarize(&view, text, hints);
            let order = self.order(route, &summary, &request_id).await;
            if order.is_empty() {
                return Err(ApiError::NoCandidate {
                    model: route.name.clone(),
                    reason: format!(
                        "none of its deployments (or none the strategy chose) supports everything the request needs: {}",
                        summary.needs.names()
                    ),
                });
            }

            // 4. Each candidate in turn. The request text is shared by every
            // plugin call of this request (calls may run on other threads).
            let request: Arc<str> = Arc::from(text);
            let mut attempts = Vec::new();
            let mut unsupported_adapters: Vec<&str> = Vec::new();
            for index in order {
                let deployment = &route.deployments[index];
                if unsupported_adapters.contains(&deployment.adapter.as_str()) {
                    continue;
                }
                let started = Instant::now();
                let result = self
                    .attempt(route, deployment, &request, view.stream, &request_id)
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
                            request_id = %request_id,
                            model = %route.name,
                            deployment = %deployment.name,
                            attempts = attempts.len() + 1,
                            ms = started.elapsed().as_millis() as u64,
                            total_ms = begun.elapsed().as_millis() as u64,
                            "answered"
                        );
                        return Ok(answer.with_attempts(attempts.len() + 1));
                    }
                    Err(attempt) => {
                        tracing::warn!(
                            request_id = %request_id,
                            model = %route.name,
                            deployment = %attempt.deployment,
                            class = ?attempt.class,
                            status = attempt.status,
                            "attempt failed: {}",
                            attempt.message
                        );
                        deployment
                            .health
                            .record_failure(attempt.class, attempt.retry_after());
                        if attempt.class == FailureClass::Unsupported {
                            // Same dialect, same verdict: only deployments
                            // behind other adapters are still worth a try.
                            unsupported_adapters.push(&deployment.adapter);
                        }
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
    async fn order(
        &self,
        route: &Route,
        summary: &RequestSummary,
        request_id: &Arc<str>,
    ) -> Vec<usize> {
        let configured = || (0..route.deployments.len()).collect::<Vec<_>>();
        let mut order = match &route.strategy {
            None => configured(),
            Some(id) => {
                let candidates: Vec<Candidate> = route.deployments.iter().map(candidate).collect();
                let count = candidates.len();
                let ordered = match self.registry.get(id, Kind::Strategy) {
                    Ok(plugin) => plugin
                        .order(request_id, summary.clone(), candidates)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
                .and_then(|order| validate_order(order, count));
                match ordered {
                    Ok(order) => order,
                    Err(e) => {
                        tracing::warn!(request_id = %request_id, model = %route.name, plugin = %id, "strategy failed, using the configured order: {e}");
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
}

impl Answer {
    fn with_attempts(mut self, n: usize) -> Self {
        match &mut self {
            Answer::Complete { attempts, .. } | Answer::Stream { attempts, .. } => *attempts = n,
        }
        self
    }
}

fn candidate(d: &Deployment) -> Candidate {
    let h = d.health.snapshot();
    Candidate {
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
