use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::canonical::StreamAsk;
use switchyard_sdk::{ErrorClass, StreamEvent, StreamParser, Usage};

use super::*;
use switchyard_sdk::canonical::read::{assert_fast_path_agrees, one_char_changes};
use switchyard_sdk::{QuotaHint, run};

fn wants_usage(request: &str) -> bool {
    StreamAsk::read(request).include_usage
}

/// The deployment's name replaces the answer's model (or is added),
/// escaped, and nothing else changes.
#[test]
fn model_is_the_deployment_escaped() {
    for name in ["gpt-eu", "a\"b\\c\n\u{1}é", ""] {
        for text in [
            r#"{"id":"x","model":"up\"stream","choices":[]}"#,
            r#"{"id":"x","choices":[]}"#,
            r#"{ "choices": [] }"#,
        ] {
            let old = text.find(r#""up\"stream""#).map(|i| &text[i..i + 12]);
            let out = with_model(text, old, name).unwrap();
            let mut want: Value = serde_json::from_str(text).unwrap();
            want["model"] = Value::from(name);
            assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), want, "{out}");
        }
    }
}

fn target() -> Target {
    Target {
        deployment: "gpt-eu".into(),
        model: "gpt-4o".into(),
    }
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn build_sets_model_and_stream_usage() {
    let b =
        json(&build_body("gpt-4o", r#"{"model":"route","messages":[],"stream":true}"#).unwrap());
    assert_eq!(b["model"], "gpt-4o");
    assert_eq!(b["stream_options"]["include_usage"], true);
    let b = json(
        &build_body(
            "m",
            r#"{"stream":true,"stream_options":{"include_usage":false,"other":1}}"#,
        )
        .unwrap(),
    );
    // Asked for anyway (the gateway accounts tokens); the caller's other
    // options kept. The usage chunk is not forwarded to this caller.
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert_eq!(b["stream_options"]["other"], 1);
    let b = json(&build_body("m", r#"{"stream":true,"stream_options":null}"#).unwrap());
    assert_eq!(b["stream_options"]["include_usage"], true);
    let b = json(&build_body("m", r#"{"messages":[]}"#).unwrap());
    assert!(b.get("stream_options").is_none());
}

/// The general path of [`build_body`], for comparison.
fn built_in_general(model: &str, request: &str) -> Result<Value, BuildError> {
    let failed = |e: serde_json::Error| BuildError::Failed(e.to_string());
    let m = serde_json::value::to_raw_value(model).map_err(failed)?;
    let mut req = serde_json::from_str::<RawObject>(request)
        .map_err(|e| BuildError::Failed(e.to_string()))?;
    req.insert(Cow::Borrowed("model"), &m);
    let streaming = req.get("stream").is_some_and(|s| s.get() == "true");
    let mut v: Value = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
    if streaming {
        v["stream_options"]["include_usage"] = Value::Bool(true);
    }
    Ok(v)
}

/// Every one-byte change of a few requests: where the request is built in
/// place, the general path builds the same JSON.
#[test]
fn built_in_place_as_in_general_on_any_one_byte_change() {
    let docs = [
        r#"{"model":"route","messages":[{"role":"user","content":"hi \"there\""}],"stream":true,"temperature":0.5}"#,
        r#" { "messages" : [ ] , "max_tokens" : 10 } "#,
    ];
    let probes = [
        "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "t", "n", " ", "\n",
    ];
    let answered = assert_fast_path_agrees(
        &docs,
        &probes,
        |v| build_in_place("gpt \"x\"", v).map(|fast| json(fast.as_bytes())),
        |v| built_in_general("gpt \"x\"", v).expect(v),
    );
    assert!(answered > 500, "{answered}");
    // Left to the general path.
    for request in [
        r#"{"model":"a","model":"b"}"#,
        r#"{"mod\u0065l":"a"}"#,
        r#"{"stream":true,"stream_options":{"include_usage":false}}"#,
        "[]",
    ] {
        assert!(build_in_place("m", request).is_none(), "{request}");
    }
    // Many members: the general path (whose lookups are not quadratic).
    let wide = |n: usize| {
        let members: Vec<String> = (0..n).map(|i| format!(r#""k{i}":0"#)).collect();
        format!("{{{}}}", members.join(","))
    };
    assert!(build_in_place("m", &wide(64)).is_some());
    assert!(build_in_place("m", &wide(65)).is_none());
    assert!(json(&build_body("m", &wide(20_000)).unwrap())["k19999"] == 0);
}

#[test]
fn build_request_refuses_non_objects_as_invalid() {
    let r = run::build_request::<OpenAi>(&target(), r#"{"messages":[]}"#).unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/chat/completions")
    );
    assert_eq!(
        r.headers,
        vec![("content-type".to_string(), "application/json".to_string())]
    );
    for (body, why) in [
        ("[1]", "request is not a JSON object"),
        ("\"x\"", "request is not a JSON object"),
        ("{", "request is not JSON"),
    ] {
        match run::build_request::<OpenAi>(&target(), body) {
            Err(BuildError::InvalidRequest(m)) => assert!(m.starts_with(why), "{m}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn metadata_declares_bearer_and_sse() {
    let m = run::metadata::<OpenAi>();
    assert_eq!(m.name, "openai");
    assert_eq!(m.auth, switchyard_sdk::AuthScheme::Bearer);
    assert_eq!(m.framing, switchyard_sdk::StreamFraming::Sse);
}

#[test]
fn parse_names_deployment_and_reads_usage() {
    let body = br#"{"id":"x","model":"gpt-4o-2024","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
    let r = parse_body("gpt-eu", 200, body).unwrap();
    assert_eq!(json(r.body.as_bytes())["model"], "gpt-eu");
    assert_eq!(r.usage, Some(Usage::new(5, 2)));
    assert!(
        parse_body("d", 200, br#"{"choices":[{"message":{}}]}"#)
            .unwrap()
            .usage
            .is_none()
    );
}

#[test]
fn in_place_and_general_paths_agree() {
    for body in [
        r#"{"id":"x","model":"gpt-4o-2024","choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        r#" { "choices" : [ { "message" : { } } ] , "model" : "m\"q" } "#,
        r#"{"choices":[{"message":{}}],"usage":null}"#,
        r#"{"model":null,"choices":[{"index":0,"message":{"content":null}}]}"#,
        r#"{"usage":{"prompt_tokens":1,"completion_tokens":1},"choices":[{"message":{}}]}"#,
    ] {
        let fast = parse_in_place("gpt \"eu\"", body.as_bytes()).expect(body);
        let general = {
            let model = serde_json::value::to_raw_value("gpt \"eu\"").unwrap();
            let mut obj = serde_json::from_str::<RawObject>(body).unwrap();
            obj.insert(Cow::Borrowed("model"), &model);
            serde_json::to_string(&obj).unwrap()
        };
        assert_eq!(
            json(fast.body.as_bytes()),
            json(general.as_bytes()),
            "{body}"
        );
        assert_eq!(json(fast.body.as_bytes())["model"], "gpt \"eu\"");
        assert_eq!(
            fast.usage,
            parse_body("gpt \"eu\"", 200, body.as_bytes())
                .unwrap()
                .usage
        );
    }
    // Not for the fast path: the general one decides (and explains).
    for body in [
        r#"{"choices":{}}"#,
        r#"{"model":"a","model":"b","choices":[{"message":{}}]}"#,
        "[]",
        r#"[0,[]]"#,
    ] {
        assert!(parse_in_place("d", body.as_bytes()).is_none(), "{body}");
    }
}

#[test]
fn stream_chunks_read_in_place_as_in_general() {
    for data in [
        r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"model":null}"#,
        r#"{ "choices" : [ ] , "usage" : {"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":2}} }"#,
        r#"{"choices":[],"usage":null}"#,
        r#"{"choices":[],"usage":7}"#,
        r#"{"choices":null,"error":null}"#,
        r#"{"choices":{"a":1}}"#,
        r#"{"choices":[{"finish_reason":null},{"finish_reason":"length"}]}"#,
        r#"{"choices":[{"finish\u005freason":"stop","delta":{"content":"a\"}"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":[1]}"}}]}}]}"#,
        r#"{"choices":true}"#,
        r#"{}"#,
    ] {
        let fast = chunk_in_place("dep \"eu\"", data).expect(data);
        let general = chunk_general("dep \"eu\"", data).unwrap().unwrap();
        assert_eq!(
            json(fast.text.as_bytes()),
            json(general.text.as_bytes()),
            "{data}"
        );
        assert_eq!(json(fast.text.as_bytes())["model"], "dep \"eu\"");
        assert_eq!(fast.usage, general.usage, "{data}");
        assert_eq!(fast.finished, general.finished, "{data}");
        assert_eq!(fast.usage_only, general.usage_only, "{data}");
    }
    // Not for the fast path: the general one decides (and explains).
    for data in [
        r#"{"error":{"message":"overloaded"}}"#,
        r#"{"model":"a","model":"b","choices":[]}"#,
        r#"{"choices":[["stop"]]}"#,
        r#"{"choices":[null]}"#,
        r#"{"choices":[{"finish_reason":"stop","finish_reason":null}]}"#,
        "{\"choices\":\n[]}",
        "{\"choices\":[]}\n",
        r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#,
        r#"{"choices":[],"x":1e400}"#,
        "[]",
        "nope",
    ] {
        assert!(chunk_in_place("d", data).is_none(), "{data}");
    }
    let general = chunk_general("d", "{\"choices\":\n[]}").unwrap().unwrap();
    assert!(!general.text.contains('\n'));
}

/// Every one-byte change of a few chunks: where the in-place read answers,
/// the general path agrees with it; where the text is not JSON, the
/// in-place read does not answer.
#[test]
fn in_place_never_disagrees_on_any_one_byte_change() {
    let docs = [
        r#"{"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"h\u00e9"},"finish_reason":null}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
    ];
    let probes = [
        "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "n", " ", "\n", "\\ud800", "e400",
        "9e9",
    ];
    let mut answered = 0;
    for doc in docs {
        for v in one_char_changes(doc, &probes) {
            let valid = serde_json::from_str::<Value>(&v).is_ok();
            let Some(fast) = chunk_in_place("d", &v) else {
                continue;
            };
            answered += 1;
            assert!(valid, "{v}");
            let general = chunk_general("d", &v).unwrap().unwrap();
            assert_eq!(
                json(fast.text.as_bytes()),
                json(general.text.as_bytes()),
                "{v}"
            );
            assert_eq!(fast.usage, general.usage, "{v}");
            assert_eq!(fast.finished, general.finished, "{v}");
            assert_eq!(fast.usage_only, general.usage_only, "{v}");
        }
    }
    assert!(answered > 200, "{answered}");
}

#[test]
fn usage_read_raw_as_from_a_value() {
    for usage in [
        r#"{"prompt_tokens":3,"completion_tokens":4}"#,
        r#"{"prompt_tokens":39,"completion_tokens":12,"prompt_tokens_details":{"cached_tokens":10,"cache_creation_tokens":4}}"#,
        r#"{"prompt_tokens_details":{"cache_creation_tokens":4,"cache_creation_tokens":5}}"#,
        r#"{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":256}}"#,
        r#"{"prompt_tokens":-1,"completion_tokens":5.0,"total_tokens":"x"}"#,
        r#"{"prompt_tokens":1e2,"completion_tokens":99999999999,"prompt_tokens_details":null}"#,
        r#"{"prompt_tokens":18446744073709551616,"prompt_tokens_details":[1],"completion_tokens_details":7}"#,
        r#"{"prompt_tokens":1,"prompt_tokens":2,"completion_tokens":3}"#,
        r#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":2}}"#,
        r#"{"prompt_tokens":{"a":1},"completion_tokens":[2]}"#,
        r#"{"prompt\u005ftokens":4}"#,
        r#"{}"#,
        r#"[1,2]"#,
        r#"7"#,
        r#"null"#,
    ] {
        let raw: &RawValue = serde_json::from_str(usage).unwrap();
        let value: Value = serde_json::from_str(usage).unwrap();
        assert_eq!(usage_in(raw.get()), usage_of(Some(&value)), "{usage}");
    }
    // Cache writes, as another gateway in front names them.
    let u = usage_in(
        r#"{"prompt_tokens":39,"completion_tokens":12,"prompt_tokens_details":{"cached_tokens":10,"cache_creation_tokens":4}}"#,
    );
    assert_eq!(
        u,
        Some(
            Usage::new(39, 12)
                .with_cached_prompt_tokens(10)
                .with_cache_write_tokens(4)
        )
    );
}

#[test]
fn usage_details_are_read() {
    let body = br#"{"choices":[{"message":{}}],"usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":256}}}"#;
    let u = parse_body("d", 200, body).unwrap().usage.unwrap();
    assert_eq!(
        u,
        Usage::new(2006, 300)
            .with_cached_prompt_tokens(1920)
            .with_reasoning_tokens(256)
    );
    let nulls = br#"{"choices":[{"message":{}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":null}}"#;
    assert_eq!(
        parse_body("d", 200, nulls).unwrap().usage,
        Some(Usage::new(1, 1))
    );
}

#[test]
fn answers_and_errors_carry_quota() {
    let response = HttpResponse {
        status: 200,
        headers: "x-ratelimit-remaining-requests: 41\nx-ratelimit-reset-tokens: 1m30s\n".into(),
        body: br#"{"choices":[{"message":{}}]}"#.to_vec(),
    };
    let want = Some(QuotaHint {
        remaining_requests: Some(41),
        reset_tokens_ms: Some(90_000),
        ..QuotaHint::default()
    });
    assert_eq!(
        run::parse_response::<OpenAi>(&target(), &response)
            .unwrap()
            .quota,
        want
    );
    let limited = HttpResponse {
        status: 429,
        body: b"{}".to_vec(),
        ..response
    };
    let e = run::classify_error::<OpenAi>(&limited);
    assert_eq!(e.class, ErrorClass::RateLimited(None));
    assert_eq!(e.quota, want);
}

#[test]
fn parse_rejects_non_completions() {
    let e = parse_body("d", 200, b"<html>").unwrap_err();
    assert!(matches!(e.class, ErrorClass::Overloaded));
    // The body's first bytes go in the message (the attempt's log line).
    assert!(
        e.message.starts_with("upstream 200 body is not JSON (")
            && e.message.ends_with("): <html>"),
        "{}",
        e.message
    );
    let e = parse_body("d", 200, br#"{"error":{"message":"busy"}}"#).unwrap_err();
    assert_eq!(
        e.message,
        r#"upstream response has no choices array (busy): {"error":{"message":"busy"}}"#
    );
    let e = parse_body("d", 200, b"[]").unwrap_err();
    assert_eq!(e.message, "upstream response has no choices array: []");
    // A completion with nothing a client could read is not an answer (it
    // would reach the caller as a 200 with no content): no choice, or a
    // first choice without a message object.
    for body in [
        r#"{"choices":[]}"#,
        r#"{"choices":[{}]}"#,
        r#"{"choices":[{"message":null}]}"#,
        r#"{"choices":[{"message":"hi"}]}"#,
        r#"{"choices":[null]}"#,
        r#"{"id":"x", "choices" : [ ] , "usage":{"prompt_tokens":1,"completion_tokens":0}}"#,
    ] {
        let e = parse_body("d", 200, body.as_bytes()).unwrap_err();
        assert_eq!(e.class, ErrorClass::Overloaded, "{body}");
        assert_eq!(
            e.message,
            format!("upstream 200 answer has no choice with a message: {body}")
        );
    }
    for body in [
        r#"{"choices":[{"index":0,"message":{"content":""}}]}"#,
        r#"{"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":null,"tool_calls":[]}}]}"#,
    ] {
        assert!(parse_body("d", 200, body.as_bytes()).is_ok(), "{body}");
    }
}

/// The events of a typical stream, as the host frames them.
const STREAM: [&str; 4] = [
    "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé\"},\"finish_reason\":null}],\"model\":\"up\",\"usage\":null}",
    "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"model\":\"up\"}",
    "{\"choices\":[],\"model\":\"up\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":2}}}",
    "[DONE]",
];

#[derive(Debug)]
struct Outcome {
    chunks: Vec<String>,
    usage: Option<Usage>,
    done: bool,
    malformed: u32,
}

/// Runs a stream through the exported functions, in batches of the given
/// sizes, with the state going through bytes between every call.
fn run_batches(
    request: &str,
    events: &[StreamEvent],
    batches: &[usize],
) -> Result<Outcome, UpstreamError> {
    let t = target();
    let mut state = run::begin_stream::<OpenAi>(&t, request, "")?.state;
    let mut o = Outcome {
        chunks: Vec::new(),
        usage: None,
        done: false,
        malformed: 0,
    };
    let mut rest = events;
    for &n in batches {
        let (now, later) = rest.split_at(n);
        rest = later;
        let step = run::parse_stream::<OpenAi>(&state, now)?;
        o.chunks.extend(step.chunks);
        o.usage = step.usage.or(o.usage);
        o.done |= step.done;
        o.malformed += step.malformed;
        state = step.state.unwrap_or(state);
    }
    let last = run::end_stream::<OpenAi>(&state)?;
    o.chunks.extend(last.chunks);
    o.usage = last.usage.or(o.usage);
    o.done |= last.done;
    Ok(o)
}

fn run_events(request: &str, data: &[&str]) -> Result<Outcome, UpstreamError> {
    let events: Vec<StreamEvent> = data.iter().map(|d| StreamEvent::data(d)).collect();
    run_batches(request, &events, &[events.len()])
}

#[test]
fn stream_state_survives_every_batching() {
    let events: Vec<StreamEvent> = STREAM.iter().map(|d| StreamEvent::data(d)).collect();
    for batches in run::batchings(events.len()) {
        let o = run_batches(
            r#"{"stream_options":{"include_usage":true}}"#,
            &events,
            &batches,
        )
        .unwrap();
        assert_eq!(o.chunks.len(), 3, "{batches:?}");
        assert!(
            o.chunks
                .iter()
                .all(|c| json(c.as_bytes())["model"] == "gpt-eu")
        );
        assert_eq!(
            json(o.chunks[0].as_bytes())["choices"][0]["delta"]["content"],
            "Hé"
        );
        assert_eq!(o.usage, Some(Usage::new(3, 1).with_cached_prompt_tokens(2)));
        assert!(o.done);
    }
}

#[test]
fn state_is_two_flags() {
    let s = Stream {
        finished: true,
        forward_usage_chunk: false,
    };
    assert_eq!(Stream::restore(&s.save()).unwrap(), s);
    assert!(Stream::restore(&[1]).is_err());
    assert!(Stream::restore(&[1, 0, 0]).is_err());
}

#[test]
fn usage_chunk_is_forwarded_only_to_callers_that_asked() {
    let o = run_events(r#"{"stream":true}"#, &STREAM).unwrap();
    assert_eq!(
        o.chunks.len(),
        2,
        "usage-only chunk dropped: {:?}",
        o.chunks
    );
    let u = o.usage.expect("usage still reported to the host");
    assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 1));
    assert!(o.done);
    assert!(wants_usage(r#"{"stream_options":{"include_usage":true}}"#));
    assert!(!wants_usage(
        r#"{"stream_options":{"include_usage":false}}"#
    ));
    assert!(!wants_usage(r#"{"stream_options":null}"#));
    assert!(!wants_usage("not json"));
}

#[test]
fn nothing_after_done_and_blank_events_are_skipped() {
    let o = run_events("{}", &["", STREAM[0], "  [DONE]\n", "{\"error\":{}}"]).unwrap();
    assert_eq!(o.chunks.len(), 1);
    assert!(o.done);
}

#[test]
fn truncated_stream_is_an_error() {
    let e = run_events(
        "{}",
        &["{\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}"],
    )
    .unwrap_err();
    assert!(matches!(e.class, ErrorClass::Overloaded));
    assert_eq!(e.message, "stream ended before completion");
    // A finish_reason without [DONE] is complete enough (some servers omit it).
    let ok = run_events(
        "{}",
        &["{\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}"],
    )
    .unwrap();
    assert_eq!(ok.chunks.len(), 1);
    assert!(!ok.done);
}

#[test]
fn stream_errors() {
    // Events that are not chunks are skipped and counted, not fatal:
    // the host decides when there are too many.
    let ok = run_events(
        "{}",
        &[
            "{\"choices\": [",
            "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
            "[1]",
            "[DONE]",
        ],
    )
    .unwrap();
    assert_eq!((ok.chunks.len(), ok.malformed), (1, 2));
    let e = run_events(
        "{}",
        &["{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}"],
    )
    .unwrap_err();
    assert!(matches!(e.class, ErrorClass::Overloaded));
    assert!(e.message.contains("overloaded"));
    // A named error event, JSON or not.
    let named =
        |data: &str| run_batches("{}", &[StreamEvent::new("error", data)], &[1]).unwrap_err();
    let e = named("{\"message\":\"maximum context length is 10\"}");
    assert!(matches!(e.class, ErrorClass::ContextLengthExceeded));
    let e = named("gone away");
    assert_eq!(e.message, "upstream stream error: gone away");
}
