//! The adapter driven through its exports, as the host calls them.

use serde_json::Value;
use switchyard_sdk::{
    AuthScheme, ErrorClass, HttpResponse, QuotaHint, StreamEvent, StreamParser, Target,
    UpstreamError, Usage, run,
};

use crate::Anthropic;
use crate::request::JSON_TOOL;

fn target() -> Target {
    Target {
        deployment: "claude-eu".into(),
        model: "claude-sonnet-4-5".into(),
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// A streamed answer with text, then a tool call, as Anthropic sends it.
const TOOL_STREAM: [(&str, &str); 11] = [
    (
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":10,"output_tokens":1}}}"#,
    ),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    ),
    ("ping", r#"{"type":"ping"}"#),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me "}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"check."}}"#,
    ),
    (
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    ),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"get_weather","input":{}}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ris\"}"}}"#,
    ),
    (
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":40}}"#,
    ),
    ("message_stop", r#"{"type":"message_stop"}"#),
];

fn events<'a>(list: &[(&'a str, &'a str)]) -> Vec<StreamEvent<'a>> {
    list.iter().map(|(e, d)| StreamEvent::new(e, d)).collect()
}

#[derive(Debug)]
struct Folded {
    chunks: Vec<Value>,
    text: String,
    args: String,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
    malformed: u32,
}

fn run_batches(
    request: &str,
    evs: &[StreamEvent],
    batches: &[usize],
) -> Result<Folded, UpstreamError> {
    let t = target();
    let mut state = run::begin_stream::<Anthropic>(&t, request, "")?.state;
    let mut f = Folded {
        chunks: Vec::new(),
        text: String::new(),
        args: String::new(),
        finish: None,
        usage: None,
        done: false,
        malformed: 0,
    };
    let mut rest = evs;
    let mut steps = Vec::new();
    for &n in batches {
        let (now, later) = rest.split_at(n);
        rest = later;
        let step = run::parse_stream::<Anthropic>(&state, now)?;
        state = step.state.clone().unwrap_or(state);
        steps.push(step);
    }
    steps.push(run::end_stream::<Anthropic>(&state)?);
    for step in steps {
        f.usage = step.usage.or(f.usage);
        f.done |= step.done;
        f.malformed += step.malformed;
        for c in step.chunks {
            let c = json(&c);
            assert_eq!(c["model"], "claude-eu");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["id"], "msg_01");
            if let Some(choice) = c["choices"].get(0) {
                f.text
                    .push_str(choice["delta"]["content"].as_str().unwrap_or(""));
                if let Some(call) = choice["delta"]["tool_calls"].get(0) {
                    f.args
                        .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                }
                if let Some(r) = choice["finish_reason"].as_str() {
                    f.finish = Some(r.to_owned());
                }
            }
            f.chunks.push(c);
        }
    }
    Ok(f)
}

#[test]
fn metadata_and_request() {
    let m = run::metadata::<Anthropic>();
    assert_eq!(m.name, "anthropic");
    assert_eq!(m.auth, AuthScheme::Header("x-api-key".into()));
    let r = run::build_request::<Anthropic>(
        &target(),
        r#"{"model":"route","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/messages"));
    assert!(
        r.headers
            .contains(&("anthropic-version".into(), crate::API_VERSION.into()))
    );
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["model"], "claude-sonnet-4-5");
    match run::build_request::<Anthropic>(&target(), "[1]") {
        Err(switchyard_sdk::BuildError::InvalidRequest(m)) => {
            assert!(m.contains("not a valid chat request"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stream_survives_every_batching() {
    let evs = events(&TOOL_STREAM);
    // 2^10 batchings: all of them.
    for batches in run::batchings(evs.len()) {
        let f = run_batches(
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            &evs,
            &batches,
        )
        .unwrap();
        assert_eq!(f.text, "Let me check.", "{batches:?}");
        assert_eq!(json(&f.args), json(r#"{"city":"Paris"}"#));
        assert_eq!(f.finish.as_deref(), Some("tool_calls"));
        assert_eq!(
            f.usage,
            Some(Usage::new(35, 40).with_cached_prompt_tokens(10))
        );
        assert!(f.done);
        let last = f.chunks.last().unwrap();
        assert_eq!(last["choices"], json("[]"));
        assert_eq!(last["usage"]["completion_tokens"], 40);
    }
    let f = run_batches(r#"{"stream":true}"#, &evs, &[evs.len()]).unwrap();
    let first = &f.chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    let call = f
        .chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .unwrap();
    assert_eq!(
        (call["index"].as_u64(), call["id"].as_str()),
        (Some(0), Some("toolu_9"))
    );
    assert_eq!(call["function"]["name"], "get_weather");
    // No usage chunk for a caller that did not ask.
    assert!(f.chunks.iter().all(|c| c["choices"] != json("[]")));
}

#[test]
fn json_answers_stream_as_text() {
    let start = format!(
        r#"{{"type":"content_block_start","index":0,"content_block":{{"type":"tool_use","id":"t","name":"{JSON_TOOL}","input":{{}}}}}}"#
    );
    let evs = events(&[
        TOOL_STREAM[0],
        ("content_block_start", &start),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"name\":"}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
        ),
        TOOL_STREAM[9],
        TOOL_STREAM[10],
    ]);
    let f = run_batches(
        r#"{"stream":true,"response_format":{"type":"json_object"}}"#,
        &evs,
        &[evs.len()],
    )
    .unwrap();
    assert_eq!(f.text, r#"{"name":"Paris"}"#);
    assert_eq!(f.args, "");
    assert_eq!(f.finish.as_deref(), Some("stop"));
}

#[test]
fn stream_failures() {
    // Cut before the stop reason: an error, never a short success.
    let evs = events(&TOOL_STREAM[..5]);
    let e = run_batches("{}", &evs, &[evs.len()]).unwrap_err();
    assert_eq!(e.class, ErrorClass::Overloaded);
    assert_eq!(e.message, "stream ended before completion");
    // The stop reason came and only message_stop was lost: whole.
    let evs = events(&TOOL_STREAM[..10]);
    assert!(run_batches("{}", &evs, &[evs.len()]).is_ok());
    // An error event.
    let evs = events(&[
        TOOL_STREAM[0],
        (
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
    ]);
    let e = run_batches("{}", &evs, &[2]).unwrap_err();
    assert_eq!(e.class, ErrorClass::Overloaded);
    assert!(e.message.contains("Overloaded"));
    // Garbage is skipped and counted.
    let mut list = TOOL_STREAM.to_vec();
    list.insert(3, ("content_block_delta", "{\"type\": nope"));
    let f = run_batches("{}", &events(&list), &[list.len()]).unwrap();
    assert_eq!((f.malformed, f.text.as_str()), (1, "Let me check."));
}

#[test]
fn state_round_trips_and_refuses_garbage() {
    let s = <crate::stream::Stream as StreamParser>::begin(&target(), "{}", "").unwrap();
    assert_eq!(crate::stream::Stream::restore(&s.save()).unwrap(), s);
    assert!(crate::stream::Stream::restore(&[1, 2, 3]).is_err());
}

#[test]
fn errors_and_quota() {
    let response = HttpResponse {
        status: 429,
        headers: "retry-after: 12\nanthropic-ratelimit-requests-remaining: 0\n".into(),
        body: br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#.to_vec(),
    };
    let e = run::classify_error::<Anthropic>(&response);
    assert_eq!(e.class, ErrorClass::RateLimited(Some(12_000)));
    assert_eq!(
        e.quota,
        Some(QuotaHint {
            remaining_requests: Some(0),
            ..QuotaHint::default()
        })
    );
    let overloaded = HttpResponse {
        status: 529,
        headers: String::new(),
        body: br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            .to_vec(),
    };
    assert_eq!(
        run::classify_error::<Anthropic>(&overloaded).class,
        ErrorClass::Overloaded
    );
    let long = HttpResponse {
        status: 400,
        headers: String::new(),
        body: br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 201000 tokens > 200000 maximum"}}"#.to_vec(),
    };
    assert_eq!(
        run::classify_error::<Anthropic>(&long).class,
        ErrorClass::ContextLengthExceeded
    );
}
