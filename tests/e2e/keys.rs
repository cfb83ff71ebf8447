//! Upstream key pools, the provider's quota headers, and client keys:
//! requests rotate among a deployment's keys; a 429 cools down only the key
//! that got it (its day-long Retry-After capped); a 401 takes its key out,
//! logged once; secrets never reach logs or the admin API. A provider that
//! says no request is left is not sent one until its reset. Client keys:
//! 401 without a valid one, 403 on a route the key may not use, 429 at
//! its own limit, and its name as the caller of the records.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, client, json_body};
use crate::mock::Mock;

fn keys_sent(mock: &Mock) -> HashMap<String, usize> {
    let mut sent = HashMap::new();
    for r in mock.requests() {
        if let Some((_, v)) = r.headers.iter().find(|(k, _)| k == "authorization") {
            *sent
                .entry(v.trim_start_matches("Bearer ").to_string())
                .or_default() += 1;
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pool_rotates_and_sidelines_only_the_refused_keys() {
    let mock = Mock::start().await;
    let extra = json!({"deployments": {"pool": {
        "adapter": "openai", "base_url": mock.url, "model": "gpt-pool",
        "api_key_env": ["KEY_OK", "KEY_SLOW", "KEY_BAD", "KEY_OK_2"]
    }}});
    let gw = Gateway::start_with_env(
        json!({"r": {"deployments": ["pool"]}}),
        &[("openai", "openai")],
        extra,
        &[
            ("KEY_OK", "key-ok-1"),
            ("KEY_SLOW", "key-429"),
            ("KEY_BAD", "key-401"),
            ("KEY_OK_2", "key-ok-2"),
        ],
    );
    for i in 0..12 {
        let r = gw.chat("r", i % 2 == 1).await;
        assert_eq!(r.status(), 200, "request {i}: {}", r.text().await.unwrap());
        r.bytes().await.unwrap();
    }
    let sent = keys_sent(&mock);
    // The 429 (Retry-After: a day, capped at a minute) and the 401 each
    // happened once; the two good keys share the rest.
    assert_eq!(sent.get("key-429"), Some(&1), "{sent:?}");
    assert_eq!(sent.get("key-401"), Some(&1), "{sent:?}");
    let ok1 = sent.get("key-ok-1").copied().unwrap_or(0);
    let ok2 = sent.get("key-ok-2").copied().unwrap_or(0);
    assert_eq!(ok1 + ok2, 12, "{sent:?}");
    assert!(ok1 >= 4 && ok2 >= 4, "rotated: {sent:?}");

    let (_, deployments) = gw.admin("/admin/deployments").await;
    let d = &deployments["data"][0];
    let text = d.to_string();
    for secret in ["key-ok-1", "key-429", "key-401", "key-ok-2"] {
        assert!(!text.contains(secret), "{text}");
        assert!(!gw.logs().contains(secret), "a key in the log");
    }
    let state: HashMap<&str, &Value> = d["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["env"].as_str().unwrap(), k))
        .collect();
    assert_eq!(state["KEY_OK"]["state"], "active");
    assert_eq!(state["KEY_BAD"]["state"], "revoked");
    assert_eq!(state["KEY_SLOW"]["state"], "cooling_down");
    let cooling = state["KEY_SLOW"]["cooling_ms"].as_u64().unwrap();
    assert!(cooling <= 60_000 && cooling > 50_000, "capped: {cooling}");
    assert_eq!(state["KEY_OK"]["fingerprint"].as_str().unwrap().len(), 8);
    // The deployment itself is fine: it has keys left.
    assert_eq!(d["health"]["cooling_down"], false, "{d}");
    assert!(gw.wait_for_log("the upstream refused this API key", Duration::from_secs(5)));
    assert_eq!(
        gw.logs()
            .matches("the upstream refused this API key")
            .count(),
        1,
        "logged once"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, events) = gw.admin("/admin/events?type=key_revoked").await;
        let rows = events["data"].as_array().cloned().unwrap_or_default();
        if let Some(e) = rows.first() {
            assert!(e.to_string().contains("KEY_BAD"), "{e}");
            // Events filter by deployment, page, and refuse request-only filters.
            let (_, mine) = gw
                .admin("/admin/events?type=key_revoked&deployment=pool&limit=1")
                .await;
            assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");
            assert!(mine["next_offset"].is_null(), "{mine}");
            let (_, other) = gw
                .admin("/admin/events?type=key_revoked&deployment=else")
                .await;
            assert_eq!(other["data"].as_array().unwrap().len(), 0, "{other}");
            let (status, bad) = gw.admin("/admin/events?status=500").await;
            assert_eq!(status, 400, "{bad}");
            break;
        }
        assert!(Instant::now() < deadline, "no key_revoked event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // With every good key out too, nothing is sent: a clear error.
    gw.rewrite_config(|c| {
        c["deployments"]["pool"]["api_key_env"] = json!(["KEY_BAD"]);
    });
    assert!(gw.wait_for_log("config reloaded", Duration::from_secs(5)));
    let r = gw.chat("r", false).await;
    let status = r.status();
    let body = json_body(r).await;
    assert_eq!(status, 502, "{body}");
    // A reload forgives: the key is tried again (and refused again).
    assert_eq!(keys_sent(&mock).get("key-401"), Some(&2));
    let r = gw.chat("r", false).await;
    let body = json_body(r).await;
    assert!(
        body.to_string()
            .contains("every API key of this deployment was refused"),
        "{body}"
    );
    assert_eq!(keys_sent(&mock).get("key-401"), Some(&2), "not sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_out_of_quota_is_not_sent_requests_until_its_reset() {
    let mock = Mock::start().await;
    let extra = json!({"deployments": {
        "low": {"adapter": "openai", "base_url": mock.url, "model": "quota-low", "priority": 0},
        "spare": {"adapter": "openai", "base_url": mock.url, "model": "gpt-spare", "priority": 1}
    }});
    let gw = Gateway::start(
        json!({"r": {"strategy": "priority", "deployments": ["low", "spare"]}}),
        &["openai", "priority"],
        extra,
    );
    let first = gw.chat("r", false).await;
    assert_eq!(
        first.headers()["x-switchyard-deployment"],
        "low",
        "the first goes to the primary, which says nothing is left for 2 s"
    );
    for _ in 0..3 {
        let r = gw.chat("r", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchyard-deployment"], "spare");
    }
    assert_eq!(mock.hits("quota-low"), 1, "not sent what it would refuse");
    let (_, deployments) = gw.admin("/admin/deployments?adapter=openai").await;
    let low = deployments["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "low")
        .unwrap()
        .clone();
    assert_eq!(low["health"]["headroom"], 0.0, "{low}");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let r = gw.chat("r", false).await;
    assert_eq!(
        r.headers()["x-switchyard-deployment"],
        "low",
        "after the reset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_gate_routes_limit_rates_and_name_the_caller() {
    let mock = Mock::start().await;
    // A key made by the command users run.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["keys", "new", "--name", "team-a"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let key_a = text
        .lines()
        .find_map(|l| l.strip_prefix("key:  "))
        .unwrap()
        .to_string();
    let hash_a = text
        .lines()
        .find_map(|l| l.strip_prefix("hash: "))
        .unwrap()
        .to_string();
    assert!(text.contains("\"team-a\""), "{text}");
    let key_b = "sy-team-b-secret";
    let hash_b = switchyard::auth::hash_text(key_b);
    let extra = json!({
        "auth": {"required": true, "keys": {
            "team-a": {"hash": hash_a, "routes": ["r"], "rpm": 3},
            "team-b": {"hash": hash_b, "tags": ["batch"]}
        }},
        "budgets": {"b-daily": {"caller": "team-b", "period": "day", "limit_usd": 100}}
    });
    let routes = json!({
        "r": {"deployments": [{"name": "d", "adapter": "openai", "base_url": mock.url, "model": "gpt-a",
            "input_cost_per_1m": 1000.0, "output_cost_per_1m": 1000.0}]},
        "other": {"deployments": [{"name": "e", "adapter": "openai", "base_url": mock.url, "model": "gpt-o",
            "input_cost_per_1m": 1000.0, "output_cost_per_1m": 1000.0}]}
    });
    let gw = Gateway::start(routes, &["openai"], extra);
    let call = |model: &str, key: Option<&str>| {
        let mut req = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .body(
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            );
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    for key in [None, Some("sy-not-a-key")] {
        let r = call("r", key).await.unwrap();
        assert_eq!(r.status(), 401);
        let body = json_body(r).await;
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    }
    let r = call("other", Some(&key_a)).await.unwrap();
    assert_eq!(r.status(), 403);
    let body = json_body(r).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team-a"),
        "{body}"
    );
    for _ in 0..3 {
        assert_eq!(call("r", Some(&key_a)).await.unwrap().status(), 200);
    }
    let r = call("r", Some(&key_a)).await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry), "a minute window: {retry}");
    let body = json_body(r).await;
    assert_eq!(body["error"]["code"], "client_key_rate_limited", "{body}");
    // Another key is not held back by team-a's limit, and may use any route.
    for model in ["r", "other"] {
        assert_eq!(call(model, Some(key_b)).await.unwrap().status(), 200);
    }
    // x-api-key works as well (Anthropic clients).
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-api-key", key_b)
        .body(r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The mock saw none of the client keys.
    assert!(keys_sent(&mock).is_empty(), "{:?}", keys_sent(&mock));

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, a) = gw.admin("/admin/requests?caller=team-a").await;
        let (_, b) = gw.admin("/admin/requests?caller=team-b").await;
        let (na, nb) = (
            a["data"].as_array().map_or(0, Vec::len),
            b["data"].as_array().map_or(0, Vec::len),
        );
        if na >= 5 && nb >= 3 {
            let tags = b["data"][0]["tags"].to_string();
            assert!(tags.contains("batch"), "{tags}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records: team-a {na}, team-b {nb}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Costs by caller: team-b's three answers, team-a's three.
    let (_, costs) = gw.admin("/admin/costs?group_by=caller").await;
    let by: HashMap<String, f64> = costs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap_or("").to_string(),
                r["cost"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!((by["team-b"] - 0.018).abs() < 1e-9, "{costs}");
    assert!((by["team-a"] - 0.018).abs() < 1e-9, "{costs}");
    // The model list needs a key too, and its entries say what each route offers.
    assert_eq!(
        client()
            .get(format!("{}/v1/models", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let models = json_body(
        client()
            .get(format!("{}/v1/models", gw.url))
            .bearer_auth(key_b)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let r = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "r")
        .unwrap()
        .clone();
    assert_eq!(r["input_cost_per_1m"]["max"], 1000.0, "{models}");
    assert!(r["capabilities"].is_array(), "{models}");
    let (_, budgets) = gw.admin("/admin/budgets").await;
    // team-b's three answers of 6 tokens at $1,000 per million; none of team-a's.
    let spent = budgets["data"][0]["spent_usd"].as_f64().unwrap_or(-1.0);
    assert!((spent - 0.018).abs() < 1e-9, "{budgets}");
    assert!(!gw.logs().contains(&key_a) && !gw.logs().contains(key_b));
}
