//! The conformance fixtures (`tests/conformance/`) over real HTTP: for each
//! adapter, the gateway binary in front of a mock upstream that answers each
//! fixture's recorded response. Every fixture the upstream answers with a
//! 2xx is sent through `/v1/chat/completions`; the upstream must receive the
//! request the fixture states and the caller the answer (or the stream,
//! folded) it expects. Failure classes are checked by the plugin-level
//! suite, where a deployment's cool-down cannot hide the next case.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use crate::harness::{Gateway, client, repo};
use crate::subset::subset;

/// A request as the mock received it: method, path and query, headers, body.
type Received = (Method, String, HeaderMap, Bytes);
/// A response to replay: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// What the mock answers next, and what it received.
#[derive(Default)]
struct Replay {
    answer: Option<Answer>,
    received: Vec<Received>,
}

async fn start_replay() -> (String, Arc<Mutex<Replay>>) {
    let replay: Arc<Mutex<Replay>> = Arc::default();
    let state = replay.clone();
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let mut r = state.lock().unwrap();
                r.received.push((method, uri.to_string(), headers, body));
                let (status, headers, body) = r.answer.clone().unwrap_or((500, vec![], vec![]));
                let mut b = Response::builder().status(status);
                for (k, v) in headers {
                    // The fixture's Date stands (hyper adds one only when
                    // absent); the length is the body's.
                    if k != "content-length" {
                        b = b.header(k, v);
                    }
                }
                b.body(Body::from(body)).unwrap()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/base", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, replay)
}

/// The success fixtures of one adapter: `(file, fixture)`.
/// Every adapter with a fixture folder (the plugin is named as its folder):
/// adding an adapter adds its fixtures, not test code.
fn adapters() -> Vec<String> {
    let root = repo().join("tests/conformance");
    let mut out: Vec<String> = std::fs::read_dir(&root)
        .expect("tests/conformance")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    assert!(
        out.len() >= 4,
        "adapter folders in {}: {out:?}",
        root.display()
    );
    out
}

fn fixtures(adapter: &str) -> Vec<(String, Value)> {
    let dir = repo().join("tests/conformance").join(adapter);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let f: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), f)
        })
        .filter(|(_, f)| {
            f.get("invalid").is_none()
                && f["expect"].get("error").is_none()
                && f["response"]["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The caller's view of a stream: content, tool calls and finish reason.
fn fold_sse(text: &str) -> Result<Value, String> {
    let mut content = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = Value::Null;
    let mut stop_sequence = Value::Null;
    let mut usage_chunk = Value::Null;
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let c: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
        if c.get("error").is_some() {
            return Err(format!("the stream failed: {data}"));
        }
        if c["usage"].is_object() {
            usage_chunk = c["usage"].clone();
        }
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        if choice["stop_sequence"].is_string() {
            stop_sequence = choice["stop_sequence"].clone();
        }
        content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = call["index"].as_u64().unwrap_or(0) as usize;
            if i == calls.len() {
                let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
                calls.push((s(&call["id"]), s(&call["function"]["name"]), String::new()));
            }
            let args = call["function"]["arguments"].as_str().unwrap_or("");
            calls
                .get_mut(i)
                .ok_or("tool call index skips one")?
                .2
                .push_str(args);
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    if !done {
        return Err("the stream did not end with [DONE]".into());
    }
    let calls: Vec<Value> = calls
        .into_iter()
        .map(|(id, name, args)| {
            let args = serde_json::from_str(&args).unwrap_or(Value::String(args));
            json!({"id": id, "name": name, "arguments": args})
        })
        .collect();
    Ok(
        json!({"content": content, "tool_calls": calls, "finish_reason": finish,
        "stop_sequence": stop_sequence, "usage_chunk": usage_chunk}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fixtures_cross_real_http() {
    let (url, replay) = start_replay().await;
    let mut failures = Vec::new();
    let mut cases = 0;
    for adapter in adapters() {
        let adapter = adapter.as_str();
        let cases_of = fixtures(adapter);
        // One route per deployment the fixtures name, called by that name.
        let mut routes = serde_json::Map::new();
        for (_, f) in &cases_of {
            let t = &f["target"];
            let name = t["deployment"].as_str().unwrap_or("dep");
            routes.insert(
                name.to_owned(),
                json!({"deployments": [{"name": name, "adapter": adapter, "base_url": url,
                    "model": t["model"].as_str().unwrap_or("up-model")}]}),
            );
        }
        let gw = Gateway::start(Value::Object(routes), &[adapter], json!({}));
        for (file, f) in cases_of {
            cases += 1;
            let name = format!("{adapter}/{file}");
            let r = &f["response"];
            let headers = r["headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let body = match (&r["body"], &r["text"]) {
                (Value::Null, Value::String(t)) => t.clone().into_bytes(),
                (b, _) => serde_json::to_vec(b).unwrap(),
            };
            {
                let mut rp = replay.lock().unwrap();
                rp.answer = Some((r["status"].as_u64().unwrap() as u16, headers, body));
                rp.received.clear();
            }
            let mut request = f["request"].clone();
            request["model"] = f["target"]["deployment"].clone();
            let resp = client()
                .post(format!("{}/v1/chat/completions", gw.url))
                .header("content-type", "application/json")
                .body(request.to_string())
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            let outcome = check(&f, &replay.lock().unwrap().received, status.as_u16(), &text);
            if let Err(e) = outcome {
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} fixtures failed over HTTP:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert!(
        cases >= 20,
        "only {cases} success fixtures: the folders moved?"
    );
}

fn check(f: &Value, received: &[Received], status: u16, text: &str) -> Result<(), String> {
    let [(method, uri, headers, body)] = received else {
        return Err(format!(
            "the upstream received {} requests, not 1",
            received.len()
        ));
    };
    let want = &f["upstream_request"];
    if let Some(m) = want["method"].as_str()
        && m != method.as_str()
    {
        return Err(format!("method {method}"));
    }
    if let Some(p) = want["path"].as_str()
        && uri != &format!("/base{p}")
    {
        return Err(format!("upstream path {uri} (want /base{p})"));
    }
    for (k, v) in want["headers"].as_object().into_iter().flatten() {
        let got = headers.get(k).and_then(|h| h.to_str().ok());
        if got != v.as_str() {
            return Err(format!("upstream header {k}: {got:?} (want {v})"));
        }
    }
    if let Some(b) = want.get("body") {
        let got: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        subset(b, &got).map_err(|e| format!("upstream body {e}"))?;
    }
    if status != 200 {
        return Err(format!("status {status}: {text}"));
    }
    if f["request"]["stream"] == true {
        let folded = fold_sse(text)?;
        if let Some(mut want) = f["expect"].get("stream").cloned() {
            // Counted by the plugin-level suite; the caller sees no trace of them.
            want.as_object_mut().unwrap().remove("malformed");
            want.as_object_mut().unwrap().remove("chunks");
            subset(&want, &folded).map_err(|e| format!("stream {e}; got {folded}"))?;
        }
    } else if let Some(want) = f["expect"].get("answer") {
        let got: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
        subset(want, &got).map_err(|e| format!("answer {e}; got {got}"))?;
    }
    Ok(())
}
