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
#[cfg(feature = "adapter")]
use alloc::vec::Vec;

#[cfg(feature = "adapter")]
use serde::{Deserialize, Serialize};
#[cfg(feature = "adapter")]
use serde_json::Value;

#[cfg(feature = "adapter")]
use crate::adapter::BuildError;

mod answer;
mod chunk;
mod message;
pub mod read;
#[cfg(feature = "adapter")]
mod read_request;
mod request;
mod write;

pub use answer::*;
pub use chunk::*;
pub use message::*;
pub use request::*;
pub use write::escaped_as_written;

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

/// Appends `f` to `out` as serde_json writes it (its shortest form that
/// reads back the same; `null` for what JSON cannot hold).
#[cfg(feature = "adapter")]
pub fn push_json_float(out: &mut String, f: f64) {
    match serde_json::to_string(&f) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str("null"),
    }
}

/// Appends `n` to `out` in decimal, as serde_json writes an integer.
pub fn push_json_number(out: &mut String, n: u64) {
    write::number(out, n);
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
