//! `server.threads`: with one, every request is served on a single-threaded
//! scheduler (the main thread); with more, a work-stealing runtime of that
//! many workers, and the main thread only waits.

use serde_json::json;

use crate::harness::{Gateway, assert_done, client, deployment, json_body, sse_events};
use crate::mock::Mock;

/// Nanoseconds the process's main thread has run (its scheduler statistics).
fn main_thread_ns(gw: &Gateway) -> u64 {
    let pid = gw.pid();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).unwrap();
    stat.split_whitespace().next().unwrap().parse().unwrap()
}

/// Nanoseconds all of the process's threads have run.
fn process_ns(gw: &Gateway) -> u64 {
    let pid = gw.pid();
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

async fn whole_answers(gw: &Gateway, n: usize) {
    for _ in 0..n {
        let r = gw.chat("chat", false).await;
        assert_eq!(r.status(), 200, "{}", gw.logs());
        let body = json_body(r).await;
        assert!(
            body["choices"][0]["message"]["content"].is_string(),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_serves_answers_and_streams_beside_a_spinning_plugin() {
    let mock = Mock::start().await;
    let routes = json!({
        "chat": {"strategy": "priority", "evaluator": "basic",
                 "deployments": [deployment("main", &mock.url, "good")]},
        "spin": {"strategy": "spin", "deployments": [deployment("spun", &mock.url, "good")]},
    });
    let mut gw = Gateway::start(
        routes,
        &["openai", "priority", "basic", "spin"],
        json!({"server": {"threads": 1}}),
    );
    gw.assert_log("threads=1");

    // Requests run on the main thread: nothing else would serve them (a
    // third, not all: plugin calls that a loaded machine makes slow move to
    // the plugin threads for a while).
    let (main, all) = (main_thread_ns(&gw), process_ns(&gw));
    whole_answers(&gw, 200).await;
    let (main, all) = (main_thread_ns(&gw) - main, process_ns(&gw) - all);
    assert!(
        main > all / 3,
        "the main thread ran {main} of {all} ns: requests were served elsewhere"
    );

    // A strategy that never returns, four at once: each is cut at its
    // deadline while whole answers and streams go on on the same thread.
    let url = format!("{}/v1/chat/completions", gw.url);
    let spinning: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let body =
                    json!({"model": "spin", "messages": [{"role": "user", "content": "hi"}]});
                client()
                    .post(url)
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for _ in 0..5 {
        whole_answers(&gw, 1).await;
        let r = gw.chat("chat", true).await;
        assert_eq!(r.status(), 200, "{}", gw.logs());
        let events = sse_events(r).await;
        assert_done(&events);
    }
    for s in spinning {
        assert_eq!(s.await.unwrap(), 200, "{}", gw.logs());
    }
    gw.assert_log("exceeded its 25 ms deadline");

    // A drained stop on the one thread commits every record.
    let db = gw.db_path();
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.logs());
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 200 + 4 + 10, "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_threads_serve_on_workers_and_the_main_thread_waits() {
    let mock = Mock::start().await;
    let routes = json!({"chat": {"deployments": [deployment("main", &mock.url, "good")]}});
    let gw = Gateway::start(routes, &["openai"], json!({"server": {"threads": 2}}));
    gw.assert_log("threads=2");
    // Each request comes on a new connection (the harness's client): the
    // accept loop runs on a worker too, not in the main thread's `block_on`.
    let (main, all) = (main_thread_ns(&gw), process_ns(&gw));
    whole_answers(&gw, 200).await;
    let (main, all) = (main_thread_ns(&gw) - main, process_ns(&gw) - all);
    assert!(all > 2_000_000, "200 requests ran {all} ns in all");
    assert!(
        main < all / 10,
        "the main thread ran {main} of {all} ns: requests were not on the workers"
    );
}

/// Nanoseconds the process's main thread was runnable: on a CPU or waiting
/// for one (a spinning thread is runnable throughout however loaded the
/// machine; a sleeping one is neither).
fn main_thread_runnable_ns(gw: &Gateway) -> u64 {
    let pid = gw.pid();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).unwrap();
    stat.split_whitespace()
        .take(2)
        .map(|f| f.parse::<u64>().unwrap())
        .sum()
}

/// A gateway on `threads` serving threads with a 5 ms busy-polling window,
/// one route on a mock (kept alive with it).
async fn busy_polling_gateway(threads: usize) -> (Mock, Gateway) {
    let mock = Mock::start().await;
    let routes = json!({
        "chat": {"strategy": "priority", "deployments": [deployment("main", &mock.url, "good")]},
    });
    let gw = Gateway::start(
        routes,
        &["openai", "priority"],
        json!({"server": {"threads": threads, "busy_poll_us": 5000}}),
    );
    (mock, gw)
}

/// `server.busy_poll_us`: after a request the serving thread keeps running
/// through the window (polling its sockets instead of sleeping), and once
/// the window has passed an idle gateway uses no CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_spins_through_the_window_after_a_request_and_not_when_idle() {
    let (_mock, gw) = busy_polling_gateway(1).await;
    whole_answers(&gw, 3).await;

    // Past the window, idle: the main thread sleeps.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let before = main_thread_runnable_ns(&gw);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let idle = main_thread_runnable_ns(&gw) - before;
    assert!(
        idle < 50_000_000,
        "idle, the main thread was runnable {idle} ns"
    );

    // One request: the main thread stays runnable through the 5 ms after
    // it (without busy polling: ~0.5 ms for the request), then sleeps.
    let before = main_thread_runnable_ns(&gw);
    whole_answers(&gw, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let busy = main_thread_runnable_ns(&gw) - before;
    assert!(
        busy > 4_500_000,
        "the main thread was runnable {busy} ns in the 100 ms after a request: it did not poll through the window"
    );
    assert!(
        busy < 60_000_000,
        "the main thread was runnable {busy} ns in the 100 ms after a request: it polled past the window"
    );
}

/// On a work-stealing runtime busy polling would spin on every worker for
/// little gain: the gateway says it is off, and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_is_refused_on_several_threads() {
    let (_mock, gw) = busy_polling_gateway(2).await;
    gw.assert_log("server.busy_poll_us needs a single-threaded runtime");
    whole_answers(&gw, 3).await;
}
