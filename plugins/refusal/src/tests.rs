use serde_json::{Value, json};
use switchyard_sdk::Verdict;

use crate::{Config, evaluate};

fn answer(message: Value, finish: Value) -> String {
    json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}]})
    .to_string()
}

fn judge(content: &str) -> Verdict {
    let response = answer(
        json!({"role": "assistant", "content": content}),
        json!("stop"),
    );
    evaluate(&Config::default(), &response).unwrap()
}

/// About 2 KB of a helpful answer that says "I cannot" past the start.
fn long_helpful() -> String {
    let mut text = String::from(
        "Here is how to rotate the logs on a Linux server with logrotate. First, install it \
         with your package manager; most distributions ship it by default. ",
    );
    while text.len() < 1900 {
        text.push_str(
            "Each file under /etc/logrotate.d describes one set of logs: how often to rotate \
             them, how many to keep and whether to compress them. ",
        );
    }
    text.push_str(
        "I cannot stress enough: test with logrotate -d first. I can't help with that? No: I can.",
    );
    text
}

#[test]
fn helpful_answers_pass() {
    for content in [
        "Paris is the capital of France.",
        "I cannot stress enough how much this matters: back up first.",
        "Sorry for the confusion earlier! Here is the corrected query.",
        long_helpful().as_str(),
    ] {
        let v = judge(content);
        assert!(
            v.pass && v.score == 1.0 && v.reasons.is_empty(),
            "{content}: {v:?}"
        );
    }
    let calls = json!({"role": "assistant", "content": null,
        "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
    let v = evaluate(&Config::default(), &answer(calls, json!("tool_calls"))).unwrap();
    assert!(v.pass && v.score == 1.0);
    let v = evaluate(
        &Config::default(),
        &answer(json!({"content": ""}), json!("length")),
    )
    .unwrap();
    assert!(v.pass, "empty and cut off is not an evasion: {v:?}");
}

#[test]
fn refusal_phrases_fail_with_a_quote() {
    for (content, phrase) in [
        ("I can't help with that.", "i cannot help with that"),
        (
            "I’m sorry, but I cannot provide instructions for that.",
            "i'm sorry, but i cannot",
        ),
        (
            "As an AI language model, I cannot browse the internet.",
            "as an ai language model, i cannot",
        ),
        (
            "**I am unable to assist with** requests like this one.",
            "i'm unable to assist with",
        ),
        ("\n\n  SORRY, BUT I CAN NOT do this.", "sorry, but i cannot"),
        ("I won't help with that.", "i will not help with"),
    ] {
        let v = judge(content);
        assert!(!v.pass && v.score == 0.0, "{content}: {v:?}");
        assert_eq!(v.reasons.len(), 1, "{v:?}");
        assert!(
            v.reasons[0].starts_with(&format!("refusal (matched {phrase:?}): \"")),
            "{v:?}"
        );
        assert!(
            v.reasons[0].contains(content.split_whitespace().next().unwrap()),
            "{v:?}"
        );
    }
    let long = format!(
        "I'm sorry, but I cannot do that. {}",
        "Here is why. ".repeat(50)
    );
    let v = judge(&long);
    assert!(!v.pass);
    let quoted = v.reasons[0].split_once(": ").unwrap().1;
    assert_eq!(quoted.chars().count(), 82, "{quoted}");
    assert!(quoted.ends_with("…\""));
}

#[test]
fn only_the_start_is_read() {
    let late = format!(
        "{} I'm sorry, but I cannot go further.",
        "Fine. ".repeat(60)
    );
    assert!(judge(&late).pass, "the phrase starts past 300 characters");
    let early = format!(
        "{} I'm sorry, but I cannot go further.",
        "Fine. ".repeat(40)
    );
    assert!(!judge(&early).pass);
}

#[test]
fn refusal_field_filter_and_empty_evasions_fail() {
    let refused =
        json!({"role": "assistant", "content": null, "refusal": "I can't produce that schema."});
    let v = evaluate(&Config::default(), &answer(refused, json!("stop"))).unwrap();
    assert_eq!(
        v.reasons,
        ["refusal (refusal field): \"I can't produce that schema.\""]
    );
    let filtered = json!({"role": "assistant", "content": "Here is"});
    let v = evaluate(
        &Config::default(),
        &answer(filtered, json!("content_filter")),
    )
    .unwrap();
    assert_eq!(
        v.reasons,
        ["refusal (finish_reason content_filter): \"Here is\""]
    );
    for content in [json!(""), json!(" \n\t "), json!(null)] {
        let v = evaluate(
            &Config::default(),
            &answer(json!({"content": content}), json!("stop")),
        )
        .unwrap();
        assert!(!v.pass && v.score == 0.0);
        assert_eq!(
            v.reasons,
            ["empty answer (finish_reason stop, no tool calls)"]
        );
    }
}

#[test]
fn config_adds_patterns_and_can_record_without_failing() {
    let config = Config::parse(r#"{"patterns": ["Ich kann   dir dabei NICHT helfen", "I’d rather not"], "fail_on_refusal": false}"#).unwrap();
    assert_eq!(
        config.patterns,
        ["ich kann dir dabei nicht helfen", "i'd rather not"]
    );
    for content in [
        "Tut mir leid, ich kann dir dabei nicht helfen.",
        "I'd rather not say.",
        "I can't help with that.",
    ] {
        let response = answer(json!({"content": content}), json!("stop"));
        let v = evaluate(&config, &response).unwrap();
        assert!(
            v.pass && v.score == 0.0 && v.reasons.len() == 1,
            "{content}: {v:?}"
        );
    }
    assert_eq!(Config::parse("{}"), Ok(Config::default()));
    for bad in [
        r#"{"patterns": [""]}"#,
        r#"{"patterns": ["  "]}"#,
        r#"{"patterns": "i cannot"}"#,
        r#"{"fail_on_refusal": "no"}"#,
        r#"{"pattern": ["x"]}"#,
        "[]",
        "nope",
    ] {
        assert!(Config::parse(bad).is_err(), "{bad}");
    }
    assert!(Config::parse(&json!({"patterns": ["x".repeat(301)]}).to_string()).is_err());
}

#[test]
fn several_choices_are_named() {
    let response = json!({"choices": [
        {"finish_reason": "stop", "message": {"content": "Sure, here it is."}},
        {"finish_reason": "stop", "message": {"content": "I cannot comply."}}]})
    .to_string();
    let v = evaluate(&Config::default(), &response).unwrap();
    assert!(!v.pass);
    assert_eq!(
        v.reasons,
        [r#"choice 1: refusal (matched "i cannot comply"): "I cannot comply.""#]
    );
}

#[test]
fn odd_inputs_never_panic() {
    let deep = "[".repeat(10_000);
    let huge = format!(
        r#"{{"choices":[{{"finish_reason":"stop","message":{{"content":"{}"}}}}]}}"#,
        "ǅ".repeat(50_000)
    );
    for response in [
        "",
        "null",
        "not json",
        "[]",
        "{}",
        r#"{"choices":null}"#,
        r#"{"choices":[]}"#,
        r#"{"choices":[null]}"#,
        r#"{"choices":[{}]}"#,
        r#"{"choices":[{"message":null}]}"#,
        r#"{"choices":[{"message":{"content":7}}]}"#,
        r#"{"choices":[{"message":{"refusal":""}}]}"#,
        r#"{"choices":[{"finish_reason":1e999,"message":{}}]}"#,
        r#"{"choices":[{"message":{"content":"x","tool_calls":"nope"}}]}"#,
        r#"{"choices":[{"message":{"content":"\u0000\ud800"}}]}"#,
        &deep,
        &huge,
    ] {
        if let Ok(v) = evaluate(&Config::default(), response) {
            assert!(v.score == 0.0 || v.score == 1.0, "{response}: {v:?}");
        }
    }
}

/// `cargo test --release -p refusal -- --ignored --nocapture timing`
#[test]
#[ignore]
fn timing() {
    let response = answer(
        json!({"role": "assistant", "content": long_helpful()}),
        json!("stop"),
    );
    let config = Config::default();
    let us = (0..20)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..1000 {
                std::hint::black_box(evaluate(&config, std::hint::black_box(&response)).unwrap());
            }
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min);
    println!("refusal: {us:.2} µs per 2 KB answer");
}
