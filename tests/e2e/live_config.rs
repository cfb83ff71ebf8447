//! The config as a live service: reloads while serving, refused configs,
//! deployments defined once, fallbacks, wildcards and environment overlays.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, assert_done, client, json_body, sse_events};
use crate::mock::Mock;

const PLUGINS: &[(&str, &str)] = &[("priority", "priority"), ("openai", "openai")];

fn def(base_url: &str, model: &str) -> Value {
    json!({"adapter": "openai", "base_url": base_url, "model": model})
}

/// Starts a gateway whose routes list the top-level `deployments`.
fn start(deployments: Value, routes: Value, env: &[(&str, &str)]) -> Gateway {
    Gateway::start_with_env(routes, PLUGINS, json!({"deployments": deployments}), env)
}

/// Polls `model` until it answers 200 or `within` passes; the time it took.
async fn answers_within(gateway: &Gateway, model: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if gateway.chat(model, false).await.status() == 200 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_under_load_drops_nothing_and_streams_finish_on_the_old_config() {
    let mock = Mock::start().await;
    let gateway = start(
        json!({"a": def(&mock.url, "gpt"), "slow": def(&mock.url, "slow-stream")}),
        json!({"chat": {"deployments": ["a"]}, "long": {"deployments": ["slow"]}}),
        &[],
    );
    // A client looping non-streamed requests for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let looping = {
        let (url, stop, ok, failed) = (
            gateway.url.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = client()
                    .post(format!("{url}/v1/chat/completions"))
                    .body(body.to_string())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    // A stream of ~2 s, begun before the reload.
    let stream = gateway.chat("long", true).await;
    assert_eq!(stream.status(), 200);
    // The new config: a route added, the long route's deployment removed.
    let written = Instant::now();
    gateway.rewrite_config(|c| {
        c["deployments"]["b"] = def(&mock.url, "other");
        c["routes"]["new"] = json!({"deployments": ["b"]});
        c["routes"]["long"] = json!({"deployments": ["a"]});
        c["deployments"].as_object_mut().unwrap().remove("slow");
    });
    let took = answers_within(&gateway, "new", Duration::from_secs(3))
        .await
        .expect("the new route answers");
    assert!(
        took < Duration::from_secs(1),
        "new route answered {took:?} after the file landed ({:?} since written)",
        written.elapsed()
    );
    gateway.assert_log("config reloaded: routes added: new");
    // The stream began on the old config and finishes on it.
    let events = sse_events(stream).await;
    assert_done(&events);
    assert_eq!(events.len(), 5, "{events:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    looping.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "{} requests",
        ok.load(Ordering::Relaxed)
    );
    // The long route now goes to "a".
    let r = gateway.chat("long", false).await;
    assert_eq!(json_body(r).await["model"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_refused_and_the_running_one_keeps_serving() {
    let mock = Mock::start().await;
    let gateway = start(
        json!({"a": def(&mock.url, "gpt")}),
        json!({"chat": {"deployments": ["a"]}}),
        &[],
    );
    gateway.rewrite_config(|c| c["deployments"]["a"]["base_url"] = json!(42));
    gateway.assert_log("config reload refused");
    gateway.assert_log("/deployments/a/base_url");
    gateway.assert_log("the running config keeps serving");
    assert_eq!(gateway.chat("chat", false).await.status(), 200);
    // Named twice through the admin endpoint: a 422 with every problem.
    let r = client()
        .post(format!("{}/admin/reload", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body = json_body(r).await;
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .contains("/deployments/a/base_url"),
        "{body}"
    );
    // Fixed: the admin endpoint reloads it.
    gateway.rewrite_config(|c| c["deployments"]["a"]["base_url"] = json!(mock.url));
    let r = client()
        .post(format!("{}/admin/reload", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await["status"], "reloaded");
    // A browser on the same machine is refused: a page of another site, and
    // one whose own name resolves to 127.0.0.1 (DNS rebinding).
    for (name, value, says) in [
        (
            "origin",
            "http://evil.example",
            "Origin http://evil.example",
        ),
        ("host", "evil.example", "loopback names only"),
    ] {
        let r = client()
            .post(format!("{}/admin/reload", gateway.url))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        let body = json_body(r).await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    // Reading the file for a reload is not a change that reloads again.
    let count = || {
        gateway
            .log_lines()
            .iter()
            .filter(|l| l.contains("config reloaded"))
            .count()
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let settled = count();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(count(), settled, "reloads keep coming:\n{}", gateway.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_and_a_timeout_change_take_effect_on_the_next_request() {
    let mock = Mock::start().await;
    let gateway = start(
        json!({
            "a": {"adapter": "openai", "base_url": mock.url, "model": "gpt", "api_key_env": "SY_KEY_ONE"},
            "slow": {"adapter": "openai", "base_url": mock.url, "model": "hang", "timeouts": {"first_byte_ms": 1500}},
        }),
        json!({"chat": {"deployments": ["a"]}, "hang": {"deployments": ["slow"]}}),
        &[],
    );
    std::fs::write(
        gateway.dir.path().join(".env"),
        "SY_KEY_ONE=sk-first-abc\nSY_KEY_TWO=sk-second-xyz\n",
    )
    .unwrap();
    // The config's text did not change; the key it names did.
    gateway.assert_log("config reloaded: keys changed: a");
    assert_eq!(gateway.chat("chat", false).await.status(), 200);
    let auth = |m: &Mock| {
        m.requests()
            .last()
            .and_then(|r| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == "authorization")
                    .cloned()
            })
            .map(|(_, v)| v)
    };
    assert_eq!(auth(&mock).as_deref(), Some("Bearer sk-first-abc"));
    gateway.rewrite_config(|c| {
        c["deployments"]["a"]["api_key_env"] = json!("SY_KEY_TWO");
        c["deployments"]["slow"]["timeouts"]["first_byte_ms"] = json!(200);
    });
    assert!(
        gateway.wait_for_log("deployments changed: a, slow", Duration::from_secs(3)),
        "{}",
        gateway.logs()
    );
    assert_eq!(gateway.chat("chat", false).await.status(), 200);
    assert_eq!(auth(&mock).as_deref(), Some("Bearer sk-second-xyz"));
    let started = Instant::now();
    let r = gateway.chat("hang", false).await;
    assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    // The key never reaches the log.
    assert!(
        !gateway.logs().contains("sk-second-xyz"),
        "{}",
        gateway.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_deployment_has_one_circuit_for_all_its_routes() {
    let mock = Mock::start().await;
    let gateway = start(
        json!({"shared": def(&mock.url, "flaky"), "backup": def(&mock.url, "gpt")}),
        json!({
            "x": {"strategy": "priority", "deployments": [{"name": "shared", "priority": 0}, {"name": "backup", "priority": 1}]},
            "y": {"strategy": "priority", "deployments": [{"name": "shared", "priority": 0}, {"name": "backup", "priority": 1}]},
        }),
        &[],
    );
    mock.set_failing("flaky", true);
    // Three faults through x open the shared circuit (trip_after 3).
    for _ in 0..3 {
        assert_eq!(gateway.chat("x", false).await.status(), 200);
    }
    let before = mock.hits("flaky");
    assert_eq!(before, 3);
    let r = gateway.chat("y", false).await;
    assert_eq!(r.headers()["x-switchyard-attempts"], "1");
    assert_eq!(json_body(r).await["model"], "backup");
    assert_eq!(mock.hits("flaky"), before, "y tried the open circuit first");
    // The circuit survives a reload (here: a new route)...
    gateway.rewrite_config(|c| c["routes"]["z"] = json!({"deployments": ["backup"]}));
    answers_within(&gateway, "z", Duration::from_secs(3))
        .await
        .expect("reloaded");
    let r = gateway.chat("y", false).await;
    assert_eq!(json_body(r).await["model"], "backup");
    assert_eq!(mock.hits("flaky"), before, "the reload reset the circuit");
    // ...but not a change of the upstream it stands for.
    mock.set_failing("flaky-2", false);
    gateway.rewrite_config(|c| c["deployments"]["shared"]["model"] = json!("flaky-2"));
    assert!(
        gateway.wait_for_log("deployments changed: shared", Duration::from_secs(3)),
        "{}",
        gateway.logs()
    );
    let r = gateway.chat("y", false).await;
    assert_eq!(json_body(r).await["model"], "shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_fall_back_across_adapters_and_requests_name_their_own_fallbacks() {
    let mock = Mock::start().await;
    let gateway = Gateway::start_with_env(
        json!({
            "primary": {"deployments": ["broken"], "fallbacks": ["secondary"]},
            "secondary": {"deployments": ["other"]},
            "third": {"deployments": ["third"]},
        }),
        &[("openai", "openai"), ("compat", "openai")],
        json!({"deployments": {
            "broken": def(&mock.url, "fail-500"),
            "other": {"adapter": "compat", "base_url": mock.url, "model": "gpt"},
            "third": def(&mock.url, "third-model"),
        }}),
        &[],
    );
    let r = gateway.chat("primary", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-attempts"], "2");
    assert_eq!(json_body(r).await["model"], "other");
    gateway.assert_log("falling back to another route");
    // The caller's own list replaces the route's, and is not sent upstream.
    let r = gateway
        .post(json!({"model": "primary", "fallbacks": ["third"],
            "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await["model"], "third");
    assert!(mock.bodies().iter().all(|b| b.get("fallbacks").is_none()));
    let r = gateway
        .post(json!({"model": "primary", "fallbacks": ["nowhere"],
            "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 400);
    let body = json_body(r).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fallbacks[0]"),
        "{body}"
    );
    // A deployment listed by the route and its fallback is tried once.
    let shared = Gateway::start_with_env(
        json!({"p": {"deployments": ["broken"], "fallbacks": ["s"]}, "s": {"deployments": ["broken", "ok"]}}),
        &[("openai", "openai")],
        json!({"deployments": {"broken": def(&mock.url, "fail-500"), "ok": def(&mock.url, "gpt")}}),
        &[],
    );
    let before = mock.hits("fail-500");
    let r = shared.chat("p", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-attempts"], "2");
    assert_eq!(mock.hits("fail-500"), before + 1);
    // A caller's bad request is not retried on another route.
    let bad = Gateway::start_with_env(
        json!({"p": {"deployments": ["bad"], "fallbacks": ["s"]}, "s": {"deployments": ["ok"]}}),
        &[("openai", "openai")],
        json!({"deployments": {"bad": def(&mock.url, "bad-request"), "ok": def(&mock.url, "gpt")}}),
        &[],
    );
    assert_eq!(bad.chat("p", false).await.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_routes_serve_a_prefix_and_exact_names_win() {
    let mock = Mock::start().await;
    let gateway = start(
        json!({"any": def(&mock.url, "*"), "pinned": def(&mock.url, "pinned-model"), "fixed": def(&mock.url, "exact")}),
        json!({
            "openai/*": {"deployments": ["any"]},
            "openai/special/*": {"deployments": ["pinned"]},
            "openai/gpt-exact": {"deployments": ["fixed"]},
        }),
        &[],
    );
    assert_eq!(gateway.chat("openai/gpt-x", false).await.status(), 200);
    assert_eq!(mock.hits("gpt-x"), 1);
    assert_eq!(gateway.chat("openai/special/y", false).await.status(), 200);
    assert_eq!(mock.hits("pinned-model"), 1);
    assert_eq!(gateway.chat("openai/gpt-exact", false).await.status(), 200);
    assert_eq!(mock.hits("exact"), 1);
    assert_eq!(gateway.chat("openai/", false).await.status(), 404);
    assert_eq!(gateway.chat("openai/../admin", false).await.status(), 400);
    // A fallback through the same wildcard route, to another model.
    mock.set_failing("gpt-down", true);
    let r = gateway
        .post(
            json!({"model": "openai/gpt-down", "fallbacks": ["openai/gpt-up"],
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!((mock.hits("gpt-down"), mock.hits("gpt-up")), (1, 1));
    assert_eq!(gateway.chat("anthropic/x", false).await.status(), 404);
    let models = json_body(
        client()
            .get(format!("{}/v1/models", gateway.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(models["data"].as_array().unwrap().len(), 1, "{models}");
    assert_eq!(
        models["open_prefixes"],
        json!(["openai/", "openai/special/"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlays_variables_and_dotenv_resolve() {
    let mock = Mock::start().await;
    // Written before the start: the base names its upstream by variable.
    let gateway = Gateway::start_with_env(
        json!({"chat": {"deployments": ["a"]}}),
        PLUGINS,
        json!({
            "deployments": {
                "a": def("${SY_TEST_UPSTREAM:-http://127.0.0.1:9/v1}", "gpt"),
                "n": def("${SY_TEST_UPSTREAM}", "${SY_TEST_NUMERIC}"),
            },
            "server": {"max_body_bytes": "${SY_TEST_MAX_BODY}"},
        }),
        &[
            ("SY_TEST_UPSTREAM", &mock.url),
            ("SY_TEST_NUMERIC", "1234"),
            ("SY_TEST_MAX_BODY", "65536"),
            ("SY_TEST_SECRET", "hunter2-secret"),
        ],
    );
    assert_eq!(gateway.chat("chat", false).await.status(), 200);
    assert_eq!(mock.hits("gpt"), 1);
    // A number where the schema wants one, a string where it wants a string.
    gateway.rewrite_config(|c| c["routes"]["num"] = json!({"deployments": ["n"]}));
    answers_within(&gateway, "num", Duration::from_secs(3))
        .await
        .expect("numeric model");
    assert_eq!(mock.hits("1234"), 1);
    let big = "x".repeat(70_000);
    let r = gateway
        .post(json!({"model": "chat", "messages": [{"role": "user", "content": big}]}))
        .await;
    assert_eq!(r.status(), 413);
    // A refused value that came from a variable is not repeated in the log.
    gateway.rewrite_config(|c| {
        c["deployments"]["a"]["base_url"] = json!("https://u:${SY_TEST_SECRET}@h/v1")
    });
    gateway.assert_log("/deployments/a/base_url");
    assert!(
        !gateway.logs().contains("hunter2-secret"),
        "{}",
        gateway.logs()
    );
    gateway.rewrite_config(|c| {
        c["deployments"]["a"]["base_url"] = json!("${SY_TEST_UPSTREAM:-http://127.0.0.1:9/v1}")
    });
    // An overlay selected from .env adds a route; its model comes from .env.
    let dir = gateway.dir.path();
    std::fs::write(
        dir.join("switchyard.staging.json"),
        json!({"routes": {"extra": {"deployments": ["b"]}},
               "deployments": {"b": def(&mock.url, "${SY_TEST_MODEL}")}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join(".env"),
        "SWITCHYARD_ENV=staging\nSY_TEST_MODEL=from-dotenv\n",
    )
    .unwrap();
    answers_within(&gateway, "extra", Duration::from_secs(3))
        .await
        .expect("the overlay's route answers");
    assert_eq!(mock.hits("from-dotenv"), 1);
    // `check` resolves the same and prints the route table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(gateway.config_path())
        .envs([
            ("SY_TEST_UPSTREAM", mock.url.as_str()),
            ("SY_TEST_NUMERIC", "1234"),
            ("SY_TEST_MAX_BODY", "65536"),
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("extra:"), "{report}");
    assert!(report.contains("model \"from-dotenv\""), "{report}");
    // A variable with no value and no default is refused, naming its path.
    gateway.rewrite_config(|c| c["deployments"]["a"]["model"] = json!("${SY_TEST_NEVER_SET}"));
    gateway.assert_log("/deployments/a/model");
    assert_eq!(gateway.chat("chat", false).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_change_reorders_a_cost_strategy_on_the_next_request() {
    let mock = Mock::start().await;
    let priced = |cost: f64| {
        json!({"adapter": "openai", "base_url": mock.url, "model": "gpt",
               "input_cost_per_1k": cost, "output_cost_per_1k": cost})
    };
    let gateway = Gateway::start_with_env(
        json!({"chat": {"strategy": "cheapest", "deployments": ["a", "b"]}}),
        &[
            ("cheapest", "examples/js/cheapest-strategy"),
            ("openai", "openai"),
        ],
        json!({"deployments": {"a": priced(0.001), "b": priced(0.01)}}),
        &[],
    );
    let r = gateway.chat("chat", false).await;
    assert_eq!(json_body(r).await["model"], "a");
    gateway.rewrite_config(|c| c["deployments"]["a"] = priced(0.1));
    assert!(
        gateway.wait_for_log("deployments changed: a", Duration::from_secs(3)),
        "{}",
        gateway.logs()
    );
    let r = gateway.chat("chat", false).await;
    assert_eq!(json_body(r).await["model"], "b");
}
