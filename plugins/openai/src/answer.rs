//! Answers: a 2xx body read into the canonical answer, the deployment's name
//! spliced in, and usage read without building a tree.

use std::borrow::Cow;

use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::canonical::push_json_string;
use switchyard_sdk::canonical::read::Reader;
use switchyard_sdk::errors as classify;
use switchyard_sdk::{ChatResponse, ErrorClass, UpstreamError, Usage};

pub(crate) fn overloaded(message: String) -> UpstreamError {
    UpstreamError::new(ErrorClass::Overloaded, message)
}

/// Usage from an OpenAI `usage` object; `None` when absent or null. Cached
/// prompt tokens (`prompt_tokens_details.cached_tokens`) and reasoning tokens
/// (`completion_tokens_details.reasoning_tokens`) are 0 when not reported.
pub(crate) fn usage_of(v: Option<&Value>) -> Option<Usage> {
    let u = v.filter(|u| u.is_object())?;
    let n = |v: Option<&Value>| {
        v.and_then(Value::as_u64)
            .map_or(0, |n| n.min(u32::MAX as u64) as u32)
    };
    let detail = |group: &str, k: &str| n(u.get(group).and_then(|d| d.get(k)));
    Some(
        Usage::new(n(u.get("prompt_tokens")), n(u.get("completion_tokens")))
            .with_cached_prompt_tokens(detail("prompt_tokens_details", "cached_tokens"))
            .with_cache_write_tokens(detail("prompt_tokens_details", "cache_creation_tokens"))
            .with_reasoning_tokens(detail("completion_tokens_details", "reasoning_tokens")),
    )
}

/// [`usage_of`] a raw `usage` member, without building a `Value` (a map with
/// a hasher per object: most of a usage chunk's cost). A count that is not a
/// non-negative integer reads as 0, as `Value::as_u64` has it. What the
/// borrowed read refuses (a duplicate member, say) is read as a `Value`.
pub(crate) fn usage_in(raw: &str) -> Option<Usage> {
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
        fn details<'a, const N: usize>(
            d: Option<&'a str>,
            names: [&str; N],
        ) -> Result<[Option<&'a str>; N], ()> {
            Ok(d.map_or(Ok(None), |d| members(d, names))?
                .unwrap_or([None; N]))
        }
        // Cache writes: a gateway in front (another Switchyard) names them.
        let [cached, written] =
            details(prompt_details, ["cached_tokens", "cache_creation_tokens"])?;
        let [reasoning] = details(completion_details, ["reasoning_tokens"])?;
        Ok(Some(
            Usage::new(n(prompt), n(completion))
                .with_cached_prompt_tokens(n(cached))
                .with_cache_write_tokens(n(written))
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
pub(crate) type RawObject<'a> = indexmap::IndexMap<Cow<'a, str>, &'a RawValue>;

/// A 2xx body in, canonical answer out. A body that is not a completion is
/// an upstream failure (overloaded: another deployment may do better), never
/// an answer passed on to the client.
pub(crate) fn parse_body(
    deployment: &str,
    status: u16,
    body: &[u8],
) -> Result<ChatResponse, UpstreamError> {
    if let Some(parsed) = parse_in_place(deployment, body) {
        return Ok(parsed);
    }
    let model =
        serde_json::value::to_raw_value(deployment).map_err(|e| overloaded(e.to_string()))?;
    let mut obj = match serde_json::from_slice::<RawObject>(body) {
        Ok(obj) if obj.get("choices").is_some_and(|c| c.get().starts_with('[')) => obj,
        _ => return Err(not_a_completion(status, body)),
    };
    if !obj.get("choices").is_some_and(|c| has_message(c.get())) {
        return Err(classify::unusable(
            format!("upstream {status} answer has no choice with a message"),
            body,
        ));
    }
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
pub(crate) fn parse_in_place(deployment: &str, body: &[u8]) -> Option<ChatResponse> {
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
    let choices = choices?;
    if !choices.starts_with('[') || !has_message(choices) {
        return None;
    }
    let out = with_model(text, model, deployment)?;
    let usage = usage.filter(|u| *u != "null").and_then(usage_in);
    Some(ChatResponse::new(out, usage))
}

/// Whether `choices` (the text of a JSON array, already checked) starts with
/// a choice that has a `message` object: an answer a client can read. An
/// empty array, or a first choice without a message, would reach the caller
/// as a 200 with nothing in it; it is an attempt failure instead. Read up to
/// the first choice's `message` only.
pub(crate) fn has_message(choices: &str) -> bool {
    let mut r = Reader::new(choices);
    if r.array().is_err() || !r.element().unwrap_or(false) {
        return false;
    }
    let mut found = false;
    r.members(|r, name| {
        if name == "message" && r.next_byte() == Some(b'{') {
            found = true;
            return None;
        }
        r.value().ok().map(drop)
    });
    found
}

/// `text` (a JSON object) with `deployment` as its `model`: spliced in place
/// of `old`, the upstream's (a span of `text`), or put first.
pub(crate) fn with_model(text: &str, old: Option<&str>, deployment: &str) -> Option<String> {
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

/// Why a 2xx body is not a chat completion, for the attempt record.
pub(crate) fn not_a_completion(status: u16, body: &[u8]) -> UpstreamError {
    match serde_json::from_slice::<Value>(body) {
        Err(e) => classify::unusable(format!("upstream {status} body is not JSON ({e})"), body),
        Ok(v) => {
            let why = classify::error_info(&v)
                .message
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            classify::unusable(format!("upstream response has no choices array{why}"), body)
        }
    }
}
