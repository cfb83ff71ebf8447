//! The usual upstream request written without serde: text turns, a system
//! prompt, sampling parameters; no tools, images, tool results or
//! prompt-cache marks. serde's serializer spent ~4.7k instructions a build
//! in a plugin escaping strings a byte at a time, a third of anthropic's
//! build and parse pair; the SDK's JSON string writer escapes eight bytes a
//! step. Anything else is written by serde, and a test checks the two write
//! the same bytes.

use switchyard_sdk::BuildError;
use switchyard_sdk::canonical::{push_json_float, push_json_number, push_json_string};

use crate::request::{Block, MessagesRequest, TextBlock};

impl MessagesRequest<'_> {
    /// The body as JSON bytes, as serde writes it.
    pub fn to_body(&self) -> Result<Vec<u8>, BuildError> {
        match self.write() {
            Some(text) => Ok(text.into_bytes()),
            None => switchyard_sdk::canonical::to_body(self),
        }
    }

    /// The usual request, member by member in the struct's order with its
    /// `skip_serializing_if` rules; `None` for anything else.
    fn write(&self) -> Option<String> {
        if !self.tools.is_empty() || self.tool_choice.is_some() {
            return None;
        }
        let mut out = String::with_capacity(256);
        out.push_str("{\"model\":");
        push_json_string(&mut out, self.model);
        out.push_str(",\"max_tokens\":");
        push_json_number(&mut out, u64::from(self.max_tokens));
        if !self.system.is_empty() {
            out.push_str(",\"system\":[");
            for (i, block) in self.system.iter().enumerate() {
                let TextBlock {
                    kind,
                    text,
                    cache_control: None,
                } = block
                else {
                    return None;
                };
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"type\":");
                push_json_string(&mut out, kind);
                out.push_str(",\"text\":");
                push_json_string(&mut out, text);
                out.push('}');
            }
            out.push(']');
        }
        out.push_str(",\"messages\":[");
        for (i, turn) in self.messages.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"role\":");
            push_json_string(&mut out, turn.role);
            out.push_str(",\"content\":[");
            for (j, block) in turn.content.iter().enumerate() {
                let Block::Text {
                    text,
                    cache_control: None,
                } = block
                else {
                    return None;
                };
                if j > 0 {
                    out.push(',');
                }
                out.push_str("{\"type\":\"text\",\"text\":");
                push_json_string(&mut out, text);
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push(']');
        if let Some(t) = self.temperature {
            out.push_str(",\"temperature\":");
            push_json_float(&mut out, t);
        }
        if let Some(p) = self.top_p {
            out.push_str(",\"top_p\":");
            push_json_float(&mut out, p);
        }
        if let Some(k) = self.top_k {
            out.push_str(",\"top_k\":");
            push_json_number(&mut out, u64::from(k));
        }
        if !self.stop_sequences.is_empty() {
            out.push_str(",\"stop_sequences\":[");
            for (i, s) in self.stop_sequences.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(&mut out, s);
            }
            out.push(']');
        }
        if self.stream {
            out.push_str(",\"stream\":true");
        }
        if let Some(m) = &self.metadata {
            out.push_str(",\"metadata\":");
            out.push_str(&serde_json::to_string(m).ok()?);
        }
        out.push('}');
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use switchyard_sdk::canonical::ChatRequest;

    use crate::request::messages_request;

    /// The usual requests are written here, byte for byte as serde writes
    /// them; the others are left to serde.
    #[test]
    fn writes_what_serde_writes() {
        let usual = [
            r#"{"model":"chat","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"What is the weather in Paris?"}],"temperature":0.2}"#,
            r#"{"messages":[{"role":"developer","content":[{"type":"text","text":"No \"lists\".\n"},{"type":"text","text":"Tab\there"}]},{"role":"user","content":"hi \u00e9\u0001"},{"role":"assistant","content":"hello"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":"It is a  "}],"temperature":1,"top_p":0.95,"top_k":40,"max_completion_tokens":4294967295,"stop":["END","\u2028"],"user":"u\"1","stream":true,"seed":7}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0,"temperature":1e-7,"top_p":1.5e300,"stop":"S"}"#,
        ];
        for text in usual {
            let request = ChatRequest::parse(text).unwrap();
            let body = messages_request("claude-sonnet-4-5", &request).unwrap();
            let written = body
                .write()
                .unwrap_or_else(|| panic!("not written here: {text}"));
            assert_eq!(written, serde_json::to_string(&body).unwrap(), "{text}");
        }
        let unusual = [
            r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"tool_choice":"none"}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}"#,
            r#"{"messages":[{"role":"system","content":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"x"}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}]}]}"#,
            r#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"18C"}]}"#,
        ];
        for text in unusual {
            let request = ChatRequest::parse(text).unwrap();
            let body = messages_request("claude", &request).unwrap();
            assert!(body.write().is_none(), "written here: {text}");
            // What serde writes is what is sent.
            assert_eq!(body.to_body().unwrap(), serde_json::to_vec(&body).unwrap());
        }
    }
}
