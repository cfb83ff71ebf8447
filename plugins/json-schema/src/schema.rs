//! A subset of JSON Schema 2020-12: what structured-output schemas use.
//!
//! Supported: boolean schemas; `type` (a name or a list of names, `integer`
//! being any number without a fraction, `null` in the list for nullable;
//! OpenAPI's `nullable: true` is honoured too); `enum`, `const` (numbers
//! compare by value: 1 equals 1.0); `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum` (numbers, or draft-4 booleans),
//! `multipleOf`; `minLength`, `maxLength` (in characters); `items`,
//! `prefixItems` (and draft-7 tuple `items` with `additionalItems`),
//! `minItems`, `maxItems`, `uniqueItems`; `properties`, `required`,
//! `additionalProperties` (a boolean or a schema), `minProperties`,
//! `maxProperties`; `allOf`, `anyOf`, `oneOf`, `not`; `$ref` to a JSON
//! pointer inside the schema (`#`, `#/$defs/...`, `#/definitions/...`).
//!
//! Every other keyword (`pattern`, `format`, `patternProperties`,
//! `if`/`then`/`else`, `dependent*`, `unevaluated*`, ...) is ignored, as is
//! a keyword whose value is malformed: a check this evaluator cannot make
//! passes rather than fails an answer that may be right. With
//! `patternProperties` present, `additionalProperties` is not checked either
//! (which names it covers needs the patterns).
//!
//! After a `type` mismatch the other keywords of that schema are skipped:
//! they would only repeat the problem. A `$ref` that is not a pointer into
//! the schema, or a schema that takes too many steps, is an error (the
//! evaluator cannot judge), not a failed answer.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write;

use serde_json::{Map, Value};

use crate::instance::{Json, has_member, sorted_maps};
use crate::keywords::{Keywords, equal, kind, short, type_bit, type_names, type_ok};

/// Reasons kept per answer; the count of the rest is reported.
const MAX_REASONS: usize = 8;
/// Nesting of schemas (through `$ref`s too) before giving up: data nests
/// 128 deep at most (serde_json's limit), so only a `$ref` cycle that never
/// descends into the data gets this far.
const MAX_DEPTH: usize = 300;
/// Schema checks per answer before giving up: `anyOf` inside `anyOf` can
/// otherwise take exponential time.
const MAX_STEPS: usize = 100_000;

/// Why the answer cannot be judged against the schema.
#[derive(Debug, PartialEq)]
pub enum Unjudgeable {
    /// A `$ref` this subset cannot follow.
    Ref(String),
    /// Too deep or too many steps.
    TooComplex,
}

/// The problems of `value` against `schema` (empty: valid), at most
/// [`MAX_REASONS`] and a count of the rest, each `<pointer>: <problem>`.
pub fn validate(schema: &Value, value: &Json) -> Result<Vec<String>, Unjudgeable> {
    let mut v = Validator {
        root: schema,
        reasons: Vec::new(),
        total: 0,
        steps: 0,
        path: Vec::new(),
        known: &known(schema),
    };
    v.check(schema, value, 0)?;
    let mut reasons = v.reasons;
    if v.total > reasons.len() {
        reasons.push(format!("and {} more", v.total - reasons.len()));
    }
    Ok(reasons)
}

/// One step of a JSON pointer: kept as a reference and written out only
/// when a problem is reported (valid answers are the common case).
#[derive(Clone, Copy)]
enum Step<'v> {
    Key(&'v str),
    Index(usize),
}

struct Validator<'s, 'v, 'k> {
    root: &'s Value,
    reasons: Vec<String>,
    total: usize,
    steps: usize,
    /// Where the value being checked is.
    path: Vec<Step<'v>>,
    /// The keywords of the schema's objects, by address (see [`known`]).
    known: &'k [(*const Map<String, Value>, Keywords<'s>)],
}

/// Schema objects whose keywords are gathered before the check: a
/// structured-output schema has a few dozen, and a search past this many
/// would cost more than it saves.
const KNOWN: usize = 32;

/// The keywords of the first [`KNOWN`] objects in `schema` (not all of
/// them schemas: `properties` is a map of them; that costs a little and
/// is simpler than knowing every keyword that holds a schema). The schema
/// of an array's items is met once per item; gathering its keywords once
/// per answer instead saves most of the check.
fn known(schema: &Value) -> Vec<(*const Map<String, Value>, Keywords<'_>)> {
    fn walk<'s>(v: &'s Value, out: &mut Vec<(*const Map<String, Value>, Keywords<'s>)>) {
        if out.len() >= KNOWN {
            return;
        }
        match v {
            Value::Object(m) => {
                out.push((m, Keywords::of(m)));
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(schema, &mut out);
    out
}

impl<'s, 'v, 'k> Validator<'s, 'v, 'k> {
    fn fail(&mut self, problem: std::fmt::Arguments) {
        self.total += 1;
        if self.reasons.len() < MAX_REASONS {
            let mut reason = String::new();
            for step in &self.path {
                let _ = match step {
                    Step::Key(k) => write!(reason, "/{}", k.replace('~', "~0").replace('/', "~1")),
                    Step::Index(i) => write!(reason, "/{i}"),
                };
            }
            if reason.is_empty() {
                reason.push_str("(root)");
            }
            let _ = write!(reason, ": {problem}");
            self.reasons.push(reason);
        }
    }

    fn check(
        &mut self,
        schema: &'s Value,
        v: &'v Json<'v>,
        depth: usize,
    ) -> Result<(), Unjudgeable> {
        self.steps += 1;
        if depth > MAX_DEPTH || self.steps > MAX_STEPS {
            return Err(Unjudgeable::TooComplex);
        }
        let (known, gathered);
        let s: &Keywords<'s> = match schema {
            Value::Object(s) => {
                known = self.known;
                let at: *const Map<String, Value> = s;
                match known.iter().find(|(p, _)| *p == at) {
                    Some((_, k)) => k,
                    None => {
                        gathered = Keywords::of(s);
                        &gathered
                    }
                }
            }
            Value::Bool(false) => {
                self.fail(format_args!("no value is allowed here (schema false)"));
                return Ok(());
            }
            _ => return Ok(()),
        };
        if let Some(r) = s.reference {
            let target = self.resolve(r)?;
            self.check(target, v, depth + 1)?;
        }
        if let Some(t) = s.types
            && !(s.type_mask & type_bit(v) != 0 || (v.is_null() && s.nullable))
        {
            self.fail(format_args!("expected {}, got {}", type_names(t), kind(v)));
            return Ok(());
        }
        // Compared as a `Value`: `enum` and `const` are rare.
        let value = (s.enumeration.is_some() || s.constant.is_some()).then(|| v.to_value());
        if let (Some(options), Some(value)) = (s.enumeration, &value)
            && !options.iter().any(|o| equal(o, value))
        {
            self.fail(format_args!(
                "enum: {} is not one of {}",
                short(value),
                short(options)
            ));
        }
        if let (Some(c), Some(value)) = (s.constant, &value)
            && !equal(c, value)
        {
            self.fail(format_args!(
                "const: expected {}, got {}",
                short(c),
                short(value)
            ));
        }
        match v {
            Json::Number(n) => self.number(s, n.as_f64().unwrap_or(f64::NAN)),
            // Characters are counted only when a length is asked for.
            Json::String(text) if s.min_length.is_some() || s.max_length.is_some() => {
                self.length(s, text.chars().count())
            }
            Json::Array(items) => self.array(s, items, depth)?,
            Json::Object(members) => self.object(s, members, depth)?,
            _ => {}
        }
        self.combinators(s, v, depth)
    }

    /// The schema a `$ref` names: a JSON pointer into the root schema.
    fn resolve(&self, r: &str) -> Result<&'s Value, Unjudgeable> {
        let pointer = r
            .strip_prefix('#')
            .filter(|p| p.is_empty() || p.starts_with('/'));
        let Some(pointer) = pointer else {
            return Err(Unjudgeable::Ref(r.into()));
        };
        let mut at = self.root;
        for token in pointer.split('/').skip(1) {
            let key = if token.contains('~') {
                Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
            } else {
                Cow::Borrowed(token)
            };
            at = match at {
                Value::Object(m) => m.get(&*key),
                Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            }
            .ok_or_else(|| Unjudgeable::Ref(r.into()))?;
        }
        Ok(at)
    }

    fn number(&mut self, s: &Keywords, x: f64) {
        let (min_flag, max_flag) = s.exclusive_flags;
        if let Some(min) = s.minimum {
            if min_flag && x <= min {
                self.fail(format_args!(
                    "exclusiveMinimum: {x} is not greater than {min}"
                ));
            } else if x < min {
                self.fail(format_args!("minimum: {x} is less than {min}"));
            }
        }
        if let Some(max) = s.maximum {
            if max_flag && x >= max {
                self.fail(format_args!("exclusiveMaximum: {x} is not less than {max}"));
            } else if x > max {
                self.fail(format_args!("maximum: {x} is greater than {max}"));
            }
        }
        if let Some(min) = s.exclusive_minimum.filter(|&min| x <= min) {
            self.fail(format_args!(
                "exclusiveMinimum: {x} is not greater than {min}"
            ));
        }
        if let Some(max) = s.exclusive_maximum.filter(|&max| x >= max) {
            self.fail(format_args!("exclusiveMaximum: {x} is not less than {max}"));
        }
        if let Some(d) = s.multiple_of {
            let q = x / d;
            if !q.is_finite() || (q - q.round()).abs() > 1e-9 * q.abs().max(1.0) {
                self.fail(format_args!("multipleOf: {x} is not a multiple of {d}"));
            }
        }
    }

    fn length(&mut self, s: &Keywords, n: usize) {
        if let Some(min) = s.min_length.filter(|&min| n < min) {
            self.fail(format_args!("minLength: {n} characters, fewer than {min}"));
        }
        if let Some(max) = s.max_length.filter(|&max| n > max) {
            self.fail(format_args!("maxLength: {n} characters, more than {max}"));
        }
    }

    fn array(
        &mut self,
        s: &Keywords<'s>,
        items: &'v [Json<'v>],
        depth: usize,
    ) -> Result<(), Unjudgeable> {
        let n = items.len();
        if let Some(min) = s.min_items.filter(|&min| n < min) {
            self.fail(format_args!("minItems: {n} items, fewer than {min}"));
        }
        if let Some(max) = s.max_items.filter(|&max| n > max) {
            self.fail(format_args!("maxItems: {n} items, more than {max}"));
        }
        if s.unique_items {
            let items: Vec<Value> = items.iter().map(Json::to_value).collect();
            let twin = (1..n).find_map(|j| {
                (0..j)
                    .find(|&i| equal(&items[i], &items[j]))
                    .map(|i| (i, j))
            });
            if let Some((i, j)) = twin {
                self.fail(format_args!("uniqueItems: items {i} and {j} are equal"));
            }
        }
        // 2020-12 `prefixItems` + `items`, or draft-7 tuple `items` + `additionalItems`.
        let (prefix, rest) = match (s.prefix_items, s.items) {
            (Some(p), items) => (p, items),
            (None, Some(Value::Array(p))) => (p.as_slice(), s.additional_items),
            (None, items) => (&[][..], items),
        };
        for (i, item) in items.iter().enumerate() {
            if let Some(schema) = prefix.get(i).or(rest) {
                self.path.push(Step::Index(i));
                let r = self.check(schema, item, depth + 1);
                self.path.pop();
                r?;
            }
        }
        Ok(())
    }

    fn object(
        &mut self,
        s: &Keywords<'s>,
        members: &'v [(Cow<'v, str>, Json<'v>)],
        depth: usize,
    ) -> Result<(), Unjudgeable> {
        let n = members.len();
        if let Some(min) = s.min_properties.filter(|&min| n < min) {
            self.fail(format_args!(
                "minProperties: {n} properties, fewer than {min}"
            ));
        }
        if let Some(max) = s.max_properties.filter(|&max| n > max) {
            self.fail(format_args!(
                "maxProperties: {n} properties, more than {max}"
            ));
        }
        for name in s
            .required
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
        {
            if !has_member(members, name) {
                self.fail(format_args!("required: property {name:?} is missing"));
            }
        }
        let additional = s.additional_properties.filter(|_| !s.pattern_properties);
        // With sorted maps the members and `properties` are in the same
        // order: one walk over both finds each declared schema.
        let sorted = sorted_maps();
        let mut props = s.properties.into_iter().flatten().peekable();
        for (name, member) in members {
            let found = if sorted {
                let mut found = None;
                while let Some(&(key, schema)) = props.peek() {
                    // Equal first: a valid answer's members are mostly its
                    // declared properties, in the same order.
                    if key.len() == name.len() && key == name {
                        found = Some(schema);
                        props.next();
                        break;
                    }
                    match key.as_str().cmp(name) {
                        Ordering::Less => _ = props.next(),
                        Ordering::Equal => {
                            found = Some(schema);
                            props.next();
                            break;
                        }
                        Ordering::Greater => break,
                    }
                }
                found
            } else {
                s.properties.and_then(|p| p.get(&**name))
            };
            let (schema, declared) = match found {
                Some(schema) => (schema, true),
                None => match additional {
                    Some(schema) => (schema, false),
                    None => continue,
                },
            };
            self.path.push(Step::Key(name.as_ref()));
            let r = if !declared && schema == &Value::Bool(false) {
                self.fail(format_args!("additionalProperties: property not allowed"));
                Ok(())
            } else {
                self.check(schema, member, depth + 1)
            };
            self.path.pop();
            r?;
        }
        Ok(())
    }

    fn combinators(
        &mut self,
        s: &Keywords<'s>,
        v: &'v Json<'v>,
        depth: usize,
    ) -> Result<(), Unjudgeable> {
        for schema in s.all_of.unwrap_or_default() {
            self.check(schema, v, depth + 1)?;
        }
        for (key, options) in [("anyOf", s.any_of), ("oneOf", s.one_of)] {
            let Some(options) = options else { continue };
            let mut matched = 0;
            // The closest miss: of the right type if any, then fewest problems.
            let mut closest: Option<((bool, usize), String)> = None;
            for schema in options {
                let (n, first) = self.branch(schema, v, depth)?;
                let misfit = schema.get("type").is_some_and(|t| !type_ok(t, v));
                if n == 0 {
                    matched += 1;
                } else if closest.as_ref().is_none_or(|(best, _)| (misfit, n) < *best) {
                    closest = Some(((misfit, n), first));
                }
            }
            let total = options.len();
            match (key, matched, closest) {
                (_, 0, Some((_, first))) => self.fail(format_args!(
                    "{key}: matches none of {total} schemas (closest: {first})"
                )),
                ("oneOf", m, _) if m > 1 => self.fail(format_args!(
                    "oneOf: matches {m} of {total} schemas, expected exactly 1"
                )),
                _ => {}
            }
        }
        if let Some(not) = s.not
            && self.branch(not, v, depth)?.0 == 0
        {
            self.fail(format_args!("not: must not match the schema"));
        }
        Ok(())
    }

    /// `(problems, first problem)` of `v` against `schema`, without
    /// reporting them: for the combinators, which decide what to report.
    fn branch(
        &mut self,
        schema: &'s Value,
        v: &'v Json<'v>,
        depth: usize,
    ) -> Result<(usize, String), Unjudgeable> {
        let (reasons, total) = (std::mem::take(&mut self.reasons), self.total);
        self.total = 0;
        let r = self.check(schema, v, depth + 1);
        let mine = std::mem::replace(&mut self.reasons, reasons);
        let n = std::mem::replace(&mut self.total, total);
        r.map(|()| (n, mine.into_iter().next().unwrap_or_default()))
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
