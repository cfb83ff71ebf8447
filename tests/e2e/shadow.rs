//! Shadow strategies on the real binary: they see every request beside the
//! live strategy, never route, and `GET /admin/shadow` says how often they
//! agreed and what their choices would have cost — even when one of them
//! fails on every call.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, deployment};
use crate::mock::Mock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_record_their_choices_and_never_route() {
    let mock = Mock::start().await;
    let priced = |name: &str, input: f64| {
        let mut d = deployment(name, &mock.url, "good");
        d["input_cost_per_1m"] = json!(input);
        d["output_cost_per_1m"] = json!(input * 4.0);
        d
    };
    // Live: priority sends everything to `dear`; the cost-aware shadow
    // would send everything to `cheap`; `spin` runs out its deadline on
    // every call.
    let gw = Gateway::start(
        json!({"r": {
            "strategy": "priority",
            "shadow_strategies": ["cost-aware", "spin"],
            "deployments": [priced("dear", 5.0), priced("cheap", 0.5)],
        }}),
        &["openai", "priority", "cost-aware", "spin"],
        json!({}),
    );
    const N: usize = 12;
    for _ in 0..N {
        let r = gw.chat("r", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchyard-deployment"], "dear");
    }
    // The decisions land after the answers: wait for all of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let (status, v) = gw.admin("/admin/shadow").await;
        assert_eq!(status, 200, "{v}");
        let done = v["routes"][0]["shadows"]
            .as_array()
            .is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["decisions"] == N));
        if done {
            break v;
        }
        assert!(Instant::now() < deadline, "decisions missing: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let route = &report["routes"][0];
    assert_eq!(route["route"], "r");
    assert_eq!(route["live"], "priority");
    let by = |id: &str| -> &Value {
        route["shadows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["strategy"] == id)
            .unwrap()
    };
    let cost_aware = by("cost-aware");
    assert_eq!(cost_aware["agreement"], 0.0, "{cost_aware}");
    assert_eq!(cost_aware["failed"], 0);
    assert_eq!(cost_aware["by_deployment"]["cheap"]["candidate"], N);
    assert_eq!(cost_aware["by_deployment"]["dear"]["live"], N);
    // The same tokens at a tenth of the price.
    let live = cost_aware["live_stats"]["cost_usd"].as_f64().unwrap();
    let what_if = cost_aware["what_if"]["cost_usd"].as_f64().unwrap();
    assert!(live > 0.0, "{cost_aware}");
    assert!((what_if * 10.0 - live).abs() < 1e-9, "{cost_aware}");
    // The live side's latency is the served deployment's real median; the
    // cheap one never answered, so its what-if latency is unknown.
    assert!(cost_aware["live_stats"]["latency_p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(cost_aware["what_if"]["latency_p50_ms"], Value::Null);
    let spin = by("spin");
    assert_eq!(spin["failed"], N, "{spin}");
    assert_eq!(spin["agreement"], Value::Null);
    // The same traffic replayed, from the store, through strategies that
    // never routed it: cost-aware disagrees on every request, priority on
    // none.
    let replay = |strategy: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["replay", "--json", "--config"])
            .arg(gw.config_path())
            .arg("--strategy")
            .arg(crate::harness::plugin(strategy))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let v = replay("cost-aware");
    assert_eq!(v["requests"], N, "{v}");
    let r = &v["routes"]["r"];
    assert_eq!(r["agreement"], 0.0, "{v}");
    assert_eq!(r["by_deployment"]["cheap"]["candidate"], N, "{v}");
    assert_eq!(
        r["what_if"]["cost_usd"], cost_aware["what_if"]["cost_usd"],
        "{v}"
    );
    let v = replay("priority");
    assert_eq!(v["routes"]["r"]["agreement"], 1.0, "{v}");
    // Its table, and its errors.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["replay", "--route", "nope", "--config"])
        .arg(gw.config_path())
        .arg("--strategy")
        .arg(crate::harness::plugin("priority"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--route \"nope\": the config has no such route")
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["replay", "--config"])
        .arg(gw.config_path())
        .arg("--strategy")
        .arg(crate::harness::plugin("basic"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("basic.wasm: is a evaluator plugin"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["replay", "--config"])
        .arg(gw.config_path())
        .arg("--strategy")
        .arg(crate::harness::plugin("cost-aware"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("agreement with the live choice: 0.0 %"),
        "{table}"
    );
    // A filter that matches nothing, and a bad one.
    let (status, v) = gw.admin("/admin/shadow?route=other").await;
    assert_eq!((status, v["routes"].as_array().unwrap().len()), (200, 0));
    let (status, v) = gw.admin("/admin/shadow?since=yesterday").await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("since"),
        "{v}"
    );
}

/// As for the live strategy, a shadow that is not a loaded strategy is a
/// warning naming where it is used (it may be hot-loaded later), and the
/// route still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_is_not_a_strategy_is_named_by_check() {
    let gw = Gateway::start(
        json!({"r": {"deployments": [deployment("d", "http://127.0.0.1:9", "m")]}}),
        &["openai", "basic"],
        json!({}),
    );
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(gw.config_path()).unwrap()).unwrap();
    config["routes"] = json!({"r": {
        "shadow_strategies": ["basic"],
        "deployments": [deployment("d", "http://127.0.0.1:9", "m")],
    }});
    let path = gw.dir.path().join("shadowed.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("strategy (configured order), evaluator (none), shadows basic"),
        "{text}"
    );
    assert!(
        text.contains("at /routes/r/shadow_strategies/0: plugin \"basic\" is not loaded (rejected: is a evaluator plugin"),
        "{text}"
    );
}
