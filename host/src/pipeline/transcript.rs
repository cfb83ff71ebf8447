//! What a streamed answer said, read off its canonical chunks: whether a
//! chunk carries part of the answer (a stream commits only then), the first
//! choice reassembled (a transcript), and its evaluation once delivered.

use std::borrow::Cow;
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
    pub(super) transcript: Transcript,
}

impl StreamEvaluation {
    /// The verdict, or why the evaluator failed (logged, naming the
    /// request, its route (`model`) and the deployment).
    pub(super) async fn run(
        &self,
        request_id: &Arc<str>,
        model: &str,
        deployment: &str,
    ) -> Result<Verdict, String> {
        let response = Arc::from(self.transcript.to_completion(deployment));
        let verdict = match self.registry.get(&self.evaluator, Kind::Evaluator) {
            Ok(p) => p.evaluate(request_id, self.request.clone(), response).await,
            Err(e) => Err(e),
        };
        match verdict {
            Err(e) => {
                tracing::warn!(request_id = %request_id, model, deployment, plugin = %self.evaluator,
                    "evaluator failed on a streamed answer: {e}");
                Err(e.to_string())
            }
            Ok(v) => {
                if !v.pass {
                    tracing::warn!(request_id = %request_id, model, deployment, plugin = %self.evaluator,
                        score = v.score, reasons = ?v.reasons,
                        "evaluator rejected a streamed answer (already delivered)");
                }
                Ok(v)
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
    /// The stop sequence that ended it, when the deployment named one.
    stop_sequence: Option<String>,
    tool_calls: Vec<serde_json::Value>,
}

/// A chunk as the transcript reads it: borrowed from the chunk's text (one
/// parse per chunk of every evaluated or cached stream, so nothing is
/// copied that an escape does not force).
#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChoiceView<'a>>,
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    model: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    delta: DeltaView<'a>,
    #[serde(borrow)]
    finish_reason: Option<Text<'a>>,
    /// Any JSON value: a chunk with a malformed one still counts.
    #[serde(default)]
    stop_sequence: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct DeltaView<'a> {
    #[serde(borrow)]
    content: Option<Text<'a>>,
    tool_calls: Option<Vec<serde_json::Value>>,
}

/// A JSON string, borrowed from the text unless it has escapes. (Serde's
/// own `Cow<str>` is always owned inside an `Option`.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

impl Transcript {
    pub(super) fn add(&mut self, chunk: &str) {
        let Ok(chunk) = serde_json::from_str::<ChunkView>(chunk) else {
            return;
        };
        if self.id.is_none() {
            self.id = chunk.id.map(|t| t.0.into_owned());
        }
        if self.model.is_none() {
            self.model = chunk.model.map(|t| t.0.into_owned());
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content {
                self.content.push_str(&text.0);
            }
            if let Some(calls) = choice.delta.tool_calls {
                self.tool_calls.extend(calls);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason.0.into_owned());
            }
            if let Some(serde_json::Value::String(s)) = choice.stop_sequence {
                self.stop_sequence = Some(s);
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
    /// (Written from borrowed parts, members in the order of
    /// [`completion`](Self::completion)'s map, which is sorted: the same text,
    /// without building a tree for every evaluated stream.)
    pub(super) fn to_completion(&self, deployment: &str) -> String {
        #[derive(serde::Serialize)]
        struct Completion<'a> {
            choices: [Choice<'a>; 1],
            model: &'a str,
            object: &'static str,
        }
        #[derive(serde::Serialize)]
        struct Choice<'a> {
            finish_reason: Option<&'a str>,
            index: u32,
            message: Message<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            stop_sequence: Option<&'a str>,
        }
        #[derive(serde::Serialize)]
        struct Message<'a> {
            content: &'a str,
            role: &'static str,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            tool_calls: &'a [serde_json::Value],
        }
        let completion = Completion {
            choices: [Choice {
                finish_reason: self.finish_reason.as_deref(),
                index: 0,
                message: Message {
                    content: &self.content,
                    role: "assistant",
                    tool_calls: &self.tool_calls,
                },
                stop_sequence: self.stop_sequence.as_deref(),
            }],
            model: deployment,
            object: "chat.completion",
        };
        serde_json::to_string(&completion).expect("a completion serializes")
    }

    /// The same, as a value.
    pub(super) fn completion(&self, deployment: &str) -> serde_json::Value {
        let mut message = serde_json::json!({"role": "assistant", "content": self.content});
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = serde_json::Value::Array(self.tool_calls.clone());
        }
        let mut choice = serde_json::json!({"index": 0, "message": message, "finish_reason": self.finish_reason});
        if let Some(s) = &self.stop_sequence {
            choice["stop_sequence"] = serde_json::json!(s);
        }
        serde_json::json!({
            "object": "chat.completion",
            "model": deployment,
            "choices": [choice],
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
        t.add(r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#);
        // Escaped text is unescaped (it is not borrowed then).
        t.add(r#"{"id":"c\u0031","model":"m","choices":[{"index":0,"delta":{"content":" \"w\u00e9\"\n"},"finish_reason":"stop"}]}"#);
        t.add(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#);
        t.add("not json");
        let c: serde_json::Value = serde_json::from_str(&t.to_completion("dep")).unwrap();
        assert_eq!(c["choices"][0]["message"]["content"], "Hello \"w\u{e9}\"\n");
        assert_eq!((t.id(), t.model()), (Some("c1"), Some("m")));
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["model"], "dep");
        assert_eq!(t.to_completion("dep"), t.completion("dep").to_string());
        t.add(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{}"}}]}}]}"#);
        assert_eq!(t.to_completion("d\"q"), t.completion("d\"q").to_string());
        assert_eq!(
            Transcript::default().to_completion("d"),
            Transcript::default().completion("d").to_string()
        );
        // The stop sequence that ended it is kept (a cached stream replays it).
        assert!(c["choices"][0].get("stop_sequence").is_none());
        // A malformed stop_sequence drops nothing of its chunk.
        t.add(r#"{"choices":[{"index":0,"delta":{"content":"!"},"stop_sequence":5}]}"#);
        assert!(
            t.completion("dep")["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .ends_with('!')
        );
        t.add(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop","stop_sequence":"END"}]}"#,
        );
        let c: serde_json::Value = serde_json::from_str(&t.to_completion("dep")).unwrap();
        assert_eq!(c["choices"][0]["stop_sequence"], "END");
        assert_eq!(t.to_completion("dep"), t.completion("dep").to_string());
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
        delta: Option<Carries>,
        #[serde(default)]
        finish_reason: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_str::<Chunk>(chunk) {
        Ok(c) => c
            .choices
            .iter()
            .any(|choice| choice.finish_reason.is_some() || choice.delta.is_some_and(|d| d.0)),
        // Not ours to judge: forwarded as it is.
        Err(_) => true,
    }
}

/// Whether a delta object has a member but `role` that says something: not
/// null, not an empty string, array or object. Read without copying it.
#[derive(Clone, Copy)]
struct Carries(bool);

impl<'de> Deserialize<'de> for Carries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor};
        use serde_json::value::RawValue;
        struct IsRole(bool);
        impl<'de> Deserialize<'de> for IsRole {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Name;
                impl Visitor<'_> for Name {
                    type Value = IsRole;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a member name")
                    }
                    fn visit_str<E>(self, v: &str) -> Result<IsRole, E> {
                        Ok(IsRole(v == "role"))
                    }
                }
                d.deserialize_str(Name)
            }
        }
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Carries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a delta object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Carries, A::Error> {
                let mut carries = false;
                while let Some(IsRole(role)) = map.next_key()? {
                    let value: &RawValue = map.next_value()?;
                    carries |= !role && says_something(value.get());
                }
                Ok(Carries(carries))
            }
        }
        d.deserialize_map(Object)
    }
}

/// A JSON value's text is not `null`, `""`, `[]` or `{}` (spaces allowed).
fn says_something(raw: &str) -> bool {
    match raw.as_bytes().first() {
        Some(b'n') => false,
        Some(b'"') => raw.len() > 2,
        Some(b'[' | b'{') => !raw[1..raw.len() - 1].trim_ascii().is_empty(),
        _ => true,
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
        for (delta, carries) in [
            (r#"{"tool_calls":[ ],"audio":{ },"content":""}"#, false),
            (r#"{"r\u006fle":"assistant"}"#, false),
            (r#"{"content":" "}"#, true),
            (r#"{"content":"\n"}"#, true),
            (r#"{"content":0}"#, true),
            (r#"{"refusal":false}"#, true),
            (r#"{"audio":{"id":"a"}}"#, true),
            (r#"null"#, false),
            (r#""text""#, true),
        ] {
            let chunk = format!(r#"{{"choices":[{{"index":0,"delta":{delta}}}]}}"#);
            assert_eq!(carries_answer(&chunk), carries, "{chunk}");
        }
    }
}
