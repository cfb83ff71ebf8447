//! Anthropic message → canonical `chat.completion`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::canonical::{
    AssistantMessage, ChatCompletion, Choice, CompletionUsage, ToolCall, finish,
};
use switchyard_sdk::{UpstreamError, Usage, errors};

use crate::request::JSON_TOOL;

/// Anthropic's `message` object (non-streamed answer, and `message_start`).
#[derive(Debug, Deserialize)]
pub struct MessageBody<'a> {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: Option<&'a str>,
    #[serde(borrow, default)]
    pub content: Vec<Block<'a>>,
    #[serde(default)]
    pub stop_reason: Option<&'a str>,
    /// The caller's stop sequence that ended the answer
    /// (`stop_reason: "stop_sequence"`).
    #[serde(borrow, default, deserialize_with = "switchyard_sdk::canonical::text")]
    pub stop_sequence: Option<Cow<'a, str>>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// One content block of an answer.
#[derive(Debug, Deserialize)]
pub struct Block<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(borrow, default)]
    pub input: Option<&'a RawValue>,
}

/// Anthropic's usage: input tokens exclude those read from or written to
/// the prompt cache, which are counted apart.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub struct WireUsage {
    #[serde(default)]
    pub input_tokens: Option<u32>,
    #[serde(default)]
    pub output_tokens: Option<u32>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u32>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u32>,
}

impl WireUsage {
    /// Usage as the canonical form counts it: all prompt tokens, of which
    /// those read from the cache are cached and those written to it are
    /// cache writes (each billed at its own price).
    pub fn to_usage(self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(written)
            .saturating_add(read);
        Usage::new(prompt, self.output_tokens.unwrap_or(0))
            .with_cached_prompt_tokens(read)
            .with_cache_write_tokens(written)
    }
}

/// The canonical finish reason of an Anthropic `stop_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => finish::LENGTH,
        "tool_use" => finish::TOOL_CALLS,
        "refusal" => finish::CONTENT_FILTER,
        // end_turn, stop_sequence, pause_turn, and whatever comes next.
        _ => finish::STOP,
    }
}

/// A 2xx body in, canonical answer out. The JSON tool's input (see
/// [`JSON_TOOL`]) becomes the answer's text, finished with `stop`.
pub fn parse(
    deployment: &str,
    headers: &str,
    body: &[u8],
) -> Result<(String, Option<Usage>), UpstreamError> {
    let msg = match MessageBody::parse(body) {
        Ok(m) => m,
        Err(e) => {
            return Err(errors::unusable(
                format_args!("upstream answer is not a message ({e})"),
                body,
            ));
        }
    };
    if msg.kind == Some("error") {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        return Err(errors::classify_stream_error(&v));
    }
    if msg.kind != Some("message") {
        return Err(errors::unusable("upstream answer is not a message", body));
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut json_answer = false;
    for block in msg.content {
        match block.kind {
            "text" => text.push_str(block.text.as_deref().unwrap_or("")),
            "tool_use" => {
                let name = block.name.unwrap_or_default();
                let input = block.input.map_or("{}", RawValue::get);
                if name == JSON_TOOL {
                    json_answer = true;
                    text = input.to_owned();
                    continue;
                }
                calls.push(ToolCall::new(
                    block.id.unwrap_or_default(),
                    name,
                    compact(input),
                ));
            }
            // thinking, redacted_thinking, server tool blocks: not part of the answer.
            _ => {}
        }
    }
    let finish = match msg.stop_reason {
        // The JSON answer's tool was called: the answer is whole.
        Some("tool_use") if json_answer => finish::STOP,
        Some(r) => finish_reason(r),
        None => finish::STOP,
    };
    let content = (!text.is_empty() || calls.is_empty()).then_some(text);
    let usage = msg.usage.map(WireUsage::to_usage);
    let stop_sequence = match msg.stop_reason {
        Some("stop_sequence") => msg.stop_sequence.map(Cow::into_owned),
        _ => None,
    };
    let mut answer = ChatCompletion::new(
        msg.id,
        switchyard_sdk::created_s(headers),
        deployment,
        Choice {
            index: 0,
            message: AssistantMessage::new(content, calls),
            finish_reason: Some(finish.to_owned()),
            logprobs: None,
            stop_sequence,
        },
    );
    answer.usage = usage.map(CompletionUsage::from);
    Ok((answer.to_json(), usage))
}

/// JSON text without insignificant whitespace (tool arguments as OpenAI
/// writes them); `raw` was read as JSON, so it parses again.
fn compact(raw: &str) -> String {
    serde_json::from_str::<Value>(raw).map_or_else(|_| raw.to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> (Value, Option<Usage>) {
        let (text, usage) = parse("dep", "", body.as_bytes()).unwrap();
        (serde_json::from_str(&text).unwrap(), usage)
    }

    #[test]
    fn text_answer_with_cache_usage() {
        let (a, u) = answer(
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"thinking","thinking":"hmm","signature":"x"},{"type":"text","text":"Hello"},{"type":"text","text":" there"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":7}}"#,
        );
        assert_eq!(a["id"], "msg_1");
        assert_eq!(a["model"], "dep");
        assert_eq!(a["object"], "chat.completion");
        assert_eq!(a["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(a["choices"][0]["finish_reason"], "stop");
        let want = Usage::new(115, 7)
            .with_cached_prompt_tokens(100)
            .with_cache_write_tokens(5);
        assert_eq!(u, Some(want));
        assert_eq!(a["usage"]["total_tokens"], 122);
        assert_eq!(a["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(
            a["usage"]["prompt_tokens_details"]["cache_creation_tokens"],
            5
        );
    }

    #[test]
    fn tool_use_and_stop_reasons() {
        let (a, _) = answer(
            r#"{"id":"m","type":"message","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{ "city" : "Paris" }}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}"#,
        );
        let call = &a["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "toolu_1");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
        assert_eq!(a["choices"][0]["finish_reason"], "tool_calls");
        let (a, _) = answer(
            r#"{"id":"m","type":"message","content":[{"type":"tool_use","id":"t","name":"f","input":{}}],"stop_reason":"tool_use"}"#,
        );
        assert!(a["choices"][0]["message"]["content"].is_null());
        for (reason, want) in [
            ("max_tokens", "length"),
            ("stop_sequence", "stop"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
        ] {
            let (a, _) = answer(&format!(
                r#"{{"id":"m","type":"message","content":[],"stop_reason":"{reason}"}}"#
            ));
            assert_eq!(a["choices"][0]["finish_reason"], want);
            assert_eq!(a["choices"][0]["message"]["content"], "");
        }
    }

    #[test]
    fn json_tool_becomes_text() {
        let (a, _) = answer(&format!(
            r#"{{"id":"m","type":"message","content":[{{"type":"tool_use","id":"t","name":"{JSON_TOOL}","input":{{"name":"Paris"}}}}],"stop_reason":"tool_use"}}"#
        ));
        assert_eq!(a["choices"][0]["message"]["content"], r#"{"name":"Paris"}"#);
        assert!(a["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(a["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn unusable_bodies() {
        for body in ["<html>", "[]", r#"{"type":"completion"}"#] {
            let e = parse("d", "", body.as_bytes()).unwrap_err();
            assert_eq!(e.class, switchyard_sdk::ErrorClass::Overloaded, "{body}");
            assert!(e.message.contains(&body[..2]), "{}", e.message);
        }
        let e = parse(
            "d",
            "",
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.class, switchyard_sdk::ErrorClass::Overloaded);
        assert!(e.message.contains("Overloaded"));
    }
}
