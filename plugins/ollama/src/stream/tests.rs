use serde_json::{Value, json};
use switchyard_sdk::{ErrorClass, StreamEvent, Target, UpstreamError, Usage, run};

use super::*;
use crate::Ollama;

fn target() -> Target {
    Target {
        deployment: "local-llama".into(),
        model: "llama3.2".into(),
    }
}

const DATE: (&str, &str) = ("date", "Mon, 07 Jul 2025 20:22:00 GMT");

/// A typical stream: text in two lines, then the last line.
const TEXT: [&str; 3] = [
    r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The","images":null},"done":false}"#,
    r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.485406455-07:00","message":{"role":"assistant","content":" sky\n"},"done":false}"#,
    r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
];

/// Tool calls arrive whole, one line each, before the last line.
const TOOLS: [&str; 3] = [
    r#"{"model":"llama3.2","created_at":"2025-07-07T20:22:19.184789Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Tokyo"}}}]},"done":false}"#,
    r#"{"model":"llama3.2","created_at":"2025-07-07T20:22:19.18479Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_p2x9","function":{"index":1,"name":"get_time","arguments":{"tz":"JST"}}}]},"done":false}"#,
    r#"{"model":"llama3.2","created_at":"2025-07-07T20:22:19.19314Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"prompt_eval_count":169,"eval_count":15}"#,
];

#[derive(Debug)]
struct Outcome {
    chunks: Vec<Value>,
    usage: Option<Usage>,
    done: bool,
    malformed: u32,
}

/// Runs `lines` through the exported functions in batches of the given
/// sizes, the state going through bytes between every call.
fn run_batches(request: &str, lines: &[&str], batches: &[usize]) -> Result<Outcome, UpstreamError> {
    let t = target();
    let headers = switchyard_sdk::header_block(&[DATE]);
    let mut state = run::begin_stream::<Ollama>(&t, request, &headers)?.state;
    let mut o = Outcome {
        chunks: Vec::new(),
        usage: None,
        done: false,
        malformed: 0,
    };
    let events: Vec<StreamEvent> = lines.iter().map(|l| StreamEvent::data(l)).collect();
    let mut rest = &events[..];
    for &n in batches {
        let (now, later) = rest.split_at(n);
        rest = later;
        let step = run::parse_stream::<Ollama>(&state, now)?;
        o.chunks.extend(
            step.chunks
                .iter()
                .map(|c| serde_json::from_str::<Value>(c).unwrap()),
        );
        o.usage = step.usage;
        o.done |= step.done;
        o.malformed += step.malformed;
        state = step.state.unwrap_or(state);
    }
    let last = run::end_stream::<Ollama>(&state)?;
    assert!(last.chunks.is_empty());
    o.usage = last.usage;
    Ok(o)
}

fn run_lines(request: &str, lines: &[&str]) -> Result<Outcome, UpstreamError> {
    run_batches(request, lines, &[lines.len()])
}

fn deltas(o: &Outcome) -> Vec<Value> {
    o.chunks
        .iter()
        .map(|c| c["choices"][0]["delta"].clone())
        .collect()
}

#[test]
fn text_stream_survives_every_batching() {
    let lines = [
        "",
        TEXT[0],
        "  ",
        TEXT[1],
        TEXT[2],
        r#"{"error":"after the end"}"#,
    ];
    for batches in run::batchings(lines.len()) {
        let o = run_batches(r#"{"stream":true}"#, &lines, &batches).unwrap();
        assert_eq!(
            deltas(&o),
            [
                json!({"role": "assistant", "content": ""}),
                json!({"content": "The"}),
                json!({"content": " sky\n"}),
                json!({}),
            ],
            "{batches:?}"
        );
        let finish: Vec<&Value> = o
            .chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .collect();
        assert_eq!(
            finish,
            [&Value::Null, &Value::Null, &Value::Null, &json!("stop")]
        );
        for c in &o.chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "local-llama");
            assert_eq!(c["id"], "chatcmpl-0000000000000000");
            assert_eq!(
                c["created"], 1_691_164_339,
                "the first line's time on every chunk"
            );
        }
        assert_eq!(o.usage, Some(Usage::new(26, 282)));
        assert!(o.done && o.malformed == 0);
    }
}

#[test]
fn tool_calls_are_numbered_across_lines() {
    for batches in run::batchings(TOOLS.len()) {
        let o = run_batches(r#"{"stream":true}"#, &TOOLS, &batches).unwrap();
        assert_eq!(
            deltas(&o)[1..],
            [
                json!({"tool_calls": [{"index": 0, "id": "call_0000000000000000_0", "type": "function",
                                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"}}]}),
                json!({"tool_calls": [{"index": 1, "id": "call_p2x9", "type": "function",
                                        "function": {"name": "get_time", "arguments": "{\"tz\":\"JST\"}"}}]}),
                json!({}),
            ]
        );
        assert_eq!(o.chunks[3]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(o.usage, Some(Usage::new(169, 15)));
    }
}

#[test]
fn usage_chunk_only_for_callers_that_asked() {
    let o = run_lines(
        r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
        &TEXT,
    )
    .unwrap();
    assert_eq!(o.chunks.len(), 5);
    let last = &o.chunks[4];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 26, "completion_tokens": 282, "total_tokens": 308})
    );
    assert_eq!(last["id"], o.chunks[0]["id"]);
    for request in [
        r#"{"stream_options":{"include_usage":false}}"#,
        r#"{"stream_options":null}"#,
        "not json",
    ] {
        assert_eq!(
            run_lines(request, &TEXT).unwrap().chunks.len(),
            4,
            "{request}"
        );
    }
}

#[test]
fn last_line_may_carry_text_and_length() {
    let o = run_lines(
        "{}",
        &[r#"{"message":{"content":"Hi"},"done":true,"done_reason":"length","eval_count":1}"#],
    )
    .unwrap();
    assert_eq!(
        deltas(&o),
        [
            json!({"role": "assistant", "content": ""}),
            json!({"content": "Hi"})
        ]
    );
    assert_eq!(o.chunks[1]["choices"][0]["finish_reason"], "length");
    assert_eq!(
        o.chunks[0]["created"], 1_751_919_720,
        "no created_at: the Date header"
    );
    assert_eq!(o.usage, Some(Usage::new(0, 1)));
}

#[test]
fn truncated_stream_is_an_error() {
    let e = run_lines("{}", &TEXT[..2]).unwrap_err();
    assert_eq!(e.class, ErrorClass::Overloaded);
    assert_eq!(e.message, "stream ended before completion");
    let e = run_lines("{}", &[]).unwrap_err();
    assert_eq!(e.message, "stream ended before completion");
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let lines = [
        TEXT[0],
        "{\"message\":{\"content\":",
        "<html>",
        "[1]",
        "{}",
        r#"{"done":"yes"}"#,
        TEXT[2],
    ];
    let o = run_lines("{}", &lines).unwrap();
    assert_eq!(o.malformed, 5);
    assert_eq!(o.chunks.len(), 3);
    assert!(o.done);
}

#[test]
fn error_lines_end_the_stream() {
    let e = run_lines("{}", &[TEXT[0], r#"{"error":"an error was encountered while running the model: CUDA error: out of memory"}"#])
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Overloaded);
    assert_eq!(
        e.message,
        "upstream stream error: an error was encountered while running the model: CUDA error: out of memory"
    );
    let e = run_lines(
        "{}",
        &[r#"{"error":"the input length exceeds the context length"}"#],
    )
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::ContextLengthExceeded);
    let e = run_lines("{}", &[r#"{"error":{"message":"slow down","code":429}}"#]).unwrap_err();
    assert_eq!(e.class, ErrorClass::RateLimited(None));
    // A null error is none.
    let o = run_lines(
        "{}",
        &[r#"{"error":null,"message":{"content":"a"},"done":true}"#],
    )
    .unwrap();
    assert_eq!(o.chunks.len(), 2);
}

#[test]
fn borrowed_text_chunks_are_canonical_chunks() {
    let mut s = Stream::new(7, 1_700_000_000, false);
    for (text, finish) in [
        (Some("a\"\n\u{1f600}"), None),
        (Some(""), Some("stop")),
        (None, Some("length")),
    ] {
        let delta = text.map_or_else(Delta::default, Delta::text);
        assert_eq!(
            s.text_chunk("dep \"x\"", text, finish),
            s.chunk("dep \"x\"", delta, finish),
            "{text:?} {finish:?}"
        );
    }
}

#[test]
fn state_round_trips_and_rejects_corruption() {
    let mut s = Stream::new(u64::MAX, 1_700_000_000, true);
    s.started = true;
    s.calls = 3;
    assert_eq!(Stream::restore(&s.save()).unwrap(), s);
    let saved = s.save();
    assert_eq!(saved.len(), 22);
    for corrupt in [&saved[..21], &[saved.as_slice(), &[0]].concat()[..], &[]] {
        assert!(Stream::restore(corrupt).is_err());
    }
    let mut bad_flag = saved.clone();
    bad_flag[16] = 7;
    assert!(Stream::restore(&bad_flag).is_err());
}
