//! Hot reload: a strategy `.wasm` added, replaced or removed takes effect on
//! the next requests with no restart and no failed request; a corrupt or
//! wrong-kind file is refused while the previous version keeps serving.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Gateway, deployment, json_body, plugin};
use crate::mock::Mock;

/// Route "chat" with strategy id "custom": "first" (priority 0) then "second".
fn start(mock: &Mock, custom: &str) -> Gateway {
    let mut first = deployment("first", &mock.url, "good");
    first["priority"] = json!(0);
    let mut second = deployment("second", &mock.url, "good");
    second["priority"] = json!(1);
    let routes = json!({"chat": {"strategy": "custom", "evaluator": "basic", "deployments": [first, second]}});
    Gateway::start_with_ids(
        routes,
        &[("openai", "openai"), ("basic", "basic"), ("custom", custom)],
        json!({}),
    )
}

async fn answered_by(gw: &Gateway) -> String {
    let r = gw.chat("chat", false).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    json_body(r).await["model"].as_str().unwrap().to_string()
}

/// Deploys by write-then-rename in the same folder, as a careful operator would.
fn replace_by_rename(dir: &Path, id: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{id}.wasm.partial"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{id}.wasm"))).unwrap();
}

/// Loops requests until `want` answers (or 10 s pass); returns every
/// (time, deployment) seen. Fails on any non-200.
async fn loop_until(gw: &Gateway, want: &str) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let d = answered_by(gw).await;
        let done = d == want;
        seen.push((Instant::now(), d));
        if done {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_strategy_changes_routing_while_a_client_loops() {
    let mock = Mock::start().await;
    let gw = start(&mock, "priority");
    let dir = gw.plugin_dir();

    // A client loops in the background the whole time; none of its requests may fail.
    let client_gw_url = gw.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_flag = stop.clone();
    let background = tokio::spawn(async move {
        let c = crate::harness::client();
        let (mut ok, mut failed) = (0, 0);
        while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
            let r = c
                .post(format!("{client_gw_url}/v1/chat/completions"))
                .body(
                    json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                )
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    });

    assert_eq!(answered_by(&gw).await, "first");
    // Write-then-rename.
    let swapped = Instant::now();
    replace_by_rename(&dir, "custom", &std::fs::read(plugin("reverse")).unwrap());
    let seen = loop_until(&gw, "second").await;
    let (at, d) = seen.last().unwrap();
    assert_eq!(d, "second", "new order never observed:\n{}", gw.logs());
    assert!(
        at.duration_since(swapped) < Duration::from_secs(1),
        "took {:?}",
        at.duration_since(swapped)
    );

    // In-place overwrite back to priority.
    let swapped = Instant::now();
    std::fs::write(
        dir.join("custom.wasm"),
        std::fs::read(plugin("priority")).unwrap(),
    )
    .unwrap();
    let seen = loop_until(&gw, "first").await;
    let (at, d) = seen.last().unwrap();
    assert_eq!(
        d,
        "first",
        "in-place overwrite not picked up:\n{}",
        gw.logs()
    );
    assert!(
        at.duration_since(swapped) < Duration::from_secs(1),
        "took {:?}",
        at.duration_since(swapped)
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = background.await.unwrap();
    assert_eq!(failed, 0, "requests failed during reloads ({ok} ok)");
    assert!(ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_a_strategy() {
    let mock = Mock::start().await;
    // The route names "custom" but the folder has none yet: configured order.
    let routes = json!({"chat": {"strategy": "custom", "deployments": [
        deployment("first", &mock.url, "good"), deployment("second", &mock.url, "good")]}});
    let gw = Gateway::start(routes, &["openai"], json!({}));
    gw.assert_log("plugin \"custom\" is not loaded");
    assert_eq!(answered_by(&gw).await, "first");

    replace_by_rename(
        &gw.plugin_dir(),
        "custom",
        &std::fs::read(plugin("reverse")).unwrap(),
    );
    let seen = loop_until(&gw, "second").await;
    assert_eq!(seen.last().unwrap().1, "second");

    std::fs::remove_file(gw.plugin_dir().join("custom.wasm")).unwrap();
    let seen = loop_until(&gw, "first").await;
    assert_eq!(seen.last().unwrap().1, "first", "{}", gw.logs());
    assert!(gw.wait_for_log("plugin removed", Duration::from_secs(2)));
    gw.assert_log("using the configured order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_wrong_kind_files_are_refused_and_the_previous_version_serves() {
    let mock = Mock::start().await;
    let gw = start(&mock, "reverse");
    let dir = gw.plugin_dir();
    assert_eq!(answered_by(&gw).await, "second");

    // Truncated component replacing a loaded plugin.
    let good = std::fs::read(plugin("priority")).unwrap();
    replace_by_rename(&dir, "custom", &good[..good.len() / 2]);
    assert!(
        gw.wait_for_log("plugin rejected", Duration::from_secs(3)),
        "{}",
        gw.logs()
    );
    let rejected: Vec<String> = gw
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("plugin rejected"))
        .collect();
    assert_eq!(rejected.len(), 1, "one clear line: {rejected:?}");
    assert!(
        rejected[0].contains("custom") && rejected[0].contains("previous version keeps serving"),
        "{rejected:?}"
    );
    for _ in 0..5 {
        assert_eq!(
            answered_by(&gw).await,
            "second",
            "the previous version still routes"
        );
    }

    // An evaluator dropped in under the strategy's id: wrong kind, refused.
    replace_by_rename(&dir, "custom", &std::fs::read(plugin("basic")).unwrap());
    assert!(
        gw.wait_for_log(
            "is a evaluator plugin, but this id is used as a strategy",
            Duration::from_secs(3)
        ) || gw.wait_for_log("is a evaluator plugin", Duration::from_secs(1)),
        "{}",
        gw.logs()
    );
    assert_eq!(answered_by(&gw).await, "second");

    // Junk under a new name: refused, everything else unaffected.
    std::fs::write(dir.join("junk.wasm"), b"definitely not wasm").unwrap();
    assert!(
        gw.wait_for_log("no wasm header", Duration::from_secs(3)),
        "{}",
        gw.logs()
    );
    assert_eq!(answered_by(&gw).await, "second");
}
