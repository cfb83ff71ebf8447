//! The bundled evaluators on the real binary: a failing verdict on a
//! non-streamed answer sends the request to the next deployment, and the
//! reasons reach the caller when every deployment fails.

use serde_json::{Value, json};

use crate::dialects::Dialects;
use crate::harness::{Gateway, deployment, json_body};
use crate::mock::Mock;

fn route(evaluator: &str, deployments: Vec<Value>) -> Value {
    json!({"r": {"evaluator": evaluator, "deployments": deployments}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_fails_over_from_a_refusing_deployment() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        route(
            "refusal",
            vec![
                deployment("prude", &mock.url, "refuse"),
                deployment("helpful", &mock.url, "good"),
            ],
        ),
        &["openai", "refusal"],
        json!({}),
    );
    let r = gw.chat("r", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-deployment"], "helpful");
    assert_eq!(r.headers()["x-switchyard-attempts"], "2");
    assert_eq!(mock.hits("refuse"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_holds_answers_to_the_requests_schema() {
    let mock = Dialects::start().await;
    let d = |name: &str| json!({"name": name, "adapter": "openai", "base_url": format!("{}/v1", mock.url), "model": "gpt-4o-mini"});
    let gw = Gateway::start(
        route("json-schema", vec![d("a"), d("b")]),
        &["openai", "json-schema"],
        json!({}),
    );
    // The mock answers {"city": "Paris", "temp_c": 21}.
    let ask = |temp_type: &str| {
        json!({"model": "r", "messages": [{"role": "user", "content": "weather?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {
                "type": "object", "required": ["city", "temp_c"],
                "properties": {"city": {"type": "string"}, "temp_c": {"type": temp_type}}}}}})
    };
    let r = gw.post(ask("number")).await;
    assert_eq!(r.status(), 200);
    let r = gw.post(ask("string")).await;
    let status = r.status();
    let body = json_body(r).await;
    assert!(status.is_server_error(), "{status} {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("temp_c"),
        "the reason names the field: {message}"
    );
    // The host checks JSON asked for before the evaluator sees it (see
    // `structured`): each deployment answered, was told what was wrong,
    // answered again.
    let attempts = body["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "{body}");
    assert!(
        attempts.iter().all(|a| a["class"] == "invalid_output"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_scores_answers_and_passes_good_ones() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        route(
            "quality",
            vec![
                deployment("empty", &mock.url, "empty"),
                deployment("good", &mock.url, "good"),
            ],
        ),
        &["openai", "quality"],
        json!({}),
    );
    let r = gw.chat("r", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-deployment"], "good");
    let (_, deployments) = gw.admin("/admin/deployments").await;
    let q = |name: &str| {
        deployments["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| d["health"]["quality"].as_f64().unwrap())
            .unwrap()
    };
    assert!(q("empty") < q("good"), "{deployments}");
}
