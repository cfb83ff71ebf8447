//! Canonical request in, `generateContent` request out.
//!
//! Everything the canonical request can say is either translated or refused
//! by name ([`invalid`]): a request Gemini would answer differently from
//! what was asked (log probabilities, a remote image, a tool result for a
//! call that never happened) is the caller's 400, so the host can try a
//! deployment behind another adapter instead of returning something else.
//!
//! [`invalid`]: switchyard_sdk::canonical::invalid

use switchyard_sdk::canonical::ChatRequest;
use switchyard_sdk::{BuildError, HttpRequest, Target};

use crate::wire::Request;

mod messages;
mod options;

/// The upstream request for `request` (canonical JSON) to `target`.
pub fn build(target: &Target, request: &str) -> Result<HttpRequest, BuildError> {
    let req = ChatRequest::parse(request)?;
    let body = body(&req)?.to_body()?;
    Ok(HttpRequest::post_json(
        &path(&target.model, req.is_stream()),
        body,
    ))
}

/// The upstream body for `req`, before it is written.
pub fn body(req: &ChatRequest) -> Result<Request<'_>, BuildError> {
    options::refuse_unsupported(req)?;
    let (system_instruction, contents) = messages::conversation(&req.messages)?;
    let tools = options::tools(req)?;
    Ok(Request {
        contents,
        system_instruction,
        tool_config: options::tool_config(req, !tools.is_empty())?,
        tools,
        generation_config: options::generation_config(req)?,
    })
}

/// `/models/{model}:generateContent`, or the streamed method with SSE
/// framing (without `alt=sse` Google streams one JSON array). A model
/// configured as a resource name (`models/x`, `tunedModels/x`, as Google's
/// model list spells them) is used as such. The id is percent-encoded so a
/// stray `?`, `#` or `/` in the config cannot change what is called.
pub fn path(model: &str, stream: bool) -> String {
    let (collection, id) = match model.split_once('/') {
        Some((c @ ("models" | "tunedModels"), id)) => (c, id),
        _ => ("models", model),
    };
    let mut p = String::with_capacity(collection.len() + id.len() + 40);
    p.push('/');
    p.push_str(collection);
    p.push('/');
    // Unreserved bytes pass in runs (a model id is usually one run), each
    // other byte escaped. A run holds ASCII only, so both its ends are
    // character boundaries.
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let mut start = 0;
    for (i, b) in id.bytes().enumerate() {
        if unreserved(b) {
            continue;
        }
        if i > start {
            p.push_str(&id[start..i]);
        }
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        p.push('%');
        p.push(char::from(HEX[usize::from(b >> 4)]));
        p.push(char::from(HEX[usize::from(b & 15)]));
        start = i + 1;
    }
    if start < id.len() {
        p.push_str(&id[start..]);
    }
    p.push_str(if stream {
        ":streamGenerateContent?alt=sse"
    } else {
        ":generateContent"
    });
    p
}

#[cfg(test)]
mod tests;
