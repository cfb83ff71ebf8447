//! A canonical answer → an Anthropic `message`.

use serde_json::{Value, json};

/// Anthropic's `stop_reason` for a canonical finish reason, and the stop
/// sequence that ended the answer when the deployment named one (an
/// Anthropic deployment does: its adapter passes it on as the choice's
/// `stop_sequence`). An answer that is a refusal (OpenAI's `refusal`) says
/// `refusal` whatever its finish reason.
pub fn stop_reason(
    finish: Option<&str>,
    stop_sequence: Option<&str>,
    refused: bool,
) -> &'static str {
    if refused {
        return "refusal";
    }
    match finish {
        Some("stop") if stop_sequence.is_some() => "stop_sequence",
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// The stop sequence a canonical choice names, only beside the finish
/// reason it explains (`stop`).
pub fn stop_sequence(choice: &Value) -> Option<&str> {
    choice["stop_sequence"]
        .as_str()
        .filter(|_| choice["finish_reason"] == "stop")
}

/// Anthropic's usage for a canonical `usage` object: its input tokens
/// exclude those read from and written to the prompt cache, which it counts
/// apart (the writes are known from an Anthropic deployment only).
pub fn usage(u: &Value) -> Value {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let details = &u["prompt_tokens_details"];
    let cached = n(&details["cached_tokens"]);
    let written = n(&details["cache_creation_tokens"]);
    json!({
        "input_tokens": n(&u["prompt_tokens"]).saturating_sub(cached).saturating_sub(written),
        "output_tokens": n(&u["completion_tokens"]),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    })
}

/// A message id: the canonical answer's, made to look like Anthropic's.
pub fn message_id(canonical_id: Option<&str>) -> String {
    match canonical_id {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => "msg_switchyard".to_owned(),
    }
}

/// The Anthropic message for a canonical `chat.completion` body (its first
/// choice: Anthropic answers one), or why it cannot be one: no choice, or a
/// tool call whose arguments are not a JSON object in an answer that was
/// not cut short (Anthropic's `input` is an object; `{}` would have the
/// caller run the tool with nothing). A refusal (OpenAI's
/// `message.refusal`) is the text, with `stop_reason: "refusal"`.
pub fn to_message(body: &[u8]) -> Result<Vec<u8>, String> {
    let no_choice = || "the answer has no choice to translate".to_string();
    let c: Value = serde_json::from_slice(body).map_err(|_| no_choice())?;
    let choice = c["choices"].get(0).ok_or_else(no_choice)?;
    let msg = &choice["message"];
    let stop_sequence = stop_sequence(choice);
    let cut = choice["finish_reason"] == "length";
    let refusal = msg["refusal"].as_str().filter(|t| !t.is_empty());
    let mut content = Vec::new();
    for text in [msg["content"].as_str(), refusal].into_iter().flatten() {
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
    }
    for (i, call) in msg["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input = match serde_json::from_str::<Value>(args) {
            Ok(input @ Value::Object(_)) => input,
            // Cut by the length limit: the stop reason says so.
            _ if cut => json!({}),
            _ => {
                let head: String = args.chars().take(80).collect();
                return Err(format!(
                    "tool call {i} ({}) has arguments that are not a JSON object: {head:?}",
                    call["function"]["name"].as_str().unwrap_or_default()
                ));
            }
        };
        content.push(json!({
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": input,
        }));
    }
    let message = json!({
        "id": message_id(c["id"].as_str()),
        "type": "message",
        "role": "assistant",
        "model": c["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str(), stop_sequence, refusal.is_some()),
        "stop_sequence": stop_sequence,
        "usage": usage(&c["usage"]),
    });
    serde_json::to_vec(&message).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_tools() {
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "dep",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 100}}
        });
        let m: Value =
            serde_json::from_slice(&to_message(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(m["id"], "msg_chatcmpl-1");
        assert_eq!(m["type"], "message");
        assert_eq!(
            m["content"][0],
            json!({"type": "text", "text": "Checking."})
        );
        assert_eq!(m["content"][1]["input"]["city"], "Paris");
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["input_tokens"], 20);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 100);
        assert_eq!(m["usage"]["output_tokens"], 9);
        assert!(to_message(b"{}").unwrap_err().contains("no choice"));
    }

    /// An OpenAI refusal is the text with `stop_reason: "refusal"`; tool
    /// arguments that are not a JSON object are an error naming the call,
    /// unless the answer was cut by its length limit (`max_tokens` says so).
    #[test]
    fn refusals_and_unusable_tool_arguments() {
        let answer = |message: Value, finish: &str| {
            let body = json!({"id": "c", "model": "dep", "usage": {},
                "choices": [{"index": 0, "message": message, "finish_reason": finish}]});
            to_message(body.to_string().as_bytes())
                .map(|m| serde_json::from_slice::<Value>(&m).unwrap())
        };
        let m = answer(
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
            "stop",
        )
        .unwrap();
        assert_eq!(
            m["content"],
            json!([{"type": "text", "text": "I can't help with that."}])
        );
        assert_eq!(m["stop_reason"], "refusal");
        let call = |args: &str| {
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": args}}]})
        };
        for bad in ["{\"city\": \"Par", "[1]", "not json"] {
            let why = answer(call(bad), "tool_calls").unwrap_err();
            assert!(why.contains("tool call 0 (get_weather)"), "{why}");
        }
        let cut = answer(call("{\"city\": \"Par"), "length").unwrap();
        assert_eq!(cut["content"][0]["input"], json!({}));
        assert_eq!(cut["stop_reason"], "max_tokens");
    }

    #[test]
    fn a_stop_sequence_and_cache_writes_come_back_as_anthropic_says_them() {
        let body = json!({
            "id": "msg_1", "object": "chat.completion", "created": 1, "model": "dep",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done"},
                "finish_reason": "stop", "logprobs": null, "stop_sequence": "END"}],
            "usage": {"prompt_tokens": 124, "completion_tokens": 9,
                "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_tokens": 4}}
        });
        let m: Value =
            serde_json::from_slice(&to_message(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(m["stop_reason"], "stop_sequence");
        assert_eq!(m["stop_sequence"], "END");
        assert_eq!(
            m["usage"],
            json!({"input_tokens": 20, "output_tokens": 9,
                "cache_read_input_tokens": 100, "cache_creation_input_tokens": 4})
        );
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(stop_reason(Some("stop"), None, false), "end_turn");
        assert_eq!(
            stop_reason(Some("stop"), Some("END"), false),
            "stop_sequence"
        );
        assert_eq!(stop_reason(Some("length"), None, false), "max_tokens");
        assert_eq!(stop_reason(Some("content_filter"), None, false), "refusal");
        assert_eq!(stop_reason(None, None, false), "end_turn");
        assert_eq!(stop_reason(Some("stop"), Some("END"), true), "refusal");
    }
}
