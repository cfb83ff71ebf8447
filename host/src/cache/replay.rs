//! A cached answer replayed as a stream: the chunks a live stream of the
//! same answer has (the role, the content, tool calls, the finish reason,
//! the usage when the caller asked for it with `stream_options`), then
//! `[DONE]`.

use serde_json::{Value, json};

/// The SSE bytes of `completion` (a canonical `chat.completion`).
pub fn sse(completion: &[u8], include_usage: bool) -> Result<Vec<u8>, String> {
    let answer: Value =
        serde_json::from_slice(completion).map_err(|e| format!("cached answer: {e}"))?;
    let id = answer
        .get("id")
        .cloned()
        .unwrap_or(json!("chatcmpl-cached"));
    let model = answer.get("model").cloned().unwrap_or(Value::Null);
    let created = answer.get("created").cloned().unwrap_or(json!(0));
    let chunk = |choices: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": choices})
    };
    let mut out = Vec::with_capacity(completion.len() * 2);
    let mut push = |v: &Value| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    let empty = Vec::new();
    let choices = answer
        .get("choices")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(i));
        let message = choice.get("message").cloned().unwrap_or(json!({}));
        push(&chunk(json!([{"index": index,
            "delta": {"role": "assistant", "content": ""}, "finish_reason": null}])));
        if let Some(text) = message.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            push(&chunk(json!([{"index": index, "delta": {"content": text},
                "finish_reason": null}])));
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .filter(|c| c.is_object())
                .enumerate()
                .map(|(n, c)| {
                    let mut c = c.clone();
                    c["index"] = json!(n);
                    c
                })
                .collect();
            push(&chunk(
                json!([{"index": index, "delta": {"tool_calls": calls},
                "finish_reason": null}]),
            ));
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        let mut end = json!({"index": index, "delta": {}, "finish_reason": finish});
        // The stop sequence that ended it, when the deployment named one.
        if let Some(s) = choice.get("stop_sequence").filter(|s| s.is_string()) {
            end["stop_sequence"] = s.clone();
        }
        push(&chunk(json!([end])));
    }
    if include_usage && let Some(usage) = answer.get("usage") {
        let mut last = chunk(json!([]));
        last["usage"] = usage.clone();
        push(&last);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Ok(out)
}
