//! Adapter for Ollama's native chat API (`POST /api/chat`).
//!
//! Ollama also serves an OpenAI-compatible `/v1`, which the `openai`
//! adapter covers; this one speaks Ollama's own API, which every Ollama
//! version has, translating between it and the canonical format (OpenAI
//! chat completions):
//!
//! - `request`: canonical request → Ollama body (`options`, `format`,
//!   `images`, tool calls as objects), refusing by name what Ollama cannot
//!   do (several answers, log-probabilities, forced tool calls, audio).
//! - `response`: a whole answer → `chat.completion`.
//! - `stream`: NDJSON lines → `chat.completion.chunk`s.
//! - `wire`: Ollama's format as typed structs.
//!
//! A deployment's base URL is the server's root (`http://127.0.0.1:11434`,
//! no `/v1`). Authentication is the SDK's default (`Authorization: Bearer`):
//! a local Ollama checks no key, and a deployment without one sends none,
//! while one behind an authenticating proxy gets its key there.
//!
//! Reasoning text (`message.thinking`, from models that think) is not
//! passed on: the canonical answer has no member for it. Its tokens are
//! still counted in the usage (`eval_count` includes them).
//!
//! Ollama's answers carry no id, and the sandbox has no wall clock: ids are
//! made from the host's monotonic clock, and `created` comes from Ollama's
//! `created_at` (else the `Date` header).

use switchyard_sdk::errors;
use switchyard_sdk::{
    Adapter, BuildError, ChatResponse, ErrorClass, HttpRequest, HttpResponse, Metadata,
    StreamFraming, Target, UpstreamError, export_adapter,
};

mod request;
mod response;
mod stream;
mod wire;

struct Ollama;

impl Adapter for Ollama {
    type Stream = stream::Stream;

    /// Headers are read only through the SDK's helpers (quota, retry
    /// delays, `Date`): the host passes no others.
    fn response_headers() -> Option<Vec<String>> {
        switchyard_sdk::read_by_sdk_and(&[])
    }

    fn metadata() -> Metadata {
        Metadata::new(
            "ollama",
            env!("CARGO_PKG_VERSION"),
            &["streaming", "tools", "json", "vision"],
        )
    }

    /// Streams are one JSON object per line.
    fn framing() -> StreamFraming {
        StreamFraming::Ndjson
    }

    fn build_request(target: &Target, request: &str) -> Result<HttpRequest, BuildError> {
        let body = request::build_body(&target.model, request)?;
        Ok(HttpRequest::post_json("/api/chat", body))
    }

    fn parse_response(
        target: &Target,
        response: &HttpResponse,
    ) -> Result<ChatResponse, UpstreamError> {
        response::parse(&target.deployment, &response.body, fresh_seed(), || {
            switchyard_sdk::created_s(&response.headers)
        })
    }

    fn classify_error(response: &HttpResponse) -> UpstreamError {
        classify_error(response.status, &response.headers, &response.body)
    }
}

export_adapter!(Ollama);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// The shared classification, but a model that lacks a capability the
/// request needs (Ollama: 400 `"llama2:latest" does not support tools`,
/// `... does not support chat`) is this deployment's limit, not the caller's
/// mistake: `permanent`, so another deployment may serve the request.
fn classify_error(status: u16, headers: &str, body: &[u8]) -> UpstreamError {
    let mut e = errors::classify(status, headers, body);
    if e.class == ErrorClass::InvalidRequest && e.message.contains(" does not support ") {
        e.class = ErrorClass::Permanent;
    }
    e
}

/// A number that makes one answer's ids: the host's monotonic clock in
/// nanoseconds, which two answers of one gateway practically never share
/// (ids need to be distinct in practice, not secret). Natively (unit tests)
/// there is no host to ask, and 0 keeps the tests deterministic.
fn fresh_seed() -> u64 {
    if cfg!(target_arch = "wasm32") {
        switchyard_sdk::now_ns()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::{AuthScheme, run};

    #[test]
    fn metadata_declares_bearer_and_ndjson() {
        let m = run::metadata::<Ollama>();
        assert_eq!(
            (m.name.as_str(), m.version.as_str()),
            ("ollama", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(m.capabilities, ["streaming", "tools", "json", "vision"]);
        assert_eq!(m.auth, AuthScheme::Bearer);
        assert_eq!(m.framing, StreamFraming::Ndjson);
    }

    #[test]
    fn build_posts_to_api_chat() {
        let t = Target {
            deployment: "dep".into(),
            model: "llama3.2".into(),
        };
        let r =
            run::build_request::<Ollama>(&t, r#"{"messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/chat"));
        assert_eq!(
            r.headers,
            [("content-type".to_string(), "application/json".to_string())]
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["model"], "llama3.2");
    }

    fn class(status: u16, body: &str) -> ErrorClass {
        run::classify_error::<Ollama>(&HttpResponse {
            status,
            headers: "retry-after: 2\n".into(),
            body: body.as_bytes().to_vec(),
        })
        .class
    }

    #[test]
    fn errors_are_classified() {
        let missing = r#"{"error":"model \"llama9\" not found, try pulling it first"}"#;
        assert_eq!(class(404, missing), ErrorClass::Permanent);
        assert_eq!(
            class(500, r#"{"error":"llama runner process has terminated"}"#),
            ErrorClass::Overloaded
        );
        assert_eq!(
            class(
                503,
                r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#
            ),
            ErrorClass::Overloaded
        );
        assert_eq!(class(429, "{}"), ErrorClass::RateLimited(Some(2000)));
        assert_eq!(
            class(400, r#"{"error":"invalid message format"}"#),
            ErrorClass::InvalidRequest
        );
        assert_eq!(
            class(400, r#"{"error":"\"gemma:2b\" does not support tools"}"#),
            ErrorClass::Permanent
        );
        assert_eq!(
            class(
                400,
                r#"{"error":"registry.ollama.ai/library/all-minilm:latest does not support chat"}"#
            ),
            ErrorClass::Permanent
        );
        assert_eq!(class(401, r#"{"error":"unauthorized"}"#), ErrorClass::Auth);
        let e = run::classify_error::<Ollama>(&HttpResponse {
            status: 404,
            headers: String::new(),
            body: missing.as_bytes().to_vec(),
        });
        assert_eq!(
            e.message,
            "upstream 404: model \"llama9\" not found, try pulling it first"
        );
    }

    /// What the adapter costs per call, in an optimised build: `cargo test
    /// --release -p ollama costs -- --ignored --nocapture`. Budget: a few
    /// microseconds for a request and its answer, about one per stream line.
    #[test]
    #[ignore]
    fn costs() {
        use std::hint::black_box;
        use std::time::{Duration, Instant};
        use switchyard_sdk::{StreamEvent, StreamOutput, StreamParser};
        fn best(f: &mut dyn FnMut()) -> Duration {
            (0..30)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..20_000 {
                        f();
                    }
                    start.elapsed() / 20_000
                })
                .min()
                .unwrap_or_default()
        }
        let t = Target {
            deployment: "local-llama".into(),
            model: "llama3.2".into(),
        };
        let request = r#"{"model":"chat","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Why is the sky blue? Answer in one sentence."}],"temperature":0.7,"max_tokens":256}"#;
        let answer = HttpResponse {
            status: 200,
            headers: "content-type: application/json\n".into(),
            body: br#"{"model":"llama3.2","created_at":"2023-12-12T14:13:43.416799Z","message":{"role":"assistant","content":"Sunlight scatters off air molecules, and blue light scatters the most."},"done":true,"done_reason":"stop","total_duration":5191566416,"load_duration":2154458,"prompt_eval_count":26,"prompt_eval_duration":383809000,"eval_count":298,"eval_duration":4799921000}"#.to_vec(),
        };
        let line = StreamEvent::data(
            r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":" sky"},"done":false}"#,
        );
        let build = best(&mut || {
            black_box(Ollama::build_request(&t, black_box(request)).unwrap());
        });
        let parse = best(&mut || {
            black_box(Ollama::parse_response(&t, black_box(&answer)).unwrap());
        });
        let mut stream = stream::Stream::begin(&t, request, "").unwrap();
        let mut out = StreamOutput::default();
        let line = best(&mut || {
            stream.event(&t, black_box(&line), &mut out).unwrap();
            if out.chunks().len() > 1000 {
                out = StreamOutput::default();
            }
        });
        println!("build {build:?}, parse {parse:?}, stream line {line:?}");
    }
}
