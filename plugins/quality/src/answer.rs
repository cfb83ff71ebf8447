//! The parts of the canonical request and answer the scores read, borrowed
//! from the JSON text: the rest (ids, usage, logprobs, earlier messages'
//! contents) is skipped, not built into values.

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
    /// Raw: checked by [`tool_calls`], which names what is malformed.
    #[serde(default, borrow)]
    pub tool_calls: Option<&'a RawValue>,
}

impl<'a> Answer<'a> {
    /// Reads `response`; an error means the evaluator cannot judge it
    /// (structure is the `basic` evaluator's business, not quality's).
    pub fn parse(response: &'a str) -> Result<Self, String> {
        let answer: Self = serde_json::from_str(response)
            .map_err(|e| format!("response is not a chat completion: {e}"))?;
        if answer.choices.is_empty() {
            return Err("response has no choices".into());
        }
        Ok(answer)
    }
}

/// How many tool calls `raw` holds, or why they are malformed: not a list,
/// a call without a function name, or arguments that are not a JSON object
/// (empty arguments read as `{}`, as the SDK does).
pub fn tool_calls(raw: Option<&RawValue>) -> Result<usize, String> {
    #[derive(Deserialize)]
    struct Call<'a> {
        #[serde(default, borrow)]
        function: Option<Function<'a>>,
    }
    #[derive(Deserialize)]
    struct Function<'a> {
        #[serde(default, borrow)]
        name: Option<Text<'a>>,
        #[serde(default, borrow)]
        arguments: Option<Text<'a>>,
    }
    let Some(raw) = raw else { return Ok(0) };
    let calls: Vec<Call> = serde_json::from_str(raw.get())
        .map_err(|e| format!("tool_calls is not a list of calls: {e}"))?;
    for (i, call) in calls.iter().enumerate() {
        let Some(function) = &call.function else {
            return Err(format!("tool call {i} has no function"));
        };
        if function.name.as_ref().is_none_or(|n| n.0.trim().is_empty()) {
            return Err(format!("tool call {i} has no function name"));
        }
        let args = function.arguments.as_ref().map_or("", |a| a.0.trim());
        if !args.is_empty() {
            if let Err(e) = serde_json::from_str::<IgnoredAny>(args) {
                return Err(format!("tool call {i}: arguments are not valid JSON: {e}"));
            }
            if !args.starts_with('{') {
                return Err(format!("tool call {i}: arguments are not a JSON object"));
            }
        }
    }
    Ok(calls.len())
}

/// The text of the request's last user message (text parts joined by a
/// newline); `None` when the request cannot be read or has none. Only the
/// last user message is what the answer answers.
pub fn prompt(request: &str) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(default, borrow)]
        messages: Vec<Msg<'a>>,
    }
    #[derive(Deserialize)]
    struct Msg<'a> {
        #[serde(default, borrow)]
        role: Option<Text<'a>>,
        #[serde(default, borrow)]
        content: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(default, borrow)]
        text: Option<Text<'a>>,
    }
    let request: Request = serde_json::from_str(request).ok()?;
    let last = request
        .messages
        .into_iter()
        .rev()
        .find(|m| m.role.as_ref().is_some_and(|r| r.0 == "user"))?;
    let content = last.content?.get();
    if content.starts_with('"') {
        return serde_json::from_str::<Text>(content).ok().map(|t| t.0);
    }
    let parts: Vec<Part> = serde_json::from_str(content).ok()?;
    let mut text = String::new();
    for t in parts.iter().filter_map(|p| p.text.as_ref()) {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&t.0);
    }
    Some(Cow::Owned(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_user_message_is_the_prompt() {
        let req = r#"{"messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":"first"},{"role":"assistant","content":"ok"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"},
            {"type":"text","text":"b\"c"}]},{"role":"tool","content":"result"}]}"#;
        assert_eq!(prompt(req).as_deref(), Some("a\nb\"c"));
        assert!(matches!(
            prompt(r#"{"messages":[{"role":"user","content":"hi"}]}"#),
            Some(Cow::Borrowed("hi"))
        ));
        for odd in ["", "nope", "[]", "{}", r#"{"messages":[{"role":"user"}]}"#] {
            assert_eq!(prompt(odd), None, "{odd}");
        }
    }

    #[test]
    fn malformed_tool_calls_are_named() {
        let check = |json: &str| tool_calls(Some(&*RawValue::from_string(json.into()).unwrap()));
        assert_eq!(check("[]"), Ok(0));
        assert_eq!(tool_calls(None), Ok(0));
        let ok = r#"[{"id":"1","function":{"name":"f","arguments":"{\"a\":1}"}},
            {"function":{"name":"g","arguments":""}}]"#;
        assert_eq!(check(ok), Ok(2));
        for (bad, why) in [
            ("{}", "not a list"),
            (r#"[{"id":"1"}]"#, "no function"),
            (r#"[{"function":{"arguments":"{}"}}]"#, "no function name"),
            (
                r#"[{"function":{"name":"f","arguments":"{\"a\":"}}]"#,
                "not valid JSON",
            ),
            (
                r#"[{"function":{"name":"f","arguments":"[1]"}}]"#,
                "not a JSON object",
            ),
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
