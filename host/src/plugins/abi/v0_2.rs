//! `switchyard:plugin@0.2.0` (in progress): its generated bindings and the
//! conversions between them and the host's own types ([`crate::domain`]).
//! No other module names these bindings.

use wasmtime::Store;
use wasmtime::component::{Func, Instance, InstancePre, TypedFunc};

use super::super::host_api::HostState;
use crate::domain::{self, Kind};

wasmtime::component::bindgen!({
    path: "../wit/v0.2",
    world: "host-view",
    exports: { default: async },
    ownership: Borrowing { duplicate_if_necessary: true },
});

use exports::switchyard::plugin::{adapter, evaluator, strategy};

mod candidates;
use candidates::Lowered;
use switchyard::plugin::{host, types};

/// The fully qualified export names, by kind.
pub const EXPORTS: [(&str, Kind); 3] = [
    ("switchyard:plugin/adapter@0.2.0", Kind::Adapter),
    ("switchyard:plugin/strategy@0.2.0", Kind::Strategy),
    ("switchyard:plugin/evaluator@0.2.0", Kind::Evaluator),
];

pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    HostView::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(linker, |s| s)
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        self.log(level.into(), message);
    }
    fn monotonic_now(&mut self) -> u64 {
        self.monotonic_now()
    }
    fn plugin_config(&mut self) -> String {
        self.plugin_config()
    }
    fn counter_next(&mut self, name: String) -> Result<u64, String> {
        self.counter_next(&name)
    }
    fn random_u64(&mut self) -> u64 {
        self.random_u64()
    }
}

/// The typed exports of one instance.
pub enum Exports {
    Adapter(adapter::Guest),
    /// With `order` typed for [`Lowered`] candidates (checked at load).
    Strategy(strategy::Guest, Func),
    Evaluator(evaluator::Guest),
}

/// Export lookups done once per component.
pub enum Indices {
    Adapter(adapter::GuestIndices),
    Strategy(strategy::GuestIndices),
    Evaluator(evaluator::GuestIndices),
}

impl Indices {
    pub fn new(kind: Kind, pre: &InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(match kind {
            Kind::Adapter => Self::Adapter(adapter::GuestIndices::new(pre)?),
            Kind::Strategy => Self::Strategy(strategy::GuestIndices::new(pre)?),
            Kind::Evaluator => Self::Evaluator(evaluator::GuestIndices::new(pre)?),
        })
    }

    pub fn load(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<Exports> {
        Ok(match self {
            Self::Adapter(i) => Exports::Adapter(i.load(store, instance)?),
            Self::Strategy(i) => {
                let g = i.load(&mut *store, instance)?;
                // Type-checked here, once per instance, so each call may
                // use it unchecked.
                let order = *g.func_order().func();
                order.typed::<OrderParams, OrderResults>(&*store)?;
                Exports::Strategy(g, order)
            }
            Self::Evaluator(i) => Exports::Evaluator(i.load(store, instance)?),
        })
    }
}

type Guest<T> = wasmtime::Result<T>;

/// `order`'s parameters, with candidates lowered by [`candidates`].
type OrderParams<'a> = (strategy::RequestSummary<'a>, &'a [Lowered]);
type OrderResults = (Result<Vec<u32>, String>,);

impl Exports {
    pub async fn metadata(&self, store: &mut Store<HostState>) -> Guest<domain::Metadata> {
        Ok(match self {
            Exports::Adapter(g) => g.call_metadata(store).await?.into(),
            Exports::Strategy(g, _) => g.call_metadata(store).await?.into(),
            Exports::Evaluator(g) => g.call_metadata(store).await?.into(),
        })
    }

    pub fn kind(&self) -> Kind {
        match self {
            Exports::Adapter(_) => Kind::Adapter,
            Exports::Strategy(..) => Kind::Strategy,
            Exports::Evaluator(_) => Kind::Evaluator,
        }
    }

    pub async fn order(
        &self,
        store: &mut Store<HostState>,
        request: &domain::RequestSummary,
        candidates: &[domain::Candidate],
    ) -> Guest<Option<Result<Vec<u32>, String>>> {
        let Exports::Strategy(_, order) = self else {
            return Ok(None);
        };
        let tags = super::strs(&request.tags);
        let request = summary(request, &tags);
        // SAFETY: `order` passed this very type check when it was loaded.
        #[allow(unsafe_code)]
        let order = unsafe { TypedFunc::<OrderParams, OrderResults>::new_unchecked(*order) };
        let (ranked,) = order
            .call_async(store, (request, Lowered::all(candidates)))
            .await?;
        Ok(Some(ranked))
    }

    pub async fn evaluate(
        &self,
        store: &mut Store<HostState>,
        request: &str,
        response: &str,
    ) -> Guest<Option<Result<domain::Verdict, String>>> {
        let Exports::Evaluator(g) = self else {
            return Ok(None);
        };
        let verdict = g.call_evaluate(store, request, response).await?;
        Ok(Some(verdict.map(|v| domain::Verdict {
            score: v.score,
            pass: v.pass,
            reasons: v.reasons,
        })))
    }

    pub async fn build_request(
        &self,
        store: &mut Store<HostState>,
        target: &domain::Target,
        request: &str,
    ) -> Guest<Option<Result<domain::UpstreamRequest, domain::BuildError>>> {
        let Exports::Adapter(g) = self else {
            return Ok(None);
        };
        let built = g.call_build_request(store, target.into(), request).await?;
        Ok(Some(match built {
            Ok(r) => Ok(domain::UpstreamRequest {
                method: r.method,
                path: r.path,
                headers: r.headers,
                body: r.body,
                auth: None,
            }),
            Err(adapter::BuildError::InvalidRequest(m)) => {
                Err(domain::BuildError::InvalidRequest(m))
            }
            Err(adapter::BuildError::Failed(m)) => Err(domain::BuildError::Failed(m)),
        }))
    }

    pub async fn parse_response(
        &self,
        store: &mut Store<HostState>,
        target: &domain::Target,
        response: &domain::UpstreamResponse,
    ) -> Guest<Option<Result<domain::ChatResponse, domain::UpstreamError>>> {
        let Exports::Adapter(g) = self else {
            return Ok(None);
        };
        let parsed = g
            .call_parse_response(store, target.into(), http_response(response))
            .await?;
        Ok(Some(match parsed {
            Ok(r) => Ok(domain::ChatResponse {
                body: r.body,
                usage: r.usage.map(Into::into),
                quota: r.quota.map(Into::into),
            }),
            Err(e) => Err(e.into()),
        }))
    }

    pub async fn classify_error(
        &self,
        store: &mut Store<HostState>,
        response: &domain::UpstreamResponse,
    ) -> Guest<Option<domain::UpstreamError>> {
        let Exports::Adapter(g) = self else {
            return Ok(None);
        };
        Ok(Some(
            g.call_classify_error(store, http_response(response))
                .await?
                .into(),
        ))
    }

    pub async fn begin_stream(
        &self,
        store: &mut Store<HostState>,
        target: &domain::Target,
        request: &str,
        headers: &domain::HeaderBlock,
    ) -> Guest<Option<Result<(Vec<u8>, Option<domain::QuotaHint>), domain::UpstreamError>>> {
        let Exports::Adapter(g) = self else {
            return Ok(None);
        };
        let started = g
            .call_begin_stream(store, target.into(), request, headers.as_str())
            .await?;
        Ok(Some(
            started
                .map(|s| (s.state, s.quota.map(Into::into)))
                .map_err(Into::into),
        ))
    }

    pub async fn parse_stream(
        &self,
        store: &mut Store<HostState>,
        state: &[u8],
        events: &domain::StreamEvents,
    ) -> Guest<Option<Result<(domain::StreamBatch, Option<Vec<u8>>), domain::UpstreamError>>> {
        let Exports::Adapter(g) = self else {
            return Ok(None);
        };
        let events = adapter::StreamEvents {
            text: &events.text,
            ends: &events.ends,
        };
        let step = g.call_parse_stream(store, state, events).await?;
        Ok(Some(step.map(step_parts).map_err(Into::into)))
    }

    pub async fn end_stream(
        &self,
        store: &mut Store<HostState>,
        state: &[u8],
    ) -> Guest<Option<Result<(domain::StreamBatch, Option<Vec<u8>>), domain::UpstreamError>>> {
        let Exports::Adapter(g) = self else {
            return Ok(None);
        };
        let step = g.call_end_stream(store, state).await?;
        Ok(Some(step.map(step_parts).map_err(Into::into)))
    }
}

/// A step's batch, and its new state (`None`: unchanged).
fn step_parts(s: adapter::StreamStep) -> (domain::StreamBatch, Option<Vec<u8>>) {
    (
        domain::StreamBatch {
            chunks: s.chunks,
            usage: s.usage.map(Into::into),
            done: s.done,
            malformed: s.malformed,
        },
        s.state,
    )
}

impl From<types::LogLevel> for domain::LogLevel {
    fn from(l: types::LogLevel) -> Self {
        match l {
            types::LogLevel::Trace => Self::Trace,
            types::LogLevel::Debug => Self::Debug,
            types::LogLevel::Info => Self::Info,
            types::LogLevel::Warn => Self::Warn,
            types::LogLevel::Error => Self::Error,
        }
    }
}

impl From<types::Metadata> for domain::Metadata {
    fn from(m: types::Metadata) -> Self {
        Self {
            name: m.name,
            version: m.version,
            capabilities: m.capabilities,
            auth: None,
            framing: domain::StreamFraming::Sse,
            response_headers: None,
        }
    }
}

impl From<adapter::AdapterMetadata> for domain::Metadata {
    fn from(m: adapter::AdapterMetadata) -> Self {
        Self {
            name: m.name,
            version: m.version,
            capabilities: m.capabilities,
            auth: Some(match m.auth {
                adapter::AuthScheme::None => domain::AuthScheme::None,
                adapter::AuthScheme::Bearer => domain::AuthScheme::Bearer,
                adapter::AuthScheme::Header(h) => domain::AuthScheme::Header(h),
                adapter::AuthScheme::Query(q) => domain::AuthScheme::Query(q),
            }),
            framing: match m.framing {
                adapter::StreamFraming::Sse => domain::StreamFraming::Sse,
                adapter::StreamFraming::Ndjson => domain::StreamFraming::Ndjson,
            },
            response_headers: m
                .response_headers
                .map(|names| names.into_iter().map(|n| n.to_ascii_lowercase()).collect()),
        }
    }
}

impl From<types::Usage> for domain::Usage {
    fn from(u: types::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_prompt_tokens: u.cached_prompt_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cache_write_tokens: u.cache_write_tokens,
        }
    }
}

impl From<adapter::QuotaHint> for domain::QuotaHint {
    fn from(q: adapter::QuotaHint) -> Self {
        Self {
            limit_requests: q.limit_requests,
            remaining_requests: q.remaining_requests,
            reset_requests_ms: q.reset_requests_ms,
            limit_tokens: q.limit_tokens,
            remaining_tokens: q.remaining_tokens,
            reset_tokens_ms: q.reset_tokens_ms,
        }
    }
}

impl From<adapter::UpstreamError> for domain::UpstreamError {
    fn from(e: adapter::UpstreamError) -> Self {
        use domain::ErrorClass as C;
        Self {
            class: match e.class {
                adapter::ErrorClass::RateLimited(ms) => C::RateLimited(ms),
                adapter::ErrorClass::Overloaded => C::Overloaded,
                adapter::ErrorClass::Timeout => C::Timeout,
                adapter::ErrorClass::ContextLengthExceeded => C::ContextLengthExceeded,
                adapter::ErrorClass::ContentFiltered => C::ContentFiltered,
                adapter::ErrorClass::Auth => C::Auth,
                adapter::ErrorClass::InvalidRequest => C::InvalidRequest,
                adapter::ErrorClass::Permanent => C::Permanent,
            },
            message: e.message,
            quota: e.quota.map(Into::into),
        }
    }
}

// Strategy arguments: the same WIT types in every version so far.
super::strategy_conversions!(strategy);
super::adapter_conversions!(adapter);

/// A response's bindings: 0.2 takes its headers as the block itself.
fn http_response(r: &domain::UpstreamResponse) -> adapter::HttpResponse<'_> {
    adapter::HttpResponse {
        status: r.status,
        headers: r.headers.as_str(),
        body: &r.body,
    }
}

impl<'a> From<&'a domain::Candidate> for strategy::Candidate<'a> {
    fn from(c: &'a domain::Candidate) -> Self {
        let r = &*c.recent;
        Self {
            deployment: &c.deployment,
            adapter: &c.adapter,
            healthy: c.healthy,
            headroom: c.headroom,
            in_flight: c.in_flight,
            error_rate: c.error_rate,
            latency_ms: c.latency_ms,
            input_cost_per_1m: c.input_cost_per_1m,
            output_cost_per_1m: c.output_cost_per_1m,
            cached_input_cost_per_1m: c.cached_input_cost_per_1m,
            priority: c.priority,
            weight: c.weight,
            quality: c.quality,
            supports: capabilities(c.supports),
            recent: strategy::WindowStats {
                attempts: r.attempts,
                requests_per_minute: r.requests_per_minute,
                success_rate: r.success_rate,
                latency_p50_ms: r.latency_p50_ms,
                latency_p95_ms: r.latency_p95_ms,
                latency_p99_ms: r.latency_p99_ms,
                ttft_p50_ms: r.ttft_p50_ms,
                ttft_p95_ms: r.ttft_p95_ms,
                output_tokens_per_second: r.output_tokens_per_second,
                errors: error_shares(&r.errors),
            },
        }
    }
}

/// `errors` as the WIT record, in the field order of [`candidates::shares`].
fn error_shares(errors: &[(&'static str, f32)]) -> strategy::ErrorShares {
    let s = candidates::shares(errors);
    strategy::ErrorShares {
        rate_limited: s[0],
        overloaded: s[1],
        timeout: s[2],
        connect: s[3],
        transport: s[4],
        auth: s[5],
        context_length_exceeded: s[6],
        content_filtered: s[7],
        permanent: s[8],
        plugin: s[9],
        other: s[10],
    }
}
