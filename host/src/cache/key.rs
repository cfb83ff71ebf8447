//! The cache key: what makes two requests ask for the same answer.

use sha2::{Digest, Sha256};

/// SHA-256 of a request's normalised form.
pub type Key = [u8; 32];

/// Members that do not change the answer: how it is delivered, who asks
/// (`user`), and the gateway's own `fallbacks`.
const IGNORED: &[&str] = &["stream", "stream_options", "user", "fallbacks"];

/// A request as the cache sees it.
#[derive(Clone, Copy, Debug)]
pub struct Normalised {
    pub key: Key,
    /// `temperature: 0`.
    pub deterministic: bool,
    /// `stream_options.include_usage`: a replay ends with the usage.
    pub include_usage: bool,
    /// One choice and no logprobs: a streamed answer can be stored whole.
    pub stream_whole: bool,
}

/// The key of `request` on `route` whose deployments and plugins' content
/// hashes are `parts`.
pub fn key_for(route: &str, parts: &[&str], request: &str) -> Result<Normalised, String> {
    let mut value: serde_json::Value =
        serde_json::from_str(request).map_err(|e| format!("request is not JSON: {e}"))?;
    let map = value
        .as_object_mut()
        .ok_or("request is not a JSON object")?;
    let include_usage = map
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let stream_whole = map
        .get("n")
        .and_then(serde_json::Value::as_u64)
        .is_none_or(|n| n <= 1)
        && !map
            .get("logprobs")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
    for name in IGNORED {
        map.remove(*name);
    }
    without_cache_marks(map);
    let deterministic = map
        .get("temperature")
        .and_then(serde_json::Value::as_f64)
        .is_some_and(|t| t == 0.0);
    integral_numbers(&mut value);
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    // The map sorts its members (no `preserve_order`): one text per
    // request, written straight into the hash.
    serde_json::to_writer(&mut h, &value).map_err(|e| e.to_string())?;
    Ok(Normalised {
        key: h.finalize().into(),
        deterministic,
        include_usage,
        stream_whole,
    })
}

/// Prompt-cache marks (`cache_control` on content parts and tools) change
/// what the provider bills, not what it answers: two requests that differ
/// only in them are one question.
fn without_cache_marks(map: &mut serde_json::Map<String, serde_json::Value>) {
    let unmark = |item: &mut serde_json::Value| {
        if let Some(o) = item.as_object_mut() {
            o.remove("cache_control");
        }
    };
    if let Some(messages) = map.get_mut("messages").and_then(|m| m.as_array_mut()) {
        messages
            .iter_mut()
            .filter_map(|m| m.get_mut("content")?.as_array_mut())
            .flatten()
            .for_each(unmark);
    }
    if let Some(tools) = map.get_mut("tools").and_then(|t| t.as_array_mut()) {
        tools.iter_mut().for_each(unmark);
    }
}

/// `0.0` and `0` are one number in JSON: written alike.
fn integral_numbers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9e15)
            {
                *v = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}
