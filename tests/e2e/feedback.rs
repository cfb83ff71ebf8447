//! `POST /v1/feedback`: an application's judgement of an answer blends into
//! the deployment's quality and is stored; with client keys required, only
//! the request's own caller may judge it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, client, deployment};
use crate::mock::Mock;

async fn ask(gw: &Gateway, key: Option<&str>) -> String {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(json!({"model": "r", "messages": [{"role": "user", "content": "hi"}]}).to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-request-id"].to_str().unwrap().to_owned()
}

async fn feedback(gw: &Gateway, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/v1/feedback", gw.url))
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Feedback on `id` once its record is in the store (written within a
/// second or so of the answer).
async fn feedback_when_recorded(gw: &Gateway, key: Option<&str>, body: Value) -> (u16, Value) {
    let started = Instant::now();
    loop {
        let (status, v) = feedback(gw, key, body.clone()).await;
        if status != 404 || started.elapsed() > Duration::from_secs(10) {
            return (status, v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_counts_in_the_deployments_quality_and_is_stored() {
    let mock = Mock::start().await;
    let gw = Gateway::start(
        json!({"r": {"deployments": [deployment("d", &mock.url, "good")]}}),
        &["openai"],
        json!({}),
    );
    let id = ask(&gw, None).await;
    let (status, v) = feedback_when_recorded(
        &gw,
        None,
        json!({"request_id": id, "score": 0.0, "comment": "wrong capital"}),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["deployment"], "d");
    let (_, deployments) = gw.admin("/admin/deployments").await;
    let quality = deployments["data"][0]["health"]["quality"]
        .as_f64()
        .unwrap();
    assert!(quality < 1.0, "a 0 score lowers the quality: {deployments}");
    // The same request judged again is stored, but counts once.
    for _ in 0..4 {
        let (status, _) = feedback(&gw, None, json!({"request_id": id, "score": 0.0})).await;
        assert_eq!(status, 202);
    }
    let (_, deployments) = gw.admin("/admin/deployments").await;
    assert_eq!(
        deployments["data"][0]["health"]["quality"]
            .as_f64()
            .unwrap(),
        quality
    );

    for (body, status, says) in [
        (json!({"request_id": id, "score": 1.5}), 400, "`score`"),
        (
            json!({"request_id": id, "score": 0.5, "stars": 4}),
            400,
            "stars",
        ),
        (json!({"score": 0.5}), 400, "request_id"),
        (
            json!({"request_id": "no-such-request", "score": 0.5}),
            404,
            "no-such-request",
        ),
    ] {
        let (got, v) = feedback(&gw, None, body.clone()).await;
        assert_eq!(got, status, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{v}"
        );
    }

    // Stored (the writer commits within its flush interval).
    let path = gw.db_path();
    let started = Instant::now();
    loop {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let row: Option<(String, f64, String)> = conn
            .query_row(
                "SELECT deployment, score, comment FROM feedback WHERE request_id = ?",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ok();
        if let Some(row) = row {
            assert_eq!(row, ("d".to_string(), 0.0, "wrong capital".to_string()));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no feedback row"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Beside the evaluators' scores in /admin/quality.
    let q = loop {
        let (status, q) = gw.admin("/admin/quality?group_by=deployment").await;
        assert_eq!(status, 200, "{q}");
        if q["feedback"][0]["judgements"] == 5 || started.elapsed() > Duration::from_secs(10) {
            break q;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(q["feedback"][0]["key"], "d", "{q}");
    assert_eq!(
        q["feedback"][0]["judgements"], 5,
        "every judgement is stored: {q}"
    );
    assert_eq!(q["feedback"][0]["mean_score"], 0.0, "{q}");
    let (_, q) = gw.admin("/admin/quality?group_by=evaluator").await;
    assert_eq!(q["feedback"], json!([]), "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_caller_of_a_request_may_judge_it() {
    let mock = Mock::start().await;
    let (key_a, key_b) = ("sy-feedback-a", "sy-feedback-b");
    let gw = Gateway::start(
        json!({"r": {"deployments": [deployment("d", &mock.url, "good")]}}),
        &["openai"],
        json!({"auth": {"required": true, "keys": {
            "team-a": {"hash": switchyard::auth::hash_text(key_a)},
            "team-b": {"hash": switchyard::auth::hash_text(key_b)},
        }}}),
    );
    let id = ask(&gw, Some(key_a)).await;
    let body = json!({"request_id": id, "score": 0.9});
    let (status, v) = feedback_when_recorded(&gw, Some(key_b), body.clone()).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "not_your_request");
    assert_eq!(feedback(&gw, None, body.clone()).await.0, 401);
    assert_eq!(feedback(&gw, Some(key_a), body).await.0, 202);
}
