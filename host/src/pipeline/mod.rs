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
mod chat;
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
            streamed: false,
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

    /// Whether every deployment a request for `model` can reach, on its
    /// route and the route's fallbacks, is served by `adapter`: what lets a
    /// dialect's own members (Anthropic's prompt-cache marks) ride the
    /// canonical request without reaching a provider that refuses them.
    pub fn reaches_only(&self, model: &str, adapter: &str) -> bool {
        let Some((route, _)) = self.route_for(model) else {
            return false;
        };
        let served = |r: &Route| {
            !r.members.is_empty() && r.members.iter().all(|m| m.deployment.adapter == adapter)
        };
        served(route)
            && route
                .fallbacks
                .iter()
                .all(|f| self.route_for(f).is_some_and(|(r, _)| served(r)))
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
