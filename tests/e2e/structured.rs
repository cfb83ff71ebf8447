//! Structured output on every model, on the real binary: a deployment
//! without JSON mode is asked by instructions, its JSON is found in the
//! answer and checked against the schema, a wrong answer is sent back once
//! with what was wrong, then the request fails over — the client gets
//! schema-valid JSON or an error naming why.

use serde_json::{Value, json};

use crate::harness::{Gateway, deployment, json_body};
use crate::mock::Mock;

fn plain(name: &str, url: &str, model: &str) -> Value {
    let mut d = deployment(name, url, model);
    d["capabilities"] = json!(["tools", "streaming"]);
    d
}

fn person() -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false,
    }}})
}

fn ask(format: Value) -> Value {
    json!({"model": "r", "response_format": format,
        "messages": [{"role": "user", "content": "Who wrote the first program?"}]})
}

fn content(v: &Value) -> Value {
    serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_json_mode_is_instructed_and_its_json_unwrapped() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        json!({"r": {"deployments": [plain("plain", &mock.url, "json-in-prose")]}}),
        &["openai"],
        json!({}),
    );
    let r = gw.post(ask(person())).await;
    assert_eq!(r.status(), 200);
    let v = json_body(r).await;
    assert_eq!(content(&v), json!({"name": "Ada", "age": 36}), "{v}");
    // Upstream: no response_format, the schema in a system message first.
    let sent = mock.bodies().pop().unwrap();
    assert!(sent.get("response_format").is_none(), "{sent}");
    assert_eq!(sent["messages"][0]["role"], "system");
    let note = sent["messages"][0]["content"].as_str().unwrap();
    assert!(
        note.contains("\"person\"") && note.contains("\"required\""),
        "{note}"
    );
    // json_object alike.
    let r = gw.post(ask(json!({"type": "json_object"}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content(&json_body(r).await)["age"], 36);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_deployment_gets_response_format_and_is_still_checked() {
    let mock = Mock::start().await;
    let mut native = deployment("native", &mock.url, "json-fixed-when-told");
    native["capabilities"] = json!(["json-mode"]);
    let gw = Gateway::start(
        json!({"r": {"deployments": [native]}}),
        &["openai"],
        json!({}),
    );
    let r = gw.post(ask(person())).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        content(&json_body(r).await),
        json!({"name": "Ada", "age": 36})
    );
    // The first answer lacked `age`: sent back once, with the reason.
    let bodies = mock.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0]["response_format"], person());
    let messages = bodies[1]["messages"].as_array().unwrap();
    assert_eq!(
        messages[messages.len() - 2]["content"],
        r#"{"name": "Ada"}"#
    );
    let told = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(told.contains("\"age\" is a required property"), "{told}");
    // Both attempts are recorded, the first as invalid output.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let detail = loop {
        let (status, detail) = gw.admin(&format!("/admin/requests/{id}")).await;
        if status == 200 {
            break detail;
        }
        assert!(std::time::Instant::now() < deadline, "no record: {detail}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let classes: Vec<&Value> = detail["attempts_detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["class"])
        .collect();
    assert_eq!(
        classes,
        [&json!("invalid_output"), &Value::Null],
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_never_answers_json_fails_over_then_names_why() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        json!({"r": {"deployments": [
            plain("never", &mock.url, "json-never"),
            plain("prose", &mock.url, "json-in-prose"),
        ]}}),
        &["openai"],
        json!({}),
    );
    let r = gw.post(ask(person())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-deployment"], "prose");
    assert_eq!(content(&json_body(r).await)["name"], "Ada");
    // Asked twice (the answer, then its correction), then the next one.
    assert_eq!(mock.hits("json-never"), 2);

    let gw = Gateway::start(
        json!({"r": {"deployments": [plain("never", &mock.url, "json-never")]}}),
        &["openai"],
        json!({}),
    );
    let r = gw.post(ask(person())).await;
    let status = r.status();
    let v = json_body(r).await;
    assert!(status.is_server_error(), "{status} {v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("structured output: the answer holds no JSON"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_schema_is_the_callers_error() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        json!({"r": {"deployments": [plain("plain", &mock.url, "json-in-prose")]}}),
        &["openai"],
        json!({}),
    );
    let r = gw
        .post(ask(
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}}),
        ))
        .await;
    assert_eq!(r.status(), 400);
    let v = json_body(r).await;
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("response_format.json_schema.schema is not a valid JSON Schema"),
        "{message}"
    );
    assert!(mock.bodies().is_empty());
}
