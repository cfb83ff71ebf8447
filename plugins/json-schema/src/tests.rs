use serde_json::{Value, json};
use switchyard_sdk::Verdict;

use crate::{Config, evaluate};

fn weather_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["city", "temp_c", "unit", "hours"],
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "temp_c": {"type": "number", "minimum": -90, "maximum": 60},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "note": {"type": ["string", "null"]},
            "hours": {"type": "array", "items": {"$ref": "#/$defs/hour"}}},
        "$defs": {"hour": {"type": "object", "required": ["h", "t"], "additionalProperties": false,
            "properties": {"h": {"type": "integer", "minimum": 0, "maximum": 23}, "t": {"type": "number"}}}}})
}

fn schema_request() -> String {
    json!({"model": "m", "messages": [{"role": "user", "content": "weather?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "strict": true, "schema": weather_schema()}}})
    .to_string()
}

fn format_request(format: Value) -> String {
    json!({"messages": [], "response_format": format}).to_string()
}

fn answer(content: &str) -> String {
    json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]})
    .to_string()
}

fn judge(request: &str, content: &str) -> Verdict {
    evaluate(&Config::default(), request, &answer(content)).unwrap()
}

/// About 2 KB of valid structured output.
fn weather_json() -> String {
    let hours: Vec<Value> = (0..48)
        .map(|h| json!({"h": h % 24, "t": 10.5 + f64::from(h) / 4.0}))
        .collect();
    serde_json::to_string_pretty(
        &json!({"city": "Oslo", "temp_c": 12.25, "unit": "celsius", "note": null, "hours": hours}),
    )
    .unwrap()
}

#[test]
fn valid_answers_pass() {
    let content = weather_json();
    assert!((1500..2600).contains(&content.len()), "{}", content.len());
    let v = judge(&schema_request(), &content);
    assert!(v.pass && v.score == 1.0 && v.reasons.is_empty(), "{v:?}");
    assert!(
        judge(
            &format_request(json!({"type": "json_object"})),
            r#" {"a": [1]} "#
        )
        .pass
    );
    let no_schema = format_request(json!({"type": "json_schema", "json_schema": {"name": "x"}}));
    assert!(judge(&no_schema, "[1, 2]").pass);
    assert!(!judge(&no_schema, "sure!").pass);
}

#[test]
fn requests_without_json_pass_unread() {
    for request in [
        r#"{"messages": []}"#.to_string(),
        format_request(json!({"type": "text"})),
        format_request(json!({"type": "grammar", "grammar": "x"})),
        format_request(json!(null)),
    ] {
        let v = evaluate(&Config::default(), &request, "not even JSON").unwrap();
        assert!(v.pass && v.score == 1.0, "{request}");
    }
}

#[test]
fn schema_violations_name_pointer_and_keyword() {
    let mut bad: Value = serde_json::from_str(&weather_json()).unwrap();
    bad["temp_c"] = json!("12");
    bad["unit"] = json!("kelvin");
    bad["hours"][3]["h"] = json!(24);
    bad["extra"] = json!(true);
    bad.as_object_mut().unwrap().remove("city");
    let v = judge(&schema_request(), &bad.to_string());
    assert!(!v.pass && v.score == 0.0);
    // Sorted: the workspace may build serde_json with `preserve_order`,
    // which changes the order members (and so violations) are visited in.
    let mut reasons = v.reasons.clone();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            r#"(root): required: property "city" is missing"#,
            "/extra: additionalProperties: property not allowed",
            "/hours/3/h: maximum: 24 is greater than 23",
            "/temp_c: expected number, got string",
            r#"/unit: enum: "kelvin" is not one of ["celsius","fahrenheit"]"#,
        ]
    );
}

#[test]
fn not_json_objects_and_fences_fail() {
    let req = schema_request();
    let v = judge(&req, "Here is the weather: sunny");
    assert!(
        !v.pass && v.reasons[0].starts_with("content is not valid JSON: "),
        "{v:?}"
    );
    let v = judge(&format_request(json!({"type": "json_object"})), "[1]");
    assert_eq!(v.reasons, ["(root): expected object, got array"]);
    let v = judge(&req, "");
    assert_eq!(v.reasons, ["no content (JSON was asked for)"]);
    let truncated = &weather_json()[..300];
    assert!(judge(&req, truncated).reasons[0].contains("EOF"));

    let fenced = format!("```json\n{}\n```", weather_json());
    assert_eq!(
        judge(&req, &fenced).reasons,
        ["content is wrapped in a code fence"]
    );
    let lax = Config::parse(r#"{"allow_fenced": true}"#).unwrap();
    for text in [
        fenced.clone(),
        format!("```\n{}\n```\n", weather_json()),
        format!("```json\n{}", weather_json()),
    ] {
        let v = evaluate(&lax, &req, &answer(&text)).unwrap();
        assert!(v.pass, "{text}: {v:?}");
    }
    let v = evaluate(&lax, &req, &answer("```json\n{\"city\": 1}\n```")).unwrap();
    assert!(
        !v.pass
            && v.reasons
                .contains(&"/city: expected string, got number".to_string()),
        "{v:?}"
    );
}

#[test]
fn refusals_tool_calls_and_choices() {
    let req = schema_request();
    let refused =
        json!({"choices": [{"message": {"content": null, "refusal": "I can't do that."}}]});
    let v = evaluate(&Config::default(), &req, &refused.to_string()).unwrap();
    assert_eq!(
        v.reasons,
        [r#"refused instead of answering in JSON: "I can't do that.""#]
    );
    let calls = json!({"choices": [{"message": {"content": null, "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}]}}]});
    assert!(
        evaluate(&Config::default(), &req, &calls.to_string())
            .unwrap()
            .pass
    );
    let two = json!({"choices": [{"message": {"content": weather_json()}}, {"message": {"content": "{}"}}]});
    let v = evaluate(&Config::default(), &req, &two.to_string()).unwrap();
    assert!(
        !v.pass && v.reasons[0].starts_with("choice 1: (root): required: property"),
        "{v:?}"
    );
}

#[test]
fn what_cannot_be_judged_is_an_error() {
    let bad_ref = format_request(
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "https://x/s.json"}}}),
    );
    let e = evaluate(&Config::default(), &bad_ref, &answer("{}")).unwrap_err();
    assert!(e.contains("https://x/s.json"), "{e}");
    let nameless = format_request(json!({"type": "json_schema", "json_schema": {"schema": {}}}));
    assert!(evaluate(&Config::default(), &nameless, &answer("{}")).is_err());
    assert!(evaluate(&Config::default(), "nope", &answer("{}")).is_err());
    assert!(evaluate(&Config::default(), &schema_request(), "nope").is_err());
}

#[test]
fn config() {
    assert_eq!(Config::parse("{}"), Ok(Config::default()));
    assert_eq!(
        Config::parse(r#"{"allow_fenced": true}"#),
        Ok(Config { allow_fenced: true })
    );
    for bad in [
        r#"{"allow_fenced": "yes"}"#,
        r#"{"allow_fence": true}"#,
        "[true]",
        "",
    ] {
        assert!(Config::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn odd_inputs_never_panic() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let deeper = "[".repeat(100_000);
    let contents = [
        "",
        "null",
        "1e999",
        "-0",
        "18446744073709551616",
        "1.5e308",
        "\"\\ud800\"",
        "{\"a\":",
        &deep,
        &deeper,
        "```",
        "```json",
        "```\n```",
        "[]",
        "{}",
        "\u{0}",
    ];
    let requests = [
        schema_request(),
        format_request(json!({"type": "json_object"})),
        format_request(
            json!({"type": "json_schema", "json_schema": {"name": "n", "schema": {"items": {"$ref": "#"}, "minimum": 1e308, "multipleOf": 1e-320}}}),
        ),
        format_request(json!({"type": "json_schema", "json_schema": {"name": "n", "schema": 7}})),
        format_request(
            json!({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": 7, "required": "x", "enum": 3, "items": 1, "properties": []}}}),
        ),
        format_request(json!({"type": 7})),
        "{}".into(),
        "[]".into(),
        deeper.clone(),
    ];
    for request in &requests {
        for content in contents {
            let _ = evaluate(&Config { allow_fenced: true }, request, &answer(content));
        }
        for response in [
            "",
            "{}",
            r#"{"choices":[null]}"#,
            r#"{"choices":[{"message":{"content":7}}]}"#,
            &deeper,
        ] {
            let _ = evaluate(&Config::default(), request, response);
        }
    }
}

/// `cargo test --release -p json-schema -- --ignored --nocapture timing`
#[test]
#[ignore]
fn timing() {
    let (request, response) = (schema_request(), answer(&weather_json()));
    let config = Config::default();
    let us = (0..20)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..1000 {
                std::hint::black_box(
                    evaluate(&config, &request, std::hint::black_box(&response)).unwrap(),
                );
            }
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min);
    println!("json-schema: {us:.2} µs per 2 KB answer");
}

#[test]
#[ignore]
fn timing_parts() {
    use crate::answer::{Answer, Wanted};
    use crate::instance::Json;
    let (request, response) = (schema_request(), answer(&weather_json()));
    let time = |name: &str, f: &dyn Fn()| {
        let us = (0..20)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..1000 {
                    f();
                }
                start.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min);
        println!("{name}: {us:.2} µs");
    };
    time("wanted", &|| {
        std::hint::black_box(Wanted::read(std::hint::black_box(&request)).unwrap());
    });
    time("answer", &|| {
        std::hint::black_box(Answer::parse(std::hint::black_box(&response)).unwrap());
    });
    let a = Answer::parse(&response).unwrap();
    let content = a.choices[0]
        .message
        .as_ref()
        .unwrap()
        .content
        .as_ref()
        .unwrap()
        .0
        .to_string();
    time("content json", &|| {
        std::hint::black_box(serde_json::from_str::<Json>(std::hint::black_box(&content)).unwrap());
    });
    let value: Json = serde_json::from_str(&content).unwrap();
    let Wanted::Schema(Some(schema)) = Wanted::read(&request).unwrap() else {
        panic!()
    };
    time("validate", &|| {
        std::hint::black_box(
            crate::schema::validate(&schema, std::hint::black_box(&value)).unwrap(),
        );
    });
}
