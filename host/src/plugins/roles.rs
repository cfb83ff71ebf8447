//! Typed calls for each plugin role. The pipeline calls these; they check the
//! plugin's kind, run the call under its deadline and turn a guest's own error
//! into a [`PluginError::Guest`].

use std::sync::Arc;

use wasmtime::component::ResourceAny;

use super::bindings::{adapter, evaluator, strategy};
use super::instance::{self, Exports, Slot};
use super::{Kind, Plugin, PluginError};

impl Plugin {
    /// Strategy: the order in which to try `candidates` (indices into it).
    pub fn order(
        &self,
        request_id: &Arc<str>,
        request: &strategy::RequestSummary,
        candidates: &[strategy::Candidate],
    ) -> Result<Vec<u32>, PluginError> {
        let result = self.call(request_id, |store, exports| match exports {
            Exports::Strategy(g) => g.call_order(store, request, candidates).map(Some),
            _ => Ok(None),
        })?;
        self.guest(result.ok_or_else(|| self.wrong_kind(Kind::Strategy))?)
    }

    /// Evaluator: a verdict on a final answer.
    pub fn evaluate(
        &self,
        request_id: &Arc<str>,
        request: &str,
        response: &str,
    ) -> Result<evaluator::Verdict, PluginError> {
        let result = self.call(request_id, |store, exports| match exports {
            Exports::Evaluator(g) => g.call_evaluate(store, request, response).map(Some),
            _ => Ok(None),
        })?;
        self.guest(result.ok_or_else(|| self.wrong_kind(Kind::Evaluator))?)
    }

    /// Adapter: the upstream request for a canonical request.
    pub fn build_request(
        &self,
        request_id: &Arc<str>,
        target: &adapter::Target,
        request: &str,
    ) -> Result<adapter::HttpRequest, PluginError> {
        let result = self.call(request_id, |store, exports| match exports {
            Exports::Adapter(g) => g.call_build_request(store, target, request).map(Some),
            _ => Ok(None),
        })?;
        self.guest(result.ok_or_else(|| self.wrong_kind(Kind::Adapter))?)
    }

    /// Adapter: a 2xx upstream response to a canonical answer, or the
    /// upstream error it really was.
    pub fn parse_response(
        &self,
        request_id: &Arc<str>,
        target: &adapter::Target,
        response: &adapter::HttpResponse,
    ) -> Result<Result<adapter::ChatResponse, adapter::UpstreamError>, PluginError> {
        self.call(request_id, |store, exports| match exports {
            Exports::Adapter(g) => g.call_parse_response(store, target, response).map(Some),
            _ => Ok(None),
        })?
        .ok_or_else(|| self.wrong_kind(Kind::Adapter))
    }

    /// Adapter: the class of a non-2xx upstream response.
    pub fn classify_error(
        &self,
        request_id: &Arc<str>,
        response: &adapter::HttpResponse,
    ) -> Result<adapter::UpstreamError, PluginError> {
        self.call(request_id, |store, exports| match exports {
            Exports::Adapter(g) => g.call_classify_error(store, response).map(Some),
            _ => Ok(None),
        })?
        .ok_or_else(|| self.wrong_kind(Kind::Adapter))
    }

    /// Adapter: a stateful parser for one upstream stream. It holds one
    /// instance for the stream's lifetime (its state lives in that instance).
    pub fn open_stream(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        target: &adapter::Target,
        request: &str,
    ) -> Result<StreamSession, PluginError> {
        if self.kind != Kind::Adapter {
            return Err(self.wrong_kind(Kind::Adapter));
        }
        self.pool.begin_stream()?;
        let mut slot = match self.pool.take() {
            Ok(slot) => slot,
            Err(e) => {
                self.pool.end_stream();
                return Err(e);
            }
        };
        let made = instance::run(
            &mut slot,
            &self.pool,
            request_id,
            self.deadline_ms,
            |store, exports| match exports {
                Exports::Adapter(g) => g.stream_parser().call_constructor(store, target, request),
                _ => unreachable!("kind checked above"),
            },
        );
        match made {
            Ok(handle) => Ok(StreamSession {
                plugin: self.clone(),
                slot: Some(slot),
                handle,
                request_id: request_id.clone(),
            }),
            Err(e) => {
                self.finish(slot, false);
                self.pool.end_stream();
                Err(e)
            }
        }
    }

    fn guest<T>(&self, result: Result<T, String>) -> Result<T, PluginError> {
        result.map_err(|message| PluginError::Guest {
            plugin: self.id.to_string(),
            message,
        })
    }
}

/// One upstream stream being parsed by an adapter instance.
pub struct StreamSession {
    plugin: Arc<Plugin>,
    /// `None` once the instance trapped.
    slot: Option<Slot>,
    handle: ResourceAny,
    request_id: Arc<str>,
}

type StreamResult = Result<Result<adapter::ChunkBatch, adapter::UpstreamError>, PluginError>;

impl StreamSession {
    /// Bytes of the upstream body, split anywhere.
    pub fn feed(&mut self, bytes: &[u8]) -> StreamResult {
        let handle = self.handle;
        self.with(|store, g| g.stream_parser().call_feed(store, handle, bytes))
    }

    /// The upstream closed the body.
    pub fn finish(&mut self) -> StreamResult {
        let handle = self.handle;
        self.with(|store, g| g.stream_parser().call_finish(store, handle))
    }

    fn with(
        &mut self,
        call: impl FnOnce(
            &mut wasmtime::Store<instance::HostState>,
            &adapter::Guest,
        )
            -> wasmtime::Result<Result<adapter::ChunkBatch, adapter::UpstreamError>>,
    ) -> StreamResult {
        let plugin = &self.plugin;
        let Some(slot) = self.slot.as_mut() else {
            return Err(PluginError::Trap {
                plugin: plugin.id.to_string(),
                message: "the stream parser's instance trapped earlier".into(),
            });
        };
        let result = instance::run(
            slot,
            &plugin.pool,
            &self.request_id,
            plugin.deadline_ms,
            |store, exports| match exports {
                Exports::Adapter(g) => call(store, g),
                _ => unreachable!("stream sessions are opened on adapters only"),
            },
        );
        if result.is_err()
            && let Some(slot) = self.slot.take()
        {
            plugin.finish(slot, false);
        }
        result
    }
}

impl Drop for StreamSession {
    /// Frees the guest's parser and returns the instance to the pool.
    fn drop(&mut self) {
        self.plugin.pool.end_stream();
        if let Some(mut slot) = self.slot.take() {
            let handle = self.handle;
            let dropped = instance::run(
                &mut slot,
                &self.plugin.pool,
                &self.request_id,
                self.plugin.deadline_ms,
                |store, _| handle.resource_drop(store),
            );
            self.plugin.finish(slot, dropped.is_ok());
        }
    }
}
