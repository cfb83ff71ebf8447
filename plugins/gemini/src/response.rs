//! A `generateContent` answer in, canonical `chat.completion` out; and what
//! answers and stream events share: finish reasons, usage, ids, arguments.

use serde_json::value::RawValue;
use switchyard_sdk::canonical::{
    AssistantMessage, ChatCompletion, Choice, ToolCall, finish, from_body,
};
use switchyard_sdk::errors::unusable;
use switchyard_sdk::{
    ChatResponse, ErrorClass, HttpResponse, Target, UpstreamError, Usage, created_s,
};

use crate::wire::{Candidate, PromptFeedback, Response, UsageMetadata};

/// The canonical answer for a 2xx `response`: one choice per candidate,
/// named after the deployment. A body that is not an answer is an attempt
/// failure (the next deployment may do better), a refused prompt a content
/// filter error.
pub fn parse(target: &Target, response: &HttpResponse) -> Result<ChatResponse, UpstreamError> {
    let body = response.body.as_slice();
    // A struct also reads from a JSON array (positionally): objects only.
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(unusable("Gemini answer is not a JSON object", body));
    }
    // A UTF-8 body (the norm) is read by the usual-case reader first.
    let parsed = match std::str::from_utf8(body) {
        Ok(text) => Response::parse(text),
        Err(_) => from_body(body),
    };
    let answer = parsed.map_err(|e| {
        unusable(
            format_args!("Gemini answer is not a GenerateContentResponse ({e})"),
            body,
        )
    })?;
    let candidates = answer.candidates.unwrap_or_default();
    if candidates.is_empty() {
        return Err(blocked(answer.prompt_feedback.as_ref())
            .unwrap_or_else(|| unusable("Gemini answer has no candidates", body)));
    }
    let id = completion_id(answer.response_id.as_deref(), body);
    let choices = candidates
        .into_iter()
        .enumerate()
        .map(|(position, c)| choice(&id, position, c))
        .collect();
    let usage = answer.usage_metadata.as_ref().map(usage);
    let completion = ChatCompletion {
        id,
        object: String::from("chat.completion"),
        created: created_s(&response.headers),
        model: target.deployment.clone(),
        choices,
        usage: usage.map(Into::into),
    };
    Ok(ChatResponse::new(completion.to_json(), usage))
}

/// One candidate as a choice: its text (thought summaries left out) and its
/// function calls.
fn choice(id: &str, position: usize, candidate: Candidate) -> Choice {
    let index = candidate
        .index
        .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
    let mut text = String::new();
    let mut calls = Vec::new();
    let parts = candidate.content.and_then(|c| c.parts).unwrap_or_default();
    for part in parts {
        if part.thought == Some(true) {
            continue;
        }
        if let Some(t) = part.text {
            text.push_str(&t);
        }
        if let Some(call) = part.function_call {
            let n = u32::try_from(calls.len()).unwrap_or(u32::MAX);
            calls.push(ToolCall::new(
                call_id(id, index, n, call.id.as_deref()),
                call.name,
                arguments(call.args),
            ));
        }
    }
    let finish_reason = candidate
        .finish_reason
        .as_deref()
        .and_then(|r| finish_reason(r, !calls.is_empty()));
    // Null content only beside tool calls: clients read a string otherwise.
    let content = (!text.is_empty() || calls.is_empty()).then_some(text);
    Choice {
        index,
        message: AssistantMessage::new(content, calls),
        finish_reason: finish_reason.map(String::from),
        logprobs: None,
        stop_sequence: None,
    }
}

/// The content-filter error for a prompt Gemini refused to answer at all
/// (no candidates, `promptFeedback.blockReason` set); `None` otherwise.
pub fn blocked(feedback: Option<&PromptFeedback>) -> Option<UpstreamError> {
    let reason = feedback?.block_reason.as_deref()?;
    Some(UpstreamError::new(
        ErrorClass::ContentFiltered,
        format!("Gemini blocked the prompt (blockReason {reason})"),
    ))
}

/// The canonical finish reason for Gemini's, `None` for none (or the
/// unspecified one). The canonical set has four: the safety family is
/// `content_filter`, `MAX_TOKENS` is `length`, and every other end
/// (`STOP`, `OTHER`, `MALFORMED_FUNCTION_CALL`, ...) is `stop`, or
/// `tool_calls` when the answer calls functions, as OpenAI reports it.
pub fn finish_reason(gemini: &str, called: bool) -> Option<&'static str> {
    Some(match gemini {
        "" | "FINISH_REASON_UNSPECIFIED" => return None,
        "MAX_TOKENS" => finish::LENGTH,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => finish::CONTENT_FILTER,
        _ if called => finish::TOOL_CALLS,
        _ => finish::STOP,
    })
}

/// Canonical usage from `usageMetadata`. Gemini counts thinking apart from
/// the answer (`thoughtsTokenCount`) and bills it as output, so completion
/// tokens are both, and the thoughts are also the reasoning tokens.
pub fn usage(u: &UsageMetadata) -> Usage {
    let n = |v: Option<u64>| u32::try_from(v.unwrap_or(0)).unwrap_or(u32::MAX);
    let thoughts = n(u.thoughts_token_count);
    Usage::new(
        n(u.prompt_token_count),
        n(u.candidates_token_count).saturating_add(thoughts),
    )
    .with_cached_prompt_tokens(n(u.cached_content_token_count))
    .with_reasoning_tokens(thoughts)
}

/// The answer's id: Gemini's `responseId`, else one derived from `seed`
/// (the body), so the same answer always gets the same id without a clock
/// or a random source in the sandbox.
pub fn completion_id(response_id: Option<&str>, seed: &[u8]) -> String {
    match response_id.filter(|r| !r.is_empty()) {
        Some(r) => r.to_owned(),
        None => format!("chatcmpl-{:016x}", fnv1a(seed)),
    }
}

/// A tool call's id: Gemini's own when it gave one, else call `n` of
/// candidate `candidate` of answer `completion_id`. Naming the answer keeps
/// ids unique across the turns of a conversation, which clients that key
/// tool results by id rely on.
pub fn call_id(completion_id: &str, candidate: u32, n: u32, given: Option<&str>) -> String {
    match given.filter(|g| !g.is_empty()) {
        Some(g) => g.to_owned(),
        None => {
            let stem = completion_id
                .strip_prefix("chatcmpl-")
                .unwrap_or(completion_id);
            format!("call_{stem}_{candidate}_{n}")
        }
    }
}

/// A call's arguments as compact JSON text (`{}` when there are none).
/// Gemini pretty-prints whole answers; OpenAI's arguments are compact.
pub fn arguments(args: Option<&RawValue>) -> String {
    args.map_or_else(|| String::from("{}"), |raw| compact(raw.get()))
}

/// `json` (valid JSON text) without whitespace outside strings.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut start = 0;
    for (i, b) in json.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            // Whitespace is ASCII, so these are character boundaries.
            out.push_str(json.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    out.push_str(json.get(start..).unwrap_or_default());
    out
}

/// 64-bit FNV-1a: a stable, dependency-free digest for made-up ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
