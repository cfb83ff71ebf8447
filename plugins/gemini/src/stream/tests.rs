use serde_json::{Value, json};
use switchyard_sdk::{Usage, run};

use super::*;
use crate::Gemini;

fn target() -> Target {
    Target {
        deployment: "gemini-eu".into(),
        model: "gemini-2.5-flash".into(),
    }
}

const ASK_USAGE: &str = r#"{"stream": true, "stream_options": {"include_usage": true}}"#;

/// A typical streamed answer, as Google frames its events.
const TEXT: [&str; 3] = [
    r#"{"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 7,"totalTokenCount": 7},"modelVersion": "gemini-2.5-flash","responseId": "rid-1"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": "Thinking...", "thought": true},{"text": "lo"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 7,"totalTokenCount": 7},"modelVersion": "gemini-2.5-flash","responseId": "rid-1"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": " world"}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 7,"candidatesTokenCount": 3,"totalTokenCount": 25,"cachedContentTokenCount": 4,"thoughtsTokenCount": 15},"modelVersion": "gemini-2.5-flash","responseId": "rid-1"}"#,
];

#[derive(Debug)]
struct Outcome {
    chunks: Vec<Value>,
    usage: Option<Usage>,
    malformed: u32,
}

/// Runs `events` through the exported functions in batches of the given
/// sizes, the state going through bytes between every call.
fn run_batches(
    request: &str,
    events: &[StreamEvent],
    batches: &[usize],
) -> Result<Outcome, UpstreamError> {
    let t = target();
    let date = switchyard_sdk::header_block(&[("date", "Tue, 14 Nov 2023 22:13:20 GMT")]);
    let mut state = run::begin_stream::<Gemini>(&t, request, &date)?.state;
    let mut o = Outcome {
        chunks: Vec::new(),
        usage: None,
        malformed: 0,
    };
    let mut rest = events;
    for &n in batches {
        let (now, later) = rest.split_at(n);
        rest = later;
        let step = run::parse_stream::<Gemini>(&state, now)?;
        assert!(!step.done, "Gemini streams end with the body");
        o.chunks
            .extend(step.chunks.iter().map(|c| serde_json::from_str(c).unwrap()));
        o.usage = step.usage;
        o.malformed += step.malformed;
        state = step.state.unwrap_or(state);
    }
    let last = run::end_stream::<Gemini>(&state)?;
    o.chunks
        .extend(last.chunks.iter().map(|c| serde_json::from_str(c).unwrap()));
    assert_eq!(last.usage, o.usage, "usage is repeated at the end");
    Ok(o)
}

fn run_events(request: &str, data: &[&str]) -> Result<Outcome, UpstreamError> {
    let events: Vec<StreamEvent> = data.iter().map(|d| StreamEvent::data(d)).collect();
    run_batches(request, &events, &[events.len()])
}

fn chunk(delta: Value, finish: Value) -> Value {
    json!({
        "id": "rid-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gemini-eu",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

#[test]
fn text_stream_survives_every_batching() {
    let events: Vec<StreamEvent> = TEXT.iter().map(|d| StreamEvent::data(d)).collect();
    let usage = Usage::new(7, 18)
        .with_cached_prompt_tokens(4)
        .with_reasoning_tokens(15);
    for batches in run::batchings(events.len()) {
        let o = run_batches(ASK_USAGE, &events, &batches).unwrap();
        assert_eq!(
            o.chunks,
            [
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Hel"}), Value::Null),
                chunk(json!({"content": "lo"}), Value::Null),
                chunk(json!({"content": " world"}), json!("stop")),
                json!({
                    "id": "rid-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                    "model": "gemini-eu", "choices": [],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 18, "total_tokens": 25,
                              "prompt_tokens_details": {"cached_tokens": 4},
                              "completion_tokens_details": {"reasoning_tokens": 15}},
                }),
            ],
            "{batches:?}"
        );
        assert_eq!(o.usage, Some(usage));
    }
}

/// Events after the first: text parts join into one chunk (thoughts left
/// out), an event of thoughts only writes nothing, and a finish reason with
/// no text is a chunk of its own, in any batching; an event the one-pass
/// read leaves to serde (it carries prompt feedback) writes the same.
#[test]
fn later_events_join_their_text_parts() {
    let event = |parts: &str, finish: &str| {
        format!(
            r#"{{"candidates": [{{"content": {{"parts": [{parts}],"role": "model"}}{finish},"index": 0}}],"responseId": "rid-1"}}"#
        )
    };
    let data = [
        event(r#"{"text": "a"}"#, ""),
        event(
            r#"{"text": "b\n"},{"text": "x", "thought": true},{"text": ""},{"text": "c"},{"text": "d"}"#,
            "",
        ),
        event(r#"{"text": "hmm", "thought": true}"#, ""),
        event(r#"{"text": "e"},{"text": "f"}"#, "").replacen(
            r#""responseId""#,
            r#""promptFeedback": {"blockReason": null},"responseId""#,
            1,
        ),
        event(r#"{"text": ""}"#, r#","finishReason": "MAX_TOKENS""#),
    ];
    let events: Vec<StreamEvent> = data.iter().map(|d| StreamEvent::data(d)).collect();
    for batches in run::batchings(events.len()) {
        let o = run_batches("{}", &events, &batches).unwrap();
        assert_eq!(
            o.chunks,
            [
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "a"}), Value::Null),
                chunk(json!({"content": "b\ncd"}), Value::Null),
                chunk(json!({"content": "ef"}), Value::Null),
                chunk(json!({}), json!("length")),
            ],
            "{batches:?}"
        );
    }
}

#[test]
fn usage_chunk_only_when_asked() {
    let o = run_events(r#"{"stream": true}"#, &TEXT).unwrap();
    assert_eq!(o.chunks.len(), 4);
    assert!(o.usage.is_some(), "usage is still reported to the host");
    // Asked for, but Google reported none: no chunk rather than zeros.
    let o = run_events(
        ASK_USAGE,
        &[r#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"STOP"}]}"#],
    )
    .unwrap();
    assert_eq!(o.chunks.len(), 2);
    assert_eq!(o.usage, None);
}

#[test]
fn tool_calls_stream_whole() {
    let events = [
        r#"{"candidates": [{"content": {"parts": [{"text": "Let me check."}],"role": "model"},"index": 0}],"responseId": "rid-1"}"#,
        r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"city": "Paris"}},"thoughtSignature": "CiQB"},{"functionCall": {"id": "g-2","name": "get_time","args": {}}}],"role": "model"},"index": 0}],"responseId": "rid-1"}"#,
        r#"{"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 20,"candidatesTokenCount": 9,"totalTokenCount": 29},"responseId": "rid-1"}"#,
    ];
    let evs: Vec<StreamEvent> = events.iter().map(|d| StreamEvent::data(d)).collect();
    for batches in run::batchings(evs.len()) {
        let o = run_batches("{}", &evs, &batches).unwrap();
        assert_eq!(
            o.chunks,
            [
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Let me check."}), Value::Null),
                chunk(
                    json!({"tool_calls": [
                        {"index": 0, "id": "call_rid-1_0_0", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"index": 1, "id": "g-2", "type": "function",
                         "function": {"name": "get_time", "arguments": "{}"}},
                    ]}),
                    Value::Null
                ),
                chunk(json!({}), json!("tool_calls")),
            ],
            "{batches:?}"
        );
        assert_eq!(o.usage, Some(Usage::new(20, 9)));
    }
}

#[test]
fn one_event_answer_and_late_events() {
    let o = run_events(
        "{}",
        &[
            r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]},"finishReason":"MAX_TOKENS"}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"ignored"}]}}]}"#,
            r#"{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2}}"#,
        ],
    )
    .unwrap();
    assert_eq!(o.chunks.len(), 2);
    assert_eq!(o.chunks[1]["choices"][0]["delta"], json!({"content": "Hi"}));
    assert_eq!(o.chunks[1]["choices"][0]["finish_reason"], "length");
    let id = o.chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && o.chunks[1]["id"] == id);
    assert_eq!(
        o.usage,
        Some(Usage::new(1, 2)),
        "a late usage report still counts"
    );
}

#[test]
fn an_empty_answer_still_opens_with_the_role() {
    let o = run_events(
        "{}",
        &[r#"{"candidates":[{"finishReason":"SAFETY","index":0}],"responseId":"rid-1"}"#],
    )
    .unwrap();
    assert_eq!(
        o.chunks,
        [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({}), json!("content_filter")),
        ]
    );
}

#[test]
fn truncated_stream_is_an_error() {
    let e = run_events(ASK_USAGE, &TEXT[..2]).unwrap_err();
    assert_eq!(e.class, ErrorClass::Overloaded);
    assert_eq!(e.message, "stream ended before completion");
    let e = run_events("{}", &[]).unwrap_err();
    assert_eq!(e.message, "stream ended before completion");
}

#[test]
fn malformed_events_are_skipped_and_counted() {
    let o = run_events(
        "{}",
        &[
            TEXT[0],
            "{\"candidates\": [",
            "[1]",
            "{\"candidates\": 5}",
            "",
            TEXT[2],
        ],
    )
    .unwrap();
    assert_eq!(o.malformed, 3);
    assert_eq!(o.chunks.len(), 3);
}

#[test]
fn error_events_end_the_stream() {
    let e = run_events(
        "{}",
        &[TEXT[0], r#"{"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}"#],
    )
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Overloaded);
    assert!(
        e.message.contains("The model is overloaded"),
        "{}",
        e.message
    );
    let e = run_events("{}", &[r#"{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}"#])
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::RateLimited(None));
    let named =
        |data: &str| run_batches("{}", &[StreamEvent::new("error", data)], &[1]).unwrap_err();
    assert_eq!(
        named(r#"{"error": {"status": "DEADLINE_EXCEEDED"}}"#).class,
        ErrorClass::Timeout
    );
    assert_eq!(
        named("gone away").message,
        "upstream stream error: gone away"
    );
    let e = run_events(
        "{}",
        &[r#"{"promptFeedback": {"blockReason": "SAFETY"},"usageMetadata": {"promptTokenCount": 5,"totalTokenCount": 5}}"#],
    )
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::ContentFiltered);
    assert!(e.message.contains("SAFETY"));
}

#[test]
fn state_round_trips_and_refuses_corruption() {
    let s = Stream {
        id: "rid-é".into(),
        created: 1_700_000_000,
        tool_calls: 3,
        role_sent: true,
        finished: false,
        usage_chunk: true,
        head: None,
        usage_text: String::new(),
    };
    assert_eq!(Stream::restore(&s.save()).unwrap(), s);
    let saved = s.save();
    assert!(Stream::restore(&saved[..saved.len() - 1]).is_err());
    assert!(Stream::restore(&[saved.as_slice(), &[0]].concat()).is_err());
    let mut other_version = saved.clone();
    other_version[0] = 9;
    let e = Stream::restore(&other_version).unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.starts_with("corrupt stream state"));
}

#[test]
fn usage_chunk_probe() {
    assert!(wants_usage(ASK_USAGE));
    assert!(!wants_usage(
        r#"{"stream_options": {"include_usage": false}}"#
    ));
    assert!(!wants_usage(r#"{"stream_options": null, "messages": []}"#));
    assert!(!wants_usage("not json"));
}

fn wants_usage(request: &str) -> bool {
    switchyard_sdk::canonical::StreamAsk::read(request).include_usage
}

/// The usage of an event the one-pass reader takes as known (the same text
/// as the last event's) is the last event's, never one the general path
/// read in between: usage A, then an event with usage B that only serde
/// reads (a function call), then usage A's text again, in any batching.
#[test]
fn a_repeated_usage_is_never_taken_from_an_event_read_by_the_general_path() {
    let a = r#""usageMetadata": {"promptTokenCount": 7,"totalTokenCount": 7}"#;
    let b = r#""usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 2,"totalTokenCount": 11}"#;
    let text = |t: &str, usage: &str| {
        format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"text": "{t}"}}],"role": "model"}},"index": 0}}],{usage},"responseId": "rid-1"}}"#
        )
    };
    let call = format!(
        r#"{{"candidates": [{{"content": {{"parts": [{{"functionCall": {{"name": "f", "args": {{}}}}}}],"role": "model"}},"index": 0}}],{b},"responseId": "rid-1"}}"#
    );
    let last = |usage: &str| {
        format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"text": "z"}}],"role": "model"}},"finishReason": "STOP","index": 0}}],{usage},"responseId": "rid-1"}}"#
        )
    };
    let data = [text("x", a), text("y", a), call, text("w", a), last(a)];
    let events: Vec<StreamEvent> = data.iter().map(|d| StreamEvent::data(d)).collect();
    for batches in run::batchings(events.len()) {
        let o = run_batches(ASK_USAGE, &events, &batches).unwrap();
        assert_eq!(o.usage, Some(Usage::new(7, 0)), "{batches:?}");
    }
    // And the other way: B's text after A's is read, whatever came before.
    let data = [text("x", a), text("y", b), text("w", a), last(b)];
    let events: Vec<StreamEvent> = data.iter().map(|d| StreamEvent::data(d)).collect();
    for batches in run::batchings(events.len()) {
        let o = run_batches(ASK_USAGE, &events, &batches);
        let usage = o.map(|o| o.usage).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(usage, Some(Usage::new(9, 2)), "{batches:?}");
    }
}

/// A token event's text goes into its chunk as the event wrote it when the
/// SDK's writer writes the same, and is unescaped and written again when
/// not: the chunk is byte for byte the one written from the text itself.
#[test]
fn a_token_events_text_is_written_as_the_text_itself_whatever_its_escapes() {
    let t = target();
    let date = switchyard_sdk::header_block(&[("date", "Tue, 14 Nov 2023 22:13:20 GMT")]);
    for (escaped, text) in [
        (r#"a\nb"#, "a\nb"),
        (r#"\"q\" \\ \t\r\b\f"#, "\"q\" \\ \t\r\u{8}\u{c}"),
        (r#"\u001f\u0000"#, "\u{1f}\u{0}"),
        (r#"a\/b"#, "a/b"),
        (r#"\u00e9\u000A"#, "é\n"),
        (r#"\ud83d\ude00"#, "😀"),
        ("plain é", "plain é"),
    ] {
        let state = run::begin_stream::<Gemini>(&t, ASK_USAGE, &date)
            .unwrap()
            .state;
        let first = run::parse_stream::<Gemini>(&state, &[StreamEvent::data(TEXT[0])]).unwrap();
        let event = format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"text": "{escaped}"}}],"role": "model"}},"index": 0}}],"responseId": "rid-1"}}"#
        );
        let state = first.state.unwrap_or(state);
        let step = run::parse_stream::<Gemini>(&state, &[StreamEvent::data(&event)]).unwrap();
        let head = ChunkHead::new("rid-1", 1_700_000_000, "gemini-eu");
        assert_eq!(step.chunks, [head.text_json(Some(text), None)], "{escaped}");
    }
}
