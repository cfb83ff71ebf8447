//! Adapter for OpenAI and every OpenAI-compatible server (vLLM, Ollama `/v1`,
//! LM Studio, Groq, Together, ...). The canonical format *is* the OpenAI
//! chat-completions format, so the work here is small: name the upstream
//! model, ask for usage in streams, name the deployment in answers, and turn
//! upstream failures into error classes the router can act on.
//!
//! A deployment's base URL includes the version prefix (`.../v1`).

use std::borrow::Cow;

use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::canonical::{StreamAsk, push_json_string};
use switchyard_sdk::errors as classify;
use switchyard_sdk::{
    Adapter, BuildError, ChatResponse, ErrorClass, HttpRequest, HttpResponse, Metadata,
    StateReader, StateWriter, StreamEvent, StreamOutput, StreamParser, Target, UpstreamError,
    Usage, export_adapter,
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

fn overloaded(message: String) -> UpstreamError {
    UpstreamError::new(ErrorClass::Overloaded, message)
}

/// Usage from an OpenAI `usage` object; `None` when absent or null. Cached
/// prompt tokens (`prompt_tokens_details.cached_tokens`) and reasoning tokens
/// (`completion_tokens_details.reasoning_tokens`) are 0 when not reported.
fn usage_of(v: Option<&Value>) -> Option<Usage> {
    let u = v.filter(|u| u.is_object())?;
    let n = |v: Option<&Value>| {
        v.and_then(Value::as_u64)
            .map_or(0, |n| n.min(u32::MAX as u64) as u32)
    };
    let detail = |group: &str, k: &str| n(u.get(group).and_then(|d| d.get(k)));
    Some(
        Usage::new(n(u.get("prompt_tokens")), n(u.get("completion_tokens")))
            .with_cached_prompt_tokens(detail("prompt_tokens_details", "cached_tokens"))
            .with_reasoning_tokens(detail("completion_tokens_details", "reasoning_tokens")),
    )
}

/// The members of a `usage` object [`usage_in`] reads, left raw.
#[derive(serde::Deserialize)]
struct UsageTop<'a> {
    #[serde(borrow, default)]
    prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt_tokens_details: Option<&'a RawValue>,
    #[serde(borrow, default)]
    completion_tokens_details: Option<&'a RawValue>,
}

/// The members of a `usage` detail object [`usage_in`] reads.
#[derive(serde::Deserialize)]
struct DetailTop<'a> {
    #[serde(borrow, default)]
    cached_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning_tokens: Option<&'a RawValue>,
}

/// [`usage_of`] a raw `usage` member, without building a `Value` (a map with
/// a hasher per object: most of a usage chunk's cost). A count that is not a
/// non-negative integer reads as 0, as `Value::as_u64` has it. What the
/// borrowed read refuses (a duplicate member, say) is read as a `Value`.
fn usage_in(raw: &RawValue) -> Option<Usage> {
    fn object<'a, T: serde::Deserialize<'a>>(raw: &'a RawValue) -> Result<Option<T>, ()> {
        // A struct also reads from an array (positionally): objects only.
        if !raw.get().starts_with('{') {
            return Ok(None);
        }
        serde_json::from_str(raw.get()).map(Some).map_err(|_| ())
    }
    let n = |v: Option<&RawValue>| {
        v.and_then(|v| v.get().parse::<u64>().ok())
            .map_or(0, |n| n.min(u32::MAX as u64) as u32)
    };
    let read = || -> Result<Option<Usage>, ()> {
        let Some(u) = object::<UsageTop>(raw)? else {
            return Ok(None);
        };
        fn detail(d: Option<&RawValue>) -> Result<Option<DetailTop<'_>>, ()> {
            d.map_or(Ok(None), object)
        }
        let cached = detail(u.prompt_tokens_details)?.and_then(|d| d.cached_tokens);
        let reasoning = detail(u.completion_tokens_details)?.and_then(|d| d.reasoning_tokens);
        Ok(Some(
            Usage::new(n(u.prompt_tokens), n(u.completion_tokens))
                .with_cached_prompt_tokens(n(cached))
                .with_reasoning_tokens(n(reasoning)),
        ))
    };
    read().unwrap_or_else(|()| {
        serde_json::from_str::<Value>(raw.get())
            .ok()
            .and_then(|u| usage_of(Some(&u)))
    })
}

/// A JSON object read one level deep: its members stay raw text, in order,
/// so replacing one member does not rebuild (or even parse) the others.
type RawObject<'a> = indexmap::IndexMap<Cow<'a, str>, &'a RawValue>;

/// A 2xx body in, canonical answer out. A body that is not a completion is
/// an upstream failure (overloaded: another deployment may do better), never
/// an answer passed on to the client.
fn parse_body(deployment: &str, status: u16, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
    if let Some(parsed) = parse_in_place(deployment, body) {
        return Ok(parsed);
    }
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

/// The top-level members [`parse_in_place`] reads; the rest are skipped.
#[derive(serde::Deserialize)]
struct Top<'a> {
    /// Present even when null (it is replaced, not duplicated).
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    choices: &'a RawValue,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

/// A member's raw text, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

/// The common case of [`parse_body`] without rebuilding the body: one pass
/// finds the members it reads, and the deployment's name is spliced in place
/// of the upstream's `model` (or put first when there is none). `None` for
/// anything else (not UTF-8, not an object, no `choices` array, a duplicate
/// member): the general path then decides, and says why.
fn parse_in_place(deployment: &str, body: &[u8]) -> Option<ChatResponse> {
    let text = std::str::from_utf8(body).ok()?;
    // A struct also reads from a JSON array (positionally): objects only.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let top: Top = serde_json::from_str(text).ok()?;
    if !top.choices.get().starts_with('[') {
        return None;
    }
    let out = with_model(text, top.model, deployment)?;
    let usage = top.usage.and_then(usage_in);
    Some(ChatResponse::new(out, usage))
}

/// `text` (a JSON object) with `deployment` as its `model`: spliced in place
/// of `old`, the upstream's (which borrows from `text`), or put first.
fn with_model(text: &str, old: Option<&RawValue>, deployment: &str) -> Option<String> {
    // The name is written straight into the answer (quoted and escaped).
    let mut out = String::with_capacity(text.len() + deployment.len() + 11);
    match old {
        Some(old) => {
            // `old` borrows from `text`: its offset is where it starts there.
            let start = old.get().as_ptr() as usize - text.as_ptr() as usize;
            let end = start + old.get().len();
            out.push_str(&text[..start]);
            push_json_string(&mut out, deployment);
            out.push_str(&text[end..]);
        }
        None => {
            let open = text.find('{')?;
            out.push_str(&text[..=open]);
            out.push_str("\"model\":");
            push_json_string(&mut out, deployment);
            let rest = &text[open + 1..];
            if !rest.trim_start().starts_with('}') {
                out.push(',');
            }
            out.push_str(rest);
        }
    }
    Some(out)
}

/// The members of a stream chunk [`chunk_in_place`] reads.
#[derive(serde::Deserialize)]
struct ChunkTop<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(default)]
    choices: Option<Choices>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// What a chunk's `choices` tell the parser, read in the same pass as the
/// rest of the chunk (every streamed token goes through here). Anything but
/// an array is ignored, as if absent; an array with a member that is not an
/// object, or a choice with two `finish_reason`s, fails the read (the
/// general path decides).
#[derive(Default)]
struct Choices {
    /// `choices` was an empty array.
    empty: bool,
    /// A choice has a non-null `finish_reason`.
    finished: bool,
}

impl<'de> serde::Deserialize<'de> for Choices {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct Array;
        impl<'de> Visitor<'de> for Array {
            type Value = Choices;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
                let mut seen = Choices {
                    empty: true,
                    finished: false,
                };
                while let Some(Choice { finished }) = seq.next_element()? {
                    seen.empty = false;
                    seen.finished |= finished;
                }
                Ok(seen)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Choices, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Choices::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Choices, E> {
                Ok(Choices::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Choices, E> {
                Ok(Choices::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Choices, E> {
                Ok(Choices::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Choices, E> {
                Ok(Choices::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Choices, E> {
                Ok(Choices::default())
            }
            fn visit_unit<E>(self) -> Result<Choices, E> {
                Ok(Choices::default())
            }
        }
        d.deserialize_any(Array)
    }
}

/// One choice of a stream chunk: only whether it finished.
struct Choice {
    finished: bool,
}

impl<'de> serde::Deserialize<'de> for Choice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, Visitor};
        /// A member name: whether it is `finish_reason` (no copy, escaped or not).
        struct IsFinish(bool);
        impl<'de> serde::Deserialize<'de> for IsFinish {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Name;
                impl Visitor<'_> for Name {
                    type Value = IsFinish;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a member name")
                    }
                    fn visit_str<E>(self, v: &str) -> Result<IsFinish, E> {
                        Ok(IsFinish(v == "finish_reason"))
                    }
                }
                d.deserialize_str(Name)
            }
        }
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Choice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a choice object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Choice, A::Error> {
                let mut finish = None;
                while let Some(IsFinish(is)) = map.next_key()? {
                    if !is {
                        map.next_value::<IgnoredAny>()?;
                    } else if finish.is_some() {
                        return Err(A::Error::duplicate_field("finish_reason"));
                    } else {
                        finish = Some(map.next_value::<Option<IgnoredAny>>()?.is_some());
                    }
                }
                Ok(Choice {
                    finished: finish == Some(true),
                })
            }
        }
        d.deserialize_map(Object)
    }
}

/// One ordinary stream chunk, read without rebuilding it.
struct Chunk {
    text: String,
    usage: Option<Usage>,
    finished: bool,
    usage_only: bool,
}

/// The common case of a stream event, as [`Stream::event`]'s general path
/// reads it, in one pass and with the deployment's name spliced in. `None`
/// for anything else (an error member, a duplicate member, a choice that is
/// not an object, not an object at all): the general path decides.
fn chunk_in_place(deployment: &str, data: &str) -> Option<Chunk> {
    // A struct also reads from a JSON array (positionally): objects only.
    // A line break (multi-line `data:`) would end the event sent on: such a
    // chunk is rewritten compact by the general path.
    if !data.starts_with('{') || data.bytes().any(|b| b == b'\n' || b == b'\r') {
        return None;
    }
    let top: ChunkTop = serde_json::from_str(data).ok()?;
    if top.error.is_some() {
        return None;
    }
    let choices = top.choices.unwrap_or_default();
    let (finished, no_choices) = (choices.finished, choices.empty);
    let usage = top.usage.filter(|u| u.get() != "null");
    Some(Chunk {
        text: with_model(data, top.model, deployment)?,
        usage_only: no_choices && usage.is_some(),
        usage: usage.and_then(usage_in),
        finished,
    })
}

/// Any stream chunk: parsed whole and written back compact (so it is one
/// line, whatever the upstream's layout); `None` when it is not a JSON
/// object (skipped as malformed), the upstream's error when it is one.
fn chunk_general(deployment: &str, data: &str) -> Result<Option<Chunk>, UpstreamError> {
    let Ok(mut v) = serde_json::from_str::<Value>(data) else {
        return Ok(None);
    };
    let Some(obj) = v.as_object_mut() else {
        return Ok(None);
    };
    if obj.get("error").is_some_and(|e| !e.is_null()) {
        return Err(classify::classify_stream_error(&v));
    }
    obj.insert("model".into(), Value::String(deployment.to_owned()));
    let choices = obj.get("choices").and_then(Value::as_array);
    let finish = |c: &Value| c.get("finish_reason").is_some_and(|f| !f.is_null());
    Ok(Some(Chunk {
        usage: usage_of(obj.get("usage")),
        finished: choices.is_some_and(|cs| cs.iter().any(finish)),
        usage_only: choices.is_some_and(Vec::is_empty)
            && obj.get("usage").is_some_and(|u| !u.is_null()),
        text: v.to_string(),
    }))
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

/// Parses one streamed chat completion, one server-sent event at a time (the
/// host does the framing). Between events it is two flags; the deployment
/// name comes with every call, and the end of the stream and the last usage
/// are kept by the SDK.
#[derive(Debug, PartialEq)]
pub struct Stream {
    /// Some choice carried a non-null `finish_reason`.
    finished: bool,
    /// Whether the caller itself asked for the usage chunk. The adapter always
    /// asks the upstream for usage (the gateway accounts tokens), but forwards
    /// the usage-only chunk (empty `choices`) only to callers that asked: some
    /// clients index `choices[0]` of every chunk.
    forward_usage_chunk: bool,
}

impl StreamParser for Stream {
    fn begin(
        _target: &Target,
        request: &str,
        _headers: &[(String, String)],
    ) -> Result<Self, UpstreamError> {
        Ok(Stream {
            finished: false,
            forward_usage_chunk: StreamAsk::read(request).include_usage,
        })
    }

    fn event(
        &mut self,
        target: &Target,
        event: &StreamEvent,
        out: &mut StreamOutput,
    ) -> Result<(), UpstreamError> {
        let data = event.data.trim();
        // Some compatible servers name their error events; the data says what failed.
        if event.event == "error" {
            return Err(match serde_json::from_str::<Value>(data) {
                Ok(v) => classify::classify_stream_error(&v),
                Err(_) => overloaded(format!(
                    "upstream stream error: {}",
                    data.chars().take(200).collect::<String>()
                )),
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            out.set_done();
            return Ok(());
        }
        let chunk = match chunk_in_place(&target.deployment, data) {
            Some(chunk) => chunk,
            None => match chunk_general(&target.deployment, data)? {
                Some(chunk) => chunk,
                None => {
                    out.skip_malformed();
                    return Ok(());
                }
            },
        };
        if let Some(u) = chunk.usage {
            out.set_usage(u);
        }
        self.finished |= chunk.finished;
        if !chunk.usage_only || self.forward_usage_chunk {
            out.push(chunk.text);
        }
        Ok(())
    }

    /// A stream is complete with `[DONE]`, or with a `finish_reason` (some
    /// servers omit `[DONE]`); anything else was cut short.
    fn end(&mut self, _target: &Target, out: &mut StreamOutput) -> Result<(), UpstreamError> {
        if out.is_done() || self.finished {
            Ok(())
        } else {
            Err(switchyard_sdk::stream::incomplete())
        }
    }

    fn save(&self) -> Vec<u8> {
        StateWriter::new()
            .bool(self.finished)
            .bool(self.forward_usage_chunk)
            .finish()
    }

    fn restore(state: &[u8]) -> Result<Self, UpstreamError> {
        let mut r = StateReader::new(state);
        let stream = Stream {
            finished: r.bool()?,
            forward_usage_chunk: r.bool()?,
        };
        r.finish()?;
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::{QuotaHint, run};

    fn wants_usage(request: &str) -> bool {
        StreamAsk::read(request).include_usage
    }

    /// The deployment's name replaces the answer's model (or is added),
    /// escaped, and nothing else changes.
    #[test]
    fn model_is_the_deployment_escaped() {
        for name in ["gpt-eu", "a\"b\\c\n\u{1}é", ""] {
            for text in [
                r#"{"id":"x","model":"up\"stream","choices":[]}"#,
                r#"{"id":"x","choices":[]}"#,
                r#"{ "choices": [] }"#,
            ] {
                let top: Top = serde_json::from_str(text).unwrap();
                let out = with_model(text, top.model, name).unwrap();
                let mut want: Value = serde_json::from_str(text).unwrap();
                want["model"] = Value::from(name);
                assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), want, "{out}");
            }
        }
    }

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
                r#"{"stream":true,"stream_options":{"include_usage":false,"other":1}}"#,
            )
            .unwrap(),
        );
        // Asked for anyway (the gateway accounts tokens); the caller's other
        // options kept. The usage chunk is not forwarded to this caller.
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["stream_options"]["other"], 1);
        let b = json(&build_body("m", r#"{"stream":true,"stream_options":null}"#).unwrap());
        assert_eq!(b["stream_options"]["include_usage"], true);
        let b = json(&build_body("m", r#"{"messages":[]}"#).unwrap());
        assert!(b.get("stream_options").is_none());
    }

    #[test]
    fn build_request_refuses_non_objects_as_invalid() {
        let r = run::build_request::<OpenAi>(&target(), r#"{"messages":[]}"#).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/chat/completions")
        );
        assert_eq!(
            r.headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );
        for (body, why) in [
            ("[1]", "request is not a JSON object"),
            ("\"x\"", "request is not a JSON object"),
            ("{", "request is not JSON"),
        ] {
            match run::build_request::<OpenAi>(&target(), body) {
                Err(BuildError::InvalidRequest(m)) => assert!(m.starts_with(why), "{m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn metadata_declares_bearer_and_sse() {
        let m = run::metadata::<OpenAi>();
        assert_eq!(m.name, "openai");
        assert_eq!(m.auth, switchyard_sdk::AuthScheme::Bearer);
        assert_eq!(m.framing, switchyard_sdk::StreamFraming::Sse);
    }

    #[test]
    fn parse_names_deployment_and_reads_usage() {
        let body = br#"{"id":"x","model":"gpt-4o-2024","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        let r = parse_body("gpt-eu", 200, body).unwrap();
        assert_eq!(json(r.body.as_bytes())["model"], "gpt-eu");
        assert_eq!(r.usage, Some(Usage::new(5, 2)));
        assert!(
            parse_body("d", 200, br#"{"choices":[]}"#)
                .unwrap()
                .usage
                .is_none()
        );
    }

    #[test]
    fn in_place_and_general_paths_agree() {
        for body in [
            r#"{"id":"x","model":"gpt-4o-2024","choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
            r#" { "choices" : [ ] , "model" : "m\"q" } "#,
            r#"{"choices":[],"usage":null}"#,
            r#"{"model":null,"choices":[]}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1},"choices":[]}"#,
        ] {
            let fast = parse_in_place("gpt \"eu\"", body.as_bytes()).expect(body);
            let general = {
                let model = serde_json::value::to_raw_value("gpt \"eu\"").unwrap();
                let mut obj = serde_json::from_str::<RawObject>(body).unwrap();
                obj.insert(Cow::Borrowed("model"), &model);
                serde_json::to_string(&obj).unwrap()
            };
            assert_eq!(
                json(fast.body.as_bytes()),
                json(general.as_bytes()),
                "{body}"
            );
            assert_eq!(json(fast.body.as_bytes())["model"], "gpt \"eu\"");
            assert_eq!(
                fast.usage,
                parse_body("gpt \"eu\"", 200, body.as_bytes())
                    .unwrap()
                    .usage
            );
        }
        // Not for the fast path: the general one decides (and explains).
        for body in [
            r#"{"choices":{}}"#,
            r#"{"model":"a","model":"b","choices":[]}"#,
            "[]",
            r#"[0,[]]"#,
        ] {
            assert!(parse_in_place("d", body.as_bytes()).is_none(), "{body}");
        }
    }

    #[test]
    fn stream_chunks_read_in_place_as_in_general() {
        for data in [
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"model":null}"#,
            r#"{ "choices" : [ ] , "usage" : {"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":2}} }"#,
            r#"{"choices":[],"usage":null}"#,
            r#"{"choices":[],"usage":7}"#,
            r#"{"choices":null,"error":null}"#,
            r#"{"choices":{"a":1}}"#,
            r#"{"choices":[{"finish_reason":null},{"finish_reason":"length"}]}"#,
            r#"{"choices":[{"finish\u005freason":"stop","delta":{"content":"a\"}"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":[1]}"}}]}}]}"#,
            r#"{"choices":true}"#,
            r#"{}"#,
        ] {
            let fast = chunk_in_place("dep \"eu\"", data).expect(data);
            let general = chunk_general("dep \"eu\"", data).unwrap().unwrap();
            assert_eq!(
                json(fast.text.as_bytes()),
                json(general.text.as_bytes()),
                "{data}"
            );
            assert_eq!(json(fast.text.as_bytes())["model"], "dep \"eu\"");
            assert_eq!(fast.usage, general.usage, "{data}");
            assert_eq!(fast.finished, general.finished, "{data}");
            assert_eq!(fast.usage_only, general.usage_only, "{data}");
        }
        // Not for the fast path: the general one decides (and explains).
        for data in [
            r#"{"error":{"message":"overloaded"}}"#,
            r#"{"model":"a","model":"b","choices":[]}"#,
            r#"{"choices":[["stop"]]}"#,
            r#"{"choices":[null]}"#,
            r#"{"choices":[{"finish_reason":"stop","finish_reason":null}]}"#,
            "{\"choices\":\n[]}",
            "[]",
            "nope",
        ] {
            assert!(chunk_in_place("d", data).is_none(), "{data}");
        }
        let general = chunk_general("d", "{\"choices\":\n[]}").unwrap().unwrap();
        assert!(!general.text.contains('\n'));
    }

    #[test]
    fn usage_read_raw_as_from_a_value() {
        for usage in [
            r#"{"prompt_tokens":3,"completion_tokens":4}"#,
            r#"{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":256}}"#,
            r#"{"prompt_tokens":-1,"completion_tokens":5.0,"total_tokens":"x"}"#,
            r#"{"prompt_tokens":1e2,"completion_tokens":99999999999,"prompt_tokens_details":null}"#,
            r#"{"prompt_tokens":18446744073709551616,"prompt_tokens_details":[1],"completion_tokens_details":7}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2,"completion_tokens":3}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":2}}"#,
            r#"{"prompt_tokens":{"a":1},"completion_tokens":[2]}"#,
            r#"{"prompt\u005ftokens":4}"#,
            r#"{}"#,
            r#"[1,2]"#,
            r#"7"#,
            r#"null"#,
        ] {
            let raw: &RawValue = serde_json::from_str(usage).unwrap();
            let value: Value = serde_json::from_str(usage).unwrap();
            assert_eq!(usage_in(raw), usage_of(Some(&value)), "{usage}");
        }
    }

    #[test]
    fn usage_details_are_read() {
        let body = br#"{"choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":256}}}"#;
        let u = parse_body("d", 200, body).unwrap().usage.unwrap();
        assert_eq!(
            u,
            Usage::new(2006, 300)
                .with_cached_prompt_tokens(1920)
                .with_reasoning_tokens(256)
        );
        let nulls = br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":null}}"#;
        assert_eq!(
            parse_body("d", 200, nulls).unwrap().usage,
            Some(Usage::new(1, 1))
        );
    }

    #[test]
    fn answers_and_errors_carry_quota() {
        let response = HttpResponse {
            status: 200,
            headers: vec![
                ("x-ratelimit-remaining-requests".into(), "41".into()),
                ("x-ratelimit-reset-tokens".into(), "1m30s".into()),
            ],
            body: br#"{"choices":[]}"#.to_vec(),
        };
        let want = Some(QuotaHint {
            remaining_requests: Some(41),
            reset_tokens_ms: Some(90_000),
            ..QuotaHint::default()
        });
        assert_eq!(
            run::parse_response::<OpenAi>(&target(), &response)
                .unwrap()
                .quota,
            want
        );
        let limited = HttpResponse {
            status: 429,
            body: b"{}".to_vec(),
            ..response
        };
        let e = run::classify_error::<OpenAi>(&limited);
        assert_eq!(e.class, ErrorClass::RateLimited(None));
        assert_eq!(e.quota, want);
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

    /// The events of a typical stream, as the host frames them.
    const STREAM: [&str; 4] = [
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé\"},\"finish_reason\":null}],\"model\":\"up\",\"usage\":null}",
        "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"model\":\"up\"}",
        "{\"choices\":[],\"model\":\"up\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":2}}}",
        "[DONE]",
    ];

    #[derive(Debug)]
    struct Outcome {
        chunks: Vec<String>,
        usage: Option<Usage>,
        done: bool,
        malformed: u32,
    }

    /// Runs a stream through the exported functions, in batches of the given
    /// sizes, with the state going through bytes between every call.
    fn run_batches(
        request: &str,
        events: &[StreamEvent],
        batches: &[usize],
    ) -> Result<Outcome, UpstreamError> {
        let t = target();
        let mut state = run::begin_stream::<OpenAi>(&t, request, &[])?.state;
        let mut o = Outcome {
            chunks: Vec::new(),
            usage: None,
            done: false,
            malformed: 0,
        };
        let mut rest = events;
        for &n in batches {
            let (now, later) = rest.split_at(n);
            rest = later;
            let step = run::parse_stream::<OpenAi>(&t, &state, now)?;
            o.chunks.extend(step.chunks);
            o.usage = step.usage.or(o.usage);
            o.done |= step.done;
            o.malformed += step.malformed;
            state = step.state.unwrap_or(state);
        }
        let last = run::end_stream::<OpenAi>(&t, &state)?;
        o.chunks.extend(last.chunks);
        o.usage = last.usage.or(o.usage);
        o.done |= last.done;
        Ok(o)
    }

    fn run_events(request: &str, data: &[&str]) -> Result<Outcome, UpstreamError> {
        let events: Vec<StreamEvent> = data.iter().map(|d| StreamEvent::data(*d)).collect();
        run_batches(request, &events, &[events.len()])
    }

    #[test]
    fn stream_state_survives_every_batching() {
        let events: Vec<StreamEvent> = STREAM.iter().map(|d| StreamEvent::data(*d)).collect();
        for batches in run::batchings(events.len()) {
            let o = run_batches(
                r#"{"stream_options":{"include_usage":true}}"#,
                &events,
                &batches,
            )
            .unwrap();
            assert_eq!(o.chunks.len(), 3, "{batches:?}");
            assert!(
                o.chunks
                    .iter()
                    .all(|c| json(c.as_bytes())["model"] == "gpt-eu")
            );
            assert_eq!(
                json(o.chunks[0].as_bytes())["choices"][0]["delta"]["content"],
                "Hé"
            );
            assert_eq!(o.usage, Some(Usage::new(3, 1).with_cached_prompt_tokens(2)));
            assert!(o.done);
        }
    }

    #[test]
    fn state_is_two_flags() {
        let s = Stream {
            finished: true,
            forward_usage_chunk: false,
        };
        assert_eq!(Stream::restore(&s.save()).unwrap(), s);
        assert!(Stream::restore(&[1]).is_err());
        assert!(Stream::restore(&[1, 0, 0]).is_err());
    }

    #[test]
    fn usage_chunk_is_forwarded_only_to_callers_that_asked() {
        let o = run_events(r#"{"stream":true}"#, &STREAM).unwrap();
        assert_eq!(
            o.chunks.len(),
            2,
            "usage-only chunk dropped: {:?}",
            o.chunks
        );
        let u = o.usage.expect("usage still reported to the host");
        assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 1));
        assert!(o.done);
        assert!(wants_usage(r#"{"stream_options":{"include_usage":true}}"#));
        assert!(!wants_usage(
            r#"{"stream_options":{"include_usage":false}}"#
        ));
        assert!(!wants_usage(r#"{"stream_options":null}"#));
        assert!(!wants_usage("not json"));
    }

    #[test]
    fn nothing_after_done_and_blank_events_are_skipped() {
        let o = run_events("{}", &["", STREAM[0], "  [DONE]\n", "{\"error\":{}}"]).unwrap();
        assert_eq!(o.chunks.len(), 1);
        assert!(o.done);
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let e = run_events(
            "{}",
            &["{\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}"],
        )
        .unwrap_err();
        assert!(matches!(e.class, ErrorClass::Overloaded));
        assert_eq!(e.message, "stream ended before completion");
        // A finish_reason without [DONE] is complete enough (some servers omit it).
        let ok = run_events(
            "{}",
            &["{\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}"],
        )
        .unwrap();
        assert_eq!(ok.chunks.len(), 1);
        assert!(!ok.done);
    }

    #[test]
    fn stream_errors() {
        // Events that are not chunks are skipped and counted, not fatal:
        // the host decides when there are too many.
        let ok = run_events(
            "{}",
            &[
                "{\"choices\": [",
                "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
                "[1]",
                "[DONE]",
            ],
        )
        .unwrap();
        assert_eq!((ok.chunks.len(), ok.malformed), (1, 2));
        let e = run_events(
            "{}",
            &["{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}"],
        )
        .unwrap_err();
        assert!(matches!(e.class, ErrorClass::Overloaded));
        assert!(e.message.contains("overloaded"));
        // A named error event, JSON or not.
        let named =
            |data: &str| run_batches("{}", &[StreamEvent::new("error", data)], &[1]).unwrap_err();
        let e = named("{\"message\":\"maximum context length is 10\"}");
        assert!(matches!(e.class, ErrorClass::ContextLengthExceeded));
        let e = named("gone away");
        assert_eq!(e.message, "upstream stream error: gone away");
    }
}
