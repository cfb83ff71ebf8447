//! Adapter for Anthropic's Messages API (`POST /v1/messages`).
//!
//! A deployment's base URL includes the version prefix
//! (`https://api.anthropic.com/v1`). The key goes in `x-api-key`, and every
//! request names the API version it was written against
//! (`anthropic-version`), so a change on Anthropic's side cannot silently
//! change what the gateway receives. Quota comes from the
//! `anthropic-ratelimit-*` headers (the SDK reads them) and errors are
//! classified by the SDK's shared rules, which know Anthropic's error types
//! (`overloaded_error` and 529 as overloaded, "prompt is too long" as
//! context length).
//!
//! A final assistant message in the request is sent as a prefill: the model
//! continues it, which is what the gateway's mid-stream resume relies on.

mod read;
mod request;
mod response;
mod stream;
mod write;

use switchyard_sdk::canonical::ChatRequest;
use switchyard_sdk::{
    Adapter, AuthScheme, BuildError, ChatResponse, HttpRequest, HttpResponse, Metadata, Target,
    UpstreamError, errors, export_adapter,
};

/// The Messages API version this adapter speaks.
pub const API_VERSION: &str = "2023-06-01";

struct Anthropic;

impl Adapter for Anthropic {
    type Stream = stream::Stream;

    /// Headers are read only through the SDK's helpers (quota, retry
    /// delays, `Date`): the host passes no others.
    fn response_headers() -> Option<Vec<String>> {
        switchyard_sdk::read_by_sdk_and(&[])
    }

    fn metadata() -> Metadata {
        Metadata::new(
            "anthropic",
            env!("CARGO_PKG_VERSION"),
            &["streaming", "tools", "json", "vision", "prefill"],
        )
    }

    fn auth() -> AuthScheme {
        AuthScheme::Header("x-api-key".into())
    }

    fn build_request(target: &Target, request: &str) -> Result<HttpRequest, BuildError> {
        let request = ChatRequest::parse(request)?;
        let body = request::build(&target.model, &request)?;
        Ok(HttpRequest::post_json("/messages", body).with_header("anthropic-version", API_VERSION))
    }

    fn parse_response(
        target: &Target,
        response: &HttpResponse,
    ) -> Result<ChatResponse, UpstreamError> {
        let (body, usage) = response::parse(&target.deployment, &response.headers, &response.body)?;
        Ok(ChatResponse::new(body, usage))
    }

    fn classify_error(response: &HttpResponse) -> UpstreamError {
        errors::classify(response.status, &response.headers, &response.body)
    }
}

export_adapter!(Anthropic);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

#[cfg(test)]
mod tests;
