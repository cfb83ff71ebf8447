//! Config loading: defaults, paths, refusals; the schema's defaults, the
//! Rust defaults and the README's table agree.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("test.json"), Path::new("/base"))
}

const MINIMAL: &str = r#"{"routes":{"m":{"deployments":[
    {"name":"a","adapter":"openai","base_url":"http://127.0.0.1:1/v1","model":"x"}]}}}"#;

#[test]
fn minimal_config_gets_defaults_and_resolved_paths() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080");
    assert_eq!(c.plugins.dir, Path::new("/base/plugins"));
    assert_eq!(c.routes["m"].members[0].weight, 1);
    assert_eq!(c.timeouts, Timeouts::default());
}

#[test]
fn bundled_default_config_is_valid() {
    let text = include_str!("../../../config/switchyard.json");
    parse(text).unwrap();
}

#[test]
fn the_traffic_control_example_is_valid() {
    let c = parse(include_str!("../../../examples/traffic-control.json")).unwrap();
    assert_eq!(c.limits.backend, LimitsBackend::Redis);
    assert_eq!(c.auth.keys.len(), 2);
    assert_eq!(c.deployments["openai-mini"].key_envs().len(), 2);
}

#[test]
fn schema_violation_names_path_and_rule() {
    let text = MINIMAL.replace("\"http://127.0.0.1:1/v1\"", "42");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("/routes/m/deployments/0/base_url"),
        "error names the path: {err}"
    );
    assert!(
        err.contains("not of type \"string\""),
        "and the rule: {err}"
    );
}

#[test]
fn unknown_field_is_refused() {
    let text = MINIMAL.replace("\"model\":\"x\"", "\"model\":\"x\",\"modle\":1");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("modle"), "{err}");
}

#[test]
fn duplicate_deployment_names_are_refused() {
    let text = r#"{"routes":{
        "m":{"deployments":[{"name":"a","adapter":"o","base_url":"http://h/","model":"x"}]},
        "n":{"deployments":[{"name":"a","adapter":"o","base_url":"http://h/","model":"x"}]}}}"#;
    let err = parse(text).unwrap_err().to_string();
    assert!(err.contains("/routes/n/deployments/0/name"), "{err}");
}

#[test]
fn timeout_override_merges_field_by_field() {
    let t = Timeouts::default()
        .merged(&serde_json::json!({"first_byte_ms": 7}))
        .unwrap();
    assert_eq!(t.first_byte_ms, 7);
    assert_eq!(t.connect_ms, Timeouts::default().connect_ms);
}

/// Every `default` the schema declares for a fixed path (maps and arrays
/// are not entered), as `(dotted.path, value)`.
fn schema_defaults() -> Vec<(String, Value)> {
    fn walk(schema: &Value, node: &Value, at: &str, out: &mut Vec<(String, Value)>) {
        let node = match node.get("$ref").and_then(Value::as_str) {
            Some(r) => &schema["$defs"][r.trim_start_matches("#/$defs/")],
            None => node,
        };
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, prop) in props {
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            let resolved = match prop.get("$ref").and_then(Value::as_str) {
                Some(r) => &schema["$defs"][r.trim_start_matches("#/$defs/")],
                None => prop,
            };
            if let Some(d) = prop.get("default").or(resolved.get("default")) {
                if d.is_object() && d.as_object().is_some_and(|o| o.is_empty()) {
                    continue;
                }
                out.push((path.clone(), d.clone()));
            }
            walk(schema, prop, &path, out);
        }
    }
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let mut out = Vec::new();
    walk(&schema, &schema, "", &mut out);
    out
}

#[test]
fn the_schema_declares_the_defaults_the_code_applies() {
    // A minimal config, and the same with every schema default written out:
    // both must resolve alike.
    // An optional section's defaults apply once it is there: the minimal
    // config names a Redis server (its one required field).
    let mut base: Value = serde_json::from_str(MINIMAL).unwrap();
    base["redis"] = serde_json::json!({"url": "redis://127.0.0.1:1/"});
    base["telemetry"] = serde_json::json!({"otlp": {"endpoint": "http://127.0.0.1:4318"}});
    let minimal_text = base.to_string();
    let mut explicit = base;
    let defaults = schema_defaults();
    assert!(defaults.len() >= 20, "{defaults:?}");
    for (path, value) in &defaults {
        let mut at = &mut explicit;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            at = at
                .as_object_mut()
                .unwrap()
                .entry(part.to_string())
                .or_insert_with(|| serde_json::json!({}));
        }
        at[parts[parts.len() - 1]] = value.clone();
    }
    let minimal = format!("{:?}", parse(&minimal_text).unwrap());
    let written = format!("{:?}", parse(&explicit.to_string()).unwrap());
    assert_eq!(minimal, written);
    // And a deployment's defaults, in the top-level map.
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let mut d = serde_json::json!({"adapter": "openai", "base_url": "http://h/", "model": "x"});
    for (k, p) in schema["$defs"]["deployment_def"]["properties"]
        .as_object()
        .unwrap()
    {
        if let Some(v) = p.get("default") {
            d[k] = v.clone();
        }
    }
    let with = |d: &Value| {
        let c =
            serde_json::json!({"deployments": {"a": d}, "routes": {"m": {"deployments": ["a"]}}});
        format!("{:?}", parse(&c.to_string()).unwrap().deployments["a"])
    };
    assert_eq!(
        with(&serde_json::json!({"adapter": "openai", "base_url": "http://h/", "model": "x"})),
        with(&d)
    );
}

#[test]
fn the_readme_table_gives_the_schema_defaults() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## Configuration reference")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    // `a.b` → default text; `a.{b,c}` rows list several, comma-separated.
    let mut documented = std::collections::HashMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let field = cols[0].trim_start_matches("| ").trim_matches('`');
        let values: Vec<&str> = cols[1].split(", ").map(|v| v.trim_matches('`')).collect();
        match field.split_once(".{") {
            Some((prefix, names)) => {
                let names: Vec<&str> = names.trim_end_matches('}').split(',').collect();
                for (name, value) in names
                    .iter()
                    .zip(values.iter().chain(std::iter::repeat(&"")))
                {
                    documented.insert(format!("{prefix}.{name}"), value.to_string());
                }
            }
            None => {
                documented.insert(field.to_string(), cols[1].trim_matches('`').to_string());
            }
        }
    }
    for (path, value) in schema_defaults() {
        let text = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(
            documented.get(&path).map(String::as_str),
            Some(text.as_str()),
            "README's configuration table: {path} should say {text}"
        );
    }
}

#[test]
fn an_evaluation_sample_is_a_share() {
    let with = |v: &str| {
        MINIMAL.replace(
            "{\"deployments\"",
            &format!("{{\"evaluate_sample\":{v},\"deployments\""),
        )
    };
    assert_eq!(
        parse(&with("0.1")).unwrap().routes["m"].evaluate_sample,
        Some(0.1)
    );
    for bad in ["0", "1.5", "\"all\""] {
        let err = parse(&with(bad)).unwrap_err().to_string();
        assert!(err.contains("/routes/m/evaluate_sample"), "{bad}: {err}");
    }
}

#[test]
fn serving_threads_default_to_the_cores_and_zero_is_refused() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.threads, None);
    assert_eq!(
        c.server.serving_threads(),
        std::thread::available_parallelism().unwrap().get()
    );
    let one = MINIMAL.replacen('{', r#"{"server":{"threads":1},"#, 1);
    assert_eq!(parse(&one).unwrap().server.serving_threads(), 1);
    let zero = MINIMAL.replacen('{', r#"{"server":{"threads":0},"#, 1);
    let err = parse(&zero).unwrap_err().to_string();
    assert!(err.contains("/server/threads"), "{err}");
}

#[test]
fn busy_polling_is_off_by_default_and_bounded() {
    assert_eq!(parse(MINIMAL).unwrap().server.busy_poll_us, 0);
    let on = MINIMAL.replacen('{', r#"{"server":{"busy_poll_us":200},"#, 1);
    assert_eq!(parse(&on).unwrap().server.busy_poll_us, 200);
    let long = MINIMAL.replacen('{', r#"{"server":{"busy_poll_us":5001},"#, 1);
    let err = parse(&long).unwrap_err().to_string();
    assert!(err.contains("/server/busy_poll_us"), "{err}");
    assert_eq!(
        crate::busy_poll::MAX_WINDOW,
        std::time::Duration::from_micros(5_000),
        "the schema's maximum"
    );
}
