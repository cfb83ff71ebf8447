//! The canonical request, answer and stream chunk as serde types.
//!
//! The canonical form *is* OpenAI's chat-completions JSON, so an adapter for
//! another dialect reads a [`ChatRequest`] and writes a [`ChatCompletion`] or
//! [`ChatChunk`]s. Every adapter reading the same types means every adapter
//! understands the same request: a field added here reaches all of them, and
//! a field an adapter cannot express is refused by name ([`invalid`]) rather
//! than silently dropped.
//!
//! Members the types do not name are kept in `extra` (requests) so an
//! adapter can refuse or forward them; answers and chunks skip every `None`.
//! Fields carry OpenAI's names and meanings (its API reference documents
//! them), so only the ones with a twist are documented here.

#![allow(missing_docs)]

#[cfg(feature = "adapter")]
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

#[cfg(feature = "adapter")]
use crate::adapter::BuildError;
use crate::types::Usage;

pub mod read;
mod write;

/// A canonical chat request (`POST /v1/chat/completions`).
///
/// Read by a hand-written [`Deserialize`] (below), as are [`Content`],
/// [`Stop`] and [`ToolChoice`]: serde's `flatten` (for `extra`) copies every
/// member it does not name into a buffered tree first, and `untagged` does
/// so for every value it reads (each message's content), before reading
/// them again; every adapter's request parse paid for that.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatRequest {
    /// The route the caller named; adapters send the target's model instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation, oldest first (absent reads as empty: adapters
    /// that need a message say so by name).
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Not OpenAI's, but what Anthropic, Gemini, Ollama and vLLM callers
    /// send (and `/v1/messages` carries): sample from the `k` likeliest tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// The older name of [`max_completion_tokens`](Self::max_completion_tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// How many alternative answers to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other member, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The members of a chat request, by name; any other is kept in `extra`.
macro_rules! chat_request_fields {
    ($($field:ident => $name:literal),* $(,)?) => {
        impl<'de> Deserialize<'de> for ChatRequest {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = ChatRequest;
                    fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                        f.write_str("a chat request object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<ChatRequest, A::Error> {
                        let mut r = ChatRequest::default();
                        while let Some(key) = map.next_key::<Key<'de>>()? {
                            match &*key.0 {
                                $($name => r.$field = map.next_value()?,)*
                                _ => {
                                    let value = map.next_value()?;
                                    r.extra.insert(key.0.into_owned(), value);
                                }
                            }
                        }
                        Ok(r)
                    }
                }
                d.deserialize_map(Visit)
            }
        }
    };
}

chat_request_fields! {
    model => "model",
    messages => "messages",
    stream => "stream",
    stream_options => "stream_options",
    temperature => "temperature",
    top_p => "top_p",
    top_k => "top_k",
    max_tokens => "max_tokens",
    max_completion_tokens => "max_completion_tokens",
    n => "n",
    stop => "stop",
    tools => "tools",
    tool_choice => "tool_choice",
    parallel_tool_calls => "parallel_tool_calls",
    response_format => "response_format",
    seed => "seed",
    presence_penalty => "presence_penalty",
    frequency_penalty => "frequency_penalty",
    user => "user",
}

/// A member name (or any string), borrowed from the input when it has no escapes.
struct Key<'de>(alloc::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(alloc::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(alloc::borrow::Cow::Owned(v.into())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(alloc::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// For an `Option<Cow<'a, str>>` member read with
/// `#[serde(borrow, default, deserialize_with = "switchyard_sdk::canonical::text")]`:
/// the string borrowed from the input when it has no escapes (serde's own
/// `Cow` inside an `Option` is always a copy), `None` for `null`. For text
/// an adapter passes on, such as each streamed delta.
pub fn text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<alloc::borrow::Cow<'de, str>>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Option<alloc::borrow::Cow<'de, str>>;
        fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Key::deserialize(d).map(|k| Some(k.0))
        }
    }
    d.deserialize_option(Visit)
}

impl ChatRequest {
    /// Parses a canonical request; an error is the caller's
    /// ([`BuildError::InvalidRequest`], with serde's reason and position).
    #[cfg(feature = "adapter")]
    pub fn parse(request: &str) -> Result<Self, BuildError> {
        serde_json::from_str(request).map_err(|e| {
            BuildError::InvalidRequest(format!("request is not a valid chat request: {e}"))
        })
    }

    /// The answer's length limit: `max_completion_tokens`, else `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether the caller asked for a streamed answer.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// The stop sequences, none when absent.
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => alloc::vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }
}

/// What a stream parser's `begin` needs of the canonical request, read
/// without building the rest of it (the request may be large: a whole
/// conversation, images).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamAsk {
    /// The caller asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The caller asked for a JSON answer (`response_format` other than `text`).
    pub json: bool,
}

impl StreamAsk {
    /// Reads `request`; anything unreadable asks for nothing.
    pub fn read(request: &str) -> Self {
        #[derive(Deserialize)]
        struct Probe<'a> {
            #[serde(default)]
            stream_options: Option<ProbeOptions>,
            #[serde(default, borrow)]
            response_format: Option<ProbeFormat<'a>>,
        }
        #[derive(Deserialize)]
        struct ProbeOptions {
            #[serde(default)]
            include_usage: Option<bool>,
        }
        #[derive(Deserialize)]
        struct ProbeFormat<'a> {
            #[serde(rename = "type", default, borrow)]
            kind: Option<alloc::borrow::Cow<'a, str>>,
        }
        let Ok(p) = serde_json::from_str::<Probe>(request) else {
            return StreamAsk::default();
        };
        StreamAsk {
            include_usage: p.stream_options.and_then(|o| o.include_usage) == Some(true),
            json: p
                .response_format
                .and_then(|f| f.kind)
                .is_some_and(|k| k == "json_object" || k == "json_schema"),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stop`: one sequence or several.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    /// OpenAI's newer name for `system` (reasoning models).
    Developer,
    User,
    Assistant,
    Tool,
}

/// One message of the conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant message's calls of the caller's tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// A tool message: which call this is the result of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// The message's text: a string content, or its text parts joined (no
    /// separator, as the parts were written); empty when there is none.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// A message's content: a string or a list of parts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

impl Content {
    /// The content as parts (a string is one text part).
    pub fn parts(&self) -> Vec<Part> {
        match self {
            Content::Text(t) => alloc::vec![Part::Text { text: t.clone() }],
            Content::Parts(p) => p.clone(),
        }
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    /// `input_audio`, `file`, `refusal`, ...: kept for adapters to refuse by name.
    #[serde(other)]
    Other,
}

/// An image: an `https:` URL or a `data:<mime>;base64,...` URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ImageUrl {
    /// `(media type, base64 data)` of a `data:` URL; `None` for other URLs.
    pub fn data(&self) -> Option<(&str, &str)> {
        let rest = self.url.strip_prefix("data:")?;
        let (meta, data) = rest.split_once(',')?;
        let media = meta.strip_suffix(";base64")?;
        Some((media, data))
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

/// A function tool's declaration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `none`, `auto`, `required`, or one named function.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Function(NamedTool),
}

/// `{"type": "function", "function": {"name": ...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: ToolName,
}

/// A function's name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolName {
    pub name: String,
}

/// One call of a tool, in an answer or a later request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function() -> String {
    String::from("function")
}

impl ToolCall {
    /// A call of function `name` with `arguments` (JSON text).
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        ToolCall {
            id: id.into(),
            kind: function(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// A function call: its name and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

impl FunctionCall {
    /// The arguments as the JSON object most providers take (not text),
    /// borrowed as written; empty text (a call without arguments, as some
    /// clients write it) is `{}`. Anything but an object is the caller's
    /// error, naming `field`.
    #[cfg(feature = "adapter")]
    pub fn object(&self, field: &str) -> Result<Arguments<'_>, BuildError> {
        let text = self.arguments.trim();
        if text.is_empty() {
            return Ok(Arguments(None));
        }
        let raw: &RawValue = serde_json::from_str(text)
            .map_err(|e| invalid(field, format_args!("is not valid JSON: {e}")))?;
        if !raw.get().starts_with('{') {
            return Err(invalid(field, "must be a JSON object"));
        }
        Ok(Arguments(Some(raw)))
    }
}

/// A tool call's arguments as a JSON object: serialised as written, or `{}`.
#[derive(Debug, Clone, Copy)]
pub struct Arguments<'a>(pub Option<&'a RawValue>);

impl Serialize for Arguments<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            Some(raw) => raw.serialize(s),
            None => s.serialize_map(Some(0))?.end(),
        }
    }
}

/// `response_format`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        json_schema: JsonSchema,
    },
}

/// A named JSON Schema for structured output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonSchema {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A canonical non-streamed answer (`chat.completion`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The deployment's name.
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
}

impl ChatCompletion {
    /// An answer with one choice.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        choice: Choice,
    ) -> Self {
        ChatCompletion {
            id: id.into(),
            object: String::from("chat.completion"),
            created,
            model: model.into(),
            choices: alloc::vec![choice],
            usage: None,
        }
    }

    /// The answer as JSON text: the same text `serde_json` writes, written
    /// directly ([`write`]), since every non-streamed answer pays for it.
    pub fn to_json(&self) -> String {
        write::completion(self)
    }
}

/// One alternative answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    pub finish_reason: Option<String>,
    /// Always present (null) so clients that index it find it.
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// What the model wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The text; null when the answer is tool calls only.
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl AssistantMessage {
    /// An assistant message with `content` and `tool_calls` (`None` when empty).
    pub fn new(content: Option<String>, tool_calls: Vec<ToolCall>) -> Self {
        AssistantMessage {
            role: String::from("assistant"),
            content,
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            refusal: None,
        }
    }
}

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u32,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u32,
}

impl From<Usage> for CompletionUsage {
    fn from(u: Usage) -> Self {
        CompletionUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
            prompt_tokens_details: (u.cached_prompt_tokens > 0).then_some(PromptTokensDetails {
                cached_tokens: u.cached_prompt_tokens,
            }),
            completion_tokens_details: (u.reasoning_tokens > 0).then_some(
                CompletionTokensDetails {
                    reasoning_tokens: u.reasoning_tokens,
                },
            ),
        }
    }
}

impl From<CompletionUsage> for Usage {
    fn from(u: CompletionUsage) -> Self {
        Usage::new(u.prompt_tokens, u.completion_tokens)
            .with_cached_prompt_tokens(u.prompt_tokens_details.map_or(0, |d| d.cached_tokens))
            .with_reasoning_tokens(
                u.completion_tokens_details
                    .map_or(0, |d| d.reasoning_tokens),
            )
    }
}

/// A chunk's `object`.
const CHUNK_OBJECT: &str = "chat.completion.chunk";

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

    /// [`ChatChunk::json_of`] of this head's id, time and model.
    pub fn json_of(&self, delta: &Delta, finish_reason: Option<&str>) -> String {
        write::single_chunk_after(&self.text, delta, finish_reason)
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

/// Finish reasons.
pub mod finish {
    /// The model stopped on its own or on a stop sequence.
    pub const STOP: &str = "stop";
    /// The length limit was reached.
    pub const LENGTH: &str = "length";
    /// The model called tools.
    pub const TOOL_CALLS: &str = "tool_calls";
    /// The provider's filter stopped the answer.
    pub const CONTENT_FILTER: &str = "content_filter";
}

/// A [`BuildError::InvalidRequest`] naming `field`: the provider cannot do
/// what it asks. The host adds the deployment's name.
#[cfg(feature = "adapter")]
pub fn invalid(field: &str, why: impl core::fmt::Display) -> BuildError {
    BuildError::InvalidRequest(format!("`{field}` {why}"))
}

/// A [`BuildError::Failed`] (the adapter's own failure) from a serializer error.
#[cfg(feature = "adapter")]
pub fn failed(e: impl core::fmt::Display) -> BuildError {
    BuildError::Failed(format!("{e}"))
}

/// `value` as compact JSON bytes.
#[cfg(feature = "adapter")]
pub fn to_body<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BuildError> {
    serde_json::to_vec(value).map_err(failed)
}

/// Appends `s` to `out` as a JSON string, quoted and escaped exactly as
/// serde_json writes it, without a serializer or a second buffer (for
/// adapters that splice a value into JSON they pass through).
pub fn push_json_string(out: &mut String, s: &str) {
    write::string(out, s);
}

/// A JSON body read as `T`, as `serde_json::from_slice` reads it, but
/// faster: a body that is UTF-8 throughout (every real one) is checked once
/// and parsed as text, where from bytes serde_json checks each string and
/// key it meets on its own, a call per string (a few per cent of an
/// adapter's parse). Any other body is read from bytes, so it is accepted
/// or refused, with the same error, exactly as before (serde_json does not
/// check the strings it skips).
#[cfg(feature = "adapter")]
pub fn from_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, serde_json::Error> {
    match core::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// A value boxed as JSON, for building bodies of dialects the types here
/// do not cover.
#[cfg(feature = "adapter")]
pub fn json<T: Serialize>(value: T) -> Result<Value, BuildError> {
    serde_json::to_value(value).map_err(|e| BuildError::Failed(format!("{e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_as_from_bytes() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Answer<'a> {
            #[serde(borrow)]
            text: alloc::borrow::Cow<'a, str>,
        }
        fn read(b: &[u8]) -> Result<Answer<'_>, String> {
            from_body(b).map_err(|e| format!("{e}"))
        }
        fn bytes(b: &[u8]) -> Result<Answer<'_>, String> {
            serde_json::from_slice(b).map_err(|e| format!("{e}"))
        }
        for body in [
            &b"{\"text\": \"caf\xc3\xa9 \\u00e9\", \"n\": 1}"[..],
            b"{\"text\": \"ok\", \"skipped\": \"\xff\xfe\"}",
            b"{\"text\": \"\xff\"}",
            b"{\"text\": \"a\\\"b\"}",
            b"{\"text\": 1}",
            b"\xef\xbb\xbf{}",
            b"",
        ] {
            assert_eq!(read(body), bytes(body), "{}", String::from_utf8_lossy(body));
        }
        // Text that needs no unescaping stays borrowed.
        let a: Answer = from_body(br#"{"text": "plain"}"#).unwrap();
        assert!(matches!(a.text, alloc::borrow::Cow::Borrowed("plain")));
    }

    #[test]
    fn text_members_are_borrowed_unless_escaped() {
        use alloc::borrow::Cow;
        #[derive(Deserialize)]
        struct Member<'a> {
            #[serde(borrow, default, deserialize_with = "text")]
            text: Option<Cow<'a, str>>,
        }
        let read = |json: &'static str| serde_json::from_str::<Member>(json).map(|m| m.text);
        assert!(matches!(
            read(r#"{"text":"plain"}"#),
            Ok(Some(Cow::Borrowed("plain")))
        ));
        assert!(matches!(read(r#"{"text":"a\nb"}"#), Ok(Some(Cow::Owned(t))) if t == "a\nb"));
        assert!(matches!(read(r#"{"text":null}"#), Ok(None)));
        assert!(matches!(read(r#"{}"#), Ok(None)));
        assert!(read(r#"{"text":7}"#).is_err());
    }

    #[test]
    fn a_request_reads_every_form_and_keeps_other_members() {
        let r: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},
               {"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio"}]},
               {"role":"assistant","content":null,"tool_calls":[]}],
               "stop":["x","y"],"tool_choice":{"type":"function","function":{"name":"f"}},
               "logprobs":true,"weird\u0020key":{"a":[1]},"max_tokens":5,"temperature":null}"#,
        )
        .unwrap();
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.temperature, None);
        assert!(matches!(&r.messages[0].content, Some(Content::Text(t)) if t == "hi"));
        assert!(matches!(&r.messages[1].content, Some(Content::Parts(p)) if p.len() == 2));
        assert!(r.messages[2].content.is_none());
        assert!(matches!(&r.stop, Some(Stop::Many(s)) if s.len() == 2));
        assert!(matches!(&r.tool_choice, Some(ToolChoice::Function(f)) if f.function.name == "f"));
        assert_eq!(r.extra.len(), 2);
        assert_eq!(r.extra["logprobs"], Value::Bool(true));
        assert_eq!(r.extra["weird key"]["a"][0], 1);
        let r: ChatRequest = serde_json::from_str(r#"{"stop":"x","tool_choice":"auto"}"#).unwrap();
        assert!(matches!(&r.stop, Some(Stop::One(s)) if s == "x"));
        assert!(matches!(&r.tool_choice, Some(ToolChoice::Mode(m)) if m == "auto"));
        assert!(r.messages.is_empty());
    }

    #[test]
    fn a_request_of_the_wrong_shape_says_what_was_expected() {
        for (json, expected) in [
            (r#"{"max_tokens":"5"}"#, "expected u32"),
            (r#"{"stop":5}"#, "a stop sequence or a list of them"),
            (
                r#"{"messages":[{"role":"user","content":5}]}"#,
                "a string or a list of content parts",
            ),
            (
                r#"{"tool_choice":[]}"#,
                "a tool choice mode or a named function",
            ),
            (r#"[1]"#, "a chat request object"),
        ] {
            let e = alloc::format!("{}", serde_json::from_str::<ChatRequest>(json).unwrap_err());
            assert!(e.contains(expected), "{json}: {e}");
        }
    }

    #[test]
    fn stream_ask_reads_two_members_only() {
        let ask = StreamAsk::read(
            r#"{"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true},"response_format":{"type":"json_schema","json_schema":{"name":"n"}}}"#,
        );
        assert_eq!(
            ask,
            StreamAsk {
                include_usage: true,
                json: true
            }
        );
        assert_eq!(
            StreamAsk::read(r#"{"stream_options":null,"response_format":{"type":"text"}}"#),
            StreamAsk::default()
        );
        assert_eq!(StreamAsk::read("not json"), StreamAsk::default());
    }

    #[test]
    #[cfg(feature = "adapter")]
    fn arguments_are_an_object_or_nothing() {
        let call = |args: &str| ToolCall::new("c", "f", args);
        let json = |a: Arguments| serde_json::to_string(&a).unwrap();
        assert_eq!(json(call(" ").function.object("f").unwrap()), "{}");
        assert_eq!(
            json(call(r#"{"a": 1}"#).function.object("f").unwrap()),
            r#"{"a": 1}"#
        );
        for bad in ["[1]", "{", "\"x\""] {
            match call(bad).function.object("messages[0].tool_calls[0]") {
                Err(BuildError::InvalidRequest(m)) => {
                    assert!(m.starts_with("`messages[0].tool_calls[0]`"), "{m}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}

/// Reads an untagged "string, or else" member without serde's `untagged`,
/// which copies the value into a buffered tree before trying each form.
/// `$other` names the serde access (`seq` or `map`) of the second form.
macro_rules! string_or {
    ($ty:ident, $text:ident, $other:ident, $visit:ident, $access:ident, $de:ident, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = $ty;
                    fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E>(self, v: &str) -> Result<$ty, E> {
                        Ok($ty::$text(v.into()))
                    }
                    fn visit_string<E>(self, v: String) -> Result<$ty, E> {
                        Ok($ty::$text(v))
                    }
                    fn $visit<A: serde::de::$access<'de>>(self, a: A) -> Result<$ty, A::Error> {
                        Deserialize::deserialize(serde::de::value::$de::new(a)).map($ty::$other)
                    }
                }
                d.deserialize_any(Visit)
            }
        }
    };
}

string_or!(
    Stop,
    One,
    Many,
    visit_seq,
    SeqAccess,
    SeqAccessDeserializer,
    "a stop sequence or a list of them"
);
string_or!(
    Content,
    Text,
    Parts,
    visit_seq,
    SeqAccess,
    SeqAccessDeserializer,
    "a string or a list of content parts"
);
string_or!(
    ToolChoice,
    Mode,
    Function,
    visit_map,
    MapAccess,
    MapAccessDeserializer,
    "a tool choice mode or a named function"
);
