//! The plugin work of one non-streamed request, with no network: the strategy
//! orders the route's deployments, the adapter builds the upstream request
//! and parses its answer, the evaluator checks that answer.
//!
//! Each call is measured alone and all four together (`one_request`), on warm
//! pooled instances, the way the pipeline runs them: async calls polled
//! inline on the caller's task (a request runtime worker in the gateway).
//! Budget: the whole plugin path at most 12 µs per request.
//!
//!     cargo bench --bench plugin_path -- --warm-up-time 1 --measurement-time 3

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::config::{Deadlines, QuarantineConfig};
use switchyard::domain::{
    Candidate, Capabilities, ChatResponse, Kind, RequestSummary, Target, TaskPriority,
    UpstreamRequest, UpstreamResponse, WindowStats,
};
use switchyard::plugins::pool::InstanceLimits;
use switchyard::plugins::{Plugin, Registry, RegistrySettings};

/// A typical small chat request, as a client sends it.
const REQUEST: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France? Answer in one sentence."}],"max_tokens":64,"temperature":0.2}"#;

/// A real-shaped OpenAI chat completion (~450 bytes), including the fields
/// the adapter passes through untouched (`refusal`, `logprobs`, ...).
const UPSTREAM_BODY: &str = r#"{"id":"chatcmpl-9x3Kq2LmZ8vQpR7sT1uW4yB6nE0aDf","object":"chat.completion","created":1717171717,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris, which has been the seat of its government for most of the last thousand years.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":24,"total_tokens":55},"system_fingerprint":"fp_0ba0d124f1"}"#;

/// The registry and everything one request hands to the plugins, built once
/// so the measured loops contain plugin calls only.
struct Fixture {
    // Kept alive: the compile cache lives there for the bench's duration.
    _cache: tempfile::TempDir,
    registry: Arc<Registry>,
    strategy: Arc<Plugin>,
    adapter: Arc<Plugin>,
    evaluator: Arc<Plugin>,
    request_id: Arc<str>,
    request: Arc<str>,
    summary: RequestSummary,
    candidates: Vec<Candidate>,
    target: Arc<Target>,
    response: UpstreamResponse,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new() -> Self {
        let plugins_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        // A fresh cache: the bench never reads compiled code another build left.
        let cache = tempfile::tempdir().expect("temp dir for the plugin compile cache");
        let registry = Registry::new(RegistrySettings {
            dir: plugins_dir.clone(),
            cache_dir: cache.path().to_owned(),
            limits: InstanceLimits {
                memory_bytes: 64 << 20,
                max_instances: 16,
            },
            deadlines: Deadlines::default(),
            adapter_queue: std::time::Duration::from_secs(2),
            quarantine: QuarantineConfig::default(),
            plugin_config: HashMap::new(),
            expected_kinds: HashMap::new(),
        })
        .expect("plugin engine");
        let get = |id: &str, kind: Kind| {
            registry.get(id, kind).unwrap_or_else(|e| {
                panic!(
                    "{e} (looked in {}; build the plugins with scripts/build-plugins)",
                    plugins_dir.display()
                )
            })
        };
        let candidates = ["primary", "secondary", "fallback"]
            .iter()
            .enumerate()
            .map(|(i, name)| candidate(name, i as u32))
            .collect();
        Self {
            strategy: get("priority", Kind::Strategy),
            adapter: get("openai", Kind::Adapter),
            evaluator: get("basic", Kind::Evaluator),
            _cache: cache,
            registry: registry.clone(),
            request_id: Arc::from("bench-0000000001"),
            request: Arc::from(REQUEST),
            summary: RequestSummary {
                model: "gpt-4o-mini".into(),
                input_tokens: 24,
                max_output_tokens: Some(64),
                stream: false,
                needs: Capabilities::empty(),
                priority: TaskPriority::Normal,
                tags: Vec::new(),
            },
            candidates,
            target: Arc::new(Target {
                deployment: "primary".into(),
                model: "gpt-4o-mini".into(),
            }),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("bench runtime"),
            response: UpstreamResponse {
                status: 200,
                headers: [
                    ("content-type", "application/json"),
                    ("x-request-id", "req_8f2c1e0b7a6d4f3e9c1b2a0d"),
                ]
                .into_iter()
                .collect(),
                body: UPSTREAM_BODY.as_bytes().to_vec(),
            },
        }
    }

    // The calls are awaited inside one runtime entry per batch (see
    // `timed`), as the gateway awaits them inside a request's task: a
    // `block_on` per call would time the runtime's entry and exit instead.

    async fn order(&self) -> Vec<u32> {
        self.strategy
            .order(
                &self.request_id,
                self.summary.clone(),
                self.candidates.clone(),
            )
            .await
            .expect("strategy order")
    }

    async fn build_request(&self) -> UpstreamRequest {
        self.adapter
            .build_request(&self.request_id, &self.target, &self.request)
            .await
            .expect("build_request call")
            .expect("build_request answer")
    }

    async fn parse_response(&self, response: &UpstreamResponse) -> ChatResponse {
        self.adapter
            .parse_response(&self.request_id, &self.target, response.clone())
            .await
            .expect("parse_response call")
            .expect("parse_response answer")
    }

    async fn evaluate(&self, answer: &str) -> bool {
        self.evaluator
            .evaluate(&self.request_id, self.request.clone(), Arc::from(answer))
            .await
            .expect("evaluate")
            .pass
    }

    /// What the pipeline does for a request answered by its first candidate.
    async fn one_request(&self) -> Vec<u8> {
        let order = self.order().await;
        let target = &self.candidates[order[0] as usize];
        black_box(target);
        let http = self.build_request().await;
        black_box(&http);
        let answer = self.parse_response(&self.response).await;
        assert!(self.evaluate(&answer.body).await);
        answer.body.into_bytes()
    }

    /// Runs `iters` of `step` inside one `block_on`, timed.
    fn timed<'a, F, Fut, T>(&'a self, iters: u64, step: F) -> Duration
    where
        F: Fn(&'a Self) -> Fut,
        Fut: std::future::Future<Output = T> + 'a,
    {
        self.rt.block_on(async {
            let started = Instant::now();
            for _ in 0..iters {
                black_box(step(self).await);
            }
            started.elapsed()
        })
    }
}

fn candidate(name: &str, priority: u32) -> Candidate {
    Candidate {
        deployment: name.into(),
        adapter: "openai".into(),
        healthy: true,
        headroom: 1.0,
        in_flight: 0,
        error_rate: 0.0,
        latency_ms: 420.0,
        input_cost_per_1m: 0.15,
        output_cost_per_1m: 0.6,
        cached_input_cost_per_1m: 0.075,
        priority,
        weight: 1,
        quality: 1.0,
        supports: Capabilities::all(),
        // A deployment with traffic: the monitor's figures cross too.
        recent: std::sync::Arc::new(WindowStats {
            attempts: 1200,
            requests_per_minute: 240.0,
            success_rate: 0.99,
            latency_p50_ms: 420.0,
            latency_p95_ms: 910.0,
            latency_p99_ms: 1500.0,
            ttft_p50_ms: 180.0,
            ttft_p95_ms: 400.0,
            output_tokens_per_second: 85.0,
            errors: vec![("overloaded", 0.008), ("timeout", 0.002)],
        }),
    }
}

fn plugin_path(c: &mut Criterion) {
    let f = Fixture::new();
    // Measure the success path only: a fixture that makes a plugin fail
    // would time error handling instead.
    assert_eq!(f.rt.block_on(f.order()), vec![0, 1, 2]);
    let answer = f.rt.block_on(f.parse_response(&f.response));
    assert!(
        f.rt.block_on(f.evaluate(&answer.body)),
        "the evaluator must accept the fixture answer"
    );
    let answer = answer.body;

    c.bench_function("strategy_order/priority_3_candidates", |b| {
        b.iter_custom(|n| f.timed(n, |f| f.order()))
    });
    c.bench_function("adapter_build_request/openai", |b| {
        b.iter_custom(|n| f.timed(n, |f| f.build_request()))
    });
    c.bench_function("adapter_parse_response/openai", |b| {
        b.iter_custom(|n| f.timed(n, |f| f.parse_response(black_box(&f.response))))
    });
    c.bench_function("evaluator_evaluate/basic", |b| {
        b.iter_custom(|n| f.timed(n, |f| f.evaluate(black_box(&answer))))
    });
    c.bench_function("one_request", |b| {
        b.iter_custom(|n| f.timed(n, |f| f.one_request()))
    });
}

/// Every bundled strategy ordering 8 candidates whose figures differ (so
/// the sorts and scores have work to do). Budget: 3 µs each, the call
/// included.
fn strategies(c: &mut Criterion) {
    let f = Fixture::new();
    let candidates: Vec<Candidate> = (0..8u32)
        .map(|i| {
            let mut c = candidate(&format!("d{i}"), i % 3);
            let x = i as f32;
            c.in_flight = (i * 7) % 5;
            c.latency_ms = 200.0 + 90.0 * ((i * 5) % 8) as f32;
            c.input_cost_per_1m = 0.1 + f64::from((i * 3) % 8);
            c.output_cost_per_1m = 0.4 + f64::from((i * 5) % 8);
            c.weight = 1 + i % 4;
            c.quality = 0.5 + 0.06 * x;
            c.headroom = if i == 6 { 0.0 } else { 1.0 - 0.1 * x };
            c.healthy = i != 7;
            c
        })
        .collect();
    for id in [
        "priority",
        "round-robin",
        "weighted",
        "least-used",
        "latency",
        "cost-aware",
        "suitability",
        "quality-aware",
    ] {
        let Ok(plugin) = f.registry.get(id, Kind::Strategy) else {
            panic!("strategy {id} is not built: run scripts/build-plugins");
        };
        let run = || async {
            plugin
                .order(&f.request_id, f.summary.clone(), candidates.clone())
                .await
                .expect("order")
        };
        assert_eq!(f.rt.block_on(run()).len(), 8, "{id} orders every candidate");
        c.bench_function(&format!("strategy_order_8/{id}"), |b| {
            b.iter_custom(|n| {
                f.rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        black_box(run().await);
                    }
                    started.elapsed()
                })
            })
        });
    }
}

/// A ~2 KB answer in plain prose, with no repetition an evaluator would
/// take for a loop.
const PROSE: &str = "Paris is the capital of France and its largest city. It sits on the \
Seine in the north of the country, at the heart of the Île-de-France region, and about two \
million people live within its twenty arrondissements. The city has been the seat of French \
government for most of the last thousand years, apart from a few periods when the court \
moved to Versailles or the government fled an invading army. Its layout today owes much to \
Baron Haussmann, who in the 1850s and 1860s cut broad boulevards through crowded medieval \
quarters, built sewers and aqueducts, and imposed the cream stone facades that visitors now \
think of as typically Parisian. Museums are among its main attractions: the Louvre holds the \
Mona Lisa and tens of thousands of other works, the Musée d'Orsay shows Impressionist painting \
in a former railway station, and the Centre Pompidou houses modern art behind its famous \
exterior pipes. Notre-Dame cathedral, damaged by fire in 2019, reopened in December 2024 \
after five years of restoration. The Eiffel Tower, built for the 1889 World's Fair, was meant \
to stand for twenty years but became the symbol of the city instead. Paris is also a centre \
of finance, fashion and gastronomy; its markets, bakeries and cafés shape daily life as much \
as its monuments do. Public transport is dense: sixteen metro lines, regional express trains \
and a growing network of cycle lanes connect the centre with the suburbs, and the Grand \
Paris Express will add about two hundred kilometres of automated lines. The city hosted the \
Summer Olympic Games in 1900, 1924 and 2024. In short, the capital of France is Paris, a city \
whose history, culture and economy make it one of the most visited places in the world.";

/// Every bundled evaluator on a ~2 KB answer (budget: 15 µs each, the call
/// included): prose for `basic`, `quality` and `refusal`, a JSON document
/// checked against the request's schema for `json-schema`.
fn evaluators(c: &mut Criterion) {
    let f = Fixture::new();
    let prose = PROSE.to_string();
    let answer = |content: &str| {
        serde_json::json!({"id": "c", "object": "chat.completion", "created": 1, "model": "d",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 400}})
        .to_string()
    };
    let items: Vec<serde_json::Value> = (0..24)
        .map(|i| serde_json::json!({"city": format!("City number {i}"), "temp_c": 10.5 + f64::from(i), "dry": i % 2 == 0}))
        .collect();
    let document = serde_json::json!({"cities": items}).to_string();
    let schema_request: Arc<str> = Arc::from(
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "Weather in 24 cities as JSON"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {
                "type": "object", "required": ["cities"], "additionalProperties": false,
                "properties": {"cities": {"type": "array", "items": {"type": "object",
                    "required": ["city", "temp_c", "dry"], "additionalProperties": false,
                    "properties": {"city": {"type": "string"}, "temp_c": {"type": "number"},
                        "dry": {"type": "boolean"}}}}}}}}})
        .to_string(),
    );
    for (id, request, body) in [
        ("basic", f.request.clone(), answer(&prose)),
        ("quality", f.request.clone(), answer(&prose)),
        ("refusal", f.request.clone(), answer(&prose)),
        ("json-schema", schema_request, answer(&document)),
    ] {
        let Ok(plugin) = f.registry.get(id, Kind::Evaluator) else {
            panic!("evaluator {id} is not built: run scripts/build-plugins");
        };
        let body: Arc<str> = Arc::from(body);
        let run = || async {
            plugin
                .evaluate(&f.request_id, request.clone(), body.clone())
                .await
                .expect("evaluate")
        };
        let v = f.rt.block_on(run());
        assert!(v.pass, "{id} passes the fixture answer: {:?}", v.reasons);
        c.bench_function(&format!("evaluator_2kb/{id}"), |b| {
            b.iter_custom(|n| {
                f.rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        black_box(run().await);
                    }
                    started.elapsed()
                })
            })
        });
    }
}

criterion_group!(benches, plugin_path, strategies, evaluators);
criterion_main!(benches);
