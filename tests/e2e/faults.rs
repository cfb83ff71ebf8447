//! Upstream faults under the retry policy's defaults, timed: what is sent
//! again, when, how often, and what the client sees.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::harness::{Gateway, client, deployment, raw_upstream, sse_events};
use crate::mock::Mock;

/// Two deployments in priority order, with the retry policy's defaults.
fn routes(first: Value, second: Value) -> Value {
    json!({"chat": {"strategy": "priority", "deployments": [first, second], "retry": {}}})
}

fn start(routes: Value) -> Gateway {
    Gateway::start(routes, &["openai", "priority"], json!({}))
}

async fn ask(gw: &Gateway) -> (u16, String, String) {
    let r = gw.chat("chat", false).await;
    let status = r.status().as_u16();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (deployment, attempts) = (
        header("x-switchyard-deployment"),
        header("x-switchyard-attempts"),
    );
    (status, deployment, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_outage_is_retried_with_jittered_backoff_then_failed_over() {
    let mock = Mock::start().await;
    let gw = start(routes(
        deployment("primary", &mock.url, "fail-503"),
        deployment("backup", &mock.url, "good"),
    ));
    let started = Instant::now();
    let (status, who, attempts) = ask(&gw).await;
    let took = started.elapsed();
    assert_eq!(
        (status, who.as_str(), attempts.as_str()),
        (200, "backup", "4")
    );
    // Three tries of the primary (two retries), each after a random wait
    // up to 250 ms, then 500 ms; its third fault opens its circuit.
    let at = mock.arrivals("fail-503");
    assert_eq!(at.len(), 3, "{at:?}");
    assert!(
        at[1] - at[0] <= Duration::from_millis(330),
        "{:?}",
        at[1] - at[0]
    );
    assert!(
        at[2] - at[1] <= Duration::from_millis(580),
        "{:?}",
        at[2] - at[1]
    );
    assert!(took < Duration::from_millis(1200), "{took:?}");
    // Its circuit open, the next requests skip it: never more than 4
    // attempts on it within 3 s.
    for _ in 0..3 {
        let (status, who, _) = ask(&gw).await;
        assert_eq!((status, who.as_str()), (200, "backup"));
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(mock.hits("fail-503") <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_moves_on_at_once_and_cools_the_deployment_down() {
    let mock = Mock::start().await;
    let gw = start(routes(
        deployment("primary", &mock.url, "rate-429-bare"),
        deployment("backup", &mock.url, "good"),
    ));
    let started = Instant::now();
    let (status, who, attempts) = ask(&gw).await;
    assert_eq!(
        (status, who.as_str(), attempts.as_str()),
        (200, "backup", "2")
    );
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "not waited out"
    );
    // Cooling down (health.rate_limit_cooldown_ms, 1 s): not sent to.
    let (status, who, _) = ask(&gw).await;
    assert_eq!((status, who.as_str()), (200, "backup"));
    assert_eq!(mock.hits("rate-429-bare"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, who, _) = ask(&gw).await;
    assert_eq!(who, "backup");
    assert_eq!(
        mock.hits("rate-429-bare"),
        2,
        "asked again after the cool-down"
    );
}

/// An upstream that keeps answering 429 with `Retry-After: 0` is not sent a
/// request per millisecond while the caller waits in the queue for another
/// deployment (at its own rpm limit) to free up: the cool-down an upstream
/// asks for has a floor (250 ms), so the queue's 2 s wait sends it a
/// handful, and the caller gets its 429 when the wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_saying_retry_at_once_is_not_resent_in_a_hot_loop() {
    let mock = Mock::start().await;
    let mut limited = deployment("limited", &mock.url, "good");
    limited["rpm"] = json!(1);
    let gw = start(routes(
        deployment("eager", &mock.url, "rate-429-now"),
        limited,
    ));
    // The limited deployment's one request a minute is spent.
    let (status, who, _) = ask(&gw).await;
    assert_eq!((status, who.as_str()), (200, "limited"));
    let before = mock.hits("rate-429-now");
    let started = Instant::now();
    let (status, _, _) = ask(&gw).await;
    let took = started.elapsed();
    let hits = mock.hits("rate-429-now") - before;
    assert_eq!(status, 429, "{hits} requests in {took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!((2..=20).contains(&hits), "{hits} requests in {took:?}");
}

/// An upstream that accepts the connection, reads the request and resets
/// it (RST) before any header.
async fn resetting_upstream() -> (String, Arc<AtomicUsize>) {
    raw_upstream(|mut socket| async move {
        let mut buf = [0u8; 8192];
        let _ = socket.read(&mut buf).await;
        // Linger 0: closing sends a reset, not a FIN.
        let _ = socket.set_zero_linger();
        drop(socket);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_before_headers_is_retried_then_failed_over() {
    let mock = Mock::start().await;
    let (reset_url, accepted) = resetting_upstream().await;
    let gw = start(routes(
        deployment("primary", &reset_url, "gpt"),
        deployment("backup", &mock.url, "good"),
    ));
    let started = Instant::now();
    let (status, who, _) = ask(&gw).await;
    assert_eq!((status, who.as_str()), (200, "backup"));
    assert!(started.elapsed() < Duration::from_millis(1200));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "one try and two retries"
    );
    assert!(gw.wait_for_log("retrying the same deployment", Duration::from_secs(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_first_token_in_time_goes_on_at_once_without_a_retry() {
    let mock = Mock::start().await;
    // Headers and the role at once, the first token 20 s later.
    let mut late = deployment("primary", &mock.url, "late-first-token");
    late["timeouts"] = json!({"first_byte_ms": 800});
    let gw = start(routes(late, deployment("backup", &mock.url, "good")));
    let started = Instant::now();
    let r = gw.chat("chat", true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-deployment"], "backup");
    let events = sse_events(r).await;
    assert!(events.iter().any(|e| e.contains("\"good\"")), "{events:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_millis(1800),
        "{took:?}"
    );
    assert_eq!(mock.hits("late-first-token"), 1, "a timeout is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_only_stream_ends_at_the_request_deadline() {
    let mock = Mock::start().await;
    let gw = start(routes(
        deployment("primary", &mock.url, "keepalive-mid"),
        deployment("backup", &mock.url, "good"),
    ));
    let started = Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-switchyard-timeout-ms", "1000")
        .body(
            json!({"model": "chat", "stream": true,
                "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(r).await;
    let took = started.elapsed();
    // Comments every 100 ms keep idle_ms (2 s) from firing: the request's
    // deadline ends it, and is not resumed (no time left).
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1800),
        "{took:?}"
    );
    assert!(events.iter().any(|e| e.contains("thinking")), "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{last}"
    );
    assert_eq!(mock.hits("good"), 0);
}

/// The defaults, over a real minute: a primary down for 60 s costs no
/// request (every one answered, by the backup), is not hammered while down
/// (its circuit, then its health checks, keep requests off it), and has its
/// traffic back within 30 s of its recovery, with requests every 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_down_for_a_minute_loses_no_request_and_gets_traffic_back_within_30_s() {
    let mock = Mock::start().await;
    let mut primary = deployment("primary", &mock.url, "gpt-primary");
    primary["health_check"] = json!({});
    let gw = start(routes(
        primary,
        deployment("backup", &mock.url, "gpt-backup"),
    ));
    mock.set_failing("gpt-primary", true);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(60) {
        let (status, who, _) = ask(&gw).await;
        assert_eq!((status, who.as_str()), (200, "backup"), "{}", gw.logs());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let while_down = mock.hits("gpt-primary");
    assert!(
        while_down <= 16,
        "{while_down} requests to a primary that was down for 60 s"
    );
    mock.set_failing("gpt-primary", false);
    let recovered = Instant::now();
    loop {
        let (status, who, _) = ask(&gw).await;
        assert_eq!(status, 200);
        if who == "primary" {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(30),
            "still not back on the primary 30 s after it recovered"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let back = recovered.elapsed();
    assert!(back < Duration::from_secs(30), "{back:?}");
}

/// A success that began before a 429 must not end the cool-down the 429
/// started: under load, a 30 s Retry-After would otherwise last one
/// request's latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_success_does_not_erase_a_fresh_cool_down() {
    let mock = Mock::start().await;
    let gw = Arc::new(start(routes(
        deployment("primary", &mock.url, "gpt-x"),
        deployment("backup", &mock.url, "good"),
    )));
    mock.set_delay("gpt-x", Duration::from_millis(1000));
    let slow = {
        let gw = gw.clone();
        tokio::spawn(async move { ask(&gw).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    mock.set_rate_limited("gpt-x", true);
    mock.set_delay("gpt-x", Duration::ZERO);
    let (status, who, _) = ask(&gw).await;
    assert_eq!((status, who.as_str()), (200, "backup"), "the 429 moved on");
    let (status, who, _) = slow.await.unwrap();
    assert_eq!(
        (status, who.as_str()),
        (200, "primary"),
        "the slow one succeeded"
    );
    // The upstream would answer again, but its Retry-After (30 s) holds.
    mock.set_rate_limited("gpt-x", false);
    for _ in 0..3 {
        let (_, who, _) = ask(&gw).await;
        assert_eq!(who, "backup");
    }
    assert_eq!(
        mock.hits("gpt-x"),
        2,
        "nothing sent to it while it cools down"
    );
}

/// `retry.others_first`: during a short Retry-After the next candidates are
/// tried, and the deployment is asked again once it has passed only if none
/// of them served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_first_tries_the_next_candidates_during_a_short_retry_after() {
    let with = |mock: &Mock, second: &str| {
        json!({"chat": {"strategy": "priority", "deployments": [
            deployment("primary", &mock.url, "rate-429-once"),
            deployment("backup", &mock.url, second)],
            "retry": {"others_first": true, "retries": 0}}})
    };
    let mock = Mock::start().await;
    let gw = start(with(&mock, "good"));
    let started = Instant::now();
    let (status, who, _) = ask(&gw).await;
    assert_eq!((status, who.as_str()), (200, "backup"));
    assert!(started.elapsed() < Duration::from_millis(300), "not waited");
    assert_eq!(mock.hits("rate-429-once"), 1);
    drop(gw);

    // The other fails too: back to the first once its Retry-After (1 s) passed.
    let mock = Mock::start().await;
    let gw = start(with(&mock, "fail-500"));
    let started = Instant::now();
    let (status, who, attempts) = ask(&gw).await;
    let took = started.elapsed();
    assert_eq!(
        (status, who.as_str(), attempts.as_str()),
        (200, "primary", "3")
    );
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    assert_eq!(mock.hits("rate-429-once"), 2);
    assert_eq!(mock.hits("fail-500"), 1);
}
