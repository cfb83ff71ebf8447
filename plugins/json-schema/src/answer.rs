//! The parts of the canonical request and answer the check reads, borrowed
//! from the JSON text: the rest (messages, ids, usage) is skipped, not built
//! into values.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::canonical::JsonSchema;

/// A JSON string, borrowed when it has no escapes. (A newtype because serde
/// borrows a `Cow<str>` only when it is a field of its own, not inside an
/// `Option`.)
#[derive(Deserialize)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// What the request asked the content to be.
#[derive(Debug, PartialEq)]
pub enum Wanted {
    /// No JSON asked for (no `response_format`, `text`, or a type this
    /// evaluator does not know): nothing to check.
    Anything,
    /// `json_object`: a JSON object.
    Object,
    /// `json_schema`: JSON valid against the schema (any JSON without one).
    Schema(Option<Rc<Value>>),
}

impl Wanted {
    /// Reads the request's `response_format` only (the schema with the
    /// SDK's canonical type). An error means the evaluator cannot judge.
    pub fn read(request: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Request<'a> {
            #[serde(default, borrow)]
            response_format: Option<Format<'a>>,
        }
        #[derive(Deserialize)]
        struct Format<'a> {
            #[serde(rename = "type", default, borrow)]
            kind: Option<Text<'a>>,
            #[serde(default, borrow)]
            json_schema: Option<&'a RawValue>,
        }
        let request: Request = serde_json::from_str(request)
            .map_err(|e| format!("request is not a chat request: {e}"))?;
        let Some(format) = request.response_format else {
            return Ok(Wanted::Anything);
        };
        match format.kind.as_ref().map(|k| &*k.0) {
            Some("json_object") => Ok(Wanted::Object),
            Some("json_schema") => {
                let raw = format.json_schema.map_or("null", RawValue::get);
                schema(raw).map(Wanted::Schema)
            }
            _ => Ok(Wanted::Anything),
        }
    }
}

/// The schema of `response_format.json_schema` (`raw`, as written). The
/// last one read is kept with its text: an application sends the same
/// schema request after request, and reading it into a `Value` costs as
/// much as checking the answer. Comparing the text is exact (no hash to
/// collide) and cheap next to parsing it.
fn schema(raw: &str) -> Result<Option<Rc<Value>>, String> {
    thread_local! {
        static LAST: RefCell<Option<(String, Option<Rc<Value>>)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((text, schema)) = last.as_ref()
            && same(text.as_bytes(), raw.as_bytes())
        {
            return Ok(schema.clone());
        }
        let schema = serde_json::from_str::<JsonSchema>(raw)
            .map_err(|e| format!("response_format.json_schema is not valid: {e}"))?
            .schema
            .map(Rc::new);
        *last = Some((raw.to_owned(), schema.clone()));
        Ok(schema)
    })
}

/// A `chat.completion`.
#[derive(Deserialize)]
pub struct Answer<'a> {
    #[serde(borrow)]
    pub choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
pub struct Choice<'a> {
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
    /// Whether the message calls at least one tool: then the model acted
    /// instead of answering, and there is no content to check.
    pub fn calls_tools(&self) -> bool {
        self.tool_calls.is_some_and(|raw| {
            serde_json::from_str::<Vec<IgnoredAny>>(raw.get()).is_ok_and(|calls| !calls.is_empty())
        })
    }
}

/// `a == b`, eight bytes at a step: the wasm build's `memcmp` compares
/// one byte at a time, and a schema is hundreds of bytes.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (x, y) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails = x.remainder() == y.remainder();
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or_default());
    tails && x.zip(y).all(|(x, y)| word(x) == word(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_is_equality() {
        let text = b"0123456789abcdefghijklmnopqrstuvwxyz";
        for n in 0..text.len() {
            assert!(same(&text[..n], &text[..n]));
            assert!(!same(&text[..n], &text[..n + 1]));
            let mut other = text[..n + 1].to_vec();
            other[n] = b'!';
            assert!(!same(&text[..n + 1], &other), "{n}");
        }
    }

    #[test]
    fn the_last_schema_is_reused_only_for_the_same_text() {
        let read = |raw: &str| match Wanted::read(&format!(
            r#"{{"response_format": {{"type": "json_schema", "json_schema": {raw}}}}}"#
        )) {
            Ok(Wanted::Schema(s)) => Ok(s),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let a = read(r#"{"name": "a", "schema": {"type": "object"}}"#).unwrap();
        let again = read(r#"{"name": "a", "schema": {"type": "object"}}"#).unwrap();
        assert!(Rc::ptr_eq(a.as_ref().unwrap(), again.as_ref().unwrap()));
        let b = read(r#"{"name": "a", "schema": {"type": "array"}}"#).unwrap();
        assert_eq!(b.as_deref(), Some(&serde_json::json!({"type": "array"})));
        assert_eq!(read(r#"{"name": "a"}"#), Ok(None));
        assert!(read(r#"{"schema": {}}"#).is_err(), "a name is required");
        assert!(read("null").is_err());
        let c = read(r#"{"name": "a", "schema": {"type": "object"}}"#).unwrap();
        assert_eq!(c, a);
    }
}
