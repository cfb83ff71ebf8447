//! Rate limits: a deployment at its rps, rpm or tpm limit is not sent the
//! request (counted at the mock), another deployment serves it, and with
//! none left the caller gets a 429 with `Retry-After`; tokens reserved from
//! the estimate are corrected by the real usage; limit events are stored
//! once per window.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, client};
use crate::mock::Mock;

fn limited(mock: &Mock, name: &str, model: &str, limits: Value) -> Value {
    let mut d = json!({"name": name, "adapter": "openai", "base_url": mock.url, "model": model});
    d.as_object_mut()
        .unwrap()
        .extend(limits.as_object().unwrap().clone());
    d
}

async fn events(gw: &Gateway, kind: &str, at_least: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = gw.admin(&format!("/admin/events?type={kind}")).await;
        let rows = body["data"].as_array().cloned().unwrap_or_default();
        if rows.len() >= at_least || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acceptance: 16 clients loop for 3 s against a 20 rps deployment; the
/// mock sees 20 a second (within 5 %), everything else is a 429 with
/// `Retry-After`, and the upstream never sees a request over the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_load_is_held_at_the_rps_limit() {
    let mock = Mock::start().await;
    let routes = json!({"r": {"deployments": [limited(&mock, "d", "gpt-r", json!({"rps": 20}))]}});
    // No waiting in the queue: every request over the limit is a 429 at once.
    let gw = Gateway::start(
        routes,
        &["openai"],
        json!({"limits": {"queue": {"max_wait_ms": 0}}}),
    );
    let started = Instant::now();
    let run = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let url = gw.url.clone();
        tasks.push(tokio::spawn(async move {
            let client = client();
            let (mut ok, mut limited, mut retry_after) = (0u32, 0u32, None);
            while started.elapsed() < run {
                let r = client
                    .post(format!("{url}/v1/chat/completions"))
                    .body(r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#)
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => ok += 1,
                    429 => {
                        limited += 1;
                        retry_after = r.headers().get("retry-after").cloned();
                        let body: Value =
                            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                        assert_eq!(
                            body["error"]["code"], "all_deployments_rate_limited",
                            "{body}"
                        );
                        assert!(
                            body["error"]["message"]
                                .as_str()
                                .unwrap()
                                .contains("rps limit (20)"),
                            "{body}"
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    other => panic!("status {other}"),
                }
            }
            (ok, limited, retry_after)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, l, retry_after) = t.await.unwrap();
        ok += o;
        refused += l;
        if l > 0 {
            let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
            assert!((1..=1).contains(&secs), "Retry-After {secs}");
        }
    }
    let hits = mock.hits("gpt-r");
    assert_eq!(hits as u32, ok, "every answer was one upstream request");
    // Three windows of 20 (the third may take a fourth's first bucket).
    assert!(
        (57..=63).contains(&hits),
        "{hits} upstream requests in 3 s at 20 rps"
    );
    assert!(refused > 100, "{refused} refused");
    let reached = events(&gw, "rate_limit_reached", 3).await;
    assert!(
        (3..=4).contains(&reached.len()),
        "once per 1 s window: {reached:?}"
    );
    assert_eq!(reached[0]["subject"], "d");
    assert_eq!(reached[0]["detail"]["limit"], "rps");
}

/// A deployment at its rpm limit is skipped: the next one serves; the
/// limiter's windows and headroom show in `/admin/deployments`.
#[tokio::test]
async fn a_deployment_at_its_limit_is_skipped_for_the_next() {
    let mock = Mock::start().await;
    // Configured order: the limiter, not a strategy, moves the traffic.
    let routes = json!({"r": {"deployments": [
        limited(&mock, "small", "gpt-small", json!({"rpm": 2})),
        limited(&mock, "spare", "gpt-spare", json!({}))]}});
    let gw = Gateway::start(routes, &["openai"], json!({}));
    for _ in 0..5 {
        let r = gw.chat("r", false).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!((mock.hits("gpt-small"), mock.hits("gpt-spare")), (2, 3));
    let (_, deployments) = gw.admin("/admin/deployments").await;
    let small = deployments["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "small")
        .unwrap()
        .clone();
    assert_eq!(
        small["limits"]["rpm"],
        json!({"max": 2, "used": 2}),
        "{small}"
    );
    assert_eq!(small["health"]["headroom"], 0.0, "{small}");
    let warned = events(&gw, "rate_limit_warning", 1).await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    let reached = events(&gw, "rate_limit_reached", 1).await;
    assert_eq!(
        reached.len(),
        1,
        "three refusals, one event a window: {reached:?}"
    );
    gw.assert_log("rate_limit_reached");
}

/// Tokens are reserved from the estimate (prompt + max_tokens) and corrected
/// by the real usage: a deployment whose answers use far more than their
/// estimate (1,500 tokens each) is refused once the real usage fills its tpm.
#[tokio::test]
async fn tokens_are_reconciled_with_the_real_usage() {
    let mock = Mock::start().await;
    let routes =
        json!({"r": {"deployments": [limited(&mock, "d", "cached", json!({"tpm": 2000}))]}});
    let gw = Gateway::start(routes, &["openai"], json!({}));
    let ask = || {
        gw.post(json!({"model": "r", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hello"}]}))
    };
    // Estimated ~11 tokens each; really 1,500.
    assert_eq!(ask().await.status(), 200);
    assert_eq!(ask().await.status(), 200);
    let r = ask().await;
    assert_eq!(r.status(), 429, "3,000 of 2,000 used");
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(mock.hits("cached"), 2);
    // A request whose own estimate exceeds what is left is refused too.
    let mock2 = Mock::start().await;
    let routes = json!({"r": {"deployments": [limited(&mock2, "d", "gpt", json!({"tpm": 1000}))]}});
    let gw = Gateway::start(routes, &["openai"], json!({}));
    let big = gw
        .post(json!({"model": "r", "max_tokens": 900,
            "messages": [{"role": "user", "content": "hello"}]}))
        .await;
    assert_eq!(big.status(), 200, "an empty window takes it");
    // Its 900 reserved tokens came back (it used 6): another fits.
    let again = gw
        .post(json!({"model": "r", "max_tokens": 900,
            "messages": [{"role": "user", "content": "hello"}]}))
        .await;
    assert_eq!(again.status(), 200, "reconciled: 12 of 1,000 used");
    let (_, deployments) = gw.admin("/admin/deployments").await;
    assert_eq!(
        deployments["data"][0]["limits"]["tpm"],
        json!({"max": 1000, "used": 12})
    );
}

/// Bursts: 30 requests at once every 300 ms for 3 s against 20 rps. The
/// mock sees no more than the limit in any second, and (within 5 %) the
/// whole of it over the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_are_held_at_the_rps_limit() {
    let mock = Mock::start().await;
    let routes =
        json!({"r": {"deployments": [limited(&mock, "d", "gpt-burst", json!({"rps": 20}))]}});
    let gw = Gateway::start(
        routes,
        &["openai"],
        json!({"limits": {"queue": {"max_wait_ms": 0}}}),
    );
    let started = Instant::now();
    let mut answered_at = Vec::new();
    for burst in 0..10u32 {
        let at = started + Duration::from_millis(300 * u64::from(burst));
        tokio::time::sleep_until(at.into()).await;
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let url = gw.url.clone();
            tasks.push(tokio::spawn(async move {
                let r = client()
                    .post(format!("{url}/v1/chat/completions"))
                    .body(r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), Instant::now())
            }));
        }
        for t in tasks {
            let (status, when) = t.await.unwrap();
            assert!(status == 200 || status == 429, "status {status}");
            if status == 200 {
                answered_at.push(when);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hits = mock.hits("gpt-burst");
    assert_eq!(hits, answered_at.len());
    // 3 s of bursts (the last at 2.7 s): at most 20 per second, and at
    // least 95 % of the whole limit over the seconds the run touched.
    let most = (elapsed.ceil() as usize) * 20;
    assert!(hits <= most + 1, "{hits} in {elapsed:.2} s");
    assert!(
        hits >= 57,
        "{hits} upstream requests in {elapsed:.2} s at 20 rps"
    );
}
