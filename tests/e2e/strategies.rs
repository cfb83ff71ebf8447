//! The bundled routing strategies on the real binary: how a route's traffic
//! spreads over its deployments, each within a stated tolerance. The host's
//! random stream is seeded (`SWITCHYARD_PLUGIN_SEED`), so a run replays.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Gateway, deployment};
use crate::mock::Mock;

/// A gateway with one route `r` over `deployments`, ordered by `strategy`.
fn gateway(strategy: &str, deployments: Vec<Value>, config: Value) -> Gateway {
    Gateway::start_with_env(
        json!({"r": {"strategy": strategy, "deployments": deployments}}),
        &[("openai", "openai"), (strategy, strategy)],
        json!({"plugins": {"config": {strategy: config}}}),
        &[("SWITCHYARD_PLUGIN_SEED", "42")],
    )
}

/// Which deployment answered each of `n` requests, `at_once` in flight.
async fn spread(gw: &Gateway, n: usize, at_once: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n / at_once {
        let batch = (0..at_once).map(|_| gw.chat("r", false));
        for r in futures_util::future::join_all(batch).await {
            assert_eq!(r.status(), 200);
            let d = r.headers()["x-switchyard-deployment"]
                .to_str()
                .unwrap()
                .to_owned();
            *counts.entry(d).or_insert(0) += 1;
        }
    }
    counts
}

fn share(counts: &HashMap<String, usize>, d: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(d).copied().unwrap_or(0) as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_spreads_by_weight() {
    let mock = Mock::start().await;
    let mut light = deployment("light", &mock.url, "good");
    light["weight"] = json!(1);
    let mut heavy = deployment("heavy", &mock.url, "good");
    heavy["weight"] = json!(3);
    let gw = gateway("weighted", vec![light, heavy], json!({}));
    let counts = spread(&gw, 400, 4).await;
    // 1:3 → 25 % light; ±7 points is over 3 standard deviations at n = 400.
    let light = share(&counts, "light");
    assert!((0.18..=0.32).contains(&light), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_used_spreads_concurrent_requests() {
    let mock = Mock::start().await;
    for m in ["slow-a", "slow-b"] {
        mock.set_delay(m, Duration::from_millis(300));
    }
    let gw = gateway(
        "least-used",
        vec![
            deployment("a", &mock.url, "slow-a"),
            deployment("b", &mock.url, "slow-b"),
        ],
        json!({}),
    );
    // Requests start a few milliseconds apart, so each sees the others in
    // flight: the first goes to a, the next to b, and so on.
    let mut handles = Vec::new();
    for _ in 0..12 {
        let client = crate::harness::client();
        let url = format!("{}/v1/chat/completions", gw.url);
        handles.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .body(
                    json!({"model": "r", "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                )
                .send()
                .await
                .unwrap();
            r.headers()["x-switchyard-deployment"]
                .to_str()
                .unwrap()
                .to_owned()
        }));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let mut counts = HashMap::new();
    for h in handles {
        *counts.entry(h.await.unwrap()).or_insert(0usize) += 1;
    }
    // 6/6 when every request sees the ones before it; ±1 for a race.
    let a = counts.get("a").copied().unwrap_or(0);
    assert!((5..=7).contains(&a), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_prefers_the_faster_deployment_once_measured() {
    let mock = Mock::start().await;
    mock.set_delay("slow", Duration::from_millis(60));
    let gw = gateway(
        "latency",
        vec![
            deployment("slow", &mock.url, "slow"),
            deployment("fast", &mock.url, "fast"),
        ],
        json!({}),
    );
    // Both measured (unknown ones are explored first), then the monitor's
    // figures refresh (at most once a second).
    spread(&gw, 8, 1).await;
    for d in ["slow", "fast"] {
        assert!(mock.hits(d) > 0, "{d} was explored");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let counts = spread(&gw, 40, 1).await;
    // Two deployments: the faster is always first (power of two choices
    // over two is the better one).
    assert!(share(&counts, "fast") >= 0.95, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_aware_sends_each_request_to_the_cheapest() {
    let mock = Mock::start().await;
    let priced = |name: &str, input: f64, output: f64| {
        let mut d = deployment(name, &mock.url, "good");
        d["input_cost_per_1m"] = json!(input);
        d["output_cost_per_1m"] = json!(output);
        d
    };
    let gw = gateway(
        "cost-aware",
        vec![
            priced("dear", 5.0, 15.0),
            priced("cheap", 0.15, 0.6),
            priced("middle", 1.0, 2.0),
        ],
        json!({}),
    );
    let counts = spread(&gw, 20, 2).await;
    assert_eq!(counts.get("cheap"), Some(&20), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suitability_prefers_the_cheaper_of_two_equal_deployments() {
    let mock = Mock::start().await;
    let priced = |name: &str, input: f64| {
        let mut d = deployment(name, &mock.url, "good");
        d["input_cost_per_1m"] = json!(input);
        d["output_cost_per_1m"] = json!(input * 4.0);
        d
    };
    let gw = gateway(
        "suitability",
        vec![priced("dear", 5.0), priced("cheap", 0.5)],
        json!({}),
    );
    let counts = spread(&gw, 20, 2).await;
    assert_eq!(counts.get("cheap"), Some(&20), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_aware_demotes_a_deployment_judged_poor() {
    let mock = Mock::start().await;
    let gw = gateway(
        "quality-aware",
        vec![
            deployment("first", &mock.url, "good"),
            deployment("second", &mock.url, "good"),
        ],
        json!({"min_quality": 0.6}),
    );
    // Equal quality: the configured order.
    let counts = spread(&gw, 4, 1).await;
    assert_eq!(counts.get("first"), Some(&4), "{counts:?}");
    // Applications judge the first deployment's answers poor until its
    // quality is under the floor.
    let started = std::time::Instant::now();
    loop {
        let r = gw.chat("r", false).await;
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        if r.headers()["x-switchyard-deployment"] == "second" {
            break;
        }
        let status = loop {
            let s = crate::harness::client()
                .post(format!("{}/v1/feedback", gw.url))
                .body(json!({"request_id": id, "score": 0.0}).to_string())
                .send()
                .await
                .unwrap()
                .status();
            // Its record reaches the store within a second or so.
            if s != 404 || started.elapsed() > Duration::from_secs(20) {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status, 202);
        assert!(started.elapsed() < Duration::from_secs(20), "never demoted");
    }
    let counts = spread(&gw, 4, 1).await;
    assert_eq!(counts.get("second"), Some(&4), "{counts:?}");
}

/// Low evaluator scores in a row demote a deployment for a while: an event
/// says so, and the admin API (like every strategy) sees its quality as 0
/// until the period ends — though each answer passed (the evaluator only
/// scored it low).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_scores_in_a_row_demote_with_an_event() {
    let mock = Mock::start().await;
    let gw = Gateway::start_with_env(
        json!({"r": {"strategy": "priority", "evaluator": "refusal", "deployments": [
            deployment("first", &mock.url, "refuse"),
            deployment("second", &mock.url, "good"),
        ]}}),
        &[
            ("openai", "openai"),
            ("priority", "priority"),
            ("refusal", "refusal"),
        ],
        json!({
            "health": {"demote_after_low_scores": 3, "demote_ms": 60000},
            "plugins": {"config": {"refusal": {"fail_on_refusal": false}}},
        }),
        &[],
    );
    let view = |d: &Value| {
        d["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "first")
            .unwrap()["health"]
            .clone()
    };
    let counts = spread(&gw, 2, 1).await;
    assert_eq!(counts.get("first"), Some(&2), "{counts:?}");
    let (_, d) = gw.admin("/admin/deployments").await;
    let health = view(&d);
    assert_eq!(health["demoted_ms"], Value::Null, "{health}");
    assert!(health["quality"].as_f64().unwrap() > 0.0, "{health}");
    spread(&gw, 1, 1).await;
    let (_, d) = gw.admin("/admin/deployments").await;
    let health = view(&d);
    assert!(health["demoted_ms"].as_u64().unwrap() > 50_000, "{health}");
    assert_eq!(health["quality"], 0.0, "{health}");
    let started = std::time::Instant::now();
    loop {
        let (_, events) = gw.admin("/admin/events?type=quality_demoted").await;
        if let Some(e) = events["data"].as_array().and_then(|e| e.first()) {
            assert_eq!(e["subject"], "first", "{e}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no event: {events}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
