//! Gemini's wire format (`generateContent`, v1beta), as typed serde structs.
//!
//! Only the members the adapter writes or reads are named; serde skips the
//! rest of an answer (safety ratings, citations, model version, ...). The
//! request side borrows from the parsed canonical request and the answer side
//! from the upstream's bytes, so neither copies text that passes through, and
//! JSON the adapter does not interpret (tool arguments, tool results, JSON
//! Schemas) stays raw text ([`RawValue`]) instead of becoming a `Value` tree.
//!
//! Answers are read leniently: a member that is absent or `null` is simply not
//! there (`Option`), because Google omits default values (proto3 JSON) and an
//! answer cut short by a safety block or a length limit lacks whole objects.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::canonical::Arguments;

// ---------------------------------------------------------------- requests

/// `GenerateContentRequest`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    pub contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub generation_config: GenerationConfig<'a>,
}

/// The system prompt: text parts without a role.
#[derive(Debug, Serialize)]
pub struct SystemInstruction<'a> {
    pub parts: Vec<Part<'a>>,
}

/// One turn of the conversation.
#[derive(Debug, Serialize)]
pub struct Content<'a> {
    /// `user` or `model`.
    pub role: &'static str,
    pub parts: Vec<Part<'a>>,
}

/// One part of a turn; exactly one of Gemini's `data` members.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Part<'a> {
    Text {
        text: Cow<'a, str>,
    },
    InlineData {
        #[serde(rename = "inlineData")]
        inline_data: Blob<'a>,
    },
    FunctionCall {
        #[serde(rename = "functionCall")]
        function_call: FunctionCall<'a>,
        #[serde(rename = "thoughtSignature", skip_serializing_if = "Option::is_none")]
        thought_signature: Option<&'static str>,
    },
    FunctionResponse {
        #[serde(rename = "functionResponse")]
        function_response: FunctionResponse<'a>,
    },
}

/// Inline bytes: base64 `data` of media type `mimeType`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob<'a> {
    pub mime_type: &'a str,
    pub data: &'a str,
}

/// A call the model made earlier in the conversation.
#[derive(Debug, Serialize)]
pub struct FunctionCall<'a> {
    pub name: &'a str,
    /// A JSON object, as the caller sent it.
    pub args: Arguments<'a>,
}

/// The result of a call, for the model to read.
#[derive(Debug, Serialize)]
pub struct FunctionResponse<'a> {
    pub name: &'a str,
    pub response: ToolResult<'a>,
}

/// `functionResponse.response`, which must be a JSON object.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ToolResult<'a> {
    /// The tool's output was a JSON object: passed as is.
    Object(&'a RawValue),
    /// Same, joined from several text parts.
    OwnedObject(Box<RawValue>),
    /// Any other output, wrapped as `{"content": <text>}`.
    Wrapped { content: Cow<'a, str> },
}

/// A set of function declarations (one `Tool` holds them all).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool<'a> {
    pub function_declarations: Vec<FunctionDeclaration<'a>>,
}

/// One function the model may call.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// Full JSON Schema (see `request::options::tools` for why not `parameters`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<&'a Value>,
}

/// `toolConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig<'a> {
    pub function_calling_config: FunctionCallingConfig<'a>,
}

/// `toolConfig.functionCallingConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig<'a> {
    /// `AUTO`, `ANY` or `NONE`.
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_function_names: Vec<&'a str>,
}

/// `generationConfig`; omitted when every member is.
#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        *self == GenerationConfig::default()
    }
}

// ----------------------------------------------------------------- answers

/// `GenerateContentResponse`: a whole answer, or one event of a stream.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response<'a> {
    #[serde(borrow, default)]
    pub candidates: Option<Vec<Candidate<'a>>>,
    #[serde(borrow, default)]
    pub prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(borrow, default)]
    pub response_id: Option<Cow<'a, str>>,
    /// Not part of an answer: the error object a stream may end with.
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

/// One alternative answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate<'a> {
    #[serde(borrow, default)]
    pub content: Option<AnswerContent<'a>>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
    /// Omitted for candidate 0 (a proto3 default).
    #[serde(default)]
    pub index: Option<u32>,
}

/// What a candidate says. `parts` is missing when the model said nothing
/// (e.g. its thinking used up `maxOutputTokens`).
#[derive(Debug, Deserialize)]
pub struct AnswerContent<'a> {
    #[serde(borrow, default)]
    pub parts: Option<Vec<AnswerPart<'a>>>,
}

/// One part of an answer; members for other kinds of part (inline images,
/// executable code, ...) are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerPart<'a> {
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    /// A thought summary, not part of the answer.
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(borrow, default)]
    pub function_call: Option<AnswerCall<'a>>,
}

/// A call of one of the caller's functions, which arrives whole.
#[derive(Debug, Deserialize)]
pub struct AnswerCall<'a> {
    /// Set by some models; the adapter makes one up otherwise.
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// A JSON object; absent for a call without arguments.
    #[serde(borrow, default)]
    pub args: Option<&'a RawValue>,
}

/// Why the prompt itself was refused.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback<'a> {
    #[serde(borrow, default)]
    pub block_reason: Option<Cow<'a, str>>,
}

/// Token counts. Counts are 64-bit here so that an absurd value saturates
/// instead of failing the whole answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: Option<u64>,
    #[serde(default)]
    pub candidates_token_count: Option<u64>,
    #[serde(default)]
    pub thoughts_token_count: Option<u64>,
    #[serde(default)]
    pub cached_content_token_count: Option<u64>,
}

// Answers in the usual case, read without serde's derive.
mod read;
// The usual request, written without serde's serializer.
mod write;

pub use read::{Text, TextEvent, Usage};
