//! Typed calls for each plugin role. The pipeline calls these with the host's
//! own types; they run through [`Plugin::call`] (deadline, inline or
//! offloaded, quarantine) and turn a guest's own error into
//! [`PluginError::Guest`].

use std::sync::Arc;

use super::call::call;
use super::{Plugin, PluginError};
use crate::domain::{
    BuildError, Candidate, ChatResponse, Kind, Metadata, RequestSummary, Target, UpstreamError,
    UpstreamRequest, UpstreamResponse, Verdict,
};

call!(GetMetadata {} -> (Metadata, Option<Kind>) = |_s, store, exports| exports.metadata(store).await.map(Some));
call!(Order { request: RequestSummary, candidates: Vec<Candidate> } -> Result<Vec<u32>, String> =
    |s, store, exports| exports.order(store, &s.request, &s.candidates).await);
call!(Evaluate { request: Arc<str>, response: Arc<str> } -> Result<Verdict, String> =
    |s, store, exports| exports.evaluate(store, &s.request, &s.response).await);
call!(BuildRequest { target: Arc<Target>, request: Arc<str> } -> Result<UpstreamRequest, BuildError> =
    |s, store, exports| exports.build_request(store, &s.target, &s.request).await);
call!(ParseResponse { target: Arc<Target>, response: UpstreamResponse } -> Result<ChatResponse, UpstreamError> =
    |s, store, exports| exports.parse_response(store, &s.target, &s.response).await);
call!(ClassifyError { response: UpstreamResponse } -> UpstreamError =
    |s, store, exports| exports.classify_error(store, &s.response).await);

impl Plugin {
    /// Strategy: the order in which to try `candidates` (indices into it).
    pub async fn order(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        request: RequestSummary,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<u32>, PluginError> {
        self.expect(Kind::Strategy)?;
        let result = self
            .call(
                request_id,
                Order {
                    request,
                    candidates,
                },
            )
            .await?;
        self.guest(result)
    }

    /// Evaluator: a verdict on a final answer.
    pub async fn evaluate(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        request: Arc<str>,
        response: Arc<str>,
    ) -> Result<Verdict, PluginError> {
        self.expect(Kind::Evaluator)?;
        let result = self
            .call(request_id, Evaluate { request, response })
            .await?;
        self.guest(result)
    }

    /// Adapter: the upstream request for a canonical request, or why this
    /// provider cannot serve it.
    pub async fn build_request(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        target: &Arc<Target>,
        request: &Arc<str>,
    ) -> Result<Result<UpstreamRequest, BuildError>, PluginError> {
        self.expect(Kind::Adapter)?;
        let call = BuildRequest {
            target: target.clone(),
            request: request.clone(),
        };
        self.call(request_id, call).await
    }

    /// Adapter: a 2xx upstream response to a canonical answer, or the
    /// upstream error it really was.
    pub async fn parse_response(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        target: &Arc<Target>,
        response: UpstreamResponse,
    ) -> Result<Result<ChatResponse, UpstreamError>, PluginError> {
        self.expect(Kind::Adapter)?;
        let call = ParseResponse {
            target: target.clone(),
            response,
        };
        self.call(request_id, call).await
    }

    /// Adapter: the class of a non-2xx upstream response.
    pub async fn classify_error(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        response: UpstreamResponse,
    ) -> Result<UpstreamError, PluginError> {
        self.expect(Kind::Adapter)?;
        self.call(request_id, ClassifyError { response }).await
    }

    /// Asks the plugin who it is, under a generous budget (the first call
    /// also instantiates, which takes milliseconds for Python or JavaScript).
    pub(crate) async fn fetch_metadata(
        self: &Arc<Self>,
    ) -> Result<(Metadata, Option<Kind>), PluginError> {
        let (metadata, kind) = self
            .call_with_deadline(&Arc::from("load"), GetMetadata {}, super::LOAD_BUDGET)
            .await?;
        if let Some(names) = &metadata.response_headers {
            check_header_names(names).map_err(|message| PluginError::BadOutput {
                plugin: self.id.to_string(),
                message: format!("adapter-metadata.response-headers: {message}"),
            })?;
        }
        Ok((metadata, kind))
    }

    fn expect(&self, kind: Kind) -> Result<(), PluginError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(PluginError::WrongKind {
                plugin: self.id.to_string(),
                expected: Some(kind),
                actual: self.kind,
            })
        }
    }

    fn guest<T>(&self, result: Result<T, String>) -> Result<T, PluginError> {
        result.map_err(|message| PluginError::Guest {
            plugin: self.id.to_string(),
            message,
        })
    }
}

/// Most response-header names or prefixes an adapter may declare: every
/// answer is checked against the list, so it must stay short.
pub const MAX_HEADER_NAMES: usize = 64;

/// An adapter's declared response headers: at most [`MAX_HEADER_NAMES`],
/// each a header name (or a prefix of one ending in `-`) of 1 to 128
/// token characters.
fn check_header_names(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_HEADER_NAMES {
        return Err(format!("{} names, at most {MAX_HEADER_NAMES}", names.len()));
    }
    for name in names {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || name.len() > 128 || !name.bytes().all(token) {
            return Err(format!(
                "{name:?} is not a header name (1 to 128 token characters)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_header_names_are_bounded_and_well_formed() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_header_names(&names(&["date", "x-ratelimit-", "retry-after"])).is_ok());
        assert!(check_header_names(&[]).is_ok());
        for bad in ["", "date ", "x:y", "caf\u{e9}"] {
            let e = check_header_names(&names(&[bad])).unwrap_err();
            assert!(e.contains("is not a header name"), "{bad:?}: {e}");
        }
        let long = vec!["a".to_string(); MAX_HEADER_NAMES + 1];
        assert_eq!(
            check_header_names(&long).unwrap_err(),
            "65 names, at most 64"
        );
        assert!(check_header_names(&["a".repeat(129)]).is_err());
    }
}
