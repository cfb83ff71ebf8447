//! Plugins in other languages: the Python and JavaScript example strategies
//! (v0.2) route requests; a Python strategy built against the frozen v0.1 WIT
//! (componentize-py) imports some 25 WASI interfaces. It runs with nothing granted, its stdout writes
//! go nowhere without breaking the call, and its host-interface logs arrive
//! tagged with its plugin id.

use serde_json::json;

use crate::harness::{Gateway, assert_done, deployment, json_body, sse_events};
use crate::mock::{Mock, STORY};

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

/// The Python and JavaScript adapter templates, as `switchyard plugins new`
/// writes them (scripts/setup builds them into `target/templates/`), answer
/// and stream through the gateway: each chunk names the deployment (which
/// `begin-stream` kept in the state, since later calls are not given the
/// target), an event that is not JSON is skipped and counted rather than
/// ending the answer, and a stream cut before `[DONE]` ends with an error
/// event, not a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_adapter_templates_answer_and_stream() {
    let mock = Mock::start().await;
    let d = |name: &str, adapter: &str, model: &str| json!({"name": name, "adapter": adapter, "base_url": mock.url, "model": model});
    let mut routes = serde_json::Map::new();
    for (lang, adapter) in [("py", "py-adapter"), ("js", "js-adapter")] {
        for (suffix, model) in [
            ("", "story"),
            ("-malformed", "story-malformed"),
            ("-cut", "story-cut-3"),
            ("-after-done", "story-after-done"),
            ("-limited", "rate-429"),
        ] {
            let name = format!("{lang}{suffix}");
            routes.insert(
                name.clone(),
                json!({"deployments": [d(&format!("{name}-dep"), adapter, model)]}),
            );
        }
    }
    let gw = Gateway::start_with_ids(
        serde_json::Value::Object(routes),
        &[
            ("py-adapter", "target/templates/python-adapter"),
            ("js-adapter", "target/templates/js-adapter"),
        ],
        // A Python guest's first call initialises its interpreter state: give
        // it room on a busy CI machine.
        json!({"plugins": {"deadlines_ms": {"adapter": 5000}}}),
    );
    for lang in ["py", "js"] {
        let r = gw.chat(lang, false).await;
        assert_eq!(r.status(), 200, "{}", gw.logs());
        let body = json_body(r).await;
        assert_eq!(body["model"], format!("{lang}-dep"), "{body}");
        assert_eq!(
            body["choices"][0]["message"]["content"], "answer from story",
            "{body}"
        );
        assert!(body["usage"]["total_tokens"].as_u64() > Some(0), "{body}");

        for route in [
            lang.to_string(),
            format!("{lang}-malformed"),
            format!("{lang}-after-done"),
        ] {
            let r = gw.chat(&route, true).await;
            assert_eq!(r.status(), 200, "{}", gw.logs());
            let events = sse_events(r).await;
            assert_done(&events);
            let mut text = String::new();
            for e in &events[..events.len() - 1] {
                let chunk: serde_json::Value = serde_json::from_str(e).unwrap();
                assert_eq!(chunk["model"], format!("{route}-dep"), "{e}");
                if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
                    text.push_str(t);
                }
            }
            assert_eq!(text, STORY, "{route}: {events:?}");
        }

        let r = gw.chat(&format!("{lang}-cut"), true).await;
        assert_eq!(r.status(), 200, "{}", gw.logs());
        let events = sse_events(r).await;
        assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
        assert!(
            events.last().is_some_and(|e| e.contains("\"error\"")),
            "a cut stream ends with an error event: {events:?}"
        );

        // The template reads `Retry-After` out of the response's header
        // block: the caller is told the upstream's 30 s.
        let r = gw.chat(&format!("{lang}-limited"), false).await;
        assert_eq!(r.status(), 429, "{}", gw.logs());
        assert_eq!(r.headers()["retry-after"], "30", "{lang}");
    }
    let logs = gw.logs();
    assert!(!logs.contains("trapped"), "{logs}");
}

/// The Python and JavaScript strategy and evaluator templates, as `switchyard
/// plugins new` writes them (scripts/setup builds them into
/// `target/templates/`), in a route: the strategy keeps the configured order
/// and logs through the host; the evaluator fails an empty answer, so the
/// request goes on to the next deployment, whose answer it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_strategy_and_evaluator_templates_route_and_judge() {
    let mock = Mock::start().await;
    let mut routes = serde_json::Map::new();
    for lang in ["py", "js"] {
        routes.insert(
            lang.into(),
            json!({"strategy": format!("{lang}-strategy"), "evaluator": format!("{lang}-evaluator"),
                "deployments": [deployment(&format!("{lang}-empty"), &mock.url, "empty"),
                                deployment(&format!("{lang}-good"), &mock.url, "good")]}),
        );
    }
    let gw = Gateway::start_with_ids(
        serde_json::Value::Object(routes),
        &[
            ("openai", "openai"),
            ("py-strategy", "target/templates/python-strategy"),
            ("py-evaluator", "target/templates/python-evaluator"),
            ("js-strategy", "target/templates/js-strategy"),
            ("js-evaluator", "target/templates/js-evaluator"),
        ],
        // A Python guest's first call initialises its interpreter state: give
        // it room on a busy CI machine.
        json!({"plugins": {"deadlines_ms": {"strategy": 5000, "evaluator": 5000}}}),
    );
    for lang in ["py", "js"] {
        let r = gw.chat(lang, false).await;
        assert_eq!(r.status(), 200, "{}", gw.logs());
        assert_eq!(r.headers()["x-switchyard-attempts"], "2", "{}", gw.logs());
        let body = json_body(r).await;
        assert_eq!(body["model"], format!("{lang}-good"), "{body}");
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{body}"
        );
    }
    assert_eq!(mock.hits("empty"), 2);
    // Each ran without an error, the evaluator on both answers.
    let (status, listed) = gw.admin("/admin/plugins").await;
    assert_eq!(status, 200, "{listed}");
    let calls = |id: &str| {
        let p = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"));
        assert_eq!(p["errors"], 0, "{p}");
        p["calls"].as_u64().unwrap()
    };
    for lang in ["py", "js"] {
        // The metadata call at load, then the request's.
        assert_eq!(calls(&format!("{lang}-strategy")), 1 + 1);
        assert_eq!(calls(&format!("{lang}-evaluator")), 1 + 2);
        // Log lines reach the test through a pipe, after the answers.
        gw.assert_log(&format!(
            "plugin={lang}-evaluator score=0.0 reasons=[\"choice 0 is empty\"]"
        ));
    }
    let logs = gw.logs();
    for bad in ["strategy failed", "evaluator failed", "trapped"] {
        assert!(!logs.contains(bad), "{bad}: {logs}");
    }
}
