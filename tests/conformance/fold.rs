//! A stream's canonical chunks folded into one answer, checking each chunk
//! on the way.

use serde_json::{Value, json};
use switchyard::domain::{StreamBatch, Target, Usage};

#[derive(Debug, Default, PartialEq)]
pub struct Folded {
    pub chunks: usize,
    pub content: String,
    /// `(id, name, arguments)` by index.
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: Option<String>,
    /// The stop sequence named beside the finish reason, when one was.
    pub stop_sequence: Option<String>,
    /// The last chunk's `usage` object, as the caller reads it.
    pub usage_chunk: Option<Value>,
    pub usage: Option<Usage>,
    pub done: bool,
    pub malformed: u32,
    /// What the stream's start reported.
    pub quota: Option<switchyard::domain::QuotaHint>,
}

impl Folded {
    pub fn add(&mut self, batch: StreamBatch, target: &Target) -> Result<(), String> {
        self.usage = batch.usage.or(self.usage);
        self.done |= batch.done;
        self.malformed += batch.malformed;
        for text in batch.chunks {
            self.chunks += 1;
            let c: Value = serde_json::from_str(&text)
                .map_err(|e| format!("chunk is not JSON ({e}): {text}"))?;
            if c["object"] != "chat.completion.chunk" || c["model"] != target.deployment.as_str() {
                return Err(format!(
                    "chunk is not a canonical chunk naming the deployment: {text}"
                ));
            }
            if text.contains('\n') {
                return Err(format!("chunk spans lines: {text:?}"));
            }
            if c["usage"].is_object() {
                self.usage_chunk = Some(c["usage"].clone());
            }
            let choices = c["choices"]
                .as_array()
                .ok_or_else(|| format!("chunk has no choices array: {text}"))?;
            for choice in choices {
                let delta = &choice["delta"];
                if !delta.is_object() {
                    return Err(format!("choice has no delta: {text}"));
                }
                if let Some(s) = delta["content"].as_str() {
                    self.content.push_str(s);
                }
                for call in delta["tool_calls"].as_array().into_iter().flatten() {
                    let i = call["index"]
                        .as_u64()
                        .ok_or_else(|| format!("tool call delta without index: {text}"))?
                        as usize;
                    if i > self.tool_calls.len() {
                        return Err(format!("tool call index {i} skips one: {text}"));
                    }
                    if i == self.tool_calls.len() {
                        let id = call["id"].as_str().ok_or_else(|| {
                            format!("first delta of a tool call has no id: {text}")
                        })?;
                        let name = call["function"]["name"].as_str().ok_or_else(|| {
                            format!("first delta of a tool call has no name: {text}")
                        })?;
                        self.tool_calls
                            .push((id.into(), name.into(), String::new()));
                    }
                    if let Some(a) = call["function"]["arguments"].as_str() {
                        self.tool_calls[i].2.push_str(a);
                    }
                }
                if let Some(r) = choice["finish_reason"].as_str() {
                    self.finish_reason = Some(r.into());
                }
                if let Some(s) = choice["stop_sequence"].as_str() {
                    self.stop_sequence = Some(s.into());
                }
            }
        }
        Ok(())
    }

    /// The fold as the fixture's `expect.stream` states it (tool arguments
    /// parsed, so any serialisation of the same JSON matches).
    pub fn to_json(&self) -> Value {
        let calls: Vec<Value> = self
            .tool_calls
            .iter()
            .map(|(id, name, args)| {
                json!({
                    "id": id,
                    "name": name,
                    "arguments": serde_json::from_str::<Value>(args).unwrap_or(Value::String(args.clone())),
                })
            })
            .collect();
        json!({
            "content": self.content,
            "tool_calls": calls,
            "finish_reason": self.finish_reason,
            "stop_sequence": self.stop_sequence,
            "usage_chunk": self.usage_chunk,
            "malformed": self.malformed,
            "chunks": self.chunks,
        })
    }
}
