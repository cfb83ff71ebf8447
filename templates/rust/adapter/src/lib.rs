//! {{name}}: a Switchyard provider adapter for an OpenAI-compatible upstream.
//!
//! Build: `cargo build --release --target wasm32-wasip2`, then copy the
//! `.wasm` into the gateway's plugins folder. The host frames the streamed
//! body into SSE events and keeps this parser's state between calls.

use switchyard_sdk::{
    Adapter, BuildError, ChatResponse, ErrorClass, HttpRequest, HttpResponse, Metadata,
    StreamEvent, StreamOutput, StreamParser, Target, UpstreamError,
};

struct Plugin;

impl Adapter for Plugin {
    type Stream = Stream;

    fn metadata() -> Metadata {
        Metadata::new("{{name}}", env!("CARGO_PKG_VERSION"), &["streaming"])
    }

    fn build_request(target: &Target, request: &str) -> Result<HttpRequest, BuildError> {
        // Replace the route's model name with the deployment's upstream model.
        let Some(rest) = request.trim_start().strip_prefix('{') else {
            return Err(BuildError::InvalidRequest("the request is not a JSON object".into()));
        };
        let body = format!("{{\"model\":{:?},{rest}", target.model);
        Ok(HttpRequest::post_json("/chat/completions", body.into_bytes()))
    }

    fn parse_response(_target: &Target, response: &HttpResponse) -> Result<ChatResponse, UpstreamError> {
        let body = String::from_utf8(response.body.clone())
            .map_err(|_| UpstreamError::new(ErrorClass::Overloaded, "answer is not UTF-8"))?;
        Ok(ChatResponse::new(body, None))
    }

    fn classify_error(response: &HttpResponse) -> UpstreamError {
        let class = match response.status {
            429 => ErrorClass::RateLimited(response.retry_after_ms()),
            401 | 403 => ErrorClass::Auth,
            400 | 422 => ErrorClass::InvalidRequest,
            408 | 504 => ErrorClass::Timeout,
            500..=599 => ErrorClass::Overloaded,
            _ => ErrorClass::Permanent,
        };
        UpstreamError::new(class, format!("upstream answered {}", response.status))
    }
}

/// Stream state: nothing but what the SDK keeps (done flag, usage).
struct Stream;

impl StreamParser for Stream {
    fn begin(_target: &Target, _request: &str, _headers: &str) -> Result<Self, UpstreamError> {
        Ok(Stream)
    }

    fn event(&mut self, _target: &Target, event: &StreamEvent, out: &mut StreamOutput) -> Result<(), UpstreamError> {
        if event.data == "[DONE]" {
            out.set_done();
        } else {
            out.push(event.data);
        }
        Ok(())
    }

    fn save(&self) -> Vec<u8> {
        Vec::new()
    }

    fn restore(_state: &[u8]) -> Result<Self, UpstreamError> {
        Ok(Stream)
    }
}

switchyard_sdk::export_adapter!(Plugin);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();
