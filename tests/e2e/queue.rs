//! Concurrency caps and the wait queue: a deployment at its
//! `max_in_flight` is not sent more; requests wait in the queue and are
//! served as slots free up, `critical` before `low`; past the queue's
//! wait a request gets a 503 (capacity) or a 429 (limits) with
//! `Retry-After`, never a 502; a request whose limit frees up within the
//! wait is served instead of refused.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, client, json_body};
use crate::mock::Mock;

fn body(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

async fn send(url: &str, model: &str, priority: &str) -> (u16, Option<String>, Value, Instant) {
    let r = client()
        .post(format!("{url}/v1/chat/completions"))
        .header("x-switchyard-priority", priority)
        .body(body(model))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, json_body(r).await, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_deployment_serves_its_queue_by_priority() {
    let mock = Mock::start().await;
    mock.set_delay("gpt-slow", Duration::from_millis(300));
    let extra = json!({
        "deployments": {"one": {"adapter": "openai", "base_url": mock.url, "model": "gpt-slow", "max_in_flight": 1}},
        "limits": {"queue": {"max_wait_ms": 5000}}
    });
    let gw = Gateway::start(json!({"r": {"deployments": ["one"]}}), &["openai"], extra);
    let url = gw.url.clone();
    let first = tokio::spawn({
        let url = url.clone();
        async move { send(&url, "r", "normal").await }
    });
    tokio::time::sleep(Duration::from_millis(80)).await;
    let mut lows = Vec::new();
    for _ in 0..2 {
        let url = url.clone();
        lows.push(tokio::spawn(async move { send(&url, "r", "low").await }));
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    let critical = tokio::spawn({
        let url = url.clone();
        async move { send(&url, "r", "critical").await }
    });
    let first = first.await.unwrap();
    let critical = critical.await.unwrap();
    assert_eq!(first.0, 200, "{}", first.2);
    assert_eq!(critical.0, 200, "{}", critical.2);
    for low in lows {
        let low = low.await.unwrap();
        assert_eq!(low.0, 200, "{}", low.2);
        assert!(
            critical.3 < low.3,
            "the critical request, queued last, is served before the low ones"
        );
    }
    assert_eq!(mock.hits("gpt-slow"), 4, "one at a time, none refused");
    // The three that waited are in the queue-wait histogram, ~300 ms and more.
    let metrics = gw.metrics_text().await;
    assert!(
        metrics.contains(r#"switchyard_queue_wait_seconds_count{route="r"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"switchyard_queue_wait_seconds_bucket{route="r",le="0.1"} 0"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_wait_a_full_deployment_gives_503_and_a_spent_limit_429() {
    let mock = Mock::start().await;
    mock.set_delay("gpt-busy", Duration::from_millis(1500));
    let extra = json!({
        "deployments": {
            "busy": {"adapter": "openai", "base_url": mock.url, "model": "gpt-busy", "max_in_flight": 1},
            "minute": {"adapter": "openai", "base_url": mock.url, "model": "gpt-minute", "rpm": 1},
            "second": {"adapter": "openai", "base_url": mock.url, "model": "gpt-second", "rps": 2}
        },
        "limits": {"queue": {"max_wait_ms": 400}}
    });
    let routes = json!({
        "busy": {"deployments": ["busy"]},
        "minute": {"deployments": ["minute"]},
        "second": {"deployments": ["second"]}
    });
    let gw = Gateway::start(routes, &["openai"], extra);
    let url = gw.url.clone();
    let held = tokio::spawn(async move { send(&url, "busy", "normal").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    let (status, retry, body, _) = send(&gw.url, "busy", "critical").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "at_capacity", "{body}");
    assert!(retry.is_some());
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1200),
        "waited the queue's 400 ms: {waited:?}"
    );
    assert_eq!(held.await.unwrap().0, 200);
    assert_eq!(
        mock.hits("gpt-busy"),
        1,
        "the upstream saw nothing it would refuse"
    );

    // A minute's limit will not free up within the wait: a 429 at once.
    assert_eq!(send(&gw.url, "minute", "normal").await.0, 200);
    let asked = Instant::now();
    let (status, retry, body, _) = send(&gw.url, "minute", "normal").await;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = retry.unwrap().parse().unwrap();
    assert!((50..=61).contains(&retry), "{retry}");
    assert!(
        asked.elapsed() < Duration::from_millis(300),
        "no pointless wait"
    );

    // A second's limit that frees up within the wait: served, not refused
    // (two at once spend it; the third comes 800 ms later and waits the
    // ~200 ms left of the window).
    let started = Instant::now();
    for _ in 0..2 {
        assert_eq!(send(&gw.url, "second", "normal").await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(800).saturating_sub(started.elapsed())).await;
    let asked = Instant::now();
    let (status, _, body, _) = send(&gw.url, "second", "normal").await;
    assert_eq!(status, 200, "{body}");
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && started.elapsed() >= Duration::from_secs(1),
        "it waited for the window: {waited:?}"
    );
    assert_eq!(mock.hits("gpt-second"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_cap_queues_and_a_full_queue_refuses_at_once() {
    let mock = Mock::start().await;
    mock.set_delay("gpt-r", Duration::from_millis(500));
    let extra =
        json!({"limits": {"max_in_flight": 50, "queue": {"max_len": 1, "max_wait_ms": 3000}}});
    let routes = json!({"r": {"max_in_flight": 1, "deployments": [
        {"name": "d", "adapter": "openai", "base_url": mock.url, "model": "gpt-r"}]}});
    let gw = Gateway::start(routes, &["openai"], extra);
    let mut tasks = Vec::new();
    for i in 0..3 {
        let url = gw.url.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(60 * i)).await;
            send(&url, "r", "normal").await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, _, body, _) = t.await.unwrap();
        if status != 200 {
            assert_eq!(body["error"]["code"], "at_capacity", "{body}");
        }
        statuses.push(status);
    }
    // One in flight, one waiting; the third finds the queue full.
    assert_eq!(statuses, [200, 200, 503]);
}
