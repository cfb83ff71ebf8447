//! The whole request path in process, with no sockets: the HTTP handler
//! (axum router, as served), the pipeline (route, strategy, adapter,
//! upstream exchange, evaluator) and the answer's body, against an
//! in-process upstream ([`Upstream::in_process`]) that answers at once.
//!
//! What it leaves out is what the load test (`scripts/load`) adds: the two
//! TCP exchanges and their wake-ups, and log formatting (no subscriber is
//! installed here). Variants: `full` (priority strategy,
//! openai adapter, basic evaluator), `cheap` (the adapter only),
//! `streamed` (full, an SSE answer of six events read at once),
//! `streamed_paced` (the same events, a read each) and `full_stored` (full,
//! with the store on: the request's side of recording it, its rows built
//! and queued; the writer commits them on its own thread, not timed here).
//!
//!     cargo bench --bench request_path -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use switchyard::config::Config;
use switchyard::pipeline::Gateway;
use switchyard::plugins::{Registry, RegistrySettings};
use switchyard::upstream::Upstream;
use tower::ServiceExt;

/// The load test's request (`scripts/load.d/chat.lua`).
const REQUEST: &str = r#"{"model":"full","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France? Answer in one sentence."}],"max_tokens":64,"temperature":0.2}"#;

/// A real-shaped OpenAI chat completion with usage.
const ANSWER: &str = r#"{"id":"chatcmpl-9x3Kq2LmZ8vQpR7sT1uW4yB6nE0aDf","object":"chat.completion","created":1717171717,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris, which has been the seat of its government for most of the last thousand years.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":24,"total_tokens":55},"system_fingerprint":"fp_0ba0d124f1"}"#;

/// The same answer streamed: role, four content pieces, finish with usage,
/// `[DONE]`: six events.
fn sse_answer() -> Vec<Bytes> {
    let head = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":"#;
    let mut out = Vec::new();
    let mut event = |delta: &str, finish: &str, usage: &str| {
        out.push(Bytes::from(format!(
            "data: {head}{delta},\"finish_reason\":{finish}}}]{usage}}}\n\n"
        )));
    };
    event(r#"{"role":"assistant","content":""}"#, "null", "");
    for piece in ["The capital ", "of France ", "is ", "Paris."] {
        event(&format!("{{\"content\":{piece:?}}}"), "null", "");
    }
    event(
        "{}",
        "\"stop\"",
        r#","usage":{"prompt_tokens":31,"completion_tokens":8,"total_tokens":39}"#,
    );
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

struct Fixture {
    _cache: tempfile::TempDir,
    /// The store's database, when the fixture records requests.
    _store: Option<tempfile::TempDir>,
    app: Router,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new(stored: bool) -> Self {
        let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        let cache = tempfile::tempdir().expect("temp dir for the plugin compile cache");
        let deployment = serde_json::json!([{
            "name": "mock", "adapter": "openai", "base_url": "http://mock.invalid/v1", "model": "echo"
        }]);
        let config = serde_json::json!({
            "listen": "127.0.0.1:0",
            "plugins": {"dir": plugins, "cache_dir": cache.path()},
            "routes": {
                "full": {"strategy": "priority", "evaluator": "basic", "deployments": deployment},
                "cheap": {"deployments": [{
                    "name": "mock-cheap", "adapter": "openai", "base_url": "http://mock.invalid/v1", "model": "echo"
                }]},
                "paced": {"strategy": "priority", "evaluator": "basic", "deployments": [{
                    "name": "mock-paced", "adapter": "openai", "base_url": "http://paced.invalid/v1", "model": "echo"
                }]},
                "cached": {"strategy": "priority", "evaluator": "basic",
                    "cache": {"enabled": true, "all_requests": true}, "deployments": [{
                    "name": "mock-cached", "adapter": "openai", "base_url": "http://mock.invalid/v1", "model": "echo"
                }]}
            }
        });
        let config = Config::from_str(&config.to_string(), "bench.json".as_ref(), ".".as_ref())
            .expect("bench config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _entered = rt.enter();
        let registry = Registry::new(RegistrySettings::from(&config)).unwrap_or_else(|e| {
            panic!("{e} (build the plugins with scripts/build-plugins)");
        });
        let sse = sse_answer();
        let upstream = Upstream::in_process(Arc::new(move |r: Request<Bytes>| {
            let streamed = r.body().windows(13).any(|w| w == br#""stream":true"#);
            let (kind, body) = if !streamed {
                (
                    "application/json",
                    vec![Bytes::from_static(ANSWER.as_bytes())],
                )
            } else if r.uri().host() == Some("paced.invalid") {
                // A model's pace: each event in a read of its own.
                ("text/event-stream", sse.clone())
            } else {
                ("text/event-stream", vec![sse.concat().into()])
            };
            Response::builder()
                .header("content-type", kind)
                .body(body)
                .expect("answer")
        }));
        let gateway = Gateway::new(&config, registry)
            .expect("gateway")
            .with_upstream(upstream);
        let store_dir = stored.then(|| tempfile::tempdir().expect("temp dir for the store"));
        let store = store_dir
            .as_ref()
            .map(|d| switchyard::store::Store::open(&d.path().join("bench.db")));
        let app = switchyard::server::router(
            switchyard::live::Live::fixed(
                gateway,
                Arc::new(switchyard::pipeline::Sinks {
                    cache: Some(switchyard::cache::Cache::new(&config.cache, None)),
                    store,
                    ..Default::default()
                }),
            ),
            config.server.max_body_bytes,
        );
        drop(_entered);
        Self {
            _cache: cache,
            _store: store_dir,
            app,
            rt,
        }
    }

    /// One request through the router; the answer's body, whole.
    async fn request(&self, body: &Bytes) -> Bytes {
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .expect("request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), 200);
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body")
    }

    /// Runs `iters` requests inside one `block_on`, timed.
    fn timed(&self, iters: u64, body: &Bytes) -> Duration {
        self.rt.block_on(async {
            let started = Instant::now();
            for _ in 0..iters {
                black_box(self.request(body).await);
            }
            started.elapsed()
        })
    }
}

fn request_path(c: &mut Criterion) {
    let f = Fixture::new(false);
    let full = Bytes::from_static(REQUEST.as_bytes());
    let cheap = Bytes::from(REQUEST.replacen("\"full\"", "\"cheap\"", 1));
    let streamed = Bytes::from(format!(
        "{},\"stream\":true}}",
        &REQUEST[..REQUEST.len() - 1]
    ));
    // Measure answers, not errors.
    let answer = f.rt.block_on(f.request(&full));
    assert!(answer.starts_with(br#"{"id":"#), "{answer:?}");
    let events = f.rt.block_on(f.request(&streamed));
    assert!(events.ends_with(b"data: [DONE]\n\n"), "{events:?}");
    assert!(String::from_utf8_lossy(&events).contains("Paris"));

    c.bench_function("request_path/full", |b| {
        b.iter_custom(|n| f.timed(n, &full))
    });
    c.bench_function("request_path/cheap", |b| {
        b.iter_custom(|n| f.timed(n, &cheap))
    });
    c.bench_function("request_path/streamed", |b| {
        b.iter_custom(|n| f.timed(n, &streamed))
    });
    // The same six events, each read on its own (as a model's tokens come):
    // less this row the one above, over five, is what a read costs.
    let paced =
        Bytes::from(String::from_utf8_lossy(&streamed).replacen("\"full\"", "\"paced\"", 1));
    let events = f.rt.block_on(f.request(&paced));
    assert!(events.ends_with(b"data: [DONE]\n\n"), "{events:?}");
    c.bench_function("request_path/streamed_paced", |b| {
        b.iter_custom(|n| f.timed(n, &paced))
    });
    let stored = Fixture::new(true);
    c.bench_function("request_path/full_stored", |b| {
        b.iter_custom(|n| stored.timed(n, &full))
    });
    // Every request after the first answered from the response cache.
    let cached = Bytes::from(REQUEST.replacen("\"full\"", "\"cached\"", 1));
    f.rt.block_on(f.request(&cached));
    c.bench_function("request_path/cache_hit", |b| {
        b.iter_custom(|n| f.timed(n, &cached))
    });
    c.bench_function("cache/key", |b| {
        b.iter(|| {
            black_box(switchyard::cache::key_for("cached", &["basis", "hash"], REQUEST).unwrap())
        })
    });
}

criterion_group!(benches, request_path);
criterion_main!(benches);
