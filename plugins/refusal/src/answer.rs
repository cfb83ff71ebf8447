//! The parts of a canonical answer the checks read, borrowed from the JSON
//! text: the rest (ids, usage, logprobs) is skipped, not built into values.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// A JSON string, borrowed when it has no escapes. (A newtype because serde
/// borrows a `Cow<str>` only when it is a field of its own, not inside an
/// `Option`.)
#[derive(Deserialize)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// A `chat.completion`.
#[derive(Deserialize)]
pub struct Answer<'a> {
    #[serde(borrow)]
    pub choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
pub struct Choice<'a> {
    #[serde(default, borrow)]
    pub finish_reason: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub message: Option<Message<'a>>,
}

#[derive(Deserialize)]
pub struct Message<'a> {
    #[serde(default, borrow)]
    pub content: Option<Text<'a>>,
    /// OpenAI's structured-output refusal: set instead of the content.
    #[serde(default, borrow)]
    pub refusal: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<&'a RawValue>,
}

impl<'a> Answer<'a> {
    /// Reads `response`; an error means the evaluator cannot judge it
    /// (structure is the `basic` evaluator's business).
    pub fn parse(response: &'a str) -> Result<Self, String> {
        let answer: Self = serde_json::from_str(response)
            .map_err(|e| format!("response is not a chat completion: {e}"))?;
        if answer.choices.is_empty() {
            return Err("response has no choices".into());
        }
        Ok(answer)
    }
}

impl Message<'_> {
    pub fn content(&self) -> &str {
        self.content.as_ref().map_or("", |c| &c.0)
    }

    /// Whether the message calls at least one tool: empty text with a tool
    /// call is an action, not an evasion.
    pub fn calls_tools(&self) -> bool {
        self.tool_calls.is_some_and(|raw| {
            serde_json::from_str::<Vec<IgnoredAny>>(raw.get()).is_ok_and(|calls| !calls.is_empty())
        })
    }
}
