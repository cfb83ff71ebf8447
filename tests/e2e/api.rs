//! The HTTP API: answers, errors, model list.

use serde_json::json;

use crate::harness::{Gateway, deployment, json_body, sse_events};
use crate::mock::Mock;

fn one_route(mock: &Mock) -> serde_json::Value {
    json!({"chat": {"strategy": "priority", "evaluator": "basic",
        "deployments": [deployment("primary", &mock.url, "good")]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_answer_names_the_deployment_and_has_usage() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        one_route(&mock),
        &["openai", "priority", "basic"],
        json!({}),
    );
    let r = gw.chat("chat", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-deployment"], "primary");
    assert_eq!(r.headers()["x-switchyard-attempts"], "1");
    assert!(r.headers().contains_key("x-request-id"));
    let body = json_body(r).await;
    assert_eq!(body["model"], "primary");
    assert_eq!(body["choices"][0]["message"]["content"], "answer from good");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answer_is_openai_sse_ending_with_done() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        one_route(&mock),
        &["openai", "priority", "basic"],
        json!({}),
    );
    let r = gw.chat("chat", true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = sse_events(r).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let mut text = String::new();
    for e in &events[..events.len() - 1] {
        let chunk: serde_json::Value = serde_json::from_str(e).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "primary");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, "answer from good");
    // The caller did not ask for usage: the usage-only chunk is not forwarded
    // (the gateway still gets usage from the upstream for accounting).
    let last: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{events:?}");
    assert!(
        gw.wait_for_log(
            "deployment=primary prompt_tokens=3 completion_tokens=3",
            std::time::Duration::from_secs(2)
        ),
        "{}",
        gw.logs()
    );

    // A caller that asks for usage gets OpenAI's final usage chunk.
    let r = gw
        .post(
            json!({"model": "chat", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    let events = sse_events(r).await;
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3, "{events:?}");
    assert_eq!(usage["choices"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_client_errors() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        one_route(&mock),
        &["openai", "priority", "basic"],
        json!({"server": {"max_body_bytes": 2048}}),
    );
    let c = crate::harness::client();

    let models = json_body(c.get(format!("{}/v1/models", gw.url)).send().await.unwrap()).await;
    assert_eq!(models["data"][0]["id"], "chat");
    assert_eq!(models["object"], "list");

    let health = c.get(format!("{}/healthz", gw.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(json_body(health).await["plugins"], 3);

    // Malformed JSON: 400 naming the problem.
    let r = c
        .post(format!("{}/v1/chat/completions", gw.url))
        .body("{\"model\": \"chat\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e = json_body(r).await;
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("EOF"),
        "{e}"
    );

    // Missing field: named.
    let r = gw.post(json!({"model": "chat"})).await;
    assert_eq!(r.status(), 400);
    assert!(
        json_body(r).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages")
    );

    // Wrong type: named.
    let r = gw
        .post(json!({"model": "chat", "messages": [], "stream": "yes"}))
        .await;
    assert_eq!(r.status(), 400);
    assert!(
        json_body(r).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid type")
    );

    // Unknown model: 404 model_not_found.
    let r = gw.chat("nope", false).await;
    assert_eq!(r.status(), 404);
    assert_eq!(json_body(r).await["error"]["code"], "model_not_found");

    // Too large: 413 in OpenAI's format.
    let big = "x".repeat(4096);
    let r = gw
        .post(json!({"model": "chat", "messages": [{"role": "user", "content": big}]}))
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(json_body(r).await["error"]["code"], "request_too_large");

    // Unknown path.
    let r = c
        .get(format!("{}/v2/whatever", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json_body(r).await["error"]["code"], "not_found");

    // A bad hint header is named.
    let r = c
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-switchyard-priority", "urgent")
        .body(json!({"model": "chat", "messages": [{"role": "user", "content": "x"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let message = json_body(r).await["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("x-switchyard-priority") && message.contains("urgent"),
        "{message}"
    );

    // JSON escapes in the model name and `"stream": null` are fine.
    let raw = r#"{"model":"ch\u0061t","stream":null,"messages":[{"role":"user","content":"x"}]}"#;
    let r = c
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Still serving after all that.
    assert_eq!(gw.chat("chat", false).await.status(), 200);
    assert_eq!(mock.hits("good"), 2);
}

/// Azure OpenAI from config alone: the base URL's `api-version` query goes
/// on every request, the key in an `api-key` header (never `authorization`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_style_deployment_sends_its_query_and_key_header() {
    let mock = Mock::start().await;
    let gw = Gateway::start_with_env(
        json!({"azure": {"deployments": [{
            "name": "azure-dep", "adapter": "openai", "model": "good",
            "base_url": format!("{}?api-version=2024-10-21", mock.url),
            "api_key_env": "AZURE_TEST_KEY", "auth": {"header": "api-key"}}]}}),
        &[("openai", "openai")],
        json!({}),
        &[("AZURE_TEST_KEY", "az-secret")],
    );
    let r = gw.chat("azure", false).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let sent = mock
        .requests()
        .into_iter()
        .find(|r| r.uri.starts_with("/v1/chat/completions"))
        .expect("a chat request");
    assert_eq!(sent.uri, "/v1/chat/completions?api-version=2024-10-21");
    let header = |name: &str| {
        sent.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("api-key").as_deref(), Some("az-secret"));
    assert_eq!(header("authorization"), None);
}
