//! Ollama's native chat format (`POST /api/chat`) as typed serde structs.
//!
//! Requests are written from borrowed canonical data, so message text is
//! never copied on its way out. Answers and stream lines are read borrowing
//! from the body wherever JSON escapes allow ([`Text`]), and tool-call
//! arguments stay raw JSON text ([`RawValue`]) in both directions: the
//! canonical format carries them as text, so building a tree for them would
//! be wasted work, and the model's key order survives.
//!
//! Only the members the adapter acts on are named; serde skips the rest
//! (durations, `thinking`, `logprobs`, `images: null`, ...).

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::Usage;
use switchyard_sdk::canonical::read::Reader;
use switchyard_sdk::canonical::{Arguments, Tool, ToolCall, finish};

/// The body of `POST /api/chat`.
#[derive(Debug, Serialize)]
pub struct ChatBody<'a> {
    pub model: &'a str,
    pub messages: Vec<Message<'a>>,
    /// Always written: Ollama streams unless told `false`, and a streamed
    /// body where the host expects one JSON answer is unusable.
    pub stream: bool,
    /// OpenAI's tool declarations are Ollama's, member for member.
    #[serde(skip_serializing_if = "<[Tool]>::is_empty")]
    pub tools: &'a [Tool],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format<'a>>,
    #[serde(skip_serializing_if = "Options::is_empty")]
    pub options: Options<'a>,
}

/// `format`: the string `"json"` (any JSON) or a JSON Schema object.
#[derive(Debug)]
pub enum Format<'a> {
    Json,
    Schema(&'a Value),
}

impl Serialize for Format<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Format::Json => s.serialize_str("json"),
            Format::Schema(schema) => schema.serialize(s),
        }
    }
}

/// `options`: the sampling parameters, in Ollama's (Modelfile) names.
#[derive(Debug, Default, Serialize)]
pub struct Options<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// The answer's length limit in tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
}

impl Options<'_> {
    /// Nothing set: the member is left out and the model's defaults apply.
    pub fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.num_predict.is_none()
            && self.stop.is_empty()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
    }
}

/// One message of the conversation.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'static str,
    /// Always present: plain text (Ollama has no content parts).
    pub content: Cow<'a, str>,
    /// Base64 image data, without the `data:` URL prefix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<OutCall<'a>>,
    /// A tool result: the function it answers. Ollama's templates match
    /// results to calls by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<&'a str>,
    /// A tool result: the call it answers (read by newer Ollama versions,
    /// ignored by older ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

/// An earlier tool call, sent back with the conversation.
#[derive(Debug, Serialize)]
pub struct OutCall<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    pub id: &'a str,
    pub function: OutFunction<'a>,
}

/// Ollama wants the arguments as a JSON object, not as JSON text.
#[derive(Debug, Serialize)]
pub struct OutFunction<'a> {
    pub name: &'a str,
    /// The caller's object as written.
    pub arguments: Arguments<'a>,
}

/// A string, borrowed from the body unless it has escapes.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// A whole answer (`stream: false`) or one line of a stream: the two have
/// the same shape, the last line carrying what a whole answer carries.
#[derive(Debug, Deserialize)]
pub struct Reply<'a> {
    /// RFC 3339, with Ollama's nanoseconds and local offset.
    #[serde(borrow, default)]
    pub created_at: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub message: Option<ReplyMessage<'a>>,
    #[serde(default)]
    pub done: Option<bool>,
    /// `stop`, `length`; `load`/`unload` for requests without messages.
    #[serde(borrow, default)]
    pub done_reason: Option<Text<'a>>,
    /// Prompt tokens evaluated; left out when the whole prompt was cached.
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    /// Tokens generated (thinking included).
    #[serde(default)]
    pub eval_count: Option<u64>,
    /// `{"error": "text"}`: a failure, also mid-stream after a 200.
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

impl<'a> Reply<'a> {
    /// Reads one answer or line; `None` when it is not a JSON object of
    /// this shape. Objects only: serde would read a struct from an array too.
    pub fn parse(text: &'a str) -> Option<Self> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        Self::read(text).or_else(|| serde_json::from_str(text).ok())
    }

    /// The common reply (text, no tool calls, no error) in one pass of the
    /// SDK's reader, which costs a stream line a fraction of serde's derive.
    /// `None` for anything else (a duplicate or mistyped member, tool calls,
    /// an error, escapes serde refuses): serde then reads it, so a reply
    /// read here is always the one serde would read (tested on every
    /// one-byte change of a few lines).
    fn read(text: &'a str) -> Option<Self> {
        const NAMES: [&str; 7] = [
            "created_at",
            "message",
            "done",
            "done_reason",
            "prompt_eval_count",
            "eval_count",
            "error",
        ];
        let mut reply = Reply {
            created_at: None,
            message: None,
            done: None,
            done_reason: None,
            prompt_eval_count: None,
            eval_count: None,
            error: None,
        };
        let mut seen = [false; NAMES.len()];
        let mut r = Reader::new(text);
        r.members(|r, name| {
            let Some(i) = NAMES.iter().position(|n| *n == name) else {
                return r.value().ok().map(drop);
            };
            if std::mem::replace(&mut seen[i], true) {
                return None;
            }
            if r.null().ok()? {
                return Some(());
            }
            match i {
                0 => reply.created_at = Some(Text(r.str().ok()?)),
                1 => reply.message = Some(ReplyMessage::read(r)?),
                2 => {
                    reply.done = Some(match r.value().ok()? {
                        "true" => true,
                        "false" => false,
                        _ => return None,
                    })
                }
                3 => reply.done_reason = Some(Text(r.str().ok()?)),
                4 => reply.prompt_eval_count = Some(r.unsigned()?),
                5 => reply.eval_count = Some(r.unsigned()?),
                _ => return None,
            }
            Some(())
        })?;
        r.finish().ok()?;
        Some(reply)
    }

    /// Whether the upstream reported an error (`"error": null` is none).
    pub fn is_error(&self) -> bool {
        self.error.is_some_and(|e| e.get() != "null")
    }

    pub fn is_done(&self) -> bool {
        self.done == Some(true)
    }

    /// Unix seconds of `created_at`, when it is a valid RFC 3339 time.
    pub fn created(&self) -> Option<u64> {
        self.created_at
            .as_ref()
            .and_then(|t| switchyard_sdk::rfc3339_s(&t.0))
    }

    /// The canonical finish reason of a finished answer.
    pub fn finish_reason(&self, called_tools: bool) -> &'static str {
        finish_reason(self.done_reason.as_ref().map(|r| &*r.0), called_tools)
    }

    /// Token usage, when the upstream counted any.
    pub fn usage(&self) -> Option<Usage> {
        if self.prompt_eval_count.is_none() && self.eval_count.is_none() {
            return None;
        }
        let n = |c: Option<u64>| c.map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX));
        Some(Usage::new(n(self.prompt_eval_count), n(self.eval_count)))
    }
}

/// The `message` of an answer or line.
#[derive(Debug, Deserialize)]
pub struct ReplyMessage<'a> {
    #[serde(borrow, default)]
    pub content: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ReplyCall<'a>>>,
}

impl<'a> ReplyMessage<'a> {
    /// A `message` object with text only ([`Reply::read`]).
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        let mut content = None;
        r.members(|r, name| match name {
            "content" if content.is_none() => {
                content = Some(if r.null().ok()? {
                    None
                } else {
                    Some(Text(r.str().ok()?))
                });
                Some(())
            }
            // A duplicate (serde refuses it), or tool calls: serde reads them.
            "content" | "tool_calls" => None,
            _ => r.value().ok().map(drop),
        })?;
        Some(ReplyMessage {
            content: content.flatten(),
            tool_calls: None,
        })
    }

    pub fn text(&self) -> &str {
        self.content.as_ref().map_or("", |t| &t.0)
    }

    pub fn calls(&self) -> &[ReplyCall<'_>] {
        self.tool_calls.as_deref().unwrap_or_default()
    }
}

/// A tool call of the model. Ollama sends each one whole.
#[derive(Debug, Deserialize)]
pub struct ReplyCall<'a> {
    /// Newer Ollama versions name their calls (`call_` + 8 characters).
    #[serde(borrow, default)]
    pub id: Option<Text<'a>>,
    #[serde(borrow)]
    pub function: ReplyFunction<'a>,
}

#[derive(Debug, Deserialize)]
pub struct ReplyFunction<'a> {
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(borrow, default)]
    pub arguments: Option<&'a RawValue>,
}

impl ReplyCall<'_> {
    /// The upstream's id, or `fallback` for versions that send none.
    pub fn id_or(&self, fallback: impl FnOnce() -> String) -> String {
        match &self.id {
            Some(Text(id)) if !id.is_empty() => id.to_string(),
            _ => fallback(),
        }
    }

    /// The arguments as the canonical JSON text: the object as sent, `{}`
    /// when absent or null, and a string's contents when a proxy already
    /// encoded them as text.
    pub fn arguments(&self) -> String {
        match self.function.arguments.map(RawValue::get) {
            None | Some("null") => String::from("{}"),
            Some(raw) if raw.starts_with('"') => {
                serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned())
            }
            Some(raw) => raw.to_owned(),
        }
    }

    /// The canonical tool call.
    pub fn to_canonical(&self, fallback_id: impl FnOnce() -> String) -> ToolCall {
        ToolCall::new(
            self.id_or(fallback_id),
            &*self.function.name.0,
            self.arguments(),
        )
    }
}

/// Ollama's `done_reason` as a canonical finish reason. Tool calls arrive
/// whole, so an answer that made any is `tool_calls` (they are usable even
/// if text after them was cut); otherwise only `length` differs from `stop`.
pub fn finish_reason(done_reason: Option<&str>, called_tools: bool) -> &'static str {
    match done_reason {
        _ if called_tools => finish::TOOL_CALLS,
        Some("length") => finish::LENGTH,
        _ => finish::STOP,
    }
}

/// The id of tool call `n` of answer `seed` when the upstream named none:
/// unique per answer, so a client keying results by id across turns never
/// sees two calls with one id.
pub fn call_id(seed: u64, n: u32) -> String {
    format!("call_{seed:016x}_{n}")
}

/// The id of answer `seed`: `chatcmpl-` and 16 hex digits. Written by
/// hand, not with `format!`: a stream makes it again on every call (its
/// state keeps the seed), and the formatting machinery was a tenth of a
/// line's cost.
pub fn answer_id(seed: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(25);
    id.push_str("chatcmpl-");
    for shift in (0..16).rev() {
        id.push(char::from(HEX[(seed >> (shift * 4)) as usize & 0xf]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::canonical::read::assert_fast_path_agrees;

    #[test]
    fn answer_ids_are_sixteen_hex_digits() {
        for seed in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(answer_id(seed), format!("chatcmpl-{seed:016x}"));
        }
    }

    /// Every one-byte change of a few lines: where the reader answers, serde
    /// reads the same reply; the usual lines are read by the reader.
    #[test]
    fn read_agrees_with_serde_on_any_one_byte_change() {
        let docs = [
            r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The \"end\""},"done":false}"#,
            r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,"prompt_eval_count":26,"eval_count":298}"#,
        ];
        let probes = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "n", "t", " ",
        ];
        let answered = assert_fast_path_agrees(
            &docs,
            &probes,
            |v| Reply::read(v).map(|r| format!("{r:?}")),
            |v| format!("{:?}", serde_json::from_str::<Reply>(v).expect(v)),
        );
        assert!(answered > 500, "{answered}");
    }

    #[test]
    fn replies_borrow_and_tolerate_extras() {
        let text = r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The","images":null,"thinking":"hm"},"done":false}"#;
        let r = Reply::parse(text).unwrap();
        assert!(matches!(
            r.message.as_ref().unwrap().content,
            Some(Text(Cow::Borrowed("The")))
        ));
        assert_eq!(r.created(), Some(1_691_164_339));
        assert!(!r.is_done() && !r.is_error() && r.usage().is_none());
        let r = Reply::parse(r#"{"message":{"content":"a\nb"},"error":null}"#).unwrap();
        assert_eq!(r.message.as_ref().unwrap().text(), "a\nb");
        assert!(!r.is_error());
        for not_reply in [
            "[1]",
            "\"x\"",
            "{",
            "{\"done\":\"yes\"}",
            "{\"eval_count\":-1}",
        ] {
            assert!(Reply::parse(not_reply).is_none(), "{not_reply}");
        }
    }

    #[test]
    fn usage_and_finish_reasons() {
        let r = Reply::parse(r#"{"done":true,"eval_count":5}"#).unwrap();
        assert_eq!(r.usage(), Some(Usage::new(0, 5)));
        let r = Reply::parse(r#"{"prompt_eval_count":99999999999,"eval_count":1}"#).unwrap();
        assert_eq!(r.usage(), Some(Usage::new(u32::MAX, 1)));
        assert_eq!(finish_reason(Some("length"), false), "length");
        assert_eq!(finish_reason(Some("length"), true), "tool_calls");
        assert_eq!(finish_reason(Some("stop"), true), "tool_calls");
        for r in [Some("stop"), Some("load"), None] {
            assert_eq!(finish_reason(r, false), "stop");
        }
    }

    #[test]
    fn tool_call_arguments_and_ids() {
        let call = |json: &str| -> ToolCall {
            let c: ReplyCall = serde_json::from_str(json).unwrap();
            c.to_canonical(|| call_id(0xab, 2))
        };
        let c = call(r#"{"function":{"name":"f","arguments":{"b":1,"a":[true]}}}"#);
        assert_eq!(
            c,
            ToolCall::new("call_00000000000000ab_2", "f", r#"{"b":1,"a":[true]}"#)
        );
        let c = call(r#"{"id":"call_x1","function":{"index":0,"name":"f","arguments":null}}"#);
        assert_eq!(c, ToolCall::new("call_x1", "f", "{}"));
        let c = call(r#"{"id":"","function":{"name":"f","arguments":"{\"a\":1}"}}"#);
        assert_eq!(
            c,
            ToolCall::new("call_00000000000000ab_2", "f", r#"{"a":1}"#)
        );
        assert_eq!(answer_id(1), "chatcmpl-0000000000000001");
    }

    #[test]
    fn format_and_options_serialise() {
        let schema = serde_json::json!({"type": "object"});
        let s = |f: Format| serde_json::to_string(&f).unwrap();
        assert_eq!(s(Format::Json), "\"json\"");
        assert_eq!(s(Format::Schema(&schema)), r#"{"type":"object"}"#);
        assert!(Options::default().is_empty());
        let o = Options {
            stop: vec!["x"],
            ..Options::default()
        };
        assert!(!o.is_empty());
        assert_eq!(serde_json::to_string(&o).unwrap(), r#"{"stop":["x"]}"#);
    }
}
