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
use switchyard_sdk::canonical::read::Reader;
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

/// [`usage_of`] a raw `usage` member, without building a `Value` (a map with
/// a hasher per object: most of a usage chunk's cost). A count that is not a
/// non-negative integer reads as 0, as `Value::as_u64` has it. What the
/// borrowed read refuses (a duplicate member, say) is read as a `Value`.
fn usage_in(raw: &str) -> Option<Usage> {
    /// The members of an object named in `names`, raw; `Ok(None)` when `raw`
    /// is not an object, `Err` for a duplicate (or a name serde refuses).
    fn members<'a, const N: usize>(
        raw: &'a str,
        names: [&str; N],
    ) -> Result<Option<[Option<&'a str>; N]>, ()> {
        if !raw.starts_with('{') {
            return Ok(None);
        }
        let mut found = [None; N];
        let mut r = Reader::new(raw);
        r.object().map_err(|_| ())?;
        while let Some(key) = r.key().map_err(|_| ())? {
            let value = r.value().map_err(|_| ())?;
            let name = key.name().ok_or(())?;
            if let Some(i) = names.iter().position(|n| *n == name)
                && found[i].replace(value).is_some()
            {
                return Err(());
            }
        }
        Ok(Some(found))
    }
    let n = |v: Option<&str>| {
        v.and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |n| n.min(u32::MAX as u64) as u32)
    };
    let read = || -> Result<Option<Usage>, ()> {
        let Some([prompt, completion, prompt_details, completion_details]) = members(
            raw,
            [
                "prompt_tokens",
                "completion_tokens",
                "prompt_tokens_details",
                "completion_tokens_details",
            ],
        )?
        else {
            return Ok(None);
        };
        fn detail<'a>(d: Option<&'a str>, name: &str) -> Result<Option<&'a str>, ()> {
            Ok(d.map_or(Ok(None), |d| members(d, [name]))?
                .and_then(|[v]| v))
        }
        let cached = detail(prompt_details, "cached_tokens")?;
        let reasoning = detail(completion_details, "reasoning_tokens")?;
        Ok(Some(
            Usage::new(n(prompt), n(completion))
                .with_cached_prompt_tokens(n(cached))
                .with_reasoning_tokens(n(reasoning)),
        ))
    };
    read().unwrap_or_else(|()| {
        serde_json::from_str::<Value>(raw)
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

/// The common case of [`parse_body`] without rebuilding the body: one pass
/// finds the members it reads, and the deployment's name is spliced in place
/// of the upstream's `model` (or put first when there is none). `None` for
/// anything else (not UTF-8, not an object, no `choices` array, a duplicate
/// member): the general path then decides, and says why.
fn parse_in_place(deployment: &str, body: &[u8]) -> Option<ChatResponse> {
    let text = std::str::from_utf8(body).ok()?;
    let mut r = Reader::new(text);
    // Objects only (the reader refuses anything else here).
    r.object().ok()?;
    let (mut model, mut choices, mut usage) = (None, None, None);
    while let Some(key) = r.key().ok()? {
        let value = r.value().ok()?;
        let slot = match &*key.name()? {
            "model" => &mut model,
            "choices" => &mut choices,
            "usage" => &mut usage,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    }
    // Text the general path's `usage` read may refuse (see `chunk_in_place`)
    // is left to it.
    if r.saw_odd() {
        return None;
    }
    r.finish().ok()?;
    if !choices?.starts_with('[') {
        return None;
    }
    let out = with_model(text, model, deployment)?;
    let usage = usage.filter(|u| *u != "null").and_then(usage_in);
    Some(ChatResponse::new(out, usage))
}

/// `text` (a JSON object) with `deployment` as its `model`: spliced in place
/// of `old`, the upstream's (a span of `text`), or put first.
fn with_model(text: &str, old: Option<&str>, deployment: &str) -> Option<String> {
    // The name is written straight into the answer (quoted and escaped).
    let mut out = String::with_capacity(text.len() + deployment.len() + 11);
    match old {
        Some(old) => {
            // `old` borrows from `text`: its offset is where it starts there.
            let start = old.as_ptr() as usize - text.as_ptr() as usize;
            let end = start + old.len();
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

/// What a chunk's `choices` tell the parser.
#[derive(Default)]
struct Choices {
    /// `choices` was an empty array.
    empty: bool,
    /// A choice has a non-null `finish_reason`.
    finished: bool,
}

/// Reads a chunk's `choices` in the same pass as the rest of the chunk
/// (every streamed token goes through here). Anything but an array is
/// ignored, as if absent; `None` for an array with a member that is not an
/// object, or a choice with two `finish_reason`s (the general path decides).
fn choices_in(r: &mut Reader) -> Option<Choices> {
    if r.next_byte() != Some(b'[') {
        r.value().ok()?;
        return Some(Choices::default());
    }
    r.array().ok()?;
    let mut seen = Choices {
        empty: true,
        finished: false,
    };
    while r.element().ok()? {
        seen.empty = false;
        if r.next_byte() != Some(b'{') {
            return None;
        }
        r.object().ok()?;
        let mut finish = None;
        while let Some(key) = r.key().ok()? {
            let value = r.value().ok()?;
            if key.name()? == "finish_reason" && finish.replace(value != "null").is_some() {
                return None;
            }
        }
        seen.finished |= finish == Some(true);
    }
    Some(seen)
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
    if !data.starts_with('{') {
        return None;
    }
    let mut r = Reader::new(data);
    r.object().ok()?;
    let (mut model, mut usage, mut error) = (None, None, None);
    let mut choices: Option<Choices> = None;
    while let Some(key) = r.key().ok()? {
        let name = key.name()?;
        let again = match &*name {
            "choices" => {
                let c = choices_in(&mut r)?;
                choices.replace(c).is_some()
            }
            "model" => model.replace(r.value().ok()?).is_some(),
            "usage" => usage.replace(r.value().ok()?).is_some(),
            "error" => error.replace(r.value().ok()?).is_some(),
            _ => {
                r.value().ok()?;
                false
            }
        };
        // A duplicate member: the general path decides.
        if again {
            return None;
        }
    }
    // Text after the object; a line break (multi-line `data:`, read with
    // the trailing whitespace too), which would end the event sent on: such
    // a chunk is rewritten compact by the general path. Text the general
    // path may refuse as a `Value` (a lone surrogate escape, a number
    // beyond `f64`) is left to it, so the two never disagree.
    if r.next_byte().is_some() || r.saw_line_break() || r.saw_odd() {
        return None;
    }
    if error.is_some_and(|e| e != "null") {
        return None;
    }
    let choices = choices.unwrap_or_default();
    let usage = usage.filter(|u| *u != "null");
    Some(Chunk {
        text: with_model(data, model, deployment)?,
        usage_only: choices.empty && usage.is_some(),
        usage: usage.and_then(usage_in),
        finished: choices.finished,
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
    use switchyard_sdk::canonical::read::{assert_fast_path_agrees, one_char_changes};
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
                let old = text.find(r#""up\"stream""#).map(|i| &text[i..i + 12]);
                let out = with_model(text, old, name).unwrap();
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

    /// The general path of [`build_body`], for comparison.
    fn built_in_general(model: &str, request: &str) -> Result<Value, BuildError> {
        let failed = |e: serde_json::Error| BuildError::Failed(e.to_string());
        let m = serde_json::value::to_raw_value(model).map_err(failed)?;
        let mut req = serde_json::from_str::<RawObject>(request)
            .map_err(|e| BuildError::Failed(e.to_string()))?;
        req.insert(Cow::Borrowed("model"), &m);
        let streaming = req.get("stream").is_some_and(|s| s.get() == "true");
        let mut v: Value = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
        if streaming {
            v["stream_options"]["include_usage"] = Value::Bool(true);
        }
        Ok(v)
    }

    /// Every one-byte change of a few requests: where the request is built in
    /// place, the general path builds the same JSON.
    #[test]
    fn built_in_place_as_in_general_on_any_one_byte_change() {
        let docs = [
            r#"{"model":"route","messages":[{"role":"user","content":"hi \"there\""}],"stream":true,"temperature":0.5}"#,
            r#" { "messages" : [ ] , "max_tokens" : 10 } "#,
        ];
        let probes = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "t", "n", " ", "\n",
        ];
        let answered = assert_fast_path_agrees(
            &docs,
            &probes,
            |v| build_in_place("gpt \"x\"", v).map(|fast| json(fast.as_bytes())),
            |v| built_in_general("gpt \"x\"", v).expect(v),
        );
        assert!(answered > 500, "{answered}");
        // Left to the general path.
        for request in [
            r#"{"model":"a","model":"b"}"#,
            r#"{"mod\u0065l":"a"}"#,
            r#"{"stream":true,"stream_options":{"include_usage":false}}"#,
            "[]",
        ] {
            assert!(build_in_place("m", request).is_none(), "{request}");
        }
        // Many members: the general path (whose lookups are not quadratic).
        let wide = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!(r#""k{i}":0"#)).collect();
            format!("{{{}}}", members.join(","))
        };
        assert!(build_in_place("m", &wide(64)).is_some());
        assert!(build_in_place("m", &wide(65)).is_none());
        assert!(json(&build_body("m", &wide(20_000)).unwrap())["k19999"] == 0);
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
            "{\"choices\":[]}\n",
            r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#,
            r#"{"choices":[],"x":1e400}"#,
            "[]",
            "nope",
        ] {
            assert!(chunk_in_place("d", data).is_none(), "{data}");
        }
        let general = chunk_general("d", "{\"choices\":\n[]}").unwrap().unwrap();
        assert!(!general.text.contains('\n'));
    }

    /// Every one-byte change of a few chunks: where the in-place read answers,
    /// the general path agrees with it; where the text is not JSON, the
    /// in-place read does not answer.
    #[test]
    fn in_place_never_disagrees_on_any_one_byte_change() {
        let docs = [
            r#"{"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"h\u00e9"},"finish_reason":null}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        ];
        let probes = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "n", " ", "\n", "\\ud800", "e400",
            "9e9",
        ];
        let mut answered = 0;
        for doc in docs {
            for v in one_char_changes(doc, &probes) {
                let valid = serde_json::from_str::<Value>(&v).is_ok();
                let Some(fast) = chunk_in_place("d", &v) else {
                    continue;
                };
                answered += 1;
                assert!(valid, "{v}");
                let general = chunk_general("d", &v).unwrap().unwrap();
                assert_eq!(
                    json(fast.text.as_bytes()),
                    json(general.text.as_bytes()),
                    "{v}"
                );
                assert_eq!(fast.usage, general.usage, "{v}");
                assert_eq!(fast.finished, general.finished, "{v}");
                assert_eq!(fast.usage_only, general.usage_only, "{v}");
            }
        }
        assert!(answered > 200, "{answered}");
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
            assert_eq!(usage_in(raw.get()), usage_of(Some(&value)), "{usage}");
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
            let step = run::parse_stream::<OpenAi>(&state, now)?;
            o.chunks.extend(step.chunks);
            o.usage = step.usage.or(o.usage);
            o.done |= step.done;
            o.malformed += step.malformed;
            state = step.state.unwrap_or(state);
        }
        let last = run::end_stream::<OpenAi>(&state)?;
        o.chunks.extend(last.chunks);
        o.usage = last.usage.or(o.usage);
        o.done |= last.done;
        Ok(o)
    }

    fn run_events(request: &str, data: &[&str]) -> Result<Outcome, UpstreamError> {
        let events: Vec<StreamEvent> = data.iter().map(|d| StreamEvent::data(d)).collect();
        run_batches(request, &events, &[events.len()])
    }

    #[test]
    fn stream_state_survives_every_batching() {
        let events: Vec<StreamEvent> = STREAM.iter().map(|d| StreamEvent::data(d)).collect();
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
