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
    // `done-only` and `role-done` end with nothing: not an empty success.
    for broken in [
        "cut-early",
        "done-only",
        "role-done",
        "fail-500",
        "rate-429",
    ] {
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
    let mut routes = route(
        deployment("flaky", &mock.url, "cut-mid"),
        deployment("backup", &mock.url, "good"),
    );
    // Not resumed (see resume.rs): the stream ends with the error event.
    routes["chat"]["retry"] = json!({"retries": 0, "resumes": 0});
    let gw = Gateway::start(routes, &["openai", "priority", "basic"], json!({}));
    let (deployment, events) = stream_text(&gw).await;
    assert_eq!(deployment, "flaky", "committed to the first deployment");
    assert!(events.iter().any(|e| e.contains("partial")), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    // The failure's class, for clients (and /v1/messages) that branch on it:
    // an upstream that closed mid-answer is overloaded.
    assert_eq!(last["error"]["class"], "overloaded", "{events:?}");
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "a truncated stream must not look complete"
    );
    gw.assert_log("stream failed after commit");
    // The pump's lines name the request, its route and the deployment.
    let line = gw
        .log_lines()
        .into_iter()
        .find(|l| l.contains("stream failed after commit"))
        .unwrap();
    assert!(
        line.contains("request_id=")
            && line.contains("model=chat")
            && line.contains("deployment=flaky"),
        "{line}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stalling_after_commit_ends_with_an_error_event_after_idle_timeout() {
    let mock = Mock::start().await;
    let mut stalling = deployment("stalling", &mock.url, "stall-mid");
    stalling["timeouts"] = json!({"idle_ms": 300});
    let mut routes = route(stalling, deployment("backup", &mock.url, "good"));
    routes["chat"]["retry"] = json!({"retries": 0, "resumes": 0});
    let gw = Gateway::start(routes, &["openai", "priority", "basic"], json!({}));
    let started = std::time::Instant::now();
    let (deployment, events) = stream_text(&gw).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(deployment, "stalling");
    assert!(events.iter().any(|e| e.contains("partial")), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idle_ms"),
        "{last}"
    );
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

/// `idle_ms` is the longest silence, not a stream's length: events every
/// 500 ms under an `idle_ms` of 800 carry a 2 s stream to its end (the pump
/// sets its idle alarm once and moves it on as events come).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_idle_ms_whose_events_come_within_it_completes() {
    let mock = Mock::start().await;
    let mut slow = deployment("slow", &mock.url, "slow-stream");
    slow["timeouts"] = json!({"idle_ms": 800});
    let mut routes = route(slow, deployment("backup", &mock.url, "good"));
    routes["chat"]["retry"] = json!({"retries": 0, "resumes": 0});
    let gw = Gateway::start(routes, &["openai", "priority", "basic"], json!({}));
    let started = std::time::Instant::now();
    let (deployment, events) = stream_text(&gw).await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(deployment, "slow");
    assert_eq!(
        events.last().unwrap(),
        "[DONE]",
        "{events:?}\n{}",
        gw.logs()
    );
    assert!(!events.iter().any(|e| e.contains("error")), "{events:?}");
    assert_eq!(mock.hits("good"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_without_a_needed_capability_are_not_tried() {
    let mock = Mock::start().await;
    let mut no_stream = deployment("batch-only", &mock.url, "batch");
    no_stream["capabilities"] = json!(["tools"]);
    let gw = Gateway::start(
        json!({
            "chat": {"strategy": "priority", "deployments": [no_stream.clone(), deployment("backup", &mock.url, "good")]},
            "batch": {"deployments": [deployment("batch-only-2", &mock.url, "batch")]},
        }),
        &["openai", "priority"],
        json!({}),
    );
    let (answered_by, events) = stream_text(&gw).await;
    assert_eq!(answered_by, "backup");
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(
        mock.hits("batch"),
        0,
        "the deployment without streaming was never called"
    );
    drop(gw);

    let mut only = deployment("only", &mock.url, "batch");
    only["capabilities"] = json!(["tools"]);
    let gw = Gateway::start(
        json!({"batch": {"deployments": [only]}}),
        &["openai"],
        json!({}),
    );
    let r = gw.chat("batch", true).await;
    assert_eq!(r.status(), 503);
    let e = crate::harness::json_body(r).await;
    assert_eq!(e["error"]["code"], "no_candidate");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("streaming"),
        "{e}"
    );
    // Not streamed, it is served.
    assert_eq!(gw.chat("batch", false).await.status(), 200);
}
