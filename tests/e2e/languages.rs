//! Plugins in other languages: the Python and JavaScript example strategies
//! (v0.2) route requests; a Python strategy built against the frozen v0.1 WIT
//! (componentize-py) imports some 25 WASI interfaces. It runs with nothing granted, its stdout writes
//! go nowhere without breaking the call, and its host-interface logs arrive
//! tagged with its plugin id.

use serde_json::json;

use crate::harness::{Gateway, deployment, json_body};
use crate::mock::Mock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_strategy_routes_and_may_write_to_stdout() {
    let mock = Mock::start().await;
    let routes = json!({
        "printing": {"strategy": "reverse_print", "deployments": [
            deployment("first", &mock.url, "good"), deployment("second", &mock.url, "good")]},
        "quiet": {"strategy": "reverse_quiet", "deployments": [
            deployment("first-q", &mock.url, "good"), deployment("second-q", &mock.url, "good")]},
    });
    let gw = Gateway::start_with_ids(
        routes,
        &[
            ("openai", "openai"),
            ("reverse_print", "py-reverse"),
            ("reverse_quiet", "py-reverse"),
        ],
        // A Python guest's first call initialises its interpreter state: give
        // it room on a busy CI machine.
        json!({"plugins": {"config": {"reverse_print": {"print": true}}, "deadlines_ms": {"strategy": 2000}}}),
    );
    for _ in 0..3 {
        let r = gw.chat("printing", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(json_body(r).await["model"], "second", "{}", gw.logs());
        let r = gw.chat("quiet", false).await;
        assert_eq!(json_body(r).await["model"], "second-q", "{}", gw.logs());
    }
    gw.assert_log("ordering 2 plugin=\"reverse_quiet\"");
    let logs = gw.logs();
    assert!(!logs.contains("strategy failed"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

/// The example strategies of each language order by cost: the cheap
/// deployment wins although it is configured last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_example_strategies_route() {
    let mock = Mock::start().await;
    let dearer = |name: &str| {
        let mut d = deployment(name, &mock.url, "good");
        d["input_cost_per_1k"] = json!(0.01);
        d
    };
    let cheap = |name: &str| {
        let mut d = deployment(name, &mock.url, "good");
        d["input_cost_per_1k"] = json!(0.001);
        d
    };
    let routes = json!({
        "py": {"strategy": "py-cheapest", "deployments": [dearer("py-dear"), cheap("py-cheap")]},
        "js": {"strategy": "js-cheapest", "deployments": [dearer("js-dear"), cheap("js-cheap")]},
    });
    let gw = Gateway::start_with_ids(
        routes,
        &[
            ("openai", "openai"),
            ("py-cheapest", "examples/python/cheapest-strategy"),
            ("js-cheapest", "examples/js/cheapest-strategy"),
        ],
        json!({"plugins": {"deadlines_ms": {"strategy": 2000}}}),
    );
    for _ in 0..3 {
        let r = gw.chat("py", false).await;
        assert_eq!(json_body(r).await["model"], "py-cheap", "{}", gw.logs());
        let r = gw.chat("js", false).await;
        assert_eq!(json_body(r).await["model"], "js-cheap", "{}", gw.logs());
    }
    // Log lines reach the test through a pipe, after the answers.
    gw.assert_log("plugin=\"js-cheapest\"");
    gw.assert_log("plugin=\"py-cheapest\"");
    let logs = gw.logs();
    assert!(!logs.contains("strategy failed"), "{logs}");
}
