//! probe
use switchyard_sdk::{Evaluator, Metadata, Verdict, export_evaluator};
struct J;
impl Evaluator for J {
    fn metadata() -> Metadata { Metadata::new("json-schema", env!("CARGO_PKG_VERSION"), &[]) }
    fn evaluate(request: &str, response: &str) -> Result<Verdict, String> {
        let s: serde_json::Value = serde_json::from_str(request).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(response).map_err(|e| e.to_string())?;
        let val = jsonschema::validator_for(&s).map_err(|e| e.to_string())?;
        Ok(match val.validate(&v) { Ok(()) => Verdict::pass(), Err(e) => Verdict::fail(0.0, e.to_string()) })
    }
}
export_evaluator!(J);
