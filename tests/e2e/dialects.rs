//! A mock upstream that speaks every provider dialect from its documented
//! wire format: OpenAI's chat completions (`POST /v1/chat/completions`),
//! Anthropic's Messages API
//! (`POST /v1/messages`), Google's Generative Language API
//! (`POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`) and Ollama's native chat API
//! (`POST /api/chat`, NDJSON streams).
//!
//! It answers like a model that knows one tool: given tools (and no tool
//! result yet) it calls the first with `{"city": "Paris"}`; asked for JSON
//! it answers `{"city": "Paris", "temp_c": 21}`; after a tool result it
//! says "It is 21C in Paris."; otherwise "answer from <model>".

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

pub struct Dialects {
    /// `http://127.0.0.1:<port>`: append `/v1` (Anthropic), `/v1beta`
    /// (Gemini) or nothing (Ollama) for a deployment's base URL.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// What the model answers.
enum Reply {
    Text(String),
    Tool { name: String },
    Json,
}

impl Reply {
    /// What the model answers: JSON when asked for it, else a call of the
    /// first tool it has (until a tool's result came back), else text.
    fn choose(json: bool, first_tool: Option<&str>, after_result: bool, model: &str) -> Reply {
        match first_tool {
            _ if json => Reply::Json,
            Some(name) if !after_result => Reply::Tool { name: name.into() },
            _ if after_result => Reply::Text("It is 21C in Paris.".into()),
            _ => Reply::Text(format!("answer from {model}")),
        }
    }
}

const JSON_ANSWER: &str = r#"{"city":"Paris","temp_c":21}"#;

impl Dialects {
    pub async fn start() -> Dialects {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let state = seen.clone();
        let app = Router::new().fallback(
            move |uri: Uri, headers: axum::http::HeaderMap, body: Bytes| {
                let seen = state.clone();
                async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock().unwrap().push(Seen {
                        path: uri.to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect(),
                        body: body.clone(),
                    });
                    answer(&uri, &body)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Dialects { url, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(uri: &Uri, body: &Value) -> Response {
    let path = uri.path();
    if path == "/v1/messages" {
        anthropic(body)
    } else if path == "/v1/chat/completions" {
        openai(body)
    } else if let Some(rest) = path.strip_prefix("/v1beta/models/") {
        gemini(rest, body)
    } else if path == "/api/chat" {
        ollama(body)
    } else {
        (StatusCode::NOT_FOUND, format!("no route {path}")).into_response()
    }
}

fn sse(events: Vec<(Option<&str>, Value)>) -> Response {
    sse_then(events, "")
}

/// Server-sent `events`, then `tail` as is.
fn sse_then(events: Vec<(Option<&str>, Value)>, tail: &str) -> Response {
    let mut text = String::new();
    for (name, data) in events {
        if let Some(n) = name {
            text.push_str(&format!("event: {n}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
    }
    text.push_str(tail);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(text))
        .unwrap()
}

// ---- OpenAI ----

fn openai(b: &Value) -> Response {
    let model = b["model"].as_str().unwrap_or("gpt").to_string();
    // A model with no JSON mode that follows format instructions, the way
    // models do: the JSON in a fenced block, with a word around it.
    let instructed = b["messages"]
        .as_array()
        .and_then(|m| m.first())
        .and_then(|m| m["content"].as_str())
        .is_some_and(|c| c.starts_with("Reply with one JSON"));
    if model == "no-json-mode" && instructed {
        let text = format!("Here is the JSON:\n```json\n{JSON_ANSWER}\n```");
        let answer = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}});
        return axum::Json(answer).into_response();
    }
    let reply = Reply::choose(
        b["response_format"]["type"]
            .as_str()
            .is_some_and(|t| t != "text"),
        b["tools"][0]["function"]["name"].as_str(),
        b["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "tool"),
        &model,
    );
    let (message, finish) = match &reply {
        Reply::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
        Reply::Json => (json!({"role": "assistant", "content": JSON_ANSWER}), "stop"),
        Reply::Tool { name } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_01", "type": "function", "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}}]}),
            "tool_calls",
        ),
    };
    let usage = json!({"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27});
    if b["stream"] != true {
        return axum::Json(json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1796205600, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1796205600, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut ev = vec![(
        None,
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
    )];
    match &reply {
        Reply::Text(t) => {
            for w in t.split_inclusive(' ') {
                ev.push((None, chunk(json!({"content": w}), Value::Null)));
            }
        }
        Reply::Json => ev.push((None, chunk(json!({"content": JSON_ANSWER}), Value::Null))),
        Reply::Tool { name } => {
            ev.push((None, chunk(json!({"tool_calls": [{"index": 0, "id": "call_01", "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null)));
            ev.push((None, chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}), Value::Null)));
        }
    }
    ev.push((None, chunk(json!({}), json!(finish))));
    ev.push((None, json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1796205600, "model": model, "choices": [], "usage": usage})));
    sse_then(ev, "data: [DONE]\n\n")
}

// ---- Anthropic ----

fn anthropic(b: &Value) -> Response {
    let model = b["model"].as_str().unwrap_or("claude").to_string();
    if b["max_tokens"].as_u64().is_none() || b.get("messages").is_none() {
        let e = json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}});
        return (StatusCode::BAD_REQUEST, axum::Json(e)).into_response();
    }
    let last_is_result = b["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
    let reply = Reply::choose(
        b["tool_choice"]["name"] == "switchyard_json_response",
        b["tools"][0]["name"].as_str(),
        last_is_result,
        &model,
    );
    let (block, stop) = match &reply {
        Reply::Text(t) => (json!({"type": "text", "text": t}), "end_turn"),
        Reply::Tool { name } => (
            json!({"type": "tool_use", "id": "toolu_01", "name": name, "input": {"city": "Paris"}}),
            "tool_use",
        ),
        Reply::Json => (
            json!({"type": "tool_use", "id": "toolu_02", "name": "switchyard_json_response", "input": serde_json::from_str::<Value>(JSON_ANSWER).unwrap()}),
            "tool_use",
        ),
    };
    // A caller's stop sequence `STOP-HERE` is what "matched" (a text
    // answer ends at it, as Anthropic reports it).
    let matched = b["stop_sequences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| *s == "STOP-HERE")
        .filter(|_| matches!(reply, Reply::Text(_)))
        .cloned();
    let stop = if matched.is_some() {
        "stop_sequence"
    } else {
        stop
    };
    let matched = matched.unwrap_or(Value::Null);
    let usage = json!({"input_tokens": 20, "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 5, "output_tokens": 7});
    if b["stream"] != true {
        return axum::Json(json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop, "stop_sequence": matched, "usage": usage,
        }))
        .into_response();
    }
    let mut ev = vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "usage": {"input_tokens": 20, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
        ),
        (Some("ping"), json!({"type": "ping"})),
    ];
    match &reply {
        Reply::Text(t) => {
            ev.push((Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            for w in t.split_inclusive(' ') {
                ev.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})));
            }
        }
        Reply::Tool { .. } | Reply::Json => {
            let mut start = block.clone();
            start["input"] = json!({});
            ev.push((
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": start}),
            ));
            let args = block["input"].to_string();
            let (a, z) = args.split_at(args.len() / 2);
            for piece in [a, z] {
                ev.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}})));
            }
        }
    }
    ev.push((
        Some("content_block_stop"),
        json!({"type": "content_block_stop", "index": 0}),
    ));
    ev.push((Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": matched}, "usage": {"output_tokens": 7}})));
    ev.push((Some("message_stop"), json!({"type": "message_stop"})));
    sse(ev)
}

// ---- Gemini ----

fn gemini(rest: &str, b: &Value) -> Response {
    let (model, method) = rest.split_once(':').unwrap_or((rest, ""));
    let contents = b["contents"].as_array().cloned().unwrap_or_default();
    let last_is_result = contents
        .last()
        .and_then(|c| c["parts"].as_array())
        .is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some()));
    let reply = Reply::choose(
        b["generationConfig"]["responseMimeType"] == "application/json",
        b["tools"][0]["functionDeclarations"][0]["name"].as_str(),
        last_is_result,
        model,
    );
    let usage = json!({"promptTokenCount": 20, "candidatesTokenCount": 7, "totalTokenCount": 27});
    let candidate = |parts: Value, finish: Option<&str>| {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        c
    };
    let parts = match &reply {
        Reply::Text(t) => json!([{"text": t}]),
        Reply::Json => json!([{"text": JSON_ANSWER}]),
        Reply::Tool { name } => {
            json!([{"functionCall": {"name": name, "args": {"city": "Paris"}}}])
        }
    };
    match method {
        "generateContent" => axum::Json(json!({
            "candidates": [candidate(parts, Some("STOP"))],
            "usageMetadata": usage, "modelVersion": model, "responseId": "gem-mock",
        }))
        .into_response(),
        "streamGenerateContent" => {
            let mut ev = Vec::new();
            match &reply {
                Reply::Text(t) => {
                    let words: Vec<&str> = t.split_inclusive(' ').collect();
                    for (i, w) in words.iter().enumerate() {
                        let last = i + 1 == words.len();
                        let mut e = json!({"candidates": [candidate(json!([{"text": w}]), last.then_some("STOP"))], "responseId": "gem-mock", "modelVersion": model});
                        if last {
                            e["usageMetadata"] = usage.clone();
                        }
                        ev.push((None, e));
                    }
                }
                _ => ev.push((None, json!({"candidates": [candidate(parts, Some("STOP"))], "usageMetadata": usage, "responseId": "gem-mock"}))),
            }
            sse(ev)
        }
        other => (StatusCode::NOT_FOUND, format!("no method {other}")).into_response(),
    }
}

// ---- Ollama ----

fn ollama(b: &Value) -> Response {
    let model = b["model"].as_str().unwrap_or("llama").to_string();
    let reply = Reply::choose(
        b.get("format").is_some_and(|f| !f.is_null()),
        b["tools"][0]["function"]["name"].as_str(),
        b["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "tool"),
        &model,
    );
    let message = match &reply {
        Reply::Text(t) => json!({"role": "assistant", "content": t}),
        Reply::Json => json!({"role": "assistant", "content": JSON_ANSWER}),
        Reply::Tool { name } => {
            json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": {"city": "Paris"}}}]})
        }
    };
    let done = json!({"model": model, "created_at": "2026-12-02T10:00:00Z", "done": true, "done_reason": "stop", "prompt_eval_count": 20, "eval_count": 7});
    if b["stream"] == false {
        let mut d = done;
        d["message"] = message;
        return axum::Json(d).into_response();
    }
    let mut lines = String::new();
    match &reply {
        Reply::Text(t) => {
            for w in t.split_inclusive(' ') {
                lines.push_str(&json!({"model": model, "created_at": "2026-12-02T10:00:00Z", "message": {"role": "assistant", "content": w}, "done": false}).to_string());
                lines.push('\n');
            }
        }
        _ => {
            lines.push_str(&json!({"model": model, "created_at": "2026-12-02T10:00:00Z", "message": message, "done": false}).to_string());
            lines.push('\n');
        }
    }
    let mut d = done;
    d["message"] = json!({"role": "assistant", "content": ""});
    lines.push_str(&d.to_string());
    lines.push('\n');
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from(lines))
        .unwrap()
}
