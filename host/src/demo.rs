//! The demo upstream: a small OpenAI-compatible server that echoes the last
//! user message back. `switchyard serve` starts it when the config asks, so
//! the default config answers with no API keys; requests still go through the
//! real adapter plugin and HTTP client. It also serves as the fast upstream
//! in load tests (`switchyard demo-upstream`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Request {
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The demo upstream's router.
pub fn router() -> Router {
    paced_router(Duration::ZERO)
}

/// The demo upstream's router, its streamed events `gap` apart.
fn paced_router(gap: Duration) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(move |body| chat(body, gap)))
        .route(
            "/v1/models",
            get(|| async { axum::Json(json!({"object":"list","data":[{"id":"echo","object":"model","owned_by":"switchyard-demo"}]})) }),
        )
}

/// Binds and serves the demo upstream until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    serve_paced(listener, Duration::ZERO).await
}

/// [`serve`], a streamed answer's events `gap` apart (none: all at once).
pub async fn serve_paced(listener: tokio::net::TcpListener, gap: Duration) -> std::io::Result<()> {
    axum::serve(crate::server::nodelay(listener), paced_router(gap)).await
}

/// Binds the demo upstream's address, with an error that says what it is for.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    crate::server::listen(addr).map_err(|e| format!("cannot bind the demo upstream to {addr}: {e}"))
}

async fn chat(body: Bytes, gap: Duration) -> Response {
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let error = json!({"error": {"message": format!("invalid request: {e}"), "type": "invalid_request_error", "code": null}});
            return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
        }
    };
    let prompt = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| text_of(&m.content))
        .unwrap_or_default();
    let answer = format!("echo: {prompt}");
    let prompt_tokens = request
        .messages
        .iter()
        .map(|m| text_of(&m.content).len())
        .sum::<usize>()
        / 4
        + 1;
    let completion_tokens = answer.len() / 4 + 1;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let id = "chatcmpl-demo";
    if !request.stream {
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": 0,
            "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": usage,
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": request.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in answer.split_inclusive(' ') {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if request.stream_options.is_some_and(|o| o.include_usage) {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": request.model,
            "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    let events = futures_util::stream::iter(events.into_iter().map(Bytes::from));
    let stream = if gap.is_zero() {
        events.map(Ok::<_, Infallible>).boxed()
    } else {
        // The first at once; each next one `gap` after the last.
        events
            .enumerate()
            .then(move |(i, e)| async move {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                Ok::<_, Infallible>(e)
            })
            .boxed()
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("static response parts are valid")
}

/// The text of a message's content: a string, or the text parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}
