use serde_json::{Value, json};

use super::Unjudgeable;
use crate::instance::Json;

/// Validates `value` as the evaluator reads an answer: from its JSON text.
fn validate(schema: &Value, value: &Value) -> Result<Vec<String>, Unjudgeable> {
    let text = value.to_string();
    let instance: Json = serde_json::from_str(&text).unwrap();
    super::validate(schema, &instance)
}

fn problems(schema: Value, value: Value) -> Vec<String> {
    validate(&schema, &value).unwrap()
}

#[track_caller]
fn one(schema: Value, value: Value, expected: &str) {
    assert_eq!(problems(schema, value), [expected]);
}

#[test]
fn types_name_the_pointer() {
    let weather = json!({"type": "object", "properties": {
        "temp_c": {"type": "number"}, "city": {"type": "string"},
        "tags": {"type": "array", "items": {"type": ["string", "null"]}},
        "count": {"type": "integer"}, "at": {"type": "string", "nullable": true}}});
    assert!(
        problems(
            weather.clone(),
            json!({"temp_c": 21.5, "city": "Oslo", "tags": ["a", null], "count": 2.0, "at": null})
        )
        .is_empty()
    );
    one(
        weather.clone(),
        json!({"temp_c": "21"}),
        "/temp_c: expected number, got string",
    );
    one(
        weather.clone(),
        json!({"tags": ["a", 1]}),
        "/tags/1: expected string or null, got number",
    );
    one(
        weather.clone(),
        json!({"count": 2.5}),
        "/count: expected integer, got number",
    );
    one(weather, json!([1]), "(root): expected object, got array");
    one(
        json!({"type": "boolean"}),
        json!(null),
        "(root): expected boolean, got null",
    );
    assert!(
        problems(json!({"type": "nonsense"}), json!(1)).is_empty(),
        "malformed: ignored"
    );
    assert!(problems(json!({"type": []}), json!(1)).is_empty());
}

#[test]
fn objects() {
    let strict = json!({"type": "object", "required": ["a", "b"], "additionalProperties": false,
        "properties": {"a": {"type": "string"}, "b": {}}});
    one(
        strict.clone(),
        json!({"a": "x"}),
        r#"(root): required: property "b" is missing"#,
    );
    one(
        strict.clone(),
        json!({"a": "x", "b": 1, "c/d~": 2}),
        "/c~1d~0: additionalProperties: property not allowed",
    );
    // Declared and undeclared members interleaved (and declared ones
    // absent): each member meets its own schema, reasons in member order.
    let mixed = json!({"additionalProperties": {"type": "integer"}, "properties": {
        "a": {"type": "string"}, "c": {"type": "string"}, "e": {"type": "null"}, "g": {}}});
    assert_eq!(
        problems(
            mixed,
            json!({"a": 1, "b": "x", "d": 2, "e": 3, "f": "y", "h": "z"})
        ),
        [
            "/a: expected string, got number",
            "/b: expected integer, got string",
            "/e: expected null, got number",
            "/f: expected integer, got string",
            "/h: expected integer, got string",
        ]
    );
    let typed = json!({"additionalProperties": {"type": "integer"}});
    one(
        typed,
        json!({"x~/y": "s"}),
        "/x~0~1y: expected integer, got string",
    );
    let patterned = json!({"patternProperties": {"^x": {}}, "additionalProperties": false});
    assert!(problems(patterned, json!({"y": 1})).is_empty());
    one(
        json!({"minProperties": 2}),
        json!({"a": 1}),
        "(root): minProperties: 1 properties, fewer than 2",
    );
    one(
        json!({"maxProperties": 0}),
        json!({"a": 1}),
        "(root): maxProperties: 1 properties, more than 0",
    );
}

#[test]
fn arrays() {
    let tuple = json!({"prefixItems": [{"type": "string"}], "items": {"type": "number"}, "minItems": 2, "maxItems": 3});
    assert!(problems(tuple.clone(), json!(["a", 1, 2])).is_empty());
    one(
        tuple.clone(),
        json!([1, 2]),
        "/0: expected string, got number",
    );
    one(
        tuple.clone(),
        json!(["a", "b"]),
        "/1: expected number, got string",
    );
    one(
        tuple.clone(),
        json!(["a"]),
        "(root): minItems: 1 items, fewer than 2",
    );
    one(
        tuple,
        json!(["a", 1, 2, 3]),
        "(root): maxItems: 4 items, more than 3",
    );
    let draft7 = json!({"items": [{"type": "string"}], "additionalItems": false});
    one(
        draft7,
        json!(["a", 1]),
        "/1: no value is allowed here (schema false)",
    );
    one(
        json!({"uniqueItems": true}),
        json!([1, {"a": [1.0]}, 2, {"a": [1]}]),
        "(root): uniqueItems: items 1 and 3 are equal",
    );
}

#[test]
fn values_and_numbers() {
    one(
        json!({"enum": ["celsius", "fahrenheit"]}),
        json!("kelvin"),
        r#"(root): enum: "kelvin" is not one of ["celsius","fahrenheit"]"#,
    );
    assert!(problems(json!({"enum": [1, "a"]}), json!(1.0)).is_empty());
    one(
        json!({"const": "point"}),
        json!("line"),
        r#"(root): const: expected "point", got "line""#,
    );
    one(
        json!({"minimum": -273.15}),
        json!(-300),
        "(root): minimum: -300 is less than -273.15",
    );
    one(
        json!({"maximum": 10}),
        json!(11),
        "(root): maximum: 11 is greater than 10",
    );
    one(
        json!({"exclusiveMinimum": 0}),
        json!(0),
        "(root): exclusiveMinimum: 0 is not greater than 0",
    );
    one(
        json!({"exclusiveMaximum": 100}),
        json!(100),
        "(root): exclusiveMaximum: 100 is not less than 100",
    );
    one(
        json!({"maximum": 5, "exclusiveMaximum": true}),
        json!(5),
        "(root): exclusiveMaximum: 5 is not less than 5",
    );
    one(
        json!({"multipleOf": 0.1}),
        json!(0.35),
        "(root): multipleOf: 0.35 is not a multiple of 0.1",
    );
    assert!(problems(json!({"multipleOf": 0.1}), json!(0.3)).is_empty());
    one(
        json!({"minLength": 3}),
        json!("éé"),
        "(root): minLength: 2 characters, fewer than 3",
    );
    one(
        json!({"maxLength": 1}),
        json!("ab"),
        "(root): maxLength: 2 characters, more than 1",
    );
    let long = json!("x".repeat(100));
    let enum_reason = &problems(json!({"enum": ["a"]}), long)[0];
    assert!(
        enum_reason.len() < 160 && enum_reason.contains('…'),
        "{enum_reason}"
    );
}

#[test]
fn combinators() {
    let either = json!({"anyOf": [{"type": "string"}, {"type": "object", "required": ["a", "b"]}]});
    assert!(problems(either.clone(), json!("x")).is_empty());
    one(
        either,
        json!({"a": 1}),
        r#"(root): anyOf: matches none of 2 schemas (closest: (root): required: property "b" is missing)"#,
    );
    let one_of = json!({"oneOf": [{"type": "integer"}, {"type": "number"}]});
    one(
        one_of.clone(),
        json!(1),
        "(root): oneOf: matches 2 of 2 schemas, expected exactly 1",
    );
    assert!(problems(one_of, json!(1.5)).is_empty());
    one(
        json!({"allOf": [{"minimum": 1}, {"maximum": 0}]}),
        json!(2),
        "(root): maximum: 2 is greater than 0",
    );
    one(
        json!({"not": {"type": "null"}}),
        json!(null),
        "(root): not: must not match the schema",
    );
    assert_eq!(
        problems(json!(false), json!(1)),
        ["(root): no value is allowed here (schema false)"]
    );
    assert!(problems(json!(true), json!(1)).is_empty());
}

#[test]
fn refs() {
    let tree = json!({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
        "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}});
    assert!(
        problems(
            tree.clone(),
            json!({"value": 1, "children": [{"value": 2, "children": []}]})
        )
        .is_empty()
    );
    one(
        tree,
        json!({"children": [{"value": "x"}]}),
        "/children/0/value: expected integer, got string",
    );
    let old = json!({"definitions": {"a/b": {"type": "string"}}, "properties": {"x": {"$ref": "#/definitions/a~1b"}}});
    one(old, json!({"x": 1}), "/x: expected string, got number");
    for bad in [
        "#/$defs/missing",
        "other.json#/a",
        "#anchor",
        "https://example.com/s",
    ] {
        let e = validate(&json!({"$ref": bad}), &json!(1)).unwrap_err();
        assert_eq!(e, Unjudgeable::Ref(bad.into()));
    }
    assert_eq!(
        validate(&json!({"$ref": "#"}), &json!(1)),
        Err(Unjudgeable::TooComplex)
    );
}

#[test]
fn runaway_schemas_are_cut_short() {
    // anyOf of anyOf ... through $refs: a small schema, exponential work
    // without the step limit.
    let mut defs = serde_json::Map::new();
    defs.insert("d0".into(), json!({"type": "string"}));
    for i in 1..=40 {
        let r = format!("#/$defs/d{}", i - 1);
        defs.insert(
            format!("d{i}"),
            json!({"anyOf": [{"$ref": r}, {"$ref": r}]}),
        );
    }
    let s = json!({"$defs": defs, "$ref": "#/$defs/d40"});
    assert_eq!(validate(&s, &json!(1)), Err(Unjudgeable::TooComplex));
}

#[test]
fn many_problems_are_capped() {
    let value = Value::Array((0..20).map(|i| json!(i)).collect());
    let reasons = problems(json!({"items": {"type": "string"}}), value);
    assert_eq!(reasons.len(), 9);
    assert_eq!(reasons[8], "and 12 more");
}
