use serde_json::{Value, json};

use super::*;

fn target() -> Target {
    Target {
        deployment: "gemini-eu".into(),
        model: "gemini-2.5-flash".into(),
    }
}

fn http(body: &str) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: switchyard_sdk::header_block(&[
            ("content-type", "application/json; charset=UTF-8"),
            ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ]),
        body: body.as_bytes().to_vec(),
    }
}

fn answer(body: Value) -> (Value, Option<Usage>) {
    let r = parse(&target(), &http(&body.to_string())).unwrap();
    (serde_json::from_str(&r.body).unwrap(), r.usage)
}

fn failure(body: &str) -> UpstreamError {
    parse(&target(), &http(body)).unwrap_err()
}

#[test]
fn text_answer_with_usage() {
    // As Google sends it: pretty-printed, thought summaries beside the text.
    let body = r#"{
  "candidates": [
    {
      "content": {
        "parts": [
          {"text": "Thinking about greetings", "thought": true},
          {"text": "Hello"},
          {"text": " there!"}
        ],
        "role": "model"
      },
      "finishReason": "STOP",
      "avgLogprobs": -0.12
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 12,
    "candidatesTokenCount": 3,
    "totalTokenCount": 45,
    "cachedContentTokenCount": 8,
    "thoughtsTokenCount": 30,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "mHx1aOuHNdSzjMcPkf2A4AQ"
}"#;
    let r = parse(&target(), &http(body)).unwrap();
    let want = Usage::new(12, 33)
        .with_cached_prompt_tokens(8)
        .with_reasoning_tokens(30);
    assert_eq!(r.usage, Some(want));
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "mHx1aOuHNdSzjMcPkf2A4AQ",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gemini-eu",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there!"},
                "finish_reason": "stop",
                "logprobs": null,
            }],
            "usage": {
                "prompt_tokens": 12, "completion_tokens": 33, "total_tokens": 45,
                "prompt_tokens_details": {"cached_tokens": 8},
                "completion_tokens_details": {"reasoning_tokens": 30},
            },
        })
    );
}

#[test]
fn function_calls_become_tool_calls() {
    let (v, usage) = answer(json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": [1, 2]}},
                 "thoughtSignature": "CiQBVKhc7vB"},
                {"functionCall": {"id": "fc-7", "name": "get_time"}},
            ]},
            "finishReason": "STOP",
        }],
        "responseId": "r1",
    }));
    assert_eq!(usage, None);
    assert!(v.get("usage").is_none());
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_r1_0_0", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":[1,2]}"}},
            {"id": "fc-7", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]})
    );
    // Calls alone: null content, as OpenAI writes it.
    let (v, _) = answer(json!({"candidates": [{
        "content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]},
        "finishReason": "STOP",
    }]}));
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() == 25, "{id}");
    let stem = &id["chatcmpl-".len()..];
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["id"],
        format!("call_{stem}_0_0")
    );
}

#[test]
fn candidates_become_choices() {
    let (v, _) = answer(json!({"candidates": [
        {"content": {"parts": [{"text": "A"}]}, "finishReason": "STOP"},
        {"content": {"parts": [{"text": "B"}]}, "finishReason": "MAX_TOKENS", "index": 1},
        {"finishReason": "SAFETY", "index": 2, "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": true}]},
        {"content": {"role": "model"}, "finishReason": "MALFORMED_FUNCTION_CALL", "index": 3},
    ]}));
    let summary: Vec<(Value, Value, Value)> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["index"].clone(),
                c["message"]["content"].clone(),
                c["finish_reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!(0), json!("A"), json!("stop")),
            (json!(1), json!("B"), json!("length")),
            (json!(2), json!(""), json!("content_filter")),
            (json!(3), json!(""), json!("stop")),
        ]
    );
}

#[test]
fn finish_reasons() {
    for (gemini, called, want) in [
        ("STOP", false, Some("stop")),
        ("STOP", true, Some("tool_calls")),
        ("MAX_TOKENS", true, Some("length")),
        ("RECITATION", false, Some("content_filter")),
        ("PROHIBITED_CONTENT", false, Some("content_filter")),
        ("SPII", false, Some("content_filter")),
        ("BLOCKLIST", false, Some("content_filter")),
        ("IMAGE_SAFETY", false, Some("content_filter")),
        ("OTHER", false, Some("stop")),
        ("FINISH_REASON_UNSPECIFIED", false, None),
        ("", false, None),
    ] {
        assert_eq!(finish_reason(gemini, called), want, "{gemini}");
    }
}

#[test]
fn blocked_prompts_are_content_filtered() {
    let e = failure(
        r#"{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": "gemini-2.5-flash"}"#,
    );
    assert_eq!(e.class, ErrorClass::ContentFiltered);
    assert_eq!(
        e.message,
        "Gemini blocked the prompt (blockReason PROHIBITED_CONTENT)"
    );
    let e = failure(r#"{"candidates": [], "promptFeedback": {"blockReason": "SAFETY"}}"#);
    assert_eq!(e.class, ErrorClass::ContentFiltered);
}

#[test]
fn bodies_that_are_not_answers_are_unusable() {
    for (body, why) in [
        (
            "<html>busy</html>",
            "Gemini answer is not a JSON object: <html>busy</html>",
        ),
        (
            "[{\"candidates\": []}]",
            "Gemini answer is not a JSON object",
        ),
        (
            "{\"candidates\": 7}",
            "Gemini answer is not a GenerateContentResponse",
        ),
        (
            "{\"candidates\": [{\"content\": ",
            "Gemini answer is not a GenerateContentResponse",
        ),
        ("{}", "Gemini answer has no candidates: {}"),
        (
            "{\"candidates\": null, \"promptFeedback\": {}}",
            "Gemini answer has no candidates",
        ),
        (
            r#"{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}"#,
            "Gemini answer has no candidates: {\"error\"",
        ),
    ] {
        let e = failure(body);
        assert_eq!(e.class, ErrorClass::Overloaded, "{body}");
        assert!(e.message.starts_with(why), "{body}: {}", e.message);
    }
    let long = format!("{{\"x\": \"{}\"}}", "y".repeat(500));
    assert!(failure(&long).message.len() < 260);
}

#[test]
fn usage_saturates_and_defaults() {
    let u = UsageMetadata {
        prompt_token_count: Some(u64::MAX),
        candidates_token_count: Some(u64::from(u32::MAX)),
        thoughts_token_count: Some(5),
        cached_content_token_count: None,
    };
    assert_eq!(
        usage(&u),
        Usage::new(u32::MAX, u32::MAX).with_reasoning_tokens(5)
    );
    assert_eq!(usage(&UsageMetadata::default()), Usage::new(0, 0));
}

#[test]
fn arguments_are_compacted_strings_intact() {
    let raw: &RawValue =
        serde_json::from_str("{\n  \"q\": \"a  b\\\" \\\\\",\n  \"n\": [ 1, 2 ]\n}").unwrap();
    assert_eq!(arguments(Some(raw)), r#"{"q":"a  b\" \\","n":[1,2]}"#);
    assert_eq!(arguments(None), "{}");
    assert_eq!(compact(" { \"é\" : \"\t\" } "), "{\"é\":\"\t\"}");
}

#[test]
fn ids_are_stable() {
    assert_eq!(completion_id(Some("abc"), b"x"), "abc");
    assert_eq!(completion_id(Some(""), b"x"), completion_id(None, b"x"));
    assert_ne!(completion_id(None, b"x"), completion_id(None, b"y"));
    assert_eq!(call_id("abc", 1, 2, None), "call_abc_1_2");
    assert_eq!(call_id("chatcmpl-00ff", 0, 0, Some("")), "call_00ff_0_0");
    assert_eq!(call_id("abc", 0, 0, Some("given")), "given");
}
