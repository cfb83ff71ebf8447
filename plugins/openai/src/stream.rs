//! Streams: each server-sent event read in one pass where it is an ordinary
//! chunk, the deployment's name spliced in, usage always asked for and
//! forwarded only to callers that asked.

use crate::answer::{overloaded, usage_in, usage_of, with_model};
use serde_json::Value;
use switchyard_sdk::canonical::StreamAsk;
use switchyard_sdk::canonical::read::Reader;
use switchyard_sdk::errors as classify;
use switchyard_sdk::{
    StateReader, StateWriter, StreamEvent, StreamOutput, StreamParser, Target, UpstreamError, Usage,
};

/// What a chunk's `choices` tell the parser.
#[derive(Default)]
pub(crate) struct Choices {
    /// `choices` was an empty array.
    empty: bool,
    /// A choice has a non-null `finish_reason`.
    pub(crate) finished: bool,
}

/// Reads a chunk's `choices` in the same pass as the rest of the chunk
/// (every streamed token goes through here). Anything but an array is
/// ignored, as if absent; `None` for an array with a member that is not an
/// object, or a choice with two `finish_reason`s (the general path decides).
pub(crate) fn choices_in(r: &mut Reader) -> Option<Choices> {
    if r.next_byte() != Some(b'[') {
        r.value().ok()?;
        return Some(Choices::default());
    }
    r.array().ok()?;
    let mut seen = Choices {
        empty: true,
        finished: false,
    };
    while r.element().ok()? {
        seen.empty = false;
        if r.next_byte() != Some(b'{') {
            return None;
        }
        r.object().ok()?;
        let mut finish = None;
        while let Some(key) = r.key().ok()? {
            let value = r.value().ok()?;
            if key.name()? == "finish_reason" && finish.replace(value != "null").is_some() {
                return None;
            }
        }
        seen.finished |= finish == Some(true);
    }
    Some(seen)
}

/// One ordinary stream chunk, read without rebuilding it.
pub(crate) struct Chunk {
    pub(crate) text: String,
    pub(crate) usage: Option<Usage>,
    pub(crate) finished: bool,
    pub(crate) usage_only: bool,
}

/// The common case of a stream event, as [`Stream::event`]'s general path
/// reads it, in one pass and with the deployment's name spliced in. `None`
/// for anything else (an error member, a duplicate member, a choice that is
/// not an object, not an object at all): the general path decides.
pub(crate) fn chunk_in_place(deployment: &str, data: &str) -> Option<Chunk> {
    if !data.starts_with('{') {
        return None;
    }
    let mut r = Reader::new(data);
    r.object().ok()?;
    let (mut model, mut usage, mut error) = (None, None, None);
    let mut choices: Option<Choices> = None;
    while let Some(key) = r.key().ok()? {
        let name = key.name()?;
        let again = match &*name {
            "choices" => {
                let c = choices_in(&mut r)?;
                choices.replace(c).is_some()
            }
            "model" => model.replace(r.value().ok()?).is_some(),
            "usage" => usage.replace(r.value().ok()?).is_some(),
            "error" => error.replace(r.value().ok()?).is_some(),
            _ => {
                r.value().ok()?;
                false
            }
        };
        // A duplicate member: the general path decides.
        if again {
            return None;
        }
    }
    // Text after the object; a line break (multi-line `data:`, read with
    // the trailing whitespace too), which would end the event sent on: such
    // a chunk is rewritten compact by the general path. Text the general
    // path may refuse as a `Value` (a lone surrogate escape, a number
    // beyond `f64`) is left to it, so the two never disagree.
    if r.next_byte().is_some() || r.saw_line_break() || r.saw_odd() {
        return None;
    }
    if error.is_some_and(|e| e != "null") {
        return None;
    }
    let choices = choices.unwrap_or_default();
    let usage = usage.filter(|u| *u != "null");
    Some(Chunk {
        text: with_model(data, model, deployment)?,
        usage_only: choices.empty && usage.is_some(),
        usage: usage.and_then(usage_in),
        finished: choices.finished,
    })
}

/// Any stream chunk: parsed whole and written back compact (so it is one
/// line, whatever the upstream's layout); `None` when it is not a JSON
/// object (skipped as malformed), the upstream's error when it is one.
pub(crate) fn chunk_general(deployment: &str, data: &str) -> Result<Option<Chunk>, UpstreamError> {
    let Ok(mut v) = serde_json::from_str::<Value>(data) else {
        return Ok(None);
    };
    let Some(obj) = v.as_object_mut() else {
        return Ok(None);
    };
    if obj.get("error").is_some_and(|e| !e.is_null()) {
        return Err(classify::classify_stream_error(&v));
    }
    obj.insert("model".into(), Value::String(deployment.to_owned()));
    let choices = obj.get("choices").and_then(Value::as_array);
    let finish = |c: &Value| c.get("finish_reason").is_some_and(|f| !f.is_null());
    Ok(Some(Chunk {
        usage: usage_of(obj.get("usage")),
        finished: choices.is_some_and(|cs| cs.iter().any(finish)),
        usage_only: choices.is_some_and(Vec::is_empty)
            && obj.get("usage").is_some_and(|u| !u.is_null()),
        text: v.to_string(),
    }))
}

/// Parses one streamed chat completion, one server-sent event at a time (the
/// host does the framing). Between events it is two flags; the deployment
/// name comes with every call, and the end of the stream and the last usage
/// are kept by the SDK.
#[derive(Debug, PartialEq)]
pub struct Stream {
    /// Some choice carried a non-null `finish_reason`.
    pub(crate) finished: bool,
    /// Whether the caller itself asked for the usage chunk. The adapter always
    /// asks the upstream for usage (the gateway accounts tokens), but forwards
    /// the usage-only chunk (empty `choices`) only to callers that asked: some
    /// clients index `choices[0]` of every chunk.
    pub(crate) forward_usage_chunk: bool,
}

impl StreamParser for Stream {
    fn begin(_target: &Target, request: &str, _headers: &str) -> Result<Self, UpstreamError> {
        Ok(Stream {
            finished: false,
            forward_usage_chunk: StreamAsk::read(request).include_usage,
        })
    }

    fn event(
        &mut self,
        target: &Target,
        event: &StreamEvent,
        out: &mut StreamOutput,
    ) -> Result<(), UpstreamError> {
        let data = event.data.trim();
        // Some compatible servers name their error events; the data says what failed.
        if event.event == "error" {
            return Err(match serde_json::from_str::<Value>(data) {
                Ok(v) => classify::classify_stream_error(&v),
                Err(_) => overloaded(format!(
                    "upstream stream error: {}",
                    data.chars().take(200).collect::<String>()
                )),
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            out.set_done();
            return Ok(());
        }
        let chunk = match chunk_in_place(&target.deployment, data) {
            Some(chunk) => chunk,
            None => match chunk_general(&target.deployment, data)? {
                Some(chunk) => chunk,
                None => {
                    out.skip_malformed();
                    return Ok(());
                }
            },
        };
        if let Some(u) = chunk.usage {
            out.set_usage(u);
        }
        self.finished |= chunk.finished;
        if !chunk.usage_only || self.forward_usage_chunk {
            out.push(chunk.text);
        }
        Ok(())
    }

    /// A stream is complete with `[DONE]`, or with a `finish_reason` (some
    /// servers omit `[DONE]`); anything else was cut short.
    fn end(&mut self, _target: &Target, out: &mut StreamOutput) -> Result<(), UpstreamError> {
        if out.is_done() || self.finished {
            Ok(())
        } else {
            Err(switchyard_sdk::stream::incomplete())
        }
    }

    fn save(&self) -> Vec<u8> {
        StateWriter::new()
            .bool(self.finished)
            .bool(self.forward_usage_chunk)
            .finish()
    }

    fn restore(state: &[u8]) -> Result<Self, UpstreamError> {
        let mut r = StateReader::new(state);
        let stream = Stream {
            finished: r.bool()?,
            forward_usage_chunk: r.bool()?,
        };
        r.finish()?;
        Ok(stream)
    }
}
