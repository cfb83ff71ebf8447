//! Adapter for OpenAI and every OpenAI-compatible server (vLLM, Ollama `/v1`,
//! LM Studio, Groq, Together, ...). The canonical format *is* the OpenAI
//! chat-completions format, so the work here is small: name the upstream
//! model, ask for usage in streams, name the deployment in answers, and turn
//! upstream failures into error classes the router can act on.
//!
//! A deployment's base URL includes the version prefix (`.../v1`).

mod classify;
mod sse;

use std::borrow::Cow;

use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::{
    Adapter, AuthScheme, ChatResponse, ChunkBatch, ErrorClass, HttpRequest, HttpResponse, Metadata,
    PluginKind, StreamParser, Target, UpstreamError, Usage, export_adapter,
};

struct OpenAi;

impl Adapter for OpenAi {
    type Parser = Parser;

    fn metadata() -> Metadata {
        Metadata::new(
            "openai",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Adapter,
            &["streaming", "tools", "json", "vision"],
        )
    }

    fn build_request(target: &Target, request: &str) -> Result<HttpRequest, String> {
        let body = build_body(&target.model, request)?;
        Ok(HttpRequest::post_json(
            "/chat/completions",
            body,
            AuthScheme::Bearer,
        ))
    }

    fn parse_response(
        target: &Target,
        response: &HttpResponse,
    ) -> Result<ChatResponse, UpstreamError> {
        parse_body(&target.deployment, response.status, &response.body)
    }

    fn classify_error(response: &HttpResponse) -> UpstreamError {
        classify::classify(response.status, &response.headers, &response.body)
    }
}

export_adapter!(OpenAi);

/// The upstream request body: the canonical request with the upstream's
/// model id, and usage requested in streams (the gateway accounts tokens)
/// unless the caller chose its own `stream_options`.
fn build_body(model: &str, request: &str) -> Result<Vec<u8>, String> {
    let model = serde_json::value::to_raw_value(model).map_err(|e| e.to_string())?;
    let usage_options =
        serde_json::value::to_raw_value(&serde_json::json!({ "include_usage": true }))
            .map_err(|e| e.to_string())?;
    let mut req = match serde_json::from_str::<RawObject>(request) {
        Ok(req) => req,
        Err(e) if serde_json::from_str::<serde::de::IgnoredAny>(request).is_ok() => {
            return Err(format!("request is not a JSON object: {e}"));
        }
        Err(e) => return Err(format!("request is not JSON: {e}")),
    };
    req.insert(Cow::Borrowed("model"), &model);
    let streaming = req.get("stream").is_some_and(|s| s.get() == "true");
    if streaming && req.get("stream_options").is_none_or(|o| o.get() == "null") {
        req.insert(Cow::Borrowed("stream_options"), &usage_options);
    }
    serde_json::to_vec(&req).map_err(|e| e.to_string())
}

/// Whether the canonical request sets `stream_options.include_usage: true`.
fn caller_wants_usage(request: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        stream_options: Option<StreamOptions>,
    }
    #[derive(serde::Deserialize)]
    struct StreamOptions {
        include_usage: Option<bool>,
    }
    serde_json::from_str::<Probe>(request)
        .ok()
        .and_then(|p| p.stream_options?.include_usage)
        .unwrap_or(false)
}

fn overloaded(message: String) -> UpstreamError {
    UpstreamError::new(ErrorClass::Overloaded, message)
}

/// Usage from an OpenAI `usage` object; `None` when absent or null.
fn usage_of(v: Option<&Value>) -> Option<Usage> {
    let u = v.filter(|u| u.is_object())?;
    let n = |k: &str| {
        u.get(k)
            .and_then(Value::as_u64)
            .map_or(0, |n| n.min(u32::MAX as u64) as u32)
    };
    Some(Usage::new(n("prompt_tokens"), n("completion_tokens")))
}

/// A JSON object read one level deep: its members stay raw text, in order,
/// so replacing one member does not rebuild (or even parse) the others.
type RawObject<'a> = indexmap::IndexMap<Cow<'a, str>, &'a RawValue>;

/// A 2xx body in, canonical answer out. A body that is not a completion is
/// an upstream failure (overloaded: another deployment may do better), never
/// an answer passed on to the client.
fn parse_body(deployment: &str, status: u16, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
    let model =
        serde_json::value::to_raw_value(deployment).map_err(|e| overloaded(e.to_string()))?;
    let mut obj = match serde_json::from_slice::<RawObject>(body) {
        Ok(obj) if obj.get("choices").is_some_and(|c| c.get().starts_with('[')) => obj,
        _ => return Err(not_a_completion(status, body)),
    };
    obj.insert(Cow::Borrowed("model"), &model);
    let usage = obj
        .get("usage")
        .and_then(|u| serde_json::from_str::<Value>(u.get()).ok())
        .and_then(|u| usage_of(Some(&u)));
    let body = serde_json::to_string(&obj).map_err(|e| overloaded(e.to_string()))?;
    Ok(ChatResponse::new(body, usage))
}

/// Why a 2xx body is not a chat completion, for the attempt record.
fn not_a_completion(status: u16, body: &[u8]) -> UpstreamError {
    match serde_json::from_slice::<Value>(body) {
        Err(e) => overloaded(format!("upstream {status} body is not JSON: {e}")),
        Ok(v) => {
            let why = classify::error_info(&v)
                .message
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            overloaded(format!("upstream response has no choices array{why}"))
        }
    }
}

/// Parses one streamed chat completion (server-sent events).
pub struct Parser {
    deployment: String,
    sse: sse::SseDecoder,
    /// `data: [DONE]` was seen; anything after it is ignored.
    done: bool,
    /// Some choice carried a non-null `finish_reason`.
    finished: bool,
    /// The last usage the upstream reported; repeated in every later batch.
    usage: Option<Usage>,
    /// Whether the caller itself asked for the usage chunk. The adapter always
    /// asks the upstream for usage (the gateway accounts tokens), but forwards
    /// the usage-only chunk (empty `choices`) only to callers that asked: some
    /// clients index `choices[0]` of every chunk.
    forward_usage_chunk: bool,
}

impl Parser {
    fn events(&mut self, events: Vec<String>) -> Result<ChunkBatch, UpstreamError> {
        let mut chunks = Vec::new();
        for data in events {
            if self.done {
                break;
            }
            if data.trim() == "[DONE]" {
                self.done = true;
                continue;
            }
            let mut v: Value = serde_json::from_str(&data)
                .map_err(|e| overloaded(format!("malformed stream chunk: {e}")))?;
            let Some(obj) = v.as_object_mut() else {
                return Err(overloaded(
                    "malformed stream chunk: not a JSON object".into(),
                ));
            };
            if obj.get("error").is_some_and(|e| !e.is_null()) {
                return Err(classify::classify_stream_error(&v));
            }
            obj.insert("model".into(), Value::String(self.deployment.clone()));
            if let Some(u) = usage_of(obj.get("usage")) {
                self.usage = Some(u);
            }
            let finish = |c: &Value| c.get("finish_reason").is_some_and(|f| !f.is_null());
            if obj
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(finish))
            {
                self.finished = true;
            }
            let usage_only = obj
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
                && obj.get("usage").is_some_and(|u| !u.is_null());
            if usage_only && !self.forward_usage_chunk {
                continue;
            }
            chunks.push(v.to_string());
        }
        Ok(ChunkBatch {
            chunks,
            usage: self.usage,
            done: self.done,
        })
    }
}

impl StreamParser for Parser {
    fn new(target: Target, request: &str) -> Self {
        Parser {
            deployment: target.deployment,
            sse: sse::SseDecoder::default(),
            done: false,
            finished: false,
            usage: None,
            forward_usage_chunk: caller_wants_usage(request),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<ChunkBatch, UpstreamError> {
        let events = self.sse.push(bytes).map_err(overloaded)?;
        self.events(events)
    }

    fn finish(&mut self) -> Result<ChunkBatch, UpstreamError> {
        let events = self.sse.finish().map_err(overloaded)?;
        let batch = self.events(events)?;
        if !self.done && !self.finished {
            return Err(overloaded("stream ended before completion".into()));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            deployment: "gpt-eu".into(),
            model: "gpt-4o".into(),
        }
    }

    fn json(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn build_sets_model_and_stream_usage() {
        let b = json(
            &build_body("gpt-4o", r#"{"model":"route","messages":[],"stream":true}"#).unwrap(),
        );
        assert_eq!(b["model"], "gpt-4o");
        assert_eq!(b["stream_options"]["include_usage"], true);
        let b = json(
            &build_body(
                "m",
                r#"{"stream":true,"stream_options":{"include_usage":false}}"#,
            )
            .unwrap(),
        );
        assert_eq!(b["stream_options"]["include_usage"], false);
        let b = json(&build_body("m", r#"{"messages":[]}"#).unwrap());
        assert!(b.get("stream_options").is_none());
        assert!(
            build_body("m", "[1]")
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(build_body("m", "{").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn parse_names_deployment_and_reads_usage() {
        let body = br#"{"id":"x","model":"gpt-4o-2024","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        let r = parse_body("gpt-eu", 200, body).unwrap();
        assert_eq!(json(r.body.as_bytes())["model"], "gpt-eu");
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (5, 2));
        assert!(
            parse_body("d", 200, br#"{"choices":[]}"#)
                .unwrap()
                .usage
                .is_none()
        );
    }

    #[test]
    fn parse_rejects_non_completions() {
        let e = parse_body("d", 200, b"<html>").unwrap_err();
        assert!(matches!(e.class, ErrorClass::Overloaded));
        assert!(
            e.message.starts_with("upstream 200 body is not JSON: "),
            "{}",
            e.message
        );
        let e = parse_body("d", 200, br#"{"error":{"message":"busy"}}"#).unwrap_err();
        assert_eq!(e.message, "upstream response has no choices array: busy");
        let e = parse_body("d", 200, b"[]").unwrap_err();
        assert_eq!(e.message, "upstream response has no choices array");
    }

    const STREAM: &str = concat!(
        ": OPENROUTER PROCESSING\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé\"},\"finish_reason\":null}],\"model\":\"up\",\"usage\":null}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"model\":\"up\"}\r\n\r\n",
        "data: {\"choices\":[],\"model\":\"up\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(parts: &[&[u8]]) -> Result<(Vec<String>, Option<Usage>, bool), UpstreamError> {
        let mut p = Parser::new(target(), r#"{"stream_options":{"include_usage":true}}"#);
        let (mut chunks, mut usage, mut done) = (Vec::new(), None, false);
        for part in parts {
            let b = p.feed(part)?;
            chunks.extend(b.chunks);
            usage = b.usage.or(usage);
            done |= b.done;
        }
        let b = p.finish()?;
        chunks.extend(b.chunks);
        Ok((chunks, b.usage.or(usage), done || b.done))
    }

    #[test]
    fn stream_at_every_split() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let (chunks, usage, done) = run(&[&bytes[..cut], &bytes[cut..]]).unwrap();
            assert_eq!(chunks.len(), 3);
            assert!(
                chunks
                    .iter()
                    .all(|c| json(c.as_bytes())["model"] == "gpt-eu")
            );
            assert_eq!(
                json(chunks[0].as_bytes())["choices"][0]["delta"]["content"],
                "Hé"
            );
            let u = usage.unwrap();
            assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 1));
            assert!(done);
        }
    }

    #[test]
    fn usage_chunk_is_forwarded_only_to_callers_that_asked() {
        let mut p = Parser::new(target(), r#"{"stream":true}"#);
        let b = p.feed(STREAM.as_bytes()).unwrap();
        assert_eq!(
            b.chunks.len(),
            2,
            "usage-only chunk dropped: {:?}",
            b.chunks
        );
        let u = b.usage.expect("usage still reported to the host");
        assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 1));
        assert!(b.done);
        assert!(caller_wants_usage(
            r#"{"stream_options":{"include_usage":true}}"#
        ));
        assert!(!caller_wants_usage(
            r#"{"stream_options":{"include_usage":false}}"#
        ));
        assert!(!caller_wants_usage(r#"{"stream_options":null}"#));
        assert!(!caller_wants_usage("not json"));
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let e = run(&[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n",
        ])
        .unwrap_err();
        assert!(matches!(e.class, ErrorClass::Overloaded));
        assert_eq!(e.message, "stream ended before completion");
        // A finish_reason without [DONE] is complete enough (some servers omit it).
        let ok =
            run(&[b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}"]).unwrap();
        assert_eq!(ok.0.len(), 1);
        assert!(!ok.2);
    }

    #[test]
    fn stream_errors() {
        let e = run(&[b"data: {\"choices\": [\n\n"]).unwrap_err();
        assert!(
            e.message.starts_with("malformed stream chunk: "),
            "{}",
            e.message
        );
        let e =
            run(&[b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n"])
                .unwrap_err();
        assert!(matches!(e.class, ErrorClass::Overloaded));
        assert!(e.message.contains("overloaded"));
    }
}
