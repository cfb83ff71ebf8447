use serde_json::{Value, json};

use super::Plan;

fn plan(format: Value) -> Plan {
    Plan::for_request(&json!({"model": "m", "messages": [], "response_format": format}))
        .unwrap()
        .unwrap()
}

fn person() -> Plan {
    plan(
        json!({"type": "json_schema", "json_schema": {"name": "person", "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
            "required": ["name", "age"],
            "additionalProperties": false,
        }}}),
    )
}

fn answer(content: &str) -> String {
    json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
        "finish_reason": "stop"}]})
    .to_string()
}

fn content(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn no_plan_without_a_json_format() {
    for request in [
        json!({"messages": []}),
        json!({"messages": [], "response_format": {"type": "text"}}),
    ] {
        assert!(Plan::for_request(&request).unwrap().is_none());
    }
}

#[test]
fn a_bad_schema_is_named() {
    let e = Plan::for_request(&json!({"response_format": {"type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}}))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("response_format.json_schema.schema"), "{e}");
    let e =
        Plan::for_request(&json!({"response_format": {"type": "json_schema", "json_schema": {}}}))
            .err()
            .unwrap()
            .to_string();
    assert!(e.contains("needs a `schema`"), "{e}");
}

#[test]
fn instructions_replace_response_format() {
    let p = person();
    let original = json!({"model": "m", "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": "who?"}]})
    .to_string();
    let sent: Value = serde_json::from_str(&p.instructed(&original)).unwrap();
    assert!(sent.get("response_format").is_none());
    assert_eq!(sent["messages"][0]["role"], "system");
    let note = sent["messages"][0]["content"].as_str().unwrap();
    assert!(
        note.contains("\"person\"") && note.contains("\"additionalProperties\":false"),
        "{note}"
    );
    assert_eq!(sent["messages"][1]["content"], "who?");
}

#[test]
fn valid_json_is_kept_and_wrapped_json_is_unwrapped() {
    let p = person();
    assert_eq!(
        p.check(&answer(r#"{"name":"Ada","age":36}"#)).unwrap(),
        None
    );
    let fixed = p
        .check(&answer(
            "Here you go:\n```json\n{\"name\":\"Ada\",\"age\":36}\n```",
        ))
        .unwrap()
        .unwrap();
    assert_eq!(content(&fixed), r#"{"name":"Ada","age":36}"#);
}

#[test]
fn schema_violations_are_named_with_their_place() {
    let p = person();
    let e = p
        .check(&answer(r#"{"name":"Ada","age":-1,"x":1}"#))
        .unwrap_err();
    assert!(e.reason.contains("at /age"), "{}", e.reason);
    assert!(e.reason.contains("Additional properties"), "{}", e.reason);
    assert_eq!(
        e.answer.as_deref(),
        Some(r#"{"name":"Ada","age":-1,"x":1}"#)
    );
    let e = p.check(&answer("I'd rather not.")).unwrap_err();
    assert_eq!(e.reason, "the answer holds no JSON");
    let e = plan(json!({"type": "json_object"}))
        .check(&answer("[1, 2]"))
        .unwrap_err();
    assert_eq!(e.reason, "the answer's JSON is not an object");
}

#[test]
fn tool_calls_are_not_checked() {
    let body = json!({"choices": [{"message": {"role": "assistant", "content": null,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]});
    assert_eq!(person().check(&body.to_string()).unwrap(), None);
}

#[test]
fn a_repair_carries_the_answer_and_the_reason_once() {
    let p = person();
    let e = p.check(&answer(r#"{"name":"Ada"}"#)).unwrap_err();
    let sent = json!({"model": "m", "messages": [{"role": "user", "content": "who?"}]}).to_string();
    p.prepare_repair(&sent, &e);
    let repair: Value = serde_json::from_str(&p.take_repair().unwrap()).unwrap();
    let messages = repair["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["content"], r#"{"name":"Ada"}"#);
    let ask = messages[2]["content"].as_str().unwrap();
    assert!(
        ask.contains("age") && ask.contains("only the corrected JSON"),
        "{ask}"
    );
    assert!(p.take_repair().is_none());
}

#[test]
fn the_first_json_of_the_asked_shape_is_taken() {
    let fixed = person()
        .check(&answer(
            "An example: [1, 2]. The answer: {\"name\":\"Ada\",\"age\":36}",
        ))
        .unwrap()
        .unwrap();
    assert_eq!(content(&fixed), r#"{"name":"Ada","age":36}"#);
    // None fits: the first one's reason.
    let e = person()
        .check(&answer("[1] and {\"name\": 3}"))
        .unwrap_err();
    assert!(e.reason.contains("not of type \"object\""), "{}", e.reason);
}

#[test]
fn a_refusal_is_the_answer() {
    let body = json!({"choices": [{"message": {"role": "assistant", "content": null,
        "refusal": "I can't help with that."}}]});
    assert_eq!(person().check(&body.to_string()).unwrap(), None);
}
