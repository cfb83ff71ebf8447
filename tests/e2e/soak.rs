//! Failure paths must not leak (a long-running proxy's memory growing on
//! its error paths is a common way for gateways to fail in production).
//! Thousands of requests that fail in every way the mock can fail them
//! (a 500 and a 503 failed over, a stream cut before and after it was
//! committed, a malformed event, the caller's 400, an unknown model, a body
//! that is not JSON, a client that leaves mid-stream): once warm, the
//! gateway's resident memory stays flat, and every request gets the answer
//! its failure calls for.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Gateway, client};
use crate::mock::Mock;

/// Rounds of requests: the first ones warm the gateway up (instance
/// pools, the monitor's windows, the store's SQLite page cache, which
/// together grow ~2.5 MiB over the first ~9,000 requests and then hold),
/// the last ones are measured.
const ROUNDS: usize = 8;
const WARM_ROUNDS: usize = 5;
const PER_ROUND: usize = 1_800;
const CONCURRENCY: usize = 16;
/// Growth allowed across the measured rounds (5,400 requests): allocator
/// noise (~0.1 MiB here), well under a leak of 200 bytes per request.
const MAX_GROWTH_KIB: u64 = 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The kinds of request sent in turn, with the statuses each may get.
const KINDS: [(&str, bool, &[u16]); 9] = [
    ("failover", false, &[200]),
    ("overloaded", false, &[200]),
    ("cut-after", true, &[200]),
    ("cut-before", true, &[200]),
    ("malformed", true, &[200]),
    ("bad", false, &[400]),
    ("nope", false, &[404]),
    ("", false, &[400]),
    ("leaver", true, &[200]),
];

/// Sends request `k` of the mix; what went wrong when its status was not
/// the one its kind calls for.
async fn one(http: &reqwest::Client, url: &str, k: usize) -> Result<(), String> {
    let (model, stream, want) = KINDS[k % KINDS.len()];
    let body = if model.is_empty() {
        "{\"model\": ".to_string()
    } else {
        json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "tell me a story"}]})
        .to_string()
    };
    let fail = |e: String| format!("{model:?} (stream {stream}): {e}");
    let mut r = http
        .post(format!("{url}/v1/chat/completions"))
        .body(body)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = r.status().as_u16();
    if !want.contains(&status) {
        let text = r.text().await.unwrap_or_default();
        return Err(fail(format!("{status}, want {want:?}: {text}")));
    }
    if model == "leaver" {
        // The first chunk, then gone: the gateway's pump sees the client leave.
        return r.chunk().await.map(drop).map_err(|e| fail(e.to_string()));
    }
    r.bytes().await.map(drop).map_err(|e| fail(e.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_paths_hold_memory_flat() {
    let mock = Mock::start().await;
    let d = |name: &str, model: &str| json!({"name": name, "adapter": "openai", "base_url": mock.url, "model": model});
    let routes = json!({
        "failover": {"strategy": "priority", "deployments": [d("broken", "fail-500"), d("good", "gpt")]},
        "overloaded": {"strategy": "priority", "deployments": [d("busy", "fail-503"), {"name": "good"}]},
        "cut-after": {"deployments": [d("cutter", "cut-mid")]},
        "cut-before": {"strategy": "priority", "deployments": [d("early", "cut-early"), {"name": "good"}]},
        "malformed": {"deployments": [d("garbled", "story-malformed")]},
        "bad": {"deployments": [d("refused", "bad-request")]},
        "leaver": {"deployments": [d("teller", "story")]},
    });
    // Circuits never open: every request takes its failure path to the end
    // (an open circuit would skip the failing deployments without a try).
    // Plugin deadlines are long: the suite's other tests share the two
    // cores, and a call descheduled past 50 ms would fail its request.
    let gw = Gateway::start(
        routes,
        &["openai", "priority"],
        json!({"health": {"trip_after": 1_000_000},
            "plugins": {"deadlines_ms": {"strategy": 2000, "adapter": 2000}}}),
    );
    let url = Arc::new(gw.url.clone());
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        let wrong = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|t| {
                let (url, wrong) = (url.clone(), wrong.clone());
                tokio::spawn(async move {
                    let http = client();
                    for i in 0..PER_ROUND / CONCURRENCY {
                        if let Err(e) = one(&http, &url, t + i * CONCURRENCY).await {
                            wrong.lock().unwrap().push(e);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let wrong = std::mem::take(&mut *wrong.lock().unwrap());
        assert!(
            wrong.is_empty(),
            "round {round}: {} requests got the wrong answer, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        // Streams' pumps and the store's writer finish what the round left.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(rss_kib(gw.pid()));
    }
    eprintln!("soak: resident KiB after each round of {PER_ROUND} requests: {rss:?}");
    let warm = rss[WARM_ROUNDS - 1];
    let last = *rss.last().unwrap();
    assert!(
        last <= warm + MAX_GROWTH_KIB,
        "resident memory grew {} KiB over {} failing requests after warm-up: {rss:?}",
        last.saturating_sub(warm),
        PER_ROUND * (ROUNDS - WARM_ROUNDS)
    );
    assert_eq!(gw.health().await["store"]["dropped"], 0);
}
