//! Streams: failover stays possible until the first chunk reaches the
//! client; after that a failure is an error event, never a clean end.

use serde_json::{Value, json};

use crate::harness::{Gateway, deployment, sse_events};
use crate::mock::Mock;

fn route(first: Value, second: Value) -> Value {
    json!({"chat": {"strategy": "priority", "evaluator": "basic", "deployments": [first, second]}})
}

async fn stream_text(gw: &Gateway) -> (String, Vec<String>) {
    let r = gw.chat("chat", true).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let deployment = r.headers()["x-switchyard-deployment"]
        .to_str()
        .unwrap()
        .to_string();
    (deployment, sse_events(r).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_failing_before_the_first_chunk_fails_over_invisibly() {
    let mock = Mock::start().await;
    for broken in ["cut-early", "fail-500", "rate-429"] {
        let gw = Gateway::start(
            route(
                deployment("broken", &mock.url, broken),
                deployment("backup", &mock.url, "good"),
            ),
            &["openai", "priority", "basic"],
            json!({}),
        );
        let (deployment, events) = stream_text(&gw).await;
        assert_eq!(deployment, "backup", "{broken}");
        assert_eq!(events.last().unwrap(), "[DONE]", "{broken}");
        assert!(
            events.iter().all(|e| !e.contains("\"error\"")),
            "{broken}: {events:?}"
        );
        assert!(
            events
                .iter()
                .all(|e| e == "[DONE]" || e.contains("\"model\":\"backup\""))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_silent_before_the_first_chunk_fails_over() {
    let mock = Mock::start().await;
    let mut stalled = deployment("stalled", &mock.url, "stall-first");
    stalled["timeouts"] = json!({"first_byte_ms": 400});
    let gw = Gateway::start(
        route(stalled, deployment("backup", &mock.url, "good")),
        &["openai", "priority", "basic"],
        json!({}),
    );
    let (deployment, events) = stream_text(&gw).await;
    assert_eq!(deployment, "backup");
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_cut_after_commit_ends_with_an_error_event_not_done() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        route(
            deployment("flaky", &mock.url, "cut-mid"),
            deployment("backup", &mock.url, "good"),
        ),
        &["openai", "priority", "basic"],
        json!({}),
    );
    let (deployment, events) = stream_text(&gw).await;
    assert_eq!(deployment, "flaky", "committed to the first deployment");
    assert!(events.iter().any(|e| e.contains("partial")), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "a truncated stream must not look complete"
    );
    gw.assert_log("stream failed after commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answer_is_evaluated_after_delivery() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        route(
            deployment("mute", &mock.url, "empty"),
            deployment("backup", &mock.url, "good"),
        ),
        &["openai", "priority", "basic"],
        json!({}),
    );
    let (deployment, events) = stream_text(&gw).await;
    // Already committed: the client gets the (empty) stream, complete.
    assert_eq!(deployment, "mute");
    assert_eq!(events.last().unwrap(), "[DONE]");
    // The evaluator still judged it, and said why.
    gw.assert_log("evaluator rejected a streamed answer (already delivered)");
    gw.assert_log("empty content");
    assert_eq!(mock.hits("good"), 0);
}
