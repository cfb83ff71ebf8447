//! The response cache: a hit answers without an upstream call (counted at
//! the mock), as JSON or as a replayed stream the official openai SDK reads
//! like a live one; TTL, LRU eviction, restarts, plugin swaps, the caller's
//! headers, and a broken store (a bypass, never a failed request).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, client, deployment, json_body, repo};
use crate::mock::Mock;

fn cached_route(mock: &Mock, ttl_s: u64) -> Value {
    // Priced: a dollar a prompt token, so what a hit saves shows.
    let mut d = deployment("good-dep", &mock.url, "good");
    d["input_cost_per_1m"] = json!(1_000_000.0);
    json!({"cached": {"deployments": [d], "cache": {"enabled": true, "ttl_s": ttl_s}}})
}

fn question(text: &str, temperature: f64) -> Value {
    json!({"model": "cached", "temperature": temperature,
        "messages": [{"role": "user", "content": text}]})
}

async fn ask(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> (String, Value) {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let cache = r
        .headers()
        .get("x-switchyard-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (cache, json_body(r).await)
}

/// Waits until the store holds `n` cache entries (written by its writer).
fn wait_for_disk_entries(gw: &Gateway, n: i64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let count = rusqlite::Connection::open(gw.db_path())
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM cache", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0);
        if count >= n {
            return;
        }
        assert!(Instant::now() < until, "the store never held {n} entries");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_answers_without_the_upstream_and_headers_steer_it() {
    let mock = Mock::start().await;
    let gw = Gateway::start(cached_route(&mock, 300), &["openai"], json!({}));
    let q = question("what is 2+2?", 0.0);

    let (c, first) = ask(&gw, &q, &[]).await;
    assert_eq!(c, "miss");
    assert_eq!(mock.hits("good"), 1);
    let (c, again) = ask(&gw, &q, &[]).await;
    assert_eq!(c, "hit");
    assert_eq!(mock.hits("good"), 1, "no upstream call");
    assert_eq!(again, first, "the same answer");
    // Member order, `stream: false` and `user` do not make another request.
    let same = json!({"messages": [{"content": "what is 2+2?", "role": "user"}],
        "user": "someone", "temperature": 0, "model": "cached", "stream": false});
    assert_eq!(ask(&gw, &same, &[]).await.0, "hit");

    // Not deterministic: not cached, unless the caller opts in.
    let warm = question("a poem", 0.9);
    assert_eq!(ask(&gw, &warm, &[]).await.0, "bypass");
    assert_eq!(ask(&gw, &warm, &[]).await.0, "bypass");
    assert_eq!(mock.hits("good"), 3);
    assert_eq!(
        ask(&gw, &warm, &[("x-switchyard-cache", "on")]).await.0,
        "miss"
    );
    assert_eq!(
        ask(&gw, &warm, &[("x-switchyard-cache", "on")]).await.0,
        "hit"
    );
    assert_eq!(mock.hits("good"), 4);

    // no-cache: asked again upstream (and stored); no-store: not stored.
    assert_eq!(
        ask(&gw, &q, &[("cache-control", "no-cache")]).await.0,
        "miss"
    );
    assert_eq!(mock.hits("good"), 5);
    let private = question("my secret", 0.0);
    assert_eq!(
        ask(&gw, &private, &[("cache-control", "no-store")]).await.0,
        "miss"
    );
    assert_eq!(
        ask(&gw, &private, &[]).await.0,
        "miss",
        "the no-store answer was not kept"
    );
    assert_eq!(
        ask(&gw, &private, &[("x-switchyard-cache", "bypass")])
            .await
            .0,
        "bypass"
    );
    assert_eq!(mock.hits("good"), 8);
    // An unknown directive is the caller's mistake, named.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-switchyard-cache", "forever")
        .body(q.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        json_body(r).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-switchyard-cache")
    );

    // The record says what the cache did, and what a hit saved.
    let until = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let (_, body) = gw.admin("/admin/requests?limit=50").await;
        let rows = body["data"].as_array().cloned().unwrap_or_default();
        if rows.len() >= 12 {
            break rows;
        }
        assert!(Instant::now() < until, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hits: Vec<&Value> = rows.iter().filter(|r| r["cache"] == "hit").collect();
    assert_eq!(hits.len(), 3, "{rows:?}");
    assert!(
        hits.iter()
            .all(|r| r["attempts"] == 0 && r["deployment"] == "good-dep")
    );
    // A hit costs nothing and saved what the answer had cost.
    let first_cost = rows.last().unwrap()["cost"].as_f64().unwrap();
    assert!(first_cost > 0.0);
    for h in &hits {
        assert_eq!(h["saved_usd"].as_f64(), Some(first_cost), "{h}");
        assert!(h["cost"].is_null());
    }
    assert!(rows.iter().any(|r| r["cache"] == "bypass"));
    // The metrics count it.
    let metrics = gw.metrics_text().await;
    assert!(
        metrics.contains(r#"switchyard_cache_requests_total{result="hit",route="cached"} 3"#),
        "{metrics}"
    );
    // A route that does not cache says nothing.
    let gw2 = Gateway::start(
        json!({"plain": {"deployments": [deployment("d", &mock.url, "good")]}}),
        &["openai"],
        json!({}),
    );
    let r = gw2.chat("plain", false).await;
    assert!(r.headers().get("x-switchyard-cache").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_routes_own_deployments_answers_are_stored() {
    let mock = Mock::start().await;
    // The cached route's one deployment fails: its fallback route answers,
    // and that answer is not the cached route's to reuse.
    let gw = Gateway::start(
        json!({
            "cached": {"deployments": [deployment("broken", &mock.url, "fail-500")],
                "fallbacks": ["backup"], "cache": {"enabled": true}},
            "backup": {"deployments": [deployment("backup-dep", &mock.url, "good")]},
        }),
        &["openai"],
        json!({}),
    );
    let q = question("who answers?", 0.0);
    for _ in 0..2 {
        let (c, body) = ask(&gw, &q, &[]).await;
        assert_eq!(c, "miss");
        assert!(body["choices"][0]["message"]["content"].is_string());
    }
    assert_eq!(mock.hits("good"), 2, "asked again: nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_and_the_least_recently_used_go_first() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        cached_route(&mock, 1),
        &["openai"],
        json!({"cache": {"max_entries": 2, "persist": false}}),
    );
    let (a, b, c) = (question("a", 0.0), question("b", 0.0), question("c", 0.0));
    assert_eq!(ask(&gw, &a, &[]).await.0, "miss");
    assert_eq!(ask(&gw, &b, &[]).await.0, "miss");
    assert_eq!(ask(&gw, &a, &[]).await.0, "hit", "a is now the most recent");
    assert_eq!(ask(&gw, &c, &[]).await.0, "miss");
    assert_eq!(ask(&gw, &b, &[]).await.0, "miss", "b was evicted");
    assert_eq!(ask(&gw, &c, &[]).await.0, "hit");
    // Past the TTL: asked again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ask(&gw, &c, &[]).await.0, "miss");

    // By bytes: room for one answer only (an entry is its body, its
    // deployment's name and 128 bytes of bookkeeping).
    let size = json_body(gw.post(a.clone()).await).await.to_string().len() + 8 + 128;
    let mib = size as f64 * 1.5 / (1024.0 * 1024.0);
    let gw = Gateway::start(
        cached_route(&mock, 300),
        &["openai"],
        json!({"cache": {"max_mib": mib, "persist": false}}),
    );
    assert_eq!(ask(&gw, &a, &[]).await.0, "miss");
    assert_eq!(ask(&gw, &a, &[]).await.0, "hit");
    assert_eq!(ask(&gw, &b, &[]).await.0, "miss");
    assert_eq!(ask(&gw, &a, &[]).await.0, "miss", "a made room for b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_survive_a_restart_and_a_plugin_swap_invalidates_them() {
    let mock = Mock::start().await;
    let mut gw = Gateway::start(cached_route(&mock, 300), &["openai"], json!({}));
    let q = question("persist me", 0.0);
    assert_eq!(ask(&gw, &q, &[]).await.0, "miss");
    wait_for_disk_entries(&gw, 1);
    gw.restart();
    let (c, _) = ask(&gw, &q, &[]).await;
    assert_eq!(c, "hit", "read back from the store: {}", gw.logs());
    assert_eq!(mock.hits("good"), 1);

    // The adapter replaced by other bytes (a custom section appended: the
    // same code, another file): every key of its routes changes.
    let file = gw.plugin_dir().join("openai.wasm");
    let mut bytes = std::fs::read(&file).unwrap();
    let name = b"swapped";
    bytes.extend_from_slice(&[0, (name.len() + 1) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    let tmp = gw.plugin_dir().join(".openai.wasm.partial");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert!(
        gw.wait_for_log_count("plugin loaded", 2, Duration::from_secs(20)),
        "the swapped adapter was never loaded: {}",
        gw.logs()
    );
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (c, _) = ask(&gw, &q, &[]).await;
        if c == "miss" {
            break;
        }
        assert!(
            Instant::now() < until,
            "the swap never invalidated: {}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mock.hits("good"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_stream_reads_like_a_live_one_in_the_openai_sdk() {
    let mock = Mock::start().await;
    let gw = Gateway::start(cached_route(&mock, 300), &["openai"], json!({}));
    let python = repo().join("target/py-venv/bin/python");
    assert!(python.exists(), "run scripts/setup (the test venv)");
    let script = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
out = []
for _ in range(2):
    raw = client.chat.completions.with_raw_response.create(
        model="cached", temperature=0, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream me"}])
    chunks = [c.model_dump() for c in raw.parse()]
    out.append({"cache": raw.headers.get("x-switchyard-cache"), "chunks": chunks})
print(json.dumps(out))
"#;
    let url = gw.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.logs()
    );
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["cache"], "miss");
    assert_eq!(runs[1]["cache"], "hit");
    assert_eq!(mock.hits("good"), 1, "the replay made no upstream call");
    let summary = |run: &Value| {
        let chunks = run["chunks"].as_array().unwrap();
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        let finish: Vec<Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0].get("finish_reason"))
            .filter(|f| !f.is_null())
            .cloned()
            .collect();
        let roles = chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["role"] == "assistant")
            .count();
        let usage = chunks.last().unwrap()["usage"].clone();
        let ids: std::collections::HashSet<String> = chunks
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
        (
            text,
            finish,
            roles,
            usage["completion_tokens"].clone(),
            ids.len(),
        )
    };
    let live = summary(&runs[0]);
    let replayed = summary(&runs[1]);
    assert!(!live.0.is_empty());
    assert_eq!(live, replayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_store_bypasses_the_cache_and_fails_no_request() {
    let mock = Mock::start().await;
    let mut gw = Gateway::start(cached_route(&mock, 300), &["openai"], json!({}));
    let q = question("on disk only", 0.0);
    assert_eq!(ask(&gw, &q, &[]).await.0, "miss");
    wait_for_disk_entries(&gw, 1);
    gw.restart();
    // Only the store has it now; its files are then overwritten with junk
    // (the database and its write-ahead log: pages are read from either).
    let db = gw.db_path();
    for suffix in ["", "-wal"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        let len = std::fs::metadata(&file).map_or(0, |m| m.len() as usize);
        std::fs::write(&file, vec![0x5a; len.max(8192)]).unwrap();
    }
    for _ in 0..3 {
        let (c, body) = ask(&gw, &q, &[]).await;
        assert!(c == "bypass" || c == "miss", "{c}");
        assert!(body["choices"][0]["message"]["content"].is_string());
    }
    assert!(mock.hits("good") >= 2, "answered upstream");
    assert!(
        gw.wait_for_log("response cache bypassed", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
}
