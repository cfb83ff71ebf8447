//! Upstream connections: one is reused from request to request, and one the
//! upstream closed while it sat idle in the pool never fails a request (a
//! stream from an `http` upstream rides a connection driven by the
//! request's own task, so nothing watches an idle one: it is checked when
//! taken).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Gateway, deployment, json_body, raw_upstream, sse_events};

const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"pooled"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

const EVENTS: [&str; 3] = [
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"pooled\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
];

/// A keep-alive HTTP/1.1 upstream on loopback that answers every chat
/// request (a stream when asked, one chunk per event) and, with
/// `idle_close`, closes a connection left idle that long, as servers'
/// keep-alive timeouts do; with `late_end`, a stream's end (its last HTTP
/// chunk) follows its events that much later, as servers that write the
/// end on its own do. Returns its base URL and the connections it accepted.
async fn upstream(
    idle_close: Option<Duration>,
    late_end: Option<Duration>,
) -> (String, Arc<AtomicUsize>) {
    raw_upstream(move |mut socket| async move {
                let mut buf = Vec::new();
                loop {
                    // One whole request: head, then `content-length` bytes.
                    let request = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if buf.len() >= end + 4 + length {
                                let request: Vec<u8> = buf.drain(..end + 4 + length).collect();
                                break request;
                            }
                        }
                        let mut chunk = [0u8; 8192];
                        let read = socket.read(&mut chunk);
                        let n = match idle_close {
                            Some(idle) if buf.is_empty() => {
                                match tokio::time::timeout(idle, read).await {
                                    Ok(r) => r,
                                    // Idle too long: closed (a FIN).
                                    Err(_) => return,
                                }
                            }
                            _ => read.await,
                        };
                        match n {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let stream = String::from_utf8_lossy(&request).contains("\"stream\":true");
                    let answer = if stream {
                        let mut a = String::from(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
                        );
                        for e in EVENTS {
                            a.push_str(&format!("{:x}\r\n{e}\r\n", e.len()));
                        }
                        if let Some(late) = late_end {
                            if socket.write_all(a.as_bytes()).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(late).await;
                            a.clear();
                        }
                        a.push_str("0\r\n\r\n");
                        a
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANSWER}",
                            ANSWER.len()
                        )
                    };
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
    })
    .await
}

fn start(url: &str) -> Gateway {
    Gateway::start(
        json!({"chat": {"strategy": "priority", "deployments": [deployment("only", url, "m")], "retry": {}}}),
        &["openai", "priority"],
        json!({}),
    )
}

/// One request, whole or streamed: it must be answered on its first
/// attempt (a request sent on a dead connection and retried would show a
/// second one).
async fn ask(gw: &Gateway, stream: bool) {
    let r = gw.chat("chat", stream).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-attempts"], "1");
    if stream {
        let events = sse_events(r).await;
        assert!(events.iter().any(|e| e.contains("pooled")), "{events:?}");
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
    } else {
        let body = json_body(r).await;
        assert_eq!(body["choices"][0]["message"]["content"], "pooled", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_one_after_another_share_one_upstream_connection() {
    let (url, accepted) = upstream(None, None).await;
    let gw = start(&url);
    // Streams ride connections their task drives (whole answers, hyper's
    // pooled client's, whose connection is handed back by its own task,
    // sometimes after the next request took another).
    for _ in 0..6 {
        ask(&gw, true).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_while_idle_fails_no_request() {
    let (url, accepted) = upstream(Some(Duration::from_millis(100)), None).await;
    let gw = start(&url);
    for i in 0..4 {
        ask(&gw, i % 2 == 1).await;
        // Past the upstream's idle limit: the pooled connection is closed.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        4,
        "a fresh connection each time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_end_comes_after_its_events_leaves_its_connection_reusable() {
    let (url, accepted) = upstream(None, Some(Duration::from_millis(30))).await;
    let gw = start(&url);
    for _ in 0..3 {
        ask(&gw, true).await;
        // The end, read in the background, gives the connection back.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
