//! Real clients against the real binary: the official openai and anthropic
//! Python SDKs and LangChain's ChatOpenAI (installed by scripts/setup into
//! target/py-venv), each routed to a deployment of every dialect (OpenAI,
//! Anthropic, Gemini, Ollama) on the dialect mock. The scripts in
//! `tests/e2e/clients/` assert what a user would rely on: text, streams,
//! tool calls both ways, JSON schema output, usage, errors.

use std::time::Duration;

use serde_json::{Value, json};

use crate::dialects::Dialects;
use crate::harness::{Gateway, repo};

const ROUTES: [&str; 4] = ["via-openai", "via-anthropic", "via-gemini", "via-ollama"];

fn routes(mock: &Dialects) -> Value {
    let d = |name: &str, adapter: &str, base: String, model: &str| json!({"name": name, "adapter": adapter, "base_url": base, "model": model});
    json!({
        "via-openai": {"deployments": [d("oai", "openai", format!("{}/v1", mock.url), "gpt-4o-mini")]},
        "via-anthropic": {"deployments": [d("claude", "anthropic", format!("{}/v1", mock.url), "claude-sonnet-4-5")]},
        "via-gemini": {"deployments": [d("gem", "gemini", format!("{}/v1beta", mock.url), "gemini-2.5-flash")]},
        "via-ollama": {"deployments": [d("llama", "ollama", mock.url.clone(), "llama3.2")]},
        // Structured output by instructions: no JSON mode of its own.
        "via-instructions": {"deployments": [{"name": "plain", "adapter": "openai",
            "base_url": format!("{}/v1", mock.url), "model": "no-json-mode",
            "capabilities": ["tools", "streaming"]}]},
    })
}

/// Runs `tests/e2e/clients/<script>` against the gateway for every route;
/// its stdout lines are JSON objects, one per route.
async fn run(gw: &Gateway, script: &str) -> Vec<Value> {
    run_on(gw, script, &ROUTES).await
}

/// Runs `tests/e2e/clients/<script>` against the gateway for `routes`.
async fn run_on(gw: &Gateway, script: &str, routes: &[&str]) -> Vec<Value> {
    let routes: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
    let python = repo().join("target/py-venv/bin/python");
    assert!(python.exists(), "run scripts/setup (the test venv)");
    let path = repo().join("tests/e2e/clients").join(script);
    let url = gw.url.clone();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                .arg(path)
                .arg(url)
                .args(routes)
                .output()
                .unwrap()
        }),
    )
    .await
    .expect("the client script finished within 2 minutes")
    .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gw.logs()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn start(mock: &Dialects) -> Gateway {
    Gateway::start(
        routes(mock),
        &["openai", "anthropic", "gemini", "ollama"],
        json!({}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_reaches_every_dialect_through_v1_messages() {
    let mock = Dialects::start().await;
    let gw = start(&mock);
    let runs = run(&gw, "anthropic_sdk.py").await;
    assert_eq!(runs.len(), ROUTES.len());
    assert_eq!(runs[1]["text"], "answer from claude-sonnet-4-5");
    // Each dialect was spoken on the wire.
    let seen = mock.seen();
    for path in ["/v1/chat/completions", "/v1/messages", "/api/chat"] {
        assert!(
            seen.iter().any(|s| s.path == path),
            "nothing sent to {path}"
        );
    }
    assert!(seen.iter().any(|s| {
        s.path
            .starts_with("/v1beta/models/gemini-2.5-flash:streamGenerateContent")
    }));
    let to_claude = seen.iter().find(|s| s.path == "/v1/messages").unwrap();
    assert!(
        to_claude
            .headers
            .iter()
            .any(|(k, v)| k == "anthropic-version" && v == "2023-06-01")
    );
    assert_eq!(to_claude.body["system"][0]["text"], "Be brief.");
    // The agent loop's breakpoints reached Anthropic where they were put,
    // and no other dialect's upstream (the openai adapter is the one that
    // would show them: it passes a request on as sent).
    let marked = seen
        .iter()
        .find(|s| s.path == "/v1/messages" && s.body.to_string().contains("tool_result"))
        .expect("the tool result reached Anthropic");
    let eph = json!({"type": "ephemeral"});
    assert_eq!(
        marked.body["system"][0]["cache_control"], eph,
        "{}",
        marked.body
    );
    assert_eq!(marked.body["tools"][0]["cache_control"], eph);
    let result = &marked.body["messages"][2]["content"][0];
    assert_eq!(result["type"], "tool_result", "{}", marked.body);
    assert_eq!(result["cache_control"], eph);
    for s in seen.iter().filter(|s| s.path != "/v1/messages") {
        assert!(
            !s.body.to_string().contains("cache_control"),
            "{}: {}",
            s.path,
            s.body
        );
    }
}

/// Through `/v1/messages`, prompt-cache breakpoints ride only to routes
/// whose every deployment, fallbacks included, speaks Anthropic (a wildcard
/// route too): a route that has an OpenAI deployment, or may fail over to
/// one (directly or through another route's fallbacks), sends none, even to
/// its Anthropic deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_marks_reach_anthropic_only_from_anthropic_only_routes() {
    let mock = Dialects::start().await;
    let mut config = routes(&mock);
    let claude = |name: &str, model: &str| {
        json!({"name": name, "adapter": "anthropic",
        "base_url": format!("{}/v1", mock.url), "model": model, "priority": 0})
    };
    config["claude-or-gpt"] = json!({
        "deployments": [claude("claude-2", "claude-haiku-4-5")],
        "fallbacks": ["via-openai"],
    });
    config["claude-chain"] = json!({
        "deployments": [claude("claude-3", "claude-chain-model")],
        "fallbacks": ["claude-or-gpt"],
    });
    config["mixed"] = json!({
        "deployments": [claude("claude-4", "claude-mixed-model"),
            {"name": "oai-2", "adapter": "openai", "base_url": format!("{}/v1", mock.url),
             "model": "gpt-4o-mini", "priority": 1}],
    });
    config["claude-*"] = json!({"deployments": [claude("claude-wild", "claude-*")]});
    let gw = Gateway::start(config, &["openai", "anthropic"], json!({}));
    let eph = json!({"type": "ephemeral"});
    for route in [
        "via-anthropic",
        "claude-or-gpt",
        "claude-chain",
        "mixed",
        "claude-wildcard-model",
    ] {
        let body = json!({
            "model": route, "max_tokens": 64,
            "system": [{"type": "text", "text": "Long rules.", "cache_control": eph}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Hello", "cache_control": eph}]}],
        });
        let r = crate::harness::client()
            .post(format!("{}/v1/messages", gw.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{route}: {}", r.text().await.unwrap());
    }
    let seen = mock.seen();
    let sent = |model: &str| {
        seen.iter()
            .find(|s| s.body["model"] == model)
            .unwrap_or_else(|| panic!("nothing sent for {model}"))
            .body
            .clone()
    };
    let kept = sent("claude-sonnet-4-5");
    assert_eq!(kept["system"][0]["cache_control"], eph, "{kept}");
    assert_eq!(kept["messages"][0]["content"][0]["cache_control"], eph);
    let wild = sent("claude-wildcard-model");
    assert_eq!(wild["system"][0]["cache_control"], eph, "{wild}");
    for model in [
        "claude-haiku-4-5",
        "claude-chain-model",
        "claude-mixed-model",
    ] {
        let dropped = sent(model);
        assert_eq!(dropped["system"][0]["text"], "Long rules.");
        assert!(
            !dropped.to_string().contains("cache_control"),
            "{model}: {dropped}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_reaches_every_dialect() {
    let mock = Dialects::start().await;
    let gw = start(&mock);
    let runs = run(&gw, "openai_sdk.py").await;
    assert_eq!(runs.len(), ROUTES.len());
    // The JSON answer from Anthropic rode a forced tool.
    let seen = mock.seen();
    assert!(
        seen.iter().any(|s| s.path == "/v1/messages"
            && s.body["tool_choice"]["name"] == "switchyard_json_response")
    );
}

/// `with_structured_output` through the gateway, on a deployment with JSON
/// mode and on one asked by instructions (its JSON comes back in prose and
/// a code fence: the client still gets the object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_structured_output_on_both_kinds_of_deployment() {
    let mock = Dialects::start().await;
    let gw = start(&mock);
    let runs = run_on(
        &gw,
        "langchain_structured.py",
        &["via-openai", "via-instructions"],
    )
    .await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["route"], "via-instructions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_chat_openai_reaches_every_dialect() {
    let mock = Dialects::start().await;
    let gw = start(&mock);
    let runs = run(&gw, "langchain_chat.py").await;
    assert_eq!(runs.len(), ROUTES.len());
}
