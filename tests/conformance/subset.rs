//! The subset match of the conformance fixtures (see README.md), shared by
//! the plugin-level suite and the end-to-end one.

use serde_json::Value;

/// `want` ⊆ `got` (objects by member, arrays element-wise with equal
/// length, numbers as numbers, the rest equal); the error says where.
pub fn subset(want: &Value, got: &Value) -> Result<(), String> {
    fn at(path: &str, want: &Value, got: &Value) -> Result<(), String> {
        match (want, got) {
            (Value::Object(w), Value::Object(g)) => {
                for (k, wv) in w {
                    let p = format!("{path}.{k}");
                    match g.get(k) {
                        Some(gv) => at(&p, wv, gv)?,
                        None if wv.is_null() => {}
                        None => return Err(format!("lacks {p}")),
                    }
                }
                Ok(())
            }
            (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
                for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                    at(&format!("{path}[{i}]"), wv, gv)?;
                }
                Ok(())
            }
            (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => Ok(()),
            _ if want == got => Ok(()),
            _ => Err(format!("has {path} = {got} (want {want})")),
        }
    }
    at("$", want, got)
}
