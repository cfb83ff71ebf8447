//! The keywords of one schema object, gathered in one pass over its members,
//! and the JSON helpers the checks share.
//!
//! Gathering first costs one walk of a handful of members; looking up every
//! supported keyword by name instead would search the member map some 25
//! times for each value checked.

use serde_json::{Map, Value};

use crate::instance::Json;

/// The supported keywords a schema object has (see `schema.rs`).
#[derive(Default)]
pub struct Keywords<'s> {
    pub reference: Option<&'s str>,
    pub types: Option<&'s Value>,
    /// `types` as [`type_bit`]s: what [`type_ok`] says, without comparing
    /// names for every value checked.
    pub type_mask: u8,
    pub nullable: bool,
    pub enumeration: Option<&'s [Value]>,
    pub constant: Option<&'s Value>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    /// Draft-4 style: `minimum` / `maximum` themselves exclusive.
    pub exclusive_flags: (bool, bool),
    pub exclusive_minimum: Option<f64>,
    pub exclusive_maximum: Option<f64>,
    pub multiple_of: Option<f64>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub min_items: Option<usize>,
    pub max_items: Option<usize>,
    pub unique_items: bool,
    pub prefix_items: Option<&'s [Value]>,
    /// `items` as one schema (2020-12), or as a tuple (draft 7).
    pub items: Option<&'s Value>,
    pub additional_items: Option<&'s Value>,
    pub min_properties: Option<usize>,
    pub max_properties: Option<usize>,
    pub required: Option<&'s [Value]>,
    pub properties: Option<&'s Map<String, Value>>,
    pub additional_properties: Option<&'s Value>,
    pub pattern_properties: bool,
    pub all_of: Option<&'s [Value]>,
    pub any_of: Option<&'s [Value]>,
    pub one_of: Option<&'s [Value]>,
    pub not: Option<&'s Value>,
}

impl<'s> Keywords<'s> {
    /// A keyword whose value has the wrong form is left out (ignored).
    pub fn of(schema: &'s Map<String, Value>) -> Self {
        let mut k = Keywords::default();
        let list = |v: &'s Value| v.as_array().map(Vec::as_slice);
        let count = |v: &'s Value| v.as_u64().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        for (key, v) in schema {
            match key.as_str() {
                "$ref" => k.reference = v.as_str(),
                "type" => {
                    k.types = Some(v);
                    k.type_mask = type_mask(v);
                }
                "nullable" => k.nullable = v == &Value::Bool(true),
                "enum" => k.enumeration = list(v),
                "const" => k.constant = Some(v),
                "minimum" => k.minimum = v.as_f64(),
                "maximum" => k.maximum = v.as_f64(),
                "exclusiveMinimum" => match v {
                    Value::Bool(b) => k.exclusive_flags.0 = *b,
                    v => k.exclusive_minimum = v.as_f64(),
                },
                "exclusiveMaximum" => match v {
                    Value::Bool(b) => k.exclusive_flags.1 = *b,
                    v => k.exclusive_maximum = v.as_f64(),
                },
                "multipleOf" => k.multiple_of = v.as_f64().filter(|d| *d > 0.0),
                "minLength" => k.min_length = count(v),
                "maxLength" => k.max_length = count(v),
                "minItems" => k.min_items = count(v),
                "maxItems" => k.max_items = count(v),
                "uniqueItems" => k.unique_items = v == &Value::Bool(true),
                "prefixItems" => k.prefix_items = list(v),
                "items" => k.items = Some(v),
                "additionalItems" => k.additional_items = Some(v),
                "minProperties" => k.min_properties = count(v),
                "maxProperties" => k.max_properties = count(v),
                "required" => k.required = list(v),
                "properties" => k.properties = v.as_object(),
                "additionalProperties" => k.additional_properties = Some(v),
                "patternProperties" => k.pattern_properties = true,
                "allOf" => k.all_of = list(v),
                "anyOf" => k.any_of = list(v),
                "oneOf" => k.one_of = list(v),
                "not" => k.not = Some(v),
                _ => {}
            }
        }
        k
    }
}

/// Whether `v` has one of the types `t` names. Names this subset does not
/// know (a malformed schema) match anything.
pub fn type_ok(t: &Value, v: &Json) -> bool {
    let is = |name: &Value| match name.as_str() {
        Some("integer") => matches!(v, Json::Number(n)
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)),
        Some("number") => matches!(v, Json::Number(_)),
        Some(known @ ("null" | "boolean" | "string" | "array" | "object")) => known == kind(v),
        _ => true,
    };
    match t {
        Value::Array(names) => names.is_empty() || names.iter().any(is),
        name => is(name),
    }
}

/// One bit per JSON type; a number without a fraction also has
/// [`INTEGER`].
pub fn type_bit(v: &Json) -> u8 {
    match v {
        Json::Null => 1,
        Json::Bool(_) => 2,
        Json::String(_) => 4,
        Json::Array(_) => 8,
        Json::Object(_) => 16,
        Json::Number(n)
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) =>
        {
            NUMBER | INTEGER
        }
        Json::Number(_) => NUMBER,
    }
}

const NUMBER: u8 = 32;
const INTEGER: u8 = 64;

/// The [`type_bit`]s of the values `t` admits, as [`type_ok`] decides.
fn type_mask(t: &Value) -> u8 {
    let bit = |name: &Value| match name.as_str() {
        Some("null") => 1,
        Some("boolean") => 2,
        Some("string") => 4,
        Some("array") => 8,
        Some("object") => 16,
        Some("number") => NUMBER,
        Some("integer") => INTEGER,
        _ => u8::MAX,
    };
    match t {
        Value::Array(names) if names.is_empty() => u8::MAX,
        Value::Array(names) => names.iter().fold(0, |m, n| m | bit(n)),
        name => bit(name),
    }
}

/// `t` for a reason: `number`, `string or null`.
pub fn type_names(t: &Value) -> String {
    match t {
        Value::Array(names) => {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            names.join(" or ")
        }
        name => name.as_str().unwrap_or("?").to_string(),
    }
}

/// The JSON type of `v`, as `type` names it (`integer` is a `number`).
pub fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// JSON equality, numbers by value (1 and 1.0 are equal, as the spec says).
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x
                .as_u64()
                .zip(y.as_u64())
                .map_or_else(|| x.as_f64() == y.as_f64(), |(x, y)| x == y),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// `v` as JSON, cut at 60 characters: enough to recognise in a reason.
pub fn short(v: &(impl serde::Serialize + ?Sized)) -> String {
    let text = serde_json::to_string(v).unwrap_or_default();
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn type_masks_agree_with_type_ok() {
        let types = [
            json!("null"),
            json!("boolean"),
            json!("string"),
            json!("array"),
            json!("object"),
            json!("number"),
            json!("integer"),
            json!("date"),
            json!(7),
            json!([]),
            json!(["string", "null"]),
            json!(["integer", "boolean"]),
            json!(["number", 3]),
        ];
        let values = [
            "null",
            "true",
            "\"x\"",
            "[1]",
            "{}",
            "1",
            "-1",
            "1.0",
            "1.5",
            "1e300",
            "18446744073709551615",
        ];
        for t in &types {
            for text in values {
                let v: Json = serde_json::from_str(text).unwrap();
                assert_eq!(
                    type_mask(t) & type_bit(&v) != 0,
                    type_ok(t, &v),
                    "{t} {text}"
                );
            }
        }
    }
}
