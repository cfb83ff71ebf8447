//! A cheap structural check of every answer: catches the empty, cut-off,
//! filtered and not-JSON-when-JSON-was-asked answers that an upstream returns
//! with a 200, so the router can try another deployment instead of passing
//! them on.

use std::borrow::Cow;

use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::{Evaluator, Metadata, Verdict, export_evaluator};

struct Basic;

impl Evaluator for Basic {
    fn metadata() -> Metadata {
        Metadata::new("basic", env!("CARGO_PKG_VERSION"), &["json"])
    }

    fn evaluate(request: &str, response: &str) -> Result<Verdict, String> {
        Ok(evaluate(request, response))
    }
}

export_evaluator!(Basic);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

const FINISH_REASONS: &[&str] = &[
    "stop",
    "length",
    "tool_calls",
    "function_call",
    "content_filter",
];

/// Whether the request asked for a JSON answer (`response_format`). Reads
/// only that field: the messages are skipped, not built into values.
fn wants_json(request: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        response_format: Option<Format<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Format<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Request>(request)
        .ok()
        .and_then(|r| r.response_format?.kind)
        .is_some_and(|k| k == "json_object" || k == "json_schema")
}

/// The answer's text, when `content` is a string or a list of text parts.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

fn has_calls(message: &Value) -> bool {
    message
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty())
        || message.get("function_call").is_some_and(Value::is_object)
}

/// The fields of a chat completion the checks read, borrowed from the
/// response text; everything else is skipped, not built into values.
/// Every level is read as a JSON object only ([`Members`]: a derived struct
/// would also read an array, positionally).
#[derive(serde::Deserialize)]
struct Completion<'a> {
    #[serde(borrow)]
    choices: Vec<Members<'a, 2>>,
}

/// The members of a JSON object named by `FIELDS` (the rest skipped), raw;
/// the last of duplicates wins, as in a value tree.
struct Members<'a, const N: usize>([Option<&'a RawValue>; N]);

/// The member names [`Members`] reads, for 2 (a choice) and 3 (a message).
trait Fields {
    const NAMES: &'static [&'static str];
}
impl Fields for Members<'_, 2> {
    const NAMES: &'static [&'static str] = &["finish_reason", "message"];
}
impl Fields for Members<'_, 3> {
    const NAMES: &'static [&'static str] = &["content", "tool_calls", "function_call"];
}

impl<'de: 'a, 'a, const N: usize> serde::Deserialize<'de> for Members<'a, N>
where
    Members<'a, N>: Fields,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a, const N: usize>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a, const N: usize> serde::de::Visitor<'de> for Visit<'a, N>
        where
            Members<'a, N>: Fields,
        {
            type Value = Members<'a, N>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = [None; N];
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match <Members<'a, N> as Fields>::NAMES
                        .iter()
                        .position(|n| *n == key)
                    {
                        Some(i) => out[i] = Some(map.next_value::<&'de RawValue>()?),
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// What one choice says, read from either parse.
struct Seen<'a> {
    /// `None`: absent or null; `Ok`: a string; `Err`: any other JSON, as text.
    finish_reason: Option<Result<Cow<'a, str>, String>>,
    calls: bool,
    /// `None`: absent or null; `Some(None)`: not a string or text parts.
    text: Option<Option<String>>,
}

fn evaluate(request: &str, response: &str) -> Verdict {
    // The common case, a well-formed completion, is read without building
    // a value tree; anything unusual takes the general path below, which
    // also names what is wrong.
    let object = |t: &str| t.trim_start().starts_with('{');
    let Some(completion) = Some(response)
        .filter(|r| object(r))
        .and_then(|r| serde_json::from_str::<Completion>(r).ok())
    else {
        return evaluate_values(request, response);
    };
    if completion.choices.is_empty() {
        return Verdict::fail(0.0, "response has no choices");
    }
    let mut seen = Vec::with_capacity(completion.choices.len());
    for Members([finish_reason, message]) in &completion.choices {
        let message = match raw(*message) {
            None => None,
            Some(m) => match serde_json::from_str::<Members<3>>(m) {
                Ok(Members([content, tool_calls, function_call])) => {
                    Some((content, tool_calls, function_call))
                }
                Err(_) => return evaluate_values(request, response),
            },
        };
        let text = match message.and_then(|(content, _, _)| raw(content)) {
            None => None,
            Some(t) if t.starts_with('"') => Some(serde_json::from_str::<String>(t).ok()),
            Some(t) => Some(
                serde_json::from_str::<Value>(t)
                    .ok()
                    .and_then(|c| text_of(&c)),
            ),
        };
        let calls = message.is_some_and(|(_, tool_calls, function_call)| {
            raw(tool_calls).is_some_and(|t| {
                serde_json::from_str::<Vec<serde::de::IgnoredAny>>(t).is_ok_and(|c| !c.is_empty())
            }) || raw(function_call).is_some_and(|t| t.starts_with('{'))
        });
        seen.push(Seen {
            finish_reason: raw(*finish_reason)
                .map(|t| serde_json::from_str::<Cow<str>>(t).map_err(|_| t.to_string())),
            calls,
            text,
        });
    }
    judge(request, &seen)
}

/// A field's JSON text, unless it is absent or null.
fn raw(v: Option<&RawValue>) -> Option<&str> {
    v.map(RawValue::get).filter(|t| *t != "null")
}

/// The general path: any JSON, with a precise reason when it is not a
/// completion.
fn evaluate_values(request: &str, response: &str) -> Verdict {
    let resp: Value = match serde_json::from_str(response) {
        Ok(v) => v,
        Err(e) => return Verdict::fail(0.0, format!("response is not JSON: {e}")),
    };
    if !resp.is_object() {
        return Verdict::fail(0.0, "response is not a JSON object");
    }
    let Some(choices) = resp.get("choices").and_then(Value::as_array) else {
        return Verdict::fail(0.0, "response has no choices array");
    };
    if choices.is_empty() {
        return Verdict::fail(0.0, "response has no choices");
    }

    let seen: Vec<Seen> = choices
        .iter()
        .map(|choice| {
            let message = choice.get("message").unwrap_or(&Value::Null);
            Seen {
                finish_reason: match choice.get("finish_reason") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(r)) => Some(Ok(Cow::Borrowed(r.as_str()))),
                    Some(other) => Some(Err(other.to_string())),
                },
                calls: has_calls(message),
                text: match message.get("content") {
                    None | Some(Value::Null) => None,
                    Some(c) => Some(text_of(c)),
                },
            }
        })
        .collect();
    judge(request, &seen)
}

/// The verdict on what the choices say.
fn judge(request: &str, seen: &[Seen]) -> Verdict {
    let json = wants_json(request);
    let (mut fails, mut notes) = (Vec::new(), Vec::new());
    for (i, choice) in seen.iter().enumerate() {
        match choice
            .finish_reason
            .as_ref()
            .map(|r| r.as_ref().map(Cow::as_ref))
        {
            None => fails.push(format!("choice {i}: finish_reason is null")),
            Some(Ok("content_filter")) => fails.push(format!(
                "choice {i}: answer was filtered (finish_reason content_filter)"
            )),
            Some(Ok("length")) => notes.push(format!(
                "choice {i}: truncated at the token limit (finish_reason length)"
            )),
            Some(Ok(r)) if FINISH_REASONS.contains(&r) => {}
            Some(Ok(r)) => fails.push(format!(
                "choice {i}: unexpected finish_reason {}",
                serde_json::to_string(r).unwrap_or_default()
            )),
            Some(Err(other)) => fails.push(format!("choice {i}: unexpected finish_reason {other}")),
        }

        let calls = choice.calls;
        let text = match &choice.text {
            None => None,
            Some(Some(t)) => Some(t.as_str()),
            Some(None) => {
                fails.push(format!("choice {i}: content is not a string"));
                continue;
            }
        };
        match text {
            Some(t) if !t.trim().is_empty() => {
                if json && let Err(e) = serde_json::from_str::<Value>(t) {
                    fails.push(format!("choice {i}: content is not valid JSON: {e}"));
                }
            }
            _ if calls => {}
            Some(_) => fails.push(format!("choice {i}: empty content")),
            None => fails.push(format!("choice {i}: no content")),
        }
    }

    if !fails.is_empty() {
        fails.extend(notes);
        Verdict {
            score: 0.0,
            pass: false,
            reasons: fails,
        }
    } else if !notes.is_empty() {
        Verdict {
            score: 0.5,
            pass: true,
            reasons: notes,
        }
    } else {
        Verdict::pass()
    }
}

#[cfg(test)]
mod tests {
    use super::{evaluate, evaluate_values};

    #[test]
    fn the_fast_path_judges_as_the_general_one() {
        let json = r#"{"response_format":{"type":"json_object"}}"#;
        for (request, message, finish) in [
            ("{}", r#"{"role":"assistant","content":"hi"}"#, r#""stop""#),
            ("{}", r#"{"content":"abc"}"#, r#""length""#),
            ("{}", r#"{"content":"x"}"#, r#""content_filter""#),
            ("{}", r#"{"content":"x"}"#, r#""weird""#),
            ("{}", r#"{"content":"x"}"#, "7"),
            ("{}", r#"{"content":"x"}"#, "null"),
            ("{}", r#"{"content":"  "}"#, r#""stop""#),
            ("{}", r#"{"content":5}"#, r#""stop""#),
            (
                "{}",
                r#"{"content":[{"type":"text","text":"a"},{"text":"b"}]}"#,
                r#""stop""#,
            ),
            (
                "{}",
                r#"{"content":null,"tool_calls":[{"id":"1"}]}"#,
                r#""tool_calls""#,
            ),
            (
                "{}",
                r#"{"content":null,"tool_calls":[]}"#,
                r#""tool_calls""#,
            ),
            (
                "{}",
                r#"{"content":null,"function_call":{"name":"f"}}"#,
                r#""function_call""#,
            ),
            ("{}", r#"{}"#, r#""stop""#),
            ("{}", r#"["hi"]"#, r#""stop""#),
            ("{}", r#""hi""#, r#""stop""#),
            (json, r#"{"content":"{\"a\":1}"}"#, r#""stop""#),
            (json, r#"{"content":"sure"}"#, r#""stop""#),
        ] {
            check(request, &answer(finish, message));
        }
        for response in [
            r#"[[["stop",["hi"]]]]"#,
            r#"{"choices":[["stop",{"content":"x"}]]}"#,
        ] {
            check("{}", response);
        }
        fn check(request: &str, response: &str) {
            let (fast, general) = (
                evaluate(request, response),
                evaluate_values(request, response),
            );
            assert_eq!(
                (fast.pass, fast.score, &fast.reasons),
                (general.pass, general.score, &general.reasons),
                "{response}"
            );
        }
    }

    fn answer(finish: &str, message: &str) -> String {
        format!(r#"{{"choices":[{{"index":0,"finish_reason":{finish},"message":{message}}}]}}"#)
    }

    fn reasons(request: &str, response: &str) -> (bool, f32, Vec<String>) {
        let v = evaluate(request, response);
        (v.pass, v.score, v.reasons)
    }

    #[test]
    fn good_answers_pass() {
        let (pass, score, r) = reasons(
            "{}",
            &answer(r#""stop""#, r#"{"role":"assistant","content":"hi"}"#),
        );
        assert!(pass && score == 1.0 && r.is_empty());
        let tools = r#"{"content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#;
        assert!(reasons("{}", &answer(r#""tool_calls""#, tools)).0);
    }

    #[test]
    fn structural_failures_say_what() {
        assert_eq!(
            reasons("{}", "nope").2[0].split(':').next(),
            Some("response is not JSON")
        );
        assert_eq!(reasons("{}", "[]").2, vec!["response is not a JSON object"]);
        assert_eq!(reasons("{}", "{}").2, vec!["response has no choices array"]);
        assert_eq!(
            reasons("{}", r#"{"choices":[]}"#).2,
            vec!["response has no choices"]
        );
        assert_eq!(
            reasons("{}", &answer(r#""stop""#, r#"{"content":""}"#)).2,
            vec!["choice 0: empty content"]
        );
        assert_eq!(
            reasons("{}", &answer("null", r#"{"content":"x"}"#)).2,
            vec!["choice 0: finish_reason is null"]
        );
        assert_eq!(
            reasons("{}", &answer(r#""weird""#, r#"{"content":"x"}"#)).2,
            vec![r#"choice 0: unexpected finish_reason "weird""#]
        );
        let (pass, _, r) = reasons("{}", &answer(r#""content_filter""#, r#"{"content":"x"}"#));
        assert!(!pass);
        assert!(r[0].contains("content_filter"));
    }

    #[test]
    fn length_is_a_half_pass() {
        let (pass, score, r) = reasons("{}", &answer(r#""length""#, r#"{"content":"abc"}"#));
        assert!(pass);
        assert_eq!(score, 0.5);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn json_mode_needs_json_content() {
        let req = r#"{"response_format":{"type":"json_object"}}"#;
        assert!(reasons(req, &answer(r#""stop""#, r#"{"content":"{\"a\":1}"}"#)).0);
        let (pass, _, r) = reasons(
            req,
            &answer(r#""stop""#, r#"{"content":"sure! {\"a\":1}"}"#),
        );
        assert!(!pass);
        assert!(r[0].starts_with("choice 0: content is not valid JSON"));
        let schema = r#"{"response_format":{"type":"json_schema","json_schema":{}}}"#;
        assert!(!reasons(schema, &answer(r#""stop""#, r#"{"content":"nope"}"#)).0);
        assert!(
            reasons(
                r#"{"response_format":{"type":"text"}}"#,
                &answer(r#""stop""#, r#"{"content":"nope"}"#)
            )
            .0
        );
    }
}
