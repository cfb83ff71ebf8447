//! One fixture file (format: `tests/conformance/README.md`) and its checks.

use std::path::Path;

use serde_json::{Map, Value};
use switchyard::domain::{
    QuotaHint, Target, UpstreamError, UpstreamRequest, UpstreamResponse, Usage,
};

use crate::fold::Folded;
pub use crate::subset::subset;
use crate::{class_name, quota_json, shown, usage_json};

pub struct Fixture {
    pub about: String,
    pub target: Target,
    pub request: Value,
    pub upstream_request: Option<Value>,
    pub invalid: Option<Vec<String>>,
    pub response: Option<UpstreamResponse>,
    pub expect: Map<String, Value>,
}

const MEMBERS: [&str; 7] = [
    "about",
    "target",
    "request",
    "upstream_request",
    "invalid",
    "response",
    "expect",
];

impl Fixture {
    pub fn read(path: &Path) -> Result<Fixture, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", shown(path)))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        if let Some(k) = obj.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
            return Err(format!(
                "unknown member {k:?} (expected one of {MEMBERS:?})"
            ));
        }
        let target = match obj.get("target") {
            None => Target {
                deployment: "dep".into(),
                model: "up-model".into(),
            },
            Some(t) => Target {
                deployment: t["deployment"].as_str().ok_or("target.deployment")?.into(),
                model: t["model"].as_str().ok_or("target.model")?.into(),
            },
        };
        const EXPECTS: [&str; 5] = ["answer", "usage", "stream", "error", "quota"];
        if let Some(Value::Object(e)) = obj.get("expect")
            && let Some(k) = e.keys().find(|k| !EXPECTS.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown expect member {k:?} (expected one of {EXPECTS:?})"
            ));
        }
        let response = match obj.get("response") {
            None => None,
            Some(r) => Some(response(r)?),
        };
        let invalid = match obj.get("invalid") {
            None => None,
            Some(Value::Array(words)) => Some(
                words
                    .iter()
                    .map(|w| w.as_str().map(str::to_owned).ok_or("invalid: strings only"))
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err("invalid: a list of strings".into()),
        };
        Ok(Fixture {
            about: obj
                .get("about")
                .and_then(Value::as_str)
                .ok_or("no about")?
                .into(),
            target,
            request: obj.get("request").cloned().ok_or("no request")?,
            upstream_request: obj.get("upstream_request").cloned(),
            invalid,
            response,
            expect: obj
                .get("expect")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    pub fn check_request(&self, req: &UpstreamRequest) -> Result<(), String> {
        let Some(want) = &self.upstream_request else {
            return Ok(());
        };
        if let Some(m) = want.get("method")
            && m != req.method.as_str()
        {
            return Err(format!("method {} (want {m})", req.method));
        }
        if let Some(p) = want.get("path")
            && p != req.path.as_str()
        {
            return Err(format!("path {} (want {p})", req.path));
        }
        if let Some(Value::Object(headers)) = want.get("headers") {
            for (name, value) in headers {
                let got = req
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str());
                if got != value.as_str() {
                    return Err(format!("header {name}: {got:?} (want {value})"));
                }
            }
        }
        let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
            format!(
                "upstream body is not JSON ({e}): {}",
                String::from_utf8_lossy(&req.body)
            )
        })?;
        if let Some(b) = want.get("body") {
            subset(b, &body).map_err(|e| format!("upstream body {e}; got {body}"))?;
        }
        for path in want
            .get("absent")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = path
                .as_str()
                .filter(|p| !p.is_empty())
                .ok_or("absent: non-empty strings")?;
            let mut at = Some(&body);
            for part in path.split('.') {
                at = at.and_then(|v| match part.parse::<usize>() {
                    Ok(i) if v.is_array() => v.get(i),
                    _ => v.get(part),
                });
            }
            if let Some(v) = at {
                return Err(format!("upstream body has {path} = {v} (want it absent)"));
            }
        }
        Ok(())
    }

    pub fn check_error(&self, e: &UpstreamError, quota: Option<&QuotaHint>) -> Result<(), String> {
        let Some(want) = self.expect.get("error") else {
            return Err(format!("unexpected failure: {e:?}"));
        };
        if let Some(class) = want.get("class")
            && class != class_name(&e.class)
        {
            return Err(format!("class {:?} (want {class}): {}", e.class, e.message));
        }
        if let Some(ms) = want.get("retry_after_ms") {
            let got = match e.class {
                switchyard::domain::ErrorClass::RateLimited(ms) => ms,
                _ => None,
            };
            if Some(ms.as_u64().unwrap_or_default() as u32) != got {
                return Err(format!("retry after {got:?} ms (want {ms})"));
            }
        }
        if let Some(text) = want.get("message").and_then(Value::as_str)
            && !e.message.contains(text)
        {
            return Err(format!("message {:?} lacks {text:?}", e.message));
        }
        self.check_quota(quota)
    }

    pub fn expect_no_error(&self) -> Result<(), String> {
        match self.expect.get("error") {
            Some(e) => Err(format!("expected the failure {e}, got an answer")),
            None => Ok(()),
        }
    }

    pub fn check_usage(&self, usage: Option<Usage>) -> Result<(), String> {
        match (self.expect.get("usage"), usage) {
            (None, _) => Ok(()),
            (Some(want), Some(u)) => {
                let got = usage_json(&u);
                subset(want, &got).map_err(|e| format!("usage {e}; got {got}"))
            }
            (Some(want), None) => Err(format!("no usage reported (want {want})")),
        }
    }

    pub fn check_quota(&self, quota: Option<&QuotaHint>) -> Result<(), String> {
        match (self.expect.get("quota"), quota) {
            (None, _) => Ok(()),
            (Some(want), Some(q)) => {
                let got = quota_json(q);
                subset(want, &got).map_err(|e| format!("quota {e}; got {got}"))
            }
            (Some(want), None) => Err(format!("no quota reported (want {want})")),
        }
    }

    pub fn check_stream(&self, folded: &Folded) -> Result<(), String> {
        self.expect_no_error()?;
        let want = self
            .expect
            .get("stream")
            .ok_or("a streamed case needs expect.stream or expect.error")?;
        let got = folded.to_json();
        subset(want, &got).map_err(|e| format!("stream {e}; got {got}"))?;
        self.check_quota(folded.quota.as_ref())?;
        self.check_usage(folded.usage)
    }
}

fn response(r: &Value) -> Result<UpstreamResponse, String> {
    let status = r["status"].as_u64().ok_or("response.status")? as u16;
    let headers = match r.get("headers") {
        None => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.to_ascii_lowercase(),
                    v.as_str().ok_or("header values are strings")?.to_owned(),
                ))
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("response.headers: an object".into()),
    };
    let body = match (r.get("body"), r.get("text")) {
        (Some(b), None) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
        (None, Some(Value::String(t))) => t.clone().into_bytes(),
        (None, None) => Vec::new(),
        _ => return Err("response: one of body (JSON) or text (a string)".into()),
    };
    Ok(UpstreamResponse {
        status,
        headers: switchyard::upstream::recorded_header_block(
            headers
                .iter()
                .map(|(k, v): &(String, String)| (k.as_str(), v.as_str())),
            None,
        )?,
        body,
    })
}
