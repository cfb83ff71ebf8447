use super::*;

fn entry(body: &str, ttl_ms: i64) -> Entry {
    let now = now_ms();
    Entry {
        body: Bytes::from(body.to_string()),
        deployment: Arc::from("d"),
        cost: 0.5,
        created_ms: now,
        expires_ms: now + ttl_ms,
    }
}

fn config(entries: usize, mib: f64) -> CacheConfig {
    CacheConfig {
        max_entries: entries,
        max_mib: mib,
        persist: false,
    }
}

fn key(n: u8) -> Key {
    [n; 32]
}

#[tokio::test]
async fn the_least_recently_used_entry_goes_first_past_the_entry_bound() {
    let c = Cache::new(&config(2, 1.0), None);
    c.put(key(1), "r", entry("one", 60_000), None);
    c.put(key(2), "r", entry("two", 60_000), None);
    assert!(
        c.get(&key(1)).await.unwrap().is_some(),
        "1 is now the most recent"
    );
    c.put(key(3), "r", entry("three", 60_000), None);
    assert!(
        c.get(&key(2)).await.unwrap().is_none(),
        "2 was the least recent"
    );
    assert!(c.get(&key(1)).await.unwrap().is_some());
    assert!(c.get(&key(3)).await.unwrap().is_some());
    assert_eq!(c.size().0, 2);
    assert_eq!(c.counters.evicted.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn entries_are_evicted_past_the_byte_bound() {
    // 2 KiB of room: three 800-byte answers do not fit.
    let c = Cache::new(&config(100, 2.0 / 1024.0), None);
    let big = "x".repeat(800);
    for n in 1..=3 {
        c.put(key(n), "r", entry(&big, 60_000), None);
    }
    let (entries, bytes) = c.size();
    assert_eq!(entries, 2);
    assert!(bytes <= 2048, "{bytes}");
    assert!(c.get(&key(1)).await.unwrap().is_none());
    // A smaller bound on reload evicts at once.
    c.configure(&config(1, 1.0));
    assert_eq!(c.size().0, 1);
    assert!(c.get(&key(3)).await.unwrap().is_some());
}

#[tokio::test]
async fn an_expired_entry_is_a_miss_and_is_dropped() {
    let c = Cache::new(&config(10, 1.0), None);
    c.put(key(1), "r", entry("old", -1), None);
    assert!(c.get(&key(1)).await.unwrap().is_none());
    assert_eq!(c.size(), (0, 0));
}

#[test]
fn the_key_ignores_delivery_and_caller_but_not_the_question_or_the_plugins() {
    let k = |route: &str, plugins: &[&str], body: &str| {
        let n = key_for(route, plugins, body).unwrap();
        (n.key, n.deterministic)
    };
    let (a, det) = k(
        "m",
        &["h1"],
        r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert!(det);
    let (b, _) = k(
        "m",
        &["h1"],
        r#"{"messages":[{"content":"hi","role":"user"}],"stream":true,"user":"u1","temperature":0,"model":"m","stream_options":{"include_usage":true}}"#,
    );
    assert_eq!(a, b, "member order, stream and user do not count");
    let (c, det) = k(
        "m",
        &["h1"],
        r#"{"model":"m","temperature":0.7,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_ne!(a, c);
    assert!(!det);
    let (d, _) = k(
        "m",
        &["h2"],
        r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_ne!(a, d, "another plugin version");
    let (e, _) = k(
        "other",
        &["h1"],
        r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_ne!(a, e, "another route");
    assert!(key_for("m", &[], "[1]").is_err());
}

/// Prompt-cache marks change the bill, not the answer: one key with or
/// without them; the text they mark still counts.
#[test]
fn the_key_ignores_prompt_cache_marks() {
    let k = |body: &str| key_for("m", &["h1"], body).unwrap().key;
    let plain = k(
        r#"{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"rules"}]},{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
    );
    let marked = k(
        r#"{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"rules","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral","ttl":"1h"}}]}],"tools":[{"type":"function","function":{"name":"f"},"cache_control":{"type":"ephemeral"}}]}"#,
    );
    assert_eq!(plain, marked);
    let other = k(
        r#"{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"rules!","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
    );
    assert_ne!(plain, other);
}

#[test]
fn directives_read_both_headers_and_refuse_unknown_values() {
    let d = |cc, sw| Directives::parse(cc, sw).unwrap();
    assert_eq!(d(None, None), Directives::default());
    assert!(d(Some("no-cache"), None).no_read);
    assert!(d(Some("max-age=0, No-Store"), None).no_store);
    assert!(d(None, Some("on")).opt_in);
    let b = d(None, Some("bypass"));
    assert!(b.no_read && b.no_store);
    let r = d(None, Some("refresh"));
    assert!(r.no_read && !r.no_store);
    let e = Directives::parse(None, Some("always")).unwrap_err();
    assert!(
        e.contains("x-switchyard-cache") && e.contains("refresh"),
        "{e}"
    );
}

#[test]
fn a_replay_has_a_live_streams_chunks() {
    let answer = r#"{"id":"c1","object":"chat.completion","created":5,"model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    let text = String::from_utf8(replay::sse(answer.as_bytes(), true).unwrap()).unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(events[4], "[DONE]");
    let chunks: Vec<serde_json::Value> = events[..4]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == "c1" && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hello");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[3]["usage"]["total_tokens"], 4);
    let without = String::from_utf8(replay::sse(answer.as_bytes(), false).unwrap()).unwrap();
    assert!(!without.contains("usage"));
}

#[test]
fn a_replay_skips_what_is_not_a_tool_call() {
    let answer = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":["junk",{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#;
    let text = String::from_utf8(replay::sse(answer.as_bytes(), false).unwrap()).unwrap();
    assert!(text.contains(r#""tool_calls":[{"function""#), "{text}");
    assert!(!text.contains("junk"));
    assert!(replay::sse(b"not json", false).is_err());
}
