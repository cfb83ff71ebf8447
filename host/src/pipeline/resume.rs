//! Mid-stream resume: a committed stream whose upstream fails (cut, stalled,
//! an error event, an end without a finish) goes on on the next admissible
//! deployment without the client's stream ending.
//!
//! The client must never see duplicated, missing or contradictory text, so
//! what it already has decides how the next deployment is asked:
//! - one that continues a trailing assistant message (`prefill`) gets the
//!   request with the delivered text appended as that message, and all it
//!   says follows on;
//! - any other gets the request as it was, and its answer is forwarded only
//!   from where the delivered text ends, provided it begins with that text
//!   (a regenerated answer that diverges ends the stream with an error
//!   event, the only honest thing left to do).
//!
//! Only text can be spliced: a stream that delivered a tool call, several
//! choices or anything but `content` ends with the error event as before.

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;

use super::stream::StreamPump;
use super::{Gateway, Mode};
use crate::domain::{RequestSummary, StreamBatch, Usage};
use crate::failover::FailureClass;
use crate::health::InFlight;
use crate::plugins::StreamSession;
use crate::upstream::ReplyBody;

/// What a streamed request needs to run the pipeline again from its pump.
#[derive(Clone)]
pub(super) struct Resumable {
    /// The gateway the request started with (a reload meanwhile does not
    /// change the deployments it resumes on).
    pub gateway: Arc<Gateway>,
    /// The requested model and its fallbacks, as `route_for` resolves them.
    pub models: Vec<String>,
    pub summary: RequestSummary,
    /// The request as the client sent it (gateway members removed).
    pub request: Arc<str>,
    pub request_id: Arc<str>,
    pub begun: Instant,
    /// Resumes still allowed (the route's `retry.resumes`).
    pub left: u32,
}

/// How the next leg of a resumed stream is asked for.
pub(super) struct Leg {
    /// The request as it was (regenerating)...
    pub original: Arc<str>,
    /// ...and with the delivered text as a final assistant message (prefill).
    pub prefilled: Arc<str>,
    /// Deployments whose streams failed in this request: not asked again.
    pub failed: Vec<String>,
}

/// A resumed attempt whose stream delivered its first content: the pump
/// goes on reading it.
pub(super) struct Continuation {
    pub deployment: String,
    pub health: Arc<crate::health::DeploymentHealth>,
    pub session: StreamSession,
    pub body: ReplyBody,
    pub first: StreamBatch,
    pub in_flight: InFlight,
    pub idle: std::time::Duration,
    /// When its deployment's `total_ms` ends.
    pub total: Instant,
    /// Whether it was sent the delivered text as a prefill.
    pub prefilled: bool,
}

/// The text a client received of a stream, read back from the chunks it
/// was sent.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Delivered {
    /// The first choice's `content`, concatenated.
    pub text: String,
    /// The stream's `id` (kept on every chunk of later legs).
    pub id: Option<String>,
    /// A finish reason reached the client: the answer is complete.
    pub finished: bool,
    /// Why the stream cannot be spliced, if it cannot.
    pub unsplicable: Option<&'static str>,
}

impl Delivered {
    #[cfg(test)]
    pub(super) fn read(chunks: &[String]) -> Delivered {
        let mut d = Delivered::default();
        d.fold(chunks);
        d
    }

    /// Adds chunks sent after those already read.
    pub(super) fn fold(&mut self, chunks: &[String]) {
        #[derive(Deserialize)]
        struct Chunk {
            id: Option<String>,
            #[serde(default)]
            choices: Vec<Choice>,
        }
        #[derive(Deserialize)]
        struct Choice {
            #[serde(default)]
            index: u32,
            #[serde(default)]
            delta: serde_json::Map<String, Value>,
            #[serde(default)]
            finish_reason: Option<Value>,
        }
        let empty = |v: &Value| match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        for chunk in chunks {
            let Ok(chunk) = serde_json::from_str::<Chunk>(chunk) else {
                self.unsplicable = Some("a chunk it could not read");
                continue;
            };
            if self.id.is_none() {
                self.id = chunk.id;
            }
            for choice in chunk.choices {
                if choice.index != 0 {
                    self.unsplicable = Some("several choices");
                }
                if choice.finish_reason.is_some_and(|f| !f.is_null()) {
                    self.finished = true;
                }
                for (key, value) in choice.delta {
                    match (key.as_str(), value) {
                        ("content", Value::String(s)) => self.text.push_str(&s),
                        // The role is announced once; reasoning is not the
                        // answer's text (a later leg's is not forwarded).
                        ("role", _) => {}
                        (k, _) if k.starts_with("reasoning") => {}
                        (_, v) if empty(&v) => {}
                        ("tool_calls" | "function_call", _) => {
                            self.unsplicable = Some("a tool call")
                        }
                        _ => self.unsplicable = Some("more than text"),
                    }
                }
            }
        }
    }
}

/// What the client was sent, for a resume. Chunks are kept as they are (no
/// parsing on the request path) and folded into a [`Delivered`] once they
/// pass `KEEP_BYTES`, so a long stream holds its text, not its chunks; once
/// it cannot be spliced, nothing more is kept.
#[derive(Default)]
pub(super) struct SentLog {
    chunks: Vec<String>,
    bytes: usize,
    folded: Delivered,
}

/// Chunks kept unparsed at most (bytes).
const KEEP_BYTES: usize = 64 * 1024;

impl SentLog {
    pub(super) fn push(&mut self, mut chunks: Vec<String>) {
        if self.folded.unsplicable.is_some() {
            // Only whether the answer was finished still matters.
            self.folded.finished |= chunks.iter().any(|c| c.contains("\"finish_reason\":\""));
            return;
        }
        self.bytes += chunks.iter().map(String::len).sum::<usize>();
        self.chunks.append(&mut chunks);
        if self.bytes > KEEP_BYTES {
            self.fold();
        }
    }

    fn fold(&mut self) {
        self.folded.fold(&self.chunks);
        self.chunks.clear();
        self.bytes = 0;
    }

    /// Everything sent so far.
    pub(super) fn read(&mut self) -> &Delivered {
        self.fold();
        &self.folded
    }

    fn into_delivered(mut self) -> Delivered {
        self.fold();
        self.folded
    }
}

/// The request with `text` as its final assistant message (appended to the
/// caller's own if it ends with one: its prefill), and its output limit
/// lowered by what was delivered, so the whole answer keeps to it.
pub(super) fn prefilled(request: &str, text: &str) -> Option<String> {
    let mut v: Value = serde_json::from_str(request).ok()?;
    let messages = v.get_mut("messages")?.as_array_mut()?;
    match messages.last_mut() {
        Some(last) if last["role"] == "assistant" && last["content"].is_string() => {
            let mine = last["content"].as_str().unwrap_or_default();
            last["content"] = Value::String(format!("{mine}{text}"));
        }
        _ => messages.push(serde_json::json!({"role": "assistant", "content": text})),
    }
    let spent = u64::from(super::outcome::estimate_tokens(text.chars().count()));
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(limit) = v.get(key).and_then(Value::as_u64) {
            v[key] = Value::from(limit.saturating_sub(spent).max(1));
        }
    }
    Some(v.to_string())
}

/// Rewrites the chunks of a resumed leg so they follow on from what the
/// client has: the role announced again is dropped, a regenerated answer is
/// forwarded only past the delivered text, the stream keeps its first `id`,
/// and the usage chunk adds up every leg.
#[derive(Debug)]
pub(super) struct Splice {
    /// The delivered text a regenerated answer must replay first...
    delivered: String,
    /// ...and how much of it it has (all of it when prefilled).
    matched: usize,
    id: Option<String>,
    /// Usage of the earlier legs.
    carried: Usage,
}

impl Splice {
    pub(super) fn new(delivered: Delivered, prefilled: bool, carried: Usage) -> Splice {
        let matched = if prefilled { delivered.text.len() } else { 0 };
        Splice {
            delivered: delivered.text,
            matched,
            id: delivered.id,
            carried,
        }
    }

    /// The chunk to forward (`None`: nothing in it the client lacks), or why
    /// the leg cannot be spliced on.
    pub(super) fn apply(&mut self, chunk: String) -> Result<Option<String>, String> {
        let Ok(mut v) = serde_json::from_str::<Value>(&chunk) else {
            // Not ours to judge (as before a resume).
            return Ok(Some(chunk));
        };
        let Some(obj) = v.as_object_mut() else {
            return Ok(Some(chunk));
        };
        if let (Some(id), Some(slot)) = (&self.id, obj.get_mut("id")) {
            *slot = Value::String(id.clone());
        }
        let mut keep = false;
        if let Some(Value::Object(usage)) = obj.get_mut("usage") {
            let c = self.carried;
            add(usage, "prompt_tokens", c.prompt_tokens);
            add(usage, "completion_tokens", c.completion_tokens);
            add(
                usage,
                "total_tokens",
                c.prompt_tokens.saturating_add(c.completion_tokens),
            );
            // The details add up too: the earlier legs' cached prompt
            // tokens and cache writes are part of the prompt tokens just added.
            for (details, key, n) in [
                (
                    "prompt_tokens_details",
                    "cached_tokens",
                    c.cached_prompt_tokens,
                ),
                (
                    "prompt_tokens_details",
                    "cache_creation_tokens",
                    c.cache_write_tokens,
                ),
                (
                    "completion_tokens_details",
                    "reasoning_tokens",
                    c.reasoning_tokens,
                ),
            ] {
                if n > 0 {
                    // Absent, null or not an object: made one.
                    let entry = usage.entry(details).or_insert(Value::Null);
                    if !entry.is_object() {
                        *entry = serde_json::json!({});
                    }
                    if let Some(d) = entry.as_object_mut() {
                        let count = d.entry(key).or_insert(Value::from(0));
                        if !count.is_u64() {
                            *count = Value::from(0);
                        }
                        add(d, key, n);
                    }
                }
            }
            keep = true;
        }
        let Some(Value::Array(choices)) = obj.get_mut("choices") else {
            return Ok(Some(v.to_string()));
        };
        if choices.is_empty() {
            keep = true;
        }
        for choice in choices.iter_mut() {
            let finish = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            if let Some(Value::Object(delta)) = choice.get_mut("delta") {
                // Announced by the first leg already.
                delta.remove("role");
                // Reasoning mid-answer would read as part of it.
                delta.retain(|k, _| !k.starts_with("reasoning"));
                if self.matched < self.delivered.len() {
                    self.replay(delta)?;
                }
                keep |= delta.values().any(|v| match v {
                    Value::Null => false,
                    Value::String(s) => !s.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                });
            }
            if finish {
                if self.matched < self.delivered.len() {
                    return Err(format!(
                        "the regenerated answer ended within the {} bytes already delivered",
                        self.delivered.len()
                    ));
                }
                keep = true;
            }
        }
        Ok(keep.then(|| v.to_string()))
    }

    /// The leg ended: a regenerated answer must have replayed all the
    /// delivered text by then.
    pub(super) fn complete(&self) -> Result<(), String> {
        if self.matched < self.delivered.len() {
            return Err(format!(
                "the regenerated answer ended within the {} bytes already delivered",
                self.delivered.len()
            ));
        }
        Ok(())
    }

    /// A regenerated delta while the delivered text is being replayed: the
    /// part the client has is dropped, the rest kept.
    fn replay(&mut self, delta: &mut serde_json::Map<String, Value>) -> Result<(), String> {
        if delta
            .get("tool_calls")
            .is_some_and(|t| t.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(
                "the regenerated answer called a tool where the delivered text goes on".into(),
            );
        }
        let Some(Value::String(text)) = delta.get_mut("content") else {
            return Ok(());
        };
        let rest = &self.delivered[self.matched..];
        if rest.starts_with(text.as_str()) {
            self.matched += text.len();
            text.clear();
        } else if text.starts_with(rest) {
            *text = text[rest.len()..].to_string();
            self.matched = self.delivered.len();
        } else {
            return Err(format!(
                "the regenerated answer diverged from the delivered text at byte {}",
                self.matched
            ));
        }
        Ok(())
    }
}

fn add(usage: &mut serde_json::Map<String, Value>, key: &str, n: u32) {
    if let Some(v) = usage.get(key).and_then(Value::as_u64) {
        usage.insert(key.into(), Value::from(v.saturating_add(u64::from(n))));
    }
}

impl Gateway {
    /// Whether `d` continues a trailing assistant message: its config, or
    /// its adapter's `prefill` capability.
    pub(super) fn prefills(&self, d: &super::Deployment) -> bool {
        d.prefill.unwrap_or_else(|| {
            self.registry
                .get(&d.adapter, crate::domain::Kind::Adapter)
                .is_ok_and(|p| p.metadata().capabilities.iter().any(|c| c == "prefill"))
        })
    }
}

/// What a pump's attempt to resume came to.
pub(super) enum Resumed {
    /// Go on reading this leg.
    Leg(Box<Continuation>),
    /// The client has the whole answer already (its finish reason): the
    /// stream ends cleanly.
    Complete,
    /// Not resumable: the stream ends with the error event as it would
    /// have (the failed leg is still open).
    No,
    /// The failed leg is closed and no other deployment could go on: the
    /// stream ends with the error event, saying why.
    Failed(String),
    /// The client left while the next leg was sought (the failed leg is
    /// closed).
    ClientGone,
}

impl StreamPump {
    /// After `class` ended the current leg: the next one, if the stream may
    /// and can go on.
    pub(super) async fn resume(
        &mut self,
        class: FailureClass,
        message: &str,
        usage: Option<Usage>,
    ) -> Resumed {
        let delivered = self.sent.read();
        // The client has the whole answer: whatever broke after its finish
        // reason (the usage chunk, `[DONE]`) cannot make it incomplete.
        if delivered.finished {
            return Resumed::Complete;
        }
        // Out of the request's time, or the upstream refused the content:
        // going on elsewhere would not fix it. (A leg cut by its own
        // deployment's total_ms is resumed.)
        let time_left = self.request_deadline.is_none_or(|d| Instant::now() < d);
        let resumable = time_left
            && !matches!(
                class,
                FailureClass::ContentFiltered | FailureClass::Diverged
            );
        if !resumable || self.resumable.as_ref().is_none_or(|c| c.left == 0) {
            return Resumed::No;
        }
        if let Some(why) = delivered.unsplicable {
            tracing::info!(request_id = %self.request_id, model = %self.model,
                deployment = %self.deployment, "stream not resumed: it delivered {why}");
            return Resumed::No;
        }
        let delivered = std::mem::take(&mut self.sent).into_delivered();
        let Some(mut ctx) = self.resumable.take() else {
            return Resumed::No;
        };
        let Some(with_prefill) = prefilled(&ctx.request, &delivered.text) else {
            return Resumed::No;
        };
        ctx.left -= 1;
        // The failed leg ends here, judged like any failed attempt, and
        // gives back its place in flight while the next one is sought.
        let leg_usage = self.usage(usage);
        self.carried = sum(self.carried, leg_usage.0);
        if let Some(a) = self.rec.record().and_then(|r| r.attempts.last_mut()) {
            a.cut = true;
        }
        self.rec
            .end_stream(Some(&self.health), Some(class), Some(leg_usage));
        self.in_flight = None;
        self.completion_chars = 0;
        self.failed.push(self.deployment.clone());
        let leg = Leg {
            original: ctx.request.clone(),
            prefilled: Arc::from(with_prefill),
            failed: self.failed.clone(),
        };
        let gateway = ctx.gateway.clone();
        let chain: Vec<_> = ctx
            .models
            .iter()
            .filter_map(|m| gateway.route_for(m))
            .collect();
        let tx = self.tx.clone();
        let served = tokio::select! {
            () = tx.closed() => return Resumed::ClientGone,
            served = tokio::time::timeout_at(
                self.request_deadline.unwrap_or(self.deadline).into(),
                gateway.serve_chain(
                    &chain,
                    &ctx.summary,
                    &ctx.request,
                    Mode::Resume { leg: &leg, prefill: false },
                    &ctx.request_id,
                    ctx.begun,
                    &mut self.rec,
                ),
            ) => served,
        };
        let why = match served {
            Ok(Ok(Ok(super::Served::Resumed(next)))) => {
                tracing::warn!(request_id = %self.request_id, model = %self.model,
                    from = %self.deployment, to = %next.deployment,
                    class = class.name(), delivered_bytes = delivered.text.len(),
                    prefill = next.prefilled, "stream resumed on another deployment: {message}");
                self.prompt_extra_chars = if next.prefilled {
                    delivered.text.chars().count()
                } else {
                    0
                };
                // What the client has stays known, for a later resume.
                self.sent = SentLog {
                    folded: Delivered {
                        text: delivered.text.clone(),
                        id: delivered.id.clone(),
                        finished: false,
                        unsplicable: None,
                    },
                    ..SentLog::default()
                };
                self.splice = Some(Splice::new(delivered, next.prefilled, self.carried));
                self.resumable = Some(ctx);
                return Resumed::Leg(next);
            }
            Ok(Ok(Ok(_))) => "no stream".to_string(),
            Ok(Ok(Err(attempts))) => attempts
                .iter()
                .map(|a| format!("{}: {}", a.deployment, a.message))
                .collect::<Vec<_>>()
                .join("; "),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the request's deadline passed".into(),
        };
        let why = if why.is_empty() {
            "no other deployment".to_string()
        } else {
            why
        };
        tracing::warn!(request_id = %self.request_id, model = %self.model,
            from = %self.deployment, class = class.name(),
            "stream could not be resumed ({why}): {message}");
        Resumed::Failed(why)
    }
}

fn sum(a: Usage, b: Usage) -> Usage {
    Usage {
        prompt_tokens: a.prompt_tokens.saturating_add(b.prompt_tokens),
        completion_tokens: a.completion_tokens.saturating_add(b.completion_tokens),
        cached_prompt_tokens: a
            .cached_prompt_tokens
            .saturating_add(b.cached_prompt_tokens),
        reasoning_tokens: a.reasoning_tokens.saturating_add(b.reasoning_tokens),
        cache_write_tokens: a.cache_write_tokens.saturating_add(b.cache_write_tokens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Value) -> String {
        serde_json::json!({"id": "x", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    }

    fn first_leg() -> Vec<String> {
        let mut c = vec![chunk(
            serde_json::json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        for w in ["The ", "quick ", "brown"] {
            c.push(chunk(serde_json::json!({"content": w}), Value::Null));
        }
        c[1] = c[1].replace("\"x\"", "\"first\"");
        c[0] = c[0].replace("\"x\"", "\"first\"");
        c
    }

    fn text(chunks: &[String]) -> String {
        Delivered::read(chunks).text
    }

    #[test]
    fn the_delivered_text_is_read_back_from_the_chunks() {
        let d = Delivered::read(&first_leg());
        assert_eq!(d.text, "The quick brown");
        assert_eq!(d.id.as_deref(), Some("first"));
        assert!(!d.finished && d.unsplicable.is_none());
        let mut tool = first_leg();
        tool.push(chunk(
            serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
            Value::Null,
        ));
        assert_eq!(Delivered::read(&tool).unsplicable, Some("a tool call"));
        let two = r#"{"choices":[{"index":1,"delta":{"content":"b"}}]}"#.to_string();
        assert_eq!(Delivered::read(&[two]).unsplicable, Some("several choices"));
        let done = chunk(serde_json::json!({}), serde_json::json!("stop"));
        assert!(Delivered::read(&[done]).finished);
    }

    #[test]
    fn a_regenerated_answer_is_forwarded_from_where_the_client_is() {
        let d = Delivered::read(&first_leg());
        let mut s = Splice::new(d, false, Usage::default());
        let mut out = Vec::new();
        for c in [
            chunk(
                serde_json::json!({"role": "assistant", "content": ""}),
                Value::Null,
            ),
            chunk(serde_json::json!({"content": "The qu"}), Value::Null),
            chunk(serde_json::json!({"content": "ick brown fox"}), Value::Null),
            chunk(serde_json::json!({"content": " jumps"}), Value::Null),
            chunk(serde_json::json!({}), serde_json::json!("stop")),
        ] {
            out.extend(s.apply(c).unwrap());
        }
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(text(&out), " fox jumps");
        assert!(
            out.iter().all(|c| c.contains("\"first\"")),
            "the first leg's id"
        );
        assert!(!out.iter().any(|c| c.contains("role")));
    }

    #[test]
    fn a_diverging_or_shorter_regeneration_is_refused() {
        let mut s = Splice::new(Delivered::read(&first_leg()), false, Usage::default());
        let e = s
            .apply(chunk(
                serde_json::json!({"content": "The slow"}),
                Value::Null,
            ))
            .unwrap_err();
        assert!(e.contains("diverged"), "{e}");
        let mut s = Splice::new(Delivered::read(&first_leg()), false, Usage::default());
        s.apply(chunk(serde_json::json!({"content": "The "}), Value::Null))
            .unwrap();
        let e = s
            .apply(chunk(serde_json::json!({}), serde_json::json!("stop")))
            .unwrap_err();
        assert!(e.contains("ended within"), "{e}");
        let mut s = Splice::new(Delivered::read(&first_leg()), false, Usage::default());
        assert!(
            s.apply(chunk(
                serde_json::json!({"tool_calls": [{"index": 0}]}),
                Value::Null
            ))
            .is_err()
        );
    }

    #[test]
    fn a_prefilled_leg_goes_on_as_it_is_and_usage_adds_up() {
        let carried = Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            cached_prompt_tokens: 4,
            reasoning_tokens: 0,
            cache_write_tokens: 3,
        };
        let mut s = Splice::new(Delivered::read(&first_leg()), true, carried);
        assert_eq!(
            s.apply(chunk(serde_json::json!({"role": "assistant"}), Value::Null))
                .unwrap(),
            None,
            "the role alone is dropped"
        );
        let c = s
            .apply(chunk(serde_json::json!({"content": " fox"}), Value::Null))
            .unwrap()
            .unwrap();
        assert_eq!(text(&[c]), " fox");
        let usage = r#"{"id":"y","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}"#;
        let u: Value = serde_json::from_str(&s.apply(usage.into()).unwrap().unwrap()).unwrap();
        assert_eq!(u["usage"]["prompt_tokens"], 22);
        assert_eq!(u["usage"]["completion_tokens"], 5);
        assert_eq!(u["usage"]["total_tokens"], 27);
        // The first leg's cached tokens join the details (made when the
        // last leg had none).
        assert_eq!(u["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(
            u["usage"]["prompt_tokens_details"]["cache_creation_tokens"],
            3
        );
        assert!(u["usage"].get("completion_tokens_details").is_none());
        // Null details (or a null count) are made whole too.
        for details in [
            "null",
            r#"{"cached_tokens":null}"#,
            r#"{"cached_tokens":2}"#,
        ] {
            let mut s = Splice::new(Delivered::read(&first_leg()), true, carried);
            let usage = format!(
                r#"{{"id":"y","choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14,"prompt_tokens_details":{details}}}}}"#
            );
            let u: Value = serde_json::from_str(&s.apply(usage).unwrap().unwrap()).unwrap();
            let want = if details.contains(":2") { 6 } else { 4 };
            assert_eq!(
                u["usage"]["prompt_tokens_details"]["cached_tokens"], want,
                "{details}"
            );
        }
        assert_eq!(u["id"], "first");
    }

    #[test]
    fn the_prefill_keeps_the_output_limit_and_extends_the_callers_own() {
        let r = prefilled(
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Sure: "}],"max_tokens":100,"max_completion_tokens":2}"#,
            &"word ".repeat(40),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&r).unwrap();
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m.len(), 2, "one assistant turn: {m:?}");
        assert!(
            m[1]["content"]
                .as_str()
                .unwrap()
                .starts_with("Sure: word word")
        );
        assert_eq!(
            v["max_tokens"], 50,
            "200 characters delivered: ~50 tokens spent"
        );
        assert_eq!(v["max_completion_tokens"], 1, "never below one");
    }

    #[test]
    fn a_long_stream_keeps_its_text_not_its_chunks() {
        let mut log = SentLog::default();
        let word = chunk(serde_json::json!({"content": "word "}), Value::Null);
        for _ in 0..2000 {
            log.push(vec![word.clone()]);
        }
        assert!(log.bytes <= KEEP_BYTES, "folded as it goes");
        assert!(log.chunks.len() < 2000);
        let d = log.read();
        assert_eq!(d.text.len(), 2000 * 5);
        assert_eq!(d.id.as_deref(), Some("x"));
        // Reasoning and empty fields do not make it unsplicable; a tool call
        // does, and then nothing more is kept.
        let mut log = SentLog::default();
        log.push(vec![chunk(
            serde_json::json!({"reasoning_content": "hmm", "refusal": null, "tool_calls": []}),
            Value::Null,
        )]);
        assert_eq!(log.read().unsplicable, None);
        log.push(vec![chunk(
            serde_json::json!({"tool_calls": [{"index": 0, "id": "t"}]}),
            Value::Null,
        )]);
        assert_eq!(log.read().unsplicable, Some("a tool call"));
        log.push(vec![word.clone(); 10]);
        assert!(log.chunks.is_empty());
        log.push(vec![chunk(
            serde_json::json!({}),
            serde_json::json!("stop"),
        )]);
        assert!(log.read().finished, "a finish is still seen");
    }

    #[test]
    fn the_prefill_is_a_final_assistant_message() {
        let r = prefilled(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            "The q",
        )
        .unwrap();
        let v: Value = serde_json::from_str(&r).unwrap();
        assert_eq!(
            v["messages"][1],
            serde_json::json!({"role": "assistant", "content": "The q"})
        );
        assert!(prefilled("{}", "x").is_none());
    }
}
