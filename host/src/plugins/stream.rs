//! Parsing one upstream stream with an adapter.
//!
//! v0.2 adapters hold no instance between chunks: the host frames the body
//! (SSE events or NDJSON lines, [`Framer`]) and calls `parse-stream` with the
//! whole events that arrived and the stream's opaque state (the last one a
//! call returned: a step returns none when it did not change), on any pooled
//! instance. So the number of concurrent streams is bounded by
//! memory and sockets, not by plugin instances.
//!
//! v0.1 adapters keep their parser in a resource inside one instance, which
//! stays pinned to the stream until it ends (at most ¾ of `max_instances`).

use std::sync::Arc;

use wasmtime::component::ResourceAny;

use super::call::call;
use super::host_api::CallDeadline;
use super::pool::{Reserved, Slot};
use super::{Plugin, PluginError};
use crate::domain::{
    HeaderBlock, Kind, QuotaHint, StreamBatch, StreamEvents, StreamFraming, Target, UpstreamError,
};

/// Largest parser state a v0.2 adapter may hand back.
pub const MAX_STATE: usize = 64 << 10;
/// Longest SSE line or NDJSON line the framer buffers.
pub const MAX_LINE: usize = 8 << 20;

type Parsed<T> = Result<Result<T, UpstreamError>, PluginError>;

/// One upstream stream being parsed by an adapter.
pub struct StreamSession {
    plugin: Arc<Plugin>,
    request_id: Arc<str>,
    inner: Inner,
}

enum Inner {
    Framed {
        framer: Framer,
        state: Vec<u8>,
    },
    Pinned {
        /// `None` once the instance failed.
        slot: Option<Slot>,
        parser: ResourceAny,
    },
}

call!(BeginStream { target: Arc<Target>, request: Arc<str>, headers: HeaderBlock }
    -> Result<(Vec<u8>, Option<QuotaHint>), UpstreamError> =
    |s, store, exports| exports.begin_stream(store, &s.target, &s.request, &s.headers).await);
call!(StreamStep {
    state: Vec<u8>,
    /// `None`: the body ended.
    events: Option<StreamEvents>,
} -> Result<(StreamBatch, Vec<u8>), UpstreamError> =
    |s, store, exports| {
        let step = exports.stream_step(store, &s.state, s.events.as_ref()).await?;
        // An unchanged state comes back as `None`: the one given is kept.
        Ok(step.map(|r| r.map(|(batch, next)| (batch, next.unwrap_or(s.state)))))
    });
call!(OpenParser { target: Arc<Target>, request: Arc<str> } -> ResourceAny =
    |s, store, exports| exports.open_parser(store, &s.target, &s.request).await);
call!(FeedParser { parser: ResourceAny, bytes: Option<Vec<u8>> } -> Result<StreamBatch, UpstreamError> =
    |s, store, exports| exports.feed_parser(store, s.parser, s.bytes.as_deref()).await);

impl Plugin {
    /// Adapter: starts parsing a 2xx streamed response. v0.2: asks the
    /// adapter for its initial state (and the quota the headers carry);
    /// v0.1: creates the parser in an instance pinned to this stream.
    pub async fn open_stream(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        target: &Arc<Target>,
        request: &Arc<str>,
        headers: HeaderBlock,
    ) -> Parsed<(StreamSession, Option<QuotaHint>)> {
        if self.kind != Kind::Adapter {
            return Err(PluginError::WrongKind {
                plugin: self.id.to_string(),
                expected: Some(Kind::Adapter),
                actual: self.kind,
            });
        }
        let session = |inner| StreamSession {
            plugin: self.clone(),
            request_id: request_id.clone(),
            inner,
        };
        if self.metadata().framing != StreamFraming::Raw {
            let begin = BeginStream {
                target: target.clone(),
                request: request.clone(),
                headers,
            };
            let started = match self.call(request_id, begin).await? {
                Ok(started) => started,
                Err(e) => return Ok(Err(e)),
            };
            let (state, quota) = started;
            self.check_state(&state)?;
            return Ok(Ok((
                session(Inner::Framed {
                    framer: Framer::new(self.metadata().framing),
                    state,
                }),
                quota,
            )));
        }
        // v0.1: a pinned instance.
        let admission = self.pool.begin_pinned()?;
        let reserved = self.pool.reserve()?;
        let budget = self.budget(self.deadline).on(&reserved);
        let plugin = self.clone();
        let rid = request_id.clone();
        let call = OpenParser {
            target: target.clone(),
            request: request.clone(),
        };
        let work = move |deadline: CallDeadline| async move {
            let _running = plugin.ticker.enter();
            let slot = match reserved {
                Reserved::Idle(slot) => slot,
                Reserved::New(place) => plugin.pool.instantiate(place, &deadline).await?,
            };
            let (slot, parser) = plugin.run_on(slot, &rid, deadline, call).await;
            Ok((slot, parser?))
        };
        let (slot, parser) = self.drive(work, budget).await?;
        admission.keep();
        Ok(Ok((session(Inner::Pinned { slot, parser }), None)))
    }

    fn check_state(&self, state: &[u8]) -> Result<(), PluginError> {
        if state.len() > MAX_STATE {
            return Err(PluginError::BadOutput {
                plugin: self.id.to_string(),
                message: format!(
                    "stream state of {} bytes exceeds the {MAX_STATE}-byte limit",
                    state.len()
                ),
            });
        }
        Ok(())
    }
}

impl StreamSession {
    /// Bytes of the upstream body, split anywhere.
    pub async fn feed(&mut self, bytes: &[u8]) -> Parsed<StreamBatch> {
        match &mut self.inner {
            Inner::Framed { framer, .. } => {
                let events = match framer.push(bytes) {
                    Ok(events) => events,
                    Err(message) => return Ok(Err(framing_error(message))),
                };
                if events.is_empty() {
                    return Ok(Ok(StreamBatch::default()));
                }
                self.step(Some(events)).await
            }
            Inner::Pinned { .. } => self.pinned(Some(bytes.to_vec())).await,
        }
    }

    /// The upstream closed the body.
    pub async fn finish(&mut self) -> Parsed<StreamBatch> {
        match &mut self.inner {
            Inner::Framed { framer, .. } => {
                let rest = framer.finish();
                if !rest.is_empty() {
                    match self.step(Some(rest)).await {
                        Ok(Ok(batch)) if batch.done => return Ok(Ok(batch)),
                        Ok(Ok(batch)) => {
                            let mut end = self.step(None).await;
                            if let Ok(Ok(last)) = &mut end {
                                let mut chunks = batch.chunks;
                                chunks.append(&mut last.chunks);
                                last.chunks = chunks;
                                last.usage = last.usage.or(batch.usage);
                                last.malformed += batch.malformed;
                            }
                            return end;
                        }
                        other => return other,
                    }
                }
                self.step(None).await
            }
            Inner::Pinned { .. } => self.pinned(None).await,
        }
    }

    async fn step(&mut self, events: Option<StreamEvents>) -> Parsed<StreamBatch> {
        let Inner::Framed { state, .. } = &mut self.inner else {
            unreachable!("framed sessions only")
        };
        let call = StreamStep {
            state: std::mem::take(state),
            events,
        };
        match self.plugin.call(&self.request_id, call).await? {
            Ok((mut batch, next)) => {
                self.plugin.check_state(&next)?;
                super::chunks::check(&self.plugin.id, &mut batch.chunks)?;
                *state = next;
                Ok(Ok(batch))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    async fn pinned(&mut self, bytes: Option<Vec<u8>>) -> Parsed<StreamBatch> {
        let Inner::Pinned { slot, parser } = &mut self.inner else {
            unreachable!("pinned sessions only")
        };
        let plugin = self.plugin.clone();
        let Some(taken) = slot.take() else {
            return Err(PluginError::Trap {
                plugin: plugin.id.to_string(),
                message: "the stream parser's instance failed earlier".into(),
            });
        };
        let budget = plugin.budget(plugin.deadline);
        let rid = self.request_id.clone();
        let call = FeedParser {
            parser: *parser,
            bytes,
        };
        let runner = plugin.clone();
        let work = move |deadline: CallDeadline| async move {
            let _running = runner.ticker.enter();
            Ok(runner.run_on(taken, &rid, deadline, call).await)
        };
        let (back, result) = plugin.drive(work, budget).await?;
        *slot = back;
        let mut result = result;
        if let Ok(Ok(batch)) = &mut result {
            super::chunks::check(&plugin.id, &mut batch.chunks)?;
        }
        result
    }
}

impl Drop for StreamSession {
    /// A v0.1 stream's instance is dropped with its parser (cheaper than
    /// calling into the guest to free it) and its admission released.
    fn drop(&mut self) {
        if let Inner::Pinned { .. } = self.inner {
            self.plugin.pool.end_pinned();
        }
    }
}

fn framing_error(message: String) -> UpstreamError {
    UpstreamError {
        class: crate::domain::ErrorClass::Overloaded,
        message,
        quota: None,
    }
}

/// Splits a streamed body into events: SSE per the HTML standard's
/// event-stream rules (fields `data` and `event`, comments and other fields
/// ignored, any line ending), or NDJSON lines.
pub struct Framer {
    framing: StreamFraming,
    /// Bytes of the line in progress.
    line: Vec<u8>,
    /// The previous byte was `\r` (a following `\n` belongs to it).
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl Framer {
    pub fn new(framing: StreamFraming) -> Self {
        Self {
            framing,
            line: Vec::new(),
            after_cr: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
        }
    }

    /// The events completed by `bytes`. A line that arrives whole (the
    /// usual case: upstreams flush whole events) is read where it lies;
    /// only a line cut between two reads is copied into `line`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<StreamEvents, String> {
        let mut events = StreamEvents::default();
        let mut rest = bytes;
        // A `\r` ended the last push: a `\n` opening this one belongs to it
        // (an empty push says nothing either way).
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        // The read is checked as UTF-8 once; its whole lines are then
        // borrowed as text without a check each (a line cut between reads,
        // or one with invalid bytes, is checked on its own).
        let valid = valid_prefix(rest);
        let mut at = 0;
        while let Some(n) = memchr::memchr2(b'\n', b'\r', &rest[at..]) {
            let end = at + n;
            if self.line.is_empty() {
                match valid.get(at..end) {
                    Some(text) => self.text_line(text, &mut events),
                    None => self.line_done(&rest[at..end], &mut events),
                }
            } else {
                self.line.extend_from_slice(&rest[at..end]);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, &mut events);
                self.line = line;
                self.line.clear();
            }
            let cr = rest[end] == b'\r';
            at = end + 1;
            if cr {
                match rest.get(at) {
                    Some(b'\n') => at += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        let rest = &rest[at..];
        if self.line.len() + rest.len() > MAX_LINE {
            return Err(format!("upstream stream line longer than {MAX_LINE} bytes"));
        }
        self.line.extend_from_slice(rest);
        Ok(events)
    }

    /// The body ended: a last line without its ending, and an SSE event
    /// without its blank line, are still delivered (the adapter's
    /// `end-stream` decides whether the stream was complete).
    pub fn finish(&mut self) -> StreamEvents {
        let mut events = StreamEvents::default();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut events);
        }
        if self.framing == StreamFraming::Sse {
            self.dispatch(&mut events);
        }
        events
    }

    fn line_done(&mut self, line: &[u8], events: &mut StreamEvents) {
        // Valid UTF-8 (the norm) is checked by the fast path and borrowed;
        // anything else is repaired with replacement characters.
        let text = match std::str::from_utf8(line) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(line),
        };
        self.text_line(&text, events);
    }

    /// One line, as text (without its ending).
    fn text_line(&mut self, text: &str, events: &mut StreamEvents) {
        match self.framing {
            StreamFraming::Ndjson | StreamFraming::Raw => {
                if !text.trim().is_empty() {
                    events.push("", text);
                }
            }
            StreamFraming::Sse => {
                if text.is_empty() {
                    self.dispatch(events);
                    return;
                }
                if text.starts_with(':') {
                    return;
                }
                let (field, value) = match text.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (text, ""),
                };
                match field {
                    "data" => {
                        if self.has_data {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                        self.has_data = true;
                    }
                    "event" => {
                        self.event.clear();
                        self.event.push_str(value);
                    }
                    _ => {}
                }
            }
        }
    }

    fn dispatch(&mut self, events: &mut StreamEvents) {
        if self.has_data {
            events.push(&self.event, &self.data);
        }
        // Cleared, not taken: the buffers serve the next event.
        self.event.clear();
        self.data.clear();
        self.has_data = false;
    }
}

/// The longest prefix of `bytes` that is UTF-8, as text: the whole of it
/// but for a character cut at the end of a read or invalid bytes.
fn valid_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each event's name and data, owned.
    fn owned(events: &StreamEvents) -> Vec<(String, String)> {
        events
            .iter()
            .map(|(e, d)| (e.to_owned(), d.to_owned()))
            .collect()
    }

    fn sse(parts: &[&[u8]]) -> Vec<(String, String)> {
        let mut f = Framer::new(StreamFraming::Sse);
        let mut out = Vec::new();
        for p in parts {
            out.extend(owned(&f.push(p).unwrap()));
        }
        out.extend(owned(&f.finish()));
        out
    }

    #[test]
    fn packed_events_read_back_as_pushed() {
        let mut events = StreamEvents::default();
        assert!(events.is_empty());
        events.push("message", "{\"a\":1}");
        events.push("", "ç\nx");
        events.push("", "");
        assert_eq!(events.len(), 3);
        assert_eq!(events.text, "message{\"a\":1}ç\nx");
        assert_eq!(events.ends, [7, 14, 14, 18, 18, 18]);
        let back: Vec<(&str, &str)> = events.iter().collect();
        assert_eq!(back, [("message", "{\"a\":1}"), ("", "ç\nx"), ("", "")]);
    }

    #[test]
    fn sse_events_survive_any_split_and_line_ending() {
        let body = b"event: message\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: x\ndata: y\n\ndata: [DONE]\r\r";
        let whole = sse(&[body]);
        assert_eq!(
            whole,
            vec![
                ("message".to_owned(), "{\"a\":1}".to_owned()),
                ("".to_owned(), "x\ny".to_owned()),
                ("".to_owned(), "[DONE]".to_owned()),
            ]
        );
        for split in 1..body.len() {
            assert_eq!(
                sse(&[&body[..split], &body[split..]]),
                whole,
                "split at {split}"
            );
            // An empty read in between changes nothing (a `\r` at the end
            // of the first piece still pairs with a `\n` after it).
            assert_eq!(
                sse(&[&body[..split], b"", &body[split..]]),
                whole,
                "split at {split} around an empty read"
            );
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(sse(&bytes), whole);
    }

    #[test]
    fn sse_without_final_blank_line_is_still_delivered() {
        assert_eq!(
            sse(&[b"data: last"]),
            vec![("".to_owned(), "last".to_owned())]
        );
        assert!(
            sse(&[b"event: ping\n\n"]).is_empty(),
            "an event without data is not dispatched"
        );
    }

    #[test]
    fn invalid_utf8_is_repaired_whole_or_split() {
        // The lines after an invalid one, in the same read, are read too.
        let body: &[u8] = b"data: a\xffb\xe2\x9c\x93\n\ndata: \xe2\x9c\x93 ok\n\n";
        let want = vec![
            ("".to_owned(), "a\u{FFFD}b\u{2713}".to_owned()),
            ("".to_owned(), "\u{2713} ok".to_owned()),
        ];
        assert_eq!(sse(&[body]), want);
        for split in 1..body.len() {
            assert_eq!(
                sse(&[&body[..split], &body[split..]]),
                want,
                "split at {split}"
            );
        }
    }

    #[test]
    fn ndjson_lines_are_events() {
        let mut f = Framer::new(StreamFraming::Ndjson);
        let mut out = owned(&f.push(b"{\"a\":1}\n\n{\"b\"").unwrap());
        out.extend(owned(&f.push(b":2}\r\n{\"c\":3}").unwrap()));
        out.extend(owned(&f.finish()));
        assert!(out.iter().all(|(e, _)| e.is_empty()));
        let data: Vec<&str> = out.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(data, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut f = Framer::new(StreamFraming::Sse);
        let chunk = vec![b'x'; 1 << 20];
        let mut failed = false;
        for _ in 0..10 {
            if f.push(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
