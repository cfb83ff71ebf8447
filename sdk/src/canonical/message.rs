//! The parts of a canonical request: messages and their content, tools and
//! tool calls, `stop`, `tool_choice`, `response_format`.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

#[cfg(feature = "adapter")]
use super::invalid;
#[cfg(feature = "adapter")]
use crate::adapter::BuildError;

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
                    Part::Text { text, .. } => Some(text.as_str()),
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
            Content::Text(t) => alloc::vec![Part::Text {
                text: t.clone(),
                cache_control: None,
            }],
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
        /// A prompt-cache breakpoint (`{"type": "ephemeral"}`, Anthropic's
        /// and the convention OpenAI-style clients use for it): the
        /// anthropic adapter passes it on; adapters whose provider caches
        /// without marks ignore it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
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
    /// A prompt-cache breakpoint after the tools so far (see [`Part::Text`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
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

pub(super) fn function() -> String {
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
