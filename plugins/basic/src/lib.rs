//! A cheap structural check of every answer: catches the empty, cut-off,
//! filtered and not-JSON-when-JSON-was-asked answers that an upstream returns
//! with a 200, so the router can try another deployment instead of passing
//! them on.

use std::borrow::Cow;

use serde_json::Value;
use switchyard_sdk::canonical::read::Reader;
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

/// Whether the request asked for a JSON answer (`response_format`): read in
/// one pass ([`wants_json_quickly`]) when the request is the usual object,
/// by serde otherwise.
fn wants_json(request: &str) -> bool {
    // Most requests do not ask: serde can only find the member when its
    // name is in the text, spelled out or with a `\u` escape, or read it
    // by position from an array (a derived struct reads one).
    if !request.contains("response_format")
        && !request.contains("\\u")
        && !request.trim_start().starts_with('[')
    {
        return false;
    }
    wants_json_quickly(request).unwrap_or_else(|| wants_json_by_serde(request))
}

/// [`wants_json`] for a request object whose `response_format` is absent,
/// null or an object with at most one `type`: the members are skipped (and
/// checked) without serde's visitors. `None` for anything else, which serde
/// decides (a duplicate member is an error there, an array a struct).
fn wants_json_quickly(request: &str) -> Option<bool> {
    let mut r = Reader::new(request);
    let mut kind = None;
    let mut seen = false;
    r.members(|r, name| {
        if name != "response_format" {
            return r.value().ok().map(drop);
        }
        if std::mem::replace(&mut seen, true) {
            return None;
        }
        if r.null().ok()? {
            return Some(());
        }
        let mut typed = false;
        r.members(|r, name| {
            if name != "type" {
                return r.value().ok().map(drop);
            }
            if std::mem::replace(&mut typed, true) {
                return None;
            }
            if !r.null().ok()? {
                kind = Some(r.str().ok()?);
            }
            Some(())
        })
    })?;
    if r.saw_odd() || r.finish().is_err() {
        return None;
    }
    Some(kind.is_some_and(|k| k == "json_object" || k == "json_schema"))
}

/// [`wants_json`] by serde: reads only that field, the messages skipped.
fn wants_json_by_serde(request: &str) -> bool {
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

/// What one choice says, read from either parse.
struct Seen<'a> {
    /// `None`: absent or null; `Ok`: a string; `Err`: any other JSON, as text.
    finish_reason: Option<Result<Cow<'a, str>, String>>,
    calls: bool,
    /// `None`: absent or null; `Some(None)`: not a string or text parts.
    text: Option<Option<Cow<'a, str>>>,
}

fn evaluate(request: &str, response: &str) -> Verdict {
    // The common case, a well-formed completion, is read in one pass over
    // its text; anything unusual takes the general path below, which also
    // names what is wrong.
    let Some(seen) = read_choices(response) else {
        return evaluate_values(request, response);
    };
    if seen.is_empty() {
        return Verdict::fail(0.0, "response has no choices");
    }
    judge(request, &seen)
}

/// The choices of a completion object, read in one pass with the SDK's
/// [`Reader`] (which checks the whole text as serde_json would): what
/// [`evaluate_values`] reads from a value tree, without building one. serde
/// with borrowed raw members cost ~13k instructions for a 470-byte answer;
/// most of it visiting the members it skipped. `None` for anything
/// unusual: no `choices` array, a choice or message that is not an object, a
/// `finish_reason` or `content` that is neither a string nor null, text a
/// value tree may refuse ([`Reader::saw_odd`]), or not JSON at all. As in a
/// value tree, the last of duplicate members wins.
fn read_choices(response: &str) -> Option<Vec<Seen<'_>>> {
    let mut r = Reader::new(response);
    let mut choices = None;
    r.members(|r, name| {
        if name == "choices" {
            choices = Some(r.items(read_choice)?);
        } else {
            r.value().ok()?;
        }
        Some(())
    })?;
    if r.saw_odd() || r.finish().is_err() {
        return None;
    }
    choices
}

fn read_choice<'a>(r: &mut Reader<'a>) -> Option<Seen<'a>> {
    let mut seen = Seen {
        finish_reason: None,
        calls: false,
        text: None,
    };
    r.members(|r, name| {
        match name {
            "finish_reason" => {
                seen.finish_reason = match r.null().ok()? {
                    true => None,
                    false => Some(Ok(r.str().ok()?)),
                };
            }
            "message" => {
                // A later message replaces an earlier one whole.
                let (mut text, mut tools, mut function) = (None, false, false);
                if !r.null().ok()? {
                    r.members(|r, name| {
                        match name {
                            "content" => {
                                text = match r.null().ok()? {
                                    true => None,
                                    false => Some(Some(r.str().ok()?)),
                                };
                            }
                            "tool_calls" => tools = non_empty_array(r)?,
                            "function_call" => {
                                function = r.next_byte() == Some(b'{');
                                r.value().ok()?;
                            }
                            _ => {
                                r.value().ok()?;
                            }
                        }
                        Some(())
                    })?;
                }
                seen.text = text;
                seen.calls = tools || function;
            }
            _ => {
                r.value().ok()?;
            }
        }
        Some(())
    })?;
    Some(seen)
}

/// Reads a value: whether it is an array with an element.
fn non_empty_array(r: &mut Reader) -> Option<bool> {
    if r.next_byte() != Some(b'[') {
        r.value().ok()?;
        return Some(false);
    }
    r.array().ok()?;
    let mut any = false;
    while r.element().ok()? {
        any = true;
        r.value().ok()?;
    }
    Some(any)
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
                    Some(c) => Some(text_of(c).map(Cow::Owned)),
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
            Some(Some(t)) => Some(t.as_ref()),
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
    use super::*;
    use switchyard_sdk::canonical::read::assert_fast_path_agrees;

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

    /// Every one-character change of a few answers: where the one-pass read
    /// answers, the value tree's verdict is the same (and the usual answers
    /// are read that way).
    #[test]
    fn the_one_pass_read_judges_as_the_value_tree_on_any_one_char_change() {
        let docs = [
            r#"{"id":"chatcmpl-9x3K","object":"chat.completion","created":1717171717,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"The capital is \"Paris\".\n","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":24,"total_tokens":55,"details":[15.5,-0.25]},"system_fingerprint":"fp_0b"}"#,
            r#"{"choices":[{"finish_reason":"tool_calls","message":{"content":null,"tool_calls":[{"id":"1","function":{"name":"f","arguments":"{}"}}]}},{"finish_reason":null,"message":{"content":"","function_call":{"name":"g"}}},{"finish_reason":"length","message":{"content":"  x  ","tool_calls":[]}}]}"#,
            r#"{"choices":[{"message":null},{}],"choices":[{"finish_reason":"content_filter","message":{"content":"\u00e9t\u00e9 \u2014"}},{"finish_reason":"weird","message":{"content":"a","content":"b"}}]}"#,
        ];
        let probes = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "n", "t", " ",
        ];
        // Text a value tree may refuse is left to it.
        for odd in [r#""n":1e400"#, r#""s":"\ud800""#, r#""s":"\ud83d\ude00""#] {
            let odd = format!(
                r#"{{"choices":[{{"finish_reason":"stop","message":{{"content":"a"}}}}],{odd}}}"#
            );
            assert!(read_choices(&odd).is_none(), "{odd}");
        }
        let verdict = |v: Verdict| format!("{} {} {:?}", v.pass, v.score, v.reasons);
        for request in ["{}", r#"{"response_format":{"type":"json_object"}}"#] {
            let answered = assert_fast_path_agrees(
                &docs,
                &probes,
                |response| {
                    let seen = read_choices(response)?;
                    Some(verdict(match seen.is_empty() {
                        true => Verdict::fail(0.0, "response has no choices"),
                        false => judge(request, &seen),
                    }))
                },
                |response| verdict(evaluate_values(request, response)),
            );
            assert!(answered > 3000, "{answered}");
        }
    }

    /// Every one-character change of a few requests: where the one-pass read
    /// answers, serde's read of `response_format` says the same.
    #[test]
    fn json_mode_is_read_as_serde_reads_it_on_any_one_char_change() {
        let docs = [
            r#"{"model":"m","messages":[{"role":"user","content":"Say \"hi\" as JSON\n"}],"response_format":{"type":"json_object"},"temperature":0.2,"stop":null}"#,
            r#"{"response_format":{"json_schema":{"name":"n","schema":{"type":"object"}},"type":"json_schema"},"messages":[]}"#,
            r#"{"response_format":{"type":"text"},"n":1}"#,
            r#"{"response_format":null,"max_tokens":64,"tools":[{"type":"function"}]}"#,
            r#"{"response_format":{"type":null}}"#,
        ];
        let probes = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "n", "t", " ",
        ];
        let answered =
            assert_fast_path_agrees(&docs, &probes, wants_json_quickly, wants_json_by_serde);
        assert!(answered > 3000, "{answered}");
        // And with the look for the member's name first, on requests
        // without it too (escaped or not there at all).
        let more = [
            r#"{"model":"m","messages":[{"role":"user","content":"caf\u00e9"}],"n":1}"#,
            r#"{"response\u005fformat":{"type":"json_object"}}"#,
            r#"{"messages":[{"content":"response_format"}]}"#,
            r#" [{"type":"json_object"}]"#,
        ];
        let all: Vec<&str> = docs.iter().chain(&more).copied().collect();
        assert_fast_path_agrees(&all, &probes, |v| Some(wants_json(v)), wants_json_by_serde);
        assert!(wants_json(more[1]));
        // serde reads a struct from an array by position.
        assert!(wants_json(more[3]));
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
