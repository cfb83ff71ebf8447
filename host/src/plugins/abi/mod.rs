//! The plugin ABI edge: one module per supported WIT version
//! (`switchyard:plugin@0.1.0` frozen, `@0.2.0` in progress), each holding its
//! generated bindings and the conversions to and from the host's own types.
//! Nothing outside this folder names generated bindings: the rest of the
//! runtime sees [`Exports`] and [`crate::domain`] types.

/// The conversions of a strategy's arguments into a WIT version's bindings,
/// for versions whose request summary and capabilities are the same (a
/// candidate differs: each version converts its own): written once, expanded in
/// each version module with its own generated `strategy` module. Bindings of
/// export parameters borrow (`ownership: Borrowing`): the host's values are
/// lowered into the guest straight from where they are, with no copy.
macro_rules! strategy_conversions {
    ($s:ident) => {
        /// The summary's bindings; `tags` is [`super::strs`] of its tags.
        fn summary<'a>(
            r: &'a domain::RequestSummary,
            tags: &'a [&'a str],
        ) -> $s::RequestSummary<'a> {
            $s::RequestSummary {
                model: &r.model,
                input_tokens: r.input_tokens,
                max_output_tokens: r.max_output_tokens,
                stream: r.stream,
                needs: capabilities(r.needs),
                priority: match r.priority {
                    domain::TaskPriority::Low => $s::TaskPriority::Low,
                    domain::TaskPriority::Normal => $s::TaskPriority::Normal,
                    domain::TaskPriority::High => $s::TaskPriority::High,
                    domain::TaskPriority::Critical => $s::TaskPriority::Critical,
                },
                tags,
            }
        }

        fn capabilities(c: domain::Capabilities) -> $s::Capabilities {
            let mut out = $s::Capabilities::empty();
            for (host, wit) in [
                (domain::Capabilities::TOOLS, $s::Capabilities::TOOLS),
                (domain::Capabilities::JSON_MODE, $s::Capabilities::JSON_MODE),
                (domain::Capabilities::VISION, $s::Capabilities::VISION),
                (domain::Capabilities::STREAMING, $s::Capabilities::STREAMING),
            ] {
                if c.contains(host) {
                    out |= wit;
                }
            }
            out
        }
    };
}
pub(crate) use strategy_conversions;

/// The conversions of an adapter's arguments into a WIT version's bindings,
/// for versions whose `target` is the same (borrowed,
/// as [`strategy_conversions`]).
macro_rules! adapter_conversions {
    ($a:ident) => {
        impl<'a> From<&'a domain::Target> for $a::Target<'a> {
            fn from(t: &'a domain::Target) -> Self {
                Self {
                    deployment: &t.deployment,
                    model: &t.model,
                }
            }
        }
    };
}
pub(crate) use adapter_conversions;

/// Borrowed views of owned strings, for bindings whose lists borrow.
pub(crate) fn strs(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

pub mod v0_1;
pub mod v0_2;

use wasmtime::Store;
use wasmtime::component::{Component, Instance, InstancePre, Linker, ResourceAny};

use super::LoadError;
use super::host_api::HostState;
use crate::domain::{self, Kind, WitVersion};

/// The versions this host loads, oldest first.
pub const SUPPORTED: [WitVersion; 2] = [WitVersion::V0_1, WitVersion::V0_2];

/// Links the host interface of every supported version.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker(linker)?;
    v0_2::add_to_linker(linker)
}

/// Which WIT version and plugin kind a component exports. Exactly one plugin
/// interface is allowed; an interface of an unsupported version is named.
pub fn identify(
    engine: &wasmtime::Engine,
    component: &Component,
) -> Result<(WitVersion, Kind), LoadError> {
    let ty = component.component_type();
    let mut found = Vec::new();
    let mut unsupported = Vec::new();
    for (name, _) in ty.exports(engine) {
        let known = v0_1::EXPORTS
            .iter()
            .map(|(n, k)| (*n, *k, WitVersion::V0_1))
            .chain(
                v0_2::EXPORTS
                    .iter()
                    .map(|(n, k)| (*n, *k, WitVersion::V0_2)),
            )
            .find(|(n, _, _)| *n == name);
        match known {
            Some((_, kind, version)) => found.push((version, kind)),
            None if name.starts_with("switchyard:plugin/") => unsupported.push(name.to_string()),
            None => {}
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] if !unsupported.is_empty() => Err(LoadError::UnsupportedVersion(unsupported.join(", "))),
        [] => Err(LoadError::NoPluginExport),
        several => Err(LoadError::SeveralPluginExports(
            several
                .iter()
                .map(|(v, k)| format!("{k}@{v}"))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Export lookups of one component, done once when it is loaded.
pub enum Indices {
    V0_1(v0_1::Indices),
    V0_2(v0_2::Indices),
}

impl Indices {
    pub fn new(
        version: WitVersion,
        kind: Kind,
        pre: &InstancePre<HostState>,
    ) -> wasmtime::Result<Self> {
        Ok(match version {
            WitVersion::V0_1 => Self::V0_1(v0_1::Indices::new(kind, pre)?),
            WitVersion::V0_2 => Self::V0_2(v0_2::Indices::new(kind, pre)?),
        })
    }

    pub fn load(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<Exports> {
        Ok(match self {
            Self::V0_1(i) => Exports::V0_1(i.load(store, instance)?),
            Self::V0_2(i) => Exports::V0_2(i.load(store, instance)?),
        })
    }
}

/// The typed exports of one live instance, whatever its WIT version.
pub enum Exports {
    V0_1(v0_1::Exports),
    V0_2(v0_2::Exports),
}

type Guest<T> = wasmtime::Result<T>;

/// Calls the same method on whichever version the instance speaks.
macro_rules! both {
    ($self:ident, $method:ident ( $($arg:expr),* )) => {
        match $self {
            Exports::V0_1(e) => e.$method($($arg),*).await,
            Exports::V0_2(e) => e.$method($($arg),*).await,
        }
    };
}

impl Exports {
    pub fn kind(&self) -> Kind {
        match self {
            Exports::V0_1(e) => e.kind(),
            Exports::V0_2(e) => e.kind(),
        }
    }

    /// The plugin's metadata, and the kind it declares where its version
    /// restates it (v0.1).
    pub async fn metadata(
        &self,
        store: &mut Store<HostState>,
    ) -> Guest<(domain::Metadata, Option<Kind>)> {
        match self {
            Exports::V0_1(e) => e.metadata(store).await.map(|(m, k)| (m, Some(k))),
            Exports::V0_2(e) => e.metadata(store).await.map(|m| (m, None)),
        }
    }

    pub async fn order(
        &self,
        store: &mut Store<HostState>,
        request: &domain::RequestSummary,
        candidates: &[domain::Candidate],
    ) -> Guest<Option<Result<Vec<u32>, String>>> {
        both!(self, order(store, request, candidates))
    }

    pub async fn evaluate(
        &self,
        store: &mut Store<HostState>,
        request: &str,
        response: &str,
    ) -> Guest<Option<Result<domain::Verdict, String>>> {
        both!(self, evaluate(store, request, response))
    }

    pub async fn build_request(
        &self,
        store: &mut Store<HostState>,
        target: &domain::Target,
        request: &str,
    ) -> Guest<Option<Result<domain::UpstreamRequest, domain::BuildError>>> {
        both!(self, build_request(store, target, request))
    }

    pub async fn parse_response(
        &self,
        store: &mut Store<HostState>,
        target: &domain::Target,
        response: &domain::UpstreamResponse,
    ) -> Guest<Option<Result<domain::ChatResponse, domain::UpstreamError>>> {
        both!(self, parse_response(store, target, response))
    }

    pub async fn classify_error(
        &self,
        store: &mut Store<HostState>,
        response: &domain::UpstreamResponse,
    ) -> Guest<Option<domain::UpstreamError>> {
        both!(self, classify_error(store, response))
    }

    /// v0.2 streams: the initial parser state. `None` for other kinds and versions.
    pub async fn begin_stream(
        &self,
        store: &mut Store<HostState>,
        target: &domain::Target,
        request: &str,
        headers: &domain::HeaderBlock,
    ) -> Guest<Option<Result<(Vec<u8>, Option<domain::QuotaHint>), domain::UpstreamError>>> {
        match self {
            Exports::V0_2(e) => e.begin_stream(store, target, request, headers).await,
            Exports::V0_1(_) => Ok(None),
        }
    }

    /// v0.2 streams: whole events (`Some`) or the end of the body (`None`);
    /// the new state, or `None` when it did not change.
    pub async fn stream_step(
        &self,
        store: &mut Store<HostState>,
        state: &[u8],
        events: Option<&domain::StreamEvents>,
    ) -> Guest<Option<Result<(domain::StreamBatch, Option<Vec<u8>>), domain::UpstreamError>>> {
        match (self, events) {
            (Exports::V0_2(e), Some(events)) => e.parse_stream(store, state, events).await,
            (Exports::V0_2(e), None) => e.end_stream(store, state).await,
            (Exports::V0_1(_), _) => Ok(None),
        }
    }

    /// v0.1 streams: creates the parser resource in this instance.
    pub async fn open_parser(
        &self,
        store: &mut Store<HostState>,
        target: &domain::Target,
        request: &str,
    ) -> Guest<Option<ResourceAny>> {
        match self {
            Exports::V0_1(e) => e.open_parser(store, target, request).await,
            Exports::V0_2(_) => Ok(None),
        }
    }

    /// v0.1 streams: raw bytes (`Some`) or the end of the body (`None`).
    pub async fn feed_parser(
        &self,
        store: &mut Store<HostState>,
        parser: ResourceAny,
        bytes: Option<&[u8]>,
    ) -> Guest<Option<Result<domain::StreamBatch, domain::UpstreamError>>> {
        match self {
            Exports::V0_1(e) => e.feed_parser(store, parser, bytes).await,
            Exports::V0_2(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// `switchyard:plugin@0.1.0` is released: its text must never change
    /// (plugins built against it must keep loading). A change belongs in a
    /// new version folder.
    #[test]
    fn released_wit_is_frozen() {
        let text = include_bytes!("../../../../wit/v0.1/plugin.wit");
        let hash: String = Sha256::digest(text)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hash, "4c199aa80e78f98e278cff8f91630eec93e03e02291cdcbe46218a4baf075e39",
            "wit/v0.1/plugin.wit changed; released WIT versions are frozen"
        );
    }
}
