//! The dashboard in a real browser: the gateway (with an admin token) in
//! front of the mock upstream, a scripted traffic mix (successes, a
//! failover, an error), then `tests/ui/dashboard.mjs` drives Debian's
//! Chromium through playwright-core (both installed by scripts/setup)
//! against `/ui`: login, overview numbers against the admin API, a
//! request's attempts, the request log's filters, a deployment going down
//! and coming back, a plugin uploaded and rolled back. Screenshots of every
//! page land in `target/ui-screenshots/`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, client, plugin, refused_port, repo};
use crate::mock::Mock;

const TOKEN: &str = "ui-test-token";

/// Admin `GET` with the token.
async fn admin(gw: &Gateway, path: &str) -> Value {
    let r = client()
        .get(format!("{}{path}", gw.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    crate::harness::json_body(r).await
}

async fn chat(gw: &Gateway, model: &str) -> u16 {
    gw.post(json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]}))
        .await
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser() {
    let node_modules = repo().join("tests/ui/node_modules/playwright-core");
    assert!(
        node_modules.exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser test needs playwright-core (npm ci in tests/ui) and Debian's chromium: run scripts/setup"
    );
    let mock = Mock::start().await;
    let priced = |model: &str| {
        json!({"adapter": "openai", "base_url": mock.url, "model": model,
               "input_cost_per_1m": 1000.0, "output_cost_per_1m": 2000.0})
    };
    // Limits and a key, for the deployments page to show.
    let mut primary = priced("good");
    primary["rpm"] = json!(600);
    primary["tpm"] = json!(100_000);
    let mut backup = priced("good-too");
    backup["api_key_env"] = json!("UI_BACKUP_KEY");
    let gw = Gateway::start_with_env(
        json!({
            "chat": {"strategy": "priority", "evaluator": "basic", "deployments": [
                {"name": "primary", "priority": 0}, {"name": "backup", "priority": 1}]},
            "flaky": {"strategy": "priority", "deployments": [
                {"name": "broken", "priority": 0}, {"name": "backup", "priority": 1}]},
            "lonely": {"strategy": "priority", "deployments": ["broken"]},
        }),
        &[
            ("openai", "openai"),
            ("priority", "priority"),
            ("basic", "basic"),
        ],
        json!({
            "admin": {"token_env": "UI_ADMIN_TOKEN"},
            "health": {"trip_after": 3, "cooldown_ms": 2000},
            "budgets": {"daily": {"period": "day", "limit_usd": 1.0}},
            "deployments": {
                "primary": primary,
                "backup": backup,
                "broken": priced("fail-500"),
            },
        }),
        &[
            ("UI_ADMIN_TOKEN", TOKEN),
            ("UI_BACKUP_KEY", "sk-test-not-shown"),
        ],
    );

    // The traffic mix: six answered at once, two failed over, one error.
    for _ in 0..6 {
        assert_eq!(chat(&gw, "chat").await, 200);
    }
    for _ in 0..2 {
        assert_eq!(chat(&gw, "flaky").await, 200);
    }
    assert_eq!(chat(&gw, "lonely").await, 502);
    // Records reach the store through its writer thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin(&gw, "/admin/requests?limit=100").await["data"]
        .as_array()
        .map_or(0, Vec::len)
        < 9
    {
        assert!(Instant::now() < deadline, "the store never held 9 requests");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let shots = repo().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let started = Instant::now();
    let out = Command::new("node")
        .arg(repo().join("tests/ui/dashboard.mjs"))
        .env("SWITCHYARD_ADMIN_URL", &gw.admin_url)
        .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
        .env("SWITCHYARD_API_URL", &gw.url)
        .env("SWITCHYARD_CONFIG", gw.config_path())
        .env("SWITCHYARD_REFUSED_PORT", refused_port().to_string())
        .env("SWITCHYARD_UPLOAD_A", plugin("priority"))
        .env("SWITCHYARD_UPLOAD_B", plugin("round-robin"))
        .env("SWITCHYARD_SCREENSHOTS", &shots)
        .env(
            "SWITCHYARD_EXPECT",
            r#"{"requests":9,"errors":1,"failed_over":2}"#,
        )
        .output()
        .expect("run node tests/ui/dashboard.mjs");
    let text = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "dashboard.mjs ran {:.1} s\n{text}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{text}\n--- gateway\n{}",
        out.status,
        gw.logs()
    );
}

/// The upload and rollback endpoints the plugins page uses, without a
/// browser: every refusal names its reason and leaves the folder as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_uploads_are_checked_written_whole_and_rolled_back() {
    let mock = Mock::start().await;
    let gw = Gateway::start_with_env(
        json!({"chat": {"strategy": "priority", "deployments": [
            {"name": "a", "adapter": "openai", "base_url": mock.url, "model": "good"}]}}),
        &[("openai", "openai"), ("priority", "priority")],
        json!({"admin": {"token_env": "UI_ADMIN_TOKEN"}}),
        &[("UI_ADMIN_TOKEN", TOKEN)],
    );
    let put = |file: &str, body: Vec<u8>| {
        client()
            .put(format!("{}/admin/plugins/{file}", gw.admin_url))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
    };
    let status_and_message = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body = crate::harness::json_body(r).await;
        (status, body)
    };
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(gw.plugin_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = files();
    let bytes = |name: &str| std::fs::read(plugin(name)).unwrap();

    // The token is needed, as for every admin call.
    let r = client()
        .put(format!("{}/admin/plugins/canary.wasm", gw.admin_url))
        .body(bytes("priority"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Refusals: a bad name, not a plugin, the wrong kind for the config,
    // too large, another site's page. Nothing is written.
    let (s, b) =
        status_and_message(put("..%2Fescape.wasm", bytes("priority")).await.unwrap()).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a plugin file name"),
        "{b}"
    );
    let (s, b) =
        status_and_message(put("junk.wasm", b"not a plugin".to_vec()).await.unwrap()).await;
    assert_eq!(s, 422, "{b}");
    let m = b["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("would be refused") && m.contains("no wasm header"),
        "{m}"
    );
    let (s, b) = status_and_message(put("priority.wasm", bytes("basic")).await.unwrap()).await;
    assert_eq!(
        s, 422,
        "an evaluator where the config wants a strategy: {b}"
    );
    let (s, b) = status_and_message(put("big.wasm", vec![0; 65 << 20]).await.unwrap()).await;
    assert_eq!(s, 413, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("64 MiB"),
        "{b}"
    );
    let r = client()
        .put(format!("{}/admin/plugins/canary.wasm", gw.admin_url))
        .bearer_auth(TOKEN)
        .header("origin", "https://elsewhere.example")
        .body(bytes("priority"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(files(), before, "no refused upload left anything behind");

    // Added, replaced (the old version kept aside, not loaded), rolled back.
    let (s, b) = status_and_message(put("canary.wasm", bytes("priority")).await.unwrap()).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["plugin"]["state"], "active", "{b}");
    let first = b["plugin"]["hash"].as_str().unwrap().to_string();
    let (s, b) = status_and_message(put("canary.wasm", bytes("round-robin")).await.unwrap()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["replaced"], true);
    assert_ne!(b["plugin"]["hash"], first.as_str());
    assert_eq!(b["plugin"]["previous_hash"], first.as_str());
    let previous = gw.plugin_dir().join(".previous/canary.wasm");
    assert!(previous.exists());
    let mut expected = before.clone();
    expected.extend([".previous".to_string(), "canary.wasm".to_string()]);
    expected.sort();
    assert_eq!(files(), expected, "no temp files");
    // A loaded strategy's id takes no evaluator, named by the config or not.
    let (s, b) = status_and_message(put("canary.wasm", bytes("basic")).await.unwrap()).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(files(), expected, "nothing written");
    let listed = admin(&gw, "/admin/plugins").await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["canary", "openai", "priority"],
        "the kept version is not loaded"
    );

    let rollback = |file: &str| {
        client()
            .post(format!("{}/admin/plugins/{file}/rollback", gw.admin_url))
            .bearer_auth(TOKEN)
            .send()
    };
    let (s, b) = status_and_message(rollback("canary.wasm").await.unwrap()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["plugin"]["hash"], first.as_str());
    assert_eq!(b["plugin"]["state"], "active");
    let (s, b) = status_and_message(rollback("priority.wasm").await.unwrap()).await;
    assert_eq!(s, 404, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no previous version"),
        "{b}"
    );
    // The gateway still routes through the untouched strategy.
    assert_eq!(chat(&gw, "chat").await, 200);
}

/// The dashboard is the admin listener's alone: its files without the
/// token (they hold no data) under a strict CSP, every data call with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_on_the_admin_listener_only() {
    let mock = Mock::start().await;
    let gw = Gateway::start_with_env(
        json!({"chat": {"deployments": [
            {"name": "a", "adapter": "openai", "base_url": mock.url, "model": "good"}]}}),
        &[("openai", "openai")],
        json!({"admin": {"token_env": "UI_ADMIN_TOKEN"}}),
        &[("UI_ADMIN_TOKEN", TOKEN)],
    );
    let get = |url: String| client().get(url).send();
    assert_eq!(get(format!("{}/ui", gw.url)).await.unwrap().status(), 404);

    let page = get(format!("{}/ui", gw.admin_url)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let script = get(format!("{}/ui/app.js", gw.admin_url)).await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let auth =
        crate::harness::json_body(get(format!("{}/ui/auth.json", gw.admin_url)).await.unwrap())
            .await;
    assert_eq!(auth["token_required"], true);

    let r = get(format!("{}/admin/series", gw.admin_url)).await.unwrap();
    assert_eq!(r.status(), 401, "data needs the token");
    let series = admin(&gw, "/admin/series?window=24h").await;
    assert_eq!(series["window"], "24h");
    assert_eq!(series["buckets"].as_array().unwrap().len(), 96);
    let r = client()
        .get(format!("{}/admin/series?window=2h", gw.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = crate::harness::json_body(r).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1h, 24h, 7d"),
        "{body}"
    );
    let routes = admin(&gw, "/admin/routes").await;
    assert_eq!(routes["data"][0]["name"], "chat");
    assert_eq!(routes["data"][0]["deployments"][0]["name"], "a");
}

/// Without a token, only loopback names reach the admin API: a page whose
/// own name resolves to 127.0.0.1 (DNS rebinding) gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_names_are_answered() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        json!({"chat": {"deployments": [
            {"name": "a", "adapter": "openai", "base_url": mock.url, "model": "good"}]}}),
        &["openai"],
        json!({}),
    );
    let port = gw.admin_url.rsplit(':').next().unwrap().to_string();
    for (host, status) in [
        (format!("127.0.0.1:{port}"), 200),
        (format!("localhost:{port}"), 200),
        (format!("rebound.example:{port}"), 403),
    ] {
        let r = client()
            .get(format!("{}/admin/deployments", gw.admin_url))
            .header("host", host.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{host}");
    }
}
