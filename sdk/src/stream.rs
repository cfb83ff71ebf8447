//! Streamed answers: a parser that lives in a byte string between calls.
//!
//! The host splits a streamed body into whole events (SSE events or NDJSON
//! lines, as the adapter's [`framing`](crate::Adapter::framing) says) and
//! hands them over a few at a time, each time with the parser state as the
//! last call left it (the SDK tells the host when a call left it unchanged,
//! so it is not copied back). No instance is held between calls: any instance
//! may serve the next one, so a parser keeps nothing in globals and its state
//! must survive a round trip through bytes.
//!
//! The SDK does that round trip: a [`StreamParser`] is an ordinary value
//! that handles one event at a time and says how to [`save`] and [`restore`]
//! itself ([`StateWriter`] and [`StateReader`] make that a few lines). The
//! SDK also remembers, outside the parser's own bytes, whether the upstream
//! signalled the end (events after it are ignored) and the last usage
//! reported (repeated in every later step), so parsers need not.
//!
//! [`save`]: StreamParser::save
//! [`restore`]: StreamParser::restore

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::adapter::{ErrorClass, StreamStep, Target, UpstreamError};
use crate::types::Usage;

/// The host refuses a stream state larger than this (64 KiB): the parser's
/// own bytes, and the SDK's envelope around them (a few flags and counts, and
/// the target's deployment name and model, which later calls are not given).
pub const MAX_STATE_BYTES: usize = 64 * 1024;

/// Parses one streamed upstream response, event by event.
///
/// Between calls the parser exists only as the bytes [`save`](Self::save)
/// returned; every call starts from [`restore`](Self::restore). Keep the state
/// small (flags, counters, ids): it crosses into the sandbox with every call
/// (and back out when it changed), and the host refuses states over
/// [`MAX_STATE_BYTES`].
pub trait StreamParser: Sized {
    /// A 2xx streamed response began. `request` is the canonical request
    /// (e.g. to see whether the caller asked for the usage chunk), `headers`
    /// the response's header block (see [`header`](crate::header); lower-case
    /// names; those the adapter declared
    /// in [`Adapter::response_headers`](crate::Adapter::response_headers),
    /// if it did). The quota hint the host gets
    /// with the start is read by [`Adapter::quota`](crate::Adapter::quota).
    fn begin(target: &Target, request: &str, headers: &str) -> Result<Self, UpstreamError>;

    /// One whole event: emit the canonical `chat.completion.chunk` objects it
    /// yields with [`StreamOutput::push`], report usage with
    /// [`StreamOutput::set_usage`], and call [`StreamOutput::set_done`] when
    /// the upstream signals the end (later events are then not delivered).
    /// An `Err` ends the stream: an error event inside the stream, or a chunk
    /// that cannot be understood.
    fn event(
        &mut self,
        target: &Target,
        event: &StreamEvent,
        out: &mut StreamOutput,
    ) -> Result<(), UpstreamError>;

    /// The upstream closed the body. Return an error if the stream ended
    /// before it completed, so a truncated answer is never a success. The
    /// default accepts the stream only if [`StreamOutput::is_done`].
    fn end(&mut self, target: &Target, out: &mut StreamOutput) -> Result<(), UpstreamError> {
        let _ = target;
        if out.is_done() {
            Ok(())
        } else {
            Err(incomplete())
        }
    }

    /// The parser as bytes, read back by [`restore`](Self::restore).
    fn save(&self) -> Vec<u8>;

    /// The parser [`save`](Self::save) wrote. A [`StateReader`] error already
    /// is the right `Err` for bytes that do not parse.
    fn restore(state: &[u8]) -> Result<Self, UpstreamError>;
}

/// The error of a stream the upstream closed before it completed: an
/// attempt failure (`overloaded`), so another deployment may answer whole.
pub fn incomplete() -> UpstreamError {
    UpstreamError::new(ErrorClass::Overloaded, "stream ended before completion")
}

/// What the events of one call produced; the SDK turns it into the step the
/// host receives.
#[derive(Debug, Default)]
pub struct StreamOutput {
    pub(crate) chunks: Vec<String>,
    pub(crate) usage: Option<Usage>,
    pub(crate) done: bool,
    pub(crate) malformed: u32,
}

impl StreamOutput {
    /// Emits one canonical `chat.completion.chunk` JSON object to the client.
    pub fn push(&mut self, chunk: impl Into<String>) {
        self.chunks.push(chunk.into());
    }

    /// Reports the stream's token usage (replacing any earlier report); the
    /// host gets it with this and every later step.
    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// The usage reported so far in this stream, e.g. to add output tokens
    /// to the prompt tokens an earlier event reported.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Skips an event that cannot be understood (not JSON, not a chunk):
    /// the host counts it (and logs the count), and fails the stream only
    /// when a burst of them arrives, so one garbled event does not end an
    /// answer.
    pub fn skip_malformed(&mut self) {
        self.malformed += 1;
    }

    /// Events skipped as malformed in this call so far.
    pub fn malformed(&self) -> u32 {
        self.malformed
    }

    /// The upstream signalled the end of the stream (e.g. `data: [DONE]`).
    pub fn set_done(&mut self) {
        self.done = true;
    }

    /// Whether the end was signalled, in this call or an earlier one.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The chunks emitted by this call so far.
    pub fn chunks(&self) -> &[String] {
        &self.chunks
    }
}

/// One whole event of a streamed body, as the host framed it (borrowed from
/// the call's [`StreamEvents`](crate::StreamEvents)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamEvent<'a> {
    /// SSE: the `event:` field (empty when absent). NDJSON: empty.
    pub event: &'a str,
    /// SSE: the `data:` lines joined with `\n`. NDJSON: the line.
    pub data: &'a str,
}

impl<'a> StreamEvent<'a> {
    /// An event with SSE `event` field `event` (empty when absent) and `data`.
    pub fn new(event: &'a str, data: &'a str) -> Self {
        StreamEvent { event, data }
    }

    /// An event with only data: an unnamed SSE event or an NDJSON line.
    pub fn data(data: &'a str) -> Self {
        StreamEvent::new("", data)
    }
}

/// The events packed in a `stream-events` (see the WIT): `text` holds each
/// event's name and data back to back, `ends` where each of them ends. Offsets
/// that do not cut the whole of `text` into consecutive pieces on character
/// boundaries are a host bug, reported as an error rather than trusted: an
/// odd count or a last offset short of the text's end before any event is
/// read, the rest as the events are.
pub(crate) fn unpack<'a>(
    text: &'a str,
    ends: &'a [u32],
) -> impl Iterator<Item = Result<StreamEvent<'a>, UpstreamError>> + 'a {
    let whole =
        ends.len().is_multiple_of(2) && ends.last().map_or(0, |&e| e as usize) == text.len();
    let mut start = 0usize;
    let first = (!whole).then(|| {
        Err(bad_events(
            "an odd number of offsets, or text past the last",
        ))
    });
    first
        .into_iter()
        .chain(ends.chunks_exact(2).map(move |pair| {
            let (name_end, data_end) = (pair[0] as usize, pair[1] as usize);
            let (Some(event), Some(data)) =
                (text.get(start..name_end), text.get(name_end..data_end))
            else {
                return Err(bad_events(
                    "offsets out of order or off a character boundary",
                ));
            };
            start = data_end;
            Ok(StreamEvent { event, data })
        }))
}

fn bad_events(why: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorClass::Permanent,
        alloc::format!("malformed stream events from the host: {why}"),
    )
}

/// Writes a parser state: fixed-width little-endian numbers and
/// length-prefixed strings, read back in the same order by [`StateReader`].
#[derive(Debug, Default)]
pub struct StateWriter {
    bytes: Vec<u8>,
}

impl StateWriter {
    /// An empty state, with room for a typical parser's (flags, counters
    /// and an id) so writing it allocates once.
    pub fn new() -> Self {
        StateWriter::with_capacity(64)
    }

    /// An empty state with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        StateWriter {
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// Appends one byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.bytes.push(v);
        self
    }

    /// Appends a flag as one byte.
    pub fn bool(self, v: bool) -> Self {
        self.u8(v as u8)
    }

    /// Appends a `u32`.
    pub fn u32(mut self, v: u32) -> Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a `u64`.
    pub fn u64(mut self, v: u64) -> Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends bytes, prefixed with their length.
    pub fn bytes(self, v: &[u8]) -> Self {
        let mut w = self.u32(v.len().try_into().unwrap_or(u32::MAX));
        w.bytes.extend_from_slice(v);
        w
    }

    /// Appends a string, prefixed with its length.
    pub fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }

    /// The state written.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads a state written by [`StateWriter`]. Every read fails with the
/// stream error a corrupt state deserves, so `?` is all a parser needs.
#[derive(Debug)]
pub struct StateReader<'a> {
    rest: &'a [u8],
}

impl<'a> StateReader<'a> {
    /// Reads `state` from its start.
    pub fn new(state: &'a [u8]) -> Self {
        StateReader { rest: state }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], UpstreamError> {
        if self.rest.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, UpstreamError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a flag; any byte but 0 or 1 is corruption.
    pub fn bool(&mut self) -> Result<bool, UpstreamError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupt("bad flag")),
        }
    }

    /// Reads a `u32`.
    pub fn u32(&mut self) -> Result<u32, UpstreamError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a `u64`.
    pub fn u64(&mut self) -> Result<u64, UpstreamError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// Reads length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], UpstreamError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Reads a length-prefixed string.
    pub fn str(&mut self) -> Result<String, UpstreamError> {
        let b = self.bytes()?;
        core::str::from_utf8(b)
            .map(ToString::to_string)
            .map_err(|_| corrupt("string is not UTF-8"))
    }

    /// Everything not read yet, consuming it.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }

    /// Checks that the whole state was read: leftovers mean the writer and
    /// the reader disagree.
    pub fn finish(self) -> Result<(), UpstreamError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(corrupt("trailing bytes"))
        }
    }
}

/// A state that cannot be read back: a bug or a version skew, not the
/// upstream's fault, so not held against the deployment's health.
fn corrupt(why: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorClass::Permanent,
        alloc::format!("corrupt stream state: {why}"),
    )
}

/// Version of the SDK's envelope around a parser's own state.
const ENVELOPE_FORMAT: u8 = 3;
const FLAG_DONE: u8 = 1;
const FLAG_USAGE: u8 = 2;

/// The SDK's part of a stream state, kept around the parser's bytes.
pub(crate) struct Envelope {
    pub done: bool,
    pub usage: Option<Usage>,
}

impl Envelope {
    /// Splits a state into the SDK's part and the parser's bytes.
    pub fn open(state: &[u8]) -> Result<(Envelope, &[u8]), UpstreamError> {
        let mut r = StateReader::new(state);
        if r.u8()? != ENVELOPE_FORMAT {
            return Err(corrupt("unknown format"));
        }
        let flags = r.u8()?;
        if flags & !(FLAG_DONE | FLAG_USAGE) != 0 {
            return Err(corrupt("unknown flags"));
        }
        let usage = if flags & FLAG_USAGE != 0 {
            Some(Usage {
                prompt_tokens: r.u32()?,
                completion_tokens: r.u32()?,
                cached_prompt_tokens: r.u32()?,
                reasoning_tokens: r.u32()?,
                cache_write_tokens: r.u32()?,
            })
        } else {
            None
        };
        let env = Envelope {
            done: flags & FLAG_DONE != 0,
            usage,
        };
        Ok((env, r.rest()))
    }

    /// The envelope's own bytes: format, flags and usage.
    fn header(&self) -> ([u8; 22], usize) {
        let flags = if self.done { FLAG_DONE } else { 0 }
            | if self.usage.is_some() { FLAG_USAGE } else { 0 };
        let mut h = [0; 22];
        h[0] = ENVELOPE_FORMAT;
        h[1] = flags;
        let Some(u) = self.usage else {
            return (h, 2);
        };
        let counts = [
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_prompt_tokens,
            u.reasoning_tokens,
            u.cache_write_tokens,
        ];
        for (k, n) in counts.into_iter().enumerate() {
            h[2 + 4 * k..6 + 4 * k].copy_from_slice(&n.to_le_bytes());
        }
        (h, 22)
    }

    /// The state the host keeps: this envelope around `parts` (the
    /// stream's target, then the parser's bytes), back to back.
    pub fn seal(&self, parts: &[&[u8]]) -> Result<Vec<u8>, UpstreamError> {
        let (header, n) = self.header();
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut state = Vec::with_capacity(n + len);
        state.extend_from_slice(&header[..n]);
        for part in parts {
            state.extend_from_slice(part);
        }
        if state.len() > MAX_STATE_BYTES {
            // Said here rather than left to the host, so the log names the
            // real cause; retrying cannot shrink it.
            return Err(UpstreamError::new(
                ErrorClass::Permanent,
                alloc::format!(
                    "stream state (the parser's and the target's) is {} bytes, over the {MAX_STATE_BYTES}-byte limit",
                    state.len()
                ),
            ));
        }
        Ok(state)
    }

    /// The step the host receives for `out`, with the state's other parts
    /// (`parts`: the target, then the parser's saved bytes); its state is
    /// `None` when that is `before`, the state the call was given (most
    /// events change no flag, counter or id).
    pub fn step(
        out: StreamOutput,
        parts: &[&[u8]],
        before: &[u8],
    ) -> Result<StreamStep, UpstreamError> {
        let env = Envelope {
            done: out.done,
            usage: out.usage,
        };
        let (header, n) = env.header();
        let same = before.get(..n) == Some(&header[..n]) && {
            let mut rest = &before[n..];
            parts.iter().all(|p| match rest.split_at_checked(p.len()) {
                Some((head, tail)) if head == *p => {
                    rest = tail;
                    true
                }
                _ => false,
            }) && rest.is_empty()
        };
        let state = if same { None } else { Some(env.seal(parts)?) };
        Ok(StreamStep {
            chunks: out.chunks,
            usage: out.usage,
            done: out.done,
            state,
            malformed: out.malformed,
        })
    }

    /// An output that continues from this envelope.
    pub fn output(&self) -> StreamOutput {
        StreamOutput {
            chunks: Vec::new(),
            usage: self.usage,
            done: self.done,
            malformed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip() {
        let bytes = StateWriter::new()
            .bool(true)
            .u8(7)
            .u32(70_000)
            .u64(u64::MAX)
            .str("dé")
            .bytes(&[1, 2])
            .finish();
        let mut r = StateReader::new(&bytes);
        assert!(r.bool().unwrap());
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 70_000);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.str().unwrap(), "dé");
        assert_eq!(r.bytes().unwrap(), &[1, 2]);
        r.finish().unwrap();
    }

    #[test]
    fn corrupt_states_are_errors() {
        let e = StateReader::new(&[1, 0]).u32().unwrap_err();
        assert!(matches!(e.class, ErrorClass::Permanent));
        assert_eq!(e.message, "corrupt stream state: truncated");
        assert!(StateReader::new(&[2]).bool().is_err());
        assert!(StateReader::new(&[5, 0, 0, 0, b'a']).str().is_err());
        assert!(StateReader::new(&[0]).finish().is_err());
        assert!(Envelope::open(&[]).is_err());
        assert!(Envelope::open(&[9, 0]).is_err());
        assert!(Envelope::open(&[ENVELOPE_FORMAT, 4]).is_err());
        assert!(Envelope::open(&[ENVELOPE_FORMAT, FLAG_USAGE, 1]).is_err());
    }

    #[test]
    fn envelope_round_trip_and_limit() {
        let usage = Usage::new(3, 4)
            .with_cached_prompt_tokens(1)
            .with_reasoning_tokens(2);
        let env = Envelope {
            done: true,
            usage: Some(usage),
        };
        let state = env.seal(&[b"xyz"]).unwrap();
        let (back, parser) = Envelope::open(&state).unwrap();
        assert!(back.done);
        assert_eq!(back.usage, Some(usage));
        assert_eq!(parser, b"xyz");

        let env = Envelope {
            done: false,
            usage: None,
        };
        let state = env.seal(&[b""]).unwrap();
        let (back, parser) = Envelope::open(&state).unwrap();
        assert!(!back.done && back.usage.is_none() && parser.is_empty());

        // A step returns the state only when it changed.
        let before = env.seal(&[b"ab"]).unwrap();
        let same = Envelope::step(env.output(), &[b"ab"], &before).unwrap();
        assert_eq!(same.state, None);
        let parser_moved = Envelope::step(env.output(), &[b"ac"], &before).unwrap();
        assert_eq!(parser_moved.state, Some(env.seal(&[b"ac"]).unwrap()));
        let mut used = env.output();
        used.set_usage(usage);
        let counted = Envelope::step(used, &[b"ab"], &before).unwrap();
        let (back, parser) = Envelope::open(counted.state.as_deref().unwrap()).unwrap();
        assert_eq!((back.usage, parser), (Some(usage), &b"ab"[..]));
        let mut ended = env.output();
        ended.set_done();
        let ended = Envelope::step(ended, &[b"ab"], &before).unwrap();
        assert!(
            Envelope::open(ended.state.as_deref().unwrap())
                .unwrap()
                .0
                .done
        );

        let e = env.seal(&[&alloc::vec![0; MAX_STATE_BYTES]]).unwrap_err();
        assert!(
            e.message.contains("over the 65536-byte limit"),
            "{}",
            e.message
        );
    }
}
