//! Every bundled adapter on a typical exchange, taken from its conformance
//! fixtures (`tests/conformance/<id>/`), the answer's headers as the host
//! shows them to that adapter (those it declares it reads): `basic.json` for
//! a request built and its answer parsed (budget: 8 µs a pair), `stream_text.json` for a
//! streamed answer parsed the way the pipeline does it, timed per event
//! (budget: 1 µs an event), a long answer's token events
//! (`adapter_stream_token`: 64 in one call, and a call each), and the fixed
//! cost of one `parse-stream` call (`adapter_stream_empty_call`). Warm
//! pooled instances, calls polled inline.
//!
//!     cargo bench --bench adapters -- --warm-up-time 1 --measurement-time 3
//!
//! `BENCH_PLUGINS=DIR` loads the adapters from another folder than
//! `plugins/` (e.g. an older build's, for a before/after in one sitting).

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use switchyard::config::{Deadlines, QuarantineConfig};
use switchyard::domain::{Kind, Target, UpstreamResponse};
use switchyard::plugins::pool::InstanceLimits;
use switchyard::plugins::{Plugin, Registry, RegistrySettings, StreamSession};
use switchyard::upstream::{header_block, recorded_header_block};

const ADAPTERS: [&str; 4] = ["openai", "anthropic", "gemini", "ollama"];

struct Case {
    target: Arc<Target>,
    request: Arc<str>,
    response: UpstreamResponse,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn case(adapter: &str, file: &str) -> Case {
    let path = repo().join("tests/conformance").join(adapter).join(file);
    let f: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let r = &f["response"];
    let body = match (&r["body"], &r["text"]) {
        (Value::Null, Value::String(t)) => t.clone().into_bytes(),
        (b, _) => serde_json::to_vec(b).unwrap(),
    };
    Case {
        target: Arc::new(Target {
            deployment: f["target"]["deployment"].as_str().unwrap_or("dep").into(),
            model: f["target"]["model"].as_str().unwrap_or("up-model").into(),
        }),
        request: Arc::from(f["request"].to_string()),
        response: UpstreamResponse {
            status: r["status"].as_u64().unwrap() as u16,
            headers: recorded_header_block(
                r["headers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap())),
                None,
            )
            .unwrap(),
            body,
        },
    }
}

/// The case with its answer's headers as the host passes them to an adapter
/// that declares it reads `declared`.
fn shown(mut c: Case, declared: Option<&[String]>) -> Case {
    c.response.headers = recorded_header_block(c.response.headers.pairs(), declared).unwrap();
    c
}

/// Events in a streamed body: blank-line separated (SSE) or lines (NDJSON).
fn events(body: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(body);
    let sse = text.matches("\n\n").count() + text.matches("\r\n\r\n").count();
    if sse > 0 {
        sse as u32
    } else {
        text.lines().filter(|l| !l.trim().is_empty()).count() as u32
    }
}

async fn build(plugin: &Arc<Plugin>, rid: &Arc<str>, c: &Case) {
    let req = plugin
        .build_request(rid, &c.target, &c.request)
        .await
        .unwrap()
        .unwrap();
    black_box(req);
}

async fn parse(plugin: &Arc<Plugin>, rid: &Arc<str>, c: &Case) {
    let answer = plugin
        .parse_response(rid, &c.target, c.response.clone())
        .await
        .unwrap()
        .unwrap();
    black_box(answer);
}

async fn pair(plugin: &Arc<Plugin>, rid: &Arc<str>, c: &Case) {
    build(plugin, rid, c).await;
    parse(plugin, rid, c).await;
}

async fn stream(plugin: &Arc<Plugin>, rid: &Arc<str>, c: &Case) {
    let (mut s, _) = plugin
        .open_stream(rid, &c.target, &c.request, c.response.headers.clone())
        .await
        .unwrap()
        .unwrap();
    let batch = s.feed(&c.response.body).await.unwrap().unwrap();
    if !batch.done {
        black_box(s.finish().await.unwrap().unwrap());
    }
    black_box(batch);
}

/// The body cut after each event, as an upstream that flushes every event
/// delivers it (one socket read, one `feed`, per event): after each blank
/// line of SSE (`\r\n\r\n` or `\n\n`), after each line of NDJSON.
fn chunks(body: &[u8]) -> Vec<Vec<u8>> {
    let has = |sep: &[u8]| body.windows(sep.len()).any(|w| w == sep);
    let sep: &[u8] = if has(b"\r\n\r\n") {
        b"\r\n\r\n"
    } else if has(b"\n\n") {
        b"\n\n"
    } else {
        b"\n"
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= body.len() {
        if &body[i..i + sep.len()] == sep {
            out.push(body[start..i + sep.len()].to_vec());
            start = i + sep.len();
            i = start;
        } else {
            i += 1;
        }
    }
    if start < body.len() {
        out.push(body[start..].to_vec());
    }
    out
}

/// The stream's events fed one call each, after it was opened (not timed):
/// the cost of each chunk as it arrives.
async fn per_chunk(plugin: &Arc<Plugin>, rid: &Arc<str>, c: &Case, chunks: &[Vec<u8>]) -> Duration {
    let (mut s, _) = plugin
        .open_stream(rid, &c.target, &c.request, c.response.headers.clone())
        .await
        .unwrap()
        .unwrap();
    let t = Instant::now();
    let mut done = false;
    for chunk in chunks {
        let batch = s.feed(chunk).await.unwrap().unwrap();
        done |= batch.done;
        black_box(batch);
    }
    if !done {
        black_box(s.finish().await.unwrap().unwrap());
    }
    t.elapsed()
}

/// The index, in its `stream_text` fixture's events, of an ordinary token
/// event of each adapter's dialect (text, no finish, no usage-only event).
fn token_event(adapter: &str) -> usize {
    match adapter {
        // message_start, content_block_start, ping, then text deltas.
        "anthropic" => 3,
        _ => 1,
    }
}

/// A long answer's steady state: the stream opened and fed up to its first
/// token event (not timed), then `TOKENS` more token events, fed in one call
/// (`batched`) or one call each. Returns the time per token event.
async fn tokens(
    plugin: &Arc<Plugin>,
    rid: &Arc<str>,
    c: &Case,
    prefix: &[Vec<u8>],
    token: &[u8],
    batched: bool,
) -> Duration {
    let (mut s, _) = plugin
        .open_stream(rid, &c.target, &c.request, c.response.headers.clone())
        .await
        .unwrap()
        .unwrap();
    for event in prefix {
        black_box(s.feed(event).await.unwrap().unwrap());
    }
    let body = if batched {
        token.repeat(TOKENS)
    } else {
        Vec::new()
    };
    let t = Instant::now();
    Counted(Box::pin(token_feeds(&mut s, token, &body))).await;
    t.elapsed() / TOKENS as u32
}

/// A future polled through one function that is never inlined, so that
/// callgrind can count it alone
/// (`--toggle-collect='*Counted*poll*'`).
struct Counted<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for Counted<F> {
    type Output = F::Output;
    #[inline(never)]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// The measured part of [`tokens`]: `body` (`TOKENS` token events) in one
/// call, or, when it is empty, `token` in `TOKENS` calls.
async fn token_feeds(s: &mut StreamSession, token: &[u8], body: &[u8]) {
    if !body.is_empty() {
        let batch = s.feed(body).await.unwrap().unwrap();
        assert_eq!(batch.chunks.len(), TOKENS, "a chunk per token event");
        black_box(batch);
        return;
    }
    for _ in 0..TOKENS {
        let batch = s.feed(token).await.unwrap().unwrap();
        assert_eq!(batch.chunks.len(), 1, "a chunk per token event");
        black_box(batch);
    }
}

/// Token events of the long answer [`tokens`] measures.
const TOKENS: usize = 64;

/// The response headers of an OpenAI answer (names and value shapes as the
/// API sends them).
fn provider_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("date", "Fri, 04 Dec 2026 16:27:39 GMT"),
        ("content-type", "application/json"),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
        ("access-control-expose-headers", "X-Request-ID"),
        ("openai-organization", "user-abc123"),
        ("openai-processing-ms", "412"),
        ("openai-project", "proj_abc123"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "29999950"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "0s"),
        ("x-request-id", "req_0123456789abcdef0123456789abcdef"),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains; preload",
        ),
        ("cf-cache-status", "DYNAMIC"),
        (
            "set-cookie",
            "__cf_bm=AbCdEf0123456789-1700000000-1.0.1.1-AbCdEf; path=/; expires=Fri, 04-Dec-26 16:57:39 GMT; domain=.api.openai.com; HttpOnly; Secure; SameSite=None",
        ),
        (
            "set-cookie",
            "_cfuvid=AbCdEf0123456789-1700000000000-0.0.1.1-604800000; path=/; domain=.api.openai.com; HttpOnly; Secure; SameSite=None",
        ),
        ("x-content-type-options", "nosniff"),
        ("server", "cloudflare"),
        ("cf-ray", "8f0123456789abcd-AMS"),
        ("alt-svc", "h3=\":443\"; ma=86400"),
    ]
}

fn adapters(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let registry = Registry::new(RegistrySettings {
        dir: std::env::var_os("BENCH_PLUGINS")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("plugins")),
        cache_dir: cache.path().to_owned(),
        limits: InstanceLimits {
            memory_bytes: 64 << 20,
            max_instances: 16,
        },
        deadlines: Deadlines::default(),
        adapter_queue: Duration::from_secs(2),
        quarantine: QuarantineConfig::default(),
        plugin_config: HashMap::new(),
        expected_kinds: HashMap::new(),
    })
    .expect("plugin registry (build the plugins with scripts/build-plugins)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rid: Arc<str> = Arc::from("bench-0000000001");
    for id in ADAPTERS {
        let plugin = registry.get(id, Kind::Adapter).unwrap();
        let declared = plugin.metadata().response_headers.clone();
        let basic = shown(case(id, "basic.json"), declared.as_deref());
        let streamed = shown(case(id, "stream_text.json"), declared.as_deref());
        let n = events(&streamed.response.body);
        rt.block_on(pair(&plugin, &rid, &basic));
        rt.block_on(stream(&plugin, &rid, &streamed));
        c.bench_function(&format!("adapter_pair/{id}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        // Counted: callgrind can count a pair alone
                        // (`--toggle-collect='*Counted*poll*'`).
                        Counted(Box::pin(pair(&plugin, &rid, &basic))).await;
                    }
                    t.elapsed()
                })
            })
        });
        // What response headers cost a parse: the basic answer with the
        // headers a provider sends (OpenAI's set, 24), with those the host
        // shows any adapter (18: no connection-level ones, no cookies), and
        // with those the openai adapter declares it reads (7).
        if id == "openai" {
            let mut sent = http::HeaderMap::new();
            for (k, v) in provider_headers() {
                sent.append(k, http::HeaderValue::from_static(v));
            }
            let declared = declared.as_deref();
            let every: switchyard::domain::HeaderBlock = provider_headers().into_iter().collect();
            for (label, headers) in [
                ("sent", every),
                ("shown", header_block(&sent, None)),
                ("read", header_block(&sent, declared)),
            ] {
                let mut hc = case(id, "basic.json");
                hc.response.headers = headers;
                let n = hc.response.headers.pairs().count();
                c.bench_function(&format!("adapter_parse/{id}/{n}_headers_{label}"), |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let t = Instant::now();
                            for _ in 0..iters {
                                parse(&plugin, &rid, &hc).await;
                            }
                            t.elapsed()
                        })
                    })
                });
            }
        }
        // The two halves apart: where a pair's time goes.
        c.bench_function(&format!("adapter_build/{id}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        build(&plugin, &rid, &basic).await;
                    }
                    t.elapsed()
                })
            })
        });
        c.bench_function(&format!("adapter_parse/{id}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        parse(&plugin, &rid, &basic).await;
                    }
                    t.elapsed()
                })
            })
        });
        // Per event as events arrive: one feed call each, the stream's
        // opening not counted.
        let cut = chunks(&streamed.response.body);
        c.bench_function(
            &format!("adapter_stream_chunk/{id}/{}_chunks", cut.len()),
            |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += per_chunk(&plugin, &rid, &streamed, &cut).await;
                        }
                        total / cut.len() as u32
                    })
                })
            },
        );
        // The fixed cost of one parse-stream call: one event the adapter
        // skips at once (empty SSE data; an NDJSON object with no message).
        let empty: &[u8] = if id == "ollama" {
            b"{}\n"
        } else {
            b"data: \n\n"
        };
        c.bench_function(&format!("adapter_stream_empty_call/{id}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let (mut s, _) = plugin
                        .open_stream(
                            &rid,
                            &streamed.target,
                            &streamed.request,
                            streamed.response.headers.clone(),
                        )
                        .await
                        .unwrap()
                        .unwrap();
                    let t = Instant::now();
                    for _ in 0..iters {
                        black_box(s.feed(empty).await.unwrap().unwrap());
                    }
                    t.elapsed()
                })
            })
        });
        // A long answer's token events: the parse of one chunk, with the
        // cost of a call spread over 64 events (`batched`), and as tokens
        // arrive one by one from a streaming upstream (a call each).
        let token = &cut[token_event(id)];
        let prefix = &cut[..=token_event(id)];
        for (label, batched) in [("batched", true), ("a_call_each", false)] {
            c.bench_function(&format!("adapter_stream_token/{id}/{label}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += tokens(&plugin, &rid, &streamed, prefix, token, batched).await;
                        }
                        total
                    })
                })
            });
        }
        // Per event: the whole stream's time over its event count.
        c.bench_function(&format!("adapter_stream_per_event/{id}/{n}_events"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        stream(&plugin, &rid, &streamed).await;
                    }
                    t.elapsed() / n
                })
            })
        });
    }
}

criterion_group!(benches, adapters);
criterion_main!(benches);
