//! The answer's JSON as the validator reads it: strings and member names
//! borrowed from the content, members in a sorted list.
//!
//! A `serde_json::Value` costs a `String` per member name and per string
//! and a B-tree per object, allocated and freed on every answer; this tree
//! allocates one list per array or object and nothing per string (unless
//! it has escapes). Members are in the order a `Value` object has them, so
//! that reasons come in the same order: sorted by name, or in the order
//! written when serde_json's `preserve_order` is on (another plugin of the
//! workspace turns it on, so it depends on which crates are built
//! together); a repeated name keeps its last value. Where the validator
//! needs a `Value` (`enum`, `const`, `uniqueItems`, quoting a value in a
//! reason) it converts the part it needs.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value borrowing from the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Names unique, in a `Map`'s order (see [`sorted_maps`]).
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// The same value as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

/// Whether `members` (of a [`Json::Object`]) has `name`.
pub fn has_member(members: &[(Cow<'_, str>, Json<'_>)], name: &str) -> bool {
    // A few members: equality (lengths first, bytes only when they match)
    // beats the ordering comparisons of a binary search.
    if members.len() <= 8 {
        return members
            .iter()
            .any(|(k, _)| k.len() == name.len() && k == name);
    }
    if sorted_maps() {
        members.binary_search_by(|(k, _)| (**k).cmp(name)).is_ok()
    } else {
        members.iter().any(|(k, _)| k == name)
    }
}

/// Whether `serde_json::Map` keeps its keys sorted (a `BTreeMap`) rather
/// than in insertion order (`preserve_order`): asked of the map itself.
pub fn sorted_maps() -> bool {
    static SORTED: OnceLock<bool> = OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut m = Map::new();
        m.insert("b".into(), Value::Null);
        m.insert("a".into(), Value::Null);
        m.keys().next().is_some_and(|k| k == "a")
    })
}

/// A member name, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor).map(Key)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    /// As `Value` reads it: a number that is not finite is null.
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Json<'de>)> =
            Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Key(name)) = map.next_key()? {
            members.push((name, map.next_value()?));
        }
        if sorted_maps() {
            // Usually already sorted (and then no name repeats).
            if !members.windows(2).all(|w| w[0].0 < w[1].0) {
                // A stable sort of the reversed list puts the last of a
                // repeated name first; `dedup_by` keeps the first.
                members.reverse();
                members.sort_by(|a, b| a.0.cmp(&b.0));
                members.dedup_by(|a, b| a.0 == b.0);
            }
        } else {
            // As an `IndexMap` inserts: a repeated name keeps its first
            // place and takes the last value. Rare, so found the slow way.
            let mut i = 1;
            while i < members.len() {
                match members[..i].iter().position(|(k, _)| *k == members[i].0) {
                    Some(first) => {
                        let (_, value) = members.remove(i);
                        members[first].1 = value;
                    }
                    None => i += 1,
                }
            }
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_value_does() {
        for text in [
            "null",
            "true",
            "-3",
            "18446744073709551615",
            "1.5e3",
            r#""a\"b""#,
            r#"{"b": 1, "a": [1, {"z": null, "y": "\u00e9"}], "b": 2, "c": {}}"#,
            r#"[[], {}, "x", 2.0, {"k": 1, "k": 2, "k": 3}]"#,
        ] {
            let json: Json = serde_json::from_str(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(json.to_value(), value, "{text}");
            assert_eq!(
                serde_json::to_string(&json.to_value()).unwrap(),
                value.to_string()
            );
        }
        let json: Json = serde_json::from_str(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap();
        let Json::Object(members) = &json else {
            panic!()
        };
        assert!(has_member(members, "a") && has_member(members, "b") && !has_member(members, "c"));
        assert_eq!(members.len(), 2);
        for bad in ["", "{", "[1,]", "nul", "{\"a\" 1}", &"[".repeat(200)] {
            let json = serde_json::from_str::<Json>(bad).map_err(|e| e.to_string());
            let value = serde_json::from_str::<Value>(bad).map_err(|e| e.to_string());
            assert_eq!(json.unwrap_err(), value.unwrap_err(), "{bad}");
        }
    }
}
