//! A validating pull reader over JSON text, for the reads an adapter makes
//! on every chunk and answer.
//!
//! An adapter's hot reads want a few members of an object as raw text (to
//! splice the deployment's name into an upstream chunk, say) and must still
//! refuse text that is not JSON, since that text is sent on to the client.
//! serde_json does both, but in a plugin it spends ~70 instructions a byte
//! on it (each skipped member is identified, each skipped value walked
//! through its visitor machinery): an OpenAI stream chunk of 220 bytes cost
//! ~15k instructions, more than the call that carries it. This reader walks
//! the bytes once, checks the grammar as serde_json does when it skips a
//! value (strings, escapes, numbers, literals, nesting), and hands out
//! borrowed spans; strings are scanned eight bytes a step (the SDK's JSON
//! writer's scan).
//!
//! It accepts exactly what `serde_json::from_str::<IgnoredAny>` accepts
//! (tested below on every one-character change of a set of documents),
//! except nesting deeper than [`MAX_DEPTH`], which it refuses. Names and
//! strings without escapes are borrowed; those with escapes are unescaped
//! here ([`Key::name`], [`Reader::str`]) as serde_json unescapes them,
//! refusing a lone surrogate as it does (tested against it).

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;

/// Nesting deeper than this is refused (serde_json's own limit is 128; a
/// caller falls back to serde, which then decides).
pub const MAX_DEPTH: u32 = 100;

/// The text stopped being JSON (or nested too deep) at this byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid {
    /// Byte offset into the text the reader was given.
    pub at: usize,
}

/// A member name, or a string value ([`Reader::raw_str`]), as it appears in
/// the text, quotes included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    quoted: &'a str,
    escaped: bool,
}

impl<'a> Key<'a> {
    /// The name: borrowed when it has no escapes, unescaped otherwise;
    /// `None` for an escape serde_json refuses in a name (a lone surrogate),
    /// where serde would refuse the whole text.
    pub fn name(&self) -> Option<Cow<'a, str>> {
        if !self.escaped {
            return Some(Cow::Borrowed(self.plain()));
        }
        unescape(self.plain()).map(Cow::Owned)
    }

    /// The text between the quotes, escapes and all: as JSON writes it.
    pub fn inside(&self) -> &'a str {
        self.plain()
    }

    /// Whether the text has escapes.
    pub fn is_escaped(&self) -> bool {
        self.escaped
    }

    /// The text between the quotes, escapes and all.
    #[inline(always)]
    fn plain(&self) -> &'a str {
        &self.quoted[1..self.quoted.len() - 1]
    }
}

/// The text of a string's inside whose escapes [`Reader::string`] checked
/// (each is one of JSON's, `\u` with four hex digits). serde_json's
/// unescaping did the same with a deserializer's round trip and a scratch
/// buffer grown byte by byte: ~800 instructions for a token's text with one
/// `\n` in a plugin. `None` for a surrogate not in a pair, as serde_json
/// refuses one in a string it reads.
fn unescape(inner: &str) -> Option<String> {
    let bytes = inner.as_bytes();
    let mut out = String::with_capacity(inner.len());
    let mut start = 0;
    while let Some(k) = bytes[start..].iter().position(|&b| b == b'\\') {
        let at = start + k;
        // Before a backslash (ASCII) is a character boundary.
        out.push_str(&inner[start..at]);
        let (c, len) = match bytes.get(at + 1)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let high = hex4(bytes.get(at + 2..at + 6)?)?;
                match high {
                    0xD800..=0xDBFF => {
                        // A leading surrogate: its trailing one must follow.
                        if bytes.get(at + 6..at + 8)? != b"\\u" {
                            return None;
                        }
                        let low = hex4(bytes.get(at + 8..at + 12)?)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                        (char::from_u32(c)?, 12)
                    }
                    0xDC00..=0xDFFF => return None,
                    c => (char::from_u32(c)?, 6),
                }
            }
            _ => return None,
        };
        out.push(c);
        start = at + len;
    }
    out.push_str(&inner[start..]);
    Some(out)
}

/// Four hex digits' value.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some(n << 4 | v)
    })
}

/// Reads one JSON text front to back. Callers enter containers
/// ([`object`](Reader::object), [`array`](Reader::array)), step through them
/// ([`key`](Reader::key), [`element`](Reader::element)) and skip what they
/// do not need ([`value`](Reader::value), which validates it); a caller that
/// stops early abandons the reader; a clone marks a place to read again
/// from.
#[derive(Clone)]
pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
    /// The container just entered has had no member or element yet.
    fresh: bool,
    /// Whitespace between tokens held a line break.
    line_break: bool,
    /// A surrogate escape or a number with an exponent or many digits was
    /// read (see [`Reader::saw_odd`]).
    odd: bool,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        Reader {
            text,
            pos: 0,
            depth: 0,
            fresh: false,
            line_break: false,
            odd: false,
        }
    }

    /// Byte offset of the next unread byte.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Whether whitespace read so far held `\n` or `\r` (strings cannot hold
    /// them raw, so this says whether the text is on one line).
    pub fn saw_line_break(&self) -> bool {
        self.line_break
    }

    /// Whether the text read so far held something serde_json skips but may
    /// refuse to read into a `Value`: a `\u` escape of a UTF-16 surrogate
    /// (a lone one is refused), or a number with an exponent or more than 15
    /// digits (one beyond `f64`'s range is refused). A caller whose fallback
    /// reads a `Value` leaves such text to it, so the two never disagree.
    pub fn saw_odd(&self) -> bool {
        self.odd
    }

    fn invalid(&self) -> Invalid {
        Invalid { at: self.pos }
    }

    /// Skips whitespace; the next byte, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b' ' | b'\t' => {}
                b'\n' | b'\r' => self.line_break = true,
                _ => return Some(b),
            }
            self.pos += 1;
        }
        None
    }

    /// The next value's first byte (after whitespace), not consumed: what
    /// kind of value comes (`{`, `[`, `"`, a digit or `-`, `t`, `f`, `n`).
    pub fn next_byte(&mut self) -> Option<u8> {
        self.peek()
    }

    #[inline(always)]
    fn expect(&mut self, b: u8) -> Result<(), Invalid> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.invalid())
        }
    }

    fn enter(&mut self, open: u8) -> Result<(), Invalid> {
        self.expect(open)?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.invalid());
        }
        self.fresh = true;
        Ok(())
    }

    /// Enters an object (`{`).
    pub fn object(&mut self) -> Result<(), Invalid> {
        self.enter(b'{')
    }

    /// Enters an array (`[`).
    pub fn array(&mut self) -> Result<(), Invalid> {
        self.enter(b'[')
    }

    /// The object's next member name, with its `:` read (the value is next),
    /// or `None` after its closing `}`.
    #[inline(never)]
    pub fn key(&mut self) -> Result<Option<Key<'a>>, Invalid> {
        self.next_key()
    }

    /// [`key`](Self::key), inlined where [`members`](Self::members) walks
    /// an object (a fast path's every member): no call, and no `Result`
    /// written to memory and read back. Inlined everywhere, it made
    /// openai's stream events dearer.
    #[inline(always)]
    fn next_key(&mut self) -> Result<Option<Key<'a>>, Invalid> {
        let fresh = core::mem::replace(&mut self.fresh, false);
        match self.peek() {
            Some(b'}') if self.depth > 0 => {
                self.pos += 1;
                self.depth -= 1;
                return Ok(None);
            }
            Some(b',') if !fresh => {
                self.pos += 1;
                if self.peek() != Some(b'"') {
                    return Err(self.invalid());
                }
            }
            Some(b'"') if fresh => {}
            _ => return Err(self.invalid()),
        }
        let start = self.pos;
        let escaped = self.string()?;
        let quoted = &self.text[start..self.pos];
        self.expect(b':')?;
        Ok(Some(Key { quoted, escaped }))
    }

    /// Whether the array has another element (the reader is then at it), or
    /// `false` after its closing `]`.
    pub fn element(&mut self) -> Result<bool, Invalid> {
        let fresh = core::mem::replace(&mut self.fresh, false);
        match self.peek() {
            Some(b']') if self.depth > 0 => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            Some(b',') if !fresh => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) if fresh => Ok(true),
            _ => Err(self.invalid()),
        }
    }

    /// Reads one whole value, checking it, and returns its text.
    pub fn value(&mut self) -> Result<&'a str, Invalid> {
        let first = self.peek().ok_or_else(|| self.invalid())?;
        let start = self.pos;
        match first {
            b'{' => {
                self.object()?;
                while self.key()?.is_some() {
                    self.value()?;
                }
            }
            b'[' => {
                self.array()?;
                while self.element()? {
                    self.value()?;
                }
            }
            b'"' => {
                self.string()?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return Err(self.invalid()),
        }
        Ok(&self.text[start..self.pos])
    }

    /// Reads a string value: borrowed when it has no escapes, unescaped
    /// otherwise. `Err` for anything but a string, and for an
    /// escape serde_json refuses in a string it reads (a lone surrogate).
    pub fn str(&mut self) -> Result<Cow<'a, str>, Invalid> {
        if self.peek() != Some(b'"') {
            return Err(self.invalid());
        }
        let start = self.pos;
        let escaped = self.string()?;
        let quoted = &self.text[start..self.pos];
        let key = Key { quoted, escaped };
        if !escaped {
            // The usual string: borrowed, with no call and no `Option` of
            // a `Cow` in between (a plugin pays for each in memory).
            return Ok(Cow::Borrowed(key.plain()));
        }
        key.name().ok_or(Invalid { at: start })
    }

    /// Reads a string value as it is written, checked but not unescaped:
    /// for text passed on as JSON ([`super::escaped_as_written`]).
    pub fn raw_str(&mut self) -> Result<Key<'a>, Invalid> {
        if self.peek() != Some(b'"') {
            return Err(self.invalid());
        }
        let start = self.pos;
        let escaped = self.string()?;
        Ok(Key {
            quoted: &self.text[start..self.pos],
            escaped,
        })
    }

    /// Reads a `null` if one is next: whether it did.
    pub fn null(&mut self) -> Result<bool, Invalid> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.value().map(|_| true)
    }

    /// A non-negative integer that fits `T`, as serde reads one into an
    /// unsigned field; `None` for anything else (a sign, a fraction, an
    /// exponent, too large), which serde refuses too.
    pub fn unsigned<T: core::str::FromStr + TryFrom<u64>>(&mut self) -> Option<T> {
        // The usual case, digits that fit a u64, read as they are checked;
        // anything else by the general path below.
        let start = self.pos;
        if let Some(first @ b'0'..=b'9') = self.peek() {
            let bytes = self.text.as_bytes();
            let from = self.pos;
            let mut i = from + 1;
            let mut n = u64::from(first - b'0');
            if first != b'0' {
                // Plain 64-bit steps (a checked 64-bit multiply is a 128-bit
                // one, a function call in a wasm32 plugin); up to 19 digits
                // always fit, more go to the general path below.
                while let Some(&d @ b'0'..=b'9') = bytes.get(i) {
                    n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    i += 1;
                }
            }
            let fits = i - from <= 19;
            // A fraction, an exponent or a digit after a leading zero is
            // not an unsigned integer (or not JSON).
            if fits && !matches!(bytes.get(i), Some(b'.' | b'e' | b'E' | b'0'..=b'9')) {
                self.odd |= i - from > 17;
                self.pos = i;
                return T::try_from(n).ok();
            }
        }
        self.pos = start;
        let v = self.value().ok()?;
        v.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| v.parse().ok())?
    }

    /// An object's members, each handed to `member` with its name (which
    /// must read or skip the value); `None` for anything but an object (serde
    /// would read a struct from an array too, by position) or when `member`
    /// gives up.
    pub fn members(&mut self, mut member: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        if self.peek() != Some(b'{') {
            return None;
        }
        self.object().ok()?;
        while let Some(key) = self.next_key().ok()? {
            // A name without escapes (all but never) is handed out as it
            // is, without a `Cow` to build and drop: ~100 instructions a
            // member in a plugin.
            if key.escaped {
                member(self, &key.name()?)?;
            } else {
                member(self, key.plain())?;
            }
        }
        Some(())
    }

    /// An array's items, each read by `item`; `None` for anything but an
    /// array or when `item` gives up.
    pub fn items<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        if self.peek() != Some(b'[') {
            return None;
        }
        self.array().ok()?;
        let mut out = Vec::new();
        while self.element().ok()? {
            out.push(item(self)?);
        }
        Some(out)
    }

    /// Skips a value, checking it: for a member a fast path has no use for.
    pub fn skip(&mut self) -> Option<()> {
        self.value().ok().map(drop)
    }

    /// A value read by `read`, or `null` (`Some(None)`); `None` when
    /// `read` gives up.
    pub fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null().ok()? {
            Some(None)
        } else {
            read(self).map(Some)
        }
    }

    /// An optional member of a derived struct read into `slot` (which holds
    /// `Some` once read: `null` is `Some(None)`); a second one gives up, as
    /// serde's derive refuses a repeated member.
    pub fn once<T>(
        &mut self,
        slot: &mut Option<Option<T>>,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(self.nullable(read)?);
        Some(())
    }

    /// Only whitespace is left.
    pub fn finish(mut self) -> Result<(), Invalid> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.invalid()),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        if self.text.as_bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.invalid())
        }
    }

    /// A string from its opening quote; whether it had escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, Invalid> {
        let bytes = self.text.as_bytes();
        let mut i = self.pos + 1;
        let mut escaped = false;
        loop {
            i = super::write::next_escape(bytes, i).unwrap_or(bytes.len());
            match bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match bytes.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u')
                            if bytes
                                .get(i + 2..i + 6)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            // D800 to DFFF: a surrogate.
                            self.odd |= bytes[i + 2].eq_ignore_ascii_case(&b'd')
                                && matches!(bytes[i + 3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F');
                            i += 6
                        }
                        _ => {
                            self.pos = i;
                            return Err(self.invalid());
                        }
                    }
                }
                // A control character (JSON strings cannot hold them raw),
                // or the end of the text.
                _ => {
                    self.pos = i;
                    return Err(self.invalid());
                }
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), Invalid> {
        let bytes = self.text.as_bytes();
        let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let digits = |mut i: usize| {
            while at(i).is_ascii_digit() {
                i += 1;
            }
            i
        };
        let start = self.pos;
        let mut i = start;
        if at(i) == b'-' {
            i += 1;
        }
        match at(i) {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(i + 1),
            _ => {
                self.pos = i;
                return Err(self.invalid());
            }
        }
        if at(i) == b'.' {
            if !at(i + 1).is_ascii_digit() {
                self.pos = i;
                return Err(self.invalid());
            }
            i = digits(i + 1);
        }
        if matches!(at(i), b'e' | b'E') {
            i += 1;
            if matches!(at(i), b'+' | b'-') {
                i += 1;
            }
            if !at(i).is_ascii_digit() {
                self.pos = i;
                return Err(self.invalid());
            }
            i = digits(i);
            self.odd = true;
        }
        // More than 15 digits (and the sign, the point) may not fit an f64.
        self.odd |= i - start > 17;
        self.pos = i;
        Ok(())
    }
}

/// Whether `text` is one JSON value, as [`Reader`] checks it.
pub fn is_json(text: &str) -> bool {
    let mut r = Reader::new(text);
    r.value().is_ok() && r.finish().is_ok()
}

/// `doc` with every one-character deletion, and every insertion and every
/// substitution of each of `probes`, at every character boundary: the inputs
/// of the tests that check an adapter's fast path against serde (bytes that
/// start or end some part of JSON's grammar make good probes).
pub fn one_char_changes(doc: &str, probes: &[&str]) -> Vec<String> {
    let cuts: Vec<usize> = (0..=doc.len())
        .filter(|&i| doc.is_char_boundary(i))
        .collect();
    let mut out = Vec::new();
    for (n, &i) in cuts.iter().enumerate() {
        let next = cuts.get(n + 1).copied();
        if let Some(j) = next {
            out.push([&doc[..i], &doc[j..]].concat());
        }
        for p in probes {
            out.push([&doc[..i], p, &doc[i..]].concat());
            if let Some(j) = next {
                out.push([&doc[..i], p, &doc[j..]].concat());
            }
        }
    }
    out
}

/// Checks a fast path against the general one it stands in for, for tests:
/// `fast` must answer each of `docs`, and on every [`one_char_changes`] of
/// them (with `probes`) where it answers, `general` must answer the same.
/// Panics naming the first input where they differ; returns how many changed
/// inputs the fast path answered (a test asserts that is not a handful).
pub fn assert_fast_path_agrees<T: PartialEq + core::fmt::Debug>(
    docs: &[&str],
    probes: &[&str],
    fast: impl Fn(&str) -> Option<T>,
    general: impl Fn(&str) -> T,
) -> usize {
    let mut answered = 0;
    for doc in docs {
        assert!(fast(doc).is_some(), "the fast path refused {doc}");
        for v in one_char_changes(doc, probes) {
            let Some(quick) = fast(&v) else {
                continue;
            };
            answered += 1;
            assert_eq!(quick, general(&v), "{v}");
        }
    }
    answered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    const DOCS: &[&str] = &[
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1796205600,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"21\u00b0C."},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"a":[1,-2.5e+3,0.0,1E9,true,false,null,"x\"y\\z\/\b\f\n\r\t"],"b":{},"c":[],"d":{"e":[{}]}}"#,
        r#" [ "é€😀" , 0 , -0 , 12.5 ] "#,
        r#"{"usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":0}}}"#,
        "\"plain\"",
        "-1.25e-7",
    ];

    /// Bytes worth inserting or substituting: each one starts or ends some
    /// part of the grammar.
    const PROBES: &[&str] = &[
        "{", "}", "[", "]", ",", ":", "\"", "\\", "u", "0", "1", "-", "+", ".", "e", "E", " ",
        "\n", "\u{1}", "t", "n", "x", "é", "\\u12",
    ];

    /// Every one-byte deletion, insertion and substitution of every
    /// document: never accepted where serde_json refuses, and accepted
    /// wherever serde_json accepts (no depth limit is near here).
    #[test]
    fn accepts_what_serde_accepts_on_every_one_byte_change() {
        let mut cases = 0;
        for doc in DOCS {
            let mut variants = one_char_changes(doc, PROBES);
            variants.push(String::from(*doc));
            for v in &variants {
                cases += 1;
                assert_eq!(is_json(v), serde_accepts(v), "{v}");
            }
        }
        assert!(cases > 10_000, "{cases}");
    }

    #[test]
    fn odd_text_is_flagged() {
        let odd = |t: &str| {
            let mut r = Reader::new(t);
            r.value().unwrap();
            r.saw_odd()
        };
        for t in [
            r#""\ud800""#,
            r#""\uDBFF\uDC00""#,
            "1e400",
            "-1E-2",
            "12345678901234567890",
            r#"[1,{"a":"\udfff"}]"#,
        ] {
            assert!(odd(t), "{t}");
        }
        for t in [
            r#""\u00e9\u7fff\ue000""#,
            "123456789012345",
            "-1234567890.12345",
            "0.5",
            r#"{"a":[1,2]}"#,
        ] {
            assert!(!odd(t), "{t}");
        }
    }

    #[test]
    fn helpers_read_nulls_counts_members_and_items() {
        let mut r = Reader::new(r#"{"a":null,"b":[1,2],"c":18446744073709551616,"d":-1}"#);
        let (mut a, mut b, mut c, mut d) = (None, None, None, None);
        r.members(|r, name| {
            match name {
                "a" => a = Some(r.null().ok()?),
                "b" => b = r.items(|r| r.unsigned::<u32>()),
                "c" => c = Some(r.unsigned::<u64>()),
                _ => d = Some(r.unsigned::<u64>()),
            }
            Some(())
        })
        .unwrap();
        assert_eq!(
            (a, b, c, d),
            (Some(true), Some(alloc::vec![1, 2]), Some(None), Some(None))
        );
        assert!(Reader::new("[1]").members(|_, _| Some(())).is_none());
        assert!(Reader::new("{}").items(|r| r.value().ok()).is_none());
        assert_eq!(Reader::new("1").null(), Ok(false));
    }

    /// Every escape, surrogate pairs and lone surrogates among them, and
    /// every one-character change of a few strings: unescaped as serde_json
    /// unescapes, refused where it refuses.
    #[test]
    fn strings_are_unescaped_as_serde_json_unescapes() {
        let docs = [
            r#""a\"b\\c\/d\be\ff\ng\rh\ti""#,
            r#""\u00e9\u20AC\ud83d\ude00 \uD800\uDC00\udbff\udfff""#,
            r#""x\u0000y\u001fz é€😀""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            r#""tail\ud800""#,
            r#""\ud800\n""#,
        ];
        let probes = ["\\", "u", "d", "D", "8", "c", "0", "f", "\"", "n", "é"];
        let mut compared = 0;
        for doc in docs {
            let mut variants = one_char_changes(doc, &probes);
            variants.push(String::from(doc));
            // One valid string each (a change may break the grammar: the
            // reader's refusal of that is tested above).
            for v in variants.iter().filter(|v| v.starts_with('"') && is_json(v)) {
                compared += 1;
                assert_eq!(
                    Reader::new(v).str().ok().map(Cow::into_owned),
                    serde_json::from_str::<String>(v).ok(),
                    "{v}"
                );
            }
        }
        assert!(compared > 1000, "{compared}");
    }

    #[test]
    fn unsigned_reads_what_serde_reads_into_an_unsigned_field() {
        for t in [
            "0",
            "7",
            " 42 ",
            "4294967295",
            "4294967296",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "01",
            "00",
            "1.5",
            "0.0",
            "1e3",
            "1E3",
            "-1",
            "-0",
            "12x",
            "\"3\"",
            "null",
        ] {
            let mut r = Reader::new(t);
            let narrow = r.unsigned::<u32>().filter(|_| r.finish().is_ok());
            assert_eq!(narrow, serde_json::from_str::<u32>(t).ok(), "{t}");
            let mut r = Reader::new(t);
            let wide = r.unsigned::<u64>().filter(|_| r.finish().is_ok());
            assert_eq!(wide, serde_json::from_str::<u64>(t).ok(), "{t}");
        }
    }

    #[test]
    fn depth_is_limited() {
        let deep = |n: usize| ["[".repeat(n), "]".repeat(n)].concat();
        assert!(is_json(&deep(MAX_DEPTH as usize)));
        assert!(!is_json(&deep(MAX_DEPTH as usize + 1)));
        assert!(serde_accepts(&deep(MAX_DEPTH as usize + 1)));
    }

    #[test]
    fn members_are_read_as_spans() {
        let text = r#"{ "model" : "m\"1" , "n\u0061me":[1, {"x":2}] ,"z":null }"#;
        let mut r = Reader::new(text);
        r.object().unwrap();
        let k = r.key().unwrap().unwrap();
        assert_eq!(k.name().as_deref(), Some("model"));
        assert_eq!(r.value().unwrap(), r#""m\"1""#);
        let k = r.key().unwrap().unwrap();
        assert!(matches!(k.name(), Some(Cow::Owned(n)) if n == "name"));
        assert_eq!(r.next_byte(), Some(b'['));
        r.array().unwrap();
        assert!(r.element().unwrap());
        assert_eq!(r.value().unwrap(), "1");
        assert!(r.element().unwrap());
        assert_eq!(r.value().unwrap(), r#"{"x":2}"#);
        assert!(!r.element().unwrap());
        assert_eq!(r.key().unwrap().unwrap().name().as_deref(), Some("z"));
        assert_eq!(r.value().unwrap(), "null");
        assert_eq!(r.key().unwrap(), None);
        assert!(!r.saw_line_break());
        r.finish().unwrap();
        let mut r = Reader::new("{\n}");
        r.object().unwrap();
        assert_eq!(r.key().unwrap(), None);
        assert!(r.saw_line_break());
        assert!(!r.saw_odd());
        // Closing what was never opened is refused, not counted below zero.
        assert!(Reader::new("}").key().is_err());
        assert!(Reader::new("]").element().is_err());
        // A lone surrogate is JSON to skip, but not a name serde would read.
        let mut r = Reader::new(r#"{"\ud800":1}"#);
        r.object().unwrap();
        assert_eq!(r.key().unwrap().unwrap().name(), None);
        let mut r = Reader::new(r#"["a\"b", "c", 1]"#);
        r.array().unwrap();
        assert!(r.element().unwrap());
        assert!(matches!(r.str(), Ok(Cow::Owned(s)) if s == "a\"b"));
        assert!(r.element().unwrap());
        assert!(matches!(r.str(), Ok(Cow::Borrowed("c"))));
        assert!(r.element().unwrap());
        assert!(r.str().is_err());
    }
}
