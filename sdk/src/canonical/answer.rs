//! The canonical non-streamed answer (`chat.completion`) and its usage.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::Usage;

use super::{ToolCall, write};

/// A canonical non-streamed answer (`chat.completion`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The deployment's name.
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
}

impl ChatCompletion {
    /// An answer with one choice.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        choice: Choice,
    ) -> Self {
        ChatCompletion {
            id: id.into(),
            object: String::from("chat.completion"),
            created,
            model: model.into(),
            choices: alloc::vec![choice],
            usage: None,
        }
    }

    /// The answer as JSON text: the same text `serde_json` writes, written
    /// directly ([`write`]), since every non-streamed answer pays for it.
    pub fn to_json(&self) -> String {
        write::completion(self)
    }
}

/// One alternative answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    pub finish_reason: Option<String>,
    /// Always present (null) so clients that index it find it.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// The caller's stop sequence that ended the answer, when the provider
    /// says which (Anthropic does): an extra member OpenAI clients ignore,
    /// which `/v1/messages` answers as `stop_reason: "stop_sequence"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
}

/// What the model wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The text; null when the answer is tool calls only.
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl AssistantMessage {
    /// An assistant message with `content` and `tool_calls` (`None` when empty).
    pub fn new(content: Option<String>, tool_calls: Vec<ToolCall>) -> Self {
        AssistantMessage {
            role: String::from("assistant"),
            content,
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            refusal: None,
        }
    }
}

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u32,
    /// Prompt tokens written to the provider's prompt cache (Anthropic
    /// counts and bills them apart): an extra member OpenAI clients ignore,
    /// which `/v1/messages` answers as `cache_creation_input_tokens`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_creation_tokens: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u32,
}

impl From<Usage> for CompletionUsage {
    fn from(u: Usage) -> Self {
        CompletionUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
            prompt_tokens_details: (u.cached_prompt_tokens > 0 || u.cache_write_tokens > 0)
                .then_some(PromptTokensDetails {
                    cached_tokens: u.cached_prompt_tokens,
                    cache_creation_tokens: u.cache_write_tokens,
                }),
            completion_tokens_details: (u.reasoning_tokens > 0).then_some(
                CompletionTokensDetails {
                    reasoning_tokens: u.reasoning_tokens,
                },
            ),
        }
    }
}

impl From<CompletionUsage> for Usage {
    fn from(u: CompletionUsage) -> Self {
        let details = u.prompt_tokens_details.unwrap_or_default();
        Usage::new(u.prompt_tokens, u.completion_tokens)
            .with_cached_prompt_tokens(details.cached_tokens)
            .with_cache_write_tokens(details.cache_creation_tokens)
            .with_reasoning_tokens(
                u.completion_tokens_details
                    .map_or(0, |d| d.reasoning_tokens),
            )
    }
}
