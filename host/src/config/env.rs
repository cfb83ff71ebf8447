//! What a config file becomes before it is validated: the overlay of its
//! environment merged over it, `${VAR}` references substituted, with the
//! variables of a `.env` file beside it.
//!
//! - **Overlay**: with `SWITCHYARD_ENV=production`, `switchyard.production.json`
//!   beside `switchyard.json` is merged over it (objects member by member,
//!   anything else replaced; `null` removes a member). A selected overlay
//!   that does not exist is an error: a typo must not silently run the base.
//! - **Substitution**: `${VAR}` and `${VAR:-default}` in string values. A
//!   string that is one reference and whose value reads as a number or a
//!   boolean becomes that number or boolean (limits, ports). A variable that
//!   is unset and has no default is an error naming the JSON path.
//! - **`.env`**: `NAME=value` lines beside the config, read at start and at
//!   each reload. The process environment wins over it. Its values are used
//!   for substitution and API keys only, never logged, never exported.
//!
//! Secrets are not substituted into the file: a deployment names the
//! variable holding its key (`api_key_env`), read when the config resolves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The variables a config sees: the process environment over `.env`.
#[derive(Clone, Default)]
pub struct Env {
    dotenv: HashMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be secrets.
        let mut names: Vec<&String> = self.dotenv.keys().collect();
        names.sort();
        f.debug_struct("Env").field("dotenv", &names).finish()
    }
}

impl Env {
    /// The process environment and the `.env` file in `dir`, if any.
    pub fn beside(dir: &Path) -> Result<Self, String> {
        let path = dir.join(".env");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Self {
            dotenv: parse_dotenv(&text).map_err(|e| format!("{}: {e}", path.display()))?,
        })
    }

    /// Only these variables (tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self {
            dotenv: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.dotenv.get(name).cloned())
    }
}

/// `NAME=value` lines; `#` comments, blank lines, `export ` prefixes and
/// quoted values as shells write them.
fn parse_dotenv(text: &str) -> Result<HashMap<String, String>, String> {
    let mut vars = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected NAME=value", n + 1));
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: {name:?} is not a variable name", n + 1));
        }
        let value = value.trim();
        let value = match (value.chars().next(), value.chars().last()) {
            (Some(q @ ('"' | '\'')), Some(e)) if value.len() >= 2 && q == e => {
                &value[1..value.len() - 1]
            }
            _ => value.split(" #").next().unwrap_or(value).trim_end(),
        };
        vars.insert(name.to_string(), value.to_string());
    }
    Ok(vars)
}

/// The overlay file `SWITCHYARD_ENV` selects for `config`:
/// `<stem>.<env>.<ext>` beside it.
pub fn overlay_path(config: &Path, env: &Env) -> Option<PathBuf> {
    let name = env.get("SWITCHYARD_ENV").filter(|v| !v.is_empty())?;
    let stem = config.file_stem()?.to_string_lossy();
    let file = match config.extension() {
        Some(ext) => format!("{stem}.{name}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{name}"),
    };
    Some(config.with_file_name(file))
}

/// `overlay` merged into `base`: objects member by member, anything else
/// replaced, `null` removes the member.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    match b.get_mut(&k) {
                        Some(existing) => merge(existing, v),
                        None => {
                            b.insert(k, v);
                        }
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string of `value`; one
/// problem per string that cannot be resolved, with its JSON path.
pub fn substitute(value: &mut Value, env: &Env, at: &str, problems: &mut Vec<String>) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok((text, whole)) => {
                *value = match whole
                    .then(|| serde_json::from_str::<Value>(&text).ok())
                    .flatten()
                {
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => v,
                    _ => Value::String(text),
                };
            }
            Err(e) => problems.push(format!(
                "  at {}: {e}",
                if at.is_empty() { "/" } else { at }
            )),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, env, &format!("{at}/{i}"), problems);
            }
        }
        Value::Object(members) => {
            for (k, v) in members.iter_mut() {
                let key = k.replace('~', "~0").replace('/', "~1");
                substitute(v, env, &format!("{at}/{key}"), problems);
            }
        }
        _ => {}
    }
}

/// `text` with its references expanded, and whether it was one reference.
fn expand(text: &str, env: &Env) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut references = 0;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("${{{inner}}}: {name:?} is not a variable name"));
        }
        match env
            .get(name)
            .filter(|v| !v.is_empty())
            .or(default.map(str::to_owned))
        {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "environment variable {name} is not set (write ${{{name}:-default}} for a default)"
                ));
            }
        }
        references += 1;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let whole = references == 1 && text.starts_with("${") && text.ends_with('}');
    Ok((out, whole))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_expand_with_defaults_and_typed_whole_values() {
        let env = Env::from_pairs(&[("SY_TEST_HOST", "10.0.0.1"), ("SY_TEST_PORT", "9000")]);
        let mut v = json!({
            "url": "http://${SY_TEST_HOST}:${SY_TEST_PORT}/v1",
            "limit": "${SY_TEST_PORT}",
            "flag": "${SY_TEST_UNSET_FLAG:-true}",
            "name": "${SY_TEST_UNSET:-fallback}",
            "list": ["${SY_TEST_HOST}"],
        });
        let mut problems = vec![];
        substitute(&mut v, &env, "", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v["url"], "http://10.0.0.1:9000/v1");
        assert_eq!(v["limit"], 9000);
        assert_eq!(v["flag"], true);
        assert_eq!(v["name"], "fallback");
        assert_eq!(v["list"][0], "10.0.0.1");
    }

    #[test]
    fn an_unset_variable_is_named_with_its_path() {
        let mut v = json!({"routes": {"a/b": {"x": "${SY_TEST_NEVER_SET}"}}});
        let mut problems = vec![];
        substitute(&mut v, &Env::default(), "", &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("/routes/a~1b/x"), "{}", problems[0]);
        assert!(problems[0].contains("SY_TEST_NEVER_SET"), "{}", problems[0]);
    }

    #[test]
    fn dotenv_lines_parse_as_shells_write_them() {
        let vars = parse_dotenv(
            "# comment\n\nA=1\nexport B = two words \nC=\"quoted # not a comment\"\nD='x'\nE=v # note\n",
        )
        .unwrap();
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "quoted # not a comment");
        assert_eq!(vars["D"], "x");
        assert_eq!(vars["E"], "v");
        assert!(
            parse_dotenv("no equals sign")
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn overlays_merge_objects_and_replace_the_rest() {
        let mut base = json!({"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": 3});
        merge(
            &mut base,
            json!({"a": {"y": [3]}, "b": {"z": 1}, "c": null}),
        );
        assert_eq!(base, json!({"a": {"x": 1, "y": [3]}, "b": {"z": 1}}));
        let env = Env::from_pairs(&[("SWITCHYARD_ENV", "prod")]);
        if std::env::var_os("SWITCHYARD_ENV").is_none() {
            assert_eq!(
                overlay_path(Path::new("/c/switchyard.json"), &env).unwrap(),
                Path::new("/c/switchyard.prod.json")
            );
        }
    }
}
