//! Every request leaves one record in the store (a real SQLite file), read
//! back through the admin API: answers, failovers, failures, streams
//! completed, cut and abandoned, evaluator rejections, exact costs, and
//! estimated usage.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Gateway, client};
use crate::mock::Mock;

/// Prices per million tokens of every test deployment.
const INPUT: f64 = 2.5;
const OUTPUT: f64 = 10.0;
const CACHED: f64 = 1.25;

fn deployment(mock: &Mock, name: &str, model: &str) -> Value {
    json!({"name": name, "adapter": "openai", "base_url": mock.url, "model": model,
        "input_cost_per_1m": INPUT, "output_cost_per_1m": OUTPUT, "cached_input_cost_per_1m": CACHED})
}

async fn start(mock: &Mock) -> Gateway {
    let routes = json!({
        "ok": {"deployments": [deployment(mock, "good", "gpt")]},
        "failover": {"strategy": "priority", "deployments": [
            deployment(mock, "broken", "fail-500"), {"name": "good"}]},
        "dead": {"deployments": [deployment(mock, "broken-only", "fail-500")]},
        "cut": {"deployments": [deployment(mock, "cutter", "cut-mid")]},
        "slow": {"deployments": [deployment(mock, "slowpoke", "slow-stream")]},
        "silent": {"deployments": [deployment(mock, "silent", "no-usage")]},
        "cached": {"deployments": [deployment(mock, "cacher", "cached")]},
        "judged": {"strategy": "priority", "evaluator": "basic", "deployments": [
            deployment(mock, "empty", "empty"), {"name": "good"}]},
    });
    Gateway::start(routes, &["openai", "priority", "basic"], json!({}))
}

async fn send(gw: &Gateway, id: &str, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", id)
        .header("x-switchyard-tags", "team-a, batch")
        .body(
            json!({"model": model, "stream": stream,
                "messages": [{"role": "user", "content": "hello there, how are you"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
}

/// The record of request `id`, with its attempts (waits for the writer).
async fn record(gw: &Gateway, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = gw.admin(&format!("/admin/requests/{id}")).await;
        if status == 200 {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no record of {id}: {status} {body}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn cost(prompt: f64, completion: f64) -> f64 {
    (prompt * INPUT + completion * OUTPUT) / 1e6
}

/// An Anthropic deployment's prompt-cache reads and writes are charged at
/// their own prices, whole answers and streams alike: the dialect mock
/// reports 20 plain prompt tokens, 5 read from the cache, 3 written to it
/// and 7 completion tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_cache_reads_and_writes_are_charged_at_their_prices() {
    let mock = crate::dialects::Dialects::start().await;
    let routes = json!({"claude": {"deployments": [{"name": "claude", "adapter": "anthropic",
        "base_url": format!("{}/v1", mock.url), "model": "claude-sonnet-4-5",
        "input_cost_per_1m": 3.0, "output_cost_per_1m": 15.0,
        "cached_input_cost_per_1m": 0.3, "cache_write_cost_per_1m": 3.75}]}});
    let gw = Gateway::start(routes, &["anthropic"], json!({}));
    let want = (20.0 * 3.0 + 5.0 * 0.3 + 3.0 * 3.75 + 7.0 * 15.0) / 1e6;
    for (id, stream) in [("cw-whole", false), ("cw-stream", true)] {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-request-id", id)
            .body(
                json!({"model": "claude", "stream": stream,
                    "messages": [{"role": "user", "content": "hello"}]})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}");
        let body = r.text().await.unwrap();
        if !stream {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["usage"]["prompt_tokens"], 28, "{body}");
            assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
            assert_eq!(
                v["usage"]["prompt_tokens_details"]["cache_creation_tokens"],
                3
            );
        }
        let rec = record(&gw, id).await;
        assert_eq!(rec["prompt_tokens"], 28, "{rec}");
        assert_eq!(rec["completion_tokens"], 7, "{rec}");
        let cost = rec["cost"].as_f64().unwrap();
        assert!(close(cost, want), "{id}: cost {cost}, want {want}: {rec}");
    }
    let metrics = gw.metrics_text().await;
    for (kind, n) in [
        ("input", 40),
        ("cached_input", 10),
        ("cache_write", 6),
        ("output", 14),
    ] {
        let line = format!("switchyard_tokens_total{{deployment=\"claude\",kind=\"{kind}\"}} {n}");
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
}

#[tokio::test]
async fn answers_failovers_and_failures_are_recorded_with_exact_costs() {
    let mock = Mock::start().await;
    let gw = start(&mock).await;

    let r = send(&gw, "req-ok", "ok", false).await;
    assert_eq!(r.status(), 200);
    let ok = record(&gw, "req-ok").await;
    assert_eq!(ok["outcome"], "success");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "ok");
    assert_eq!(ok["deployment"], "good");
    assert_eq!(ok["tags"], "team-a,batch");
    assert_eq!(ok["stream"], false);
    assert_eq!(
        (ok["prompt_tokens"].clone(), ok["completion_tokens"].clone()),
        (json!(3), json!(3))
    );
    assert!(close(ok["cost"].as_f64().unwrap(), cost(3.0, 3.0)), "{ok}");
    assert_eq!(ok["estimated"], false);
    assert!(ok["latency_ms"].as_f64().unwrap() > 0.0);
    let overhead = ok["overhead_ms"].as_f64().unwrap();
    assert!(
        overhead >= 0.0 && overhead <= ok["latency_ms"].as_f64().unwrap(),
        "{ok}"
    );
    assert_eq!(ok["attempts_detail"][0]["billed"], true);
    assert_eq!(ok["attempts_detail"][0]["estimated"], false);
    assert_eq!(ok["attempts_detail"][0]["adapter"], "openai");
    assert_eq!(ok["attempts_detail"][0]["status"], 200);

    // Cached prompt tokens at their own price.
    assert_eq!(send(&gw, "req-cached", "cached", false).await.status(), 200);
    let cached = record(&gw, "req-cached").await;
    let expected = (600.0 * INPUT + 400.0 * CACHED + 500.0 * OUTPUT) / 1e6;
    assert!(
        close(cached["cost"].as_f64().unwrap(), expected),
        "{cached}"
    );

    // A failover: two attempts, the first not billed.
    assert_eq!(
        send(&gw, "req-failover", "failover", false).await.status(),
        200
    );
    let fo = record(&gw, "req-failover").await;
    assert_eq!(fo["attempts"], 2);
    assert_eq!(fo["deployment"], "good");
    let attempts = fo["attempts_detail"].as_array().unwrap();
    assert_eq!(attempts[0]["deployment"], "broken");
    assert_eq!(attempts[0]["class"], "overloaded");
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[0]["billed"], false);
    assert_eq!(attempts[1]["class"], Value::Null);
    assert!(close(fo["cost"].as_f64().unwrap(), cost(3.0, 3.0)));

    // All failed: the caller's status, no deployment.
    assert_eq!(send(&gw, "req-dead", "dead", false).await.status(), 502);
    let dead = record(&gw, "req-dead").await;
    assert_eq!(dead["outcome"], "failed");
    assert_eq!(dead["status"], 502);
    assert_eq!(dead["deployment"], Value::Null);
    assert_eq!(dead["attempts_detail"][0]["class"], "overloaded");
    // Three faults in a row open its circuit: an event.
    for _ in 0..2 {
        send(&gw, "req-dead-again", "dead", false).await;
    }
    let opened = events(&gw, "circuit_open", 1).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["subject"], "broken-only");

    // Refused before routing: recorded too.
    assert_eq!(
        send(&gw, "req-unknown", "no-such-model", false)
            .await
            .status(),
        404
    );
    let unknown = record(&gw, "req-unknown").await;
    assert_eq!(unknown["status"], 404);
    assert_eq!(unknown["route"], "no-such-model");
    assert_eq!(unknown["attempts"], 0);

    // An answer the evaluator rejects was still billed by the provider.
    assert_eq!(send(&gw, "req-judged", "judged", false).await.status(), 200);
    let judged = record(&gw, "req-judged").await;
    let attempts = judged["attempts_detail"].as_array().unwrap();
    assert_eq!(attempts[0]["class"], "evaluator_rejected");
    assert_eq!(attempts[0]["billed"], true);
    assert!(
        close(judged["cost"].as_f64().unwrap(), 2.0 * cost(3.0, 3.0)),
        "{judged}"
    );
    assert_eq!(judged["verdict"]["pass"], true);
    // Each verdict is a quality score of its attempt.
    assert_eq!(
        (
            attempts[0]["evaluator"].clone(),
            attempts[0]["pass"].clone()
        ),
        (json!("basic"), json!(false)),
        "{judged}"
    );
    assert_eq!(attempts[0]["score"], 0.0, "{judged}");
    assert_eq!(
        (attempts[1]["score"].clone(), attempts[1]["pass"].clone()),
        (json!(1.0), json!(true)),
        "{judged}"
    );
    let (status, quality) = gw.admin("/admin/quality").await;
    assert_eq!(status, 200, "{quality}");
    let by_deployment: Vec<_> = quality["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].clone(),
                r["evaluations"].clone(),
                r["mean_score"].clone(),
                r["rejected"].clone(),
            )
        })
        .collect();
    assert_eq!(
        by_deployment,
        [
            (json!("empty"), json!(1), json!(0.0), json!(1)),
            (json!("good"), json!(1), json!(1.0), json!(0))
        ],
        "{quality}"
    );
    let (status, bad) = gw.admin("/admin/quality?group_by=colour").await;
    assert_eq!(status, 400);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("group_by"),
        "{bad}"
    );

    // Usage the upstream did not report is estimated and says so.
    assert_eq!(send(&gw, "req-silent", "silent", false).await.status(), 200);
    let silent = record(&gw, "req-silent").await;
    assert_eq!(silent["estimated"], true);
    assert_eq!(silent["attempts_detail"][0]["estimated"], true, "{silent}");
    // "hello there, how are you" (24 chars) → 6; "answer from no-usage" (20) → 5.
    assert_eq!(silent["prompt_tokens"], 6);
    assert_eq!(silent["completion_tokens"], 5);

    // The views that aggregate them.
    let (status, usage) = gw.admin("/admin/usage?route=failover").await;
    assert_eq!(status, 200, "{usage}");
    let rows = usage["data"].as_array().unwrap();
    let broken = rows.iter().find(|r| r["deployment"] == "broken").unwrap();
    assert_eq!(
        (broken["requests"].clone(), broken["failures"].clone()),
        (json!(1), json!(1))
    );
    let (_, costs) = gw.admin("/admin/costs?group_by=deployment").await;
    let good = costs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "good")
        .unwrap()
        .clone();
    // ok, failover and judged each had one billed attempt on "good".
    assert!(
        close(good["cost"].as_f64().unwrap(), 3.0 * cost(3.0, 3.0)),
        "{costs}"
    );
    let (status, page) = gw.admin("/admin/requests?limit=2&status=200").await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_offset"], 2);
    // Page by cursor: every request once, newest first, and a request
    // recorded between two pages neither repeats nor hides one (an offset
    // would shift by one).
    let (_, first) = gw.admin("/admin/requests?limit=2").await;
    assert_eq!(send(&gw, "between-pages", "ok", false).await.status(), 200);
    record(&gw, "between-pages").await;
    let mut seen: Vec<Value> = first["data"].as_array().unwrap().clone();
    let mut cursor = first["next_cursor"].as_str().unwrap().to_string();
    for pages in 0.. {
        assert!(pages < 50, "paging never ended: {seen:?}");
        let (status, page) = gw
            .admin(&format!("/admin/requests?limit=2&cursor={cursor}"))
            .await;
        assert_eq!(status, 200, "{page}");
        assert!(page["next_offset"].is_null(), "{page}");
        seen.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let (_, all) = gw.admin("/admin/requests?limit=1000").await;
    assert_eq!(all["data"][0]["id"], "between-pages", "{all}");
    let all: Vec<Value> = all["data"].as_array().unwrap()[1..].to_vec();
    assert!(all.len() >= 4, "{all:?}");
    let key = |r: &Value| (r["id"].clone(), r["ts_ms"].clone());
    assert_eq!(
        seen.iter().map(key).collect::<Vec<_>>(),
        all.iter().map(key).collect::<Vec<_>>()
    );
    // Filters narrow a page: a route, a deployment tried, an outcome.
    let (_, routed) = gw.admin("/admin/requests?route=failover").await;
    let routed = routed["data"].as_array().unwrap();
    assert!(!routed.is_empty() && routed.iter().all(|r| r["route"] == "failover"));
    let (_, on) = gw.admin("/admin/requests?deployment=broken").await;
    assert!(
        on["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["route"] == "failover"),
        "{on}"
    );
    for bad in ["cursor=12", "cursor=1.2&offset=1"] {
        let (status, body) = gw.admin(&format!("/admin/requests?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cursor"),
            "{body}"
        );
    }
    let (status, bad) = gw.admin("/admin/requests?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("since"),
        "{bad}"
    );
}

#[tokio::test]
async fn streams_are_recorded_completed_cut_and_abandoned() {
    let mock = Mock::start().await;
    let gw = start(&mock).await;

    let r = send(&gw, "s-ok", "ok", true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let ok = record(&gw, "s-ok").await;
    assert_eq!(ok["outcome"], "success");
    assert_eq!(ok["stream"], true);
    assert_eq!(ok["estimated"], false);
    assert!(close(ok["cost"].as_f64().unwrap(), cost(3.0, 3.0)), "{ok}");
    assert!(ok["ttft_ms"].as_f64().unwrap() > 0.0);
    assert!(ok["attempts_detail"][0]["ttft_ms"].as_f64().unwrap() > 0.0);

    // A caller that turned usage off still gets none, but the gateway
    // asked for it and accounts it.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "s-nousage")
        .body(
            json!({"model": "ok", "stream": true, "stream_options": {"include_usage": false},
            "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    assert_eq!(
        mock.bodies().last().unwrap()["stream_options"]["include_usage"],
        true
    );
    let quiet = record(&gw, "s-nousage").await;
    assert_eq!(quiet["estimated"], false);
    assert_eq!(quiet["completion_tokens"], 3);

    // Cut after commit: the client got an error event; the tokens it got
    // were billed, estimated.
    let text = send(&gw, "s-cut", "cut", true).await.text().await.unwrap();
    assert!(text.contains("stream_interrupted"), "{text}");
    let cut = record(&gw, "s-cut").await;
    assert_eq!(cut["outcome"], "stream_failed");
    let a = &cut["attempts_detail"][0];
    assert!(a["class"].is_string(), "{cut}");
    assert_eq!(a["billed"], true);
    assert_eq!(cut["estimated"], true);
    assert_eq!(a["estimated"], true);
    assert_eq!(a["completion_tokens"], 2); // "partial " → 8 chars

    // Without usage: estimated from what was streamed.
    send(&gw, "s-silent", "silent", true)
        .await
        .text()
        .await
        .unwrap();
    let silent = record(&gw, "s-silent").await;
    assert_eq!(silent["outcome"], "success");
    assert_eq!(silent["estimated"], true);
    assert_eq!(silent["completion_tokens"], 5); // "answer from no-usage"

    // The client leaves after the first chunk.
    let mut r = send(&gw, "s-gone", "slow", true).await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(r);
    let gone = record(&gw, "s-gone").await;
    assert_eq!(gone["outcome"], "client_gone");
    assert_eq!(gone["status"], 499);
    assert_eq!(gone["attempts_detail"][0]["class"], Value::Null);
    // The deployment was not blamed for the client leaving.
    let (_, deployments) = gw.admin("/admin/deployments").await;
    let slow = deployments["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "slowpoke")
        .unwrap()
        .clone();
    assert_eq!(slow["health"]["error_rate"], 0.0, "{slow}");
}

/// A whole answer whose download never ends was generated, so billed: its
/// attempt counts the prompt, estimated, whether the deployment's idle
/// timeout or the request's own deadline cut it. (It counted nothing.)
#[tokio::test]
async fn an_answer_cut_while_downloading_counts_its_prompt() {
    let mock = Mock::start().await;
    let mut stalled = deployment(&mock, "staller", "body-stall");
    stalled["timeouts"] = json!({"idle_ms": 300});
    let routes = json!({
        "stalled": {"deployments": [stalled]},
        "slow": {"deployments": [deployment(&mock, "slow-staller", "body-stall")]},
    });
    let gw = Gateway::start(routes, &["openai"], json!({}));
    // "hello there, how are you": 24 characters, 6 tokens.
    let prompt_cost = 6.0 * INPUT / 1e6;
    let r = send(&gw, "stalled-idle", "stalled", false).await;
    assert_eq!(r.status(), 502, "every deployment failed");
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "stalled-deadline")
        .header("x-switchyard-timeout-ms", "400")
        .body(
            json!({"model": "slow",
                "messages": [{"role": "user", "content": "hello there, how are you"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    for (id, class) in [
        ("stalled-idle", "timeout"),
        ("stalled-deadline", "deadline"),
    ] {
        let rec = record(&gw, id).await;
        let a = &rec["attempts_detail"][0];
        assert_eq!(a["class"], class, "{rec}");
        assert_eq!(a["status"], 200, "the upstream's status is kept: {rec}");
        assert_eq!(a["prompt_tokens"], 6, "{rec}");
        assert_eq!(a["completion_tokens"], 0, "{rec}");
        assert_eq!(a["estimated"], true, "{rec}");
        assert_eq!(a["billed"], true, "{rec}");
        assert!(close(a["cost"].as_f64().unwrap(), prompt_cost), "{rec}");
        assert!(close(rec["cost"].as_f64().unwrap(), prompt_cost), "{rec}");
    }
}

#[tokio::test]
async fn a_client_that_leaves_a_non_streamed_request_leaves_a_record() {
    let mock = Mock::start().await;
    let routes = json!({"hang": {"deployments": [
        {"name": "hanger", "adapter": "openai", "base_url": mock.url, "model": "hang"}]}});
    let gw = Gateway::start(routes, &["openai"], json!({}));
    let gone = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "left")
        .timeout(Duration::from_millis(300))
        .body(json!({"model": "hang", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await;
    assert!(gone.is_err(), "the mock hangs: the client times out");
    let rec = record(&gw, "left").await;
    assert_eq!(rec["outcome"], "client_gone");
    assert_eq!(rec["status"], 499);
    // The attempt under way when the client left is recorded, unfinished.
    assert_eq!(rec["attempts"], 1, "{rec}");
    let a = &rec["attempts_detail"][0];
    assert_eq!(a["deployment"], "hanger", "{rec}");
    assert!(a["latency_ms"].as_f64().unwrap() >= 250.0, "{rec}");
    assert!(rec["overhead_ms"].as_f64().unwrap() < 100.0, "{rec}");
}

#[tokio::test]
async fn the_admin_api_wants_its_token_and_the_store_can_be_off() {
    let mock = Mock::start().await;
    let routes = json!({"ok": {"deployments": [deployment(&mock, "good", "gpt")]}});
    let gw = Gateway::start_with_env(
        routes.clone(),
        &[("openai", "openai")],
        json!({"admin": {"token_env": "ADMIN_TOKEN"}}),
        &[("ADMIN_TOKEN", "s3cret-token")],
    );
    let (status, body) = gw.admin("/admin/requests").await;
    assert_eq!(status, 401, "{body}");
    let r = client()
        .get(format!("{}/admin/requests", gw.admin_url))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!gw.logs().contains("s3cret-token"));

    let off = Gateway::start(routes, &["openai"], json!({"store": {"enabled": false}}));
    assert_eq!(off.chat("ok", false).await.status(), 200);
    let (status, body) = off.admin("/admin/requests").await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("store.enabled"),
        "{body}"
    );
    assert!(!off.db_path().exists());
    assert_eq!(off.health().await["store"]["state"], "off");
}

#[tokio::test]
async fn switchyard_stats_reads_the_store_while_the_gateway_runs() {
    let mock = Mock::start().await;
    let gw = start(&mock).await;
    assert_eq!(send(&gw, "st-1", "ok", false).await.status(), 200);
    assert_eq!(send(&gw, "st-2", "failover", false).await.status(), 200);
    assert_eq!(send(&gw, "st-3", "dead", false).await.status(), 502);
    record(&gw, "st-3").await;
    let stats = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("stats")
            .arg("--config")
            .arg(gw.config_path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // A budget, as configured (read by `stats` from the config file).
    gw.rewrite_config(|c| {
        c["budgets"] = json!({"all-daily": {"period": "day", "limit_usd": 1000.0}});
    });
    let text = stats(&["--by", "deployment"]);
    assert!(
        text.contains("3 requests: 2 succeeded, 1 failed, 1 failed over"),
        "{text}"
    );
    assert!(
        text.contains("Budgets (current windows)") && text.contains("all-daily"),
        "{text}"
    );
    assert!(text.contains("Costs by deployment"), "{text}");
    assert!(text.contains("st-3"), "{text}");
    let json: Value = serde_json::from_str(&stats(&["--json", "--since", "1h"])).unwrap();
    assert_eq!(json["summary"]["requests"], 3);
    assert!(close(
        json["summary"]["cost"].as_f64().unwrap(),
        2.0 * cost(3.0, 3.0)
    ));
    let budget = &json["budgets"][0];
    assert_eq!(budget["name"], "all-daily", "{json}");
    assert!(
        close(budget["spent_usd"].as_f64().unwrap(), 2.0 * cost(3.0, 3.0)),
        "{json}"
    );
    // Narrowed as the admin API's filters narrow: one route, a time range
    // that has ended, one deployment.
    let json: Value = serde_json::from_str(&stats(&["--json", "--route", "ok"])).unwrap();
    assert_eq!(json["summary"]["requests"], 1, "{json}");
    assert!(
        json["usage"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["route"] == "ok"),
        "{json}"
    );
    let json: Value = serde_json::from_str(&stats(&["--json", "--until", "1000"])).unwrap();
    assert_eq!(json["summary"]["requests"], 0, "{json}");
    // Events have one subject: a deployment and a caller select either's.
    let one: Value = serde_json::from_str(&stats(&["--json", "--deployment", "broken"])).unwrap();
    let both: Value = serde_json::from_str(&stats(&[
        "--json",
        "--deployment",
        "broken",
        "--caller",
        "nobody",
    ]))
    .unwrap();
    let n = |v: &Value| v["recent_events"].as_array().unwrap().len();
    assert!(n(&one) > 0, "{one}");
    assert_eq!(n(&both), n(&one), "{both}");
    let text = stats(&["--route", "dead", "--by", "route"]);
    assert!(
        text.contains("Requests since 24h, route dead")
            && text.contains("1 requests: 0 succeeded, 1 failed"),
        "{text}"
    );
}

/// Events of `kind` (waits up to 10 s for at least `n`).
async fn events(gw: &Gateway, kind: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = gw.admin(&format!("/admin/events?type={kind}")).await;
        assert_eq!(status, 200, "{body}");
        let data = body["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= n || std::time::Instant::now() > deadline {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_monitor_raises_degradation_and_failover_alerts_once() {
    let mock = Mock::start().await;
    let routes = json!({
        "step": {"deployments": [deployment(&mock, "stepper", "step")]},
        "failover": {"strategy": "priority", "deployments": [
            deployment(&mock, "broken", "fail-500"), deployment(&mock, "good", "gpt")]},
    });
    let gw = Gateway::start(
        routes,
        &["openai", "priority"],
        json!({"monitor": {"window_s": 1, "baseline_s": 20, "degradation_ratio": 3,
            "degradation_for_s": 0.3, "min_samples": 5, "failover_rate": 0.3},
            // Keep trying the broken deployment first (no circuit).
            "health": {"trip_after": 1000}}),
    );
    // A steady baseline, then past the recent window: 40 ms answers.
    let until = std::time::Instant::now() + Duration::from_millis(1300);
    while std::time::Instant::now() < until {
        assert_eq!(gw.chat("step", false).await.status(), 200);
    }
    mock.set_delay("step", Duration::from_millis(40));
    for _ in 0..40 {
        assert_eq!(gw.chat("step", false).await.status(), 200);
    }
    let degraded = events(&gw, "degradation_alert", 1).await;
    // Once per window (1 s): the step lasted ~1.6 s.
    assert!(
        (1..=2).contains(&degraded.len()),
        "{degraded:?}\n{}",
        gw.logs()
    );
    if let [later, earlier] = &degraded[..] {
        let gap = later["ts_ms"].as_i64().unwrap() - earlier["ts_ms"].as_i64().unwrap();
        assert!(gap >= 1000, "{degraded:?}");
    }
    assert_eq!(degraded[0]["subject"], "stepper");
    assert!(
        degraded[0]["detail"]["ratio"].as_f64().unwrap() >= 3.0,
        "{degraded:?}"
    );
    gw.assert_log("degradation_alert");

    for _ in 0..10 {
        assert_eq!(gw.chat("failover", false).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let alerts = events(&gw, "failover_alert", 1).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["subject"], "broken");
    let failovers = events(&gw, "failover", 10).await;
    assert_eq!(failovers.len(), 10);
    assert_eq!(failovers[0]["detail"]["to"], "good");

    // The live figures behind them.
    let (_, deployments) = gw.admin("/admin/deployments").await;
    let stepper = deployments["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "stepper")
        .unwrap()
        .clone();
    assert!(
        stepper["stats"]["recent"]["latency_ms"]["p50"]
            .as_f64()
            .unwrap()
            >= 40.0,
        "{stepper}"
    );
    assert!(
        stepper["stats"]["baseline"]["attempts"].as_u64().unwrap() > 5,
        "{stepper}"
    );
}

/// The monitor's live figures reach strategies (WIT v0.2 `candidate.recent`):
/// a strategy routing by recent p50 latency measures each deployment once,
/// then sends everything to the fast one; failures show in `errors`.
#[tokio::test]
async fn strategies_see_the_monitors_live_figures() {
    let mock = Mock::start().await;
    mock.set_delay("lag", Duration::from_millis(30));
    let routes = json!({
        "fast": {"strategy": "fastest", "deployments": [
            deployment(&mock, "laggard", "lag"), deployment(&mock, "quick", "gpt")]},
        "flaky": {"strategy": "fastest", "deployments": [
            deployment(&mock, "broken", "fail-500"), {"name": "quick"}]},
    });
    let gw = Gateway::start(
        routes,
        &["openai", "fastest"],
        // Keep trying the broken deployment (no circuit).
        json!({"health": {"trip_after": 1000}}),
    );
    for _ in 0..10 {
        assert_eq!(gw.chat("fast", false).await.status(), 200);
    }
    // Configured order while neither has figures, then the unmeasured one,
    // then the faster by p50 every time.
    assert_eq!(mock.hits("lag"), 1, "{}", gw.logs());
    assert_eq!(mock.hits("gpt"), 9, "{}", gw.logs());
    assert!(gw.wait_for_log_count("fastest saw", 10, Duration::from_secs(5)));
    let seen = gw
        .log_lines()
        .into_iter()
        .rev()
        .find(|l| l.contains("fastest saw"))
        .unwrap();
    let figure = |deployment: &str, name: &str| -> f64 {
        let part = seen.split(&format!(" {deployment}: ")).nth(1).unwrap();
        let part = part.split(&format!("{name}=")).nth(1).unwrap();
        part.split([' ', ';']).next().unwrap().parse().unwrap()
    };
    assert_eq!(figure("laggard", "attempts"), 1.0, "{seen}");
    assert!(figure("laggard", "p50") >= 30.0, "{seen}");
    assert_eq!(figure("laggard", "success"), 1.0, "{seen}");
    assert!(figure("quick", "attempts") >= 1.0, "{seen}");
    assert!(figure("quick", "p50") < 30.0, "{seen}");
    assert!(figure("quick", "rpm") > 0.0, "{seen}");
    assert!(
        seen.contains(&format!("price={INPUT}/{OUTPUT}/{CACHED}")),
        "{seen}"
    );

    // Failures by class: the broken deployment is tried first (its p50 is 0:
    // no successes), fails with 500s, and the figures (refreshed at most
    // once a second) say so.
    for _ in 0..3 {
        assert_eq!(gw.chat("flaky", false).await.status(), 200);
    }
    assert!(gw.wait_for_log_count("fastest saw", 13, Duration::from_secs(5)));
    let seen = gw
        .log_lines()
        .into_iter()
        .rev()
        .find(|l| l.contains("fastest saw broken"))
        .unwrap();
    assert!(
        seen.contains("broken: attempts=") && seen.contains("overloaded=1 failed=1 "),
        "{seen}"
    );
}

#[tokio::test]
async fn budgets_alert_once_stop_hard_and_survive_a_restart() {
    let mock = Mock::start().await;
    let mut cheap = deployment(&mock, "cheap", "gpt");
    cheap["input_cost_per_1m"] = json!(0.1);
    cheap["output_cost_per_1m"] = json!(0.2);
    let routes = json!({
        "ok": {"deployments": [deployment(&mock, "good", "gpt")]},
        "two": {"strategy": "priority", "deployments": [deployment(&mock, "pricey", "gpt"), cheap]},
        "solo": {"deployments": [deployment(&mock, "lone", "gpt")]},
    });
    let one = cost(3.0, 3.0);
    let budgets = json!({"budgets": {
        "ok-daily": {"route": "ok", "period": "day", "limit_usd": 3.0 * one - 1e-9,
            "alert_at": [0.5, 1.0], "action": "reject"},
        "two-soft": {"route": "two", "period": "month", "limit_usd": 1e-9, "action": "cheapest"},
        "lone-hard": {"deployment": "lone", "period": "day", "limit_usd": 1e-9, "action": "reject"},
    }});
    let gw = Gateway::start(routes.clone(), &["openai", "priority"], budgets.clone());
    for i in 0..3 {
        let r = send(&gw, &format!("b-{i}"), "ok", false).await;
        assert_eq!(r.status(), 200, "request {i}");
        record(&gw, &format!("b-{i}")).await;
    }
    // Spent: the fourth is refused, naming the budget.
    let r = send(&gw, "b-3", "ok", false).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(body["error"]["budget"], "ok-daily");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ok-daily"),
        "{body}"
    );
    assert_eq!(send(&gw, "b-4", "ok", false).await.status(), 429);
    let alerts = events(&gw, "budget_alert", 2).await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let fractions: Vec<f64> = alerts
        .iter()
        .map(|a| a["detail"]["fraction"].as_f64().unwrap())
        .collect();
    assert!(
        fractions.contains(&0.5) && fractions.contains(&1.0),
        "{alerts:?}"
    );
    let (_, view) = gw.admin("/admin/budgets").await;
    let daily = view["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "ok-daily")
        .unwrap()
        .clone();
    assert!(
        close(daily["spent_usd"].as_f64().unwrap(), 3.0 * one),
        "{daily}"
    );
    assert_eq!(daily["reserved_usd"], 0.0);

    // A spent deployment budget, and no other deployment to serve: the
    // same 429, naming that budget (not a 503 "no candidate").
    assert_eq!(send(&gw, "d-0", "solo", false).await.status(), 200);
    record(&gw, "d-0").await;
    let r = send(&gw, "d-1", "solo", false).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    assert_eq!(body["error"]["budget"], "lone-hard", "{body}");

    // A spent `cheapest` budget: the route's cheapest deployment only.
    let first = send(&gw, "c-0", "two", false).await;
    assert_eq!(first.headers()["x-switchyard-deployment"], "pricey");
    record(&gw, "c-0").await;
    let next = send(&gw, "c-1", "two", false).await;
    assert_eq!(next.status(), 200);
    assert_eq!(next.headers()["x-switchyard-deployment"], "cheap");

    // A budget a reload adds starts from the spend on record: route `two`
    // has spent (c-0, c-1), so a hard stop below that refuses at once.
    record(&gw, "c-1").await;
    gw.rewrite_config(|c| {
        c["budgets"]["two-hard"] =
            json!({"route": "two", "period": "day", "limit_usd": 1e-9, "action": "reject"});
    });
    let r = client()
        .post(format!("{}/admin/reload", gw.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(&gw, "c-2", "two", false).await;
    assert_eq!(r.status(), 429);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["budget"], "two-hard", "{body}");

    // Another gateway on the same store starts with the day's spend.
    let mut again = budgets;
    again["store"] = json!({"path": gw.db_path()});
    let restarted = Gateway::start(routes, &["openai", "priority"], again);
    assert_eq!(send(&restarted, "b-5", "ok", false).await.status(), 429);
}

#[tokio::test]
async fn a_request_id_sent_twice_is_two_records_counted_once_each() {
    let mock = Mock::start().await;
    let gw = start(&mock).await;
    for _ in 0..2 {
        assert_eq!(send(&gw, "dup", "ok", false).await.status(), 200);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = gw.admin("/admin/requests?route=ok").await;
        if page["data"].as_array().is_some_and(|d| d.len() == 2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, usage) = gw.admin("/admin/usage?route=ok").await;
    assert_eq!(usage["data"][0]["requests"], 2, "{usage}");
    let (_, costs) = gw.admin("/admin/costs?group_by=route").await;
    assert!(
        close(costs["total_cost"].as_f64().unwrap(), 2.0 * cost(3.0, 3.0)),
        "{costs}"
    );
    let (_, one) = gw.admin("/admin/requests/dup").await;
    assert_eq!(one["attempts_detail"].as_array().unwrap().len(), 1, "{one}");
}

/// The record's attempt names the evaluator that failed on it, with why
/// and no score.
fn judged_by_a_failed_evaluator(rec: &Value) {
    let a = &rec["attempts_detail"][0];
    assert_eq!(a["evaluator"], "hog", "{rec}");
    assert!(a["score"].is_null(), "{rec}");
    assert!(
        a["reasons"]
            .as_str()
            .unwrap_or_default()
            .contains("evaluator failed"),
        "{rec}"
    );
}

/// An evaluator that fails accepts the answer, and the record says which
/// evaluator failed and why (no score).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_evaluator_is_recorded_without_a_score() {
    let mock = Mock::start().await;
    let routes = json!({"chat": {"evaluator": "hog", "deployments": [
        {"name": "only", "adapter": "openai", "base_url": mock.url, "model": "good"}]}});
    let gw = Gateway::start(
        routes,
        &["openai", "hog"],
        json!({"plugins": {"memory_limit_mib": 16}}),
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "judged-by-a-broken-evaluator")
        .body(json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rec = record(&gw, "judged-by-a-broken-evaluator").await;
    judged_by_a_failed_evaluator(&rec);
    // A streamed answer is judged once delivered: its evaluator's failure
    // is recorded the same way.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "streamed-and-judged-by-a-broken-evaluator")
        .body(
            json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("[DONE]"));
    let rec = record(&gw, "streamed-and-judged-by-a-broken-evaluator").await;
    judged_by_a_failed_evaluator(&rec);
    let (_, quality) = gw.admin("/admin/quality?group_by=evaluator").await;
    assert_eq!(quality["data"][0]["evaluator_failures"], 2, "{quality}");
    assert_eq!(quality["data"][0]["evaluations"], 0, "{quality}");
}
