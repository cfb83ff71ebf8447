//! Structured output on every model. A request with `response_format`
//! `json_schema` (or `json_object`) gets JSON its schema accepts, or an
//! error naming why, whichever deployment serves it:
//!
//! - a deployment with native JSON mode (capability `json_mode`) is sent
//!   the request as is;
//! - one without is sent the request without `response_format`, with
//!   format instructions (the schema included) in a system message;
//! - either way the answer's JSON is found (the whole answer, a fenced
//!   block, or embedded in prose: [`extract`]), validated against the
//!   schema, and the answer's content replaced by that JSON alone;
//! - an answer that fails is sent back to the same deployment once, with
//!   its own answer and the validation errors, then the request fails
//!   over (class `invalid_output`).
//!
//! Streams are sent to native deployments only: a stream cannot be
//! checked before the client has it.

pub mod extract;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

/// Validation errors named in a reason, at most.
const MAX_ERRORS: usize = 3;

/// Compiled schemas kept, at most (an application usually sends a few).
const CACHED_SCHEMAS: usize = 256;

/// What the request asked for.
enum Format {
    Object,
    Schema {
        name: String,
        schema: Value,
        validator: Arc<jsonschema::Validator>,
    },
}

/// A request's structured-output handling, for all its attempts.
pub struct Plan {
    format: Format,
    /// The request as sent to a deployment without native JSON mode
    /// (built on first use).
    instructed: OnceLock<Arc<str>>,
    /// The correction request for the deployment whose answer just failed
    /// (taken by its next attempt).
    repair: Mutex<Option<Arc<str>>>,
}

/// Why a request's `response_format` cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("response_format.json_schema.schema is not a valid JSON Schema: {0}")]
    BadSchema(String),
    #[error("response_format.json_schema needs a `schema` object")]
    NoSchema,
}

impl Plan {
    /// The plan for `request` (a chat request's JSON): none without a
    /// `response_format` asking for JSON.
    pub fn for_request(request: &Value) -> Result<Option<Plan>, PlanError> {
        let Some(rf) = request.get("response_format") else {
            return Ok(None);
        };
        let format = match rf.get("type").and_then(Value::as_str) {
            Some("json_object") => Format::Object,
            Some("json_schema") => {
                let js = rf.get("json_schema").ok_or(PlanError::NoSchema)?;
                let schema = js
                    .get("schema")
                    .filter(|s| s.is_object() || s.is_boolean())
                    .ok_or(PlanError::NoSchema)?
                    .clone();
                Format::Schema {
                    name: js
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("response")
                        .to_string(),
                    validator: compiled(&schema)?,
                    schema,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(Plan {
            format,
            instructed: OnceLock::new(),
            repair: Mutex::new(None),
        }))
    }

    /// The request for a deployment without native JSON mode:
    /// `response_format` removed, the instructions first among the messages.
    pub fn instructed(&self, original: &str) -> Arc<str> {
        self.instructed
            .get_or_init(|| {
                let Ok(mut v) = serde_json::from_str::<Value>(original) else {
                    return Arc::from(original);
                };
                if let Some(o) = v.as_object_mut() {
                    o.remove("response_format");
                }
                let note = json!({"role": "system", "content": self.instructions()});
                if let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) {
                    messages.insert(0, note);
                }
                Arc::from(v.to_string())
            })
            .clone()
    }

    fn instructions(&self) -> String {
        match &self.format {
            Format::Object => "Reply with one JSON object and nothing else: no prose before or \
                after it, no explanations, no code fences."
                .to_string(),
            Format::Schema { name, schema, .. } => format!(
                "Reply with one JSON value that conforms to the JSON Schema below \
                 (\"{name}\"), and nothing else: no prose before or after it, no explanations, \
                 no code fences.\nJSON Schema:\n{schema}"
            ),
        }
    }

    /// Checks a canonical (OpenAI-shaped) answer body: `Ok(None)` when it is
    /// fine as it is, `Ok(Some(body))` with the content replaced by the JSON
    /// found in it, `Err(reason)` when it holds no valid JSON. The answer
    /// that called tools instead is left alone (the caller runs them).
    pub fn check(&self, body: &str) -> Result<Option<String>, Failed> {
        let mut v: Value = serde_json::from_str(body)
            .map_err(|e| Failed::new(format!("the answer is not JSON: {e}"), None))?;
        let message = &v["choices"][0]["message"];
        if message["tool_calls"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
        {
            return Ok(None);
        }
        // The model declined (OpenAI's `refusal`): that is the answer, not
        // a malformed one to correct.
        if message["refusal"].as_str().is_some_and(|r| !r.is_empty()) {
            return Ok(None);
        }
        let Some(content) = message["content"].as_str() else {
            return Err(Failed::new("the answer has no content".to_string(), None));
        };
        let bad = |why: String| Failed::new(why, Some(content.to_string()));
        // The first JSON of the asked shape: a model may quote an example
        // before its answer.
        let mut first_reason = None;
        let mut chosen = None;
        for found in extract::candidates(content) {
            match self.fits(found) {
                Ok(()) => {
                    chosen = Some(found);
                    break;
                }
                Err(why) => {
                    first_reason.get_or_insert(why);
                }
            }
        }
        let Some(found) = chosen else {
            return Err(bad(
                first_reason.unwrap_or_else(|| "the answer holds no JSON".to_string())
            ));
        };
        if found == content {
            return Ok(None);
        }
        v["choices"][0]["message"]["content"] = Value::String(found.to_string());
        Ok(Some(v.to_string()))
    }

    /// Whether `found` (JSON text) is what was asked for; why not.
    fn fits(&self, found: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(found).map_err(|e| e.to_string())?;
        match &self.format {
            Format::Object if !value.is_object() => {
                Err("the answer's JSON is not an object".to_string())
            }
            Format::Object => Ok(()),
            Format::Schema { validator, .. } => {
                let errors: Vec<String> = validator
                    .iter_errors(&value)
                    .take(MAX_ERRORS)
                    .map(|e| {
                        let at = e.instance_path().to_string();
                        format!("at {}: {e}", if at.is_empty() { "/" } else { &at })
                    })
                    .collect();
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "the answer's JSON does not match the schema: {}",
                        errors.join("; ")
                    ))
                }
            }
        }
    }

    /// Keeps the correction request for the same deployment's next attempt:
    /// `sent` (the request it answered) with its answer and what was wrong.
    pub fn prepare_repair(&self, sent: &str, failed: &Failed) {
        let Ok(mut v) = serde_json::from_str::<Value>(sent) else {
            return;
        };
        let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) else {
            return;
        };
        messages.push(
            json!({"role": "assistant", "content": failed.answer.clone().unwrap_or_default()}),
        );
        messages.push(json!({"role": "user", "content": format!(
            "That reply is not usable: {}. Reply again with only the corrected JSON, nothing else.",
            failed.reason
        )}));
        *self.repair.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(v.to_string()));
    }

    /// The pending correction request, if any (once).
    pub fn take_repair(&self) -> Option<Arc<str>> {
        self.repair.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// An answer that is not the JSON asked for.
#[derive(Debug, Clone)]
pub struct Failed {
    pub reason: String,
    /// The answer's content, for the correction request.
    pub answer: Option<String>,
}

impl Failed {
    fn new(reason: String, answer: Option<String>) -> Self {
        Self { reason, answer }
    }
}

/// The schema compiled, from a small cache keyed by its text.
fn compiled(schema: &Value) -> Result<Arc<jsonschema::Validator>, PlanError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let key = schema.to_string();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(v) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(v.clone());
    }
    let v = Arc::new(
        jsonschema::validator_for(schema).map_err(|e| PlanError::BadSchema(e.to_string()))?,
    );
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CACHED_SCHEMAS {
        cache.clear();
    }
    cache.insert(key, v.clone());
    Ok(v)
}

#[cfg(test)]
mod tests;
