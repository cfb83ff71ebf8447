//! The Anthropic Messages API inbound (`POST /v1/messages`).
//!
//! An application written against an Anthropic SDK is routed like any
//! other: its request is translated to the canonical form, served by the
//! same pipeline (any deployment, any provider, the same failover), and the
//! canonical answer or stream is translated back, with Anthropic's content
//! blocks, stop reasons, usage and error JSON. Routed to an Anthropic
//! deployment, the round trip keeps tool use, stop reasons and usage.

pub mod request;
pub mod response;
pub mod stream;

use axum::body::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// The Anthropic body for a canonical non-streamed answer, or why there is
/// none (an answer with no choice, a tool call without usable arguments):
/// never an OpenAI body to an Anthropic client, which would read it as an
/// empty message.
pub fn answer(body: &[u8]) -> Result<Vec<u8>, crate::error::ApiError> {
    response::to_message(body).map_err(|why| {
        crate::error::ApiError::Untranslatable(format!(
            "{why}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })
}

/// The Anthropic event stream for a canonical one.
pub fn events(
    rx: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let canonical = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Some(b), rx))
    })
    .chain(futures_util::stream::once(async { None }));
    canonical
        .scan(stream::Translator::default(), |t, item| {
            let out = match item {
                Some(bytes) => t.push(&bytes),
                None => t.finish(),
            };
            futures_util::future::ready(Some(Ok(Bytes::from(out))))
        })
        .filter(|b| futures_util::future::ready(!matches!(b, Ok(b) if b.is_empty())))
}
