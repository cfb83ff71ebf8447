//! The usual `generateContent` request written without serde: text turns,
//! a system instruction, generation settings; no tools, inline data,
//! function calls or results, no response schema. serde's serializer spent
//! ~5k instructions a build in a plugin escaping strings a byte at a time;
//! the SDK's JSON string writer escapes eight bytes a step. Anything else is
//! written by serde, and a test checks the two write the same bytes.

use switchyard_sdk::BuildError;
use switchyard_sdk::canonical::{push_json_float, push_json_number, push_json_string};

use super::{GenerationConfig, Part, Request};

impl Request<'_> {
    /// The body as JSON bytes, as serde writes it.
    pub fn to_body(&self) -> Result<Vec<u8>, BuildError> {
        match self.write() {
            Some(text) => Ok(text.into_bytes()),
            None => switchyard_sdk::canonical::to_body(self),
        }
    }

    /// The usual request, member by member in the structs' order with their
    /// `skip_serializing_if` rules; `None` for anything else.
    fn write(&self) -> Option<String> {
        if !self.tools.is_empty() || self.tool_config.is_some() {
            return None;
        }
        let mut out = String::with_capacity(256);
        out.push_str("{\"contents\":[");
        for (i, content) in self.contents.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"role\":");
            push_json_string(&mut out, content.role);
            out.push_str(",\"parts\":");
            text_parts(&mut out, &content.parts)?;
            out.push('}');
        }
        out.push(']');
        if let Some(system) = &self.system_instruction {
            out.push_str(",\"systemInstruction\":{\"parts\":");
            text_parts(&mut out, &system.parts)?;
            out.push('}');
        }
        if self.generation_config != GenerationConfig::default() {
            out.push_str(",\"generationConfig\":");
            self.generation_config.write(&mut out)?;
        }
        out.push('}');
        Some(out)
    }
}

/// A list of text parts; `None` when one is another kind.
fn text_parts(out: &mut String, parts: &[Part<'_>]) -> Option<()> {
    out.push('[');
    for (i, part) in parts.iter().enumerate() {
        let Part::Text { text } = part else {
            return None;
        };
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"text\":");
        push_json_string(out, text);
        out.push('}');
    }
    out.push(']');
    Some(())
}

impl GenerationConfig<'_> {
    fn write(&self, out: &mut String) -> Option<()> {
        if self.response_json_schema.is_some() {
            return None;
        }
        let mut first = true;
        let mut member = |out: &mut String, name: &str| {
            out.push_str(if std::mem::take(&mut first) {
                "{\""
            } else {
                ",\""
            });
            out.push_str(name);
            out.push_str("\":");
        };
        if !self.stop_sequences.is_empty() {
            member(out, "stopSequences");
            out.push('[');
            for (i, s) in self.stop_sequences.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, s);
            }
            out.push(']');
        }
        if let Some(m) = self.response_mime_type {
            member(out, "responseMimeType");
            push_json_string(out, m);
        }
        if let Some(n) = self.candidate_count {
            member(out, "candidateCount");
            push_json_number(out, u64::from(n));
        }
        if let Some(n) = self.max_output_tokens {
            member(out, "maxOutputTokens");
            push_json_number(out, u64::from(n));
        }
        if let Some(t) = self.temperature {
            member(out, "temperature");
            push_json_float(out, t);
        }
        if let Some(p) = self.top_p {
            member(out, "topP");
            push_json_float(out, p);
        }
        if let Some(k) = self.top_k {
            member(out, "topK");
            push_json_number(out, u64::from(k));
        }
        if let Some(seed) = self.seed {
            member(out, "seed");
            if seed < 0 {
                out.push('-');
            }
            push_json_number(out, u64::from(seed.unsigned_abs()));
        }
        if let Some(p) = self.presence_penalty {
            member(out, "presencePenalty");
            push_json_float(out, p);
        }
        if let Some(f) = self.frequency_penalty {
            member(out, "frequencyPenalty");
            push_json_float(out, f);
        }
        // Not empty (the caller checks), so a member opened the object.
        out.push('}');
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use switchyard_sdk::canonical::ChatRequest;

    use crate::request::body;

    /// The usual requests are written here, byte for byte as serde writes
    /// them; the others are left to serde.
    #[test]
    fn writes_what_serde_writes() {
        let usual = [
            r#"{"model":"chat","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Say hello in French."}],"temperature":0.2,"top_p":0.95,"max_tokens":256,"stop":["\n\n"],"user":"user-42"}"#,
            r#"{"messages":[{"role":"developer","content":[{"type":"text","text":"No \"lists\".\n"}]},{"role":"user","content":"hi \u00e9\u0001"},{"role":"assistant","content":"hello"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"temperature":1,"top_k":40,"max_completion_tokens":4294967295,"stop":"END","seed":-7,"presence_penalty":0.5,"frequency_penalty":-1.5e-7,"response_format":{"type":"json_object"}}"#,
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"seed":2147483647,"n":1}"#,
        ];
        for text in usual {
            let request = ChatRequest::parse(text).unwrap();
            let b = body(&request).unwrap();
            let written = b
                .write()
                .unwrap_or_else(|| panic!("not written here: {text}"));
            assert_eq!(written, serde_json::to_string(&b).unwrap(), "{text}");
        }
        let unusual = [
            r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object"}}}}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}"#,
            r#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"18C"}]}"#,
        ];
        for text in unusual {
            let request = ChatRequest::parse(text).unwrap();
            let b = body(&request).unwrap();
            assert!(b.write().is_none(), "written here: {text}");
            assert_eq!(b.to_body().unwrap(), serde_json::to_vec(&b).unwrap());
        }
    }
}
