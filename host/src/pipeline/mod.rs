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
//! A stream is committed to the client only once a chunk carries part of
//! the answer, so an upstream that fails before that is failed over
//! invisibly. After that, a failure is resumed on another deployment
//! (`resume.rs`) or ends the stream with an error event, never with a
//! clean `[DONE]`.

mod attempt;
mod build;
mod cached;
mod check;
mod limits;
mod order;
pub mod outcome;
mod ready;
mod request;
mod resume;
mod route;
mod sample;
mod stream;
mod transcript;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use outcome::{End, Prices, Recorder, Sinks};
pub use request::{CallerHints, capabilities, validate_order};

use crate::config::{Config, Timeouts};
use crate::domain::{AuthScheme, Capabilities, Target};
use crate::error::ApiError;
use crate::health::DeploymentHealth;
use crate::plugins::Registry;
use crate::ratelimit::Limiter;
use crate::upstream::{BaseUrl, Endpoint, Upstream};
use request::{ChatRequestView, summarize};

/// Everything a request needs, built from one config. A reload builds a
/// new one and swaps it in (see [`crate::live`]); a request keeps the one it
/// started with.
pub struct Gateway {
    routes: HashMap<String, Route>,
    /// Wildcard routes by prefix, the longest first.
    wildcards: Vec<(String, Route)>,
    /// Every deployment by name, shared by the routes that list it.
    deployments: HashMap<String, Arc<Deployment>>,
    registry: Arc<Registry>,
    upstream: Upstream,
    /// `GET /v1/models`, rendered once.
    models: Bytes,
    /// Client keys (limits kept across reloads by name).
    clients: crate::auth::ClientKeys,
    /// Concurrency gauges and the wait queue (kept across reloads).
    capacity: Arc<crate::capacity::Capacity>,
    /// Limits shared by every replica (`limits.backend: "redis"`).
    shared: Option<Arc<crate::ratelimit::shared::Shared>>,
    config: Arc<Config>,
    /// A reload replaced it: its background tasks (health checks) stop,
    /// though requests still in flight (a stream that may resume) keep it.
    retired: std::sync::atomic::AtomicBool,
}

/// A model name clients may request.
pub struct Route {
    pub name: String,
    pub strategy: Option<String>,
    pub evaluator: Option<String>,
    /// The share of requests evaluated (see [`Route::evaluator_for`]).
    pub evaluate_sample: f64,
    /// Strategies run beside `strategy` after each answer, never routing.
    pub shadows: Arc<[String]>,
    pub members: Vec<Member>,
    /// Routes tried after this one's deployments, in order (resolved
    /// transitively at load).
    pub fallbacks: Vec<String>,
    /// Its requests in flight, against `max_in_flight` (kept across reloads).
    pub gauge: Arc<crate::capacity::Gauge>,
    pub max_in_flight: Option<u32>,
    pub on_content_filter: crate::config::OnContentFilter,
    pub retry: crate::config::RetryPolicy,
    pub cache: crate::cache::RouteCache,
    /// What its cache keys cover of its deployments: each one's name, model
    /// and upstream.
    pub cache_basis: String,
}

/// A deployment as one route uses it.
pub struct Member {
    pub deployment: Arc<Deployment>,
    priority: u32,
    weight: u32,
}

/// One deployment with its resolved secret, timeouts and live health.
pub struct Deployment {
    pub name: String,
    pub adapter: String,
    pub base_url: BaseUrl,
    /// Its API keys (one, several, or none), each with its limits and standing.
    pub keys: crate::keys::KeyPool,
    pub timeouts: Timeouts,
    /// In a wildcard route, its model's `*` is the rest of the requested name.
    pub target: Arc<Target>,
    pub health: Arc<DeploymentHealth>,
    /// Its rate limits (carried across reloads by name).
    pub limiter: Arc<Limiter>,
    /// Whether it has any limit (no lock taken otherwise).
    pub limited: bool,
    /// Its configured limits (whole: the local limiter may hold a share).
    pub limits: crate::ratelimit::Limits,
    /// Each key's configured limits (whole).
    pub key_limits: crate::ratelimit::Limits,
    /// The last shared check's headroom (f32 bits), with Redis.
    pub shared_headroom: std::sync::atomic::AtomicU32,
    /// Until when (ms since the epoch) a shared refusal holds.
    pub shared_refused_until_ms: std::sync::atomic::AtomicU64,
    /// Its requests in flight, against `max_in_flight` (kept across reloads).
    pub gauge: Arc<crate::capacity::Gauge>,
    pub max_in_flight: Option<u32>,
    /// Its context window in tokens, when configured.
    pub context_window: Option<u32>,
    /// Whether it continues a trailing assistant message (config; the
    /// adapter's `prefill` capability when unset).
    pub prefill: Option<bool>,
    pub health_check: Option<crate::config::HealthCheck>,
    /// The config's auth override; otherwise the adapter's declaration.
    auth: Option<AuthScheme>,
    pub prices: Prices,
    supports: Capabilities,
}

impl Deployment {
    /// Where and how to call this deployment through `adapter` (its
    /// declared auth and the response headers it reads).
    fn endpoint<'a>(
        &'a self,
        adapter: &'a crate::domain::Metadata,
        key: &'a crate::keys::UpstreamKey,
    ) -> Endpoint<'a> {
        static BEARER: AuthScheme = AuthScheme::Bearer;
        Endpoint {
            deployment: &self.name,
            base_url: &self.base_url,
            api_key: key.value(),
            api_key_env: key.env.as_deref(),
            auth: self
                .auth
                .as_ref()
                .or(adapter.auth.as_ref())
                .unwrap_or(&BEARER),
            timeouts: &self.timeouts,
            response_headers: adapter.response_headers.as_deref(),
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

/// How a request is served: whole, as a new stream (resumable if it fails
/// after committing), or as the next leg of a stream being resumed.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// With the request's structured-output plan, if it asks for JSON.
    Complete(Option<&'a crate::structured::Plan>),
    Stream(Option<&'a resume::Resumable>),
    Resume {
        leg: &'a resume::Leg,
        /// This deployment is sent the delivered text as a prefill.
        prefill: bool,
    },
}

impl Mode<'_> {
    fn streams(self) -> bool {
        !matches!(self, Mode::Complete(_))
    }
}

/// What the pipeline produced, before `chat` hands it to the client.
enum Served {
    /// The client's answer; for a committed stream, with its pump, which
    /// `chat` starts.
    Answer(Answer, Option<stream::Pending>),
    /// The next leg of a stream being resumed, for the pump that asked.
    Resumed(Box<resume::Continuation>),
}

impl Served {
    fn with_attempts(mut self, n: usize) -> Self {
        match &mut self {
            Served::Answer(
                Answer::Complete { attempts, .. } | Answer::Stream { attempts, .. },
                _,
            ) => *attempts = n,
            Served::Resumed(_) => {}
        }
        self
    }
}

impl Gateway {
    /// The same gateway sending to `upstream` instead (benchmarks and tests:
    /// [`Upstream::in_process`] measures the request path without sockets).
    pub fn with_upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = upstream;
        self
    }

    /// `GET /v1/models`: exact routes, and the prefixes wildcards open.
    pub fn models(&self) -> Bytes {
        self.models.clone()
    }

    /// A reload replaced it: its health checkers stop (the new gateway runs
    /// its own on the same deployments' health).
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The config this gateway was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The route serving `model` (an exact name before any wildcard) and,
    /// for a wildcard, the rest of the name.
    fn route_for<'a>(&'a self, model: &'a str) -> Option<(&'a Route, Option<&'a str>)> {
        if let Some(r) = self.routes.get(model) {
            return Some((r, None));
        }
        self.wildcards.iter().find_map(|(prefix, r)| {
            let rest = model.strip_prefix(prefix.as_str())?;
            (!rest.is_empty()).then_some((r, Some(rest)))
        })
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Places under the gateway's and the route's `max_in_flight`, or the
    /// 503 to give when one is full.
    fn request_slots(&self, route: &Route) -> Result<Vec<crate::capacity::Slot>, ApiError> {
        let mut slots = Vec::new();
        if let Some(max) = self.config.limits.max_in_flight {
            slots.push(self.capacity.global.try_acquire(max).ok_or_else(|| {
                ApiError::AtCapacity {
                    what: "the gateway".into(),
                    max,
                }
            })?);
        }
        if let Some(max) = route.max_in_flight {
            match route.gauge.try_acquire(max) {
                Some(slot) => slots.push(slot),
                None => {
                    // Given back quietly: waking the queue would wake this
                    // very request, which is about to wait.
                    slots
                        .into_iter()
                        .for_each(crate::capacity::Slot::give_back_quietly);
                    return Err(ApiError::AtCapacity {
                        what: format!("model {:?}", route.name),
                        max,
                    });
                }
            }
        }
        Ok(slots)
    }

    /// The Redis client sharing limits between replicas, if any.
    pub fn shared(&self) -> Option<Arc<crate::ratelimit::shared::Shared>> {
        self.shared.clone()
    }

    /// Who may call, and how fast.
    pub fn clients(&self) -> &crate::auth::ClientKeys {
        &self.clients
    }

    /// The live health of the deployment named `name`, if configured.
    pub fn deployment_health(&self, name: &str) -> Option<&Arc<DeploymentHealth>> {
        self.deployments.get(name).map(|d| &d.health)
    }

    /// Serves one chat-completions request. Its outcome goes into `rec`
    /// (a committed stream's pump takes the record over); with the answer
    /// comes what the response cache did, on a route that caches.
    pub async fn chat(
        self: &Arc<Self>,
        request_id: Arc<str>,
        hints: CallerHints,
        body: Bytes,
        rec: &mut Recorder,
    ) -> Result<(Answer, Option<crate::cache::Status>), ApiError> {
        let begun = Instant::now();
        // 1. Read the request.
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::BadRequest(format!("request body is not UTF-8: {e}")))?;
        let view: ChatRequestView = serde_json::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("invalid chat request body: {e}")))?;
        if let Some(r) = rec.record() {
            r.route = view.model.to_string();
            r.stream = view.stream;
        }
        if view.messages.is_empty() {
            return Err(ApiError::BadRequest(
                "`messages` must contain at least one message".into(),
            ));
        }

        // 2. Its route, and the routes to fall back to.
        let (route, rest) = self
            .route_for(view.model.as_ref())
            .ok_or_else(|| ApiError::ModelNotFound(view.model.to_string()))?;
        if let Some(r) = rec.record() {
            r.route = route.name.clone();
            r.route_found = true;
            crate::telemetry::name_request(&r.span, &r.route);
        }
        let caller = hints.caller.clone();
        if let Some(c) = &caller
            && !c.may_use(&route.name)
        {
            return Err(ApiError::Forbidden {
                key: c.name.to_string(),
                model: view.model.to_string(),
            });
        }
        // 3. The response cache, on routes that opted in: a hit is the
        // answer (no limit, budget or upstream is touched).
        let cache = match route.cache.enabled {
            false => None,
            true => match self
                .cache_lookup(route, text, view.stream, hints.cache, rec)
                .await
            {
                (status, Some(answer)) => return Ok((answer, Some(status))),
                (status, None) => Some(status),
            },
        };
        let mut chain = vec![(route, rest)];
        // The caller's list replaces the route's; it is never sent upstream
        // (even `null`: providers refuse arguments they do not know).
        let fallbacks: Vec<&str> = match &view.fallbacks {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => route.fallbacks.iter().map(String::as_str).collect(),
        };
        let request: Arc<str> = if text.contains("\"fallbacks\"") {
            Arc::from(without_member(text, "fallbacks")?)
        } else {
            Arc::from(text)
        };
        let own = view.fallbacks.is_some();
        // The chain by name, for a stream's pump to serve again (resume).
        let mut models = Vec::new();
        if view.stream {
            models.push(view.model.to_string());
        }
        for (i, name) in fallbacks.into_iter().enumerate() {
            let found = self.route_for(name).ok_or_else(|| {
                ApiError::BadRequest(format!("fallbacks[{i}]: no model (route) named {name:?}"))
            })?;
            // Only routes the caller may use: named by the caller, a 403;
            // from the route's config, passed over.
            if let Some(c) = &caller
                && !c.may_use(&found.0.name)
            {
                if own {
                    return Err(ApiError::Forbidden {
                        key: c.name.to_string(),
                        model: name.to_string(),
                    });
                }
                continue;
            }
            if !chain
                .iter()
                .any(|(r, rest)| std::ptr::eq(*r, found.0) && *rest == found.1)
            {
                chain.push(found);
                if view.stream {
                    models.push(name.to_string());
                }
            }
        }
        for (_, rest) in &chain {
            if let Some(rest) = rest {
                check_wildcard_rest(rest)?;
            }
        }
        if let Some(c) = &caller
            && c.limiter.is_active()
        {
            let tokens = self.caller_tokens(&view, text);
            match (&self.shared, rec.record()) {
                // Checked with the first deployment: one round trip.
                (Some(_), Some(r)) => r.caller_due = Some((c.clone(), tokens)),
                _ => self.caller_limits(c, tokens, rec).await?,
            }
        }
        self.admit(&chain, &view, text, rec)?;
        // A span at `debug` only: at `info` its creation, formatting and
        // per-poll enter/exit cost several microseconds a request. Lines at
        // `info` and above name the request themselves (`request_id`, `model`).
        let span = tracing::debug_span!("request", request_id = %request_id, model = %route.name);

        // One deadline for the request's whole life: attempts, back-offs,
        // queue waits (a stream's pump keeps it to its end).
        // A caller may shorten it, never stretch it past the operator's.
        let most = std::time::Duration::from_millis(self.config.timeouts.request_ms);
        let limit = hints.timeout.map_or(most, |t| t.min(most));
        let deadline = begun + limit;
        if let Some(r) = rec.record() {
            r.deadline = Some(deadline);
        }
        // JSON asked for, whole: checked (and asked for by instructions
        // where a deployment has no JSON mode). A stream goes to native
        // JSON modes only.
        let structured = if !view.stream && view.asks_for_json() {
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
            crate::structured::Plan::for_request(&v)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?
        } else {
            None
        };
        let served = async {
            let summary = summarize(&view, text, hints);
            let priority = summary.priority;
            let resumable = (view.stream && route.retry.resumes > 0).then(|| resume::Resumable {
                gateway: self.clone(),
                models,
                summary: summary.clone(),
                request: request.clone(),
                request_id: request_id.clone(),
                begun,
                left: route.retry.resumes,
            });
            let mode = if view.stream {
                Mode::Stream(resumable.as_ref())
            } else {
                Mode::Complete(structured.as_ref())
            };
            let mut waiting =
                crate::capacity::Waiting::new(&self.capacity, self.config.limits.queue, begun);
            // The gateway's and the route's concurrency caps: held until
            // the record completes (a stream's end), waited for in the queue.
            loop {
                match self.request_slots(route) {
                    Ok(slots) => {
                        if let Some(r) = rec.record() {
                            r.slots = slots;
                        }
                    }
                    Err(full) => {
                        // A client key at its limit gets its 429 now, not
                        // after a wait for a place.
                        if let Some((c, tokens)) = rec.record().and_then(|r| r.caller_due.take()) {
                            self.caller_limits(&c, tokens, rec).await?;
                        }
                        let waited = Instant::now();
                        let placed = waiting.wait(priority, None).await;
                        if let Some(r) = rec.record() {
                            r.queue_wait += waited.elapsed();
                        }
                        if placed.is_err() {
                            return Err(full);
                        }
                        continue;
                    }
                }
                let attempts = match self
                    .serve_chain(&chain, &summary, &request, mode, &request_id, begun, rec)
                    .await?
                {
                    Ok(Served::Answer(answer, pump)) => {
                        if let Some(pump) = pump {
                            pump.spawn();
                        }
                        if let Answer::Complete {
                            deployment, body, ..
                        } = &answer
                        {
                            cached::store_complete(rec, deployment, body);
                        }
                        return Ok(answer);
                    }
                    Ok(Served::Resumed(_)) => {
                        unreachable!("only a stream's pump asks for a resumed leg")
                    }
                    Err(attempts) => attempts,
                };
                // No deployment check carried the client key's windows (no
                // candidate got that far): checked on their own.
                if let Some((c, tokens)) = rec.record().and_then(|r| r.caller_due.take()) {
                    self.caller_limits(&c, tokens, rec).await?;
                }
                // Every candidate was held back (limits, cooling keys,
                // caps): wait for one to free up, then try again.
                if crate::failover::may_free_up(&attempts) {
                    // A waiting request holds no place under the gateway's
                    // or the route's cap (others may use them meanwhile);
                    // given back quietly: waking the queue would wake itself.
                    if let Some(r) = rec.record() {
                        r.slots
                            .drain(..)
                            .for_each(crate::capacity::Slot::give_back_quietly);
                    }
                    let until = crate::failover::held_back_for(&attempts);
                    let waited = Instant::now();
                    let freed = waiting.wait(priority, until).await;
                    if let Some(r) = rec.record() {
                        r.queue_wait += waited.elapsed();
                    }
                    if freed.is_ok() {
                        continue;
                    }
                }
                // 5. Every candidate failed (or none could serve the request).
                return Err(nothing_served(&chain[0].0.name, attempts, &summary, rec));
            }
        }
        .instrument(span);
        // Boxed: the serving future (the chain, its attempts, their plugin
        // calls) is ~6 KB, and every future that awaits it holds it inline
        // and is moved whole when awaited in turn; boxed here, the handler's
        // futures above it stay small (~40 KB less copied per request).
        match tokio::time::timeout_at(deadline.into(), Box::pin(served)).await {
            Ok(answer) => answer.map(|a| (a, cache)),
            Err(_) => {
                tracing::warn!(request_id = %request_id, model = %route.name,
                    ms = limit.as_millis() as u64, "request deadline passed");
                Err(ApiError::DeadlineExceeded {
                    ms: limit.as_millis() as u64,
                })
            }
        }
    }
}

/// The error for a request no candidate served: none could (capabilities,
/// spent deployment budgets), or every one failed.
fn nothing_served(
    model: &str,
    attempts: Vec<crate::failover::Attempt>,
    summary: &crate::domain::RequestSummary,
    rec: &mut Recorder,
) -> ApiError {
    if !attempts.is_empty() {
        return ApiError::AllFailed {
            model: model.to_string(),
            attempts,
        };
    }
    let blocked = rec
        .record()
        .and_then(|r| r.reservation.as_ref())
        .map(|h| h.blocked_deployments.join(", "))
        .unwrap_or_default();
    let reason = if blocked.is_empty() {
        format!(
            "none of its deployments (or none the strategy chose) supports everything the request needs: {}",
            summary.needs.names()
        )
    } else {
        format!(
            "its deployments that could serve it are out until their budget's window ends (spent deployment budgets: {blocked}), or do not support everything the request needs: {}",
            summary.needs.names()
        )
    };
    ApiError::NoCandidate {
        model: model.to_string(),
        reason,
    }
}

/// The part of a requested model a wildcard route matched becomes part of
/// an upstream model name, which some adapters put in a URL path: only the
/// characters model names use, and no `..` segment.
fn check_wildcard_rest(rest: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:/@+-".contains(c);
    if rest.len() > 256 || !rest.chars().all(allowed) || rest.split('/').any(|s| s == "..") {
        return Err(ApiError::BadRequest(format!(
            "model name part {rest:?}: after a wildcard route's prefix, a model name may hold letters, digits and . _ : / @ + - (no `..` segment)"
        )));
    }
    Ok(())
}

/// What a request already tried, across its routes.
#[derive(Default)]
struct Tried {
    /// Deployment and upstream model.
    targets: Vec<Arc<Target>>,
    unsupported_adapters: Vec<String>,
    /// The largest configured context window that refused the request as
    /// too long: deployments with no larger one are not tried.
    too_long_for: Option<(u32, String)>,
    /// A deployment whose short Retry-After the request did not wait out
    /// (`retry.others_first`): its route's index in the chain, the target,
    /// and when it may be asked again, if nothing else serves the request.
    come_back: Option<(usize, Arc<Target>, std::time::Instant)>,
    /// The chain is being walked again for `come_back`.
    came_back: bool,
    /// The index in the chain of the route being served.
    route_index: usize,
}

/// The request text without one top-level member (a gateway parameter that
/// must not reach the upstream).
fn without_member(text: &str, name: &str) -> Result<String, ApiError> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;
    /// The members in order, values as written (nothing is re-encoded).
    struct Members<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);
    impl<'de> serde::Deserialize<'de> for Members<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        out.push(entry);
                    }
                    Ok(Members(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    let members: Members = serde_json::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("invalid chat request body: {e}")))?;
    let mut out = String::with_capacity(text.len());
    out.push('{');
    for (key, value) in members.0.iter().filter(|(k, _)| k != name) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_gateway_member_is_cut_and_the_rest_kept_as_written() {
        let text = r#"{"model":"m","fallbacks":null,"n":123456789012345678901234567890,"z":{"a":[1, 2]},"fallbacks":["x"]}"#;
        assert_eq!(
            super::without_member(text, "fallbacks").unwrap(),
            r#"{"model":"m","n":123456789012345678901234567890,"z":{"a":[1, 2]}}"#
        );
    }
}
