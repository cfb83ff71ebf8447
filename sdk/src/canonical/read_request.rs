//! The usual canonical request read with the SDK's [`Reader`]: scalar
//! members, and messages whose content is a string. serde's derive spent
//! ~4k instructions on a two-message request natively (about twice that in a
//! plugin), identifying each member through its visitors. A member this
//! reader does not take apart (tools, `response_format`, a message with
//! content parts or tool calls, any member the request does not name) is
//! read from its own text by serde, into the same type the derive would
//! read; a request that breaks any rule serde checks is left whole to
//! serde, so the result, and every error, is exactly serde's (tested on
//! every one-byte change of a few requests).

use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;

use super::read::Reader;
use super::{ChatRequest, Content, Message, Role};

/// [`ChatRequest`] of `text` read by [`Reader`], `None` where serde must
/// decide (including every text serde refuses).
pub(super) fn read(text: &str) -> Option<ChatRequest> {
    let mut out = ChatRequest::default();
    let mut r = Reader::new(text);
    r.members(|r, name| {
        // A repeated member replaces the earlier one, as in serde's visitor.
        match name {
            "model" => out.model = string(r)?,
            "messages" => out.messages = messages(r)?,
            "stream" => out.stream = flag(r)?,
            "temperature" => out.temperature = float(r)?,
            "top_p" => out.top_p = float(r)?,
            "top_k" => out.top_k = count(r)?,
            "max_tokens" => out.max_tokens = count(r)?,
            "max_completion_tokens" => out.max_completion_tokens = count(r)?,
            "n" => out.n = count(r)?,
            "presence_penalty" => out.presence_penalty = float(r)?,
            "frequency_penalty" => out.frequency_penalty = float(r)?,
            "user" => out.user = string(r)?,
            "parallel_tool_calls" => out.parallel_tool_calls = flag(r)?,
            "stream_options" => out.stream_options = by_serde(r)?,
            "stop" => out.stop = by_serde(r)?,
            "tools" => out.tools = by_serde(r)?,
            "tool_choice" => out.tool_choice = by_serde(r)?,
            "response_format" => out.response_format = by_serde(r)?,
            "seed" => out.seed = by_serde(r)?,
            other => {
                let value = by_serde(r)?;
                out.extra.insert(String::from(other), value);
            }
        }
        Some(())
    })?;
    r.finish().ok()?;
    Some(out)
}

/// A member's value read by serde from its own text: what the derive reads
/// there. `None` when serde refuses it.
fn by_serde<'a, T: Deserialize<'a>>(r: &mut Reader<'a>) -> Option<T> {
    serde_json::from_str(r.value().ok()?).ok()
}

/// `Option<String>`.
fn string(r: &mut Reader<'_>) -> Option<Option<String>> {
    if r.null().ok()? {
        return Some(None);
    }
    Some(Some(r.str().ok()?.into_owned()))
}

/// `Option<bool>`.
fn flag(r: &mut Reader<'_>) -> Option<Option<bool>> {
    match r.value().ok()? {
        "true" => Some(Some(true)),
        "false" => Some(Some(false)),
        "null" => Some(None),
        _ => None,
    }
}

/// `Option<u32>`.
fn count(r: &mut Reader<'_>) -> Option<Option<u32>> {
    if r.null().ok()? {
        return Some(None);
    }
    Some(Some(r.unsigned()?))
}

/// `Option<f64>`. A number of at most 15 characters without an exponent
/// has at most 15 significant digits, which serde_json turns into the
/// correctly rounded `f64` (an exact integer divided by an exact power of
/// ten), as `str::parse` does; longer ones are serde's.
fn float(r: &mut Reader<'_>) -> Option<Option<f64>> {
    let v = r.value().ok()?;
    match v.as_bytes().first()? {
        b'n' => Some(None),
        b'-' | b'0'..=b'9' if v.len() <= 15 && !v.contains(['e', 'E']) => {
            Some(Some(v.parse().ok()?))
        }
        b'-' | b'0'..=b'9' => serde_json::from_str(v).ok().map(Some),
        _ => None,
    }
}

/// `messages`: an array (not `null`) of messages, each read here when it
/// is the usual kind and by serde otherwise.
fn messages(r: &mut Reader<'_>) -> Option<Vec<Message>> {
    if r.next_byte()? != b'[' {
        return None;
    }
    r.array().ok()?;
    let mut out = Vec::new();
    while r.element().ok()? {
        let at = r.clone();
        let message = match message(r) {
            Some(m) => m,
            None => {
                *r = at;
                by_serde(r)?
            }
        };
        out.push(message);
    }
    Some(out)
}

/// A message with a role and at most a string content, a name and a tool
/// call id; `None` for anything else (serde then reads it, and refuses a
/// repeated member).
fn message(r: &mut Reader<'_>) -> Option<Message> {
    let (mut role, mut content, mut name, mut call_id) = (None, None, None, None);
    r.members(|r, member| {
        match member {
            "role" if role.is_none() => {
                role = Some(match &*r.str().ok()? {
                    "system" => Role::System,
                    "developer" => Role::Developer,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    "tool" => Role::Tool,
                    _ => return None,
                });
            }
            "content" if content.is_none() => {
                content = Some(string(r)?.map(Content::Text));
            }
            "name" if name.is_none() => name = Some(string(r)?),
            "tool_call_id" if call_id.is_none() => call_id = Some(string(r)?),
            "role" | "content" | "name" | "tool_call_id" | "tool_calls" => return None,
            _ => {
                r.value().ok()?;
            }
        }
        Some(())
    })?;
    Some(Message {
        role: role?,
        content: content.flatten(),
        name: name.flatten(),
        tool_calls: None,
        tool_call_id: call_id.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use alloc::format;

    use super::*;
    use crate::canonical::read::assert_fast_path_agrees;

    /// Every one-byte change of a few requests: where this reader answers,
    /// serde reads the same request (compared by its debug text, every
    /// member included).
    #[test]
    fn read_agrees_with_serde_on_any_one_byte_change() {
        let docs = [
            r#"{"model":"chat","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"What is the weather in Paris?"}],"temperature":0.2}"#,
            r#"{"messages":[{"role":"user","content":"a\n\"b\"","name":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":[{"type":"text","text":"18C"}]}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":99,"top_p":1,"n":1,"stop":["END"],"user":"u","seed":-3,"metadata":{"a":[1,2.5]},"store":false}"#,
            r#"{"model":null,"messages":[],"temperature":-0.125,"presence_penalty":12345678901234567,"frequency_penalty":1e-3,"max_completion_tokens":4096,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"auto","response_format":{"type":"json_object"},"parallel_tool_calls":false,"top_k":40,"model":"again"}"#,
        ];
        let probes = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "1", "-", ".", "e", "n", "t", " ",
        ];
        let answered = assert_fast_path_agrees(
            &docs,
            &probes,
            |v| read(v).map(|r| format!("{r:?}")),
            |v| format!("{:?}", serde_json::from_str::<ChatRequest>(v).expect(v)),
        );
        assert!(answered > 3000, "{answered}");
    }

    /// What one-byte changes cannot reach: a repeated member of a message
    /// (serde refuses it, so the reader must leave it to serde), and the
    /// kinds of message serde reads for it.
    #[test]
    fn serde_decides_what_the_reader_does_not_take_apart() {
        for text in [
            r#"{"messages":[{"role":"user","role":"user","content":"x"}]}"#,
            r#"{"messages":[{"role":"user","content":"x","content":"y"}]}"#,
            r#"{"messages":[{"role":"user","name":"a","name":"b"}]}"#,
            r#"{"messages":[{"content":"no role"}]}"#,
            r#"{"messages":[{"role":"narrator","content":"x"}]}"#,
            r#"{"messages":null}"#,
            r#"{"temperature":"hot"}"#,
            r#"[{"role":"user","content":"x"}]"#,
        ] {
            assert!(read(text).is_none(), "{text}");
            assert!(serde_json::from_str::<ChatRequest>(text).is_err(), "{text}");
        }
        let parts = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"x"}]},{"role":"assistant","tool_calls":[]}]}"#;
        assert_eq!(
            format!("{:?}", read(parts).unwrap()),
            format!("{:?}", serde_json::from_str::<ChatRequest>(parts).unwrap())
        );
    }
}
