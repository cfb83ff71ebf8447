use serde_json::{Value, json};
use switchyard_sdk::BuildError;

use super::build_body;

fn body(request: Value) -> Value {
    let bytes = build_body("llama3.2", &request.to_string()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The reason of an invalid request.
fn refused(request: Value) -> String {
    match build_body("m", &request.to_string()) {
        Err(BuildError::InvalidRequest(why)) => why,
        other => panic!("not refused: {other:?}"),
    }
}

fn user(content: Value) -> Value {
    json!({"messages": [{"role": "user", "content": content}]})
}

fn with(mut request: Value, member: &str, value: Value) -> Value {
    request[member] = value;
    request
}

#[test]
fn minimal_request_is_explicit_about_streaming() {
    let b = body(json!({"model": "route", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(
        b,
        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false})
    );
    let b = body(with(user(json!("hi")), "stream", json!(true)));
    assert_eq!(b["stream"], true);
}

#[test]
fn sampling_parameters_become_options() {
    let mut r = user(json!("hi"));
    for (k, v) in [
        ("temperature", json!(0.2)),
        ("top_p", json!(0.9)),
        ("max_tokens", json!(100)),
        ("stop", json!("END")),
        ("seed", json!(42)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(-0.5)),
        ("user", json!("u-1")),
        ("metadata", json!({"k": "v"})),
        ("store", json!(false)),
        ("parallel_tool_calls", json!(false)),
        ("stream_options", json!({"include_usage": true})),
        ("n", json!(1)),
        ("logprobs", json!(false)),
    ] {
        r[k] = v;
    }
    let b = body(r.clone());
    assert_eq!(
        b["options"],
        json!({"temperature": 0.2, "top_p": 0.9, "num_predict": 100, "stop": ["END"],
               "seed": 42, "presence_penalty": 0.5, "frequency_penalty": -0.5})
    );
    // Sorted: the workspace may build serde_json with `preserve_order`.
    let mut keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["messages", "model", "options", "stream"],
        "metadata is not sent"
    );
    r["max_completion_tokens"] = json!(7);
    r["stop"] = json!(["a", "b"]);
    let b = body(r);
    assert_eq!(b["options"]["num_predict"], 7, "the newer name wins");
    assert_eq!(b["options"]["stop"], json!(["a", "b"]));
    assert!(
        body(with(user(json!("x")), "stop", json!([])))
            .get("options")
            .is_none()
    );
}

#[test]
fn response_formats() {
    let r = |f: Value| {
        body(with(user(json!("x")), "response_format", f))
            .get("format")
            .cloned()
    };
    assert_eq!(r(json!({"type": "json_object"})), Some(json!("json")));
    let schema =
        json!({"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]});
    assert_eq!(
        r(
            json!({"type": "json_schema", "json_schema": {"name": "p", "strict": true, "schema": schema}})
        ),
        Some(schema)
    );
    assert_eq!(
        r(json!({"type": "json_schema", "json_schema": {"name": "p"}})),
        Some(json!("json"))
    );
    assert_eq!(r(json!({"type": "text"})), None);
}

#[test]
fn roles_parts_and_images() {
    let b = body(json!({"messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
        {"role": "user", "name": "ann", "content": [
            {"type": "text", "text": "What is "},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "text", "text": "this?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
        ]},
        {"role": "assistant", "content": null},
        {"role": "assistant", "content": "A logo."}
    ]}));
    assert_eq!(
        b["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "What is this?", "images": ["iVBORw0KGgo=", "/9j/4AAQ"]},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "A logo."}
        ])
    );
}

#[test]
fn unusable_parts_are_refused_by_position() {
    let image = |url: &str| {
        user(
            json!([{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]),
        )
    };
    let why = refused(image("https://example.com/cat.png"));
    assert!(
        why.starts_with("`messages[0].content[1].image_url` must be a data: URL for Ollama"),
        "{why}"
    );
    assert!(
        refused(image("HTTP://example.com/cat.png")).contains("must be a data: URL for Ollama")
    );
    let why = refused(image("data:image/svg+xml,<svg/>"));
    assert_eq!(
        why,
        "`messages[0].content[1].image_url` must be a base64 data: URL"
    );
    let why = refused(image("data:application/pdf;base64,JVBERi0="));
    assert_eq!(
        why,
        "`messages[0].content[1].image_url` is `application/pdf`, not an image"
    );
    for part in [
        json!({"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}),
        json!({"type": "file", "file": {"file_id": "f"}}),
    ] {
        let why = refused(user(json!([part])));
        assert!(
            why.starts_with("`messages[0].content[0]` is a part Ollama cannot take"),
            "{why}"
        );
    }
}

#[test]
fn tool_round_trip() {
    let b = body(json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "unknown", "name": "legacy", "content": "?"},
            {"role": "tool", "tool_call_id": "unknown", "content": "?"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "auto"
    }));
    assert_eq!(
        b["messages"].as_array().unwrap()[1..],
        [
            json!({"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}},
                {"id": "call_2", "function": {"name": "get_time", "arguments": {}}}
            ]}),
            json!({"role": "tool", "content": "12:00", "tool_name": "get_time", "tool_call_id": "call_2"}),
            json!({"role": "tool", "content": "18C", "tool_name": "get_weather", "tool_call_id": "call_1"}),
            json!({"role": "tool", "content": "?", "tool_name": "legacy", "tool_call_id": "unknown"}),
            json!({"role": "tool", "content": "?", "tool_call_id": "unknown"}),
        ]
    );
    assert_eq!(b["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(b["tools"][0]["type"], "function");
    // The caller's key order survives (no JSON tree in between).
    let text = String::from_utf8(build_body("m", &json!({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"z\":1,\"a\":2}"}}]}]}).to_string()).unwrap()).unwrap();
    assert!(text.contains(r#""arguments":{"z":1,"a":2}"#), "{text}");
}

#[test]
fn a_repeated_call_id_names_the_latest_call() {
    let call = |name: &str| json!({"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": name, "arguments": "{}"}}]});
    let b = body(json!({"messages": [
        {"role": "user", "content": "go"}, call("first"), {"role": "tool", "tool_call_id": "call_0", "content": "1"},
        call("second"), {"role": "tool", "tool_call_id": "call_0", "content": "2"}
    ]}));
    assert_eq!(b["messages"][2]["tool_name"], "first");
    assert_eq!(b["messages"][4]["tool_name"], "second");
}

#[test]
fn bad_tool_arguments_are_refused_by_position() {
    let r = |args: &str| {
        refused(
            json!({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "f", "arguments": args}}]}]}),
        )
    };
    let why = r("{\"city\": ");
    assert!(
        why.starts_with("`messages[1].tool_calls[1].function.arguments` is not valid JSON: "),
        "{why}"
    );
    assert_eq!(
        r("[1, 2]"),
        "`messages[1].tool_calls[1].function.arguments` must be a JSON object"
    );
    assert_eq!(
        r("\"{}\""),
        "`messages[1].tool_calls[1].function.arguments` must be a JSON object"
    );
}

#[test]
fn tool_choice() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let r = |choice: Value| {
        with(
            with(user(json!("x")), "tools", tools.clone()),
            "tool_choice",
            choice,
        )
    };
    assert!(
        body(r(json!("none"))).get("tools").is_none(),
        "none: no tools declared"
    );
    assert_eq!(body(r(json!("auto")))["tools"], tools);
    assert_eq!(
        refused(r(json!("required"))),
        "`tool_choice` `required` is not supported by Ollama: use `auto` or `none`"
    );
    let why = refused(r(json!({"type": "function", "function": {"name": "f"}})));
    assert!(
        why.starts_with("`tool_choice` naming a function is not supported"),
        "{why}"
    );
    let odd = with(
        user(json!("x")),
        "tools",
        json!([tools[0], {"type": "custom", "function": {"name": "g"}}]),
    );
    assert_eq!(refused(odd), "`tools[1].type` must be `function`");
}

#[test]
fn what_ollama_cannot_do_is_refused_by_name() {
    for (member, value, named) in [
        ("n", json!(2), "`n` must be 1"),
        ("logprobs", json!(true), "`logprobs`"),
        ("top_logprobs", json!(3), "`top_logprobs`"),
        ("logit_bias", json!({"50256": -100}), "`logit_bias`"),
        (
            "audio",
            json!({"voice": "alloy", "format": "wav"}),
            "`audio`",
        ),
        ("modalities", json!(["text", "audio"]), "`modalities`"),
        ("functions", json!([{"name": "f"}]), "`functions`"),
        ("function_call", json!("auto"), "`function_call`"),
    ] {
        let why = refused(with(user(json!("x")), member, value));
        assert!(why.starts_with(named), "{member}: {why}");
    }
    // Set to their defaults, they ask for nothing.
    for (member, value) in [
        ("logit_bias", json!({})),
        ("logprobs", json!(null)),
        ("top_logprobs", json!(0)),
        ("modalities", json!(["text"])),
        ("audio", json!(null)),
    ] {
        body(with(user(json!("x")), member, value));
    }
    assert_eq!(
        refused(json!({"messages": []})),
        "`messages` must not be empty"
    );
}

#[test]
fn malformed_requests_are_invalid_not_panics() {
    for request in [
        "",
        "[]",
        "{",
        "{\"messages\": 3}",
        "{\"messages\": [{\"role\": \"robot\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":7}]}",
    ] {
        assert!(
            matches!(build_body("m", request), Err(BuildError::InvalidRequest(_))),
            "{request}"
        );
    }
}
