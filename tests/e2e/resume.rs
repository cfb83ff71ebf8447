//! Mid-stream resume: a committed stream whose upstream fails goes on on the
//! next deployment, and the client receives one coherent answer — never a
//! word twice, never one missing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, deployment};
use crate::mock::{Mock, STORY};

fn routes(deployments: Vec<Value>, resumes: u32) -> Value {
    json!({"chat": {"strategy": "priority", "deployments": deployments,
        "retry": {"retries": 0, "max_retry_after_ms": 0, "resumes": resumes}}})
}

fn with_prefill(mut d: Value) -> Value {
    d["prefill"] = json!(true);
    d
}

fn start(routes: Value) -> Gateway {
    Gateway::start(routes, &["openai", "priority"], json!({}))
}

/// What a streamed request gave the client.
struct Streamed {
    /// `x-switchyard-deployment`: the deployment the stream committed to.
    committed: String,
    /// The chunks' `content`, concatenated.
    text: String,
    chunks: Vec<Value>,
    /// Ended with `data: [DONE]`.
    done: bool,
    /// The error event it ended with, if any.
    error: Option<Value>,
}

async fn stream(gw: &Gateway) -> Streamed {
    stream_with_id(gw, "-").await
}

async fn stream_with_id(gw: &Gateway, id: &str) -> Streamed {
    let mut request = crate::harness::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", "application/json")
        .body(
            json!({"model": "chat", "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Tell me a story."}]})
            .to_string(),
        );
    if id != "-" {
        request = request.header("x-request-id", id);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let committed = r.headers()["x-switchyard-deployment"]
        .to_str()
        .unwrap()
        .to_string();
    let body = r.text().await.unwrap();
    let mut s = Streamed {
        committed,
        text: String::new(),
        chunks: Vec::new(),
        done: false,
        error: None,
    };
    for event in body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        assert!(!s.done, "nothing after [DONE]: {body}");
        if event == "[DONE]" {
            s.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(event).unwrap();
        if v.get("error").is_some() {
            s.error = Some(v);
            continue;
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            s.text.push_str(t);
        }
        s.chunks.push(v);
    }
    s
}

/// The last chunk with a choice: who finished the answer.
fn finisher(s: &Streamed) -> String {
    s.chunks
        .iter()
        .rev()
        .find(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|c| c["model"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// The first `n` words of the story, as the mock streams them.
fn words(n: usize) -> String {
    STORY.split_inclusive(' ').take(n).collect()
}

async fn events(gw: &Gateway, kind: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, e) = gw.admin(&format!("/admin/events?type={kind}")).await;
        let data = e["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= count || Instant::now() > deadline {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_goes_on_where_it_stopped_on_a_deployment_that_continues_a_prefill() {
    let mock = Mock::start().await;
    let gw = start(routes(
        vec![
            deployment("primary", &mock.url, "story-cut-5"),
            with_prefill(deployment("backup", &mock.url, "story")),
        ],
        2,
    ));
    let s = stream_with_id(&gw, "cut-once").await;
    assert_eq!(s.text, STORY, "one coherent answer: {:?}", s.chunks);
    assert!(s.done && s.error.is_none());
    assert_eq!(s.committed, "primary");
    assert_eq!(finisher(&s), "backup", "the final chunk names who finished");
    // One stream id throughout, and the role announced once.
    let ids: Vec<_> = s.chunks.iter().map(|c| c["id"].clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let roles = s
        .chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("role").is_some())
        .count();
    assert_eq!(roles, 1);
    // The backup was sent the delivered text as a final assistant message.
    let sent = mock
        .bodies()
        .into_iter()
        .find(|b| b["model"] == "story")
        .unwrap();
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last, json!({"role": "assistant", "content": words(5)}));
    assert_eq!(mock.hits("story-cut-5"), 1);
    // Usage adds up both legs: the backup's 10 prompt tokens and its words,
    // plus the primary's (estimated: it reported none).
    let usage = s.chunks.iter().find(|c| c["usage"].is_object()).unwrap()["usage"].clone();
    let rest = STORY.split_inclusive(' ').count() as u64 - 5;
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 10, "{usage}");
    assert!(
        usage["completion_tokens"].as_u64().unwrap() > rest,
        "{usage}"
    );
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    gw.assert_log("stream resumed on another deployment");
    assert!(gw.wait_for_log("from=primary to=backup", Duration::from_secs(5)));
    // The stored request says what the client was told.
    let stored = loop {
        let (status, body) = gw.admin("/admin/requests/cut-once").await;
        if status == 200 {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stored["prompt_tokens"], usage["prompt_tokens"], "{stored}");
    assert_eq!(
        stored["completion_tokens"], usage["completion_tokens"],
        "{stored}"
    );
    assert_eq!(stored["outcome"], "success");
    let resumed = events(&gw, "resume", 1).await;
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0]["subject"], "primary");
    let detail = &resumed[0]["detail"];
    assert_eq!(detail["to"], "backup", "{detail}");
    assert_eq!(detail["class"], "overloaded", "{detail}");
    assert!(events(&gw, "failover", 0).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_refuses_the_prefill_regenerates_and_only_the_rest_is_forwarded() {
    let mock = Mock::start().await;
    let gw = start(routes(
        vec![
            deployment("primary", &mock.url, "story-cut-6"),
            with_prefill(deployment("backup", &mock.url, "story-noprefill")),
        ],
        2,
    ));
    let s = stream(&gw).await;
    assert_eq!(s.text, STORY, "{:?}", s.chunks);
    assert!(s.done && s.error.is_none());
    assert_eq!(finisher(&s), "backup");
    // Refused with the prefill (a 400), then asked as the client asked.
    let sent: Vec<_> = mock
        .bodies()
        .into_iter()
        .filter(|b| b["model"] == "story-noprefill")
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["messages"].as_array().unwrap().len(), 2);
    assert_eq!(sent[1]["messages"].as_array().unwrap().len(), 1);
    gw.assert_log("refused the prefill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_and_error_events_resume_too_and_regenerated_text_is_spliced() {
    let mock = Mock::start().await;
    // A stall past idle_ms, on to a deployment without prefill (the openai
    // adapter does not declare it): the answer is regenerated, and only
    // what follows the delivered text reaches the client.
    let mut stalling = deployment("primary", &mock.url, "story-stall-4");
    stalling["timeouts"] = json!({"idle_ms": 300});
    let gw = start(routes(
        vec![stalling, deployment("backup", &mock.url, "story")],
        2,
    ));
    let started = Instant::now();
    let s = stream(&gw).await;
    assert_eq!(s.text, STORY, "{:?}", s.chunks);
    assert!(s.done);
    assert!(started.elapsed() < Duration::from_secs(3));
    let sent = mock.bodies();
    let regenerated = sent.iter().find(|b| b["model"] == "story").unwrap();
    assert_eq!(
        regenerated["messages"].as_array().unwrap().len(),
        1,
        "no prefill"
    );
    drop(gw);

    // An error event from the upstream mid-stream.
    let gw = start(routes(
        vec![
            deployment("primary", &mock.url, "story-error-3"),
            with_prefill(deployment("backup", &mock.url, "story")),
        ],
        2,
    ));
    let s = stream(&gw).await;
    assert_eq!(s.text, STORY, "{:?}", s.chunks);
    assert!(s.done && s.error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regenerated_answer_that_diverges_ends_the_stream_with_the_error_event() {
    let mock = Mock::start().await;
    let gw = start(routes(
        vec![
            deployment("primary", &mock.url, "story-cut-6"),
            deployment("backup", &mock.url, "story-diverge"),
        ],
        2,
    ));
    let s = stream(&gw).await;
    // Exactly what the primary delivered: nothing contradictory after it.
    assert_eq!(s.text, words(6));
    assert!(!s.done);
    let error = s.error.expect("an error event");
    assert_eq!(error["error"]["code"], "stream_interrupted");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("diverged"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_are_bounded_and_each_leg_goes_on_from_the_last() {
    let mock = Mock::start().await;
    let three = || {
        vec![
            deployment("first", &mock.url, "story-cut-3"),
            with_prefill(deployment("second", &mock.url, "story-cut-4")),
            with_prefill(deployment("third", &mock.url, "story")),
        ]
    };
    let gw = start(routes(three(), 2));
    let s = stream(&gw).await;
    assert_eq!(s.text, STORY, "{:?}", s.chunks);
    assert!(s.done);
    assert_eq!(finisher(&s), "third");
    // The third leg was sent all seven words delivered by then.
    let third = mock
        .bodies()
        .into_iter()
        .find(|b| b["model"] == "story")
        .unwrap();
    assert_eq!(
        third["messages"].as_array().unwrap().last().unwrap()["content"],
        words(7)
    );
    assert_eq!(events(&gw, "resume", 2).await.len(), 2);
    drop(gw);

    // One resume allowed: the second cut ends the stream.
    let gw = start(routes(three(), 1));
    let s = stream(&gw).await;
    assert_eq!(s.text, words(7));
    assert!(!s.done && s.error.is_some());
    drop(gw);

    // None: the first cut does.
    let gw = start(routes(three(), 0));
    let s = stream(&gw).await;
    assert_eq!(s.text, words(3));
    assert!(!s.done && s.error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_after_its_finish_reason_without_done_is_a_success() {
    let mock = Mock::start().await;
    let gw = start(routes(
        vec![
            deployment("primary", &mock.url, "story-nodone"),
            deployment("backup", &mock.url, "story"),
        ],
        2,
    ));
    let s = stream(&gw).await;
    assert_eq!(s.text, STORY);
    assert!(s.done && s.error.is_none());
    assert_eq!(finisher(&s), "primary");
    assert_eq!(mock.hits("story"), 0, "nothing to resume");
}

/// Attempts of a stored request (the store writes in batches).
async fn attempts(gw: &Gateway, id: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = gw.admin(&format!("/admin/requests/{id}")).await;
        if status == 200 {
            return body["attempts_detail"]
                .as_array()
                .cloned()
                .unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "request {id} not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_skipped_and_counted_and_a_burst_fails_the_leg() {
    let mock = Mock::start().await;
    let gw = start(routes(
        vec![
            deployment("primary", &mock.url, "story-malformed"),
            with_prefill(deployment("backup", &mock.url, "story")),
        ],
        2,
    ));
    // One garbled event: skipped, the answer goes on.
    let s = stream_with_id(&gw, "one-bad-event").await;
    assert_eq!(s.text, STORY);
    assert!(s.done && s.error.is_none());
    assert_eq!(mock.hits("story"), 0);
    assert!(gw.wait_for_log("skipped malformed stream events", Duration::from_secs(5)));
    let a = attempts(&gw, "one-bad-event").await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["malformed"], 1, "{a:?}");
    assert!(a[0]["class"].is_null());
    drop(gw);

    // A burst of them (an HTML error page streamed as events): the leg
    // fails and the stream is resumed elsewhere.
    let gw = start(routes(
        vec![
            deployment("primary", &mock.url, "story-garbled"),
            with_prefill(deployment("backup", &mock.url, "story")),
        ],
        2,
    ));
    let s = stream_with_id(&gw, "a-burst").await;
    assert_eq!(s.text, STORY, "{:?}", s.chunks);
    assert!(s.done);
    let a = attempts(&gw, "a-burst").await;
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[0]["deployment"], "primary");
    assert!(a[0]["malformed"].as_u64().unwrap() >= 5, "{a:?}");
    assert_eq!(a[0]["class"], "overloaded");
    assert_eq!(a[1]["deployment"], "backup");
    assert!(a[1]["class"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_refuses_the_resumed_request_is_passed_over() {
    let mock = Mock::start().await;
    // The second answers any request with a 400: once the stream was
    // accepted, that speaks of the deployment, not of the caller.
    let gw = start(routes(
        vec![
            deployment("primary", &mock.url, "story-cut-5"),
            deployment("picky", &mock.url, "bad-request"),
            with_prefill(deployment("backup", &mock.url, "story")),
        ],
        2,
    ));
    let s = stream(&gw).await;
    assert_eq!(s.text, STORY, "{:?}", s.chunks);
    assert!(s.done && s.error.is_none());
    assert_eq!(finisher(&s), "backup");
    assert_eq!(mock.hits("bad-request"), 1);
}
