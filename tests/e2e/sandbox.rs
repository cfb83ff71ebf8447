//! The sandbox: a plugin that never returns or that allocates without bound
//! is cut off, and the request still gets an answer.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Gateway, deployment, json_body};
use crate::mock::Mock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_strategy_and_memory_hungry_evaluator_are_cut_off() {
    let mock = Mock::start().await;
    let routes = json!({"chat": {"strategy": "spin", "evaluator": "hog", "deployments": [
        deployment("first", &mock.url, "good"), deployment("second", &mock.url, "good")]}});
    let gw = Gateway::start(routes, &["openai", "spin", "hog"], json!({}));
    for _ in 0..3 {
        let started = Instant::now();
        let r = gw.chat("chat", false).await;
        assert_eq!(r.status(), 200, "{}", gw.logs());
        // The strategy's loop is cut at its 25 ms deadline.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Configured order, and the evaluator's failure accepts the answer.
        assert_eq!(json_body(r).await["model"], "first");
    }
    gw.assert_log("exceeded its 25 ms deadline");
    gw.assert_log("using the configured order");
    gw.assert_log("exceeded its memory limit");
    gw.assert_log("accepting the answer");
    // A trapped instance is replaced: each request trapped afresh (3 × 2).
    assert!(
        gw.wait_for_log_count(
            "discarding trapped plugin instance",
            6,
            Duration::from_secs(3)
        ),
        "{}",
        gw.logs()
    );
    // The metrics count the strategy's interruptions apart.
    let metrics = gw.metrics_text().await;
    let timeouts: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("switchyard_plugin_timeouts_total") && l.contains(r#"plugin="spin""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(timeouts >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hungry_evaluator_stays_under_the_cap() {
    let mock = Mock::start().await;
    let routes = json!({"chat": {"evaluator": "hog", "deployments": [deployment("only", &mock.url, "good")]}});
    let gw = Gateway::start(
        routes,
        &["openai", "hog"],
        json!({"plugins": {"memory_limit_mib": 16}}),
    );
    let r = gw.chat("chat", false).await;
    assert_eq!(r.status(), 200);
    gw.assert_log("exceeded its memory limit");
    let rss_kib = gateway_rss_kib(&gw);
    assert!(
        rss_kib < 512 * 1024,
        "the 1 GiB allocation never happened: {rss_kib} KiB"
    );
}

fn gateway_rss_kib(gw: &Gateway) -> u64 {
    let pid = gw.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
