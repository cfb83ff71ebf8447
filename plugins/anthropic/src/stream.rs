//! Anthropic's streamed message → canonical chunks.
//!
//! Anthropic streams typed events: `message_start` (id, prompt usage),
//! then per content block `content_block_start`, `content_block_delta`s
//! (`text_delta`, `input_json_delta`, `thinking_delta`) and
//! `content_block_stop`, then `message_delta` (stop reason, output usage)
//! and `message_stop`; `ping`s anywhere, and an `error` event when the
//! upstream fails mid-answer. The event's own `type` member is read rather
//! than the SSE `event:` line, which some proxies drop.
//!
//! Blocks come one at a time, so the state is the open block's kind and the
//! tool-call counter, plus what every chunk repeats (id, created).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use switchyard_sdk::canonical::{ChatChunk, ChunkHead, Delta, StreamAsk, ToolCallDelta, finish};
use switchyard_sdk::{
    ErrorClass, StateReader, StateWriter, StreamEvent, StreamOutput, StreamParser, Target,
    UpstreamError, errors,
};

use crate::request::JSON_TOOL;
use crate::response::{WireUsage, finish_reason};

/// What the open content block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Open {
    /// No block, a text block, or one the answer does not show (thinking).
    Other = 0,
    /// A call of one of the caller's tools.
    Tool = 1,
    /// The JSON answer's tool: its input is the answer's text.
    Json = 2,
}

#[derive(Debug, PartialEq)]
pub struct Stream {
    id: String,
    created: u64,
    /// The caller asked for a JSON answer (see [`JSON_TOOL`]).
    json: bool,
    /// The caller asked for the usage chunk.
    wants_usage: bool,
    open: Open,
    /// Tool calls begun so far; the open one is `tools - 1`.
    tools: u32,
    /// The finish reason was sent.
    finished: bool,
    /// The open tool call has had argument text.
    args: bool,
    /// The chunks' shared head, written at the first chunk of a call (not
    /// saved: it follows from the id, the time and the deployment).
    head: Option<ChunkHead>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    message: Option<crate::response::MessageBody<'a>>,
    #[serde(borrow, default)]
    content_block: Option<StartBlock<'a>>,
    #[serde(borrow, default)]
    delta: Option<EventDelta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct StartBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(borrow, default, deserialize_with = "switchyard_sdk::canonical::text")]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct EventDelta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "switchyard_sdk::canonical::text")]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "switchyard_sdk::canonical::text")]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "switchyard_sdk::canonical::text")]
    stop_sequence: Option<Cow<'a, str>>,
}

impl Stream {
    fn head(&mut self, target: &Target) -> &ChunkHead {
        self.head
            .get_or_insert_with(|| ChunkHead::new(&self.id, self.created, &target.deployment))
    }

    fn chunk(&mut self, target: &Target, delta: Delta, finish: Option<&str>) -> String {
        self.head(target).json_of(&delta, finish)
    }

    /// A chunk of text alone (most of a stream), written from the borrowed text.
    fn text(&mut self, target: &Target, text: &str) -> String {
        self.head(target).text_json(Some(text), None)
    }
}

impl StreamParser for Stream {
    fn begin(_target: &Target, request: &str, headers: &str) -> Result<Self, UpstreamError> {
        let ask = StreamAsk::read(request);
        Ok(Stream {
            id: String::new(),
            created: switchyard_sdk::created_s(headers),
            json: ask.json,
            wants_usage: ask.include_usage,
            open: Open::Other,
            tools: 0,
            finished: false,
            args: false,
            head: None,
        })
    }

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
        let Ok(ev) = serde_json::from_str::<Event>(data) else {
            if event.event == "error" {
                return Err(UpstreamError::new(
                    ErrorClass::Overloaded,
                    format!(
                        "upstream stream error: {}",
                        errors::excerpt(data.as_bytes())
                    ),
                ));
            }
            out.skip_malformed();
            return Ok(());
        };
        match ev.kind {
            "message_start" => {
                let Some(msg) = ev.message else {
                    out.skip_malformed();
                    return Ok(());
                };
                self.id = msg.id;
                self.head = None;
                if let Some(u) = msg.usage {
                    out.set_usage(u.to_usage());
                }
                out.push(self.chunk(target, Delta::role(), None));
            }
            "content_block_start" => {
                let Some(block) = ev.content_block else {
                    out.skip_malformed();
                    return Ok(());
                };
                self.open = Open::Other;
                match block.kind {
                    "tool_use" if block.name.as_deref() == Some(JSON_TOOL) && self.json => {
                        self.open = Open::Json;
                    }
                    "tool_use" => {
                        self.open = Open::Tool;
                        self.args = false;
                        let index = self.tools;
                        self.tools += 1;
                        let start = ToolCallDelta::start(
                            index,
                            block.id.unwrap_or_default(),
                            block.name.unwrap_or_default(),
                        );
                        out.push(self.chunk(target, Delta::tool(start), None));
                    }
                    "text" => {
                        if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                            out.push(self.text(target, &text));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = ev.delta else {
                    out.skip_malformed();
                    return Ok(());
                };
                match (delta.kind, self.open) {
                    (Some("text_delta"), _) => {
                        let text = delta.text.unwrap_or_default();
                        out.push(self.text(target, &text));
                    }
                    (Some("input_json_delta"), Open::Tool) => {
                        let text = delta.partial_json.unwrap_or_default();
                        if text.is_empty() {
                            return Ok(());
                        }
                        self.args = true;
                        let args = ToolCallDelta::arguments(self.tools - 1, text.into_owned());
                        out.push(self.chunk(target, Delta::tool(args), None));
                    }
                    (Some("input_json_delta"), Open::Json) => {
                        let text = delta.partial_json.unwrap_or_default();
                        if !text.is_empty() {
                            out.push(self.text(target, &text));
                        }
                    }
                    // thinking and signature deltas are not part of the answer.
                    _ => {}
                }
            }
            "content_block_stop" => {
                // A call without input streams no argument text: its
                // arguments are `{}`, as in a whole answer, never "".
                if self.open == Open::Tool && !self.args {
                    let args = ToolCallDelta::arguments(self.tools - 1, "{}");
                    out.push(self.chunk(target, Delta::tool(args), None));
                }
                self.open = Open::Other;
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    let mut usage = out.usage().unwrap_or_else(|| u.to_usage());
                    if u.input_tokens.is_some() {
                        let whole = u.to_usage();
                        usage.prompt_tokens = whole.prompt_tokens;
                        usage.cached_prompt_tokens = whole.cached_prompt_tokens;
                        usage.cache_write_tokens = whole.cache_write_tokens;
                    }
                    if let Some(n) = u.output_tokens {
                        usage.completion_tokens = n;
                    }
                    out.set_usage(usage);
                }
                let delta = ev.delta.unwrap_or_default();
                if let Some(reason) = delta.stop_reason {
                    // The JSON answer's tool was called: the answer is whole
                    // (a length limit or refusal stays what it is).
                    let finish = match reason {
                        "tool_use" if self.json => finish::STOP,
                        r => finish_reason(r),
                    };
                    let stop = match reason {
                        "stop_sequence" => delta.stop_sequence.as_deref(),
                        _ => None,
                    };
                    self.finished = true;
                    out.push(self.head(target).finish_json(finish, stop));
                }
            }
            "message_stop" => {
                if self.wants_usage
                    && let Some(u) = out.usage()
                {
                    let chunk = ChatChunk::usage_only(
                        self.id.as_str(),
                        self.created,
                        target.deployment.as_str(),
                        u,
                    );
                    out.push(chunk.to_json());
                }
                out.set_done();
            }
            "error" => {
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                return Err(errors::classify_stream_error(&v));
            }
            // ping, and event types added later.
            _ => {}
        }
        Ok(())
    }

    /// Complete with `message_stop`, or once the stop reason came (the
    /// answer is whole; only the closing event was lost).
    fn end(&mut self, _target: &Target, out: &mut StreamOutput) -> Result<(), UpstreamError> {
        if out.is_done() || self.finished {
            Ok(())
        } else {
            Err(switchyard_sdk::stream::incomplete())
        }
    }

    fn save(&self) -> Vec<u8> {
        StateWriter::new()
            .str(&self.id)
            .u64(self.created)
            .bool(self.json)
            .bool(self.wants_usage)
            .u8(self.open as u8)
            .u32(self.tools)
            .bool(self.finished)
            .bool(self.args)
            .finish()
    }

    fn restore(state: &[u8]) -> Result<Self, UpstreamError> {
        let mut r = StateReader::new(state);
        let stream = Stream {
            id: r.str()?,
            created: r.u64()?,
            json: r.bool()?,
            wants_usage: r.bool()?,
            open: match r.u8()? {
                0 => Open::Other,
                1 => Open::Tool,
                2 => Open::Json,
                n => {
                    return Err(UpstreamError::new(
                        ErrorClass::Permanent,
                        format!("corrupt stream state: block kind {n}"),
                    ));
                }
            },
            tools: r.u32()?,
            finished: r.bool()?,
            args: r.bool()?,
            head: None,
        };
        r.finish()?;
        Ok(stream)
    }
}
