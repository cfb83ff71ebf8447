//! Streamed answers: Ollama's NDJSON lines in, canonical chunks out.
//!
//! Every line is a [`Reply`]: `message.content` carries more text,
//! `message.tool_calls` whole tool calls, and the last line `done: true`
//! with the finish reason and the token counts. The host frames the body
//! into lines ([`StreamFraming::Ndjson`](switchyard_sdk::StreamFraming)), so
//! a line here is always whole.

use switchyard_sdk::canonical::{ChatChunk, ChunkHead, Delta, StreamAsk, ToolCallDelta, finish};
use switchyard_sdk::{
    StateReader, StateWriter, StreamEvent, StreamOutput, StreamParser, Target, UpstreamError,
    errors,
};

use crate::wire::{Reply, answer_id, call_id};

/// The parser between two lines. Its state is a few numbers: the answer's
/// id and time must stay the same on every chunk, and tool calls are
/// numbered across lines. The end of the stream and the usage are kept by
/// the SDK.
#[derive(Debug, PartialEq)]
pub struct Stream {
    /// Makes the answer's id and the ids of unnamed tool calls.
    seed: u64,
    /// `answer_id(seed)`, made once per call rather than once per chunk.
    id: String,
    /// Unix seconds: the first line's `created_at`, else the `Date` header.
    created: u64,
    /// The first chunk (the role) was sent.
    started: bool,
    /// Tool calls sent so far: the next one's index.
    calls: u32,
    /// The caller asked for the usage-only last chunk
    /// (`stream_options.include_usage`). Others never get it: some clients
    /// index `choices[0]` of every chunk.
    forward_usage_chunk: bool,
    /// The chunks' shared head, written at the first chunk of a call (not
    /// saved: it follows from the id, the time and the model).
    head: Option<ChunkHead>,
}

impl Stream {
    fn new(seed: u64, created: u64, forward_usage_chunk: bool) -> Self {
        Stream {
            seed,
            id: answer_id(seed),
            created,
            started: false,
            calls: 0,
            forward_usage_chunk,
            head: None,
        }
    }

    fn head(&mut self, model: &str) -> &ChunkHead {
        self.head
            .get_or_insert_with(|| ChunkHead::new(&self.id, self.created, model))
    }

    fn chunk(&mut self, model: &str, delta: Delta, finish: Option<&str>) -> String {
        self.head(model).json_of(&delta, finish)
    }

    /// A chunk of text and/or the finish reason: the JSON [`chunk`](Self::chunk)
    /// writes, from borrowed parts. Most lines are text, and copying the id,
    /// model and text into owned values first would cost as much as parsing
    /// the line.
    fn text_chunk(&mut self, model: &str, text: Option<&str>, finish: Option<&str>) -> String {
        self.head(model).text_json(text, finish)
    }

    /// One line that is a chat reply (not an error).
    fn reply(&mut self, model: &str, reply: &Reply, out: &mut StreamOutput) {
        if !self.started {
            self.started = true;
            self.created = reply.created().unwrap_or(self.created);
            self.head = None;
            out.push(self.chunk(model, Delta::role(), None));
        }
        let text = reply.message.as_ref().map_or("", |m| m.text());
        let text = (!text.is_empty()).then_some(text);
        let calls = reply.message.as_ref().map_or(&[][..], |m| m.calls());
        if calls.is_empty() {
            let finish = reply.is_done().then(|| reply.finish_reason(self.calls > 0));
            if text.is_some() || finish.is_some() {
                out.push(self.text_chunk(model, text, finish));
            }
        } else {
            let calls = calls.iter().map(|c| {
                let n = self.calls;
                self.calls = self.calls.saturating_add(1);
                let call = c.to_canonical(|| call_id(self.seed, n));
                // Ollama sends calls whole: one delta carries all of it.
                let mut d = ToolCallDelta::start(n, call.id, call.function.name);
                if let Some(f) = d.function.as_mut() {
                    f.arguments = Some(call.function.arguments);
                }
                d
            });
            let delta = Delta {
                content: text.map(str::to_owned),
                tool_calls: Some(calls.collect()),
                ..Delta::default()
            };
            let finish = reply.is_done().then_some(finish::TOOL_CALLS);
            out.push(self.chunk(model, delta, finish));
        }
        if reply.is_done() {
            if let Some(usage) = reply.usage() {
                out.set_usage(usage);
                if self.forward_usage_chunk {
                    let chunk = ChatChunk::usage_only(self.id.as_str(), self.created, model, usage);
                    out.push(chunk.to_json());
                }
            }
            out.set_done();
        }
    }
}

impl StreamParser for Stream {
    fn begin(_target: &Target, request: &str, headers: &str) -> Result<Self, UpstreamError> {
        Ok(Stream::new(
            crate::fresh_seed(),
            switchyard_sdk::created_s(headers),
            StreamAsk::read(request).include_usage,
        ))
    }

    /// Blank lines are skipped; a line that is not a reply is counted as
    /// malformed (the host decides when there are too many); an
    /// `{"error": ...}` line ends the stream with the upstream's error.
    fn event(
        &mut self,
        target: &Target,
        event: &StreamEvent,
        out: &mut StreamOutput,
    ) -> Result<(), UpstreamError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let reply = match Reply::parse(data) {
            Some(r) if r.is_error() => {
                return Err(match serde_json::from_str(data) {
                    Ok(v) => errors::classify_stream_error(&v),
                    Err(_) => errors::unusable("upstream stream error", data.as_bytes()),
                });
            }
            Some(r) if r.message.is_some() || r.is_done() => r,
            _ => {
                out.skip_malformed();
                return Ok(());
            }
        };
        self.reply(&target.deployment, &reply, out);
        Ok(())
    }

    // `end`: the SDK's default, complete only once `done: true` was seen.

    fn save(&self) -> Vec<u8> {
        StateWriter::new()
            .u64(self.seed)
            .u64(self.created)
            .bool(self.started)
            .u32(self.calls)
            .bool(self.forward_usage_chunk)
            .finish()
    }

    fn restore(state: &[u8]) -> Result<Self, UpstreamError> {
        let mut r = StateReader::new(state);
        let (seed, created) = (r.u64()?, r.u64()?);
        let mut stream = Stream::new(seed, created, false);
        stream.started = r.bool()?;
        stream.calls = r.u32()?;
        stream.forward_usage_chunk = r.bool()?;
        r.finish()?;
        Ok(stream)
    }
}

#[cfg(test)]
mod tests;
