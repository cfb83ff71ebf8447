//! Canonical request in, `POST /api/chat` body out.
//!
//! Whatever Ollama cannot honour is refused by name ([`invalid`]) instead of
//! dropped: a caller asking for three answers, log-probabilities or a forced
//! tool call must learn that this deployment cannot do it, not receive an
//! answer that silently ignores the request (the host then tries deployments
//! behind other adapters). Metadata that does not change the answer (`user`,
//! `metadata`, `store`, `parallel_tool_calls`, `stream_options`, ...) is
//! ignored.

use std::borrow::Cow;

use serde_json::Value;
use switchyard_sdk::BuildError;
use switchyard_sdk::canonical::{
    ChatRequest, Content, Message, Part, ResponseFormat, Role, Stop, Tool, ToolCall, ToolChoice,
    invalid, to_body,
};

use crate::wire::{ChatBody, Format, Options, OutCall, OutFunction};

/// The upstream body for canonical `request`, asking for `model`.
pub fn build_body(model: &str, request: &str) -> Result<Vec<u8>, BuildError> {
    let req = ChatRequest::parse(request)?;
    refuse_unsupported(&req)?;
    if req.messages.is_empty() {
        // Ollama answers an empty conversation by loading the model and
        // replying with nothing (`done_reason: "load"`): not an answer.
        return Err(invalid("messages", "must not be empty"));
    }
    let body = ChatBody {
        model,
        messages: messages(&req.messages)?,
        stream: req.is_stream(),
        tools: tools(&req)?,
        format: format(req.response_format.as_ref()),
        options: Options {
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
            num_predict: req.max_output_tokens(),
            stop: match &req.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.as_str()],
                Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
            },
            seed: req.seed,
            presence_penalty: req.presence_penalty,
            frequency_penalty: req.frequency_penalty,
        },
    };
    to_body(&body)
}

/// Refuses the members that ask for something Ollama's chat API cannot do.
fn refuse_unsupported(req: &ChatRequest) -> Result<(), BuildError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(invalid(
            "n",
            "must be 1: Ollama generates one answer per request",
        ));
    }
    let set = |name: &str| req.extra.get(name).filter(|v| !v.is_null());
    if set("logprobs").is_some_and(|v| v != &Value::Bool(false)) {
        return Err(invalid(
            "logprobs",
            "is not supported by this Ollama adapter",
        ));
    }
    if set("top_logprobs").is_some_and(|v| v.as_u64() != Some(0)) {
        return Err(invalid(
            "top_logprobs",
            "is not supported by this Ollama adapter",
        ));
    }
    if set("logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        return Err(invalid("logit_bias", "is not supported by Ollama"));
    }
    if set("audio").is_some() {
        return Err(invalid(
            "audio",
            "is not supported by Ollama: it answers in text",
        ));
    }
    let text_only = |v: &Value| {
        v.as_array()
            .is_some_and(|m| m.iter().all(|m| m.as_str() == Some("text")))
    };
    if set("modalities").is_some_and(|v| !text_only(v)) {
        return Err(invalid(
            "modalities",
            "must be [\"text\"]: Ollama answers in text",
        ));
    }
    // The legacy function-calling members: honouring them would take a
    // translation of their own, and ignoring them would answer without tools.
    for legacy in ["functions", "function_call"] {
        if set(legacy).is_some() {
            return Err(invalid(legacy, "is not supported: declare `tools` instead"));
        }
    }
    Ok(())
}

/// The tools to declare: none when `tool_choice` is `none`. Ollama lets the
/// model decide, so a choice that forces a call cannot be honoured.
fn tools(req: &ChatRequest) -> Result<&[Tool], BuildError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    match &req.tool_choice {
        None => {}
        Some(ToolChoice::Mode(m)) if m == "auto" => {}
        Some(ToolChoice::Mode(m)) if m == "none" => return Ok(&[]),
        Some(ToolChoice::Mode(m)) => {
            return Err(invalid(
                "tool_choice",
                format_args!("`{m}` is not supported by Ollama: use `auto` or `none`"),
            ));
        }
        Some(ToolChoice::Function(_)) => {
            return Err(invalid(
                "tool_choice",
                "naming a function is not supported by Ollama: use `auto` or `none`",
            ));
        }
    }
    if let Some(i) = tools.iter().position(|t| t.kind != "function") {
        return Err(invalid(&format!("tools[{i}].type"), "must be `function`"));
    }
    Ok(tools)
}

/// `response_format` as `format`. A `json_schema` without a schema asks for
/// JSON of any shape, which is what `"json"` means.
fn format(response_format: Option<&ResponseFormat>) -> Option<Format<'_>> {
    match response_format? {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(Format::Json),
        ResponseFormat::JsonSchema { json_schema } => Some(match &json_schema.schema {
            Some(schema) if !schema.is_null() => Format::Schema(schema),
            _ => Format::Json,
        }),
    }
}

/// The conversation in Ollama's shape; indices in errors are the caller's.
fn messages(msgs: &[Message]) -> Result<Vec<crate::wire::Message<'_>>, BuildError> {
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let (content, images) = content(i, m.content.as_ref())?;
        let mut wire = crate::wire::Message {
            role: match m.role {
                // Ollama has no `developer` role; it is `system` by another name.
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            },
            content,
            images,
            tool_calls: Vec::new(),
            tool_name: None,
            tool_call_id: None,
        };
        match m.role {
            Role::Assistant => wire.tool_calls = calls(i, m.tool_calls.as_deref())?,
            Role::Tool => {
                wire.tool_call_id = m.tool_call_id.as_deref();
                wire.tool_name = tool_name(&msgs[..i], m);
            }
            _ => {}
        }
        out.push(wire);
    }
    Ok(out)
}

/// A message's text (text parts joined as written, like
/// [`Message::text`]) and its images (base64, from `data:` URLs).
fn content(i: usize, content: Option<&Content>) -> Result<(Cow<'_, str>, Vec<&str>), BuildError> {
    let parts = match content {
        None => return Ok((Cow::Borrowed(""), Vec::new())),
        Some(Content::Text(text)) => return Ok((Cow::Borrowed(text), Vec::new())),
        Some(Content::Parts(parts)) => parts,
    };
    let mut text = Cow::Borrowed("");
    let mut images = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part {
            Part::Text { text: t, .. } if text.is_empty() => text = Cow::Borrowed(t),
            Part::Text { text: t, .. } => text.to_mut().push_str(t),
            Part::ImageUrl { image_url } => {
                let field = || format!("messages[{i}].content[{j}].image_url");
                let Some((media, data)) = image_url.data() else {
                    let remote = ["http://", "https://"].iter().any(|p| {
                        image_url
                            .url
                            .get(..p.len())
                            .is_some_and(|s| s.eq_ignore_ascii_case(p))
                    });
                    return Err(invalid(
                        &field(),
                        if remote {
                            "must be a data: URL for Ollama (the gateway does not fetch images)"
                        } else {
                            "must be a base64 data: URL"
                        },
                    ));
                };
                if !media.to_ascii_lowercase().starts_with("image/") {
                    return Err(invalid(
                        &field(),
                        format_args!("is `{media}`, not an image"),
                    ));
                }
                images.push(data);
            }
            Part::Other => {
                return Err(invalid(
                    &format!("messages[{i}].content[{j}]"),
                    "is a part Ollama cannot take: only `text` and `image_url` parts are supported",
                ));
            }
        }
    }
    Ok((text, images))
}

/// An assistant message's earlier tool calls. Ollama wants the arguments as
/// an object, so the caller's JSON text must be one (empty text is `{}`).
fn calls(i: usize, calls: Option<&[ToolCall]>) -> Result<Vec<OutCall<'_>>, BuildError> {
    let calls = calls.unwrap_or_default();
    let mut out = Vec::with_capacity(calls.len());
    for (k, call) in calls.iter().enumerate() {
        let arguments = call
            .function
            .object(&format!("messages[{i}].tool_calls[{k}].function.arguments"))?;
        out.push(OutCall {
            id: &call.id,
            function: OutFunction {
                name: &call.function.name,
                arguments,
            },
        });
    }
    Ok(out)
}

/// The function a tool result answers: the latest earlier assistant call
/// with its `tool_call_id` (ids may repeat across turns), else the
/// message's own `name`. Without either Ollama still takes the result.
fn tool_name<'a>(earlier: &'a [Message], m: &'a Message) -> Option<&'a str> {
    let by_id = m.tool_call_id.as_deref().and_then(|id| {
        earlier
            .iter()
            .rev()
            .filter(|e| e.role == Role::Assistant)
            .flat_map(|e| e.tool_calls.as_deref().unwrap_or_default())
            .find(|c| c.id == id)
            .map(|c| c.function.name.as_str())
    });
    by_id.or(m.name.as_deref())
}

#[cfg(test)]
mod tests;
