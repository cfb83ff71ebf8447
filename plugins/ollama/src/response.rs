//! A whole Ollama answer (`stream: false`) in, canonical `chat.completion` out.

use switchyard_sdk::canonical::{AssistantMessage, ChatCompletion, Choice};
use switchyard_sdk::errors;
use switchyard_sdk::{ChatResponse, UpstreamError};

use crate::wire::{Reply, answer_id, call_id};

/// The canonical answer for a 2xx `body`, naming `deployment` as its model.
/// `seed` makes the answer's id (and the ids of tool calls Ollama left
/// unnamed); `date_s` is the response's `Date`, for an answer without a
/// readable `created_at`.
///
/// A body that is not a finished chat answer is an attempt failure, never
/// passed on: an `{"error": ...}` object (Ollama reports some failures with
/// a 200) is classified like an error inside a stream; anything else is
/// [`errors::unusable`], so the next deployment may try.
pub fn parse(
    deployment: &str,
    body: &[u8],
    seed: u64,
    date_s: impl FnOnce() -> u64,
) -> Result<ChatResponse, UpstreamError> {
    const NOT_AN_ANSWER: &str = "upstream 200 body is not an Ollama chat answer";
    let Some(reply) = std::str::from_utf8(body).ok().and_then(Reply::parse) else {
        return Err(errors::unusable(NOT_AN_ANSWER, body));
    };
    if reply.is_error() {
        return Err(match serde_json::from_slice(body) {
            Ok(v) => errors::classify_stream_error(&v),
            Err(_) => errors::unusable(NOT_AN_ANSWER, body),
        });
    }
    let Some(message) = &reply.message else {
        return Err(errors::unusable(NOT_AN_ANSWER, body));
    };
    if !reply.is_done() {
        // E.g. one line of a stream where a whole answer was expected.
        return Err(errors::unusable("upstream answer is not finished", body));
    }
    let calls: Vec<_> = message
        .calls()
        .iter()
        .zip(0u32..)
        .map(|(c, n)| c.to_canonical(|| call_id(seed, n)))
        .collect();
    let text = message.text();
    // OpenAI's shape: no content (null) when the answer is only tool calls.
    let content = (!text.is_empty() || calls.is_empty()).then(|| text.to_owned());
    let finish = reply.finish_reason(!calls.is_empty());
    let choice = Choice {
        index: 0,
        message: AssistantMessage::new(content, calls),
        finish_reason: Some(finish.to_owned()),
        logprobs: None,
        stop_sequence: None,
    };
    let created = reply.created().unwrap_or_else(date_s);
    let mut answer = ChatCompletion::new(answer_id(seed), created, deployment, choice);
    let usage = reply.usage();
    answer.usage = usage.map(Into::into);
    Ok(ChatResponse::new(answer.to_json(), usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use switchyard_sdk::{ErrorClass, Usage};

    fn answer(body: &str) -> (Value, Option<Usage>) {
        let r = parse("dep", body.as_bytes(), 0x2a, || 7).unwrap();
        (serde_json::from_str(&r.body).unwrap(), r.usage)
    }

    fn failure(body: &str) -> UpstreamError {
        parse("dep", body.as_bytes(), 0, || 0).unwrap_err()
    }

    #[test]
    fn text_answer() {
        let (a, usage) = answer(
            r#"{"model":"llama3.2","created_at":"2023-12-12T14:13:43.416799Z","message":{"role":"assistant","content":"Hello! How are you today?"},"done":true,"done_reason":"stop","total_duration":5191566416,"load_duration":2154458,"prompt_eval_count":26,"prompt_eval_duration":383809000,"eval_count":298,"eval_duration":4799921000}"#,
        );
        assert_eq!(
            a,
            json!({
                "id": "chatcmpl-000000000000002a",
                "object": "chat.completion",
                "created": 1_702_390_423,
                "model": "dep",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello! How are you today?"},
                    "finish_reason": "stop",
                    "logprobs": null
                }],
                "usage": {"prompt_tokens": 26, "completion_tokens": 298, "total_tokens": 324}
            })
        );
        assert_eq!(usage, Some(Usage::new(26, 298)));
    }

    #[test]
    fn tool_calls_get_ids_and_text_arguments() {
        let (a, _) = answer(
            r#"{"created_at":"2025-07-07T20:32:53.844124Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Tokyo"}}},{"id":"call_k3j2","function":{"index":1,"name":"get_time","arguments":{}}}]},"done_reason":"stop","done":true,"prompt_eval_count":169,"eval_count":18}"#,
        );
        let choice = &a["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([
                {"id": "call_000000000000002a_0", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"}},
                {"id": "call_k3j2", "type": "function",
                 "function": {"name": "get_time", "arguments": "{}"}}
            ])
        );
    }

    #[test]
    fn length_missing_counts_and_date_fallback() {
        let (a, usage) =
            answer(r#"{"message":{"content":"cut"},"done":true,"done_reason":"length"}"#);
        assert_eq!(a["choices"][0]["message"]["content"], "cut");
        assert_eq!(a["choices"][0]["finish_reason"], "length");
        assert_eq!(a["created"], 7, "the Date header's time");
        assert!(usage.is_none() && a.get("usage").is_none());
        let (a, usage) = answer(
            r#"{"created_at":"garbage","message":{"content":""},"done":true,"eval_count":3}"#,
        );
        assert_eq!(a["created"], 7);
        assert_eq!(a["choices"][0]["message"]["content"], "");
        assert_eq!(
            usage,
            Some(Usage::new(0, 3)),
            "a cached prompt is not counted"
        );
    }

    #[test]
    fn non_answers_are_failures() {
        for body in [
            "",
            "<html>",
            "[1]",
            "{}",
            r#"{"done":true}"#,
            "\u{0}\u{ff}",
            "{\"message\":{}}\n{\"done\":true}",
        ] {
            let e = failure(body);
            assert_eq!(e.class, ErrorClass::Overloaded, "{body}");
            assert!(
                e.message
                    .starts_with("upstream 200 body is not an Ollama chat answer"),
                "{body}: {}",
                e.message
            );
        }
        assert_eq!(
            failure(r#"{"message":{}}"#).message,
            "upstream answer is not finished: {\"message\":{}}"
        );
        let e = failure(r#"{"message":{"content":"The"},"done":false}"#);
        assert_eq!(
            e.message,
            r#"upstream answer is not finished: {"message":{"content":"The"},"done":false}"#
        );
        let e = failure(
            r#"{"error":"an error was encountered while running the model: unexpected EOF"}"#,
        );
        assert_eq!(e.class, ErrorClass::Overloaded);
        assert_eq!(
            e.message,
            "upstream stream error: an error was encountered while running the model: unexpected EOF"
        );
        let e = failure(r#"{"error":"input length exceeds the maximum context length"}"#);
        assert_eq!(e.class, ErrorClass::ContextLengthExceeded);
    }
}
