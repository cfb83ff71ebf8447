//! [`ChatChunk`] and [`ChatCompletion`] as JSON text, written by hand.
//!
//! An adapter writes one chunk per streamed event and one completion per
//! answer, so this is on every token's path. Going through serde costs a
//! serializer state machine per member and a buffer that grows from 128
//! bytes; writing the members in their declared order into a buffer sized up
//! front costs one allocation. The text is byte-for-byte what
//! `serde_json::to_string` writes for the same value (the tests below compare
//! the two).

use alloc::string::String;

use super::{
    AssistantMessage, ChatChunk, ChatCompletion, Choice, ChunkChoice, CompletionTokensDetails,
    CompletionUsage, Delta, FunctionCall, FunctionDelta, PromptTokensDetails, ToolCall,
    ToolCallDelta,
};

/// `completion` as one line of JSON.
pub(super) fn completion(completion: &ChatCompletion) -> String {
    // Every field named: one added to the struct does not compile here until
    // it is written.
    let ChatCompletion {
        id,
        object,
        created,
        model,
        choices,
        usage: counts,
    } = completion;
    let mut n = 96 + id.len() + object.len() + model.len();
    for c in choices {
        n += 128 + c.finish_reason.as_ref().map_or(0, String::len);
        let m = &c.message;
        n += m.role.len() + m.content.as_ref().map_or(0, String::len);
        n += m.refusal.as_ref().map_or(0, String::len);
        for t in m.tool_calls.iter().flatten() {
            n += 96 + t.id.len() + t.kind.len() + t.function.name.len();
            n += t.function.arguments.len();
        }
    }
    if counts.is_some() {
        n += 192;
    }
    let mut out = String::with_capacity(n);
    out.push_str("{\"id\":");
    string(&mut out, id);
    out.push_str(",\"object\":");
    string(&mut out, object);
    out.push_str(",\"created\":");
    number(&mut out, *created);
    out.push_str(",\"model\":");
    string(&mut out, model);
    out.push_str(",\"choices\":[");
    for (k, c) in choices.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        answer_choice(&mut out, c);
    }
    out.push(']');
    if let Some(u) = counts {
        out.push_str(",\"usage\":");
        usage(&mut out, u);
    }
    out.push('}');
    out
}

fn answer_choice(out: &mut String, c: &Choice) {
    let Choice {
        index,
        message: m,
        finish_reason,
        logprobs: lp,
        stop_sequence,
    } = c;
    out.push_str("{\"index\":");
    number(out, (*index).into());
    out.push_str(",\"message\":");
    message(out, m);
    choice_end(
        out,
        finish_reason.as_deref(),
        lp.as_ref(),
        stop_sequence.as_deref(),
    );
}

fn message(out: &mut String, m: &AssistantMessage) {
    let AssistantMessage {
        role,
        content,
        tool_calls,
        refusal,
    } = m;
    out.push_str("{\"role\":");
    string(out, role);
    out.push_str(",\"content\":");
    match content {
        Some(c) => string(out, c),
        None => out.push_str("null"),
    }
    if let Some(calls) = tool_calls {
        out.push_str(",\"tool_calls\":[");
        for (k, t) in calls.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            answer_tool_call(out, t);
        }
        out.push(']');
    }
    if let Some(r) = refusal {
        out.push_str(",\"refusal\":");
        string(out, r);
    }
    out.push('}');
}

fn answer_tool_call(out: &mut String, t: &ToolCall) {
    let ToolCall { id, kind, function } = t;
    let FunctionCall { name, arguments } = function;
    out.push_str("{\"id\":");
    string(out, id);
    out.push_str(",\"type\":");
    string(out, kind);
    out.push_str(",\"function\":{\"name\":");
    string(out, name);
    out.push_str(",\"arguments\":");
    string(out, arguments);
    out.push_str("}}");
}

/// `,"logprobs":` and the value (`null` when absent). Rare when present (a
/// pass-through of the upstream's own): serde writes it.
fn logprobs(out: &mut String, v: Option<&serde_json::Value>) {
    out.push_str(",\"logprobs\":");
    match v {
        // A `Value` always serializes (its map keys are strings).
        Some(v) => out.push_str(&serde_json::to_string(v).expect("a Value serializes")),
        None => out.push_str("null"),
    }
}

/// `chunk` as one line of JSON.
pub(super) fn chunk(chunk: &ChatChunk) -> String {
    let ChatChunk {
        id,
        object,
        created,
        model,
        choices,
        usage: counts,
    } = chunk;
    let mut out = String::with_capacity(capacity(chunk));
    chunk_head(&mut out, id, object, *created, model);
    for (k, c) in choices.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        let ChunkChoice {
            index,
            delta,
            finish_reason,
            logprobs,
            stop_sequence,
        } = c;
        choice(
            &mut out,
            *index,
            delta,
            finish_reason.as_deref(),
            logprobs.as_ref(),
            stop_sequence.as_deref(),
        );
    }
    out.push(']');
    if let Some(u) = counts {
        out.push_str(",\"usage\":");
        usage(&mut out, u);
    }
    out.push('}');
    out
}

/// What `ChatChunk::new(id, created, model, delta, finish_reason)` writes,
/// without building it: the id and names are borrowed, not copied.
pub(super) fn single_chunk(
    id: &str,
    created: u64,
    model: &str,
    delta: &Delta,
    finish_reason: Option<&str>,
) -> String {
    let n = 192 + id.len() + model.len() + delta_capacity(delta);
    let mut out = String::with_capacity(n + finish_reason.map_or(0, str::len));
    chunk_head(&mut out, id, super::chunk::CHUNK_OBJECT, created, model);
    choice(&mut out, 0, delta, finish_reason, None, None);
    out.push_str("]}");
    out
}

/// What `ChatChunk::new(id, created, model, Delta { content: text, .. },
/// finish_reason)` writes, with the text borrowed too: most chunks of a
/// stream are text alone.
pub(super) fn text_chunk(
    id: &str,
    created: u64,
    model: &str,
    text: Option<&str>,
    finish_reason: Option<&str>,
) -> String {
    let n = 192 + id.len() + model.len() + text.map_or(0, str::len);
    let mut out = String::with_capacity(n + finish_reason.map_or(0, str::len));
    chunk_head(&mut out, id, super::chunk::CHUNK_OBJECT, created, model);
    text_choice(&mut out, text, finish_reason);
    out
}

/// [`text_chunk`] after a head [`chunk_head`] wrote.
pub(super) fn text_chunk_after(
    head: &str,
    text: Option<&str>,
    finish_reason: Option<&str>,
) -> String {
    let n = 96 + head.len() + text.map_or(0, str::len);
    let mut out = String::with_capacity(n + finish_reason.map_or(0, str::len));
    out.push_str(head);
    text_choice(&mut out, text, finish_reason);
    out
}

/// [`text_chunk_after`] with the text already escaped: `inside` is what
/// [`string`] writes between the quotes for it ([`escaped_as_written`]).
pub(super) fn escaped_text_chunk_after(
    head: &str,
    inside: &str,
    finish_reason: Option<&str>,
) -> String {
    let n = 96 + head.len() + inside.len();
    let mut out = String::with_capacity(n + finish_reason.map_or(0, str::len));
    out.push_str(head);
    out.push_str("{\"index\":0,\"delta\":{\"content\":\"");
    out.push_str(inside);
    out.push_str("\"}");
    choice_end(&mut out, finish_reason, None, None);
    out.push_str("]}");
    out
}

/// Whether `inside`, the inside of a JSON string (checked: its escapes are
/// JSON's), is exactly what [`string`] writes for the text it stands for:
/// every escape one [`string`] writes (`\"`, `\\`, `\n`, `\r`, `\t`,
/// `\b`, `\f`, or `\u00xx` in lower case for another control character).
/// Such text can be copied into a chunk as it is, without unescaping it and
/// escaping it again; `\/`, `\u00e9` and the like cannot.
pub fn escaped_as_written(inside: &str) -> bool {
    let bytes = inside.as_bytes();
    let mut i = 0;
    while let Some(at) = next_escape(bytes, i) {
        // In checked text only a backslash can be here (a raw quote or
        // control character is not text this stands for).
        if bytes[at] != b'\\' {
            return false;
        }
        let ok = match bytes.get(at + 1) {
            Some(b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f') => {
                i = at + 2;
                true
            }
            Some(b'u') => {
                let hex = |k: usize| bytes.get(at + k).copied().unwrap_or(0);
                let low = |d: u8| match d {
                    b'0'..=b'9' => Some(d - b'0'),
                    b'a'..=b'f' => Some(d - b'a' + 10),
                    _ => None,
                };
                i = at + 6;
                match (hex(2), hex(3), hex(4), low(hex(5))) {
                    (b'0', b'0', b'0' | b'1', Some(d)) => {
                        let v = (hex(4) - b'0') * 16 + d;
                        !matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A text chunk's one choice and the chunk's end.
fn text_choice(out: &mut String, text: Option<&str>, finish_reason: Option<&str>) {
    out.push_str("{\"index\":0,\"delta\":{");
    if let Some(text) = text {
        out.push_str("\"content\":");
        string(out, text);
    }
    out.push('}');
    choice_end(out, finish_reason, None, None);
    out.push_str("]}");
}

/// The chunk [`ChunkHead::finish_json`](super::ChunkHead::finish_json)
/// writes after a head [`chunk_head`] wrote: an empty delta, the finish
/// reason, and the stop sequence when known.
pub(super) fn finish_chunk_after(
    head: &str,
    finish_reason: &str,
    stop_sequence: Option<&str>,
) -> String {
    let n = 96 + head.len() + finish_reason.len() + stop_sequence.map_or(0, str::len);
    let mut out = String::with_capacity(n);
    out.push_str(head);
    out.push_str("{\"index\":0,\"delta\":{}");
    choice_end(&mut out, Some(finish_reason), None, stop_sequence);
    out.push_str("]}");
    out
}

/// [`single_chunk`] after a head [`chunk_head`] wrote.
pub(super) fn single_chunk_after(head: &str, delta: &Delta, finish_reason: Option<&str>) -> String {
    let n = 96 + head.len() + delta_capacity(delta);
    let mut out = String::with_capacity(n + finish_reason.map_or(0, str::len));
    out.push_str(head);
    choice(&mut out, 0, delta, finish_reason, None, None);
    out.push_str("]}");
    out
}

/// A chunk's members up to the opening of `choices`.
pub(super) fn chunk_head(out: &mut String, id: &str, object: &str, created: u64, model: &str) {
    out.push_str("{\"id\":");
    string(out, id);
    out.push_str(",\"object\":");
    string(out, object);
    out.push_str(",\"created\":");
    number(out, created);
    out.push_str(",\"model\":");
    string(out, model);
    out.push_str(",\"choices\":[");
}

/// Enough for the whole text unless strings need escapes (then the buffer
/// grows once or twice).
fn capacity(chunk: &ChatChunk) -> usize {
    let mut n = 96 + chunk.id.len() + chunk.object.len() + chunk.model.len();
    for c in &chunk.choices {
        n += 96 + c.finish_reason.as_ref().map_or(0, String::len);
        n += delta_capacity(&c.delta);
    }
    if chunk.usage.is_some() {
        n += 192;
    }
    n
}

fn delta_capacity(d: &Delta) -> usize {
    let mut n = d.role.as_ref().map_or(0, String::len);
    n += d.content.as_ref().map_or(0, String::len);
    for t in d.tool_calls.iter().flatten() {
        n += 96 + t.id.as_ref().map_or(0, String::len);
        if let Some(f) = &t.function {
            n += f.name.as_ref().map_or(0, String::len);
            n += f.arguments.as_ref().map_or(0, String::len);
        }
    }
    n
}

fn choice(
    out: &mut String,
    index: u32,
    d: &Delta,
    finish_reason: Option<&str>,
    logprobs_value: Option<&serde_json::Value>,
    stop_sequence: Option<&str>,
) {
    out.push_str("{\"index\":");
    number(out, index.into());
    out.push_str(",\"delta\":");
    delta(out, d);
    choice_end(out, finish_reason, logprobs_value, stop_sequence);
}

/// A choice's last members, `finish_reason` and `logprobs` (each `null`
/// when absent) and `stop_sequence` (only when known), and its closing
/// brace: the same in answers and chunks.
fn choice_end(
    out: &mut String,
    finish_reason: Option<&str>,
    lp: Option<&serde_json::Value>,
    stop_sequence: Option<&str>,
) {
    out.push_str(",\"finish_reason\":");
    match finish_reason {
        Some(r) => string(out, r),
        None => out.push_str("null"),
    }
    logprobs(out, lp);
    if let Some(s) = stop_sequence {
        out.push_str(",\"stop_sequence\":");
        string(out, s);
    }
    out.push('}');
}

fn delta(out: &mut String, d: &Delta) {
    let Delta {
        role,
        content,
        tool_calls,
    } = d;
    let mut o = Object::open(out);
    if let Some(role) = role {
        string(o.member("role"), role);
    }
    if let Some(content) = content {
        string(o.member("content"), content);
    }
    if let Some(calls) = tool_calls {
        let out = o.member("tool_calls");
        out.push('[');
        for (k, t) in calls.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            tool_call(out, t);
        }
        out.push(']');
    }
    o.close();
}

fn tool_call(out: &mut String, t: &ToolCallDelta) {
    let ToolCallDelta {
        index,
        id,
        kind,
        function,
    } = t;
    let mut o = Object::open(out);
    number(o.member("index"), (*index).into());
    if let Some(id) = id {
        string(o.member("id"), id);
    }
    if let Some(kind) = kind {
        string(o.member("type"), kind);
    }
    if let Some(FunctionDelta { name, arguments }) = function {
        let mut inner = Object::open(o.member("function"));
        if let Some(name) = name {
            string(inner.member("name"), name);
        }
        if let Some(arguments) = arguments {
            string(inner.member("arguments"), arguments);
        }
        inner.close();
    }
    o.close();
}

fn usage(out: &mut String, u: &CompletionUsage) {
    let CompletionUsage {
        prompt_tokens,
        completion_tokens,
        total_tokens,
        prompt_tokens_details,
        completion_tokens_details,
    } = u;
    out.push_str("{\"prompt_tokens\":");
    number(out, (*prompt_tokens).into());
    out.push_str(",\"completion_tokens\":");
    number(out, (*completion_tokens).into());
    out.push_str(",\"total_tokens\":");
    number(out, (*total_tokens).into());
    if let Some(PromptTokensDetails {
        cached_tokens,
        cache_creation_tokens,
    }) = prompt_tokens_details
    {
        out.push_str(",\"prompt_tokens_details\":{\"cached_tokens\":");
        number(out, (*cached_tokens).into());
        if *cache_creation_tokens > 0 {
            out.push_str(",\"cache_creation_tokens\":");
            number(out, (*cache_creation_tokens).into());
        }
        out.push('}');
    }
    if let Some(CompletionTokensDetails { reasoning_tokens }) = completion_tokens_details {
        out.push_str(",\"completion_tokens_details\":{\"reasoning_tokens\":");
        number(out, (*reasoning_tokens).into());
        out.push('}');
    }
    out.push('}');
}

/// An object whose members are all optional: commas go between the ones
/// present.
struct Object<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Object { out, empty: true }
    }

    /// Writes `"name":` and returns the buffer for the value.
    fn member(&mut self, name: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }

    fn close(self) {
        self.out.push('}');
    }
}

pub(super) fn number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    // Below 2^32 (every count and time here) in 32-bit steps: a 64-bit
    // division by ten is a 128-bit multiply, which a wasm32 plugin calls
    // a function for (`__multi3`), ~100 instructions a digit.
    if let Ok(mut small) = u32::try_from(n) {
        loop {
            at -= 1;
            digits[at] = b'0' + (small % 10) as u8;
            small /= 10;
            if small == 0 {
                break;
            }
        }
        n = 0;
    }
    while at == digits.len() || n != 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // The digits' bytes copied in at once: a `char` push each encoded and
    // checked capacity per digit (~70 instructions a digit in a plugin),
    // and `from_utf8` cost more than the digits.
    // SAFETY: every byte of `digits[at..]` is an ASCII digit, so the string
    // stays UTF-8.
    unsafe { out.as_mut_vec() }.extend_from_slice(&digits[at..]);
}

/// `s` as a JSON string, escaped as serde_json escapes: `"` and `\`, the
/// short forms of backspace, form feed, newline, carriage return and tab,
/// `\u00xx` (lower-case hex) for the other control characters; everything
/// else as is.
pub(super) fn string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = next_escape(bytes, start) {
        // Escaped bytes are ASCII: `start..i` lies on character boundaries.
        out.push_str(&s[start..i]);
        let b = bytes[i];
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// The first byte at or after `from` that a JSON string must escape (`"`,
/// `\`, a control character): where a string being written needs an escape,
/// and where one being read ([`super::read`]) stops being plain text. Eight
/// bytes a step while none is there: the text of every chunk and answer
/// passes here, a byte at a time was the largest part of writing one, and a
/// plugin's loops pay a deadline check on every turn.
#[inline]
pub(super) fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut i = from;
    while let Some(block) = bytes.get(i..i + 8) {
        let v = u64::from_le_bytes(block.try_into().expect("eight bytes"));
        // The high bit of each byte below 0x20, equal to `"` or to `\` (the
        // classic has-less and has-zero tests). A borrow can only set bits
        // above the first such byte, so the lowest set bit is exact.
        let below = v.wrapping_sub(ONES * 0x20) & !v;
        let q = v ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let s = v ^ (ONES * u64::from(b'\\'));
        let slash = s.wrapping_sub(ONES) & !s;
        let found = (below | quote | slash) & HIGH;
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    bytes
        .get(i..)?
        .iter()
        .position(|&b| escaped(b))
        .map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;

    use super::super::{
        AssistantMessage, ChatChunk, ChatCompletion, Choice, ChunkHead, CompletionTokensDetails,
        Delta, FunctionCall, FunctionDelta, PromptTokensDetails, ToolCall, ToolCallDelta,
    };
    use super::*;
    use crate::types::Usage;

    #[test]
    fn numbers_as_serde_writes_them() {
        for n in [
            0,
            7,
            10,
            99,
            1_796_205_600,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            10_u64.pow(19),
            u64::MAX,
        ] {
            let mut out = String::new();
            number(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    fn same_as_serde(chunk: &ChatChunk) {
        let serde = serde_json::to_string(chunk).unwrap();
        assert_eq!(chunk.to_json(), serde);
        if let [c] = &chunk.choices[..]
            && chunk.usage.is_none()
            && c.index == 0
            && c.logprobs.is_none()
        {
            let finish = c.finish_reason.as_deref();
            let single =
                ChatChunk::json_of(&chunk.id, chunk.created, &chunk.model, &c.delta, finish);
            assert_eq!(single, serde);
            let head = ChunkHead::new(&chunk.id, chunk.created, &chunk.model);
            assert_eq!(head.json_of(&c.delta, finish), serde);
            if c.delta.role.is_none() && c.delta.tool_calls.is_none() {
                let text = c.delta.content.as_deref();
                assert_eq!(head.text_json(text, finish), serde);
                let text =
                    ChatChunk::text_json(&chunk.id, chunk.created, &chunk.model, text, finish);
                assert_eq!(text, serde);
            }
        }
        assert!(capacity(chunk) >= serde.len() || serde.contains('\\'));
    }

    #[test]
    fn strings_escape_as_serde_escapes_them_at_any_offset() {
        // Every byte that needs an escape and some that do not, at every
        // offset of strings around the eight-byte step, after ASCII and
        // after multi-byte characters.
        let specials = [
            '\0', '\u{1f}', '"', '\\', '\n', '\u{7f}', ' ', '\u{e9}', '\u{2028}',
        ];
        for fill in ['a', '\u{e9}', '\u{1f600}'] {
            for len in 0..20 {
                for at in 0..=len {
                    for special in specials {
                        let text: alloc::string::String = (0..len)
                            .map(|i| if i == at { special } else { fill })
                            .chain((at == len).then_some(special))
                            .collect();
                        let mut out = alloc::string::String::new();
                        super::string(&mut out, &text);
                        assert_eq!(out, serde_json::to_string(&text).unwrap(), "{text:?}");
                    }
                }
            }
        }
    }

    /// What the writer writes for any text is taken as written, and a chunk
    /// from it is the chunk from the text; other escapes of the same text
    /// are not.
    #[test]
    fn escaped_text_is_taken_as_written_only_when_the_writer_writes_it() {
        let head = super::super::ChunkHead::new("c-1", 7, "m");
        let mut texts: alloc::vec::Vec<alloc::string::String> = (0u8..=0x7f)
            .map(|b| alloc::format!("a{}b", b as char))
            .collect();
        texts.push("é✓😀\u{2028}".into());
        texts.push(String::new());
        for text in &texts {
            let mut quoted = String::new();
            string(&mut quoted, text);
            let inside = &quoted[1..quoted.len() - 1];
            assert!(escaped_as_written(inside), "{inside:?}");
            assert_eq!(
                head.escaped_text_json(inside, Some("stop")),
                head.text_json(Some(text), Some("stop"))
            );
        }
        for other in [
            "\\/",
            "\\u00e9",
            "\\u000a",
            "\\u000A",
            "\\u001F",
            "\\u0020",
            "\\u0008",
            "a\\u0009",
            "\\u000d",
            "\\u000c",
            "\\ud83d\\ude00",
            "\\u",
        ] {
            assert!(!escaped_as_written(other), "{other:?}");
        }
        assert!(escaped_as_written("\\u001f\\u0000\\n"));
        assert!(!escaped_as_written("a\nb") && !escaped_as_written("a\"b"));
    }

    #[test]
    fn chunks_read_exactly_as_serde_writes_them() {
        let mut every_byte = String::new();
        for b in 0u8..=0x7f {
            every_byte.push(b as char);
        }
        every_byte.push_str("é✓😀\u{2028}");
        let texts = ["", "plain", "quote \" and \\ back", &every_byte];
        for text in texts {
            for reason in [None, Some("stop")] {
                same_as_serde(&ChatChunk::new(
                    text,
                    u64::MAX,
                    text,
                    Delta::text(text),
                    reason,
                ));
                same_as_serde(&ChatChunk::new("id", 0, "m", Delta::role(), reason));
            }
            let mut tool = ToolCallDelta::start(7, text, text);
            tool.function.as_mut().unwrap().arguments = Some(text.to_string());
            let mut delta = Delta::tool(tool);
            delta
                .tool_calls
                .as_mut()
                .unwrap()
                .push(ToolCallDelta::arguments(8, text));
            delta.tool_calls.as_mut().unwrap().push(ToolCallDelta {
                index: 9,
                id: None,
                kind: None,
                function: Some(FunctionDelta::default()),
            });
            delta
                .tool_calls
                .as_mut()
                .unwrap()
                .push(ToolCallDelta::default());
            same_as_serde(&ChatChunk::new("id", 12, "m", delta, Some("tool_calls")));
        }
        same_as_serde(&ChatChunk::new("id", 1, "m", Delta::default(), None));
        let mut all = Delta::role();
        all.tool_calls = Some(vec![]);
        same_as_serde(&ChatChunk::new("id", 1, "m", all, None));
        let mut two = ChatChunk::new("id", 1, "m", Delta::text("a"), None);
        two.choices.push(two.choices[0].clone());
        two.choices[1].index = 1;
        two.choices[1].logprobs =
            Some(serde_json::json!({"content": [{"token": "a\n", "logprob": -0.5}]}));
        same_as_serde(&two);
        two.choices[0].stop_sequence = Some("quote \" END".into());
        same_as_serde(&two);
        // The head's finish chunk, with and without a stop sequence.
        for stop in [None, Some("\n\nHuman:")] {
            let mut c = ChatChunk::new("id", 1, "m", Delta::default(), Some("stop"));
            c.choices[0].stop_sequence = stop.map(String::from);
            let head = super::super::ChunkHead::new("id", 1, "m");
            assert_eq!(
                head.finish_json("stop", stop),
                serde_json::to_string(&c).unwrap()
            );
        }
        for u in [
            Usage::new(0, 0),
            Usage::new(u32::MAX, 1),
            Usage::new(3, 4)
                .with_cached_prompt_tokens(1)
                .with_reasoning_tokens(2),
        ] {
            same_as_serde(&ChatChunk::usage_only("id", 5, "m", u));
        }
        let mut detailed = ChatChunk::usage_only("id", 5, "m", Usage::new(1, 1));
        detailed.usage.as_mut().unwrap().prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: 0,
            cache_creation_tokens: 0,
        });
        same_as_serde(&detailed);
        detailed.usage.as_mut().unwrap().prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: 2,
            cache_creation_tokens: 7,
        });
        detailed.usage.as_mut().unwrap().completion_tokens_details =
            Some(CompletionTokensDetails {
                reasoning_tokens: 0,
            });
        same_as_serde(&detailed);
    }

    #[test]
    fn completions_read_exactly_as_serde_writes_them() {
        let same = |c: &ChatCompletion| assert_eq!(c.to_json(), serde_json::to_string(c).unwrap());
        let mut every_byte = String::new();
        for b in 0u8..=0x7f {
            every_byte.push(b as char);
        }
        every_byte.push_str("é✓😀\u{2028}");
        for text in ["", "plain", "quote \" and \\ back", &every_byte] {
            for reason in [None, Some(text)] {
                let message = AssistantMessage::new(Some(text.to_string()), vec![]);
                let choice = Choice {
                    index: 3,
                    message,
                    finish_reason: reason.map(String::from),
                    logprobs: None,
                    stop_sequence: reason.map(String::from),
                };
                same(&ChatCompletion::new(text, u64::MAX, text, choice));
            }
            let calls = vec![
                ToolCall {
                    id: text.to_string(),
                    kind: String::from("function"),
                    function: FunctionCall {
                        name: text.to_string(),
                        arguments: text.to_string(),
                    },
                },
                ToolCall {
                    id: String::from("b"),
                    kind: text.to_string(),
                    function: FunctionCall {
                        name: String::from("f"),
                        arguments: String::from("{}"),
                    },
                },
            ];
            let mut message = AssistantMessage::new(None, calls);
            message.refusal = Some(text.to_string());
            let choice = Choice {
                index: 0,
                message,
                finish_reason: Some(String::from("tool_calls")),
                logprobs: Some(serde_json::json!({"content": [{"token": text}]})),
                stop_sequence: None,
            };
            let mut c = ChatCompletion::new("id", 0, "m", choice.clone());
            c.usage = Some(
                Usage::new(3, 4)
                    .with_cached_prompt_tokens(1)
                    .with_reasoning_tokens(2)
                    .into(),
            );
            same(&c);
            c.choices.push(choice);
            c.choices[1].message = AssistantMessage::default();
            c.usage = Some(Usage::new(0, 0).into());
            same(&c);
        }
        let mut none = ChatCompletion::new(
            "id",
            1,
            "m",
            Choice {
                index: 0,
                message: AssistantMessage::default(),
                finish_reason: None,
                logprobs: None,
                stop_sequence: None,
            },
        );
        none.choices.clear();
        same(&none);
    }
}
