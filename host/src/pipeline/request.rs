//! What the host reads off a chat request: the few fields it needs (model,
//! stream, needs, limits) borrowed from the body without copying it, the
//! caller's hints from headers, and the summary a strategy is given.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::Capability;
use crate::domain::{Capabilities, RequestSummary, TaskPriority};

/// What the caller says about a request besides its body (from headers).
#[derive(Debug, Default)]
pub struct CallerHints {
    /// `x-switchyard-tags`, comma separated.
    pub tags: Vec<String>,
    /// `x-switchyard-priority`: low, normal, high or critical.
    pub priority: Option<TaskPriority>,
    /// The client key the request came with (strategies see its name as
    /// the tag `caller:<name>`).
    pub caller: Option<std::sync::Arc<crate::auth::ClientKey>>,
    /// `x-switchyard-timeout-ms`: this request's whole deadline.
    pub timeout: Option<std::time::Duration>,
    /// `Cache-Control` and `x-switchyard-cache`.
    pub cache: crate::cache::Directives,
}

impl CallerHints {
    /// Parses a priority header value, naming the accepted values on error.
    pub fn parse_priority(value: &str) -> Result<TaskPriority, String> {
        TaskPriority::parse(value)
    }
}

/// The parts of a chat request the host reads; everything else passes
/// through to the adapter untouched.
#[derive(Deserialize)]
pub(super) struct ChatRequestView<'a> {
    #[serde(borrow)]
    pub(super) model: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) messages: Vec<MessageView<'a>>,
    #[serde(default, deserialize_with = "null_as_false")]
    pub(super) stream: bool,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    response_format: Option<ResponseFormat>,
    /// Routes to try after the requested one (the convention of
    /// OpenAI-compatible gateways); not sent upstream.
    #[serde(default)]
    pub(super) fallbacks: Option<Vec<String>>,
}

impl ChatRequestView<'_> {
    /// The most completion tokens the caller allows, if it says.
    pub(super) fn output_limit(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// `response_format` asks for JSON (an object or a schema).
    pub(super) fn asks_for_json(&self) -> bool {
        self.response_format
            .as_ref()
            .is_some_and(|f| f.kind != "text")
    }
}

#[derive(Deserialize)]
pub(super) struct MessageView<'a> {
    #[allow(dead_code)]
    role: serde::de::IgnoredAny,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// `"stream": null` means not streamed, as OpenAI reads it.
fn null_as_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

/// What the strategy is told about the request.
pub(super) fn summarize(view: &ChatRequestView, text: &str, hints: CallerHints) -> RequestSummary {
    let content_bytes: usize = view
        .messages
        .iter()
        .filter_map(|m| m.content)
        .map(|c| c.get().len())
        .sum();
    let mut needs = Capabilities::empty();
    if view.tools.is_some() {
        needs |= Capabilities::TOOLS;
    }
    if view.asks_for_json() {
        needs |= Capabilities::JSON_MODE;
    }
    if view.stream {
        needs |= Capabilities::STREAMING;
    }
    if text.contains("\"image_url\"") {
        needs |= Capabilities::VISION;
    }
    RequestSummary {
        model: view.model.to_string(),
        // ~4 bytes per token is the usual rule of thumb for English text.
        input_tokens: (content_bytes / 4) as u32,
        max_output_tokens: view.max_completion_tokens.or(view.max_tokens),
        stream: view.stream,
        needs,
        priority: hints.priority.unwrap_or(TaskPriority::Normal),
        tags: hints.tags,
    }
}

/// Indices in range and each at most once.
pub fn validate_order(order: Vec<u32>, len: usize) -> Result<Vec<usize>, String> {
    let mut seen = vec![false; len];
    order
        .into_iter()
        .map(|i| {
            let i = i as usize;
            match seen.get_mut(i) {
                None => Err(format!(
                    "strategy returned index {i}, but there are {len} candidates"
                )),
                Some(true) => Err(format!("strategy returned index {i} twice")),
                Some(s) => {
                    *s = true;
                    Ok(i)
                }
            }
        })
        .collect()
}

pub fn capabilities(list: &[Capability]) -> Capabilities {
    list.iter().fold(Capabilities::empty(), |acc, c| {
        acc | match c {
            Capability::Tools => Capabilities::TOOLS,
            Capability::JsonMode => Capabilities::JSON_MODE,
            Capability::Vision => Capabilities::VISION,
            Capability::Streaming => Capabilities::STREAMING,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_validation_rejects_out_of_range_and_repeats() {
        assert_eq!(validate_order(vec![2, 0, 1], 3).unwrap(), vec![2, 0, 1]);
        assert_eq!(validate_order(vec![1], 3).unwrap(), vec![1]);
        assert!(validate_order(vec![3], 3).unwrap_err().contains("index 3"));
        assert!(validate_order(vec![0, 0], 3).unwrap_err().contains("twice"));
    }

    #[test]
    fn summary_reads_needs_and_limits() {
        let text = r#"{"model":"m","stream":true,"max_tokens":9,"tools":[],
            "response_format":{"type":"json_object"},
            "messages":[{"role":"user","content":"abcdefghijkl"}]}"#;
        let view: ChatRequestView = serde_json::from_str(text).unwrap();
        let hints = CallerHints {
            tags: vec!["t".into()],
            priority: Some(TaskPriority::High),
            caller: None,
            timeout: None,
            cache: Default::default(),
        };
        let s = summarize(&view, text, hints);
        assert_eq!(s.priority, TaskPriority::High);
        assert!(
            s.needs
                .contains(Capabilities::TOOLS | Capabilities::JSON_MODE)
        );
        assert!(s.stream && s.needs.contains(Capabilities::STREAMING));
        assert_eq!(s.max_output_tokens, Some(9));
        assert_eq!(s.input_tokens, 3, "14 bytes of JSON string / 4");
        assert_eq!(s.tags, vec!["t".to_string()]);
    }
}
