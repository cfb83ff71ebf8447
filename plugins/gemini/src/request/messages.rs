//! The conversation: messages in, system instruction and turns out.

use std::borrow::Cow;

use serde_json::value::RawValue;
use switchyard_sdk::BuildError;
use switchyard_sdk::canonical::{
    Content as Canonical, ImageUrl, Message, Part as CanonicalPart, Role, invalid,
};

use crate::wire::{
    Blob, Content, FunctionCall, FunctionResponse, Part, SystemInstruction, ToolResult,
};

/// Gemini 3 refuses a replayed `functionCall` part without the thought
/// signature the model attached to it, and the canonical format has no place
/// to carry one back. Google documents this value for calls whose signature
/// is unknown (a conversation from another model, or rebuilt by the client);
/// models without signatures ignore it. Only the first call of a turn needs it.
const UNKNOWN_SIGNATURE: &str = "skip_thought_signature_validator";

/// The system instruction and the turns. System and developer messages,
/// wherever they are, become the system instruction (Gemini has one);
/// consecutive tool results become one `user` turn, as Gemini expects the
/// answers to one step's calls together.
pub fn conversation(
    messages: &[Message],
) -> Result<(Option<SystemInstruction<'_>>, Vec<Content<'_>>), BuildError> {
    let mut system = Vec::new();
    let mut contents: Vec<Content> = Vec::with_capacity(messages.len());
    // (id, function name) of every tool call so far, for results to name.
    let mut calls: Vec<(&str, &str)> = Vec::new();
    // The last turn holds tool results: the next result joins it.
    let mut in_results = false;
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                let text = text_only(i, &m.content, "system")?;
                if !text.is_empty() {
                    system.push(Part::Text { text });
                }
            }
            Role::User => {
                let parts = user_parts(i, &m.content)?;
                if parts.is_empty() {
                    return Err(invalid(
                        &format!("messages[{i}].content"),
                        "is empty: Gemini needs some text or an image in a user message",
                    ));
                }
                contents.push(Content {
                    role: "user",
                    parts,
                });
                in_results = false;
            }
            Role::Assistant => {
                let parts = model_parts(i, m, &mut calls)?;
                // An empty assistant message says nothing; Gemini refuses empty turns.
                if !parts.is_empty() {
                    contents.push(Content {
                        role: "model",
                        parts,
                    });
                    in_results = false;
                }
            }
            Role::Tool => {
                let part = tool_result(i, m, &calls)?;
                match contents.last_mut() {
                    Some(turn) if in_results => turn.parts.push(part),
                    _ => {
                        contents.push(Content {
                            role: "user",
                            parts: vec![part],
                        });
                        in_results = true;
                    }
                }
            }
        }
    }
    if contents.is_empty() {
        return Err(invalid(
            "messages",
            "needs a user message: Gemini cannot answer a system prompt alone",
        ));
    }
    let system = (!system.is_empty()).then_some(SystemInstruction { parts: system });
    Ok((system, contents))
}

/// The text of a message that can only carry text (`who` names its kind).
fn text_only<'a>(
    i: usize,
    content: &'a Option<Canonical>,
    who: &str,
) -> Result<Cow<'a, str>, BuildError> {
    match content {
        None => Ok(Cow::Borrowed("")),
        Some(Canonical::Text(t)) => Ok(Cow::Borrowed(t)),
        Some(Canonical::Parts(parts)) => {
            let mut text = Cow::Borrowed("");
            for (j, p) in parts.iter().enumerate() {
                match p {
                    CanonicalPart::Text { text: t, .. } if text.is_empty() => {
                        text = Cow::Borrowed(t)
                    }
                    CanonicalPart::Text { text: t, .. } => text.to_mut().push_str(t),
                    _ => {
                        return Err(invalid(
                            &format!("messages[{i}].content[{j}]"),
                            format_args!(
                                "cannot be sent to Gemini: {who} messages carry text only"
                            ),
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

/// A user message's text and images; empty texts are left out (Gemini
/// refuses an empty text part).
fn user_parts(i: usize, content: &Option<Canonical>) -> Result<Vec<Part<'_>>, BuildError> {
    match content {
        None => Ok(Vec::new()),
        Some(Canonical::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Canonical::Text(t)) => Ok(vec![Part::Text {
            text: Cow::Borrowed(t),
        }]),
        Some(Canonical::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match p {
                    CanonicalPart::Text { text, .. } if text.is_empty() => {}
                    CanonicalPart::Text { text, .. } => out.push(Part::Text {
                        text: Cow::Borrowed(text),
                    }),
                    CanonicalPart::ImageUrl { image_url } => out.push(image(i, j, image_url)?),
                    CanonicalPart::Other => {
                        return Err(invalid(
                            &format!("messages[{i}].content[{j}]"),
                            "is a kind of content the Gemini adapter does not send (only `text` and `image_url`)",
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

/// An image, which must travel inline: the sandbox cannot fetch a URL, and
/// Gemini's `fileData` takes only files uploaded to Google.
fn image(i: usize, j: usize, image: &ImageUrl) -> Result<Part<'_>, BuildError> {
    match image.data() {
        Some((mime_type, data)) if !mime_type.is_empty() && !data.is_empty() => {
            Ok(Part::InlineData {
                inline_data: Blob { mime_type, data },
            })
        }
        _ => Err(invalid(
            &format!("messages[{i}].content[{j}].image_url"),
            "must be a data: URL for Gemini (data:<media type>;base64,...): the gateway does not fetch images",
        )),
    }
}

/// An assistant message's text and tool calls, remembering each call's
/// function for the results that follow.
fn model_parts<'a>(
    i: usize,
    m: &'a Message,
    calls: &mut Vec<(&'a str, &'a str)>,
) -> Result<Vec<Part<'a>>, BuildError> {
    let mut parts = Vec::new();
    let text = text_only(i, &m.content, "assistant")?;
    if !text.is_empty() {
        parts.push(Part::Text { text });
    }
    for (k, call) in m.tool_calls.iter().flatten().enumerate() {
        let name = call.function.name.as_str();
        parts.push(Part::FunctionCall {
            function_call: FunctionCall {
                name,
                args: call
                    .function
                    .object(&format!("messages[{i}].tool_calls[{k}].function.arguments"))?,
            },
            thought_signature: (k == 0).then_some(UNKNOWN_SIGNATURE),
        });
        calls.push((call.id.as_str(), name));
    }
    Ok(parts)
}

/// A tool message as a `functionResponse`, named after the call it answers
/// (Gemini matches results to calls by function name, not by id).
fn tool_result<'a>(
    i: usize,
    m: &'a Message,
    calls: &[(&'a str, &'a str)],
) -> Result<Part<'a>, BuildError> {
    let field = || format!("messages[{i}].tool_call_id");
    let id = m
        .tool_call_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            invalid(
                &field(),
                "is required: Gemini needs the function a result is for",
            )
        })?;
    // The latest call with that id: clients that reuse ids per turn still match.
    let name = calls
        .iter()
        .rev()
        .find(|(call, _)| *call == id)
        .map(|(_, name)| *name)
        .ok_or_else(|| {
            invalid(
                &field(),
                format_args!("`{id}` answers no tool call of an earlier assistant message"),
            )
        })?;
    let text = text_only(i, &m.content, "tool")?;
    let response = match text {
        Cow::Borrowed(t) => match object(t) {
            Some(raw) => ToolResult::Object(raw),
            None => ToolResult::Wrapped { content: text },
        },
        Cow::Owned(t) => match object(&t).map(RawValue::to_owned) {
            Some(raw) => ToolResult::OwnedObject(raw),
            None => ToolResult::Wrapped {
                content: Cow::Owned(t),
            },
        },
    };
    Ok(Part::FunctionResponse {
        function_response: FunctionResponse { name, response },
    })
}

/// `text` as raw JSON when it is one JSON object.
fn object(text: &str) -> Option<&RawValue> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}
