//! The adapter conformance suite: every fixture in `tests/conformance/<id>/`
//! run against the compiled adapter `plugins/<id>.wasm`, in the host's real
//! plugin runtime, with streamed bodies framed by the host's own framer in
//! one piece, split in two at every byte offset, and one byte at a time.
//! The fixture format is in `tests/conformance/README.md`; adding an adapter
//! means adding a folder of fixtures.
//!
//! All failures of all adapters are collected and reported together, each
//! naming its fixture file, so one run shows everything that is wrong.

mod candidates;
mod fixture;
mod fold;
mod subset;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use switchyard::config::{Deadlines, QuarantineConfig};
use switchyard::domain::{
    BuildError, ErrorClass, Kind, QuotaHint, StreamBatch, Target, UpstreamError, UpstreamResponse,
    Usage,
};
use switchyard::plugins::pool::InstanceLimits;
use switchyard::plugins::{Plugin, Registry, RegistrySettings};

use fixture::{Fixture, subset};
use fold::Folded;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The plugins of `dir` in the host's plugin runtime, with default
/// deadlines and `max_instances` instances each.
fn registry(dir: &Path, cache: &Path, max_instances: usize) -> Arc<Registry> {
    Registry::new(RegistrySettings {
        dir: dir.to_owned(),
        cache_dir: cache.to_owned(),
        limits: InstanceLimits {
            memory_bytes: 64 << 20,
            max_instances,
        },
        deadlines: Deadlines::default(),
        adapter_queue: std::time::Duration::from_secs(5),
        quarantine: QuarantineConfig::default(),
        plugin_config: HashMap::new(),
        expected_kinds: HashMap::new(),
    })
    .expect("plugin registry")
}

#[test]
fn every_adapter_passes_its_fixtures() {
    let root = repo().join("tests/conformance");
    let mut adapters: Vec<String> = std::fs::read_dir(&root)
        .expect("tests/conformance")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    adapters.sort();
    let only = std::env::var("CONFORMANCE_ONLY").ok();
    adapters.retain(|a| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == a)));
    assert!(
        !adapters.is_empty(),
        "no adapter folders in {}",
        root.display()
    );

    let cache = tempfile::tempdir().expect("temp dir for the compile cache");
    let registry = registry(&repo().join("plugins"), cache.path(), 8);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut failures = Vec::new();
    let mut cases = 0;
    for id in &adapters {
        let plugin = match registry.get(id, Kind::Adapter) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!(
                    "{id}: adapter not loaded ({e}); build it with scripts/build-plugins"
                ));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(id))
            .expect("adapter folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{id}: no fixtures");
        for file in files {
            cases += 1;
            let name = format!("{id}/{}", file.file_name().unwrap().to_string_lossy());
            let fixture = match Fixture::read(&file) {
                Ok(f) => f,
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            };
            if let Err(e) = rt.block_on(run(&plugin, &fixture)) {
                failures.push(format!("{name} ({}): {e}", fixture.about));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} conformance cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    eprintln!(
        "conformance: {cases} cases of {} adapters passed",
        adapters.len()
    );
}

/// One fixture against one adapter.
async fn run(plugin: &Arc<Plugin>, f: &Fixture) -> Result<(), String> {
    let rid: Arc<str> = Arc::from("conformance");
    let target = Arc::new(f.target.clone());
    let request: Arc<str> = Arc::from(f.request.to_string());
    let built = plugin
        .build_request(&rid, &target, &request)
        .await
        .map_err(|e| format!("build-request call failed: {e}"))?;
    match (&f.invalid, built) {
        (Some(words), Err(BuildError::InvalidRequest(why))) => {
            for w in words {
                if !why.contains(w.as_str()) {
                    return Err(format!("refusal {why:?} does not mention {w:?}"));
                }
            }
            return Ok(());
        }
        (Some(_), other) => {
            return Err(format!(
                "expected an invalid-request refusal, got {other:?}"
            ));
        }
        (None, Err(e)) => return Err(format!("build-request refused: {e:?}")),
        (None, Ok(req)) => f.check_request(&req)?,
    }
    let Some(response) = &f.response else {
        return Ok(());
    };
    let response = &as_shown(plugin, response)?;
    let streamed = f.request.get("stream") == Some(&Value::Bool(true));
    if !(200..300).contains(&response.status) {
        let e = plugin
            .classify_error(&rid, response.clone())
            .await
            .map_err(|e| format!("classify-error call failed: {e}"))?;
        return f.check_error(&e, e.quota.as_ref());
    }
    if !streamed {
        let answer = plugin
            .parse_response(&rid, &target, response.clone())
            .await
            .map_err(|e| format!("parse-response call failed: {e}"))?;
        return match answer {
            Ok(a) => {
                let body: Value = serde_json::from_str(&a.body)
                    .map_err(|e| format!("answer is not JSON ({e}): {}", a.body))?;
                check_canonical_answer(&body, &target)?;
                if let Some(want) = f.expect.get("answer") {
                    subset(want, &body).map_err(|e| format!("answer {e}; got {body}"))?;
                }
                f.check_usage(a.usage)?;
                f.check_quota(a.quota.as_ref())?;
                f.expect_no_error()
            }
            Err(e) => f.check_error(&e, e.quota.as_ref()),
        };
    }
    // Streamed: the whole body at once is the reference; every split agrees.
    let body = response.body.as_slice();
    let reference = stream(plugin, &rid, &target, &request, response, &[body.len()]).await?;
    match &reference {
        Ok(folded) => f.check_stream(folded)?,
        Err(e) => f.check_error(e, None)?,
    }
    let mut cuts: Vec<Vec<usize>> = (1..body.len()).map(|i| vec![i, body.len() - i]).collect();
    cuts.push(vec![1; body.len()]);
    for cut in cuts {
        let got = stream(plugin, &rid, &target, &request, response, &cut).await?;
        if got != reference {
            let how = if cut.len() == 2 {
                format!("split at byte {}", cut[0])
            } else {
                "fed one byte at a time".to_owned()
            };
            return Err(format!(
                "stream {how} differs from the whole body: {got:?}\n    whole: {reference:?}"
            ));
        }
    }
    Ok(())
}

/// The fixture's answer with the headers the host would show this adapter:
/// none of the connection-level ones, and only those it declares it reads
/// (`adapter-metadata.response-headers`). So an adapter that reads a header
/// it did not declare fails here, as it would see nothing in production.
fn as_shown(plugin: &Plugin, response: &UpstreamResponse) -> Result<UpstreamResponse, String> {
    let wanted = plugin.metadata().response_headers.as_deref();
    Ok(UpstreamResponse {
        headers: switchyard::upstream::recorded_header_block(response.headers.pairs(), wanted)?,
        ..response.clone()
    })
}

/// The stream parsed with the body fed in pieces of the given sizes, as
/// the pipeline feeds it: pieces until one is done, then the end.
async fn stream(
    plugin: &Arc<Plugin>,
    rid: &Arc<str>,
    target: &Arc<Target>,
    request: &Arc<str>,
    response: &UpstreamResponse,
    pieces: &[usize],
) -> Result<Result<Folded, UpstreamError>, String> {
    let call = |e: switchyard::plugins::PluginError| format!("stream call failed: {e}");
    let (mut session, quota) = match plugin
        .open_stream(rid, target, request, response.headers.clone())
        .await
        .map_err(call)?
    {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let mut folded = Folded {
        quota,
        ..Folded::default()
    };
    let mut at = 0;
    for &n in pieces {
        let batch: StreamBatch = match session
            .feed(&response.body[at..at + n])
            .await
            .map_err(call)?
        {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        at += n;
        folded.add(batch, target)?;
        if folded.done {
            return Ok(Ok(folded));
        }
    }
    match session.finish().await.map_err(call)? {
        Ok(b) => folded.add(b, target)?,
        Err(e) => return Ok(Err(e)),
    }
    Ok(Ok(folded))
}

/// What every canonical answer must be, whatever the fixture says.
fn check_canonical_answer(body: &Value, target: &Target) -> Result<(), String> {
    subset(
        &json!({"object": "chat.completion", "model": target.deployment}),
        body,
    )
    .map_err(|e| format!("answer is not canonical: {e}; got {body}"))?;
    let choices = body["choices"]
        .as_array()
        .ok_or("answer has no choices array")?;
    if choices.is_empty() {
        return Err(format!("answer has no choice: {body}"));
    }
    for c in choices {
        if !c["message"].is_object() || c.get("finish_reason").is_none() {
            return Err(format!("answer choice lacks message or finish_reason: {c}"));
        }
    }
    if !body["id"].is_string() || !body["created"].is_u64() {
        return Err(format!("answer lacks id or created: {body}"));
    }
    Ok(())
}

fn class_name(c: &ErrorClass) -> &'static str {
    match c {
        ErrorClass::RateLimited(_) => "rate_limited",
        ErrorClass::Overloaded => "overloaded",
        ErrorClass::Timeout => "timeout",
        ErrorClass::ContextLengthExceeded => "context_length_exceeded",
        ErrorClass::ContentFiltered => "content_filtered",
        ErrorClass::Auth => "auth",
        ErrorClass::InvalidRequest => "invalid_request",
        ErrorClass::Permanent => "permanent",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_prompt_tokens": u.cached_prompt_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cache_write_tokens": u.cache_write_tokens,
    })
}

fn quota_json(q: &QuotaHint) -> Value {
    json!({
        "limit_requests": q.limit_requests,
        "remaining_requests": q.remaining_requests,
        "reset_requests_ms": q.reset_requests_ms,
        "limit_tokens": q.limit_tokens,
        "remaining_tokens": q.remaining_tokens,
        "reset_tokens_ms": q.reset_tokens_ms,
    })
}

/// For [`fixture`]: where the repository is, to name files.
pub fn shown(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}
