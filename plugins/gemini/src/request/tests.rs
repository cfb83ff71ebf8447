use serde_json::{Value, json};

use super::*;

fn target() -> Target {
    Target {
        deployment: "gemini-eu".into(),
        model: "gemini-2.5-flash".into(),
    }
}

fn body(req: Value) -> Value {
    let r = build(&target(), &req.to_string()).unwrap();
    serde_json::from_slice(&r.body).unwrap()
}

/// The reason `req` is refused with (it must be refused as invalid).
fn refused(req: Value) -> String {
    match build(&target(), &req.to_string()) {
        Err(BuildError::InvalidRequest(m)) => m,
        other => panic!("{req}: {other:?}"),
    }
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

#[test]
fn paths_name_the_model_and_method() {
    let r = build(&target(), &json!({"messages": [user("hi")]}).to_string()).unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/models/gemini-2.5-flash:generateContent");
    assert_eq!(
        r.headers,
        [("content-type".to_string(), "application/json".to_string())]
    );
    let streamed = json!({"messages": [user("hi")], "stream": true}).to_string();
    let r = build(&target(), &streamed).unwrap();
    assert_eq!(
        r.path,
        "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        path("models/gemini-2.0-flash", false),
        "/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(
        path("tunedModels/my-tune", false),
        "/tunedModels/my-tune:generateContent"
    );
    assert_eq!(
        path("a/b?c#d é", false),
        "/models/a%2Fb%3Fc%23d%20%C3%A9:generateContent"
    );
    assert_eq!(
        path("éé-1", true),
        "/models/%C3%A9%C3%A9-1:streamGenerateContent?alt=sse"
    );
    assert_eq!(path("models/", false), "/models/:generateContent");
}

#[test]
fn minimal_request_has_only_contents() {
    let b = body(json!({"model": "route", "messages": [user("Hello")]}));
    assert_eq!(
        b,
        json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]})
    );
}

#[test]
fn system_messages_become_the_system_instruction() {
    let b = body(json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in "}, {"type": "text", "text": "French."}]},
        user("Hi"),
        {"role": "assistant", "content": "Salut !", "name": "bot"},
        {"role": "system", "content": ""},
        user("Again"),
    ]}));
    assert_eq!(
        b["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]})
    );
    assert_eq!(
        b["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Salut !"}]},
            {"role": "user", "parts": [{"text": "Again"}]},
        ])
    );
    let m = refused(json!({"messages": [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
        user("x"),
    ]}));
    assert!(m.contains("`messages[0].content[0]`"), "{m}");
}

#[test]
fn images_travel_inline() {
    let b = body(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "high"}},
        {"type": "text", "text": ""},
    ]}]}));
    assert_eq!(
        b["contents"][0]["parts"],
        json!([
            {"text": "What is this?"},
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
        ])
    );
    for url in [
        "https://example.com/cat.png",
        "data:image/png,rawbytes",
        "data:;base64,AA==",
    ] {
        let m = refused(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "x"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}]}));
        assert!(
            m.starts_with("`messages[0].content[1].image_url` must be a data: URL"),
            "{m}"
        );
    }
    let m = refused(json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}},
    ]}]}));
    assert!(
        m.starts_with("`messages[0].content[0]` is a kind of content"),
        "{m}"
    );
}

#[test]
fn tool_round_trips_become_calls_and_responses() {
    let b = body(json!({"messages": [
        user("Weather in Paris and Rome?"),
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp_c\": 21}"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "12:00"}, {"type": "text", "text": " CET"}]},
        user("Thanks"),
    ]}));
    assert_eq!(
        b["contents"][1],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
             "thoughtSignature": "skip_thought_signature_validator"},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]})
    );
    assert_eq!(
        b["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "12:00 CET"}}},
        ]})
    );
    assert_eq!(
        b["contents"][3],
        json!({"role": "user", "parts": [{"text": "Thanks"}]})
    );
    // A result joined from parts that is an object stays an object.
    let b = body(json!({"messages": [
        user("x"),
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "{\"a\":"}, {"type": "text", "text": "[1]}"}]},
    ]}));
    assert_eq!(
        b["contents"][2]["parts"][0]["functionResponse"]["response"],
        json!({"a": [1]})
    );
}

#[test]
fn broken_tool_round_trips_are_refused_by_field() {
    let call = |args: &str| {
        json!({"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}
        ]})
    };
    let m = refused(json!({"messages": [user("x"), call("{\"a\":")]}));
    assert!(
        m.starts_with("`messages[1].tool_calls[0].function.arguments` is not valid JSON"),
        "{m}"
    );
    let m = refused(json!({"messages": [user("x"), call("[1, 2]")]}));
    assert_eq!(
        m,
        "`messages[1].tool_calls[0].function.arguments` must be a JSON object"
    );
    let m = refused(json!({"messages": [user("x"), call("{}"), {"role": "tool", "content": "r"}]}));
    assert!(
        m.starts_with("`messages[2].tool_call_id` is required"),
        "{m}"
    );
    let m = refused(json!({"messages": [
        user("x"), call("{}"), {"role": "tool", "tool_call_id": "zz", "content": "r"}
    ]}));
    assert!(
        m.starts_with("`messages[2].tool_call_id` `zz` answers no tool call"),
        "{m}"
    );
    // A result before its call does not count either.
    let m = refused(json!({"messages": [
        user("x"), {"role": "tool", "tool_call_id": "c1", "content": "r"}, call("{}")
    ]}));
    assert!(m.starts_with("`messages[1].tool_call_id`"), "{m}");
}

#[test]
fn tools_keep_their_json_schema() {
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"], "enum": ["c", "f", null]}},
        "required": ["city", "unit"],
        "additionalProperties": false,
    });
    let b = body(json!({
        "messages": [user("x")],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": schema, "strict": true}},
            {"type": "function", "function": {"name": "ping", "parameters": {}}},
            {"type": "function", "function": {"name": "pong"}},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
    }));
    assert_eq!(
        b["tools"],
        json!([{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather now", "parametersJsonSchema": schema},
            {"name": "ping"},
            {"name": "pong"},
        ]}])
    );
    assert_eq!(
        b["toolConfig"],
        json!({"functionCallingConfig": {"mode": "AUTO"}})
    );
    let m = refused(
        json!({"messages": [user("x")], "tools": [{"type": "code_interpreter", "function": {"name": "x"}}]}),
    );
    assert!(m.starts_with("`tools[0].type` must be `function`"), "{m}");
}

#[test]
fn tool_choice_maps_to_a_calling_mode() {
    let tools =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let config = |choice: Value| {
        body(json!({"messages": [user("x")], "tools": tools, "tool_choice": choice}))["toolConfig"]
            .clone()
    };
    assert_eq!(
        config(json!("none")),
        json!({"functionCallingConfig": {"mode": "NONE"}})
    );
    assert_eq!(
        config(json!("required")),
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert_eq!(
        config(json!({"type": "function", "function": {"name": "f"}})),
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}})
    );
    let refuse = |choice: Value, tools: Value| {
        refused(json!({"messages": [user("x")], "tools": tools, "tool_choice": choice}))
    };
    let m = refuse(
        json!({"type": "function", "function": {"name": "g"}}),
        tools.clone(),
    );
    assert_eq!(
        m,
        "`tool_choice.function.name` `g` is not a function in `tools`"
    );
    assert!(refuse(json!("sometimes"), tools.clone()).starts_with("`tool_choice` must be"));
    assert_eq!(
        refuse(json!("required"), json!([])),
        "`tool_choice` requires `tools`"
    );
    // Without tools, `none` and `auto` are what Gemini does anyway.
    let b = body(json!({"messages": [user("x")], "tool_choice": "none"}));
    assert!(b.get("toolConfig").is_none() && b.get("tools").is_none());
}

#[test]
fn generation_config_carries_every_option() {
    let b = body(json!({
        "messages": [user("x")],
        "temperature": 0.7, "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 256,
        "n": 2, "seed": 42, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "stop": ["END", ""], "response_format": {"type": "json_object"},
    }));
    assert_eq!(
        b["generationConfig"],
        json!({
            "stopSequences": ["END"], "responseMimeType": "application/json",
            "candidateCount": 2, "maxOutputTokens": 256, "temperature": 0.7, "topP": 0.9,
            "seed": 42, "presencePenalty": 0.5, "frequencyPenalty": -0.5,
        })
    );
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": false});
    let b = body(json!({
        "messages": [user("x")], "stop": "STOP", "max_tokens": 5, "n": 1,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": true}},
    }));
    assert_eq!(
        b["generationConfig"],
        json!({"stopSequences": ["STOP"], "maxOutputTokens": 5,
               "responseMimeType": "application/json", "responseJsonSchema": schema})
    );
    let b = body(json!({"messages": [user("x")], "response_format": {"type": "text"}}));
    assert!(b.get("generationConfig").is_none());
    assert_eq!(
        refused(json!({"messages": [user("x")], "n": 0})),
        "`n` must be at least 1"
    );
    let m = refused(json!({"messages": [user("x")], "n": 3, "stream": true}));
    assert!(
        m.starts_with("`n` greater than 1 is not supported with `stream`"),
        "{m}"
    );
    let m = refused(json!({"messages": [user("x")], "seed": 1_i64 << 40}));
    assert_eq!(m, "`seed` must fit in 32 bits for Gemini");
}

#[test]
fn unsupported_members_are_refused_and_bookkeeping_ignored() {
    let b = body(json!({
        "messages": [user("x")], "user": "u-1", "metadata": {"k": "v"}, "store": true,
        "parallel_tool_calls": true, "stream_options": {"include_usage": true},
        "service_tier": "auto", "logprobs": false, "logit_bias": {}, "top_logprobs": null,
        "modalities": ["text"],
    }));
    assert_eq!(
        b,
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
    );
    for (key, value, why) in [
        (
            "logprobs",
            json!(true),
            "does not translate log probabilities",
        ),
        (
            "top_logprobs",
            json!(2),
            "does not translate log probabilities",
        ),
        ("logit_bias", json!({"50256": -100}), "no token biases"),
        ("modalities", json!(["text", "audio"]), "answers text only"),
        ("functions", json!([]), "use `tools`"),
        (
            "reasoning_effort",
            json!("low"),
            "not supported by the Gemini adapter",
        ),
    ] {
        let mut req = json!({"messages": [user("x")]});
        req[key] = value;
        let m = refused(req);
        assert!(
            m.starts_with(&format!("`{key}` ")) && m.contains(why),
            "{m}"
        );
    }
}

#[test]
fn conversations_gemini_cannot_take_are_refused() {
    let m = refused(json!({"messages": [{"role": "system", "content": "Be brief."}]}));
    assert!(m.starts_with("`messages` needs a user message"), "{m}");
    let m = refused(json!({"messages": []}));
    assert!(m.starts_with("`messages`"), "{m}");
    let m = refused(json!({"messages": [user("")]}));
    assert!(m.starts_with("`messages[0].content` is empty"), "{m}");
    let m = refused(json!({"messages": [{"role": "user"}]}));
    assert!(m.starts_with("`messages[0].content` is empty"), "{m}");
    // An empty assistant turn says nothing and is left out.
    let b = body(json!({"messages": [user("a"), {"role": "assistant", "content": ""}, user("b")]}));
    assert_eq!(b["contents"].as_array().map(Vec::len), Some(2));
    for bad in [
        "",
        "{",
        "[]",
        r#"{"messages": "hi"}"#,
        r#"{"messages": [{"role": "robot"}]}"#,
    ] {
        assert!(
            matches!(build(&target(), bad), Err(BuildError::InvalidRequest(_))),
            "{bad}"
        );
    }
}

/// Prompt-cache breakpoints (for Anthropic) are ignored: Gemini caches
/// without marks, and the text goes as written.
#[test]
fn cache_breakpoints_are_ignored() {
    let mark = json!({"type": "ephemeral"});
    let b = body(json!({
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Rules.", "cache_control": mark}]},
            {"role": "user", "content": [{"type": "text", "text": "Doc.", "cache_control": mark}]}],
        "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": mark}],
    }));
    assert_eq!(b["systemInstruction"]["parts"][0]["text"], "Rules.");
    assert_eq!(b["contents"][0]["parts"][0]["text"], "Doc.");
    assert!(!b.to_string().contains("cache_control"), "{b}");
}
