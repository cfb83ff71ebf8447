//! Adapter for OpenAI and every OpenAI-compatible server (vLLM, Ollama `/v1`,
//! LM Studio, Groq, Together, ...). The canonical format *is* the OpenAI
//! chat-completions format, so the work here is small: name the upstream
//! model, ask for usage in streams, name the deployment in answers, and turn
//! upstream failures into error classes the router can act on.
//!
//! A deployment's base URL includes the version prefix (`.../v1`).

use std::borrow::Cow;

use switchyard_sdk::canonical::read::Reader;
use switchyard_sdk::errors as classify;
use switchyard_sdk::{
    Adapter, BuildError, ChatResponse, HttpRequest, HttpResponse, Metadata, Target, UpstreamError,
    export_adapter,
};

struct OpenAi;

/// Authentication (`Authorization: Bearer`) and framing (server-sent events)
/// are the SDK's defaults, which are OpenAI's.
impl Adapter for OpenAi {
    type Stream = Stream;

    /// Headers are read only through the SDK's helpers (quota, retry
    /// delays, `Date`): the host passes no others.
    fn response_headers() -> Option<Vec<String>> {
        switchyard_sdk::read_by_sdk_and(&[])
    }

    fn metadata() -> Metadata {
        Metadata::new(
            "openai",
            env!("CARGO_PKG_VERSION"),
            &["streaming", "tools", "json", "vision"],
        )
    }

    fn build_request(target: &Target, request: &str) -> Result<HttpRequest, BuildError> {
        let body = build_body(&target.model, request)?;
        Ok(HttpRequest::post_json("/chat/completions", body))
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
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// The upstream request body: the canonical request with the upstream's
/// model id, and usage always requested in streams (the gateway accounts
/// tokens), whatever `stream_options` the caller sent: its other options are
/// kept, and the usage chunk reaches the caller only if it asked for it.
///
/// The canonical format is this dialect, so every canonical request can be
/// expressed; only a body that is not a JSON object is refused, as the
/// caller's error ([`BuildError::InvalidRequest`]).
fn build_body(model: &str, request: &str) -> Result<Vec<u8>, BuildError> {
    if let Some(body) = build_in_place(model, request) {
        return Ok(body.into_bytes());
    }
    let failed = |e: serde_json::Error| BuildError::Failed(e.to_string());
    let model = serde_json::value::to_raw_value(model).map_err(failed)?;
    let usage_options =
        serde_json::value::to_raw_value(&serde_json::json!({ "include_usage": true }))
            .map_err(failed)?;
    let mut req = match serde_json::from_str::<RawObject>(request) {
        Ok(req) => req,
        Err(e) if serde_json::from_str::<serde::de::IgnoredAny>(request).is_ok() => {
            return Err(BuildError::InvalidRequest(format!(
                "request is not a JSON object: {e}"
            )));
        }
        Err(e) => {
            return Err(BuildError::InvalidRequest(format!(
                "request is not JSON: {e}"
            )));
        }
    };
    req.insert(Cow::Borrowed("model"), &model);
    let streaming = req.get("stream").is_some_and(|s| s.get() == "true");
    let merged;
    if streaming {
        match req.get("stream_options").and_then(|o| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(o.get()).ok()
        }) {
            Some(mut options)
                if options.get("include_usage") != Some(&serde_json::Value::Bool(true)) =>
            {
                options.insert("include_usage".into(), serde_json::Value::Bool(true));
                merged = serde_json::value::to_raw_value(&options).map_err(failed)?;
                req.insert(Cow::Borrowed("stream_options"), &merged);
            }
            Some(_) => {}
            None => {
                req.insert(Cow::Borrowed("stream_options"), &usage_options);
            }
        }
    }
    serde_json::to_vec(&req).map_err(failed)
}

/// The usual case of [`build_body`] without rebuilding the request: one
/// pass of the SDK's reader checks it, the upstream's model is spliced in
/// place of the caller's (or put first), and a streamed request without
/// `stream_options` gets them appended. `None` for anything else (not an
/// object, a duplicate or escaped member name, `stream_options` of its own
/// in a streamed request): the general path decides. The body keeps the
/// caller's layout; the general path writes it compact.
fn build_in_place(model: &str, request: &str) -> Option<String> {
    const MAX_MEMBERS: usize = 64;
    let mut r = Reader::new(request);
    r.object().ok()?;
    let (mut old, mut stream, mut options) = (None, None, false);
    let mut names: Vec<&str> = Vec::with_capacity(16);
    while let Some(key) = r.key().ok()? {
        let Cow::Borrowed(name) = key.name()? else {
            return None;
        };
        // The general path keeps one of duplicates; this one would keep all.
        // Looking names up in a list is quadratic: a request with more
        // members than a chat request has (~20) goes to the general path,
        // whose map is not.
        if names.len() == MAX_MEMBERS || names.contains(&name) {
            return None;
        }
        names.push(name);
        let value = r.value().ok()?;
        match name {
            "model" => old = Some(value),
            "stream" => stream = Some(value),
            "stream_options" => options = true,
            _ => {}
        }
    }
    r.finish().ok()?;
    let streaming = stream == Some("true");
    if streaming && options {
        return None;
    }
    let mut body = with_model(request, old, model)?;
    if streaming {
        // A streamed request has members (`stream`), so a comma goes first.
        let close = body.rfind('}')?;
        body.insert_str(close, r#","stream_options":{"include_usage":true}"#);
    }
    Some(body)
}

mod answer;
mod stream;

use answer::*;
use stream::*;

#[cfg(test)]
mod tests;
