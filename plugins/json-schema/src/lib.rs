//! Checks structured output: when the request's `response_format` asks for
//! JSON, the answer's content must be JSON of the asked shape. Providers
//! that do not enforce schemas (or enforce them loosely) return prose, a
//! fenced block or a wrong field type with a 200; failing the answer lets
//! the router try a deployment that gets it right.
//!
//! - `json_schema` with a schema: the content must parse as JSON and be
//!   valid against the schema (the subset of JSON Schema 2020-12 in
//!   `schema.rs`); each reason names the failing JSON pointer and keyword,
//!   e.g. `/temp_c: expected number, got string`.
//! - `json_schema` without a schema: any JSON.
//! - `json_object`: a JSON object.
//! - anything else (no `response_format`, `text`): passes unread.
//!
//! Content wrapped in a Markdown code fence (```` ```json ... ``` ````) fails
//! with "wrapped in a code fence": clients parse the content as it is.
//! Config `{"allow_fenced": true}` accepts it, checking the JSON inside.
//! A choice that calls tools instead of answering has nothing to check.
//! A failing answer scores 0; a valid one 1.
//!
//! `Err` (the host fails open) when the request or the answer cannot be
//! read, or the schema cannot be applied (a `$ref` outside the schema, a
//! schema too complex to check in bounded time).
//!
//! Why not the `jsonschema` crate: it needs `getrandom`, which on the
//! plugins' `wasm32-unknown-unknown` build pulls in `wasm-bindgen`, and
//! the module then imports JavaScript glue and cannot become a component.

mod answer;
mod instance;
mod keywords;
mod schema;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;
use switchyard_sdk::{Evaluator, Metadata, Verdict, export_evaluator, log, plugin_config};

use crate::answer::{Answer, Message, Wanted};
use crate::instance::Json;
use crate::schema::Unjudgeable;

struct JsonSchema;

impl Evaluator for JsonSchema {
    fn metadata() -> Metadata {
        Metadata::new("json-schema", env!("CARGO_PKG_VERSION"), &[])
    }

    fn evaluate(request: &str, response: &str) -> Result<Verdict, String> {
        evaluate(config(), request, response)
    }
}

export_evaluator!(JsonSchema);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// This instance's config, read on its first call only (the host replaces
/// instances when the config changes). A bad block is reported once and
/// replaced by the defaults rather than failing every answer.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::parse(&plugin_config()).unwrap_or_else(|e| {
            log::warn(&format!(
                "json-schema: invalid config ({e}); using the defaults"
            ));
            Config::default()
        })
    })
}

/// The plugin's config block; unknown keys are refused so that a misspelt
/// one is reported instead of ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Accept content wrapped in one Markdown code fence.
    allow_fenced: bool,
}

impl Config {
    fn parse(json: &str) -> Result<Self, String> {
        // Only an object: serde would also read a struct from an array.
        let object: serde_json::Map<String, Value> =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())
    }
}

/// The verdict on every choice: a fail if any choice fails.
fn evaluate(config: &Config, request: &str, response: &str) -> Result<Verdict, String> {
    let wanted = Wanted::read(request)?;
    if wanted == Wanted::Anything {
        return Ok(Verdict::pass());
    }
    let answer = Answer::parse(response)?;
    let several = answer.choices.len() > 1;
    let mut reasons = Vec::new();
    for (i, choice) in answer.choices.iter().enumerate() {
        let problems = match &choice.message {
            Some(m) => check(config, &wanted, m)?,
            None => vec!["no message".to_string()],
        };
        let prefix = |p: String| {
            if several {
                format!("choice {i}: {p}")
            } else {
                p
            }
        };
        reasons.extend(problems.into_iter().map(prefix));
    }
    Ok(if reasons.is_empty() {
        Verdict::pass()
    } else {
        Verdict {
            score: 0.0,
            pass: false,
            reasons,
        }
    })
}

/// The problems of one message's content; `Err` when it cannot be judged.
fn check(config: &Config, wanted: &Wanted, message: &Message) -> Result<Vec<String>, String> {
    let content = message.content.as_ref().map_or("", |c| c.0.trim());
    if content.is_empty() {
        return Ok(
            if let Some(r) = message.refusal.as_ref().filter(|r| !r.0.trim().is_empty()) {
                vec![format!(
                    "refused instead of answering in JSON: {:?}",
                    head(&r.0)
                )]
            } else if message.calls_tools() {
                Vec::new()
            } else {
                vec!["no content (JSON was asked for)".to_string()]
            },
        );
    }
    let json = match unfence(content) {
        Some(_) if !config.allow_fenced => {
            return Ok(vec!["content is wrapped in a code fence".to_string()]);
        }
        Some(inner) => inner,
        None => content,
    };
    let value: Json = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => return Ok(vec![format!("content is not valid JSON: {e}")]),
    };
    match wanted {
        Wanted::Object if !value.is_object() => Ok(vec![format!(
            "(root): expected object, got {}",
            keywords::kind(&value)
        )]),
        Wanted::Schema(Some(schema)) => schema::validate(schema, &value).map_err(|e| match e {
            Unjudgeable::Ref(r) => {
                format!("schema $ref {r:?} cannot be followed (only pointers into the schema are)")
            }
            Unjudgeable::TooComplex => "schema is too deep or too complex to check".to_string(),
        }),
        _ => Ok(Vec::new()),
    }
}

/// The inside of a content that is one fenced code block (```` ```json ````
/// or any info string; a missing closing fence is tolerated: the JSON
/// parse judges what is left).
fn unfence(content: &str) -> Option<&str> {
    let rest = content.strip_prefix("```")?;
    let (info, body) = rest.split_once('\n').unwrap_or((rest, ""));
    if info.contains('`') {
        return None;
    }
    let body = body.trim_end();
    Some(body.strip_suffix("```").unwrap_or(body))
}

/// The first 80 characters of `text`.
fn head(text: &str) -> &str {
    text.char_indices()
        .nth(80)
        .map_or(text, |(i, _)| &text[..i])
}
