//! `switchyard:plugin@0.1.0` (stable, frozen): its generated bindings and the
//! conversions between them and the host's own types ([`crate::domain`]).
//! No other module names these bindings.
//!
//! What v0.1 lacks is filled in here once: usage has no cached or reasoning
//! tokens (0), answers carry no quota hint, `build-request` errors are
//! adapter faults, and the stream parser is a resource that lives in one
//! instance (so a v0.1 stream pins that instance until it ends).

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, ResourceAny};

use super::super::host_api::HostState;
use crate::domain::{self, Kind};

wasmtime::component::bindgen!({
    path: "../wit/v0.1",
    world: "host-view",
    exports: { default: async },
    ownership: Borrowing { duplicate_if_necessary: true },
});

use exports::switchyard::plugin::{adapter, evaluator, strategy};
use switchyard::plugin::{host, types};

/// The fully qualified export names, by kind.
pub const EXPORTS: [(&str, Kind); 3] = [
    ("switchyard:plugin/adapter@0.1.0", Kind::Adapter),
    ("switchyard:plugin/strategy@0.1.0", Kind::Strategy),
    ("switchyard:plugin/evaluator@0.1.0", Kind::Evaluator),
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
    /// v0.1 has no way to report the counter limits: over them, 0 (the
    /// refusal is logged by the host side).
    fn counter_next(&mut self, name: String) -> u64 {
        self.counter_next(&name).unwrap_or(0)
    }
}

/// The typed exports of one instance.
pub enum Exports {
    Adapter(adapter::Guest),
    Strategy(strategy::Guest),
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
            Self::Strategy(i) => Exports::Strategy(i.load(store, instance)?),
            Self::Evaluator(i) => Exports::Evaluator(i.load(store, instance)?),
        })
    }
}

type Guest<T> = wasmtime::Result<T>;

impl Exports {
    /// The metadata, and the kind it declares (v0.1 restates it).
    pub async fn metadata(&self, store: &mut Store<HostState>) -> Guest<(domain::Metadata, Kind)> {
        let m = match self {
            Exports::Adapter(g) => g.call_metadata(store).await?,
            Exports::Strategy(g) => g.call_metadata(store).await?,
            Exports::Evaluator(g) => g.call_metadata(store).await?,
        };
        let kind = match m.kind {
            types::PluginKind::Adapter => Kind::Adapter,
            types::PluginKind::Strategy => Kind::Strategy,
            types::PluginKind::Evaluator => Kind::Evaluator,
        };
        let framing = match self {
            Exports::Adapter(_) => domain::StreamFraming::Raw,
            _ => domain::StreamFraming::Sse,
        };
        Ok((
            domain::Metadata {
                name: m.name,
                version: m.version,
                capabilities: m.capabilities,
                auth: None,
                framing,
                response_headers: None,
            },
            kind,
        ))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Exports::Adapter(_) => Kind::Adapter,
            Exports::Strategy(_) => Kind::Strategy,
            Exports::Evaluator(_) => Kind::Evaluator,
        }
    }

    pub async fn order(
        &self,
        store: &mut Store<HostState>,
        request: &domain::RequestSummary,
        candidates: &[domain::Candidate],
    ) -> Guest<Option<Result<Vec<u32>, String>>> {
        let Exports::Strategy(g) = self else {
            return Ok(None);
        };
        let tags = super::strs(&request.tags);
        let request = summary(request, &tags);
        let candidates: Vec<strategy::Candidate> = candidates.iter().map(Into::into).collect();
        Ok(Some(g.call_order(store, request, &candidates).await?))
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
        Ok(Some(
            built
                .map(|r| domain::UpstreamRequest {
                    method: r.method,
                    path: r.path,
                    headers: r.headers,
                    body: r.body,
                    auth: Some(match r.auth {
                        adapter::AuthScheme::None => domain::AuthScheme::None,
                        adapter::AuthScheme::Bearer => domain::AuthScheme::Bearer,
                        adapter::AuthScheme::Header(h) => domain::AuthScheme::Header(h),
                        adapter::AuthScheme::Query(q) => domain::AuthScheme::Query(q),
                    }),
                })
                .map_err(domain::BuildError::Failed),
        ))
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
            .call_parse_response(
                store,
                target.into(),
                http_response(response, &response.headers.pairs().collect::<Vec<_>>()),
            )
            .await?;
        Ok(Some(match parsed {
            Ok(r) => Ok(domain::ChatResponse {
                body: r.body,
                usage: r.usage.map(Into::into),
                quota: None,
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
            g.call_classify_error(
                store,
                http_response(response, &response.headers.pairs().collect::<Vec<_>>()),
            )
            .await?
            .into(),
        ))
    }

    /// Creates the stream parser resource inside this instance.
    pub async fn open_parser(
        &self,
        store: &mut Store<HostState>,
        target: &domain::Target,
        request: &str,
    ) -> Guest<Option<ResourceAny>> {
        let Exports::Adapter(g) = self else {
            return Ok(None);
        };
        Ok(Some(
            g.stream_parser()
                .call_constructor(store, target.into(), request)
                .await?,
        ))
    }

    /// Feeds raw bytes (`Some`) or the end of the body (`None`) to a parser.
    pub async fn feed_parser(
        &self,
        store: &mut Store<HostState>,
        parser: ResourceAny,
        bytes: Option<&[u8]>,
    ) -> Guest<Option<Result<domain::StreamBatch, domain::UpstreamError>>> {
        let Exports::Adapter(g) = self else {
            return Ok(None);
        };
        let batch = match bytes {
            Some(bytes) => g.stream_parser().call_feed(store, parser, bytes).await?,
            None => g.stream_parser().call_finish(store, parser).await?,
        };
        Ok(Some(
            batch
                .map(|b| domain::StreamBatch {
                    chunks: b.chunks,
                    usage: b.usage.map(Into::into),
                    done: b.done,
                    malformed: 0,
                })
                .map_err(Into::into),
        ))
    }
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

impl From<types::Usage> for domain::Usage {
    fn from(u: types::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_prompt_tokens: 0,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
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
            quota: None,
        }
    }
}

// Strategy arguments: the same WIT types in every version so far.
super::strategy_conversions!(strategy);
super::adapter_conversions!(adapter);

/// A response's bindings: 0.1 takes its headers as a list of pairs
/// (`headers`, borrowed from the response's header block).
fn http_response<'a>(
    r: &'a domain::UpstreamResponse,
    headers: &'a [(&'a str, &'a str)],
) -> adapter::HttpResponse<'a> {
    adapter::HttpResponse {
        status: r.status,
        headers,
        body: &r.body,
    }
}

impl<'a> From<&'a domain::Candidate> for strategy::Candidate<'a> {
    /// v0.1 prices are per thousand tokens; it has no monitor figures.
    fn from(c: &'a domain::Candidate) -> Self {
        Self {
            deployment: &c.deployment,
            adapter: &c.adapter,
            healthy: c.healthy,
            headroom: c.headroom,
            in_flight: c.in_flight,
            error_rate: c.error_rate,
            latency_ms: c.latency_ms,
            input_cost_per_1k: c.input_cost_per_1m / 1000.0,
            output_cost_per_1k: c.output_cost_per_1m / 1000.0,
            priority: c.priority,
            weight: c.weight,
            quality: c.quality,
            supports: capabilities(c.supports),
        }
    }
}
