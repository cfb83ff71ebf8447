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
/// quoted values as shells write them (a comment may follow a quoted value).
fn parse_dotenv(text: &str) -> Result<HashMap<String, String>, String> {
    let mut vars = HashMap::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
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
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let inner = &value[1..];
                let end = inner
                    .find(q)
                    .ok_or_else(|| format!("line {}: unclosed {q} quote", n + 1))?;
                let after = inner[end + 1..].trim_start();
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(format!("line {}: text after the closing quote", n + 1));
                }
                &inner[..end]
            }
            // An unquoted value ends at a comment (`#` after whitespace).
            _ => match value.find([' ', '\t']).and_then(|i| {
                let rest = value[i..].trim_start();
                rest.starts_with('#').then_some(i)
            }) {
                Some(i) => value[..i].trim_end(),
                None => value,
            },
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

/// What substitution did, for what follows it: the strings that were one
/// reference (read as numbers or booleans where the schema wants one), and
/// the values it put in (redacted from error messages: they may be secrets).
#[derive(Default, Debug)]
pub struct Substituted {
    pub whole: Vec<String>,
    pub values: Vec<String>,
}

impl Substituted {
    /// `text` with every substituted value replaced by `<substituted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in self.values.iter().filter(|v| v.len() >= 3) {
            out = out.replace(v.as_str(), "<substituted>");
        }
        out
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string of `value`
/// (`$${` writes a literal `${`); one problem per string that cannot be
/// resolved, with its JSON path.
pub fn substitute(
    value: &mut Value,
    env: &Env,
    at: &str,
    problems: &mut Vec<String>,
    done: &mut Substituted,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, env, &mut done.values) {
            Ok((text, whole)) => {
                if whole {
                    done.whole.push(at.to_owned());
                }
                *value = Value::String(text);
            }
            Err(e) => problems.push(format!(
                "  at {}: {e}",
                if at.is_empty() { "/" } else { at }
            )),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, env, &format!("{at}/{i}"), problems, done);
            }
        }
        Value::Object(members) => {
            for (k, v) in members.iter_mut() {
                let key = k.replace('~', "~0").replace('/', "~1");
                substitute(v, env, &format!("{at}/{key}"), problems, done);
            }
        }
        _ => {}
    }
}

/// A string that was one reference, as the number or boolean it reads as.
pub fn typed(value: &mut Value) -> bool {
    let Value::String(s) = value else {
        return false;
    };
    match serde_json::from_str::<Value>(s) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => {
            *value = v;
            true
        }
        _ => false,
    }
}

/// `text` with its references expanded, and whether it was one reference.
fn expand(text: &str, env: &Env, values: &mut Vec<String>) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut references = 0;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            // `$${`: a literal `${`.
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed ${ in a value (write $${ for a literal ${)".to_string())?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("${{{inner}}}: {name:?} is not a variable name"));
        }
        if default.is_some_and(|d| d.contains("${")) {
            return Err(format!(
                "${{{name}:-…}}: a default cannot hold another reference"
            ));
        }
        // As shells read them: `:-` also replaces an empty value.
        let found = match (env.get(name), default) {
            (Some(v), Some(d)) if v.is_empty() => d.to_owned(),
            (Some(v), _) => {
                values.push(v.clone());
                v
            }
            (None, Some(d)) => d.to_owned(),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write ${{{name}:-default}} for a default)"
                ));
            }
        };
        out.push_str(&found);
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
        let mut done = Substituted::default();
        substitute(&mut v, &env, "", &mut problems, &mut done);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v["url"], "http://10.0.0.1:9000/v1");
        // Strings until the schema wants a number or boolean there.
        assert_eq!(v["limit"], "9000");
        assert_eq!(done.whole, ["/flag", "/limit", "/list/0", "/name"]);
        assert!(typed(&mut v["limit"]) && typed(&mut v["flag"]));
        assert_eq!(v["limit"], 9000);
        assert_eq!(v["flag"], true);
        assert_eq!(
            done.redact("at http://10.0.0.1:9000"),
            "at http://<substituted>:<substituted>"
        );
        assert_eq!(v["name"], "fallback");
        assert_eq!(v["list"][0], "10.0.0.1");
    }

    #[test]
    fn an_unset_variable_is_named_with_its_path() {
        let mut v = json!({"routes": {"a/b": {"x": "${SY_TEST_NEVER_SET}"}}});
        let mut problems = vec![];
        substitute(
            &mut v,
            &Env::default(),
            "",
            &mut problems,
            &mut Substituted::default(),
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("/routes/a~1b/x"), "{}", problems[0]);
        assert!(problems[0].contains("SY_TEST_NEVER_SET"), "{}", problems[0]);
    }

    #[test]
    fn escapes_nesting_and_empty_values() {
        let env = Env::from_pairs(&[("SY_TEST_EMPTY", "")]);
        let mut done = Substituted::default();
        let ex = |t: &str, done: &mut Substituted| expand(t, &env, &mut done.values);
        assert_eq!(ex("a $${X} b", &mut done).unwrap().0, "a ${X} b");
        assert_eq!(ex("[${SY_TEST_EMPTY}]", &mut done).unwrap().0, "[]");
        assert_eq!(ex("${SY_TEST_EMPTY:-d}", &mut done).unwrap().0, "d");
        assert!(
            ex("${SY_TEST_UNSET_A:-${SY_TEST_UNSET_B}}", &mut done)
                .unwrap_err()
                .contains("another reference")
        );
    }

    #[test]
    fn dotenv_lines_parse_as_shells_write_them() {
        let vars = parse_dotenv(
            "\u{feff}# comment\n\nA=1\nexport B = two words \nC=\"quoted # not a comment\"\nD='x'\nE=v # note\nF=\"sk-abc\" # prod\nG=abc\t# c\n",
        )
        .unwrap();
        assert_eq!(vars["F"], "sk-abc");
        assert_eq!(vars["G"], "abc");
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
