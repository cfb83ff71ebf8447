//! Streamed answers: `streamGenerateContent?alt=sse` events in, canonical
//! `chat.completion.chunk`s out.
//!
//! Each event is a whole `GenerateContentResponse` holding the parts that are
//! new since the previous one; a function call arrives whole, in one part.
//! Google sends no end marker (`[DONE]`): the event with a `finishReason`
//! is the last of the answer and the body closes after it, so the stream is
//! complete at [`end`](StreamParser::end) if a finish reason was seen. The
//! parser does not signal the end itself, so any event still following (a
//! late usage report) is read, and the usage chunk, which must carry the
//! final count, is emitted at the end.

use serde::de::IgnoredAny;
use switchyard_sdk::canonical::{ChatChunk, ChunkHead, Delta, StreamAsk, ToolCallDelta};
use switchyard_sdk::errors::excerpt;
use switchyard_sdk::{
    ErrorClass, StateReader, StateWriter, StreamEvent, StreamOutput, StreamParser, Target,
    UpstreamError, created_s,
};

use crate::error;
use crate::response::{arguments, blocked, call_id, completion_id, finish_reason, usage};
use crate::wire::{Response, Text, TextEvent, Usage};

/// Version of [`Stream`]'s saved form: a state saved by another build of the
/// adapter (hot reload mid-stream) is refused rather than misread.
const STATE_FORMAT: u8 = 1;

/// The parser between events: a few flags, a counter and the ids.
#[derive(Debug, Default, PartialEq)]
pub struct Stream {
    /// The answer's id (from the first event); empty before it.
    id: String,
    /// Unix seconds, from the response's `Date`.
    created: u64,
    /// Tool calls emitted so far: the next call's index.
    tool_calls: u32,
    /// The opening chunk (the assistant role) was emitted.
    role_sent: bool,
    /// A finish reason arrived: the answer is complete.
    finished: bool,
    /// The caller asked for the usage chunk (`stream_options.include_usage`)
    /// and it has not been emitted yet.
    usage_chunk: bool,
    /// The chunks' shared head, written at the first chunk of a call (not
    /// saved: it follows from the id, the time and the deployment).
    head: Option<ChunkHead>,
    /// The text of the usage the last event of this call reported through
    /// the one-pass reader (not saved; empty when unknown): the next event's
    /// usage, the same text as a rule, is then not read again.
    usage_text: String,
}

impl Stream {
    fn head(&mut self, target: &Target) -> &ChunkHead {
        self.head
            .get_or_insert_with(|| ChunkHead::new(&self.id, self.created, &target.deployment))
    }
}

impl StreamParser for Stream {
    fn begin(_target: &Target, request: &str, headers: &str) -> Result<Self, UpstreamError> {
        Ok(Stream {
            created: created_s(headers),
            usage_chunk: StreamAsk::read(request).include_usage,
            ..Stream::default()
        })
    }

    fn event(
        &mut self,
        target: &Target,
        event: &StreamEvent,
        out: &mut StreamOutput,
    ) -> Result<(), UpstreamError> {
        let data = event.data.trim();
        if event.event == "error" {
            return Err(named_error(data));
        }
        if data.is_empty() {
            return Ok(());
        }
        // The usual event once the answer has begun, read in one pass.
        if self.role_sent
            && !self.finished
            && let Some(e) = TextEvent::read(data, &self.usage_text)
        {
            // `Known`: the same as the last event's, which `out` holds.
            if let Some(Usage::Read(u, text)) = &e.usage {
                out.set_usage(usage(u));
                self.usage_text.clear();
                self.usage_text.push_str(text);
            }
            let reason = e.finish_reason.as_deref();
            self.text_event(target, e.text.as_ref(), reason, out);
            return Ok(());
        }
        // Usage read here is not remembered as text.
        self.usage_text.clear();
        // A struct also reads from a JSON array (positionally): objects only.
        let parsed = data.starts_with('{').then(|| Response::parse(data));
        let Some(Ok(chunk)) = parsed else {
            out.skip_malformed();
            return Ok(());
        };
        if chunk.error.is_some() {
            return Err(error::in_stream(data));
        }
        if let Some(u) = &chunk.usage_metadata {
            out.set_usage(usage(u));
        }
        let Some(candidate) = chunk.candidates.and_then(|c| c.into_iter().next()) else {
            // Usage alone, or a refused prompt.
            return blocked(chunk.prompt_feedback.as_ref()).map_or(Ok(()), Err);
        };
        if self.finished {
            return Ok(());
        }
        if self.id.is_empty() {
            self.id = completion_id(chunk.response_id.as_deref(), data.as_bytes());
        }
        let parts = candidate.content.and_then(|c| c.parts).unwrap_or_default();
        let mut deltas = Vec::with_capacity(2);
        if !self.role_sent {
            deltas.push(Delta::role());
            self.role_sent = true;
        }
        for part in parts {
            if part.thought == Some(true) {
                continue;
            }
            if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                match deltas.last_mut() {
                    Some(Delta {
                        role: None,
                        content: Some(content),
                        tool_calls: None,
                    }) => content.push_str(&text),
                    _ => deltas.push(Delta::text(text)),
                }
            }
            if let Some(call) = part.function_call {
                let index = self.tool_calls;
                self.tool_calls = index.saturating_add(1);
                let id = call_id(&self.id, 0, index, call.id.as_deref());
                let mut delta = ToolCallDelta::start(index, id, call.name);
                if let Some(function) = delta.function.as_mut() {
                    function.arguments = Some(arguments(call.args));
                }
                match deltas.last_mut() {
                    Some(Delta {
                        role: None,
                        tool_calls: Some(calls),
                        ..
                    }) => calls.push(delta),
                    _ => deltas.push(Delta::tool(delta)),
                }
            }
        }
        let finish = candidate
            .finish_reason
            .as_deref()
            .and_then(|r| finish_reason(r, self.tool_calls > 0));
        if finish.is_some() {
            self.finished = true;
            // The finish reason goes on the last content chunk, or on a
            // chunk of its own (never on the role chunk, as OpenAI does).
            if deltas.last().is_none_or(|d| d.role.is_some()) {
                deltas.push(Delta::default());
            }
        }
        let last = deltas.len().saturating_sub(1);
        let head = self.head(target);
        for (k, delta) in deltas.iter().enumerate() {
            let reason = if k == last { finish } else { None };
            out.push(head.json_of(delta, reason));
        }
        Ok(())
    }

    /// Complete once a finish reason arrived (then the usage chunk follows,
    /// if asked for); anything else was cut short.
    fn end(&mut self, target: &Target, out: &mut StreamOutput) -> Result<(), UpstreamError> {
        if !self.finished {
            return Err(switchyard_sdk::stream::incomplete());
        }
        if let (true, Some(u)) = (self.usage_chunk, out.usage()) {
            let chunk = ChatChunk::usage_only(&*self.id, self.created, &*target.deployment, u);
            out.push(chunk.to_json());
            self.usage_chunk = false;
        }
        Ok(())
    }

    fn save(&self) -> Vec<u8> {
        StateWriter::new()
            .u8(STATE_FORMAT)
            .str(&self.id)
            .u64(self.created)
            .u32(self.tool_calls)
            .bool(self.role_sent)
            .bool(self.finished)
            .bool(self.usage_chunk)
            .finish()
    }

    fn restore(state: &[u8]) -> Result<Self, UpstreamError> {
        let mut r = StateReader::new(state);
        if r.u8()? != STATE_FORMAT {
            return Err(UpstreamError::new(
                ErrorClass::Permanent,
                "corrupt stream state: not a gemini parser state of this version",
            ));
        }
        let stream = Stream {
            id: r.str()?,
            created: r.u64()?,
            tool_calls: r.u32()?,
            role_sent: r.bool()?,
            finished: r.bool()?,
            usage_chunk: r.bool()?,
            head: None,
            usage_text: String::new(),
        };
        r.finish()?;
        Ok(stream)
    }
}

impl Stream {
    /// The usual event after the first: text parts only (thoughts left
    /// out), at most one chunk, written from the borrowed text with no
    /// `Delta` built; what the general path writes for it, byte for byte.
    fn text_event(
        &mut self,
        target: &Target,
        text: Option<&Text>,
        reason: Option<&str>,
        out: &mut StreamOutput,
    ) {
        let finish = reason.and_then(|r| finish_reason(r, self.tool_calls > 0));
        self.finished |= finish.is_some();
        if text.is_none() && finish.is_none() {
            return;
        }
        let head = self.head(target);
        out.push(match text {
            Some(Text::Escaped(key)) => head.escaped_text_json(key.inside(), finish),
            Some(Text::Plain(text)) => head.text_json(Some(text), finish),
            None => head.text_json(None, finish),
        });
    }
}

/// An SSE event named `error` (proxies in front of Google send them).
fn named_error(data: &str) -> UpstreamError {
    match serde_json::from_str::<IgnoredAny>(data) {
        Ok(_) => error::in_stream(data),
        Err(_) => UpstreamError::new(
            ErrorClass::Overloaded,
            format!("upstream stream error: {}", excerpt(data.as_bytes())),
        ),
    }
}

#[cfg(test)]
mod tests;
