//! The usual answer (text and thinking blocks, usage; no tool call) read with
//! the SDK's JSON reader. serde's derive spent ~6k instructions a parse
//! here, identifying every member it skipped and walking each skipped value
//! through its visitors: more than the rest of the parse. Anything else is
//! left to serde ([`MessageBody::parse`]), so an answer read here is always
//! the one serde would read (tested on every one-byte change of a few).

use std::borrow::Cow;

use switchyard_sdk::canonical::read::Reader;

use crate::response::{Block, MessageBody, WireUsage};

impl<'a> MessageBody<'a> {
    /// Reads a message: the usual one in one pass of the SDK's reader,
    /// anything else through serde, whose error is then the answer's.
    pub fn parse(body: &'a [u8]) -> serde_json::Result<Self> {
        if let Some(message) = std::str::from_utf8(body).ok().and_then(Self::read) {
            return Ok(message);
        }
        switchyard_sdk::canonical::from_body(body)
    }

    /// The usual case of [`parse`](Self::parse); `None` for anything else
    /// (a duplicate or mistyped member, a tool call, a name with escapes
    /// where serde wants a borrowed one).
    fn read(text: &'a str) -> Option<Self> {
        let mut r = Reader::new(text);
        let (mut id, mut kind, mut content) = (None, None, None);
        let (mut stop_reason, mut stop_sequence, mut usage) = (None, None, None);
        r.members(|r, name| match name {
            // A `String` (not `null`), as serde reads it.
            "id" if id.is_none() => {
                id = Some(r.str().ok()?.into_owned());
                Some(())
            }
            "type" => r.once(&mut kind, borrowed),
            "content" if content.is_none() => {
                content = Some(r.items(Block::read)?);
                Some(())
            }
            "stop_reason" => r.once(&mut stop_reason, borrowed),
            "stop_sequence" => r.once(&mut stop_sequence, |r| r.str().ok()),
            "usage" => r.once(&mut usage, WireUsage::read),
            // A duplicate: serde refuses it.
            "id" | "content" => None,
            _ => r.skip(),
        })?;
        r.finish().ok()?;
        Some(MessageBody {
            id: id.unwrap_or_default(),
            kind: kind.flatten(),
            content: content.unwrap_or_default(),
            stop_reason: stop_reason.flatten(),
            stop_sequence: stop_sequence.flatten(),
            usage: usage.flatten(),
        })
    }
}

impl<'a> Block<'a> {
    /// A text or thinking block; a tool call (`id`, `name`, `input`) goes to
    /// serde.
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        let (mut kind, mut text) = (None, None);
        r.members(|r, name| match name {
            "type" if kind.is_none() => {
                kind = Some(borrowed(r)?);
                Some(())
            }
            "text" => r.once(&mut text, |r| r.str().ok().map(Cow::into_owned)),
            "type" | "id" | "name" | "input" => None,
            _ => r.skip(),
        })?;
        Some(Block {
            // Required: a block without one goes to serde, which refuses it.
            kind: kind?,
            text: text.flatten(),
            id: None,
            name: None,
            input: None,
        })
    }
}

impl WireUsage {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let mut counts = [None; 4];
        r.members(|r, name| {
            let i = match name {
                "input_tokens" => 0,
                "output_tokens" => 1,
                "cache_creation_input_tokens" => 2,
                "cache_read_input_tokens" => 3,
                _ => return r.skip(),
            };
            r.once(&mut counts[i], Reader::unsigned)
        })?;
        let [input, output, created, read] = counts.map(Option::flatten);
        Some(WireUsage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: created,
            cache_read_input_tokens: read,
        })
    }
}

/// A string serde can borrow (one without escapes).
fn borrowed<'a>(r: &mut Reader<'a>) -> Option<&'a str> {
    match r.str().ok()? {
        Cow::Borrowed(s) => Some(s),
        Cow::Owned(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::canonical::read::assert_fast_path_agrees;

    /// Every one-byte change of a few answers: where the reader answers,
    /// serde reads the same message.
    #[test]
    fn read_agrees_with_serde_on_any_one_byte_change() {
        let docs = [
            r#"{"id":"msg_01XY","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Sunny, 21\u00b0C.\n"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":20,"cache_creation_input_tokens":4,"cache_read_input_tokens":100,"output_tokens":9}}"#,
            r#"{"id":"m\"2","type":"message","content":[{"type":"thinking","thinking":"hmm","signature":"x"},{"type":"text","text":"Hello","citations":null},{"type":"text","text":null}],"stop_reason":"stop_sequence","stop_sequence":"END\t","usage":{"input_tokens":1,"output_tokens":null,"service_tier":"standard"}}"#,
            r#"{"type":"message","content":[],"stop_reason":null,"usage":null}"#,
        ];
        let probes = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "n", "t", " ",
        ];
        let answered = assert_fast_path_agrees(
            &docs,
            &probes,
            |v| MessageBody::read(v).map(|m| format!("{m:?}")),
            |v| format!("{:?}", serde_json::from_str::<MessageBody>(v).expect(v)),
        );
        assert!(answered > 1000, "{answered}");
    }

    #[test]
    fn tool_calls_and_oddities_are_left_to_serde() {
        for text in [
            r#"{"type":"message","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]}"#,
            r#"{"type":"message","content":[{"text":"no type"}]}"#,
            r#"{"type":"mess\u0061ge","content":[]}"#,
            r#"{"type":"message","type":"message"}"#,
            r#"{"id":null,"type":"message"}"#,
            r#"{"type":"message","content":null}"#,
            r#"["msg","message"]"#,
        ] {
            assert!(MessageBody::read(text).is_none(), "{text}");
        }
    }
}
