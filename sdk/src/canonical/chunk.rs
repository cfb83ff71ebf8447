//! The canonical stream chunk (`chat.completion.chunk`) and the head every
//! chunk of one stream starts with.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::Usage;

use super::message::function;
use super::{CompletionUsage, write};

/// A chunk's `object`.
pub(super) const CHUNK_OBJECT: &str = "chat.completion.chunk";

/// A canonical stream chunk (`chat.completion.chunk`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Only on the last chunk (with empty `choices`), when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
}

impl ChatChunk {
    /// A chunk of choice 0 carrying `delta`, and `finish_reason` when the answer ends.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        delta: Delta,
        finish_reason: Option<&str>,
    ) -> Self {
        ChatChunk {
            id: id.into(),
            object: String::from(CHUNK_OBJECT),
            created,
            model: model.into(),
            choices: alloc::vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish_reason.map(String::from),
                logprobs: None,
                stop_sequence: None,
            }],
            usage: None,
        }
    }

    /// The usage-only last chunk: no choices.
    pub fn usage_only(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        usage: Usage,
    ) -> Self {
        ChatChunk {
            id: id.into(),
            object: String::from(CHUNK_OBJECT),
            created,
            model: model.into(),
            choices: Vec::new(),
            usage: Some(usage.into()),
        }
    }

    /// The JSON text of `ChatChunk::new(id, created, model, delta,
    /// finish_reason)`, written without building the chunk (nothing is
    /// copied but into the text): the way to write an adapter's every token.
    pub fn json_of(
        id: &str,
        created: u64,
        model: &str,
        delta: &Delta,
        finish_reason: Option<&str>,
    ) -> String {
        write::single_chunk(id, created, model, delta, finish_reason)
    }

    /// The JSON text of a chunk whose delta is at most `text`, from borrowed
    /// parts: [`json_of`](Self::json_of) for the commonest chunk of a stream.
    pub fn text_json(
        id: &str,
        created: u64,
        model: &str,
        text: Option<&str>,
        finish_reason: Option<&str>,
    ) -> String {
        write::text_chunk(id, created, model, text, finish_reason)
    }

    /// The chunk as JSON text (one line): the same text `serde_json` writes,
    /// written directly ([`write`]), since every streamed token pays for it.
    pub fn to_json(&self) -> String {
        write::chunk(self)
    }
}

/// What every chunk of one stream starts with (its id, `object`, `created`
/// and `model`, up to the opening of `choices`), written once and copied
/// into each chunk: writing it checked each string for escapes and wrote
/// the number digit by digit, about a tenth of a Gemini token event's work.
/// An adapter keeps one beside its parser for the length of a call (the
/// parser's saved state need not carry it: it is rebuilt from the id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHead {
    text: String,
}

impl ChunkHead {
    /// The head of chunks with this id, creation time and model.
    pub fn new(id: &str, created: u64, model: &str) -> Self {
        let mut text = String::with_capacity(80 + id.len() + model.len());
        write::chunk_head(&mut text, id, CHUNK_OBJECT, created, model);
        ChunkHead { text }
    }

    /// [`ChatChunk::text_json`] of this head's id, time and model.
    pub fn text_json(&self, text: Option<&str>, finish_reason: Option<&str>) -> String {
        write::text_chunk_after(&self.text, text, finish_reason)
    }

    /// [`text_json`](Self::text_json) of the text that `inside` stands
    /// for, `inside` being what the SDK's writer writes between the quotes
    /// for it (as [`escaped_as_written`](super::escaped_as_written) tells):
    /// copied as it is, without unescaping it and escaping it again.
    pub fn escaped_text_json(&self, inside: &str, finish_reason: Option<&str>) -> String {
        debug_assert!(write::escaped_as_written(inside), "{inside:?}");
        write::escaped_text_chunk_after(&self.text, inside, finish_reason)
    }

    /// [`ChatChunk::json_of`] of this head's id, time and model.
    pub fn json_of(&self, delta: &Delta, finish_reason: Option<&str>) -> String {
        write::single_chunk_after(&self.text, delta, finish_reason)
    }

    /// The chunk that ends the answer with `finish_reason` and nothing
    /// else, naming the caller's stop sequence that ended it when the
    /// provider says which ([`ChunkChoice::stop_sequence`]).
    pub fn finish_json(&self, finish_reason: &str, stop_sequence: Option<&str>) -> String {
        write::finish_chunk_after(&self.text, finish_reason, stop_sequence)
    }
}

/// One choice of a chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// As [`Choice::stop_sequence`](super::Choice::stop_sequence), on the
    /// chunk that carries the finish reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
}

/// What a chunk adds to the answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

impl Delta {
    /// The first delta of an answer: the role, and empty content.
    pub fn role() -> Self {
        Delta {
            role: Some(String::from("assistant")),
            content: Some(String::new()),
            tool_calls: None,
        }
    }

    /// More text.
    pub fn text(text: impl Into<String>) -> Self {
        Delta {
            content: Some(text.into()),
            ..Delta::default()
        }
    }

    /// A piece of tool call `index`.
    pub fn tool(call: ToolCallDelta) -> Self {
        Delta {
            tool_calls: Some(alloc::vec![call]),
            ..Delta::default()
        }
    }
}

/// A piece of one tool call: the first carries its id and name, the rest
/// more of its arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

impl ToolCallDelta {
    /// The start of tool call `index`: its id and function name.
    pub fn start(index: u32, id: impl Into<String>, name: impl Into<String>) -> Self {
        ToolCallDelta {
            index,
            id: Some(id.into()),
            kind: Some(function()),
            function: Some(FunctionDelta {
                name: Some(name.into()),
                arguments: Some(String::new()),
            }),
        }
    }

    /// More of tool call `index`'s arguments.
    pub fn arguments(index: u32, arguments: impl Into<String>) -> Self {
        ToolCallDelta {
            index,
            function: Some(FunctionDelta {
                name: None,
                arguments: Some(arguments.into()),
            }),
            ..ToolCallDelta::default()
        }
    }
}

/// A piece of a function call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}
