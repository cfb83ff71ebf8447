//! The canonical request (`POST /v1/chat/completions`) and what a stream
//! parser's `begin` reads of it.

#[cfg(feature = "adapter")]
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(feature = "adapter")]
use crate::adapter::BuildError;

use super::{Message, ResponseFormat, Stop, StreamOptions, Tool, ToolChoice};

/// A canonical chat request (`POST /v1/chat/completions`).
///
/// Read by a hand-written [`Deserialize`] (below), as are [`Content`](super::Content),
/// [`Stop`] and [`ToolChoice`] (in `message.rs`): serde's `flatten` (for `extra`) copies every
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
    /// The usual request is read in one pass of the SDK's reader, which
    /// reads exactly what serde reads (see `read_request`).
    #[cfg(feature = "adapter")]
    pub fn parse(request: &str) -> Result<Self, BuildError> {
        if let Some(r) = super::read_request::read(request) {
            return Ok(r);
        }
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
