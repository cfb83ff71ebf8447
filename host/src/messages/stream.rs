//! A canonical SSE stream → Anthropic's streamed message events.
//!
//! The pipeline streams canonical chunks (`data: {chunk}` … `data: [DONE]`,
//! or an error event) whatever the upstream's dialect; this turns them into
//! `message_start`, one `content_block_*` run per text or tool-use block,
//! `message_delta` (stop reason and usage) and `message_stop`, so the
//! Anthropic SDKs' stream accumulators build the same message a non-streamed
//! call returns.

use serde_json::{Value, json};

use crate::domain::StreamFraming;
use crate::plugins::stream::Framer;

use super::response::{message_id, stop_reason, stop_sequence, usage};

/// The open content block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    /// A tool call, by its canonical index.
    Tool(u64),
}

/// Translates one stream; feed it the canonical bytes as they come.
pub struct Translator {
    /// The host's SSE framer, the one upstream streams go through.
    framer: Framer,
    started: bool,
    open: Open,
    /// The next content block's index.
    next_block: u64,
    stop: Option<String>,
    /// The stop sequence that ended the answer, when the deployment named it.
    stop_sequence: Option<String>,
    usage: Option<Value>,
    /// The model refused (OpenAI's `delta.refusal`): its words are the
    /// text, and the stop reason is `refusal`.
    refused: bool,
    /// `[DONE]` or an error event went out: nothing more is sent.
    ended: bool,
}

impl Default for Translator {
    fn default() -> Self {
        Translator {
            framer: Framer::new(StreamFraming::Sse),
            started: false,
            open: Open::None,
            next_block: 0,
            refused: false,
            stop: None,
            stop_sequence: None,
            usage: None,
            ended: false,
        }
    }
}

fn event(out: &mut Vec<u8>, kind: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl Translator {
    /// Canonical bytes in (split anywhere), Anthropic events out.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // The pipeline's own events: lines are far below the framer's limit.
        let events = self.framer.push(bytes).unwrap_or_default();
        for (_, data) in events.iter() {
            if !data.is_empty() {
                self.data(data, &mut out);
            }
        }
        out
    }

    /// The canonical stream closed. A stream that closed without its end
    /// gets an error event, so no client takes a cut answer for a whole one.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.ended {
            self.ended = true;
            let error = json!({"type": "error", "error": {"type": "api_error", "message": "the stream ended before the answer was complete"}});
            event(&mut out, "error", &error);
        }
        out
    }

    fn data(&mut self, data: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if data.trim() == "[DONE]" {
            self.close_block(out);
            self.ensure_started(None, out);
            let mut delta_usage = usage(self.usage.as_ref().unwrap_or(&Value::Null));
            if self.usage.is_none() {
                delta_usage = json!({"output_tokens": 0});
            }
            event(
                out,
                "message_delta",
                &json!({
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": stop_reason(
                            self.stop.as_deref(),
                            self.stop_sequence.as_deref(),
                            self.refused,
                        ),
                        "stop_sequence": self.stop_sequence,
                    },
                    "usage": delta_usage,
                }),
            );
            event(out, "message_stop", &json!({"type": "message_stop"}));
            self.ended = true;
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(e) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = e["message"]
                .as_str()
                .unwrap_or("the upstream failed mid-answer");
            let kind = match e["class"].as_str() {
                Some("rate_limited") => "rate_limit_error",
                Some("overloaded" | "connect" | "transport") => "overloaded_error",
                Some("timeout") => "timeout_error",
                _ => "api_error",
            };
            let error = json!({"type": "error", "error": {"type": kind, "message": message}});
            event(out, "error", &error);
            self.ended = true;
            return;
        }
        self.ensure_started(Some(&chunk), out);
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        let refusal = delta["refusal"].as_str().filter(|t| !t.is_empty());
        self.refused |= refusal.is_some();
        for text in [delta["content"].as_str(), refusal]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
        {
            if self.open != Open::Text {
                self.close_block(out);
                self.open_block(Open::Text, json!({"type": "text", "text": ""}), out);
            }
            self.delta(json!({"type": "text_delta", "text": text}), out);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap_or(0);
            if self.open != Open::Tool(index) {
                self.close_block(out);
                let block = json!({
                    "type": "tool_use",
                    "id": call["id"].as_str().unwrap_or_default(),
                    "name": call["function"]["name"].as_str().unwrap_or_default(),
                    "input": {},
                });
                self.open_block(Open::Tool(index), block, out);
            }
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                self.delta(
                    json!({"type": "input_json_delta", "partial_json": args}),
                    out,
                );
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.stop = Some(reason.to_owned());
        }
        if let Some(s) = stop_sequence(choice) {
            self.stop_sequence = Some(s.to_owned());
        }
    }

    fn ensure_started(&mut self, chunk: Option<&Value>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let chunk = chunk.unwrap_or(&Value::Null);
        let message = json!({
            "id": message_id(chunk["id"].as_str()),
            "type": "message",
            "role": "assistant",
            "model": chunk["model"],
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    fn open_block(&mut self, open: Open, block: Value, out: &mut Vec<u8>) {
        let start = json!({"type": "content_block_start", "index": self.next_block, "content_block": block});
        event(out, "content_block_start", &start);
        self.open = open;
    }

    fn delta(&self, delta: Value, out: &mut Vec<u8>) {
        let d = json!({"type": "content_block_delta", "index": self.next_block, "delta": delta});
        event(out, "content_block_delta", &d);
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.open == Open::None {
            return;
        }
        let stop = json!({"type": "content_block_stop", "index": self.next_block});
        event(out, "content_block_stop", &stop);
        self.next_block += 1;
        self.open = Open::None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(out: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (kind, data) = e.split_once('\n').unwrap();
                (
                    kind.strip_prefix("event: ").unwrap().to_owned(),
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect()
    }

    const CANONICAL: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c1\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let me check.\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"dep\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\n\n",
        "data: [DONE]\n\n",
    );

    /// A streamed refusal (OpenAI's `delta.refusal`) is text, and the
    /// stop reason says `refusal`.
    #[test]
    fn a_streamed_refusal_is_text_with_its_stop_reason() {
        let mut t = Translator::default();
        let mut out = t.push(concat!(
            "data: {\"id\":\"c2\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"refusal\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c2\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"I can't\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c2\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\" help.\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c2\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ).as_bytes());
        out.extend(t.finish());
        let ev = events(&out);
        let text: String = ev
            .iter()
            .filter(|(k, _)| k == "content_block_delta")
            .map(|(_, e)| e["delta"]["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(text, "I can't help.");
        let delta = ev.iter().find(|(k, _)| k == "message_delta").unwrap();
        assert_eq!(delta.1["delta"]["stop_reason"], "refusal");
    }

    #[test]
    fn text_then_tool_call() {
        let mut t = Translator::default();
        let mut out = t.push(CANONICAL.as_bytes());
        out.extend(t.finish());
        let ev = events(&out);
        let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                // The comment is not an event (the framer's rule).
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(ev[0].1["message"]["id"], "msg_c1");
        assert_eq!(ev[2].1["delta"]["text"], "Let me check.");
        assert_eq!(ev[4].1["index"], 1);
        assert_eq!(ev[4].1["content_block"]["name"], "get_weather");
        assert_eq!(ev[5].1["delta"]["partial_json"], "{\"city\":\"Paris\"}");
        assert_eq!(ev[7].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev[7].1["usage"]["input_tokens"], 20);
        assert_eq!(ev[7].1["usage"]["output_tokens"], 12);
    }

    #[test]
    fn a_stop_sequence_and_cache_writes_reach_message_delta() {
        let mut t = Translator::default();
        let mut out = t.push(concat!(
            "data: {\"id\":\"msg_1\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Done\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"msg_1\",\"model\":\"dep\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\",\"logprobs\":null,\"stop_sequence\":\"END\"}]}\n\n",
            "data: {\"id\":\"msg_1\",\"model\":\"dep\",\"choices\":[],\"usage\":{\"prompt_tokens\":39,\"completion_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":10,\"cache_creation_tokens\":4}}}\n\n",
            "data: [DONE]\n\n",
        ).as_bytes());
        out.extend(t.finish());
        let ev = events(&out);
        let delta = &ev.iter().find(|(k, _)| k == "message_delta").unwrap().1;
        assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
        assert_eq!(delta["delta"]["stop_sequence"], "END");
        assert_eq!(
            delta["usage"],
            json!({"input_tokens": 25, "output_tokens": 12,
                "cache_read_input_tokens": 10, "cache_creation_input_tokens": 4})
        );
    }

    #[test]
    fn split_anywhere_gives_the_same_events() {
        let whole = {
            let mut t = Translator::default();
            t.push(CANONICAL.as_bytes())
        };
        for at in 1..CANONICAL.len() {
            let mut t = Translator::default();
            let mut out = t.push(&CANONICAL.as_bytes()[..at]);
            out.extend(t.push(&CANONICAL.as_bytes()[at..]));
            assert_eq!(out, whole, "split at {at}");
        }
    }

    #[test]
    fn errors_and_cut_streams() {
        let mut t = Translator::default();
        let out = t.push(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"message\":\"deployment \\\"a\\\": upstream closed\",\"type\":\"upstream_error\"}}\n\n");
        let ev = events(&out);
        assert_eq!(ev.last().unwrap().0, "error");
        assert_eq!(
            ev.last().unwrap().1["error"]["message"],
            "deployment \"a\": upstream closed"
        );
        assert!(t.finish().is_empty());
        let mut t = Translator::default();
        t.push(
            b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        );
        let ev = events(&t.finish());
        assert_eq!(ev[0].0, "error");
    }

    /// A failure's class (an extra member of the canonical error event)
    /// names Anthropic's error type, as an SDK client branches on it.
    #[test]
    fn stream_errors_carry_anthropic_s_type() {
        for (class, kind) in [
            (Some("rate_limited"), "rate_limit_error"),
            (Some("overloaded"), "overloaded_error"),
            (Some("transport"), "overloaded_error"),
            (Some("timeout"), "timeout_error"),
            (Some("permanent"), "api_error"),
            (None, "api_error"),
        ] {
            let mut error = json!({"message": "deployment \"a\": cut", "type": "upstream_error"});
            if let Some(c) = class {
                error["class"] = json!(c);
            }
            let mut t = Translator::default();
            let out = t.push(format!("data: {}\n\n", json!({"error": error})).as_bytes());
            let ev = events(&out);
            assert_eq!(ev.last().unwrap().0, "error");
            assert_eq!(ev.last().unwrap().1["error"]["type"], kind, "{class:?}");
        }
    }
}
