//! `GET /metrics`: after a scripted mix of requests, the counters say
//! exactly what happened, in a text format a real Prometheus parser (the
//! Python `prometheus_client` one) reads.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, client, deployment, repo};
use crate::mock::Mock;

/// The scrape parsed by `prometheus_client`: `(name, labels, value)` per sample.
async fn scrape(gw: &Gateway) -> Vec<(String, Value, f64)> {
    let r = client()
        .get(format!("{}/metrics", gw.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let python = repo().join("target/py-venv/bin/python");
    assert!(python.exists(), "run scripts/setup (the test venv)");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(
            "import json, sys\n\
             from prometheus_client.parser import text_string_to_metric_families\n\
             text = open(sys.argv[1]).read()\n\
             print(json.dumps([[s.name, s.labels, s.value] for f in text_string_to_metric_families(text) for s in f.samples]))",
        )
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the parser refused it: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, Value, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    samples
}

fn value(samples: &[(String, Value, f64)], name: &str, labels: Value) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| l.get(k) == Some(v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_mix_exactly() {
    let mock = Mock::start().await;
    let mut good = deployment("good-dep", &mock.url, "good");
    good["input_cost_per_1m"] = json!(1_000_000.0);
    let mut cache_dep = good.clone();
    cache_dep["name"] = json!("cache-dep");
    let gw = Gateway::start(
        json!({
            "ok": {"deployments": [good]},
            "flaky": {"strategy": "priority", "deployments": [
                deployment("primary", &mock.url, "fail-500"),
                deployment("backup", &mock.url, "gpt-backup")]},
            "limited": {"deployments": [deployment("limited-dep", &mock.url, "rate-429")]},
            "cached": {"deployments": [cache_dep], "cache": {"enabled": true}},
        }),
        &["openai", "priority"],
        json!({"admin": {"metrics_on_api": true}}),
    );
    for _ in 0..2 {
        assert_eq!(gw.chat("ok", false).await.status(), 200);
    }
    let r = gw.chat("ok", true).await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    assert_eq!(gw.chat("flaky", false).await.status(), 200);
    assert_eq!(gw.chat("limited", false).await.status(), 429);
    assert_eq!(gw.chat("no-such-model", false).await.status(), 404);
    // A miss, then a hit (no attempt: the counts above are unchanged).
    let q = json!({"model": "cached", "temperature": 0,
        "messages": [{"role": "user", "content": "hello"}]});
    for _ in 0..2 {
        assert_eq!(gw.post(q.clone()).await.status(), 200);
    }

    // The stream's record completes when its pump ends: scrape until then.
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = scrape(&gw).await;
        let streamed = value(
            &s,
            "switchyard_requests_total",
            json!({"route": "ok", "stream": "true"}),
        );
        if streamed == 1.0 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let requests = |labels: Value| value(&s, "switchyard_requests_total", labels);
    assert_eq!(
        requests(json!({"route": "ok", "status": "2xx", "stream": "false"})),
        2.0
    );
    assert_eq!(
        requests(json!({"route": "ok", "status": "2xx", "stream": "true"})),
        1.0
    );
    assert_eq!(requests(json!({"route": "flaky", "status": "2xx"})), 1.0);
    assert_eq!(requests(json!({"route": "limited", "status": "4xx"})), 1.0);
    assert_eq!(
        requests(json!({"route": "-", "status": "4xx"})),
        1.0,
        "an unknown model is not a label"
    );
    let attempts = |labels: Value| value(&s, "switchyard_attempts_total", labels);
    assert_eq!(
        attempts(json!({"deployment": "good-dep", "class": "ok"})),
        3.0
    );
    assert_eq!(
        attempts(json!({"deployment": "cache-dep", "class": "ok"})),
        1.0,
        "the miss only"
    );
    let cache = |result: &str| {
        value(
            &s,
            "switchyard_cache_requests_total",
            json!({"route": "cached", "result": result}),
        )
    };
    assert_eq!(
        (cache("miss"), cache("hit"), cache("bypass")),
        (1.0, 1.0, 0.0)
    );
    // The hit saved what the miss cost: 3 prompt tokens at $1.
    assert_eq!(
        value(
            &s,
            "switchyard_cache_saved_usd_total",
            json!({"route": "cached"})
        ),
        3.0
    );
    assert_eq!(value(&s, "switchyard_cache_entries", json!({})), 1.0);
    assert!(value(&s, "switchyard_cache_bytes", json!({})) > 100.0);
    assert_eq!(value(&s, "switchyard_cache_stored_total", json!({})), 1.0);
    assert_eq!(value(&s, "switchyard_cache_errors_total", json!({})), 0.0);
    assert_eq!(
        attempts(json!({"deployment": "primary", "class": "overloaded"})),
        1.0
    );
    assert_eq!(
        attempts(json!({"deployment": "backup", "class": "ok"})),
        1.0
    );
    assert_eq!(
        attempts(json!({"deployment": "limited-dep", "class": "rate_limited"})),
        1.0
    );
    assert_eq!(
        value(&s, "switchyard_events_total", json!({"kind": "failover"})),
        1.0
    );
    // The mock reports 3 prompt and 3 completion tokens an answer.
    let tokens = |kind: &str| {
        value(
            &s,
            "switchyard_tokens_total",
            json!({"deployment": "good-dep", "kind": kind}),
        )
    };
    assert_eq!((tokens("input"), tokens("output")), (9.0, 9.0));
    // 3 × 3 prompt tokens at $1 a token.
    assert_eq!(
        value(
            &s,
            "switchyard_cost_usd_total",
            json!({"deployment": "good-dep"})
        ),
        9.0
    );
    assert_eq!(
        value(
            &s,
            "switchyard_request_duration_seconds_count",
            json!({"route": "ok"})
        ),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "switchyard_time_to_first_token_seconds_count",
            json!({"deployment": "good-dep"})
        ),
        1.0
    );
    assert!(
        value(
            &s,
            "switchyard_overhead_seconds_count",
            json!({"route": "flaky"})
        ) == 1.0
    );
    // Cooling down after its 429 (Retry-After 30): skipped.
    assert_eq!(
        value(
            &s,
            "switchyard_circuit_open",
            json!({"deployment": "limited-dep"})
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "switchyard_circuit_open",
            json!({"deployment": "good-dep"})
        ),
        0.0
    );
    assert_eq!(
        value(&s, "switchyard_store", json!({"what": "degraded"})),
        0.0
    );
    // Plugins (loading calls them too): one more request through the one
    // route with a strategy asks it once more.
    let calls_in = |s: &[(String, Value, f64)], plugin: &str| {
        value(
            s,
            "switchyard_plugin_calls_total",
            json!({"plugin": plugin}),
        )
    };
    assert_eq!(gw.chat("flaky", false).await.status(), 200);
    let after = scrape(&gw).await;
    assert_eq!(calls_in(&after, "priority"), calls_in(&s, "priority") + 1.0);
    let calls = |plugin: &str| calls_in(&s, plugin);
    assert!(calls("openai") >= 10.0, "{}", calls("openai"));
    assert_eq!(
        value(
            &s,
            "switchyard_plugin_faults_total",
            json!({"plugin": "openai"})
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "switchyard_plugin_timeouts_total",
            json!({"plugin": "openai"})
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "switchyard_plugin_traps_total",
            json!({"plugin": "openai"})
        ),
        0.0
    );
    // Every call is in the latency histogram, the slowest bucket included.
    assert_eq!(
        value(
            &s,
            "switchyard_plugin_call_duration_seconds_count",
            json!({"plugin": "openai"})
        ),
        calls("openai")
    );
    assert_eq!(
        value(
            &s,
            "switchyard_plugin_call_duration_seconds_bucket",
            json!({"plugin": "openai", "le": "+Inf"})
        ),
        calls("openai")
    );
    assert!(
        value(
            &s,
            "switchyard_plugin_call_seconds_total",
            json!({"plugin": "openai"})
        ) > 0.0
    );
    assert_eq!(
        value(
            &s,
            "switchyard_plugin_quarantined",
            json!({"plugin": "openai"})
        ),
        0.0
    );
    // Headroom: untouched, and none while cooling down after the 429.
    assert_eq!(
        value(
            &s,
            "switchyard_limiter_headroom",
            json!({"deployment": "good-dep"})
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "switchyard_limiter_headroom",
            json!({"deployment": "limited-dep"})
        ),
        0.0
    );
    assert_eq!(value(&s, "switchyard_queue_waiting", json!({})), 0.0);

    // On the API's listener too (admin.metrics_on_api).
    let r = client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("switchyard_requests_total")
    );

    // A reload is counted.
    let r = client()
        .post(format!("{}/admin/reload", gw.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = scrape(&gw).await;
    assert_eq!(
        value(&s, "switchyard_reloads_total", json!({"result": "ok"})),
        1.0
    );
}

/// `/readyz`: ready while every route has a deployment it can send to; a
/// route whose adapter is not loaded, or whose every deployment is down,
/// makes it 503 with the reason. `/healthz` (liveness) stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_for_a_route_without_its_adapter_or_with_every_deployment_down() {
    let mock = Mock::start().await;
    let ready = |gw: &Gateway| {
        let url = format!("{}/readyz", gw.url);
        async move {
            let r = client().get(url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, crate::harness::json_body(r).await)
        }
    };
    let gw = Gateway::start(
        json!({"ok": {"deployments": [deployment("good-dep", &mock.url, "good")]},
               "down": {"deployments": [deployment("limited-dep", &mock.url, "rate-429")]}}),
        &["openai"],
        json!({}),
    );
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 200, "{body}");
    // /metrics is the admin listener's unless admin.metrics_on_api.
    let r = client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["store"]["state"], "ok");
    assert_eq!(body["plugins"]["loaded"], json!(["openai"]));
    // Its only deployment cools down after a 429 (Retry-After 30).
    assert_eq!(gw.chat("down", false).await.status(), 429);
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    let reasons = body["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{body}");
    let reason = reasons[0].as_str().unwrap();
    assert!(
        reason.contains("\"down\"") && reason.contains("limited-dep: down"),
        "{reason}"
    );
    assert_eq!(body["routes"]["ok"]["ready"], true);
    drop(gw);

    // A route whose adapter is not there.
    let mut other = deployment("claude", &mock.url, "claude-x");
    other["adapter"] = json!("anthropic");
    let gw = Gateway::start(
        json!({"ok": {"deployments": [deployment("good-dep", &mock.url, "good")]},
               "claude": {"deployments": [other]}}),
        &["openai"],
        json!({}),
    );
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("\"claude\"") && reason.contains("adapter \"anthropic\" is not loaded"),
        "{reason}"
    );
    assert_eq!(
        body["routes"]["claude"]["deployments"]["claude"]["adapter_loaded"],
        false
    );
    let live = client()
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "liveness stays trivial");
}
