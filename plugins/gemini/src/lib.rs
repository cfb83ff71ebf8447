//! Adapter for Google's Gemini API (the Generative Language API,
//! `generateContent`).
//!
//! A deployment's base URL includes the version,
//! `https://generativelanguage.googleapis.com/v1beta`, and its `model` is a
//! Gemini model id (`gemini-2.5-flash`) or resource name (`models/...`,
//! `tunedModels/...`). The key goes in the `x-goog-api-key` header, never in
//! the URL, where access logs would keep it.
//!
//! What is translated, and how:
//!
//! - **Requests** (`request`): system and developer messages become the
//!   system instruction; the conversation becomes `contents` (`assistant` →
//!   `model`, tool results → `functionResponse` parts of a `user` turn, named
//!   after the call they answer); images travel inline (`data:` URLs only:
//!   the sandbox fetches nothing); tools and JSON output keep the caller's
//!   JSON Schema as written; sampling options go to `generationConfig`.
//!   Whatever Gemini cannot do as asked is refused by name, a 400 the host
//!   reports with the deployment.
//! - **Answers** (`response`): one choice per candidate, text without
//!   thought summaries, function calls as tool calls, Gemini's finish reasons
//!   and token counts (thinking included) in canonical terms.
//! - **Streams** (`stream`): each event's new parts become chunks; the
//!   stream is complete when a finish reason arrived before the body closed.
//! - **Errors** (`error`): Google's `{"error": {"code", "message",
//!   "status"}}` is classified by the SDK's shared rules, as for every
//!   adapter, and a rate limit takes its retry delay from the body.
//!
//! Refused as the caller's 400, naming the field: log probabilities, logit
//! biases, audio and file parts, remote image URLs, `n > 1` with `stream`, a
//! seed beyond 32 bits, a tool result for a call that never happened, and any
//! member the canonical types do not name unless it is bookkeeping
//! (`metadata`, `store`, `service_tier`, ...).

use switchyard_sdk::{
    Adapter, AuthScheme, BuildError, ChatResponse, HttpRequest, HttpResponse, Metadata, Target,
    UpstreamError, export_adapter,
};

mod error;
mod request;
mod response;
mod stream;
mod wire;

/// The Gemini adapter.
pub struct Gemini;

/// Streams are server-sent events, the SDK's default framing.
impl Adapter for Gemini {
    type Stream = stream::Stream;

    /// Headers are read only through the SDK's helpers (quota, retry
    /// delays, `Date`): the host passes no others.
    fn response_headers() -> Option<Vec<String>> {
        switchyard_sdk::read_by_sdk_and(&[])
    }

    fn metadata() -> Metadata {
        Metadata::new(
            "gemini",
            env!("CARGO_PKG_VERSION"),
            &["streaming", "tools", "json", "vision"],
        )
    }

    fn auth() -> AuthScheme {
        AuthScheme::Header("x-goog-api-key".into())
    }

    fn build_request(target: &Target, request: &str) -> Result<HttpRequest, BuildError> {
        request::build(target, request)
    }

    fn parse_response(
        target: &Target,
        response: &HttpResponse,
    ) -> Result<ChatResponse, UpstreamError> {
        response::parse(target, response)
    }

    fn classify_error(response: &HttpResponse) -> UpstreamError {
        error::upstream(response)
    }
}

export_adapter!(Gemini);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::{ErrorClass, StreamFraming, run};

    fn error(status: u16, headers: &[(&str, &str)], body: &str) -> UpstreamError {
        run::classify_error::<Gemini>(&HttpResponse {
            status,
            headers: switchyard_sdk::header_block(headers),
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn metadata_declares_header_key_and_sse() {
        let m = run::metadata::<Gemini>();
        assert_eq!(m.name, "gemini");
        assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(m.capabilities, ["streaming", "tools", "json", "vision"]);
        assert_eq!(m.auth, AuthScheme::Header("x-goog-api-key".into()));
        assert_eq!(m.framing, StreamFraming::Sse);
    }

    #[test]
    fn google_errors_are_classified() {
        let e = error(
            429,
            &[("retry-after", "17")],
            r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(e.class, ErrorClass::RateLimited(Some(17_000)));
        assert!(
            e.message.contains("Resource has been exhausted"),
            "{}",
            e.message
        );
        let e = error(
            400,
            &[],
            r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
        );
        assert_eq!(e.class, ErrorClass::ContextLengthExceeded);
        let e = error(
            400,
            &[],
            r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#,
        );
        // A refused key is the deployment's fault: the next one serves.
        assert_eq!(e.class, ErrorClass::Auth);
        let e = error(
            403,
            &[],
            r#"{"error":{"code":403,"status":"PERMISSION_DENIED"}}"#,
        );
        assert_eq!(e.class, ErrorClass::Auth);
        assert_eq!(error(503, &[], "<html>").class, ErrorClass::Overloaded);
        assert_eq!(error(504, &[], "").class, ErrorClass::Timeout);
    }
}
