//! What a streamed answer said, read off its canonical chunks: whether a
//! chunk carries part of the answer (a stream commits only then), the first
//! choice reassembled (a transcript), and its evaluation once delivered.

use std::sync::Arc;

use serde::Deserialize;

use crate::domain::{Kind, Verdict};
use crate::plugins::Registry;

/// Evaluating a streamed answer once it is complete. The client already has
/// it, so a fail cannot trigger failover: it is logged and lowers the
/// deployment's quality score, which strategies see.
pub(super) struct StreamEvaluation {
    pub(super) registry: Arc<Registry>,
    pub(super) evaluator: String,
    pub(super) request: Arc<str>,
    pub(super) request_id: Arc<str>,
    pub(super) transcript: Transcript,
}

impl StreamEvaluation {
    /// The verdict, or `None` when the evaluator failed (logged).
    pub(super) async fn run(&self, deployment: &str) -> Option<Verdict> {
        let response = Arc::from(self.transcript.to_completion(deployment));
        let verdict = match self.registry.get(&self.evaluator, Kind::Evaluator) {
            Ok(p) => {
                p.evaluate(&self.request_id, self.request.clone(), response)
                    .await
            }
            Err(e) => Err(e),
        };
        match verdict {
            Err(e) => {
                tracing::warn!(plugin = %self.evaluator, "evaluator failed on a streamed answer: {e}");
                None
            }
            Ok(v) => {
                if !v.pass {
                    tracing::warn!(plugin = %self.evaluator, score = v.score, reasons = ?v.reasons,
                        "evaluator rejected a streamed answer (already delivered)");
                }
                Some(v)
            }
        }
    }
}

/// The first choice of a streamed answer, reassembled from its chunks.
#[derive(Default)]
pub(super) struct Transcript {
    /// The upstream's `id` and `model`, from the first chunk naming them.
    id: Option<String>,
    model: Option<String>,
    content: String,
    finish_reason: Option<String>,
    tool_calls: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkView {
    #[serde(default)]
    choices: Vec<ChoiceView>,
    id: Option<String>,
    model: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceView {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: DeltaView,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct DeltaView {
    content: Option<String>,
    tool_calls: Option<Vec<serde_json::Value>>,
}

impl Transcript {
    pub(super) fn add(&mut self, chunk: &str) {
        let Ok(chunk) = serde_json::from_str::<ChunkView>(chunk) else {
            return;
        };
        if self.id.is_none() {
            self.id = chunk.id;
        }
        if self.model.is_none() {
            self.model = chunk.model;
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content {
                self.content.push_str(&text);
            }
            if let Some(calls) = choice.delta.tool_calls {
                self.tool_calls.extend(calls);
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
    }

    pub(super) fn has_tool_calls(&self) -> bool {
        !self.tool_calls.is_empty()
    }

    pub(super) fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub(super) fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// A canonical `chat.completion` with the reassembled first choice.
    pub(super) fn to_completion(&self, deployment: &str) -> String {
        self.completion(deployment).to_string()
    }

    /// The same, as a value.
    pub(super) fn completion(&self, deployment: &str) -> serde_json::Value {
        let mut message = serde_json::json!({"role": "assistant", "content": self.content});
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = serde_json::Value::Array(self.tool_calls.clone());
        }
        serde_json::json!({
            "object": "chat.completion",
            "model": deployment,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_reassembles_the_first_choice() {
        let mut t = Transcript::default();
        t.add(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#);
        t.add(r#"{"choices":[{"index":0,"delta":{"content":"Hel"}},{"index":1,"delta":{"content":"x"}}]}"#);
        t.add(r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#);
        t.add(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#);
        t.add("not json");
        let c: serde_json::Value = serde_json::from_str(&t.to_completion("dep")).unwrap();
        assert_eq!(c["choices"][0]["message"]["content"], "Hello");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["model"], "dep");
    }
}

/// Whether a canonical (OpenAI-shaped) chunk carries part of the answer:
/// anything in a choice's delta but its role (text, a refusal, a tool call,
/// reasoning, audio), or a finish reason. Read only until a stream commits.
pub(super) fn carries_answer(chunk: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<Choice>,
    }
    #[derive(serde::Deserialize)]
    struct Choice {
        #[serde(default)]
        delta: Option<serde_json::Map<String, serde_json::Value>>,
        #[serde(default)]
        finish_reason: Option<serde::de::IgnoredAny>,
    }
    let carries = |v: &serde_json::Value| match v {
        serde_json::Value::Null => false,
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    match serde_json::from_str::<Chunk>(chunk) {
        Ok(c) => c.choices.iter().any(|choice| {
            choice.finish_reason.is_some()
                || choice
                    .delta
                    .as_ref()
                    .is_some_and(|d| d.iter().any(|(k, v)| k != "role" && carries(v)))
        }),
        // Not ours to judge: forwarded as it is.
        Err(_) => true,
    }
}

#[cfg(test)]
mod commit_tests {
    use super::carries_answer;

    #[test]
    fn only_chunks_with_part_of_the_answer_commit_a_stream() {
        let role = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert!(!carries_answer(role));
        assert!(!carries_answer(r#"{"choices":[]}"#), "a usage-only chunk");
        assert!(carries_answer(
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#
        ));
        assert!(carries_answer(
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":""}}]}}]}"#
        ));
        assert!(carries_answer(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#
        ));
        assert!(
            carries_answer(r#"{"choices":[{"index":0,"delta":{"reasoning_content":"Let"}}]}"#),
            "reasoning is part of the answer"
        );
        assert!(!carries_answer(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[]}}]}"#
        ));
    }
}
