//! A mock OpenAI-compatible upstream on 127.0.0.1 whose behaviour is chosen by
//! the upstream model name in the request, so one server can play a healthy
//! deployment and every kind of broken one at once:
//!
//! | model        | behaviour |
//! |--------------|-----------|
//! | `fail-500`   | 500 with an OpenAI error body |
//! | `rate-429`   | 429 with `Retry-After: 30` |
//! | `rate-429-bare` | 429 without `Retry-After` |
//! | `rate-429-now` | 429 with `Retry-After: 0` (retry at once, it says, forever) |
//! | `fail-503`   | 503 `overloaded` (an outage) |
//! | `keepalive-mid` | streams: one chunk, then only `: keep-alive` comments, every 100 ms |
//! | `fail-500-once` | its first request a 500, then normal answers |
//! | `rate-429-once` | its first request a 429 with `Retry-After: 1`, then normal answers |
//! | `bad-request`| 400 invalid_request_error (the caller's fault) |
//! | `hang`       | accepts, never sends headers |
//! | `body-stall` | 200 and the start of a whole answer's body, then silence |
//! | `empty`      | 200 with empty content, streamed or not (an evaluator must fail it) |
//! | `cut-early`  | streams: 200, then closes before any event |
//! | `done-only`  | streams: 200, only `data: [DONE]` |
//! | `role-done`  | streams: 200, a role-only chunk, then `[DONE]` |
//! | `stall-first`| streams: 200, then silence |
//! | `cut-mid`    | streams: two chunks, then closes without finishing |
//! | `stall-mid`  | streams: two chunks, then silence |
//! | `context-length` | 400 `context_length_exceeded` |
//! | `content-filter` | 400 `content_filter` (a policy refusal) |
//! | `slow-stream`| streams: a chunk every 500 ms, four in all, then `[DONE]` |
//! | `no-usage`   | a normal answer (or stream) that reports no usage |
//! | `story`      | streams [`STORY`] a word a chunk; after a final assistant message (a prefill) that begins it, only the rest |
//! | `story-cut-N` | streams the story's first N words, then closes without finishing |
//! | `story-stall-N` | the first N words, then silence |
//! | `story-error-N` | the first N words, then an error event (`server_error`) |
//! | `story-noprefill` | like `story`, but a final assistant message is a 400 |
//! | `story-diverge` | streams another text that begins like the story |
//! | `story-malformed` | the story with an event that is not JSON in its middle |
//! | `story-garbled` | the story with six events that are not JSON after its third word |
//! | `story-nodone` | the story and its finish reason, then closes without `[DONE]` |
//! | `story-after-done` | the story, then `[DONE]` and a stray chunk (" late") in one write |
//! | `late-first-token` | streams: the role chunk at once, the content 20 s later |
//! | `cached`     | a normal answer: 1,000 prompt tokens (400 cached), 500 completion |
//! | `quota-low`  | a normal answer whose headers say no request is left for 2 s |
//! | `refuse`     | a refusal ("I'm sorry, but I can't help with that request.") |
//! | anything else| a normal answer, "answer from <model>" (or 503 while `set_failing`) |
//!
//! And by the key sent (`Authorization: Bearer ...`), whatever the model:
//! `key-429` gets a 429 with `Retry-After: 86400` (a day), `key-401` a 401.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Hits(
    Arc<Mutex<HashMap<String, usize>>>,
    Arc<Mutex<HashSet<String>>>,
    Arc<Mutex<Vec<Recorded>>>,
    /// Chat request bodies, in arrival order.
    Arc<Mutex<Vec<Value>>>,
    /// Delay before answering, by model.
    Arc<Mutex<HashMap<String, Duration>>>,
    /// Models answering 429 (Retry-After: 30), decided when a request
    /// arrives.
    Arc<Mutex<HashSet<String>>>,
);

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Path and query.
    pub uri: String,
    /// Header names lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// When it arrived.
    pub at: std::time::Instant,
    /// The upstream model it asked for (chat requests).
    pub model: Option<String>,
}

/// A running mock upstream (stops with the test's runtime).
pub struct Mock {
    /// Base URL to put in a deployment (`http://127.0.0.1:<port>/v1`).
    pub url: String,
    hits: Hits,
}

impl Mock {
    pub async fn start() -> Mock {
        let hits = Hits::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .fallback(other)
            .layer(axum::middleware::from_fn_with_state(hits.clone(), record))
            .with_state(hits.clone());
        // A burst of thousands of upstream connections must not overflow
        // the accept queue (a dropped SYN costs a 1 s retransmit).
        let listener = switchyard::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(switchyard::server::nodelay(listener), app).await });
        Mock { url, hits }
    }

    /// Makes this upstream model answer 500 until told otherwise (an outage
    /// the test controls).
    pub fn set_failing(&self, model: &str, failing: bool) {
        let mut set = self.hits.1.lock().unwrap();
        if failing {
            set.insert(model.to_string());
        } else {
            set.remove(model);
        }
    }

    /// Makes this upstream model answer 429 with `Retry-After: 30` to the
    /// requests that arrive from now on (until told otherwise).
    pub fn set_rate_limited(&self, model: &str, limited: bool) {
        let mut set = self.hits.5.lock().unwrap();
        if limited {
            set.insert(model.to_string());
        } else {
            set.remove(model);
        }
    }

    /// Makes this upstream model answer only after `delay` (a latency step
    /// the test controls).
    pub fn set_delay(&self, model: &str, delay: Duration) {
        self.hits.4.lock().unwrap().insert(model.to_string(), delay);
    }

    /// Every request received so far, any path.
    pub fn requests(&self) -> Vec<Recorded> {
        self.hits.2.lock().unwrap().clone()
    }

    /// Every chat request body received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.hits.3.lock().unwrap().clone()
    }

    /// When each request for this upstream model arrived.
    pub fn arrivals(&self, model: &str) -> Vec<std::time::Instant> {
        self.requests()
            .into_iter()
            .filter(|r| r.model.as_deref() == Some(model))
            .map(|r| r.at)
            .collect()
    }

    /// How many requests asked for this upstream model.
    pub fn hits(&self, model: &str) -> usize {
        self.hits.0.lock().unwrap().get(model).copied().unwrap_or(0)
    }
}

async fn record(
    State(hits): State<Hits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // The body is read here to note the model, then handed on.
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let model = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["model"].as_str().map(str::to_string));
    hits.2.lock().unwrap().push(Recorded {
        uri: parts.uri.to_string(),
        headers,
        at: std::time::Instant::now(),
        model,
    });
    next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
        .await
}

async fn other() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path on the mock",
    )
}

/// A 429 `rate_limit_error`, with `Retry-After` when given.
fn too_many(message: &str, retry_after: Option<&str>) -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message);
    if let Some(after) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, after.parse().unwrap());
    }
    r
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": kind, "code": null}})),
    )
        .into_response()
}

fn chunk(model: &str, delta: Value, finish: Value) -> Bytes {
    let c = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    Bytes::from(format!("data: {c}\n\n"))
}

fn sse(events: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(events.map(Ok::<_, Infallible>)))
        .unwrap()
}

async fn chat(State(hits): State<Hits>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some("Bearer key-429") => {
            return too_many("key over quota", Some("86400"));
        }
        Some("Bearer key-401") => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "Incorrect API key provided",
            );
        }
        _ => {}
    }
    hits.3.lock().unwrap().push(request.clone());
    let model = request["model"].as_str().unwrap_or_default().to_string();
    let stream = request["stream"].as_bool().unwrap_or(false);
    *hits.0.lock().unwrap().entry(model.clone()).or_default() += 1;
    if hits.5.lock().unwrap().contains(&model) {
        return too_many("slow down", Some("30"));
    }
    let delay = hits.4.lock().unwrap().get(&model).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if hits.1.lock().unwrap().contains(&model) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "server_error", "outage");
    }

    let nth = hits.0.lock().unwrap()[&model];
    match model.as_str() {
        "fail-500-once" if nth == 1 => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "mock upstream exploded once",
            );
        }
        "rate-429-once" if nth == 1 => {
            return too_many("slow down", Some("1"));
        }
        "rate-429-now" => {
            return too_many("slow down", Some("0"));
        }
        "rate-429-bare" => {
            return too_many("slow down", None);
        }
        "fail-503" => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The engine is currently overloaded, please try again later",
            );
        }
        "fail-500" => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "mock upstream exploded",
            );
        }
        "rate-429" => {
            return too_many("slow down", Some("30"));
        }
        "bad-request" => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "messages[0].content is invalid",
            );
        }
        "context-length" => {
            let body = json!({"error": {"message": "This model's maximum context length is 8192 tokens",
                "type": "invalid_request_error", "code": "context_length_exceeded"}});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
        "content-filter" => {
            let body = json!({"error": {"message": "The prompt was filtered by the content management policy.",
                "type": "invalid_request_error", "code": "content_filter"}});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
        "body-stall" if !stream => {
            use futures_util::StreamExt;
            let start =
                futures_util::stream::iter([Bytes::from_static(b"{\"id\":\"chatcmpl-stall\",")]);
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(
                    start
                        .chain(futures_util::stream::pending())
                        .map(Ok::<_, Infallible>),
                ))
                .unwrap();
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "too late",
            );
        }
        _ => {}
    }

    if model == "story-noprefill" && last_is_assistant(&request) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "This model does not support assistant message prefill. The conversation must end with a user message.",
        );
    }
    if stream && (model.starts_with("story") || model == "late-first-token") {
        return story(&model, &request);
    }

    if stream {
        return match model.as_str() {
            "cut-early" => sse(futures_util::stream::empty()),
            "done-only" => sse(futures_util::stream::iter([Bytes::from(
                "data: [DONE]\n\n",
            )])),
            "role-done" => sse(futures_util::stream::iter([
                chunk(
                    &model,
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                ),
                Bytes::from("data: [DONE]\n\n"),
            ])),
            "slow-stream" => {
                let model = model.clone();
                let events = futures_util::stream::unfold(0u32, move |i| {
                    let model = model.clone();
                    async move {
                        match i {
                            0..4 => {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                Some((
                                    chunk(
                                        &model,
                                        json!({"content": format!("piece{i} ")}),
                                        Value::Null,
                                    ),
                                    i + 1,
                                ))
                            }
                            4 => Some((Bytes::from_static(b"data: [DONE]\n\n"), i + 1)),
                            _ => None,
                        }
                    }
                });
                sse(events)
            }
            "stall-first" => sse(futures_util::stream::pending()),
            "keepalive-mid" => {
                use futures_util::StreamExt;
                let start = futures_util::stream::iter(vec![
                    chunk(
                        &model,
                        json!({"role": "assistant", "content": ""}),
                        Value::Null,
                    ),
                    chunk(&model, json!({"content": "thinking "}), Value::Null),
                ]);
                let pings = futures_util::stream::unfold((), |()| async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Bytes::from_static(b": keep-alive\n\n"), ()))
                });
                sse(start.chain(pings))
            }
            "cut-mid" => sse(futures_util::stream::iter(vec![
                chunk(
                    &model,
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                ),
                chunk(&model, json!({"content": "partial "}), Value::Null),
            ])),
            "stall-mid" => {
                use futures_util::StreamExt;
                let start = futures_util::stream::iter(vec![
                    chunk(
                        &model,
                        json!({"role": "assistant", "content": ""}),
                        Value::Null,
                    ),
                    chunk(&model, json!({"content": "partial "}), Value::Null),
                ]);
                sse(start.chain(futures_util::stream::pending()))
            }
            _ => {
                let mut events = vec![chunk(
                    &model,
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                )];
                let pieces = if model == "empty" {
                    vec![]
                } else {
                    vec!["answer ", "from ", model.as_str()]
                };
                for piece in pieces {
                    events.push(chunk(&model, json!({"content": piece}), Value::Null));
                }
                events.push(chunk(&model, json!({}), json!("stop")));
                let usage = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [], "usage": usage_of(&model)});
                if model != "no-usage" {
                    events.push(Bytes::from(format!("data: {usage}\n\n")));
                }
                events.push(Bytes::from_static(b"data: [DONE]\n\n"));
                sse(futures_util::stream::iter(events))
            }
        };
    }

    let content = if model == "empty" {
        String::new()
    } else if model == "refuse" {
        "I'm sorry, but I can't help with that request.".to_string()
    } else if let Some(content) = structured_answer(&model, &request) {
        content
    } else {
        format!("answer from {model}")
    };
    let mut answer = json!({
        "id": "mock", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage_of(&model),
    });
    if model == "no-usage" {
        answer.as_object_mut().unwrap().remove("usage");
    }
    let mut r = axum::Json(answer).into_response();
    if model == "quota-low" {
        for (k, v) in [
            ("x-ratelimit-limit-requests", "100"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
        ] {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
    }
    r
}

/// What the `story` models tell.
pub const STORY: &str = "Once upon a time a small gateway carried every word across the river without dropping a single one.";

fn last_is_assistant(request: &Value) -> bool {
    request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .is_some_and(|m| m["role"] == "assistant")
}

/// The `story` family: `STORY` a word (with its trailing space) a chunk,
/// broken as the model name says.
fn story(model: &str, request: &Value) -> Response {
    use futures_util::StreamExt;
    let (kind, n) = match model.rsplit_once('-') {
        Some((kind, n)) if n.parse::<usize>().is_ok() => (kind, n.parse().unwrap()),
        _ => (model, usize::MAX),
    };
    let text = if kind == "story-diverge" {
        "Once upon a time a large gateway lost half the words in the river."
    } else {
        STORY
    };
    // A prefill that begins the story: only the rest (like a model
    // continuing its own message).
    let mut skip = 0;
    if last_is_assistant(request) && kind != "story-noprefill" {
        let prefix = request["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap_or_default();
        if text.starts_with(prefix) {
            skip = prefix.len();
        }
    }
    let words: Vec<String> = text[skip..]
        .split_inclusive(' ')
        .map(str::to_string)
        .collect();
    let mut events = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let late = model == "late-first-token";
    for (i, w) in words.iter().enumerate() {
        if i == n {
            break;
        }
        if kind == "story-malformed" && i == 3 {
            events.push(Bytes::from_static(b"data: {\"choices\": [\n\n"));
        }
        if kind == "story-garbled" && i == 3 {
            for _ in 0..6 {
                events.push(Bytes::from_static(
                    b"data: <html>502 Bad Gateway</html>\n\n",
                ));
            }
        }
        events.push(chunk(model, json!({"content": w}), Value::Null));
    }
    let whole = n >= words.len();
    if whole {
        events.push(chunk(model, json!({}), json!("stop")));
        let usage = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": words.len(), "total_tokens": 10 + words.len()}});
        events.push(Bytes::from(format!("data: {usage}\n\n")));
        if kind == "story-after-done" {
            // Nothing after the end marker belongs to the answer.
            let stray = chunk(model, json!({"content": " late"}), Value::Null);
            let mut last = b"data: [DONE]\n\n".to_vec();
            last.extend_from_slice(&stray);
            events.push(Bytes::from(last));
        } else if kind != "story-nodone" {
            events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        }
    }
    // Each word after a short pause, so events arrive one by one.
    let paced =
        futures_util::stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
            if late && i == 1 {
                tokio::time::sleep(Duration::from_secs(20)).await;
            } else if i > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            e
        });
    let tail: futures_util::stream::BoxStream<'static, Bytes> = match kind {
        _ if whole => futures_util::stream::empty().boxed(),
        "story-stall" => futures_util::stream::pending().boxed(),
        "story-error" => futures_util::stream::iter([Bytes::from_static(
            b"event: error\ndata: {\"error\": {\"message\": \"The server had an error while processing your request.\", \"type\": \"server_error\"}}\n\n",
        )])
        .boxed(),
        // story-cut: the body simply ends.
        _ => futures_util::stream::empty().boxed(),
    };
    sse(paced.chain(tail))
}

/// The usage the mock reports for `model`.
/// The answers of the models that play at structured output: JSON in
/// prose (`json-in-prose`), JSON missing a field until told what was wrong
/// (`json-fixed-when-told`), never JSON (`json-never`).
fn structured_answer(model: &str, request: &Value) -> Option<String> {
    let last_user = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    Some(match model {
        "json-in-prose" => {
            "Sure! Here it is:\n```json\n{\"name\": \"Ada\", \"age\": 36}\n```\nAnything else?"
                .into()
        }
        "json-fixed-when-told" if last_user.contains("not usable") => {
            r#"{"name": "Ada", "age": 36}"#.into()
        }
        "json-fixed-when-told" => r#"{"name": "Ada"}"#.into(),
        "json-never" => "Ada is thirty-six.".into(),
        _ => return None,
    })
}

fn usage_of(model: &str) -> Value {
    if model == "cached" {
        json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 400}})
    } else {
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    }
}
