//! Failover: every retryable upstream failure moves on to the next
//! deployment; a caller's own mistake does not; when all fail, the error
//! lists every attempt.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, deployment, json_body, refused_port};
use crate::mock::Mock;

/// A route "chat" trying `first` then `second` (priority order).
fn route(first: Value, second: Value) -> Value {
    let mut first = first;
    let mut second = second;
    first["priority"] = json!(0);
    second["priority"] = json!(1);
    json!({"chat": {"strategy": "priority", "evaluator": "basic", "deployments": [first, second]}})
}

fn start(routes: Value) -> Gateway {
    Gateway::start(routes, &["openai", "priority", "basic"], json!({}))
}

/// Asks route "chat" and checks who answered; returns the request id.
async fn answered_by(gw: &Gateway, expect: &str, attempts: &str) -> String {
    let r = gw.chat("chat", false).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    assert_eq!(r.headers()["x-switchyard-attempts"], attempts);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = json_body(r).await;
    assert_eq!(body["model"], expect, "{body}");
    id
}

/// Waits for a log line that contains every one of `needles`.
fn assert_line(gw: &Gateway, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if gw
            .log_lines()
            .iter()
            .any(|l| needles.iter().all(|n| l.contains(n)))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no log line contains all of {needles:?}:\n{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_fails_over() {
    let mock = Mock::start().await;
    let gw = start(route(
        deployment("broken", &mock.url, "fail-500"),
        deployment("backup", &mock.url, "good"),
    ));
    let id = answered_by(&gw, "backup", "2").await;
    assert_eq!(mock.hits("fail-500"), 1);
    // Each line of the request names it, its route and the deployment.
    let id = format!("request_id={id}");
    assert_line(
        &gw,
        &[
            "attempt failed",
            &id,
            "model=chat",
            "deployment=broken",
            "class=Overloaded",
        ],
    );
    assert_line(
        &gw,
        &[
            "answered",
            &id,
            "model=chat",
            "deployment=backup",
            "attempts=2",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_fails_over_and_cools_the_deployment_down() {
    let mock = Mock::start().await;
    let gw = start(route(
        deployment("limited", &mock.url, "rate-429"),
        deployment("backup", &mock.url, "good"),
    ));
    answered_by(&gw, "backup", "2").await;
    // Retry-After: 30 keeps "limited" out of the first choices: the next
    // request goes straight to the backup.
    answered_by(&gw, "backup", "1").await;
    assert_eq!(mock.hits("rate-429"), 1);
    assert_eq!(mock.hits("good"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_fails_over() {
    let mock = Mock::start().await;
    let dead = format!("http://127.0.0.1:{}/v1", refused_port());
    let gw = start(route(
        deployment("dead", &dead, "good"),
        deployment("backup", &mock.url, "good"),
    ));
    answered_by(&gw, "backup", "2").await;
    gw.assert_log("class=Connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_fails_over_after_first_byte_timeout() {
    let mock = Mock::start().await;
    let mut silent = deployment("silent", &mock.url, "hang");
    silent["timeouts"] = json!({"first_byte_ms": 400});
    let gw = start(route(silent, deployment("backup", &mock.url, "good")));
    let started = Instant::now();
    answered_by(&gw, "backup", "2").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "waited for the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "did not hang: {took:?}");
    assert_eq!(mock.hits("hang"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_bad_request_is_returned_not_retried() {
    let mock = Mock::start().await;
    let gw = start(route(
        deployment("strict", &mock.url, "bad-request"),
        deployment("backup", &mock.url, "good"),
    ));
    let r = gw.chat("chat", false).await;
    assert_eq!(r.status(), 400);
    let e = json_body(r).await;
    assert_eq!(e["error"]["code"], "upstream_rejected_request");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].content is invalid"),
        "{e}"
    );
    assert_eq!(mock.hits("good"), 0, "the backup was not tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluator_fail_tries_the_next_candidate() {
    let mock = Mock::start().await;
    let gw = start(route(
        deployment("mute", &mock.url, "empty"),
        deployment("backup", &mock.url, "good"),
    ));
    let id = answered_by(&gw, "backup", "2").await;
    gw.assert_log("evaluator rejected the answer");
    let id = format!("request_id={id}");
    assert_line(
        &gw,
        &[
            "evaluator rejected the answer",
            &id,
            "model=chat",
            "deployment=mute",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_failed_lists_every_attempt() {
    let mock = Mock::start().await;
    let dead = format!("http://127.0.0.1:{}/v1", refused_port());
    let gw = start(route(
        deployment("broken", &mock.url, "fail-500"),
        deployment("dead", &dead, "good"),
    ));
    let r = gw.chat("chat", false).await;
    assert_eq!(r.status(), 502);
    let e = json_body(r).await;
    assert_eq!(e["error"]["code"], "all_deployments_failed");
    let attempts = e["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{e}");
    assert_eq!(attempts[0]["deployment"], "broken");
    assert_eq!(attempts[0]["class"], "overloaded");
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[1]["deployment"], "dead");
    assert_eq!(attempts[1]["class"], "connect");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("broken") && message.contains("dead"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_rate_limited_is_a_429_with_retry_after() {
    let mock = Mock::start().await;
    let gw = start(route(
        deployment("a", &mock.url, "rate-429"),
        deployment("b", &mock.url, "rate-429"),
    ));
    let r = gw.chat("chat", false).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    assert_eq!(json_body(r).await["error"]["type"], "rate_limit_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_length_everywhere_is_the_callers_400() {
    let mock = Mock::start().await;
    let gw = start(route(
        deployment("small", &mock.url, "context-length"),
        deployment("also-small", &mock.url, "context-length"),
    ));
    let r = gw.chat("chat", false).await;
    assert_eq!(
        r.status(),
        400,
        "an OpenAI client must not retry this unchanged"
    );
    let e = json_body(r).await;
    assert_eq!(e["error"]["code"], "context_length_exceeded");
    assert_eq!(
        e["error"]["attempts"].as_array().unwrap().len(),
        2,
        "both were tried: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_returns_to_the_primary_after_an_outage_without_hammering_it() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        route(
            deployment("primary", &mock.url, "primary"),
            deployment("backup", &mock.url, "good"),
        ),
        &["openai", "priority", "basic"],
        json!({"health": {"trip_after": 2, "cooldown_ms": 1500, "probe_window_ms": 5000}}),
    );
    answered_by(&gw, "primary", "1").await;

    mock.set_failing("primary", true);
    answered_by(&gw, "backup", "2").await;
    answered_by(&gw, "backup", "2").await; // second fault: the circuit opens
    for _ in 0..5 {
        answered_by(&gw, "backup", "1").await; // primary left alone while open
    }
    assert_eq!(mock.hits("primary"), 3);

    mock.set_failing("primary", false);
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    // One request probes the primary, succeeds, and closes the circuit.
    answered_by(&gw, "primary", "1").await;
    answered_by(&gw, "primary", "1").await;
    assert_eq!(mock.hits("primary"), 5);
}

/// A tripped circuit is skipped, not tried last: a route whose only
/// deployment is down answers at once with a 503 naming it and a
/// Retry-After, and the upstream sees nothing until the cool-down ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_is_skipped_and_a_route_with_nothing_left_gets_a_503() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        json!({"solo": {"deployments": [deployment("down", &mock.url, "fail-500")]}}),
        &["openai"],
        json!({"health": {"trip_after": 2, "cooldown_ms": 5000}}),
    );
    for _ in 0..2 {
        assert_eq!(gw.chat("solo", false).await.status(), 502);
    }
    assert_eq!(mock.hits("fail-500"), 2);
    for _ in 0..5 {
        let started = Instant::now();
        let r = gw.chat("solo", false).await;
        assert_eq!(r.status(), 503);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=5).contains(&retry), "Retry-After {retry}");
        let body = json_body(r).await;
        assert_eq!(body["error"]["code"], "deployments_unavailable", "{body}");
        assert_eq!(
            body["error"]["attempts"][0]["class"], "circuit_open",
            "{body}"
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    assert_eq!(mock.hits("fail-500"), 2, "nothing sent to an open circuit");
}

/// The half-open probe is held until its outcome, however long it takes:
/// a probe slower than `probe_window_ms` does not let a second one through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_is_held_until_its_outcome() {
    let mock = Mock::start().await;
    let mut hanging = deployment("hanging", &mock.url, "hang");
    hanging["timeouts"] = json!({"first_byte_ms": 800});
    let gw = Gateway::start(
        route(hanging, deployment("backup", &mock.url, "good")),
        &["openai", "priority", "basic"],
        json!({"health": {"trip_after": 1, "cooldown_ms": 300, "probe_window_ms": 100}}),
    );
    // Trips it (a first-byte timeout), served by the backup.
    answered_by(&gw, "backup", "2").await;
    assert_eq!(mock.hits("hang"), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The cool-down is over: this request probes (and waits 800 ms).
    let probe = tokio::spawn({
        let url = gw.url.clone();
        async move {
            crate::harness::client()
                .post(format!("{url}/v1/chat/completions"))
                .body(r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Past the probe window, the probe still runs: the others keep away.
    for _ in 0..4 {
        let started = Instant::now();
        answered_by(&gw, "backup", "2").await;
        assert!(started.elapsed() < Duration::from_millis(400));
    }
    assert_eq!(mock.hits("hang"), 2, "one probe at a time");
    assert_eq!(probe.await.unwrap(), 200, "the probe's request failed over");
    // The probe failed: open again (and unhealthy, so ordered after the
    // backup, which answers first).
    answered_by(&gw, "backup", "1").await;
    assert_eq!(mock.hits("hang"), 2);
}

/// A content-filter refusal is the caller's answer (a 400 `content_filter`
/// after one attempt): another model must not turn a policy refusal into an
/// answer, unless the route says `on_content_filter: "fallback"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_filter_refusal_is_returned_unless_the_route_falls_back() {
    let mock = Mock::start().await;
    let list = json!([{"name": "strict", "priority": 0}, {"name": "lenient", "priority": 1}]);
    let gw = Gateway::start(
        json!({
            "chat": {"strategy": "priority", "deployments": list},
            "loose": {"strategy": "priority", "deployments": list, "on_content_filter": "fallback"}
        }),
        &["openai", "priority"],
        json!({"deployments": {
            "strict": {"adapter": "openai", "base_url": mock.url, "model": "content-filter"},
            "lenient": {"adapter": "openai", "base_url": mock.url, "model": "good"}
        }}),
    );
    let r = gw.chat("chat", false).await;
    assert_eq!(r.status(), 400);
    let e = json_body(r).await;
    assert_eq!(e["error"]["code"], "content_filter", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("strict"),
        "{e}"
    );
    assert_eq!(mock.hits("good"), 0, "the refusal was not sent elsewhere");
    let r = gw.chat("loose", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(mock.hits("good"), 1);
}

/// Context length exceeded: only deployments with a larger configured
/// `context_window` are tried next, never one no larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_length_goes_on_to_a_larger_window_only() {
    let mock = Mock::start().await;
    let mut small = deployment("small", &mock.url, "context-length");
    small["context_window"] = json!(8192);
    small["priority"] = json!(0);
    let mut same = deployment("same", &mock.url, "gpt-same");
    same["context_window"] = json!(8192);
    same["priority"] = json!(1);
    let mut large = deployment("large", &mock.url, "gpt-large");
    large["context_window"] = json!(128000);
    large["priority"] = json!(2);
    let gw = start(
        json!({"chat": {"strategy": "priority", "evaluator": "basic",
        "deployments": [small, same, large]}}),
    );
    let r = gw.chat("chat", false).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    assert_eq!(r.headers()["x-switchyard-deployment"], "large");
    assert_eq!(mock.hits("gpt-same"), 0, "a window no larger was not tried");
}

/// A prompt longer than a deployment's context window (by the estimate
/// strategies see) is not sent there; with no deployment large enough,
/// the upstreams decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_longer_than_a_window_skips_that_deployment() {
    let mock = Mock::start().await;
    let mut tiny = deployment("tiny", &mock.url, "gpt-tiny");
    tiny["context_window"] = json!(100);
    tiny["priority"] = json!(0);
    let mut large = deployment("large", &mock.url, "gpt-large");
    large["context_window"] = json!(128000);
    large["priority"] = json!(1);
    let gw = start(json!({"chat": {"strategy": "priority", "deployments": [tiny.clone(), large]}}));
    let long = "word ".repeat(400);
    let ask =
        |text: &str| json!({"model": "chat", "messages": [{"role": "user", "content": text}]});
    let r = gw.post(ask(&long)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-deployment"], "large");
    assert_eq!(mock.hits("gpt-tiny"), 0);
    // A short prompt still goes first to the small one.
    let r = gw.post(ask("hi")).await;
    assert_eq!(r.headers()["x-switchyard-deployment"], "tiny");
    // Nothing large enough: sent anyway.
    let gw = start(json!({"chat": {"deployments": [tiny]}}));
    let r = gw.post(ask(&long)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(mock.hits("gpt-tiny"), 2);
}

/// The retry policy's defaults: a 500 is sent again to the same deployment
/// after a jittered back-off (at most 250 ms the first time) and answered
/// there; a 429 with a short Retry-After (1 s) is waited out and the same
/// deployment asked again; a long one (30 s) goes on at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_deployment_is_retried_after_a_500_or_a_short_retry_after() {
    let mock = Mock::start().await;
    let with_defaults = |first: &str| {
        let mut r = route(
            deployment("primary", &mock.url, first),
            deployment("backup", &mock.url, "good"),
        );
        // The policy's defaults, as in a config that says nothing.
        r["chat"]["retry"] = json!({});
        r
    };
    let gw = start(with_defaults("fail-500-once"));
    let started = Instant::now();
    answered_by(&gw, "primary", "2").await;
    assert!(started.elapsed() < Duration::from_millis(600));
    assert_eq!(mock.hits("fail-500-once"), 2);
    assert_eq!(mock.hits("good"), 0, "no failover");
    gw.assert_log("retrying the same deployment");
    // Stored as a retry, not a failover (the store writes in batches).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, retries) = gw.admin("/admin/events?type=retry").await;
        let (_, failovers) = gw.admin("/admin/events?type=failover").await;
        if retries["data"].as_array().is_some_and(|d| d.len() == 1) {
            assert_eq!(retries["data"][0]["subject"], "primary", "{retries}");
            assert_eq!(
                failovers["data"].as_array().map(Vec::len),
                Some(0),
                "{failovers}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no retry event: {retries}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gw);

    let gw = start(with_defaults("rate-429-once"));
    let started = Instant::now();
    answered_by(&gw, "primary", "2").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_millis(2500),
        "waited {waited:?} for a 1 s Retry-After"
    );
    assert_eq!(mock.hits("rate-429-once"), 2);
    assert_eq!(mock.hits("good"), 0);
    drop(gw);

    let gw = start(with_defaults("rate-429"));
    let started = Instant::now();
    answered_by(&gw, "backup", "2").await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a 30 s Retry-After is not waited"
    );

    // A 500 every time: two retries (three attempts), then the backup.
    let gw = start(with_defaults("fail-500"));
    answered_by(&gw, "backup", "4").await;
    assert_eq!(mock.hits("fail-500"), 3);
}

/// One deadline for the whole request (`x-switchyard-timeout-ms` here,
/// `timeouts.request_ms` by default): a hanging upstream ends in a 504
/// `request_timeout` when it passes, not after first_byte_ms; a stream
/// still going at its deadline ends with an error event, never `[DONE]`;
/// a malformed header is the caller's 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deadline_covers_the_whole_request_streams_included() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        json!({
            "hung": {"deployments": [deployment("hanging", &mock.url, "hang")]},
            "slow": {"deployments": [deployment("slow", &mock.url, "slow-stream")]}
        }),
        &["openai"],
        json!({}),
    );
    let send = |model: &str, stream: bool, timeout: &str| {
        crate::harness::client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-switchyard-timeout-ms", timeout)
            .body(
                json!({"model": model, "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
            )
            .send()
    };
    let started = Instant::now();
    let r = send("hung", false, "500").await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    let e = json_body(r).await;
    assert_eq!(e["error"]["code"], "request_timeout", "{e}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    // Four chunks 500 ms apart: cut at 1.2 s, after two.
    let started = Instant::now();
    let r = send("slow", true, "1200").await.unwrap();
    assert_eq!(r.status(), 200);
    let events = crate::harness::sse_events(r).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1900), "{took:?}");
    assert!(events.iter().any(|e| e.contains("piece0")), "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{events:?}"
    );

    let r = send("slow", true, "soon").await.unwrap();
    assert_eq!(r.status(), 400);
    let e = json_body(r).await;
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-switchyard-timeout-ms")
    );
}

/// Active health checks: a primary that is down is marked so by its checks
/// (requests skip it at once, and it is not hammered: the checks back off),
/// and once it recovers the checks mark it up and traffic returns to it,
/// with no client request probing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_a_deployment_out_and_bring_it_back() {
    let mock = Mock::start().await;
    mock.set_failing("gpt-primary", true);
    let mut primary = deployment("primary", &mock.url, "gpt-primary");
    primary["health_check"] = json!({"interval_ms": 100, "max_interval_ms": 400,
        "down_after": 2, "up_after": 2, "timeout_ms": 1000});
    let gw = start(route(
        primary,
        deployment("backup", &mock.url, "gpt-backup"),
    ));
    assert!(gw.wait_for_log("health check: deployment is down", Duration::from_secs(5)));
    let checks_when_down = mock.hits("gpt-primary");
    // Unhealthy: the backup answers first, and nothing is sent to it.
    for _ in 0..3 {
        answered_by(&gw, "backup", "1").await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let checks = mock.hits("gpt-primary") - checks_when_down;
    assert!(
        checks <= 5,
        "{checks} checks in 1.2 s while down: not backing off"
    );

    mock.set_failing("gpt-primary", false);
    let recovered = Instant::now();
    assert!(gw.wait_for_log(
        "health check: deployment is up again",
        Duration::from_secs(5)
    ));
    assert!(recovered.elapsed() < Duration::from_secs(2));
    answered_by(&gw, "primary", "1").await;
    // Stored as events.
    let (_, down) = gw.admin("/admin/events?type=health_down").await;
    assert_eq!(down["data"][0]["subject"], "primary", "{down}");
}

/// A circuit's life as events: open after the faults in a row, closed when
/// the half-open probe (after the cool-down) succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_that_a_probe_closes_says_so() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        json!({"chat": {"deployments": [deployment("flaky", &mock.url, "flaky-model")],
            "retry": {"retries": 0}}}),
        &["openai"],
        json!({"health": {"trip_after": 2, "cooldown_ms": 200}}),
    );
    mock.set_failing("flaky-model", true);
    for _ in 0..2 {
        assert_eq!(gw.chat("chat", false).await.status(), 502);
    }
    mock.set_failing("flaky-model", false);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(gw.chat("chat", false).await.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, opened) = gw.admin("/admin/events?type=circuit_open").await;
        let (_, closed) = gw.admin("/admin/events?type=circuit_closed").await;
        if closed["data"].as_array().is_some_and(|d| !d.is_empty()) {
            assert_eq!(opened["data"].as_array().unwrap().len(), 1, "{opened}");
            assert_eq!(closed["data"][0]["subject"], "flaky", "{closed}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no circuit_closed event: {opened} {closed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
